//! Policy from `pyproject.toml`'s `[tool.nettrap]`: found from the working directory up (the
//! closest file wins; in one directory `nettrap.toml` wins whole), errors that name the file,
//! table and line, and `nettrap config` saying where each part came from.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// The same policy as `pytest_suite::policy_file_scopes_rules_to_tests`, as a pyproject table
/// among other tools' tables.
const PYPROJECT: &str = r#"[project]
name = "demo"
version = "0"

[tool.ruff]
line-length = 100

[tool.nettrap.categories.search]
ports = [9200]
hosts = ["127.0.0.0/8"]

[[tool.nettrap.rules]]
category = "search"
action = "deny"

[[tool.nettrap.rules]]
category = "search"
tests = "tests/test_search.py::*"
action = "allow"

[tool.pytest.ini_options]
addopts = "-q"
"#;

fn nettrap_output_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(nettrap())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The demo suite copied under `root/suite`, with `pyproject` written one directory up.
fn suite_below(name: &str, pyproject: &str) -> std::path::PathBuf {
    let root = scratch(name);
    std::fs::write(root.join("pyproject.toml"), pyproject).unwrap();
    let suite = root.join("suite");
    copy_tree(&demo_suite(), &suite);
    suite
}

#[test]
fn pyproject_policy_found_walking_up_decides_the_suites_calls() {
    let suite = suite_below("pyproject-suite", PYPROJECT);
    let py = python();
    let run = run_in(
        "pyproject-suite-run",
        &suite,
        &[],
        &[&py, "-m", "pytest", "-q", "-p", "no:randomly"],
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
    let test = run.test("tests/test_threads.py::test_background_thread");
    assert_eq!(
        test["calls"][0]["rule"],
        "deny search, ../pyproject.toml:12"
    );

    // A nettrap.toml in the suite's own directory is closer: it wins, whole (its empty policy
    // denies nothing; nothing of [tool.nettrap] is merged in).
    std::fs::write(suite.join("nettrap.toml"), "errno = \"EACCES\"\n").unwrap();
    let out = nettrap_output_in(&suite, &["config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("policy file: nettrap.toml (found in the working directory)"),
        "{text}"
    );
    assert!(!text.contains("  search "), "{text}");
    let run = run_in(
        "pyproject-suite-shadowed",
        &suite,
        &[],
        &[&py, "-m", "pytest", "-q", "-p", "no:randomly"],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        run.calls(Some("tests/test_threads.py::test_background_thread")),
        vec![t(
            "elasticsearch",
            "127.0.0.1",
            9200,
            "tcp",
            "call",
            "recorded",
            1
        )]
    );
}

#[test]
fn in_one_directory_nettrap_toml_wins_whole_and_config_says_so() {
    let dir = scratch("pyproject-both");
    std::fs::write(dir.join("pyproject.toml"), PYPROJECT).unwrap();
    let out = nettrap_output_in(&dir, &["config", "--fail-on", "redis"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "policy file: pyproject.toml [tool.nettrap] (found in the working directory)",
        "errno      ECONNREFUSED                 built-in",
        "fail_on    redis                        --fail-on",
        "  search           ports 9200 hosts 127.0.0.0/8     pyproject.toml:8",
        "  deny search, pyproject.toml:12",
        "  allow search, pyproject.toml:16 (tests tests/test_search.py::*)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    std::fs::write(dir.join("nettrap.toml"), "errno = \"EACCES\"\n").unwrap();
    let out = nettrap_output_in(&dir, &["config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "policy file: nettrap.toml (found in the working directory)",
        "ignored: pyproject.toml [tool.nettrap] (nettrap.toml in the same directory wins whole",
        "errno      EACCES                       nettrap.toml:1",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("  search "), "{text}");

    // A pyproject.toml without [tool.nettrap] is passed over: a parent's nettrap.toml decides.
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("pyproject.toml"), "[tool.ruff]\nline-length = 1\n").unwrap();
    let out = nettrap_output_in(&sub, &["config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("policy file: ../nettrap.toml (the closest"),
        "{text}"
    );
    // --policy names either kind of file.
    let out = nettrap_output_in(&sub, &["config", "--policy", "../pyproject.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("policy file: ../pyproject.toml [tool.nettrap] (--policy)"),
        "{text}"
    );
    let out = nettrap_output_in(&sub, &["config", "--policy", "pyproject.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "nettrap: error: pyproject.toml: no [tool.nettrap] table"
    );
}

#[test]
fn pyproject_errors_name_the_file_the_table_and_the_line() {
    let dir = scratch("pyproject-errors");
    let cases = [
        (
            PYPROJECT.replace("action = \"allow\"", "action = \"dney\""),
            "pyproject.toml:19: [[tool.nettrap.rules]]: unknown action `dney` (expected allow, \
             record or deny)",
        ),
        (
            PYPROJECT.replace("ports = [9200]", "ports = [92000]"),
            "pyproject.toml:9: [tool.nettrap.categories.search]: `92000` is not a port",
        ),
        (
            PYPROJECT.replace(
                "[tool.nettrap.categories.search]",
                "[tool.nettrap]\nerrnoo = 1\n[tool.nettrap.categories.search]",
            ),
            "pyproject.toml:9: [tool.nettrap]: unknown field `errnoo`",
        ),
        (
            "[tool.nettrap\nerrno = 1\n".to_string(),
            "pyproject.toml:1: ",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(dir.join("pyproject.toml"), &text).unwrap();
        for args in [&["config"][..], &["run", "--", "true"][..]] {
            let out = nettrap_output_in(&dir, args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.starts_with(&format!("nettrap: error: {want}")),
                "{args:?}: want {want:?}, got {err}"
            );
        }
    }
}

#[test]
fn a_broken_pyproject_that_never_names_nettrap_does_not_stop_a_run() {
    // Another tool's syntax error in a pyproject.toml (in the working directory or any parent,
    // up to `/`) once stopped every run below it, even beside a nettrap.toml that wins whole,
    // with an error blaming `[tool.nettrap]`. It is passed over; one that names nettrap and is
    // broken is still an error (it may hold the table).
    let dir = scratch("pyproject-broken-other");
    std::fs::write(dir.join("nettrap.toml"), "errno = \"EACCES\"\n").unwrap();
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("pyproject.toml"), "[project\nname = 1\n").unwrap();
    let out = nettrap_output_in(&sub, &["config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("policy file: ../nettrap.toml (the closest"),
        "{text}"
    );
    let out = nettrap_output_in(&sub, &["run", "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Beside a nettrap.toml, even a broken [tool.nettrap] only earns the "ignored" note.
    std::fs::write(dir.join("pyproject.toml"), "[tool.nettrap\nerrno = 1\n").unwrap();
    let out = nettrap_output_in(&dir, &["config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ignored: pyproject.toml [tool.nettrap]"),
        "{text}"
    );
}
