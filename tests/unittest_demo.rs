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
