//! The DNS data model that every part of the system agrees on.
//!
//! The database stores it, Nexus reads it from there and pushes it, the DNS
//! server serves it and omdb compares the two. Everything here is plain data
//! plus the rules that make it valid:
//!
//! - [`DnsConfig`]: one generation of one DNS group, the unit that Nexus pushes
//!   and a DNS server applies atomically.
//! - [`DnsRecord`]: the record types we serve, with their wire JSON
//!   (`{"type": "AAAA", "data": "fd00::1"}`).
//! - [`DnsChange`]: one requested change to a group, which becomes exactly one
//!   new generation; [`change`] decides what it does to the names it touches.
//! - [`names`]: DNS name syntax, shared so that every component rejects the
//!   same names with the same message.
//! - [`digest`]: the one canonical SHA-256 of a config, so that the digest a
//!   DNS server reports can be compared with one computed from the database;
//!   kept up to date name by name ([`DigestState`]).
//! - [`ConfigDiff`]: the difference between two generations, as a DNS
//!   server applies it (only to exactly the base, only to the stated digest).
//! - [`apply_history`]: a DNS server's apply history (what it served
//!   when, refused, started from), as `GET /history` serves it.
//! - [`history`]: a name's history (stretches and events) and near-miss
//!   names, for "what happened to this name?".
//! - [`sync`]: the one classification of a server's state (current, behind,
//!   diverged, ...) against what it should serve.
//! - [`limits`]: the bounds every input is held to (generation, text,
//!   records per name).
//! - [`error_chain`]: an error with its causes on one line, without the
//!   repetition some libraries' messages carry.
//!
//! This crate deliberately pulls in no database, HTTP or DNS library code.

pub mod apply_history;
pub mod change;
mod config_diff;
pub mod digest;
pub mod history;
pub mod limits;
pub mod names;
mod records;
pub mod sync;
pub mod verdict;

pub use config_diff::{ConfigDiff, DiffError, NameChange, ZoneChanges, difference_is_worthwhile};
pub use digest::{DigestState, config_digest};
pub use records::{DnsRecord, RecordError, SrvRecord};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// `error: cause: cause`, on one line.  A cause whose text the message so
/// far already contains is skipped: HTTP client errors often repeat their
/// source's text in their own ("error sending request ...: error sending
/// request ..."), which reads as two failures where there was one.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message.replace('\n', " ")
}

/// The internal DNS zone unless told otherwise: where the control plane's
/// components register (`_nameservice._tcp.<zone>`, ...).
pub const DEFAULT_INTERNAL_ZONE: &str = "control-plane.internal";

/// The two independent DNS deployments.  Each has its own zones, its own
/// generation numbers and its own fleet of servers.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DnsGroup {
    Internal,
    External,
}

impl DnsGroup {
    pub const ALL: [DnsGroup; 2] = [DnsGroup::Internal, DnsGroup::External];

    pub fn as_str(&self) -> &'static str {
        match self {
            DnsGroup::Internal => "internal",
            DnsGroup::External => "external",
        }
    }
}

impl fmt::Display for DnsGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown DNS group {0:?} (expected \"internal\" or \"external\")")]
pub struct UnknownDnsGroup(pub String);

impl FromStr for DnsGroup {
    type Err = UnknownDnsGroup;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "internal" => Ok(DnsGroup::Internal),
            "external" => Ok(DnsGroup::External),
            other => Err(UnknownDnsGroup(other.to_string())),
        }
    }
}

/// One generation of the DNS data of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DnsConfig {
    pub generation: u64,
    pub time_created: DateTime<Utc>,
    /// Who wrote this generation (the id of the Nexus that committed it).
    pub creator: String,
    /// Why this generation exists.
    pub comment: String,
    pub zones: Vec<DnsConfigZone>,
}

/// The contents of one zone at one generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DnsConfigZone {
    /// Absolute zone name, lower case, without the trailing dot.
    pub zone_name: String,
    pub ttl_seconds: u32,
    /// Names relative to the zone (`@` is the apex), each with its records.
    #[serde(deserialize_with = "names_at_their_length")]
    pub names: BTreeMap<String, Vec<DnsRecord>>,
}

/// A zone's names as serde's own map would decode them, except that a name
/// given twice is an error (serde's map would keep the last and drop the
/// first's records without a word), and each list of
/// records allocated at its length: serde grows a list it decodes to room
/// for four records at least, which for one-record names (most of them)
/// made a decoded config take about twice the memory its records need (a
/// whole config of 100,000 names cost a DNS server ~29 MiB to decode).
fn names_at_their_length<'de, D>(
    deserializer: D,
) -> Result<BTreeMap<String, Vec<DnsRecord>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Names;
    impl<'de> serde::de::Visitor<'de> for Names {
        type Value = BTreeMap<String, Vec<DnsRecord>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of names to lists of records")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            // The names are gathered first and the map built from all of
            // them at once: inserted one by one, in the sorted order a
            // config is written in, the map's nodes stayed a little over
            // half full (each split leaves six of eleven behind), where
            // built at once they are full: ~28 bytes a name less, 6 % of
            // what a DNS server holds at its peak while it applies a whole
            // config (docs/PERFORMANCE.md).
            let mut names: Vec<(String, Vec<DnsRecord>)> = Vec::new();
            // Each list is decoded into one buffer kept for the whole map
            // and copied out at its length: shrinking each list in place
            // instead left a small hole behind every name, which what is
            // allocated next (a DNS server compiling the config) filled,
            // interleaved with the config, so that freeing the config later
            // gave few whole pages back.
            let mut scratch = Vec::new();
            while let Some(name) = map.next_key::<String>()? {
                map.next_value_seed(Records(&mut scratch))?;
                let mut records = Vec::with_capacity(scratch.len());
                records.append(&mut scratch);
                names.push((name, records));
            }
            // Written in order, as a config is, this finds them sorted at
            // once; building the map after it then has nothing to sort.
            names.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(twice) = names.windows(2).find(|pair| pair[0].0 == pair[1].0) {
                return Err(serde::de::Error::custom(format!(
                    "the name {:?} is given twice (give each name once, with all its records)",
                    twice[0].0
                )));
            }
            Ok(BTreeMap::from_iter(names))
        }
    }

    /// Appends a list of records to the buffer it holds.
    struct Records<'a>(&'a mut Vec<DnsRecord>);
    impl<'de> serde::de::DeserializeSeed<'de> for Records<'_> {
        type Value = ();

        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> serde::de::Visitor<'de> for Records<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of records")
        }

        fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
            while let Some(record) = seq.next_element::<DnsRecord>()? {
                self.0.push(record);
            }
            Ok(())
        }
    }
    deserializer.deserialize_map(Names)
}

impl DnsConfig {
    /// Total number of names across all zones.
    pub fn name_count(&self) -> usize {
        self.zones.iter().map(|z| z.names.len()).sum()
    }

    /// Checks every rule a config must satisfy before anyone serves it.
    ///
    /// Names and records must already be in canonical form (lower case, no
    /// trailing dots, as [`DnsRecord::normalized`] produces), so that two
    /// configs with the same content are equal and digest the same.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.generation > limits::MAX_GENERATION {
            return Err(ConfigError::GenerationTooLarge { generation: self.generation });
        }
        limits::check_text("the comment", &self.comment, limits::MAX_COMMENT_BYTES)?;
        limits::check_text("the creator", &self.creator, limits::MAX_CREATOR_BYTES)?;
        let mut zones_seen = BTreeSet::new();
        for zone in &self.zones {
            let canonical = names::parse_zone_name(&zone.zone_name).map_err(|source| {
                ConfigError::InvalidZoneName { zone: zone.zone_name.clone(), source }
            })?;
            if canonical != zone.zone_name {
                return Err(ConfigError::NotCanonical {
                    what: format!("zone name {:?}", zone.zone_name),
                    canonical,
                });
            }
            if !zones_seen.insert(zone.zone_name.as_str()) {
                return Err(ConfigError::DuplicateZone { zone: zone.zone_name.clone() });
            }
            for (name, records) in &zone.names {
                validate_name_records(&zone.zone_name, name, records)?;
            }
        }
        for a in &zones_seen {
            for b in &zones_seen {
                if a != b && names::is_subdomain(a, b) {
                    return Err(ConfigError::NestedZones {
                        inner: a.to_string(),
                        outer: b.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Checks the records of one name: each valid and canonical, no duplicates,
/// and a CNAME alone.
pub fn validate_name_records(
    zone: &str,
    name: &str,
    records: &[DnsRecord],
) -> Result<(), ConfigError> {
    let canonical = names::parse_relative_name(name).map_err(|source| {
        ConfigError::InvalidName { zone: zone.into(), name: name.into(), source }
    })?;
    if canonical != name {
        return Err(ConfigError::NotCanonical {
            what: format!("name {name:?} in zone {zone:?}"),
            canonical,
        });
    }
    if records.is_empty() {
        return Err(ConfigError::NoRecords { zone: zone.into(), name: name.into() });
    }
    let mut seen = BTreeSet::new();
    for record in records {
        let normalized = record.normalized().map_err(|source| ConfigError::InvalidRecord {
            zone: zone.into(),
            name: name.into(),
            source,
        })?;
        if &normalized != record {
            return Err(ConfigError::NotCanonical {
                what: format!("record {record} of name {name:?} in zone {zone:?}"),
                canonical: normalized.to_string(),
            });
        }
        if !seen.insert(record) {
            return Err(ConfigError::DuplicateRecord {
                zone: zone.into(),
                name: name.into(),
                record: record.to_string(),
            });
        }
    }
    let owner = if name == "@" { zone.to_string() } else { format!("{name}.{zone}") };
    let size = limits::records_wire_size(&owner, records);
    if size > limits::MAX_NAME_WIRE_BYTES {
        return Err(ConfigError::NameTooLarge {
            zone: zone.into(),
            name: name.into(),
            records: records.len(),
            size,
        });
    }
    if records.len() > 1 && records.iter().any(|r| matches!(r, DnsRecord::Cname(_))) {
        return Err(ConfigError::CnameWithOtherRecords { zone: zone.into(), name: name.into() });
    }
    if name == "@" && records.iter().any(|r| matches!(r, DnsRecord::Cname(_))) {
        return Err(ConfigError::CnameAtApex { zone: zone.into() });
    }
    Ok(())
}

/// Why a config (or part of one) is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid zone name {zone:?}")]
    InvalidZoneName {
        zone: String,
        #[source]
        source: names::NameError,
    },
    #[error("zone {zone:?} appears more than once")]
    DuplicateZone { zone: String },
    #[error("zone {inner:?} is inside zone {outer:?}; nested zones are not supported")]
    NestedZones { inner: String, outer: String },
    #[error("invalid name {name:?} in zone {zone:?}")]
    InvalidName {
        zone: String,
        name: String,
        #[source]
        source: names::NameError,
    },
    #[error("{what} is not in canonical form (expected {canonical:?})")]
    NotCanonical { what: String, canonical: String },
    #[error("name {name:?} in zone {zone:?} has no records")]
    NoRecords { zone: String, name: String },
    #[error("invalid record for name {name:?} in zone {zone:?}")]
    InvalidRecord {
        zone: String,
        name: String,
        #[source]
        source: RecordError,
    },
    #[error("name {name:?} in zone {zone:?} has record {record} more than once")]
    DuplicateRecord { zone: String, name: String, record: String },
    #[error("name {name:?} in zone {zone:?} has a CNAME beside other records")]
    CnameWithOtherRecords { zone: String, name: String },
    #[error("zone {zone:?} has a CNAME at its apex")]
    CnameAtApex { zone: String },
    #[error(
        "generation {generation} does not fit the 32-bit SOA serial (at most {})",
        limits::MAX_GENERATION
    )]
    GenerationTooLarge { generation: u64 },
    #[error(transparent)]
    Text(#[from] limits::TextError),
    #[error(
        "name {name:?} in zone {zone:?} has {records} records taking {size} bytes on the wire \
         (at most {} allowed, so that every answer fits one DNS message)",
        limits::MAX_NAME_WIRE_BYTES
    )]
    NameTooLarge { zone: String, name: String, records: usize, size: usize },
}

/// A requested change to one DNS group: it becomes exactly one generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DnsChange {
    /// Why the change is made; stored with the generation it creates.
    pub comment: String,
    /// Records to add; a name that does not exist yet is created.
    #[serde(default)]
    pub add: Vec<NameRecords>,
    /// Records (or, without `records`, whole names) to remove.
    #[serde(default)]
    pub remove: Vec<NameRemoval>,
    /// Chosen by the caller to make a retry safe: a change sent again with
    /// the same key (because the first call's outcome was lost: a cut
    /// connection, a failover) is not applied again, and the answer is the
    /// generation the first call created.  1 to 128 printable ASCII
    /// characters; unique per group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Records to add to one name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NameRecords {
    /// A name relative to the group's zone (`@` for the apex), or an absolute
    /// name inside one of the group's zones (`foo.example.test.`).
    pub name: String,
    pub records: Vec<DnsRecord>,
}

/// A name, or some of its records, to remove.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NameRemoval {
    pub name: String,
    /// The records to remove; absent means the whole name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<DnsRecord>>,
}

/// One generation of a group, without its contents: when, by whom, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DnsVersion {
    pub group: DnsGroup,
    pub generation: u64,
    pub time_created: DateTime<Utc>,
    pub creator: String,
    pub comment: String,
}

/// What changed in a group between two generations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DnsDiff {
    pub group: DnsGroup,
    pub from_generation: u64,
    pub to_generation: u64,
    /// Only zones with changes appear.
    pub zones: Vec<ZoneDiff>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ZoneDiff {
    pub zone_name: String,
    /// Changed names, sorted by name.
    pub names: Vec<NameDiff>,
}

/// One name's records before and after; empty `before` means the name was
/// added, empty `after` that it was removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NameDiff {
    pub name: String,
    pub before: Vec<DnsRecord>,
    pub after: Vec<DnsRecord>,
}

impl NameDiff {
    pub fn added_records(&self) -> impl Iterator<Item = &DnsRecord> {
        self.after.iter().filter(|r| !self.before.contains(r))
    }
    pub fn removed_records(&self) -> impl Iterator<Item = &DnsRecord> {
        self.before.iter().filter(|r| !self.after.contains(r))
    }
}

/// Computes the diff of two full configs of one group in memory.  The
/// database computes the same thing from only the rows that changed; this
/// is for comparing configs from elsewhere (and for checking the database).
pub fn diff_configs(group: DnsGroup, from: &DnsConfig, to: &DnsConfig) -> DnsDiff {
    let empty = BTreeMap::new();
    let mut zone_names: BTreeSet<&str> = BTreeSet::new();
    zone_names.extend(from.zones.iter().map(|z| z.zone_name.as_str()));
    zone_names.extend(to.zones.iter().map(|z| z.zone_name.as_str()));
    let names_of = |config: &'_ DnsConfig, zone: &str| {
        config.zones.iter().find(|z| z.zone_name == zone).map(|z| z.names.clone())
    };
    let zones = zone_names
        .into_iter()
        .filter_map(|zone| {
            let before = names_of(from, zone).unwrap_or_else(|| empty.clone());
            let after = names_of(to, zone).unwrap_or_else(|| empty.clone());
            let all: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            let names: Vec<NameDiff> = all
                .into_iter()
                .filter_map(|name| {
                    let mut b = before.get(name).cloned().unwrap_or_default();
                    let mut a = after.get(name).cloned().unwrap_or_default();
                    b.sort();
                    a.sort();
                    (a != b).then(|| NameDiff { name: name.clone(), before: b, after: a })
                })
                .collect();
            (!names.is_empty()).then(|| ZoneDiff { zone_name: zone.to_string(), names })
        })
        .collect();
    DnsDiff { group, from_generation: from.generation, to_generation: to.generation, zones }
}

#[cfg(test)]
mod tests {

    /// A zone's names decode as serde's own map would decode them, each
    /// list of records held at its length.
    #[test]
    fn names_decode_with_each_list_at_its_length() {
        let json = serde_json::json!({
            "zone_name": "example.test", "ttl_seconds": 60,
            "names": {
                "one": [{"type": "A", "data": "192.0.2.1"}],
                "three": [
                    {"type": "A", "data": "192.0.2.1"},
                    {"type": "AAAA", "data": "fd00::1"},
                    {"type": "TXT", "data": "x"}
                ],
                "none": []
            }
        });
        let zone: DnsConfigZone = serde_json::from_value(json.clone()).unwrap();
        let plain: BTreeMap<String, Vec<DnsRecord>> =
            serde_json::from_value(json["names"].clone()).unwrap();
        assert_eq!(zone.names, plain);
        for (name, records) in &zone.names {
            assert_eq!(records.capacity(), records.len(), "{name}");
        }
        // Out of order: as serde's map.
        let zone_of = |names: &str| {
            serde_json::from_str::<DnsConfigZone>(&format!(
                r#"{{"zone_name": "example.test", "ttl_seconds": 60, "names": {names}}}"#
            ))
        };
        let names = r#"{"c": [], "a": [{"type": "TXT", "data": "x"}], "b": []}"#;
        let plain: BTreeMap<String, Vec<DnsRecord>> = serde_json::from_str(names).unwrap();
        assert_eq!(zone_of(names).unwrap().names, plain);
        // A name twice is refused, named, rather than one list dropped.
        let twice = r#"{"b": [], "a": [{"type": "TXT", "data": "first"}], "c": [],
            "a": [{"type": "TXT", "data": "last"}]}"#;
        let error = zone_of(twice).unwrap_err().to_string();
        assert!(error.contains(r#"the name "a" is given twice"#), "{error}");
        let bad = serde_json::json!({"zone_name": "z", "ttl_seconds": 1, "names": {"a": 1}});
        let error = serde_json::from_value::<DnsConfigZone>(bad).unwrap_err();
        assert!(error.to_string().contains("a list of records"), "{error}");
    }
    use super::*;
    use std::net::Ipv6Addr;

    fn zone(names: &[(&str, Vec<DnsRecord>)]) -> DnsConfigZone {
        DnsConfigZone {
            zone_name: "control-plane.internal".into(),
            ttl_seconds: 60,
            names: names.iter().map(|(n, r)| (n.to_string(), r.clone())).collect(),
        }
    }

    fn config(zones: Vec<DnsConfigZone>) -> DnsConfig {
        DnsConfig {
            generation: 3,
            time_created: Utc::now(),
            creator: "test".into(),
            comment: "test".into(),
            zones,
        }
    }

    #[test]
    fn valid_config_passes() {
        let aaaa = DnsRecord::Aaaa(Ipv6Addr::LOCALHOST);
        let srv = DnsRecord::Srv(SrvRecord {
            prio: 0,
            weight: 0,
            port: 123,
            target: "abc.host.control-plane.internal".into(),
        });
        config(vec![zone(&[("abc.host", vec![aaaa]), ("_nexus._tcp", vec![srv])])])
            .validate()
            .unwrap();
    }

    #[test]
    fn invalid_configs_name_the_culprit() {
        let aaaa = DnsRecord::Aaaa(Ipv6Addr::LOCALHOST);
        let cname = DnsRecord::Cname("other.example.test".into());
        let cases: Vec<(DnsConfig, &str)> = vec![
            (config(vec![zone(&[("UPPER", vec![aaaa.clone()])])]), "\"UPPER\""),
            (config(vec![zone(&[("bad..name", vec![aaaa.clone()])])]), "\"bad..name\""),
            (config(vec![zone(&[("empty", vec![])])]), "\"empty\" in zone"),
            (
                config(vec![zone(&[("dup", vec![aaaa.clone(), aaaa.clone()])])]),
                "has record AAAA ::1 more than once",
            ),
            (
                config(vec![zone(&[("c", vec![cname.clone(), aaaa.clone()])])]),
                "CNAME beside other records",
            ),
            (config(vec![zone(&[("@", vec![cname])])]), "CNAME at its apex"),
            (config(vec![zone(&[]), zone(&[])]), "appears more than once"),
        ];
        for (config, expected) in cases {
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?} should contain {expected:?}");
        }
    }

    #[test]
    fn nested_zones_rejected() {
        let mut inner = zone(&[]);
        inner.zone_name = "sub.control-plane.internal".into();
        let error = config(vec![zone(&[]), inner]).validate().unwrap_err();
        assert!(matches!(error, ConfigError::NestedZones { .. }), "{error}");
    }

    #[test]
    fn change_json_shape() {
        let change: DnsChange = serde_json::from_str(
            r#"{"comment":"c","add":[{"name":"a","records":[{"type":"A","data":"192.0.2.1"}]}],
                "remove":[{"name":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(change.add[0].records[0], DnsRecord::A("192.0.2.1".parse().unwrap()));
        assert_eq!(change.remove[0].records, None);
    }
}
