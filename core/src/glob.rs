//! Matching test ids against rule globs, without allocation.
//!
//! `*` matches any run of characters except `/`, `**` matches any run including `/`, `?` matches
//! one character other than `/`; everything else matches itself. So `tests/integration/**`
//! matches every test below that folder and `*::test_index` matches a top-level test function.
//! The algorithm is git's wildmatch: recursion with early abort, linear in practice.
//!
//! Host names ([`host_matches`]) use the same language with `.` in place of `/`: `*` matches
//! within one label (`*.internal` matches `search.internal`, not `a.b.internal`), `**` matches
//! across labels (`**.internal` matches both, but not `internal` itself), `?` one character
//! other than `.`. Host names compare without regard to ASCII case, and a trailing dot
//! (`api.stripe.com.`) is ignored on either side.

const MATCH: i8 = 0;
const NOMATCH: i8 = 1;
const ABORT_ALL: i8 = 2;
const ABORT_TO_STARSTAR: i8 = 3;

/// Does `text` match `pattern`?
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    dowild(pattern, text, b'/', false) == MATCH
}

/// Does the host name `name` match the host glob `pattern` (see the module docs)? An empty name
/// matches nothing.
pub fn host_matches(pattern: &[u8], name: &[u8]) -> bool {
    let name = strip_dot(name);
    !name.is_empty() && dowild(strip_dot(pattern), name, b'.', true) == MATCH
}

fn strip_dot(s: &[u8]) -> &[u8] {
    s.strip_suffix(b".").unwrap_or(s)
}

/// `sep` is the character `*` and `?` do not match; `fold` compares ASCII letters without
/// regard to case.
fn dowild(p: &[u8], t: &[u8], sep: u8, fold: bool) -> i8 {
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
                if !double && t[ti..].contains(&sep) {
                    return ABORT_TO_STARSTAR;
                }
                return MATCH;
            }
            loop {
                let r = dowild(rest, &t[ti..], sep, fold);
                if r != NOMATCH && (!double || r != ABORT_TO_STARSTAR) {
                    return r;
                }
                if ti >= t.len() {
                    return ABORT_ALL;
                }
                if !double && t[ti] == sep {
                    return ABORT_TO_STARSTAR;
                }
                ti += 1;
            }
        }
        let Some(&tc) = t.get(ti) else {
            return ABORT_ALL;
        };
        let ok = if pc == b'?' {
            tc != sep
        } else if fold {
            tc.eq_ignore_ascii_case(&pc)
        } else {
            tc == pc
        };
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
    use super::{host_matches, matches};

    #[test]
    fn host_globs() {
        assert!(host_matches(b"api.stripe.com", b"api.stripe.com"));
        assert!(host_matches(b"api.stripe.com", b"API.Stripe.COM."));
        assert!(host_matches(b"api.stripe.com.", b"api.stripe.com"));
        assert!(!host_matches(b"api.stripe.com", b"api.stripe.co"));
        assert!(!host_matches(b"api.stripe.com", b"xapi.stripe.com"));
        // `*`: within one label.
        assert!(host_matches(b"*.internal", b"search.internal"));
        assert!(!host_matches(b"*.internal", b"a.b.internal"));
        assert!(!host_matches(b"*.internal", b"internal"));
        assert!(host_matches(b"api.*.example", b"api.payments.example"));
        assert!(!host_matches(b"api.*.example", b"api.a.b.example"));
        assert!(host_matches(b"db-*.internal", b"db-7.internal"));
        // `**`: across labels.
        assert!(host_matches(
            b"**.svc.cluster.local",
            b"web.ns.svc.cluster.local"
        ));
        assert!(host_matches(
            b"**.svc.cluster.local",
            b"web.svc.cluster.local"
        ));
        assert!(!host_matches(b"**.svc.cluster.local", b"svc.cluster.local"));
        assert!(host_matches(b"**", b"a.b.c"));
        assert!(host_matches(b"*", b"redis"));
        assert!(!host_matches(b"*", b"redis.local"));
        assert!(host_matches(b"?b.c", b"ab.c"));
        assert!(!host_matches(b"?b.c", b".b.c"));
        // Nothing matches an unknown (empty) name.
        assert!(!host_matches(b"**", b""));
        assert!(!host_matches(b"**", b"."));
    }

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
