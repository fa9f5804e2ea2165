//! Renderings of a report: the summary printed at the end of a run (text), the mocking to-do
//! list (Markdown), and `nettrap report FILE`.

use super::{CallEntry, IN_SUITE, OLDEST_SCHEMA, Report, SCHEMA_VERSION, plural};
use crate::cli::ReportArgs;
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

/// Counts come from a file that may have been edited by hand: never overflow.
fn saturating_sum(it: impl Iterator<Item = u64>) -> u64 {
    it.fold(0, u64::saturating_add)
}

/// `10.2.3.4:443`, `[::1]:443`.
fn addr_port(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// How one call's destination is shown: `api.stripe.com:443 (10.2.3.4)` when the name is
/// known, the address alone otherwise; a lookup as `dns lookup of api.stripe.com`.
pub fn dest(c: &CallEntry) -> String {
    if c.lookup() {
        return match c.name() {
            Some(n) => format!("dns lookup of {n}"),
            None if c
                .address
                .parse::<IpAddr>()
                .is_ok_and(|a| a.is_unspecified()) =>
            {
                "dns lookup (name not known)".into()
            }
            None => format!(
                "dns lookup (name not known) via {}",
                addr_port(&c.address, c.port)
            ),
        };
    }
    match c.name() {
        Some(n) => format!("{n}:{} ({})", c.port, c.address),
        None => addr_port(&c.address, c.port),
    }
}

/// At most `max` items, then `+N more`.
fn capped(items: &[String], max: usize, sep: &str) -> String {
    let mut out = items[..items.len().min(max)].join(sep);
    if items.len() > max {
        let _ = write!(out, " +{} more", items.len() - max);
    }
    out
}

/// Ports and addresses shown per summary row or service, at most.
const SHOWN: usize = 3;

/// What the summary and the to-do list group calls by: the name the program used (its lookups
/// and its calls to every address the name led to), else the destination.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Service {
    Name(String),
    Dest(String),
}

impl Service {
    fn of(c: &CallEntry) -> Service {
        match c.name() {
            Some(n) => Service::Name(n.to_string()),
            None => Service::Dest(dest(c)),
        }
    }
}

/// Calls to one service (in one category), for the summary and the to-do list.
#[derive(Default)]
struct Tally<'a> {
    /// Ports and addresses its calls (not its lookups) went to.
    ports: BTreeSet<u16>,
    addresses: Vec<&'a str>,
    lookups: u64,
    lookups_denied: u64,
    calls: u64,
    denied: u64,
    served: u64,
    tests: BTreeSet<&'a str>,
}

impl<'a> Tally<'a> {
    fn add(&mut self, test: Option<&'a str>, c: &'a CallEntry) {
        let denied = if c.verdict == "denied" { c.count } else { 0 };
        if c.lookup() {
            self.lookups = self.lookups.saturating_add(c.count);
            self.lookups_denied = self.lookups_denied.saturating_add(denied);
        } else {
            self.calls = self.calls.saturating_add(c.count);
            self.ports.insert(c.port);
            if !self.addresses.contains(&c.address.as_str()) {
                self.addresses.push(&c.address);
            }
        }
        self.denied = self.denied.saturating_add(denied);
        if c.served_by_suite {
            self.served = self.served.saturating_add(c.count);
        }
        if let Some(t) = test {
            self.tests.insert(t);
        }
    }

    fn total(&self) -> u64 {
        self.lookups.saturating_add(self.calls)
    }

    /// How the service is shown: `api.x:443 (10.0.0.1, 10.0.0.2)`, `dns lookup of api.x`, or
    /// the destination.
    fn label(&self, service: &Service) -> String {
        match service {
            Service::Dest(d) => d.clone(),
            Service::Name(n) if self.calls == 0 => format!("dns lookup of {n}"),
            Service::Name(n) => {
                let ports: Vec<String> = self.ports.iter().map(|p| p.to_string()).collect();
                let mut addresses = self.addresses.clone();
                addresses.sort_by_key(|a| (a.parse::<IpAddr>().ok(), *a));
                let addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
                format!(
                    "{n}:{} ({})",
                    capped(&ports, SHOWN, ","),
                    capped(&addresses, SHOWN, ", ")
                )
            }
        }
    }
}

/// ` (served by the suite)`, ` (2 served by the suite)` or nothing.
fn served(served: u64, total: u64) -> String {
    match served {
        0 => String::new(),
        s if s >= total => " (served by the suite)".into(),
        s => format!(" ({s} served by the suite)"),
    }
}

/// `3 tests, 1 lookup, 4 calls`: lookups and calls, each when there are any.
fn counts(tests: u64, lookups: u64, calls: u64) -> String {
    let mut parts = vec![format!("{tests} {}", plural(tests, "test", "tests"))];
    if lookups > 0 {
        parts.push(format!(
            "{lookups} {}",
            plural(lookups, "lookup", "lookups")
        ));
    }
    if calls > 0 || lookups == 0 {
        parts.push(format!("{calls} {}", plural(calls, "call", "calls")));
    }
    parts.join(", ")
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
    let mut cats: Vec<_> = r
        .categories
        .iter()
        .filter(|(n, s)| s.calls > 0 && n.as_str() != IN_SUITE)
        .collect();
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
    // category -> service -> its calls: the names behind each row.
    let mut services: BTreeMap<&str, BTreeMap<Service, Tally>> = BTreeMap::new();
    for (test, c) in offending(r) {
        services
            .entry(&c.category)
            .or_default()
            .entry(Service::of(c))
            .or_default()
            .add(test, c);
    }
    let ports: Vec<String> = cats
        .iter()
        .map(|(_, s)| {
            let p: Vec<String> = s.ports_seen.iter().map(|p| p.to_string()).collect();
            format!("({})", capped(&p, SHOWN, ","))
        })
        .collect();
    let w_name = cats.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let w_ports = ports.iter().map(|p| p.len()).max().unwrap_or(0);
    for ((name, s), ports) in cats.iter().zip(&ports) {
        let tests = format!("{} {}", s.tests, plural(s.tests, "test", "tests"));
        let calls = format!("{} {}", s.calls, plural(s.calls, "call", "calls"));
        let list = services.get(name.as_str());
        let by_suite = list.map_or(0, |l| saturating_sum(l.values().map(|t| t.served)));
        let _ = writeln!(
            out,
            "  {name:<w_name$} {ports:<w_ports$}  {tests:>9}  {calls:>10}  {}{}",
            verdicts(s.recorded, s.denied),
            served(by_suite, s.calls)
        );
        // The services behind the row, when names are known: largest first, a few.
        let Some(list) = list.filter(|l| l.keys().any(|k| matches!(k, Service::Name(_)))) else {
            continue;
        };
        let mut list: Vec<_> = list.iter().collect();
        list.sort_by(|a, b| {
            (b.1.tests.len(), b.1.total(), a.0).cmp(&(a.1.tests.len(), a.1.total(), b.0))
        });
        for (service, t) in list.iter().take(SHOWN) {
            let n = t.tests.len() as u64;
            let total = t.total();
            let what = if t.calls == 0 {
                plural(total, "lookup", "lookups")
            } else {
                plural(total, "call", "calls")
            };
            let denied = match t.denied {
                0 => String::new(),
                d if d >= total => ", denied".into(),
                d => format!(", {d} denied"),
            };
            let tests = match n {
                0 => String::new(),
                n => format!("{n} {}, ", plural(n, "test", "tests")),
            };
            let outside = if n == 0 { " outside any test" } else { "" };
            let _ = writeln!(
                out,
                "    {}: {tests}{total} {what}{outside}{denied}{}",
                t.label(service),
                served(t.served, total)
            );
        }
        if list.len() > SHOWN {
            let _ = writeln!(out, "    +{} more", list.len() - SHOWN);
        }
    }
    let in_suite = saturating_sum(
        r.tests
            .iter()
            .flat_map(|t| &t.calls)
            .chain(&r.unattributed)
            .filter(|c| c.category == IN_SUITE)
            .map(|c| c.count),
    );
    if in_suite > 0 {
        let _ = writeln!(
            out,
            "  {in_suite} {} to the suite's own servers (in-suite), not external",
            plural(in_suite, "call", "calls")
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
    if let Some(b) = &r.baseline {
        out.push_str(&b.summary());
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

/// `s` as one Markdown code span whatever it holds: line breaks become spaces (a span is one
/// line of the list), and the fence is one backtick longer than the longest run inside it
/// (padded with a space where `s` starts or ends with one), so a test id or command line with
/// backticks cannot end the span early.
fn code(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// Where a call was made, as the to-do list shows it: `` `app/x.py:3 in f` (requests) ``.
fn site_label(c: &CallEntry) -> Option<String> {
    let site = code(c.site.as_deref()?);
    Some(match &c.library {
        Some(lib) => format!("{site} ({lib})"),
        None => site,
    })
}

/// One test's calls under a to-do item: its lookups first, then its calls.
#[derive(Default)]
struct TestCalls<'a> {
    lookups: u64,
    lookups_denied: u64,
    calls: u64,
    phases: BTreeMap<&'a str, u64>,
    /// The shared fixtures whose set-up or teardown made them, as the JSON names them.
    fixtures: BTreeSet<&'a str>,
}

impl TestCalls<'_> {
    fn total(&self) -> u64 {
        self.lookups.saturating_add(self.calls)
    }
}

/// One item of the to-do list: a service (a name with its lookups and every address it led to,
/// or one destination) in a category, its calls by call site (None: not known) and test.
#[derive(Default)]
struct Item<'a> {
    tally: Tally<'a>,
    sites: BTreeMap<Option<String>, BTreeMap<&'a str, TestCalls<'a>>>,
}

/// `3 tests, 1 lookup, 4 calls` for some tests' calls.
fn tests_counts<'a>(tests: impl Iterator<Item = (&'a str, &'a TestCalls<'a>)>) -> (u64, u64, u64) {
    let (mut names, mut lookups, mut calls) = (BTreeSet::new(), 0u64, 0u64);
    for (t, c) in tests {
        names.insert(t);
        lookups = lookups.saturating_add(c.lookups);
        calls = calls.saturating_add(c.calls);
    }
    (names.len() as u64, lookups, calls)
}

/// The mocking to-do list: category, then service (a name: what to mock, its lookups and its
/// calls to every address; or a destination), then call site (where the mock goes), then
/// tests; largest group first. A test's lookups of a name go with its calls to that name.
pub fn todo(r: &Report) -> String {
    // The category a name's lookups are listed under: that of the name's calls (the one with
    // most calls), so the lookup and the call are mocked together; `dns` when none followed.
    let mut homes: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for (_, c) in offending(r).filter(|(t, c)| t.is_some() && !c.lookup()) {
        if let Some(n) = c.name() {
            let e = homes.entry(n).or_default().entry(&c.category).or_default();
            *e = e.saturating_add(c.count);
        }
    }
    let home = |n: &str| -> Option<&str> {
        let cats = homes.get(n)?;
        cats.iter()
            .max_by(|a, b| (a.1, b.0).cmp(&(b.1, a.0)))
            .map(|(c, _)| *c)
    };
    let mut groups: BTreeMap<&str, BTreeMap<Service, Item>> = BTreeMap::new();
    let mut outside = Vec::new();
    for (test, c) in offending(r) {
        let Some(t) = test else {
            outside.push(c);
            continue;
        };
        let category = match c.name() {
            Some(n) if c.lookup() => home(n).unwrap_or(&c.category),
            _ => &c.category,
        };
        let item = groups
            .entry(category)
            .or_default()
            .entry(Service::of(c))
            .or_default();
        item.tally.add(test, c);
        let e = item
            .sites
            .entry(site_label(c))
            .or_default()
            .entry(t)
            .or_default();
        if c.lookup() {
            e.lookups = e.lookups.saturating_add(c.count);
            if c.verdict == "denied" {
                e.lookups_denied = e.lookups_denied.saturating_add(c.count);
            }
        } else {
            e.calls = e.calls.saturating_add(c.count);
        }
        let phase = e
            .phases
            .entry(c.phase.as_deref().unwrap_or("-"))
            .or_default();
        *phase = phase.saturating_add(c.count);
        if let Some(f) = c.fixture.as_deref() {
            e.fixtures.insert(f);
        }
    }
    // Every category the summary and the JSON list has a section, with their numbers (see
    // `payoff`): one that only calls outside any test made included.
    for (name, s) in &r.categories {
        if s.calls > 0 && name != IN_SUITE {
            groups.entry(name.as_str()).or_default();
        }
    }
    // Lookups listed under the category of the calls they led to: (from, to) -> count.
    let mut moved: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (_, c) in offending(r).filter(|(t, c)| t.is_some() && c.lookup()) {
        if let Some(to) = c.name().and_then(home)
            && to != c.category
        {
            let e = moved.entry((c.category.as_str(), to)).or_default();
            *e = e.saturating_add(c.count);
        }
    }
    let durations: BTreeMap<&str, f64> = r
        .tests
        .iter()
        .map(|t| {
            (
                t.test.as_str(),
                t.duration_s.filter(|d| *d > 0.0).unwrap_or(0.0),
            )
        })
        .collect();
    let stake = |tests: &BTreeSet<&str>| -> f64 {
        tests
            .iter()
            .filter_map(|t| durations.get(t))
            .fold(0.0, |a, b| a + b)
    };
    let cat_stake = |name: &str| {
        r.categories
            .get(name)
            .map_or(0.0, |s| s.payoff.time_at_stake_s)
    };
    let item_size = |i: &Item| -> (u64, u64) { (i.tally.tests.len() as u64, i.tally.total()) };
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
        "{}: {scope} made {calls} recorded or denied {}. Largest payoff first: mocking a group's\n\
         service takes every listed test off the network; the call site under a destination is\n\
         where the mock goes.\n\n{}\n",
        code(&r.command.join(" ")),
        plural(calls, "call", "calls"),
        super::payoff::headline(r),
    );
    let cat_size = |items: &BTreeMap<Service, Item>| -> (u64, u64, u64) {
        let mut all = items.values().flat_map(|i| {
            i.sites
                .values()
                .flat_map(|tests| tests.iter().map(|(t, c)| (*t, c)))
        });
        tests_counts(&mut all)
    };
    let mut cats: Vec<_> = groups.iter().collect();
    cats.sort_by(|a, b| {
        let (sa, sb) = (cat_size(a.1), cat_size(b.1));
        cat_stake(b.0)
            .total_cmp(&cat_stake(a.0))
            .then(((sb.0, sb.1 + sb.2), a.0).cmp(&((sa.0, sa.1 + sa.2), b.0)))
    });
    let write_tests = |out: &mut String, tests: &BTreeMap<&str, TestCalls>| {
        let mut tests: Vec<_> = tests.iter().collect();
        tests.sort_by(|a, b| (b.1.total(), a.0).cmp(&(a.1.total(), b.0)));
        for (test, c) in tests {
            let mut phases: Vec<(&&str, &u64)> = c.phases.iter().collect();
            let rank = |p: &str| {
                ["setup", "call", "teardown"]
                    .iter()
                    .position(|x| *x == p)
                    .unwrap_or(3)
            };
            phases.sort_by_key(|(p, _)| rank(p));
            let mut phases: Vec<String> = phases.iter().map(|(p, k)| format!("{p} {k}")).collect();
            if !c.fixtures.is_empty() {
                let f: Vec<String> = c.fixtures.iter().map(|f| code(f)).collect();
                phases.push(format!(
                    "{} {}",
                    plural(f.len() as u64, "fixture", "fixtures"),
                    f.join(", ")
                ));
            }
            let mut what = Vec::new();
            if c.lookups > 0 {
                let n = c.lookups;
                what.push(match c.lookups_denied {
                    0 => format!("{n} {}", plural(n, "lookup", "lookups")),
                    d if d >= n => format!("{n} denied {}", plural(n, "lookup", "lookups")),
                    d => format!("{n} {} ({d} denied)", plural(n, "lookup", "lookups")),
                });
            }
            if c.calls > 0 {
                what.push(format!("{} {}", c.calls, plural(c.calls, "call", "calls")));
            }
            let _ = writeln!(
                out,
                "- [ ] {}: {} ({})",
                code(test),
                what.join(", then "),
                phases.join(", ")
            );
        }
    };
    for (cat, items) in cats {
        // The category's own numbers, as the summary and the JSON give them.
        let model = r.categories.get(*cat).cloned().unwrap_or_default();
        let mut notes = Vec::new();
        if model.unattributed > 0 {
            notes.push(format!("{} outside any test", model.unattributed));
        }
        for ((from, to), n) in &moved {
            if from == cat {
                notes.push(format!(
                    "{n} {} listed under {to} with the calls {} led to",
                    plural(*n, "lookup", "lookups"),
                    plural(*n, "it", "they")
                ));
            } else if to == cat {
                notes.push(format!(
                    "and {n} {from} {} that led to them",
                    plural(*n, "lookup", "lookups")
                ));
            }
        }
        let mut heading = format!(
            "{} {}, {} {}",
            model.tests,
            plural(model.tests, "test", "tests"),
            model.calls,
            plural(model.calls, "call", "calls")
        );
        if let Some(share) = model.payoff.share_of_suite.filter(|s| *s > 0.0) {
            let _ = write!(
                heading,
                ", {} of suite time ({})",
                super::payoff::percent(share),
                super::payoff::seconds(model.payoff.time_at_stake_s)
            );
        }
        if !notes.is_empty() {
            let _ = write!(heading, " ({})", notes.join("; "));
        }
        let _ = writeln!(out, "## {cat}: {heading}\n");
        if items.is_empty() {
            out.push_str("Only outside any test: see below.\n\n");
        }
        let mut items: Vec<_> = items.iter().collect();
        items.sort_by(|a, b| {
            stake(&b.1.tally.tests)
                .total_cmp(&stake(&a.1.tally.tests))
                .then((item_size(b.1), a.0).cmp(&(item_size(a.1), b.0)))
        });
        for (service, item) in items {
            let tally = &item.tally;
            let heading = match service {
                Service::Name(n) if tally.calls > 0 => n.clone(),
                _ => tally.label(service),
            };
            let _ = writeln!(
                out,
                "### {heading}: {}{}\n",
                counts(tally.tests.len() as u64, tally.lookups, tally.calls),
                served(tally.served, tally.total())
            );
            if let Service::Name(n) = service {
                let mut what = match (tally.lookups, tally.calls) {
                    (0, _) => format!("Mock the calls to {}.", tally.label(service)),
                    (_, 0) => format!("Mock the lookup of {n}: no call to it followed."),
                    _ => format!(
                        "Mock the lookup and the calls: dns lookup of {n}, then {}.",
                        tally.label(service)
                    ),
                };
                match tally.lookups_denied {
                    0 => {}
                    d if d >= tally.lookups => {
                        what.push_str(" The policy denied the lookups: they failed at once.")
                    }
                    d => {
                        let _ = write!(
                            what,
                            " The policy denied {d} of the {} lookups: they failed at once.",
                            tally.lookups
                        );
                    }
                }
                let _ = writeln!(out, "{what}\n");
            }
            let sites = &item.sites;
            if sites.len() == 1 && sites.contains_key(&None) {
                write_tests(&mut out, &sites[&None]);
                out.push('\n');
                continue;
            }
            let size = |tests: &BTreeMap<&str, TestCalls>| -> (u64, u64) {
                (
                    tests.len() as u64,
                    saturating_sum(tests.values().map(TestCalls::total)),
                )
            };
            let mut sites: Vec<_> = sites.iter().collect();
            sites.sort_by(|a, b| (size(b.1), a.0).cmp(&(size(a.1), b.0)));
            for (site, tests) in sites {
                let (t, l, c) = tests_counts(tests.iter().map(|(t, c)| (*t, c)));
                let _ = writeln!(
                    out,
                    "#### {}: {}\n",
                    site.as_deref().unwrap_or("call site not known"),
                    counts(t, l, c)
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
            let mut at = site_label(c)
                .map(|s| format!(" at {s}"))
                .unwrap_or_default();
            if let Some(f) = &c.fixture {
                let _ = write!(at, " in fixture {}", code(f));
            }
            let what = if c.lookup() {
                plural(c.count, "lookup", "lookups")
            } else {
                plural(c.count, "call", "calls")
            };
            let denied = if c.lookup() && c.verdict == "denied" {
                ", denied"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "- [ ] {} ({}): {} {what}{denied}{} from pid {} {}{at}",
                dest(c),
                c.category,
                c.count,
                served(u64::from(c.served_by_suite), 1),
                c.process.pid,
                code(&c.process.cmdline)
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
    let mut report: Report = serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("{}: not a nettrap report: {e}", path.display()))?;
    super::payoff::derive(&mut report);
    Ok(report)
}

/// `nettrap report FILE [--format text|json|markdown|html] [-o PATH]`
pub fn report_command(args: ReportArgs) -> Result<u8> {
    let report = load(&args.file)?;
    super::formats::report_command(&report, &args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Lost, ProcessInfo, TestEntry, categories};

    fn call(
        category: &str,
        host: Option<&str>,
        address: &str,
        port: u16,
        verdict: &str,
        count: u64,
    ) -> CallEntry {
        CallEntry {
            category: category.into(),
            address: address.into(),
            port,
            transport: "tcp".into(),
            verdict: verdict.into(),
            count,
            phase: Some("call".into()),
            syscall: "connect".into(),
            rule: "record (default)".into(),
            outcomes: BTreeMap::from([("ok".to_string(), count)]),
            process: ProcessInfo {
                pid: 42,
                exe: "/usr/bin/python3".into(),
                cmdline: "python3 -m pytest".into(),
                role: None,
            },
            site: None,
            library: None,
            host: host.map(String::from),
            served_by_suite: false,
            blocked_ns: 0,
            fixture: None,
            inner_test: None,
            concurrent_tests: Vec::new(),
        }
    }

    /// A lookup of `name` (its resolver not known: port 53, zero address).
    fn lookup(name: &str, verdict: &str, count: u64) -> CallEntry {
        CallEntry {
            syscall: "lookup".into(),
            transport: "udp".into(),
            ..call("dns", Some(name), "0.0.0.0", 53, verdict, count)
        }
    }

    fn report(tests: Vec<(&str, Vec<CallEntry>)>, unattributed: Vec<CallEntry>) -> Report {
        let tests: Vec<TestEntry> = tests
            .into_iter()
            .map(|(test, calls)| TestEntry {
                test: test.into(),
                outcome: Some("passed".into()),
                duration_s: None,
                payoff: Default::default(),
                calls,
            })
            .collect();
        let mut r = Report {
            schema_version: SCHEMA_VERSION,
            nettrap_version: "0".into(),
            command: vec!["python3".into(), "-m".into(), "pytest".into()],
            engine: "auto".into(),
            runner: Some("pytest".into()),
            command_exit_code: 0,
            exit_code: 0,
            enforce: false,
            runners: vec!["pytest".into()],
            tests_total: Some(tests.len() as u64),
            tests_with_calls: tests
                .iter()
                .filter(|t| t.calls.iter().any(CallEntry::offending))
                .count() as u64,
            categories: categories(&tests, &unattributed, |_| Vec::new()),
            tests,
            unattributed,
            fail_on: Vec::new(),
            io_uring: Vec::new(),
            lost: Lost::default(),
            killed: Vec::new(),
            adapter_failures: Vec::new(),
            policy_fingerprint: None,
            shards: Vec::new(),
            baseline: None,
            payoff: Default::default(),
            destinations: Vec::new(),
        };
        crate::report::payoff::derive(&mut r);
        r
    }

    #[test]
    fn the_headline_says_how_long_tests_waited_and_on_what() {
        let es = |blocked_ns| CallEntry {
            blocked_ns,
            ..call("elasticsearch", None, "127.0.0.1", 9200, "recorded", 1)
        };
        let mut r = report(
            vec![
                ("t::a", vec![es(100_000_000_000)]),
                ("t::b", vec![es(25_000_000_000)]),
                ("t::c", Vec::new()),
            ],
            Vec::new(),
        );
        for (t, d) in r.tests.iter_mut().zip([150.0, 100.0, 150.0]) {
            t.duration_s = Some(d);
        }
        crate::report::payoff::derive(&mut r);
        assert_eq!(r.payoff.payoff.blocked_s, 125.0);
        assert_eq!(r.categories["elasticsearch"].payoff.blocked_s, 125.0);
        assert_eq!(r.tests[0].payoff.blocked_s, 100.0);
        assert_eq!(
            crate::report::payoff::headline(&r),
            "Mocking these 2 tests touches 62% of suite time (4m10s of 6m40s), at least 2m05s of it waiting on elasticsearch."
        );
    }

    /// Names, lookups (one denied), a numeric host, the suite's own servers (in-suite and a
    /// redis the suite serves), and, with `ephemeral`, nine ports in one category.
    fn names_report(ephemeral: bool) -> Report {
        let pay = "api.payments.example";
        let served = CallEntry {
            served_by_suite: true,
            ..call("redis", Some("localhost"), "127.0.0.1", 6379, "recorded", 2)
        };
        let mut live = vec![
            call("in-suite", None, "127.0.0.1", 45678, "recorded", 3),
            call("in-suite", None, "127.0.0.1", 45679, "allowed", 1),
            served,
        ];
        if ephemeral {
            live.extend((0..9).map(|i| call("other", None, "127.0.0.1", 40000 + i, "recorded", 1)));
        }
        report(
            vec![
                (
                    "tests/test_pay.py::test_charge",
                    vec![
                        lookup(pay, "recorded", 1),
                        call("https", Some(pay), "127.0.0.2", 443, "recorded", 2),
                    ],
                ),
                (
                    "tests/test_pay.py::test_refund",
                    vec![call("https", Some(pay), "127.0.0.9", 443, "recorded", 1)],
                ),
                (
                    "tests/test_pay.py::test_numeric",
                    vec![call(
                        "https",
                        Some("10.2.3.4"),
                        "10.2.3.4",
                        443,
                        "recorded",
                        1,
                    )],
                ),
                (
                    "tests/test_offline.py::test_geo",
                    vec![lookup("api.unknown.example", "denied", 2)],
                ),
                ("tests/test_live.py::test_server", live),
                ("tests/test_pure.py::test_pure", vec![]),
            ],
            vec![lookup("search.internal", "recorded", 1)],
        )
    }

    #[test]
    fn summary_shows_names_lookups_and_the_suites_own_servers_apart() {
        assert_eq!(
            summary(&names_report(true)),
            concat!(
                "nettrap: 4 categories of external calls in 5 of 6 tests\n",
                "  https (443)                          3 tests     4 calls  recorded\n",
                "    api.payments.example:443 (127.0.0.2, 127.0.0.9): 2 tests, 3 calls\n",
                "    10.2.3.4:443: 1 test, 1 call\n",
                "  dns   (53)                           2 tests     4 calls  2 denied, 2 recorded\n",
                "    dns lookup of api.unknown.example: 1 test, 2 lookups, denied\n",
                "    dns lookup of api.payments.example: 1 test, 1 lookup\n",
                "    dns lookup of search.internal: 1 lookup outside any test\n",
                "  other (40000,40001,40002 +6 more)     1 test     9 calls  recorded\n",
                "  redis (6379)                          1 test     2 calls  recorded (served by the suite)\n",
                "    localhost:6379 (127.0.0.1): 1 test, 2 calls (served by the suite)\n",
                "  4 calls to the suite's own servers (in-suite), not external\n",
                "  1 call outside any test (unattributed)\n",
            )
        );
    }

    #[test]
    fn todo_groups_by_name_lookups_first_never_the_suites_own_servers() {
        assert_eq!(
            todo(&names_report(false)),
            concat!(
                "# nettrap: mocking to-do list\n",
                "\n",
                "`python3 -m pytest`: 5 of 6 tests made 10 recorded or denied calls. Largest payoff first: mocking a group's\n",
                "service takes every listed test off the network; the call site under a destination is\n",
                "where the mock goes.\n",
                "\n",
                "Mocking these 5 tests: time at stake not known (no test durations: no runner adapter timed the tests).\n",
                "\n",
                "## https: 3 tests, 4 calls (and 1 dns lookup that led to them)\n",
                "\n",
                "### api.payments.example: 2 tests, 1 lookup, 3 calls\n",
                "\n",
                "Mock the lookup and the calls: dns lookup of api.payments.example, then api.payments.example:443 (127.0.0.2, 127.0.0.9).\n",
                "\n",
                "- [ ] `tests/test_pay.py::test_charge`: 1 lookup, then 2 calls (call 3)\n",
                "- [ ] `tests/test_pay.py::test_refund`: 1 call (call 1)\n",
                "\n",
                "### 10.2.3.4:443: 1 test, 1 call\n",
                "\n",
                "- [ ] `tests/test_pay.py::test_numeric`: 1 call (call 1)\n",
                "\n",
                "## dns: 2 tests, 4 calls (1 outside any test; 1 lookup listed under https with the calls it led to)\n",
                "\n",
                "### dns lookup of api.unknown.example: 1 test, 2 lookups\n",
                "\n",
                "Mock the lookup of api.unknown.example: no call to it followed. The policy denied the lookups: they failed at once.\n",
                "\n",
                "- [ ] `tests/test_offline.py::test_geo`: 2 denied lookups (call 2)\n",
                "\n",
                "## redis: 1 test, 2 calls\n",
                "\n",
                "### localhost: 1 test, 2 calls (served by the suite)\n",
                "\n",
                "Mock the calls to localhost:6379 (127.0.0.1).\n",
                "\n",
                "- [ ] `tests/test_live.py::test_server`: 2 calls (call 2)\n",
                "\n",
                "## Outside any test\n",
                "\n",
                "Made at import, during collection or by session-wide fixtures: mock them where\n",
                "the module or fixture makes the call.\n",
                "\n",
                "- [ ] dns lookup of search.internal (dns): 1 lookup from pid 42 `python3 -m pytest`\n",
            )
        );
    }

    #[test]
    fn destinations_show_the_name_and_the_address() {
        let named = call("https", Some("api.v6.example"), "::1", 443, "recorded", 1);
        assert_eq!(dest(&named), "api.v6.example:443 (::1)");
        let bare = call("https", None, "::1", 443, "recorded", 1);
        assert_eq!(dest(&bare), "[::1]:443");
        for literal in ["10.2.3.4", "::1", "[::1]", "fe80::1%eth0", ""] {
            let c = call("https", Some(literal), "10.2.3.4", 443, "recorded", 1);
            assert_eq!(c.name(), None, "{literal:?}");
            assert_eq!(dest(&c), "10.2.3.4:443");
        }
        assert_eq!(
            dest(&lookup("api.x.example", "denied", 1)),
            "dns lookup of api.x.example"
        );
        let unnamed = CallEntry {
            host: None,
            ..lookup("-", "recorded", 1)
        };
        assert_eq!(dest(&unnamed), "dns lookup (name not known)");
        let via = CallEntry {
            address: "127.0.0.1".into(),
            ..unnamed
        };
        assert_eq!(dest(&via), "dns lookup (name not known) via 127.0.0.1:53");
        // A resolver query an adapter saw the program's lookup of a name make.
        let query = CallEntry {
            transport: "udp".into(),
            ..call("dns", Some("api.x.example"), "127.0.0.1", 53, "recorded", 1)
        };
        assert!(query.lookup());
        assert_eq!(dest(&query), "dns lookup of api.x.example");
        let unnamed = call("dns", None, "127.0.0.1", 53, "recorded", 1);
        assert!(!unnamed.lookup());
        assert_eq!(dest(&unnamed), "127.0.0.1:53");
    }

    #[test]
    fn a_few_ports_addresses_and_names_per_row() {
        let t = "tests/test_many.py::test_many";
        let mut calls: Vec<CallEntry> = [80, 443, 8443, 9443]
            .iter()
            .enumerate()
            .map(|(i, &port)| {
                let address = format!("10.0.0.{}", 5 - i);
                call("web", Some("api.x.example"), &address, port, "recorded", 1)
            })
            .collect();
        calls.push(call(
            "web",
            Some("api.x.example"),
            "10.0.0.9",
            80,
            "denied",
            1,
        ));
        for name in ["a.example", "b.example", "c.example", "d.example"] {
            calls.push(call("web", Some(name), "10.0.1.1", 80, "recorded", 1));
        }
        let r = report(vec![(t, calls)], Vec::new());
        assert_eq!(
            summary(&r),
            concat!(
                "nettrap: 1 category of external calls in 1 of 1 tests\n",
                "  web (80,443,8443 +1 more)     1 test     9 calls  1 denied, 8 recorded\n",
                "    api.x.example:80,443,8443 +1 more (10.0.0.2, 10.0.0.3, 10.0.0.4 +2 more): 1 test, 5 calls, 1 denied\n",
                "    a.example:80 (10.0.1.1): 1 test, 1 call\n",
                "    b.example:80 (10.0.1.1): 1 test, 1 call\n",
                "    +2 more\n",
            )
        );
    }

    #[test]
    fn only_the_suites_own_servers_is_no_external_call() {
        let r = report(
            vec![(
                "t",
                vec![call("in-suite", None, "127.0.0.1", 45678, "recorded", 1)],
            )],
            Vec::new(),
        );
        assert_eq!(r.tests_with_calls, 0);
        assert_eq!(
            summary(&r),
            "nettrap: no external calls\n  1 call to the suite's own servers (in-suite), not external\n"
        );
        assert!(todo(&r).ends_with("nothing to mock.\n"), "{}", todo(&r));
    }

    #[test]
    fn lookups_partly_denied_and_outside_any_test() {
        let pay = "api.payments.example";
        let served = CallEntry {
            served_by_suite: true,
            ..call("redis", None, "127.0.0.1", 6379, "recorded", 1)
        };
        let r = report(
            vec![(
                "t",
                vec![
                    lookup(pay, "recorded", 2),
                    lookup(pay, "denied", 1),
                    call("https", Some(pay), "127.0.0.2", 443, "recorded", 1),
                ],
            )],
            vec![lookup("x.example", "denied", 1), served],
        );
        let md = todo(&r);
        for line in [
            "### api.payments.example: 1 test, 3 lookups, 1 call\n",
            "Mock the lookup and the calls: dns lookup of api.payments.example, then api.payments.example:443 (127.0.0.2). The policy denied 1 of the 3 lookups: they failed at once.\n",
            "- [ ] `t`: 3 lookups (1 denied), then 1 call (call 4)\n",
            "- [ ] dns lookup of x.example (dns): 1 lookup, denied from pid 42 `python3 -m pytest`\n",
            "- [ ] 127.0.0.1:6379 (redis): 1 call (served by the suite) from pid 42 `python3 -m pytest`\n",
        ] {
            assert!(md.contains(line), "{line:?} not in:\n{md}");
        }
    }

    #[test]
    fn json_keeps_address_and_host_and_marks_served_calls() {
        let named = call(
            "https",
            Some("api.payments.example"),
            "127.0.0.2",
            443,
            "recorded",
            1,
        );
        let v = serde_json::to_value(&named).unwrap();
        assert_eq!(v["address"], "127.0.0.2");
        assert_eq!(v["host"], "api.payments.example");
        assert!(v.get("served_by_suite").is_none(), "{v}");
        let back: CallEntry = serde_json::from_value(v).unwrap();
        assert!(!back.served_by_suite);
        let served = CallEntry {
            served_by_suite: true,
            ..named
        };
        let v = serde_json::to_value(&served).unwrap();
        assert_eq!(v["served_by_suite"], true);
        assert_eq!(serde_json::from_value::<CallEntry>(v).unwrap(), served);
    }

    #[test]
    fn code_spans_hold_backticks_and_line_breaks() {
        assert_eq!(code("tests/x.py::t"), "`tests/x.py::t`");
        assert_eq!(code("sh -c 'a\nb'"), "`sh -c 'a b'`");
        assert_eq!(code("t[`x`]"), "``t[`x`]``");
        assert_eq!(code("`a``"), "``` `a`` ```");
    }
}
