//! Host names in a process: which lookups leave the machine, and which name each address came
//! from. Used by the shim inside the test's processes: no allocation, no locks.
//!
//! - [`is_numeric`]: a "name" the resolver answers without a lookup (`127.0.0.1`, `127.1`,
//!   `::1`, `fe80::1%eth0`).
//! - [`HostsScan`]: is a name answered from `/etc/hosts` for an address family? Fed the file in
//!   chunks of any size (a bounded buffer on the stack), so a file of any size and lines of any
//!   length are read the way glibc's `files` service reads them: `#` starts a comment, the first
//!   field is the address, the others are names, compared without regard to ASCII case and
//!   exactly otherwise (`name.` with a trailing dot is not `name`: glibc asks DNS for it).
//! - [`first_nameserver`]: the resolver a lookup goes to, from `/etc/resolv.conf`'s text.
//! - [`NameTable`]: address → the name a lookup returned it for, per process: a fixed table
//!   (sets of a few ways, the oldest way replaced), each entry guarded by a sequence counter so
//!   that a reader detects a torn entry (a writer on another thread, a writer interrupted by a
//!   signal or cut off by `fork`) and skips it. No thread ever waits: a writer that finds its
//!   entry being written gives up (the mapping is lost, the table stays consistent).

use crate::addr::Dest;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// The longest name remembered (a DNS name has at most 253 bytes; longer ones are not names).
pub const MAX_NAME: usize = 256;

/// Is `name` an address literal, answered without a lookup? Exactly what glibc's getaddrinfo
/// takes as one: an IPv6 address (`inet_pton`, with an optional `%scope`), or an IPv4 form that
/// `inet_aton` accepts (`127.0.0.1`, `127.1`, `0x7f.1`, `2130706433`), each part in range.
/// Anything else (`999.1.1.1`, `4294967296`, `0x`) goes to the resolver.
pub fn is_numeric(name: &[u8]) -> bool {
    if name.contains(&b':') {
        let addr = name.split(|&b| b == b'%').next().unwrap_or(name);
        return core::str::from_utf8(addr).is_ok_and(|a| a.parse::<core::net::Ipv6Addr>().is_ok());
    }
    let mut values = [0u64; 4];
    let mut parts = 0;
    for part in name.split(|&b| b == b'.') {
        if parts == 4 {
            return false;
        }
        let Some(v) = number(part) else {
            return false;
        };
        values[parts] = v;
        parts += 1;
    }
    // inet_aton: the last part fills the remaining bytes; the others are one byte each.
    let last_max = match parts {
        1 => 0xffff_ffff,
        2 => 0xff_ffff,
        3 => 0xffff,
        4 => 0xff,
        _ => return false,
    };
    values[..parts - 1].iter().all(|&v| v <= 0xff) && values[parts - 1] <= last_max
}

/// One `inet_aton` number: decimal, `0x` hex or `0` octal; None when it is not one (or too
/// large for any part).
fn number(p: &[u8]) -> Option<u64> {
    let (digits, radix) = match p {
        [] => return None,
        [b'0', b'x' | b'X', hex @ ..] => (hex, 16),
        [b'0', oct @ ..] if !oct.is_empty() => (oct, 8),
        _ => (p, 10),
    };
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    digits.iter().try_fold(0u64, |v, &b| {
        let d = (b as char).to_digit(radix)?;
        Some(v * radix as u64 + d as u64)
    })
}

/// `localhost` itself, which the resolver answers on every machine (glibc sends `localhost.`
/// and names below `localhost` to DNS, unless `/etc/hosts` lists them).
pub fn is_localhost(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"localhost")
}

/// Which addresses of a hosts-file line answer a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `AF_UNSPEC`: any line.
    Any,
    /// `AF_INET`: IPv4 lines.
    V4,
    /// `AF_INET6`: IPv6 lines.
    V6,
    /// `AF_INET6` with `AI_V4MAPPED`: IPv6 lines, or IPv4 ones (mapped).
    V6Mapped,
}

/// Scans a hosts file for one name (see the module docs). Feed it the file, then [`finish`].
///
/// [`finish`]: HostsScan::finish
pub struct HostsScan<'a> {
    name: &'a [u8],
    family: Family,
    /// Field of the line being read: 0 the address, then names.
    field: u32,
    comment: bool,
    in_token: bool,
    /// The current name token equals the name so far (`pos` bytes of it).
    pos: usize,
    mismatch: bool,
    v6: bool,
    found: bool,
}

impl<'a> HostsScan<'a> {
    pub fn new(name: &'a [u8], family: Family) -> HostsScan<'a> {
        HostsScan {
            name,
            family,
            field: 0,
            comment: false,
            in_token: false,
            pos: 0,
            mismatch: false,
            v6: false,
            found: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        match b {
            b'\n' => {
                self.end_token();
                self.field = 0;
                self.comment = false;
                self.v6 = false;
            }
            _ if self.comment => {}
            b'#' => {
                self.end_token();
                self.comment = true;
            }
            b' ' | b'\t' | b'\r' | b'\x0b' | b'\x0c' => self.end_token(),
            _ => {
                if !self.in_token {
                    self.in_token = true;
                    self.pos = 0;
                    self.mismatch = false;
                }
                if self.field == 0 {
                    self.v6 |= b == b':';
                } else if !self.mismatch {
                    if self
                        .name
                        .get(self.pos)
                        .is_some_and(|c| c.eq_ignore_ascii_case(&b))
                    {
                        self.pos += 1;
                    } else {
                        self.mismatch = true;
                    }
                }
            }
        }
    }

    fn end_token(&mut self) {
        if !self.in_token {
            return;
        }
        self.in_token = false;
        if self.field > 0 && !self.mismatch && self.pos == self.name.len() && !self.name.is_empty()
        {
            let fits = match self.family {
                Family::Any | Family::V6Mapped => true,
                Family::V4 => !self.v6,
                Family::V6 => self.v6,
            };
            self.found |= fits;
        }
        self.field = self.field.saturating_add(1);
    }

    /// Was the name found (after the last chunk)?
    pub fn finish(mut self) -> bool {
        self.end_token();
        self.found
    }
}

/// The first `nameserver` of a `resolv.conf` text, port 53 (`None`: there is none in `text`).
pub fn first_nameserver(text: &[u8]) -> Option<Dest> {
    for line in text.split(|&b| b == b'\n') {
        let mut words = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        if words.next() != Some(b"nameserver") {
            continue;
        }
        let word = words.next()?;
        // A scope (`fe80::1%eth0`) is not part of the address.
        let addr = word.split(|&b| b == b'%').next().unwrap_or(word);
        let text = core::str::from_utf8(addr).ok()?;
        return match text.parse::<core::net::IpAddr>().ok()? {
            core::net::IpAddr::V4(v4) => Some(Dest::from_v4(v4.octets(), 53)),
            core::net::IpAddr::V6(v6) => Some(Dest {
                ip: v6.octets(),
                port: 53,
            }),
        };
    }
    None
}

const WORDS: usize = MAX_NAME / 8;

struct Entry {
    /// Even: stable; odd: being written. Changes with every write.
    seq: AtomicU32,
    len: AtomicU32,
    /// When it was written: [`NameTable`]'s clock; 0 for never.
    stamp: AtomicU64,
    ip: [AtomicU64; 2],
    name: [AtomicU64; WORDS],
}

impl Entry {
    #[allow(clippy::declare_interior_mutable_const)] // a template for the array below
    const EMPTY: Entry = Entry {
        seq: AtomicU32::new(0),
        len: AtomicU32::new(0),
        stamp: AtomicU64::new(0),
        ip: [const { AtomicU64::new(0) }; 2],
        name: [const { AtomicU64::new(0) }; WORDS],
    };
}

fn ip_words(ip: &[u8; 16]) -> [u64; 2] {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&ip[..8]);
    b.copy_from_slice(&ip[8..]);
    [u64::from_ne_bytes(a), u64::from_ne_bytes(b)]
}

/// Address → name, for `SETS * WAYS` addresses (see the module docs). `const`-constructible,
/// for a `static`.
pub struct NameTable<const SETS: usize, const WAYS: usize> {
    entries: [[Entry; WAYS]; SETS],
    clock: AtomicU64,
}

impl<const SETS: usize, const WAYS: usize> Default for NameTable<SETS, WAYS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SETS: usize, const WAYS: usize> NameTable<SETS, WAYS> {
    pub const fn new() -> Self {
        NameTable {
            entries: [const { [Entry::EMPTY; WAYS] }; SETS],
            clock: AtomicU64::new(0),
        }
    }

    fn set(&self, ip: &[u8; 16]) -> &[Entry; WAYS] {
        // FNV-1a over the address.
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for &b in ip {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        &self.entries[(h % SETS.max(1) as u64) as usize]
    }

    /// Nothing remembered yet (no lookup in this process): a connect skips the table.
    pub fn is_empty(&self) -> bool {
        self.clock.load(Ordering::Relaxed) == 0
    }

    /// Remembers that a lookup of `name` returned `ip`, replacing what `ip` was remembered for
    /// before, or else the set's oldest entry. Names longer than [`MAX_NAME`] and empty ones
    /// are not remembered.
    pub fn remember(&self, ip: &[u8; 16], name: &[u8]) {
        if name.is_empty() || name.len() > MAX_NAME || SETS == 0 || WAYS == 0 {
            return;
        }
        let key = ip_words(ip);
        let set = self.set(ip);
        // The entry for this address if there is one (read without the sequence check: a torn
        // read only picks a worse entry), else the oldest.
        let mut pick = 0;
        let mut oldest = u64::MAX;
        for (i, e) in set.iter().enumerate() {
            let stamp = e.stamp.load(Ordering::Relaxed);
            if stamp != 0
                && e.ip[0].load(Ordering::Relaxed) == key[0]
                && e.ip[1].load(Ordering::Relaxed) == key[1]
            {
                pick = i;
                break;
            }
            if stamp < oldest {
                oldest = stamp;
                pick = i;
            }
        }
        let e = &set[pick];
        // Already remembered so (threads resolving the same name again and again): no write, so
        // no moment in which a reader finds the entry being written.
        let mut held = [0u8; MAX_NAME];
        if self
            .read(e, &key, &mut held)
            .is_some_and(|(_, len)| &held[..len] == name)
        {
            return;
        }
        let seq = e.seq.load(Ordering::Relaxed);
        if seq & 1 == 1
            || e.seq
                .compare_exchange(
                    seq,
                    seq.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return; // another writer has it: give up rather than wait
        }
        fence(Ordering::Release);
        e.ip[0].store(key[0], Ordering::Relaxed);
        e.ip[1].store(key[1], Ordering::Relaxed);
        let mut buf = [0u8; MAX_NAME];
        buf[..name.len()].copy_from_slice(name);
        for (w, chunk) in e.name.iter().zip(buf.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            w.store(u64::from_ne_bytes(word), Ordering::Relaxed);
        }
        e.len.store(name.len() as u32, Ordering::Relaxed);
        let stamp = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        e.stamp.store(stamp, Ordering::Relaxed);
        e.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// The name `ip` was last returned for, copied into `out`; its length (0: none).
    pub fn lookup(&self, ip: &[u8; 16], out: &mut [u8; MAX_NAME]) -> usize {
        if self.is_empty() || SETS == 0 {
            return 0;
        }
        let key = ip_words(ip);
        let mut best = (0u64, 0usize);
        let mut buf = [0u8; MAX_NAME];
        for e in self.set(ip) {
            if let Some((stamp, len)) = self.read(e, &key, &mut buf)
                && stamp > best.0
            {
                best = (stamp, len);
                out[..len].copy_from_slice(&buf[..len]);
            }
        }
        best.1
    }

    /// Entry `e`'s (stamp, name length) with its name in `buf`, if it holds address `key`. An
    /// entry being written is read again (a writer stores a few hundred bytes; a reader that
    /// gave up at once would take a connect made meanwhile for one without a name), up to a
    /// bound: a writer preempted in the middle cannot stall a reader for long.
    fn read(&self, e: &Entry, key: &[u64; 2], buf: &mut [u8; MAX_NAME]) -> Option<(u64, usize)> {
        for _ in 0..READ_TRIES {
            let before = e.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                core::hint::spin_loop();
                continue;
            }
            if e.ip[0].load(Ordering::Relaxed) != key[0]
                || e.ip[1].load(Ordering::Relaxed) != key[1]
            {
                // Check that the mismatch was not torn either.
                fence(Ordering::Acquire);
                if e.seq.load(Ordering::Relaxed) == before {
                    return None;
                }
                continue;
            }
            let stamp = e.stamp.load(Ordering::Relaxed);
            let len = e.len.load(Ordering::Relaxed) as usize;
            for (w, chunk) in e.name.iter().zip(buf.chunks_exact_mut(8)) {
                chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
            }
            fence(Ordering::Acquire);
            if e.seq.load(Ordering::Relaxed) != before {
                continue; // torn: written meanwhile
            }
            return (stamp != 0 && len != 0 && len <= MAX_NAME).then_some((stamp, len));
        }
        None
    }
}

/// How often a reader tries an entry that is being written (see `NameTable::read`).
const READ_TRIES: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::boxed::Box;

    #[test]
    fn numeric_names() {
        for n in [
            &b"127.0.0.1"[..],
            b"127.1",
            b"0x7f.1",
            b"2130706433",
            b"010.0.0.1",
            b"::1",
            b"fe80::1%eth0",
            b"4294967295",
            b"1.16777215",
            b"0",
        ] {
            assert!(is_numeric(n), "{:?}", core::str::from_utf8(n));
        }
        for n in [
            &b"api.stripe.com"[..],
            b"deadbeef",
            b"1.2.3.4.5",
            b"1..2",
            b"1.2.",
            b"08.1",
            b"",
            b"123.example",
            // What inet_aton refuses goes to the resolver.
            b"999.1.1.1",
            b"4294967296",
            b"1.16777216",
            b"0x",
            b"a:b:zz",
        ] {
            assert!(!is_numeric(n), "{:?}", core::str::from_utf8(n));
        }
    }

    #[test]
    fn localhost() {
        assert!(is_localhost(b"localhost"));
        assert!(is_localhost(b"LocalHost"));
        // glibc asks DNS for these (unless /etc/hosts lists them).
        assert!(!is_localhost(b"localhost."));
        assert!(!is_localhost(b"app.localhost"));
        assert!(!is_localhost(b"xlocalhost"));
        assert!(!is_localhost(b"localhost.example"));
    }

    const HOSTS: &[u8] = b"127.0.0.1 localhost\n\
        ::1 localhost ip6-localhost # comment api.stripe.com\n\
        # 10.0.0.1 commented.example\n\
        127.0.0.2\tapi.payments.example  pay\r\n\
        127.0.0.3 search.internal\n\
        ::2 v6only.example\n\
        10.0.0.9 last.example";

    fn scan(name: &[u8], family: Family, chunk: usize) -> bool {
        let mut s = HostsScan::new(name, family);
        for c in HOSTS.chunks(chunk) {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn hosts_file() {
        for chunk in [1, 3, 7, 4096] {
            assert!(scan(b"api.payments.example", Family::Any, chunk));
            assert!(scan(b"API.Payments.Example", Family::V4, chunk));
            assert!(scan(b"pay", Family::Any, chunk));
            assert!(scan(b"last.example", Family::Any, chunk));
            assert!(scan(b"ip6-localhost", Family::V6, chunk));
            assert!(!scan(b"api.payments.example.", Family::Any, chunk));
            assert!(!scan(b"api.payments", Family::Any, chunk));
            assert!(!scan(b"api.payments.examplex", Family::Any, chunk));
            assert!(!scan(b"api.stripe.com", Family::Any, chunk));
            assert!(!scan(b"commented.example", Family::Any, chunk));
            assert!(!scan(b"127.0.0.2", Family::Any, chunk));
            // Families.
            assert!(!scan(b"api.payments.example", Family::V6, chunk));
            assert!(scan(b"api.payments.example", Family::V6Mapped, chunk));
            assert!(!scan(b"v6only.example", Family::V4, chunk));
            assert!(scan(b"v6only.example", Family::V6, chunk));
            assert!(!scan(b"", Family::Any, chunk));
        }
        // A very long line does not hide the names after it.
        let mut s = HostsScan::new(b"after.example", Family::Any);
        s.feed(b"10.0.0.1 ");
        for _ in 0..10_000 {
            s.feed(b"x");
        }
        s.feed(b" y\n10.0.0.2 after.example\n");
        assert!(s.finish());
    }

    #[test]
    fn nameservers() {
        let conf = b"# nameserver 10.9.9.9\nsearch example.com\n  nameserver\t10.0.0.2 \nnameserver 10.0.0.3\n";
        assert_eq!(
            first_nameserver(conf),
            Some(Dest::from_v4([10, 0, 0, 2], 53))
        );
        let v6 = first_nameserver(b"nameserver fe80::1%eth0\n").unwrap();
        assert_eq!((v6.ip[0], v6.ip[15], v6.port), (0xfe, 1, 53));
        assert_eq!(first_nameserver(b"options ndots:2\n"), None);
        assert_eq!(first_nameserver(b"nameserver bogus\n"), None);
    }

    fn ip(last: u8) -> [u8; 16] {
        Dest::from_v4([10, 0, 0, last], 0).ip
    }

    #[test]
    fn table_remembers_the_latest_name_per_address() {
        let t: Box<NameTable<4, 2>> = Box::default();
        let mut out = [0u8; MAX_NAME];
        assert!(t.is_empty());
        assert_eq!(t.lookup(&ip(1), &mut out), 0);
        t.remember(&ip(1), b"a.example");
        assert!(!t.is_empty());
        let n = t.lookup(&ip(1), &mut out);
        assert_eq!(&out[..n], b"a.example");
        t.remember(&ip(1), b"b.example");
        let n = t.lookup(&ip(1), &mut out);
        assert_eq!(&out[..n], b"b.example");
        assert_eq!(t.lookup(&ip(2), &mut out), 0);
        // Longest names fit; longer ones are not remembered.
        let long = [b'x'; MAX_NAME];
        t.remember(&ip(3), &long);
        assert_eq!(t.lookup(&ip(3), &mut out), MAX_NAME);
        t.remember(&ip(4), &[b'x'; MAX_NAME + 1]);
        assert_eq!(t.lookup(&ip(4), &mut out), 0);
    }

    #[test]
    fn table_is_bounded_and_replaces_the_oldest() {
        let t: Box<NameTable<4, 2>> = Box::default();
        let mut out = [0u8; MAX_NAME];
        for i in 0..=200u8 {
            t.remember(&ip(i), &[b'a' + i % 26; 3]);
        }
        // The latest address is there; at most 8 are.
        let n = t.lookup(&ip(200), &mut out);
        assert_eq!(&out[..n], &[b'a' + 200 % 26; 3]);
        let kept = (0..=200u8)
            .filter(|&i| t.lookup(&ip(i), &mut out) > 0)
            .count();
        assert!((1..=8).contains(&kept), "{kept}");
    }

    #[test]
    fn table_skips_entries_being_written() {
        let t: Box<NameTable<1, 1>> = Box::default();
        let mut out = [0u8; MAX_NAME];
        t.remember(&ip(1), b"a.example");
        // A writer that stopped half-way (odd sequence): readers skip it, writers leave it.
        let e = &t.entries[0][0];
        e.seq.fetch_add(1, Ordering::Relaxed);
        assert_eq!(t.lookup(&ip(1), &mut out), 0);
        t.remember(&ip(1), b"b.example");
        assert_eq!(t.lookup(&ip(1), &mut out), 0);
        e.seq.fetch_add(1, Ordering::Relaxed);
        let n = t.lookup(&ip(1), &mut out);
        assert_eq!(&out[..n], b"a.example");
    }

    #[test]
    fn table_readers_never_see_torn_names() {
        use std::sync::atomic::AtomicBool;
        let t: &'static NameTable<1, 1> = Box::leak(Box::new(NameTable::new()));
        let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let writers: std::vec::Vec<_> = (0..2u8)
            .map(|w| {
                std::thread::spawn(move || {
                    let names = [[b'a' + w; 40], [b'n' + w; 40]];
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        t.remember(&ip(1), &names[i % 2][..20 + i % 20]);
                        i += 1;
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut out = [0u8; MAX_NAME];
        let mut seen = 0;
        let start = std::time::Instant::now();
        while seen < 10_000 && start.elapsed().as_secs() < 5 {
            let n = t.lookup(&ip(1), &mut out);
            if n > 0 {
                seen += 1;
                assert!((20..40).contains(&n));
                assert!(out[..n].iter().all(|&b| b == out[0]), "torn");
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        assert!(seen > 0);
    }
}
