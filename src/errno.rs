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
