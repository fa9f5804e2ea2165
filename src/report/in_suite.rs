//! The suite's own servers: calls to a listener that a process of the run itself opened.
//!
//! The engines record every `listen` of the run (`Syscall::Listen` records: the shim for the
//! processes it is in, the seccomp supervisor for the others) with the address the socket
//! listens on. A call is to the suite's own server when a listener opened before it (by time)
//! listens on its destination: the same address and port, or the port on a wildcard address
//! (`0.0.0.0`, `::`) and a destination that is an address of this machine (loopback, an
//! interface's address, or the unspecified address, which reaches the machine itself).
//!
//! Such a call is marked `served_by_suite`. If no category claims it (`other`), it becomes
//! `in-suite` instead: allowed when the engine decided it by the default rule, so it is not
//! offending and never on the to-do list; a rule of the user's that decided it (a deny of
//! `other`, a port range) still stands, since the engines decide at call time, before the run's
//! listeners are known. A known service keeps its category (a `redis-server` a fixture started
//! is still `redis`, and still a dependency of the tests that use it).
//!
//! Not seen: servers of processes no engine watches (a static program under `--engine
//! preload`), UDP servers (they `bind` but never `listen`), and listeners a process of the run
//! inherited already listening from outside it.

use nettrap_core::addr::{Dest, Transport};

/// The category of calls to the suite's own servers that no other category claims.
pub const IN_SUITE: &str = "in-suite";
/// How such a call's rule is shown when it was allowed for being one.
pub const IN_SUITE_RULE: &str = "allow in-suite (default)";

/// The run's listeners, with the machine's own addresses.
#[derive(Debug, Default)]
pub struct Listeners {
    /// (when, address, transport), by port (in log order within a port): a call's port's
    /// listeners are found by a binary search, not by looking at every listener (a suite's
    /// servers may be many, and every call is asked about).
    by_port: Vec<(u64, Dest, Transport)>,
    /// This machine's interface addresses (IPv4 as IPv4-mapped), read the first time a
    /// listener on a wildcard address meets a destination that is neither loopback nor
    /// unspecified: reading them (netlink) cost a run with a listener ~0.2 ms, and most runs'
    /// listeners are on loopback.
    local: std::cell::OnceCell<Vec<[u8; 16]>>,
}

const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

fn is_v4(ip: &[u8; 16]) -> bool {
    ip[..12] == V4_MAPPED
}

fn unspecified(ip: &[u8; 16]) -> bool {
    ip.iter().all(|&b| b == 0) || (is_v4(ip) && ip[12..] == [0; 4])
}

fn loopback(ip: &[u8; 16]) -> bool {
    (is_v4(ip) && ip[12] == 127) || *ip == std::net::Ipv6Addr::LOCALHOST.octets()
}

/// The addresses of this machine's interfaces (`getifaddrs`); empty when they cannot be read.
fn interface_addresses() -> Vec<[u8; 16]> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list into head, freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*p };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says how long it is.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            match family {
                libc::AF_INET => {
                    // SAFETY: an AF_INET address is a sockaddr_in.
                    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    let v4 = sin.sin_addr.s_addr.to_ne_bytes();
                    out.push(std::net::Ipv4Addr::from(v4).to_ipv6_mapped().octets());
                }
                libc::AF_INET6 => {
                    // SAFETY: an AF_INET6 address is a sockaddr_in6.
                    let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    out.push(sin6.sin6_addr.s6_addr);
                }
                _ => {}
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: freeing the list getifaddrs allocated, no longer used.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// `list` sorted by port, in its order within a port.
fn by_port(mut list: Vec<(u64, Dest, Transport)>) -> Vec<(u64, Dest, Transport)> {
    list.sort_by_key(|(_, l, _)| l.port);
    list
}

impl Listeners {
    /// The run's listeners (from its `Listen` records: when, where, transport); the machine's
    /// addresses are read when first needed.
    pub fn new(list: Vec<(u64, Dest, Transport)>) -> Listeners {
        Listeners {
            by_port: by_port(list),
            local: std::cell::OnceCell::new(),
        }
    }

    #[cfg(test)]
    fn with(list: Vec<(u64, Dest, Transport)>, local: Vec<[u8; 16]>) -> Listeners {
        Listeners {
            by_port: by_port(list),
            local: local.into(),
        }
    }

    /// The listeners on `port`.
    #[inline]
    fn on(&self, port: u16) -> &[(u64, Dest, Transport)] {
        let from = self.by_port.partition_point(|(_, l, _)| l.port < port);
        let rest = &self.by_port[from..];
        &rest[..rest.partition_point(|(_, l, _)| l.port == port)]
    }

    /// Is `ip` an address of this machine?
    fn local(&self, ip: &[u8; 16]) -> bool {
        loopback(ip) || unspecified(ip) || self.local.get_or_init(interface_addresses).contains(ip)
    }

    /// Does a listener of the run, opened at or before `time_ns`, serve `dest` over
    /// `transport`? ([`Listeners::serving_since`] at or before `time_ns`.)
    /// Inlined: a run without servers (most) pays one test per call.
    #[inline]
    pub fn serves(&self, dest: &Dest, transport: Transport, time_ns: u64) -> bool {
        self.serving_since(dest, transport)
            .is_some_and(|since| since <= time_ns)
    }

    /// Since when a listener of the run serves `dest` over `transport`: the earliest opening
    /// of one that takes it (None: none does). [`Listeners::serves`] at any time `t` is then
    /// whether `t` is at or after it (a listener, once open, serves for the rest of the run).
    #[inline]
    pub fn serving_since(&self, dest: &Dest, transport: Transport) -> Option<u64> {
        if self.by_port.is_empty() {
            return None;
        }
        self.on(dest.port)
            .iter()
            .filter(|(_, l, lt)| self.takes(l, *lt, dest, transport))
            .map(|(t, _, _)| *t)
            .min()
    }

    /// Does listener `l` (over `lt`, on `dest`'s port) take calls to `dest` over `transport`,
    /// once open?
    #[inline]
    fn takes(&self, l: &Dest, lt: Transport, dest: &Dest, transport: Transport) -> bool {
        debug_assert_eq!(l.port, dest.port);
        if dest.port == 0 {
            return false;
        }
        if transport != Transport::Other && lt != transport {
            return false;
        }
        if l.ip == dest.ip {
            return true;
        }
        if !unspecified(&l.ip) || !self.local(&dest.ip) {
            return false;
        }
        // 0.0.0.0 takes IPv4 only; `::` takes both (unless the socket is IPv6-only, which
        // the record does not say).
        !is_v4(&l.ip) || is_v4(&dest.ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(last: u8, port: u16) -> Dest {
        let mut ip = [0u8; 16];
        ip[15] = last;
        Dest { ip, port }
    }

    #[test]
    fn listeners_serve_their_address_and_wildcards_the_local_ones() {
        let lan = Dest::from_v4([10, 1, 2, 3], 0).ip;
        let l = Listeners::with(
            vec![
                (10, Dest::from_v4([127, 0, 0, 1], 8001), Transport::Tcp),
                (10, Dest::from_v4([0, 0, 0, 0], 8002), Transport::Tcp),
                (10, v6(0, 8003), Transport::Tcp),
                (10, v6(1, 8004), Transport::Tcp),
            ],
            vec![lan],
        );
        let tcp = Transport::Tcp;
        let at = |d: Dest| l.serves(&d, tcp, 20);
        assert!(at(Dest::from_v4([127, 0, 0, 1], 8001)));
        assert!(!at(Dest::from_v4([127, 0, 0, 2], 8001)), "another address");
        assert!(
            !l.serves(&Dest::from_v4([127, 0, 0, 1], 8001), tcp, 5),
            "before it listened"
        );
        assert!(!l.serves(&Dest::from_v4([127, 0, 0, 1], 8001), Transport::Udp, 20));
        // 0.0.0.0: any local IPv4 address, not IPv6, not another machine.
        assert!(at(Dest::from_v4([127, 0, 0, 9], 8002)));
        assert!(at(Dest::from_v4([10, 1, 2, 3], 8002)));
        assert!(at(Dest::from_v4([0, 0, 0, 0], 8002)));
        assert!(!at(Dest::from_v4([10, 1, 2, 4], 8002)));
        assert!(!at(v6(1, 8002)));
        // `::`: both families.
        assert!(at(v6(1, 8003)));
        assert!(at(Dest::from_v4([127, 0, 0, 1], 8003)));
        assert!(!at(Dest::from_v4([192, 0, 2, 1], 8003)));
        assert!(at(v6(1, 8004)));
        assert!(!at(Dest::from_v4([127, 0, 0, 1], 8004)));
        assert!(!at(Dest::from_v4([127, 0, 0, 1], 9999)));
    }

    /// Whether the suite serves a destination at a time is whether the time is at or after
    /// since when it serves it (what a storm's repeated calls are grouped by).
    #[test]
    fn serving_since_says_when_serves_starts_saying_yes() {
        let l = Listeners::with(
            vec![
                (30, Dest::from_v4([127, 0, 0, 1], 8001), Transport::Tcp),
                (10, Dest::from_v4([0, 0, 0, 0], 8001), Transport::Tcp),
                (20, v6(0, 8002), Transport::Udp),
                (40, Dest::from_v4([127, 0, 0, 1], 8002), Transport::Tcp),
            ],
            vec![],
        );
        for (ip, port) in [
            ([127, 0, 0, 1], 8001),
            ([127, 0, 0, 2], 8002),
            ([10, 0, 0, 1], 8001),
        ] {
            for transport in [Transport::Tcp, Transport::Udp, Transport::Other] {
                let d = Dest::from_v4(ip, port);
                let since = l.serving_since(&d, transport);
                for t in [0, 9, 10, 19, 20, 29, 30, 40, u64::MAX] {
                    let want = since.is_some_and(|s| t >= s);
                    assert_eq!(l.serves(&d, transport, t), want, "{d:?} {transport:?} {t}");
                }
            }
        }
        assert_eq!(
            l.serving_since(&Dest::from_v4([127, 0, 0, 1], 8001), Transport::Tcp),
            Some(10)
        );
    }

    /// The listeners are looked up by port: whatever the order they opened in and the ports
    /// around it (the first and last port, port 0, neighbours), a call's port's listeners are
    /// all found, as looking at every listener finds them.
    #[test]
    fn listeners_of_many_ports_are_found_by_port() {
        let ports = [0, 1, 79, 80, 81, 8000, 8080, 8080, 45001, 45009, 65535];
        let addrs = [
            Dest::from_v4([127, 0, 0, 1], 0),
            Dest::from_v4([0, 0, 0, 0], 0),
            v6(0, 0),
            v6(1, 0),
        ];
        let mut list = Vec::new();
        for (k, port) in ports.iter().rev().enumerate() {
            for (j, a) in addrs.iter().enumerate() {
                if (k + j) % 3 != 0 {
                    let transport = [Transport::Tcp, Transport::Udp][(k * 7 + j) % 2];
                    list.push((
                        (k * 31 + j * 7) as u64 % 50,
                        Dest { port: *port, ..*a },
                        transport,
                    ));
                }
            }
        }
        let l = Listeners::with(list.clone(), vec![]);
        for port in [0, 2, 80, 8080, 45001, 45005, 45009, 65535] {
            for a in [
                Dest::from_v4([127, 0, 0, 1], port),
                Dest::from_v4([127, 0, 0, 5], port),
                Dest::from_v4([10, 0, 0, 1], port),
                v6(1, port),
            ] {
                for transport in [Transport::Tcp, Transport::Udp, Transport::Other] {
                    let theirs = || {
                        list.iter()
                            .filter(|(_, d, lt)| d.port == port && l.takes(d, *lt, &a, transport))
                    };
                    let since = theirs().map(|(t, _, _)| *t).min();
                    assert_eq!(l.serving_since(&a, transport), since, "{a:?} {transport:?}");
                    for t in [0, 10, 25, 49, 50] {
                        let serves = theirs().any(|(opened, _, _)| *opened <= t);
                        assert_eq!(l.serves(&a, transport, t), serves, "{a:?} {transport:?}");
                    }
                }
            }
        }
        assert!(l.serves(&Dest::from_v4([127, 0, 0, 1], 8080), Transport::Tcp, 50));
    }

    #[test]
    fn this_machine_has_addresses() {
        // Loopback is always there; reading the interfaces never fails loudly.
        let _ = interface_addresses();
        assert!(loopback(&Dest::from_v4([127, 0, 0, 1], 0).ip));
        assert!(!loopback(&Dest::from_v4([128, 0, 0, 1], 0).ip));
    }
}
