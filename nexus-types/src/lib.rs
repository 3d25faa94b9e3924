//! Nexus's wire types, apart from its API trait: what a client, omdb, the
//! lints and the readiness check all read, without building the server
//! framework.
//!
//! - [`task_name`]: the DNS background tasks' names, as a type.
//! - [`task_status`]: the typed statuses the DNS tasks report.
//! - [`propagation_history`]: what a Nexus keeps per generation: when it
//!   first saw it, and every push attempt per server.
//! - [`task_view`]: the one decoding of what a DNS task last reported
//!   (status, outcome, progress), which every reader uses.
//! - [`lints`] and [`readiness`]: what needs attention, and whether a Nexus
//!   is in sync, decided once from task statuses.
//! - [`NexusStatus`], [`NexusReadiness`]: the bodies of `/status` and
//!   `/ready`.
//! - [`config`]: the Nexus config file, read by Nexus and written by
//!   devstack and the tests.

pub mod config;
pub mod lints;
pub mod propagation_history;
pub mod readiness;
pub mod task_name;
pub mod task_status;
pub mod task_view;

use chrono::{DateTime, Utc};
use dns_types::DnsGroup;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use uuid::Uuid;

/// Longest `POST /bgtasks/activate` with `wait` blocks; after that the
/// statuses are returned as they are.  An answer sooner means every
/// activation the request asked for has completed (a task shown running
/// then is in a later activation, started by something else).
pub const ACTIVATE_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `n` and `noun`, plural unless `n` is 1: "1 name", "3 names", "0 servers".
/// Every count a person reads goes through here, so none says "1 names".
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct NexusStatus {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
    /// Where this internal API listens.
    pub internal_api_address: SocketAddr,
    /// The database node this Nexus's connections reach (none before its
    /// first connection), and what its pool has seen.
    #[serde(default)]
    pub database: Option<DatabaseConnection>,
}

/// Which database node a process is connected to.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct DatabaseConnection {
    /// `host:port` as the node reports it.
    pub node: String,
    /// Since when new connections reach it.
    pub since: DateTime<Utc>,
    /// How many times new connections reached another node than before.
    pub failovers_seen: u64,
}

/// `GET /ready` when ready: per group, what is served where.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct NexusReadiness {
    pub groups: Vec<GroupReadiness>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct GroupReadiness {
    pub group: DnsGroup,
    /// The generation loaded, which every server serves.
    pub generation: u64,
    /// The servers' config API addresses.
    pub servers: Vec<String>,
    /// When the last server was done.
    pub all_done_at: DateTime<Utc>,
}
