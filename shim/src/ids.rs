//! Who makes a call: the calling thread's tid and its process's pid, for the record.
//!
//! The tid is always asked of the kernel (`gettid`): it is exact in every kind of task. The pid
//! comes from a small cache keyed by tid, so a connect makes one system call for both instead
//! of two. A cached pid is used only when all of this holds, which makes it exact:
//! - The calling task is the thread glibc set up its thread descriptor for: the tid glibc keeps
//!   in it (`struct pthread`'s `tid`, which the kernel writes at `clone` and glibc's `fork`
//!   updates in the child) equals `gettid()`. A `vfork` child, `posix_spawn`'s child or a raw
//!   `clone` child runs on its parent's descriptor, whose tid is its parent's (alive, so never
//!   equal to the child's); a raw `fork` child's copy holds its parent's tid, also never its own.
//!   Such tasks always ask the kernel for their pid and never write the cache.
//! - The entry was written by a task with the same tid. In the same memory, a descriptor's
//!   owner with that tid is a thread of the process that wrote it (a tid number freed by a
//!   thread that exited and reused by a thread of the same process has the same pid).
//! - The cache lies in a page the kernel empties in every fork child (`MADV_WIPEONFORK`),
//!   however the fork was made (glibc's `fork` or `_Fork`, or a raw `clone` system call, which
//!   runs no atfork handler), so an entry can never name the parent for a child (or its
//!   thread) whose tid reuses a number of the parent's exited threads (pid numbers wrap:
//!   `/proc/sys/kernel/pid_max` may be 32768; fixtures/c/pid_reuse.c makes it happen at once
//!   with `ns_last_pid`). The page is mapped by a process's first call; a kernel without
//!   `MADV_WIPEONFORK` (before 4.14) gets no cache (`getpid` on every call).
//!
//! The descriptor's layout is glibc's on x86_64 (the tid at `%fs:0x2d0` since glibc 2.25); a
//! descriptor of another layout never holds the caller's tid there, so it never passes the
//! check, and every call then asks the kernel.

use super::sys;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Offset of `tid` in glibc's `struct pthread` on x86_64 (after the 0x2c0-byte `tcbhead_t`
/// and the 16-byte `list`).
#[cfg(target_arch = "x86_64")]
const TCB_TID: usize = 0x2d0;

/// The tid glibc keeps in the calling thread's descriptor, if the thread pointer looks like
/// glibc's (its `tcb` and `self` words both point to it).
#[cfg(target_arch = "x86_64")]
fn tcb_tid() -> Option<u32> {
    let (tcb, me): (usize, usize);
    // SAFETY: reads the first and third words of the TCB (tcbhead_t's tcb and self), which
    // the x86_64 TLS ABI puts at %fs:0 for every thread; the shim already relies on %fs:0x10.
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

/// The calling task's (pid, tid): one `gettid`, and `getpid` only when the cache cannot answer.
pub fn caller() -> (u32, u32) {
    let tid = sys::gettid();
    if tcb_tid() != Some(tid) {
        return (sys::getpid(), tid);
    }
    let Some(cache) = cache() else {
        return (sys::getpid(), tid);
    };
    let slot = &cache[(tid.wrapping_mul(0x9e37_79b9) >> 26) as usize];
    let e = slot.load(Ordering::Relaxed);
    if e >> 32 == u64::from(tid) && e as u32 != 0 {
        return (e as u32, tid);
    }
    let pid = sys::getpid();
    slot.store((u64::from(tid) << 32) | u64::from(pid), Ordering::Relaxed);
    (pid, tid)
}
