//! The seccomp filter: a plain classic-BPF program, written out by hand (as bubblewrap does)
//! because it needs `SECCOMP_RET_USER_NOTIF`, which the `seccompiler` crate cannot emit.
//!
//! For x86_64 system calls:
//! - `connect` notifies the supervisor, unless its unused fourth argument carries the shim's
//!   mark: the shim has already decided and recorded that call (see the module docs of `super`).
//! - `sendto` with a destination address, `sendmsg` and `sendmmsg` (whose destinations live in
//!   memory) and `io_uring_setup` notify the supervisor.
//! - x32 system calls (`__X32_SYSCALL_BIT`) fail with ENOSYS, so that ABI cannot sidestep the
//!   filter.
//! - Everything else is allowed. Those outcomes depend only on the architecture and the call
//!   number, so the kernel's seccomp cache skips the filter for them entirely.
//!
//! Other architectures (32-bit i386 programs) are allowed through: a documented gap.

use libc::sock_filter;

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
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

const fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}
const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// The filter program. `mark` is the shim's connect mark (`nettrap_shim::SHIM_MARK`).
pub fn program(mark: u64) -> Vec<sock_filter> {
    let (mark_lo, mark_hi) = (mark as u32, (mark >> 32) as u32);
    let nr = |n: i64| n as u32;
    // Jump offsets count instructions after the jump; the layout below is fixed, and the
    // labels in comments give each instruction's index.
    vec![
        /* 0 */ stmt(LD_ABS, OFF_ARCH),
        /* 1 */ jump(JEQ, AUDIT_ARCH_X86_64, 1, 0),
        /* 2 */ stmt(RET, RET_ALLOW), // another ABI: documented gap
        /* 3 */ stmt(LD_ABS, OFF_NR),
        /* 4 */ jump(JGE, X32_SYSCALL_BIT, 0, 1),
        /* 5 */ stmt(RET, RET_ERRNO | libc::ENOSYS as u32),
        /* 6 */
        jump(JGE, nr(libc::SYS_connect), 1, 0), // the hot path: read, write, open, …
        /* 7 */ stmt(RET, RET_ALLOW),
        /* 8 */ jump(JEQ, nr(libc::SYS_connect), 6, 0), // -> 15
        /* 9 */ jump(JEQ, nr(libc::SYS_sendto), 10, 0), // -> 20
        /* 10 */ jump(JEQ, nr(libc::SYS_sendmsg), 2, 0), // -> 13
        /* 11 */ jump(JEQ, nr(libc::SYS_sendmmsg), 1, 0), // -> 13
        /* 12 */ jump(JEQ, nr(libc::SYS_io_uring_setup), 0, 1), // -> 13 / 14
        /* 13 */ stmt(RET, RET_USER_NOTIF),
        /* 14 */ stmt(RET, RET_ALLOW),
        // connect: marked by the shim?
        /* 15 */ stmt(LD_ABS, off_arg_lo(3)),
        /* 16 */ jump(JEQ, mark_lo, 0, 3), // -> 20: notify
        /* 17 */ stmt(LD_ABS, off_arg_hi(3)),
        /* 18 */ jump(JEQ, mark_hi, 0, 1), // -> 20: notify
        /* 19 */ stmt(RET, RET_ALLOW),
        // connect unmarked, or sendto: notify when there is a destination address (args[4]).
        // For connect, args[4] is unused (0 from libc, anything from raw callers), so test the
        // number again.
        /* 20 */
        stmt(LD_ABS, OFF_NR),
        /* 21 */ jump(JEQ, nr(libc::SYS_connect), 4, 0), // -> 26: notify
        /* 22 */ stmt(LD_ABS, off_arg_lo(4)),
        /* 23 */ jump(JEQ, 0, 0, 2), // -> 26
        /* 24 */ stmt(LD_ABS, off_arg_hi(4)),
        /* 25 */ jump(JEQ, 0, 1, 0), // -> 27: no destination, allow
        /* 26 */ stmt(RET, RET_USER_NOTIF),
        /* 27 */ stmt(RET, RET_ALLOW),
    ]
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
        assert_eq!(run(&p, &data(0x4000_0003, 102, [0; 6])), RET_ALLOW);
    }
}
