//! What nettrap says about itself: shell completions and man pages from the clap definitions,
//! and `--version` with the engines this kernel supports (never failing where seccomp cannot
//! run).

mod common;

use common::*;
use std::process::{Command, Stdio};

#[test]
fn completions_load_in_bash_and_know_every_flag() {
    let (code, bash, err) = nettrap_in(&repo(), &["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    let script = scratch("completions").join("nettrap.bash");
    std::fs::write(&script, &bash).unwrap();
    // Loaded by a real bash: the function is registered for `nettrap`, and completing
    // `nettrap run --de` offers the flags of `run`.
    let probe = format!(
        "source '{}' && complete -p nettrap && COMP_WORDS=(nettrap run --de) COMP_CWORD=2 && \
         _nettrap nettrap --de run && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("-F _nettrap nettrap"), "{text}");
    for flag in ["--deny", "--deny-dns"] {
        assert!(
            text.lines().any(|l| l == flag),
            "{flag} not offered:\n{text}"
        );
    }
    let (_, zsh, _) = nettrap_in(&repo(), &["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef nettrap"), "{zsh}");
    assert!(zsh.contains("--fail-on"), "{zsh}");
    let (_, fish, _) = nettrap_in(&repo(), &["completions", "fish"]);
    assert!(fish.contains("complete -c nettrap"), "{fish}");
    assert!(fish.contains("-l deny-dns"), "{fish}");
    let (code, _, err) = nettrap_in(&repo(), &["completions", "tcsh"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("nettrap: error: invalid value 'tcsh'"),
        "{err}"
    );
}

#[test]
fn man_pages_render_with_man() {
    let dir = scratch("man");
    for (args, page, wants) in [
        (
            &["man"][..],
            "nettrap.1",
            &["nettrap-run(1)", "nettrap-config(1)"][..],
        ),
        (
            &["man", "run"][..],
            "nettrap-run.1",
            &["--deny-dns", "--policy", "Exit status: the command's own"][..],
        ),
    ] {
        let (code, roff, err) = nettrap_in(&repo(), args);
        assert_eq!(code, 0, "{err}");
        assert!(roff.contains(".TH nettrap"), "{roff}");
        let path = dir.join(page);
        std::fs::write(&path, &roff).unwrap();
        // Rendered by man itself (groff): a page man can read, not only roff-looking text.
        // man is not on every fresh machine (`.ci/run` installs it): without it, only the roff.
        let Ok(out) = Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(&path)
            .env("MANWIDTH", "200")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
        else {
            eprintln!("man_pages_render_with_man: man is not installed, rendering SKIPPED");
            let text = roff.replace("\\-", "-").replace("\\*(Aq", "'");
            for want in wants {
                assert!(text.contains(want), "{want:?} not in {page}");
            }
            continue;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        // Without a terminal man overstrikes bold (`X\bX`), and groff may print hyphens as
        // U+2010: compare plain text.
        let mut plain = String::new();
        for c in text.chars() {
            if c == '\u{8}' {
                plain.pop();
            } else {
                plain.push(c);
            }
        }
        let text = plain.replace(['\u{2010}', '\u{2212}'], "-");
        for want in wants {
            assert!(text.contains(want), "{want:?} not in {page}:\n{text}");
        }
    }
    let (code, _, err) = nettrap_in(&repo(), &["man", "go-exec"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("nettrap: error: man: no command `go-exec` (commands: run,"),
        "{err}"
    );
}

#[test]
fn version_names_the_engines_and_survives_a_kernel_without_seccomp() {
    let (code, text, _) = nettrap_in(&repo(), &["--version"]);
    assert_eq!(code, 0);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(concat!("nettrap ", env!("CARGO_PKG_VERSION")))
    );
    assert!(text.contains("engine preload: available"), "{text}");
    assert!(text.contains("engine seccomp: "), "{text}");
    assert_eq!(nettrap_in(&repo(), &["-V"]).1, text);

    // Inside a seccomp run the kernel refuses a second listener: --version still answers, at
    // once, and says why seccomp is out and what auto would use.
    let dir = scratch("version-seccomp");
    let report = dir.join("r.json");
    let out = isolated(&[
        nettrap(),
        "run",
        "-q",
        "--engine",
        "seccomp",
        "--report",
        report.to_str().unwrap(),
        "--",
        nettrap(),
        "--version",
    ])
    .stdin(Stdio::null())
    .output()
    .unwrap();
    let inner = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{inner}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(inner.contains("engine seccomp: unavailable ("), "{inner}");
    assert!(
        inner.contains("engine auto (the default): preload only"),
        "{inner}"
    );
}
