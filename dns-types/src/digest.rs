//! The one canonical digest of a DNS config, kept up to date in proportion
//! to a change.
//!
//! A DNS server reports the digest of what it applied; Nexus and omdb
//! compute the digest of the same generation from the database and compare.
//! Both sides must encode the config identically, so the encoding is fixed
//! here and nowhere else.
//!
//! A one-name change must not cost a pass over 100,000 names, on either
//! side, so the digest is built in two levels:
//!
//! 1. each name has its own SHA-256 ([`name_hash`]), over the zone, the
//!    name and its records, the records sorted by their JSON encoding (so
//!    record order in storage does not matter);
//! 2. each zone keeps the sum of its names' hashes modulo 2^256 and their
//!    count ([`ZoneSum`]); the sum does not depend on the order the names
//!    are added in, and a name is taken out again by subtracting its hash.
//!
//! The digest is the SHA-256 of the canonical JSON of the generation and,
//! per zone sorted by name, its name, TTL, name count and sum.  Only what is
//! served counts: the metadata (time created, creator, comment) does not,
//! since timestamps lose precision on some paths.  Equal content gives equal
//! digests; different content gives different digests unless someone finds
//! SHA-256 collisions or a set of names whose hashes add up to another
//! set's (an additive multiset hash; with 256-bit sums that is far beyond
//! reach for any zone we serve).  The result is `sha256:` and 64 lower-case
//! hex digits.

use crate::{DnsConfig, DnsRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// SHA-256 of one name with its records (see the module docs).
pub fn name_hash(zone: &str, name: &str, records: &[DnsRecord]) -> [u8; 32] {
    let mut encoded: Vec<String> =
        records.iter().map(|r| serde_json::to_string(r).unwrap_or_default()).collect();
    encoded.sort();
    let mut hasher = Sha256::new();
    // `["zone","name",[records...]]`: JSON strings are self-delimiting.
    hasher.update(b"[");
    hasher.update(serde_json::to_string(zone).unwrap_or_default());
    hasher.update(b",");
    hasher.update(serde_json::to_string(name).unwrap_or_default());
    hasher.update(b",[");
    for (i, record) in encoded.iter().enumerate() {
        if i > 0 {
            hasher.update(b",");
        }
        hasher.update(record.as_bytes());
    }
    hasher.update(b"]]");
    hasher.finalize().into()
}

/// A 256-bit sum of name hashes, big-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum256([u8; 32]);

impl Sum256 {
    fn add(&mut self, hash: &[u8; 32]) {
        let mut carry = 0u16;
        for i in (0..32).rev() {
            let total = u16::from(self.0[i]) + u16::from(hash[i]) + carry;
            self.0[i] = total as u8;
            carry = total >> 8;
        }
    }

    fn subtract(&mut self, hash: &[u8; 32]) {
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut total = i16::from(self.0[i]) - i16::from(hash[i]) - borrow;
            borrow = 0;
            if total < 0 {
                total += 256;
                borrow = 1;
            }
            self.0[i] = total as u8;
        }
    }

    fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl Serialize for Sum256 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for Sum256 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bad = || serde::de::Error::custom(format!("not 64 hex digits: {text:?}"));
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Sum256(bytes))
    }
}

/// One zone's part of the digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSum {
    pub zone_name: String,
    pub ttl_seconds: u32,
    /// How many names are summed.
    pub names: u64,
    pub sum: Sum256,
}

/// What the digest of a config is computed from, updatable name by name.
/// Its JSON form is what the database stores per generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DigestState {
    /// Sorted by zone name.
    zones: Vec<ZoneSum>,
}

/// A name was given for a zone the state does not have.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("zone {zone:?} is not part of this config")]
pub struct UnknownZone {
    pub zone: String,
}

impl DigestState {
    /// Zones `(name, TTL)` without names.
    pub fn new<'a>(zones: impl IntoIterator<Item = (&'a str, u32)>) -> DigestState {
        let mut zones: Vec<ZoneSum> = zones
            .into_iter()
            .map(|(zone_name, ttl_seconds)| ZoneSum {
                zone_name: zone_name.to_string(),
                ttl_seconds,
                names: 0,
                sum: Sum256::default(),
            })
            .collect();
        zones.sort_by(|a, b| a.zone_name.cmp(&b.zone_name));
        DigestState { zones }
    }

    /// The state of a whole config.
    pub fn of_config(config: &DnsConfig) -> DigestState {
        let mut state =
            DigestState::new(config.zones.iter().map(|z| (z.zone_name.as_str(), z.ttl_seconds)));
        for zone in &config.zones {
            let entry = state.zone_mut(&zone.zone_name).expect("zone was just added");
            for (name, records) in &zone.names {
                entry.sum.add(&name_hash(&zone.zone_name, name, records));
                entry.names += 1;
            }
        }
        state
    }

    fn zone_mut(&mut self, zone: &str) -> Result<&mut ZoneSum, UnknownZone> {
        match self.zones.binary_search_by(|z| z.zone_name.as_str().cmp(zone)) {
            Ok(i) => Ok(&mut self.zones[i]),
            Err(_) => Err(UnknownZone { zone: zone.to_string() }),
        }
    }

    /// Replaces one name's records: `before` empty means the name was
    /// absent, `after` empty that it is removed.
    pub fn replace_name(
        &mut self,
        zone: &str,
        name: &str,
        before: &[DnsRecord],
        after: &[DnsRecord],
    ) -> Result<(), UnknownZone> {
        let entry = self.zone_mut(zone)?;
        if !before.is_empty() {
            entry.sum.subtract(&name_hash(zone, name, before));
            entry.names = entry.names.saturating_sub(1);
        }
        if !after.is_empty() {
            entry.sum.add(&name_hash(zone, name, after));
            entry.names += 1;
        }
        Ok(())
    }

    /// Number of names over all zones.
    pub fn name_count(&self) -> u64 {
        self.zones.iter().map(|z| z.names).sum()
    }

    /// The zones, sorted by name.
    pub fn zones(&self) -> &[ZoneSum] {
        &self.zones
    }

    /// The digest of this content at `generation`.
    pub fn digest(&self, generation: u64) -> String {
        #[derive(Serialize)]
        struct Canonical<'a> {
            generation: u64,
            zones: &'a [ZoneSum],
        }
        let canonical = Canonical { generation, zones: &self.zones };
        let bytes = serde_json::to_vec(&canonical).expect("plain data serializes");
        format!("sha256:{}", hex(&Sha256::digest(bytes)))
    }
}

/// The digest of `config` (see the module docs).
pub fn config_digest(config: &DnsConfig) -> String {
    DigestState::of_config(config).digest(config.generation)
}

/// The digest of what `change` asks for (comment, additions, removals; not
/// its idempotency key): the database keeps it beside the key, so that a
/// key sent again with another change is refused instead of answered with
/// the generation of the first.
pub fn change_digest(change: &crate::DnsChange) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        comment: &'a str,
        add: &'a [crate::NameRecords],
        remove: &'a [crate::NameRemoval],
    }
    let canonical =
        Canonical { comment: &change.comment, add: &change.add, remove: &change.remove };
    let bytes = serde_json::to_vec(&canonical).expect("plain data serializes");
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DnsConfigZone, SrvRecord};
    use chrono::Utc;

    fn config(records: Vec<DnsRecord>, zones_reversed: bool) -> DnsConfig {
        let zone = |name: &str| DnsConfigZone {
            zone_name: name.into(),
            ttl_seconds: 60,
            names: [("n".to_string(), records.clone())].into_iter().collect(),
        };
        let mut zones = vec![zone("a.test"), zone("b.test")];
        if zones_reversed {
            zones.reverse();
        }
        DnsConfig {
            generation: 7,
            time_created: Utc::now(),
            creator: "c".into(),
            comment: "c".into(),
            zones,
        }
    }

    fn a(last: u8) -> DnsRecord {
        DnsRecord::A(std::net::Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn digest_ignores_order_and_metadata() {
        let srv = DnsRecord::Srv(SrvRecord { prio: 0, weight: 0, port: 1, target: "t".into() });
        let one = config(vec![a(1), srv.clone()], false);
        let mut two = config(vec![srv, a(1)], true);
        two.comment = "something else".into();
        assert_eq!(config_digest(&one), config_digest(&two));
        assert!(config_digest(&one).starts_with("sha256:"));
        assert_eq!(config_digest(&one).len(), 7 + 64);
    }

    #[test]
    fn digest_changes_with_content() {
        let base = config(vec![a(1)], false);
        let mut other_gen = base.clone();
        other_gen.generation += 1;
        let mut other_ttl = base.clone();
        other_ttl.zones[0].ttl_seconds = 1;
        let other_record = config(vec![a(2)], false);
        let mut moved = base.clone();
        let records = moved.zones[0].names.remove("n").unwrap();
        moved.zones[0].names.insert("m".into(), records);
        let mut empty_zone = base.clone();
        empty_zone.zones[0].names.clear();
        for other in [other_gen, other_ttl, other_record, moved, empty_zone] {
            assert_ne!(config_digest(&base), config_digest(&other));
        }
    }

    /// Updating name by name gives exactly the digest of the whole result,
    /// whatever the order, and taking a change back restores the digest.
    #[test]
    fn incremental_updates_equal_a_full_computation() {
        let mut config = config(vec![a(1)], false);
        let mut state = DigestState::of_config(&config);
        let before = state.clone();
        let steps: Vec<(&str, Vec<DnsRecord>)> =
            vec![("x", vec![a(9)]), ("n", vec![a(2), a(3)]), ("x", vec![]), ("y", vec![a(4)])];
        for (name, after) in &steps {
            let zone = &mut config.zones[1];
            let old = zone.names.get(*name).cloned().unwrap_or_default();
            state.replace_name("b.test", name, &old, after).unwrap();
            if after.is_empty() {
                zone.names.remove(*name);
            } else {
                zone.names.insert(name.to_string(), after.clone());
            }
            assert_eq!(state, DigestState::of_config(&config));
            assert_eq!(state.digest(7), config_digest(&config));
        }
        // Undo in another order.
        state.replace_name("b.test", "y", &[a(4)], &[]).unwrap();
        state.replace_name("b.test", "n", &[a(2), a(3)], &[a(1)]).unwrap();
        assert_eq!(state, before);
        assert_eq!(
            state.replace_name("c.test", "n", &[], &[a(1)]),
            Err(UnknownZone { zone: "c.test".into() })
        );
    }

    #[test]
    fn sums_wrap_and_round_trip_as_json() {
        let mut sum = Sum256([0xff; 32]);
        let mut one = [0u8; 32];
        one[31] = 1;
        sum.add(&one);
        assert_eq!(sum, Sum256::default(), "wraps modulo 2^256");
        sum.subtract(&one);
        assert_eq!(sum, Sum256([0xff; 32]));
        let state = DigestState::of_config(&config(vec![a(1)], false));
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<DigestState>(&json).unwrap(), state);
        assert!(serde_json::from_str::<Sum256>("\"zz\"").is_err());
    }
}
