//! The baseline ratchet: `nettrap run --baseline FILE` fails only on offending calls the
//! baseline does not hold, and `nettrap baseline update` writes the baseline from a report.
//!
//! A baseline entry is the key of an offending call (recorded or denied, never allowed or
//! `in-suite`): (test id or none, category, host name or address, port, verdict). Counts, phases,
//! processes, call sites and times are not in the key: a test that makes one more call to a
//! destination it already called is not new; a new test, destination, host name, category or
//! verdict is.
//!
//! With a baseline, the run fails (exit 86) exactly when an offending call has a key the
//! baseline does not hold. A call the baseline holds never fails the run, whatever its verdict
//! or `--fail-on` (a denied call was still refused when it was made: the baseline changes the
//! verdict on the run, not what the program saw). Entries of the baseline no call of this run
//! matched are reported as fixed when the run shows they are: for a test, when the test ran in
//! this run (a shard does not report the other shards' tests as fixed). An entry of calls
//! outside any test (imports, collection, session fixtures) that the run did not make is only
//! "not seen": whether a run makes such a call depends on which of the suite's modules, fixtures
//! and processes it ran (a shard, `-k`, a single file), which the report cannot tell, so calling
//! it fixed would invite dropping a debt that is still there. `nettrap baseline update` on a
//! run of the whole suite drops both.
//!
//! `nettrap baseline check` applies the same check to a saved report, or to `nettrap merge`'s
//! report of the shards, without running anything.
//!
//! The file is JSON, sorted, one entry per line, without pids, counts or timings, so that it
//! diffs line by line in review:
//!
//! ```json
//! {
//!   "nettrap_baseline": 1,
//!   "entries": [
//!     {"test":null,"category":"memcached","host":"127.0.0.1","port":11211,"verdict":"recorded"},
//!     {"test":"tests/test_cache.py::test_cache_get","category":"redis","host":"127.0.0.1","port":6379,"verdict":"recorded"}
//!   ]
//! }
//! ```

use super::{CallEntry, Report, plural};
use crate::cli::BaselineCommand;
use crate::outputs;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

/// The version of the baseline file format.
pub const BASELINE_VERSION: u32 = 1;

/// One accepted offending call: the fields order the file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The test id, or null for calls outside any test.
    pub test: Option<String>,
    pub category: String,
    /// The host name the call was made by, else its address.
    pub host: String,
    pub port: u16,
    /// `recorded` or `denied`.
    pub verdict: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    nettrap_baseline: u32,
    entries: Vec<Entry>,
}

/// What `--baseline` found, stored in the report.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct BaselineCheck {
    /// The baseline file, as given.
    pub file: String,
    /// Offending calls whose key the baseline does not hold, with their call counts.
    pub new: Vec<NewEntry>,
    /// Baseline entries of tests that ran that no call of this run matched.
    pub fixed: Vec<Entry>,
    /// Baseline entries outside any test that no call of this run matched: not fixed for
    /// certain (the run may not have run what makes them). Added within schema 2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_seen: Vec<Entry>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct NewEntry {
    #[serde(flatten)]
    pub entry: Entry,
    pub calls: u64,
}

/// The key of an offending call.
pub fn key(test: Option<&str>, c: &CallEntry) -> Entry {
    Entry {
        test: test.map(String::from),
        category: c.category.clone(),
        host: c.name().map_or_else(|| c.address.clone(), String::from),
        port: c.port,
        verdict: c.verdict.clone(),
    }
}

/// The offending calls of a report, by key, with their counts.
fn offending(report: &Report) -> std::collections::BTreeMap<Entry, u64> {
    let mut keys = std::collections::BTreeMap::new();
    let tests = report
        .tests
        .iter()
        .flat_map(|t| t.calls.iter().map(move |c| (Some(t.test.as_str()), c)));
    for (test, c) in tests.chain(report.unattributed.iter().map(|c| (None, c))) {
        if c.offending() {
            *keys.entry(key(test, c)).or_insert(0) += c.count;
        }
    }
    keys
}

/// Reads a baseline file: one line naming the file on any error.
pub fn load(path: &Path) -> Result<BTreeSet<Entry>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (write one with `nettrap baseline update`)"
        } else {
            ""
        };
        anyhow::anyhow!("--baseline {}: cannot read it: {e}{hint}", path.display())
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}: not a nettrap baseline: {e}",
            path.display(),
            e.line()
        )
    })?;
    match value.get("nettrap_baseline").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(BASELINE_VERSION) => {}
        Some(v) => bail!(
            "{}: baseline format {v} is not supported (this nettrap reads {BASELINE_VERSION})",
            path.display()
        ),
        None => bail!(
            "{}: not a nettrap baseline (no nettrap_baseline version)",
            path.display()
        ),
    }
    let file: File = serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("{}: not a nettrap baseline: {e}", path.display()))?;
    Ok(file.entries.into_iter().collect())
}

/// The baseline file's text for a report: sorted, one entry per line.
pub fn render(report: &Report) -> String {
    let entries: Vec<Entry> = offending(report).into_keys().collect();
    let mut out = format!("{{\n  \"nettrap_baseline\": {BASELINE_VERSION},\n  \"entries\": [");
    for (i, e) in entries.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        // Serialising a struct of strings and numbers cannot fail.
        let line = serde_json::to_string(e).unwrap_or_default();
        let _ = write!(out, "{sep}\n    {line}");
    }
    if !entries.is_empty() {
        out.push_str("\n  ");
    }
    out.push_str("]\n}\n");
    out
}

/// Compares a report with a baseline.
pub fn check(report: &Report, file: &Path, baseline: &BTreeSet<Entry>) -> BaselineCheck {
    let seen = offending(report);
    let new = seen
        .iter()
        .filter(|(k, _)| !baseline.contains(*k))
        .map(|(k, &calls)| NewEntry {
            entry: k.clone(),
            calls,
        })
        .collect();
    let ran: BTreeSet<&str> = report.tests.iter().map(|t| t.test.as_str()).collect();
    let (mut fixed, mut not_seen) = (Vec::new(), Vec::new());
    for e in baseline.iter().filter(|e| !seen.contains_key(*e)) {
        match e.test.as_deref() {
            Some(t) if ran.contains(t) => fixed.push(e.clone()),
            Some(_) => {}
            None => not_seen.push(e.clone()),
        }
    }
    BaselineCheck {
        file: file.display().to_string(),
        new,
        fixed,
        not_seen,
    }
}

/// Checks `report` against a baseline as `nettrap run --baseline` does: stores the findings in
/// it, marks it enforcing (calls lost may have been new ones) and returns why it fails, if it
/// does (see `super::failure`).
pub fn apply(report: &mut Report, file: &Path, baseline: &BTreeSet<Entry>) -> Option<String> {
    let check = check(report, file, baseline);
    let violation = check.violation();
    report.baseline = Some(check);
    report.enforce = true;
    super::failure(violation, super::unverified(report))
}

fn dest(e: &Entry) -> String {
    if e.host.contains(':') {
        format!("[{}]:{}", e.host, e.port)
    } else {
        format!("{}:{}", e.host, e.port)
    }
}

fn line(e: &Entry) -> String {
    format!(
        "{}: {} {} ({})",
        e.test.as_deref().unwrap_or("(outside any test)"),
        e.category,
        dest(e),
        e.verdict
    )
}

/// Entries the summary lists; the report holds them all.
const SHOWN: usize = 20;

fn list(out: &mut String, lines: impl ExactSizeIterator<Item = String>) {
    let n = lines.len();
    for l in lines.take(SHOWN) {
        let _ = writeln!(out, "  {l}");
    }
    if n > SHOWN {
        let _ = writeln!(
            out,
            "  and {} more (see the report's `baseline`)",
            n - SHOWN
        );
    }
}

impl BaselineCheck {
    /// Why the run fails: offending calls the baseline does not hold.
    pub fn violation(&self) -> Option<String> {
        if self.new.is_empty() {
            return None;
        }
        let calls: u64 = self.new.iter().map(|n| n.calls).sum();
        let first = line(&self.new[0].entry);
        let more = match self.new.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        Some(format!(
            "{calls} {} new since the baseline {}: {first}{more}",
            plural(calls, "call", "calls"),
            self.file
        ))
    }

    /// The summary's lines: what is new, what was fixed.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if self.new.is_empty() {
            let _ = writeln!(out, "nettrap: nothing new since the baseline {}", self.file);
        } else {
            let n = self.new.len() as u64;
            let _ = writeln!(
                out,
                "nettrap: new since the baseline {} ({n} {}):",
                self.file,
                plural(n, "entry", "entries")
            );
            list(
                &mut out,
                self.new.iter().map(|e| {
                    let c = e.calls;
                    format!("{} ({c} {})", line(&e.entry), plural(c, "call", "calls"))
                }),
            );
        }
        if !self.fixed.is_empty() {
            let n = self.fixed.len() as u64;
            let _ = writeln!(
                out,
                "nettrap: fixed since the baseline ({n} {}; `nettrap baseline update` drops them):",
                plural(n, "entry", "entries")
            );
            list(&mut out, self.fixed.iter().map(line));
        }
        if !self.not_seen.is_empty() {
            let n = self.not_seen.len() as u64;
            let _ = writeln!(
                out,
                "nettrap: not seen in this run ({n} {} outside any test: a partial run or a shard may \
                 not make them; `nettrap baseline update` on a whole run drops them):",
                plural(n, "entry", "entries")
            );
            list(&mut out, self.not_seen.iter().map(line));
        }
        out
    }
}

/// `nettrap baseline update [--report FILE] [-o FILE]`
pub fn baseline_command(cmd: BaselineCommand) -> Result<u8> {
    match cmd {
        BaselineCommand::Update { report, output } => {
            let r = super::render::load(&report)?;
            let path = outputs::resolve(&output);
            let text = render(&r);
            outputs::write(&path, text.as_bytes())
                .with_context(|| format!("cannot write the baseline to {}", output.display()))?;
            let n = offending(&r).len() as u64;
            crate::say!(
                "nettrap: baseline: {n} {} from {} written to {}",
                plural(n, "entry", "entries"),
                report.display(),
                output.display()
            );
            Ok(0)
        }
        BaselineCommand::Check {
            report,
            baseline,
            output,
        } => {
            let entries = load(&baseline)?;
            let mut r = super::render::load(&report)?;
            let fails = apply(&mut r, &baseline, &entries);
            r.exit_code = if fails.is_some() {
                i32::from(crate::run::EXIT_VIOLATION)
            } else {
                0
            };
            if let Some(out) = &output {
                outputs::write_with(&outputs::resolve(out), |w| {
                    serde_json::to_writer_pretty(&mut *w, &r).map_err(std::io::Error::other)?;
                    w.write_all(b"\n")
                })
                .with_context(|| format!("cannot write the report to {}", out.display()))?;
            }
            crate::say!("{}", super::render::summary(&r).trim_end());
            Ok(match fails {
                Some(why) => {
                    crate::say!(
                        "nettrap: {why} in {}; exiting {}",
                        report.display(),
                        crate::run::EXIT_VIOLATION
                    );
                    crate::run::EXIT_VIOLATION
                }
                None => 0,
            })
        }
    }
}
