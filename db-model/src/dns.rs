//! DNS data in the database: groups, zones, versions, names.
//!
//! Each group (`internal`, `external`) has zones and a sequence of
//! generations 1, 2, 3, ...  A name's records live in a `dns_name` row that
//! records the generation that added it and the one that removed it, so:
//!
//! - a change touches only the rows of the names it changes;
//! - the config at any generation, and the diff of any two, can be read
//!   back.
//!
//! Every change is validated completely before anything is written, and
//! every rejection names the offending name or record.

use crate::error::{DbError, Retryable, query_error};
use crate::transaction::{Datastore, TxnMode};
use chrono::{DateTime, Utc};
use dns_types::change::{ChangeError, ResolvedChange, check_change};
use dns_types::history::NameStretch;
use dns_types::limits;
use dns_types::names::{self, NameError};
use dns_types::{
    ConfigError, DigestState, DnsChange, DnsConfig, DnsConfigZone, DnsDiff, DnsGroup, DnsRecord,
    DnsVersion, NameDiff, ZoneDiff,
};
use std::collections::{BTreeMap, BTreeSet};
use tokio_postgres::Row;
use uuid::Uuid;

/// A zone as stored: which group serves it, and its TTL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneInfo {
    pub group: DnsGroup,
    pub zone_name: String,
    pub ttl_seconds: u32,
}

/// A zone to create with a group.
#[derive(Clone, Debug)]
pub struct ZoneSpec {
    pub zone_name: String,
    pub ttl_seconds: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS group {group} has not been initialized (it has no generation 1)")]
    GroupNotInitialized { group: DnsGroup },
    #[error("DNS group {group} is already initialized")]
    GroupAlreadyInitialized { group: DnsGroup },
    #[error("zone {zone:?} already exists (zone names are unique across groups)")]
    ZoneExists { zone: String },
    #[error("invalid zone name {zone:?}")]
    InvalidZoneName {
        zone: String,
        #[source]
        source: NameError,
    },
    #[error("a group needs at least one zone")]
    NoZones,
    #[error("DNS group {group} has no generation {generation} (latest is {latest})")]
    GenerationNotFound { group: DnsGroup, generation: u64, latest: u64 },
    #[error("cannot diff from generation {from} to the older generation {to}")]
    DiffBackwards { from: u64, to: u64 },
    /// The change itself is refused (`dns_types::change`).
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(
        "DNS group {group} has reached generation {latest}, the largest a 32-bit SOA serial \
         holds; no further change can be committed"
    )]
    GenerationsExhausted { group: DnsGroup, latest: u64 },
    #[error(
        "idempotency key {key:?} of DNS group {group} was already used for another change \
         (it created generation {generation}); use a new key for a new change"
    )]
    IdempotencyKeyReused { group: DnsGroup, key: String, generation: u64 },
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    #[error(transparent)]
    Database(#[from] DbError),
}

impl DnsError {
    /// True when the request itself is at fault (as opposed to the database).
    pub fn is_invalid_input(&self) -> bool {
        match self {
            DnsError::Database(error) => error.is_data_exception(),
            _ => true,
        }
    }
}

impl Retryable for DnsError {
    fn is_retryable(&self) -> bool {
        matches!(self, DnsError::Database(e) if e.is_serialization_failure())
    }
    fn db_error(&self) -> Option<&DbError> {
        match self {
            DnsError::Database(e) => Some(e),
            _ => None,
        }
    }
}

/// A zone as stored.
#[derive(Clone, Debug)]
struct Zone {
    id: Uuid,
    name: String,
    ttl_seconds: u32,
}

const VERSION_COLUMNS: &str = "version, time_created, creator, comment";

fn version_from_row(group: DnsGroup, row: &Row) -> Result<DnsVersion, DbError> {
    Ok(DnsVersion {
        group,
        generation: generation_from_db(row.get::<_, i64>(0))?,
        time_created: row.get::<_, DateTime<Utc>>(1),
        creator: row.get(2),
        comment: row.get(3),
    })
}

fn generation_from_db(value: i64) -> Result<u64, DbError> {
    u64::try_from(value).map_err(|_| DbError::Corrupt(format!("negative generation {value}")))
}

fn ttl_from_db(ttl: i64) -> Result<u32, DbError> {
    u32::try_from(ttl).map_err(|_| DbError::Corrupt(format!("zone TTL {ttl} out of range")))
}

fn group_from_db(value: &str) -> Result<DnsGroup, DbError> {
    value.parse().map_err(|_| DbError::Corrupt(format!("unknown DNS group {value:?}")))
}

fn generation_to_db(value: u64) -> i64 {
    // Generations come from the database or from a user; anything beyond
    // i64 cannot exist in the table, so clamping finds nothing, as it should.
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn records_from_db(name: &str, json: &str) -> Result<Vec<DnsRecord>, DbError> {
    serde_json::from_str(json)
        .map_err(|e| DbError::Corrupt(format!("records of name {name:?} are not valid: {e}")))
}

fn records_to_db(records: &[DnsRecord]) -> String {
    serde_json::to_string(records).expect("records always serialize")
}

type Txn<'a> = deadpool_postgres::Transaction<'a>;

async fn read_zones(
    txn: &Txn<'_>,
    what: &'static str,
    group: DnsGroup,
) -> Result<Vec<Zone>, DbError> {
    let rows = crate::prepared::query(
        txn,
        "SELECT id, zone_name, ttl_seconds FROM dns_zone WHERE dns_group = $1 ORDER BY zone_name",
        &[&group.as_str()],
    )
    .await
    .map_err(query_error(what, "reading the group's zones"))?;
    rows.iter()
        .map(|row| {
            Ok(Zone { id: row.get(0), name: row.get(1), ttl_seconds: ttl_from_db(row.get(2))? })
        })
        .collect()
}

async fn read_latest_version(
    txn: &Txn<'_>,
    what: &'static str,
    group: DnsGroup,
) -> Result<Option<DnsVersion>, DbError> {
    let row = crate::prepared::query_opt(
        txn,
        &format!(
            "SELECT {VERSION_COLUMNS} FROM dns_version WHERE dns_group = $1 \
                 ORDER BY version DESC LIMIT 1"
        ),
        &[&group.as_str()],
    )
    .await
    .map_err(query_error(what, "reading the latest version"))?;
    row.map(|r| version_from_row(group, &r)).transpose()
}

async fn read_version(
    txn: &Txn<'_>,
    what: &'static str,
    group: DnsGroup,
    generation: u64,
) -> Result<DnsVersion, DnsError> {
    let row = crate::prepared::query_opt(
        txn,
        &format!("SELECT {VERSION_COLUMNS} FROM dns_version WHERE dns_group = $1 AND version = $2"),
        &[&group.as_str(), &generation_to_db(generation)],
    )
    .await
    .map_err(query_error(what, "reading the version"))?;
    match row {
        Some(row) => Ok(version_from_row(group, &row)?),
        None => {
            let latest = read_latest_version(txn, what, group)
                .await?
                .ok_or(DnsError::GroupNotInitialized { group })?;
            Err(DnsError::GenerationNotFound { group, generation, latest: latest.generation })
        }
    }
}

/// Names alive at `generation` in one zone.  Two index range scans: the live
/// names (`dns_name_live`) and those removed after `generation`
/// (`dns_name_by_version_removed`).
async fn read_zone_names(
    txn: &Txn<'_>,
    what: &'static str,
    zone: &Zone,
    generation: u64,
) -> Result<BTreeMap<String, Vec<DnsRecord>>, DbError> {
    let rows = txn
        .query(
            "SELECT name, records::TEXT FROM dns_name \
             WHERE dns_zone_id = $1 AND version_removed IS NULL AND version_added <= $2 \
             UNION ALL \
             SELECT name, records::TEXT FROM dns_name \
             WHERE dns_zone_id = $1 AND version_removed > $2 AND version_added <= $2",
            &[&zone.id, &generation_to_db(generation)],
        )
        .await
        .map_err(query_error(what, "reading the zone's names"))?;
    let mut names = BTreeMap::new();
    for row in rows {
        let name: String = row.get(0);
        let records = records_from_db(&name, row.get(1))?;
        if names.insert(name.clone(), records).is_some() {
            return Err(DbError::Corrupt(format!(
                "name {name:?} in zone {:?} is alive twice at generation {generation}",
                zone.name
            )));
        }
    }
    Ok(names)
}

/// Writes the new records of the touched names as generation `generation`:
/// closes their live rows and opens new ones.  Costs the size of the change.
async fn write_names(
    txn: &Txn<'_>,
    what: &'static str,
    zones: &[Zone],
    generation: u64,
    existing: &BTreeSet<(usize, String)>,
    new_state: &BTreeMap<(usize, String), Vec<DnsRecord>>,
) -> Result<(), DbError> {
    let generation = generation_to_db(generation);
    for (index, zone) in zones.iter().enumerate() {
        let close: Vec<&str> =
            existing.iter().filter(|(z, _)| *z == index).map(|(_, n)| n.as_str()).collect();
        if !close.is_empty() {
            // Not prepared: its plan depends on how many names (see
            // `crate::prepared`).
            txn.execute(
                "UPDATE dns_name SET version_removed = $3 \
                 WHERE dns_zone_id = $1 AND name = ANY($2) AND version_removed IS NULL",
                &[&zone.id, &close, &generation],
            )
            .await
            .map_err(query_error(what, "closing the changed names"))?;
        }
        let (open_names, open_records): (Vec<&str>, Vec<String>) = new_state
            .iter()
            .filter(|((z, _), records)| *z == index && !records.is_empty())
            .map(|((_, n), records)| (n.as_str(), records_to_db(records)))
            .unzip();
        if !open_names.is_empty() {
            crate::prepared::execute(
                txn,
                "INSERT INTO dns_name (dns_zone_id, name, version_added, records) \
                 SELECT $1, t.name, $3, t.records::JSONB \
                 FROM unnest($2::TEXT[], $4::TEXT[]) AS t (name, records)",
                &[&zone.id, &open_names, &generation, &open_records],
            )
            .await
            .map_err(query_error(what, "writing the changed names"))?;
        }
    }
    Ok(())
}

async fn insert_version(
    txn: &Txn<'_>,
    what: &'static str,
    group: DnsGroup,
    generation: u64,
    creator: &str,
    comment: &str,
    digest_state: &DigestState,
) -> Result<DnsVersion, DbError> {
    let digest_state = serde_json::to_string(digest_state).expect("plain data serializes");
    let row = crate::prepared::query_one(
        txn,
        &format!(
            "INSERT INTO dns_version \
                 (dns_group, version, time_created, creator, comment, digest_state) \
                 VALUES ($1, $2, now(), $3, $4, $5) RETURNING {VERSION_COLUMNS}"
        ),
        &[&group.as_str(), &generation_to_db(generation), &creator, &comment, &digest_state],
    )
    .await
    .map_err(query_error(what, "recording the new version"))?;
    version_from_row(group, &row)
}

fn empty_digest_state(zones: &[Zone]) -> DigestState {
    DigestState::new(zones.iter().map(|z| (z.name.as_str(), z.ttl_seconds)))
}

/// Folds the touched names (`before`: their records until now; `after`:
/// from now on, empty when removed) into `state`.
fn update_digest_state(
    state: &mut DigestState,
    zones: &[Zone],
    before: &BTreeMap<(usize, String), Vec<DnsRecord>>,
    after: &BTreeMap<(usize, String), Vec<DnsRecord>>,
) -> Result<(), DbError> {
    for ((index, name), records) in after {
        let old = before.get(&(*index, name.clone())).map(Vec::as_slice).unwrap_or_default();
        state
            .replace_name(&zones[*index].name, name, old, records)
            .map_err(|e| DbError::Corrupt(format!("digest state: {e}")))?;
    }
    Ok(())
}

/// The digest state stored with `generation`; `None` for generations
/// written before the database kept it (schema 1.0.0).
async fn read_digest_state(
    txn: &Txn<'_>,
    what: &'static str,
    group: DnsGroup,
    generation: u64,
) -> Result<Option<DigestState>, DbError> {
    let row = crate::prepared::query_opt(
        txn,
        "SELECT digest_state FROM dns_version WHERE dns_group = $1 AND version = $2",
        &[&group.as_str(), &generation_to_db(generation)],
    )
    .await
    .map_err(query_error(what, "reading the digest state"))?;
    let Some(text) = row.and_then(|row| row.get::<_, Option<String>>(0)) else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        DbError::Corrupt(format!("digest state of generation {generation} is not valid: {e}"))
    })
}

/// The digest state of the live names: once, for the first change after
/// the upgrade from a schema without stored digest states.
async fn live_digest_state(
    txn: &Txn<'_>,
    what: &'static str,
    zones: &[Zone],
) -> Result<DigestState, DbError> {
    let mut state = empty_digest_state(zones);
    for zone in zones {
        let rows = txn
            .query(
                "SELECT name, records::TEXT FROM dns_name \
                 WHERE dns_zone_id = $1 AND version_removed IS NULL",
                &[&zone.id],
            )
            .await
            .map_err(query_error(what, "reading the live names for the digest"))?;
        for row in rows {
            let name: String = row.get(0);
            let records = records_from_db(&name, row.get(1))?;
            state
                .replace_name(&zone.name, &name, &[], &records)
                .map_err(|e| DbError::Corrupt(format!("digest state: {e}")))?;
        }
    }
    Ok(state)
}

impl Datastore {
    /// Creates a group with its zones as generation 1, holding the names
    /// that `initial` adds (it may remove nothing).
    pub async fn dns_group_initialize(
        &self,
        group: DnsGroup,
        zones: &[ZoneSpec],
        creator: &str,
        initial: &DnsChange,
    ) -> Result<DnsVersion, DnsError> {
        const WHAT: &str = "initialize DNS group";
        check_change(initial, creator, true)?;
        if zones.is_empty() {
            return Err(DnsError::NoZones);
        }
        let zones: Vec<Zone> = zones
            .iter()
            .map(|spec| {
                let name = names::parse_zone_name(&spec.zone_name).map_err(|source| {
                    DnsError::InvalidZoneName { zone: spec.zone_name.clone(), source }
                })?;
                Ok(Zone { id: Uuid::new_v4(), name, ttl_seconds: spec.ttl_seconds })
            })
            .collect::<Result<_, DnsError>>()?;
        for a in &zones {
            for b in &zones {
                if a.id != b.id && names::is_subdomain(&a.name, &b.name) {
                    return Err(ConfigError::NestedZones {
                        inner: a.name.clone(),
                        outer: b.name.clone(),
                    }
                    .into());
                }
            }
        }
        let zone_names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
        let resolved = ResolvedChange::resolve(initial, &zone_names)?;
        let state = resolved.apply(&zone_names, BTreeMap::new())?;
        let (creator, comment) = (creator.to_string(), initial.comment.clone());

        self.transaction(WHAT, TxnMode::ReadWrite, async move |txn| {
            let inserted = txn
                .execute(
                    "INSERT INTO dns_group (dns_group, latest_version) VALUES ($1, 1) \
                     ON CONFLICT (dns_group) DO NOTHING",
                    &[&group.as_str()],
                )
                .await
                .map_err(query_error(WHAT, "creating the group"))?;
            if inserted == 0 {
                return Err(DnsError::GroupAlreadyInitialized { group });
            }
            for zone in &zones {
                let inserted = txn
                    .execute(
                        "INSERT INTO dns_zone (id, dns_group, zone_name, ttl_seconds, time_created) \
                         VALUES ($1, $2, $3, $4, now()) ON CONFLICT (zone_name) DO NOTHING",
                        &[&zone.id, &group.as_str(), &zone.name, &i64::from(zone.ttl_seconds)],
                    )
                    .await
                    .map_err(query_error(WHAT, "creating a zone"))?;
                if inserted == 0 {
                    return Err(DnsError::ZoneExists { zone: zone.name.clone() });
                }
            }
            let mut digest_state = empty_digest_state(&zones);
            update_digest_state(&mut digest_state, &zones, &BTreeMap::new(), &state)?;
            write_names(txn, WHAT, &zones, 1, &BTreeSet::new(), &state).await?;
            Ok(insert_version(txn, WHAT, group, 1, &creator, &comment, &digest_state).await?)
        })
        .await
    }

    /// Commits `change` to `group` as exactly one new generation, recording
    /// `creator` and the change's comment.  Retried on conflict with
    /// concurrent changes, re-validated against the state each retry sees.
    pub async fn dns_change_commit(
        &self,
        group: DnsGroup,
        creator: &str,
        change: &DnsChange,
    ) -> Result<DnsVersion, DnsError> {
        const WHAT: &str = "commit DNS change";
        check_change(change, creator, false)?;
        let change = change.clone();
        let creator = creator.to_string();
        let change_digest = dns_types::digest::change_digest(&change);
        self.transaction(WHAT, TxnMode::ReadWrite, async move |txn| {
            // A change sent again with its key: answer with what the first
            // call committed (its outcome may never have reached the caller).
            if let Some(key) = &change.idempotency_key {
                let row = crate::prepared::query_opt(
                    txn,
                    "SELECT version, change_digest FROM dns_change_key \
                         WHERE dns_group = $1 AND idempotency_key = $2",
                    &[&group.as_str(), key],
                )
                .await
                .map_err(query_error(WHAT, "looking up the idempotency key"))?;
                if let Some(row) = row {
                    let generation = generation_from_db(row.get(0))?;
                    let digest: String = row.get(1);
                    if digest != change_digest {
                        return Err(DnsError::IdempotencyKeyReused {
                            group,
                            key: key.clone(),
                            generation,
                        });
                    }
                    tracing::info!(
                        %group, generation, key = %key,
                        "DNS change already committed with this idempotency key; not applied again"
                    );
                    return read_version(txn, WHAT, group, generation).await;
                }
            }
            // Claim the next generation first: concurrent writers of this
            // group conflict here, before doing any other work.
            let row = crate::prepared::query_opt(
                txn,
                "UPDATE dns_group SET latest_version = latest_version + 1 \
                     WHERE dns_group = $1 RETURNING latest_version",
                &[&group.as_str()],
            )
            .await
            .map_err(query_error(WHAT, "claiming the next generation"))?
            .ok_or(DnsError::GroupNotInitialized { group })?;
            let generation = generation_from_db(row.get(0))?;
            if generation > limits::MAX_GENERATION {
                return Err(DnsError::GenerationsExhausted { group, latest: generation - 1 });
            }
            let zones = read_zones(txn, WHAT, group).await?;
            let zone_names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
            let resolved = ResolvedChange::resolve(&change, &zone_names)?;

            let mut current = BTreeMap::new();
            for (index, touched) in resolved.touched() {
                let touched: Vec<&str> = touched.iter().map(String::as_str).collect();
                // Not prepared: its plan depends on how many names (see
                // `crate::prepared`).
                let rows = txn
                    .query(
                        "SELECT name, records::TEXT FROM dns_name \
                         WHERE dns_zone_id = $1 AND name = ANY($2) AND version_removed IS NULL",
                        &[&zones[index].id, &touched],
                    )
                    .await
                    .map_err(query_error(WHAT, "reading the names being changed"))?;
                for row in rows {
                    let name: String = row.get(0);
                    let records = records_from_db(&name, row.get(1))?;
                    current.insert((index, name), records);
                }
            }
            let existing: BTreeSet<(usize, String)> = current.keys().cloned().collect();
            // The digest of the new generation, from the previous one's and
            // the touched names (before the live rows change).
            let mut digest_state = match read_digest_state(txn, WHAT, group, generation - 1).await?
            {
                Some(state) => state,
                None => live_digest_state(txn, WHAT, &zones).await?,
            };
            let new_state = resolved.apply(&zone_names, current.clone())?;
            update_digest_state(&mut digest_state, &zones, &current, &new_state)?;
            write_names(txn, WHAT, &zones, generation, &existing, &new_state).await?;
            let version = insert_version(
                txn,
                WHAT,
                group,
                generation,
                &creator,
                &change.comment,
                &digest_state,
            )
            .await?;
            if let Some(key) = &change.idempotency_key {
                crate::prepared::execute(
                    txn,
                    "INSERT INTO dns_change_key \
                     (dns_group, idempotency_key, version, change_digest, time_created) \
                     VALUES ($1, $2, $3, $4, now())",
                    &[&group.as_str(), key, &generation_to_db(generation), &change_digest],
                )
                .await
                .map_err(query_error(WHAT, "recording the idempotency key"))?;
            }
            Ok(version)
        })
        .await
    }

    /// The latest generation of `group`: one index lookup.
    pub async fn dns_version_latest(&self, group: DnsGroup) -> Result<DnsVersion, DnsError> {
        const WHAT: &str = "read latest DNS version";
        self.transaction(WHAT, TxnMode::ReadOnly, async move |txn| {
            read_latest_version(txn, WHAT, group)
                .await?
                .ok_or(DnsError::GroupNotInitialized { group })
        })
        .await
    }

    /// One generation's metadata: when, by whom, why.
    pub async fn dns_version(
        &self,
        group: DnsGroup,
        generation: u64,
    ) -> Result<DnsVersion, DnsError> {
        const WHAT: &str = "read DNS version";
        self.transaction(WHAT, TxnMode::ReadOnly, async move |txn| {
            read_version(txn, WHAT, group, generation).await
        })
        .await
    }

    /// The most recent `limit` generations of `group` (all if `None`),
    /// oldest first.
    pub async fn dns_versions_list(
        &self,
        group: DnsGroup,
        limit: Option<u32>,
    ) -> Result<Vec<DnsVersion>, DnsError> {
        const WHAT: &str = "list DNS versions";
        let limit = i64::from(limit.unwrap_or(u32::MAX));
        self.transaction(WHAT, TxnMode::ReadOnly, async move |txn| {
            let rows = txn
                .query(
                    &format!(
                        "SELECT {VERSION_COLUMNS} FROM dns_version WHERE dns_group = $1 \
                         ORDER BY version DESC LIMIT $2"
                    ),
                    &[&group.as_str(), &limit],
                )
                .await
                .map_err(query_error(WHAT, "reading versions"))?;
            let mut versions =
                rows.iter().map(|r| version_from_row(group, r)).collect::<Result<Vec<_>, _>>()?;
            versions.reverse();
            Ok(versions)
        })
        .await
    }

    /// The generations of `group` that matter at `at`: the one that was the
    /// latest then (if any existed yet), and up to `after` of those
    /// created since, oldest first.
    pub async fn dns_versions_around(
        &self,
        group: DnsGroup,
        at: DateTime<Utc>,
        after: u32,
    ) -> Result<Vec<DnsVersion>, DnsError> {
        const WHAT: &str = "list DNS versions around a time";
        self.transaction(WHAT, TxnMode::ReadOnly, async move |txn| {
            let current = txn
                .query_opt(
                    &format!(
                        "SELECT {VERSION_COLUMNS} FROM dns_version \
                         WHERE dns_group = $1 AND time_created <= $2 \
                         ORDER BY version DESC LIMIT 1"
                    ),
                    &[&group.as_str(), &at],
                )
                .await
                .map_err(query_error(WHAT, "reading the version current then"))?;
            let mut versions = Vec::new();
            let from = match &current {
                Some(row) => {
                    let v = version_from_row(group, row)?;
                    let next = v.generation + 1;
                    versions.push(v);
                    next
                }
                None => 1,
            };
            let rows = txn
                .query(
                    &format!(
                        "SELECT {VERSION_COLUMNS} FROM dns_version \
                         WHERE dns_group = $1 AND version >= $2 ORDER BY version LIMIT $3"
                    ),
                    &[&group.as_str(), &generation_to_db(from), &i64::from(after)],
                )
                .await
                .map_err(query_error(WHAT, "reading the versions since"))?;
            for row in &rows {
                versions.push(version_from_row(group, row)?);
            }
            Ok(versions)
        })
        .await
    }

    /// What the digest of `group` at `generation` is computed from, as
    /// stored when the generation was written: the database's own account
    /// of that generation's content, which Nexus checks a config derived
    /// from a difference against.  `None` for generations written before
    /// the database kept it.
    pub async fn dns_digest_state(
        &self,
        group: DnsGroup,
        generation: u64,
    ) -> Result<Option<DigestState>, DnsError> {
        const WHAT: &str = "read DNS digest state";
        self.transaction(WHAT, TxnMode::ReadOnly, async move |txn| {
            read_version(txn, WHAT, group, generation).await?;
            Ok(read_digest_state(txn, WHAT, group, generation).await?)
        })
        .await
    }

    /// The full config of `group` at `generation` (the latest if `None`), read
    /// in one transaction so that version and names agree.
    pub async fn dns_config_read(
        &self,
        group: DnsGroup,
        generation: Option<u64>,
    ) -> Result<DnsConfig, DnsError> {
        const WHAT: &str = "read DNS config";
        self.transaction(WHAT, TxnMode::ReadOnly, async move |txn| {
            let version = match generation {
                Some(generation) => read_version(txn, WHAT, group, generation).await?,
                None => read_latest_version(txn, WHAT, group)
                    .await?
                    .ok_or(DnsError::GroupNotInitialized { group })?,
            };
            let zones = read_zones(txn, WHAT, group).await?;
            let mut config_zones = Vec::with_capacity(zones.len());
            for zone in &zones {
                config_zones.push(DnsConfigZone {
                    zone_name: zone.name.clone(),
                    ttl_seconds: zone.ttl_seconds,
                    names: read_zone_names(txn, WHAT, zone, version.generation).await?,
                });
            }
            Ok(DnsConfig {
                generation: version.generation,
                time_created: version.time_created,
                creator: version.creator,
                comment: version.comment,
                zones: config_zones,
            })
        })
        .await
    }

    /// Every zone of every group.
    pub async fn dns_zones(&self) -> Result<Vec<ZoneInfo>, DnsError> {
        const WHAT: &str = "list DNS zones";
        self.transaction(WHAT, TxnMode::ReadOnly, async move |txn| {
            let rows = txn
                .query(
                    "SELECT dns_group, zone_name, ttl_seconds FROM dns_zone ORDER BY zone_name",
                    &[],
                )
                .await
                .map_err(query_error(WHAT, "reading the zones"))?;
            rows.iter()
                .map(|row| {
                    Ok(ZoneInfo {
                        group: group_from_db(row.get(0))?,
                        zone_name: row.get(1),
                        ttl_seconds: ttl_from_db(row.get(2))?,
                    })
                })
                .collect::<Result<Vec<_>, DbError>>()
                .map_err(DnsError::from)
        })
        .await
    }

    /// Every stretch of generations during which `name` (relative to
    /// `zone_name`) had one set of records, oldest first, with the versions
    /// that opened and closed each: the name's whole history in one query
    /// over the primary key's `(dns_zone_id, name)` prefix, whatever the
    /// number of generations.
    pub async fn dns_name_history(
        &self,
        zone_name: &str,
        name: &str,
    ) -> Result<Vec<NameStretch>, DnsError> {
        const WHAT: &str = "read a DNS name's history";
        let (zone_name, name) = (zone_name.to_string(), name.to_string());
        self.transaction(WHAT, TxnMode::ReadOnly, async move |txn| {
            let rows = txn
                .query(
                    "SELECT z.dns_group, n.records::TEXT, \
                            va.version, va.time_created, va.creator, va.comment, \
                            vr.version, vr.time_created, vr.creator, vr.comment \
                     FROM dns_zone z \
                     JOIN dns_name n ON n.dns_zone_id = z.id \
                     JOIN dns_version va ON va.dns_group = z.dns_group AND va.version = n.version_added \
                     LEFT JOIN dns_version vr \
                       ON vr.dns_group = z.dns_group AND vr.version = n.version_removed \
                     WHERE z.zone_name = $1 AND n.name = $2 \
                     ORDER BY n.version_added",
                    &[&zone_name, &name],
                )
                .await
                .map_err(query_error(WHAT, "reading the name's rows"))?;
            let mut stretches = Vec::with_capacity(rows.len());
            for row in &rows {
                let group = group_from_db(row.get(0))?;
                let version_at = |offset: usize| -> Result<Option<DnsVersion>, DbError> {
                    let Some(generation) = row.get::<_, Option<i64>>(offset) else {
                        return Ok(None);
                    };
                    Ok(Some(DnsVersion {
                        group,
                        generation: generation_from_db(generation)?,
                        time_created: row.get(offset + 1),
                        creator: row.get(offset + 2),
                        comment: row.get(offset + 3),
                    }))
                };
                stretches.push(NameStretch {
                    records: records_from_db(&name, row.get(1))?,
                    added: version_at(2)?.ok_or_else(|| {
                        DbError::Corrupt(format!("name {name:?} has no version_added"))
                    })?,
                    removed: version_at(6)?,
                });
            }
            Ok(stretches)
        })
        .await
    }

    /// The names alive now in `zone_name` (without their records).
    pub async fn dns_zone_live_names(&self, zone_name: &str) -> Result<Vec<String>, DnsError> {
        const WHAT: &str = "list a zone's names";
        let zone_name = zone_name.to_string();
        self.transaction(WHAT, TxnMode::ReadOnly, async move |txn| {
            let rows = txn
                .query(
                    "SELECT n.name FROM dns_zone z JOIN dns_name n ON n.dns_zone_id = z.id \
                     WHERE z.zone_name = $1 AND n.version_removed IS NULL",
                    &[&zone_name],
                )
                .await
                .map_err(query_error(WHAT, "reading the zone's names"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
        .await
    }

    /// What changed in `group` from generation `from` to generation `to`,
    /// read from only the rows added or removed in between.
    pub async fn dns_diff(&self, group: DnsGroup, from: u64, to: u64) -> Result<DnsDiff, DnsError> {
        const WHAT: &str = "diff DNS generations";
        if to < from {
            return Err(DnsError::DiffBackwards { from, to });
        }
        self.transaction(WHAT, TxnMode::ReadOnly, async move |txn| {
            read_version(txn, WHAT, group, from).await?;
            read_version(txn, WHAT, group, to).await?;
            let zones = read_zones(txn, WHAT, group).await?;
            let (from_db, to_db) = (generation_to_db(from), generation_to_db(to));
            let mut diff_zones = Vec::new();
            for zone in &zones {
                // Rows alive at `from` and gone by `to`: the "before" side.
                let before = txn
                    .query(
                        "SELECT name, records::TEXT FROM dns_name WHERE dns_zone_id = $1 \
                         AND version_removed > $2 AND version_removed <= $3 AND version_added <= $2",
                        &[&zone.id, &from_db, &to_db],
                    )
                    .await
                    .map_err(query_error(WHAT, "reading names removed in the range"))?;
                // Rows added after `from` and alive at `to`: the "after" side.
                let after = txn
                    .query(
                        "SELECT name, records::TEXT FROM dns_name WHERE dns_zone_id = $1 \
                         AND version_added > $2 AND version_added <= $3 \
                         AND (version_removed IS NULL OR version_removed > $3)",
                        &[&zone.id, &from_db, &to_db],
                    )
                    .await
                    .map_err(query_error(WHAT, "reading names added in the range"))?;
                let mut names: BTreeMap<String, NameDiff> = BTreeMap::new();
                for (rows, is_before) in [(before, true), (after, false)] {
                    for row in rows {
                        let name: String = row.get(0);
                        let mut records = records_from_db(&name, row.get(1))?;
                        records.sort();
                        let entry = names.entry(name.clone()).or_insert_with(|| NameDiff {
                            name,
                            before: Vec::new(),
                            after: Vec::new(),
                        });
                        if is_before { entry.before = records } else { entry.after = records }
                    }
                }
                // A name changed and changed back in the range is no change.
                let names: Vec<NameDiff> = names.into_values().filter(|d| d.before != d.after).collect();
                if !names.is_empty() {
                    diff_zones.push(ZoneDiff { zone_name: zone.name.clone(), names });
                }
            }
            Ok(DnsDiff { group, from_generation: from, to_generation: to, zones: diff_zones })
        })
        .await
    }
}
