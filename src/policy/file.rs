//! The policy file (`nettrap.toml`, or the `[tool.nettrap]` table of a `pyproject.toml`: the
//! same keys), with errors that name the file and line (and, in `pyproject.toml`, the table).
//!
//! ```toml
//! errno = "ECONNREFUSED"            # how denied calls fail (default)
//! fail_on = ["external-api"]        # recorded calls in these categories fail the run
//! deny_dns = true                   # as --deny-dns
//! dns_errno = "EAI_NONAME"          # how denied lookups fail (default; EAI_AGAIN, EAI_FAIL)
//!
//! [categories.payments]             # user categories are classified before built-in ones
//! ports = [8443, "9000-9010"]
//! hosts = ["10.20.0.0/16", "*.payments.internal"]   # addresses, networks, host-name globs
//!
//! [[rules]]                         # later rules win
//! category = "elasticsearch"        # or: port / ports, host (IP, CIDR, name or name glob)
//! action = "deny"                   # allow | record | deny
//!
//! [[rules]]
//! category = "elasticsearch"
//! tests = "tests/integration/**"    # only for these tests
//! action = "allow"
//! ```

use super::spec::{self, Host, PortSpan};
use super::{CategoryDef, Policy, RuleDef};
use anyhow::{Result, anyhow};
use nettrap_core::policy::{Action, MAX_CATEGORY_NETS};
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use std::fmt;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    errno: Option<Spanned<Scalar>>,
    fail_on: Option<Vec<Spanned<String>>>,
    deny_dns: Option<Spanned<bool>>,
    dns_errno: Option<Spanned<String>>,
    #[serde(default)]
    categories: Ordered<Spanned<CategoryFile>>,
    #[serde(default)]
    rules: Vec<Spanned<RuleFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryFile {
    #[serde(default)]
    ports: Vec<Spanned<Scalar>>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    action: Spanned<String>,
    category: Option<Spanned<String>>,
    port: Option<Spanned<Scalar>>,
    ports: Option<Vec<Spanned<Scalar>>>,
    host: Option<Spanned<String>>,
    tests: Option<Spanned<String>>,
    errno: Option<Spanned<Scalar>>,
}

/// A number or a string (`9200` / `"8000-8100"`, `111` / `"ECONNREFUSED"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Text(s) => write!(f, "{s}"),
        }
    }
}

/// A TOML table read in file order (category precedence follows it).
struct Ordered<T>(Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of categories")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<T>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// `pyproject.toml`: only `[tool.nettrap]` is ours; every other table is left unread.
#[derive(Deserialize)]
struct Pyproject {
    tool: Option<Tool>,
}

#[derive(Deserialize)]
struct Tool {
    nettrap: Option<PolicyFile>,
}

/// Where an error is: `FILE:LINE`, and in a `pyproject.toml` also the table (`[tool.nettrap]`,
/// `[[tool.nettrap.rules]]`).
struct Locator<'a> {
    file: &'a str,
    text: &'a str,
    pyproject: bool,
}

impl Locator<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// `FILE:LINE: ` (with `TABLE: ` in a pyproject.toml) for the text at `offset`.
    fn at(&self, offset: usize) -> String {
        let line = self.line(offset);
        match self.table(offset) {
            Some(t) => format!("{}:{line}: {t}:", self.file),
            None => format!("{}:{line}:", self.file),
        }
    }

    /// In a pyproject.toml, the `[tool.nettrap...]` table `offset` lies in: the closest table
    /// header above it (a dotted key or inline table under `[tool]` still says `[tool.nettrap]`).
    fn table(&self, offset: usize) -> Option<String> {
        if !self.pyproject {
            return None;
        }
        let before = &self.text[..offset.min(self.text.len())];
        let header = before
            .lines()
            .rev()
            .map(str::trim_start)
            .find(|l| l.starts_with('['))
            .and_then(|l| {
                let end = if l.starts_with("[[") { "]]" } else { "]" };
                l.find(end).map(|i| &l[..i + end.len()])
            })
            .filter(|h| {
                let name = h.trim_matches(|c| c == '[' || c == ']').trim();
                name == "tool.nettrap" || name.starts_with("tool.nettrap.")
            });
        Some(one_line(header.unwrap_or("[tool.nettrap]")))
    }

    fn err<T>(&self, span: &Spanned<T>, msg: impl fmt::Display) -> anyhow::Error {
        anyhow!(
            "{} {}",
            self.at(span.span().start),
            one_line(&msg.to_string())
        )
    }

    /// `FILE:LINE`, the place a setting is shown as coming from (`nettrap config`).
    fn origin<T>(&self, span: &Spanned<T>) -> String {
        format!("{}:{}", self.file, self.line(span.span().start))
    }
}

/// `msg` with control characters escaped (`\n`, `\u{7}`): a message quoting the file's own
/// text (a category name, an action) stays one line.
fn one_line(msg: &str) -> String {
    msg.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn port_span(loc: &Locator, v: &Spanned<Scalar>) -> Result<PortSpan> {
    let parsed = match v.get_ref() {
        Scalar::Int(n) => u16::try_from(*n).ok().map(|p| PortSpan { lo: p, hi: p }),
        Scalar::Text(s) => PortSpan::parse(s),
    };
    parsed.ok_or_else(|| {
        loc.err(
            v,
            format!(
                "`{}` is not a port (0-65535) or port range (8000-8100)",
                v.get_ref()
            ),
        )
    })
}

fn errno(loc: &Locator, v: &Spanned<Scalar>) -> Result<i32> {
    crate::errno::parse(&v.get_ref().to_string()).map_err(|m| loc.err(v, m))
}

/// Reads a policy file's text (`nettrap.toml`'s format) into `policy`. `file` names it in
/// errors and in rule labels.
pub fn apply(policy: &mut Policy, text: &str, file: &str) -> Result<()> {
    let loc = Locator {
        file,
        text,
        pyproject: false,
    };
    let parsed: PolicyFile = toml::from_str(text).map_err(|e| toml_error(&loc, &e))?;
    apply_parsed(policy, parsed, &loc)
}

/// Whether a `pyproject.toml`'s text holds a `[tool.nettrap]` table (errors: the file is not
/// TOML, or the table is malformed).
pub fn pyproject_has_table(text: &str, file: &str) -> Result<bool> {
    Ok(parse_pyproject(text, file)?.is_some())
}

/// A `pyproject.toml`'s `[tool.nettrap]` table, parsed once: finding the policy file parses the
/// whole `pyproject.toml` to know whether it holds the table (about 100 us for a project's
/// usual one), and the run then applies what it parsed rather than parsing it again.
pub struct Table(PolicyFile);

/// The `[tool.nettrap]` table of a `pyproject.toml`, if it has one (errors as
/// [`pyproject_has_table`]).
pub fn pyproject_table(text: &str, file: &str) -> Result<Option<Table>> {
    Ok(parse_pyproject(text, file)?.map(Table))
}

/// Applies a table [`pyproject_table`] parsed from `text` (which error messages quote).
pub fn apply_table(policy: &mut Policy, table: Table, text: &str, file: &str) -> Result<()> {
    let loc = Locator {
        file,
        text,
        pyproject: true,
    };
    apply_parsed(policy, table.0, &loc)
}

/// Reads the `[tool.nettrap]` table of a `pyproject.toml` into `policy`; `false` (and nothing
/// read) when it has none.
pub fn apply_pyproject(policy: &mut Policy, text: &str, file: &str) -> Result<bool> {
    match pyproject_table(text, file)? {
        Some(table) => apply_table(policy, table, text, file).map(|()| true),
        None => Ok(false),
    }
}

fn parse_pyproject(text: &str, file: &str) -> Result<Option<PolicyFile>> {
    let loc = Locator {
        file,
        text,
        pyproject: true,
    };
    let parsed: Pyproject = toml::from_str(text).map_err(|e| toml_error(&loc, &e))?;
    Ok(parsed.tool.and_then(|t| t.nettrap))
}

fn toml_error(loc: &Locator, e: &toml::de::Error) -> anyhow::Error {
    let msg = one_line(e.message().lines().next().unwrap_or("invalid TOML"));
    match e.span() {
        Some(s) => anyhow!("{} {msg}", loc.at(s.start)),
        None => anyhow!("{}: {msg}", loc.file),
    }
}

fn apply_parsed(policy: &mut Policy, parsed: PolicyFile, loc: &Locator) -> Result<()> {
    let file = loc.file;
    if let Some(e) = &parsed.errno {
        policy.default_errno = errno(loc, e)?;
        policy.note("errno", loc.origin(e));
    }
    if let Some(e) = &parsed.dns_errno {
        policy.dns_errno = crate::errno::parse_dns(e.get_ref()).map_err(|m| loc.err(e, m))?;
        policy.note("dns_errno", loc.origin(e));
    }
    if let Some(d) = &parsed.deny_dns {
        policy.deny_dns = *d.get_ref();
        policy.note("deny_dns", loc.origin(d));
    }
    for (name, cat) in parsed.categories.0 {
        if name == "other" || name.is_empty() || name.len() > 31 || name.contains(char::is_control)
        {
            return Err(loc.err(
                &cat,
                format!(
                    "`{name}` cannot name a category (reserved, empty, over 31 bytes, or with \
                     control characters)"
                ),
            ));
        }
        let c = cat.get_ref();
        if c.ports.is_empty() && c.hosts.is_empty() {
            return Err(loc.err(
                &cat,
                format!("category `{name}` needs `ports`, `hosts` or both"),
            ));
        }
        let ports = c
            .ports
            .iter()
            .map(|p| port_span(loc, p))
            .collect::<Result<Vec<_>>>()?;
        let (mut nets, mut names) = (Vec::new(), Vec::new());
        for h in &c.hosts {
            match spec::parse_host(h.get_ref()).map_err(|m| loc.err(h, m))? {
                Host::Net(n) => nets.push(n),
                Host::Name(n) => names.push(n),
            }
        }
        if nets.len() > MAX_CATEGORY_NETS || names.len() > MAX_CATEGORY_NETS {
            return Err(loc.err(
                &cat,
                format!(
                    "category `{name}` has too many hosts (at most {MAX_CATEGORY_NETS} networks \
                     and {MAX_CATEGORY_NETS} names)"
                ),
            ));
        }
        policy.note(&format!("category {name}"), loc.origin(&cat));
        policy.define_category(CategoryDef {
            name,
            ports,
            nets,
            names,
        });
    }
    for rule in &parsed.rules {
        let r = rule.get_ref();
        let line = loc.line(rule.span().start);
        let action = match r.action.get_ref().as_str() {
            "allow" => Action::Allow,
            "record" => Action::Record,
            "deny" => Action::Deny,
            other => {
                return Err(loc.err(
                    &r.action,
                    format!("unknown action `{other}` (expected allow, record or deny)"),
                ));
            }
        };
        if let Some(c) = &r.category
            && !policy.has_category(c.get_ref())
        {
            return Err(loc.err(
                c,
                format!(
                    "unknown category `{}` ({})",
                    c.get_ref(),
                    super::names(policy)
                ),
            ));
        }
        let (net, host) = match &r.host {
            Some(h) => match spec::parse_host(h.get_ref()).map_err(|m| loc.err(h, m))? {
                Host::Net(n) => (Some(n), None),
                Host::Name(n) => (None, Some(n)),
            },
            None => (None, None),
        };
        let mut spans: Vec<Option<PortSpan>> = Vec::new();
        if let Some(p) = &r.port {
            spans.push(Some(port_span(loc, p)?));
        }
        for p in r.ports.iter().flatten() {
            spans.push(Some(port_span(loc, p)?));
        }
        if spans.is_empty() {
            spans.push(None);
        }
        let errno = match &r.errno {
            Some(e) => Some(errno(loc, e)?),
            None => None,
        };
        let what = [
            r.category.as_ref().map(|c| c.get_ref().clone()),
            r.host.as_ref().map(|h| h.get_ref().clone()),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        for span in spans {
            let mut target = what.clone();
            if let Some(s) = span {
                target = if target.is_empty() {
                    format!("port {s}")
                } else {
                    format!("{target} port {s}")
                };
            }
            if target.is_empty() {
                target = "all".into();
            }
            policy.rules.push(RuleDef {
                category: r.category.as_ref().map(|c| c.get_ref().clone()),
                ports: span,
                net,
                host: host.clone(),
                tests: r.tests.as_ref().map(|t| t.get_ref().clone()),
                action,
                errno,
                label: format!("{} {target}, {file}:{line}", action.name()),
            });
        }
    }
    for f in parsed.fail_on.iter().flatten() {
        if !policy.has_category(f.get_ref()) {
            return Err(loc.err(
                f,
                format!(
                    "fail_on: unknown category `{}` ({})",
                    f.get_ref(),
                    super::names(policy)
                ),
            ));
        }
        if !policy.fail_on.contains(f.get_ref()) {
            policy.fail_on.push(f.get_ref().clone());
        }
        policy.note(&format!("fail_on {}", f.get_ref()), loc.origin(f));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin;
    use nettrap_core::addr::Dest;

    fn load(text: &str) -> Result<Policy> {
        let mut p = builtin::defaults();
        apply(&mut p, text, "nettrap.toml")?;
        Ok(p)
    }

    fn err(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn full_example() {
        let p = load(
            r#"
errno = "ENETUNREACH"
fail_on = ["external-api"]

[categories.payments]
ports = [8443, "9000-9010"]
hosts = ["10.20.0.0/16"]

[[rules]]
category = "elasticsearch"
action = "deny"

[[rules]]
category = "elasticsearch"
tests = "tests/integration/**"
action = "allow"
"#,
        )
        .unwrap();
        assert_eq!(p.default_errno, libc::ENETUNREACH);
        assert_eq!(p.fail_on, vec!["external-api"]);
        let c = p.compile().unwrap();
        let es = Dest::from_v4([127, 0, 0, 1], 9200);
        assert_eq!(
            c.decide(&es, Some(b"tests/unit/test_a.py::t"), None).action,
            Action::Deny
        );
        assert_eq!(
            c.decide(&es, Some(b"tests/integration/test_a.py::t"), None)
                .action,
            Action::Allow
        );
        let pay = c.classify(&Dest::from_v4([10, 20, 1, 1], 9005), None);
        assert_eq!(c.category_name(pay), b"payments");
        assert_eq!(c.classify(&Dest::from_v4([10, 21, 1, 1], 9005), None), 0);
        let label = c.rules()[1].label();
        assert_eq!(label, b"deny elasticsearch, nettrap.toml:9");
    }

    #[test]
    fn names_in_rules_and_categories() {
        let p = load(
            r#"
deny_dns = true
dns_errno = "eai_again"

[categories.search]
hosts = ["*.ES.internal.", "10.9.0.0/16"]

[[rules]]
host = "api.*.example"
port = 443
action = "deny"

[[rules]]
category = "search"
action = "allow"
"#,
        )
        .unwrap();
        assert!(p.deny_dns);
        let c = p.compile().unwrap();
        assert_eq!(c.dns_errno, libc::EAI_AGAIN);
        assert_ne!(c.flags & nettrap_core::policy::FLAG_DENY_DNS, 0);
        let any = Dest::from_v4([127, 0, 0, 3], 9200);
        let es = c.classify(&any, Some(b"n1.es.internal"));
        assert_eq!(c.category_name(es), b"search");
        assert_eq!(c.classify(&Dest::from_v4([10, 9, 1, 1], 9200), None), es);
        assert_eq!(c.classify(&any, None), 2); // elasticsearch, by port
        assert_eq!(
            c.decide(&any, None, Some(b"n1.es.internal")).action,
            Action::Allow
        );
        let pay = Dest::from_v4([127, 0, 0, 2], 443);
        let d = c.decide(&pay, None, Some(b"api.payments.example"));
        assert_eq!(d.action, Action::Deny);
        assert_eq!(
            c.rules()[d.rule as usize].label(),
            b"deny api.*.example port 443, nettrap.toml:8"
        );
        assert_eq!(c.decide(&pay, None, None).action, Action::Record);
        // --deny-dns, except the names the policy allows.
        assert!(c.decide_lookup(b"api.stripe.com", None).is_some());
        assert_eq!(c.decide_lookup(b"n1.es.internal", None), None);
    }

    #[test]
    fn errors_name_file_and_line() {
        assert_eq!(
            err("[[rules]]\naction = \"dney\"\n"),
            "nettrap.toml:2: unknown action `dney` (expected allow, record or deny)"
        );
        assert!(
            err("x = 1\n").starts_with("nettrap.toml:1: unknown field `x`"),
            "{}",
            err("x = 1\n")
        );
        assert!(
            err("\n\n[[rules]\n").starts_with("nettrap.toml:3: "),
            "{}",
            err("\n\n[[rules]\n")
        );
        assert!(
            err("[[rules]]\naction = \"deny\"\ncategory = \"elastic\"\n")
                .starts_with("nettrap.toml:3: unknown category `elastic`")
        );
        assert!(
            err("[categories.pay]\nports = [70000]\n")
                .starts_with("nettrap.toml:2: `70000` is not a port")
        );
        assert!(
            err("[[rules]]\naction = \"deny\"\nhost = \"api..stripe.com\"\n")
                .starts_with("nettrap.toml:3: `api..stripe.com` is not a host name")
        );
        assert!(err("[categories.x]\nhosts = [\"a b\"]\n").starts_with("nettrap.toml:2: `a b`"));
        assert!(
            err("dns_errno = \"EAI_MEMORY\"\n")
                .starts_with("nettrap.toml:1: `EAI_MEMORY` is not EAI_NONAME")
        );
        assert!(err("errno = \"EWHAT\"\n").starts_with("nettrap.toml:1: unknown errno"));
        // The file's own text, quoted in a message, keeps it one line.
        assert_eq!(
            err("[categories.\"a\\nb\"]\nports = [1]\n"),
            "nettrap.toml:1: `a\\nb` cannot name a category (reserved, empty, over 31 bytes, or \
             with control characters)"
        );
        assert_eq!(
            err("[[rules]]\naction = \"de\\u0007ny\"\n"),
            "nettrap.toml:2: unknown action `de\\u{7}ny` (expected allow, record or deny)"
        );
        assert!(
            err("[[rules]]\ncategory = \"redis\"\n")
                .starts_with("nettrap.toml:1: missing field `action`"),
            "{}",
            err("[[rules]]\ncategory = \"redis\"\n")
        );
    }

    /// Property tests: random, TOML-shaped and mutated input never panics, and every error is
    /// one line naming the file, and its line whenever the input has a place to point at.
    mod props {
        use super::*;
        use proptest::prelude::*;

        const EXAMPLE: &str = r#"errno = "ENETUNREACH"
fail_on = ["external-api"]

[categories.payments]
ports = [8443, "9000-9010"]
hosts = ["10.20.0.0/16"]

[[rules]]
category = "elasticsearch"
action = "deny"

[[rules]]
category = "elasticsearch"
tests = "tests/integration/**"
port = 9200
host = "::1"
errno = 13
action = "allow"
"#;

        fn check(text: &str) -> Result<(), TestCaseError> {
            let mut policy = builtin::defaults();
            match apply(&mut policy, text, "nettrap.toml") {
                Ok(()) => {
                    let _ = policy.compile();
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(!msg.contains(['\n', '\r']), "not one line: {msg:?}");
                    let rest = msg.strip_prefix("nettrap.toml");
                    prop_assert!(rest.is_some(), "does not name the file: {msg:?}");
                    let rest = rest.unwrap();
                    let digits = rest
                        .strip_prefix(':')
                        .map(|r| {
                            r.chars()
                                .take_while(char::is_ascii_digit)
                                .collect::<String>()
                        })
                        .unwrap_or_default();
                    prop_assert!(!digits.is_empty(), "no line number: {msg:?} for {text:?}");
                    let line: usize = digits.parse().unwrap();
                    let lines = text.split('\n').count();
                    prop_assert!(
                        (1..=lines).contains(&line),
                        "line {line} of {lines}: {msg:?}"
                    );
                    prop_assert!(rest[1 + digits.len()..].starts_with(": "), "{msg:?}");
                }
            }
            Ok(())
        }

        /// Lines made of the file's own keys, values and headers, right and wrong.
        fn tomlish() -> impl Strategy<Value = String> {
            let key = proptest::sample::select(
                &[
                    "errno",
                    "fail_on",
                    "ports",
                    "hosts",
                    "action",
                    "category",
                    "port",
                    "host",
                    "tests",
                    "x",
                    "\"a\\nb\"",
                    "",
                ][..],
            );
            let value = proptest::sample::select(
                &[
                    "\"deny\"",
                    "\"dney\"",
                    "\"allow\"",
                    "9200",
                    "70000",
                    "-1",
                    "\"8000-8100\"",
                    "\"9-1\"",
                    "[1, \"2-3\"]",
                    "[]",
                    "\"10.0.0.0/8\"",
                    "\"10.0.0.0/99\"",
                    "\"api.example.com\"",
                    "\"ECONNREFUSED\"",
                    "\"EWHAT\"",
                    "\"a\\nb\"",
                    "\"\\u0000\"",
                    "\"\"",
                    "true",
                    "{}",
                    "[",
                    "\"",
                    "1e3",
                    "[\"payments\", \"nope\"]",
                    "\"redis\"",
                    "\"tests/**\"",
                ][..],
            );
            let header = proptest::sample::select(
                &[
                    "[[rules]]",
                    "[categories.pay]",
                    "[categories.\"a\\nb\"]",
                    "[categories.other]",
                    "[categories.\"\"]",
                    "[categories]",
                    "[",
                    "[[rules]",
                    "[rules]",
                    "[x]",
                ][..],
            );
            let line = prop_oneof![
                (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
                header.prop_map(String::from),
                Just(String::new()),
                "[ -~]{0,12}",
            ];
            proptest::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
        }

        /// The example with a few random edits: a span deleted, random text inserted, a line
        /// duplicated.
        fn mutated() -> impl Strategy<Value = String> {
            let edit = (
                0usize..EXAMPLE.len(),
                0usize..20,
                "\\PC{0,6}|[\\[\\]\"=,\\n#{}.-]{0,4}",
                0u8..3,
            );
            proptest::collection::vec(edit, 1..4).prop_map(|edits| {
                let mut t = EXAMPLE.to_string();
                for (at, n, ins, kind) in edits {
                    let at = (0..=at.min(t.len()))
                        .rev()
                        .find(|&i| t.is_char_boundary(i))
                        .unwrap();
                    match kind {
                        0 => {
                            let end = (at + n..=t.len())
                                .find(|&i| t.is_char_boundary(i))
                                .unwrap_or(t.len());
                            t.replace_range(at..end, "");
                        }
                        1 => t.insert_str(at, &ins),
                        _ => {
                            let start = t[..at].rfind('\n').map_or(0, |i| i + 1);
                            let end = t[at..].find('\n').map_or(t.len(), |i| at + i + 1);
                            let dup = t[start..end].to_string();
                            t.insert_str(start, &dup);
                        }
                    }
                }
                t
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn any_text(text in "\\PC{0,200}|[ -~\\n]{0,200}") {
                check(&text)?;
            }

            #[test]
            fn toml_shaped_text(text in tomlish()) {
                check(&text)?;
            }

            #[test]
            fn mutated_example(text in mutated()) {
                check(&text)?;
            }
        }

        #[test]
        fn the_example_is_valid() {
            let mut policy = builtin::defaults();
            apply(&mut policy, EXAMPLE, "nettrap.toml").unwrap();
        }
    }
}
