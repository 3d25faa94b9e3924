//! `omdb dns ...`: what the DNS servers serve, compared with the database.
//!
//! - `status`: every server of a group, its generation, digest, lag, and
//!   whether its DNS address answers with the generation its config API
//!   claims.
//! - `explain NAME`: see `explain.rs`.

use crate::discovery::Discovery;
use crate::explain::{self, ExplainArgs};
use crate::format::{Output, table, timestamp};
use crate::observe::{self, ServerObservation};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use dns_types::sync::{ServerClaim, SyncState, Wanted, classify};
use dns_types::{DnsGroup, DnsVersion};
use internal_dns::wire::Transport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use uuid::Uuid;

#[derive(Args)]
pub struct DnsArgs {
    #[command(subcommand)]
    command: DnsCommand,
}

#[derive(Subcommand)]
enum DnsCommand {
    /// Each server's generation, how far behind it is, whether its content
    /// matches the database and whether its DNS address answers with that
    /// generation (all groups, or one).
    Status { group: Option<DnsGroup> },
    /// Why a name is missing (or proof that DNS is not the problem): what
    /// every stage of the pipeline knows about it, and a verdict; `--at` for
    /// a past moment.
    Explain(ExplainArgs),
    /// One generation's way through the pipeline, in time order, with each
    /// event's offset from the commit.
    Timeline(crate::timeline::TimelineArgs),
    /// One archive of everything omdb can gather, to answer from offline
    /// (`--from-bundle`); works with every Nexus down.
    Bundle(crate::bundle::BundleArgs),
}

/// `dns status` as data: text and `--json` render this.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub groups: Vec<GroupStatus>,
    /// One line per server that is not current, unreachable or whose wire
    /// answer disagrees with its config API.
    pub problems: Vec<String>,
    /// What did not answer within the one deadline for every server
    /// question, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub late: Vec<String>,
    /// That deadline, in seconds.
    pub deadline_secs: u64,
    /// Set when no node of the database accepts writes and a standby was
    /// read: each group's "latest" is that standby's, and no change can
    /// commit until a node is primary again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GroupStatus {
    pub group: DnsGroup,
    pub latest: DnsVersion,
    pub latest_digest: String,
    /// How many servers serve exactly the database's latest generation:
    /// what to look at before taking one out of service.
    pub quorum: Quorum,
    pub servers: Vec<ServerStatus>,
}

/// "N of M servers serve generation G, the database's latest (checked at
/// T)": current means the latest generation with the database's content,
/// checked on the wire too.
#[derive(Debug, Serialize)]
pub struct Quorum {
    pub current: usize,
    pub total: usize,
    pub generation: u64,
    pub checked_at: DateTime<Utc>,
    /// The servers (config API addresses) that do not, with why.
    pub not_current: Vec<String>,
}

impl Quorum {
    fn of(latest: u64, servers: &[ServerStatus], checked_at: DateTime<Utc>) -> Quorum {
        let mut not_current = Vec::new();
        for s in servers {
            let why = match (&s.error, &s.state) {
                (Some(_), _) => Some("unreachable".to_string()),
                (None, Some(state)) if !state.is_current() => Some(state.to_string()),
                (None, None) => Some("no status".to_string()),
                _ if !wire_problems(s).is_empty() => {
                    Some("answers DNS with another generation, or not at all".to_string())
                }
                _ => None,
            };
            if let Some(why) = why {
                not_current.push(format!("{} ({why})", s.config_address));
            }
        }
        Quorum {
            current: servers.len() - not_current.len(),
            total: servers.len(),
            generation: latest,
            checked_at,
            not_current,
        }
    }

    /// The line `dns status` prints.
    pub fn line(&self, group: DnsGroup) -> String {
        let head = format!(
            "{} of {} {group} DNS servers serve generation {}, the database's latest (checked at {})",
            self.current,
            self.total,
            self.generation,
            timestamp(self.checked_at)
        );
        if self.not_current.is_empty() {
            head
        } else {
            format!("{head}; not: {}", self.not_current.join(", "))
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ServerStatus {
    pub config_address: SocketAddr,
    pub id: Option<Uuid>,
    pub dns_addresses: Vec<SocketAddr>,
    pub generation: Option<u64>,
    pub digest: Option<String>,
    pub time_applied: Option<DateTime<Utc>>,
    /// Generations behind the database's latest.
    pub behind: Option<u64>,
    /// Seconds since the first generation this server lacks was created.
    pub lag_seconds: Option<f64>,
    pub state: Option<SyncState>,
    /// Why the content could not be compared with the database (the
    /// database could not be read for the server's generation).
    pub content_unchecked: Option<String>,
    /// The zone's SOA serial asked of each DNS address it reports, over UDP
    /// and TCP.
    pub wire: Vec<WireSerial>,
    /// Why the server could not be asked.
    pub error: Option<String>,
}

/// What one DNS address answered for the zone's SOA over one transport.
#[derive(Debug, Serialize)]
pub struct WireSerial {
    pub dns_address: SocketAddr,
    pub transport: Transport,
    pub serial: Option<u32>,
    /// The id the answering server gave (NSID), if it gave one.
    pub answered_by: Option<String>,
    pub error: Option<String>,
}

pub async fn run(args: &DnsArgs, discovery: &Discovery, output: &Output) -> anyhow::Result<u8> {
    match &args.command {
        DnsCommand::Explain(args) => explain::run(args, discovery, output).await,
        DnsCommand::Timeline(args) => crate::timeline::run(args, discovery, output).await,
        DnsCommand::Bundle(args) => {
            crate::bundle::run(args, discovery, output, discovery.dns_server()).await
        }
        DnsCommand::Status { group } => {
            let groups: Vec<DnsGroup> =
                group.map(|g| vec![g]).unwrap_or_else(|| DnsGroup::ALL.to_vec());
            let observations = gather_status(discovery, &groups).await?;
            let report = status_report(&observations);
            if output.json {
                output.json(&report)?;
            } else {
                out!("{}", render_status(&report));
            }
            if !report.problems.is_empty() {
                // The table says which; the exit status says that something is off.
                anyhow::bail!(
                    "{}: unreachable, behind, ahead of or different from the database, or \
                     answering DNS with another generation",
                    nexus_types::count(report.problems.len() as u64, "DNS server problem")
                );
            }
            Ok(0)
        }
    }
}

/// What `dns status` saw: per group, the database's latest generation and
/// every server found in DNS.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusObservations {
    pub taken_at: DateTime<Utc>,
    pub groups: Vec<GroupObservation>,
    /// The one deadline every server question had to meet (seconds).
    #[serde(default)]
    pub deadline_secs: u64,
    /// The database node read, when it was a standby (no node accepted
    /// writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_read: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupObservation {
    pub group: DnsGroup,
    pub latest: DnsVersion,
    pub latest_digest: String,
    pub servers: Vec<ServerObservation>,
    /// The database's digest of each generation a server claims.
    pub digests: BTreeMap<u64, Result<String, String>>,
    /// When the first generation each behind server lacks was created.
    pub first_missing: BTreeMap<u64, DateTime<Utc>>,
}

pub async fn gather_status(
    discovery: &Discovery,
    groups: &[DnsGroup],
) -> anyhow::Result<StatusObservations> {
    let taken_at = Utc::now();
    let datastore = discovery.datastore().await?;
    let zones = datastore.dns_zones().await?;
    // What the database and DNS say, group by group; then every server of
    // every group at once, under one deadline.
    let mut wanted = Vec::new();
    for group in groups.iter().copied() {
        let latest = datastore.dns_version_latest(group).await?;
        let latest_digest =
            observe::database_digest(&datastore, group, latest.generation).await.map_err(|e| {
                anyhow::anyhow!(
                    "reading the digest of {group} generation {}: {e}",
                    latest.generation
                )
            })?;
        let zone = zones.iter().find(|z| z.group == group).map(|z| z.zone_name.clone());
        let service = internal_dns::ServiceName::dns_servers_of(group);
        let known: BTreeMap<_, _> = discovery
            .dns_servers(group)
            .await?
            .into_iter()
            .map(|(address, target)| {
                let from = format!("SRV {} -> {target}", service.srv_name(&discovery.zone));
                (address, std::collections::BTreeSet::from([from]))
            })
            .collect();
        wanted.push((group, latest, latest_digest, zone, known));
    }
    let deadline = observe::Deadline::starting_now(crate::discovery::TIMEOUT);
    let asked = futures::future::join_all(wanted.iter().map(|(_, _, _, zone, known)| {
        observe::observe_servers(known.clone(), zone.as_deref(), deadline)
    }))
    .await;
    let mut observed = Vec::new();
    for ((group, latest, latest_digest, _, _), servers) in wanted.into_iter().zip(asked) {
        let mut digests = BTreeMap::new();
        digests.insert(latest.generation, Ok(latest_digest.clone()));
        observe::claimed_digests(&datastore, group, latest.generation, &servers, &mut digests)
            .await;
        let mut first_missing = BTreeMap::new();
        for generation in servers.iter().filter_map(ServerObservation::generation) {
            if generation < latest.generation
                && !first_missing.contains_key(&generation)
                && let Ok(v) = datastore.dns_version(group, generation + 1).await
            {
                first_missing.insert(generation, v.time_created);
            }
        }
        observed.push(GroupObservation {
            group,
            latest,
            latest_digest,
            servers,
            digests,
            first_missing,
        });
    }
    Ok(StatusObservations {
        taken_at,
        groups: observed,
        deadline_secs: deadline.budget().as_secs(),
        standby_read: datastore.reads_a_standby().then(|| datastore.address().to_string()),
    })
}

/// The status report of what was observed (no I/O).
pub fn status_report(observations: &StatusObservations) -> StatusReport {
    let mut report = StatusReport {
        groups: Vec::new(),
        problems: Vec::new(),
        late: Vec::new(),
        deadline_secs: observations.deadline_secs,
        database: observations.standby_read.as_ref().map(|node| {
            format!(
                "no database node accepts writes (a failover under way, or no standby in sync): \
                 read standby {node}; \"latest\" below is what it has replayed, and no change \
                 can commit until a node is primary (omdb db status)"
            )
        }),
    };
    for g in &observations.groups {
        let mut servers: Vec<ServerStatus> =
            g.servers.iter().map(|s| server_status(s, g, observations.taken_at)).collect();
        servers.sort_by_key(|s| s.config_address);
        let quorum = Quorum::of(g.latest.generation, &servers, observations.taken_at);
        let status = GroupStatus {
            group: g.group,
            latest: g.latest.clone(),
            latest_digest: g.latest_digest.clone(),
            quorum,
            servers,
        };
        report.problems.extend(problems(&status));
        report.late.extend(observe::late_parts(&g.servers, &[]));
        report.groups.push(status);
    }
    report
}

fn server_status(s: &ServerObservation, g: &GroupObservation, now: DateTime<Utc>) -> ServerStatus {
    let wire = s
        .soa
        .iter()
        .map(|w| {
            let answered_by = w.answer.as_ref().and_then(|a| a.answered_by.clone());
            let (serial, error) = match (&w.answer, &w.error) {
                (Some(a), _) if a.soa_serial.is_some() => (a.soa_serial, None),
                (Some(a), _) => (None, Some(format!("answered {} without an SOA", a.rcode))),
                (None, e) => (None, Some(e.clone().unwrap_or_default())),
            };
            WireSerial {
                dns_address: w.dns_address,
                transport: w.transport,
                serial,
                answered_by,
                error,
            }
        })
        .collect();
    let mut row = ServerStatus {
        config_address: s.config_address,
        id: None,
        dns_addresses: s.dns_addresses(),
        generation: None,
        digest: None,
        time_applied: None,
        behind: None,
        lag_seconds: None,
        state: None,
        content_unchecked: None,
        wire,
        error: s.error.clone(),
    };
    let Some(status) = &s.status else { return row };
    let generation = status.generation;
    let latest = g.latest.generation;
    let database_digest = g.digests.get(&generation);
    row.state = Some(classify(
        ServerClaim { generation, digest: status.applied_config_digest.as_deref() },
        Wanted {
            generation: latest,
            digest: &g.latest_digest,
            database_latest: Some(latest),
            digest_at_server_generation: database_digest.and_then(|d| d.as_deref().ok()),
        },
    ));
    if generation < latest {
        row.behind = Some(latest - generation);
        if let Some(created) = g.first_missing.get(&generation) {
            let lag = (now - *created).num_milliseconds();
            row.lag_seconds = Some(lag.max(0) as f64 / 1000.0);
        }
    } else {
        row.behind = Some(0);
    }
    if let Some(Err(e)) = database_digest {
        row.content_unchecked =
            Some(format!("reading generation {generation} from the database failed: {e}"));
    }
    row.id = Some(status.id);
    row.generation = Some(generation);
    row.digest = status.applied_config_digest.clone();
    row.time_applied = status.time_applied;
    row
}

fn problems(group: &GroupStatus) -> Vec<String> {
    let mut problems = Vec::new();
    for s in &group.servers {
        let who = format!("{} DNS server {}", group.group, s.config_address);
        if let Some(e) = &s.error {
            problems.push(format!("{who} is unreachable: {e}"));
            continue;
        }
        if let Some(state) = &s.state
            && !state.is_current()
        {
            problems.push(format!("{who} is {state}"));
        }
        if let Some(why) = &s.content_unchecked {
            problems.push(format!("{who}'s content was not checked: {why}"));
        }
        problems.extend(wire_problems(s).into_iter().map(|p| format!("{who}: {p}")));
    }
    problems
}

/// What is wrong with a server's answers on the wire: an address that does
/// not answer, a serial other than the generation its config API reports,
/// or no address to ask at all (which is never "ok").
fn wire_problems(s: &ServerStatus) -> Vec<String> {
    if s.error.is_some() {
        return Vec::new();
    }
    if s.wire.is_empty() {
        return vec!["reports no DNS address; its answers were not checked".into()];
    }
    let own_id = s.id.map(|id| id.to_string());
    let mut problems = Vec::new();
    for w in &s.wire {
        let at = format!("DNS at {} over {}", w.dns_address, w.transport);
        if let (Some(by), Some(own)) = (&w.answered_by, &own_id)
            && by != own
        {
            problems.push(format!(
                "{at} is answered by server id {by} (its NSID), not by this server (id {own})"
            ));
        }
        match (&w.error, w.serial, s.generation) {
            (Some(e), _, _) => problems.push(format!("{at} does not answer the SOA: {e}")),
            (None, Some(serial), Some(g)) if u64::from(serial) != g => problems.push(format!(
                "{at} answers SOA serial {serial}, but the server reports generation {g}"
            )),
            _ => {}
        }
    }
    problems
}

#[derive(tabled::Tabled)]
struct StatusRow {
    #[tabled(rename = "CONFIG_API")]
    address: String,
    #[tabled(rename = "ID")]
    id: String,
    #[tabled(rename = "DNS_ADDR")]
    dns: String,
    #[tabled(rename = "GEN")]
    generation: String,
    #[tabled(rename = "BEHIND")]
    behind: String,
    #[tabled(rename = "LAG")]
    lag: String,
    #[tabled(rename = "TIME_APPLIED")]
    time_applied: String,
    #[tabled(rename = "MATCHES_DB")]
    matches_db: String,
    #[tabled(rename = "WIRE_SERIAL")]
    wire: String,
}

fn render_status(report: &StatusReport) -> String {
    let mut out = String::new();
    if let Some(database) = &report.database {
        let _ = writeln!(out, "DATABASE: {database}");
    }
    for g in &report.groups {
        let _ = writeln!(
            out,
            "{}: database latest generation {}, created at {} by {}: {:?}",
            g.group,
            g.latest.generation,
            timestamp(g.latest.time_created),
            g.latest.creator,
            g.latest.comment
        );
        let _ = writeln!(out, "  {}", g.quorum.line(g.group));
        let rows = g.servers.iter().map(|s| StatusRow {
            address: s.config_address.to_string(),
            id: s.id.map(|i| i.to_string()).unwrap_or("-".into()),
            dns: s.dns_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
            generation: s.generation.map(|g| g.to_string()).unwrap_or("-".into()),
            behind: s.behind.map(|b| b.to_string()).unwrap_or("-".into()),
            lag: s.lag_seconds.map(|l| format!("{l:.1}s")).unwrap_or("-".into()),
            time_applied: s.time_applied.map(timestamp).unwrap_or("-".into()),
            matches_db: match (&s.error, &s.state) {
                (Some(_), _) => "UNREACHABLE (see problems)".into(),
                (None, Some(SyncState::Current)) => "yes".into(),
                (None, Some(SyncState::Behind { .. })) if s.content_unchecked.is_some() => {
                    "NOT CHECKED (older generation)".into()
                }
                (None, Some(SyncState::Behind { .. })) => "yes (older generation)".into(),
                (None, Some(state)) => format!("NO: {state}"),
                (None, None) => "-".into(),
            },
            wire: if s.error.is_some() {
                "-".into()
            } else if wire_problems(s).is_empty() {
                let serials: std::collections::BTreeSet<u32> =
                    s.wire.iter().filter_map(|w| w.serial).collect();
                let serial = serials.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
                let own = s.id.map(|id| id.to_string());
                let by_self =
                    s.wire.iter().all(|w| w.answered_by.is_some() && w.answered_by == own);
                let who = if by_self { ", NSID is this server" } else { "" };
                format!(
                    "{serial} (ok, {} over UDP+TCP{who})",
                    nexus_types::count(s.wire.len() as u64, "answer")
                )
            } else {
                let differing: Vec<String> = s
                    .wire
                    .iter()
                    .map(|w| match (&w.error, w.serial) {
                        (Some(_), _) => format!("{}:NO ANSWER", w.transport),
                        (None, Some(serial)) => format!("{}:{serial}", w.transport),
                        (None, None) => format!("{}:-", w.transport),
                    })
                    .collect();
                format!("DIFFERS ({})", differing.join(" "))
            },
        });
        let _ = writeln!(out, "{}\n", table(rows, 2));
    }
    if !report.problems.is_empty() {
        let _ = writeln!(out, "problems:");
        for p in &report.problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    if let Some(line) = crate::observe::late_line(report.deadline_secs, &report.late) {
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(port: u16, state: Option<SyncState>, error: Option<&str>) -> ServerStatus {
        ServerStatus {
            config_address: SocketAddr::from(([127, 0, 0, 1], port)),
            id: None,
            dns_addresses: vec![SocketAddr::from(([127, 0, 0, 1], port + 1))],
            generation: Some(18),
            digest: None,
            time_applied: None,
            behind: None,
            lag_seconds: None,
            state,
            content_unchecked: None,
            wire: vec![WireSerial {
                dns_address: SocketAddr::from(([127, 0, 0, 1], port + 1)),
                transport: Transport::Udp,
                serial: Some(18),
                answered_by: None,
                error: None,
            }],
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn the_quorum_line_counts_only_servers_exactly_at_the_latest() {
        let at: DateTime<Utc> = "2026-12-03T10:31:00Z".parse().unwrap();
        let all =
            [server(1, Some(SyncState::Current), None), server(3, Some(SyncState::Current), None)];
        assert_eq!(
            Quorum::of(18, &all, at).line(DnsGroup::Internal),
            "2 of 2 internal DNS servers serve generation 18, the database's latest (checked at \
             2026-12-03T10:31:00.000Z)"
        );
        let mixed = [
            server(1, Some(SyncState::Current), None),
            server(3, Some(SyncState::Behind { by: 1 }), None),
            server(5, None, Some("connection refused")),
            server(7, Some(SyncState::Diverged), None),
        ];
        let quorum = Quorum::of(18, &mixed, at);
        assert_eq!((quorum.current, quorum.total), (1, 4));
        let line = quorum.line(DnsGroup::Internal);
        assert!(line.starts_with("1 of 4 internal DNS servers serve generation 18"), "{line}");
        assert!(
            line.ends_with(
                "not: 127.0.0.1:3 (behind by 1), 127.0.0.1:5 (unreachable), 127.0.0.1:7 (diverged)"
            ),
            "{line}"
        );
    }
}
