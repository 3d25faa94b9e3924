//! The database's own view of its nodes: for each host of a (possibly
//! multi-host) URL, its role, timeline, replication and whether a commit
//! can be acknowledged now.
//!
//! Each node is asked directly (one connection per host, whatever its
//! role), with the statistics views PostgreSQL keeps
//! (`pg_stat_replication` on a primary, `pg_stat_wal_receiver` and the
//! replay position on a standby).  These are PostgreSQL's: CockroachDB
//! replicates differently and answers them with an error, which is reported
//! as such (`docs/database.md`).

use crate::error::DbError;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::time::Duration;

/// What one node says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// `host:port` as given in the URL.
    pub address: String,
    /// What the node answered, or why it could not be asked.
    pub state: NodeState,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NodeState {
    Primary(PrimaryStatus),
    Standby(StandbyStatus),
    /// No connection, or the queries failed.
    Unreachable {
        error: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrimaryStatus {
    pub timeline: Option<i64>,
    /// The current WAL position.
    pub wal_lsn: String,
    /// `synchronous_standby_names`: empty when commits do not wait for a
    /// standby.
    pub synchronous_standby_names: String,
    /// Every standby streaming from this primary.
    pub replicas: Vec<ReplicaStatus>,
}

impl PrimaryStatus {
    /// Whether a commit must wait for a synchronous standby.
    pub fn requires_synchronous_standby(&self) -> bool {
        !self.synchronous_standby_names.trim().is_empty()
    }

    /// Whether a commit can be acknowledged now: either no synchronous
    /// standby is required, or one is streaming.
    pub fn can_commit(&self) -> bool {
        !self.requires_synchronous_standby()
            || self.replicas.iter().any(ReplicaStatus::is_synchronous)
    }
}

/// One row of `pg_stat_replication`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The standby's `application_name` (Patroni sets the member name).
    pub name: String,
    pub client_address: Option<String>,
    /// `streaming`, `catchup`, ...
    pub state: String,
    /// `sync`, `quorum`, `potential` or `async`.
    pub sync_state: String,
    /// WAL the primary has written that the standby has not replayed.
    pub lag_bytes: Option<i64>,
    /// `replay_lag`, in seconds (none when the standby is idle and caught up).
    pub lag_seconds: Option<f64>,
}

impl ReplicaStatus {
    pub fn is_synchronous(&self) -> bool {
        self.state == "streaming" && matches!(self.sync_state.as_str(), "sync" | "quorum")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StandbyStatus {
    /// The timeline it receives (or last replayed).
    pub timeline: Option<i64>,
    /// The last WAL position it replayed.
    pub replay_lsn: Option<String>,
    /// Seconds since the last transaction it replayed was committed on the
    /// primary (grows while the primary is idle, too).
    pub replay_age_seconds: Option<f64>,
    /// Where it streams from (`host:port`), when it does.
    pub upstream: Option<String>,
    /// The name it streams under (`application_name` of its
    /// `primary_conninfo`; Patroni uses the member name): the primary's
    /// `pg_stat_replication` row of this standby has it.
    pub application_name: Option<String>,
}

/// Asks every host of `url` about itself, at once, each within `timeout`.
pub async fn node_statuses(url: &str, timeout: Duration) -> Result<Vec<NodeStatus>, DbError> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|source| DbError::InvalidUrl { url: url.into(), source })?;
    let asks = hosts_of(&config).into_iter().map(|(address, name, port)| {
        let one = config.clone();
        async move {
            // A config of just this host (the others' settings dropped).
            let mut single = tokio_postgres::Config::new();
            if let Some(user) = one.get_user() {
                single.user(user);
            }
            if let Some(password) = one.get_password() {
                single.password(password);
            }
            if let Some(db) = one.get_dbname() {
                single.dbname(db);
            }
            single.host(&name).port(port).connect_timeout(timeout);
            single.application_name("omdb-db-status");
            let state = match tokio::time::timeout(timeout * 2, ask_node(&single)).await {
                Ok(Ok(state)) => state,
                Ok(Err(error)) => NodeState::Unreachable { error },
                Err(_) => {
                    NodeState::Unreachable { error: format!("no answer within {:?}", timeout * 2) }
                }
            };
            NodeStatus { address, state }
        }
    });
    Ok(futures::future::join_all(asks).await)
}

async fn ask_node(config: &tokio_postgres::Config) -> Result<NodeState, String> {
    let (client, connection) =
        config.connect(tokio_postgres::NoTls).await.map_err(|e| error_text(&e))?;
    let connection = tokio::spawn(connection);
    let result = node_state(&client).await.map_err(|e| error_text(&e));
    drop(client);
    connection.abort();
    result
}

async fn node_state(client: &tokio_postgres::Client) -> Result<NodeState, tokio_postgres::Error> {
    let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await?;
    let in_recovery: bool = row.get(0);
    if !in_recovery {
        let row = client
            .query_one(
                "SELECT (SELECT timeline_id::INT8 FROM pg_control_checkpoint()), \
                 pg_current_wal_lsn()::TEXT, current_setting('synchronous_standby_names')",
                &[],
            )
            .await?;
        let replicas = client
            .query(
                "SELECT application_name, client_addr::TEXT, state, sync_state, \
                 pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::INT8, \
                 EXTRACT(EPOCH FROM replay_lag)::FLOAT8 \
                 FROM pg_stat_replication ORDER BY application_name",
                &[],
            )
            .await?
            .iter()
            .map(|r| ReplicaStatus {
                name: r.get(0),
                client_address: r.get(1),
                state: r.get::<_, Option<String>>(2).unwrap_or_default(),
                sync_state: r.get::<_, Option<String>>(3).unwrap_or_default(),
                lag_bytes: r.get(4),
                lag_seconds: r.get(5),
            })
            .collect();
        return Ok(NodeState::Primary(PrimaryStatus {
            timeline: row.get(0),
            wal_lsn: row.get(1),
            synchronous_standby_names: row.get(2),
            replicas,
        }));
    }
    let row = client
        .query_one(
            "SELECT COALESCE((SELECT received_tli::INT8 FROM pg_stat_wal_receiver), \
                             (SELECT timeline_id::INT8 FROM pg_control_checkpoint())), \
             pg_last_wal_replay_lsn()::TEXT, \
             EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::FLOAT8, \
             (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver), \
             current_setting('primary_conninfo')",
            &[],
        )
        .await?;
    Ok(NodeState::Standby(StandbyStatus {
        timeline: row.get(0),
        replay_lsn: row.get(1),
        replay_age_seconds: row.get(2),
        upstream: row.get(3),
        application_name: conninfo_value(
            row.get::<_, Option<String>>(4).as_deref(),
            "application_name",
        ),
    }))
}

/// One `key=value` of a libpq connection string (values without quotes).
fn conninfo_value(conninfo: Option<&str>, key: &str) -> Option<String> {
    conninfo?.split_whitespace().find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.trim_matches('\'').to_string())
    })
}

/// A WAL position (`16/B374D848`) as a number of bytes.
pub fn parse_lsn(lsn: &str) -> Option<u64> {
    let (high, low) = lsn.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// The driver's error with its cause (its own text is often just "db error").
fn error_text(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

/// Whether a commit can be acknowledged now, and a sentence that says why
/// or why not, naming the nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Writes {
    pub can_commit: bool,
    pub sentence: String,
}

/// Whether writes can commit, as a sentence that names the nodes.
pub fn writes(nodes: &[NodeStatus]) -> Writes {
    let primaries: Vec<(&NodeStatus, &PrimaryStatus)> = nodes
        .iter()
        .filter_map(|n| match &n.state {
            NodeState::Primary(p) => Some((n, p)),
            _ => None,
        })
        .collect();
    let (node, primary) = match primaries.as_slice() {
        [] => {
            return Writes {
                can_commit: false,
                sentence: format!(
                    "writes cannot commit: none of the {} database nodes is primary (a failover \
                     may be under way; Patroni promotes a synchronous standby once the old \
                     primary's leader key expires)",
                    nodes.len()
                ),
            };
        }
        [one] => *one,
        several => {
            let names: Vec<&str> = several.iter().map(|(n, _)| n.address.as_str()).collect();
            return Writes {
                can_commit: false,
                sentence: format!(
                    "{} nodes claim to be primary ({}): a split brain; do not write until one is \
                     demoted",
                    several.len(),
                    names.join(", ")
                ),
            };
        }
    };
    if !primary.requires_synchronous_standby() {
        return Writes {
            can_commit: true,
            sentence: format!(
                "writes commit on {} (primary; commits do not wait for a standby)",
                node.address
            ),
        };
    }
    let sync: Vec<&str> =
        primary.replicas.iter().filter(|r| r.is_synchronous()).map(|r| r.name.as_str()).collect();
    if sync.is_empty() {
        return Writes {
            can_commit: false,
            sentence: format!(
                "writes cannot commit: primary {} requires a synchronous standby \
                 (synchronous_standby_names = {:?}) and none is streaming; every commit waits \
                 until one is (strict synchronous mode never acknowledges a commit that only one \
                 node has)",
                node.address, primary.synchronous_standby_names
            ),
        };
    }
    Writes {
        can_commit: true,
        sentence: format!(
            "writes commit on {} (primary) and are acknowledged once synchronous standby {} \
             has them",
            node.address,
            sync.join(", ")
        ),
    }
}

/// The node that accepts writes, if exactly one does.
pub fn primary(nodes: &[NodeStatus]) -> Option<(&NodeStatus, &PrimaryStatus)> {
    let mut primaries = nodes.iter().filter_map(|n| match &n.state {
        NodeState::Primary(p) => Some((n, p)),
        _ => None,
    });
    let first = primaries.next()?;
    primaries.next().is_none().then_some(first)
}

/// Waits until one node of `url` is primary, a commit can be acknowledged
/// (a synchronous standby streams, where one is required) and at least
/// `standbys` standbys stream from it.
pub async fn wait_until_writable(
    url: &str,
    standbys: usize,
    limit: Duration,
) -> Result<PrimaryStatus, String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let nodes = node_statuses(url, Duration::from_secs(2)).await.map_err(|e| e.to_string())?;
        if let Some((_, primary)) = primary(&nodes)
            && primary.can_commit()
            && primary.replicas.iter().filter(|r| r.state == "streaming").count() >= standbys
        {
            return Ok(primary.clone());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "the replicated database at {url} did not get a primary that can commit with \
                 {standbys} streaming standbys within {limit:?}: {nodes:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The standby that has replayed the most WAL, of those that answered:
/// with no primary, the node whose data is the most complete (in strict
/// synchronous mode, it has every acknowledged commit).
pub fn furthest_standby(nodes: &[NodeStatus]) -> Option<&NodeStatus> {
    nodes
        .iter()
        .filter_map(|n| match &n.state {
            NodeState::Standby(s) => Some((n, s.replay_lsn.as_deref().and_then(parse_lsn)?)),
            _ => None,
        })
        .max_by_key(|(_, lsn)| *lsn)
        .map(|(n, _)| n)
}

/// `url` (a URL, not a `key=value` string) with its hosts replaced by the
/// one node `address` (`host:port` as [`hosts_of`] gives it) and no
/// `target_session_attrs`: a connection to that node whatever its role.
pub fn node_url(url: &str, address: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let query: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("target_session_attrs="))
        .collect();
    let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
    Some(format!("{scheme}://{user}{address}{path}{query}"))
}

/// How many hosts `url` names (more than one: a replicated database).
pub fn host_count(url: &str) -> usize {
    tokio_postgres::Config::from_str(url).map(|c| c.get_hosts().len()).unwrap_or(1)
}

/// Each host of `config` with its port (one port given applies to every
/// host), as `host:port` text (IPv6 in brackets) and as its parts.  The one
/// reading of a multi-host URL's hosts: messages, `omdb db status`, and
/// devstack's registrations all ask it.
pub fn hosts_of(config: &tokio_postgres::Config) -> Vec<(String, String, u16)> {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            let name = match host {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            };
            let address = match host {
                tokio_postgres::config::Host::Tcp(h) if h.contains(':') => format!("[{h}]:{port}"),
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            };
            (address, name, port)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standby(address: &str, lsn: Option<&str>) -> NodeStatus {
        NodeStatus {
            address: address.into(),
            state: NodeState::Standby(StandbyStatus {
                timeline: Some(2),
                replay_lsn: lsn.map(str::to_string),
                replay_age_seconds: None,
                upstream: None,
                application_name: None,
            }),
        }
    }

    #[test]
    fn the_furthest_standby_is_the_one_that_replayed_the_most() {
        let nodes = vec![
            standby("127.0.0.1:1", Some("0/3000060")),
            NodeStatus {
                address: "127.0.0.1:2".into(),
                state: NodeState::Unreachable { error: "refused".into() },
            },
            standby("127.0.0.1:3", Some("0/3000148")),
            standby("127.0.0.1:4", None),
        ];
        assert_eq!(furthest_standby(&nodes).unwrap().address, "127.0.0.1:3");
        assert!(furthest_standby(&nodes[1..2]).is_none());
    }

    #[test]
    fn a_node_url_names_one_host_and_any_role() {
        let url = "postgresql://root@127.0.0.1:5001,127.0.0.1:5002,[::1]:5003/control_plane\
                   ?sslmode=disable&target_session_attrs=read-write";
        assert_eq!(
            node_url(url, "[::1]:5003").unwrap(),
            "postgresql://root@[::1]:5003/control_plane?sslmode=disable"
        );
        assert_eq!(
            node_url("postgres://a,b/db?target_session_attrs=read-write", "b:1").unwrap(),
            "postgres://b:1/db"
        );
        assert_eq!(node_url("host=a port=1", "a:1"), None);
    }
}
