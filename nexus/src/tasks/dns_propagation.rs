//! `dns_propagation_<group>`: pushes the latest config (from
//! `dns_config_<group>`) to every server of the latest list (from
//! `dns_servers_<group>`).
//!
//! All servers are handled at once, each push a task of its own under its
//! own time limit, and a dead or hung server delays neither the others nor
//! the next change: once the other servers have answered, the activation
//! waits for the rest only `detach_after` past the last answer (100 ms by
//! default), and for a server already known unreachable (its last attempt
//! found no answer) only a moment ([`DETACHED_GRACE`]), and for one whose
//! last attempt waited out its time limit not past the others' last answer;
//! then it reports
//! them as still in flight and their pushes run on in the background, their
//! results remembered and recorded when they end.  No second push to a
//! server starts while one runs.  For each
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
use dns_types::{ConfigDiff, DnsConfig};
use futures::StreamExt;
use nexus_types::propagation_history::PushAttempt;
use nexus_types::task_name::DnsTaskName;
use nexus_types::task_status::{
    ConfigSource, DnsPropagationStatus, DnsPropagationWaiting, PropagationOutcome,
    PropagationProgress, PropagationReport, PropagationResult, PushKind, PushRecord, ServerHistory,
    ServerRepair, ServerResult, ServersSource,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How the task talks to servers.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Limit for the whole exchange with one server.
    pub timeout: Duration,
    /// Sent with every write.
    pub api_token: api_auth::ApiToken,
    /// Who this Nexus is, said with every write (servers keep it).
    pub writer: String,
    /// Whether a server ahead of the database or diverged is repaired.
    pub repair: bool,
    /// Where propagation latency is recorded.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// How long an activation waits, past the last server's answer, for
    /// the servers that have not answered before it lets their pushes run
    /// on in the background.
    pub detach_after: Duration,
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
    /// Servers whose last completed attempt found no answer at all.
    unreachable: HashMap<SocketAddr, NoAnswer>,
    /// What each server served when this Nexus last heard from it (its
    /// own push, or the server's answer): the base the next difference
    /// can be sent from without asking first.
    served: HashMap<SocketAddr, ServedState>,
    /// Pushes to such servers still running past the activation that
    /// began them.
    in_flight: HashMap<SocketAddr, InFlight>,
    /// Where every push attempt is recorded, if anywhere.
    history: Option<crate::history::PropagationHistory>,
    /// This task's own activator: a push let run on activates the task when
    /// it ends, so its result is taken in (and a failure tried again) at
    /// once rather than at the next period.
    own_activator: Option<Activator>,
}

/// How long an activation waits for a push to a server known unreachable
/// before it reports the push as still in flight and goes on.
pub const DETACHED_GRACE: Duration = Duration::from_millis(50);

/// How often, at most, an activation publishes its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(25);

/// A push left running by an activation.
struct InFlight {
    generation: u64,
    started_at: chrono::DateTime<Utc>,
    handle: tokio::task::JoinHandle<ServerResult>,
    /// Why the activation stopped waiting for it.
    why: Detached,
    /// Whether an activation still waits for it.
    waiter: std::sync::Arc<std::sync::Mutex<Waiter>>,
}

/// Who takes in a push's result: the activation that began it, or (once
/// that has let it run on) the next one, which its end asks for.  Decided
/// under one lock, so a push that ends just as it is let go is neither
/// lost nor taken in twice.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiter {
    Activation,
    LetGo,
    Ended,
}

impl InFlight {
    /// The activation stops waiting: `Err(self)` to run on, or the result
    /// if the push has just ended.
    async fn let_go(mut self) -> Result<ServerResult, InFlight> {
        let ended = {
            let mut waiter = self.waiter.lock().unwrap_or_else(|e| e.into_inner());
            if *waiter == Waiter::Ended {
                true
            } else {
                *waiter = Waiter::LetGo;
                false
            }
        };
        if ended { Ok(joined((&mut self.handle).await, self.started_at)) } else { Err(self) }
    }
}

/// An attempt that found no answer at all: when it ended, what it met, and
/// whether it waited out its time limit (a hung server or a silent path)
/// rather than failing at once (a refused connection: a server that comes
/// back answers its next push at once, so that push is worth waiting for).
#[derive(Clone)]
struct NoAnswer {
    at: chrono::DateTime<Utc>,
    message: String,
    waited_out: bool,
}

impl NoAnswer {
    fn of(result: &ServerResult, timeout: Duration) -> Option<NoAnswer> {
        let took = result.started_at.map(|s| result.completed_at - s).unwrap_or_default();
        result.unreachable.then(|| NoAnswer {
            at: result.completed_at,
            message: result.message.clone(),
            waited_out: took.to_std().unwrap_or_default() >= timeout / 2,
        })
    }
}

/// Why an activation let a push run on without it.
#[derive(Clone)]
enum Detached {
    /// The server's last attempt found no answer at all.
    KnownUnreachable(NoAnswer),
    /// The other servers had answered and this one had not within this
    /// long of the last of them.
    Straggler(Duration),
}

/// What one server's part of an activation came to: a result, or a push
/// still in flight; with, maybe, the result of an earlier push of another
/// generation that ended since.
struct Step {
    address: SocketAddr,
    now: Result<ServerResult, InFlight>,
    earlier: Option<(u64, ServerResult)>,
}

/// A push's result once its task has ended.
fn joined(
    joined: Result<ServerResult, tokio::task::JoinError>,
    started_at: chrono::DateTime<Utc>,
) -> ServerResult {
    joined.unwrap_or_else(|e| ServerResult {
        result: PropagationResult::Error,
        outcome: PropagationOutcome::Failed,
        message: format!("the push task ended without a result: {e}"),
        unreachable: false,
        server_generation: None,
        started_at: Some(started_at),
        completed_at: Utc::now(),
        push: None,
        history: ServerHistory::default(),
    })
}

/// Waits for `push`'s result until the activation stops waiting for the
/// servers that have not answered (`cut` turns true), and at most `grace`
/// if given (a server known unreachable: [`DETACHED_GRACE`], so that it
/// never holds an activation longer than the servers that answer).
async fn until_cut(
    mut push: InFlight,
    mut cut: watch::Receiver<bool>,
    grace: Option<Duration>,
) -> Result<ServerResult, InFlight> {
    let cut = async move {
        // A dropped sender also means nobody waits any more.
        let _ = cut.wait_for(|cut| *cut).await;
    };
    let grace = async move {
        match grace {
            Some(grace) => tokio::time::sleep(grace).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        result = &mut push.handle => return Ok(joined(result, push.started_at)),
        () = cut => {}
        () = grace => {}
    }
    push.let_go().await
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
            unreachable: HashMap::new(),
            served: HashMap::new(),
            in_flight: HashMap::new(),
            history: None,
            own_activator: None,
        }
    }

    /// Lets a push that ran on past its activation activate this task when
    /// it ends (`own` must be the task's activator).
    pub fn with_own_activator(mut self, own: Activator) -> Self {
        self.own_activator = Some(own);
        self
    }

    /// Records every push attempt in `history`.
    pub fn with_history(mut self, history: crate::history::PropagationHistory) -> Self {
        self.history = Some(history);
        self
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
            .client_builder_as(&self.options.writer)
            // Let go of an idle connection before the server does (it
            // closes them after 30 s by default): a push never starts on a
            // connection the server has just closed.
            .pool_idle_timeout(Duration::from_secs(10))
            .connect_timeout(self.options.timeout)
            .timeout(self.options.timeout * 2)
            .build()
            .map_err(|e| anyhow!("building an HTTP client: {e}"))?;
        let client = dns_server_client::Client::new_with_client(&format!("http://{address}"), http);
        self.clients.insert(address, client.clone());
        Ok(client)
    }

    /// The result reported for a server whose push is still running.
    fn still_in_flight(&self, address: SocketAddr, running: &InFlight) -> ServerResult {
        let why = match &running.why {
            Detached::KnownUnreachable(last) => format!(
                "its last attempt, which ended at {}, found no answer: {}",
                last.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                last.message
            ),
            Detached::Straggler(after) => format!(
                "the other servers had answered and it had not within {after:?} of the last of \
                 them"
            ),
        };
        ServerResult {
            result: PropagationResult::Error,
            outcome: PropagationOutcome::InFlight,
            message: format!(
                "no answer yet to the push of generation {} begun at {} ({why}; so that push \
                 runs on in the background, and no other starts meanwhile)",
                running.generation,
                running.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            unreachable: true,
            server_generation: None,
            started_at: Some(running.started_at),
            completed_at: Utc::now(),
            push: None,
            history: self.histories.get(&address).cloned().unwrap_or_default(),
        }
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
                if result.push.is_some() {
                    history.last_push = result.push.clone();
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
                config.generation()
            ));
        }
        // Forget servers that left the list (and stop pushing to them).
        let listed = |address: &SocketAddr| servers.servers.iter().any(|s| s.address == *address);
        self.clients.retain(|address, _| listed(address));
        self.histories.retain(|address, _| listed(address));
        self.unreachable.retain(|address, _| listed(address));
        self.served.retain(|address, _| listed(address));
        self.in_flight.retain(|address, push| {
            if !listed(address) {
                push.handle.abort();
            }
            listed(address)
        });

        let generation = config.generation();
        let mut pushes = futures::stream::FuturesUnordered::new();
        // Turns true when the activation stops waiting for the servers that
        // have not answered.
        let (cut, cut_rx) = watch::channel(false);
        let detach_after = self.options.detach_after;
        // The whole config is built (and sized) at most once per activation,
        // only if some server needs it.
        let full = FullConfig::default();
        // Servers whose last attempt waited out its time limit, or with a
        // push still running: once every other server has answered,
        // nothing waits for these.
        let mut slow = std::collections::BTreeSet::new();
        for server in &servers.servers {
            let address = server.address;
            let client = self.client(address)?;
            let config = config.clone();
            let full = full.clone();
            let timeout = self.options.timeout;
            let datastore = self.datastore.clone();
            let repair = self.options.repair;
            let own = self.own_activator.clone();
            let known = self.served.get(&address).cloned();
            let new_push = move |why| {
                let waiter = std::sync::Arc::new(std::sync::Mutex::new(Waiter::Activation));
                let waiting = waiter.clone();
                let handle = tokio::spawn(async move {
                    let job =
                        PushJob { group, client, config, full, timeout, datastore, repair, known };
                    let result = push(job).await;
                    let mut waiter = waiting.lock().unwrap_or_else(|e| e.into_inner());
                    if *waiter == Waiter::LetGo
                        && let Some(own) = own
                    {
                        own.activate(format!(
                            "the push of generation {generation} to {address}, left running by \
                             an earlier activation, ended ({})",
                            result.outcome
                        ));
                    }
                    *waiter = Waiter::Ended;
                    result
                });
                InFlight { generation, started_at: Utc::now(), handle, why, waiter }
            };
            let running = self.in_flight.remove(&address);
            let known_unreachable = self.unreachable.get(&address).cloned();
            if running.is_some() || known_unreachable.as_ref().is_some_and(|n| n.waited_out) {
                slow.insert(address);
            }
            let cut_rx = cut_rx.clone();
            pushes.push(async move {
                // A push still running from an earlier activation: its
                // result, if it comes now; no second push meanwhile.
                let mut earlier = None;
                if let Some(running) = running {
                    // One that ended before this activation began is an
                    // earlier attempt (a failure is tried again now); one
                    // that ends within the grace is this activation's, if
                    // it carries this generation.
                    let of = running.generation;
                    let ended = running.handle.is_finished();
                    match until_cut(running, cut_rx.clone(), Some(DETACHED_GRACE)).await {
                        Ok(result) if ended || of != generation => earlier = Some((of, result)),
                        now => return Step { address, now, earlier: None },
                    }
                }
                let unreachable = match &earlier {
                    Some((_, result)) => NoAnswer::of(result, timeout),
                    None => known_unreachable,
                };
                let now = if let Some(last) = unreachable {
                    until_cut(
                        new_push(Detached::KnownUnreachable(last)),
                        cut_rx,
                        Some(DETACHED_GRACE),
                    )
                    .await
                } else {
                    until_cut(new_push(Detached::Straggler(detach_after)), cut_rx, None).await
                };
                Step { address, now, earlier }
            });
        }
        let mut progress = PropagationProgress {
            generation,
            pending: servers.servers.iter().map(|s| s.address.to_string()).collect(),
            done: BTreeMap::new(),
        };
        activation.report_progress(&progress);
        let mut pending: std::collections::BTreeSet<SocketAddr> =
            servers.servers.iter().map(|s| s.address).collect();
        let mut results: BTreeMap<String, ServerResult> = BTreeMap::new();
        // Attempts of earlier generations that finished during this one.
        let mut earlier_attempts: BTreeMap<u64, Vec<(SocketAddr, ServerResult)>> = BTreeMap::new();
        // When to stop waiting for the servers that have not answered:
        // `detach_after` past the last answer (none yet: not before the
        // pushes' own time limit).
        let mut cut_at: Option<tokio::time::Instant> = None;
        // Progress is published at most every PROGRESS_EVERY (each report
        // serializes every result so far: per server, that would cost the
        // square of the fleet), and always within it of the last change.
        let mut reported_at = tokio::time::Instant::now();
        let mut unreported = false;
        loop {
            let never = tokio::time::Instant::now() + self.options.timeout * 4;
            let step = tokio::select! {
                biased;
                step = pushes.next() => match step {
                    Some(step) => step,
                    None => break,
                },
                _ = tokio::time::sleep_until(cut_at.unwrap_or(never)), if cut_at.is_some() => {
                    cut.send_replace(true);
                    cut_at = None;
                    continue;
                }
                _ = tokio::time::sleep_until(reported_at + PROGRESS_EVERY), if unreported => {
                    activation.report_progress(&progress);
                    (reported_at, unreported) = (tokio::time::Instant::now(), false);
                    continue;
                }
            };
            let Step { address, now, earlier } = step;
            if now.is_ok() && !*cut.borrow() {
                cut_at = Some(tokio::time::Instant::now() + detach_after);
            }
            // What ended first is taken in first.
            if let Some((earlier_generation, mut earlier)) = earlier {
                self.remember(address, &mut earlier);
                earlier_attempts.entry(earlier_generation).or_default().push((address, earlier));
            }
            let mut result = match now {
                Ok(result) => {
                    match NoAnswer::of(&result, self.options.timeout) {
                        Some(last) => self.unreachable.insert(address, last),
                        None => self.unreachable.remove(&address),
                    };
                    // Serving this generation with this content, by its
                    // own account or by this push; anything else: ask
                    // first next time.
                    if result.result == PropagationResult::Success
                        && result.server_generation == Some(generation)
                    {
                        let digest = Some(config.digest.clone());
                        self.served.insert(address, ServedState { generation, digest });
                    } else {
                        self.served.remove(&address);
                    }
                    result
                }
                Err(running) => {
                    let result = self.still_in_flight(address, &running);
                    self.in_flight.insert(address, running);
                    result
                }
            };
            if result.outcome != PropagationOutcome::InFlight {
                self.remember(address, &mut result);
            }
            if result.result == PropagationResult::Error {
                tracing::warn!(%group, server = %address, message = ?result.message, "DNS propagation failed");
            }
            if matches!(result.outcome, PropagationOutcome::Applied | PropagationOutcome::Repaired)
            {
                self.options.metrics.propagated(group, config.version.time_created);
            }
            if result.outcome == PropagationOutcome::NewerGeneration {
                self.config_activator.activate(format!(
                    "DNS server {address} serves generation {}, newer than this Nexus's {generation}",
                    result.server_generation.unwrap_or_default()
                ));
            }
            progress.pending.retain(|p| *p != address.to_string());
            pending.remove(&address);
            if !slow.contains(&address) && pending.is_subset(&slow) {
                cut.send_replace(true);
                cut_at = None;
            }
            progress.done.insert(address.to_string(), result.clone());
            unreported = true;
            if reported_at.elapsed() >= PROGRESS_EVERY {
                activation.report_progress(&progress);
                (reported_at, unreported) = (tokio::time::Instant::now(), false);
            }
            results.insert(address.to_string(), result);
        }
        if let Some(history) = &self.history {
            for (earlier_generation, attempts) in earlier_attempts {
                let attempts =
                    attempts.iter().map(|(server, r)| attempt(&server.to_string(), r)).collect();
                history.pushes(group, earlier_generation, attempts).await;
            }
        }
        if let Some(history) = &self.history {
            // A push still in flight is recorded when it ends.
            let attempts = results
                .iter()
                .filter(|(_, r)| r.outcome != PropagationOutcome::InFlight)
                .map(|(server, r)| attempt(server, r))
                .collect();
            history.pushes(group, generation, attempts).await;
        }
        let all_done_at = results.values().map(|r| r.completed_at).max().unwrap_or_else(Utc::now);
        Ok(PropagationReport::Done(DnsPropagationStatus {
            group,
            generation,
            config_source: ConfigSource {
                task: DnsTaskName::config(group),
                creator: config.version.creator.clone(),
                comment: config.version.comment.clone(),
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

/// One attempt as the propagation history records it.
fn attempt(server: &str, r: &ServerResult) -> PushAttempt {
    PushAttempt {
        server: server.to_string(),
        started_at: r.started_at.unwrap_or(r.completed_at),
        ended_at: r.completed_at,
        result: r.result,
        outcome: r.outcome,
        sent: r.push.as_ref().map(|p| p.kind),
        server_generation: r.server_generation,
        message: r.message.clone(),
    }
}

/// What to do with one server, decided from what it reported and what the
/// database holds: no I/O, so every case is a row of a table test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// It serves this generation with this content: nothing to do.
    AlreadyCurrent { at: u64 },
    /// It serves a newer generation the database has (another Nexus got
    /// there first): this Nexus is behind and asks its config task to look
    /// again.
    NewerGeneration { at: u64 },
    /// It is behind (or empty): bring it forward.
    Deliver { at: u64 },
    /// Its own state is wrong (beyond the database, or other content):
    /// replace it with the database's, if it still serves exactly this.
    Repair { at: u64, outcome: PropagationOutcome, reason: String },
    /// Its own state is wrong and repairs are off: report it, as an error.
    Report { at: u64, outcome: PropagationOutcome, reason: String },
}

/// The plan for a server in `state` (from `classify`) that reported `at`
/// with `server_digest`, given the digest being pushed and whether repairs
/// are allowed.
pub fn plan(
    state: &SyncState,
    at: u64,
    server_digest: Option<&str>,
    digest: &str,
    repair: bool,
) -> Plan {
    let server_digest = server_digest.unwrap_or("none");
    let (outcome, reason) = match state {
        SyncState::Current => return Plan::AlreadyCurrent { at },
        SyncState::AheadOfWanted { .. } => return Plan::NewerGeneration { at },
        SyncState::Behind { .. } | SyncState::Empty => return Plan::Deliver { at },
        SyncState::BeyondDatabase { database_latest } => (
            PropagationOutcome::ServerBeyondDatabase,
            format!(
                "server claims generation {at} (digest {server_digest}), which the database \
                 does not have (latest is {database_latest})"
            ),
        ),
        SyncState::Diverged => (
            PropagationOutcome::ServerDiverged,
            format!(
                "server has generation {at} with different content (digest {server_digest}, \
                 expected {digest})"
            ),
        ),
    };
    if repair { Plan::Repair { at, outcome, reason } } else { Plan::Report { at, outcome, reason } }
}

/// One server's push: everything [`push`] needs.
struct PushJob {
    group: DnsGroup,
    client: dns_server_client::Client,
    config: LoadedConfig,
    full: FullConfig,
    timeout: Duration,
    datastore: Datastore,
    repair: bool,
    /// What this Nexus last saw the server serve (its own successful
    /// push, or the server's answer), if anything.
    known: Option<ServedState>,
}

/// Brings one server to `config`'s generation, within `timeout`; repairs it
/// when its own state is wrong and `repair` allows.  Asks, plans
/// ([`plan`]), then carries the plan out.  When this Nexus last saw the
/// server serve exactly the base of the difference at hand (the common
/// case: one change after another), it sends the difference at once, one
/// exchange instead of two: the server applies it only if it still serves
/// exactly that base, and says whether it was already there; if not, the
/// push asks and plans as ever.
async fn push(job: PushJob) -> ServerResult {
    use PropagationOutcome::*;
    use PropagationResult::{Error, Success};
    let PushJob { group, client, config, full, timeout, datastore, repair, known } = job;
    let started_at = Utc::now();
    let generation = config.generation();
    let mut repaired = None;
    let mut pushed = None;
    // Whether the server could not be reached at all (explain tells that
    // from a server that answered with an error).
    let unreachable = std::sync::atomic::AtomicBool::new(false);
    let work = async {
        if let (Some(known), Some(diff)) = (&known, &config.diff_from_previous)
            && known.generation == diff.from_generation
            && known.digest.as_deref() == Some(diff.from_digest.as_str())
        {
            let (sent, record) = send_difference(&client, diff, generation).await;
            if let Ok(outcome) = sent {
                return delivered(outcome, diff.from_generation, record, &mut pushed);
            }
            // Refused (no longer at that base: another writer, a restart),
            // or not delivered at all: ask what it serves, and say what
            // that meets.
        }
        // Asked again when the server moved on (another Nexus's push) while
        // a difference from what it served was on its way.
        let mut asks_left = BASE_MOVED_ASKS;
        loop {
            let status = match client.status_get().send().await {
                Ok(status) => status.into_inner(),
                Err(e) => {
                    if matches!(e, dns_server_client::Error::CommunicationError(_)) {
                        unreachable.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
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
            let claim =
                ServerClaim { generation: at, digest: status.applied_config_digest.as_deref() };
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
            let state = classify(claim, wanted);
            let plan = plan(&state, at, claim.digest, &config.digest, repair);
            asks_left -= 1;
            break match plan {
                Plan::AlreadyCurrent { at } => {
                    (Success, AlreadyCurrent, Some(at), format!("already at generation {at}"))
                }
                Plan::NewerGeneration { at } => (
                    Success,
                    NewerGeneration,
                    Some(at),
                    format!(
                        "server is at generation {at}, newer than this Nexus's {generation} \
                     (the database has it; asked {} to look again)",
                        DnsTaskName::config(group)
                    ),
                ),
                Plan::Deliver { at } => {
                    let from = ServedState { generation: at, digest: status.applied_config_digest };
                    let ask_again = asks_left > 0;
                    match deliver(
                        group,
                        &client,
                        &config,
                        &full,
                        from,
                        &datastore,
                        &mut pushed,
                        ask_again,
                    )
                    .await
                    {
                        Delivery::Done(outcome) => outcome,
                        Delivery::BaseMoved => continue,
                    }
                }
                Plan::Report { at, outcome, reason } => {
                    (Error, outcome, Some(at), format!("{reason}; it needs a repair, not a push"))
                }
                Plan::Repair { at, outcome, reason } => {
                    let request = dns_server_client::types::ConfigRepair {
                        replaces: dns_server_client::types::ServedIdentity {
                            generation: at,
                            digest: status.applied_config_digest.clone(),
                        },
                        config: full.get(&config).0.clone(),
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
                            tracing::warn!(%group, ?reason, generation, "REPAIRED a DNS server");
                            (
                                Success,
                                Repaired,
                                Some(generation),
                                format!(
                                    "REPAIRED: {reason}; replaced with the database's generation \
                                 {generation}"
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
                }
            };
        }
    };
    let (result, outcome, server_generation, message): Outcome =
        tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| {
            unreachable.store(true, std::sync::atomic::Ordering::Relaxed);
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
        unreachable: result == PropagationResult::Error
            && unreachable.load(std::sync::atomic::Ordering::Relaxed),
        server_generation,
        started_at: Some(started_at),
        completed_at: Utc::now(),
        push: pushed,
        history: ServerHistory { last_repair: repaired, ..ServerHistory::default() },
    }
}

/// The whole config and its size as JSON, built on first use and shared by
/// the pushes of one activation.
#[derive(Clone, Default)]
struct FullConfig(std::sync::Arc<std::sync::OnceLock<std::sync::Arc<(DnsConfig, u64)>>>);

impl FullConfig {
    fn get(&self, config: &LoadedConfig) -> std::sync::Arc<(DnsConfig, u64)> {
        self.0
            .get_or_init(|| {
                let whole = config.config();
                let bytes = serde_json::to_vec(&whole).map(|b| b.len() as u64).unwrap_or_default();
                std::sync::Arc::new((whole, bytes))
            })
            .clone()
    }
}

/// What a server said it serves.
#[derive(Clone)]
struct ServedState {
    generation: u64,
    digest: Option<String>,
}

/// How many times a push asks a server what it serves and plans from it:
/// again when a difference from what it said was refused because it had
/// moved on meanwhile (another Nexus pushed), rather than sending the
/// whole config at once.  Measured at a million names: one such refusal
/// sent ~100 MB that the server decoded only to refuse as older.
const BASE_MOVED_ASKS: u32 = 3;

/// What a delivery came to.
enum Delivery {
    Done(Outcome),
    /// The server refused the difference: it no longer serves its base.
    /// Ask it again.
    BaseMoved,
}

/// Past this many generations behind, a server gets the whole config
/// without a difference being read (the database would read every row
/// changed in between).
const MAX_DIFFERENCE_GAP: u64 = 10_000;

/// Brings a server that is behind to `config`'s generation: by a
/// difference from what it serves when there is one and it is smaller
/// than half the config, else (or when the server refuses it) by the
/// whole config.  When the server refuses the difference because it no
/// longer serves its base and `ask_again`, nothing more is sent: the
/// caller asks it what it serves now.  Records what was sent in `pushed`.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    group: DnsGroup,
    client: &dns_server_client::Client,
    config: &LoadedConfig,
    full: &FullConfig,
    from: ServedState,
    datastore: &Datastore,
    pushed: &mut Option<PushRecord>,
    ask_again: bool,
) -> Delivery {
    use PropagationOutcome::Failed;
    use PropagationResult::Error;
    let generation = config.generation();
    let at = from.generation;
    let why_full = match difference_for(group, config, &from, datastore).await {
        Ok(None) => None,
        Err(reason) => Some(reason),
        Ok(Some(diff)) => {
            let (sent, record) = send_difference(client, &diff, generation).await;
            match sent {
                Ok(outcome) => return Delivery::Done(delivered(outcome, at, record, pushed)),
                Err(dns_server_client::Error::ErrorResponse(response))
                    if ask_again
                        && response.error_code.as_deref()
                            == Some(dns_server_api::error_codes::DIFF_BASE_MISMATCH) =>
                {
                    *pushed = Some(record);
                    return Delivery::BaseMoved;
                }
                // The server said no: not at the base it claimed, the result
                // would not have the digest, or it could not store the
                // difference (a broken journal takes a whole config to
                // start over).  The whole config it is.
                Err(dns_server_client::Error::ErrorResponse(response)) => Some(format!(
                    "the server refused the difference {at} → {generation} (HTTP {} {}: {})",
                    response.status().as_u16(),
                    response.error_code.as_deref().unwrap_or(""),
                    response.message
                )),
                Err(e) => {
                    *pushed = Some(record);
                    return Delivery::Done((
                        Error,
                        Failed,
                        Some(at),
                        format!(
                            "pushing generation {generation} (as the difference {at} → \
                             {generation}): {}",
                            describe(e)
                        ),
                    ));
                }
            }
        }
    };
    let whole = full.get(config);
    let started = Instant::now();
    let sent = client.config_put().body(whole.0.clone()).send().await;
    let record = PushRecord {
        kind: PushKind::Full,
        from_generation: None,
        generation,
        names: config.name_count(),
        bytes: whole.1,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        why_full,
    };
    Delivery::Done(match sent {
        // `PUT /config` answers 204 whether it applied the config or found
        // it there already (the contract): applied, as far as can be told.
        Ok(_) => {
            let outcome = dns_server_client::types::WriteResult {
                outcome: dns_server_client::types::WriteOutcome::Applied,
                generation,
            };
            delivered(outcome, at, record, pushed)
        }
        Err(e) => {
            *pushed = Some(record);
            (Error, Failed, Some(at), format!("pushing generation {generation}: {}", describe(e)))
        }
    })
}

/// Sends `diff` to the server: what it answered, and the record of what
/// was sent.
async fn send_difference(
    client: &dns_server_client::Client,
    diff: &ConfigDiff,
    generation: u64,
) -> (
    Result<
        dns_server_client::types::WriteResult,
        dns_server_client::Error<dns_server_client::types::Error>,
    >,
    PushRecord,
) {
    let bytes = serde_json::to_vec(diff).map(|b| b.len() as u64).unwrap_or_default();
    let started = Instant::now();
    let sent = client.config_diff_put().body(diff.clone()).send().await;
    let record = PushRecord {
        kind: PushKind::Difference,
        from_generation: Some(diff.from_generation),
        generation,
        names: diff.name_count() as u64,
        bytes,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        why_full: None,
    };
    (sent.map(|r| r.into_inner()), record)
}

/// A write the server accepted: applied by it (recorded as this push), or
/// found already there (another writer got there first; nothing applied).
fn delivered(
    outcome: dns_server_client::types::WriteResult,
    at: u64,
    record: PushRecord,
    pushed: &mut Option<PushRecord>,
) -> Outcome {
    use dns_server_client::types::WriteOutcome;
    let generation = outcome.generation;
    match outcome.outcome {
        WriteOutcome::Applied => {
            let message = format!("updated from generation {at} to {generation}: {record}");
            *pushed = Some(record);
            (PropagationResult::Success, PropagationOutcome::Applied, Some(generation), message)
        }
        WriteOutcome::AlreadyApplied => (
            PropagationResult::Success,
            PropagationOutcome::AlreadyCurrent,
            Some(generation),
            format!(
                "already at generation {generation} when this Nexus's {} arrived (another \
                 writer got there first)",
                match record.kind {
                    PushKind::Difference => "difference",
                    PushKind::Full => "whole config",
                }
            ),
        ),
    }
}

/// The difference that leads a server serving `from` to `config`:
/// `Ok(None)` when there is nothing to lead from (no config), `Err` with
/// the reason when the whole config should go instead.
async fn difference_for(
    group: DnsGroup,
    config: &LoadedConfig,
    from: &ServedState,
    datastore: &Datastore,
) -> Result<Option<std::sync::Arc<ConfigDiff>>, String> {
    let (at, generation) = (from.generation, config.generation());
    let Some(digest) = from.digest.clone().filter(|_| at > 0) else {
        return Ok(None);
    };
    // The common case: one generation behind, the difference at hand.
    if let Some(diff) = &config.diff_from_previous
        && diff.from_generation == at
        && diff.from_digest == digest
    {
        return Ok(Some(diff.clone()));
    }
    if generation - at > MAX_DIFFERENCE_GAP {
        return Err(format!("{} generations behind", generation - at));
    }
    let diff = datastore.dns_diff(group, at, generation).await.map_err(|e| {
        format!(
            "reading the difference {at} → {generation} from the database failed: {}",
            dns_types::error_chain(&e)
        )
    })?;
    let names: u64 = diff.zones.iter().map(|z| z.names.len() as u64).sum();
    if !dns_types::difference_is_worthwhile(names, config.name_count()) {
        return Err(format!(
            "{names} of {} names changed since generation {at}; the whole config is cheaper",
            config.name_count()
        ));
    }
    // The server checks that it serves exactly this base, and that the
    // result has the digest of `config`.
    Ok(Some(std::sync::Arc::new(ConfigDiff::from_dns_diff(
        &diff,
        digest,
        config.digest.clone(),
        config.version.time_created,
        config.version.creator.clone(),
        config.version.comment.clone(),
    ))))
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

    /// Every state a server can be in, and what propagation does about it.
    #[test]
    fn the_plan_for_each_state() {
        let plan_for = |state: SyncState, at: u64, digest: Option<&str>, repair: bool| {
            plan(&state, at, digest, "d5", repair)
        };
        assert_eq!(
            plan_for(SyncState::Current, 5, Some("d5"), true),
            Plan::AlreadyCurrent { at: 5 }
        );
        assert_eq!(
            plan_for(SyncState::AheadOfWanted { by: 2 }, 7, Some("d7"), true),
            Plan::NewerGeneration { at: 7 }
        );
        assert_eq!(
            plan_for(SyncState::Behind { by: 2 }, 3, Some("d3"), true),
            Plan::Deliver { at: 3 }
        );
        assert_eq!(plan_for(SyncState::Empty, 0, None, false), Plan::Deliver { at: 0 });
        let Plan::Repair { outcome, reason, .. } =
            plan_for(SyncState::BeyondDatabase { database_latest: 5 }, 99, Some("d99"), true)
        else {
            panic!("a server beyond the database is repaired")
        };
        assert_eq!(outcome, PropagationOutcome::ServerBeyondDatabase);
        assert!(
            reason.contains("claims generation 99 (digest d99)") && reason.contains("latest is 5"),
            "{reason}"
        );
        let Plan::Report { outcome, reason, .. } =
            plan_for(SyncState::Diverged, 5, Some("x"), false)
        else {
            panic!("with repairs off a diverged server is reported")
        };
        assert_eq!(outcome, PropagationOutcome::ServerDiverged);
        assert!(reason.contains("digest x, expected d5"), "{reason}");
        assert!(matches!(
            plan_for(SyncState::Diverged, 5, Some("x"), true),
            Plan::Repair { outcome: PropagationOutcome::ServerDiverged, .. }
        ));
    }
    use background_tasks::{Activation, ActivationReason};
    use dns_types::{DnsConfig, DnsConfigZone, DnsRecord};
    use nexus_types::task_status::DnsServerEntry;
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
        let load = nexus_types::task_status::ConfigLoad::Full {
            names_read: 1,
            duration_ms: 0.0,
            reason: None,
        };
        LoadedConfig::whole(DnsGroup::Internal, config, load)
    }

    /// A database whose internal group is at `generation`.
    async fn database_at(generation: u64) -> test_database::TestDatabase {
        let db = test_database::TestDatabase::new().await;
        let zones =
            [db_model::ZoneSpec { zone_name: "control-plane.internal".into(), ttl_seconds: 60 }];
        let change = |i: u64| dns_types::DnsChange {
            idempotency_key: None,
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
                writer: "test-nexus".into(),
                repair,
                metrics: Default::default(),
                detach_after: Duration::from_millis(250),
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

    /// A difference from a generation the server has moved on from (another
    /// Nexus pushed meanwhile) is refused; the push asks the server again
    /// rather than sending the whole config, and sends the whole config
    /// only when it may not ask again.
    #[tokio::test]
    async fn a_difference_refused_because_the_server_moved_on_is_not_followed_by_the_whole_config()
    {
        let db = database_at(6).await;
        let tokens = TokenDir::new();
        let (server, _dir) = server(&tokens).await;
        let read = |generation| db.datastore.dns_config_read(DnsGroup::Internal, Some(generation));
        let (at_3, at_6) = (read(3).await.unwrap(), read(6).await.unwrap());
        server.apply(read(4).await.unwrap()).await.unwrap();
        let client = dns_server_client::Client::new_with_client(
            &format!("http://{}", server.http_address()),
            tokens.token.client_builder_as("test-nexus").build().unwrap(),
        );
        let latest = loaded(at_6);
        // What the push was told before another Nexus took the server to 4.
        let stale = ServedState { generation: 3, digest: Some(dns_types::config_digest(&at_3)) };
        let full = FullConfig::default();
        let mut pushed = None;
        let (group, store) = (DnsGroup::Internal, &db.datastore);
        let delivery =
            deliver(group, &client, &latest, &full, stale.clone(), store, &mut pushed, true).await;
        assert!(matches!(delivery, Delivery::BaseMoved));
        let sent = pushed.take().expect("the refused difference is recorded");
        assert_eq!((sent.kind, sent.from_generation), (PushKind::Difference, Some(3)));
        assert_eq!(server.generation(), 4, "nothing more was sent");

        // Without another ask, the whole config, as before.
        let delivery =
            deliver(group, &client, &latest, &full, stale, store, &mut pushed, false).await;
        let Delivery::Done((result, outcome, ..)) = delivery else { panic!("asked to ask again") };
        assert_eq!((result, outcome), (PropagationResult::Success, PropagationOutcome::Applied));
        let sent = pushed.expect("the whole config is recorded");
        assert_eq!(sent.kind, PushKind::Full);
        assert!(sent.why_full.unwrap().contains("refused the difference 3 → 6"));
        assert_eq!(server.generation(), 6);
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

    /// Differences: one generation behind gets the difference the config
    /// task derived, several behind one read from the database, a server
    /// whose content at its generation is not the database's gets the
    /// whole config after refusing the difference, an empty one the whole
    /// config; every result says which, with its size.
    /// The internal group's config task, having loaded the database's
    /// latest once, and what it publishes.
    async fn loaded_config_task(
        db: &test_database::TestDatabase,
        activation: &Activation,
    ) -> (
        crate::tasks::dns_config::DnsConfigTask,
        tokio::sync::watch::Receiver<Option<crate::tasks::dns_config::LoadedConfig>>,
    ) {
        let (mut task, rx) =
            crate::tasks::dns_config::DnsConfigTask::new(DnsGroup::Internal, db.datastore.clone());
        task.activate(activation).await.unwrap();
        (task, rx)
    }

    /// Commits internal generation 6 (one name added, `six`), as another
    /// writer would.
    async fn commit_six(db: &test_database::TestDatabase) {
        let change = dns_types::DnsChange {
            idempotency_key: None,
            comment: "six".into(),
            add: vec![dns_types::NameRecords {
                name: "six".into(),
                records: vec![DnsRecord::A("192.0.2.6".parse().unwrap())],
            }],
            remove: vec![],
        };
        db.datastore.dns_change_commit(DnsGroup::Internal, "t", &change).await.unwrap();
    }

    #[tokio::test]
    async fn servers_get_differences_from_their_own_generation() {
        let db = database_at(5).await;
        let tokens = TokenDir::new();
        let activation = Activation::new(1, ActivationReason::Timer);
        let (mut config_task, config_rx) = loaded_config_task(&db, &activation).await;
        let (one_behind, _d1) = server(&tokens).await;
        let (far_behind, _d2) = server(&tokens).await;
        let (wrong_base, _d3) = server(&tokens).await;
        let (empty, _d4) = server(&tokens).await;
        let read =
            async |g| db.datastore.dns_config_read(DnsGroup::Internal, Some(g)).await.unwrap();
        one_behind.apply(read(5).await).await.unwrap();
        far_behind.apply(read(2).await).await.unwrap();
        let mut other = read(3).await;
        other.zones[0]
            .names
            .insert("extra".into(), vec![DnsRecord::A("192.0.2.99".parse().unwrap())]);
        wrong_base.apply(other).await.unwrap();
        commit_six(&db).await;
        config_task.activate(&activation).await.unwrap();
        let loaded = config_rx.borrow().clone().unwrap();
        assert_eq!(loaded.diff_from_previous.as_ref().unwrap().from_generation, 5);

        let addresses = vec![
            one_behind.http_address(),
            far_behind.http_address(),
            wrong_base.http_address(),
            empty.http_address(),
        ];
        let (mut task, _) = make_task(
            DnsGroup::Internal,
            Some(loaded.clone()),
            Some(addresses),
            db.datastore.clone(),
            &tokens,
            true,
        );
        let status = done(task.activate(&activation).await.unwrap());
        let push = |server: &dns_server::RunningServer| {
            let result = &status.servers[&server.http_address().to_string()];
            assert_eq!(result.outcome, PropagationOutcome::Applied, "{result:?}");
            assert_eq!(server.digest(), Some(loaded.digest.clone()), "{result:?}");
            result.push.clone().unwrap()
        };
        let one = push(&one_behind);
        assert_eq!((one.kind, one.from_generation, one.names), (PushKind::Difference, Some(5), 1));
        assert!(one.bytes < 1024, "{one:?}");
        let far = push(&far_behind);
        assert_eq!((far.kind, far.from_generation, far.names), (PushKind::Difference, Some(2), 4));
        let wrong = push(&wrong_base);
        assert_eq!(wrong.kind, PushKind::Full);
        let why = wrong.why_full.clone().unwrap();
        assert!(why.contains("refused the difference 3 → 6 (HTTP 409 DiffDigestMismatch"), "{why}");
        let whole = push(&empty);
        assert_eq!((whole.kind, whole.names, whole.why_full), (PushKind::Full, 6, None));
        let message = &status.servers[&one_behind.http_address().to_string()].message;
        assert!(
            message.starts_with("updated from generation 5 to 6: difference 5 → 6, 1 name, "),
            "{message}"
        );
        let again = done(task.activate(&activation).await.unwrap());
        let history = &again.servers[&far_behind.http_address().to_string()].history;
        assert_eq!(history.last_push.as_ref().map(|p| p.kind), Some(PushKind::Difference));
    }

    /// A server this Nexus last saw at the difference's base gets the
    /// difference without being asked first; what the server answers
    /// tells a write of its own from one that found the generation there
    /// already (another writer's), and a server that is no longer at that
    /// base is asked and planned for as ever (here: diverged, repaired).
    #[tokio::test]
    async fn a_server_last_seen_at_the_base_gets_the_difference_at_once() {
        let db = database_at(5).await;
        let tokens = TokenDir::new();
        let activation = Activation::new(1, ActivationReason::Timer);
        let (mut config_task, config_rx) = loaded_config_task(&db, &activation).await;
        let (plain, _d1) = server(&tokens).await;
        let (beaten, _d2) = server(&tokens).await;
        let (moved, _d3) = server(&tokens).await;
        let servers = [&plain, &beaten, &moved];
        let addresses: Vec<SocketAddr> = servers.iter().map(|s| s.http_address()).collect();
        let (mut task, _) = make_task(
            DnsGroup::Internal,
            None,
            Some(addresses),
            db.datastore.clone(),
            &tokens,
            true,
        );
        // Every server brought to 5 by this task: it has seen them there.
        task.config = config_rx.clone();
        let first = done(task.activate(&activation).await.unwrap());
        assert!(first.servers.values().all(|r| r.outcome == PropagationOutcome::Applied));

        commit_six(&db).await;
        config_task.activate(&activation).await.unwrap();
        let six = db.datastore.dns_config_read(DnsGroup::Internal, Some(6)).await.unwrap();
        // Another writer brings one to 6 first; another gets a 6 of its own.
        beaten.apply(six.clone()).await.unwrap();
        let mut other = six;
        other.zones[0]
            .names
            .insert("extra".into(), vec![DnsRecord::A("192.0.2.99".parse().unwrap())]);
        moved.apply(other).await.unwrap();

        let status = done(task.activate(&activation).await.unwrap());
        let result =
            |s: &dns_server::RunningServer| status.servers[&s.http_address().to_string()].clone();
        let applied = result(&plain);
        assert_eq!(applied.outcome, PropagationOutcome::Applied, "{applied:?}");
        assert!(
            applied.message.starts_with("updated from generation 5 to 6: difference 5 → 6, 1 name"),
            "{}",
            applied.message
        );
        let there = result(&beaten);
        assert_eq!(there.outcome, PropagationOutcome::AlreadyCurrent, "{there:?}");
        assert!(there.message.contains("another writer got there first"), "{}", there.message);
        assert_eq!(there.push, None, "nothing of this Nexus's was applied: {there:?}");
        let repaired = result(&moved);
        assert_eq!(repaired.outcome, PropagationOutcome::Repaired, "{repaired:?}");
        let digest = config_rx.borrow().as_ref().unwrap().digest.clone();
        for s in servers {
            assert_eq!(s.generation(), 6);
            assert_eq!(s.digest(), Some(digest.clone()));
        }
    }
}
