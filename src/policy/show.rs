//! `nettrap config`: the effective policy (built-in defaults, the policy file, flags) and
//! where each part came from, as `nettrap run` with the same flags in the same directory
//! would use it.

use super::{Policy, source::Source};
use crate::cli::PolicyArgs;
use anyhow::Result;
use std::fmt::Write as _;
use std::net::Ipv6Addr;

pub fn config_command(args: PolicyArgs) -> Result<u8> {
    let (policy, source) = super::load_from(&args)?;
    // The compiled block's limits (rule and category counts) are checked as a run would.
    policy.compile()?;
    print!("{}", render(&policy, source.as_ref()));
    Ok(0)
}

/// The text `nettrap config` prints.
pub fn render(policy: &Policy, source: Option<&Source>) -> String {
    let mut out = String::new();
    let from = |key: &str| policy.origin(key).unwrap_or("built-in").to_string();
    match source {
        Some(s) if s.pyproject => {
            let _ = writeln!(out, "policy file: {} [tool.nettrap] ({})", s.shown, s.why);
        }
        Some(s) => {
            let _ = writeln!(out, "policy file: {} ({})", s.shown, s.why);
        }
        None => {
            let _ = writeln!(
                out,
                "policy file: none (no nettrap.toml, nor pyproject.toml with [tool.nettrap], from \
                 the working directory up)"
            );
        }
    }
    if let Some(sh) = source.and_then(|s| s.shadowed.as_ref()) {
        let _ = writeln!(
            out,
            "ignored: {sh} (nettrap.toml in the same directory wins whole; the files are not \
             merged)"
        );
    }
    let _ = writeln!(out);
    let rows = [
        (
            "errno",
            crate::errno::name(policy.default_errno),
            from("errno"),
        ),
        ("deny_dns", policy.deny_dns.to_string(), from("deny_dns")),
        (
            "dns_errno",
            crate::errno::eai_name(policy.dns_errno),
            from("dns_errno"),
        ),
    ];
    for (key, value, origin) in rows {
        let _ = writeln!(out, "{key:<10} {value:<28} {origin}");
    }
    if policy.fail_on.is_empty() {
        let _ = writeln!(out, "{:<10} {:<28} built-in", "fail_on", "(none)");
    }
    for c in &policy.fail_on {
        let _ = writeln!(
            out,
            "{:<10} {c:<28} {}",
            "fail_on",
            from(&format!("fail_on {c}"))
        );
    }
    let _ = writeln!(
        out,
        "\ncategories (a call belongs to the last that matches its port and host):"
    );
    for c in policy.categories.iter().skip(1) {
        let mut what: Vec<String> = Vec::new();
        if !c.ports.is_empty() {
            let ports: Vec<String> = c.ports.iter().map(|p| p.to_string()).collect();
            what.push(format!("ports {}", ports.join(",")));
        }
        let hosts: Vec<String> = c
            .nets
            .iter()
            .map(net)
            .chain(c.names.iter().cloned())
            .collect();
        if !hosts.is_empty() {
            what.push(format!("hosts {}", hosts.join(",")));
        }
        let _ = writeln!(
            out,
            "  {:<16} {:<32} {}",
            c.name,
            what.join(" "),
            from(&format!("category {}", c.name))
        );
    }
    let _ = writeln!(out, "  {:<16} {:<32} built-in", "other", "everything else");
    let _ = writeln!(out, "\nrules (the last that matches a call decides):");
    for r in &policy.rules {
        let mut line = format!("  {}", r.label);
        // A file's rules name their file and line in the label; the default is built in; the
        // rest came from --deny, --record and --allow.
        if !r.label.contains(", ") && r.label != "record (default)" {
            line.push_str(" (flag)");
        }
        if let Some(t) = &r.tests {
            let _ = write!(line, " (tests {t})");
        }
        if let Some(e) = r.errno {
            let _ = write!(line, " (errno {})", crate::errno::name(e));
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

/// An address or network as written: `10.20.0.0/16`, `127.0.0.5`, `::1`.
fn net(n: &nettrap_core::policy::Net) -> String {
    let ip = Ipv6Addr::from(n.ip);
    match ip.to_ipv4_mapped() {
        Some(v4) if n.prefix >= 96 => match n.prefix {
            128 => v4.to_string(),
            p => format!("{v4}/{}", p - 96),
        },
        _ => match n.prefix {
            128 => ip.to_string(),
            p => format!("{ip}/{p}"),
        },
    }
}
