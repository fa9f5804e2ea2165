//! The built-in categories and the default rule.
//!
//! Loopback is not special: the seed story's Redis was a local service and still counted.

use super::spec::PortSpan;
use super::{CategoryDef, Policy, RuleDef};
use nettrap_core::policy::Action;

/// Name and ports of each built-in category, least specific first (`other` is index 0).
pub const CATEGORIES: &[(&str, &[u16])] = &[
    ("other", &[]),
    ("external-api", &[80, 443]),
    ("elasticsearch", &[9200, 9300]),
    ("redis", &[6379]),
    ("postgres", &[5432]),
    ("mysql", &[3306]),
    ("mongodb", &[27017]),
    ("memcached", &[11211]),
    ("kafka", &[9092]),
    ("rabbitmq", &[5672]),
    ("dns", &[53]),
];

pub fn defaults() -> Policy {
    Policy {
        categories: CATEGORIES
            .iter()
            .map(|(name, ports)| CategoryDef {
                name: name.to_string(),
                ports: ports.iter().map(|&p| PortSpan { lo: p, hi: p }).collect(),
                nets: Vec::new(),
                names: Vec::new(),
            })
            .collect(),
        rules: vec![RuleDef::new(Action::Record, "record (default)".to_string())],
        default_errno: libc::ECONNREFUSED,
        fail_on: Vec::new(),
        deny_dns: false,
        dns_errno: nettrap_core::policy::EAI_NONAME,
        origins: Vec::new(),
    }
}
