//! `dns_config_<group>`: watches the group's DNS data in the database.
//!
//! Each activation reads the latest generation (one index lookup).  When it
//! differs from the one published, it loads that generation's full config
//! and publishes it to the tasks that depend on it; otherwise it only
//! confirms, with a fresh timestamp, that the published one is still the
//! latest.  When the database cannot be read, the last config stays
//! published (propagation keeps pushing it) and the status says both: the
//! error, and the generation still in use.

use anyhow::Context;
use background_tasks::{Activation, Task};
use chrono::{DateTime, Utc};
use db_model::Datastore;
use dns_types::{DnsConfig, DnsGroup};
use nexus_api::task_status::DnsConfigStatus;
use std::sync::Arc;
use tokio::sync::watch;

/// What the task publishes: the config, its digest and when this Nexus first
/// saw it.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: Arc<DnsConfig>,
    pub digest: String,
    pub first_seen_at: DateTime<Utc>,
}

pub struct DnsConfigTask {
    group: DnsGroup,
    datastore: Datastore,
    publisher: watch::Sender<Option<LoadedConfig>>,
}

impl DnsConfigTask {
    pub fn new(
        group: DnsGroup,
        datastore: Datastore,
    ) -> (DnsConfigTask, watch::Receiver<Option<LoadedConfig>>) {
        let (publisher, receiver) = watch::channel(None);
        (DnsConfigTask { group, datastore, publisher }, receiver)
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
}

fn status_of(group: DnsGroup, loaded: &LoadedConfig, changed: bool) -> DnsConfigStatus {
    DnsConfigStatus {
        group,
        generation: loaded.config.generation,
        time_created: loaded.config.time_created,
        creator: loaded.config.creator.clone(),
        comment: loaded.config.comment.clone(),
        names: loaded.config.name_count() as u64,
        digest: loaded.digest.clone(),
        first_seen_at: loaded.first_seen_at,
        changed,
        error: None,
    }
}

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
        let (loaded, changed) = match published {
            Some(loaded) if loaded.config.generation == latest.generation => (loaded, false),
            previous => {
                let config = self
                    .datastore
                    .dns_config_read(group, Some(latest.generation))
                    .await
                    .with_context(|| {
                    format!(
                        "loading {group} DNS generation {} from the database",
                        latest.generation
                    )
                })?;
                let loaded = LoadedConfig {
                    digest: dns_types::config_digest(&config),
                    config: Arc::new(config),
                    first_seen_at: Utc::now(),
                };
                tracing::info!(
                    %group, generation = latest.generation,
                    previous = previous.map(|p| p.config.generation), "found new DNS generation"
                );
                self.publisher.send_replace(Some(loaded.clone()));
                (loaded, true)
            }
        };
        Ok(status_of(group, &loaded, changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use background_tasks::ActivationReason;
    use db_model::ZoneSpec;
    use dns_types::{DnsChange, DnsRecord, NameRecords};

    fn add(comment: &str, name: &str) -> DnsChange {
        DnsChange {
            comment: comment.into(),
            add: vec![NameRecords {
                name: name.into(),
                records: vec![DnsRecord::A("192.0.2.1".parse().unwrap())],
            }],
            remove: vec![],
        }
    }

    #[tokio::test]
    async fn publishes_each_new_generation_once_and_reports_database_errors() {
        let mut db = test_database::TestDatabase::new().await;
        let zones = [ZoneSpec { zone_name: "control-plane.internal".into(), ttl_seconds: 60 }];
        db.datastore
            .dns_group_initialize(DnsGroup::Internal, &zones, "setup", &add("initial setup", "a"))
            .await
            .unwrap();
        let (mut task, receiver) = DnsConfigTask::new(DnsGroup::Internal, db.datastore.clone());
        let activation = Activation::new(1, ActivationReason::Timer);

        let first = task.activate(&activation).await.unwrap();
        assert_eq!((first.generation, first.changed, first.names), (1, true, 1));
        assert_eq!(first.comment, "initial setup");
        assert_eq!(receiver.borrow().as_ref().unwrap().config.generation, 1);

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
            dns_types::config_digest(&receiver.borrow().as_ref().unwrap().config)
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
        let json = serde_json::to_value(&failed).unwrap();
        assert!(json.get("error").is_some(), "the framework sees the activation as failed");
        assert_eq!(
            receiver.borrow().as_ref().unwrap().config.generation,
            2,
            "the last config stays published"
        );
    }
}
