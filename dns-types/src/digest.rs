//! The one canonical digest of a DNS config.
//!
//! A DNS server reports the digest of what it applied; omdb recomputes the
//! digest of the same generation from the database and compares.  Both sides
//! must therefore encode the config identically, so the encoding is fixed
//! here and nowhere else:
//!
//! - only what is served counts: the generation, and per zone its name, TTL
//!   and names with records.  The metadata (time created, creator, comment)
//!   does not, since timestamps lose precision on some paths.
//! - zones are sorted by name, names by name (they are in a `BTreeMap`) and
//!   each name's records by their JSON encoding, so record order in storage
//!   does not matter.
//! - the result is `sha256:` followed by 64 lower-case hex digits; the
//!   prefix leaves room for another encoding without ambiguity.

use crate::{DnsConfig, DnsRecord};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Serialize)]
struct CanonicalConfig<'a> {
    generation: u64,
    zones: Vec<CanonicalZone<'a>>,
}

#[derive(Serialize)]
struct CanonicalZone<'a> {
    zone_name: &'a str,
    ttl_seconds: u32,
    names: BTreeMap<&'a str, Vec<&'a DnsRecord>>,
}

/// SHA-256 over the canonical encoding of `config` (see the module docs).
pub fn config_digest(config: &DnsConfig) -> String {
    let mut zones: Vec<CanonicalZone<'_>> = config
        .zones
        .iter()
        .map(|zone| CanonicalZone {
            zone_name: &zone.zone_name,
            ttl_seconds: zone.ttl_seconds,
            names: zone
                .names
                .iter()
                .map(|(name, records)| {
                    let mut records: Vec<&DnsRecord> = records.iter().collect();
                    records.sort_by_cached_key(|r| serde_json::to_string(r).unwrap_or_default());
                    (name.as_str(), records)
                })
                .collect(),
        })
        .collect();
    zones.sort_by(|a, b| a.zone_name.cmp(b.zone_name));
    let canonical = CanonicalConfig { generation: config.generation, zones };
    let mut hasher = Sha256::new();
    // Serializing plain structs, maps and strings to a Vec cannot fail.
    serde_json::to_writer(&mut HashWriter(&mut hasher), &canonical)
        .expect("canonical config serializes");
    let bytes = hasher.finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Feeds serializer output straight into the hash, so that digesting a
/// 100,000-name config does not build a second copy of it in memory.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

    #[test]
    fn digest_ignores_order_and_metadata() {
        let a = DnsRecord::A("192.0.2.1".parse().unwrap());
        let srv = DnsRecord::Srv(SrvRecord { prio: 0, weight: 0, port: 1, target: "t".into() });
        let one = config(vec![a.clone(), srv.clone()], false);
        let mut two = config(vec![srv, a.clone()], true);
        two.comment = "something else".into();
        assert_eq!(config_digest(&one), config_digest(&two));
        assert!(config_digest(&one).starts_with("sha256:"));
        assert_eq!(config_digest(&one).len(), 7 + 64);
    }

    #[test]
    fn digest_changes_with_content() {
        let a = DnsRecord::A("192.0.2.1".parse().unwrap());
        let base = config(vec![a.clone()], false);
        let mut other_gen = base.clone();
        other_gen.generation += 1;
        let mut other_ttl = base.clone();
        other_ttl.zones[0].ttl_seconds = 1;
        let other_record = config(vec![DnsRecord::A("192.0.2.2".parse().unwrap())], false);
        for other in [other_gen, other_ttl, other_record] {
            assert_ne!(config_digest(&base), config_digest(&other));
        }
    }
}
