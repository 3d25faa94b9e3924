//! `omdb dns explain NAME`: from a name a customer says is missing to the
//! pipeline stage that lost it, with evidence from every stage.
//!
//! It gathers, with timestamps, what each stage knows about the name (the
//! database, every Nexus, every DNS server, and the wire), turns every
//! disagreement into a finding tagged with its stage, and puts the earliest
//! stage's finding in the verdict.  With no finding, the verdict is
//! affirmative: since when the name has its records, that every Nexus has
//! the latest generation, and which servers answered it, over which
//! transports, when.  The report is one typed value; text and `--json` are
//! two renderings of it.

use crate::discovery::{Discovery, TIMEOUT, http_client};
use crate::format::{Output, table, timestamp};
use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use db_model::Datastore;
use dns_types::history::{NameEvent, NameEventKind, NameStretch, name_events, near_misses};
use dns_types::sync::{ServerClaim, SyncState, Wanted, classify};
use dns_types::{DnsConfig, DnsGroup, DnsRecord, DnsVersion};
use internal_dns::wire::{self, Transport, WireAnswer};
use internal_dns::{ServiceName, registered_instances};
use nexus_types::task_name::DnsTaskName;
use nexus_types::task_status::{PropagationResult, ServerResult};
use nexus_types::task_view::DnsTaskView;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;
use uuid::Uuid;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The name, absolute (`shop.example.test`, trailing dot optional); its
    /// zone and group are the longest zone that contains it.
    name: String,
    /// The record type the customer asked for (default: the types the
    /// database has for the name, or A).
    #[arg(long = "type", value_name = "TYPE", value_parser = record_type)]
    rtype: Option<String>,
    /// A DNS address (IP:PORT) to check too, registered or not: the one
    /// the customer asked.
    #[arg(long = "server", value_name = "ADDR")]
    servers: Vec<SocketAddr>,
    /// A propagation activation running longer than this is reported as
    /// stuck.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    stuck_after: u64,
}

/// A record type we serve, in upper case; anything else is a usage error
/// (exit 2) rather than a question every server would "fail" to answer.
fn record_type(value: &str) -> Result<String, String> {
    let upper = value.to_ascii_uppercase();
    if DnsRecord::TYPE_NAMES.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!("not a record type served here (one of {})", DnsRecord::TYPE_NAMES.join(", ")))
    }
}

/// The pipeline stages, in order; a verdict names the earliest with a
/// finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Database,
    Nexus,
    ServerList,
    Propagation,
    Server,
    Wire,
    Healthy,
}

impl Stage {
    pub fn exit_code(self) -> u8 {
        match self {
            Stage::Healthy => 0,
            Stage::Database => 10,
            Stage::Nexus => 11,
            Stage::ServerList => 12,
            Stage::Propagation => 13,
            Stage::Server => 14,
            Stage::Wire => 15,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Stage::Database => "database",
            Stage::Nexus => "nexus",
            Stage::ServerList => "server-list",
            Stage::Propagation => "propagation",
            Stage::Server => "server",
            Stage::Wire => "wire",
            Stage::Healthy => "healthy",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub stage: Stage,
    pub summary: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub stage: Stage,
    /// What the finding is about: the name, a Nexus, a server, an address.
    pub subject: String,
    pub summary: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    pub database: DatabaseEvidence,
    pub nexus: Vec<NexusEvidence>,
    pub servers: Vec<ServerEvidence>,
    pub wire: Vec<WireEvidence>,
}

#[derive(Debug, Serialize)]
pub struct DatabaseEvidence {
    pub group: DnsGroup,
    pub zone: String,
    /// The name relative to the zone (`@` for the apex).
    pub name: String,
    pub fqdn: String,
    pub record_type: Option<String>,
    pub latest: DnsVersion,
    pub latest_digest: String,
    /// The name's records at the latest generation (empty when absent).
    pub records: Vec<DnsRecord>,
    /// The generation since which the name has exactly these records.
    pub records_since: Option<DnsVersion>,
    /// Every generation that added, changed or removed the name.
    pub history: Vec<NameEvent>,
    pub never_existed: bool,
    /// Names in the zone that look like this one (when it is absent).
    pub near_misses: Vec<String>,
    /// The group's DNS servers that the internal group's latest generation
    /// registers (config API addresses).
    pub registered_servers: Vec<SocketAddr>,
    pub internal_generation: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct NexusEvidence {
    pub url: String,
    pub id: Option<Uuid>,
    /// Why this Nexus could not be asked.
    pub error: Option<String>,
    pub config: Option<ConfigEvidence>,
    pub server_list: Option<ServerListEvidence>,
    pub propagation: Option<PropagationEvidence>,
}

#[derive(Debug, Default, Serialize)]
pub struct ConfigEvidence {
    /// The generation this Nexus works from (the last it could read).
    pub generation: Option<u64>,
    pub digest: Option<String>,
    pub first_seen_at: Option<DateTime<Utc>>,
    /// When the activation that reported this started.
    pub checked_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct ServerListEvidence {
    pub servers: Vec<SocketAddr>,
    pub discovered_at: Option<DateTime<Utc>>,
    pub checked_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct PropagationEvidence {
    /// The generation of the last completed attempt.
    pub generation: Option<u64>,
    pub started_at: Option<DateTime<Utc>>,
    pub all_done_at: Option<DateTime<Utc>>,
    pub servers: BTreeMap<String, ServerResult>,
    pub waiting_for: Vec<DnsTaskName>,
    pub error: Option<String>,
    /// An activation in progress: since when, which generation, which
    /// servers it still waits on.
    pub running_since: Option<DateTime<Utc>>,
    pub running_generation: Option<u64>,
    pub pending: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ServerEvidence {
    pub config_address: Option<SocketAddr>,
    /// Where this server is known from.
    pub known_from: Vec<String>,
    pub id: Option<Uuid>,
    pub dns_addresses: Vec<SocketAddr>,
    pub generation: Option<u64>,
    pub digest: Option<String>,
    pub time_applied: Option<DateTime<Utc>>,
    /// The digest the database holds for the server's generation.
    pub database_digest: Option<String>,
    pub state: Option<SyncState>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct WireEvidence {
    pub dns_address: SocketAddr,
    /// The config API of the server that reports this DNS address, if any.
    pub server: Option<SocketAddr>,
    pub server_id: Option<Uuid>,
    pub transport: Transport,
    pub record_type: String,
    pub asked_at: DateTime<Utc>,
    pub answer: Option<WireAnswer>,
    /// The zone's SOA serial asked over the same transport.
    pub soa_serial: Option<u32>,
    pub error: Option<String>,
    /// The generation the answer is compared with.
    pub expected_generation: Option<u64>,
    pub expected_records: Vec<DnsRecord>,
    /// Why the answer differs from the expected one (absent when it does
    /// not).
    pub mismatch: Option<String>,
}

pub async fn run(args: &ExplainArgs, discovery: &Discovery, output: &Output) -> anyhow::Result<u8> {
    let report = gather(args, discovery).await?;
    if output.json {
        output.json(&report)?;
    } else {
        print!("{}", render(&report));
    }
    Ok(report.verdict.stage.exit_code())
}

/// What the database holds, read once and shared by every comparison.
struct DbView {
    evidence: DatabaseEvidence,
    stretches: Vec<NameStretch>,
    /// Digests by generation, filled as servers claim generations.
    digests: BTreeMap<u64, String>,
}

impl DbView {
    /// The name's records at `generation` (from its history: no extra
    /// query).
    fn records_at(&self, generation: u64) -> Vec<DnsRecord> {
        self.stretches
            .iter()
            .find(|s| s.covers(generation))
            .map(|s| s.records.clone())
            .unwrap_or_default()
    }

    async fn digest_at(&mut self, datastore: &Datastore, generation: u64) -> Option<String> {
        if generation == 0 || generation > self.evidence.latest.generation {
            return None;
        }
        if let Some(d) = self.digests.get(&generation) {
            return Some(d.clone());
        }
        let config = datastore.dns_config_read(self.evidence.group, Some(generation)).await.ok()?;
        let digest = dns_types::config_digest(&config);
        self.digests.insert(generation, digest.clone());
        Some(digest)
    }
}

async fn gather(args: &ExplainArgs, discovery: &Discovery) -> anyhow::Result<Report> {
    let datastore = discovery.datastore().await?;
    let mut db = read_database(args, discovery, &datastore).await?;
    let group = db.evidence.group;
    let mut findings = database_findings(&db.evidence);

    // Every Nexus, as found in DNS.
    let nexus = match discovery.all_nexus_urls().await {
        Ok(urls) => futures::future::join_all(urls.iter().map(|url| ask_nexus(url, group))).await,
        Err(e) => {
            findings.push(Finding {
                stage: Stage::Nexus,
                subject: "Nexus".into(),
                summary: format!("no Nexus could be found to ask: {e:#}"),
            });
            Vec::new()
        }
    };
    findings.extend(nexus_findings(&nexus, &db.evidence, args.stuck_after));

    // Every server: registered, listed by a Nexus, or given.
    let mut known: BTreeMap<SocketAddr, BTreeSet<String>> = BTreeMap::new();
    for address in &db.evidence.registered_servers {
        known.entry(*address).or_default().insert(format!(
            "registered in internal generation {}",
            db.evidence.internal_generation
        ));
    }
    for n in &nexus {
        for address in n.server_list.iter().flat_map(|l| &l.servers) {
            known
                .entry(*address)
                .or_default()
                .insert(format!("listed by Nexus {}", nexus_label(n)));
        }
    }
    let statuses = futures::future::join_all(known.keys().map(|address| async move {
        let client =
            dns_server_client::Client::new_with_client(&format!("http://{address}"), http_client());
        client.status_get().send().await.map(|r| r.into_inner())
    }))
    .await;
    let mut servers = Vec::new();
    for ((address, sources), status) in known.into_iter().zip(statuses) {
        let mut evidence = ServerEvidence {
            config_address: Some(address),
            known_from: sources.into_iter().collect(),
            id: None,
            dns_addresses: Vec::new(),
            generation: None,
            digest: None,
            time_applied: None,
            database_digest: None,
            state: None,
            error: None,
        };
        match status {
            Ok(status) => {
                let database_digest = db.digest_at(&datastore, status.generation).await;
                let state = classify(
                    ServerClaim {
                        generation: status.generation,
                        digest: status.applied_config_digest.as_deref(),
                    },
                    Wanted {
                        generation: db.evidence.latest.generation,
                        digest: &db.evidence.latest_digest,
                        database_latest: Some(db.evidence.latest.generation),
                        digest_at_server_generation: database_digest.as_deref(),
                    },
                );
                evidence.id = Some(status.id);
                evidence.dns_addresses = crate::discovery::socket_addrs(&status.dns_addresses);
                evidence.generation = Some(status.generation);
                evidence.digest = status.applied_config_digest;
                evidence.time_applied = status.time_applied;
                evidence.database_digest = database_digest;
                evidence.state = Some(state);
            }
            Err(e) => evidence.error = Some(dns_types::error_chain(&e)),
        }
        servers.push(evidence);
    }
    findings.extend(server_findings(&servers, &db.evidence));
    if servers.is_empty() {
        findings.push(Finding {
            stage: Stage::ServerList,
            subject: format!("{} DNS servers", db.evidence.group),
            summary: format!(
                "no {} DNS server is registered in internal generation {} or listed by any Nexus: \
                 nothing serves {}",
                db.evidence.group, db.evidence.internal_generation, db.evidence.fqdn
            ),
        });
    }

    // The wire: every DNS address any server reports, and those given.
    let mut targets: BTreeMap<SocketAddr, Option<usize>> = BTreeMap::new();
    for (index, server) in servers.iter().enumerate() {
        for address in &server.dns_addresses {
            targets.insert(*address, Some(index));
        }
    }
    for address in &args.servers {
        targets.entry(*address).or_insert(None);
    }
    let types = question_types(args, &db);
    let mut questions = Vec::new();
    for (address, server) in &targets {
        for transport in [Transport::Udp, Transport::Tcp] {
            for rtype in &types {
                questions.push((*address, *server, transport, rtype.clone()));
            }
        }
    }
    let fqdn = db.evidence.fqdn.clone();
    let zone = db.evidence.zone.clone();
    let answers =
        futures::future::join_all(questions.iter().map(|(address, _, transport, rtype)| {
            let (fqdn, zone) = (fqdn.clone(), zone.clone());
            async move {
                let asked_at = Utc::now();
                let (answer, soa) = futures::join!(
                    wire::ask(*address, &fqdn, rtype, *transport, TIMEOUT),
                    wire::ask(*address, &zone, "SOA", *transport, TIMEOUT)
                );
                (asked_at, answer, soa)
            }
        }))
        .await;
    let mut wire_evidence = Vec::new();
    for ((address, server, transport, rtype), (asked_at, answer, soa)) in
        questions.into_iter().zip(answers)
    {
        let server_ref = server.map(|i| &servers[i]);
        let expected_generation = match server_ref {
            Some(s) => s.generation,
            None => Some(db.evidence.latest.generation),
        };
        let expected_records = expected_generation
            .map(|g| expected_answer(&db.records_at(g), &rtype))
            .unwrap_or_default();
        let mut evidence = WireEvidence {
            dns_address: address,
            server: server_ref.and_then(|s| s.config_address),
            server_id: server_ref.and_then(|s| s.id),
            transport,
            record_type: rtype,
            asked_at,
            answer: None,
            soa_serial: None,
            error: None,
            expected_generation,
            expected_records,
            mismatch: None,
        };
        match (answer, soa) {
            (Ok(answer), soa) => {
                let mut problems = Vec::new();
                match soa {
                    Ok(soa) if soa.soa_serial.is_some() => evidence.soa_serial = soa.soa_serial,
                    Ok(soa) => problems
                        .push(format!("the zone's SOA came back without a serial ({})", soa.rcode)),
                    Err(e) => problems.push(format!(
                        "the zone's SOA could not be asked: {}",
                        dns_types::error_chain(&e)
                    )),
                }
                problems.extend(compare_wire(&evidence, &answer, &fqdn));
                evidence.mismatch = (!problems.is_empty()).then(|| problems.join("; "));
                evidence.answer = Some(answer);
            }
            (Err(e), _) => evidence.error = Some(dns_types::error_chain(&e)),
        }
        wire_evidence.push(evidence);
    }
    findings.extend(wire_findings(&wire_evidence, &servers, &db.evidence));

    findings.sort_by_key(|f| f.stage);
    let verdict = match findings.first() {
        Some(first) => Verdict { stage: first.stage, summary: first.summary.clone() },
        None => Verdict {
            stage: Stage::Healthy,
            summary: healthy_summary(&db.evidence, &nexus, &servers, &wire_evidence),
        },
    };
    Ok(Report { verdict, findings, database: db.evidence, nexus, servers, wire: wire_evidence })
}

async fn read_database(
    args: &ExplainArgs,
    discovery: &Discovery,
    datastore: &Datastore,
) -> anyhow::Result<DbView> {
    let mut zones = datastore.dns_zones().await.context("reading the DNS zones")?;
    // Longest suffix first: the most specific zone wins.
    zones.sort_by_key(|z| std::cmp::Reverse(z.zone_name.len()));
    let zone_names: Vec<&str> = zones.iter().map(|z| z.zone_name.as_str()).collect();
    let absolute =
        if args.name.ends_with('.') { args.name.clone() } else { format!("{}.", args.name) };
    let (index, name) =
        dns_types::names::resolve_in_zones(&absolute, &zone_names).map_err(|e| {
            anyhow!(
                "{:?} is in no zone served here ({e}); zones: {}",
                args.name,
                zone_names.join(", ")
            )
        })?;
    let zone = zones[index].clone();
    let group = zone.group;
    let fqdn =
        if name == "@" { zone.zone_name.clone() } else { format!("{name}.{}", zone.zone_name) };
    let (latest, stretches) = futures::try_join!(
        async { datastore.dns_config_read(group, None).await.context("reading the latest config") },
        async {
            datastore
                .dns_name_history(&zone.zone_name, &name)
                .await
                .context("reading the name's history")
        },
    )?;
    let internal: DnsConfig = if group == DnsGroup::Internal {
        latest.clone()
    } else {
        datastore
            .dns_config_read(DnsGroup::Internal, None)
            .await
            .context("reading the internal DNS config (where servers are registered)")?
    };
    let registered_servers =
        registered_instances(&internal, &discovery.zone, ServiceName::dns_servers_of(group))
            .iter()
            .filter_map(|i| i.socket_addr())
            .collect();
    let records = latest
        .zones
        .iter()
        .find(|z| z.zone_name == zone.zone_name)
        .and_then(|z| z.names.get(&name))
        .cloned()
        .unwrap_or_default();
    let records_since =
        stretches.iter().find(|s| s.covers(latest.generation)).map(|s| s.added.clone());
    let never_existed = stretches.is_empty();
    let near = if records.is_empty() {
        let names = datastore.dns_zone_live_names(&zone.zone_name).await.unwrap_or_default();
        near_misses(&name, names.iter().map(String::as_str), 5)
            .into_iter()
            .map(|n| format!("{n}.{}", zone.zone_name))
            .collect()
    } else {
        Vec::new()
    };
    let latest_digest = dns_types::config_digest(&latest);
    let mut digests = BTreeMap::new();
    digests.insert(latest.generation, latest_digest.clone());
    let evidence = DatabaseEvidence {
        group,
        zone: zone.zone_name.clone(),
        name,
        fqdn,
        record_type: args.rtype.as_ref().map(|t| t.to_ascii_uppercase()),
        latest: DnsVersion {
            group,
            generation: latest.generation,
            time_created: latest.time_created,
            creator: latest.creator.clone(),
            comment: latest.comment.clone(),
        },
        latest_digest,
        records,
        records_since,
        history: name_events(&stretches),
        never_existed,
        near_misses: near,
        registered_servers,
        internal_generation: internal.generation,
    };
    Ok(DbView { evidence, stretches, digests })
}

/// The record types to ask over the wire.
fn question_types(args: &ExplainArgs, db: &DbView) -> Vec<String> {
    if let Some(t) = &args.rtype {
        return vec![t.to_ascii_uppercase()];
    }
    let mut types: BTreeSet<String> = BTreeSet::new();
    for stretch in &db.stretches {
        if stretch.covers(db.evidence.latest.generation) || stretch.removed.is_none() {
            types.extend(stretch.records.iter().map(|r| r.type_name().to_string()));
        }
    }
    if types.is_empty() {
        types.insert("A".into());
    }
    types.into_iter().collect()
}

/// The answer-section records the owner name should have for `rtype`,
/// given its records: a CNAME stands for every type.
fn expected_answer(records: &[DnsRecord], rtype: &str) -> Vec<DnsRecord> {
    if let Some(cname) = records.iter().find(|r| matches!(r, DnsRecord::Cname(_))) {
        return vec![cname.clone()];
    }
    let mut expected: Vec<DnsRecord> =
        records.iter().filter(|r| r.type_name() == rtype).cloned().collect();
    expected.sort();
    expected
}

/// Why a wire answer differs from what the server's generation holds.
fn compare_wire(evidence: &WireEvidence, answer: &WireAnswer, fqdn: &str) -> Option<String> {
    let mut problems = Vec::new();
    if let (Some(by), Some(own)) = (&answer.answered_by, evidence.server_id)
        && *by != own.to_string()
    {
        problems.push(format!("from server id {by} (its NSID), not from this server (id {own})"));
    }
    if !answer.authoritative {
        problems.push("without the AA flag".to_string());
    }
    if answer.rcode != "NOERROR" && answer.rcode != "NXDOMAIN" {
        problems.push(format!("with {}", answer.rcode));
    }
    let mut got: Vec<DnsRecord> =
        answer.answers.iter().filter(|r| r.owner == fqdn).map(|r| r.record.clone()).collect();
    got.sort();
    if answer.rcode == "NOERROR" || answer.rcode == "NXDOMAIN" {
        if got != evidence.expected_records {
            problems.push(format!(
                "with {} where generation {} holds {}",
                records_text(&got),
                evidence.expected_generation.map(|g| g.to_string()).unwrap_or("?".into()),
                records_text(&evidence.expected_records)
            ));
        } else if !evidence.expected_records.is_empty() && answer.rcode != "NOERROR" {
            problems.push(format!("{} for a name that exists", answer.rcode));
        }
    }
    if let (Some(serial), Some(generation)) = (evidence.soa_serial, evidence.expected_generation)
        && u64::from(serial) != generation
    {
        problems
            .push(format!("SOA serial {serial} where the server reports generation {generation}"));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

fn records_text(records: &[DnsRecord]) -> String {
    if records.is_empty() {
        return "no records".into();
    }
    records.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
}

fn when(version: &DnsVersion) -> String {
    format!(
        "generation {} ({}, by {}: {:?})",
        version.generation,
        timestamp(version.time_created),
        version.creator,
        version.comment
    )
}

fn database_findings(db: &DatabaseEvidence) -> Vec<Finding> {
    let subject = db.fqdn.clone();
    let latest = format!(
        "{} DNS generation {} (latest, {})",
        db.group,
        db.latest.generation,
        timestamp(db.latest.time_created)
    );
    if db.records.is_empty() {
        let summary = if db.never_existed {
            let near = if db.near_misses.is_empty() {
                String::new()
            } else {
                format!("; similar names: {}", db.near_misses.join(", "))
            };
            format!("{subject} is not in {latest} and never existed in any generation{near}")
        } else {
            let removed = db.history.iter().rev().find(|e| e.kind == NameEventKind::Removed);
            match removed {
                Some(e) => format!(
                    "{subject} is not in {latest}: it was removed in {} (it had {})",
                    when(&e.version),
                    records_text(&e.records_before)
                ),
                None => format!("{subject} is not in {latest}"),
            }
        };
        return vec![Finding { stage: Stage::Database, subject, summary }];
    }
    if let Some(rtype) = &db.record_type {
        let has_cname = db.records.iter().any(|r| matches!(r, DnsRecord::Cname(_)));
        if !has_cname && !db.records.iter().any(|r| r.type_name() == rtype) {
            return vec![Finding {
                stage: Stage::Database,
                subject: subject.clone(),
                summary: format!(
                    "{subject} has no {rtype} records in {latest}; it has {}",
                    records_text(&db.records)
                ),
            }];
        }
    }
    Vec::new()
}

fn nexus_label(n: &NexusEvidence) -> String {
    match n.id {
        Some(id) => format!("{id} ({})", n.url),
        None => n.url.clone(),
    }
}

async fn ask_nexus(url: &str, group: DnsGroup) -> NexusEvidence {
    let client = nexus_client::Client::new_with_client(url, http_client());
    let mut evidence = NexusEvidence { url: url.to_string(), ..Default::default() };
    let (status, tasks) = futures::join!(client.status_get().send(), client.bgtask_list().send());
    let tasks = match (status, tasks) {
        (Ok(status), Ok(tasks)) => {
            evidence.id = Some(status.into_inner().id);
            tasks.into_inner()
        }
        (Err(e), _) | (_, Err(e)) => {
            evidence.error = Some(format!("could not be asked: {}", dns_types::error_chain(&e)));
            return evidence;
        }
    };
    for name in DnsTaskName::of_group(group) {
        let Some(task) = tasks.get(&name.to_string()) else {
            evidence.error = Some(format!("has no task {name}"));
            continue;
        };
        match DnsTaskView::of(task) {
            DnsTaskView::Config { status, error, started_at } => {
                evidence.config = Some(ConfigEvidence {
                    generation: status.as_ref().map(|s| s.generation),
                    digest: status.as_ref().map(|s| s.digest.clone()),
                    first_seen_at: status.as_ref().map(|s| s.first_seen_at),
                    checked_at: started_at,
                    error,
                });
            }
            DnsTaskView::Servers { status, error, started_at } => {
                evidence.server_list = Some(ServerListEvidence {
                    servers: status
                        .as_ref()
                        .map(|s| s.servers.iter().map(|e| e.address).collect())
                        .unwrap_or_default(),
                    discovered_at: status.as_ref().map(|s| s.discovered_at),
                    checked_at: started_at,
                    error,
                });
            }
            DnsTaskView::Propagation { status, waiting, error, started_at, running } => {
                let mut p = PropagationEvidence {
                    started_at,
                    error,
                    waiting_for: waiting.map(|w| w.waiting_for).unwrap_or_default(),
                    ..Default::default()
                };
                if let Some(status) = status {
                    p.generation = Some(status.generation);
                    p.all_done_at = Some(status.all_done_at);
                    p.servers = status.servers;
                }
                if let Some((since, progress)) = running {
                    p.running_since = Some(since);
                    if let Some(progress) = progress {
                        p.running_generation = Some(progress.generation);
                        p.pending = progress.pending;
                    }
                }
                evidence.propagation = Some(p);
            }
            DnsTaskView::Other => {}
        }
    }
    evidence
}

fn nexus_findings(
    nexus: &[NexusEvidence],
    db: &DatabaseEvidence,
    stuck_after: u64,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let latest = db.latest.generation;
    let registered: BTreeSet<SocketAddr> = db.registered_servers.iter().copied().collect();
    for n in nexus {
        let subject = format!("Nexus {}", nexus_label(n));
        if let Some(error) = &n.error {
            findings.push(Finding {
                stage: Stage::Nexus,
                subject: subject.clone(),
                summary: format!("{subject} {error}"),
            });
            continue;
        }
        match &n.config {
            None => findings.push(Finding {
                stage: Stage::Nexus,
                subject: subject.clone(),
                summary: format!("{subject} has not loaded any {} DNS config yet", db.group),
            }),
            Some(c) => {
                let checked = c.checked_at.map(timestamp).unwrap_or_else(|| "never".into());
                if let Some(error) = &c.error {
                    findings.push(Finding {
                        stage: Stage::Nexus,
                        subject: subject.clone(),
                        summary: format!(
                            "{subject} could not read the database at {checked}: {error} \
                             (it still propagates generation {})",
                            c.generation.map(|g| g.to_string()).unwrap_or("none".into())
                        ),
                    });
                } else if c.generation == Some(latest)
                    && c.digest.as_deref() != Some(db.latest_digest.as_str())
                {
                    findings.push(Finding {
                        stage: Stage::Nexus,
                        subject: subject.clone(),
                        summary: format!(
                            "{subject} holds generation {latest} with digest {}, but the \
                             database's generation {latest} has digest {} (checked {checked})",
                            c.digest.as_deref().unwrap_or("none"),
                            db.latest_digest
                        ),
                    });
                } else if c.generation.is_some_and(|g| g < latest) {
                    findings.push(Finding {
                        stage: Stage::Nexus,
                        subject: subject.clone(),
                        summary: format!(
                            "{subject} last found generation {} (first seen {}, checked {checked}), \
                             but the database's latest is {latest}, created {} by {}",
                            c.generation.unwrap_or_default(),
                            c.first_seen_at.map(timestamp).unwrap_or_default(),
                            timestamp(db.latest.time_created),
                            db.latest.creator
                        ),
                    });
                }
            }
        }
        match &n.server_list {
            Some(list) if list.error.is_some() => findings.push(Finding {
                stage: Stage::ServerList,
                subject: subject.clone(),
                summary: format!(
                    "{subject} could not look up the {} DNS servers at {}: {}",
                    db.group,
                    list.checked_at.map(timestamp).unwrap_or_default(),
                    list.error.as_deref().unwrap_or_default()
                ),
            }),
            Some(list) => {
                let listed: BTreeSet<SocketAddr> = list.servers.iter().copied().collect();
                let found = list.discovered_at.map(timestamp).unwrap_or_default();
                for missing in registered.difference(&listed) {
                    findings.push(Finding {
                        stage: Stage::ServerList,
                        subject: missing.to_string(),
                        summary: format!(
                            "{db_group} DNS server {missing} is registered in internal generation {gen} \
                             but is not in {subject}'s server list (list found {found}, checked {})",
                            list.checked_at.map(timestamp).unwrap_or_default(),
                            db_group = db.group,
                            gen = db.internal_generation,
                        ),
                    });
                }
                for extra in listed.difference(&registered) {
                    findings.push(Finding {
                        stage: Stage::ServerList,
                        subject: extra.to_string(),
                        summary: format!(
                            "{subject} lists {extra} among the {} DNS servers (list found {found}), \
                             but internal generation {} does not register it",
                            db.group, db.internal_generation
                        ),
                    });
                }
            }
            None => findings.push(Finding {
                stage: Stage::ServerList,
                subject: subject.clone(),
                summary: format!("{subject} has no {} DNS server list yet", db.group),
            }),
        }
        if let Some(p) = &n.propagation {
            if let Some(since) = p.running_since {
                let running_for = (Utc::now() - since).to_std().unwrap_or_default();
                if running_for > Duration::from_secs(stuck_after) {
                    findings.push(Finding {
                        stage: Stage::Propagation,
                        subject: subject.clone(),
                        summary: format!(
                            "{subject}'s propagation of generation {} has been running since {} \
                             ({}s), still waiting on {}",
                            p.running_generation.map(|g| g.to_string()).unwrap_or("?".into()),
                            timestamp(since),
                            running_for.as_secs(),
                            if p.pending.is_empty() {
                                "nothing reported".into()
                            } else {
                                p.pending.join(", ")
                            }
                        ),
                    });
                }
            }
            if let Some(error) = &p.error {
                findings.push(Finding {
                    stage: Stage::Propagation,
                    subject: subject.clone(),
                    summary: format!(
                        "{subject}'s last propagation failed at {}: {error}",
                        p.started_at.map(timestamp).unwrap_or_default()
                    ),
                });
            }
            if !p.waiting_for.is_empty() {
                findings.push(Finding {
                    stage: Stage::Propagation,
                    subject: subject.clone(),
                    summary: format!(
                        "{subject} has not propagated yet: waiting for {}",
                        p.waiting_for.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            for (address, result) in &p.servers {
                if result.result == PropagationResult::Error && !result.outcome.is_server_fault() {
                    let history = &result.history;
                    let since = match history.failing_since {
                        Some(t) if history.consecutive_failures > 1 => format!(
                            " (failing since {}, {} attempts in a row)",
                            timestamp(t),
                            history.consecutive_failures
                        ),
                        _ => String::new(),
                    };
                    findings.push(Finding {
                        stage: Stage::Propagation,
                        subject: address.clone(),
                        summary: format!(
                            "{subject}'s push of generation {} to {address} failed at {}: {}{since}",
                            p.generation.unwrap_or_default(),
                            timestamp(result.completed_at),
                            result.message
                        ),
                    });
                }
            }
        }
    }
    findings
}

fn server_findings(servers: &[ServerEvidence], db: &DatabaseEvidence) -> Vec<Finding> {
    let mut findings = Vec::new();
    let latest = &db.latest;
    for s in servers {
        let address = s.config_address.map(|a| a.to_string()).unwrap_or_default();
        let name = match s.id {
            Some(id) => format!("{} DNS server {address} (id {id})", db.group),
            None => format!("{} DNS server {address}", db.group),
        };
        if let Some(error) = &s.error {
            findings.push(Finding {
                stage: Stage::Propagation,
                subject: address.clone(),
                summary: format!("{name} does not answer on its config API: {error}"),
            });
            continue;
        }
        if s.dns_addresses.is_empty() {
            // Nothing to ask over the wire: never count it as answering.
            findings.push(Finding {
                stage: Stage::Wire,
                subject: address.clone(),
                summary: format!(
                    "{name} reports no DNS address, so what it answers could not be checked"
                ),
            });
        }
        let applied = s.time_applied.map(timestamp).unwrap_or_else(|| "never".into());
        let generation = s.generation.unwrap_or_default();
        let summary = match &s.state {
            Some(SyncState::Behind { by }) => Some((
                Stage::Propagation,
                format!(
                    "{name} serves generation {generation} (applied {applied}), {by} behind the \
                     database's latest {} created {}",
                    latest.generation,
                    timestamp(latest.time_created)
                ),
            )),
            Some(SyncState::Empty) => Some((
                Stage::Propagation,
                format!(
                    "{name} has no config at all; the database's latest is {}",
                    latest.generation
                ),
            )),
            Some(SyncState::BeyondDatabase { database_latest }) => Some((
                Stage::Server,
                format!(
                    "{name} claims generation {generation} (applied {applied}), which the database \
                     does not have (latest is {database_latest})"
                ),
            )),
            Some(SyncState::Diverged) => Some((
                Stage::Server,
                format!(
                    "{name} serves generation {generation} (applied {applied}) with digest {}, but \
                     the database's generation {generation} has digest {}",
                    s.digest.as_deref().unwrap_or("none"),
                    s.database_digest.as_deref().unwrap_or("unknown")
                ),
            )),
            Some(SyncState::AheadOfWanted { .. }) | Some(SyncState::Current) | None => None,
        };
        if let Some((stage, summary)) = summary {
            findings.push(Finding { stage, subject: address, summary });
        }
    }
    findings
}

fn wire_findings(
    wire: &[WireEvidence],
    servers: &[ServerEvidence],
    db: &DatabaseEvidence,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut unknown_noted = BTreeSet::new();
    for w in wire {
        let who = match (w.server, w.server_id) {
            (Some(api), Some(id)) => format!("server {id} (config API {api})"),
            (Some(api), None) => format!("server with config API {api}"),
            _ => "no known server".into(),
        };
        let question = format!("{} {}", db.fqdn, w.record_type);
        if w.server.is_none() {
            // Given with --server and reported by no server as its own.
            if unknown_noted.insert(w.dns_address) {
                let answered = w.answer.is_some();
                findings.push(Finding {
                    stage: Stage::ServerList,
                    subject: w.dns_address.to_string(),
                    summary: if answered {
                        format!(
                            "DNS at {} answers (asked {} over {} at {}: {}) but no {} DNS server \
                             known to the database or any Nexus reports it as its address: it is \
                             registered nowhere and receives no propagation",
                            w.dns_address,
                            question,
                            w.transport,
                            timestamp(w.asked_at),
                            w.answer.as_ref().map(|a| a.rcode.as_str()).unwrap_or_default(),
                            db.group
                        )
                    } else {
                        format!(
                            "DNS at {} does not answer ({}) and no known {} DNS server reports it as \
                             its address",
                            w.dns_address,
                            w.error.as_deref().unwrap_or_default(),
                            db.group
                        )
                    },
                });
            }
            continue;
        }
        let server_fault = servers
            .iter()
            .find(|s| s.config_address == w.server)
            .and_then(|s| s.state.as_ref())
            .is_some_and(|s| !s.is_current() && !matches!(s, SyncState::Behind { .. }));
        if let Some(error) = &w.error {
            findings.push(Finding {
                stage: Stage::Wire,
                subject: w.dns_address.to_string(),
                summary: format!(
                    "DNS at {} ({who}) did not answer {question} over {} at {}: {error}",
                    w.dns_address,
                    w.transport,
                    timestamp(w.asked_at)
                ),
            });
        } else if let Some(mismatch) = &w.mismatch
            && !server_fault
        {
            findings.push(Finding {
                stage: Stage::Wire,
                subject: w.dns_address.to_string(),
                summary: format!(
                    "DNS at {} ({who}, reporting generation {}) answered {question} over {} at {} {mismatch}",
                    w.dns_address,
                    w.expected_generation.map(|g| g.to_string()).unwrap_or("?".into()),
                    w.transport,
                    timestamp(w.asked_at)
                ),
            });
        }
    }
    findings
}

fn healthy_summary(
    db: &DatabaseEvidence,
    nexus: &[NexusEvidence],
    servers: &[ServerEvidence],
    wire: &[WireEvidence],
) -> String {
    let since = db.records_since.as_ref().map(when).unwrap_or_else(|| "?".into());
    let nexus_ids: Vec<String> =
        nexus.iter().map(|n| n.id.map(|i| i.to_string()).unwrap_or(n.url.clone())).collect();
    let server_names: Vec<String> = servers
        .iter()
        .map(|s| {
            s.dns_addresses
                .first()
                .map(|a| a.to_string())
                .or(s.config_address.map(|a| a.to_string()))
                .unwrap_or_default()
        })
        .collect();
    let last_answer = wire.iter().map(|w| w.asked_at).max().map(timestamp).unwrap_or_default();
    format!(
        "{} has {} since {since}; {} Nexus ({}) have {} generation {}, the latest; {} servers ({}) \
         serve it and answered it on UDP and TCP by {last_answer}",
        db.fqdn,
        records_text(&db.records),
        nexus.len(),
        nexus_ids.join(", "),
        db.group,
        db.latest.generation,
        servers.len(),
        server_names.join(", "),
    )
}

#[derive(tabled::Tabled)]
struct HistoryRow {
    #[tabled(rename = "GEN")]
    generation: u64,
    #[tabled(rename = "CREATED")]
    created: String,
    #[tabled(rename = "CREATOR")]
    creator: String,
    #[tabled(rename = "CHANGE")]
    change: String,
    #[tabled(rename = "RECORDS")]
    records: String,
    #[tabled(rename = "COMMENT")]
    comment: String,
}

pub fn history_rows(events: &[NameEvent]) -> String {
    let rows = events.iter().map(|e| HistoryRow {
        generation: e.version.generation,
        created: timestamp(e.version.time_created),
        creator: e.version.creator.clone(),
        change: match e.kind {
            NameEventKind::Added => "added".into(),
            NameEventKind::Changed => "changed".into(),
            NameEventKind::Removed => "removed".into(),
        },
        records: match e.kind {
            NameEventKind::Removed => format!("(had {})", records_text(&e.records_before)),
            _ => records_text(&e.records_after),
        },
        comment: format!("{:?}", e.version.comment),
    });
    table(rows, 4)
}

#[derive(tabled::Tabled)]
struct ServerRow {
    #[tabled(rename = "CONFIG_API")]
    api: String,
    #[tabled(rename = "ID")]
    id: String,
    #[tabled(rename = "DNS")]
    dns: String,
    #[tabled(rename = "GEN")]
    generation: String,
    #[tabled(rename = "STATE")]
    state: String,
    #[tabled(rename = "APPLIED")]
    applied: String,
    #[tabled(rename = "KNOWN_FROM")]
    known_from: String,
}

#[derive(tabled::Tabled)]
struct WireRow {
    #[tabled(rename = "DNS_ADDR")]
    address: String,
    #[tabled(rename = "VIA")]
    transport: String,
    #[tabled(rename = "Q")]
    qtype: String,
    #[tabled(rename = "RCODE")]
    rcode: String,
    #[tabled(rename = "AA")]
    aa: String,
    #[tabled(rename = "SERIAL")]
    serial: String,
    #[tabled(rename = "NSID")]
    answered_by: String,
    #[tabled(rename = "ANSWER")]
    answer: String,
    #[tabled(rename = "MATCHES")]
    matches: String,
}

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "verdict: {}: {}", report.verdict.stage.as_str(), report.verdict.summary);
    if report.findings.is_empty() {
        let _ = writeln!(out, "findings: none (every stage below was checked)");
    } else {
        let _ = writeln!(out, "findings ({}):", report.findings.len());
        for f in &report.findings {
            let _ = writeln!(out, "  [{}] {}", f.stage.as_str(), f.summary);
        }
    }
    let db = &report.database;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "database: {} in zone {} ({} DNS), latest generation {} created {} by {}: {:?}",
        db.fqdn,
        db.zone,
        db.group,
        db.latest.generation,
        timestamp(db.latest.time_created),
        db.latest.creator,
        db.latest.comment
    );
    if db.records.is_empty() {
        let _ = writeln!(out, "  records now: none");
    } else {
        let _ = writeln!(
            out,
            "  records now: {} (since {})",
            records_text(&db.records),
            db.records_since.as_ref().map(when).unwrap_or_default()
        );
    }
    if db.never_existed {
        let _ = writeln!(out, "  history: never existed in any generation");
        if !db.near_misses.is_empty() {
            let _ = writeln!(out, "  similar names now: {}", db.near_misses.join(", "));
        }
    } else {
        let _ = writeln!(out, "  history:");
        let _ = writeln!(out, "{}", history_rows(&db.history));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "nexus ({} found in DNS):", report.nexus.len());
    for n in &report.nexus {
        let _ = writeln!(out, "  Nexus {}", nexus_label(n));
        if let Some(error) = &n.error {
            let _ = writeln!(out, "    NOT ASKED: {error}");
            continue;
        }
        if let Some(c) = &n.config {
            let _ = writeln!(
                out,
                "    config: generation {} (first seen {}, checked {}){}",
                c.generation.map(|g| g.to_string()).unwrap_or("none".into()),
                c.first_seen_at.map(timestamp).unwrap_or("-".into()),
                c.checked_at.map(timestamp).unwrap_or("-".into()),
                c.error.as_ref().map(|e| format!("; ERROR: {e}")).unwrap_or_default()
            );
        }
        if let Some(l) = &n.server_list {
            let _ = writeln!(
                out,
                "    servers: {} (list found {}, checked {}){}",
                l.servers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
                l.discovered_at.map(timestamp).unwrap_or("-".into()),
                l.checked_at.map(timestamp).unwrap_or("-".into()),
                l.error.as_ref().map(|e| format!("; ERROR: {e}")).unwrap_or_default()
            );
        }
        if let Some(p) = &n.propagation {
            if let Some(since) = p.running_since {
                let _ = writeln!(
                    out,
                    "    propagation running since {}: generation {}, pending {}",
                    timestamp(since),
                    p.running_generation.map(|g| g.to_string()).unwrap_or("?".into()),
                    p.pending.join(", ")
                );
            }
            if let Some(error) = &p.error {
                let _ = writeln!(out, "    last propagation: ERROR: {error}");
            }
            if !p.waiting_for.is_empty() {
                let _ = writeln!(
                    out,
                    "    last propagation: waiting for {}",
                    p.waiting_for.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
                );
            }
            if let Some(generation) = p.generation {
                let _ = writeln!(
                    out,
                    "    last push: generation {generation}, all done by {}",
                    p.all_done_at.map(timestamp).unwrap_or_default()
                );
                for (address, r) in &p.servers {
                    let _ = writeln!(
                        out,
                        "      {address}: {} at {}: {}",
                        if r.result == PropagationResult::Success { "success" } else { "ERROR" },
                        timestamp(r.completed_at),
                        r.message
                    );
                }
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "servers ({}):", report.servers.len());
    let rows = report.servers.iter().map(|s| ServerRow {
        api: s.config_address.map(|a| a.to_string()).unwrap_or("-".into()),
        id: s.id.map(|i| i.to_string()).unwrap_or("-".into()),
        dns: s.dns_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
        generation: s.generation.map(|g| g.to_string()).unwrap_or("-".into()),
        state: match (&s.state, &s.error) {
            (_, Some(e)) => format!("UNREACHABLE: {e}"),
            (Some(state), _) => state.to_string(),
            (None, None) => "-".into(),
        },
        applied: s.time_applied.map(timestamp).unwrap_or("-".into()),
        known_from: s.known_from.join("; "),
    });
    let _ = writeln!(out, "{}", table(rows, 4));
    let _ = writeln!(out);
    let _ = writeln!(out, "wire ({} questions):", report.wire.len());
    let rows = report.wire.iter().map(|w| WireRow {
        address: w.dns_address.to_string(),
        transport: w.transport.to_string(),
        qtype: w.record_type.clone(),
        rcode: w.answer.as_ref().map(|a| a.rcode.clone()).unwrap_or("-".into()),
        aa: w
            .answer
            .as_ref()
            .map(|a| if a.authoritative { "yes" } else { "no" }.into())
            .unwrap_or("-".into()),
        serial: w.soa_serial.map(|s| s.to_string()).unwrap_or("-".into()),
        answered_by: w
            .answer
            .as_ref()
            .and_then(|a| a.answered_by.clone())
            .unwrap_or_else(|| "-".into()),
        answer: match (&w.answer, &w.error) {
            (_, Some(e)) => format!("NO ANSWER: {e}"),
            (Some(a), _) => records_text(
                &a.answers
                    .iter()
                    .filter(|r| r.owner == db.fqdn)
                    .map(|r| r.record.clone())
                    .collect::<Vec<_>>(),
            ),
            (None, None) => "-".into(),
        },
        matches: if w.error.is_some() {
            "-".into()
        } else if let Some(m) = &w.mismatch {
            format!("NO: {m}")
        } else {
            match w.expected_generation {
                Some(g) => format!("yes (generation {g})"),
                None => "yes".into(),
            }
        },
    });
    let _ = writeln!(out, "{}", table(rows, 4));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_order_and_exit_codes_follow_the_pipeline() {
        let stages = [
            Stage::Database,
            Stage::Nexus,
            Stage::ServerList,
            Stage::Propagation,
            Stage::Server,
            Stage::Wire,
        ];
        for pair in stages.windows(2) {
            assert!(pair[0] < pair[1]);
            assert_eq!(pair[0].exit_code() + 1, pair[1].exit_code());
        }
        assert_eq!(Stage::Healthy.exit_code(), 0);
        assert_eq!(serde_json::to_value(Stage::ServerList).unwrap(), "server-list");
    }

    #[test]
    fn a_server_with_no_dns_address_is_never_counted_as_answering() {
        let version = DnsVersion {
            group: DnsGroup::External,
            generation: 4,
            time_created: Utc::now(),
            creator: "c".into(),
            comment: "c".into(),
        };
        let db = DatabaseEvidence {
            group: DnsGroup::External,
            zone: "example.test".into(),
            name: "shop".into(),
            fqdn: "shop.example.test".into(),
            record_type: None,
            latest: version,
            latest_digest: "d4".into(),
            records: vec![],
            records_since: None,
            history: vec![],
            never_existed: false,
            near_misses: vec![],
            registered_servers: vec![],
            internal_generation: 1,
        };
        let server = ServerEvidence {
            config_address: Some("127.0.0.1:1".parse().unwrap()),
            known_from: vec![],
            id: None,
            dns_addresses: vec![],
            generation: Some(4),
            digest: Some("d4".into()),
            time_applied: Some(Utc::now()),
            database_digest: Some("d4".into()),
            state: Some(SyncState::Current),
            error: None,
        };
        let findings = server_findings(&[server], &db);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].stage, Stage::Wire);
        assert!(findings[0].summary.contains("could not be checked"), "{findings:?}");
    }

    #[test]
    fn a_cname_stands_for_every_type() {
        let cname = DnsRecord::Cname("target.example.test".into());
        assert_eq!(expected_answer(std::slice::from_ref(&cname), "A"), vec![cname]);
        let a = DnsRecord::A("192.0.2.1".parse().unwrap());
        let aaaa = DnsRecord::Aaaa("::1".parse().unwrap());
        assert_eq!(expected_answer(&[a.clone(), aaaa], "A"), vec![a]);
        assert!(expected_answer(&[], "A").is_empty());
    }
}
