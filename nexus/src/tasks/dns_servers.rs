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
use internal_dns::{Resolver, ServiceName};
use nexus_types::task_status::{DnsServerEntry, DnsServersStatus};
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
    /// The size of the list before its last change.
    previous_count: Option<usize>,
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
            service_name: ServiceName::dns_servers_of(group).srv_name(internal_zone),
            resolver,
            publisher,
            previous_count: None,
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
            previous => {
                if let Some(previous) = &previous {
                    self.previous_count = Some(previous.servers.len());
                }
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
            unanswered: answer
                .unanswered
                .iter()
                .map(|(server, error)| nexus_types::task_status::UnansweredServer {
                    server: *server,
                    error: error.clone(),
                })
                .collect(),
            servers: list.servers,
            discovered_at: list.discovered_at,
            changed,
            previous_count: self.previous_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use background_tasks::ActivationReason;
    use dns_types::{DnsConfig, DnsConfigZone, DnsRecord, SrvRecord};
    use std::time::Duration;

    const ZONE: &str = "control-plane.internal";

    /// A lookup that fails keeps the last list published: a DNS hiccup must
    /// not make propagation forget its servers.
    #[tokio::test]
    async fn a_failed_lookup_keeps_the_last_list() {
        let dir = test_support::TokenDir::new();
        let config = dns_server::Config::loopback(dir.path().join("storage"), dir.token_file());
        let server = dns_server::RunningServer::start(&config).await.unwrap();
        let names = [
            (
                ServiceName::InternalDns.label().to_string(),
                vec![DnsRecord::Srv(SrvRecord {
                    prio: 0,
                    weight: 0,
                    port: 4444,
                    target: format!("a.host.{ZONE}"),
                })],
            ),
            ("a.host".to_string(), vec![DnsRecord::A("127.0.0.7".parse().unwrap())]),
        ];
        let config = DnsConfig {
            generation: 1,
            time_created: Utc::now(),
            creator: "t".into(),
            comment: "t".into(),
            zones: vec![DnsConfigZone {
                zone_name: ZONE.into(),
                ttl_seconds: 60,
                names: names.into(),
            }],
        };
        server.apply(config).await.unwrap();

        let resolver = Resolver::new(vec![server.dns_address()], Duration::from_millis(300));
        let (mut task, receiver) = DnsServersTask::new(DnsGroup::Internal, ZONE, resolver);
        let activation = Activation::new(1, ActivationReason::Timer);
        let status = task.activate(&activation).await.unwrap();
        assert!(status.changed);
        assert_eq!(status.servers[0].address.to_string(), "127.0.0.7:4444");
        let first = receiver.borrow().clone().unwrap();

        // Same answer: unchanged, same discovery time.
        let again = task.activate(&activation).await.unwrap();
        assert!(!again.changed);
        assert_eq!(again.discovered_at, first.discovered_at);

        server.shutdown().await.unwrap();
        let error = format!("{:#}", task.activate(&activation).await.unwrap_err());
        assert!(error.contains("looking up _nameservice._tcp.control-plane.internal"), "{error}");
        assert_eq!(receiver.borrow().clone().unwrap(), first, "the last list stays published");
    }
}
