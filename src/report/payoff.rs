//! The numbers every rendering shares, computed once on the model: per category, destination
//! and test, the offending calls, the tests that made them, the calls made outside any test, and
//! the time at stake (the summed durations of the tests that made them, and their share of the
//! whole suite's time), and the time those calls spent blocked inside the real call or lookup
//! (`blocked_s`, measured by the engines: a lower bound of what mocking them saves).
//!
//! [`derive`] fills them into the report when it is built and when a saved one is read (older
//! reports lack them), so the summary, the to-do list, JSON, JUnit and GitHub renderings read
//! the same stored figures instead of counting again, each its own way.
//!
//! A test's duration is the runner's (the adapters report it); a test without one counts 0, and
//! [`SuitePayoff::durations_known`] says how many had one.

use super::{CallEntry, IN_SUITE, Report, render};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Time at stake of a category, destination or test.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Payoff {
    /// Seconds: the summed `duration_s` of the tests with offending calls here (0 where none is
    /// known).
    #[serde(default)]
    pub time_at_stake_s: f64,
    /// `time_at_stake_s` over the whole suite's time (the sum of every test's duration); null
    /// when no duration is known.
    #[serde(default)]
    pub share_of_suite: Option<f64>,
    /// Seconds the offending calls here spent blocked inside the real call or lookup (summed
    /// `CallEntry::blocked_s`; 0 where no engine measured it).
    #[serde(default)]
    pub blocked_s: f64,
}

/// The whole run's time at stake.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct SuitePayoff {
    /// The sum of every test's duration.
    pub suite_time_s: f64,
    /// Tests whose duration is known (the others count 0).
    pub durations_known: u64,
    /// Tests with at least one offending call.
    pub tests: u64,
    #[serde(flatten)]
    pub payoff: Payoff,
}

/// One destination (a host name the program used, with its lookups and every address it led
/// to; else the address and port) in one category.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct DestinationSummary {
    pub category: String,
    /// `api.stripe.com`, `127.0.0.1:6379`, `dns lookup of api.x.example`.
    pub destination: String,
    pub tests: u64,
    /// Offending calls, those outside any test included.
    pub calls: u64,
    /// Of `calls`, those made outside any test.
    pub unattributed: u64,
    #[serde(flatten)]
    pub payoff: Payoff,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn share(time: f64, suite: f64) -> Option<f64> {
    (suite > 0.0).then(|| time / suite)
}

/// How a call's destination is named in `destinations`: the host name when known, else the
/// destination as the to-do list shows it.
pub fn destination(c: &CallEntry) -> String {
    match c.name() {
        Some(n) if !c.lookup() => n.to_string(),
        _ => render::dest(c),
    }
}

/// Fills the shared figures in: per category `unattributed` and payoff, per test payoff,
/// `destinations` and the suite's payoff. Idempotent.
pub fn derive(r: &mut Report) {
    let duration = |d: Option<f64>| d.filter(|d| d.is_finite() && *d > 0.0).unwrap_or(0.0);
    let suite_time: f64 = r
        .tests
        .iter()
        .map(|t| duration(t.duration_s))
        .fold(0.0, |a, b| a + b);
    let known = r.tests.iter().filter(|t| t.duration_s.is_some()).count() as u64;
    let mut at_stake = 0.0;
    let mut blocked_total = 0u64;
    let mut offending_tests = 0;
    let mut cats: BTreeMap<&str, (BTreeSet<usize>, u64, u64)> = BTreeMap::new();
    // (tests, calls, calls outside any test, blocked ns) per (category, destination).
    type Dest = (BTreeSet<usize>, u64, u64, u64);
    let mut dests: BTreeMap<(&str, String), Dest> = BTreeMap::new();
    for t in r.tests.iter_mut() {
        let offending = t.calls.iter().any(CallEntry::offending);
        let time = if offending {
            duration(t.duration_s)
        } else {
            0.0
        };
        let blocked: u64 = t
            .calls
            .iter()
            .filter(|c| c.offending())
            .fold(0u64, |a, c| a.saturating_add(c.blocked_ns));
        t.payoff = Payoff {
            time_at_stake_s: time,
            share_of_suite: share(time, suite_time),
            blocked_s: secs(blocked),
        };
        if offending {
            blocked_total = blocked_total.saturating_add(blocked);
            at_stake += time;
            offending_tests += 1;
        }
    }
    for (i, t) in r.tests.iter().enumerate() {
        for c in t.calls.iter().filter(|c| c.offending()) {
            let e = cats.entry(&c.category).or_default();
            e.0.insert(i);
            e.2 = e.2.saturating_add(c.blocked_ns);
            let d = dests.entry((&c.category, destination(c))).or_default();
            d.0.insert(i);
            d.1 = d.1.saturating_add(c.count);
            d.3 = d.3.saturating_add(c.blocked_ns);
        }
    }
    for c in r.unattributed.iter().filter(|c| c.offending()) {
        let e = cats.entry(&c.category).or_default();
        e.1 = e.1.saturating_add(c.count);
        e.2 = e.2.saturating_add(c.blocked_ns);
        let d = dests.entry((&c.category, destination(c))).or_default();
        d.1 = d.1.saturating_add(c.count);
        d.2 = d.2.saturating_add(c.count);
        d.3 = d.3.saturating_add(c.blocked_ns);
    }
    let time_of = |tests: &BTreeSet<usize>| -> f64 {
        tests
            .iter()
            .map(|&i| duration(r.tests[i].duration_s))
            .fold(0.0, |a, b| a + b)
    };
    let mut categories = std::mem::take(&mut r.categories);
    for (name, s) in categories.iter_mut() {
        let (tests, outside, blocked) = cats.remove(name.as_str()).unwrap_or_default();
        let (time, blocked) = if name == IN_SUITE {
            (0.0, 0)
        } else {
            (time_of(&tests), blocked)
        };
        s.unattributed = outside;
        s.payoff = Payoff {
            time_at_stake_s: time,
            share_of_suite: share(time, suite_time),
            blocked_s: secs(blocked),
        };
    }
    let mut destinations: Vec<DestinationSummary> = dests
        .into_iter()
        .map(
            |((category, destination), (tests, calls, outside, blocked))| {
                let time = time_of(&tests);
                DestinationSummary {
                    category: category.to_string(),
                    destination,
                    tests: tests.len() as u64,
                    calls,
                    unattributed: outside,
                    payoff: Payoff {
                        time_at_stake_s: time,
                        share_of_suite: share(time, suite_time),
                        blocked_s: secs(blocked),
                    },
                }
            },
        )
        .collect();
    destinations.sort_by(|a, b| {
        b.payoff
            .time_at_stake_s
            .total_cmp(&a.payoff.time_at_stake_s)
            .then((b.tests, b.calls).cmp(&(a.tests, a.calls)))
            .then((&a.category, &a.destination).cmp(&(&b.category, &b.destination)))
    });
    r.categories = categories;
    r.destinations = destinations;
    r.payoff = SuitePayoff {
        suite_time_s: suite_time,
        durations_known: known,
        tests: offending_tests,
        payoff: Payoff {
            time_at_stake_s: at_stake,
            share_of_suite: share(at_stake, suite_time),
            blocked_s: secs(blocked_total),
        },
    };
}

/// `, at least 2m05s of it waiting on elasticsearch`: the offending tests' measured blocked
/// time and the category that blocked longest; empty when none was measured.
fn waiting(r: &Report) -> String {
    let total = r.payoff.payoff.blocked_s;
    // Shown from 1 ms: below that it is the calls' own cost, not waiting.
    if total < 0.001 {
        return String::new();
    }
    let mut cats: Vec<(&String, f64)> = r
        .categories
        .iter()
        .map(|(name, s)| (name, s.payoff.blocked_s))
        .filter(|(_, b)| *b > 0.0)
        .collect();
    cats.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let on = match cats.as_slice() {
        [] => "calls".to_string(),
        [(one, _)] => one.to_string(),
        [(top, t), rest @ ..] => format!(
            "{top} ({}) and {} other {}",
            seconds(*t),
            rest.len(),
            super::plural(rest.len() as u64, "category", "categories")
        ),
    };
    format!(", at least {} of it waiting on {on}", seconds(total))
}

/// `1.2 s`, `340 ms`, `2m05s`.
pub fn seconds(s: f64) -> String {
    if s >= 60.0 {
        let whole = s.round() as u64;
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else if s >= 1.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.0} ms", s * 1000.0)
    }
}

/// `31%`, `0.4%`.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// The to-do list's payoff sentence: `Mocking these 12 tests touches 31% of suite time (0.4 s
/// of 1.3 s).`, and what is not known.
pub fn headline(r: &Report) -> String {
    let p = &r.payoff;
    let n = p.tests;
    let tests = super::plural(n, "test", "tests");
    let total = r.tests.len() as u64;
    if p.durations_known == 0 || p.suite_time_s <= 0.0 {
        let waiting = waiting(r);
        let waiting = match waiting.strip_prefix(", at least ") {
            Some(w) => format!(" They spent at least {}.", w.replacen(" of it ", " ", 1)),
            None => String::new(),
        };
        return format!(
            "Mocking these {n} {tests}: time at stake not known (no test durations: no runner adapter timed the tests).{waiting}"
        );
    }
    let mut s = format!(
        "Mocking these {n} {tests} touches {} of suite time ({} of {}){}.",
        percent(p.payoff.share_of_suite.unwrap_or(0.0)),
        seconds(p.payoff.time_at_stake_s),
        seconds(p.suite_time_s),
        waiting(r)
    );
    if p.durations_known < total {
        s.push_str(&format!(
            " Durations known for {} of {total} tests; the others count 0.",
            p.durations_known
        ));
    }
    s
}
