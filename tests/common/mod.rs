//! Shared harness for the integration tests: run real programs under the built `nettrap`, each
//! run in its own network namespace (so fixture servers on 9200/6379 never collide and nothing
//! can leave the machine) with a private resolver configuration (name lookups go to
//! 127.0.0.1:53, where nothing answers), and read back what the report says.
//!
//! The Python fixtures need packages (pytest, xdist, Django, clients): [`python`] makes a
//! virtual environment under the target directory once, from `fixtures/python-requirements.txt`
//! (every transitive package pinned by `fixtures/python-constraints.txt`), and every later run
//! reuses it.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub fn nettrap() -> &'static str {
    env!("CARGO_BIN_EXE_nettrap")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `nettrap args...` in `dir` (not isolated: for what needs no network), as (exit code or -1,
/// stdout, stderr).
pub fn nettrap_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(nettrap())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn demo_suite() -> PathBuf {
    repo().join("fixtures/pytest-demo")
}

/// A fresh scratch directory for one test (`NAME-PID` under the target's tmp directory). A
/// test run leaves its scratch directories behind, to look at after a failure; asking for a
/// name removes that name's directories of test processes that have exited, so they do not
/// pile up run after run.
pub fn scratch(name: &str) -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    sweep_scratch(&tmp, name);
    let dir = tmp.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes `tmp/NAME-PID` directories whose process is gone (never another user's: `kill`
/// answers EPERM for those, not ESRCH).
fn sweep_scratch(tmp: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let pid = file
            .to_str()
            .and_then(|f| f.strip_prefix(name)?.strip_prefix('-')?.parse::<i32>().ok());
        let Some(pid) = pid.filter(|&p| p > 0 && p as u32 != std::process::id()) else {
            continue;
        };
        // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Holds an exclusive lock on `path` until the returned file is dropped (what is built once
/// under the target directory is shared by concurrent test binaries).
pub fn lock(path: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(path).unwrap();
    // SAFETY: flock on a descriptor we own; released when the file is dropped.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    f
}

/// Makes (once, reused while `reqs` and `constraints` are unchanged) a virtual environment at
/// `venv` with the pinned packages of `reqs` (a requirements file's text), each transitive
/// version held by `constraints` (a constraints file's text, pip's `-c`; empty for none);
/// returns its python. The caller holds a [`lock`].
///
/// It copes with a `python3` whose `venv` makes no pip (Debian without `python3-venv`, or
/// `--without-pip`): the virtual environment then gets pip from `ensurepip`, or else is
/// installed into by the `python3`'s own pip (`pip --python`).
pub fn venv_with(venv: &Path, reqs: &str, constraints: &str) -> PathBuf {
    let marker = venv.join("nettrap-requirements.txt");
    let py = venv.join("bin/python");
    let want = format!("{reqs}{constraints}");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(&want) {
        return py;
    }
    let _ = std::fs::remove_dir_all(venv);
    let ok = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(Command::new("python3").args(["-m", "venv"]).arg(venv)) {
        let _ = std::fs::remove_dir_all(venv);
        let st = Command::new("python3")
            .args(["-m", "venv", "--without-pip"])
            .arg(venv)
            .status()
            .expect("python3");
        assert!(
            st.success(),
            "python3 -m venv --without-pip {} failed",
            venv.display()
        );
    }
    let has_pip = |py: &Path| ok(Command::new(py).args(["-m", "pip", "--version"]));
    if !has_pip(&py) {
        let _ = ok(Command::new(&py).args(["-m", "ensurepip", "--default-pip"]));
    }
    // The installer: the environment's own pip, else python3's (`--python` since pip 22.3).
    let mut pip = if has_pip(&py) {
        let mut c = Command::new(&py);
        c.args(["-m", "pip"]);
        c
    } else {
        assert!(
            has_pip(Path::new("python3")),
            "{} has no pip, and neither ensurepip nor python3 -m pip can install it \
             (Debian: apt-get install python3-venv or python3-pip)",
            venv.display()
        );
        let mut c = Command::new("python3");
        c.args(["-m", "pip", "--python"]).arg(&py);
        c
    };
    let list = venv.join("requirements.txt");
    std::fs::write(&list, reqs).unwrap();
    pip.args(["install", "-q", "--disable-pip-version-check", "-r"])
        .arg(&list);
    if !constraints.is_empty() {
        let pins = venv.join("constraints.txt");
        std::fs::write(&pins, constraints).unwrap();
        pip.arg("-c").arg(pins);
    }
    let st = pip.status().expect("pip");
    assert!(st.success(), "pip install -r {} failed", list.display());
    std::fs::write(&marker, &want).unwrap();
    py
}

/// `unshare -rn` must work: the tests' expectations (refused connects, fixture servers on fixed
/// ports) hold only in a private network namespace. Fail loudly rather than run elsewhere.
fn netns() {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        Command::new("unshare")
            .args(["-rn", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(
        ok,
        "these tests need `unshare -rn` (user and network namespaces) to isolate each run"
    );
}

/// The resolver configuration every isolated run sees: DNS on loopback only.
fn resolv_conf() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("resolv.conf");
        replace_file(&p, "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n");
        p
    })
}

/// Names every isolated run can resolve from its private `/etc/hosts`, each to a loopback
/// address of its own, so tests can call "external" services by name without leaving the
/// machine.
pub const HOSTS: [(&str, &str); 5] = [
    ("api.payments.example", "127.0.0.2"),
    ("search.internal", "127.0.0.3"),
    ("cache.internal", "127.0.0.4"),
    ("db.internal", "127.0.0.5"),
    ("api.v6.example", "::1"),
];

/// The `/etc/hosts` every isolated run sees: localhost and [`HOSTS`].
fn hosts_file() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hosts");
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost\n");
        for (name, addr) in HOSTS {
            text.push_str(&format!("{addr} {name}\n"));
        }
        replace_file(&p, &text);
        p
    })
}

/// Writes `path` whole under another name and renames it in: runs of another test binary may
/// have the old file bind-mounted as their /etc/hosts or /etc/resolv.conf, and rewriting it in
/// place would let their lookups find it empty for a moment (then ask the DNS server).
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A command that runs `argv` inside a private network namespace with loopback up, and a
/// private mount namespace where /etc/resolv.conf points name lookups at 127.0.0.1 (where
/// nothing answers) and /etc/hosts maps [`HOSTS`] to loopback addresses.
pub fn isolated(argv: &[&str]) -> Command {
    netns();
    let mut c = Command::new("unshare");
    let script = format!(
        "ip link set lo up 2>/dev/null || true; \
         if [ -e /etc/resolv.conf ]; then mount --bind '{}' /etc/resolv.conf || exit 97; fi; \
         if [ -e /etc/hosts ]; then mount --bind '{}' /etc/hosts || exit 97; fi; \
         exec \"$@\"",
        resolv_conf().display(),
        hosts_file().display()
    );
    c.args(["-rmn", "sh", "-c", &script, "sh"]);
    c.args(argv);
    c
}

/// The Python interpreter of the test virtual environment (`fixtures/python-requirements.txt`,
/// every transitive package pinned by `fixtures/python-constraints.txt`), made once under the
/// target directory by [`venv_with`] and reused; a lock keeps concurrent test binaries from
/// making it twice.
pub fn python() -> String {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let read = |f: &str| std::fs::read_to_string(repo().join(f)).unwrap();
        let reqs = read("fixtures/python-requirements.txt");
        let pins = read("fixtures/python-constraints.txt");
        let _lock = lock(&target.join("venv.lock"));
        let py = venv_with(&target.join("venv"), &reqs, &pins);
        py.to_str().unwrap().to_string()
    })
    .clone()
}

/// The Go toolchain, checked once per test binary, with the settings every Go run here uses:
/// the machine's toolchain only (no download), and no cached test results.
pub fn go_toolchain() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        assert!(
            Command::new("go")
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "the Go toolchain is needed (.ci/run installs it)"
        );
        // SAFETY: set once, before any test of this binary spawns a process that reads them
        // (every Go test calls this first).
        unsafe {
            std::env::set_var("GOTOOLCHAIN", "local");
            std::env::set_var("GOFLAGS", "-count=1");
        }
    });
}

/// The C fixtures, built once per test binary.
pub fn c_fixture(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-fixtures");
        let st = Command::new("make")
            .args(["-s", "-C"])
            .arg(repo().join("fixtures/c"))
            .arg(format!("OUT={}", out.display()))
            .status()
            .expect("make");
        assert!(st.success(), "building fixtures/c failed");
        out
    });
    dir.join(name)
}

/// One grouped call: (category, address, port, transport, phase, verdict, count).
pub type CallRow = (String, String, u64, String, String, String, u64);

/// The outcome of one `nettrap run`.
pub struct Run {
    pub out: Output,
    pub report: Value,
    pub todo: String,
    pub dir: PathBuf,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    /// stdout without terminal colour escapes: runners colour their output when `CI` is set
    /// (picocolors, chalk), whatever the terminal.
    pub fn stdout_plain(&self) -> String {
        let mut plain = String::new();
        let text = self.stdout();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\x1b' {
                plain.push(c);
                continue;
            }
            if chars.next_if_eq(&'[').is_some() {
                // CSI: parameters and intermediates up to one final byte in @..~.
                while chars.next().is_some_and(|c| !('@'..='~').contains(&c)) {}
            } else {
                chars.next();
            }
        }
        plain
    }

    /// Calls of one test (or `None`: unattributed) as comparable tuples:
    /// (category, address, port, transport, phase, verdict, count).
    pub fn calls(&self, test: Option<&str>) -> Vec<CallRow> {
        let list = match test {
            None => self.report["unattributed"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            Some(t) => self.report["tests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["test"] == t)
                .map(|e| e["calls"].as_array().unwrap().clone())
                .unwrap_or_default(),
        };
        let mut v: Vec<_> = list
            .iter()
            .map(|c| {
                (
                    c["category"].as_str().unwrap().to_string(),
                    c["address"].as_str().unwrap().to_string(),
                    c["port"].as_u64().unwrap(),
                    c["transport"].as_str().unwrap().to_string(),
                    c["phase"].as_str().unwrap_or("-").to_string(),
                    c["verdict"].as_str().unwrap().to_string(),
                    c["count"].as_u64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Ids of the tests with at least one call, in report order.
    pub fn tests(&self) -> Vec<String> {
        self.report["tests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| !t["calls"].as_array().unwrap().is_empty())
            .map(|t| t["test"].as_str().unwrap().to_string())
            .collect()
    }

    /// Every test in the report (with an adapter: every test that ran), with its outcome.
    pub fn all_tests(&self) -> Vec<(String, String)> {
        self.report["tests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["test"].as_str().unwrap().to_string(),
                    t["outcome"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect()
    }

    /// One test's entry in the report.
    pub fn test(&self, id: &str) -> &Value {
        self.report["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["test"] == id)
            .unwrap_or_else(|| panic!("{id} not in the report: {:?}", self.all_tests()))
    }

    /// Total calls over the whole report.
    /// Every grouped call entry of the report: the tests' and the unattributed ones.
    pub fn all_calls(&self) -> Vec<Value> {
        let tests = self.report["tests"].as_array().into_iter().flatten();
        tests
            .flat_map(|t| t["calls"].as_array().into_iter().flatten())
            .chain(self.report["unattributed"].as_array().into_iter().flatten())
            .cloned()
            .collect()
    }

    pub fn total_calls(&self) -> u64 {
        let all = self.report["tests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| &t["calls"]);
        all.chain(std::iter::once(&self.report["unattributed"]))
            .map(count)
            .sum()
    }
}

/// `nettrap run [flags] -- command...` in `cwd`, isolated; report and to-do list in a scratch dir.
pub fn run_in(name: &str, cwd: &Path, flags: &[&str], command: &[&str]) -> Run {
    run_in_env(name, cwd, &[], flags, command)
}

/// As [`run_in`], with extra environment variables for nettrap and the command.
pub fn run_in_env(
    name: &str,
    cwd: &Path,
    env: &[(&str, &str)],
    flags: &[&str],
    command: &[&str],
) -> Run {
    let dir = scratch(name);
    let report = dir.join("report.json");
    let report_s = report.to_str().unwrap().to_string();
    let mut argv = vec![nettrap(), "run", "--report", &report_s];
    argv.extend_from_slice(flags);
    argv.push("--");
    argv.extend_from_slice(command);
    let out = isolated(&argv)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running nettrap");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let todo = std::fs::read_to_string(dir.join("nettrap-todo.md")).unwrap_or_default();
    Run {
        out,
        report: serde_json::from_str(&text).unwrap(),
        todo,
        dir,
    }
}

/// Runs the bundled pytest suite under nettrap.
pub fn run_demo(name: &str, flags: &[&str], pytest_args: &[&str]) -> Run {
    let py = python();
    let mut cmd = vec![py.as_str(), "-m", "pytest", "-q", "-p", "no:randomly"];
    cmd.extend_from_slice(pytest_args);
    run_in(name, &demo_suite(), flags, &cmd)
}

/// The sum of `count` over a JSON list of calls.
pub fn count(calls: &Value) -> u64 {
    calls
        .as_array()
        .map_or(0, |a| a.iter().map(|c| c["count"].as_u64().unwrap()).sum())
}

pub fn t(
    category: &str,
    address: &str,
    port: u64,
    transport: &str,
    phase: &str,
    verdict: &str,
    count: u64,
) -> CallRow {
    (
        category.into(),
        address.into(),
        port,
        transport.into(),
        phase.into(),
        verdict.into(),
        count,
    )
}

/// A Node fixture's pinned dependencies (its `package-lock.json`), installed once under the cargo
/// target directory, in `target/node-fixtures/<fixture name>/`, and reused by every test binary
/// and later runs while the fixture's files are unchanged. Returns that install's `node_modules`.
///
/// The whole fixture (a few small files and its committed `package-lock.json`) is copied there
/// and `npm ci --no-audit --no-fund` run in it (the only step that needs the network: npm's
/// registry), under an exclusive `flock`
/// so concurrent test binaries install once; a marker holds a hash of the fixture's files.
/// Local `file:` dependencies, which npm links, are replaced by copies so their code really lives
/// under `node_modules/<name>` as a published package's would. The fixture folder itself stays
/// free of `node_modules`.
pub fn node_modules(fixture: &Path) -> PathBuf {
    let name = fixture.file_name().unwrap().to_str().unwrap();
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = target.join("node-fixtures").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let _lock = lock(&dir.join(".lock"));

    let files = fixture_files(fixture);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a over names and contents
    for (rel, bytes) in &files {
        for b in rel.as_bytes().iter().chain([0u8].iter()).chain(bytes) {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    let marker = dir.join(".installed");
    let modules = dir.join("node_modules");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(&format!("{hash:016x}"))
        && modules.is_dir()
    {
        return modules;
    }
    let _ = std::fs::remove_file(&marker);
    for (rel, bytes) in &files {
        let to = dir.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(&to, bytes).unwrap();
    }
    // The fixture's committed package-lock.json pins every package, transitive ones included:
    // `npm ci` installs exactly that (and fails if it does not match package.json).
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("running npm (Node.js and npm are needed for the Node adapter's tests)");
    assert!(
        out.status.success(),
        "npm ci in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // npm links `file:` dependencies; make them real copies.
    for entry in std::fs::read_dir(&modules).unwrap() {
        let path = entry.unwrap().path();
        if path.symlink_metadata().unwrap().file_type().is_symlink() {
            let real = std::fs::canonicalize(&path).unwrap();
            if real.starts_with(&dir) && !real.starts_with(&modules) {
                std::fs::remove_file(&path).unwrap();
                copy_tree(&real, &path);
            }
        }
    }
    std::fs::write(&marker, format!("{hash:016x}")).unwrap();
    modules
}

/// Copies a directory tree (regular files only, `node_modules` skipped).
pub fn copy_tree(from: &Path, to: &Path) {
    for (rel, bytes) in fixture_files(from) {
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(dest, bytes).unwrap();
    }
}

/// A fixture's files, relative paths sorted, `node_modules` skipped.
fn fixture_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                if entry.file_name() != "node_modules" {
                    walk(root, &path, out);
                }
            } else if kind.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
