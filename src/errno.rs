//! errno names accepted in flags and policy files, and shown in reports.

const NAMES: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("EACCES", libc::EACCES),
    ("EADDRNOTAVAIL", libc::EADDRNOTAVAIL),
    ("ENETDOWN", libc::ENETDOWN),
    ("ENETUNREACH", libc::ENETUNREACH),
    ("ECONNRESET", libc::ECONNRESET),
    ("ETIMEDOUT", libc::ETIMEDOUT),
    ("ECONNREFUSED", libc::ECONNREFUSED),
    ("EHOSTDOWN", libc::EHOSTDOWN),
    ("EHOSTUNREACH", libc::EHOSTUNREACH),
    ("EINPROGRESS", libc::EINPROGRESS),
    ("EALREADY", libc::EALREADY),
    ("EISCONN", libc::EISCONN),
    ("EAGAIN", libc::EAGAIN),
    ("EINTR", libc::EINTR),
    ("EBADF", libc::EBADF),
    ("ENOTSOCK", libc::ENOTSOCK),
    ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
    ("EINVAL", libc::EINVAL),
    ("ENOENT", libc::ENOENT),
    ("ENOSYS", libc::ENOSYS),
];

/// Parses `ECONNREFUSED` (any case) or a number.
pub fn parse(s: &str) -> Result<i32, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return if (1..4096).contains(&n) {
            Ok(n)
        } else {
            Err(format!("errno {n} is out of range"))
        };
    }
    NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            format!("unknown errno `{s}` (use a name such as ECONNREFUSED, or a number)")
        })
}

/// `ECONNREFUSED`, or the number for errnos without a listed name.
pub fn name(v: i32) -> String {
    NAMES
        .iter()
        .find(|&&(_, n)| n == v)
        .map_or_else(|| v.to_string(), |(name, _)| name.to_string())
}

/// glibc's `getaddrinfo` error codes, as reports name a lookup's outcome.
const EAI_NAMES: &[(&str, i32)] = &[
    ("EAI_BADFLAGS", -1),
    ("EAI_NONAME", -2),
    ("EAI_AGAIN", -3),
    ("EAI_FAIL", -4),
    ("EAI_NODATA", -5),
    ("EAI_FAMILY", -6),
    ("EAI_SOCKTYPE", -7),
    ("EAI_SERVICE", -8),
    ("EAI_ADDRFAMILY", -9),
    ("EAI_MEMORY", -10),
    ("EAI_SYSTEM", -11),
    ("EAI_OVERFLOW", -12),
    ("EAI_CANCELED", -101),
    ("EAI_INTR", -104),
];

/// What a denied lookup may fail with (`--dns-errno`, `dns_errno` in the policy file).
const DNS_ERRNOS: [&str; 3] = ["EAI_NONAME", "EAI_AGAIN", "EAI_FAIL"];

/// Parses `EAI_NONAME`, `EAI_AGAIN` or `EAI_FAIL` (any case).
pub fn parse_dns(s: &str) -> Result<i32, String> {
    let s = s.trim();
    DNS_ERRNOS
        .iter()
        .find(|n| n.eq_ignore_ascii_case(s))
        .and_then(|n| EAI_NAMES.iter().find(|(name, _)| name == n))
        .map(|&(_, v)| v)
        .ok_or_else(|| format!("`{s}` is not EAI_NONAME, EAI_AGAIN or EAI_FAIL"))
}

/// `EAI_NONAME`, or `EAI_` and the number for codes without a listed name.
pub fn eai_name(v: i32) -> String {
    EAI_NAMES
        .iter()
        .find(|&&(_, n)| n == v)
        .map_or_else(|| format!("EAI_{v}"), |(name, _)| name.to_string())
}

#[cfg(test)]
mod dns_tests {
    use super::*;

    #[test]
    fn eai_codes_match_glibc() {
        assert_eq!(parse_dns("eai_noname"), Ok(libc::EAI_NONAME));
        assert_eq!(parse_dns("EAI_AGAIN"), Ok(libc::EAI_AGAIN));
        assert_eq!(parse_dns("EAI_FAIL"), Ok(libc::EAI_FAIL));
        assert!(parse_dns("EAI_MEMORY").is_err());
        assert!(parse_dns("ECONNREFUSED").is_err());
        assert_eq!(eai_name(libc::EAI_SYSTEM), "EAI_SYSTEM");
        assert_eq!(eai_name(libc::EAI_NODATA), "EAI_NODATA");
        assert_eq!(
            nettrap_core::policy::EAI_NONAME,
            libc::EAI_NONAME,
            "core's default"
        );
    }
}
