//! Which rendering goes where: `nettrap report FILE --format F [-o PATH]`, and `nettrap run
//! --format F[=PATH]` (repeatable) with `--junit FILE`. Every format renders the one report
//! model: `text` (the summary), `json` (the report), `markdown` (the to-do list), `junit`
//! (see `junit`) and `github` (see `github`).

use super::{Report, github, junit, render};
use crate::cli::{Format, ReportArgs};
use crate::outputs;
use anyhow::{Context, Result};
use clap::ValueEnum;
use std::path::{Path, PathBuf};

/// `--format F[=PATH]` of `nettrap run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatSpec {
    pub format: Format,
    /// Where to write it; stdout when not given.
    pub path: Option<PathBuf>,
}

/// Parses `junit`, `junit=report.xml`.
pub fn parse_spec(s: &str) -> Result<FormatSpec, String> {
    let (name, path) = match s.split_once('=') {
        Some((n, p)) => (n, Some(p)),
        None => (s, None),
    };
    let format = Format::from_str(name, true).map_err(|_| {
        format!("unknown format `{name}` (expected text, json, markdown, junit, github or html)")
    })?;
    if path.is_some_and(str::is_empty) {
        return Err(format!("`{s}`: no path after `=`"));
    }
    Ok(FormatSpec {
        format,
        path: path.map(PathBuf::from),
    })
}

/// Renders `r` as `format`. `junit`: the runner's JUnit XML to add the findings to.
pub fn render(r: &Report, format: Format, junit: Option<&[u8]>) -> Result<String> {
    Ok(match format {
        Format::Text => render::summary(r),
        Format::Markdown => render::todo(r),
        Format::Json => serde_json::to_string_pretty(r)? + "\n",
        Format::Junit => match junit {
            Some(xml) => junit::merge(r, xml)?,
            None => junit::own(r),
        },
        Format::Github => github::annotations(r),
        Format::Html => super::html::html(r),
    })
}

/// Appends the Markdown summary to `$GITHUB_STEP_SUMMARY`, when it is set.
pub fn step_summary(r: &Report) -> Result<()> {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let path = PathBuf::from(path);
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(github::step_summary(r).as_bytes()))
        .with_context(|| format!("cannot append to $GITHUB_STEP_SUMMARY ({})", path.display()))
}

/// Writes `text` to `path` atomically, or to stdout (a closed pipe ends it quietly).
fn emit(path: Option<&Path>, text: &str) -> std::io::Result<()> {
    match path {
        Some(p) => outputs::write(&outputs::resolve(p), text.as_bytes()),
        None => {
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(text.as_bytes());
            Ok(())
        }
    }
}

fn read_junit(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("--junit: cannot read {}", path.display()))
}

/// `nettrap report FILE --format F [-o PATH] [--junit FILE]`.
pub fn report_command(r: &Report, args: &ReportArgs) -> Result<u8> {
    let xml = match (&args.junit, args.format) {
        (Some(p), Format::Junit) => Some(read_junit(p)?),
        (Some(_), _) => anyhow::bail!("--junit is for --format junit"),
        _ => None,
    };
    let text = render(r, args.format, xml.as_deref()).with_context(|| {
        args.junit
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string())
    })?;
    if let Some(p) = &args.output {
        outputs::check(&outputs::resolve(p))
            .with_context(|| format!("-o: cannot write {}", p.display()))?;
    }
    emit(args.output.as_deref(), &text).with_context(|| {
        format!(
            "-o: cannot write {}",
            args.output.as_deref().unwrap_or(Path::new("-")).display()
        )
    })?;
    if args.format == Format::Github
        && let Err(e) = step_summary(r)
    {
        crate::say!("nettrap: warning: {e:#}");
    }
    Ok(0)
}

/// The renderings `nettrap run` writes beside the report: `--format` specs, and `--junit FILE`
/// alone (the findings added to FILE in place).
pub fn run_specs(formats: &[FormatSpec], junit: Option<&Path>) -> Vec<FormatSpec> {
    let mut specs = formats.to_vec();
    if let Some(j) = junit
        && !specs.iter().any(|s| s.format == Format::Junit)
    {
        specs.push(FormatSpec {
            format: Format::Junit,
            path: Some(j.to_path_buf()),
        });
    }
    specs
}

/// Before the command runs: every output path can be written.
pub fn check_run(specs: &[FormatSpec]) -> Result<()> {
    for s in specs {
        if let Some(p) = &s.path {
            outputs::check(&outputs::resolve(p)).with_context(|| {
                format!(
                    "--format {}: cannot write {}",
                    s.format
                        .to_possible_value()
                        .map_or("?".into(), |v| v.get_name().to_string()),
                    p.display()
                )
            })?;
        }
    }
    Ok(())
}

/// After the command ran: writes every rendering; what failed, one line each.
pub fn write_run(r: &Report, specs: &[FormatSpec], junit: Option<&Path>) -> Vec<String> {
    let mut failed = Vec::new();
    for s in specs {
        // The runner's JUnit, if it wrote one: else nettrap's own.
        let xml = match (s.format, junit) {
            (Format::Junit, Some(p)) if p.exists() => match read_junit(p) {
                Ok(x) => Some(x),
                Err(e) => {
                    failed.push(format!("{e:#}"));
                    continue;
                }
            },
            _ => None,
        };
        let what = s
            .path
            .as_deref()
            .map_or("stdout".into(), |p| p.display().to_string());
        let result = render(r, s.format, xml.as_deref())
            .with_context(|| junit.map_or(String::new(), |p| p.display().to_string()))
            .and_then(|text| {
                emit(s.path.as_deref(), &text).with_context(|| format!("cannot write {what}"))
            });
        if let Err(e) = result {
            failed.push(format!("{e:#}"));
        }
        // The job summary is a courtesy of the CI: a file that cannot be appended to (a
        // container without it mounted) costs a warning, not the run's status.
        if s.format == Format::Github
            && let Err(e) = step_summary(r)
        {
            crate::say!("nettrap: warning: {e:#}");
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_specs() {
        assert_eq!(
            parse_spec("junit=out/r.xml").unwrap(),
            FormatSpec {
                format: Format::Junit,
                path: Some("out/r.xml".into())
            }
        );
        assert_eq!(parse_spec("github").unwrap().path, None);
        assert!(
            parse_spec("xml")
                .unwrap_err()
                .contains("unknown format `xml`")
        );
        assert!(parse_spec("junit=").is_err());
    }
}
