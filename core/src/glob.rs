//! Matching test ids against rule globs, without allocation.
//!
//! `*` matches any run of characters except `/`, `**` matches any run including `/`, `?` matches
//! one character other than `/`; everything else matches itself. So `tests/integration/**`
//! matches every test below that folder and `*::test_index` matches a top-level test function.
//! The algorithm is git's wildmatch: recursion with early abort, linear in practice.

const MATCH: i8 = 0;
const NOMATCH: i8 = 1;
const ABORT_ALL: i8 = 2;
const ABORT_TO_STARSTAR: i8 = 3;

/// Does `text` match `pattern`?
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    dowild(pattern, text) == MATCH
}

fn dowild(p: &[u8], t: &[u8]) -> i8 {
    let (mut pi, mut ti) = (0usize, 0usize);
    while pi < p.len() {
        let pc = p[pi];
        if pc == b'*' {
            let double = p.get(pi + 1) == Some(&b'*');
            while pi < p.len() && p[pi] == b'*' {
                pi += 1;
            }
            let rest = &p[pi..];
            if rest.is_empty() {
                if !double && t[ti..].contains(&b'/') {
                    return ABORT_TO_STARSTAR;
                }
                return MATCH;
            }
            loop {
                let r = dowild(rest, &t[ti..]);
                if r != NOMATCH && (!double || r != ABORT_TO_STARSTAR) {
                    return r;
                }
                if ti >= t.len() {
                    return ABORT_ALL;
                }
                if !double && t[ti] == b'/' {
                    return ABORT_TO_STARSTAR;
                }
                ti += 1;
            }
        }
        let Some(&tc) = t.get(ti) else {
            return ABORT_ALL;
        };
        let ok = if pc == b'?' { tc != b'/' } else { tc == pc };
        if !ok {
            return NOMATCH;
        }
        pi += 1;
        ti += 1;
    }
    if ti == t.len() { MATCH } else { NOMATCH }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        let id = b"tests/integration/test_es.py::test_index";
        assert!(matches(b"tests/integration/**", id));
        assert!(matches(b"tests/**", id));
        assert!(matches(b"**::test_index", id));
        assert!(matches(b"tests/*/test_es.py::*", id));
        assert!(matches(b"tests/integration/*", id));
        assert!(!matches(b"tests/*", id));
        assert!(!matches(b"tests/unit/**", id));
        assert!(matches(b"**", id));
        assert!(matches(b"tests/integration/test_es.py::test_inde?", id));
        assert!(!matches(b"tests/integration/test_es.py::test_inde", id));
        assert!(matches(id, id));
        assert!(!matches(b"", id));
        assert!(matches(b"", b""));
        assert!(matches(b"*", b""));
        assert!(matches(b"a**b**c", b"a/x/b/y/c"));
        assert!(!matches(b"a*b*c", b"a/x/b/y/c"));
        // Pathological patterns stay fast.
        assert!(!matches(b"*a*a*a*a*a*a*a*a*a*a*a*b", &[b'a'; 200]));
    }
}
