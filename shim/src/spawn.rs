//! Processes started by a thread, for runners that run each test on a thread named after it
//! (libtest, `cargo test`): a child's own thread name is its program's from its `exec` on,
//! before it can make any call, and libtest sets no per-test environment for it to inherit, so
//! only the parent can say which test started it: the thread that called `posix_spawn`.
//!
//! The shim interposes `posix_spawn` and `posix_spawnp` (Rust's `std::process::Command` spawns
//! through `posix_spawnp` unless it needs `pre_exec`, a uid/gid or groups, when it forks). It
//! always calls the real function and returns its result unchanged, errno untouched. Only in a
//! run whose policy carries `FLAG_THREAD_NAMES` (`cargo test`), and only when the spawn
//! succeeded and the caller asked for the child's pid, does it append one `spawn` event to the
//! run's timeline (see `src/attribution/SPEC.md`): the spawner's pid, tid and CLOCK_MONOTONIC
//! time after the call, the child's pid, and the calling thread's name as the kernel keeps it
//! (`prctl(PR_GET_NAME)`, 15 bytes). The report then gives a child without a test of its own
//! the test whose thread started it.
//!
//! The real functions are found on first use as `dlsym(RTLD_NEXT)` finds them
//! ([`super::symbols`], as for [`super::threads`]; `dlsym` itself only when the loaded objects
//! could not be listed: `posix_spawn` is not async-signal-safe, so a caller cannot be in a
//! signal handler or between a `fork` and an `exec`, where `dlsym` would not be safe either).
//! The line is built on the stack and written with one `write` (three system calls per process
//! spawned, in such runs only), no allocation, no lock.
//!
//! glibc keeps two versions of each: the lookup takes the default (`GLIBC_2.15`), which every
//! program linked since 2012 binds. The older one also ran a file without `#!` through
//! `/bin/sh` when `exec` said `ENOEXEC`; a program linked against it (before glibc 2.15) gets the
//! current behaviour in a `cargo test` run or any other run under the shim.
//! `pidfd_spawn` / `pidfd_spawnp` (glibc 2.39, Rust's unstable `CommandExt::create_pidfd`) give a
//! pidfd, not a pid: not interposed.

use super::symbols::{self, POSIX_SPAWN, POSIX_SPAWNP};
use super::threads::{Line, append_to_timeline, records_thread_names};
use super::{run_dir, set_errno, sys};
use core::ffi::{c_char, c_int};

type SpawnFn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const c_char,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    *const *mut c_char,
    *const *mut c_char,
) -> c_int;

/// # Safety
/// Same contract as posix_spawn(3); exported to interpose libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut libc::pid_t,
    path: *const c_char,
    file_actions: *const libc::posix_spawn_file_actions_t,
    attrp: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let f = symbols::get(&POSIX_SPAWN);
    // SAFETY: f is libc's posix_spawn (or 0, handled by `call`); the caller's arguments are
    // forwarded unchanged.
    unsafe { call(f, pid, path, file_actions, attrp, argv, envp) }
}

/// # Safety
/// Same contract as posix_spawnp(3); exported to interpose libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut libc::pid_t,
    file: *const c_char,
    file_actions: *const libc::posix_spawn_file_actions_t,
    attrp: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let f = symbols::get(&POSIX_SPAWNP);
    // SAFETY: as in posix_spawn.
    unsafe { call(f, pid, file, file_actions, attrp, argv, envp) }
}

/// Calls the real function `f` and, when it succeeded, notes the spawn.
///
/// # Safety
/// `f` is 0 or libc's posix_spawn/posix_spawnp; the arguments follow posix_spawn(3).
unsafe fn call(
    f: usize,
    pid: *mut libc::pid_t,
    file: *const c_char,
    file_actions: *const libc::posix_spawn_file_actions_t,
    attrp: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    if f == 0 {
        // No libc function to forward to (cannot happen with glibc): fail as a libc without
        // posix_spawn would.
        return libc::ENOSYS;
    }
    // SAFETY: f is libc's function of this signature, as dlsym(RTLD_NEXT) finds it.
    let f: SpawnFn = unsafe { core::mem::transmute::<usize, SpawnFn>(f) };
    // SAFETY: forwarding the caller's arguments unchanged.
    let r = unsafe { f(pid, file, file_actions, attrp, argv, envp) };
    if r == 0 && !pid.is_null() && run_dir().is_some() {
        // SAFETY: on success posix_spawn stored the child's pid through the caller's pointer.
        let child = unsafe { *pid };
        note_spawn(child);
    }
    r
}

/// Appends this thread's `spawn` event to the timeline when the run records thread names.
/// Leaves errno as it found it; any failure only loses the event.
#[inline(never)]
#[cold]
fn note_spawn(child: libc::pid_t) {
    let saved = super::errno();
    if child > 0 && records_thread_names() {
        let mut name = [0u8; 16];
        let name_len = sys::thread_name(&mut name);
        let mut line = Line::new(b"spawn", super::now_ns(), sys::getpid(), sys::gettid());
        line.field(b"child", child as u64);
        line.name(&name[..name_len]);
        append_to_timeline(line.finish());
    }
    set_errno(saved);
}
