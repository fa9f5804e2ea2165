//! `NETTRAP_TIMINGS`: how long `nettrap run`'s report step takes, and the process's peak memory.
//!
//! `NETTRAP_TIMINGS=1`: after writing its outputs, `nettrap run` prints one line on stderr,
//! `nettrap: report step: X ms, peak RSS Y MB`, where X is the wall time from the command's end
//! (the supervise loop returned) to the outputs written, and Y the process's peak resident set
//! (`VmHWM`). `NETTRAP_TIMINGS=2` adds one line per phase (decode, build, render, write...) with
//! its time and the resident set after it (`VmRSS`).
//! Unset, empty or `0`: nothing is measured or printed. `benches/overhead.sh` reads the line.

use std::time::{Duration, Instant};

pub struct Timings {
    level: u8,
    start: Instant,
    last: Instant,
    phases: Vec<(&'static str, Duration, Option<u64>)>,
}

impl Timings {
    /// Starts the clock (at the command's end); the level comes from `NETTRAP_TIMINGS`.
    pub fn start() -> Timings {
        let level = std::env::var("NETTRAP_TIMINGS")
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(0);
        let now = Instant::now();
        Timings {
            level,
            start: now,
            last: now,
            phases: Vec::new(),
        }
    }

    /// Ends a phase (what ran since the previous mark).
    pub fn mark(&mut self, phase: &'static str) {
        if self.level == 0 {
            return;
        }
        let now = Instant::now();
        self.phases
            .push((phase, now - self.last, status_kb("VmRSS:")));
        self.last = now;
    }

    /// The lines to print (none when not asked for): the total up to the last mark, and at level
    /// 2 the phases.
    pub fn lines(&self) -> Vec<String> {
        if self.level == 0 {
            return Vec::new();
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let rss = match status_kb("VmHWM:") {
            Some(kb) => format!("{:.1} MB", kb as f64 / 1024.0),
            None => "unknown".into(),
        };
        let mut out = vec![format!(
            "nettrap: report step: {:.0} ms, peak RSS {rss}",
            ms(self.last - self.start)
        )];
        if self.level >= 2 {
            for (name, d, rss) in &self.phases {
                let rss = rss.map_or("unknown".into(), |kb| {
                    format!("{:.1} MB", kb as f64 / 1024.0)
                });
                out.push(format!(
                    "nettrap: report step: {name}: {:.1} ms, RSS after {rss}",
                    ms(*d)
                ));
            }
        }
        out
    }
}

/// A field of /proc/self/status in kB: `VmHWM:` (the peak resident set), `VmRSS:` (now).
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
