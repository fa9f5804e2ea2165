//! Renderings of a report: the summary printed at the end of a run (text), the mocking to-do
//! list (Markdown), and `nettrap report FILE`.

use super::{CallEntry, OLDEST_SCHEMA, Report, SCHEMA_VERSION, plural};
use crate::cli::{Format, ReportArgs};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Counts come from a file that may have been edited by hand: never overflow.
fn saturating_sum(it: impl Iterator<Item = u64>) -> u64 {
    it.fold(0, u64::saturating_add)
}

fn dest(c: &CallEntry) -> String {
    if c.address.contains(':') {
        format!("[{}]:{}", c.address, c.port)
    } else {
        format!("{}:{}", c.address, c.port)
    }
}

/// Offending calls with their test (`None`: unattributed).
fn offending(r: &Report) -> impl Iterator<Item = (Option<&str>, &CallEntry)> {
    let attributed = r
        .tests
        .iter()
        .flat_map(|t| t.calls.iter().map(move |c| (Some(t.test.as_str()), c)));
    attributed
        .chain(r.unattributed.iter().map(|c| (None, c)))
        .filter(|(_, c)| c.offending())
}

fn verdicts(recorded: u64, denied: u64) -> String {
    match (recorded, denied) {
        (_, 0) => "recorded".into(),
        (0, _) => "denied".into(),
        (r, d) => format!("{d} denied, {r} recorded"),
    }
}

/// The summary: one line for the run, one per category, largest first.
pub fn summary(r: &Report) -> String {
    let mut cats: Vec<_> = r.categories.iter().filter(|(_, s)| s.calls > 0).collect();
    cats.sort_by(|a, b| (b.1.tests, b.1.calls, a.0).cmp(&(a.1.tests, a.1.calls, b.0)));
    let mut out = String::new();
    let scope = match r.tests_total {
        Some(total) => format!("{} of {total} tests", r.tests_with_calls),
        None => format!(
            "{} {} (total number of tests not known: no runner adapter reported them)",
            r.tests_with_calls,
            plural(r.tests_with_calls, "test", "tests")
        ),
    };
    if cats.is_empty() {
        let _ = writeln!(out, "nettrap: no external calls");
    } else {
        let n = cats.len() as u64;
        let _ = writeln!(
            out,
            "nettrap: {n} {} of external calls in {scope}",
            plural(n, "category", "categories")
        );
    }
    let ports: Vec<String> = cats
        .iter()
        .map(|(_, s)| {
            let p: Vec<String> = s.ports_seen.iter().map(|p| p.to_string()).collect();
            format!("({})", p.join(","))
        })
        .collect();
    let w_name = cats.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let w_ports = ports.iter().map(|p| p.len()).max().unwrap_or(0);
    for ((name, s), ports) in cats.iter().zip(&ports) {
        let tests = format!("{} {}", s.tests, plural(s.tests, "test", "tests"));
        let calls = format!("{} {}", s.calls, plural(s.calls, "call", "calls"));
        let _ = writeln!(
            out,
            "  {name:<w_name$} {ports:<w_ports$}  {tests:>9}  {calls:>10}  {}",
            verdicts(s.recorded, s.denied)
        );
    }
    let outside = saturating_sum(
        r.unattributed
            .iter()
            .filter(|c| c.offending())
            .map(|c| c.count),
    );
    if outside > 0 {
        let _ = writeln!(
            out,
            "  {outside} {} outside any test (unattributed)",
            plural(outside, "call", "calls")
        );
    }
    for e in &r.io_uring {
        let what = if e.verdict == "refused" {
            "refused with ENOSYS so it falls back to plain system calls"
        } else {
            "allowed: its network operations are not seen"
        };
        let _ = writeln!(
            out,
            "nettrap: warning: pid {} (`{}`) set up io_uring, {what}",
            e.process.pid, e.process.cmdline
        );
    }
    for why in &r.adapter_failures {
        let _ = writeln!(
            out,
            "nettrap: warning: {why}; its tests are attributed through NETTRAP_TEST only"
        );
    }
    if r.lost.dropped > 0 {
        let _ = writeln!(
            out,
            "nettrap: warning: {} calls not recorded: the event log was full, or its filesystem ({}) had no room",
            r.lost.dropped,
            std::env::temp_dir().display()
        );
    }
    if r.lost.torn > 0 {
        let _ = writeln!(
            out,
            "nettrap: warning: {} records cut short by a process that died while writing",
            r.lost.torn
        );
    }
    for (cause, &n) in &r.lost.unobserved.by_cause {
        let why = match cause.as_str() {
            "shim_unmapped" => "the shim could not map the run's files",
            "supervisor_unreadable" => "the supervisor could not read the caller's memory",
            _ => "for a reason this nettrap does not know",
        };
        let _ = writeln!(
            out,
            "nettrap: warning: {n} {} passed undecided and unrecorded ({cause}): {why}",
            plural(n, "call", "calls")
        );
    }
    if r.lost.handed_to_supervisor > 0 {
        let n = r.lost.handed_to_supervisor;
        let _ = writeln!(
            out,
            "nettrap: {n} {} passed on by shims that could not map the run's files, decided by the seccomp supervisor instead",
            plural(n, "call", "calls")
        );
    }
    if let Some(e) = &r.lost.log_error {
        let _ = writeln!(
            out,
            "nettrap: warning: the event log could not be read ({e}): the report holds no calls"
        );
    }
    if let Some(e) = &r.lost.supervisor_error {
        let _ = writeln!(
            out,
            "nettrap: warning: the seccomp supervisor stopped early ({e}): calls trapped after that failed with ENOSYS, unrecorded"
        );
    }
    for (reason, what) in [
        (
            "left_running",
            "warning: killed {} still running after the command exited",
        ),
        ("second_interrupt", "killed {} at the second interrupt"),
    ] {
        let killed: Vec<&super::KilledEntry> =
            r.killed.iter().filter(|k| k.reason == reason).collect();
        if killed.is_empty() {
            continue;
        }
        let n = killed.len() as u64;
        let mut list: Vec<String> = killed
            .iter()
            .take(KILLED_SHOWN)
            .map(|k| format!("{} `{}` ({})", k.pid, shorten(&k.cmdline, 60), k.signal))
            .collect();
        if killed.len() > KILLED_SHOWN {
            list.push(format!("and {} more", killed.len() - KILLED_SHOWN));
        }
        let what = what.replace("{}", &format!("{n} {}", plural(n, "process", "processes")));
        let _ = writeln!(out, "nettrap: {what}: {}", list.join(", "));
    }
    out
}

/// Killed processes the summary names; the report lists them all.
const KILLED_SHOWN: usize = 5;

/// `s` cut to at most `max` characters, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Where a call was made, as the to-do list shows it: `` `app/x.py:3 in f` (requests) ``.
fn site_label(c: &CallEntry) -> Option<String> {
    let site = c.site.as_deref()?;
    Some(match &c.library {
        Some(lib) => format!("`{site}` ({lib})"),
        None => format!("`{site}`"),
    })
}

/// The mocking to-do list: category, then destination, then call site (where the mock goes),
/// then tests; largest group first.
pub fn todo(r: &Report) -> String {
    // test -> (calls, phases)
    type Tests<'a> = BTreeMap<&'a str, (u64, BTreeMap<&'a str, u64>)>;
    // category -> destination -> call site (None: not known) -> tests
    type Sites<'a> = BTreeMap<Option<String>, Tests<'a>>;
    let mut groups: BTreeMap<&str, BTreeMap<String, Sites>> = BTreeMap::new();
    let mut outside = Vec::new();
    for (test, c) in offending(r) {
        match test {
            Some(t) => {
                let e = groups
                    .entry(&c.category)
                    .or_default()
                    .entry(dest(c))
                    .or_default()
                    .entry(site_label(c))
                    .or_default()
                    .entry(t)
                    .or_default();
                e.0 = e.0.saturating_add(c.count);
                let phase = e.1.entry(c.phase.as_deref().unwrap_or("-")).or_default();
                *phase = phase.saturating_add(c.count);
            }
            None => outside.push(c),
        }
    }
    let size = |tests: &Tests| -> (u64, u64) {
        (
            tests.len() as u64,
            saturating_sum(tests.values().map(|v| v.0)),
        )
    };
    let dest_size = |sites: &Sites| -> (u64, u64) {
        let tests: BTreeSet<&str> = sites.values().flat_map(|t| t.keys().copied()).collect();
        (
            tests.len() as u64,
            saturating_sum(sites.values().map(|t| size(t).1)),
        )
    };
    let mut out = String::from("# nettrap: mocking to-do list\n\n");
    let calls = saturating_sum(offending(r).map(|(_, c)| c.count));
    if calls == 0 {
        out.push_str("No test made a recorded or denied call: nothing to mock.\n");
        return out;
    }
    let scope = match r.tests_total {
        Some(total) => format!("{} of {total} tests", r.tests_with_calls),
        None => format!(
            "{} {}",
            r.tests_with_calls,
            plural(r.tests_with_calls, "test", "tests")
        ),
    };
    let _ = writeln!(
        out,
        "`{}`: {scope} made {calls} recorded or denied {}. Largest payoff first: mocking a group's\n\
         service takes every listed test off the network; the call site under a destination is\n\
         where the mock goes.\n",
        r.command.join(" "),
        plural(calls, "call", "calls"),
    );
    let mut cats: Vec<_> = groups.iter().collect();
    let cat_size = |d: &BTreeMap<String, Sites>| {
        let tests: BTreeSet<&str> = d
            .values()
            .flat_map(|s| s.values().flat_map(|t| t.keys().copied()))
            .collect();
        (
            tests.len() as u64,
            saturating_sum(d.values().map(|s| dest_size(s).1)),
        )
    };
    cats.sort_by(|a, b| (cat_size(b.1), a.0).cmp(&(cat_size(a.1), b.0)));
    let write_tests = |out: &mut String, tests: &Tests| {
        let mut tests: Vec<_> = tests.iter().collect();
        tests.sort_by(|a, b| (b.1.0, a.0).cmp(&(a.1.0, b.0)));
        for (test, (n, phases)) in tests {
            let mut phases: Vec<(&&str, &u64)> = phases.iter().collect();
            let rank = |p: &str| {
                ["setup", "call", "teardown"]
                    .iter()
                    .position(|x| *x == p)
                    .unwrap_or(3)
            };
            phases.sort_by_key(|(p, _)| rank(p));
            let phases: Vec<String> = phases.iter().map(|(p, k)| format!("{p} {k}")).collect();
            let _ = writeln!(
                out,
                "- [ ] `{test}`: {n} {} ({})",
                plural(*n, "call", "calls"),
                phases.join(", ")
            );
        }
    };
    for (cat, dests) in cats {
        let (t, c) = cat_size(dests);
        let _ = writeln!(
            out,
            "## {cat}: {t} {}, {c} {}\n",
            plural(t, "test", "tests"),
            plural(c, "call", "calls")
        );
        let mut dests: Vec<_> = dests.iter().collect();
        dests.sort_by(|a, b| (dest_size(b.1), a.0).cmp(&(dest_size(a.1), b.0)));
        for (d, sites) in dests {
            let (t, c) = dest_size(sites);
            let _ = writeln!(
                out,
                "### {d}: {t} {}, {c} {}\n",
                plural(t, "test", "tests"),
                plural(c, "call", "calls")
            );
            if sites.len() == 1 && sites.contains_key(&None) {
                write_tests(&mut out, &sites[&None]);
                out.push('\n');
                continue;
            }
            let mut sites: Vec<_> = sites.iter().collect();
            sites.sort_by(|a, b| (size(b.1), a.0).cmp(&(size(a.1), b.0)));
            for (site, tests) in sites {
                let (t, c) = size(tests);
                let _ = writeln!(
                    out,
                    "#### {}: {t} {}, {c} {}\n",
                    site.as_deref().unwrap_or("call site not known"),
                    plural(t, "test", "tests"),
                    plural(c, "call", "calls")
                );
                write_tests(&mut out, tests);
                out.push('\n');
            }
        }
    }
    if !outside.is_empty() {
        out.push_str(
            "## Outside any test\n\nMade at import, during collection or by session-wide fixtures: mock them where\n\
             the module or fixture makes the call.\n\n",
        );
        for c in outside {
            let at = site_label(c)
                .map(|s| format!(" at {s}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "- [ ] {} ({}): {} {} from pid {} `{}`{at}",
                dest(c),
                c.category,
                c.count,
                plural(c.count, "call", "calls"),
                c.process.pid,
                c.process.cmdline
            );
        }
    }
    out
}

/// Reads a saved report, checking that it is one.
pub fn load(path: &std::path::Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!("{}:{}: not a nettrap report: {e}", path.display(), e.line())
    })?;
    match value.get("schema_version").and_then(|v| v.as_u64()) {
        Some(v) if (OLDEST_SCHEMA as u64..=SCHEMA_VERSION as u64).contains(&v) => {}
        Some(v) => bail!(
            "{}: report schema version {v} is not supported (this nettrap reads {OLDEST_SCHEMA} to {SCHEMA_VERSION})",
            path.display()
        ),
        None => bail!(
            "{}: not a nettrap report (no schema_version)",
            path.display()
        ),
    }
    serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("{}: not a nettrap report: {e}", path.display()))
}

/// `nettrap report FILE [--format text|json|markdown]`
pub fn report_command(args: ReportArgs) -> Result<u8> {
    let report = load(&args.file)?;
    let out = match args.format {
        Format::Text => summary(&report),
        Format::Markdown => todo(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
    };
    // A closed pipe (`| head`) ends the output quietly.
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(0)
}
