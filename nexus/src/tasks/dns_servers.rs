//! `dns_servers_<group>`: watches the list of the group's DNS servers, found
//! through SRV records in internal DNS (`_nameservice._tcp` for internal,
//! `_external-dns._tcp` for external), asked of the bootstrap servers.
//!
//! When the lookup fails, the previously published list stays published:
//! a DNS hiccup must not make propagation forget its servers.

use anyhow::Context;
use background_tasks::{Activation, Task};
use chrono::{DateTime, Utc};
use dns_types::DnsGroup;
use internal_dns::{Resolver, service};
use nexus_api::task_status::{DnsServerEntry, DnsServersStatus};
use tokio::sync::watch;

/// What the task publishes: the servers and when this Nexus first saw
/// exactly this list.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerList {
    pub servers: Vec<DnsServerEntry>,
    pub discovered_at: DateTime<Utc>,
}

pub struct DnsServersTask {
    group: DnsGroup,
    service_name: String,
    resolver: Resolver,
    publisher: watch::Sender<Option<ServerList>>,
}

/// The SRV name under which `group`'s servers are registered.
pub fn service_name(group: DnsGroup, internal_zone: &str) -> String {
    let service = match group {
        DnsGroup::Internal => service::INTERNAL_DNS,
        DnsGroup::External => service::EXTERNAL_DNS,
    };
    format!("{service}.{internal_zone}")
}

impl DnsServersTask {
    pub fn new(
        group: DnsGroup,
        internal_zone: &str,
        resolver: Resolver,
    ) -> (DnsServersTask, watch::Receiver<Option<ServerList>>) {
        let (publisher, receiver) = watch::channel(None);
        let task = DnsServersTask {
            group,
            service_name: service_name(group, internal_zone),
            resolver,
            publisher,
        };
        (task, receiver)
    }
}

impl Task for DnsServersTask {
    type Status = DnsServersStatus;

    async fn activate(&mut self, _: &Activation) -> anyhow::Result<DnsServersStatus> {
        let answer = self
            .resolver
            .lookup_srv(&self.service_name)
            .await
            .with_context(|| format!("looking up {} in internal DNS", self.service_name))?;
        let mut servers = Vec::with_capacity(answer.instances.len());
        for instance in &answer.instances {
            let address = instance.socket_addr().with_context(|| {
                format!(
                    "SRV target {} of {} has no AAAA or A record",
                    instance.target, self.service_name
                )
            })?;
            servers.push(DnsServerEntry { address, target: instance.target.clone() });
        }
        servers.sort();
        let published = self.publisher.borrow().clone();
        let (list, changed) = match published {
            Some(list) if list.servers == servers => (list, false),
            _ => {
                let list = ServerList { servers, discovered_at: Utc::now() };
                tracing::info!(
                    group = %self.group,
                    servers = ?list.servers.iter().map(|s| s.address).collect::<Vec<_>>(),
                    "DNS server list changed"
                );
                self.publisher.send_replace(Some(list.clone()));
                (list, true)
            }
        };
        Ok(DnsServersStatus {
            group: self.group,
            service_name: self.service_name.clone(),
            resolved_via: answer.server,
            servers: list.servers,
            discovered_at: list.discovered_at,
            changed,
        })
    }
}
