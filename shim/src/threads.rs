//! Thread naming, for runners that run each test on a thread named after it (libtest, `cargo
//! test`): the moment a thread names itself is the moment its test begins, which libtest never
//! prints when tests run in parallel.
//!
//! The shim interposes `pthread_setname_np`. It always calls the real function and returns its
//! result, errno untouched. Only in a run whose policy carries `FLAG_THREAD_NAMES` (the
//! launcher sets it for `cargo test`), and only when a thread named itself and the call
//! succeeded, does it append one `thread` event to the run's timeline
//! (`$NETTRAP_RUN_DIR/timeline.jsonl`, see `src/attribution/SPEC.md`): its pid, tid,
//! CLOCK_MONOTONIC time and the name as the kernel keeps it (`prctl(PR_GET_NAME)`, 15 bytes).
//! Rust's std names each spawned thread from the new thread itself, first thing, through
//! libc's `pthread_setname_np` (a dynamic symbol, which the preload interposes; glibc then makes
//! `prctl(PR_SET_NAME)`).
//!
//! Why a timeline line and not an event-log record: the timeline is where runners' test events
//! go and the report joins them (a naming is a test event, not a call, and every reader of the
//! event log would otherwise have to learn to skip it). The line is built on the stack and
//! written with one `write` to a descriptor opened for it and closed at once (`O_APPEND`: one
//! write is one line, whoever else appends): three system calls per thread named, no
//! allocation, no lock, no state but the real function's address, so it is as safe on any
//! thread, after a fork or in a signal handler as the rest of the shim. Outside such a run the
//! cost is a pass-through: one check of the run directory (none outside a run) and of the
//! policy's flags (the policy is mapped once per process, as its first connect would).
//!
//! The line writer ([`Line`], [`append_to_timeline`]) is shared with [`super::spawn`], whose
//! `spawn` events tie the processes a test starts to its thread.

#[cfg(target_arch = "x86_64")]
use super::thread_pointer;
use super::{policy, run_dir, run_path, set_errno, sys};
use core::ffi::{c_char, c_int, c_void};
use nettrap_core::policy::FLAG_THREAD_NAMES;

type SetNameFn = unsafe extern "C" fn(libc::pthread_t, *const c_char) -> c_int;

/// The timeline's file name in the run directory (`nettrap::attribution::TIMELINE`).
const TIMELINE: &[u8] = b"timeline.jsonl";

/// # Safety
/// Same contract as pthread_setname_np(3); exported to interpose libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_setname_np(thread: libc::pthread_t, name: *const c_char) -> c_int {
    // SAFETY: forwarding the caller's arguments unchanged.
    let r = unsafe { real_setname(thread, name) };
    if r == 0 && run_dir().is_some() && is_self(thread) {
        note_thread_name();
    }
    r
}

/// Did the calling thread name itself? glibc's `pthread_t` is its thread descriptor, which the
/// thread pointer points to.
#[cfg(target_arch = "x86_64")]
fn is_self(thread: libc::pthread_t) -> bool {
    thread as usize == thread_pointer()
}

#[cfg(not(target_arch = "x86_64"))]
fn is_self(thread: libc::pthread_t) -> bool {
    // SAFETY: pthread_self has no preconditions.
    thread == unsafe { libc::pthread_self() }
}

/// The real `pthread_setname_np`; without it (not found), the calling thread's own name is set
/// as glibc does it, another thread's is refused.
///
/// # Safety
/// Same contract as pthread_setname_np(3).
unsafe fn real_setname(thread: libc::pthread_t, name: *const c_char) -> c_int {
    let f = super::symbols::get(&super::symbols::PTHREAD_SETNAME_NP);
    if f != 0 {
        // SAFETY: f is libc's pthread_setname_np, as dlsym(RTLD_NEXT) finds it.
        let f: SetNameFn = unsafe { core::mem::transmute::<usize, SetNameFn>(f) };
        // SAFETY: forwarding the caller's arguments unchanged.
        return unsafe { f(thread, name) };
    }
    if !is_self(thread) {
        return libc::ENOSYS;
    }
    // glibc's limit: 15 bytes and the NUL. (No strlen: one libc symbol fewer to bind.)
    // SAFETY: the caller passes a NUL-terminated string, as pthread_setname_np requires; it is
    // read only up to its NUL.
    if (0..16).all(|i| unsafe { *name.add(i) } != 0) {
        return libc::ERANGE;
    }
    // SAFETY: PR_SET_NAME reads at most 16 bytes of a NUL-terminated string.
    let r = unsafe {
        sys::call(
            libc::SYS_prctl,
            libc::PR_SET_NAME as usize,
            name as usize,
            0,
            0,
            0,
            0,
        )
    };
    -(r as c_int)
}

/// Appends this thread's `thread` event to the timeline when the run asks for thread names.
/// Leaves errno as it found it; any failure only loses the event.
#[inline(never)]
#[cold]
fn note_thread_name() {
    let saved = super::errno();
    if !records_thread_names() {
        set_errno(saved);
        return;
    }
    let mut name = [0u8; 16];
    let name_len = sys::thread_name(&mut name);
    let mut line = Line::new(b"thread", super::now_ns(), sys::getpid(), sys::gettid());
    line.name(&name[..name_len]);
    append_to_timeline(line.finish());
    set_errno(saved);
}

/// Whether this run records thread names (`FLAG_THREAD_NAMES`: `cargo test`).
pub(super) fn records_thread_names() -> bool {
    policy().is_some_and(|p| p.flags & FLAG_THREAD_NAMES != 0)
}

/// Appends one line to the run's timeline with one `write` (`O_APPEND`: one write is one line,
/// whoever else appends), through a descriptor opened for it and closed at once. Any failure
/// only loses the line. May change errno: callers restore it.
pub(super) fn append_to_timeline(line: &[u8]) {
    let mut path = [0u8; super::RUN_DIR_MAX];
    if let Some(path) = run_path(&mut path, TIMELINE) {
        // No O_CREAT: the launcher made the timeline; without it there is no run to tell.
        let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC;
        // SAFETY: path is NUL-terminated.
        let fd = unsafe { sys::open(path.as_ptr(), flags, 0) };
        if fd >= 0 {
            // SAFETY: writing line.len() bytes of the caller's buffer.
            unsafe { sys::write(fd, line.as_ptr().cast::<c_void>(), line.len()) };
            sys::close(fd);
        }
    }
}

/// The longest line: the fixed text (a `spawn` line's, the longest: 53 bytes), four numbers of
/// at most 20 + 10 + 10 + 10 digits, and 15 name bytes of 6 each (`\u00XX`).
const LINE_MAX: usize = 64 + 20 + 3 * 10 + 16 * 6;

/// A timeline line built on the stack: `{"ev":EV,"t":T,"pid":P,"tid":X` then the caller's
/// fields, then `}` and a newline ([`Line::finish`]).
pub(super) struct Line {
    buf: [u8; LINE_MAX],
    n: usize,
}

impl Line {
    pub(super) fn new(ev: &[u8], t: u64, pid: u32, tid: u32) -> Line {
        let mut w = Line {
            buf: [0; LINE_MAX],
            n: 0,
        };
        w.text(b"{\"ev\":\"");
        w.text(ev);
        w.text(b"\",\"t\":");
        w.number(t);
        w.text(b",\"pid\":");
        w.number(pid.into());
        w.text(b",\"tid\":");
        w.number(tid.into());
        w
    }

    /// `,"KEY":N`
    pub(super) fn field(&mut self, key: &[u8], v: u64) {
        self.text(b",\"");
        self.text(key);
        self.text(b"\":");
        self.number(v);
    }

    /// `,"name":"N"`: the name's bytes (at most 15) other than printable ASCII (and `"`, `\`)
    /// are written `\u00XX`, so the line is valid JSON whatever the bytes (a name cut at 15
    /// bytes may end inside a UTF-8 character); the report reads each such character back as
    /// the byte.
    pub(super) fn name(&mut self, name: &[u8]) {
        self.text(b",\"name\":\"");
        for &b in name.iter().take(15) {
            if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
                self.text(&[b]);
            } else {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.text(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
            }
        }
        self.text(b"\"");
    }

    pub(super) fn finish(&mut self) -> &[u8] {
        self.text(b"}\n");
        &self.buf[..self.n]
    }

    /// Appends; what does not fit is cut (never with the sizes above).
    fn text(&mut self, s: &[u8]) {
        let end = (self.n + s.len()).min(LINE_MAX);
        let take = end - self.n;
        self.buf[self.n..end].copy_from_slice(&s[..take]);
        self.n = end;
    }

    fn number(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.text(&digits[i..]);
    }
}
