//! The decisions of `omdb dns explain`: a pure function from what was
//! observed ([`Observations`]) to the report (verdict, findings, notes and
//! the evidence of each stage).  No I/O and no clock: "now" is when the
//! observations were taken, so a bundle read a week later gives the verdict
//! the live command gave.

use super::gather::{DatabaseObservation, NexusObservation, Observations, nexus_label};
use super::report::*;
use crate::format::timestamp;
use crate::observe::{ServerObservation, WireObservation};
use dns_types::history::{NameEventKind, name_events};
use dns_types::sync::{ServerClaim, SyncState, Wanted, classify};
use dns_types::{DnsRecord, DnsVersion};
use internal_dns::wire::WireAnswer;
use nexus_types::task_name::DnsTaskName;
use nexus_types::task_status::{PropagationOutcome, PropagationResult};
use nexus_types::task_view::DnsTaskView;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// The report for `observations`.
pub fn evaluate(observations: &Observations) -> Report {
    let db = database_evidence(observations);
    let mut findings = replication_findings(&db);
    findings.extend(database_findings(&db));
    let nexus: Vec<NexusEvidence> = match &observations.nexus {
        Ok(found) => found.iter().map(|n| nexus_evidence(n, &db)).collect(),
        Err(error) => {
            findings.push(Finding {
                stage: Stage::Nexus,
                subject: "Nexus".into(),
                summary: format!("no Nexus could be found to ask: {error}"),
            });
            Vec::new()
        }
    };
    let stuck_after = Duration::from_secs(observations.question.stuck_after_secs);
    let servers: Vec<ServerEvidence> =
        observations.servers.iter().map(|s| server_evidence(s, &observations.database)).collect();
    let dns_here = dns_from_here(&observations.servers);
    let (nexus_found, mut notes) =
        nexus_findings(&nexus, &db, &servers, &dns_here, observations.taken_at, stuck_after);
    findings.extend(nexus_found);
    notes.extend(nexus_database_notes(&nexus, &db));
    findings.extend(server_findings(&servers, &db));
    notes.extend(recent_notes(observations));
    if servers.is_empty() {
        findings.push(Finding {
            stage: Stage::ServerList,
            subject: format!("{} DNS servers", db.group),
            summary: format!(
                "no {} DNS server is registered in internal generation {} or listed by any Nexus: \
                 nothing serves {}",
                db.group, db.internal_generation, db.fqdn
            ),
        });
    }
    let wire = wire_evidence(observations, &servers);
    // A lossy path first: it explains the questions that went unanswered.
    findings.extend(loss_findings(&observations.loss, &wire, observations.deadline_secs));
    findings.extend(wire_findings(&wire, &servers, &db));

    findings.sort_by_key(|f| f.stage);
    let verdict = match findings.first() {
        Some(first) => Verdict { stage: first.stage, summary: first.summary.clone() },
        None => Verdict {
            stage: Stage::Healthy,
            summary: healthy_summary(&db, &nexus, &servers, &wire),
        },
    };
    Report {
        verdict,
        findings,
        notes,
        at: None,
        database: db,
        nexus,
        servers,
        wire,
        loss: observations.loss.clone(),
        late: crate::observe::late_parts(&observations.servers, &observations.wire),
        deadline_secs: observations.deadline_secs,
    }
}

fn database_evidence(o: &Observations) -> DatabaseEvidence {
    let d: &DatabaseObservation = &o.database;
    let latest = d.latest.generation;
    let current = d.stretches.iter().find(|s| s.covers(latest));
    DatabaseEvidence {
        group: d.group,
        zone: d.zone.clone(),
        name: d.name.clone(),
        fqdn: d.fqdn.clone(),
        record_type: o.question.record_type.as_ref().map(|t| t.to_ascii_uppercase()),
        latest: d.latest.clone(),
        latest_digest: d.latest_digest.clone(),
        records: current.map(|s| s.records.clone()).unwrap_or_default(),
        records_since: current.map(|s| s.added.clone()),
        history: name_events(&d.stretches),
        never_existed: d.stretches.is_empty(),
        near_misses: d.near_misses.clone(),
        registered_servers: d.registered_servers.clone(),
        internal_generation: d.internal_generation,
        node: d.node.clone(),
        writes: d.nodes.as_deref().map(db_model::cluster::writes),
        primary: d
            .nodes
            .as_deref()
            .and_then(db_model::cluster::primary)
            .map(|(node, _)| node.address.clone()),
    }
}

fn nexus_evidence(n: &NexusObservation, db: &DatabaseEvidence) -> NexusEvidence {
    let mut evidence = NexusEvidence {
        url: n.url.clone(),
        id: n.id,
        error: n.error.clone(),
        // Which node a Nexus uses matters only when there are several.
        database_node: db.node.as_ref().and(n.database_node.clone()),
        ..Default::default()
    };
    if n.error.is_some() && n.tasks.is_empty() {
        return evidence;
    }
    for name in DnsTaskName::of_group(db.group) {
        match n.view(name) {
            Some(DnsTaskView::Config { status, error, started_at }) => {
                evidence.config = Some(ConfigEvidence {
                    generation: status.as_ref().map(|s| s.generation),
                    digest: status.as_ref().map(|s| s.digest.clone()),
                    first_seen_at: status.as_ref().map(|s| s.first_seen_at),
                    checked_at: started_at,
                    error,
                });
            }
            Some(DnsTaskView::Servers { status, error, started_at }) => {
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
            Some(DnsTaskView::Propagation { status, waiting, error, started_at, running }) => {
                let period = n.tasks.iter().find(|t| t.name == name.to_string()).map(|t| t.period);
                let mut p = PropagationEvidence {
                    started_at,
                    next_activation_by: started_at
                        .zip(period.and_then(|p| chrono::Duration::from_std(p).ok()))
                        .map(|(t, p)| t + p),
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
            Some(DnsTaskView::Other) | None => {}
        }
    }
    evidence
}

fn server_evidence(s: &ServerObservation, db: &DatabaseObservation) -> ServerEvidence {
    let mut evidence = ServerEvidence {
        config_address: Some(s.config_address),
        known_from: s.known_from.clone(),
        id: None,
        dns_addresses: {
            // What it reports, and what it registered: a server that cannot
            // say (hung, down) is still the owner of its DNS address.
            let mut addresses = s.dns_addresses();
            for registered in db.registered_dns.get(&s.config_address).into_iter().flatten() {
                if !addresses.contains(registered) {
                    addresses.push(*registered);
                }
            }
            addresses
        },
        generation: None,
        digest: None,
        time_applied: None,
        database_digest: None,
        state: None,
        error: s.error.clone(),
        written_by: None,
    };
    if let Some(status) = &s.status {
        use dns_types::apply_history::ServerEvent;
        // Newest first: the apply that made it serve what it serves.
        evidence.written_by =
            s.recent.iter().flat_map(|h| &h.events).find_map(|e| match &e.event {
                ServerEvent::Applied { generation, writer, .. }
                    if *generation == status.generation =>
                {
                    writer.clone()
                }
                _ => None,
            });
        let database_digest =
            db.digests.get(&status.generation).and_then(|d| d.as_ref().ok()).cloned();
        evidence.state = Some(classify(
            ServerClaim {
                generation: status.generation,
                digest: status.applied_config_digest.as_deref(),
            },
            Wanted {
                generation: db.latest.generation,
                digest: &db.latest_digest,
                database_latest: Some(db.latest.generation),
                digest_at_server_generation: database_digest.as_deref(),
            },
        ));
        evidence.id = Some(status.id);
        evidence.generation = Some(status.generation);
        evidence.digest = status.applied_config_digest.clone();
        evidence.time_applied = status.time_applied;
        evidence.database_digest = database_digest;
    }
    evidence
}

fn wire_evidence(o: &Observations, servers: &[ServerEvidence]) -> Vec<WireEvidence> {
    let fqdn = &o.database.fqdn;
    o.wire
        .iter()
        .map(|w: &WireObservation| {
            let owner = servers
                .iter()
                .zip(&o.servers)
                .find(|(s, _)| s.dns_addresses.contains(&w.dns_address));
            let expected_generation = match owner {
                Some((s, _)) => s.generation,
                None => Some(o.database.latest.generation),
            };
            let expected_records = expected_generation
                .map(|g| expected_answer(&records_at(&o.database, g), &w.record_type))
                .unwrap_or_default();
            let soa = match owner {
                Some((_, observed)) => observed.soa_of(w.dns_address, w.transport),
                None => o
                    .unclaimed_soa
                    .iter()
                    .find(|s| s.dns_address == w.dns_address && s.transport == w.transport),
            };
            let mut evidence = WireEvidence {
                dns_address: w.dns_address,
                server: owner.and_then(|(s, _)| s.config_address),
                server_id: owner.and_then(|(s, _)| s.id),
                transport: w.transport,
                record_type: w.record_type.clone(),
                asked_at: w.asked_at,
                answer: w.answer.clone(),
                soa_serial: None,
                error: w.error.clone(),
                expected_generation,
                expected_records,
                mismatch: None,
            };
            if let Some(answer) = &w.answer {
                let mut problems = Vec::new();
                match soa {
                    Some(WireObservation { answer: Some(soa), .. }) if soa.soa_serial.is_some() => {
                        evidence.soa_serial = soa.soa_serial;
                    }
                    Some(WireObservation { answer: Some(soa), .. }) => problems
                        .push(format!("the zone's SOA came back without a serial ({})", soa.rcode)),
                    Some(WireObservation { error: Some(e), .. }) => {
                        problems.push(format!("the zone's SOA could not be asked: {e}"))
                    }
                    _ => problems.push("the zone's SOA was not asked".to_string()),
                }
                problems.extend(compare_wire(&evidence, answer, fqdn));
                evidence.mismatch = (!problems.is_empty()).then(|| problems.join("; "));
            }
            evidence
        })
        .collect()
}

/// Question types whose answers at the apex the servers make themselves
/// (the SOA; ANY draws one RRset, the SOA when the apex has no records).
pub const APEX_TYPES: [&str; 2] = ["SOA", "ANY"];

/// The name's records at `generation`, from its history.
pub fn records_at(db: &DatabaseObservation, generation: u64) -> Vec<DnsRecord> {
    db.stretches
        .iter()
        .find(|s| s.covers(generation))
        .map(|s| s.records.clone())
        .unwrap_or_default()
}

/// The answer-section records the owner name should have for `rtype`,
/// given its records: a CNAME stands for every type.
pub fn expected_answer(records: &[DnsRecord], rtype: &str) -> Vec<DnsRecord> {
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
    // The apex's SOA is made by each server from the zone, and ANY draws
    // one RRset of the server's choosing: nothing in the database to
    // compare them with (the SOA serial is checked below).
    let synthesized = APEX_TYPES.contains(&evidence.record_type.as_str());
    if answer.rcode == "NOERROR" && synthesized {
        let any = answer.answers.iter().any(|r| r.owner == fqdn)
            || (evidence.record_type == "SOA" && answer.soa_serial.is_some())
            || !answer.other_answers.is_empty();
        if !any {
            problems.push(format!("with no {} record", evidence.record_type));
        }
    } else if answer.rcode == "NOERROR" || answer.rcode == "NXDOMAIN" {
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

pub fn records_text(records: &[DnsRecord]) -> String {
    if records.is_empty() {
        return "no records".into();
    }
    records.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
}

pub fn when(version: &DnsVersion) -> String {
    format!(
        "generation {} ({}, by {}: {:?})",
        version.generation,
        timestamp(version.time_created),
        version.creator,
        version.comment
    )
}

/// The database itself, before what it holds: a replicated database that
/// cannot acknowledge a commit now (no primary, or no synchronous standby
/// in strict mode) blocks every change, this name's included.
fn replication_findings(db: &DatabaseEvidence) -> Vec<Finding> {
    match &db.writes {
        Some(writes) if !writes.can_commit => vec![Finding {
            stage: Stage::Database,
            subject: "database".into(),
            summary: format!("{}: no change to {} can be committed now", writes.sentence, db.fqdn),
        }],
        _ => Vec::new(),
    }
}

/// A Nexus whose connections reach a node that is not the primary (it was
/// demoted, or died): a note, not a finding.  Its pool never hands out a
/// connection that broke or was found read-only, so its next database
/// access finds the primary; until then nothing it serves depends on it,
/// and what it would miss (a generation it has not loaded) is a finding of
/// its own.  As a finding it made the verdict `nexus` for names nothing was
/// wrong with, right after every failover (chaos seed 47, steps 254-258).
fn nexus_database_notes(nexus: &[NexusEvidence], db: &DatabaseEvidence) -> Vec<Note> {
    let Some(primary) = &db.primary else { return Vec::new() };
    nexus
        .iter()
        .filter_map(|n| {
            let node = n.database_node.as_ref()?;
            (node != primary).then(|| Note {
                subject: format!("Nexus {}", nexus_evidence_label(n)),
                summary: format!(
                    "Nexus {}'s database connections reach {node}, which is not the primary now \
                     ({primary} is): it reconnects on its next database access",
                    nexus_evidence_label(n)
                ),
                at: None,
            })
        })
        .collect()
}

fn database_findings(db: &DatabaseEvidence) -> Vec<Finding> {
    let subject = db.fqdn.clone();
    let latest = format!(
        "{} DNS generation {} (latest, {})",
        db.group,
        db.latest.generation,
        timestamp(db.latest.time_created)
    );
    if db.name == "@" {
        // The apex always exists: each server makes its SOA from the zone.
        // Only a question for another type, which it lacks, fails.
        return match &db.record_type {
            Some(rtype)
                if !APEX_TYPES.contains(&rtype.as_str())
                    && !db.records.iter().any(|r| r.type_name() == rtype) =>
            {
                vec![Finding {
                    stage: Stage::Database,
                    subject: subject.clone(),
                    summary: format!(
                        "{subject} (the zone's apex) has no {rtype} records in {latest}; it has \
                         its SOA{}",
                        match db.records.is_empty() {
                            true => String::new(),
                            false => format!(", and {}", records_text(&db.records)),
                        }
                    ),
                }]
            }
            _ => Vec::new(),
        };
    }
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

pub fn nexus_evidence_label(n: &NexusEvidence) -> String {
    nexus_label(&NexusObservation { url: n.url.clone(), id: n.id, ..Default::default() })
}

/// Findings about every Nexus, and notes of its failures that later
/// evidence has superseded.
/// What each server's DNS addresses answered omdb (the zone's SOA), by
/// config API address, as a clause: the second half of "from here".
fn dns_from_here(servers: &[ServerObservation]) -> std::collections::BTreeMap<SocketAddr, String> {
    servers
        .iter()
        .filter(|s| !s.soa.is_empty())
        .map(|s| {
            // By address: "A over UDP and TCP".
            let mut by: std::collections::BTreeMap<(bool, SocketAddr), Vec<String>> =
                Default::default();
            for w in &s.soa {
                by.entry((w.answer.is_some(), w.dns_address))
                    .or_default()
                    .push(w.transport.to_string());
            }
            let (mut answered, mut silent) = (Vec::new(), Vec::new());
            for ((ok, address), transports) in by {
                let part = format!("{address} over {}", transports.join(" and "));
                if ok { answered.push(part) } else { silent.push(part) }
            }
            let clause = match (answered.is_empty(), silent.is_empty()) {
                (false, true) => format!(" and so does its DNS ({})", answered.join(", ")),
                (true, false) => format!(", but its DNS does not ({})", silent.join(", ")),
                _ => format!(
                    "; its DNS answers {} but not {}",
                    answered.join(", "),
                    silent.join(", ")
                ),
            };
            (s.config_address, clause)
        })
        .collect()
}

fn nexus_findings(
    nexus: &[NexusEvidence],
    db: &DatabaseEvidence,
    servers: &[ServerEvidence],
    dns_here: &std::collections::BTreeMap<SocketAddr, String>,
    now: chrono::DateTime<chrono::Utc>,
    stuck_after: Duration,
) -> (Vec<Finding>, Vec<Note>) {
    let mut findings = Vec::new();
    let mut notes = Vec::new();
    let latest = db.latest.generation;
    let registered: BTreeSet<SocketAddr> = db.registered_servers.iter().copied().collect();
    for n in nexus {
        let subject = format!("Nexus {}", nexus_evidence_label(n));
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
                let running_for = (now - since).to_std().unwrap_or_default();
                if running_for > stuck_after {
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
                            " (failing since {}, {} in a row)",
                            timestamp(t),
                            nexus_types::count(history.consecutive_failures, "attempt")
                        ),
                        _ => String::new(),
                    };
                    let summary = if result.outcome == PropagationOutcome::InFlight {
                        format!(
                            "{subject}'s push to {address} has had no answer since {}, as of its \
                             propagation of generation {} at {}: {}{since}",
                            result.started_at.map(timestamp).unwrap_or("?".into()),
                            p.generation.unwrap_or_default(),
                            timestamp(result.completed_at),
                            result.message
                        )
                    } else {
                        format!(
                            "{subject}'s push of generation {} to {address} failed at {}: {}{since}",
                            p.generation.unwrap_or_default(),
                            timestamp(result.completed_at),
                            result.message
                        )
                    };
                    // The server is current now (another Nexus, or this
                    // one's retry, brought it there): the failure is past.
                    let now_current = servers.iter().find(|s| {
                        s.config_address.map(|a| a.to_string()).as_deref() == Some(address)
                            && s.state.as_ref().is_some_and(SyncState::is_current)
                    });
                    match now_current {
                        Some(s) => notes.push(Note {
                            subject: address.clone(),
                            summary: format!(
                                "superseded: {summary}; since then {address} was brought to \
                                 generation {}, the database's latest, at {}{}: that failure is \
                                 past ({subject} retries {})",
                                s.generation.unwrap_or_default(),
                                s.time_applied.map(timestamp).unwrap_or("-".into()),
                                match &s.written_by {
                                    Some(w)
                                        if nexus
                                            .iter()
                                            .any(|n| n.id.is_some_and(|i| i.to_string() == *w)) =>
                                    {
                                        format!(" by Nexus {w}")
                                    }
                                    Some(w) => format!(" by {w}"),
                                    None => String::new(),
                                },
                                match p.next_activation_by {
                                    Some(t) => format!("by {}, its next activation", timestamp(t)),
                                    None => "on its next activation".into(),
                                }
                            ),
                            at: Some(result.completed_at),
                        }),
                        None => {
                            // Two vantage points: what this Nexus met, and
                            // what omdb sees from here.
                            let here = servers.iter().find(|s| {
                                s.config_address.map(|a| a.to_string()).as_deref() == Some(address)
                            });
                            let vantage = match here {
                                // Nexus could not reach it; from here it
                                // answers: the path, or Nexus's side.
                                Some(s)
                                    if result.unreachable
                                        && s.error.is_none()
                                        && s.generation.is_some() =>
                                {
                                    format!(
                                        "; from here, {address}'s config API answers (it serves \
                                         generation {}){}: the server is up, so the failure lies \
                                         between {subject} and it (the path, or {subject}'s side)",
                                        s.generation.unwrap_or_default(),
                                        s.config_address
                                            .and_then(|a| dns_here.get(&a))
                                            .map(String::as_str)
                                            .unwrap_or_default()
                                    )
                                }
                                Some(s) if result.unreachable && s.error.is_some() => {
                                    "; from here it does not answer either: the server, or every \
                                     path to it, is down"
                                        .to_string()
                                }
                                Some(_) => String::new(),
                                None => String::new(),
                            };
                            findings.push(Finding {
                                stage: Stage::Propagation,
                                subject: address.clone(),
                                summary: format!("{summary}{vantage}"),
                            })
                        }
                    }
                }
            }
        }
    }
    (findings, notes)
}

/// What the servers' recent histories say that bears on the answer: a
/// repair (what was served before it, and since when), a restart, refused
/// pushes.
fn recent_notes(o: &Observations) -> Vec<Note> {
    use dns_types::apply_history::{ApplyHow, ServerEvent};
    let mut notes = Vec::new();
    for s in &o.servers {
        let Some(history) = &s.recent else { continue };
        let who = format!("{} DNS server {}", o.database.group, s.config_address);
        // Oldest first.
        let events: Vec<_> = history.events.iter().rev().collect();
        let mut refused = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match &e.event {
                ServerEvent::Applied {
                    how: ApplyHow::Repair,
                    replaced_generation,
                    replaced_digest,
                    writer,
                    reason,
                    generation,
                    ..
                } => {
                    let since = events[..i]
                        .iter()
                        .rev()
                        .find(|p| p.event.serves() == Some(*replaced_generation))
                        .map(|p| timestamp(p.time))
                        .unwrap_or_else(|| {
                            format!(
                                "before {}",
                                history.complete_since.map(timestamp).unwrap_or("-".into())
                            )
                        });
                    notes.push(Note {
                        subject: s.config_address.to_string(),
                        summary: format!(
                            "REPAIRED: {who} served generation {replaced_generation} (digest {}), \
                             not the database's, from {since} until repaired at {}{} to the \
                             database's generation {generation}: {}",
                            replaced_digest.as_deref().unwrap_or("none"),
                            timestamp(e.time),
                            writer.as_deref().map(|w| format!(" by {w}")).unwrap_or_default(),
                            reason.as_deref().unwrap_or("no reason given")
                        ),
                        at: Some(e.time),
                    });
                }
                ServerEvent::Started { generation, .. } => {
                    let earlier = i > 0 || history.complete_since.is_some_and(|t| t < e.time);
                    if earlier {
                        notes.push(Note {
                            subject: s.config_address.to_string(),
                            summary: format!(
                                "{who} restarted at {}, serving generation {generation} from its storage",
                                timestamp(e.time)
                            ),
                            at: Some(e.time),
                        });
                    }
                }
                ServerEvent::Refused { .. } => refused.push(*e),
                ServerEvent::StorageFailed { operation, error } => notes.push(Note {
                    subject: s.config_address.to_string(),
                    summary: format!(
                        "{who}'s storage failed at {} {operation}: {error}",
                        timestamp(e.time)
                    ),
                    at: Some(e.time),
                }),
                ServerEvent::Applied { .. } => {}
            }
        }
        if let Some(last) = refused.last()
            && let ServerEvent::Refused { generation, how, writer, error_code, reason, .. } =
                &last.event
        {
            notes.push(Note {
                subject: s.config_address.to_string(),
                summary: format!(
                    "{who} refused {} in the last hour, the latest at {}: generation {generation} \
                     ({how}{}): {error_code}: {reason}",
                    count(refused.len(), "push"),
                    timestamp(last.time),
                    writer.as_deref().map(|w| format!(" from {w}")).unwrap_or_default()
                ),
                at: Some(last.time),
            });
        }
    }
    notes
}

/// `1 push`, `3 pushes`.
fn count(n: usize, noun: &str) -> String {
    let plural = if noun.ends_with('h') || noun.ends_with('s') { "es" } else { "s" };
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}{plural}") }
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

/// A DNS address that answered some of a burst of identical UDP questions
/// and not others loses packets on the way there or back: every client
/// behind that path retries, or fails.  (One that answered none, where the
/// name's own UDP questions went unanswered too, is the wire finding
/// above.)
fn loss_findings(
    probes: &[crate::observe::LossProbe],
    wire: &[WireEvidence],
    deadline_secs: u64,
) -> Vec<Finding> {
    probes
        .iter()
        .filter(|p| {
            let silent = wire.iter().any(|w| {
                w.dns_address == p.dns_address
                    && w.transport == internal_dns::wire::Transport::Udp
                    && w.error.is_some()
            });
            p.answered < p.asked && (p.answered > 0 || !silent)
        })
        .map(|p| {
            let who = wire
                .iter()
                .find(|w| w.dns_address == p.dns_address && w.server.is_some())
                .map(|w| match (w.server, w.server_id) {
                    (Some(api), Some(id)) => format!(" (server {id}, config API {api})"),
                    (Some(api), None) => format!(" (server with config API {api})"),
                    _ => String::new(),
                })
                .unwrap_or_default();
            let lost = p.asked - p.answered;
            Finding {
                stage: Stage::Wire,
                subject: p.dns_address.to_string(),
                summary: format!(
                    "DNS at {}{who} loses packets: of {} identical SOA questions sent over UDP at \
                     {}, {} answered and {lost} got no answer within {deadline_secs}s ({}%); each \
                     lost question is one a client must retry (after its own timeout) or fail",
                    p.dns_address,
                    p.asked,
                    timestamp(p.asked_at),
                    p.answered,
                    lost * 100 / p.asked.max(1)
                ),
            }
        })
        .collect()
}

fn healthy_summary(
    db: &DatabaseEvidence,
    nexus: &[NexusEvidence],
    servers: &[ServerEvidence],
    wire: &[WireEvidence],
) -> String {
    let since = match (&db.records_since, db.name.as_str()) {
        (Some(version), _) => format!(" since {}", when(version)),
        (None, "@") => String::new(),
        (None, _) => " since ?".into(),
    };
    let has = match (db.name.as_str(), db.records.is_empty()) {
        ("@", true) => "its SOA (the zone's apex, made by each server)".to_string(),
        ("@", false) => {
            format!("its SOA (the zone's apex) and {}", records_text(&db.records))
        }
        _ => records_text(&db.records),
    };
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
        "{} has {has}{since}; {} Nexus ({}) {} {} generation {}, the latest; {} ({}) \
         {} it and answered it on UDP and TCP by {last_answer}",
        db.fqdn,
        nexus.len(),
        nexus_ids.join(", "),
        if nexus.len() == 1 { "has" } else { "have" },
        db.group,
        db.latest.generation,
        nexus_types::count(servers.len() as u64, "server"),
        server_names.join(", "),
        if servers.len() == 1 { "serves" } else { "serve" },
    )
}
