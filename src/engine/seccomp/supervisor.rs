//! The supervisor: one thread that answers the filter's notifications.
//!
//! For each trapped call it reads the destination from the caller's memory, re-checks that the
//! notification is still pending (the caller could have been interrupted, and its memory reused),
//! finds the process and its test, asks the compiled policy (the same `decide` the shim uses),
//! answers (continue, or fail with the policy's errno), and appends the event to the run's log
//! once the answer was delivered. An answer that fails with ENOENT means the caller was
//! interrupted (Go's preemption signals do this constantly); its restarted call arrives as a new
//! notification, so nothing is recorded twice.
//!
//! One thread is enough and keeps shutdown simple: it only calls RECV after poll() reported a
//! pending notification, so it never blocks where the stop signal cannot reach it.

use super::notify::{self, Listener};
use super::target::{Target, Targets};
use nettrap_core::addr::{Dest, Transport};
use nettrap_core::event::{Call, Log, RESULT_UNKNOWN, Source, Syscall};
use nettrap_core::msg;
use nettrap_core::policy::{Action, CompiledPolicy, Decision};
use nettrap_core::test_id::Phase;
use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

const MSG_FASTOPEN: u64 = 0x2000_0000;
/// Bytes of a sockaddr worth reading (sockaddr_in6 is 28).
const SOCKADDR_MAX: usize = 28;
const MSGHDR_LEN: usize = 56;
const MMSGHDR_LEN: usize = 64;
const SENDMMSG_MAX: usize = 1024;

/// What the supervisor needs, owned by its thread.
pub struct Context {
    pub listener: Listener,
    pub policy: Box<CompiledPolicy>,
    /// Keeps the event log mapped while `log` points into it.
    pub log_mapping: Arc<crate::rundir::LogMapping>,
    /// Refuse io_uring_setup (enforce runs), or only report it.
    pub refuse_io_uring: bool,
}

/// What one trapped call asks for.
struct Found {
    syscall: Syscall,
    fd: i32,
    dests: Vec<Dest>,
    /// A TCP Fast Open send: a connect, whatever the socket type says.
    fastopen: bool,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn sockaddr_at(pid: u32, addr: u64, len: u64) -> Option<Dest> {
    let len = (len as usize).min(SOCKADDR_MAX);
    if len < 2 {
        return None;
    }
    Dest::from_sockaddr(&notify::read_mem(pid, addr, len)?)
}

/// The (name pointer, name length) of a `struct msghdr` image.
fn msg_name(hdr: &[u8]) -> (u64, u64) {
    let ptr = u64::from_ne_bytes(hdr[0..8].try_into().unwrap_or_default());
    let len = u32::from_ne_bytes(hdr[8..12].try_into().unwrap_or_default());
    (ptr, len as u64)
}

/// Destinations of a trapped call, read from the caller's memory.
fn find(req: &libc::seccomp_notif) -> Option<Found> {
    let (pid, a) = (req.pid, req.data.args);
    let nr = req.data.nr as libc::c_long;
    let fd = a[0] as i32;
    let found = |syscall, dests: Vec<Dest>, fastopen| {
        Some(Found {
            syscall,
            fd,
            dests,
            fastopen,
        })
    };
    match nr {
        libc::SYS_connect => found(
            Syscall::Connect,
            sockaddr_at(pid, a[1], a[2]).into_iter().collect(),
            false,
        ),
        libc::SYS_sendto => found(
            Syscall::Sendto,
            sockaddr_at(pid, a[4], a[5]).into_iter().collect(),
            a[3] & MSG_FASTOPEN != 0,
        ),
        libc::SYS_sendmsg => {
            let hdr = notify::read_mem(pid, a[1], MSGHDR_LEN)?;
            let (ptr, len) = msg_name(&hdr);
            found(
                Syscall::Sendmsg,
                sockaddr_at(pid, ptr, len).into_iter().collect(),
                a[2] & MSG_FASTOPEN != 0,
            )
        }
        libc::SYS_sendmmsg => {
            let n = (a[2] as usize).min(SENDMMSG_MAX);
            let hdrs = notify::read_mem(pid, a[1], n * MMSGHDR_LEN)?;
            let mut dests = Vec::new();
            for h in hdrs.chunks_exact(MMSGHDR_LEN) {
                let (ptr, len) = msg_name(h);
                if let Some(d) = sockaddr_at(pid, ptr, len).filter(|d| !dests.contains(d)) {
                    dests.push(d);
                }
            }
            found(Syscall::Sendmmsg, dests, a[3] & MSG_FASTOPEN != 0)
        }
        _ => None,
    }
}

struct Supervisor {
    ctx: Context,
    targets: Targets,
    /// UDP destinations already recorded, per process and socket: a datagram to a destination
    /// already seen is not a new call.
    udp_seen: HashSet<(u32, i32, Dest)>,
}

impl Supervisor {
    fn log(&self) -> Log {
        self.ctx.log_mapping.log()
    }

    fn handle(&mut self, req: &libc::seccomp_notif) {
        let listener = &self.ctx.listener;
        if req.data.nr as libc::c_long == libc::SYS_io_uring_setup {
            return self.io_uring(req);
        }
        let found = find(req);
        // The caller may have been interrupted while we read its memory: then the bytes may
        // belong to something else, and the notification is void anyway.
        if !listener.id_valid(req.id) {
            return;
        }
        let Some(found) = found.filter(|f| !f.dests.is_empty()) else {
            let _ = listener.allow(req.id);
            return;
        };
        let log = self.log();
        let target = self.targets.lookup(req.pid, &log, now_ns());
        let transport = if found.fastopen {
            Transport::Tcp
        } else {
            let ty = target
                .pidfd
                .as_ref()
                .and_then(|p| notify::socket_type(p, found.fd));
            ty.map_or(Transport::Other, Transport::from_sock_type)
        };
        let test = target.test.as_ref().map(|(id, _)| id.as_slice());
        let decisions: Vec<(Dest, Decision)> = found
            .dests
            .iter()
            .map(|d| (*d, self.ctx.policy.decide(d, test)))
            .collect();
        let denied = decisions.iter().find(|(_, d)| d.action == Action::Deny);
        let answered = match denied {
            Some((dest, d)) => {
                self.tell(&target, found.syscall, dest, d);
                listener.fail(req.id, d.errno)
            }
            None => listener.allow(req.id),
        };
        if answered.is_err() {
            return; // interrupted: the restarted call comes back as a new notification
        }
        let is_datagram_send =
            transport == Transport::Udp && found.syscall != Syscall::Connect && !found.fastopen;
        for (dest, d) in decisions {
            if is_datagram_send
                && d.action != Action::Deny
                && !self.udp_seen.insert((target.tgid, found.fd, dest))
            {
                continue;
            }
            self.record(&log, &target, req.pid, found.syscall, dest, transport, &d);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        log: &Log,
        target: &Target,
        tid: u32,
        syscall: Syscall,
        dest: Dest,
        transport: Transport,
        d: &Decision,
    ) {
        let call = Call {
            pid: target.tgid,
            tid,
            time_ns: now_ns(),
            dest,
            transport,
            action: d.action,
            phase: target.test.as_ref().map_or(Phase::None, |t| t.1),
            source: Source::Seccomp,
            syscall,
            category: d.category,
            rule: d.rule,
            deny_errno: if d.action == Action::Deny { d.errno } else { 0 },
            has_test: target.test.is_some(),
        };
        let test = target.test.as_ref().map_or(&[][..], |t| t.0.as_slice());
        if let Some(cell) = log.append_call(&call, test, &[]) {
            // The supervisor answers before the call runs: its outcome is not known here.
            cell.set(if d.action == Action::Deny {
                d.errno
            } else {
                RESULT_UNKNOWN
            });
        }
    }

    /// The one-line denial, written into the caller's own stderr.
    fn tell(&self, target: &Target, syscall: Syscall, dest: &Dest, d: &Decision) {
        let policy = &self.ctx.policy;
        let rule = policy
            .rules()
            .get(d.rule as usize)
            .map_or(&b"default"[..], |r| r.label());
        let mut line = [0u8; 1024];
        let test = target.test.as_ref().map(|t| t.0.as_slice());
        let n = msg::denial(
            &mut line,
            syscall.name(),
            dest,
            policy.category_name(d.category),
            test,
            target.tgid,
            rule,
        );
        notify::write_to_stderr_of(target.tgid, &line[..n]);
    }

    /// io_uring would carry network calls past the filter: refused in enforce runs (ENOSYS, so
    /// runtimes such as tokio and libuv fall back to plain system calls), reported always.
    fn io_uring(&mut self, req: &libc::seccomp_notif) {
        let listener = &self.ctx.listener;
        let answered = if self.ctx.refuse_io_uring {
            listener.fail(req.id, libc::ENOSYS)
        } else {
            listener.allow(req.id)
        };
        if answered.is_err() {
            return;
        }
        let log = self.log();
        let target = self.targets.lookup(req.pid, &log, now_ns());
        let d = Decision {
            category: nettrap_core::policy::OTHER,
            rule: nettrap_core::policy::NO_RULE,
            action: if self.ctx.refuse_io_uring {
                Action::Deny
            } else {
                Action::Record
            },
            errno: libc::ENOSYS,
        };
        let none = Dest {
            ip: [0; 16],
            port: 0,
        };
        self.record(
            &log,
            &target,
            req.pid,
            Syscall::IoUringSetup,
            none,
            Transport::Other,
            &d,
        );
    }
}

/// Runs until `stop` becomes readable or no process holds the filter any more.
pub fn run(ctx: Context, stop: OwnedFd) {
    let mut sup = Supervisor {
        ctx,
        targets: Targets::default(),
        udp_seen: HashSet::new(),
    };
    sup.ctx.listener.set_sync_wakeup();
    let (lfd, sfd) = (sup.ctx.listener.0.as_raw_fd(), stop.as_raw_fd());
    loop {
        let mut fds = [
            libc::pollfd {
                fd: lfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on two valid descriptors with a correctly sized array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            continue; // EINTR
        }
        // Stop when told (the command and its grace period are over: processes still trapped
        // then get ENOSYS once nettrap exits), or when no process holds the filter any more.
        if fds[1].revents != 0 {
            break;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            match sup.ctx.listener.recv() {
                Ok(req) => sup.handle(&req),
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOENT)
                        || e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => break,
            }
        } else if fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            break;
        }
    }
}
