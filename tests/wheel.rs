//! The Python wheel: built with maturin (pinned, from PyPI, into target/) once per test run,
//! installed into a virtual environment whose PATH has no Rust, and used the way a Python team
//! would: `pytest --nettrap` from `addopts`, policy from pyproject.toml, xdist workers.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

fn target_tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// The wheel, built once per test run: `maturin build --release --auditwheel check` (the
/// manylinux tag is the lowest the binary's glibc symbols allow; the check fails the build on
/// any library outside the manylinux set).
fn wheel() -> &'static Path {
    static WHEEL: OnceLock<PathBuf> = OnceLock::new();
    WHEEL.get_or_init(|| {
        let _l = lock(&target_tmp().join("wheel.lock"));
        let reqs = std::fs::read_to_string(repo().join("fixtures/build-requirements.txt")).unwrap();
        let py = venv_with(&target_tmp().join("maturin-venv"), &reqs, "");
        let maturin = py.with_file_name("maturin");
        let out = target_tmp().join("wheel");
        let _ = std::fs::remove_dir_all(&out);
        let run = Command::new(&maturin)
            .args([
                "build",
                "--release",
                "--quiet",
                "--auditwheel",
                "check",
                "--out",
            ])
            .arg(&out)
            .current_dir(repo())
            .output()
            .expect("maturin");
        assert!(
            run.status.success(),
            "maturin build failed:\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let wheel = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .expect("a wheel");
        eprintln!("wheel: {}", wheel.display());
        wheel
    })
}

/// A virtual environment with the pinned pytest and pytest-xdist (from the tests' own list)
/// and the wheel installed (again at each test run: the wheel is rebuilt).
fn user_venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let wheel = wheel();
        let _l = lock(&target_tmp().join("wheel-venv.lock"));
        let pinned = std::fs::read_to_string(repo().join("fixtures/python-requirements.txt"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("pytest==") || l.starts_with("pytest-xdist=="))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        assert_eq!(pinned.lines().count(), 2, "pytest and pytest-xdist pinned");
        let venv = target_tmp().join("wheel-venv");
        let py = venv_with(&venv, &pinned, "");
        let st = Command::new(&py)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(["--no-deps", "--force-reinstall"])
            .arg(wheel)
            .status()
            .unwrap();
        assert!(st.success(), "pip install {}", wheel.display());
        venv
    })
}

/// `argv` run isolated in `cwd` with the user's environment: PATH is the venv's bin directory
/// and the system's, nothing of Rust (no cargo, no ~/.cargo/bin, no build tree variables).
fn as_user(cwd: &Path, argv: &[&str]) -> std::process::Output {
    let venv = user_venv();
    let path = format!("{}:/usr/bin:/bin", venv.join("bin").display());
    let mut cmd = isolated(argv);
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", &path)
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null());
    cmd.output().unwrap()
}

fn report(dir: &Path) -> Run {
    let text = std::fs::read_to_string(dir.join("nettrap-report.json")).unwrap();
    Run {
        out: Command::new("true").output().unwrap(),
        report: serde_json::from_str(&text).unwrap(),
        todo: std::fs::read_to_string(dir.join("nettrap-todo.md")).unwrap_or_default(),
        dir: dir.to_path_buf(),
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The demo suite in a scratch directory, with `ini` as its pytest.ini.
fn suite(name: &str, ini: &str) -> PathBuf {
    let dir = scratch(name);
    copy_tree(&demo_suite(), &dir);
    std::fs::write(dir.join("pytest.ini"), ini).unwrap();
    dir
}

#[test]
fn the_wheel_runs_without_rust_and_pytest_nettrap_from_addopts_gives_the_report() {
    let venv = user_venv();
    let wheel = wheel();
    let name = wheel.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with(concat!(
            "nettrap-",
            env!("CARGO_PKG_VERSION"),
            "-py3-none-manylinux_"
        )),
        "{name}"
    );
    let dir = suite(
        "wheel-addopts",
        "[pytest]\ntestpaths = tests\npythonpath = .\naddopts = -p no:cacheprovider --nettrap\n",
    );
    // No Rust here: the binary carries its shim and adapters.
    let probe = as_user(
        &dir,
        &["sh", "-c", "command -v cargo rustc; command -v nettrap"],
    );
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        venv.join("bin/nettrap").to_str().unwrap(),
        "{}",
        text(&probe)
    );
    let out = as_user(&dir, &["pytest", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nettrap: 5 categories of external calls in 12 of 19 tests"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("19 passed"),
        "{}",
        text(&out)
    );
    let run = report(&dir);
    assert_eq!(run.report["tests_total"], 19);
    assert_eq!(run.report["tests_with_calls"], 12);
    assert_eq!(run.report["runner"], "pytest");
    assert_eq!(
        run.calls(Some("tests/test_search.py::test_index")),
        vec![t(
            "elasticsearch",
            "127.0.0.1",
            9200,
            "tcp",
            "call",
            "recorded",
            2
        )]
    );
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
    assert!(run.todo.contains("## elasticsearch"), "{}", run.todo);

    // xdist: the workers see --nettrap too and must not start nettrap again; their tests are
    // attributed as in a serial run. --nettrap-report names the report.
    let out = as_user(
        &dir,
        &[
            "python",
            "-m",
            "pytest",
            "-q",
            "-n",
            "2",
            "--nettrap-report",
            "xdist.json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("xdist.json")).unwrap()).unwrap();
    assert_eq!(again["tests_total"], 19, "{}", text(&out));
    assert_eq!(again["tests_with_calls"], 12);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("nettrap: report:").count(),
        1,
        "one nettrap run, not one per worker:\n{}",
        text(&out)
    );

    // Without the option the plugin does nothing: no report, pytest's own status.
    let plain = suite(
        "wheel-plain",
        "[pytest]\ntestpaths = tests\npythonpath = .\n",
    );
    let out = as_user(&plain, &["pytest", "-q", "-p", "no:cacheprovider"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!plain.join("nettrap-report.json").exists());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("nettrap"),
        "{}",
        text(&out)
    );
}

#[test]
fn pytest_nettrap_deny_enforces_the_pyproject_policy_and_exits_86() {
    let dir = suite(
        "wheel-pyproject",
        "[pytest]\ntestpaths = tests\npythonpath = .\naddopts = -p no:cacheprovider\n",
    );
    // The suite's own pyproject.toml: Elasticsearch is expected for test_search.py, Redis is
    // recorded everywhere; --nettrap=deny denies everything else.
    std::fs::write(
        dir.join("pyproject.toml"),
        r#"[project]
name = "demo"

[[tool.nettrap.rules]]
category = "elasticsearch"
tests = "tests/test_search.py::*"
action = "allow"

[[tool.nettrap.rules]]
category = "redis"
action = "record"
"#,
    )
    .unwrap();
    let out = as_user(&dir, &["pytest", "-q", "--nettrap=deny"]);
    assert_eq!(out.status.code(), Some(86), "{}", text(&out));
    let run = report(&dir);
    assert_eq!(
        run.calls(Some("tests/test_search.py::test_index")),
        vec![t(
            "elasticsearch",
            "127.0.0.1",
            9200,
            "tcp",
            "call",
            "allowed",
            2
        )]
    );
    assert_eq!(
        run.calls(Some("tests/test_threads.py::test_background_thread")),
        vec![t(
            "elasticsearch",
            "127.0.0.1",
            9200,
            "tcp",
            "call",
            "denied",
            1
        )]
    );
    let test = run.test("tests/test_threads.py::test_background_thread");
    assert_eq!(test["calls"][0]["rule"], "deny (default)");
    let redis = run.report["categories"]["redis"]["calls"].as_u64().unwrap();
    assert!(redis > 0, "{}", run.report["categories"]);
    assert_eq!(
        run.report["categories"]["redis"]["denied"]
            .as_u64()
            .unwrap_or(0),
        0
    );
}

#[test]
fn pytest_nettrap_starts_pytest_again_with_the_interpreters_own_options() {
    // `python -W error -m pytest --nettrap` was started again as `python -m pytest`: the
    // warning filter was lost, so a test that fails without nettrap passed under it (exit 1
    // became 0). The plugin from the source tree (no wheel needed), nettrap from the build.
    let dir = scratch("pytest-nettrap-interp-options");
    std::fs::write(
        dir.join("test_warns.py"),
        "import warnings\n\ndef test_warns():\n    warnings.warn('boom')\n",
    )
    .unwrap();
    let bin = Path::new(nettrap()).parent().unwrap().display().to_string();
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    let py = python();
    for extra in [&[][..], &["--nettrap"][..]] {
        let mut argv = vec![py.as_str(), "-W", "error", "-m", "pytest", "-q"];
        argv.extend(["-p", "no:cacheprovider", "-p", "nettrap.pytest_plugin"]);
        argv.extend(extra);
        let out = isolated(&argv)
            .current_dir(&dir)
            .env("PATH", &path)
            .env("PYTHONPATH", repo().join("python"))
            .env_remove("NETTRAP_RUN_DIR")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {all}");
        assert!(all.contains("1 failed"), "{extra:?}: {all}");
        if !extra.is_empty() {
            assert!(all.contains("nettrap: no external calls"), "{all}");
        }
    }
}
