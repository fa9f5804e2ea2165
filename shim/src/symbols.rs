//! The libc functions and variables the shim uses, found by reading the loaded objects' symbol
//! tables itself (their GNU hash tables).
//!
//! Each symbol the shim imported was one more lookup the loader made at every process start
//! (the loader walks every object's hash table and compares names and versions), and each
//! `dlsym(RTLD_NEXT)` (the real `connect` and `listen`) cost over a thousand instructions more.
//! Here the constructor lists the loaded objects once (`dl_iterate_phdr`, itself found through
//! the loader's `_r_debug`: see [`LOADER`]), and each symbol is searched for on its first use,
//! without locks (so also inside a signal handler, or after a fork): the initial objects'
//! tables are read-only and never unmapped. A process that never connects searches for none.
//! - the real functions the shim interposes (`connect`, `listen`, `clone`, the resolver's,
//!   `posix_spawn`, ...) as `dlsym(RTLD_NEXT)` finds them: the first definition in the objects
//!   loaded after the shim;
//! - the rest (`__errno_location`, `environ`, ...) as the loader binds an import: the first
//!   definition from the executable on (a copy of `environ` in the executable included).
//!
//! Only a symbol's default version counts (as `dlsym` and an unversioned import), only defined
//! functions and objects. Where this cannot answer (an IFUNC, whose resolver picks the function;
//! an object without a GNU hash table on the way; more objects than noted; the shim not among
//! them), `dlsym` does, as before this module: at once for every symbol of [`each_of_all`] when the
//! list itself failed, else for that symbol on its first use.

use core::ffi::{CStr, c_char, c_int, c_void};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// One loaded object, as dl_iterate_phdr gives it; its symbol tables read on first use (see
/// [`TABLES`]).
#[derive(Clone, Copy)]
struct Object {
    base: usize,
    phdr: *const Phdr,
    phnum: u16,
    /// The kernel's vDSO: not in the loader's search scope (and its dynamic section is not
    /// relocated).
    vdso: bool,
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
    /// The shim's own ELF header (defined by the linker): where the shim is loaded.
    static __ehdr_start: u8;
}

type IterateFn = unsafe extern "C" fn(
    unsafe extern "C" fn(*mut PhdrInfo, usize, *mut c_void) -> c_int,
    *mut c_void,
) -> c_int;
type DlsymFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;

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
    /// The object's symbol tables, read from its dynamic section (None: it has no GNU hash
    /// table, or it is the vDSO).
    fn tables(&self) -> Option<Tables> {
        if self.vdso {
            return None;
        }
        // SAFETY: phnum program headers at phdr, as the loader maps them.
        tables(self.base, unsafe {
            dynamic_in(self.base, self.phdr, self.phnum)
        })
    }
}

/// The dynamic section of the object loaded at `base`, from its `phnum` program headers at
/// `phdr` (0: it has none).
///
/// # Safety
/// `phnum` program headers must be mapped at `phdr`.
unsafe fn dynamic_in(base: usize, phdr: *const Phdr, phnum: u16) -> usize {
    for i in 0..usize::from(phnum) {
        // SAFETY: from the caller.
        let ph = unsafe { &*phdr.add(i) };
        if ph.p_type == PT_DYNAMIC {
            return base.wrapping_add(ph.p_vaddr as usize);
        }
    }
    0
}

/// Hands each (tag, value) entry of the dynamic section at `dynamic` to `each`, up to
/// `DT_NULL` (at most 512), until `each` returns something.
///
/// # Safety
/// `dynamic` must be a dynamic section mapped for the duration of the call.
unsafe fn each_dyn<T>(dynamic: usize, mut each: impl FnMut(i64, i64) -> Option<T>) -> Option<T> {
    let mut d = dynamic as *const [i64; 2];
    for _ in 0..512 {
        // SAFETY: from the caller: (tag, value) pairs ending with DT_NULL, read up to it.
        let [tag, val] = unsafe { *d };
        if tag == DT_NULL {
            break;
        }
        if let Some(t) = each(tag, val) {
            return Some(t);
        }
        // SAFETY: the entry before DT_NULL was not the last: the next is in the section.
        d = unsafe { d.add(1) };
    }
    None
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
    if v != 0 && v < base { v + base } else { v }
}

fn tables(base: usize, dynamic: usize) -> Option<Tables> {
    if dynamic == 0 {
        return None;
    }
    let (mut h, mut sy, mut st, mut vs) = (0, 0, 0, 0);
    // SAFETY: the dynamic section is mapped for as long as the object is loaded (the shim's
    // constructor: the initial objects).
    unsafe {
        each_dyn(dynamic, |tag, val| {
            match tag {
                DT_GNU_HASH => h = val as usize,
                DT_SYMTAB => sy = val as usize,
                DT_STRTAB => st = val as usize,
                DT_VERSYM => vs = val as usize,
                _ => {}
            }
            None::<()>
        })
    };
    let (h, sy, st) = (dyn_ptr(base, h), dyn_ptr(base, sy), dyn_ptr(base, st));
    let vs = if vs == 0 { 0 } else { dyn_ptr(base, vs) };
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

/// Bytes a [`Name`] holds, its NUL included.
const NAME_MAX: usize = 24;

/// A name (NUL-terminated, inline) and its GNU hash, computed at compile time. Inline, not a
/// pointer: a pointer in a static is a relocation the loader applies in every process (about
/// 13 instructions each, with the symbols' and the list's: ~600 per process start).
struct Name {
    text: [u8; NAME_MAX],
    len: u8,
    hash: u32,
}

impl Name {
    const fn new(s: &CStr) -> Name {
        let b = s.to_bytes();
        assert!(b.len() < NAME_MAX, "name too long for Name");
        let mut text = [0u8; NAME_MAX];
        let mut i = 0;
        while i < b.len() {
            text[i] = b[i];
            i += 1;
        }
        Name {
            text,
            len: b.len() as u8,
            hash: gnu_hash(b),
        }
    }

    /// The name, without its NUL.
    fn bytes(&self) -> &[u8] {
        &self.text[..self.len as usize]
    }

    /// The name as a C string.
    fn c_str(&self) -> *const c_char {
        self.text.as_ptr().cast()
    }
}

macro_rules! name {
    ($s:literal) => {
        Name::new($s)
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
    // SAFETY: s is NUL-terminated; once all of name matched, the string is at least that long
    // plus its NUL.
    unsafe { starts_with(s, name) && *s.add(name.len()) == 0 }
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
/// glibc's `clone`, which [`super::ids`] interposes.
pub static CLONE: Symbol = Symbol::new(name!(c"clone"), true);
/// The descriptor functions [`super::fds`] interposes (`close` and `dup2` called in signal
/// handlers and between a fork and an exec too).
pub static SOCKET: Symbol = Symbol::new(name!(c"socket"), true);
pub static CLOSE: Symbol = Symbol::new(name!(c"close"), true);
/// glibc's other names, each forwarded to the next object's function of the same name (a
/// library that wraps `close` by calling `__close` must not be called back).
pub static CLOSE_ALIAS: Symbol = Symbol::new(name!(c"__close"), true);
pub static DUP2_ALIAS: Symbol = Symbol::new(name!(c"__dup2"), true);
pub static CLONE_ALIAS: Symbol = Symbol::new(name!(c"__clone"), true);
pub static UNSHARE: Symbol = Symbol::new(name!(c"unshare"), true);
pub static CLOSE_RANGE: Symbol = Symbol::new(name!(c"close_range"), true);
pub static CLOSEFROM: Symbol = Symbol::new(name!(c"closefrom"), true);
pub static DUP2: Symbol = Symbol::new(name!(c"dup2"), true);
pub static DUP3: Symbol = Symbol::new(name!(c"dup3"), true);
pub static DUP: Symbol = Symbol::new(name!(c"dup"), true);
pub static FCNTL: Symbol = Symbol::new(name!(c"fcntl"), true);
pub static FCNTL64: Symbol = Symbol::new(name!(c"fcntl64"), true);
pub static FCNTL_ALIAS: Symbol = Symbol::new(name!(c"__fcntl"), true);
pub static ERRNO_LOCATION: Symbol = Symbol::new(name!(c"__errno_location"), false);
pub static H_ERRNO_LOCATION: Symbol = Symbol::new(name!(c"__h_errno_location"), false);
pub static CLOCK_GETTIME: Symbol = Symbol::new(name!(c"clock_gettime"), false);
pub static SETCANCELTYPE: Symbol = Symbol::new(name!(c"pthread_setcanceltype"), false);
/// The address of the `environ` variable (a `*const *const c_char`).
pub static ENVIRON: Symbol = Symbol::new(name!(c"environ"), false);
/// The functions [`super::resolve`], [`super::spawn`] and [`super::threads`] interpose, called
/// only where `dlsym` may be called too: not in [`each_of_all`], asked of `dlsym` on their first use
/// when the objects could not be listed.
pub static GETADDRINFO: Symbol = Symbol::new(name!(c"getaddrinfo"), true);
pub static GETHOSTBYNAME: Symbol = Symbol::new(name!(c"gethostbyname"), true);
pub static GETHOSTBYNAME2: Symbol = Symbol::new(name!(c"gethostbyname2"), true);
pub static GETHOSTBYNAME_R: Symbol = Symbol::new(name!(c"gethostbyname_r"), true);
pub static GETHOSTBYNAME2_R: Symbol = Symbol::new(name!(c"gethostbyname2_r"), true);
pub static POSIX_SPAWN: Symbol = Symbol::new(name!(c"posix_spawn"), true);
pub static POSIX_SPAWNP: Symbol = Symbol::new(name!(c"posix_spawnp"), true);
pub static PTHREAD_SETNAME_NP: Symbol = Symbol::new(name!(c"pthread_setname_np"), true);

/// The symbols the shim may need where `dlsym` may not be called (in a signal handler, after a
/// fork): asked of `dlsym` at once when the objects could not be listed. Each passed to `f` in
/// turn, not kept in a table: a table of their addresses would be relocations the loader
/// applies in every process.
fn each_of_all(mut f: impl FnMut(&'static Symbol)) {
    f(&DUP);
    f(&FCNTL);
    f(&FCNTL64);
    f(&FCNTL_ALIAS);
    f(&CONNECT);
    f(&LISTEN);
    f(&CLONE);
    f(&CLONE_ALIAS);
    f(&UNSHARE);
    f(&SOCKET);
    f(&CLOSE);
    f(&CLOSE_ALIAS);
    f(&DUP2_ALIAS);
    f(&CLOSE_RANGE);
    f(&CLOSEFROM);
    f(&DUP2);
    f(&DUP3);
    f(&ERRNO_LOCATION);
    f(&H_ERRNO_LOCATION);
    f(&CLOCK_GETTIME);
    f(&SETCANCELTYPE);
    f(&ENVIRON);
}

/// The objects the constructor noted: written by the one thread that wins [`WALK`], before it
/// publishes them (`WALKED`); never written again.
struct Noted(core::cell::UnsafeCell<Objects>);
// SAFETY: see the comment on Noted: written once before publication, read-only afterwards
// (each object's lazily read tables live in TABLES, see LazyTables).
unsafe impl Sync for Noted {}
static NOTED: Noted = Noted(core::cell::UnsafeCell::new(Objects {
    list: [Object {
        base: 0,
        phdr: core::ptr::null(),
        phnum: 0,
        vdso: false,
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
/// failed (every symbol of [`each_of_all`] asked of dlsym instead, at once, the others on first use).
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
    let iterate = loader_fn(ITERATE);
    if iterate == 0 {
        fail_walk();
        return;
    }
    // SAFETY: iterate is libc's dl_iterate_phdr.
    let iterate: IterateFn = unsafe { core::mem::transmute::<usize, IterateFn>(iterate) };
    let p = NOTED.0.get();
    // SAFETY: this thread won WALK: nobody else writes or reads NOTED until WALKED is
    // published; the callback only writes into it.
    let (objects, overflow) = unsafe {
        iterate(note, p.cast());
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
        None => fail_walk(),
    }
}

/// Without a list of the loaded objects, every symbol of [`each_of_all`] is asked of dlsym, at once.
fn fail_walk() {
    each_of_all(|sym| sym.addr.store(from_dlsym(sym), Ordering::Release));
    WALK.store(FAILED, Ordering::Release);
}

/// libc's `dl_iterate_phdr` and `dlsym`, found without importing them: an import makes the
/// loader look up its name (and check libc's version of it) in every process of the run, and
/// the first import of a library makes it match the library's name against every loaded
/// object's; with none, the shim has no dependency at all (about 1,700 instructions less per
/// process start). They are found through the loader's own list of loaded objects, which it
/// publishes for debuggers (`_r_debug`, defined by the dynamic loader, found from the process's
/// auxiliary vector): the first object that defines each, as the loader binds an import.
/// Each slot: 0 not searched yet, [`ABSENT`] not found, else the address.
static LOADER: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];
const ITERATE: usize = 0;
const DLSYM: usize = 1;
const LOADER_NAMES: [Name; 2] = [name!(c"dl_iterate_phdr"), name!(c"dlsym")];

/// The constructor's environment when it is the process's initial one (directly after the
/// arguments on the initial stack, as the kernel laid them out), where the auxiliary vector
/// follows it; 0 otherwise (then it is read from `/proc/self/auxv`).
static INITIAL_ENV: AtomicUsize = AtomicUsize::new(0);

/// From the constructor: remembers where the auxiliary vector is, if the environment glibc
/// hands constructors is the initial stack's (it is at start-up).
pub fn note_initial_stack(argc: c_int, argv: *const *const c_char, env: *const *const c_char) {
    if argc >= 0 && !argv.is_null() && argv.wrapping_add(argc as usize + 1) == env {
        INITIAL_ENV.store(env as usize, Ordering::Relaxed);
    }
}

/// libc's function `which` ([`ITERATE`], [`DLSYM`]), or 0.
fn loader_fn(which: usize) -> usize {
    match LOADER[which].load(Ordering::Acquire) {
        0 => {}
        ABSENT => return 0,
        f => return f,
    }
    let found = find_loader_fns();
    for (slot, f) in LOADER.iter().zip(found) {
        slot.store(if f == 0 { ABSENT } else { f }, Ordering::Release);
    }
    found[which]
}

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_BASE: u64 = 7;
const AT_SYSINFO_EHDR: u64 = 33;

/// What the auxiliary vector says of the process's objects.
struct Auxv {
    /// The dynamic loader's load address (`AT_BASE`).
    ldso: usize,
    /// The program's program headers (`AT_PHDR`).
    phdr: usize,
    /// The vDSO's load address (`AT_SYSINFO_EHDR`).
    vdso: usize,
}

/// The process's [`Auxv`], from the initial stack or `/proc/self/auxv`.
fn auxv() -> Auxv {
    let (mut base, mut phdr, mut vdso) = (0, 0, 0);
    let mut take = |t: u64, v: u64| match t {
        AT_BASE => base = v as usize,
        AT_PHDR => phdr = v as usize,
        AT_SYSINFO_EHDR => vdso = v as usize,
        _ => {}
    };
    let env = INITIAL_ENV.load(Ordering::Relaxed) as *const *const c_char;
    if !env.is_null() {
        // SAFETY: env is the initial stack's environment array (checked by
        // note_initial_stack): NULL-terminated and followed, in the slots the kernel laid out,
        // by the auxiliary vector, pairs of words ending with AT_NULL, which stays on the stack
        // for the life of the process. Entries unsetenv removed before this constructor ran
        // (another library's constructor) shifted the rest down and left NULLs up to the
        // vector, whose first type is never 0: every word read lies between the array's start
        // and the vector's end.
        let vector = unsafe {
            let mut p = env;
            while !(*p).is_null() {
                p = p.add(1);
            }
            while (*p).is_null() {
                p = p.add(1);
            }
            p.cast::<[u64; 2]>()
        };
        // Checked whole before any of it is taken: not a vector (the environment was changed
        // some other way) when a type no kernel gives comes first, or too many entries.
        // SAFETY: as above; each pair is read only after every one before it was not AT_NULL.
        let pairs = |f: &mut dyn FnMut(u64, u64)| unsafe {
            let mut a = vector;
            for _ in 0..64 {
                let [t, v] = *a;
                if t == AT_NULL {
                    return true;
                }
                if t > 255 {
                    return false;
                }
                f(t, v);
                a = a.add(1);
            }
            false
        };
        if pairs(&mut |_, _| {}) {
            pairs(&mut take);
            return Auxv {
                ldso: base,
                phdr,
                vdso,
            };
        }
    }
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        super::sys::open(
            c"/proc/self/auxv".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Auxv {
            ldso: 0,
            phdr: 0,
            vdso: 0,
        };
    }
    let mut buf = [[0u64; 2]; 16];
    'read: loop {
        // SAFETY: reading into buf, which we own; the file holds whole pairs.
        let n = unsafe {
            super::sys::read(
                fd,
                buf.as_mut_ptr().cast::<c_void>(),
                core::mem::size_of_val(&buf),
            )
        };
        if n <= 0 {
            break;
        }
        for &[t, v] in &buf[..n as usize / 16] {
            if t == AT_NULL {
                break 'read;
            }
            take(t, v);
        }
    }
    super::sys::close(fd);
    Auxv {
        ldso: base,
        phdr,
        vdso,
    }
}

#[repr(C)]
struct Ehdr {
    e_ident: [u8; 16],
    e_type: u16,
    e_machine: u16,
    e_version: u32,
    e_entry: u64,
    e_phoff: u64,
    e_shoff: u64,
    e_flags: u32,
    e_ehsize: u16,
    e_phentsize: u16,
    e_phnum: u16,
}

/// The public head of glibc's `struct link_map` (link.h), stable for debuggers.
#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const c_char,
    l_ld: usize,
    l_next: *const LinkMap,
}

/// The dynamic section of the object whose ELF header is at `base`, if it looks like one.
///
/// # Safety
/// `base` must be where a loaded object's first page is mapped.
unsafe fn dynamic_of(base: usize) -> usize {
    // SAFETY: from the caller: the object's first page holds its ELF header and program
    // headers (e_phoff is within it for every object the loader maps).
    unsafe {
        let e = &*(base as *const Ehdr);
        if e.e_ident[..4] != *b"\x7fELF" || e.e_phoff >= 4096 {
            return 0;
        }
        let ph = (base + e.e_phoff as usize) as *const Phdr;
        dynamic_in(base, ph, e.e_phnum.min(64))
    }
}

const DT_DEBUG: i64 = 21;
const PT_PHDR: u32 = 6;
/// The loader's list of loaded objects for debuggers (glibc's `struct r_debug`).
const R_DEBUG: Name = name!(c"_r_debug");

/// The `_r_debug` the object mapped at `base` defines (the dynamic loader does), or 0.
///
/// # Safety
/// `base` must be where a loaded, relocated object's first page is mapped.
unsafe fn defined_r_debug(base: usize) -> usize {
    // SAFETY: from the caller.
    let Some(t) = tables(base, unsafe { dynamic_of(base) }) else {
        return 0;
    };
    match lookup_in(&t, base, R_DEBUG.bytes(), R_DEBUG.hash) {
        Ok(Some(r)) => r,
        _ => 0,
    }
}

/// `_r_debug` when the auxiliary vector has no `AT_BASE`: the dynamic loader was run as the
/// program (`ld.so PROGRAM`). The kernel then handed it its own program headers (`AT_PHDR`, as
/// `/proc/self/auxv` still says), but the loader points the stack's `AT_PHDR` at the program's
/// before any constructor runs (glibc 2.36 does): either the program, whose `DT_DEBUG` entry
/// the loader set to its `_r_debug`, or the loader itself, which defines it.
///
/// # Safety
/// `phdr` must be where an object's program headers are mapped, on its first page.
unsafe fn r_debug_without_base(phdr: usize) -> usize {
    let page = phdr & !0xfff;
    // SAFETY: from the caller: the object's first page, with its ELF header.
    let e = unsafe { &*(page as *const Ehdr) };
    if e.e_ident[..4] != *b"\x7fELF" || page + e.e_phoff as usize != phdr {
        return 0;
    }
    // The load bias from PT_PHDR (a non-PIE program's is 0, not its first page; the loader,
    // which has none, is linked at 0), then the dynamic section.
    let headers = phdr as *const Phdr;
    let (mut bias, mut dynamic) = (page, None);
    for i in 0..usize::from(e.e_phnum.min(64)) {
        // SAFETY: e_phnum program headers at phdr, on the object's first page (checked above).
        let ph = unsafe { &*headers.add(i) };
        match ph.p_type {
            PT_PHDR => bias = phdr.wrapping_sub(ph.p_vaddr as usize),
            PT_DYNAMIC => dynamic = Some(ph.p_vaddr as usize),
            _ => {}
        }
    }
    let Some(dynamic) = dynamic.map(|v| bias.wrapping_add(v)) else {
        return 0;
    };
    // SAFETY: the object's dynamic section, mapped with it; DT_DEBUG's value is what the loader
    // wrote there (0 if it did not).
    let debug = unsafe {
        each_dyn(dynamic, |tag, val| {
            (tag == DT_DEBUG && val != 0).then_some(val)
        })
    };
    if let Some(r_debug) = debug {
        return r_debug as usize;
    }
    match tables(bias, dynamic).map(|t| lookup_in(&t, bias, R_DEBUG.bytes(), R_DEBUG.hash)) {
        Some(Ok(Some(r))) => r,
        _ => 0,
    }
}

/// [`LOADER_NAMES`]' addresses (0: not found): the dynamic loader from the auxiliary vector,
/// its `_r_debug`, then the first definition of each in its list of loaded objects.
fn find_loader_fns() -> [usize; 2] {
    let mut found = [0; 2];
    let Auxv { ldso, phdr, vdso } = auxv();
    let r_debug = if ldso != 0 {
        // SAFETY: the dynamic loader is mapped at AT_BASE, relocated.
        unsafe { defined_r_debug(ldso) }
    } else if phdr != 0 {
        // SAFETY: AT_PHDR is where the kernel or the loader mapped an object's program headers.
        unsafe { r_debug_without_base(phdr) }
    } else {
        0
    };
    if r_debug == 0 {
        return found;
    }
    // SAFETY: glibc's struct r_debug: an int version, then (8-aligned) the list's head, which
    // the loader set up before any constructor ran; each entry's public head is link.h's, and
    // the initial objects it lists stay loaded. At most 1024 entries are followed.
    unsafe {
        let mut m = *((r_debug + 8) as *const *const LinkMap);
        for _ in 0..1024 {
            if m.is_null() || found.iter().all(|&f| f != 0) {
                break;
            }
            let l = &*m;
            m = l.l_next;
            // Neither the shim nor the kernel's vDSO defines them.
            if l.l_addr == &raw const __ehdr_start as usize || l.l_addr == vdso {
                continue;
            }
            if let Some(t) = tables(l.l_addr, l.l_ld) {
                for (f, n) in found.iter_mut().zip(&LOADER_NAMES) {
                    if *f == 0
                        && let Ok(Some(a)) = lookup_in(&t, l.l_addr, n.bytes(), n.hash)
                    {
                        *f = a;
                    }
                }
            }
        }
    }
    found
}

/// libc's `dlsym`: the address of `name` (RTLD_NEXT: in the objects after the shim's), or 0.
///
/// # Safety
/// `name` is NUL-terminated; as dlsym(3), not from a signal handler or a fork child of a
/// threaded program (it takes the loader's lock).
unsafe fn dlsym(handle: *mut c_void, name: *const c_char) -> usize {
    match loader_fn(DLSYM) {
        0 => 0,
        f => {
            // SAFETY: f is libc's dlsym.
            let f: DlsymFn = unsafe { core::mem::transmute::<usize, DlsymFn>(f) };
            // SAFETY: from the caller; called from the shim, so RTLD_NEXT means the objects
            // after the shim's.
            unsafe { f(handle, name) as usize }
        }
    }
}

fn from_dlsym(sym: &Symbol) -> usize {
    let handle = if sym.next {
        libc::RTLD_NEXT
    } else {
        libc::RTLD_DEFAULT
    };
    // SAFETY: dlsym with a NUL-terminated name.
    match unsafe { dlsym(handle, sym.name.c_str()) } {
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
    let read = unsafe { (*NOTED.0.get()).list[i] }.tables();
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
    let name = sym.name.bytes();
    for i in from..objects.len {
        let o = &objects.list[i];
        if o.vdso {
            continue;
        }
        let t = tables_of(i)?;
        if let Some(f) = lookup_in(&t, o.base, name, sym.name.hash).ok()? {
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
        // FAILED: each_of_all's were asked of dlsym then; the others are now.
        _ => match sym.addr.load(Ordering::Acquire) {
            0 => from_dlsym(sym),
            f => f,
        },
    };
    if f == 0 {
        f = ABSENT;
    }
    sym.addr.store(f, Ordering::Release);
    if f == ABSENT { 0 } else { f }
}
