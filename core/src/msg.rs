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
    let mut w = BufWriter::new(buf);
    let _ = write!(w, "nettrap: denied {syscall} to ");
    let _ = dest.write_addr_port(&mut w);
    w.push_bytes(b" (");
    w.push_bytes(category);
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
        let mut small = [0u8; 20];
        let n = denial(&mut small, "connect", &d, b"x", None, 1, b"y");
        assert_eq!((n, small[19]), (20, b'\n'));
    }
}
