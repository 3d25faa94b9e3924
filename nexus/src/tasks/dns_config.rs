//! `dns_config_<group>`: watches the group's DNS data in the database.
//!
//! Each activation reads the latest generation (one index lookup).  When it
//! differs from the one published, it derives that generation's config from
//! the one it has and the names that changed in between (read from only the
//! rows that changed), and checks the result against the digest state the
//! database stored with the generation.  On any doubt (no config yet, a
//! difference larger than half the zone, no stored digest state, a
//! mismatch) it reads the config in full instead, and says so in its
//! status.  Then it publishes the config, with the difference from the one
//! before, to the tasks that depend on it; otherwise it only confirms, with
//! a fresh timestamp, that the published one is still the latest.  When the
//! database cannot be read, the last config stays published (propagation
//! keeps pushing it) and the status says both: the error, and the
//! generation still in use.

use anyhow::Context;
use background_tasks::{Activation, Task};
use chrono::{DateTime, Utc};
use db_model::Datastore;
use dns_types::{
    ConfigDiff, DigestState, DnsConfig, DnsConfigZone, DnsGroup, DnsRecord, DnsVersion,
};
use nexus_types::task_status::{ConfigLoad, DnsConfigStatus};
use shared_map::SharedMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// What the task publishes: the config, its digest and when this Nexus first
/// saw it.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub version: DnsVersion,
    pub content: ConfigContent,
    pub digest: String,
    pub digest_state: DigestState,
    pub first_seen_at: DateTime<Utc>,
    /// The difference from the config published before, when this one was
    /// derived from it.
    pub diff_from_previous: Option<Arc<ConfigDiff>>,
    pub load: ConfigLoad,
}

impl LoadedConfig {
    /// A config read whole.
    pub fn whole(group: DnsGroup, config: DnsConfig, load: ConfigLoad) -> LoadedConfig {
        let digest_state = DigestState::of_config(&config);
        LoadedConfig {
            version: DnsVersion {
                group,
                generation: config.generation,
                time_created: config.time_created,
                creator: config.creator.clone(),
                comment: config.comment.clone(),
            },
            digest: digest_state.digest(config.generation),
            digest_state,
            content: ConfigContent::new(config),
            first_seen_at: Utc::now(),
            diff_from_previous: None,
            load,
        }
    }

    pub fn generation(&self) -> u64 {
        self.version.generation
    }

    /// The whole config (a copy: costs the size of the config).
    pub fn config(&self) -> DnsConfig {
        let v = &self.version;
        self.content.materialize(v.generation, v.time_created, &v.creator, &v.comment)
    }

    pub fn name_count(&self) -> u64 {
        self.digest_state.name_count()
    }
}

/// A config's names, shared between generations: per zone, a map whose
/// copies share every shard a difference does not touch.  Deriving the next
/// generation copies the shards holding the changed names (a few thousand
/// entries at a million names), never the whole config; the config as one
/// value is built only when a server needs it whole.
#[derive(Clone, Debug)]
pub struct ConfigContent {
    zones: Vec<ZoneContent>,
}

#[derive(Clone, Debug)]
struct ZoneContent {
    zone_name: String,
    ttl_seconds: u32,
    /// Names shared (`Arc`) too: copying a shard then allocates nothing.
    names: SharedMap<Arc<str>, Arc<[DnsRecord]>>,
}

impl ConfigContent {
    fn new(config: DnsConfig) -> ConfigContent {
        let zones = config
            .zones
            .into_iter()
            .map(|zone| {
                let mut names = SharedMap::with_capacity(zone.names.len());
                for (name, records) in zone.names {
                    names.insert(Arc::from(name), Arc::from(records));
                }
                ZoneContent { zone_name: zone.zone_name, ttl_seconds: zone.ttl_seconds, names }
            })
            .collect();
        ConfigContent { zones }
    }

    /// The records of one name (empty: absent).
    fn records(&self, zone: &str, name: &str) -> &[DnsRecord] {
        self.zones
            .iter()
            .find(|z| z.zone_name == zone)
            .and_then(|z| z.names.get(name))
            .map(|records| &records[..])
            .unwrap_or_default()
    }

    /// This content with `diff` applied.  A zone the content does not have
    /// cannot be in a difference that passed the digest check
    /// (`DigestState::replace_name` refuses it), so it is skipped.
    fn with_diff(&self, diff: &ConfigDiff) -> ConfigContent {
        let mut next = self.clone();
        for change in &diff.zones {
            let Some(zone) = next.zones.iter_mut().find(|z| z.zone_name == change.zone_name) else {
                continue;
            };
            for name in &change.names {
                if name.records.is_empty() {
                    zone.names.remove(name.name.as_str());
                } else {
                    zone.names
                        .insert(Arc::from(name.name.as_str()), Arc::from(name.records.as_slice()));
                }
            }
        }
        next
    }

    fn materialize(
        &self,
        generation: u64,
        time_created: DateTime<Utc>,
        creator: &str,
        comment: &str,
    ) -> DnsConfig {
        DnsConfig {
            generation,
            time_created,
            creator: creator.to_string(),
            comment: comment.to_string(),
            zones: self
                .zones
                .iter()
                .map(|zone| DnsConfigZone {
                    zone_name: zone.zone_name.clone(),
                    ttl_seconds: zone.ttl_seconds,
                    names: zone.names.iter().map(|(n, r)| (n.to_string(), r.to_vec())).collect(),
                })
                .collect(),
        }
    }
}

pub struct DnsConfigTask {
    group: DnsGroup,
    datastore: Datastore,
    publisher: watch::Sender<Option<LoadedConfig>>,
    /// Where "first seen" is recorded, if anywhere.
    history: Option<crate::history::PropagationHistory>,
}

impl DnsConfigTask {
    pub fn new(
        group: DnsGroup,
        datastore: Datastore,
    ) -> (DnsConfigTask, watch::Receiver<Option<LoadedConfig>>) {
        let (publisher, receiver) = watch::channel(None);
        (DnsConfigTask { group, datastore, publisher, history: None }, receiver)
    }

    /// Records each generation's first sighting in `history`.
    pub fn with_history(mut self, history: crate::history::PropagationHistory) -> Self {
        self.history = Some(history);
        self
    }
}

impl Task for DnsConfigTask {
    type Status = DnsConfigStatus;

    async fn activate(&mut self, _: &Activation) -> anyhow::Result<DnsConfigStatus> {
        match self.load().await {
            Ok(status) => Ok(status),
            Err(error) => {
                // Database drivers repeat their causes' text; say each once.
                let message = dns_types::error_chain(error.as_ref());
                let Some(loaded) = self.publisher.borrow().clone() else {
                    return Err(anyhow::anyhow!(message));
                };
                let mut status = status_of(self.group, &loaded, false);
                status.error = Some(message);
                Ok(status)
            }
        }
    }

    /// Reading the database failed, but the last good config is kept (and
    /// still propagated): a failed activation that shows what it kept.
    fn failure(status: &DnsConfigStatus) -> Option<String> {
        status.error.clone()
    }
}

fn status_of(group: DnsGroup, loaded: &LoadedConfig, changed: bool) -> DnsConfigStatus {
    DnsConfigStatus {
        group,
        generation: loaded.version.generation,
        time_created: loaded.version.time_created,
        creator: loaded.version.creator.clone(),
        comment: loaded.version.comment.clone(),
        names: loaded.name_count(),
        digest: loaded.digest.clone(),
        first_seen_at: loaded.first_seen_at,
        changed,
        load: Some(loaded.load.clone()),
        error: None,
    }
}

/// Why a difference could not be used; the config is then read in full.
struct NoDifference(String);

impl DnsConfigTask {
    async fn load(&mut self) -> anyhow::Result<DnsConfigStatus> {
        let group = self.group;
        let latest = self.datastore.dns_version_latest(group).await.with_context(|| {
            format!(
                "reading the latest {group} DNS version from the database at {}",
                self.datastore.address()
            )
        })?;
        let published = self.publisher.borrow().clone();
        if let Some(loaded) = &published
            && loaded.generation() == latest.generation
        {
            return Ok(status_of(group, loaded, false));
        }
        let started = Instant::now();
        let derived = match &published {
            Some(previous) if previous.generation() < latest.generation => {
                self.derive(previous, &latest, started).await?
            }
            Some(previous) => Err(NoDifference(format!(
                "the database's latest generation {} is older than the {} loaded before \
                 (restored from a backup?)",
                latest.generation,
                previous.generation()
            ))),
            None => Err(NoDifference(String::new())),
        };
        let loaded = match derived {
            Ok(loaded) => loaded,
            Err(NoDifference(reason)) => {
                if !reason.is_empty() {
                    tracing::warn!(%group, generation = latest.generation, %reason, "reading the DNS config in full");
                }
                self.load_full(latest.generation, (!reason.is_empty()).then_some(reason), started)
                    .await?
            }
        };
        tracing::info!(
            %group, generation = latest.generation,
            previous = published.map(|p| p.generation()), load = %loaded.load,
            "found new DNS generation"
        );
        self.publisher.send_replace(Some(loaded.clone()));
        if let Some(history) = &self.history {
            history.seen(&loaded.version, loaded.first_seen_at).await;
        }
        Ok(status_of(group, &loaded, true))
    }

    async fn load_full(
        &self,
        generation: u64,
        reason: Option<String>,
        started: Instant,
    ) -> anyhow::Result<LoadedConfig> {
        let group = self.group;
        let config =
            self.datastore.dns_config_read(group, Some(generation)).await.with_context(|| {
                format!("loading {group} DNS generation {generation} from the database")
            })?;
        let names_read = config.name_count() as u64;
        Ok(LoadedConfig::whole(
            group,
            config,
            ConfigLoad::Full { names_read, duration_ms: millis(started), reason },
        ))
    }

    /// The config at `latest` from `previous` and the names that changed in
    /// between, checked against the database's digest state.
    async fn derive(
        &self,
        previous: &LoadedConfig,
        latest: &DnsVersion,
        started: Instant,
    ) -> anyhow::Result<Result<LoadedConfig, NoDifference>> {
        let group = self.group;
        let (from, to) = (previous.generation(), latest.generation);
        // Both are of generation `to`, which never changes: read at once
        // (one round trip to the database, not two, on every change).
        let (diff, stored) = tokio::join!(
            self.datastore.dns_diff(group, from, to),
            self.datastore.dns_digest_state(group, to)
        );
        let diff = diff.with_context(|| {
            format!("reading the {group} DNS names changed from generation {from} to {to}")
        })?;
        let changed: usize = diff.zones.iter().map(|z| z.names.len()).sum();
        if !dns_types::difference_is_worthwhile(changed as u64, previous.name_count()) {
            return Ok(Err(NoDifference(format!(
                "{changed} of {} names changed; reading in full is cheaper",
                previous.name_count()
            ))));
        }
        // A stored state that cannot be read (damaged) is a doubt like any
        // other: read in full.  (An unreachable database fails that read
        // too, with its own error.)
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                return Ok(Err(NoDifference(format!(
                    "the digest state of generation {to} could not be read: {}",
                    dns_types::error_chain(&e)
                ))));
            }
        };
        let Some(stored) = stored else {
            return Ok(Err(NoDifference(format!(
                "the database stored no digest state with generation {to} (written before \
                 schema 1.1.0), so a derived config could not be checked"
            ))));
        };
        let content = &previous.content;
        // Our own records of each changed name go out of the digest, the
        // database's new ones in: the result matches the database's state
        // only if what we had matched it too.
        let mut state = previous.digest_state.clone();
        for zone in &diff.zones {
            for name in &zone.names {
                let before = content.records(&zone.zone_name, &name.name);
                if let Err(e) = state.replace_name(&zone.zone_name, &name.name, before, &name.after)
                {
                    return Ok(Err(NoDifference(format!("the difference changes {e}"))));
                }
            }
        }
        let digest = state.digest(to);
        let database_digest = stored.digest(to);
        if state != stored {
            return Ok(Err(NoDifference(format!(
                "the config derived from generation {from} has digest {digest}, but the \
                 database's digest of generation {to} is {database_digest}"
            ))));
        }
        let config_diff = ConfigDiff::from_dns_diff(
            &diff,
            previous.digest.clone(),
            digest.clone(),
            latest.time_created,
            latest.creator.clone(),
            latest.comment.clone(),
        );
        Ok(Ok(LoadedConfig {
            version: latest.clone(),
            content: content.with_diff(&config_diff),
            digest,
            digest_state: state,
            first_seen_at: Utc::now(),
            diff_from_previous: Some(Arc::new(config_diff)),
            load: ConfigLoad::Difference {
                from_generation: from,
                names_read: changed as u64,
                duration_ms: millis(started),
            },
        }))
    }
}

fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use background_tasks::ActivationReason;
    use db_model::ZoneSpec;
    use dns_types::{DnsChange, DnsRecord, NameRecords};

    fn add(comment: &str, name: &str) -> DnsChange {
        DnsChange {
            idempotency_key: None,
            comment: comment.into(),
            add: vec![NameRecords {
                name: name.into(),
                records: vec![DnsRecord::A("192.0.2.1".parse().unwrap())],
            }],
            remove: vec![],
        }
    }

    /// A database whose internal group holds name `a`, and a config task
    /// on it.
    async fn initialized() -> (
        test_database::TestDatabase,
        DnsConfigTask,
        watch::Receiver<Option<LoadedConfig>>,
        Activation,
    ) {
        let db = test_database::TestDatabase::new().await;
        let zones = [ZoneSpec { zone_name: "control-plane.internal".into(), ttl_seconds: 60 }];
        db.datastore
            .dns_group_initialize(DnsGroup::Internal, &zones, "setup", &add("initial setup", "a"))
            .await
            .unwrap();
        let (task, receiver) = DnsConfigTask::new(DnsGroup::Internal, db.datastore.clone());
        (db, task, receiver, Activation::new(1, ActivationReason::Timer))
    }

    #[tokio::test]
    async fn publishes_each_new_generation_once_and_reports_database_errors() {
        let (mut db, mut task, receiver, activation) = initialized().await;

        let first = task.activate(&activation).await.unwrap();
        assert_eq!((first.generation, first.changed, first.names), (1, true, 1));
        assert_eq!(first.comment, "initial setup");
        assert_eq!(receiver.borrow().as_ref().unwrap().generation(), 1);

        let again = task.activate(&activation).await.unwrap();
        assert!(!again.changed);
        assert_eq!(again.first_seen_at, first.first_seen_at, "first seen stays the first time");

        db.datastore
            .dns_change_commit(DnsGroup::Internal, "nexus-x", &add("second", "b"))
            .await
            .unwrap();
        let second = task.activate(&activation).await.unwrap();
        assert_eq!((second.generation, second.changed, second.names), (2, true, 2));
        assert_eq!(second.creator, "nexus-x");
        assert_eq!(
            second.digest,
            dns_types::config_digest(&receiver.borrow().as_ref().unwrap().config())
        );
        assert!(
            matches!(
                second.load,
                Some(ConfigLoad::Difference { from_generation: 1, names_read: 1, .. })
            ),
            "{:?}",
            second.load
        );
        assert_eq!(
            receiver.borrow().as_ref().unwrap().config(),
            db.datastore.dns_config_read(DnsGroup::Internal, Some(2)).await.unwrap(),
            "the derived config is the database's"
        );

        db.server.stop_temporarily();
        let failed = task.activate(&activation).await.unwrap();
        let error = failed.error.clone().expect("a database error is reported");
        assert!(
            error.contains(
                "reading the latest internal DNS version from the database at 127.0.0.1:"
            ),
            "{error}"
        );
        assert_eq!(failed.generation, 2, "the status names the generation still in use");
        assert_eq!(
            <DnsConfigTask as Task>::failure(&failed),
            Some(error.clone()),
            "the framework records the activation as failed, keeping the status"
        );
        assert_eq!(
            receiver.borrow().as_ref().unwrap().generation(),
            2,
            "the last config stays published"
        );
    }

    /// A generation without a stored digest state, or whose stored state
    /// disagrees with the derived config, is read in full, and the status
    /// says why.
    #[tokio::test]
    async fn doubts_about_a_difference_mean_reading_in_full() {
        let (db, mut task, receiver, activation) = initialized().await;
        task.activate(&activation).await.unwrap();
        let (sql, connection) =
            tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);

        db.datastore.dns_change_commit(DnsGroup::Internal, "n", &add("two", "b")).await.unwrap();
        sql.execute("UPDATE dns_version SET digest_state = NULL WHERE version = 2", &[])
            .await
            .unwrap();
        let status = task.activate(&activation).await.unwrap();
        let Some(ConfigLoad::Full { reason: Some(reason), names_read: 2, .. }) = &status.load
        else {
            panic!("{:?}", status.load)
        };
        assert!(reason.contains("no digest state with generation 2"), "{reason}");

        // Generation 3's stored state claims other content than the rows.
        db.datastore.dns_change_commit(DnsGroup::Internal, "n", &add("three", "c")).await.unwrap();
        sql.execute(
            "UPDATE dns_version SET digest_state = \
             (SELECT digest_state FROM dns_version WHERE version = 1) WHERE version = 3",
            &[],
        )
        .await
        .unwrap();
        let status = task.activate(&activation).await.unwrap();
        let Some(ConfigLoad::Full { reason: Some(reason), .. }) = &status.load else {
            panic!("{:?}", status.load)
        };
        assert!(reason.contains("but the database's digest of generation 3 is"), "{reason}");
        assert_eq!(
            receiver.borrow().as_ref().unwrap().config(),
            db.datastore.dns_config_read(DnsGroup::Internal, Some(3)).await.unwrap()
        );
        assert!(status.load.unwrap().to_string().starts_with("read in full (3 names)"));

        // Generation 4's stored state is not even JSON.
        db.datastore.dns_change_commit(DnsGroup::Internal, "n", &add("four", "d")).await.unwrap();
        sql.execute("UPDATE dns_version SET digest_state = 'damaged' WHERE version = 4", &[])
            .await
            .unwrap();
        let status = task.activate(&activation).await.unwrap();
        assert_eq!(status.error, None, "a damaged state is a doubt, not a failure");
        let Some(ConfigLoad::Full { reason: Some(reason), names_read: 4, .. }) = &status.load
        else {
            panic!("{:?}", status.load)
        };
        assert!(reason.contains("digest state of generation 4 could not be read"), "{reason}");
    }
}
