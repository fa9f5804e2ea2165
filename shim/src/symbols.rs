//! The libc functions and variables the shim uses, found by reading the loaded objects' symbol
//! tables itself (their GNU hash tables), once, from the constructor.
//!
//! Each symbol the shim imported was one more lookup the loader made at every process start
//! (the loader walks every object's hash table and compares names and versions), and each
//! `dlsym(RTLD_NEXT)` (the real `connect` and `listen`) cost over a thousand instructions more.
//! Here one `dl_iterate_phdr` lists the loaded objects, and each name costs one hash-table probe
//! per object searched:
//! - the real `connect` and `listen` as `dlsym(RTLD_NEXT)` finds them: the first definition in
//!   the objects loaded after the shim;
//! - the rest (`__errno_location`, `environ`, ...) as the loader binds an import: the first
//!   definition from the executable on (a non-PIE executable's copy of `environ` included).
//!
//! Only a symbol's default version counts (as `dlsym` and an unversioned import), only defined
//! functions and objects (an IFUNC would need its resolver called: not taken). Whatever is not
//! found this way is asked of `dlsym`, so the shim never knows less than before.

use core::ffi::{CStr, c_char, c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
fn lookup(o: &mut Object, name: &[u8], h: u32) -> Result<Option<usize>, ()> {
    lookup_in(&o.tables().ok_or(())?, o.base, name, h)
}

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

/// What the shim uses from libc (0: not found).
pub static CONNECT: AtomicUsize = AtomicUsize::new(0);
pub static LISTEN: AtomicUsize = AtomicUsize::new(0);
pub static ERRNO_LOCATION: AtomicUsize = AtomicUsize::new(0);
pub static H_ERRNO_LOCATION: AtomicUsize = AtomicUsize::new(0);
pub static CLOCK_GETTIME: AtomicUsize = AtomicUsize::new(0);
pub static SETCANCELTYPE: AtomicUsize = AtomicUsize::new(0);
pub static REGISTER_ATFORK: AtomicUsize = AtomicUsize::new(0);
/// The address of the `environ` variable (a `*const *const c_char`).
pub static ENVIRON: AtomicUsize = AtomicUsize::new(0);
/// [`init`] has run: a symbol still 0 is not there (never searched again: a search may take
/// the loader's lock, which a signal handler must not).
static DONE: AtomicBool = AtomicBool::new(false);

/// Finds everything above (from the constructor; again from the first call if another
/// library's constructor calls in before ours ran). Idempotent.
pub fn init() {
    let mut objects = core::mem::MaybeUninit::<Objects>::uninit();
    let p = objects.as_mut_ptr();
    // SAFETY: len and overflow initialised first; note writes list[len] before len covers it;
    // the callback only writes into `objects`, which outlives the call. Afterwards list[..len]
    // is initialised.
    let (all, overflow) = unsafe {
        (&raw mut (*p).len).write(0);
        (&raw mut (*p).overflow).write(false);
        dl_iterate_phdr(note, p.cast());
        (
            core::slice::from_raw_parts_mut((&raw mut (*p).list).cast::<Object>(), (*p).len),
            (*p).overflow,
        )
    };
    // SAFETY: only the address of the linker-defined symbol is taken.
    let me = &raw const __ehdr_start as usize;
    let Some(mine) = all.iter().position(|o| o.base == me).filter(|_| !overflow) else {
        return init_with_dlsym();
    };
    // The first definition from `from` on; None (ask dlsym) when an object on the way cannot
    // be searched.
    let mut first = |from: usize, name: &Name| -> Option<usize> {
        let bytes = name.0.to_bytes();
        for o in all[from..].iter_mut().filter(|o| !o.vdso) {
            if let Some(f) = lookup(o, bytes, name.1).ok()? {
                return Some(f);
            }
        }
        None
    };
    let set = |cell: &AtomicUsize, found: Option<usize>, name: &Name, handle: *mut c_void| {
        // SAFETY: dlsym with a NUL-terminated name.
        let f = found.unwrap_or_else(|| unsafe { libc::dlsym(handle, name.0.as_ptr()) } as usize);
        cell.store(f, Ordering::Release);
    };
    for (cell, name) in [(&CONNECT, name!(c"connect")), (&LISTEN, name!(c"listen"))] {
        set(cell, first(mine + 1, &name), &name, libc::RTLD_NEXT);
    }
    for (cell, name) in [
        (&ERRNO_LOCATION, name!(c"__errno_location")),
        (&H_ERRNO_LOCATION, name!(c"__h_errno_location")),
        (&CLOCK_GETTIME, name!(c"clock_gettime")),
        (&SETCANCELTYPE, name!(c"pthread_setcanceltype")),
        (&REGISTER_ATFORK, name!(c"__register_atfork")),
        (&ENVIRON, name!(c"environ")),
    ] {
        set(cell, first(0, &name), &name, libc::RTLD_DEFAULT);
    }
    DONE.store(true, Ordering::Release);
}

/// Without the list of objects (the shim not found in it): everything from dlsym.
fn init_with_dlsym() {
    for (cell, name, handle) in [
        (&CONNECT, c"connect", libc::RTLD_NEXT),
        (&LISTEN, c"listen", libc::RTLD_NEXT),
        (&ERRNO_LOCATION, c"__errno_location", libc::RTLD_DEFAULT),
        (&H_ERRNO_LOCATION, c"__h_errno_location", libc::RTLD_DEFAULT),
        (&CLOCK_GETTIME, c"clock_gettime", libc::RTLD_DEFAULT),
        (&SETCANCELTYPE, c"pthread_setcanceltype", libc::RTLD_DEFAULT),
        (&REGISTER_ATFORK, c"__register_atfork", libc::RTLD_DEFAULT),
        (&ENVIRON, c"environ", libc::RTLD_DEFAULT),
    ] {
        // SAFETY: dlsym with a NUL-terminated name.
        let f = unsafe { libc::dlsym(handle, name.as_ptr()) } as usize;
        cell.store(f, Ordering::Release);
    }
    DONE.store(true, Ordering::Release);
}

/// The function in `cell`, found now if [`init`] has not run yet.
pub fn get(cell: &AtomicUsize) -> usize {
    let f = cell.load(Ordering::Acquire);
    if f != 0 || DONE.load(Ordering::Acquire) {
        return f;
    }
    init();
    cell.load(Ordering::Acquire)
}
