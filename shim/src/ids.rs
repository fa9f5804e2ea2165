//! Who makes a call: the calling thread's tid and its process's pid, for the record.
//!
//! The tid is always asked of the kernel (`gettid`): it is exact in every kind of task. The pid
//! comes from a small cache keyed by tid, so a connect makes one system call for both instead
//! of two. A cached pid is used only when all of this holds, which makes it exact:
//! - The calling task is the thread glibc set up its thread descriptor for: the tid glibc keeps
//!   in it (`struct pthread`'s `tid`, which the kernel writes at `clone` and glibc's `fork`
//!   updates in the child) equals `gettid()`. A `vfork` child, `posix_spawn`'s child or a raw
//!   `clone` child runs on its parent's descriptor, whose tid is its parent's (alive, so never
//!   equal to the child's); a raw `fork` child's copy holds its parent's tid, also never its own.
//!   Such tasks always ask the kernel for their pid and never write the cache.
//! - The entry was written by a task with the same tid. In the same memory, a descriptor's
//!   owner with that tid is a thread of the process that wrote it (a tid number freed by a
//!   thread that exited and reused by a thread of the same process has the same pid).
//! - Memory copied into another process by glibc's `fork` starts with an empty cache (a
//!   `pthread_atfork` child handler, registered at load), and so does one copied by glibc's
//!   `_Fork` (2.34 on: no atfork handlers run, but the child owns its descriptor), which the
//!   shim interposes for that; so an entry can never name the parent for a child (or its
//!   thread) whose tid reuses a number of the parent's exited threads (pid numbers wrap:
//!   `/proc/sys/kernel/pid_max` may be 32768; fixtures/c/pid_reuse.c makes it happen at once
//!   with `ns_last_pid`). Left open: a program that forks with a raw system call (no atfork
//!   handlers; glibc does not support threads in such a child) and then starts threads, one of
//!   which gets a reused tid of its parent's cached threads.
//!
//! The descriptor's layout is glibc's on x86_64 (the tid at `%fs:0x2d0` since glibc 2.25);
//! it is checked at load on the main thread (its tid there must equal `gettid()`, and the
//! descriptor must point to itself), and without that match the cache is never used.

use super::sys;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// tid → pid: each entry one word (`tid << 32 | pid`, 0 = empty), so a reader never sees half
/// an entry.
static PIDS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// The descriptor's layout matched at load (see the module comment).
static TCB_TID_OK: AtomicBool = AtomicBool::new(false);

/// Offset of `tid` in glibc's `struct pthread` on x86_64 (after the 0x2c0-byte `tcbhead_t`
/// and the 16-byte `list`).
#[cfg(target_arch = "x86_64")]
const TCB_TID: usize = 0x2d0;

/// The tid glibc keeps in the calling thread's descriptor, if the thread pointer looks like
/// glibc's (its `tcb` and `self` words both point to it).
#[cfg(target_arch = "x86_64")]
fn tcb_tid() -> Option<u32> {
    let (tcb, me): (usize, usize);
    // SAFETY: reads the first and third words of the TCB (tcbhead_t's tcb and self), which
    // the x86_64 TLS ABI puts at %fs:0 for every thread; the shim already relies on %fs:0x10.
    unsafe {
        core::arch::asm!(
            "mov {}, fs:[0]",
            "mov {}, fs:[0x10]",
            out(reg) tcb,
            out(reg) me,
            options(nostack, readonly, preserves_flags)
        )
    };
    if tcb == 0 || tcb != me {
        return None;
    }
    // SAFETY: a descriptor that points to itself at 0 and 0x10 is glibc's struct pthread,
    // whose tid word lies inside it (the layout was checked at load, TCB_TID_OK).
    Some(unsafe { core::ptr::read_volatile((tcb + TCB_TID) as *const u32) })
}

#[cfg(not(target_arch = "x86_64"))]
fn tcb_tid() -> Option<u32> {
    None
}

/// From the constructor, on the main thread: check the descriptor's layout and register the
/// fork child handler that empties the cache.
pub fn init() {
    if tcb_tid() != Some(sys::gettid()) {
        return;
    }
    let f = super::symbols::get(&super::symbols::REGISTER_ATFORK);
    if f == 0 {
        return;
    }
    // SAFETY: f is glibc's __register_atfork (what pthread_atfork calls).
    let register: RegisterAtfork = unsafe { core::mem::transmute(f) };
    // SAFETY: only a child handler, which runs in the fork child before fork returns there;
    // the handle names this library (it is never unloaded).
    let r = unsafe { register(None, None, Some(forked), &PIDS as *const _ as *mut c_void) };
    if r == 0 {
        TCB_TID_OK.store(true, Ordering::Relaxed);
    }
}

type RegisterAtfork = unsafe extern "C" fn(
    Option<extern "C" fn()>,
    Option<extern "C" fn()>,
    Option<extern "C" fn()>,
    *mut c_void,
) -> c_int;

/// In glibc's fork child: nothing cached belongs to this process.
extern "C" fn forked() {
    for e in &PIDS {
        e.store(0, Ordering::Relaxed);
    }
}

/// `_Fork` (glibc 2.34 on: a fork that runs no atfork handlers), interposing glibc's: the
/// real one, then, in the child, the cache emptied as [`forked`] does in `fork`'s child. It
/// returns what the real one returned, errno untouched; without one (an older libc: found only
/// by a program that looks the name up), the fork system call it would make.
///
/// # Safety
/// As _Fork(3): async-signal-safe, and so is this (atomic stores; the symbol search takes no
/// lock once the shim's constructor ran).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _Fork() -> libc::pid_t {
    let f = super::symbols::get(&super::symbols::FORK);
    let pid = if f != 0 && f != _Fork as *const () as usize {
        // SAFETY: f is libc's _Fork, which takes nothing and returns a pid.
        let f: unsafe extern "C" fn() -> libc::pid_t = unsafe { core::mem::transmute(f) };
        // SAFETY: as _Fork(3).
        unsafe { f() }
    } else {
        // SAFETY: clone with only the exit signal: a fork (no stack, no thread pointer given).
        let r = unsafe { sys::call(libc::SYS_clone, libc::SIGCHLD as usize, 0, 0, 0, 0, 0) };
        sys::libc_style(r)
    };
    if pid == 0 {
        forked();
    }
    pid
}

/// The calling task's (pid, tid): one `gettid`, and `getpid` only when the cache cannot answer.
pub fn caller() -> (u32, u32) {
    let tid = sys::gettid();
    if !TCB_TID_OK.load(Ordering::Relaxed) || tcb_tid() != Some(tid) {
        return (sys::getpid(), tid);
    }
    let slot = &PIDS[(tid.wrapping_mul(0x9e37_79b9) >> 26) as usize];
    let e = slot.load(Ordering::Relaxed);
    if e >> 32 == u64::from(tid) && e as u32 != 0 {
        return (e as u32, tid);
    }
    let pid = sys::getpid();
    slot.store((u64::from(tid) << 32) | u64::from(pid), Ordering::Relaxed);
    (pid, tid)
}
