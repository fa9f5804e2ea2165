//! Live progress goes to the terminal's bottom row (kept out of the scroll region) and title
//! (OSC 2), never into the scrollback: on a pseudo-terminal they show tests done and calls per
//! category, and the command's output stays intact (checked on a small terminal emulator that
//! plays back everything the terminal received); with stderr not a terminal, or --quiet, no
//! escape sequence at all.

mod common;
use common::*;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::process::Stdio;

const DEMO: &[&str] = &["python3", "fixtures/unittest-demo/run.py"];

/// Runs the unittest demo under nettrap with stdout and stderr on a pseudo-terminal; returns
/// (exit code, everything the terminal received).
fn on_terminal(name: &str, flags: &[&str]) -> (i32, String) {
    on_sized_terminal(name, flags, None)
}

/// As [`on_terminal`], on a terminal of `size` (rows, columns) when given (else 0 x 0, as a
/// pseudo-terminal starts: too small for the bottom row).
fn on_sized_terminal(name: &str, flags: &[&str], size: Option<(u16, u16)>) -> (i32, String) {
    let (mut master, mut slave) = (0, 0);
    let ws = size.map(|(rows, cols)| libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let ws_ptr = ws
        .as_ref()
        .map_or(std::ptr::null(), |w| w as *const libc::winsize);
    // SAFETY: openpty with valid out-pointers, no name or settings, and a size or none.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            ws_ptr,
        )
    };
    assert_eq!(r, 0, "openpty");
    let dir = scratch(name);
    let report = dir.join("report.json");
    let mut argv = vec![nettrap(), "run", "--report", report.to_str().unwrap()];
    argv.extend_from_slice(flags);
    argv.push("--");
    argv.extend_from_slice(DEMO);
    let mut cmd = isolated(&argv);
    cmd.current_dir(repo())
        .env("TERM", "xterm")
        .stdin(Stdio::null());
    // SAFETY: each is a fresh descriptor of the pseudo-terminal's slave, owned by the Stdio.
    unsafe {
        cmd.stdout(Stdio::from_raw_fd(libc::dup(slave)))
            .stderr(Stdio::from_raw_fd(libc::dup(slave)));
    }
    let mut child = cmd.spawn().unwrap();
    // The Command holds copies of the slave: the master sees the end only when all are closed.
    drop(cmd);
    // SAFETY: our copy of the slave is no longer needed.
    unsafe { libc::close(slave) };
    // SAFETY: the master is ours; the File owns and closes it.
    let mut m = unsafe { std::fs::File::from_raw_fd(master) };
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        // Ends with EIO once every slave descriptor is closed.
        let mut buf = [0u8; 4096];
        while let Ok(n) = m.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let code = child.wait().unwrap().code().unwrap_or(-1);
    let out = reader.join().unwrap();
    (code, String::from_utf8_lossy(&out).replace("\r\n", "\n"))
}

#[test]
fn progress_is_in_the_title_and_the_output_is_intact() {
    let (code, out) = on_terminal("progress-tty", &[]);
    assert_eq!(code, 0, "{out}");
    // The final title: every test done, the calls per category as the summary counts them.
    assert!(
        out.contains(
            "\x1b]2;nettrap: 14 tests done · redis 6 · elasticsearch 3 · external-api 1 · \
             memcached 1\x07"
        ),
        "{out:?}"
    );
    // Saved, cleared and restored at the end.
    assert!(out.contains("\x1b[22;2t"), "{out:?}");
    assert!(restored_before_summary(&out), "{out:?}");
    // The command's lines and nettrap's summary, whole.
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "Ran 14 tests in ",
        "OK",
        "nettrap: 4 categories of external calls",
    ] {
        let line = lines
            .iter()
            .find(|l| l.contains(want))
            .unwrap_or_else(|| panic!("no line with {want:?} in {out:?}"));
        // Title sequences may precede a line (they do not move the cursor), never enter it.
        let (before, rest) = line.split_at(line.find(want).unwrap());
        assert!(!rest.contains('\x1b'), "escape inside {line:?}");
        assert_eq!(without_titles(before), "", "{line:?}");
    }
}

/// `s` without the title sequences nettrap writes (set, save, restore).
fn without_titles(s: &str) -> String {
    let mut out = s.replace("\x1b[22;2t", "").replace("\x1b[23;2t", "");
    while let Some(at) = out.find("\x1b]2;") {
        let end = out[at..].find('\x07').map_or(out.len(), |e| at + e + 1);
        out.replace_range(at..end, "");
    }
    out
}

/// The title is cleared and popped before nettrap's summary.
fn restored_before_summary(out: &str) -> bool {
    out.find("\x1b]2;\x07\x1b[23;2t")
        .zip(out.find("nettrap: 4 categories"))
        .is_some_and(|(restore, summary)| restore < summary)
}

#[test]
fn a_denied_call_shows_in_the_title() {
    let (code, out) = on_terminal("progress-deny", &["--deny", "external-api"]);
    assert_eq!(code, 86, "{out}");
    assert!(
        out.contains(
            " · denied: connect to 127.0.0.1:443 in \
             tests.test_payments.PaymentTests.test_charge\x07"
        ),
        "{out:?}"
    );
}

#[test]
fn no_title_with_quiet_or_never() {
    for flag in ["--quiet", "--progress=never"] {
        let (code, out) = on_terminal("progress-quiet", &[flag]);
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains('\x1b'), "{flag}: {out:?}");
    }
}

#[test]
fn no_title_when_stderr_is_not_a_terminal() {
    let run = run_in_env("progress-pipe", &repo(), &[("TERM", "xterm")], &[], DEMO);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(!run.stderr().contains('\x1b'), "{:?}", run.stderr());
    assert!(run.stderr().contains("Ran 14 tests"), "{}", run.stderr());
}

/// A small terminal: what a screen of `rows` x `cols` shows after receiving `out`, enough of
/// VT100 for what nettrap and the demo write (text, CR, LF, autowrap, ESC 7/8, CSI r, H, K, A;
/// titles skipped). Lines scrolled off the top of a region that starts at the top go to the
/// scrollback, as a terminal's do.
struct Screen {
    rows: usize,
    cols: usize,
    grid: Vec<Vec<char>>,
    scrollback: Vec<String>,
    cursor: (usize, usize),
    saved: (usize, usize),
    region: (usize, usize),
    /// Every text written on the last row while it was outside the scroll region.
    bottom_writes: Vec<String>,
}

impl Screen {
    fn new(rows: usize, cols: usize) -> Screen {
        Screen {
            rows,
            cols,
            grid: vec![vec![' '; cols]; rows],
            scrollback: Vec::new(),
            cursor: (0, 0),
            saved: (0, 0),
            region: (0, rows - 1),
            bottom_writes: Vec::new(),
        }
    }

    fn row_text(&self, r: usize) -> String {
        self.grid[r]
            .iter()
            .collect::<String>()
            .trim_end()
            .to_string()
    }

    fn line_feed(&mut self) {
        let (top, bot) = self.region;
        if self.cursor.0 == bot {
            let gone = self.grid.remove(top);
            if top == 0 {
                self.scrollback
                    .push(gone.iter().collect::<String>().trim_end().to_string());
            }
            self.grid.insert(bot, vec![' '; self.cols]);
        } else if self.cursor.0 + 1 < self.rows {
            self.cursor.0 += 1;
        }
    }

    fn play(&mut self, out: &str) {
        let mut chars = out.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\n' => {
                    self.cursor.1 = 0;
                    self.line_feed();
                }
                '\r' => self.cursor.1 = 0,
                '\x07' => {}
                '\x1b' => match chars.next() {
                    Some('7') => self.saved = self.cursor,
                    Some('8') => self.cursor = self.saved,
                    Some(']') => {
                        for c in chars.by_ref() {
                            if c == '\x07' {
                                break;
                            }
                        }
                    }
                    Some('[') => {
                        let mut params = String::new();
                        let fin = loop {
                            match chars.next() {
                                Some(c) if c.is_ascii_digit() || c == ';' => params.push(c),
                                Some(c) => break c,
                                None => return,
                            }
                        };
                        let n: Vec<usize> =
                            params.split(';').map(|p| p.parse().unwrap_or(0)).collect();
                        let arg =
                            |i: usize, d: usize| n.get(i).copied().filter(|&v| v > 0).unwrap_or(d);
                        match fin {
                            'r' => {
                                self.region = if params.is_empty() {
                                    (0, self.rows - 1)
                                } else {
                                    (arg(0, 1) - 1, arg(1, self.rows) - 1)
                                };
                                self.cursor = (0, 0);
                            }
                            'H' => self.cursor = (arg(0, 1) - 1, arg(1, 1) - 1),
                            'K' => self.grid[self.cursor.0] = vec![' '; self.cols],
                            'A' => self.cursor.0 = self.cursor.0.saturating_sub(arg(0, 1)),
                            't' => {}
                            other => panic!("unexpected CSI {params}{other}"),
                        }
                    }
                    other => panic!("unexpected ESC {other:?}"),
                },
                c => {
                    if self.cursor.1 == self.cols {
                        self.cursor.1 = 0;
                        self.line_feed();
                    }
                    let (r, col) = self.cursor;
                    self.grid[r][col] = c;
                    self.cursor.1 += 1;
                    if r == self.rows - 1 && self.region.1 < r {
                        let text = self.row_text(r);
                        self.bottom_writes.push(text);
                    }
                }
            }
        }
    }

    /// Everything the terminal shows and scrolled away, top to bottom, blank lines dropped.
    fn lines(&self) -> Vec<String> {
        let mut all = self.scrollback.clone();
        all.extend((0..self.rows).map(|r| self.row_text(r)));
        all.into_iter().filter(|l| !l.is_empty()).collect()
    }
}

#[test]
fn progress_is_on_the_bottom_row_and_the_output_scrolls_above_it() {
    // 8 rows: the demo's output and nettrap's summary scroll through the region.
    let (rows, cols) = (8, 100);
    let (code, out) = on_sized_terminal("progress-rows", &[], Some((rows as u16, cols as u16)));
    assert_eq!(code, 0, "{out:?}");
    let mut screen = Screen::new(rows, cols);
    screen.play(&out);
    // The progress line was on the bottom row, outside the scroll region, with the final
    // counts; it never scrolled into the output, and the end cleared it and the region.
    assert!(
        screen.bottom_writes.iter().any(|l| l
            == "nettrap: 14 tests done · redis 6 · elasticsearch 3 · external-api 1 · memcached 1"),
        "{:?}\n{out:?}",
        screen.bottom_writes
    );
    assert_eq!(screen.region, (0, rows - 1), "{out:?}");
    let lines = screen.lines();
    assert!(
        !lines.iter().any(|l| l.contains("tests done")),
        "{lines:#?}"
    );
    // The command's output and nettrap's summary, whole and in order.
    let at = |want: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(want))
            .unwrap_or_else(|| panic!("no line starting {want:?} in {lines:#?}"))
    };
    let (ran, ok, summary) = (
        at("Ran 14 tests in "),
        at("OK"),
        at("nettrap: 4 categories of external calls in 7 of 14 tests"),
    );
    assert!(ran < ok && ok < summary, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("..............")),
        "{lines:#?}"
    );
}
