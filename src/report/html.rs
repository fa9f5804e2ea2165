//! `nettrap report FILE --format html`: one self-contained page.
//!
//! Everything is inline (CSS, a small script, an SVG chart rendered here): the page fetches
//! nothing from anywhere, and its Content-Security-Policy forbids it to. It is readable without
//! JavaScript (the census, the tests, the unattributed calls and the to-do list are plain HTML
//! tables and lists); with it, the tests table sorts by column and filters by text, category and
//! "with external calls", and the page honours the same settings from its URL fragment or query
//! (`page.html#filter=redis&sort=duration`), so a view can be linked. The script reads the
//! report from the page itself (data attributes, and for a suite of more than [`PRE_RENDERED`]
//! tests a JSON block of the others, which it renders on demand): no report text is ever put
//! inside a script that runs, and the JSON block escapes `<`, `>` and `&`.
//!
//! Every text from the report (test ids, hosts, command lines, sites) goes through [`esc`].

use super::render::{dest, summary, todo};
use super::{CallEntry, IN_SUITE, Report, plural, unverified, violation};
use std::fmt::Write;

/// Text as HTML text or a double- or single-quoted attribute value.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A value for the page's fragment (`#category=...`): what `URLSearchParams` decodes back.
fn fragment_value(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `12 ms`, `1.50 s`, `2m05s`.
fn duration(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "—".into();
    }
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.2} s")
    } else {
        let m = (s / 60.0).floor();
        format!("{m:.0}m{:02.0}s", (s - m * 60.0).floor())
    }
}

/// The categories the summary lists (offending calls, not the suite's own servers), largest
/// first, as the summary orders them.
fn census(r: &Report) -> Vec<(&String, &super::CategorySummary)> {
    let mut cats: Vec<_> = r
        .categories
        .iter()
        .filter(|(n, s)| s.calls > 0 && n.as_str() != IN_SUITE)
        .collect();
    cats.sort_by(|a, b| (b.1.tests, b.1.calls, a.0).cmp(&(a.1.tests, a.1.calls, b.0)));
    cats
}

/// Tests per category as horizontal bars, with the call counts beside them.
fn chart(r: &Report) -> String {
    let cats = census(r);
    if cats.is_empty() {
        return String::new();
    }
    let (label_w, bar_w, row_h) = (150.0, 330.0, 26.0);
    // Room right of the longest bar for its value ("1234 tests, 1000000 calls"): about 7.5 px a
    // character at the chart's font size.
    let longest = cats
        .iter()
        .map(|(_, s)| format!("{} tests, {} calls", s.tests, s.calls).len())
        .max()
        .unwrap_or(0);
    let width = label_w + bar_w + (longest as f64 * 7.5 + 16.0).max(150.0);
    let height = row_h * cats.len() as f64 + 8.0;
    let max = cats.iter().map(|(_, s)| s.tests).max().unwrap_or(0).max(1) as f64;
    let mut out = format!(
        "<svg id=\"chart\" class=\"chart\" role=\"img\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" aria-label=\"tests per category\">\n"
    );
    for (i, (name, s)) in cats.iter().enumerate() {
        let y = 4.0 + row_h * i as f64;
        let w = (s.tests as f64 / max * bar_w).max(if s.tests > 0 { 2.0 } else { 0.0 });
        let class = if s.denied > 0 { "bar denied" } else { "bar" };
        let what = format!(
            "{} {}, {} {}",
            s.tests,
            plural(s.tests, "test", "tests"),
            s.calls,
            plural(s.calls, "call", "calls")
        );
        let _ = writeln!(
            out,
            "<a href=\"#category={frag}\" data-category=\"{n}\"><title>{n}: {w_}</title>\
             <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{n}</text>\
             <rect class=\"{class}\" x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{h}\" rx=\"3\"></rect>\
             <text class=\"value\" x=\"{vx:.1}\" y=\"{ty}\">{w_}</text></a>",
            frag = esc(&fragment_value(name)),
            n = esc(name),
            w_ = esc(&what),
            lx = label_w - 8.0,
            ty = y + row_h / 2.0 + 1.0,
            h = row_h - 8.0,
            vx = label_w + w + 6.0,
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The call site as shown: `app/x.py:3 in f (requests)`, with the fixture when there is one.
fn site(c: &CallEntry) -> String {
    let mut s = match (&c.site, &c.library) {
        (Some(site), Some(lib)) => format!("{site} ({lib})"),
        (Some(site), None) => site.clone(),
        (None, Some(lib)) => format!("({lib})"),
        (None, None) => String::new(),
    };
    if let Some(f) = &c.fixture {
        if !s.is_empty() {
            s.push_str("; ");
        }
        let _ = write!(s, "fixture {f}");
    }
    s
}

fn destination(c: &CallEntry) -> String {
    let mut d = esc(&dest(c));
    if c.served_by_suite {
        d.push_str(" <span class=\"note\">served by the suite</span>");
    }
    d
}

fn verdict(c: &CallEntry) -> String {
    format!(
        "<span class=\"verdict {v}\">{v}</span>",
        v = esc(&c.verdict)
    )
}

/// A test's calls as a nested table.
fn calls_table(calls: &[CallEntry]) -> String {
    let mut out = String::from(
        "<table class=\"calls\"><thead><tr><th>Category</th><th>Destination</th><th>Verdict</th>\
         <th class=\"num\">Count</th><th>Phase</th><th>Call site</th></tr></thead><tbody>",
    );
    for c in calls {
        let _ = write!(
            out,
            "<tr class=\"call\" data-category=\"{cat}\"><td>{cat}</td><td>{d}</td><td>{v}</td>\
             <td class=\"num\">{n}</td><td>{p}</td><td class=\"site\">{s}</td></tr>",
            cat = esc(&c.category),
            d = destination(c),
            v = verdict(c),
            n = c.count,
            p = esc(c.phase.as_deref().unwrap_or("")),
            s = esc(&site(c)),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// One line of the to-do list's Markdown with its `code` spans, escaped.
fn inline(md: &str) -> String {
    let mut out = String::new();
    for (i, part) in md.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", esc(part));
        } else {
            out.push_str(&esc(part));
        }
    }
    out
}

/// Items of one list of the to-do list the page shows; the rest are counted (the Markdown to-do
/// list has them all).
pub const TODO_ITEMS: usize = 100;

/// The to-do list (as `todo` writes it: headings, paragraphs, `- [ ]` items) as HTML, each list
/// cut at [`TODO_ITEMS`] items.
fn todo_html(md: &str) -> String {
    let mut out = String::new();
    let mut list = false;
    // Items of the current list, and how many of them were left out.
    let (mut items, mut left) = (0usize, 0usize);
    let end_list = |out: &mut String, left: &mut usize| {
        if *left > 0 {
            let _ = writeln!(
                out,
                "<li class=\"note\">… and {left} more {} (the Markdown to-do list, \
                 <code>--format markdown</code>, lists them all)</li>",
                plural(*left as u64, "test", "tests")
            );
            *left = 0;
        }
        out.push_str("</ul>\n");
    };
    // The lines of the paragraph being read (a paragraph may wrap over several).
    let mut para: Vec<&str> = Vec::new();
    let end_para = |out: &mut String, para: &mut Vec<&str>| {
        if !para.is_empty() {
            let _ = writeln!(out, "<p>{}</p>", inline(&para.join(" ")));
            para.clear();
        }
    };
    for line in md.lines() {
        let item = line.strip_prefix("- [ ] ");
        if list && item.is_none() {
            end_list(&mut out, &mut left);
            list = false;
        }
        if item.is_some() || line.starts_with('#') || line.trim().is_empty() {
            end_para(&mut out, &mut para);
        }
        if let Some(item) = item {
            if !list {
                out.push_str("<ul class=\"todo\">\n");
                list = true;
                items = 0;
            }
            items += 1;
            if items > TODO_ITEMS {
                left += 1;
                continue;
            }
            let _ = writeln!(
                out,
                "<li><label><input type=\"checkbox\"> {}</label></li>",
                inline(item)
            );
            continue;
        }
        let level = line.bytes().take_while(|&b| b == b'#').count();
        if (1..=4).contains(&level) && line.as_bytes().get(level) == Some(&b' ') {
            // The page's own title is h1: the list's headings go one level down.
            if level == 1 {
                continue;
            }
            let h = level + 1;
            let _ = writeln!(out, "<h{h}>{}</h{h}>", inline(&line[level + 1..]));
        } else if !line.trim().is_empty() {
            para.push(line);
        }
    }
    end_para(&mut out, &mut para);
    if list {
        end_list(&mut out, &mut left);
    }
    out
}

/// Tests a page renders as HTML rows; past that, the rest go in a compact JSON block that the
/// script renders on demand (a 10,000-test suite's page stays a few MB and opens in seconds).
pub const PRE_RENDERED: usize = 500;

/// External calls (recorded or denied, not to the suite's own servers) of a test.
fn external(t: &super::TestEntry) -> u64 {
    t.calls
        .iter()
        .filter(|c| c.offending())
        .fold(0, |n, c| n.saturating_add(c.count))
}

/// (tests rendered as rows, tests left to the script), as indexes in the report. All of them
/// when there are at most [`PRE_RENDERED`]; else the largest payoff first (time at stake, then
/// external calls, then report order) up to it, and the rest in report order.
fn split_tests(r: &Report) -> (Vec<usize>, Vec<usize>) {
    let all: Vec<usize> = (0..r.tests.len()).collect();
    if all.len() <= PRE_RENDERED {
        return (all, Vec::new());
    }
    let mut by_payoff = all.clone();
    let stake = |i: usize| r.tests[i].payoff.time_at_stake_s;
    by_payoff.sort_by(|&a, &b| {
        stake(b)
            .total_cmp(&stake(a))
            .then(external(&r.tests[b]).cmp(&external(&r.tests[a])))
            .then(a.cmp(&b))
    });
    let mut more = by_payoff.split_off(PRE_RENDERED);
    more.sort_unstable();
    (by_payoff, more)
}

/// One row of the tests table; `index`: the test's place in the report (the script's default
/// order).
fn test_row(out: &mut String, t: &super::TestEntry, index: usize) {
    let outcome = t.outcome.as_deref().unwrap_or("");
    let _ = writeln!(
        out,
        "<tr class=\"test\" data-index=\"{index}\" data-test=\"{id}\" data-outcome=\"{o}\" data-duration=\"{d}\" data-calls=\"{external}\">\
         <td class=\"id\">{id}</td><td><span class=\"outcome {o}\">{os}</span></td>\
         <td class=\"num\">{ds}</td><td class=\"num\">{external}</td><td>{calls}</td></tr>",
        id = esc(&t.test),
        o = esc(outcome),
        os = if outcome.is_empty() {
            "—".into()
        } else {
            esc(outcome)
        },
        d = t.duration_s.map(|d| d.to_string()).unwrap_or_default(),
        ds = t.duration_s.map_or_else(|| "—".into(), duration),
        external = external(t),
        calls = if t.calls.is_empty() {
            String::from("<span class=\"none\">none</span>")
        } else {
            calls_table(&t.calls)
        },
    );
}

/// The tests the page does not render as rows, for its script: `{"strings": [...], "tests":
/// [[index, id, outcome, duration or null, external calls, [[category, destination, verdict,
/// count, phase, call site, served by the suite (0/1)], ...]], ...]}`, the call's texts as
/// indexes into `strings` (a suite repeats them). Safe inside the page's `<script
/// type="application/json">` (never run: the page's policy runs only its own nonce'd script):
/// `<`, `>` and `&` are written as JSON escapes, so no text can close the element.
fn more_tests_json(r: &Report, more: &[usize]) -> String {
    use serde_json::{Value, json};
    let mut strings: Vec<String> = Vec::new();
    let mut ids: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut id = |s: String| -> usize {
        if let Some(&i) = ids.get(&s) {
            return i;
        }
        strings.push(s.clone());
        ids.insert(s, strings.len() - 1);
        strings.len() - 1
    };
    let tests: Vec<Value> = more
        .iter()
        .map(|&i| {
            let t = &r.tests[i];
            let calls: Vec<Value> = t
                .calls
                .iter()
                .map(|c| {
                    json!([
                        id(c.category.clone()),
                        id(dest(c)),
                        id(c.verdict.clone()),
                        c.count,
                        id(c.phase.clone().unwrap_or_default()),
                        id(site(c)),
                        u8::from(c.served_by_suite)
                    ])
                })
                .collect();
            json!([
                i,
                t.test,
                t.outcome.as_deref().unwrap_or(""),
                t.duration_s,
                external(t),
                calls
            ])
        })
        .collect();
    script_safe(&json!({ "strings": strings, "tests": tests }).to_string())
}

/// JSON text that no HTML parser ends early inside a `<script>` element: `<`, `>` and `&` (which
/// only occur inside its strings) as their `\\u` escapes, which JSON reads back the same.
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The page.
pub fn html(r: &Report) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let command = r.command.join(" ");
    let nonce = nonce();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; img-src data:; base-uri 'none'; form-action 'none'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>nettrap report: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&command)
    );
    let summary_text = summary(r);
    let headline = summary_text
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("nettrap: ");
    let _ = writeln!(
        out,
        "<header><h1>nettrap report</h1>\n<p class=\"headline\" id=\"headline\">{}</p>",
        esc(headline)
    );
    let _ = writeln!(
        out,
        "<dl class=\"facts\"><dt>Command</dt><dd><code>{}</code></dd><dt>Runner</dt><dd>{}</dd>\
         <dt>Engine</dt><dd>{}</dd><dt>Exit status</dt><dd>{} (the command's own: {})</dd>\
         <dt>nettrap</dt><dd>{} (report schema {})</dd></dl>",
        esc(&command),
        esc(r.runner.as_deref().unwrap_or("none")),
        esc(&r.engine),
        r.exit_code,
        r.command_exit_code,
        esc(&r.nettrap_version),
        r.schema_version,
    );
    if let Some(v) = violation(r) {
        let _ = writeln!(out, "<p class=\"alert\">Policy violated: {}.</p>", esc(&v));
    }
    if let Some(u) = unverified(r) {
        let _ = writeln!(
            out,
            "<p class=\"alert\">Calls may have escaped the policy: {}.</p>",
            esc(&u)
        );
    }
    out.push_str("</header>\n<main>\n");

    // Census.
    out.push_str("<section id=\"census\"><h2>Census</h2>\n");
    out.push_str(&chart(r));
    out.push_str(
        "<table id=\"categories\"><thead><tr><th>Category</th><th>Ports seen</th>\
         <th class=\"num\">Tests</th><th class=\"num\">Calls</th><th class=\"num\">Recorded</th>\
         <th class=\"num\">Denied</th><th class=\"num\">Allowed</th></tr></thead><tbody>\n",
    );
    let listed = census(r);
    let others = r
        .categories
        .iter()
        .filter(|(n, _)| !listed.iter().any(|(m, _)| m == n));
    for (name, s) in listed.iter().copied().chain(others) {
        let ports: Vec<String> = s.ports_seen.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(
            out,
            "<tr class=\"category\" data-category=\"{n}\" data-tests=\"{t}\" data-calls=\"{c}\">\
             <td><a href=\"#category={f}\">{n}</a></td><td>{p}</td><td class=\"num\">{t}</td>\
             <td class=\"num\">{c}</td><td class=\"num\">{rec}</td><td class=\"num\">{den}</td>\
             <td class=\"num\">{al}</td></tr>",
            n = esc(name),
            f = esc(&fragment_value(name)),
            t = s.tests,
            c = s.calls,
            p = esc(&ports.join(", ")),
            rec = s.recorded,
            den = s.denied,
            al = s.allowed,
        );
    }
    out.push_str("</tbody></table>\n");
    let _ = writeln!(
        out,
        "<details><summary>Summary as printed</summary><pre id=\"summary\">{}</pre></details>\n</section>",
        esc(&summary_text)
    );

    // Tests.
    let total = r.tests.len();
    let _ = writeln!(
        out,
        "<section id=\"tests\"><h2>Tests</h2>\n<p>{} with external calls of {} {} listed{}.</p>",
        r.tests_with_calls,
        total,
        plural(total as u64, "test", "tests"),
        if r.tests_total.is_none() {
            " (no runner adapter reported the tests: only those with calls are known)"
        } else {
            ""
        }
    );
    let (pre, more) = split_tests(r);
    if !more.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"note\" id=\"pre-rendered\">The table lists the {} tests with the most at stake \
             (time at stake, then external calls) of {}; the page's script lists, sorts and filters \
             all of them.</p>",
            pre.len(),
            total
        );
    }
    out.push_str(
        "<div id=\"controls\" hidden><label>Filter <input id=\"filter\" type=\"search\" placeholder=\"test, host, call site…\"></label> \
         <label>Category <select id=\"category\"><option value=\"\">all</option>",
    );
    for name in r.categories.keys() {
        let _ = write!(out, "<option>{}</option>", esc(name));
    }
    out.push_str(
        "</select></label> <label><input id=\"with-calls\" type=\"checkbox\"> only tests with external calls</label> \
         <span id=\"shown\"></span></div>\n",
    );
    out.push_str(
        "<table id=\"tests-table\"><thead><tr><th data-sort=\"test\">Test</th>\
         <th data-sort=\"outcome\">Outcome</th><th data-sort=\"duration\" class=\"num\">Duration</th>\
         <th data-sort=\"calls\" class=\"num\">External calls</th><th>Calls</th></tr></thead><tbody>\n",
    );
    for &i in &pre {
        test_row(&mut out, &r.tests[i], i);
    }
    out.push_str("</tbody></table>\n");
    if !more.is_empty() {
        let _ = writeln!(
            out,
            "<script type=\"application/json\" id=\"more-tests\">{}</script>",
            more_tests_json(r, &more)
        );
    }
    out.push_str("<p><button id=\"show-more\" type=\"button\" hidden>show more</button></p>\n");
    out.push_str("</section>\n");

    // Unattributed.
    let _ = writeln!(
        out,
        "<section id=\"unattributed\"><h2>Outside any test (unattributed)</h2>"
    );
    if r.unattributed.is_empty() {
        out.push_str("<p>None: every call was made in a test.</p>\n");
    } else {
        out.push_str(
            "<table id=\"unattributed-table\"><thead><tr><th>Category</th><th>Destination</th><th>Verdict</th>\
             <th class=\"num\">Count</th><th>Call site</th><th>Process</th></tr></thead><tbody>\n",
        );
        for c in &r.unattributed {
            let role = c
                .process
                .role
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<tr class=\"call\" data-category=\"{cat}\"><td>{cat}</td><td>{d}</td><td>{v}</td>\
                 <td class=\"num\">{n}</td><td class=\"site\">{s}</td><td>pid {pid}{role} <code>{cmd}</code></td></tr>",
                cat = esc(&c.category),
                d = destination(c),
                v = verdict(c),
                n = c.count,
                s = esc(&site(c)),
                pid = c.process.pid,
                role = esc(&role),
                cmd = esc(&c.process.cmdline),
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n");

    // To-do list.
    out.push_str("<section id=\"todo\"><h2>Mocking to-do list</h2>\n");
    out.push_str(&todo_html(&todo(r)));
    out.push_str("</section>\n</main>\n");
    let _ = write!(
        out,
        "<script nonce=\"{nonce}\">{SCRIPT}</script>\n</body>\n</html>\n"
    );
    out
}

/// The script's nonce: random per page, so that only the page's own script runs (never an
/// inline handler, whatever a report holds).
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: `bytes` is a valid, writable buffer of the length passed.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // No randomness (an old kernel): still unguessable enough for a static file.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const STYLE: &str = r#"
:root { color-scheme: light; --fg: #1d232a; --muted: #5b6570; --line: #d9dee3; --bar: #3b7dd8; --deny: #c62f2f; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); margin: 0 auto; max-width: 1200px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; } h4, h5 { font-size: 14px; margin: 12px 0 4px; }
.headline { font-size: 16px; font-weight: 600; margin: 0 0 8px; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; color: var(--muted); }
.facts dt { font-weight: 600; } .facts dd { margin: 0; }
.alert { background: #fdecec; border: 1px solid #f1b5b5; color: #8a1c1c; padding: 6px 10px; border-radius: 4px; }
code, pre, .id, .site { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; white-space: nowrap; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
#categories { width: auto; margin-top: 8px; }
table.calls { margin: 0; font-size: 12.5px; } table.calls th { background: #fafbfc; font-weight: 500; }
table.calls td, table.calls th { padding: 2px 6px; }
.id { overflow-wrap: anywhere; min-width: 220px; } .site { overflow-wrap: anywhere; }
#tests-table > tbody > tr > td:last-child { width: 58%; }
.verdict, .outcome { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; }
.verdict.recorded { background: #e8f0fc; color: #1f4f9a; } .verdict.denied { background: #fdecec; color: #a12222; }
.verdict.allowed { background: #eef6ee; color: #2c6b2c; }
.outcome.passed { color: #2c6b2c; } .outcome.failed, .outcome.error { color: #a12222; font-weight: 600; }
.outcome.skipped, .outcome.xfailed { color: var(--muted); }
.note, .none { color: var(--muted); font-size: 12px; }
.chart { max-width: 100%; height: auto; font-size: 13px; }
.chart text { fill: var(--fg); dominant-baseline: middle; } .chart .value { fill: var(--muted); }
.chart .bar { fill: var(--bar); } .chart .bar.denied { fill: var(--deny); } .chart a:hover .bar { opacity: .8; }
#controls { margin: 8px 0; display: flex; flex-wrap: wrap; gap: 12px; align-items: center; }
#controls input[type=search] { width: 260px; padding: 3px 6px; }
#shown { color: var(--muted); }
th[data-sort] { cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \25B2"; } th[aria-sort=descending]::after { content: " \25BC"; }
ul.todo { list-style: none; padding-left: 4px; } ul.todo li { margin: 2px 0; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; }
"#;

/// Sorting and filtering of the tests table, from the controls and from the URL
/// (`#filter=TEXT&category=NAME&calls=1&sort=test|outcome|duration|calls&order=asc|desc`; the
/// query string works too). Numbers sort largest first unless `order=asc`. The tests the page
/// left to it (past [`PRE_RENDERED`], in the `more-tests` JSON block) are sorted and filtered
/// with the others and get their rows when first shown; at most 500 rows are shown at a time,
/// "show more" adds 500.
const SCRIPT: &str = r#"
(function () {
  'use strict';
  var table = document.getElementById('tests-table');
  if (!table) { return; }
  var body = table.tBodies[0];
  /* Tests are shown a page at a time: PAGE more per "show more". */
  var PAGE = 500;
  var limit = PAGE;
  /* Every test: its row (once made), its place in the report's order and what it is sorted and
     filtered by. The rows in the page come first; a large report's other tests come from the
     page's JSON block and get their rows when they are first shown. */
  var items = [];
  Array.prototype.forEach.call(body.rows, function (r, i) {
    if (!r.classList.contains('test')) { return; }
    var cells = Array.prototype.map.call(r.querySelectorAll('td'), function (td) { return td.textContent; });
    var cats = Array.prototype.map.call(r.querySelectorAll('tr.call'), function (c) { return c.dataset.category; });
    items.push({
      row: r, data: null, cats: cats,
      index: r.dataset.index ? parseInt(r.dataset.index, 10) : i,
      test: r.dataset.test || '', outcome: r.dataset.outcome || '', duration: r.dataset.duration || '',
      calls: parseInt(r.dataset.calls, 10) || 0, text: cells.join(' ').toLowerCase()
    });
  });
  var more = document.getElementById('more-tests');
  var strings = [];
  if (more) {
    var m = JSON.parse(more.textContent);
    strings = m.strings;
    m.tests.forEach(function (t) {
      var words = [t[1], t[2]];
      var cats = [];
      t[5].forEach(function (c) {
        cats.push(strings[c[0]]);
        words.push(strings[c[0]], strings[c[1]], strings[c[2]], String(c[3]), strings[c[4]], strings[c[5]]);
      });
      items.push({
        row: null, data: t, cats: cats, index: t[0], test: t[1], outcome: t[2],
        duration: t[3] === null ? '' : String(t[3]), calls: t[4], text: words.join(' ').toLowerCase()
      });
    });
    items.sort(function (a, b) { return a.index - b.index; });
  }
  var controls = document.getElementById('controls');
  var filter = document.getElementById('filter');
  var category = document.getElementById('category');
  var withCalls = document.getElementById('with-calls');
  var shown = document.getElementById('shown');
  var showMore = document.getElementById('show-more');
  var heads = Array.prototype.slice.call(table.tHead.querySelectorAll('th[data-sort]'));
  var numeric = { duration: true, calls: true };
  var state = { filter: '', category: '', calls: false, sort: '', order: '' };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  /* As the page's own `duration`: 12 ms, 1.50 s, 2m05s. */
  function duration(s) {
    if (!isFinite(s) || s < 0) { return '\u2014'; }
    if (s < 1) { return Math.round(s * 1000) + ' ms'; }
    if (s < 60) { return s.toFixed(2) + ' s'; }
    var m = Math.floor(s / 60), r = Math.floor(s - m * 60);
    return m + 'm' + (r < 10 ? '0' : '') + r + 's';
  }

  /* The row of a test from the JSON block, as the page renders one (texts set as text). */
  function makeRow(it) {
    var t = it.data;
    var tr = el('tr', 'test');
    tr.dataset.index = t[0]; tr.dataset.test = t[1]; tr.dataset.outcome = t[2];
    tr.dataset.duration = it.duration; tr.dataset.calls = t[4];
    tr.appendChild(el('td', 'id', t[1]));
    var o = el('td');
    o.appendChild(el('span', 'outcome ' + t[2], t[2] || '\u2014'));
    tr.appendChild(o);
    tr.appendChild(el('td', 'num', t[3] === null ? '\u2014' : duration(t[3])));
    tr.appendChild(el('td', 'num', String(t[4])));
    var cell = el('td');
    if (!t[5].length) {
      cell.appendChild(el('span', 'none', 'none'));
    } else {
      var calls = el('table', 'calls');
      var head = el('tr');
      ['Category', 'Destination', 'Verdict', 'Count', 'Phase', 'Call site'].forEach(function (h) {
        head.appendChild(el('th', h === 'Count' ? 'num' : '', h));
      });
      calls.appendChild(el('thead')).appendChild(head);
      var tb = calls.appendChild(el('tbody'));
      t[5].forEach(function (c) {
        var row = el('tr', 'call');
        row.dataset.category = strings[c[0]];
        row.appendChild(el('td', '', strings[c[0]]));
        var d = el('td', '', strings[c[1]]);
        if (c[6]) { d.appendChild(document.createTextNode(' ')); d.appendChild(el('span', 'note', 'served by the suite')); }
        row.appendChild(d);
        var v = el('td');
        v.appendChild(el('span', 'verdict ' + strings[c[2]], strings[c[2]]));
        row.appendChild(v);
        row.appendChild(el('td', 'num', String(c[3])));
        row.appendChild(el('td', '', strings[c[4]]));
        row.appendChild(el('td', 'site', strings[c[5]]));
        tb.appendChild(row);
      });
      cell.appendChild(calls);
    }
    tr.appendChild(cell);
    return tr;
  }

  function fromUrl() {
    var p = new URLSearchParams(location.search);
    new URLSearchParams(location.hash.replace(/^#/, '')).forEach(function (v, k) { p.set(k, v); });
    state.filter = p.get('filter') || '';
    state.category = p.get('category') || '';
    state.calls = p.get('calls') === '1' || p.get('calls') === 'true';
    state.sort = p.get('sort') || '';
    state.order = p.get('order') || '';
    if (state.sort && !heads.some(function (h) { return h.dataset.sort === state.sort; })) { state.sort = ''; }
  }

  function toUrl() {
    var p = new URLSearchParams();
    if (state.filter) { p.set('filter', state.filter); }
    if (state.category) { p.set('category', state.category); }
    if (state.calls) { p.set('calls', '1'); }
    if (state.sort) { p.set('sort', state.sort); }
    if (state.order) { p.set('order', state.order); }
    try { history.replaceState(null, '', '#' + p.toString()); } catch (e) { /* file: URLs may refuse */ }
  }

  function key(it, k) {
    if (k === 'duration') { return it.duration === '' ? -1 : parseFloat(it.duration); }
    if (k === 'calls') { return it.calls; }
    return it[k] || '';
  }

  function matches(it) {
    if (state.filter && it.text.indexOf(state.filter.toLowerCase()) < 0) { return false; }
    if (state.calls && !(it.calls > 0)) { return false; }
    if (state.category && it.cats.indexOf(state.category) < 0) { return false; }
    return true;
  }

  function apply() {
    filter.value = state.filter;
    category.value = state.category;
    if (category.value !== state.category) { category.value = ''; }
    withCalls.checked = state.calls;
    var order = items.slice();
    if (state.sort) {
      var k = state.sort;
      var desc = state.order ? state.order === 'desc' : !!numeric[k];
      order.sort(function (a, b) {
        var x = key(a, k), y = key(b, k);
        var c = x < y ? -1 : x > y ? 1 : 0;
        if (desc) { c = -c; }
        return c || (a.index - b.index);
      });
      heads.forEach(function (h) {
        if (h.dataset.sort === k) { h.setAttribute('aria-sort', desc ? 'descending' : 'ascending'); }
        else { h.removeAttribute('aria-sort'); }
      });
    } else {
      heads.forEach(function (h) { h.removeAttribute('aria-sort'); });
    }
    var matched = 0, n = 0;
    order.forEach(function (it) {
      var ok = matches(it);
      if (ok) { matched++; }
      var visible = ok && n < limit;
      if (visible) { n++; if (!it.row) { it.row = makeRow(it); } }
      if (it.row) {
        it.row.hidden = !visible;
        body.appendChild(it.row);
      }
    });
    shown.textContent = matched > n
      ? 'showing ' + n + ' of ' + matched + ' matching tests (' + items.length + ' tests)'
      : 'showing ' + n + ' of ' + items.length + ' tests';
    showMore.hidden = matched <= n;
  }

  function changed() { limit = PAGE; apply(); toUrl(); }
  filter.addEventListener('input', function () { state.filter = filter.value; changed(); });
  category.addEventListener('change', function () { state.category = category.value; changed(); });
  withCalls.addEventListener('change', function () { state.calls = withCalls.checked; changed(); });
  showMore.addEventListener('click', function () { limit += PAGE; apply(); });
  heads.forEach(function (h) {
    h.tabIndex = 0;
    var pick = function () {
      var k = h.dataset.sort;
      var desc = state.order ? state.order === 'desc' : !!numeric[k];
      state.order = state.sort === k ? (desc ? 'asc' : 'desc') : '';
      state.sort = k;
      changed();
    };
    h.addEventListener('click', pick);
    h.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); pick(); } });
  });
  window.addEventListener('hashchange', function () { fromUrl(); limit = PAGE; apply(); });
  controls.hidden = false;
  fromUrl();
  apply();
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            esc(r#"t<script>"a" & 'b'</script>"#),
            "t&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(fragment_value("a b/é"), "a%20b%2F%C3%A9");
    }

    #[test]
    fn json_in_the_page_cannot_close_its_script_element() {
        let text = serde_json::json!(["</script><script>alert(1)</script>", "a&b"]).to_string();
        let safe = script_safe(&text);
        assert!(!safe.contains('<') && !safe.contains('>') && !safe.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0.0123), "12 ms");
        assert_eq!(duration(1.5), "1.50 s");
        assert_eq!(duration(125.4), "2m05s");
        assert_eq!(duration(f64::NAN), "—");
    }

    #[test]
    fn todo_markdown_becomes_html() {
        let md = "# nettrap: mocking to-do list\n\n`cmd <x>`: text\n\n## redis: 1 test\n\n- [ ] `t<1>`: 1 call (call 1)\n";
        let h = todo_html(md);
        assert_eq!(
            h,
            "<p><code>cmd &lt;x&gt;</code>: text</p>\n<h3>redis: 1 test</h3>\n<ul class=\"todo\">\n\
             <li><label><input type=\"checkbox\"> <code>t&lt;1&gt;</code>: 1 call (call 1)</label></li>\n</ul>\n"
        );
    }
}
