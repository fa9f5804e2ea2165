//! The bundled pytest suite (fixtures/pytest-demo, see its EXPECTED.md) under `nettrap run`:
//! per-test attribution, phases, processes, threads, xdist workers, record and deny modes.

mod common;
use common::*;

const ES: &str = "elasticsearch";

/// The serial run's calls, from fixtures/pytest-demo/EXPECTED.md.
fn expected(
    verdict_es: &str,
    verdict_api: &str,
    index_calls: u64,
) -> Vec<(&'static str, Vec<CallRow>)> {
    let r = "recorded";
    vec![
        (
            "tests/test_cache.py::test_cache_get",
            vec![
                t("redis", "127.0.0.1", 6379, "tcp", "call", r, 3),
                t("redis", "127.0.0.1", 6379, "tcp", "setup", r, 1),
            ],
        ),
        (
            "tests/test_cache.py::test_cache_set",
            vec![t("redis", "127.0.0.1", 6379, "tcp", "call", r, 1)],
        ),
        (
            "tests/test_edge.py::test_ipv4_mapped",
            vec![t(ES, "127.0.0.1", 9200, "tcp", "call", verdict_es, 1)],
        ),
        (
            "tests/test_edge.py::test_ipv6_loopback",
            vec![t("redis", "::1", 6379, "tcp", "call", r, 1)],
        ),
        (
            "tests/test_edge.py::test_nonblocking",
            vec![t(ES, "127.0.0.1", 9200, "tcp", "call", verdict_es, 1)],
        ),
        (
            "tests/test_edge.py::test_teardown_call",
            vec![t("redis", "127.0.0.1", 6379, "tcp", "teardown", r, 1)],
        ),
        (
            "tests/test_edge.py::test_udp_dns",
            vec![t("dns", "127.0.0.1", 53, "udp", "call", r, 1)],
        ),
        (
            "tests/test_payments.py::test_charge_card",
            vec![t(
                "external-api",
                "127.0.0.1",
                443,
                "tcp",
                "call",
                verdict_api,
                1,
            )],
        ),
        (
            "tests/test_search.py::test_index",
            vec![t(
                ES,
                "127.0.0.1",
                9200,
                "tcp",
                "call",
                verdict_es,
                index_calls,
            )],
        ),
        (
            "tests/test_search.py::test_query",
            vec![t(ES, "127.0.0.1", 9200, "tcp", "call", verdict_es, 1)],
        ),
        (
            "tests/test_subprocess.py::test_worker_subprocess",
            vec![t("redis", "127.0.0.1", 6379, "tcp", "call", r, 1)],
        ),
        (
            "tests/test_threads.py::test_background_thread",
            vec![t(ES, "127.0.0.1", 9200, "tcp", "call", verdict_es, 1)],
        ),
    ]
}

fn assert_matches_expected(run: &Run, verdict_es: &str, verdict_api: &str) {
    // Denied, test_index stops at its first call.
    let exp = expected(
        verdict_es,
        verdict_api,
        if verdict_es == "denied" { 1 } else { 2 },
    );
    let names: Vec<String> = exp.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(run.tests(), names, "tests with calls");
    for (name, calls) in exp {
        assert_eq!(run.calls(Some(name)), calls, "calls of {name}");
    }
}

#[test]
fn record_mode_reports_every_call_per_test() {
    let run = run_demo("record", &[], &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(run.stdout().contains("19 passed"), "{}", run.stdout());
    assert_matches_expected(&run, "recorded", "recorded");
    let r = &run.report;
    assert_eq!(r["schema_version"], 2);
    assert_eq!(r["tests_total"], 19, "pytest's own count (19 passed)");
    assert_eq!(r["runner"], "pytest");
    assert_eq!(r["runners"], serde_json::json!(["pytest"]));
    assert_eq!(r["tests_with_calls"], 12);
    assert_eq!(
        (r["exit_code"].as_i64(), r["command_exit_code"].as_i64()),
        (Some(0), Some(0))
    );
    // The import-time connect: outside any test, with the process that made it.
    assert_eq!(
        run.calls(None),
        vec![t(
            "memcached",
            "127.0.0.1",
            11211,
            "tcp",
            "-",
            "recorded",
            1
        )]
    );
    let u = &r["unattributed"][0];
    assert!(
        u["process"]["exe"].as_str().unwrap().contains("python"),
        "{u}"
    );
    assert!(
        u["process"]["cmdline"]
            .as_str()
            .unwrap()
            .contains("-m pytest"),
        "{u}"
    );
    assert!(u["process"]["pid"].as_u64().unwrap() > 1);
    assert_eq!(u["outcomes"]["ECONNREFUSED"], 1);
    // Categories: tests and calls per category (unattributed calls count as calls).
    let cats = &r["categories"];
    assert_eq!(
        (
            cats["redis"]["tests"].as_u64(),
            cats["redis"]["calls"].as_u64()
        ),
        (Some(5), Some(8))
    );
    assert_eq!(
        (cats[ES]["tests"].as_u64(), cats[ES]["calls"].as_u64()),
        (Some(5), Some(6))
    );
    assert_eq!(cats[ES]["ports"], serde_json::json!(["9200", "9300"]));
    assert_eq!(cats[ES]["ports_seen"], serde_json::json!([9200]));
    assert_eq!(
        (
            cats["memcached"]["tests"].as_u64(),
            cats["memcached"]["calls"].as_u64()
        ),
        (Some(0), Some(1))
    );
    assert_eq!(run.total_calls(), 17, "AF_UNIX connects are not counted");
    // The subprocess's call carries the child's pid, not pytest's.
    let sub = &r["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["test"] == "tests/test_subprocess.py::test_worker_subprocess")
        .unwrap()["calls"][0];
    assert_ne!(sub["process"]["pid"], u["process"]["pid"]);
    assert!(
        sub["process"]["cmdline"].as_str().unwrap().contains(" -c "),
        "{sub}"
    );

    let err = run.stderr();
    assert!(
        err.contains("nettrap: 5 categories of external calls in 12 of 19 tests\n"),
        "{err}"
    );
    assert!(
        // The suite's fake Redis serves 7 of them (its conftest starts it): the row says so.
        err.contains(
            "  redis         (6379)     5 tests     8 calls  recorded (7 served by the suite)\n"
        ),
        "{err}"
    );
    assert!(
        err.contains("  1 call outside any test (unattributed)\n"),
        "{err}"
    );
    assert!(!err.contains("nettrap: denied"), "{err}");

    // The to-do list: largest payoff (time at stake) first, then destination, then tests by
    // calls.
    let todo = &run.todo;
    let pos = |s: &str| {
        todo.find(s)
            .unwrap_or_else(|| panic!("{s:?} not in:\n{todo}"))
    };
    let stake = |c: &str| {
        run.report["categories"][c]["time_at_stake_s"]
            .as_f64()
            .unwrap()
    };
    let mut cats = ["redis", "elasticsearch", "external-api"];
    cats.sort_by(|a, b| stake(b).total_cmp(&stake(a)));
    let heading = |c: &str| {
        pos(match c {
            "redis" => "## redis: 5 tests, 8 calls",
            "elasticsearch" => "## elasticsearch: 5 tests, 6 calls",
            _ => "## external-api: 1 test, 1 call",
        })
    };
    assert!(heading(cats[0]) < heading(cats[1]) && heading(cats[1]) < heading(cats[2]));
    pos("### 127.0.0.1:6379: 4 tests, 7 calls");
    pos("### [::1]:6379: 1 test, 1 call");
    assert!(
        // The module fixture's set-up call is named, as in the JSON.
        pos(
            "- [ ] `tests/test_cache.py::test_cache_get`: 4 calls (setup 1, call 3, fixture `redis_conn (module, tests/test_cache.py)`)"
        ) < pos("- [ ] `tests/test_cache.py::test_cache_set`: 1 call (call 1)")
    );
    pos("- [ ] 127.0.0.1:11211 (memcached): 1 call from pid ");
}

#[test]
fn deny_mode_fails_fast_with_a_clear_error_and_exit_86() {
    let run = run_demo("deny", &["--deny", "443,elasticsearch"], &[]);
    assert_eq!(run.code(), 86, "{}", run.stderr());
    assert_matches_expected(&run, "denied", "denied");
    let r = &run.report;
    assert_eq!(
        r["command_exit_code"], 1,
        "the ES tests fail: their connects were refused"
    );
    assert_eq!(r["exit_code"], 86);
    let es = &r["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["test"] == "tests/test_search.py::test_index")
        .unwrap()["calls"][0];
    assert_eq!(es["rule"], "deny elasticsearch");
    assert_eq!(es["outcomes"]["ECONNREFUSED"], 1);
    // The denial is printed inside the test, so pytest shows it in the test's captured output.
    let out = run.stdout();
    assert!(
        out.contains("nettrap: denied connect to 127.0.0.1:9200 (elasticsearch) in tests/test_search.py::test_index (rule: deny elasticsearch)"),
        "{out}"
    );
    assert!(out.contains("Captured stderr call"), "{out}");
    let err = run.stderr();
    assert!(
        err.contains("elasticsearch (9200)     5 tests     5 calls  denied"),
        "{err}"
    );
    assert!(
        err.contains(
            "nettrap: policy violated (6 denied calls); the command itself exited 1; exiting 86"
        ),
        "{err}"
    );
}

#[test]
fn a_swallowed_denial_still_fails_the_run() {
    // test_charge_card catches the refused connect and passes: pytest exits 0, nettrap must not.
    let run = run_demo(
        "swallowed",
        &["--deny", "443", "--errno", "ENETUNREACH"],
        &[],
    );
    assert_eq!(run.code(), 86, "{}", run.stderr());
    assert_eq!(run.report["command_exit_code"], 0);
    let c = &run.report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["test"] == "tests/test_payments.py::test_charge_card")
        .unwrap()["calls"][0];
    assert_eq!(
        (c["verdict"].as_str(), c["rule"].as_str()),
        (Some("denied"), Some("deny 443"))
    );
    assert_eq!(c["outcomes"]["ENETUNREACH"], 1);
}

#[test]
fn fail_on_turns_recorded_calls_into_a_failure() {
    let run = run_demo("fail-on", &["--fail-on", "external-api"], &[]);
    assert_eq!(run.code(), 86, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("1 recorded external-api call (--fail-on)"),
        "{}",
        run.stderr()
    );
    // Allowed calls are expected: not offending, not in the summary or the to-do list.
    let run = run_demo("allow", &["--allow", "127.0.0.1:6379,[::1]:6379"], &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.report["tests_with_calls"], 7);
    assert_eq!(run.report["categories"]["redis"]["allowed"], 8);
    assert_eq!(run.report["categories"]["redis"]["calls"], 0);
    assert!(!run.todo.contains("## redis"), "{}", run.todo);
    assert!(!run.stderr().contains("redis"), "{}", run.stderr());
}

#[test]
fn policy_file_scopes_rules_to_tests() {
    let dir = scratch("policy-file");
    std::fs::write(
        dir.join("nettrap.toml"),
        r#"
[categories.search]
ports = [9200]
hosts = ["127.0.0.0/8"]

[[rules]]
category = "search"
action = "deny"

[[rules]]
category = "search"
tests = "tests/test_search.py::*"
action = "allow"
"#,
    )
    .unwrap();
    let policy = dir.join("nettrap.toml");
    let run = run_demo(
        "policy-file-run",
        &["--policy", policy.to_str().unwrap()],
        &[],
    );
    assert_eq!(run.code(), 86, "{}", run.stderr());
    assert_eq!(
        run.calls(Some("tests/test_search.py::test_index")),
        vec![t("search", "127.0.0.1", 9200, "tcp", "call", "allowed", 2)]
    );
    assert_eq!(
        run.calls(Some("tests/test_threads.py::test_background_thread")),
        vec![t("search", "127.0.0.1", 9200, "tcp", "call", "denied", 1)]
    );
    let rule = &run.report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["test"] == "tests/test_threads.py::test_background_thread")
        .unwrap()["calls"][0]["rule"];
    assert_eq!(
        rule.as_str().unwrap(),
        format!("deny search, {}:6", policy.display())
    );
}

#[test]
fn xdist_workers_are_attributed_like_a_serial_run() {
    // loadfile keeps each module on one worker, so the module fixture connects once (EXPECTED.md).
    let run = run_demo("xdist", &[], &["-n", "2", "--dist", "loadfile"]);
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    assert_matches_expected(&run, "recorded", "recorded");
    // Each worker imports every module: one import-time call per worker, from two processes.
    let u = run.report["unattributed"].as_array().unwrap();
    let pids: std::collections::BTreeSet<u64> = u
        .iter()
        .map(|c| c["process"]["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        u.iter().map(|c| c["count"].as_u64().unwrap()).sum::<u64>(),
        2
    );
    assert_eq!(pids.len(), 2, "{u:?}");
}

/// The adapter's view of the demo suite: every test with its outcome and duration, call sites,
/// and the xdist workers' roles.
#[test]
fn every_test_known_with_outcome_site_and_worker_role() {
    let run = run_demo("adapter-xdist", &[], &["-n", "2", "--dist", "loadfile"]);
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    let r = &run.report;
    assert_eq!(r["tests_total"], 19);
    let all = run.all_tests();
    assert_eq!(all.len(), 19, "{all:?}");
    assert!(all.iter().all(|(_, o)| o == "passed"), "{all:?}");
    assert!(
        r["tests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["duration_s"].as_f64().is_some_and(|d| d > 0.0))
    );
    let call = &run.test("tests/test_search.py::test_index")["calls"][0];
    assert_eq!(call["site"], "demo_clients.py:47 in es_get", "{call}");
    let role = call["process"]["role"].as_str().unwrap();
    assert!(role == "gw0" || role == "gw1", "{call}");
    assert!(
        run.stderr().contains("in 12 of 19 tests"),
        "{}",
        run.stderr()
    );
}

/// Session fixtures, nested sessions (pytester in-process and in a subprocess) and the
/// project's own sitecustomize and PYTEST_PLUGINS (fixtures/pytest-nested, see EXPECTED.md).
#[test]
fn fixtures_nested_sessions_and_project_hooks() {
    let dir = repo().join("fixtures/pytest-nested");
    let usersite = dir.join("usersite");
    let py = python();
    let run = run_in_env(
        "pytest-nested",
        &dir,
        &[
            ("PYTHONPATH", usersite.to_str().unwrap()),
            ("PYTEST_PLUGINS", "user_plugin"),
        ],
        &[],
        &[py.as_str(), "-m", "pytest", "-q"],
    );
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    assert_eq!(
        run.report["tests_total"], 9,
        "inner sessions' tests do not count"
    );
    let outcome = |t: &str| run.test(&format!("test_nested.py::{t}"))["outcome"].clone();
    assert_eq!(
        (outcome("test_skipped"), outcome("test_expected_failure")),
        (serde_json::json!("skipped"), serde_json::json!("xfailed"))
    );
    let r = "recorded";
    let first = "test_nested.py::test_uses_session_fixture_first";
    assert_eq!(
        run.calls(Some(first)),
        vec![t("elasticsearch", "127.0.0.1", 9200, "tcp", "setup", r, 1)]
    );
    assert_eq!(
        run.test(first)["calls"][0]["fixture"],
        "es_client (session, conftest.py)"
    );
    let inner = "test_nested.py::test_runs_inner_session";
    assert_eq!(
        run.calls(Some(inner)),
        vec![
            t("memcached", "127.0.0.1", 11211, "tcp", "call", r, 1),
            t("redis", "127.0.0.1", 6379, "tcp", "call", r, 1),
        ]
    );
    let sub = "test_nested.py::test_runs_subprocess_session";
    assert_eq!(
        run.calls(Some(sub)),
        vec![t("redis", "127.0.0.1", 6379, "tcp", "call", r, 1)]
    );
    for test in [inner, sub] {
        let calls = run.test(test)["calls"].as_array().unwrap().clone();
        let redis = calls.iter().find(|c| c["port"] == 6379).unwrap();
        assert_eq!(redis["inner_test"], "test_inner.py::test_inner", "{test}");
    }
    let memcached = run.test(inner)["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["port"] == 11211)
        .unwrap()
        .clone();
    assert!(memcached.get("inner_test").is_none(), "{memcached}");
    assert_eq!(run.calls(None), vec![]);
    assert_eq!(
        run.test("test_nested.py::test_project_hooks_still_work")["outcome"],
        "passed"
    );
}

/// (test, category, port, transport, syscall, phase, fixture, count)
type Row = (String, String, u64, String, String, String, String, u64);

/// Every call of fixtures/pytest-teardown-dns (see its EXPECTED.md) as (test, category, port,
/// transport, syscall, phase, fixture, count), sorted.
fn teardown_dns_rows(run: &Run) -> Vec<Row> {
    let mut rows = Vec::new();
    let tests = run.report["tests"].as_array().unwrap().iter();
    let all = tests
        .flat_map(|t| {
            t["calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |c| (t["test"].as_str().unwrap(), c))
        })
        .chain(
            run.report["unattributed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| ("-", c)),
        );
    for (test, c) in all {
        let s = |k: &str| c[k].as_str().unwrap_or("-").to_string();
        rows.push((
            test.to_string(),
            s("category"),
            c["port"].as_u64().unwrap_or(0),
            s("transport"),
            s("syscall"),
            s("phase"),
            s("fixture"),
            c["count"].as_u64().unwrap(),
        ));
    }
    rows.sort();
    rows
}

fn run_teardown_dns(name: &str, args: &[&str]) -> Run {
    let py = python();
    let mut cmd = vec![py.as_str(), "-m", "pytest", "-q"];
    cmd.extend_from_slice(args);
    let run = run_in(
        name,
        &repo().join("fixtures/pytest-teardown-dns"),
        &[],
        &cmd,
    );
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    run
}

/// The rows fixtures/pytest-teardown-dns/EXPECTED.md lists, serial or under xdist.
fn teardown_dns_expected() -> Vec<Row> {
    let es = "es_client (module, conftest.py)";
    let row = |test: &str, cat: &str, port, tr: &str, sys: &str, phase: &str, fx: &str| {
        let (t, c, tr, sys, p, f) = (test, cat, tr, sys, phase, fx);
        (
            t.into(),
            c.into(),
            port,
            tr.into(),
            sys.into(),
            p.into(),
            f.into(),
            1,
        )
    };
    let mut v = vec![
        row(
            "test_dns.py::test_sendto_dns",
            ES,
            9200,
            "tcp",
            "connect",
            "setup",
            es,
        ),
        // Seen by the seccomp supervisor only (sendto, no connect), attributed by the timeline.
        row(
            "test_dns.py::test_sendto_dns",
            "dns",
            53,
            "udp",
            "sendto",
            "call",
            "-",
        ),
        // glibc's resolver, from inside libc.
        row(
            "test_dns.py::test_lookup",
            "dns",
            53,
            "udp",
            "lookup",
            "call",
            "-",
        ),
        row(
            "test_dns.py::test_last_of_module",
            "external-api",
            80,
            "tcp",
            "connect",
            "call",
            "-",
        ),
        // The module fixture's teardown, after the module's last test.
        row(
            "test_dns.py::test_last_of_module",
            ES,
            9300,
            "tcp",
            "connect",
            "teardown",
            es,
        ),
        // The session fixture's teardown, at the session's end.
        row(
            "test_session.py::test_last_of_session",
            "redis",
            6379,
            "tcp",
            "connect",
            "teardown",
            "cache (session, conftest.py)",
        ),
    ];
    v.sort();
    v
}

/// Fixture teardowns are named on their calls (phase teardown, the fixture), and calls only
/// the seccomp supervisor sees (a `sendto` to port 53, glibc's resolver) go to the test that
/// made them, with its phase (fixtures/pytest-teardown-dns, see EXPECTED.md).
#[test]
fn fixture_teardowns_and_supervisor_calls_are_attributed() {
    let run = run_teardown_dns("teardown-dns", &[]);
    assert_eq!(run.report["tests_total"], 5);
    assert_eq!(teardown_dns_rows(&run), teardown_dns_expected());
    // The to-do list and the text lines name the fixture, as the JSON does.
    assert!(
        run.todo.contains(
            "- [ ] `test_dns.py::test_last_of_module`: 1 call (teardown 1, fixture `es_client (module, conftest.py)`)"
        ),
        "{}",
        run.todo
    );
    let junit = std::process::Command::new(nettrap())
        .arg("report")
        .arg(run.dir.join("report.json"))
        .args(["--format", "junit"])
        .output()
        .unwrap();
    let junit = String::from_utf8_lossy(&junit.stdout);
    assert!(
        junit.contains(
            "connect to 127.0.0.1:9300 (elasticsearch) in teardown of fixture es_client (module, conftest.py) at conftest.py:10 in connect"
        ),
        "{junit}"
    );
}

/// The same under pytest-xdist: each module on its worker, the supervisor's calls on the test
/// each worker was running, fixtures named in each worker.
#[test]
fn fixture_teardowns_and_supervisor_calls_under_xdist() {
    let run = run_teardown_dns("teardown-dns-xdist", &["-n", "2", "--dist", "loadfile"]);
    assert_eq!(run.report["tests_total"], 5);
    assert_eq!(teardown_dns_rows(&run), teardown_dns_expected());
    let mut roles = std::collections::BTreeSet::new();
    for t in run.report["tests"].as_array().unwrap() {
        for c in t["calls"].as_array().unwrap() {
            roles.insert(c["process"]["role"].as_str().unwrap_or("-").to_string());
        }
    }
    assert_eq!(
        roles,
        ["gw0", "gw1"].map(String::from).into(),
        "every call in a worker"
    );
}
