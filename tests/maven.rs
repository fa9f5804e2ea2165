//! The Maven adapter (src/adapters/java, src/adapters/java.rs) on the bundled Maven project
//! (fixtures/maven, expected calls in its EXPECTED.md): `nettrap run -- mvn -o test` knows every
//! test Surefire ran, with outcome and duration, the fork's role, each call on its test (a
//! child process's too); ids join Surefire's JUnit XML; the user's JAVA_TOOL_OPTIONS still
//! apply; parallel JUnit runs are attributed per thread; an agent that cannot load says so once.
//!
//! Maven runs offline inside the isolated namespace: its pinned plugins and dependencies are
//! fetched once (the only step that needs Maven Central) into `target/maven-fixture/m2`.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const SEARCH: &str = "com.example.SearchTest.";
const CACHE: &str = "com.example.CacheTest.";
const NESTED: &str = "com.example.CacheTest$WithConnection.getsKey";
const ENV: &str = "com.example.EnvTest.keepsUserToolOptions";

/// Maven and a JDK are not among what a fresh machine must have (Rust, cc, Go, Node, Python):
/// without them each Maven test says it skipped (`.ci/run` installs both, so CI runs them).
fn no_maven(test: &str) -> bool {
    let works = |prog: &str, arg: &str| {
        Command::new(prog)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works("mvn", "--version") && works("javac", "-version") {
        return false;
    }
    eprintln!(
        "{test}: SKIPPED, Maven and a JDK (mvn, javac) are needed for the Maven adapter's tests"
    );
    true
}

fn fixture() -> PathBuf {
    repo().join("fixtures/maven")
}

/// The local Maven repository with everything the fixture needs, fetched once (under a lock)
/// and reused while `pom.xml` is unchanged.
fn m2() -> &'static Path {
    static M2: OnceLock<PathBuf> = OnceLock::new();
    M2.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("maven-fixture");
        std::fs::create_dir_all(&dir).unwrap();
        let _lock = lock(&dir.join(".lock"));
        let m2 = dir.join("m2");
        let pom = std::fs::read_to_string(fixture().join("pom.xml")).unwrap();
        let marker = dir.join(".fetched");
        if std::fs::read_to_string(&marker).ok().as_deref() == Some(pom.as_str()) {
            return m2;
        }
        let warm = dir.join("warm");
        let _ = std::fs::remove_dir_all(&warm);
        copy_tree(&fixture(), &warm);
        // Every plugin of `verify` and Surefire's JUnit Platform provider (resolved only when a
        // test runs): one test that makes no call.
        let out = Command::new("mvn")
            .args(["-B", "-q", "verify", "-Dtest=CacheTest#computesKeyName"])
            .arg(format!("-Dmaven.repo.local={}", m2.display()))
            .current_dir(&warm)
            .stdin(Stdio::null())
            .output()
            .expect("running mvn (Maven and a JDK are needed for the Maven adapter's tests)");
        assert!(
            out.status.success(),
            "fetching the Maven fixture's dependencies failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&marker, pom).unwrap();
        m2
    })
}

/// A fresh copy of the fixture, with a `./mvnw` that runs the machine's Maven.
fn workspace(name: &str) -> PathBuf {
    let dir = scratch(&format!("{name}-project"));
    copy_tree(&fixture(), &dir);
    let mvnw = dir.join("mvnw");
    std::fs::write(&mvnw, "#!/bin/sh\nexec mvn \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&mvnw, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `nettrap run [flags] -- <maven...> -o -q -B -Dmaven.repo.local=... <args>` in a fresh copy.
fn maven(
    name: &str,
    env: &[(&str, &str)],
    flags: &[&str],
    prog: &[&str],
    args: &[&str],
) -> (Run, PathBuf) {
    let dir = workspace(name);
    let repo_local = format!("-Dmaven.repo.local={}", m2().display());
    let mut cmd: Vec<&str> = prog.to_vec();
    cmd.extend(["-o", "-q", "-B", &repo_local]);
    cmd.extend_from_slice(args);
    let mut env = env.to_vec();
    if !env.iter().any(|(k, _)| *k == "JAVA_TOOL_OPTIONS") {
        env.push(("JAVA_TOOL_OPTIONS", ""));
    }
    let run = run_in_env(name, &dir, &env, flags, &cmd);
    (run, dir)
}

/// Surefire's JUnit XML: (classname, name) of every case, and its count of tests.
fn surefire_cases(dir: &Path) -> (Vec<(String, String)>, u64) {
    let mut cases = Vec::new();
    let mut total = 0;
    for e in std::fs::read_dir(dir.join("target/surefire-reports")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if !(name.starts_with("TEST-") && name.ends_with(".xml")) {
            continue;
        }
        let xml = std::fs::read_to_string(&p).unwrap();
        for tag in xml.split('<').skip(1) {
            let attr = |k: &str| {
                let pat = format!(" {k}=\"");
                tag.find(&pat).map(|i| {
                    let rest = &tag[i + pat.len()..];
                    rest[..rest.find('"').unwrap()].replace("&amp;", "&")
                })
            };
            if tag.starts_with("testcase ") {
                cases.push((attr("classname").unwrap(), attr("name").unwrap()));
                total += 1;
            }
        }
    }
    cases.sort();
    (cases, total)
}

/// Calls per test id: (port, count), sorted; unattributed under "-".
fn calls_by_test(run: &Run) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut m: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let tests = run.report["tests"].as_array().unwrap().iter();
    let entries = tests
        .flat_map(|t| {
            let id = t["test"].as_str().unwrap().to_string();
            t["calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |c| (id.clone(), c))
        })
        .chain(
            run.report["unattributed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| ("-".to_string(), c)),
        );
    for (id, c) in entries {
        m.entry(id)
            .or_default()
            .push((c["port"].as_u64().unwrap(), c["count"].as_u64().unwrap()));
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

/// EXPECTED.md's calls, tests run one at a time.
fn expected_calls() -> BTreeMap<String, Vec<(u64, u64)>> {
    BTreeMap::from([
        (format!("{SEARCH}indexes"), vec![(9200, 2)]),
        (format!("{SEARCH}queries"), vec![(9200, 1)]),
        (format!("{SEARCH}pages(int)[1]"), vec![(9200, 1)]),
        (format!("{SEARCH}pages(int)[2]"), vec![(9200, 2)]),
        (NESTED.to_string(), vec![(6379, 2)]),
        (format!("{CACHE}warmsUpInChildProcess"), vec![(6379, 1)]),
    ])
}

#[test]
fn maven_suite_under_nettrap_run() {
    if no_maven("maven_suite_under_nettrap_run") {
        return;
    }
    let (run, dir) = maven("maven-run", &[], &[], &["mvn"], &["test"]);
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    let r = &run.report;
    assert_eq!(r["runner"], "maven");
    assert_eq!(r["runners"], serde_json::json!(["maven"]));
    assert!(
        r["adapter_failures"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{r}"
    );

    // every test Surefire ran, under the ids its JUnit XML gives (class name, case name)
    let (cases, total) = surefire_cases(&dir);
    assert_eq!(total, 10, "{cases:?}");
    assert_eq!(r["tests_total"], total);
    let mut ids: Vec<(String, String)> = run
        .all_tests()
        .iter()
        .map(|(id, _)| {
            let head = id.split(['(', '[']).next().unwrap();
            let dot = head.rfind('.').unwrap();
            (id[..dot].to_string(), id[dot + 1..].to_string())
        })
        .collect();
    ids.sort();
    assert_eq!(ids, cases);

    // outcomes and durations
    for (id, outcome) in run.all_tests() {
        let want = if id.ends_with("reindexesEverything") {
            "skipped"
        } else {
            "passed"
        };
        assert_eq!(outcome, want, "{id}");
        let d = run.test(&id)["duration_s"].as_f64().unwrap();
        assert!((0.0..60.0).contains(&d), "{id}: {d}");
        if want == "passed" {
            assert!(d > 0.0, "{id}: {d}");
        }
    }

    // each call on its test, none outside; the fork's role; the child's call on its test
    assert_eq!(calls_by_test(&run), expected_calls(), "{r}");
    assert_eq!(r["tests_with_calls"], 6);
    for c in run.all_calls() {
        let cmdline = c["process"]["cmdline"].as_str().unwrap();
        if cmdline.starts_with("bash") {
            assert_eq!(c["port"], 6379);
        } else {
            assert_eq!(c["process"]["role"], "surefire fork 1", "{c}");
            assert_eq!(c["served_by_suite"], true, "{c}");
        }
        assert!(
            c["fixture"].is_null(),
            "inside tests, no class fixture: {c}"
        );
    }
    assert_eq!(
        run.calls(Some(NESTED)),
        vec![t("redis", "127.0.0.1", 6379, "tcp", "-", "recorded", 2)]
    );
}

#[test]
fn maven_wrapper_verify_keeps_user_java_tool_options() {
    if no_maven("maven_wrapper_verify_keeps_user_java_tool_options") {
        return;
    }
    // `./mvnw verify` is recognised; the user's own JAVA_TOOL_OPTIONS reach the test JVM (the
    // test checks the property it sets).
    let env = [
        ("JAVA_TOOL_OPTIONS", "-Dnettrap.fixture.user=yes"),
        ("USER_TOOL_OPTIONS_EXPECTED", "1"),
    ];
    let (run, _) = maven("maven-mvnw", &env, &[], &["./mvnw"], &["verify"]);
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    assert_eq!(run.report["runner"], "maven");
    assert_eq!(run.report["tests_total"], 10);
    assert_eq!(run.test(ENV)["outcome"], "passed");
    assert_eq!(calls_by_test(&run), expected_calls());
}

#[test]
fn maven_failing_test_and_runner_flag() {
    if no_maven("maven_failing_test_and_runner_flag") {
        return;
    }
    // Without the user's property the check fails: Maven fails, the report says which test.
    // `--runner maven` where the command (a shell) does not show Maven.
    let env = [("USER_TOOL_OPTIONS_EXPECTED", "1")];
    let repo_local = format!("-Dmaven.repo.local={}", m2().display());
    let dir = workspace("maven-runner-flag");
    let script = format!("mvn -o -q -B {repo_local} test");
    let run = run_in_env(
        "maven-runner-flag",
        &dir,
        &env,
        &["--runner", "maven"],
        &["sh", "-c", &script],
    );
    assert_ne!(run.code(), 0, "{}", run.stdout());
    assert_eq!(run.report["runner"], "maven");
    assert_eq!(run.report["tests_total"], 10);
    assert_eq!(run.test(ENV)["outcome"], "failed");
    assert_eq!(run.test(&format!("{SEARCH}indexes"))["outcome"], "passed");
    assert_eq!(calls_by_test(&run), expected_calls());
}

#[test]
fn maven_parallel_junit_is_attributed_per_thread() {
    if no_maven("maven_parallel_junit_is_attributed_per_thread") {
        return;
    }
    // Jupiter's parallel execution: each test's interval is its thread's. Calls of threads
    // that run no test, and of child processes, are not any test's (EXPECTED.md).
    let args = [
        "test",
        "-Djunit.jupiter.execution.parallel.enabled=true",
        "-Djunit.jupiter.execution.parallel.mode.default=concurrent",
        "-Djunit.jupiter.execution.parallel.mode.classes.default=concurrent",
    ];
    let (run, _) = maven("maven-parallel", &[], &[], &["mvn"], &args);
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout(), run.stderr());
    assert_eq!(run.report["tests_total"], 10);
    let mut want = expected_calls();
    let child = want
        .remove(&format!("{CACHE}warmsUpInChildProcess"))
        .unwrap();
    want.insert("-".into(), child);
    assert_eq!(calls_by_test(&run), want, "{}", run.report);
}

/// The agent and listener jars this nettrap carries, written to a cache directory of our own.
fn jars(name: &str) -> PathBuf {
    let cache = scratch(name);
    let out = Command::new(nettrap())
        .args(["run", "--runner", "none", "--report"])
        .arg(cache.join("r.json"))
        .args(["--", "true"])
        .env("NETTRAP_CACHE_DIR", &cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("java/nettrap-agent.jar").is_file())
        .expect("this nettrap was built with javac: it carries the Maven adapter");
    key.join("java")
}

fn jar_in_m2(group: &str, artifact: &str) -> PathBuf {
    let dir = m2().join(group.replace('.', "/")).join(artifact);
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    versions.sort();
    let v = versions.pop().unwrap();
    let ver = v.file_name().unwrap().to_str().unwrap().to_string();
    v.join(format!("{artifact}-{ver}.jar"))
}

#[test]
fn agent_without_its_listener_jar_says_so_once() {
    if no_maven("agent_without_its_listener_jar_says_so_once") {
        return;
    }
    // The agent alone (its nettrap-junit.jar missing) in a JVM with JUnit Platform: one
    // `adapter` event, and the program runs on. In a JVM without JUnit it writes nothing.
    let java = jars("maven-agent-jars");
    let dir = scratch("maven-agent-alone");
    std::fs::copy(
        java.join("nettrap-agent.jar"),
        dir.join("nettrap-agent.jar"),
    )
    .unwrap();
    std::fs::write(
        dir.join("Hello.java"),
        "class Hello { public static void main(String[] a) { System.out.println(\"hello\"); } }\n",
    )
    .unwrap();
    let launcher = jar_in_m2("org.junit.platform", "junit-platform-launcher");
    for (cp, events) in [(Some(&launcher), 1), (None, 0)] {
        let rd = dir.join(format!("rd-{events}"));
        std::fs::create_dir_all(&rd).unwrap();
        std::fs::write(rd.join("timeline.jsonl"), "").unwrap();
        let mut cmd = Command::new("java");
        cmd.arg(format!(
            "-javaagent:{}",
            dir.join("nettrap-agent.jar").display()
        ));
        if let Some(cp) = cp {
            cmd.arg("-cp").arg(cp);
        }
        let out = cmd
            .arg(dir.join("Hello.java"))
            .env("NETTRAP_RUN_DIR", &rd)
            .env_remove("JAVA_TOOL_OPTIONS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
        let text = std::fs::read_to_string(rd.join("timeline.jsonl")).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), events, "{text}");
        if let Some(e) = lines.first() {
            assert_eq!(
                (e["ev"].as_str(), e["runner"].as_str()),
                (Some("adapter"), Some("maven"))
            );
            assert_eq!(e["status"], "failed");
            assert!(
                e["why"].as_str().unwrap().contains("nettrap-junit.jar"),
                "{e}"
            );
        }
    }
}

#[test]
fn listener_compiles_against_the_real_junit_platform() {
    if no_maven("listener_compiles_against_the_real_junit_platform") {
        return;
    }
    // The stubs it is built against (src/adapters/java/stubs) match the real API: the same
    // sources compile against JUnit Platform's jars as Surefire resolved them.
    let src = repo().join("src/adapters/java");
    let out_dir = scratch("maven-real-api");
    let cp = [
        jar_in_m2("org.junit.platform", "junit-platform-launcher"),
        jar_in_m2("org.junit.platform", "junit-platform-engine"),
        jar_in_m2("org.junit.platform", "junit-platform-commons"),
    ]
    .map(|p| p.display().to_string())
    .join(":");
    let out = Command::new("javac")
        .args(["--release", "8", "-Xlint:-options", "-d"])
        .arg(&out_dir)
        .args(["-cp", &cp])
        .arg(src.join("agent/nettrap/agent/Timeline.java"))
        .arg(src.join("junit/nettrap/junit/NettrapListener.java"))
        .output()
        .expect("javac");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
