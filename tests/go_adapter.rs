//! The `go test` adapter: `nettrap run -- go test ...` runs each test binary through
//! `nettrap go-exec`, which writes every test's start/pause/cont/end to the attribution timeline,
//! stamped so that each call of the test binary falls in the window of the test that made it
//! (checked by joining the event log to the timeline here, also under CPU load), and shows the
//! user what a plain `go test` shows (`-json`, `-v`, neither).

mod common;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Once;

const ROOT: &str = "example.com/nettrap-fixture";
const ADAPTER: &str = "example.com/nettrap-fixture/adapter";

fn go_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        go_toolchain();
        // SAFETY: set once, before any test of this binary spawns a process that reads it
        // (every test calls this first).
        unsafe { std::env::set_var("NETTRAP_KEEP_RUN_DIR", "1") };
    });
}

fn fixture() -> PathBuf {
    repo().join("fixtures/go")
}

/// A run of `go test` under nettrap, with its kept run directory read back.
struct GoRun {
    run: Run,
    timeline: Vec<Value>,
    /// (pid, port, time) of every call the engines recorded.
    calls: Vec<(u32, u16, u64)>,
}

fn go_run(name: &str, go_args: &[&str]) -> GoRun {
    go_env();
    let mut cmd = vec!["go", "test"];
    cmd.extend_from_slice(go_args);
    let run = run_in(name, &fixture(), &["-q"], &cmd);
    let err = run.stderr();
    let dir = err
        .lines()
        .find_map(|l| l.strip_prefix("nettrap: run directory kept: "))
        .unwrap_or_else(|| panic!("no run directory on stderr:\n{err}"));
    let dir = Path::new(dir);
    let timeline = std::fs::read_to_string(dir.join("timeline.jsonl"))
        .unwrap_or_else(|e| panic!("no timeline ({e}); stderr:\n{err}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let log = std::fs::read(dir.join("events.log")).unwrap();
    let calls = nettrap_core::event::decode(&log)
        .unwrap()
        .records
        .into_iter()
        .filter_map(|r| match r {
            nettrap_core::event::Record::Call(c) => {
                Some((c.call.pid, c.call.dest.port, c.call.time_ns))
            }
            _ => None,
        })
        .collect();
    let _ = std::fs::remove_dir_all(dir);
    GoRun {
        run,
        timeline,
        calls,
    }
}

impl GoRun {
    fn events(&self, ev: &str) -> Vec<&Value> {
        self.timeline.iter().filter(|e| e["ev"] == ev).collect()
    }

    /// The test binary's pid for each package, from the `process` events.
    fn pids(&self) -> BTreeMap<String, u32> {
        self.events("process")
            .iter()
            .map(|e| {
                assert_eq!(e["runner"], "go");
                (
                    e["role"].as_str().unwrap().to_string(),
                    e["pid"].as_u64().unwrap() as u32,
                )
            })
            .collect()
    }

    /// Tests running in process `pid` at time `t`: started, not ended, not paused.
    fn running_at(&self, pid: u32, t: u64) -> BTreeSet<String> {
        let mut running = BTreeSet::new();
        for e in &self.timeline {
            if e["pid"].as_u64() != Some(pid as u64) || e["t"].as_u64().unwrap() > t {
                continue;
            }
            let Some(test) = e["test"].as_str() else {
                continue;
            };
            match e["ev"].as_str().unwrap() {
                "start" | "cont" => running.insert(test.to_string()),
                "pause" | "end" => running.remove(test),
                other => panic!("unexpected event {other}"),
            };
        }
        running
    }
}

/// The test that dials `port` (fixtures/go/EXPECTED.md), and whether it runs alone.
fn dialer(port: u16) -> (&'static str, bool) {
    match port {
        9200 => ("example.com/nettrap-fixture/TestSearchIndex", true),
        6379 => ("example.com/nettrap-fixture/TestCacheGet", true),
        10001 => ("example.com/nettrap-fixture/adapter/TestSeqOne", true),
        10002 => ("example.com/nettrap-fixture/adapter/TestSeqTwo", true),
        10003 => (
            "example.com/nettrap-fixture/adapter/TestWithSub/first",
            false,
        ),
        10004 => ("example.com/nettrap-fixture/adapter/TestWithSub", true),
        10005 => ("example.com/nettrap-fixture/adapter/TestParallelA", false),
        10006 => ("example.com/nettrap-fixture/adapter/TestParallelB", false),
        _ => panic!("unexpected call to port {port}"),
    }
}

/// Every call falls where its test runs: alone for sequential tests, with its parent for the
/// subtest, with its parallel peer for the parallel pair (both meet before dialing).
fn assert_calls_in_their_tests(r: &GoRun) {
    for &(pid, port, t) in &r.calls {
        let (test, alone) = dialer(port);
        let running = r.running_at(pid, t);
        let want: Vec<&str> = match port {
            10003 => vec![test, "example.com/nettrap-fixture/adapter/TestWithSub"],
            10005 | 10006 => vec![
                "example.com/nettrap-fixture/adapter/TestParallelA",
                "example.com/nettrap-fixture/adapter/TestParallelB",
            ],
            _ => {
                assert!(alone);
                vec![test]
            }
        };
        let want: BTreeSet<String> = want.into_iter().map(String::from).collect();
        assert_eq!(
            running, want,
            "call to {port} by pid {pid} at {t}: running tests"
        );
    }
}

/// What `go test -json` itself counts: distinct (package, test) with a `run` action.
fn go_count(args: &[&str]) -> usize {
    go_env();
    let mut argv = vec!["go", "test", "-json"];
    argv.extend_from_slice(args);
    let out = isolated(&argv)
        .current_dir(fixture())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let tests: BTreeSet<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["Action"] == "run")
        .map(|e| {
            (
                e["Package"].as_str().unwrap().to_string(),
                e["Test"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    tests.len()
}

#[test]
fn every_test_is_in_the_timeline_and_every_call_in_its_tests_window() {
    let args = ["-tags", "nettrap_adapter", "-parallel", "2", "./..."];
    let r = go_run("go-adapter-timeline", &args);
    assert_eq!(r.run.code(), 0, "{}\n{}", r.run.stdout(), r.run.stderr());

    let pids = r.pids();
    assert_eq!(
        pids.keys().map(String::as_str).collect::<Vec<_>>(),
        [ROOT, ADAPTER]
    );
    // Each test starts once and ends once, with its outcome; as many as go counts itself.
    let mut outcomes = BTreeMap::new();
    for s in r.events("start") {
        assert_eq!(s["runner"], "go");
        let id = s["test"].as_str().unwrap();
        assert!(
            outcomes.insert(id.to_string(), None::<String>).is_none(),
            "{id} started twice"
        );
        let pkg = if id.starts_with(&format!("{ADAPTER}/")) {
            ADAPTER
        } else {
            ROOT
        };
        assert_eq!(s["pid"].as_u64(), Some(pids[pkg] as u64), "{id}");
    }
    for e in r.events("end") {
        let id = e["test"].as_str().unwrap();
        let slot = outcomes
            .get_mut(id)
            .unwrap_or_else(|| panic!("{id} ended unstarted"));
        assert!(slot.is_none(), "{id} ended twice");
        *slot = Some(e["outcome"].as_str().unwrap().to_string());
        assert!(e["duration_s"].as_f64().is_some(), "{e}");
    }
    let want: BTreeMap<String, Option<String>> = [
        "TestSearchIndex",
        "TestCacheGet",
        "TestPure",
        "adapter/TestSeqOne",
        "adapter/TestSeqTwo",
        "adapter/TestWithSub",
        "adapter/TestWithSub/first",
        "adapter/TestWithSub/second",
        "adapter/TestParallelA",
        "adapter/TestParallelB",
        "adapter/TestNoCall",
        "adapter/TestSkipped",
    ]
    .iter()
    .map(|t| {
        let outcome = if t.ends_with("Skipped") {
            "skipped"
        } else {
            "passed"
        };
        (format!("{ROOT}/{t}"), Some(outcome.to_string()))
    })
    .collect();
    assert_eq!(outcomes, want);
    assert_eq!(outcomes.len(), go_count(&args));
    // The parallel pair paused and continued.
    for ev in ["pause", "cont"] {
        let mut tests: Vec<_> = r.events(ev).iter().map(|e| e["test"].clone()).collect();
        tests.sort_by_key(|t| t.to_string());
        assert_eq!(
            tests,
            [
                format!("{ADAPTER}/TestParallelA"),
                format!("{ADAPTER}/TestParallelB")
            ],
            "{ev}"
        );
    }

    // The report has every call, made by the test binary the timeline names.
    let mut by_port: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for c in r.run.report["unattributed"]
        .as_array()
        .unwrap()
        .iter()
        .chain(
            r.run.report["tests"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|t| t["calls"].as_array().unwrap()),
        )
    {
        let port = c["port"].as_u64().unwrap();
        let pkg = if port < 10000 { ROOT } else { ADAPTER };
        assert_eq!(c["process"]["pid"].as_u64(), Some(pids[pkg] as u64), "{c}");
        by_port.entry(port).or_default().0 += c["count"].as_u64().unwrap();
    }
    for &(_, port, _) in &r.calls {
        by_port.entry(port as u64).or_default().1 += 1;
    }
    let counts: Vec<(u64, (u64, u64))> = by_port.into_iter().collect();
    assert_eq!(
        counts,
        [
            (6379, (1, 1)),
            (9200, (1, 1)),
            (10001, (1, 1)),
            (10002, (2, 2)),
            (10003, (1, 1)),
            (10004, (1, 1)),
            (10005, (1, 1)),
            (10006, (1, 1)),
        ]
    );
    assert_calls_in_their_tests(&r);
}

/// Spins on every core until dropped.
struct Load(
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    Vec<std::thread::JoinHandle<()>>,
);

impl Load {
    fn start() -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        Load(stop, threads)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn calls_stay_in_their_tests_windows_under_load() {
    // 20 rounds of the sequential, subtest and parallel tests in one binary, every core busy.
    let args = [
        "-tags",
        "nettrap_adapter",
        "-count=20",
        "-parallel",
        "2",
        "-run",
        "^(TestSeqOne|TestSeqTwo|TestWithSub|TestParallelA|TestParallelB)$",
        "./adapter",
    ];
    let r = {
        let _load = Load::start();
        go_run("go-adapter-load", &args)
    };
    assert_eq!(r.run.code(), 0, "{}", r.run.stderr());
    assert_eq!(r.calls.len(), 20 * 7);
    assert_eq!(r.events("start").len(), 20 * 7);
    assert_eq!(r.events("end").len(), 20 * 7);
    assert_calls_in_their_tests(&r);
}

/// `go test`'s output with timings blanked: `(0.00s)`, the `ok`/`FAIL` package lines' times,
/// and `-json`'s `Time` and `Elapsed`.
fn normalize(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with('{') {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("Time");
                if v.get("Elapsed").is_some() {
                    v["Elapsed"] = 0.into();
                }
                if let Some(o) = v["Output"].as_str() {
                    v["Output"] = blank_times(o).into();
                }
                v.to_string()
            } else {
                blank_times(l)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn blank_times(s: &str) -> String {
    // "(0.01s)" and "\t0.003s" (or "\t(cached)"), anywhere in the line.
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(|c: char| c.is_ascii_digit()) {
        let (head, tail) = rest.split_at(i);
        let end = tail
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(tail.len());
        let (num, after) = tail.split_at(end);
        out.push_str(head);
        if num.contains('.')
            && after.starts_with('s')
            && (head.ends_with('(') || head.ends_with('\t'))
        {
            out.push('T');
        } else {
            out.push_str(num);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[test]
fn the_output_is_what_go_test_prints_without_nettrap() {
    go_env();
    // Deterministic tests (no parallel pair), a passing and a failing package, one at a time.
    let base = [
        "-tags",
        "nettrap_adapter,nettrap_failing",
        "-p",
        "1",
        "-run",
        "^(TestSeqOne|TestWithSub|TestNoCall|TestSkipped|TestBroken|TestFine)$",
        "./adapter",
        "./failing",
    ];
    for mode in ["", "-v", "-json"] {
        let mut args: Vec<&str> = vec![];
        if !mode.is_empty() {
            args.push(mode);
        }
        args.extend_from_slice(&base);
        let mut argv = vec!["go", "test"];
        argv.extend_from_slice(&args);
        let plain = isolated(&argv)
            .current_dir(fixture())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let r = go_run(&format!("go-adapter-output{mode}"), &args);
        let want = normalize(&String::from_utf8_lossy(&plain.stdout));
        assert!(want.contains("TestBroken/inner"), "{want}");
        assert_eq!(normalize(&r.run.stdout()), want, "go test {mode}");
        assert_eq!(r.run.code(), plain.status.code().unwrap(), "go test {mode}");
        assert_eq!(r.run.code(), 1);
        // The failing package's tests are in the timeline too.
        let failed: Vec<_> = r
            .events("end")
            .iter()
            .filter(|e| e["outcome"] == "failed")
            .map(|e| e["test"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            failed,
            [
                format!("{ROOT}/failing/TestBroken/inner"),
                format!("{ROOT}/failing/TestBroken")
            ],
            "go test {mode}"
        );
        // Our own diagnostics never reach the user's output.
        assert!(!r.run.stderr().contains("go adapter"), "{}", r.run.stderr());
    }
}

#[test]
fn a_users_own_exec_wrapper_is_chained() {
    let r = go_run(
        "go-adapter-chain",
        &[
            "-exec",
            "env FIXTURE_CHAINED=1",
            "-tags",
            "nettrap_adapter",
            "-run",
            "^TestSeqOne$",
            "./adapter",
        ],
    );
    assert_eq!(r.run.code(), 0, "{}", r.run.stderr());
    let starts: Vec<_> = r
        .events("start")
        .iter()
        .map(|e| e["test"].clone())
        .collect();
    assert_eq!(starts, [format!("{ADAPTER}/TestSeqOne")]);
    assert_eq!(r.calls.len(), 1);
    assert_calls_in_their_tests(&r);
    // `env` ran the binary: the report names it (env execs it, the pid stays), and the call is
    // on its test.
    let call = &r.run.test(&format!("{ADAPTER}/TestSeqOne"))["calls"][0];
    assert!(
        call["process"]["cmdline"]
            .as_str()
            .unwrap()
            .contains("adapter.test"),
        "{call}"
    );
}

#[test]
fn go_exec_outside_a_run_or_without_a_timeline_runs_the_binary_plainly() {
    let out = std::process::Command::new(nettrap())
        .args([
            "go-exec",
            "sh",
            "-c",
            "echo \"$@\"; exit 3",
            "sh",
            "-test.v=true",
        ])
        .env_remove("NETTRAP_RUN_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "-test.v=true\n");
    assert!(out.stderr.is_empty());
    // A run directory that is not there: said once, then the binary runs as asked.
    let out = std::process::Command::new(nettrap())
        .args([
            "go-exec",
            "sh",
            "-c",
            "echo \"$@\"; exit 3",
            "sh",
            "-test.v=true",
        ])
        .env("NETTRAP_RUN_DIR", "/nonexistent/nettrap-run")
        .current_dir(fixture())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "-test.v=true\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("nettrap: go adapter: cannot open /nonexistent/nettrap-run/timeline.jsonl"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// What the user reads: the report attributes every call of the test binary to its test (the
/// subtest, not its parent), names the parallel peer, and knows every test with its outcome.
#[test]
fn the_report_attributes_go_calls_per_test() {
    let r = go_run(
        "go-report",
        &["-tags", "nettrap_adapter", "-parallel", "2", "./..."],
    );
    assert_eq!(r.run.code(), 0, "{}", r.run.stderr());
    let report = &r.run.report;
    assert_eq!(report["runner"], "go");
    assert_eq!(report["runners"], serde_json::json!(["go"]));
    let total = go_count(&["-tags", "nettrap_adapter", "./..."]);
    assert_eq!(report["tests_total"].as_u64(), Some(total as u64));
    let id = |t: &str| format!("{ADAPTER}/{t}");
    let port_calls = |test: &str| -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = r.run.test(test)["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["port"].as_u64().unwrap(), c["count"].as_u64().unwrap()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(port_calls(&id("TestSeqOne")), vec![(10001, 1)]);
    assert_eq!(port_calls(&id("TestSeqTwo")), vec![(10002, 2)]);
    assert_eq!(port_calls(&id("TestWithSub/first")), vec![(10003, 1)]);
    assert_eq!(port_calls(&id("TestWithSub")), vec![(10004, 1)]);
    assert_eq!(port_calls(&id("TestNoCall")), vec![]);
    assert_eq!(r.run.test(&id("TestSkipped"))["outcome"], "skipped");
    assert_eq!(
        port_calls(&format!("{ROOT}/TestSearchIndex")),
        vec![(9200, 1)]
    );
    // The parallel pair: each call is on one of them and names the other as running too.
    for (me, port, peer) in [
        ("TestParallelA", 10005, "TestParallelB"),
        ("TestParallelB", 10006, "TestParallelA"),
    ] {
        let all: Vec<&Value> = report["tests"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["calls"].as_array().unwrap().iter().map(move |c| (t, c)))
            .filter(|(_, c)| c["port"] == port)
            .map(|(t, _)| t)
            .collect();
        assert_eq!(all.len(), 1, "{me}");
        let call = all[0]["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["port"] == port)
            .unwrap();
        let owner = all[0]["test"].as_str().unwrap();
        let others: Vec<&str> = call["concurrent_tests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            owner == id(me) && others == [id(peer).as_str()]
                || owner == id(peer) && others == [id(me).as_str()],
            "{owner} {others:?}"
        );
    }
    assert_eq!(r.run.calls(None), vec![], "no Go call is left unattributed");
}

/// A test binary built for another system (js/wasm) runs through go's own
/// `go_js_wasm_exec`: the adapter steps aside instead of running it itself.
#[test]
fn cross_compiled_tests_run_through_gos_own_exec() {
    go_env();
    let goroot = std::process::Command::new("go")
        .args(["env", "GOROOT"])
        .output()
        .unwrap();
    let wasm = PathBuf::from(String::from_utf8_lossy(&goroot.stdout).trim()).join("lib/wasm");
    assert!(wasm.join("go_js_wasm_exec").exists(), "{}", wasm.display());
    let path = format!("{}:{}", std::env::var("PATH").unwrap(), wasm.display());
    let run = run_in_env(
        "go-wasm",
        &fixture(),
        &[("PATH", &path), ("GOOS", "js"), ("GOARCH", "wasm")],
        &[],
        &["go", "test", "."],
    );
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    assert!(
        run.stdout().contains("ok  \texample.com/nettrap-fixture"),
        "{}",
        run.stdout()
    );
    assert!(!run.stderr().contains("go adapter"), "{}", run.stderr());
    if let Some(dir) = run
        .stderr()
        .lines()
        .find_map(|l| l.strip_prefix("nettrap: run directory kept: "))
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `--runner go` with a command that runs `go test` itself (a script, make, gotestsum): every
/// test binary still runs through the adapter (by GOFLAGS), with the user's GOFLAGS kept and
/// their `-exec` there chained; a `-exec` on the inner command line, which overrides GOFLAGS, is
/// said in one line.
#[test]
fn runner_go_reaches_go_test_run_by_a_script() {
    go_env();
    let dir = scratch("go-by-flags-chain");
    let log = dir.join("chain.log");
    let chain = dir.join("chain.sh");
    std::fs::write(
        &chain,
        format!(
            "#!/bin/sh\nbasename \"$1\" >> '{}'\nexec \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&chain, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // The user's GOFLAGS: -count=1 (go_toolchain) and their own -exec.
    let goflags = format!("-count=1 -exec={}", chain.display());
    let script = "go test -tags nettrap_adapter -parallel 2 ./... && echo script-done";
    let r = run_in_env(
        "go-by-flags",
        &fixture(),
        &[("GOFLAGS", &goflags)],
        &["-q", "--runner", "go"],
        &["sh", "-c", script],
    );
    assert_eq!(r.code(), 0, "{}\n{}", r.stdout(), r.stderr());
    assert!(r.stdout().contains("script-done"), "{}", r.stdout());
    assert!(!r.stderr().contains("go adapter"), "{}", r.stderr());
    let total = go_count(&["-tags", "nettrap_adapter", "./..."]);
    assert_eq!(r.report["tests_total"].as_u64(), Some(total as u64));
    assert_eq!(r.report["runners"], serde_json::json!(["go"]));
    let calls = |test: &str| -> Vec<u64> {
        r.test(test)["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["port"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(calls(&format!("{ADAPTER}/TestSeqOne")), [10001]);
    assert_eq!(calls(&format!("{ROOT}/TestSearchIndex")), [9200]);
    assert_eq!(r.calls(None), vec![], "no Go call is left unattributed");
    // The user's -exec ran each test binary.
    let mut ran: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    ran.sort();
    assert_eq!(ran, ["adapter.test", "nettrap-fixture.test"]);
    if let Some(d) = r
        .stderr()
        .lines()
        .find_map(|l| l.strip_prefix("nettrap: run directory kept: "))
    {
        let _ = std::fs::remove_dir_all(d);
    }

    // A -exec on the inner command line wins over GOFLAGS: one line says the adapter saw nothing.
    let r = run_in(
        "go-by-flags-overridden",
        &fixture(),
        &["--runner", "go"],
        &["sh", "-c", "go test -exec env -run '^TestSearchIndex$' ."],
    );
    assert_eq!(r.code(), 0, "{}\n{}", r.stdout(), r.stderr());
    let err = r.stderr();
    let said: Vec<&str> = err.lines().filter(|l| l.contains("go adapter")).collect();
    assert_eq!(said.len(), 1, "{}", r.stderr());
    assert!(
        said[0].contains("no Go test binary ran through it"),
        "{}",
        said[0]
    );
    assert!(
        r.report["tests_total"].is_null(),
        "{}",
        r.report["tests_total"]
    );
    if let Some(d) = r
        .stderr()
        .lines()
        .find_map(|l| l.strip_prefix("nettrap: run directory kept: "))
    {
        let _ = std::fs::remove_dir_all(d);
    }
}
