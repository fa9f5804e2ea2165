//! The Maven adapter: what nettrap does so that the JUnit Platform tests Surefire runs are in
//! the timeline.
//!
//! For a Maven run (`mvn test`, `./mvnw verify`, `--runner maven`) the launcher prepends
//! `-javaagent:<cache>/java/nettrap-agent.jar` to `JAVA_TOOL_OPTIONS`, keeping the user's own
//! options after it. Every JVM of the run loads the agent (Maven's own, Surefire's forks, any a
//! test starts); its `premain` does nothing unless JUnit Platform's launcher is on the system
//! class path (Surefire's fork), where it appends `nettrap-junit.jar` to the system class
//! loader's search so JUnit's ServiceLoader registers nettrap's `TestExecutionListener`. The
//! listener writes each test's start and end (outcome, duration), skipped tests, class set-up
//! as fixtures and the fork's role to the timeline (sources and their comments:
//! `src/adapters/java/`).
//!
//! `JAVA_TOOL_OPTIONS` rather than `JDK_JAVA_OPTIONS`: both make a JVM print one line on stderr
//! (`Picked up JAVA_TOOL_OPTIONS: ...`), but `JDK_JAVA_OPTIONS` is read by the `java` launcher
//! of Java 9 and later only, so a Java 8 test JVM would run without the adapter; it is set only
//! for Maven runs, so other runs' JVMs print nothing new.
//!
//! The jars are built by `build.rs` when `javac` is on PATH; a binary built without it has no
//! Maven adapter and says so once when it runs Maven.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Command;

/// The adapter's files, written under the cache directory (empty when built without javac).
#[cfg(nettrap_java)]
pub static FILES: &[(&str, &[u8])] = &[
    (
        "java/nettrap-agent.jar",
        include_bytes!(concat!(env!("OUT_DIR"), "/java/nettrap-agent.jar")),
    ),
    (
        "java/nettrap-junit.jar",
        include_bytes!(concat!(env!("OUT_DIR"), "/java/nettrap-junit.jar")),
    ),
];
#[cfg(not(nettrap_java))]
pub static FILES: &[(&str, &[u8])] = &[];

/// Whether this build carries the Maven adapter.
pub fn built() -> bool {
    !FILES.is_empty()
}

/// What a Maven run without the adapter is told (one line).
pub const ABSENT: &str = "nettrap: warning: this nettrap was built without javac, so it has no Maven adapter: tests are attributed through NETTRAP_TEST only";

/// Whether Maven's arguments run Surefire: a lifecycle phase at or after `test`, or a
/// `surefire:` goal.
pub fn runs_tests(args: &[String]) -> bool {
    const PHASES: &[&str] = &[
        "test",
        "prepare-package",
        "package",
        "pre-integration-test",
        "integration-test",
        "post-integration-test",
        "verify",
        "install",
        "deploy",
    ];
    // Maven's options that take a separate value.
    const VALUED: &[&str] = &[
        "-pl",
        "--projects",
        "-f",
        "--file",
        "-s",
        "--settings",
        "-gs",
        "-P",
        "--activate-profiles",
        "-T",
        "--threads",
        "-rf",
        "--resume-from",
        "-l",
        "--log-file",
        "-t",
        "--toolchains",
        "-b",
        "--builder",
        "-D",
    ];
    let mut words = args.iter();
    while let Some(a) = words.next() {
        if VALUED.contains(&a.as_str()) {
            words.next();
        } else if !a.starts_with('-') && (PHASES.contains(&a.as_str()) || a.contains("surefire:")) {
            return true;
        }
    }
    false
}

/// Loads the agent into every JVM `cmd` starts, before the user's own `JAVA_TOOL_OPTIONS`.
pub fn configure(cmd: &mut Command, dir: &Path) {
    if !built() {
        crate::say!("{ABSENT}");
        return;
    }
    let mut v = OsString::from("-javaagent:");
    v.push(dir.join("java/nettrap-agent.jar"));
    if let Some(existing) = std::env::var_os("JAVA_TOOL_OPTIONS").filter(|v| !v.is_empty()) {
        v.push(" ");
        v.push(existing);
    }
    cmd.env(OsStr::new("JAVA_TOOL_OPTIONS"), v);
}
