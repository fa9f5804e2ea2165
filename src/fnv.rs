//! FNV-1a (64 bits): the hash behind the policy fingerprint (`policy::Policy::fingerprint`,
//! fixed and documented: its values must never change) and the cache directory's name
//! (`engine::preload`).
//!
//! [`update`] is the textbook byte loop, usable in constants. [`update_sparse`] gives the same
//! value faster on data that is mostly zeros (the compiled policy is a fixed-size block, about
//! 150 KB, nearly all padding): a zero byte only multiplies the state by the prime, so a run of
//! [`CHUNK`] zero bytes is one multiplication by the prime's [`CHUNK`]th power, and a zero page
//! ([`PAGE`] bytes, found by one `memcmp` against zeros) one by its [`PAGE`]th.

pub const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;
const CHUNK: usize = 64;
pub const PAGE: usize = 4096;
/// `PRIME` to the power `n` (wrapping): what `n` zero bytes do to the state.
const fn prime_pow(n: usize) -> u64 {
    let (mut p, mut i) = (1u64, 0);
    while i < n {
        p = p.wrapping_mul(PRIME);
        i += 1;
    }
    p
}
const PRIME_CHUNK: u64 = prime_pow(CHUNK);
const PRIME_PAGE: u64 = prime_pow(PAGE);
static ZEROS: [u8; PAGE] = [0; PAGE];

/// Whether `bytes` (at most [`PAGE`] long) are all zero: one `memcmp`, vectorised by libc.
fn is_zero(bytes: &[u8]) -> bool {
    bytes == &ZEROS[..bytes.len()]
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

/// As [`update`] (the same value), with every aligned [`PAGE`] and run of [`CHUNK`] zero bytes
/// taken at once.
pub fn update_sparse(mut h: u64, bytes: &[u8]) -> u64 {
    for page in bytes.chunks(PAGE) {
        if page.len() == PAGE && is_zero(page) {
            h = h.wrapping_mul(PRIME_PAGE);
            continue;
        }
        let chunks = page.chunks_exact(CHUNK);
        let rest = chunks.remainder();
        for c in chunks {
            h = if is_zero(c) {
                h.wrapping_mul(PRIME_CHUNK)
            } else {
                update(h, c)
            };
        }
        h = update(h, rest);
    }
    h
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
    fn sparse_gives_the_same_value() {
        let mut data = vec![0u8; 10_000];
        for (i, at) in [0usize, 63, 64, 65, 200, 4095, 9_999]
            .into_iter()
            .enumerate()
        {
            data[at] = i as u8 + 1;
        }
        for len in [0, 1, 63, 64, 65, 127, 128, 129, 4_096, 5_000, 8_193, 10_000] {
            for from in [0, 1, 7] {
                let d = &data[from.min(len)..len];
                assert_eq!(update_sparse(OFFSET, d), update(OFFSET, d), "{from}..{len}");
            }
        }
    }
}
