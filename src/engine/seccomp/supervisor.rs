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
//! One thread is enough. It waits in RECV itself (one system call per notification, not a
//! poll() and then a RECV): [`WAKE`], sent to that thread by [`super::Running::stop`] until it
//! ends, interrupts the wait. It polls instead while connects to resolvers are held back (they
//! are recorded when their time is up), and when RECV finds nothing (ENOENT: the caller was
//! interrupted, or no process holds the filter any more, which only poll() tells).
//!
//! ## DNS
//!
//! A datagram (or a TCP Fast Open send) to port 53 whose payload is a DNS query is a lookup:
//! the supervisor reads the first question's name ([`super::dns`]) and records a
//! `Syscall::Lookup` call (its `host` is the name, its destination the resolver) in place of
//! the send. That covers `sendto` and `sendmsg`/`sendmmsg` with an address, and
//! `sendmsg`/`sendmmsg` without one on a socket connected to port 53 (glibc's resolver sends
//! A and AAAA with one `sendmmsg` on a connected socket; the peer is read with `getpeername`
//! on the borrowed socket, only when the payload already reads as a query). A `connect` to port
//! 53 is held back until a query names it, and recorded unnamed if none is trapped (`write`
//! and `send` are not): see [`super::lookups`], which also makes one lookup one call.
//!
//! `--deny-dns` ([`FLAG_DENY_DNS`], decided by [`lookup_decision`]): a trapped query fails at
//! once (the policy's errno), and so does a `connect` to port 53 by a process without the shim
//! (Go's resolver, static programs: their queries, sent with `write`, are not trapped). In a
//! process with the shim the connect goes on: the shim decided the lookup by name at
//! `getaddrinfo` (a denied name never gets that far), and the query, if trapped, is decided
//! here by its name.
//!
//! ## listen
//!
//! `listen` is trapped for processes without the shim (the shim marks its own), so the report
//! knows the run's own servers (`in-suite`). The supervisor makes the call itself on the
//! borrowed socket (the same socket), answers with its result, and records a `Syscall::Listen`
//! record with the address the socket listens on.

use super::dns::{self, Question};
use super::filter;
use super::lookups::{self, Lookups, Proc, SockKey};
use super::notify::{self, Listener};
use super::target::{CANARY_LEN, Caller, Target, Targets};
use crate::attribution::now_ns;
use nettrap_core::addr::{self, Address, Dest, Transport};
use nettrap_core::event::{Call, Log, NotWritten, RESULT_UNKNOWN, Source, Syscall, Unobserved};
use nettrap_core::msg;
use nettrap_core::policy::{Action, CompiledPolicy, Decision, FLAG_THREAD_NAMES, NO_RULE};
use nettrap_core::test_id::Phase;
use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

const MSG_FASTOPEN: u64 = 0x2000_0000;
const SENDMMSG_MAX: usize = 1024;
/// Messages of a sendmmsg whose payloads are read for DNS questions (resolvers send two).
const DNS_MSGS_MAX: usize = 8;
/// iovecs of a message gathered for its DNS question.
const DNS_IOVS_MAX: usize = 4;
/// The port DNS resolvers listen on.
const DNS_PORT: u16 = 53;

/// What to do with a DNS lookup a process makes, as the supervisor sees it: `name` is the
/// question when the supervisor could read it from the query (`None`: a `connect` to port 53,
/// or a datagram there that is not a query it can read); `test` the caller's test. The one
/// decision the shim makes too (`CompiledPolicy::lookup_decision`: rules by host name,
/// `--deny-dns`); a denied query or connect fails with the policy's errno (the shim's lookups
/// fail with an `EAI_*` code instead).
pub fn lookup_decision(
    policy: &CompiledPolicy,
    resolver: &Dest,
    name: Option<&[u8]>,
    test: Option<&[u8]>,
) -> Decision {
    // An unknown name matches no name rule; `--deny-dns` still denies it.
    let mut d = policy.lookup_decision(Some(resolver), name.unwrap_or(b""), test);
    if d.action == Action::Deny {
        d.errno = policy.default_errno;
    }
    d
}

/// A call to a resolver that is a lookup: the port's decision (`decide`: rules on `dns`, port 53
/// or the resolver's address) and the lookup's ([`lookup_decision`]). A denial by either wins
/// (the port's first); else the lookup's if a rule made it; else the port's. The category is
/// always the destination's.
fn decide_dns(
    policy: &CompiledPolicy,
    dest: &Dest,
    name: Option<&[u8]>,
    test: Option<&[u8]>,
) -> Decision {
    let port = policy.decide(dest, test, None);
    if port.action == Action::Deny {
        return port;
    }
    let lookup = lookup_decision(policy, dest, name, test);
    if lookup.action == Action::Deny || lookup.rule != NO_RULE {
        Decision {
            category: port.category,
            ..lookup
        }
    } else {
        port
    }
}

/// How a decision's rule is named in the denial line.
fn rule_label(policy: &CompiledPolicy, rule: u16) -> &[u8] {
    policy.rule_label(rule).unwrap_or(b"default")
}

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

/// The DNS question a message's payload carries, read as a datagram and as a TCP stream (the
/// socket's type, known later, says which applies).
#[derive(Default)]
struct Payload {
    udp: Option<Question>,
    tcp: Option<Question>,
}

impl Payload {
    fn read(bytes: &[u8]) -> Payload {
        Payload {
            udp: dns::parse(bytes),
            tcp: dns::parse_tcp(bytes),
        }
    }

    fn any(&self) -> bool {
        self.udp.is_some() || self.tcp.is_some()
    }
}

/// What one trapped call asks for.
struct Found {
    syscall: Syscall,
    fd: i32,
    /// The call's addresses: one, or one per message of a sendmmsg, in order.
    addrs: Vec<Given>,
    /// `MSG_FASTOPEN`: on a TCP socket, a connect carrying data.
    fastopen: bool,
    /// Per message, as `addrs` (for the first [`DNS_MSGS_MAX`]): the DNS question in its
    /// payload, read only for messages to port 53 or without an address.
    payloads: Vec<Payload>,
    /// `listen`'s backlog.
    backlog: i32,
    /// The caller's image's random bytes, read along with a connect's address where the cache
    /// said where they are (see `target`): `None` when not read, `Some(None)` when unreadable.
    seen: Option<Option<[u8; CANARY_LEN]>>,
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
        for d in self.inet(sock) {
            if !dests.contains(&d) {
                dests.push(d);
            }
        }
        dests
    }

    /// The call's inet destinations on socket `sock`, in order, repeats included (see
    /// [`Self::dests`]), without allocating.
    fn inet(&self, sock: Option<addr::Socket>) -> impl Iterator<Item = Dest> + '_ {
        self.addrs
            .iter()
            .map(move |given| match given {
                Ok(bytes) => addr::decode(self.op(), sock, bytes.as_deref()),
                Err(()) => Address::Rejected,
            })
            .take_while(|a| !matches!(a, Address::Rejected))
            .filter_map(|a| match a {
                Address::Inet(d) => Some(d),
                _ => None,
            })
    }

    /// Does a message without an address carry what reads as a DNS query (so the socket's
    /// connected peer is worth reading)?
    fn unaddressed_query(&self) -> bool {
        self.addrs
            .iter()
            .zip(&self.payloads)
            .any(|(a, p)| matches!(a, Ok(None)) && p.any())
    }

    /// The DNS queries the call sends to port 53, each name once per resolver: on socket `sock`
    /// (connected to `peer`, for messages without an address), of `transport`.
    fn queries(
        &self,
        sock: Option<addr::Socket>,
        peer: Option<Dest>,
        transport: Transport,
    ) -> Vec<(Dest, Question)> {
        let mut out: Vec<(Dest, Question)> = Vec::new();
        for (given, payload) in self.addrs.iter().zip(&self.payloads) {
            let dest = match given {
                Ok(bytes) => match addr::decode(self.op(), sock, bytes.as_deref()) {
                    Address::Inet(d) => Some(d),
                    // No address (or one the socket ignores): the connected peer.
                    Address::NotInet => peer,
                    Address::Rejected => break,
                },
                Err(()) => break,
            };
            let Some(dest) = dest.filter(|d| d.port == DNS_PORT) else {
                continue;
            };
            let q = match transport {
                Transport::Tcp => &payload.tcp,
                _ => &payload.udp,
            };
            if let Some(q) = q
                && !out.iter().any(|(d, x)| *d == dest && x.name == q.name)
            {
                out.push((dest, q.clone()));
            }
        }
        out
    }
}

/// Layout of `struct msghdr` / `struct mmsghdr` / `struct iovec` for an ABI: the name pointer
/// is first, its length right after it; then the iovec array and its length.
struct Abi {
    ptr_len: usize,
    msghdr_len: usize,
    mmsghdr_len: usize,
    /// Offsets of `msg_iov` and `msg_iovlen`.
    iov_at: usize,
    iovlen_at: usize,
}

const X86_64: Abi = Abi {
    ptr_len: 8,
    msghdr_len: 56,
    mmsghdr_len: 64,
    iov_at: 16,
    iovlen_at: 24,
};
const I386: Abi = Abi {
    ptr_len: 4,
    msghdr_len: 28,
    mmsghdr_len: 32,
    iov_at: 8,
    iovlen_at: 12,
};

/// A little-endian word of `len` bytes at `at`.
fn word(b: &[u8], at: usize, len: usize) -> u64 {
    b[at..at + len]
        .iter()
        .rev()
        .fold(0u64, |v, &b| v << 8 | b as u64)
}

impl Abi {
    /// The (name pointer, name length) of a `struct msghdr` image.
    fn msg_name(&self, hdr: &[u8]) -> (u64, u64) {
        (word(hdr, 0, self.ptr_len), word(hdr, self.ptr_len, 4))
    }

    /// The (iovec array pointer, count) of a `struct msghdr` image.
    fn msg_iov(&self, hdr: &[u8]) -> (u64, u64) {
        (
            word(hdr, self.iov_at, self.ptr_len),
            word(hdr, self.iovlen_at, self.ptr_len),
        )
    }
}

/// Up to [`dns::READ_MAX`] bytes of a message's payload, gathered from its first iovecs (what
/// cannot be read is left out: the question is then not named, nothing else changes).
fn gather(pid: u32, abi: &Abi, hdr: &[u8]) -> Vec<u8> {
    let (iov, n) = abi.msg_iov(hdr);
    let n = (n as usize).min(DNS_IOVS_MAX);
    let iovec_len = 2 * abi.ptr_len;
    let Ok(vecs) = notify::read_mem(pid, iov, n * iovec_len) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for v in vecs.chunks_exact(iovec_len) {
        let (base, len) = (word(v, 0, abi.ptr_len), word(v, abi.ptr_len, abi.ptr_len));
        let want = (len as usize).min(dns::READ_MAX - out.len());
        if want == 0 {
            continue;
        }
        match notify::read_mem(pid, base, want) {
            Ok(b) => out.extend(b),
            Err(_) => break,
        }
        if out.len() >= dns::READ_MAX {
            break;
        }
    }
    out
}

/// Could a message with this address (the raw bytes the caller gave) go to a resolver? No
/// address (a connected socket's peer), or one whose port (at the same place in every inet
/// family's sockaddr) is 53.
fn maybe_resolver(given: &Given) -> bool {
    match given {
        Ok(None) => true,
        Ok(Some(sa)) => sa.len() >= 4 && u16::from_be_bytes([sa[2], sa[3]]) == DNS_PORT,
        Err(()) => false,
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

/// [`copy_addr`], reading the caller's image's random bytes at `canary_at` (if given) in the
/// same system call.
#[allow(clippy::type_complexity)]
fn copy_addr_with(
    pid: u32,
    ptr: u64,
    len: Option<usize>,
    canary_at: Option<u64>,
) -> Result<(Given, Option<Option<[u8; CANARY_LEN]>>), Unreadable> {
    let (Some(n), Some(at)) = (len.filter(|&n| n > 0), canary_at) else {
        return Ok((copy_addr(pid, ptr, len)?, None));
    };
    let (seen, read) = notify::read_mem_after::<CANARY_LEN>(pid, at, ptr, n);
    let given = match read {
        Ok(b) => Ok(Some(b)),
        Err(notify::ReadError::Fault) => Err(()),
        Err(notify::ReadError::Denied) => return Err(Unreadable),
    };
    Ok((given, Some(seen)))
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
    Listen,
}

/// Destinations of a trapped call, read from the caller's memory; None when it is not a call
/// with a destination.
/// `canary_at`: where the cache expects the caller's image's random bytes (read along with a
/// connect's address).
fn find(req: &libc::seccomp_notif, canary_at: Option<u64>) -> Result<Option<Found>, Unreadable> {
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
            filter::i386::LISTEN | 1004 => Op::Listen,
            _ => return Ok(None),
        };
        (&I386, op, args)
    } else {
        let op = match nr as libc::c_long {
            libc::SYS_connect => Op::Connect,
            libc::SYS_sendto => Op::Sendto,
            libc::SYS_sendmsg => Op::Sendmsg,
            libc::SYS_sendmmsg => Op::Sendmmsg,
            libc::SYS_listen => Op::Listen,
            _ => return Ok(None),
        };
        (&X86_64, op, req.data.args)
    };
    let fd = a[0] as i32;
    let found = |syscall, addrs: Vec<Given>, fastopen, payloads| {
        Ok(Some(Found {
            syscall,
            fd,
            addrs,
            fastopen,
            payloads,
            backlog: 0,
            seen: None,
        }))
    };
    match op {
        Op::Listen => Ok(Some(Found {
            syscall: Syscall::Listen,
            fd,
            addrs: Vec::new(),
            fastopen: false,
            payloads: Vec::new(),
            backlog: a[1] as i32,
            seen: None,
        })),
        // connect hands the protocol its address whatever the pointer (NULL with a length fails
        // the copy: EFAULT).
        Op::Connect => {
            let (given, seen) = copy_addr_with(pid, a[1], addr::arg_len(a[2]), canary_at)?;
            let mut f = found(Syscall::Connect, vec![given], false, Vec::new())?;
            if let Some(f) = &mut f {
                f.seen = seen;
            }
            Ok(f)
        }
        Op::Sendto => {
            let given = if a[4] == 0 {
                Ok(None)
            } else {
                copy_addr(pid, a[4], addr::arg_len(a[5]))?
            };
            // The filter traps only sendto with an address: read the payload when it is 53's.
            let payload = if a[4] != 0 && maybe_resolver(&given) {
                let want = (a[2] as usize).min(dns::READ_MAX);
                notify::read_mem(pid, a[1], want)
                    .map_or_else(|_| Payload::default(), |b| Payload::read(&b))
            } else {
                Payload::default()
            };
            found(
                Syscall::Sendto,
                vec![given],
                a[3] & MSG_FASTOPEN != 0,
                vec![payload],
            )
        }
        Op::Sendmsg => {
            let Some(hdr) = mem(pid, a[1], abi.msghdr_len)? else {
                return Ok(None);
            };
            let given = msg_addr(pid, abi, &hdr)?;
            let payload = if maybe_resolver(&given) {
                Payload::read(&gather(pid, abi, &hdr))
            } else {
                Payload::default()
            };
            found(
                Syscall::Sendmsg,
                vec![given],
                a[2] & MSG_FASTOPEN != 0,
                vec![payload],
            )
        }
        Op::Sendmmsg => {
            let n = (a[2] as usize).min(SENDMMSG_MAX);
            let mut addrs = Vec::new();
            let mut payloads = Vec::new();
            // One header at a time: the kernel sends the leading messages even when the array
            // runs into unmapped memory, so those must be seen too.
            for i in 0..n {
                let at = a[1].wrapping_add((i * abi.mmsghdr_len) as u64);
                // The kernel reads the msghdr only (it writes msg_len, after it, once sent).
                let Some(h) = mem(pid, at, abi.msghdr_len)? else {
                    break;
                };
                let given = msg_addr(pid, abi, &h)?;
                if i < DNS_MSGS_MAX {
                    payloads.push(if maybe_resolver(&given) {
                        Payload::read(&gather(pid, abi, &h))
                    } else {
                        Payload::default()
                    });
                }
                addrs.push(given);
            }
            found(Syscall::Sendmmsg, addrs, a[3] & MSG_FASTOPEN != 0, payloads)
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

/// One record the supervisor writes.
struct Rec<'a> {
    target: &'a Target,
    tid: u32,
    time_ns: u64,
    syscall: Syscall,
    dest: Dest,
    transport: Transport,
    d: Decision,
    thread: &'a [u8],
    /// The name, for a lookup.
    host: &'a [u8],
}

/// A `connect` to a resolver held back until a query names it (see [`lookups`]).
struct Held {
    target: Arc<Target>,
    tid: u32,
    time_ns: u64,
    dest: Dest,
    transport: Transport,
    d: Decision,
    thread: Vec<u8>,
}

struct Supervisor {
    ctx: Context,
    targets: Targets,
    udp_seen: UdpSeen,
    /// DNS lookups in flight: one lookup, one call.
    lookups: Lookups<Held>,
    /// `go test` adapters whose test binaries' calls wait for their markers (see gosync).
    go_adapters: super::gosync::Adapters,
    /// Keeps this thread beside a caller that traps call after call (see `affinity`).
    follow: Option<super::affinity::Follow>,
}

impl Supervisor {
    /// Handles one notification; a panic fails the call (ENOSYS) and is kept in `error`.
    fn answer(&mut self, req: &libc::seccomp_notif, error: &mut Option<String>) {
        if let Some(follow) = &mut self.follow {
            follow.notified(req.pid);
        }
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(req)));
        if let Err(panic) = handled {
            // Never leave the caller waiting; the run counts this as a loss.
            let _ = self.ctx.listener.fail(req.id, libc::ENOSYS);
            error.get_or_insert(format!(
                "a panic while handling a call: {}",
                super::panic_message(&panic)
            ));
        }
    }

    /// The caller, from the cache when it still knows it (see `target`).
    fn caller(
        &mut self,
        req: &libc::seccomp_notif,
        seen: Option<Option<[u8; CANARY_LEN]>>,
        log: &Log,
    ) -> Caller {
        let listener = &self.ctx.listener;
        self.targets
            .lookup(req.pid, seen, log, now_ns(), &|| listener.id_valid(req.id))
    }

    /// The caller and its descriptor `fd`, if a socket (see [`notify::socket_info`]). A
    /// borrow through a cached thread's pidfd that finds the thread gone means the thread id
    /// now names another task: the entry is read afresh.
    fn caller_socket(
        &mut self,
        req: &libc::seccomp_notif,
        seen: Option<Option<[u8; CANARY_LEN]>>,
        fd: i32,
        want: notify::Want<'_>,
        log: &Log,
    ) -> (Arc<Target>, Option<notify::SocketInfo>) {
        let mut caller = self.caller(req, seen, log);
        loop {
            let info = caller
                .pidfd()
                .map(|p| notify::socket_info(p, caller.target.tgid, fd, want));
            match info {
                Some(Err(())) if caller.cached => {
                    self.targets.forget(req.pid);
                    caller = self.caller(req, None, log);
                }
                info => return (caller.target, info.and_then(Result::ok).flatten()),
            }
        }
    }

    /// The caller, checked to be the same task as the cached entry's (for calls that borrow
    /// nothing from it).
    fn caller_checked(&mut self, req: &libc::seccomp_notif, log: &Log) -> Caller {
        let caller = self.caller(req, None, log);
        let gone = caller.cached && caller.thread.as_ref().is_some_and(|t| !notify::alive(t));
        if !gone {
            return caller;
        }
        self.targets.forget(req.pid);
        self.caller(req, None, log)
    }

    fn handle(&mut self, req: &libc::seccomp_notif) {
        // io_uring_setup has the same number (425) on x86_64 and i386.
        if req.data.nr as libc::c_long == libc::SYS_io_uring_setup {
            return self.io_uring(req);
        }
        let found = find(req, self.targets.canary_at(req.pid));
        // The caller may have been interrupted while we read its memory: then the bytes may
        // belong to something else, and the notification is void. No need to ask before
        // answering: an answer to a void notification fails (ENOENT) and nothing is recorded.
        // Only what is done before the answer (counting a loss, a denial line, a process
        // record) asks first.
        let mapping = self.ctx.log_mapping.clone();
        let log = mapping.log();
        let found = match found {
            Ok(found) => found,
            Err(Unreadable) => {
                if !self.ctx.listener.id_valid(req.id) {
                    return;
                }
                // The destination cannot be known: the call goes on unseen, and is counted.
                log.count_unobserved(Unobserved::SupervisorUnreadable);
                let _ = self.ctx.listener.allow(req.id);
                return;
            }
        };
        if let Some(f) = &found
            && f.syscall == Syscall::Listen
        {
            return self.listen(req, f.fd, f.backlog, &log);
        }
        // Nothing that could be a destination on any socket, nor a DNS query on a connected
        // socket: no need to look further.
        let Some(found) = found.filter(|f| f.inet(None).next().is_some() || f.unaddressed_query())
        else {
            let _ = self.ctx.listener.allow(req.id);
            return;
        };
        // The socket, borrowed while the caller waits: what it is decides which addresses are
        // destinations (a TCP send without Fast Open makes no connection; see nettrap_core::addr).
        // Only what the answer depends on is asked (each a system call): for a connect, the
        // protocol only where the address rules differ by it, and the socket's identity only
        // for a resolver's port (see `lookups`); the peer only when a message without an address
        // reads as a DNS query.
        let connect = found.syscall == Syscall::Connect;
        let v4_addr = found
            .addrs
            .iter()
            .any(|g| matches!(g, Ok(Some(sa)) if sa.len() >= 2 && u16::from_ne_bytes([sa[0], sa[1]]) == addr::AF_INET));
        let protocol = |domain: i32, ty: i32| {
            !connect || ty != libc::SOCK_STREAM || (domain == libc::AF_INET6 && v4_addr)
        };
        let want = notify::Want {
            protocol: &protocol,
            inode: !connect
                || found
                    .addrs
                    .iter()
                    .any(|g| matches!(g, Ok(Some(_))) && maybe_resolver(g)),
            peer: found.payloads.iter().any(Payload::any),
        };
        let (target, socket) = self.caller_socket(req, found.seen, found.fd, want, &log);
        // The call's time, taken while the caller still waits for the answer: once answered,
        // its test may end (and say so in the timeline) before a later clock read here. For a
        // Go test binary, only once the `go test` adapter stamped every marker written before.
        if let Some(adapter) = &target.go_sync {
            self.go_adapters.settle(adapter, target.ppid);
        }
        let time_ns = now_ns();
        let sock = socket.as_ref().and_then(|s| s.kind);
        let transport = match sock {
            Some(s) => Transport::from_sock_type(s.ty),
            None if found.fastopen => Transport::Tcp,
            None => Transport::Other,
        };
        // glibc's getaddrinfo sorting its results in a process with the shim (a UDP connect to
        // each result, nothing sent; the shim marks the thread): not a call.
        if found.syscall == Syscall::Connect
            && transport == Transport::Udp
            && log.in_resolver(req.pid)
        {
            let _ = self.ctx.listener.allow(req.id);
            return;
        }
        let queries = found.queries(sock, socket.as_ref().and_then(|s| s.peer), transport);
        // A destination a query goes to is a lookup, not a send.
        let mut dests = found.dests(sock);
        dests.retain(|d| !queries.iter().any(|(q, _)| q == d));
        if dests.is_empty() && queries.is_empty() {
            let _ = self.ctx.listener.allow(req.id);
            return;
        }
        // The calling thread's name, read while it still waits for the answer (it may exit or
        // rename itself right after), only when the run asks for it.
        let thread = if self.ctx.policy.flags & FLAG_THREAD_NAMES != 0 {
            thread_name(target.tgid, req.pid)
        } else {
            Vec::new()
        };
        let policy = &self.ctx.policy;
        let test = target.test.as_ref().map(|(id, _)| id.as_slice());
        let dns_transport = matches!(transport, Transport::Udp | Transport::Tcp);
        let decisions: Vec<(Dest, Decision)> = dests
            .iter()
            .map(|d| {
                let port = policy.decide(d, test, None);
                if d.port != DNS_PORT || !dns_transport {
                    return (*d, port);
                }
                let dns = decide_dns(policy, d, None, test);
                // A connect to a resolver denied for the lookup, in a process with the shim: the
                // shim decided the lookup at the resolver's API (see the module docs); the
                // query, if trapped, is decided by its name.
                if dns.action == Action::Deny
                    && port.action != Action::Deny
                    && found.syscall == Syscall::Connect
                    && target.has_shim()
                {
                    return (*d, port);
                }
                (*d, dns)
            })
            .collect();
        let lookups: Vec<(Dest, Question, Decision)> = queries
            .into_iter()
            .map(|(dest, q)| {
                let d = decide_dns(policy, &dest, Some(q.name.as_bytes()), test);
                (dest, q, d)
            })
            .collect();
        let proc = Proc {
            tgid: target.tgid,
            start_time: target.start_time,
        };
        // A denied connect to a resolver of a lookup already denied (Go's second socket):
        // failed, but neither told nor recorded again.
        let resolver_connect =
            |d: &Dest| found.syscall == Syscall::Connect && d.port == DNS_PORT && dns_transport;
        let repeat = decisions.iter().any(|(dest, d)| {
            d.action == Action::Deny
                && resolver_connect(dest)
                && !self.lookups.denied_connect(proc, *dest, time_ns)
        });
        let listener = &self.ctx.listener;
        let answered = if let Some((dest, d)) =
            decisions.iter().find(|(_, d)| d.action == Action::Deny)
        {
            if !repeat && listener.id_valid(req.id) {
                self.tell(&target, found.syscall, dest, d);
            }
            listener.fail(req.id, d.errno)
        } else if let Some((_, q, d)) = lookups.iter().find(|(_, _, d)| d.action == Action::Deny) {
            if listener.id_valid(req.id) {
                self.tell_lookup(&target, &q.name, d);
            }
            listener.fail(req.id, d.errno)
        } else {
            listener.allow(req.id)
        };
        if answered.is_err() {
            return; // interrupted: the restarted call comes back as a new notification
        }
        let is_datagram_send = transport == Transport::Udp && found.syscall != Syscall::Connect;
        let socket_id = socket.map_or(notify::SocketId::Fd(found.fd), |s| s.id);
        let sock_key = SockKey {
            proc,
            socket: socket_id,
        };
        let rec = |syscall, dest, d, host| Rec {
            target: &target,
            tid: req.pid,
            time_ns,
            syscall,
            dest,
            transport,
            d,
            thread: &thread,
            host,
        };
        for (dest, q, d) in &lookups {
            let (new, evicted) = self.lookups.query(sock_key, *dest, &q.name, time_ns);
            self.flush(&log, evicted);
            if new {
                self.record(&log, &rec(Syscall::Lookup, *dest, *d, q.name.as_bytes()));
            }
        }
        for (dest, d) in decisions {
            if repeat {
                continue;
            }
            // A connect to a resolver: held until a query names the lookup (or time is up).
            if resolver_connect(&dest) && d.action != Action::Deny {
                let held = Held {
                    target: target.clone(),
                    tid: req.pid,
                    time_ns,
                    dest,
                    transport,
                    d,
                    thread: thread.clone(),
                };
                let evicted = self.lookups.connect(sock_key, dest, time_ns, held);
                self.flush(&log, evicted);
                continue;
            }
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
            self.record(&log, &rec(found.syscall, dest, d, &[]));
        }
    }

    /// Records held connects to resolvers that no query named: unnamed `connect` calls.
    fn flush(&self, log: &Log, held: Vec<Held>) {
        for h in held {
            self.record(
                log,
                &Rec {
                    target: &h.target,
                    tid: h.tid,
                    time_ns: h.time_ns,
                    syscall: Syscall::Connect,
                    dest: h.dest,
                    transport: h.transport,
                    d: h.d,
                    thread: &h.thread,
                    host: &[],
                },
            );
        }
    }

    /// Held connects whose time is up are recorded (see [`lookups`]).
    fn sweep(&mut self, all: bool) {
        let held = if all {
            self.lookups.drain()
        } else {
            self.lookups.sweep(now_ns())
        };
        if !held.is_empty() {
            let mapping = self.ctx.log_mapping.clone();
            self.flush(&mapping.log(), held);
        }
    }

    fn record(&self, log: &Log, r: &Rec) {
        let d = &r.d;
        let call = Call {
            pid: r.target.tgid,
            tid: r.tid,
            time_ns: r.time_ns,
            dest: r.dest,
            transport: r.transport,
            action: d.action,
            phase: r.target.test.as_ref().map_or(Phase::None, |t| t.1),
            source: Source::Seccomp,
            syscall: r.syscall,
            category: d.category,
            rule: d.rule,
            deny_errno: if d.action == Action::Deny { d.errno } else { 0 },
            has_test: r.target.test.is_some(),
        };
        let test = r.target.test.as_ref().map_or(&[][..], |t| t.0.as_slice());
        match log.append_call(&call, test, r.host, r.thread) {
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
        let mut line = [0u8; 1024];
        let test = target.test.as_ref().map(|t| t.0.as_slice());
        let n = msg::denial(
            &mut line,
            syscall.name(),
            dest,
            policy.category_name(d.category),
            test,
            target.tgid,
            rule_label(policy, d.rule),
        );
        notify::write_to_stderr_of(target.tgid, target.pidfd.as_ref(), &line[..n]);
    }

    /// The denial line of a lookup: `nettrap: denied lookup of NAME (dns) in TEST (rule: …)`.
    fn tell_lookup(&self, target: &Target, name: &str, d: &Decision) {
        let policy = &self.ctx.policy;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let who = match &target.test {
            Some((t, _)) => format!("in {}", text(t)),
            None => format!("outside any test (pid {})", target.tgid),
        };
        let line = format!(
            "nettrap: denied lookup of {name} ({}) {who} (rule: {})\n",
            text(policy.category_name(d.category)),
            text(rule_label(policy, d.rule)),
        );
        notify::write_to_stderr_of(target.tgid, target.pidfd.as_ref(), line.as_bytes());
    }

    /// `listen` in a process without the shim: made here on the borrowed socket (the same
    /// socket), answered with its result, recorded with the address it listens on.
    fn listen(&mut self, req: &libc::seccomp_notif, fd: i32, backlog: i32, log: &Log) {
        let time_ns = now_ns();
        let caller = self.caller_checked(req, log);
        let target = caller.target.clone();
        let listener = &self.ctx.listener;
        let Some(sock) = caller.pidfd().and_then(|p| notify::pidfd_getfd(p, fd).ok()) else {
            // Not ours to borrow (or no such descriptor): the kernel answers, unrecorded.
            let _ = listener.allow(req.id);
            return;
        };
        // SAFETY: listen on our copy of the caller's descriptor: the same open socket.
        let r = unsafe { libc::listen(sock.as_raw_fd(), backlog) };
        let answered = if r == 0 {
            listener.succeed(req.id, 0)
        } else {
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL);
            listener.fail(req.id, e)
        };
        // Interrupted: listen again on a listening socket changes nothing, and the restarted
        // call is recorded.
        if r != 0 || answered.is_err() {
            return;
        }
        let Some(dest) = notify::sock_addr(sock.as_raw_fd(), false) else {
            return; // not an inet socket
        };
        let transport =
            notify::sock_type(sock.as_raw_fd()).map_or(Transport::Other, Transport::from_sock_type);
        let d = Decision {
            category: self.ctx.policy.classify(&dest, None),
            rule: NO_RULE,
            action: Action::Record,
            errno: 0,
        };
        self.record(
            log,
            &Rec {
                target: &target,
                tid: req.pid,
                time_ns,
                syscall: Syscall::Listen,
                dest,
                transport,
                d,
                thread: &[],
                host: &[],
            },
        );
    }

    /// io_uring would carry network calls past the filter: refused in enforce runs (ENOSYS, so
    /// runtimes such as tokio and libuv fall back to plain system calls), reported always.
    fn io_uring(&mut self, req: &libc::seccomp_notif) {
        // Who the caller is, read while it still waits for the answer (it may exit right after).
        let time_ns = now_ns();
        let mapping = self.ctx.log_mapping.clone();
        let log = mapping.log();
        let target = self.caller_checked(req, &log).target;
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
            rule: NO_RULE,
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
            &Rec {
                target: &target,
                tid: req.pid,
                time_ns,
                syscall: Syscall::IoUringSetup,
                dest: none,
                transport: Transport::Other,
                d,
                thread: &[],
                host: &[],
            },
        );
    }
}

/// The signal that interrupts the supervisor's wait in RECV when it is told to stop. Its
/// default action is to be ignored; nettrap uses it for nothing else.
pub const WAKE: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGURG;

extern "C" fn on_wake(_: libc::c_int) {}

/// Makes [`WAKE`] interrupt a blocking system call of this thread (a handler without
/// `SA_RESTART`, the signal unblocked here). `false`: it cannot, so the supervisor polls.
fn wake_interrupts() -> bool {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow};
    let action = SigAction::new(
        SigHandler::Handler(on_wake),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    if unsafe { nix::sys::signal::sigaction(WAKE, &action) }.is_err() {
        return false;
    }
    let mut set = SigSet::empty();
    set.add(WAKE);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None).is_ok()
}

/// Runs until `stop` becomes readable or no process holds the filter any more; then records
/// the connects to resolvers still held back. Returns why it stopped before being told to, if
/// it did while processes still held the filter.
pub fn run(ctx: Context, stop: OwnedFd) -> Option<String> {
    let mut sup = Supervisor {
        ctx,
        targets: Targets::default(),
        udp_seen: UdpSeen::default(),
        lookups: Lookups::default(),
        go_adapters: Default::default(),
        follow: None,
    };
    // Only with synchronous wake-ups: without them the caller is not moved to this thread's CPU.
    if sup.ctx.listener.set_sync_wakeup() {
        sup.follow = Some(super::affinity::Follow::new());
    }
    let (lfd, sfd) = (sup.ctx.listener.0.as_raw_fd(), stop.as_raw_fd());
    let blocking = wake_interrupts();
    let stopping = || {
        let mut fd = [libc::pollfd {
            fd: sfd,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: poll on one valid descriptor, without waiting.
        unsafe { libc::poll(fd.as_mut_ptr(), 1, 0) > 0 }
    };
    // The first failure, if any: a panic while handling a call (that call is failed with
    // ENOSYS and the supervisor goes on), or an error that ends it.
    let mut error = None;
    // Whether the last RECV found nothing: then poll once (it tells a filter no process holds).
    let mut found_nothing = false;
    loop {
        if blocking && !found_nothing && !sup.lookups.holding() {
            match sup.ctx.listener.recv() {
                Ok(req) => sup.answer(&req, &mut error),
                // Interrupted by WAKE (or another signal): told to stop?
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    if stopping() {
                        break;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => found_nothing = true,
                Err(e) => {
                    error.get_or_insert(format!("cannot receive notifications: {e}"));
                    break;
                }
            }
            continue;
        }
        found_nothing = false;
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
        // While connects to resolvers are held back, wake up to record those whose time is up.
        let timeout = if sup.lookups.holding() {
            (lookups::HOLD_NS / 4 / 1_000_000) as i32
        } else {
            -1
        };
        // SAFETY: poll on two valid descriptors with a correctly sized array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n < 0 {
            continue; // EINTR
        }
        sup.sweep(false);
        // Stop when told (the command and its grace period are over: processes still trapped
        // then get ENOSYS once nettrap exits), or when no process holds the filter any more.
        if fds[1].revents != 0 {
            break;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            match sup.ctx.listener.recv() {
                Ok(req) => sup.answer(&req, &mut error),
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
    sup.sweep(true);
    error
}
