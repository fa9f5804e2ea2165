//! Builds the LD_PRELOAD shim (`shim/`) so the `nettrap` binary carries it inside: `cargo
//! install --path .` then gives one self-contained binary that writes the shim to a cache
//! directory at run time.
//!
//! The shim is built by a nested `cargo build` in its own target directory (so it cannot
//! deadlock on ours) with the `shim` profile (panic = abort, LTO, stripped).
//!
//! It also builds the Maven adapter's two jars (`src/adapters/java/`) when `javac` is on PATH
//! (or named by `JAVAC`; `JAVAC=` empty builds without): compiled with `--release 8` against
//! compile-only stubs of the JUnit Platform API, zipped here (stored, fixed dates: the same
//! sources give the same bytes). Without javac the binary carries no Maven adapter (cfg
//! `nettrap_java` unset) and says so when it runs Maven.

use std::path::{Path, PathBuf};
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
    // In the repository the shim is its own package (shim/); in a packaged nettrap (cargo
    // package leaves nested packages out) its sources come through `src/engine/shim-src` (a
    // link to shim/src, whose files cargo package copies) and a manifest made here.
    let manifest = if root.join("shim/Cargo.toml").is_file() {
        root.join("shim/Cargo.toml")
    } else {
        packaged_shim_manifest(&root, &out)
    };
    let target_dir = out.join("shim-target");
    if !root.join("shim/Cargo.toml").is_file() {
        // nettrap-core, unpacked from a package, may be older on disk than an earlier build
        // of the shim here (cargo judges path dependencies by mtime): build afresh.
        let _ = std::fs::remove_dir_all(&target_dir);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
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

    println!("cargo::rustc-check-cfg=cfg(nettrap_java)");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("src/adapters/java").display()
    );
    println!("cargo:rerun-if-env-changed=JAVAC");
    match java_adapter(&root.join("src/adapters/java"), &out.join("java")) {
        Ok(()) => println!("cargo:rustc-cfg=nettrap_java"),
        Err(why) => println!("cargo:warning=nettrap is built without its Maven adapter: {why}"),
    }
}

/// The shim's manifest for a packaged nettrap: the shim's own (shim/Cargo.toml) with the sources
/// and nettrap-core found where the package has them, the `shim` profile of our manifest, and
/// our Cargo.lock (so the shim gets the dependency versions nettrap was built with).
fn packaged_shim_manifest(root: &Path, out: &Path) -> PathBuf {
    let src = root.join("src/engine/shim-src/lib.rs");
    assert!(
        src.is_file(),
        "the shim's sources are in neither shim/ nor src/engine/shim-src/"
    );
    let core =
        std::env::var("DEP_NETTRAP_CORE_ROOT").expect("nettrap-core's DEP_NETTRAP_CORE_ROOT");
    let ours = std::fs::read_to_string(root.join("Cargo.toml")).expect("reading Cargo.toml");
    // The `[profile.shim]` table, up to the next table.
    let profile: String = ours
        .lines()
        .skip_while(|l| l.trim() != "[profile.shim]")
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.trim_start().starts_with('['))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    assert!(!profile.is_empty(), "Cargo.toml has no [profile.shim]");
    let dir = out.join("shim-package");
    std::fs::create_dir_all(&dir).expect("creating the shim's package directory");
    let manifest = format!(
        "[package]\nname = \"nettrap-shim\"\nversion = \"{version}\"\nedition = \"2024\"\n\n\
         build = {build:?}\n\n[lib]\npath = {src:?}\ncrate-type = [\"cdylib\"]\ntest = false\ndoctest = false\n\n\
         [dependencies]\nnettrap-core = {{ path = {core:?} }}\n\
         libc = {{ version = \"0.2\", default-features = false }}\n\n[workspace]\n\n{profile}",
        version = std::env::var("CARGO_PKG_VERSION").expect("CARGO_PKG_VERSION"),
        src = src.display().to_string(),
        build = root
            .join("src/engine/shim-src/build.rs")
            .display()
            .to_string(),
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("writing the shim's manifest");
    if let Ok(lock) = std::fs::read(root.join("Cargo.lock")) {
        std::fs::write(dir.join("Cargo.lock"), lock).expect("writing the shim's Cargo.lock");
    }
    dir.join("Cargo.toml")
}

/// Compiles the Maven adapter into `out/nettrap-agent.jar` and `out/nettrap-junit.jar`.
fn java_adapter(src: &Path, out: &Path) -> Result<(), String> {
    let javac = match std::env::var_os("JAVAC") {
        Some(j) if j.is_empty() => return Err("JAVAC is set empty".into()),
        Some(j) => j,
        None => "javac".into(),
    };
    let _ = std::fs::remove_dir_all(out);
    let classes = |name: &str| out.join(format!("{name}-classes"));
    let compile = |name: &str, extra: &[&std::ffi::OsStr]| -> Result<(), String> {
        let mut cmd = Command::new(&javac);
        cmd.args([
            "--release",
            "8",
            "-Xlint:-options",
            "-nowarn",
            "-implicit:none",
            "-d",
        ])
        .arg(classes(name))
        .args(extra);
        for f in files(&src.join(name)) {
            if f.extension().is_some_and(|e| e == "java") {
                cmd.arg(f);
            }
        }
        let o = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", javac.to_string_lossy()))?;
        if !o.status.success() {
            return Err(format!(
                "javac failed on src/adapters/java/{name}: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            ));
        }
        Ok(())
    };
    compile("agent", &[])?;
    let agent_classes = classes("agent");
    let stubs = src.join("stubs");
    compile(
        "junit",
        &[
            "-cp".as_ref(),
            agent_classes.as_os_str(),
            "-sourcepath".as_ref(),
            stubs.as_os_str(),
        ],
    )?;
    let manifest = b"Manifest-Version: 1.0\nPremain-Class: nettrap.agent.Agent\n\n".to_vec();
    let mut agent = vec![("META-INF/MANIFEST.MF".to_string(), manifest)];
    agent.extend(tree(&agent_classes));
    let mut junit = tree(&classes("junit"));
    junit.extend(
        tree(&src.join("junit"))
            .into_iter()
            .filter(|(n, _)| n.starts_with("META-INF/")),
    );
    std::fs::write(out.join("nettrap-agent.jar"), zip(&agent)).map_err(|e| e.to_string())?;
    std::fs::write(out.join("nettrap-junit.jar"), zip(&junit)).map_err(|e| e.to_string())?;
    Ok(())
}

/// Every file under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                v.extend(files(&p));
            } else {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// (path relative to `dir` with `/`, contents) of every file under it.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files(dir)
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(dir)
                .expect("under dir")
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read(&p).expect("reading a compiled class"))
        })
        .collect()
}

/// A zip archive of `entries`, stored (no compression), dated 1980-01-01.
fn zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let (mut out, mut central) = (Vec::new(), Vec::new());
    let date: u16 = 1 << 5 | 1; // 1980-01-01
    for (name, data) in entries {
        let (crc, size, offset) = (crc32(data), data.len() as u32, out.len() as u32);
        let common = |v: &mut Vec<u8>| {
            v.extend(20u16.to_le_bytes()); // version needed
            v.extend(0u16.to_le_bytes()); // flags
            v.extend(0u16.to_le_bytes()); // stored
            v.extend(0u16.to_le_bytes()); // time
            v.extend(date.to_le_bytes());
            v.extend(crc.to_le_bytes());
            v.extend(size.to_le_bytes());
            v.extend(size.to_le_bytes());
            v.extend((name.len() as u16).to_le_bytes());
            v.extend(0u16.to_le_bytes()); // extra length
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend(name.as_bytes());
        out.extend(data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes()); // version made by
        common(&mut central);
        central.extend([0u8; 8]); // comment length, disk, internal attributes, external (2 of 4)
        central.extend([0u8; 2]);
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let (cd_offset, cd_size) = (out.len() as u32, central.len() as u32);
    out.extend(central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]); // disk numbers
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend(cd_size.to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes()); // comment length
    out
}
