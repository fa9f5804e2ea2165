//! GitHub Actions: workflow-command annotations (`::error file=F,line=L,title=nettrap::...`)
//! for denied calls and recorded calls of `--fail-on` categories, at the call site when it is
//! known; and the Markdown job summary (the census and the top of the to-do list) that
//! `formats::step_summary` appends to `$GITHUB_STEP_SUMMARY`.

use super::payoff::{headline, percent, seconds};
use super::{IN_SUITE, Report, junit, plural};
use std::fmt::Write as _;

/// Destinations the job summary lists; the to-do list has them all.
const TOP: usize = 10;

/// A workflow command's message: `%`, CR and LF escaped.
fn data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value: as [`data`], and `:` and `,`.
fn property(s: &str) -> String {
    data(s).replace(':', "%3A").replace(',', "%2C")
}

/// `app/x.py:42 in f` -> (`app/x.py`, 42).
pub fn file_line(site: &str) -> Option<(&str, u32)> {
    let at = site.split(" in ").next()?.trim();
    let (file, line) = at.rsplit_once(':')?;
    let line = line.parse().ok()?;
    (!file.is_empty()).then_some((file, line))
}

/// One `::error` line per group of failing calls.
pub fn annotations(r: &Report) -> String {
    let mut out = String::new();
    let all = r
        .tests
        .iter()
        .flat_map(|t| t.calls.iter().map(move |c| (Some(t.test.as_str()), c)))
        .chain(r.unattributed.iter().map(|c| (None, c)));
    for (test, c) in all.filter(|(_, c)| super::fails_run(r, c)) {
        let mut props = Vec::new();
        if let Some((file, line)) = c.site.as_deref().and_then(file_line) {
            props.push(format!("file={}", property(file)));
            props.push(format!("line={line}"));
        }
        props.push("title=nettrap".to_string());
        let why = if c.verdict == "denied" {
            String::new()
        } else {
            " (--fail-on)".to_string()
        };
        let in_test = match test {
            Some(t) => format!(" in {t}"),
            None => " outside any test".to_string(),
        };
        let _ = writeln!(
            out,
            "::error {}::{}{why}{in_test}",
            props.join(","),
            data(&junit::call_line(c))
        );
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn stake(time: f64, share: Option<f64>) -> String {
    match share {
        Some(s) => format!("{} ({})", percent(s), seconds(time)),
        None => "-".into(),
    }
}

/// The job summary: the census and the top of the to-do list, from the same model figures.
pub fn step_summary(r: &Report) -> String {
    let mut out = String::from("## nettrap\n\n");
    let offending: u64 = r
        .categories
        .iter()
        .filter(|(n, _)| n.as_str() != IN_SUITE)
        .fold(0, |n, (_, s)| n.saturating_add(s.calls));
    let scope = match r.tests_total {
        Some(total) => format!("{} of {total} tests", r.tests_with_calls),
        None => format!(
            "{} {}",
            r.tests_with_calls,
            plural(r.tests_with_calls, "test", "tests")
        ),
    };
    let _ = writeln!(
        out,
        "`{}`: {scope} made {offending} recorded or denied {}; nettrap exited {}.\n",
        cell(&r.command.join(" ")),
        plural(offending, "call", "calls"),
        r.exit_code
    );
    if let Some(v) = super::violation(r) {
        let _ = writeln!(out, "**Policy violated**: {v}.\n");
    }
    let mut cats: Vec<_> = r
        .categories
        .iter()
        .filter(|(n, s)| s.calls > 0 && n.as_str() != IN_SUITE)
        .collect();
    if cats.is_empty() {
        out.push_str("No external calls.\n\n");
        return out;
    }
    cats.sort_by(|a, b| (b.1.tests, b.1.calls, a.0).cmp(&(a.1.tests, a.1.calls, b.0)));
    out.push_str(
        "| category | ports | tests | calls | denied | outside any test | time at stake |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for (name, s) in cats {
        let ports: Vec<String> = s.ports_seen.iter().map(u16::to_string).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(name),
            ports.join(", "),
            s.tests,
            s.calls,
            s.denied,
            s.unattributed,
            stake(s.payoff.time_at_stake_s, s.payoff.share_of_suite)
        );
    }
    let _ = writeln!(
        out,
        "\n### Mocking to-do, largest payoff first\n\n{}\n",
        headline(r)
    );
    out.push_str(
        "| category | destination | tests | calls | time at stake |\n|---|---|---:|---:|---:|\n",
    );
    for d in r.destinations.iter().take(TOP) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cell(&d.category),
            cell(&d.destination),
            d.tests,
            d.calls,
            stake(d.payoff.time_at_stake_s, d.payoff.share_of_suite)
        );
    }
    if r.destinations.len() > TOP {
        let _ = writeln!(
            out,
            "\n{} more in the to-do list.",
            r.destinations.len() - TOP
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_sites_and_escapes() {
        assert_eq!(file_line("app/x.py:42 in f"), Some(("app/x.py", 42)));
        assert_eq!(file_line("C:/x.py:7"), Some(("C:/x.py", 7)));
        assert_eq!(file_line("<string>"), None);
        assert_eq!(data("50%\nx"), "50%25%0Ax");
        assert_eq!(property("a:b,c"), "a%3Ab%2Cc");
    }
}
