//! Bad input gets one clear line and a non-zero exit; `nettrap report` renders saved reports;
//! the binary works on its own, away from the build tree.

mod common;
use common::*;

fn one_line_error(args: &[&str], dir: &std::path::Path, code: i32, needle: &str) {
    let (c, _, err) = nettrap_in(dir, args);
    assert_eq!(c, code, "{args:?}: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "{args:?} should print one line, got:\n{err}"
    );
    assert!(
        err.starts_with("nettrap: error: ") && err.contains(needle),
        "{args:?}: {err}"
    );
}

#[test]
fn bad_input_gets_one_clear_line() {
    let dir = scratch("cli-errors");
    std::fs::write(
        dir.join("bad.toml"),
        "[[rules]]\ncategory = \"redis\"\naction = \"dney\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("broken.toml"), "[[rules]\n").unwrap();
    one_line_error(&["run", "--dney", "80", "--", "true"], &dir, 2, "'--dney'");
    one_line_error(&["run"], &dir, 2, "<COMMAND>");
    one_line_error(
        &["run", "--deny", "elastic", "--", "true"],
        &dir,
        2,
        "--deny: `elastic` is neither a port",
    );
    // A category given a port, or a misspelt one: not silently a rule on a host name.
    one_line_error(
        &["run", "--deny", "redis:6379", "--", "true"],
        &dir,
        2,
        "`redis` is a category, which takes no port",
    );
    one_line_error(
        &["run", "--deny", "postgress:5432", "--", "true"],
        &dir,
        2,
        "`postgress` is not a category",
    );
    one_line_error(
        &["run", "--allow", "10.0.0.0/40", "--", "true"],
        &dir,
        2,
        "--allow `10.0.0.0/40`",
    );
    one_line_error(
        &["run", "--errno", "EWHAT", "--", "true"],
        &dir,
        2,
        "--errno: unknown errno `EWHAT`",
    );
    one_line_error(
        &["run", "--fail-on", "nosuch", "--", "true"],
        &dir,
        2,
        "--fail-on: unknown category `nosuch`",
    );
    one_line_error(
        &["run", "--policy", "bad.toml", "--", "true"],
        &dir,
        2,
        "bad.toml:3: unknown action `dney`",
    );
    one_line_error(
        &["run", "--policy", "broken.toml", "--", "true"],
        &dir,
        2,
        "broken.toml:1: ",
    );
    one_line_error(
        &["run", "--policy", "missing.toml", "--", "true"],
        &dir,
        2,
        "cannot read policy file missing.toml",
    );
    one_line_error(
        &["run", "--", "./no-such-command"],
        &dir,
        127,
        "cannot run `./no-such-command`: command not found",
    );
    std::fs::write(dir.join("not-exec"), "#!/bin/sh\n").unwrap();
    one_line_error(&["run", "--", "./not-exec"], &dir, 126, "permission denied");
    // nettrap.toml in the working directory is picked up by default.
    std::fs::copy(dir.join("bad.toml"), dir.join("nettrap.toml")).unwrap();
    one_line_error(
        &["run", "--", "true"],
        &dir,
        2,
        "nettrap.toml:3: unknown action",
    );
    std::fs::remove_file(dir.join("nettrap.toml")).unwrap();

    std::fs::write(
        dir.join("corrupt.json"),
        "{\"schema_version\": 1,\n \"tests\": [",
    )
    .unwrap();
    one_line_error(
        &["report", "corrupt.json"],
        &dir,
        2,
        "corrupt.json:2: not a nettrap report",
    );
    std::fs::write(dir.join("other.json"), "{\"hello\": 1}").unwrap();
    one_line_error(
        &["report", "other.json"],
        &dir,
        2,
        "not a nettrap report (no schema_version)",
    );
    one_line_error(
        &["report", "absent.json"],
        &dir,
        2,
        "cannot read absent.json",
    );
    one_line_error(&["report", "--format", "pdf", "x.json"], &dir, 2, "'pdf'");
}

#[test]
fn report_renders_a_saved_report_again() {
    let run = run_in(
        "rerender",
        &repo(),
        &["--deny", "9"],
        &[c_fixture("edge").to_str().unwrap(), "exit", "9"],
    );
    assert_eq!(run.code(), 86);
    let file = run.dir.join("report.json");
    let f = file.to_str().unwrap();
    let (c, text, _) = nettrap_in(&run.dir, &["report", f]);
    assert_eq!(c, 0);
    assert!(
        run.stderr().contains(&text),
        "text format is the run's summary:\n{text}\n---\n{}",
        run.stderr()
    );
    assert!(text.contains("other (9)"), "{text}");
    let (_, md, _) = nettrap_in(&run.dir, &["report", f, "--format", "markdown"]);
    assert_eq!(md, run.todo);
    let (_, json, _) = nettrap_in(&run.dir, &["report", f, "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap(),
        run.report
    );
}

#[test]
fn the_binary_carries_its_shim() {
    // As after `cargo install`: a copy of the binary elsewhere, a fresh cache directory.
    let dir = scratch("standalone");
    let bin = dir.join("nettrap");
    std::fs::copy(nettrap(), &bin).unwrap();
    let cache = dir.join("cache");
    let run = || {
        let _ = std::fs::remove_file(dir.join("nettrap-report.json"));
        let out = isolated(&[
            bin.to_str().unwrap(),
            "run",
            "--quiet",
            "--",
            c_fixture("edge").to_str().unwrap(),
            "exit",
            "9",
        ])
        .current_dir(&dir)
        .env("NETTRAP_CACHE_DIR", &cache)
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("nettrap-report.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(report["unattributed"][0]["port"], 9);
    };
    run();
    let mut files = walk(&cache);
    files.sort();
    let shims: Vec<_> = files
        .iter()
        .filter(|p| p.ends_with("libnettrap_shim.so"))
        .collect();
    assert_eq!(shims.len(), 1, "{shims:?}");
    // Cached files are checked by length, not read back: one deleted (a cache cleaner) or cut
    // short is written again by the next run, which is still intercepted.
    let shim = shims[0].clone();
    let adapter = files
        .iter()
        .find(|p| p.ends_with("sitecustomize.py"))
        .unwrap()
        .clone();
    let whole = std::fs::read(&adapter).unwrap();
    std::fs::remove_file(&shim).unwrap();
    std::fs::write(&adapter, &whole[..10]).unwrap();
    run();
    assert!(std::path::Path::new(&shim).is_file());
    assert_eq!(std::fs::read(&adapter).unwrap(), whole);
    let mut again = walk(&cache);
    again.sort();
    assert_eq!(again, files, "nothing else written");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

/// Standard descriptors that are closed when nettrap starts are opened on /dev/null (Rust's
/// start-up does it: no file nettrap opens, nor the command's, lands on one), the command gets
/// SIGPIPE at its default (nettrap ignores it; src/spawn.rs resets it), and the report is
/// written.
#[test]
fn closed_standard_descriptors_are_dev_null_and_sigpipe_is_the_commands_default() {
    use std::os::unix::process::CommandExt;
    let dir = scratch("cli-closed-fds");
    let out = dir.join("fds");
    let report = dir.join("r.json");
    let script = format!(
        "fds=$(readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2); echo \"$fds\" > {o}; \
         grep SigIgn /proc/$$/status >> {o}",
        o = out.display()
    );
    let mut cmd = std::process::Command::new(nettrap());
    cmd.args(["run", "-q", "--engine", "preload", "--report"])
        .arg(&report)
        .args(["--", "sh", "-c", &script]);
    // SAFETY: only close() between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for fd in 0..3 {
                libc::close(fd);
            }
            Ok(())
        });
    }
    let status = cmd.status().unwrap();
    assert_eq!(status.code(), Some(0));
    let seen = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[..3], ["/dev/null"; 3], "{seen}");
    // SIGPIPE is signal 13: bit 12 of the ignored set.
    let ignored = u64::from_str_radix(lines[3].trim_start_matches("SigIgn:").trim(), 16).unwrap();
    assert_eq!(ignored & (1 << 12), 0, "{seen}");
    let json = std::fs::read_to_string(&report).unwrap();
    assert!(json.contains("schema_version"), "{json}");
}
