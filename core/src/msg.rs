//! The one-line message a denied call prints to the calling process's stderr, formatted into a
//! caller-provided buffer (no allocation: the shim formats it inside the test's process).

use crate::addr::Dest;
use core::fmt::Write;

/// A `fmt::Write` over a fixed buffer that silently truncates.
pub struct BufWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> BufWriter<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        BufWriter { buf, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push_bytes(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }
}

impl Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.push_bytes(s.as_bytes());
        Ok(())
    }
}

/// Formats `nettrap: denied connect to 127.0.0.1:9200 (elasticsearch) in TEST (rule: LABEL)`
/// with a trailing newline; returns the length written.
pub fn denial(
    buf: &mut [u8],
    syscall: &str,
    dest: &Dest,
    category: &[u8],
    test: Option<&[u8]>,
    pid: u32,
    rule: &[u8],
) -> usize {
    denial_named(buf, syscall, dest, b"", category, test, pid, rule)
}

/// [`denial`] for a destination reached by a host name (empty: unknown):
/// `nettrap: denied connect to api.stripe.com:443 (10.2.3.4, external-api) in TEST (rule: …)`.
#[allow(clippy::too_many_arguments)]
pub fn denial_named(
    buf: &mut [u8],
    syscall: &str,
    dest: &Dest,
    host: &[u8],
    category: &[u8],
    test: Option<&[u8]>,
    pid: u32,
    rule: &[u8],
) -> usize {
    let mut w = BufWriter::new(buf);
    let _ = write!(w, "nettrap: denied {syscall} to ");
    if host.is_empty() {
        let _ = dest.write_addr_port(&mut w);
        w.push_bytes(b" (");
    } else {
        push_name(&mut w, host);
        let _ = write!(w, ":{} (", dest.port);
        let _ = dest.write_ip(&mut w);
        w.push_bytes(b", ");
    }
    w.push_bytes(category);
    finish(w, test, pid, rule)
}

/// Formats `nettrap: denied lookup of api.stripe.com (dns) in TEST (rule: --deny-dns)` with a
/// trailing newline; returns the length written.
pub fn lookup_denial(
    buf: &mut [u8],
    name: &[u8],
    category: &[u8],
    test: Option<&[u8]>,
    pid: u32,
    rule: &[u8],
) -> usize {
    let mut w = BufWriter::new(buf);
    w.push_bytes(b"nettrap: denied lookup of ");
    push_name(&mut w, name);
    w.push_bytes(b" (");
    w.push_bytes(category);
    finish(w, test, pid, rule)
}

/// A name as the program gave it, bytes other than printable ASCII escaped (`\x0a`): the line
/// stays one line.
fn push_name(w: &mut BufWriter, name: &[u8]) {
    for &b in name {
        if b.is_ascii_graphic() {
            w.push_bytes(&[b]);
        } else {
            let _ = write!(w, "\\x{b:02x}");
        }
    }
}

/// The end of a denial line: `) in TEST (rule: LABEL)\n`.
fn finish(mut w: BufWriter, test: Option<&[u8]>, pid: u32, rule: &[u8]) -> usize {
    match test {
        Some(t) => {
            w.push_bytes(b") in ");
            w.push_bytes(t);
        }
        None => {
            let _ = write!(w, ") outside any test (pid {pid})");
        }
    }
    w.push_bytes(b" (rule: ");
    w.push_bytes(rule);
    w.push_bytes(b")");
    // Always end with a newline, even when truncated.
    if w.len == w.buf.len() {
        w.len -= 1;
    }
    w.push_bytes(b"\n");
    w.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_denials() {
        let mut buf = [0u8; 256];
        let d = Dest::from_v4([127, 0, 0, 1], 9200);
        let n = denial(
            &mut buf,
            "connect",
            &d,
            b"elasticsearch",
            Some(b"t.py::x"),
            1,
            b"deny elasticsearch",
        );
        assert_eq!(
            &buf[..n],
            b"nettrap: denied connect to 127.0.0.1:9200 (elasticsearch) in t.py::x (rule: deny elasticsearch)\n"
        );
        let mut ip = [0u8; 16];
        ip[15] = 1;
        let n = denial(
            &mut buf,
            "connect",
            &Dest { ip, port: 443 },
            b"external-api",
            None,
            42,
            b"deny 443",
        );
        assert_eq!(
            &buf[..n],
            b"nettrap: denied connect to [::1]:443 (external-api) outside any test (pid 42) (rule: deny 443)\n"
        );
        let n = denial_named(
            &mut buf,
            "connect",
            &Dest::from_v4([10, 2, 3, 4], 443),
            b"api.stripe.com",
            b"external-api",
            Some(b"t"),
            1,
            b"deny api.*.com",
        );
        assert_eq!(
            &buf[..n],
            &b"nettrap: denied connect to api.stripe.com:443 (10.2.3.4, external-api) in t (rule: deny api.*.com)\n"[..]
        );
        let n = lookup_denial(&mut buf, b"a\nb.example", b"dns", None, 7, b"--deny-dns");
        assert_eq!(
            &buf[..n],
            &b"nettrap: denied lookup of a\\x0ab.example (dns) outside any test (pid 7) (rule: --deny-dns)\n"[..]
        );
        let mut small = [0u8; 20];
        let n = denial(&mut small, "connect", &d, b"x", None, 1, b"y");
        assert_eq!((n, small[19]), (20, b'\n'));
    }
}
