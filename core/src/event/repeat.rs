//! A storm's repeated call, read cheaply: most of a log's one-slot calls repeat an earlier call
//! to the same port (one test, one thread, one destination: the last call of its lane, see
//! `Hint`), differing only in their time, result and blocked time, even when the storm cycles
//! through a few ports. [`same`] tells such a call from its predecessor by comparing words, and
//! [`update`] reads it into the predecessor's record by checking only what may differ (the
//! checksum, the guarded result, the blocked time), every other field already checked. Either
//! way the call read is the one `decode_call` reads, and a damaged one is torn as there. A
//! skim reuses what its choice said of the last heads it saw ([`Heads`]), and passes over a
//! run of unwanted calls together ([`Heads::unwanted_run`]).

use super::{
    CALL_BLOCKED, CALL_FIXED, CALL_RESULT, CHECKSUM_SEED, KIND_CALL, PAYLOAD_PER_SLOT, RecordRef,
    SLOT_LEN, TAG_LEN, blocked_of, checksum_fold, checksum_mix, lane_of, tag,
};

type Payload = [u8; PAYLOAD_PER_SLOT];

/// Payload word `k` (bytes `8k..8k+8`), in the host's order as `decode_call` reads it.
#[inline(always)]
fn word(p: &Payload, k: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&p[8 * k..8 * k + 8]);
    u64::from_ne_bytes(w)
}

/// Payload word `k`, little-endian whatever the host: its bytes at known bit positions.
#[inline(always)]
fn le_word(p: &Payload, k: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&p[8 * k..8 * k + 8]);
    u64::from_le_bytes(w)
}

/// What a call's [`super::CallHead`] is read from, as one number: the port (bytes 32-33),
/// source (37) and syscall (38) of word 4, and the host's length (bytes 58-59) of word 7.
#[inline(always)]
pub(super) fn head(p: &Payload) -> u64 {
    const WORD4: u64 = 0x00ff_ff00_0000_ffff;
    const WORD7: u64 = 0xffff_0000;
    (le_word(p, 4) & WORD4) | ((le_word(p, 7) & WORD7) << 8)
}

/// The lane of one-slot call `p` (see `Hint`): [`lane_of`] its port.
#[inline(always)]
pub(super) fn lane(p: &Payload) -> usize {
    lane_of(u16::from_ne_bytes([p[32], p[33]]))
}

/// Does one-slot call `p` hold what `prev` (a call read in full, of payload length `len`) holds,
/// time (word 1), result (word 6) and blocked time (word 8) aside: the same pid and thread,
/// destination, kinds, category, rule, errno, lengths and texts? Its payload length is then
/// `len`. Bytes past the texts are compared too (it then only says no more often).
#[inline(always)]
pub(super) fn same(prev: &Payload, p: &Payload, len: usize) -> bool {
    const _: () = assert!(CALL_FIXED == 72 && CALL_RESULT == 48 && CALL_BLOCKED == 64);
    let d = |k: usize| word(prev, k) ^ word(p, k);
    let mut diff = d(0) | d(2) | d(3) | d(4) | d(5) | d(7);
    // The texts' words (a one-slot call's end at most the payload's).
    for k in CALL_FIXED / 8..len.div_ceil(8).min(PAYLOAD_PER_SLOT / 8) {
        diff |= d(k);
    }
    diff == 0
}

/// What a skim's choice said of the heads it saw last (a choice depends on the head alone),
/// a few heads remembered by a hash of the head (independent of the lanes: heads that share a
/// lane are remembered apart): a storm's calls are then chosen without asking.
pub(super) struct Heads {
    /// A head, with [`WANTED`] set where it was wanted; [`NO_HEAD`] where none is.
    seen: [u64; HEADS],
}

/// Heads remembered.
const HEADS: usize = 16;

/// No head (a head's top byte is always 0).
const NO_HEAD: u64 = u64::MAX;

/// Set in a remembered head that was wanted (a head's top byte is always 0).
const WANTED: u64 = 1 << 63;

impl Default for Heads {
    fn default() -> Heads {
        Heads {
            seen: [NO_HEAD; HEADS],
        }
    }
}

/// Where `head` is remembered: the top bits of its product by 2^64 / φ.
#[inline(always)]
fn at(head: u64) -> usize {
    const _: () = assert!(HEADS.is_power_of_two() && HEADS > 1);
    (head.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - HEADS.trailing_zeros())) as usize
}

impl Heads {
    /// What was said of `head`, if it is remembered.
    #[inline(always)]
    pub(super) fn said(&self, head: u64) -> Option<bool> {
        let seen = self.seen[at(head)];
        if seen & !WANTED == head {
            Some(seen & WANTED != 0)
        } else {
            None
        }
    }

    #[inline(always)]
    pub(super) fn say(&mut self, head: u64, wanted: bool) {
        self.seen[at(head)] = head | if wanted { WANTED } else { 0 };
    }

    /// How many of `slots` (whole slots), from the first, are one-slot calls of heads remembered
    /// as unwanted: what a skim passes over after an unwanted call. The first is looked at
    /// here, the others out of line: most calls are followed by none (a log whose calls do not
    /// repeat pays one test).
    #[inline(always)]
    pub(super) fn unwanted_run(&self, slots: &[u8]) -> usize {
        match slots.split_at_checked(SLOT_LEN) {
            Some((first, rest)) if self.unwanted_slot(first) => 1 + self.unwanted_rest(rest),
            _ => 0,
        }
    }

    #[inline(never)]
    fn unwanted_rest(&self, slots: &[u8]) -> usize {
        slots
            .chunks_exact(SLOT_LEN)
            .take_while(|s| self.unwanted_slot(s))
            .count()
    }

    /// Is slot `s` a one-slot call of a head remembered as unwanted?
    #[inline(always)]
    fn unwanted_slot(&self, s: &[u8]) -> bool {
        let (t, p) = s.split_at(TAG_LEN);
        t[..4] == tag(KIND_CALL, 1, 0).to_ne_bytes()
            && <&Payload>::try_from(p).is_ok_and(|p| {
                let head = head(p);
                self.seen[at(head)] == head
            })
    }
}

/// Updates call `r`, read from a slot whose next one-slot call `p` is the [`same`] (payload
/// length `len`, checksum `sum` from its tag), to `p`: its time, result and blocked time, as
/// `decode_call` reads them. Returns `p`'s result, or None where `decode_call` finds it
/// damaged (`r` is then left as it was). The texts stay `r`'s, which hold the same bytes.
#[inline(always)]
pub(super) fn update(r: &mut RecordRef<'_>, p: &Payload, len: usize, sum: u32) -> Option<i32> {
    let RecordRef::Call(c) = r else {
        return None;
    };
    if checksum(p, len) != sum {
        return None;
    }
    let result = word(p, CALL_RESULT / 8);
    if result >> 32 != !result & 0xffff_ffff {
        return None;
    }
    c.blocked_ns = blocked_of(word(p, CALL_BLOCKED / 8))?;
    c.result = result as u32 as i32;
    c.call.time_ns = word(p, 1);
    Some(c.result)
}

/// `call_checksum` of one-slot call `p`'s first `len` bytes (at most the payload): the same
/// sum, its words read where they lie, the last one masked (its bytes past `len` are not the
/// record's) instead of copied.
#[inline(always)]
pub(super) fn checksum(p: &Payload, len: usize) -> u32 {
    let mut h = CHECKSUM_SEED ^ KIND_CALL as u64;
    for k in [0, 1, 2, 3, 4, 5, 7] {
        h = checksum_mix(h, le_word(p, k));
    }
    let len = len.min(PAYLOAD_PER_SLOT);
    let (full, rest) = (len / 8, len % 8);
    for k in CALL_FIXED / 8..full {
        h = checksum_mix(h, le_word(p, k));
    }
    if rest > 0 && full >= CALL_FIXED / 8 {
        // The bytes of the last word past `len` are not the record's: zero, as summed.
        h = checksum_mix(h, le_word(p, full) & (u64::MAX >> (8 * (8 - rest))));
    }
    checksum_fold(h)
}
