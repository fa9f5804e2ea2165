//! nettrap: find, and control, the tests in a suite that talk to the network.
//!
//! `nettrap run -- CMD` runs a test command with every outbound `connect()` of its process tree
//! intercepted, classified and recorded or denied by policy, then writes a per-test report.
//! `nettrap report FILE` renders a saved report again.
//!
//! The launcher's modules, one concern each: `cli` (arguments), `policy` (sources merged and
//! compiled), `fnv` (the hash of the policy fingerprint and the cache directory's name),
//! `engine` (how calls are intercepted), `adapters` (runner adapters: what each test runner
//! needs so its tests are known), `rundir` (the files a run shares with its processes),
//! `attribution` (which test made each call), `supervise` (the child process, signals, exit
//! status, ending the process tree), `spawn` (starting the command), `report` (the model and
//! its renderings), `outputs` (the report files: checked before the run, written atomically),
//! `run` (the `run` command tying them together).
//!
//! Exit statuses of `nettrap run`: the command's own, or 86 (policy violated, or calls lost in an
//! enforce run), 87 (the report or to-do list could not be written after the command ran), 2
//! (nettrap's own errors before the command ran: flags, policy, output paths), 126/127 (the
//! command cannot be executed / found). See `run`.

mod about;
mod adapters;
mod attribution;
mod cli;
mod engine;
mod errno;
mod fast_hash;
mod fnv;
mod outputs;
mod policy;
mod progress;
mod report;
mod run;
mod rundir;
mod spawn;
mod stale;
mod supervise;
mod timings;

use std::process::ExitCode;

/// Writes a line to stderr, ignoring failure: a closed or full stderr must never abort a run
/// (and lose its report), as `eprintln!` would by panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use say;

/// Exit status for nettrap's own errors: bad flags, a malformed policy file, an output path that
/// cannot be written (checked before the command starts), a corrupt report.
pub const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match cli::Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if e.kind() == ErrorKind::DisplayVersion {
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(about::version_text().as_bytes());
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelp
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                e.exit();
            }
            // clap's first line names the flag; the rest (usage, tips) is noise in CI logs.
            let text = e.to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines.next().unwrap_or("invalid arguments").to_string();
            if first.ends_with(':') {
                // "the following required arguments were not provided:" names them next.
                first = format!("{first} {}", lines.next().unwrap_or(""));
            }
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            say!("nettrap: error: {first} (see 'nettrap --help')");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match cli.command {
        cli::Command::Run(args) => run::run(args),
        cli::Command::Report(args) => report::render::report_command(args),
        cli::Command::Merge(args) => report::merge::merge_command(args),
        cli::Command::Baseline(cmd) => report::baseline::baseline_command(cmd),
        cli::Command::Config(args) => policy::show::config_command(args),
        cli::Command::Completions { shell } => about::completions(shell),
        cli::Command::Man { command } => about::man(command.as_deref()),
        cli::Command::GoExec { args } => Ok(adapters::go::exec_main(args)),
        cli::Command::CargoExec { args } => Ok(adapters::cargo::exec_main(args)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            say!("nettrap: error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
