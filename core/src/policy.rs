//! The compiled policy: categories, rules, and the one function that decides a call.
//!
//! The launcher turns the policy sources (built-in defaults, `nettrap.toml`, flags) into a
//! [`CompiledPolicy`]: a fixed-size, pointer-free `#[repr(C)]` block that it writes to the run
//! directory. The shim maps that file read-only and the seccomp supervisor holds it in memory;
//! both call [`CompiledPolicy::decide`]. Nothing here allocates.
//!
//! Classification: a call belongs to the last-defined category whose ports (if any) match it
//! and whose hosts (if any: networks, or host-name globs) match it; category 0 is always
//! `other`. Decision: the last rule that matches the call's category, port, network or host
//! name, and test (glob) gives the action. The launcher orders categories and rules so that
//! later sources win.
//!
//! Host names: a call's `host` is the name the program resolved the destination from (the shim
//! remembers which name each address a lookup returned came from), or `None` when unknown (the
//! address was used as is, the lookup was not seen: another process, a static resolver, the
//! seccomp engine alone). Name globs ([`glob::host_matches`]: `*` within one label, `**` across
//! labels, ASCII case ignored, a trailing dot ignored) are kept in one pool
//! ([`CompiledPolicy::host_globs`]) that rules and categories point into. **A name condition
//! never matches a call whose name is unknown**: such a call falls through to the rules and
//! categories by address and port.
//!
//! Lookups ([`CompiledPolicy::lookup_decision`]): a name lookup that would leave the machine is a
//! call of its own, to the resolver's port 53 (category `dns`, by port), carrying the name. It
//! is denied, at once and with [`CompiledPolicy::dns_errno`] (an `EAI_*` code), when the rules
//! deny that call (`--deny dns`, a name rule covering port 53), when `--deny-dns`
//! ([`FLAG_DENY_DNS`]) is set and no rule allows the name, or when the policy certainly denies
//! every destination the name can lead to (every port; an allow or record rule by address,
//! category or port could match whatever the name resolves to, so it keeps the lookup alive).

use crate::addr::Dest;
use crate::glob;

pub const MAGIC: [u8; 8] = *b"NTRAPPOL";
/// 2: host-name globs (rules, categories), `dns_errno`.
pub const VERSION: u32 = 2;
pub const MAX_CATEGORIES: usize = 64;
pub const MAX_RULES: usize = 128;
pub const MAX_CATEGORY_PORTS: usize = 16;
pub const MAX_CATEGORY_NETS: usize = 16;
pub const NAME_LEN: usize = 32;
pub const GLOB_LEN: usize = 256;
pub const LABEL_LEN: usize = 160;
/// Room for one host-name glob (a DNS name is at most 253 bytes), NUL-padded.
pub const HOST_GLOB_LEN: usize = 256;
/// Host-name globs in the pool, for rules and categories together.
pub const MAX_HOST_GLOBS: usize = 256;
/// `Rule::host` value: the rule has no name condition.
pub const NO_HOST: u32 = u32::MAX;
/// `Rule::category` value that matches every category.
pub const ANY_CATEGORY: u32 = u32::MAX;
/// Index of the catch-all category.
pub const OTHER: u16 = 0;
/// `CompiledPolicy::flags`: the seccomp supervisor also watches this run, so the shim must mark
/// the system calls it has already decided and recorded (see the shim's module docs).
pub const FLAG_SECCOMP_BACKSTOP: u32 = 1;
/// `CompiledPolicy::flags`: record the calling thread's name with each call (runners that run
/// tests on threads named after them: libtest). Unset, the engines do not read it at all.
pub const FLAG_THREAD_NAMES: u32 = 2;
/// `--deny-dns`: every name lookup that would leave the machine (not answered from
/// `/etc/hosts`, not `localhost`) is denied, at once, by whichever engine sees it.
pub const FLAG_DENY_DNS: u32 = 4;
/// Marks a `connect` the shim has already decided and recorded, in the system call's unused
/// fourth argument. The seccomp filter lets calls carrying it through without notifying the
/// supervisor, so a call that both engines could see is counted once.
pub const SHIM_CONNECT_MARK: u64 = 0x4e54_5241_505f_4f4b; // "NTRAP_OK"
/// `Decision::rule` when no rule matched.
pub const NO_RULE: u16 = u16::MAX;
/// `Decision::rule` of a lookup denied by `--deny-dns` ([`FLAG_DENY_DNS`]).
pub const RULE_DENY_DNS: u16 = u16::MAX - 1;
/// glibc's `getaddrinfo` error codes a denied lookup can fail with ([`CompiledPolicy::dns_errno`]).
pub const EAI_NONAME: i32 = -2;
pub const EAI_AGAIN: i32 = -3;
pub const EAI_FAIL: i32 = -4;

/// What happens to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Action {
    /// Expected: passed through, not reported as offending.
    Allow = 0,
    /// Reported and passed through.
    Record = 1,
    /// Reported, and failed at once with the rule's errno.
    Deny = 2,
}

impl Action {
    pub fn from_u8(v: u8) -> Action {
        match v {
            0 => Action::Allow,
            2 => Action::Deny,
            _ => Action::Record,
        }
    }

    /// The verb used in rules and flags.
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Record => "record",
            Action::Deny => "deny",
        }
    }

    /// The verdict a call gets, as the report names it.
    pub fn verdict(self) -> &'static str {
        match self {
            Action::Allow => "allowed",
            Action::Record => "recorded",
            Action::Deny => "denied",
        }
    }
}

/// An IP network: address (IPv4 as IPv4-mapped IPv6) and prefix length in IPv6 bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    pub ip: [u8; 16],
    pub prefix: u8,
    /// 0 when the rule has no network condition.
    pub set: u8,
    pub _pad: [u8; 2],
}

impl Net {
    pub const NONE: Net = Net {
        ip: [0; 16],
        prefix: 0,
        set: 0,
        _pad: [0; 2],
    };

    pub fn new(ip: [u8; 16], prefix: u8) -> Net {
        Net {
            ip,
            prefix: prefix.min(128),
            set: 1,
            _pad: [0; 2],
        }
    }

    pub fn contains(&self, ip: &[u8; 16]) -> bool {
        let bits = self.prefix as usize;
        let (bytes, rem) = (bits / 8, bits % 8);
        if self.ip[..bytes] != ip[..bytes] {
            return false;
        }
        if rem == 0 {
            return true;
        }
        let mask = 0xffu8 << (8 - rem);
        (self.ip[bytes] & mask) == (ip[bytes] & mask)
    }
}

/// An inclusive port range; `0..=65535` means any port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    pub fn one(port: u16) -> PortRange {
        PortRange { lo: port, hi: port }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Category {
    pub name: [u8; NAME_LEN],
    pub n_ports: u32,
    pub ports: [PortRange; MAX_CATEGORY_PORTS],
    pub n_nets: u32,
    pub nets: [Net; MAX_CATEGORY_NETS],
    /// Host-name globs: `n_hosts` entries of the policy's pool from `hosts_at`.
    pub hosts_at: u16,
    pub n_hosts: u16,
}

impl Category {
    pub const EMPTY: Category = Category {
        name: [0; NAME_LEN],
        n_ports: 0,
        ports: [PortRange { lo: 0, hi: 0 }; MAX_CATEGORY_PORTS],
        n_nets: 0,
        nets: [Net::NONE; MAX_CATEGORY_NETS],
        hosts_at: 0,
        n_hosts: 0,
    };

    pub fn name(&self) -> &[u8] {
        until_nul(&self.name)
    }

    pub fn ports(&self) -> &[PortRange] {
        &self.ports[..(self.n_ports as usize).min(MAX_CATEGORY_PORTS)]
    }

    pub fn nets(&self) -> &[Net] {
        &self.nets[..(self.n_nets as usize).min(MAX_CATEGORY_NETS)]
    }

    /// Indexes of its host-name globs in the policy's pool.
    fn host_range(&self) -> core::ops::Range<usize> {
        let at = self.hosts_at as usize;
        at..at + self.n_hosts as usize
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Rule {
    /// Category index, or [`ANY_CATEGORY`].
    pub category: u32,
    pub ports: PortRange,
    pub net: Net,
    /// Index of the rule's host-name glob in the policy's pool, or [`NO_HOST`].
    pub host: u32,
    /// An [`Action`] as u32.
    pub action: u32,
    /// errno a denied call fails with.
    pub errno: i32,
    /// Test-id glob; empty matches every call, attributed or not.
    pub tests: [u8; GLOB_LEN],
    /// Human-readable rule, for messages: `deny elasticsearch`.
    pub label: [u8; LABEL_LEN],
}

impl Rule {
    pub const EMPTY: Rule = Rule {
        category: ANY_CATEGORY,
        ports: PortRange::ANY,
        net: Net::NONE,
        host: NO_HOST,
        action: Action::Record as u32,
        errno: 0,
        tests: [0; GLOB_LEN],
        label: [0; LABEL_LEN],
    };

    pub fn label(&self) -> &[u8] {
        until_nul(&self.label)
    }

    pub fn tests(&self) -> &[u8] {
        until_nul(&self.tests)
    }

    pub fn action(&self) -> Action {
        Action::from_u8(self.action as u8)
    }

    fn tests_match(&self, test: Option<&[u8]>) -> bool {
        let glob = self.tests();
        glob.is_empty() || test.is_some_and(|t| glob::matches(glob, t))
    }
}

/// The outcome of [`CompiledPolicy::decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub category: u16,
    /// Index of the deciding rule, or [`NO_RULE`].
    pub rule: u16,
    pub action: Action,
    pub errno: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CompiledPolicy {
    pub magic: [u8; 8],
    pub version: u32,
    pub n_categories: u32,
    pub n_rules: u32,
    /// errno for denied calls whose rule gives none.
    pub default_errno: i32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// What a denied lookup fails with: an `EAI_*` code ([`EAI_NONAME`] by default).
    pub dns_errno: i32,
    pub n_host_globs: u32,
    pub _reserved: u32,
    pub categories: [Category; MAX_CATEGORIES],
    pub rules: [Rule; MAX_RULES],
    /// Host-name globs, lower case, without a trailing dot, NUL-padded.
    pub host_globs: [[u8; HOST_GLOB_LEN]; MAX_HOST_GLOBS],
}

// The block is written and mapped as raw bytes: it must have no padding (every byte
// initialised) and the same layout on both sides.
const _: () = assert!(core::mem::size_of::<Net>() == 20);
const _: () = assert!(core::mem::size_of::<Category>() == 32 + 4 + 64 + 4 + 320 + 4);
const _: () =
    assert!(core::mem::size_of::<Rule>() == 4 + 4 + 20 + 4 + 4 + 4 + GLOB_LEN + LABEL_LEN);
const _: () = assert!(
    core::mem::size_of::<CompiledPolicy>()
        == 40
            + MAX_CATEGORIES * core::mem::size_of::<Category>()
            + MAX_RULES * core::mem::size_of::<Rule>()
            + MAX_HOST_GLOBS * HOST_GLOB_LEN
);

impl CompiledPolicy {
    pub const EMPTY: CompiledPolicy = CompiledPolicy {
        magic: MAGIC,
        version: VERSION,
        n_categories: 0,
        n_rules: 0,
        default_errno: 111, // ECONNREFUSED
        flags: 0,
        dns_errno: EAI_NONAME,
        n_host_globs: 0,
        _reserved: 0,
        categories: [Category::EMPTY; MAX_CATEGORIES],
        rules: [Rule::EMPTY; MAX_RULES],
        host_globs: [[0; HOST_GLOB_LEN]; MAX_HOST_GLOBS],
    };

    pub fn categories(&self) -> &[Category] {
        &self.categories[..(self.n_categories as usize).min(MAX_CATEGORIES)]
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules[..(self.n_rules as usize).min(MAX_RULES)]
    }

    pub fn category_name(&self, index: u16) -> &[u8] {
        self.categories()
            .get(index as usize)
            .map_or(b"other", |c| c.name())
    }

    /// Puts a host-name glob in the pool (lower case, without a trailing dot; once), returning
    /// its index; `None` when it is empty, too long or the pool is full.
    pub fn add_host_glob(&mut self, glob: &[u8]) -> Option<u32> {
        let glob = glob.strip_suffix(b".").unwrap_or(glob);
        if glob.is_empty() || glob.len() >= HOST_GLOB_LEN {
            return None;
        }
        let mut field = [0u8; HOST_GLOB_LEN];
        for (d, s) in field.iter_mut().zip(glob) {
            *d = s.to_ascii_lowercase();
        }
        let n = (self.n_host_globs as usize).min(MAX_HOST_GLOBS);
        if let Some(i) = self.host_globs[..n].iter().position(|g| *g == field) {
            return Some(i as u32);
        }
        if n == MAX_HOST_GLOBS {
            return None;
        }
        self.host_globs[n] = field;
        self.n_host_globs = n as u32 + 1;
        Some(n as u32)
    }

    /// Host-name glob `i` of the pool, if there is one.
    pub fn host_glob(&self, i: usize) -> Option<&[u8]> {
        (i < (self.n_host_globs as usize).min(MAX_HOST_GLOBS))
            .then(|| until_nul(&self.host_globs[i]))
    }

    /// The host-name globs of a category.
    pub fn category_hosts(&self, c: &Category) -> impl Iterator<Item = &[u8]> {
        c.host_range().filter_map(|i| self.host_glob(i))
    }

    /// The host-name glob of a rule, if it has one.
    pub fn rule_host(&self, r: &Rule) -> Option<&[u8]> {
        if r.host == NO_HOST {
            return None;
        }
        Some(self.host_glob(r.host as usize).unwrap_or(b""))
    }

    /// How a rule is shown: its label, `--deny-dns` for [`RULE_DENY_DNS`], None for
    /// [`NO_RULE`] (the built-in default: record).
    pub fn rule_label(&self, rule: u16) -> Option<&[u8]> {
        if rule == RULE_DENY_DNS {
            return Some(b"--deny-dns");
        }
        self.rules().get(rule as usize).map(|r| r.label())
    }

    fn category_matches(&self, c: &Category, dest: &Dest, host: Option<&[u8]>) -> bool {
        let (ports, nets) = (c.ports(), c.nets());
        let named = c.n_hosts > 0;
        if ports.is_empty() && nets.is_empty() && !named {
            return false;
        }
        (ports.is_empty() || ports.iter().any(|r| r.contains(dest.port)))
            && ((nets.is_empty() && !named)
                || nets.iter().any(|n| n.contains(&dest.ip))
                || host.is_some_and(|h| self.category_hosts(c).any(|g| glob::host_matches(g, h))))
    }

    /// Does `rule` match a call, its tests aside?
    fn rule_matches_but_tests(
        &self,
        rule: &Rule,
        category: u16,
        dest: &Dest,
        host: Option<&[u8]>,
    ) -> bool {
        if rule.category != ANY_CATEGORY && rule.category != category as u32 {
            return false;
        }
        if !rule.ports.contains(dest.port) {
            return false;
        }
        if rule.net.set != 0 && !rule.net.contains(&dest.ip) {
            return false;
        }
        if let Some(g) = self.rule_host(rule)
            && !host.is_some_and(|h| glob::host_matches(g, h))
        {
            return false;
        }
        true
    }

    /// Which category a destination reached by `host` (the name the program resolved, if
    /// known) belongs to.
    pub fn classify(&self, dest: &Dest, host: Option<&[u8]>) -> u16 {
        let host = host.filter(|h| !h.is_empty());
        let cats = self.categories();
        for i in (1..cats.len()).rev() {
            if self.category_matches(&cats[i], dest, host) {
                return i as u16;
            }
        }
        OTHER
    }

    /// What to do with a call to `dest` made by `test` (`None`: outside any test). `host` is
    /// the name the program resolved `dest` from, when known; rules and categories by name
    /// never match a call without one.
    pub fn decide(&self, dest: &Dest, test: Option<&[u8]>, host: Option<&[u8]>) -> Decision {
        let host = host.filter(|h| !h.is_empty());
        self.decide_in(self.classify(dest, host), dest, test, host)
            .0
    }

    /// [`Self::decide`] for a destination whose category the caller already knows (from
    /// [`Self::classify`] with the same `dest` and `host`, e.g. cached).
    pub fn decide_classified(
        &self,
        category: u16,
        dest: &Dest,
        test: Option<&[u8]>,
        host: Option<&[u8]>,
    ) -> Decision {
        self.decide_in(category, dest, test, host.filter(|h| !h.is_empty()))
            .0
    }

    /// The decision (the last rule that matches), and whether it is the same whatever test
    /// makes the call: no rule that names tests matched the call otherwise, before the deciding
    /// rule.
    fn decide_in(
        &self,
        category: u16,
        dest: &Dest,
        test: Option<&[u8]>,
        host: Option<&[u8]>,
    ) -> (Decision, bool) {
        let rules = self.rules();
        let mut by_test = false;
        for i in (0..rules.len()).rev() {
            let rule = &rules[i];
            if !self.rule_matches_but_tests(rule, category, dest, host) {
                continue;
            }
            by_test |= !rule.tests().is_empty();
            if rule.tests_match(test) {
                return (self.decision_of(category, i as u16), !by_test);
            }
        }
        (self.decision_of(category, NO_RULE), !by_test)
    }

    /// The decision rule `rule` ([`NO_RULE`]: none) gives a call of `category`.
    pub fn decision_of(&self, category: u16, rule: u16) -> Decision {
        match self.rules().get(rule as usize) {
            Some(r) => Decision {
                category,
                rule,
                action: r.action(),
                errno: if r.errno != 0 {
                    r.errno
                } else {
                    self.default_errno
                },
            },
            None => Decision {
                category,
                rule: NO_RULE,
                action: Action::Record,
                errno: self.default_errno,
            },
        }
    }

    /// [`Self::decide_classified`] for a call whose host name is unknown, and whether the
    /// decision is the same whatever test makes the call: no rule that names tests matched it
    /// otherwise before the deciding rule (a cache of decisions by destination keeps only
    /// those).
    pub fn decide_unnamed(
        &self,
        category: u16,
        dest: &Dest,
        test: Option<&[u8]>,
    ) -> (Decision, bool) {
        self.decide_in(category, dest, test, None)
    }

    /// The decision for a lookup of `name` that would leave the machine (not answered from
    /// `/etc/hosts`, not `localhost`, not numeric: the caller checks), made by `test`, sent to
    /// `resolver` (the first nameserver, port 53; `None`: unknown, decided as `[::]:53`).
    /// The lookup is a call of its own: category by the resolver's address and port (`dns`),
    /// rules matched with `name` as its host. Denied (with [`Self::dns_errno`] as `errno`):
    ///
    /// - when the rules deny that call (`--deny dns`, a name rule covering port 53), unless a
    ///   later rule allows the name on some port (by a host glob, or a category's);
    /// - with [`FLAG_DENY_DNS`], unless the call is allowed (a rule allowing the name on some
    ///   port, or the lookup itself): rule [`RULE_DENY_DNS`];
    /// - when every destination the name can lead to is certainly denied, whatever it resolves
    ///   to and on every port (see [`Self::denies_every_destination`]).
    pub fn lookup_decision(
        &self,
        resolver: Option<&Dest>,
        name: &[u8],
        test: Option<&[u8]>,
    ) -> Decision {
        let unknown = Dest {
            ip: [0; 16],
            port: 53,
        };
        let resolver = resolver.unwrap_or(&unknown);
        let mut d = self
            .decide_in(self.classify(resolver, None), resolver, test, Some(name))
            .0;
        // A later rule that allows the name (on any port) lets its lookup through.
        let after = if d.rule == NO_RULE {
            0
        } else {
            d.rule as usize + 1
        };
        if d.action != Action::Allow
            && let Some(i) = self
                .rules()
                .iter()
                .enumerate()
                .skip(after)
                .rev()
                .find_map(|(i, r)| {
                    (r.action() == Action::Allow && r.tests_match(test) && self.names(r, name))
                        .then_some(i)
                })
        {
            d.rule = i as u16;
            d.action = Action::Allow;
        }
        if d.action != Action::Deny {
            if self.flags & FLAG_DENY_DNS != 0 && d.action != Action::Allow {
                d.rule = RULE_DENY_DNS;
                d.action = Action::Deny;
            } else if let Some(i) = self.denies_every_destination(name, test) {
                d.rule = i;
                d.action = Action::Deny;
            }
        }
        if d.action == Action::Deny {
            d.errno = self.dns_errno;
        }
        d
    }

    /// Does rule `r` name `name`: by its host glob, or by its category's host globs (and its
    /// host glob, if it has one, does not exclude the name)?
    fn names(&self, r: &Rule, name: &[u8]) -> bool {
        match self.rule_host(r) {
            Some(g) => glob::host_matches(g, name),
            None => {
                r.category != ANY_CATEGORY
                    && self.categories().get(r.category as usize).is_some_and(|c| {
                        self.category_hosts(c).any(|g| glob::host_matches(g, name))
                    })
            }
        }
    }

    /// [`Self::lookup_decision`] with the resolver unknown, when it denies the lookup: the
    /// lookup must then fail at once with `errno` (an `EAI_*` code).
    pub fn decide_lookup(&self, name: &[u8], test: Option<&[u8]>) -> Option<Decision> {
        Some(self.lookup_decision(None, name, test)).filter(|d| d.action == Action::Deny)
    }

    /// The rule that denies, for `test`, every call to a destination reached by `name` (any
    /// address, every port), if the policy certainly does; `None` when some call could be
    /// allowed or recorded. Conservative: a rule by address, by category (unless the category
    /// is defined by names only and certainly claims the name) or by port that allows or
    /// records could match whatever the name resolves to, so it keeps the name alive.
    pub fn denies_every_destination(&self, name: &[u8], test: Option<&[u8]>) -> Option<u16> {
        const MAX_SPANS: usize = 64;
        // Port ranges on which a later rule denies every destination of the name.
        let mut denied = [PortRange::ANY; MAX_SPANS];
        let mut n = 0usize;
        let mut decider = None;
        let rules = self.rules();
        for i in (0..rules.len()).rev() {
            let r = &rules[i];
            if !r.tests_match(test) {
                continue;
            }
            if let Some(g) = self.rule_host(r)
                && !glob::host_matches(g, name)
            {
                continue; // never matches a call reached by this name
            }
            // The ports the rule can match calls on, and whether it matches every call to a
            // destination of the name on them.
            let (spans, certain): (&[PortRange], bool) = if r.category == ANY_CATEGORY {
                (core::slice::from_ref(&r.ports), r.net.set == 0)
            } else {
                let Some(c) = self.categories().get(r.category as usize) else {
                    continue; // names no category: matches nothing
                };
                if self.cannot_claim(c, r.category as usize, name) {
                    continue;
                }
                let ports = if c.ports().is_empty() {
                    core::slice::from_ref(&r.ports)
                } else {
                    c.ports()
                };
                (
                    ports,
                    r.net.set == 0 && self.certainly_claims(r.category as usize, name, &r.ports),
                )
            };
            let within = |s: &PortRange| PortRange {
                lo: s.lo.max(r.ports.lo),
                hi: s.hi.min(r.ports.hi),
            };
            if r.action() == Action::Deny {
                if !certain {
                    continue; // denies some calls, maybe not all: earlier rules still count
                }
                for s in spans.iter().map(within).filter(|s| s.lo <= s.hi) {
                    if n < MAX_SPANS {
                        denied[n] = s;
                        n += 1;
                        decider.get_or_insert(i as u16);
                    }
                }
                if covered(&denied[..n], PortRange::ANY) {
                    return decider;
                }
            } else if spans
                .iter()
                .map(within)
                .any(|s| s.lo <= s.hi && !covered(&denied[..n], s))
            {
                return None; // may allow or record a call reached by the name
            }
        }
        None // the default (record) decides the rest
    }

    /// Can category `index` never hold a call reached by `name`? (It is defined by names only,
    /// none of which matches; or by nothing.)
    fn cannot_claim(&self, c: &Category, index: usize, name: &[u8]) -> bool {
        if index == OTHER as usize {
            return false;
        }
        let named = c.n_hosts > 0;
        let (ports, nets) = (c.ports(), c.nets());
        if ports.is_empty() && nets.is_empty() && !named {
            return true;
        }
        nets.is_empty() && named && !self.category_hosts(c).any(|g| glob::host_matches(g, name))
    }

    /// Does category `index` hold every call reached by `name` on `ports` (within its own
    /// ports)? Only a category defined by names (no networks) that matches the name, and that no
    /// later category can take any such call from.
    fn certainly_claims(&self, index: usize, name: &[u8], ports: &PortRange) -> bool {
        let cats = self.categories();
        let Some(c) = cats.get(index) else {
            return false;
        };
        if index == OTHER as usize
            || !c.nets().is_empty()
            || !self.category_hosts(c).any(|g| glob::host_matches(g, name))
        {
            return false;
        }
        cats.iter().enumerate().skip(index + 1).all(|(k, later)| {
            self.cannot_claim(later, k, name)
                || (!later.ports().is_empty()
                    && later
                        .ports()
                        .iter()
                        .all(|p| p.hi < ports.lo || p.lo > ports.hi))
        })
    }

    /// The block as bytes, to write to the run directory.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: CompiledPolicy is repr(C), made only of integers and arrays of them, and has
        // no padding (checked by the size assertions above), so every byte is initialised.
        unsafe {
            core::slice::from_raw_parts(
                (self as *const CompiledPolicy).cast::<u8>(),
                core::mem::size_of::<CompiledPolicy>(),
            )
        }
    }

    /// Views bytes written by [`as_bytes`](Self::as_bytes), checking size, alignment and version.
    pub fn from_bytes(bytes: &[u8]) -> Option<&CompiledPolicy> {
        if bytes.len() < core::mem::size_of::<CompiledPolicy>()
            || !(bytes.as_ptr() as usize).is_multiple_of(core::mem::align_of::<CompiledPolicy>())
        {
            return None;
        }
        // SAFETY: size and alignment are checked above, and every bit pattern is a valid
        // CompiledPolicy (integers and arrays only; counts are clamped where used).
        let p = unsafe { &*(bytes.as_ptr().cast::<CompiledPolicy>()) };
        (p.magic == MAGIC && p.version == VERSION).then_some(p)
    }
}

/// Copies `src` into a fixed NUL-padded field, truncated to fit (keeping one NUL).
pub fn set_field(field: &mut [u8], src: &[u8]) {
    field.fill(0);
    let n = src.len().min(field.len().saturating_sub(1));
    field[..n].copy_from_slice(&src[..n]);
}

/// Is every port of `want` inside one of `spans`?
fn covered(spans: &[PortRange], want: PortRange) -> bool {
    let mut next = want.lo as u32;
    loop {
        if next > want.hi as u32 {
            return true;
        }
        match spans
            .iter()
            .find(|s| s.lo as u32 <= next && next <= s.hi as u32)
        {
            Some(s) => next = s.hi as u32 + 1,
            None => return false,
        }
    }
}

fn until_nul(b: &[u8]) -> &[u8] {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..n]
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::boxed::Box;

    fn policy() -> CompiledPolicy {
        let mut p = CompiledPolicy::EMPTY;
        set_field(&mut p.categories[0].name, b"other");
        set_field(&mut p.categories[1].name, b"redis");
        p.categories[1].ports[0] = PortRange::one(6379);
        p.categories[1].n_ports = 1;
        set_field(&mut p.categories[2].name, b"local-redis");
        p.categories[2].ports[0] = PortRange::one(6379);
        p.categories[2].n_ports = 1;
        p.categories[2].nets[0] = Net::new(Dest::from_v4([127, 0, 0, 0], 0).ip, 96 + 8);
        p.categories[2].n_nets = 1;
        p.n_categories = 3;
        p.rules[0] = Rule {
            action: Action::Record as u32,
            ..Rule::EMPTY
        };
        p.rules[1] = Rule {
            category: 1,
            action: Action::Deny as u32,
            ..Rule::EMPTY
        };
        p.rules[2] = Rule {
            category: 1,
            action: Action::Allow as u32,
            ..Rule::EMPTY
        };
        set_field(&mut p.rules[2].tests, b"tests/integration/**");
        p.n_rules = 3;
        p
    }

    #[test]
    fn classify_later_category_wins() {
        let p = policy();
        assert_eq!(p.classify(&Dest::from_v4([127, 0, 0, 1], 6379), None), 2);
        assert_eq!(p.classify(&Dest::from_v4([10, 0, 0, 1], 6379), None), 1);
        assert_eq!(p.classify(&Dest::from_v4([10, 0, 0, 1], 80), None), OTHER);
    }

    #[test]
    fn decide_later_rule_wins_and_globs_scope_rules() {
        let p = policy();
        let d = Dest::from_v4([10, 0, 0, 1], 6379);
        let deny = p.decide(&d, Some(b"tests/unit/test_a.py::t"), None);
        assert_eq!((deny.action, deny.rule, deny.errno), (Action::Deny, 1, 111));
        let allow = p.decide(&d, Some(b"tests/integration/test_a.py::t"), None);
        assert_eq!(allow.action, Action::Allow);
        assert_eq!(p.decide(&d, None, None).action, Action::Deny);
        assert_eq!(
            p.decide(&Dest::from_v4([10, 0, 0, 1], 80), None, None)
                .action,
            Action::Record
        );
    }

    /// decide_unnamed gives decide's answer, and says it holds for every test only where no
    /// rule that names tests matched the call otherwise (what the shim caches by destination).
    #[test]
    fn decide_unnamed_is_decide_and_knows_when_the_test_matters() {
        let p = policy();
        let tests: [Option<&[u8]>; 3] = [
            None,
            Some(b"tests/unit/a.py::t"),
            Some(b"tests/integration/a.py::t"),
        ];
        for (d, every_test) in [
            (Dest::from_v4([10, 0, 0, 1], 6379), false),
            (Dest::from_v4([127, 0, 0, 1], 6379), true),
            (Dest::from_v4([10, 0, 0, 1], 80), true),
        ] {
            let category = p.classify(&d, None);
            for test in tests {
                let (got, every) = p.decide_unnamed(category, &d, test);
                assert_eq!(got, p.decide(&d, test, None), "{d:?} {test:?}");
                assert_eq!(got, p.decision_of(category, got.rule));
                if got.rule != 2 {
                    assert_eq!(every, every_test, "{d:?} {test:?}");
                } else {
                    assert!(!every);
                }
            }
        }
    }

    /// decide_unnamed against decide over every policy of three rules drawn from actions,
    /// test globs, ports and host names: the same decision for every test, and "holds for
    /// every test" only where every other test gets that decision too (the shim caches it by
    /// destination, whoever calls).
    #[test]
    fn decide_unnamed_every_test_holds_for_every_test() {
        let mut p = base();
        let host = p.add_host_glob(b"x.test").unwrap();
        let mut templates = alloc::vec::Vec::new();
        for action in [Action::Allow, Action::Record, Action::Deny] {
            for tests in [&b""[..], b"a::*", b"**"] {
                for ports in [PortRange::ANY, PortRange::one(80)] {
                    for host in [NO_HOST, host] {
                        let mut r = Rule {
                            action: action as u32,
                            ports,
                            host,
                            ..Rule::EMPTY
                        };
                        set_field(&mut r.tests, tests);
                        templates.push(r);
                    }
                }
            }
        }
        let tests: [Option<&[u8]>; 4] = [None, Some(b""), Some(b"a::t"), Some(b"b::t")];
        let dests = [
            Dest::from_v4([127, 0, 0, 1], 80),
            Dest::from_v4([127, 0, 0, 1], 81),
        ];
        for a in &templates {
            for b in &templates {
                for c in &templates {
                    p.rules[..3].copy_from_slice(&[*a, *b, *c]);
                    p.n_rules = 3;
                    for d in &dests {
                        let category = p.classify(d, None);
                        for t in tests {
                            let (got, every) = p.decide_unnamed(category, d, t);
                            assert_eq!(got, p.decide(d, t, None));
                            if every {
                                for t2 in tests {
                                    assert_eq!(got, p.decide(d, t2, None));
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// A policy like the launcher's defaults: `other`, `redis` (6379), `dns` (53), one
    /// catch-all record rule.
    fn base() -> Box<CompiledPolicy> {
        let mut p = Box::new(CompiledPolicy::EMPTY);
        for (i, (name, port)) in [("other", 0), ("redis", 6379), ("dns", 53)]
            .iter()
            .enumerate()
        {
            set_field(&mut p.categories[i].name, name.as_bytes());
            if *port != 0 {
                p.categories[i].ports[0] = PortRange::one(*port);
                p.categories[i].n_ports = 1;
            }
        }
        p.n_categories = 3;
        p.rules[0] = Rule::EMPTY;
        p.n_rules = 1;
        p
    }

    fn category(p: &mut CompiledPolicy, name: &[u8], ports: &[u16], hosts: &[&[u8]]) -> u32 {
        let i = p.n_categories as usize;
        let c = &mut p.categories[i];
        set_field(&mut c.name, name);
        for (j, port) in ports.iter().enumerate() {
            c.ports[j] = PortRange::one(*port);
        }
        c.n_ports = ports.len() as u32;
        let at = p.n_host_globs;
        for h in hosts {
            assert_eq!(p.add_host_glob(h), Some(p.n_host_globs - 1));
        }
        p.categories[i].hosts_at = at as u16;
        p.categories[i].n_hosts = hosts.len() as u16;
        p.n_categories += 1;
        i as u32
    }

    fn rule(p: &mut CompiledPolicy, action: Action, host: Option<&[u8]>, ports: PortRange) -> u16 {
        let host = host.map_or(NO_HOST, |h| p.add_host_glob(h).unwrap());
        let i = p.n_rules as usize;
        p.rules[i] = Rule {
            action: action as u32,
            host,
            ports,
            ..Rule::EMPTY
        };
        p.n_rules += 1;
        i as u16
    }

    const PAY: Option<&[u8]> = Some(b"api.payments.example");

    #[test]
    fn rules_by_name_match_the_resolved_name_only() {
        let mut p = base();
        let r = rule(
            &mut p,
            Action::Deny,
            Some(b"API.*.Example."),
            PortRange::one(443),
        );
        let d = Dest::from_v4([127, 0, 0, 2], 443);
        assert_eq!((p.decide(&d, None, PAY).action), Action::Deny);
        assert_eq!(p.decide(&d, None, PAY).rule, r);
        assert_eq!(
            p.decide(&d, None, Some(b"API.payments.EXAMPLE.")).action,
            Action::Deny
        );
        // Unknown name, other port, other name: the rule does not match.
        assert_eq!(p.decide(&d, None, None).action, Action::Record);
        assert_eq!(p.decide(&d, None, Some(b"")).action, Action::Record);
        let d80 = Dest::from_v4([127, 0, 0, 2], 80);
        assert_eq!(p.decide(&d80, None, PAY).action, Action::Record);
        assert_eq!(
            p.decide(&d, None, Some(b"api.a.b.example")).action,
            Action::Record
        );
        // The pool holds each glob once, lower case, without the dot.
        assert_eq!(p.add_host_glob(b"api.*.example"), Some(0));
        assert_eq!(p.host_glob(0), Some(&b"api.*.example"[..]));
        assert_eq!(p.add_host_glob(b""), None);
        assert_eq!(p.add_host_glob(&[b'a'; HOST_GLOB_LEN]), None);
    }

    #[test]
    fn categories_by_name() {
        let mut p = base();
        let es = category(&mut p, b"search", &[], &[b"*.es.internal"]);
        let mixed = category(&mut p, b"pay", &[443], &[b"api.payments.example"]);
        p.categories[mixed as usize].nets[0] = Net::new(Dest::from_v4([10, 0, 0, 0], 0).ip, 104);
        p.categories[mixed as usize].n_nets = 1;
        let any = Dest::from_v4([192, 0, 2, 1], 9200);
        assert_eq!(p.classify(&any, Some(b"node1.es.internal")), es as u16);
        assert_eq!(p.classify(&any, Some(b"a.node1.es.internal")), OTHER);
        assert_eq!(p.classify(&any, None), OTHER);
        // Ports and hosts (an address or a name) both count.
        let d443 = Dest::from_v4([127, 0, 0, 2], 443);
        assert_eq!(p.classify(&d443, PAY), mixed as u16);
        assert_eq!(p.classify(&d443, None), OTHER);
        assert_eq!(
            p.classify(&Dest::from_v4([10, 0, 0, 9], 443), None),
            mixed as u16
        );
        assert_eq!(p.classify(&Dest::from_v4([127, 0, 0, 2], 80), PAY), OTHER);
        // A rule on the category follows.
        p.rules[1] = Rule {
            category: es,
            action: Action::Deny as u32,
            ..Rule::EMPTY
        };
        p.n_rules = 2;
        assert_eq!(
            p.decide(&any, None, Some(b"node1.es.internal")).action,
            Action::Deny
        );
        assert_eq!(p.decide(&any, None, None).action, Action::Record);
    }

    #[test]
    fn lookups_by_default_are_recorded_dns_calls() {
        let p = base();
        let d = p.lookup_decision(None, b"api.stripe.com", None);
        assert_eq!((d.action, d.category, d.rule), (Action::Record, 2, 0));
        assert_eq!(p.decide_lookup(b"api.stripe.com", None), None);
    }

    #[test]
    fn deny_dns_fails_lookups_unless_the_name_is_allowed() {
        let mut p = base();
        p.flags |= FLAG_DENY_DNS;
        p.dns_errno = EAI_AGAIN;
        let d = p.decide_lookup(b"api.stripe.com", None).unwrap();
        assert_eq!((d.rule, d.errno, d.category), (RULE_DENY_DNS, EAI_AGAIN, 2));
        assert_eq!(p.rule_label(d.rule), Some(&b"--deny-dns"[..]));
        // Allowed on some port: resolves.
        let r = rule(
            &mut p,
            Action::Allow,
            Some(b"*.internal"),
            PortRange::one(9200),
        );
        let d = p.lookup_decision(None, b"search.internal", None);
        assert_eq!((d.action, d.rule), (Action::Allow, r));
        assert!(p.decide_lookup(b"a.search.internal", None).is_some());
        // Recorded is not allowed.
        rule(
            &mut p,
            Action::Record,
            Some(b"cache.internal"),
            PortRange::ANY,
        );
        assert!(p.decide_lookup(b"cache.internal", None).is_some());
    }

    #[test]
    fn the_dns_category_decides_the_lookup_itself() {
        let mut p = base();
        p.rules[1] = Rule {
            category: 2,
            action: Action::Deny as u32,
            ..Rule::EMPTY
        };
        p.n_rules = 2;
        let d = p.decide_lookup(b"api.stripe.com", Some(b"t")).unwrap();
        assert_eq!((d.rule, d.errno), (1, EAI_NONAME));
        // A later rule allowing the name lets its lookup through; an earlier one does not.
        rule(
            &mut p,
            Action::Allow,
            Some(b"search.internal"),
            PortRange::one(9200),
        );
        assert_eq!(p.decide_lookup(b"search.internal", None), None);
        p.rules.swap(1, 2);
        assert!(p.decide_lookup(b"search.internal", None).is_some());
    }

    #[test]
    fn a_name_denied_on_every_port_fails_fast() {
        let mut p = base();
        let r = rule(&mut p, Action::Deny, Some(b"api.*.example"), PortRange::ANY);
        let d = p.decide_lookup(b"api.payments.example", None).unwrap();
        assert_eq!((d.rule, d.category), (r, 2));
        assert_eq!(p.decide_lookup(b"api.stripe.com", None), None);

        // On one port only: the name may lead elsewhere.
        let mut p = base();
        rule(
            &mut p,
            Action::Deny,
            Some(b"api.*.example"),
            PortRange::one(443),
        );
        assert_eq!(p.decide_lookup(b"api.payments.example", None), None);
        // Every port, in pieces, not covering 53.
        let r = rule(
            &mut p,
            Action::Deny,
            Some(b"api.payments.example"),
            PortRange { lo: 0, hi: 52 },
        );
        rule(
            &mut p,
            Action::Deny,
            Some(b"**.example"),
            PortRange { lo: 54, hi: 442 },
        );
        assert_eq!(p.decide_lookup(b"api.payments.example", None), None);
        rule(&mut p, Action::Deny, None, PortRange { lo: 444, hi: 65535 });
        assert_eq!(p.decide_lookup(b"api.payments.example", None), None);
        let last = rule(&mut p, Action::Deny, None, PortRange::one(53));
        let d = p.decide_lookup(b"api.payments.example", None).unwrap();
        assert_eq!(d.rule, last); // the lookup itself (port 53) is denied
        p.n_rules -= 1;
        let d = p.denies_every_destination(b"api.payments.example", None);
        assert_eq!(d, None); // 53 is still open
        let _ = r;
    }

    #[test]
    fn deny_all_with_an_address_allow_keeps_lookups_alive() {
        let mut p = base();
        p.rules[0].action = Action::Deny as u32;
        rule(
            &mut p,
            Action::Allow,
            Some(b"search.internal"),
            PortRange::ANY,
        );
        // Nothing can be reached: fail fast.
        assert!(
            p.denies_every_destination(b"api.stripe.com", None)
                .is_some()
        );
        assert!(p.decide_lookup(b"api.stripe.com", None).is_some());
        assert_eq!(p.decide_lookup(b"search.internal", None), None);
        // An allow by address could match whatever the name resolves to.
        let mut net = Rule {
            action: Action::Allow as u32,
            ..Rule::EMPTY
        };
        net.net = Net::new(Dest::from_v4([127, 0, 0, 0], 0).ip, 104);
        p.rules[p.n_rules as usize] = net;
        p.n_rules += 1;
        assert_eq!(p.denies_every_destination(b"api.stripe.com", None), None);
        // The lookup itself goes to a resolver the policy denies (unknown: [::]:53) ...
        assert!(p.decide_lookup(b"api.stripe.com", None).is_some());
        // ... or allows.
        let local = Dest::from_v4([127, 0, 0, 1], 53);
        let d = p.lookup_decision(Some(&local), b"api.stripe.com", None);
        assert_eq!(d.action, Action::Allow);
        // A port-only allow too.
        let mut p = base();
        p.rules[0].action = Action::Deny as u32;
        rule(&mut p, Action::Record, None, PortRange::one(443));
        assert_eq!(p.denies_every_destination(b"api.stripe.com", None), None);
    }

    #[test]
    fn name_only_categories_decide_lookups_when_certain() {
        let mut p = base();
        let es = category(&mut p, b"search", &[], &[b"**.es.internal"]);
        p.rules[1] = Rule {
            category: es,
            action: Action::Deny as u32,
            ..Rule::EMPTY
        };
        p.n_rules = 2;
        let d = p.decide_lookup(b"n1.es.internal", None).unwrap();
        assert_eq!(d.rule, 1);
        assert_eq!(p.decide_lookup(b"n1.pg.internal", None), None);
        // A later category could take some of its calls (by port): not certain.
        category(&mut p, b"redis2", &[6380], &[]);
        assert_eq!(p.decide_lookup(b"n1.es.internal", None), None);
        // ... unless it is about other names.
        p.n_categories -= 1;
        category(&mut p, b"pg", &[], &[b"*.pg.internal"]);
        assert!(p.decide_lookup(b"n1.es.internal", None).is_some());
        // Scoped to other tests: no effect.
        set_field(&mut p.rules[1].tests, b"tests/unit/**");
        assert_eq!(
            p.decide_lookup(b"n1.es.internal", Some(b"tests/it/a.py::t")),
            None
        );
        assert!(
            p.decide_lookup(b"n1.es.internal", Some(b"tests/unit/a.py::t"))
                .is_some()
        );
    }

    #[test]
    fn port_coverage() {
        let s = [
            PortRange { lo: 0, hi: 10 },
            PortRange { lo: 5, hi: 20 },
            PortRange {
                lo: 21,
                hi: u16::MAX,
            },
        ];
        assert!(covered(&s, PortRange::ANY));
        assert!(!covered(&s[..2], PortRange::ANY));
        assert!(covered(&s[..2], PortRange { lo: 3, hi: 20 }));
        assert!(!covered(&[], PortRange::one(1)));
    }

    #[test]
    fn nets() {
        let n = Net::new(Dest::from_v4([10, 1, 0, 0], 0).ip, 96 + 16);
        assert!(n.contains(&Dest::from_v4([10, 1, 200, 3], 0).ip));
        assert!(!n.contains(&Dest::from_v4([10, 2, 0, 0], 0).ip));
        let odd = Net::new(Dest::from_v4([10, 0, 0, 0], 0).ip, 96 + 9);
        assert!(odd.contains(&Dest::from_v4([10, 127, 0, 0], 0).ip));
        assert!(!odd.contains(&Dest::from_v4([10, 128, 0, 0], 0).ip));
    }

    #[test]
    fn bytes_round_trip() {
        let p = policy();
        let bytes = p.as_bytes();
        // An aligned copy, as a mapping would give.
        let mut buf = [0u64; core::mem::size_of::<CompiledPolicy>() / 8 + 1];
        // SAFETY: buf is large enough and u8 has no alignment requirement.
        let dst =
            unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), bytes.len()) };
        dst.copy_from_slice(bytes);
        let q = CompiledPolicy::from_bytes(dst).unwrap();
        assert_eq!(q.rules()[2].tests(), b"tests/integration/**");
        assert!(CompiledPolicy::from_bytes(&dst[..100]).is_none());
    }
}
