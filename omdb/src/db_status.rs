//! `omdb db status`: the database stage itself.  Every node of the database
//! URL asked directly (role, timeline, replication lag, which standby is
//! synchronous), whether a commit can be acknowledged now (said as a
//! sentence), which node omdb and each Nexus are connected to, and, when
//! Patroni's API is given (`--patroni-api`, devstack's env file sets it),
//! Patroni's own view of its members.

use crate::discovery::{Discovery, http_client, note};
use crate::format::{Output, table, timestamp};
use chrono::{DateTime, Utc};
use db_model::cluster::{NodeState, NodeStatus, Writes, parse_lsn, writes};
use serde::{Deserialize, Serialize};

/// Exit status when commits cannot be acknowledged now (or no node could be
/// asked).
pub const EXIT_WRITES_BLOCKED: u8 = 5;

#[derive(Debug, Serialize)]
pub struct DbStatusReport {
    checked_at: DateTime<Utc>,
    /// The URL the nodes came from (several hosts for a replicated
    /// database).
    url: String,
    nodes: Vec<NodeStatus>,
    /// Whether a commit can be acknowledged now, and why (or why not).
    writes: Writes,
    /// Which node omdb's own connection reached.
    omdb: Connection,
    nexus: Vec<NexusConnection>,
    /// Patroni's view, when its API was given.
    patroni: Option<PatroniView>,
}

#[derive(Debug, Serialize)]
struct Connection {
    node: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct NexusConnection {
    url: String,
    id: Option<uuid::Uuid>,
    node: Option<String>,
    since: Option<DateTime<Utc>>,
    failovers_seen: Option<u64>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct PatroniView {
    /// The agent that answered.
    asked: String,
    members: Vec<PatroniMember>,
    error: Option<String>,
}

/// One member of Patroni's `GET /cluster`.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct PatroniMember {
    name: String,
    role: String,
    state: String,
    host: Option<String>,
    port: Option<u16>,
    timeline: Option<u64>,
    /// Megabytes behind, or "unknown".
    lag: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct PatroniCluster {
    members: Vec<PatroniMember>,
}

pub async fn status(
    discovery: &Discovery,
    patroni_apis: &[String],
) -> anyhow::Result<DbStatusReport> {
    let url = discovery.db_url().await?;
    let checked_at = Utc::now();
    let nodes = db_model::cluster::node_statuses(&url, crate::discovery::TIMEOUT).await?;
    let writes = writes(&nodes);
    let omdb = {
        let datastore = discovery.datastore_at(&url)?;
        match datastore.check_schema_version().await {
            Ok(()) => {
                Connection { node: datastore.connection_report().node.map(|n| n.node), error: None }
            }
            Err(e) => {
                Connection { node: None, error: Some(format!("{:#}", anyhow::Error::new(e))) }
            }
        }
    };
    let nexus = match discovery.all_nexus_urls().await {
        Ok(urls) => {
            let asks = urls.into_iter().map(|url| async move {
                let client = nexus_client::Client::new_with_client(&url, http_client());
                match client.status_get().send().await {
                    Ok(status) => {
                        let status = status.into_inner();
                        let db = status.database;
                        NexusConnection {
                            url,
                            id: Some(status.id),
                            node: db.as_ref().map(|d| d.node.clone()),
                            since: db.as_ref().map(|d| d.since),
                            failovers_seen: db.as_ref().map(|d| d.failovers_seen),
                            error: None,
                        }
                    }
                    Err(e) => NexusConnection {
                        url,
                        id: None,
                        node: None,
                        since: None,
                        failovers_seen: None,
                        error: Some(dns_types::error_chain(&e)),
                    },
                }
            });
            futures::future::join_all(asks).await
        }
        Err(e) => {
            note(format!("could not find the Nexus instances: {e:#}"));
            Vec::new()
        }
    };
    let patroni = patroni_view(patroni_apis).await;
    Ok(DbStatusReport { checked_at, url, nodes, writes, omdb, nexus, patroni })
}

/// Asks the Patroni agents in turn until one answers `GET /cluster`.
async fn patroni_view(apis: &[String]) -> Option<PatroniView> {
    let mut last_error = None;
    for api in apis {
        let url = if api.starts_with("http") { api.clone() } else { format!("http://{api}") };
        let answer = async {
            let response = http_client().get(format!("{url}/cluster")).send().await?;
            response.error_for_status()?.json::<PatroniCluster>().await
        };
        match answer.await {
            Ok(cluster) => {
                return Some(PatroniView {
                    asked: api.clone(),
                    members: cluster.members,
                    error: None,
                });
            }
            Err(e) => last_error = Some(format!("{api}: {}", dns_types::error_chain(&e))),
        }
    }
    last_error.map(|error| PatroniView {
        asked: apis.join(","),
        members: Vec::new(),
        error: Some(error),
    })
}

#[derive(tabled::Tabled)]
struct NodeRow {
    #[tabled(rename = "NODE")]
    node: String,
    #[tabled(rename = "ROLE")]
    role: String,
    #[tabled(rename = "TIMELINE")]
    timeline: String,
    #[tabled(rename = "REPLICATION")]
    replication: String,
    #[tabled(rename = "LAG")]
    lag: String,
}

pub fn render(report: &DbStatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "database: {} (checked at {})",
        nexus_types::count(report.nodes.len() as u64, "node"),
        timestamp(report.checked_at)
    );
    let primary = report.nodes.iter().find_map(|n| match &n.state {
        NodeState::Primary(p) => Some(p),
        _ => None,
    });
    let primary_lsn = primary.and_then(|p| parse_lsn(&p.wal_lsn));
    let rows = report.nodes.iter().map(|n| {
        let t = |tl: Option<i64>| tl.map(|t| t.to_string()).unwrap_or("-".into());
        match &n.state {
            NodeState::Primary(p) => NodeRow {
                node: n.address.clone(),
                role: "primary".into(),
                timeline: t(p.timeline),
                replication: format!(
                    "{} streaming",
                    nexus_types::count(
                        p.replicas.iter().filter(|r| r.state == "streaming").count() as u64,
                        "standby"
                    )
                ),
                lag: "-".into(),
            },
            NodeState::Standby(s) => {
                let row = primary.and_then(|p| {
                    p.replicas.iter().find(|r| Some(&r.name) == s.application_name.as_ref())
                });
                let bytes = match (row.and_then(|r| r.lag_bytes), primary_lsn, &s.replay_lsn) {
                    (Some(b), _, _) => Some(b.max(0) as u64),
                    (None, Some(p), Some(r)) => parse_lsn(r).map(|r| p.saturating_sub(r)),
                    _ => None,
                };
                let seconds = row.and_then(|r| r.lag_seconds).unwrap_or(0.0);
                NodeRow {
                    node: n.address.clone(),
                    role: match row {
                        Some(r) if r.is_synchronous() => "standby (synchronous)".into(),
                        Some(r) => format!("standby ({})", r.sync_state),
                        None => "standby (not streaming from the primary)".into(),
                    },
                    timeline: t(s.timeline),
                    replication: match &s.upstream {
                        Some(up) => format!("from {up}"),
                        None => "not streaming".into(),
                    },
                    lag: match bytes {
                        Some(b) => format!("{b} B, {seconds:.1}s"),
                        None => "unknown".into(),
                    },
                }
            }
            NodeState::Unreachable { error } => NodeRow {
                node: n.address.clone(),
                role: "UNREACHABLE".into(),
                timeline: "-".into(),
                replication: error.clone(),
                lag: "-".into(),
            },
        }
    });
    let _ = writeln!(out, "{}", table(rows, 2));
    let _ = writeln!(out, "{}", report.writes.sentence);
    let _ = writeln!(out);
    let _ = writeln!(out, "connected:");
    match (&report.omdb.node, &report.omdb.error) {
        (Some(node), _) => {
            let _ = writeln!(out, "  omdb (this run)  -> {node}");
        }
        (None, Some(error)) => {
            let _ = writeln!(out, "  omdb (this run)  -> none: {error}");
        }
        (None, None) => {
            let _ = writeln!(out, "  omdb (this run)  -> unknown");
        }
    }
    for n in &report.nexus {
        let who = match n.id {
            Some(id) => format!("Nexus {id}"),
            None => format!("Nexus at {}", n.url),
        };
        match (&n.node, &n.error) {
            (_, Some(error)) => {
                let _ = writeln!(out, "  {who} -> could not be asked: {error}");
            }
            (Some(node), None) => {
                let demoted = report
                    .nodes
                    .iter()
                    .any(|x| &x.address == node && !matches!(x.state, NodeState::Primary(_)));
                let _ = writeln!(
                    out,
                    "  {who} -> {node} since {} ({}){}",
                    n.since.map(timestamp).unwrap_or_default(),
                    nexus_types::count(n.failovers_seen.unwrap_or(0), "failover") + " seen",
                    if demoted { "; that node is not the primary now" } else { "" }
                );
            }
            (None, None) => {
                let _ = writeln!(out, "  {who} -> not connected yet");
            }
        }
    }
    match &report.patroni {
        None => {
            let _ = writeln!(
                out,
                "\nPatroni: not asked (give --patroni-api or OMDB_PATRONI_API to see its view)"
            );
        }
        Some(view) => match &view.error {
            Some(error) => {
                let _ = writeln!(out, "\nPatroni: no agent answered: {error}");
            }
            None => {
                let _ = writeln!(out, "\nPatroni (asked {}):", view.asked);
                for m in &view.members {
                    let lag = match &m.lag {
                        Some(v) => format!(", lag {v} MB"),
                        None => String::new(),
                    };
                    let _ = writeln!(
                        out,
                        "  {:<8} {}:{} {} {}, timeline {}{lag}",
                        m.name,
                        m.host.as_deref().unwrap_or("?"),
                        m.port.map(|p| p.to_string()).unwrap_or("?".into()),
                        m.role,
                        m.state,
                        m.timeline.map(|t| t.to_string()).unwrap_or("-".into()),
                    );
                }
            }
        },
    }
    out
}

/// The exit status of a report: 0 when commits can be acknowledged.
pub fn exit_code(report: &DbStatusReport) -> u8 {
    if report.writes.can_commit { 0 } else { EXIT_WRITES_BLOCKED }
}

pub async fn run(
    discovery: &Discovery,
    patroni_apis: &[String],
    output: &Output,
) -> anyhow::Result<u8> {
    let report = status(discovery, patroni_apis).await?;
    if output.json {
        output.json(&report)?;
    } else {
        out!("{}", render(&report));
    }
    Ok(exit_code(&report))
}
