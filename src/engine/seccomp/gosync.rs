//! Exact timing for Go test binaries run by the `go test` adapter (`src/adapters/go.rs`).
//!
//! The adapter (`nettrap go-exec`) reads the test binary's stdout from a pipe and stamps each
//! test marker (`=== RUN`, `--- PASS`, ...) after the `read()` that returned it; the supervisor
//! stamps a call when it traps. Without care, a test that connects right after its `=== RUN`
//! would be stamped before the adapter got round to reading that line.
//!
//! The binary's starting environment names the adapter:
//! `NETTRAP_GO_SYNC=<adapter pid>:<its read descriptor>:<counters file>`. The adapter keeps two
//! counters in that file (shared memory): `claimed`, the bytes it is about to read, raised
//! *before* each `read()` (it asks the pipe how many bytes wait, `FIONREAD`, and reads exactly
//! those), and `done`, the bytes it has read, stamped and written to the timeline. When the
//! binary itself (a direct child of the adapter) traps, the supervisor takes the bytes still in
//! the pipe (`FIONREAD` on a copy of the adapter's read end) and then `claimed`, and waits
//! (at most `WAIT_MAX`) until `done` reaches their sum.
//!
//! Why that is exact: the caller wrote every earlier marker before it made the call. A byte of
//! it is either still in the pipe when we look (counted by `FIONREAD`), or it left the pipe
//! before, in a `read()` that the adapter claimed before making it (counted in `claimed`,
//! which we read after the pipe). Bytes written after our look only add to the sum (they are
//! concurrent with the call: either order is right). And the wait depends only on bytes
//! already written: a binary that prints without pause does not hold a call back.

use super::notify;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one call may be held back at most (the whole tree waits meanwhile: the supervisor
/// is one thread). Normally the adapter catches up in microseconds.
const WAIT_MAX: Duration = Duration::from_millis(50);

/// The adapter named in a starting environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapter {
    pub pid: u32,
    pub fd: i32,
    pub counters: PathBuf,
}

pub fn from_environ(environ: &[u8]) -> Option<Adapter> {
    let value = environ
        .split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"NETTRAP_GO_SYNC="))?;
    let mut parts = std::str::from_utf8(value).ok()?.splitn(3, ':');
    Some(Adapter {
        pid: parts.next()?.parse().ok()?,
        fd: parts.next()?.parse().ok()?,
        counters: PathBuf::from(parts.next()?),
    })
}

/// The adapter's two counters, in a small shared file (module docs).
pub struct Counters {
    base: *mut AtomicU64,
}

// SAFETY: the mapping is only reached through atomics.
unsafe impl Send for Counters {}

const COUNTERS_LEN: usize = 4096;

impl Counters {
    /// Creates (the adapter) or opens (the supervisor) the counters file and maps it.
    pub fn map(path: &Path, create: bool) -> std::io::Result<Counters> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        if create {
            f.set_len(COUNTERS_LEN as u64)?;
        } else if f.metadata()?.len() < COUNTERS_LEN as u64 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        // SAFETY: mapping COUNTERS_LEN bytes of a file that long, shared, readable and
        // writable; the mapping outlives the descriptor and is unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                COUNTERS_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Counters { base: p.cast() })
    }

    fn at(&self, i: usize) -> &AtomicU64 {
        // SAFETY: i is 0 or 1, inside the page-aligned mapping.
        unsafe { &*self.base.add(i) }
    }

    /// The adapter is about to read `n` more bytes.
    pub fn claim(&self, n: u64) {
        self.at(0).fetch_add(n, Ordering::SeqCst);
    }

    /// The adapter has stamped and written everything it read, `total` bytes.
    pub fn set_done(&self, total: u64) {
        self.at(1).store(total, Ordering::SeqCst);
    }

    fn claimed(&self) -> u64 {
        self.at(0).load(Ordering::SeqCst)
    }

    fn done(&self) -> u64 {
        self.at(1).load(Ordering::SeqCst)
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what map() mapped.
        unsafe { libc::munmap(self.base.cast(), COUNTERS_LEN) };
    }
}

/// Unread bytes in a pipe.
pub fn unread(pipe: &impl AsRawFd) -> Option<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let r = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) };
    (r == 0).then_some(n.max(0) as u64)
}

fn is_fifo(fd: &OwnedFd) -> bool {
    // SAFETY: fstat writes one stat struct; a zeroed one is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor we own.
    let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO
}

/// What the supervisor keeps of one adapter.
struct Watched {
    pidfd: OwnedFd,
    pipe: OwnedFd,
    counters: Counters,
}

/// The adapters the supervisor has met, kept between calls.
#[derive(Default)]
pub struct Adapters {
    by_pid: HashMap<u32, Watched>,
}

impl Adapters {
    fn watch(&mut self, a: &Adapter) -> Option<&Watched> {
        // A pid whose process ended (and may have been reused) is forgotten.
        if self
            .by_pid
            .get(&a.pid)
            .is_some_and(|w| !notify::alive(&w.pidfd))
        {
            self.by_pid.remove(&a.pid);
        }
        if !self.by_pid.contains_key(&a.pid) {
            if self.by_pid.len() >= 64 {
                self.by_pid.clear();
            }
            let pidfd = notify::pidfd_open(a.pid).ok()?;
            let pipe = notify::pidfd_getfd(&pidfd, a.fd).ok().filter(is_fifo)?;
            let counters = Counters::map(&a.counters, false).ok()?;
            self.by_pid.insert(
                a.pid,
                Watched {
                    pidfd,
                    pipe,
                    counters,
                },
            );
        }
        self.by_pid.get(&a.pid)
    }

    /// Waits until the adapter has stamped every marker the caller wrote before its call
    /// (module docs). Only the test binary itself, the adapter's direct child (`parent`), is
    /// waited for. Returns whether the markers were all stamped within the bound.
    pub fn settle(&mut self, a: &Adapter, parent: u32) -> bool {
        if parent != a.pid {
            return false;
        }
        let Some(w) = self.watch(a) else {
            return false;
        };
        let Some(in_pipe) = unread(&w.pipe) else {
            return false;
        };
        let target = w.counters.claimed() + in_pipe;
        let deadline = Instant::now() + WAIT_MAX;
        let mut round = 0u32;
        while w.counters.done() < target {
            if Instant::now() >= deadline {
                return false;
            }
            round += 1;
            if round < 20 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_adapter_from_the_environment() {
        assert_eq!(
            from_environ(b"PATH=/bin\0NETTRAP_GO_SYNC=4242:5:/tmp/r:x/c\0X=1\0"),
            Some(Adapter {
                pid: 4242,
                fd: 5,
                counters: PathBuf::from("/tmp/r:x/c")
            })
        );
        assert_eq!(from_environ(b"NETTRAP_GO_SYNC=1:2\0"), None);
        assert_eq!(from_environ(b"PATH=/bin\0"), None);
    }

    /// A call waits for the bytes in the pipe and those claimed, not for later output.
    #[test]
    fn waits_for_what_was_written_before_not_after() {
        let dir = std::env::temp_dir().join(format!("gosync-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("counters");
        let mine = Counters::map(&path, true).unwrap();
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0);
        let (r, w) = (fds[0], fds[1]);
        // SAFETY: writing 3 bytes from a static buffer to our pipe.
        assert_eq!(unsafe { libc::write(w, b"abc".as_ptr().cast(), 3) }, 3);
        let adapter = Adapter {
            pid: std::process::id(),
            fd: r,
            counters: path.clone(),
        };
        let mut adapters = Adapters::default();
        assert!(
            !adapters.settle(&adapter, 1),
            "only the adapter's own child waits"
        );
        // 5 bytes claimed and done earlier, 3 in the pipe: not settled until done is 8.
        mine.claim(5);
        mine.set_done(5);
        let start = Instant::now();
        assert!(!adapters.settle(&adapter, adapter.pid));
        assert!(start.elapsed() >= WAIT_MAX);
        let stamper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            mine.claim(3);
            mine.set_done(8);
            mine
        });
        assert!(adapters.settle(&adapter, adapter.pid));
        let _mine = stamper.join().unwrap();
        // SAFETY: closing our pipe ends.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
