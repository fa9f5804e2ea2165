//! What the kernel accepts as a destination is what nettrap decodes: IPv6 addresses without
//! `sin6_scope_id` (24 bytes), `AF_UNSPEC` read as IPv4 by a UDP send, lengths over 128 refused
//! (not a call); and a datagram socket's first send to a destination is a call per socket.

use crate::common::*;
use nettrap_core::addr::{self, Address, Op, Socket};

fn fx(name: &str) -> String {
    c_fixture(name).to_str().unwrap().to_string()
}

/// (address, port, transport, syscall, verdict, count) of every grouped call, sorted.
fn rows(run: &Run) -> Vec<(String, u64, String, String, String, u64)> {
    let mut v: Vec<_> = run
        .all_calls()
        .iter()
        .map(|c| {
            (
                c["address"].as_str().unwrap().to_string(),
                c["port"].as_u64().unwrap(),
                c["transport"].as_str().unwrap().to_string(),
                c["syscall"].as_str().unwrap().to_string(),
                c["verdict"].as_str().unwrap().to_string(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn row(
    address: &str,
    transport: &str,
    syscall: &str,
    verdict: &str,
    count: u64,
) -> (String, u64, String, String, String, u64) {
    (
        address.into(),
        9,
        transport.into(),
        syscall.into(),
        verdict.into(),
        count,
    )
}

#[test]
fn short_ipv6_addresses_and_unspec_sends_are_calls_and_overlong_ones_are_not() {
    for engine in ["preload", "seccomp", "auto"] {
        let run = run_in(
            &format!("addr-edge-{engine}"),
            &repo(),
            &["--engine", engine, "--deny", "9"],
            &[&fx("addr_edge"), "9"],
        );
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        let out = run.stdout();
        // The overlong address is the kernel's to refuse, under every engine.
        assert!(
            out.contains("addr_edge connect129: ret=-1 errno=EINVAL"),
            "{engine}: {out}"
        );
        let mut want = vec![row("::1", "tcp", "connect", "denied", 1)];
        if engine != "preload" {
            // sendto is the seccomp engine's alone.
            want.push(row("127.0.0.1", "udp", "sendto", "denied", 1));
            want.push(row("::1", "udp", "sendto", "denied", 1));
            assert!(
                out.contains("addr_edge sendto24: ret=-1 errno=ECONNREFUSED")
                    && out.contains("addr_edge unspec: ret=-1 errno=ECONNREFUSED"),
                "{engine}: {out}"
            );
        }
        want.sort();
        assert_eq!(rows(&run), want, "{engine}");
    }
}

/// The decoder against the running kernel: every combination the `addr_matrix` fixture tries
/// (TCP and UDP over IPv4 and IPv6; connect, sendto, sendmsg, Fast Open; five families; lengths
/// from -1 to 200) is a destination to nettrap exactly when the kernel acted on it.
#[test]
fn the_decoder_agrees_with_the_kernel() {
    let out = isolated(&[&fx("addr_matrix"), "9"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut disagree = Vec::new();
    let mut cases = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let [sock, call, len, hex, verdict] = f[..] else {
            panic!("bad line: {line}");
        };
        let s: Vec<i32> = sock.split(',').map(|v| v.parse().unwrap()).collect();
        let sock = Socket {
            domain: s[0],
            ty: s[1],
            protocol: s[2],
        };
        let len: i32 = len.parse().unwrap();
        let mut bytes = vec![0u8; 256];
        for (i, b) in bytes.iter_mut().take(hex.len() / 2).enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        let send = Op::Send { fastopen: false };
        let with = |op, n: Option<usize>| match n {
            None => Address::Rejected,
            Some(n) => addr::decode(op, Some(sock), Some(&bytes[..n])),
        };
        let got = match call {
            "connect" => with(Op::Connect, addr::arg_len(len as u32 as u64)),
            "sendto" => with(send, addr::arg_len(len as u32 as u64)),
            "tfo" => with(
                Op::Send { fastopen: true },
                addr::arg_len(len as u32 as u64),
            ),
            "sendto-null" => addr::decode(send, Some(sock), None),
            "sendmsg" | "sendmsg-null" => {
                let name = if call == "sendmsg" { 0x1000 } else { 0 };
                match addr::msg_name_len(name, len as u32) {
                    Some(0) => addr::decode(send, Some(sock), None),
                    n => with(send, n),
                }
            }
            _ => panic!("bad call: {line}"),
        };
        let got = match got {
            Address::Inet(_) => "inet",
            Address::NotInet => "notinet",
            Address::Rejected => "rejected",
        };
        cases += 1;
        if got != verdict {
            disagree.push(format!("{line}: nettrap says {got}"));
        }
    }
    assert!(cases > 1000, "only {cases} cases:\n{text}");
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
}

#[test]
fn each_udp_socket_first_datagram_to_a_destination_is_a_call() {
    for engine in ["seccomp", "auto"] {
        let run = run_in(
            &format!("udp-reuse-{engine}"),
            &repo(),
            &["--engine", engine],
            &[&fx("udp_reuse"), "9"],
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        let out = run.stdout();
        assert!(
            out.contains("udp_reuse: fds 3 3, sent 4"),
            "{engine}: {out}"
        );
        // Two sockets (the second reusing the first one's descriptor number), two datagrams
        // each: one call per socket.
        assert_eq!(
            rows(&run),
            vec![row("127.0.0.1", "udp", "sendto", "recorded", 2)],
            "{engine}"
        );
    }
}

/// The shim decides a stream socket's connect from the address alone (no system call for the
/// socket's domain) and voids the record when the kernel then refuses the address: across the
/// whole matrix, under `preload`, the program sees exactly what it sees without nettrap (record
/// mode) or a denial only where the kernel would have taken the address (deny mode), and the
/// report holds one connect per case the kernel took.
#[test]
fn the_shim_records_and_denies_exactly_the_connects_the_kernel_takes() {
    let plain = isolated(&[&fx("addr_matrix"), "9"]).output().unwrap();
    assert!(plain.status.success());
    let plain = String::from_utf8(plain.stdout).unwrap();
    let connects = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.split(' ').nth(1) == Some("connect"))
            .map(String::from)
            .collect()
    };
    let want = connects(&plain);
    let taken = want.iter().filter(|l| l.ends_with(" inet")).count() as u64;
    assert!(taken > 10, "{plain}");
    let m = fx("addr_matrix");
    for (mode, flags) in [("record", vec![]), ("deny", vec!["--deny", "9"])] {
        let mut f = vec!["--engine", "preload"];
        f.extend(flags.iter().copied());
        let run = run_in(
            &format!("addr-shim-{mode}"),
            &std::env::temp_dir(),
            &f,
            &[&m, "9"],
        );
        let got = connects(&run.stdout());
        assert_eq!(got.len(), want.len(), "{mode}");
        for (w, g) in want.iter().zip(&got) {
            // Denied: a refused connect (the policy's errno) where the kernel took the address;
            // anything the kernel refuses keeps the kernel's answer.
            let expect_same = mode == "record" || !w.ends_with(" inet");
            if expect_same {
                assert_eq!(g, w, "{mode}");
            }
        }
        let recorded: u64 = run
            .all_calls()
            .iter()
            .filter(|c| c["syscall"] == "connect")
            .map(|c| c["count"].as_u64().unwrap())
            .sum();
        assert_eq!(recorded, taken, "{mode}: {}", run.stderr());
        assert_eq!(run.report["lost"]["torn"], 0, "{mode}");
    }
}

/// The shim knows a stream socket's type from the `socket()` that made it (no `getsockopt` on
/// the connect: shim/src/fds.rs). A descriptor number that held such a socket and then holds
/// something else, made where the shim cannot see it (a raw system call, a vfork child's own
/// table), is never taken for that stream socket: each function that frees or replaces a number
/// (close, close_range, closefrom, dup2, dup3, socket of another type) or hands one out (dup,
/// fcntl's F_DUPFD) forgets it, a vfork
/// child's socket() teaches nothing, and a number that holds no socket at all gives the program
/// the kernel's ENOTSOCK and the report no call. Each case's connect takes the fast path (its
/// destination's decision cached by a first connect).
#[test]
fn a_descriptor_number_reused_for_another_socket_type_is_never_taken_for_a_stream_socket() {
    let cases = [
        "close",
        "close_range",
        "closefrom",
        "dup2",
        "dup3",
        "socket",
        "vfork",
        "notsock",
        "clone_files",
        "unshare",
        "unshare_range",
        "closefrom_neg",
        "dup",
        "fcntl",
        "fcntl_cloexec",
        "fcntl_alias",
    ];
    for engine in ["preload", "auto"] {
        for case in cases {
            let run = run_in(
                &format!("fd-memo-{engine}-{case}"),
                &repo(),
                &["--engine", engine],
                &[&fx("fd_memo"), case, "9"],
            );
            assert_eq!(run.code(), 0, "{engine} {case}: {}", run.stderr());
            let out = run.stdout();
            let mut want = vec![row("127.0.0.1", "tcp", "connect", "recorded", 1)];
            if case == "closefrom_neg" {
                // Nothing printed (standard output closed): the exit status said it.
                want.push(row("127.0.0.1", "udp", "connect", "recorded", 1));
            } else if case == "notsock" {
                let enotsock = format!("connect -1 errno {}", libc::ENOTSOCK);
                assert!(out.contains(&enotsock), "{engine} {case}: {out}");
            } else {
                assert!(out.contains("connect 0 errno 0"), "{engine} {case}: {out}");
                want.push(row("127.0.0.1", "udp", "connect", "recorded", 1));
            }
            assert_eq!(rows(&run), want, "{engine} {case}: {out}");
        }
    }
}

/// A library loaded after the shim that wraps `close`, `dup2` and `clone` by glibc's other names
/// for them (`__close`, `__dup2`, `__clone`), which the shim interposes too: each is handed to
/// the next object's function of the same name, never back to the library's wrapper (which
/// recursed until the stack ran out).
#[test]
fn a_library_wrapping_close_by_its_other_name_is_not_called_back() {
    // A wrapper called back recurses, or loops where the calls compile to jumps: `timeout`
    // ends that.
    let plain = isolated(&["timeout", "20", &fx("alias_close")])
        .output()
        .unwrap();
    let want = "alias_close: close 0 dup2 7 clone ok wrapped 3\n";
    assert_eq!(String::from_utf8_lossy(&plain.stdout), want);
    for engine in ["preload", "auto"] {
        let run = run_in(
            &format!("alias-close-{engine}"),
            &repo(),
            &["--engine", engine],
            &["timeout", "20", &fx("alias_close")],
        );
        assert_eq!(run.code(), 0, "{engine}: {}", run.stderr());
        assert_eq!(run.stdout(), want, "{engine}");
    }
}
