//! `dns_propagation_<group>`: pushes the latest config (from
//! `dns_config_<group>`) to every server of the latest list (from
//! `dns_servers_<group>`).
//!
//! All servers are handled at once, each under its own time limit, so a dead
//! or hung server delays nobody else by more than that limit.  For each
//! server the task first asks what it serves, and pushes only when it is
//! behind; the result says which.  Failed servers are simply tried again by
//! the next activation.

use super::dns_config::LoadedConfig;
use super::dns_servers::ServerList;
use anyhow::anyhow;
use background_tasks::{Activation, Task};
use chrono::Utc;
use dns_types::DnsGroup;
use nexus_api::task_status::{
    ConfigSource, DnsPropagationStatus, PropagationOutcome, PropagationResult, ServerResult,
    ServersSource,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

pub struct DnsPropagationTask {
    group: DnsGroup,
    config: watch::Receiver<Option<LoadedConfig>>,
    servers: watch::Receiver<Option<ServerList>>,
    timeout: Duration,
    clients: HashMap<SocketAddr, dns_server_client::Client>,
}

impl DnsPropagationTask {
    pub fn new(
        group: DnsGroup,
        config: watch::Receiver<Option<LoadedConfig>>,
        servers: watch::Receiver<Option<ServerList>>,
        timeout: Duration,
    ) -> DnsPropagationTask {
        DnsPropagationTask { group, config, servers, timeout, clients: HashMap::new() }
    }

    fn client(&mut self, address: SocketAddr) -> anyhow::Result<dns_server_client::Client> {
        if let Some(client) = self.clients.get(&address) {
            return Ok(client.clone());
        }
        // The per-server limit is enforced around the whole exchange (see
        // `push`); the client's own limit is only a backstop behind it.
        let http = reqwest::Client::builder()
            .connect_timeout(self.timeout)
            .timeout(self.timeout * 2)
            .build()
            .map_err(|e| anyhow!("building an HTTP client: {e}"))?;
        let client = dns_server_client::Client::new_with_client(&format!("http://{address}"), http);
        self.clients.insert(address, client.clone());
        Ok(client)
    }
}

impl Task for DnsPropagationTask {
    type Status = DnsPropagationStatus;

    async fn activate(&mut self, _: &Activation) -> anyhow::Result<DnsPropagationStatus> {
        let group = self.group;
        let config = self.config.borrow().clone().ok_or_else(|| {
            anyhow!("no {group} DNS config loaded yet (see task \"dns_config_{group}\")")
        })?;
        let servers = self.servers.borrow().clone().ok_or_else(|| {
            anyhow!("no {group} DNS server list yet (see task \"dns_servers_{group}\")")
        })?;
        if servers.servers.is_empty() {
            return Err(anyhow!(
                "no {group} DNS servers are registered in internal DNS (see task \"dns_servers_{group}\"): \
                 generation {} reached no server",
                config.config.generation
            ));
        }
        // Forget clients of servers that left the list.
        self.clients.retain(|address, _| servers.servers.iter().any(|s| s.address == *address));
        let mut pushes = Vec::new();
        for server in &servers.servers {
            let client = self.client(server.address)?;
            let config = config.clone();
            let timeout = self.timeout;
            pushes.push(async move { (server.address, push(client, config, timeout).await) });
        }
        let results: BTreeMap<String, ServerResult> = futures::future::join_all(pushes)
            .await
            .into_iter()
            .map(|(address, result)| (address.to_string(), result))
            .collect();
        let all_done_at = results.values().map(|r| r.completed_at).max().unwrap_or_else(Utc::now);
        for (address, result) in &results {
            if result.result == PropagationResult::Error {
                tracing::warn!(%group, server = %address, message = %result.message, "DNS propagation failed");
            }
        }
        Ok(DnsPropagationStatus {
            group,
            generation: config.config.generation,
            config_source: ConfigSource {
                task: format!("dns_config_{group}"),
                creator: config.config.creator.clone(),
                comment: config.config.comment.clone(),
                digest: config.digest.clone(),
                first_seen_at: config.first_seen_at,
            },
            servers_source: ServersSource {
                task: format!("dns_servers_{group}"),
                discovered_at: servers.discovered_at,
            },
            servers: results,
            all_done_at,
        })
    }
}

/// Brings one server to `config`'s generation, within `timeout`.
async fn push(
    client: dns_server_client::Client,
    config: LoadedConfig,
    timeout: Duration,
) -> ServerResult {
    let generation = config.config.generation;
    let work = async {
        let status = client
            .status_get()
            .send()
            .await
            .map_err(|e| (None, format!("reading its status: {}", describe(e))))?
            .into_inner();
        let at = status.generation;
        if at > generation {
            return Ok((
                PropagationOutcome::NewerGeneration,
                at,
                format!("server is at generation {at}, newer than {generation}"),
            ));
        }
        if at == generation {
            return if status.applied_config_digest.as_deref() == Some(config.digest.as_str()) {
                Ok((PropagationOutcome::AlreadyCurrent, at, format!("already at generation {at}")))
            } else {
                Err((
                    Some(at),
                    format!(
                        "server has generation {at} with different content (digest {}, expected {})",
                        status.applied_config_digest.as_deref().unwrap_or("none"),
                        config.digest
                    ),
                ))
            };
        }
        match client.config_put().body((*config.config).clone()).send().await {
            Ok(_) => Ok((
                PropagationOutcome::Applied,
                generation,
                format!("updated from generation {at} to {generation}"),
            )),
            Err(e) => Err((Some(at), format!("pushing generation {generation}: {}", describe(e)))),
        }
    };
    let outcome = tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| {
        Err((None, format!("no complete answer within {timeout:?} (server down or hung?)")))
    });
    let completed_at = Utc::now();
    match outcome {
        Ok((outcome, server_generation, message)) => ServerResult {
            result: PropagationResult::Success,
            outcome,
            message,
            server_generation: Some(server_generation),
            completed_at,
        },
        Err((server_generation, message)) => ServerResult {
            result: PropagationResult::Error,
            outcome: PropagationOutcome::Failed,
            message,
            server_generation,
            completed_at,
        },
    }
}

/// A client error as an operator wants to read it: the server's own message
/// and error code when it sent one, else the transport error with causes.
fn describe(error: dns_server_client::Error<dns_server_client::types::Error>) -> String {
    match error {
        dns_server_client::Error::ErrorResponse(response) => format!(
            "HTTP {} {}: {}",
            response.status().as_u16(),
            response.error_code.as_deref().unwrap_or(""),
            response.message
        ),
        other => format!("{:#}", anyhow::Error::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use background_tasks::{Activation, ActivationReason};
    use dns_types::{DnsConfig, DnsConfigZone, DnsRecord};
    use nexus_api::task_status::DnsServerEntry;
    use std::sync::Arc;

    async fn server() -> (dns_server::RunningServer, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = dns_server::Config::loopback(dir.path());
        (dns_server::RunningServer::start(&config).await.unwrap(), dir)
    }

    fn config(generation: u64, ip: &str) -> DnsConfig {
        DnsConfig {
            generation,
            time_created: Utc::now(),
            creator: "test".into(),
            comment: format!("generation {generation}"),
            zones: vec![DnsConfigZone {
                zone_name: "control-plane.internal".into(),
                ttl_seconds: 60,
                names: [("www".to_string(), vec![DnsRecord::A(ip.parse().unwrap())])].into(),
            }],
        }
    }

    fn loaded(config: DnsConfig) -> LoadedConfig {
        LoadedConfig {
            digest: dns_types::config_digest(&config),
            config: Arc::new(config),
            first_seen_at: Utc::now(),
        }
    }

    /// Each kind of per-server result: applied, already current, newer,
    /// same generation with other content, and unreachable.
    #[tokio::test]
    async fn every_outcome_is_reported_per_server() {
        let (behind, _d1) = server().await;
        let (current, _d2) = server().await;
        let (newer, _d3) = server().await;
        let (diverged, _d4) = server().await;
        current.apply(config(5, "192.0.2.5")).await.unwrap();
        newer.apply(config(6, "192.0.2.6")).await.unwrap();
        diverged.apply(config(5, "192.0.2.99")).await.unwrap();
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();

        let servers: Vec<DnsServerEntry> = [
            behind.http_address(),
            current.http_address(),
            newer.http_address(),
            diverged.http_address(),
            dead,
        ]
        .into_iter()
        .map(|address| DnsServerEntry { address, target: format!("{address}") })
        .collect();
        let (_config_tx, config_rx) = watch::channel(Some(loaded(config(5, "192.0.2.5"))));
        let (_servers_tx, servers_rx) =
            watch::channel(Some(ServerList { servers, discovered_at: Utc::now() }));
        let mut task = DnsPropagationTask::new(
            DnsGroup::Internal,
            config_rx,
            servers_rx,
            Duration::from_secs(2),
        );
        let activation = Activation { iteration: 1, reason: ActivationReason::Timer };
        let status = task.activate(&activation).await.unwrap();

        let result = |address: SocketAddr| status.servers[&address.to_string()].clone();
        assert_eq!(result(behind.http_address()).outcome, PropagationOutcome::Applied);
        assert_eq!(behind.generation(), 5);
        assert_eq!(result(current.http_address()).outcome, PropagationOutcome::AlreadyCurrent);
        let newer_result = result(newer.http_address());
        assert_eq!(newer_result.outcome, PropagationOutcome::NewerGeneration);
        assert_eq!(newer_result.result, PropagationResult::Success);
        assert_eq!(newer_result.server_generation, Some(6));
        assert_eq!(newer.generation(), 6, "a newer server is never pushed back");
        let diverged_result = result(diverged.http_address());
        assert_eq!(diverged_result.result, PropagationResult::Error);
        assert!(
            diverged_result.message.contains("different content"),
            "{}",
            diverged_result.message
        );
        let dead_result = result(dead);
        assert_eq!(dead_result.result, PropagationResult::Error);
        assert!(dead_result.message.contains("reading its status"), "{}", dead_result.message);
        assert_eq!(status.generation, 5);
        assert!(status.servers.values().all(|r| r.completed_at <= status.all_done_at));
    }

    #[tokio::test]
    async fn nothing_to_push_is_an_error_not_a_success() {
        let (_config_tx, config_rx) = watch::channel(None);
        let (_servers_tx, servers_rx) = watch::channel(None);
        let mut task = DnsPropagationTask::new(
            DnsGroup::External,
            config_rx,
            servers_rx,
            Duration::from_secs(1),
        );
        let activation = Activation { iteration: 1, reason: ActivationReason::Timer };
        let error = task.activate(&activation).await.unwrap_err().to_string();
        assert!(error.contains("no external DNS config loaded yet"), "{error}");

        let (_config_tx, config_rx) = watch::channel(Some(loaded(config(2, "192.0.2.2"))));
        let (_servers_tx, servers_rx) =
            watch::channel(Some(ServerList { servers: vec![], discovered_at: Utc::now() }));
        let mut task = DnsPropagationTask::new(
            DnsGroup::External,
            config_rx,
            servers_rx,
            Duration::from_secs(1),
        );
        let error = task.activate(&activation).await.unwrap_err().to_string();
        assert!(error.contains("no external DNS servers are registered"), "{error}");
        assert!(error.contains("generation 2 reached no server"), "{error}");
    }
}
