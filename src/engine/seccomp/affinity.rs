//! Keeps the supervisor thread on one CPU while one thread traps call after call (a connect
//! storm), so that the caller and the supervisor stop trading CPUs on every call.
//!
//! With `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` the answer wakes the caller on the supervisor's
//! CPU, and the notification is meant to wake the supervisor on the caller's. Measured on Linux
//! 6.18 (2 CPUs, the caller, the supervisor and the caller's accept thread runnable), the second
//! half often does not hold: the scheduler wakes the supervisor on the other CPU, the answer
//! pulls the caller after it, the caller's next wake-up of its peer goes back the other way,
//! and the three trade CPUs on nearly every call (about 10,000 migrations per 20,000 connects,
//! a third slower). A supervisor that may run on one CPU only is woken there: the answer then
//! keeps the caller beside it, and only the caller's peers move.
//!
//! Only the supervisor thread is pinned, never the traced program (the answer's wake-up moves
//! the caller to the supervisor's CPU with or without this). It pins itself where it runs once
//! the same thread has trapped again [`STREAK`] times in a row, and lets the scheduler place it again
//! as soon as another thread traps, and every [`REVIEW`] calls (so a caller the load balancer
//! moved for good is followed): one `sched_setaffinity` each way, nothing per call.

use nix::sched::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity};
use nix::unistd::Pid;

/// Calls in a row from one thread, after its first, before the supervisor stays where it is.
const STREAK: u32 = 4;
/// Calls after which a pinned supervisor lets the scheduler place it again.
const REVIEW: u32 = 4096;

pub struct Follow {
    /// The thread's own CPU set when it started (`None`: unknown, so never pinned).
    all: Option<CpuSet>,
    last_tid: u32,
    streak: u32,
    pinned: bool,
}

impl Follow {
    pub fn new() -> Follow {
        Follow {
            all: sched_getaffinity(Pid::from_raw(0)).ok(),
            last_tid: 0,
            streak: 0,
            pinned: false,
        }
    }

    /// A notification from thread `tid`, before it is answered.
    pub fn notified(&mut self, tid: u32) {
        if tid == self.last_tid {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.last_tid = tid;
            self.streak = 0;
        }
        if self.pinned && (self.streak == 0 || self.streak >= REVIEW) {
            self.release();
            self.streak = 0;
        } else if !self.pinned && self.streak >= STREAK {
            self.pin();
        }
    }

    fn pin(&mut self) {
        let Some(all) = &self.all else { return };
        let Ok(cpu) = sched_getcpu() else { return };
        if !all.is_set(cpu).unwrap_or(false) {
            return;
        }
        let mut one = CpuSet::new();
        if one.set(cpu).is_ok() && sched_setaffinity(Pid::from_raw(0), &one).is_ok() {
            self.pinned = true;
        }
    }

    fn release(&mut self) {
        if let Some(all) = &self.all {
            let _ = sched_setaffinity(Pid::from_raw(0), all);
        }
        self.pinned = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus() -> usize {
        let set = sched_getaffinity(Pid::from_raw(0)).unwrap();
        (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap())
            .count()
    }

    #[test]
    fn pins_during_a_streak_and_lets_go_when_another_thread_traps() {
        let before = cpus();
        let mut f = Follow::new();
        for _ in 0..STREAK {
            f.notified(7);
        }
        assert!(!f.pinned, "not before {STREAK} calls in a row");
        f.notified(7);
        assert_eq!(f.pinned, f.all.is_some());
        if f.pinned {
            assert_eq!(cpus(), 1);
        }
        f.notified(8);
        assert!(!f.pinned);
        assert_eq!(cpus(), before);
    }
}
