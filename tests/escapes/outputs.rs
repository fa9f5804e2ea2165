//! The report files: a path that cannot be written fails the run before the command starts; a
//! failure after the command ran keeps the summary and the verdict; a report is never half
//! written. The run directory is gone when nettrap exits (unless kept).

use crate::common::*;
use std::process::{Command, Output, Stdio};

const ENGINES: [&str; 3] = ["preload", "seccomp", "auto"];

fn edge() -> String {
    c_fixture("edge").to_str().unwrap().to_string()
}

/// `nettrap run ARGS -- sh -c SCRIPT`, isolated.
fn run_sh(args: &[&str], script: &str) -> Output {
    let mut argv = vec![nettrap(), "run"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--", "sh", "-c", script]);
    isolated(&argv).stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn an_output_path_that_cannot_be_written_fails_before_the_command_runs() {
    let dir = scratch("outputs-bad-path");
    let marker = dir.join("ran");
    let script = format!("touch {}; exec {} exit 9", marker.display(), edge());
    let good = dir.join("r.json");
    let good = good.to_str().unwrap();
    let dir_s = dir.to_str().unwrap();
    std::fs::create_dir_all(dir.join("sub/nettrap-todo.md")).unwrap();
    let sub_report = format!("{dir_s}/sub/r.json");
    let sub_todo = format!("{dir_s}/sub/nettrap-todo.md");
    // Not a regular file (as `--report /dev/null` would be): renaming over it would replace it.
    let fifo = dir.join("fifo.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let fifo = fifo.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--report", "/nonexistent-nettrap/r.json"],
            "/nonexistent-nettrap/r.json",
        ),
        (&["--report", dir_s], dir_s),
        (
            &["--report", good, "--todo", "/nonexistent-nettrap/todo.md"],
            "/nonexistent-nettrap/todo.md",
        ),
        // The to-do list goes beside the report by default: a directory in its way.
        (&["--report", &sub_report], &sub_todo),
        (&["--report", fifo], fifo),
    ];
    for engine in ENGINES {
        for (paths, named) in cases {
            let mut args = vec!["--engine", engine, "--deny", "9"];
            args.extend_from_slice(paths);
            let out = run_sh(&args, &script);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{engine} {paths:?}: {err}");
            assert!(
                !marker.exists(),
                "{engine} {paths:?}: the command ran although the output path was bad"
            );
            assert_eq!(err.lines().count(), 1, "{engine} {paths:?}: {err}");
            assert!(
                err.starts_with("nettrap: error: ") && err.contains(named),
                "{engine} {paths:?}: {err}"
            );
        }
    }
    let kind = std::fs::symlink_metadata(fifo).unwrap().file_type();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&kind),
        "the FIFO was replaced"
    );
}

#[test]
fn a_report_directory_removed_during_the_run_keeps_the_summary_and_the_verdict() {
    for engine in ENGINES {
        let dir = scratch(&format!("outputs-removed-{engine}"));
        let out_dir = dir.join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let report = out_dir.join("r.json");
        let script = format!("rm -rf {}; exec {} exit 9", out_dir.display(), edge());
        for (policy, want) in [("--deny", 86), ("--record", 87)] {
            std::fs::create_dir_all(&out_dir).unwrap();
            let out = run_sh(
                &[
                    "--engine",
                    engine,
                    policy,
                    "9",
                    "--report",
                    report.to_str().unwrap(),
                ],
                &script,
            );
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(want), "{engine} {policy}: {err}");
            assert!(
                err.contains("nettrap: 1 category of external calls") && err.contains("other (9)"),
                "{engine} {policy}: the summary is missing:\n{err}"
            );
            assert!(
                err.contains(&format!("cannot write the report to {}", report.display())),
                "{engine} {policy}: {err}"
            );
            if want == 86 {
                assert!(
                    err.contains("policy violated (1 denied call)"),
                    "{engine}: {err}"
                );
            }
        }
    }
}

/// Runs `script` in a user and mount namespace (outside the network namespace: it mounts), as
/// `sh -c`, and returns its output.
fn in_mount_ns(script: &str) -> Output {
    Command::new("unshare")
        .args(["-rmn", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_failed_write_leaves_the_previous_report_whole_and_no_temporary_file() {
    // The report lives on a 64 KiB tmpfs that the command fills: writing it fails (ENOSPC).
    // What the directory holds afterwards is listed from inside the namespace, where the tmpfs
    // lives.
    for engine in ENGINES {
        let dir = scratch(&format!("outputs-full-{engine}"));
        let out_dir = dir.join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let o = out_dir.display();
        for (policy, want) in [("--deny", 86), ("--record", 87)] {
            let script = format!(
                "ip link set lo up; mount -t tmpfs -o size=64k tmpfs {o} && \
                 echo old-report > {o}/r.json && echo old-todo > {o}/nettrap-todo.md && \
                 {n} run --engine {engine} {policy} 9 --report {o}/r.json -- \
                 sh -c 'cat /dev/zero > {o}/filler 2>/dev/null; exec {e} exit 9'; \
                 echo \"exit=$?\"; echo \"report=$(cat {o}/r.json)\"; \
                 echo \"todo=$(cat {o}/nettrap-todo.md)\"; ls -A {o} | tr '\\n' ' '",
                n = nettrap(),
                e = edge(),
            );
            let out = in_mount_ns(&script);
            let (stdout, err) = (text(&out.stdout), text(&out.stderr));
            assert!(
                stdout.contains(&format!("exit={want}\n")),
                "{engine} {policy}: {stdout}\n{err}"
            );
            assert!(
                stdout.contains("report=old-report\n") && stdout.contains("todo=old-todo\n"),
                "{engine} {policy}: the previous files were damaged: {stdout}"
            );
            assert!(
                stdout.ends_with("filler nettrap-todo.md r.json "),
                "{engine} {policy}: temporary files were left behind: {stdout}"
            );
            assert!(
                err.contains("cannot write the report to") && err.contains("other (9)"),
                "{engine} {policy}: {err}"
            );
        }
    }
}

#[test]
fn the_run_directory_is_gone_when_nettrap_exits_and_a_report_replaces_the_old_one_whole() {
    for engine in ENGINES {
        let dir = scratch(&format!("outputs-rundir-{engine}"));
        let tmp = dir.join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let report = dir.join("r.json");
        std::fs::write(&report, "old").unwrap();
        let r = report.to_str().unwrap();
        let script = format!("exec {} exit 9", edge());
        let mut argv = vec![nettrap(), "run", "-q", "--engine", engine, "--report", r];
        argv.extend_from_slice(&["--", "sh", "-c", &script]);
        for (keep, left) in [(false, 0), (true, 1)] {
            let mut cmd = isolated(&argv);
            cmd.env("TMPDIR", &tmp).stdin(Stdio::null());
            if keep {
                cmd.env("NETTRAP_KEEP_RUN_DIR", "1");
            }
            let out = cmd.output().unwrap();
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{engine}: {err}");
            let kept: Vec<_> = std::fs::read_dir(&tmp)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("nettrap-"))
                .collect();
            assert_eq!(kept.len(), left, "{engine} keep={keep}: {kept:?}\n{err}");
            let json = std::fs::read_to_string(&report).unwrap();
            assert!(
                json.starts_with('{') && json.ends_with("}\n") && json.contains("schema_version"),
                "{engine}: {json}"
            );
            // Only the report and the to-do list beside it: no temporary file left.
            let mut names: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, ["nettrap-todo.md", "r.json", "tmp"], "{engine}");
        }
        for e in std::fs::read_dir(&tmp).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("nettrap-") {
                std::fs::remove_dir_all(e.path()).unwrap();
            }
        }
        // A command killed by a signal, and one that cannot start: their run directories go
        // too.
        let killed = format!("{} exit 0; kill -9 $$", edge());
        for (command, want) in [
            (&["sh", "-c", &killed][..], 137),
            (&["/nonexistent-nettrap"][..], 127),
        ] {
            let mut argv = vec![nettrap(), "run", "-q", "--engine", engine, "--report", r];
            argv.push("--");
            argv.extend_from_slice(command);
            let out = isolated(&argv)
                .env("TMPDIR", &tmp)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(want),
                "{engine} {command:?}: {}",
                text(&out.stderr)
            );
            let left = std::fs::read_dir(&tmp)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("nettrap-"))
                .count();
            assert_eq!(left, 0, "{engine} {command:?}");
        }
    }
}

#[test]
fn outputs_are_checked_in_a_sandbox_that_refuses_faccessat2() {
    // Docker's default seccomp profile before 20.10.6 failed faccessat2 (439 on every
    // architecture), which glibc 2.33+ uses for faccessat(AT_EACCESS), with EPERM: a writable
    // report path must still pass the check, and a bad one still fail naming the path.
    let deny = c_fixture("deny_syscall");
    let deny = deny.to_str().unwrap();
    let script = format!("exec {} exit 9", edge());
    for engine in ENGINES {
        let dir = scratch(&format!("outputs-no-faccessat2-{engine}"));
        let good = dir.join("r.json");
        for (report, want) in [
            (good.to_str().unwrap(), 0),
            ("/nonexistent-nettrap/r.json", 2),
        ] {
            let argv = [
                deny,
                "439",
                nettrap(),
                "run",
                "-q",
                "--engine",
                engine,
                "--report",
                report,
                "--",
                "sh",
                "-c",
                &script,
            ];
            let out = isolated(&argv).stdin(Stdio::null()).output().unwrap();
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(want), "{engine} {report}: {err}");
            if want == 2 {
                assert!(
                    err.starts_with("nettrap: error: ") && err.contains(report),
                    "{engine}: {err}"
                );
            } else {
                let json = std::fs::read_to_string(report).unwrap();
                assert!(json.contains("schema_version"), "{engine}: {json}");
            }
        }
    }
}

/// Makes `dir` (a run directory's name) under `tmp`, with a `launcher.lock` when `lock`, its time
/// `age` seconds ago.
fn fake_run_dir(tmp: &std::path::Path, name: &str, lock: bool, age: u64) -> std::path::PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("events.log"), "x").unwrap();
    if lock {
        std::fs::write(dir.join("launcher.lock"), "").unwrap();
    }
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
    std::fs::File::open(&dir)
        .unwrap()
        .set_modified(then)
        .unwrap();
    dir
}

/// `nettrap run -q --report REPORT -- true`, isolated, with TMPDIR=`tmp` and `env`, after
/// `pre` (a wrapper such as `timeout`); asserts it exits 0.
fn run_true(tmp: &std::path::Path, report: &std::path::Path, pre: &[&str], env: &[(&str, &str)]) {
    let mut argv = pre.to_vec();
    argv.extend_from_slice(&[nettrap(), "run", "-q", "--report", report.to_str().unwrap()]);
    argv.extend_from_slice(&["--", "true"]);
    let out = isolated(&argv)
        .env("TMPDIR", tmp)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: {}",
        tmp.display(),
        text(&out.stderr)
    );
}

#[test]
fn run_directories_left_by_killed_launchers_are_swept_and_no_other() {
    let dir = scratch("outputs-sweep");
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // Left by a launcher killed two minutes ago: its lock is free.
    let stale = fake_run_dir(&tmp, "nettrap-999991-000000001", true, 120);
    // Another launcher's, running: it holds its lock (here, this test does).
    let held = fake_run_dir(&tmp, "nettrap-999992-000000002", true, 120);
    let holder = std::fs::File::open(held.join("launcher.lock")).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&holder);
    // SAFETY: flock(2) on a descriptor this test owns.
    let locked = unsafe { libc::flock(fd, libc::LOCK_EX) };
    assert_eq!(locked, 0);
    // A nettrap too old to lock (no lock file): maybe running, never touched.
    let old = fake_run_dir(&tmp, "nettrap-999993-000000003", false, 120);
    // Changed a moment ago (a launcher between making its lock and taking it).
    let recent = fake_run_dir(&tmp, "nettrap-999994-000000004", true, 0);
    // Not a run directory's name.
    let other = fake_run_dir(&tmp, "nettrap-notes", true, 120);
    let report = dir.join("r.json");
    run_true(&tmp, &report, &[], &[]);
    assert!(!stale.exists(), "the stale run directory is still there");
    for kept in [&held, &old, &recent, &other] {
        assert!(
            kept.join("events.log").exists(),
            "{} was removed",
            kept.display()
        );
    }
    // SAFETY: geteuid(2) has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert!(tmp.join(format!(".nettrap-sweep-{uid}")).exists());
    // At most once an hour: a directory left meanwhile waits for the next sweep.
    let later = fake_run_dir(&tmp, "nettrap-999995-000000005", true, 120);
    run_true(&tmp, &report, &[], &[]);
    assert!(later.exists(), "swept twice within the hour");
    drop(holder);
    // A run directory kept on purpose has no lock file, so no sweep ever takes it.
    let kept_tmp = dir.join("kept");
    std::fs::create_dir(&kept_tmp).unwrap();
    run_true(&kept_tmp, &report, &[], &[("NETTRAP_KEEP_RUN_DIR", "1")]);
    let kept: Vec<_> = std::fs::read_dir(&kept_tmp)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("nettrap-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].path().join("events.log").exists());
    assert!(!kept[0].path().join("launcher.lock").exists());
}

#[test]
fn a_fifo_where_the_sweep_opens_a_file_neither_hangs_nor_stalls_the_run() {
    // Another user may make `.nettrap-sweep-UID` a FIFO in a shared temporary directory
    // (fs.protected_fifos is 0 by default): opening it for writing waits for a reader that
    // never comes. A `launcher.lock` that is a FIFO would do the same to the opening for reading.
    let dir = scratch("outputs-sweep-fifo");
    // SAFETY: geteuid(2) has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let mark = dir.join("mark");
    std::fs::create_dir(&mark).unwrap();
    let lock = dir.join("lock");
    std::fs::create_dir(&lock).unwrap();
    let stale = fake_run_dir(&lock, "nettrap-999996-000000006", false, 0);
    for fifo in [
        mark.join(format!(".nettrap-sweep-{uid}")),
        stale.join("launcher.lock"),
    ] {
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
    }
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    std::fs::File::open(&stale)
        .unwrap()
        .set_modified(then)
        .unwrap();
    for tmp in [&mark, &lock] {
        // A guard against hanging forever, not a time limit on the run.
        run_true(
            tmp,
            &dir.join("r.json"),
            &["timeout", "-s", "KILL", "120"],
            &[],
        );
    }
}
