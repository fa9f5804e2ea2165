//! Live progress goes to the terminal's title (OSC 2), never into the scrollback: on a
//! pseudo-terminal the title shows tests done and calls per category and the command's output
//! stays intact; with stderr not a terminal, or --quiet, no escape sequence at all.

mod common;
use common::*;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::process::Stdio;

const DEMO: &[&str] = &["python3", "fixtures/unittest-demo/run.py"];

/// Runs the unittest demo under nettrap with stdout and stderr on a pseudo-terminal; returns
/// (exit code, everything the terminal received).
fn on_terminal(name: &str, flags: &[&str]) -> (i32, String) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty with valid out-pointers and no name, settings or size.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty");
    let dir = scratch(name);
    let report = dir.join("report.json");
    let mut argv = vec![nettrap(), "run", "--report", report.to_str().unwrap()];
    argv.extend_from_slice(flags);
    argv.push("--");
    argv.extend_from_slice(DEMO);
    let mut cmd = isolated(&argv);
    cmd.current_dir(repo())
        .env("TERM", "xterm")
        .stdin(Stdio::null());
    // SAFETY: each is a fresh descriptor of the pseudo-terminal's slave, owned by the Stdio.
    unsafe {
        cmd.stdout(Stdio::from_raw_fd(libc::dup(slave)))
            .stderr(Stdio::from_raw_fd(libc::dup(slave)));
    }
    let mut child = cmd.spawn().unwrap();
    // The Command holds copies of the slave: the master sees the end only when all are closed.
    drop(cmd);
    // SAFETY: our copy of the slave is no longer needed.
    unsafe { libc::close(slave) };
    // SAFETY: the master is ours; the File owns and closes it.
    let mut m = unsafe { std::fs::File::from_raw_fd(master) };
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        // Ends with EIO once every slave descriptor is closed.
        let mut buf = [0u8; 4096];
        while let Ok(n) = m.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let code = child.wait().unwrap().code().unwrap_or(-1);
    let out = reader.join().unwrap();
    (code, String::from_utf8_lossy(&out).replace("\r\n", "\n"))
}

#[test]
fn progress_is_in_the_title_and_the_output_is_intact() {
    let (code, out) = on_terminal("progress-tty", &[]);
    assert_eq!(code, 0, "{out}");
    // The final title: every test done, the calls per category as the summary counts them.
    assert!(
        out.contains(
            "\x1b]2;nettrap: 14 tests done · redis 6 · elasticsearch 3 · external-api 1 · \
             memcached 1\x07"
        ),
        "{out:?}"
    );
    // Saved, cleared and restored at the end.
    assert!(out.contains("\x1b[22;2t"), "{out:?}");
    assert!(restored_before_summary(&out), "{out:?}");
    // The command's lines and nettrap's summary, whole.
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "Ran 14 tests in ",
        "OK",
        "nettrap: 4 categories of external calls",
    ] {
        let line = lines
            .iter()
            .find(|l| l.contains(want))
            .unwrap_or_else(|| panic!("no line with {want:?} in {out:?}"));
        // Title sequences may precede a line (they do not move the cursor), never enter it.
        let (before, rest) = line.split_at(line.find(want).unwrap());
        assert!(!rest.contains('\x1b'), "escape inside {line:?}");
        assert_eq!(without_titles(before), "", "{line:?}");
    }
}

/// `s` without the title sequences nettrap writes (set, save, restore).
fn without_titles(s: &str) -> String {
    let mut out = s.replace("\x1b[22;2t", "").replace("\x1b[23;2t", "");
    while let Some(at) = out.find("\x1b]2;") {
        let end = out[at..].find('\x07').map_or(out.len(), |e| at + e + 1);
        out.replace_range(at..end, "");
    }
    out
}

/// The title is cleared and popped before nettrap's summary.
fn restored_before_summary(out: &str) -> bool {
    out.find("\x1b]2;\x07\x1b[23;2t")
        .zip(out.find("nettrap: 4 categories"))
        .is_some_and(|(restore, summary)| restore < summary)
}

#[test]
fn a_denied_call_shows_in_the_title() {
    let (code, out) = on_terminal("progress-deny", &["--deny", "external-api"]);
    assert_eq!(code, 86, "{out}");
    assert!(
        out.contains(
            " · denied: connect to 127.0.0.1:443 in \
             tests.test_payments.PaymentTests.test_charge\x07"
        ),
        "{out:?}"
    );
}

#[test]
fn no_title_with_quiet_or_never() {
    for flag in ["--quiet", "--progress=never"] {
        let (code, out) = on_terminal("progress-quiet", &[flag]);
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains('\x1b'), "{flag}: {out:?}");
    }
}

#[test]
fn no_title_when_stderr_is_not_a_terminal() {
    let run = run_in_env("progress-pipe", &repo(), &[("TERM", "xterm")], &[], DEMO);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(!run.stderr().contains('\x1b'), "{:?}", run.stderr());
    assert!(run.stderr().contains("Ran 14 tests"), "{}", run.stderr());
}
