//! The `go test` adapter: tells the attribution timeline which Go test is running when.
//!
//! A Go test binary runs all its tests in one process, so a call must be joined by time to the
//! test running then. `rewrite` makes `go test` run each test binary through the hidden
//! subcommand `nettrap go-exec` (`go test -exec`); `exec_main` runs the binary with
//! `-test.v=test2json`, whose framed markers (`\x16=== RUN   TestX`, `\x16--- PASS: TestX
//! (0.00s)`, ...) it reads from a pipe, turns into `start`/`pause`/`cont`/`end` events in
//! `$NETTRAP_RUN_DIR/timeline.jsonl` (see `src/attribution/SPEC.md`), and renders back into the
//! output the user asked for (`-json`, `-v` or neither), so `go test` shows what it always shows.
//!
//! Exactness: a marker is stamped after the `read()` that returned it, while the seccomp
//! supervisor stamps a call when the call traps. The test binary's environment carries
//! `NETTRAP_GO_SYNC=<this process's pid>:<the pipe's read descriptor>`; before stamping a call
//! of such a process the supervisor waits (bounded) until the pipe is empty and this process is
//! blocked in `read()` on it again (`engine::seccomp::gosync`), i.e. until every marker written
//! before the call has been stamped and written here.
//!
//! `--runner go` with a command that runs `go test` itself (make, a script, gotestsum): the same
//! `-exec` goes into `GOFLAGS` instead (`goflags`, chaining the user's `GOFLAGS` and their
//! `-exec` there), and `go-exec` runs only test binaries' tests through the adapter (`go run`
//! reads `GOFLAGS` too). A `-exec` on such a `go test`'s own command line overrides `GOFLAGS`:
//! the launcher then says that no test binary ran through the adapter.
//!
//! Not rewritten (nothing runs, or what runs is not a test): `go test -c`, `-list`, `-bench`
//! (benchmarks print no end markers), `-fuzz`. A user's own `-exec X` (on the command line or
//! in `GOFLAGS`) is chained: `go-exec --chain=X` runs `X <binary> <args>` (the timeline's pid is
//! then X's, right when X execs the binary, as `env` does). Any `-exec` also turns off go's test
//! result cache, which is what we want: a cached result runs nothing, so it makes no calls.
//!
//! Output: `-json` gets the binary's bytes unchanged. `-v` and quiet output are rebuilt from the
//! framed stream (`Renderer`) and match a plain run byte for byte for what the fixture covers
//! (logs, subtests, failures, direct prints). Known differences: in quiet mode a line the test
//! prints itself that starts with four spaces while a test runs is taken for that test's log
//! (shown only if it fails); with `-test.v=test2json` Go sends `os.Stderr` to stdout, so a test's
//! own stderr writes come out on stdout (`go test` merges both for listed packages anyway); a
//! test id is `<import path>/<name>` from the nearest `go.mod` (no go.mod: the adapter steps
//! aside). Tests still running when the binary's output ends (a crash, a timeout) end `failed`.

use crate::attribution::now_ns;
use crate::engine::seccomp::gosync::{Counters, unread};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The variable the supervisor reads (`<wrapper pid>:<read descriptor>`).
pub const ENV_SYNC: &str = "NETTRAP_GO_SYNC";
const MARKER: u8 = 0x16;
/// What `go env GOOS GOARCH` says on the machine nettrap was built for.
const HOST_GOOS: &str = std::env::consts::OS;
const HOST_GOARCH: &str = match std::env::consts::ARCH.as_bytes() {
    b"x86_64" => "amd64",
    b"aarch64" => "arm64",
    b"x86" => "386",
    _ => std::env::consts::ARCH,
};
const INDENT: &[u8] = b"    ";
/// Longest test id written to the timeline (lines stay under 4 KiB).
const ID_MAX: usize = 3000;

// ---------------------------------------------------------------------------------------------
// go test -> go test -exec 'nettrap go-exec'

/// Whether `GOOS`/`GOARCH` name another system: its test binaries run through go's own
/// `go_$GOOS_$GOARCH_exec` (wasm, a simulator), which `-exec` would replace; such runs are
/// left alone.
pub fn foreign_target() -> bool {
    let foreign =
        |var: &str, host: &str| std::env::var(var).is_ok_and(|v| !v.is_empty() && v != host);
    foreign("GOOS", HOST_GOOS) || foreign("GOARCH", HOST_GOARCH)
}

/// `argv` with `-exec '<nettrap_exe> go-exec'` added, if it is a `go test` that runs tests;
/// `None` otherwise.
pub fn rewrite(argv: &[OsString], nettrap_exe: &Path) -> Option<Vec<OsString>> {
    if !is_go(argv.first()?) {
        return None;
    }
    // `go [-C dir] test ...`
    let mut i = 1;
    while let Some(a) = argv.get(i).map(|a| a.as_bytes()) {
        match a {
            b"-C" | b"--C" => i += 2,
            _ if a.starts_with(b"-") => i += 1,
            _ => break,
        }
    }
    if argv.get(i).map(|a| a.as_bytes()) != Some(b"test") {
        return None;
    }
    // A test binary built for another system runs through go's own `go_$GOOS_$GOARCH_exec`
    // (wasm, a simulator): `-exec` would replace it. Such runs are left alone.
    if foreign_target() {
        return None;
    }
    let mut out: Vec<OsString> = argv[..=i].to_vec();
    let mut rest = Vec::new();
    let mut chain: Option<String> = None;
    let mut args = argv[i + 1..].iter();
    while let Some(a) = args.next() {
        let b = a.as_bytes();
        if b == b"-args" || b == b"--args" {
            rest.push(a.clone());
            rest.extend(args.by_ref().cloned());
            break;
        }
        let flag = b.strip_prefix(b"--").or_else(|| b.strip_prefix(b"-"));
        let (name, value) = match flag {
            Some(f) => match f.iter().position(|&c| c == b'=') {
                Some(p) => (&f[..p], Some(&f[p + 1..])),
                None => (f, None),
            },
            None => (&b""[..], None),
        };
        match name {
            b"c" | b"list" | b"bench" | b"fuzz" => return None,
            b"exec" => {
                let v = match value {
                    Some(v) => v.to_vec(),
                    None => args.next()?.as_bytes().to_vec(),
                };
                chain = Some(String::from_utf8(v).ok()?);
            }
            _ => rest.push(a.clone()),
        }
    }
    if chain.is_none() {
        // A -exec in GOFLAGS would be overridden by ours: chain it too.
        let goflags = std::env::var("GOFLAGS").unwrap_or_default();
        let mut fields = goflags.split_ascii_whitespace();
        while let Some(f) = fields.next() {
            let f = f.strip_prefix('-').unwrap_or(f);
            let f = f.strip_prefix('-').unwrap_or(f);
            if let Some(v) = f.strip_prefix("exec=") {
                chain = Some(v.to_string());
            } else if f == "exec" {
                chain = fields.next().map(str::to_string);
            }
        }
    }
    let mut exec = vec![nettrap_exe.to_str()?.to_string(), "go-exec".to_string()];
    if let Some(c) = chain.filter(|c| !c.trim().is_empty()) {
        exec.push(format!("--chain={c}"));
    }
    out.push("-exec".into());
    out.push(join_quoted(&exec)?.into());
    out.extend(rest);
    Some(out)
}

/// The `GOFLAGS` value that makes every `go test` run by the command (through make, a script,
/// gotestsum) run its test binaries under `<nettrap_exe> go-exec`, for commands `rewrite` does
/// not cover. `user` is the user's own `GOFLAGS`: its entries are kept, and a `-exec=X` among
/// them is chained (`go-exec --chain=X`), as on the command line. cmd/go splits `GOFLAGS` as it
/// splits `-exec` (white space, each field optionally quoted whole), so the `-exec=...` entry,
/// which holds spaces, is quoted whole with the quote it does not contain. A `-exec` on a `go
/// test` command line still wins over `GOFLAGS`: that run is not seen (see `run`). Err: why
/// the value cannot be built (a path or user flag holding both kinds of quote).
pub fn goflags(user: Option<&str>, nettrap_exe: &Path) -> Result<String, String> {
    let user = user.unwrap_or_default();
    let fields = split_quoted(user)
        .ok_or_else(|| format!("cannot read GOFLAGS ({user}): a quote is not closed"))?;
    let mut kept = Vec::new();
    let mut chain = None;
    for f in fields {
        let name = f
            .strip_prefix("--")
            .or_else(|| f.strip_prefix('-'))
            .unwrap_or(&f);
        match name.strip_prefix("exec=") {
            Some(v) => chain = Some(v.to_string()),
            None => kept.push(f),
        }
    }
    let exe = nettrap_exe
        .to_str()
        .ok_or("the path of nettrap is not UTF-8")?
        .to_string();
    let mut exec = vec![exe, "go-exec".to_string()];
    if let Some(c) = chain.filter(|c| !c.trim().is_empty()) {
        exec.push(format!("--chain={c}"));
    }
    let exec = join_quoted(&exec).ok_or("a path holds both kinds of quote")?;
    kept.push(format!("-exec={exec}"));
    join_quoted(&kept).ok_or_else(|| "GOFLAGS would need both kinds of quote".to_string())
}

/// Whether `program` is the go command itself (`go`, `/usr/local/go/bin/go`).
pub fn is_go(program: &OsStr) -> bool {
    let b = program.as_bytes();
    b == b"go" || b.ends_with(b"/go")
}

/// Sets `GOFLAGS` for `cmd` (see `goflags`); if it cannot, says why in one line. Whether it did.
pub fn configure_goflags(cmd: &mut std::process::Command) -> bool {
    let why = if foreign_target() {
        "GOOS/GOARCH name another system, whose test binaries run through go's own exec program"
            .to_string()
    } else {
        let user = std::env::var("GOFLAGS").ok();
        match std::env::current_exe()
            .map_err(|e| format!("cannot find nettrap's own path: {e}"))
            .and_then(|exe| goflags(user.as_deref(), &exe))
        {
            Ok(v) => {
                cmd.env("GOFLAGS", v);
                return true;
            }
            Err(why) => why,
        }
    };
    crate::say!(
        "nettrap: go adapter: not used: {why}; Go tests are attributed through NETTRAP_TEST only"
    );
    false
}

/// Whether `go-exec` was asked to run a test binary's tests (and not, through `GOFLAGS`, a
/// `go run` program, a listing, benchmarks or fuzzing, which `rewrite` leaves alone too):
/// `go test` names its binaries `<package>.test` and passes them `-test.` flags.
fn runs_tests(args: &[OsString]) -> bool {
    let Some((binary, rest)) = args.split_first() else {
        return false;
    };
    let test_binary = binary.as_bytes().ends_with(b".test")
        || rest.iter().any(|a| a.as_bytes().starts_with(b"-test."));
    let other = rest.iter().any(|a| {
        let f = a.as_bytes();
        [&b"-test.list="[..], b"-test.bench=", b"-test.fuzz="]
            .iter()
            .any(|p| f.starts_with(p))
    });
    test_binary && !other
}

/// Fields as cmd/go splits `-exec`: separated by white space, each optionally wrapped whole in
/// single or double quotes (no escapes).
fn split_quoted(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let q = rest.as_bytes()[0];
        if q == b'\'' || q == b'"' {
            let end = rest[1..].find(q as char)? + 1;
            out.push(rest[1..end].to_string());
            rest = rest[end + 1..].trim_start();
        } else {
            let end = rest
                .find(|c: char| c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    Some(out)
}

/// The inverse of `split_quoted`; `None` for a field holding both kinds of quote.
fn join_quoted(fields: &[String]) -> Option<String> {
    let quoted: Option<Vec<String>> = fields
        .iter()
        .map(|f| {
            if !f.is_empty() && !f.contains(|c: char| c.is_ascii_whitespace() || "'\"".contains(c))
            {
                Some(f.clone())
            } else if !f.contains('\'') {
                Some(format!("'{f}'"))
            } else if !f.contains('"') {
                Some(format!("\"{f}\""))
            } else {
                None
            }
        })
        .collect();
    Some(quoted?.join(" "))
}

// ---------------------------------------------------------------------------------------------
// nettrap go-exec [--chain=X] <binary> <args...>

/// What the user asked the binary to print.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// `-test.v=test2json` (`go test -json`): the framed stream, unchanged.
    Json,
    /// `-test.v` (`go test -v`).
    Verbose,
    /// Neither: failures only.
    Quiet,
}

/// The binary's arguments with `-test.v=test2json` first (and the user's `-test.v` removed),
/// and the mode the user asked for.
fn test_args(args: &[OsString]) -> (Vec<OsString>, Mode) {
    let mut mode = Mode::Quiet;
    let mut out: Vec<OsString> = vec!["-test.v=test2json".into()];
    let mut positional = false;
    for a in args {
        let b = a.as_bytes();
        if positional {
            out.push(a.clone());
            continue;
        }
        if b == b"--" {
            positional = true;
            out.push(a.clone());
            continue;
        }
        let f = b.strip_prefix(b"-").unwrap_or(b);
        let f = f.strip_prefix(b"-").unwrap_or(f);
        match f {
            b"test.v" | b"test.v=true" => mode = Mode::Verbose,
            b"test.v=test2json" => mode = Mode::Json,
            b"test.v=false" => mode = Mode::Quiet,
            _ => {
                out.push(a.clone());
                continue;
            }
        }
    }
    (out, mode)
}

/// Tells why the adapter is not used, once per process.
fn warn(why: &str) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr(), "nettrap: go adapter: {why}");
    }
}

/// Replaces this process with `argv` (exit status 127/126 if that fails).
fn exec_plain(argv: &[OsString]) -> u8 {
    exec_plain_as("go", argv)
}

/// As `exec_plain`, naming `adapter` in the message if the exec fails. A path is executed as
/// it is (`execv`): a file the kernel cannot run is an error, never a shell script, as `execvp`
/// would make it.
pub(super) fn exec_plain_as(adapter: &str, argv: &[OsString]) -> u8 {
    use std::ffi::CString;
    let e = if argv[0].as_bytes().contains(&b'/') {
        let args: Option<Vec<CString>> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()).ok())
            .collect();
        match args {
            Some(args) => {
                let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
                ptrs.push(std::ptr::null());
                // SAFETY: NUL-terminated strings and a NULL-terminated array, alive across the
                // call; execv only returns on failure.
                unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
                std::io::Error::last_os_error()
            }
            None => std::io::ErrorKind::InvalidInput.into(),
        }
    } else {
        std::process::Command::new(&argv[0]).args(&argv[1..]).exec()
    };
    let _ = writeln!(
        std::io::stderr(),
        "nettrap: {adapter} adapter: cannot run {}: {e}",
        argv[0].to_string_lossy()
    );
    if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// `nettrap go-exec [--chain=X] <binary> <args...>`; returns the exit status.
pub fn exec_main(args: Vec<OsString>) -> u8 {
    let mut args = args;
    let mut prefix: Vec<OsString> = Vec::new();
    if let Some(c) = args
        .first()
        .and_then(|a| a.as_bytes().strip_prefix(b"--chain="))
    {
        let c = String::from_utf8_lossy(c).into_owned();
        prefix = split_quoted(&c)
            .unwrap_or_default()
            .into_iter()
            .map(OsString::from)
            .collect();
        args.remove(0);
    }
    if args.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "nettrap: go-exec: usage: nettrap go-exec [--chain=CMD] BINARY [ARGS...]"
        );
        return crate::EXIT_USAGE;
    }
    let plain: Vec<OsString> = prefix.iter().chain(&args).cloned().collect();
    let Some(run_dir) = std::env::var_os(crate::rundir::ENV_RUN_DIR) else {
        return exec_plain(&plain);
    };
    if !runs_tests(&args) {
        return exec_plain(&plain);
    }
    match Adapter::start(&prefix, &args, Path::new(&run_dir)) {
        Ok(adapter) => adapter.finish(),
        Err(why) => {
            warn(&why);
            exec_plain(&plain)
        }
    }
}

/// The wrapper's exit status for a test binary that ended with `status`. A binary killed by a
/// signal kills the wrapper with the same signal, so `go test` and `cargo test` report it as
/// they would without nettrap (`signal: killed`, cargo's `(signal: 9, SIGKILL: kill)`), not as
/// an exit status of 128 + N.
pub(super) fn exit_like(status: std::process::ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => {
            // SAFETY: no core file for the wrapper (the binary made its own); the default action
            // for the signal, unblocked, then the signal to ourselves. All on this thread.
            unsafe {
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                libc::signal(sig, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::raise(sig);
            }
            // A signal whose default is to be ignored (SIGCHLD, SIGURG, ...): as shells say it.
            (128 + sig) as u8
        }
        _ => 1,
    }
}

/// The import path of the package in `dir`: the nearest `go.mod`'s module path plus the
/// directory below it.
fn import_path(dir: &Path) -> Option<String> {
    let mut up = Some(dir);
    while let Some(d) = up {
        if let Ok(text) = std::fs::read_to_string(d.join("go.mod")) {
            let module = text.lines().find_map(|l| {
                let rest = l.trim().strip_prefix("module")?;
                rest.starts_with(|c: char| c.is_whitespace())
                    .then(|| rest.trim().trim_matches('"').to_string())
            })?;
            let rel = dir.strip_prefix(d).ok()?;
            let rel = rel.to_str()?;
            return Some(if rel.is_empty() {
                module
            } else {
                format!("{module}/{rel}")
            });
        }
        up = d.parent();
    }
    None
}

// Signals received while the binary runs: forwarded to it. SIGCHLD interrupts the read so a
// binary that exits while a descendant still holds the pipe does not keep us waiting.
pub(super) static CHILD: AtomicI32 = AtomicI32::new(0);
pub(super) static CHILD_EXITED: AtomicBool = AtomicBool::new(false);

pub(super) extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Forwards SIGINT, SIGTERM, SIGQUIT and SIGHUP to the child `pid` until [`wait_child`].
pub(super) fn forward_signals(pid: u32) {
    CHILD.store(pid as i32, Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT, libc::SIGHUP] {
        install(sig, forward, true);
    }
}

/// Waits for `child` (a forwarded signal interrupting the wait is no error), then stops
/// forwarding signals to it; `None` if it cannot be waited for.
pub(super) fn wait_child(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    let status = loop {
        match child.wait() {
            Ok(s) => break Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break None,
        }
    };
    CHILD.store(0, Ordering::Relaxed);
    status
}

pub(super) extern "C" fn child_exited(_: libc::c_int) {
    CHILD_EXITED.store(true, Ordering::Relaxed);
}

pub(super) fn install(sig: libc::c_int, handler: extern "C" fn(libc::c_int), restart: bool) {
    // SAFETY: a zeroed sigaction is valid; the handlers only do async-signal-safe work.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// The timeline file, written one event per `write()`.
pub(super) struct Timeline {
    pub(super) path: PathBuf,
    pub(super) file: Option<std::fs::File>,
    pub(super) pid: u32,
}

impl Timeline {
    pub(super) fn open(path: &Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
    }

    pub(super) fn write(&mut self, mut event: serde_json::Value) {
        event["pid"] = self.pid.into();
        let mut line = event.to_string().into_bytes();
        line.push(b'\n');
        let Some(f) = self.file.as_mut() else { return };
        match f.write(&line) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => {
                self.file = Self::open(&self.path).ok();
                if let Some(f) = self.file.as_mut() {
                    let _ = f.write(&line);
                }
            }
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "nettrap: cannot write {}: {e}",
                    self.path.display()
                );
                self.file = None;
            }
        }
    }
}

struct Adapter {
    child: std::process::Child,
    read: OwnedFd,
    /// Shared with the seccomp supervisor: what this adapter read and stamped (see gosync).
    counters: Counters,
    /// How much of the incomplete line at the start of `pending` was searched already.
    scanned: usize,
    renderer: Renderer,
    timeline: Timeline,
    package: String,
}

impl Adapter {
    fn start(prefix: &[OsString], args: &[OsString], run_dir: &Path) -> Result<Adapter, String> {
        let cwd = std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?;
        let package = import_path(&cwd).ok_or_else(|| {
            format!(
                "no go.mod above {} to name the package's tests",
                cwd.display()
            )
        })?;
        let path = run_dir.join("timeline.jsonl");
        let file =
            Timeline::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let (read, write) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let counters_path = run_dir.join(format!("gosync-{}", std::process::id()));
        let counters = Counters::map(&counters_path, true)
            .map_err(|e| format!("cannot create {}: {e}", counters_path.display()))?;
        let (binary, rest) = args.split_first().ok_or("no test binary")?;
        let (targs, mode) = test_args(rest);
        let argv: Vec<&OsString> = prefix.iter().chain([binary]).collect();
        let mut cmd = std::process::Command::new(argv[0]);
        cmd.args(&argv[1..])
            .args(&targs)
            .stdout(std::process::Stdio::from(write))
            .env(
                ENV_SYNC,
                format!(
                    "{}:{}:{}",
                    std::process::id(),
                    read.as_raw_fd(),
                    counters_path.display()
                ),
            );
        install(libc::SIGCHLD, child_exited, false);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", argv[0].to_string_lossy()))?;
        // `cmd` holds the pipe's write end: drop it so the end of the output is seen.
        drop(cmd);
        forward_signals(child.id());
        let mut timeline = Timeline {
            path,
            file: Some(file),
            pid: child.id(),
        };
        timeline.write(serde_json::json!({
            "ev": "process", "t": now_ns(), "runner": "go", "role": package,
        }));
        Ok(Adapter {
            child,
            read,
            counters,
            scanned: 0,
            renderer: Renderer::new(mode),
            timeline,
            package,
        })
    }

    /// Reads the binary's output to its end, then waits for it; returns its exit status.
    fn finish(mut self) -> u8 {
        // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop never closes it.
        let mut stdout = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
        let mut stdout_ok = true;
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let fd = self.read.as_raw_fd();
        let mut draining = false;
        let mut read_total = 0u64;
        loop {
            if CHILD_EXITED.load(Ordering::Relaxed) && !draining {
                // Our binary is gone; read what is left without waiting for descendants that
                // may still hold the pipe.
                draining = matches!(self.child.try_wait(), Ok(Some(_)));
                if draining {
                    // SAFETY: fcntl on our own descriptor.
                    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
                }
                CHILD_EXITED.store(false, Ordering::Relaxed);
            }
            // Read exactly what waits in the pipe, claimed first (see gosync): a call the
            // supervisor traps then knows which bytes it must wait for.
            let waiting = unread(&self.read).unwrap_or(0);
            if waiting == 0 {
                if draining {
                    break;
                }
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll on one descriptor we own.
                let r = unsafe { libc::poll(&mut pfd, 1, -1) };
                if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
                if r > 0 && pfd.revents & libc::POLLIN == 0 && pfd.revents != 0 {
                    break; // hung up with nothing left: the end of the output
                }
                continue;
            }
            let want = (waiting as usize).min(buf.len());
            self.counters.claim(want as u64);
            // SAFETY: read into our buffer, at most its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), want) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break; // EAGAIN while draining, or a real error
            }
            if n == 0 {
                break;
            }
            read_total += n as u64;
            // The markers' time: after the read that returned them (see the module docs).
            let t = now_ns();
            pending.extend_from_slice(&buf[..n as usize]);
            let out = self.process(&mut pending, t, false);
            // Stamped and written to the timeline: calls waiting for these bytes may go on.
            self.counters.set_done(read_total);
            if stdout_ok && !out.is_empty() {
                stdout_ok = stdout.write_all(&out).is_ok();
            }
        }
        let t = now_ns();
        let out = self.process(&mut pending, t, true);
        if stdout_ok && !out.is_empty() {
            let _ = stdout.write_all(&out);
        }
        let Some(status) = wait_child(&mut self.child) else {
            return 1;
        };
        // Tests still open (the binary crashed or timed out) end here, failed.
        for name in self.renderer.open_tests() {
            self.end(&name, "failed", None, t);
        }
        exit_like(status)
    }

    /// Takes the complete lines (all of it at the end) out of `pending`: timeline events for
    /// the markers, and the bytes to show.
    fn process(&mut self, pending: &mut Vec<u8>, t: u64, end: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < pending.len() {
            let rest = &pending[at..];
            let framed = rest[0] == MARKER;
            // A line ends at its newline; unframed text also ends where a marker begins. The
            // incomplete line kept from the last read was searched already up to `scanned`.
            let from = if at == 0 { self.scanned.max(1) } else { 1 };
            let stop = rest[from.min(rest.len())..]
                .iter()
                .position(|&b| b == b'\n' || (!framed && b == MARKER))
                .map(|p| p + from);
            let len = match stop {
                Some(p) if rest[p] == b'\n' => p + 1,
                Some(p) => p,
                None if end => rest.len(),
                None if rest[0] == b'\n' => 1,
                None => {
                    self.scanned = rest.len();
                    break;
                }
            };
            self.scanned = 0;
            let line = rest[..len].to_vec();
            at += len;
            if framed && let Some(ev) = parse_marker(&line[1..]) {
                self.event(&ev, t);
            }
            self.renderer.line(&line, &mut out);
        }
        pending.drain(..at);
        out
    }

    fn id(&self, name: &str) -> String {
        let mut id = format!("{}/{name}", self.package);
        if id.len() > ID_MAX {
            let mut cut = ID_MAX;
            while !id.is_char_boundary(cut) {
                cut -= 1;
            }
            id.truncate(cut);
        }
        id
    }

    fn event(&mut self, ev: &Marker, t: u64) {
        use serde_json::json;
        let e = match ev {
            Marker::Run(n) => json!({"ev": "start", "t": t, "test": self.id(n), "runner": "go"}),
            Marker::Pause(n) => json!({"ev": "pause", "t": t, "test": self.id(n)}),
            Marker::Cont(n) => json!({"ev": "cont", "t": t, "test": self.id(n)}),
            Marker::End(n, outcome, d) => return self.end(n, outcome, *d, t),
            Marker::Other => return,
        };
        self.timeline.write(e);
    }

    fn end(&mut self, name: &str, outcome: &str, duration: Option<f64>, t: u64) {
        let mut e =
            serde_json::json!({"ev": "end", "t": t, "test": self.id(name), "outcome": outcome});
        if let Some(d) = duration {
            e["duration_s"] = d.into();
        }
        self.timeline.write(e);
    }
}

pub(super) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A framed line, parsed.
#[derive(Debug, PartialEq)]
enum Marker {
    Run(String),
    Pause(String),
    Cont(String),
    /// name, outcome, duration in seconds
    End(String, &'static str, Option<f64>),
    Other,
}

/// Parses a framed line (without its `\x16`).
fn parse_marker(line: &[u8]) -> Option<Marker> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\n');
    if let Some(n) = line.strip_prefix("=== RUN   ") {
        return Some(Marker::Run(n.to_string()));
    }
    if let Some(n) = line.strip_prefix("=== PAUSE ") {
        return Some(Marker::Pause(n.to_string()));
    }
    if let Some(n) = line.strip_prefix("=== CONT  ") {
        return Some(Marker::Cont(n.to_string()));
    }
    for (word, outcome) in [
        ("--- PASS: ", "passed"),
        ("--- FAIL: ", "failed"),
        ("--- SKIP: ", "skipped"),
    ] {
        if let Some(rest) = line.strip_prefix(word) {
            // `<name> (<d>s)`: the name may hold spaces only escaped, so split at the last " (".
            let (name, d) = match rest.rfind(" (") {
                Some(p) => (
                    &rest[..p],
                    rest[p + 2..]
                        .strip_suffix("s)")
                        .and_then(|d| d.parse::<f64>().ok()),
                ),
                None => (rest, None),
            };
            return Some(Marker::End(name.to_string(), outcome, d));
        }
    }
    Some(Marker::Other)
}

// ---------------------------------------------------------------------------------------------
// Rendering the framed stream back into what the user asked for.

/// Rebuilds `go test`'s own output from the `-test.v=test2json` stream, by replaying what the
/// `testing` package does in the requested mode: which test a log line belongs to (the last
/// name a marker gave), where a finished subtest's `--- ` block goes (its parent's buffer,
/// indented, in `-v` and quiet modes; straight out in json mode), which blocks are shown
/// (quiet: failures only, with their logs), and the `=== NAME` lines `-v` prints when the
/// test producing output changes.
struct Renderer {
    mode: Mode,
    /// Tests started and not ended, with what they hold back: finished subtests' blocks (and,
    /// in quiet mode, their own log lines).
    open: Vec<(String, Vec<u8>)>,
    /// The test the json stream's next log line belongs to.
    json_last: String,
    /// The test `-v` last named (its printer's `lastName`).
    v_last: String,
    /// The last line was part of a `t.Log` message (its next lines are indented by 8).
    in_log: bool,
}

/// Whether `line` is the first line of a `t.Log` message: `    file_test.go:12: ...`.
fn log_head(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(INDENT) else {
        return false;
    };
    let Some(colon) = rest.iter().position(|&b| b == b':') else {
        return false;
    };
    let (file, after) = (&rest[..colon], &rest[colon + 1..]);
    let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
    file.ends_with(b".go")
        && !file.contains(&b' ')
        && digits > 0
        && after.get(digits) == Some(&b':')
}

impl Renderer {
    fn new(mode: Mode) -> Renderer {
        Renderer {
            mode,
            open: Vec::new(),
            json_last: String::new(),
            v_last: String::new(),
            in_log: false,
        }
    }

    fn open_tests(&self) -> Vec<String> {
        self.open.iter().rev().map(|(n, _)| n.clone()).collect()
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.open.iter().rposition(|(n, _)| n == name)
    }

    /// The open test `name` is a subtest of (the longest open `prefix/`), if any.
    fn parent(&self, name: &str) -> Option<usize> {
        self.open
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| {
                name.len() > n.len()
                    && name.starts_with(n.as_str())
                    && name.as_bytes()[n.len()] == b'/'
            })
            .max_by_key(|(_, (n, _))| n.len())
            .map(|(i, _)| i)
    }

    /// Handles one line (framed or not, with its newline if it has one); appends what to show.
    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if self.mode == Mode::Json {
            out.extend_from_slice(line);
            if line.first() == Some(&MARKER) {
                self.track(&line[1..]);
            }
            return;
        }
        if line.first() != Some(&MARKER) {
            return self.unframed(line, out);
        }
        let body = &line[1..];
        match parse_marker(body) {
            Some(Marker::End(name, outcome, _)) => {
                self.json_last = name.clone();
                let held = self
                    .find(&name)
                    .map(|i| self.open.remove(i).1)
                    .unwrap_or_default();
                let shown = self.mode == Mode::Verbose || outcome == "failed";
                if !shown {
                    return;
                }
                let mut block = body.to_vec();
                block.extend(held);
                match self.parent(&name) {
                    Some(p) => indent_into(&mut self.open[p].1, &block),
                    None => {
                        if self.mode == Mode::Verbose {
                            self.v_last = name;
                        }
                        out.extend(block);
                    }
                }
            }
            _ => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim_end_matches('\n');
                // The json-only `=== NAME` lines (after a subtest, between top-level tests)
                // only move the current name; `-v` prints its own where it would.
                if let Some(n) = text.strip_prefix("=== NAME") {
                    self.json_last = n.trim_start().to_string();
                    return;
                }
                if let Some(rest) = text.strip_prefix("=== ") {
                    // `=== RUN   X`, `=== PAUSE X`, `=== CONT  X`, `=== ATTR  X ...`, ...
                    let name = rest
                        .split_once(' ')
                        .map_or("", |(_, n)| n.trim_start())
                        .split(' ')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    if let Some(Marker::Run(n)) = parse_marker(body) {
                        self.open.push((n.clone(), Vec::new()));
                    }
                    self.json_last = name.clone();
                    if self.mode == Mode::Verbose {
                        self.v_last = name;
                        out.extend_from_slice(body);
                    }
                    return;
                }
                // The final PASS / FAIL: shown without the framing byte; anything else that
                // begins with one is the program's own bytes, shown as they came.
                if text.starts_with("PASS") || text.starts_with("FAIL") {
                    out.extend_from_slice(body);
                } else {
                    out.extend_from_slice(line);
                }
            }
        }
    }

    /// Json mode shows everything but still tracks the open tests (for `open_tests`).
    fn track(&mut self, body: &[u8]) {
        match parse_marker(body) {
            Some(Marker::Run(n)) => self.open.push((n, Vec::new())),
            Some(Marker::End(n, _, _)) => {
                if let Some(i) = self.find(&n) {
                    self.open.remove(i);
                }
            }
            _ => {}
        }
    }

    /// Output that is not a marker: a test's log line (indented, of the test last named) or
    /// anything the program printed itself.
    fn unframed(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let current = self.find(&self.json_last.clone());
        // A log line: `    file.go:N: msg`, and the lines of the same message after it
        // (indented by 8). An indented line the test printed itself is its own output.
        let is_log = line.ends_with(b"\n")
            && (log_head(line) || self.in_log && line.starts_with(b"        "));
        self.in_log = is_log;
        match (current, is_log) {
            (Some(i), true) => match self.mode {
                Mode::Quiet => self.open[i].1.extend_from_slice(line),
                _ => {
                    if !self.v_last.is_empty() && self.v_last != self.json_last {
                        out.extend_from_slice(format!("=== NAME  {}\n", self.json_last).as_bytes());
                    }
                    self.v_last = self.json_last.clone();
                    out.extend_from_slice(line);
                }
            },
            _ => out.extend_from_slice(line),
        }
    }
}

/// Appends `block` to `to` with every line indented (the `testing` package's `indenter`).
fn indent_into(to: &mut Vec<u8>, block: &[u8]) {
    for line in block.split_inclusive(|&b| b == b'\n') {
        to.extend_from_slice(INDENT);
        to.extend_from_slice(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn log_lines_are_told_from_indented_output() {
        assert!(log_head(
            b"    dial_test.go:18: dial 127.0.0.1:9: refused\n"
        ));
        assert!(!log_head(b"    row 1: 42\n"));
        assert!(!log_head(b"    see main.go for details: 3\n"));
        assert!(!log_head(b"dial_test.go:18: x\n"));
    }

    #[test]
    fn rewrites_go_test_only() {
        let exe = Path::new("/opt/nettrap");
        assert_eq!(
            rewrite(&v(&["go", "test", "./..."]), exe),
            Some(v(&["go", "test", "-exec", "/opt/nettrap go-exec", "./..."]))
        );
        assert_eq!(
            rewrite(
                &v(&["/usr/local/go/bin/go", "-C", "sub", "test", "-v", "."]),
                exe
            ),
            Some(v(&[
                "/usr/local/go/bin/go",
                "-C",
                "sub",
                "test",
                "-exec",
                "/opt/nettrap go-exec",
                "-v",
                "."
            ]))
        );
        // The user's -exec is chained, wherever it is; -args stay the binary's.
        assert_eq!(
            rewrite(
                &v(&["go", "test", ".", "-exec", "sudo -E", "-args", "-exec", "x"]),
                Path::new("/my dir/nettrap")
            ),
            Some(v(&[
                "go",
                "test",
                "-exec",
                "'/my dir/nettrap' go-exec '--chain=sudo -E'",
                ".",
                "-args",
                "-exec",
                "x"
            ]))
        );
        for no in [
            &["go", "build", "."][..],
            &["go", "test", "-c", "."],
            &["go", "test", "-list", "."],
            &["go", "test", "-bench=.", "."],
            &["gotest", "test"],
            &["python3", "test"],
        ] {
            assert_eq!(rewrite(&v(no), exe), None, "{no:?}");
        }
        let fields = split_quoted("'/my dir/nettrap' go-exec '--chain=sudo -E'").unwrap();
        assert_eq!(fields, ["/my dir/nettrap", "go-exec", "--chain=sudo -E"]);
    }

    #[test]
    fn goflags_chain_the_users_own() {
        let exe = Path::new("/opt/nettrap");
        assert_eq!(goflags(None, exe).unwrap(), "'-exec=/opt/nettrap go-exec'");
        // Other flags kept; a -exec in GOFLAGS chained (quoted, as cmd/go reads it).
        let v = goflags(Some("-count=1 '-exec=sudo -E' -tags=x"), exe).unwrap();
        assert_eq!(
            v,
            "-count=1 -tags=x \"-exec=/opt/nettrap go-exec '--chain=sudo -E'\""
        );
        let fields = split_quoted(&v).unwrap();
        assert_eq!(fields[2], "-exec=/opt/nettrap go-exec '--chain=sudo -E'");
        assert_eq!(
            split_quoted(fields[2].strip_prefix("-exec=").unwrap()).unwrap(),
            ["/opt/nettrap", "go-exec", "--chain=sudo -E"]
        );
        assert_eq!(
            goflags(Some("--exec=env"), Path::new("/my dir/nettrap")).unwrap(),
            "\"-exec='/my dir/nettrap' go-exec --chain=env\""
        );
        assert!(goflags(Some("'-exec=a\"b' -x"), exe).is_err());
    }

    #[test]
    fn only_test_runs_go_through_the_adapter() {
        assert!(runs_tests(&v(&[
            "/tmp/go-build1/b001/pkg.test",
            "-test.paniconexit0"
        ])));
        assert!(runs_tests(&v(&["/tmp/x/renamed", "-test.timeout=10m0s"])));
        assert!(!runs_tests(&v(&["/tmp/go-build1/b001/exe/main", "serve"])));
        assert!(!runs_tests(&v(&["/tmp/b/pkg.test", "-test.list=."])));
        assert!(!runs_tests(&v(&[
            "/tmp/b/pkg.test",
            "-test.bench=.",
            "-test.run=^$"
        ])));
    }

    #[test]
    fn verbose_flags_are_replaced() {
        let (a, m) = test_args(&v(&["-test.paniconexit0", "-test.v=true", "-test.run=X"]));
        assert_eq!(
            a,
            v(&["-test.v=test2json", "-test.paniconexit0", "-test.run=X"])
        );
        assert_eq!(m, Mode::Verbose);
        assert_eq!(test_args(&v(&["-test.v=test2json"])).1, Mode::Json);
        assert_eq!(test_args(&v(&["-test.timeout=1m"])).1, Mode::Quiet);
    }

    #[test]
    fn markers() {
        assert_eq!(
            parse_marker(b"--- PASS: TestA/sub_1 (0.25s)\n"),
            Some(Marker::End("TestA/sub_1".into(), "passed", Some(0.25)))
        );
        assert_eq!(
            parse_marker(b"=== CONT  TestB\n"),
            Some(Marker::Cont("TestB".into()))
        );
    }
}
