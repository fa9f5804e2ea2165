//! `nettrap merge A.json B.json ... [-o FILE]`: one report from the reports of a suite's shards
//! (CI parallelism, a matrix, xdist across hosts).
//!
//! The merged report is what the unsplit run would have reported: every test of every shard
//! (a test in several shards: its calls combined, its durations summed, its worst outcome),
//! the calls grouped as a run groups them, `categories`, `tests_total` and `tests_with_calls`
//! computed again over the whole, losses summed, killed processes and io_uring entries
//! listed together, and `exit_code` / `command_exit_code` the worst of the shards' (86, then
//! 87, then any other failure, then 0). Calls keep the process that made them (its pid is the
//! shard's): calls that differ only by process stay separate entries, whose counts add up to
//! the unsplit run's per test, destination and verdict, and in `categories`. `shards` lists each
//! input with its command and exit codes; `command` is what their commands share.
//!
//! The result does not depend on the order of the inputs. Refused, with one line naming the
//! file and nothing written: a file that is not a report, a report of another schema version,
//! a report without a policy fingerprint (an older nettrap's), and reports of different
//! policies.

use super::{CallEntry, IoUringEntry, Report, SCHEMA_VERSION, TestEntry, categories};
use crate::cli::MergeArgs;
use crate::outputs;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One input of a merged report.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The report file, as given to `nettrap merge`.
    pub file: String,
    pub command: Vec<String>,
    pub command_exit_code: i32,
    pub exit_code: i32,
}

/// How bad an exit status is: a violation, then outputs not written, then any other failure.
fn severity(code: i32) -> (u8, i32) {
    match code {
        0 => (0, 0),
        86 => (3, code),
        87 => (2, code),
        _ => (1, code),
    }
}

fn worst(codes: impl Iterator<Item = i32>) -> i32 {
    codes.max_by_key(|&c| severity(c)).unwrap_or(0)
}

/// How bad a test outcome is, for a test that ran in several shards.
fn outcome_rank(o: Option<&str>) -> u8 {
    match o {
        Some("error") => 6,
        Some("failed") => 5,
        Some("xpassed") => 4,
        Some("passed") => 3,
        Some("xfailed") => 2,
        Some(_) => 1,
        None => 0,
    }
}

/// Everything that groups a call (all but its count and outcomes), in the order a run's
/// grouping sorts them.
#[allow(clippy::type_complexity)]
fn group(
    c: &CallEntry,
) -> (
    (Option<&str>, &str, Option<std::net::IpAddr>, &str, u16),
    (Option<&str>, &str, &str, &str, &str),
    (
        &super::ProcessInfo,
        Option<&str>,
        Option<&str>,
        Option<&str>,
    ),
    (Option<&str>, &[String], bool),
) {
    (
        (
            c.phase.as_deref(),
            &c.category,
            c.address.parse().ok(),
            &c.address,
            c.port,
        ),
        (
            c.host.as_deref(),
            &c.transport,
            &c.verdict,
            &c.syscall,
            &c.rule,
        ),
        (
            &c.process,
            c.site.as_deref(),
            c.library.as_deref(),
            c.fixture.as_deref(),
        ),
        (
            c.inner_test.as_deref(),
            &c.concurrent_tests,
            c.served_by_suite,
        ),
    )
}

/// Sorts calls and combines those that group together (counts and outcomes added).
fn combine(mut calls: Vec<CallEntry>) -> Vec<CallEntry> {
    calls.sort_by(|a, b| group(a).cmp(&group(b)));
    let mut out: Vec<CallEntry> = Vec::with_capacity(calls.len());
    for c in calls {
        match out.last_mut() {
            Some(last) if group(last) == group(&c) => {
                last.count += c.count;
                last.blocked_ns = last.blocked_ns.saturating_add(c.blocked_ns);
                for (k, n) in c.outcomes {
                    *last.outcomes.entry(k).or_default() += n;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The common leading arguments of the shards' commands.
fn common_prefix(commands: &[&Vec<String>]) -> Vec<String> {
    let Some(first) = commands.first() else {
        return Vec::new();
    };
    let n = (0..first.len())
        .take_while(|&i| commands.iter().all(|c| c.get(i) == first.get(i)))
        .count();
    first[..n].to_vec()
}

/// Joins distinct messages of several shards, each after its file.
fn messages(
    reports: &[(String, Report)],
    get: impl Fn(&Report) -> Option<&String>,
) -> Option<String> {
    let parts: Vec<String> = reports
        .iter()
        .filter_map(|(f, r)| get(r).map(|m| format!("{f}: {m}")))
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Merges shard reports (already loaded and checked), in any order.
pub fn merge(mut reports: Vec<(String, Report)>) -> Report {
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    let one = |f: &dyn Fn(&Report) -> Option<String>| -> Option<String> {
        let values: BTreeSet<Option<String>> = reports.iter().map(|(_, r)| f(r)).collect();
        if values.len() == 1 {
            values.into_iter().next().flatten()
        } else {
            None
        }
    };
    let engine = one(&|r| Some(r.engine.clone())).unwrap_or_else(|| "mixed".into());
    let runner = one(&|r| r.runner.clone());

    let mut tests: BTreeMap<String, TestEntry> = BTreeMap::new();
    let mut unattributed = Vec::new();
    let mut io_uring: Vec<IoUringEntry> = Vec::new();
    let mut killed = Vec::new();
    let mut runners = BTreeSet::new();
    let mut adapter_failures = BTreeSet::new();
    let mut ports: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut lost = super::Lost::default();
    for (_, r) in &reports {
        for t in &r.tests {
            match tests.get_mut(&t.test) {
                None => {
                    tests.insert(t.test.clone(), t.clone());
                }
                Some(e) => {
                    e.calls.extend(t.calls.iter().cloned());
                    e.duration_s = match (e.duration_s, t.duration_s) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    };
                    if outcome_rank(t.outcome.as_deref()) > outcome_rank(e.outcome.as_deref()) {
                        e.outcome = t.outcome.clone();
                    }
                }
            }
        }
        unattributed.extend(r.unattributed.iter().cloned());
        io_uring.extend(r.io_uring.iter().cloned());
        killed.extend(r.killed.iter().cloned());
        runners.extend(r.runners.iter().cloned());
        adapter_failures.extend(r.adapter_failures.iter().cloned());
        for (name, c) in &r.categories {
            ports.entry(name.clone()).or_insert_with(|| c.ports.clone());
        }
        lost.dropped += r.lost.dropped;
        lost.torn += r.lost.torn;
        lost.unobserved.total += r.lost.unobserved.total;
        for (cause, n) in &r.lost.unobserved.by_cause {
            *lost.unobserved.by_cause.entry(cause.clone()).or_default() += n;
        }
        lost.handed_to_supervisor += r.lost.handed_to_supervisor;
    }
    lost.log_error = messages(&reports, |r| r.lost.log_error.as_ref());
    lost.supervisor_error = messages(&reports, |r| r.lost.supervisor_error.as_ref());

    let tests: Vec<TestEntry> = tests
        .into_values()
        .map(|mut t| {
            t.calls = combine(std::mem::take(&mut t.calls));
            t
        })
        .collect();
    let unattributed = combine(unattributed);
    io_uring
        .sort_by(|a, b| (&a.verdict, &a.test, &a.process).cmp(&(&b.verdict, &b.test, &b.process)));
    io_uring.dedup_by(|b, a| {
        let same = (&a.verdict, &a.test, &a.process) == (&b.verdict, &b.test, &b.process);
        if same {
            a.count += b.count;
        }
        same
    });
    killed.sort_by(|a: &super::KilledEntry, b| {
        (a.pid, &a.cmdline, &a.signal, &a.reason).cmp(&(b.pid, &b.cmdline, &b.signal, &b.reason))
    });
    let categories = categories(&tests, &unattributed, |name| {
        ports.get(name).cloned().unwrap_or_default()
    });
    let tests_with_calls = tests
        .iter()
        .filter(|t| t.calls.iter().any(CallEntry::offending))
        .count() as u64;
    let tests_total = reports
        .iter()
        .all(|(_, r)| r.tests_total.is_some())
        .then_some(tests.len() as u64);
    let first = &reports[0].1;
    let commands: Vec<&Vec<String>> = reports.iter().map(|(_, r)| &r.command).collect();
    let mut merged = Report {
        schema_version: SCHEMA_VERSION,
        nettrap_version: env!("CARGO_PKG_VERSION").into(),
        command: common_prefix(&commands),
        engine,
        runner,
        command_exit_code: worst(reports.iter().map(|(_, r)| r.command_exit_code)),
        exit_code: worst(reports.iter().map(|(_, r)| r.exit_code)),
        enforce: reports.iter().any(|(_, r)| r.enforce),
        runners: runners.into_iter().collect(),
        tests_total,
        tests_with_calls,
        categories,
        tests,
        unattributed,
        fail_on: first.fail_on.clone(),
        io_uring,
        lost,
        killed,
        adapter_failures: adapter_failures.into_iter().collect(),
        policy_fingerprint: first.policy_fingerprint.clone(),
        shards: reports
            .iter()
            .map(|(file, r)| Shard {
                file: file.clone(),
                command: r.command.clone(),
                command_exit_code: r.command_exit_code,
                exit_code: r.exit_code,
            })
            .collect(),
        // Each shard compared its own calls; `nettrap baseline update` works on the merge.
        baseline: None,
        payoff: Default::default(),
        destinations: Vec::new(),
    };
    // Payoff, from the merged tests' durations, as for one run.
    super::payoff::derive(&mut merged);
    merged
}

/// Loads the inputs, refusing what cannot be merged.
fn load_all(files: &[std::path::PathBuf]) -> Result<Vec<(String, Report)>> {
    let mut reports: Vec<(String, Report)> = Vec::new();
    for path in files {
        let r = super::render::load(path)?;
        let name = path.display().to_string();
        if r.schema_version != SCHEMA_VERSION {
            bail!(
                "{name}: report schema version {} cannot be merged (only {SCHEMA_VERSION}: run the shard again with this nettrap)",
                r.schema_version
            );
        }
        let Some(fp) = &r.policy_fingerprint else {
            bail!(
                "{name}: the report has no policy fingerprint (written by an older nettrap): cannot tell which policy it ran under"
            );
        };
        if let Some((other, o)) = reports.first()
            && o.policy_fingerprint.as_ref() != Some(fp)
        {
            bail!(
                "{name}: ran under another policy than {other} (policy fingerprint {fp}, not {}): shards must share the policy file and flags",
                o.policy_fingerprint.as_deref().unwrap_or("-")
            );
        }
        if reports.iter().any(|(f, _)| *f == name) {
            bail!("{name}: given twice");
        }
        reports.push((name, r));
    }
    Ok(reports)
}

/// `nettrap merge FILE... [-o FILE]`
pub fn merge_command(args: MergeArgs) -> Result<u8> {
    let out = outputs::resolve(&args.output);
    outputs::check(&out)
        .with_context(|| format!("cannot write the report to {}", out.display()))?;
    let reports = load_all(&args.files)?;
    let n = reports.len();
    let merged = merge(reports);
    let json = serde_json::to_string_pretty(&merged)? + "\n";
    outputs::write(&out, json.as_bytes())
        .with_context(|| format!("cannot write the report to {}", out.display()))?;
    let calls: u64 = merged
        .tests
        .iter()
        .flat_map(|t| &t.calls)
        .chain(&merged.unattributed)
        .filter(|c| c.offending())
        .map(|c| c.count)
        .sum();
    crate::say!(
        "nettrap: merged {n} {} ({} tests, {} with calls, {calls} offending {}) into {}",
        super::plural(n as u64, "report", "reports"),
        merged.tests.len(),
        merged.tests_with_calls,
        super::plural(calls, "call", "calls"),
        args.output.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_exit_status_wins() {
        assert_eq!(worst([0, 1, 86, 87].into_iter()), 86);
        assert_eq!(worst([0, 137, 87, 1].into_iter()), 87);
        assert_eq!(worst([0, 1, 137].into_iter()), 137);
        assert_eq!(worst([0, 0].into_iter()), 0);
    }

    #[test]
    fn a_command_is_cut_to_what_the_shards_share() {
        let a: Vec<String> = ["pytest", "-q", "tests/a.py"].map(String::from).to_vec();
        let b: Vec<String> = ["pytest", "-q", "tests/b.py"].map(String::from).to_vec();
        assert_eq!(common_prefix(&[&a, &b]), vec!["pytest", "-q"]);
        assert_eq!(common_prefix(&[&a]), a);
    }
}
