//! Losses fail enforce runs: a denied call whose record was dropped (log full), a record torn
//! by a writer that died, calls no engine decided, an unreadable event log. An enforce run (deny
//! rules or `--fail-on`) exits 86 and says why; a record-only run reports the loss and keeps the
//! command's status.

use crate::common::*;
use serde_json::Value;
use std::process::{Command, Stdio};

const ENGINES: [&str; 3] = ["preload", "seccomp", "auto"];

fn fixture(name: &str) -> String {
    c_fixture(name).to_str().unwrap().to_string()
}

fn denied(report: &Value) -> u64 {
    let tests = report["tests"].as_array().unwrap().iter();
    tests
        .flat_map(|t| t["calls"].as_array().unwrap().iter())
        .chain(report["unattributed"].as_array().unwrap().iter())
        .filter(|c| c["verdict"] == "denied")
        .map(|c| c["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_denied_call_whose_record_was_dropped_fails_an_enforce_run() {
    // A 256 KiB tmpfs as TMPDIR, filled by the command before 1600 recorded calls exhaust the
    // event log's few allocated slots; the denied call comes last and its record is dropped.
    for engine in ENGINES {
        for (policy, want) in [
            (&["--deny", "20"][..], 86),
            (&["--fail-on", "redis"][..], 86),
            (&["--record", "20"][..], 0),
        ] {
            let dir = scratch(&format!("lost-dropped-{engine}"));
            let report = dir.join("report.json");
            let script = format!(
                "ip link set lo up; mkdir -p {t} && mount -t tmpfs -o size=256k tmpfs {t} && cd {t} && \
                 TMPDIR={t} {n} run --engine {engine} {p} --report {r} -- \
                 sh -c 'cat /dev/zero > {t}/filler 2>/dev/null; {s} 4 4 100 9 >/dev/null; exec {e} exit 20'",
                t = dir.join("tmp").display(),
                n = nettrap(),
                p = policy.join(" "),
                r = report.display(),
                s = fixture("stress"),
                e = fixture("edge"),
            );
            let out = Command::new("unshare")
                .args(["-rmn", "sh", "-c", &script])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            let what = format!("{engine} {policy:?}");
            assert_eq!(out.status.code(), Some(want), "{what}: {err}");
            let report: Value =
                serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
            assert!(
                report["lost"]["dropped"].as_u64().unwrap() > 0,
                "{what}: {}",
                report["lost"]
            );
            assert_eq!(denied(&report), 0, "{what}: the denied call was recorded");
            assert_eq!(report["exit_code"], want, "{what}");
            assert!(err.contains("calls not recorded"), "{what}: {err}");
            if want == 86 {
                assert!(
                    err.contains("nettrap: calls lost in an enforce run (")
                        && err.contains("not recorded: the event log was full")
                        && err.contains("exiting 86"),
                    "{what}: {err}"
                );
            } else {
                assert!(!err.contains("exiting 86"), "{what}: {err}");
            }
        }
    }
}

#[test]
fn a_record_torn_by_a_writer_killed_mid_record_fails_an_enforce_run() {
    // torn_writer reserves a slot as every writer does first and is SIGKILLed before filling
    // it: what a process killed in the middle of writing a record leaves behind.
    let script = format!(
        "{} 1; exec {} exit 9",
        fixture("torn_writer"),
        fixture("edge")
    );
    for engine in ENGINES {
        for (policy, want) in [("--deny", 86), ("--record", 0)] {
            let run = run_in(
                &format!("lost-torn-{engine}"),
                &repo(),
                &["--engine", engine, policy, "20"],
                &["sh", "-c", &script],
            );
            let what = format!("{engine} {policy}");
            assert_eq!(run.code(), want, "{what}: {}", run.stderr());
            assert_eq!(run.report["lost"]["torn"], 1, "{what}");
            assert_eq!(
                run.total_calls(),
                1,
                "{what}: the call after the torn record"
            );
            assert!(
                run.stderr().contains("1 records cut short by a process"),
                "{what}: {}",
                run.stderr()
            );
            if want == 86 {
                assert!(
                    run.stderr()
                        .contains("calls lost in an enforce run (1 record cut short)"),
                    "{what}: {}",
                    run.stderr()
                );
            }
        }
    }
}

#[test]
fn calls_no_engine_decided_fail_an_enforce_run_unless_the_supervisor_saw_them() {
    // A shim that cannot map even the log's header counts the call it let pass as one byte
    // (its cause) in the run directory's `unobserved` file; the command writes those bytes as
    // such a shim would. Cause 1: the shim passed the call on to the kernel (under auto the
    // supervisor decides it); 2: the supervisor could not read the call; 7: a cause this
    // nettrap does not know.
    let cases: [(&str, &str, &str, i32, &str, u64); 7] = [
        ("preload", "--deny", "\\001", 86, "shim_unmapped", 0),
        ("preload", "--record", "\\001", 0, "shim_unmapped", 0),
        ("auto", "--deny", "\\001", 0, "", 1),
        ("seccomp", "--deny", "\\001", 0, "", 1),
        ("auto", "--deny", "\\002", 86, "supervisor_unreadable", 0),
        (
            "seccomp",
            "--deny",
            "\\002\\002",
            86,
            "supervisor_unreadable",
            0,
        ),
        ("auto", "--deny", "\\007", 86, "unknown", 0),
    ];
    for (engine, policy, bytes, want, cause, handed) in cases {
        let script = format!(
            "printf '{bytes}' >> \"$NETTRAP_RUN_DIR/unobserved\"; exec {} exit 9",
            fixture("edge")
        );
        let run = run_in(
            &format!("lost-unobserved-{engine}"),
            &repo(),
            &["--engine", engine, policy, "20"],
            &["sh", "-c", &script],
        );
        let what = format!("{engine} {policy} {bytes}");
        let lost = &run.report["lost"];
        assert_eq!(run.code(), want, "{what}: {}", run.stderr());
        assert_eq!(lost["handed_to_supervisor"], handed, "{what}: {lost}");
        let n = bytes.matches('\\').count() as u64;
        if cause.is_empty() {
            assert_eq!(lost["unobserved"]["total"], 0, "{what}: {lost}");
            assert!(
                run.stderr().contains("decided by the seccomp supervisor"),
                "{what}: {}",
                run.stderr()
            );
        } else {
            assert_eq!(lost["unobserved"]["total"], n, "{what}: {lost}");
            assert_eq!(lost["unobserved"]["by_cause"][cause], n, "{what}: {lost}");
            assert!(
                run.stderr()
                    .contains(&format!("passed undecided and unrecorded ({cause})")),
                "{what}: {}",
                run.stderr()
            );
        }
        if want == 86 {
            assert!(
                run.stderr().contains(&format!(
                    "calls lost in an enforce run ({n} {} no engine decided ({cause}))",
                    if n == 1 { "call" } else { "calls" }
                )),
                "{what}: {}",
                run.stderr()
            );
        }
    }
}

/// A command that rewrites the log header's counters (the file is the command's to write),
/// leaving its magic number: a capacity of one slot and a cursor past it, or a cursor at the
/// top of u64. nettrap's main thread, which grows the log every 5 ms while the command runs,
/// neither loops for ever (hence the `timeout`) nor panics, and the report is written.
#[test]
fn a_log_header_with_counters_rewritten_neither_hangs_nor_kills_nettrap() {
    for (what, bytes, seek) in [
        // capacity (offset 16) 1, cursor (offset 24) 40000
        ("capacity", r"\001\0\0\0\0\0\0\0\100\234\0\0\0\0\0\0", "16"),
        ("cursor", r"\377\377\377\377\377\377\377\377", "24"),
    ] {
        let script = format!(
            "printf '{bytes}' | dd of=\"$NETTRAP_RUN_DIR/events.log\" bs=1 seek={seek} conv=notrunc 2>/dev/null; sleep 0.05"
        );
        for engine in ENGINES {
            let dir = scratch(&format!("lost-counters-{engine}"));
            let report = dir.join("r.json");
            let out = isolated(&[
                "timeout",
                "-s",
                "KILL",
                "60",
                nettrap(),
                "run",
                "-q",
                "--engine",
                engine,
                "--report",
                report.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                &script,
            ])
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{what} {engine}: {stderr}");
            assert!(!stderr.contains("panicked"), "{what} {engine}: {stderr}");
            assert!(report.is_file(), "{what} {engine}: {stderr}");
        }
    }
}

#[test]
fn an_unreadable_event_log_is_a_loss_and_the_report_is_still_written() {
    // The command makes a call, then overwrites the log's magic number, and lives on for a
    // few of the grower's looks at the log (every 5 ms, on nettrap's main thread).
    let script = format!(
        "{} exit 20; printf XXXXXXXX | dd of=\"$NETTRAP_RUN_DIR/events.log\" conv=notrunc 2>/dev/null; sleep 0.05",
        fixture("edge")
    );
    for engine in ENGINES {
        for (policy, want) in [("--deny", 86), ("--record", 0)] {
            let run = run_in(
                &format!("lost-corrupt-{engine}"),
                &repo(),
                &["--engine", engine, policy, "20"],
                &["sh", "-c", &script],
            );
            let what = format!("{engine} {policy}");
            assert_eq!(run.code(), want, "{what}: {}", run.stderr());
            let e = run.report["lost"]["log_error"].as_str().unwrap_or_default();
            assert!(e.contains("the event log header is corrupt"), "{what}: {e}");
            assert_eq!(
                run.stderr()
                    .matches("the event log could not be read")
                    .count(),
                1 + usize::from(want == 86),
                "{what}: {}",
                run.stderr()
            );
        }
    }
}
