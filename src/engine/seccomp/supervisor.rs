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

use super::filter;
use super::notify::{self, Listener};
use super::target::{Target, Targets};
use crate::attribution::now_ns;
use nettrap_core::addr::{Dest, Transport};
use nettrap_core::event::{Call, Log, NotWritten, RESULT_UNKNOWN, Source, Syscall, Unobserved};
use nettrap_core::msg;
use nettrap_core::policy::{Action, CompiledPolicy, Decision, FLAG_THREAD_NAMES};
use nettrap_core::test_id::Phase;
use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

const MSG_FASTOPEN: u64 = 0x2000_0000;
/// Bytes of a sockaddr worth reading (sockaddr_in6 is 28).
const SOCKADDR_MAX: usize = 28;
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

/// Layout of `struct msghdr` / `struct mmsghdr` for an ABI: the name pointer is first, its
/// length right after it.
struct Abi {
    ptr_len: usize,
    msghdr_len: usize,
    mmsghdr_len: usize,
}

const X86_64: Abi = Abi {
    ptr_len: 8,
    msghdr_len: 56,
    mmsghdr_len: 64,
};
const I386: Abi = Abi {
    ptr_len: 4,
    msghdr_len: 28,
    mmsghdr_len: 32,
};

impl Abi {
    /// The (name pointer, name length) of a `struct msghdr` image.
    fn msg_name(&self, hdr: &[u8]) -> (u64, u64) {
        let word = |at: usize, len: usize| {
            hdr[at..at + len]
                .iter()
                .rev()
                .fold(0u64, |v, &b| v << 8 | b as u64)
        };
        (word(0, self.ptr_len), word(self.ptr_len, 4))
    }
}

/// A thread's name (`/proc/<tgid>/task/<tid>/comm`, without its newline); empty if unreadable.
fn thread_name(tgid: u32, tid: u32) -> Vec<u8> {
    let mut name = std::fs::read(format!("/proc/{tgid}/task/{tid}/comm")).unwrap_or_default();
    if name.last() == Some(&b'\n') {
        name.pop();
    }
    name
}

/// The caller's memory could not be read (see [`mem`]): the call goes on unseen, and is
/// counted (`Unobserved::SupervisorUnreadable`).
#[derive(Debug)]
struct Unreadable;

/// `len` bytes at `addr` in the caller; None when nothing is mapped there.
///
/// A system call given such an address fails with EFAULT by itself, so it is not a call. Any
/// other failure to read (the caller made itself non-dumpable, runs with other credentials) is
/// [`Unreadable`]. The two can be told apart only by the errno of our own read: memory the
/// caller maps between our read and the kernel's copy (a race the caller would have to win on
/// purpose) is taken for the first.
fn mem(pid: u32, addr: u64, len: usize) -> Result<Option<Vec<u8>>, Unreadable> {
    match notify::read_mem(pid, addr, len) {
        Ok(b) => Ok(Some(b)),
        Err(notify::ReadError::Fault) => Ok(None),
        Err(notify::ReadError::Denied) => Err(Unreadable),
    }
}

fn sockaddr_at(pid: u32, addr: u64, len: u64) -> Result<Option<Dest>, Unreadable> {
    let len = (len as usize).min(SOCKADDR_MAX);
    // No address (a send without one), or one too short to name a family: not a destination.
    if len < 2 || addr == 0 {
        return Ok(None);
    }
    Ok(mem(pid, addr, len)?.and_then(|sa| Dest::from_sockaddr(&sa)))
}

/// The network operations, whatever their number in each ABI.
#[derive(Clone, Copy)]
enum Op {
    Connect,
    Sendto,
    Sendmsg,
    Sendmmsg,
}

/// Destinations of a trapped call, read from the caller's memory; None when it is not a call
/// with a destination.
fn find(req: &libc::seccomp_notif) -> Result<Option<Found>, Unreadable> {
    let pid = req.pid;
    let nr = req.data.nr as u32;
    let (abi, op, a) = if req.data.arch == filter::AUDIT_ARCH_I386 {
        let a = req.data.args.map(|v| v & 0xffff_ffff);
        let (call, args) = if nr == filter::i386::SOCKETCALL {
            // socketcall(call, args): the arguments are an array of 32-bit words in memory.
            let Some(words) = mem(pid, a[1], 24)? else {
                return Ok(None);
            };
            let mut args = [0u64; 6];
            for (i, w) in words.chunks_exact(4).enumerate() {
                args[i] = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) as u64;
            }
            (a[0] as u32 + 1000, args) // socketcall's SYS_* numbers, offset to stay apart
        } else {
            (nr, a)
        };
        let op = match call {
            filter::i386::CONNECT | 1003 => Op::Connect,
            filter::i386::SENDTO | 1011 => Op::Sendto,
            filter::i386::SENDMSG | 1016 => Op::Sendmsg,
            filter::i386::SENDMMSG | 1020 => Op::Sendmmsg,
            _ => return Ok(None),
        };
        (&I386, op, args)
    } else {
        let op = match nr as libc::c_long {
            libc::SYS_connect => Op::Connect,
            libc::SYS_sendto => Op::Sendto,
            libc::SYS_sendmsg => Op::Sendmsg,
            libc::SYS_sendmmsg => Op::Sendmmsg,
            _ => return Ok(None),
        };
        (&X86_64, op, req.data.args)
    };
    let fd = a[0] as i32;
    let found = |syscall, dests: Vec<Dest>, fastopen| {
        Ok(Some(Found {
            syscall,
            fd,
            dests,
            fastopen,
        }))
    };
    match op {
        Op::Connect => found(
            Syscall::Connect,
            sockaddr_at(pid, a[1], a[2])?.into_iter().collect(),
            false,
        ),
        Op::Sendto => found(
            Syscall::Sendto,
            sockaddr_at(pid, a[4], a[5])?.into_iter().collect(),
            a[3] & MSG_FASTOPEN != 0,
        ),
        Op::Sendmsg => {
            let Some(hdr) = mem(pid, a[1], abi.msghdr_len)? else {
                return Ok(None);
            };
            let (ptr, len) = abi.msg_name(&hdr);
            found(
                Syscall::Sendmsg,
                sockaddr_at(pid, ptr, len)?.into_iter().collect(),
                a[2] & MSG_FASTOPEN != 0,
            )
        }
        Op::Sendmmsg => {
            let n = (a[2] as usize).min(SENDMMSG_MAX);
            let mut dests = Vec::new();
            // One header at a time: the kernel sends the leading messages even when the array
            // runs into unmapped memory, so those must be seen too.
            for i in 0..n {
                let at = a[1].wrapping_add((i * abi.mmsghdr_len) as u64);
                let Some(h) = mem(pid, at, abi.mmsghdr_len)? else {
                    break;
                };
                let (ptr, len) = abi.msg_name(&h);
                if let Some(d) = sockaddr_at(pid, ptr, len)?.filter(|d| !dests.contains(d)) {
                    dests.push(d);
                }
            }
            found(Syscall::Sendmmsg, dests, a[3] & MSG_FASTOPEN != 0)
        }
    }
}

struct Supervisor {
    ctx: Context,
    targets: Targets,
    /// UDP destinations already recorded, per process and socket: a datagram to a destination
    /// already seen is not a new call.
    udp_seen: HashSet<(u32, i32, Dest)>,
    /// `go test` adapters whose test binaries' calls wait for their markers (see gosync).
    go_adapters: super::gosync::Adapters,
}

impl Supervisor {
    fn handle(&mut self, req: &libc::seccomp_notif) {
        let listener = &self.ctx.listener;
        // io_uring_setup has the same number (425) on x86_64 and i386.
        if req.data.nr as libc::c_long == libc::SYS_io_uring_setup {
            return self.io_uring(req);
        }
        let found = find(req);
        // The caller may have been interrupted while we read its memory: then the bytes may
        // belong to something else, and the notification is void anyway.
        if !listener.id_valid(req.id) {
            return;
        }
        let mapping = self.ctx.log_mapping.clone();
        let log = mapping.log();
        let found = match found {
            Ok(found) => found,
            Err(Unreadable) => {
                // The destination cannot be known: the call goes on unseen, and is counted.
                log.count_unobserved(Unobserved::SupervisorUnreadable);
                let _ = listener.allow(req.id);
                return;
            }
        };
        let Some(found) = found.filter(|f| !f.dests.is_empty()) else {
            let _ = listener.allow(req.id);
            return;
        };
        let target = self.targets.lookup(req.pid, &log, now_ns());
        // The call's time, taken while the caller still waits for the answer: once answered,
        // its test may end (and say so in the timeline) before a later clock read here. For a
        // Go test binary, only once the `go test` adapter stamped every marker written before.
        if let Some(adapter) = &target.go_sync {
            self.go_adapters.settle(adapter, target.ppid);
        }
        let time_ns = now_ns();
        let transport = if found.fastopen {
            Transport::Tcp
        } else {
            let ty = target
                .pidfd
                .as_ref()
                .and_then(|p| notify::socket_type(p, found.fd));
            ty.map_or(Transport::Other, Transport::from_sock_type)
        };
        // A send with an address on a stream socket, without Fast Open, makes no connection:
        // the kernel ignores the address (or fails with EISCONN / ENOTCONN). Not a call.
        if found.syscall != Syscall::Connect && !found.fastopen && transport == Transport::Tcp {
            let _ = listener.allow(req.id);
            return;
        }
        // The calling thread's name, read while it still waits for the answer (it may exit or
        // rename itself right after), only when the run asks for it.
        let thread = if self.ctx.policy.flags & FLAG_THREAD_NAMES != 0 {
            thread_name(target.tgid, req.pid)
        } else {
            Vec::new()
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
                && !self.remember_udp(target.tgid, found.fd, dest)
            {
                continue;
            }
            self.record(
                &log,
                &target,
                req.pid,
                time_ns,
                found.syscall,
                dest,
                transport,
                &d,
                &thread,
            );
        }
    }

    /// Whether a datagram destination is new for this process and socket. Bounded: past the
    /// limit the set starts over (a destination may then be recorded again).
    fn remember_udp(&mut self, tgid: u32, fd: i32, dest: Dest) -> bool {
        if self.udp_seen.len() >= 65_536 {
            self.udp_seen.clear();
        }
        self.udp_seen.insert((tgid, fd, dest))
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        log: &Log,
        target: &Target,
        tid: u32,
        time_ns: u64,
        syscall: Syscall,
        dest: Dest,
        transport: Transport,
        d: &Decision,
        thread: &[u8],
    ) {
        let call = Call {
            pid: target.tgid,
            tid,
            time_ns,
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
        match log.append_call(&call, test, &[], thread) {
            // The supervisor answers before the call runs: its outcome is not known here.
            Ok(cell) => cell.set(if d.action == Action::Deny {
                d.errno
            } else {
                RESULT_UNKNOWN
            }),
            Err(NotWritten::Full) => {} // counted as dropped
            Err(NotWritten::Unmapped) => log.count_dropped(),
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
        // Who the caller is, read while it still waits for the answer (it may exit right after).
        let time_ns = now_ns();
        let mapping = self.ctx.log_mapping.clone();
        let log = mapping.log();
        let target = self.targets.lookup(req.pid, &log, time_ns);
        let listener = &self.ctx.listener;
        let answered = if self.ctx.refuse_io_uring {
            listener.fail(req.id, libc::ENOSYS)
        } else {
            listener.allow(req.id)
        };
        if answered.is_err() {
            return;
        }
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
            time_ns,
            Syscall::IoUringSetup,
            none,
            Transport::Other,
            &d,
            &[],
        );
    }
}

/// Runs until `stop` becomes readable or no process holds the filter any more.
pub fn run(ctx: Context, stop: OwnedFd) {
    let mut sup = Supervisor {
        ctx,
        targets: Targets::default(),
        udp_seen: HashSet::new(),
        go_adapters: Default::default(),
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
