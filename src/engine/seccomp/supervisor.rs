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
use nettrap_core::addr::{self, Address, Dest, Transport};
use nettrap_core::event::{Call, Log, NotWritten, RESULT_UNKNOWN, Source, Syscall, Unobserved};
use nettrap_core::msg;
use nettrap_core::policy::{Action, CompiledPolicy, Decision, FLAG_THREAD_NAMES};
use nettrap_core::test_id::Phase;
use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

const MSG_FASTOPEN: u64 = 0x2000_0000;
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

/// One address a trapped call hands the kernel, as the kernel copies it from the caller's
/// memory: `Ok(None)` for no address, `Err(())` when the kernel fails the call for it (a bad
/// length: EINVAL; unreadable: EFAULT).
type Given = Result<Option<Vec<u8>>, ()>;

/// What one trapped call asks for.
struct Found {
    syscall: Syscall,
    fd: i32,
    /// The call's addresses: one, or one per message of a sendmmsg, in order.
    addrs: Vec<Given>,
    /// `MSG_FASTOPEN`: on a TCP socket, a connect carrying data.
    fastopen: bool,
}

impl Found {
    fn op(&self) -> addr::Op {
        match self.syscall {
            Syscall::Connect => addr::Op::Connect,
            _ => addr::Op::Send {
                fastopen: self.fastopen,
            },
        }
    }

    /// The call's destinations on socket `sock` (`None`: not known), without repeats. The
    /// kernel stops a sendmmsg at the first message it fails, so an address it rejects ends the
    /// list.
    fn dests(&self, sock: Option<addr::Socket>) -> Vec<Dest> {
        let mut dests = Vec::new();
        for given in &self.addrs {
            let address = match given {
                Ok(bytes) => addr::decode(self.op(), sock, bytes.as_deref()),
                Err(()) => Address::Rejected,
            };
            match address {
                Address::Inet(d) if !dests.contains(&d) => dests.push(d),
                Address::Inet(_) | Address::NotInet => {}
                Address::Rejected => break,
            }
        }
        dests
    }
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

/// The `len` bytes of address at `ptr` in process `pid`, as the kernel copies them; `len` as
/// [`addr::arg_len`] or [`addr::msg_name_len`] give it (`None`: the kernel fails the call, as
/// it does when nothing is mapped there).
fn copy_addr(pid: u32, ptr: u64, len: Option<usize>) -> Result<Given, Unreadable> {
    Ok(match len {
        None => Err(()),
        Some(0) => Ok(Some(Vec::new())),
        Some(n) => mem(pid, ptr, n)?.map(Some).ok_or(()),
    })
}

/// The address of a `msghdr` image.
fn msg_addr(pid: u32, abi: &Abi, hdr: &[u8]) -> Result<Given, Unreadable> {
    let (ptr, namelen) = abi.msg_name(hdr);
    match addr::msg_name_len(ptr, namelen as u32) {
        Some(0) => Ok(Ok(None)),
        len => copy_addr(pid, ptr, len),
    }
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
            // socketcall(call, args): the arguments are an array of 32-bit words in memory, of
            // exactly as many words as the kernel reads for that call (reading more could fail
            // where the kernel's read succeeds, at the end of a mapping).
            let nargs = match a[0] {
                3 | 16 => 3, // SYS_CONNECT, SYS_SENDMSG
                20 => 4,     // SYS_SENDMMSG
                11 => 6,     // SYS_SENDTO
                _ => return Ok(None),
            };
            let Some(words) = mem(pid, a[1], nargs * 4)? else {
                return Ok(None);
            };
            let mut args = [0u64; 6];
            for (i, w) in words.chunks_exact(4).enumerate() {
                args[i] = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) as u64;
            }
            // socketcall's SYS_* numbers, offset to stay apart from system call numbers.
            (a[0] as u32 + 1000, args)
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
    let found = |syscall, addrs: Vec<Given>, fastopen| {
        Ok(Some(Found {
            syscall,
            fd,
            addrs,
            fastopen,
        }))
    };
    match op {
        // connect hands the protocol its address whatever the pointer (NULL with a length fails
        // the copy: EFAULT).
        Op::Connect => found(
            Syscall::Connect,
            vec![copy_addr(pid, a[1], addr::arg_len(a[2]))?],
            false,
        ),
        Op::Sendto => {
            let given = if a[4] == 0 {
                Ok(None)
            } else {
                copy_addr(pid, a[4], addr::arg_len(a[5]))?
            };
            found(Syscall::Sendto, vec![given], a[3] & MSG_FASTOPEN != 0)
        }
        Op::Sendmsg => {
            let Some(hdr) = mem(pid, a[1], abi.msghdr_len)? else {
                return Ok(None);
            };
            found(
                Syscall::Sendmsg,
                vec![msg_addr(pid, abi, &hdr)?],
                a[2] & MSG_FASTOPEN != 0,
            )
        }
        Op::Sendmmsg => {
            let n = (a[2] as usize).min(SENDMMSG_MAX);
            let mut addrs = Vec::new();
            // One header at a time: the kernel sends the leading messages even when the array
            // runs into unmapped memory, so those must be seen too.
            for i in 0..n {
                let at = a[1].wrapping_add((i * abi.mmsghdr_len) as u64);
                // The kernel reads the msghdr only (it writes msg_len, after it, once sent).
                let Some(h) = mem(pid, at, abi.msghdr_len)? else {
                    break;
                };
                addrs.push(msg_addr(pid, abi, &h)?);
            }
            found(Syscall::Sendmmsg, addrs, a[3] & MSG_FASTOPEN != 0)
        }
    }
}

/// Identifies one socket of one process for UDP de-duplication: the process (its pid and start
/// time, so a reused pid is another process) and the socket (its inode, so a reused descriptor
/// number is another socket; the descriptor number only when the inode cannot be read).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct UdpKey {
    tgid: u32,
    start_time: u64,
    socket: notify::SocketId,
    dest: Dest,
}

/// How many (socket, destination) pairs [`UdpSeen`] remembers: 2^18, about 20 MB at most.
const UDP_SEEN_MAX: usize = 1 << 18;

/// UDP destinations already recorded, per socket: a socket's first datagram to a destination is
/// a call, its later datagrams there are not (a new socket is a new call). Bounded without ever
/// starting over: past [`UDP_SEEN_MAX`] pairs the oldest is forgotten, so only a socket that
/// sends again to a destination after 2^18 newer pairs were seen has that datagram recorded
/// again.
#[derive(Default)]
struct UdpSeen {
    set: HashSet<UdpKey>,
    order: VecDeque<UdpKey>,
}

impl UdpSeen {
    /// Whether `key` is new (and remember it).
    fn insert(&mut self, key: UdpKey) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > UDP_SEEN_MAX
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

struct Supervisor {
    ctx: Context,
    targets: Targets,
    udp_seen: UdpSeen,
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
        // Nothing that could be a destination on any socket: no need to look further.
        let Some(found) = found.filter(|f| !f.dests(None).is_empty()) else {
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
        // The socket, borrowed while the caller waits: what it is decides which addresses are
        // destinations (a TCP send without Fast Open makes no connection; see nettrap_core::addr).
        let socket = target
            .pidfd
            .as_ref()
            .and_then(|p| notify::socket_info(p, target.tgid, found.fd));
        let sock = socket.as_ref().and_then(|s| s.kind);
        let dests = found.dests(sock);
        if dests.is_empty() {
            let _ = listener.allow(req.id);
            return;
        }
        let transport = match sock {
            Some(s) => Transport::from_sock_type(s.ty),
            None if found.fastopen => Transport::Tcp,
            None => Transport::Other,
        };
        // The calling thread's name, read while it still waits for the answer (it may exit or
        // rename itself right after), only when the run asks for it.
        let thread = if self.ctx.policy.flags & FLAG_THREAD_NAMES != 0 {
            thread_name(target.tgid, req.pid)
        } else {
            Vec::new()
        };
        let test = target.test.as_ref().map(|(id, _)| id.as_slice());
        let decisions: Vec<(Dest, Decision)> = dests
            .iter()
            .map(|d| (*d, self.ctx.policy.decide(d, test, None)))
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
        let is_datagram_send = transport == Transport::Udp && found.syscall != Syscall::Connect;
        let socket_id = socket.map_or(notify::SocketId::Fd(found.fd), |s| s.id);
        for (dest, d) in decisions {
            if is_datagram_send
                && d.action != Action::Deny
                && !self.udp_seen.insert(UdpKey {
                    tgid: target.tgid,
                    start_time: target.start_time,
                    socket: socket_id,
                    dest,
                })
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
        notify::write_to_stderr_of(target.tgid, target.pidfd.as_ref(), &line[..n]);
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

/// Runs until `stop` becomes readable or no process holds the filter any more. Returns why it
/// stopped before being told to, if it did while processes still held the filter.
pub fn run(ctx: Context, stop: OwnedFd) -> Option<String> {
    let mut sup = Supervisor {
        ctx,
        targets: Targets::default(),
        udp_seen: UdpSeen::default(),
        go_adapters: Default::default(),
    };
    sup.ctx.listener.set_sync_wakeup();
    let (lfd, sfd) = (sup.ctx.listener.0.as_raw_fd(), stop.as_raw_fd());
    // The first failure, if any: a panic while handling a call (that call is failed with
    // ENOSYS and the supervisor goes on), or an error that ends it.
    let mut error = None;
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
                Ok(req) => {
                    let handled =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sup.handle(&req)));
                    if let Err(panic) = handled {
                        // Never leave the caller waiting; the run counts this as a loss.
                        let _ = sup.ctx.listener.fail(req.id, libc::ENOSYS);
                        error.get_or_insert(format!(
                            "a panic while handling a call: {}",
                            super::panic_message(&panic)
                        ));
                    }
                }
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOENT)
                        || e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    error.get_or_insert(format!("cannot receive notifications: {e}"));
                    break;
                }
            }
        } else if fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            break;
        }
    }
    error
}
