//! nettrap-shim: the LD_PRELOAD library that nettrap puts into every process of a run.
//!
//! It interposes `connect()` (and the exported alias `__connect`). For an IPv4/IPv6 destination
//! on a socket it asks the run's compiled policy what to do, appends one record to the run's
//! shared event log, and then either calls the real `connect()` (allow, record) or fails at once
//! with the policy's errno and one line on stderr (deny). It interposes `listen()` too: once the
//! real `listen` succeeds on an IPv4/IPv6 socket it appends a `Listen` record with the address
//! the socket listens on (the run's own servers: `in-suite` in the report), and returns exactly
//! what `listen` returned. Everything else passes through.
//!
//! It also interposes the resolver's entry points ([`resolve`]): a lookup that would leave the
//! machine is a call of its own (recorded, and failed at once when the policy denies it), and
//! the addresses a lookup returns are remembered with the name, so a `connect` carries the name
//! the program resolved (`host` in its record, and in the policy's decision).
//!
//! And `pthread_setname_np` ([`threads`]): in `cargo test` runs a thread naming itself is a
//! libtest test starting, which it writes to the run's timeline; elsewhere it passes through.
//! Likewise `posix_spawn` and `posix_spawnp` ([`spawn`]): in `cargo test` runs it writes which
//! thread (so which test) started each child; elsewhere they pass through. And `vfork` and
//! `clone` (each also under glibc's other name, `__vfork`, `__clone`; [`ids`]): `vfork` made as
//! glibc makes it, `clone` handed to glibc's, to know when a task may be running on another
//! task's thread descriptor (which tells the shim who makes a call). And `socket` and the
//! functions that free, replace or hand out a descriptor (`close`, `__close`, `close_range`,
//! `closefrom`, `dup`, `dup2`, `__dup2`, `dup3`, `fcntl`, `fcntl64`, `__fcntl`, and `unshare`;
//! [`fds`]): one bit per descriptor says it is a stream socket `socket()` made, so a connect on
//! it needs no system call to learn the socket's type. Each calls the real function and returns
//! its result, errno untouched.
//!
//! Rules this code keeps, because it runs inside other people's programs:
//! - `no_std`, no allocation, no locks: it is safe after `fork()` in a threaded program and
//!   inside signal handlers. State is a handful of atomics.
//! - In record mode the program sees exactly what the real `connect()` returns, errno included.
//! - Nothing happens at load time but copying two environment variables and listing the loaded
//!   objects, whose symbol tables give libc's functions when first needed ([`symbols`]: the
//!   shim imports nothing, and depends on no library); the run's files (and the pid cache's
//!   page, [`ids`], and the large tables, [`tables`]) are mapped on the first intercepted call,
//!   so processes that never connect pay nothing: the policy, the event log's header (one
//!   page), and then only the windows of the log (1 MiB each, see
//!   `nettrap_core::event::Windows`) that this process's records land in.
//! - No thread ever waits for another: a thread that finds a file not mapped yet maps it
//!   itself and publishes it with one compare-and-swap (the loser unmaps its own copy), so
//!   nothing is left half-done by a fork, a vfork, a raw clone or a signal handler.
//! - A call is never let through silently. When the shim cannot decide or record a call (it
//!   cannot map the run's files: a memory limit, no descriptor left, files of another version),
//!   it counts the call as unobserved (in the log's header, or, if that cannot be mapped, as
//!   one byte appended to the run directory's `unobserved` file) and, when the seccomp
//!   supervisor watches too (`auto`), hands it to the kernel unmarked, where the supervisor
//!   decides and records it. Alone (`preload`), it still enforces a decision it could make.
//! - Without `NETTRAP_RUN_DIR` (the shim loaded outside a run) it passes everything through.
//!
//! System calls on the hot path (a `connect` on a TCP socket, after the process's first call),
//! besides the real `connect`, and why each is needed (tests/escapes/hot_path.rs counts them):
//! - none on a stream socket the program's `socket()` made ([`fds`]): its type is known, and
//!   a number that turns out to hold no socket (freed and reused where the shim cannot see)
//!   gets the kernel's `ENOTSOCK` or `EBADF` from the real connect, which voids the record;
//! - `getsockopt(SO_TYPE)` on any other descriptor (inherited at `exec`, from `accept`, `dup`,
//!   `fcntl`, a raw system call; while a `vfork` child runs): that it is a socket, and its type
//!   (the record's transport; a stream socket's destination is then decoded from the address
//!   alone);
//! - nothing else: which thread and process made the call come from the thread descriptor and
//!   a cache ([`ids`]); the kernel is asked (`gettid`, `getpid`) only by a thread's first call in
//!   each process, and by every call while a task may be running on another's descriptor
//!   (while a `vfork` child runs; for good once the program made a shared-memory `clone`).
//!
//! Only off that path: the socket's domain and protocol (two more `getsockopt`) for other
//! socket types, before a denial and after a connect failed for its address's family;
//! `process_vm_readv` for a sockaddr that is not in the caller's part of the stack (below the
//! end of the page its return address is on, see [`connect`]); the
//! thread's name (`prctl`) when the run asks for it; mapping the run's files once per process.

#![no_std]

mod env;
mod fds;
mod ids;
mod mem;
mod resolve;
mod spawn;
mod symbols;
mod tables;
mod threads;

use core::cell::UnsafeCell;
use core::ffi::{CStr, c_char, c_int, c_void};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use env::{current_test, env_value, env_values_in};
use nettrap_core::addr::{Address, Op, SOCKADDR_STORAGE, Transport, arg_len, decode};
use nettrap_core::event::{
    self, Call, Log, Mapper, NotWritten, Process, Source, Syscall, Unobserved,
};
use nettrap_core::msg;
use nettrap_core::policy::{
    Action, CompiledPolicy, FLAG_SECCOMP_BACKSTOP, FLAG_THREAD_NAMES, SHIM_CONNECT_MARK,
};
use nettrap_core::test_id::Phase;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // The code below is written not to panic; if it ever does, stopping the process is all
    // no_std allows. A trapping instruction rather than libc's abort: one symbol less for the
    // loader to bind in every process.
    // SAFETY: ud2 raises SIGILL; nothing after it runs.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}

type ConnectFn = unsafe extern "C" fn(c_int, *const libc::sockaddr, libc::socklen_t) -> c_int;
type ListenFn = unsafe extern "C" fn(c_int, c_int) -> c_int;

/// The shim's own system calls, made directly (x86_64: the `syscall` instruction) rather than
/// through libc: every libc function the shim imports is one more symbol the loader must bind
/// in every process of the run, whether it ever connects or not. Each returns what the kernel
/// returned (a negative errno on failure) and leaves `errno` alone.
mod sys {
    use core::ffi::{c_char, c_int, c_long, c_void};

    /// # Safety
    /// The arguments must be valid for the system call `nr`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn call(
        nr: c_long,
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        e: usize,
        f: usize,
    ) -> c_long {
        let r: c_long;
        // SAFETY: the x86_64 system call convention (number in rax, arguments in rdi, rsi, rdx,
        // r10, r8, r9; rcx and r11 clobbered); what the call does is forwarded from the caller.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") nr => r,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                in("r10") d,
                in("r8") e,
                in("r9") f,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack, preserves_flags)
            )
        };
        r
    }

    /// # Safety
    /// The arguments must be valid for the system call `nr`.
    #[cfg(not(target_arch = "x86_64"))]
    pub unsafe fn call(
        nr: c_long,
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        e: usize,
        f: usize,
    ) -> c_long {
        let saved = super::errno();
        // SAFETY: forwarded from the caller.
        let r = unsafe { libc::syscall(nr, a, b, c, d, e, f) };
        let r = if r == -1 {
            -c_long::from(super::errno())
        } else {
            r
        };
        super::set_errno(saved);
        r
    }

    /// A system call's result as libc's wrappers give it: -1 with `errno` set on failure.
    pub fn libc_style(r: c_long) -> c_int {
        if (-4095..0).contains(&r) {
            super::set_errno(-r as c_int);
            -1
        } else {
            r as c_int
        }
    }

    /// # Safety
    /// `path` must be NUL-terminated.
    pub unsafe fn open(path: *const c_char, flags: c_int, mode: c_int) -> c_int {
        // SAFETY: openat relative to the working directory, as open(2).
        unsafe {
            call(
                libc::SYS_openat,
                libc::AT_FDCWD as usize,
                path as usize,
                flags as usize,
                mode as usize,
                0,
                0,
            ) as c_int
        }
    }

    pub fn close(fd: c_int) {
        // SAFETY: closing a descriptor the shim opened.
        unsafe { call(libc::SYS_close, fd as usize, 0, 0, 0, 0, 0) };
    }

    /// # Safety
    /// `buf` must be writable for `len` bytes.
    pub unsafe fn read(fd: c_int, buf: *mut c_void, len: usize) -> isize {
        // SAFETY: forwarded from the caller.
        unsafe { call(libc::SYS_read, fd as usize, buf as usize, len, 0, 0, 0) as isize }
    }

    /// # Safety
    /// `buf` must be readable for `len` bytes.
    pub unsafe fn write(fd: c_int, buf: *const c_void, len: usize) -> isize {
        // SAFETY: forwarded from the caller.
        unsafe { call(libc::SYS_write, fd as usize, buf as usize, len, 0, 0, 0) as isize }
    }

    /// # Safety
    /// `path` NUL-terminated, `buf` writable for `len` bytes.
    pub unsafe fn readlink(path: *const c_char, buf: *mut c_char, len: usize) -> isize {
        // SAFETY: forwarded from the caller.
        unsafe {
            call(
                libc::SYS_readlink,
                path as usize,
                buf as usize,
                len,
                0,
                0,
                0,
            ) as isize
        }
    }

    /// The open file `fd`'s status (`fstat`), or None.
    fn fstat(fd: c_int) -> Option<libc::stat> {
        // SAFETY: a zeroed stat is a valid out-parameter for fstat.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: fstat writes one struct stat into st, which outlives the call.
        let r = unsafe {
            call(
                libc::SYS_fstat,
                fd as usize,
                &mut st as *mut libc::stat as usize,
                0,
                0,
                0,
                0,
            )
        };
        (r == 0).then_some(st)
    }

    /// Size of the open file `fd`, or -1.
    pub fn file_size(fd: c_int) -> i64 {
        fstat(fd).map_or(-1, |st| st.st_size)
    }

    /// # Safety
    /// As mmap(2), with the kernel choosing the address.
    pub unsafe fn mmap(
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        offset: u64,
    ) -> *mut c_void {
        // SAFETY: forwarded from the caller; the kernel returns an address or -errno (null
        // below).
        let p = unsafe {
            call(
                libc::SYS_mmap,
                0,
                len,
                prot as usize,
                flags as usize,
                fd as usize,
                offset as usize,
            )
        };
        if p < 0 {
            core::ptr::null_mut()
        } else {
            p as *mut c_void
        }
    }

    /// # Safety
    /// As munmap(2): nothing may use the memory afterwards.
    pub unsafe fn munmap(addr: *mut u8, len: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { call(libc::SYS_munmap, addr as usize, len, 0, 0, 0, 0) };
    }

    pub fn getpid() -> u32 {
        // SAFETY: getpid takes no arguments and cannot fail.
        unsafe { call(libc::SYS_getpid, 0, 0, 0, 0, 0, 0) as u32 }
    }

    pub fn gettid() -> u32 {
        // SAFETY: gettid takes no arguments and cannot fail.
        unsafe { call(libc::SYS_gettid, 0, 0, 0, 0, 0, 0) as u32 }
    }

    /// Copies `buf.len()` bytes at `addr` of this process into `buf`, through the kernel, so an
    /// invalid address fails instead of faulting in the shim: Ok(false) when not all of it is
    /// mapped (connect itself would fail with EFAULT), Err when the kernel refuses the copy for
    /// another reason (a sandbox's seccomp profile that forbids process_vm_readv).
    pub fn copy_from_self(addr: usize, buf: &mut [u8]) -> Result<bool, ()> {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut c_void,
            iov_len: buf.len(),
        };
        // SAFETY: one local iovec over our buffer; the remote one is only read by the kernel.
        let n = unsafe {
            call(
                libc::SYS_process_vm_readv,
                getpid() as usize,
                &local as *const libc::iovec as usize,
                1,
                &remote as *const libc::iovec as usize,
                1,
                0,
            )
        };
        if n == buf.len() as c_long {
            return Ok(true);
        }
        if n >= 0 || n == -c_long::from(libc::EFAULT) {
            return Ok(false);
        }
        Err(())
    }

    /// The calling thread's name (`prctl(PR_GET_NAME)`: at most 15 bytes and a NUL) into
    /// `buf`; returns its length (0 on failure).
    pub fn thread_name(buf: &mut [u8; 16]) -> usize {
        // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into buf.
        let r = unsafe {
            call(
                libc::SYS_prctl,
                libc::PR_GET_NAME as usize,
                buf.as_mut_ptr() as usize,
                0,
                0,
                0,
                0,
            )
        };
        if r != 0 {
            return 0;
        }
        buf.iter().position(|&b| b == 0).unwrap_or(0)
    }

    /// Sends signal `sig` to process `pid`; failure is ignored.
    pub fn kill(pid: u32, sig: c_int) {
        // SAFETY: kill takes plain integers.
        unsafe { call(libc::SYS_kill, pid as usize, sig as usize, 0, 0, 0, 0) };
    }

    pub fn getppid() -> u32 {
        // SAFETY: getppid takes no arguments and cannot fail.
        unsafe { call(libc::SYS_getppid, 0, 0, 0, 0, 0, 0) as u32 }
    }

    /// One `SOL_SOCKET` option of `fd` that is an int, or None (not a socket).
    pub fn sockopt(fd: c_int, opt: c_int) -> Option<c_int> {
        let mut v: c_int = 0;
        let mut len = core::mem::size_of::<c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most len bytes into v and updates len; both outlive the
        // call.
        let r = unsafe {
            call(
                libc::SYS_getsockopt,
                fd as usize,
                libc::SOL_SOCKET as usize,
                opt as usize,
                &mut v as *mut c_int as usize,
                &mut len as *mut libc::socklen_t as usize,
                0,
            )
        };
        (r == 0).then_some(v)
    }

    /// The socket's domain, type and protocol, or None when `fd` is not a socket.
    pub fn socket(fd: c_int) -> Option<nettrap_core::addr::Socket> {
        Some(nettrap_core::addr::Socket {
            ty: sockopt(fd, libc::SO_TYPE)?,
            domain: sockopt(fd, libc::SO_DOMAIN)?,
            protocol: sockopt(fd, libc::SO_PROTOCOL)?,
        })
    }

    /// The file type bits (`S_IFMT`) and link count of the open file `fd`, or None.
    pub fn file_type(fd: c_int) -> Option<(u32, u64)> {
        fstat(fd).map(|st| (st.st_mode & libc::S_IFMT, st.st_nlink))
    }

    /// A fresh private anonymous mapping of `len` bytes, or None.
    ///
    /// # Safety
    /// As mmap(2).
    pub unsafe fn mmap_anon(len: usize, prot: c_int) -> Option<core::ptr::NonNull<u8>> {
        // SAFETY: forwarded from the caller.
        let p = unsafe { mmap(len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        core::ptr::NonNull::new(p.cast())
    }

    /// # Safety
    /// As madvise(2): `addr` and `len` name this process's own mapping.
    pub unsafe fn madvise(addr: *mut u8, len: usize, advice: c_int) -> c_long {
        // SAFETY: forwarded from the caller.
        unsafe {
            call(
                libc::SYS_madvise,
                addr as usize,
                len,
                advice as usize,
                0,
                0,
                0,
            )
        }
    }

    /// The address socket `fd` is bound to (`getsockname`) into `buf`; its length, or None.
    pub fn sockname(
        fd: c_int,
        buf: &mut [u8; nettrap_core::addr::SOCKADDR_STORAGE],
    ) -> Option<usize> {
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: getsockname writes at most len bytes into buf and updates len; both outlive
        // the call.
        let r = unsafe {
            call(
                libc::SYS_getsockname,
                fd as usize,
                buf.as_mut_ptr() as usize,
                &mut len as *mut libc::socklen_t as usize,
                0,
                0,
                0,
            )
        };
        (r == 0).then_some((len as usize).min(buf.len()))
    }

    /// Can `fd` take a write without blocking now (poll for POLLOUT, no wait)?
    pub fn writable(fd: c_int) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one pollfd, which outlives the call; a zero timeout.
        let n = unsafe {
            call(
                libc::SYS_poll,
                &mut p as *mut libc::pollfd as usize,
                1,
                0,
                0,
                0,
                0,
            )
        };
        n == 1 && p.revents & libc::POLLOUT != 0
    }

    /// Sends `buf` on socket `fd` without raising SIGPIPE or blocking.
    ///
    /// # Safety
    /// `buf` must be readable for `len` bytes.
    pub unsafe fn send(fd: c_int, buf: *const c_void, len: usize) -> isize {
        // SAFETY: forwarded from the caller; no address, so the seccomp filter lets it pass.
        unsafe {
            call(
                libc::SYS_sendto,
                fd as usize,
                buf as usize,
                len,
                (libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) as usize,
                0,
                0,
            ) as isize
        }
    }
}

/// The run's compiled policy, mapped read-only on first use; never unmapped.
static POLICY: AtomicPtr<CompiledPolicy> = AtomicPtr::new(core::ptr::null_mut());
/// The event log's header page, mapped on first use; never unmapped.
static HEADER: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static MAPPER: RunFiles = RunFiles;
/// The process that last wrote a process record; a different pid means we were forked.
static RECORDED_PID: AtomicU32 = AtomicU32::new(0);

const RUN_DIR_MAX: usize = event::RUN_DIR_MAX_LEN + 32;
struct RunDir(UnsafeCell<[u8; RUN_DIR_MAX]>);
// SAFETY: written only by the constructor, before RUN_DIR_LEN publishes it; read-only
// afterwards.
unsafe impl Sync for RunDir {}
static RUN_DIR: RunDir = RunDir(UnsafeCell::new([0; RUN_DIR_MAX]));
/// The length of the run directory's path in RUN_DIR; 0 when there is none; NOT_LOADED until
/// the constructor ran.
static RUN_DIR_LEN: AtomicUsize = AtomicUsize::new(NOT_LOADED);
const NOT_LOADED: usize = usize::MAX;

#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = on_load;

/// glibc calls it with the program's arguments and its initial environment.
extern "C" fn on_load(argc: c_int, argv: *const *const c_char, env: *const *const c_char) {
    symbols::note_initial_stack(argc, argv, env);
    symbols::init();
    load_run_dir(env);
}

/// The end of the memory known to be mapped above `here` (a local of the shim's frame), given
/// the caller's stack pointer `caller_sp` (0: not known): the end of the page the caller's
/// return address is on. The live frames of one stack, from ours up to the caller's, and the
/// page the call wrote to, are mapped; nothing further up is known to be: a thread's stack may
/// be small with a coroutine's or signal handler's stack mapped just below it, a program may
/// make a page of its own main stack a guard page (`PROT_NONE`), and a bad pointer to such a
/// hole must get `EFAULT` from the kernel, as without nettrap, not a crash here.
fn mapped_above(here: usize, caller_sp: usize) -> usize {
    (here.max(caller_sp) | 0xfff) + 1
}

/// The thread pointer (`%fs:0`: the TCB's first word, which points to itself; for glibc, the
/// calling thread's `struct pthread`, which is also its `pthread_t`).
#[cfg(target_arch = "x86_64")]
fn thread_pointer() -> usize {
    let p: usize;
    // SAFETY: reads the first word of the TCB, which the x86_64 TLS ABI puts at %fs:0 for
    // every thread (it is what libc's own TLS accesses add offsets to).
    unsafe {
        core::arch::asm!("mov {}, fs:[0]", out(reg) p, options(nostack, readonly, preserves_flags))
    };
    p
}

#[cfg(not(target_arch = "x86_64"))]
fn thread_pointer() -> usize {
    0
}

/// Where errno lies from the thread pointer (0: not known yet). libc's errno is an
/// initial-exec TLS variable: `__errno_location` returns the thread pointer plus a fixed
/// offset, the same in every thread, so once known the slot is found without calling it.
static ERRNO_OFFSET: AtomicUsize = AtomicUsize::new(0);

/// This thread's errno slot (libc's `__errno_location`; a slot of the shim's own if libc has
/// none, so nothing faults).
fn errno_slot() -> *mut c_int {
    let tp = thread_pointer();
    let off = ERRNO_OFFSET.load(Ordering::Relaxed);
    if off != 0 && tp != 0 {
        return tp.wrapping_add(off) as *mut c_int;
    }
    errno_slot_slow(tp)
}

#[cold]
#[inline(never)]
fn errno_slot_slow(tp: usize) -> *mut c_int {
    static NONE: AtomicU32 = AtomicU32::new(0);
    match symbols::get(&symbols::ERRNO_LOCATION) {
        0 => NONE.as_ptr().cast(),
        f => {
            // SAFETY: f is libc's __errno_location, which takes nothing and returns this
            // thread's errno slot.
            let f: unsafe extern "C" fn() -> *mut c_int = unsafe { core::mem::transmute(f) };
            // SAFETY: as above.
            let slot = unsafe { f() };
            if tp != 0 {
                ERRNO_OFFSET.store((slot as usize).wrapping_sub(tp), Ordering::Relaxed);
            }
            slot
        }
    }
}

fn errno() -> c_int {
    // SAFETY: this thread's errno slot.
    unsafe { *errno_slot() }
}

fn set_errno(e: c_int) {
    // SAFETY: as in errno().
    unsafe { *errno_slot() = e }
}

/// This thread's errno slot, found once ([`errno_slot`]) for a call that reads and writes it
/// several times (the slot is the thread's for its whole life).
#[derive(Clone, Copy)]
struct Errno(*mut c_int);

impl Errno {
    #[inline(always)]
    fn here() -> Errno {
        Errno(errno_slot())
    }

    #[inline(always)]
    fn get(self) -> c_int {
        // SAFETY: this thread's errno slot.
        unsafe { *self.0 }
    }

    #[inline(always)]
    fn set(self, e: c_int) {
        // SAFETY: this thread's errno slot.
        unsafe { *self.0 = e }
    }
}

/// The destination [`decode`] finds in a connect's address on a socket not asked about (`None`:
/// the union of every inet socket's rules), with a `sockaddr_in`, the common case, decoded
/// inline: the same answer (an IPv4 destination for `AF_INET` and at least 16 bytes).
/// Written into `dest` (kept in place: no copies of it on the hot path); false when there is
/// none.
#[inline(always)]
fn stream_dest(sa: &[u8], dest: &mut nettrap_core::addr::Dest) -> bool {
    if let [lo, hi, p0, p1, a, b, c, d, _, _, _, _, _, _, _, _, ..] = *sa
        && u16::from_ne_bytes([lo, hi]) == libc::AF_INET as u16
    {
        dest.ip[10] = 0xff;
        dest.ip[11] = 0xff;
        dest.ip[12..].copy_from_slice(&[a, b, c, d]);
        dest.port = u16::from_be_bytes([p0, p1]);
        return true;
    }
    stream_dest_decoded(sa, dest)
}

#[inline(never)]
fn stream_dest_decoded(sa: &[u8], dest: &mut nettrap_core::addr::Dest) -> bool {
    match decode(Op::Connect, None, Some(sa)) {
        Address::Inet(d) => {
            *dest = d;
            true
        }
        _ => false,
    }
}

/// For a socket that is not a stream socket: its destination as the kernel decodes `sa` for
/// it (its domain, type and protocol asked), into `dest`; false when there is none.
#[inline(never)]
#[cold]
fn socket_dest(fd: c_int, sa: Option<&[u8]>, dest: &mut nettrap_core::addr::Dest) -> bool {
    match sys::socket(fd).map(|s| decode(Op::Connect, Some(s), sa)) {
        Some(Address::Inet(d)) => {
            *dest = d;
            true
        }
        _ => false,
    }
}

/// libc's `pthread_setcanceltype`; nothing when libc has none.
fn setcanceltype(kind: c_int, old: *mut c_int) {
    if let f @ 1.. = symbols::get(&symbols::SETCANCELTYPE) {
        // SAFETY: f is pthread_setcanceltype(int, int *).
        let f: unsafe extern "C" fn(c_int, *mut c_int) -> c_int =
            unsafe { core::mem::transmute(f) };
        // SAFETY: as pthread_setcanceltype(3); old is null or writable.
        unsafe { f(kind, old) };
    }
}

/// The real `connect`, or the raw system call if the symbol cannot be found. When the seccomp
/// supervisor watches the run, the raw system call carrying [`SHIM_CONNECT_MARK`] instead.
///
/// # Safety
/// Same contract as connect(2).
#[inline(always)]
unsafe fn real_connect(
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    marked: bool,
) -> c_int {
    if marked {
        // libc's connect is a pthread cancellation point; a bare system call is not. Allow
        // asynchronous cancellation around it, as glibc's own wrappers used to.
        let mut old: c_int = 0;
        // SAFETY: setting this thread's cancel type, then restoring it; connect(2) ignores the
        // extra argument, and the caller's arguments pass unchanged.
        unsafe {
            setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &mut old);
            let r = sys::call(
                libc::SYS_connect,
                fd as usize,
                addr as usize,
                len as usize,
                SHIM_CONNECT_MARK as usize,
                0,
                0,
            );
            setcanceltype(old, core::ptr::null_mut());
            return sys::libc_style(r);
        }
    }
    let f = symbols::get(&symbols::CONNECT);
    if f == 0 || f == connect as *const () as usize {
        // SAFETY: as above, a plain connect(2).
        let r = unsafe {
            sys::call(
                libc::SYS_connect,
                fd as usize,
                addr as usize,
                len as usize,
                0,
                0,
                0,
            )
        };
        return sys::libc_style(r);
    }
    // SAFETY: f is the next connect (libc's), found as dlsym(RTLD_NEXT) would (symbols).
    let f: ConnectFn = unsafe { core::mem::transmute::<usize, ConnectFn>(f) };
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { f(fd, addr, len) }
}

/// The run directory: as the constructor read it, or, when another library's constructor
/// connects before ours ran, straight from the environment.
fn run_dir() -> Option<&'static [u8]> {
    match RUN_DIR_LEN.load(Ordering::Acquire) {
        NOT_LOADED => env_value(b"NETTRAP_RUN_DIR").filter(|v| v.len() <= event::RUN_DIR_MAX_LEN),
        0 => None,
        // SAFETY: RUN_DIR is immutable once its length is published.
        n => Some(unsafe { &(&*RUN_DIR.0.get())[..n] }),
    }
}

/// Builds `RUN_DIR/name\0` in `buf`.
fn run_path<'a>(buf: &'a mut [u8; RUN_DIR_MAX], name: &[u8]) -> Option<&'a CStr> {
    let dir = run_dir()?;
    let n = dir.len();
    if n == 0 || n + 1 + name.len() + 1 > RUN_DIR_MAX {
        return None;
    }
    buf[..n].copy_from_slice(dir);
    buf[n] = b'/';
    buf[n + 1..n + 1 + name.len()].copy_from_slice(name);
    buf[n + 1 + name.len()] = 0;
    CStr::from_bytes_with_nul(&buf[..n + name.len() + 2]).ok()
}

/// Maps `len` bytes (None: all) of a run file from `offset`, if the file is that long (a
/// mapping past its end would raise SIGBUS when touched). Out of line, as every path with a
/// large buffer: a connect on a small stack (a coroutine's, a signal handler's alternate stack)
/// pays for these buffers only on the calls that need them.
#[inline(never)]
#[cold]
fn map_file(
    name: &[u8],
    writable: bool,
    offset: u64,
    len: Option<usize>,
) -> Option<(NonNull<u8>, usize)> {
    let mut buf = [0u8; RUN_DIR_MAX];
    let path = run_path(&mut buf, name)?;
    let (flags, prot) = if writable {
        (libc::O_RDWR, libc::PROT_READ | libc::PROT_WRITE)
    } else {
        (libc::O_RDONLY, libc::PROT_READ)
    };
    // SAFETY: path is NUL-terminated.
    let fd = unsafe { sys::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    let size = sys::file_size(fd);
    let len = len.unwrap_or(size.max(0) as usize);
    let mut result = None;
    if size >= 0
        && len > 0
        && offset
            .checked_add(len as u64)
            .is_some_and(|e| e <= size as u64)
    {
        // SAFETY: mapping part of an open file that covers it; the mapping outlives the fd.
        let p = unsafe { sys::mmap(len, prot, libc::MAP_SHARED, fd, offset) };
        if !p.is_null() {
            result = NonNull::new(p.cast::<u8>()).map(|p| (p, len));
        }
    }
    // The mapping stays. Nothing depends on the fd afterwards, so a program that closes or
    // dup2s over every descriptor loses nothing.
    sys::close(fd);
    result
}

/// Maps windows of the run's event log for [`nettrap_core::event::Windows`] (see [`tables`]).
struct RunFiles;

impl Mapper for RunFiles {
    fn map(&self, offset: u64, len: usize) -> Option<NonNull<u8>> {
        map_file(b"events.log", true, offset, Some(len)).map(|(p, _)| p)
    }

    unsafe fn unmap(&self, base: NonNull<u8>, len: usize) {
        // SAFETY: per the trait's contract.
        unsafe { sys::munmap(base.as_ptr(), len) }
    }
}

/// Publishes `mine` (a fresh mapping of `len` bytes) in `cell` unless another thread was
/// first, in which case ours is unmapped and theirs returned.
pub(crate) fn publish<T>(cell: &AtomicPtr<T>, mine: NonNull<u8>, len: usize) -> *mut T {
    match cell.compare_exchange(
        core::ptr::null_mut(),
        mine.as_ptr().cast(),
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => mine.as_ptr().cast(),
        Err(theirs) => {
            // SAFETY: our own mapping, never published: nothing refers to it.
            unsafe { sys::munmap(mine.as_ptr(), len) };
            theirs
        }
    }
}

/// The run's compiled policy, mapped now if no thread of this process did yet.
fn policy() -> Option<&'static CompiledPolicy> {
    let mut p = POLICY.load(Ordering::Acquire);
    if p.is_null() {
        let (m, len) = map_file(b"policy.bin", false, 0, None)?;
        // SAFETY: m maps len bytes, read-only; unmapped below unless published.
        if CompiledPolicy::from_bytes(unsafe { core::slice::from_raw_parts(m.as_ptr(), len) })
            .is_none()
        {
            // SAFETY: our own mapping, never published.
            unsafe { sys::munmap(m.as_ptr(), len) };
            return None;
        }
        p = publish(&POLICY, m, len);
    }
    // SAFETY: p maps a policy checked by from_bytes, never unmapped.
    Some(unsafe { &*p })
}

/// The event log's capacity as the header gave it when it was mapped and checked (0: not yet).
static CAPACITY: AtomicU64 = AtomicU64::new(0);

/// The run's event log, its header mapped now if no thread of this process did yet.
fn log() -> Option<Log<'static>> {
    let capacity = CAPACITY.load(Ordering::Acquire);
    // The header and the window table were published before CAPACITY was set (log_first), so
    // once it is, both are there (one check on every call).
    if capacity != 0
        && let h = HEADER.load(Ordering::Relaxed)
        && !h.is_null()
        && let Some(t) = tables::mapped()
    {
        // SAFETY: h maps this run's log header, which Log::new accepted with this capacity
        // (below), never unmapped; the window table holds windows of the same file, mapped by
        // MAPPER.
        return Some(unsafe { Log::checked(h, capacity, &t.windows, &MAPPER) });
    }
    log_first()
}

#[cold]
#[inline(never)]
fn log_first() -> Option<Log<'static>> {
    // The windows of the event log this process maps (with the names its lookups returned:
    // tables), mapped now if no thread of this process did yet; never unmapped.
    let windows = &tables::get()?.windows;
    let mut h = HEADER.load(Ordering::Acquire);
    if h.is_null() {
        let (m, len) = map_file(b"events.log", true, 0, Some(event::HEADER_LEN))?;
        // SAFETY: m maps the log's first HEADER_LEN bytes, shared and writable.
        if unsafe { Log::new(m.as_ptr(), windows, &MAPPER) }.is_none() {
            // SAFETY: our own mapping, never published.
            unsafe { sys::munmap(m.as_ptr(), len) };
            return None;
        }
        h = publish(&HEADER, m, len);
    }
    // SAFETY: h maps this run's log header (checked when mapped), never unmapped; the window
    // table holds windows of the same file, mapped by MAPPER.
    let log = unsafe { Log::new(h, windows, &MAPPER) }?;
    CAPACITY.store(log.capacity(), Ordering::Release);
    Some(log)
}

/// Counts a call the shim could not decide or record (see `nettrap_core::event::Unobserved`):
/// in the log's header when it is mapped, else as one byte appended to the run directory's
/// `unobserved` file (no mapping needed).
#[inline(never)]
#[cold]
fn count_unobserved(log: Option<&Log>, cause: Unobserved) {
    if let Some(log) = log {
        log.count_unobserved(cause);
        return;
    }
    let mut buf = [0u8; RUN_DIR_MAX];
    let Some(path) = run_path(&mut buf, event::UNOBSERVED_FILE.as_bytes()) else {
        return;
    };
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC;
    // SAFETY: path is NUL-terminated.
    let fd = unsafe { sys::open(path.as_ptr(), flags, 0o600) };
    if fd < 0 {
        // No descriptor left (or no room): tell the launcher with a signal, which needs none.
        let launcher = LAUNCHER_PID.load(Ordering::Relaxed);
        if launcher != 0 {
            sys::kill(launcher, event::UNOBSERVED_SIGNAL_BASE - cause as i32);
        }
        return;
    }
    let cause = [cause as u8];
    // SAFETY: writing one byte of our own buffer.
    unsafe { sys::write(fd, cause.as_ptr().cast::<c_void>(), 1) };
    sys::close(fd);
}

/// The launcher's pid (`NETTRAP_LAUNCHER_PID`), for the last resort of [`count_unobserved`].
static LAUNCHER_PID: AtomicU32 = AtomicU32::new(0);

/// Reads NETTRAP_RUN_DIR into RUN_DIR and NETTRAP_LAUNCHER_PID (from the constructor, with
/// the initial environment), and NETTRAP_SHIM_SSE2 (see [`env::without_avx`]), in one pass
/// over it.
fn load_run_dir(env: *const *const c_char) {
    let [pid, dir, sse2] = env_values_in(
        env,
        [
            &b"NETTRAP_LAUNCHER_PID"[..],
            &b"NETTRAP_RUN_DIR"[..],
            &b"NETTRAP_SHIM_SSE2"[..],
        ],
    );
    // Tests set it to run the environment check's SSE2 code on a CPU with AVX.
    if sse2.is_some() {
        env::without_avx();
    }
    let pid = pid.and_then(|digits| {
        digits.iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit()
                .then(|| n.checked_mul(10)?.checked_add(u32::from(d - b'0')))
                .flatten()
        })
    });
    LAUNCHER_PID.store(pid.unwrap_or(0), Ordering::Relaxed);
    let len = match dir {
        Some(bytes) if bytes.len() <= event::RUN_DIR_MAX_LEN => {
            // SAFETY: only the constructor writes RUN_DIR, before RUN_DIR_LEN publishes it;
            // until then readers take the path from the environment.
            unsafe { (&mut *RUN_DIR.0.get())[..bytes.len()].copy_from_slice(bytes) };
            bytes.len()
        }
        _ => 0,
    };
    RUN_DIR_LEN.store(len, Ordering::Release);
}

/// CLOCK_MONOTONIC, as every writer of the run's event log and timeline uses (see
/// nettrap_core::event::Call::time_ns).
fn now_ns() -> u64 {
    // SAFETY: zeroed timespec is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { core::mem::zeroed() };
    let f = symbols::get(&symbols::CLOCK_GETTIME);
    if f == 0 {
        // SAFETY: clock_gettime(2) writes ts.
        unsafe {
            sys::call(
                libc::SYS_clock_gettime,
                libc::CLOCK_MONOTONIC as usize,
                &mut ts as *mut libc::timespec as usize,
                0,
                0,
                0,
                0,
            )
        };
    } else {
        // SAFETY: f is libc's clock_gettime (vDSO; no system call on x86_64), which writes ts.
        let f: unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> c_int =
            unsafe { core::mem::transmute(f) };
        // SAFETY: as above.
        unsafe { f(libc::CLOCK_MONOTONIC, &mut ts) };
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Reads a small file (`/proc/self/cmdline`) into `buf`; returns the length read.
fn read_small(path: &CStr, buf: &mut [u8]) -> usize {
    // SAFETY: path is NUL-terminated.
    let fd = unsafe { sys::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return 0;
    }
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: reading into the unfilled part of buf.
        let r = unsafe { sys::read(fd, buf[n..].as_mut_ptr().cast::<c_void>(), buf.len() - n) };
        if r <= 0 {
            break;
        }
        n += r as usize;
    }
    sys::close(fd);
    n
}

/// The first call a process makes writes who the process is, so calls outside any test can be
/// traced to a pid, executable and command line.
#[inline(always)]
fn record_process(log: &Log, pid: u32) -> Result<(), NotWritten> {
    // A load first, inline: the common case (recorded already) writes nothing and calls nothing.
    if RECORDED_PID.load(Ordering::Acquire) == pid {
        return Ok(());
    }
    record_process_first(log, pid)
}

#[inline(never)]
#[cold]
fn record_process_first(log: &Log, pid: u32) -> Result<(), NotWritten> {
    if RECORDED_PID.swap(pid, Ordering::AcqRel) == pid {
        return Ok(());
    }
    // The executable and command line go through a scratch page of their own, not the stack:
    // this runs on whatever stack the program's connect ran on (a coroutine's may be a few KiB).
    const EXE: usize = 512;
    const SCRATCH: usize = 4096;
    // SAFETY: a fresh private anonymous mapping, unmapped below.
    let page = unsafe { sys::mmap_anon(SCRATCH, libc::PROT_READ | libc::PROT_WRITE) };
    let Some(page) = page else {
        return log.append_process(
            &Process {
                pid,
                ppid: sys::getppid(),
                time_ns: now_ns(),
                source: Source::Shim,
            },
            &[],
            &[],
        );
    };
    // SAFETY: the page is SCRATCH bytes, readable and writable, and ours alone until unmapped.
    let scratch = unsafe { core::slice::from_raw_parts_mut(page.as_ptr(), SCRATCH) };
    let (exe, cmdline) = scratch.split_at_mut(EXE);
    // SAFETY: readlink writes at most exe.len() bytes.
    let n = unsafe {
        sys::readlink(
            c"/proc/self/exe".as_ptr(),
            exe.as_mut_ptr().cast::<c_char>(),
            exe.len(),
        )
    };
    let exe_len = if n > 0 { n as usize } else { 0 };
    let cmd_len = read_small(c"/proc/self/cmdline", cmdline);
    let ppid = sys::getppid();
    let p = Process {
        pid,
        ppid,
        time_ns: now_ns(),
        source: Source::Shim,
    };
    let written = log.append_process(&p, &exe[..exe_len], &cmdline[..cmd_len]);
    // SAFETY: the scratch page mapped above; nothing refers to it any more.
    unsafe { sys::munmap(page.as_ptr(), SCRATCH) };
    written
}

/// glibc's value (pthread.h).
const PTHREAD_CANCEL_ASYNCHRONOUS: c_int = 1;

/// Writes the denial line to stderr only when stderr is where a person or a log reads it: a
/// terminal, a pipe, a socket, or a deleted file (a capture buffer, as pytest's). A program that
/// pointed fd 2 at a file of its own gets nothing written into it (the denial is in the report
/// all the same).
///
/// Never blocks: a pipe or terminal nobody drains (a parent that waits for its child without
/// reading its stderr) gets nothing rather than a hung program.
fn tell(line: &[u8]) {
    let ptr = line.as_ptr().cast::<c_void>();
    // A failed or short write is ignored on purpose.
    match sys::file_type(2) {
        // SAFETY: writing our own buffer of line.len() bytes (at most 1 KiB: a pipe that polls
        // writable has a free page, so the write does not block).
        Some((libc::S_IFCHR | libc::S_IFIFO, _) | (libc::S_IFREG, 0)) if sys::writable(2) => unsafe {
            sys::write(2, ptr, line.len())
        },
        // SAFETY: as above.
        Some((libc::S_IFSOCK, _)) => unsafe { sys::send(2, ptr, line.len()) },
        _ => 0,
    };
}

/// The one-line denial notice for a call to `dest`, through [`tell`].
#[inline(never)]
#[cold]
fn tell_denial(
    policy: &CompiledPolicy,
    decision: &nettrap_core::policy::Decision,
    dest: &nettrap_core::addr::Dest,
    host: &[u8],
    test: Option<&[u8]>,
    pid: u32,
) {
    let rule = policy
        .rules()
        .get(decision.rule as usize)
        .map_or(&b"default"[..], |r| r.label());
    let mut line = [0u8; 1024];
    let n = msg::denial_named(
        &mut line,
        "connect",
        dest,
        host,
        policy.category_name(decision.category),
        test,
        pid,
        rule,
    );
    tell(&line[..n]);
}

/// A connect's descriptor and address length in one word: with [`Asked`], the call's time and
/// [`Ids`], a hand-over from [`intercept`] to [`intercept_slow`] fits the six argument
/// registers, so that it is a jump (see [`intercept`]).
#[derive(Clone, Copy)]
#[repr(transparent)]
struct FdLen(u64);

impl FdLen {
    #[inline(always)]
    fn new(fd: c_int, len: libc::socklen_t) -> FdLen {
        FdLen(u64::from(fd as u32) | u64::from(len) << 32)
    }

    #[inline(always)]
    fn fd(self) -> c_int {
        self.0 as u32 as c_int
    }

    #[inline(always)]
    fn len(self) -> libc::socklen_t {
        (self.0 >> 32) as libc::socklen_t
    }
}

/// The socket's type (`SO_TYPE`) as the fast path asked it, in one word: not asked, asked and
/// failed (not a socket), or the type.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct Asked(u64);

impl Asked {
    const NOT: Asked = Asked(1 << 32);

    #[inline(always)]
    fn of(ty: Option<c_int>) -> Asked {
        Asked(ty.map_or(2 << 32, |t| u64::from(t as u32)))
    }

    /// None when not asked, else the answer.
    #[inline(always)]
    fn get(self) -> Option<Option<c_int>> {
        match self.0 >> 32 {
            0 => Some(Some(self.0 as u32 as c_int)),
            1 => None,
            _ => Some(None),
        }
    }
}

/// The caller's (pid, tid) as the fast path found them ([`ids::caller`]), in one word; 0: not
/// asked (no process has pid 0).
#[derive(Clone, Copy)]
#[repr(transparent)]
struct Ids(u64);

impl Ids {
    const NOT: Ids = Ids(0);

    #[inline(always)]
    fn of((pid, tid): (u32, u32)) -> Ids {
        Ids(u64::from(pid) << 32 | u64::from(tid))
    }

    #[inline(always)]
    fn get(self) -> Option<(u32, u32)> {
        (self.0 != 0).then_some(((self.0 >> 32) as u32, self.0 as u32))
    }
}

/// [`now_ns`] out of line: its `timespec` in a frame of its own. (An address taken in the fast
/// path's frame before a hand-over keeps the hand-over from being a jump: see [`intercept`].)
#[inline(never)]
fn now_ns_apart() -> u64 {
    now_ns()
}

/// The socket's type (`SO_TYPE`), out of line for the same reason as [`now_ns_apart`].
#[inline(never)]
fn sock_type(fd: c_int) -> Option<c_int> {
    sys::sockopt(fd, libc::SO_TYPE)
}

/// # Safety
/// Same contract as connect(2).
/// `caller_sp`: the caller's stack pointer at the call (the address of its return address), or
/// 0 where it is not known.
///
/// The common call is taken by the fast path, here and in [`intercept_v4`], with little state
/// (so with few registers spilled): an IPv4 address read in place from the caller's frames, a
/// stream socket, the run's files mapped, the process recorded already, no lookup seen in the
/// process (no name to find) and a cached decision that is not a denial. Everything else goes
/// to [`intercept_slow`] with what was done so far (the socket's type, once asked; the call's
/// time; the caller's ids; errno restored), none of it done again there. Each step is the
/// general path's own, so both write the same record and return the same result
/// (tests/golden.rs; tests/escapes counts the system calls). What a call handed over still
/// pays: the checks that handed it over, and the general path's own reading and decoding of
/// the address and looking up the decision cache again. About 15 instructions for one
/// handed over here (an address off the stack; another family), about 140 for one handed
/// over from [`intercept_v4`] (a denial, a decision not cached, a process that looked a name
/// up): 3.5% of a denial's ~4,000 (most of it the denial's message).
///
/// Every hand-over is a jump, the fast path's frame gone, so that a call the general path
/// takes needs no more stack than that path alone (a coroutine's or signal handler's stack may
/// be small: tests/escapes/shim.rs): what is handed over fits the argument registers, and
/// nothing in the fast path's frame has its address taken before its last hand-over (the
/// clock and `getsockopt` are read through functions of their own; a name lookup and a full
/// decision need buffers, and happen in the general path). The checks here need no frame at
/// all: a call they hand over (another family, an address not on the caller's stack) costs
/// them and two jumps.
#[inline(always)]
unsafe fn intercept(
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    caller_sp: usize,
) -> c_int {
    let (tp, off) = (thread_pointer(), ERRNO_OFFSET.load(Ordering::Relaxed));
    let policy = POLICY.load(Ordering::Acquire);
    let n = len as usize;
    let a = addr as usize;
    // The address is read in place where it lies in the caller's frames, up to the end of the
    // page its return address is on (see mapped_above): a sockaddr_in there, the common case.
    // (In the order that hands the other calls over soonest: an address off the stack at the
    // first check, another family before anything else is read.)
    let in_place = caller_sp != 0
        && a >= caller_sp
        && (16..=SOCKADDR_STORAGE).contains(&n)
        && a.checked_add(n)
            .is_some_and(|end| end <= mapped_above(caller_sp, caller_sp));
    if !in_place
        // SAFETY: [a, a+n), n >= 16, lies between the caller's stack pointer and the end of
        // memory known to be mapped above it (see mapped_above).
        || unsafe { core::ptr::read_unaligned(addr.cast::<u16>()) } != libc::AF_INET as u16
        || off == 0
        || tp == 0
        || policy.is_null()
    {
        let call = FdLen::new(fd, len);
        // SAFETY: same contract as ours.
        return unsafe { intercept_slow(call, addr, caller_sp, Asked::NOT, 0, Ids::NOT) };
    }
    let errno_at = Errno(tp.wrapping_add(off) as *mut c_int);
    // SAFETY: same contract as ours; the address checked as intercept_v4 asks; POLICY holds a
    // policy checked by from_bytes, never unmapped (see policy()).
    unsafe { intercept_v4(fd, addr, len, caller_sp, errno_at, &*policy) }
}

/// The fast path's rest (see [`intercept`]), with a frame of its own.
///
/// # Safety
/// Same contract as connect(2), and as [`intercept`] checked: `addr` an `AF_INET` address of
/// `len` bytes, `16 <= len <= SOCKADDR_STORAGE`, between `caller_sp` (not 0) and the end of
/// memory known to be mapped above it; `errno_at` this thread's errno slot.
#[inline(never)]
unsafe fn intercept_v4(
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    caller_sp: usize,
    errno_at: Errno,
    policy: &CompiledPolicy,
) -> c_int {
    let n = len as usize;
    // SAFETY: the caller checked [addr, addr+n), n >= 16 (see above): the sockaddr_in part read
    // in place, as stream_dest reads its copy (an IPv4 destination for AF_INET and at least 16
    // bytes).
    let head = unsafe { core::ptr::read_unaligned(addr.cast::<[u8; 16]>()) };
    let [_, _, p0, p1, b0, b1, b2, b3, ..] = head;
    let (ip, port) = ([b0, b1, b2, b3], u16::from_be_bytes([p0, p1]));
    // (A symbol's first look-up, through dlsym where the shim's own search cannot answer, may
    // set it.)
    let saved_errno = errno_at.get();
    // The call's time first (what the general path reads between the two is not the
    // environment, so a test event is still joined to it the same way), so that little is
    // live across the clock's function call.
    let time_ns = now_ns_apart();
    // A stream socket this process's `socket()` made needs no `getsockopt` (see fds); the
    // general path, which decides denials, asks the kernel itself.
    let known = fds::known_stream(fd);
    let (ty, asked) = if known {
        (Some(libc::SOCK_STREAM), Asked::NOT)
    } else {
        let ty = sock_type(fd);
        (ty, Asked::of(ty))
    };
    let capacity = CAPACITY.load(Ordering::Acquire);
    let header = HEADER.load(Ordering::Relaxed);
    let tables = tables::mapped();
    let Some(tables) =
        tables.filter(|_| ty == Some(libc::SOCK_STREAM) && capacity != 0 && !header.is_null())
    else {
        errno_at.set(saved_errno);
        let call = FdLen::new(fd, len);
        // SAFETY: same contract as ours.
        return unsafe { intercept_slow(call, addr, caller_sp, asked, time_ns, Ids::NOT) };
    };
    let ids = ids::caller();
    let (pid, tid) = ids;
    let decision = if resolve::NAMES.is_empty() && RECORDED_PID.load(Ordering::Acquire) == pid {
        cached_v4(ip, port)
    } else {
        None
    };
    // Not recorded yet (the process's first call), a name to look up, or no cached decision
    // that is not a denial.
    let Some(decision) = decision else {
        errno_at.set(saved_errno);
        let (call, ids) = (FdLen::new(fd, len), Ids::of(ids));
        // SAFETY: same contract as ours.
        return unsafe { intercept_slow(call, addr, caller_sp, asked, time_ns, ids) };
    };
    let test = current_test();
    let flags = policy.flags;
    let backstop = flags & FLAG_SECCOMP_BACKSTOP != 0;
    let call = Call {
        pid,
        tid,
        time_ns,
        dest: v4_dest(ip, port),
        transport: Transport::Tcp,
        action: decision.action,
        phase: test.map_or(Phase::None, |t| t.1),
        source: Source::Shim,
        syscall: Syscall::Connect,
        category: decision.category,
        rule: decision.rule,
        deny_errno: 0,
        has_test: test.is_some(),
    };
    let mut name_buf: [u8; 16];
    let name: &[u8] = if flags & FLAG_THREAD_NAMES != 0 {
        name_buf = [0u8; 16];
        let n = sys::thread_name(&mut name_buf);
        &name_buf[..n]
    } else {
        &[]
    };
    // SAFETY: as in log(): the header Log::new accepted with this capacity, never unmapped;
    // the window table holds windows of the same file.
    let log = unsafe { Log::checked(header, capacity, &tables.windows, &MAPPER) };
    let test = test.map_or(&[][..], |t| t.0);
    let written = match log.append_call_one_slot(&call, test, &[], name) {
        Some(written) => written,
        None => append_call_slots(call, test, name),
    };
    let cell = match written {
        Ok(cell) => Some(cell),
        Err(NotWritten::Full) => None,
        Err(NotWritten::Unmapped) => {
            if not_written(backstop) {
                errno_at.set(saved_errno);
                // SAFETY: forwarding the caller's arguments.
                return unsafe { real_connect(fd, addr, len, false) };
            }
            None
        }
    };
    errno_at.set(saved_errno);
    // SAFETY: forwarding the caller's arguments.
    let ret = unsafe { real_connect(fd, addr, len, backstop) };
    let e = errno_at.get();
    if let Some(cell) = cell {
        let blocked = now_ns().saturating_sub(time_ns);
        // Not a socket after all (a number freed and reused where fds could not see it): no
        // call, as the kernel's type would have said.
        if ret != 0 && (voided(e) && !kernel_takes_at(fd, addr, n) || known && not_socket(e)) {
            cell.void();
        } else {
            cell.finish(if ret == 0 { 0 } else { e }, blocked);
        }
    }
    errno_at.set(e);
    ret
}

/// The destination of an IPv4 address and port (an IPv4-mapped IPv6 address, as `decode`
/// gives it).
#[inline(always)]
fn v4_dest(ip: [u8; 4], port: u16) -> nettrap_core::addr::Dest {
    let [a, b, c, d] = ip;
    nettrap_core::addr::Dest {
        ip: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d],
        port,
    }
}

/// A call record that could not be written for want of its window ([`NotWritten::Unmapped`]),
/// as [`intercept_slow`] counts it: with the supervisor there (true: the call goes to it
/// unmarked, which decides and records it), unobserved; alone, dropped (the decision stands).
#[cold]
#[inline(never)]
fn not_written(backstop: bool) -> bool {
    // The log's header is mapped (the fast path checked): log() only reads it.
    if let Some(log) = log() {
        if backstop {
            log.count_unobserved(Unobserved::ShimUnmapped);
        } else {
            log.count_dropped();
        }
    }
    backstop
}

/// The fast path's record when it takes more than one slot (a long test id), out of line.
#[inline(never)]
fn append_call_slots(
    call: Call,
    test: &[u8],
    name: &[u8],
) -> Result<event::ResultCell<'static>, NotWritten> {
    // The log's header is mapped (the fast path checked): log() only reads it.
    log().map_or(Err(NotWritten::Unmapped), |log| {
        log.append_call(&call, test, &[], name)
    })
}

/// [`kernel_takes`] for the fast path's address (an IPv4 one), read in place: copied and
/// decoded again first. Its one caller ([`intercept`]) read `[addr, addr + n)` in place
/// already, `16 <= n <= SOCKADDR_STORAGE`.
#[cold]
#[inline(never)]
fn kernel_takes_at(fd: c_int, addr: *const libc::sockaddr, n: usize) -> bool {
    let mut buf = [0u8; SOCKADDR_STORAGE];
    let n = n.min(SOCKADDR_STORAGE);
    // SAFETY: the caller read these n bytes in place already (see intercept).
    unsafe { core::ptr::copy_nonoverlapping(addr.cast::<u8>(), buf.as_mut_ptr(), n) };
    let mut dest = v4_dest([0; 4], 0);
    stream_dest(&buf[..n], &mut dest) && kernel_takes(fd, Some(&buf[..n]), &dest)
}

/// Every `connect` but the common one [`intercept`] takes itself: the general path.
///
/// # Safety
/// Same contract as connect(2).
/// `caller_sp`: the caller's stack pointer at the call (the address of its return address), or
/// 0 where it is not known. What the fast path did already: `asked`, the socket's type
/// (`SO_TYPE`); `handed_time`, the call's time (0: not taken; should a clock read 0, the clock
/// is only read again); `handed_ids`, the caller's (pid, tid).
#[cold]
#[inline(never)]
unsafe fn intercept_slow(
    call: FdLen,
    addr: *const libc::sockaddr,
    caller_sp: usize,
    asked: Asked,
    handed_time: u64,
    handed_ids: Ids,
) -> c_int {
    let (fd, len) = (call.fd(), call.len());
    // This thread's errno slot, found once for the call's several reads and writes.
    let errno_at = Errno::here();
    let saved_errno = errno_at.get();
    // The address as the kernel copies it: every declared byte, at most 128 (a longer or
    // negative length fails with EINVAL). Copied through the kernel: an invalid address must give
    // the program EFAULT from the real connect, not a crash here. Not cleared first: only the
    // bytes copied in are read.
    let mut buf = core::mem::MaybeUninit::<[u8; SOCKADDR_STORAGE]>::uninit();
    let copied = match arg_len(len as u64) {
        None => Ok(None),
        Some(0) => Ok(Some(0)),
        Some(n) => {
            // Fast path: a sockaddr between this frame and what is known to be mapped above
            // it (`mapped_above`) is read here; anything else goes through the kernel.
            let here = buf.as_mut_ptr() as usize;
            let a = addr as usize;
            let mapped_end = mapped_above(here, caller_sp);
            if a >= here && a.checked_add(n).is_some_and(|end| end <= mapped_end) {
                // SAFETY: [a, a+n) lies between a local of this frame and the end of memory
                // known to be mapped above it (see mapped_above).
                unsafe {
                    let (from, to) = (addr.cast::<u8>(), buf.as_mut_ptr().cast::<u8>());
                    if n >= 16 {
                        // 16 bytes at a time, not a memcpy call: a sockaddr_in (the common
                        // case) in one copy, a sockaddr_in6 (28 bytes) in two, the last
                        // overlapping the first.
                        let v = core::ptr::read_unaligned(from.cast::<[u8; 16]>());
                        to.cast::<[u8; 16]>().write_unaligned(v);
                        let mut at = 16;
                        while at < n {
                            let i = at.min(n - 16);
                            let v = core::ptr::read_unaligned(from.add(i).cast::<[u8; 16]>());
                            to.add(i).cast::<[u8; 16]>().write_unaligned(v);
                            at += 16;
                        }
                    } else {
                        core::ptr::copy_nonoverlapping(from, to, n);
                    }
                };
                Ok(Some(n))
            } else {
                // SAFETY: n <= SOCKADDR_STORAGE: the first n bytes of buf, cleared, then
                // filled by the kernel (or left clear).
                let part = unsafe {
                    buf.as_mut_ptr().cast::<u8>().write_bytes(0, n);
                    core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), n)
                };
                sys::copy_from_self(a, part).map(|ok| ok.then_some(n))
            }
        }
    };
    // SAFETY: the first n bytes of buf were written above (n <= SOCKADDR_STORAGE).
    let copied_part =
        |n: usize| unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
    let sa = match copied {
        Ok(n) => n.map(copied_part),
        // Where an IPv4/IPv6 socket connects cannot be read: count the call and hand it to the
        // kernel unmarked (under auto, the supervisor reads it).
        Err(()) => {
            let inet = matches!(
                sys::sockopt(fd, libc::SO_DOMAIN),
                Some(libc::AF_INET | libc::AF_INET6)
            );
            if inet {
                count_unobserved(log().as_ref(), Unobserved::ShimUnreadable);
            }
            errno_at.set(saved_errno);
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real_connect(fd, addr, len, false) };
        }
    };
    // The address decoded as for a stream socket (the common case, see below). Not a
    // destination on any socket (AF_UNIX, a short or unreadable address): nothing to decide, and
    // no need to map the run's files.
    let mut dest = nettrap_core::addr::Dest {
        ip: [0; 16],
        port: 0,
    };
    if !sa.is_some_and(|sa| stream_dest(sa, &mut dest)) {
        errno_at.set(saved_errno);
        // SAFETY: forwarding the caller's arguments.
        return unsafe { real_connect(fd, addr, len, false) };
    }
    let policy = policy();
    // With the supervisor watching (auto), calls the shim decided and recorded carry the mark
    // that lets them past the filter; every other call meets the supervisor.
    let backstop = policy.is_some_and(|p| p.flags & FLAG_SECCOMP_BACKSTOP != 0);
    // Not a socket (EBADF, ENOTSOCK): SO_TYPE fails; nothing to decide, the real call gives
    // its answer. A stream socket (the common case) is decided from the address alone: an
    // IPv4/IPv6 address of a full length is a destination on every stream socket that takes
    // it, and one it does not take (another family: EAFNOSUPPORT, EINVAL) is found after the
    // call (`voided`). Any other type needs the socket's domain and protocol first (UDP's
    // port 0, an IPv4 address on an IPv6 socket), as the kernel decodes it.
    let ty = asked
        .get()
        .unwrap_or_else(|| sys::sockopt(fd, libc::SO_TYPE));
    let from_address_alone = ty == Some(libc::SOCK_STREAM);
    // `dest` stays the stream socket's destination, or becomes the socket's own decoding.
    let decided = match ty {
        Some(_) if from_address_alone => true,
        Some(_) => socket_dest(fd, sa, &mut dest),
        None => false,
    };
    let (true, Some(ty)) = (decided, ty) else {
        errno_at.set(saved_errno);
        // SAFETY: forwarding the caller's arguments.
        return unsafe { real_connect(fd, addr, len, backstop) };
    };
    let transport = Transport::from_sock_type(ty);
    let log = log();
    // glibc's getaddrinfo sorting its results (a UDP connect to each, nothing sent): not a call.
    if transport == Transport::Udp
        && log
            .as_ref()
            .is_some_and(|log| log.in_resolver(handed_ids.get().unwrap_or_else(ids::caller).1))
    {
        errno_at.set(saved_errno);
        // SAFETY: forwarding the caller's arguments.
        return unsafe { real_connect(fd, addr, len, backstop) };
    }
    // Cannot decide (no policy), or cannot record with the supervisor there to do both: count
    // the call and hand it to the kernel unmarked.
    let Some(policy) = policy.filter(|_| log.is_some() || !backstop) else {
        count_unobserved(log.as_ref(), Unobserved::ShimUnmapped);
        errno_at.set(saved_errno);
        // SAFETY: forwarding the caller's arguments.
        return unsafe { real_connect(fd, addr, len, false) };
    };
    let (pid, tid) = handed_ids.get().unwrap_or_else(ids::caller);
    // The fast path's time only when this process's record was written before it was taken: a
    // process's first call writes that record first (reading its command line, ~15 us), and its
    // time, and the blocked time counted from it, come after.
    let handed_time = if RECORDED_PID.load(Ordering::Acquire) == pid {
        handed_time
    } else {
        0
    };
    let process = log.as_ref().map(|log| record_process(log, pid));
    // Taken before the decision: a runner's test events are joined to calls by time.
    let time_ns = if handed_time != 0 {
        handed_time
    } else {
        now_ns()
    };
    let test = current_test();
    // The name the program resolved this address from, if a lookup of this process returned
    // it (see `resolve`).
    // No lookup seen in this process (the table empty): no name, and no buffer to clear.
    let mut host_buf: [u8; nettrap_core::names::MAX_NAME];
    let host: &[u8] = if resolve::NAMES.is_empty() {
        &[]
    } else {
        host_buf = [0u8; nettrap_core::names::MAX_NAME];
        let host_len = resolve::NAMES.lookup(&dest.ip, &mut host_buf);
        &host_buf[..host_len]
    };
    let decision = decide(policy, &dest, host, test.map(|t| t.0));
    let call = Call {
        pid,
        // The calling thread: joins the call to the runner's per-thread test events and to the
        // call site an adapter wrote just before it (see src/attribution/).
        tid,
        time_ns,
        dest,
        transport,
        action: decision.action,
        phase: test.map_or(Phase::None, |t| t.1),
        source: Source::Shim,
        syscall: Syscall::Connect,
        category: decision.category,
        rule: decision.rule,
        deny_errno: if decision.action == Action::Deny {
            decision.errno
        } else {
            0
        },
        has_test: test.is_some(),
    };
    // The thread's name only when the run asks for it (cargo test: libtest names each test's
    // thread after the test): one system call, never made otherwise.
    let mut name_buf: [u8; 16];
    let name: &[u8] = if policy.flags & FLAG_THREAD_NAMES != 0 {
        name_buf = [0u8; 16];
        let n = sys::thread_name(&mut name_buf);
        &name_buf[..n]
    } else {
        &[]
    };
    let cell = match &log {
        // Alone, without the header: decided (a denial still fails) but not recorded.
        None => {
            count_unobserved(None, Unobserved::ShimUnmapped);
            None
        }
        Some(log) => {
            let test = test.map_or(&[][..], |t| t.0);
            match log.append_call(&call, test, host, name) {
                Ok(cell) => Some(cell),
                Err(NotWritten::Full) => None,
                // The window the record falls in cannot be mapped: with the supervisor there,
                // it decides and records the call; alone, the decision stands and the record is
                // counted as dropped.
                Err(NotWritten::Unmapped) if backstop => {
                    log.count_unobserved(Unobserved::ShimUnmapped);
                    errno_at.set(saved_errno);
                    // SAFETY: forwarding the caller's arguments.
                    return unsafe { real_connect(fd, addr, len, false) };
                }
                Err(NotWritten::Unmapped) => {
                    log.count_dropped();
                    None
                }
            }
        }
    };
    // A process record that could not be mapped is lost (unless the call went to the
    // supervisor above, which writes its own).
    if let (Some(log), Some(Err(NotWritten::Unmapped))) = (&log, process) {
        log.count_dropped();
    }
    // A denial must not replace the kernel's answer for an address the socket does not take
    // (errno fidelity): check it the kernel's way first (the denial path is not hot).
    if decision.action == Action::Deny && from_address_alone && !kernel_takes(fd, sa, &dest) {
        if let Some(cell) = cell {
            cell.void();
        }
        errno_at.set(saved_errno);
        // SAFETY: forwarding the caller's arguments.
        return unsafe { real_connect(fd, addr, len, backstop) };
    }
    if decision.action == Action::Deny {
        tell_denial(policy, &decision, &dest, host, test.map(|t| t.0), pid);
        if let Some(cell) = cell {
            cell.set(decision.errno);
        }
        errno_at.set(decision.errno);
        return -1;
    }
    // The time the call blocks, from the call's own time (taken above, before the decision;
    // one vDSO clock read after it, no system call): what mocking the destination would save,
    // the shim's own few hundred nanoseconds of deciding and recording included.
    let start = time_ns;
    errno_at.set(saved_errno);
    // SAFETY: forwarding the caller's arguments.
    let ret = unsafe { real_connect(fd, addr, len, backstop) };
    let e = errno_at.get();
    if let Some(cell) = cell {
        let blocked = now_ns().saturating_sub(start);
        if ret != 0 && from_address_alone && voided(e) && !kernel_takes(fd, sa, &dest) {
            cell.void();
        } else {
            cell.finish(if ret == 0 { 0 } else { e }, blocked);
        }
    }
    errno_at.set(e);
    ret
}

/// Is `e` the kernel's answer to a connect on a descriptor that is no socket (not open, or
/// another kind of file)?
#[inline(always)]
fn not_socket(e: c_int) -> bool {
    matches!(e, libc::EBADF | libc::ENOTSOCK)
}

/// Could a connect that failed with `e` have been refused for its address's family (so that
/// it was no call at all)? The errors the kernel's connect gives for an address of a family
/// the socket does not take.
fn voided(e: c_int) -> bool {
    matches!(e, libc::EAFNOSUPPORT | libc::EINVAL | libc::EOPNOTSUPP)
}

/// Does the socket `fd` take `sa` as the destination `dest`, decoded exactly as the kernel
/// does (domain, type and protocol: three `getsockopt`)? Only asked off the hot path.
#[inline(never)]
#[cold]
fn kernel_takes(fd: c_int, sa: Option<&[u8]>, dest: &nettrap_core::addr::Dest) -> bool {
    let sa = sa.unwrap_or(&[]);
    matches!(
        sys::socket(fd).map(|s| decode(Op::Connect, Some(s), Some(sa))),
        Some(Address::Inet(d)) if d == *dest
    )
}

/// Decisions (or, where the decision depends on the test, categories) of recent IPv4
/// destinations reached without a name: the policy's category search is linear in its
/// categories (about 430 instructions with the built-ins) and its rule search in its rules, and
/// a suite connects to few destinations, many times. Each entry is one word (address, port,
/// and [`CACHED_DECISION`] with the category and rule, or the category plus one; 0 = empty), so
/// a reader never sees half an entry; the policy is fixed for the run, so an entry never goes
/// stale (a fork child's copy included).
static CATEGORY_CACHE: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// An entry of [`CATEGORY_CACHE`] that holds the decision itself (for every test): the
/// category in bits 9..15, the action in bits 7..9 and the deciding rule below
/// ([`RULE_NONE`]: none; a decision by rule 127 is not cached), so that a hit needs nothing
/// from the policy but, for a denial, the errno.
const CACHED_DECISION: u64 = 0x8000;
const RULE_NONE: u64 = 0x7f;
const _: () =
    assert!(nettrap_core::policy::MAX_CATEGORIES <= 64 && nettrap_core::policy::MAX_RULES <= 0x80);

/// What [`decide`] gives for an IPv4 destination without a name when [`CATEGORY_CACHE`] holds
/// the decision itself (for every test) and it is not a denial, read inline (the fast path's
/// decision): nothing from the policy is needed. None otherwise (no entry, a category alone, a
/// denial, whose errno is the policy's).
#[inline(always)]
fn cached_v4(ip: [u8; 4], port: u16) -> Option<nettrap_core::policy::Decision> {
    let key = (u64::from(u32::from_be_bytes(ip)) << 32) | (u64::from(port) << 16);
    let seen = CATEGORY_CACHE[(key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize]
        .load(Ordering::Relaxed);
    let action = Action::from_u8(((seen >> 7) & 3) as u8);
    if seen & !0xffff != key || seen & CACHED_DECISION == 0 || action == Action::Deny {
        return None;
    }
    Some(nettrap_core::policy::Decision {
        category: ((seen >> 9) & 0x3f) as u16,
        rule: match seen & RULE_NONE {
            RULE_NONE => nettrap_core::policy::NO_RULE,
            r => r as u16,
        },
        action,
        errno: 0,
    })
}

/// The policy's decision for a connect to `dest` by `test`, through [`CATEGORY_CACHE`] for
/// IPv4 destinations without a name. Its `errno` is the policy's for a denial; a decision
/// that is not one may carry 0 there (nothing reads it).
fn decide(
    policy: &CompiledPolicy,
    dest: &nettrap_core::addr::Dest,
    host: &[u8],
    test: Option<&[u8]>,
) -> nettrap_core::policy::Decision {
    let v4 = dest.ip[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    if !host.is_empty() || !v4 {
        let category = policy.classify(dest, (!host.is_empty()).then_some(host));
        return policy.decide_classified(category, dest, test, Some(host));
    }
    let ip = u32::from_be_bytes([dest.ip[12], dest.ip[13], dest.ip[14], dest.ip[15]]);
    let key = (u64::from(ip) << 32) | (u64::from(dest.port) << 16);
    let slot = &CATEGORY_CACHE[(key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize];
    let seen = slot.load(Ordering::Relaxed);
    let category = if seen != 0 && seen & !0xffff == key {
        if seen & CACHED_DECISION != 0 {
            let rule = match seen & RULE_NONE {
                RULE_NONE => nettrap_core::policy::NO_RULE,
                r => r as u16,
            };
            let category = ((seen >> 9) & 0x3f) as u16;
            let action = Action::from_u8(((seen >> 7) & 3) as u8);
            if action == Action::Deny {
                return policy.decision_of(category, rule);
            }
            // What decision_of gives, but its errno (that of a denial only: unused here).
            return nettrap_core::policy::Decision {
                category,
                rule,
                action,
                errno: 0,
            };
        }
        (seen & 0xffff) as u16 - 1
    } else {
        policy.classify(dest, None)
    };
    let (decision, every_test) = policy.decide_unnamed(category, dest, test);
    let entry = if every_test && u64::from(category) < 0x40 {
        let rule = match decision.rule {
            nettrap_core::policy::NO_RULE => RULE_NONE,
            r if u64::from(r) < RULE_NONE => u64::from(r),
            _ => return decision,
        };
        CACHED_DECISION | u64::from(category) << 9 | (decision.action as u64) << 7 | rule
    } else if category < 0x7fff {
        u64::from(category) + 1
    } else {
        return decision;
    };
    slot.store(key | entry, Ordering::Relaxed);
    decision
}

/// `connect`, interposing libc's: on x86_64 a two-instruction entry that hands
/// [`connect_with_sp`] the caller's stack pointer as a fourth argument (`rcx`) and jumps to it,
/// which then returns straight to the caller. The stack pointer bounds the memory the shim may
/// read a sockaddr from without the kernel's help (see [`intercept`]).
///
/// # Safety
/// Same contract as connect(2); exported to interpose libc's.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> c_int {
    core::arch::naked_asm!("mov rcx, rsp", "jmp {inner}", inner = sym connect_with_sp)
}

/// # Safety
/// Same contract as connect(2); glibc exports this alias too.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __connect(
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> c_int {
    core::arch::naked_asm!("mov rcx, rsp", "jmp {inner}", inner = sym connect_with_sp)
}

/// What [`connect`] jumps to, with the caller's stack pointer (the address of its return
/// address) in `caller_sp`.
///
/// # Safety
/// Same contract as connect(2); `caller_sp` is the caller's stack pointer at the call.
#[cfg(target_arch = "x86_64")]
unsafe extern "C" fn connect_with_sp(
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    caller_sp: usize,
) -> c_int {
    // SAFETY: same contract as ours.
    unsafe { intercept(fd, addr, len, caller_sp) }
}

/// # Safety
/// Same contract as connect(2); exported to interpose libc's.
#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> c_int {
    // SAFETY: same contract as ours; the caller's stack pointer is not known here.
    unsafe { intercept(fd, addr, len, 0) }
}

/// # Safety
/// Same contract as connect(2); glibc exports this alias too.
#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __connect(
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> c_int {
    // SAFETY: same contract as ours; the caller's stack pointer is not known here.
    unsafe { intercept(fd, addr, len, 0) }
}

/// The real `listen`, or the raw system call if the symbol cannot be found; with `marked`, the
/// raw system call carrying [`SHIM_CONNECT_MARK`] (the supervisor lets it through: the shim
/// records it).
///
/// # Safety
/// Same contract as listen(2).
unsafe fn real_listen(fd: c_int, backlog: c_int, marked: bool) -> c_int {
    if marked {
        // SAFETY: listen(2) ignores the extra arguments; the caller's pass unchanged.
        let r = unsafe {
            sys::call(
                libc::SYS_listen,
                fd as usize,
                backlog as usize,
                0,
                SHIM_CONNECT_MARK as usize,
                0,
                0,
            )
        };
        return sys::libc_style(r);
    }
    let f = symbols::get(&symbols::LISTEN);
    if f == 0 || f == listen as *const () as usize {
        // SAFETY: a plain listen(2) with the caller's arguments.
        let r = unsafe { sys::call(libc::SYS_listen, fd as usize, backlog as usize, 0, 0, 0, 0) };
        return sys::libc_style(r);
    }
    // SAFETY: f is the next listen (libc's), found as dlsym(RTLD_NEXT) would (symbols).
    let f: ListenFn = unsafe { core::mem::transmute::<usize, ListenFn>(f) };
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { f(fd, backlog) }
}

/// # Safety
/// Same contract as listen(2); exported to interpose libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let saved_errno = errno();
    // Only an IPv4/IPv6 socket is a server a call can reach; anything else passes through.
    let inet = matches!(
        sys::sockopt(fd, libc::SO_DOMAIN),
        Some(libc::AF_INET | libc::AF_INET6)
    );
    let backstop = policy().is_some_and(|p| p.flags & FLAG_SECCOMP_BACKSTOP != 0);
    let log = if inet { log() } else { None };
    // With the supervisor watching, a listen the shim cannot record goes to it unmarked.
    let marked = backstop && (!inet || log.is_some());
    set_errno(saved_errno);
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { real_listen(fd, backlog, marked) };
    let e = errno();
    if r == 0
        && let Some(log) = &log
    {
        let mut sa = [0u8; SOCKADDR_STORAGE];
        if let Some(n) = sys::sockname(fd, &mut sa)
            && let Address::Inet(dest) = decode(Op::Connect, None, Some(&sa[..n]))
        {
            let transport =
                sys::sockopt(fd, libc::SO_TYPE).map_or(Transport::Other, Transport::from_sock_type);
            let (pid, tid) = ids::caller();
            let call = Call {
                pid,
                tid,
                time_ns: now_ns(),
                dest,
                transport,
                action: Action::Record,
                phase: Phase::None,
                source: Source::Shim,
                syscall: Syscall::Listen,
                category: nettrap_core::policy::OTHER,
                rule: nettrap_core::policy::NO_RULE,
                deny_errno: 0,
                has_test: false,
            };
            // Not a call: a record that cannot be written only leaves the server unknown.
            if let Ok(cell) = log.append_call(&call, &[], &[], &[]) {
                cell.set(0);
            }
        }
    }
    set_errno(e);
    r
}
