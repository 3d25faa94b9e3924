//! `omdb dns timeline GROUP [--generation N]`: one generation's way through
//! the pipeline, in time order across the database (committed), every
//! Nexus (first saw it; each push started and ended, per server), and every
//! server (applied, refused, restarted), each with its offset from the
//! commit; then one summary line: when the last server applied it and which
//! was slowest, or which servers never got it and the last thing each said.
//!
//! Gathering ([`gather`]) keeps what each part said as
//! [`TimelineObservations`]; [`timeline`] builds the report from them alone,
//! so a bundle answers the same offline.

use crate::discovery::Discovery;
use crate::format::{Output, table, timestamp};
use crate::history::{
    Generations, NexusHistoryObservation, ServerHistoryObservation, Window, nexus_history,
    server_history,
};
use chrono::{DateTime, Duration, Utc};
use dns_types::apply_history::{HistoryEntry, ServerEvent};
use dns_types::{DnsGroup, DnsVersion};
use nexus_types::task_status::PropagationResult;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::SocketAddr;
use uuid::Uuid;

#[derive(clap::Args)]
pub struct TimelineArgs {
    pub group: DnsGroup,
    /// The generation to follow (default: the latest).
    #[arg(long)]
    pub generation: Option<u64>,
    /// Answer from a bundle (`omdb dns bundle`) instead of the live system.
    #[arg(long, value_name = "FILE")]
    pub from_bundle: Option<std::path::PathBuf>,
}

/// What was asked of every part about one generation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimelineObservations {
    pub taken_at: DateTime<Utc>,
    pub group: DnsGroup,
    pub version: DnsVersion,
    pub latest_generation: u64,
    /// Every Nexus found in DNS, or why none could be found.
    pub nexus: Result<Vec<NexusHistoryObservation>, String>,
    /// Every server of the group found in DNS or pushed to by a Nexus.
    pub servers: Vec<ServerHistoryObservation>,
}

/// How far before the commit server events are still read (clocks of one
/// machine agree; of several, within this).
const CLOCK_SLACK: Duration = Duration::seconds(2);

pub async fn gather(
    discovery: &Discovery,
    group: DnsGroup,
    generation: Option<u64>,
) -> anyhow::Result<TimelineObservations> {
    let taken_at = Utc::now();
    let datastore = discovery.datastore().await?;
    let latest = datastore.dns_version_latest(group).await?;
    let version = match generation {
        Some(g) if g == latest.generation => latest.clone(),
        Some(g) => datastore.dns_version(group, g).await?,
        None => latest.clone(),
    };
    let nexus = match discovery.all_nexus_urls().await {
        Ok(urls) => {
            let which = Generations {
                generation: Some(version.generation),
                limit: 1,
                ..Default::default()
            };
            Ok(futures::future::join_all(urls.iter().map(|u| nexus_history(u, group, which))).await)
        }
        Err(e) => Err(format!("{e:#}")),
    };
    let mut addresses: BTreeSet<SocketAddr> = match discovery.dns_servers(group).await {
        Ok(found) => found.into_iter().map(|(a, _)| a).collect(),
        Err(e) => {
            crate::discovery::note(format!("could not list the {group} DNS servers: {e:#}"));
            BTreeSet::new()
        }
    };
    for n in nexus.iter().flatten() {
        for record in n.history.iter().flat_map(|h| &h.generations) {
            addresses
                .extend(record.pushes.iter().filter_map(|p| p.server.parse::<SocketAddr>().ok()));
        }
    }
    let windows = [
        Window { since: Some(version.time_created - CLOCK_SLACK), until: None, limit: 10_000 },
        // The newest event, whenever it was: "the last thing it said".
        Window { since: None, until: None, limit: 1 },
    ];
    let servers =
        futures::future::join_all(addresses.iter().map(|a| server_history(*a, &windows))).await;
    Ok(TimelineObservations {
        taken_at,
        group,
        version,
        latest_generation: latest.generation,
        nexus,
        servers,
    })
}

/// The report: every event in time order, and what became of each server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timeline {
    pub group: DnsGroup,
    pub generation: u64,
    pub committed: DnsVersion,
    pub checked_at: DateTime<Utc>,
    pub events: Vec<TimelineEvent>,
    pub servers: Vec<ServerOutcome>,
    /// Whether every server serves the generation (or a later one).
    pub reached_all: bool,
    pub summary: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub time: DateTime<Utc>,
    /// From the commit (negative: before it).
    pub offset_ms: i64,
    /// `database`, `Nexus <id>`, or `server <config API>`.
    pub source: String,
    pub event: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerOutcome {
    /// The config API address.
    pub server: SocketAddr,
    pub id: Option<Uuid>,
    /// When it first served this generation or a later one, if it did.
    pub reached_at: Option<DateTime<Utc>>,
    pub offset_ms: Option<i64>,
    /// It serves the generation, but its history does not reach back to
    /// when it started to.
    pub reached_before_history: bool,
    /// The generation it serves now.
    pub serves_now: Option<u64>,
    /// Its newest event, when it never got the generation.
    pub last_said: Option<String>,
    pub error: Option<String>,
}

fn offset(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

/// `+42ms`, `-3ms`, `+1.25s`, `+3m 20s`.
pub fn offset_text(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "+" };
    let abs = ms.unsigned_abs();
    if abs < 1000 {
        format!("{sign}{abs}ms")
    } else if abs < 60_000 {
        format!("{sign}{:.2}s", abs as f64 / 1000.0)
    } else {
        format!("{sign}{}m {}s", abs / 60_000, (abs % 60_000) / 1000)
    }
}

/// What one server event says, in a line.
pub fn describe_server_event(event: &ServerEvent) -> String {
    match event {
        ServerEvent::Applied {
            generation,
            how,
            writer,
            replaced_generation,
            apply_ms,
            reason,
            ..
        } => {
            let by = writer.as_deref().map(|w| format!(", written by {w}")).unwrap_or_default();
            let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            format!(
                "applied generation {generation} ({how} from {replaced_generation}, {apply_ms:.1} ms{by}){why}"
            )
        }
        ServerEvent::Refused { generation, how, error_code, reason, served_generation, .. } => {
            format!(
                "refused generation {generation} ({how}; serving {served_generation}): {error_code}: {reason}"
            )
        }
        ServerEvent::Started { generation, .. } => {
            format!("started, serving generation {generation} from its storage")
        }
        ServerEvent::StorageFailed { operation, error } => {
            format!("storage failed {operation}: {error}")
        }
    }
}

/// The timeline of `o.version` from the observations alone.
pub fn timeline(o: &TimelineObservations) -> Timeline {
    let g = o.version.generation;
    let commit = o.version.time_created;
    let mut events = vec![TimelineEvent {
        time: commit,
        offset_ms: 0,
        source: "database".into(),
        event: format!(
            "committed generation {g} (by {}: {:?})",
            o.version.creator, o.version.comment
        ),
    }];
    let event = |time: DateTime<Utc>, source: String, event: String| TimelineEvent {
        time,
        offset_ms: offset(commit, time),
        source,
        event,
    };
    match &o.nexus {
        Err(e) => {
            events.push(event(o.taken_at, "Nexus".into(), format!("none could be found: {e}")))
        }
        Ok(found) => {
            for n in found {
                let who = format!("Nexus {}", n.id.map(|i| i.to_string()).unwrap_or(n.url.clone()));
                let Some(history) = &n.history else {
                    let error = n.error.clone().unwrap_or_default();
                    events.push(event(o.taken_at, who, format!("could not be asked: {error}")));
                    continue;
                };
                let Some(record) = history.generations.iter().find(|r| r.generation == g) else {
                    let since = history
                        .complete_since
                        .map(|t| format!(" (it holds everything since {})", timestamp(t)))
                        .unwrap_or_default();
                    events.push(event(
                        o.taken_at,
                        who,
                        format!("has no record of generation {g}{since}"),
                    ));
                    continue;
                };
                if let Some(seen) = record.first_seen_at {
                    events.push(event(seen, who.clone(), format!("first saw generation {g}")));
                }
                for p in &record.pushes {
                    events.push(event(
                        p.started_at,
                        who.clone(),
                        format!("push to {} started", p.server),
                    ));
                    let result = match p.result {
                        PropagationResult::Success => "succeeded",
                        PropagationResult::Error => "FAILED",
                    };
                    let sent = p
                        .sent
                        .map(|k| {
                            format!(
                                ", sent {}",
                                match k {
                                    nexus_types::task_status::PushKind::Difference =>
                                        "a difference",
                                    nexus_types::task_status::PushKind::Full => "the whole config",
                                }
                            )
                        })
                        .unwrap_or_default();
                    events.push(event(
                        p.ended_at,
                        who.clone(),
                        format!(
                            "push to {} {result} ({}{sent}): {}",
                            p.server, p.outcome, p.message
                        ),
                    ));
                }
            }
        }
    }
    let mut servers = Vec::new();
    for s in &o.servers {
        let source = format!("server {}", s.config_address);
        let id = s.status.as_ref().map(|st| st.id).or(s.history.as_ref().map(|h| h.server_id));
        let mut outcome = ServerOutcome {
            server: s.config_address,
            id,
            reached_at: None,
            offset_ms: None,
            reached_before_history: false,
            serves_now: s.status.as_ref().map(|st| st.generation),
            last_said: None,
            error: s.error.clone(),
        };
        let entries: &[HistoryEntry] =
            s.history.as_ref().map(|h| h.events.as_slice()).unwrap_or_default();
        let reached = dns_types::apply_history::first_serving(entries, g, commit - CLOCK_SLACK);
        for e in entries.iter().rev() {
            let relevant = match &e.event {
                ServerEvent::Applied { .. } => reached.is_some_and(|r| r.seq == e.seq),
                ServerEvent::Refused { generation, .. } => *generation == g,
                ServerEvent::Started { .. } | ServerEvent::StorageFailed { .. } => {
                    e.time >= commit && reached.is_none_or(|r| e.time <= r.time)
                }
            };
            if relevant {
                events.push(event(e.time, source.clone(), describe_server_event(&e.event)));
            }
        }
        match reached {
            Some(r) => {
                outcome.reached_at = Some(r.time);
                outcome.offset_ms = Some(offset(commit, r.time));
            }
            None if outcome.serves_now.is_some_and(|now| now >= g) => {
                outcome.reached_before_history = true;
            }
            None => {
                outcome.last_said = entries.first().map(|e| {
                    format!("{} at {}", describe_server_event(&e.event), timestamp(e.time))
                });
            }
        }
        servers.push(outcome);
    }
    events.sort_by_key(|e| e.time);
    let reached: Vec<&ServerOutcome> =
        servers.iter().filter(|s| s.reached_at.is_some() || s.reached_before_history).collect();
    let reached_all = !servers.is_empty() && reached.len() == servers.len();
    let name = |s: &ServerOutcome| match s.id {
        Some(id) => format!("{} (id {id})", s.server),
        None => s.server.to_string(),
    };
    let summary = if servers.is_empty() {
        format!("no {} DNS server was found to ask about generation {g}", o.group)
    } else if reached_all {
        let slowest =
            servers.iter().filter(|s| s.reached_at.is_some()).max_by_key(|s| s.reached_at);
        match slowest {
            Some(s) => format!(
                "generation {g} reached all {} {} DNS servers {} after its commit; slowest {}, applied at {}",
                servers.len(),
                o.group,
                offset_text(s.offset_ms.unwrap_or_default()).trim_start_matches('+'),
                name(s),
                timestamp(s.reached_at.unwrap_or(commit)),
            ),
            None => format!(
                "generation {g} is served by all {} {} DNS servers (since before their histories begin)",
                servers.len(),
                o.group
            ),
        }
    } else {
        let missing: Vec<String> = servers
            .iter()
            .filter(|s| s.reached_at.is_none() && !s.reached_before_history)
            .map(|s| {
                let said = match (&s.error, &s.last_said, s.serves_now) {
                    (Some(e), _, _) => format!("could not be asked: {e}"),
                    (None, Some(last), Some(now)) => {
                        format!("serves generation {now}; last: {last}")
                    }
                    (None, None, Some(now)) => format!("serves generation {now}"),
                    (None, _, None) => "no status".to_string(),
                };
                format!("{} ({said})", name(s))
            })
            .collect();
        format!(
            "generation {g} has not reached {} of {} {} DNS servers (checked at {}): {}",
            missing.len(),
            servers.len(),
            o.group,
            timestamp(o.taken_at),
            missing.join("; ")
        )
    };
    Timeline {
        group: o.group,
        generation: g,
        committed: o.version.clone(),
        checked_at: o.taken_at,
        events,
        servers,
        reached_all,
        summary,
    }
}

#[derive(tabled::Tabled)]
struct Row {
    #[tabled(rename = "OFFSET")]
    offset: String,
    #[tabled(rename = "TIME")]
    time: String,
    #[tabled(rename = "WHERE")]
    source: String,
    #[tabled(rename = "EVENT")]
    event: String,
}

pub fn render(t: &Timeline) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} DNS generation {}: committed at {} by {}: {:?}",
        t.group,
        t.generation,
        timestamp(t.committed.time_created),
        t.committed.creator,
        t.committed.comment
    );
    let rows = t.events.iter().map(|e| Row {
        offset: offset_text(e.offset_ms),
        time: timestamp(e.time),
        source: e.source.clone(),
        event: e.event.clone(),
    });
    let _ = writeln!(out, "{}", table(rows, 2));
    let _ = writeln!(out, "summary: {}", t.summary);
    out
}

pub async fn run(
    args: &TimelineArgs,
    discovery: &Discovery,
    output: &Output,
) -> anyhow::Result<u8> {
    let observations = match &args.from_bundle {
        Some(path) => crate::bundle::Bundle::open(path)?.timeline(args.group, args.generation)?,
        None => gather(discovery, args.group, args.generation).await?,
    };
    let report = timeline(&observations);
    if output.json {
        output.json(&report)?;
    } else {
        out!("{}", render(&report));
    }
    Ok(if report.reached_all { 0 } else { crate::nexus::EXIT_NOT_SERVED_EVERYWHERE })
}
