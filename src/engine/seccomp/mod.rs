//! The seccomp engine: catches the calls that bypass libc (static binaries, Go, raw
//! `syscall(SYS_connect)`, scrubbed environments, glibc's internal calls).
//!
//! A seccomp filter ([`filter`]) is installed in the command's process just before `exec`. The
//! kernel keeps it across `fork`, `clone`, `exec` and for every descendant, whatever they do to
//! their environment or linking. It hands `connect`, `listen`, `sendto` with an address,
//! `sendmsg`, `sendmmsg` and `io_uring_setup` to a supervisor thread in nettrap through seccomp
//! user notification ([`supervisor`]), which decides with the same compiled policy as the shim
//! and writes to the same event log. DNS queries among those sends are read for their question
//! ([`dns`]) and recorded as one lookup each ([`lookups`]).
//!
//! Getting the listener out: the filter's notification descriptor is created in the child and
//! is close-on-exec. The child writes its pid and the descriptor's number down a pipe and waits;
//! the supervisor thread copies the descriptor with `pidfd_getfd` and says go; the child closes
//! its copy and execs. (Passing it with `SCM_RIGHTS` would need `sendmsg`, which the new filter
//! already traps.)
//!
//! ## Exactly once, with the shim (engine `auto`)
//!
//! Under `auto` both engines run, and each call is seen by exactly one of them:
//! - the shim keeps what it intercepts (libc's `connect` in processes that loaded it, with the
//!   test read from the live environment). It records and decides the call, then issues the
//!   real `connect` as a raw system call carrying `SHIM_CONNECT_MARK` in its unused fourth
//!   argument; the filter lets marked calls through without a notification. A call the shim
//!   denies never reaches the kernel at all. Its `listen` is marked the same way (and recorded
//!   by the shim once it succeeded).
//! - the supervisor sees everything else: processes without the shim, glibc-internal and raw
//!   `connect`s in processes with it, and every `sendto`/`sendmsg`/`sendmmsg` (the shim does not
//!   interpose those).
//!
//! The shim knows to mark its calls from `FLAG_SECCOMP_BACKSTOP` in the compiled policy, which
//! the launcher sets only when the filter is installed for the whole tree.
//!
//! This is an audit and hygiene tool for your own tests, not a security boundary: user
//! notification has a time-of-check/time-of-use gap (the caller's memory can change after the
//! supervisor read it), and any program can put the mark on its own calls.

mod affinity;
mod dns;
pub mod filter;
pub mod gosync;
mod lookups;
mod notify;
mod supervisor;
mod target;

use crate::rundir::LogMapping;
use nettrap_core::policy::{CompiledPolicy, SHIM_CONNECT_MARK};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 8;

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// One system call, its error returned rather than left in `errno`: the probe's child shares
/// nettrap's memory, thread-local `errno` included (`clone(CLONE_VM)` without a thread of its
/// own), while nettrap's main thread goes on (see [`Probe`]); neither may see the other's.
///
/// # Safety
/// As the system call `nr` with these arguments.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn raw(nr: libc::c_long, a: usize, b: usize, c: usize) -> io::Result<usize> {
    // SAFETY: from the caller. (Elsewhere than x86_64, errno it is.)
    match unsafe { libc::syscall(nr, a, b, c) } {
        r if r < 0 => Err(io::Error::last_os_error()),
        r => Ok(r as usize),
    }
}

/// See the other `raw`.
///
/// # Safety
/// As the system call `nr` with these arguments.
#[cfg(target_arch = "x86_64")]
unsafe fn raw(nr: libc::c_long, a: usize, b: usize, c: usize) -> io::Result<usize> {
    let ret: isize;
    // SAFETY: the x86_64 system call convention (number in rax, arguments in rdi, rsi, rdx,
    // r10, r8, r9; rcx and r11 clobbered); what the call does is the caller's to vouch for.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            // Zero, not whatever these held: prctl checks its unused arguments.
            in("r10") 0usize,
            in("r8") 0usize,
            in("r9") 0usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if (-4095..0).contains(&ret) {
        Err(io::Error::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

/// Installs `prog` with a new listener in the calling process; returns the listener.
/// Async-signal-safe, and leaves `errno` alone: it runs in a child sharing nettrap's memory.
fn install(prog: &libc::sock_fprog) -> io::Result<RawFd> {
    // SAFETY: prctl and seccomp with valid arguments; prog outlives the call.
    unsafe {
        raw(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS as usize, 1, 0)?;
        let fd = raw(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER as usize,
            SECCOMP_FILTER_FLAG_NEW_LISTENER as usize,
            prog as *const libc::sock_fprog as usize,
        )?;
        Ok(fd as RawFd)
    }
}

/// The child's half of the hand-off: install `prog`, report (pid, listener) down `report_w`,
/// wait for the parent's answer on `go_r`, drop our copy of the listener. Async-signal-safe, and
/// leaves `errno` alone (see [`raw`]): it runs in a child. ECHILD means the parent could not
/// take the listener.
///
/// # Safety
/// Only in a freshly forked child; the descriptors must be the hand-off pipes' ends.
unsafe fn hand_over(
    prog: &libc::sock_fprog,
    report_w: RawFd,
    go_r: RawFd,
    go_w: RawFd,
) -> io::Result<()> {
    // SAFETY: plain system calls on descriptors the caller vouches for.
    unsafe {
        // Our copy of the write end would keep the read below from ever seeing EOF if nettrap
        // died during the hand-off.
        let _ = raw(libc::SYS_close, go_w as usize, 0, 0);
        let listener = install(prog)?;
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&(libc::getpid() as u32).to_ne_bytes());
        msg[4..].copy_from_slice(&(listener as u32).to_ne_bytes());
        if raw(libc::SYS_write, report_w as usize, msg.as_ptr() as usize, 8)? != 8 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let mut go = 0u8;
        let n = raw(
            libc::SYS_read,
            go_r as usize,
            &mut go as *mut u8 as usize,
            1,
        );
        let _ = raw(libc::SYS_close, listener as usize, 0, 0);
        if !matches!(n, Ok(1)) || go != b'g' {
            return Err(io::Error::from_raw_os_error(libc::ECHILD));
        }
        Ok(())
    }
}

/// The parent's half: read (pid, listener) from `report_r`, copy the listener with
/// `pidfd_getfd`, and tell the child whether that worked.
fn take_over(report_r: &OwnedFd, go_w: &OwnedFd) -> io::Result<OwnedFd> {
    let mut msg = [0u8; 8];
    // SAFETY: reading 8 bytes into msg.
    if unsafe { libc::read(report_r.as_raw_fd(), msg.as_mut_ptr().cast(), 8) } != 8 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the child reported no listener",
        ));
    }
    let pid = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]);
    let fd = u32::from_ne_bytes([msg[4], msg[5], msg[6], msg[7]]) as RawFd;
    let listener = notify::pidfd_open(pid).and_then(|p| notify::pidfd_getfd(&p, fd));
    let answer = if listener.is_ok() { b'g' } else { b'x' };
    // SAFETY: writing one byte from a local.
    unsafe { libc::write(go_w.as_raw_fd(), (&answer as *const u8).cast(), 1) };
    listener
}

/// The probe child's stack (see [`probe`]).
const PROBE_STACK: usize = 64 << 10;

/// What the probe child needs (see [`probe`]).
struct ProbeArgs {
    prog: *const libc::sock_fprog,
    report_w: RawFd,
    go_r: RawFd,
    go_w: RawFd,
}

/// The probe child: the hand-off with `args`, its exit status 0 or the error's number.
extern "C" fn probe_child(args: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `probe` passes a ProbeArgs that outlives this child, whose `prog` points to a
    // valid filter program; the descriptors are the hand-off pipes' ends, in this child's own
    // copy of the descriptor table.
    let r = unsafe {
        let a = &*(args as *const ProbeArgs);
        hand_over(&*a.prog, a.report_w, a.go_r, a.go_w)
    };
    r.map_or_else(|e| e.raw_os_error().unwrap_or(1), |()| 0)
}

/// Can this kernel, in this context, give us a user-notification filter, and can we take its
/// listener from a child (pidfd_getfd needs ptrace access: Yama's ptrace_scope 2 or 3 refuses
/// it)? Tried in a throwaway child, since a filter cannot be removed once installed.
pub fn probe() -> Result<(), String> {
    Probe::start().finish()
}

/// A [`probe`] under way: its child installs a filter while nettrap goes on with its start
/// (the policy), and [`Probe::finish`] takes the answer.
pub struct Probe(Result<Box<Probing>, Option<String>>);

/// The probe child and what it uses, alive until it is reaped.
struct Probing {
    pid: libc::pid_t,
    report_r: OwnedFd,
    go_w: OwnedFd,
    _filter: Box<[libc::sock_filter; 1]>,
    _prog: Box<libc::sock_fprog>,
    _args: Box<ProbeArgs>,
    _stack: Vec<u8>,
}

impl Probe {
    /// Starts the probe's child (see [`probe`]).
    pub fn start() -> Probe {
        let avail =
            std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
        if !avail.split_whitespace().any(|a| a == "user_notif") {
            return Probe(Err(Some("the kernel has no SECCOMP_RET_USER_NOTIF".into())));
        }
        match Self::spawn() {
            Ok(p) => Probe(Ok(p)),
            Err(e) => Probe(Err(Some(e))),
        }
    }

    fn spawn() -> Result<Box<Probing>, String> {
        let filter = Box::new([libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: filter::RET_ALLOW,
        }]);
        let prog = Box::new(libc::sock_fprog {
            len: 1,
            filter: filter.as_ptr().cast_mut(),
        });
        let (report_r, report_w) = pipe().map_err(|e| e.to_string())?;
        let (go_r, go_w) = pipe().map_err(|e| e.to_string())?;
        let args = Box::new(ProbeArgs {
            prog: &*prog,
            report_w: report_w.as_raw_fd(),
            go_r: go_r.as_raw_fd(),
            go_w: go_w.as_raw_fd(),
        });
        // The child shares nettrap's memory (CLONE_VM) instead of copying it: a fork cost
        // ~100 us more (the page tables copied and torn down, and nettrap's own first write to
        // every page after it a copy-on-write fault). It runs on a stack of its own, has its
        // own descriptor table, and its filter and no_new_privs are its own (both are per
        // task).
        let mut stack = vec![0u8; PROBE_STACK];
        // SAFETY: the stack's top, inside the allocation, aligned down to 16 bytes (the ABI).
        let top = unsafe { stack.as_mut_ptr().add(PROBE_STACK) }.map_addr(|a| a & !15);
        // SAFETY: the child runs probe_child on its own stack; the stack, `args` and what it
        // points to are heap allocations kept in the Probing until the child is reaped
        // (`finish`, or drop); probe_child only makes async-signal-safe calls and returns
        // (glibc then ends the child with `exit`).
        let pid = unsafe {
            libc::clone(
                probe_child,
                top.cast(),
                libc::CLONE_VM | libc::SIGCHLD,
                (&*args as *const ProbeArgs).cast_mut().cast(),
            )
        };
        if pid < 0 {
            return Err(format!("clone: {}", io::Error::last_os_error()));
        }
        // The child has its own copies: without ours, a child that fails before reporting
        // gives end of file.
        drop((report_w, go_r));
        Ok(Box::new(Probing {
            pid,
            report_r,
            go_w,
            _filter: filter,
            _prog: prog,
            _args: args,
            _stack: stack,
        }))
    }

    /// The probe's answer: waits for its child, reaps it.
    pub fn finish(mut self) -> Result<(), String> {
        let p = match std::mem::replace(&mut self.0, Err(None)) {
            Ok(p) => p,
            Err(why) => return Err(why.unwrap_or_default()),
        };
        let taken = take_over(&p.report_r, &p.go_w);
        let mut status = 0;
        // Until reaped (never given up on EINTR): the child runs on the Probing's stack until
        // it has ended.
        // SAFETY: reaping the child we cloned.
        while unsafe { libc::waitpid(p.pid, &mut status, 0) } < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
        drop(p);
        match (taken, libc::WEXITSTATUS(status)) {
            (Ok(_), _) => Ok(()),
            (Err(e), libc::ECHILD) => Err(format!(
                "cannot take the filter's listener from a child (pidfd_getfd: {e})"
            )),
            (Err(_), libc::EBUSY) => {
                Err("nettrap already runs under a seccomp supervisor (EBUSY)".into())
            }
            (Err(_), code) => Err(format!(
                "installing a filter failed: {}",
                io::Error::from_raw_os_error(code)
            )),
        }
    }
}

impl Drop for Probe {
    /// Never asked (nettrap failed before): the child is still reaped before its stack goes.
    fn drop(&mut self) {
        if self.0.is_ok() {
            let _ = Probe(std::mem::replace(&mut self.0, Err(None))).finish();
        }
    }
}

/// A filter ready to go into the command's process, and the pipes of the hand-off.
pub struct Prepared {
    _prog: Box<[libc::sock_filter]>,
    fprog: Box<libc::sock_fprog>,
    report: (OwnedFd, OwnedFd),
    go: (OwnedFd, OwnedFd),
}

// SAFETY: the only raw pointer, fprog.filter, points into `_prog`, which the struct owns and
// moves along with it; nothing else is shared.
unsafe impl Send for Prepared {}

pub fn prepare() -> io::Result<Prepared> {
    let prog: Box<[libc::sock_filter]> = filter::program(SHIM_CONNECT_MARK).into_boxed_slice();
    let fprog = Box::new(libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    });
    Ok(Prepared {
        _prog: prog,
        fprog,
        report: pipe()?,
        go: pipe()?,
    })
}

/// The child's side of the hand-off (see the module docs): the filter to install and the
/// pipes' ends, as the command's process inherits them.
pub struct HandOff {
    fprog: *const libc::sock_fprog,
    report_w: RawFd,
    go_r: RawFd,
    go_w: RawFd,
}

impl HandOff {
    /// Installs the filter and hands the listener over; in the command's process just before
    /// `exec`. Async-signal-safe.
    ///
    /// # Safety
    /// Only in a freshly started child (see `spawn`), while the [`Prepared`] it came from is
    /// alive in nettrap.
    pub unsafe fn run(&self) -> io::Result<()> {
        // SAFETY: fprog points into the Prepared, alive per the caller; the descriptors are the
        // hand-off pipes' ends.
        unsafe { hand_over(&*self.fprog, self.report_w, self.go_r, self.go_w) }
    }
}

impl Prepared {
    /// What the command's process runs just before `exec` (see [`HandOff::run`]).
    pub fn hand_off(&self) -> HandOff {
        HandOff {
            fprog: &*self.fprog,
            report_w: self.report.1.as_raw_fd(),
            go_r: self.go.0.as_raw_fd(),
            go_w: self.go.1.as_raw_fd(),
        }
    }

    /// Starts the supervisor thread: it takes the listener from the child, then answers
    /// notifications until stopped.
    pub fn start(
        self,
        policy: Box<CompiledPolicy>,
        log: Arc<LogMapping>,
        refuse_io_uring: bool,
    ) -> io::Result<Running> {
        let (stop_r, stop_w) = pipe()?;
        let done = Arc::new(Done::default());
        let done_here = done.clone();
        let thread = std::thread::Builder::new()
            .name("nettrap-seccomp".into())
            .spawn(move || {
                let early = (|| {
                    // No listener: the command never started; nothing was trapped.
                    let listener = self.take_listener(&stop_r)?;
                    let ctx = supervisor::Context {
                        listener,
                        policy,
                        log_mapping: log,
                        refuse_io_uring,
                    };
                    supervisor::run(ctx, stop_r)
                })();
                done_here.set();
                early
            })?;
        Ok(Running {
            thread,
            stop: stop_w,
            done,
        })
    }

    fn take_listener(&self, stop: &OwnedFd) -> Option<notify::Listener> {
        let mut fds = [
            libc::pollfd {
                fd: self.report.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on two valid descriptors.
        while unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {}
        if fds[0].revents & libc::POLLIN == 0 {
            return None;
        }
        take_over(&self.report.0, &self.go.1)
            .ok()
            .map(notify::Listener)
    }
}

/// Set by the supervisor thread once it has written its last record, waited for by
/// [`Running::stop`].
#[derive(Default)]
struct Done {
    done: std::sync::Mutex<bool>,
    cond: std::sync::Condvar,
}

impl Done {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cond.notify_all();
    }

    /// Waits up to `wait` for it to be set; whether it is.
    fn wait(&self, wait: std::time::Duration) -> bool {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = self
            .cond
            .wait_timeout_while(done, wait, |d| !*d)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }
}

/// The running supervisor.
pub struct Running {
    thread: JoinHandle<Option<String>>,
    stop: OwnedFd,
    done: Arc<Done>,
}

impl Running {
    /// Stops the supervisor once the command and its grace period are over. Returns why it had
    /// stopped answering before that, if it had (calls trapped after it stopped failed with
    /// ENOSYS, undecided and unrecorded: a loss).
    pub fn stop(self) -> Option<String> {
        // SAFETY: writing one byte from a local to our pipe.
        unsafe { libc::write(self.stop.as_raw_fd(), b"s".as_ptr().cast(), 1) };
        // The thread may be waiting in RECV, which the pipe cannot interrupt: WAKE does, and is
        // sent again until the thread is done (a signal that lands just before it starts
        // waiting is otherwise lost). The thread usually ends on its own once the last process
        // holding the filter has gone (the listener hangs up). Waited for on a condition
        // variable, which wakes this thread the moment it is done: a sleep between two looks
        // lasts its length plus the timer slack (50 us), ~70 us for a 20 us sleep.
        use std::os::unix::thread::JoinHandleExt;
        let thread = self.thread.as_pthread_t();
        let mut wait = std::time::Duration::from_micros(20);
        // A thread that panicked never sets `done`: it is finished.
        while !self.done.wait(std::time::Duration::ZERO) && !self.thread.is_finished() {
            // SAFETY: the thread has not been joined, so its pthread_t is valid.
            unsafe { libc::pthread_kill(thread, supervisor::WAKE as libc::c_int) };
            if self.done.wait(wait) {
                break;
            }
            wait = (wait * 2).min(std::time::Duration::from_millis(1));
        }
        match self.thread.join() {
            Ok(early) => early,
            Err(panic) => Some(panic_message(&panic)),
        }
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}
