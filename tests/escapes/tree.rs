//! The whole process tree ends with the run: leftovers get SIGTERM after the grace period, then
//! SIGKILL, and are listed; a second interrupt kills the whole tree at once.

use crate::common::*;
use serde_json::Value;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const ENGINES: [&str; 3] = ["preload", "seccomp", "auto"];

/// Is `pid` running? A zombie is dead for our purposes.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Pids of running processes whose command line is one of `lines` (arguments joined by spaces).
fn running(lines: &[String]) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let line = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if lines.iter().any(|l| line.trim_end() == l) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Kills what a failed case left behind (`pids`, and processes running one of `lines`), so that
/// no test leaves processes running.
fn clean_up(pids: &[u32], lines: &[String]) {
    for &pid in pids.iter().filter(|p| alive(**p)) {
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    for pid in running(lines) {
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

fn read_pid(path: &std::path::Path) -> u32 {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s.trim().parse().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn killed(report: &Value) -> Vec<(u64, String, String, String)> {
    report["killed"]
        .as_array()
        .unwrap_or_else(|| panic!("no killed list: {report}"))
        .iter()
        .map(|k| {
            (
                k["pid"].as_u64().unwrap(),
                k["cmdline"].as_str().unwrap().to_string(),
                k["signal"].as_str().unwrap().to_string(),
                k["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn processes_left_running_are_killed_and_listed() {
    // A sleep left behind; one that ignores SIGTERM; a loop that ignores SIGTERM and keeps
    // starting sleeps (the tree forks while it is being killed). Their output goes elsewhere,
    // so that the test's pipes do not wait for them.
    let tag = std::process::id();
    for engine in ENGINES {
        let dir = scratch(&format!("tree-leftover-{engine}"));
        let d = dir.display();
        let script = format!(
            "exec >/dev/null 2>&1; sleep 1000.{tag} & echo $! > {d}/plain; \
             (trap '' TERM; exec sleep 1001.{tag}) & echo $! > {d}/stubborn; \
             (trap '' TERM; while :; do sleep 1002.{tag} & sleep 0.01; done) & echo $! > {d}/loop"
        );
        let run = run_in(
            &format!("tree-leftover-{engine}"),
            &repo(),
            &["--engine", engine],
            &["sh", "-c", &script],
        );
        let pid = |f: &str| read_pid(&dir.join(f)) as u64;
        let started = [pid("plain"), pid("stubborn"), pid("loop")].map(|p| p as u32);
        let lines: Vec<String> = (1000..1003).map(|n| format!("sleep {n}.{tag}")).collect();
        let mut still: Vec<u32> = started.into_iter().filter(|p| alive(*p)).collect();
        still.extend(running(&lines));
        clean_up(&started, &lines);
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        assert!(
            still.is_empty(),
            "{engine}: still running after nettrap exited: {still:?}"
        );
        let k = killed(&run.report);
        let find = |p: u64| k.iter().find(|e| e.0 == p).cloned();
        assert_eq!(
            find(pid("plain")),
            Some((
                pid("plain"),
                format!("sleep 1000.{tag}"),
                "SIGTERM".into(),
                "left_running".into()
            )),
            "{engine}: {k:?}"
        );
        assert_eq!(
            find(pid("stubborn")),
            Some((
                pid("stubborn"),
                format!("sleep 1001.{tag}"),
                "SIGKILL".into(),
                "left_running".into()
            )),
            "{engine}: {k:?}"
        );
        let looping = find(pid("loop")).unwrap_or_else(|| panic!("{engine}: {k:?}"));
        assert_eq!(looping.2, "SIGKILL", "{engine}: {k:?}");
        assert!(
            run.stderr().contains("nettrap: warning: killed ")
                && run
                    .stderr()
                    .contains("processes still running after the command exited: "),
            "{engine}: {}",
            run.stderr()
        );
    }
}

/// Starts `nettrap run` on `script` (isolated), with the report in `dir`.
fn start(dir: &std::path::Path, engine: &str, script: &str) -> Child {
    let report = dir.join("report.json");
    isolated(&[
        nettrap(),
        "run",
        "--engine",
        engine,
        "--report",
        report.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        script,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

/// Waits for `child` to exit, at most a generous bound that only guards against a hang (then
/// kills it and what it left running: `pids`, processes running one of `lines`).
fn wait_bounded(child: &mut Child, what: &str, pids: &[u32], lines: &[String]) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            clean_up(pids, lines);
            panic!("{what}: nettrap did not end after the second interrupt");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_interrupt_kills_a_command_that_ignores_the_first() {
    let tag = std::process::id();
    for (engine, first, second) in [
        ("preload", libc::SIGTERM, libc::SIGTERM),
        ("seccomp", libc::SIGTERM, libc::SIGTERM),
        ("auto", libc::SIGTERM, libc::SIGTERM),
        ("preload", libc::SIGINT, libc::SIGHUP),
    ] {
        let what = format!("{engine} {first} {second}");
        let dir = scratch(&format!("tree-interrupt-{engine}-{first}"));
        let d = dir.display();
        // The command notes each signal it catches and goes on; a child of it runs too.
        let script = format!(
            "trap 'echo got >> {d}/got' INT TERM HUP; sleep 1003.{tag} >/dev/null 2>&1 & echo $$ > {d}/pid; \
             while :; do sleep 0.05; done"
        );
        let mut child = start(&dir, engine, &script);
        let pid = read_pid(&dir.join("pid"));
        // SAFETY: signalling the nettrap process this test started (unshare and sh exec it).
        unsafe { libc::kill(child.id() as i32, first) };
        read_pid_like(&dir.join("got"));
        // SAFETY: as above.
        unsafe { libc::kill(child.id() as i32, second) };
        let lines = [format!("sleep 1003.{tag}")];
        let code = wait_bounded(&mut child, &what, &[pid], &lines);
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let still = running(&lines);
        clean_up(&[pid], &lines);
        assert_eq!(code, 128 + 9, "{what}: {err}");
        assert!(!alive(pid), "{what}");
        assert!(still.is_empty(), "{what}: {still:?}");
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap())
                .unwrap();
        let k = killed(&report);
        assert!(
            k.contains(&(
                pid as u64,
                format!("sh -c {script}"),
                "SIGKILL".into(),
                "second_interrupt".into()
            )),
            "{what}: {k:?}"
        );
        assert!(
            k.iter()
                .any(|e| e.1 == format!("sleep 1003.{tag}") && e.2 == "SIGKILL"),
            "{what}: {k:?}"
        );
        assert!(
            err.contains("processes at the second interrupt: "),
            "{what}: {err}"
        );
    }
}

/// Waits for a file to have a first line.
fn read_pid_like(path: &std::path::Path) {
    let start = Instant::now();
    while !std::fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n')) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_ctrl_c_from_the_terminal_kills_the_tree() {
    // nettrap on a pseudo-terminal, in the terminal's foreground process group with the
    // command: Ctrl-C reaches both; the command catches it and goes on; the second Ctrl-C
    // kills the tree.
    let tag = std::process::id();
    let dir = scratch("tree-ctrl-c");
    let d = dir.display();
    let script = format!(
        "trap 'echo got >> {d}/got' INT; sleep 1004.{tag} >/dev/null 2>&1 & echo $$ > {d}/pid; \
         while :; do sleep 0.05; done"
    );
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty with valid out-pointers and no name, settings or size.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty");
    let report = dir.join("report.json");
    let mut cmd = isolated(&[
        nettrap(),
        "run",
        "--engine",
        "preload",
        "--report",
        report.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    use std::os::fd::FromRawFd;
    use std::os::unix::process::CommandExt;
    // SAFETY: each is a fresh descriptor of the pseudo-terminal's slave, owned by the Stdio.
    unsafe {
        cmd.stdin(Stdio::from_raw_fd(libc::dup(slave)))
            .stdout(Stdio::from_raw_fd(libc::dup(slave)))
            .stderr(Stdio::from_raw_fd(libc::dup(slave)));
        // SAFETY: async-signal-safe calls in the child: a new session whose controlling
        // terminal is the slave (stdin), with this process group in the foreground.
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // SAFETY: our copy of the slave is no longer needed.
    unsafe { libc::close(slave) };
    let pid = read_pid(&dir.join("pid"));
    let ctrl_c = || {
        // SAFETY: writing one byte to the master we opened.
        let n = unsafe { libc::write(master, b"\x03".as_ptr().cast(), 1) };
        assert_eq!(n, 1);
    };
    ctrl_c();
    read_pid_like(&dir.join("got"));
    ctrl_c();
    let lines = [format!("sleep 1004.{tag}")];
    let code = wait_bounded(&mut child, "ctrl-c", &[pid], &lines);
    // SAFETY: closing the master we opened.
    unsafe { libc::close(master) };
    let still = running(&lines);
    clean_up(&[pid], &lines);
    assert_eq!(code, 128 + 9);
    assert!(still.is_empty(), "{still:?}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(
        killed(&report).contains(&(
            pid as u64,
            format!("sh -c {script}"),
            "SIGKILL".into(),
            "second_interrupt".into()
        )),
        "{}",
        report["killed"]
    );
}

#[test]
fn signals_the_command_sends_its_own_group_are_not_interrupts() {
    // A program that signals its own process group (`os.killpg`) reaches nettrap too, which
    // once forwarded the signal a second time and counted two SIGTERMs as a second interrupt:
    // the whole tree was SIGKILLed. The program runs in a session of its own here, so its
    // group signals reach nothing but nettrap and the command.
    let script = "import os, signal, time\n\
         n = [0]\n\
         signal.signal(signal.SIGUSR1, lambda *a: n.__setitem__(0, n[0] + 1))\n\
         signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
         os.killpg(os.getpgrp(), signal.SIGUSR1)\n\
         time.sleep(0.3)\n\
         for i in range(2):\n    os.killpg(os.getpgrp(), signal.SIGTERM); time.sleep(0.3)\n\
         print('usr1', n[0], 'survived')\n";
    for engine in ["preload", "auto"] {
        let dir = scratch(&format!("group-signals-{engine}"));
        let report = dir.join("r.json");
        let out = isolated(&[
            "setsid",
            "-w",
            nettrap(),
            "run",
            "-q",
            "--engine",
            engine,
            "--report",
            report.to_str().unwrap(),
            "--",
            "python3",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("usr1 1 survived"),
            "{engine}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{engine}");
    }
}
