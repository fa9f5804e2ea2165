//! The policy: which category a call belongs to and what happens to it.
//!
//! Sources, later wins: the built-in defaults ([`builtin`]), a policy file ([`file`]:
//! `nettrap.toml` in the working directory, or `--policy FILE`), then flags (`--deny`,
//! `--record`, `--allow`, `--fail-on`, `--errno`). The merged [`Policy`] is compiled into the
//! fixed-size block that the shim and the supervisor decide with (`nettrap_core::policy`).

pub mod builtin;
pub mod file;
pub mod spec;

use crate::cli::RunArgs;
use anyhow::{Result, bail};
use nettrap_core::policy::{self as core_policy, Action, CompiledPolicy, Net, PortRange};
use spec::PortSpan;
use std::path::Path;

/// A category: a name for a kind of destination.
#[derive(Clone, Debug)]
pub struct CategoryDef {
    pub name: String,
    pub ports: Vec<PortSpan>,
    pub nets: Vec<Net>,
}

/// A rule: what happens to the calls it matches.
#[derive(Clone, Debug)]
pub struct RuleDef {
    pub category: Option<String>,
    pub ports: Option<PortSpan>,
    pub net: Option<Net>,
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
    /// `--deny-dns`: every lookup that would leave the machine is denied.
    pub deny_dns: bool,
}

impl Policy {
    pub fn has_category(&self, name: &str) -> bool {
        self.categories.iter().any(|c| c.name == name)
    }

    /// Adds a category, replacing a previous one of the same name; it becomes the most specific.
    pub fn define_category(&mut self, def: CategoryDef) {
        self.categories
            .retain(|c| c.name != def.name || c.name == "other");
        self.categories.push(def);
    }

    /// Does the policy deny anything (so losses fail the run, and io_uring is refused)?
    pub fn denies(&self) -> bool {
        self.deny_dns || self.rules.iter().any(|r| r.action == Action::Deny)
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
        if self.deny_dns {
            p.flags |= core_policy::FLAG_DENY_DNS;
        }
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
pub fn load(args: &RunArgs) -> Result<Policy> {
    let mut policy = builtin::defaults();
    let path = match &args.policy {
        Some(p) => Some(p.clone()),
        None => Some(Path::new("nettrap.toml").to_path_buf()).filter(|p| p.is_file()),
    };
    if let Some(path) = path {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read policy file {}: {e}", path.display()))?;
        file::apply(&mut policy, &text, &path.display().to_string())?;
    }
    apply_flags(&mut policy, args)?;
    Ok(policy)
}

fn apply_flags(policy: &mut Policy, args: &RunArgs) -> Result<()> {
    policy.deny_dns |= args.deny_dns;
    if let Some(e) = &args.errno {
        policy.default_errno =
            crate::errno::parse(e).map_err(|m| anyhow::anyhow!("--errno: {m}"))?;
    }
    for (flag, items, action) in [
        ("--record", &args.record, Action::Record),
        ("--deny", &args.deny, Action::Deny),
    ] {
        for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let rule = if let Some(span) = PortSpan::parse(item) {
                RuleDef {
                    category: None,
                    ports: Some(span),
                    net: None,
                    tests: None,
                    action,
                    errno: None,
                    label: format!("{} {span}", action.name()),
                }
            } else if policy.has_category(item) {
                RuleDef {
                    category: Some(item.to_string()),
                    ports: None,
                    net: None,
                    tests: None,
                    action,
                    errno: None,
                    label: format!("{} {item}", action.name()),
                }
            } else {
                bail!(
                    "{flag}: `{item}` is neither a port, a port range (8000-8100) nor a category ({})",
                    names(policy)
                );
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
        let (net, ports) =
            spec::parse_host_port(item).map_err(|m| anyhow::anyhow!("--allow `{item}`: {m}"))?;
        policy.rules.push(RuleDef {
            category: None,
            ports,
            net: Some(net),
            tests: None,
            action: Action::Allow,
            errno: None,
            label: format!("allow {item}"),
        });
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
    }
    Ok(())
}

/// `known categories: external-api, elasticsearch, …`
pub fn names(policy: &Policy) -> String {
    let list: Vec<&str> = policy.categories.iter().map(|c| c.name.as_str()).collect();
    format!("known categories: {}", list.join(", "))
}
