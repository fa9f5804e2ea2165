//! Command-line arguments.

use crate::engine::Engine;
use clap::{Args, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "nettrap",
    version,
    about = "Find, and control, the tests in a suite that talk to the network"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments (see [`Cli::parse_from_args`]).
    pub fn parse_args() -> Result<Cli, clap::Error> {
        Self::parse_from_args(std::env::args_os().collect())
    }

    /// Parses `args` (the program's name first). `nettrap run ...`, every run's start, is tried
    /// first with a parser of `run`'s arguments alone: clap builds a parser's whole tree of
    /// subcommands and arguments before it parses, which for all of nettrap's cost each run
    /// ~80 us. The same arguments (`RunArgs`'s own) give the same values; anything it does not
    /// accept (bad flags, `--help`) goes to the whole parser, for its exact messages.
    pub fn parse_from_args(args: Vec<OsString>) -> Result<Cli, clap::Error> {
        if let Some(run) = run_alone(&args) {
            return Ok(Cli {
                command: Command::Run(run),
            });
        }
        Cli::try_parse_from(args)
    }
}

/// The parser of `run`'s arguments alone.
fn run_parser() -> clap::Command {
    RunArgs::augment_args(clap::Command::new("run"))
}

/// `args` parsed as `nettrap run ...` by [`run_parser`], if they are that and it accepts them.
fn run_alone(args: &[OsString]) -> Option<RunArgs> {
    if args.get(1)? != "run" {
        return None;
    }
    let matches = run_parser().try_get_matches_from(&args[1..]).ok()?;
    RunArgs::from_arg_matches(&matches).ok()
}

#[derive(Subcommand)]
// Parsed once per process: the size of `run`'s arguments does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run a test command with every outbound connect() of its process tree intercepted
    #[command(after_help = RUN_EXIT_STATUS)]
    Run(RunArgs),
    /// Render a saved report again
    Report(ReportArgs),
    /// Combine the reports of a suite's shards into the report of the whole suite
    Merge(MergeArgs),
    /// Write the baseline `nettrap run --baseline` compares with, or check a report against it
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Print the effective policy (built-in defaults, the policy file, these flags) and where
    /// each part came from
    Config(PolicyArgs),
    /// Print a shell completion script: nettrap completions bash > /etc/bash_completion.d/nettrap
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of nettrap or of one command: nettrap man run > nettrap-run.1
    Man {
        /// The command whose page to print [default: nettrap's own]
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
    /// Run a Go test binary for the `go test` adapter (internal: `go test -exec`)
    #[command(name = "go-exec", hide = true, disable_help_flag = true)]
    GoExec {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run a Rust test binary for the cargo test / nextest adapter (internal: cargo's runner)
    #[command(name = "cargo-exec", hide = true, disable_help_flag = true)]
    CargoExec {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

/// `nettrap run --help`'s account of its exit status (see `run`).
const RUN_EXIT_STATUS: &str = "\
Exit status: the command's own, unless (first that applies)
  86   the policy was violated (a call denied, a --fail-on category's call recorded), or an
       enforce run (one with deny rules or --fail-on) lost calls (log full, torn records,
       calls no engine decided, an unreadable event log)
  87   the report or the to-do list could not be written after the command ran
  2    bad flags, policy file or output path (all checked before the command starts)
  126  the command cannot be executed; 127: not found

Processes the command leaves running get 500 ms, then SIGTERM, then SIGKILL 500 ms later; a
second interrupt (SIGINT, SIGTERM, SIGHUP) kills the whole tree at once.";

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Where to write the JSON report (checked before the command starts, replaced whole)
    #[arg(long, value_name = "FILE", default_value = "nettrap-report.json")]
    pub report: PathBuf,

    /// Where to write the mocking to-do list [default: nettrap-todo.md beside the report]
    #[arg(long, value_name = "FILE")]
    pub todo: Option<PathBuf>,

    /// How calls are intercepted: preload (LD_PRELOAD shim), seccomp (kernel filter and
    /// supervisor), or auto (both; falls back to preload where seccomp is unavailable)
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    pub engine: Engine,

    /// The test runner, where the command does not show it (`none`: no runner adapters; tests
    /// are then known only through the NETTRAP_TEST protocol)
    #[arg(long, value_enum, value_name = "RUNNER")]
    pub runner: Option<crate::adapters::Runner>,

    /// Fail (exit 86) only on offending calls this baseline does not hold (see `nettrap
    /// baseline update`); list them, and the baseline's entries fixed since
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,

    /// Also render the report as F (text, json, markdown, junit, github) into PATH, or onto
    /// stdout after the command ends; repeatable: --format junit=report.xml --format github
    #[arg(long = "format", value_name = "F[=PATH]", value_parser = crate::report::formats::parse_spec)]
    pub formats: Vec<crate::report::formats::FormatSpec>,

    /// The runner's JUnit XML (e.g. pytest --junitxml=FILE): nettrap's findings are added to
    /// its test cases, in place unless --format junit=PATH says where [default: none]
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Do not print the summary
    #[arg(short, long)]
    pub quiet: bool,

    /// Live progress on the terminal's bottom row (kept out of the command's scrolling) and in
    /// its title while the command runs: auto (stderr a terminal, not dumb, no --quiet), always,
    /// never
    #[arg(long, value_enum, default_value_t = Progress::Auto, value_name = "WHEN")]
    pub progress: Progress,

    /// The test command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// The flags that make the policy (`nettrap run`, `nettrap config`).
#[derive(Args)]
pub struct PolicyArgs {
    /// Policy file: a nettrap.toml, or a pyproject.toml's [tool.nettrap] [default: the closest
    /// nettrap.toml or pyproject.toml with [tool.nettrap], from the working directory up]
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Deny calls to these ports, port ranges, categories or HOST[:PORT]s (e.g.
    /// 80,elasticsearch,10.0.0.0/8,'api.*.example:443'); HOST an address, CIDR, host name or
    /// name glob (`*` one label, `**` any)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub deny: Vec<String>,

    /// Record (report, let through) calls to these ports, ranges, categories or HOST[:PORT]s
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub record: Vec<String>,

    /// Allow (expect, do not report as offending) calls to HOST[:PORT]: an address, CIDR, host
    /// name or name glob ('*.internal', '**.svc.cluster.local:443')
    #[arg(long, value_name = "HOST[:PORT]", value_delimiter = ',')]
    pub allow: Vec<String>,

    /// Fail every name lookup that would leave the machine at once (not answered from
    /// /etc/hosts, not localhost), unless a rule allows the name
    #[arg(long)]
    pub deny_dns: bool,

    /// What denied lookups fail with: EAI_NONAME, EAI_AGAIN or EAI_FAIL [default: EAI_NONAME]
    #[arg(long, value_name = "EAI")]
    pub dns_errno: Option<String>,

    /// Fail the run (exit 86) when a call in these categories is recorded
    #[arg(long, value_name = "CATEGORIES", value_delimiter = ',')]
    pub fail_on: Vec<String>,

    /// What happens to calls no rule of the policy decides: record, or deny (everything not
    /// allowed or recorded by a rule fails at once)
    #[arg(long = "default", value_name = "ACTION", value_parser = ["record", "deny"], default_value = "record")]
    pub default_action: String,

    /// errno a denied call fails with (name or number) [default: ECONNREFUSED]
    #[arg(long, value_name = "ERRNO")]
    pub errno: Option<String>,
}

#[derive(Args)]
pub struct ReportArgs {
    /// A report written by `nettrap run`
    pub file: PathBuf,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the output to PATH (atomically) instead of stdout
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// With --format junit: the runner's JUnit XML to add nettrap's findings to (else nettrap
    /// writes a JUnit of its own)
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The summary printed at the end of a run
    Text,
    /// The report itself
    Json,
    /// The mocking to-do list
    Markdown,
    /// JUnit XML: nettrap's own, or the runner's with nettrap's findings added (--junit)
    Junit,
    /// GitHub Actions annotations for denied and --fail-on calls (and a Markdown summary
    /// appended to $GITHUB_STEP_SUMMARY when set)
    Github,
    /// One self-contained HTML page: census, tests, unattributed calls, to-do list
    Html,
}

#[derive(Args)]
pub struct MergeArgs {
    /// Reports of the shards (`nettrap run --report`), in any order
    #[arg(required = true, value_name = "REPORT")]
    pub files: Vec<PathBuf>,

    /// Where to write the merged report (replaced whole)
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "nettrap-report.json"
    )]
    pub output: PathBuf,
}

#[derive(Subcommand)]
pub enum BaselineCommand {
    /// Write the baseline from a report: every offending call's (test, category, host or
    /// address, port, verdict), sorted, one per line
    Update {
        /// The report to take the offending calls from
        #[arg(long, value_name = "FILE", default_value = "nettrap-report.json")]
        report: PathBuf,

        /// Where to write the baseline (replaced whole)
        #[arg(
            short,
            long,
            value_name = "FILE",
            default_value = "nettrap-baseline.json"
        )]
        output: PathBuf,
    },
    /// Check a saved or merged report against a baseline without running anything: the
    /// verdict, listing and exit status (86 when something is new) of `run --baseline`
    Check {
        /// The report to check (a run's, or `nettrap merge`'s of the shards)
        #[arg(long, value_name = "FILE", default_value = "nettrap-report.json")]
        report: PathBuf,

        /// The baseline to check it against
        #[arg(long, value_name = "FILE", default_value = "nettrap-baseline.json")]
        baseline: PathBuf,

        /// Also write the checked report (with its `baseline` findings) here
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    Auto,
    Always,
    Never,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    /// `run`'s own parser gives exactly the matches of the whole parser's `run`, or gives way.
    #[test]
    fn run_alone_matches_the_whole_parser() {
        let cases: &[&[&str]] = &[
            &["nettrap", "run", "--", "true"],
            &[
                "nettrap", "run", "--quiet", "--report", "r.json", "--engine", "preload", "--",
                "x", "1",
            ],
            &[
                "nettrap",
                "run",
                "-q",
                "--deny",
                "redis,http",
                "--allow",
                "a.example:80",
                "--",
                "a",
                "--",
                "-b",
            ],
            &[
                "nettrap",
                "run",
                "--fail-on",
                "x",
                "--default",
                "deny",
                "--errno",
                "EPERM",
                "--todo",
                "t.md",
                "--",
                "c",
            ],
            &[
                "nettrap",
                "run",
                "--format",
                "junit=j.xml",
                "--runner",
                "pytest",
                "--progress",
                "never",
                "--",
                "c",
            ],
            &[
                "nettrap",
                "run",
                "--deny-dns",
                "--dns-errno",
                "EAI_AGAIN",
                "--baseline",
                "b.json",
                "--",
                "c",
            ],
        ];
        for words in cases {
            let args = argv(words);
            let whole = Cli::command().try_get_matches_from(&args).unwrap();
            let (name, sub) = whole.subcommand().unwrap();
            assert_eq!(name, "run");
            let alone = run_parser().try_get_matches_from(&args[1..]).unwrap();
            assert_eq!(&alone, sub, "{words:?}");
            assert!(run_alone(&args).is_some(), "{words:?}");
        }
    }

    /// What `run`'s own parser does not accept goes to the whole parser: its errors and help.
    #[test]
    fn the_rest_goes_to_the_whole_parser() {
        for words in [
            &["nettrap", "run"][..],
            &["nettrap", "run", "--help"],
            &["nettrap", "run", "--version"],
            &["nettrap", "run", "--engine", "nope", "--", "x"],
            &["nettrap", "run", "--no-such-flag", "--", "x"],
            &["nettrap", "report", "r.json"],
            &["nettrap", "--version"],
        ] {
            assert!(run_alone(&argv(words)).is_none(), "{words:?}");
        }
        assert!(Cli::parse_from_args(argv(&["nettrap", "report", "r.json"])).is_ok());
        let e = Cli::parse_from_args(argv(&["nettrap", "run", "--help"]))
            .err()
            .unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(e.to_string().contains("Exit status: the command's own"));
    }
}
