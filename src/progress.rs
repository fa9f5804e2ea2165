//! Live progress while the command runs, on the terminal's bottom row and in its title, never
//! in its scrollback. The command shares the terminal and writes to it at any time, so nettrap
//! keeps the bottom row for itself, as apt does: at the start it limits scrolling to the rows
//! above (`ESC [ 1 ; rows-1 r`, DECSTBM), so the command's output scrolls there and never
//! reaches the bottom row; each update is one `write` that saves the command's cursor, writes
//! the bottom row and restores the cursor (`ESC 7 … ESC 8`), so the command's text, even a line
//! it is half-way through, goes on where it was. At the end the whole screen scrolls again and
//! the row is cleared. The size is read again at every update (a resized terminal gets its new
//! last row). The title (`ESC ] 2 ; text BEL`) carries the same text, pushed at the start and
//! popped at the end. Updates come at most every 500 ms.
//!
//! Content: `nettrap: 12 tests done · redis 45 · es 3 · denied: connect to api.x:443 in t`.
//! Tests done are the timeline's `end` events, read from where the last pass stopped; calls
//! are the event log's offending records (recorded or denied), decoded from where the last pass
//! stopped (`event::decode_settled`), so each pass costs what was written since the last one.

use crate::cli::Progress as Mode;
use nettrap_core::event::{self, Record, Syscall};
use nettrap_core::policy::{Action, CompiledPolicy};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(500);
/// Most slots decoded in one pass (8 MiB).
const MAX_PASS: u64 = 1 << 16;
/// An incomplete stretch this long is a writer that died mid-record, not one still writing.
const STUCK: u64 = 4096;
/// Longest title written, in characters.
const MAX_TITLE: usize = 200;

pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// Is live progress wanted: `always`, or `auto` with stderr a terminal that is not dumb
/// and no `--quiet`.
pub fn wanted(mode: Mode, quiet: bool) -> bool {
    match mode {
        Mode::Never => false,
        Mode::Always => true,
        Mode::Auto => {
            // SAFETY: isatty on a descriptor number; no memory involved.
            !quiet
                && unsafe { libc::isatty(2) } == 1
                && std::env::var_os("TERM").is_some_and(|t| t != "dumb" && !t.is_empty())
        }
    }
}

/// Starts the progress thread for the run in `dir` (see [`wanted`]).
pub fn start(dir: &Path, policy: &CompiledPolicy) -> Progress {
    let categories: Vec<String> = policy
        .categories()
        .iter()
        .map(|c| String::from_utf8_lossy(c.name()).into_owned())
        .collect();
    let mut state = State {
        dir: dir.to_path_buf(),
        categories,
        ..State::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        // Save the title where the terminal can (xterm's title stack).
        write_err(b"\x1b[22;2t");
        let mut bottom = Bottom::open();
        let mut shown = String::new();
        loop {
            let last = flag.load(Ordering::Relaxed);
            state.pass();
            let line = state.line();
            if line != shown {
                write_err(format!("\x1b]2;{line}\x07").as_bytes());
                if let Some(b) = &mut bottom {
                    b.show(&line);
                }
                shown = line;
            }
            if last {
                // The final count shown, then cleared, and restored where the terminal saved it.
                write_err(b"\x1b]2;\x07\x1b[23;2t");
                if let Some(b) = bottom {
                    b.close();
                }
                return;
            }
            // Woken at once by `stop` (unpark); a wake-up with time left waits the rest.
            let next = Instant::now() + EVERY;
            while !flag.load(Ordering::Relaxed) {
                let Some(left) = next.checked_duration_since(Instant::now()) else {
                    break;
                };
                std::thread::park_timeout(left);
            }
        }
    });
    Progress { stop, thread }
}

impl Progress {
    /// Ends the progress line and gives the terminal its title back.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// The terminal's size on stderr: (rows, columns).
fn term_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass.
    let r = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some((ws.ws_row, ws.ws_col))
}

/// The bottom row, kept for the progress line (see the module docs).
struct Bottom {
    rows: u16,
    cols: u16,
}

impl Bottom {
    /// Keeps the bottom row of a terminal large enough for it (4 rows, 20 columns): makes room
    /// for it (a new line, taken back), then limits scrolling to the rows above.
    fn open() -> Option<Bottom> {
        let (rows, cols) = term_size().filter(|&(r, c)| r >= 4 && c >= 20)?;
        write_err(format!("\n\x1b7\x1b[1;{}r\x1b8\x1b[1A", rows - 1).as_bytes());
        Some(Bottom { rows, cols })
    }

    /// Writes `text` on the bottom row, in one write that leaves the command's cursor where
    /// it was; first follows a resized terminal.
    fn show(&mut self, text: &str) {
        let mut out = String::new();
        if let Some((rows, cols)) = term_size().filter(|&(r, c)| r >= 4 && c >= 20)
            && (rows, cols) != (self.rows, self.cols)
        {
            (self.rows, self.cols) = (rows, cols);
            out.push_str(&format!("\x1b7\x1b[1;{}r\x1b8", rows - 1));
        }
        // One column short of the width: no autowrap on the last row.
        let text: String = text.chars().take(self.cols as usize - 1).collect();
        out.push_str(&format!("\x1b7\x1b[{};1H\x1b[2K{text}\x1b8", self.rows));
        write_err(out.as_bytes());
    }

    /// The whole screen scrolls again; the bottom row is cleared.
    fn close(self) {
        write_err(format!("\x1b7\x1b[r\x1b[{};1H\x1b[2K\x1b8", self.rows).as_bytes());
    }
}

fn write_err(bytes: &[u8]) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(bytes);
    let _ = e.flush();
}

#[derive(Default)]
struct State {
    dir: PathBuf,
    categories: Vec<String>,
    timeline: Option<File>,
    /// Bytes of the timeline read, and a line not yet complete.
    timeline_at: u64,
    partial: Vec<u8>,
    tests_done: u64,
    log: Option<File>,
    /// First slot not yet settled (records before it are counted in `calls`).
    slot: u64,
    calls: HashMap<u16, u64>,
    /// Counts of the records after the settled part, as last decoded.
    unsettled: HashMap<u16, u64>,
    denied: Option<String>,
}

#[derive(serde::Deserialize)]
struct Ev<'a> {
    #[serde(borrow)]
    ev: std::borrow::Cow<'a, str>,
}

impl State {
    fn pass(&mut self) {
        self.read_timeline();
        self.read_log();
    }

    fn read_timeline(&mut self) {
        if self.timeline.is_none() {
            self.timeline = File::open(self.dir.join(crate::attribution::TIMELINE)).ok();
        }
        let Some(f) = &self.timeline else { return };
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match f.read_at(&mut buf, self.timeline_at) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.timeline_at += n as u64;
            self.partial.extend_from_slice(&buf[..n]);
            let Some(last) = self.partial.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            for line in self.partial[..last].split(|b| *b == b'\n') {
                // Cheap pre-check before parsing: only `end` events count.
                if line.windows(5).any(|w| w == b"\"end\"")
                    && serde_json::from_slice::<Ev>(line).is_ok_and(|e| e.ev == "end")
                {
                    self.tests_done += 1;
                }
            }
            self.partial.drain(..=last);
        }
    }

    fn read_log(&mut self) {
        if self.log.is_none() {
            self.log = File::open(self.dir.join("events.log")).ok();
        }
        let Some(f) = &self.log else { return };
        let mut header = vec![0u8; event::HEADER_LEN];
        if f.read_exact_at(&mut header, 0).is_err() {
            return;
        }
        let Some(used) = event::used_len(&header) else {
            return;
        };
        let end = ((used - event::HEADER_LEN) / event::SLOT_LEN) as u64;
        if end <= self.slot {
            return;
        }
        let to = end.min(self.slot + MAX_PASS);
        let mut buf = header;
        buf.resize(
            event::HEADER_LEN + ((to - self.slot) as usize) * event::SLOT_LEN,
            0,
        );
        let at = event::HEADER_LEN as u64 + self.slot * event::SLOT_LEN as u64;
        if f.read_exact_at(&mut buf[event::HEADER_LEN..], at).is_err() {
            return;
        }
        let Ok((decoded, mut settled)) = event::decode_settled(&buf) else {
            return;
        };
        if (to - self.slot) - settled.slots >= STUCK {
            settled.records = decoded.records.len();
            settled.slots = to - self.slot;
        }
        self.unsettled.clear();
        for (i, r) in decoded.records.iter().enumerate() {
            let Record::Call(c) = r else { continue };
            let call = c.call;
            if matches!(call.syscall, Syscall::Listen | Syscall::IoUringSetup)
                || call.action == Action::Allow
            {
                continue;
            }
            let counts = if i < settled.records {
                &mut self.calls
            } else {
                &mut self.unsettled
            };
            *counts.entry(call.category).or_default() += 1;
            if call.action == Action::Deny {
                let dest = if c.host.is_empty() {
                    let mut s = String::new();
                    let _ = call.dest.write_ip(&mut s);
                    s
                } else {
                    String::from_utf8_lossy(&c.host).into_owned()
                };
                let mut d = format!("{} to {dest}:{}", call.syscall.name(), call.dest.port);
                if let Some(t) = c.test.as_deref().filter(|t| !t.is_empty()) {
                    d.push_str(" in ");
                    d.push_str(&String::from_utf8_lossy(t));
                }
                self.denied = Some(d);
            }
        }
        self.slot += settled.slots;
    }

    fn line(&self) -> String {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for (cat, n) in self.calls.iter().chain(&self.unsettled) {
            let name = self
                .categories
                .get(*cat as usize)
                .map_or("other", String::as_str);
            *counts.entry(name).or_default() += n;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut line = format!(
            "nettrap: {} {} done",
            self.tests_done,
            crate::report::plural(self.tests_done, "test", "tests")
        );
        for (name, n) in counts.iter().take(4) {
            line.push_str(&format!(" · {name} {n}"));
        }
        if counts.len() > 4 {
            line.push_str(" · …");
        }
        if let Some(d) = &self.denied {
            line.push_str(&format!(" · denied: {d}"));
        }
        clean(&line)
    }
}

/// The title as the terminal may show it: no control characters (a host name or test id
/// holding ESC or BEL would end the sequence early), at most [`MAX_TITLE`] characters.
fn clean(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_TITLE)
        .collect();
    if s.chars().count() > MAX_TITLE {
        out.pop();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_hold_no_control_characters() {
        assert_eq!(clean("a\x1b]2;x\x07b\u{9b}c"), "a?]2;x?b?c");
        let long = "x".repeat(500);
        assert_eq!(clean(&long).chars().count(), MAX_TITLE);
    }
}
