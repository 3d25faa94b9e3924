//! The DNS background tasks, one file each, and their registration.
//!
//! Per group (`internal`, `external`):
//!
//! ```text
//!   dns_config_<group> ──(config)──┐
//!                                  ├──► dns_propagation_<group> ──► PUT /config on each server
//!   dns_servers_<group> ─(servers)─┘
//! ```
//!
//! Each task also runs on its period and on request; a DNS change made
//! through this Nexus activates `dns_config_<group>` right away.

pub mod dns_config;
pub mod dns_propagation;
pub mod dns_servers;

use crate::config::TasksConfig;
use background_tasks::{Activator, DriverBuilder, RegistrationError, TaskDefinition};
use db_model::Datastore;
use dns_types::DnsGroup;
use internal_dns::Resolver;
use nexus_types::task_name::DnsTaskName;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the DNS tasks are built from.
pub struct TaskInputs<'a> {
    pub datastore: &'a Datastore,
    pub resolver: &'a Resolver,
    pub internal_zone: &'a str,
    pub config: &'a TasksConfig,
    pub api_token: &'a api_auth::ApiToken,
    pub metrics: &'a std::sync::Arc<crate::metrics::Metrics>,
    pub nexus_id: uuid::Uuid,
    pub history: &'a crate::history::PropagationHistory,
}

/// Registers the three tasks of each group; returns each group's
/// `dns_config_<group>` activator.
pub fn register(
    builder: &mut DriverBuilder,
    inputs: TaskInputs<'_>,
) -> Result<BTreeMap<DnsGroup, Activator>, RegistrationError> {
    let TaskInputs {
        datastore,
        resolver,
        internal_zone,
        config,
        api_token,
        metrics,
        nexus_id,
        history,
    } = inputs;
    let period = config.period();
    let timeout = config.server_timeout();
    let mut activators = BTreeMap::new();
    for group in DnsGroup::ALL {
        let config_name = DnsTaskName::config(group);
        let servers_name = DnsTaskName::servers(group);
        let (config_task, config_rx) = dns_config::DnsConfigTask::new(group, datastore.clone());
        let config_task = config_task.with_history(history.clone());
        let activator = builder.register(
            TaskDefinition::new(
                config_name.to_string(),
                format!("watches {group} DNS data stored in the database"),
                period,
                config_task,
            )
            .with_deadline(Duration::from_secs(120)),
        )?;
        activators.insert(group, activator.clone());

        let (servers_task, servers_rx) =
            dns_servers::DnsServersTask::new(group, internal_zone, resolver.clone());
        builder.register(
            TaskDefinition::new(
                servers_name.to_string(),
                format!("watches list of {group} DNS servers stored in internal DNS"),
                period,
                servers_task,
            )
            .with_deadline(Duration::from_secs(60)),
        )?;

        // The task's own activator, so a push it let run on can ask for
        // the activation that takes its result in.
        let own = Activator::new();
        let propagation = dns_propagation::DnsPropagationTask::new(
            group,
            config_rx.clone(),
            servers_rx.clone(),
            dns_propagation::PushOptions {
                timeout,
                api_token: api_token.clone(),
                writer: nexus_id.to_string(),
                repair: config.repair_servers,
                metrics: metrics.clone(),
                detach_after: config.detach_after(),
            },
            datastore.clone(),
            activator,
        )
        .with_history(history.clone())
        .with_own_activator(own.clone());
        builder.register(
            TaskDefinition::new(
                DnsTaskName::propagation(group).to_string(),
                format!(
                    "propagates latest {group} DNS configuration (from \"{config_name}\" background \
                     task) to the latest list of DNS servers (from \"{servers_name}\" background task)",
                ),
                period,
                propagation,
            )
            .with_activator(own)
            .watching(config_name.to_string(), config_rx)
            .watching(servers_name.to_string(), servers_rx)
            // Every push has its own limit; this only catches a bug.
            .with_deadline(timeout * 3 + Duration::from_secs(10)),
        )?;
    }
    Ok(activators)
}
