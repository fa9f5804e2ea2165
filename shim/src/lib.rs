//! nettrap-shim: the LD_PRELOAD library that nettrap puts into every process of a run.
//!
//! It interposes `connect()` (and the exported alias `__connect`). For an IPv4/IPv6 destination
//! on a socket it asks the run's compiled policy what to do, appends one record to the run's
//! shared event log, and then either calls the real `connect()` (allow, record) or fails at once
//! with the policy's errno and one line on stderr (deny). Everything else passes through.
//!
//! Rules this code keeps, because it runs inside other people's programs:
//! - `no_std`, no allocation, no locks: it is safe after `fork()` in a threaded program and
//!   inside signal handlers. State is a handful of atomics.
//! - In record mode the program sees exactly what the real `connect()` returns, errno included.
//! - Nothing happens at load time but copying one environment variable and one `dlsym`; the
//!   run's files are mapped on the first intercepted call, so processes that never connect pay
//!   nothing.
//! - If anything is missing (no run directory, a file of another version), it passes through.

#![no_std]

use core::cell::UnsafeCell;
use core::ffi::{CStr, c_char, c_int, c_void};
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicUsize, Ordering};
use nettrap_core::addr::{Address, Op, SOCKADDR_STORAGE, Transport, arg_len, decode};
use nettrap_core::event::{self, Call, Log, Process, Source, Syscall};
use nettrap_core::msg;
use nettrap_core::policy::{
    Action, CompiledPolicy, FLAG_SECCOMP_BACKSTOP, FLAG_THREAD_NAMES, SHIM_CONNECT_MARK,
};
use nettrap_core::test_id::{self, Phase};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // The code below is written not to panic; if it ever does, aborting is all no_std allows.
    // SAFETY: abort is always safe to call.
    unsafe { libc::abort() }
}

type ConnectFn = unsafe extern "C" fn(c_int, *const libc::sockaddr, libc::socklen_t) -> c_int;

/// The shim's own system calls, made through libc's one `syscall` entry point rather than its
/// wrappers: every libc function the shim imports is one more symbol the loader must bind in
/// every process of the run, whether it ever connects or not.
mod sys {
    use core::ffi::{c_char, c_int, c_long, c_void};

    /// # Safety
    /// The arguments must be valid for the system call `nr`.
    unsafe fn call(
        nr: c_long,
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        e: usize,
        f: usize,
    ) -> c_long {
        // SAFETY: forwarded from the caller.
        unsafe { libc::syscall(nr, a, b, c, d, e, f) }
    }

    /// # Safety
    /// `path` must be NUL-terminated.
    pub unsafe fn open(path: *const c_char, flags: c_int) -> c_int {
        // SAFETY: openat relative to the working directory, as open(2).
        unsafe {
            call(
                libc::SYS_openat,
                libc::AT_FDCWD as usize,
                path as usize,
                flags as usize,
                0,
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

    /// Size of the open file `fd`, or -1.
    pub fn file_size(fd: c_int) -> i64 {
        // SAFETY: a zeroed stat is a valid out-parameter for fstat.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: fstat writes one struct stat.
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
        if r == 0 { st.st_size } else { -1 }
    }

    /// # Safety
    /// As mmap(2).
    pub unsafe fn mmap(len: usize, prot: c_int, flags: c_int, fd: c_int) -> *mut c_void {
        // SAFETY: forwarded from the caller; the kernel returns an address or -errno, which
        // libc's syscall() turns into -1 (MAP_FAILED).
        unsafe {
            call(
                libc::SYS_mmap,
                0,
                len,
                prot as usize,
                flags as usize,
                fd as usize,
                0,
            ) as *mut c_void
        }
    }

    /// Lets another thread run (sched_yield; ~1 us when nobody else wants the CPU).
    pub fn yield_cpu() {
        // SAFETY: sched_yield takes no arguments.
        unsafe { call(libc::SYS_sched_yield, 0, 0, 0, 0, 0, 0) };
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
    /// invalid address fails (as the kernel would make connect fail with EFAULT) instead of
    /// faulting in the shim.
    pub fn copy_from_self(addr: usize, buf: &mut [u8]) -> bool {
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
        n == buf.len() as c_long
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

    pub fn getppid() -> u32 {
        // SAFETY: getppid takes no arguments and cannot fail.
        unsafe { call(libc::SYS_getppid, 0, 0, 0, 0, 0, 0) as u32 }
    }

    /// One `SOL_SOCKET` option of `fd` that is an int, or None (not a socket).
    fn sockopt(fd: c_int, opt: c_int) -> Option<c_int> {
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
        (r == 0).then_some((st.st_mode & libc::S_IFMT, st.st_nlink))
    }

    /// Sends `buf` on socket `fd` without raising SIGPIPE.
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
                libc::MSG_NOSIGNAL as usize,
                0,
                0,
            ) as isize
        }
    }
}

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;
const OFF: u8 = 3;

static REAL_CONNECT: AtomicUsize = AtomicUsize::new(0);
static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static POLICY: AtomicPtr<CompiledPolicy> = AtomicPtr::new(core::ptr::null_mut());
static LOG_BASE: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static LOG_LEN: AtomicUsize = AtomicUsize::new(0);
/// The process that last wrote a process record; a different pid means we were forked.
static RECORDED_PID: AtomicU32 = AtomicU32::new(0);
/// The thread mapping the run's files (see init), so a signal handler on that same thread
/// passes through instead of waiting for itself.
static INIT_OWNER: AtomicU32 = AtomicU32::new(0);

const RUN_DIR_MAX: usize = 512;
struct RunDir(UnsafeCell<[u8; RUN_DIR_MAX]>);
// SAFETY: written only by the constructor, before main() and before any thread can exist;
// read-only afterwards.
unsafe impl Sync for RunDir {}
static RUN_DIR: RunDir = RunDir(UnsafeCell::new([0; RUN_DIR_MAX]));
static RUN_DIR_LEN: AtomicUsize = AtomicUsize::new(0);

#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = on_load;

extern "C" fn on_load() {
    if STATE.load(Ordering::Acquire) == UNINIT {
        load_run_dir();
    }
    resolve_real_connect();
    // SAFETY: registering a plain function; pthread_atfork only records it.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
}

/// In a fork child, a mapping another thread of the parent was making is not being made any
/// more: start over rather than wait for it.
extern "C" fn after_fork_in_child() {
    let _ = STATE.compare_exchange(BUSY, UNINIT, Ordering::AcqRel, Ordering::Relaxed);
    INIT_OWNER.store(0, Ordering::Relaxed);
}

/// This process's pid. Not cached: a vfork child shares the parent's memory, so a cache would
/// mix their pids up, and getpid costs less than the connect it accompanies.
fn pid() -> u32 {
    sys::getpid()
}

fn resolve_real_connect() -> usize {
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"connect".as_ptr()) } as usize;
    REAL_CONNECT.store(f, Ordering::Release);
    f
}

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: as in errno().
    unsafe { *libc::__errno_location() = e }
}

/// The real `connect`, or the raw system call if the symbol cannot be found. When the seccomp
/// supervisor watches the run, the raw system call carrying [`SHIM_CONNECT_MARK`] instead.
///
/// # Safety
/// Same contract as connect(2).
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
            pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &mut old);
            let r = libc::syscall(libc::SYS_connect, fd, addr, len, SHIM_CONNECT_MARK) as c_int;
            let e = errno();
            pthread_setcanceltype(old, core::ptr::null_mut());
            set_errno(e);
            return r;
        }
    }
    let mut f = REAL_CONNECT.load(Ordering::Acquire);
    if f == 0 {
        f = resolve_real_connect();
    }
    if f == 0 || f == connect as *const () as usize {
        // SAFETY: as above, a plain connect(2).
        return unsafe { libc::syscall(libc::SYS_connect, fd, addr, len) } as c_int;
    }
    // SAFETY: f is libc's connect, resolved by dlsym(RTLD_NEXT).
    let f: ConnectFn = unsafe { core::mem::transmute::<usize, ConnectFn>(f) };
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { f(fd, addr, len) }
}

/// Builds `RUN_DIR/name\0` in `buf`.
fn run_path<'a>(buf: &'a mut [u8; RUN_DIR_MAX], name: &[u8]) -> Option<&'a CStr> {
    let n = RUN_DIR_LEN.load(Ordering::Acquire);
    if n == 0 || n + 1 + name.len() + 1 > RUN_DIR_MAX {
        return None;
    }
    // SAFETY: RUN_DIR is immutable after the constructor.
    buf[..n].copy_from_slice(unsafe { &(&*RUN_DIR.0.get())[..n] });
    buf[n] = b'/';
    buf[n + 1..n + 1 + name.len()].copy_from_slice(name);
    buf[n + 1 + name.len()] = 0;
    CStr::from_bytes_with_nul(&buf[..n + name.len() + 2]).ok()
}

/// Maps a run file; `min_len` guards against SIGBUS on a short file.
fn map_file(name: &[u8], writable: bool, min_len: usize) -> Option<(*mut u8, usize)> {
    let mut buf = [0u8; RUN_DIR_MAX];
    let path = run_path(&mut buf, name)?;
    let flags = if writable {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    // SAFETY: path is NUL-terminated.
    let fd = unsafe { sys::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let size = sys::file_size(fd);
    let mut result = None;
    if size >= min_len as i64 {
        let len = size as usize;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: mapping an open file of at least len bytes; the mapping outlives the fd.
        let p = unsafe { sys::mmap(len, prot, libc::MAP_SHARED, fd) };
        if p != libc::MAP_FAILED {
            result = Some((p.cast::<u8>(), len));
        }
    }
    // The mapping stays. Nothing depends on the fd afterwards, so a program that closes or
    // dup2s over every descriptor loses nothing.
    sys::close(fd);
    result
}

/// Reads NETTRAP_RUN_DIR into RUN_DIR. Normally done by the constructor; done by init() when a
/// library constructor that runs before ours already connects.
fn load_run_dir() {
    if let Some(bytes) = env_value(b"NETTRAP_RUN_DIR")
        && bytes.len() < RUN_DIR_MAX - 32
    {
        // SAFETY: written by the constructor before any thread exists, or by init() while it
        // holds the BUSY state (the only writer), before RUN_DIR_LEN publishes it.
        unsafe { (&mut *RUN_DIR.0.get())[..bytes.len()].copy_from_slice(bytes) };
        RUN_DIR_LEN.store(bytes.len(), Ordering::Release);
    }
}

fn init() -> bool {
    match STATE.load(Ordering::Acquire) {
        READY => return true,
        OFF => return false,
        _ => {}
    }
    match STATE.compare_exchange(UNINIT, BUSY, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            INIT_OWNER.store(sys::gettid(), Ordering::Release);
            if RUN_DIR_LEN.load(Ordering::Acquire) == 0 {
                load_run_dir();
            }
            let policy = map_file(b"policy.bin", false, core::mem::size_of::<CompiledPolicy>());
            let log = map_file(b"events.log", true, event::HEADER_LEN);
            let ok = match (policy, log) {
                (Some((p, plen)), Some((l, llen))) => {
                    // SAFETY: p maps plen bytes that stay mapped for the life of the process.
                    let bytes = unsafe { core::slice::from_raw_parts(p, plen) };
                    // SAFETY: l maps llen bytes, shared and writable, never unmapped.
                    let log_ok = unsafe { Log::from_raw(l, llen) }.is_some();
                    if CompiledPolicy::from_bytes(bytes).is_some() && log_ok {
                        POLICY.store(p.cast(), Ordering::Release);
                        LOG_BASE.store(l, Ordering::Release);
                        LOG_LEN.store(llen, Ordering::Release);
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            };
            STATE.store(if ok { READY } else { OFF }, Ordering::Release);
            INIT_OWNER.store(0, Ordering::Release);
            ok
        }
        Err(_) => {
            // Another thread is mapping the files: wait for it (microseconds, but the mapping
            // thread may be descheduled on a loaded machine: after a short spin, yield the CPU to
            // it). If this very thread is the one mapping them (a signal handler interrupted it),
            // pass through rather than wait for itself; only after about a second of waiting
            // (something is badly wrong) pass through anyway.
            let me = sys::gettid();
            for i in 0..220_000u32 {
                if INIT_OWNER.load(Ordering::Acquire) == me {
                    return false;
                }
                match STATE.load(Ordering::Acquire) {
                    READY => return true,
                    OFF => return false,
                    _ if i < 20_000 => core::hint::spin_loop(),
                    _ => sys::yield_cpu(),
                }
            }
            false
        }
    }
}

/// CLOCK_MONOTONIC, as every writer of the run's event log and timeline uses (see
/// nettrap_core::event::Call::time_ns).
fn now_ns() -> u64 {
    // SAFETY: zeroed timespec is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { core::mem::zeroed() };
    // SAFETY: clock_gettime writes ts (vDSO; no system call on x86_64).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Reads a small file (`/proc/self/cmdline`) into `buf`; returns the length read.
fn read_small(path: &CStr, buf: &mut [u8]) -> usize {
    // SAFETY: path is NUL-terminated.
    let fd = unsafe { sys::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
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
fn record_process(log: &Log, pid: u32) {
    if RECORDED_PID.swap(pid, Ordering::AcqRel) == pid {
        return;
    }
    let mut exe = [0u8; 512];
    // SAFETY: readlink writes at most exe.len() bytes.
    let n = unsafe {
        sys::readlink(
            c"/proc/self/exe".as_ptr(),
            exe.as_mut_ptr().cast::<c_char>(),
            exe.len(),
        )
    };
    let exe_len = if n > 0 { n as usize } else { 0 };
    let mut cmdline = [0u8; 2048];
    let cmd_len = read_small(c"/proc/self/cmdline", &mut cmdline);
    let ppid = sys::getppid();
    let p = Process {
        pid,
        ppid,
        time_ns: now_ns(),
        source: Source::Shim,
    };
    log.append_process(&p, &exe[..exe_len], &cmdline[..cmd_len]);
}

unsafe extern "C" {
    static environ: *const *const c_char;
    fn pthread_setcanceltype(kind: c_int, old: *mut c_int) -> c_int;
}

/// glibc's value (pthread.h).
const PTHREAD_CANCEL_ASYNCHRONOUS: c_int = 1;

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

/// The value of one environment variable (getenv, without importing it).
fn env_value(name: &[u8]) -> Option<&'static [u8]> {
    // SAFETY: as in current_test.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = (*p).cast::<u8>();
            if name_matches(entry, name) {
                return Some(CStr::from_ptr(entry.add(name.len() + 1).cast::<c_char>()).to_bytes());
            }
            p = p.add(1);
        }
    }
    None
}

/// The current test from the environment, per nettrap_core::test_id: one pass over `environ`
/// for all the variables (getenv would scan it once per variable).
fn current_test() -> Option<(&'static [u8], Phase)> {
    let mut found: [Option<&'static [u8]>; test_id::TEST_VARS.len()] =
        [None; test_id::TEST_VARS.len()];
    // SAFETY: environ is a NULL-terminated array of NUL-terminated strings maintained by libc;
    // it is read on the calling thread, as getenv would. Each entry is read only up to the
    // first byte that differs from a name (at worst its NUL), then, on a match, to its NUL.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = (*p).cast::<u8>();
            // Most entries differ from every name in their first byte.
            let first = *entry;
            for (i, var) in test_id::TEST_VARS.iter().enumerate() {
                if var.to_bytes().first() != Some(&first) {
                    continue;
                }
                let name = var.to_bytes();
                if found[i].is_none() && name_matches(entry, name) {
                    found[i] =
                        Some(CStr::from_ptr(entry.add(name.len() + 1).cast::<c_char>()).to_bytes());
                }
            }
            p = p.add(1);
        }
    }
    found.into_iter().flatten().next().map(test_id::split)
}

/// Writes the denial line to stderr only when stderr is where a person or a log reads it: a
/// terminal, a pipe, a socket, or a deleted file (a capture buffer, as pytest's). A program that
/// pointed fd 2 at a file of its own gets nothing written into it (the denial is in the report
/// all the same).
fn tell(line: &[u8]) {
    let ptr = line.as_ptr().cast::<c_void>();
    // A failed or short write is ignored on purpose.
    match sys::file_type(2) {
        // SAFETY: writing our own buffer of line.len() bytes.
        Some((libc::S_IFCHR | libc::S_IFIFO, _) | (libc::S_IFREG, 0)) => unsafe {
            sys::write(2, ptr, line.len())
        },
        // SAFETY: as above.
        Some((libc::S_IFSOCK, _)) => unsafe { sys::send(2, ptr, line.len()) },
        _ => 0,
    };
}

/// # Safety
/// Same contract as connect(2).
unsafe fn intercept(fd: c_int, addr: *const libc::sockaddr, len: libc::socklen_t) -> c_int {
    let saved_errno = errno();
    // The address as the kernel copies it: every declared byte, at most 128 (a longer or
    // negative length fails with EINVAL). Copied through the kernel: an invalid address must give
    // the program EFAULT from the real connect, not a crash here.
    let mut buf = [0u8; SOCKADDR_STORAGE];
    let sa = arg_len(len as u64).and_then(|n| {
        if n == 0 {
            return Some(&buf[..0]);
        }
        // Fast path: a sockaddr in the same page as this frame's own buffer lies on this
        // thread's live stack, so it is mapped; anything else goes through the kernel.
        let here = buf.as_ptr() as usize;
        let (a, page_end) = (addr as usize, (here | 0xfff) + 1);
        let copied = if a >= here && a.checked_add(n).is_some_and(|end| end <= page_end) {
            // SAFETY: [a, a+n) lies between a local of this frame and the end of its page.
            unsafe { core::ptr::copy_nonoverlapping(addr.cast::<u8>(), buf.as_mut_ptr(), n) };
            true
        } else {
            sys::copy_from_self(a, &mut buf[..n])
        };
        copied.then_some(&buf[..n])
    });
    // Not a destination on any socket (AF_UNIX, a short or unreadable address): nothing to
    // decide, and no need to map the run's files.
    let candidate =
        sa.is_some_and(|sa| matches!(decode(Op::Connect, None, Some(sa)), Address::Inet(_)));
    if !candidate || !init() {
        set_errno(saved_errno);
        // SAFETY: forwarding the caller's arguments.
        return unsafe { real_connect(fd, addr, len, false) };
    }
    // SAFETY: init() succeeded, so POLICY points to a valid, permanently mapped policy.
    let policy = unsafe { &*POLICY.load(Ordering::Acquire) };
    let marked = policy.flags & FLAG_SECCOMP_BACKSTOP != 0;
    // Not a socket (EBADF, ENOTSOCK), or an address this socket does not take as a destination
    // (EAFNOSUPPORT, EINVAL, AF_UNSPEC): nothing to decide; the real call gives its answer.
    let sock = sys::socket(fd);
    let Some((sock, Address::Inet(dest))) = sock.map(|s| (s, decode(Op::Connect, Some(s), sa)))
    else {
        set_errno(saved_errno);
        // SAFETY: forwarding the caller's arguments.
        return unsafe { real_connect(fd, addr, len, marked) };
    };
    let transport = Transport::from_sock_type(sock.ty);
    // SAFETY: init() succeeded: LOG_BASE/LOG_LEN describe a permanent shared mapping.
    let Some(log) = (unsafe {
        Log::from_raw(
            LOG_BASE.load(Ordering::Acquire),
            LOG_LEN.load(Ordering::Acquire),
        )
    }) else {
        set_errno(saved_errno);
        // SAFETY: forwarding the caller's arguments.
        return unsafe { real_connect(fd, addr, len, marked) };
    };
    let pid = pid();
    record_process(&log, pid);
    // Taken before the decision: a runner's test events are joined to calls by time.
    let time_ns = now_ns();
    let test = current_test();
    let decision = policy.decide(&dest, test.map(|t| t.0));
    let call = Call {
        pid,
        // The calling thread: joins the call to the runner's per-thread test events and to the
        // call site an adapter wrote just before it (see src/attribution/).
        tid: sys::gettid(),
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
    let mut name = [0u8; 16];
    let name_len = if policy.flags & FLAG_THREAD_NAMES != 0 {
        sys::thread_name(&mut name)
    } else {
        0
    };
    let cell = log.append_call(&call, test.map_or(&[][..], |t| t.0), &[], &name[..name_len]);
    if decision.action == Action::Deny {
        let rule = policy
            .rules()
            .get(decision.rule as usize)
            .map_or(&b"default"[..], |r| r.label());
        let mut line = [0u8; 1024];
        let n = msg::denial(
            &mut line,
            "connect",
            &dest,
            policy.category_name(decision.category),
            test.map(|t| t.0),
            pid,
            rule,
        );
        tell(&line[..n]);
        if let Some(cell) = cell {
            cell.set(decision.errno);
        }
        set_errno(decision.errno);
        return -1;
    }
    set_errno(saved_errno);
    // SAFETY: forwarding the caller's arguments.
    let ret = unsafe { real_connect(fd, addr, len, marked) };
    let e = errno();
    if let Some(cell) = cell {
        cell.set(if ret == 0 { 0 } else { e });
    }
    set_errno(e);
    ret
}

/// # Safety
/// Same contract as connect(2); exported to interpose libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> c_int {
    // SAFETY: same contract as ours.
    unsafe { intercept(fd, addr, len) }
}

/// # Safety
/// Same contract as connect(2); glibc exports this alias too.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __connect(
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> c_int {
    // SAFETY: same contract as ours.
    unsafe { intercept(fd, addr, len) }
}
