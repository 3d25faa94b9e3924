//! `dns_config_<group>`: watches the group's DNS data in the database.
//!
//! Each activation reads the latest generation (one index lookup).  When it
//! differs from the one published, it loads that generation's full config
//! and publishes it to the tasks that depend on it; otherwise it only
//! confirms, with a fresh timestamp, that the published one is still the
//! latest.

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
        Ok(DnsConfigStatus {
            group,
            generation: loaded.config.generation,
            time_created: loaded.config.time_created,
            creator: loaded.config.creator.clone(),
            comment: loaded.config.comment.clone(),
            names: loaded.config.name_count() as u64,
            digest: loaded.digest.clone(),
            first_seen_at: loaded.first_seen_at,
            changed,
        })
    }
}
