//! Asking the pipeline's parts what they say, once, as plain data.
//!
//! `omdb dns status`, `omdb dns explain` and `omdb dns bundle` all need the
//! same things from a DNS server (its config API's status, and what each
//! DNS address it reports answers for the zone's SOA over UDP and TCP) and
//! the same digest of a generation from the database.  They gather them
//! here, into observations that keep exactly what was seen (an error is an
//! observation too), and decide what it means elsewhere, in pure code.

use crate::discovery::{TIMEOUT, http_client};
use chrono::{DateTime, Utc};
use db_model::Datastore;
use dns_server_client::types::DnsServerStatus;
use dns_types::DnsGroup;
use internal_dns::wire::{self, Transport, WireAnswer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// One deadline for everything a command asks of the servers.  Every
/// question is asked at once and each must answer by the same instant, so
/// a hung part costs the budget once, however many steps would have waited
/// on it; what did not answer by then is said so, by name.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: tokio::time::Instant,
    budget: Duration,
}

impl Deadline {
    pub fn starting_now(budget: Duration) -> Deadline {
        Deadline { at: tokio::time::Instant::now() + budget, budget }
    }

    /// The budget from the start to the deadline.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// This deadline, or a new one with the same budget when less than
    /// `least` is left: for parts that could only be asked once a slow
    /// one had answered.
    pub fn or_fresh_when_below(self, least: Duration) -> Deadline {
        if self.at.saturating_duration_since(tokio::time::Instant::now()) < least {
            Deadline::starting_now(self.budget)
        } else {
            self
        }
    }

    /// `work`'s result, or `None` when the deadline came first.
    pub async fn within<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::time::timeout_at(self.at, work).await.ok()
    }

    /// What a part that did not answer in time is told it did.
    pub fn missed(&self) -> String {
        format!(
            "no answer within {}s, the deadline for everything omdb asked",
            self.budget.as_secs()
        )
    }
}

/// What one DNS server said about itself, and what its DNS addresses
/// answered for the zone's SOA.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerObservation {
    /// The server's config API.
    pub config_address: SocketAddr,
    /// Where this server is known from (registered in internal DNS, listed
    /// by a Nexus, found in DNS).
    pub known_from: Vec<String>,
    pub asked_at: DateTime<Utc>,
    /// What its config API reported (`GET /status`).
    pub status: Option<DnsServerStatus>,
    /// Why its config API could not be asked.
    pub error: Option<String>,
    /// Its config API did not answer within the deadline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
    /// The zone's SOA asked of each DNS address it reports, over UDP and
    /// TCP (empty when its status could not be read, or it reports none).
    pub soa: Vec<WireObservation>,
    /// Its recent apply history, when asked for (explain reads the last
    /// hour, to name repairs, restarts and refused pushes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<dns_types::apply_history::ServerHistory>,
}

impl ServerObservation {
    /// The DNS addresses the server reports (one that does not parse is
    /// left out, never guessed).
    pub fn dns_addresses(&self) -> Vec<SocketAddr> {
        self.status.as_ref().map(|s| socket_addrs(&s.dns_addresses)).unwrap_or_default()
    }

    pub fn generation(&self) -> Option<u64> {
        self.status.as_ref().map(|s| s.generation)
    }

    /// The SOA answer of `address` over `transport`, if it was asked.
    pub fn soa_of(&self, address: SocketAddr, transport: Transport) -> Option<&WireObservation> {
        self.soa.iter().find(|w| w.dns_address == address && w.transport == transport)
    }
}

/// One DNS question asked of one address over one transport, and what came
/// back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireObservation {
    pub dns_address: SocketAddr,
    pub transport: Transport,
    /// The name asked (absolute, no trailing dot).
    pub name: String,
    pub record_type: String,
    pub asked_at: DateTime<Utc>,
    pub answer: Option<WireAnswer>,
    /// Why nothing usable came back.
    pub error: Option<String>,
    /// No answer came within the deadline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

/// Asks `name` `rtype` of `address` over `transport`, by `deadline`.
pub async fn ask(
    address: SocketAddr,
    name: &str,
    rtype: &str,
    transport: Transport,
    deadline: Deadline,
) -> WireObservation {
    let asked_at = Utc::now();
    let (answer, error, late) =
        match deadline.within(wire::ask(address, name, rtype, transport, TIMEOUT)).await {
            Some(Ok(answer)) => (Some(answer), None, false),
            Some(Err(e @ wire::WireError::Timeout { .. })) => {
                (None, Some(dns_types::error_chain(&e)), true)
            }
            Some(Err(e)) => (None, Some(dns_types::error_chain(&e)), false),
            None => (None, Some(deadline.missed()), true),
        };
    WireObservation {
        dns_address: address,
        transport,
        name: name.to_string(),
        record_type: rtype.to_string(),
        asked_at,
        answer,
        error,
        late,
    }
}

/// Asks the zone's SOA of `address` over UDP and over TCP.
pub async fn ask_soa(address: SocketAddr, zone: &str, deadline: Deadline) -> Vec<WireObservation> {
    let (udp, tcp) = futures::join!(
        ask(address, zone, "SOA", Transport::Udp, deadline),
        ask(address, zone, "SOA", Transport::Tcp, deadline)
    );
    vec![udp, tcp]
}

/// How many identical questions a loss probe sends.
pub const LOSS_PROBES: u32 = 16;

/// A burst of identical UDP questions (the zone's SOA) to one DNS address,
/// all at once: a path that loses packets answers some and not others,
/// where one question would be a coin toss.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LossProbe {
    pub dns_address: SocketAddr,
    pub asked_at: DateTime<Utc>,
    pub asked: u32,
    pub answered: u32,
}

/// Sends [`LOSS_PROBES`] SOA questions for `zone` to `address` over UDP.
pub async fn probe_loss(address: SocketAddr, zone: &str, deadline: Deadline) -> LossProbe {
    let asked_at = Utc::now();
    let asks = (0..LOSS_PROBES).map(|_| ask(address, zone, "SOA", Transport::Udp, deadline));
    let answered =
        futures::future::join_all(asks).await.iter().filter(|w| w.answer.is_some()).count() as u32;
    LossProbe { dns_address: address, asked_at, asked: LOSS_PROBES, answered }
}

/// Asks one server's config API for its status, then the zone's SOA of
/// every DNS address it reports (when `zone` is known), all by `deadline`.
pub async fn observe_server(
    address: SocketAddr,
    known_from: Vec<String>,
    zone: Option<&str>,
    deadline: Deadline,
) -> ServerObservation {
    let asked_at = Utc::now();
    let client =
        dns_server_client::Client::new_with_client(&format!("http://{address}"), http_client());
    let (status, error, late) = match deadline.within(client.status_get().send()).await {
        Some(Ok(status)) => (Some(status.into_inner()), None, false),
        Some(Err(e)) => {
            let late =
                matches!(&e, dns_server_client::Error::CommunicationError(e) if e.is_timeout());
            (None, Some(dns_types::error_chain(&e)), late)
        }
        None => (None, Some(deadline.missed()), true),
    };
    let mut observation = ServerObservation {
        config_address: address,
        known_from,
        asked_at,
        status,
        error,
        late,
        soa: vec![],
        recent: None,
    };
    if let Some(zone) = zone {
        let asks = observation.dns_addresses().into_iter().map(|a| ask_soa(a, zone, deadline));
        observation.soa = futures::future::join_all(asks).await.into_iter().flatten().collect();
    }
    observation
}

/// Observes every server in `known` at once.
pub async fn observe_servers(
    known: BTreeMap<SocketAddr, BTreeSet<String>>,
    zone: Option<&str>,
    deadline: Deadline,
) -> Vec<ServerObservation> {
    futures::future::join_all(
        known.into_iter().map(|(address, from)| {
            observe_server(address, from.into_iter().collect(), zone, deadline)
        }),
    )
    .await
}

/// Every part that did not answer by the deadline, named: config APIs,
/// then DNS addresses with the transports that stayed silent.
pub fn late_parts(servers: &[ServerObservation], wire: &[WireObservation]) -> Vec<String> {
    let mut parts: Vec<String> = servers
        .iter()
        .filter(|s| s.late)
        .map(|s| format!("config API {}", s.config_address))
        .collect();
    let mut silent: BTreeMap<SocketAddr, BTreeSet<Transport>> = BTreeMap::new();
    for w in servers.iter().flat_map(|s| &s.soa).chain(wire).filter(|w| w.late) {
        silent.entry(w.dns_address).or_default().insert(w.transport);
    }
    for (address, transports) in silent {
        let via: Vec<String> = transports.iter().map(|t| t.to_string()).collect();
        parts.push(format!("DNS {address} over {}", via.join(" and ")));
    }
    parts
}

/// The line that names what did not answer in time, if anything did not.
pub fn late_line(deadline_secs: u64, late: &[String]) -> Option<String> {
    (!late.is_empty()).then(|| {
        format!(
            "did not answer within {deadline_secs}s (one deadline for every server question): {}",
            late.join("; ")
        )
    })
}

/// How far back the events that bear on a live answer are read.
pub const RECENT: chrono::Duration = chrono::Duration::hours(1);

/// Each server's apply history since `since` (at most 200 events), for
/// the servers that answered.
pub async fn recent_histories(
    servers: &[SocketAddr],
    since: DateTime<Utc>,
    deadline: Deadline,
) -> BTreeMap<SocketAddr, dns_types::apply_history::ServerHistory> {
    let reads = servers.iter().map(|address| async move {
        let client =
            dns_server_client::Client::new_with_client(&format!("http://{address}"), http_client());
        let read = client.history_get().since(since).limit(200).send();
        let history = deadline.within(read).await.and_then(Result::ok);
        (*address, history.map(|h| h.into_inner()))
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .filter_map(|(address, history)| Some((address, history?)))
        .collect()
}

/// The database's digest of `group` at `generation`: from the digest state
/// it stored with the generation (no need to read the whole config), or
/// else computed from the config read back.
pub async fn database_digest(
    datastore: &Datastore,
    group: DnsGroup,
    generation: u64,
) -> Result<String, String> {
    match datastore.dns_digest_state(group, generation).await {
        Ok(Some(state)) => Ok(state.digest(generation)),
        Ok(None) => datastore
            .dns_config_read(group, Some(generation))
            .await
            .map(|c| dns_types::config_digest(&c))
            .map_err(|e| dns_types::error_chain(&e)),
        Err(e) => Err(dns_types::error_chain(&e)),
    }
}

/// The database's digests of every generation that a server claims and
/// the database has (up to `latest`), beside those already known.
pub async fn claimed_digests(
    datastore: &Datastore,
    group: DnsGroup,
    latest: u64,
    servers: &[ServerObservation],
    known: &mut BTreeMap<u64, Result<String, String>>,
) {
    let claimed: BTreeSet<u64> = servers
        .iter()
        .filter_map(ServerObservation::generation)
        .filter(|g| *g > 0 && *g <= latest && !known.contains_key(g))
        .collect();
    for generation in claimed {
        known.insert(generation, database_digest(datastore, group, generation).await);
    }
}

/// Addresses as a DNS server's status reports them (strings in the
/// generated client); one that does not parse is left out, never guessed.
pub fn socket_addrs(addresses: &[String]) -> Vec<SocketAddr> {
    addresses.iter().filter_map(|a| a.parse().ok()).collect()
}
