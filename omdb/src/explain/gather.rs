//! Gathering for `omdb dns explain`: asks every stage what it knows about
//! one name and keeps the answers as [`Observations`], exactly as seen.
//! Nothing here decides anything; [`super::findings`] does, from these
//! observations alone (and a bundle stores them, so that the same verdict
//! can be given offline).

use super::ExplainArgs;
use crate::discovery::{Discovery, http_client};
use crate::observe::{self, ServerObservation, WireObservation};
use anyhow::{Context, anyhow};
use background_task_types::BackgroundTask;
use chrono::{DateTime, Utc};
use db_model::Datastore;
use dns_types::history::{NameStretch, near_misses};
use dns_types::{DnsGroup, DnsVersion};
use internal_dns::wire::Transport;
use internal_dns::{ServiceName, registered_instances};
use nexus_types::task_name::DnsTaskName;
use nexus_types::task_view::DnsTaskView;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use uuid::Uuid;

/// Everything explain saw, for one name: the input of the findings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Observations {
    /// When gathering started: "now" for every judgement of age (a
    /// propagation running for too long, say).
    pub taken_at: DateTime<Utc>,
    pub question: Question,
    pub database: DatabaseObservation,
    /// Every Nexus found in DNS, or why none could be found.
    pub nexus: Result<Vec<NexusObservation>, String>,
    /// Every server registered, listed by a Nexus, or reporting a DNS
    /// address given with `--server`.
    pub servers: Vec<ServerObservation>,
    /// The name asked of every DNS address, over UDP and TCP, per type.
    pub wire: Vec<WireObservation>,
    /// The zone's SOA asked of DNS addresses that no server reports (given
    /// with `--server`).
    pub unclaimed_soa: Vec<WireObservation>,
    /// A burst of UDP questions to every DNS address asked, to tell a lossy
    /// path from a silent one.
    #[serde(default)]
    pub loss: Vec<observe::LossProbe>,
    /// The one deadline every server question had to meet (seconds).
    #[serde(default)]
    pub deadline_secs: u64,
}

/// What was asked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Question {
    /// The name as given.
    pub name: String,
    /// The record type asked for, if one was.
    pub record_type: Option<String>,
    /// DNS addresses given with `--server`.
    pub servers: Vec<SocketAddr>,
    /// A propagation running longer than this counts as stuck.
    pub stuck_after_secs: u64,
}

/// What the database holds about the name and its group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatabaseObservation {
    pub group: DnsGroup,
    pub zone: String,
    /// The name relative to the zone (`@` for the apex).
    pub name: String,
    pub fqdn: String,
    pub latest: DnsVersion,
    pub latest_digest: String,
    /// The name's records, generation by generation (its whole history).
    pub stretches: Vec<NameStretch>,
    /// Names in the zone that look like this one (asked only when it is
    /// absent at the latest generation).
    pub near_misses: Vec<String>,
    /// The group's DNS servers that the internal group's latest generation
    /// registers (config API addresses).
    pub registered_servers: Vec<SocketAddr>,
    pub internal_generation: u64,
    /// The database's digest of each generation a server claims (or why
    /// it could not be read).
    pub digests: BTreeMap<u64, Result<String, String>>,
    /// The DNS addresses the group's servers registered, by config API
    /// address (`_dns-internal._udp` / `_dns-external._udp`).
    #[serde(default)]
    pub registered_dns: BTreeMap<SocketAddr, Vec<SocketAddr>>,
    /// The node omdb read (a replicated database only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Every node of a replicated database, as it sees itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<db_model::cluster::NodeStatus>>,
}

/// One Nexus, as asked.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NexusObservation {
    pub url: String,
    pub id: Option<Uuid>,
    /// Why it could not be asked.
    pub error: Option<String>,
    /// Its DNS tasks for the name's group, as it reported them.
    pub tasks: Vec<BackgroundTask>,
    /// The database node its connections reach (as it reported it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_node: Option<String>,
}

impl NexusObservation {
    /// The task `kind` of the group, decoded.
    pub fn view(&self, name: DnsTaskName) -> Option<DnsTaskView> {
        let name = name.to_string();
        self.tasks.iter().find(|t| t.name == name).map(DnsTaskView::of)
    }
}

pub async fn gather(args: &ExplainArgs, discovery: &Discovery) -> anyhow::Result<Observations> {
    let taken_at = Utc::now();
    let datastore = discovery.datastore().await?;
    let mut database = read_database(&args.name, discovery, &datastore).await?;
    let group = database.group;
    // A replicated database: which node was read, and how every node is.
    let url = discovery.db_url().await?;
    let nodes = async {
        match db_model::cluster::host_count(&url) {
            1 => None,
            _ => db_model::cluster::node_statuses(&url, crate::discovery::TIMEOUT).await.ok(),
        }
    };
    let nexus = async {
        match discovery.all_nexus_urls().await {
            Ok(urls) => {
                Ok(futures::future::join_all(urls.iter().map(|u| ask_nexus(u, group))).await)
            }
            Err(e) => Err(format!("{e:#}")),
        }
    };

    // The registered servers are known before any Nexus answers, so they
    // are asked beside the Nexus: each server's status (with the zone's
    // SOA) and recent history, and the name at every DNS address
    // registered or given, with a loss probe.  Everything asked of them
    // shares one deadline, so a hung server costs one timeout, not one per
    // step, and a hung Nexus does not add its own to it.
    let deadline = observe::Deadline::starting_now(crate::discovery::TIMEOUT);
    let types = question_types(args.rtype.as_deref(), &database);
    let fqdn = database.fqdn.clone();
    let ask_all = |addresses: &BTreeSet<SocketAddr>, deadline: observe::Deadline| {
        let mut questions = Vec::new();
        for address in addresses {
            for transport in [Transport::Udp, Transport::Tcp] {
                for rtype in &types {
                    questions.push(observe::ask(*address, &fqdn, rtype, transport, deadline));
                }
            }
        }
        futures::future::join_all(questions)
    };
    let registered_label =
        format!("registered in internal generation {}", database.internal_generation);
    let registered_servers: BTreeMap<SocketAddr, BTreeSet<String>> = database
        .registered_servers
        .iter()
        .map(|address| (*address, BTreeSet::from([registered_label.clone()])))
        .collect();
    let registered: BTreeSet<SocketAddr> = registered_servers
        .keys()
        .flat_map(|a| database.registered_dns.get(a).into_iter().flatten().copied())
        .collect();
    let mut early = registered.clone();
    early.extend(args.servers.iter().copied());
    let registered_addresses: Vec<SocketAddr> = registered_servers.keys().copied().collect();
    let zone = database.zone.clone();
    let probe_all = |addresses: &BTreeSet<SocketAddr>, deadline: observe::Deadline| {
        futures::future::join_all(
            addresses.iter().map(|a| observe::probe_loss(*a, &zone, deadline)).collect::<Vec<_>>(),
        )
    };
    let servers_asked = async {
        futures::join!(
            observe::observe_servers(registered_servers, Some(&zone), deadline),
            observe::recent_histories(&registered_addresses, taken_at - observe::RECENT, deadline),
            ask_all(&early, deadline),
            probe_all(&early, deadline),
        )
    };
    let (nodes, nexus, (mut servers, mut histories, mut wire, mut loss)) =
        futures::join!(nodes, nexus, servers_asked);
    if nodes.is_some() {
        database.node = datastore.connection_report().node.map(|n| n.node);
        database.nodes = nodes;
    }

    // Every server: registered, or listed by a Nexus.  Those only a Nexus
    // lists are asked now, with a deadline of their own when a slow Nexus
    // left the shared one too little (as for the DNS addresses servers
    // report, below): a part is never called silent for want of time it
    // was not given.
    let mut listed: BTreeMap<SocketAddr, BTreeSet<String>> = BTreeMap::new();
    for n in nexus.iter().flatten() {
        if let Some(DnsTaskView::Servers { status: Some(list), .. }) =
            n.view(DnsTaskName::servers(group))
        {
            for entry in &list.servers {
                listed
                    .entry(entry.address)
                    .or_default()
                    .insert(format!("listed by Nexus {}", nexus_label(n)));
            }
        }
    }
    for server in &mut servers {
        if let Some(labels) = listed.remove(&server.config_address) {
            server.known_from.extend(labels);
            server.known_from.sort();
        }
    }
    let deadline = deadline.or_fresh_when_below(crate::discovery::TIMEOUT / 2);
    if !listed.is_empty() {
        let only_listed: Vec<SocketAddr> = listed.keys().copied().collect();
        let (more, more_histories) = futures::join!(
            observe::observe_servers(listed, Some(&zone), deadline),
            observe::recent_histories(&only_listed, taken_at - observe::RECENT, deadline),
        );
        servers.extend(more);
        servers.sort_by_key(|s| s.config_address);
        histories.extend(more_histories);
    }
    for server in &mut servers {
        server.recent = histories.remove(&server.config_address);
    }
    let mut digests = std::mem::take(&mut database.digests);
    observe::claimed_digests(&datastore, group, database.latest.generation, &servers, &mut digests)
        .await;
    database.digests = digests;

    // DNS addresses servers reported that were not registered, and those
    // given that no server reports or registered (their SOA too).
    let reported: BTreeSet<SocketAddr> =
        servers.iter().flat_map(ServerObservation::dns_addresses).collect();
    let late: BTreeSet<SocketAddr> = reported.difference(&early).copied().collect();
    let unclaimed: Vec<SocketAddr> = args
        .servers
        .iter()
        .copied()
        .filter(|a| !reported.contains(a) && !registered.contains(a))
        .collect();
    let (late_wire, late_loss, unclaimed_soa) = futures::join!(
        ask_all(&late, deadline),
        probe_all(&late, deadline),
        futures::future::join_all(unclaimed.iter().map(|a| observe::ask_soa(*a, &zone, deadline)))
    );
    wire.extend(late_wire);
    loss.extend(late_loss);
    // By address, as asked (stable: transports and types keep their order).
    wire.sort_by_key(|w| w.dns_address);
    Ok(Observations {
        taken_at,
        question: Question {
            name: args.name.clone(),
            record_type: args.rtype.clone(),
            servers: args.servers.clone(),
            stuck_after_secs: args.stuck_after,
        },
        database,
        nexus,
        servers,
        wire,
        unclaimed_soa: unclaimed_soa.into_iter().flatten().collect(),
        loss,
        deadline_secs: deadline.budget().as_secs(),
    })
}

/// The zone holding `name` (the longest matching suffix) and the name
/// relative to it, among the zones the database has.
pub async fn resolve_name(
    name: &str,
    datastore: &Datastore,
) -> anyhow::Result<(db_model::ZoneInfo, String)> {
    let mut zones = datastore.dns_zones().await.context("reading the DNS zones")?;
    // Longest suffix first: the most specific zone wins.
    zones.sort_by_key(|z| std::cmp::Reverse(z.zone_name.len()));
    let zone_names: Vec<&str> = zones.iter().map(|z| z.zone_name.as_str()).collect();
    let absolute = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    let (index, relative) =
        dns_types::names::resolve_in_zones(&absolute, &zone_names).map_err(|e| {
            anyhow!("{name:?} is in no zone served here ({e}); zones: {}", zone_names.join(", "))
        })?;
    Ok((zones[index].clone(), relative))
}

async fn read_database(
    asked: &str,
    discovery: &Discovery,
    datastore: &Datastore,
) -> anyhow::Result<DatabaseObservation> {
    let (zone, name) = resolve_name(asked, datastore).await?;
    let group = zone.group;
    let fqdn =
        if name == "@" { zone.zone_name.clone() } else { format!("{name}.{}", zone.zone_name) };
    let (latest, stretches, internal) = futures::try_join!(
        async {
            datastore.dns_version_latest(group).await.context("reading the latest generation")
        },
        async {
            datastore
                .dns_name_history(&zone.zone_name, &name)
                .await
                .context("reading the name's history")
        },
        async {
            datastore
                .dns_config_read(DnsGroup::Internal, None)
                .await
                .context("reading the internal DNS config (where servers are registered)")
        },
    )?;
    let latest_digest = observe::database_digest(datastore, group, latest.generation)
        .await
        .map_err(|e| anyhow!("reading the digest of generation {}: {e}", latest.generation))?;
    let registered_servers =
        registered_instances(&internal, &discovery.zone, ServiceName::dns_servers_of(group))
            .iter()
            .filter_map(|i| i.socket_addr())
            .collect();
    let registered_dns = internal_dns::registered_dns_addresses(&internal, &discovery.zone, group);
    let present = stretches.iter().any(|s| s.covers(latest.generation));
    let near = if present {
        Vec::new()
    } else {
        let names = datastore.dns_zone_live_names(&zone.zone_name).await.unwrap_or_default();
        near_misses(&name, names.iter().map(String::as_str), 5)
            .into_iter()
            .map(|n| format!("{n}.{}", zone.zone_name))
            .collect()
    };
    let mut digests = BTreeMap::new();
    digests.insert(latest.generation, Ok(latest_digest.clone()));
    Ok(DatabaseObservation {
        group,
        zone: zone.zone_name.clone(),
        name,
        fqdn,
        latest,
        latest_digest,
        stretches,
        near_misses: near,
        registered_servers,
        internal_generation: internal.generation,
        digests,
        registered_dns,
        node: None,
        nodes: None,
    })
}

/// The record types to ask over the wire: the one asked for, else every
/// type the name has (or last had), else A.
fn question_types(asked: Option<&str>, db: &DatabaseObservation) -> Vec<String> {
    if let Some(t) = asked {
        return vec![t.to_ascii_uppercase()];
    }
    let mut types: BTreeSet<String> = BTreeSet::new();
    for stretch in &db.stretches {
        if stretch.covers(db.latest.generation) || stretch.removed.is_none() {
            types.extend(stretch.records.iter().map(|r| r.type_name().to_string()));
        }
    }
    if types.is_empty() {
        // The apex has its SOA even with no records of its own.
        types.insert(if db.name == "@" { "SOA" } else { "A" }.into());
    }
    types.into_iter().collect()
}

pub fn nexus_label(n: &NexusObservation) -> String {
    match n.id {
        Some(id) => format!("{id} ({})", n.url),
        None => n.url.clone(),
    }
}

/// One Nexus: who it is, and its DNS tasks for `group`.
pub async fn ask_nexus(url: &str, group: DnsGroup) -> NexusObservation {
    let client = nexus_client::Client::new_with_client(url, http_client());
    let mut observation = NexusObservation { url: url.to_string(), ..Default::default() };
    let (status, tasks) = futures::join!(client.status_get().send(), client.bgtask_list().send());
    match (status, tasks) {
        (Ok(status), Ok(tasks)) => {
            let status = status.into_inner();
            observation.id = Some(status.id);
            observation.database_node = status.database.map(|d| d.node);
            let tasks = tasks.into_inner();
            for name in DnsTaskName::of_group(group) {
                match tasks.get(&name.to_string()) {
                    Some(task) => observation.tasks.push(task.clone()),
                    None => observation.error = Some(format!("has no task {name}")),
                }
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            observation.error = Some(format!("could not be asked: {}", dns_types::error_chain(&e)));
        }
    }
    observation
}
