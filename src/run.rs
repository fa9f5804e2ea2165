//! `nettrap run`: load the policy, check the outputs, prepare the run directory and the engine,
//! run the command, then turn the event log into the report, the to-do list, the summary and the
//! exit status.
//!
//! Exit status, first that applies: [`EXIT_VIOLATION`] when the policy was violated, or when an
//! enforce run (one with deny rules or `--fail-on`) lost calls; [`EXIT_REPORT`] when the report
//! or the to-do list could not be written after the command ran; else the command's own status.
//! Before the command runs: 2 (`EXIT_USAGE`) for bad flags, policies and output paths,
//! [`EXIT_NOT_FOUND`] / [`EXIT_NOT_EXECUTABLE`] when the command cannot be started.

use crate::adapters;
use crate::cli::RunArgs;
use crate::engine::{self, preload, seccomp};
use crate::outputs;
use crate::report::{self, KilledEntry, RunInfo, render};
use crate::rundir::{ENV_RUN_DIR, RunDir};
use crate::say;
use crate::{policy, supervise};
use anyhow::{Context, Result};
use nettrap_core::policy::{FLAG_SECCOMP_BACKSTOP, FLAG_THREAD_NAMES};
use std::process::Command;

/// Exit status when the command passed (or failed) but the policy was violated: a call was
/// denied, or a call in a `--fail-on` category was recorded; or when an enforce run lost calls
/// (records dropped or torn, calls no engine decided, an unreadable event log), which may have
/// been denied ones. Beats every later error.
pub const EXIT_VIOLATION: u8 = 86;
/// Exit status when the command ran but the report or the to-do list could not be written (the
/// summary is still printed). A violation still exits [`EXIT_VIOLATION`].
pub const EXIT_REPORT: u8 = 87;
/// Exit status when the command cannot be found, or cannot be executed (as in shells).
pub const EXIT_NOT_FOUND: u8 = 127;
pub const EXIT_NOT_EXECUTABLE: u8 = 126;

pub fn run(args: RunArgs) -> Result<u8> {
    // The seccomp probe's child installs its filter while the policy is loaded.
    let probe = engine::start_probe(args.engine);
    let policy = policy::load(&args.policy)?;
    let mut compiled = policy.compile()?;
    // Before the per-run flags (engine, runner): shards of one suite share it.
    let fingerprint = policy.fingerprint(&compiled);
    let plan = engine::plan(args.engine, probe)?;
    if plan.preload && plan.seccomp {
        compiled.flags |= FLAG_SECCOMP_BACKSTOP;
    }
    // Before anything runs: an output that cannot be written fails now, not after the suite.
    let report_path = outputs::resolve(&args.report);
    let todo_arg = args
        .todo
        .clone()
        .unwrap_or_else(|| args.report.with_file_name("nettrap-todo.md"));
    let todo_path = outputs::resolve(&todo_arg);
    for (path, what) in [(&report_path, "report"), (&todo_path, "to-do list")] {
        outputs::check(path)
            .with_context(|| format!("cannot write the {what} to {}", path.display()))?;
    }
    // A missing or corrupt baseline fails now, before the suite runs.
    let baseline = match &args.baseline {
        Some(path) => Some((path.clone(), report::baseline::load(path)?)),
        None => None,
    };
    // A run with a baseline fails on what is new: calls lost may have been new ones.
    let enforces = policy.enforces() || baseline.is_some();
    let formats = report::formats::run_specs(&args.formats, args.junit.as_deref());
    report::formats::check_run(&formats)?;
    let runner = args.runner.or_else(|| adapters::detect(&args.command));
    // libtest runs each test on a thread named after it: the engines record thread names.
    if runner == Some(adapters::Runner::Cargo) {
        compiled.flags |= FLAG_THREAD_NAMES;
    }
    // Before any thread (the supervisor's).
    let blocked = supervise::block_signals();
    let mut dir = RunDir::create(&compiled)?;

    let installed = preload::install()?;
    // Runner adapters that rewrite the command: `go test` runs its test binaries through
    // `nettrap go-exec`.
    let rewritten = std::env::current_exe()
        .ok()
        .filter(|_| runner != Some(adapters::Runner::None))
        .and_then(|exe| adapters::go::rewrite(&args.command, &exe));
    // `--runner go` for a command that runs `go test` itself (make, a script, gotestsum): the
    // same through GOFLAGS.
    let go_by_flags = rewritten.is_none()
        && runner == Some(adapters::Runner::Go)
        && !adapters::go::is_go(&args.command[0]);
    let command = rewritten.unwrap_or_else(|| args.command.clone());
    let mut cmd = Command::new(&command[0]);
    // A test id inherited from outside (nettrap run from inside another run's test) is not a
    // test of this run.
    cmd.args(&command[1..])
        .env(ENV_RUN_DIR, dir.path())
        // Where shims with no descriptor left send their count of unobserved calls.
        .env("NETTRAP_LAUNCHER_PID", std::process::id().to_string())
        .env_remove("NETTRAP_TEST");
    if plan.preload {
        preload::configure(&mut cmd, &installed.shim);
    }
    adapters::configure(&mut cmd, &installed.dir, runner);
    let go_by_flags = go_by_flags && adapters::go::configure_goflags(&mut cmd);
    // `cargo test` and nextest run test binaries through `nettrap cargo-exec` (the target
    // runner).
    if matches!(
        runner,
        Some(adapters::Runner::Cargo | adapters::Runner::Nextest)
    ) && let Ok(exe) = std::env::current_exe()
    {
        adapters::cargo::configure(&mut cmd, &exe);
    }
    let mut hand_off = None;
    let supervisor = if plan.seccomp {
        let prepared = seccomp::prepare().context("cannot prepare the seccomp filter")?;
        hand_off = Some(prepared.hand_off());
        // Every enforce run (deny rules or --fail-on): a connect through io_uring would be
        // neither denied nor recorded.
        let refuse_io_uring = enforces;
        Some(prepared.start(
            crate::rundir::policy_copy(&compiled),
            dir.log(),
            refuse_io_uring,
        )?)
    } else {
        None
    };
    let program = args.command[0].to_string_lossy().into_owned();
    let progress = crate::progress::wanted(args.progress, args.quiet)
        .then(|| crate::progress::start(dir.path(), &compiled));
    let result = supervise::run(cmd, hand_off.as_ref(), &blocked, || dir.grow());
    // NETTRAP_TIMINGS=1|2: the report step's time and peak memory on stderr (src/timings.rs).
    let mut timings = crate::timings::Timings::start();
    if let Some(p) = progress {
        p.stop();
    }
    // A supervisor that failed while the command ran answered no more calls: a loss.
    let supervisor_error = supervisor.and_then(|s| s.stop());
    timings.mark("supervisor stop");
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            let (why, code) = match e.kind() {
                std::io::ErrorKind::NotFound => ("command not found".to_string(), EXIT_NOT_FOUND),
                std::io::ErrorKind::PermissionDenied => {
                    ("permission denied".to_string(), EXIT_NOT_EXECUTABLE)
                }
                _ => (e.to_string(), EXIT_NOT_EXECUTABLE),
            };
            say!("nettrap: error: cannot run `{program}`: {why}");
            return Ok(code);
        }
    };

    let status = outcome.status;
    if !outcome.unkillable.is_empty() {
        let list: Vec<String> = outcome
            .unkillable
            .iter()
            .map(|k| format!("{} `{}`", k.pid, k.cmdline))
            .collect();
        say!(
            "nettrap: warning: {} {} did not end after SIGKILL and are left behind: {}",
            list.len(),
            report::plural(list.len() as u64, "process", "processes"),
            list.join(", ")
        );
    }
    let killed = outcome
        .killed
        .iter()
        .map(|k| KilledEntry {
            pid: k.pid,
            cmdline: k.cmdline.clone(),
            signal: k.signal.as_str().into(),
            reason: match k.why {
                supervise::Why::LeftRunning => "left_running",
                supervise::Why::SecondInterrupt => "second_interrupt",
            }
            .into(),
        })
        .collect();
    let info = RunInfo {
        command: args
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        engine: plan.name().into(),
        command_exit_code: status.code as i32,
        runner: runner.map(|r| r.name().to_string()),
        seccomp: plan.seccomp,
        killed,
        // An unreadable log costs the calls, not the report: it counts as a loss.
        log_error: None,
        supervisor_error,
        unobserved: outcome.unobserved,
    };
    let mut timeline = crate::attribution::Timeline::read(dir.path());
    if go_by_flags && !timeline.runners.contains("go") {
        timeline.adapter_failures.push(
            "go adapter: no Go test binary ran through it (a `-exec` on `go test`'s own command line replaces the one nettrap sets in GOFLAGS)"
                .into(),
        );
    }
    timings.mark("read timeline");
    let mut report = report::build(&policy, &compiled, &dir, timeline, info);
    timings.mark("decode event log and build the report (two walks: attribute, group)");
    // The run directory is read: it goes (and the log's blocks are freed) before the outputs
    // are written.
    dir.release();
    timings.mark("remove the run directory");
    if let Some(e) = &report.lost.log_error
        && args.quiet
    {
        say!("nettrap: error: cannot read the event log ({e}): the report holds no calls");
    }
    report.policy_fingerprint = Some(fingerprint);
    report.enforce = enforces;
    // With a baseline, what is new fails the run, and only that.
    let fails = match &baseline {
        Some((path, entries)) => report::baseline::apply(&mut report, path, entries),
        None => report::failure(report::violation(&report), report::unverified(&report)),
    };
    timings.mark("baseline and verdict");
    let exit_for = |write_failed: bool| {
        if fails.is_some() {
            EXIT_VIOLATION
        } else if write_failed {
            EXIT_REPORT
        } else {
            status.code
        }
    };

    // Files first: a closed stderr or a Ctrl-C must not cost the report. The to-do list before
    // the report, so that the report's exit code accounts for it.
    let mut failed = Vec::new();
    let todo = render::todo(&report);
    timings.mark("render to-do list");
    let todo_written = outputs::write(&todo_path, todo.as_bytes())
        .map_err(|e| {
            failed.push(format!(
                "cannot write the to-do list to {}: {e}",
                todo_path.display()
            ))
        })
        .is_ok();
    drop(todo);
    timings.mark("write to-do list");
    // The other renderings next (they show the exit code as it stands), the report last.
    report.exit_code = exit_for(!failed.is_empty()) as i32;
    failed.extend(report::formats::write_run(
        &report,
        &formats,
        args.junit.as_deref(),
    ));
    report.exit_code = exit_for(!failed.is_empty()) as i32;
    timings.mark("other formats");
    let report_written = outputs::write_with(&report_path, |w| {
        serde_json::to_writer_pretty(&mut *w, &report).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    })
    .map_err(|e| {
        failed.push(format!(
            "cannot write the report to {}: {e}",
            report_path.display()
        ))
    })
    .is_ok();
    timings.mark("render and write report JSON");
    let exit = exit_for(!failed.is_empty());
    if !args.quiet {
        say!("{}", render::summary(&report).trim_end());
        let mut written = Vec::new();
        if report_written {
            written.push(format!("report: {}", args.report.display()));
        }
        if todo_written {
            written.push(format!("to-do list: {}", todo_arg.display()));
        }
        if !written.is_empty() {
            say!("nettrap: {}", written.join(", "));
        }
    }
    if args.quiet {
        // The summary would have said it; a run whose adapter failed says it even when quiet.
        for why in &report.adapter_failures {
            say!("nettrap: warning: {why}; its tests are attributed through NETTRAP_TEST only");
        }
    }
    for f in &failed {
        say!("nettrap: error: {f}");
    }
    let own = match status.signal {
        Some(sig) => format!("was killed by signal {sig}"),
        None => format!("exited {}", status.code),
    };
    if let Some(what) = &fails {
        say!("nettrap: {what}; the command itself {own}; exiting {EXIT_VIOLATION}");
    } else if !failed.is_empty() {
        let n = failed.len() as u64;
        say!(
            "nettrap: {n} {} not written; the command itself {own}; exiting {EXIT_REPORT}",
            report::plural(n, "output", "outputs")
        );
    }
    for line in timings.lines() {
        say!("{line}");
    }
    Ok(exit)
}
