//! Who makes a call: the calling thread's tid and its process's pid, for the record, with no
//! system call on the hot path.
//!
//! Both come from what the process already holds. The tid is the one glibc keeps in the calling
//! thread's descriptor (`struct pthread`'s `tid`, which the kernel writes at `clone` and glibc's
//! `fork` updates in the child); the pid from a small cache keyed by tid, written only by a task
//! that asked the kernel (`gettid`, `getpid`) and found the descriptor's tid to be its own. A
//! cached answer is used only when all of this holds, which makes it exact:
//! - No task of the process may be running on another's descriptor ([`SHARED`] is 0). A `vfork`
//!   child, or a child of `clone(CLONE_VM)` without a thread pointer of its own, runs on its
//!   parent's, whose tid is its parent's: the shim interposes glibc's `vfork` (counting the
//!   child's life, until the parent resumes) and `clone` (from any `CLONE_VM` clone on, for
//!   good: one given `CLONE_SETTLS` may still be given its parent's descriptor, or a copy of
//!   it), each under both of glibc's names, and meanwhile every call asks the kernel.
//!   glibc's own threads (`pthread_create`) come from its internal clone, not these.
//!   `posix_spawn`'s child runs on its parent's too, but only `exec`s (glibc's own code, which
//!   never connects).
//! - The entry was written by a task with the same tid, which checked its descriptor then. In
//!   the same memory, a descriptor's owner with that tid is a thread of the process that wrote
//!   it (a tid number freed by a thread that exited and reused by a thread of the same process
//!   has the same pid).
//! - The cache lies in a page the kernel empties in every fork child (`MADV_WIPEONFORK`),
//!   however the fork was made (glibc's `fork` or `_Fork`, or a raw `clone` system call, which
//!   runs no atfork handler), so an entry can never name the parent for a child (or its
//!   thread) whose tid reuses a number of the parent's exited threads (pid numbers wrap:
//!   `/proc/sys/kernel/pid_max` may be 32768; fixtures/c/pid_reuse.c makes it happen at once
//!   with `ns_last_pid`). A raw fork child's copy of its parent's descriptor holds its parent's
//!   tid: its calls find the cache empty, ask the kernel, see the mismatch and never write it.
//!   The page is mapped by a process's first call; a kernel without `MADV_WIPEONFORK` (before
//!   4.14) gets no cache (`gettid` and `getpid` on every call).
//!
//! Left inexact: a `vfork` or shared-memory `clone` made with a raw system call, whose child then
//! connects before it `exec`s, is recorded as its parent (thread). And in a child of a raw fork
//! (or of `clone` without `CLONE_VM`), whose main thread keeps its parent's tid in its copy of
//! the descriptor, once a new thread of the child is given that very tid number (the parent's
//! thread having exited) and connects, the main thread's later calls carry that thread's tid
//! (the pid stays right).
//!
//! The descriptor's layout is glibc's on x86_64 (the tid at `%fs:0x2d0` since glibc 2.25); a
//! descriptor of another layout never holds the caller's tid there, so it never passes the
//! check, and every call then asks the kernel.

use super::sys;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// Offset of `tid` in glibc's `struct pthread` on x86_64 (after the 0x2c0-byte `tcbhead_t`
/// and the 16-byte `list`).
#[cfg(target_arch = "x86_64")]
const TCB_TID: usize = 0x2d0;

/// The tid glibc keeps in the calling thread's descriptor, if the thread pointer looks like
/// glibc's (its `tcb` and `self` words both point to it).
#[cfg(target_arch = "x86_64")]
fn tcb_tid() -> Option<u32> {
    let (tcb, me): (usize, usize);
    // SAFETY: reads the first and third words of the TCB, which the x86_64 TLS ABI puts at
    // %fs:0 for every thread (glibc's tcbhead_t: tcb and self; musl's descriptor is longer
    // than three words too).
    unsafe {
        core::arch::asm!(
            "mov {}, fs:[0]",
            "mov {}, fs:[0x10]",
            out(reg) tcb,
            out(reg) me,
            options(nostack, readonly, preserves_flags)
        )
    };
    if tcb == 0 || tcb != me {
        return None;
    }
    // SAFETY: a descriptor that points to itself at 0 and 0x10 is glibc's struct pthread,
    // whose tid word lies inside it (a descriptor of another layout that passed the check
    // above has it inside its thread's static TLS block, mapped with it).
    Some(unsafe { core::ptr::read_volatile((tcb + TCB_TID) as *const u32) })
}

#[cfg(not(target_arch = "x86_64"))]
fn tcb_tid() -> Option<u32> {
    None
}

/// The cache: tid → pid, each entry one word (`tid << 32 | pid`, 0 = empty), so a reader
/// never sees half an entry.
const ENTRIES: usize = 64;
type Cache = [AtomicU64; ENTRIES];

/// The page holding the cache (see the module comment): null until a process's first call
/// maps it, [`NO_CACHE`] when the kernel cannot empty it in fork children.
static PAGE: AtomicPtr<Cache> = AtomicPtr::new(core::ptr::null_mut());
const NO_CACHE: *mut Cache = core::ptr::dangling_mut::<Cache>();
const PAGE_LEN: usize = 4096;
const _: () = assert!(core::mem::size_of::<Cache>() <= PAGE_LEN);

/// The cache, mapped now if no thread of this process did yet; None without one.
fn cache() -> Option<&'static Cache> {
    let mut p = PAGE.load(Ordering::Acquire);
    if p.is_null() {
        p = map_cache();
    }
    // SAFETY: p is NO_CACHE or a page of PAGE_LEN bytes, zeroed by the kernel (a fresh
    // anonymous mapping, or one a fork emptied), never unmapped; an all-zero AtomicU64 array
    // is a valid, empty cache.
    (p != NO_CACHE).then(|| unsafe { &*p })
}

#[cold]
#[inline(never)]
fn map_cache() -> *mut Cache {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a fresh private anonymous mapping.
    let mine = match unsafe { sys::mmap_anon(PAGE_LEN, rw) } {
        // SAFETY: our own page; MADV_WIPEONFORK only changes what fork children see.
        Some(m) if unsafe { sys::madvise(m.as_ptr(), PAGE_LEN, libc::MADV_WIPEONFORK) } == 0 => {
            m.as_ptr().cast::<Cache>()
        }
        Some(m) => {
            // SAFETY: our own page, never published.
            unsafe { sys::munmap(m.as_ptr(), PAGE_LEN) };
            NO_CACHE
        }
        // No memory for it now: no cache for this call (PAGE stays null: a later call tries
        // again).
        None => return NO_CACHE,
    };
    match PAGE.compare_exchange(
        core::ptr::null_mut(),
        mine,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => mine,
        Err(theirs) => {
            if mine != NO_CACHE {
                // SAFETY: our own page, never published: nothing refers to it.
                unsafe { sys::munmap(mine.cast(), PAGE_LEN) };
            }
            theirs
        }
    }
}

/// Tasks of this process that may be running on another task's thread descriptor: `vfork`
/// children until their parent resumes, and, once any was made, `clone(CLONE_VM)` children
/// made through glibc's wrapper, with `CLONE_SETTLS` or without (for good: when such a child
/// ends is not known).
static SHARED: AtomicUsize = AtomicUsize::new(0);

/// `vfork`, interposing glibc's: the system call made here, the way glibc's own `vfork` makes it
/// (the return address is taken off the stack the child shares, so the child's return cannot
/// overwrite it), with [`SHARED`] counting the child until the parent resumes (after the child's
/// `exec` or exit). The child returns 0; the parent the child's pid, or -1 with errno.
///
/// # Safety
/// As vfork(2).
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vfork() -> libc::pid_t {
    core::arch::naked_asm!(
        "lock add qword ptr [rip + {shared}], 1",
        "pop rsi",
        "mov eax, {nr}",
        "syscall",
        "push rsi",
        "test eax, eax",
        "jz 2f",
        "lock sub qword ptr [rip + {shared}], 1",
        "cmp rax, -4095",
        "jae 3f",
        "2:",
        "ret",
        "3:",
        "mov edi, eax",
        "jmp {failed}",
        shared = sym SHARED,
        nr = const libc::SYS_vfork,
        failed = sym vfork_failed,
    )
}

/// glibc exports `vfork` under this name too.
///
/// # Safety
/// As vfork(2).
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __vfork() -> libc::pid_t {
    core::arch::naked_asm!("jmp {vfork}", vfork = sym vfork)
}

/// [`vfork`]'s failure: errno from the kernel's answer (`-errno`), and -1.
#[cfg(target_arch = "x86_64")]
extern "C" fn vfork_failed(r: core::ffi::c_int) -> libc::pid_t {
    sys::libc_style(core::ffi::c_long::from(r))
}

/// `clone`, interposing glibc's (a variadic function: the three optional arguments are passed
/// as glibc's reads them, in registers and on the stack as for any call on x86_64): a child that
/// shares the caller's memory may run on the caller's thread descriptor (without
/// `CLONE_SETTLS`, or with the caller's own thread pointer, or a copy of its descriptor: the
/// shim cannot tell a descriptor the child owns), so from then on every call asks the kernel
/// who makes it ([`SHARED`]). A child that shares only the descriptor table (`CLONE_FILES`
/// without `CLONE_VM`) changes descriptors behind the caller's bits ([`super::fds::untrust`]).
///
/// # Safety
/// As clone(2)'s glibc wrapper.
#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clone(
    f: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    stack: *mut c_void,
    flags: c_int,
    arg: *mut c_void,
    parent_tid: *mut libc::pid_t,
    tls: *mut c_void,
    child_tid: *mut libc::pid_t,
) -> c_int {
    let me = clone as *const () as usize;
    // SAFETY: same contract as ours.
    unsafe {
        clone_with(
            &super::symbols::CLONE,
            me,
            f,
            stack,
            flags,
            arg,
            parent_tid,
            tls,
            child_tid,
        )
    }
}

/// glibc exports `clone` under this name too: the same, forwarded to the next `__clone`.
///
/// # Safety
/// As clone(2)'s glibc wrapper.
#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __clone(
    f: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    stack: *mut c_void,
    flags: c_int,
    arg: *mut c_void,
    parent_tid: *mut libc::pid_t,
    tls: *mut c_void,
    child_tid: *mut libc::pid_t,
) -> c_int {
    let me = __clone as *const () as usize;
    // SAFETY: same contract as ours.
    unsafe {
        clone_with(
            &super::symbols::CLONE_ALIAS,
            me,
            f,
            stack,
            flags,
            arg,
            parent_tid,
            tls,
            child_tid,
        )
    }
}

/// [`clone`] and [`__clone`]: the flags noted, then the next object's function `sym` (not
/// `me`).
///
/// # Safety
/// As clone(2)'s glibc wrapper.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn clone_with(
    sym: &super::symbols::Symbol,
    me: usize,
    f: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    stack: *mut c_void,
    flags: c_int,
    arg: *mut c_void,
    parent_tid: *mut libc::pid_t,
    tls: *mut c_void,
    child_tid: *mut libc::pid_t,
) -> c_int {
    if flags & libc::CLONE_VM != 0 {
        SHARED.fetch_add(1, Ordering::AcqRel);
    } else if flags & libc::CLONE_FILES != 0 {
        super::fds::untrust();
    }
    let real = super::symbols::get(sym);
    if real == 0 || real == me {
        super::set_errno(libc::ENOSYS);
        return -1;
    }
    type CloneFn = unsafe extern "C" fn(
        Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
        *mut c_void,
        c_int,
        *mut c_void,
        *mut libc::pid_t,
        *mut c_void,
        *mut libc::pid_t,
    ) -> c_int;
    // SAFETY: real is glibc's clone, which reads its optional arguments from where a
    // seven-argument call puts them.
    let real: CloneFn = unsafe { core::mem::transmute::<usize, CloneFn>(real) };
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { real(f, stack, flags, arg, parent_tid, tls, child_tid) }
}

/// May a task of this process be running on another task's descriptor ([`SHARED`]): a `vfork`
/// child until its parent resumes, or, for good, a `clone(CLONE_VM)` child? Such a task shares
/// the process's memory but may have a descriptor table of its own ([`super::fds`]).
#[inline(always)]
pub fn shared() -> bool {
    SHARED.load(Ordering::Acquire) != 0
}

/// The calling task's (pid, tid): from the thread descriptor and the cache, with no system
/// call, when they can answer (see the module comment); else one `gettid`, and `getpid` when
/// the cache cannot answer.
pub fn caller() -> (u32, u32) {
    if SHARED.load(Ordering::Acquire) == 0
        && let Some(tid) = tcb_tid()
        && let p = PAGE.load(Ordering::Acquire)
        && !p.is_null()
        && p != NO_CACHE
    {
        // SAFETY: a published cache page (see cache()).
        let cache = unsafe { &*p };
        let e = cache[slot_of(tid)].load(Ordering::Relaxed);
        if e >> 32 == u64::from(tid) && e as u32 != 0 {
            return (e as u32, tid);
        }
    }
    caller_asked()
}

/// The cache slot of `tid`.
fn slot_of(tid: u32) -> usize {
    (tid.wrapping_mul(0x9e37_79b9) >> 26) as usize
}

/// [`caller`] asking the kernel, and filling the cache where that is exact.
#[cold]
#[inline(never)]
fn caller_asked() -> (u32, u32) {
    let tid = sys::gettid();
    if tcb_tid() != Some(tid) {
        return (sys::getpid(), tid);
    }
    let Some(cache) = cache() else {
        return (sys::getpid(), tid);
    };
    let slot = &cache[slot_of(tid)];
    let e = slot.load(Ordering::Relaxed);
    if e >> 32 == u64::from(tid) && e as u32 != 0 {
        return (e as u32, tid);
    }
    let pid = sys::getpid();
    slot.store((u64::from(tid) << 32) | u64::from(pid), Ordering::Relaxed);
    (pid, tid)
}
