//! Supervising the command: start it, pass signals on, reap the whole tree, return its status.
//!
//! nettrap becomes a child subreaper, so processes that the command leaves behind (daemons,
//! double forks) are reparented to it and reaped; after the command exits it waits a short grace
//! period for them, so their calls reach the report. Signals sent to nettrap (SIGTERM, SIGHUP,
//! SIGUSR1/2, and SIGINT/SIGQUIT sent with kill) are forwarded to the command; a Ctrl-C from the
//! terminal already reaches the command, which shares nettrap's process group, so it is not sent
//! twice. If nettrap itself is killed, the kernel kills the command (PR_SET_PDEATHSIG).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long to wait for leftover descendants after the command exits.
const GRACE: Duration = Duration::from_millis(500);
const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The command's status, shell-style: its exit code, or 128 + the signal that killed it.
pub struct Status {
    pub code: u8,
    pub signal: Option<i32>,
}

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset takes valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn status_of(wstatus: i32) -> Status {
    if libc::WIFSIGNALED(wstatus) {
        let sig = libc::WTERMSIG(wstatus);
        Status {
            code: (128 + sig).min(255) as u8,
            signal: Some(sig),
        }
    } else {
        Status {
            code: libc::WEXITSTATUS(wstatus) as u8,
            signal: None,
        }
    }
}

/// Reaps every exited child; returns the status of `main` if it was among them.
fn reap(main: i32) -> (Option<Status>, bool) {
    let mut main_status = None;
    loop {
        let mut w = 0;
        // SAFETY: waitpid with a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut w, libc::WNOHANG) };
        if pid > 0 {
            if pid == main {
                main_status = Some(status_of(w));
            }
            continue;
        }
        // 0: children remain, none exited; -1 (ECHILD): no children left.
        return (main_status, pid < 0);
    }
}

/// The signals nettrap waits for, blocked in every thread of nettrap.
pub struct Blocked {
    set: libc::sigset_t,
}

/// Blocks the signals [`run`] waits for. Call it before starting any thread, so every thread
/// inherits the mask and no signal is delivered (and lost, or fatal) elsewhere. They stay
/// blocked until nettrap exits: a Ctrl-C after the command ended must not cost the report.
pub fn block_signals() -> Blocked {
    let mut v = FORWARDED.to_vec();
    v.push(libc::SIGCHLD);
    let set = sigset(&v);
    // SAFETY: pthread_sigmask with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    Blocked { set }
}

/// Runs `cmd` to completion. An error means it could not be started.
pub fn run(mut cmd: Command, blocked: &Blocked) -> io::Result<Status> {
    let all = blocked.set;
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (pthread_sigmask, prctl, getppid, raise).
    unsafe {
        cmd.pre_exec(move || {
            let empty = sigset(&[]);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let main = child.id() as i32;
    let mut status = None;
    while status.is_none() {
        // SAFETY: zeroed siginfo is a valid out-parameter; `all` is a valid set.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let sig = unsafe { libc::sigwaitinfo(&all, &mut info) };
        if sig < 0 {
            continue; // EINTR
        }
        if sig == libc::SIGCHLD {
            status = reap(main).0;
            continue;
        }
        let from_terminal = info.si_code == libc::SI_KERNEL;
        if !(from_terminal && (sig == libc::SIGINT || sig == libc::SIGQUIT)) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(main, sig) };
        }
    }
    // Leftover descendants (reparented to us) get a grace period to finish their calls.
    let deadline = Instant::now() + GRACE;
    let chld = sigset(&[libc::SIGCHLD]);
    while !reap(main).1 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ts = libc::timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        // SAFETY: valid set and timeout; the siginfo is not needed.
        unsafe { libc::sigtimedwait(&chld, std::ptr::null_mut(), &ts) };
    }
    Ok(status.unwrap_or(Status {
        code: 1,
        signal: None,
    }))
}
