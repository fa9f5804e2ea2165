//! The kernel plumbing the supervisor needs: the seccomp user-notification ioctls, reading a
//! trapped process's memory, and borrowing its file descriptors through pidfds.

use nettrap_core::addr::Dest;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6+): wake the supervisor on the caller's CPU.
const FD_SYNC_WAKE_UP: u64 = 1;

fn cvt(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The supervisor's end of the filter.
pub struct Listener(pub OwnedFd);

impl Listener {
    /// Asks for synchronous wake-ups, which cut a round trip from tens of microseconds to a few.
    /// Older kernels refuse (`false`); that only costs speed.
    pub fn set_sync_wakeup(&self) -> bool {
        // SAFETY: ioctl on our listener with a flag passed by value, as the kernel expects.
        unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                FD_SYNC_WAKE_UP,
            ) == 0
        }
    }

    pub fn recv(&self) -> io::Result<libc::seccomp_notif> {
        // SAFETY: the kernel requires a zeroed buffer; seccomp_notif is plain data.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one seccomp_notif into req, which lives across the call.
        let r =
            unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) };
        cvt(r as libc::c_long)?;
        Ok(req)
    }

    /// Is the notification still pending (the caller still waiting in the same system call)?
    pub fn id_valid(&self, id: u64) -> bool {
        // SAFETY: ID_VALID reads one u64.
        unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
    }

    /// Lets the system call run as the caller made it.
    pub fn allow(&self, id: u64) -> io::Result<()> {
        self.send(libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        })
    }

    /// Answers the system call for the caller: it returns `val` (the supervisor made the call
    /// itself, on a borrowed descriptor).
    pub fn succeed(&self, id: u64, val: i64) -> io::Result<()> {
        self.send(libc::seccomp_notif_resp {
            id,
            val,
            error: 0,
            flags: 0,
        })
    }

    /// Fails the system call with `errno`.
    pub fn fail(&self, id: u64, errno: i32) -> io::Result<()> {
        self.send(libc::seccomp_notif_resp {
            id,
            val: 0,
            error: -errno,
            flags: 0,
        })
    }

    fn send(&self, mut resp: libc::seccomp_notif_resp) -> io::Result<()> {
        // SAFETY: SEND reads one seccomp_notif_resp.
        cvt(unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut resp,
            )
        } as libc::c_long)
        .map(drop)
    }
}

/// Why a process's memory could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Nothing is mapped there (a null or unmapped address, or a range running into one): a
    /// system call given that address fails with EFAULT itself.
    Fault,
    /// Anything else: the process is not ours to read (EPERM: it made itself non-dumpable, or
    /// runs with other credentials), or is gone (ESRCH).
    Denied,
}

/// Reads `len` bytes at `addr` in process (or thread) `pid`.
pub fn read_mem(pid: u32, addr: u64, len: usize) -> Result<Vec<u8>, ReadError> {
    if addr == 0 || len == 0 {
        return Err(ReadError::Fault);
    }
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: one local iovec over our buffer; the remote one is only read by the kernel.
    let n = unsafe { libc::process_vm_readv(pid as i32, &local, 1, &remote, 1, 0) };
    match n {
        _ if n == len as isize => Ok(buf),
        // A short read: the range runs into unmapped memory.
        0.. => Err(ReadError::Fault),
        _ if io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT) => {
            Err(ReadError::Fault)
        }
        _ => Err(ReadError::Denied),
    }
}

/// Reads `N` bytes at `first`, then `len` bytes at `addr`, in process (or thread) `pid`, with
/// one system call. The first range is `None` when it could not be read (the second is then
/// read on its own); the second as [`read_mem`] reads it.
pub fn read_mem_after<const N: usize>(
    pid: u32,
    first: u64,
    addr: u64,
    len: usize,
) -> (Option<[u8; N]>, Result<Vec<u8>, ReadError>) {
    if addr == 0 || len == 0 {
        let head = read_mem(pid, first, N).ok().and_then(|b| b.try_into().ok());
        return (head, Err(ReadError::Fault));
    }
    let mut head = [0u8; N];
    let mut buf = vec![0u8; len];
    let local = [
        libc::iovec {
            iov_base: head.as_mut_ptr().cast(),
            iov_len: N,
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        },
    ];
    let remote = [
        libc::iovec {
            iov_base: first as *mut libc::c_void,
            iov_len: N,
        },
        libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        },
    ];
    // SAFETY: two local iovecs over our buffers; the remote ones are only read by the kernel.
    let n = unsafe { libc::process_vm_readv(pid as i32, local.as_ptr(), 2, remote.as_ptr(), 2, 0) };
    match n {
        _ if n == (N + len) as isize => (Some(head), Ok(buf)),
        // The address runs into unmapped memory (transfers stop at the first fault).
        _ if n >= N as isize => (Some(head), Err(ReadError::Fault)),
        // The first range is not readable (nothing copied): the address on its own.
        _ if n > 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT) => {
            (None, read_mem(pid, addr, len))
        }
        _ => (None, Err(ReadError::Denied)),
    }
}

pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    pidfd_open_flags(pid, 0)
}

/// `pidfd_open` with `flags` (`PIDFD_THREAD`: a pidfd of one thread, Linux 6.9+).
pub fn pidfd_open_flags(pid: u32, flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; on success it returns a new descriptor we own.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, flags) })?;
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Is the task behind `pidfd` still there? (`pidfd_send_signal` with signal 0 only checks.)
pub fn alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: signal 0 with no siginfo sends nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// A copy of descriptor `fd` of the process behind `pidfd`.
pub fn pidfd_getfd(pidfd: &OwnedFd, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd returns a new descriptor we own.
    let got = cvt(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })?;
    // SAFETY: got is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

/// Which socket a descriptor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketId {
    /// The socket's inode (`socket:[N]`): unique while the socket lives, never the same for two
    /// sockets in practice (a 32-bit counter per boot).
    Inode(u64),
    /// Only the descriptor number, when the inode could not be read.
    Fd(RawFd),
}

/// A trapped process's socket, as the supervisor sees it.
#[derive(Clone, Copy, Debug)]
pub struct SocketInfo {
    /// Domain, type and protocol; `None` when the socket could not be borrowed.
    pub kind: Option<nettrap_core::addr::Socket>,
    pub id: SocketId,
    /// The connected peer (`getpeername`), when asked for and the socket has an inet one.
    pub peer: Option<Dest>,
}

fn sockopt(fd: RawFd, opt: libc::c_int) -> Option<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into v and updates len; both outlive the call.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

/// A socket's type (`SOCK_STREAM`, `SOCK_DGRAM`, …).
pub fn sock_type(fd: RawFd) -> Option<i32> {
    sockopt(fd, libc::SO_TYPE)
}

/// The inet address a socket is bound to (`getsockname`) or connected to (`getpeername`).
pub fn sock_addr(fd: RawFd, peer: bool) -> Option<Dest> {
    let mut sa = [0u8; nettrap_core::addr::SOCKADDR_STORAGE];
    let mut len = sa.len() as libc::socklen_t;
    let ptr = sa.as_mut_ptr().cast::<libc::sockaddr>();
    // SAFETY: both calls write at most len bytes into sa and update len; both outlive the call.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, ptr, &mut len)
        } else {
            libc::getsockname(fd, ptr, &mut len)
        }
    };
    if r != 0 {
        return None;
    }
    let sa = &sa[..(len as usize).min(sa.len())];
    match nettrap_core::addr::decode(nettrap_core::addr::Op::Connect, None, Some(sa)) {
        nettrap_core::addr::Address::Inet(d) => Some(d),
        _ => None,
    }
}

/// A socket's domain, type and protocol from the name of its protocol, the attribute
/// `system.sockprotoname` that every socket has (one system call where `SO_TYPE` and
/// `SO_DOMAIN` are two), for the names that say all three: `TCP` and `UDP`. The name is the
/// protocol the socket was created with; an IPv4 socket never changes domain or protocol (an
/// IPv6 one can, with `IPV6_ADDRFORM`, so `TCPv6` and `UDPv6` are asked as any other).
fn kind_by_name(fd: RawFd) -> Option<nettrap_core::addr::Socket> {
    let mut name = [0u8; 8];
    // SAFETY: fgetxattr writes at most name.len() bytes into name, which outlives the call.
    let n = unsafe {
        libc::fgetxattr(
            fd,
            c"system.sockprotoname".as_ptr(),
            name.as_mut_ptr().cast(),
            name.len(),
        )
    };
    let (ty, protocol) = match name.get(..usize::try_from(n).ok()?)? {
        b"TCP" | b"TCP\0" => (libc::SOCK_STREAM, libc::IPPROTO_TCP),
        b"UDP" | b"UDP\0" => (libc::SOCK_DGRAM, libc::IPPROTO_UDP),
        _ => return None,
    };
    Some(nettrap_core::addr::Socket {
        ty,
        domain: libc::AF_INET,
        protocol,
    })
}

/// What [`socket_info`] asks about a socket beyond its domain and type, each a system call.
#[derive(Clone, Copy)]
pub struct Want<'a> {
    /// `SO_PROTOCOL`, asked only when `protocol(domain, type)` says the answer depends on it.
    pub protocol: &'a dyn Fn(i32, i32) -> bool,
    /// The inode (`fstat`): the socket's identity, for what is remembered per socket.
    pub inode: bool,
    /// The connected peer (`getpeername`).
    pub peer: bool,
}

/// The protocol a socket is taken to have when it was not asked for: none of those whose
/// address rules differ (see `nettrap_core::addr`).
pub const PROTOCOL_NOT_ASKED: i32 = -1;

/// Descriptor `fd` of the caller (behind `pidfd`, a pidfd of its process or of the calling
/// thread), if it is a socket: borrowed through the pidfd (domain, type, and what `want` asks
/// for), else, when it cannot be borrowed, its inode from `/proc/<tgid>/fd/<fd>`.
/// `Err(())`: the pidfd's task is gone (ESRCH), so it is not the caller's.
pub fn socket_info(
    pidfd: &OwnedFd,
    tgid: u32,
    fd: RawFd,
    want: Want<'_>,
) -> Result<Option<SocketInfo>, ()> {
    use std::os::unix::fs::MetadataExt;
    match pidfd_getfd(pidfd, fd) {
        Ok(sock) => {
            let raw = sock.as_raw_fd();
            let kind = match kind_by_name(raw) {
                Some(kind) => kind,
                None => {
                    let (Some(ty), Some(domain)) =
                        (sockopt(raw, libc::SO_TYPE), sockopt(raw, libc::SO_DOMAIN))
                    else {
                        return Ok(None);
                    };
                    let protocol = if (want.protocol)(domain, ty) {
                        let Some(p) = sockopt(raw, libc::SO_PROTOCOL) else {
                            return Ok(None);
                        };
                        p
                    } else {
                        PROTOCOL_NOT_ASKED
                    };
                    nettrap_core::addr::Socket {
                        ty,
                        domain,
                        protocol,
                    }
                }
            };
            let peer = want.peer.then(|| sock_addr(raw, true)).flatten();
            let id = if want.inode {
                let Ok(meta) = std::fs::File::from(sock).metadata() else {
                    return Ok(None);
                };
                SocketId::Inode(meta.ino())
            } else {
                SocketId::Fd(fd)
            };
            return Ok(Some(SocketInfo {
                kind: Some(kind),
                id,
                peer,
            }));
        }
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(()),
        Err(_) => {}
    }
    let link = std::fs::read_link(format!("/proc/{tgid}/fd/{fd}")).ok();
    let ino = link.and_then(|l| {
        l.to_str()?
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    });
    Ok(ino.map(|ino| SocketInfo {
        kind: None,
        id: SocketId::Inode(ino),
        peer: None,
    }))
}

/// Writes `msg` to the stderr of process `tgid`, so a denial shows up where the test's output
/// is captured (pytest's capture, a CI log), but only when that stderr is a terminal, a pipe, a
/// socket, or a deleted file (a capture buffer, as pytest's): a program that pointed fd 2 at a
/// file of its own gets nothing written into it (the denial is in the report all the same).
///
/// A terminal or pipe is opened anew through /proc (its own open file description):
/// non-blocking, so a full pipe drops the line instead of stalling the supervisor and every
/// process waiting on it. A socket is borrowed through the pidfd and sent to without blocking
/// and without SIGPIPE; a deleted file is borrowed too and written at the program's own offset,
/// as if the program wrote the line itself.
pub fn write_to_stderr_of(tgid: u32, pidfd: Option<&OwnedFd>, msg: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let path = format!("/proc/{tgid}/fd/2");
    let Ok(meta) = std::fs::metadata(&path) else {
        return;
    };
    let kind = meta.file_type();
    let same = |m: &std::fs::Metadata| (m.dev(), m.ino()) == (meta.dev(), meta.ino());
    if kind.is_char_device() || kind.is_fifo() {
        let opened = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path);
        // Still the same file (fd 2 may have been replaced in between).
        if let Ok(mut f) = opened
            && f.metadata().is_ok_and(|m| same(&m))
        {
            let _ = f.write(msg);
        }
        return;
    }
    let borrowable = kind.is_socket() || (kind.is_file() && meta.nlink() == 0);
    let Some(fd) = pidfd
        .filter(|_| borrowable)
        .and_then(|p| pidfd_getfd(p, 2).ok())
    else {
        return;
    };
    let mut f = std::fs::File::from(fd);
    if !f.metadata().is_ok_and(|m| same(&m)) {
        return;
    }
    if kind.is_socket() {
        // SAFETY: sends msg.len() bytes from msg on a descriptor we own; a failed or short
        // send is ignored on purpose.
        unsafe {
            libc::send(
                f.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
    } else {
        let _ = f.write(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tell_a_bad_address_from_a_process_that_cannot_be_read() {
        let me = std::process::id();
        let bytes = *b"sockaddr";
        assert_eq!(read_mem(me, bytes.as_ptr() as u64, 8), Ok(bytes.to_vec()));
        // Null, unmapped, and a range running off the end of a mapping: the kernel would
        // fail the call itself with EFAULT.
        assert_eq!(read_mem(me, 0, 8), Err(ReadError::Fault));
        assert_eq!(read_mem(me, 8, 8), Err(ReadError::Fault));
        // SAFETY: mapping two fresh pages, then making the second inaccessible (not unmapping
        // it: another test's thread could map something there before the read).
        let end = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            libc::mprotect(p.cast::<u8>().add(4096).cast(), 4096, libc::PROT_NONE);
            p as u64 + 4096
        };
        assert_eq!(read_mem(me, end - 4, 8), Err(ReadError::Fault));
        // No such process (above any pid_max): not ours to read.
        assert_eq!(read_mem(0x7fff_fff0, end - 4096, 8), Err(ReadError::Denied));
        // SAFETY: both pages, mapped above and no longer used.
        unsafe { libc::munmap((end - 4096) as *mut libc::c_void, 8192) };
    }
}
