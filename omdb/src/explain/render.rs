//! The text rendering of an explain report: the verdict first, then the
//! findings and notes, then every stage's evidence in the order of the
//! pipeline.

use super::findings::{nexus_evidence_label, records_text, when};
use super::report::Report;
use crate::format::{table, timestamp};
use dns_types::history::{NameEvent, NameEventKind};
use nexus_types::task_status::PropagationResult;
use std::fmt::Write;

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
    #[tabled(rename = "DNS_ADDR")]
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
    if report.findings.is_empty() && report.at.is_some() {
        let _ = writeln!(
            out,
            "findings: none (every stage kept in history was checked; see the notes)"
        );
    } else if report.findings.is_empty() {
        let _ = writeln!(out, "findings: none (every stage below was checked)");
    } else {
        let _ = writeln!(out, "findings ({}):", report.findings.len());
        for f in &report.findings {
            let _ = writeln!(out, "  [{}] {}", f.stage.as_str(), f.summary);
        }
    }
    if !report.notes.is_empty() {
        let _ = writeln!(out, "notes ({}):", report.notes.len());
        for n in &report.notes {
            let _ = writeln!(out, "  {}", n.summary);
        }
    }
    let db = &report.database;
    let _ = writeln!(out);
    let latest = match report.at {
        Some(at) => format!("latest generation at {}", timestamp(at)),
        None => "latest generation".to_string(),
    };
    let _ = writeln!(
        out,
        "database: {} in zone {} ({} DNS), {latest} {} created {} by {}: {:?}",
        db.fqdn,
        db.zone,
        db.group,
        db.latest.generation,
        timestamp(db.latest.time_created),
        db.latest.creator,
        db.latest.comment
    );
    if let Some(node) = &db.node {
        let _ = writeln!(out, "  read from node {node} of the replicated database");
    }
    if let Some(writes) = &db.writes {
        let _ = writeln!(out, "  {}", writes.sentence);
    }
    if db.records.is_empty() {
        let _ =
            writeln!(out, "  records {}: none", if report.at.is_some() { "then" } else { "now" });
    } else {
        let _ = writeln!(
            out,
            "  records {}: {} (since {})",
            if report.at.is_some() { "then" } else { "now" },
            records_text(&db.records),
            db.records_since.as_ref().map(when).unwrap_or_default()
        );
    }
    if db.name == "@" {
        let _ = writeln!(
            out,
            "  the zone's apex: its SOA (serial = generation) is made by each server"
        );
    }
    if db.never_existed && db.name != "@" {
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
        let _ = writeln!(out, "  Nexus {}", nexus_evidence_label(n));
        if let Some(error) = &n.error {
            let _ = writeln!(out, "    NOT ASKED: {error}");
            continue;
        }
        if let Some(node) = &n.database_node {
            let _ = writeln!(out, "    database: connected to node {node}");
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
    match report.at {
        Some(at) => {
            let _ = writeln!(
                out,
                "servers ({}), as their histories say they were at {} (APPLIED: serving since):",
                report.servers.len(),
                timestamp(at)
            );
        }
        None => {
            let _ = writeln!(out, "servers ({}):", report.servers.len());
        }
    }
    let rows = report.servers.iter().map(|s| ServerRow {
        api: s.config_address.map(|a| a.to_string()).unwrap_or("-".into()),
        id: s.id.map(|i| i.to_string()).unwrap_or("-".into()),
        dns: s.dns_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
        generation: s.generation.map(|g| g.to_string()).unwrap_or("-".into()),
        state: match (&s.state, &s.error) {
            (_, Some(_)) => "UNREACHABLE (see findings)".into(),
            (Some(state), _) => state.to_string(),
            (None, None) => "-".into(),
        },
        applied: s.time_applied.map(timestamp).unwrap_or("-".into()),
        known_from: s.known_from.join("; "),
    });
    let _ = writeln!(out, "{}", table(rows, 4));
    let _ = writeln!(out);
    if report.at.is_some() {
        let _ = writeln!(out, "wire: not asked (answers given in the past are not kept)");
        return out;
    }
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
            (Some(a), _) => {
                let ours: Vec<_> = a
                    .answers
                    .iter()
                    .filter(|r| r.owner == db.fqdn)
                    .map(|r| r.record.clone())
                    .collect();
                match (ours.is_empty(), a.soa_serial) {
                    // The apex's SOA is no record of ours: show its serial.
                    (true, Some(serial)) if w.record_type == "SOA" => {
                        format!("SOA serial {serial}")
                    }
                    _ => records_text(&ours),
                }
            }
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
    let short: Vec<String> = report
        .loss
        .iter()
        .filter(|p| p.answered < p.asked)
        .map(|p| format!("{} answered {} of {}", p.dns_address, p.answered, p.asked))
        .collect();
    match (report.loss.len(), short.is_empty()) {
        (0, _) => {}
        (n, true) => {
            let probes = crate::observe::LOSS_PROBES;
            let at =
                if n == 1 { "1 DNS address".into() } else { format!("each of {n} DNS addresses") };
            let _ = writeln!(
                out,
                "loss probe: {probes} of {probes} identical UDP questions answered at {at}"
            );
        }
        (_, false) => {
            let _ = writeln!(out, "loss probe (identical UDP questions): {}", short.join("; "));
        }
    }
    if let Some(line) = crate::observe::late_line(report.deadline_secs, &report.late) {
        let _ = writeln!(out, "{line}");
    }
    out
}
