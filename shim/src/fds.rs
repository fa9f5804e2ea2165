//! Which of the process's descriptors are stream sockets, as its libc calls made them: the
//! connect fast path then knows a socket's type without asking the kernel (`getsockopt
//! (SO_TYPE)`, ~80-100 ns, a third of the shim's cost on a refused loopback connect).
//!
//! One bit per descriptor below [`FDS`]: set when `socket()` returns a stream socket there,
//! cleared when `socket()` returns any other type there, before a `close`, `__close`,
//! `close_range`, `closefrom`, `dup2`, `__dup2` or `dup3` (the target) can free or replace the
//! descriptor, and when `dup` or `fcntl(F_DUPFD, F_DUPFD_CLOEXEC)` hands the number out. The shim interposes those functions; each calls the real one and returns its
//! result, errno untouched (only a bit is set or cleared around it). A clear bit means "not
//! known": the fast path asks the kernel, as for a descriptor the process inherited at `exec`,
//! got from `accept`, `dup` or `fcntl`, or above [`FDS`].
//!
//! A set bit is trusted only while no task may be running on another's memory with a
//! descriptor table of its own ([`super::ids::shared`]: a `vfork` child until its parent
//! resumes; for good once the program made a `clone(CLONE_VM)`), and is set only then: such a
//! task's `socket()` would mark a number that is another object in its parent's table. For good
//! too ([`untrust`]) once the memory and the table stop going together another way: a `clone`
//! with `CLONE_FILES` but not `CLONE_VM` (the child's `close` clears only its own copy of the
//! bits), `unshare(CLONE_FILES)` or `close_range(.., CLOSE_RANGE_UNSHARE)` (a thread's own table
//! in the shared memory). Clearing is always safe (a miss). A fork child inherits both the
//! descriptors and the bits. The aliases (`__close`, `__dup2`, and [`super::ids`]'s `__clone`)
//! are forwarded to the next object's function of the same name: a library that wraps `close`
//! by calling `__close` is never called back.
//!
//! What a set bit cannot know: a descriptor freed without these functions (a raw `close`,
//! `clone` or `unshare` system call, `io_uring`, glibc's own `fclose` of a stream over the
//! socket, glibc 2.40's `posix_close`) whose number is then given to a socket that is not a
//! stream socket without these functions either (a raw system call, `io_uring`, received over a
//! UNIX socket, copied from another process with `pidfd_getfd`), and then connected through
//! libc. Such a connect is taken as a stream socket's: decided and
//! recorded from its address alone, as tcp. A number given to anything but a socket is exact:
//! the kernel's `ENOTSOCK` (or `EBADF`) voids the record after the call
//! ([`super::intercept_v4`]). `close_range` and `closefrom` are exported whatever the libc: a
//! program that looks them up by name (`dlsym`) under a glibc older than 2.34 finds these, which
//! do what glibc's do (the system call; for `closefrom`, where the kernel refuses it, every
//! number below the descriptor limit closed one by one).

use super::symbols::{
    self, CLOSE, CLOSE_ALIAS, CLOSE_RANGE, CLOSEFROM, DUP, DUP2, DUP2_ALIAS, DUP3, FCNTL,
    FCNTL_ALIAS, FCNTL64, SOCKET, UNSHARE,
};
use super::sys;
use core::ffi::{c_int, c_long, c_uint};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Descriptors with a bit: 0..FDS.
const FDS: usize = 4096;

/// Bit `fd % 64` of word `fd / 64`: set when `fd` is a stream socket `socket()` made.
static STREAM: [AtomicU64; FDS / 64] = [const { AtomicU64::new(0) }; FDS / 64];

/// Set for good once two tasks may hold different descriptor tables in the same memory, or the
/// same table in different memories, in ways the bits cannot follow (see [`untrust`]).
static UNTRUSTED: AtomicBool = AtomicBool::new(false);

/// The bits are never trusted or set again in this process (and its fork children, which copy
/// the flag): from a `clone` that shares the descriptor table but not memory (`CLONE_FILES`
/// without `CLONE_VM`: the child's `close` and `socket` change the caller's descriptors and only
/// the child's copy of the bits), an `unshare(CLONE_FILES)` or a `close_range(...,
/// CLOSE_RANGE_UNSHARE)` (the caller gets a table of its own, and its `socket()` would mark
/// numbers that are other objects in the other threads' table).
pub fn untrust() {
    UNTRUSTED.store(true, Ordering::Release);
}

/// May the bits be trusted, and set?
#[inline(always)]
fn trusted() -> bool {
    !UNTRUSTED.load(Ordering::Acquire) && !super::ids::shared()
}

/// Is `fd` a stream socket this process's `socket()` made, as far as its libc calls say (see
/// the module comment)?
#[inline(always)]
pub fn known_stream(fd: c_int) -> bool {
    let Ok(i) = usize::try_from(fd) else {
        return false;
    };
    i < FDS && STREAM[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0 && trusted()
}

/// Marks `fd` (a descriptor `socket()` just returned) as a stream socket or not.
#[inline(always)]
fn note(fd: c_int, stream: bool) {
    // A negative fd becomes a number past FDS.
    let i = fd as u32 as usize;
    if !(stream && trusted()) {
        forget_one(fd);
    } else if i < FDS {
        STREAM[i / 64].fetch_or(1 << (i % 64), Ordering::AcqRel);
    }
}

/// Forgets descriptors `from..=to` (those below [`FDS`]); a word not marked is only read. For
/// `close_range` and `closefrom`; one descriptor is [`forget_one`]'s.
#[inline(never)]
fn forget(from: u64, to: u64) {
    if from >= FDS as u64 || from > to {
        return;
    }
    let to = to.min(FDS as u64 - 1);
    let (first, last) = ((from / 64) as usize, (to / 64) as usize);
    for (k, word) in STREAM.iter().enumerate().take(last + 1).skip(first) {
        let lo = if k == first { from % 64 } else { 0 };
        let hi = if k == last { to % 64 } else { 63 };
        // Bits lo..=hi.
        let mask = (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
        if word.load(Ordering::Relaxed) & mask != 0 {
            word.fetch_and(!mask, Ordering::AcqRel);
        }
    }
}

/// Forgets `fd` (any int: a negative or large one is nobody's); a bit not set is only read.
#[inline(always)]
fn forget_one(fd: c_int) {
    // A negative fd becomes a number past FDS.
    let i = fd as u32 as usize;
    if i < FDS {
        let (word, bit) = (&STREAM[i / 64], 1u64 << (i % 64));
        if word.load(Ordering::Relaxed) & bit != 0 {
            word.fetch_and(!bit, Ordering::AcqRel);
        }
    }
}

/// `socket`, interposing libc's: the real call, and the new descriptor's bit.
///
/// # Safety
/// Same contract as socket(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    let me = socket as *const () as usize;
    let fd = call3(&SOCKET, me, libc::SYS_socket, domain, ty, protocol);
    if fd >= 0 {
        // SOCK_NONBLOCK and SOCK_CLOEXEC masked off, as the kernel does (SOCK_TYPE_MASK).
        note(fd, ty & 0xf == libc::SOCK_STREAM);
    }
    fd
}

/// The real one-descriptor function `sym` (`close`), or the raw system call `nr` when libc has
/// none to find.
#[inline(always)]
fn call1(sym: &symbols::Symbol, me: usize, nr: c_long, a: c_int) -> c_int {
    let f = symbols::get(sym);
    if f == 0 || f == me {
        // SAFETY: a plain one-argument system call with the caller's argument.
        return sys::libc_style(unsafe { sys::call(nr, a as usize, 0, 0, 0, 0, 0) });
    }
    // SAFETY: f is libc's function of one int, found as dlsym(RTLD_NEXT) would (symbols).
    let f: unsafe extern "C" fn(c_int) -> c_int = unsafe { core::mem::transmute::<usize, _>(f) };
    // SAFETY: forwarding the caller's argument unchanged.
    unsafe { f(a) }
}

/// The real three-argument function `sym` (`socket`, `close_range`, `dup3`: each argument an
/// int or an unsigned int, passed alike), or the raw system call `nr` when libc has none to
/// find.
#[inline(always)]
fn call3(sym: &symbols::Symbol, me: usize, nr: c_long, a: c_int, b: c_int, c: c_int) -> c_int {
    let f = symbols::get(sym);
    if f == 0 || f == me {
        let arg = |v: c_int| v as c_uint as usize;
        // SAFETY: a plain three-argument system call with the caller's arguments.
        return sys::libc_style(unsafe { sys::call(nr, arg(a), arg(b), arg(c), 0, 0, 0) });
    }
    // SAFETY: f is libc's function of three ints (or unsigned ints: the same registers), found
    // as dlsym(RTLD_NEXT) would (symbols).
    let f: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int =
        unsafe { core::mem::transmute::<usize, _>(f) };
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { f(a, b, c) }
}

/// `close`, interposing libc's: the bit forgotten first (before the number can be reused),
/// then the real call.
///
/// # Safety
/// Same contract as close(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    forget_one(fd);
    call1(&CLOSE, close as *const () as usize, libc::SYS_close, fd)
}

/// glibc exports `close` under this name too: the same, forwarded to the next `__close`.
///
/// # Safety
/// Same contract as close(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __close(fd: c_int) -> c_int {
    forget_one(fd);
    call1(
        &CLOSE_ALIAS,
        __close as *const () as usize,
        libc::SYS_close,
        fd,
    )
}

/// `close_range`, interposing libc's: the range forgotten first (unless the call only sets
/// close-on-exec), then the real call.
///
/// # Safety
/// Same contract as close_range(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if flags & libc::CLOSE_RANGE_UNSHARE as c_int != 0 {
        untrust();
    }
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        forget(u64::from(first), u64::from(last));
    }
    let me = close_range as *const () as usize;
    let (first, last) = (first as c_int, last as c_int);
    call3(&CLOSE_RANGE, me, libc::SYS_close_range, first, last, flags)
}

/// `closefrom`, interposing libc's: descriptors from `lowfd` on (from 0 for a negative one, as
/// glibc's) forgotten first, then the real call. Without one in libc (a program that found this
/// one by name with `dlsym`), what glibc's does: the `close_range` system call, and where the
/// kernel refuses it (before Linux 5.9, or a sandbox), each descriptor `/proc/self/fd` lists
/// ([`close_listed`]).
///
/// # Safety
/// Same contract as closefrom(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn closefrom(lowfd: c_int) {
    let from = lowfd.max(0);
    forget(from as u64, u64::MAX);
    let f = symbols::get(&CLOSEFROM);
    if f == 0 || f == closefrom as *const () as usize {
        let saved = super::errno();
        // SAFETY: close_range(2) of from..=~0, what glibc's closefrom asks first.
        let r = unsafe {
            sys::call(
                libc::SYS_close_range,
                from as usize,
                c_uint::MAX as usize,
                0,
                0,
                0,
                0,
            )
        };
        if r < 0 {
            close_listed(from);
        }
        super::set_errno(saved);
        return;
    }
    // SAFETY: f is libc's closefrom, found as dlsym(RTLD_NEXT) would (symbols).
    let f: unsafe extern "C" fn(c_int) = unsafe { core::mem::transmute::<usize, _>(f) };
    // SAFETY: forwarding the caller's argument unchanged.
    unsafe { f(lowfd) }
}

/// `dup2`, interposing libc's: the target forgotten first (it is closed, or becomes another
/// descriptor's copy), then the real call.
///
/// # Safety
/// Same contract as dup2(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    forget_one(new);
    real_dup2(&DUP2, dup2 as *const () as usize, old, new)
}

/// glibc exports `dup2` under this name too: the same, forwarded to the next `__dup2`.
///
/// # Safety
/// Same contract as dup2(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __dup2(old: c_int, new: c_int) -> c_int {
    forget_one(new);
    real_dup2(&DUP2_ALIAS, __dup2 as *const () as usize, old, new)
}

/// The next object's `dup2` (`sym`, not `me`), or what it does.
fn real_dup2(sym: &symbols::Symbol, me: usize, old: c_int, new: c_int) -> c_int {
    let f = symbols::get(sym);
    if f == 0 || f == me {
        // dup2(2) is dup3(2) without flags, except for old == new: old's validity.
        if old == new {
            // SAFETY: fcntl(F_GETFD) reads a descriptor's flags; nothing else.
            let r = unsafe {
                sys::call(
                    libc::SYS_fcntl,
                    old as usize,
                    libc::F_GETFD as usize,
                    0,
                    0,
                    0,
                    0,
                )
            };
            return if r < 0 { sys::libc_style(r) } else { new };
        }
        // SAFETY: a plain dup3(2) without flags, the caller's descriptors.
        let r = unsafe { sys::call(libc::SYS_dup3, old as usize, new as usize, 0, 0, 0, 0) };
        return sys::libc_style(r);
    }
    // SAFETY: f is libc's dup2, found as dlsym(RTLD_NEXT) would (symbols).
    let f: unsafe extern "C" fn(c_int, c_int) -> c_int =
        unsafe { core::mem::transmute::<usize, _>(f) };
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { f(old, new) }
}

/// `dup3`, interposing libc's: the target forgotten first, then the real call.
///
/// # Safety
/// Same contract as dup3(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    forget_one(new);
    call3(
        &DUP3,
        dup3 as *const () as usize,
        libc::SYS_dup3,
        old,
        new,
        flags,
    )
}

/// `unshare`, interposing libc's: a caller that takes a descriptor table of its own
/// (`CLONE_FILES`) while its threads keep the old one ends the bits' use ([`untrust`]), then the
/// real call.
///
/// # Safety
/// Same contract as unshare(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn unshare(flags: c_int) -> c_int {
    if flags & libc::CLONE_FILES != 0 {
        untrust();
    }
    call1(
        &UNSHARE,
        unshare as *const () as usize,
        libc::SYS_unshare,
        flags,
    )
}

/// `dup`, interposing libc's: the real call, then the new number forgotten (a number freed where
/// the shim could not see it may still carry a bit).
///
/// # Safety
/// Same contract as dup(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(old: c_int) -> c_int {
    let fd = call1(&DUP, dup as *const () as usize, libc::SYS_dup, old);
    forget_one(fd);
    fd
}

/// `fcntl`, interposing libc's (a variadic function: its one optional argument, an integer or
/// a pointer, is passed in the same register either way on x86_64, and handed on as it came):
/// the real call, and for `F_DUPFD` and `F_DUPFD_CLOEXEC` the new number forgotten, as [`dup`].
///
/// # Safety
/// Same contract as fcntl(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: same contract as ours.
    unsafe { fcntl_with(&FCNTL, fcntl as *const () as usize, fd, cmd, arg) }
}

/// glibc's `fcntl` for 64-bit file offsets (the same function on x86_64), interposed the same
/// way and forwarded to the next `fcntl64`.
///
/// # Safety
/// Same contract as fcntl(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: same contract as ours.
    unsafe { fcntl_with(&FCNTL64, fcntl64 as *const () as usize, fd, cmd, arg) }
}

/// glibc exports `fcntl` under this name too: the same, forwarded to the next `__fcntl`.
///
/// # Safety
/// Same contract as fcntl(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: same contract as ours.
    unsafe { fcntl_with(&FCNTL_ALIAS, __fcntl as *const () as usize, fd, cmd, arg) }
}

/// [`fcntl`], [`fcntl64`] and [`__fcntl`]: the next object's `sym` (not `me`), or the system
/// call.
///
/// # Safety
/// Same contract as fcntl(2).
#[inline(always)]
unsafe fn fcntl_with(sym: &symbols::Symbol, me: usize, fd: c_int, cmd: c_int, arg: usize) -> c_int {
    let f = symbols::get(sym);
    let r = if f == 0 || f == me {
        // SAFETY: a plain fcntl(2) with the caller's arguments.
        sys::libc_style(unsafe {
            sys::call(libc::SYS_fcntl, fd as usize, cmd as usize, arg, 0, 0, 0)
        })
    } else {
        // SAFETY: f is libc's fcntl, found as dlsym(RTLD_NEXT) would (symbols); called as the
        // variadic function it is, with the caller's argument as it came.
        let f: unsafe extern "C" fn(c_int, c_int, ...) -> c_int =
            unsafe { core::mem::transmute::<usize, _>(f) };
        if cmd != libc::F_DUPFD && cmd != libc::F_DUPFD_CLOEXEC {
            // SAFETY: forwarding the caller's arguments unchanged.
            return unsafe { f(fd, cmd, arg) };
        }
        // SAFETY: as above.
        unsafe { f(fd, cmd, arg) }
    };
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        forget_one(r);
    }
    r
}

/// Closes every descriptor from `from` on that `/proc/self/fd` lists, as glibc's `closefrom`
/// does where the kernel has no `close_range`: the listing read again after each pass that
/// closed any (the directory changes under it), until one closes none; with the table full, the
/// first open descriptor from `from` on closed first to make room for the listing. Without
/// `/proc`, nothing more (glibc's aborts the program).
fn close_listed(from: c_int) {
    let open_dir = || {
        // SAFETY: a NUL-terminated path; flags of a plain directory open.
        unsafe {
            sys::open(
                c"/proc/self/fd".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                0,
            )
        }
    };
    let mut dir = open_dir();
    if dir == -libc::EMFILE {
        // A full table (when a program closes everything before an exec): as glibc's, the
        // first open descriptor from `from` on closed to make room, and the open tried again.
        let mut fd = from;
        while fd < from.saturating_add(1 << 20) {
            // SAFETY: close(2) of a number the caller asked to have closed.
            if unsafe { sys::call(libc::SYS_close, fd as usize, 0, 0, 0, 0, 0) } == 0 {
                break;
            }
            fd += 1;
        }
        dir = open_dir();
    }
    if dir < 0 {
        return;
    }
    let mut buf = [0u8; 1024];
    loop {
        let mut closed = false;
        loop {
            // SAFETY: getdents64(2) into buf, at most its length.
            let n = unsafe {
                sys::call(
                    libc::SYS_getdents64,
                    dir as usize,
                    buf.as_mut_ptr() as usize,
                    buf.len(),
                    0,
                    0,
                    0,
                )
            };
            if n <= 0 {
                break;
            }
            let mut at = 0usize;
            let n = n as usize;
            // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name (NUL-ended).
            while at + 19 < n {
                let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                if reclen == 0 || at + reclen > n {
                    break;
                }
                let mut fd: i64 = 0;
                let mut digits = 0;
                for &b in &buf[at + 19..at + reclen] {
                    if !b.is_ascii_digit() || fd > i64::from(c_int::MAX) {
                        break;
                    }
                    fd = fd * 10 + i64::from(b - b'0');
                    digits += 1;
                }
                let terminated = buf.get(at + 19 + digits) == Some(&0);
                if digits > 0 && terminated && fd >= i64::from(from) && fd != i64::from(dir) {
                    sys::close(fd as c_int);
                    closed = true;
                }
                at += reclen;
            }
        }
        if !closed {
            break;
        }
        // SAFETY: lseek(2) of our own directory descriptor back to its start.
        unsafe {
            sys::call(
                libc::SYS_lseek,
                dir as usize,
                0,
                libc::SEEK_SET as usize,
                0,
                0,
                0,
            )
        };
    }
    sys::close(dir);
}
