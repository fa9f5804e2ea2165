//! The live environment, read as `getenv` would without importing it: the run's own variables
//! (once, from the constructor) and the current test (`NETTRAP_TEST`, `PYTEST_CURRENT_TEST`;
//! see nettrap_core::test_id) on every call.
//!
//! The current test is read on the hot path, so where the variables were found is remembered
//! ([`Found`]), and each call checks that the environment still has that shape before it
//! trusts it: the same array (`environ`), the same entries (each pointer compared with a copy
//! the scan kept, from the first up, and the NULL still after the last; past the first 256
//! entries, a hash of the rest), and, for each variable found, its entry still naming it.
//! Only the array's pointers are read, not the strings they point to: much less than a scan of
//! the whole environment, and compared with vector instructions (see `differ`: about one
//! instruction per entry with AVX, two and a half with SSE2). Every way libc changes the environment (`setenv`, `putenv`,
//! `unsetenv`, `clearenv`), and a program writing `environ`'s entries itself, changes one of
//! those: replacing a value replaces the entry the check reads; adding or removing one moves
//! the NULL or the entries. What none of this sees is a string changed in place (allowed for
//! one given to `putenv`) that comes to name a test variable another entry did not: a value
//! changed in place is read afresh at every call.
//!
//! The check reads the array a page at a time, and a page only once every entry before it was
//! found as the scan saw it (not NULL), so an array a program assigned to `environ` and then
//! shrank or freed is read no further than the page its NULL is on, which is mapped (a check of
//! the NULL at the old length alone once read a shrunk array's unmapped tail).

use core::ffi::{CStr, c_char};
use core::sync::atomic::{AtomicU64, Ordering, fence};
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

/// Where the last scan found the test variables, and the environment's shape then: the array
/// (`environ`), its entry count, each variable's index ([`ABSENT`] when it was not there), a
/// copy of its first [`COPIED`] entry pointers ([`Found::entries`]) and a hash of the rest
/// (none in most environments). Written by whichever thread scanned last, under a sequence
/// word ([`Found::seq`], a seqlock that never waits): a scan publishes only when it can make the
/// word odd from even (no other writer at work), and a reader trusts what it read only when the
/// word was even and unchanged around its reads, so it never mixes two scans. A writer stopped
/// half-way (a fork made meanwhile by another thread, a killed `vfork` child) leaves the word
/// odd: every later call then scans, which is slower, never wrong. A fork child starts from
/// its parent's copy, which describes memory it copied too. Nothing here ever waits.
#[repr(C, align(64))]
struct Found {
    entries: [AtomicU64; COPIED],
    seq: AtomicU64,
    array: AtomicU64,
    /// The entry count and the variables' indexes (16 bits each).
    shape: AtomicU64,
    /// [`entries_hash`] of the entries after the first [`COPIED`].
    rest: AtomicU64,
}

/// Entry pointers kept as they were (an environment rarely has more; the rest is hashed).
const COPIED: usize = 256;

static FOUND: Found = Found {
    entries: [const { AtomicU64::new(0) }; COPIED],
    seq: AtomicU64::new(0),
    array: AtomicU64::new(0),
    shape: AtomicU64::new(0),
    rest: AtomicU64::new(0),
};

const ABSENT: u64 = 0xffff;
const VARS: usize = test_id::TEST_VARS.len();
const _: () = assert!(VARS == 2, "shape holds the count and two indexes");

/// The next step of the hash of an environment's entry pointers (order-dependent: an entry
/// moved to another place changes it).
#[inline(always)]
fn mix(h: u64, entry: *const c_char) -> u64 {
    h.rotate_left(7) ^ entry as u64
}

/// Does any of the `n` (at least 1) entry pointers at `p` differ from the `n` words at `kept`?
/// With AVX (nearly every x86_64 CPU in use; [`avx`]) and at least 16 entries: four entries
/// per compare, sixteen per round, then the last sixteen again, overlapping ([`differ_avx`]).
/// Else SSE2 (every x86_64 has it): two entries per compare, eight per round, then the last
/// eight (or two) again, overlapping. Only words in `[p, p + n)` and `[kept, kept + n)` are
/// read.
///
/// The kept copy may be written meanwhile by another thread's scan (atomic stores, under the
/// seqlock): it is read here by the CPU's own loads inside the `asm!` block, never as Rust
/// values, so the two do not race in Rust's sense; a torn or changing copy is what the
/// caller's recheck of [`Found::seq`] rejects. The entries are read as `read_volatile` did:
/// whatever the program stores there meanwhile, only compared.
///
/// # Safety
/// `n >= 1`; `p` and `kept` readable for `n` words (any alignment).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn differ(p: *const *const c_char, kept: *const u64, n: usize) -> bool {
    if n >= 16 && avx() {
        // SAFETY: the CPU has AVX and the OS saves its registers (avx); the rest from the
        // caller.
        return unsafe { differ_avx(p, kept, n) };
    }
    let mask: u32;
    // SAFETY: every load lies in [p, p + 8n) or [kept, kept + 8n) (from the caller): the
    // rounds of eight start at byte 0, 64... below 8n - 64, the last eight at 8n - 64 (when
    // n >= 8), the pairs likewise below and at 8n - 16 (2 <= n < 8), one word when n == 1.
    unsafe {
        core::arch::asm!(
            "pxor xmm0, xmm0",
            "cmp {n}, 8",
            "jb 5f",
            // Eight at a time; {last} is the byte offset of the last eight.
            "lea {last}, [{n}*8 - 64]",
            "xor {i:e}, {i:e}",
            "test {last}, {last}",
            "jz 3f",
            "2:",
            "movdqu xmm1, [{p} + {i}]",
            "movdqu xmm2, [{p} + {i} + 16]",
            "movdqu xmm3, [{p} + {i} + 32]",
            "movdqu xmm4, [{p} + {i} + 48]",
            "movdqu xmm5, [{k} + {i}]",
            "movdqu xmm6, [{k} + {i} + 16]",
            "movdqu xmm7, [{k} + {i} + 32]",
            "movdqu xmm8, [{k} + {i} + 48]",
            "pxor xmm1, xmm5",
            "pxor xmm2, xmm6",
            "pxor xmm3, xmm7",
            "pxor xmm4, xmm8",
            "por xmm1, xmm2",
            "por xmm3, xmm4",
            "por xmm0, xmm1",
            "por xmm0, xmm3",
            "add {i}, 64",
            "cmp {i}, {last}",
            "jb 2b",
            "3:",
            "movdqu xmm1, [{p} + {last}]",
            "movdqu xmm2, [{p} + {last} + 16]",
            "movdqu xmm3, [{p} + {last} + 32]",
            "movdqu xmm4, [{p} + {last} + 48]",
            "movdqu xmm5, [{k} + {last}]",
            "movdqu xmm6, [{k} + {last} + 16]",
            "movdqu xmm7, [{k} + {last} + 32]",
            "movdqu xmm8, [{k} + {last} + 48]",
            "pxor xmm1, xmm5",
            "pxor xmm2, xmm6",
            "pxor xmm3, xmm7",
            "pxor xmm4, xmm8",
            "por xmm1, xmm2",
            "por xmm3, xmm4",
            "por xmm0, xmm1",
            "por xmm0, xmm3",
            "jmp 9f",
            "5:",
            "cmp {n}, 2",
            "jb 7f",
            // Two at a time; {last} is the byte offset of the last two.
            "lea {last}, [{n}*8 - 16]",
            "xor {i:e}, {i:e}",
            "test {last}, {last}",
            "jz 6f",
            "4:",
            "movdqu xmm1, [{p} + {i}]",
            "movdqu xmm5, [{k} + {i}]",
            "pxor xmm1, xmm5",
            "por xmm0, xmm1",
            "add {i}, 16",
            "cmp {i}, {last}",
            "jb 4b",
            "6:",
            "movdqu xmm1, [{p} + {last}]",
            "movdqu xmm5, [{k} + {last}]",
            "pxor xmm1, xmm5",
            "por xmm0, xmm1",
            "jmp 9f",
            "7:",
            "movq xmm1, [{p}]",
            "movq xmm5, [{k}]",
            "pxor xmm1, xmm5",
            "por xmm0, xmm1",
            "9:",
            "pxor xmm1, xmm1",
            "pcmpeqb xmm0, xmm1",
            "pmovmskb {mask:e}, xmm0",
            p = in(reg) p,
            k = in(reg) kept,
            n = in(reg) n,
            last = out(reg) _,
            i = out(reg) _,
            mask = lateout(reg) mask,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
            out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _,
            options(nostack, readonly),
        );
    }
    mask != 0xffff
}

/// [`differ`] for `n >= 16` with AVX's 32-byte registers (the bitwise `vxorps`/`vorps`, which
/// AVX has for them; AVX2 is not needed), reading as [`differ`] does.
///
/// # Safety
/// `n >= 16`; `p` and `kept` readable for `n` words (any alignment); the CPU has AVX, enabled
/// by the OS ([`avx`]).
///
/// Not a `#[target_feature(enable = "avx")]` function, so that it inlines into the check. The
/// block clears every upper half (`vzeroupper`) before it ends, and names all sixteen vector
/// registers as clobbered (the full register, for the compiler): a shim built with AVX (a
/// `target-cpu` in the builder's cargo configuration) keeps no value in one across it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn differ_avx(p: *const *const c_char, kept: *const u64, n: usize) -> bool {
    let same: u8;
    // SAFETY: every load lies in [p, p + 8n) or [kept, kept + 8n): the rounds of sixteen start
    // at byte 0, 128... below 8n - 128, then the last eight at 8n - 64 or the last sixteen at
    // 8n - 128 (n >= 16). vzeroupper before returning to code that uses the SSE registers.
    unsafe {
        core::arch::asm!(
            "vxorps ymm0, ymm0, ymm0",
            "lea {last}, [{n}*8 - 128]",
            "xor {i:e}, {i:e}",
            "test {last}, {last}",
            "jz 3f",
            "2:",
            "vmovdqu ymm1, [{p} + {i}]",
            "vmovdqu ymm2, [{p} + {i} + 32]",
            "vmovdqu ymm3, [{p} + {i} + 64]",
            "vmovdqu ymm4, [{p} + {i} + 96]",
            "vxorps ymm1, ymm1, [{k} + {i}]",
            "vxorps ymm2, ymm2, [{k} + {i} + 32]",
            "vxorps ymm3, ymm3, [{k} + {i} + 64]",
            "vxorps ymm4, ymm4, [{k} + {i} + 96]",
            "vorps ymm1, ymm1, ymm2",
            "vorps ymm3, ymm3, ymm4",
            "vorps ymm0, ymm0, ymm1",
            "vorps ymm0, ymm0, ymm3",
            "add {i}, 128",
            "cmp {i}, {last}",
            "jb 2b",
            // At most eight entries left after the rounds ({i} - 64 >= {last}): the last eight
            // again, overlapping; else the last sixteen.
            "lea {i}, [{i} - 64]",
            "cmp {i}, {last}",
            "jl 3f",
            "vmovdqu ymm1, [{p} + {last} + 64]",
            "vmovdqu ymm2, [{p} + {last} + 96]",
            "vxorps ymm1, ymm1, [{k} + {last} + 64]",
            "vxorps ymm2, ymm2, [{k} + {last} + 96]",
            "vorps ymm1, ymm1, ymm2",
            "vorps ymm0, ymm0, ymm1",
            "jmp 4f",
            "3:",
            "vmovdqu ymm1, [{p} + {last}]",
            "vmovdqu ymm2, [{p} + {last} + 32]",
            "vmovdqu ymm3, [{p} + {last} + 64]",
            "vmovdqu ymm4, [{p} + {last} + 96]",
            "vxorps ymm1, ymm1, [{k} + {last}]",
            "vxorps ymm2, ymm2, [{k} + {last} + 32]",
            "vxorps ymm3, ymm3, [{k} + {last} + 64]",
            "vxorps ymm4, ymm4, [{k} + {last} + 96]",
            "vorps ymm1, ymm1, ymm2",
            "vorps ymm3, ymm3, ymm4",
            "vorps ymm0, ymm0, ymm1",
            "vorps ymm0, ymm0, ymm3",
            "4:",
            "vptest ymm0, ymm0",
            "setz {same}",
            "vzeroupper",
            p = in(reg) p,
            k = in(reg) kept,
            n = in(reg) n,
            last = out(reg) _,
            i = out(reg) _,
            same = lateout(reg_byte) same,
            // vzeroupper clears the upper halves of all sixteen: every one is clobbered, so
            // that no value of a caller built with AVX lives across the block.
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
            out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
            out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _,
            out("xmm15") _,
            options(nostack, readonly),
        );
    }
    same == 0
}

/// Does this CPU have AVX, with its registers saved by the OS (CPUID's AVX and OSXSAVE bits,
/// and XCR0's SSE and AVX state bits)? Asked once per process (the answer is kept: 1 no, 2
/// yes), then one load.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn avx() -> bool {
    match AVX.load(Ordering::Relaxed) {
        0 => avx_first(),
        v => v == 2,
    }
}

#[cfg(target_arch = "x86_64")]
static AVX: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// Compares with SSE2 only, as on a CPU without AVX (`NETTRAP_SHIM_SSE2` set: how the tests
/// run that code on machines that have AVX).
pub fn without_avx() {
    #[cfg(target_arch = "x86_64")]
    AVX.store(1, Ordering::Relaxed);
}

#[cfg(target_arch = "x86_64")]
#[cold]
#[inline(never)]
fn avx_first() -> bool {
    // CPUID leaf 1 exists on every x86_64 CPU.
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    let (osxsave, has_avx) = (ecx & (1 << 27) != 0, ecx & (1 << 28) != 0);
    let yes = osxsave && has_avx && {
        let (lo, _hi): (u32, u32);
        // SAFETY: XGETBV with ECX = 0 (XCR0) is available when OSXSAVE is set (checked).
        unsafe {
            core::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") _hi,
                options(nomem, nostack, preserves_flags))
        };
        lo & 6 == 6
    };
    AVX.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
    yes
}

/// [`differ`] elsewhere: a word at a time.
///
/// # Safety
/// As on x86_64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn differ(p: *const *const c_char, kept: *const u64, n: usize) -> bool {
    let mut diff = 0u64;
    for k in 0..n {
        // SAFETY: k < n: inside both (from the caller); the copy's words are atomics.
        diff |= unsafe {
            core::ptr::read_volatile(p.add(k).cast::<u64>())
                ^ (*kept.add(k).cast::<AtomicU64>()).load(Ordering::Relaxed)
        };
    }
    diff != 0
}

/// Are `env`'s first `len` entries (`len` <= [`COPIED`]) the pointers [`Found::entries`] holds?
/// Exact, and no hash: the same pointers in the same places. Only meaningful while the caller's
/// read of [`Found::seq`] stays valid, which it checks again (`seq_then`) before each page of
/// the array after the first: a copy read whole between two equal even values holds no NULL
/// before `len`, so every entry compared equal was not NULL, and the next page is still inside
/// the array (or its NULL).
///
/// # Safety
/// `env` is a NULL-terminated array of pointers. Words are read a page at a time: those in
/// the page of an entry found inside the array (the first, or one after entries equal to a
/// consistent copy), where they are mapped, whatever their values past the array's NULL (read
/// volatile, never used but in the comparison).
unsafe fn same_entries(env: *const *const c_char, len: usize, seq_then: u64) -> bool {
    let mut i = 0;
    while i < len {
        if i > 0 {
            fence(Ordering::Acquire);
            if FOUND.seq.load(Ordering::Relaxed) != seq_then {
                return false;
            }
        }
        // SAFETY: entry i is inside the array or its NULL (see above).
        let p = unsafe { env.add(i) };
        // The entries from i to the end of entry i's page, and at least entry i itself: in an
        // array placed off 8-byte alignment it may straddle the page's end (then it lies in the
        // array, both its pages mapped); none would be compared, and again, forever.
        let n = (len - i).min(((0x1000 - (p as usize & 0xfff)) / 8).max(1));
        // SAFETY: i + n <= len <= COPIED: inside the copy; the n words at p lie in entry i's
        // page (see above).
        if unsafe { differ(p, FOUND.entries.as_ptr().add(i).cast::<u64>(), n) } {
            return false;
        }
        i += n;
    }
    // The copy read whole under one even sequence value before the caller reads past it (the
    // array's NULL, the hashed rest): on a CPU that may make a scan's stores visible out of
    // order, a slot not yet written (0) could otherwise have matched a NULL.
    fence(Ordering::Acquire);
    FOUND.seq.load(Ordering::Relaxed) == seq_then
}

/// The hash of `env`'s first `len` entries ([`mix`], from the first up), or None when one of
/// them is NULL (the array is shorter now).
///
/// # Safety
/// `env` is inside a NULL-terminated array of pointers (at an entry or its NULL). Entries are
/// taken in order and none after a NULL is used.
unsafe fn entries_hash(env: *const *const c_char, len: usize) -> Option<u64> {
    let mut h = 0u64;
    for i in 0..len {
        // SAFETY: entries before i were not NULL, so entry i is inside the array or its NULL.
        let a = unsafe { *env.add(i) };
        if a.is_null() {
            return None;
        }
        h = mix(h, a);
    }
    Some(h)
}

/// The current test from the environment, per nettrap_core::test_id: the first of
/// [`test_id::TEST_VARS`] that is set, split into test id and phase.
#[inline(always)]
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
#[inline(always)]
fn remembered(env: *const *const c_char) -> Option<Option<&'static [u8]>> {
    let seq = FOUND.seq.load(Ordering::Acquire);
    // No scan kept yet (seq 0) leaves the array null, which env is not.
    if seq & 1 == 1 || FOUND.array.load(Ordering::Relaxed) != env as u64 {
        return None;
    }
    let shape = FOUND.shape.load(Ordering::Relaxed);
    let len = (shape & 0xffff) as usize;
    // SAFETY: env is libc's NULL-terminated environment array; its entries are read from the
    // first up, each page of it only once every entry before was found equal to the copy of a
    // scan that saw them all non-NULL (see same_entries), so none is read past the page its
    // NULL is on, wherever it now ends; the rest (past COPIED) one at a time, as getenv reads.
    unsafe {
        let in_one_page = (env as usize & 0xfff) + 8 * len <= 0x1000;
        if len <= COPIED && in_one_page {
            // The common case, every entry in the first entry's page: one compare, no page
            // walk. The NULL after the last (which may begin the next page) is read only once
            // every entry matched: the array still holds them all, so it is still there.
            if len > 0 && differ(env, FOUND.entries.as_ptr().cast::<u64>(), len) {
                return None;
            }
            fence(Ordering::Acquire);
            if FOUND.seq.load(Ordering::Relaxed) != seq {
                return None;
            }
        } else if !remembered_entries(env, len, seq) {
            return None;
        }
        if !(*env.add(len)).is_null() {
            return None;
        }
    }
    fence(Ordering::Acquire);
    if FOUND.seq.load(Ordering::Relaxed) != seq {
        return None;
    }
    // Neither variable was there (the common case outside a test runner): one compare.
    const NONE_FOUND: u64 = ABSENT << 16 | ABSENT << 32;
    if shape & (0xffff_ffff << 16) == NONE_FOUND {
        return Some(None);
    }
    remembered_value(env, shape, len)
}

/// [`remembered`]'s check of the entries of an array that spans pages or is longer than the
/// copy: a page at a time ([`same_entries`]), then the hashed rest.
///
/// # Safety
/// As [`same_entries`].
#[inline(never)]
unsafe fn remembered_entries(env: *const *const c_char, len: usize, seq: u64) -> bool {
    // SAFETY: from the caller.
    unsafe {
        same_entries(env, len.min(COPIED), seq)
            && (len <= COPIED
                || entries_hash(env.add(COPIED), len - COPIED)
                    == Some(FOUND.rest.load(Ordering::Relaxed)))
    }
}

/// The value of the first test variable the kept shape says is there, if its entry still
/// names it.
#[inline(never)]
fn remembered_value(
    env: *const *const c_char,
    shape: u64,
    len: usize,
) -> Option<Option<&'static [u8]>> {
    // SAFETY: the entries before len are the scan's, not NULL; each points to a NUL-terminated
    // string (an environment entry), read up to the first byte that differs from a name.
    unsafe {
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
#[cold]
#[inline(never)]
fn scan(env: *const *const c_char) -> Option<&'static [u8]> {
    let mut at = [ABSENT; VARS];
    let mut found: [Option<&'static [u8]>; VARS] = [None; VARS];
    let mut len = 0usize;
    let mut h = 0;
    // The copy is written as the walk goes (each pointer read once), by this scan only if no
    // other writer is at work: the sequence made odd from even first.
    let seq = FOUND.seq.load(Ordering::Relaxed);
    let keep = seq & 1 == 0
        && FOUND
            .seq
            .compare_exchange(seq, seq + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
    if keep {
        fence(Ordering::Release);
    }
    // SAFETY: environ is a NULL-terminated array of NUL-terminated strings maintained by libc;
    // it is read on the calling thread, as getenv would. Each entry is read only up to the
    // first byte that differs from a name (at worst its NUL), then, on a match, to its NUL.
    unsafe {
        loop {
            let p = *env.add(len);
            if p.is_null() {
                break;
            }
            if len < COPIED {
                if keep {
                    FOUND.entries[len].store(p as u64, Ordering::Relaxed);
                }
            } else {
                h = mix(h, p);
            }
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
    if keep {
        // An environment too large for the shape (65,535 entries) is kept as no array at all
        // (null never matches): scanned every time.
        let array = if len < ABSENT as usize { env as u64 } else { 0 };
        FOUND.array.store(array, Ordering::Relaxed);
        FOUND
            .shape
            .store(len as u64 | at[0] << 16 | at[1] << 32, Ordering::Relaxed);
        FOUND.rest.store(h, Ordering::Relaxed);
        FOUND.seq.store(seq + 2, Ordering::Release);
    }
    found.into_iter().flatten().next()
}
