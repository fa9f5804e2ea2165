//! Exact timing for Go test binaries run by the `go test` adapter (`src/adapters/go.rs`).
//!
//! The adapter (`nettrap go-exec`) reads the test binary's stdout from a pipe and stamps each
//! test marker (`=== RUN`, `--- PASS`, ...) after the `read()` that returned it; the supervisor
//! stamps a call when it traps. Without care, a test that connects right after its `=== RUN`
//! would be stamped before the adapter got round to reading that line. The binary's starting
//! environment names the adapter: `NETTRAP_GO_SYNC=<adapter pid>:<its read descriptor>`. Before
//! taking such a call's time, the supervisor waits (at most `WAIT_MAX`) until
//!
//! 1. the pipe holds no unread bytes (`FIONREAD` on a copy of the adapter's read end, taken
//!    with `pidfd_getfd`), and then
//! 2. the adapter sleeps in `read()` on that descriptor (`/proc/<pid>/syscall` starts with
//!    `0 0x<fd> `; it says `running` for a task that is not blocked).
//!
//! Why that is exact: the caller wrote every earlier marker before it made the call, so when
//! (1) holds those bytes were taken out by some `read()` of the adapter. A `read()` that took
//! bytes returns without sleeping again, so the `read()` the adapter sleeps in at (2) is a later
//! one, which the adapter only starts after it stamped and wrote every complete line it had
//! (a marker is one `write()`, so it is wholly read once the pipe is empty). Markers written
//! after the call are written after the answer, hence read, hence stamped, after the call's
//! time. Other threads of the binary may write meanwhile: such markers are concurrent with the
//! call, either order is right, and they only make us poll again.

use super::notify;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long one call may be held back at most (the whole tree waits meanwhile: the supervisor
/// is one thread).
const WAIT_MAX: Duration = Duration::from_millis(50);

/// The adapter named in a starting environment: (pid, read descriptor).
pub fn from_environ(environ: &[u8]) -> Option<(u32, i32)> {
    let value = environ
        .split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"NETTRAP_GO_SYNC="))?;
    let (pid, fd) = std::str::from_utf8(value).ok()?.split_once(':')?;
    Some((pid.parse().ok()?, fd.parse().ok()?))
}

/// Unread bytes in a pipe.
fn unread(pipe: &OwnedFd) -> Option<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let r = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) };
    (r == 0).then_some(n)
}

fn is_fifo(fd: &OwnedFd) -> bool {
    // SAFETY: fstat writes one stat struct; a zeroed one is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor we own.
    let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO
}

/// Waits until the adapter `(pid, fd)` has stamped every marker already written (module docs).
/// Returns whether it did within the bound (false also when the adapter is gone).
pub fn settle((pid, fd): (u32, i32)) -> bool {
    use std::os::unix::fs::FileExt;
    let deadline = Instant::now() + WAIT_MAX;
    let Ok(pidfd) = notify::pidfd_open(pid) else {
        return false;
    };
    let Some(pipe) = notify::pidfd_getfd(&pidfd, fd).ok().filter(is_fifo) else {
        return false;
    };
    let Ok(syscall) = std::fs::File::open(format!("/proc/{pid}/syscall")) else {
        return false;
    };
    let want = format!("0 0x{fd:x} ");
    let mut buf = [0u8; 128];
    let mut round = 0u32;
    loop {
        if unread(&pipe) == Some(0) {
            let n = syscall.read_at(&mut buf, 0).unwrap_or(0);
            if buf[..n].starts_with(want.as_bytes()) {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        round += 1;
        if round < 20 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_adapter_from_the_environment() {
        assert_eq!(
            from_environ(b"PATH=/bin\0NETTRAP_GO_SYNC=4242:5\0X=1\0"),
            Some((4242, 5))
        );
        assert_eq!(from_environ(b"NETTRAP_GO_SYNC=1\0"), None);
        assert_eq!(from_environ(b"PATH=/bin\0"), None);
    }

    /// A reader process: settled once it sleeps in read() on the empty pipe, not while bytes
    /// wait unread.
    #[test]
    fn settles_only_when_the_reader_waits_in_read_on_an_empty_pipe() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0);
        let (r, w) = (fds[0], fds[1]);
        // SAFETY: writing 3 bytes from a static buffer to our pipe.
        assert_eq!(unsafe { libc::write(w, b"abc".as_ptr().cast(), 3) }, 3);
        // Nobody reads yet (this process is not in read()): not settled.
        assert!(!settle((std::process::id(), r)));
        // SAFETY: the child only calls read, close and _exit (async-signal-safe) before exiting.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            let mut b = [0u8; 16];
            // SAFETY: see above; reads into a local buffer until the writers are gone.
            unsafe {
                libc::close(w);
                while libc::read(r, b.as_mut_ptr().cast(), b.len()) > 0 {}
                libc::_exit(0);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let settled = loop {
            if settle((child as u32, r)) {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
        };
        let mut n = -1;
        // SAFETY: FIONREAD on our own read end, which shares the pipe.
        unsafe { libc::ioctl(r, libc::FIONREAD, &mut n) };
        // SAFETY: closing our ends ends the reader; waitpid reaps it.
        unsafe {
            libc::close(w);
            libc::close(r);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        assert!(settled);
        assert_eq!(n, 0, "settled with bytes unread");
    }
}
