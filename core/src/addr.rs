//! Decoding the address a system call hands the kernel into a destination (IP address and
//! port), exactly as Linux reads it.
//!
//! IPv4 addresses are kept as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so a connect to
//! `::ffff:127.0.0.1` on an `AF_INET6` socket and one to `127.0.0.1` on an `AF_INET` socket are
//! the same destination to the policy and in the report.
//!
//! # What the kernel takes as a destination
//!
//! A call is a call when the kernel would act on its address; an address the kernel refuses
//! (`EINVAL`, `EFAULT`, `EAFNOSUPPORT`) is no call at all, and one it accepts is always decoded.
//! The rules, from `net/socket.c`, `net/ipv4/{af_inet,tcp_ipv4,udp,datagram,raw}.c` and
//! `net/ipv6/{tcp_ipv6,udp,datagram,raw}.c`, and checked against the running kernel by the
//! `addr_matrix` fixture (tests/escapes/addr.rs):
//!
//! 1. The length ([`arg_len`], [`msg_name_len`]). `connect` and `sendto` take an `int`: negative or
//!    over 128 (`sizeof(struct sockaddr_storage)`) fails the call with `EINVAL`. A `msghdr`'s
//!    `msg_namelen` (sendmsg, sendmmsg) is clamped to 128 instead, negative fails, and a NULL
//!    `msg_name` or a zero length means no address. All of the declared bytes are copied: if they
//!    cannot be read the call fails with `EFAULT`.
//! 2. The socket ([`Socket`]: `SO_DOMAIN`, `SO_TYPE`, `SO_PROTOCOL`) and the family (the first two
//!    bytes), by protocol:
//!
//! | socket | connect, and a TCP Fast Open send | other sends |
//! |---|---|---|
//! | TCP, MPTCP over IPv4 | `AF_INET`, len >= 16 | address ignored |
//! | TCP, MPTCP over IPv6 | `AF_INET6`, len >= 24 | address ignored |
//! | UDP, UDP-Lite over IPv4 | `AF_INET`, len >= 16 | `AF_INET` or `AF_UNSPEC`, len >= 16 (read as IPv4) |
//! | UDP, UDP-Lite over IPv6 | `AF_INET6` >= 24, or `AF_INET` >= 16 | the same; `AF_UNSPEC`: no address |
//! | raw IPv4 | `AF_INET`, len >= 16 | `AF_INET` or `AF_UNSPEC`, len >= 16 |
//! | raw IPv6 | `AF_INET6`, len >= 24 | `AF_INET6` or `AF_UNSPEC`, len >= 24 (read as IPv6) |
//!
//! `AF_UNSPEC` on connect dissolves the association (no destination); on a Fast Open send it
//! fails. 24 bytes is a `sockaddr_in6` without `sin6_scope_id` (RFC 2133, the kernel's
//! `SIN6_LEN_RFC2133`), which IPv6 takes as readily as the full 28.
//!
//! Other protocols on IPv4/IPv6 sockets (SCTP, ICMP "ping" sockets) get the union of the rules
//! above for their domain, so nothing they accept goes undecoded (they may refuse some of what is
//! decoded). A socket that could not be examined gets the union over both domains. Sockets of
//! other domains (`AF_UNIX`, netlink, packet) have no inet destinations.
//!
//! Refusals that depend on more than the address and socket kind are not modelled: a socket
//! with `IPV6_V6ONLY` refuses IPv4 destinations (`EAFNOSUPPORT`, `ENETUNREACH`), UDP refuses port
//! 0, TCP multicast addresses; those attempts are still counted as calls to their destination.

use core::net::{Ipv4Addr, Ipv6Addr};

pub const AF_UNSPEC: u16 = 0;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// The most bytes of an address the kernel takes: `sizeof(struct sockaddr_storage)`.
pub const SOCKADDR_STORAGE: usize = 128;
/// `sizeof(struct sockaddr_in)`.
pub const SIN_LEN: usize = 16;
/// A `sockaddr_in6` without `sin6_scope_id`: the shortest IPv6 address the kernel takes.
pub const SIN6_LEN_RFC2133: usize = 24;
/// `sizeof(struct sockaddr_in6)`.
pub const SIN6_LEN: usize = 28;

const SOCK_STREAM: i32 = 1;
const SOCK_DGRAM: i32 = 2;
const SOCK_RAW: i32 = 3;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_UDP: i32 = 17;
const IPPROTO_UDPLITE: i32 = 136;
const IPPROTO_MPTCP: i32 = 262;

/// What a socket is, as far as the kernel's reading of an address goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Socket {
    /// `SO_DOMAIN`: `AF_INET`, `AF_INET6`, ...
    pub domain: i32,
    /// `SO_TYPE`: `SOCK_STREAM`, `SOCK_DGRAM`, ...
    pub ty: i32,
    /// `SO_PROTOCOL`: `IPPROTO_TCP`, `IPPROTO_UDP`, ...
    pub protocol: i32,
}

/// How a system call uses its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `connect`: the peer to connect to.
    Connect,
    /// `sendto`, `sendmsg`, `sendmmsg`: where the message goes. `fastopen` is `MSG_FASTOPEN`,
    /// which on a TCP socket makes the send a connect carrying data.
    Send { fastopen: bool },
}

/// What the kernel makes of a call's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Address {
    /// The call goes to this destination.
    Inet(Dest),
    /// The call goes ahead without an inet destination of its own: no address, an address the
    /// socket ignores (a TCP send), `AF_UNSPEC` on connect, a socket of another domain.
    NotInet,
    /// The kernel fails the call for its address (`EINVAL`, `EFAULT`, `EAFNOSUPPORT`, ...)
    /// before anything is sent.
    Rejected,
}

impl Address {
    pub fn dest(self) -> Option<Dest> {
        match self {
            Address::Inet(d) => Some(d),
            _ => None,
        }
    }
}

/// How many bytes of address `connect` or `sendto` hands the kernel, from its `int` length
/// argument (`raw`, as the register holds it: only the low 32 bits count). `None`: the kernel
/// fails the call with `EINVAL` (negative, or over 128).
pub fn arg_len(raw: u64) -> Option<usize> {
    let len = raw as u32 as i32;
    usize::try_from(len).ok().filter(|&n| n <= SOCKADDR_STORAGE)
}

/// How many bytes of address a `msghdr` hands the kernel, from `msg_name` and `msg_namelen`:
/// `Some(0)` for no address (a NULL name or a zero length), longer than 128 clamped to 128,
/// `None` when negative (the kernel fails the call with `EINVAL`).
pub fn msg_name_len(name: u64, namelen: u32) -> Option<usize> {
    if name == 0 {
        return Some(0);
    }
    usize::try_from(namelen as i32)
        .ok()
        .map(|n| n.min(SOCKADDR_STORAGE))
}

/// The protocols whose address rules differ (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Udp,
    Raw,
    Other,
}

impl Socket {
    fn kind(&self) -> Kind {
        match (self.ty, self.protocol) {
            (SOCK_RAW, _) => Kind::Raw,
            (SOCK_STREAM, IPPROTO_TCP | IPPROTO_MPTCP) => Kind::Tcp,
            (SOCK_DGRAM, IPPROTO_UDP | IPPROTO_UDPLITE) => Kind::Udp,
            _ => Kind::Other,
        }
    }
}

fn v4(sa: &[u8]) -> Address {
    Address::Inet(Dest::from_v4(
        [sa[4], sa[5], sa[6], sa[7]],
        u16::from_be_bytes([sa[2], sa[3]]),
    ))
}

fn v6(sa: &[u8]) -> Address {
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&sa[8..24]);
    Address::Inet(Dest {
        ip,
        port: u16::from_be_bytes([sa[2], sa[3]]),
    })
}

/// What the kernel makes of the address of a call `op` on socket `sock` (`None`: a socket that
/// could not be examined). `sa` is the address as the kernel copies it: exactly the bytes of
/// its length ([`arg_len`], [`msg_name_len`]), or `None` when the call passes none (`sendto`
/// with a NULL pointer, a `msghdr` without a name). The caller turns an unreadable address into
/// [`Address::Rejected`] itself (`EFAULT`).
pub fn decode(op: Op, sock: Option<Socket>, sa: Option<&[u8]>) -> Address {
    match decode_kernel(op, sock, sa) {
        // A UDP connect to port 0 names no peer a program can talk to; it is how glibc's
        // getaddrinfo probes the source address of each result to sort them (RFC 6724). Not a
        // call.
        Address::Inet(d)
            if d.port == 0 && op == Op::Connect && sock.is_some_and(|s| s.kind() == Kind::Udp) =>
        {
            Address::NotInet
        }
        a => a,
    }
}

/// [`decode`], exactly as the kernel takes the address.
fn decode_kernel(op: Op, sock: Option<Socket>, sa: Option<&[u8]>) -> Address {
    use Address::{NotInet, Rejected};
    let sa = match (op, sa) {
        // connect always hands the protocol its address, even an empty one.
        (Op::Connect, None) => &[][..],
        (_, None) => return NotInet,
        (_, Some(sa)) => sa,
    };
    if sa.len() > SOCKADDR_STORAGE {
        return Rejected;
    }
    let family = match sa {
        [a, b, ..] => Some(u16::from_ne_bytes([*a, *b])),
        _ => None,
    };
    let len = sa.len();
    let Some(sock) = sock else {
        // The union of every inet socket's rules.
        return match (family, op) {
            (Some(AF_INET), _) if len >= SIN_LEN => v4(sa),
            (Some(AF_INET6), _) if len >= SIN6_LEN_RFC2133 => v6(sa),
            (Some(AF_UNSPEC), Op::Send { .. }) if len >= SIN_LEN => v4(sa),
            _ => NotInet,
        };
    };
    let ipv6 = match u16::try_from(sock.domain) {
        Ok(AF_INET) => false,
        Ok(AF_INET6) => true,
        _ => return NotInet,
    };
    let kind = sock.kind();
    let connects = match op {
        Op::Connect => true,
        Op::Send { fastopen } if kind == Kind::Tcp => {
            if !fastopen {
                // tcp_sendmsg ignores the address (EPIPE, ENOTCONN, or the connected peer).
                return NotInet;
            }
            true
        }
        Op::Send { .. } => false,
    };
    let Some(family) = family else {
        // raw_sendmsg takes a zero length as no address; shorter than a family is EINVAL
        // everywhere else.
        return if len == 0 && !ipv6 && kind == Kind::Raw && !connects {
            NotInet
        } else {
            Rejected
        };
    };
    if connects {
        if family == AF_UNSPEC {
            // connect: the association is dissolved; a Fast Open send: EOPNOTSUPP.
            return if op == Op::Connect { NotInet } else { Rejected };
        }
        return match (ipv6, family) {
            (false, AF_INET) if len >= SIN_LEN => v4(sa),
            (true, AF_INET6) if len >= SIN6_LEN_RFC2133 => v6(sa),
            // ip6_datagram_connect hands an IPv4 address to the IPv4 code; TCP and raw (and
            // ping) IPv6 sockets refuse it.
            (true, AF_INET) if len >= SIN_LEN && matches!(kind, Kind::Udp | Kind::Other) => v4(sa),
            _ => Rejected,
        };
    }
    if !ipv6 {
        // udp_sendmsg, raw_sendmsg: AF_UNSPEC is read as an IPv4 address.
        return match family {
            AF_INET | AF_UNSPEC if len >= SIN_LEN => v4(sa),
            _ => Rejected,
        };
    }
    match family {
        AF_INET6 if len >= SIN6_LEN_RFC2133 => v6(sa),
        // udpv6_sendmsg hands an IPv4 address to udp_sendmsg.
        AF_INET if kind != Kind::Raw => {
            if len >= SIN_LEN {
                v4(sa)
            } else {
                Rejected
            }
        }
        // udpv6_sendmsg: no address; rawv6_sendmsg: read as IPv6.
        AF_UNSPEC if kind == Kind::Udp => NotInet,
        AF_UNSPEC if len >= SIN6_LEN_RFC2133 && kind != Kind::Udp => v6(sa),
        _ => Rejected,
    }
}

/// Where a call goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dest {
    /// IPv6 address; IPv4 as IPv4-mapped.
    pub ip: [u8; 16],
    pub port: u16,
}

/// How a call travels, as the record and the report name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Transport {
    Other = 0,
    Tcp = 1,
    Udp = 2,
}

impl Transport {
    /// From a socket's `SO_TYPE` (the `SOCK_*` constant, flags masked off).
    pub fn from_sock_type(ty: i32) -> Transport {
        match ty & 0xf {
            1 => Transport::Tcp, // SOCK_STREAM
            2 => Transport::Udp, // SOCK_DGRAM
            _ => Transport::Other,
        }
    }

    pub fn from_u8(v: u8) -> Transport {
        match v {
            1 => Transport::Tcp,
            2 => Transport::Udp,
            _ => Transport::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Other => "other",
        }
    }
}

impl Dest {
    pub fn from_v4(octets: [u8; 4], port: u16) -> Dest {
        Dest {
            ip: Ipv4Addr::from(octets).to_ipv6_mapped().octets(),
            port,
        }
    }

    /// The IPv4 address, for IPv4 and IPv4-mapped destinations.
    pub fn v4(&self) -> Option<Ipv4Addr> {
        Ipv6Addr::from(self.ip).to_ipv4_mapped()
    }

    /// Writes the address as text (`127.0.0.1`, `::1`) to `w`.
    pub fn write_ip(&self, w: &mut dyn core::fmt::Write) -> core::fmt::Result {
        match self.v4() {
            Some(v4) => write!(w, "{v4}"),
            None => write!(w, "{}", Ipv6Addr::from(self.ip)),
        }
    }

    /// Writes `address:port`, with brackets around IPv6 (`[::1]:6379`).
    pub fn write_addr_port(&self, w: &mut dyn core::fmt::Write) -> core::fmt::Result {
        match self.v4() {
            Some(v4) => write!(w, "{v4}:{}", self.port),
            None => write!(w, "[{}]:{}", Ipv6Addr::from(self.ip), self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP4: Socket = Socket {
        domain: AF_INET as i32,
        ty: SOCK_STREAM,
        protocol: IPPROTO_TCP,
    };
    const TCP6: Socket = Socket {
        domain: AF_INET6 as i32,
        ..TCP4
    };
    const UDP4: Socket = Socket {
        domain: AF_INET as i32,
        ty: SOCK_DGRAM,
        protocol: IPPROTO_UDP,
    };
    const UDP6: Socket = Socket {
        domain: AF_INET6 as i32,
        ..UDP4
    };
    const SEND: Op = Op::Send { fastopen: false };

    fn sockaddr_in(ip: [u8; 4], port: u16) -> [u8; 16] {
        let mut sa = [0u8; 16];
        sa[0..2].copy_from_slice(&AF_INET.to_ne_bytes());
        sa[2..4].copy_from_slice(&port.to_be_bytes());
        sa[4..8].copy_from_slice(&ip);
        sa
    }

    fn sockaddr_in6(ip: Ipv6Addr, port: u16) -> [u8; 28] {
        let mut sa = [0u8; 28];
        sa[0..2].copy_from_slice(&AF_INET6.to_ne_bytes());
        sa[2..4].copy_from_slice(&port.to_be_bytes());
        sa[8..24].copy_from_slice(&ip.octets());
        sa
    }

    fn dest(op: Op, sock: Socket, sa: &[u8]) -> Option<Dest> {
        decode(op, Some(sock), Some(sa)).dest()
    }

    #[test]
    fn v4_and_mapped_v6_are_the_same_destination() {
        let a = dest(Op::Connect, TCP4, &sockaddr_in([127, 0, 0, 1], 9200)).unwrap();
        let mapped = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped();
        let b = dest(Op::Connect, TCP6, &sockaddr_in6(mapped, 9200)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.v4(), Some(Ipv4Addr::new(127, 0, 0, 1)));
    }

    #[test]
    fn ipv6_without_scope_id_is_a_destination() {
        let sa = sockaddr_in6(Ipv6Addr::LOCALHOST, 9);
        let want = Some(Dest {
            ip: Ipv6Addr::LOCALHOST.octets(),
            port: 9,
        });
        for sock in [TCP6, UDP6] {
            assert_eq!(dest(Op::Connect, sock, &sa[..24]), want);
            assert_eq!(dest(Op::Connect, sock, &sa[..23]), None);
        }
        assert_eq!(dest(SEND, UDP6, &sa[..24]), want);
        assert_eq!(decode(SEND, Some(UDP6), Some(&sa[..23])), Address::Rejected);
        assert_eq!(decode(Op::Connect, None, Some(&sa[..24])).dest(), want);
    }

    #[test]
    fn lengths_as_the_kernel_takes_them() {
        assert_eq!(arg_len(16), Some(16));
        assert_eq!(arg_len(128), Some(128));
        assert_eq!(arg_len(129), None);
        assert_eq!(arg_len(u32::MAX as u64), None); // -1
        assert_eq!(arg_len(1 << 32 | 16), Some(16)); // the upper half of the register is not read
        assert_eq!(msg_name_len(0x1000, 200), Some(128));
        assert_eq!(msg_name_len(0x1000, u32::MAX), None);
        assert_eq!(msg_name_len(0, u32::MAX), Some(0));
    }

    #[test]
    fn families_by_socket() {
        let sa4 = sockaddr_in([127, 0, 0, 1], 9);
        let mut unspec = sa4;
        unspec[0..2].copy_from_slice(&AF_UNSPEC.to_ne_bytes());
        // An IPv4 address on an IPv6 socket: UDP takes it, TCP refuses it.
        assert!(dest(Op::Connect, UDP6, &sa4).is_some());
        assert_eq!(
            decode(Op::Connect, Some(TCP6), Some(&sa4)),
            Address::Rejected
        );
        assert!(dest(SEND, UDP6, &sa4).is_some());
        // AF_UNSPEC: a send to that IPv4 address on an IPv4 UDP socket, nothing elsewhere.
        assert_eq!(dest(SEND, UDP4, &unspec), dest(SEND, UDP4, &sa4));
        assert_eq!(decode(SEND, Some(UDP6), Some(&unspec)), Address::NotInet);
        assert_eq!(
            decode(Op::Connect, Some(UDP4), Some(&unspec)),
            Address::NotInet
        );
        // A TCP send's address is ignored, unless it is a Fast Open one.
        assert_eq!(decode(SEND, Some(TCP4), Some(&sa4)), Address::NotInet);
        let tfo = Op::Send { fastopen: true };
        assert!(dest(tfo, TCP4, &sa4).is_some());
        assert_eq!(decode(tfo, Some(TCP4), Some(&unspec)), Address::Rejected);
        // Other domains have no inet destinations.
        let unix = Socket { domain: 1, ..UDP4 };
        assert_eq!(decode(SEND, Some(unix), Some(&sa4)), Address::NotInet);
    }

    #[test]
    fn short_and_foreign_addresses_are_not_destinations() {
        let sa4 = sockaddr_in([127, 0, 0, 1], 1);
        assert_eq!(
            decode(Op::Connect, Some(TCP4), Some(&sa4[..15])),
            Address::Rejected
        );
        assert_eq!(
            decode(Op::Connect, Some(TCP4), Some(&[])),
            Address::Rejected
        );
        assert_eq!(decode(Op::Connect, Some(TCP4), None), Address::Rejected);
        assert_eq!(decode(SEND, Some(UDP4), None), Address::NotInet);
        assert_eq!(
            decode(Op::Connect, None, Some(&[1, 0, b'/', b't'])),
            Address::NotInet
        ); // AF_UNIX
        assert_eq!(
            decode(Op::Connect, None, Some(&[0; 129])),
            Address::Rejected
        );
    }

    /// Property tests: random bytes, lengths and sockets never panic; the decoder agrees with
    /// a transcription of the kernel's handlers, one function per handler (structured as the
    /// kernel is, not as the decoder's table); real sockaddr_in/in6 round-trip.
    mod props {
        extern crate std;
        use super::*;
        use proptest::prelude::*;
        use std::vec::Vec;

        /// The kernel's handlers, as the oracle. `sa` is the copied address (present).
        mod kernel {
            use super::super::super::*;
            use Address::{NotInet, Rejected};

            fn family(sa: &[u8]) -> u16 {
                u16::from_ne_bytes([sa[0], sa[1]])
            }
            fn tcp_v4_connect(sa: &[u8]) -> Address {
                if sa.len() < 16 || family(sa) != AF_INET {
                    return Rejected;
                }
                v4(sa)
            }
            fn tcp_v6_connect(sa: &[u8]) -> Address {
                if sa.len() < 24 || family(sa) != AF_INET6 {
                    return Rejected;
                }
                v6(sa)
            }
            fn ip4_datagram_connect(sa: &[u8]) -> Address {
                if sa.len() < 16 || family(sa) != AF_INET {
                    return Rejected;
                }
                v4(sa)
            }
            fn ip6_datagram_connect(sa: &[u8]) -> Address {
                if family(sa) == AF_INET {
                    return ip4_datagram_connect(sa);
                }
                if sa.len() < 24 || family(sa) != AF_INET6 {
                    return Rejected;
                }
                v6(sa)
            }
            fn ip6_datagram_connect_v6_only(sa: &[u8]) -> Address {
                if sa.len() < 24 || family(sa) != AF_INET6 {
                    return Rejected;
                }
                ip6_datagram_connect(sa)
            }
            /// inet_stream_connect, inet_dgram_connect.
            fn inet_connect(sa: &[u8], proto: fn(&[u8]) -> Address) -> Address {
                if sa.len() < 2 {
                    return Rejected;
                }
                if family(sa) == AF_UNSPEC {
                    return NotInet;
                }
                proto(sa)
            }
            fn udp_sendmsg(sa: &[u8]) -> Address {
                if sa.len() < 16 {
                    return Rejected;
                }
                if family(sa) != AF_INET && family(sa) != AF_UNSPEC {
                    return Rejected;
                }
                v4(sa)
            }
            fn udpv6_sendmsg(sa: &[u8]) -> Address {
                if sa.len() < 2 {
                    return Rejected;
                }
                match family(sa) {
                    AF_INET6 if sa.len() < 24 => Rejected,
                    AF_INET6 => v6(sa),
                    AF_INET => udp_sendmsg(sa),
                    AF_UNSPEC => NotInet,
                    _ => Rejected,
                }
            }
            fn raw_sendmsg(sa: &[u8]) -> Address {
                if sa.is_empty() {
                    return NotInet; // `if (msg->msg_namelen)`
                }
                if sa.len() < 16 {
                    return Rejected;
                }
                if family(sa) != AF_INET && family(sa) != AF_UNSPEC {
                    return Rejected;
                }
                v4(sa)
            }
            fn rawv6_sendmsg(sa: &[u8]) -> Address {
                if sa.len() < 24 {
                    return Rejected;
                }
                if family(sa) != AF_UNSPEC && family(sa) != AF_INET6 {
                    return Rejected;
                }
                v6(sa)
            }
            /// tcp_sendmsg_locked, tcp_sendmsg_fastopen, __inet_stream_connect.
            fn tcp_sendmsg(sa: &[u8], fastopen: bool, connect: fn(&[u8]) -> Address) -> Address {
                if !fastopen {
                    return NotInet;
                }
                if sa.len() >= 2 && family(sa) == AF_UNSPEC {
                    return Rejected;
                }
                inet_connect(sa, connect)
            }

            /// TCP, UDP and raw sockets of both domains; None for the rest.
            pub fn verdict(op: Op, sock: Socket, sa: &[u8]) -> Option<Address> {
                let tcp =
                    (sock.ty, sock.protocol) == (1, 6) || (sock.ty, sock.protocol) == (1, 262);
                let udp =
                    (sock.ty, sock.protocol) == (2, 17) || (sock.ty, sock.protocol) == (2, 136);
                let raw = sock.ty == 3;
                let v6 = sock.domain == AF_INET6 as i32;
                if sock.domain != AF_INET as i32 && !v6 {
                    return Some(NotInet);
                }
                let tcp_connect = if v6 { tcp_v6_connect } else { tcp_v4_connect };
                Some(match op {
                    Op::Connect if tcp => inet_connect(sa, tcp_connect),
                    Op::Connect if udp && v6 => inet_connect(sa, ip6_datagram_connect),
                    Op::Connect if raw && v6 => inet_connect(sa, ip6_datagram_connect_v6_only),
                    Op::Connect if udp || raw => inet_connect(sa, ip4_datagram_connect),
                    Op::Send { fastopen } if tcp => tcp_sendmsg(sa, fastopen, tcp_connect),
                    Op::Send { .. } if udp && v6 => udpv6_sendmsg(sa),
                    Op::Send { .. } if udp => udp_sendmsg(sa),
                    Op::Send { .. } if raw && v6 => rawv6_sendmsg(sa),
                    Op::Send { .. } if raw => raw_sendmsg(sa),
                    _ => return None,
                })
            }

            /// The modelled sockets of a domain.
            pub fn modelled(domain: i32) -> [Socket; 5] {
                [(1, 6), (1, 262), (2, 17), (2, 136), (3, 17)].map(|(ty, protocol)| Socket {
                    domain,
                    ty,
                    protocol,
                })
            }
        }

        fn any_op() -> impl Strategy<Value = Op> {
            prop_oneof![
                Just(Op::Connect),
                any::<bool>().prop_map(|fastopen| Op::Send { fastopen }),
            ]
        }

        fn any_socket() -> impl Strategy<Value = Socket> {
            let domain = prop_oneof![Just(2), Just(10), Just(1), Just(16), Just(17), any::<i32>()];
            let ty = prop_oneof![Just(1), Just(2), Just(3), Just(5), Just(10), any::<i32>()];
            let protocol = prop_oneof![
                Just(0),
                Just(6),
                Just(17),
                Just(58),
                Just(132),
                Just(136),
                Just(262),
                any::<i32>()
            ];
            (domain, ty, protocol).prop_map(|(domain, ty, protocol)| Socket {
                domain,
                ty,
                protocol,
            })
        }

        /// Address bytes: mostly a plausible family, and mostly a length at or next to one the
        /// kernel checks, else any up to past 128.
        fn any_sockaddr() -> impl Strategy<Value = Vec<u8>> {
            let family = prop_oneof![Just(0u16), Just(1), Just(2), Just(10), any::<u16>()];
            let len = prop_oneof![
                3 => proptest::sample::select(&[0usize, 1, 2, 3, 15, 16, 17, 23, 24, 25, 27, 28, 29, 127, 128, 129][..]),
                1 => 0usize..140,
            ];
            (family, len, any::<[u8; 140]>()).prop_map(|(f, len, bytes)| {
                let mut b = bytes[..len].to_vec();
                if b.len() >= 2 {
                    b[..2].copy_from_slice(&f.to_ne_bytes());
                }
                b
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            #[test]
            fn never_panics(
                op in any_op(),
                sock in proptest::option::of(any_socket()),
                sa in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
                raw in any::<u64>(),
                name in any::<u64>(),
                namelen in any::<u32>(),
            ) {
                let _ = decode(op, sock, sa.as_deref());
                let _ = arg_len(raw);
                let _ = msg_name_len(name, namelen);
            }

            #[test]
            fn lengths_follow_move_addr_to_kernel(raw in any::<u64>(), name in any::<u64>(), namelen in any::<u32>()) {
                let int = raw as u32 as i32;
                prop_assert_eq!(arg_len(raw), (0..=128).contains(&int).then_some(int as usize));
                let want = if name == 0 {
                    Some(0)
                } else if (namelen as i32) < 0 {
                    None
                } else {
                    Some((namelen as usize).min(128))
                };
                prop_assert_eq!(msg_name_len(name, namelen), want);
            }

            /// A UDP connect to port 0 (glibc's getaddrinfo sorting its results) is the one
            /// address the kernel takes that is not a call.
            #[test]
            fn a_udp_connect_to_port_0_is_not_a_call(ip in any::<[u8; 4]>(), port in any::<u16>()) {
                let sa = sockaddr_in(ip, port);
                let got = decode(Op::Connect, Some(UDP4), Some(&sa));
                if port == 0 {
                    prop_assert_eq!(got, Address::NotInet);
                    prop_assert_eq!(decode(Op::Connect, Some(TCP4), Some(&sa)), Address::Inet(Dest::from_v4(ip, 0)));
                } else {
                    prop_assert_eq!(got, Address::Inet(Dest::from_v4(ip, port)));
                }
            }

            /// TCP, UDP and raw sockets: exactly the kernel's handlers.
            #[test]
            fn agrees_with_the_kernel_handlers(op in any_op(), domain in prop_oneof![Just(2), Just(10)], which in 0usize..5, sa in any_sockaddr()) {
                let sock = kernel::modelled(domain)[which];
                if sa.len() <= SOCKADDR_STORAGE {
                    prop_assert_eq!(Some(decode_kernel(op, Some(sock), Some(&sa))), kernel::verdict(op, sock, &sa));
                } else {
                    prop_assert_eq!(decode_kernel(op, Some(sock), Some(&sa)), Address::Rejected);
                }
            }

            /// Any other socket: whatever a modelled protocol of its domain takes is decoded
            /// (the union), and a socket that could not be examined decodes whatever any socket
            /// takes (what the shim's and the supervisor's first, socket-less look relies on).
            #[test]
            fn nothing_the_kernel_takes_goes_undecoded(op in any_op(), sock in any_socket(), sa in any_sockaddr()) {
                let sa = &sa[..sa.len().min(SOCKADDR_STORAGE)];
                let got = decode(op, Some(sock), Some(sa));
                let unknown = decode(op, None, Some(sa));
                if matches!(got, Address::Inet(_)) {
                    prop_assert!(matches!(unknown, Address::Inet(_)), "{:?} {:?}: {:?} but unknown {:?}", op, sock, got, unknown);
                }
                if sock.domain == AF_INET as i32 || sock.domain == AF_INET6 as i32 {
                    let other = Socket { ty: 5, protocol: 132, ..sock }; // SCTP
                    let union = kernel::modelled(sock.domain)
                        .iter()
                        .any(|m| matches!(kernel::verdict(op, *m, sa), Some(Address::Inet(_))));
                    if union {
                        prop_assert!(matches!(decode(op, Some(other), Some(sa)), Address::Inet(_)));
                    }
                } else {
                    prop_assert_eq!(got, Address::NotInet);
                }
            }

            #[test]
            fn sockaddr_in_round_trips(ip in any::<[u8; 4]>(), port in any::<u16>(), len in 16usize..=128, tail in any::<u8>(), udp in any::<bool>()) {
                let mut sa = std::vec![tail; len];
                sa[..16].copy_from_slice(&sockaddr_in(ip, port));
                let want = Address::Inet(Dest::from_v4(ip, port));
                let sock = if udp { UDP4 } else { TCP4 };
                prop_assert_eq!(decode_kernel(Op::Connect, Some(sock), Some(&sa)), want);
                prop_assert_eq!(decode_kernel(Op::Send { fastopen: !udp }, Some(sock), Some(&sa)), want);
                // UDP over IPv6 takes it too.
                prop_assert_eq!(decode_kernel(SEND, Some(UDP6), Some(&sa)), want);
                prop_assert_eq!(decode_kernel(Op::Connect, None, Some(&sa)), want);
            }

            #[test]
            fn sockaddr_in6_round_trips(ip in any::<[u8; 16]>(), port in any::<u16>(), len in 24usize..=128, tail in any::<u8>(), udp in any::<bool>()) {
                let mut sa = std::vec![tail; len];
                sa[..24].copy_from_slice(&sockaddr_in6(Ipv6Addr::from(ip), port)[..24]);
                let want = Address::Inet(Dest { ip, port });
                let sock = if udp { UDP6 } else { TCP6 };
                prop_assert_eq!(decode_kernel(Op::Connect, Some(sock), Some(&sa)), want);
                prop_assert_eq!(decode_kernel(Op::Send { fastopen: !udp }, Some(sock), Some(&sa)), want);
                prop_assert_eq!(decode_kernel(Op::Connect, None, Some(&sa)), want);
                // An IPv4 socket refuses it.
                prop_assert_eq!(decode_kernel(Op::Connect, Some(UDP4), Some(&sa)), Address::Rejected);
            }
        }
    }
}
