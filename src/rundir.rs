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

pub const ENV_RUN_DIR: &str = "NETTRAP_RUN_DIR";
/// One byte (an `event::Unobserved` value) per call a shim let pass without being able to map
/// even the event log's header: appended with O_APPEND, no mapping needed.
pub const UNOBSERVED: &str = event::UNOBSERVED_FILE;

pub struct RunDir {
    path: PathBuf,
    keep: bool,
    /// Until [`RunDir::release`].
    log: Option<Arc<LogMapping>>,
    /// None where the filesystem cannot preallocate, once it is full, and once released.
    grower: Option<Grower>,
    /// Set by [`RunDir::release`]: the directory is gone (or kept).
    released: bool,
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
/// for), the head costs it ~10 us before the command starts; past it, the grower caches ahead
/// as the writers use the log (as far ahead as they have used, so a tiny run costs it nothing),
/// on the launcher's time. Pages the kernel reclaims meanwhile are just faulted in again: this
/// is only about who pays, never about correctness.
const PREFETCH_HEAD: u64 = 512;
const PREFETCH_MAX: u64 = 1 << 15;

/// How often the grower looks at the log while the command runs.
pub const GROW_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

/// Asks the kernel to cache the pages of slots `from..to` (see [`PREFETCH_HEAD`]). Best effort:
/// a filesystem with no page cache readahead (tmpfs) ignores it.
fn prefetch(file: &File, from: u64, to: u64) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let offset = event::file_len(from) as libc::off_t;
    let len = (to.saturating_sub(from)).saturating_mul(event::SLOT_LEN as u64) as libc::off_t;
    let _ = posix_fadvise(file, offset, len, PosixFadviseAdvice::POSIX_FADV_WILLNEED);
}

/// Allocates the event log's blocks ahead of its writers (see `nettrap_core::event`): a write
/// into an unallocated page of a shared mapping on a full filesystem would kill the writer with
/// SIGBUS. When the filesystem is full, writers past the allocated slots count their records as
/// dropped, and the report says so.
///
/// Not a thread: the launcher's main thread, which only waits for signals while the command
/// runs, calls [`RunDir::grow`] every [`GROW_EVERY`] (see `supervise::run`). A thread of its own
/// cost every run its start (~50 us) and, at the end, a wait for it to be scheduled to stop
/// (an exiting process is reaped only once all its threads have ended): on a loaded machine,
/// milliseconds.
struct Grower {
    file: File,
    /// Slots cached ahead so far (see [`PREFETCH_HEAD`]).
    cached: u64,
}

/// Allocates the blocks of slots `from..to`; false when the filesystem refuses.
fn allocate(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let offset = event::file_len(from) as libc::off_t;
    let len = (to.saturating_sub(from)).saturating_mul(event::SLOT_LEN as u64) as libc::off_t;
    // SAFETY: fallocate on our own open file, within its size (mode 0 keeps the size).
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Grower {
    /// Caches and allocates ahead of the writers as far as they need now; false once the
    /// filesystem is full (from then on, records past the allocated slots are dropped), or once
    /// the header's counters no longer make sense (the command can write the file: a cursor near
    /// the top of u64, a capacity that does not let the allocation grow), which the report then
    /// finds.
    fn step(&mut self, log: &event::Log<'_>) -> bool {
        loop {
            let (cursor, allocated) = (log.cursor(), log.allocated());
            // Less room cached ahead than the writers used so far: twice that much, never past
            // the allocated slots (nothing is written there).
            let ahead = cursor.clamp(PREFETCH_HEAD / 2, PREFETCH_MAX / 2);
            let to = cursor.saturating_add(2 * ahead).min(allocated);
            let from = self.cached.max(cursor);
            if self.cached < cursor.saturating_add(ahead) && from < to {
                prefetch(&self.file, from, to);
                self.cached = to;
            }
            if cursor.saturating_add(FIRST_ALLOCATION / 2) > allocated
                && allocated < event::DEFAULT_CAPACITY
            {
                let next = allocated.saturating_mul(2).min(event::DEFAULT_CAPACITY);
                if allocate(&self.file, allocated, next).is_err() {
                    return false;
                }
                log.set_allocated(next);
                // Published only up to the header's capacity: one the command lowered would
                // have this loop allocate the same blocks for ever (on nettrap's main thread).
                if log.allocated() <= allocated {
                    return false;
                }
                continue;
            }
            return true;
        }
    }
}

/// The byte ranges of `policy`'s block that its readers can read, whole pages each (ascending,
/// not overlapping): the header, and the categories, rules and host-name globs in use. The
/// readers (`nettrap_core::policy`) only ever reach the entries in use, through slices bounded
/// by the counts in the header.
pub fn policy_used_pages(policy: &CompiledPolicy) -> Vec<std::ops::Range<usize>> {
    use nettrap_core::policy::{
        Category, HOST_GLOB_LEN, MAX_CATEGORIES, MAX_HOST_GLOBS, MAX_RULES, Rule,
    };
    use std::mem::{offset_of, size_of};
    let page = crate::fnv::PAGE;
    let len = size_of::<CompiledPolicy>();
    let used = |at: usize, n: u32, max: usize, size: usize| at..at + (n as usize).min(max) * size;
    let ranges = [
        0..offset_of!(CompiledPolicy, categories),
        used(
            offset_of!(CompiledPolicy, categories),
            policy.n_categories,
            MAX_CATEGORIES,
            size_of::<Category>(),
        ),
        used(
            offset_of!(CompiledPolicy, rules),
            policy.n_rules,
            MAX_RULES,
            size_of::<Rule>(),
        ),
        used(
            offset_of!(CompiledPolicy, host_globs),
            policy.n_host_globs,
            MAX_HOST_GLOBS,
            HOST_GLOB_LEN,
        ),
    ];
    let mut pages: Vec<std::ops::Range<usize>> = Vec::new();
    for r in ranges.into_iter().filter(|r| !r.is_empty()) {
        let r = r.start / page * page..r.end.div_ceil(page).saturating_mul(page).min(len);
        match pages.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => pages.push(r),
        }
    }
    pages
}

/// A copy of `policy` for another reader (the seccomp supervisor): the pages its readers can
/// read ([`policy_used_pages`]) copied, the rest left zero in a fresh zeroed allocation, whose
/// pages the kernel then never has to provide (a whole copy cost ~150 KB of page faults and
/// copying on every seccomp run). As with the policy file, no reader reaches past them.
pub fn policy_copy(policy: &CompiledPolicy) -> Box<CompiledPolicy> {
    let layout = std::alloc::Layout::new::<CompiledPolicy>();
    // SAFETY: a layout of nonzero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<CompiledPolicy>();
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    let from = policy.as_bytes();
    // SAFETY: the allocation holds size_of::<CompiledPolicy>() bytes, as many as `from`.
    let to = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), from.len()) };
    for r in policy_used_pages(policy) {
        to[r.clone()].copy_from_slice(&from[r]);
    }
    // SAFETY: allocated with the global allocator for this layout; CompiledPolicy is a
    // pointer-free repr(C) block of integers and byte arrays, for which any bytes, zeros
    // included, are a value (the shim maps it from a file).
    unsafe { Box::from_raw(ptr) }
}

/// Writes the compiled policy for the shims to map: a file of the block's full size (what they
/// check and map), of which only the pages that can be read ([`policy_used_pages`]) are
/// written, with the block's own bytes; the rest are holes. The default policy's 151 KB are
/// then ~10 KB written: writing them all cost every run ~50 us (and freeing them at the end
/// more). A hole is never read: reading one on a full tmpfs would be a SIGBUS in the program
/// whose shim reads it (tmpfs allocates a page on a read fault), which is why every page that
/// holds a byte in use is written whole, zeros included.
fn write_policy(path: &Path, policy: &CompiledPolicy) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let bytes = policy.as_bytes();
    let file = File::create(path)?;
    file.set_len(bytes.len() as u64)?;
    for r in policy_used_pages(policy) {
        file.write_all_at(&bytes[r.clone()], r.start as u64)?;
    }
    Ok(())
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
        write_policy(&path.join("policy.bin"), policy)
            .context("cannot write the compiled policy")
            .map_err(cleanup)?;
        // Adapters append to the timeline by path (see attribution/SPEC.md).
        fs::write(path.join(crate::attribution::TIMELINE), b"")
            .context("cannot create the timeline")
            .map_err(cleanup)?;
        let events = path.join("events.log");
        let (file, allocated) = create_log(&events).map_err(cleanup)?;
        let log = Arc::new(map_log(&events).map_err(cleanup)?);
        let grower = match allocated {
            // The filesystem cannot preallocate (no fallocate): the log stays sparse.
            None => {
                log.log().set_allocated(event::DEFAULT_CAPACITY);
                None
            }
            Some(slots) => {
                log.log().set_allocated(slots);
                Some(Grower {
                    file,
                    cached: PREFETCH_HEAD,
                })
            }
        };
        Ok(RunDir {
            path,
            keep,
            log: Some(log),
            grower,
            released: false,
            _lock: lock,
        })
    }

    /// Allocates (and caches) the log ahead of its writers as far as they need now (see
    /// [`Grower`]); returns when it wants to be called again, None when never.
    pub fn grow(&mut self) -> Option<std::time::Duration> {
        let (Some(grower), Some(log)) = (&mut self.grower, &self.log) else {
            return None;
        };
        // A header the command overwrote: nothing more is grown (the report says the log is
        // corrupt).
        if log.try_log().is_some_and(|log| grower.step(&log)) {
            Some(GROW_EVERY)
        } else {
            self.grower = None;
            None
        }
    }

    /// Done with the directory (the report is built from it): it goes now, by this thread,
    /// and its log's last handles are closed (the kernel frees the log's preallocated blocks,
    /// ~20 us on ext4), then the run directories killed launchers left are swept (see `stale`;
    /// at most once an hour). This run's lock is released only when the `RunDir` is dropped,
    /// after its directory is gone. With `NETTRAP_KEEP_RUN_DIR` nothing goes.
    pub fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        self.grower = None;
        self.log = None;
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
        if let Some(base) = self.path.parent() {
            crate::stale::sweep(base);
        }
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
        self.release();
        if self.keep {
            say!("nettrap: run directory kept: {}", self.path.display());
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
        self.try_log()
            .expect("event log header checked at map time")
    }

    /// The log, unless its header was overwritten since it was mapped (the command can write
    /// the file: the report then says the log is corrupt).
    fn try_log(&self) -> Option<event::Log<'_>> {
        // SAFETY: the header mapping lives as long as self (checked when mapped); the windows
        // are of this file, mapped by this mapper.
        unsafe { event::Log::new(self.header.as_ptr(), &self.windows, &self.mapper) }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use nettrap_core::addr::Dest;

    fn compiled(flags: &[&str]) -> Box<CompiledPolicy> {
        let mut argv = vec!["nettrap", "run"];
        argv.extend_from_slice(flags);
        argv.extend_from_slice(&["--", "true"]);
        let Command::Run(args) = Cli::parse_from_args(argv.iter().map(Into::into).collect())
            .unwrap()
            .command
        else {
            unreachable!()
        };
        let mut policy = crate::policy::builtin::defaults();
        crate::policy::apply_flags(&mut policy, &args.policy).unwrap();
        policy.compile().unwrap()
    }

    /// The supervisor's copy of the policy holds the block's bytes on every page its readers
    /// read, and makes the same decisions (the reading itself is checked with the other pages
    /// unreadable by the test below, for the file).
    #[test]
    fn the_supervisors_policy_copy_decides_as_the_policy() {
        for flags in [
            &[][..],
            &[
                "--deny",
                "redis,8000-8100",
                "--allow",
                "*.internal",
                "--fail-on",
                "dns",
            ],
        ] {
            let policy = compiled(flags);
            let copy = policy_copy(&policy);
            for r in policy_used_pages(&policy) {
                assert_eq!(copy.as_bytes()[r.clone()], policy.as_bytes()[r]);
            }
            let dests = [
                Dest::from_v4([127, 0, 0, 1], 6379),
                Dest::from_v4([10, 1, 2, 3], 8050),
                Dest::from_v4([192, 0, 2, 1], 53),
            ];
            for d in &dests {
                for h in [None, Some(&b"x.internal"[..])] {
                    let (a, b) = (copy.decide(d, None, h), policy.decide(d, None, h));
                    assert_eq!((a.category, a.rule, a.errno), (b.category, b.rule, b.errno));
                    assert_eq!(a.action as u32, b.action as u32);
                }
            }
            assert_eq!(copy.flags, policy.flags);
        }
    }

    /// The policy file has the block's size and its bytes wherever they can be read; with every
    /// other page of the mapping made unreadable, every decision is still made, and the same:
    /// no reader reaches past the entries in use (a hole read on a full tmpfs is a SIGBUS).
    #[test]
    fn policy_file_holds_every_page_its_readers_read() {
        let page = crate::fnv::PAGE;
        let dir = std::env::temp_dir().join(format!("nettrap-policy-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for flags in [
            &[][..],
            &[
                "--deny",
                "redis,postgres,8000-8100",
                "--allow",
                "a.example.com:443,*.internal",
                "--fail-on",
                "dns",
            ],
            &[
                "--default",
                "deny",
                "--record",
                "b.example.org",
                "--deny-dns",
                "--errno",
                "EPERM",
            ],
        ] {
            let policy = compiled(flags);
            let path = dir.join("policy.bin");
            let _ = fs::remove_file(&path);
            write_policy(&path, &policy).unwrap();
            let bytes = policy.as_bytes();
            let file = fs::read(&path).unwrap();
            assert_eq!(file.len(), bytes.len());
            let used = policy_used_pages(&policy);
            let written: usize = used.iter().map(|r| r.len()).sum();
            assert!(
                written < bytes.len() / 4,
                "{flags:?}: {written} bytes written"
            );
            for r in &used {
                assert_eq!(&file[r.clone()], &bytes[r.clone()], "{flags:?}");
            }
            let f = File::open(&path).unwrap();
            let map_len = bytes.len().div_ceil(page) * page;
            use std::os::fd::AsRawFd;
            // SAFETY: a fresh read-only shared mapping of the whole file, unmapped below; the
            // pages mprotected are inside it.
            let base = unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                );
                assert_ne!(p, libc::MAP_FAILED);
                for at in (0..map_len).step_by(page) {
                    if !used.iter().any(|r| r.start <= at && at < r.end) {
                        assert_eq!(libc::mprotect(p.byte_add(at), page, libc::PROT_NONE), 0);
                    }
                }
                p
            };
            // SAFETY: the mapping is map_len bytes long and lives until the munmap below.
            let mapped = unsafe { std::slice::from_raw_parts(base.cast::<u8>(), bytes.len()) };
            let read = CompiledPolicy::from_bytes(mapped).expect("a valid policy");
            let dests = [
                Dest::from_v4([127, 0, 0, 1], 6379),
                Dest::from_v4([127, 0, 0, 1], 80),
                Dest::from_v4([10, 1, 2, 3], 443),
                Dest::from_v4([192, 0, 2, 1], 53),
                Dest::from_v4([8, 8, 8, 8], 5432),
            ];
            let hosts: [Option<&[u8]>; 4] = [
                None,
                Some(b"a.example.com"),
                Some(b"x.internal"),
                Some(b"b.example.org"),
            ];
            let tests: [Option<&[u8]>; 2] = [None, Some(b"tests/test_a.py::test_b")];
            for d in &dests {
                for h in hosts {
                    for t in tests {
                        let (a, b) = (read.decide(d, t, h), policy.decide(d, t, h));
                        assert_eq!((a.category, a.rule, a.errno), (b.category, b.rule, b.errno));
                        assert_eq!(a.action as u32, b.action as u32);
                        assert_eq!(
                            read.category_name(a.category),
                            policy.category_name(b.category)
                        );
                        if let Some(name) = h {
                            let (a, b) = (
                                read.lookup_decision(Some(d), name, t),
                                policy.lookup_decision(Some(d), name, t),
                            );
                            assert_eq!(
                                (a.category, a.rule, a.errno),
                                (b.category, b.rule, b.errno)
                            );
                        }
                    }
                }
            }
            for i in 0..read.n_categories as u16 + 2 {
                assert_eq!(read.category_name(i), policy.category_name(i));
            }
            // SAFETY: what was mapped above; `read` and `mapped` are not used after this.
            unsafe { libc::munmap(base, map_len) };
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
