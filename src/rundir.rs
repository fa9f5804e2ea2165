//! The run directory: the files a run shares with the processes it intercepts.
//!
//! `policy.bin` holds the compiled policy (mapped read-only by the shim) and `events.log` the
//! event log every intercepting process appends to (format: `nettrap_core::event`). The shim
//! finds the directory through `NETTRAP_RUN_DIR`. The directory is removed when the run ends
//! unless `NETTRAP_KEEP_RUN_DIR` is set.

use crate::say;
use anyhow::{Context, Result};
use nettrap_core::event;
use nettrap_core::policy::CompiledPolicy;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const ENV_RUN_DIR: &str = "NETTRAP_RUN_DIR";

pub struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl RunDir {
    /// Creates a fresh run directory holding `policy` and an empty event log.
    pub fn create(policy: &CompiledPolicy) -> Result<RunDir> {
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = base.join(format!("nettrap-{}-{nanos:09}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create run directory {}", path.display()))?;
        let dir = RunDir {
            path,
            keep: std::env::var_os("NETTRAP_KEEP_RUN_DIR").is_some(),
        };
        fs::write(dir.path.join("policy.bin"), policy.as_bytes())
            .context("cannot write the compiled policy")?;
        let mut log = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.events_path())
            .context("cannot create the event log")?;
        log.write_all(&event::header(event::DEFAULT_CAPACITY))
            .context("cannot write the event log")?;
        // Sparse: only the slots written take space.
        log.set_len(event::file_len(event::DEFAULT_CAPACITY))
            .context("cannot size the event log")?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn events_path(&self) -> PathBuf {
        self.path.join("events.log")
    }

    /// Reads back every record written so far.
    pub fn read_events(&self) -> Result<event::Decoded> {
        let mut f = File::open(self.events_path()).context("cannot open the event log")?;
        let mut buf = vec![0u8; event::HEADER_LEN];
        f.read_exact(&mut buf)
            .context("cannot read the event log header")?;
        let used = event::used_len(&buf).context("the event log header is corrupt")?;
        buf.resize(used, 0);
        f.read_exact(&mut buf[event::HEADER_LEN..])
            .context("cannot read the event log")?;
        event::decode(&buf).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            say!("nettrap: run directory kept: {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The event log mapped into the launcher, for the seccomp supervisor to append to.
pub struct LogMapping {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is shared memory written only through nettrap_core's atomic protocol.
unsafe impl Send for LogMapping {}
unsafe impl Sync for LogMapping {}

impl LogMapping {
    pub fn log(&self) -> event::Log {
        // SAFETY: base/len describe a live shared mapping of the log (checked when mapped).
        unsafe { event::Log::from_raw(self.base, self.len) }
            .expect("event log mapping checked at map time")
    }
}

impl Drop for LogMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what map_log mapped; no Log from it outlives the mapping.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl RunDir {
    /// Maps the event log for writing from this process.
    pub fn map_log(&self) -> Result<LogMapping> {
        use std::os::fd::AsRawFd;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.events_path())
            .context("cannot open the event log")?;
        let len = f.metadata().context("cannot stat the event log")?.len() as usize;
        // SAFETY: mapping an open file of len bytes, shared and writable; the mapping outlives f.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            anyhow::bail!(
                "cannot map the event log: {}",
                std::io::Error::last_os_error()
            );
        }
        let m = LogMapping {
            base: base.cast(),
            len,
        };
        // SAFETY: as in LogMapping::log; checked here once.
        if unsafe { event::Log::from_raw(m.base, m.len) }.is_none() {
            anyhow::bail!("the event log is corrupt");
        }
        Ok(m)
    }
}
