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
use std::collections::BTreeMap;
use std::time::Duration;

pub fn config_task_name(group: DnsGroup) -> String {
    format!("dns_config_{group}")
}

pub fn servers_task_name(group: DnsGroup) -> String {
    format!("dns_servers_{group}")
}

pub fn propagation_task_name(group: DnsGroup) -> String {
    format!("dns_propagation_{group}")
}

/// Registers the three tasks of each group; returns each group's
/// `dns_config_<group>` activator.
pub fn register(
    builder: &mut DriverBuilder,
    datastore: &Datastore,
    resolver: &Resolver,
    internal_zone: &str,
    config: &TasksConfig,
) -> Result<BTreeMap<DnsGroup, Activator>, RegistrationError> {
    let period = config.period();
    let timeout = config.server_timeout();
    let mut activators = BTreeMap::new();
    for group in DnsGroup::ALL {
        let (config_task, config_rx) = dns_config::DnsConfigTask::new(group, datastore.clone());
        let activator = builder.register(
            TaskDefinition::new(
                config_task_name(group),
                format!("watches {group} DNS data stored in the database"),
                period,
                config_task,
            )
            .with_deadline(Duration::from_secs(120)),
        )?;
        activators.insert(group, activator);

        let (servers_task, servers_rx) =
            dns_servers::DnsServersTask::new(group, internal_zone, resolver.clone());
        builder.register(
            TaskDefinition::new(
                servers_task_name(group),
                format!("watches list of {group} DNS servers stored in internal DNS"),
                period,
                servers_task,
            )
            .with_deadline(Duration::from_secs(60)),
        )?;

        let propagation = dns_propagation::DnsPropagationTask::new(
            group,
            config_rx.clone(),
            servers_rx.clone(),
            timeout,
        );
        builder.register(
            TaskDefinition::new(
                propagation_task_name(group),
                format!(
                    "propagates latest {group} DNS configuration (from \"{}\" background task) \
                     to the latest list of DNS servers (from \"{}\" background task)",
                    config_task_name(group),
                    servers_task_name(group)
                ),
                period,
                propagation,
            )
            .watching(config_task_name(group), config_rx)
            .watching(servers_task_name(group), servers_rx)
            // Every push has its own limit; this only catches a bug.
            .with_deadline(timeout * 3 + Duration::from_secs(10)),
        )?;
    }
    Ok(activators)
}
