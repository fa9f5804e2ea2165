//! The live environment, read as `getenv` would without importing it: the run's own variables
//! (once, from the constructor) and the current test (`NETTRAP_TEST`, `PYTEST_CURRENT_TEST`;
//! see nettrap_core::test_id) on every call.
//!
//! The current test is read on the hot path, so where the variables were found is remembered
//! ([`Found`]), and each call checks that the environment still has that shape before it
//! trusts it: the same array (`environ`), the same entries (each pointer, read from the first
//! up as getenv reads them, none NULL before the length the scan saw and its NULL still there,
//! and a hash of them all the same), and, for each variable found, its entry still naming it.
//! Only the array's pointers are read, not the strings they point to: much less than a scan of
//! the whole environment. Every way libc changes the environment (`setenv`, `putenv`,
//! `unsetenv`, `clearenv`), and a program writing `environ`'s entries itself, changes one of
//! those: replacing a value replaces the entry the check reads; adding or removing one moves
//! the NULL or the entries. What none of this sees is a string changed in place (allowed for
//! one given to `putenv`) that comes to name a test variable another entry did not: a value
//! changed in place is read afresh at every call.
//!
//! The walk never reads past the first NULL, so an array a program assigned to `environ` and
//! then shrank or freed is read no further than getenv would (a check of the NULL at the old
//! length alone once read a shrunk array's unmapped tail).

use core::ffi::{CStr, c_char};
use core::sync::atomic::{AtomicU64, Ordering};
use nettrap_core::test_id::{self, Phase};

/// libc's `environ` (the current environment array), or null.
pub fn environ() -> *const *const c_char {
    match super::symbols::get(&super::symbols::ENVIRON) {
        0 => core::ptr::null(),
        // SAFETY: the address of libc's environ variable (or the executable's copy of it).
        v => unsafe { core::ptr::read_volatile(v as *const *const *const c_char) },
    }
}

/// Does the environment entry at `entry` start with `name=`?
///
/// # Safety
/// `entry` must point to a NUL-terminated string.
unsafe fn name_matches(entry: *const u8, name: &[u8]) -> bool {
    for (i, &c) in name.iter().enumerate() {
        // SAFETY: every byte before the first mismatch (or the NUL, which mismatches) is inside
        // the string.
        if unsafe { *entry.add(i) } != c {
            return false;
        }
    }
    // SAFETY: all of name matched, so the string is at least that long plus its NUL.
    unsafe { *entry.add(name.len()) == b'=' }
}

/// The value of `name=value` at `entry`.
///
/// # Safety
/// `entry` must point to a NUL-terminated string that starts with `name=`, which libc keeps
/// alive (an environment entry).
unsafe fn value_of(entry: *const u8, name: &[u8]) -> &'static [u8] {
    // SAFETY: from the caller: the value follows `name=` and ends at the string's NUL.
    unsafe { CStr::from_ptr(entry.add(name.len() + 1).cast::<c_char>()).to_bytes() }
}

/// The value of one environment variable (getenv, without importing it).
pub fn env_value(name: &[u8]) -> Option<&'static [u8]> {
    env_value_in(environ(), name)
}

/// The value of one variable of the environment array `env` (null: none).
pub fn env_value_in(env: *const *const c_char, name: &[u8]) -> Option<&'static [u8]> {
    let [value] = env_values_in(env, [name]);
    value
}

/// The values of `N` variables of the environment array `env` (null: none), in one pass;
/// each the first entry of its name, as getenv finds it. Names are not empty (an entry is
/// rejected by its first byte before it is compared whole).
pub fn env_values_in<const N: usize>(
    env: *const *const c_char,
    names: [&[u8]; N],
) -> [Option<&'static [u8]>; N] {
    let mut found = [None; N];
    // SAFETY: env is null or a NULL-terminated array of NUL-terminated strings (libc's environ
    // or the initial environment glibc hands constructors), read as getenv would.
    unsafe {
        let mut p = env;
        while !p.is_null() && !(*p).is_null() {
            let entry = (*p).cast::<u8>();
            p = p.add(1);
            let first = *entry;
            if !names.iter().any(|name| name[0] == first) {
                continue;
            }
            for (i, name) in names.iter().enumerate() {
                if found[i].is_none() && name_matches(entry, name) {
                    found[i] = Some(value_of(entry, name));
                }
            }
        }
    }
    found
}

/// Which bytes begin one of the test variables' names (most environment entries begin with
/// another: one table look-up rejects them).
const FIRST_BYTES: [bool; 256] = {
    let mut b = [false; 256];
    let mut i = 0;
    while i < test_id::TEST_VARS.len() {
        b[test_id::TEST_VARS[i].to_bytes()[0] as usize] = true;
        i += 1;
    }
    b
};

/// Where the last scan found the test variables, as three words written by whichever thread
/// scanned last: the array and a hash of its entries' pointers (each with a 16-bit tag in the
/// bits above 48 bits), and the entry count, each variable's index ([`ABSENT`] when it was not
/// there) and the tag. A reader trusts the words only when all three carry the same non-zero
/// tag, so it never mixes two scans; a fork child starts from its parent's copy, which
/// describes memory it copied too. Nothing here ever waits or needs resetting.
struct Found {
    array: AtomicU64,
    entries: AtomicU64,
    shape: AtomicU64,
}

static FOUND: Found = Found {
    array: AtomicU64::new(0),
    entries: AtomicU64::new(0),
    shape: AtomicU64::new(0),
};

/// The tag of the next scan's words (0 is never used: it marks "nothing found yet").
static TAG: AtomicU64 = AtomicU64::new(1);

const ABSENT: u64 = 0xffff;
const LOW48: u64 = (1 << 48) - 1;
const VARS: usize = test_id::TEST_VARS.len();
const _: () = assert!(VARS == 2, "shape holds the count, two indexes and the tag");

/// The next step of the hash of an environment's entry pointers (order-dependent: an entry
/// moved to another place changes it).
#[inline(always)]
fn mix(h: u64, entry: *const c_char) -> u64 {
    h.rotate_left(7) ^ entry as u64
}

/// The hash of `env`'s first `len` entries, as [`scan`] takes it ([`mix`], from the first up),
/// or None when one of them is NULL (the array is shorter now).
///
/// # Safety
/// `env` is a NULL-terminated array of pointers. Entries are taken in order and none after a
/// NULL is used; four are read at once only where the four lie in one page, which the first of
/// them (inside the array, or its NULL) shows to be mapped, so nothing is read from a page the
/// array does not reach, wherever it now ends.
unsafe fn entries_hash(env: *const *const c_char, len: usize) -> Option<u64> {
    let mut h = 0u64;
    let mut i = 0;
    while i < len {
        // SAFETY: entries before i were not NULL, so entry i is inside the array or its NULL.
        let p = unsafe { env.add(i) };
        // The entries from i to the end of entry i's page (at least one).
        let n = (len - i).min((0x1000 - (p as usize & 0xfff)) / 8);
        let mut k = 0;
        while k + 4 <= n {
            // SAFETY: the four words lie in the page of entry i (see above); read volatile, as
            // words past the array's NULL may be any value (they are then not used).
            let [a, b, c, d] = unsafe { core::ptr::read_volatile(p.add(k).cast::<[usize; 4]>()) };
            if a.min(b).min(c).min(d) == 0 {
                return None;
            }
            h = (((h.rotate_left(7) ^ a as u64).rotate_left(7) ^ b as u64).rotate_left(7)
                ^ c as u64)
                .rotate_left(7)
                ^ d as u64;
            k += 4;
        }
        while k < n {
            // SAFETY: in entry i's page, after entries that were not NULL.
            let a = unsafe { *p.add(k) };
            if a.is_null() {
                return None;
            }
            h = mix(h, a);
            k += 1;
        }
        i += n;
    }
    Some(h)
}

/// A hash folded into the 48 bits [`Found::entries`] holds.
fn fold(h: u64) -> u64 {
    (h ^ (h >> 48)) & LOW48
}

/// The current test from the environment, per nettrap_core::test_id: the first of
/// [`test_id::TEST_VARS`] that is set, split into test id and phase.
pub fn current_test() -> Option<(&'static [u8], Phase)> {
    let env = environ();
    if env.is_null() {
        return None;
    }
    match remembered(env) {
        Some(found) => found,
        None => scan(env),
    }
    .map(test_id::split)
}

/// The current test's value from where the last scan found it, if the environment still has
/// the shape that scan saw (see the module comment); None when it must be scanned again.
fn remembered(env: *const *const c_char) -> Option<Option<&'static [u8]>> {
    let array = FOUND.array.load(Ordering::Acquire);
    let entries = FOUND.entries.load(Ordering::Acquire);
    let shape = FOUND.shape.load(Ordering::Acquire);
    let tag = shape >> 48;
    if tag == 0 || array >> 48 != tag || entries >> 48 != tag || array & LOW48 != env as u64 {
        return None;
    }
    let len = (shape & 0xffff) as usize;
    // SAFETY: env is libc's NULL-terminated environment array; its entries are read from the
    // first up, each only once every one before it was found not NULL (as getenv reads them),
    // so none is read past the array's end, wherever it now ends.
    unsafe {
        let h = entries_hash(env, len)?;
        if !(*env.add(len)).is_null() || fold(h) != entries & LOW48 {
            return None;
        }
        for (i, var) in test_id::TEST_VARS.iter().enumerate() {
            let at = (shape >> (16 + 16 * i)) & 0xffff;
            if at == ABSENT {
                continue;
            }
            let at = at as usize;
            if at >= len {
                return None;
            }
            let entry = (*env.add(at)).cast::<u8>();
            let name = var.to_bytes();
            if !name_matches(entry, name) {
                return None;
            }
            return Some(Some(value_of(entry, name)));
        }
    }
    Some(None)
}

/// One pass over `environ`, remembering where each test variable is for the next call.
fn scan(env: *const *const c_char) -> Option<&'static [u8]> {
    let mut at = [ABSENT; VARS];
    let mut found: [Option<&'static [u8]>; VARS] = [None; VARS];
    let mut len = 0usize;
    let mut h = 0;
    // SAFETY: environ is a NULL-terminated array of NUL-terminated strings maintained by libc;
    // it is read on the calling thread, as getenv would. Each entry is read only up to the
    // first byte that differs from a name (at worst its NUL), then, on a match, to its NUL.
    unsafe {
        loop {
            let p = *env.add(len);
            if p.is_null() {
                break;
            }
            h = mix(h, p);
            let entry = p.cast::<u8>();
            let first = *entry;
            if FIRST_BYTES[usize::from(first)] {
                for (i, var) in test_id::TEST_VARS.iter().enumerate() {
                    let name = var.to_bytes();
                    if name[0] == first && found[i].is_none() && name_matches(entry, name) {
                        found[i] = Some(value_of(entry, name));
                        at[i] = len as u64;
                    }
                }
            }
            len += 1;
        }
    }
    // An environment too large for the words (65,535 entries) is scanned every time.
    if len < ABSENT as usize && env as u64 <= LOW48 {
        let mut tag = TAG.fetch_add(1, Ordering::Relaxed) & 0xffff;
        if tag == 0 {
            tag = TAG.fetch_add(1, Ordering::Relaxed) & 0xffff;
        }
        let shape = len as u64 | at[0] << 16 | at[1] << 32 | tag << 48;
        FOUND.shape.store(shape, Ordering::Release);
        FOUND.entries.store(fold(h) | tag << 48, Ordering::Release);
        FOUND.array.store(env as u64 | tag << 48, Ordering::Release);
    }
    found.into_iter().flatten().next()
}
