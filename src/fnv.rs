//! FNV-1a (64 bits): the hash behind the policy fingerprint (`policy::Policy::fingerprint`,
//! fixed and documented: its values must never change) and the cache directory's name
//! (`engine::preload`).
//!
//! [`update`] is the textbook byte loop, usable in constants. [`update_sparse`] gives the same
//! value faster on data that is mostly zeros (the compiled policy is a fixed-size block, about
//! 150 KB, nearly all padding): a zero byte only multiplies the state by the prime, so a run of
//! `n` zero bytes is one multiplication by the prime's `n`th power ([`prime_pow`]), and only the
//! nonzero bytes (found a word at a time) go through the byte loop. The policy's few thousand
//! nonzero bytes are scattered over every entry (an empty rule is not all zeros), so skipping
//! whole zero pages or 64-byte chunks, as this did before, still fed ~40 KB through the loop:
//! ~50 us of every run's start.

pub const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;
pub const PAGE: usize = 4096;
/// `PRIME` to the powers 0..64 (wrapping): what that many zero bytes do to the state.
const SMALL_POWERS: [u64; 64] = {
    let mut t = [1u64; 64];
    let mut i = 1;
    while i < 64 {
        t[i] = t[i - 1].wrapping_mul(PRIME);
        i += 1;
    }
    t
};

/// `PRIME` to the power `n` (wrapping): what `n` zero bytes do to the state. A table below 64,
/// square-and-multiply above.
fn prime_pow(n: usize) -> u64 {
    if n < SMALL_POWERS.len() {
        return SMALL_POWERS[n];
    }
    let (mut result, mut base, mut e) = (1u64, PRIME, n);
    while e > 0 {
        if e & 1 == 1 {
            result = result.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        e >>= 1;
    }
    result
}

/// Feeds `bytes` to the hash state `h`.
pub const fn update(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(PRIME);
        i += 1;
    }
    h
}

/// As [`update`] (the same value), with every run of zero bytes taken at once.
pub fn update_sparse(mut h: u64, bytes: &[u8]) -> u64 {
    // Zero bytes seen and not yet applied.
    let mut zeros = 0usize;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        if w == [0u8; 8] {
            zeros += 8;
            continue;
        }
        for &b in w {
            (h, zeros) = feed(h, zeros, b);
        }
    }
    for &b in words.remainder() {
        (h, zeros) = feed(h, zeros, b);
    }
    h.wrapping_mul(prime_pow(zeros))
}

/// One byte after `zeros` pending zero bytes: the new state and pending count.
#[inline(always)]
fn feed(h: u64, zeros: usize, b: u8) -> (u64, usize) {
    if b == 0 {
        (h, zeros + 1)
    } else {
        (
            (h.wrapping_mul(prime_pow(zeros)) ^ b as u64).wrapping_mul(PRIME),
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // The FNV-1a 64 test vectors.
        assert_eq!(update(OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(update(OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(update(OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn powers() {
        for n in [0, 1, 2, 63, 64, 65, 4_096, 151_336] {
            assert_eq!(prime_pow(n), prime_pow_slow(n), "{n}");
        }
    }

    fn prime_pow_slow(n: usize) -> u64 {
        (0..n).fold(1u64, |p, _| p.wrapping_mul(PRIME))
    }

    #[test]
    fn sparse_gives_the_same_value() {
        let mut data = vec![0u8; 10_000];
        for (i, at) in [0usize, 63, 64, 65, 200, 4095, 9_999]
            .into_iter()
            .enumerate()
        {
            data[at] = i as u8 + 1;
        }
        for len in [
            0, 1, 7, 8, 9, 63, 64, 65, 127, 128, 129, 4_096, 5_000, 8_193, 10_000,
        ] {
            for from in [0, 1, 7, 8, 9] {
                let d = &data[from.min(len)..len];
                assert_eq!(update_sparse(OFFSET, d), update(OFFSET, d), "{from}..{len}");
            }
        }
    }
}
