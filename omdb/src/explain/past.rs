//! `omdb dns explain NAME --at TIME`: every stage as it stood at a past
//! moment, from the histories: what the database held then (the generation
//! that was the latest at TIME, and the name's records in it), which
//! generation each Nexus had loaded (its propagation history), which
//! generation each server served and with what content (its apply
//! history, against the database's digest of that generation).  The same
//! stages, verdict line and exit status as the live command.
//!
//! What the histories cannot tell is said, never guessed: a server whose
//! history does not reach back to TIME, or that cannot be asked now, makes
//! the verdict `unknown` unless another stage is at fault; the wire and the
//! server lists are not kept in history, and a healthy verdict says so.

use super::gather::{Question, nexus_label, resolve_name};
use super::report::*;
use crate::discovery::Discovery;
use crate::format::timestamp;
use crate::history::{
    Generations, NexusHistoryObservation, ServerHistoryObservation, Window, nexus_history,
    server_history,
};
use crate::observe;
use crate::timeline::offset_text;
use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use dns_types::apply_history::{HistoryEntry, ServerEvent, first_serving, served_at};
use dns_types::history::{NameStretch, name_events};
use dns_types::sync::{ServerClaim, SyncState, Wanted, classify};
use dns_types::{DnsGroup, DnsRecord, DnsVersion};
use internal_dns::{ServiceName, registered_instances};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// What was gathered to answer for a past moment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PastObservations {
    pub taken_at: DateTime<Utc>,
    /// The moment asked about.
    pub at: DateTime<Utc>,
    pub question: Question,
    pub group: DnsGroup,
    pub zone: String,
    pub name: String,
    pub fqdn: String,
    /// The generation that was the latest at `at` (first, when there was
    /// one), and those created since, oldest first.
    pub versions: Vec<DnsVersion>,
    pub stretches: Vec<NameStretch>,
    /// The database's digest of each generation a server served at `at`.
    pub digests: BTreeMap<u64, Result<String, String>>,
    pub nexus: Result<Vec<NexusHistoryObservation>, String>,
    pub servers: Vec<ServerHistoryObservation>,
}

/// How many generations after the one current at `at` are read.
const VERSIONS_AFTER: u32 = 1_000;

pub async fn gather(
    question: Question,
    at: DateTime<Utc>,
    discovery: &Discovery,
) -> anyhow::Result<PastObservations> {
    let taken_at = Utc::now();
    let datastore = discovery.datastore().await?;
    let (zone, name) = resolve_name(&question.name, &datastore).await?;
    let group = zone.group;
    let fqdn =
        if name == "@" { zone.zone_name.clone() } else { format!("{name}.{}", zone.zone_name) };
    let (versions, stretches, internal) = futures::try_join!(
        async {
            datastore
                .dns_versions_around(group, at, VERSIONS_AFTER)
                .await
                .context("reading the generations around that time")
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
    let current_then = versions.first().filter(|v| v.time_created <= at).map(|v| v.generation);
    let windows = [
        Window { since: None, until: Some(at), limit: 200 },
        Window { since: Some(at), until: None, limit: 2_000 },
    ];
    // The registered servers are asked beside the Nexus instances (a hung
    // Nexus does not hold them up); servers only a Nexus's pushes name are
    // asked once it has answered.
    let registered: BTreeSet<SocketAddr> =
        registered_instances(&internal, &discovery.zone, ServiceName::dns_servers_of(group))
            .iter()
            .filter_map(|i| i.socket_addr())
            .collect();
    let nexus = async {
        match discovery.all_nexus_urls().await {
            Ok(urls) => {
                let which = Generations {
                    since_generation: current_then.map(|g| g.saturating_sub(1)),
                    limit: 10_000,
                    ..Default::default()
                };
                Ok(futures::future::join_all(urls.iter().map(|u| nexus_history(u, group, which)))
                    .await)
            }
            Err(e) => Err(format!("{e:#}")),
        }
    };
    let (nexus, mut servers) = futures::join!(
        nexus,
        futures::future::join_all(registered.iter().map(|a| server_history(*a, &windows)))
    );
    let pushed_to: BTreeSet<SocketAddr> = nexus
        .iter()
        .flatten()
        .flat_map(|n| n.history.iter().flat_map(|h| &h.generations))
        .flat_map(|record| record.pushes.iter().filter_map(|p| p.server.parse().ok()))
        .filter(|a| !registered.contains(a))
        .collect();
    servers.extend(
        futures::future::join_all(pushed_to.iter().map(|a| server_history(*a, &windows))).await,
    );
    servers.sort_by_key(|s| s.config_address);
    let mut digests = BTreeMap::new();
    if let Some(g) = current_then {
        digests.insert(g, observe::database_digest(&datastore, group, g).await);
    }
    for s in &servers {
        let events = events_of(s);
        if let Some((generation, _)) = served_at(events, at)
            && generation > 0
            && !digests.contains_key(&generation)
        {
            digests
                .insert(generation, observe::database_digest(&datastore, group, generation).await);
        }
    }
    Ok(PastObservations {
        taken_at,
        at,
        question,
        group,
        zone: zone.zone_name,
        name,
        fqdn,
        versions,
        stretches,
        digests,
        nexus,
        servers,
    })
}

fn events_of(s: &ServerHistoryObservation) -> &[HistoryEntry] {
    s.history.as_ref().map(|h| h.events.as_slice()).unwrap_or_default()
}

fn records_at(stretches: &[NameStretch], generation: u64) -> Vec<DnsRecord> {
    stretches.iter().find(|s| s.covers(generation)).map(|s| s.records.clone()).unwrap_or_default()
}

fn records_text(records: &[DnsRecord]) -> String {
    super::findings::records_text(records)
}

/// The report for the moment `o.at`, from the observations alone.
pub fn evaluate(o: &PastObservations) -> Report {
    let at = o.at;
    let when = timestamp(at);
    let in_flight_limit = Duration::seconds(o.question.stuck_after_secs as i64);
    let current = o.versions.first().filter(|v| v.time_created <= at).cloned();
    let mut findings = Vec::new();
    let mut notes = Vec::new();
    let subject = o.fqdn.clone();

    // The database then.
    let Some(current) = current else {
        let summary = format!(
            "at {when} the {} DNS group had no generation yet (its first was created {})",
            o.group,
            o.versions.first().map(|v| timestamp(v.time_created)).unwrap_or("later".into())
        );
        let finding = Finding { stage: Stage::Database, subject, summary };
        return past_report(o, vec![finding], notes, None, Vec::new(), Vec::new());
    };
    let g = current.generation;
    let records = records_at(&o.stretches, g);
    let events = name_events(&o.stretches);
    let apex = o.name == "@";
    let apex_question = |rtype: &str| apex && crate::explain::findings::APEX_TYPES.contains(&rtype);
    if records.is_empty() && !apex {
        let later = events.iter().find(|e| e.version.generation > g && !e.records_after.is_empty());
        let summary = match later {
            Some(e) => format!(
                "at {when} {subject} was not in {} generation {g} (the latest then, created {}); \
                 it was added in generation {} at {}, {} after that moment",
                o.group,
                timestamp(current.time_created),
                e.version.generation,
                timestamp(e.version.time_created),
                offset_text((e.version.time_created - at).num_milliseconds())
                    .trim_start_matches('+')
            ),
            None if o.stretches.is_empty() => format!(
                "at {when} {subject} was not in {} generation {g} (the latest then), and it \
                 never existed in any generation",
                o.group
            ),
            None => format!(
                "at {when} {subject} was not in {} generation {g} (the latest then, created {})",
                o.group,
                timestamp(current.time_created)
            ),
        };
        findings.push(Finding { stage: Stage::Database, subject: subject.clone(), summary });
    } else if let Some(rtype) = &o.question.record_type
        && !apex_question(rtype)
        && !records.iter().any(|r| r.type_name() == rtype || matches!(r, DnsRecord::Cname(_)))
    {
        findings.push(Finding {
            stage: Stage::Database,
            subject: subject.clone(),
            summary: format!(
                "at {when} {subject} had no {rtype} records in generation {g}; it had {}",
                records_text(&records)
            ),
        });
    }
    // Was propagation of `g` still in flight at `at`?
    let in_flight = at - current.time_created < in_flight_limit;

    // Each Nexus then.
    let mut nexus_evidence = Vec::new();
    match &o.nexus {
        Err(e) => notes.push(Note {
            subject: "Nexus".into(),
            summary: format!("no Nexus could be found to ask what it had loaded: {e}"),
            at: None,
        }),
        Ok(found) => {
            for n in found {
                let label = nexus_label(&super::gather::NexusObservation {
                    url: n.url.clone(),
                    id: n.id,
                    ..Default::default()
                });
                let mut evidence =
                    NexusEvidence { url: n.url.clone(), id: n.id, ..Default::default() };
                let Some(history) = &n.history else {
                    let error = n.error.clone().unwrap_or_default();
                    notes.push(Note {
                        subject: format!("Nexus {label}"),
                        summary: format!(
                            "Nexus {label} could not be asked what it had loaded at {when}: {error}"
                        ),
                        at: None,
                    });
                    evidence.error = Some(error);
                    nexus_evidence.push(evidence);
                    continue;
                };
                let loaded = history
                    .generations
                    .iter()
                    .filter(|r| r.first_seen_at.is_some_and(|t| t <= at))
                    .max_by_key(|r| r.generation);
                let seen_g = history.generations.iter().find(|r| r.generation == g);
                evidence.config = Some(ConfigEvidence {
                    generation: loaded.map(|r| r.generation),
                    first_seen_at: loaded.and_then(|r| r.first_seen_at),
                    checked_at: Some(at),
                    ..Default::default()
                });
                let had = loaded.map(|r| r.generation);
                if had.is_none_or(|h| h < g) {
                    let first = seen_g.and_then(|r| r.first_seen_at);
                    let beyond = history.complete_since.is_some_and(|t| t > at) && had.is_none();
                    if beyond {
                        notes.push(Note {
                            subject: format!("Nexus {label}"),
                            summary: format!(
                                "Nexus {label}'s history does not reach back to {when} (it holds \
                                 everything since {})",
                                history.complete_since.map(timestamp).unwrap_or_default()
                            ),
                            at: None,
                        });
                    } else if !in_flight || first.is_none() {
                        findings.push(Finding {
                            stage: Stage::Nexus,
                            subject: format!("Nexus {label}"),
                            summary: format!(
                                "at {when} Nexus {label} had {} generation {g} (created {}); {}",
                                match had {
                                    Some(h) => format!("loaded generation {h}, not"),
                                    None => "not loaded".into(),
                                },
                                timestamp(current.time_created),
                                match first {
                                    Some(t) => format!("it first saw it at {}", timestamp(t)),
                                    None => "it has no record of ever loading it".into(),
                                }
                            ),
                        });
                    }
                }
                nexus_evidence.push(evidence);
            }
        }
    }

    // Each server then.
    let mut servers = Vec::new();
    let mut unknown = Vec::new();
    let changed_for_name = |from: u64| {
        // The latest generation in (from, g] that changed the name.
        events.iter().rev().find(|e| e.version.generation > from && e.version.generation <= g)
    };
    for s in &o.servers {
        let address = s.config_address;
        let id = s.status.as_ref().map(|st| st.id).or(s.history.as_ref().map(|h| h.server_id));
        let who = match id {
            Some(id) => format!("{} DNS server {address} (id {id})", o.group),
            None => format!("{} DNS server {address}", o.group),
        };
        let mut evidence = ServerEvidence {
            config_address: Some(address),
            known_from: vec!["registered now, or pushed to by a Nexus".into()],
            id,
            dns_addresses: s
                .status
                .as_ref()
                .map(|st| observe::socket_addrs(&st.dns_addresses))
                .unwrap_or_default(),
            generation: None,
            digest: None,
            time_applied: None,
            database_digest: None,
            state: None,
            error: s.error.clone(),
            written_by: None,
        };
        let events = events_of(s);
        let Some((served, since)) = served_at(events, at) else {
            let why = match (&s.history, &s.error) {
                (None, Some(e)) => format!("its history could not be read now: {e}"),
                (Some(h), _) => format!(
                    "its history does not reach back to {when} (it holds everything since {})",
                    h.complete_since.map(timestamp).unwrap_or("-".into())
                ),
                (None, None) => "its history could not be read".into(),
            };
            unknown.push(format!("{who}: {why}"));
            servers.push(evidence);
            continue;
        };
        let digest = match &since.event {
            ServerEvent::Applied { digest, .. } => Some(digest.clone()),
            ServerEvent::Started { digest, .. } => digest.clone(),
            _ => None,
        };
        let database_digest = o.digests.get(&served).and_then(|d| d.as_ref().ok()).cloned();
        let Some(wanted_digest) = o.digests.get(&g).and_then(|d| d.as_ref().ok()) else {
            unknown.push(format!(
                "the database's digest of generation {g} could not be read, so what {who} served                  could not be compared with it"
            ));
            servers.push(evidence);
            continue;
        };
        // A generation created after `at` could not be served at `at`:
        // the database then ended at `g`.
        let state = classify(
            ServerClaim { generation: served, digest: digest.as_deref() },
            Wanted {
                generation: g,
                digest: wanted_digest,
                database_latest: Some(g),
                digest_at_server_generation: database_digest.as_deref(),
            },
        );
        evidence.generation = Some(served);
        evidence.digest = digest.clone();
        evidence.time_applied = Some(since.time);
        evidence.database_digest = database_digest.clone();
        evidence.state = Some(state.clone());
        let applied = timestamp(since.time);
        match state {
            SyncState::Behind { .. } | SyncState::Empty => {
                let reached = first_serving(events, g, at);
                let change = changed_for_name(served);
                let records_then = records_at(&o.stretches, served);
                let affected = records_then != records;
                let what = match change {
                    Some(e) => format!(
                        "generation {}, which {} {subject},",
                        e.version.generation,
                        match e.kind {
                            dns_types::history::NameEventKind::Added => "added",
                            dns_types::history::NameEventKind::Changed => "changed",
                            dns_types::history::NameEventKind::Removed => "removed",
                        }
                    ),
                    None => format!("generation {g}"),
                };
                let committed =
                    change.map(|e| e.version.time_created).unwrap_or(current.time_created);
                let tail = match reached {
                    Some(r) => format!(
                        "was committed at {} and reached it at {}: the query came {} before \
                         propagation finished",
                        timestamp(committed),
                        timestamp(r.time),
                        offset_text((r.time - at).num_milliseconds()).trim_start_matches('+')
                    ),
                    None => format!(
                        "was committed at {} and had not reached it when checked at {}",
                        timestamp(committed),
                        timestamp(o.taken_at)
                    ),
                };
                let summary = format!(
                    "at {when} {who} still served generation {served} (applied {applied}); {what} {tail}"
                );
                if affected {
                    findings.push(Finding {
                        stage: Stage::Propagation,
                        subject: address.to_string(),
                        summary,
                    });
                } else {
                    notes.push(Note {
                        subject: address.to_string(),
                        summary: format!(
                            "{summary} ({subject} had the same records in generation {served})"
                        ),
                        at: Some(since.time),
                    });
                }
            }
            SyncState::BeyondDatabase { .. } | SyncState::Diverged => {
                let until = events
                    .iter()
                    .filter(|e| e.time > at && e.event.serves().is_some())
                    .min_by_key(|e| (e.time, e.seq));
                let until = match until {
                    Some(e) => match &e.event {
                        ServerEvent::Applied {
                            how: dns_types::apply_history::ApplyHow::Repair,
                            ..
                        } => {
                            format!("until repaired at {}", timestamp(e.time))
                        }
                        _ => format!("until {}", timestamp(e.time)),
                    },
                    None => "and still did when checked".into(),
                };
                findings.push(Finding {
                    stage: Stage::Server,
                    subject: address.to_string(),
                    summary: format!(
                        "at {when} {who} served generation {served} (digest {}), not the database's \
                         ({}), from {applied} {until}",
                        digest.as_deref().unwrap_or("none"),
                        match &database_digest {
                            Some(d) => format!("whose generation {served} has digest {d}"),
                            None => "which has no such generation".into(),
                        }
                    ),
                });
            }
            SyncState::Current | SyncState::AheadOfWanted { .. } => {}
        }
        servers.push(evidence);
    }
    if o.servers.is_empty() {
        findings.push(Finding {
            stage: Stage::ServerList,
            subject: format!("{} DNS servers", o.group),
            summary: format!("no {} DNS server is registered now or was pushed to", o.group),
        });
    }
    for u in &unknown {
        notes.push(Note { subject: "evidence".into(), summary: format!("UNKNOWN: {u}"), at: None });
    }
    notes.push(Note {
        subject: "wire".into(),
        summary:
            "the wire and the server lists are not kept in history: what the servers answered \
                  at that moment is inferred from the generation each served, not asked"
                .into(),
        at: None,
    });
    let healthy = (unknown.is_empty()).then(|| {
        let served: Vec<String> = servers
            .iter()
            .map(|s| {
                format!(
                    "{} since {}",
                    s.config_address.map(|a| a.to_string()).unwrap_or_default(),
                    s.time_applied.map(timestamp).unwrap_or_default()
                )
            })
            .collect();
        format!(
            "at {when} {subject} had {} in {} generation {g} (the latest then, created {} by {}: {:?}); \
             {} served it ({}); every Nexus asked had loaded it; the wire is not kept in \
             history, so answers are inferred, not asked",
            records_text(&records),
            o.group,
            timestamp(current.time_created),
            current.creator,
            current.comment,
            nexus_types::count(servers.len() as u64, "server"),
            served.join(", ")
        )
    });
    let unknown_summary = (!unknown.is_empty()).then(|| {
        format!(
            "the evidence for {when} is incomplete, so no verdict is given: {}",
            unknown.join("; ")
        )
    });
    past_report(o, findings, notes, Some(current), nexus_evidence, servers)
        .with_summary(healthy, unknown_summary)
}

fn past_report(
    o: &PastObservations,
    mut findings: Vec<Finding>,
    notes: Vec<Note>,
    current: Option<DnsVersion>,
    nexus: Vec<NexusEvidence>,
    servers: Vec<ServerEvidence>,
) -> Report {
    findings.sort_by_key(|f| f.stage);
    let latest = current.clone().unwrap_or_else(|| DnsVersion {
        group: o.group,
        generation: 0,
        time_created: o.at,
        creator: String::new(),
        comment: String::new(),
    });
    let records =
        current.as_ref().map(|v| records_at(&o.stretches, v.generation)).unwrap_or_default();
    let records_since = current
        .as_ref()
        .and_then(|v| o.stretches.iter().find(|s| s.covers(v.generation)))
        .map(|s| s.added.clone());
    let verdict = match findings.first() {
        Some(first) => Verdict { stage: first.stage, summary: first.summary.clone() },
        None => Verdict { stage: Stage::Healthy, summary: String::new() },
    };
    Report {
        verdict,
        findings,
        notes,
        at: Some(o.at),
        loss: Vec::new(),
        late: Vec::new(),
        deadline_secs: 0,
        database: DatabaseEvidence {
            group: o.group,
            zone: o.zone.clone(),
            name: o.name.clone(),
            fqdn: o.fqdn.clone(),
            record_type: o.question.record_type.clone(),
            latest,
            latest_digest: String::new(),
            records,
            records_since,
            history: name_events(&o.stretches),
            never_existed: o.stretches.is_empty(),
            near_misses: Vec::new(),
            registered_servers: Vec::new(),
            internal_generation: 0,
            // Replication is not kept in history: a past moment says
            // nothing about it.
            node: None,
            writes: None,
            primary: None,
        },
        nexus,
        servers,
        wire: Vec::new(),
    }
}

impl Report {
    /// Fills in a verdict that no finding gave: unknown when evidence is
    /// missing, else healthy.
    fn with_summary(mut self, healthy: Option<String>, unknown: Option<String>) -> Report {
        if self.findings.is_empty() {
            self.verdict = match (unknown, healthy) {
                (Some(summary), _) => Verdict { stage: Stage::Unknown, summary },
                (None, Some(summary)) => Verdict { stage: Stage::Healthy, summary },
                (None, None) => Verdict { stage: Stage::Unknown, summary: "no evidence".into() },
            };
        }
        self
    }
}
