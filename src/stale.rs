//! Run directories left behind by a launcher that could not remove its own: one killed with
//! SIGKILL (the OOM killer, `kill -9`, a CI runner's hard timeout) leaves its run directory, with
//! an 8 MiB preallocated event log, in the temporary directory until reboot.
//!
//! Each launcher holds an exclusive `flock` on its run directory's `launcher.lock` for as long
//! as the run lasts (the kernel drops it when the launcher dies, however it dies). At the end
//! of a run (where it cannot delay the event log's growth), at most once an hour per user and
//! temporary directory (the time of `.nettrap-sweep-UID` there), a launcher removes the run
//! directories whose lock it can take: named as run directories are, owned by its user, not
//! changed for a minute (so never one whose launcher is between creating its lock and taking
//! it), and holding a `launcher.lock` (so never one of a nettrap too old to take the lock, which
//! may still be running, nor one kept with `NETTRAP_KEEP_RUN_DIR`). A lock held in another pid
//! namespace or container sharing the directory counts as held: the lock is on the file, not
//! on a pid (on NFS mounted without locking, only on the same host).

use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The lock file in every run directory.
const LOCK: &str = "launcher.lock";
/// The file whose time says when this user last swept the temporary directory (its uid after).
const SWEPT: &str = ".nettrap-sweep-";
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// A run directory changed more recently than this is never removed.
const QUIET_FOR: Duration = Duration::from_secs(60);

/// Takes the lock of the run directory `dir`, held until the returned guard is dropped (after
/// the directory is removed). None when it cannot be taken: the run goes on, and its directory
/// would just never be swept.
pub fn hold(dir: &Path) -> Option<Flock<File>> {
    let path = dir.join(LOCK);
    let file = File::options()
        .create_new(true)
        .write(true)
        .open(&path)
        .ok()?;
    let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok();
    if held.is_none() {
        // A lock file nobody holds would let a sweep take this live run's directory.
        let _ = fs::remove_file(&path);
    }
    held
}

/// Removes the stale run directories in `base` (see the module comment), at most once an hour.
/// Best effort and silent: nothing here may fail or slow a run.
pub fn sweep(base: &Path) {
    let me = nix::unistd::geteuid().as_raw();
    let swept = base.join(format!("{SWEPT}{me}"));
    let now = SystemTime::now();
    if let Ok(t) = fs::metadata(&swept).and_then(|m| m.modified())
        && now.duration_since(t).is_ok_and(|d| d < SWEEP_EVERY)
    {
        return;
    }
    // Marked first, so that runs starting meanwhile do not sweep too. Never through a link (a
    // shared temporary directory: someone else's link would have this user write elsewhere),
    // never waiting (someone else's FIFO there would block the open for good), a plain file.
    let marked = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&swept)
        .and_then(|f| plain(&f).and_then(|()| f.set_modified(now)));
    if marked.is_err() {
        return;
    }
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !is_run_dir_name(&name.to_string_lossy()) {
            continue;
        }
        let dir = entry.path();
        // Not followed if a link; owned by this user; quiet for a while.
        let Ok(meta) = fs::symlink_metadata(&dir) else {
            continue;
        };
        let quiet = meta
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|d| d >= QUIET_FOR);
        if !meta.is_dir() || meta.uid() != me || !quiet {
            continue;
        }
        // Neither through a link nor waiting (a FIFO), a plain file.
        let Ok(lock) = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(dir.join(LOCK))
        else {
            continue;
        };
        if plain(&lock).is_err() {
            continue;
        }
        // Taken: no launcher holds it. Kept while the directory is removed, so a sweeper
        // elsewhere finds it held.
        if let Ok(_held) = Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
            remove_lock_last(&dir);
        }
    }
}

/// Removes run directory `dir`, its lock file last: a sweep stopped half-way (killed with its
/// run) leaves a directory the next sweep still recognises and takes.
fn remove_lock_last(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name() == LOCK {
                continue;
            }
            let path = entry.path();
            let _ = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
        }
    }
    let _ = fs::remove_file(dir.join(LOCK));
    let _ = fs::remove_dir(dir);
}

/// Err unless `file` is a regular file.
fn plain(file: &File) -> std::io::Result<()> {
    if file.metadata()?.is_file() {
        Ok(())
    } else {
        Err(std::io::ErrorKind::InvalidInput.into())
    }
}

/// `nettrap-PID-NANOS`, as `RunDir::create` names run directories.
fn is_run_dir_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nettrap-") else {
        return false;
    };
    let mut parts = rest.split('-');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::is_run_dir_name;

    #[test]
    fn only_run_directory_names() {
        assert!(is_run_dir_name("nettrap-123-000456789"));
        for name in [
            "nettrap-123",
            "nettrap-123-",
            "nettrap--5",
            "nettrap-12a-5",
            "nettrap-1-2-3",
            "nettrap-todo.md",
            ".nettrap-sweep",
            "xnettrap-1-2",
        ] {
            assert!(!is_run_dir_name(name), "{name}");
        }
    }
}
