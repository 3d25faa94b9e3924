//! `dns_propagation_<group>`: pushes the latest config (from
//! `dns_config_<group>`) to every server of the latest list (from
//! `dns_servers_<group>`).
//!
//! All servers are handled at once, each under its own time limit, so a dead
//! or hung server delays nobody else by more than that limit.  For each
//! server the task first asks what it serves, classifies that against the
//! config (`dns_types::sync::classify`, the one classification every
//! component uses) and pushes only when the server is behind.  Failed
//! servers are simply tried again by the next activation.
//!
//! A server that claims a generation newer than this Nexus's is checked
//! against the database: if the database has it, this Nexus is behind and
//! asks its config task to look again (another Nexus got there first); if
//! not, the server's state is wrong, which is an error naming it, never a
//! success.  Per server, the task remembers across activations when it last
//! tried, last succeeded, since when it has been failing and how often.

use super::dns_config::LoadedConfig;
use super::dns_servers::ServerList;
use anyhow::anyhow;
use background_tasks::{Activation, Activator, Task};
use chrono::Utc;
use db_model::Datastore;
use dns_types::DnsGroup;
use dns_types::sync::{ServerClaim, SyncState, Wanted, classify};
use futures::StreamExt;
use nexus_api::task_name::DnsTaskName;
use nexus_api::task_status::{
    ConfigSource, DnsPropagationStatus, DnsPropagationWaiting, PropagationOutcome,
    PropagationProgress, PropagationReport, PropagationResult, ServerHistory, ServerResult,
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
    datastore: Datastore,
    /// Activates `dns_config_<group>` when a server shows that this Nexus is
    /// behind the database.
    config_activator: Activator,
    clients: HashMap<SocketAddr, dns_server_client::Client>,
    histories: HashMap<SocketAddr, ServerHistory>,
}

impl DnsPropagationTask {
    pub fn new(
        group: DnsGroup,
        config: watch::Receiver<Option<LoadedConfig>>,
        servers: watch::Receiver<Option<ServerList>>,
        timeout: Duration,
        datastore: Datastore,
        config_activator: Activator,
    ) -> DnsPropagationTask {
        DnsPropagationTask {
            group,
            config,
            servers,
            timeout,
            datastore,
            config_activator,
            clients: HashMap::new(),
            histories: HashMap::new(),
        }
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

    /// Folds one result into the server's remembered history.
    fn remember(&mut self, address: SocketAddr, result: &mut ServerResult) {
        let history = self.histories.entry(address).or_default();
        history.last_attempt_at = Some(result.completed_at);
        match result.result {
            PropagationResult::Success => {
                history.last_success_at = Some(result.completed_at);
                history.failing_since = None;
                history.consecutive_failures = 0;
                history.generation_applied = result.server_generation;
            }
            PropagationResult::Error => {
                history.failing_since.get_or_insert(result.completed_at);
                history.consecutive_failures += 1;
            }
        }
        result.history = history.clone();
    }
}

impl Task for DnsPropagationTask {
    type Status = PropagationReport;

    async fn activate(&mut self, activation: &Activation) -> anyhow::Result<PropagationReport> {
        let group = self.group;
        let config = self.config.borrow().clone();
        let servers = self.servers.borrow().clone();
        let (config, servers) = match (config, servers) {
            (Some(config), Some(servers)) => (config, servers),
            (config, servers) => {
                // Starting up: nothing has failed yet, the inputs are not
                // loaded.  Say what is awaited instead of recording a failure.
                let mut waiting_for = Vec::new();
                if config.is_none() {
                    waiting_for.push(DnsTaskName::config(group));
                }
                if servers.is_none() {
                    waiting_for.push(DnsTaskName::servers(group));
                }
                return Ok(PropagationReport::Waiting(DnsPropagationWaiting {
                    group,
                    waiting_for,
                }));
            }
        };
        if servers.servers.is_empty() {
            return Err(anyhow!(
                "no {group} DNS servers are registered in internal DNS (see task \"{}\"): \
                 generation {} reached no server",
                DnsTaskName::servers(group),
                config.config.generation
            ));
        }
        // Forget servers that left the list.
        let listed = |address: &SocketAddr| servers.servers.iter().any(|s| s.address == *address);
        self.clients.retain(|address, _| listed(address));
        self.histories.retain(|address, _| listed(address));

        let mut pushes = futures::stream::FuturesUnordered::new();
        for server in &servers.servers {
            let client = self.client(server.address)?;
            let config = config.clone();
            let timeout = self.timeout;
            let datastore = self.datastore.clone();
            pushes.push(async move {
                (server.address, push(group, client, config, timeout, datastore).await)
            });
        }
        let generation = config.config.generation;
        let mut progress = PropagationProgress {
            generation,
            pending: servers.servers.iter().map(|s| s.address.to_string()).collect(),
            done: BTreeMap::new(),
        };
        activation.report_progress(&progress);
        let mut results: BTreeMap<String, ServerResult> = BTreeMap::new();
        while let Some((address, mut result)) = pushes.next().await {
            self.remember(address, &mut result);
            if result.result == PropagationResult::Error {
                tracing::warn!(%group, server = %address, message = %result.message, "DNS propagation failed");
            }
            if result.outcome == PropagationOutcome::NewerGeneration {
                self.config_activator.activate(format!(
                    "DNS server {address} serves generation {}, newer than this Nexus's {generation}",
                    result.server_generation.unwrap_or_default()
                ));
            }
            progress.pending.retain(|p| *p != address.to_string());
            progress.done.insert(address.to_string(), result.clone());
            activation.report_progress(&progress);
            results.insert(address.to_string(), result);
        }
        let all_done_at = results.values().map(|r| r.completed_at).max().unwrap_or_else(Utc::now);
        Ok(PropagationReport::Done(DnsPropagationStatus {
            group,
            generation,
            config_source: ConfigSource {
                task: DnsTaskName::config(group),
                creator: config.config.creator.clone(),
                comment: config.config.comment.clone(),
                digest: config.digest.clone(),
                first_seen_at: config.first_seen_at,
            },
            servers_source: ServersSource {
                task: DnsTaskName::servers(group),
                discovered_at: servers.discovered_at,
            },
            servers: results,
            all_done_at,
        }))
    }
}

type Outcome = (PropagationResult, PropagationOutcome, Option<u64>, String);

/// Brings one server to `config`'s generation, within `timeout`.
async fn push(
    group: DnsGroup,
    client: dns_server_client::Client,
    config: LoadedConfig,
    timeout: Duration,
    datastore: Datastore,
) -> ServerResult {
    use PropagationOutcome::*;
    use PropagationResult::{Error, Success};
    let generation = config.config.generation;
    let work = async {
        let status = match client.status_get().send().await {
            Ok(status) => status.into_inner(),
            Err(e) => {
                return (Error, Failed, None, format!("reading its status: {}", describe(e)));
            }
        };
        let at = status.generation;
        let mut wanted = Wanted {
            generation,
            digest: &config.digest,
            database_latest: None,
            digest_at_server_generation: None,
        };
        let claim = ServerClaim { generation: at, digest: status.applied_config_digest.as_deref() };
        if at > generation {
            // Newer than this Nexus: does the database have it?
            match datastore.dns_version_latest(group).await {
                Ok(latest) => wanted.database_latest = Some(latest.generation),
                Err(e) => {
                    let e = dns_types::error_chain(&e);
                    return (
                        Error,
                        Failed,
                        Some(at),
                        format!(
                            "server is at generation {at}, newer than this Nexus's {generation}, \
                             and the database could not be asked whether it has it: {e}"
                        ),
                    );
                }
            }
        }
        match classify(claim, wanted) {
            SyncState::Current => {
                (Success, AlreadyCurrent, Some(at), format!("already at generation {at}"))
            }
            SyncState::AheadOfWanted { .. } => (
                Success,
                NewerGeneration,
                Some(at),
                format!(
                    "server is at generation {at}, newer than this Nexus's {generation} \
                     (the database has it; asked {} to look again)",
                    DnsTaskName::config(group)
                ),
            ),
            SyncState::BeyondDatabase { database_latest } => (
                Error,
                ServerBeyondDatabase,
                Some(at),
                format!(
                    "server claims generation {at}, which the database does not have \
                     (latest is {database_latest}); it needs a repair, not a push"
                ),
            ),
            SyncState::Diverged => (
                Error,
                ServerDiverged,
                Some(at),
                format!(
                    "server has generation {at} with different content (digest {}, expected {})",
                    status.applied_config_digest.as_deref().unwrap_or("none"),
                    config.digest
                ),
            ),
            SyncState::Behind { .. } | SyncState::Empty => {
                match client.config_put().body((*config.config).clone()).send().await {
                    Ok(_) => (
                        Success,
                        Applied,
                        Some(generation),
                        format!("updated from generation {at} to {generation}"),
                    ),
                    Err(e) => (
                        Error,
                        Failed,
                        Some(at),
                        format!("pushing generation {generation}: {}", describe(e)),
                    ),
                }
            }
        }
    };
    let (result, outcome, server_generation, message): Outcome =
        tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| {
            (
                PropagationResult::Error,
                Failed,
                None,
                format!("no complete answer within {timeout:?} (server down or hung?)"),
            )
        });
    ServerResult {
        result,
        outcome,
        message,
        server_generation,
        completed_at: Utc::now(),
        history: ServerHistory::default(),
    }
}

/// A client error as an operator wants to read it: the server's own message
/// and error code when it sent one, else the transport error with its
/// causes, each said once.
fn describe(error: dns_server_client::Error<dns_server_client::types::Error>) -> String {
    match error {
        dns_server_client::Error::ErrorResponse(response) => format!(
            "HTTP {} {}: {}",
            response.status().as_u16(),
            response.error_code.as_deref().unwrap_or(""),
            response.message
        ),
        other => dns_types::error_chain(&other),
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

    /// A database whose internal group is at `generation`.
    async fn database_at(generation: u64) -> test_database::TestDatabase {
        let db = test_database::TestDatabase::new().await;
        let zones =
            [db_model::ZoneSpec { zone_name: "control-plane.internal".into(), ttl_seconds: 60 }];
        let change = |i: u64| dns_types::DnsChange {
            comment: format!("change {i}"),
            add: vec![dns_types::NameRecords {
                name: format!("n{i}"),
                records: vec![DnsRecord::A("192.0.2.1".parse().unwrap())],
            }],
            remove: vec![],
        };
        db.datastore
            .dns_group_initialize(DnsGroup::Internal, &zones, "t", &change(1))
            .await
            .unwrap();
        for i in 2..=generation {
            db.datastore.dns_change_commit(DnsGroup::Internal, "t", &change(i)).await.unwrap();
        }
        db
    }

    fn make_task(
        group: DnsGroup,
        config: Option<LoadedConfig>,
        servers: Option<Vec<SocketAddr>>,
        datastore: Datastore,
    ) -> (DnsPropagationTask, Activator) {
        let servers = servers.map(|servers| ServerList {
            servers: servers
                .into_iter()
                .map(|address| DnsServerEntry { address, target: format!("{address}") })
                .collect(),
            discovered_at: Utc::now(),
        });
        // The senders may go: the task reads the last value published.
        let (_config_tx, config_rx) = watch::channel(config);
        let (_servers_tx, servers_rx) = watch::channel(servers);
        let activator = Activator::new();
        let task = DnsPropagationTask::new(
            group,
            config_rx,
            servers_rx,
            Duration::from_secs(2),
            datastore,
            activator.clone(),
        );
        (task, activator)
    }

    fn done(report: PropagationReport) -> DnsPropagationStatus {
        match report {
            PropagationReport::Done(status) => status,
            other => panic!("expected a propagation, got {other:?}"),
        }
    }

    /// Each kind of per-server result: applied, already current, newer (the
    /// database has it), beyond the database, same generation with other
    /// content, and unreachable; and the history kept across activations.
    #[tokio::test]
    async fn every_outcome_is_reported_per_server() {
        let db = database_at(6).await;
        let (behind, _d1) = server().await;
        let (current, _d2) = server().await;
        let (newer, _d3) = server().await;
        let (beyond, _d4) = server().await;
        let (diverged, _d5) = server().await;
        current.apply(config(5, "192.0.2.5")).await.unwrap();
        newer.apply(config(6, "192.0.2.6")).await.unwrap();
        beyond.apply(config(9, "192.0.2.9")).await.unwrap();
        diverged.apply(config(5, "192.0.2.99")).await.unwrap();
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();

        let addresses = vec![
            behind.http_address(),
            current.http_address(),
            newer.http_address(),
            beyond.http_address(),
            diverged.http_address(),
            dead,
        ];
        let (mut task, _activator) = make_task(
            DnsGroup::Internal,
            Some(loaded(config(5, "192.0.2.5"))),
            Some(addresses),
            db.datastore.clone(),
        );
        let activation = Activation::new(1, ActivationReason::Timer);
        let status = done(task.activate(&activation).await.unwrap());

        let result = |address: SocketAddr| status.servers[&address.to_string()].clone();
        assert_eq!(result(behind.http_address()).outcome, PropagationOutcome::Applied);
        assert_eq!(behind.generation(), 5);
        assert_eq!(result(current.http_address()).outcome, PropagationOutcome::AlreadyCurrent);
        let newer_result = result(newer.http_address());
        assert_eq!(newer_result.outcome, PropagationOutcome::NewerGeneration);
        assert_eq!(newer_result.result, PropagationResult::Success);
        assert_eq!(newer_result.server_generation, Some(6));
        assert_eq!(newer.generation(), 6, "a newer server is never pushed back");
        let beyond_result = result(beyond.http_address());
        assert_eq!(beyond_result.outcome, PropagationOutcome::ServerBeyondDatabase);
        assert_eq!(beyond_result.result, PropagationResult::Error, "never a success");
        assert!(beyond_result.message.contains("latest is 6"), "{}", beyond_result.message);
        let diverged_result = result(diverged.http_address());
        assert_eq!(diverged_result.result, PropagationResult::Error);
        assert_eq!(diverged_result.outcome, PropagationOutcome::ServerDiverged);
        assert!(
            diverged_result.message.contains("different content"),
            "{}",
            diverged_result.message
        );
        let dead_result = result(dead);
        assert_eq!(dead_result.result, PropagationResult::Error);
        assert!(dead_result.message.contains("reading its status"), "{}", dead_result.message);
        assert!(
            !dead_result.message.contains("error sending request for url (http://127.0.0.1")
                || dead_result.message.matches("error sending request").count() == 1,
            "each cause said once: {}",
            dead_result.message
        );
        assert_eq!(status.generation, 5);
        assert!(status.servers.values().all(|r| r.completed_at <= status.all_done_at));

        // A second activation: the history carries across.
        let again = done(task.activate(&activation).await.unwrap());
        let dead_again = &again.servers[&dead.to_string()];
        assert_eq!(dead_again.history.consecutive_failures, 2);
        assert_eq!(dead_again.history.failing_since, Some(dead_result.completed_at));
        assert_eq!(dead_again.history.last_success_at, None);
        let behind_again = &again.servers[&behind.http_address().to_string()];
        assert_eq!(behind_again.outcome, PropagationOutcome::AlreadyCurrent);
        assert_eq!(behind_again.history.generation_applied, Some(5));
        assert_eq!(behind_again.history.consecutive_failures, 0);
        assert!(
            behind_again.history.last_success_at > Some(result(behind.http_address()).completed_at)
        );
    }

    #[tokio::test]
    async fn waiting_for_inputs_is_not_a_failure_but_no_servers_is() {
        let db = database_at(2).await;
        let (mut task, _) = make_task(DnsGroup::External, None, None, db.datastore.clone());
        let activation = Activation::new(1, ActivationReason::Timer);
        let PropagationReport::Waiting(waiting) = task.activate(&activation).await.unwrap() else {
            panic!("expected waiting");
        };
        assert_eq!(
            waiting.waiting_for,
            vec![DnsTaskName::config(DnsGroup::External), DnsTaskName::servers(DnsGroup::External)]
        );

        let (mut task, _) = make_task(
            DnsGroup::External,
            Some(loaded(config(2, "192.0.2.2"))),
            Some(vec![]),
            db.datastore.clone(),
        );
        let error = task.activate(&activation).await.unwrap_err().to_string();
        assert!(error.contains("no external DNS servers are registered"), "{error}");
        assert!(error.contains("generation 2 reached no server"), "{error}");
    }
}
