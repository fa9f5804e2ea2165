//! `nettrap report FILE --format html`: one self-contained page.
//!
//! Everything is inline (CSS, a small script, an SVG chart rendered here): the page fetches
//! nothing from anywhere, and its Content-Security-Policy forbids it to. It is readable without
//! JavaScript (the census, the tests, the unattributed calls and the to-do list are plain HTML
//! tables and lists); with it, the tests table sorts by column and filters by text, category and
//! "with external calls", and the page honours the same settings from its URL fragment or query
//! (`page.html#filter=redis&sort=duration`), so a view can be linked. The script reads the
//! report from the page itself (data attributes): no report text is ever put inside a script.
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
    let width = label_w + bar_w + 150.0;
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

/// The to-do list (as `todo` writes it: headings, paragraphs, `- [ ]` items) as HTML.
fn todo_html(md: &str) -> String {
    let mut out = String::new();
    let mut list = false;
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
            out.push_str("</ul>\n");
            list = false;
        }
        if item.is_some() || line.starts_with('#') || line.trim().is_empty() {
            end_para(&mut out, &mut para);
        }
        if let Some(item) = item {
            if !list {
                out.push_str("<ul class=\"todo\">\n");
                list = true;
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
        out.push_str("</ul>\n");
    }
    out
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
    for t in &r.tests {
        let external: u64 = t
            .calls
            .iter()
            .filter(|c| c.offending())
            .fold(0, |n, c| n.saturating_add(c.count));
        let outcome = t.outcome.as_deref().unwrap_or("");
        let _ = writeln!(
            out,
            "<tr class=\"test\" data-test=\"{id}\" data-outcome=\"{o}\" data-duration=\"{d}\" data-calls=\"{external}\">\
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
            calls = if t.calls.is_empty() {
                String::from("<span class=\"none\">none</span>")
            } else {
                calls_table(&t.calls)
            },
        );
    }
    out.push_str("</tbody></table>\n</section>\n");

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
/// query string works too). Numbers sort largest first unless `order=asc`.
const SCRIPT: &str = r#"
(function () {
  'use strict';
  var table = document.getElementById('tests-table');
  if (!table) { return; }
  var body = table.tBodies[0];
  var rows = Array.prototype.filter.call(body.rows, function (r) { return r.classList.contains('test'); });
  /* Per row: its place in the report's order and its cells' text, for sorting and filtering. */
  var info = new Map();
  rows.forEach(function (r, i) {
    var cells = Array.prototype.map.call(r.querySelectorAll('td'), function (td) { return td.textContent; });
    info.set(r, { index: i, text: cells.join(' ').toLowerCase() });
  });
  var controls = document.getElementById('controls');
  var filter = document.getElementById('filter');
  var category = document.getElementById('category');
  var withCalls = document.getElementById('with-calls');
  var shown = document.getElementById('shown');
  var heads = Array.prototype.slice.call(table.tHead.querySelectorAll('th[data-sort]'));
  var numeric = { duration: true, calls: true };
  var state = { filter: '', category: '', calls: false, sort: '', order: '' };

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

  function key(r, k) {
    if (k === 'duration') { return r.dataset.duration === '' ? -1 : parseFloat(r.dataset.duration); }
    if (k === 'calls') { return parseInt(r.dataset.calls, 10) || 0; }
    return r.dataset[k] || '';
  }

  function matches(r) {
    if (state.filter && info.get(r).text.indexOf(state.filter.toLowerCase()) < 0) { return false; }
    if (state.calls && !(parseInt(r.dataset.calls, 10) > 0)) { return false; }
    if (state.category) {
      var calls = r.querySelectorAll('tr.call');
      var found = false;
      for (var i = 0; i < calls.length; i++) { if (calls[i].dataset.category === state.category) { found = true; } }
      if (!found) { return false; }
    }
    return true;
  }

  function apply() {
    filter.value = state.filter;
    category.value = state.category;
    if (category.value !== state.category) { category.value = ''; }
    withCalls.checked = state.calls;
    var order = rows.slice();
    if (state.sort) {
      var k = state.sort;
      var desc = state.order ? state.order === 'desc' : !!numeric[k];
      order.sort(function (a, b) {
        var x = key(a, k), y = key(b, k);
        var c = x < y ? -1 : x > y ? 1 : 0;
        if (desc) { c = -c; }
        return c || (info.get(a).index - info.get(b).index);
      });
      heads.forEach(function (h) {
        if (h.dataset.sort === k) { h.setAttribute('aria-sort', desc ? 'descending' : 'ascending'); }
        else { h.removeAttribute('aria-sort'); }
      });
    } else {
      heads.forEach(function (h) { h.removeAttribute('aria-sort'); });
    }
    var n = 0;
    order.forEach(function (r) {
      var ok = matches(r);
      r.hidden = !ok;
      if (ok) { n++; }
      body.appendChild(r);
    });
    shown.textContent = 'showing ' + n + ' of ' + rows.length + ' tests';
  }

  filter.addEventListener('input', function () { state.filter = filter.value; apply(); toUrl(); });
  category.addEventListener('change', function () { state.category = category.value; apply(); toUrl(); });
  withCalls.addEventListener('change', function () { state.calls = withCalls.checked; apply(); toUrl(); });
  heads.forEach(function (h) {
    h.tabIndex = 0;
    var pick = function () {
      var k = h.dataset.sort;
      var desc = state.order ? state.order === 'desc' : !!numeric[k];
      state.order = state.sort === k ? (desc ? 'asc' : 'desc') : '';
      state.sort = k;
      apply(); toUrl();
    };
    h.addEventListener('click', pick);
    h.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); pick(); } });
  });
  window.addEventListener('hashchange', function () { fromUrl(); apply(); });
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
