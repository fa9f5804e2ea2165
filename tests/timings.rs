//! `NETTRAP_TIMINGS`: the report step's time and peak memory, on a real run of many calls over
//! many tests (the benchmark's `many_calls`, small). What is asserted is the line and the
//! report, never a time.

mod common;
use common::*;

fn many_calls(name: &str, level: &str) -> Run {
    many_calls_over(name, level, 2000, 20)
}

fn many_calls_over(name: &str, level: &str, calls: u64, tests: u64) -> Run {
    let exe = c_fixture("many_calls");
    let dir = scratch(&format!("{name}-cwd"));
    let (calls, tests) = (calls.to_string(), tests.to_string());
    run_in_env(
        name,
        &dir,
        &[("NETTRAP_TIMINGS", level)],
        &["--engine", "preload"],
        &[exe.to_str().unwrap(), &calls, &tests],
    )
}

/// The line matches `nettrap: report step: X ms, peak RSS Y MB` with numbers X and Y.
fn report_step_line(stderr: &str) -> Option<(u64, f64)> {
    stderr.lines().find_map(|l| {
        let rest = l.strip_prefix("nettrap: report step: ")?;
        let (ms, rest) = rest.split_once(" ms, peak RSS ")?;
        let mb = rest.strip_suffix(" MB")?;
        Some((ms.parse().ok()?, mb.parse().ok()?))
    })
}

#[test]
fn timings_line_after_a_run_of_2000_calls_over_20_tests() {
    let run = many_calls("timings-1", "1");
    assert_eq!(run.code(), 0, "stderr:\n{}", run.stderr());
    let (_, mb) = report_step_line(&run.stderr())
        .unwrap_or_else(|| panic!("no report step line; stderr:\n{}", run.stderr()));
    assert!(mb > 0.0, "peak RSS {mb} MB");
    // Level 1: the one line, no phases.
    assert_eq!(run.stderr().matches("nettrap: report step").count(), 1);

    let tests = run.report["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 20, "{:?}", run.all_tests());
    assert_eq!(run.report["tests_with_calls"], 20);
    assert_eq!(run.total_calls(), 2000);
    assert_eq!(count(&run.report["unattributed"]), 0);
    // 100 calls per test, over four closed ports: four groups of 25.
    let first = run.test("tests/test_mod_0.py::test_0");
    let ports: Vec<(u64, u64)> = first["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["port"].as_u64().unwrap(), c["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(ports, [(9, 25), (10, 25), (11, 25), (12, 25)]);
    run.test("tests/test_mod_0.py::test_19");
}

#[test]
fn timings_level_2_adds_the_phases_and_unset_prints_nothing() {
    let run = many_calls("timings-2", "2");
    assert_eq!(run.code(), 0, "stderr:\n{}", run.stderr());
    assert!(
        report_step_line(&run.stderr()).is_some(),
        "{}",
        run.stderr()
    );
    for phase in [
        "decode event log",
        "baseline and verdict",
        "render to-do list",
        "render and write report JSON",
    ] {
        assert!(
            run.stderr()
                .contains(&format!("nettrap: report step: {phase}")),
            "no {phase} phase; stderr:\n{}",
            run.stderr()
        );
    }
    let run = many_calls("timings-0", "");
    assert!(!run.stderr().contains("report step"), "{}", run.stderr());
    assert_eq!(run.total_calls(), 2000);
}

/// The report of a run whose log spans many of the pieces the report step reads it in (200,000
/// calls, about 25 pieces of 8,192 slots) counts every call, in the test that made it; and the
/// report step's memory does not grow with the calls: ten times the calls over the same tests
/// cost at most a few MB more at the peak (holding the decoded calls cost ~170 B each, 30 MB
/// more here).
#[test]
fn a_large_run_is_counted_whole_and_its_report_step_memory_does_not_grow_with_its_calls() {
    let small = many_calls_over("timings-large-small", "1", 20_000, 200);
    let large = many_calls_over("timings-large", "1", 200_000, 200);
    for (run, calls) in [(&small, 20_000u64), (&large, 200_000)] {
        assert_eq!(run.code(), 0, "stderr:\n{}", run.stderr());
        let r = &run.report;
        assert_eq!(run.total_calls(), calls);
        assert_eq!(r["tests"].as_array().unwrap().len(), 200);
        assert_eq!(r["tests_with_calls"], 200);
        assert_eq!(r["categories"]["other"]["calls"], calls);
        assert_eq!(r["categories"]["other"]["tests"], 200);
        assert_eq!(r["lost"]["dropped"], 0);
        assert_eq!(r["lost"]["torn"], 0);
        assert_eq!(count(&r["unattributed"]), 0);
        // Every test: its calls over four closed ports, each port a quarter of them.
        let per_port = calls / 200 / 4;
        for t in [0, 99, 199] {
            let test = run.test(&format!("tests/test_mod_{}.py::test_{t}", t / 100));
            let ports: Vec<(u64, u64)> = test["calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["port"].as_u64().unwrap(), c["count"].as_u64().unwrap()))
                .collect();
            assert_eq!(
                ports,
                [
                    (9, per_port),
                    (10, per_port),
                    (11, per_port),
                    (12, per_port)
                ]
            );
        }
    }
    let peak = |run: &Run| report_step_line(&run.stderr()).unwrap().1;
    let (small_mb, large_mb) = (peak(&small), peak(&large));
    assert!(
        large_mb < small_mb + 12.0,
        "peak RSS {large_mb} MB for 200,000 calls, {small_mb} MB for 20,000"
    );
}
