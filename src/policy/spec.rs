//! Parsing the small address languages shared by flags and the policy file: ports and port
//! ranges (`9200`, `8000-8100`), hosts and networks (`127.0.0.1`, `10.0.0.0/8`, `::1`,
//! `[::1]:6379`, `10.0.0.0/8:443`), host names and name globs (`api.stripe.com`,
//! `*.internal:5432`, `**.svc.cluster.local`; see `nettrap_core::glob` for the glob language).

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

/// A host condition: an address or network, or a host-name glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Net(Net),
    /// Lower case, without a trailing dot.
    Name(String),
}

/// Does `s` read as an address or network rather than a name? (Digits, dots, colons, a `/`;
/// names have a letter, a `-`, `_` or a glob character.)
fn looks_numeric(s: &str) -> bool {
    s.contains([':', '/']) || s.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// `127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8` as a network; anything else as a host-name glob
/// ([`parse_name`]).
pub fn parse_host(s: &str) -> Result<Host, String> {
    if looks_numeric(s) {
        parse_net(s).map(Host::Net)
    } else {
        parse_name(s).map(Host::Name)
    }
}

/// A host name or name glob: letters, digits, `-`, `_`, and `*` / `?` / `**`, in labels
/// separated by dots; at most 253 bytes; any case (kept in lower case); a trailing dot is
/// dropped.
pub fn parse_name(s: &str) -> Result<String, String> {
    let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    if name.is_empty() {
        return Err(format!("`{s}` is not a host name"));
    }
    if name.len() > 253 {
        return Err(format!("host name `{s}` is too long (at most 253 bytes)"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?')))
    {
        return Err(format!(
            "`{s}` is not a host name or name glob (`{}` is not allowed; use letters, digits, \
             `-`, `_`, `.`, `*`, `?`)",
            c.escape_default()
        ));
    }
    if name.split('.').any(str::is_empty) {
        return Err(format!("`{s}` is not a host name (empty label)"));
    }
    if name
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '*' | '?'))
    {
        return Err(format!(
            "`{s}` looks like an address pattern: use an IP address or CIDR (10.0.0.0/8)"
        ));
    }
    Ok(name)
}

/// `127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8` as a network.
pub fn parse_net(s: &str) -> Result<Net, String> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("`{ip}` is not an IP address"))?;
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

/// `HOST[:PORT]` or `CIDR[:PORT]`, IPv6 in brackets when a port follows (`[::1]:6379`); HOST an
/// address or a host-name glob (`api.*.example:443`).
pub fn parse_host_port(s: &str) -> Result<(Host, Option<PortSpan>), String> {
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
    let host = if s.starts_with('[') {
        Host::Net(parse_net(host)?)
    } else {
        parse_host(host)?
    };
    let port = match port {
        Some(p) => {
            Some(PortSpan::parse(p).ok_or_else(|| format!("`{p}` is not a port or port range"))?)
        }
        None => None,
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(h: Host) -> Net {
        match h {
            Host::Net(n) => n,
            Host::Name(n) => panic!("a name: {n}"),
        }
    }

    fn parse_host_port(s: &str) -> Result<(Net, Option<PortSpan>), String> {
        super::parse_host_port(s).map(|(h, p)| (net(h), p))
    }

    #[test]
    fn names() {
        let name = |s| super::parse_host_port(s);
        assert_eq!(
            name("api.stripe.com").unwrap(),
            (Host::Name("api.stripe.com".into()), None)
        );
        assert_eq!(
            name("API.*.Example.:443").unwrap(),
            (
                Host::Name("api.*.example".into()),
                Some(PortSpan { lo: 443, hi: 443 })
            )
        );
        assert_eq!(
            name("**.svc.cluster.local").unwrap().0,
            Host::Name("**.svc.cluster.local".into())
        );
        assert_eq!(name("redis").unwrap().0, Host::Name("redis".into()));
        assert_eq!(name("db-1_x").unwrap().0, Host::Name("db-1_x".into()));
        assert!(name("10.0.0.*").unwrap_err().contains("address pattern"));
        assert!(name("a..b").unwrap_err().contains("empty label"));
        assert!(name(".a").unwrap_err().contains("empty label"));
        assert!(name("a b").unwrap_err().contains("` ` is not allowed"));
        assert!(name("a/b").unwrap_err().contains("not an IP address"));
        assert!(
            name("10.0.0.300")
                .unwrap_err()
                .contains("not an IP address")
        );
        assert!(
            name("api.stripe.com:http")
                .unwrap_err()
                .contains("not a port")
        );
        assert!(name(&"a".repeat(254)).unwrap_err().contains("too long"));
        assert!(parse_name("").is_err());
        assert!(parse_name(".").is_err());
    }

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
