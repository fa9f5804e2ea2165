//! The report's fast path for a storm's repeated calls (a call the log's reader says repeats
//! the one before goes to that one's group) builds the report the full path builds: random
//! logs of repeated calls, with processes, servers, lookups and voided calls between them,
//! written to a real run directory and reported from it (hints given) and from the same
//! records in memory (no hints: every call grouped in full).

use super::*;
use crate::rundir::RunDir;
use nettrap_core::addr::{Dest, Transport};
use nettrap_core::event::{Call, Process, RESULT_NOT_A_CALL};
use nettrap_core::test_id::Phase;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// `n` calls of kind `kind` (see [`ops`]), `gap` ns apart, their results and blocked times
    /// varied.
    Calls {
        kind: usize,
        n: usize,
        gap: u64,
        results: [i32; 3],
    },
    Process(u32),
    /// A server on the destination of kind `kind`, listening since `back` ns before now (its
    /// start may fall inside the calls just written).
    Listen {
        kind: usize,
        back: u64,
    },
    /// One call of kind `kind` made `back` ns before now, written now (by a writer late to
    /// write it).
    Late {
        kind: usize,
        back: u64,
    },
}

type Kind = (Call, Option<&'static str>, &'static str);

fn call() -> impl Strategy<Value = Kind> {
    (
        (
            1u32..4,
            1u32..3,
            0u8..2,
            prop_oneof![Just(9u16), Just(53), Just(80)],
        ),
        (0u8..3, 0u8..3, 0u8..4),
        prop_oneof![
            4 => Just(Syscall::Connect),
            1 => Just(Syscall::Sendto),
            1 => Just(Syscall::Lookup),
            1 => Just(Syscall::Listen),
        ],
        (0u16..2, 0u16..2),
        prop_oneof![Just(None), Just(Some("t::a")), Just(Some("t::b"))],
        prop_oneof![Just(""), Just("db.example")],
        any::<bool>(),
    )
        .prop_map(
            |((pid, tid, ip, port), (t, a, ph), syscall, (category, rule), test, host, by)| {
                let call = Call {
                    pid,
                    tid,
                    time_ns: 0,
                    dest: Dest::from_v4([127, 0, 0, 1 + ip], port),
                    transport: Transport::from_u8(t),
                    action: Action::from_u8(a),
                    phase: Phase::from_u8(ph),
                    source: if port == 53 && (host.is_empty() || by) {
                        Source::Seccomp
                    } else {
                        Source::Shim
                    },
                    syscall,
                    category,
                    rule,
                    deny_errno: 0,
                    has_test: test.is_some(),
                };
                (call, test, host)
            },
        )
}

/// A few kinds of call, and what is written: runs of calls of one kind (runs of one kind
/// after one another, processes and servers between them).
fn ops() -> impl Strategy<Value = (Vec<Kind>, Vec<Op>)> {
    let calls = (
        0usize..4,
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
    let op = prop_oneof![
        6 => calls,
        1 => (1u32..4).prop_map(Op::Process),
        1 => (0usize..4, 0u64..20_000_000_000).prop_map(|(kind, back)| Op::Listen { kind, back }),
        1 => (0usize..4, 0u64..20_000_000_000).prop_map(|(kind, back)| Op::Late { kind, back }),
    ];
    (
        proptest::collection::vec(call(), 4),
        proptest::collection::vec(op, 0..30),
    )
}

/// Writes `ops` to a fresh run directory's log.
fn write(kinds: &[Kind], ops: &[Op]) -> RunDir {
    let compiled = crate::policy::builtin::defaults().compile().unwrap();
    let dir = RunDir::create(&compiled).unwrap();
    let mapping = dir.log();
    let log = mapping.log();
    let mut time = 30_000_000_000;
    for op in ops {
        match *op {
            Op::Calls {
                kind,
                n,
                gap,
                results,
            } => {
                let (call, test, host) = kinds[kind];
                for j in 0..n {
                    time += gap;
                    let call = Call {
                        time_ns: time,
                        ..call
                    };
                    let test = test.unwrap_or("").as_bytes();
                    let cell = log.append_call(&call, test, host.as_bytes(), b"").unwrap();
                    match results[j % 3] {
                        RESULT_NOT_A_CALL => cell.void(),
                        r => cell.finish(r, j as u64 * 7),
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
                // A new program each time: the report tells the processes apart.
                let exe = format!("/bin/x{time}");
                log.append_process(&p, exe.as_bytes(), b"x\0").unwrap();
            }
            Op::Listen { kind, back } => {
                let call = Call {
                    time_ns: time - back,
                    syscall: Syscall::Listen,
                    ..kinds[kind].0
                };
                log.append_call(&call, b"", b"", b"").unwrap().set(0);
            }
            Op::Late { kind, back } => {
                let (call, test, host) = kinds[kind];
                let call = Call {
                    time_ns: time - back,
                    ..call
                };
                let test = test.unwrap_or("").as_bytes();
                log.append_call(&call, test, host.as_bytes(), b"")
                    .unwrap()
                    .set(0);
            }
        }
    }
    dir
}

fn report(events: &dyn Events, dir: &RunDir) -> String {
    serde_json::to_string_pretty(&test_report(events, dir.path())).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn repeated_calls_are_grouped_as_the_full_path_groups_them((kinds, ops) in ops()) {
        let dir = write(&kinds, &ops);
        // The same records in memory: no hints, every call grouped in full.
        let mut all = Decoded::default();
        let counts = dir
            .walk(&mut |_, r, _| all.records.push(r.to_record()))
            .unwrap();
        all.torn = counts.torn;
        all.dropped = counts.dropped;
        all.unobserved = counts.unobserved;
        prop_assert_eq!(report(&dir, &dir), report(&all, &dir));
    }
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
    (call, None, host)
}

/// Each thing the fast path checks besides the hint changes within a run of repeated calls:
/// the process (a second process record of the pid, also between calls of one lane), a lookup covered (by the shim's record
/// of it, made in the middle of the run, written after it), a server of the suite (listening
/// from the middle of the run on).
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
    for ops in cases {
        let dir = write(&kinds, &ops);
        let mut all = Decoded::default();
        dir.walk(&mut |_, r, _| all.records.push(r.to_record()))
            .unwrap();
        let (fast, full) = (report(&dir, &dir), report(&all, &dir));
        assert_eq!(fast, full, "{ops:?}");
        // The run is split: more than one group of the kind.
        let groups: serde_json::Value = serde_json::from_str(&full).unwrap();
        assert!(
            groups["unattributed"].as_array().unwrap().len() > 1,
            "{ops:?}"
        );
    }
}
