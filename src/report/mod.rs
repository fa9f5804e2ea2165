//! The report: its model (the versioned JSON schema) and how it is built from the event log.
//!
//! Calls are grouped per test (or, outside any test, in `unattributed`) by destination,
//! category, transport, verdict, phase, process and rule, with a count. `render` turns a report
//! into the summary, the mocking to-do list and the `nettrap report` output.

pub mod baseline;
pub mod formats;
pub mod github;
/// The report a test builds from `events`: the default policy, the timeline in `dir`, a
/// preload run of no command.
#[cfg(test)]
fn test_report(events: &dyn Events, dir: &std::path::Path) -> Report {
    let policy = crate::policy::builtin::defaults();
    let compiled = policy.compile().unwrap();
    let info = RunInfo {
        command: vec![],
        engine: "preload".into(),
        command_exit_code: 0,
        runner: None,
        seccomp: false,
        killed: vec![],
        log_error: None,
        supervisor_error: None,
        unobserved: Default::default(),
    };
    build(&policy, &compiled, events, Timeline::read(dir), info)
}

#[cfg(test)]
mod hint_tests;
pub mod html;
pub mod in_suite;
pub mod junit;
pub mod merge;
pub mod payoff;
pub mod render;

use crate::attribution::{Attribution, Timeline};
use crate::fast_hash::{FastMap, FastSet};
use crate::policy::Policy;
use nettrap_core::addr::Dest;
use nettrap_core::event::{
    CallHead, CallRecord, CallRef, Decoded, Hint, LANES, RecordRef, Source, Syscall, Unobserved,
};
use nettrap_core::policy::{Action, CompiledPolicy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// 2: `tests` lists every test that ran (not only those with calls); runner fields added.
/// Fields are added within a version (a change to existing fields bumps it): `enforce`,
/// `killed`, in `lost`: `unobserved`, `handed_to_supervisor`, `log_error`, and in calls:
/// `served_by_suite` came later in 2, and read as their defaults from reports without them.
pub const SCHEMA_VERSION: u32 = 2;
/// The oldest schema `nettrap report` still reads (its missing fields take their defaults).
pub const OLDEST_SCHEMA: u32 = 1;

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Report {
    pub schema_version: u32,
    pub nettrap_version: String,
    pub command: Vec<String>,
    pub engine: String,
    /// The test runner recognised from the command line or named with `--runner`.
    #[serde(default)]
    pub runner: Option<String>,
    /// The command's own status, shell-style (128 + signal when killed).
    pub command_exit_code: i32,
    /// What `nettrap run` exited with.
    pub exit_code: i32,
    /// Did the policy deny anything (rules, `--deny-dns`) or name `fail_on` categories? Losses
    /// then fail the run.
    #[serde(default)]
    pub enforce: bool,
    /// The runners that reported their tests (`pytest`, `unittest`, `django`, `jest`, `go`).
    #[serde(default)]
    pub runners: Vec<String>,
    /// Tests the run ran, when a runner adapter reported them; `null` otherwise.
    pub tests_total: Option<u64>,
    /// Tests with at least one recorded or denied call.
    pub tests_with_calls: u64,
    /// Per category: its ports, and the tests and calls that reached it.
    pub categories: BTreeMap<String, CategorySummary>,
    pub tests: Vec<TestEntry>,
    /// Calls made outside any test (imports, collection, session fixtures).
    pub unattributed: Vec<CallEntry>,
    pub fail_on: Vec<String>,
    /// Processes that set up io_uring, whose operations bypass interception (seccomp engine).
    #[serde(default)]
    pub io_uring: Vec<IoUringEntry>,
    /// Records the run could not keep, if any: the report is then incomplete.
    pub lost: Lost,
    /// Processes nettrap killed to end the run: left running after the command exited, or
    /// killed at a second interrupt.
    #[serde(default)]
    pub killed: Vec<KilledEntry>,
    /// Adapters that could not load (the run fell back to the environment protocol).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adapter_failures: Vec<String>,
    /// A hash of the policy the run was under (`fnv1a64:…`, see `policy::fingerprint`):
    /// `nettrap merge` combines only reports of one policy. Absent from older reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_fingerprint: Option<String>,
    /// The shard reports `nettrap merge` combined into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<merge::Shard>,
    /// What `--baseline` found: offending calls new since the baseline, and entries fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<baseline::BaselineCheck>,
    /// The suite's time and the part of it at stake (see `payoff`).
    #[serde(default)]
    pub payoff: payoff::SuitePayoff,
    /// Per category and destination: offending calls, tests and time at stake, largest payoff
    /// first.
    #[serde(default)]
    pub destinations: Vec<payoff::DestinationSummary>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct CategorySummary {
    /// Ports that define the category (`"8000-8100"` for a range).
    pub ports: Vec<String>,
    /// Ports actually called (by recorded or denied calls; for `in-suite`, by any call).
    pub ports_seen: Vec<u16>,
    /// Tests with a recorded or denied call in this category (for `in-suite`, with any call).
    pub tests: u64,
    /// Recorded and denied calls, unattributed ones included.
    pub calls: u64,
    pub recorded: u64,
    pub denied: u64,
    pub allowed: u64,
    /// Of `calls`, those made outside any test.
    #[serde(default)]
    pub unattributed: u64,
    #[serde(flatten)]
    pub payoff: payoff::Payoff,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TestEntry {
    pub test: String,
    /// `passed`, `failed`, `error`, `skipped`, `xfailed`, `xpassed`, as the runner reported it;
    /// null where no adapter reported the test.
    #[serde(default)]
    pub outcome: Option<String>,
    /// Seconds the test took (all its phases), as the runner reported it.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Its duration when it made an offending call, else 0.
    #[serde(flatten)]
    pub payoff: payoff::Payoff,
    pub calls: Vec<CallEntry>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CallEntry {
    pub category: String,
    pub address: String,
    pub port: u16,
    pub transport: String,
    pub verdict: String,
    pub count: u64,
    /// `setup`, `call`, `teardown`, or null when the runner does not say.
    pub phase: Option<String>,
    pub syscall: String,
    /// The rule that decided, as `deny elasticsearch, nettrap.toml:9`.
    pub rule: String,
    /// What the calls returned: `ok`, an errno name, or `pending` (the process ended inside it).
    pub outcomes: BTreeMap<String, u64>,
    pub process: ProcessInfo,
    /// The first frame in the project's own code: `app/search.py:42 in index_document`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The client library that made the call (`redis`, `urllib3`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// The host name the program connected by: the adapter's (from the call site), else the
    /// name the shim saw the program resolve the address from; for a `lookup`, the name looked
    /// up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A shared fixture being set up when the call was made: `es_client (session, tests/conftest.py)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixture: Option<String>,
    /// The nested test (a test runner run by this test) that made the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_test: Option<String>,
    /// Other tests running in the same process at the time (overlapping parallel tests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concurrent_tests: Vec<String>,
    /// The destination is a server a process of the run opened (see `in_suite`): category
    /// `in-suite`, or a known service's the suite started itself (a fixture's `redis-server`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub served_by_suite: bool,
    /// Nanoseconds these calls spent blocked inside the real call or lookup, as the engines
    /// measured it around the call (the shim does; calls the seccomp supervisor lets continue
    /// and denied calls count 0): a lower bound of what mocking them saves. An integer, so
    /// that merging shards adds exactly, in any order.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub blocked_ns: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessInfo {
    pub pid: u32,
    pub exe: String,
    pub cmdline: String,
    /// What the process is to the runner: xdist worker `gw1`, `django worker 2`, `jest worker 3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct IoUringEntry {
    /// `refused` (enforce runs: ENOSYS, so runtimes fall back to plain system calls) or
    /// `allowed` (record runs: its network operations may be missing from the report).
    pub verdict: String,
    pub test: Option<String>,
    pub count: u64,
    pub process: ProcessInfo,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Lost {
    /// Calls decided but not recorded: the event log or its filesystem was full, or the log
    /// window the record fell in could not be mapped.
    pub dropped: u64,
    /// Records a process began but never finished writing (it died mid-record), or damaged
    /// ones: one per record.
    pub torn: u64,
    /// Calls an engine let pass without deciding or recording them, and no other engine saw.
    #[serde(default)]
    pub unobserved: UnobservedLoss,
    /// Calls a shim let pass undecided to the seccomp supervisor, which ran too (engine `auto`)
    /// and decided them: not lost, listed for completeness.
    #[serde(default)]
    pub handed_to_supervisor: u64,
    /// Why the event log could not be read after the run, if it could not: the report then
    /// holds no calls at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_error: Option<String>,
    /// Why the seccomp supervisor stopped answering before the run ended, if it did: calls
    /// trapped after that failed with ENOSYS, undecided and unrecorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_error: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct UnobservedLoss {
    pub total: u64,
    /// Per cause: `shim_unmapped`, `shim_unreadable`, `supervisor_unreadable` (`unknown`: a
    /// cause this nettrap does not know, from a newer shim).
    pub by_cause: BTreeMap<String, u64>,
}

impl Lost {
    pub fn any(&self) -> bool {
        self.dropped > 0
            || self.torn > 0
            || self.unobserved.total > 0
            || self.log_error.is_some()
            || self.supervisor_error.is_some()
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct KilledEntry {
    pub pid: u32,
    pub cmdline: String,
    /// The last signal nettrap sent it: `SIGTERM`, or `SIGKILL` when SIGTERM was not enough.
    pub signal: String,
    /// `left_running` (still running after the command exited and the grace period passed) or
    /// `second_interrupt` (nettrap was interrupted twice while the command ran).
    pub reason: String,
}

pub use in_suite::IN_SUITE;

impl CallEntry {
    /// A recorded or denied call to something outside the suite: what the summary counts and
    /// the to-do list lists. Calls to the suite's own servers (`in-suite`) never are.
    pub fn offending(&self) -> bool {
        self.verdict != Action::Allow.verdict() && self.category != IN_SUITE
    }

    /// A name lookup that would leave the machine (`host` is the name looked up): a `lookup`
    /// record, or a query to a resolver (`dns`, port 53) that an adapter saw the program's
    /// lookup of a name make (Python's `socket.getaddrinfo`).
    pub fn lookup(&self) -> bool {
        self.syscall == Syscall::Lookup.name()
            || (self.category == "dns" && self.port == 53 && self.name().is_some())
    }

    /// The host name the call was made by, if it is a name (not an address literal).
    pub fn name(&self) -> Option<&str> {
        let h = self.host.as_deref()?.trim();
        (!h.is_empty() && !is_address(h)).then_some(h)
    }
}

/// Is `host` only an address literal (`127.0.0.1`, `[::1]`, `fe80::1%eth0`), not a name?
fn is_address(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let bare = bare.split('%').next().unwrap_or(bare);
    bare.parse::<std::net::IpAddr>().is_ok()
}

/// What the launcher knows about the run, beside the events.
pub struct RunInfo {
    pub command: Vec<String>,
    pub engine: String,
    pub command_exit_code: i32,
    /// The runner recognised from the command (or `--runner`).
    pub runner: Option<String>,
    /// Did the seccomp supervisor run (engines `seccomp` and `auto`)?
    pub seccomp: bool,
    pub killed: Vec<KilledEntry>,
    /// Why the event log could not be read (`events` is then empty).
    pub log_error: Option<String>,
    /// Why the seccomp supervisor stopped early, if it did.
    pub supervisor_error: Option<String>,
    /// Calls counted by the launcher from shims' signals (see `event::UNOBSERVED_SIGNAL_BASE`),
    /// per cause, beside those the log counts.
    pub unobserved: [u64; nettrap_core::event::CAUSES],
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    test: Option<String>,
    phase: Option<String>,
    category: String,
    ip: [u8; 16],
    port: u16,
    /// The name the engine saw the program use (`host` of the record), if any.
    host: Option<String>,
    transport: &'static str,
    verdict: &'static str,
    syscall: &'static str,
    rule: String,
    process: ProcessInfo,
    site: Option<crate::attribution::Site>,
    fixture: Option<String>,
    inner_test: Option<String>,
    concurrent: Vec<String>,
    served_by_suite: bool,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn address(ip: [u8; 16]) -> String {
    let mut s = String::new();
    let _ = Dest { ip, port: 0 }.write_ip(&mut s);
    s
}

/// `syscall`: the call's [`Syscall::name`].
fn outcome(syscall: &str, result: i32) -> String {
    match result {
        0 => "ok".into(),
        nettrap_core::event::RESULT_PENDING => "pending".into(),
        nettrap_core::event::RESULT_UNKNOWN => "unknown".into(),
        // A lookup's failure is an `EAI_*` code (negative), not an errno.
        e if syscall == Syscall::Lookup.name() && e < 0 => crate::errno::eai_name(e),
        e => crate::errno::name(e),
    }
}

/// Does `later` (a DNS question name) belong to the lookup of `name`: the same name, or the
/// name with a search domain appended? ASCII case and a trailing dot aside.
fn same_lookup(name: &[u8], later: &[u8]) -> bool {
    let strip = |s: &[u8]| s.strip_suffix(b".").unwrap_or(s).to_ascii_lowercase();
    let (name, later) = (strip(name), strip(later));
    !name.is_empty()
        && (later == name || (later.starts_with(&name) && later.get(name.len()) == Some(&b'.')))
}

/// One lookup is one call: drops the supervisor's records that the shim's Lookup record of the
/// same lookup covers (see [`covered_lookups`]); the report applies it while walking the log.
#[cfg(test)]
fn dedup_lookups(records: &mut Vec<nettrap_core::event::Record>) {
    use nettrap_core::event::Record;
    let candidates: Vec<(u64, CallRecord)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Record::Call(c) if lookup_candidate(c) => Some((i as u64, c.clone())),
            _ => None,
        })
        .collect();
    let drop = covered_lookups(&candidates);
    let mut i = 0;
    records.retain(|_| {
        i += 1;
        !drop.contains(&(i - 1))
    });
}

/// A record [`covered_lookups`] looks at: a lookup, or the supervisor's record of a datagram
/// or connect to a resolver without a name.
fn lookup_candidate(c: &CallRecord) -> bool {
    c.call.syscall == Syscall::Lookup || unnamed_dns(c)
}

/// The calls the first walk reads, by what their first slot says ([`CallHead`]): every
/// server (`Listen`) and every [`lookup_candidate`], which the first walk checks again once
/// the record is read. It passes over the others (most calls) without reading them.
fn first_walk_wants(h: &CallHead) -> bool {
    matches!(h.syscall, Some(Syscall::Listen | Syscall::Lookup))
        || (h.source == Some(Source::Seccomp) && h.port == 53 && !h.has_host)
}

fn unnamed_dns(c: &CallRecord) -> bool {
    c.call.source == Source::Seccomp
        && c.call.dest.port == 53
        && c.host.is_empty()
        && c.call.syscall != Syscall::Listen
}

/// Of the log's lookup records (`candidates`: their index in the log and the record, see
/// [`lookup_candidate`]), those the shim's Lookup record of the same lookup covers: their
/// indexes. A supervisor record is covered when the latest shim Lookup record of the same
/// process and thread made at or before it is for the same name (or the name with a search
/// domain appended): glibc sends a lookup's queries from the thread that called it, after the
/// shim recorded the call. A supervisor record to port 53 without a name (glibc's own connect
/// to the resolver, a query sent with `send`, which the supervisor cannot read) is covered by
/// such a shim record made less than [`LOOKUP_SPAN_NS`] before it.
fn covered_lookups(candidates: &[(u64, CallRecord)]) -> FastSet<u64> {
    let mut latest: FastMap<(u32, u32), (&[u8], u64)> = FastMap::default();
    let mut order: Vec<&(u64, CallRecord)> = candidates.iter().collect();
    // By time, shim records before the supervisor's at the same instant.
    order.sort_by_key(|(i, c)| (c.call.time_ns, c.call.source == Source::Seccomp, *i));
    let mut drop = FastSet::default();
    for (i, c) in order {
        let key = (c.call.pid, c.call.tid);
        let unnamed_dns = unnamed_dns(c);
        match c.call.source {
            Source::Shim => {
                latest.insert(key, (&c.host, c.call.time_ns));
            }
            Source::Seccomp => {
                let covered = latest.get(&key).is_some_and(|(name, at)| {
                    if unnamed_dns {
                        c.call.time_ns.saturating_sub(*at) < LOOKUP_SPAN_NS
                    } else {
                        same_lookup(name, &c.host)
                    }
                });
                if covered {
                    drop.insert(*i);
                }
            }
        }
    }
    drop
}

/// How long after the shim recorded a lookup the resolver may still be asked for it (glibc's
/// default: 5 s per attempt, 2 attempts).
const LOOKUP_SPAN_NS: u64 = 10_000_000_000;

/// The event log as the report reads it: every record, in log order, handed out one at a time
/// and read in place, with its place in the log (positions that only grow), the same each time
/// it is walked (the report walks it twice and holds none of the calls).
pub trait Events {
    /// Hands `f` every record, with a hint: whether a call repeats the last call of its lane,
    /// time, result and blocked time aside (see `event::Stream::feed_hinted`; a hint that says
    /// nothing is always right). Returns the log's counts (dropped, torn, unobserved), its
    /// `records` empty.
    fn walk(&self, f: &mut dyn FnMut(u64, &RecordRef<'_>, Hint)) -> anyhow::Result<Decoded>;

    /// As [`Events::walk`], but hands `f` only the process records and the calls `want`
    /// picks, at the places `walk` gives them; the others are passed over unread (see
    /// `event::Stream::skim`). Its torn count covers only what was read.
    fn skim(
        &self,
        want: &dyn Fn(&CallHead) -> bool,
        f: &mut dyn FnMut(u64, RecordRef<'_>),
    ) -> anyhow::Result<Decoded>;
}

/// Records already in memory (tests, small logs): their places are their indexes, and no
/// call comes with a hint.
impl Events for Decoded {
    fn walk(&self, f: &mut dyn FnMut(u64, &RecordRef<'_>, Hint)) -> anyhow::Result<Decoded> {
        self.skim(&|_| true, &mut |at, r| f(at, &r, Default::default()))
    }

    fn skim(
        &self,
        want: &dyn Fn(&CallHead) -> bool,
        f: &mut dyn FnMut(u64, RecordRef<'_>),
    ) -> anyhow::Result<Decoded> {
        for (i, r) in self.records.iter().enumerate() {
            let r = r.as_ref();
            if let RecordRef::Call(c) = r
                && !want(&c.head())
            {
                continue;
            }
            f(i as u64, r);
        }
        Ok(Decoded {
            records: Vec::new(),
            dropped: self.dropped,
            torn: self.torn,
            unobserved: self.unobserved,
        })
    }
}

/// What the first walk keeps: the few records the calls are read against.
#[derive(Default)]
struct Context {
    /// Process records per pid, in log order (place in the log, the process).
    by_pid: FastMap<u32, Vec<(u64, ProcessInfo)>>,
    parents: FastMap<u32, u32>,
    /// Lookup records the shim's own record of the same lookup covers (places in the log).
    covered: FastSet<u64>,
    listeners: Vec<(u64, Dest, nettrap_core::addr::Transport)>,
}

impl Context {
    /// Skims the log (see [`first_walk_wants`]): its counts are not the log's (see
    /// [`Events::skim`]).
    fn read(events: &dyn Events) -> anyhow::Result<(Context, Decoded)> {
        let mut cx = Context::default();
        let mut candidates = Vec::new();
        let counts = events.skim(&first_walk_wants, &mut |at, r| match r {
            RecordRef::Process(p) => {
                cx.parents.insert(p.process.pid, p.process.ppid);
                let cmdline = p
                    .cmdline
                    .split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(text)
                    .collect::<Vec<_>>();
                let info = ProcessInfo {
                    pid: p.process.pid,
                    exe: text(p.exe),
                    cmdline: cmdline.join(" "),
                    role: None,
                };
                cx.by_pid.entry(p.process.pid).or_default().push((at, info));
            }
            RecordRef::Call(c) if c.call.syscall == Syscall::Listen => {
                cx.listeners
                    .push((c.call.time_ns, c.call.dest, c.call.transport));
            }
            RecordRef::Call(c) => {
                let c = c.to_record();
                if lookup_candidate(&c) {
                    candidates.push((at, c));
                }
            }
        })?;
        cx.covered = covered_lookups(&candidates);
        Ok((cx, counts))
    }

    /// The process a call at `at` in the log was made by: the last process record of its pid
    /// written before it, or, when its process record came later (another thread of the
    /// process was still writing it), the first one after it. A reused pid thus maps to the
    /// right process. (pid, index in its list), the index `u32::MAX` when there is none; and
    /// the span of places (`lo..=hi`) around `at` where a call of `pid` is made by the same
    /// process: between the process records `at` falls between (the calls that follow are,
    /// most of the time).
    fn process_at(&self, pid: u32, at: u64) -> ((u32, u32), u64, u64) {
        let Some(list) = self.by_pid.get(&pid) else {
            return ((pid, u32::MAX), 0, u64::MAX);
        };
        // Every place in (list[after - 1], list[after]] has the same `after`.
        let after = list.partition_point(|(i, _)| *i < at);
        let lo = after.checked_sub(1).map_or(0, |k| list[k].0 + 1);
        let hi = list.get(after).map_or(u64::MAX, |(i, _)| *i);
        let p = (pid, after.saturating_sub(1).min(list.len() - 1) as u32);
        (p, lo, hi)
    }

    fn process(&self, (pid, i): (u32, u32)) -> ProcessInfo {
        match self.by_pid.get(&pid).and_then(|l| l.get(i as usize)) {
            Some((_, p)) => p.clone(),
            None => ProcessInfo {
                pid,
                ..ProcessInfo::default()
            },
        }
    }
}

/// Values that many calls share (test ids, phases, host names, fixtures; call sites), kept
/// once each: a group of calls is keyed by their numbers.
struct Interner<T> {
    ids: FastMap<T, u32>,
    names: Vec<T>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            ids: FastMap::default(),
            names: Vec::new(),
        }
    }
}

impl<T: Clone + Eq + std::hash::Hash> Interner<T> {
    fn id(&mut self, s: T) -> u32 {
        if let Some(&id) = self.ids.get(&s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.clone());
        self.ids.insert(s, id);
        id
    }

    /// As [`Interner::id`], copying `s` only the first time it is seen.
    fn id_of<Q>(&mut self, s: &Q) -> u32
    where
        Q: ?Sized + Eq + std::hash::Hash + ToOwned<Owned = T>,
        T: std::borrow::Borrow<Q>,
    {
        match self.ids.get(s) {
            Some(&id) => id,
            None => self.id(s.to_owned()),
        }
    }

    fn name(&self, id: u32) -> T {
        self.names[id as usize].clone()
    }
}

/// Strings, interned as the bytes the log or the timeline holds (turned into text, lossily,
/// only when the report is written: two byte strings that read the same make two groups that
/// the report merges).
impl Interner<Vec<u8>> {
    fn text(&self, id: u32) -> String {
        text(&self.names[id as usize])
    }
}

/// What a call's category or rule is in the report: the policy's, or the suite's own server's.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Named {
    Policy(u16),
    InSuite,
}

impl Named {
    /// As a [`Group`] holds it.
    fn packed(self) -> u32 {
        match self {
            Named::Policy(i) => i as u32,
            Named::InSuite => 1 << 16,
        }
    }

    fn unpacked(n: u32) -> Named {
        match u16::try_from(n) {
            Ok(i) => Named::Policy(i),
            Err(_) => Named::InSuite,
        }
    }
}

/// An interned string's number as a [`Group`] holds it: `NONE` for none.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Id(u32);

impl Id {
    const NONE: Id = Id(u32::MAX);

    fn of(id: Option<u32>) -> Id {
        id.map_or(Id::NONE, Id)
    }

    fn get(self) -> Option<u32> {
        (self != Id::NONE).then_some(self.0)
    }
}

/// [`Key`] with its strings interned: what calls are grouped by while the log is walked.
/// Plain integers laid out without a gap, so that comparing two (once per call, with the
/// group of the call before to the same port) is a comparison of their bytes, not a branch
/// per optional field.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
struct Group {
    ip: [u8; 16],
    test: Id,
    phase: Id,
    host: Id,
    site: Id,
    fixture: Id,
    inner_test: Id,
    /// The other tests' list, interned (NONE: none). A list in the key would be compared
    /// with `memcmp` at every lookup, and an empty one's dangling pointer makes that call
    /// slow (a masked load of an unmapped page: most of the storm's report step).
    concurrent: Id,
    /// [`Named`], packed.
    category: u32,
    rule: u32,
    /// The process (see [`Context::process_at`]): pid, index in its list.
    pid: u32,
    process_index: u32,
    port: u16,
    /// `Transport`, `Action` (the verdict) and `Syscall` as their log bytes.
    transport: u8,
    action: u8,
    syscall: u8,
    served_by_suite: bool,
    /// Always 0: no padding byte in the comparison.
    zero: u16,
}

/// A group's calls, per result (the real call's return value) how many, and the nanoseconds
/// they spent blocked in the real calls.
type Tally = (u64, Vec<(i32, u64)>, u64);

/// What a storm's next call in a lane (see `event::Hint`) is grouped by: the group the lane's
/// last call went to (its tally's index), whether the suite served it, since when the suite
/// serves its destination (`Listeners::serving_since`; None until a repeat of the call asks:
/// a log whose calls never repeat does not pay for it), and the span of places in the log its
/// process holds for (see `Context::process_at`).
#[derive(Clone, Copy)]
struct LastInLane {
    tally: usize,
    served: bool,
    serving_since: Option<Option<u64>>,
    lo: u64,
    hi: u64,
}

/// Groups a call in full (see `build`): the place, the call, the tallies, and where to say
/// what the next call of its lane is grouped by.
type GroupInFull<'a> = dyn FnMut(u64, &CallRef<'_>, &mut Vec<Tally>, &mut Option<LastInLane>) + 'a;

/// Counts a call in its group's tally.
#[inline(always)]
fn count(g: &mut Tally, result: i32, blocked_ns: u64) {
    g.0 += 1;
    match g.1.iter_mut().find(|(r, _)| *r == result) {
        Some((_, n)) => *n += 1,
        None => g.1.push((result, 1)),
    }
    g.2 = g.2.saturating_add(blocked_ns);
}

pub fn build(
    policy: &Policy,
    compiled: &CompiledPolicy,
    events: &dyn Events,
    mut timeline: Timeline,
    mut info: RunInfo,
) -> Report {
    // Two walks: the first skims the log for processes, listeners and lookups (what a call is
    // read against, some of it written after the call), the second reads every record and
    // groups the calls as they come; its counts are the log's.
    let (mut cx, mut counts) = match Context::read(events) {
        Ok(read) => read,
        Err(e) => {
            info.log_error.get_or_insert(format!("{e:#}"));
            (Context::default(), Decoded::default())
        }
    };
    for (pid, list) in cx.by_pid.iter_mut() {
        if let Some(role) = timeline.roles.get(pid) {
            for (_, p) in list.iter_mut() {
                p.role = Some(role.clone());
            }
        }
    }
    let listeners = in_suite::Listeners::new(std::mem::take(&mut cx.listeners));
    let mut strings: Interner<Vec<u8>> = Interner::default();
    let mut lists: Interner<Vec<u32>> = Interner::default();
    let mut sites: Interner<crate::attribution::Site> = Interner::default();
    // Each group's tally in `tallies`, found by its key; a call usually falls in a group a
    // recent call to the same port fell in (`recent`, by port), found by comparing keys,
    // without hashing one.
    let mut groups: FastMap<Group, usize> = FastMap::default();
    let mut tallies: Vec<Tally> = Vec::new();
    let mut recent: [Option<(Group, usize)>; 8] = [None; 8];
    // The test id the engine read for the call before, and its string's number.
    let mut last_test: (Vec<u8>, u32) = (Vec::new(), u32::MAX);
    let mut io_uring: Vec<IoUringEntry> = Vec::new();
    // The last call's pid, the span of places in the log its process holds for (see
    // `Context::process_at`; empty at first) and that process.
    let mut last_process: (u32, u64, u64, (u32, u32)) = (0, 1, 0, (0, 0));
    let by_record_alone = timeline.by_record_alone();
    let covered = |here: u64| !cx.covered.is_empty() && cx.covered.contains(&here);
    // Groups the call at `here` in the log, in full, and counts it in `tallies`; says in
    // `next` what a storm's next call of its lane is grouped by (see `LastInLane`; written in
    // place, not returned and copied), when the timeline says nothing.
    let group = &mut |here: u64,
                      c: &CallRef<'_>,
                      tallies: &mut Vec<Tally>,
                      next: &mut Option<LastInLane>| {
        *next = None;
        let call = c.call;
        // Not a call: the run's own servers, used below.
        if call.syscall == Syscall::Listen || covered(here) {
            return;
        }
        // The process, as the call before's when it falls in the same span of the log.
        let process = match last_process {
            (pid, lo, hi, p) if pid == call.pid && lo <= here && here <= hi => p,
            _ => {
                let (p, lo, hi) = cx.process_at(call.pid, here);
                last_process = (call.pid, lo, hi, p);
                p
            }
        };
        // The phase the engine read, as the timeline names phases.
        let recorded_phase = || nettrap_core::test_id::Phase::from_u8(call.phase as u8).name();
        // Who made the call, its strings interned, and when its test (or the gap between
        // tests) began.
        let (test, phase, fixture, inner_test, concurrent, since) = if by_record_alone {
            // What `attribute_in_tree` gives when the timeline says nothing: the test and
            // phase the engine read, without making strings of them.
            let test = c.test.map(|t| {
                if last_test.1 == u32::MAX || last_test.0 != t {
                    last_test.0.clear();
                    last_test.0.extend_from_slice(t);
                    last_test.1 = strings.id_of(t);
                }
                last_test.1
            });
            let phase = test
                .and_then(|_| recorded_phase())
                .map(|p| strings.id_of(p.as_bytes()));
            (test, phase, None, None, None, 0)
        } else {
            let recorded = c
                .test
                .map(|t| (text(t), recorded_phase().map(String::from)));
            let who: Attribution = timeline.attribute_in_tree(
                call.pid,
                call.tid,
                call.time_ns,
                recorded,
                c.thread,
                |p| cx.parents.get(&p).copied(),
            );
            let mut id = |s: Option<String>| s.map(|s| strings.id(s.into_bytes()));
            (
                id(who.test),
                id(who.phase),
                id(who.fixture),
                id(who.inner_test),
                (!who.concurrent.is_empty()).then(|| {
                    let list = who.concurrent.into_iter();
                    lists.id(list.map(|s| strings.id(s.into_bytes())).collect())
                }),
                who.since,
            )
        };
        if call.syscall == Syscall::IoUringSetup {
            let verdict = if call.action == Action::Deny {
                "refused"
            } else {
                "allowed"
            };
            let process = cx.process(process);
            let test = test.map(|id| strings.text(id));
            match io_uring
                .iter_mut()
                .find(|e| e.process == process && e.verdict == verdict && e.test == test)
            {
                Some(e) => e.count += 1,
                None => io_uring.push(IoUringEntry {
                    verdict: verdict.into(),
                    test,
                    count: 1,
                    process,
                }),
            }
            return;
        }
        let mut rule = Named::Policy(call.rule);
        let mut category = Named::Policy(call.category);
        let mut action = call.action;
        let served_by_suite = call.syscall != Syscall::Lookup
            && listeners.serves(&call.dest, call.transport, call.time_ns);
        if served_by_suite && call.category == nettrap_core::policy::OTHER {
            category = Named::InSuite;
            // Rule 0 is the built-in default (record); a rule of the user's still stands.
            let by_default = call.rule == 0 || call.rule == nettrap_core::policy::NO_RULE;
            if by_default && call.action == Action::Record {
                action = Action::Allow;
                rule = Named::InSuite;
            }
        }
        // A timeline that says nothing holds no call sites either.
        let site = if by_record_alone {
            None
        } else {
            timeline
                .site(call.pid, call.tid, call.time_ns, call.dest.port, since)
                .map(|s| sites.id(s))
        };
        let key = Group {
            ip: call.dest.ip,
            test: Id::of(test),
            phase: Id::of(phase),
            host: Id::of((!c.host.is_empty()).then(|| strings.id_of(c.host))),
            site: Id::of(site),
            fixture: Id::of(fixture),
            inner_test: Id::of(inner_test),
            concurrent: Id::of(concurrent),
            category: category.packed(),
            rule: rule.packed(),
            pid: process.0,
            process_index: process.1,
            port: call.dest.port,
            transport: call.transport as u8,
            action: action as u8,
            syscall: call.syscall as u8,
            served_by_suite,
            zero: 0,
        };
        let slot = &mut recent[key.port as usize % 8];
        let i = match slot {
            Some((k, i)) if *k == key => *i,
            _ => {
                let i = *groups.entry(key).or_insert_with(|| {
                    tallies.push(Tally::default());
                    tallies.len() - 1
                });
                *slot = Some((key, i));
                i
            }
        };
        count(&mut tallies[i], c.result, c.blocked_ns);
        if !by_record_alone {
            return;
        }
        *next = Some(LastInLane {
            tally: i,
            served: served_by_suite,
            serving_since: None,
            // The span `last_process` now holds: this call's process's.
            lo: last_process.1,
            hi: last_process.2,
        });
    };
    // Called through a pointer: the walk's closure below stays small (the storm's repeated
    // calls take it alone).
    let group: &mut GroupInFull = group;
    // Per lane (see `event::Hint`), what the last call was grouped by (None: it went to no
    // group, or the timeline says something).
    let mut last_in_lane: [Option<LastInLane>; LANES] = [None; LANES];
    // Since when the suite serves the destination of `last`'s lane's calls (those of `c`, which
    // repeats it), asked once.
    let serving_since = |last: &mut LastInLane, c: &CallRef<'_>| {
        *last.serving_since.get_or_insert_with(|| {
            (c.call.syscall != Syscall::Lookup)
                .then(|| listeners.serving_since(&c.call.dest, c.call.transport))
                .flatten()
        })
    };
    if info.log_error.is_none() {
        let walked = events.walk(&mut |here, record, hint| {
            let RecordRef::Call(c) = record else {
                return;
            };
            // A storm's next call: what its group depends on besides the fields the hint says
            // are those of the last call of its lane (its place in the log: the process, a
            // covered lookup; its time: a server of the suite; the timeline, which says
            // nothing when `last` is known) unchanged, it goes where that call went, as
            // `group` would find.
            let lane = hint.lane as usize % LANES;
            if hint.repeats
                && let Some(last) = &mut last_in_lane[lane]
                && last.lo <= here
                && here <= last.hi
                && !covered(here)
                && serving_since(last, c).is_some_and(|t| c.call.time_ns >= t) == last.served
            {
                count(&mut tallies[last.tally], c.result, c.blocked_ns);
                return;
            }
            group(here, c, &mut tallies, &mut last_in_lane[lane]);
        });
        match walked {
            Ok(read) => counts = read,
            // The first walk's counts stand (its torn count only covers what it read).
            Err(e) => {
                info.log_error.get_or_insert(format!("{e:#}"));
            }
        }
    }
    for (n, by_signal) in counts.unobserved.iter_mut().zip(info.unobserved) {
        *n += by_signal;
    }
    let events = counts;

    // The groups with their strings, in the order of their full keys.
    let label = |n: Named, of_policy: &dyn Fn(u16) -> String, in_suite: &str| match n {
        Named::Policy(i) => of_policy(i),
        Named::InSuite => in_suite.to_string(),
    };
    let rule_label = |i: u16| {
        compiled
            .rule_label(i)
            .map_or_else(|| "record (default)".to_string(), text)
    };
    let category_label = |i: u16| text(compiled.category_name(i));
    let mut sorted: Vec<(Key, u64, BTreeMap<String, u64>, u64)> = groups
        .into_iter()
        .map(|(g, i)| {
            let (count, results, blocked_ns) = std::mem::take(&mut tallies[i]);
            let name = |id: Id| id.get().map(|id| strings.text(id));
            let syscall = Syscall::try_from(g.syscall).map_or("unknown", Syscall::name);
            let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
            for (result, n) in results {
                *outcomes.entry(outcome(syscall, result)).or_default() += n;
            }
            let key = Key {
                test: name(g.test),
                phase: name(g.phase),
                category: label(Named::unpacked(g.category), &category_label, IN_SUITE),
                ip: g.ip,
                port: g.port,
                host: name(g.host),
                transport: nettrap_core::addr::Transport::from_u8(g.transport).name(),
                verdict: Action::from_u8(g.action).verdict(),
                syscall,
                rule: label(
                    Named::unpacked(g.rule),
                    &rule_label,
                    in_suite::IN_SUITE_RULE,
                ),
                process: cx.process((g.pid, g.process_index)),
                site: g.site.get().map(|i| sites.name(i)),
                fixture: name(g.fixture),
                inner_test: name(g.inner_test),
                concurrent: g.concurrent.get().map_or_else(Vec::new, |l| {
                    lists.names[l as usize]
                        .iter()
                        .map(|&i| strings.text(i))
                        .collect()
                }),
                served_by_suite: g.served_by_suite,
            };
            (key, count, outcomes, blocked_ns)
        })
        .collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // Groups whose keys differ only by number but read the same (two process records of one
    // process, from both engines) are one group.
    sorted.dedup_by(|later, kept| {
        if later.0 != kept.0 {
            return false;
        }
        kept.1 += later.1;
        for (o, n) in std::mem::take(&mut later.2) {
            *kept.2.entry(o).or_default() += n;
        }
        kept.3 = kept.3.saturating_add(later.3);
        true
    });

    let mut tests: BTreeMap<String, Vec<CallEntry>> = BTreeMap::new();
    for name in timeline.tests.keys() {
        tests.insert(name.clone(), Vec::new());
    }
    let mut unattributed = Vec::new();
    for (key, count, outcomes, blocked_ns) in sorted {
        let (location, library, site_host) = key
            .site
            .map_or((None, None, None), |s| (s.location, s.library, s.host));
        // The adapter's name (from the call site) first, unless it is only the address
        // (a connect by address after a lookup the adapter did not tie to it); else the
        // engine's.
        let host = match (site_host, key.host) {
            (Some(site), Some(engine)) if is_address(&site) => Some(engine),
            (site, engine) => site.or(engine),
        };
        let entry = CallEntry {
            category: key.category,
            address: address(key.ip),
            port: key.port,
            transport: key.transport.into(),
            verdict: key.verdict.into(),
            count,
            phase: key.phase,
            syscall: key.syscall.into(),
            rule: key.rule,
            outcomes,
            process: key.process,
            site: location,
            library,
            host,
            fixture: key.fixture,
            inner_test: key.inner_test,
            concurrent_tests: key.concurrent,
            served_by_suite: key.served_by_suite,
            blocked_ns,
        };
        match key.test {
            Some(t) => tests.entry(t).or_default().push(entry),
            None => unattributed.push(entry),
        }
    }
    let tests: Vec<TestEntry> = tests
        .into_iter()
        .map(|(test, calls)| {
            let run = timeline.tests.get(&test);
            TestEntry {
                outcome: run.and_then(|r| r.outcome.clone()),
                duration_s: run.and_then(|r| r.duration_s),
                payoff: Default::default(),
                test,
                calls,
            }
        })
        .collect();
    let tests_len = tests.len() as u64;

    let categories = categories(&tests, &unattributed, |name| {
        policy
            .category_ports(name)
            .iter()
            .map(|p| p.to_string())
            .collect()
    });
    let tests_with_calls = tests
        .iter()
        .filter(|t| t.calls.iter().any(CallEntry::offending))
        .count() as u64;

    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        nettrap_version: env!("CARGO_PKG_VERSION").into(),
        command: info.command,
        engine: info.engine,
        runner: info.runner,
        command_exit_code: info.command_exit_code,
        exit_code: info.command_exit_code,
        runners: timeline.runners.iter().cloned().collect(),
        // Every test the runner reported, and any other test a call was attributed to (a child
        // speaking the NETTRAP_TEST protocol with ids of its own): `tests` lists them all.
        tests_total: timeline.knows_tests().then_some(tests_len),
        tests_with_calls,
        categories,
        tests,
        unattributed,
        fail_on: policy.fail_on.clone(),
        io_uring,
        enforce: policy.enforces(),
        lost: lost(&events, info.seccomp, info.log_error, info.supervisor_error),
        killed: info.killed,
        adapter_failures: timeline.adapter_failures.clone(),
        policy_fingerprint: None,
        shards: Vec::new(),
        baseline: None,
        payoff: Default::default(),
        destinations: Vec::new(),
    };
    payoff::derive(&mut report);
    report
}

/// Per category: its ports (`ports` says what defines it), and the tests and calls that reached
/// it.
pub fn categories(
    tests: &[TestEntry],
    unattributed: &[CallEntry],
    ports: impl Fn(&str) -> Vec<String>,
) -> BTreeMap<String, CategorySummary> {
    let mut categories: BTreeMap<String, CategorySummary> = BTreeMap::new();
    let mut seen: BTreeMap<String, (BTreeSet<u16>, BTreeSet<&str>)> = BTreeMap::new();
    let all = tests
        .iter()
        .flat_map(|t| t.calls.iter().map(move |c| (Some(t.test.as_str()), c)));
    for (test, c) in all.chain(unattributed.iter().map(|c| (None, c))) {
        let s = categories
            .entry(c.category.clone())
            .or_insert_with(|| CategorySummary {
                ports: ports(&c.category),
                ..CategorySummary::default()
            });
        match c.verdict.as_str() {
            "denied" => s.denied += c.count,
            "recorded" => s.recorded += c.count,
            _ => s.allowed += c.count,
        }
        // The suite's own servers' calls are not offending: their ports and tests are still
        // listed.
        if c.offending() || c.category == IN_SUITE {
            let (ports, names) = seen.entry(c.category.clone()).or_default();
            ports.insert(c.port);
            if let Some(t) = test {
                names.insert(t);
            }
        }
        if c.offending() {
            s.calls += c.count;
        }
    }
    for (name, (ports, names)) in &seen {
        if let Some(s) = categories.get_mut(name) {
            s.ports_seen = ports.iter().copied().collect();
            s.tests = names.len() as u64;
        }
    }
    categories
}

/// What the event log says was lost. A cause whose calls the shim passed on to the kernel counts
/// as handed to the supervisor when the supervisor ran, else as lost.
fn lost(
    events: &Decoded,
    seccomp: bool,
    log_error: Option<String>,
    supervisor_error: Option<String>,
) -> Lost {
    let mut unobserved = UnobservedLoss::default();
    let mut handed = 0;
    for (i, &n) in events.unobserved.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let cause = u8::try_from(i).ok().and_then(Unobserved::from_u8);
        if seccomp && cause.is_some_and(Unobserved::seen_by_supervisor_under_auto) {
            handed += n;
            continue;
        }
        let name = cause.map_or("unknown", Unobserved::name);
        *unobserved.by_cause.entry(name.to_string()).or_default() += n;
        unobserved.total += n;
    }
    Lost {
        dropped: events.dropped,
        torn: events.torn,
        unobserved,
        handed_to_supervisor: handed,
        log_error,
        supervisor_error,
    }
}

/// Why an enforce run fails although no violation was seen: calls may have escaped the policy
/// unseen. `None` in record-only runs, and when nothing was lost.
pub fn unverified(report: &Report) -> Option<String> {
    let l = &report.lost;
    if !report.enforce || !l.any() {
        return None;
    }
    let mut parts = Vec::new();
    if let Some(e) = &l.log_error {
        parts.push(format!("the event log could not be read: {e}"));
    }
    if let Some(e) = &l.supervisor_error {
        parts.push(format!("the seccomp supervisor stopped early: {e}"));
    }
    if l.dropped > 0 {
        parts.push(format!(
            "{} {} not recorded: the event log was full",
            l.dropped,
            plural(l.dropped, "record", "records")
        ));
    }
    if l.torn > 0 {
        parts.push(format!(
            "{} {} cut short",
            l.torn,
            plural(l.torn, "record", "records")
        ));
    }
    if l.unobserved.total > 0 {
        let causes: Vec<&str> = l.unobserved.by_cause.keys().map(String::as_str).collect();
        parts.push(format!(
            "{} {} no engine decided ({})",
            l.unobserved.total,
            plural(l.unobserved.total, "call", "calls"),
            causes.join(", ")
        ));
    }
    Some(parts.join(", "))
}

/// The verdict line's reason when a run (or `nettrap baseline check`) fails: a violation, calls
/// lost in an enforce run, or both. `None` when neither.
pub fn failure(violation: Option<String>, unverified: Option<String>) -> Option<String> {
    match (violation, unverified) {
        (Some(v), Some(u)) => Some(format!("policy violated ({v}; and calls were lost: {u})")),
        (Some(v), None) => Some(format!("policy violated ({v})")),
        (None, Some(u)) => Some(format!(
            "calls lost in an enforce run ({u}): any of them may have been denied"
        )),
        (None, None) => None,
    }
}

/// Does this call fail the run: denied, or recorded in a `--fail-on` category?
pub fn fails_run(r: &Report, c: &CallEntry) -> bool {
    c.offending()
        && (c.verdict == Action::Deny.verdict()
            || (c.verdict == Action::Record.verdict() && r.fail_on.contains(&c.category)))
}

/// Why the run fails even if the command passed: denied calls, or recorded calls in `fail_on`
/// categories. `None` when there is no violation.
pub fn violation(report: &Report) -> Option<String> {
    let mut denied = 0;
    let mut failing: BTreeMap<&str, u64> = BTreeMap::new();
    for c in report
        .tests
        .iter()
        .flat_map(|t| &t.calls)
        .chain(&report.unattributed)
    {
        if c.verdict == Action::Deny.verdict() {
            denied += c.count;
        } else if c.verdict == Action::Record.verdict() && report.fail_on.contains(&c.category) {
            *failing.entry(&c.category).or_default() += c.count;
        }
    }
    let mut parts = Vec::new();
    if denied > 0 {
        parts.push(format!(
            "{denied} denied {}",
            plural(denied, "call", "calls")
        ));
    }
    for (cat, n) in failing {
        parts.push(format!(
            "{n} recorded {cat} {} (--fail-on)",
            plural(n, "call", "calls")
        ));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nettrap_core::addr::{Dest, Transport};
    use nettrap_core::event::{Call, CallRecord, Record};
    use nettrap_core::test_id::Phase;

    fn lookup(source: Source, tid: u32, time_ns: u64, name: &str) -> Record {
        Record::Call(CallRecord {
            call: Call {
                pid: 10,
                tid,
                time_ns,
                dest: Dest::from_v4([127, 0, 0, 1], 53),
                transport: Transport::Udp,
                action: Action::Record,
                phase: Phase::None,
                source,
                syscall: Syscall::Lookup,
                category: 0,
                rule: 0,
                deny_errno: 0,
                has_test: false,
            },
            result: 0,
            blocked_ns: 0,
            test: None,
            host: name.as_bytes().to_vec(),
            thread: Vec::new(),
        })
    }

    fn names(records: &[Record]) -> Vec<(Source, String)> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Call(c) => Some((c.call.source, text(&c.host))),
                _ => None,
            })
            .collect()
    }

    /// A kept run directory's log (`NETTRAP_KEEP_RUN_DIR=1`), read in pieces as the launcher
    /// reads it.
    struct KeptLog(std::path::PathBuf);

    impl Events for KeptLog {
        fn walk(&self, f: &mut dyn FnMut(u64, &RecordRef<'_>, Hint)) -> anyhow::Result<Decoded> {
            self.read(None, f)
        }

        fn skim(
            &self,
            want: &dyn Fn(&CallHead) -> bool,
            f: &mut dyn FnMut(u64, RecordRef<'_>),
        ) -> anyhow::Result<Decoded> {
            self.read(Some(want), &mut |at, r, _| f(at, *r))
        }
    }

    impl KeptLog {
        fn read(
            &self,
            want: Option<&dyn Fn(&CallHead) -> bool>,
            f: &mut dyn FnMut(u64, &RecordRef<'_>, Hint),
        ) -> anyhow::Result<Decoded> {
            use nettrap_core::event::{self, HEADER_LEN, MAX_SLOTS, SLOT_LEN, WINDOW_SLOTS};
            use std::os::unix::fs::FileExt;
            let file = std::fs::File::open(self.0.join("events.log"))?;
            let mut header = vec![0u8; HEADER_LEN];
            file.read_exact_at(&mut header, 0)?;
            let used = event::used_len(&header).ok_or_else(|| anyhow::anyhow!("bad header"))?;
            let in_file = (used - HEADER_LEN) as u64 / SLOT_LEN as u64;
            let mut stream = event::Stream::new(&header, in_file).map_err(anyhow::Error::msg)?;
            let piece = (WINDOW_SLOTS as usize + MAX_SLOTS) * SLOT_LEN;
            let mut buf = vec![0u8; piece];
            while !stream.done() {
                let from = stream.next_slot();
                let slots = (in_file - from).min((piece / SLOT_LEN) as u64) as usize;
                let bytes = &mut buf[..slots * SLOT_LEN];
                file.read_exact_at(bytes, (HEADER_LEN + from as usize * SLOT_LEN) as u64)?;
                match want {
                    Some(want) => stream.skim(bytes, want, |at, r| f(at, &r, Default::default())),
                    None => stream.feed_hinted(bytes, &mut *f),
                }
            }
            Ok(stream.finish())
        }
    }

    /// The report step alone, on a kept run directory, for profiling (callgrind, perf):
    /// `NETTRAP_REPORT_DIR=/tmp/nettrap-… cargo test --release report_step_on_a_kept_run
    /// -- --ignored`; writes the report's JSON to `NETTRAP_REPORT_OUT` and its to-do list to
    /// `NETTRAP_REPORT_TODO` when set (to compare two builds' outputs on one log).
    #[test]
    #[ignore]
    fn report_step_on_a_kept_run() {
        let Some(dir) = std::env::var_os("NETTRAP_REPORT_DIR") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let report = test_report(&KeptLog(dir.clone()), &dir);
        if let Some(out) = std::env::var_os("NETTRAP_REPORT_OUT") {
            std::fs::write(out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        }
        if let Some(out) = std::env::var_os("NETTRAP_REPORT_TODO") {
            std::fs::write(out, render::todo(&report)).unwrap();
        }
    }

    #[test]
    fn one_lookup_is_one_call() {
        use Source::{Seccomp, Shim};
        let mut records = vec![
            lookup(Shim, 1, 100, "api.stripe.com"),
            // The A and AAAA queries of that lookup, one with a search domain.
            lookup(Seccomp, 1, 101, "api.stripe.com."),
            lookup(Seccomp, 1, 102, "API.stripe.com.corp.example"),
            // Another thread, another name, a query before the shim's record: kept.
            lookup(Seccomp, 2, 103, "api.stripe.com"),
            lookup(Seccomp, 1, 104, "api.stripe.co"),
            lookup(Seccomp, 1, 99, "api.stripe.com"),
            // A later lookup of another name on the same thread ends the first one.
            lookup(Shim, 1, 200, "db.internal"),
            lookup(Seccomp, 1, 201, "api.stripe.com"),
            lookup(Seccomp, 1, 202, "db.internal"),
        ];
        dedup_lookups(&mut records);
        assert_eq!(
            names(&records),
            vec![
                (Shim, "api.stripe.com".to_string()),
                (Seccomp, "api.stripe.com".to_string()),
                (Seccomp, "api.stripe.co".to_string()),
                (Seccomp, "api.stripe.com".to_string()),
                (Shim, "db.internal".to_string()),
                (Seccomp, "api.stripe.com".to_string()),
            ]
        );
    }
}
