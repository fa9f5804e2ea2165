//! JUnit XML: a JUnit of nettrap's own (one `testsuite` "nettrap", one `testcase` per test with
//! its outcome and duration), or the runner's own JUnit with nettrap's findings added to the
//! test cases that made offending calls. Either way an offending test case carries
//! `<properties>` (`nettrap.calls`, `nettrap.categories`, `nettrap.time_at_stake_s`, one
//! `nettrap.call` per group of calls) and `<system-err>` lines, which CI test views show.
//!
//! Test ids map to JUnit's `classname` and `name` as the runners write them: pytest's
//! `path/test_x.py::TestC::test_y` is classname `path.test_x.TestC`, name `test_y`; a dotted id
//! (unittest, Django: `tests.test_x.C.test_y`; Maven: `com.example.SearchTest.pages(int)[1]`)
//! splits at its last dot before any parameters.

use super::{CallEntry, Report, TestEntry, render};
use anyhow::{Context, Result, bail};
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, Writer};
use std::collections::HashMap;
use std::fmt::Write as _;

fn esc(s: &str) -> String {
    // Characters XML 1.0 cannot hold at all are dropped.
    let clean: String = s
        .chars()
        .filter(|&c| matches!(c, '\t' | '\n' | '\r') || c >= ' ')
        .collect();
    quick_xml::escape::escape(clean.as_str()).into_owned()
}

/// (classname, name) of a test id, as the runners write them in their JUnit.
pub fn case_key(id: &str) -> (String, String) {
    if let Some((file, rest)) = id.split_once("::") {
        let module = file
            .strip_suffix(".py")
            .unwrap_or(file)
            .replace(['/', '\\'], ".");
        // Parameters (`test_y[a::b]`) may hold anything.
        let (head, params) = rest.split_at(rest.find('[').unwrap_or(rest.len()));
        let mut parts: Vec<&str> = head.split("::").collect();
        let name = format!("{}{params}", parts.pop().unwrap_or_default());
        let mut class = vec![module.as_str()];
        class.extend(parts);
        return (class.join("."), name);
    }
    // A dotted id, unless the dot is inside parameters (`test_x[1.5]`) or a Java method's
    // parameter types (Surefire's `com.example.T.pages(java.lang.String)[1]`).
    let head = id.split(['[', '(']).next().unwrap_or(id);
    match head.rfind('.') {
        Some(i) => (id[..i].to_string(), id[i + 1..].to_string()),
        None => (String::new(), id.to_string()),
    }
}

/// One line per group of offending calls: `denied connect to 127.0.0.1:9200 (elasticsearch)
/// x2 in call at app/es.py:4 in get (rule: deny elasticsearch)`.
pub fn call_line(c: &CallEntry) -> String {
    let mut s = format!(
        "{} {} to {} ({})",
        c.verdict,
        c.syscall,
        render::dest(c),
        c.category
    );
    if c.count > 1 {
        let _ = write!(s, " x{}", c.count);
    }
    if let Some(p) = &c.phase {
        let _ = write!(s, " in {p}");
    }
    if let Some(f) = &c.fixture {
        let _ = write!(s, " of fixture {f}");
    }
    if let Some(site) = &c.site {
        let _ = write!(s, " at {site}");
    }
    let _ = write!(s, " (rule: {})", c.rule);
    s
}

/// `<properties>` entries and `<system-err>` text for one test; `None` when it made no
/// offending call.
fn findings(t: &TestEntry) -> Option<(String, String)> {
    let calls: Vec<&CallEntry> = t.calls.iter().filter(|c| c.offending()).collect();
    if calls.is_empty() {
        return None;
    }
    let total = calls.iter().fold(0u64, |n, c| n.saturating_add(c.count));
    let mut categories: Vec<&str> = calls.iter().map(|c| c.category.as_str()).collect();
    categories.sort_unstable();
    categories.dedup();
    let mut props = String::new();
    let mut prop = |name: &str, value: &str| {
        let _ = writeln!(
            props,
            "        <property name=\"{}\" value=\"{}\"/>",
            esc(name),
            esc(value)
        );
    };
    prop("nettrap.calls", &total.to_string());
    prop("nettrap.categories", &categories.join(","));
    prop(
        "nettrap.time_at_stake_s",
        &format!("{}", t.payoff.time_at_stake_s),
    );
    let mut err = String::new();
    for c in &calls {
        let line = call_line(c);
        prop("nettrap.call", &line);
        let _ = writeln!(err, "nettrap: {line}");
    }
    Some((props, err))
}

fn seconds(d: Option<f64>) -> String {
    format!(
        "{:.6}",
        d.filter(|d| d.is_finite() && *d >= 0.0).unwrap_or(0.0)
    )
}

/// A JUnit of nettrap's own.
pub fn own(r: &Report) -> String {
    let count = |o: &[&str]| {
        r.tests
            .iter()
            .filter(|t| t.outcome.as_deref().is_some_and(|x| o.contains(&x)))
            .count()
    };
    // A test that passed but made a call that fails the run (denied, or `--fail-on`) is a
    // failure here: the test swallowed what the policy refused, and CI views should show it.
    let violated = |t: &TestEntry| {
        !matches!(t.outcome.as_deref(), Some("failed" | "error"))
            && t.calls.iter().any(|c| super::fails_run(r, c))
    };
    let (failures, errors, skipped) = (
        count(&["failed"]) + r.tests.iter().filter(|t| violated(t)).count(),
        count(&["error"]),
        count(&["skipped", "xfailed"])
            - r.tests
                .iter()
                .filter(|t| {
                    violated(t) && matches!(t.outcome.as_deref(), Some("skipped" | "xfailed"))
                })
                .count(),
    );
    let time = seconds(Some(r.payoff.suite_time_s));
    let n = r.tests.len();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"nettrap\" tests=\"{n}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time}\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"nettrap\" tests=\"{n}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time}\">"
    );
    let _ = writeln!(
        out,
        "    <properties>\n      <property name=\"nettrap.command\" value=\"{}\"/>\n      <property name=\"nettrap.exit_code\" value=\"{}\"/>\n    </properties>",
        esc(&r.command.join(" ")),
        r.exit_code
    );
    for t in &r.tests {
        let (class, name) = case_key(&t.test);
        let _ = writeln!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\">",
            esc(&class),
            esc(&name),
            seconds(t.duration_s)
        );
        let found = findings(t);
        if let Some((props, _)) = &found {
            // Indented one level deeper than in a merge.
            let _ = write!(out, "      <properties>\n{props}      </properties>\n");
        }
        match t.outcome.as_deref() {
            _ if violated(t) => out.push_str(
                "      <failure message=\"nettrap: policy violated\" type=\"nettrap\"/>\n",
            ),
            Some("failed") => out.push_str("      <failure message=\"failed\"/>\n"),
            Some("error") => out.push_str("      <error message=\"error\"/>\n"),
            Some("skipped" | "xfailed") => out.push_str("      <skipped/>\n"),
            _ => {}
        }
        if let Some((_, err)) = &found {
            let _ = writeln!(out, "      <system-err>{}</system-err>", esc(err));
        }
        out.push_str("    </testcase>\n");
    }
    let outside: Vec<String> = r
        .unattributed
        .iter()
        .filter(|c| c.offending())
        .map(|c| format!("nettrap: outside any test: {}\n", call_line(c)))
        .collect();
    if !outside.is_empty() {
        let _ = writeln!(
            out,
            "    <system-err>{}</system-err>",
            esc(&outside.concat())
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn attr(e: &BytesStart, key: &[u8]) -> Result<Option<String>> {
    for a in e.attributes() {
        let a = a?;
        if a.key.as_ref() == key {
            return Ok(Some(a.unescape_value()?.into_owned()));
        }
    }
    Ok(None)
}

/// Adds nettrap's findings to the runner's JUnit `xml`; test cases that match no test of the
/// report are left as they were.
pub fn merge(r: &Report, xml: &[u8]) -> Result<String> {
    let mut by_key: HashMap<(String, String), (String, String)> = HashMap::new();
    let mut by_id: HashMap<&str, (String, String)> = HashMap::new();
    for t in &r.tests {
        if let Some(f) = findings(t) {
            by_key.insert(case_key(&t.test), f.clone());
            by_id.insert(&t.test, f);
        }
    }
    let find = |e: &BytesStart| -> Result<Option<(String, String)>> {
        let class = attr(e, b"classname")?.unwrap_or_default();
        let name = attr(e, b"name")?.unwrap_or_default();
        Ok(by_key
            .get(&(class, name.clone()))
            .or_else(|| by_id.get(name.as_str()))
            .cloned())
    };
    let mut reader = Reader::from_reader(xml);
    let mut w = Writer::new(Vec::new());
    // The events of a matched test case, until its end.
    let mut case: Option<(Vec<Event<'static>>, (String, String))> = None;
    loop {
        let ev = reader
            .read_event()
            .with_context(|| format!("not JUnit XML (at byte {})", reader.error_position()))?;
        match ev {
            Event::Eof => break,
            Event::Start(e) if case.is_none() && e.name().as_ref() == b"testcase" => {
                match find(&e)? {
                    Some(f) => case = Some((vec![Event::Start(e.into_owned())], f)),
                    None => w.write_event(Event::Start(e))?,
                }
            }
            Event::Empty(e) if case.is_none() && e.name().as_ref() == b"testcase" => {
                match find(&e)? {
                    Some(f) => {
                        let end = e.to_end().into_owned();
                        flush(
                            &mut w,
                            vec![Event::Start(e.into_owned()), Event::End(end)],
                            &f,
                        )?;
                    }
                    None => w.write_event(Event::Empty(e))?,
                }
            }
            ev => match &mut case {
                Some((events, _)) => {
                    let end = matches!(&ev, Event::End(e) if e.name().as_ref() == b"testcase");
                    events.push(ev.into_owned());
                    if end && let Some((events, f)) = case.take() {
                        flush(&mut w, events, &f)?;
                    }
                }
                None => w.write_event(ev)?,
            },
        }
    }
    if case.is_some() {
        bail!("not JUnit XML: a testcase is not closed");
    }
    // A file without test cases (no tests collected, an empty shard) has nothing to add the
    // findings to, and comes out as it went in.
    String::from_utf8(w.into_inner()).context("not UTF-8")
}

/// Writes one matched test case with `(properties, system-err text)` added: into its own
/// `<properties>` and `<system-err>` when it has them, else as new ones.
fn flush(
    w: &mut Writer<Vec<u8>>,
    events: Vec<Event<'static>>,
    (props, err): &(String, String),
) -> Result<()> {
    let is = |e: &Event, name: &[u8]| match e {
        Event::Start(s) | Event::Empty(s) => s.name().as_ref() == name,
        _ => false,
    };
    let has_props = events.iter().any(|e| is(e, b"properties"));
    let has_err = events.iter().any(|e| is(e, b"system-err"));
    let last = events.len().saturating_sub(1);
    let mut depth = 0usize;
    let mut err_done = false;
    for (i, ev) in events.into_iter().enumerate() {
        let top = depth == 1;
        match &ev {
            Event::Start(_) => depth += 1,
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        if i == last {
            if !has_err {
                w.get_mut()
                    .extend_from_slice(format!("<system-err>{}</system-err>", esc(err)).as_bytes());
            }
            w.write_event(ev)?;
            continue;
        }
        match &ev {
            Event::Empty(s) if top && s.name().as_ref() == b"properties" => {
                w.get_mut()
                    .extend_from_slice(format!("<properties>\n{props}</properties>").as_bytes());
                continue;
            }
            Event::Empty(s) if top && !err_done && s.name().as_ref() == b"system-err" => {
                err_done = true;
                w.get_mut()
                    .extend_from_slice(format!("<system-err>{}</system-err>", esc(err)).as_bytes());
                continue;
            }
            Event::End(s) if depth == 1 && !err_done && s.name().as_ref() == b"system-err" => {
                err_done = true;
                w.get_mut()
                    .extend_from_slice(format!("\n{}", esc(err)).as_bytes());
            }
            _ => {}
        }
        let start_props =
            top && matches!(&ev, Event::Start(s) if s.name().as_ref() == b"properties");
        w.write_event(ev)?;
        if i == 0 && !has_props {
            w.get_mut()
                .extend_from_slice(format!("<properties>\n{props}</properties>").as_bytes());
        }
        if start_props {
            w.get_mut()
                .extend_from_slice(format!("\n{props}").as_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ids_map_to_classname_and_name() {
        let k = |id: &str| case_key(id);
        assert_eq!(
            k("tests/test_x.py::test_y"),
            ("tests.test_x".into(), "test_y".into())
        );
        assert_eq!(
            k("a/b/test_x.py::TestC::test_y[1.5-a::b]"),
            ("a.b.test_x.TestC".into(), "test_y[1.5-a::b]".into())
        );
        assert_eq!(
            k("tests.test_cache.CacheTests.test_get"),
            ("tests.test_cache.CacheTests".into(), "test_get".into())
        );
        assert_eq!(k("TestSearch"), (String::new(), "TestSearch".into()));
        // the Maven adapter's ids: Surefire's classname and case name
        assert_eq!(
            k("com.example.A$Inner.pages(java.lang.String)[1]"),
            (
                "com.example.A$Inner".into(),
                "pages(java.lang.String)[1]".into()
            )
        );
        assert_eq!(
            k("com.example.SearchTest.indexes"),
            ("com.example.SearchTest".into(), "indexes".into())
        );
    }
}
