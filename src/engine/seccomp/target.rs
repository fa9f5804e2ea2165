//! Who a trapped system call belongs to: the process's id, executable and command line, and the
//! test it runs for, read from `/proc` (the supervisor cannot read a process's live environment,
//! only the one it was started with).
//!
//! Attribution, in order: `NETTRAP_TEST`, then `PYTEST_CURRENT_TEST` (as the shim reads them),
//! then nextest's `NEXTEST_TEST_NAME`, then, for nextest's process-per-test runs without it, the
//! test name on the command line (`<binary> <test> --exact`). A process started during a test
//! inherits that test's variables, so subprocesses of Python tests are attributed too.
//!
//! ## Knowing a task again without reading `/proc` per call
//!
//! What `/proc` says about a task is read once per exec image of it and cached by thread id.
//! A cached entry is still right for a notification from that thread id when (a) it is the same
//! task (thread ids are reused: `pid_max` is 32768 on small machines) and (b) that task has not
//! exec'd since. (a): the entry holds a pidfd of the thread itself (`PIDFD_THREAD`, Linux 6.9+),
//! through which the caller's socket is borrowed; once the task is gone that fails with ESRCH,
//! and the entry is read afresh ([`Targets::forget`]). (b): the entry keeps the 16 random bytes
//! the kernel put on the image's stack at exec (`AT_RANDOM` in the auxiliary vector) and their
//! address; they are read again with each call, in the same `process_vm_readv` as the call's
//! address. A new image has new random bytes (or nothing mapped at that address), whatever
//! the address-space randomisation; a forked child has its parent's, but not its thread id.
//! Where either is missing (an older kernel) the entry falls back to re-reading
//! `/proc/TID/stat` on every call: the task's start time and where its environment lives.

use nettrap_core::event::{Log, NotWritten, Process, Source};
use nettrap_core::test_id::{self, Phase};
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// One process (or thread) as the supervisor knows it.
#[derive(Debug)]
pub struct Target {
    pub tgid: u32,
    pub test: Option<(Vec<u8>, Phase)>,
    /// A pidfd of the process, kept to borrow its descriptors without reopening it per call.
    pub pidfd: Option<std::os::fd::OwnedFd>,
    /// The process's parent when the supervisor first met it.
    pub ppid: u32,
    /// When the process started (field 22 of `/proc/<tgid>/stat`, clock ticks since boot): with
    /// `tgid`, identifies the process even once its pid is reused.
    pub start_time: u64,
    /// The `go test` adapter reading this process's test markers, from `NETTRAP_GO_SYNC` (see
    /// `gosync`).
    pub go_sync: Option<super::gosync::Adapter>,
    /// Whether nettrap's shim is loaded in the process (read from its maps when first asked).
    shim: std::sync::OnceLock<bool>,
}

impl Target {
    /// Is nettrap's shim loaded in this process (so its resolver entry points are interposed)?
    /// Read once per exec image from `/proc/<tgid>/maps`.
    pub fn has_shim(&self) -> bool {
        *self.shim.get_or_init(|| {
            let maps = std::fs::read(format!("/proc/{}/maps", self.tgid)).unwrap_or_default();
            let file = crate::engine::preload::SHIM_FILE.as_bytes();
            maps.split(|&b| b == b'\n').any(|line| {
                line.strip_suffix(file)
                    .is_some_and(|rest| rest.ends_with(b"/"))
            })
        })
    }
}

/// Identifies one exec image of one task (the fallback check): the task's start time and where
/// its environment lives (a new exec gets a new one).
#[derive(PartialEq, Eq, Clone, Copy)]
struct Key {
    start_time: u64,
    env_start: u64,
}

/// How a cached entry is checked against a new notification (see the module docs).
enum Check {
    /// The thread's own pidfd (liveness, through the borrow) and its image's `AT_RANDOM` bytes.
    Canary {
        thread: Arc<OwnedFd>,
        at: u64,
        bytes: [u8; CANARY_LEN],
    },
    /// `/proc/TID/stat`, kept open: re-reading it is how an exec is noticed, and pread on an
    /// open file costs a fraction of opening it again.
    Stat { key: Key, stat: std::fs::File },
}

struct Entry {
    check: Check,
    target: Arc<Target>,
}

/// How many random bytes the kernel puts at `AT_RANDOM`.
pub const CANARY_LEN: usize = 16;
const AT_RANDOM: u64 = 25;

/// The caller of a notification, as the cache knows it.
pub struct Caller {
    pub target: Arc<Target>,
    /// A pidfd of the calling thread itself, to borrow its descriptors through: a borrow that
    /// fails with ESRCH means the entry was stale (the thread id now names another task).
    /// `None`: borrow through the process's pidfd (`target.pidfd`).
    pub thread: Option<Arc<OwnedFd>>,
    /// Taken from the cache (so possibly stale until a borrow through `thread` succeeded).
    pub cached: bool,
}

impl Caller {
    /// The descriptor to borrow the caller's file descriptors through.
    pub fn pidfd(&self) -> Option<&OwnedFd> {
        self.thread.as_deref().or(self.target.pidfd.as_ref())
    }
}

#[derive(Default)]
pub struct Targets {
    /// Keyed by thread id with the fast hasher (SipHash cost more than the rest of a hit).
    by_tid: crate::fast_hash::FastMap<u32, Entry>,
}

fn read(path: &str) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// Field `n` of `/proc/TID/stat` (numbered from 1, as in proc(5)), as a number.
fn stat_field<T: std::str::FromStr>(stat: &[u8], n: usize) -> Option<T> {
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`,
    // after which `state` (field 3) comes first.
    let after = stat.iter().rposition(|&b| b == b')')?;
    let field = stat
        .get(after + 2..)?
        .split(|&b| b == b' ')
        .nth(n.checked_sub(3)?)?;
    std::str::from_utf8(field).ok()?.trim().parse().ok()
}

/// Start time and environment address (fields 22 and 50 of `/proc/TID/stat`).
fn parse_key(stat: &[u8]) -> Option<Key> {
    Some(Key {
        start_time: stat_field(stat, 22)?,
        env_start: stat_field(stat, 50).unwrap_or(0),
    })
}

fn pread_key(f: &std::fs::File) -> Option<Key> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 1024];
    let n = f.read_at(&mut buf, 0).ok()?;
    parse_key(&buf[..n])
}

fn tgid(tid: u32) -> Option<u32> {
    let status = String::from_utf8(read(&format!("/proc/{tid}/status"))?).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The test, per the module docs, from the process's starting environment and command line.
pub fn test_from(environ: &[u8], cmdline: &[u8]) -> Option<(Vec<u8>, Phase)> {
    let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
    let get = |name: &[u8]| {
        vars.iter().find_map(|v| {
            v.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(b"="))
        })
    };
    for var in test_id::TEST_VARS {
        if let Some(v) = get(var.to_bytes()) {
            let (id, phase) = test_id::split(v);
            return Some((id.to_vec(), phase));
        }
    }
    if let Some(name) = get(b"NEXTEST_TEST_NAME") {
        return Some((name.to_vec(), Phase::None));
    }
    if get(b"NEXTEST").is_some() {
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.contains(&&b"--exact"[..])
            && let Some(name) = args.get(1).filter(|a| !a.starts_with(b"-"))
        {
            return Some((name.to_vec(), Phase::None));
        }
    }
    None
}

/// Where the kernel put the image's random bytes: `AT_RANDOM` in `/proc/TID/auxv`, whose
/// entries are pairs of words of the process's own width (read as 64-bit first; a 32-bit
/// process's vector does not parse so, and is read as 32-bit).
fn at_random(tid: u32) -> Option<u64> {
    let auxv = read(&format!("/proc/{tid}/auxv"))?;
    let find = |width: usize| {
        let word = |c: &[u8]| c.iter().rev().fold(0u64, |v, &b| v << 8 | b as u64);
        let mut found = None;
        for pair in auxv.chunks_exact(2 * width) {
            let (key, val) = (word(&pair[..width]), word(&pair[width..]));
            match key {
                0 => return found,
                AT_RANDOM => found = Some(val),
                // Auxiliary vector keys are small: a wider key means the wrong width.
                k if k > 4096 => return None,
                _ => {}
            }
        }
        None
    };
    find(8).or_else(|| find(4)).filter(|&a| a != 0)
}

/// The `AT_RANDOM` bytes at `at` in task `tid`.
fn canary(tid: u32, at: u64) -> Option<[u8; CANARY_LEN]> {
    let b = super::notify::read_mem(tid, at, CANARY_LEN).ok()?;
    b.try_into().ok()
}

/// `pidfd_open` flag for a pidfd of one thread (Linux 6.9+): `O_EXCL`.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

impl Targets {
    /// Where the cached entry of `tid` expects its image's random bytes, so that the caller can
    /// read them along with the call's address (see the module docs).
    pub fn canary_at(&self, tid: u32) -> Option<u64> {
        match self.by_tid.get(&tid)?.check {
            Check::Canary { at, .. } => Some(at),
            Check::Stat { .. } => None,
        }
    }

    /// Drops the entry of `tid`: a borrow through its thread's pidfd found the task gone.
    pub fn forget(&mut self, tid: u32) {
        self.by_tid.remove(&tid);
    }

    /// The caller behind `tid`. `seen` is what the caller read at [`Self::canary_at`] along
    /// with the call's address (`None`: not read; `Some(None)`: unreadable). The first time an
    /// exec image is seen, its process record is appended to the log (as the shim does for its
    /// processes), unless `pending` says the notification is void by then (the thread id may
    /// name another task): then nothing is kept.
    pub fn lookup(
        &mut self,
        tid: u32,
        seen: Option<Option<[u8; CANARY_LEN]>>,
        log: &Log,
        now_ns: u64,
        pending: &dyn Fn() -> bool,
    ) -> Caller {
        if let Some(e) = self.by_tid.get(&tid) {
            match &e.check {
                Check::Canary { thread, at, bytes } => {
                    let seen = seen.unwrap_or_else(|| canary(tid, *at));
                    if seen.as_ref() == Some(bytes) {
                        return Caller {
                            target: e.target.clone(),
                            thread: Some(thread.clone()),
                            cached: true,
                        };
                    }
                }
                Check::Stat { key, stat } => {
                    if pread_key(stat) == Some(*key) {
                        return Caller {
                            target: e.target.clone(),
                            thread: None,
                            cached: true,
                        };
                    }
                }
            }
        }
        // In this order: the thread's pidfd and its image's random bytes before what /proc
        // says of the image, so that an exec in between leaves an entry that no longer
        // matches, never one that matches with the old image's test.
        let thread = super::notify::pidfd_open_flags(tid, PIDFD_THREAD).ok();
        let canary = thread
            .as_ref()
            .and_then(|_| at_random(tid))
            .and_then(|at| canary(tid, at).map(|b| (at, b)));
        let stat = match canary {
            Some(_) => None,
            None => std::fs::File::open(format!("/proc/{tid}/stat")).ok(),
        };
        let key = stat.as_ref().and_then(pread_key);
        let tgid = tgid(tid).unwrap_or(tid);
        let environ = read(&format!("/proc/{tid}/environ")).unwrap_or_default();
        let cmdline = read(&format!("/proc/{tid}/cmdline")).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{tid}/exe"))
            .map(|p| p.into_os_string().into_encoded_bytes());
        let tgid_stat = read(&format!("/proc/{tgid}/stat")).unwrap_or_default();
        let ppid = stat_field(&tgid_stat, 4).unwrap_or(0);
        let start_time = parse_key(&tgid_stat).map_or(0, |k| k.start_time);
        let pidfd = super::notify::pidfd_open(tgid).ok();
        let thread = thread.map(Arc::new);
        let target = Arc::new(Target {
            tgid,
            test: test_from(&environ, &cmdline),
            pidfd,
            ppid,
            start_time,
            go_sync: super::gosync::from_environ(&environ),
            shim: std::sync::OnceLock::new(),
        });
        let uncached = |thread| Caller {
            target: target.clone(),
            thread,
            cached: false,
        };
        // Still pending: the caller waited all along, so all of the above is its own.
        if !pending() {
            return uncached(None);
        }
        let written = log.append_process(
            &Process {
                pid: tgid,
                ppid,
                time_ns: now_ns,
                source: Source::Seccomp,
            },
            &exe.unwrap_or_default(),
            &cmdline,
        );
        if written == Err(NotWritten::Unmapped) {
            log.count_dropped();
        }
        let check = match (canary, &thread, key, stat) {
            (Some((at, bytes)), Some(thread), _, _) => Check::Canary {
                thread: thread.clone(),
                at,
                bytes,
            },
            (_, _, Some(key), Some(stat)) => Check::Stat { key, stat },
            _ => return uncached(None),
        };
        // Bounded: every entry holds up to two descriptors, and entries of tasks that ended
        // are only dropped here; 256 entries stay far below the usual 1024-descriptor limit.
        if self.by_tid.len() >= 256 {
            self.by_tid.clear();
        }
        let thread = match &check {
            Check::Canary { thread, .. } => Some(thread.clone()),
            Check::Stat { .. } => None,
        };
        self.by_tid.insert(
            tid,
            Entry {
                check,
                target: target.clone(),
            },
        );
        uncached(thread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribution_order() {
        let env =
            b"PATH=/bin\0PYTEST_CURRENT_TEST=t.py::a (call)\0NETTRAP_TEST=pkg/TestA (setup)\0";
        assert_eq!(
            test_from(env, b""),
            Some((b"pkg/TestA".to_vec(), Phase::Setup))
        );
        assert_eq!(
            test_from(&env[10..45], b""),
            Some((b"t.py::a".to_vec(), Phase::Call))
        );
        let nextest = b"NEXTEST=1\0NEXTEST_TEST_NAME=tests::net::dials\0";
        assert_eq!(
            test_from(nextest, b""),
            Some((b"tests::net::dials".to_vec(), Phase::None))
        );
        let cmd = b"/t/deps/it-123\0tests::net::dials\0--nocapture\0--exact\0";
        assert_eq!(
            test_from(b"NEXTEST=1\0", cmd),
            Some((b"tests::net::dials".to_vec(), Phase::None))
        );
        assert_eq!(test_from(b"PATH=/bin\0", cmd), None);
    }
}
