//! The seccomp supervisor's side of names and DNS, and the suite's own servers:
//! - DNS queries the supervisor traps (static programs, glibc's resolver without the shim) are
//!   recorded as one `lookup` call each, named with the question, attributed to their test;
//!   Go's resolver (connect + write: the query is not trapped) as one unnamed `connect` to :53;
//! - `--deny-dns` fails them at once;
//! - connects to servers a process of the run opened are `in-suite` (allowed, not on the to-do
//!   list), or keep their category with `served_by_suite` (a Redis the run started).

mod common;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn fx(name: &str) -> String {
    c_fixture(name).to_str().unwrap().to_string()
}

/// One grouped call: (test, category, address:port, transport, syscall, verdict, count, host,
/// served_by_suite).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    test: String,
    category: String,
    dest: String,
    transport: String,
    syscall: String,
    verdict: String,
    count: u64,
    host: String,
    served: bool,
}

fn row(c: &Value, test: &str) -> Row {
    Row {
        test: test.to_string(),
        category: c["category"].as_str().unwrap().into(),
        dest: format!("{}:{}", c["address"].as_str().unwrap(), c["port"]),
        transport: c["transport"].as_str().unwrap().into(),
        syscall: c["syscall"].as_str().unwrap().into(),
        verdict: c["verdict"].as_str().unwrap().into(),
        count: c["count"].as_u64().unwrap(),
        host: c["host"].as_str().unwrap_or("-").into(),
        served: c["served_by_suite"].as_bool().unwrap_or(false),
    }
}

/// Every grouped call of the report, sorted.
fn rows(run: &Run) -> Vec<Row> {
    let mut v = Vec::new();
    for t in run.report["tests"].as_array().unwrap() {
        for c in t["calls"].as_array().unwrap() {
            v.push(row(c, t["test"].as_str().unwrap()));
        }
    }
    for c in run.report["unattributed"].as_array().unwrap() {
        v.push(row(c, "-"));
    }
    v.sort();
    v
}

#[allow(clippy::too_many_arguments)]
fn r(
    test: &str,
    category: &str,
    dest: &str,
    transport: &str,
    syscall: &str,
    verdict: &str,
    count: u64,
    host: &str,
    served: bool,
) -> Row {
    Row {
        test: test.into(),
        category: category.into(),
        dest: dest.into(),
        transport: transport.into(),
        syscall: syscall.into(),
        verdict: verdict.into(),
        count,
        host: host.into(),
        served,
    }
}

const TEST: &str = "t::dns";

/// `command` run as test [`TEST`] (its starting environment says so: every engine reads it).
fn as_test(command: &[&str]) -> Vec<String> {
    let mut v = vec!["env".to_string(), format!("NETTRAP_TEST={TEST}")];
    v.extend(command.iter().map(|s| s.to_string()));
    v
}

fn nt(name: &str, flags: &[&str], command: &[String]) -> Run {
    let cmd: Vec<&str> = command.iter().map(String::as_str).collect();
    run_in(name, &std::env::temp_dir(), flags, &cmd)
}

/// `dns_query`'s line for one mode: (connect, send, ms).
fn dns_line(run: &Run, mode: &str, name: &str) -> (String, String, u64) {
    let prefix = format!("dns {mode} {name}: ");
    let line = run
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(String::from))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", run.stdout()));
    let parts: Vec<&str> = line.split(", ").collect();
    let field = |p: &str, k: &str| p.strip_prefix(k).unwrap().to_string();
    (
        field(parts[0], "connect "),
        field(parts[1], "send "),
        field(parts[2], "ms ").parse().unwrap(),
    )
}

#[test]
fn queries_of_static_programs_are_one_named_lookup_each() {
    for engine in ["seccomp", "auto"] {
        let run = nt(
            &format!("dns-static-{engine}"),
            &["--engine", engine],
            &as_test(&[
                &fx("dns_query"),
                "sendto",
                "api.stripe.example",
                "sendmmsg",
                "Search.Example",
                "send",
                "unnamed.example",
            ]),
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        assert_eq!(
            dns_line(&run, "sendmmsg", "Search.Example").1,
            "1 errno 0",
            "{engine}: the program sees what it would without nettrap (the first datagram sent)"
        );
        let resolver = "127.0.0.1:53";
        assert_eq!(
            rows(&run),
            vec![
                // connect + send: the query is not trapped (no name).
                r(
                    TEST, "dns", resolver, "udp", "connect", "recorded", 1, "-", false
                ),
                // Two datagrams (A, AAAA) with sendto: one lookup.
                r(
                    TEST,
                    "dns",
                    resolver,
                    "udp",
                    "lookup",
                    "recorded",
                    1,
                    "api.stripe.example",
                    false
                ),
                // connect + sendmmsg (A and AAAA, no address): one lookup, no connect of its own.
                r(
                    TEST,
                    "dns",
                    resolver,
                    "udp",
                    "lookup",
                    "recorded",
                    1,
                    "search.example",
                    false
                ),
            ],
            "{engine}"
        );
        assert_eq!(run.report["categories"]["dns"]["calls"], 3, "{engine}");
    }
}

#[test]
fn glibc_lookups_without_the_shim_are_named_once() {
    // getent is dynamically linked: under `seccomp` there is no shim, and glibc's resolver
    // connects its UDP socket and sends A and AAAA with one sendmmsg.
    let run = nt(
        "dns-getent-seccomp",
        &["--engine", "seccomp"],
        &as_test(&["getent", "ahosts", "api.unknown.example"]),
    );
    assert_eq!(run.code(), 2, "not found: {}", run.stderr());
    assert_eq!(
        rows(&run),
        vec![r(
            TEST,
            "dns",
            "127.0.0.1:53",
            "udp",
            "lookup",
            "recorded",
            1,
            "api.unknown.example",
            false
        )]
    );
    // One question at a time (AAAA, then A, each on a socket of its own, sent with send():
    // not trapped): one unnamed lookup.
    let run = nt(
        "dns-getent-hosts",
        &["--engine", "seccomp"],
        &as_test(&["getent", "hosts", "api.unknown.example"]),
    );
    assert_eq!(
        rows(&run),
        vec![r(
            TEST,
            "dns",
            "127.0.0.1:53",
            "udp",
            "connect",
            "recorded",
            1,
            "-",
            false
        )]
    );
    // A name in /etc/hosts makes no query at all.
    let run = nt(
        "dns-getent-hosts-file",
        &["--engine", "seccomp"],
        &as_test(&["getent", "ahosts", "api.payments.example"]),
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(rows(&run), vec![]);
}

#[test]
fn deny_dns_fails_queries_of_static_programs_at_once() {
    for engine in ["seccomp", "auto"] {
        let run = nt(
            &format!("dns-static-deny-{engine}"),
            &["--engine", engine, "--deny-dns"],
            &as_test(&[
                &fx("dns_query"),
                "sendto",
                "api.stripe.example",
                "sendmmsg",
                "search.example",
                "tcp",
                "tcp.example",
            ]),
        );
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        let (_, send, _) = dns_line(&run, "sendto", "api.stripe.example");
        assert_eq!(send, "-1 errno ECONNREFUSED", "{engine}");
        // A connect to a resolver by a process without the shim: its query would follow with
        // a call the supervisor may not see, so the connect itself fails.
        let (connect, send, _) = dns_line(&run, "sendmmsg", "search.example");
        assert_eq!(
            (connect.as_str(), send.as_str()),
            ("-1 errno ECONNREFUSED", "-")
        );
        let (connect, _, _) = dns_line(&run, "tcp", "tcp.example");
        assert_eq!(connect, "-1 errno ECONNREFUSED");
        let resolver = "127.0.0.1:53";
        // The TCP connect came within 250 ms of the UDP one, from the same process to the same
        // resolver: the same lookup (a TCP retry, or Go's second socket), failed, not counted
        // again.
        assert_eq!(
            rows(&run),
            vec![
                r(
                    TEST, "dns", resolver, "udp", "connect", "denied", 1, "-", false
                ),
                r(
                    TEST,
                    "dns",
                    resolver,
                    "udp",
                    "lookup",
                    "denied",
                    1,
                    "api.stripe.example",
                    false
                ),
            ],
            "{engine}"
        );
        let calls = run.report["tests"][0]["calls"].as_array().unwrap();
        assert!(calls.iter().all(|c| c["rule"] == "--deny-dns"), "{calls:?}");
        let err = run.stderr();
        assert!(
            err.contains(&format!(
                "nettrap: denied lookup of api.stripe.example (dns) in {TEST} (rule: --deny-dns)"
            )),
            "{engine}: {err}"
        );
        assert!(
            err.contains(&format!(
                "nettrap: denied connect to 127.0.0.1:53 (dns) in {TEST} (rule: --deny-dns)"
            )),
            "{engine}: {err}"
        );
    }
}

/// `fixtures/go-dns`, built once with CGO_ENABLED=0: Go's own resolver, a static binary.
fn go_dns() -> String {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-dns");
        let st = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(repo().join("fixtures/go-dns"))
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env_remove("GOFLAGS")
            .status()
            .expect("the Go toolchain is needed (.ci/run installs it)");
        assert!(st.success(), "building fixtures/go-dns failed");
        out
    })
    .to_str()
    .unwrap()
    .to_string()
}

/// `go-dns`'s line for `name`: (what it resolved or its error, ms).
fn go_line(run: &Run, name: &str) -> (String, u64) {
    let prefix = format!("go-dns {name}: ");
    let line = run
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(String::from))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", run.stdout()));
    let (what, ms) = line.rsplit_once(", ms ").unwrap();
    (what.to_string(), ms.parse().unwrap())
}

/// A shell command that starts a resolver on 127.0.0.1:53 that reads queries and never
/// answers (the offline CI's hang), points the resolver configuration at it with a 5-second
/// timeout, then runs `command` as test [`TEST`].
fn with_hanging_resolver(command: &[&str]) -> Vec<String> {
    let conf = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("resolv-hang.conf");
    std::fs::write(
        &conf,
        "nameserver 127.0.0.1\noptions attempts:1 timeout:5\n",
    )
    .unwrap();
    // Binds, then forks: the parent prints the resolver's pid and exits, the child reads.
    let hang = "import os, socket\n\
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                s.bind(('127.0.0.1', 53))\n\
                pid = os.fork()\n\
                if pid:\n    print(pid)\n    raise SystemExit\n\
                fd = os.open('/dev/null', os.O_RDWR)\n\
                for i in (0, 1, 2): os.dup2(fd, i)\n\
                while True: s.recv(512)\n";
    let script = format!(
        "mount --bind '{}' /etc/resolv.conf || exit 97; \
         pid=$(python3 -c \"$HANG\") || exit 98; \
         env NETTRAP_TEST={TEST} \"$@\"; status=$?; kill $pid; exit $status",
        conf.display()
    );
    let mut v = vec![
        "env".to_string(),
        format!("HANG={hang}"),
        "sh".into(),
        "-c".into(),
        script,
        "sh".into(),
    ];
    v.extend(command.iter().map(|s| s.to_string()));
    v
}

#[test]
fn go_lookups_are_seen_unnamed_and_denied_fast() {
    let bin = go_dns();
    for engine in ["seccomp", "auto"] {
        let run = nt(
            &format!("dns-go-{engine}"),
            &["--engine", engine],
            &as_test(&[&bin, "api.stripe.example", "localhost", "search.internal"]),
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        assert!(
            go_line(&run, "api.stripe.example")
                .0
                .contains("connection refused")
        );
        assert_eq!(
            go_line(&run, "search.internal").0,
            "127.0.0.3",
            "/etc/hosts"
        );
        // A and AAAA on two sockets, each connected and written to: one lookup, no name.
        assert_eq!(
            rows(&run),
            vec![r(
                TEST,
                "dns",
                "127.0.0.1:53",
                "udp",
                "connect",
                "recorded",
                1,
                "-",
                false
            )],
            "{engine}"
        );
    }
    // The offline CI: a resolver that never answers. Without --deny-dns the lookup would wait
    // out its 5-second timeout.
    let started = Instant::now();
    let run = nt(
        "dns-go-deny",
        &["--engine", "seccomp", "--deny-dns"],
        &with_hanging_resolver(&[&bin, "api.stripe.example", "search.internal"]),
    );
    let took = started.elapsed();
    assert_eq!(run.code(), 86, "{}", run.stderr());
    let (what, ms) = go_line(&run, "api.stripe.example");
    assert!(what.contains("connection refused"), "{what}");
    assert!(ms < 2000, "denied lookup took {ms} ms");
    assert!(took < Duration::from_secs(5), "the run took {took:?}");
    assert_eq!(go_line(&run, "search.internal").0, "127.0.0.3");
    assert_eq!(
        rows(&run),
        vec![r(
            TEST,
            "dns",
            "127.0.0.1:53",
            "udp",
            "connect",
            "denied",
            1,
            "-",
            false
        )]
    );
    assert!(
        run.stderr().contains(&format!(
            "nettrap: denied connect to 127.0.0.1:53 (dns) in {TEST} (rule: --deny-dns)"
        )),
        "{}",
        run.stderr()
    );
}

fn serve(engine: &str) -> Run {
    run_in(
        &format!("in-suite-{engine}"),
        &repo().join("fixtures/in-suite"),
        &["--engine", engine, "--runner", "none"],
        &["python3", "serve.py"],
    )
}

/// The port `serve.py` printed for `name`.
fn port(run: &Run, name: &str) -> u16 {
    let prefix = format!("serve: {name} ");
    run.stdout()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", run.stdout()))
}

#[test]
fn connects_to_the_suites_own_servers_are_in_suite() {
    let test = "serve.py::test_own_servers";
    for engine in ["auto", "preload", "seccomp"] {
        let run = serve(engine);
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        let (thread, child) = (port(&run, "thread"), port(&run, "child"));
        let rule_of = |p: u16| {
            run.test(test)["calls"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["port"] == p)
                .map(|c| c["rule"].as_str().unwrap().to_string())
        };
        let mut want = vec![
            r(
                test,
                "in-suite",
                &format!("127.0.0.1:{thread}"),
                "tcp",
                "connect",
                "allowed",
                2,
                "-",
                true,
            ),
            r(
                test,
                "in-suite",
                &format!("127.0.0.1:{child}"),
                "tcp",
                "connect",
                "allowed",
                1,
                "-",
                true,
            ),
            // Nobody of the run listens there: not the suite's.
            r(
                test,
                "other",
                "127.0.0.1:9",
                "tcp",
                "connect",
                "recorded",
                1,
                "-",
                false,
            ),
            // A known service keeps its category, even when the suite serves it.
            r(
                test,
                "redis",
                "127.0.0.1:6379",
                "tcp",
                "connect",
                "recorded",
                1,
                "-",
                true,
            ),
        ];
        want.sort();
        assert_eq!(rows(&run), want, "{engine}");
        assert_eq!(rule_of(thread).as_deref(), Some("allow in-suite (default)"));
        let cats = &run.report["categories"];
        let mut ports = vec![thread, child];
        ports.sort();
        assert_eq!(
            cats["in-suite"]["ports_seen"],
            serde_json::json!(ports),
            "{engine}"
        );
        assert_eq!(cats["in-suite"]["allowed"], 3);
        assert_eq!(cats["in-suite"]["tests"], 1);
        assert_eq!(
            cats["other"]["ports_seen"],
            serde_json::json!([9]),
            "{engine}"
        );
        // Not on the to-do list; the rest is.
        for p in [thread, child] {
            assert!(
                !run.todo.contains(&format!(":{p}")),
                "{engine}: {}",
                run.todo
            );
        }
        assert!(run.todo.contains("127.0.0.1:9"), "{}", run.todo);
        assert!(run.todo.contains("127.0.0.1:6379"), "{}", run.todo);
        assert_eq!(run.report["tests_with_calls"], 1);
    }
}

#[test]
fn servers_of_static_programs_are_seen_by_the_supervisor() {
    for (engine, category) in [
        ("seccomp", "in-suite"),
        ("auto", "in-suite"),
        ("preload", "other"),
    ] {
        let run = nt(
            &format!("in-suite-static-{engine}"),
            &["--engine", engine],
            &as_test(&[&fx("static_listen"), "0"]),
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        let line = run.stdout();
        let port: u16 = line
            .strip_prefix("listen: port ")
            .and_then(|l| l.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(line.ends_with("listen 0 connect 0 errno 0\n"), "{line}");
        let rows = rows(&run);
        if engine == "preload" {
            // The documented gap: the shim is not in static programs; nothing sees either call.
            assert_eq!(rows, vec![], "{engine}");
            continue;
        }
        assert_eq!(
            rows,
            vec![r(
                TEST,
                category,
                &format!("127.0.0.1:{port}"),
                "tcp",
                "connect",
                "allowed",
                1,
                "-",
                true
            )],
            "{engine}"
        );
    }
}
