//! A difference between two generations of one group, as a DNS server
//! applies it: from generation N with digest D to generation M with digest
//! E, these names with their new records (none: the name is removed).
//!
//! It is applied only to exactly N/D and only when the result digests to E
//! (the server checks both against what it serves), so a difference can
//! never leave a server with content the database does not have.

use crate::digest::DigestState;
use crate::{ConfigError, DnsConfig, DnsDiff, DnsRecord, limits, names};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Whether a difference of `changed` names is worth sending (or reading)
/// instead of a whole config of `total` names: up to half of the names,
/// and always up to 64 (a small zone costs little either way, and the
/// difference leaves the better evidence).
pub fn difference_is_worthwhile(changed: u64, total: u64) -> bool {
    changed <= 64 || changed <= total / 2
}

/// `PUT /config/diff`: the names that changed between two generations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigDiff {
    /// The generation the server must serve for the difference to apply.
    pub from_generation: u64,
    /// The digest the server's config must have.
    pub from_digest: String,
    /// The generation the difference leads to.
    pub generation: u64,
    /// The digest the result must have; otherwise nothing changes.
    pub digest: String,
    /// When the target generation was created, by whom and why.
    pub time_created: DateTime<Utc>,
    pub creator: String,
    pub comment: String,
    /// Only zones with changed names.
    pub zones: Vec<ZoneChanges>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneChanges {
    pub zone_name: String,
    pub names: Vec<NameChange>,
}

/// One name as it is at the target generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameChange {
    /// Relative to the zone, canonical (`@` is the apex).
    pub name: String,
    /// Its records at the target generation; empty: the name is removed.
    pub records: Vec<DnsRecord>,
}

/// Why a difference was not applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiffError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(
        "the difference leads from generation {from} to {to}; it must lead to a newer generation"
    )]
    NotForward { from: u64, to: u64 },
    #[error(
        "the difference applies to generation {from_generation} (digest {from_digest}), but \
         this config is generation {generation} (digest {digest})"
    )]
    WrongBase { from_generation: u64, from_digest: String, generation: u64, digest: String },
    #[error("the difference changes zone {zone:?}, which this config does not have")]
    UnknownZone { zone: String },
    #[error(
        "applied, the difference gives digest {computed}, not the stated {expected}; \
         it was not applied"
    )]
    DigestMismatch { expected: String, computed: String },
}

impl ConfigDiff {
    /// Builds the difference that leads a config at `diff.from_generation`
    /// with digest `from_digest` to `diff.to_generation`, whose metadata
    /// and digest are given.
    pub fn from_dns_diff(
        diff: &DnsDiff,
        from_digest: String,
        digest: String,
        time_created: DateTime<Utc>,
        creator: String,
        comment: String,
    ) -> ConfigDiff {
        ConfigDiff {
            from_generation: diff.from_generation,
            from_digest,
            generation: diff.to_generation,
            digest,
            time_created,
            creator,
            comment,
            zones: diff
                .zones
                .iter()
                .map(|zone| ZoneChanges {
                    zone_name: zone.zone_name.clone(),
                    names: zone
                        .names
                        .iter()
                        .map(|n| NameChange { name: n.name.clone(), records: n.after.clone() })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The difference that leads from one whole config to another,
    /// computed in memory (for tools and tests; Nexus reads differences
    /// from the database's changed rows).
    pub fn between(from: &DnsConfig, to: &DnsConfig) -> ConfigDiff {
        // The group only labels a `DnsDiff`; a `ConfigDiff` has none.
        let diff = crate::diff_configs(crate::DnsGroup::Internal, from, to);
        ConfigDiff::from_dns_diff(
            &diff,
            crate::config_digest(from),
            crate::config_digest(to),
            to.time_created,
            to.creator.clone(),
            to.comment.clone(),
        )
    }

    /// Number of names changed.
    pub fn name_count(&self) -> usize {
        self.zones.iter().map(|z| z.names.len()).sum()
    }

    /// The rules a difference must satisfy before anything looks at a
    /// config: forward, bounded, every name and record valid and canonical,
    /// each zone and name once.
    pub fn validate(&self) -> Result<(), DiffError> {
        if self.generation <= self.from_generation {
            return Err(DiffError::NotForward { from: self.from_generation, to: self.generation });
        }
        if self.generation > limits::MAX_GENERATION {
            return Err(ConfigError::GenerationTooLarge { generation: self.generation }.into());
        }
        limits::check_text("the comment", &self.comment, limits::MAX_COMMENT_BYTES)
            .map_err(ConfigError::from)?;
        limits::check_text("the creator", &self.creator, limits::MAX_CREATOR_BYTES)
            .map_err(ConfigError::from)?;
        let mut zones = BTreeSet::new();
        for zone in &self.zones {
            if !zones.insert(zone.zone_name.as_str()) {
                return Err(ConfigError::DuplicateZone { zone: zone.zone_name.clone() }.into());
            }
            let mut seen = BTreeSet::new();
            for change in &zone.names {
                if !seen.insert(change.name.as_str()) {
                    return Err(ConfigError::NotCanonical {
                        what: format!(
                            "the difference (name {:?} in zone {:?} appears more than once)",
                            change.name, zone.zone_name
                        ),
                        canonical: "each name once".into(),
                    }
                    .into());
                }
                if change.records.is_empty() {
                    let canonical = names::parse_relative_name(&change.name).map_err(|source| {
                        ConfigError::InvalidName {
                            zone: zone.zone_name.clone(),
                            name: change.name.clone(),
                            source,
                        }
                    })?;
                    if canonical != change.name {
                        return Err(ConfigError::NotCanonical {
                            what: format!("name {:?} in zone {:?}", change.name, zone.zone_name),
                            canonical,
                        }
                        .into());
                    }
                } else {
                    crate::validate_name_records(&zone.zone_name, &change.name, &change.records)?;
                }
            }
        }
        Ok(())
    }

    /// Applies the difference to a whole config whose digest state is
    /// `state`, with the same checks a DNS server makes: the config must be
    /// exactly the base and the result must have the stated digest.  On
    /// error nothing changed.
    pub fn apply_to(
        &self,
        config: &mut DnsConfig,
        state: &mut DigestState,
    ) -> Result<(), DiffError> {
        self.validate()?;
        let digest = state.digest(config.generation);
        if config.generation != self.from_generation || digest != self.from_digest {
            return Err(DiffError::WrongBase {
                from_generation: self.from_generation,
                from_digest: self.from_digest.clone(),
                generation: config.generation,
                digest,
            });
        }
        let mut next_state = state.clone();
        for zone in &self.zones {
            let Some(current) = config.zones.iter().find(|z| z.zone_name == zone.zone_name) else {
                return Err(DiffError::UnknownZone { zone: zone.zone_name.clone() });
            };
            for change in &zone.names {
                let before = current.names.get(&change.name).map(Vec::as_slice).unwrap_or_default();
                next_state
                    .replace_name(&zone.zone_name, &change.name, before, &change.records)
                    .map_err(|e| DiffError::UnknownZone { zone: e.zone })?;
            }
        }
        let computed = next_state.digest(self.generation);
        if computed != self.digest {
            return Err(DiffError::DigestMismatch { expected: self.digest.clone(), computed });
        }
        for zone in &self.zones {
            let current = config
                .zones
                .iter_mut()
                .find(|z| z.zone_name == zone.zone_name)
                .expect("checked above");
            for change in &zone.names {
                if change.records.is_empty() {
                    current.names.remove(&change.name);
                } else {
                    current.names.insert(change.name.clone(), change.records.clone());
                }
            }
        }
        config.generation = self.generation;
        config.time_created = self.time_created;
        config.creator = self.creator.clone();
        config.comment = self.comment.clone();
        *state = next_state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DnsConfigZone;

    fn a(last: u8) -> DnsRecord {
        DnsRecord::A(std::net::Ipv4Addr::new(192, 0, 2, last))
    }

    fn config(generation: u64, names: &[(&str, u8)]) -> DnsConfig {
        DnsConfig {
            generation,
            time_created: Utc::now(),
            creator: "t".into(),
            comment: format!("generation {generation}"),
            zones: vec![DnsConfigZone {
                zone_name: "example.test".into(),
                ttl_seconds: 60,
                names: names.iter().map(|(n, ip)| (n.to_string(), vec![a(*ip)])).collect(),
            }],
        }
    }

    fn diff_between(from: &DnsConfig, to: &DnsConfig) -> ConfigDiff {
        ConfigDiff::between(from, to)
    }

    #[test]
    fn applying_gives_the_target_config() {
        let from = config(3, &[("a", 1), ("b", 2), ("c", 3)]);
        let to = config(5, &[("a", 1), ("b", 9), ("d", 4)]);
        let diff = diff_between(&from, &to);
        assert_eq!(diff.name_count(), 3, "b changed, c removed, d added");
        let mut applied = from.clone();
        let mut state = DigestState::of_config(&applied);
        diff.apply_to(&mut applied, &mut state).unwrap();
        assert_eq!(applied, to);
        assert_eq!(state, DigestState::of_config(&to));
    }

    #[test]
    fn a_wrong_base_or_result_changes_nothing() {
        let from = config(3, &[("a", 1)]);
        let to = config(4, &[("a", 2)]);
        let diff = diff_between(&from, &to);

        let mut other = config(3, &[("a", 7)]);
        let mut state = DigestState::of_config(&other);
        let error = diff.apply_to(&mut other, &mut state).unwrap_err();
        assert!(matches!(error, DiffError::WrongBase { .. }), "{error}");
        assert_eq!(other, config(3, &[("a", 7)]).clone_with_time(other.time_created));

        let mut lying = diff.clone();
        lying.digest = crate::config_digest(&config(4, &[("a", 3)]));
        let mut base = from.clone();
        let mut state = DigestState::of_config(&base);
        let error = lying.apply_to(&mut base, &mut state).unwrap_err();
        assert!(matches!(error, DiffError::DigestMismatch { .. }), "{error}");
        assert_eq!(base, from);
        assert_eq!(state, DigestState::of_config(&from));
    }

    #[test]
    fn invalid_differences_are_refused() {
        let from = config(3, &[("a", 1)]);
        let mut backwards = diff_between(&from, &config(4, &[("a", 2)]));
        backwards.generation = 3;
        assert!(matches!(backwards.validate(), Err(DiffError::NotForward { .. })));
        let mut upper = diff_between(&from, &config(4, &[("a", 2)]));
        upper.zones[0].names[0].name = "A".into();
        assert!(matches!(upper.validate(), Err(DiffError::Invalid(_))));
        let mut twice = diff_between(&from, &config(4, &[("a", 2)]));
        let again = twice.zones[0].names[0].clone();
        twice.zones[0].names.push(again);
        assert!(twice.validate().unwrap_err().to_string().contains("more than once"));
    }

    impl DnsConfig {
        fn clone_with_time(mut self, time: DateTime<Utc>) -> DnsConfig {
            self.time_created = time;
            self
        }
    }
}
