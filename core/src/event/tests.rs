//! The event log's writer and reader together: round trips, torn and dropped records counted
//! exactly, windows mapped only where records land, corrupt records rejected; and property
//! tests over random logs.

extern crate std;

use super::*;
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize};
use proptest::prelude::*;

/// Small windows in tests, so that records cross many of them.
const TEST_WINDOW: u64 = 32;

/// A log file in memory; its "mappings" point into the buffer.
struct MemMapper {
    base: *mut u8,
    len: usize,
    /// Windows (bit i: window i, 63: every window from 63 on) that cannot be mapped.
    refused: AtomicU64,
    maps: AtomicUsize,
}

// SAFETY: the buffer is only written through the log's atomic protocol, as a shared mapping.
unsafe impl Sync for MemMapper {}

impl Mapper for MemMapper {
    fn map(&self, offset: u64, len: usize) -> Option<NonNull<u8>> {
        let window = ((offset as usize - HEADER_LEN) / (TEST_WINDOW as usize * SLOT_LEN)).min(63);
        if self.refused.load(Ordering::Relaxed) & (1 << window) != 0 {
            return None;
        }
        assert!(offset as usize + len <= self.len, "window past the file");
        assert!(offset.is_multiple_of(4096), "window not on a page");
        self.maps.fetch_add(1, Ordering::Relaxed);
        // SAFETY: inside the buffer (asserted above).
        NonNull::new(unsafe { self.base.add(offset as usize) })
    }

    unsafe fn unmap(&self, _: NonNull<u8>, _: usize) {}
}

struct Mem {
    _backing: Vec<u64>,
    windows: Windows,
    mapper: MemMapper,
}

impl Mem {
    fn new(capacity: u64, allocated: u64) -> Box<Mem> {
        let len = file_len(capacity) as usize;
        // u64 backing keeps the buffer 8-aligned, as a mapping is.
        let mut backing = vec![0u64; len / 8];
        let base = backing.as_mut_ptr().cast::<u8>();
        // SAFETY: the buffer holds len >= HEADER_LEN bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(header(capacity, allocated).as_ptr(), base, HEADER_LEN)
        };
        Box::new(Mem {
            _backing: backing,
            windows: Windows::with_window_slots(TEST_WINDOW),
            mapper: MemMapper {
                base,
                len,
                refused: AtomicU64::new(0),
                maps: AtomicUsize::new(0),
            },
        })
    }

    fn log(&self) -> Log<'_> {
        // SAFETY: the header is the buffer's start; the buffer outlives the Log.
        unsafe { Log::new(self.mapper.base, &self.windows, &self.mapper) }.unwrap()
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the whole buffer; no Log is in use while the bytes are.
        unsafe { core::slice::from_raw_parts_mut(self.mapper.base, self.mapper.len) }
    }

    fn decode(&mut self) -> Decoded {
        let bytes = self.bytes();
        decode(&bytes[..used_len(bytes).unwrap()]).unwrap()
    }
}

fn a_call() -> Call {
    Call {
        pid: 7,
        tid: 8,
        time_ns: 9,
        dest: Dest::from_v4([127, 0, 0, 1], 9200),
        transport: Transport::Tcp,
        action: Action::Deny,
        phase: Phase::Call,
        source: Source::Shim,
        syscall: Syscall::Connect,
        category: 3,
        rule: 4,
        deny_errno: 111,
        has_test: true,
    }
}

fn a_process() -> Process {
    Process {
        pid: 7,
        ppid: 1,
        time_ns: 0,
        source: Source::Shim,
    }
}

#[test]
fn round_trip_torn_dropped_and_unobserved() {
    let mut mem = Mem::new(16, 16);
    let log = mem.log();
    let call = a_call();
    log.append_process(&a_process(), b"/bin/x", b"x\0-y\0")
        .unwrap();
    let long_id = vec![b'a'; 300];
    log.append_call(&call, &long_id, b"db", b"net::search_ind")
        .unwrap()
        .finish(111, 1_500_000_000);
    // A record reserved but never committed, then one that does not fit.
    let _ = log.append_call_until(&call, b"", b"", b"", Step::Tagged);
    assert_eq!(
        log.append_call(&call, &[b'b'; 2000], b"", b"").err(),
        Some(NotWritten::Full)
    );
    log.count_unobserved(Unobserved::SupervisorUnreadable);
    let mut d = mem.decode();
    assert_eq!((d.records.len(), d.torn, d.dropped), (2, 1, 1));
    d.add_unobserved(Unobserved::ShimUnmapped as u8);
    d.add_unobserved(200);
    assert_eq!(
        d.unobserved_by_cause().collect::<Vec<_>>(),
        vec![
            (Unobserved::ShimUnmapped, 1),
            (Unobserved::SupervisorUnreadable, 1)
        ]
    );
    assert_eq!(d.unobserved[0], 1);
    let Record::Call(c) = &d.records[1] else {
        panic!("not a call")
    };
    assert_eq!(c.call, call);
    assert_eq!(c.test.as_deref(), Some(&long_id[..]));
    assert_eq!(
        (&c.host[..], &c.thread[..], c.result, c.blocked_ns),
        (&b"db"[..], &b"net::search_ind"[..], 111, 1_500_000_000)
    );
    let Record::Process(p) = &d.records[0] else {
        panic!("not a process")
    };
    assert_eq!(
        (p.process, &p.exe[..], &p.cmdline[..]),
        (a_process(), &b"/bin/x"[..], &b"x\0-y\0"[..])
    );
}

#[test]
fn an_unfinished_record_is_one_torn_record_wherever_its_writer_stopped() {
    for step in [Step::Reserved, Step::Tagged, Step::Payload, Step::Continued] {
        let mut mem = Mem::new(64, 64);
        let log = mem.log();
        // Three slots: its continuation slots are tagged before its head is.
        let _ = log.append_call_until(&a_call(), &[b't'; 250], b"", b"", step);
        log.append_call(&a_call(), b"x", b"", b"").unwrap();
        let d = mem.decode();
        assert_eq!((d.torn, d.records.len(), d.dropped), (1, 1, 0), "{step:?}");
    }
}

#[test]
fn records_that_do_not_fit_are_dropped_not_torn_even_when_the_log_grows_later() {
    let mut mem = Mem::new(64, 8);
    let log = mem.log();
    for _ in 0..6 {
        log.append_call(&a_call(), b"", b"", b"").unwrap();
    }
    // Three slots do not fit in the two left: dropped, and nothing reserved for them.
    assert_eq!(
        log.append_call(&a_call(), &[b't'; 250], b"", b"").err(),
        Some(NotWritten::Full)
    );
    assert_eq!(log.cursor(), 6);
    // The launcher allocates more; later records land right after.
    log.set_allocated(64);
    log.set_allocated(32); // never lowered
    assert_eq!(log.allocated(), 64);
    log.append_call(&a_call(), &[b't'; 250], b"", b"").unwrap();
    let d = mem.decode();
    assert_eq!((d.records.len(), d.torn, d.dropped), (7, 0, 1));
}

#[test]
fn only_the_windows_records_land_in_are_mapped_and_records_cross_window_ends() {
    let mut mem = Mem::new(TEST_WINDOW * 8, TEST_WINDOW * 8);
    let log = mem.log();
    assert_eq!(mem.windows.mapped(), 0);
    // 20 three-slot records: slots 0..60, starting in windows 0 and 1 (the one at 30 runs into window 1).
    for i in 0..20u8 {
        log.append_call(&a_call(), &[i; 250], b"", b"").unwrap();
    }
    assert_eq!(log.cursor(), 60);
    assert_eq!(
        (
            mem.windows.mapped(),
            mem.mapper.maps.load(Ordering::Relaxed)
        ),
        (2, 2)
    );
    let d = mem.decode();
    assert_eq!((d.records.len(), d.torn), (20, 0));
    for (i, r) in d.records.iter().enumerate() {
        let Record::Call(c) = r else { panic!() };
        assert_eq!(c.test.as_deref(), Some(&[i as u8; 250][..]));
    }
}

#[test]
fn a_window_that_cannot_be_mapped_reserves_nothing_and_counts_nothing() {
    let mut mem = Mem::new(TEST_WINDOW * 4, TEST_WINDOW * 4);
    mem.mapper.refused.store(1 << 1, Ordering::Relaxed);
    let log = mem.log();
    for _ in 0..TEST_WINDOW {
        log.append_call(&a_call(), b"", b"", b"").unwrap();
    }
    assert_eq!(
        log.append_call(&a_call(), b"", b"", b"").err(),
        Some(NotWritten::Unmapped)
    );
    assert_eq!(
        log.append_process(&a_process(), b"", b"").err(),
        Some(NotWritten::Unmapped)
    );
    assert_eq!(log.cursor(), TEST_WINDOW);
    // The caller decides how to count it.
    log.count_dropped();
    mem.mapper.refused.store(0, Ordering::Relaxed);
    log.append_call(&a_call(), b"", b"", b"").unwrap();
    let d = mem.decode();
    assert_eq!(
        (d.records.len() as u64, d.torn, d.dropped),
        (TEST_WINDOW + 1, 0, 1)
    );
}

/// Writes a record with a valid structure and checksum but the given payload.
fn forge(log: &Log, kind: u8, payload: &[u8]) {
    log.append_until(kind, &[payload], Step::Committed).unwrap();
}

#[test]
fn unknown_values_are_corrupt_records_not_defaults() {
    let call = a_call().encode(0, 0, 0);
    let mut process = [0u8; PROCESS_FIXED];
    process.copy_from_slice(&a_process().encode(0, 0));
    let bad_calls: [(usize, u8); 8] = [
        (34, 3),   // transport
        (35, 3),   // action
        (36, 4),   // phase
        (37, 0),   // source
        (37, 3),   // source
        (38, 0),   // syscall
        (38, 200), // syscall
        (60, 2),   // has_test
    ];
    for (at, v) in bad_calls {
        let mut mem = Mem::new(16, 16);
        let log = mem.log();
        forge(&log, KIND_CALL, &call);
        let mut bad = call;
        bad[at] = v;
        forge(&log, KIND_CALL, &bad);
        let d = mem.decode();
        assert_eq!((d.records.len(), d.torn), (1, 1), "byte {at} = {v}");
    }
    // A damaged result field, a text longer than the record, an unknown kind, a bad source.
    let mut result = call;
    result[CALL_RESULT + 4] ^= 1;
    let mut long = call;
    long[56] = 200;
    let mut source = process;
    source[20] = 9;
    for (kind, payload) in [
        (KIND_CALL, &result[..]),
        (KIND_CALL, &long[..]),
        (9, &call[..]),
        (KIND_PROCESS, &source[..]),
    ] {
        let mut mem = Mem::new(16, 16);
        let log = mem.log();
        forge(&log, kind, payload);
        let d = mem.decode();
        assert_eq!((d.records.len(), d.torn), (0, 1));
    }
}

#[test]
fn blocked_time_is_unknown_until_finished_and_a_damaged_one_is_torn() {
    let mut mem = Mem::new(16, 16);
    let log = mem.log();
    // Still blocked (or killed inside the call): result pending, blocked 0 = not measured.
    log.append_call(&a_call(), b"", b"", b"").unwrap();
    // Only the result known (a denial, an engine that does not see the call return).
    log.append_call(&a_call(), b"", b"", b"").unwrap().set(13);
    // Measured 0 ns still reads as measured (1 ns).
    log.append_call(&a_call(), b"", b"", b"")
        .unwrap()
        .finish(0, 0);
    let d = mem.decode();
    let got: Vec<(i32, u64)> = d
        .records
        .iter()
        .map(|r| match r {
            Record::Call(c) => (c.result, c.blocked_ns),
            Record::Process(_) => panic!("not a call"),
        })
        .collect();
    assert_eq!(got, vec![(RESULT_PENDING, 0), (13, 0), (0, 1)]);
    // A voided record (not a call after all) is skipped, neither a record nor torn.
    mem.log()
        .append_call(&a_call(), b"", b"", b"")
        .unwrap()
        .void();
    let d = mem.decode();
    assert_eq!((d.records.len(), d.torn), (3, 0));
    // A flipped bit in a measured blocked time, or garbage where none was measured: torn.
    for (finish, at) in [(true, 2usize), (true, 7), (false, 3)] {
        let mut mem = Mem::new(16, 16);
        let log = mem.log();
        let cell = log.append_call(&a_call(), b"", b"", b"").unwrap();
        if finish {
            cell.finish(0, 123_456_789);
        }
        mem.bytes()[HEADER_LEN + TAG_LEN + CALL_BLOCKED + at] ^= 0x04;
        let d = mem.decode();
        assert_eq!((d.records.len(), d.torn), (0, 1), "byte {at}");
    }
}

#[test]
fn a_flipped_byte_makes_a_record_torn_not_a_different_record() {
    let mut mem = Mem::new(16, 16);
    let log = mem.log();
    log.append_call(&a_call(), b"tests/a", b"", b"").unwrap();
    // pid, port, a text byte, the checksum.
    for at in [8usize, 8 + 32, 8 + 64, 4] {
        let mut mem2 = Mem::new(16, 16);
        let log2 = mem2.log();
        log2.append_call(&a_call(), b"tests/a", b"", b"").unwrap();
        mem2.bytes()[HEADER_LEN + at] ^= 0x10;
        let d = mem2.decode();
        assert_eq!((d.records.len(), d.torn), (0, 1), "byte {at}");
    }
    assert_eq!(mem.decode().records.len(), 1);
}

// ----- property tests -----

fn call_strategy() -> impl Strategy<Value = Call> {
    (
        (any::<u32>(), any::<u32>(), any::<u64>(), any::<[u8; 16]>()),
        (any::<u16>(), 0u8..3, 0u8..3, 0u8..4, 1u8..3, 1u8..6),
        (any::<u16>(), any::<u16>(), any::<i32>()),
    )
        .prop_map(
            |((pid, tid, time_ns, ip), (port, t, a, ph, s, sc), (category, rule, deny_errno))| {
                Call {
                    pid,
                    tid,
                    time_ns,
                    dest: Dest { ip, port },
                    transport: transport_from(t).unwrap(),
                    action: action_from(a).unwrap(),
                    phase: phase_from(ph).unwrap(),
                    source: Source::try_from(s).unwrap(),
                    syscall: Syscall::try_from(sc).unwrap(),
                    category,
                    rule,
                    deny_errno,
                    has_test: false,
                }
            },
        )
}

/// Texts: mostly short, sometimes past the limit (cut by the writer).
fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => proptest::collection::vec(any::<u8>(), 0..(MAX_TEXT + 300)),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Call {
        call: Call,
        test: Option<Vec<u8>>,
        host: Vec<u8>,
        thread: Vec<u8>,
        result: Option<i32>,
        /// With a result: the blocked time the writer measured (`finish`), else `set`.
        blocked: Option<u64>,
    },
    Process {
        process: Process,
        exe: Vec<u8>,
        cmdline: Vec<u8>,
    },
    /// A writer that stops after `step` (its record left unfinished).
    Tear { text: usize, step: Step },
    /// The launcher allocates more slots.
    Grow(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            call_strategy(),
            proptest::option::of(text()),
            text(),
            proptest::collection::vec(any::<u8>(), 0..20),
            proptest::option::of(any::<i32>()),
            proptest::option::of(prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()]),
        )
            .prop_map(|(call, test, host, thread, result, blocked)| Op::Call {
                call,
                test,
                host,
                thread,
                result,
                blocked,
            }),
        2 => (any::<u32>(), any::<u32>(), any::<u64>(), 1u8..3, text(), text()).prop_map(
            |(pid, ppid, time_ns, s, exe, cmdline)| Op::Process {
                process: Process {
                    pid,
                    ppid,
                    time_ns,
                    source: Source::try_from(s).unwrap(),
                },
                exe,
                cmdline,
            }
        ),
        2 => (0usize..600, prop_oneof![
            Just(Step::Reserved),
            Just(Step::Tagged),
            Just(Step::Payload),
            Just(Step::Continued),
        ])
            .prop_map(|(text, step)| Op::Tear { text, step }),
        1 => (0u64..200).prop_map(Op::Grow),
    ]
}

fn cut(t: &[u8], max: usize) -> Vec<u8> {
    t[..t.len().min(max)].to_vec()
}

/// What the writer was asked to do, and what the reader must find.
#[derive(Default)]
struct Expected {
    records: Vec<Record>,
    torn: u64,
    dropped: u64,
}

/// Runs `ops` through the writer on `mem`; returns what a reader must find.
fn play(mem: &Mem, ops: &[Op]) -> Expected {
    let log = mem.log();
    let mut want = Expected::default();
    // Whether the previous reservation was a writer stopped before its first store: two side
    // by side read as one run of untagged slots, one torn record.
    let mut after_untagged = false;
    for op in ops {
        match op {
            Op::Call {
                call,
                test,
                host,
                thread,
                result,
                blocked,
            } => {
                let call = Call {
                    has_test: test.is_some(),
                    ..*call
                };
                let t = test.as_deref().unwrap_or(&[]);
                match log.append_call(&call, t, host, thread) {
                    Ok(cell) => {
                        let mut blocked_ns = 0;
                        match (result, blocked) {
                            (Some(r), Some(b)) => {
                                cell.finish(*r, *b);
                                blocked_ns = (*b).clamp(1, BLOCKED_MAX);
                            }
                            (Some(r), None) => cell.set(*r),
                            _ => {}
                        }
                        after_untagged = false;
                        if *result == Some(RESULT_NOT_A_CALL) {
                            // Voided: not a call, never read back.
                            continue;
                        }
                        want.records.push(Record::Call(CallRecord {
                            call,
                            result: result.unwrap_or(RESULT_PENDING),
                            blocked_ns,
                            test: test.as_ref().map(|t| cut(t, MAX_TEXT)),
                            host: cut(host, MAX_TEXT),
                            thread: cut(thread, MAX_THREAD_NAME),
                        }));
                    }
                    Err(NotWritten::Full) => want.dropped += 1,
                    Err(NotWritten::Unmapped) => {}
                }
            }
            Op::Process {
                process,
                exe,
                cmdline,
            } => match log.append_process(process, exe, cmdline) {
                Ok(()) => {
                    after_untagged = false;
                    want.records.push(Record::Process(ProcessRecord {
                        process: *process,
                        exe: cut(exe, MAX_TEXT),
                        cmdline: cut(cmdline, MAX_TEXT),
                    }));
                }
                Err(NotWritten::Full) => want.dropped += 1,
                Err(NotWritten::Unmapped) => {}
            },
            Op::Tear { text, step } => {
                match log.append_call_until(&a_call(), &vec![b'x'; *text], b"", b"", *step) {
                    Ok(_) => {
                        let untagged = *step == Step::Reserved;
                        if !(untagged && after_untagged) {
                            want.torn += 1;
                        }
                        after_untagged = untagged;
                    }
                    Err(NotWritten::Full) => want.dropped += 1,
                    Err(NotWritten::Unmapped) => {}
                }
            }
            Op::Grow(by) => log.set_allocated(log.allocated() + by),
        }
    }
    want
}

fn log_strategy() -> impl Strategy<Value = (u64, u64, u64, Vec<Op>)> {
    (
        1u64..1200,
        0u64..1200,
        prop_oneof![3 => Just(0u64), 1 => any::<u64>()],
        proptest::collection::vec(op(), 0..80),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Every committed record comes back exactly, in order; every unfinished one is torn once,
    /// every one that did not fit is dropped once (never torn), whatever windows could not be
    /// mapped (nothing reserved, nothing counted).
    #[test]
    fn the_reader_finds_exactly_what_the_writers_did(
        (capacity, allocated, refused, ops) in log_strategy()
    ) {
        let mut mem = Mem::new(capacity, allocated);
        mem.mapper.refused.store(refused, Ordering::Relaxed);
        let want = play(&mem, &ops);
        let d = mem.decode();
        prop_assert_eq!(&d.records, &want.records);
        prop_assert_eq!((d.torn, d.dropped), (want.torn, want.dropped));
        // Windows are mapped only for records that landed in them (and at most once each).
        let cursor = mem.log().cursor();
        prop_assert!(mem.windows.mapped() as u64 <= cursor.div_ceil(TEST_WINDOW));
    }

    /// Whatever bytes of the records are damaged, the reader neither panics nor invents a
    /// record: what it returns is a part of what was written.
    #[test]
    fn damaged_records_are_rejected_never_misread(
        (capacity, allocated, _refused, ops) in log_strategy(),
        flips in proptest::collection::vec((any::<u32>(), 1u8..=255), 1..20),
        header_flip in proptest::option::of((0usize..128, 1u8..=255)),
    ) {
        let mut mem = Mem::new(capacity, allocated);
        let want = play(&mem, &ops);
        damage(&mut mem, &flips);
        if let Some((at, x)) = header_flip {
            mem.bytes()[at] ^= x;
        }
        let bytes = mem.bytes();
        let Some(len) = used_len(bytes) else { return Ok(()) };
        let Ok(d) = decode(&bytes[..len.min(bytes.len())]) else { return Ok(()) };
        let mut left = want.records.clone();
        for r in &d.records {
            let Some(i) = left.iter().position(|w| w == r) else {
                return Err(TestCaseError::fail(alloc::format!("invented: {r:?}")));
            };
            left.swap_remove(i);
        }
    }
}

/// Hands the log to a [`Stream`] in pieces of `piece` slots (a reader of a large log), each
/// piece through `feed`, from where the stream asks to go on; returns the stream.
fn in_pieces(bytes: &[u8], piece: usize, feed: impl FnMut(&mut Stream, &[u8])) -> Stream {
    in_pieces_reading(bytes, piece, true, feed)
}

/// [`in_pieces`], a storm's repeated calls read the cheap way (`repeats`) or every call in full
/// ([`Stream::without_repeats`]).
fn in_pieces_reading(
    bytes: &[u8],
    piece: usize,
    repeats: bool,
    mut feed: impl FnMut(&mut Stream, &[u8]),
) -> Stream {
    let len = used_len(bytes).unwrap().min(bytes.len());
    let slots = &bytes[HEADER_LEN..len];
    let mut s = Stream::new(bytes, (slots.len() / SLOT_LEN) as u64).unwrap();
    if !repeats {
        s = s.without_repeats();
    }
    while !s.done() {
        let from = s.next_slot() as usize * SLOT_LEN;
        let to = (from + piece * SLOT_LEN).min(slots.len());
        if from >= slots.len() {
            break;
        }
        feed(&mut s, &slots[from..to]);
    }
    s
}

/// Reads the log in pieces of `piece` slots: what [`Stream`] finds.
fn stream(bytes: &[u8], piece: usize) -> Decoded {
    let mut records = alloc::vec::Vec::new();
    let mut d = in_pieces(bytes, piece, |s, slots| s.feed(slots, |r| records.push(r))).finish();
    d.records = records;
    d
}

/// XORs each `(at, x)` of `flips` into a byte of the log's used slots (`at` taken modulo their
/// length), if any are used.
fn damage(mem: &mut Mem, flips: &[(u32, u8)]) {
    let used = HEADER_LEN + mem.log().cursor() as usize * SLOT_LEN;
    if used > HEADER_LEN {
        let bytes = mem.bytes();
        for (at, x) in flips {
            bytes[HEADER_LEN + *at as usize % (used - HEADER_LEN)] ^= x;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Read in pieces of any size from MAX_SLOTS up, the log yields the records and counts
    /// that one pass over the whole file does, damaged or not (records across piece ends,
    /// runs of untagged slots across them).
    #[test]
    fn a_log_read_in_pieces_reads_as_a_whole(
        (capacity, allocated, _refused, ops) in log_strategy(),
        piece in MAX_SLOTS..MAX_SLOTS + 700,
        flips in proptest::collection::vec((any::<u32>(), 1u8..=255), 0..6),
    ) {
        let mut mem = Mem::new(capacity, allocated);
        play(&mem, &ops);
        damage(&mut mem, &flips);
        let whole = mem.decode();
        let pieces = stream(mem.bytes(), piece);
        prop_assert_eq!(&pieces.records, &whole.records);
        prop_assert_eq!(
            (pieces.torn, pieces.dropped, pieces.unobserved),
            (whole.torn, whole.dropped, whole.unobserved)
        );
    }
}

/// Reads the log in pieces of `piece` slots with [`Stream::feed_refs`], or with
/// [`Stream::skim`] when `want` is given: the records (owned) with their places.
fn places(
    bytes: &[u8],
    piece: usize,
    want: Option<&dyn Fn(&CallHead) -> bool>,
) -> alloc::vec::Vec<(u64, Record)> {
    let mut records = alloc::vec::Vec::new();
    in_pieces(bytes, piece, |s, slots| {
        let mut f = |at: u64, r: RecordRef<'_>| records.push((at, r.to_record()));
        match want {
            Some(want) => s.skim(slots, want, &mut f),
            None => s.feed_refs(slots, &mut f),
        }
    });
    records
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Records read in place are the records `decode` reads, at places (their first slots)
    /// that only grow; a skim hands out exactly the process records and the calls its choice
    /// picks among them, at the same places, damaged log or not (the report's two walks
    /// agree on where each record is).
    #[test]
    fn a_skim_reads_the_records_it_picks_at_the_places_a_full_read_gives(
        (capacity, allocated, _refused, ops) in log_strategy(),
        piece in MAX_SLOTS..MAX_SLOTS + 700,
        flips in proptest::collection::vec((any::<u32>(), 1u8..=255), 0..6),
        odd_ports in any::<bool>(),
    ) {
        let mut mem = Mem::new(capacity, allocated);
        play(&mem, &ops);
        damage(&mut mem, &flips);
        let whole = mem.decode();
        let all = places(mem.bytes(), piece, None);
        let records: alloc::vec::Vec<Record> = all.iter().map(|(_, r)| r.clone()).collect();
        prop_assert_eq!(&records, &whole.records);
        prop_assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        let want = move |h: &CallHead| (h.port % 2 == 1) == odd_ports;
        let picked: alloc::vec::Vec<(u64, Record)> = all
            .into_iter()
            .filter(|(_, r)| match r.as_ref() {
                RecordRef::Call(c) => want(&c.head()),
                RecordRef::Process(_) => true,
            })
            .collect();
        prop_assert_eq!(places(mem.bytes(), piece, Some(&want)), picked);
    }
}

#[test]
fn settled_ends_at_the_first_unfinished_record_and_a_next_pass_resumes_there() {
    let mut mem = Mem::new(64, 64);
    let log = mem.log();
    log.append_process(&a_process(), b"/bin/x", b"x\0").unwrap();
    log.append_call(&a_call(), b"t1", b"", b"").unwrap().set(0);
    // Slot 2: a record of two slots whose writer is still writing (head tagged "reserved").
    let _ = log.append_call_until(&a_call(), &[b'y'; 100], b"", b"", Step::Tagged);
    // Complete records after it are read, but are not settled.
    log.append_call(&a_call(), b"t2", b"", b"").unwrap().set(0);
    let bytes = mem.bytes();
    let len = used_len(bytes).unwrap();
    let (d, settled) = decode_settled(&bytes[..len]).unwrap();
    assert_eq!((d.records.len(), d.torn), (3, 1));
    assert_eq!(
        settled,
        Settled {
            records: 2,
            slots: 2
        }
    );

    // A complete log settles at its end.
    let mut done = Mem::new(64, 64);
    let log = done.log();
    log.append_call(&a_call(), b"t1", b"", b"").unwrap().set(0);
    log.append_call(&a_call(), &[b'z'; 200], b"", b"")
        .unwrap()
        .set(0);
    let bytes = done.bytes();
    let len = used_len(bytes).unwrap();
    let (d, settled) = decode_settled(&bytes[..len]).unwrap();
    assert_eq!(d.records.len(), 2);
    assert_eq!(
        settled,
        Settled {
            records: 2,
            slots: 4
        }
    );

    // The next pass: the header, then the slots from the settled point on. It starts at the
    // unfinished record (still torn for now) and reads what followed; nothing before it.
    let mut header = mem.bytes()[..HEADER_LEN].to_vec();
    let cursor = mem.log().cursor() as usize;
    let start = HEADER_LEN + 2 * SLOT_LEN;
    let end = HEADER_LEN + cursor * SLOT_LEN;
    let (d, resumed) = {
        header.extend_from_slice(&mem.bytes()[start..end]);
        decode_settled(&header).unwrap()
    };
    assert_eq!(
        (d.records.len(), d.torn),
        (1, 1),
        "still unfinished: torn for now"
    );
    assert_eq!(
        resumed,
        Settled {
            records: 0,
            slots: 0
        }
    );
    // Not a log: refused, not misread.
    assert!(decode_settled(&[0u8; 10]).is_err());
    assert!(decode_settled(&[0u8; HEADER_LEN]).is_err());
}

/// The checksum as first written (byte-wise across part boundaries): the word-wise one must
/// give the same value, so logs written by either read the same.
fn checksum_bytewise(kind: u8, parts: &[&[u8]]) -> u32 {
    const _: () = assert!(CALL_RESULT.is_multiple_of(8) && CALL_BLOCKED.is_multiple_of(8));
    let skip = |pos: usize| kind == KIND_CALL && (pos == CALL_RESULT || pos == CALL_BLOCKED);
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ kind as u64;
    let mut mix = |pos: usize, w: u64| {
        if !skip(pos) {
            h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
            h ^= h >> 29;
        }
    };
    let (mut word, mut fill, mut pos) = ([0u8; 8], 0usize, 0usize);
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            if fill == 0
                && let Some((w, tail)) = rest.split_first_chunk::<8>()
            {
                mix(pos, u64::from_le_bytes(*w));
                pos += 8;
                rest = tail;
                continue;
            }
            word[fill] = rest[0];
            rest = &rest[1..];
            fill += 1;
            if fill == 8 {
                mix(pos, u64::from_le_bytes(word));
                pos += 8;
                fill = 0;
            }
        }
    }
    if fill > 0 {
        word[fill..].fill(0);
        mix(pos, u64::from_le_bytes(word));
    }
    (h ^ (h >> 32)) as u32
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// The checksum depends on the bytes only, not on how they are split into parts, and is
    /// the byte-wise one's.
    #[test]
    fn checksum_is_the_bytewise_one_for_any_split(
        kind in prop_oneof![Just(KIND_CALL), Just(KIND_PROCESS)],
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        cuts in proptest::collection::vec(0usize..400, 0..5),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        cuts.sort();
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        for c in cuts {
            parts.push(&bytes[at..c]);
            at = c;
        }
        parts.push(&bytes[at..]);
        prop_assert_eq!(checksum(kind, &parts), checksum_bytewise(kind, &[&bytes]));
        prop_assert_eq!(checksum(kind, &parts), checksum_bytewise(kind, &parts));
    }

    /// The reader's checksum of a call record is the writer's, for a fixed part followed by
    /// texts of any length.
    #[test]
    fn the_readers_call_checksum_is_the_writers(
        bytes in proptest::collection::vec(any::<u8>(), CALL_FIXED..CALL_FIXED + 300),
    ) {
        prop_assert_eq!(call_checksum(&bytes), checksum(KIND_CALL, &[&bytes]));
        prop_assert_eq!(call_checksum(&bytes), checksum_bytewise(KIND_CALL, &[&bytes]));
    }
}

/// Records whose payload is just under, exactly, and just over one slot's (120 bytes: the
/// one-pass writer takes the first two, the slot-by-slot writer the others) read back exactly,
/// take the slots they should, and a flipped last byte makes such a record torn.
#[test]
fn records_at_the_one_slot_boundary_round_trip_and_are_checked_to_their_last_byte() {
    for total in CALL_FIXED..=CALL_FIXED + 60 {
        let extra = total - CALL_FIXED;
        // The text split between test id, host and thread name in every way around the edge.
        for thread_len in [0, extra.min(MAX_THREAD_NAME)] {
            for host_len in [0, (extra - thread_len) / 2, extra - thread_len] {
                let test_len = extra - thread_len - host_len;
                let mut mem = Mem::new(16, 16);
                let log = mem.log();
                let (test, host, thread) = (
                    vec![b't'; test_len],
                    vec![b'h'; host_len],
                    vec![b'n'; thread_len],
                );
                log.append_call(&a_call(), &test, &host, &thread)
                    .unwrap()
                    .finish(-5, 77);
                log.append_process(&a_process(), &vec![b'e'; extra], b"")
                    .unwrap();
                let slots = if total <= PAYLOAD_PER_SLOT { 1 } else { 2 };
                let process_slots = slots_for(PROCESS_FIXED + extra) as u64;
                assert_eq!(log.cursor(), slots + process_slots, "{total}");
                let d = mem.decode();
                assert_eq!((d.records.len(), d.torn), (2, 0), "{total}");
                let Record::Call(c) = &d.records[0] else {
                    panic!("not a call")
                };
                assert_eq!(
                    (
                        &c.call,
                        c.test.as_deref(),
                        &c.host[..],
                        &c.thread[..],
                        c.result,
                        c.blocked_ns
                    ),
                    (&a_call(), Some(&test[..]), &host[..], &thread[..], -5, 77),
                    "{total}"
                );
                let Record::Process(p) = &d.records[1] else {
                    panic!("not a process")
                };
                assert_eq!(p.exe.len(), extra, "{total}");
                // The call's last payload byte, flipped: torn, not another record.
                let last =
                    HEADER_LEN + TAG_LEN + total - 1 + (total - 1) / PAYLOAD_PER_SLOT * TAG_LEN;
                mem.bytes()[last] ^= 0x40;
                let d = mem.decode();
                assert_eq!((d.records.len(), d.torn), (1, 1), "{total}");
            }
        }
    }
}

/// Many threads appending records of one and two slots (around the boundary) at once, while a
/// reader decodes the log as it grows: every record read back whole, none torn, and the part a
/// reader found settled never has a torn record in it.
#[test]
fn concurrent_writers_and_a_reader_at_the_one_slot_boundary_lose_nothing() {
    const THREADS: usize = 8;
    const EACH: usize = 1500;
    let capacity = (THREADS * EACH * 2) as u64 + 64;
    let mut mem = Mem::new(capacity, capacity);
    let done = core::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let mem = &*mem;
        let done = &done;
        s.spawn(move || {
            let len = mem.mapper.len;
            let mut copy = vec![0u8; len];
            while !done.load(Ordering::Acquire) {
                // A snapshot, word by word, as a reader of the shared file would see it.
                for (i, w) in copy.chunks_exact_mut(8).enumerate() {
                    // SAFETY: inside the buffer; an aligned word, read atomically.
                    let v = unsafe { &*mem.mapper.base.add(i * 8).cast::<AtomicU64>() }
                        .load(Ordering::Acquire);
                    w.copy_from_slice(&v.to_ne_bytes());
                }
                let (_, settled) = decode_settled(&copy[..used_len(&copy).unwrap()]).unwrap();
                let end = HEADER_LEN + settled.slots as usize * SLOT_LEN;
                let mut prefix = copy[..end].to_vec();
                // Only the settled slots: a header whose cursor ends there.
                prefix[OFF_CURSOR..OFF_CURSOR + 8].copy_from_slice(&settled.slots.to_ne_bytes());
                let d = decode(&prefix).unwrap();
                assert_eq!((d.records.len(), d.torn), (settled.records, 0));
            }
        });
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let log = mem.log();
                    for i in 0..EACH {
                        // Payloads of 118 to 123 bytes.
                        let test = vec![b'a' + (t as u8); 46 + i % 6];
                        let mut call = a_call();
                        call.tid = t as u32;
                        call.time_ns = i as u64;
                        log.append_call(&call, &test, b"", b"")
                            .unwrap()
                            .finish(0, 1);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
    });
    let d = mem.decode();
    assert_eq!((d.records.len(), d.torn, d.dropped), (THREADS * EACH, 0, 0));
    let mut seen = vec![vec![false; EACH]; THREADS];
    for r in &d.records {
        let Record::Call(c) = r else { panic!() };
        let (t, i) = (c.call.tid as usize, c.call.time_ns as usize);
        assert_eq!(
            c.test.as_deref(),
            Some(&vec![b'a' + t as u8; 46 + i % 6][..])
        );
        assert!(!seen[t][i]);
        seen[t][i] = true;
    }
}

/// The one-slot call writer (fixed part stored and summed a word at a time) leaves the same
/// bytes as the general writer, for every split of texts that fits in one slot.
#[test]
fn one_slot_calls_match_the_general_path() {
    for extra in 0..=PAYLOAD_PER_SLOT - CALL_FIXED {
        for thread_len in [0, extra.min(MAX_THREAD_NAME)] {
            for host_len in [0, (extra - thread_len) / 2, extra - thread_len] {
                let test_len = extra - thread_len - host_len;
                let (test, host, thread) = (
                    vec![b't'; test_len],
                    vec![b'h'; host_len],
                    vec![b'n'; thread_len],
                );
                let mut fast = Mem::new(16, 16);
                fast.log()
                    .append_call(&a_call(), &test, &host, &thread)
                    .unwrap();
                let mut general = Mem::new(16, 16);
                let fixed = a_call().encode(test_len, host_len, thread_len);
                general
                    .log()
                    .append_until(KIND_CALL, &[&fixed, &test, &host, &thread], Step::Committed)
                    .unwrap();
                assert_eq!(
                    fast.bytes(),
                    general.bytes(),
                    "{test_len} {host_len} {thread_len}"
                );
            }
        }
    }
}

/// A storm: runs of one call repeated (its time, result and blocked time varied, some voided),
/// calls mostly of one slot, with other records and torn writers between the runs.
fn storm() -> impl Strategy<Value = Vec<Op>> {
    // Calls that differ from one base call in one field each: calls alike but for one field
    // follow one another.
    let base = (
        call_strategy(),
        proptest::option::of(short_text()),
        short_text(),
        short_text(),
    );
    let variant = (0u8..16, any::<u64>(), short_text());
    let kind = (
        base,
        proptest::collection::vec(variant, 1..8),
        proptest::collection::vec(op(), 0..2),
    )
        .prop_map(|((call, test, host, thread), variants, others)| {
            let mut kinds: Vec<Op> = variants
                .into_iter()
                .map(|(field, v, text)| {
                    let (mut call, mut test, mut host, mut thread) =
                        (call, test.clone(), host.clone(), thread.clone());
                    match field {
                        0 => call.pid = v as u32,
                        1 => call.tid = v as u32,
                        2 => call.dest.ip[v as usize % 16] ^= 1 + (v >> 8) as u8 % 255,
                        3 => call.dest.port = v as u16,
                        4 => call.transport = transport_from(v as u8 % 3).unwrap(),
                        5 => call.action = action_from(v as u8 % 3).unwrap(),
                        6 => call.phase = phase_from(v as u8 % 4).unwrap(),
                        7 => call.source = Source::try_from(1 + v as u8 % 2).unwrap(),
                        8 => call.syscall = Syscall::try_from(1 + v as u8 % 5).unwrap(),
                        9 => call.category = v as u16,
                        10 => call.rule = v as u16,
                        11 => call.deny_errno = v as i32,
                        12 => test = Some(text),
                        13 => test = None,
                        14 => host = text,
                        _ => thread = text,
                    }
                    Op::Call {
                        call,
                        test,
                        host,
                        thread,
                        result: None,
                        blocked: None,
                    }
                })
                .collect();
            kinds.extend(others);
            kinds
        });
    let run = (
        0usize..16,
        1usize..12,
        any::<u64>(),
        any::<i32>(),
        any::<u64>(),
    );
    (kind, proptest::collection::vec(run, 0..40)).prop_map(|(kinds, runs)| {
        let mut ops = Vec::new();
        for (k, n, t, r, b) in runs {
            for j in 0..n {
                ops.push(match &kinds[k % kinds.len()] {
                    Op::Call {
                        call,
                        test,
                        host,
                        thread,
                        ..
                    } => Op::Call {
                        call: Call {
                            time_ns: t.wrapping_add(j as u64),
                            ..*call
                        },
                        test: test.clone(),
                        host: host.clone(),
                        thread: thread.clone(),
                        result: [Some(0), Some(-111), None, Some(RESULT_NOT_A_CALL), Some(r)]
                            [(r as usize).wrapping_add(j) % 5],
                        blocked: [None, Some(0), Some(b.wrapping_add(j as u64))][j % 3],
                    },
                    other => other.clone(),
                });
            }
        }
        ops
    })
}

/// Texts that fit a one-slot call, from a few values (so that two calls often share one).
fn short_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"a".to_vec()),
        Just(b"b".to_vec()),
        Just(vec![b'c'; 9]),
        Just(vec![b'd'; 15]),
        Just(vec![b'c'; 16]),
    ]
}

/// Reads the log in pieces of `piece` slots with [`Stream::feed_hinted`] (`repeats`: reading
/// a storm's repeated calls the cheap way, or every call in full): the records with their
/// places and hints, and the torn count.
fn hinted(bytes: &[u8], piece: usize, repeats: bool) -> (Vec<(u64, Record, Hint)>, u64) {
    let mut out = Vec::new();
    let s = in_pieces_reading(bytes, piece, repeats, |s, slots| {
        s.feed_hinted(slots, |at, r, hint| out.push((at, r.to_record(), hint)))
    });
    (out, s.finish().torn)
}

/// Skims the log in pieces of `piece` slots (`repeats`: as [`hinted`]): the records picked,
/// with their places, and the torn count.
fn skimmed(
    bytes: &[u8],
    piece: usize,
    repeats: bool,
    want: impl Fn(&CallHead) -> bool + Copy,
) -> (Vec<(u64, Record)>, u64) {
    let mut out = Vec::new();
    let s = in_pieces_reading(bytes, piece, repeats, |s, slots| {
        s.skim(slots, want, |at, r| out.push((at, r.to_record())))
    });
    (out, s.finish().torn)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A storm's repeated calls read the cheap way are the calls the writer wrote (voided ones
    /// left out), and, damaged or not, what reading every call in full finds: the same
    /// records, places and torn count; a skim picks the same. A call hinted as a repeat is
    /// the last call of its lane handed out before it but for its time, result and blocked
    /// time.
    #[test]
    fn a_storm_reads_the_same_repeated_calls_both_ways(
        ops in storm(),
        piece in MAX_SLOTS..MAX_SLOTS + 300,
        flips in proptest::collection::vec((any::<u32>(), 1u8..=255), 0..4),
        odd_ports in any::<bool>(),
    ) {
        let mut mem = Mem::new(4096, 4096);
        let want = play(&mem, &ops);
        let (cheap, _) = hinted(mem.bytes(), piece, true);
        let records: Vec<Record> = cheap.iter().map(|(_, r, _)| r.clone()).collect();
        prop_assert_eq!(&records, &want.records);
        damage(&mut mem, &flips);
        let (cheap, torn) = hinted(mem.bytes(), piece, true);
        let (full, full_torn) = hinted(mem.bytes(), piece, false);
        let unhinted: Vec<(u64, Record)> =
            cheap.iter().map(|(at, r, _)| (*at, r.clone())).collect();
        let full: Vec<(u64, Record)> = full.into_iter().map(|(at, r, _)| (at, r)).collect();
        prop_assert_eq!(&unhinted, &full);
        prop_assert_eq!(torn, full_torn);
        let mut last_call: [Option<&CallRecord>; LANES] = [None; LANES];
        for (_, r, hint) in &cheap {
            if let Record::Call(c) = r {
                let lane = hint.lane as usize;
                prop_assert_eq!(lane, lane_of(c.call.dest.port));
                if hint.repeats {
                    let before = last_call[lane].expect("a repeat follows a call of its lane");
                    let as_before = CallRecord {
                        call: Call { time_ns: before.call.time_ns, ..c.call },
                        result: before.result,
                        blocked_ns: before.blocked_ns,
                        ..c.clone()
                    };
                    prop_assert_eq!(&as_before, before);
                }
                last_call[lane] = Some(c);
            }
        }
        // A skim's memo of heads and its runs passed over pick what asking every head picks.
        let want = move |h: &CallHead| (h.port % 2 == 1) == odd_ports;
        prop_assert_eq!(
            skimmed(mem.bytes(), piece, true, want),
            skimmed(mem.bytes(), piece, false, want)
        );
    }
}

proptest! {
    /// The repeated call's checksum, its words read in place, is the checksum.
    #[test]
    fn a_checksum_read_in_place_is_the_checksum(
        bytes in proptest::collection::vec(any::<u8>(), PAYLOAD_PER_SLOT),
        len in CALL_FIXED..=PAYLOAD_PER_SLOT,
    ) {
        let p: &[u8; PAYLOAD_PER_SLOT] = bytes.as_slice().try_into().unwrap();
        prop_assert_eq!(repeat::checksum(p, len), call_checksum(&p[..len]));
    }
}

/// Calls to two popular ports in turn (a test talking to its database and its web server)
/// repeat in their lanes: the lane is the port hashed, not the port modulo the lanes (which
/// put 5432, 8080, 80, 8000, 3000 and 9200 all in lane 0).
#[test]
fn a_storm_between_two_popular_ports_repeats_in_both_lanes() {
    for (a, b) in [
        (5432, 8080),
        (80, 8000),
        (3000, 5432),
        (443, 6379),
        (9200, 8080),
    ] {
        assert_ne!(lane_of(a), lane_of(b), "{a} {b}");
        let ops: Vec<Op> = (0..20)
            .map(|j| Op::Call {
                call: Call {
                    time_ns: j,
                    dest: Dest::from_v4([127, 0, 0, 1], [a, b][j as usize % 2]),
                    ..a_call()
                },
                test: Some(b"t::a".to_vec()),
                host: vec![],
                thread: vec![],
                result: Some(-111),
                blocked: Some(j),
            })
            .collect();
        let mut mem = Mem::new(4096, 4096);
        play(&mem, &ops);
        let (read, torn) = hinted(mem.bytes(), MAX_SLOTS + 100, true);
        assert_eq!((read.len(), torn), (20, 0));
        let repeats = read.iter().filter(|(_, _, hint)| hint.repeats).count();
        assert_eq!(repeats, 18, "{a} {b}");
    }
}

/// The one-slot entry point writes what `append_call` writes when the record fits in one slot,
/// and, one byte over, nothing at all (the cursor unmoved): its caller then appends it the
/// general way.
#[test]
fn one_slot_entry_matches_append_call_and_declines_what_does_not_fit() {
    for extra in [0, 1, 17, PAYLOAD_PER_SLOT - CALL_FIXED] {
        let (test, thread) = (vec![b't'; extra - extra.min(5)], vec![b'n'; extra.min(5)]);
        let mut one = Mem::new(16, 16);
        let cell = one
            .log()
            .append_call_one_slot(&a_call(), &test, &[], &thread)
            .expect("fits in one slot")
            .unwrap();
        cell.finish(111, 42);
        let mut general = Mem::new(16, 16);
        general
            .log()
            .append_call(&a_call(), &test, &[], &thread)
            .unwrap()
            .finish(111, 42);
        assert_eq!(one.bytes(), general.bytes(), "{extra}");
    }
    let over = Mem::new(16, 16);
    let test = vec![b't'; PAYLOAD_PER_SLOT - CALL_FIXED + 1];
    assert!(
        over.log()
            .append_call_one_slot(&a_call(), &test, &[], &[])
            .is_none()
    );
    assert_eq!(over.log().cursor(), 0);
}
