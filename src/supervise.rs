//! Supervising the command: start it, pass signals on, end the whole process tree with it,
//! return its status and what had to be killed.
//!
//! nettrap becomes a child subreaper, so processes that the command leaves behind (daemons,
//! double forks, `sleep 7 &`) are reparented to it. After the command exits they get a grace
//! period ([`GRACE`]) to finish, so their calls reach the report; then every process still in
//! the tree gets SIGTERM (and SIGCONT, should it be stopped), and after [`TERM_GRACE`] SIGKILL.
//! The tree is found afresh on every pass, from nettrap's own tasks down through
//! `/proc/PID/task/TID/children` (a `/proc` scan by parent pid where that file is missing), and
//! passes repeat until no descendant is left: a tree can fork while it is being killed. The run
//! thus ends with no process of its tree running, and none of them meets a supervisor that has
//! stopped (whose trapped calls would fail with ENOSYS).
//!
//! Signals sent to nettrap (SIGTERM, SIGHUP, SIGUSR1/2, and SIGINT/SIGQUIT sent with kill) are
//! forwarded to the command; a Ctrl-C from the terminal already reaches the command, which shares
//! nettrap's process group, so it is not sent twice. A second interrupt (SIGINT, SIGTERM or
//! SIGHUP, from the terminal or kill) while the command runs kills the whole tree with SIGKILL at
//! once; after the command exited, an interrupt cuts the current grace period short and a
//! second one sends SIGKILL at once. SIGQUIT and SIGUSR1/2 do not count as interrupts: runtimes
//! use them for thread dumps and reloads.
//!
//! The command stays in nettrap's process group: in a group of its own it would be a background
//! job of the terminal (its reads from the terminal stopped with SIGTTIN, Ctrl-C reaching
//! nettrap alone), and killing by group would miss the processes that leave it (`setsid`,
//! daemons); the tree is found through `/proc` instead.
//!
//! If nettrap itself is killed, the kernel kills the command (PR_SET_PDEATHSIG); processes the
//! command left behind are then no longer nettrap's to end.

use nettrap_core::event;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::prctl;
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd, siginfo};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long processes the command left behind may run on after it exits, before SIGTERM.
pub const GRACE: Duration = Duration::from_millis(500);
/// How long they have after SIGTERM, before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_millis(500);
/// How long to keep sending SIGKILL before giving up on processes that do not die (stuck in
/// the kernel, e.g. on a dead network filesystem).
const KILL_GIVE_UP: Duration = Duration::from_secs(10);
/// How often the tree is walked again while it is being ended.
const PASS: Duration = Duration::from_millis(20);

const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];
/// The second of these kills the whole tree at once.
const INTERRUPTS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The command's status, shell-style: its exit code, or 128 + the signal that killed it.
pub struct Status {
    pub code: u8,
    pub signal: Option<i32>,
}

/// Why nettrap killed a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Still running after the command exited and the grace period passed.
    LeftRunning,
    /// A second interrupt while the command ran.
    SecondInterrupt,
}

/// A process nettrap signalled to end the run.
#[derive(Clone, Debug)]
pub struct Killed {
    pub pid: u32,
    /// `/proc/PID/cmdline`, arguments joined with spaces (`[comm]` when empty).
    pub cmdline: String,
    /// The last signal sent: SIGTERM, or SIGKILL when SIGTERM was not enough (or not tried).
    pub signal: Signal,
    pub why: Why,
}

/// What running the command came to.
pub struct Outcome {
    pub status: Status,
    /// Processes nettrap had to signal, by pid.
    pub killed: Vec<Killed>,
    /// Processes still there when nettrap gave up sending SIGKILL.
    pub unkillable: Vec<Killed>,
    /// Calls shims counted by signal (they had no descriptor left to count them otherwise),
    /// indexed by `event::Unobserved` value.
    pub unobserved: [u64; event::CAUSES],
}

/// The cause a shim's counting signal stands for (see `event::UNOBSERVED_SIGNAL_BASE`).
fn unobserved_cause(signo: u32) -> Option<usize> {
    let cause = event::UNOBSERVED_SIGNAL_BASE.checked_sub(signo as i32)?;
    (1..event::CAUSES as i32)
        .contains(&cause)
        .then_some(cause as usize)
}

/// The signals nettrap waits for, blocked in every thread of nettrap.
pub struct Blocked {
    set: SigSet,
}

/// Blocks the signals [`run`] waits for. Call it before starting any thread, so every thread
/// inherits the mask and no signal is delivered (and lost, or fatal) elsewhere. They stay
/// blocked until nettrap exits: a Ctrl-C after the command ended must not cost the report.
pub fn block_signals() -> Blocked {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    // The real-time signals shims count unobserved calls with (nix's Signal has no names for
    // them).
    let mut raw = *set.as_ref();
    for cause in 1..event::CAUSES as i32 {
        // SAFETY: a valid set and a valid real-time signal number.
        unsafe { libc::sigaddset(&mut raw, event::UNOBSERVED_SIGNAL_BASE - cause) };
    }
    // SAFETY: raw was made from a valid SigSet by sigaddset only.
    let set = unsafe { SigSet::from_sigset_t_unchecked(raw) };
    let _ = signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    Blocked { set }
}

fn status_of(ws: WaitStatus) -> Option<(Pid, Status)> {
    match ws {
        WaitStatus::Exited(pid, code) => Some((
            pid,
            Status {
                code: code as u8,
                signal: None,
            },
        )),
        WaitStatus::Signaled(pid, sig, _) => Some((
            pid,
            Status {
                code: (128 + sig as i32).min(255) as u8,
                signal: Some(sig as i32),
            },
        )),
        _ => None,
    }
}

/// Reaps every exited child; returns the status of `main` if it was among them, and whether no
/// child is left at all.
fn reap(main: Pid) -> (Option<Status>, bool) {
    let mut main_status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return (main_status, false),
            Ok(ws) => {
                if let Some((pid, st)) = status_of(ws)
                    && pid == main
                {
                    main_status = Some(st);
                }
            }
            Err(Errno::EINTR) => {}
            // ECHILD: nothing left (other errors cannot happen with these arguments).
            Err(_) => return (main_status, true),
        }
    }
}

/// Pids of the children of `pid`, through its tasks' `children` files; None where the kernel
/// has no such files (CONFIG_PROC_CHILDREN off).
fn children(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        any = true;
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    any.then_some(out)
}

/// Every process's parent, from a scan of `/proc`.
fn parents() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some((_, ppid)) = stat(pid) {
            out.push((pid, ppid));
        }
    }
    out
}

/// (state, parent pid) from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let mut rest = s[s.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Is `pid` a descendant of `me` (by its chain of parents, as it is now)?
fn is_descendant(pid: i32, me: i32) -> bool {
    let mut p = pid;
    for _ in 0..4096 {
        match stat(p) {
            Some((_, parent)) if parent == me => return true,
            Some((_, parent)) if parent > 1 => p = parent,
            _ => return false,
        }
    }
    false
}

/// Every descendant of `me`, parents before children.
fn descendants(me: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if children(me).is_some() {
        let mut next = vec![me];
        while let Some(p) = next.pop() {
            for c in children(p).unwrap_or_default() {
                if c != me && !out.contains(&c) {
                    out.push(c);
                    next.push(c);
                }
            }
        }
    } else {
        let all = parents();
        let mut next = vec![me];
        while let Some(p) = next.pop() {
            for &(c, _) in all.iter().filter(|(_, pp)| *pp == p) {
                if c != me && !out.contains(&c) {
                    out.push(c);
                    next.push(c);
                }
            }
        }
    }
    out
}

fn cmdline(pid: i32) -> String {
    let args = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text: Vec<String> = args
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if text.is_empty() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        format!("[{}]", comm.trim_end())
    } else {
        text.join(" ")
    }
}

/// The processes signalled so far, by pid.
struct Ender {
    me: i32,
    sent: BTreeMap<i32, Killed>,
}

impl Ender {
    /// Sends `sig` to every live process of the tree; SIGTERM only once per process. Returns
    /// how many live processes the tree holds.
    fn pass(&mut self, sig: Signal, why: Why) -> usize {
        let mut live = 0;
        for pid in descendants(self.me) {
            let Some((state, _)) = stat(pid) else {
                continue; // gone meanwhile
            };
            if state == 'Z' || state == 'X' {
                continue; // dead, waiting to be reaped
            }
            live += 1;
            if sig == Signal::SIGTERM && self.sent.contains_key(&pid) {
                continue;
            }
            let line = match self.sent.get(&pid) {
                Some(k) => k.cmdline.clone(),
                None => cmdline(pid),
            };
            // A pid taken from /proc could in theory be reaped and reused before the kill; the
            // pid space would have to wrap around in between.
            if signal::kill(Pid::from_raw(pid), sig).is_err() {
                continue;
            }
            if sig == Signal::SIGTERM && state == 'T' {
                // A stopped process acts on SIGTERM only once continued.
                let _ = signal::kill(Pid::from_raw(pid), Signal::SIGCONT);
            }
            let entry = self.sent.entry(pid).or_insert_with(|| Killed {
                pid: pid as u32,
                cmdline: line,
                signal: sig,
                why,
            });
            entry.signal = sig;
        }
        live
    }
}

/// What a wait for the next signal came to.
enum Woken {
    /// A blocked signal, read.
    Signal(siginfo),
    /// The timeout passed with no signal pending: nothing happened meanwhile (no child ended:
    /// its SIGCHLD would be pending).
    Timeout,
    /// Anything else (EINTR, a signal gone meanwhile): the caller looks again.
    Nothing,
}

/// Waits up to `timeout` (None: without limit) for one of the blocked signals. A pending
/// signal makes the poll return at once, so it is read only then: a wait that times out (the
/// grower's tick, every few ms while the command runs) is one system call.
fn next_signal(sfd: &SignalFd, timeout: Option<Duration>) -> Woken {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        // Rounded up, so a wait never ends just before its deadline.
        Some(d) => PollTimeout::try_from(d.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX),
    };
    let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, timeout) == Ok(0) {
        return Woken::Timeout;
    }
    match sfd.read_signal() {
        Ok(Some(info)) => Woken::Signal(info),
        _ => Woken::Nothing,
    }
}

enum Stage {
    /// The command runs.
    Running,
    /// The command exited; leftovers may finish until the deadline.
    Grace(Instant),
    /// Leftovers got SIGTERM; SIGKILL at the deadline.
    Term(Instant),
    /// SIGKILL to every process of the tree, until none is left or the deadline.
    Kill(Instant, Why),
}

/// Runs `cmd` to completion and ends its whole tree. `tick` is called once it is started, then
/// whenever the time it last returned has passed (None: never again), until the tree has ended:
/// the event log's grower (see `rundir`), on this thread, which otherwise only waits. An error
/// means it could not be started.
pub fn run(
    cmd: Command,
    hand_off: Option<&crate::engine::seccomp::HandOff>,
    blocked: &Blocked,
    mut tick: impl FnMut() -> Option<Duration>,
) -> io::Result<Outcome> {
    let _ = prctl::set_child_subreaper(true);
    let sfd = SignalFd::with_flags(&blocked.set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    let parent = Pid::this();
    let main = Pid::from_raw(crate::spawn::spawn(&cmd, hand_off)?);
    let mut next_tick = tick().map(|d| Instant::now() + d);
    let mut ender = Ender {
        me: parent.as_raw(),
        sent: BTreeMap::new(),
    };
    let mut status = None;
    let mut interrupts = 0;
    let mut stage = Stage::Running;
    let mut unkillable = Vec::new();
    let mut unobserved = [0u64; event::CAUSES];
    // False only after a wait that timed out while the command ran: no child can have ended
    // since the last reap (its SIGCHLD would have ended the wait), so the tick does not reap.
    let mut reap_now = true;
    loop {
        let (exited, none_left) = if reap_now { reap(main) } else { (None, false) };
        reap_now = true;
        if exited.is_some() {
            status = exited;
        }
        let mut now = Instant::now();
        if next_tick.is_some_and(|at| at <= now) {
            next_tick = tick().map(|d| now + d);
            now = Instant::now();
        }
        if status.is_some() && matches!(stage, Stage::Running) {
            stage = Stage::Grace(now + GRACE);
        }
        let timeout = match stage {
            Stage::Running => None,
            _ if none_left => break,
            Stage::Grace(at) if now < at => Some(at - now),
            Stage::Grace(_) => {
                stage = Stage::Term(now + TERM_GRACE);
                continue;
            }
            Stage::Term(at) if now < at => {
                ender.pass(Signal::SIGTERM, Why::LeftRunning);
                Some((at - now).min(PASS))
            }
            Stage::Term(_) => {
                stage = Stage::Kill(now + KILL_GIVE_UP, Why::LeftRunning);
                continue;
            }
            Stage::Kill(at, why) if now < at => {
                if ender.pass(Signal::SIGKILL, why) == 0 && status.is_some() {
                    // Only zombies left, whose parents die next: reap and look again.
                    Some(Duration::from_millis(1))
                } else {
                    Some(PASS)
                }
            }
            Stage::Kill(..) => {
                unkillable = descendants(ender.me)
                    .into_iter()
                    .filter(|p| stat(*p).is_some_and(|(s, _)| s != 'Z' && s != 'X'))
                    .map(|p| Killed {
                        pid: p as u32,
                        cmdline: cmdline(p),
                        signal: Signal::SIGKILL,
                        why: Why::LeftRunning,
                    })
                    .collect();
                break;
            }
        };
        // Woken for the next tick too.
        let timeout = match (timeout, next_tick) {
            (t, None) => t,
            (None, Some(at)) => Some(at.saturating_duration_since(now)),
            (Some(t), Some(at)) => Some(t.min(at.saturating_duration_since(now))),
        };
        let info = match next_signal(&sfd, timeout) {
            Woken::Signal(info) => info,
            Woken::Timeout => {
                reap_now = !matches!(stage, Stage::Running);
                continue;
            }
            Woken::Nothing => continue,
        };
        if let Some(cause) = unobserved_cause(info.ssi_signo) {
            unobserved[cause] += 1;
            continue;
        }
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if sig == Signal::SIGCHLD {
            continue;
        }
        // A signal a process of the run sent to its own process group (`kill(0, SIG)`,
        // `os.killpg`) reached the command already: neither forwarded again nor counted as an
        // interrupt of nettrap.
        if info.ssi_code == libc::SI_USER && is_descendant(info.ssi_pid as i32, ender.me) {
            continue;
        }
        let interrupt = INTERRUPTS.contains(&sig);
        if interrupt {
            interrupts += 1;
        }
        let now = Instant::now();
        match stage {
            Stage::Running if interrupt && interrupts >= 2 => {
                stage = Stage::Kill(now + KILL_GIVE_UP, Why::SecondInterrupt);
            }
            Stage::Running => {
                let from_terminal = info.ssi_code == libc::SI_KERNEL;
                if !(from_terminal && (sig == Signal::SIGINT || sig == Signal::SIGQUIT)) {
                    let _ = signal::kill(main, sig);
                }
            }
            // After the command exited: an interrupt cuts the current grace period short, a
            // second one both.
            Stage::Grace(_) if interrupt && interrupts < 2 => stage = Stage::Term(now + TERM_GRACE),
            Stage::Grace(_) | Stage::Term(_) if interrupt => {
                stage = Stage::Kill(now + KILL_GIVE_UP, Why::LeftRunning)
            }
            _ => {}
        }
    }
    // Counting signals still queued: every process that could send one has ended.
    while let Ok(Some(info)) = sfd.read_signal() {
        if let Some(cause) = unobserved_cause(info.ssi_signo) {
            unobserved[cause] += 1;
        }
    }
    let mut killed: Vec<Killed> = ender.sent.into_values().collect();
    killed.sort_by_key(|k| k.pid);
    Ok(Outcome {
        status: status.unwrap_or(Status {
            code: 1,
            signal: None,
        }),
        killed,
        unkillable,
        unobserved,
    })
}
