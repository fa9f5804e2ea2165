//! The policy: which category a call belongs to and what happens to it.
//!
//! Sources, later wins: the built-in defaults ([`builtin`]), a policy file ([`file`]: the
//! closest `nettrap.toml` or `pyproject.toml` `[tool.nettrap]` from the working directory up
//! ([`source`]), or `--policy FILE`), then flags (`--deny`,
//! `--record`, `--allow`, `--fail-on`, `--errno`, `--deny-dns`, `--dns-errno`). The merged
//! [`Policy`] is compiled into the fixed-size block that the shim and the supervisor decide
//! with (`nettrap_core::policy`).
//!
//! Hosts in rules and categories are addresses, networks or host-name globs
//! (`api.stripe.com`, `*.internal`, `**.svc.cluster.local`), matched against the name the
//! program resolved (see `nettrap_core::policy`: a name rule never matches a call whose name is
//! unknown). In `--deny` and `--record`, a word that is a category is the category; a name
//! without a dot must be written with a trailing one (`redis.`), so a misspelt category is an
//! error, not a rule that matches nothing.

pub mod builtin;
pub mod file;
pub mod show;
pub mod source;
pub mod spec;

use crate::cli::PolicyArgs;
use anyhow::{Result, bail};
use nettrap_core::policy::{self as core_policy, Action, CompiledPolicy, Net, PortRange};
use spec::{Host, PortSpan};

/// A category: a name for a kind of destination.
#[derive(Clone, Debug)]
pub struct CategoryDef {
    pub name: String,
    pub ports: Vec<PortSpan>,
    pub nets: Vec<Net>,
    /// Host-name globs, lower case.
    pub names: Vec<String>,
}

/// A rule: what happens to the calls it matches.
#[derive(Clone, Debug)]
pub struct RuleDef {
    pub category: Option<String>,
    pub ports: Option<PortSpan>,
    pub net: Option<Net>,
    /// Host-name glob, lower case.
    pub host: Option<String>,
    pub tests: Option<String>,
    pub action: Action,
    pub errno: Option<i32>,
    /// How the rule is shown in messages: `deny elasticsearch`, `allow 127.0.0.1:6379`.
    pub label: String,
}

#[derive(Clone, Debug)]
pub struct Policy {
    /// Index 0 is always `other`; later categories take precedence when classifying.
    pub categories: Vec<CategoryDef>,
    /// Later rules take precedence.
    pub rules: Vec<RuleDef>,
    pub default_errno: i32,
    /// Categories whose recorded calls fail the run.
    pub fail_on: Vec<String>,
    /// `--deny-dns`: deny every lookup that would leave the machine, unless a rule allows it.
    pub deny_dns: bool,
    /// The `EAI_*` code denied lookups fail with.
    pub dns_errno: i32,
    /// Where settings that are not built-in came from, for `nettrap config`: (`errno`,
    /// `category payments`, …, `pyproject.toml:5` or `--errno`); the last note of a key holds.
    pub origins: Vec<(String, String)>,
}

impl Policy {
    /// An enforce run: any deny rule, `--deny-dns` or `--fail-on` category. Losses fail such a
    /// run, and io_uring (which would carry calls past every engine) is refused in it.
    pub fn enforces(&self) -> bool {
        self.rules.iter().any(|r| r.action == Action::Deny)
            || self.deny_dns
            || !self.fail_on.is_empty()
    }

    /// What identifies the policy for `nettrap merge`: FNV-1a (64 bits, a fixed, documented
    /// hash) over the compiled block (rules, categories, errnos, `--deny-dns`) and the
    /// `--fail-on` categories, taken before the launcher adds its per-run flags (engine,
    /// runner). Rule labels hold the policy file's path as given, so shards run with the same
    /// (relative) `--policy` agree across machines.
    pub fn fingerprint(&self, compiled: &nettrap_core::policy::CompiledPolicy) -> String {
        let mut h = crate::fnv::update_sparse(crate::fnv::OFFSET, compiled.as_bytes());
        let mut fail_on: Vec<&str> = self.fail_on.iter().map(String::as_str).collect();
        fail_on.sort_unstable();
        for c in fail_on {
            h = crate::fnv::update(h, b"\0fail_on\0");
            h = crate::fnv::update(h, c.as_bytes());
        }
        format!("fnv1a64:{h:016x}")
    }

    /// Notes where the setting `key` came from (see [`Policy::origins`]).
    pub fn note(&mut self, key: &str, origin: String) {
        self.origins.retain(|(k, _)| k != key);
        self.origins.push((key.to_string(), origin));
    }

    /// Where `key` came from, if not built in.
    pub fn origin(&self, key: &str) -> Option<&str> {
        self.origins
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, o)| o.as_str())
    }

    pub fn has_category(&self, name: &str) -> bool {
        self.categories.iter().any(|c| c.name == name)
    }

    /// Adds a category, replacing a previous one of the same name; it becomes the most specific.
    pub fn define_category(&mut self, def: CategoryDef) {
        self.categories
            .retain(|c| c.name != def.name || c.name == "other");
        self.categories.push(def);
    }

    pub fn category_ports(&self, name: &str) -> Vec<PortSpan> {
        self.categories
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.ports.clone())
            .unwrap_or_default()
    }

    /// The block the shim and the supervisor decide with.
    pub fn compile(&self) -> Result<Box<CompiledPolicy>> {
        let mut p = Box::new(CompiledPolicy::EMPTY);
        p.default_errno = self.default_errno;
        p.dns_errno = self.dns_errno;
        if self.deny_dns {
            p.flags |= core_policy::FLAG_DENY_DNS;
        }
        let full = || {
            anyhow::anyhow!(
                "too many host names in rules and categories (at most {} different ones)",
                core_policy::MAX_HOST_GLOBS
            )
        };
        if self.categories.len() > core_policy::MAX_CATEGORIES {
            bail!(
                "too many categories ({}; at most {})",
                self.categories.len(),
                core_policy::MAX_CATEGORIES
            );
        }
        for (i, c) in self.categories.iter().enumerate() {
            let slot = &mut p.categories[i];
            if c.name.len() >= core_policy::NAME_LEN {
                bail!(
                    "category name `{}` is too long (at most {} bytes)",
                    c.name,
                    core_policy::NAME_LEN - 1
                );
            }
            if c.ports.len() > core_policy::MAX_CATEGORY_PORTS
                || c.nets.len() > core_policy::MAX_CATEGORY_NETS
            {
                bail!(
                    "category `{}` has too many ports or hosts (at most {} of each)",
                    c.name,
                    core_policy::MAX_CATEGORY_PORTS
                );
            }
            core_policy::set_field(&mut slot.name, c.name.as_bytes());
            for (j, span) in c.ports.iter().enumerate() {
                slot.ports[j] = PortRange {
                    lo: span.lo,
                    hi: span.hi,
                };
            }
            slot.n_ports = c.ports.len() as u32;
            slot.nets[..c.nets.len()].copy_from_slice(&c.nets);
            slot.n_nets = c.nets.len() as u32;
            if c.names.len() > core_policy::MAX_CATEGORY_NETS {
                bail!(
                    "category `{}` has too many host names (at most {})",
                    c.name,
                    core_policy::MAX_CATEGORY_NETS
                );
            }
            // A category's names take consecutive places in the pool (not shared).
            let at = p.n_host_globs;
            for name in &c.names {
                if p.n_host_globs as usize >= core_policy::MAX_HOST_GLOBS
                    || name.len() >= core_policy::HOST_GLOB_LEN
                {
                    return Err(full());
                }
                let i = p.n_host_globs as usize;
                core_policy::set_field(&mut p.host_globs[i], name.as_bytes());
                p.n_host_globs += 1;
            }
            p.categories[i].hosts_at = at as u16;
            p.categories[i].n_hosts = c.names.len() as u16;
        }
        p.n_categories = self.categories.len() as u32;
        if self.rules.len() > core_policy::MAX_RULES {
            bail!(
                "too many rules ({}; at most {})",
                self.rules.len(),
                core_policy::MAX_RULES
            );
        }
        for (i, r) in self.rules.iter().enumerate() {
            let slot = &mut p.rules[i];
            slot.category = match &r.category {
                None => core_policy::ANY_CATEGORY,
                Some(name) => match self.categories.iter().position(|c| &c.name == name) {
                    Some(idx) => idx as u32,
                    None => bail!("rule `{}` names unknown category `{name}`", r.label),
                },
            };
            slot.ports = r
                .ports
                .map_or(PortRange::ANY, |s| PortRange { lo: s.lo, hi: s.hi });
            slot.net = r.net.unwrap_or(Net::NONE);
            slot.action = r.action as u32;
            if let Some(name) = &r.host {
                let at = p.add_host_glob(name.as_bytes()).ok_or_else(full)?;
                p.rules[i].host = at;
            }
            let slot = &mut p.rules[i];
            slot.errno = r.errno.unwrap_or(0);
            if let Some(glob) = &r.tests {
                if glob.len() >= core_policy::GLOB_LEN {
                    bail!(
                        "test glob `{glob}` is too long (at most {} bytes)",
                        core_policy::GLOB_LEN - 1
                    );
                }
                core_policy::set_field(&mut slot.tests, glob.as_bytes());
            }
            core_policy::set_field(&mut slot.label, r.label.as_bytes());
        }
        p.n_rules = self.rules.len() as u32;
        Ok(p)
    }
}

/// Loads the policy for `nettrap run`: defaults, then the policy file, then flags.
pub fn load(args: &PolicyArgs) -> Result<Policy> {
    Ok(load_from(args)?.0)
}

/// As [`load`], also saying which file was read.
pub fn load_from(args: &PolicyArgs) -> Result<(Policy, Option<source::Source>)> {
    let mut policy = builtin::defaults();
    let cwd = std::env::current_dir()
        .map_err(|e| anyhow::anyhow!("cannot read the working directory: {e}"))?;
    let mut found = source::find(args.policy.as_deref(), &cwd)?;
    if let Some(src) = &mut found {
        if let Some(table) = src.table.take() {
            file::apply_table(&mut policy, table, &src.text, &src.shown)?;
        } else if src.pyproject {
            if !file::apply_pyproject(&mut policy, &src.text, &src.shown)? {
                bail!("{}: no [tool.nettrap] table", src.shown);
            }
        } else {
            file::apply(&mut policy, &src.text, &src.shown)?;
        }
    }
    apply_flags(&mut policy, args)?;
    Ok((policy, found))
}

pub(crate) fn apply_flags(policy: &mut Policy, args: &PolicyArgs) -> Result<()> {
    if let Some(e) = &args.errno {
        policy.default_errno =
            crate::errno::parse(e).map_err(|m| anyhow::anyhow!("--errno: {m}"))?;
        policy.note("errno", "--errno".into());
    }
    if let Some(e) = &args.dns_errno {
        policy.dns_errno =
            crate::errno::parse_dns(e).map_err(|m| anyhow::anyhow!("--dns-errno: {m}"))?;
        policy.note("dns_errno", "--dns-errno".into());
    }
    if args.default_action == "deny" {
        // The built-in default is the first rule: every rule of the file and flags still
        // overrides it.
        policy.rules[0] = RuleDef::new(Action::Deny, "deny (default)".to_string());
    }
    if args.deny_dns {
        policy.deny_dns = true;
        policy.note("deny_dns", "--deny-dns".into());
    }
    for (flag, items, action) in [
        ("--record", &args.record, Action::Record),
        ("--deny", &args.deny, Action::Deny),
    ] {
        for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let rule = if let Some(span) = PortSpan::parse(item) {
                RuleDef {
                    ports: Some(span),
                    ..RuleDef::new(action, format!("{} {span}", action.name()))
                }
            } else if policy.has_category(item) {
                RuleDef {
                    category: Some(item.to_string()),
                    ..RuleDef::new(action, format!("{} {item}", action.name()))
                }
            } else if item
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && item.chars().any(|c| c.is_ascii_alphabetic())
            {
                bail!(
                    "{flag}: `{item}` is neither a port, a port range (8000-8100), a category \
                     ({}) nor a host; for the host name write `{item}.`",
                    names(policy)
                );
            } else {
                let (host, ports) = spec::parse_host_port(item)
                    .map_err(|m| anyhow::anyhow!("{flag} `{item}`: {m}"))?;
                one_label_guard(policy, flag, item, &host)?;
                host_rule(host, ports, action, format!("{} {item}", action.name()))
            };
            policy.rules.push(rule);
        }
    }
    for item in args
        .allow
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        let (host, ports) =
            spec::parse_host_port(item).map_err(|m| anyhow::anyhow!("--allow `{item}`: {m}"))?;
        one_label_guard(policy, "--allow", item, &host)?;
        policy.rules.push(host_rule(
            host,
            ports,
            Action::Allow,
            format!("allow {item}"),
        ));
    }
    for item in args
        .fail_on
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        if !policy.has_category(item) {
            bail!("--fail-on: unknown category `{item}` ({})", names(policy));
        }
        if !policy.fail_on.iter().any(|c| c == item) {
            policy.fail_on.push(item.to_string());
        }
        policy.note(&format!("fail_on {item}"), "--fail-on".into());
    }
    Ok(())
}

/// A one-label host name in a flag (`redis:6379`) is far more often a misspelt category, or a
/// category given a port, than a host: it must be written with a trailing dot (`redis.:6379`),
/// except `localhost`.
fn one_label_guard(policy: &Policy, flag: &str, item: &str, host: &Host) -> Result<()> {
    let Host::Name(name) = host else {
        return Ok(());
    };
    let written = item.rsplit_once(':').map_or(item, |(h, _)| h);
    if name.contains('.') || name == "localhost" || written.ends_with('.') {
        return Ok(());
    }
    if policy.has_category(name) {
        bail!(
            "{flag} `{item}`: `{name}` is a category, which takes no port (write `{name}`, or \
             `{name}.` for a host of that name)"
        );
    }
    bail!(
        "{flag} `{item}`: `{name}` is not a category ({}); for the host name write `{name}.`",
        names(policy)
    );
}

/// A rule on a host (address, network or name) and ports.
fn host_rule(host: Host, ports: Option<PortSpan>, action: Action, label: String) -> RuleDef {
    let (net, host) = match host {
        Host::Net(n) => (Some(n), None),
        Host::Name(n) => (None, Some(n)),
    };
    RuleDef {
        ports,
        net,
        host,
        ..RuleDef::new(action, label)
    }
}

impl RuleDef {
    /// A rule that matches every call.
    pub fn new(action: Action, label: String) -> RuleDef {
        RuleDef {
            category: None,
            ports: None,
            net: None,
            host: None,
            tests: None,
            action,
            errno: None,
            label,
        }
    }
}

/// `known categories: external-api, elasticsearch, …`
pub fn names(policy: &Policy) -> String {
    let list: Vec<&str> = policy.categories.iter().map(|c| c.name.as_str()).collect();
    format!("known categories: {}", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use nettrap_core::addr::Dest;
    use nettrap_core::policy::{EAI_FAIL, FLAG_DENY_DNS, RULE_DENY_DNS};

    fn flags(args: &[&str]) -> Result<Policy> {
        let mut argv = vec!["nettrap", "run", "--policy", "/nonexistent/nettrap.toml"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--", "true"]);
        let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!()
        };
        let mut policy = builtin::defaults();
        apply_flags(&mut policy, &args.policy)?;
        Ok(policy)
    }

    fn err(args: &[&str]) -> String {
        flags(args).unwrap_err().to_string()
    }

    #[test]
    fn default_deny_is_the_first_rule_so_every_other_rule_overrides_it() {
        let p = flags(&["--default", "deny", "--record", "redis"]).unwrap();
        assert_eq!(p.rules[0].action, Action::Deny);
        assert_eq!(p.rules[0].label, "deny (default)");
        let c = p.compile().unwrap();
        let redis = Dest::from_v4([127, 0, 0, 1], 6379);
        let es = Dest::from_v4([127, 0, 0, 1], 9200);
        assert_eq!(c.decide(&redis, None, None).action, Action::Record);
        assert_eq!(c.decide(&es, None, None).action, Action::Deny);
        assert!(p.enforces());
        let bad = ["nettrap", "run", "--default", "allow", "--", "true"];
        assert!(Cli::try_parse_from(bad).is_err());
    }

    #[test]
    fn names_in_flags() {
        let p = flags(&[
            "--deny",
            "api.*.example:443,redis.",
            "--record",
            "**.svc.cluster.local",
            "--allow",
            "search.internal,127.0.0.0/8:6379",
            "--deny-dns",
            "--dns-errno",
            "EAI_FAIL",
        ])
        .unwrap();
        let c = p.compile().unwrap();
        assert_eq!(
            (c.flags & FLAG_DENY_DNS, c.dns_errno),
            (FLAG_DENY_DNS, EAI_FAIL)
        );
        let d = Dest::from_v4([127, 0, 0, 2], 443);
        let deny = c.decide(&d, None, Some(b"api.payments.example"));
        assert_eq!(deny.action, Action::Deny);
        assert_eq!(
            c.rule_label(deny.rule),
            Some(&b"deny api.*.example:443"[..])
        );
        assert_eq!(c.decide(&d, None, None).action, Action::Record);
        let redis = Dest::from_v4([10, 0, 0, 1], 6379);
        assert_eq!(c.decide(&redis, None, Some(b"redis")).action, Action::Deny);
        assert_eq!(
            c.decide(&redis, None, Some(b"cache")).action,
            Action::Record
        );
        let allow = c.decide(
            &Dest::from_v4([127, 0, 0, 3], 9200),
            None,
            Some(b"search.internal"),
        );
        assert_eq!(allow.action, Action::Allow);
        // Lookups: allowed names resolve, others are denied by --deny-dns.
        assert_eq!(c.decide_lookup(b"search.internal", None), None);
        let d = c.decide_lookup(b"web.ns.svc.cluster.local", None).unwrap();
        assert_eq!((d.rule, d.errno), (RULE_DENY_DNS, EAI_FAIL));
        // Without --deny-dns, a name denied on every port fails fast; on one port it does not.
        let c = flags(&["--deny", "tracker.example"])
            .unwrap()
            .compile()
            .unwrap();
        assert!(c.decide_lookup(b"tracker.example", None).is_some());
        assert!(c.decide_lookup(b"TRACKER.example.", None).is_some());
        assert_eq!(c.decide_lookup(b"other.example", None), None);
        let c = flags(&["--deny", "tracker.example:443"])
            .unwrap()
            .compile()
            .unwrap();
        assert_eq!(c.decide_lookup(b"tracker.example", None), None);
        let c = flags(&["--deny", "dns"]).unwrap().compile().unwrap();
        assert!(c.decide_lookup(b"other.example", None).is_some());
    }

    #[test]
    fn bad_names_in_flags_are_one_line_errors() {
        assert!(
            err(&["--deny", "elasticseach"]).starts_with(
                "--deny: `elasticseach` is neither a port, a port range (8000-8100), a category"
            ),
            "{}",
            err(&["--deny", "elasticseach"])
        );
        assert!(err(&["--deny", "elasticseach"]).contains("write `elasticseach.`"));
        assert_eq!(
            err(&["--record", "a..b"]),
            "--record `a..b`: `a..b` is not a host name (empty label)"
        );
        assert!(
            err(&["--allow", "a b:1"]).starts_with("--allow `a b:1`: `a b` is not a host name")
        );
        assert_eq!(
            err(&["--dns-errno", "EAI_MEMORY"]),
            "--dns-errno: `EAI_MEMORY` is not EAI_NONAME, EAI_AGAIN or EAI_FAIL"
        );
        assert!(err(&["--deny", "10.0.0.*"]).contains("address pattern"));
        for e in [err(&["--deny", "x y"]), err(&["--allow", "*.a:99999"])] {
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
