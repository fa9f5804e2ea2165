//! The files a run writes (the report and the to-do list): checked before the command starts,
//! written atomically after it ends.
//!
//! A report path that cannot be written fails the run before the suite runs (exit 2), not after
//! it, when the verdict would be lost. Each file is written to a temporary file beside it and
//! swapped in whole, so a reader never sees half a report, and a failed write (a full disk, the
//! directory gone) leaves the previous report as it was and no temporary file behind.
//!
//! Swapped in, not renamed over: on ext4 (`auto_da_alloc`, the default) a rename that replaces
//! an existing file starts writing the new file's data out first, ~85 us per file on the
//! command's critical path, every run after the first. [`write_with`] exchanges the two names
//! instead (`renameat2(RENAME_EXCHANGE)`, atomic like a rename: at every instant the path names
//! either the whole old file or the whole new one, never no file and never a partial one) and
//! then unlinks the old file under the temporary name; a nettrap killed between the two leaves
//! the new report in place and the old one under the hidden temporary name. The data reaches
//! the disk with the kernel's ordinary writeback, as a report written where none existed
//! always did (nettrap never fsyncs: a power cut within the writeback delay may cost the
//! newest report, on every filesystem, as before).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where writing `path` lands: the file a symbolic link points to (renaming over the link
/// would replace the link), else `path` itself.
pub fn resolve(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path).unwrap_or_else(|_| {
            // A dangling link: its target, relative to the link's directory.
            match fs::read_link(path) {
                Ok(t) => path.parent().map_or(t.clone(), |d| d.join(t)),
                Err(_) => path.to_path_buf(),
            }
        }),
        _ => path.to_path_buf(),
    }
}

/// The temporary file a write of `path` goes through: hidden, beside it, one per process.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.nettrap-{}.tmp", std::process::id()))
}

/// Can `path` be written (atomically, as [`write`] does)? Its directory must let nettrap create
/// the temporary file beside it and rename it: searchable and writable for nettrap's effective
/// ids (`faccessat(AT_EACCESS)`, which also says `EROFS` for a read-only filesystem), asked
/// without creating anything. A refusal is confirmed by creating and removing the temporary
/// file, whose error is the one reported: glibc asks `faccessat2` for `AT_EACCESS`, which
/// sandboxes older than the call (Docker's default seccomp profile before 20.10.6) fail with
/// `EPERM` whatever the directory allows.
pub fn check(path: &Path) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(io::Error::other("it is a directory")),
        // A device or a pipe (`--report /dev/null`): renaming over it would replace it.
        Ok(m) if !m.is_file() => return Err(io::Error::other("it is not a regular file")),
        _ => {}
    }
    if path.file_name().is_none() {
        return Err(io::Error::other("not a file name"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    use nix::unistd::{AccessFlags, faccessat};
    if faccessat(
        nix::fcntl::AT_FDCWD,
        dir,
        AccessFlags::W_OK | AccessFlags::X_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .is_ok()
    {
        return Ok(());
    }
    let tmp = temp_path(path);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    fs::remove_file(&tmp)
}

/// Writes `bytes` to `path` through a temporary file and a rename; on failure the temporary
/// file is removed and whatever `path` held before is left as it was.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |f| f.write_all(bytes))
}

/// As [`write`], with the contents written by `fill` as they are made (a large report is never
/// held whole in memory).
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut w = io::BufWriter::with_capacity(1 << 16, f);
        fill(&mut w)?;
        w.into_inner().map_err(io::IntoInnerError::into_error)?;
        swap_in(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Puts `tmp` in `path`'s place (see the module's comment): exchanged with a regular file that
/// is there, else renamed (no file there, a filesystem without `RENAME_EXCHANGE`, or something
/// else in the way, which the rename then refuses or replaces as it always did).
fn swap_in(tmp: &Path, path: &Path) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    let exchange = || renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE);
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) && exchange().is_ok() {
        // What was swapped out, now under the temporary name. Something else than a regular
        // file took the name after it was looked at (a directory, a FIFO): swapped back, for
        // the rename to refuse or replace it as it always did.
        if fs::symlink_metadata(tmp).is_ok_and(|m| m.is_file()) || exchange().is_err() {
            // The new file is in place whatever follows.
            let _ = fs::remove_file(tmp);
            return Ok(());
        }
    }
    fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("nettrap-outputs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("r.json");
        write(&f, b"old").unwrap();
        assert!(check(&f).is_ok());
        // The temporary file's name taken by a directory: the write fails before the rename.
        fs::create_dir(temp_path(&f)).unwrap();
        assert!(write(&f, b"new").is_err());
        fs::remove_dir(temp_path(&f)).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"old");
        write(&f, b"new").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"new");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        assert!(check(&dir).is_err());
        assert!(check(&dir.join("missing/r.json")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_put_in_the_reports_place_during_the_write_is_never_moved_aside() {
        // Another process swaps a directory and a file back and forth under the report's name
        // while reports are written there: a write either replaces the file or fails on the
        // directory, and the directory never ends up under the hidden temporary name.
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = std::env::temp_dir().join(format!("nettrap-swap-race-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (f, other) = (dir.join("r.json"), dir.join("other"));
        fs::write(&f, b"old").unwrap();
        fs::create_dir(&other).unwrap();
        fs::write(other.join("keep"), b"mine").unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flipper = {
            let (stop, f, other) = (stop.clone(), f.clone(), other.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = renameat2(AT_FDCWD, &f, AT_FDCWD, &other, RenameFlags::RENAME_EXCHANGE);
                }
            })
        };
        let mut moved = false;
        for _ in 0..20_000 {
            let _ = write(&f, b"new");
            if temp_path(&f).join("keep").exists() {
                moved = true;
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        flipper.join().unwrap();
        assert!(
            !moved,
            "the directory was moved to {}",
            temp_path(&f).display()
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
