//! The preload engine: the shim the binary carries, written to a cache directory at run time,
//! and the environment that loads it into every process of the tree.

use anyhow::{Result, bail};
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

static SHIM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libnettrap_shim.so"));
const SHIM_KEY: &str = env!("NETTRAP_SHIM_KEY");

/// Candidate cache directories, best first.
fn cache_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("NETTRAP_CACHE_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d).join("nettrap"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(h).join(".cache/nettrap"));
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    dirs.push(std::env::temp_dir().join(format!("nettrap-cache-{uid}")));
    dirs
}

/// LD_PRELOAD separates entries with spaces and colons: a path with either cannot be used.
fn preloadable(p: &Path) -> bool {
    let s = p.as_os_str().as_encoded_bytes();
    !s.contains(&b' ') && !s.contains(&b':')
}

fn install_in(dir: &Path) -> std::io::Result<PathBuf> {
    let dir = dir.join(format!("{}-{SHIM_KEY}", env!("CARGO_PKG_VERSION")));
    let path = dir.join("libnettrap_shim.so");
    if fs::read(&path).is_ok_and(|b| b == SHIM) {
        return Ok(path);
    }
    fs::create_dir_all(&dir)?;
    // Write beside, then rename: concurrent runs never see a half-written library.
    let tmp = dir.join(format!(".libnettrap_shim.so.{}", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(SHIM)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Writes the shim to the first usable cache directory; returns its path.
pub fn install() -> Result<PathBuf> {
    let mut errors = Vec::new();
    for dir in cache_dirs() {
        if !preloadable(&dir) {
            errors.push(format!("{}: contains a space or colon", dir.display()));
            continue;
        }
        match install_in(&dir) {
            Ok(p) => return Ok(p),
            Err(e) => errors.push(format!("{}: {e}", dir.display())),
        }
    }
    bail!(
        "cannot write the shim to a cache directory ({})",
        errors.join("; ")
    )
}

/// Sets up `cmd` so every dynamically linked process it starts loads the shim.
pub fn configure(cmd: &mut Command, shim: &Path) {
    let mut preload = OsString::from(shim);
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    cmd.env("LD_PRELOAD", preload);
}
