//! The preload engine: the shim the binary carries (with the runner adapters' files), written to
//! a cache directory at run time, and the environment that loads it into every process of the
//! tree.

use crate::adapters;
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

/// LD_PRELOAD separates entries with spaces and colons, and NODE_OPTIONS (which names the Node
/// adapter) splits like a shell: a path with any of these, quotes or backslashes cannot be used.
fn preloadable(p: &Path) -> bool {
    let s = p.as_os_str().as_encoded_bytes();
    !s.iter()
        .any(|b| matches!(b, b' ' | b':' | b'"' | b'\\' | b'\''))
}

/// Names the cache directory: a rebuilt shim or changed adapter is never confused with an older
/// one of the same version.
fn key() -> String {
    format!(
        "{}-{SHIM_KEY}-{:08x}",
        env!("CARGO_PKG_VERSION"),
        adapters::FILES_HASH as u32
    )
}

/// Writes `bytes` to `path` unless a file of their length is there: beside, then renamed, so
/// concurrent runs never see a half-written file. The directory's name carries a hash of every
/// file's contents ([`key`]) and a file only ever appears whole (the rename), so a file of the
/// right length is the right file: checking its length is one `statx`, where reading it back
/// cost every run ~50 us. A file deleted meanwhile (a cache cleaner) is written again.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64) {
        return Ok(());
    }
    let dir = path.parent().expect("a file in a directory");
    fs::create_dir_all(dir)?;
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

fn install_in(dir: &Path) -> std::io::Result<Installed> {
    let dir = dir.join(key());
    let shim = dir.join(SHIM_FILE);
    write_file(&shim, SHIM)?;
    for (name, bytes) in adapters::files() {
        write_file(&dir.join(name), bytes)?;
    }
    Ok(Installed { shim, dir })
}

/// The shim's file name (the seccomp supervisor looks for it in a process's maps).
pub const SHIM_FILE: &str = "libnettrap_shim.so";

/// What `install` wrote.
pub struct Installed {
    /// The shim library.
    pub shim: PathBuf,
    /// The directory holding it and the runner adapters' files.
    pub dir: PathBuf,
}

/// Writes the shim and the adapters to the first usable cache directory.
pub fn install() -> Result<Installed> {
    let mut errors = Vec::new();
    for dir in cache_dirs() {
        if !preloadable(&dir) {
            errors.push(format!(
                "{}: contains a space, colon, quote or backslash",
                dir.display()
            ));
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
