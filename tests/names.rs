//! Host names: the shim's resolver interposition (names on calls, lookups as calls, fail-fast
//! lookups, `--deny-dns`) and rules by name, with real programs (a C fixture calling glibc's
//! resolver entry points, Python's `socket.create_connection`) in the isolated network, where
//! `/etc/hosts` maps [`HOSTS`] to loopback addresses and nothing answers DNS on 127.0.0.1:53 (a
//! lookup of any other name fails quickly with `EAI_AGAIN`), unless a test starts a resolver
//! that never answers.

mod common;
use common::*;
use serde_json::Value;
use std::process::Stdio;

fn resolve() -> String {
    c_fixture("resolve").to_str().unwrap().to_string()
}

/// The fixture's output lines that start with `what` (`lookup`, `connect`), split into words.
fn lines(out: &str, what: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| l.starts_with(what))
        .map(|l| l.split(' ').map(String::from).collect())
        .collect()
}

/// The `key=value` field of a fixture line.
fn field<'a>(line: &'a [String], key: &str) -> &'a str {
    line.iter()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// The fixture's `lookup` line for `mode name`.
fn lookup_line(out: &str, mode: &str, name: &str) -> Vec<String> {
    lines(out, "lookup")
        .into_iter()
        .find(|l| l[1] == mode && l[2] == name)
        .unwrap_or_else(|| panic!("no lookup {mode} {name} in:\n{out}"))
}

/// The fixture's `connect` line for `addr port`.
fn connect_errno(out: &str, addr: &str, port: u16) -> i32 {
    let all = lines(out, "connect");
    let l = all
        .iter()
        .find(|l| l[1] == addr && l[2] == port.to_string())
        .unwrap_or_else(|| panic!("no connect to {addr} {port} in:\n{out}"));
    field(l, "errno").parse().unwrap()
}

/// Every call in the report, with the test it is attributed to.
fn calls(run: &Run) -> Vec<(Option<String>, Value)> {
    let mut all = Vec::new();
    for t in run.report["tests"].as_array().unwrap() {
        for c in t["calls"].as_array().unwrap() {
            all.push((Some(t["test"].as_str().unwrap().to_string()), c.clone()));
        }
    }
    for c in run.report["unattributed"].as_array().unwrap() {
        all.push((None, c.clone()));
    }
    all
}

/// The report's calls of one syscall kind (`connect`, `lookup`).
fn of(run: &Run, syscall: &str) -> Vec<(Option<String>, Value)> {
    calls(run)
        .into_iter()
        .filter(|(_, c)| c["syscall"] == syscall)
        .collect()
}

/// (address, port, host or "-", verdict, count) of the report's `connect` calls, sorted.
fn connects(run: &Run) -> Vec<(String, u64, String, String, u64)> {
    let mut v: Vec<_> = of(run, "connect")
        .iter()
        .map(|(_, c)| {
            (
                c["address"].as_str().unwrap().to_string(),
                c["port"].as_u64().unwrap(),
                c["host"].as_str().unwrap_or("-").to_string(),
                c["verdict"].as_str().unwrap().to_string(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn row(
    addr: &str,
    port: u64,
    host: &str,
    verdict: &str,
    count: u64,
) -> (String, u64, String, String, u64) {
    (addr.into(), port, host.into(), verdict.into(), count)
}

/// The command, with `NETTRAP_TEST=test` in its environment (nettrap clears an inherited one).
fn in_test<'a>(test: &'a str, command: &[&'a str]) -> Vec<String> {
    let mut v = vec!["env".to_string(), format!("NETTRAP_TEST={test}")];
    v.extend(command.iter().map(|s| s.to_string()));
    v
}

fn nt(name: &str, flags: &[&str], command: &[String]) -> Run {
    let cmd: Vec<&str> = command.iter().map(String::as_str).collect();
    run_in(name, &scratch(&format!("{name}-cwd")), flags, &cmd)
}

#[test]
fn calls_carry_the_name_the_program_resolved() {
    let r = resolve();
    for engine in ["auto", "preload"] {
        let command = in_test(
            "t/names",
            &[
                &r,
                "gai",
                "api.payments.example",
                "9",
                "ghbn",
                "search.internal",
                "9",
                "ghbn_r",
                "cache.internal",
                "9",
                "gai6",
                "api.v6.example",
                "9",
                // Never looked up: no name.
                "ip",
                "127.0.0.5",
                "9",
            ],
        );
        let run = nt(&format!("names-{engine}"), &["--engine", engine], &command);
        assert_eq!(run.code(), 0, "{}", run.stderr());
        let out = run.stdout();
        assert_eq!(connect_errno(&out, "127.0.0.2", 9), libc::ECONNREFUSED);
        assert_eq!(
            connects(&run),
            vec![
                row("127.0.0.2", 9, "api.payments.example", "recorded", 1),
                row("127.0.0.3", 9, "search.internal", "recorded", 1),
                row("127.0.0.4", 9, "cache.internal", "recorded", 1),
                row("127.0.0.5", 9, "-", "recorded", 1),
                row("::1", 9, "api.v6.example", "recorded", 1),
            ],
            "{engine}"
        );
        assert!(
            calls(&run)
                .iter()
                .all(|(t, _)| t.as_deref() == Some("t/names"))
        );
        // Names from /etc/hosts are not lookups that leave the machine.
        assert_eq!(of(&run, "lookup"), vec![], "{engine}");
    }
}

/// The shim maps its table of names when a process first looks a name up (shim/src/tables.rs):
/// a fork child inherits its parent's (`-f`: the parent looked up, the child connects), and a
/// child whose parent never looked anything up maps its own (`-F`: lookup and connect in the
/// child).
#[test]
fn fork_children_carry_the_names_their_parent_or_they_resolved() {
    let r = resolve();
    for (flag, engine) in [("-f", "preload"), ("-F", "preload"), ("-f", "auto")] {
        let command = in_test(
            "t/fork",
            &[
                &r,
                flag,
                "gai",
                "api.payments.example",
                "9",
                "ghbn",
                "search.internal",
                "9",
                "ip",
                "127.0.0.5",
                "9",
            ],
        );
        let run = nt(
            &format!("names-fork{flag}-{engine}"),
            &["--engine", engine],
            &command,
        );
        assert_eq!(run.code(), 0, "{}", run.stderr());
        assert_eq!(
            connect_errno(&run.stdout(), "127.0.0.2", 9),
            libc::ECONNREFUSED
        );
        assert_eq!(
            connects(&run),
            vec![
                row("127.0.0.2", 9, "api.payments.example", "recorded", 1),
                row("127.0.0.3", 9, "search.internal", "recorded", 1),
                row("127.0.0.5", 9, "-", "recorded", 1),
            ],
            "{flag} {engine}"
        );
    }
}

#[test]
fn python_connections_carry_the_name() {
    let script = "import socket\n\
                  try:\n    socket.create_connection(('api.payments.example', 9))\n\
                  except ConnectionRefusedError:\n    print('refused')\n";
    let command = in_test("py::test_pay", &["python3", "-c", script]);
    let run = nt("names-python", &[], &command);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.stdout().trim(), "refused");
    let c = of(&run, "connect");
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].0.as_deref(), Some("py::test_pay"));
    assert_eq!(c[0].1["host"], "api.payments.example");
    assert_eq!(c[0].1["address"], "127.0.0.2");
    assert_eq!(c[0].1["port"], 9);
}

#[test]
fn rules_by_name_decide_by_the_resolved_name() {
    let r = resolve();
    // Two processes: one looks the names up, the other connects to the same address by number.
    let script =
        format!("{r} gai api.payments.example 9 gai search.internal 9; {r} ip 127.0.0.2 9");
    let command = in_test("t/deny", &["sh", "-c", &script]);
    let run = nt(
        "names-deny",
        &["--deny", "api.*.example", "--errno", "EACCES"],
        &command,
    );
    assert_eq!(run.code(), 86, "{}", run.stderr());
    let out = run.stdout();
    let errnos: Vec<i32> = lines(&out, "connect")
        .iter()
        .map(|l| field(l, "errno").parse().unwrap())
        .collect();
    // Denied by name; by number (name unknown) the rule does not match.
    assert_eq!(
        errnos,
        vec![libc::EACCES, libc::ECONNREFUSED, libc::ECONNREFUSED],
        "{out}"
    );
    assert_eq!(
        connects(&run),
        vec![
            row("127.0.0.2", 9, "-", "recorded", 1),
            row("127.0.0.2", 9, "api.payments.example", "denied", 1),
            row("127.0.0.3", 9, "search.internal", "recorded", 1),
        ]
    );
    let denied = of(&run, "connect")
        .into_iter()
        .find(|(_, c)| c["verdict"] == "denied")
        .unwrap();
    assert_eq!(denied.1["rule"], "deny api.*.example");
    assert!(
        run.stderr().contains(
            "nettrap: denied connect to api.payments.example:9 (127.0.0.2, other) in t/deny \
             (rule: deny api.*.example)\n"
        ),
        "{}",
        run.stderr()
    );

    // Deny everything but one name.
    let command = in_test(
        "t/allow",
        &[
            &r,
            "gai",
            "search.internal",
            "9",
            "gai",
            "api.payments.example",
            "9",
            "gai4",
            "tracker.example",
            "9",
        ],
    );
    let run = nt(
        "names-allow",
        &[
            "--deny",
            "0-65535",
            "--errno",
            "EACCES",
            "--allow",
            "SEARCH.internal.",
        ],
        &command,
    );
    assert_eq!(run.code(), 86, "{}", run.stderr());
    let out = run.stdout();
    assert_eq!(connect_errno(&out, "127.0.0.3", 9), libc::ECONNREFUSED);
    assert_eq!(connect_errno(&out, "127.0.0.2", 9), libc::EACCES);
    // A name nothing can be reached by is not looked up at all: EAI_NONAME at once, where the
    // resolver's answer would be EAI_AGAIN (nothing listens on 127.0.0.1:53).
    let l = lookup_line(&out, "gai4", "tracker.example");
    assert_eq!(field(&l, "rc"), libc::EAI_NONAME.to_string());
    assert_eq!(
        connects(&run),
        vec![
            row("127.0.0.2", 9, "api.payments.example", "denied", 1),
            row("127.0.0.3", 9, "search.internal", "allowed", 1),
        ]
    );
    let lookups = of(&run, "lookup");
    assert_eq!(lookups.len(), 1, "{lookups:?}");
    assert_eq!(lookups[0].1["host"], "tracker.example");
    assert_eq!(lookups[0].1["verdict"], "denied");
    assert_eq!(lookups[0].1["rule"], "deny 0-65535");
}

#[test]
fn categories_by_name() {
    let dir = scratch("names-category-cwd");
    std::fs::write(
        dir.join("nettrap.toml"),
        "[categories.payments]\n\
         hosts = [\"api.*.example\"]\n\
         \n\
         [[rules]]\n\
         category = \"payments\"\n\
         action = \"deny\"\n\
         errno = \"EACCES\"\n",
    )
    .unwrap();
    let r = resolve();
    let script =
        format!("{r} gai api.payments.example 9 gai search.internal 9; {r} ip 127.0.0.2 9");
    let run = run_in("names-category", &dir, &[], &["sh", "-c", &script]);
    assert_eq!(run.code(), 86, "{}", run.stderr());
    let out = run.stdout();
    let errnos: Vec<i32> = lines(&out, "connect")
        .iter()
        .map(|l| field(l, "errno").parse().unwrap())
        .collect();
    assert_eq!(
        errnos,
        vec![libc::EACCES, libc::ECONNREFUSED, libc::ECONNREFUSED],
        "{out}"
    );
    let mut cats: Vec<(String, String, String)> = of(&run, "connect")
        .iter()
        .map(|(_, c)| {
            (
                c["category"].as_str().unwrap().to_string(),
                c["host"].as_str().unwrap_or("-").to_string(),
                c["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    cats.sort();
    assert_eq!(
        cats,
        vec![
            ("other".into(), "-".into(), "recorded".into()),
            ("other".into(), "search.internal".into(), "recorded".into()),
            (
                "payments".into(),
                "api.payments.example".into(),
                "denied".into()
            ),
        ]
    );
}

#[test]
fn lookups_that_leave_the_machine_are_calls_one_per_lookup() {
    let r = resolve();
    for engine in ["preload", "auto"] {
        let command = in_test(
            "t/lookups",
            &[
                &r,
                "gai",
                "unknown.example",
                "0",
                "gai",
                "unknown.example",
                "0",
                "ghbn",
                "other.example",
                "0",
                "ghbn2_r",
                "v6.example",
                "0",
                // Not lookups that leave the machine.
                "gai",
                "api.payments.example",
                "0",
                "gai",
                "127.0.0.1",
                "0",
                "gai",
                "localhost",
                "0",
                "ghbn",
                "search.internal",
                "0",
            ],
        );
        let run = nt(
            &format!("names-lookups-{engine}"),
            &["--engine", engine],
            &command,
        );
        assert_eq!(run.code(), 0, "{}", run.stderr());
        let out = run.stdout();
        // Looked up for real (nothing answers: EAI_AGAIN, TRY_AGAIN).
        assert_eq!(
            field(&lookup_line(&out, "gai", "unknown.example"), "rc"),
            libc::EAI_AGAIN.to_string()
        );
        assert_eq!(
            field(&lookup_line(&out, "ghbn", "other.example"), "herr"),
            "2"
        );
        let mut got: Vec<(String, String, u64, String, String)> = of(&run, "lookup")
            .iter()
            .map(|(t, c)| {
                assert_eq!(c["category"], "dns", "{c}");
                assert_eq!(c["address"], "127.0.0.1", "{c}");
                assert_eq!(c["port"], 53, "{c}");
                assert_eq!(c["verdict"], "recorded", "{c}");
                (
                    t.clone().unwrap_or_default(),
                    c["host"].as_str().unwrap().to_string(),
                    c["count"].as_u64().unwrap(),
                    serde_json::to_string(&c["outcomes"]).unwrap(),
                    c["process"]["exe"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        got.sort();
        let exe = std::fs::canonicalize(&r).unwrap();
        let exe = exe.to_str().unwrap();
        assert_eq!(
            got,
            vec![
                (
                    "t/lookups".into(),
                    "other.example".into(),
                    1,
                    r#"{"EAI_AGAIN":1}"#.into(),
                    exe.into()
                ),
                (
                    "t/lookups".into(),
                    "unknown.example".into(),
                    2,
                    r#"{"EAI_AGAIN":2}"#.into(),
                    exe.into()
                ),
                (
                    "t/lookups".into(),
                    "v6.example".into(),
                    1,
                    r#"{"EAI_AGAIN":1}"#.into(),
                    exe.into()
                ),
            ],
            "{engine}"
        );
    }
}

/// A name denied on every port is not looked up; on one port, it is.
#[test]
fn a_name_denied_on_every_port_fails_at_once() {
    let r = resolve();
    for (flag, rc, verdict) in [
        ("*.example", libc::EAI_NONAME, "denied"),
        ("*.example:443", libc::EAI_AGAIN, "recorded"),
    ] {
        let command = in_test("t/ff", &[&r, "gai", "tracker.example", "9"]);
        let run = nt("names-failfast", &["--deny", flag], &command);
        let l = lookup_line(&run.stdout(), "gai", "tracker.example");
        assert_eq!(field(&l, "rc"), rc.to_string(), "{flag}");
        let lookups = of(&run, "lookup");
        assert_eq!(lookups.len(), 1, "{lookups:?}");
        assert_eq!(lookups[0].1["verdict"], verdict, "{flag}");
        assert_eq!(lookups[0].1["host"], "tracker.example");
        if verdict == "denied" {
            assert_eq!(lookups[0].1["rule"], format!("deny {flag}"));
            assert!(
                run.stderr().contains(&format!(
                    "nettrap: denied lookup of tracker.example (dns) in t/ff (rule: deny {flag})\n"
                )),
                "{}",
                run.stderr()
            );
        }
    }
}

/// `nettrap run` in the isolated network with a resolver on 127.0.0.1:53 that never answers
/// and a resolver configuration that waits 3 s (twice) for it: the offline CI job.
fn run_with_hanging_resolver(name: &str, flags: &[&str], command: &[String]) -> (Run, f64) {
    run_with_silent_resolver(name, "attempts:2 timeout:3", flags, command)
}

/// As [`run_with_hanging_resolver`], with the resolver configuration's `options`.
fn run_with_silent_resolver(
    name: &str,
    options: &str,
    flags: &[&str],
    command: &[String],
) -> (Run, f64) {
    let dir = scratch(name);
    let conf = dir.join("resolv.conf");
    std::fs::write(&conf, format!("nameserver 127.0.0.1\noptions {options}\n")).unwrap();
    let report = dir.join("report.json");
    let script = format!(
        "mount --bind '{}' /etc/resolv.conf || exit 97; \
         P=$('{}' hang 60) || exit 98; \
         \"$@\"; rc=$?; kill $P; exit $rc",
        conf.display(),
        resolve()
    );
    let report_s = report.to_str().unwrap().to_string();
    let mut argv = vec![
        "sh",
        "-c",
        &script,
        "sh",
        nettrap(),
        "run",
        "--report",
        &report_s,
    ];
    argv.extend_from_slice(flags);
    argv.push("--");
    argv.extend(command.iter().map(String::as_str));
    let start = std::time::Instant::now();
    let out = isolated(&argv)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let run = Run {
        out,
        report: serde_json::from_str(&text).unwrap(),
        todo: std::fs::read_to_string(dir.join("nettrap-todo.md")).unwrap_or_default(),
        dir,
    };
    (run, secs)
}

#[test]
fn time_blocked_in_lookups_and_connects_is_measured_and_summed() {
    // A lookup the silent resolver keeps for its 1-second timeout, then a connect to a
    // refused loopback port (blocked a few microseconds: measured, so more than 0).
    let r = resolve();
    let command = in_test(
        "t/slow",
        &[&r, "gai4", "nope.example", "0", "ip", "127.0.0.2", "9"],
    );
    for engine in ["preload", "auto", "seccomp"] {
        let (run, secs) = run_with_silent_resolver(
            &format!("names-blocked-{engine}"),
            "attempts:1 timeout:1",
            &["--engine", engine],
            &command,
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        let ms: u64 = field(&lookup_line(&run.stdout(), "gai4", "nope.example"), "ms")
            .parse()
            .unwrap();
        assert!(ms >= 900, "{engine}: the lookup took {ms} ms ({secs} s)");
        let blocked = |syscall: &str| -> u64 {
            of(&run, syscall)
                .iter()
                .map(|(_, c)| c["blocked_ns"].as_u64().unwrap_or(0))
                .sum()
        };
        let test = run.test("t/slow");
        let test_blocked = test["blocked_s"].as_f64().unwrap();
        let dns = run.report["categories"]["dns"]["blocked_s"]
            .as_f64()
            .unwrap();
        if engine == "seccomp" {
            // The supervisor lets calls continue in the kernel and does not see them return.
            assert_eq!((blocked("lookup"), blocked("connect")), (0, 0), "{engine}");
            assert_eq!(test_blocked, 0.0);
            assert!(!run.todo.contains("waiting on"), "{}", run.todo);
            continue;
        }
        // Lower bounds only: the machine may be slow, never faster than the timeout.
        assert!(blocked("lookup") >= 900_000_000, "{engine}: {}", run.report);
        assert!(blocked("connect") > 0, "{engine}");
        assert!(test_blocked >= 0.9, "{engine}: {test}");
        assert!(dns >= 0.9, "{engine}: {}", run.report["categories"]);
        let dest = run.report["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["destination"] == "dns lookup of nope.example")
            .unwrap_or_else(|| panic!("{}", run.report["destinations"]));
        assert!(dest["blocked_s"].as_f64().unwrap() >= 0.9);
        assert!(
            run.report["payoff"]["blocked_s"].as_f64().unwrap() >= 0.9,
            "{}",
            run.report["payoff"]
        );
        let head = run.todo.lines().find(|l| l.contains("Mocking these"));
        assert!(
            head.is_some_and(|l| l.contains("waiting on dns")),
            "{engine}: {}",
            run.todo
        );
    }
}

#[test]
fn deny_dns_fails_lookups_at_once_and_hosts_names_still_resolve() {
    let r = resolve();
    let command = in_test(
        "t/offline",
        &[
            &r,
            "gai",
            "nope.example",
            "9",
            "ghbn",
            "nope.example",
            "9",
            "ghbn_r",
            "nope.example",
            "9",
            "gai",
            "api.payments.example",
            "9",
            "gai",
            "localhost",
            "0",
        ],
    );
    let (run, secs) = run_with_hanging_resolver("names-deny-dns", &["--deny-dns"], &command);
    assert_eq!(run.code(), 86, "{}", run.stderr());
    let out = run.stdout();
    // The resolver would keep each lookup 6 s; denied, they fail at once.
    for mode in ["gai", "ghbn", "ghbn_r"] {
        let l = lookup_line(&out, mode, "nope.example");
        let ms: u64 = field(&l, "ms").parse().unwrap();
        assert!(ms < 2000, "{mode} took {ms} ms");
    }
    assert!(secs < 20.0, "the run took {secs} s");
    assert_eq!(
        field(&lookup_line(&out, "gai", "nope.example"), "rc"),
        libc::EAI_NONAME.to_string()
    );
    let ghbn = lookup_line(&out, "ghbn", "nope.example");
    assert_eq!((field(&ghbn, "rc"), field(&ghbn, "herr")), ("-1", "1")); // HOST_NOT_FOUND
    let ghbn_r = lookup_line(&out, "ghbn_r", "nope.example");
    assert_eq!((field(&ghbn_r, "rc"), field(&ghbn_r, "herr")), ("0", "1"));
    // Names in /etc/hosts resolve as ever.
    assert_eq!(
        field(&lookup_line(&out, "gai", "api.payments.example"), "addr"),
        "127.0.0.2"
    );
    assert_eq!(connect_errno(&out, "127.0.0.2", 9), libc::ECONNREFUSED);
    assert_eq!(field(&lookup_line(&out, "gai", "localhost"), "rc"), "0");
    let lookups = of(&run, "lookup");
    assert_eq!(lookups.len(), 1, "{lookups:?}");
    let (test, c) = &lookups[0];
    assert_eq!(test.as_deref(), Some("t/offline"));
    assert_eq!(c["host"], "nope.example");
    assert_eq!(c["category"], "dns");
    assert_eq!(c["verdict"], "denied");
    assert_eq!(c["count"], 3);
    assert_eq!(c["rule"], "--deny-dns");
    assert_eq!(c["outcomes"]["EAI_NONAME"], 3);
    assert_eq!(
        run.stderr()
            .matches(
                "nettrap: denied lookup of nope.example (dns) in t/offline (rule: --deny-dns)\n"
            )
            .count(),
        3,
        "{}",
        run.stderr()
    );
}

#[test]
fn deny_dns_errno_and_allowed_names() {
    let r = resolve();
    let command = in_test(
        "t/eai",
        &[
            &r,
            "gai",
            "nope.example",
            "0",
            "ghbn",
            "nope.example",
            "0",
            "ghbn_r",
            "nope.example",
            "0",
            // Allowed: looked up for real (nothing answers: EAI_AGAIN).
            "gai",
            "allowed.example",
            "0",
        ],
    );
    let run = nt(
        "names-dns-errno",
        &[
            "--deny-dns",
            "--dns-errno",
            "EAI_AGAIN",
            "--allow",
            "allowed.example:443",
        ],
        &command,
    );
    assert_eq!(run.code(), 86, "{}", run.stderr());
    let out = run.stdout();
    assert_eq!(
        field(&lookup_line(&out, "gai", "nope.example"), "rc"),
        libc::EAI_AGAIN.to_string()
    );
    let ghbn = lookup_line(&out, "ghbn", "nope.example");
    assert_eq!(
        (field(&ghbn, "herr"), field(&ghbn, "errno")),
        ("2", &*libc::EAGAIN.to_string())
    ); // TRY_AGAIN
    let ghbn_r = lookup_line(&out, "ghbn_r", "nope.example");
    assert_eq!(
        (field(&ghbn_r, "rc"), field(&ghbn_r, "herr")),
        (&*libc::EAGAIN.to_string(), "2")
    );
    let mut got: Vec<(String, String, String)> = of(&run, "lookup")
        .iter()
        .map(|(_, c)| {
            (
                c["host"].as_str().unwrap().to_string(),
                c["verdict"].as_str().unwrap().to_string(),
                c["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "allowed.example".into(),
                "allowed".into(),
                "allow allowed.example:443".into()
            ),
            ("nope.example".into(), "denied".into(), "--deny-dns".into()),
        ]
    );
}

#[test]
fn record_mode_changes_nothing_the_program_sees() {
    let r = resolve();
    let mut args: Vec<String> = vec![r.clone(), "-c".into()];
    for mode in [
        "gai", "gai4", "gai6", "gai6m", "ghbn", "ghbn2", "ghbn_r", "ghbn2_r",
    ] {
        for name in [
            "api.payments.example",
            "api.v6.example",
            "unknown.example",
            "localhost",
            "127.0.0.2",
            "::1",
            "API.Payments.Example",
            "api.payments.example.",
        ] {
            args.extend([mode.to_string(), name.to_string(), "9".to_string()]);
        }
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let plain = isolated(&argv).stdin(Stdio::null()).output().unwrap();
    assert!(plain.status.success());
    let plain = String::from_utf8_lossy(&plain.stdout).into_owned();
    assert!(plain.contains("rc=-3"), "{plain}"); // some lookups fail, as they should
    for engine in ["auto", "preload"] {
        let run = nt(
            &format!("names-same-{engine}"),
            &["--engine", engine],
            &args,
        );
        assert_eq!(run.code(), 0, "{}", run.stderr());
        assert_eq!(run.stdout(), plain, "{engine}");
        assert!(!of(&run, "lookup").is_empty());
    }
}

#[test]
fn a_name_rule_holds_while_threads_resolve_the_same_name() {
    // Every lookup rewrote the address's entry in the shim's table; a connect on another thread
    // that found it half-written went without a name, and past the name rule.
    let race = c_fixture("resolve_race").to_str().unwrap().to_string();
    for engine in ["preload", "auto"] {
        let run = nt(
            &format!("name-race-{engine}"),
            &[
                "--engine",
                engine,
                "--errno",
                "EACCES",
                "--deny",
                "api.payments.example:443",
            ],
            &[
                race.clone(),
                "500".into(),
                "4".into(),
                "api.payments.example".into(),
                "443".into(),
            ],
        );
        assert!(
            run.stdout().contains("denied=2000 other=0"),
            "{engine}: {}",
            run.stdout()
        );
        assert_eq!(run.code(), 86, "{engine}");
    }
}

#[test]
fn getaddrinfo_sorting_its_results_is_not_a_call() {
    // glibc sorts several results by connecting a UDP socket to each (RFC 6724; nothing is
    // sent). Under auto those connects reached the supervisor as calls, and a deny rule on the
    // port failed a run that never connected.
    let script = "import socket; print(len(socket.getaddrinfo('localhost', 80)) > 1)";
    for engine in ["preload", "auto"] {
        let run = nt(
            &format!("gai-sort-{engine}"),
            &["--engine", engine, "--deny", "external-api"],
            &["python3".into(), "-c".into(), script.into()],
        );
        assert!(run.stdout().contains("True"), "{engine}: {}", run.stdout());
        assert_eq!(run.total_calls(), 0, "{engine}: {}", run.stderr());
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
    }
}

#[test]
fn names_glibc_sends_to_the_resolver_are_lookups_too() {
    // Names that look local or numeric but that glibc asks DNS for (`x.localhost`,
    // `localhost.`, `999.1.1.1`) once passed the shim as local: under preload they waited out
    // the resolver and were neither recorded nor denied.
    let r = resolve();
    let mut args = vec![r.as_str()];
    for name in ["x.localhost", "localhost.", "999.1.1.1"] {
        args.extend_from_slice(&["gai", name, "9"]);
    }
    let command = in_test("t/odd", &args);
    let (run, secs) = run_with_hanging_resolver(
        "names-odd-local",
        &["--engine", "preload", "--deny-dns"],
        &command,
    );
    assert_eq!(run.code(), 86, "{}", run.stderr());
    assert!(secs < 5.0, "the lookups waited for the resolver: {secs} s");
    let mut names: Vec<String> = of(&run, "lookup")
        .iter()
        .map(|(_, c)| c["host"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["999.1.1.1", "localhost.", "x.localhost"]);
}
