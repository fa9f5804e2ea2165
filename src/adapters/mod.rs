//! Runner adapters: what each test runner needs so that nettrap knows its tests.
//!
//! An adapter reports the runner's tests (start, phases, outcome, duration), each process's role
//! and each call's site to the run's timeline (see `attribution`), with zero edits to the
//! user's project:
//!
//! - Python (unittest, Django's runner, pytest and xdist): `python/`, put first on PYTHONPATH as
//!   a `sitecustomize` that chains to the project's own; it registers a pytest plugin with each
//!   pytest session. Loaded into every Python process; it acts only when tests run.
//! - Node (jest, vitest, node:test): `node/preload.cjs`, loaded into every Node process with
//!   `NODE_OPTIONS=--require` (before the user's own options); it hooks jest-circus when a jest
//!   worker loads it, vitest's worker state in a vitest worker, and collects node:test's tests
//!   in a test file's process.
//! - Go (`go test`): `go`, which rewrites the command so test binaries run under
//!   `nettrap go-exec`, which reads their test2json markers into the timeline.
//! - Rust (`cargo test`, cargo-nextest): `cargo`, which makes cargo run test binaries through
//!   `nettrap cargo-exec` (the host's target runner), which reads libtest's result lines.
//! - Maven (Surefire running JUnit Platform tests): `java/`, a Java agent loaded into the JVMs
//!   of a Maven run through `JAVA_TOOL_OPTIONS` (see [`java`]); in Surefire's test JVM it
//!   registers a JUnit Platform TestExecutionListener that writes the tests to the timeline.
//!
//! The files are carried inside the binary and written to the cache directory beside the shim.
//! `--runner NAME` names the runner where the command does not show it, `--runner none` turns
//! adapters off (the environment protocol, `NETTRAP_TEST`, still works).

pub mod cargo;
pub mod go;
pub mod java;

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Command;

/// The adapters' files, written under the cache directory (path relative to it, contents).
pub fn files() -> impl Iterator<Item = &'static (&'static str, &'static [u8])> {
    FILES.iter().chain(java::FILES)
}

/// FNV-1a over every file's name and contents, in [`files`] order: part of the cache
/// directory's name, so a changed adapter is never confused with an older one. Computed by the
/// compiler: hashing ~90 KB a byte at a time cost every run ~80 us.
pub const FILES_HASH: u64 = hash_files(hash_files(crate::fnv::OFFSET, FILES), java::FILES);

const fn hash_files(mut h: u64, files: &[(&str, &[u8])]) -> u64 {
    let mut i = 0;
    while i < files.len() {
        h = crate::fnv::update(h, files[i].0.as_bytes());
        h = crate::fnv::update(h, files[i].1);
        i += 1;
    }
    h
}

/// The adapters' files that every build carries.
static FILES: &[(&str, &[u8])] = &[
    (
        "python/sitecustomize.py",
        include_bytes!("python/sitecustomize.py"),
    ),
    (
        "python/_nettrap_adapter.py",
        include_bytes!("python/_nettrap_adapter.py"),
    ),
    (
        "python/_nettrap_pytest.py",
        include_bytes!("python/_nettrap_pytest.py"),
    ),
    ("node/preload.cjs", include_bytes!("node/preload.cjs")),
];

/// The runners nettrap recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Runner {
    Pytest,
    Unittest,
    Django,
    Jest,
    Vitest,
    #[value(name = "node-test")]
    NodeTest,
    Go,
    Cargo,
    Nextest,
    /// Maven (Surefire), JUnit Platform tests.
    Maven,
    /// No adapter: attribution from the environment protocol only.
    None,
}

impl Runner {
    pub fn name(self) -> &'static str {
        match self {
            Runner::Pytest => "pytest",
            Runner::Unittest => "unittest",
            Runner::Django => "django",
            Runner::Jest => "jest",
            Runner::Vitest => "vitest",
            Runner::NodeTest => "node:test",
            Runner::Go => "go",
            Runner::Cargo => "cargo",
            Runner::Nextest => "nextest",
            Runner::Maven => "maven",
            Runner::None => "none",
        }
    }
}

fn base(arg: &OsStr) -> String {
    Path::new(arg)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The runner a command line starts, if nettrap recognises it: `pytest`, `python -m pytest`,
/// `manage.py test`, `django-admin test`, `python -m unittest`, `jest`, `npx jest`, `vitest`,
/// `node --test`, `go test`, `cargo test`, `cargo nextest run`, `mvn test` (or `./mvnw`, any
/// phase that runs Surefire: `verify`, `install`, `surefire:test`); through `uv run`, `poetry run`,
/// `pipenv run`, `npx` and `npm exec`.
pub fn detect(argv: &[OsString]) -> Option<Runner> {
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut i = 0;
    // Wrappers that run the next word as the command, with the options of theirs that take a
    // value (`uv run --with httpx pytest`).
    const VALUED: &[&str] = &[
        "--with",
        "--with-editable",
        "--with-requirements",
        "--python",
        "-p",
        "--project",
        "--directory",
        "--env-file",
        "--extra",
        "--group",
        "--package",
        "--index",
        "-w",
        "--package-manager",
        "-c",
        "--call",
    ];
    loop {
        let first = args.get(i)?;
        match base(OsStr::new(first)).as_str() {
            "uv" | "poetry" | "pipenv" | "pdm" | "hatch"
                if args.get(i + 1).is_some_and(|a| a == "run") =>
            {
                i += 2
            }
            "npx" | "pnpx" | "bunx" => i += 1,
            "npm" | "pnpm" | "yarn" if args.get(i + 1).is_some_and(|a| a == "exec") => i += 2,
            _ => break,
        }
        while let Some(a) = args.get(i).filter(|a| a.starts_with('-')) {
            i += if VALUED.contains(&a.as_str()) { 2 } else { 1 };
            if a == "--" {
                break;
            }
        }
    }
    let prog = base(OsStr::new(&args[i]));
    let rest = &args[i + 1..];
    // The subcommand: the first word that is not an option, an option's value (cargo and go
    // options that take one) or a `+toolchain`.
    let first_word = {
        const VALUED: &[&str] = &["--config", "-Z", "--color", "-C", "--C"];
        let mut words = rest.iter();
        let mut found = None;
        while let Some(a) = words.next() {
            if VALUED.contains(&a.as_str()) {
                words.next();
            } else if !a.starts_with('-') && !a.starts_with('+') {
                found = Some(a.as_str());
                break;
            }
        }
        found
    };
    let runner = match prog.as_str() {
        "pytest" | "py.test" => Runner::Pytest,
        "django-admin" | "django-admin.py" if first_word == Some("test") => Runner::Django,
        "manage.py" if first_word == Some("test") => Runner::Django,
        "jest" => Runner::Jest,
        "vitest" => Runner::Vitest,
        "go" if first_word == Some("test") => Runner::Go,
        "cargo" if matches!(first_word, Some("test" | "t")) => Runner::Cargo,
        "cargo" if first_word == Some("nextest") => Runner::Nextest,
        "cargo-nextest" => Runner::Nextest,
        "mvn" | "mvnw" | "mvnd" if java::runs_tests(rest) => Runner::Maven,
        "node" if rest.iter().any(|a| a == "--test") => Runner::NodeTest,
        "node" => {
            let script = rest.iter().find(|a| !a.starts_with('-'))?;
            match base(OsStr::new(script)).as_str() {
                "jest" | "jest.js" => Runner::Jest,
                "vitest" | "vitest.mjs" => Runner::Vitest,
                _ => return None,
            }
        }
        p if p.starts_with("python") => {
            let m = rest.iter().position(|a| a == "-m");
            match m.and_then(|m| rest.get(m + 1)).map(String::as_str) {
                Some("pytest") | Some("py.test") => Runner::Pytest,
                Some("unittest") => Runner::Unittest,
                Some("django") if rest.iter().any(|a| a == "test") => Runner::Django,
                Some(_) => return None,
                None => {
                    let script = rest.iter().find(|a| !a.starts_with('-'))?;
                    let after = rest.iter().skip_while(|a| *a != script).nth(1);
                    match base(OsStr::new(script)).as_str() {
                        "manage.py" if after.is_some_and(|a| a == "test") => Runner::Django,
                        "pytest" => Runner::Pytest,
                        _ => return None,
                    }
                }
            }
        }
        _ => return None,
    };
    Some(runner)
}

/// Prepends `value` to the list variable `name` (separated by `sep`), keeping the user's own.
fn prepend(cmd: &mut Command, name: &str, value: &OsStr, sep: &str) {
    let mut v = OsString::from(value);
    if let Some(existing) = std::env::var_os(name).filter(|v| !v.is_empty()) {
        v.push(sep);
        v.push(existing);
    }
    cmd.env(name, v);
}

/// Sets up `cmd` so every process it starts loads the adapters written under `dir` (the cache
/// directory that holds [`FILES`]). Runner-specific adapters that rewrite the command come
/// first (see `run`).
pub fn configure(cmd: &mut Command, dir: &Path, runner: Option<Runner>) {
    if runner == Some(Runner::None) {
        return;
    }
    // The Python adapter registers its pytest plugin itself, in the processes it is loaded in:
    // naming it in PYTEST_PLUGINS would break a pytest whose PYTHONPATH a test replaced.
    prepend(cmd, "PYTHONPATH", dir.join("python").as_os_str(), ":");
    // Node splits NODE_OPTIONS like a shell: quote the path.
    let preload = dir.join("node/preload.cjs");
    let option = format!("--require \"{}\"", preload.display());
    prepend(cmd, "NODE_OPTIONS", OsStr::new(&option), " ");
    // Only for Maven: every JVM prints a line when it picks the variable up.
    if runner == Some(Runner::Maven) {
        java::configure(cmd, dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(cmd: &str) -> Option<Runner> {
        let argv: Vec<OsString> = cmd.split(' ').map(OsString::from).collect();
        detect(&argv)
    }

    #[test]
    fn recognises_runners() {
        assert_eq!(d("pytest -q"), Some(Runner::Pytest));
        assert_eq!(d("/usr/bin/python3 -m pytest -n 2"), Some(Runner::Pytest));
        assert_eq!(
            d("python manage.py test --parallel 2"),
            Some(Runner::Django)
        );
        assert_eq!(d("./manage.py test"), Some(Runner::Django));
        assert_eq!(d("django-admin test app"), Some(Runner::Django));
        assert_eq!(d("python3 -m unittest discover"), Some(Runner::Unittest));
        assert_eq!(d("uv run pytest"), Some(Runner::Pytest));
        assert_eq!(d("uv run --with httpx pytest -x"), Some(Runner::Pytest));
        assert_eq!(d("npx --yes jest"), Some(Runner::Jest));
        assert_eq!(d("npx jest --ci"), Some(Runner::Jest));
        assert_eq!(d("node node_modules/jest/bin/jest.js"), Some(Runner::Jest));
        assert_eq!(d("node --test"), Some(Runner::NodeTest));
        assert_eq!(d("go test ./..."), Some(Runner::Go));
        assert_eq!(d("go build"), None);
        assert_eq!(d("cargo test --workspace"), Some(Runner::Cargo));
        assert_eq!(d("cargo +stable test"), Some(Runner::Cargo));
        assert_eq!(d("cargo --config build.jobs=2 t"), Some(Runner::Cargo));
        assert_eq!(d("go -C sub test ./..."), Some(Runner::Go));
        assert_eq!(d("cargo nextest run"), Some(Runner::Nextest));
        assert_eq!(d("python3 fixtures/unittest-demo/run.py"), None);
        assert_eq!(d("make test"), None);
        assert_eq!(d("mvn test"), Some(Runner::Maven));
        assert_eq!(d("mvn -o -q test"), Some(Runner::Maven));
        assert_eq!(d("./mvnw -B verify"), Some(Runner::Maven));
        assert_eq!(d("mvn -pl core -Dx=1 clean install"), Some(Runner::Maven));
        assert_eq!(d("mvn surefire:test"), Some(Runner::Maven));
        assert_eq!(d("mvn compile"), None);
        assert_eq!(d("mvn -DskipTests package"), Some(Runner::Maven));
    }
}
