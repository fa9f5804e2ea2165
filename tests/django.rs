//! The Django demo project (fixtures/django-demo, see its EXPECTED.md) under `nettrap run`, with
//! Django's own runner, serial and `--parallel 2` (fork and spawn): every call on its test and
//! phase, every test known with its outcome, call sites and client libraries, worker roles.

mod common;
use common::*;

const R: &str = "recorded";

fn expected() -> Vec<(&'static str, Vec<CallRow>)> {
    vec![
        (
            "catalog.tests.NetworkEdgeTests.test_metrics_datagram",
            vec![t("other", "127.0.0.1", 8125, "udp", "call", R, 1)],
        ),
        (
            "catalog.tests.SearchTests.test_index",
            vec![t("elasticsearch", "127.0.0.1", 9200, "tcp", "call", R, 1)],
        ),
        (
            "catalog.tests.SearchTests.test_query",
            vec![t("elasticsearch", "127.0.0.1", 9200, "tcp", "call", R, 1)],
        ),
        (
            "shop.tests.CartTests.test_add",
            vec![t("redis", "127.0.0.1", 6379, "tcp", "setup", R, 1)],
        ),
        (
            "shop.tests.CartTests.test_total_math",
            vec![t("redis", "127.0.0.1", 6379, "tcp", "setup", R, 1)],
        ),
        (
            "shop.tests.PaymentTests.test_charge",
            vec![t("external-api", "127.0.0.1", 80, "tcp", "call", R, 1)],
        ),
        (
            "shop.tests.ReportTests.test_export_in_worker",
            vec![t("redis", "127.0.0.1", 6379, "tcp", "call", R, 1)],
        ),
        (
            "shop.tests.ReportTests.test_monthly_total",
            vec![t("postgres", "127.0.0.1", 5432, "tcp", "call", R, 1)],
        ),
    ]
}

const ALL_TESTS: [&str; 11] = [
    "catalog.tests.NetworkEdgeTests.test_lookup_inventory_host",
    "catalog.tests.NetworkEdgeTests.test_metrics_datagram",
    "catalog.tests.SearchTests.test_index",
    "catalog.tests.SearchTests.test_query",
    "catalog.tests.SearchTests.test_slug_math",
    "shop.tests.CartTests.test_add",
    "shop.tests.CartTests.test_total_math",
    "shop.tests.PaymentTests.test_charge",
    "shop.tests.PaymentTests.test_refund_math",
    "shop.tests.ReportTests.test_export_in_worker",
    "shop.tests.ReportTests.test_monthly_total",
];

fn run_django(name: &str, env: &[(&str, &str)], args: &[&str]) -> Run {
    let py = python();
    let mut cmd = vec![py.as_str(), "manage.py", "test"];
    cmd.extend_from_slice(args);
    run_in_env(name, &repo().join("fixtures/django-demo"), env, &[], &cmd)
}

/// The site and library of a test's only call of `category`.
fn site(run: &Run, test: &str, category: &str) -> (String, String) {
    let calls = run.test(test)["calls"].as_array().unwrap().clone();
    let c = calls
        .iter()
        .find(|c| c["category"] == category)
        .unwrap_or_else(|| panic!("no {category} call in {test}: {calls:?}"));
    (
        c["site"].as_str().unwrap_or("-").to_string(),
        c["library"].as_str().unwrap_or("-").to_string(),
    )
}

fn assert_django_run(run: &Run, parallel: bool) {
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    assert!(run.stderr().contains("Ran 11 tests"), "{}", run.stderr());
    let r = &run.report;
    assert_eq!(
        (r["runner"].as_str(), r["tests_total"].as_u64()),
        (Some("django"), Some(11))
    );
    assert_eq!(r["runners"], serde_json::json!(["django"]));
    // Every test that ran, with its outcome and duration, calls or not.
    let all = run.all_tests();
    assert_eq!(
        all,
        ALL_TESTS
            .iter()
            .map(|t| (t.to_string(), "passed".to_string()))
            .collect::<Vec<_>>()
    );
    for t in r["tests"].as_array().unwrap() {
        assert!(t["duration_s"].as_f64().is_some_and(|d| d > 0.0), "{t}");
    }
    // Every call on its test and phase; none outside a test.
    for (test, calls) in expected() {
        assert_eq!(run.calls(Some(test)), calls, "{test}");
    }
    // glibc's resolver asks 127.0.0.1:53 from inside libc, in the test's own process.
    let dns = run.calls(Some(
        "catalog.tests.NetworkEdgeTests.test_lookup_inventory_host",
    ));
    assert!(
        !dns.is_empty()
            && dns
                .iter()
                .all(|c| (c.0.as_str(), c.2, c.4.as_str()) == ("dns", 53, "call")),
        "{dns:?}"
    );
    assert_eq!(run.calls(None), vec![], "nothing is called outside a test");
    assert!(
        run.stderr()
            .contains("nettrap: 6 categories of external calls in 9 of 11 tests\n"),
        "{}",
        run.stderr()
    );
    // Call sites (the first frame in the project) and the client library.
    let s = |t: &str, c: &str| site(run, t, c);
    let (charge, lib) = s("shop.tests.PaymentTests.test_charge", "external-api");
    assert_eq!(
        (charge.as_str(), lib.as_str()),
        ("shop/payments.py:9 in charge", "requests")
    );
    let (index, lib) = s("catalog.tests.SearchTests.test_index", "elasticsearch");
    assert_eq!(
        (index.as_str(), lib.as_str()),
        ("catalog/search.py:14 in index", "urllib3")
    );
    let (cart, lib) = s("shop.tests.CartTests.test_add", "redis");
    assert_eq!(
        (cart.as_str(), lib.as_str()),
        ("shop/tests.py:20 in setUp", "redis")
    );
    // psycopg2's libpq connects from C: the adapter wraps psycopg2.connect for the site.
    let (report, lib) = s("shop.tests.ReportTests.test_monthly_total", "postgres");
    assert_eq!(
        (report.as_str(), lib.as_str()),
        ("shop/reports.py:10 in monthly_total", "psycopg2")
    );
    let (udp, _) = s(
        "catalog.tests.NetworkEdgeTests.test_metrics_datagram",
        "other",
    );
    assert_eq!(udp, "catalog/tests.py:23 in test_metrics_datagram");
    // Roles: Django's parallel workers are told apart.
    let roles: std::collections::BTreeSet<String> = r["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["calls"].as_array().unwrap().iter())
        .filter_map(|c| c["process"]["role"].as_str().map(String::from))
        .collect();
    if parallel {
        // Which worker picks which test is the pool's business; every call made in a worker
        // (all but the child process's) names one of the two.
        let workers: std::collections::BTreeSet<String> = ["django worker 1", "django worker 2"]
            .map(String::from)
            .into();
        assert!(!roles.is_empty() && roles.is_subset(&workers), "{roles:?}");
        for t in r["tests"].as_array().unwrap() {
            for c in t["calls"].as_array().unwrap() {
                if t["test"] != "shop.tests.ReportTests.test_export_in_worker" {
                    assert!(c["process"]["role"].is_string(), "{c}");
                }
            }
        }
    } else {
        assert!(roles.is_empty(), "{roles:?}");
    }
    // The to-do list groups by call site within a destination: where the mock goes.
    assert!(
        run.todo
            .contains("`shop/payments.py:9 in charge` (requests)"),
        "{}",
        run.todo
    );
}

#[test]
fn django_runner_serial() {
    let run = run_django("django-serial", &[], &[]);
    assert_django_run(&run, false);
}

#[test]
fn django_runner_parallel_fork() {
    let run = run_django(
        "django-fork",
        &[("DEMO_START_METHOD", "fork")],
        &["--parallel", "2"],
    );
    assert_django_run(&run, true);
}

#[test]
fn django_runner_parallel_spawn() {
    let run = run_django(
        "django-spawn",
        &[("DEMO_START_METHOD", "spawn")],
        &["--parallel", "2"],
    );
    assert_django_run(&run, true);
}

#[test]
fn runner_none_turns_adapters_off() {
    let run = run_django("django-none", &[], &[]);
    assert_eq!(run.report["tests_total"], 11);
    let py = python();
    let off = run_in(
        "django-runner-none",
        &repo().join("fixtures/django-demo"),
        &["--runner", "none"],
        &[py.as_str(), "manage.py", "test"],
    );
    assert_eq!(off.code(), 0, "{}", off.stderr());
    assert_eq!(off.report["tests_total"], serde_json::Value::Null);
    assert_eq!(
        off.tests(),
        Vec::<String>::new(),
        "no protocol, no attribution"
    );
    assert_eq!(off.total_calls(), run.total_calls());
    assert!(
        off.stderr().contains("(total number of tests not known"),
        "{}",
        off.stderr()
    );
}

/// The Python adapter's fallback: in a run whose timeline cannot be written (here it is made
/// read-only under the command), every process of Django's parallel run fails the same way.
/// The run goes on as without nettrap, and nettrap says it once, on its own line after the
/// command (never inside the runner's own output, between its progress dots), and in the
/// report.
#[test]
fn an_adapter_that_cannot_write_the_timeline_is_said_once() {
    let py = python();
    // The mount is undone before the command ends, so that nettrap can remove its run
    // directory (a mount point cannot be unlinked).
    let script = format!(
        "t=\"$NETTRAP_RUN_DIR/timeline.jsonl\"; mount --bind \"$t\" \"$t\" && \
         mount -o remount,bind,ro \"$t\" && {{ {py} manage.py test --parallel 2; rc=$?; \
         umount \"$t\"; exit $rc; }}"
    );
    let run = run_in_env(
        "django-adapter-fails",
        &repo().join("fixtures/django-demo"),
        &[("DEMO_START_METHOD", "fork")],
        &["--runner", "django"],
        &["sh", "-c", &script],
    );
    let err = run.stderr();
    assert_eq!(run.code(), 0, "{}\n{err}", run.stdout());
    assert!(
        err.contains("Ran 11 tests") && err.contains("\nOK\n"),
        "{err}"
    );
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("python adapter"))
        .collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(
        said[0].starts_with("nettrap: warning: python adapter, in ")
            && said[0].contains("processes: cannot write the timeline"),
        "{err}"
    );
    let failures = run.report["adapter_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0]
            .as_str()
            .unwrap()
            .starts_with("python adapter, in "),
        "{failures:?}"
    );
}
