//! The run directory: the files a run shares with the processes it intercepts.
//!
//! `policy.bin` holds the compiled policy (mapped read-only by the shim), `events.log` the
//! event log every intercepting process appends to (format: `nettrap_core::event`), and
//! `timeline.jsonl` what runner adapters say the runner did (format: `attribution/SPEC.md`),
//! `unobserved` the calls a shim could not count in the log (see [`UNOBSERVED`]). The shim
//! finds the directory through `NETTRAP_RUN_DIR`. The directory is removed when the run ends
//! unless `NETTRAP_KEEP_RUN_DIR` is set.

use crate::say;
use anyhow::{Context, Result};
use nettrap_core::event;
use nettrap_core::policy::CompiledPolicy;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub const ENV_RUN_DIR: &str = "NETTRAP_RUN_DIR";
/// One byte (an `event::Unobserved` value) per call a shim let pass without being able to map
/// even the event log's header: appended with O_APPEND, no mapping needed.
pub const UNOBSERVED: &str = event::UNOBSERVED_FILE;

pub struct RunDir {
    path: PathBuf,
    keep: bool,
    /// Until [`RunDir::release`] (None: the grower removes the directory).
    log: Option<Arc<LogMapping>>,
    /// The log, until [`RunDir::start_grower`] hands it to the grower (None where the
    /// filesystem cannot preallocate).
    to_grow: Option<File>,
    grower: Option<Grower>,
    /// This run's lock on its directory (see `stale`), released after the directory is gone.
    _lock: Option<nix::fcntl::Flock<File>>,
}

/// Slots allocated up front (8 MiB), and the head room the grower keeps ahead of the cursor.
const FIRST_ALLOCATION: u64 = 1 << 16;

/// Slots whose pages are put in the page cache when the log is created (64 KiB: the whole log
/// of a run with a few hundred calls), and the most the grower caches ahead of the cursor
/// (4 MiB). A writer's first touch of a log page that is not cached is a page fault that reads
/// around it: `read_ahead_kb` of the device, 8 MiB on some VMs, zero-filled on the spot (the
/// blocks are unwritten or holes), ~1 ms on the writer's own time, paid by the first record of
/// every run. Cached by the launcher instead (`POSIX_FADV_WILLNEED`, exactly the range asked
/// for), the head costs it ~10 us before the command starts; past it, the grower's thread
/// caches ahead as the writers use the log (as far ahead as they have used, so a tiny run costs
/// it nothing), on its own time. Pages the kernel reclaims meanwhile are just faulted in again:
/// this is only about who pays, never about correctness.
const PREFETCH_HEAD: u64 = 512;
const PREFETCH_MAX: u64 = 1 << 15;

/// Asks the kernel to cache the pages of slots `from..to` (see [`PREFETCH_HEAD`]). Best effort:
/// a filesystem with no page cache readahead (tmpfs) ignores it.
fn prefetch(file: &File, from: u64, to: u64) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let offset = event::file_len(from) as libc::off_t;
    let len = ((to - from) * event::SLOT_LEN as u64) as libc::off_t;
    let _ = posix_fadvise(file, offset, len, PosixFadviseAdvice::POSIX_FADV_WILLNEED);
}

/// Allocates the event log's blocks ahead of its writers (see `nettrap_core::event`): a write
/// into an unallocated page of a shared mapping on a full filesystem would kill the writer with
/// SIGBUS. When the filesystem is full, writers past the allocated slots count their records as
/// dropped, and the report says so.
struct Grower {
    stop: Arc<AtomicBool>,
    /// Set before `stop`: on its way out the thread removes the run directory and closes the
    /// last handles of the log (see [`RunDir::release`]).
    remove: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// Allocates the blocks of slots `from..to`; false when the filesystem refuses.
fn allocate(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let offset = event::file_len(from) as libc::off_t;
    let len = ((to - from) * event::SLOT_LEN as u64) as libc::off_t;
    // SAFETY: fallocate on our own open file, within its size (mode 0 keeps the size).
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn start_grower(file: File, mapping: Arc<LogMapping>, dir: PathBuf) -> Grower {
    let stop = Arc::new(AtomicBool::new(false));
    let remove = Arc::new(AtomicBool::new(false));
    let (flag, removing) = (stop.clone(), remove.clone());
    let thread = std::thread::spawn(move || {
        grow(&file, &mapping, &flag);
        // A grower that gave up (the filesystem is full) still waits for the run's end.
        while !flag.load(Ordering::SeqCst) {
            std::thread::park();
        }
        if removing.load(Ordering::SeqCst) {
            let _ = fs::remove_dir_all(&dir);
        }
        // The run directories killed launchers left (see `stale`), at most once an hour: at the
        // end, where a slow sweep (a huge or remote temporary directory) cannot hold back the
        // log's growth, while nettrap writes its outputs.
        if let Some(base) = dir.parent() {
            crate::stale::sweep(base);
        }
        // The last handles of the log when released: the kernel frees its blocks here.
        drop(file);
        drop(mapping);
    });
    Grower {
        stop,
        remove,
        thread,
    }
}

/// The grower's loop, until `stop`.
fn grow(file: &File, mapping: &LogMapping, stop: &AtomicBool) {
    let log = mapping.log();
    let mut cached = PREFETCH_HEAD;
    while !stop.load(Ordering::Relaxed) {
        let (cursor, allocated) = (log.cursor(), log.allocated());
        // Less room cached ahead than the writers used so far: twice that much, never past
        // the allocated slots (nothing is written there).
        let ahead = cursor.clamp(PREFETCH_HEAD / 2, PREFETCH_MAX / 2);
        let (from, to) = (cached.max(cursor), (cursor + 2 * ahead).min(allocated));
        if cached < cursor + ahead && from < to {
            prefetch(file, from, to);
            cached = to;
        }
        if cursor + FIRST_ALLOCATION / 2 > allocated && allocated < event::DEFAULT_CAPACITY {
            let next = (allocated * 2).min(event::DEFAULT_CAPACITY);
            if allocate(file, allocated, next).is_err() {
                return; // full: from here on, records past the allocated slots are dropped
            }
            log.set_allocated(next);
            continue;
        }
        // Woken at once by `release` or `Drop` (unpark), so ending a run never waits out
        // the period.
        std::thread::park_timeout(std::time::Duration::from_millis(5));
    }
}

impl RunDir {
    /// Creates a fresh run directory holding `policy` and an empty event log.
    pub fn create(policy: &CompiledPolicy) -> Result<RunDir> {
        // Absolute: every process of the tree finds it, whatever its working directory (a
        // relative TMPDIR would be resolved against each process's own).
        let base = std::path::absolute(std::env::temp_dir())
            .context("cannot resolve the temporary directory")?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = base.join(format!("nettrap-{}-{nanos:09}", std::process::id()));
        // The shim builds its file names under the run directory in a fixed buffer.
        if path.as_os_str().len() > event::RUN_DIR_MAX_LEN {
            anyhow::bail!(
                "the temporary directory's path is too long for a run directory ({} bytes, at \
                 most {}): set TMPDIR to a shorter path",
                path.as_os_str().len(),
                event::RUN_DIR_MAX_LEN
            );
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create run directory {}", path.display()))?;
        let keep = std::env::var_os("NETTRAP_KEEP_RUN_DIR").is_some();
        // A directory kept on purpose has no lock file: never swept.
        let lock = if keep {
            None
        } else {
            crate::stale::hold(&path)
        };
        let cleanup = |e: anyhow::Error| {
            let _ = fs::remove_dir_all(&path);
            e
        };
        // Written whole, zero pages included: a hole in a file on a full tmpfs is a SIGBUS in
        // the program whose shim first reads that page of its mapping.
        fs::write(path.join("policy.bin"), policy.as_bytes())
            .context("cannot write the compiled policy")
            .map_err(cleanup)?;
        // Adapters append to the timeline by path (see attribution/SPEC.md).
        fs::write(path.join(crate::attribution::TIMELINE), b"")
            .context("cannot create the timeline")
            .map_err(cleanup)?;
        let events = path.join("events.log");
        let (file, allocated) = create_log(&events).map_err(cleanup)?;
        let log = Arc::new(map_log(&events).map_err(cleanup)?);
        let to_grow = match allocated {
            // The filesystem cannot preallocate (no fallocate): the log stays sparse.
            None => {
                log.log().set_allocated(event::DEFAULT_CAPACITY);
                None
            }
            Some(slots) => {
                log.log().set_allocated(slots);
                Some(file)
            }
        };
        Ok(RunDir {
            path,
            keep,
            log: Some(log),
            to_grow,
            grower: None,
            _lock: lock,
        })
    }

    /// Starts the thread that allocates (and caches) the log ahead of its writers. Called once
    /// the command is started: creating a thread costs ~50 us, which the command's own start
    /// then hides, and the writers need the grower only after thousands of records.
    pub fn start_grower(&mut self) {
        if let Some(file) = self.to_grow.take() {
            let log = self.log();
            self.grower = Some(start_grower(file, log, self.path.clone()));
        }
    }

    /// Done with the directory (the report is built from it): the grower's thread removes it
    /// and closes the log while nettrap writes the report. Freeing the log's preallocated
    /// blocks when its last handle closes costs the filesystem 0.05-0.3 ms (ext4, measured:
    /// ~20 us for a file with no preallocated blocks), which then overlaps the writing of the
    /// outputs instead of following it. Without a grower (or with `NETTRAP_KEEP_RUN_DIR`), drop
    /// does what it always did.
    pub fn release(&mut self) {
        let Some(g) = &self.grower else { return };
        if self.keep {
            return;
        }
        // The grower's handles are then the log's last.
        self.log = None;
        g.remove.store(true, Ordering::SeqCst);
        g.stop.store(true, Ordering::SeqCst);
        g.thread.thread().unpark();
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The event log, mapped into nettrap (for the seccomp supervisor).
    pub fn log(&self) -> Arc<LogMapping> {
        self.log
            .clone()
            .expect("the event log is mapped until the run directory is released")
    }

    fn events_path(&self) -> PathBuf {
        self.path.join("events.log")
    }

    /// Hands `f` every record written so far, in log order, reading the log a piece at a time
    /// (see `event::Stream`): memory stays at one piece whatever the log holds. Returns the
    /// log's counts (dropped, torn, unobserved; `records` empty), with the calls counted by
    /// shims that could not map the log header.
    ///
    /// With `want`, the calls it does not pick are passed over unread (see
    /// `event::Stream::skim`); the torn count then covers only what was read. Without, each
    /// record comes with the hint `event::Stream::feed_hinted` gives.
    pub fn walk_events(
        &self,
        want: Option<&dyn Fn(&event::CallHead) -> bool>,
        f: &mut dyn FnMut(u64, &event::RecordRef<'_>, event::Hint),
    ) -> Result<event::Decoded> {
        use std::os::unix::fs::FileExt;
        let f_log = File::open(self.events_path()).context("cannot open the event log")?;
        let mut header = vec![0u8; event::HEADER_LEN];
        f_log
            .read_exact_at(&mut header, 0)
            .context("cannot read the event log header")?;
        let used = event::used_len(&header).context("the event log header is corrupt")?;
        let len = f_log.metadata().context("cannot read the event log")?.len();
        // A damaged header cannot make the reader read past what the file holds.
        let used = (used as u64).min(len);
        let in_file = (used - event::HEADER_LEN as u64) / event::SLOT_LEN as u64;
        let mut stream =
            event::Stream::new(&header, in_file).map_err(|e| anyhow::anyhow!("{e}"))?;
        // One window of the writers' size, plus room for a record that starts at its end,
        // mapped rather than copied (see [`Piece`]).
        let piece = (event::WINDOW_SLOTS as usize + event::MAX_SLOTS) * event::SLOT_LEN;
        while !stream.done() {
            let from = stream.next_slot();
            let slots = (in_file - from).min(piece as u64 / event::SLOT_LEN as u64) as usize;
            let at = event::HEADER_LEN as u64 + from * event::SLOT_LEN as u64;
            let mapped = Piece::map(&f_log, at, slots * event::SLOT_LEN)
                .context("cannot read the event log")?;
            let bytes = mapped.bytes();
            match want {
                Some(want) => stream.skim(bytes, want, |at, r| f(at, &r, Default::default())),
                None => stream.feed_hinted(bytes, &mut *f),
            }
            if stream.next_slot() == from {
                anyhow::bail!("the event log could not be walked past slot {from}");
            }
        }
        let mut decoded = stream.finish();
        // Calls counted by shims that could not map the log header (see event::Unobserved).
        if let Ok(bytes) = fs::read(self.path.join(UNOBSERVED)) {
            for b in bytes {
                decoded.add_unobserved(b);
            }
        }
        Ok(decoded)
    }
}

/// A piece of the event log mapped read-only for the report's walks: no copy and no buffer to
/// fault in (reading 20,000 records' 2.5 MB twice with `pread` into a fresh buffer cost ~1 ms of
/// copying and zero-filling), populated at once (`MAP_POPULATE`: one call maps the cached pages,
/// no fault per page), unmapped when dropped so memory stays at one piece whatever the log
/// holds. Only the used part of the log, bounded by the file's length when opened, is mapped;
/// the report reads it after every process of the tree has ended, so nothing shortens the file
/// under the mapping (which would be a SIGBUS).
struct Piece {
    base: NonNull<u8>,
    map_len: usize,
    skip: usize,
    len: usize,
}

impl Piece {
    fn map(file: &File, at: u64, len: usize) -> std::io::Result<Piece> {
        use std::os::fd::AsRawFd;
        let page = crate::fnv::PAGE as u64;
        let skip = (at % page) as usize;
        let map_len = skip + len;
        if len == 0 {
            return Ok(Piece {
                base: NonNull::dangling(),
                map_len: 0,
                skip: 0,
                len: 0,
            });
        }
        // SAFETY: a read-only shared mapping of our own open file, at a page-aligned offset,
        // within the length the file had when opened (see the type's comment); the kernel picks
        // the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                (at - skip as u64) as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast()).ok_or_else(|| std::io::Error::other("mmap gave null"))?;
        Ok(Piece {
            base,
            map_len,
            skip,
            len,
        })
    }

    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the mapping holds map_len = skip + len readable bytes and lives as long as
        // self.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(self.skip), self.len) }
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        if self.map_len > 0 {
            // SAFETY: exactly what map mapped; bytes() borrows self, so no slice outlives it.
            unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Some(g) = self.grower.take() {
            g.stop.store(true, Ordering::Relaxed);
            g.thread.thread().unpark();
            let _ = g.thread.join();
        }
        if self.keep {
            say!("nettrap: run directory kept: {}", self.path.display());
        } else if self.log.is_some() {
            // Not released: the grower left the directory to us.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The event log mapped into the launcher, for the seccomp supervisor to append to: its header,
/// and its slots in windows mapped as records land in them (as the shim does, through the same
/// `event::Windows`), so nettrap's own address space grows with the log's use, not its
/// capacity.
pub struct LogMapping {
    header: NonNull<u8>,
    windows: event::Windows,
    mapper: FileMapper,
    capacity: u64,
}

// SAFETY: the mappings are shared memory written only through nettrap_core's atomic protocol.
unsafe impl Send for LogMapping {}
// SAFETY: as for Send: through `&LogMapping` the mapping is only read, or appended to
// atomically through event::Log.
unsafe impl Sync for LogMapping {}

/// Maps windows of the open event log.
struct FileMapper(File);

impl event::Mapper for FileMapper {
    fn map(&self, offset: u64, len: usize) -> Option<NonNull<u8>> {
        use std::os::fd::AsRawFd;
        // SAFETY: mapping part of an open file, shared and writable; the kernel picks the
        // address. The file is as long as the log's capacity, which bounds every window.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.0.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        NonNull::new(p.cast())
    }

    unsafe fn unmap(&self, base: NonNull<u8>, len: usize) {
        // SAFETY: per the trait's contract, a mapping of ours nothing refers to.
        unsafe { libc::munmap(base.as_ptr().cast(), len) };
    }
}

impl LogMapping {
    pub fn log(&self) -> event::Log<'_> {
        // SAFETY: the header mapping lives as long as self (checked when mapped); the windows
        // are of this file, mapped by this mapper.
        unsafe { event::Log::new(self.header.as_ptr(), &self.windows, &self.mapper) }
            .expect("event log header checked at map time")
    }
}

impl Drop for LogMapping {
    fn drop(&mut self) {
        // SAFETY: nothing borrows self any more, so no Log or ResultCell from it is in use;
        // unmapping exactly what was mapped.
        unsafe {
            self.windows.unmap_all(self.capacity, &self.mapper);
            libc::munmap(self.header.as_ptr().cast(), event::HEADER_LEN);
        }
    }
}

/// Creates the event log: header, full (sparse) size, and the first blocks allocated. Returns
/// the file and how many slots are allocated, or None where the filesystem cannot preallocate.
fn create_log(path: &Path) -> Result<(File, Option<u64>)> {
    let mut log = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .context("cannot create the event log")?;
    log.write_all(&event::header(event::DEFAULT_CAPACITY, 0))
        .context("cannot write the event log")?;
    log.set_len(event::file_len(event::DEFAULT_CAPACITY))
        .context("cannot size the event log")?;
    let mut want = FIRST_ALLOCATION;
    loop {
        match allocate(&log, 0, want) {
            Ok(()) => {
                prefetch(&log, 0, PREFETCH_HEAD.min(want));
                return Ok((log, Some(want)));
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok((log, None)),
            Err(_) if want > 64 => want /= 4,
            Err(e) => anyhow::bail!(
                "no space for the event log in {} ({e}); set TMPDIR to a filesystem with room",
                std::env::temp_dir().display()
            ),
        }
    }
}

/// Maps the event log's header for writing from this process (its slots are mapped as used).
fn map_log(path: &Path) -> Result<LogMapping> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .context("cannot open the event log")?;
    let mapper = FileMapper(f);
    let header = event::Mapper::map(&mapper, 0, event::HEADER_LEN).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot map the event log: {}",
            std::io::Error::last_os_error()
        )
    })?;
    let mut m = LogMapping {
        header,
        windows: event::Windows::new(),
        mapper,
        capacity: 0,
    };
    // SAFETY: as in LogMapping::log; checked here once.
    let Some(capacity) =
        (unsafe { event::Log::new(header.as_ptr(), &m.windows, &m.mapper) }).map(|l| l.capacity())
    else {
        anyhow::bail!("the event log is corrupt");
    };
    m.capacity = capacity;
    Ok(m)
}

/// The report reads the run's log in pieces (see [`RunDir::walk_events`]).
impl crate::report::Events for RunDir {
    fn walk(
        &self,
        f: &mut dyn FnMut(u64, &event::RecordRef<'_>, event::Hint),
    ) -> Result<event::Decoded> {
        self.walk_events(None, f)
    }

    fn skim(
        &self,
        want: &dyn Fn(&event::CallHead) -> bool,
        f: &mut dyn FnMut(u64, event::RecordRef<'_>),
    ) -> Result<event::Decoded> {
        self.walk_events(Some(want), &mut |at, r, _| f(at, *r))
    }
}
