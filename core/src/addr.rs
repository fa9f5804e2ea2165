//! Decoding a `struct sockaddr` into a destination (IP address and port).
//!
//! IPv4 addresses are kept as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so a connect to
//! `::ffff:127.0.0.1` on an `AF_INET6` socket and one to `127.0.0.1` on an `AF_INET` socket are
//! the same destination to the policy and in the report.

use core::net::{Ipv4Addr, Ipv6Addr};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

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

    /// Decodes the bytes of a `sockaddr_in` / `sockaddr_in6`. Anything else (AF_UNIX, AF_UNSPEC,
    /// netlink, a truncated address) is not a network destination: `None`.
    pub fn from_sockaddr(sa: &[u8]) -> Option<Dest> {
        if sa.len() < 2 {
            return None;
        }
        let family = u16::from_ne_bytes([sa[0], sa[1]]);
        match family {
            AF_INET if sa.len() >= 16 => {
                let port = u16::from_be_bytes([sa[2], sa[3]]);
                Some(Dest::from_v4([sa[4], sa[5], sa[6], sa[7]], port))
            }
            AF_INET6 if sa.len() >= 28 => {
                let port = u16::from_be_bytes([sa[2], sa[3]]);
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&sa[8..24]);
                Some(Dest { ip, port })
            }
            _ => None,
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

    fn sockaddr_in(ip: [u8; 4], port: u16) -> [u8; 16] {
        let mut sa = [0u8; 16];
        sa[0..2].copy_from_slice(&AF_INET.to_ne_bytes());
        sa[2..4].copy_from_slice(&port.to_be_bytes());
        sa[4..8].copy_from_slice(&ip);
        sa
    }

    #[test]
    fn v4_and_mapped_v6_are_the_same_destination() {
        let a = Dest::from_sockaddr(&sockaddr_in([127, 0, 0, 1], 9200)).unwrap();
        let mut sa6 = [0u8; 28];
        sa6[0..2].copy_from_slice(&AF_INET6.to_ne_bytes());
        sa6[2..4].copy_from_slice(&9200u16.to_be_bytes());
        sa6[8..24].copy_from_slice(&Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped().octets());
        let b = Dest::from_sockaddr(&sa6).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.v4(), Some(Ipv4Addr::new(127, 0, 0, 1)));
    }

    #[test]
    fn short_and_foreign_addresses_are_not_destinations() {
        assert!(Dest::from_sockaddr(&sockaddr_in([127, 0, 0, 1], 1)[..8]).is_none());
        assert!(Dest::from_sockaddr(&[1, 0, b'/', b't']).is_none()); // AF_UNIX
        assert!(Dest::from_sockaddr(&[]).is_none());
    }
}
