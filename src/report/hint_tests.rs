//! The report built with the log reader's hints (a storm's repeated calls grouped the cheap
//! way) is the report built from the same log with every hint cleared and every call shown to
//! the skim's choice on its own (places identical), and the report built from the same records
//! in memory (no hints: every call grouped in full): generated logs with thread names, calls of
//! two slots (long host names), calls to three kinds in turn, voided and unfinished calls,
//! listeners and late records, damaged or not, and logs longer than one piece of the walk; and
//! a case for each thing the fast path checks besides the hint.

use super::*;
use crate::rundir::RunDir;
use nettrap_core::addr::{Dest, Transport};
use nettrap_core::event::{Call, Process, RESULT_NOT_A_CALL};
use nettrap_core::test_id::Phase;
use proptest::prelude::*;

/// A run directory's log, read with every hint cleared and skimmed without the skim's memo.
struct NoHints<'a>(&'a RunDir);

impl Events for NoHints<'_> {
    fn walk(&self, f: &mut dyn FnMut(u64, &RecordRef<'_>, Hint)) -> anyhow::Result<Decoded> {
        self.0.walk(&mut |at, r, h| {
            f(
                at,
                r,
                Hint {
                    repeats: false,
                    ..h
                },
            )
        })
    }
    fn skim(
        &self,
        want: &dyn Fn(&CallHead) -> bool,
        f: &mut dyn FnMut(u64, RecordRef<'_>),
    ) -> anyhow::Result<Decoded> {
        // Skim in full: every call shown to `want` on its own (walk, filtered).
        let mut g = |at, r: &RecordRef<'_>, _h| {
            if let RecordRef::Call(c) = r
                && !want(&c.head())
            {
                return;
            }
            f(at, *r)
        };
        // Its counts are a full walk's (a skim's torn count covers only what it read): only
        // its records matter to the report.
        self.0.walk_events(None, &mut g)
    }
}

/// What the generated log holds, in order (calls of the kinds of `Kind`, by index).
#[derive(Clone, Debug)]
enum Op {
    Calls {
        kind: usize,
        n: usize,
        gap: u64,
        results: [i32; 3],
    },
    Turns {
        kinds: [usize; 3],
        n: usize,
        gap: u64,
    },
    Process(u32),
    Listen {
        kind: usize,
        back: u64,
    },
    Late {
        kind: usize,
        back: u64,
    },
}

/// A call, its test id, host and thread name.
type Kind = (Call, Option<&'static str>, &'static str, &'static str);

fn call() -> impl Strategy<Value = Kind> {
    (
        (
            1u32..4,
            1u32..3,
            0u8..2,
            prop_oneof![
                Just(80u16),
                Just(88),
                Just(53),
                Just(8080),
                Just(0),
                Just(61)
            ],
        ),
        (0u8..3, 0u8..3, 0u8..4, any::<bool>()),
        prop_oneof![
            4 => Just(Syscall::Connect),
            1 => Just(Syscall::Sendto),
            1 => Just(Syscall::Lookup),
            1 => Just(Syscall::Listen),
            1 => Just(Syscall::IoUringSetup),
        ],
        (
            prop_oneof![Just(0u16), Just(3)],
            prop_oneof![Just(0u16), Just(u16::MAX), Just(2)],
            prop_oneof![Just(0i32), Just(111)],
        ),
        prop_oneof![
            Just(None),
            Just(Some("")),
            Just(Some("t::a")),
            Just(Some("t::b"))
        ],
        prop_oneof![
            Just(""),
            Just("db.example"),
            Just("a-very-long-host-name-that-forces-a-second-slot.example.org")
        ],
        prop_oneof![Just(""), Just("main"), Just("worker-1")],
    )
        .prop_map(
            |(
                (pid, tid, ip, port),
                (t, a, ph, seccomp),
                syscall,
                (category, rule, errno),
                test,
                host,
                thread,
            )| {
                let call = Call {
                    pid,
                    tid,
                    time_ns: 0,
                    dest: Dest::from_v4([127, 0, 0, 1 + ip], port),
                    transport: Transport::from_u8(t),
                    action: Action::from_u8(a),
                    phase: Phase::from_u8(ph),
                    source: if seccomp {
                        Source::Seccomp
                    } else {
                        Source::Shim
                    },
                    syscall,
                    category,
                    rule,
                    deny_errno: errno,
                    has_test: test.is_some(),
                };
                (call, test, host, thread)
            },
        )
}

fn ops() -> impl Strategy<Value = (Vec<Kind>, Vec<Op>)> {
    let calls = (
        0usize..6,
        1usize..30,
        prop_oneof![Just(0u64), 0u64..3_000_000, 0u64..2_000_000_000],
        prop_oneof![Just(-111), Just(0), Just(RESULT_NOT_A_CALL)],
        any::<[i32; 2]>(),
    )
        .prop_map(|(kind, n, gap, r, [a, b])| Op::Calls {
            kind,
            n,
            gap,
            results: [r, a % 4, b % 2],
        });
    let turns =
        (any::<[usize; 3]>(), 1usize..20, 0u64..3_000_000).prop_map(|(k, n, gap)| Op::Turns {
            kinds: [k[0] % 6, k[1] % 6, k[2] % 6],
            n,
            gap,
        });
    let op = prop_oneof![
        6 => calls,
        3 => turns,
        1 => (1u32..4).prop_map(Op::Process),
        1 => (0usize..6, 0u64..20_000_000_000).prop_map(|(kind, back)| Op::Listen { kind, back }),
        1 => (0usize..6, 0u64..20_000_000_000).prop_map(|(kind, back)| Op::Late { kind, back }),
    ];
    (
        proptest::collection::vec(call(), 6),
        proptest::collection::vec(op, 0..40),
    )
}

/// Writes `ops` `reps` times to the run directory's log, time going forward.
fn write_ops(dir: &RunDir, kinds: &[Kind], ops: &[Op], reps: usize) {
    let mapping = dir.log();
    let log = mapping.log();
    let mut time = 30_000_000_000u64;
    let put = |log: &nettrap_core::event::Log<'_>, k: &Kind, time: u64, r: i32, b: u64| {
        let (call, test, host, thread) = *k;
        let call = Call {
            time_ns: time,
            ..call
        };
        if let Ok(cell) = log.append_call(
            &call,
            test.unwrap_or("").as_bytes(),
            host.as_bytes(),
            thread.as_bytes(),
        ) {
            match r {
                RESULT_NOT_A_CALL => cell.void(),
                7 => {} // left pending
                r => cell.finish(r, b),
            }
        }
    };
    for _ in 0..reps {
        for op in ops {
            match *op {
                Op::Calls {
                    kind,
                    n,
                    gap,
                    results,
                } => {
                    for j in 0..n {
                        time += gap;
                        put(&log, &kinds[kind], time, results[j % 3], j as u64 * 7);
                    }
                }
                Op::Turns { kinds: ks, n, gap } => {
                    for j in 0..n {
                        for k in ks {
                            time += gap;
                            put(
                                &log,
                                &kinds[k],
                                time,
                                [0, -111, 7, RESULT_NOT_A_CALL][j % 4],
                                j as u64,
                            );
                        }
                    }
                }
                Op::Process(pid) => {
                    time += 1;
                    let p = Process {
                        pid,
                        ppid: 1,
                        time_ns: time,
                        source: Source::Shim,
                    };
                    let exe = format!("/bin/x{time}");
                    let _ = log.append_process(&p, exe.as_bytes(), b"x\0");
                }
                Op::Listen { kind, back } => {
                    let call = Call {
                        time_ns: time.saturating_sub(back),
                        syscall: Syscall::Listen,
                        ..kinds[kind].0
                    };
                    if let Ok(c) = log.append_call(&call, b"", b"", b"") {
                        c.set(0)
                    }
                }
                Op::Late { kind, back } => {
                    put(&log, &kinds[kind], time.saturating_sub(back), 0, 0);
                }
            }
        }
    }
}

/// The report's JSON and to-do list.
fn report(events: &dyn Events, dir: &RunDir) -> String {
    let report = test_report(events, dir.path());
    serde_json::to_string_pretty(&report).unwrap() + &render::todo(&report)
}

/// Flips bytes of the log's used part.
fn damage(dir: &RunDir, flips: &[(u32, u8)]) {
    use std::os::unix::fs::FileExt;
    let path = dir.path().join("events.log");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut header = vec![0u8; nettrap_core::event::HEADER_LEN];
    f.read_exact_at(&mut header, 0).unwrap();
    let used = nettrap_core::event::used_len(&header).unwrap() as u64;
    let hl = nettrap_core::event::HEADER_LEN as u64;
    if used <= hl {
        return;
    }
    for &(at, x) in flips {
        let off = hl + at as u64 % (used - hl);
        let mut b = [0u8];
        f.read_exact_at(&mut b, off).unwrap();
        b[0] ^= x;
        f.write_all_at(&b, off).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Hints change no report, damaged log or not.
    #[test]
    fn hints_change_no_report((kinds, ops) in ops(), flips in proptest::collection::vec((any::<u32>(), 1u8..=255), 0..6)) {
        let compiled = crate::policy::builtin::defaults().compile().unwrap();
        let dir = RunDir::create(&compiled).unwrap();
        write_ops(&dir, &kinds, &ops, 1);
        let before = (report(&dir, &dir), report(&NoHints(&dir), &dir));
        prop_assert_eq!(&before.0, &before.1);
        prop_assert_eq!(&before.0, &report(&in_memory(&dir), &dir));
        damage(&dir, &flips);
        prop_assert_eq!(report(&dir, &dir), report(&NoHints(&dir), &dir));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Nor across the pieces the log is walked in (8447 slots): the ops repeated until the
    /// log is long.
    #[test]
    fn hints_change_no_report_across_pieces((kinds, ops) in ops(), flips in proptest::collection::vec((any::<u32>(), 1u8..=255), 0..20)) {
        let compiled = crate::policy::builtin::defaults().compile().unwrap();
        let dir = RunDir::create(&compiled).unwrap();
        let per: usize = ops.iter().map(|o| match o { Op::Calls{n, ..} => *n, Op::Turns{n, ..} => 3 * n, _ => 1 }).sum();
        let reps = (20_000 / per.max(1)).clamp(1, 2000);
        write_ops(&dir, &kinds, &ops, reps);
        prop_assert_eq!(report(&dir, &dir), report(&NoHints(&dir), &dir));
        damage(&dir, &flips);
        prop_assert_eq!(report(&dir, &dir), report(&NoHints(&dir), &dir));
    }
}

/// The run directory's records in memory, with its counts: an `Events` that gives no hints.
fn in_memory(dir: &RunDir) -> Decoded {
    let mut all = Decoded::default();
    let counts = dir
        .walk(&mut |_, r, _| all.records.push(r.to_record()))
        .unwrap();
    all.torn = counts.torn;
    all.dropped = counts.dropped;
    all.unobserved = counts.unobserved;
    all
}

/// A kind of call for the cases below: from pid 1, thread 1, to 127.0.0.1.
fn kind(syscall: Syscall, source: Source, port: u16, host: &'static str) -> Kind {
    let call = Call {
        pid: 1,
        tid: 1,
        time_ns: 0,
        dest: Dest::from_v4([127, 0, 0, 1], port),
        transport: Transport::Tcp,
        action: Action::Record,
        phase: Phase::None,
        source,
        syscall,
        category: 0,
        rule: 0,
        deny_errno: 0,
        has_test: false,
    };
    (call, None, host, "")
}

/// Each thing the fast path checks besides the hint changes within a run of repeated calls:
/// the process (a second process record of the pid, also between calls of one lane), a lookup
/// covered (by the shim's record of it, made in the middle of the run, written after it), a
/// server of the suite (listening from the middle of the run on).
#[test]
fn a_run_of_repeated_calls_is_split_where_its_group_changes() {
    let kinds = [
        kind(Syscall::Connect, Source::Shim, 80, ""),
        kind(Syscall::Lookup, Source::Shim, 53, "db.example"),
        kind(Syscall::Connect, Source::Seccomp, 53, ""),
        kind(Syscall::Connect, Source::Shim, 81, ""),
    ];
    let run = |kind, n, gap| Op::Calls {
        kind,
        n,
        gap,
        results: [0, 0, -111],
    };
    let cases = [
        vec![Op::Process(1), run(0, 3, 10), Op::Process(1), run(0, 3, 10)],
        // Calls to two ports in turn (two lanes), a new process between two to one port.
        vec![
            Op::Process(1),
            run(0, 2, 10),
            run(3, 2, 10),
            Op::Process(1),
            run(3, 2, 10),
            run(0, 2, 10),
        ],
        // The shim's record of the lookup written after the resolver's first queries.
        vec![run(2, 4, 100), Op::Late { kind: 1, back: 250 }],
        vec![
            run(0, 5, 1000),
            Op::Listen {
                kind: 0,
                back: 2500,
            },
        ],
    ];
    let compiled = crate::policy::builtin::defaults().compile().unwrap();
    for ops in cases {
        let dir = RunDir::create(&compiled).unwrap();
        write_ops(&dir, &kinds, &ops, 1);
        let (fast, full) = (report(&dir, &dir), report(&in_memory(&dir), &dir));
        assert_eq!(fast, full, "{ops:?}");
        // The run is split: more than one group of the kind.
        let groups = serde_json::to_value(test_report(&in_memory(&dir), dir.path())).unwrap();
        assert!(
            groups["unattributed"].as_array().unwrap().len() > 1,
            "{ops:?}"
        );
    }
}
