//! The shim's connect hot path makes no system call beyond the ones it documents (issue 10):
//! `connect_loop` (N loopback connects from a stack sockaddr, accepted by a second thread) runs
//! under `strace -c`, with and without the shim (its main thread only, which makes every
//! connect: the accepting thread's calls depend on timing), and the system calls the shim adds per
//! connect are exactly `SHIM_SYSCALLS_PER_CONNECT` (shim/src/lib.rs says why each is needed).
//! Counts, not times: nothing here depends on the machine's speed.

use crate::common::*;
use std::collections::BTreeMap;

/// The shim's documented system calls per `connect` on a TCP socket (see shim/src/lib.rs).
const SHIM_SYSCALLS_PER_CONNECT: [(&str, u64); 1] = [("getsockopt", 1)];

const N: u64 = 300;

/// `strace -c` of `connect_loop N 0` (the main thread), under nettrap (preload) or not: calls per system call.
fn counts(under_nettrap: bool) -> BTreeMap<String, u64> {
    let dir = scratch(&format!("hot-path-{under_nettrap}"));
    let out_file = dir.join("strace.txt");
    let out_s = out_file.to_str().unwrap().to_string();
    let loop_bin = c_fixture("connect_loop").to_str().unwrap().to_string();
    let n = N.to_string();
    let strace = ["strace", "-c", "-o", &out_s, &loop_bin, &n, "0"];
    let status = if under_nettrap {
        let run = run_in("hot-path-run", &dir, &["--engine", "preload"], &strace);
        assert_eq!(run.code(), 0, "{}", run.stderr());
        assert_eq!(run.total_calls(), N, "{}", run.stderr());
        true
    } else {
        isolated(&strace).status().unwrap().success()
    };
    assert!(status);
    let text = std::fs::read_to_string(&out_file).unwrap();
    // `% time seconds usecs/call calls [errors] syscall`
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.last()?;
            let calls: u64 = f.get(3)?.parse().ok()?;
            (name != "total").then(|| (name.to_string(), calls))
        })
        .collect()
}

#[test]
fn the_shim_adds_only_its_documented_system_calls_per_connect() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        // Not on every fresh machine; `.ci/run` installs it, so CI always runs this.
        eprintln!(
            "the_shim_adds_only_its_documented_system_calls_per_connect: SKIPPED, strace is not installed"
        );
        return;
    }
    let plain = counts(false);
    let want: Vec<(String, u64)> = SHIM_SYSCALLS_PER_CONNECT
        .iter()
        .map(|(s, n)| (s.to_string(), *n))
        .collect();
    // The shim reads the sockaddr itself when it lies in the caller's part of the stack (up to
    // the end of the page the caller's return address is on), else through the kernel
    // (`process_vm_readv`, documented as off the hot path). `connect_loop`'s sockaddr is in
    // its caller's frame, a few dozen bytes up: in the rare exec whose randomised stack offset
    // puts a page boundary in between, every connect of that run takes the kernel's way. A new
    // exec gets a new offset, so a run of the documented path turns up within a few tries.
    let mut tries = Vec::new();
    for _ in 0..4 {
        let shim = counts(true);
        assert_eq!(shim.get("connect"), plain.get("connect"));
        // What the shim adds, per connect, for every system call it adds at least N/2 times of
        // (the one-off calls of its first call and of nettrap's start are below that).
        let mut added: Vec<(String, u64)> = shim
            .iter()
            .filter_map(|(name, &n)| {
                let extra = n.saturating_sub(plain.get(name).copied().unwrap_or(0));
                (extra >= N / 2).then(|| (name.clone(), (extra + N / 2) / N))
            })
            .collect();
        added.sort();
        if added == want {
            return;
        }
        let off_path = added
            .iter()
            .filter(|(name, _)| name != "process_vm_readv")
            .cloned()
            .collect::<Vec<_>>();
        assert_eq!(off_path, want, "plain {plain:?}\nshim {shim:?}");
        tries.push(shim);
    }
    panic!("every run read the sockaddr through the kernel: plain {plain:?}\nshim {tries:?}");
}
