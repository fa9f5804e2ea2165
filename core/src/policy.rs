//! The compiled policy: categories, rules, and the one function that decides a call.
//!
//! The launcher turns the policy sources (built-in defaults, `nettrap.toml`, flags) into a
//! [`CompiledPolicy`]: a fixed-size, pointer-free `#[repr(C)]` block that it writes to the run
//! directory. The shim maps that file read-only and the seccomp supervisor holds it in memory;
//! both call [`CompiledPolicy::decide`]. Nothing here allocates.
//!
//! Classification: a call belongs to the last-defined category whose ports (if any) and
//! networks (if any) match it; category 0 is always `other`. Decision: the last rule that matches
//! the call's category, port, network and test (glob) gives the action. The launcher orders
//! categories and rules so that later sources win.

use crate::addr::Dest;
use crate::glob;

pub const MAGIC: [u8; 8] = *b"NTRAPPOL";
pub const VERSION: u32 = 1;
pub const MAX_CATEGORIES: usize = 64;
pub const MAX_RULES: usize = 128;
pub const MAX_CATEGORY_PORTS: usize = 16;
pub const MAX_CATEGORY_NETS: usize = 16;
pub const NAME_LEN: usize = 32;
pub const GLOB_LEN: usize = 256;
pub const LABEL_LEN: usize = 160;
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
/// `Decision::rule` of a lookup denied by `--deny-dns` ([`FLAG_DENY_DNS`]), which is a flag,
/// not one of the policy's rules; shown as [`DENY_DNS_LABEL`].
pub const DENY_DNS_RULE: u16 = u16::MAX - 1;
/// How a call denied by [`DENY_DNS_RULE`] names its rule, in messages and the report.
pub const DENY_DNS_LABEL: &str = "--deny-dns";

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
}

impl Category {
    pub const EMPTY: Category = Category {
        name: [0; NAME_LEN],
        n_ports: 0,
        ports: [PortRange { lo: 0, hi: 0 }; MAX_CATEGORY_PORTS],
        n_nets: 0,
        nets: [Net::NONE; MAX_CATEGORY_NETS],
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

    fn matches(&self, dest: &Dest) -> bool {
        let (ports, nets) = (self.ports(), self.nets());
        if ports.is_empty() && nets.is_empty() {
            return false;
        }
        (ports.is_empty() || ports.iter().any(|r| r.contains(dest.port)))
            && (nets.is_empty() || nets.iter().any(|n| n.contains(&dest.ip)))
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Rule {
    /// Category index, or [`ANY_CATEGORY`].
    pub category: u32,
    pub ports: PortRange,
    pub net: Net,
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

    fn matches(&self, category: u16, dest: &Dest, test: Option<&[u8]>) -> bool {
        if self.category != ANY_CATEGORY && self.category != category as u32 {
            return false;
        }
        if !self.ports.contains(dest.port) {
            return false;
        }
        if self.net.set != 0 && !self.net.contains(&dest.ip) {
            return false;
        }
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
    pub _reserved: u32,
    pub categories: [Category; MAX_CATEGORIES],
    pub rules: [Rule; MAX_RULES],
}

// The block is written and mapped as raw bytes: it must have no padding (every byte
// initialised) and the same layout on both sides.
const _: () = assert!(core::mem::size_of::<Net>() == 20);
const _: () = assert!(core::mem::size_of::<Category>() == 32 + 4 + 64 + 4 + 320);
const _: () = assert!(core::mem::size_of::<Rule>() == 4 + 4 + 20 + 4 + 4 + GLOB_LEN + LABEL_LEN);
const _: () = assert!(
    core::mem::size_of::<CompiledPolicy>()
        == 32
            + MAX_CATEGORIES * core::mem::size_of::<Category>()
            + MAX_RULES * core::mem::size_of::<Rule>()
);

impl CompiledPolicy {
    pub const EMPTY: CompiledPolicy = CompiledPolicy {
        magic: MAGIC,
        version: VERSION,
        n_categories: 0,
        n_rules: 0,
        default_errno: 111, // ECONNREFUSED
        flags: 0,
        _reserved: 0,
        categories: [Category::EMPTY; MAX_CATEGORIES],
        rules: [Rule::EMPTY; MAX_RULES],
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

    /// Which category a destination belongs to.
    pub fn classify(&self, dest: &Dest) -> u16 {
        let cats = self.categories();
        for i in (1..cats.len()).rev() {
            if cats[i].matches(dest) {
                return i as u16;
            }
        }
        OTHER
    }

    /// What to do with a call to `dest` made by `test` (`None`: outside any test).
    pub fn decide(&self, dest: &Dest, test: Option<&[u8]>) -> Decision {
        let category = self.classify(dest);
        let rules = self.rules();
        for i in (0..rules.len()).rev() {
            let rule = &rules[i];
            if rule.matches(category, dest, test) {
                let errno = if rule.errno != 0 {
                    rule.errno
                } else {
                    self.default_errno
                };
                return Decision {
                    category,
                    rule: i as u16,
                    action: rule.action(),
                    errno,
                };
            }
        }
        Decision {
            category,
            rule: NO_RULE,
            action: Action::Record,
            errno: self.default_errno,
        }
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

fn until_nul(b: &[u8]) -> &[u8] {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(p.classify(&Dest::from_v4([127, 0, 0, 1], 6379)), 2);
        assert_eq!(p.classify(&Dest::from_v4([10, 0, 0, 1], 6379)), 1);
        assert_eq!(p.classify(&Dest::from_v4([10, 0, 0, 1], 80)), OTHER);
    }

    #[test]
    fn decide_later_rule_wins_and_globs_scope_rules() {
        let p = policy();
        let d = Dest::from_v4([10, 0, 0, 1], 6379);
        let deny = p.decide(&d, Some(b"tests/unit/test_a.py::t"));
        assert_eq!((deny.action, deny.rule, deny.errno), (Action::Deny, 1, 111));
        let allow = p.decide(&d, Some(b"tests/integration/test_a.py::t"));
        assert_eq!(allow.action, Action::Allow);
        assert_eq!(p.decide(&d, None).action, Action::Deny);
        assert_eq!(
            p.decide(&Dest::from_v4([10, 0, 0, 1], 80), None).action,
            Action::Record
        );
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
