//! Real C programs under `nettrap run`: every call of every process counted exactly once under
//! contention and in hard exits; record mode changes nothing the program sees; exit statuses,
//! signals and stdin pass through.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on inside the test's namespace.
const CLOSED: &str = "9";

fn fixture(name: &str) -> String {
    c_fixture(name).to_str().unwrap().to_string()
}

#[test]
fn stress_32_processes_8_threads_200_connects_each_counted_exactly_once() {
    let run = run_in(
        "stress",
        &repo(),
        &[],
        &[&fixture("stress"), "32", "8", "200", CLOSED],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.total_calls(), 32 * 8 * 200);
    let tests = run.report["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 32);
    for t in tests {
        let calls = count(&t["calls"]);
        assert_eq!(calls, 8 * 200, "{}", t["test"]);
        assert!(t["test"].as_str().unwrap().starts_with("stress/"));
        assert_eq!(t["calls"][0]["outcomes"]["ECONNREFUSED"], 1600);
    }
    assert_eq!(
        (
            run.report["lost"]["dropped"].as_u64(),
            run.report["lost"]["torn"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert!(run.report["unattributed"].as_array().unwrap().is_empty());
}

#[test]
fn hard_exits_closed_descriptors_and_spawns_lose_nothing() {
    for mode in [
        "exit",
        "kill",
        "closefds",
        "dup2",
        "posix_spawn",
        "vfork",
        "daemon",
        "thread_exit",
    ] {
        let run = run_in(
            &format!("edge-{mode}"),
            &repo(),
            &[],
            &[&fixture("edge"), mode, CLOSED],
        );
        let want = if mode == "kill" { 128 + 9 } else { 0 };
        assert_eq!(run.code(), want, "{mode}: {}", run.stderr());
        assert_eq!(run.total_calls(), 1, "{mode}: {}", run.report);
        let c = &run.report["unattributed"][0];
        assert_eq!(
            (c["category"].as_str(), c["port"].as_u64()),
            (Some("other"), Some(9)),
            "{mode}"
        );
        assert!(
            c["process"]["exe"].as_str().unwrap().ends_with("/edge"),
            "{mode}: {c}"
        );
        assert_eq!(run.report["lost"]["torn"], 0, "{mode}");
    }
}

#[test]
fn denied_calls_in_hard_exits_are_counted_too() {
    let run = run_in(
        "edge-deny",
        &repo(),
        &["--deny", CLOSED],
        &[&fixture("edge"), "closefds", CLOSED],
    );
    assert_eq!(run.code(), 86);
    assert_eq!(
        run.calls(None),
        vec![t("other", "127.0.0.1", 9, "tcp", "-", "denied", 1)]
    );
}

#[test]
fn record_mode_changes_nothing_the_program_sees() {
    let plain = isolated(&[&fixture("errno_probe"), CLOSED])
        .output()
        .unwrap();
    assert!(plain.status.success());
    let run = run_in("errno", &repo(), &[], &[&fixture("errno_probe"), CLOSED]);
    assert_eq!(run.code(), 0);
    assert_eq!(
        run.stdout(),
        String::from_utf8_lossy(&plain.stdout),
        "record mode must not change return values or errno"
    );
    // Network destinations are recorded; bad fds, non-sockets, AF_UNIX and AF_UNSPEC are not.
    let calls = run.calls(None);
    let ports: Vec<u64> = calls.iter().map(|c| c.2).collect();
    assert!(calls.iter().any(|c| c.1 == "::1" && c.2 == 9), "{calls:?}");
    assert!(
        calls.iter().any(|c| c.0 == "dns" && c.3 == "udp"),
        "{calls:?}"
    );
    assert!(
        ports.iter().all(|&p| p == 9 || p == 53 || p > 1024),
        "{calls:?}"
    );
}

#[test]
fn exit_status_is_the_commands_own() {
    let run = run_in("exit3", &repo(), &[], &["sh", "-c", "exit 3"]);
    assert_eq!(
        (run.code(), run.report["command_exit_code"].as_i64()),
        (3, Some(3))
    );
    let run = run_in("sigterm-self", &repo(), &[], &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(run.code(), 128 + 15);
    assert!(
        run.stderr().contains("nettrap: no external calls"),
        "{}",
        run.stderr()
    );
}

#[test]
fn stdin_and_stdout_pass_through() {
    let dir = scratch("stdin");
    let mut child = Command::new(nettrap())
        .args(["run", "--quiet", "--report"])
        .arg(dir.join("r.json"))
        .args(["--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
    assert!(out.status.success());
}

fn wait_for_file(path: &std::path::Path) -> String {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never appeared", path.display());
}

fn alive(pid: &str) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn signals_reach_the_command_and_the_report_is_still_written() {
    let dir = scratch("signals");
    let script = format!(
        "trap 'echo got-term > {0}/term; exit 7' TERM; echo $$ > {0}/pid; while :; do sleep 0.05; done",
        dir.display()
    );
    let child = Command::new(nettrap())
        .args(["run", "--report"])
        .arg(dir.join("r.json"))
        .args(["--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&dir.join("pid"));
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("term")).unwrap(),
        "got-term\n"
    );
    assert_eq!(out.status.code(), Some(7));
    assert!(dir.join("r.json").exists());
}

#[test]
fn killing_nettrap_does_not_leave_the_command_running() {
    let dir = scratch("orphan");
    let script = format!("echo $$ > {}/pid; exec sleep 30", dir.display());
    let mut child = Command::new(nettrap())
        // A SIGKILLed nettrap cannot remove its run directory: made here, not in /tmp.
        .env("TMPDIR", &dir)
        .args(["run", "--quiet", "--report"])
        .arg(dir.join("r.json"))
        .args(["--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let pid = wait_for_file(&dir.join("pid"));
    assert!(alive(&pid));
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    while alive(&pid) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(&pid), "the command outlived nettrap");
}

/// (port, pid) of each call, sorted, and the (parent, child) pids the fixture printed.
type PidReuse = (Vec<(u64, u64)>, (u64, u64));

/// The calls of `fixtures/c/pid_reuse MODE` and its pids; None when it could not make its pid
/// namespace.
fn pid_reuse(mode: &str, engine: &str) -> Option<PidReuse> {
    let run = run_in(
        &format!("pid-reuse-{mode}-{engine}"),
        &repo(),
        &["--engine", engine],
        &[&fixture("pid_reuse"), mode, "20"],
    );
    assert_eq!(run.code(), 0, "{mode} {engine}: {}", run.stderr());
    let out = run.stdout();
    if out.contains("pid_reuse: skipped") {
        return None;
    }
    Some((
        ports_and_pids(&run),
        (field(&out, "parent"), field(&out, "child")),
    ))
}

/// A child of glibc's `_Fork` (no atfork handlers) whose pid is the tid of its parent's exited
/// thread, which connected first: the shim's pid cache, copied into the child, must not give
/// the child's call its parent's pid (it did: the child's calls and process record merged into
/// the parent's).
#[test]
fn a_fork_child_reusing_an_exited_threads_tid_keeps_its_own_pid() {
    for engine in ["preload", "auto"] {
        let Some((got, (parent, child))) = pid_reuse("_Fork", engine) else {
            eprintln!("no user and pid namespace here: skipped");
            return;
        };
        assert_ne!(parent, child);
        assert_eq!(got, [(20, parent), (21, child)], "{engine}");
    }
}

/// The same with a raw `clone(SIGCHLD)` child whose thread gets the reused tid: no fork
/// handler runs and nothing of glibc's is called that the shim could hook; the kernel empties
/// the cache's page in the child (`MADV_WIPEONFORK`, shim/src/ids.rs).
#[test]
fn a_raw_fork_childs_thread_reusing_an_exited_threads_tid_keeps_its_own_pid() {
    let Some((got, (parent, child))) = pid_reuse("rawfork", "preload") else {
        return;
    };
    assert_eq!(got, [(20, parent), (21, child)]);
}

#[test]
fn every_engine_counts_the_storm_and_hard_cases_exactly() {
    for engine in ["preload", "auto"] {
        let flags = ["--engine", engine];
        let run = run_in(
            &format!("storm-{engine}"),
            &repo(),
            &flags,
            &[&fixture("stress"), "8", "4", "100", CLOSED],
        );
        assert_eq!(run.total_calls(), 8 * 4 * 100, "{engine}");

        // Connects from a signal handler, interrupting connects (and the shim's first mapping).
        let run = run_in(
            &format!("signal-{engine}"),
            &repo(),
            &flags,
            &[&fixture("hard_cases"), "signal", "3000", "20"],
        );
        let handled: u64 = run
            .stdout()
            .trim()
            .rsplit('=')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let by_port = |p: u64| {
            run.calls(None)
                .iter()
                .filter(|c| c.2 == p)
                .map(|c| c.6)
                .sum::<u64>()
        };
        assert_eq!(
            (by_port(20), by_port(21)),
            (3000, handled),
            "{engine}: {}",
            run.stdout()
        );

        // A vfork child's call carries its own pid, and the parent's call the parent's.
        let run = run_in(
            &format!("vfork-{engine}"),
            &repo(),
            &flags,
            &[&fixture("hard_cases"), "vfork", "20"],
        );
        let out = run.stdout();
        let pid_of = |k: &str| {
            out.split(&format!("{k}="))
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        for c in run.report["unattributed"].as_array().unwrap() {
            let want = if c["port"] == 20 {
                pid_of("child")
            } else {
                pid_of("parent")
            };
            assert_eq!(c["process"]["pid"].as_u64(), Some(want), "{engine}: {c}");
        }

        // With the shim's pid cache warm (the parent connected first), every kind of child
        // still gets its own pid: vfork, fork (and a vfork from it), clone(CLONE_VM) without
        // CLONE_THREAD, posix_spawn; a thread gets its parent's.
        let run = run_in(
            &format!("ids-{engine}"),
            &repo(),
            &flags,
            &[&fixture("hard_cases"), "ids", "20"],
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        let out = run.stdout();
        let pid_of = |k: &str| {
            out.split(&format!(" {k}="))
                .nth(1)
                .unwrap_or_else(|| panic!("{engine}: no {k} in {out}"))
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        let parent = pid_of("parent");
        let want = [
            (20, parent),
            (21, pid_of("vfork")),
            (22, pid_of("fork")),
            (23, pid_of("forkvfork")),
            (24, pid_of("clone")),
            (25, pid_of("spawn")),
            (26, parent),
            (27, parent),
        ];
        assert_eq!(ports_and_pids(&run), want, "{engine}: {out}");

        // The current test from the live environment of a program that holds the loader's
        // copy of `environ` (it refers to it): setenv, putenv, unsetenv each seen, also where
        // the environment ends up as long as it was at the call before (the shim remembers
        // where it found the variables), and a putenv string changed in place.
        let run = run_in(
            &format!("environ-{engine}"),
            &repo(),
            &flags,
            &[&fixture("hard_cases"), "environ", "20"],
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        let ports = |test: Option<&str>| run.calls(test).iter().map(|c| c.2).collect::<Vec<_>>();
        assert_eq!(
            (
                ports(Some("env::a")),
                ports(Some("env::b")),
                ports(Some("env::c")),
                ports(Some("env::d")),
                ports(Some("env::e")),
                ports(Some("t.py::f")),
                ports(None),
            ),
            (
                vec![20],
                vec![21],
                vec![24],
                vec![25],
                vec![26, 27],
                vec![28],
                vec![22, 23, 29]
            ),
            "{engine}: {:?}",
            run.tests()
        );

        // A bad address pointer: EFAULT from the kernel, as without nettrap, not a crash.
        let run = run_in(
            &format!("badaddr-{engine}"),
            &repo(),
            &flags,
            &[&fixture("hard_cases"), "badaddr", "20"],
        );
        assert_eq!(run.code(), 0, "{engine}");
        assert_eq!(run.stdout(), "badaddr: ret=-1 errno=EFAULT\n", "{engine}");
    }
}

#[test]
fn a_denial_into_a_full_stderr_pipe_does_not_hang_the_run() {
    let start = Instant::now();
    let run = run_in(
        "fullstderr",
        &repo(),
        &["--engine", "seccomp", "--deny", "20"],
        &[&fixture("hard_cases"), "fullstderr", "20"],
    );
    assert_eq!(run.code(), 86, "{}", run.stderr());
    assert_eq!(run.stdout(), "fullstderr: drained 65536\n");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(run.total_calls(), 2);
}

#[test]
fn a_full_temporary_filesystem_drops_records_instead_of_crashing_anyone() {
    // A 256 KiB tmpfs as TMPDIR, filled by the command before it makes 1600 calls: more than
    // the blocks nettrap could allocate for its event log.
    let dir = scratch("fulltmp");
    let report = dir.join("report.json");
    let script = format!(
        "ip link set lo up; mkdir -p {t} && mount -t tmpfs -o size=256k tmpfs {t} && cd {t} && \
         TMPDIR={t} {n} run --report {r} -- sh -c 'cat /dev/zero > {t}/filler 2>/dev/null; {s} 4 4 100 9'",
        t = dir.join("tmp").display(),
        n = nettrap(),
        r = report.display(),
        s = fixture("stress"),
    );
    let out = Command::new("unshare")
        .args(["-rmn", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("stress: 1600 connects attempted"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let recorded: u64 = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| count(&t["calls"]))
        .sum();
    let dropped = report["lost"]["dropped"].as_u64().unwrap();
    assert!(
        dropped > 0 && recorded < 1600,
        "recorded {recorded}, dropped {dropped}"
    );
    assert!(stderr.contains("calls not recorded"), "{stderr}");
}

/// Each engine, with the shim's environment check comparing as this CPU allows (AVX on most)
/// and with SSE2 alone (`NETTRAP_SHIM_SSE2`), so both of its compare loops are run.
fn engines_and_compares() -> Vec<(&'static str, &'static [(&'static str, &'static str)])> {
    const SSE2: &[(&str, &str)] = &[("NETTRAP_SHIM_SSE2", "1")];
    let mut v = vec![];
    for engine in ["preload", "auto"] {
        v.push((engine, &[][..]));
        v.push((engine, SSE2));
    }
    v
}

/// The current test as getenv names it at each call, where the environment changes but keeps
/// much of its shape (the shim remembers where it found the test variables): emptied in place
/// (`environ[0] = NULL`), NETTRAP_TEST set where the array keeps its length and last entry,
/// and a program's own `environ` array shrunk in place under the shim's feet, which must not
/// crash the program (the shim once read the NULL at the array's old length: unmapped), or
/// placed off 8-byte alignment across a page boundary, which must not hang it (the shim once
/// compared no entry at all at the boundary, and again, forever).
#[test]
fn the_test_is_the_one_getenv_names_however_the_environment_changes_shape() {
    for (engine, env) in engines_and_compares() {
        let flags = ["--engine", engine];
        for (mode, at_first, then, getenv) in [
            ("truncate", Some("shape::a"), None, "-"),
            ("shrink", Some("shape::b"), Some("shape::b"), "shape::b"),
            ("precedence", Some("t.py::p"), Some("shape::n"), "shape::n"),
            ("misaligned", Some("shape::m"), Some("shape::m"), "shape::m"),
        ] {
            let run = run_in_env(
                &format!("env-shapes-{mode}-{engine}-{}", env.len()),
                &repo(),
                env,
                &flags,
                &[&fixture("env_shapes"), mode, "20"],
            );
            assert_eq!(run.code(), 0, "{mode} {engine}: {}", run.stderr());
            assert_eq!(run.stdout(), format!("{mode}: getenv={getenv}\n"));
            let ports =
                |test: Option<&str>| run.calls(test).iter().map(|c| c.2).collect::<Vec<_>>();
            let mut want: Vec<(Option<&str>, Vec<u64>)> = vec![(at_first, vec![20])];
            match want.iter_mut().find(|w| w.0 == then) {
                Some(w) => w.1.push(21),
                None => want.push((then, vec![21])),
            }
            for (test, ports_want) in want {
                assert_eq!(
                    ports(test),
                    ports_want,
                    "{mode} {engine}: {test:?}: {:?}",
                    run.tests()
                );
            }
        }
    }
}

/// A connect made while the shim's scan of the environment is half-done, by a signal handler
/// on the scanning thread, and by a child forked there (its copy of the scan's state stays
/// half-done for good): each call gets the test getenv names, and so do the calls after the
/// scan resumes. The scan is stopped where it must be (a SIGSEGV on an entry in an unreadable
/// page, made readable by the handler), not by timing.
#[test]
fn calls_made_while_the_environment_scan_is_interrupted_get_the_right_test() {
    for (engine, env) in engines_and_compares() {
        let run = run_in_env(
            &format!("env-shapes-fault-{engine}-{}", env.len()),
            &repo(),
            env,
            &["--engine", engine],
            &[&fixture("env_shapes"), "fault", "20"],
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        assert_eq!(
            run.stdout(),
            "fault: faults=1\nfault: getenv=shape::g\n",
            "{engine}"
        );
        let ports = |test: Option<&str>| {
            let mut v: Vec<(u64, u64)> = run.calls(test).iter().map(|c| (c.2, c.6)).collect();
            v.sort();
            v
        };
        assert_eq!(ports(Some("shape::f")), [(20, 1)], "{engine}");
        assert_eq!(
            ports(Some("shape::g")),
            [(21, 1), (22, 1), (23, 1), (25, 2)],
            "{engine}: {:?}",
            run.tests()
        );
        assert_eq!(ports(Some("shape::c")), [(24, 2)], "{engine}");
        assert_eq!(ports(None), [], "{engine}");
    }
}

/// An environment of over 300 entries (more than the shim keeps a copy of: the rest is
/// hashed) whose entries a program writes directly, in the middle (entry 150, compared with
/// the copy) and past the copy (entry 280, hashed), while a second thread connects all along
/// (so its shim rescans the changed array while the first thread's calls check theirs): every
/// call of the first thread gets the test getenv names at that moment, and every call of the
/// second one a test the environment named at some moment (or none), none lost.
#[test]
fn direct_writes_to_a_wide_environment_are_seen_while_another_thread_rescans() {
    for (engine, env) in engines_and_compares() {
        let run = run_in_env(
            &format!("env-shapes-wide-{engine}-{}", env.len()),
            &repo(),
            env,
            &["--engine", engine],
            &[&fixture("env_shapes"), "wide", "20"],
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        let out = run.stdout();
        assert!(out.ends_with("wide: getenv=-\n"), "{engine}: {out}");
        let thread = field(&out, "thread");
        let (mut w, mut x, mut none) = (vec![], vec![], vec![]);
        for (test, got) in [
            (Some("shape::w"), &mut w),
            (Some("shape::x"), &mut x),
            (None, &mut none),
        ] {
            *got = run.calls(test).iter().map(|c| (c.2, c.6)).collect();
        }
        let (mut second, mut first) = (0, vec![]);
        for (name, got) in [("w", &w), ("x", &x), ("-", &none)] {
            for &(port, count) in got {
                if port == 29 {
                    second += count;
                } else {
                    first.push((name, port, count));
                }
            }
        }
        first.sort();
        assert_eq!(
            first,
            [("-", 22, 200), ("w", 20, 200), ("x", 21, 200)],
            "{engine}: {:?}",
            run.tests()
        );
        assert_eq!(second, thread, "{engine}: the second thread's calls");
    }
}

/// (port, pid) of every call group of a run, sorted.
fn ports_and_pids(run: &Run) -> Vec<(u64, u64)> {
    let mut got: Vec<(u64, u64)> = run.report["unattributed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["port"].as_u64().unwrap(),
                c["process"]["pid"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    got
}

/// The number after `key=` in `out`.
fn field(out: &str, key: &str) -> u64 {
    out.split(&format!("{key}="))
        .nth(1)
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

/// The shim interposes glibc's `vfork` and `clone`, each under both names (shim/src/ids.rs):
/// a failing `vfork` (EAGAIN, as under a process limit) or `clone` (EINVAL) returns and sets
/// errno as glibc's does, before and after the shim's first call, and the optional `clone`
/// pointers (CLONE_PARENT_SETTID, CLONE_CHILD_SETTID, CLONE_CHILD_CLEARTID) pass through.
/// `vfork_cases MODE 20` under `engine`, which must exit 0.
fn vfork_case(mode: &str, engine: &str) -> Run {
    let run = run_in(
        &format!("vfork-cases-{mode}-{engine}"),
        &repo(),
        &["--engine", engine],
        &[&fixture("vfork_cases"), mode, "20"],
    );
    assert_eq!(run.code(), 0, "{mode} {engine}: {}", run.stderr());
    run
}

#[test]
fn vfork_and_clone_return_what_glibcs_return() {
    for mode in ["errno", "tids"] {
        let plain = isolated(&[&fixture("vfork_cases"), mode, "20"])
            .output()
            .unwrap();
        assert!(plain.status.success(), "{mode}");
        let plain = String::from_utf8_lossy(&plain.stdout).to_string();
        for engine in ["preload", "auto"] {
            let run = vfork_case(mode, engine);
            let out = run.stdout();
            if mode == "tids" {
                let ret = field(&out, "ret");
                assert_eq!(
                    (
                        field(&out, "ptid"),
                        field(&out, "ctid"),
                        field(&out, "child")
                    ),
                    (ret, 0, ret),
                    "{engine}"
                );
                assert_eq!(ports_and_pids(&run), [(20, ret)], "{engine}");
            } else {
                assert_eq!(out, plain, "{engine}");
            }
        }
    }
}

/// A child that runs on its parent's thread descriptor is recorded with its own pid, with
/// the shim's pid cache warm (the parent connected first), however it was made: a child of
/// glibc's `__clone` (the name glibc exports beside `clone`), and a `clone(CLONE_VM |
/// CLONE_SETTLS)` child given the parent's own thread pointer (both were recorded as the
/// parent while the shim counted only `clone` children without CLONE_SETTLS as running on
/// another's descriptor).
#[test]
fn a_clone_child_on_its_parents_descriptor_keeps_its_own_pid() {
    for mode in ["__clone", "settls"] {
        for engine in ["preload", "auto"] {
            let run = vfork_case(mode, engine);
            let out = run.stdout();
            assert_eq!(
                ports_and_pids(&run),
                [(20, field(&out, "parent")), (21, field(&out, "child"))],
                "{mode} {engine}: {out}"
            );
        }
    }
}

/// vfork children made from a signal handler (interrupting the main thread's connects, while
/// another thread connects), and from four threads at once, each connect before `_exit`: every
/// child's call carries its own pid, every parent's call the parent's.
#[test]
fn vfork_children_from_signal_handlers_and_many_threads_keep_their_own_pids() {
    for (mode, n) in [("sigvfork", "3000"), ("threads", "50")] {
        let run = run_in(
            &format!("vfork-cases-{mode}"),
            &repo(),
            &["--engine", "preload"],
            &[&fixture("vfork_cases"), mode, n, "20"],
        );
        assert_eq!(run.code(), 0, "{mode}: {}", run.stderr());
        let out = run.stdout();
        let parent = field(&out, "parent");
        let children = if mode == "threads" {
            4 * 50
        } else {
            field(&out, "children")
        };
        let got = ports_and_pids(&run);
        let child_pids: std::collections::BTreeSet<u64> =
            got.iter().filter(|c| c.0 == 21).map(|c| c.1).collect();
        assert_eq!(child_pids.len() as u64, children, "{mode}: {out}");
        assert!(!child_pids.contains(&parent), "{mode}: {out}");
        assert!(
            got.iter().all(|&(port, pid)| port == 21 || pid == parent),
            "{mode}: {got:?}"
        );
        // Every call counted once.
        let want = match mode {
            "threads" => 2 * 4 * 50,
            _ => 2 * 3000 + children,
        };
        assert_eq!(run.total_calls(), want, "{mode}");
    }
}

/// Python's subprocess (vfork in CPython 3.10+, through the shim's `vfork`) spawning children
/// that connect, while another thread of the parent connects: the program's output is as in a
/// plain run, and every call carries the pid of the process that made it.
#[test]
fn pythons_subprocess_children_and_their_parents_threads_keep_their_own_pids() {
    let script = repo().join("fixtures/python-spawn/spawn_connect.py");
    let script = script.to_str().unwrap();
    let plain = isolated(&["python3", script, "20"]).output().unwrap();
    assert!(plain.status.success());
    let shape = |out: &str| out.split('=').count();
    for engine in ["preload", "auto"] {
        let run = run_in(
            &format!("python-spawn-{engine}"),
            &repo(),
            &["--engine", engine],
            &["python3", script, "20"],
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        let out = run.stdout();
        assert_eq!(
            shape(&out),
            shape(&String::from_utf8_lossy(&plain.stdout)),
            "{out}"
        );
        let parent = field(&out, "parent");
        let children: Vec<u64> = out
            .trim()
            .rsplit('=')
            .next()
            .unwrap()
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect();
        let mut want: Vec<(u64, u64)> = children.iter().map(|&c| (21, c)).collect();
        want.extend([(20, parent), (22, parent)]);
        want.sort();
        assert_eq!(ports_and_pids(&run), want, "{engine}: {out}");
        assert_eq!(run.total_calls(), 1 + 5 + 300, "{engine}");
    }
}

/// While the command runs, the launcher wakes every few milliseconds for the event log's grower
/// (src/rundir.rs), and reaps children only when one ended (its SIGCHLD ended the wait), not on
/// every wake: a run of `sleep 0.3` makes a handful of `wait4` calls, however many wakes it
/// took (it made one per wake, ~60, before). Counts, not times.
#[test]
fn the_launcher_reaps_when_a_child_ends_not_on_every_wake() {
    if Command::new("strace").arg("-V").output().is_err() {
        // Not on every fresh machine; `.ci/run` installs it, so CI always runs this.
        eprintln!(
            "the_launcher_reaps_when_a_child_ends_not_on_every_wake: SKIPPED, strace is not installed"
        );
        return;
    }
    let dir = scratch("reap-on-sigchld");
    let counts = dir.join("strace.txt");
    let report = dir.join("report.json");
    let out = isolated(&[
        "strace",
        "-c",
        "-e",
        "trace=wait4,poll",
        "-o",
        counts.to_str().unwrap(),
        nettrap(),
        "run",
        "--quiet",
        "--engine",
        "preload",
        "--report",
        report.to_str().unwrap(),
        "--",
        "sleep",
        "0.3",
    ])
    .current_dir(&dir)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&counts).unwrap();
    // `% time seconds usecs/call calls [errors] syscall`
    let calls = |name: &str| {
        text.lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.last() == Some(&name)).then(|| f.get(3)?.parse::<u64>().ok())?
            })
            .unwrap_or(0)
    };
    // The grower's wakes happened (a poll each), and were not each a reap.
    assert!(calls("poll") >= 3, "{text}");
    assert!(calls("wait4") <= 5, "{text}");
}

/// A script with no `#!` line runs through `execvpe`'s `/bin/sh` fallback, which copies the
/// arguments onto the stack nettrap gives the starting child (src/spawn.rs, not zeroed): every
/// argument reaches the script intact, and its exit status comes back.
#[test]
fn a_script_without_a_shebang_gets_every_argument_through_the_sh_fallback() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("no-shebang-script");
    let script = dir.join("args.sh");
    std::fs::write(&script, "printf '<%s>' \"$@\"; echo; exit 7\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let long = "x".repeat(5000);
    let args: Vec<String> = (0..200).map(|i| format!("a{i} b")).collect();
    let mut command = vec![script.to_str().unwrap(), "", long.as_str()];
    command.extend(args.iter().map(String::as_str));
    let run = run_in("no-shebang", &dir, &[], &command);
    assert_eq!(run.code(), 7, "{}", run.stderr());
    let want: String = std::iter::once(String::new())
        .chain([long.clone()])
        .chain(args.iter().cloned())
        .map(|a| format!("<{a}>"))
        .collect();
    assert_eq!(run.stdout().trim_end(), want);
}
