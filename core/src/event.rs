//! The run's event log: one file that every intercepting process appends records to.
//!
//! The launcher creates `events.log` in the run directory: a 4 KiB header followed by a large,
//! sparse array of 128-byte slots. A writer (the shim in any process of the tree, or the seccomp
//! supervisor) maps the header on its own (one page) and the slots in windows of
//! [`WINDOW_SLOTS`] slots, each mapped `MAP_SHARED` the first time one of the writer's records
//! falls in it ([`Windows`], [`Mapper`]), so a process's address space grows only with the parts
//! of the log its own records landed in. A writer reserves consecutive slots by advancing the
//! header's cursor (one compare-and-swap), fills them and commits by storing the first slot's
//! tag last. That costs no system call once the window is mapped, needs no lock, and survives
//! the writer: the kernel keeps what a process wrote to a shared mapping when it `_exit`s,
//! crashes or is killed, and the mapping does not depend on any file descriptor the program
//! might close or `dup2` over.
//!
//! Every slot starts with a tag (`0xA5`, kind, slot count, slot index). A writer tags its first
//! slot "reserved" right after reserving, then writes the payload, then the other slots' tags,
//! then the real first tag, which carries a checksum of the record. The reader walks the slots
//! below the cursor:
//! - a record whose first tag still says "reserved" (its writer died, or is still writing) is
//!   one torn record; its slots are skipped;
//! - a run of untagged slots (a writer died between reserving and its first store) is one torn
//!   record (two such writers side by side count once);
//! - a record that does not check out (bad tags, unknown kind or field value, wrong checksum:
//!   something wrote over the shared mapping) is torn too, never misread.
//!
//! Records are never written past the slots the launcher allocated (see [`Log::set_allocated`])
//! or past the capacity: a writer whose record does not fit counts it as dropped in the header
//! instead, without reserving anything. A writer that cannot map the window its record falls in
//! reserves nothing either and says so ([`NotWritten::Unmapped`]); the caller counts the call:
//! as dropped when it still decided the call (it was enforced, only its record is missing), or
//! as [`Unobserved`] when it hands the call on undecided. The report says how many of each.

use crate::addr::{Dest, Transport};
use crate::policy::Action;
use crate::test_id::Phase;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

pub const MAGIC: [u8; 8] = *b"NTRAPLOG";
/// 2: windowed writers (reserved head tags, checksums, results guarded by their complement).
/// 3: a call's time blocked in the real call ([`CallRecord::blocked_ns`]), after its result;
/// a word-wise checksum; voided records ([`RESULT_NOT_A_CALL`]).
pub const VERSION: u32 = 3;
pub const HEADER_LEN: usize = 4096;
pub const SLOT_LEN: usize = 128;
const TAG_LEN: usize = 8;
const PAYLOAD_PER_SLOT: usize = SLOT_LEN - TAG_LEN;
/// The most slots one record takes.
pub const MAX_SLOTS: usize = 255;
/// Test ids and host names longer than this are cut (the id is still unique in practice).
pub const MAX_TEXT: usize = 4096;
/// Default log capacity in slots (1 GiB of sparse file; about 8 million calls).
pub const DEFAULT_CAPACITY: u64 = 1 << 23;
/// Slots per window a writer maps (1 MiB). A window maps [`MAX_SLOTS`] more slots beyond its
/// own, so a record that starts in it never straddles two mappings.
pub const WINDOW_SLOTS: u64 = 8192;
/// Windows in a [`Windows`] table: enough for [`DEFAULT_CAPACITY`].
pub const MAX_WINDOWS: usize = (DEFAULT_CAPACITY / WINDOW_SLOTS) as usize;
/// Longest run directory path the shim can build file names under; the launcher refuses a
/// longer one.
pub const RUN_DIR_MAX_LEN: usize = 480;
/// The run directory's file of calls a shim could not count in the header: one [`Unobserved`]
/// byte per call, appended (`O_APPEND`) without any mapping.
pub const UNOBSERVED_FILE: &str = "unobserved";

const OFF_VERSION: usize = 8;
const OFF_SLOT_LEN: usize = 12;
const OFF_CAPACITY: usize = 16;
const OFF_CURSOR: usize = 24;
const OFF_DROPPED: usize = 32;
/// Slots backed by allocated disk blocks (see [`Log::set_allocated`]). Writing a page of a
/// sparse shared mapping whose filesystem is full raises SIGBUS, so writers never go past it.
const OFF_ALLOCATED: usize = 40;
/// Per-cause counters of calls an engine let pass without deciding or recording them
/// ([`Unobserved`]): `CAUSES` u64s.
const OFF_UNOBSERVED: usize = 64;
/// Threads inside the resolver (`getaddrinfo`), by thread id, [`RESOLVING_SLOTS`] u32s: their
/// UDP connects are how glibc sorts a lookup's results (RFC 6724: a connect to each result,
/// nothing sent), not calls. The shim marks its threads; both engines read the marks.
const OFF_RESOLVING: usize = 512;
/// Threads the resolver table holds at once; a thread that finds no free slot is not marked
/// (its sorting connects are then counted as calls, as they were before the table).
pub const RESOLVING_SLOTS: usize = 256;

const KIND_CALL: u8 = 1;
const KIND_PROCESS: u8 = 2;
/// First tag of a record whose writer reserved its slots and has not committed it (yet).
const KIND_RESERVED: u8 = 3;
const TAG_MARK: u32 = 0xA5;

/// Result value of a call whose real system call has not returned (yet).
pub const RESULT_PENDING: i32 = i32::MIN;
/// Result value of a call let through by an engine that does not see its outcome (seccomp).
pub const RESULT_UNKNOWN: i32 = i32::MIN + 1;
/// Result value of a record that turned out not to be a call: the shim records a stream
/// socket's connect from the address alone (no system call to learn the socket's domain) and,
/// when the kernel then refuses the address for that socket (a family it does not take), voids
/// the record with this value. Readers skip such records.
pub const RESULT_NOT_A_CALL: i32 = i32::MIN + 2;

/// Which system call made the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Syscall {
    Connect = 1,
    Sendto = 2,
    Sendmsg = 3,
    Sendmmsg = 4,
    /// Not a call: a process set up io_uring, whose operations bypass interception.
    IoUringSetup = 5,
    /// A name lookup (`getaddrinfo`, `gethostbyname`…, or a DNS query the supervisor read) that
    /// would leave the machine: `host` is the name; `dest` the resolver when known, else
    /// port 53 with a zero address. One lookup is one record, however many datagrams it takes.
    /// The shim's records: result 0, or the lookup's `EAI_*` code (negative; `gethostbyname*`
    /// failures as their `EAI_*` equivalents); `deny_errno` the `EAI_*` code of a denied one.
    ///
    /// Both engines may see one lookup (engine `auto`: the shim at the API, the supervisor at
    /// the DNS datagrams glibc sends for it, from the same thread). The shim's record covers
    /// those datagrams: the report drops a supervisor Lookup record when the latest shim
    /// Lookup record of the same process and thread made before it is for the same name, or
    /// for a name it extends with a search domain (`nettrap::report::dedup_lookups`). The
    /// supervisor records the DNS datagrams of every process as usual; it need not know.
    Lookup = 6,
    /// Not a call: a process of the run listens on `dest` (so calls to it are to the suite's
    /// own server, `in-suite`).
    Listen = 7,
}

impl TryFrom<u8> for Syscall {
    type Error = u8;
    /// The system call a log byte names; any other value is an error (a corrupt record).
    fn try_from(v: u8) -> Result<Syscall, u8> {
        Ok(match v {
            1 => Syscall::Connect,
            2 => Syscall::Sendto,
            3 => Syscall::Sendmsg,
            4 => Syscall::Sendmmsg,
            5 => Syscall::IoUringSetup,
            6 => Syscall::Lookup,
            7 => Syscall::Listen,
            _ => return Err(v),
        })
    }
}

impl Syscall {
    pub fn name(self) -> &'static str {
        match self {
            Syscall::Connect => "connect",
            Syscall::Sendto => "sendto",
            Syscall::Sendmsg => "sendmsg",
            Syscall::Sendmmsg => "sendmmsg",
            Syscall::IoUringSetup => "io_uring_setup",
            Syscall::Lookup => "lookup",
            Syscall::Listen => "listen",
        }
    }
}

/// Why an engine let a call pass without deciding or recording it. Each is counted (in the log
/// header, or, when a shim could not even map that, one byte per call in the run directory's
/// `unobserved` file), reported as `lost.unobserved`, and fails an enforce run unless another
/// engine saw the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Unobserved {
    /// The shim could not map the run's files (a memory limit, no descriptor left, files
    /// missing or of another version), so it could not record the call. With the seccomp
    /// supervisor beside it (`auto`), it passed the call to the kernel undecided and unmarked,
    /// where the supervisor decides and records it. Alone (`preload`), it passed the call
    /// undecided when it could not map the policy, and decided it (a denial still fails) but
    /// recorded nothing when it could map the policy but not the log's header.
    ShimUnmapped = 1,
    /// The supervisor could not read the caller's memory (the destination), and let the call go.
    SupervisorUnreadable = 2,
    /// The shim could not read where an IPv4/IPv6 socket connects (the kernel refused to copy
    /// the address for another reason than a bad pointer: a sandbox forbidding
    /// process_vm_readv), and passed the call to the kernel undecided and unmarked (under
    /// `auto`, the supervisor sees it).
    ShimUnreadable = 3,
}

/// The last resort for counting an unobserved call, when a shim cannot even open a file (no
/// descriptor left): the real-time signal `UNOBSERVED_SIGNAL_BASE - cause` sent to the launcher
/// (pid in `NETTRAP_LAUNCHER_PID`), which counts each one it receives (real-time signals queue,
/// one per call). 64 is Linux's SIGRTMAX on x86_64.
pub const UNOBSERVED_SIGNAL_BASE: i32 = 64;

/// Slots for [`Unobserved`] causes, indexed by their value (0 unused; room for new causes).
pub const CAUSES: usize = 8;

impl Unobserved {
    pub const ALL: [Unobserved; 3] = [
        Unobserved::ShimUnmapped,
        Unobserved::SupervisorUnreadable,
        Unobserved::ShimUnreadable,
    ];

    pub fn from_u8(v: u8) -> Option<Unobserved> {
        Unobserved::ALL.into_iter().find(|c| *c as u8 == v)
    }

    /// The name the report gives the cause.
    pub fn name(self) -> &'static str {
        match self {
            Unobserved::ShimUnmapped => "shim_unmapped",
            Unobserved::SupervisorUnreadable => "supervisor_unreadable",
            Unobserved::ShimUnreadable => "shim_unreadable",
        }
    }

    /// Was the call passed on to the kernel where, under `auto`, the supervisor sees it?
    pub fn seen_by_supervisor_under_auto(self) -> bool {
        matches!(self, Unobserved::ShimUnmapped | Unobserved::ShimUnreadable)
    }
}

/// Which engine saw the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Source {
    Shim = 1,
    Seccomp = 2,
}

impl TryFrom<u8> for Source {
    type Error = u8;
    fn try_from(v: u8) -> Result<Source, u8> {
        match v {
            1 => Ok(Source::Shim),
            2 => Ok(Source::Seccomp),
            _ => Err(v),
        }
    }
}

/// Strict decoders of the enums other modules own: a byte their lenient `from_u8` would turn
/// into a default is rejected (the record is corrupt).
#[cfg(feature = "alloc")]
fn transport_from(v: u8) -> Option<Transport> {
    let t = Transport::from_u8(v);
    (t as u8 == v).then_some(t)
}
#[cfg(feature = "alloc")]
fn action_from(v: u8) -> Option<Action> {
    let a = Action::from_u8(v);
    (a as u8 == v).then_some(a)
}
#[cfg(feature = "alloc")]
fn phase_from(v: u8) -> Option<Phase> {
    let p = Phase::from_u8(v);
    (p as u8 == v).then_some(p)
}

/// The fixed part of a call record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub pid: u32,
    /// Kernel thread id of the caller.
    pub tid: u32,
    /// When the call was made: CLOCK_MONOTONIC in nanoseconds, the clock of every event log
    /// and timeline writer, so calls and a runner's test events can be joined by time.
    pub time_ns: u64,
    pub dest: Dest,
    pub transport: Transport,
    pub action: Action,
    pub phase: Phase,
    pub source: Source,
    pub syscall: Syscall,
    pub category: u16,
    pub rule: u16,
    /// errno the call failed with when denied.
    pub deny_errno: i32,
    /// Was the call made inside a test (even one with an empty id)?
    pub has_test: bool,
}

/// Longest thread name a record carries (the kernel keeps 15 bytes of a name).
pub const MAX_THREAD_NAME: usize = 16;

const CALL_FIXED: usize = 72;
/// The result field of a call's payload: the result (i32) and its bitwise complement, stored
/// together as one u64 so that a later update stays atomic and a damaged value shows. Not
/// covered by the checksum (it is written after the commit).
const CALL_RESULT: usize = 48;
/// The blocked-time field of a call's payload: how long the real call (or lookup) blocked, in
/// nanoseconds (48 bits, saturated at about 78 hours) under a 16-bit check of those bits, as
/// one u64 stored once after the call returns. 0 = not measured: the writer did not make the
/// real call (a denial, an engine that lets the kernel continue it), or the process ended
/// inside it. Not covered by the checksum (written after the commit); a value whose check
/// fails makes the record torn, as a damaged result does.
const CALL_BLOCKED: usize = 64;
const BLOCKED_MAX: u64 = (1 << 48) - 1;

/// The result field's value for `result`.
fn guarded(result: i32) -> u64 {
    (result as u32 as u64) | ((!(result as u32) as u64) << 32)
}

/// The 16-bit check over a blocked time's 48 bits.
fn blocked_check(ns: u64) -> u64 {
    !(ns ^ (ns >> 16) ^ (ns >> 32)) & 0xffff
}

/// The blocked-time field's value for `ns` (a measured 0 is stored as 1 ns: 0 means unknown).
fn blocked_word(ns: u64) -> u64 {
    let ns = ns.clamp(1, BLOCKED_MAX);
    ns | blocked_check(ns) << 48
}

/// The nanoseconds a blocked-time field holds (0: not measured), or None when damaged.
#[cfg_attr(not(feature = "alloc"), allow(dead_code))]
fn blocked_of(word: u64) -> Option<u64> {
    let ns = word & BLOCKED_MAX;
    match word {
        0 => Some(0),
        _ if ns != 0 && word >> 48 == blocked_check(ns) => Some(ns),
        _ => None,
    }
}

impl Call {
    /// The fixed part's bytes ([`Call::words`], each stored little-endian).
    fn encode(&self, test_len: usize, host_len: usize, thread_len: usize) -> [u8; CALL_FIXED] {
        let mut b = [0u8; CALL_FIXED];
        for (i, w) in self
            .words(test_len, host_len, thread_len)
            .iter()
            .enumerate()
        {
            b[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    /// The fixed part as the nine words the checksum reads (little-endian words of the
    /// record's bytes; multi-byte fields are in the writer's byte order):
    /// - 0..8: pid, tid (u32 each); 8..16: time_ns; 16..32: dest.ip; 32..34: dest.port;
    /// - 34: transport, 35: action, 36: phase, 37: source, 38: syscall (u8 each), 39: 0;
    /// - 40..42: category, 42..44: rule (u16 each), 44..48: deny_errno (i32);
    /// - 48..56: the result field ([`CALL_RESULT`]), pending;
    /// - 56..58: test length, 58..60: host length (u16 each), 60: has_test, 61: thread name
    ///   length (the thread's name is a third text after `test` and `host`), 62..64: 0;
    /// - 64..72: the blocked-time field ([`CALL_BLOCKED`]), 0: not measured (yet).
    ///
    /// Computed in registers, so the one-slot writer stores and sums each word where it goes
    /// (no array built and copied).
    #[inline(always)]
    fn words(&self, test_len: usize, host_len: usize, thread_len: usize) -> [u64; CALL_FIXED / 8] {
        // A field's bytes in the writer's order, read as the little-endian word's low bits.
        let b16 = |v: u16| u64::from(u16::from_le_bytes(v.to_ne_bytes()));
        let b32 = |v: u32| u64::from(u32::from_le_bytes(v.to_ne_bytes()));
        let b64 = |v: u64| u64::from_le_bytes(v.to_ne_bytes());
        let mut ip_lo = [0u8; 8];
        let mut ip_hi = [0u8; 8];
        ip_lo.copy_from_slice(&self.dest.ip[..8]);
        ip_hi.copy_from_slice(&self.dest.ip[8..]);
        [
            b32(self.pid) | b32(self.tid) << 32,
            b64(self.time_ns),
            u64::from_le_bytes(ip_lo),
            u64::from_le_bytes(ip_hi),
            b16(self.dest.port)
                | u64::from(self.transport as u8) << 16
                | u64::from(self.action as u8) << 24
                | u64::from(self.phase as u8) << 32
                | u64::from(self.source as u8) << 40
                | u64::from(self.syscall as u8) << 48,
            b16(self.category) | b16(self.rule) << 16 | b32(self.deny_errno as u32) << 32,
            b64(guarded(RESULT_PENDING)),
            b16(test_len as u16)
                | b16(host_len as u16) << 16
                | u64::from(self.has_test as u8) << 32
                | u64::from(thread_len as u8) << 40,
            0,
        ]
    }
}

/// Offset of the result field inside slot 0 of a call record (8-aligned).
const CALL_RESULT_OFFSET: usize = TAG_LEN + CALL_RESULT;

/// The fixed part of a process record: who made the calls that follow with this pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub time_ns: u64,
    pub source: Source,
}

const PROCESS_FIXED: usize = 24;

impl Process {
    fn encode(&self, exe_len: usize, cmdline_len: usize) -> [u8; PROCESS_FIXED] {
        let mut b = [0u8; PROCESS_FIXED];
        b[0..4].copy_from_slice(&self.pid.to_ne_bytes());
        b[4..8].copy_from_slice(&self.ppid.to_ne_bytes());
        b[8..16].copy_from_slice(&self.time_ns.to_ne_bytes());
        b[16..18].copy_from_slice(&(exe_len as u16).to_ne_bytes());
        b[18..20].copy_from_slice(&(cmdline_len as u16).to_ne_bytes());
        b[20] = self.source as u8;
        b
    }
}

// The largest records fit: texts are cut before they are written, never the record.
const _: () = assert!(CALL_FIXED + 2 * MAX_TEXT + MAX_THREAD_NAME <= MAX_SLOTS * PAYLOAD_PER_SLOT);
const _: () = assert!(PROCESS_FIXED + 2 * MAX_TEXT <= MAX_SLOTS * PAYLOAD_PER_SLOT);

/// The slots a record of `total` payload bytes takes.
fn slots_for(total: usize) -> usize {
    total.div_ceil(PAYLOAD_PER_SLOT).max(1)
}

fn tag(kind: u8, n: usize, idx: usize) -> u32 {
    (TAG_MARK << 24) | (kind as u32) << 16 | (n as u32) << 8 | idx as u32
}

/// A 64-bit multiply-xorshift hash over a record's payload (`parts`, concatenated, read as
/// little-endian 8-byte words, the last one zero-padded), seeded with its kind, folded to 32
/// bits; a call's result and blocked-time words are left out (they change after the commit).
/// Word-wise: the writer hashes every record it appends, so this is on the connect hot path.
fn checksum(kind: u8, parts: &[&[u8]]) -> u32 {
    if let [bytes] = parts {
        return checksum_bytes(kind, bytes);
    }
    const _: () = assert!(CALL_RESULT.is_multiple_of(8) && CALL_BLOCKED.is_multiple_of(8));
    // The words left out, by position (none outside a call record).
    let (skip_a, skip_b) = if kind == KIND_CALL {
        (CALL_RESULT, CALL_BLOCKED)
    } else {
        (usize::MAX, usize::MAX)
    };
    let mut h = CHECKSUM_SEED ^ kind as u64;
    let mut mix = |pos: usize, w: u64| {
        if pos != skip_a && pos != skip_b {
            h = checksum_mix(h, w);
        }
    };
    // A word begun by the end of one part and finished by the next (bytes beyond `fill` are
    // zero).
    let (mut word, mut fill, mut pos) = (0u64, 0usize, 0usize);
    for part in parts {
        let mut rest = *part;
        while fill > 0 && !rest.is_empty() {
            word |= u64::from(rest[0]) << (8 * fill);
            rest = &rest[1..];
            fill += 1;
            if fill == 8 {
                mix(pos, word);
                pos += 8;
                (word, fill) = (0, 0);
            }
        }
        if fill > 0 {
            // This part ended inside the pending word.
            continue;
        }
        let mut chunks = rest.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            mix(pos, u64::from_le_bytes(w));
            pos += 8;
        }
        for (i, &b) in chunks.remainder().iter().enumerate() {
            word |= u64::from(b) << (8 * i);
        }
        fill = chunks.remainder().len();
    }
    if fill > 0 {
        mix(pos, word);
    }
    checksum_fold(h)
}

/// [`checksum`] over one contiguous payload (a record as it lies in its slot): the same sum,
/// with no part boundaries to carry words across.
fn checksum_bytes(kind: u8, bytes: &[u8]) -> u32 {
    let call = kind == KIND_CALL;
    if !call {
        return checksum_fold(checksum_words(CHECKSUM_SEED ^ kind as u64, bytes));
    }
    if bytes.len() >= CALL_FIXED {
        return call_checksum(bytes);
    }
    // A call payload shorter than its fixed part (a corrupt record): the words left out found
    // by position.
    let mut h = CHECKSUM_SEED ^ kind as u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut pos = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        if !(call && (pos == CALL_RESULT || pos == CALL_BLOCKED)) {
            h = checksum_mix(h, u64::from_le_bytes(w));
        }
        pos += 8;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() && !(call && (pos == CALL_RESULT || pos == CALL_BLOCKED)) {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = checksum_mix(h, u64::from_le_bytes(w));
    }
    checksum_fold(h)
}

/// [`checksum`] of a call record's payload (`body`: the fixed part and its texts, at least
/// [`CALL_FIXED`] bytes), as the reader checks every call: the fixed part's words mixed
/// straight through, the two left out (result, blocked time) skipped by position, so the loop
/// tests no position. The same sum: the words left out lie inside the fixed part, whose
/// length is a whole number of words, so the texts start on a word boundary and none of their
/// words is left out.
#[inline]
fn call_checksum(body: &[u8]) -> u32 {
    const _: () = assert!(CALL_FIXED.is_multiple_of(8));
    const _: () = assert!(CALL_RESULT / 8 == 6 && CALL_BLOCKED / 8 == 8 && CALL_FIXED / 8 == 9);
    let (fixed, texts) = body.split_at(CALL_FIXED);
    let word = |k: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&fixed[8 * k..8 * k + 8]);
        u64::from_le_bytes(w)
    };
    let mut h = CHECKSUM_SEED ^ KIND_CALL as u64;
    for k in [0, 1, 2, 3, 4, 5, 7] {
        h = checksum_mix(h, word(k));
    }
    // Most calls have no text (no call out of line for them).
    if !texts.is_empty() {
        h = checksum_words(h, texts);
    }
    checksum_fold(h)
}

/// The checksum's starting value, before the record's kind is mixed in.
const CHECKSUM_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// One word of the checksum.
#[inline(always)]
fn checksum_mix(h: u64, w: u64) -> u64 {
    let h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    h ^ (h >> 29)
}

/// [`checksum_mix`] over `bytes` as little-endian words, the last one zero-padded (no word
/// left out: for bytes past a call record's fixed part).
fn checksum_words(mut h: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = checksum_mix(h, u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = checksum_mix(h, u64::from_le_bytes(w));
    }
    h
}

/// The checksum's 64-bit state folded to the 32 bits a record keeps.
#[inline(always)]
fn checksum_fold(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// Writes a fresh header into the first [`HEADER_LEN`] bytes of a new log file. Until the
/// launcher allocates blocks and says so ([`Log::set_allocated`]), `allocated` slots may be used.
pub fn header(capacity: u64, allocated: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&VERSION.to_ne_bytes());
    h[OFF_SLOT_LEN..OFF_SLOT_LEN + 4].copy_from_slice(&(SLOT_LEN as u32).to_ne_bytes());
    h[OFF_CAPACITY..OFF_CAPACITY + 8].copy_from_slice(&capacity.to_ne_bytes());
    h[OFF_ALLOCATED..OFF_ALLOCATED + 8].copy_from_slice(&allocated.min(capacity).to_ne_bytes());
    h
}

/// The size of a log file of `capacity` slots.
pub fn file_len(capacity: u64) -> u64 {
    HEADER_LEN as u64 + capacity * SLOT_LEN as u64
}

/// Maps parts of one log file into this process, for [`Windows`].
pub trait Mapper: Sync {
    /// Maps `len` bytes of the log file from byte `offset` (a multiple of 4096), shared and
    /// writable, or None when it cannot (a memory limit, no descriptor left, the file gone or
    /// shorter than `offset + len`).
    fn map(&self, offset: u64, len: usize) -> Option<NonNull<u8>>;

    /// Unmaps what [`Mapper::map`] returned.
    ///
    /// # Safety
    /// `base` and `len` come from one call of `map`, and nothing refers to that memory any more.
    unsafe fn unmap(&self, base: NonNull<u8>, len: usize);
}

/// The windows of a log's slots this process has mapped, one atomic pointer each: filled on
/// demand by whichever thread first needs a window (a thread that loses the race to publish its
/// mapping unmaps its own), and kept until the table is dropped (the shim's table is static and
/// never unmapped, so a record's memory stays valid in the process and its fork children).
/// Window `i` maps slots `[i*W, (i+1)*W + MAX_SLOTS)` (W = its window size), cut at the log's
/// capacity.
pub struct Windows {
    /// Slots per window; 0 for [`WINDOW_SLOTS`], which keeps a default table all zero bytes
    /// (the shim's static then takes no room in its file: `.bss`, not 8 KiB of `.data`).
    custom_slots: u64,
    table: [AtomicPtr<u8>; MAX_WINDOWS],
}

impl Default for Windows {
    fn default() -> Windows {
        Windows::new()
    }
}

impl Windows {
    pub const fn new() -> Windows {
        Windows {
            custom_slots: 0,
            table: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_WINDOWS],
        }
    }

    /// A table of windows of `slots` slots each: a multiple of 32, so that every window starts
    /// on a page of the file (4 KiB of slots); tests use small ones.
    pub const fn with_window_slots(slots: u64) -> Windows {
        assert!(slots > 0 && slots.is_multiple_of(32));
        Windows {
            custom_slots: slots,
            ..Windows::new()
        }
    }

    fn window_slots(&self) -> u64 {
        match self.custom_slots {
            0 => WINDOW_SLOTS,
            n => n,
        }
    }

    /// Slots the table can reach.
    fn reach(&self) -> u64 {
        self.window_slots() * MAX_WINDOWS as u64
    }

    /// (file offset, length) of window `i` of a log of `capacity` slots.
    fn extent(&self, i: usize, capacity: u64) -> (u64, usize) {
        let first = i as u64 * self.window_slots();
        let slots = (capacity.saturating_sub(first)).min(self.window_slots() + MAX_SLOTS as u64);
        (
            HEADER_LEN as u64 + first * SLOT_LEN as u64,
            slots as usize * SLOT_LEN,
        )
    }

    /// The base of window `i`, mapped now if it was not.
    #[inline(always)]
    fn get(&self, i: usize, capacity: u64, mapper: &dyn Mapper) -> Option<*mut u8> {
        let cell = self.table.get(i)?;
        let p = cell.load(Ordering::Acquire);
        if !p.is_null() {
            return Some(p);
        }
        self.map_window(i, cell, capacity, mapper)
    }

    /// [`Windows::get`] for a window not mapped yet, out of line.
    #[cold]
    #[inline(never)]
    fn map_window(
        &self,
        i: usize,
        cell: &AtomicPtr<u8>,
        capacity: u64,
        mapper: &dyn Mapper,
    ) -> Option<*mut u8> {
        let (offset, len) = self.extent(i, capacity);
        if len == 0 {
            return None;
        }
        let new = mapper.map(offset, len)?;
        match cell.compare_exchange(
            core::ptr::null_mut(),
            new.as_ptr(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Some(new.as_ptr()),
            Err(winner) => {
                // SAFETY: our own mapping, never published: nothing refers to it.
                unsafe { mapper.unmap(new, len) };
                Some(winner)
            }
        }
    }

    /// Windows mapped so far.
    pub fn mapped(&self) -> usize {
        self.table
            .iter()
            .filter(|p| !p.load(Ordering::Relaxed).is_null())
            .count()
    }

    /// Unmaps every window.
    ///
    /// # Safety
    /// Nothing uses a [`Log`] over this table or a [`ResultCell`] from one any more, and
    /// `capacity` and `mapper` are the ones the windows were mapped with.
    pub unsafe fn unmap_all(&self, capacity: u64, mapper: &dyn Mapper) {
        for (i, cell) in self.table.iter().enumerate() {
            let p = cell.swap(core::ptr::null_mut(), Ordering::AcqRel);
            if let Some(p) = NonNull::new(p) {
                // SAFETY: mapped by `get` with this extent; unused per the caller.
                unsafe { mapper.unmap(p, self.extent(i, capacity.min(self.reach())).1) };
            }
        }
    }
}

/// A writer on a log: its mapped header and its windows.
pub struct Log<'a> {
    header: *mut u8,
    capacity: u64,
    windows: &'a Windows,
    mapper: &'a dyn Mapper,
}

// SAFETY: all shared state in the mappings is reached through atomics (cursor, counters, tags,
// results) or through slots that one writer reserved for itself.
unsafe impl Send for Log<'_> {}
// SAFETY: as for Send: `&Log` only appends (atomics and self-reserved slots), never mutates
// shared bytes non-atomically.
unsafe impl Sync for Log<'_> {}

/// Why a record was not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotWritten {
    /// The log is full, or its blocks are not allocated: already counted as dropped.
    Full,
    /// The window the record falls in could not be mapped. Nothing was reserved or counted:
    /// the caller counts the call, as dropped ([`Log::count_dropped`]) when it still enforces
    /// its decision, or as [`Unobserved`] when it hands the call on undecided.
    Unmapped,
}

/// Where a call's result (and the time it blocked) go once the real system call returns.
pub struct ResultCell<'a> {
    result: &'a AtomicU64,
    blocked: &'a AtomicU64,
}

impl<'a> ResultCell<'a> {
    /// The cell of the call record whose first slot is at `slot0`.
    #[inline(always)]
    fn of_call(slot0: *mut u8) -> ResultCell<'a> {
        const _: () = assert!(CALL_FIXED <= PAYLOAD_PER_SLOT);
        // SAFETY: both inside the first slot reserved for the record (CALL_FIXED fits in one
        // slot's payload), 8-aligned (slot base + 56 and + 72), in a window that stays mapped
        // for 'a (see Log::new).
        unsafe {
            ResultCell {
                result: &*(slot0.add(CALL_RESULT_OFFSET).cast::<AtomicU64>()),
                blocked: &*(slot0.add(TAG_LEN + CALL_BLOCKED).cast::<AtomicU64>()),
            }
        }
    }

    /// Records the real outcome: 0 for success, else the errno; the blocked time stays "not
    /// measured".
    pub fn set(&self, result: i32) {
        self.result.store(guarded(result), Ordering::Relaxed)
    }

    /// Marks the record as not a call ([`RESULT_NOT_A_CALL`]): readers skip it.
    pub fn void(&self) {
        self.result
            .store(guarded(RESULT_NOT_A_CALL), Ordering::Relaxed)
    }

    /// Records the real outcome and how long the real call blocked (nanoseconds, measured
    /// around it). Each field is one store: a process killed between them leaves the other
    /// unknown (pending / not measured), never a mixed value.
    pub fn finish(&self, result: i32, blocked_ns: u64) {
        self.blocked
            .store(blocked_word(blocked_ns), Ordering::Relaxed);
        self.result.store(guarded(result), Ordering::Relaxed)
    }
}

impl<'a> Log<'a> {
    /// A writer over a mapped header whose slots are mapped through `windows`, on demand, by
    /// `mapper`. None when the header is not one of this version's.
    ///
    /// # Safety
    /// `header` must point to a shared, writable, 8-aligned mapping of the log file's first
    /// [`HEADER_LEN`] bytes that stays mapped for as long as the `Log` and any [`ResultCell`]
    /// from it are used; `mapper` maps that same file, and `windows` holds only windows of it.
    pub unsafe fn new(
        header: *mut u8,
        windows: &'a Windows,
        mapper: &'a dyn Mapper,
    ) -> Option<Log<'a>> {
        if header.is_null() || !(header as usize).is_multiple_of(8) {
            return None;
        }
        // SAFETY: the header mapping covers HEADER_LEN bytes.
        let h = unsafe { core::slice::from_raw_parts(header, OFF_CAPACITY + 8) };
        if h[0..8] != MAGIC
            || u32::from_ne_bytes([h[8], h[9], h[10], h[11]]) != VERSION
            || u32::from_ne_bytes([h[12], h[13], h[14], h[15]]) != SLOT_LEN as u32
        {
            return None;
        }
        let mut cap = [0u8; 8];
        cap.copy_from_slice(&h[OFF_CAPACITY..OFF_CAPACITY + 8]);
        let capacity = u64::from_ne_bytes(cap).min(windows.reach());
        Some(Log {
            header,
            capacity,
            windows,
            mapper,
        })
    }

    /// A writer over a header that [`Log::new`] accepted before, with the capacity it found
    /// ([`Log::capacity`]): what a process that checked its mapping once uses on every call.
    ///
    /// # Safety
    /// As [`Log::new`], and `Log::new(header, windows, mapper)` returned a log of `capacity`.
    pub unsafe fn checked(
        header: *mut u8,
        capacity: u64,
        windows: &'a Windows,
        mapper: &'a dyn Mapper,
    ) -> Log<'a> {
        Log {
            header,
            capacity,
            windows,
            mapper,
        }
    }

    /// Slots that may be written: the capacity, or less while blocks are not allocated yet.
    fn limit(&self) -> u64 {
        self.counter(OFF_ALLOCATED)
            .load(Ordering::Acquire)
            .min(self.capacity)
    }

    /// Slots the log holds (as far as the window table reaches).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Slots reserved so far.
    pub fn cursor(&self) -> u64 {
        self.counter(OFF_CURSOR).load(Ordering::Relaxed)
    }

    pub fn allocated(&self) -> u64 {
        self.counter(OFF_ALLOCATED).load(Ordering::Acquire)
    }

    fn resolving(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: slot < RESOLVING_SLOTS: a fixed, 4-aligned offset inside the header (512 +
        // 4 * 256 < 4096), which the mapping covers.
        unsafe {
            &*(self
                .header
                .add(OFF_RESOLVING + 4 * slot)
                .cast::<AtomicU32>())
        }
    }

    /// Marks thread `tid` as inside the resolver (see [`OFF_RESOLVING`]); the slot to clear
    /// with [`Log::leave_resolver`], or None when the table is full.
    pub fn enter_resolver(&self, tid: u32) -> Option<usize> {
        (0..RESOLVING_SLOTS).find(|&i| {
            self.resolving(i)
                .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    pub fn leave_resolver(&self, slot: usize) {
        if slot < RESOLVING_SLOTS {
            self.resolving(slot).store(0, Ordering::Release);
        }
    }

    /// Is thread `tid` inside the resolver?
    pub fn in_resolver(&self, tid: u32) -> bool {
        tid != 0 && (0..RESOLVING_SLOTS).any(|i| self.resolving(i).load(Ordering::Acquire) == tid)
    }

    /// Counts one call let pass without a decision or record (see [`Unobserved`]).
    pub fn count_unobserved(&self, cause: Unobserved) {
        self.counter(OFF_UNOBSERVED + 8 * cause as usize)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one record that could not be written (see [`NotWritten::Unmapped`]).
    pub fn count_dropped(&self) {
        self.counter(OFF_DROPPED).fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes that the file's blocks for the first `slots` slots are allocated. Never
    /// lowers the limit (a writer may have reserved slots below it).
    pub fn set_allocated(&self, slots: u64) {
        self.counter(OFF_ALLOCATED)
            .fetch_max(slots.min(self.capacity), Ordering::Release);
    }

    fn counter(&self, off: usize) -> &AtomicU64 {
        // SAFETY: off is a fixed, 8-aligned offset inside the header, which the mapping covers.
        unsafe { &*(self.header.add(off).cast::<AtomicU64>()) }
    }

    /// Reserves `n` slots in a mapped window: (first slot, that slot's address). Only a
    /// reservation that fits below the limit and whose window is mapped advances the cursor,
    /// so every slot below the cursor belongs to a writer that could write it.
    #[inline(always)]
    fn reserve(&self, n: usize) -> Result<(u64, *mut u8), NotWritten> {
        let cursor = self.counter(OFF_CURSOR);
        let mut first = cursor.load(Ordering::Relaxed);
        loop {
            if n > MAX_SLOTS || first.saturating_add(n as u64) > self.limit() {
                self.count_dropped();
                return Err(NotWritten::Full);
            }
            let w = self.windows.window_slots();
            // A shift for the default windows (a power of two), a division for a test's.
            let window = if w == WINDOW_SLOTS {
                (first / WINDOW_SLOTS) as usize
            } else {
                (first / w) as usize
            };
            let base = self
                .windows
                .get(window, self.capacity, self.mapper)
                .ok_or(NotWritten::Unmapped)?;
            match cursor.compare_exchange_weak(
                first,
                first + n as u64,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let at = (first - window as u64 * w) as usize * SLOT_LEN;
                    // SAFETY: first + n <= capacity, and the window maps every slot from its
                    // first to MAX_SLOTS past its own (cut at the capacity).
                    return Ok((first, unsafe { base.add(at) }));
                }
                Err(now) => first = now,
            }
        }
    }

    /// Appends a record made of `parts`, concatenated, up to `until` (a writer stops before
    /// [`Step::Committed`] only in tests, which tear records this way, as a writer that dies
    /// there would). Returns its first slot's address.
    fn append_until(&self, kind: u8, parts: &[&[u8]], until: Step) -> Result<*mut u8, NotWritten> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let n = slots_for(total);
        let (_, slot0) = self.reserve(n)?;
        let tag_at = |idx: usize| {
            // SAFETY: idx < n: a slot reserved above; slots are 128-byte aligned.
            unsafe { &*(slot0.add(idx * SLOT_LEN).cast::<AtomicU32>()) }
        };
        // The common case, a record of one slot, written in one pass: the parts copied end to
        // end after the tag, and the checksum taken over the payload as it now lies in the slot
        // (the same bytes, so the same sum as over the parts).
        if n == 1 && until == Step::Committed {
            tag_at(0).store(tag(KIND_RESERVED, 1, 0), Ordering::Relaxed);
            let mut pos = TAG_LEN;
            for part in parts {
                // SAFETY: pos + part.len() <= TAG_LEN + total <= SLOT_LEN: inside the slot
                // reserved above, which nobody else writes; the source is a caller's slice.
                unsafe {
                    core::ptr::copy_nonoverlapping(part.as_ptr(), slot0.add(pos), part.len())
                };
                pos += part.len();
            }
            // SAFETY: the payload just written, inside the reserved slot.
            let payload = unsafe { core::slice::from_raw_parts(slot0.add(TAG_LEN), total) };
            let sum = checksum(kind, &[payload]);
            // SAFETY: the checksum lives in the first slot's tag word, after the tag (bytes 4..8).
            unsafe { &*(slot0.add(4).cast::<AtomicU32>()) }.store(sum, Ordering::Relaxed);
            tag_at(0).store(tag(kind, 1, 0), Ordering::Release);
            return Ok(slot0);
        }
        if until == Step::Reserved {
            return Ok(slot0);
        }
        tag_at(0).store(tag(KIND_RESERVED, n, 0), Ordering::Relaxed);
        if until == Step::Tagged {
            return Ok(slot0);
        }
        let mut pos = 0usize;
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let (slot, off) = (pos / PAYLOAD_PER_SLOT, pos % PAYLOAD_PER_SLOT);
                let take = rest.len().min(PAYLOAD_PER_SLOT - off);
                // SAFETY: these bytes lie inside one slot reserved above, after its tag
                // (pos + take <= total <= n * PAYLOAD_PER_SLOT); the source is a caller's
                // slice, which cannot overlap slots nobody else writes.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        rest.as_ptr(),
                        slot0.add(slot * SLOT_LEN + TAG_LEN + off),
                        take,
                    )
                };
                rest = &rest[take..];
                pos += take;
            }
        }
        if until == Step::Payload {
            return Ok(slot0);
        }
        for idx in 1..n {
            tag_at(idx).store(tag(kind, n, idx), Ordering::Release);
        }
        if until == Step::Continued {
            return Ok(slot0);
        }
        // SAFETY: the checksum lives in the first slot's tag word, after the tag (bytes 4..8).
        let sum = unsafe { &*(slot0.add(4).cast::<AtomicU32>()) };
        sum.store(checksum(kind, parts), Ordering::Relaxed);
        tag_at(0).store(tag(kind, n, 0), Ordering::Release);
        Ok(slot0)
    }

    /// Appends a call. `thread` is the calling thread's name, when the run asks for it (else
    /// empty). The returned cell takes the real call's result afterwards.
    #[inline]
    pub fn append_call(
        &self,
        call: &Call,
        test: &[u8],
        host: &[u8],
        thread: &[u8],
    ) -> Result<ResultCell<'a>, NotWritten> {
        self.append_call_until(call, test, host, thread, Step::Committed)
    }

    /// [`Log::append_call`] when the record fits in one slot (the fixed part and texts of at
    /// most `SLOT_LEN - 8 - 72` bytes together, each text cut as there); None, with nothing
    /// done, when it does not. The same record as `append_call` writes. For a writer that
    /// keeps its common path small: nothing of `self` is needed past the one-slot writer.
    #[inline(always)]
    pub fn append_call_one_slot(
        &self,
        call: &Call,
        test: &[u8],
        host: &[u8],
        thread: &[u8],
    ) -> Option<Result<ResultCell<'a>, NotWritten>> {
        let test = &test[..test.len().min(MAX_TEXT)];
        let host = &host[..host.len().min(MAX_TEXT)];
        let thread = &thread[..thread.len().min(MAX_THREAD_NAME)];
        if CALL_FIXED + test.len() + host.len() + thread.len() > PAYLOAD_PER_SLOT {
            return None;
        }
        let words = call.words(test.len(), host.len(), thread.len());
        Some(
            self.append_call_slot(&words, [test, host, thread])
                .map(ResultCell::of_call),
        )
    }

    #[inline(always)]
    fn append_call_until(
        &self,
        call: &Call,
        test: &[u8],
        host: &[u8],
        thread: &[u8],
        until: Step,
    ) -> Result<ResultCell<'a>, NotWritten> {
        let test = &test[..test.len().min(MAX_TEXT)];
        let host = &host[..host.len().min(MAX_TEXT)];
        let thread = &thread[..thread.len().min(MAX_THREAD_NAME)];
        let slot0 = if until == Step::Committed
            && CALL_FIXED + test.len() + host.len() + thread.len() <= PAYLOAD_PER_SLOT
        {
            let words = call.words(test.len(), host.len(), thread.len());
            self.append_call_slot(&words, [test, host, thread])?
        } else {
            let fixed = call.encode(test.len(), host.len(), thread.len());
            self.append_until(KIND_CALL, &[&fixed, test, host, thread], until)?
        };
        Ok(ResultCell::of_call(slot0))
    }

    /// [`Log::append_until`] for the common call record, one slot (the fixed part and texts
    /// that fit beside it), committed: the fixed part's words ([`Call::words`]) stored and
    /// summed where they go, the texts copied after them and summed from where they lie. The
    /// same bytes and the same checksum as the general path (tests/golden.rs, and
    /// `one_slot_calls_match_the_general_path`).
    #[inline(always)]
    fn append_call_slot(
        &self,
        words: &[u64; CALL_FIXED / 8],
        texts: [&[u8]; 3],
    ) -> Result<*mut u8, NotWritten> {
        let (_, slot0) = self.reserve(1)?;
        // SAFETY: slot0 is the first byte of a slot reserved above (128-byte aligned), which
        // nobody else writes; every store below lies inside it (8-aligned words).
        unsafe {
            let tag_word = &*(slot0.cast::<AtomicU32>());
            tag_word.store(tag(KIND_RESERVED, 1, 0), Ordering::Relaxed);
            let payload = slot0.add(TAG_LEN);
            let mut h = CHECKSUM_SEED ^ KIND_CALL as u64;
            const _: () = assert!(CALL_FIXED.is_multiple_of(8));
            for (i, &w) in words.iter().enumerate() {
                payload.add(8 * i).cast::<u64>().write(w.to_le());
                if 8 * i != CALL_RESULT && 8 * i != CALL_BLOCKED {
                    h = checksum_mix(h, w);
                }
            }
            let [test, host, thread] = texts;
            let texts_len = test.len() + host.len() + thread.len();
            if texts_len > 0 {
                let mut pos = CALL_FIXED;
                for text in [test, host, thread] {
                    core::ptr::copy_nonoverlapping(text.as_ptr(), payload.add(pos), text.len());
                    pos += text.len();
                }
                // The texts as they now lie in the slot, from the word after the fixed part
                // (CALL_FIXED is a multiple of 8), the last word zero-padded.
                let texts = core::slice::from_raw_parts(payload.add(CALL_FIXED), texts_len);
                h = checksum_words(h, texts);
            }
            (*(slot0.add(4).cast::<AtomicU32>())).store(checksum_fold(h), Ordering::Relaxed);
            tag_word.store(tag(KIND_CALL, 1, 0), Ordering::Release);
        }
        Ok(slot0)
    }

    /// Appends a process record. `cmdline` is NUL-separated, as in `/proc/PID/cmdline`.
    pub fn append_process(
        &self,
        p: &Process,
        exe: &[u8],
        cmdline: &[u8],
    ) -> Result<(), NotWritten> {
        self.append_process_until(p, exe, cmdline, Step::Committed)
    }

    fn append_process_until(
        &self,
        p: &Process,
        exe: &[u8],
        cmdline: &[u8],
        until: Step,
    ) -> Result<(), NotWritten> {
        let exe = &exe[..exe.len().min(MAX_TEXT)];
        let cmdline = &cmdline[..cmdline.len().min(MAX_TEXT)];
        let fixed = p.encode(exe.len(), cmdline.len());
        self.append_until(KIND_PROCESS, &[&fixed, exe, cmdline], until)
            .map(|_| ())
    }
}

/// How far a writer got with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))] // only tests stop a writer early
enum Step {
    /// Slots reserved, nothing stored.
    Reserved,
    /// The first slot tagged "reserved".
    Tagged,
    /// The payload written.
    Payload,
    /// The other slots tagged.
    Continued,
    /// The first slot's real tag stored: the record is in the log.
    Committed,
}

#[cfg(feature = "alloc")]
pub use decode::*;

#[cfg(feature = "alloc")]
mod repeat;

#[cfg(feature = "alloc")]
mod decode {
    use super::*;
    use alloc::vec::Vec;

    /// A call as read back from the log.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct CallRecord {
        pub call: Call,
        /// The real call's outcome: 0, an errno, [`RESULT_PENDING`] or [`RESULT_UNKNOWN`].
        pub result: i32,
        /// Nanoseconds the real call (a lookup: the resolver function) blocked, measured by the
        /// engine around it with CLOCK_MONOTONIC; 0 = not measured (denied, let through by the
        /// supervisor, which does not see it return, or the process ended inside it).
        pub blocked_ns: u64,
        pub test: Option<Vec<u8>>,
        pub host: Vec<u8>,
        /// The calling thread's name (at most 15 bytes: the kernel's), when the run recorded
        /// it (`policy::FLAG_THREAD_NAMES`); else empty.
        pub thread: Vec<u8>,
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct ProcessRecord {
        pub process: Process,
        pub exe: Vec<u8>,
        pub cmdline: Vec<u8>,
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Record {
        Call(CallRecord),
        Process(ProcessRecord),
    }

    /// A call as read in place: its texts are slices of the slots the reader was handed (or of
    /// the reader's own buffer, for a record of several slots), valid while it is handed out.
    /// What a reader of millions of calls reads each with, copying nothing.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct CallRef<'a> {
        pub call: Call,
        pub result: i32,
        pub blocked_ns: u64,
        pub test: Option<&'a [u8]>,
        pub host: &'a [u8],
        pub thread: &'a [u8],
    }

    impl CallRef<'_> {
        /// What [`Stream::skim`] would have seen of this call before reading it.
        pub fn head(&self) -> CallHead {
            CallHead {
                syscall: Some(self.call.syscall),
                source: Some(self.call.source),
                port: self.call.dest.port,
                has_host: !self.host.is_empty(),
            }
        }

        pub fn to_record(&self) -> CallRecord {
            CallRecord {
                call: self.call,
                result: self.result,
                blocked_ns: self.blocked_ns,
                test: self.test.map(<[u8]>::to_vec),
                host: self.host.to_vec(),
                thread: self.thread.to_vec(),
            }
        }
    }

    /// A process record as read in place (see [`CallRef`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ProcessRef<'a> {
        pub process: Process,
        pub exe: &'a [u8],
        pub cmdline: &'a [u8],
    }

    impl ProcessRef<'_> {
        pub fn to_record(&self) -> ProcessRecord {
            ProcessRecord {
                process: self.process,
                exe: self.exe.to_vec(),
                cmdline: self.cmdline.to_vec(),
            }
        }
    }

    /// A record as read in place (see [`CallRef`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum RecordRef<'a> {
        Call(CallRef<'a>),
        Process(ProcessRef<'a>),
    }

    impl RecordRef<'_> {
        pub fn to_record(&self) -> Record {
            match self {
                RecordRef::Call(c) => Record::Call(c.to_record()),
                RecordRef::Process(p) => Record::Process(p.to_record()),
            }
        }
    }

    impl Record {
        /// The record as [`Stream::feed_refs`] hands it out.
        pub fn as_ref(&self) -> RecordRef<'_> {
            match self {
                Record::Call(c) => RecordRef::Call(CallRef {
                    call: c.call,
                    result: c.result,
                    blocked_ns: c.blocked_ns,
                    test: c.test.as_deref(),
                    host: &c.host,
                    thread: &c.thread,
                }),
                Record::Process(p) => RecordRef::Process(ProcessRef {
                    process: p.process,
                    exe: &p.exe,
                    cmdline: &p.cmdline,
                }),
            }
        }
    }

    /// What [`Stream::feed_hinted`] says of a record beside it.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Hint {
        /// A call's lane: [`lane_of`] its port (calls to one port share one; 0 for a process
        /// record).
        pub lane: u8,
        /// The call's fields and texts, its time, result and blocked time aside, are those of
        /// the last call handed out in its lane (`false` says nothing). A reader that groups
        /// calls may count it where it counted that one, without looking at its fields again.
        pub repeats: bool,
    }

    /// Lanes a [`Hint`] tells apart: a storm that cycles through this many ports or fewer
    /// repeats in each.
    pub const LANES: usize = 8;

    /// The lane of a call to `port`: the port hashed (Fibonacci hashing, the product's top
    /// bits), not taken modulo [`LANES`], which put the popular ports in few lanes (80, 3000,
    /// 5432, 8000, 8080, 9200 in lane 0): a storm alternating two of them then repeated in
    /// none.
    #[inline(always)]
    pub fn lane_of(port: u16) -> usize {
        const _: () = assert!(LANES.is_power_of_two() && LANES > 1);
        ((port as u32).wrapping_mul(0x9E37_79B1) >> (32 - LANES.trailing_zeros())) as usize
    }

    /// A call's fields as its first slot holds them, before the record is checked: what
    /// [`Stream::skim`] chooses the calls it reads by. A record that checks out holds the
    /// same values; one that does not may hold anything.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct CallHead {
        /// `None`: a value no syscall has (the record will not check out).
        pub syscall: Option<Syscall>,
        pub source: Option<Source>,
        pub port: u16,
        /// Does the record hold a host name (`host` not empty)?
        pub has_host: bool,
    }

    impl CallHead {
        fn of(p: &[u8]) -> Option<CallHead> {
            let f: &[u8; CALL_FIXED] = p.get(..CALL_FIXED)?.try_into().ok()?;
            Some(CallHead {
                syscall: Syscall::try_from(f[38]).ok(),
                source: Source::try_from(f[37]).ok(),
                port: u16_at(f, 32),
                has_host: u16_at(f, 58) != 0,
            })
        }
    }

    /// Everything read from a log file.
    #[derive(Debug, Default)]
    pub struct Decoded {
        pub records: Vec<Record>,
        /// Records writers could not write: the log was full (or its disk blocks could not be
        /// allocated), or, for a call the engine still decided, the part of the log it fell in
        /// could not be mapped.
        pub dropped: u64,
        /// Records reserved and never committed (a writer died mid-record, or is still
        /// writing), and records that do not check out (something wrote over them).
        pub torn: u64,
        /// Calls let pass without a decision or record, indexed by [`Unobserved`] value.
        pub unobserved: [u64; CAUSES],
    }

    impl Decoded {
        /// Counts one call the header could not hold (the `unobserved` file's bytes).
        pub fn add_unobserved(&mut self, cause: u8) {
            let i = if (cause as usize) < CAUSES {
                cause as usize
            } else {
                0
            };
            self.unobserved[i] += 1;
        }

        /// (cause, count) for every cause counted at least once; unknown causes are counted
        /// under slot 0 and not listed here.
        pub fn unobserved_by_cause(&self) -> impl Iterator<Item = (Unobserved, u64)> + '_ {
            Unobserved::ALL
                .into_iter()
                .map(|c| (c, self.unobserved[c as usize]))
                .filter(|(_, n)| *n > 0)
        }
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([b[at], b[at + 1]])
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_ne_bytes(x)
    }

    /// Slots a reader walks: below the cursor, the allocated limit and the capacity.
    fn walked(header: &[u8]) -> u64 {
        let (cap, cursor, allocated) = (
            u64_at(header, OFF_CAPACITY),
            u64_at(header, OFF_CURSOR),
            u64_at(header, OFF_ALLOCATED),
        );
        cursor.min(allocated).min(cap)
    }

    /// How many bytes of the file hold the header and every slot the reader walks.
    pub fn used_len(header: &[u8]) -> Option<usize> {
        if header.len() < HEADER_LEN || header[0..8] != MAGIC {
            return None;
        }
        let slots = usize::try_from(walked(header)).ok()?;
        slots.checked_mul(SLOT_LEN)?.checked_add(HEADER_LEN)
    }

    /// A head tag: (kind, slot count).
    fn head(tag: u32) -> Option<(u8, usize)> {
        let (mark, kind, n, idx) = (tag >> 24, (tag >> 16) as u8, (tag >> 8) & 0xff, tag & 0xff);
        (mark == TAG_MARK && idx == 0 && n > 0).then_some((kind, n as usize))
    }

    /// Decodes a log file's contents (at least [`used_len`] bytes of it).
    pub fn decode(file: &[u8]) -> Result<Decoded, &'static str> {
        decode_settled(file).map(|(d, _)| d)
    }

    /// Where a reader following a log as it is written can resume: the records before the
    /// first one not (yet) complete, and the slot it starts at.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Settled {
        pub records: usize,
        pub slots: u64,
    }

    /// As [`decode`], and where the complete part of the log ends: the slots after it may
    /// still be being written. `file` may also be the header followed by a run of slots that
    /// starts at a record's first slot (a reader's next pass).
    pub fn decode_settled(file: &[u8]) -> Result<(Decoded, Settled), &'static str> {
        let slots = &file[HEADER_LEN.min(file.len())..];
        let mut stream = Stream::new(file, (slots.len() / SLOT_LEN) as u64)?;
        let mut records = Vec::new();
        stream.feed(slots, |r| records.push(r));
        let settled = stream.settled();
        let mut out = stream.finish();
        out.records = records;
        Ok((out, settled))
    }

    /// A reader that walks a log's slots piece by piece and hands each record to its caller as
    /// it decodes it, so that no more of the log than one piece, and none of its records, need
    /// be held at once (the report of a run of millions of calls). It reads the log exactly as
    /// [`decode`] does: the same records in the same order, the same torn count (a run of
    /// untagged slots that spans two pieces is still one torn record).
    #[derive(Debug)]
    pub struct Stream {
        /// Slots to walk: below the cursor, the allocated limit, the capacity and the file.
        end: u64,
        /// The slot the next piece starts at.
        next: u64,
        /// Inside a run of untagged slots (counted once, already).
        in_gap: bool,
        /// Records handed out so far.
        records: usize,
        settled: Option<Settled>,
        counts: Decoded,
        /// A record's payload, gathered from its slots (kept from one record to the next).
        payload: Vec<u8>,
        /// Read a storm's repeated calls and heads the cheap way (`repeat`); tests turn it
        /// off to compare both ways.
        repeats: bool,
    }

    impl Stream {
        /// A reader of the log whose header (at least [`HEADER_LEN`] bytes) is `header`, and
        /// whose file holds `in_file` slots after it.
        pub fn new(header: &[u8], in_file: u64) -> Result<Stream, &'static str> {
            if header.len() < HEADER_LEN || header[0..8] != MAGIC {
                return Err("not a nettrap event log");
            }
            if u32_at(header, OFF_VERSION) != VERSION
                || u32_at(header, OFF_SLOT_LEN) != SLOT_LEN as u32
            {
                return Err("event log of another nettrap version");
            }
            let mut counts = Decoded {
                dropped: u64_at(header, OFF_DROPPED),
                ..Decoded::default()
            };
            for (i, n) in counts.unobserved.iter_mut().enumerate() {
                *n = u64_at(header, OFF_UNOBSERVED + 8 * i);
            }
            Ok(Stream {
                end: walked(header).min(in_file),
                next: 0,
                in_gap: false,
                records: 0,
                settled: None,
                counts,
                payload: Vec::new(),
                repeats: true,
            })
        }

        /// The same reader, every call read in full and every head shown to the choice (the
        /// way a storm's repeated calls are read cheaply is checked against it).
        #[cfg(test)]
        pub(crate) fn without_repeats(self) -> Stream {
            Stream {
                repeats: false,
                ..self
            }
        }

        /// The slot the next piece must start at (0 first).
        pub fn next_slot(&self) -> u64 {
            self.next
        }

        /// Has every slot been walked?
        pub fn done(&self) -> bool {
            self.next >= self.end
        }

        /// Walks `slots`, the log's slots from [`Stream::next_slot`] on (at least
        /// [`MAX_SLOTS`] of them, unless they reach the end), and hands `f` every record that
        /// lies wholly inside them, in log order. A record that runs past the piece's end is
        /// left for the next piece, which starts at it.
        pub fn feed(&mut self, slots: &[u8], mut f: impl FnMut(Record)) {
            self.walk::<false>(slots, |_| true, |_, r, _| f(r.to_record()));
        }

        /// As [`Stream::feed`], the records read in place (nothing copied), each with its
        /// place in the log: the slot it starts at.
        pub fn feed_refs(&mut self, slots: &[u8], mut f: impl FnMut(u64, RecordRef<'_>)) {
            self.walk::<false>(slots, |_| true, |at, r, _| f(at, *r));
        }

        /// As [`Stream::feed_refs`], each record lent (a storm's next call is an earlier one,
        /// a few fields updated: nothing to copy), with a [`Hint`] for a reader that groups
        /// calls: whether the call repeats the last call of its lane (see `repeat`).
        pub fn feed_hinted(&mut self, slots: &[u8], f: impl FnMut(u64, &RecordRef<'_>, Hint)) {
            self.walk::<false>(slots, |_| true, f);
        }

        /// As [`Stream::feed_refs`], but of the calls only those `want` picks by their
        /// [`CallHead`] are checked and handed out: the others are passed over unread (the
        /// walk's cheap first pass over a log whose calls it reads again later). Process
        /// records are all handed out. The torn count and [`Stream::settled`] then cover only
        /// what was read; the places are those [`Stream::feed_refs`] gives. `want` must
        /// depend on the head alone: what it said of a call is reused for the calls with the
        /// same head that follow.
        pub fn skim(
            &mut self,
            slots: &[u8],
            want: impl Fn(&CallHead) -> bool,
            mut f: impl FnMut(u64, RecordRef<'_>),
        ) {
            self.walk::<true>(slots, want, |at, r, _| f(at, *r));
        }

        /// Hands `f` the records of `slots`; with `SKIM`, only the calls `want` picks.
        fn walk<const SKIM: bool>(
            &mut self,
            slots: &[u8],
            want: impl Fn(&CallHead) -> bool,
            mut f: impl FnMut(u64, &RecordRef<'_>, Hint),
        ) {
            let base = self.next;
            let limit = (base + (slots.len() / SLOT_LEN) as u64).min(self.end);
            let last = limit == self.end;
            let slot = |g: u64| {
                let k = (g - base) as usize;
                &slots[k * SLOT_LEN..(k + 1) * SLOT_LEN]
            };
            let tag_at = |g: u64| u32_at(slot(g), 0);
            // Per lane (see [`Hint`]): the last call handed out, when it took one slot: that
            // slot's payload, its length and the call (see `repeat`); and what `want` said of
            // the heads it was last shown.
            let mut last_call: [Option<(&[u8; PAYLOAD_PER_SLOT], usize, RecordRef<'_>)>; LANES] =
                [None; LANES];
            let mut heads = repeat::Heads::default();
            // Kept in registers while walking, stored back at the end.
            let (mut in_gap, mut records) = (self.in_gap, self.records);
            let repeats = self.repeats;
            let mut i = base;
            while i < limit {
                let first = tag_at(i);
                if first == tag(KIND_CALL, 1, 0) {
                    // Most records: a call in one slot, complete by its tag alone (no other
                    // slot to check, nothing to gather, none left for the next piece). What
                    // the general path below does with it, without its tests.
                    in_gap = false;
                    let s = slot(i);
                    let sum = u32_at(s, 4);
                    let Ok(payload) = <&[u8; PAYLOAD_PER_SLOT]>::try_from(&s[TAG_LEN..]) else {
                        unreachable!("a slot holds one payload")
                    };
                    let wanted = !SKIM || {
                        let head = repeat::head(payload);
                        match heads.said(head) {
                            Some(wanted) if repeats => wanted,
                            _ => {
                                let wanted = CallHead::of(payload).is_none_or(|h| want(&h));
                                heads.say(head, wanted);
                                wanted
                            }
                        }
                    };
                    if !wanted {
                        // Passed over, with the unwanted calls right after it.
                        let rest = &slots[((i + 1 - base) as usize) * SLOT_LEN
                            ..((limit - base) as usize) * SLOT_LEN];
                        i += 1 + if repeats {
                            heads.unwanted_run(rest) as u64
                        } else {
                            0
                        };
                        continue;
                    }
                    let lane = repeat::lane(payload);
                    // A call like the last one handed out in its lane is checked for what may
                    // differ alone, and handed out as that one updated; any other is read in
                    // full.
                    let hint = Hint {
                        lane: lane as u8,
                        repeats: false,
                    };
                    if let Some((prev, len, r)) = &mut last_call[lane]
                        && repeat::same(prev, payload, *len)
                    {
                        match repeat::update(r, payload, *len, sum) {
                            Some(RESULT_NOT_A_CALL) => {}
                            Some(_) => {
                                records += 1;
                                f(
                                    i,
                                    r,
                                    Hint {
                                        repeats: true,
                                        ..hint
                                    },
                                );
                            }
                            None => self.counts.torn += 1,
                        }
                        i += 1;
                        continue;
                    }
                    match decode_call(payload, 1, sum) {
                        Some(c) if c.result == RESULT_NOT_A_CALL => {}
                        Some(c) => {
                            let r = RecordRef::Call(c);
                            if repeats {
                                last_call[lane] = Some((payload, call_len(payload), r));
                            }
                            records += 1;
                            f(i, &r, hint);
                        }
                        None => self.counts.torn += 1,
                    }
                    i += 1;
                    continue;
                }
                let head = head(first);
                if let Some((kind, n)) = head
                    && kind == KIND_CALL
                    && (!last || i + n as u64 <= limit)
                    && CallHead::of(&slot(i)[TAG_LEN..]).is_some_and(|h| !want(&h))
                {
                    // Not wanted: passed over, unchecked.
                    if i + n as u64 > limit {
                        break;
                    }
                    in_gap = false;
                    i += n as u64;
                    continue;
                }
                let complete = match head {
                    Some((KIND_RESERVED, _)) | None => false,
                    Some((kind, n)) => {
                        i + n as u64 <= limit
                            && (1..n).all(|k| tag_at(i + k as u64) == tag(kind, n, k))
                    }
                };
                if let Some((_, n)) = head
                    && !last
                    && i + n as u64 > limit
                {
                    // Its other slots are in the next piece.
                    break;
                }
                if self.settled.is_none() && !complete {
                    self.settled = Some(Settled { records, slots: i });
                }
                match head {
                    Some((KIND_RESERVED, n)) => {
                        // Reserved, never committed: one record, whatever it had written.
                        in_gap = false;
                        self.counts.torn += 1;
                        i += n as u64;
                    }
                    Some((kind, n)) => {
                        in_gap = false;
                        let record = if complete {
                            // A one-slot record (most calls) is read where it lies; a longer
                            // one is gathered from its slots first.
                            let payload: &[u8] = if n == 1 {
                                &slot(i)[TAG_LEN..]
                            } else {
                                self.payload.clear();
                                for k in 0..n {
                                    self.payload
                                        .extend_from_slice(&slot(i + k as u64)[TAG_LEN..]);
                                }
                                &self.payload
                            };
                            let sum = u32_at(slot(i), 4);
                            match kind {
                                KIND_CALL => decode_call(payload, n, sum).map(RecordRef::Call),
                                KIND_PROCESS => {
                                    decode_process(payload, n, sum).map(RecordRef::Process)
                                }
                                _ => None,
                            }
                        } else {
                            None
                        };
                        match record {
                            // Voided by its writer: not a call (see RESULT_NOT_A_CALL).
                            Some(RecordRef::Call(c)) if c.result == RESULT_NOT_A_CALL => {}
                            Some(r) => {
                                let mut hint = Hint::default();
                                if let RecordRef::Call(c) = r {
                                    hint.lane = lane_of(c.call.dest.port) as u8;
                                    last_call[hint.lane as usize] = None;
                                }
                                records += 1;
                                f(i, &r, hint);
                            }
                            None => self.counts.torn += 1,
                        }
                        i += n as u64;
                    }
                    None => {
                        // Slots without a record's first tag: a writer died between reserving
                        // and its first store (its slots are all untagged), or something wrote
                        // over the log. One record per run of them.
                        if !in_gap {
                            self.counts.torn += 1;
                            in_gap = true;
                        }
                        i += 1;
                    }
                }
            }
            (self.in_gap, self.records) = (in_gap, records);
            self.next = i;
        }

        /// Where the complete part of what was walked ends (see [`decode_settled`]).
        pub fn settled(&self) -> Settled {
            self.settled.unwrap_or(Settled {
                records: self.records,
                slots: self.end,
            })
        }

        /// The counts (dropped, torn, unobserved) of the whole walk; `records` is empty.
        pub fn finish(self) -> Decoded {
            self.counts
        }
    }

    /// The payload's first `total` bytes, if its slot count and checksum agree with them.
    fn checked(p: &[u8], kind: u8, total: usize, n: usize, sum: u32) -> Option<&[u8]> {
        let body = p.get(..total)?;
        (slots_for(total) == n && checksum(kind, &[body]) == sum).then_some(body)
    }

    /// The payload length a call's fixed part gives (its texts' lengths unchecked).
    fn call_len(f: &[u8; PAYLOAD_PER_SLOT]) -> usize {
        CALL_FIXED + u16_at(f, 56) as usize + u16_at(f, 58) as usize + f[61] as usize
    }

    fn decode_call(p: &[u8], n: usize, sum: u32) -> Option<CallRef<'_>> {
        // The fixed part as an array: its fields are read without bounds checks.
        let f: &[u8; CALL_FIXED] = p.get(..CALL_FIXED)?.try_into().ok()?;
        let (test_len, host_len) = (u16_at(f, 56) as usize, u16_at(f, 58) as usize);
        let thread_len = f[61] as usize;
        if test_len > MAX_TEXT || host_len > MAX_TEXT || thread_len > MAX_THREAD_NAME {
            return None;
        }
        let total = CALL_FIXED + test_len + host_len + thread_len;
        // `checked`, the call's checksum taken directly (a call's payload is never shorter
        // than its fixed part).
        let p = p.get(..total)?;
        if slots_for(total) != n || call_checksum(p) != sum {
            return None;
        }
        let has_test = match f[60] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let result = u64_at(f, CALL_RESULT);
        if result >> 32 != !result & 0xffff_ffff {
            return None;
        }
        let blocked_ns = blocked_of(u64_at(f, CALL_BLOCKED))?;
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&f[16..32]);
        let call = Call {
            pid: u32_at(f, 0),
            tid: u32_at(f, 4),
            time_ns: u64_at(f, 8),
            dest: Dest {
                ip,
                port: u16_at(f, 32),
            },
            transport: transport_from(f[34])?,
            action: action_from(f[35])?,
            phase: phase_from(f[36])?,
            source: Source::try_from(f[37]).ok()?,
            syscall: Syscall::try_from(f[38]).ok()?,
            category: u16_at(f, 40),
            rule: u16_at(f, 42),
            deny_errno: u32_at(f, 44) as i32,
            has_test,
        };
        let (test, rest) = p[CALL_FIXED..].split_at(test_len);
        let (host, thread) = rest.split_at(host_len);
        Some(CallRef {
            call,
            result: result as u32 as i32,
            blocked_ns,
            test: has_test.then_some(test),
            host,
            thread,
        })
    }

    fn decode_process(p: &[u8], n: usize, sum: u32) -> Option<ProcessRef<'_>> {
        let (exe_len, cmd_len) = (u16_at(p, 16) as usize, u16_at(p, 18) as usize);
        if exe_len > MAX_TEXT || cmd_len > MAX_TEXT {
            return None;
        }
        let p = checked(p, KIND_PROCESS, PROCESS_FIXED + exe_len + cmd_len, n, sum)?;
        Some(ProcessRef {
            process: Process {
                pid: u32_at(p, 0),
                ppid: u32_at(p, 4),
                time_ns: u64_at(p, 8),
                source: Source::try_from(p[20]).ok()?,
            },
            exe: &p[PROCESS_FIXED..PROCESS_FIXED + exe_len],
            cmdline: &p[PROCESS_FIXED + exe_len..PROCESS_FIXED + exe_len + cmd_len],
        })
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests;
