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
//!
//! The entry point is nettrap's own (`no_main`, see `main`): Rust's runtime start-up
//! would also locate the main thread's stack through glibc, which reads all of
//! `/proc/self/maps` (~40 us of every run), only to print a message on a stack overflow.

// Unit tests get the test harness's own `main`.
#![cfg_attr(not(test), no_main)]

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

/// The process's entry point, called by the C runtime (see the crate's docs): what Rust's
/// start-up and exit do around `fn main` that matters here, done here. Descriptors 0-2 that
/// are closed are opened on `/dev/null` (as Rust does: a file nettrap opens must never land
/// on one and be written to as stdout); SIGPIPE is ignored (as Rust does: a write to a closed
/// pipe is an error, not death; children get it back to default); a panic exits 101 after the
/// panic hook printed it; stdout is flushed before exiting. Rust's handler that names a stack
/// overflow is not installed: one ends with a plain SIGSEGV.
#[cfg(not(test))]
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    for fd in 0..3 {
        // SAFETY: fcntl and open with valid arguments; the lowest free descriptor is `fd`.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
                && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) != fd
            {
                libc::abort();
            }
        }
    }
    // SAFETY: setting a signal's disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // The panic hook has printed the panic; Rust's runtime exits 101 after one.
    let code = std::panic::catch_unwind(run_main).unwrap_or(101);
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    code.into()
}

#[cfg_attr(test, allow(dead_code))]
fn run_main() -> u8 {
    let cli = match cli::Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if e.kind() == ErrorKind::DisplayVersion {
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(about::version_text().as_bytes());
                return 0;
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
            return EXIT_USAGE;
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
        Ok(code) => code,
        Err(e) => {
            say!("nettrap: error: {e:#}");
            EXIT_USAGE
        }
    }
}
