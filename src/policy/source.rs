//! Which policy file a run reads: `--policy FILE`, else the closest one from the working
//! directory up, the way ruff finds its configuration.
//!
//! In each directory, from the working directory to the root: `nettrap.toml` if present, else
//! `pyproject.toml` if it holds a `[tool.nettrap]` table (a `pyproject.toml` without one is
//! passed over, as ruff passes over one without `[tool.ruff]`). The first directory that has
//! either decides, and only that one file is read: files are never merged, so in a directory
//! with both, `nettrap.toml` wins whole and `[tool.nettrap]` is ignored (`nettrap config` says
//! so). `--policy` names either kind: a file named `pyproject.toml` is read for its
//! `[tool.nettrap]` table, any other as a `nettrap.toml`.

use anyhow::{Result, anyhow};
use std::path::Path;

/// The policy file found for a run.
pub struct Source {
    /// As shown in errors, rule labels and `nettrap config`: the `--policy` path as given, or
    /// the found file relative to the working directory (`nettrap.toml`, `../pyproject.toml`),
    /// so shards run from the same place label their rules alike on every machine.
    pub shown: String,
    /// A `pyproject.toml` (its `[tool.nettrap]` table), not a `nettrap.toml`.
    pub pyproject: bool,
    pub text: String,
    /// How it was chosen, for `nettrap config`.
    pub why: String,
    /// A `[tool.nettrap]` beside a found `nettrap.toml`, which it overrides (ignored whole).
    pub shadowed: Option<String>,
    /// A found `pyproject.toml`'s table, parsed while looking for it (None for `--policy`).
    pub table: Option<super::file::Table>,
}

fn read(path: &Path, shown: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read policy file {shown}: {e}"))
}

fn is_pyproject(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "pyproject.toml")
}

/// The policy file for `--policy` (if given) or found from `cwd` up; `None`: built-in defaults.
pub fn find(explicit: Option<&Path>, cwd: &Path) -> Result<Option<Source>> {
    if let Some(path) = explicit {
        let shown = path.display().to_string();
        let text = read(path, &shown)?;
        return Ok(Some(Source {
            pyproject: is_pyproject(path),
            shown,
            text,
            why: "--policy".into(),
            shadowed: None,
            table: None,
        }));
    }
    let mut up = String::new();
    for dir in cwd.ancestors() {
        let ours = dir.join("nettrap.toml");
        let py = dir.join("pyproject.toml");
        let py_shown = format!("{up}pyproject.toml");
        if ours.is_file() {
            // nettrap.toml wins whole: the pyproject beside it is looked at only for the note
            // that its table is ignored, never to fail the run.
            let has_table = std::fs::read_to_string(&py).is_ok_and(|t| {
                names_nettrap(&t) && super::file::pyproject_has_table(&t, &py_shown).unwrap_or(true)
            });
            let shown = format!("{up}nettrap.toml");
            let text = read(&ours, &shown)?;
            return Ok(Some(Source {
                shown,
                pyproject: false,
                text,
                why: found_why(up.is_empty()),
                shadowed: has_table.then(|| format!("{py_shown} [tool.nettrap]")),
                table: None,
            }));
        }
        let py_text = match py.is_file() {
            true => Some(read(&py, &py_shown)?),
            false => None,
        };
        let table = match &py_text {
            Some(t) if names_nettrap(t) => super::file::pyproject_table(t, &py_shown)?,
            _ => None,
        };
        if table.is_some() {
            return Ok(Some(Source {
                shown: py_shown,
                pyproject: true,
                text: py_text.unwrap_or_default(),
                why: found_why(up.is_empty()),
                shadowed: None,
                table,
            }));
        }
        up.push_str("../");
    }
    Ok(None)
}

/// Whether a `pyproject.toml` could hold a `[tool.nettrap]` table at all. One that never names
/// nettrap is passed over unparsed: another tool's syntax error in it (or in one in a parent
/// directory, up to `/`) is for that tool to report, and must not stop a run it has nothing to
/// say about.
fn names_nettrap(text: &str) -> bool {
    text.contains("nettrap")
}

fn found_why(here: bool) -> String {
    match here {
        true => "found in the working directory".into(),
        false => "the closest to the working directory, found walking up".into(),
    }
}
