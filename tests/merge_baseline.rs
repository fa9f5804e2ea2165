//! `nettrap merge` (shards) and `nettrap run --baseline` / `nettrap baseline update` (the
//! ratchet), on real runs of the bundled pytest suite (fixtures/pytest-demo).

mod common;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The suite split in two by test file, as CI splits it (disjoint, together all of it).
const SHARD_A: [&str; 4] = [
    "tests/test_cache.py",
    "tests/test_edge.py",
    "tests/test_import_time.py",
    "tests/test_pure.py",
];
const SHARD_B: [&str; 4] = [
    "tests/test_payments.py",
    "tests/test_search.py",
    "tests/test_subprocess.py",
    "tests/test_threads.py",
];

/// The runs several tests compare: the whole suite, and its two shards.
fn runs() -> &'static (Run, Run, Run) {
    static RUNS: OnceLock<(Run, Run, Run)> = OnceLock::new();
    RUNS.get_or_init(|| {
        let whole = run_demo("mb-whole", &[], &[]);
        let a = run_demo("mb-shard-a", &[], &SHARD_A);
        let b = run_demo("mb-shard-b", &[], &SHARD_B);
        for r in [&whole, &a, &b] {
            assert_eq!(r.code(), 0, "{}", r.stderr());
        }
        (whole, a, b)
    })
}

fn report_path(r: &Run) -> String {
    r.dir.join("report.json").to_str().unwrap().to_string()
}

fn nettrap_cmd(args: &[&str]) -> std::process::Output {
    Command::new(nettrap()).args(args).output().unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A call's grouping without what differs between runs (its process: pid, and the command
/// line, which names the shard's files), with its count and outcomes.
fn calls(list: &Value) -> BTreeMap<String, (u64, BTreeMap<String, u64>)> {
    let mut out: BTreeMap<String, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    for c in list.as_array().unwrap() {
        let mut k = c.clone();
        let o = k.as_object_mut().unwrap();
        let count = o.remove("count").unwrap().as_u64().unwrap();
        // Measured time blocked in the calls: differs from run to run.
        o.remove("blocked_ns");
        let outcomes: BTreeMap<String, u64> =
            serde_json::from_value(o.remove("outcomes").unwrap()).unwrap();
        o.insert("process".into(), json!(c["process"]["role"]));
        let e = out.entry(serde_json::to_string(&k).unwrap()).or_default();
        e.0 += count;
        for (name, n) in outcomes {
            *e.1.entry(name).or_default() += n;
        }
    }
    out
}

/// What must be the same in the merged report and the unsplit run's.
fn comparable(r: &Value) -> Value {
    let tests: Vec<Value> = r["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            json!({
                "test": t["test"],
                "outcome": t["outcome"],
                "timed": t["duration_s"].is_number(),
                "calls": format!("{:?}", calls(&t["calls"])),
            })
        })
        .collect();
    // Time at stake comes from each run's own measured durations: not comparable across runs.
    let mut categories = r["categories"].clone();
    for c in categories.as_object_mut().unwrap().values_mut() {
        let c = c.as_object_mut().unwrap();
        c.remove("time_at_stake_s");
        c.remove("share_of_suite");
        c.remove("blocked_s");
    }
    json!({
        "schema_version": r["schema_version"],
        "tests_total": r["tests_total"],
        "tests_with_calls": r["tests_with_calls"],
        "categories": categories,
        "tests": tests,
        "unattributed": format!("{:?}", calls(&r["unattributed"])),
        "lost": r["lost"],
        "killed": r["killed"],
        "exit_code": r["exit_code"],
        "command_exit_code": r["command_exit_code"],
        "runner": r["runner"],
        "runners": r["runners"],
        "fail_on": r["fail_on"],
        "enforce": r["enforce"],
        "policy_fingerprint": r["policy_fingerprint"],
    })
}

#[test]
fn merged_shards_equal_the_unsplit_run_in_either_order() {
    let (whole, a, b) = runs();
    let dir = scratch("mb-merge");
    let (m1, m2) = (dir.join("ab.json"), dir.join("ba.json"));
    let (pa, pb) = (report_path(a), report_path(b));
    for (inputs, out) in [([&pa, &pb], &m1), ([&pb, &pa], &m2)] {
        let o = nettrap_cmd(&["merge", inputs[0], inputs[1], "-o", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("nettrap: merged 2 reports (19 tests, 12 with calls"),
            "{}",
            stderr(&o)
        );
    }
    // Order-independent: the same bytes.
    assert_eq!(
        std::fs::read_to_string(&m1).unwrap(),
        std::fs::read_to_string(&m2).unwrap()
    );
    let merged = read(&m1);
    assert_eq!(comparable(&merged), comparable(&whole.report));
    assert_eq!(merged["tests_total"], 19);
    assert_eq!(merged["tests_with_calls"], 12);
    assert_eq!(merged["categories"]["redis"]["calls"], 8);
    assert!(
        whole.report["policy_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("fnv1a64:")
    );
    // Each test keeps its shard's duration.
    for shard in [a, b] {
        for t in shard.report["tests"].as_array().unwrap() {
            let m = merged["tests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["test"] == t["test"])
                .unwrap();
            assert_eq!(m["duration_s"], t["duration_s"]);
        }
    }
    // The shards, with their commands; the merged command is what they share.
    let shards = merged["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    assert!(shards[0]["command"].as_array().unwrap().len() > 6);
    let cmd = merged["command"].as_array().unwrap();
    assert_eq!(cmd.last().unwrap(), "no:randomly", "{cmd:?}");
    // The merged report renders like any other.
    let o = nettrap_cmd(&["report", m1.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(stderr(&o).is_empty() && String::from_utf8_lossy(&o.stdout).contains("12 of 19 tests"));
}

/// One line on stderr naming `name`, exit 2, nothing written.
fn refused(inputs: &[&Path], out: &Path, name: &str, why: &str) {
    let mut args = vec!["merge".to_string()];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap().to_string()));
    args.extend(["-o".into(), out.to_str().unwrap().into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = nettrap_cmd(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(name) && err.contains(why),
        "{name}, {why}: {err}"
    );
    assert!(!out.exists(), "{err}");
}

#[test]
fn merge_refuses_other_schemas_other_policies_and_corrupt_files() {
    let (_, a, b) = runs();
    let other = run_demo(
        "mb-other-policy",
        &["--fail-on", "redis"],
        &["tests/test_pure.py"],
    );
    assert_eq!(other.code(), 0, "{}", other.stderr());
    let dir = scratch("mb-refused");
    let out = dir.join("merged.json");
    let (pa, pb) = (a.dir.join("report.json"), b.dir.join("report.json"));
    let write = |name: &str, v: &Value| {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
        p
    };

    let mut old = a.report.clone();
    old["schema_version"] = json!(1);
    let old = write("schema1.json", &old);
    refused(
        &[&pa, &old],
        &out,
        "schema1.json",
        "schema version 1 cannot be merged",
    );
    let mut newer = a.report.clone();
    newer["schema_version"] = json!(3);
    let newer = write("schema3.json", &newer);
    refused(&[&newer, &pb], &out, "schema3.json", "is not supported");

    let other_path = other.dir.join("report.json");
    refused(
        &[&pa, &other_path],
        &out,
        other_path.to_str().unwrap(),
        "another policy",
    );
    let mut unknown = b.report.clone();
    unknown
        .as_object_mut()
        .unwrap()
        .remove("policy_fingerprint");
    let unknown = write("old-nettrap.json", &unknown);
    refused(
        &[&pa, &unknown],
        &out,
        "old-nettrap.json",
        "no policy fingerprint",
    );

    let text = std::fs::read_to_string(&pb).unwrap();
    let cut = dir.join("cut.json");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    refused(&[&pa, &cut], &out, "cut.json:", "not a nettrap report");
    let missing = dir.join("missing.json");
    refused(&[&pa, &missing], &out, "missing.json", "cannot read");

    // A refused merge leaves an existing output as it was.
    std::fs::write(&out, "previous").unwrap();
    let o = nettrap_cmd(&[
        "merge",
        pa.to_str().unwrap(),
        cut.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous");
}

fn update(report: &Path, out: &Path) -> String {
    let o = nettrap_cmd(&[
        "baseline",
        "update",
        "--report",
        report.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read_to_string(out).unwrap()
}

fn with_baseline(name: &str, baseline: &Path, flags: &[&str]) -> Run {
    let mut f = vec!["--baseline", baseline.to_str().unwrap()];
    f.extend_from_slice(flags);
    run_demo(name, &f, &[])
}

#[test]
fn baseline_passes_what_it_holds_fails_what_is_new_and_reports_what_was_fixed() {
    let (whole, a, _) = runs();
    let dir = scratch("mb-baseline");
    let base = dir.join("nettrap-baseline.json");
    let text = update(&whole.dir.join("report.json"), &base);
    // Stable and diff-friendly: sorted, one entry per line, no pids, counts or times.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "{");
    assert_eq!(lines[1], "  \"nettrap_baseline\": 1,");
    let entries: Vec<&str> = lines[3..lines.len() - 2].to_vec();
    assert_eq!(entries.len(), 13, "{text}");
    assert!(entries.contains(
        &"    {\"test\":\"tests/test_cache.py::test_cache_get\",\"category\":\"redis\",\"host\":\"127.0.0.1\",\"port\":6379,\"verdict\":\"recorded\"},"
    ), "{text}");
    assert!(
        entries[0].contains("{\"test\":null,\"category\":\"memcached\""),
        "{text}"
    );
    // Sorted by test (calls outside any test first), category, host, port, verdict.
    let keys: Vec<Value> = entries
        .iter()
        .map(|l| serde_json::from_str(l.trim().trim_end_matches(',')).unwrap())
        .collect();
    let key = |v: &Value| {
        (
            v["test"].as_str().map(String::from),
            v["category"].to_string(),
        )
    };
    assert!(keys.windows(2).all(|w| key(&w[0]) <= key(&w[1])), "{text}");
    assert!(!text.contains("pid") && !text.contains("duration") && !text.contains("count"));
    // The same report gives the same bytes.
    assert_eq!(
        update(&whole.dir.join("report.json"), &dir.join("again.json")),
        text
    );

    // Nothing new: the run passes, and says so.
    let run = with_baseline("mb-bl-same", &base, &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("nettrap: nothing new since the baseline"),
        "{}",
        run.stderr()
    );
    assert_eq!(run.report["baseline"]["new"], json!([]));
    assert_eq!(run.report["baseline"]["fixed"], json!([]));
    assert_eq!(run.report["enforce"], true);

    // New tests with calls (the baseline knew only shard A): the run fails and names them.
    let base_a = dir.join("shard-a-baseline.json");
    update(&a.dir.join("report.json"), &base_a);
    let run = with_baseline("mb-bl-new", &base_a, &[]);
    assert_eq!(run.code(), 86, "{}", run.stderr());
    let err = run.stderr();
    assert!(err.contains("nettrap: new since the baseline"), "{err}");
    assert!(
        err.contains("  tests/test_payments.py::test_charge_card: external-api 127.0.0.1:443 (recorded) (1 call)"),
        "{err}"
    );
    assert!(
        err.contains(
            "  tests/test_search.py::test_index: elasticsearch 127.0.0.1:9200 (recorded) (2 calls)"
        ),
        "{err}"
    );
    assert!(
        !err.contains("test_cache_get: redis"),
        "in the baseline: {err}"
    );
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("nettrap: policy violated (6 calls new since the baseline ")
            && last.ends_with("the command itself exited 0; exiting 86"),
        "{last}"
    );
    assert_eq!(run.report["exit_code"], 86);
    assert_eq!(run.report["baseline"]["new"].as_array().unwrap().len(), 5);
    // Shard B's tests did not run in shard A: nothing of theirs is "fixed".
    assert_eq!(run.report["baseline"]["fixed"], json!([]));

    // An entry no call matches any more, of a test that ran: fixed, and the run passes.
    let mut v = read(&base);
    v["entries"].as_array_mut().unwrap().push(json!({
        "test": "tests/test_pure.py::test_addition", "category": "redis",
        "host": "cache.internal", "port": 6379, "verdict": "recorded"
    }));
    let base_fixed = dir.join("with-fixed.json");
    std::fs::write(&base_fixed, serde_json::to_string(&v).unwrap()).unwrap();
    let run = with_baseline("mb-bl-fixed", &base_fixed, &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let err = run.stderr();
    assert!(
        err.contains("nettrap: fixed since the baseline (1 entry;"),
        "{err}"
    );
    assert!(
        err.contains("  tests/test_pure.py::test_addition: redis cache.internal:6379 (recorded)"),
        "{err}"
    );

    // A verdict is part of the key: denying Elasticsearch makes its calls new (and their
    // recorded entries fixed) ...
    let run = with_baseline("mb-bl-deny", &base, &["--deny", "elasticsearch"]);
    assert_eq!(run.code(), 86, "{}", run.stderr());
    let err = run.stderr();
    assert!(
        err.contains("  tests/test_search.py::test_query: elasticsearch 127.0.0.1:9200 (denied)"),
        "{err}"
    );
    assert!(
        err.contains("  tests/test_search.py::test_query: elasticsearch 127.0.0.1:9200 (recorded)"),
        "{err}"
    );
    // ... and a baseline that accepts those denials passes the run (the calls were still
    // refused: the command's own status stands).
    let base_deny = dir.join("deny-baseline.json");
    update(&run.dir.join("report.json"), &base_deny);
    let run = with_baseline(
        "mb-bl-deny-accepted",
        &base_deny,
        &["--deny", "elasticsearch"],
    );
    assert_eq!(
        run.code(),
        1,
        "the ES tests fail on their own: {}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("nothing new since the baseline"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_missing_or_corrupt_baseline_is_refused_before_the_command_runs() {
    let dir = scratch("mb-bad-baseline");
    let marker = dir.join("ran");
    let sh = format!("touch {}", marker.display());
    for (name, content, why) in [
        ("missing.json", None, "cannot read it"),
        (
            "corrupt.json",
            Some("{\"nettrap_baseline\": 1, \"entries\": [\n{]"),
            "corrupt.json:2: not a nettrap baseline",
        ),
        (
            "future.json",
            Some("{\"nettrap_baseline\": 2, \"entries\": []}"),
            "baseline format 2 is not supported",
        ),
        (
            "report.json",
            Some("{\"schema_version\": 2}"),
            "not a nettrap baseline",
        ),
    ] {
        let path = dir.join(name);
        if let Some(c) = content {
            std::fs::write(&path, c).unwrap();
        }
        let o = Command::new(nettrap())
            .args(["run", "--baseline", path.to_str().unwrap(), "--report"])
            .arg(dir.join("r.json"))
            .args(["--", "sh", "-c", &sh])
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(name) && err.contains(why), "{why}: {err}");
        assert!(!marker.exists(), "the command ran");
    }
    let o = Command::new(nettrap())
        .args(["run", "--baseline"])
        .arg(dir.join("missing.json"))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("write one with `nettrap baseline update`"));
}

/// `nettrap baseline check [--report FILE] [--baseline FILE] [-o FILE]`: (exit code, stderr).
fn check(report: &Path, baseline: &Path, out: Option<&Path>) -> (i32, String) {
    let mut args = vec![
        "baseline",
        "check",
        "--report",
        report.to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
    ];
    if let Some(o) = out {
        args.extend(["-o", o.to_str().unwrap()]);
    }
    let o = nettrap_cmd(&args);
    (o.status.code().unwrap_or(-1), stderr(&o))
}

/// The lines of the summary's baseline lists (`  test: category dest (verdict) ...`).
fn listed(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.starts_with("  ")).collect()
}

/// A merged report of the two shards, checked without running anything, gets the verdict,
/// listing and exit status `run --baseline` gets on the whole suite: nothing new against the
/// whole suite's baseline; against shard A's, shard B's tests are new (86), listed alike.
#[test]
fn baseline_check_of_a_merged_report_agrees_with_run_baseline() {
    let (whole, a, b) = runs();
    let dir = scratch("mb-check");
    let merged = dir.join("merged.json");
    let o = nettrap_cmd(&[
        "merge",
        &report_path(a),
        &report_path(b),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let base = dir.join("whole-baseline.json");
    update(&whole.dir.join("report.json"), &base);
    let (code, err) = check(&merged, &base, None);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("nettrap: nothing new since the baseline"),
        "{err}"
    );

    let base_a = dir.join("shard-a-baseline.json");
    update(&a.dir.join("report.json"), &base_a);
    let checked = dir.join("checked.json");
    let (code, err) = check(&merged, &base_a, Some(&checked));
    let run = with_baseline("mb-check-run", &base_a, &[]);
    assert_eq!((code, run.code()), (86, 86), "{err}");
    assert!(err.contains("nettrap: new since the baseline"), "{err}");
    assert_eq!(listed(&err), listed(&run.stderr()), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("nettrap: policy violated (6 calls new since the baseline ")
            && last.ends_with("; exiting 86"),
        "{last}"
    );
    // The checked report holds the findings, as a run's does.
    let r = read(&checked);
    assert_eq!(r["baseline"]["new"], run.report["baseline"]["new"]);
    assert_eq!(r["baseline"]["fixed"], json!([]));
    assert_eq!(
        (r["exit_code"].as_i64(), r["enforce"].as_bool()),
        (Some(86), Some(true))
    );

    // Refused with one line: a missing baseline, a report that is not one.
    let (code, err) = check(&merged, &dir.join("missing.json"), None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("missing.json") && err.lines().count() == 1,
        "{err}"
    );
    let (code, err) = check(&base, &base_a, None);
    assert_eq!(code, 2, "{err}");
}

/// A baseline entry outside any test that the run did not make is "not seen", never "fixed":
/// a shard or a partial run may simply not have run what makes it. An entry of a test that ran
/// is fixed; one of a test that did not run is neither.
#[test]
fn unattributed_entries_missing_from_a_run_are_not_seen_not_fixed() {
    let (whole, a, _) = runs();
    let dir = scratch("mb-not-seen");
    let base = dir.join("nettrap-baseline.json");
    update(&whole.dir.join("report.json"), &base);
    let mut v = read(&base);
    let extra = [
        json!({"test": null, "category": "redis", "host": "cache.internal", "port": 6379, "verdict": "recorded"}),
        json!({"test": "tests/test_cache.py::test_cache_get", "category": "redis", "host": "cache.internal", "port": 6379, "verdict": "recorded"}),
        json!({"test": "tests/test_nowhere.py::test_gone", "category": "redis", "host": "cache.internal", "port": 6379, "verdict": "recorded"}),
    ];
    v["entries"]
        .as_array_mut()
        .unwrap()
        .extend(extra.iter().cloned());
    let base = dir.join("with-extra.json");
    std::fs::write(&base, serde_json::to_string(&v).unwrap()).unwrap();
    let checked = dir.join("checked.json");
    let (code, err) = check(&whole.dir.join("report.json"), &base, Some(&checked));
    assert_eq!(code, 0, "{err}");
    let r = read(&checked);
    assert_eq!(r["baseline"]["fixed"], json!([extra[1]]), "{err}");
    assert_eq!(r["baseline"]["not_seen"], json!([extra[0]]), "{err}");
    assert!(
        err.contains("nettrap: fixed since the baseline (1 entry;"),
        "{err}"
    );
    assert!(
        err.contains("nettrap: not seen in this run (1 entry outside any test")
            && err.contains("  (outside any test): redis cache.internal:6379 (recorded)"),
        "{err}"
    );
    // Shard A against the whole suite's baseline: the other shard's tests are neither fixed
    // nor new; the calls outside any test that shard A made are matched.
    let (code, err) = check(&a.dir.join("report.json"), &base, Some(&checked));
    assert_eq!(code, 0, "{err}");
    let r = read(&checked);
    assert!(
        r["baseline"]["fixed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| SHARD_A
                .iter()
                .any(|f| e["test"].as_str().unwrap().starts_with(f))),
        "{r:#}"
    );
}
