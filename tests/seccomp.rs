//! The seccomp engine: calls that bypass libc (static binaries, raw system calls, i386 system
//! calls from `int $0x80`, scrubbed environments, sendto/sendmsg/sendmmsg, TCP Fast Open, Go)
//! are caught by `seccomp` and `auto`,
//! missed by `preload` (the documented gap), denied in enforce runs, and counted exactly once
//! under `auto`, also under concurrency.

mod common;
use common::*;

fn fx(name: &str) -> String {
    c_fixture(name).to_str().unwrap().to_string()
}

/// (category, address, port, transport, syscall, count) of one grouped call.
type Row = (String, String, u64, String, String, u64);

/// Every call, sorted.
fn rows(run: &Run) -> Vec<Row> {
    let mut v: Vec<_> = run
        .all_calls()
        .iter()
        .map(|c| {
            (
                c["category"].as_str().unwrap().to_string(),
                c["address"].as_str().unwrap().to_string(),
                c["port"].as_u64().unwrap(),
                c["transport"].as_str().unwrap().to_string(),
                c["syscall"].as_str().unwrap().to_string(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn row(
    address: &str,
    transport: &str,
    syscall: &str,
) -> (String, String, u64, String, String, u64) {
    (
        "other".into(),
        address.into(),
        9,
        transport.into(),
        syscall.into(),
        1,
    )
}

/// Programs an LD_PRELOAD shim cannot see, and the calls each makes.
fn bypassing() -> Vec<(&'static str, Vec<String>, Vec<Row>)> {
    vec![
        (
            "static",
            vec![fx("static_connect"), "9".into()],
            vec![row("127.0.0.1", "tcp", "connect")],
        ),
        (
            "raw-syscall",
            vec![fx("raw_syscall"), "9".into()],
            vec![row("127.0.0.1", "tcp", "connect")],
        ),
        (
            "scrubbed-env",
            vec![
                "env".into(),
                "-i".into(),
                fx("edge"),
                "exit".into(),
                "9".into(),
            ],
            vec![row("127.0.0.1", "tcp", "connect")],
        ),
        (
            "udp-sendto",
            vec![fx("udp_sendto"), "9".into()],
            vec![row("127.0.0.1", "udp", "sendto")],
        ),
        (
            "tcp-fast-open",
            vec![fx("bypass"), "tfo".into(), "9".into()],
            vec![row("127.0.0.1", "tcp", "sendto")],
        ),
        (
            "udp-sendmsg",
            vec![fx("bypass"), "sendmsg".into(), "9".into()],
            vec![row("127.0.0.1", "udp", "sendmsg")],
        ),
        (
            "i386-connect",
            vec![fx("int80"), "connect".into(), "9".into()],
            vec![row("127.0.0.1", "tcp", "connect")],
        ),
        (
            "i386-socketcall",
            vec![fx("int80"), "socketcall".into(), "9".into()],
            vec![row("127.0.0.1", "tcp", "connect")],
        ),
        (
            "udp-sendmmsg",
            vec![fx("bypass"), "sendmmsg".into(), "9".into()],
            vec![
                row("127.0.0.1", "udp", "sendmmsg"),
                row("127.0.0.2", "udp", "sendmmsg"),
            ],
        ),
    ]
}

#[test]
fn what_bypasses_libc_is_caught_by_seccomp_and_auto_and_missed_by_preload() {
    for (name, argv, expected) in bypassing() {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        for engine in ["preload", "seccomp", "auto"] {
            let run = run_in(
                &format!("bypass-{name}-{engine}"),
                &repo(),
                &["--engine", engine],
                &argv,
            );
            assert_eq!(run.code(), 0, "{name} {engine}: {}", run.stderr());
            assert_eq!(run.report["engine"], engine);
            let want = if engine == "preload" {
                vec![]
            } else {
                expected.clone()
            };
            assert_eq!(rows(&run), want, "{name} under {engine}");
        }
    }
}

#[test]
fn a_tcp_send_with_an_address_but_no_fast_open_is_not_a_call() {
    let run = run_in(
        "tcp-sendto",
        &repo(),
        &["--deny", "9"],
        &[&fx("bypass"), "tcp_sendto", "9"],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.total_calls(), 0);
    assert!(
        run.stdout().contains("ret=-1"),
        "the kernel's own answer: {}",
        run.stdout()
    );
}

#[test]
fn bypassing_calls_are_denied_in_enforce_runs() {
    for (name, argv, expected) in bypassing() {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let run = run_in(&format!("deny-{name}"), &repo(), &["--deny", "9"], &argv);
        assert_eq!(run.code(), 86, "{name}: {}", run.stderr());
        let verdicts: Vec<&str> = run.report["unattributed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["verdict"].as_str().unwrap())
            .collect();
        assert_eq!(verdicts, vec!["denied"; expected.len()], "{name}");
        assert!(
            run.stderr().contains("nettrap: denied "),
            "{name}: the denial is told in the program's stderr:\n{}",
            run.stderr()
        );
    }
    // The program itself sees the policy's errno.
    let run = run_in(
        "deny-static-errno",
        &repo(),
        &["--deny", "9", "--errno", "EACCES"],
        &[&fx("static_connect"), "9"],
    );
    assert!(
        run.stdout()
            .contains("static: connect returned -1 errno EACCES"),
        "{}",
        run.stdout()
    );
    let run = run_in(
        "deny-udp-errno",
        &repo(),
        &["--deny", "9"],
        &[&fx("udp_sendto"), "9"],
    );
    assert!(
        run.stdout()
            .contains("udp: sendto returned -1 errno ECONNREFUSED"),
        "{}",
        run.stdout()
    );
}

#[test]
fn io_uring_is_reported_and_refused_in_enforce_runs() {
    let run = run_in(
        "io-uring-record",
        &repo(),
        &[],
        &[&fx("bypass"), "io_uring", "9"],
    );
    assert_eq!(run.code(), 0);
    assert!(
        run.stdout().contains("bypass io_uring: ret=3"),
        "{}",
        run.stdout()
    );
    assert_eq!(run.report["io_uring"][0]["verdict"], "allowed");
    assert!(
        run.stderr().contains("set up io_uring, allowed"),
        "{}",
        run.stderr()
    );
    assert_eq!(run.total_calls(), 0, "io_uring_setup is not a network call");

    let run = run_in(
        "io-uring-enforce",
        &repo(),
        &["--deny", "443"],
        &[&fx("bypass"), "io_uring", "9"],
    );
    assert_eq!(run.code(), 0, "refusing io_uring is not a violation");
    assert!(
        run.stdout()
            .contains("bypass io_uring: ret=-1 errno=ENOSYS"),
        "{}",
        run.stdout()
    );
    assert_eq!(run.report["io_uring"][0]["verdict"], "refused");
    assert!(
        run.report["io_uring"][0]["process"]["exe"]
            .as_str()
            .unwrap()
            .ends_with("/bypass")
    );
}

fn go_test(name: &str, flags: &[&str]) -> Run {
    go_toolchain();
    run_in(
        name,
        &repo().join("fixtures/go"),
        flags,
        &["go", "test", "./..."],
    )
}

#[test]
fn go_tests_dials_are_seen_by_seccomp_only() {
    let run = go_test("go-preload", &["--engine", "preload"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        run.total_calls(),
        0,
        "Go's net stack bypasses libc: the documented gap"
    );
    // The go test adapter attributes each dial to its test (see tests/go_adapter.rs).
    let es = "example.com/nettrap-fixture/TestSearchIndex";
    let redis = "example.com/nettrap-fixture/TestCacheGet";
    for engine in ["seccomp", "auto"] {
        let run = go_test(&format!("go-{engine}"), &["--engine", engine]);
        assert_eq!(run.code(), 0, "{}", run.stderr());
        assert_eq!(
            run.calls(Some(es)),
            vec![t(
                "elasticsearch",
                "127.0.0.1",
                9200,
                "tcp",
                "-",
                "recorded",
                1
            )],
            "{engine}"
        );
        assert_eq!(
            run.calls(Some(redis)),
            vec![t("redis", "127.0.0.1", 6379, "tcp", "-", "recorded", 1)],
            "{engine}"
        );
        assert_eq!(run.calls(None), vec![], "{engine}");
        let exe = run.test(es)["calls"][0]["process"]["exe"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(exe.ends_with(".test"), "made by the test binary: {exe}");
    }
    let run = go_test("go-deny", &["--deny", "elasticsearch"]);
    assert_eq!(run.code(), 86, "{}", run.stderr());
    assert_eq!(
        run.calls(Some(es)),
        vec![t(
            "elasticsearch",
            "127.0.0.1",
            9200,
            "tcp",
            "-",
            "denied",
            1
        )]
    );
}

#[test]
fn seccomp_alone_counts_a_storm_of_calls_exactly_once() {
    let run = run_in(
        "storm-seccomp",
        &repo(),
        &["--engine", "seccomp"],
        &[&fx("stress"), "16", "8", "100", "9"],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.total_calls(), 16 * 8 * 100);
    assert_eq!(run.report["lost"]["torn"], 0);
}

#[test]
fn auto_counts_shim_and_supervisor_calls_exactly_once_under_concurrency() {
    // Processes with the shim (stress) and without it (env -i stress) connecting at once.
    let script = format!("{0} 16 8 100 9 & env -i {0} 8 4 100 9 & wait", fx("stress"));
    let run = run_in("storm-auto", &repo(), &[], &["sh", "-c", &script]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.report["engine"], "auto");
    assert_eq!(run.total_calls(), 16 * 8 * 100 + 8 * 4 * 100);
    // The shim's processes keep their live NETTRAP_TEST; the scrubbed ones are unattributed.
    let tests = run.report["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 16);
    for t in tests {
        let n = count(&t["calls"]);
        assert_eq!(n, 8 * 100, "{}", t["test"]);
    }
    let outside = count(&run.report["unattributed"]);
    assert_eq!(outside, 8 * 4 * 100);
}

#[test]
fn auto_falls_back_to_preload_with_a_notice_where_seccomp_is_unavailable() {
    // Inside another seccomp supervisor (here: nettrap itself) a second listener is refused.
    let inner = scratch("nested-inner").join("inner.json");
    let inner_s = inner.to_str().unwrap();
    let edge = fx("edge");
    let argv = [
        nettrap(),
        "run",
        "--report",
        inner_s,
        "--",
        &edge,
        "exit",
        "9",
    ];
    let outer = run_in("nested-outer", &repo(), &["--engine", "seccomp"], &argv);
    assert_eq!(outer.code(), 0, "{}", outer.stderr());
    assert!(
        outer.stderr().contains("nettrap: seccomp engine unavailable (nettrap already runs under a seccomp supervisor (EBUSY)); using the preload engine only"),
        "{}",
        outer.stderr()
    );
    let inner: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&inner).unwrap()).unwrap();
    assert_eq!(inner["engine"], "preload");
    assert_eq!(count(&inner["unattributed"]), 1);
    // The outer supervisor saw the same call (the inner shim used libc's connect).
    assert_eq!(outer.total_calls(), 1);
    // Asked for explicitly, seccomp fails instead.
    let argv = [
        nettrap(),
        "run",
        "--engine",
        "seccomp",
        "--",
        &edge,
        "exit",
        "9",
    ];
    let outer = run_in("nested-explicit", &repo(), &["--engine", "seccomp"], &argv);
    assert_eq!(outer.code(), 2);
    assert!(
        outer.stderr().contains(
            "nettrap: error: --engine seccomp: nettrap already runs under a seccomp supervisor"
        ),
        "{}",
        outer.stderr()
    );
}

/// A process that connects, then execs a program with another `NETTRAP_TEST` and connects
/// again (same pid): the supervisor must notice the new image and attribute the second call to
/// the new test. From the main thread, from another thread (which takes the main thread's pid
/// in the exec), and without address-space randomisation (the new image's stack and
/// environment land where the old ones were).
#[test]
fn an_exec_in_a_process_the_supervisor_knows_is_attributed_to_the_new_test() {
    let code = r#"
import os, socket, sys, threading
s = socket.socket(); s.connect_ex(("127.0.0.1", 9)); s.close()
mode = sys.argv[1]
if mode != "done":
    env = dict(os.environ, NETTRAP_TEST="second")
    argv = [sys.executable, "-c", sys.argv[2], "done", sys.argv[2]]
    if mode == "thread":
        t = threading.Thread(target=os.execve, args=(sys.executable, argv, env))
        t.start(); t.join()
    else:
        os.execve(sys.executable, argv, env)
"#;
    let mut cases = vec![
        ("main", vec!["python3", "-c", code, "main", code]),
        ("thread", vec!["python3", "-c", code, "thread", code]),
    ];
    if std::path::Path::new("/usr/bin/setarch").exists() {
        cases.push((
            "no-aslr",
            vec!["setarch", "-R", "python3", "-c", code, "main", code],
        ));
    }
    for (name, mut argv) in cases {
        let mut cmd = vec!["env", "NETTRAP_TEST=first"];
        cmd.append(&mut argv);
        let run = run_in(
            &format!("exec-attribution-{name}"),
            &repo(),
            &["--engine", "seccomp", "--runner", "none"],
            &cmd,
        );
        assert_eq!(run.code(), 0, "{name}: {}", run.stderr());
        assert_eq!(run.tests(), ["first", "second"], "{name}: {}", run.report);
        assert_eq!(count(&run.test("first")["calls"]), 1, "{name}");
        assert_eq!(count(&run.test("second")["calls"]), 1, "{name}");
    }
}
