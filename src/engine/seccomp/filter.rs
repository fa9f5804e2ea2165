//! The seccomp filter: a plain classic-BPF program, written out by hand (as bubblewrap does)
//! because it needs `SECCOMP_RET_USER_NOTIF`, which the `seccompiler` crate cannot emit. A tiny
//! assembler resolves the jump labels.
//!
//! x86_64 system calls:
//! - `connect` and `listen` notify the supervisor, unless their unused fourth argument carries
//!   the shim's mark: the shim has already decided and recorded that call (see the module docs
//!   of `super`).
//! - `sendto` with a destination address, `sendmsg` and `sendmmsg` (whose destinations live in
//!   memory) and `io_uring_setup` notify the supervisor.
//! - x32 system calls (`__X32_SYSCALL_BIT`) fail with ENOSYS.
//!
//! i386 system calls (32-bit programs, or `int $0x80` from a 64-bit one, which the kernel
//! reports under `AUDIT_ARCH_I386` with i386 numbers): `socketcall`, `connect`, `listen`,
//! `sendto` with an address, `sendmsg`, `sendmmsg` and `io_uring_setup` notify the supervisor. So no ABI
//! sidesteps the filter; any other architecture value is refused with ENOSYS.
//!
//! Everything else is allowed. Those outcomes depend only on the architecture and the call
//! number, so the kernel's seccomp cache skips the filter for them entirely.

use libc::sock_filter;
use std::collections::HashMap;

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;

// Offsets into struct seccomp_data.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + i * 8
}
const fn off_arg_hi(i: u32) -> u32 {
    16 + i * 8 + 4
}

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// i386 system call numbers the filter traps.
pub mod i386 {
    pub const SOCKETCALL: u32 = 102;
    pub const SENDMMSG: u32 = 345;
    pub const CONNECT: u32 = 362;
    pub const LISTEN: u32 = 363;
    pub const SENDTO: u32 = 369;
    pub const SENDMSG: u32 = 370;
    pub const IO_URING_SETUP: u32 = 425;
}

/// Classic BPF with named jump targets ("" means the next instruction).
#[derive(Default)]
struct Asm {
    code: Vec<sock_filter>,
    jumps: Vec<(usize, &'static str, &'static str)>,
    labels: HashMap<&'static str, usize>,
}

impl Asm {
    fn label(&mut self, name: &'static str) {
        self.labels.insert(name, self.code.len());
    }
    fn load(&mut self, offset: u32) {
        self.code.push(sock_filter {
            code: LD_ABS,
            jt: 0,
            jf: 0,
            k: offset,
        });
    }
    fn ret(&mut self, k: u32) {
        self.code.push(sock_filter {
            code: RET,
            jt: 0,
            jf: 0,
            k,
        });
    }
    fn jump(&mut self, code: u16, k: u32, yes: &'static str, no: &'static str) {
        self.jumps.push((self.code.len(), yes, no));
        self.code.push(sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        });
    }
    fn jeq(&mut self, k: u32, yes: &'static str, no: &'static str) {
        self.jump(JEQ, k, yes, no);
    }
    fn finish(mut self) -> Vec<sock_filter> {
        for (at, yes, no) in std::mem::take(&mut self.jumps) {
            let target = |name: &str| -> u8 {
                if name.is_empty() {
                    return 0;
                }
                let to = self.labels[name];
                assert!(
                    to > at && to - at - 1 <= 255,
                    "filter jump from {at} to {name} out of range"
                );
                (to - at - 1) as u8
            };
            let (jt, jf) = (target(yes), target(no));
            self.code[at].jt = jt;
            self.code[at].jf = jf;
        }
        self.code
    }
}

/// The filter program. `mark` is the shim's connect mark (`SHIM_CONNECT_MARK`).
pub fn program(mark: u64) -> Vec<sock_filter> {
    let (mark_lo, mark_hi) = (mark as u32, (mark >> 32) as u32);
    let nr = |n: libc::c_long| n as u32;
    let mut a = Asm::default();
    a.load(OFF_ARCH);
    a.jeq(AUDIT_ARCH_X86_64, "x86_64", "");
    a.jeq(AUDIT_ARCH_I386, "i386", "");
    a.ret(RET_ERRNO | libc::ENOSYS as u32);

    a.label("x86_64");
    a.load(OFF_NR);
    a.jump(JGE, X32_SYSCALL_BIT, "enosys", "");
    // The hot path: read, write, openat, mmap, … are all numbered below connect.
    a.jump(JGE, nr(libc::SYS_connect), "", "allow");
    a.jeq(nr(libc::SYS_connect), "connect", "");
    a.jeq(nr(libc::SYS_listen), "connect", "");
    a.jeq(nr(libc::SYS_sendto), "sendto64", "");
    a.jeq(nr(libc::SYS_sendmsg), "notify", "");
    a.jeq(nr(libc::SYS_sendmmsg), "notify", "");
    a.jeq(nr(libc::SYS_io_uring_setup), "notify", "allow");
    a.label("connect"); // connect or listen: marked by the shim?
    a.load(off_arg_lo(3));
    a.jeq(mark_lo, "", "notify");
    a.load(off_arg_hi(3));
    a.jeq(mark_hi, "allow", "notify");
    a.label("sendto64"); // notify only with a destination address (args[4])
    a.load(off_arg_lo(4));
    a.jeq(0, "", "notify");
    a.load(off_arg_hi(4));
    a.jeq(0, "allow", "notify");

    a.label("i386");
    a.load(OFF_NR);
    a.jeq(i386::SOCKETCALL, "notify", "");
    a.jeq(i386::CONNECT, "notify", "");
    a.jeq(i386::LISTEN, "notify", "");
    a.jeq(i386::SENDMSG, "notify", "");
    a.jeq(i386::SENDMMSG, "notify", "");
    a.jeq(i386::IO_URING_SETUP, "notify", "");
    a.jeq(i386::SENDTO, "", "allow");
    a.load(off_arg_lo(4)); // i386 arguments are 32 bits wide
    a.jeq(0, "allow", "notify");

    a.label("notify");
    a.ret(RET_USER_NOTIF);
    a.label("allow");
    a.ret(RET_ALLOW);
    a.label("enosys");
    a.ret(RET_ERRNO | libc::ENOSYS as u32);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the subset of classic BPF used above, to check the jumps.
    fn run(prog: &[sock_filter], data: &[u8; 64]) -> u32 {
        let word =
            |off: u32| u32::from_ne_bytes(data[off as usize..off as usize + 4].try_into().unwrap());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            match i.code {
                LD_ABS => acc = word(i.k),
                JEQ => pc += if acc == i.k { i.jt } else { i.jf } as usize,
                JGE => pc += if acc >= i.k { i.jt } else { i.jf } as usize,
                RET => return i.k,
                _ => panic!("unexpected opcode"),
            }
            pc += 1;
        }
    }

    fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_ne_bytes());
        d[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            d[16 + i * 8..24 + i * 8].copy_from_slice(&a.to_ne_bytes());
        }
        d
    }

    #[test]
    fn decisions() {
        let mark = 0x4e54_5241_505f_4f4b;
        let p = program(mark);
        let x = |nr: i64, args: [u64; 6]| run(&p, &data(AUDIT_ARCH_X86_64, nr as u32, args));
        assert_eq!(x(libc::SYS_read, [0; 6]), RET_ALLOW);
        assert_eq!(x(libc::SYS_openat, [0; 6]), RET_ALLOW);
        assert_eq!(x(libc::SYS_connect, [3, 1, 16, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(x(libc::SYS_connect, [3, 1, 16, mark, 0, 0]), RET_ALLOW);
        assert_eq!(
            x(libc::SYS_connect, [3, 1, 16, mark & 0xffff_ffff, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(x(libc::SYS_listen, [3, 5, 0, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(x(libc::SYS_listen, [3, 5, 0, mark, 0, 0]), RET_ALLOW);
        assert_eq!(x(libc::SYS_bind, [3, 1, 16, 0, 0, 0]), RET_ALLOW);
        assert_eq!(x(libc::SYS_sendto, [3, 1, 4, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            x(libc::SYS_sendto, [3, 1, 4, 0, 0x7fff_0000_0000, 16]),
            RET_USER_NOTIF
        );
        assert_eq!(
            x(libc::SYS_sendto, [3, 1, 4, 0, 0x1_0000_0000, 16]),
            RET_USER_NOTIF
        );
        assert_eq!(x(libc::SYS_sendmsg, [0; 6]), RET_USER_NOTIF);
        assert_eq!(x(libc::SYS_sendmmsg, [0; 6]), RET_USER_NOTIF);
        assert_eq!(x(libc::SYS_io_uring_setup, [0; 6]), RET_USER_NOTIF);
        assert_eq!(x(libc::SYS_recvfrom, [0; 6]), RET_ALLOW);
        assert_eq!(x(libc::SYS_exit_group, [0; 6]), RET_ALLOW);
        assert_eq!(
            x((X32_SYSCALL_BIT + 42) as i64, [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
        let i = |nr: u32, args: [u64; 6]| run(&p, &data(AUDIT_ARCH_I386, nr, args));
        assert_eq!(i(i386::SOCKETCALL, [3, 0x1000, 0, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(i(i386::CONNECT, [3, 0x1000, 16, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(
            i(i386::CONNECT, [3, 0x1000, 16, mark, 0, 0]),
            RET_USER_NOTIF,
            "no mark in i386"
        );
        assert_eq!(i(i386::LISTEN, [3, 5, 0, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(i(i386::SENDTO, [3, 1, 4, 0, 0, 0]), RET_ALLOW);
        assert_eq!(i(i386::SENDTO, [3, 1, 4, 0, 0x1000, 16]), RET_USER_NOTIF);
        assert_eq!(i(i386::SENDMSG, [0; 6]), RET_USER_NOTIF);
        assert_eq!(i(i386::SENDMMSG, [0; 6]), RET_USER_NOTIF);
        assert_eq!(i(3, [0; 6]), RET_ALLOW); // i386 read
        assert_eq!(
            run(&p, &data(0xc000_00b7, 203, [0; 6])),
            RET_ERRNO | libc::ENOSYS as u32
        );
    }
}
