//! The memory functions the compiler calls on its own (`memcpy`, `memset`, `bcmp`, `strlen`:
//! for copies, zeroed buffers and comparisons), defined here so the shim imports none of them
//! from libc: each import is one more symbol the loader binds in every process of the run.
//!
//! They are bound to those names inside the shim only (`--defsym` in build.rs; the names are
//! local, as every symbol the shim does not list for export), so the program keeps libc's. Each
//! loop holds an empty `asm!` so the compiler cannot turn it back into a call of itself.
//! The shim's copies are small (addresses, records, paths): a word at a time is enough.

use core::ffi::{c_char, c_int, c_void};

/// Keeps a loop a loop (see the module comment).
#[inline(always)]
fn barrier() {
    // SAFETY: an empty instruction sequence.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) }
}

/// # Safety
/// As memcpy(3): `dst` and `src` valid for `n` bytes, not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nettrap_memcpy(
    dst: *mut c_void,
    src: *const c_void,
    n: usize,
) -> *mut c_void {
    let (d, s) = (dst.cast::<u8>(), src.cast::<u8>());
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: i + 32 <= n; unaligned word accesses within both buffers.
        unsafe {
            let w = [
                s.add(i).cast::<u64>().read_unaligned(),
                s.add(i + 8).cast::<u64>().read_unaligned(),
                s.add(i + 16).cast::<u64>().read_unaligned(),
                s.add(i + 24).cast::<u64>().read_unaligned(),
            ];
            d.add(i).cast::<u64>().write_unaligned(w[0]);
            d.add(i + 8).cast::<u64>().write_unaligned(w[1]);
            d.add(i + 16).cast::<u64>().write_unaligned(w[2]);
            d.add(i + 24).cast::<u64>().write_unaligned(w[3]);
        }
        i += 32;
        barrier();
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n; unaligned word access within both buffers.
        unsafe {
            d.add(i)
                .cast::<u64>()
                .write_unaligned(s.add(i).cast::<u64>().read_unaligned())
        };
        i += 8;
        barrier();
    }
    while i < n {
        // SAFETY: i < n.
        unsafe { *d.add(i) = *s.add(i) };
        i += 1;
        barrier();
    }
    dst
}

/// # Safety
/// As memset(3): `dst` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nettrap_memset(dst: *mut c_void, c: c_int, n: usize) -> *mut c_void {
    let d = dst.cast::<u8>();
    let word = u64::from(c as u8) * 0x0101_0101_0101_0101;
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        unsafe { d.add(i).cast::<u64>().write_unaligned(word) };
        i += 8;
        barrier();
    }
    while i < n {
        // SAFETY: i < n.
        unsafe { *d.add(i) = c as u8 };
        i += 1;
        barrier();
    }
    dst
}

/// # Safety
/// As bcmp(3): `a` and `b` valid for `n` bytes. 0 when equal, else not 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nettrap_bcmp(a: *const c_void, b: *const c_void, n: usize) -> c_int {
    let (a, b) = (a.cast::<u8>(), b.cast::<u8>());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let (x, y) = unsafe {
            (
                a.add(i).cast::<u64>().read_unaligned(),
                b.add(i).cast::<u64>().read_unaligned(),
            )
        };
        if x != y {
            return 1;
        }
        i += 8;
        barrier();
    }
    while i < n {
        // SAFETY: i < n.
        if unsafe { *a.add(i) != *b.add(i) } {
            return 1;
        }
        i += 1;
        barrier();
    }
    0
}

/// # Safety
/// As strlen(3): `s` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nettrap_strlen(s: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: every byte up to the NUL is inside the string.
    while unsafe { *s.add(n) } != 0 {
        n += 1;
        barrier();
    }
    n
}
