//! `NETTRAP_TIMINGS`: the report step's time and peak memory, on a real run of many calls over
//! many tests (the benchmark's `many_calls`, small). What is asserted is the line and the
//! report, never a time.

mod common;
use common::*;

fn many_calls(name: &str, level: &str) -> Run {
    let exe = c_fixture("many_calls");
    let dir = scratch(&format!("{name}-cwd"));
    run_in_env(
        name,
        &dir,
        &[("NETTRAP_TIMINGS", level)],
        &["--engine", "preload"],
        &[exe.to_str().unwrap(), "2000", "20"],
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
        "build",
        "render report JSON",
        "write report JSON",
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
