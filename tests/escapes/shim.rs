//! The shim's mappings and its first calls (issue 7, defects 2 and 3): under a memory limit a
//! call is still decided and recorded, or counted; when the shim cannot map even the log's
//! header the call is counted in the run directory's `unobserved` file (and, under `auto`, the
//! supervisor decides it); threads of fresh processes racing to their first call never pass a
//! call through uncounted.

use crate::common::*;
use nettrap_core::event::{self, Unobserved};

/// A port nothing listens on inside the test's namespace.
const CLOSED: &str = "9";
const ENGINES: [&str; 3] = ["preload", "seccomp", "auto"];

fn fixture(name: &str) -> String {
    c_fixture(name).to_str().unwrap().to_string()
}

/// What a kept run directory holds: the decoded event log and the `unobserved` file's bytes.
struct Kept {
    log: event::Decoded,
    unobserved_file: Vec<u8>,
}

/// Reads (and removes) the run directory of a run made with `NETTRAP_KEEP_RUN_DIR`.
fn kept(run: &Run) -> Kept {
    let stderr = run.stderr();
    let dir = stderr
        .lines()
        .find_map(|l| l.strip_prefix("nettrap: run directory kept: "))
        .unwrap_or_else(|| panic!("no kept run directory: {stderr}"));
    let dir = std::path::Path::new(dir);
    let bytes = std::fs::read(dir.join("events.log")).unwrap();
    let used = event::used_len(&bytes).unwrap();
    let log = event::decode(&bytes[..used]).unwrap();
    let unobserved_file = std::fs::read(dir.join("unobserved")).unwrap_or_default();
    std::fs::remove_dir_all(dir).unwrap();
    Kept {
        log,
        unobserved_file,
    }
}

fn deny_flags(engine: &str) -> [&str; 6] {
    ["--engine", engine, "--deny", CLOSED, "--errno", "EACCES"]
}

fn denied_once() -> Vec<CallRow> {
    vec![t("other", "127.0.0.1", 9, "tcp", "-", "denied", 1)]
}

#[test]
fn under_ulimit_v_a_denied_connect_is_denied_and_recorded() {
    // The shim once mapped the whole sparse log (1 GiB of address space): under this limit the
    // mapping failed and every call passed, unrecorded.
    let script = format!("ulimit -v 600000; exec {} 1 0 {CLOSED}", fixture("nomem"));
    for engine in ENGINES {
        let run = run_in(
            &format!("ulimit-{engine}"),
            &repo(),
            &deny_flags(engine),
            &["sh", "-c", &script],
        );
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        assert!(
            run.stdout().contains("eacces=1 refused=0 other=0"),
            "{engine}: {}",
            run.stdout()
        );
        assert_eq!(run.calls(None), denied_once(), "{engine}");
    }
}

#[test]
fn with_no_address_space_left_the_first_call_is_counted_and_under_auto_still_denied() {
    for engine in ENGINES {
        let run = run_in_env(
            &format!("nomem-first-{engine}"),
            &repo(),
            &[("NETTRAP_KEEP_RUN_DIR", "1")],
            &deny_flags(engine),
            &[&fixture("nomem"), "0", "1", CLOSED],
        );
        let out = run.stdout();
        assert!(out.contains("mapfull=1"), "{engine}: {out}");
        let kept = kept(&run);
        assert_eq!((kept.log.dropped, kept.log.torn), (0, 0), "{engine}");
        if engine == "preload" {
            // The shim could map neither the policy nor the log: the call went to the kernel
            // undecided, and is counted where no mapping is needed.
            assert!(out.contains("eacces=0 refused=1"), "{out}");
            assert_eq!(run.total_calls(), 0);
            assert_eq!(kept.unobserved_file, [Unobserved::ShimUnmapped as u8]);
            // The report counts it as lost, and the enforce run fails.
            assert_eq!(
                run.report["lost"]["unobserved"]["by_cause"]["shim_unmapped"], 1,
                "{}",
                run.report["lost"]
            );
            assert_eq!(run.code(), 86, "{}", run.stderr());
            continue;
        }
        // The supervisor decided and recorded it.
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        assert!(out.contains("eacces=1 refused=0"), "{engine}: {out}");
        assert_eq!(run.calls(None), denied_once(), "{engine}");
        // Under auto the shim counted it too (the report discounts it: the supervisor saw it).
        let want: &[u8] = if engine == "auto" {
            &[Unobserved::ShimUnmapped as u8]
        } else {
            &[]
        };
        assert_eq!(kept.unobserved_file, want, "{engine}");
    }
}

#[test]
fn with_no_address_space_left_calls_past_the_mapped_window_are_still_denied_and_counted() {
    // One call maps the policy, the header and the log's first window (8192 slots); then
    // nothing more can be mapped, and the calls that land past that window cannot be written.
    let after: u64 = 8300;
    for engine in ["preload", "auto"] {
        let run = run_in_env(
            &format!("nomem-window-{engine}"),
            &repo(),
            &[("NETTRAP_KEEP_RUN_DIR", "1")],
            &deny_flags(engine),
            &[&fixture("nomem"), "1", &after.to_string(), CLOSED],
        );
        let out = run.stdout();
        assert!(
            out.contains(&format!("mapfull=1 eacces={} refused=0", after + 1)),
            "{engine}: {out}"
        );
        assert_eq!(run.code(), 86, "{engine}");
        let kept = kept(&run);
        let recorded = run.total_calls();
        let dropped = run.report["lost"]["dropped"].as_u64().unwrap();
        assert_eq!((dropped, kept.log.torn), (kept.log.dropped, 0), "{engine}");
        let shim_unmapped = kept.log.unobserved[Unobserved::ShimUnmapped as usize];
        if engine == "preload" {
            // Decided (denied) all the same; the records that could not be written are dropped.
            assert!(dropped > 0, "{}", run.report["lost"]);
            assert_eq!(recorded + dropped, after + 1);
            assert_eq!(shim_unmapped, 0);
        } else {
            // Handed to the supervisor, which recorded every one.
            assert_eq!((recorded, dropped), (after + 1, 0));
            assert!(shim_unmapped > 0);
        }
    }
}

#[test]
fn parallel_storms_of_fresh_processes_lose_no_first_call() {
    // Three storms at once, each of 48 fresh processes whose 16 threads all make their first
    // call at the same moment: every thread of a process finds the run's files unmapped. Such
    // threads once waited for the first to map them, and after a while gave up and let their
    // calls through uncounted.
    let stress = fixture("stress");
    let script = format!(
        "{s} 48 16 4 {CLOSED} & a=$!; {s} 48 16 4 {CLOSED} & b=$!; {s} 48 16 4 {CLOSED} & c=$!; \
         wait $a && wait $b && wait $c",
        s = stress
    );
    for engine in ["preload", "auto"] {
        let run = run_in(
            &format!("storms-{engine}"),
            &repo(),
            &["--engine", engine],
            &["sh", "-c", &script],
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        assert_eq!(run.total_calls(), 3 * 48 * 16 * 4, "{engine}");
        assert_eq!(
            (
                run.report["lost"]["dropped"].as_u64(),
                run.report["lost"]["torn"].as_u64()
            ),
            (Some(0), Some(0)),
            "{engine}"
        );
    }
}

#[test]
fn a_destination_the_shim_cannot_read_is_counted_and_under_auto_still_denied() {
    // A sandbox forbids process_vm_readv: the shim cannot copy a heap sockaddr through the
    // kernel. It once took that for a bad address and let the call through, uncounted.
    for engine in ENGINES {
        let run = run_in_env(
            &format!("noreadv-{engine}"),
            &repo(),
            &[("NETTRAP_KEEP_RUN_DIR", "1")],
            &deny_flags(engine),
            &[&fixture("noreadv"), CLOSED],
        );
        let out = run.stdout();
        assert!(out.contains("blocked=1"), "{engine}: {out}");
        let kept = kept(&run);
        let counted = kept.log.unobserved[Unobserved::ShimUnreadable as usize];
        if engine == "preload" {
            assert!(out.contains("errno=ECONNREFUSED"), "{out}");
            assert_eq!((run.total_calls(), counted), (0, 1));
            assert_eq!(
                run.report["lost"]["unobserved"]["by_cause"]["shim_unreadable"], 1,
                "{}",
                run.report["lost"]
            );
            assert_eq!(run.code(), 86, "{}", run.stderr());
            continue;
        }
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        assert!(out.contains("errno=EACCES"), "{engine}: {out}");
        assert_eq!(run.calls(None), denied_once(), "{engine}");
        assert_eq!(counted, u64::from(engine == "auto"), "{engine}");
    }
}

#[test]
fn a_relative_tmpdir_still_reaches_every_process() {
    // TMPDIR=rel once gave the run directory as a relative path: a process that changed its
    // working directory could not find the run's files, and its call went through uncounted.
    let dir = scratch("relative-tmpdir");
    std::fs::create_dir_all(dir.join("rel")).unwrap();
    let script = format!("cd / && exec {} 1 1 1 {CLOSED}", fixture("stress"));
    for engine in ENGINES {
        let run = run_in_env(
            &format!("relative-tmpdir-{engine}"),
            &dir,
            &[("TMPDIR", "rel")],
            &deny_flags(engine),
            &["sh", "-c", &script],
        );
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        assert_eq!(run.total_calls(), 1, "{engine}");
    }
}

#[test]
fn with_no_descriptor_left_the_first_call_is_still_counted() {
    // The shim can open neither the run's files nor the `unobserved` file: it once let the call
    // through uncounted. Now it signals the launcher, which needs no descriptor. Nothing
    // listens on the port: a call let through gets ECONNREFUSED, a denied one EACCES.
    for engine in ENGINES {
        let run = run_in(
            &format!("nofd-{engine}"),
            &repo(),
            &deny_flags(engine),
            &[&fixture("nofd"), CLOSED],
        );
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        let lost = &run.report["lost"];
        let out = run.stdout();
        match engine {
            "preload" => {
                assert!(out.contains("errno=Connection refused"), "{out}");
                assert_eq!(lost["unobserved"]["by_cause"]["shim_unmapped"], 1, "{lost}");
            }
            _ => {
                assert!(out.contains("errno=Permission denied"), "{engine}: {out}");
                assert_eq!(lost["unobserved"]["total"], 0, "{engine}: {lost}");
                let handed = if engine == "auto" { 1 } else { 0 };
                assert_eq!(lost["handed_to_supervisor"], handed, "{engine}: {lost}");
            }
        }
    }
}

#[test]
fn a_connect_on_a_small_stack_does_not_crash() {
    // The shim once needed about 5 KiB of stack for a process's first call (its executable's
    // path and command line were read into stack buffers): a connect on a 4 KiB coroutine stack
    // crashed under nettrap, and ran fine without it. Later the connect fast path handed the
    // calls it does not take (a denial, a fork child's first call) to the general path with its
    // own frame still below (a call, not a jump): a denied connect on a 3,200-byte stack crashed.
    // The stack is exactly the size given, a guard page right below it; each size leaves a
    // few hundred bytes over what the shim needs.
    // (fixture words, denied, stack bytes, calls recorded)
    let cases: [(&[&str], bool, &str, u64); 6] = [
        (&[], false, "3072", 1),
        (&[], true, "3072", 1),
        (&["warm"], false, "1536", 2),
        (&["warm"], true, "3200", 2),
        (&["warm", "fork"], false, "1856", 2),
        (&["warm", "fork"], true, "3200", 2),
    ];
    for engine in ENGINES {
        for (words, denied, bytes, calls) in cases {
            let plain = ["--engine", engine];
            let flags = if denied {
                &deny_flags(engine)[..]
            } else {
                &plain[..]
            };
            let mut args = vec![
                fixture("small_stack"),
                bytes.to_string(),
                CLOSED.to_string(),
            ];
            args.extend(words.iter().map(|w| w.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = run_in(&format!("small-stack-{engine}"), &repo(), flags, &args);
            let what = format!("{engine} {words:?} denied={denied} {bytes} bytes");
            assert!(
                run.stdout().contains(&format!("ok {bytes}")),
                "{what}: exit {}: {}",
                run.code(),
                run.stderr()
            );
            let want = if denied { 86 } else { 0 };
            assert_eq!(run.code(), want, "{what}: {}", run.stderr());
            assert_eq!(run.total_calls(), calls, "{what}");
        }
    }
}

#[test]
fn a_denial_never_blocks_on_a_full_stderr_pipe() {
    // A parent that waits for its child without reading the child's stderr: the shim's denial
    // lines once filled the pipe and hung the child after a few hundred denials.
    let script = format!(
        "import subprocess, sys\n\
         p = subprocess.Popen(['{}', '1', '1', '3000', '{CLOSED}'], stderr=subprocess.PIPE)\n\
         print('exited', p.wait(timeout=30))\n",
        fixture("stress")
    );
    for engine in ENGINES {
        let run = run_in(
            &format!("full-stderr-pipe-{engine}"),
            &repo(),
            // ECONNREFUSED, which stress expects (it reports other errors on stderr itself).
            &["--engine", engine, "--deny", CLOSED],
            &["python3", "-c", &script],
        );
        assert!(
            run.stdout().contains("exited 0"),
            "{engine}: {}\n{}",
            run.stdout(),
            run.stderr()
        );
        assert_eq!(run.code(), 86, "{engine}");
        assert_eq!(run.total_calls(), 3000, "{engine}");
    }
}

/// The shim once read a sockaddr directly anywhere between its frame and the main stack's
/// top, taking that range to be one mapping; a program that made a page of its own main stack
/// PROT_NONE (a coroutine stack's guard carved from it) broke that: a connect whose (bad)
/// address is on that page crashed instead of getting EFAULT. It now reads directly only up to
/// the end of the caller's stack page.
#[test]
fn a_connect_with_its_address_on_a_guard_page_of_the_main_stack_gets_efault() {
    let run = run_in(
        "stack-hole-mainguard",
        &repo(),
        &["--engine", "preload"],
        &[&fixture("stack_hole"), "mainguard"],
    );
    assert!(
        run.stdout().contains("errno=14"),
        "exit {}: {}{}",
        run.code(),
        run.stdout(),
        run.stderr()
    );
}

#[test]
fn a_connect_from_a_foreign_stack_with_a_bad_address_gets_efault() {
    // The shim once read a sockaddr directly when it lay between its own frame and the top of
    // the thread's stack block (within 8 MiB). On a coroutine or alternate signal stack mapped
    // just below a small thread stack, that range crosses unmapped memory: a connect whose
    // address is on it must get EFAULT from the kernel, as it does without nettrap, not crash.
    // (The shim now reads directly only up to the end of the caller's stack page.)
    for mode in ["coroutine", "altstack"] {
        let run = run_in(
            &format!("stack-hole-{mode}"),
            &repo(),
            &["--engine", "preload"],
            &[&fixture("stack_hole"), mode],
        );
        assert!(
            run.stdout().contains("errno=14"),
            "{mode}: exit {}: {}{}",
            run.code(),
            run.stdout(),
            run.stderr()
        );
        assert_eq!(run.code(), 0, "{mode}");
    }
}

/// The shim finds libc's functions without importing any (shim/src/symbols.rs): through the
/// auxiliary vector after the environment it is handed at start-up, or, where that is not the
/// initial stack's, `/proc/self/auxv`; and through the program headers when the dynamic loader
/// itself was run as the program (`ld.so PROGRAM`: no `AT_BASE`). Each way, calls are recorded
/// and the program sees the kernel's errno.
#[test]
fn the_shim_finds_libc_however_it_was_loaded() {
    // The dynamic loader run as the program.
    let ldso = "/lib64/ld-linux-x86-64.so.2";
    if std::path::Path::new(ldso).exists() {
        let run = run_in(
            "ldso-program",
            &repo(),
            &["--engine", "preload"],
            &[ldso, &fixture("connect_loop"), "10", "0"],
        );
        assert_eq!(run.code(), 0, "{}", run.stderr());
        assert_eq!(run.total_calls(), 10, "{}", run.stderr());
    }
    // Loaded with dlopen after setenv moved the environment: /proc/self/auxv.
    let run = run_in(
        "dlopen-shim",
        &repo(),
        &["--engine", "preload"],
        &[
            "sh",
            "-c",
            r#"exec env LD_PRELOAD= "$0" "$LD_PRELOAD" 9"#,
            &fixture("dlopen_shim"),
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.stdout(), "connect: ret=-1 errno=ECONNREFUSED\n");
    assert_eq!(run.total_calls(), 1, "{}", run.stderr());
}

/// `ld.so PROGRAM` (and `ld.so --preload`): the loader adjusts the auxiliary vector on the
/// stack so that `AT_PHDR` is the program's, not its own, while `AT_BASE` stays 0; the shim
/// once took the program for the loader there, found neither `dl_iterate_phdr` nor `dlsym`,
/// and with them no libc at all: calls were still counted, but every errno the program got
/// from connect was lost (0), and the current test with it (no `environ`); a program loaded at
/// a fixed address (not PIE) crashed.
#[test]
fn the_dynamic_loader_run_as_the_program_changes_nothing_the_program_sees() {
    let ldso = "/lib64/ld-linux-x86-64.so.2";
    if !std::path::Path::new(ldso).exists() {
        return;
    }
    let plain = isolated(&[&fixture("errno_probe"), CLOSED])
        .output()
        .unwrap();
    assert!(plain.status.success());
    for engine in ["preload", "auto"] {
        for probe in ["errno_probe", "errno_probe_nopie"] {
            let run = run_in(
                &format!("ldso-{probe}-{engine}"),
                &repo(),
                &["--engine", engine],
                &[ldso, &fixture(probe), CLOSED],
            );
            assert_eq!(run.code(), 0, "{probe} {engine}: {}", run.stderr());
            assert_eq!(
                run.stdout(),
                String::from_utf8_lossy(&plain.stdout),
                "{probe} {engine}: record mode must not change return values or errno"
            );
        }
        // The test named by the live environment (the shim reads it through libc's environ).
        let run = run_in(
            &format!("ldso-test-{engine}"),
            &repo(),
            &["--engine", engine],
            &[
                "env",
                "NETTRAP_TEST=ldso::t",
                ldso,
                &fixture("connect_loop"),
                "3",
                "0",
            ],
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        assert_eq!(count(&run.test("ldso::t")["calls"]), 3, "{engine}");
    }
}

/// A library whose constructor calls unsetenv before the shim's constructor runs (as libraries
/// that unset LD_PRELOAD at load do) shifts the initial environment down in place on the
/// stack: it then ends before the auxiliary vector, with NULLs in between. The shim once took
/// the word after the environment's end for the vector's start, found no loader and with it
/// no libc: the program's errno from connect was lost, and the current test.
#[test]
fn a_library_that_unsets_a_variable_at_load_changes_nothing_the_program_sees() {
    for engine in ["preload", "auto"] {
        let run = run_in(
            &format!("env-early-{engine}"),
            &repo(),
            &["--engine", engine],
            &[
                "env",
                "ENV_SHAPES_GONE=1",
                "NETTRAP_TEST=shape::early",
                &fixture("env_early"),
                "early",
                CLOSED,
            ],
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        assert_eq!(
            run.stdout(),
            "early: errno=ECONNREFUSED\nearly: getenv=shape::early\n",
            "{engine}"
        );
        assert_eq!(count(&run.test("shape::early")["calls"]), 1, "{engine}");
    }
}

/// A process's first call is timed after the shim wrote its process record (reading its
/// command line takes microseconds): a call never precedes its own process's record, and its
/// blocked time holds none of that work. The fast path, which reads the time first, hands a
/// process's first call to the general path, which once kept the fast path's earlier time.
#[test]
fn a_processs_first_call_is_timed_after_its_process_record() {
    for engine in ["preload", "auto"] {
        let run = run_in_env(
            &format!("first-call-time-{engine}"),
            &repo(),
            &[("NETTRAP_KEEP_RUN_DIR", "1")],
            &["--engine", engine],
            &[&fixture("hard_cases"), "ids", "20"],
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        let kept = kept(&run);
        let mut recorded = std::collections::HashMap::new();
        let mut calls = Vec::new();
        for r in &kept.log.records {
            match r {
                event::Record::Process(p) if p.process.source == event::Source::Shim => {
                    recorded.entry(p.process.pid).or_insert(p.process.time_ns);
                }
                event::Record::Call(c) if c.call.source == event::Source::Shim => {
                    calls.push((c.call.pid, c.call.time_ns));
                }
                _ => {}
            }
        }
        assert!(calls.len() >= 5, "{engine}: {calls:?}");
        for (pid, t) in calls {
            let at = recorded[&pid];
            assert!(
                t >= at,
                "{engine}: pid {pid}'s call at {t}, its record at {at}"
            );
        }
    }
}
