//! The Node.js runner adapter (src/adapters/node/preload.cjs) on the bundled jest suite
//! (fixtures/jest, expected calls in its EXPECTED.md): the attribution timeline it writes with
//! two workers and in band, a user's own NODE_OPTIONS kept, and the same suite under the real
//! `nettrap run`, whose report must hold the calls of the processes the timeline names.
//!
//! Each jest run gets a copy of the fixture with the shared `node_modules` (installed once by
//! `common::node_modules`) linked in, and a fresh jest cache directory: without timings from an
//! earlier run, jest 29 runs two test files on two worker processes under `--maxWorkers=2`.

mod common;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

const SEARCH: &str = "tests/search.test.js > search ";
const CACHE: &str = "tests/cache.test.js > cache ";

fn fixture() -> PathBuf {
    repo().join("fixtures/jest")
}

fn preload() -> String {
    repo()
        .join("src/adapters/node/preload.cjs")
        .to_str()
        .unwrap()
        .to_string()
}

/// A copy of the fixture in a fresh scratch directory, with the installed node_modules linked.
fn workspace(name: &str) -> PathBuf {
    let modules = node_modules(&fixture());
    let dir = scratch(name);
    copy_tree(&fixture(), &dir);
    std::os::unix::fs::symlink(modules, dir.join("node_modules")).unwrap();
    dir
}

/// `node jest.js` with a fresh cache and jest's own results written to `jest.json`.
fn jest_argv(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["node", "node_modules/jest/bin/jest.js", "--ci", "--json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.push(format!("--outputFile={}", dir.join("jest.json").display()));
    v.push(format!(
        "--cacheDirectory={}",
        dir.join(".jest-cache").display()
    ));
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

struct Jest {
    dir: PathBuf,
    out: Output,
    /// jest's own `--json` results.
    results: Value,
    timeline: Vec<Value>,
}

impl Jest {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

fn read_timeline(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no timeline at {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            assert!(l.len() < 4096, "timeline line over 4 KiB: {l}");
            serde_json::from_str(l).unwrap_or_else(|e| panic!("bad timeline line {l:?}: {e}"))
        })
        .collect()
}

/// Runs the jest suite with the adapter preloaded and NETTRAP_RUN_DIR set (no nettrap).
fn run_jest(name: &str, extra: &[&str], user_node_options: &str, env: &[(&str, &str)]) -> Jest {
    let dir = workspace(name);
    let rd = dir.join("rd");
    std::fs::create_dir(&rd).unwrap();
    std::fs::write(rd.join("timeline.jsonl"), "").unwrap();
    let argv = jest_argv(&dir, extra);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut cmd = isolated(&argv);
    cmd.current_dir(&dir)
        .env("NETTRAP_RUN_DIR", &rd)
        .env(
            "NODE_OPTIONS",
            format!("--require {} {user_node_options}", preload()),
        )
        .env_remove("NETTRAP_TEST")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running jest");
    let results = read_results(&dir, &out);
    Jest {
        timeline: read_timeline(&rd.join("timeline.jsonl")),
        dir,
        out,
        results,
    }
}

fn read_results(dir: &Path, out: &Output) -> Value {
    let text = std::fs::read_to_string(dir.join("jest.json")).unwrap_or_else(|e| {
        panic!(
            "jest wrote no results ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// jest's own view: test id (as the adapter forms it) -> outcome in timeline terms.
fn jest_outcomes(results: &Value, dir: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for file in results["testResults"].as_array().unwrap() {
        let path = Path::new(file["name"].as_str().unwrap());
        let rel = path
            .strip_prefix(dir)
            .or_else(|_| path.strip_prefix(dir.canonicalize().unwrap()))
            .unwrap();
        for a in file["assertionResults"].as_array().unwrap() {
            let id = format!("{} > {}", rel.display(), a["fullName"].as_str().unwrap());
            let outcome = match a["status"].as_str().unwrap() {
                "pending" | "todo" | "skipped" | "disabled" => "skipped",
                other => other,
            };
            assert!(m.insert(id, outcome.to_string()).is_none());
        }
    }
    m
}

fn ev<'a>(timeline: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    timeline.iter().filter(move |e| e["ev"] == kind)
}

fn t_of(e: &Value) -> u64 {
    e["t"].as_u64().expect("integer t")
}

/// What an event applies to: (pid, tid), tid = pid for a whole process (no `tid`: the process's
/// main thread, where jest runs tests unless `workerThreads`).
fn scope(e: &Value) -> (u64, u64) {
    let pid = e["pid"].as_u64().unwrap();
    (pid, e["tid"].as_u64().unwrap_or(pid))
}

/// One site, joined to the timeline as the report will: (what it is attributed to, phase, kind,
/// host, port, "file:line", library).
type SiteRow = (String, String, String, String, u64, String, String);

/// Joins each `site` to the test (or fixture) running in its process at its time.
fn joined_sites(timeline: &[Value]) -> Vec<SiteRow> {
    let mut rows = Vec::new();
    for s in ev(timeline, "site") {
        let t = t_of(s);
        assert!(s["tid"].is_u64(), "a site carries its thread: {s}");
        let same = |e: &&Value| scope(e) == scope(s) && t_of(e) <= t;
        let mut owner = "-".to_string();
        let mut phase = "-".to_string();
        // the latest start/end (or fixture start/end) in this process before the site
        let last = timeline
            .iter()
            .filter(same)
            .filter(|e| matches!(e["ev"].as_str(), Some("start" | "end" | "fixture")))
            .max_by_key(|e| t_of(e));
        if let Some(e) = last {
            match e["ev"].as_str().unwrap() {
                "start" => {
                    let id = e["test"].as_str().unwrap();
                    owner = id.to_string();
                    phase = timeline
                        .iter()
                        .filter(same)
                        .filter(|p| p["ev"] == "phase" && p["test"] == id)
                        .max_by_key(|p| t_of(p))
                        .map_or("-", |p| p["phase"].as_str().unwrap())
                        .to_string();
                }
                "fixture" if e["state"] == "start" => {
                    owner = format!("fixture {}", e["name"].as_str().unwrap())
                }
                _ => {}
            }
        }
        let at = match (s["file"].as_str(), s["line"].as_u64()) {
            (Some(f), Some(l)) => format!("{f}:{l}"),
            _ => "-".into(),
        };
        rows.push((
            owner,
            phase,
            s["kind"].as_str().unwrap().to_string(),
            s["host"].as_str().unwrap_or("-").to_string(),
            s["port"].as_u64().unwrap_or(0),
            at,
            s["library"].as_str().unwrap_or("-").to_string(),
        ));
    }
    rows.sort();
    rows
}

/// The sites of fixtures/jest/EXPECTED.md, joined.
fn expected_sites() -> Vec<SiteRow> {
    let row = |owner: &str, phase: &str, kind: &str, port: u64, at: &str, lib: &str| {
        (
            owner.to_string(),
            phase.to_string(),
            kind.to_string(),
            "127.0.0.1".to_string(),
            port,
            at.to_string(),
            lib.to_string(),
        )
    };
    let search = |name: &str| format!("{SEARCH}{name}");
    let cache = |name: &str| format!("{CACHE}{name}");
    let key = cache("with a connection gets a key");
    let mut v = vec![
        row(
            "fixture beforeAll",
            "-",
            "connect",
            9200,
            "tests/search.test.js:10",
            "-",
        ),
        row(
            &search("indexes a document"),
            "call",
            "connect",
            9200,
            "tests/search.test.js:15",
            "-",
        ),
        row(
            &search("indexes a document"),
            "call",
            "connect",
            9200,
            "tests/search.test.js:16",
            "-",
        ),
        row(
            &search("queries through the client"),
            "call",
            "connect",
            9200,
            "tests/search.test.js:20",
            "fakeclient",
        ),
        row(
            &search("sends a datagram"),
            "call",
            "sendto",
            53,
            "tests/search.test.js:26",
            "-",
        ),
        row(
            &key,
            "setup",
            "connect",
            6379,
            "tests/cache.test.js:11",
            "-",
        ),
        row(&key, "call", "connect", 6379, "tests/cache.test.js:19", "-"),
        row(
            &key,
            "teardown",
            "connect",
            6379,
            "tests/cache.test.js:15",
            "-",
        ),
        // the child process of "warms up in a child process": `node -e`, no test of its own, no
        // file (its code is [eval])
        row("-", "-", "connect", 6379, "-", "-"),
    ];
    v.sort();
    v
}

/// Everything the timeline of one full run of the suite must say.
fn check_timeline(j: &Jest, timeline: &[Value], roles: &[&str], threads: bool) {
    let outcomes = jest_outcomes(&j.results, &j.dir);
    assert_eq!(j.results["numTotalTests"], 10, "EXPECTED.md: 10 tests");
    assert_eq!(outcomes.len(), 10);

    assert!(
        ev(timeline, "adapter").next().is_none(),
        "adapter failed: {timeline:?}"
    );

    // every test jest counted has exactly one start and one end, with jest's outcome
    let mut starts: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in ev(timeline, "start") {
        assert_eq!(e["runner"], "jest");
        assert!(
            e["test"]
                .as_str()
                .unwrap()
                .starts_with(e["file"].as_str().unwrap())
        );
        starts
            .entry(e["test"].as_str().unwrap().into())
            .or_default()
            .push(e);
    }
    let mut ends: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in ev(timeline, "end") {
        ends.entry(e["test"].as_str().unwrap().into())
            .or_default()
            .push(e);
    }
    assert_eq!(
        starts.keys().collect::<Vec<_>>(),
        outcomes.keys().collect::<Vec<_>>(),
        "test ids in the timeline vs jest's results"
    );
    assert_eq!(
        starts.keys().collect::<Vec<_>>(),
        ends.keys().collect::<Vec<_>>()
    );
    for (id, outcome) in &outcomes {
        let (s, e) = (&starts[id], &ends[id]);
        assert_eq!((s.len(), e.len()), (1, 1), "{id}: one start, one end");
        assert_eq!(e[0]["outcome"].as_str(), Some(outcome.as_str()), "{id}");
        assert_eq!(s[0]["pid"], e[0]["pid"], "{id}");
        assert!(t_of(s[0]) <= t_of(e[0]), "{id}");
        if outcome == "passed" {
            assert!(e[0]["duration_s"].as_f64().unwrap() >= 0.0, "{id}");
        }
    }
    let skipped: BTreeSet<&str> = outcomes
        .iter()
        .filter(|(_, o)| *o == "skipped")
        .map(|(id, _)| id.as_str())
        .collect();
    let want_skipped = [
        "tests/cache.test.js > cache evicts old keys".to_string(),
        format!("{SEARCH}reindexes everything"),
    ];
    assert_eq!(
        skipped,
        want_skipped
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
    );

    // phases, in order, for a test with hooks, a plain one and a skipped one
    let phases = |id: &str| -> Vec<String> {
        ev(timeline, "phase")
            .filter(|e| e["test"] == id)
            .map(|e| e["phase"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        phases(&format!("{CACHE}with a connection gets a key")),
        ["setup", "call", "teardown"]
    );
    assert_eq!(
        phases(&format!("{CACHE}computes a key name")),
        ["setup", "call", "teardown"]
    );
    assert_eq!(phases(&format!("{SEARCH}reindexes everything")), ["setup"]);

    // the beforeAll of search.test.js is a fixture, outside any test
    let fixtures: Vec<_> = ev(timeline, "fixture")
        .map(|e| {
            (
                e["state"].as_str().unwrap(),
                e["name"].as_str().unwrap(),
                e["scope"].as_str().unwrap(),
                e["location"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fixtures,
        [
            ("start", "beforeAll", "file", "tests/search.test.js"),
            ("end", "beforeAll", "file", "tests/search.test.js")
        ]
    );

    assert_eq!(joined_sites(timeline), expected_sites());

    // process roles: one per runner process (or worker thread); every test ran in one of them
    let procs: BTreeMap<(u64, u64), &str> = ev(timeline, "process")
        .map(|e| {
            assert_eq!(e["runner"], "jest");
            (scope(e), e["role"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        procs.values().copied().collect::<BTreeSet<_>>(),
        roles.iter().copied().collect::<BTreeSet<_>>(),
        "roles"
    );
    assert_eq!(procs.len(), roles.len(), "one process event per process");
    for s in starts.values().flatten() {
        assert!(procs.contains_key(&scope(s)), "{s}");
    }
    // each test file ran in one worker, and every worker was used
    let file_scopes: BTreeMap<&str, BTreeSet<(u64, u64)>> =
        starts.values().flatten().fold(BTreeMap::new(), |mut m, s| {
            m.entry(s["file"].as_str().unwrap())
                .or_default()
                .insert(scope(s));
            m
        });
    assert!(
        file_scopes.values().all(|p| p.len() == 1),
        "{file_scopes:?}"
    );
    let used: BTreeSet<(u64, u64)> = file_scopes.values().flatten().copied().collect();
    assert_eq!(used.len(), roles.len());
    // threads: the workers are threads of one process (tid != pid); else processes (no tid)
    let pids: BTreeSet<u64> = used.iter().map(|s| s.0).collect();
    if threads {
        assert_eq!(pids.len(), 1, "{used:?}");
        assert!(used.iter().all(|(p, t)| p != t), "{used:?}");
    } else {
        assert_eq!(pids.len(), roles.len(), "{used:?}");
        assert!(starts.values().flatten().all(|s| s.get("tid").is_none()));
        assert!(ev(timeline, "site").all(|s| s["tid"] == s["pid"]));
    }
}

#[test]
fn jest_two_workers_timeline() {
    let j = run_jest("jest-workers", &["--maxWorkers=2"], "", &[]);
    assert!(j.out.status.success(), "jest failed:\n{}", j.stderr());
    check_timeline(&j, &j.timeline, &["jest worker 1", "jest worker 2"], false);
}

#[test]
fn jest_in_band_keeps_user_node_options() {
    // The user's own preload sets USER_SETUP_PID in each process; with USER_SETUP_EXPECTED the
    // test "keeps the user NODE_OPTIONS" fails unless it ran in the test's process.
    let j = run_jest(
        "jest-in-band",
        &["-i"],
        "--require ./user-setup.js",
        &[("USER_SETUP_EXPECTED", "1")],
    );
    assert!(j.out.status.success(), "jest failed:\n{}", j.stderr());
    let outcomes = jest_outcomes(&j.results, &j.dir);
    assert_eq!(
        outcomes[&format!("{CACHE}keeps the user NODE_OPTIONS")],
        "passed"
    );
    check_timeline(&j, &j.timeline, &["jest in-band"], false);
}

#[test]
fn jest_worker_threads() {
    // `--workerThreads`: both files run at once in one process, on two threads; the adapter's
    // start/phase/end then carry the thread's tid, and sites the tid of the calling thread.
    let j = run_jest(
        "jest-threads",
        &["--maxWorkers=2", "--workerThreads"],
        "",
        &[],
    );
    assert!(j.out.status.success(), "jest failed:\n{}", j.stderr());
    check_timeline(&j, &j.timeline, &["jest worker 1", "jest worker 2"], true);
}

#[test]
fn jest_custom_environment_keeps_its_handler() {
    // A custom environment with its own async handleTestEvent (it logs every test_start): the
    // adapter chains to it, and the timeline is as complete as with jest's own environment.
    let log = scratch("jest-custom-env-log").join("events.log");
    let j = run_jest(
        "jest-custom-env",
        &["--maxWorkers=2", "--testEnvironment=./custom-env.js"],
        "",
        &[("CUSTOM_ENV_LOG", log.to_str().unwrap())],
    );
    assert!(j.out.status.success(), "jest failed:\n{}", j.stderr());
    check_timeline(&j, &j.timeline, &["jest worker 1", "jest worker 2"], false);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().count(), 10, "{logged}");
}

#[test]
fn jest_user_node_options_check_can_fail() {
    // The same expectation without the user's preload: that test must fail (so the previous
    // test's pass means something), and the adapter reports the failure as jest does.
    let j = run_jest(
        "jest-no-user-setup",
        &["-i", "tests/cache.test.js"],
        "",
        &[("USER_SETUP_EXPECTED", "1")],
    );
    assert!(!j.out.status.success());
    let id = format!("{CACHE}keeps the user NODE_OPTIONS");
    assert_eq!(jest_outcomes(&j.results, &j.dir)[&id], "failed");
    let end: Vec<_> = ev(&j.timeline, "end").filter(|e| e["test"] == id).collect();
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["outcome"], "failed");
}

#[test]
fn no_run_dir_no_timeline() {
    // Without NETTRAP_RUN_DIR the preload does nothing: the suite passes, nothing is written,
    // and the child process sees no NETTRAP_TEST (the fixture checks it).
    let dir = workspace("jest-no-run-dir");
    let argv = jest_argv(&dir, &["-i"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = isolated(&argv)
        .current_dir(&dir)
        .env_remove("NETTRAP_RUN_DIR")
        .env_remove("NETTRAP_TEST")
        .env("NODE_OPTIONS", format!("--require {}", preload()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = read_results(&dir, &out);
    assert_eq!(results["numPassedTests"], 8);
    let outcomes = jest_outcomes(&results, &dir);
    assert_eq!(
        outcomes[&format!("{CACHE}warms up in a child process")],
        "passed"
    );
}

#[test]
fn jest_under_nettrap_run() {
    let dir = workspace("jest-nettrap");
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let report = dir.join("report.json");
    let jest = jest_argv(&dir, &["--maxWorkers=2"]);
    let mut argv = vec![
        nettrap().to_string(),
        "run".into(),
        "--report".into(),
        report.to_str().unwrap().into(),
        "--".into(),
    ];
    argv.extend(jest);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = isolated(&argv)
        .current_dir(&dir)
        // No NODE_OPTIONS: nettrap loads its own adapter (zero edits to the project).
        .env_remove("NODE_OPTIONS")
        .env("NETTRAP_KEEP_RUN_DIR", "1")
        .env("TMPDIR", &tmp) // where nettrap makes (and here keeps) its run directory
        .env_remove("NETTRAP_RUN_DIR")
        .env_remove("NETTRAP_TEST")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let run = Run {
        report: serde_json::from_str(&text).unwrap(),
        todo: String::new(),
        dir: dir.clone(),
        out,
    };
    assert_eq!(run.code(), 0, "{}", run.stderr());

    // the timeline the adapter wrote into nettrap's own run directory
    let run_dirs: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("nettrap-")
        })
        .collect();
    assert_eq!(run_dirs.len(), 1, "{run_dirs:?}");
    let timeline = read_timeline(&run_dirs[0].join("timeline.jsonl"));
    let j = Jest {
        results: read_results(&dir, &run.out),
        timeline: Vec::new(),
        dir: dir.clone(),
        out: run.out.clone(),
    };
    check_timeline(&j, &timeline, &["jest worker 1", "jest worker 2"], false);

    // the report records every call: per port, as EXPECTED.md counts them
    let calls: Vec<&Value> = run.report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["calls"].as_array().unwrap())
        .chain(run.report["unattributed"].as_array().unwrap())
        .collect();
    let mut per_port: BTreeMap<u64, u64> = BTreeMap::new();
    for c in &calls {
        *per_port.entry(c["port"].as_u64().unwrap()).or_default() += c["count"].as_u64().unwrap();
    }
    assert_eq!(
        per_port,
        BTreeMap::from([(53, 1), (6379, 4), (9200, 4)]),
        "{}",
        run.report
    );

    // and each call was made by a process the timeline has a site for, as many times
    let mut call_pids: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for c in &calls {
        *call_pids
            .entry((
                c["process"]["pid"].as_u64().unwrap(),
                c["port"].as_u64().unwrap(),
            ))
            .or_default() += c["count"].as_u64().unwrap();
    }
    let mut site_pids: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for s in ev(&timeline, "site") {
        *site_pids
            .entry((s["pid"].as_u64().unwrap(), s["port"].as_u64().unwrap()))
            .or_default() += 1;
    }
    assert_eq!(call_pids, site_pids);
    // each attributed call was made by the process the timeline says ran its test (or, for the
    // child-process test, by a process that is no worker: the child)
    let start_pid: BTreeMap<&str, u64> = ev(&timeline, "start")
        .map(|e| (e["test"].as_str().unwrap(), e["pid"].as_u64().unwrap()))
        .collect();
    let child_test = format!("{CACHE}warms up in a child process");
    let mut attributed = 0;
    for test in run.report["tests"].as_array().unwrap() {
        let id = test["test"].as_str().unwrap();
        for c in test["calls"].as_array().unwrap() {
            let pid = c["process"]["pid"].as_u64().unwrap();
            if id == child_test {
                assert!(!start_pid.values().any(|p| *p == pid), "{c}");
            } else {
                assert_eq!(Some(&pid), start_pid.get(id), "{id}: {c}");
            }
            attributed += c["count"].as_u64().unwrap();
        }
    }
    assert_eq!(attributed, 8, "all but the beforeAll connect");
    let key = format!("{CACHE}with a connection gets a key");

    // the report joins the calls to the adapter's timeline: every test jest ran, with its
    // outcome; the runner recognised; each call on its test and phase, with its site
    let r = "recorded";
    assert_eq!(run.report["runner"], "jest");
    assert_eq!(run.report["tests_total"], 10, "jest: 10 total");
    assert_eq!(run.all_tests().len(), 10);
    assert_eq!(run.test(&key)["outcome"], "passed");
    assert_eq!(
        run.calls(Some(&format!("{SEARCH}sends a datagram"))),
        vec![t("dns", "127.0.0.1", 53, "udp", "call", r, 1)],
        "a datagram the supervisor sees inside the worker is the test's"
    );
    let client = &run.test(&format!("{SEARCH}queries through the client"))["calls"][0];
    assert_eq!(
        (client["site"].as_str(), client["library"].as_str()),
        (Some("tests/search.test.js:20"), Some("fakeclient")),
        "{client}"
    );
    let before_all = &run.report["unattributed"][0];
    assert!(
        before_all["fixture"]
            .as_str()
            .is_some_and(|f| f.contains("beforeAll")),
        "{before_all}"
    );
    assert_eq!(
        run.calls(Some(&key)),
        vec![
            t("redis", "127.0.0.1", 6379, "tcp", "call", r, 1),
            t("redis", "127.0.0.1", 6379, "tcp", "setup", r, 1),
            t("redis", "127.0.0.1", 6379, "tcp", "teardown", r, 1),
        ]
    );
    assert_eq!(
        run.calls(Some(&format!("{CACHE}warms up in a child process"))),
        vec![t("redis", "127.0.0.1", 6379, "tcp", "call", r, 1)]
    );
    assert_eq!(
        run.calls(Some(&format!("{SEARCH}indexes a document"))),
        vec![t("elasticsearch", "127.0.0.1", 9200, "tcp", "call", r, 1); 2],
        "two connects, from two call sites (lines 15 and 16)"
    );
    assert_eq!(
        run.calls(Some(&format!("{SEARCH}queries through the client"))),
        vec![t("elasticsearch", "127.0.0.1", 9200, "tcp", "call", r, 1)]
    );
}

#[test]
fn jest_nested_in_an_outer_test() {
    // jest started from inside another test (NETTRAP_TEST already set): every test names the
    // outer one, and the adapter leaves NETTRAP_TEST alone (the child-process test, which expects
    // its own id there, is left out).
    let outer = "tests/test_js.py::test_runs_jest";
    let outer_env = format!("{outer} (call)");
    let j = run_jest(
        "jest-nested",
        &["-i", "tests/search.test.js"],
        "",
        &[("NETTRAP_TEST", outer_env.as_str())],
    );
    assert!(j.out.status.success(), "jest failed:\n{}", j.stderr());
    let starts: Vec<_> = ev(&j.timeline, "start").collect();
    assert_eq!(starts.len(), 5);
    assert!(starts.iter().all(|s| s["outer"] == outer), "{starts:?}");
}

/// A small Node program run with the adapter preloaded, in the isolated namespace.
fn node_program(name: &str, files: &[(&str, &str)], run_dir: Option<&Path>) -> (Output, PathBuf) {
    let dir = scratch(name);
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let mut cmd = isolated(&["node", "main.js"]);
    cmd.current_dir(&dir)
        .env("NODE_OPTIONS", format!("--require {}", preload()))
        .env_remove("NETTRAP_TEST")
        .env_remove("NETTRAP_RUN_DIR")
        .stdin(Stdio::null());
    if let Some(rd) = run_dir {
        cmd.env("NETTRAP_RUN_DIR", rd);
    }
    (cmd.output().unwrap(), dir)
}

const REFUSED: &str = "const net = require('net');\n\
     const s = net.connect(1, '127.0.0.1');\n\
     s.on('error', (e) => console.log('main', e.code));\n";

#[test]
fn unknown_jest_layout_is_reported_once() {
    // A jest-circus/runner that exports no adapter, then jest-jasmine2: one `adapter` event, and
    // the program runs on (its connect still gets its site, from main.js).
    let rd = scratch("node-adapter-failed-rd");
    let main = format!("require('jest-circus/runner');\nrequire('jest-jasmine2');\n{REFUSED}");
    let (out, _) = node_program(
        "node-adapter-failed",
        &[
            (
                "node_modules/jest-circus/runner.js",
                "module.exports = 42;\n",
            ),
            (
                "node_modules/jest-jasmine2/index.js",
                "module.exports = {};\n",
            ),
            ("main.js", &main),
        ],
        Some(&rd),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "main ECONNREFUSED\n");
    let timeline = read_timeline(&rd.join("timeline.jsonl"));
    let failed: Vec<_> = ev(&timeline, "adapter").collect();
    assert_eq!(failed.len(), 1, "{timeline:?}");
    assert_eq!(failed[0]["runner"], "jest");
    assert_eq!(failed[0]["status"], "failed");
    assert!(
        failed[0]["why"]
            .as_str()
            .unwrap()
            .contains("jest-circus/runner")
    );
    let sites: Vec<_> = ev(&timeline, "site")
        .map(|s| (s["port"].as_u64(), s["file"].as_str(), s["line"].as_u64()))
        .collect();
    assert_eq!(sites, [(Some(1), Some("main.js"), Some(4))]);
}

#[test]
fn unwritable_timeline_never_breaks_the_program() {
    // NETTRAP_RUN_DIR names a directory that does not exist: nothing can be written, and the
    // program sees exactly what it would without the adapter.
    let missing = scratch("node-no-timeline").join("missing");
    let (out, _) = node_program(
        "node-no-timeline-prog",
        &[("main.js", REFUSED)],
        Some(&missing),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "main ECONNREFUSED\n");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!missing.exists());
}

/// node:test (fixtures/node-test, see its EXPECTED.md) under `nettrap run -- node --test`: every
/// test with its outcome, calls on their tests in their phases (beforeEach setup, afterEach
/// teardown; a subtest's on the subtest, a child process's on its parent's test), call sites.
#[test]
fn node_test_runner_under_nettrap_run() {
    let run = run_in(
        "node-test",
        &repo().join("fixtures/node-test"),
        &[],
        &["node", "--test", "tests/"],
    );
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    assert!(run.stdout().contains("# tests 6"), "{}", run.stdout());
    let r = &run.report;
    assert_eq!(
        (r["runner"].as_str(), r["tests_total"].as_u64()),
        (Some("node:test"), Some(6))
    );
    let id = |t: &str| format!("tests/net.test.js > {t}");
    let all = run.all_tests();
    assert_eq!(
        all,
        [
            ("cache", "passed"),
            ("cache > gets", "passed"),
            ("child", "passed"),
            ("search > indexes", "passed"),
            ("search > is pure", "passed"),
            ("search > skipped", "skipped"),
        ]
        .map(|(t, o)| (id(t), o.to_string()))
    );
    let rec = "recorded";
    // Each call in its phase: beforeEach setup, the test's body call, afterEach teardown (a
    // test's own afterEach runs inside each of its subtests: theirs).
    let es = |port, phase, n| t("elasticsearch", "127.0.0.1", port, "tcp", phase, rec, n);
    let pg = |phase| t("postgres", "127.0.0.1", 5432, "tcp", phase, rec, 1);
    assert_eq!(
        run.calls(Some(&id("search > indexes"))),
        vec![es(9200, "call", 2), es(9300, "setup", 1), pg("teardown")]
    );
    assert_eq!(
        run.calls(Some(&id("search > is pure"))),
        vec![es(9300, "setup", 1), pg("teardown")]
    );
    assert_eq!(run.calls(Some(&id("search > skipped"))), vec![]);
    assert_eq!(
        run.calls(Some(&id("cache > gets"))),
        vec![
            t("rabbitmq", "127.0.0.1", 5672, "tcp", "teardown", rec, 1),
            t("redis", "127.0.0.1", 6379, "tcp", "call", rec, 1)
        ]
    );
    assert_eq!(
        run.calls(Some(&id("cache"))),
        vec![t("memcached", "127.0.0.1", 11211, "tcp", "call", rec, 1)]
    );
    // A child process's call: its parent's test and phase at that moment.
    assert_eq!(run.calls(Some(&id("child"))), vec![pg("call")]);
    assert_eq!(run.calls(None), vec![]);
    assert_eq!(
        run.test(&id("search > indexes"))["calls"][0]["site"],
        "tests/net.test.js:8"
    );
}

/// vitest (fixtures/vitest, see its EXPECTED.md) under `nettrap run -- npx vitest run`, in both
/// of its pools: every test vitest counts, with its outcome, each call on its test (beforeEach
/// included), call sites and worker roles.
#[test]
fn vitest_under_nettrap_run() {
    let fixture = repo().join("fixtures/vitest");
    let modules = node_modules(&fixture);
    for pool in ["forks", "threads"] {
        let dir = scratch(&format!("vitest-{pool}"));
        copy_tree(&fixture, &dir);
        std::os::unix::fs::symlink(&modules, dir.join("node_modules")).unwrap();
        let pool_flag = format!("--pool={pool}");
        let run = run_in(
            &format!("vitest-run-{pool}"),
            &dir,
            &[],
            &["npx", "--no-install", "vitest", "run", &pool_flag],
        );
        assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
        assert!(
            run.stdout_plain().contains("4 passed | 1 skipped (5)"),
            "{}",
            run.stdout()
        );
        let r = &run.report;
        assert_eq!(
            (r["runner"].as_str(), r["tests_total"].as_u64()),
            (Some("vitest"), Some(5)),
            "{pool}"
        );
        let net = |t: &str| format!("tests/net.test.js > {t}");
        assert_eq!(
            run.all_tests(),
            vec![
                (net("cache"), "passed".to_string()),
                (net("search > indexes"), "passed".to_string()),
                (net("search > is pure"), "passed".to_string()),
                (net("search > skipped"), "skipped".to_string()),
                (
                    "tests/other.test.js > memcached".to_string(),
                    "passed".to_string()
                ),
            ],
            "{pool}"
        );
        let rec = "recorded";
        // Each call in its phase: beforeEach setup, the test call, afterEach teardown.
        let es = |port, phase| t("elasticsearch", "127.0.0.1", port, "tcp", phase, rec, 1);
        let pg = t("postgres", "127.0.0.1", 5432, "tcp", "teardown", rec, 1);
        assert_eq!(
            run.calls(Some(&net("search > indexes"))),
            vec![es(9200, "call"), es(9300, "setup"), pg.clone()],
            "{pool}"
        );
        assert_eq!(
            run.calls(Some(&net("search > is pure"))),
            vec![es(9300, "setup"), pg.clone()],
            "{pool}"
        );
        assert_eq!(
            run.calls(Some(&net("cache"))),
            vec![t("redis", "127.0.0.1", 6379, "tcp", "call", rec, 1)],
            "{pool}"
        );
        assert_eq!(
            run.calls(Some("tests/other.test.js > memcached")),
            vec![t("memcached", "127.0.0.1", 11211, "tcp", "call", rec, 1)],
            "{pool}"
        );
        assert_eq!(run.calls(None), vec![], "{pool}");
        let call = &run.test(&net("cache"))["calls"][0];
        assert_eq!(call["site"], "tests/net.test.js:7", "{pool}");
        assert!(
            call["process"]["role"]
                .as_str()
                .is_some_and(|r| r.starts_with("vitest worker ")),
            "{call}"
        );
    }
}

/// The Node adapter's fallback: in a run whose timeline cannot be written (made read-only under
/// the command), node:test's file process and the child one of its tests starts both fail to
/// write; the run goes on as without nettrap, nothing is written into node:test's output, and
/// nettrap says it once, after the command, and in the report (the adapters append the
/// failure to `adapter-failures.jsonl` beside the timeline).
#[test]
fn node_adapter_that_cannot_write_the_timeline_is_said_once() {
    // The mount is undone before the command ends, so that nettrap can remove its run
    // directory (a mount point cannot be unlinked).
    let script = "t=\"$NETTRAP_RUN_DIR/timeline.jsonl\"; mount --bind \"$t\" \"$t\" && \
                  mount -o remount,bind,ro \"$t\" && { node --test tests/; rc=$?; \
                  umount \"$t\"; exit $rc; }";
    let run = run_in(
        "node-test-adapter-fails",
        &repo().join("fixtures/node-test"),
        &["--runner", "node-test"],
        &["sh", "-c", script],
    );
    let (out, err) = (run.stdout(), run.stderr());
    assert_eq!(run.code(), 0, "{out}\n{err}");
    assert!(out.contains("# pass 5"), "{out}");
    assert!(!out.contains("nettrap"), "{out}");
    let said: Vec<&str> = err.lines().filter(|l| l.contains("node adapter")).collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(
        said[0].starts_with("nettrap: warning: node adapter, in ")
            && said[0].contains("processes: cannot write the timeline (EROFS)"),
        "{err}"
    );
    let failures = run.report["adapter_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    // The calls are still there, unattributed (no timeline, no test).
    assert_eq!(run.report["tests_total"], Value::Null);
    assert!(!run.calls(None).is_empty());
}
