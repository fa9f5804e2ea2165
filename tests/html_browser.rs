//! `nettrap report FILE --format html`: the page of a real run (fixtures/unittest-demo under
//! nettrap), checked as text (self-contained, numbers as in the JSON, every report text escaped)
//! and in a real headless browser (Debian's chromium: the page's script runs without console
//! errors, the numbers it shows match the JSON, filtering and sorting from the URL fragment
//! work). The browser runs in the tests' private network namespace: the page needs no network.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One run of the demo suite, shared by the tests of this file.
fn demo() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = run_in(
            "html-demo",
            &repo(),
            &[],
            &["python3", "fixtures/unittest-demo/run.py"],
        );
        assert_eq!(run.code(), 0, "{}", run.stderr());
        run
    })
}

/// `nettrap report REPORT --format html -o OUT`; the page.
fn render(report: &Path, out: &Path) -> String {
    let o = Command::new(nettrap())
        .args(["report", "--format", "html", "-o"])
        .arg(out)
        .arg(report)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read_to_string(out).unwrap()
}

/// The demo's report rendered into a scratch directory: (page path, page text).
fn demo_page(name: &str) -> (PathBuf, String) {
    let dir = scratch(name);
    let page = dir.join("report.html");
    let text = render(&demo().dir.join("report.json"), &page);
    (page, text)
}

/// External calls (recorded or denied, not to the suite's own servers) of one test entry.
fn external(test: &Value) -> u64 {
    test["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] != "allowed" && c["category"] != "in-suite")
        .map(|c| c["count"].as_u64().unwrap())
        .sum()
}

/// The value of attribute `name` in a start tag, HTML entities decoded.
fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(
        tag[start..end]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// The start tags in `html` that begin with `prefix` (`<tr class="test"`), in document order.
fn tags<'a>(html: &'a str, prefix: &str) -> Vec<&'a str> {
    html.match_indices(prefix)
        .map(|(i, _)| &html[i..i + html[i..].find('>').unwrap() + 1])
        .collect()
}

/// The test rows of a page: (test id, hidden), in document order.
fn test_rows(html: &str) -> Vec<(String, bool)> {
    tags(html, "<tr class=\"test\"")
        .into_iter()
        .map(|t| (attr(t, "data-test").unwrap(), t.contains(" hidden")))
        .collect()
}

fn report_tests() -> &'static Vec<Value> {
    demo().report["tests"].as_array().unwrap()
}

#[test]
fn the_page_is_self_contained_and_shows_the_reports_numbers() {
    let (page, html) = demo_page("html-structure");
    // Nothing is fetched: no external resource of any kind, and the policy forbids it anyway.
    for bad in [
        "http:", "https:", "ftp:", "//", " src=", "<link", "@import", "url(", "<iframe", "<object",
        "<embed",
    ] {
        assert!(!html.contains(bad), "the page holds {bad:?}");
    }
    for href in tags(&html, "<a ") {
        let h = attr(href, "href").unwrap_or_default();
        assert!(h.starts_with('#'), "only links within the page: {href}");
    }
    assert!(
        html.contains("content=\"default-src 'none';"),
        "a Content-Security-Policy that fetches nothing"
    );
    // Readable without a script: the controls are hidden until the script shows them.
    assert!(html.contains("<div id=\"controls\" hidden>"));

    // The census: every category with its tests and calls, as in the JSON.
    let cats = demo().report["categories"].as_object().unwrap();
    let rows = tags(&html, "<tr class=\"category\"");
    assert_eq!(rows.len(), cats.len(), "{rows:?}");
    for (name, c) in cats {
        assert!(
            html.contains(&format!(
                "<tr class=\"category\" data-category=\"{name}\" data-tests=\"{}\" data-calls=\"{}\">",
                c["tests"], c["calls"]
            )),
            "{name}: {c}"
        );
    }
    assert!(html.contains(">4 categories of external calls in 7 of 14 tests<"));
    // The chart: one bar per category the summary lists.
    assert_eq!(html.matches("<rect class=\"bar").count(), 4);
    assert!(html.contains(">4 tests, 6 calls</text>"), "redis's bar");

    // Every test, in the report's order, with its external calls.
    let rows: Vec<String> = test_rows(&html).into_iter().map(|r| r.0).collect();
    let ids: Vec<String> = report_tests()
        .iter()
        .map(|t| t["test"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rows, ids);
    for (tag, t) in tags(&html, "<tr class=\"test\"").iter().zip(report_tests()) {
        assert_eq!(attr(tag, "data-calls").unwrap(), external(t).to_string());
        assert_eq!(
            attr(tag, "data-outcome").as_deref(),
            t["outcome"].as_str().or(Some(""))
        );
    }
    // The unattributed call and the to-do list.
    assert!(html.contains("<section id=\"unattributed\">"));
    assert!(
        html.contains("127.0.0.1:11211"),
        "memcached, outside any test"
    );
    // The heading may go on with the share of suite time and "served by the suite".
    assert!(html.contains("<h3>redis: 4 tests, 6 calls"), "{html}");
    assert_eq!(
        html.matches("<li><label><input type=\"checkbox\">").count(),
        demo().todo.matches("- [ ] ").count()
    );

    // Without -o the page goes to stdout: the same page but for the script's nonce.
    let o = Command::new(nettrap())
        .args(["report", "--format", "html"])
        .arg(demo().dir.join("report.json"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let nonce = |s: &str| {
        let mut s = s.to_string();
        while let Some(i) = s.find("nonce-") {
            s.replace_range(i..i + 6 + 32, "NONCE");
        }
        while let Some(i) = s.find("nonce=\"") {
            s.replace_range(i..i + 7 + 32, "NONCE=\"");
        }
        s
    };
    assert_eq!(nonce(&String::from_utf8(o.stdout).unwrap()), nonce(&html));

    // -o into a directory that does not exist: one line naming it, exit 2, nothing written.
    let missing = page.parent().unwrap().join("missing/report.html");
    let o = Command::new(nettrap())
        .args(["report", "--format", "html", "-o"])
        .arg(&missing)
        .arg(demo().dir.join("report.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

/// Test ids, hosts, sites and command lines can hold `<`, quotes and ampersands: the page shows
/// them as text and never as markup.
#[test]
fn every_text_from_the_report_is_escaped() {
    let dir = scratch("html-escape");
    let mut report = demo().report.clone();
    let evil_test = "tests.<script>alert(\"t\")</script>'&amp;.test";
    let evil_host = "evil\"><img src=x onerror=alert(1)>";
    let evil_cmd = "sh -c '<b>bold</b>' \"&\"";
    let evil_site = "app/<i>x</i>.py:1 in f";
    let evil_cat = "cat\"<u>";
    let first = report["tests"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| !t["calls"].as_array().unwrap().is_empty())
        .unwrap();
    first["test"] = evil_test.into();
    first["calls"][0]["host"] = evil_host.into();
    first["calls"][0]["site"] = evil_site.into();
    first["calls"][0]["category"] = evil_cat.into();
    report["unattributed"][0]["process"]["cmdline"] = evil_cmd.into();
    report["command"] = serde_json::json!(["<em>python3</em>", "run.py"]);
    let cats = report["categories"].as_object_mut().unwrap();
    let redis = cats["redis"].clone();
    cats.insert(evil_cat.to_string(), redis);
    let file = dir.join("report.json");
    std::fs::write(&file, serde_json::to_string(&report).unwrap()).unwrap();
    let page = dir.join("report.html");
    let html = render(&file, &page);
    for tag in [
        "<script>alert",
        "<img",
        "<b>",
        "<i>",
        "<u>",
        "<em>",
        "onerror=alert(1)>",
    ] {
        assert!(!html.contains(tag), "{tag} left as markup");
    }
    assert!(
        html.contains("tests.&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;&#39;&amp;amp;.test")
    );
    assert!(html.contains("evil&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("sh -c &#39;&lt;b&gt;bold&lt;/b&gt;&#39; &quot;&amp;&quot;"));
    assert!(html.contains("app/&lt;i&gt;x&lt;/i&gt;.py:1 in f"));
    assert!(html.contains("data-category=\"cat&quot;&lt;u&gt;\""));
    assert!(html.contains("href=\"#category=cat%22%3Cu%3E\""));
    // One script only: the page's own.
    assert_eq!(html.matches("<script").count(), 1);

    if let Some(chromium) = chromium() {
        // In the browser: the text is the report's, and nothing ran but the page's script.
        let (dom, log) = browse(&chromium, &page, "");
        assert_no_console_messages(&log);
        let rows = test_rows(&dom);
        assert_eq!(rows[0].0, evil_test);
        assert!(!dom.contains("<img"), "no element made from a report text");
    }
}

/// Debian's chromium, if installed (`.ci/run` installs it).
fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/chromium");
    if path.exists() {
        return Some(path);
    }
    eprintln!(
        "SKIPPED: the browser checks of the HTML report need Debian's chromium \
         (/usr/bin/chromium; `apt-get install chromium`, as .ci/run does)"
    );
    None
}

/// Runs headless chromium on `page` (with `fragment`), isolated from any network, with `extra`
/// flags; returns its stdout and stderr.
fn chromium_run(chromium: &Path, page: &Path, fragment: &str, extra: &[&str]) -> (String, String) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let profile = scratch(&format!("chromium-profile-{n}"));
    let url = format!("file://{}{fragment}", page.display());
    let profile_flag = format!("--user-data-dir={}", profile.display());
    let mut argv = vec![
        chromium.to_str().unwrap(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        &profile_flag,
    ];
    argv.extend_from_slice(extra);
    argv.push(&url);
    let out = isolated(&argv)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running chromium");
    let _ = std::fs::remove_dir_all(&profile);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// The DOM after the page's script ran, and chromium's log.
fn browse(chromium: &Path, page: &Path, fragment: &str) -> (String, String) {
    let (dom, log) = chromium_run(chromium, page, fragment, &["--dump-dom"]);
    assert!(dom.contains("</html>"), "no DOM dumped: {log}");
    (dom, log)
}

/// No console message from the page: no uncaught error, no refused resource or script.
fn assert_no_console_messages(log: &str) {
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("Refused"))
        // Chromium's own pages (chrome://…) log too, e.g. "Slow network is detected" on a
        // loaded machine: only the page under test counts.
        .filter(|l| !l.contains("source: chrome://"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
}

/// `<span id="shown">showing 4 of 14 tests</span>` → `showing 4 of 14 tests`.
fn shown(dom: &str) -> &str {
    let start = dom
        .find("<span id=\"shown\">")
        .expect("the count of shown tests")
        + 17;
    &dom[start..start + dom[start..].find('<').unwrap()]
}

#[test]
fn the_page_in_headless_chromium() {
    let Some(chromium) = chromium() else { return };
    let (page, _) = demo_page("html-browser");
    let tests = report_tests();

    // The log catches a page's uncaught error (so its silence below means something).
    let bad = page.with_file_name("bad.html");
    std::fs::write(&bad, "<!DOCTYPE html><script>no_such_function();</script>").unwrap();
    let (_, log) = browse(&chromium, &bad, "");
    assert!(log.contains("Uncaught ReferenceError"), "{log}");

    // As it opens: the script ran (controls shown, every test shown), no console message.
    let (dom, log) = browse(&chromium, &page, "");
    assert_no_console_messages(&log);
    assert!(dom.contains("<div id=\"controls\">"), "the script ran");
    assert_eq!(shown(&dom), "showing 14 of 14 tests");
    let rows = test_rows(&dom);
    assert_eq!(rows.len(), tests.len());
    assert!(rows.iter().all(|r| !r.1), "{rows:?}");
    for (name, c) in demo().report["categories"].as_object().unwrap() {
        assert!(
            dom.contains(&format!(
                "data-category=\"{name}\" data-tests=\"{}\" data-calls=\"{}\"><td><a href=\"#category={name}\">{name}</a></td>",
                c["tests"], c["calls"]
            )),
            "{name}"
        );
    }
    assert_eq!(
        dom.matches("<rect class=\"bar").count(),
        4,
        "the chart is in the page"
    );

    // Filtered by category and sorted by external calls (largest first, ties in report order).
    let (dom, log) = browse(&chromium, &page, "#category=redis&sort=calls");
    assert_no_console_messages(&log);
    let redis = |t: &Value| {
        t["calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["category"] == "redis")
    };
    let mut expected: Vec<&Value> = tests.iter().filter(|t| redis(t)).collect();
    expected.sort_by_key(|t| std::cmp::Reverse(external(t)));
    let expected: Vec<String> = expected
        .iter()
        .map(|t| t["test"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expected.len(), 4);
    let visible: Vec<String> = test_rows(&dom)
        .into_iter()
        .filter(|r| !r.1)
        .map(|r| r.0)
        .collect();
    assert_eq!(visible, expected);
    assert_eq!(shown(&dom), "showing 4 of 14 tests");
    assert!(dom.contains(
        "<th data-sort=\"calls\" class=\"num\" tabindex=\"0\" aria-sort=\"descending\">"
    ));

    // Filtered by text (case does not matter), only tests with calls, from the query string
    // too; sorted by duration, shortest first.
    let (dom, log) = browse(
        &chromium,
        &page,
        "?calls=1#filter=CACHETESTS&sort=duration&order=asc",
    );
    assert_no_console_messages(&log);
    let mut expected: Vec<&Value> = tests
        .iter()
        .filter(|t| {
            t["test"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("cachetests")
                && external(t) > 0
        })
        .collect();
    expected.sort_by(|a, b| {
        let d = |t: &Value| t["duration_s"].as_f64().unwrap_or(-1.0);
        d(a).partial_cmp(&d(b)).unwrap()
    });
    let expected: Vec<String> = expected
        .iter()
        .map(|t| t["test"].as_str().unwrap().to_string())
        .collect();
    assert!(!expected.is_empty());
    let visible: Vec<String> = test_rows(&dom)
        .into_iter()
        .filter(|r| !r.1)
        .map(|r| r.0)
        .collect();
    assert_eq!(visible, expected);

    // A filter nothing matches: no test shown.
    let (dom, _) = browse(&chromium, &page, "#filter=no-such-test");
    assert_eq!(shown(&dom), "showing 0 of 14 tests");
    assert!(test_rows(&dom).iter().all(|r| r.1));

    // A screenshot to look at (kept in the test's scratch directory).
    let png = page.with_file_name("nettrap-html.png");
    let shot = format!("--screenshot={}", png.display());
    let (_, log) = chromium_run(&chromium, &page, "", &[&shot, "--window-size=1200,900"]);
    assert_no_console_messages(&log);
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}): {log}"));
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000);
}

/// A suite of 2,000 tests (many_calls: 20,000 refused loopback connects, ten per test): the page
/// renders only the first 500 tests as rows (the largest payoff first; all equal here, so
/// report order) and leaves the others to its script in a JSON block; the census, the to-do list
/// (cut at 100 items a list) and the first rows read without JavaScript. In chromium: 500 rows
/// shown of 2,000, a filter finds a test the page did not render as a row, a sort by name
/// descending brings the last tests first.
#[test]
fn a_large_suite_pre_renders_500_rows_and_the_script_finds_the_others() {
    let exe = c_fixture("many_calls");
    let cwd = scratch("html-large-cwd");
    let run = run_in_env(
        "html-large",
        &cwd,
        &[],
        &["--engine", "preload"],
        &[exe.to_str().unwrap(), "20000", "2000"],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let tests = run.report["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 2000);
    let page = run.dir.join("report.html");
    let html = render(&run.dir.join("report.json"), &page);

    let rows = test_rows(&html);
    assert_eq!(rows.len(), 500);
    let first: Vec<&str> = tests[..500]
        .iter()
        .map(|t| t["test"].as_str().unwrap())
        .collect();
    assert_eq!(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), first);
    assert!(html.contains("<script type=\"application/json\" id=\"more-tests\">"));
    assert!(html.contains("The table lists the 500 tests with the most at stake"));
    let last = tests[1999]["test"].as_str().unwrap();
    assert!(!rows.iter().any(|r| r.0 == last));
    // The census's numbers, as in the JSON.
    let other = &run.report["categories"]["other"];
    assert_eq!(other["tests"], 2000);
    assert!(html.contains(&format!(
        "data-category=\"other\" data-tests=\"2000\" data-calls=\"{}\">",
        other["calls"]
    )));
    // Each of the to-do list's four lists (one per port): 100 items, the rest counted.
    assert_eq!(
        html.matches("<li><label><input type=\"checkbox\">").count(),
        400
    );
    assert_eq!(html.matches("… and 1900 more tests").count(), 4);
    assert!(html.len() < 2_000_000, "{} bytes", html.len());

    let Some(chromium) = chromium() else { return };
    let (dom, log) = browse(&chromium, &page, "");
    assert_no_console_messages(&log);
    assert_eq!(
        shown(&dom),
        "showing 500 of 2000 matching tests (2000 tests)"
    );
    assert!(
        dom.contains("<button id=\"show-more\" type=\"button\">"),
        "show more"
    );

    // A test only the JSON block holds: found, its row made by the script with its calls.
    let (dom, log) = browse(&chromium, &page, &format!("#filter={last}"));
    assert_no_console_messages(&log);
    assert_eq!(shown(&dom), "showing 1 of 2000 tests");
    let visible: Vec<String> = test_rows(&dom)
        .into_iter()
        .filter(|r| !r.1)
        .map(|r| r.0)
        .collect();
    assert_eq!(visible, [last]);
    let row = &dom[dom.find(&format!("data-test=\"{last}\"")).unwrap()..];
    let row = &row[..row.find("</tr></tbody></table>").unwrap()];
    assert_eq!(
        row.matches("<tr class=\"call\" data-category=\"other\">")
            .count(),
        4
    );
    assert!(
        row.contains("<td class=\"num\">10</td>"),
        "external calls: {row}"
    );

    // Sorted by name, last first: the page's first rows are tests it did not render.
    let (dom, log) = browse(&chromium, &page, "#sort=test&order=desc");
    assert_no_console_messages(&log);
    let visible: Vec<String> = test_rows(&dom)
        .into_iter()
        .filter(|r| !r.1)
        .map(|r| r.0)
        .collect();
    let mut names: Vec<&str> = tests.iter().map(|t| t["test"].as_str().unwrap()).collect();
    names.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(visible.len(), 500);
    assert_eq!(visible[..3], names[..3]);

    let png = page.with_file_name("nettrap-html-large.png");
    let shot = format!("--screenshot={}", png.display());
    let (_, log) = chromium_run(&chromium, &page, "", &[&shot, "--window-size=1200,900"]);
    assert_no_console_messages(&log);
    assert!(std::fs::read(&png).is_ok_and(|b| b.starts_with(b"\x89PNG")));
}
