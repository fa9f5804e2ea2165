//! The README's demo: the stdlib unittest suite (fixtures/unittest-demo, see its EXPECTED.md),
//! whose runner speaks the NETTRAP_TEST protocol, audited by `nettrap run`.

mod common;
use common::*;

#[test]
fn demo_suite_is_attributed_through_nettrap_test() {
    let run = run_in(
        "unittest-demo",
        &repo(),
        &[],
        &["python3", "fixtures/unittest-demo/run.py"],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let r = "recorded";
    let expected = [
        (
            "tests.test_cache.CacheCleanupTests.test_flush",
            vec![t("redis", "127.0.0.1", 6379, "tcp", "teardown", r, 1)],
        ),
        (
            "tests.test_cache.CacheTests.test_get",
            vec![
                t("redis", "127.0.0.1", 6379, "tcp", "call", r, 2),
                t("redis", "127.0.0.1", 6379, "tcp", "setup", r, 1),
            ],
        ),
        (
            "tests.test_cache.CacheTests.test_set",
            vec![t("redis", "127.0.0.1", 6379, "tcp", "setup", r, 1)],
        ),
        (
            "tests.test_payments.PaymentTests.test_charge",
            vec![t("external-api", "127.0.0.1", 443, "tcp", "call", r, 1)],
        ),
        (
            "tests.test_search.SearchTests.test_index",
            vec![t("elasticsearch", "127.0.0.1", 9200, "tcp", "call", r, 2)],
        ),
        (
            "tests.test_search.SearchTests.test_query",
            vec![t("elasticsearch", "127.0.0.1", 9200, "tcp", "call", r, 1)],
        ),
        (
            "tests.test_worker.WorkerTests.test_background_job",
            vec![t("redis", "127.0.0.1", 6379, "tcp", "call", r, 1)],
        ),
    ];
    assert_eq!(
        run.tests(),
        expected.iter().map(|e| e.0.to_string()).collect::<Vec<_>>()
    );
    for (test, calls) in expected {
        assert_eq!(run.calls(Some(test)), calls, "{test}");
    }
    assert_eq!(
        run.calls(None),
        vec![t("memcached", "127.0.0.1", 11211, "tcp", "-", r, 1)]
    );
    assert!(
        run.stderr()
            .contains("nettrap: 4 categories of external calls in 7 of 14 tests"),
        "{}",
        run.stderr()
    );
    assert!(
        run.todo.contains("## redis: 4 tests, 6 calls"),
        "{}",
        run.todo
    );
}

/// unittest's class and module fixtures, failures and other outcomes (fixtures/unittest-fixtures,
/// see its EXPECTED.md): set-up calls go to the test they run for, in setup, naming the fixture;
/// the user still sees their own failing line.
#[test]
fn class_and_module_fixtures_and_outcomes() {
    let run = run_in(
        "unittest-fixtures",
        &repo().join("fixtures/unittest-fixtures"),
        &[],
        &["python3", "-B", "-m", "unittest", "test_fixtures"],
    );
    assert_eq!(run.code(), 1, "two tests fail: {}", run.stderr());
    let err = run.stderr();
    assert!(err.contains("Ran 6 tests"), "{err}");
    assert!(
        err.contains("line 50, in test_fails\n    self.assertEqual(1, 2)"),
        "the failing line is shown: {err}"
    );
    assert!(
        !err.contains("_nettrap_adapter"),
        "no adapter frame in tracebacks: {err}"
    );
    assert_eq!(run.report["runner"], "unittest");
    // As unittest counts: `Broken.test_never_runs` never ran (its class could not be set up).
    assert_eq!(run.report["tests_total"], 6);
    let id = |t: &str| format!("test_fixtures.{t}");
    let outcomes: Vec<(String, String)> = run.all_tests();
    assert_eq!(
        outcomes,
        [
            ("Outcomes.test_expected", "xfailed"),
            ("Outcomes.test_fails", "failed"),
            ("Outcomes.test_skipped", "skipped"),
            ("Outcomes.test_sub_fails", "failed"),
            ("Search.test_first", "passed"),
            ("Search.test_second", "passed"),
        ]
        .map(|(t, o)| (id(t), o.to_string()))
    );
    let r = "recorded";
    let fixture = |t: &str| run.test(&id(t))["calls"][0]["fixture"].clone();
    assert_eq!(
        run.calls(Some(&id("Search.test_first"))),
        vec![t("elasticsearch", "127.0.0.1", 9200, "tcp", "setup", r, 1)]
    );
    assert_eq!(
        fixture("Search.test_first"),
        "Search (class, test_fixtures.py)"
    );
    assert_eq!(
        run.calls(Some(&id("Search.test_second"))),
        vec![t("external-api", "127.0.0.1", 80, "tcp", "call", r, 1)]
    );
    // The module's set-up ran for `Broken.test_never_runs`, which then did not run: its call
    // is nobody's, naming the fixture, as the class's tear-down's is.
    assert_eq!(
        run.calls(None),
        vec![
            t("memcached", "127.0.0.1", 11211, "tcp", "-", r, 1),
            t("redis", "127.0.0.1", 6379, "tcp", "-", r, 1),
        ]
    );
    let fixtures: std::collections::BTreeMap<u64, String> = run.report["unattributed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["port"].as_u64().unwrap(),
                c["fixture"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        fixtures,
        [
            (6379, "test_fixtures (module, test_fixtures.py)".to_string()),
            (11211, "Search (class teardown)".to_string()),
        ]
        .into()
    );
    assert!(err.contains("in 2 of 6 tests"), "{err}");
}
