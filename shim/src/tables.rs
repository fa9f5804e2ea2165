//! The shim's two large tables, mapped by a process when it first needs one, not by the loader
//! at every process start: the names its lookups returned ([`Names`], 73 KiB) and the windows of
//! the event log it mapped (`nettrap_core::event::Windows`, 8 KiB). As `static`s they made the
//! shim's zero-filled memory (`.bss`) 85 KiB, which the loader mapped separately in every
//! process of a run, whether it ever connected or not. A process that never looks a name up and
//! never records a call now maps neither.
//!
//! Both live in one private anonymous mapping ([`Tables`]), mapped by the first thread of the
//! process that needs it and published with one compare-and-swap (a thread that loses the race
//! unmaps its own copy): nothing waits, nothing is left half-done by a fork, a vfork or a signal
//! handler that interrupts the mapping. The mapping is never unmapped, and a fork child
//! inherits it (a private copy, as it inherited the `static`s), so a pointer read from it stays
//! valid for the life of the process and its fork children. A `vfork` child that maps it maps
//! it into the address space it shares with its parent, which keeps it. A fresh anonymous
//! mapping is zero-filled, and all zero bytes are exactly the empty tables (checked when the
//! shim is compiled, below).

use super::sys;
use core::sync::atomic::{AtomicPtr, Ordering};
use nettrap_core::event::Windows;
use nettrap_core::names::{MAX_NAME, NameTable};

/// Address → the name a lookup in this process returned it for: 64 sets of 4 (256 addresses),
/// the oldest of a set replaced (see `nettrap_core::names::NameTable`).
type NameMap = NameTable<64, 4>;

/// The lazily mapped tables (see the module comment).
pub struct Tables {
    pub names: NameMap,
    pub windows: Windows,
}

/// Are all of `T`'s bytes zero in `value`? For the compile-time check below.
const fn all_zero<T, const N: usize>(value: T) -> bool {
    assert!(core::mem::size_of::<T>() == N);
    // SAFETY: T is N bytes (checked above), made only of integers and pointers (atomics of
    // them), without padding that the check would read: NameTable's and Windows' fields are
    // all 8- or 4-byte words, laid out without gaps.
    let bytes: [u8; N] = unsafe { core::mem::transmute_copy(&core::mem::ManuallyDrop::new(value)) };
    let mut i = 0;
    while i < N {
        if bytes[i] != 0 {
            return false;
        }
        i += 1;
    }
    true
}

// A fresh (zero-filled) mapping holds empty tables: the same bytes as `new()`.
const _: () = assert!(all_zero::<NameMap, { core::mem::size_of::<NameMap>() }>(
    NameMap::new()
));
const _: () = assert!(all_zero::<Windows, { core::mem::size_of::<Windows>() }>(
    Windows::new()
));

const LEN: usize = core::mem::size_of::<Tables>().next_multiple_of(4096);

/// The tables; null until a thread of this process mapped them.
static TABLES: AtomicPtr<Tables> = AtomicPtr::new(core::ptr::null_mut());

/// The tables if this process mapped them already (never maps).
#[inline(always)]
pub fn mapped() -> Option<&'static Tables> {
    let p = TABLES.load(Ordering::Acquire);
    // SAFETY: p is null or a published mapping of LEN zero-initialised bytes holding a Tables
    // (see the checks above), never unmapped; every field is an atomic, shared by reference.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The tables, mapped now if no thread of this process did yet; None when they cannot be
/// (no memory for them now: a later call tries again).
pub fn get() -> Option<&'static Tables> {
    mapped().or_else(map)
}

#[cold]
#[inline(never)]
fn map() -> Option<&'static Tables> {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a fresh private anonymous mapping.
    let mine = unsafe { sys::mmap_anon(LEN, rw) }?;
    let p = super::publish(&TABLES, mine, LEN);
    // SAFETY: as in mapped(): a published mapping of zero-initialised Tables, never unmapped.
    Some(unsafe { &*p })
}

/// The names this process's lookups returned, as `resolve` and `connect` use them: a lookup
/// maps the tables, a `connect` only reads them when they are there (no lookup, no name).
pub struct Names;

impl Names {
    /// Remembers that a lookup of `name` returned `ip` (see `NameTable::remember`); forgotten
    /// when the tables cannot be mapped (the call then carries no name).
    pub fn remember(&self, ip: &[u8; 16], name: &[u8]) {
        if let Some(t) = get() {
            t.names.remember(ip, name);
        }
    }

    /// No name remembered in this process (no lookup seen, or the tables not mapped yet).
    #[inline]
    pub fn is_empty(&self) -> bool {
        mapped().is_none_or(|t| t.names.is_empty())
    }

    /// The name `ip` was looked up as, into `out`; its length (0: none).
    #[inline]
    pub fn lookup(&self, ip: &[u8; 16], out: &mut [u8; MAX_NAME]) -> usize {
        mapped().map_or(0, |t| t.names.lookup(ip, out))
    }
}
