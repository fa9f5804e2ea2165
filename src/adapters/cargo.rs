//! The `cargo test` and cargo-nextest adapter: tells the attribution timeline which Rust test
//! ran, with its outcome, and lets the report tie each call to its test.
//!
//! Cargo and nextest run every test binary through the host target's *runner*. `configure`
//! sets `CARGO_TARGET_<HOST TRIPLE>_RUNNER` to `<nettrap> cargo-exec`. A runner the user set,
//! in that variable or in cargo's configuration files (`config_runner`), is chained:
//! `cargo-exec` runs `<their runner> <binary> <args>`. `exec_main` then
//! sees each invocation and picks one of three ways:
//!
//! - **libtest under `cargo test`**: runs the binary with its stdout through a pipe, copies
//!   every byte to its own stdout as soon as it is read (the user sees what they always see),
//!   and parses libtest's lines (`test NAME ... ok|FAILED|ignored`, `test NAME - should panic
//!   ... ok`). It writes a `threads` event for the binary's process (see
//!   `src/attribution/SPEC.md`), an `end` per result (outcome `passed`, `failed`, `skipped`),
//!   and, when libtest runs one test at a time (`--test-threads=1`, or one CPU), a `start` per
//!   `test NAME ... ` line, which libtest prints before the test runs. Calls are tied to tests
//!   by the calling thread's name (libtest names each test's thread after it; Rust 1.95 does so
//!   with one thread too): the engines record it (`FLAG_THREAD_NAMES`) and
//!   `attribution::Timeline::by_thread_name` joins it; a process a test starts (`Command`:
//!   `posix_spawnp`) is tied to the thread that started it by the shim's `spawn` event. With
//!   `-q` / `--format terse` libtest
//!   prints one character per test: the tests come from `<binary> --list --format terse` run
//!   first with the same selection (`Terse`). `--format json` (unstable, nightly only) is not
//!   read: no test is known and calls stay unattributed.
//! - **nextest's process per test** (`NEXTEST` set, `--exact`): writes `start` before spawning
//!   the binary, `end` after it exits (0: passed, else failed) with the duration, and sets
//!   `NETTRAP_TEST` to the test's id in the binary's environment, so both engines (and the
//!   test's subprocesses) attribute its calls.
//! - anything else passes through untouched (no events): listings (`--list`, which nextest
//!   runs through the runner too), doc-tests (rustdoc runs each through the runner as
//!   `rustdoctest*/rust_out`, no name to give it: their calls stay unattributed, named by
//!   process), and runs outside `nettrap run`.
//!
//! Test ids are `<binary id> <test name>` on both paths, as nextest shows them:
//! `nettrap-rust-fixture net::search_index_a` (a library's unit tests: the package name),
//! `nettrap-rust-fixture::it kafka_produce` (an integration test target). Under nextest the
//! binary id is its `NEXTEST_BINARY_ID`; under `cargo test` it is rebuilt from
//! `CARGO_PKG_NAME` and the binary's file name, which keeps a target's `-` as `_` and cannot
//! tell a binary's unit tests from the library's (`pkg`, where nextest says `pkg::bin/pkg`).

use super::go::{self, Timeline};
use crate::attribution::now_ns;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

/// The host's target triple (set by build.rs).
pub const HOST_TRIPLE: &str = env!("NETTRAP_HOST_TRIPLE");
/// Where `configure` keeps a runner the user had set, for `cargo-exec` to chain.
const ENV_CHAIN: &str = "NETTRAP_CARGO_CHAIN";
/// Longest test id written to the timeline (lines stay under 4 KiB).
const ID_MAX: usize = 1000;
/// Longer output lines are not libtest's: not parsed.
const LINE_MAX: usize = 16 * 1024;

/// `CARGO_TARGET_<TRIPLE>_RUNNER` for the host.
pub fn runner_var() -> String {
    format!(
        "CARGO_TARGET_{}_RUNNER",
        HOST_TRIPLE.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// Makes cargo (and nextest) run test binaries through `<nettrap_exe> cargo-exec`, chaining a
/// runner already set in the environment. Cargo splits the variable at spaces: a nettrap path
/// with a space in it cannot be used (the adapter then stays off, and says so).
pub fn configure(cmd: &mut Command, nettrap_exe: &Path) {
    let var = runner_var();
    let Some(exe) = nettrap_exe.to_str().filter(|e| !e.contains(' ')) else {
        crate::say!(
            "nettrap: cargo adapter: the path of nettrap ({}) has a space, which cargo's runner setting cannot hold; Rust tests are attributed through NETTRAP_TEST only",
            nettrap_exe.display()
        );
        return;
    };
    let user = std::env::var_os(&var)
        .filter(|v| !v.is_empty())
        .map(|v| v.to_string_lossy().into_owned())
        .or_else(|| std::env::current_dir().ok().and_then(|d| config_runner(&d)));
    if let Some(user) = user {
        cmd.env(ENV_CHAIN, user);
    }
    cmd.env(var, format!("{exe} cargo-exec"));
}

/// The runner cargo's configuration files give the host (`[target.<triple>] runner`, or a
/// `[target.'cfg(...)']` table whose predicate holds here), as cargo reads them: from `dir` up,
/// then `$CARGO_HOME`; the nearest file wins. Our own runner setting overrides it, so
/// `cargo-exec` runs the binary through it instead.
fn config_runner(dir: &Path) -> Option<String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let mut files: Vec<std::path::PathBuf> = dir
        .ancestors()
        .flat_map(|d| [d.join(".cargo/config.toml"), d.join(".cargo/config")])
        .collect();
    if let Some(home) = home {
        files.extend([home.join("config.toml"), home.join("config")]);
    }
    files.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        let table: toml::Table = toml::from_str(&text).ok()?;
        let targets = table.get("target")?.as_table()?;
        let runner = |t: &toml::Value| -> Option<String> {
            match t.get("runner")? {
                toml::Value::String(s) => Some(s.clone()),
                toml::Value::Array(a) => Some(
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                _ => None,
            }
        };
        targets.get(HOST_TRIPLE).and_then(runner).or_else(|| {
            targets
                .iter()
                .filter(|(k, _)| {
                    k.strip_prefix("cfg(")
                        .is_some_and(|c| cfg_holds(c.trim_end_matches(')')))
                })
                .find_map(|(_, t)| runner(t))
        })
    })
}

/// Whether a `cfg(...)` predicate (its inside) holds for the host: `unix`, `target_os = "linux"`,
/// `target_arch`, `target_family`, `target_env`, `target_pointer_width`, `all`, `any`, `not`.
fn cfg_holds(expr: &str) -> bool {
    let expr = expr.trim();
    let args = |inner: &str| -> Vec<String> {
        let (mut depth, mut start, mut out) = (0, 0, Vec::new());
        for (i, c) in inner.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(inner[start..i].to_string());
                    start = i + 1;
                }
                _ => {}
            }
        }
        if !inner[start..].trim().is_empty() {
            out.push(inner[start..].to_string());
        }
        out
    };
    for (op, all) in [("all(", true), ("any(", false)] {
        if let Some(inner) = expr.strip_prefix(op).and_then(|e| e.strip_suffix(')')) {
            let parts = args(inner);
            return if all {
                parts.iter().all(|p| cfg_holds(p))
            } else {
                parts.iter().any(|p| cfg_holds(p))
            };
        }
    }
    if let Some(inner) = expr.strip_prefix("not(").and_then(|e| e.strip_suffix(')')) {
        return !cfg_holds(inner);
    }
    let (key, value) = match expr.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
        None => (expr, None),
    };
    let host = |k: &str| -> Option<String> {
        Some(match k {
            "target_os" => std::env::consts::OS.into(),
            "target_family" => std::env::consts::FAMILY.into(),
            "target_arch" => std::env::consts::ARCH.into(),
            "target_env" => if cfg!(target_env = "gnu") {
                "gnu"
            } else if cfg!(target_env = "musl") {
                "musl"
            } else {
                ""
            }
            .into(),
            "target_pointer_width" => (usize::BITS).to_string(),
            "target_endian" => if cfg!(target_endian = "little") {
                "little"
            } else {
                "big"
            }
            .into(),
            _ => return None,
        })
    };
    match value {
        None => key == std::env::consts::FAMILY || key == std::env::consts::OS,
        Some(v) => host(key).is_some_and(|h| h == v),
    }
}

/// How `cargo-exec` handles one invocation.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    PassThrough,
    /// `cargo test`: a libtest binary running (some of) its tests; how many at a time, and
    /// whether it prints one character per test (`-q`, `--format terse`) instead of names.
    Libtest {
        threads: usize,
        terse: bool,
    },
    /// nextest: one test, by name.
    Nextest {
        name: String,
    },
}

/// libtest options that take a value as the next argument.
const VALUE_FLAGS: &[&str] = &[
    "--test-threads",
    "--logfile",
    "--skip",
    "--color",
    "--format",
    "--shuffle-seed",
    "-Z",
];

fn mode(binary: &Path, args: &[OsString], nextest: bool, default_threads: usize) -> Mode {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let doctest = binary.file_name().is_some_and(|n| n == "rust_out")
        || binary
            .components()
            .any(|c| c.as_os_str().as_bytes().starts_with(b"rustdoctest"));
    if doctest || args.iter().any(|a| a == "--list") {
        return Mode::PassThrough;
    }
    let mut positional = Vec::new();
    let mut threads = None;
    let (mut quiet, mut format) = (false, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--test-threads=") {
            threads = v.parse().ok();
        } else if a == "--test-threads" {
            threads = it.next().and_then(|v| v.parse().ok());
        } else if a == "-q" || a == "--quiet" {
            quiet = true;
        } else if let Some(v) = a.strip_prefix("--format=") {
            format = Some(v.to_string());
        } else if a == "--format" {
            format = it.next().cloned();
        } else if VALUE_FLAGS.contains(&a.as_str()) {
            it.next();
        } else if a == "--" {
            positional.extend(it.by_ref().cloned());
        } else if !a.starts_with('-') {
            positional.push(a.clone());
        }
    }
    if nextest && args.iter().any(|a| a == "--exact") && positional.len() == 1 {
        return Mode::Nextest {
            name: positional.remove(0),
        };
    }
    // As libtest decides: `--format` wins over `--quiet`.
    let terse = match format.as_deref() {
        None => quiet,
        Some(f) => f == "terse",
    };
    Mode::Libtest {
        threads: threads.unwrap_or(default_threads).max(1),
        terse,
    }
}

/// The arguments of `args` that choose which tests run, for the `--list` that names them in
/// terse mode: filters, `--exact`, `--skip`, `--ignored`, `--include-ignored`, `-Z`.
fn selection(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if matches!(
            s.as_ref(),
            "--exact" | "--ignored" | "--include-ignored" | "--exclude-should-panic"
        ) || s.starts_with("--skip=")
            || s.starts_with("-Zunstable")
        {
            out.push(a.clone());
        } else if s == "--skip" || s == "-Z" {
            out.push(a.clone());
            out.extend(it.next().cloned());
        } else if s == "--" {
            out.extend(it.by_ref().cloned());
        } else if VALUE_FLAGS.contains(&s.as_ref()) {
            it.next();
        } else if !s.starts_with('-') {
            out.push(a.clone());
        }
    }
    out
}

/// The test names `<argv> --list --format terse <extra>` prints (`name: test`, `name: bench`);
/// `None` if the listing fails.
fn list(argv: &[OsString], selection: &[OsString], extra: &[&str]) -> Option<Vec<String>> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .args(["--list", "--format", "terse"])
        .args(selection)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.strip_suffix(": test")
                    .or_else(|| l.strip_suffix(": bench"))
                    .map(String::from)
            })
            .collect(),
    )
}

/// The binary id (see the module docs) of a test binary.
fn binary_id(binary: &Path) -> String {
    if let Some(id) = std::env::var("NEXTEST_BINARY_ID")
        .ok()
        .filter(|i| !i.is_empty())
    {
        return id;
    }
    let file = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // `<crate name>-<16 hex digits>` in target/*/deps.
    let stem = match file.rsplit_once('-') {
        Some((s, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            s.to_string()
        }
        _ => file,
    };
    match std::env::var("CARGO_PKG_NAME")
        .ok()
        .filter(|p| !p.is_empty())
    {
        Some(pkg) if pkg.replace('-', "_") == stem => pkg,
        Some(pkg) => format!("{pkg}::{stem}"),
        None => stem,
    }
}

fn cut(mut id: String) -> String {
    if id.len() > ID_MAX {
        let mut at = ID_MAX;
        while !id.is_char_boundary(at) {
            at -= 1;
        }
        id.truncate(at);
    }
    id
}

/// `nettrap cargo-exec <binary> <args...>`; returns the exit status.
pub fn exec_main(args: Vec<OsString>) -> u8 {
    let chain: Vec<OsString> = std::env::var(ENV_CHAIN)
        .unwrap_or_default()
        .split_ascii_whitespace()
        .map(OsString::from)
        .collect();
    let Some((binary, rest)) = args.split_first() else {
        let _ = writeln!(
            std::io::stderr(),
            "nettrap: cargo-exec: usage: nettrap cargo-exec BINARY [ARGS...]"
        );
        return crate::EXIT_USAGE;
    };
    let argv: Vec<OsString> = chain.iter().chain(&args).cloned().collect();
    let Some(run_dir) = std::env::var_os(crate::rundir::ENV_RUN_DIR) else {
        return go::exec_plain_as("cargo", &argv);
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = std::env::var("RUST_TEST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(threads);
    let nextest = std::env::var_os("NEXTEST").is_some();
    let path = Path::new(&run_dir).join(crate::attribution::TIMELINE);
    let file = match Timeline::open(&path) {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "nettrap: cargo adapter: cannot open {}: {e}",
                path.display()
            );
            return go::exec_plain_as("cargo", &argv);
        }
    };
    let timeline = Timeline {
        path,
        file: Some(file),
        pid: 0,
    };
    let id = binary_id(Path::new(binary));
    match mode(Path::new(binary), rest, nextest, threads) {
        Mode::PassThrough => go::exec_plain_as("cargo", &argv),
        Mode::Nextest { name } => nextest_one(&argv, cut(format!("{id} {name}")), timeline),
        Mode::Libtest { threads, terse } => {
            let listed = terse.then(|| {
                let chosen = selection(rest);
                let prefix = &argv[..argv.len() - rest.len()];
                let all = list(prefix, &chosen, &[]);
                // Ignored tests do not run unless asked: they end skipped.
                let runs_ignored = rest
                    .iter()
                    .any(|a| a == "--ignored" || a == "--include-ignored");
                let ignored = if runs_ignored {
                    Some(Vec::new())
                } else {
                    list(prefix, &chosen, &["--ignored"])
                };
                all.zip(ignored)
            });
            let terse = match listed {
                None => None,
                Some(Some((all, ignored))) => Some(Terse::new(all, ignored)),
                Some(None) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "nettrap: cargo adapter: cannot list the tests of {} (terse output names none): its calls are unattributed",
                        binary.to_string_lossy()
                    );
                    None
                }
            };
            libtest(&argv, &id, threads == 1, terse, timeline)
        }
    }
}

/// nextest's process per test: start, the binary (with `NETTRAP_TEST`), end.
/// Starts the test binary; on failure says why in one line and gives the exit status a shell
/// would (127 not found, 126 not executable).
fn spawn(cmd: &mut Command, program: &OsString) -> Result<std::process::Child, u8> {
    cmd.spawn().map_err(|e| {
        let _ = writeln!(
            std::io::stderr(),
            "nettrap: cargo adapter: cannot run {}: {e}",
            program.to_string_lossy()
        );
        if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        }
    })
}

fn nextest_one(argv: &[OsString], id: String, mut timeline: Timeline) -> u8 {
    use serde_json::json;
    let t0 = now_ns();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env("NETTRAP_TEST", &id);
    let mut child = match spawn(&mut cmd, &argv[0]) {
        Ok(c) => c,
        Err(code) => return code,
    };
    go::forward_signals(child.id());
    timeline.pid = child.id();
    timeline.write(json!({"ev": "start", "t": t0, "test": id, "runner": "nextest"}));
    timeline.write(json!({"ev": "process", "t": t0, "runner": "nextest", "role": "nextest"}));
    let status = go::wait_child(&mut child);
    let t1 = now_ns();
    let passed = status.is_some_and(|s| s.success());
    timeline.write(json!({
        "ev": "end", "t": t1, "test": id,
        "outcome": if passed { "passed" } else { "failed" },
        "duration_s": t1.saturating_sub(t0) as f64 / 1e9,
    }));
    status.map_or(1, go::exit_like)
}

/// What one line of libtest's output says.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// `test NAME ... ` and the rest of the line (a result, or the test's own output).
    Test(&'a str, &'a str),
    /// A bare result word on its own line (after a test's own output, one test at a time).
    Result(&'static str),
    Other,
}

fn outcome(word: &str) -> Option<&'static str> {
    let word = word.trim_end();
    match word {
        "ok" => Some("passed"),
        "FAILED" => Some("failed"),
        _ if word == "ignored" || word.starts_with("ignored, ") => Some("skipped"),
        _ => None,
    }
}

fn parse_line(line: &str) -> Line<'_> {
    if let Some(rest) = line.strip_prefix("test ")
        && let Some((name, after)) = rest.split_once(" ... ")
    {
        let name = name.strip_suffix(" - should panic").unwrap_or(name);
        if !name.is_empty() && !name.contains(' ') {
            return Line::Test(name, after);
        }
    }
    match outcome(line) {
        Some(o) => Line::Result(o),
        None => Line::Other,
    }
}

/// Terse output (`-q`, `--format terse`) prints one character per test, no names: the tests
/// come from `--list` (run first, with the same selection), outcomes from the output's
/// `failures:` blocks (`---- NAME stdout ----`, then the indented list of names) and the
/// ignored tests' listing; every test ends when the binary does (so, for tests whose names
/// share their first 15 bytes, a call goes to the first of them in name order, the others
/// named as concurrent).
struct Terse {
    tests: Vec<String>,
    ignored: std::collections::HashSet<String>,
    failed: std::collections::HashSet<String>,
    /// Inside a `failures:` block.
    in_failures: bool,
    /// libtest printed its `test result:` line (it finished its tests).
    finished: bool,
}

impl Terse {
    fn new(tests: Vec<String>, ignored: Vec<String>) -> Terse {
        Terse {
            tests,
            ignored: ignored.into_iter().collect(),
            failed: Default::default(),
            in_failures: false,
            finished: false,
        }
    }

    fn line(&mut self, line: &str) {
        if line.starts_with("test result: ") {
            self.finished = true;
            self.in_failures = false;
        } else if line == "failures:" {
            self.in_failures = true;
        } else if line == "successes:" {
            // `--show-output`: the passed tests' output, in the same `---- NAME` form.
            self.in_failures = false;
        } else if self.in_failures
            && let Some(name) = line
                .strip_prefix("---- ")
                .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            self.failed.insert(name.to_string());
        } else if self.in_failures
            && let Some(name) = line.strip_prefix("    ")
            && !name.starts_with(' ')
        {
            self.failed.insert(name.to_string());
        }
    }

    /// Each listed test's outcome, once the binary ended.
    fn outcomes(&self) -> Vec<(&str, &'static str)> {
        self.tests
            .iter()
            .map(|t| {
                let o = if self.failed.contains(t) {
                    "failed"
                } else if self.ignored.contains(t) {
                    "skipped"
                } else if self.finished {
                    "passed"
                } else {
                    "failed" // the binary died before it finished
                };
                (t.as_str(), o)
            })
            .collect()
    }
}

/// The state of one libtest binary's output.
struct Libtest {
    timeline: Timeline,
    prefix: String,
    sequential: bool,
    /// Every test that reported (or, one at a time, started), in order.
    seen: Vec<String>,
    /// One at a time: the test printed `test NAME ... ` for and not ended yet.
    running: Option<String>,
    /// Whether the start of the incomplete line in the buffer was already stamped.
    started_partial: bool,
    terse: Option<Terse>,
}

impl Libtest {
    fn id(&self, name: &str) -> String {
        cut(format!("{}{name}", self.prefix))
    }

    fn start(&mut self, name: &str, t: u64) {
        let id = self.id(name);
        self.timeline
            .write(serde_json::json!({"ev": "start", "t": t, "test": id, "runner": "cargo"}));
        self.seen.push(id.clone());
        self.running = Some(id);
    }

    fn end(&mut self, id: String, outcome: &str, t: u64) {
        self.timeline.write(serde_json::json!(
            {"ev": "end", "t": t, "test": id, "outcome": outcome, "runner": "cargo"}
        ));
        if !self.seen.contains(&id) {
            self.seen.push(id);
        }
    }

    /// A complete line (without its newline), read at `t`.
    fn line(&mut self, line: &[u8], t: u64) {
        let line = plain_text(line);
        if let Some(terse) = self.terse.as_mut() {
            return terse.line(&line);
        }
        match parse_line(&line) {
            Line::Test(name, after) => {
                let id = self.id(name);
                if self.sequential && self.running.as_deref() != Some(&id) {
                    self.start(name, t);
                }
                if let Some(o) = outcome(after) {
                    self.running = None;
                    self.end(id, o, t);
                }
            }
            Line::Result(o) => {
                if let Some(id) = self.running.take() {
                    self.end(id, o, t);
                }
            }
            Line::Other => {}
        }
    }

    /// The incomplete last line so far: one at a time, `test NAME ... ` is printed before the
    /// test runs, without a newline; stamp its start now.
    fn partial(&mut self, line: &[u8], t: u64) {
        if !self.sequential || self.started_partial {
            return;
        }
        let line = plain_text(line);
        if let Line::Test(name, _) = parse_line(&line) {
            self.start(name, t);
            self.started_partial = true;
        }
    }
}

/// Whether two of this process's descriptors are the same open file (same device and inode).
fn same_file(a: i32, b: i32) -> bool {
    let id = |fd: i32| {
        // SAFETY: fstat writes one stat struct; a zeroed one is valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on a descriptor number; a closed one fails.
        (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
    };
    id(a).is_some_and(|x| Some(x) == id(b))
}

/// A line as text, without the terminal escapes of `--color=always` (`\x1b[32mok\x1b(B\x1b[m`).
fn plain_text(line: &[u8]) -> String {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i] == 0x1b {
            match line.get(i + 1) {
                // CSI: parameters and intermediates, then one final byte in @..~
                Some(b'[') => {
                    i += 2;
                    while i < line.len() && !(0x40..=0x7e).contains(&line[i]) {
                        i += 1;
                    }
                    i += 1;
                }
                // a character-set selection: ESC ( B
                Some(b'(' | b')') => i += 3,
                _ => i += 2,
            }
            continue;
        }
        out.push(line[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `cargo test`'s libtest binary: its output copied through, its lines turned into events.
fn libtest(
    argv: &[OsString],
    binary_id: &str,
    sequential: bool,
    terse: Option<Terse>,
    timeline: Timeline,
) -> u8 {
    use serde_json::json;
    let (read, write) = match go::pipe() {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "nettrap: cargo adapter: cannot create a pipe: {e}"
            );
            return go::exec_plain_as("cargo", argv);
        }
    };
    let mut cmd = Command::new(&argv[0]);
    // Where stdout and stderr are one file (a terminal, `2>&1`), the binary gets one pipe for
    // both, so what it writes to each keeps its order (`--nocapture`).
    if same_file(1, 2)
        && let Ok(err) = write.try_clone()
    {
        cmd.stderr(std::process::Stdio::from(err));
    }
    cmd.args(&argv[1..])
        .stdout(std::process::Stdio::from(write));
    go::install(libc::SIGCHLD, go::child_exited, false);
    let mut child = match spawn(&mut cmd, &argv[0]) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // `cmd` holds the pipe's write end: drop it so the end of the output is seen.
    drop(cmd);
    go::forward_signals(child.id());
    let mut state = Libtest {
        timeline,
        prefix: format!("{binary_id} "),
        sequential,
        seen: Vec::new(),
        running: None,
        started_partial: false,
        terse,
    };
    state.timeline.pid = child.id();
    let t = now_ns();
    // First: the calls of this process are joined by thread name (SPEC.md, `threads`); in
    // terse mode with every test the listing named.
    let listed: Option<Vec<String>> = state
        .terse
        .as_ref()
        .map(|terse| terse.tests.iter().map(|n| state.id(n)).collect());
    let mut threads = json!({"ev": "threads", "t": t, "prefix": state.prefix});
    if let Some(listed) = listed {
        threads["tests"] = listed.into();
    }
    state.timeline.write(threads);
    state
        .timeline
        .write(json!({"ev": "process", "t": t, "runner": "cargo", "role": binary_id}));
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop never closes it.
    let mut stdout = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
    let mut stdout_ok = true;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut skipping = false;
    let fd = read.as_raw_fd();
    let mut draining = false;
    loop {
        if go::CHILD_EXITED.load(Ordering::Relaxed) && !draining {
            // The binary is gone: read what is left without waiting for descendants that may
            // still hold the pipe.
            draining = matches!(child.try_wait(), Ok(Some(_)));
            if draining {
                // SAFETY: fcntl on our own descriptor.
                unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
            }
            go::CHILD_EXITED.store(false, Ordering::Relaxed);
        }
        // SAFETY: read into our buffer, at most its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break; // EAGAIN while draining, or a real error
        }
        if n == 0 {
            break;
        }
        let t = now_ns();
        let chunk = &buf[..n as usize];
        // The user's output first, unchanged.
        if stdout_ok {
            stdout_ok = stdout.write_all(chunk).is_ok();
        }
        // Lines are parsed, not kept: the output already went out. A line longer than libtest's
        // own ever are is the test's output: skipped to its end, never rescanned.
        let mut from = 0;
        while let Some(p) = chunk[from..].iter().position(|&b| b == b'\n') {
            let end = from + p;
            if !skipping {
                pending.extend_from_slice(&chunk[from..end]);
                state.line(&pending, t);
            }
            pending.clear();
            skipping = false;
            state.started_partial = false;
            from = end + 1;
        }
        if !skipping {
            pending.extend_from_slice(&chunk[from..]);
            if pending.len() > LINE_MAX {
                pending.clear();
                skipping = true;
            } else {
                state.partial(&pending, t);
            }
        }
    }
    let t = now_ns();
    if !pending.is_empty() && !skipping {
        let line = std::mem::take(&mut pending);
        state.line(&line, t);
    }
    let status = go::wait_child(&mut child);
    let t = now_ns();
    // A test started and never ended: the binary died inside it.
    if let Some(id) = state.running.take() {
        state.end(id, "failed", t);
    }
    if let Some(terse) = state.terse.take() {
        // Each test ended at some point before this: `late` (no duration from it).
        for (name, outcome) in terse.outcomes() {
            let id = state.id(name);
            state.timeline.write(json!(
                {"ev": "end", "t": t, "test": id, "outcome": outcome, "runner": "cargo", "late": true}
            ));
            if !state.seen.contains(&id) {
                state.seen.push(id);
            }
        }
    }
    let tests = state.seen.clone();
    state
        .timeline
        .write(json!({"ev": "threads", "t": t, "prefix": state.prefix, "tests": tests}));
    status.map_or(1, go::exit_like)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_config_runners_for_the_host() {
        assert!(cfg_holds("unix"));
        assert!(cfg_holds(
            r#"all(target_os = "linux", target_arch = "x86_64")"#
        ));
        assert!(!cfg_holds("windows"));
        assert!(cfg_holds(r#"not(target_os = "macos")"#));
        assert!(cfg_holds(r#"any(windows, target_family = "unix")"#));
        let dir = std::env::temp_dir().join(format!("cargo-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("crate/.cargo")).unwrap();
        std::fs::write(
            dir.join("crate/.cargo/config.toml"),
            "[target.'cfg(windows)']\nrunner = \"wine\"\n[target.'cfg(unix)']\nrunner = [\"valgrind\", \"-q\"]\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("crate/src")).unwrap();
        assert_eq!(
            config_runner(&dir.join("crate/src")).as_deref(),
            Some("valgrind -q")
        );
        std::fs::write(
            dir.join("crate/.cargo/config.toml"),
            format!("[target.{HOST_TRIPLE}]\nrunner = \"sudo -E\"\n"),
        )
        .unwrap();
        assert_eq!(
            config_runner(&dir.join("crate")).as_deref(),
            Some("sudo -E")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn colored_lines_parse_as_plain_ones() {
        assert_eq!(
            plain_text(b"test net::a ... \x1b[32mok\x1b(B\x1b[m"),
            "test net::a ... ok"
        );
        let colored = plain_text(b"test b ... \x1b[31mFAILED\x1b[0m");
        assert!(
            matches!(parse_line(&colored), Line::Test("b", after) if outcome(after) == Some("failed"))
        );
    }

    fn v(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn modes() {
        let bin = Path::new("/t/debug/deps/it-3c230e0f173473e0");
        assert_eq!(
            mode(bin, &v(&["--test-threads", "1", "net"]), false, 4),
            Mode::Libtest {
                threads: 1,
                terse: false
            }
        );
        assert_eq!(
            mode(bin, &v(&["--test-threads=3"]), false, 4),
            Mode::Libtest {
                threads: 3,
                terse: false
            }
        );
        assert_eq!(
            mode(bin, &v(&[]), false, 2),
            Mode::Libtest {
                threads: 2,
                terse: false
            }
        );
        assert_eq!(
            mode(bin, &v(&["net::a", "--nocapture", "--exact"]), true, 2),
            Mode::Nextest {
                name: "net::a".into()
            }
        );
        assert_eq!(
            mode(bin, &v(&["--list", "--format", "terse"]), true, 2),
            Mode::PassThrough
        );
        assert_eq!(
            mode(Path::new("/tmp/rustdoctestAb1/rust_out"), &v(&[]), false, 2),
            Mode::PassThrough
        );
    }

    #[test]
    fn terse_runs_are_listed_and_read() {
        let bin = Path::new("/t/debug/deps/it-3c230e0f173473e0");
        for args in [
            &["--quiet"][..],
            &["-q", "--test-threads", "1"],
            &["--format", "terse"],
            &["--format=terse"],
        ] {
            assert!(
                matches!(
                    mode(bin, &v(args), false, 2),
                    Mode::Libtest { terse: true, .. }
                ),
                "{args:?}"
            );
        }
        assert!(matches!(
            mode(bin, &v(&["-q", "--format", "pretty"]), false, 2),
            Mode::Libtest { terse: false, .. }
        ));
        assert_eq!(
            selection(&v(&[
                "--quiet",
                "net",
                "--test-threads",
                "2",
                "--skip",
                "slow",
                "--exact",
                "--color",
                "never",
                "--include-ignored"
            ])),
            v(&["net", "--skip", "slow", "--exact", "--include-ignored"])
        );
        let mut t = Terse::new(
            vec!["a".into(), "b".into(), "c".into(), "i".into()],
            vec!["i".into()],
        );
        for l in [
            "running 4 tests",
            "..Fi",
            "successes:",
            "---- a stdout ----",
            "failures:",
            "",
            "---- b stdout ----",
            "thread 'b' panicked at src/lib.rs:1:1:",
            "",
            "failures:",
            "    b",
            "",
            "test result: FAILED. 2 passed; 1 failed; 1 ignored",
        ] {
            t.line(l);
        }
        assert_eq!(
            t.outcomes(),
            [
                ("a", "passed"),
                ("b", "failed"),
                ("c", "passed"),
                ("i", "skipped")
            ]
        );
    }

    #[test]
    fn lines() {
        assert_eq!(parse_line("test net::a ... ok"), Line::Test("net::a", "ok"));
        assert_eq!(
            parse_line("test net::p - should panic ... ok"),
            Line::Test("net::p", "ok")
        );
        assert_eq!(
            parse_line("test net::i ... ignored, needs a database"),
            Line::Test("net::i", "ignored, needs a database")
        );
        assert_eq!(outcome("ignored, needs a database"), Some("skipped"));
        assert_eq!(outcome("FAILED"), Some("failed"));
        assert_eq!(parse_line("FAILED"), Line::Result("failed"));
        assert_eq!(parse_line("test result: ok. 1 passed"), Line::Other);
        assert_eq!(parse_line("running 2 tests"), Line::Other);
    }
}
