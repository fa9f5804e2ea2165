//! Parsing the small address languages shared by flags and the policy file: ports and port
//! ranges (`9200`, `8000-8100`), hosts and networks (`127.0.0.1`, `10.0.0.0/8`, `::1`,
//! `[::1]:6379`, `10.0.0.0/8:443`).

use nettrap_core::addr::Dest;
use nettrap_core::policy::Net;
use std::fmt;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSpan {
    pub lo: u16,
    pub hi: u16,
}

impl PortSpan {
    /// `9200` or `8000-8100`; `None` if it is not a port at all.
    pub fn parse(s: &str) -> Option<PortSpan> {
        let s = s.trim();
        match s.split_once('-') {
            Some((a, b)) => {
                let (lo, hi) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                (lo <= hi).then_some(PortSpan { lo, hi })
            }
            None => s.parse().ok().map(|p| PortSpan { lo: p, hi: p }),
        }
    }
}

impl fmt::Display for PortSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// `127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8` as a network.
pub fn parse_net(s: &str) -> Result<Net, String> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| {
        if ip.chars().any(|c| c.is_ascii_alphabetic()) && !ip.contains(':') {
            format!("`{ip}` is a host name; rules by name are not supported yet, use an IP address or CIDR")
        } else {
            format!("`{ip}` is not an IP address")
        }
    })?;
    let (octets, max, offset) = match ip {
        IpAddr::V4(v4) => (Dest::from_v4(v4.octets(), 0).ip, 32u8, 96u8),
        IpAddr::V6(v6) => (v6.octets(), 128u8, 0u8),
    };
    let bits = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(b) if b <= max => b,
            _ => return Err(format!("`/{p}` is not a prefix length (0-{max})")),
        },
    };
    Ok(Net::new(octets, offset + bits))
}

/// `HOST[:PORT]` or `CIDR[:PORT]`, IPv6 in brackets when a port follows (`[::1]:6379`).
pub fn parse_host_port(s: &str) -> Result<(Net, Option<PortSpan>), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("missing `]`")?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(format!("unexpected `{after}` after `]`")),
        }
    } else if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').unwrap_or((s, ""));
        (h, Some(p))
    } else {
        (s, None)
    };
    let net = parse_net(host)?;
    let port = match port {
        Some(p) => {
            Some(PortSpan::parse(p).ok_or_else(|| format!("`{p}` is not a port or port range"))?)
        }
        None => None,
    };
    Ok((net, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        let (n, p) = parse_host_port("127.0.0.1:6379").unwrap();
        assert!(n.contains(&Dest::from_v4([127, 0, 0, 1], 0).ip));
        assert!(!n.contains(&Dest::from_v4([127, 0, 0, 2], 0).ip));
        assert_eq!(p, Some(PortSpan { lo: 6379, hi: 6379 }));
        let (n, p) = parse_host_port("10.0.0.0/8:8000-8100").unwrap();
        assert!(n.contains(&Dest::from_v4([10, 9, 9, 9], 0).ip));
        assert_eq!(p, Some(PortSpan { lo: 8000, hi: 8100 }));
        let (n, p) = parse_host_port("[::1]:443").unwrap();
        assert_eq!((n.prefix, p.unwrap().lo), (128, 443));
        assert_eq!(parse_host_port("::1").unwrap().1, None);
        assert!(
            parse_host_port("api.stripe.com:443")
                .unwrap_err()
                .contains("host name")
        );
        assert!(parse_host_port("10.0.0.0/33").is_err());
        assert!(parse_host_port("127.0.0.1:http").is_err());
    }

    #[test]
    fn port_spans() {
        assert_eq!(
            PortSpan::parse("9200"),
            Some(PortSpan { lo: 9200, hi: 9200 })
        );
        assert_eq!(PortSpan::parse("9-3"), None);
        assert_eq!(PortSpan::parse("redis"), None);
    }
}
