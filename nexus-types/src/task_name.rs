//! The names of the DNS background tasks, as a type: `dns_config_<group>`,
//! `dns_servers_<group>`, `dns_propagation_<group>`.  Nexus registers its
//! tasks under these and omdb recognizes them by parsing, so the spelling
//! lives here alone.

use dns_types::DnsGroup;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// What a DNS task does, in pipeline order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DnsTaskKind {
    Config,
    Servers,
    Propagation,
}

impl DnsTaskKind {
    pub const ALL: [DnsTaskKind; 3] =
        [DnsTaskKind::Config, DnsTaskKind::Servers, DnsTaskKind::Propagation];

    fn prefix(self) -> &'static str {
        match self {
            DnsTaskKind::Config => "dns_config",
            DnsTaskKind::Servers => "dns_servers",
            DnsTaskKind::Propagation => "dns_propagation",
        }
    }
}

/// One DNS background task's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsTaskName {
    pub kind: DnsTaskKind,
    pub group: DnsGroup,
}

impl DnsTaskName {
    pub fn config(group: DnsGroup) -> Self {
        DnsTaskName { kind: DnsTaskKind::Config, group }
    }
    pub fn servers(group: DnsGroup) -> Self {
        DnsTaskName { kind: DnsTaskKind::Servers, group }
    }
    pub fn propagation(group: DnsGroup) -> Self {
        DnsTaskName { kind: DnsTaskKind::Propagation, group }
    }
    /// The three tasks of `group`, in pipeline order.
    pub fn of_group(group: DnsGroup) -> [DnsTaskName; 3] {
        DnsTaskKind::ALL.map(|kind| DnsTaskName { kind, group })
    }
    /// The shorthand that selects a group's three tasks (`dns_internal`).
    pub fn group_selector(group: DnsGroup) -> String {
        format!("dns_{group}")
    }
}

impl fmt::Display for DnsTaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.kind.prefix(), self.group)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct NotADnsTask(pub String);

impl fmt::Display for NotADnsTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not the name of a DNS background task", self.0)
    }
}

impl std::error::Error for NotADnsTask {}

impl FromStr for DnsTaskName {
    type Err = NotADnsTask;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        for kind in DnsTaskKind::ALL {
            if let Some(group) = s.strip_prefix(kind.prefix()).and_then(|r| r.strip_prefix('_'))
                && let Ok(group) = group.parse::<DnsGroup>()
            {
                return Ok(DnsTaskName { kind, group });
            }
        }
        Err(NotADnsTask(s.to_string()))
    }
}

impl Serialize for DnsTaskName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DnsTaskName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_refused() {
        for group in DnsGroup::ALL {
            for name in DnsTaskName::of_group(group) {
                assert_eq!(name.to_string().parse::<DnsTaskName>(), Ok(name));
            }
        }
        assert_eq!(
            DnsTaskName::propagation(DnsGroup::External).to_string(),
            "dns_propagation_external"
        );
        for bad in ["dns_config", "dns_config_", "dns_config_sideways", "widget", "dns_internal"] {
            assert!(bad.parse::<DnsTaskName>().is_err(), "{bad}");
        }
    }
}
