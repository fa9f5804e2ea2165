//! The resolver's entry points: `getaddrinfo`, `gethostbyname`, `gethostbyname2`,
//! `gethostbyname_r`, `gethostbyname2_r`.
//!
//! Each forwards to the real function (the next definition, as `dlsym(RTLD_NEXT)` finds it,
//! looked up on first use by [`super::symbols`]) with the caller's arguments, and returns
//! exactly what it returned: value, `errno`, `h_errno`, out-parameters. Around it, inside a
//! run:
//!
//! - A name that is an address literal (or `AI_NUMERICHOST`) is not a lookup: nothing happens.
//! - A lookup answered on the machine (`localhost`, or the name is in `/etc/hosts` for the
//!   family asked: read on every lookup, in bounded chunks, never cached) is not a call.
//! - Any other lookup would leave the machine: it is a call, recorded before the real function
//!   runs as one `Syscall::Lookup` record (the resolver from `/etc/resolv.conf`'s first
//!   `nameserver`, port 53; `host` the name; the test, thread and time as for a connect), its
//!   result set afterwards (0 or the `EAI_*` code). When the policy denies it
//!   (`CompiledPolicy::lookup_decision`: `--deny-dns`, `--deny dns`, a name denied on every
//!   port), the real function is not called: the lookup fails at once with the policy's
//!   `EAI_*` code (`gethostbyname*`: `h_errno` `HOST_NOT_FOUND` / `TRY_AGAIN` /
//!   `NO_RECOVERY`), with the one-line notice on stderr.
//! - After a successful lookup, every address returned is remembered with the name
//!   ([`NAMES`]), so a later `connect` to it carries the name (see `intercept`).
//!
//! Not interposed: `getaddrinfo_a` (glibc runs its requests on helper threads through libc's
//! internal `getaddrinfo`, which no preloaded library sees; under engine `auto` the supervisor
//! still names those lookups from their DNS queries), `res_query` and friends (raw DNS queries,
//! seen by the supervisor only), and resolvers that are not glibc's API (Go's, c-ares).

use super::{
    count_unobserved, current_test, ids, log, now_ns, policy, record_process, set_errno, symbols,
    sys, tables, tell,
};
use core::ffi::{CStr, c_char, c_int, c_void};
use nettrap_core::addr::{Dest, Transport};
use nettrap_core::event::{Call, NotWritten, ResultCell, Source, Syscall, Unobserved};
use nettrap_core::msg;
use nettrap_core::names::{self, Family, HostsScan, MAX_NAME};
use nettrap_core::policy::{
    Action, EAI_AGAIN, EAI_FAIL, EAI_NONAME, FLAG_SECCOMP_BACKSTOP, FLAG_THREAD_NAMES,
};
use nettrap_core::test_id::Phase;

/// Address → the name a lookup in this process returned it for (see [`tables::Names`]: mapped
/// by the process's first lookup).
pub static NAMES: tables::Names = tables::Names;

/// Entries of a lookup's result read at most (a cycle in a corrupt list must not hang us).
const MAX_RESULTS: usize = 64;

const EAI_NODATA: c_int = -5;
const EAI_SYSTEM: c_int = -11;
const EAI_OVERFLOW: c_int = -12;
// netdb.h
const HOST_NOT_FOUND: c_int = 1;
const TRY_AGAIN: c_int = 2;
const NO_RECOVERY: c_int = 3;
const NO_DATA: c_int = 4;

/// glibc's per-thread h_errno slot (a slot of the shim's own if libc has none).
fn h_errno_slot() -> *mut c_int {
    static NONE: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);
    match symbols::get(&symbols::H_ERRNO_LOCATION) {
        0 => NONE.as_ptr(),
        f => {
            // SAFETY: f is __h_errno_location, which takes nothing and returns the slot.
            let f: unsafe extern "C" fn() -> *mut c_int = unsafe { core::mem::transmute(f) };
            // SAFETY: as above.
            unsafe { f() }
        }
    }
}

fn h_errno() -> c_int {
    // SAFETY: this thread's h_errno slot.
    unsafe { *h_errno_slot() }
}

fn set_h_errno(v: c_int) {
    // SAFETY: as in h_errno().
    unsafe { *h_errno_slot() = v }
}

/// A `gethostbyname*` failure (`h_errno`) as the `EAI_*` code the record keeps.
fn eai_of_h_errno(h: c_int) -> i32 {
    match h {
        HOST_NOT_FOUND => EAI_NONAME,
        TRY_AGAIN => EAI_AGAIN,
        NO_RECOVERY => EAI_FAIL,
        NO_DATA => EAI_NODATA,
        _ => EAI_SYSTEM,
    }
}

/// The `h_errno` a denied `gethostbyname*` reports for the policy's `EAI_*` code.
fn h_errno_of_eai(e: i32) -> c_int {
    match e {
        EAI_AGAIN => TRY_AGAIN,
        EAI_FAIL => NO_RECOVERY,
        _ => HOST_NOT_FOUND,
    }
}

/// Reads up to `buf.len()` bytes of a file from its start, in chunks, handing each to `each`.
/// Returns false when the file cannot be opened.
fn read_chunks(path: &CStr, buf: &mut [u8], mut each: impl FnMut(&[u8]) -> bool) -> bool {
    // SAFETY: path is NUL-terminated.
    let fd = unsafe { sys::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    loop {
        // SAFETY: reading into buf, which we own.
        let r = unsafe { sys::read(fd, buf.as_mut_ptr().cast::<c_void>(), buf.len()) };
        if r <= 0 || !each(&buf[..r as usize]) {
            break;
        }
    }
    sys::close(fd);
    true
}

/// Is `name` answered on this machine: `localhost`, or listed in `/etc/hosts` for `family`?
fn answered_locally(name: &[u8], family: Family) -> bool {
    if names::is_localhost(name) {
        return true;
    }
    let mut scan = HostsScan::new(name, family);
    let mut buf = [0u8; 2048];
    read_chunks(c"/etc/hosts", &mut buf, |chunk| {
        scan.feed(chunk);
        true
    });
    scan.finish()
}

/// The first nameserver of `/etc/resolv.conf` (from its first 2 KiB), port 53.
fn resolver() -> Option<Dest> {
    let mut buf = [0u8; 2048];
    let mut len = 0;
    // SAFETY: path is NUL-terminated.
    let fd = unsafe {
        sys::open(
            c"/etc/resolv.conf".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return None;
    }
    while len < buf.len() {
        // SAFETY: reading into the unfilled part of buf.
        let r = unsafe {
            sys::read(
                fd,
                buf[len..].as_mut_ptr().cast::<c_void>(),
                buf.len() - len,
            )
        };
        if r <= 0 {
            break;
        }
        len += r as usize;
    }
    sys::close(fd);
    // A line cut by the buffer's end is not read.
    let end = if len == buf.len() {
        buf.iter().rposition(|&b| b == b'\n').unwrap_or(0)
    } else {
        len
    };
    names::first_nameserver(&buf[..end])
}

/// What to do about one call of a resolver function.
enum Begin<'a> {
    /// Not a lookup nettrap follows (outside a run, an address literal): just forward.
    Forward,
    /// Call the real function, then [`Pending::finish`].
    Go(Pending<'a>),
    /// Fail at once with this `EAI_*` code (already recorded and told).
    Deny(i32),
}

struct Pending<'a> {
    name: &'a [u8],
    /// The Lookup record's result, for a lookup that leaves the machine and was recorded.
    cell: Option<ResultCell<'static>>,
    /// When the real function was called (CLOCK_MONOTONIC), for the record's blocked time.
    start_ns: u64,
}

impl Pending<'_> {
    /// After the real function: `result` is 0 or an `EAI_*` code; `addrs` the addresses it
    /// returned.
    fn finish(self, result: i32, addrs: impl Iterator<Item = [u8; 16]>) {
        if let Some(cell) = self.cell {
            cell.finish(result, now_ns().saturating_sub(self.start_ns));
        }
        if result == 0 && self.name.len() <= MAX_NAME {
            for ip in addrs.take(MAX_RESULTS) {
                NAMES.remember(&ip, self.name);
            }
        }
    }
}

/// Decides and records a lookup of `name` (a C string) for `family`.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string that stays valid during the call.
unsafe fn begin<'a>(name: *const c_char, family: Family) -> Begin<'a> {
    if name.is_null() || super::run_dir().is_none() {
        return Begin::Forward;
    }
    // SAFETY: per the caller: a C string valid for the interposed call, which 'a stays within.
    let name: &'a [u8] = unsafe { CStr::from_ptr(name) }.to_bytes();
    if name.is_empty() || names::is_numeric(name) {
        return Begin::Forward;
    }
    if answered_locally(name, family) {
        return Begin::Go(Pending {
            name,
            cell: None,
            start_ns: 0,
        });
    }
    let log = log();
    let Some(policy) = policy() else {
        // Cannot decide: counted (under auto the supervisor sees the lookup's queries).
        count_unobserved(log.as_ref(), Unobserved::ShimUnmapped);
        return Begin::Go(Pending {
            name,
            cell: None,
            start_ns: 0,
        });
    };
    let backstop = policy.flags & FLAG_SECCOMP_BACKSTOP != 0;
    let (pid, tid) = ids::caller();
    let time_ns = now_ns();
    let test = current_test();
    let resolver = resolver();
    let decision = policy.lookup_decision(resolver.as_ref(), name, test.map(|t| t.0));
    let call = Call {
        pid,
        tid,
        time_ns,
        dest: resolver.unwrap_or(Dest {
            ip: [0; 16],
            port: 53,
        }),
        transport: Transport::Udp,
        action: decision.action,
        phase: test.map_or(Phase::None, |t| t.1),
        source: Source::Shim,
        syscall: Syscall::Lookup,
        category: decision.category,
        rule: decision.rule,
        deny_errno: if decision.action == Action::Deny {
            decision.errno
        } else {
            0
        },
        has_test: test.is_some(),
    };
    let cell = match &log {
        None => {
            count_unobserved(None, Unobserved::ShimUnmapped);
            None
        }
        Some(log) => {
            let process = record_process(log, pid);
            let mut thread = [0u8; 16];
            let thread_len = if policy.flags & FLAG_THREAD_NAMES != 0 {
                sys::thread_name(&mut thread)
            } else {
                0
            };
            let id = test.map_or(&[][..], |t| t.0);
            let cell = match log.append_call(&call, id, name, &thread[..thread_len]) {
                Ok(cell) => Some(cell),
                Err(NotWritten::Full) => None,
                // Under auto the supervisor sees the lookup's queries; alone, it is lost.
                Err(NotWritten::Unmapped) if backstop => {
                    log.count_unobserved(Unobserved::ShimUnmapped);
                    None
                }
                Err(NotWritten::Unmapped) => {
                    log.count_dropped();
                    None
                }
            };
            if let Err(NotWritten::Unmapped) = process {
                log.count_dropped();
            }
            cell
        }
    };
    if decision.action == Action::Deny {
        let rule = policy.rule_label(decision.rule).unwrap_or(b"default");
        let mut line = [0u8; 1024];
        let n = msg::lookup_denial(
            &mut line,
            name,
            policy.category_name(decision.category),
            test.map(|t| t.0),
            pid,
            rule,
        );
        tell(&line[..n]);
        if let Some(cell) = cell {
            cell.set(decision.errno);
        }
        return Begin::Deny(decision.errno);
    }
    // The real lookup starts now: what it blocks is the record's blocked time.
    let start_ns = if cell.is_some() { now_ns() } else { 0 };
    Begin::Go(Pending {
        name,
        cell,
        start_ns,
    })
}

/// The addresses of a `getaddrinfo` result list.
///
/// # Safety
/// `res` must be NULL or a list `getaddrinfo` returned, not freed yet.
unsafe fn addrinfo_addrs(res: *const libc::addrinfo) -> impl Iterator<Item = [u8; 16]> {
    let mut p = res;
    core::iter::from_fn(move || {
        while !p.is_null() {
            // SAFETY: a node of the list, per the caller.
            let ai = unsafe { &*p };
            p = ai.ai_next;
            if ai.ai_addr.is_null() {
                continue;
            }
            // SAFETY: ai_addr points to ai_addrlen bytes of the family's sockaddr.
            unsafe {
                match ai.ai_family {
                    libc::AF_INET
                        if ai.ai_addrlen as usize >= core::mem::size_of::<libc::sockaddr_in>() =>
                    {
                        let sin = &*ai.ai_addr.cast::<libc::sockaddr_in>();
                        return Some(Dest::from_v4(sin.sin_addr.s_addr.to_ne_bytes(), 0).ip);
                    }
                    libc::AF_INET6
                        if ai.ai_addrlen as usize >= core::mem::size_of::<libc::sockaddr_in6>() =>
                    {
                        let sin6 = &*ai.ai_addr.cast::<libc::sockaddr_in6>();
                        return Some(sin6.sin6_addr.s6_addr);
                    }
                    _ => {}
                }
            }
        }
        None
    })
    .take(MAX_RESULTS)
}

/// The addresses of a `hostent`.
///
/// # Safety
/// `h` must be NULL or a `hostent` a `gethostbyname*` function returned, still valid.
unsafe fn hostent_addrs(h: *const libc::hostent) -> impl Iterator<Item = [u8; 16]> {
    // SAFETY: per the caller.
    let h = unsafe { h.as_ref() };
    let (family, len, mut list) = match h {
        Some(h) if !h.h_addr_list.is_null() => (h.h_addrtype, h.h_length, h.h_addr_list),
        _ => (0, 0, core::ptr::null_mut()),
    };
    core::iter::from_fn(move || {
        if list.is_null() {
            return None;
        }
        // SAFETY: h_addr_list is a NULL-terminated array of pointers to h_length bytes.
        let a = unsafe { *list };
        if a.is_null() {
            return None;
        }
        // SAFETY: as above: the next element exists (this one was not the terminator).
        list = unsafe { list.add(1) };
        let a = a.cast::<u8>();
        // SAFETY: a points to h_length bytes.
        unsafe {
            Some(match (family, len) {
                (libc::AF_INET, 4) => Dest::from_v4([*a, *a.add(1), *a.add(2), *a.add(3)], 0).ip,
                (libc::AF_INET6, 16) => {
                    let mut ip = [0u8; 16];
                    core::ptr::copy_nonoverlapping(a, ip.as_mut_ptr(), 16);
                    ip
                }
                _ => return None,
            })
        }
    })
    .take(MAX_RESULTS)
}

type GetaddrinfoFn = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const libc::addrinfo,
    *mut *mut libc::addrinfo,
) -> c_int;
type GethostbynameFn = unsafe extern "C" fn(*const c_char) -> *mut libc::hostent;
type Gethostbyname2Fn = unsafe extern "C" fn(*const c_char, c_int) -> *mut libc::hostent;
type GethostbynameRFn = unsafe extern "C" fn(
    *const c_char,
    *mut libc::hostent,
    *mut c_char,
    libc::size_t,
    *mut *mut libc::hostent,
    *mut c_int,
) -> c_int;
type Gethostbyname2RFn = unsafe extern "C" fn(
    *const c_char,
    c_int,
    *mut libc::hostent,
    *mut c_char,
    libc::size_t,
    *mut *mut libc::hostent,
    *mut c_int,
) -> c_int;

/// The hosts-file family a `gethostbyname2*` address family asks for.
fn family_of(af: c_int) -> Option<Family> {
    match af {
        libc::AF_INET => Some(Family::V4),
        libc::AF_INET6 => Some(Family::V6),
        _ => None,
    }
}

/// This thread marked as inside `getaddrinfo` in the run's log header for as long as the value
/// lives (see `nettrap_core::event::Log::enter_resolver`): the UDP connects glibc makes to sort
/// the results are not calls, for the shim and the supervisor alike. Nothing is marked when the
/// log cannot be mapped or its table is full.
struct Resolving(Option<usize>);

impl Resolving {
    fn enter() -> Resolving {
        Resolving(log().and_then(|log| log.enter_resolver(sys::gettid())))
    }
}

impl Drop for Resolving {
    fn drop(&mut self) {
        if let (Some(slot), Some(log)) = (self.0, log()) {
            log.leave_resolver(slot);
        }
    }
}

/// # Safety
/// As getaddrinfo(3); exported to interpose libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const libc::addrinfo,
    res: *mut *mut libc::addrinfo,
) -> c_int {
    let saved_errno = super::errno();
    let f = symbols::get(&symbols::GETADDRINFO);
    if f == 0 {
        set_errno(libc::ENOSYS);
        return EAI_SYSTEM;
    }
    // SAFETY: f is the next getaddrinfo, as dlsym(RTLD_NEXT) finds it.
    let f: GetaddrinfoFn = unsafe { core::mem::transmute::<usize, GetaddrinfoFn>(f) };
    // SAFETY: hints is NULL or a valid addrinfo, per the API.
    let (family, flags) =
        unsafe { hints.as_ref() }.map_or((libc::AF_UNSPEC, 0), |h| (h.ai_family, h.ai_flags));
    let family = match family {
        libc::AF_INET => Some(Family::V4),
        libc::AF_INET6 if flags & libc::AI_V4MAPPED != 0 => Some(Family::V6Mapped),
        libc::AF_INET6 => Some(Family::V6),
        libc::AF_UNSPEC => Some(Family::Any),
        _ => None,
    };
    let begin = match family {
        // An address literal only, or a family that is not IP: no lookup to follow.
        Some(family) if flags & libc::AI_NUMERICHOST == 0 => {
            // SAFETY: node is NULL or a C string, per the API.
            unsafe { begin(node, family) }
        }
        _ => Begin::Forward,
    };
    let pending = match begin {
        Begin::Forward => {
            let _mark = Resolving::enter();
            set_errno(saved_errno);
            // SAFETY: forwarding the caller's arguments.
            return unsafe { f(node, service, hints, res) };
        }
        Begin::Deny(eai) => {
            set_errno(saved_errno);
            return eai;
        }
        Begin::Go(p) => p,
    };
    let mark = Resolving::enter();
    set_errno(saved_errno);
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { f(node, service, hints, res) };
    let e = super::errno();
    drop(mark);
    let list = if r == 0 && !res.is_null() {
        // SAFETY: on success *res is the list getaddrinfo returned, not freed yet.
        unsafe { *res }
    } else {
        core::ptr::null_mut()
    };
    // SAFETY: list is NULL or getaddrinfo's result.
    pending.finish(r, unsafe { addrinfo_addrs(list) });
    set_errno(e);
    r
}

/// Shared by `gethostbyname` and `gethostbyname2`.
///
/// # Safety
/// As gethostbyname(3); `call` runs the real function.
unsafe fn hostent_lookup(
    name: *const c_char,
    family: Option<Family>,
    call: impl FnOnce() -> *mut libc::hostent,
) -> *mut libc::hostent {
    let saved_errno = super::errno();
    let begin = match family {
        // SAFETY: name is a C string, per the API.
        Some(family) => unsafe { begin(name, family) },
        None => Begin::Forward,
    };
    let pending = match begin {
        Begin::Forward => {
            set_errno(saved_errno);
            return call();
        }
        Begin::Deny(eai) => {
            set_h_errno(h_errno_of_eai(eai));
            set_errno(if eai == EAI_AGAIN {
                libc::EAGAIN
            } else {
                saved_errno
            });
            return core::ptr::null_mut();
        }
        Begin::Go(p) => p,
    };
    set_errno(saved_errno);
    let h = call();
    let e = super::errno();
    let result = if h.is_null() {
        eai_of_h_errno(h_errno())
    } else {
        0
    };
    // SAFETY: h is NULL or the hostent just returned.
    pending.finish(result, unsafe { hostent_addrs(h) });
    set_errno(e);
    h
}

/// Shared by `gethostbyname_r` and `gethostbyname2_r`.
///
/// # Safety
/// As gethostbyname_r(3); `call` runs the real function with the caller's arguments.
unsafe fn hostent_lookup_r(
    name: *const c_char,
    family: Option<Family>,
    result: *mut *mut libc::hostent,
    h_errnop: *mut c_int,
    call: impl FnOnce() -> c_int,
) -> c_int {
    let saved_errno = super::errno();
    let begin = match family {
        // SAFETY: name is a C string, per the API.
        Some(family) => unsafe { begin(name, family) },
        None => Begin::Forward,
    };
    let pending = match begin {
        Begin::Forward => {
            set_errno(saved_errno);
            return call();
        }
        Begin::Deny(eai) => {
            // glibc's convention: not found is 0 with a NULL result; "try again" is EAGAIN.
            // SAFETY: result and h_errnop are valid out-parameters, per the API.
            unsafe {
                if !result.is_null() {
                    *result = core::ptr::null_mut();
                }
                if !h_errnop.is_null() {
                    *h_errnop = h_errno_of_eai(eai);
                }
            }
            if eai == EAI_AGAIN {
                set_errno(libc::EAGAIN);
                return libc::EAGAIN;
            }
            set_errno(saved_errno);
            return 0;
        }
        Begin::Go(p) => p,
    };
    set_errno(saved_errno);
    let r = call();
    let e = super::errno();
    // SAFETY: result and h_errnop are the caller's out-parameters, set by the real call.
    let (h, herr) = unsafe {
        (
            if result.is_null() {
                core::ptr::null_mut()
            } else {
                *result
            },
            if h_errnop.is_null() { 0 } else { *h_errnop },
        )
    };
    let outcome = match (r, h.is_null()) {
        (0, false) => 0,
        (libc::ERANGE, _) => EAI_OVERFLOW,
        _ => eai_of_h_errno(herr),
    };
    // SAFETY: h is NULL or the caller's hostent, just filled.
    pending.finish(outcome, unsafe { hostent_addrs(h) });
    set_errno(e);
    r
}

/// # Safety
/// As gethostbyname(3); exported to interpose libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut libc::hostent {
    let f = symbols::get(&symbols::GETHOSTBYNAME);
    if f == 0 {
        set_h_errno(NO_RECOVERY);
        return core::ptr::null_mut();
    }
    // SAFETY: f is the next gethostbyname, as dlsym(RTLD_NEXT) finds it.
    let f: GethostbynameFn = unsafe { core::mem::transmute::<usize, GethostbynameFn>(f) };
    // SAFETY: forwarding the caller's arguments.
    unsafe { hostent_lookup(name, Some(Family::V4), || f(name)) }
}

/// # Safety
/// As gethostbyname2(3); exported to interpose libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut libc::hostent {
    let f = symbols::get(&symbols::GETHOSTBYNAME2);
    if f == 0 {
        set_h_errno(NO_RECOVERY);
        return core::ptr::null_mut();
    }
    // SAFETY: f is the next gethostbyname2, as dlsym(RTLD_NEXT) finds it.
    let f: Gethostbyname2Fn = unsafe { core::mem::transmute::<usize, Gethostbyname2Fn>(f) };
    // SAFETY: forwarding the caller's arguments.
    unsafe { hostent_lookup(name, family_of(af), || f(name, af)) }
}

/// # Safety
/// As gethostbyname_r(3); exported to interpose libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut libc::hostent,
    buf: *mut c_char,
    buflen: libc::size_t,
    result: *mut *mut libc::hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let f = symbols::get(&symbols::GETHOSTBYNAME_R);
    if f == 0 {
        return libc::ENOSYS;
    }
    // SAFETY: f is the next gethostbyname_r, as dlsym(RTLD_NEXT) finds it.
    let f: GethostbynameRFn = unsafe { core::mem::transmute::<usize, GethostbynameRFn>(f) };
    // SAFETY: forwarding the caller's arguments.
    unsafe {
        hostent_lookup_r(name, Some(Family::V4), result, h_errnop, || {
            f(name, ret, buf, buflen, result, h_errnop)
        })
    }
}

/// # Safety
/// As gethostbyname2_r(3); exported to interpose libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut libc::hostent,
    buf: *mut c_char,
    buflen: libc::size_t,
    result: *mut *mut libc::hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let f = symbols::get(&symbols::GETHOSTBYNAME2_R);
    if f == 0 {
        return libc::ENOSYS;
    }
    // SAFETY: f is the next gethostbyname2_r, as dlsym(RTLD_NEXT) finds it.
    let f: Gethostbyname2RFn = unsafe { core::mem::transmute::<usize, Gethostbyname2RFn>(f) };
    // SAFETY: forwarding the caller's arguments.
    unsafe {
        hostent_lookup_r(name, family_of(af), result, h_errnop, || {
            f(name, af, ret, buf, buflen, result, h_errnop)
        })
    }
}
