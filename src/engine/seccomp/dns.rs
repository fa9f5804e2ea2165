//! The question of a DNS query, read from the bytes a trapped call sends to port 53.
//!
//! Only what a lookup needs: the header (a standard query: `QR` 0, opcode `QUERY`, at least one
//! question, no answer or authority records) and the first question's name and type. Bounded
//! and total: any input gives a name or `None`, never a panic (a property test feeds it random
//! and mutated bytes). Queries carry no compression pointers in practice (there is nothing
//! before the question to point at but the header), but a pointer is followed safely: only
//! backwards, a bounded number of times.

/// Bytes of a query worth reading from the caller: the header, the longest name (255 bytes on
/// the wire) and the question's type and class, plus TCP's two-byte length prefix.
pub const READ_MAX: usize = 2 + 12 + 255 + 4;

const HEADER_LEN: usize = 12;
/// Longest name on the wire, length bytes and final zero included (RFC 1035).
const NAME_MAX: usize = 255;
/// Compression pointers followed at most.
const HOPS_MAX: usize = 8;

/// The first question of a DNS query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The name in presentation form, lower-cased, without the final dot (`api.example.com`;
    /// the root is `.`). Bytes other than letters, digits, `-`, `_` and `*` are written as
    /// `\DDD`, as `dig` does, so the name is always printable.
    pub name: String,
    /// QTYPE: 1 for A, 28 for AAAA, ...
    pub qtype: u16,
}

/// The first question of the DNS query `msg` (one UDP datagram's payload), or `None` when
/// `msg` is not a standard query (or is cut before its first question ends).
pub fn parse(msg: &[u8]) -> Option<Question> {
    if msg.len() < HEADER_LEN {
        return None;
    }
    let word = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    let flags = word(2);
    let (qr, opcode) = (flags >> 15, (flags >> 11) & 0xf);
    let (qdcount, ancount, nscount) = (word(4), word(6), word(8));
    if qr != 0 || opcode != 0 || qdcount == 0 || ancount != 0 || nscount != 0 {
        return None;
    }
    let (name, end) = read_name(msg, HEADER_LEN)?;
    let fixed = msg.get(end..end + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    // IN, CH, HS, NONE, ANY: anything else is not a query a resolver takes.
    if !matches!(qclass, 1 | 3 | 4 | 254 | 255) {
        return None;
    }
    Some(Question { name, qtype })
}

/// The first question of a DNS query sent over TCP: `stream` starts with the two-byte length.
pub fn parse_tcp(stream: &[u8]) -> Option<Question> {
    let len = u16::from_be_bytes([*stream.first()?, *stream.get(1)?]) as usize;
    let msg = stream.get(2..)?;
    // The message may be cut by our bounded read, but never longer than announced.
    parse(&msg[..msg.len().min(len)])
}

/// The name starting at `at`: (presentation form, offset just past it where it starts).
fn read_name(msg: &[u8], at: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut pos = at;
    // Where the question continues once the name ends (set at the first pointer).
    let mut end = None;
    let mut wire = 0usize;
    let mut hops = 0usize;
    loop {
        let len = *msg.get(pos)? as usize;
        match len >> 6 {
            0 if len == 0 => {
                wire += 1;
                if wire > NAME_MAX {
                    return None;
                }
                if out.is_empty() {
                    out.push('.');
                }
                return Some((out, end.unwrap_or(pos + 1)));
            }
            0 => {
                let label = msg.get(pos + 1..pos + 1 + len)?;
                wire += 1 + len;
                if wire > NAME_MAX {
                    return None;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &b in label {
                    push_escaped(&mut out, b);
                }
                pos += 1 + len;
            }
            3 => {
                let target = (len & 0x3f) << 8 | *msg.get(pos + 1)? as usize;
                // Only backwards (so no loops), never into the header, and not forever.
                hops += 1;
                if target >= pos || target < HEADER_LEN || hops > HOPS_MAX {
                    return None;
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            // 01 and 10: extended and obsolete label types, not in queries.
            _ => return None,
        }
    }
}

fn push_escaped(out: &mut String, b: u8) {
    match b {
        b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'*' => out.push(b as char),
        b'A'..=b'Z' => out.push(b.to_ascii_lowercase() as char),
        _ => {
            out.push('\\');
            out.push_str(&format!("{b:03}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A query for `name` (dot-separated labels) of type `qtype`, as resolvers write it.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    #[test]
    fn reads_the_first_question() {
        let q = parse(&query("API.Example.com", 28)).unwrap();
        assert_eq!((q.name.as_str(), q.qtype), ("api.example.com", 28));
        assert_eq!(parse(&query("", 2)).unwrap().name, ".");
        // With an EDNS OPT record after the question (ARCOUNT 1), as glibc and Go send.
        let mut edns = query("foo.example", 1);
        edns[11] = 1;
        edns.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&edns).unwrap().name, "foo.example");
        // TCP: a length prefix.
        let mut tcp = (query("x.y", 1).len() as u16).to_be_bytes().to_vec();
        tcp.extend(query("x.y", 1));
        assert_eq!(parse_tcp(&tcp).unwrap().name, "x.y");
        assert_eq!(parse(&tcp), None);
    }

    #[test]
    fn refuses_what_is_not_a_standard_query() {
        let q = query("a.b", 1);
        let mut answer = q.clone();
        answer[2] |= 0x80; // QR: a response
        let mut notify = q.clone();
        notify[2] |= 4 << 3; // opcode NOTIFY
        let mut no_question = q.clone();
        no_question[5] = 0;
        let mut chaos_class = q.clone();
        let n = chaos_class.len();
        chaos_class[n - 1] = 9;
        for bad in [answer, notify, no_question, chaos_class] {
            assert_eq!(parse(&bad), None);
        }
        // Cut anywhere before the question ends.
        for n in 0..q.len() {
            assert_eq!(parse(&q[..n]), None, "cut at {n}");
        }
        // A label of the reserved types, a name over 255 bytes.
        let mut ext = q.clone();
        ext[12] = 0x41;
        assert_eq!(parse(&ext), None);
        let long = ["abcdefghijklmnopqrstuvwxyz0123456789"; 8].join(".");
        assert_eq!(parse(&query(&long, 1)), None);
        let fits = ["abcdefghijklmnopqrstuvwxyz0123456789"; 6].join(".");
        assert_eq!(parse(&query(&fits, 1)).unwrap().name, fits);
    }

    #[test]
    fn escapes_and_pointers() {
        let mut m = query("a.b", 1);
        m[13] = b'.';
        assert_eq!(parse(&m).unwrap().name, "\\046.b");
        // A name that points back at an earlier one (a second question's usual form), and
        // pointers forward, at themselves, into the header: refused.
        let mut two = query("www.example", 1);
        two[5] = 2;
        let at = two.len();
        two.extend_from_slice(&[1, b'm', 0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(
            read_name(&two, at).unwrap(),
            ("m.www.example".into(), at + 4)
        );
        let mut fwd = query("a", 1);
        fwd[12] = 0xc0;
        fwd[13] = 40;
        assert_eq!(parse(&fwd), None);
        fwd[13] = 12;
        assert_eq!(parse(&fwd), None);
        fwd[13] = 2;
        assert_eq!(parse(&fwd), None);
    }

    proptest! {
        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes);
            let _ = parse_tcp(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_queries(
            labels in proptest::collection::vec("[a-zA-Z0-9-]{1,20}", 0..6),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            cut in any::<usize>(),
        ) {
            let name = labels.join(".");
            let mut q = query(&name, 1);
            let want = if name.is_empty() { ".".to_string() } else { name.to_lowercase() };
            prop_assert_eq!(parse(&q).map(|q| q.name), Some(want));
            for (at, b) in flips {
                let n = q.len();
                q[at % n] = b;
            }
            let n = q.len();
            let _ = parse(&q[..cut % (n + 1)]);
            if let Some(found) = parse(&q) {
                prop_assert!(found.name.bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }
}
