//! The libc functions and variables the shim uses, found by reading the loaded objects' symbol
//! tables itself (their GNU hash tables).
//!
//! Each symbol the shim imported was one more lookup the loader made at every process start
//! (the loader walks every object's hash table and compares names and versions), and each
//! `dlsym(RTLD_NEXT)` (the real `connect` and `listen`) cost over a thousand instructions more.
//! Here the constructor lists the loaded objects once (`dl_iterate_phdr`), and each symbol is
//! searched for on its first use, without locks (so also inside a signal handler, or after a
//! fork): the initial objects' tables are read-only and never unmapped. A process that never
//! connects searches for none.
//! - the real `connect` and `listen` as `dlsym(RTLD_NEXT)` finds them: the first definition in
//!   the objects loaded after the shim;
//! - the rest (`__errno_location`, `environ`, ...) as the loader binds an import: the first
//!   definition from the executable on (a copy of `environ` in the executable included).
//!
//! Only a symbol's default version counts (as `dlsym` and an unversioned import), only defined
//! functions and objects. Where this cannot answer (an IFUNC, whose resolver picks the function;
//! an object without a GNU hash table on the way; more objects than noted; the shim not among
//! them), `dlsym` does, as before this module: at once for every symbol when the list itself
//! failed, else for that symbol on its first use.

use core::ffi::{CStr, c_char, c_int, c_void};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// One loaded object, as dl_iterate_phdr gives it; its symbol tables read on first use.
#[derive(Clone, Copy)]
struct Object {
    base: usize,
    phdr: *const Phdr,
    phnum: u16,
    /// The kernel's vDSO: not in the loader's search scope (and its dynamic section is not
    /// relocated).
    vdso: bool,
    /// Some once read (None inside: the object has no GNU hash table).
    tables: Option<Option<Tables>>,
}

/// Objects noted at most; a process with more is searched with dlsym.
const MAX_OBJECTS: usize = 32;

struct Objects {
    list: [Object; MAX_OBJECTS],
    len: usize,
    overflow: bool,
}

#[repr(C)]
struct PhdrInfo {
    addr: usize,
    name: *const c_char,
    phdr: *const Phdr,
    phnum: u16,
}

#[repr(C)]
struct Phdr {
    p_type: u32,
    p_flags: u32,
    p_offset: u64,
    p_vaddr: u64,
    p_paddr: u64,
    p_filesz: u64,
    p_memsz: u64,
    p_align: u64,
}

#[repr(C)]
struct Sym {
    st_name: u32,
    st_info: u8,
    st_other: u8,
    st_shndx: u16,
    st_value: u64,
    st_size: u64,
}

const PT_DYNAMIC: u32 = 2;
const DT_NULL: i64 = 0;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_GNU_HASH: i64 = 0x6fff_fef5;
const DT_VERSYM: i64 = 0x6fff_fff0;
const STT_OBJECT: u8 = 1;
const STT_FUNC: u8 = 2;
const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;

unsafe extern "C" {
    fn dl_iterate_phdr(
        callback: unsafe extern "C" fn(*mut PhdrInfo, usize, *mut c_void) -> c_int,
        data: *mut c_void,
    ) -> c_int;
    /// The shim's own ELF header (defined by the linker): where the shim is loaded.
    static __ehdr_start: u8;
}

/// dl_iterate_phdr's callback: notes each object (in load order: the executable first).
unsafe extern "C" fn note(info: *mut PhdrInfo, _size: usize, data: *mut c_void) -> c_int {
    let objects = data.cast::<Objects>();
    // SAFETY: data is the Objects of init (len and overflow initialised, list[..len] written);
    // info is valid for this call.
    let (len, info) = unsafe { ((*objects).len, &*info) };
    if len == MAX_OBJECTS {
        // SAFETY: as above.
        unsafe { (*objects).overflow = true };
        return 1;
    }
    // SAFETY: the loader's name for the object, NUL-terminated (empty for the executable):
    // compared up to its first differing byte.
    let vdso = !info.name.is_null()
        && unsafe {
            starts_with(info.name.cast(), b"linux-vdso")
                || starts_with(info.name.cast(), b"linux-gate")
        };
    let object = Object {
        base: info.addr,
        phdr: info.phdr,
        phnum: info.phnum,
        vdso,
        tables: None,
    };
    // SAFETY: len < MAX_OBJECTS: a slot of list, written before len covers it.
    unsafe {
        (&raw mut (*objects).list)
            .cast::<Object>()
            .add(len)
            .write(object);
        (*objects).len = len + 1;
    }
    0
}

/// Does the NUL-terminated string at `s` start with `prefix`?
///
/// # Safety
/// `s` must be NUL-terminated.
unsafe fn starts_with(s: *const u8, prefix: &[u8]) -> bool {
    for (i, &c) in prefix.iter().enumerate() {
        // SAFETY: bytes up to the first mismatch (at worst the NUL) are inside the string.
        if unsafe { *s.add(i) } != c {
            return false;
        }
    }
    true
}

impl Object {
    /// The object's symbol tables (read from its dynamic section on first use).
    fn tables(&mut self) -> Option<Tables> {
        if let Some(t) = self.tables {
            return t;
        }
        let mut dynamic = 0;
        for i in 0..usize::from(self.phnum) {
            // SAFETY: phnum program headers at phdr, as the loader maps them.
            let ph = unsafe { &*self.phdr.add(i) };
            if ph.p_type == PT_DYNAMIC {
                dynamic = self.base.wrapping_add(ph.p_vaddr as usize);
            }
        }
        let t = if self.vdso {
            None
        } else {
            tables(self.base, dynamic)
        };
        self.tables = Some(t);
        t
    }
}

/// An object's symbol tables, from its dynamic section.
#[derive(Clone, Copy)]
struct Tables {
    gnu_hash: *const u32,
    symtab: *const Sym,
    strtab: *const u8,
    versym: *const u16,
}

/// A pointer entry of a dynamic section: the loader has usually made it absolute already
/// (glibc adds the load bias in place), the vDSO's is not.
fn dyn_ptr(base: usize, v: usize) -> usize {
    if v < base { v + base } else { v }
}

fn tables(base: usize, dynamic: usize) -> Option<Tables> {
    if dynamic == 0 {
        return None;
    }
    let (mut h, mut sy, mut st, mut vs) = (0, 0, 0, 0);
    let mut d = dynamic as *const [i64; 2];
    // SAFETY: the dynamic section is an array of (tag, value) pairs ending with DT_NULL, mapped
    // for as long as the object is loaded (the shim's constructor: the initial objects).
    unsafe {
        for _ in 0..512 {
            let [tag, val] = *d;
            let val = val as usize;
            match tag {
                DT_NULL => break,
                DT_GNU_HASH => h = dyn_ptr(base, val),
                DT_SYMTAB => sy = dyn_ptr(base, val),
                DT_STRTAB => st = dyn_ptr(base, val),
                DT_VERSYM => vs = dyn_ptr(base, val),
                _ => {}
            }
            if h != 0 && sy != 0 && st != 0 && vs != 0 {
                break;
            }
            d = d.add(1);
        }
    }
    (h != 0 && sy != 0 && st != 0).then_some(Tables {
        gnu_hash: h as *const u32,
        symtab: sy as *const Sym,
        strtab: st as *const u8,
        versym: vs as *const u16,
    })
}

const fn gnu_hash(name: &[u8]) -> u32 {
    let mut h = 5381u32;
    let mut i = 0;
    while i < name.len() {
        h = h.wrapping_mul(33).wrapping_add(name[i] as u32);
        i += 1;
    }
    h
}

/// A name and its GNU hash, computed at compile time.
struct Name(&'static CStr, u32);

macro_rules! name {
    ($s:literal) => {
        Name($s, gnu_hash($s.to_bytes()))
    };
}

/// The address of `name`'s default-version definition in `o`, if it has one; Err when `o`'s
/// tables cannot be read this way (no GNU hash table).
fn lookup_in(t: &Tables, base: usize, name: &[u8], h: u32) -> Result<Option<usize>, ()> {
    // SAFETY: the GNU hash table's layout (nbuckets, symoffset, bloom words, shift, then the
    // bloom filter, buckets and chain), symbol and string tables as the object's dynamic
    // section gives them; every index comes from the table itself.
    unsafe {
        let nbuckets = *t.gnu_hash;
        let symoffset = *t.gnu_hash.add(1);
        let bloom_size = *t.gnu_hash.add(2);
        let shift = *t.gnu_hash.add(3);
        if nbuckets == 0 || bloom_size == 0 {
            return Ok(None);
        }
        let bloom = t.gnu_hash.add(4).cast::<u64>();
        let word = *bloom.add(((h / 64) % bloom_size) as usize);
        let mask = (1u64 << (h % 64)) | (1u64 << ((h >> shift) % 64));
        if word & mask != mask {
            return Ok(None);
        }
        let buckets = bloom.add(bloom_size as usize).cast::<u32>();
        let chain = buckets.add(nbuckets as usize);
        let mut i = *buckets.add((h % nbuckets) as usize);
        if i == 0 || i < symoffset {
            return Ok(None);
        }
        loop {
            let ch = *chain.add((i - symoffset) as usize);
            if ch | 1 == h | 1 {
                let sym = &*t.symtab.add(i as usize);
                let ty = sym.st_info & 0xf;
                let bind = sym.st_info >> 4;
                let hidden = !t.versym.is_null() && {
                    let v = *t.versym.add(i as usize);
                    v & 0x8000 != 0 || v == 0
                };
                if sym.st_shndx != 0
                    && !hidden
                    && matches!(bind, STB_GLOBAL | STB_WEAK)
                    && same_name(t.strtab.add(sym.st_name as usize), name)
                {
                    // The definition the loader would bind; one this code cannot take (an
                    // IFUNC, whose resolver picks the function) is left to dlsym.
                    return match ty {
                        STT_FUNC | STT_OBJECT => Ok(Some(base.wrapping_add(sym.st_value as usize))),
                        _ => Err(()),
                    };
                }
            }
            if ch & 1 != 0 {
                return Ok(None);
            }
            i += 1;
        }
    }
}

/// Is the NUL-terminated string at `s` exactly `name`?
///
/// # Safety
/// `s` must be NUL-terminated.
unsafe fn same_name(s: *const u8, name: &[u8]) -> bool {
    for (i, &c) in name.iter().enumerate() {
        // SAFETY: bytes up to the first mismatch (at worst the NUL) are inside the string.
        if unsafe { *s.add(i) } != c {
            return false;
        }
    }
    // SAFETY: all of name matched, so the string is at least that long plus its NUL.
    unsafe { *s.add(name.len()) == 0 }
}

/// One symbol the shim uses: its name, where to search (`next`: after the shim, as
/// `dlsym(RTLD_NEXT)`; else from the executable on, as an import), and its address once
/// found (0: not searched yet; [`ABSENT`]: not there).
pub struct Symbol {
    name: Name,
    next: bool,
    addr: AtomicUsize,
}

/// A symbol that was searched for and is not there.
const ABSENT: usize = 1;

impl Symbol {
    const fn new(name: Name, next: bool) -> Symbol {
        Symbol {
            name,
            next,
            addr: AtomicUsize::new(0),
        }
    }
}

pub static CONNECT: Symbol = Symbol::new(name!(c"connect"), true);
pub static LISTEN: Symbol = Symbol::new(name!(c"listen"), true);
pub static ERRNO_LOCATION: Symbol = Symbol::new(name!(c"__errno_location"), false);
pub static H_ERRNO_LOCATION: Symbol = Symbol::new(name!(c"__h_errno_location"), false);
pub static CLOCK_GETTIME: Symbol = Symbol::new(name!(c"clock_gettime"), false);
pub static SETCANCELTYPE: Symbol = Symbol::new(name!(c"pthread_setcanceltype"), false);
/// The address of the `environ` variable (a `*const *const c_char`).
pub static ENVIRON: Symbol = Symbol::new(name!(c"environ"), false);

const ALL: [&Symbol; 7] = [
    &CONNECT,
    &LISTEN,
    &ERRNO_LOCATION,
    &H_ERRNO_LOCATION,
    &CLOCK_GETTIME,
    &SETCANCELTYPE,
    &ENVIRON,
];

/// The objects the constructor noted: written by the one thread that wins [`WALK`], before it
/// publishes them (`WALKED`); never written again.
struct Noted(core::cell::UnsafeCell<Objects>);
// SAFETY: see the comment on Noted: written once before publication, read-only afterwards,
// except each object's lazily read tables (see LazyTables).
unsafe impl Sync for Noted {}
static NOTED: Noted = Noted(core::cell::UnsafeCell::new(Objects {
    list: [Object {
        base: 0,
        phdr: core::ptr::null(),
        phnum: 0,
        vdso: false,
        tables: None,
    }; MAX_OBJECTS],
    len: 0,
    overflow: false,
}));

/// Each noted object's symbol tables, read from its dynamic section by the first thread that
/// searches it (every thread reads the same values; `state` publishes them).
struct LazyTables {
    /// 0: not read yet; READ: the fields hold them; NONE: the object has none this code reads.
    state: AtomicU8,
    gnu_hash: AtomicUsize,
    symtab: AtomicUsize,
    strtab: AtomicUsize,
    versym: AtomicUsize,
}
const READ: u8 = 1;
const NONE: u8 = 2;
static TABLES: [LazyTables; MAX_OBJECTS] = [const {
    LazyTables {
        state: AtomicU8::new(0),
        gnu_hash: AtomicUsize::new(0),
        symtab: AtomicUsize::new(0),
        strtab: AtomicUsize::new(0),
        versym: AtomicUsize::new(0),
    }
}; MAX_OBJECTS];

/// The walk over the loaded objects: not yet, under way, done (NOTED and MINE published), or
/// failed (every symbol asked of dlsym instead, at once).
static WALK: AtomicU8 = AtomicU8::new(NOT_WALKED);
const NOT_WALKED: u8 = 0;
const WALKING: u8 = 1;
const WALKED: u8 = 2;
const FAILED: u8 = 3;
/// The shim's index among the noted objects.
static MINE: AtomicUsize = AtomicUsize::new(0);

/// From the constructor (or the first call, if another library's constructor calls in before
/// ours ran): lists the loaded objects, once. Symbols are searched for on first use, without
/// locks (the objects' tables are read-only and stay mapped: the initial objects are never
/// unloaded), so a process that never connects searches for none but what the constructor
/// needs.
pub fn init() {
    if WALK
        .compare_exchange(NOT_WALKED, WALKING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let p = NOTED.0.get();
    // SAFETY: this thread won WALK: nobody else writes or reads NOTED until WALKED is
    // published; the callback only writes into it.
    let (objects, overflow) = unsafe {
        dl_iterate_phdr(note, p.cast());
        (&(&(*p).list)[..(*p).len], (*p).overflow)
    };
    // SAFETY: only the address of the linker-defined symbol is taken.
    let me = &raw const __ehdr_start as usize;
    match objects
        .iter()
        .position(|o| o.base == me)
        .filter(|_| !overflow)
    {
        Some(mine) => {
            MINE.store(mine, Ordering::Relaxed);
            WALK.store(WALKED, Ordering::Release);
        }
        None => {
            for sym in ALL {
                sym.addr.store(from_dlsym(sym), Ordering::Release);
            }
            WALK.store(FAILED, Ordering::Release);
        }
    }
}

// `dlsym` as glibc 2.2.5 versioned it (libc.so.6 has kept that version since dlsym moved
// into it in 2.34, beside the new default GLIBC_2.34; both are the same function): an import
// of GLIBC_2.34 alone made the loader check a second version of libc's at every process start,
// far down its list of version definitions (about 500 instructions).
core::arch::global_asm!(".symver nettrap_dlsym, dlsym@GLIBC_2.2.5");
unsafe extern "C" {
    fn nettrap_dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void;
}

/// libc's `dlsym`: the address of `name` (RTLD_NEXT: in the objects after the shim's), or 0.
///
/// # Safety
/// `name` is NUL-terminated; as dlsym(3), not from a signal handler or a fork child of a
/// threaded program (it takes the loader's lock).
pub unsafe fn dlsym(handle: *mut c_void, name: *const c_char) -> usize {
    // SAFETY: from the caller.
    unsafe { nettrap_dlsym(handle, name) as usize }
}

fn from_dlsym(sym: &Symbol) -> usize {
    let handle = if sym.next {
        libc::RTLD_NEXT
    } else {
        libc::RTLD_DEFAULT
    };
    // SAFETY: dlsym with a NUL-terminated name.
    match unsafe { dlsym(handle, sym.name.0.as_ptr()) } {
        0 => ABSENT,
        f => f,
    }
}

/// The tables of noted object `i` (read now if no thread did yet).
fn tables_of(i: usize) -> Option<Tables> {
    let t = &TABLES[i];
    match t.state.load(Ordering::Acquire) {
        READ => {
            return Some(Tables {
                gnu_hash: t.gnu_hash.load(Ordering::Relaxed) as *const u32,
                symtab: t.symtab.load(Ordering::Relaxed) as *const Sym,
                strtab: t.strtab.load(Ordering::Relaxed) as *const u8,
                versym: t.versym.load(Ordering::Relaxed) as *const u16,
            });
        }
        NONE => return None,
        _ => {}
    }
    // SAFETY: NOTED is read-only once WALKED (the caller saw it), and i < its len.
    let mut o = unsafe { (*NOTED.0.get()).list[i] };
    let read = o.tables();
    match read {
        Some(r) => {
            t.gnu_hash.store(r.gnu_hash as usize, Ordering::Relaxed);
            t.symtab.store(r.symtab as usize, Ordering::Relaxed);
            t.strtab.store(r.strtab as usize, Ordering::Relaxed);
            t.versym.store(r.versym as usize, Ordering::Relaxed);
            t.state.store(READ, Ordering::Release);
        }
        None => t.state.store(NONE, Ordering::Release),
    }
    read
}

/// Searches the noted objects for `sym`: Some(address or ABSENT), or None when an object on
/// the way cannot be searched this way.
fn search(sym: &Symbol) -> Option<usize> {
    // SAFETY: NOTED is read-only once WALKED (the caller saw it).
    let objects = unsafe { &*NOTED.0.get() };
    let from = if sym.next {
        MINE.load(Ordering::Relaxed) + 1
    } else {
        0
    };
    let name = sym.name.0.to_bytes();
    for i in from..objects.len {
        let o = &objects.list[i];
        if o.vdso {
            continue;
        }
        let t = tables_of(i)?;
        if let Some(f) = lookup_in(&t, o.base, name, sym.name.1).ok()? {
            return Some(f);
        }
    }
    Some(ABSENT)
}

/// The address of `sym` (0 when it is not there), searched for on first use.
#[inline(always)]
pub fn get(sym: &Symbol) -> usize {
    match sym.addr.load(Ordering::Acquire) {
        0 => first_use(sym),
        ABSENT => 0,
        f => f,
    }
}

/// [`get`]'s search, out of line: the common path stays a load and a compare.
#[cold]
#[inline(never)]
fn first_use(sym: &Symbol) -> usize {
    if WALK.load(Ordering::Acquire) == NOT_WALKED {
        init();
    }
    let mut f = match WALK.load(Ordering::Acquire) {
        // An IFUNC or an object without a GNU hash table on the way: as before this module,
        // dlsym answers (not in the common case: glibc's are all plain).
        WALKED => search(sym).unwrap_or_else(|| from_dlsym(sym)),
        // Another thread is walking right now (only before our constructor): this call asks
        // dlsym rather than wait.
        WALKING => from_dlsym(sym),
        _ => sym.addr.load(Ordering::Acquire),
    };
    if f == 0 {
        f = ABSENT;
    }
    sym.addr.store(f, Ordering::Release);
    if f == ABSENT { 0 } else { f }
}
