//! Starting the command: a child that shares nettrap's memory until it execs (`clone` with
//! `CLONE_VM | CLONE_VFORK`, as glibc's `posix_spawn` does), instead of `fork`.
//!
//! A fork copies nettrap's page tables, write-protects every private page (so nettrap's own
//! first write to each afterwards is a copy-on-write fault) and tears the copy down again at
//! the child's exec: ~100 us of every run's start. `posix_spawn` itself cannot set the parent
//! death signal nor hand over the seccomp listener, hence this.
//!
//! The child does what `std::process::Command` and `supervise` did before `exec`, in the same
//! order, with async-signal-safe system calls only (it runs on nettrap's memory, on a stack of
//! its own, while the thread that started it waits): every signal with a handler back to its
//! default (a signal arriving before `exec` must not run nettrap's handlers in the child) and
//! SIGPIPE too (Rust ignores it; the command must not inherit that); the seccomp hand-off when
//! a filter goes in; the signal mask emptied; PR_SET_PDEATHSIG; if nettrap died meanwhile, it
//! kills itself; then `execvpe` (the `PATH` search and the `/bin/sh` fallback of `execvp`, which
//! `Command` used: nettrap never changes the command's `PATH`). Whatever fails is reported
//! through shared memory as an errno, the same errors `Command::spawn` gave.
//!
//! The environment is the one `Command` would have given: nettrap's own with the command's
//! changes, sorted by name.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

/// What the child needs, built before it starts: it allocates nothing.
struct Child<'a> {
    program: &'a CString,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    parent: libc::pid_t,
    hand_off: Option<&'a crate::engine::seccomp::HandOff>,
    /// The errno of what failed in the child (0: it exec'd).
    error: AtomicI32,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

/// Starts `cmd` (its program, arguments and environment changes: nothing else of a `Command`
/// is used) as described in the module docs; returns its pid once it has exec'd.
pub fn spawn(
    cmd: &Command,
    hand_off: Option<&crate::engine::seccomp::HandOff>,
) -> io::Result<libc::pid_t> {
    let program = cstring(cmd.get_program())?;
    let mut args = vec![program.clone()];
    for a in cmd.get_args() {
        args.push(cstring(a)?);
    }
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => env.insert(k.to_owned(), v.to_owned()),
            None => env.remove(k),
        };
    }
    let mut vars = Vec::with_capacity(env.len());
    for (k, v) in &env {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        vars.push(cstring(OsStr::from_bytes(&kv))?);
    }
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = vars
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let child = Child {
        program: &program,
        argv: &argv,
        envp: &envp,
        parent: std::process::id() as libc::pid_t,
        hand_off,
        error: AtomicI32::new(0),
    };
    // execvpe's /bin/sh fallback copies the arguments onto this stack, as glibc's posix_spawn
    // sizes its own.
    let size = 64 * 1024 + argv.len() * std::mem::size_of::<usize>() + libc::PATH_MAX as usize;
    // Not zeroed: a stack is written before it is read, and zeroing it touched every one of its
    // ~17 pages (a page fault each, ~15 us of every run's start) where the child uses the top
    // two or three.
    let mut stack = Box::<[u8]>::new_uninit_slice(size);
    // SAFETY: the stack's top, inside the allocation, aligned down to 16 bytes as the ABI wants.
    let top = unsafe { stack.as_mut_ptr().add(size) }.map_addr(|a| a & !15);
    // Every signal blocked until the child has reset what it must (see `child_main`): none may
    // run a handler of nettrap's on the child's side meanwhile.
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset fills the set it is given; pthread_sigmask reads one valid set and
    // writes the other.
    unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr());
    }
    // SAFETY: the child runs child_main on its own stack, on `child`, both alive until clone
    // returns (CLONE_VFORK: this thread waits until the child has exec'd or ended); it makes
    // async-signal-safe calls only and allocates nothing.
    let pid = unsafe {
        libc::clone(
            child_main,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&child as *const Child).cast_mut().cast(),
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    match child.error.load(Ordering::SeqCst) {
        0 => Ok(pid),
        errno => {
            // It has ended (or is ending): reaped here, as Command::spawn did.
            let mut status = 0;
            // SAFETY: reaping our own child.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
                && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child's side (see the module docs).
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a Child that outlives this child's time before exec.
    let child = unsafe { &*(arg as *const Child) };
    let fail = |errno: i32| -> libc::c_int {
        child.error.store(errno.max(1), Ordering::SeqCst);
        // SAFETY: ending this child (its own thread group) without running anything else.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: system calls on this child's own signal dispositions and mask (no CLONE_SIGHAND:
    // the table is its own copy); then the hand-off, prctl, getppid/kill/getpid on itself, and
    // execvpe with the NUL-terminated arrays built by `spawn`.
    unsafe {
        for sig in 1..libc::SIGRTMAX() + 1 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut sa) != 0 {
                continue; // glibc's own signals
            }
            let handled = sa.sa_sigaction != libc::SIG_DFL && sa.sa_sigaction != libc::SIG_IGN;
            if handled || sig == libc::SIGPIPE {
                sa.sa_sigaction = libc::SIG_DFL;
                sa.sa_flags = 0;
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        let mut empty = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if let Some(h) = child.hand_off
            && let Err(e) = h.run()
        {
            return fail(e.raw_os_error().unwrap_or(libc::EIO));
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != child.parent {
            // Not raise(): it would signal the thread whose memory this child shares.
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        libc::execvpe(
            child.program.as_ptr(),
            child.argv.as_ptr(),
            child.envp.as_ptr(),
        );
        fail(*libc::__errno_location())
    }
}
