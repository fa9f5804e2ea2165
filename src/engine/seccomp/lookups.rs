//! DNS lookups in flight, as the supervisor sees them, so that one lookup is one call however
//! many system calls and datagrams it takes.
//!
//! What a lookup looks like from the supervisor's seat:
//! - glibc's resolver (static programs; any program's `res_query`; under `seccomp`, every
//!   program) connects a UDP socket to the resolver, then sends A and AAAA together with one
//!   `sendmmsg` (trapped: the name is read from it), or, for a single question (`AF_INET` only,
//!   `gethostbyname`, `single-request`), with `send` (not trapped: no name);
//! - Go's pure resolver connects one UDP socket per question (A and AAAA in parallel) and
//!   `write`s the query (not trapped: no name);
//! - other clients (dnspython, c-ares, hand-built queries) `sendto` the resolver (trapped: the
//!   name is read), or connect and `send`/`write` (not trapped).
//!
//! So a `connect` to port 53 is held back, not recorded at once: a query read on that socket
//! within [`HOLD_NS`] names it (one `lookup` record, and no `connect` record). If none comes it
//! is recorded as what it was, a `connect` to the resolver without a name; further unnamed
//! connects from the same process to the same resolver within [`JOIN_NS`] of the first are the
//! same lookup (Go's A and AAAA). A query is a new lookup unless its socket already carried
//! that name (retries, A after AAAA), or its process asked for the name less than
//! [`SAME_NAME_NS`] before (A and AAAA on two sockets). Two different names looked up by one
//! process within [`JOIN_NS`] without a trapped query (Go) are counted as one lookup.

use super::notify::SocketId;
use nettrap_core::addr::Dest;
use std::collections::{BTreeMap, HashMap};

/// Unnamed connects of one process to one resolver this close to the lookup's first are that
/// lookup (Go sends A and AAAA from two sockets at once).
pub const JOIN_NS: u64 = 250_000_000;
/// How long a connect to a resolver waits for a query to name it (resolvers send right after
/// connecting: microseconds).
pub const HOLD_NS: u64 = 1_000_000_000;
/// A process asking for the same name again this soon after (on another socket) is still
/// making the same lookup.
pub const SAME_NAME_NS: u64 = 1_000_000_000;
/// A lookup's sockets are remembered this long after their last query (a resolver retries on
/// the same socket after its timeout, 5 s by default).
pub const LINGER_NS: u64 = 15_000_000_000;
/// How often [`Lookups::sweep`] looks.
pub const SWEEP_NS: u64 = 100_000_000;
/// Lookups remembered at most; the oldest goes first (its held connect is recorded).
pub const MAX_GROUPS: usize = 4096;
/// (process, name) pairs remembered at most for [`SAME_NAME_NS`].
const MAX_NAMES: usize = 1 << 16;

/// One process: its pid and start time (a reused pid is another process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Proc {
    pub tgid: u32,
    pub start_time: u64,
}

/// One socket of one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub proc: Proc,
    pub socket: SocketId,
}

/// One lookup: the sockets it used, the names read on them, and its connect while no name came.
struct Group<H> {
    proc: Proc,
    dest: Dest,
    first_ns: u64,
    last_ns: u64,
    /// The connect that began it, not recorded yet.
    held: Option<H>,
    named: bool,
    names: Vec<String>,
    sockets: Vec<SockKey>,
}

/// Lookups in flight. `H` is what the supervisor needs to record a held connect.
pub struct Lookups<H> {
    next: u64,
    groups: BTreeMap<u64, Group<H>>,
    by_socket: HashMap<SockKey, u64>,
    /// When each process last queried each name.
    names: HashMap<(Proc, String), u64>,
    /// Denied connects to resolvers: when each (process, resolver)'s lookup began.
    denied: HashMap<(Proc, Dest), u64>,
    /// Groups with a held connect.
    held: usize,
    /// When [`sweep`](Self::sweep) next looks (it walks every group).
    next_sweep: u64,
}

impl<H> Default for Lookups<H> {
    fn default() -> Self {
        Lookups {
            next: 0,
            groups: BTreeMap::new(),
            by_socket: HashMap::new(),
            names: HashMap::new(),
            denied: HashMap::new(),
            held: 0,
            next_sweep: 0,
        }
    }
}

impl<H> Lookups<H> {
    /// Is any connect held back (so the caller must come back to [`sweep`](Self::sweep))?
    pub fn holding(&self) -> bool {
        self.held > 0
    }

    /// A connect of `sock` to the resolver `dest` at `now`, let through: held as a lookup
    /// (or joined to one). Returns held connects pushed out to make room, to record now.
    pub fn connect(&mut self, sock: SockKey, dest: Dest, now: u64, held: H) -> Vec<H> {
        let joined = self.groups.iter_mut().find(|(_, g)| {
            g.proc == sock.proc
                && g.dest == dest
                && !g.named
                && g.held.is_some()
                && now.saturating_sub(g.first_ns) <= JOIN_NS
        });
        if let Some((&id, g)) = joined {
            g.last_ns = now;
            g.sockets.push(sock);
            self.by_socket.insert(sock, id);
            return Vec::new();
        }
        self.add(sock, dest, now, Some(held), None)
    }

    /// A connect of process `proc` to the resolver `dest` at `now`, denied: is it a new lookup
    /// (to record and tell), or another socket of one denied within [`JOIN_NS`] (Go's AAAA)?
    pub fn denied_connect(&mut self, proc: Proc, dest: Dest, now: u64) -> bool {
        match self.denied.get_mut(&(proc, dest)) {
            Some(first) if now.saturating_sub(*first) <= JOIN_NS => false,
            Some(first) => {
                *first = now;
                true
            }
            None => {
                if self.denied.len() >= MAX_GROUPS {
                    self.denied.clear();
                }
                self.denied.insert((proc, dest), now);
                true
            }
        }
    }

    /// A query for `name` sent on `sock` (to `dest`) at `now`: is it a new lookup, to record?
    /// Either way it names the lookup its socket began, whose connect is then not recorded.
    pub fn query(&mut self, sock: SockKey, dest: Dest, name: &str, now: u64) -> (bool, Vec<H>) {
        let key = (sock.proc, name.to_string());
        let recent = self
            .names
            .get(&key)
            .is_some_and(|&t| now.saturating_sub(t) < SAME_NAME_NS);
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        self.names.insert(key, now);
        if let Some(g) = self
            .by_socket
            .get(&sock)
            .and_then(|id| self.groups.get_mut(id))
        {
            g.last_ns = now;
            if g.held.take().is_some() {
                self.held -= 1;
            }
            g.named = true;
            if g.names.iter().any(|n| n == name) {
                return (false, Vec::new());
            }
            g.names.push(name.to_string());
            return (!recent, Vec::new());
        }
        let evicted = self.add(sock, dest, now, None, Some(name));
        (!recent, evicted)
    }

    fn add(
        &mut self,
        sock: SockKey,
        dest: Dest,
        now: u64,
        held: Option<H>,
        name: Option<&str>,
    ) -> Vec<H> {
        let mut evicted = Vec::new();
        while self.groups.len() >= MAX_GROUPS {
            let Some((_, old)) = self.groups.pop_first() else {
                break;
            };
            evicted.extend(self.forget(old));
        }
        let id = self.next;
        self.next += 1;
        self.held += held.is_some() as usize;
        self.groups.insert(
            id,
            Group {
                proc: sock.proc,
                dest,
                first_ns: now,
                last_ns: now,
                held,
                named: name.is_some(),
                names: name.map(String::from).into_iter().collect(),
                sockets: vec![sock],
            },
        );
        self.by_socket.insert(sock, id);
        evicted
    }

    /// Drops a group's sockets (those not taken over by a newer group); returns its held
    /// connect.
    fn forget(&mut self, g: Group<H>) -> Option<H> {
        self.held -= g.held.is_some() as usize;
        for s in &g.sockets {
            if let Some(&id) = self.by_socket.get(s)
                && !self.groups.contains_key(&id)
            {
                self.by_socket.remove(s);
            }
        }
        g.held
    }

    /// At `now`: the held connects no query named in time, to record as unnamed connects; and
    /// lookups quiet for [`LINGER_NS`] are forgotten.
    /// Walks every group, so it looks at most every [`SWEEP_NS`].
    pub fn sweep(&mut self, now: u64) -> Vec<H> {
        if now < self.next_sweep {
            return Vec::new();
        }
        self.next_sweep = now + SWEEP_NS;
        let mut out = Vec::new();
        for g in self.groups.values_mut() {
            if now.saturating_sub(g.first_ns) >= HOLD_NS
                && let Some(h) = g.held.take()
            {
                out.push(h);
            }
        }
        self.held -= out.len();
        let stale: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| now.saturating_sub(g.last_ns) >= LINGER_NS)
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            if let Some(g) = self.groups.remove(&id) {
                out.extend(self.forget(g));
            }
        }
        self.names
            .retain(|_, t| now.saturating_sub(*t) < SAME_NAME_NS);
        self.denied.retain(|_, t| now.saturating_sub(*t) <= JOIN_NS);
        out
    }

    /// Every held connect (the run is over).
    pub fn drain(&mut self) -> Vec<H> {
        let out = self
            .groups
            .values_mut()
            .filter_map(|g| g.held.take())
            .collect();
        self.groups.clear();
        self.by_socket.clear();
        self.names.clear();
        self.denied.clear();
        self.held = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn sock(tgid: u32, ino: u64) -> SockKey {
        SockKey {
            proc: Proc {
                tgid,
                start_time: 7,
            },
            socket: SocketId::Inode(ino),
        }
    }

    fn resolver() -> Dest {
        Dest::from_v4([127, 0, 0, 1], 53)
    }

    #[test]
    fn glibc_connect_then_sendmmsg_is_one_named_lookup() {
        let mut l: Lookups<&str> = Lookups::default();
        assert!(l.connect(sock(1, 10), resolver(), 0, "c1").is_empty());
        assert!(l.holding());
        // A and AAAA in one sendmmsg (the supervisor passes each name once), a retry later.
        assert!(l.query(sock(1, 10), resolver(), "a.example", MS).0);
        assert!(!l.query(sock(1, 10), resolver(), "a.example", 5000 * MS).0);
        // The connect is not recorded: the name took its place.
        assert!(!l.holding());
        assert!(l.sweep(10_000 * MS).is_empty());
        assert!(l.drain().is_empty());
    }

    #[test]
    fn unnamed_connects_are_held_then_recorded_once_per_lookup() {
        let mut l: Lookups<&str> = Lookups::default();
        // Go: A and AAAA from two sockets; a second lookup a second later.
        l.connect(sock(1, 10), resolver(), 0, "a");
        l.connect(sock(1, 11), resolver(), 3 * MS, "aaaa");
        l.connect(sock(2, 12), resolver(), 4 * MS, "other process");
        assert_eq!(l.sweep(500 * MS), Vec::<&str>::new());
        let mut flushed = l.sweep(HOLD_NS + 4 * MS);
        flushed.sort();
        assert_eq!(flushed, ["a", "other process"]);
        l.connect(sock(1, 13), resolver(), HOLD_NS + 10 * MS, "later");
        assert_eq!(l.drain(), ["later"]);
    }

    #[test]
    fn the_same_name_on_another_socket_soon_after_is_the_same_lookup() {
        let mut l: Lookups<&str> = Lookups::default();
        // single-request-reopen: AAAA and A on two sockets; then the same name much later.
        l.connect(sock(1, 10), resolver(), 0, "c1");
        assert!(l.query(sock(1, 10), resolver(), "b.example", MS).0);
        l.connect(sock(1, 11), resolver(), 2 * MS, "c2");
        assert!(!l.query(sock(1, 11), resolver(), "b.example", 3 * MS).0);
        assert!(!l.holding());
        // Unconnected sends (sendto with an address): the same rules.
        assert!(l.query(sock(1, 20), resolver(), "c.example", 10 * MS).0);
        assert!(!l.query(sock(1, 20), resolver(), "c.example", 4000 * MS).0);
        // (each query restarts the window: the process was still asking at 4000 ms)
        assert!(!l.query(sock(1, 21), resolver(), "c.example", 4500 * MS).0);
        assert!(l.query(sock(1, 22), resolver(), "c.example", 6000 * MS).0);
        // Another process, another name: new lookups.
        assert!(l.query(sock(2, 23), resolver(), "b.example", 4 * MS).0);
        assert!(l.query(sock(1, 20), resolver(), "d.example", 4001 * MS).0);
    }

    #[test]
    fn denied_connects_of_one_lookup_count_once() {
        let mut l: Lookups<&str> = Lookups::default();
        let p = sock(1, 0).proc;
        assert!(l.denied_connect(p, resolver(), 0));
        assert!(!l.denied_connect(p, resolver(), 2 * MS));
        assert!(l.denied_connect(sock(2, 0).proc, resolver(), 2 * MS));
        assert!(l.denied_connect(p, resolver(), 300 * MS));
        assert!(l.denied_connect(p, Dest::from_v4([127, 0, 0, 2], 53), 300 * MS));
    }

    #[test]
    fn memory_is_bounded() {
        let mut l: Lookups<u32> = Lookups::default();
        let mut evicted = Vec::new();
        for i in 0..(MAX_GROUPS as u32 + 10) {
            evicted.extend(l.connect(sock(i, i as u64), resolver(), 0, i));
        }
        assert_eq!(evicted, (0..10).collect::<Vec<_>>());
        assert_eq!(l.groups.len(), MAX_GROUPS);
        assert!(l.by_socket.len() <= MAX_GROUPS);
        assert_eq!(l.drain().len(), MAX_GROUPS);
        for i in 0..100u32 {
            l.query(sock(1, i as u64), resolver(), "x", 0);
        }
        l.sweep(LINGER_NS);
        assert!(l.groups.is_empty() && l.by_socket.is_empty() && l.names.is_empty());
    }
}
