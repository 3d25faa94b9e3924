//! `omdb dns ...`: what the DNS servers serve, compared with the database.
//!
//! - `status`: every server of a group, its generation, digest, lag, and
//!   whether its DNS address answers with the generation its config API
//!   claims.
//! - `explain NAME`: see `explain.rs`.

use crate::discovery::{Discovery, TIMEOUT, http_client};
use crate::explain::{self, ExplainArgs};
use crate::format::{Output, table, timestamp};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use db_model::Datastore;
use dns_types::sync::{ServerClaim, SyncState, Wanted, classify};
use dns_types::{DnsGroup, DnsVersion};
use internal_dns::wire::{self, Transport};
use serde::Serialize;
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
    /// every stage of the pipeline knows about it, and a verdict.
    Explain(ExplainArgs),
}

/// `dns status` as data: text and `--json` render this.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub groups: Vec<GroupStatus>,
    /// One line per server that is not current, unreachable or whose wire
    /// answer disagrees with its config API.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct GroupStatus {
    pub group: DnsGroup,
    pub latest: DnsVersion,
    pub latest_digest: String,
    pub servers: Vec<ServerStatus>,
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
    /// The SOA serial its (first) DNS address answered over UDP.
    pub wire_serial: Option<u32>,
    pub wire_error: Option<String>,
    /// Why the server could not be asked.
    pub error: Option<String>,
}

pub async fn run(args: &DnsArgs, discovery: &Discovery, output: &Output) -> anyhow::Result<u8> {
    match &args.command {
        DnsCommand::Explain(args) => explain::run(args, discovery, output).await,
        DnsCommand::Status { group } => {
            let groups: Vec<DnsGroup> =
                group.map(|g| vec![g]).unwrap_or_else(|| DnsGroup::ALL.to_vec());
            let datastore = discovery.datastore().await?;
            let mut report = StatusReport { groups: Vec::new(), problems: Vec::new() };
            for group in groups {
                let status = group_status(&datastore, discovery, group).await?;
                report.problems.extend(problems(&status));
                report.groups.push(status);
            }
            if output.json {
                output.json(&report)?;
            } else {
                print!("{}", render_status(&report));
            }
            if !report.problems.is_empty() {
                // The table says which; the exit status says that something is off.
                anyhow::bail!(
                    "{} DNS server problem(s): unreachable, behind, ahead of or different from the \
                     database, or answering DNS with another generation",
                    report.problems.len()
                );
            }
            Ok(0)
        }
    }
}

async fn group_status(
    datastore: &Datastore,
    discovery: &Discovery,
    group: DnsGroup,
) -> anyhow::Result<GroupStatus> {
    let latest_config = datastore.dns_config_read(group, None).await?;
    let latest_digest = dns_types::config_digest(&latest_config);
    let latest = DnsVersion {
        group,
        generation: latest_config.generation,
        time_created: latest_config.time_created,
        creator: latest_config.creator.clone(),
        comment: latest_config.comment.clone(),
    };
    let zone = latest_config.zones.first().map(|z| z.zone_name.clone());
    let mut servers = discovery.dns_servers(group).await?;
    servers.sort();
    let zone = &zone;
    let statuses = futures::future::join_all(servers.iter().map(|(address, _)| async move {
        let client =
            dns_server_client::Client::new_with_client(&format!("http://{address}"), http_client());
        let status = client.status_get().send().await.map(|r| r.into_inner());
        let serial = match (&status, zone) {
            (Ok(s), Some(zone)) => match crate::discovery::socket_addrs(&s.dns_addresses).first() {
                Some(dns) => Some(
                    wire::ask(*dns, zone, "SOA", Transport::Udp, TIMEOUT)
                        .await
                        .map(|a| a.soa_serial)
                        .map_err(|e| dns_types::error_chain(&e)),
                ),
                None => None,
            },
            _ => None,
        };
        (status, serial)
    }))
    .await;
    let mut digests: BTreeMap<u64, Option<String>> = BTreeMap::new();
    digests.insert(latest.generation, Some(latest_digest.clone()));
    let mut rows = Vec::new();
    for ((address, _), (status, serial)) in servers.iter().zip(statuses) {
        let mut row = ServerStatus {
            config_address: *address,
            id: None,
            dns_addresses: Vec::new(),
            generation: None,
            digest: None,
            time_applied: None,
            behind: None,
            lag_seconds: None,
            state: None,
            wire_serial: None,
            wire_error: None,
            error: None,
        };
        match status {
            Err(e) => row.error = Some(dns_types::error_chain(&e)),
            Ok(status) => {
                let generation = status.generation;
                // The database's digest of the server's generation, when the
                // database has it: an odd generation is this row's finding,
                // never the end of the table.
                if generation > 0
                    && generation <= latest.generation
                    && !digests.contains_key(&generation)
                {
                    let digest = datastore
                        .dns_config_read(group, Some(generation))
                        .await
                        .ok()
                        .map(|c| dns_types::config_digest(&c));
                    digests.insert(generation, digest);
                }
                let state = classify(
                    ServerClaim { generation, digest: status.applied_config_digest.as_deref() },
                    Wanted {
                        generation: latest.generation,
                        digest: &latest_digest,
                        database_latest: Some(latest.generation),
                        digest_at_server_generation: digests
                            .get(&generation)
                            .and_then(|d| d.as_deref()),
                    },
                );
                if generation < latest.generation {
                    row.behind = Some(latest.generation - generation);
                    if let Ok(first_missing) = datastore.dns_version(group, generation + 1).await {
                        let lag = (Utc::now() - first_missing.time_created).num_milliseconds();
                        row.lag_seconds = Some(lag.max(0) as f64 / 1000.0);
                    }
                } else {
                    row.behind = Some(0);
                }
                match serial {
                    Some(Ok(serial)) => row.wire_serial = serial,
                    Some(Err(e)) => row.wire_error = Some(e),
                    None => {}
                }
                row.id = Some(status.id);
                row.dns_addresses = crate::discovery::socket_addrs(&status.dns_addresses);
                row.generation = Some(generation);
                row.digest = status.applied_config_digest;
                row.time_applied = status.time_applied;
                row.state = Some(state);
            }
        }
        rows.push(row);
    }
    Ok(GroupStatus { group, latest, latest_digest, servers: rows })
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
        if let Some(e) = &s.wire_error {
            problems.push(format!("{who}'s DNS address does not answer: {e}"));
        } else if let (Some(serial), Some(generation)) = (s.wire_serial, s.generation)
            && u64::from(serial) != generation
        {
            problems.push(format!(
                "{who} reports generation {generation} but its DNS address answers SOA serial {serial}"
            ));
        }
    }
    problems
}

#[derive(tabled::Tabled)]
struct StatusRow {
    #[tabled(rename = "DNS_SERVER_ADDR")]
    address: String,
    #[tabled(rename = "ID")]
    id: String,
    #[tabled(rename = "DNS")]
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
        let rows = g.servers.iter().map(|s| StatusRow {
            address: s.config_address.to_string(),
            id: s.id.map(|i| i.to_string()).unwrap_or("-".into()),
            dns: s.dns_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
            generation: s.generation.map(|g| g.to_string()).unwrap_or("-".into()),
            behind: s.behind.map(|b| b.to_string()).unwrap_or("-".into()),
            lag: s.lag_seconds.map(|l| format!("{l:.1}s")).unwrap_or("-".into()),
            time_applied: s.time_applied.map(timestamp).unwrap_or("-".into()),
            matches_db: match (&s.error, &s.state) {
                (Some(e), _) => format!("UNREACHABLE: {e}"),
                (None, Some(SyncState::Current)) => "yes".into(),
                (None, Some(SyncState::Behind { .. })) => "yes (older generation)".into(),
                (None, Some(state)) => format!("NO: {state}"),
                (None, None) => "-".into(),
            },
            wire: match (&s.wire_error, s.wire_serial, s.generation) {
                (Some(e), _, _) => format!("NO ANSWER: {e}"),
                (None, Some(serial), Some(g)) if u64::from(serial) == g => format!("{serial} (ok)"),
                (None, Some(serial), _) => format!("{serial} (DIFFERS)"),
                _ => "-".into(),
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
    out
}
