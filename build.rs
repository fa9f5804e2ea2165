//! Builds the LD_PRELOAD shim (`shim/`) so the `nettrap` binary carries it inside: `cargo
//! install --path .` then gives one self-contained binary that writes the shim to a cache
//! directory at run time.
//!
//! The shim is built by a nested `cargo build` in its own target directory (so it cannot
//! deadlock on ours) with the `shim` profile (panic = abort, LTO, stripped).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    for path in [
        "shim/src",
        "shim/build.rs",
        "shim/Cargo.toml",
        "core/src",
        "core/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let target_dir = out.join("shim-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(root.join("shim/Cargo.toml"))
        .args(["--profile", "shim", "--quiet"])
        .arg("--target-dir")
        .arg(&target_dir);
    // Our own build's settings are not the shim's: drop what cargo set for this build script
    // (and clippy's wrapper), keep the toolchain, CARGO_HOME and network settings.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let ours = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("DEP_");
        let named = matches!(
            key.as_str(),
            "CARGO_ENCODED_RUSTFLAGS"
                | "CARGO_TARGET_DIR"
                | "CARGO_BUILD_TARGET_DIR"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_CRATE_NAME"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "CLIPPY_ARGS"
                | "CLIPPY_CONF_DIR"
                | "OUT_DIR"
                | "TARGET"
                | "HOST"
                | "PROFILE"
                | "OPT_LEVEL"
                | "DEBUG"
                | "NUM_JOBS"
        );
        if ours || named {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().expect("running cargo to build the shim");
    assert!(status.success(), "building the shim (shim/) failed");
    let built = target_dir.join("shim/libnettrap_shim.so");
    let bytes = std::fs::read(&built).expect("reading the built shim");
    std::fs::write(out.join("libnettrap_shim.so"), &bytes).expect("copying the shim");
    // FNV-1a of the shim: names its cache directory, so a rebuilt shim is never confused with
    // an older one of the same version.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    println!("cargo:rustc-env=NETTRAP_SHIM_KEY={hash:016x}");
    // The cargo adapter sets `CARGO_TARGET_<triple>_RUNNER` for the host nettrap runs on.
    let triple = std::env::var("TARGET").expect("TARGET");
    println!("cargo:rustc-env=NETTRAP_HOST_TRIPLE={triple}");
}
