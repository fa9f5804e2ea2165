//! The denial line goes to the program's stderr only when that is a terminal, a pipe, a socket
//! or a deleted file (a capture buffer, as pytest's): a program that pointed fd 2 at a data file
//! of its own finds only its own bytes there.

use crate::common::*;

fn fx(name: &str) -> String {
    c_fixture(name).to_str().unwrap().to_string()
}

#[test]
fn a_stderr_reopened_on_a_file_gets_no_denial_line() {
    for engine in ["preload", "seccomp", "auto"] {
        let dir = scratch(&format!("stderr-file-{engine}"));
        let data = dir.join("data.txt");
        let run = run_in(
            &format!("stderr-file-run-{engine}"),
            &repo(),
            &["--engine", engine, "--deny", "9"],
            &[&fx("stderr_file"), "file", "9", data.to_str().unwrap()],
        );
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        assert!(
            run.stdout()
                .contains("stderr_file connect: ret=-1 errno=ECONNREFUSED"),
            "{engine}: {}",
            run.stdout()
        );
        assert_eq!(
            std::fs::read_to_string(&data).unwrap(),
            "data\n",
            "{engine}: the program's file holds only its own data"
        );
        // The denials are in the report all the same.
        let denied = run.report["unattributed"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["verdict"] == "denied")
            .count();
        assert_eq!(denied, if engine == "preload" { 1 } else { 2 }, "{engine}");
    }
}

#[test]
fn a_stderr_pipe_socket_or_capture_file_gets_the_denial_line() {
    for engine in ["preload", "seccomp", "auto"] {
        // A pipe: the test harness captures nettrap's (and so the program's) stderr.
        let run = run_in(
            &format!("stderr-pipe-{engine}"),
            &repo(),
            &["--engine", engine, "--deny", "9"],
            &[&fx("stderr_file"), "keep", "9"],
        );
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        let lines = run
            .stderr()
            .lines()
            .filter(|l| l.starts_with("nettrap: denied "))
            .count();
        // sendto is the seccomp engine's alone.
        let want = if engine == "preload" { 1 } else { 2 };
        assert_eq!(lines, want, "{engine}: {}", run.stderr());

        let run = run_in(
            &format!("stderr-socket-{engine}"),
            &repo(),
            &["--engine", engine, "--deny", "9"],
            &[&fx("stderr_file"), "socket", "9"],
        );
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        let out = run.stdout();
        let got = out
            .split_once("stderr_file socket: ")
            .map_or("", |(_, rest)| rest);
        assert_eq!(
            got.matches("nettrap: denied ").count(),
            want,
            "{engine}: {out}"
        );

        // A deleted file, as pytest's capture: the line lands at the program's own offset,
        // before what the program writes next.
        let run = run_in(
            &format!("stderr-tmpfile-{engine}"),
            &repo(),
            &["--engine", engine, "--deny", "9"],
            &[&fx("stderr_file"), "tmpfile", "9"],
        );
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        let out = run.stdout();
        let got = out
            .split_once("stderr_file tmpfile: ")
            .map_or("", |(_, rest)| rest);
        let lines: Vec<&str> = got.trim_end().lines().collect();
        assert_eq!(lines.len(), want + 1, "{engine}: {out}");
        assert!(
            lines[..want]
                .iter()
                .all(|l| l.starts_with("nettrap: denied ")),
            "{engine}: {out}"
        );
        assert_eq!(lines[want], "data", "{engine}: {out}");
    }
}
