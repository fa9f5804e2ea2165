//! The renderings of one report (text, markdown, json, junit, github) on real runs of the
//! bundled pytest suite (fixtures/pytest-demo): they give the same numbers, JUnit parses and
//! carries the findings on the offending test cases, GitHub annotations name the call site,
//! `$GITHUB_STEP_SUMMARY` is appended to, `-o` replaces whole, bad input is refused in one line.

mod common;
use common::*;
use quick_xml::Reader;
use quick_xml::events::Event;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// A test case of a JUnit file: (classname, name) -> (its properties, its system-err text).
type Cases = BTreeMap<(String, String), (Vec<(String, String)>, String)>;

/// Parses a JUnit file whole (any XML error fails the test).
fn junit_cases(xml: &str) -> Cases {
    let mut reader = Reader::from_str(xml);
    let mut cases = Cases::new();
    let mut current: Option<(String, String)> = None;
    let mut in_err = false;
    let attr = |e: &quick_xml::events::BytesStart, k: &[u8]| -> String {
        e.attributes()
            .map(|a| a.unwrap())
            .find(|a| a.key.as_ref() == k)
            .map(|a| a.unescape_value().unwrap().into_owned())
            .unwrap_or_default()
    };
    loop {
        match reader.read_event().expect("the JUnit file parses") {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                let key = (attr(&e, b"classname"), attr(&e, b"name"));
                cases.entry(key.clone()).or_default();
                current = Some(key);
            }
            Event::End(e) if e.name().as_ref() == b"testcase" => current = None,
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"property" => {
                if let Some(k) = &current {
                    let p = (attr(&e, b"name"), attr(&e, b"value"));
                    cases.get_mut(k).unwrap().0.push(p);
                }
            }
            Event::Start(e) if e.name().as_ref() == b"system-err" => in_err = true,
            Event::End(e) if e.name().as_ref() == b"system-err" => in_err = false,
            // Text comes in pieces: text, then each entity reference apart.
            Event::Text(t) if in_err => {
                if let Some(k) = &current {
                    cases.get_mut(k).unwrap().1 += &t.decode().unwrap();
                }
            }
            Event::GeneralRef(r) if in_err => {
                if let Some(k) = &current {
                    let name = r.decode().unwrap();
                    let text = quick_xml::escape::unescape(&format!("&{name};"))
                        .unwrap()
                        .into_owned();
                    cases.get_mut(k).unwrap().1 += &text;
                }
            }
            _ => {}
        }
    }
    cases
}

fn report_cmd(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(nettrap())
        .arg("report")
        .args(args)
        .env_remove("GITHUB_STEP_SUMMARY")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `nettrap report FILE ARGS` must succeed; its stdout.
fn render(file: &Path, args: &[&str]) -> String {
    let mut all = vec![file.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = report_cmd(&all, &[]);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// (tests, calls) of a summary row `  redis (6379)  5 tests  8 calls  ...`, per category.
fn summary_rows(summary: &str) -> BTreeMap<String, (u64, u64)> {
    let mut rows = BTreeMap::new();
    for line in summary
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !words.get(1).is_some_and(|w| w.starts_with('(')) {
            continue;
        }
        let num = |w: &str| {
            words
                .iter()
                .position(|x| x.starts_with(w))
                .map(|i| words[i - 1])
        };
        if let (Some(t), Some(c)) = (num("test"), num("call")) {
            rows.insert(
                words[0].to_string(),
                (t.parse().unwrap(), c.parse().unwrap()),
            );
        }
    }
    rows
}

/// (tests, calls) of the to-do list's category headings `## redis: 5 tests, 8 calls...`.
fn todo_headings(todo: &str) -> BTreeMap<String, (u64, u64)> {
    let mut rows = BTreeMap::new();
    for line in todo.lines().filter_map(|l| l.strip_prefix("## ")) {
        let Some((cat, rest)) = line.split_once(": ") else {
            continue;
        };
        let words: Vec<&str> = rest.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let tests = words[0].parse().unwrap();
        let calls = words[2].parse().unwrap();
        rows.insert(cat.to_string(), (tests, calls));
    }
    rows
}

#[test]
fn every_rendering_gives_the_same_numbers_and_the_time_at_stake() {
    let run = run_demo("formats-same", &[], &[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let file = run.dir.join("report.json");
    let r = &run.report;
    let json: BTreeMap<String, (u64, u64)> = r["categories"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(n, c)| c["calls"].as_u64().unwrap() > 0 && n.as_str() != "in-suite")
        .map(|(n, c)| {
            (
                n.clone(),
                (c["tests"].as_u64().unwrap(), c["calls"].as_u64().unwrap()),
            )
        })
        .collect();
    // memcached is called only outside any test: every rendering still counts it.
    assert_eq!(json["memcached"], (0, 1), "{json:?}");
    assert_eq!(summary_rows(&run.stderr()), json, "{}", run.stderr());
    assert_eq!(summary_rows(&render(&file, &["--format", "text"])), json);
    assert_eq!(todo_headings(&run.todo), json, "{}", run.todo);
    assert_eq!(render(&file, &["--format", "markdown"]), run.todo);
    assert!(
        run.todo.contains(
            "## memcached: 0 tests, 1 call (1 outside any test)\n\nOnly outside any test"
        ),
        "{}",
        run.todo
    );
    // The JSON's destinations add up to its categories.
    let mut by_dest: BTreeMap<String, u64> = BTreeMap::new();
    for d in r["destinations"].as_array().unwrap() {
        *by_dest
            .entry(d["category"].as_str().unwrap().into())
            .or_default() += d["calls"].as_u64().unwrap();
    }
    let calls: BTreeMap<String, u64> = json.iter().map(|(k, v)| (k.clone(), v.1)).collect();
    assert_eq!(by_dest, calls);
    // JUnit: each offending test case's nettrap.calls is its calls in the JSON.
    let cases = junit_cases(&render(&file, &["--format", "junit"]));
    assert_eq!(cases.len(), 19);
    for t in r["tests"].as_array().unwrap() {
        let id = t["test"].as_str().unwrap();
        let (file, name) = id.split_once("::").unwrap();
        let key = (
            file.trim_end_matches(".py").replace('/', "."),
            name.to_string(),
        );
        let props = &cases[&key].0;
        let n = props
            .iter()
            .find(|p| p.0 == "nettrap.calls")
            .map_or(0, |p| p.1.parse::<u64>().unwrap());
        assert_eq!(n, count(&t["calls"]), "{id}: {props:?}");
    }

    // Payoff: a category's time at stake is its tests' summed durations, and its share that
    // over the suite's.
    let duration = |t: &serde_json::Value| t["duration_s"].as_f64().unwrap();
    let tests = r["tests"].as_array().unwrap();
    let suite: f64 = tests.iter().map(duration).sum();
    assert!(suite > 0.0);
    assert!((r["payoff"]["suite_time_s"].as_f64().unwrap() - suite).abs() < 1e-9);
    assert_eq!(r["payoff"]["durations_known"], 19);
    assert_eq!(r["payoff"]["tests"], 12);
    for (name, c) in r["categories"].as_object().unwrap() {
        let want: f64 = tests
            .iter()
            .filter(|t| {
                t["calls"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["category"] == *name && c["verdict"] != "allowed")
            })
            .map(duration)
            .sum();
        let got = c["time_at_stake_s"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "{name}: {got} != {want}");
        let share = c["share_of_suite"].as_f64().unwrap();
        assert!((share - want / suite).abs() < 1e-9, "{name}");
    }
    let pure = run.test("tests/test_pure.py::test_addition");
    assert_eq!(pure["time_at_stake_s"], 0.0);
    let get = run.test("tests/test_cache.py::test_cache_get");
    assert_eq!(get["time_at_stake_s"], get["duration_s"]);
    assert!(
        run.todo.contains("Mocking these 12 tests touches "),
        "{}",
        run.todo
    );
}

#[test]
fn junit_and_github_for_a_denied_run() {
    let dir = scratch("formats-ci");
    let runner_xml = dir.join("pytest.xml");
    let own_xml = dir.join("own.xml");
    let step = dir.join("step-summary.md");
    std::fs::write(&step, "previous step\n").unwrap();
    let py = python();
    let (runner_s, own_s, step_s) = (
        runner_xml.to_str().unwrap(),
        format!("junit={}", own_xml.display()),
        step.to_str().unwrap(),
    );
    let junitxml = format!("--junitxml={runner_s}");
    let run = run_in_env(
        "formats-ci-run",
        &demo_suite(),
        &[("GITHUB_STEP_SUMMARY", step_s)],
        &[
            "--deny",
            "elasticsearch",
            "--junit",
            runner_s,
            "--format",
            &own_s,
            "--format",
            "github",
        ],
        &[&py, "-m", "pytest", "-q", "-p", "no:randomly", &junitxml],
    );
    assert_eq!(run.code(), 86, "{}", run.stderr());

    // --junit alone without --format junit would merge in place; with --format junit=PATH,
    // PATH gets the merged file and the runner's is left as it was.
    let merged = junit_cases(&std::fs::read_to_string(&own_xml).unwrap());
    let untouched = junit_cases(&std::fs::read_to_string(&runner_xml).unwrap());
    assert!(untouched.values().all(|c| c.0.is_empty()), "{untouched:?}");
    assert_eq!(
        merged.keys().collect::<Vec<_>>(),
        untouched.keys().collect::<Vec<_>>()
    );
    let key = ("tests.test_search".to_string(), "test_index".to_string());
    let (props, err) = &merged[&key];
    assert!(
        props.contains(&("nettrap.categories".into(), "elasticsearch".into())),
        "{props:?}"
    );
    let call = "denied connect to 127.0.0.1:9200 (elasticsearch) in call at demo_clients.py:47 in es_get (rule: deny elasticsearch)";
    assert!(
        props.contains(&("nettrap.call".into(), call.into())),
        "{props:?}"
    );
    assert!(err.contains(&format!("nettrap: {call}")), "{err}");
    // A test without calls is left as it was.
    let pure = ("tests.test_pure".to_string(), "test_addition".to_string());
    assert!(merged[&pure].0.is_empty() && merged[&pure].1.is_empty());

    // GitHub annotations on stdout, at the call site.
    let out = run.stdout();
    for line in [
        "::error file=demo_clients.py,line=47,title=nettrap::denied connect to 127.0.0.1:9200 (elasticsearch) in call at demo_clients.py:47 in es_get (rule: deny elasticsearch) in tests/test_search.py::test_index\n",
        "::error file=tests/test_edge.py,line=21,title=nettrap::denied connect to 127.0.0.1:9200 (elasticsearch) in call at tests/test_edge.py:21 in test_nonblocking",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
    assert_eq!(
        out.lines().filter(|l| l.starts_with("::error ")).count(),
        5,
        "{out}"
    );
    let summary = std::fs::read_to_string(&step).unwrap();
    assert!(
        summary.starts_with("previous step\n## nettrap\n"),
        "{summary}"
    );
    for s in [
        "**Policy violated**: 5 denied calls.",
        "| elasticsearch | 9200 | 5 | 5 | 5 | 0 | ",
        "| memcached | 11211 | 0 | 1 | 0 | 1 | ",
        "Mocking these 12 tests touches ",
    ] {
        assert!(summary.contains(s), "{s:?} not in:\n{summary}");
    }

    // `nettrap report` renders the same from the saved report.
    let file = run.dir.join("report.json");
    let again = render(&file, &["--format", "github"]);
    assert_eq!(
        again,
        out.lines()
            .filter(|l| l.starts_with("::"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    let merged_again = render(&file, &["--format", "junit", "--junit", runner_s]);
    assert_eq!(junit_cases(&merged_again), merged);
    let appended = dir.join("again.md");
    let o = report_cmd(
        &[file.to_str().unwrap(), "--format", "github"],
        &[("GITHUB_STEP_SUMMARY", appended.to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read_to_string(&appended)
            .unwrap()
            .starts_with("## nettrap\n")
    );

    // --junit alone: the runner's file gets the findings, in place.
    let in_place = dir.join("in-place.xml");
    std::fs::copy(&runner_xml, &in_place).unwrap();
    let o = report_cmd(
        &[
            file.to_str().unwrap(),
            "--format",
            "junit",
            "--junit",
            in_place.to_str().unwrap(),
            "-o",
            in_place.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        junit_cases(&std::fs::read_to_string(&in_place).unwrap()),
        merged
    );
}

#[test]
fn outputs_are_written_whole_and_bad_input_is_refused_in_one_line() {
    let run = run_in(
        "formats-bad",
        &repo(),
        &[],
        &["python3", "fixtures/unittest-demo/run.py"],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let file = run.dir.join("report.json");
    let f = file.to_str().unwrap();

    // -o replaces the file whole and leaves nothing beside it.
    let out = run.dir.join("out");
    std::fs::create_dir(&out).unwrap();
    let md = out.join("todo.md");
    std::fs::write(&md, "old").unwrap();
    let o = report_cmd(
        &[f, "--format", "markdown", "-o", md.to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&md).unwrap(), run.todo);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);

    let one_line = |o: &Output, has: &str| {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
        let err = stderr(o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(has), "{has:?} not in {err}");
    };
    let missing = run.dir.join("no/such/dir/x.xml");
    one_line(
        &report_cmd(
            &[f, "--format", "junit", "-o", missing.to_str().unwrap()],
            &[],
        ),
        "no/such/dir/x.xml",
    );
    let corrupt = run.dir.join("corrupt.json");
    std::fs::write(&corrupt, "{\"schema_version\": 2, \"tests\": [").unwrap();
    one_line(
        &report_cmd(&[corrupt.to_str().unwrap(), "--format", "junit"], &[]),
        "corrupt.json",
    );
    let bad_xml = run.dir.join("bad.xml");
    std::fs::write(&bad_xml, "<testsuite><testcase name='a'></testsuite>").unwrap();
    one_line(
        &report_cmd(
            &[f, "--format", "junit", "--junit", bad_xml.to_str().unwrap()],
            &[],
        ),
        "bad.xml",
    );
    one_line(&report_cmd(&[f, "--format", "xml"], &[]), "--format");
    let o = Command::new(nettrap())
        .args(["run", "--format", "junit=", "--", "true"])
        .output()
        .unwrap();
    one_line(&o, "--format");
    let o = Command::new(nettrap())
        .args(["run", "--format"])
        .arg(format!("junit={}", missing.display()))
        .args(["--", "true"])
        .output()
        .unwrap();
    one_line(&o, "--format junit: cannot write");
}

#[test]
fn an_empty_junit_or_an_unwritable_job_summary_keeps_the_commands_status() {
    // No tests collected (an empty CI shard): the runner's JUnit has no test case. It once
    // failed a clean run with 87, and so did a $GITHUB_STEP_SUMMARY that cannot be written.
    let dir = scratch("formats-empty-junit");
    let xml = dir.join("junit.xml");
    let empty = "<testsuites><testsuite name=\"pytest\" tests=\"0\"/></testsuites>";
    std::fs::write(&xml, empty).unwrap();
    let xml_s = xml.to_str().unwrap();
    let run = run_in_env(
        "formats-empty-junit-run",
        &dir,
        &[("GITHUB_STEP_SUMMARY", "/nonexistent-nettrap/summary.md")],
        &["--junit", xml_s, "--format", "github"],
        &["sh", "-c", "exit 5"],
    );
    assert_eq!(run.code(), 5, "{}", run.stderr());
    assert_eq!(std::fs::read_to_string(&xml).unwrap(), empty);
    assert!(
        run.stderr()
            .contains("nettrap: warning: cannot append to $GITHUB_STEP_SUMMARY"),
        "{}",
        run.stderr()
    );
}

/// nettrap's own JUnit (no runner JUnit given): a test that passed although one of its calls
/// failed the run (here recorded in a `--fail-on` category) is a failure there, so CI test
/// views show what failed the run; tests without such calls keep their outcome.
#[test]
fn own_junit_fails_the_tests_that_failed_the_run() {
    let dir = scratch("formats-own-junit");
    let own_xml = dir.join("own.xml");
    let own_s = format!("junit={}", own_xml.display());
    let py = python();
    let run = run_in(
        "formats-own-junit-run",
        &demo_suite(),
        &["--fail-on", "redis", "--format", &own_s],
        &[&py, "-m", "pytest", "-q", "-p", "no:randomly"],
    );
    assert_eq!(run.code(), 86, "{}", run.stderr());
    let own = std::fs::read_to_string(&own_xml).unwrap();
    let case = |class: &str, name: &str| {
        let at = own
            .find(&format!("classname=\"{class}\" name=\"{name}\""))
            .unwrap_or_else(|| panic!("{class}.{name} not in:\n{own}"));
        own[at..at + own[at..].find("</testcase>").unwrap()].to_string()
    };
    let tests = run.all_tests();
    assert!(
        tests.contains(&(
            "tests/test_cache.py::test_cache_get".into(),
            "passed".into()
        )),
        "{tests:?}"
    );
    assert!(
        case("tests.test_cache", "test_cache_get")
            .contains("<failure message=\"nettrap: policy violated\""),
        "{own}"
    );
    assert!(
        !case("tests.test_pure", "test_addition").contains("<failure"),
        "{own}"
    );
    // The suite's count: the runner's failures plus the passed tests with a recorded redis call.
    let redis_passed = run.report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["outcome"] == "passed")
        .filter(|t| {
            t["calls"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["category"] == "redis" && c["verdict"] == "recorded")
        })
        .count();
    let failed = tests.iter().filter(|(_, o)| o == "failed").count();
    assert!(redis_passed > 0);
    assert!(
        own.contains(&format!("failures=\"{}\"", failed + redis_passed)),
        "{failed} + {redis_passed}:\n{own}"
    );
}
