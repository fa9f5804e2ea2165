//! The run's event log: one file that every intercepting process appends records to.
//!
//! The launcher creates `events.log` in the run directory: a 4 KiB header followed by a large,
//! sparse array of 128-byte slots. A writer (the shim in any process of the tree, or the seccomp
//! supervisor) maps the file `MAP_SHARED`, reserves consecutive slots with one atomic add on the
//! header's cursor, fills them and commits by storing the first slot's tag last. That costs no
//! system call, needs no lock, and survives the writer: the kernel keeps what a process wrote to
//! a shared mapping when it `_exit`s, crashes or is killed, and the mapping does not depend on
//! any file descriptor the program might close or `dup2` over.
//!
//! Every slot starts with a tag (`0xA5`, kind, slot count, slot index), so the reader can walk
//! the array slot by slot: slots whose writer died before committing have no valid first tag and
//! are counted as torn, never misread. When the array is full, writers count the record as
//! dropped in the header instead of writing it; the report says how many.

use crate::addr::{Dest, Transport};
use crate::policy::Action;
use crate::test_id::Phase;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

pub const MAGIC: [u8; 8] = *b"NTRAPLOG";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 4096;
pub const SLOT_LEN: usize = 128;
const TAG_LEN: usize = 8;
const PAYLOAD_PER_SLOT: usize = SLOT_LEN - TAG_LEN;
const MAX_SLOTS: usize = 255;
/// Test ids and host names longer than this are cut (the id is still unique in practice).
pub const MAX_TEXT: usize = 4096;
/// Default log capacity in slots (1 GiB of sparse file; about 8 million calls).
pub const DEFAULT_CAPACITY: u64 = 1 << 23;

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

const KIND_CALL: u8 = 1;
const KIND_PROCESS: u8 = 2;
/// Slots reserved by a record that did not fit: skipped by the reader, not torn.
const KIND_PAD: u8 = 0x7f;
const TAG_MARK: u32 = 0xA5;

/// Result value of a call whose real system call has not returned (yet).
pub const RESULT_PENDING: i32 = i32::MIN;
/// Result value of a call let through by an engine that does not see its outcome (seccomp).
pub const RESULT_UNKNOWN: i32 = i32::MIN + 1;

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
}

impl Syscall {
    pub fn from_u8(v: u8) -> Syscall {
        match v {
            2 => Syscall::Sendto,
            3 => Syscall::Sendmsg,
            4 => Syscall::Sendmmsg,
            5 => Syscall::IoUringSetup,
            _ => Syscall::Connect,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Syscall::Connect => "connect",
            Syscall::Sendto => "sendto",
            Syscall::Sendmsg => "sendmsg",
            Syscall::Sendmmsg => "sendmmsg",
            Syscall::IoUringSetup => "io_uring_setup",
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
    /// missing): it passed the call to the kernel undecided (under `auto`, the supervisor then
    /// sees it).
    ShimUnmapped = 1,
    /// The supervisor could not read the caller's memory (the destination), and let the call go.
    SupervisorUnreadable = 2,
}

/// Slots for [`Unobserved`] causes, indexed by their value (0 unused; room for new causes).
pub const CAUSES: usize = 8;

impl Unobserved {
    pub const ALL: [Unobserved; 2] = [Unobserved::ShimUnmapped, Unobserved::SupervisorUnreadable];

    pub fn from_u8(v: u8) -> Option<Unobserved> {
        Unobserved::ALL.into_iter().find(|c| *c as u8 == v)
    }

    /// The name the report gives the cause.
    pub fn name(self) -> &'static str {
        match self {
            Unobserved::ShimUnmapped => "shim_unmapped",
            Unobserved::SupervisorUnreadable => "supervisor_unreadable",
        }
    }

    /// Was the call passed on to the kernel where, under `auto`, the supervisor sees it?
    pub fn seen_by_supervisor_under_auto(self) -> bool {
        matches!(self, Unobserved::ShimUnmapped)
    }
}

/// Which engine saw the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Source {
    Shim = 1,
    Seccomp = 2,
}

/// The fixed part of a call record.
#[derive(Clone, Copy, Debug)]
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

const CALL_FIXED: usize = 64;

impl Call {
    fn encode(&self, test_len: usize, host_len: usize, thread_len: usize) -> [u8; CALL_FIXED] {
        let mut b = [0u8; CALL_FIXED];
        b[0..4].copy_from_slice(&self.pid.to_ne_bytes());
        b[4..8].copy_from_slice(&self.tid.to_ne_bytes());
        b[8..16].copy_from_slice(&self.time_ns.to_ne_bytes());
        b[16..32].copy_from_slice(&self.dest.ip);
        b[32..34].copy_from_slice(&self.dest.port.to_ne_bytes());
        b[34] = self.transport as u8;
        b[35] = self.action as u8;
        b[36] = self.phase as u8;
        b[37] = self.source as u8;
        b[38] = self.syscall as u8;
        b[40..42].copy_from_slice(&self.category.to_ne_bytes());
        b[42..44].copy_from_slice(&self.rule.to_ne_bytes());
        b[44..48].copy_from_slice(&self.deny_errno.to_ne_bytes());
        b[48..52].copy_from_slice(&RESULT_PENDING.to_ne_bytes());
        b[52..54].copy_from_slice(&(test_len as u16).to_ne_bytes());
        b[54..56].copy_from_slice(&(host_len as u16).to_ne_bytes());
        b[56] = self.has_test as u8;
        // Added after the first layout: the calling thread's name, a third text after `test`
        // and `host` (0 in logs of writers that do not record it).
        b[57] = thread_len as u8;
        b
    }
}

/// Offset of the result field inside slot 0 of a call record.
const CALL_RESULT_OFFSET: usize = TAG_LEN + 48;

/// The fixed part of a process record: who made the calls that follow with this pid.
#[derive(Clone, Copy, Debug)]
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

/// A writer on a mapped log.
pub struct Log {
    base: *mut u8,
    capacity: u64,
}

// SAFETY: all shared state in the mapping is reached through atomics (cursor, dropped, tags,
// results) or through slots that one writer reserved for itself.
unsafe impl Send for Log {}
// SAFETY: as for Send: `&Log` only appends (atomics and self-reserved slots), never mutates
// shared bytes non-atomically.
unsafe impl Sync for Log {}

/// Where a call's result goes once the real system call returns.
pub struct ResultCell(*const AtomicI32);

impl ResultCell {
    /// Records the real outcome: 0 for success, else the errno.
    pub fn set(&self, result: i32) {
        // SAFETY: the cell points into a slot this writer reserved, inside a mapping that is
        // never unmapped (see Log::from_raw), and is 4-byte aligned (slot base + 56).
        unsafe { (*self.0).store(result, Ordering::Relaxed) }
    }
}

impl Log {
    /// # Safety
    /// `base` must point to a shared, writable mapping of `len` bytes of a log file that stays
    /// mapped for as long as the `Log` and any [`ResultCell`] from it are used.
    pub unsafe fn from_raw(base: *mut u8, len: usize) -> Option<Log> {
        if len < HEADER_LEN || !(base as usize).is_multiple_of(8) {
            return None;
        }
        // SAFETY: the header lies inside the mapping (len >= HEADER_LEN).
        let h = unsafe { core::slice::from_raw_parts(base, 40) };
        if h[0..8] != MAGIC
            || u32::from_ne_bytes([h[8], h[9], h[10], h[11]]) != VERSION
            || u32::from_ne_bytes([h[12], h[13], h[14], h[15]]) != SLOT_LEN as u32
        {
            return None;
        }
        let mut cap = [0u8; 8];
        cap.copy_from_slice(&h[OFF_CAPACITY..OFF_CAPACITY + 8]);
        let capacity = u64::from_ne_bytes(cap).min(((len - HEADER_LEN) / SLOT_LEN) as u64);
        Some(Log { base, capacity })
    }

    /// Slots that may be written: the capacity, or less while blocks are not allocated yet.
    fn limit(&self) -> u64 {
        self.counter(OFF_ALLOCATED)
            .load(Ordering::Acquire)
            .min(self.capacity)
    }

    /// Slots reserved so far (some may lie beyond the limit and be dropped).
    pub fn cursor(&self) -> u64 {
        self.counter(OFF_CURSOR).load(Ordering::Relaxed)
    }

    pub fn allocated(&self) -> u64 {
        self.counter(OFF_ALLOCATED).load(Ordering::Acquire)
    }

    /// Counts one call let pass without a decision or record (see [`Unobserved`]).
    pub fn count_unobserved(&self, cause: Unobserved) {
        self.counter(OFF_UNOBSERVED + 8 * cause as usize)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes that the file's blocks for the first `slots` slots are allocated.
    pub fn set_allocated(&self, slots: u64) {
        self.counter(OFF_ALLOCATED)
            .store(slots.min(self.capacity), Ordering::Release);
    }

    fn counter(&self, off: usize) -> &AtomicU64 {
        // SAFETY: off is a fixed, 8-aligned offset inside the header, which the mapping covers.
        unsafe { &*(self.base.add(off).cast::<AtomicU64>()) }
    }

    fn tag(&self, slot: u64) -> &AtomicU32 {
        // SAFETY: callers pass slots below capacity, so the slot lies inside the mapping;
        // slots are 128-byte aligned.
        unsafe {
            &*(self
                .base
                .add(HEADER_LEN + slot as usize * SLOT_LEN)
                .cast::<AtomicU32>())
        }
    }

    /// Appends a record made of `parts`, concatenated. Returns its first slot.
    fn append(&self, kind: u8, parts: &[&[u8]]) -> Option<u64> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let n = total.div_ceil(PAYLOAD_PER_SLOT).clamp(1, MAX_SLOTS);
        let tag = |kind: u8, n: usize, idx: usize| {
            (TAG_MARK << 24) | (kind as u32) << 16 | (n as u32) << 8 | idx as u32
        };
        let first = self
            .counter(OFF_CURSOR)
            .fetch_add(n as u64, Ordering::Relaxed);
        let limit = self.limit();
        if first.checked_add(n as u64).is_none_or(|end| end > limit) {
            self.counter(OFF_DROPPED).fetch_add(1, Ordering::Relaxed);
            if first < limit {
                // Mark the reserved slots that exist, so the reader skips them cleanly.
                let pad = (limit - first) as usize;
                self.tag(first)
                    .store(tag(KIND_PAD, pad, 0), Ordering::Release);
            }
            return None;
        }
        let limit = n * PAYLOAD_PER_SLOT;
        let mut pos = 0usize;
        for part in parts {
            let mut rest = &part[..part.len().min(limit - pos)];
            while !rest.is_empty() {
                let (slot, off) = (pos / PAYLOAD_PER_SLOT, pos % PAYLOAD_PER_SLOT);
                let take = rest.len().min(PAYLOAD_PER_SLOT - off);
                let at = HEADER_LEN + (first as usize + slot) * SLOT_LEN + TAG_LEN + off;
                // SAFETY: bytes at..at+take lie inside one slot reserved above, below capacity;
                // the source is a caller's slice that cannot overlap the mapping's free slots.
                unsafe { core::ptr::copy_nonoverlapping(rest.as_ptr(), self.base.add(at), take) };
                rest = &rest[take..];
                pos += take;
            }
        }
        for idx in 1..n {
            self.tag(first + idx as u64)
                .store(tag(kind, n, idx), Ordering::Release);
        }
        self.tag(first).store(tag(kind, n, 0), Ordering::Release);
        Some(first)
    }

    /// Appends a call. `thread` is the calling thread's name, when the run asks for it (else
    /// empty). The returned cell takes the real call's result afterwards.
    pub fn append_call(
        &self,
        call: &Call,
        test: &[u8],
        host: &[u8],
        thread: &[u8],
    ) -> Option<ResultCell> {
        let test = &test[..test.len().min(MAX_TEXT)];
        let host = &host[..host.len().min(MAX_TEXT)];
        let thread = &thread[..thread.len().min(MAX_THREAD_NAME)];
        let fixed = call.encode(test.len(), host.len(), thread.len());
        let first = self.append(KIND_CALL, &[&fixed, test, host, thread])?;
        let at = HEADER_LEN + first as usize * SLOT_LEN + CALL_RESULT_OFFSET;
        // SAFETY: inside the slot just written; 4-byte aligned.
        Some(ResultCell(unsafe { self.base.add(at).cast::<AtomicI32>() }))
    }

    /// Appends a process record. `cmdline` is NUL-separated, as in `/proc/PID/cmdline`.
    pub fn append_process(&self, p: &Process, exe: &[u8], cmdline: &[u8]) {
        let exe = &exe[..exe.len().min(MAX_TEXT)];
        let cmdline = &cmdline[..cmdline.len().min(MAX_TEXT)];
        let fixed = p.encode(exe.len(), cmdline.len());
        let _ = self.append(KIND_PROCESS, &[&fixed, exe, cmdline]);
    }
}

#[cfg(feature = "alloc")]
pub use decode::*;

#[cfg(feature = "alloc")]
mod decode {
    use super::*;
    use alloc::vec::Vec;

    /// A call as read back from the log.
    #[derive(Clone, Debug)]
    pub struct CallRecord {
        pub call: Call,
        /// The real call's outcome: 0, an errno, or [`RESULT_PENDING`].
        pub result: i32,
        pub test: Option<Vec<u8>>,
        pub host: Vec<u8>,
        /// The calling thread's name (at most 15 bytes: the kernel's), when the run recorded
        /// it (`policy::FLAG_THREAD_NAMES`); else empty.
        pub thread: Vec<u8>,
    }

    #[derive(Clone, Debug)]
    pub struct ProcessRecord {
        pub process: Process,
        pub exe: Vec<u8>,
        pub cmdline: Vec<u8>,
    }

    #[derive(Clone, Debug)]
    pub enum Record {
        Call(CallRecord),
        Process(ProcessRecord),
    }

    /// Everything read from a log file.
    #[derive(Debug, Default)]
    pub struct Decoded {
        pub records: Vec<Record>,
        /// Records writers could not append because the log was full.
        pub dropped: u64,
        /// Reserved slots never committed (a writer died mid-record, or is still writing).
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

    /// How many bytes of the file hold the header and every reserved slot.
    pub fn used_len(header: &[u8]) -> Option<usize> {
        if header.len() < 40 || header[0..8] != MAGIC {
            return None;
        }
        let cap = u64::from_ne_bytes(header[OFF_CAPACITY..OFF_CAPACITY + 8].try_into().ok()?);
        let cursor = u64::from_ne_bytes(header[OFF_CURSOR..OFF_CURSOR + 8].try_into().ok()?);
        Some(HEADER_LEN + cursor.min(cap) as usize * SLOT_LEN)
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

    /// Decodes a log file's contents (at least [`used_len`] bytes of it).
    pub fn decode(file: &[u8]) -> Result<Decoded, &'static str> {
        if file.len() < HEADER_LEN || file[0..8] != MAGIC {
            return Err("not a nettrap event log");
        }
        if u32_at(file, OFF_VERSION) != VERSION || u32_at(file, OFF_SLOT_LEN) != SLOT_LEN as u32 {
            return Err("event log of another nettrap version");
        }
        let mut out = Decoded {
            dropped: u64_at(file, OFF_DROPPED),
            ..Decoded::default()
        };
        for (i, n) in out.unobserved.iter_mut().enumerate() {
            *n = u64_at(file, OFF_UNOBSERVED + 8 * i);
        }
        let slots = (file.len() - HEADER_LEN) / SLOT_LEN;
        let reserved = (u64_at(file, OFF_CURSOR) as usize).min(slots);
        let tag_at = |i: usize| u32_at(file, HEADER_LEN + i * SLOT_LEN);
        let mut i = 0;
        while i < reserved {
            let tag = tag_at(i);
            let (mark, kind, n, idx) = (
                tag >> 24,
                (tag >> 16) as u8,
                ((tag >> 8) & 0xff) as usize,
                tag & 0xff,
            );
            if mark == TAG_MARK && kind == KIND_PAD {
                i += n.max(1);
                continue;
            }
            if mark != TAG_MARK || idx != 0 || n == 0 || i + n > reserved {
                // A run of slots without a record start is one record left unfinished (or
                // slots reserved past the limit and dropped, already counted as such).
                out.torn += 1;
                i += 1;
                while i < reserved && tag_at(i) >> 24 != TAG_MARK {
                    i += 1;
                }
                continue;
            }
            let complete = (1..n).all(|k| tag_at(i + k) == (tag & !0xff) | k as u32);
            if !complete {
                out.torn += 1;
                i += 1;
                continue;
            }
            let mut payload = Vec::with_capacity(n * PAYLOAD_PER_SLOT);
            for k in 0..n {
                let s = HEADER_LEN + (i + k) * SLOT_LEN + TAG_LEN;
                payload.extend_from_slice(&file[s..s + PAYLOAD_PER_SLOT]);
            }
            match kind {
                KIND_CALL => out.records.push(Record::Call(decode_call(&payload))),
                KIND_PROCESS => out.records.push(Record::Process(decode_process(&payload))),
                _ => out.torn += 1,
            }
            i += n;
        }
        Ok(out)
    }

    fn text(p: &[u8], at: usize, len: usize) -> Vec<u8> {
        p.get(at..at + len).unwrap_or(&[]).to_vec()
    }

    fn decode_call(p: &[u8]) -> CallRecord {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&p[16..32]);
        let (test_len, host_len) = (u16_at(p, 52) as usize, u16_at(p, 54) as usize);
        let thread_len = p[57] as usize;
        let has_test = p[56] != 0;
        let call = Call {
            pid: u32_at(p, 0),
            tid: u32_at(p, 4),
            time_ns: u64_at(p, 8),
            dest: Dest {
                ip,
                port: u16_at(p, 32),
            },
            transport: Transport::from_u8(p[34]),
            action: Action::from_u8(p[35]),
            phase: Phase::from_u8(p[36]),
            source: if p[37] == Source::Seccomp as u8 {
                Source::Seccomp
            } else {
                Source::Shim
            },
            syscall: Syscall::from_u8(p[38]),
            category: u16_at(p, 40),
            rule: u16_at(p, 42),
            deny_errno: u32_at(p, 44) as i32,
            has_test,
        };
        CallRecord {
            call,
            result: u32_at(p, 48) as i32,
            test: has_test.then(|| text(p, CALL_FIXED, test_len)),
            host: text(p, CALL_FIXED + test_len, host_len),
            thread: text(p, CALL_FIXED + test_len + host_len, thread_len),
        }
    }

    fn decode_process(p: &[u8]) -> ProcessRecord {
        let (exe_len, cmd_len) = (u16_at(p, 16) as usize, u16_at(p, 18) as usize);
        ProcessRecord {
            process: Process {
                pid: u32_at(p, 0),
                ppid: u32_at(p, 4),
                time_ns: u64_at(p, 8),
                source: if p[20] == Source::Seccomp as u8 {
                    Source::Seccomp
                } else {
                    Source::Shim
                },
            },
            exe: text(p, PROCESS_FIXED, exe_len),
            cmdline: text(p, PROCESS_FIXED + exe_len, cmd_len),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use alloc::vec;

        #[test]
        fn round_trip_torn_and_dropped() {
            let cap = 16u64;
            // u64 backing keeps the buffer 8-aligned, as a mapping is.
            let mut backing = vec![0u64; file_len(cap) as usize / 8];
            let base = backing.as_mut_ptr().cast::<u8>();
            // SAFETY: the buffer is file_len(cap) bytes, 8-aligned, and outlives `log`.
            unsafe { core::ptr::copy_nonoverlapping(header(cap, cap).as_ptr(), base, HEADER_LEN) };
            // SAFETY: base is that 8-aligned buffer of file_len(cap) bytes, with a valid header,
            // alive and otherwise unused for the rest of the test.
            let log = unsafe { Log::from_raw(base, file_len(cap) as usize) }.unwrap();
            let call = Call {
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
            };
            log.append_process(
                &Process {
                    pid: 7,
                    ppid: 1,
                    time_ns: 0,
                    source: Source::Shim,
                },
                b"/bin/x",
                b"x\0-y\0",
            );
            let long_id = vec![b'a'; 300];
            log.append_call(&call, &long_id, b"db", b"net::search_ind")
                .unwrap()
                .set(111);
            // A record reserved but never committed, then one that does not fit.
            log.counter(OFF_CURSOR).fetch_add(2, Ordering::Relaxed);
            assert!(
                log.append_call(&call, &vec![b'b'; 2000], b"", b"")
                    .is_none()
            );
            log.count_unobserved(Unobserved::SupervisorUnreadable);
            // SAFETY: the same live buffer; `log` writes nothing more while `bytes` is read.
            let bytes = unsafe { core::slice::from_raw_parts(base, file_len(cap) as usize) };
            let mut d = decode(&bytes[..used_len(bytes).unwrap()]).unwrap();
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
            assert_eq!(c.test.as_deref(), Some(&long_id[..]));
            assert_eq!(
                (&c.host[..], &c.thread[..]),
                (&b"db"[..], &b"net::search_ind"[..])
            );
            assert_eq!(
                (c.result, c.call.port_for_test(), c.call.rule),
                (111, 9200, 4)
            );
        }

        impl Call {
            fn port_for_test(&self) -> u16 {
                self.dest.port
            }
        }
    }
}
