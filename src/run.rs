//! `nettrap run`: load the policy, prepare the run directory and the engine, run the command,
//! then turn the event log into the report, the to-do list, the summary and the exit status.

use crate::adapters;
use crate::cli::RunArgs;
use crate::engine::{self, preload, seccomp};
use crate::report::{self, RunInfo, render};
use crate::rundir::{ENV_RUN_DIR, RunDir};
use crate::say;
use crate::{policy, supervise};
use anyhow::{Context, Result};
use nettrap_core::policy::{Action, FLAG_SECCOMP_BACKSTOP, FLAG_THREAD_NAMES};
use std::process::Command;

/// Exit status when the command passed (or failed) but the policy was violated: a call was
/// denied, or a call in a `--fail-on` category was recorded.
pub const EXIT_VIOLATION: u8 = 86;
/// Exit status when the command cannot be found, or cannot be executed (as in shells).
pub const EXIT_NOT_FOUND: u8 = 127;
pub const EXIT_NOT_EXECUTABLE: u8 = 126;

pub fn run(args: RunArgs) -> Result<u8> {
    let policy = policy::load(&args)?;
    let mut compiled = policy.compile()?;
    // Probing forks: before any thread exists.
    let plan = engine::plan(args.engine)?;
    if plan.preload && plan.seccomp {
        compiled.flags |= FLAG_SECCOMP_BACKSTOP;
    }
    let runner = args.runner.or_else(|| adapters::detect(&args.command));
    // libtest runs each test on a thread named after it: the engines record thread names.
    if runner == Some(adapters::Runner::Cargo) {
        compiled.flags |= FLAG_THREAD_NAMES;
    }
    // Before any thread (the run directory starts one).
    let blocked = supervise::block_signals();
    let dir = RunDir::create(&compiled)?;

    let installed = preload::install()?;
    // Runner adapters that rewrite the command: `go test` runs its test binaries through
    // `nettrap go-exec`.
    let command = std::env::current_exe()
        .ok()
        .filter(|_| runner != Some(adapters::Runner::None))
        .and_then(|exe| adapters::go::rewrite(&args.command, &exe))
        .unwrap_or_else(|| args.command.clone());
    let mut cmd = Command::new(&command[0]);
    // A test id inherited from outside (nettrap run from inside another run's test) is not a
    // test of this run.
    cmd.args(&command[1..])
        .env(ENV_RUN_DIR, dir.path())
        .env_remove("NETTRAP_TEST");
    if plan.preload {
        preload::configure(&mut cmd, &installed.shim);
    }
    adapters::configure(&mut cmd, &installed.dir, runner);
    // `cargo test` and nextest run test binaries through `nettrap cargo-exec` (the target
    // runner).
    if matches!(
        runner,
        Some(adapters::Runner::Cargo | adapters::Runner::Nextest)
    ) && let Ok(exe) = std::env::current_exe()
    {
        adapters::cargo::configure(&mut cmd, &exe);
    }
    let supervisor = if plan.seccomp {
        let prepared = seccomp::prepare().context("cannot prepare the seccomp filter")?;
        prepared.attach(&mut cmd);
        let refuse_io_uring = policy.rules.iter().any(|r| r.action == Action::Deny);
        Some(prepared.start(compiled.clone(), dir.log(), refuse_io_uring)?)
    } else {
        None
    };
    let program = args.command[0].to_string_lossy().into_owned();
    let result = supervise::run(cmd, &blocked);
    if let Some(s) = supervisor {
        s.stop();
    }
    let status = match result {
        Ok(s) => s,
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

    let events = dir.read_events()?;
    let info = RunInfo {
        command: args
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        engine: plan.name().into(),
        command_exit_code: status.code as i32,
        runner: runner.map(|r| r.name().to_string()),
    };
    let timeline = crate::attribution::Timeline::read(dir.path());
    let mut report = report::build(&policy, &compiled, events, timeline, info);
    let violation = report::violation(&report);
    let exit = if violation.is_some() {
        EXIT_VIOLATION
    } else {
        status.code
    };
    report.exit_code = exit as i32;

    let todo_path = args
        .todo
        .clone()
        .unwrap_or_else(|| args.report.with_file_name("nettrap-todo.md"));
    // Files first: a closed stderr or a Ctrl-C must not cost the report.
    let json = serde_json::to_string_pretty(&report)? + "\n";
    std::fs::write(&args.report, json)
        .with_context(|| format!("cannot write the report to {}", args.report.display()))?;
    std::fs::write(&todo_path, render::todo(&report))
        .with_context(|| format!("cannot write the to-do list to {}", todo_path.display()))?;
    if !args.quiet {
        say!("{}", render::summary(&report).trim_end());
        say!(
            "nettrap: report: {}, to-do list: {}",
            args.report.display(),
            todo_path.display()
        );
    }
    if let Some(why) = violation {
        let own = match status.signal {
            Some(sig) => format!("was killed by signal {sig}"),
            None => format!("exited {}", status.code),
        };
        say!(
            "nettrap: policy violated ({why}); the command itself {own}; exiting {EXIT_VIOLATION}"
        );
    }
    Ok(exit)
}
