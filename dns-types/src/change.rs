//! What a requested change does, decided with no database: the checks it
//! must pass before anything is asked, each name resolved to its zone and
//! each record put in canonical form, and the new records of every name it
//! touches given their records now.  The database layer runs this inside
//! its transaction, against the touched names' stored records; tools and
//! the fuzzer run it against records they hold.

use crate::names::{self, NameError};
use crate::{ConfigError, DnsChange, DnsRecord, RecordError, limits, validate_name_records};
use std::collections::{BTreeMap, BTreeSet};

/// Why a change is refused (before or while it is applied to the records
/// it touches).  Each says which name or record.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("a DNS change needs a comment saying why it is made")]
    EmptyComment,
    #[error("the DNS change adds and removes nothing")]
    EmptyChange,
    #[error(
        "invalid idempotency key {key:?}: give 1 to {} printable ASCII characters \
         (a UUID will do)",
        limits::MAX_IDEMPOTENCY_KEY_BYTES
    )]
    InvalidIdempotencyKey { key: String },
    #[error("the DNS change {action} no records for name {name:?}: give at least one record{hint}")]
    NoRecordsGiven { action: &'static str, name: String, hint: &'static str },
    #[error(transparent)]
    Text(#[from] limits::TextError),
    #[error("invalid DNS name {name:?}")]
    InvalidName {
        name: String,
        #[source]
        source: NameError,
    },
    #[error("invalid record for name {name:?}")]
    InvalidRecord {
        name: String,
        #[source]
        source: RecordError,
    },
    #[error("name {name:?} does not exist in zone {zone:?}, so it cannot be removed")]
    NameNotFound { zone: String, name: String },
    #[error("name {name:?} in zone {zone:?} has no record {record}, so it cannot be removed")]
    RecordNotFound { zone: String, name: String, record: String },
    #[error("name {name:?} in zone {zone:?} already has record {record}")]
    RecordExists { zone: String, name: String, record: String },
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
}

/// What can be checked of a change before the records it touches are
/// read: a comment, bounded text, something to do, records where records
/// are named.  `initial`: the change that creates a group (it may be empty).
pub fn check_change(change: &DnsChange, creator: &str, initial: bool) -> Result<(), ChangeError> {
    if change.comment.trim().is_empty() {
        return Err(ChangeError::EmptyComment);
    }
    limits::check_text("the comment", &change.comment, limits::MAX_COMMENT_BYTES)?;
    limits::check_text("the creator", creator, limits::MAX_CREATOR_BYTES)?;
    if let Some(key) = &change.idempotency_key {
        let printable = key.bytes().all(|b| b.is_ascii_graphic());
        if key.is_empty() || key.len() > limits::MAX_IDEMPOTENCY_KEY_BYTES || !printable {
            return Err(ChangeError::InvalidIdempotencyKey { key: key.clone() });
        }
    }
    if !initial && change.add.is_empty() && change.remove.is_empty() {
        return Err(ChangeError::EmptyChange);
    }
    if let Some(add) = change.add.iter().find(|a| a.records.is_empty()) {
        return Err(ChangeError::NoRecordsGiven {
            action: "adds",
            name: add.name.clone(),
            hint: "",
        });
    }
    if let Some(removal) =
        change.remove.iter().find(|r| r.records.as_ref().is_some_and(Vec::is_empty))
    {
        return Err(ChangeError::NoRecordsGiven {
            action: "removes",
            name: removal.name.clone(),
            hint: ", or leave out `records` to remove the whole name",
        });
    }
    Ok(())
}

/// What one change does to one name.
#[derive(Clone, Debug)]
enum NameOp {
    Add(Vec<DnsRecord>),
    RemoveRecords(Vec<DnsRecord>),
    RemoveName,
}

/// The records of names, keyed by (zone index, relative name).
pub type NameRecordsByZone = BTreeMap<(usize, String), Vec<DnsRecord>>;

/// A change with every name resolved to its zone and every record in
/// canonical form.
#[derive(Debug)]
pub struct ResolvedChange {
    /// (zone index, canonical relative name, operation), removals first.
    ops: Vec<(usize, String, NameOp)>,
}

impl ResolvedChange {
    /// Resolves every name of `change` among `zones` (the longest matching
    /// suffix wins).
    pub fn resolve(change: &DnsChange, zones: &[&str]) -> Result<ResolvedChange, ChangeError> {
        let resolve = |name: &str| {
            names::resolve_in_zones(name, zones)
                .map_err(|source| ChangeError::InvalidName { name: name.into(), source })
        };
        let normalize = |name: &str, records: &[DnsRecord]| {
            records
                .iter()
                .map(|r| {
                    r.normalized()
                        .map_err(|source| ChangeError::InvalidRecord { name: name.into(), source })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut ops = Vec::new();
        for removal in &change.remove {
            let (zone, name) = resolve(&removal.name)?;
            let op = match &removal.records {
                None => NameOp::RemoveName,
                Some(records) => NameOp::RemoveRecords(normalize(&removal.name, records)?),
            };
            ops.push((zone, name, op));
        }
        for addition in &change.add {
            let (zone, name) = resolve(&addition.name)?;
            ops.push((zone, name, NameOp::Add(normalize(&addition.name, &addition.records)?)));
        }
        Ok(ResolvedChange { ops })
    }

    /// The names touched, per zone index.
    pub fn touched(&self) -> BTreeMap<usize, BTreeSet<String>> {
        let mut touched: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        for (zone, name, _) in &self.ops {
            touched.entry(*zone).or_default().insert(name.clone());
        }
        touched
    }

    /// Applies the change to `state`, the current records of the touched
    /// names (absent: the name does not exist).  Returns the new records of
    /// every touched name (empty: removed), each name's records valid.
    pub fn apply(
        &self,
        zones: &[&str],
        mut state: NameRecordsByZone,
    ) -> Result<NameRecordsByZone, ChangeError> {
        for (zone, name, op) in &self.ops {
            let zone_name = zones[*zone];
            let records = state.entry((*zone, name.clone())).or_default();
            let not_found =
                || ChangeError::NameNotFound { zone: zone_name.into(), name: name.clone() };
            match op {
                NameOp::RemoveName => {
                    if records.is_empty() {
                        return Err(not_found());
                    }
                    records.clear();
                }
                NameOp::RemoveRecords(remove) => {
                    if records.is_empty() {
                        return Err(not_found());
                    }
                    for record in remove {
                        let Some(i) = records.iter().position(|r| r == record) else {
                            return Err(ChangeError::RecordNotFound {
                                zone: zone_name.into(),
                                name: name.clone(),
                                record: record.to_string(),
                            });
                        };
                        records.remove(i);
                    }
                }
                NameOp::Add(add) => {
                    for record in add {
                        if records.contains(record) {
                            return Err(ChangeError::RecordExists {
                                zone: zone_name.into(),
                                name: name.clone(),
                                record: record.to_string(),
                            });
                        }
                        records.push(record.clone());
                    }
                }
            }
        }
        for ((zone, name), records) in &state {
            if !records.is_empty() {
                validate_name_records(zones[*zone], name, records)?;
            }
        }
        Ok(state)
    }
}

/// Everything a commit checks before it writes, against `zones` holding
/// the names in `current`: the same rules, with no database.  Returns the
/// new records of every touched name (empty: removed).  For tools and
/// fuzzing.
pub fn apply_offline(
    change: &DnsChange,
    creator: &str,
    zones: &[&str],
    current: NameRecordsByZone,
) -> Result<NameRecordsByZone, ChangeError> {
    check_change(change, creator, false)?;
    ResolvedChange::resolve(change, zones)?.apply(zones, current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NameRecords, NameRemoval};

    const ZONES: [&str; 2] = ["example.test", "sub.other.test"];

    fn a(last: u8) -> DnsRecord {
        DnsRecord::A(std::net::Ipv4Addr::new(192, 0, 2, last))
    }

    fn change(
        add: Vec<(&str, Vec<DnsRecord>)>,
        remove: Vec<(&str, Option<Vec<DnsRecord>>)>,
    ) -> DnsChange {
        DnsChange {
            idempotency_key: None,
            comment: "c".into(),
            add: add.into_iter().map(|(n, r)| NameRecords { name: n.into(), records: r }).collect(),
            remove: remove
                .into_iter()
                .map(|(n, r)| NameRemoval { name: n.into(), records: r })
                .collect(),
        }
    }

    #[test]
    fn a_change_gives_the_new_records_of_each_name_it_touches() {
        let current: NameRecordsByZone =
            [((0, "www".to_string()), vec![a(1), a(2)]), ((1, "api".to_string()), vec![a(3)])]
                .into();
        let c = change(
            vec![("www.example.test.", vec![a(9)]), ("new.example.test.", vec![a(4)])],
            vec![("www.example.test.", Some(vec![a(1)])), ("api.sub.other.test.", None)],
        );
        let after = apply_offline(&c, "t", &ZONES, current).unwrap();
        assert_eq!(after[&(0, "www".to_string())], vec![a(2), a(9)]);
        assert_eq!(after[&(0, "new".to_string())], vec![a(4)]);
        assert!(after[&(1, "api".to_string())].is_empty(), "removed");
    }

    #[test]
    fn every_refusal_names_what_it_refuses() {
        let current: NameRecordsByZone = [((0, "www".to_string()), vec![a(1)])].into();
        let cases: Vec<(DnsChange, &str)> = vec![
            (
                DnsChange {
                    comment: " ".into(),
                    ..change(vec![("x.example.test.", vec![a(1)])], vec![])
                },
                "needs a comment",
            ),
            (change(vec![], vec![]), "adds and removes nothing"),
            (
                change(vec![("x.example.test.", vec![])], vec![]),
                "no records for name \"x.example.test.\"",
            ),
            (change(vec![], vec![("gone.example.test.", None)]), "\"gone\" does not exist"),
            (
                change(vec![], vec![("www.example.test.", Some(vec![a(7)]))]),
                "has no record A 192.0.2.7",
            ),
            (
                change(vec![("www.example.test.", vec![a(1)])], vec![]),
                "already has record A 192.0.2.1",
            ),
            (change(vec![("x.nowhere.test.", vec![a(1)])], vec![]), "invalid DNS name"),
        ];
        for (c, expected) in cases {
            let error = apply_offline(&c, "t", &ZONES, current.clone()).unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?} should contain {expected:?}");
        }
    }

    #[test]
    fn removals_apply_before_additions() {
        // Replacing a record in one change: remove the old, add the new.
        let c = change(
            vec![("www.example.test.", vec![a(2)])],
            vec![("WWW.example.test.", Some(vec![a(1)]))],
        );
        let state: NameRecordsByZone = [((0, "www".to_string()), vec![a(1)])].into();
        let result = ResolvedChange::resolve(&c, &ZONES).unwrap().apply(&ZONES, state).unwrap();
        assert_eq!(result[&(0, "www".to_string())], vec![a(2)]);
    }

    #[test]
    fn a_cname_beside_other_records_and_a_bad_name_are_refused() {
        let state: NameRecordsByZone = [((0, "www".to_string()), vec![a(1)])].into();
        let cname = DnsRecord::Cname("elsewhere.test".into());
        for (c, expected) in [
            (
                change(vec![("www.example.test.", vec![cname])], vec![]),
                "CNAME beside other records",
            ),
            (change(vec![("bad..name", vec![a(1)])], vec![]), "invalid DNS name \"bad..name\""),
        ] {
            let error = apply_offline(&c, "t", &ZONES, state.clone()).unwrap_err();
            let message = crate::error_chain(&error);
            assert!(message.contains(expected), "{message:?} should contain {expected:?}");
        }
    }
}
