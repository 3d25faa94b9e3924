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
//! not, or if the server serves this generation with other content, the
//! server's state is wrong.  The database is the source of truth, so the
//! task repairs such a server at once (`PUT /config/repair`, which the
//! server applies only if it still serves exactly what was seen) and says
//! so loudly: outcome `repaired`, the replaced generation and digest in the
//! message and in the server's history, a warning in the log.  With
//! `repair_servers = false` it only reports the fault, as an error.  Per server, the task remembers across activations when it last
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
    PropagationProgress, PropagationReport, PropagationResult, ServerHistory, ServerRepair,
    ServerResult, ServersSource,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

/// How the task talks to servers.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Limit for the whole exchange with one server.
    pub timeout: Duration,
    /// Sent with every write.
    pub api_token: api_auth::ApiToken,
    /// Whether a server ahead of the database or diverged is repaired.
    pub repair: bool,
    /// Where propagation latency is recorded.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

pub struct DnsPropagationTask {
    group: DnsGroup,
    config: watch::Receiver<Option<LoadedConfig>>,
    servers: watch::Receiver<Option<ServerList>>,
    options: PushOptions,
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
        options: PushOptions,
        datastore: Datastore,
        config_activator: Activator,
    ) -> DnsPropagationTask {
        DnsPropagationTask {
            group,
            config,
            servers,
            options,
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
        let http = self
            .options
            .api_token
            .client_builder()
            .connect_timeout(self.options.timeout)
            .timeout(self.options.timeout * 2)
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
                if result.history.last_repair.is_some() {
                    history.last_repair = result.history.last_repair.clone();
                }
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
            let timeout = self.options.timeout;
            let datastore = self.datastore.clone();
            let repair = self.options.repair;
            pushes.push(async move {
                (server.address, push(group, client, config, timeout, datastore, repair).await)
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
            if matches!(result.outcome, PropagationOutcome::Applied | PropagationOutcome::Repaired)
            {
                self.options.metrics.propagated(group, config.config.time_created);
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

/// Brings one server to `config`'s generation, within `timeout`; repairs it
/// when its own state is wrong and `repair` allows.
async fn push(
    group: DnsGroup,
    client: dns_server_client::Client,
    config: LoadedConfig,
    timeout: Duration,
    datastore: Datastore,
    repair: bool,
) -> ServerResult {
    use PropagationOutcome::*;
    use PropagationResult::{Error, Success};
    let generation = config.config.generation;
    let mut repaired = None;
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
            // Newer than this Nexus: does the database have it?  (Asked
            // after the server, so a generation committed and pushed in
            // between is seen.)
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
        let server_digest = status.applied_config_digest.as_deref().unwrap_or("none");
        let fault = match classify(claim, wanted) {
            SyncState::Current => {
                return (Success, AlreadyCurrent, Some(at), format!("already at generation {at}"));
            }
            SyncState::AheadOfWanted { .. } => {
                return (
                    Success,
                    NewerGeneration,
                    Some(at),
                    format!(
                        "server is at generation {at}, newer than this Nexus's {generation} \
                         (the database has it; asked {} to look again)",
                        DnsTaskName::config(group)
                    ),
                );
            }
            SyncState::Behind { .. } | SyncState::Empty => {
                return match client.config_put().body((*config.config).clone()).send().await {
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
                };
            }
            SyncState::BeyondDatabase { database_latest } => (
                ServerBeyondDatabase,
                format!(
                    "server claims generation {at} (digest {server_digest}), which the database \
                     does not have (latest is {database_latest})"
                ),
            ),
            SyncState::Diverged => (
                ServerDiverged,
                format!(
                    "server has generation {at} with different content (digest {server_digest}, \
                     expected {})",
                    config.digest
                ),
            ),
        };
        let (outcome, reason) = fault;
        if !repair {
            return (Error, outcome, Some(at), format!("{reason}; it needs a repair, not a push"));
        }
        let request = dns_server_client::types::ConfigRepair {
            replaces: dns_server_client::types::ServedIdentity {
                generation: at,
                digest: status.applied_config_digest.clone(),
            },
            config: (*config.config).clone(),
            reason: reason.clone(),
        };
        match client.config_repair().body(request).send().await {
            Ok(record) => {
                let record = record.into_inner();
                repaired = Some(ServerRepair {
                    repaired_at: record.repaired_at,
                    replaced_generation: at,
                    replaced_digest: status.applied_config_digest.clone(),
                    generation,
                    reason: reason.clone(),
                });
                tracing::warn!(%group, %reason, generation, "REPAIRED a DNS server");
                (
                    Success,
                    Repaired,
                    Some(generation),
                    format!(
                        "REPAIRED: {reason}; replaced with the database's generation {generation}"
                    ),
                )
            }
            Err(e) => (
                Error,
                outcome,
                Some(at),
                format!("{reason}; repairing it failed: {}", describe(e)),
            ),
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
        history: ServerHistory { last_repair: repaired, ..ServerHistory::default() },
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
    use test_support::TokenDir;

    /// A server that requires the token in `tokens`.
    async fn server(tokens: &TokenDir) -> (dns_server::RunningServer, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = dns_server::Config::loopback(dir.path(), tokens.token_file());
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
        tokens: &TokenDir,
        repair: bool,
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
            PushOptions {
                timeout: Duration::from_secs(2),
                api_token: tokens.token.clone(),
                repair,
                metrics: Default::default(),
            },
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
        let tokens = TokenDir::new();
        let (behind, _d1) = server(&tokens).await;
        let (current, _d2) = server(&tokens).await;
        let (newer, _d3) = server(&tokens).await;
        let (beyond, _d4) = server(&tokens).await;
        let (diverged, _d5) = server(&tokens).await;
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
            &tokens,
            false,
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

    /// With repair on (the default), a server beyond the database and one
    /// diverged from it are put back to the database's generation, and the
    /// result says what they served before.
    #[tokio::test]
    async fn servers_ahead_or_diverged_are_repaired_with_evidence() {
        let db = database_at(6).await;
        let tokens = TokenDir::new();
        let (beyond, _d1) = server(&tokens).await;
        let (diverged, _d2) = server(&tokens).await;
        beyond.apply(config(9, "192.0.2.9")).await.unwrap();
        diverged.apply(config(5, "192.0.2.99")).await.unwrap();
        let wrong_digest = dns_types::config_digest(&config(9, "192.0.2.9"));
        let (mut task, _) = make_task(
            DnsGroup::Internal,
            Some(loaded(config(5, "192.0.2.5"))),
            Some(vec![beyond.http_address(), diverged.http_address()]),
            db.datastore.clone(),
            &tokens,
            true,
        );
        let activation = Activation::new(1, ActivationReason::Timer);
        let status = done(task.activate(&activation).await.unwrap());
        let beyond_result = &status.servers[&beyond.http_address().to_string()];
        assert_eq!(beyond_result.outcome, PropagationOutcome::Repaired, "{beyond_result:?}");
        assert_eq!(beyond_result.result, PropagationResult::Success);
        assert!(beyond_result.message.starts_with("REPAIRED: server claims generation 9"));
        let repair = beyond_result.history.last_repair.as_ref().unwrap();
        assert_eq!((repair.replaced_generation, repair.generation), (9, 5));
        assert_eq!(repair.replaced_digest.as_deref(), Some(wrong_digest.as_str()));
        assert_eq!(beyond.generation(), 5, "back at the database's generation");
        let diverged_result = &status.servers[&diverged.http_address().to_string()];
        assert_eq!(diverged_result.outcome, PropagationOutcome::Repaired, "{diverged_result:?}");
        assert!(diverged_result.message.contains("different content"));

        // The next activation finds both current, and remembers the repair.
        let again = done(task.activate(&activation).await.unwrap());
        let beyond_again = &again.servers[&beyond.http_address().to_string()];
        assert_eq!(beyond_again.outcome, PropagationOutcome::AlreadyCurrent);
        assert_eq!(beyond_again.history.last_repair.as_ref(), Some(repair));
    }

    #[tokio::test]
    async fn waiting_for_inputs_is_not_a_failure_but_no_servers_is() {
        let db = database_at(2).await;
        let tokens = TokenDir::new();
        let (mut task, _) =
            make_task(DnsGroup::External, None, None, db.datastore.clone(), &tokens, true);
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
            &tokens,
            false,
        );
        let error = task.activate(&activation).await.unwrap_err().to_string();
        assert!(error.contains("no external DNS servers are registered"), "{error}");
        assert!(error.contains("generation 2 reached no server"), "{error}");
    }
}
