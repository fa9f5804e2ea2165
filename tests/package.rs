//! `cargo package`: the published crate carries everything the binary needs (the shim's
//! sources, through `src/engine/shim-src`, and every runner adapter) and builds on its own,
//! away from the repository (cargo's own verification build of the packaged sources, with
//! nettrap-core taken from its package too).

mod common;
use common::*;
use std::process::Command;

#[test]
fn the_packaged_crate_carries_the_shim_and_adapters_and_builds() {
    // Its own target directory: the verification build must not wait on the one running these
    // tests (kept between runs, so only the first is slow).
    let target = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("package-check");
    // Cargo unpacks the packaged nettrap-core from its temporary registry into CARGO_HOME once
    // per version and reuses it: drop earlier unpackings so this run builds today's core.
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo")
        });
    if let Ok(registries) = std::fs::read_dir(cargo_home.join("registry/src")) {
        for reg in registries.flatten() {
            for krate in std::fs::read_dir(reg.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if krate
                    .file_name()
                    .to_string_lossy()
                    .starts_with("nettrap-core-")
                {
                    std::fs::remove_dir_all(krate.path()).unwrap();
                }
            }
        }
    }
    // Nor may the verification build reuse an earlier build of it: a registry crate of the
    // same version is never rebuilt.
    for (dir, prefix) in [
        ("debug/.fingerprint", "nettrap-core-"),
        ("debug/build", "nettrap-core-"),
        ("debug/deps", "libnettrap_core-"),
        ("debug/deps", "nettrap_core-"),
    ] {
        for e in std::fs::read_dir(target.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                let p = e.path();
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        }
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "package",
            "--workspace",
            "--exclude",
            "nettrap-shim",
            "--allow-dirty",
            "--quiet",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(repo())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo package failed:\n{err}");
    let list = |pkg: &str| {
        let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["package", "--list", "--allow-dirty", "-p", pkg])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let files = list("nettrap");
    for want in [
        "src/engine/shim-src/lib.rs",
        "src/engine/shim-src/resolve.rs",
        "src/adapters/python/sitecustomize.py",
        "src/adapters/node/preload.cjs",
        "src/adapters/java/agent/nettrap/agent/Agent.java",
        "Cargo.lock",
        "README.md",
    ] {
        assert!(
            files.lines().any(|l| l == want),
            "{want} not packaged:\n{files}"
        );
    }
    // The verification build made the shim from the packaged sources.
    let built = std::fs::read_dir(target.join("debug/build"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.path().join("out/shim-package/Cargo.toml").is_file());
    assert!(
        built,
        "the packaged build did not build the shim from its own sources"
    );
}
