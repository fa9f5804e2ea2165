//! Golden files: every format rendered from one saved report of a real run (the unittest demo
//! under nettrap), with what varies between runs normalised first (pids, executables, times,
//! durations and the payoff computed from them, paths of this checkout). The rendered text,
//! Markdown, JUnit, GitHub annotations and HTML are then deterministic and compared byte for
//! byte with `tests/golden/`. After an intended change of a format: `NETTRAP_UPDATE_GOLDEN=1
//! cargo test --test golden`, and review the diff of `tests/golden/` before committing it.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// What differs between two runs of the same suite, set to fixed values.
fn normalise(v: &mut Value, repo: &str) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let timing = k.ends_with("_s") || k.ends_with("_ns") || k == "share_of_suite";
                match (k.as_str(), &*v) {
                    ("pid" | "ppid", Value::Number(_)) => *v = Value::from(0),
                    ("exe", Value::String(_)) => *v = Value::from("<exe>"),
                    // The interpreter as the process names it: `python3`, or the path a
                    // version manager's shim (pyenv) or a virtual environment resolved it to.
                    ("cmdline", Value::String(c)) => {
                        let (first, rest) = c.split_once(' ').unwrap_or((c.as_str(), ""));
                        let base = first.rsplit('/').next().unwrap_or(first);
                        if base.starts_with("python") {
                            *v = Value::from(format!("python3 {rest}").trim_end().to_string());
                        }
                    }
                    (_, Value::Number(_)) if timing => *v = Value::from(0),
                    _ => normalise(v, repo),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| normalise(i, repo)),
        Value::String(s) if s.contains(repo) => *s = s.replace(repo, "<repo>"),
        _ => {}
    }
}

fn compare(name: &str, got: &str) {
    let path = repo().join("tests/golden").join(name);
    if std::env::var_os("NETTRAP_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (NETTRAP_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    });
    if got != want {
        let actual = path.with_extension("actual");
        std::fs::write(&actual, got).unwrap();
        panic!(
            "{name} differs from its golden file; what was rendered is in {} \
             (diff them; NETTRAP_UPDATE_GOLDEN=1 accepts an intended change)",
            actual.display()
        );
    }
}

/// The page's script nonce is random per rendering (its Content-Security-Policy): fixed here.
fn without_nonce(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(at) = rest.find("nonce") {
        let after = at + "nonce".len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let sep = rest.chars().next().filter(|c| *c == '-' || *c == '=');
        if let Some(sep) = sep {
            out.push(sep);
            rest = &rest[1..];
            let quoted = rest.starts_with('"');
            if quoted {
                out.push('"');
                rest = &rest[1..];
            }
            let end = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            out.push_str("NONCE");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn render(report: &Path, format: &str) -> String {
    let out = Command::new(nettrap())
        .args(["report"])
        .arg(report)
        .args(["--format", format])
        .env_remove("GITHUB_STEP_SUMMARY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{format}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_format_of_a_normalised_report_matches_its_golden_file() {
    // A denied call and a `--fail-on` category, so that every format has findings to show.
    let run = run_in(
        "golden-run",
        &repo(),
        &["--deny", "external-api", "--fail-on", "memcached"],
        &["python3", "fixtures/unittest-demo/run.py"],
    );
    assert_eq!(run.code(), 86, "{}", run.stderr());
    let mut report = run.report.clone();
    normalise(&mut report, repo().to_str().unwrap());
    let json = serde_json::to_string_pretty(&report).unwrap() + "\n";
    compare("report.json", &json);
    let file = scratch("golden").join("report.json");
    std::fs::write(&file, &json).unwrap();
    for (format, name) in [
        ("text", "report.txt"),
        ("markdown", "report.md"),
        ("junit", "report.xml"),
        ("github", "report.github"),
        ("html", "report.html"),
    ] {
        let text = render(&file, format);
        let text = if format == "html" {
            without_nonce(&text)
        } else {
            text
        };
        compare(name, &text);
    }
}
