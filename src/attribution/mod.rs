//! Attribution: which test made a call, whichever engine saw it.
//!
//! One mechanism, for every engine and runner. The engines record each call with the calling
//! process, thread and a CLOCK_MONOTONIC time. Runner adapters (and any runner that speaks the
//! protocol) append what the runner does to the run's timeline, `timeline.jsonl` in the run
//! directory: tests starting, changing phase, ending with an outcome; shared fixtures; the call
//! site just before each call; each process's role. The format is specified in `SPEC.md`
//! beside this file. [`Timeline::attribute`] joins a call to it:
//!
//! 1. the tests running on the calling thread at that moment (runners that run tests on
//!    threads), else the tests running in the calling process;
//! 2. nested tests (a test that runs a test runner) go to the outer test, the inner id kept as
//!    detail; overlapping siblings (Go's `t.Parallel`) go to the earliest started, naming the
//!    others;
//! 3. for processes whose runner names each test's thread after the test (libtest, `cargo
//!    test`: a `threads` event), the test whose name the calling thread's name begins with
//!    ([`Timeline::by_thread_name`]);
//! 4. with no timeline for the process, the test the engine read from the process's
//!    environment (`NETTRAP_TEST`, `PYTEST_CURRENT_TEST`, nextest's variables): children
//!    inherit their parent's current test that way;
//! 5. with none of those, the parent's test ([`Timeline::attribute_in_tree`]): a process a
//!    libtest test started with `posix_spawn` (a `spawn` event) by the spawning thread's name,
//!    any other child by its parent's test at the moment of the call, up the tree.
//!
//! The timeline also gives every test that ran (so `tests_total`, outcomes and durations).

use crate::fast_hash::{FastMap, FastSet};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;

pub const TIMELINE: &str = "timeline.jsonl";

/// Where an adapter that cannot write the timeline says so instead (same format, `adapter`
/// events only), so that nettrap still reports the failure, once.
pub const ADAPTER_FAILURES: &str = "adapter-failures.jsonl";

/// CLOCK_MONOTONIC in nanoseconds: the clock of every timeline writer and of the engines' call
/// records (the shim reads the same clock), so calls and test events can be joined by time.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How far back a call site may lie before its call.
const SITE_WINDOW_NS: u64 = 5_000_000_000;

/// One line of the timeline, as written by adapters (see SPEC.md).
#[derive(Deserialize, Debug)]
struct Event {
    ev: String,
    #[serde(default)]
    t: u64,
    #[serde(default)]
    pid: u32,
    tid: Option<u32>,
    test: Option<String>,
    outer: Option<String>,
    runner: Option<String>,
    phase: Option<String>,
    outcome: Option<String>,
    duration_s: Option<f64>,
    /// On an `end`: stamped when the process ended, not the test (libtest's terse output).
    late: Option<bool>,
    role: Option<String>,
    // site
    kind: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    file: Option<String>,
    line: Option<u64>,
    func: Option<String>,
    library: Option<String>,
    // fixture
    state: Option<String>,
    name: Option<String>,
    scope: Option<String>,
    location: Option<String>,
    // adapter
    status: Option<String>,
    why: Option<String>,
    // threads
    tests: Option<Vec<String>>,
    prefix: Option<String>,
    // spawn
    child: Option<u32>,
}

/// A process started with `posix_spawn` (a `spawn` event): by which process and thread, its
/// name then, and when.
#[derive(Debug, Clone)]
struct Spawn {
    t: u64,
    pid: u32,
    name: Vec<u8>,
}

/// A test of a process whose tests run on threads named after them (`threads` event): its
/// `start` (when the runner printed one) and `end` as stamped by the adapter.
#[derive(Debug, Clone)]
struct NamedTest {
    name: String,
    start: Option<u64>,
    end: u64,
    /// The end is only a bound: the test ended at some point before (`late`).
    late: bool,
}

/// Longest thread name the kernel keeps (`TASK_COMM_LEN` - 1).
const COMM_MAX: usize = 15;

/// Could a thread named `thread` (as the kernel keeps it) run the test `name`? Its name, or
/// its name cut at 15 bytes; a name cut may lose up to 3 more to keep UTF-8 whole (Rust's std
/// does not, but other code naming threads might): a prefix that long is a cut name.
fn carries(name: &str, thread: &[u8]) -> bool {
    name.as_bytes() == thread
        || (thread.len() >= COMM_MAX - 3 && name.as_bytes().starts_with(thread))
}

/// A test as the runner reported it.
#[derive(Debug, Clone, Default)]
pub struct TestRun {
    pub outcome: Option<String>,
    pub duration_s: Option<f64>,
    pub runner: Option<String>,
    pub file: Option<String>,
}

/// Where in the program a call was made.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Site {
    /// `app/search.py:42 in index_document`
    pub location: Option<String>,
    /// The client library that made the call (`redis`, `urllib3`, ...).
    pub library: Option<String>,
    /// The host name the program asked for, when it gave one.
    pub host: Option<String>,
}

/// Who a call is attributed to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    pub test: Option<String>,
    pub phase: Option<String>,
    /// A nested test (inner session) running at the time, kept as detail.
    pub inner_test: Option<String>,
    /// Other tests running in the same process at the time (overlapping parallel tests).
    pub concurrent: Vec<String>,
    /// A shared fixture being set up (or torn down) at the time.
    pub fixture: Option<String>,
    /// When the test (or the gap between tests) the call fell in began: a call site written
    /// before it belongs to an earlier call.
    pub since: u64,
}

#[derive(Debug, Clone)]
struct Interval {
    start: u64,
    end: u64,
    test: String,
    outer: Option<String>,
    phases: Vec<(u64, String)>,
    /// Spans in which the test waited for its parallel peers.
    paused: Vec<(u64, u64)>,
}

impl Interval {
    fn covers(&self, t: u64) -> bool {
        self.start <= t && t <= self.end && !self.paused.iter().any(|&(a, b)| a <= t && t < b)
    }
}

/// Intervals of one scope (a process, or one thread), sorted by start, with the running maximum
/// of their ends so a lookup walks back only over intervals that may still cover.
#[derive(Debug, Default)]
struct Scope {
    intervals: Vec<Interval>,
    max_end: Vec<u64>,
}

impl Scope {
    fn seal(&mut self) {
        self.intervals.sort_by_key(|i| i.start);
        let mut m = 0;
        self.max_end = self
            .intervals
            .iter()
            .map(|i| {
                m = m.max(i.end);
                m
            })
            .collect();
    }

    /// The end of the last interval that ended at or before `t` (0 if none).
    fn previous_end(&self, t: u64) -> u64 {
        let j = self.intervals.partition_point(|i| i.start <= t);
        self.intervals[..j]
            .iter()
            .rev()
            .take(16)
            .filter(|i| i.end <= t)
            .map(|i| i.end)
            .max()
            .unwrap_or(0)
    }

    fn covering(&self, t: u64) -> Vec<&Interval> {
        let mut out = Vec::new();
        let mut j = self.intervals.partition_point(|i| i.start <= t);
        while j > 0 && self.max_end[j - 1] >= t {
            j -= 1;
            if self.intervals[j].covers(t) {
                out.push(&self.intervals[j]);
            }
        }
        out.reverse(); // by start
        out
    }
}

#[derive(Debug)]
struct SiteEvent {
    t: u64,
    kind: String,
    port: Option<u16>,
    site: Site,
}

/// The timeline of a run, indexed for joining.
#[derive(Debug, Default)]
pub struct Timeline {
    process_scopes: FastMap<u32, Scope>,
    thread_scopes: FastMap<(u32, u32), Scope>,
    fixtures: FastMap<u32, Vec<(u64, u64, String)>>,
    sites: FastMap<(u32, u32), Vec<SiteEvent>>,
    used_sites: FastSet<(u32, u32, usize)>,
    /// Processes whose tests run on threads named after them, with those tests in the order
    /// the adapter reported them.
    named: FastMap<u32, Vec<NamedTest>>,
    /// What each such process's test ids start with before the name its threads carry
    /// (`<binary id> `).
    named_prefix: FastMap<u32, String>,
    /// Processes started with `posix_spawn`, by child pid, in time order (a pid may be reused).
    spawns: FastMap<u32, Vec<Spawn>>,
    /// Every test that ran, outside nested sessions.
    pub tests: BTreeMap<String, TestRun>,
    /// What each process is to its runner (`gw1`, `django worker 2`).
    pub roles: FastMap<u32, String>,
    /// Runners that reported through an adapter.
    pub runners: BTreeSet<String>,
    /// Adapters that could not load, with why.
    pub adapter_failures: Vec<String>,
    /// Lines that could not be read (a process killed while writing one).
    pub bad_lines: u64,
}

impl Timeline {
    /// Reads `timeline.jsonl` in `dir`, then the adapter failures told beside it; a missing
    /// file is an empty timeline.
    pub fn read(dir: &Path) -> Timeline {
        use std::io::Read;
        let open = |name: &str| -> Box<dyn Read> {
            match std::fs::File::open(dir.join(name)) {
                Ok(f) => Box::new(f),
                Err(_) => Box::new(std::io::empty()),
            }
        };
        // A newline between the two, in case the timeline's last line was cut short.
        let input = open(TIMELINE)
            .chain(&b"\n"[..])
            .chain(open(ADAPTER_FAILURES));
        Timeline::from_lines(BufReader::new(input))
    }

    pub fn from_lines(input: impl BufRead) -> Timeline {
        let mut tl = Timeline::default();
        // Open intervals per (pid, tid, test).
        let mut open: HashMap<(u32, Option<u32>, String), Interval> = HashMap::new();
        let mut open_fixtures: HashMap<(u32, String), u64> = HashMap::new();
        let mut done: Vec<((u32, Option<u32>), Interval)> = Vec::new();
        // (runner, why) -> the processes that said it: every process of a run may fail the
        // same way (each xdist or Django worker); the report says it once.
        let mut failures: BTreeMap<(String, String), BTreeSet<u32>> = BTreeMap::new();
        // Threads naming themselves, per process: (t, tid, name).
        let mut namings: HashMap<u32, Vec<(u64, u32, Vec<u8>)>> = HashMap::new();
        for line in input.split(b'\n') {
            let Ok(line) = line else { break };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(e) = serde_json::from_slice::<Event>(&line) else {
                tl.bad_lines += 1;
                continue;
            };
            match e.ev.as_str() {
                "threads" => {
                    if let Some(p) = e.prefix {
                        tl.named_prefix.insert(e.pid, p);
                    }
                    let list = tl.named.entry(e.pid).or_default();
                    for name in e.tests.unwrap_or_default() {
                        if !list.iter().any(|n| n.name == name) {
                            list.push(NamedTest {
                                name,
                                start: None,
                                end: u64::MAX,
                                late: false,
                            });
                        }
                    }
                }
                "start" if e.tid.is_none() && tl.named.contains_key(&e.pid) => {
                    // A test of a thread-named process: no process-wide interval (its tests
                    // may overlap), only its times for `by_thread_name`.
                    let Some(test) = e.test else { continue };
                    let run = tl.tests.entry(test.clone()).or_default();
                    run.runner = e.runner.clone().or(run.runner.take());
                    if let Some(r) = e.runner {
                        tl.runners.insert(r);
                    }
                    let list = tl.named.get_mut(&e.pid).expect("checked");
                    match list
                        .iter_mut()
                        .find(|n| n.name == test && n.start.is_none() && n.end == u64::MAX)
                    {
                        Some(n) => n.start = Some(e.t),
                        None => list.push(NamedTest {
                            name: test,
                            start: Some(e.t),
                            end: u64::MAX,
                            late: false,
                        }),
                    }
                }
                "end" if e.tid.is_none() && tl.named.contains_key(&e.pid) => {
                    let Some(test) = e.test else { continue };
                    let list = tl.named.get_mut(&e.pid).expect("checked");
                    let late = e.late == Some(true);
                    let start = match list
                        .iter_mut()
                        .find(|n| n.name == test && n.end == u64::MAX)
                    {
                        Some(n) => {
                            n.end = e.t;
                            n.late = late;
                            n.start
                        }
                        None => {
                            list.push(NamedTest {
                                name: test.clone(),
                                start: None,
                                end: e.t,
                                late,
                            });
                            None
                        }
                    };
                    let run = tl.tests.entry(test).or_default();
                    run.runner = e.runner.clone().or(run.runner.take());
                    if let Some(r) = e.runner {
                        tl.runners.insert(r);
                    }
                    run.outcome = e.outcome.or(run.outcome.take());
                    // Without a start (tests run in parallel print only their result), only
                    // the runner's own duration, if it gave one.
                    run.duration_s = e
                        .duration_s
                        .or(start.map(|s| e.t.saturating_sub(s) as f64 / 1e9));
                }
                "start" => {
                    let Some(test) = e.test else { continue };
                    if e.outer.is_none() {
                        let run = tl.tests.entry(test.clone()).or_default();
                        run.runner = e.runner.clone().or(run.runner.take());
                        run.file = e.file.clone().or(run.file.take());
                    }
                    if let Some(r) = e.runner {
                        tl.runners.insert(r);
                    }
                    let key = (e.pid, e.tid, test.clone());
                    let iv = Interval {
                        start: e.t,
                        end: u64::MAX,
                        test,
                        outer: e.outer,
                        phases: Vec::new(),
                        paused: Vec::new(),
                    };
                    if let Some(prev) = open.insert(key.clone(), iv) {
                        // Started again without an end (a retry): the first run ends here.
                        let mut prev = prev;
                        prev.end = e.t;
                        done.push(((key.0, key.1), prev));
                    }
                }
                "phase" | "pause" | "cont" => {
                    let Some(test) = e.test else { continue };
                    if let Some(iv) = open.get_mut(&(e.pid, e.tid, test)) {
                        match e.ev.as_str() {
                            "phase" => {
                                if let Some(p) = e.phase {
                                    iv.phases.push((e.t, p));
                                }
                            }
                            "pause" => iv.paused.push((e.t, u64::MAX)),
                            _ => {
                                if let Some(p) = iv.paused.last_mut().filter(|p| p.1 == u64::MAX) {
                                    p.1 = e.t;
                                }
                            }
                        }
                    }
                }
                "end" => {
                    let Some(test) = e.test else { continue };
                    let key = (e.pid, e.tid, test.clone());
                    let iv = open.remove(&key);
                    if let Some(iv) = &iv
                        && iv.outer.is_some()
                    {
                        done.push((
                            (e.pid, e.tid),
                            Interval {
                                end: e.t,
                                ..iv.clone()
                            },
                        ));
                        continue;
                    }
                    let elapsed = iv
                        .as_ref()
                        .map(|iv| e.t.saturating_sub(iv.start) as f64 / 1e9);
                    if let Some(run) = tl.tests.get_mut(&test) {
                        run.outcome = e.outcome.or(run.outcome.take());
                        let d = e.duration_s.or(elapsed);
                        run.duration_s = match (run.duration_s, d) {
                            // A test run again (a retry) takes the time of every run.
                            (Some(a), Some(b)) if iv.is_some() => Some(a + b),
                            (a, b) => b.or(a),
                        };
                    }
                    if let Some(mut iv) = iv {
                        iv.end = e.t;
                        done.push(((e.pid, e.tid), iv));
                    }
                }
                "site" => {
                    let tid = e.tid.unwrap_or(e.pid);
                    let location = e.file.map(|f| {
                        let mut s = f;
                        if let Some(l) = e.line {
                            s.push_str(&format!(":{l}"));
                        }
                        if let Some(func) = e.func.filter(|f| !f.is_empty()) {
                            s.push_str(&format!(" in {func}"));
                        }
                        s
                    });
                    tl.sites.entry((e.pid, tid)).or_default().push(SiteEvent {
                        t: e.t,
                        kind: e.kind.unwrap_or_default(),
                        port: e.port,
                        site: Site {
                            location,
                            library: e.library,
                            host: e.host,
                        },
                    });
                }
                "fixture" => {
                    let Some(name) = e.name else { continue };
                    let label = match (e.scope, e.location) {
                        (Some(s), Some(l)) => format!("{name} ({s}, {l})"),
                        (Some(s), None) => format!("{name} ({s})"),
                        (None, Some(l)) => format!("{name} ({l})"),
                        (None, None) => name,
                    };
                    if e.state.as_deref() == Some("end") {
                        if let Some(start) = open_fixtures.remove(&(e.pid, label.clone())) {
                            tl.fixtures
                                .entry(e.pid)
                                .or_default()
                                .push((start, e.t, label));
                        }
                    } else {
                        open_fixtures.insert((e.pid, label), e.t);
                    }
                }
                "thread" => {
                    // A thread named itself (the shim, in runs that record thread names): the
                    // name's bytes, each written as one character (see SPEC.md).
                    let Some(name) = e.name else { continue };
                    let bytes: Option<Vec<u8>> =
                        name.chars().map(|c| u8::try_from(c).ok()).collect();
                    if let (Some(bytes), Some(tid)) = (bytes, e.tid) {
                        namings.entry(e.pid).or_default().push((e.t, tid, bytes));
                    }
                }
                "spawn" => {
                    // A thread started a process (the shim, in runs that record thread
                    // names); the name's bytes as in `thread`.
                    let Some(name) = e.name else { continue };
                    let bytes: Option<Vec<u8>> =
                        name.chars().map(|c| u8::try_from(c).ok()).collect();
                    if let (Some(name), Some(child)) = (bytes, e.child) {
                        tl.spawns.entry(child).or_default().push(Spawn {
                            t: e.t,
                            pid: e.pid,
                            name,
                        });
                    }
                }
                "process" => {
                    if let Some(r) = e.runner {
                        tl.runners.insert(r);
                    }
                    if let Some(role) = e.role {
                        tl.roles.insert(e.pid, role);
                    }
                }
                "adapter" if e.status.as_deref() == Some("failed") => {
                    failures
                        .entry((
                            e.runner.unwrap_or_else(|| "runner".into()),
                            e.why.unwrap_or_else(|| "failed".into()),
                        ))
                        .or_default()
                        .insert(e.pid);
                }
                _ => {}
            }
        }
        tl.adapter_failures = failures
            .into_iter()
            .map(|((runner, why), pids)| match pids.len() {
                1 => format!("{runner} adapter (pid {}): {why}", pids.first().unwrap()),
                n => format!("{runner} adapter, in {n} processes: {why}"),
            })
            .collect();
        tl.start_named_tests(namings);
        // Tests never ended (the process died inside them, or `_exit`ed): every later call of
        // their process still belongs to them.
        for ((pid, tid, _), iv) in open {
            done.push(((pid, tid), iv));
        }
        for ((pid, tid), iv) in done {
            match tid {
                Some(tid) => tl.thread_scopes.entry((pid, tid)).or_default(),
                None => tl.process_scopes.entry(pid).or_default(),
            }
            .intervals
            .push(iv);
        }
        for s in tl.process_scopes.values_mut() {
            s.seal();
        }
        for s in tl.thread_scopes.values_mut() {
            s.seal();
        }
        for s in tl.sites.values_mut() {
            s.sort_by_key(|s| s.t);
        }
        for s in tl.spawns.values_mut() {
            s.sort_by_key(|s| s.t);
        }
        tl
    }

    /// Who started `pid` (a `spawn` event) if it was started by `posix_spawn` in a run that
    /// records thread names: the latest spawn of that pid at or before `t`, or, for a call
    /// made before its parent wrote the event (the child may connect before `posix_spawn`
    /// returned in the parent), the first.
    fn spawner(&self, pid: u32, t: u64) -> Option<&Spawn> {
        let list = self.spawns.get(&pid)?;
        let i = list.partition_point(|s| s.t <= t);
        list.get(i.saturating_sub(1))
    }

    /// Durations of the tests of thread-named processes (libtest) that ran in parallel, which
    /// print no start: a test began when its thread named itself (`thread` events, written by
    /// the shim), and ended when its result was read. The namings that fit a test's name are
    /// the candidates; tests sharing their first 15 bytes take them in name order (libtest
    /// starts tests in that order), each the earliest one not taken yet, before its end. Two
    /// such tests started together may swap namings made microseconds apart: their durations
    /// stay right to that much. A test with a start of its own (one at a time), or a duration
    /// from the runner, keeps it; one whose end is `late` (terse output: every test ends with
    /// its binary) gets none.
    fn start_named_tests(&mut self, mut namings: HashMap<u32, Vec<(u64, u32, Vec<u8>)>>) {
        for (pid, tests) in &self.named {
            let Some(list) = namings.get_mut(pid) else {
                continue;
            };
            list.sort();
            let prefix = self.named_prefix.get(pid).map_or("", String::as_str);
            let mut order: Vec<&NamedTest> = tests
                .iter()
                .filter(|n| n.start.is_none() && n.end != u64::MAX && !n.late)
                .collect();
            order.sort_by(|a, b| a.name.cmp(&b.name));
            let mut taken = vec![false; list.len()];
            for test in order {
                let Some(name) = test.name.strip_prefix(prefix) else {
                    continue;
                };
                let Some(i) = (0..list.len())
                    .find(|&i| !taken[i] && list[i].0 <= test.end && carries(name, &list[i].2))
                else {
                    continue;
                };
                taken[i] = true;
                if let Some(run) = self.tests.get_mut(&test.name)
                    && run.duration_s.is_none()
                {
                    run.duration_s = Some(test.end.saturating_sub(list[i].0) as f64 / 1e9);
                }
            }
        }
    }

    /// Whether any runner reported its tests here (so `tests_total` is known).
    pub fn knows_tests(&self) -> bool {
        !self.tests.is_empty()
    }

    /// Does the timeline say nothing a call's attribution could use: no test or fixture of any
    /// process, no thread names, spawns or call sites (a run without adapters)? Then
    /// [`Timeline::attribute_in_tree`] gives every call the test and phase its engine read
    /// from the environment, and nothing else, and [`Timeline::site`] finds no site: the report
    /// takes that from the record without asking.
    pub fn by_record_alone(&self) -> bool {
        self.process_scopes.is_empty()
            && self.thread_scopes.is_empty()
            && self.fixtures.is_empty()
            && self.named.is_empty()
            && self.spawns.is_empty()
            && self.sites.is_empty()
    }

    /// Whether a process reported tests through the timeline: then its calls are attributed by
    /// the timeline alone, between tests included.
    fn has_scope(&self, pid: u32, tid: u32) -> bool {
        self.process_scopes.contains_key(&pid) || self.thread_scopes.contains_key(&(pid, tid))
    }

    /// As [`Timeline::attribute`], and a process that neither reported tests nor carries one in
    /// its environment (a child forked inside a test: the seccomp engine reads the environment a
    /// process was exec'd with, which a fork does not renew) takes its parent's test at that
    /// moment, up the tree. `parent` gives a process's parent, from the engines' records.
    ///
    /// A process started with `posix_spawn` by a thread-named process (a libtest test, under
    /// `cargo test`: a `spawn` event) takes the test of the thread that started it, by that
    /// thread's name when it spawned ([`Timeline::by_thread_name`] at the spawn's time: a
    /// libtest thread runs one test, and at the spawn it was running). Up the tree too: a
    /// grandchild with no test of its own walks up to such a child, which may never have made
    /// a call (the `spawn` event links it to its parent).
    pub fn attribute_in_tree(
        &self,
        pid: u32,
        tid: u32,
        t: u64,
        recorded: Option<(String, Option<String>)>,
        thread: &[u8],
        parent: impl Fn(u32) -> Option<u32>,
    ) -> Attribution {
        let own = self.attribute(pid, tid, t, recorded.clone(), thread);
        let needs_test = own.test.is_none() && recorded.is_none() && !self.has_scope(pid, tid);
        let needs_phase = own.test.is_some() && own.phase.is_none();
        if !needs_test && !needs_phase {
            return own;
        }
        let inherit = |up: Attribution| match &own.test {
            None if needs_test => Attribution {
                fixture: own.fixture.clone().or(up.fixture.clone()),
                since: own.since,
                ..up
            },
            Some(test) if up.test.as_ref() == Some(test) => Attribution {
                phase: up.phase,
                ..own.clone()
            },
            _ => own.clone(),
        };
        // The nearest ancestor that reported tests: its test at that moment, or, for a child
        // whose environment names the test (NETTRAP_TEST holds no phase), the phase.
        let mut p = pid;
        for _ in 0..8 {
            let next = match self.spawner(p, t) {
                Some(s) => {
                    if needs_test && let Some(up) = self.by_thread_name(s.pid, s.t, &s.name) {
                        return inherit(up);
                    }
                    Some(s.pid)
                }
                None => parent(p),
            };
            match next {
                Some(pp) if pp > 1 && pp != p => p = pp,
                _ => break,
            }
            if !self.process_scopes.contains_key(&p) {
                continue;
            }
            return inherit(self.attribute(p, p, t, None, b""));
        }
        own
    }

    /// The test a call made by `pid`/`tid` at `t` belongs to; `recorded` is what the engine read
    /// from the process's environment (test id and phase), `thread` the calling thread's name
    /// when the run recorded it (else empty).
    pub fn attribute(
        &self,
        pid: u32,
        tid: u32,
        t: u64,
        recorded: Option<(String, Option<String>)>,
        thread: &[u8],
    ) -> Attribution {
        let fixture = self.fixtures.get(&pid).and_then(|f| {
            f.iter()
                .filter(|(a, b, _)| *a <= t && t <= *b)
                .max_by_key(|(a, _, _)| *a)
                .map(|(_, _, l)| l.clone())
        });
        let covering = match self.thread_scopes.get(&(pid, tid)) {
            Some(s) if !s.covering(t).is_empty() => s.covering(t),
            _ => self
                .process_scopes
                .get(&pid)
                .map(|s| s.covering(t))
                .unwrap_or_default(),
        };
        if covering.is_empty() {
            let since = self
                .process_scopes
                .get(&pid)
                .map_or(0, |s| s.previous_end(t));
            if let Some(a) = self.by_thread_name(pid, t, thread) {
                return Attribution { fixture, ..a };
            }
            if self.has_scope(pid, tid) && recorded.is_none() {
                return Attribution {
                    fixture,
                    since,
                    ..Attribution::default()
                };
            }
            let (test, phase) = recorded.map_or((None, None), |(t, p)| (Some(t), p));
            return Attribution {
                test,
                phase,
                fixture,
                since,
                ..Attribution::default()
            };
        }
        let since = covering.iter().map(|i| i.start).max().unwrap_or(0);
        let (own, nested): (Vec<&Interval>, Vec<&Interval>) =
            covering.iter().partition(|i| i.outer.is_none());
        // A test running its own subtests (Go's `TestA/sub`, node:test's `file > a > sub`) is
        // not a concurrent peer: the call belongs to the most specific test.
        let ancestor = |a: &Interval| {
            own.iter().any(|b| {
                b.test.strip_prefix(a.test.as_str()).is_some_and(|rest| {
                    rest.len() > 1 && (rest.starts_with('/') || rest.starts_with(" > "))
                })
            })
        };
        let own: Vec<&Interval> = own.iter().copied().filter(|i| !ancestor(i)).collect();
        let inner_test = nested.last().map(|i| i.test.clone());
        let Some(first) = own.first() else {
            // Only nested tests here: a test runner started by a test; its outer test owns it.
            let inner = nested.last().expect("covering is not empty");
            let phase = recorded.as_ref().and_then(|r| r.1.clone());
            return Attribution {
                test: inner.outer.clone(),
                phase,
                inner_test,
                fixture,
                since,
                ..Attribution::default()
            };
        };
        // Nested in-process intervals start inside the outer one; siblings overlap otherwise.
        let phase = first
            .phases
            .iter()
            .rev()
            .find(|(pt, _)| *pt <= t)
            .map(|(_, p)| p.clone());
        let concurrent = own[1..]
            .iter()
            .map(|i| i.test.clone())
            .filter(|n| *n != first.test)
            .collect();
        Attribution {
            test: Some(first.test.clone()),
            phase,
            inner_test,
            concurrent,
            fixture,
            since,
        }
    }

    /// The thread-name join, for processes that wrote a `threads` event (libtest, through
    /// `nettrap cargo-exec`), used when no timeline interval covers the call.
    ///
    /// libtest runs each test on a thread named with the test's full name, of which the kernel
    /// keeps 15 bytes. The candidates are the process's tests whose name begins with the
    /// calling thread's name (or equals it, for shorter names). One candidate: the call is its.
    /// Several (names that share their first 15 bytes): those whose `end` is not before the
    /// call remain (a test's result is printed after its calls, and stamped when the adapter
    /// read it, later still); of those the first in name order, which is the order libtest
    /// starts tests in, gets the call. When the tests ran in parallel (no `start` events: only
    /// results were printed) the other remaining candidates are named as `concurrent`; when
    /// they ran one at a time, the later ones had not started, so none is. If every candidate
    /// had ended (a thread that outlived its test), the one that ended last.
    ///
    /// Not exact: an end is stamped when the adapter read the result line, so a call made
    /// within that delay after a same-prefix test ended can still go to that earlier test.
    fn by_thread_name(&self, pid: u32, t: u64, thread: &[u8]) -> Option<Attribution> {
        let tests = self.named.get(&pid)?;
        if thread.is_empty() {
            return None;
        }
        let thread = &thread[..thread.len().min(COMM_MAX)];
        let prefix = self.named_prefix.get(&pid).map_or("", String::as_str);
        let fits = |n: &NamedTest| {
            n.name
                .strip_prefix(prefix)
                .is_some_and(|n| carries(n, thread))
        };
        let mut candidates: Vec<&NamedTest> = tests.iter().filter(|n| fits(n)).collect();
        candidates.sort_by(|a, b| a.name.cmp(&b.name));
        candidates.dedup_by(|a, b| a.name == b.name && a.end == b.end);
        let attribution = |test: &NamedTest, concurrent: Vec<String>| Attribution {
            test: Some(test.name.clone()),
            concurrent,
            ..Attribution::default()
        };
        match candidates.len() {
            0 => None,
            1 => Some(attribution(candidates[0], Vec::new())),
            _ => {
                let running: Vec<&NamedTest> =
                    candidates.iter().copied().filter(|n| n.end >= t).collect();
                let Some(first) = running.first() else {
                    let last = candidates.iter().max_by_key(|n| n.end)?;
                    return Some(attribution(last, Vec::new()));
                };
                let sequential = tests.iter().any(|n| n.start.is_some());
                let concurrent = if sequential {
                    Vec::new()
                } else {
                    running[1..]
                        .iter()
                        .map(|n| n.name.clone())
                        .filter(|n| *n != first.name)
                        .collect()
                };
                Some(attribution(first, concurrent))
            }
        }
    }

    /// The call site written just before a call on the same thread, not before `since` (the
    /// start of the test the call fell in), used once.
    pub fn site(&mut self, pid: u32, tid: u32, t: u64, port: u16, since: u64) -> Option<Site> {
        let list = self.sites.get(&(pid, tid))?;
        let end = list.partition_point(|s| s.t <= t);
        for i in (0..end).rev().take(8) {
            let s = &list[i];
            if t - s.t > SITE_WINDOW_NS || s.t < since {
                break;
            }
            if self.used_sites.contains(&(pid, tid, i)) {
                continue;
            }
            // A name lookup's own datagrams and connects go to port 53.
            let fits = match s.kind.as_str() {
                "getaddrinfo" => port == 53,
                _ => s.port.is_none_or(|p| p == port) || port == 53 && s.port.is_none(),
            };
            if fits {
                let site = s.site.clone();
                self.used_sites.insert((pid, tid, i));
                return Some(site);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tl(lines: &str) -> Timeline {
        Timeline::from_lines(lines.as_bytes())
    }

    /// What the report skips asking when the timeline says nothing (`by_record_alone`):
    /// every call goes to the engine's test and phase, down a process tree too, with no site.
    #[test]
    fn a_timeline_that_says_nothing_attributes_by_the_record_alone() {
        // Runners and outcomes alone (no test of any process) still say nothing per call.
        let mut t = tl(concat!(
            r#"{"ev":"adapter","t":1,"pid":9,"runner":"python","status":"failed","why":"x"}"#,
            "\n",
        ));
        assert!(t.by_record_alone());
        let parent = |p: u32| (p < 40).then_some(p + 1);
        for (recorded, thread) in [
            (None, &b""[..]),
            (Some(("t::a".to_string(), None)), &b"main"[..]),
            (
                Some(("t::b".to_string(), Some("call".to_string()))),
                &b""[..],
            ),
        ] {
            let a = t.attribute_in_tree(5, 6, 1_000, recorded.clone(), thread, parent);
            let (test, phase) = recorded.map_or((None, None), |(t, p)| (Some(t), p));
            assert_eq!(
                a,
                Attribution {
                    test,
                    phase,
                    ..Attribution::default()
                }
            );
            assert_eq!(t.site(5, 6, 1_000, 80, a.since), None);
        }
        let t = tl(concat!(
            r#"{"ev":"start","t":10,"pid":1,"test":"a","runner":"pytest"}"#,
            "\n"
        ));
        assert!(!t.by_record_alone());
    }

    #[test]
    fn joins_calls_to_process_tests_with_phases() {
        let t = tl(concat!(
            r#"{"ev":"start","t":10,"pid":1,"test":"a","runner":"pytest"}"#,
            "\n",
            r#"{"ev":"phase","t":11,"pid":1,"test":"a","phase":"setup"}"#,
            "\n",
            r#"{"ev":"phase","t":20,"pid":1,"test":"a","phase":"call"}"#,
            "\n",
            r#"{"ev":"end","t":30,"pid":1,"test":"a","outcome":"passed"}"#,
            "\n",
            r#"{"ev":"start","t":40,"pid":1,"test":"b"}"#,
            "\n",
            "{torn\n",
            r#"{"ev":"adapter","t":1,"pid":9,"runner":"python","status":"failed","why":"boom"}"#,
            "\n",
            r#"{"ev":"end","t":50,"pid":1,"test":"b","outcome":"failed","duration_s":0.5}"#,
            "\n",
        ));
        let a = t.attribute(1, 1, 15, None, b"");
        assert_eq!(
            (a.test.as_deref(), a.phase.as_deref()),
            (Some("a"), Some("setup"))
        );
        assert_eq!(
            t.attribute(1, 7, 25, None, b"").phase.as_deref(),
            Some("call")
        );
        // Between tests: nobody's, even if the environment said otherwise (stale).
        assert_eq!(t.attribute(1, 1, 35, None, b"").test, None);
        // Another process without a timeline: the environment decides.
        let env = Some(("c".to_string(), Some("call".to_string())));
        assert_eq!(t.attribute(2, 2, 35, env, b"").test.as_deref(), Some("c"));
        assert_eq!(t.tests.len(), 2);
        assert_eq!(t.tests["a"].duration_s, Some(20e-9));
        assert_eq!(t.tests["b"].outcome.as_deref(), Some("failed"));
        assert_eq!(t.bad_lines, 1);
        assert_eq!(t.adapter_failures, ["python adapter (pid 9): boom"]);
    }

    #[test]
    fn one_adapter_failure_of_many_processes_is_said_once() {
        let line = |pid: u32, runner: &str, why: &str| {
            format!(
                "{{\"ev\":\"adapter\",\"t\":1,\"pid\":{pid},\"runner\":\"{runner}\",\"status\":\"failed\",\"why\":\"{why}\"}}\n"
            )
        };
        let text = [
            line(3, "python", "cannot write the timeline"),
            line(4, "python", "cannot write the timeline"),
            line(4, "python", "cannot write the timeline"),
            line(5, "jest", "no jest-circus"),
            line(6, "jest", "no jest-circus"),
            line(7, "python", "other"),
        ]
        .concat();
        assert_eq!(
            tl(&text).adapter_failures,
            [
                "jest adapter, in 2 processes: no jest-circus",
                "python adapter, in 2 processes: cannot write the timeline",
                "python adapter (pid 7): other",
            ]
        );
    }

    #[test]
    fn nested_and_parallel_and_sites() {
        let mut t = tl(concat!(
            r#"{"ev":"start","t":10,"pid":1,"test":"outer"}"#,
            "\n",
            r#"{"ev":"start","t":12,"pid":1,"test":"inner","outer":"outer"}"#,
            "\n",
            r#"{"ev":"end","t":14,"pid":1,"test":"inner","outer":"outer"}"#,
            "\n",
            r#"{"ev":"end","t":20,"pid":1,"test":"outer"}"#,
            "\n",
            r#"{"ev":"start","t":12,"pid":2,"test":"child-inner","outer":"outer"}"#,
            "\n",
            r#"{"ev":"start","t":100,"pid":3,"test":"P1"}"#,
            "\n",
            r#"{"ev":"start","t":101,"pid":3,"test":"P2"}"#,
            "\n",
            r#"{"ev":"pause","t":102,"pid":3,"test":"P2"}"#,
            "\n",
            r#"{"ev":"cont","t":105,"pid":3,"test":"P2"}"#,
            "\n",
            r#"{"ev":"site","t":106,"pid":3,"tid":9,"kind":"connect","port":80,"file":"x.go","line":3,"library":null}"#,
            "\n",
        ));
        let a = t.attribute(1, 1, 13, None, b"");
        assert_eq!(
            (a.test.as_deref(), a.inner_test.as_deref()),
            (Some("outer"), Some("inner"))
        );
        assert_eq!(t.attribute(1, 1, 16, None, b"").inner_test, None);
        assert_eq!(
            t.attribute(2, 2, 13, None, b"").test.as_deref(),
            Some("outer")
        );
        assert_eq!(
            t.attribute(3, 3, 103, None, b"").concurrent,
            Vec::<String>::new()
        );
        let p = t.attribute(3, 3, 107, None, b"");
        assert_eq!(
            (p.test.as_deref(), p.concurrent.clone()),
            (Some("P1"), vec!["P2".to_string()])
        );
        assert_eq!(t.tests.len(), 3);
        let sub = tl(concat!(
            r#"{"ev":"start","t":1,"pid":4,"test":"m/TestA"}"#,
            "\n",
            r#"{"ev":"start","t":2,"pid":4,"test":"m/TestA/sub"}"#,
            "\n",
            r#"{"ev":"start","t":3,"pid":4,"test":"m/TestAB"}"#,
            "\n",
        ));
        let a = sub.attribute(4, 4, 5, None, b"");
        assert_eq!(
            (a.test.as_deref(), a.concurrent),
            (Some("m/TestA/sub"), vec!["m/TestAB".to_string()])
        );
        let node = tl(concat!(
            r#"{"ev":"start","t":1,"pid":5,"test":"t.js > cache"}"#,
            "\n",
            r#"{"ev":"start","t":2,"pid":5,"test":"t.js > cache > gets"}"#,
            "\n",
        ));
        assert_eq!(
            node.attribute(5, 5, 3, None, b"").test.as_deref(),
            Some("t.js > cache > gets")
        );
        assert_eq!(
            t.site(3, 9, 107, 80, 107),
            None,
            "a site before the test is not its"
        );
        let s = t.site(3, 9, 107, 80, 100).unwrap();
        assert_eq!(s.location.as_deref(), Some("x.go:3"));
        assert_eq!(t.site(3, 9, 108, 80, 100), None, "a site is used once");
    }

    #[test]
    fn thread_names_join_calls_of_libtest_processes() {
        // Parallel (results only), two names sharing 15 bytes, one short name.
        let t = tl(concat!(
            r#"{"ev":"threads","t":1,"pid":5,"prefix":"crate "}"#,
            "\n",
            r#"{"ev":"end","t":50,"pid":5,"test":"crate net::search_index_a","outcome":"passed","runner":"cargo"}"#,
            "\n",
            r#"{"ev":"end","t":90,"pid":5,"test":"crate net::search_index_b","outcome":"failed"}"#,
            "\n",
            r#"{"ev":"end","t":95,"pid":5,"test":"crate tiny","outcome":"skipped"}"#,
            "\n",
            r#"{"ev":"threads","t":99,"pid":5,"tests":["crate net::search_index_a","crate net::search_index_b","crate tiny","crate never_ended"]}"#,
            "\n",
        ));
        // Ids are "<binary> <name>": the thread carries the name part.
        let a = t.attribute(5, 6, 40, None, b"net::search_ind");
        assert_eq!(
            (a.test.as_deref(), a.concurrent),
            (
                Some("crate net::search_index_a"),
                vec!["crate net::search_index_b".to_string()]
            )
        );
        let b = t.attribute(5, 7, 60, None, b"net::search_ind");
        assert_eq!(
            (b.test.as_deref(), b.concurrent),
            (Some("crate net::search_index_b"), vec![])
        );
        assert_eq!(
            t.attribute(5, 8, 60, None, b"tiny").test.as_deref(),
            Some("crate tiny")
        );
        assert_eq!(
            t.attribute(5, 8, 60, None, b"never_ended").test.as_deref(),
            Some("crate never_ended")
        );
        // The main thread, a named helper, or a process without `threads`: not by name.
        assert_eq!(t.attribute(5, 5, 60, None, b"it-3c230e0f1734").test, None);
        assert_eq!(t.attribute(5, 9, 60, None, b"helper").test, None);
        assert_eq!(t.attribute(6, 6, 60, None, b"tiny").test, None);
        assert_eq!(t.tests.len(), 3, "the list names tests, results count them");
        assert_eq!(
            t.tests["crate net::search_index_b"].outcome.as_deref(),
            Some("failed")
        );
        assert_eq!(t.tests["crate tiny"].duration_s, None);
        // One at a time (a start per test): later same-prefix tests had not started.
        let s = tl(concat!(
            r#"{"ev":"threads","t":1,"pid":5,"prefix":"c "}"#,
            "\n",
            r#"{"ev":"start","t":10,"pid":5,"test":"c net::search_index_a"}"#,
            "\n",
            r#"{"ev":"end","t":20,"pid":5,"test":"c net::search_index_a","outcome":"passed"}"#,
            "\n",
            r#"{"ev":"start","t":20,"pid":5,"test":"c net::search_index_b"}"#,
            "\n",
        ));
        let a = s.attribute(5, 6, 15, None, b"net::search_ind");
        assert_eq!(
            (a.test.as_deref(), a.concurrent),
            (Some("c net::search_index_a"), vec![])
        );
        let b = s.attribute(5, 7, 25, None, b"net::search_ind");
        assert_eq!(b.test.as_deref(), Some("c net::search_index_b"));
        assert_eq!(s.tests["c net::search_index_a"].duration_s, Some(10e-9));
    }

    #[test]
    fn thread_namings_start_parallel_libtest_tests() {
        let t = tl(concat!(
            r#"{"ev":"threads","t":1,"pid":5,"prefix":"c "}"#,
            "\n",
            // Two threads sharing a cut name, one short name, a helper, another process's.
            r#"{"ev":"thread","t":12,"pid":5,"tid":7,"name":"net::search_ind"}"#,
            "\n",
            r#"{"ev":"thread","t":10,"pid":5,"tid":6,"name":"net::search_ind"}"#,
            "\n",
            r#"{"ev":"thread","t":11,"pid":5,"tid":8,"name":"tiny"}"#,
            "\n",
            r#"{"ev":"thread","t":13,"pid":5,"tid":9,"name":"helper"}"#,
            "\n",
            r#"{"ev":"thread","t":2,"pid":6,"tid":9,"name":"solo"}"#,
            "\n",
            r#"{"ev":"end","t":50,"pid":5,"test":"c net::search_index_a","outcome":"passed"}"#,
            "\n",
            r#"{"ev":"end","t":90,"pid":5,"test":"c net::search_index_b","outcome":"passed"}"#,
            "\n",
            r#"{"ev":"end","t":31,"pid":5,"test":"c tiny","outcome":"passed"}"#,
            "\n",
            r#"{"ev":"end","t":60,"pid":5,"test":"c unnamed","outcome":"passed"}"#,
            "\n",
            // Terse output: the end is the binary's, not the test's.
            r#"{"ev":"thread","t":14,"pid":5,"tid":11,"name":"quick"}"#,
            "\n",
            r#"{"ev":"end","t":95,"pid":5,"test":"c quick","outcome":"passed","late":true}"#,
            "\n",
            // Bytes a cut name may hold: each written as one character.
            r#"{"ev":"thread","t":70,"pid":5,"tid":10,"name":"abcdefghijklmn\u00c3"}"#,
            "\n",
            r#"{"ev":"end","t":80,"pid":5,"test":"c abcdefghijklmné_x","outcome":"passed"}"#,
            "\n",
        ));
        let d = |id: &str| t.tests[id].duration_s;
        assert_eq!(d("c net::search_index_a"), Some(40e-9));
        assert_eq!(d("c net::search_index_b"), Some(78e-9));
        assert_eq!(d("c tiny"), Some(20e-9));
        assert_eq!(d("c unnamed"), None);
        assert_eq!(d("c quick"), None, "a late end gives no duration");
        assert_eq!(
            d("c abcdefghijklmné_x"),
            Some(10e-9),
            "a name cut inside a character"
        );
        // Namings give durations only: calls still go by name, parallel peers named.
        let a = t.attribute(5, 6, 40, None, b"net::search_ind");
        assert_eq!(a.concurrent, vec!["c net::search_index_b".to_string()]);
    }

    #[test]
    fn processes_a_libtest_thread_spawned_take_its_test() {
        let t = tl(concat!(
            r#"{"ev":"threads","t":1,"pid":5,"prefix":"c "}"#,
            "\n",
            r#"{"ev":"spawn","t":20,"pid":5,"tid":6,"child":30,"name":"net::child_proc"}"#,
            "\n",
            // Two tests sharing a cut name: the spawn's time tells them apart.
            r#"{"ev":"spawn","t":40,"pid":5,"tid":7,"child":31,"name":"net::search_ind"}"#,
            "\n",
            r#"{"ev":"end","t":50,"pid":5,"test":"c net::search_index_a","outcome":"passed"}"#,
            "\n",
            r#"{"ev":"spawn","t":60,"pid":5,"tid":8,"child":32,"name":"net::search_ind"}"#,
            "\n",
            r#"{"ev":"end","t":70,"pid":5,"test":"c net::child_process","outcome":"passed"}"#,
            "\n",
            r#"{"ev":"end","t":90,"pid":5,"test":"c net::search_index_b","outcome":"passed"}"#,
            "\n",
            // The binary's main thread, and a process that is no test binary.
            r#"{"ev":"spawn","t":95,"pid":5,"tid":5,"child":33,"name":"nettrap_rust_f"}"#,
            "\n",
            r#"{"ev":"spawn","t":95,"pid":9,"tid":9,"child":34,"name":"bash"}"#,
            "\n",
        ));
        let parents = |p: u32| match p {
            40 => Some(30), // a grandchild, forked by the child (which made no call)
            41 => Some(40), // and its child
            _ => None,
        };
        let at = |pid: u32, time: u64| {
            t.attribute_in_tree(pid, pid, time, None, b"bash", parents)
                .test
        };
        // The child calls after its test ended (a daemon): still the test that started it.
        assert_eq!(at(30, 80).as_deref(), Some("c net::child_process"));
        // Before its parent wrote the event (posix_spawn had not returned yet there).
        assert_eq!(at(30, 19).as_deref(), Some("c net::child_process"));
        assert_eq!(at(40, 25).as_deref(), Some("c net::child_process"));
        assert_eq!(at(41, 25).as_deref(), Some("c net::child_process"));
        assert_eq!(at(31, 100).as_deref(), Some("c net::search_index_a"));
        assert_eq!(at(32, 65).as_deref(), Some("c net::search_index_b"));
        assert_eq!(at(33, 100), None);
        assert_eq!(at(34, 100), None);
        // A child whose environment names a test keeps it.
        let env = Some(("other".to_string(), None));
        assert_eq!(
            t.attribute_in_tree(30, 30, 80, env, b"bash", parents)
                .test
                .as_deref(),
            Some("other")
        );
        // A spawn from a pytest process (process-wide tests): the walk goes on to it.
        let p = tl(concat!(
            r#"{"ev":"start","t":10,"pid":7,"test":"t::a"}"#,
            "\n",
            r#"{"ev":"spawn","t":20,"pid":7,"tid":7,"child":50,"name":"python"}"#,
            "\n",
        ));
        assert_eq!(
            p.attribute_in_tree(50, 50, 30, None, b"sh", |_| None)
                .test
                .as_deref(),
            Some("t::a")
        );
    }
}
