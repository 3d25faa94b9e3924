//! The statuses the DNS background tasks report (their `details`), shared by
//! Nexus, which produces them, and omdb, which renders them.

use crate::task_name::DnsTaskName;
use chrono::{DateTime, Utc};
use dns_types::DnsGroup;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// `dns_config_<group>`: the latest generation found in the database.
///
/// When reading the database fails after a config was loaded, the task
/// reports the error beside the last good config, which propagation
/// keeps pushing: both facts matter to someone debugging.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnsConfigStatus {
    pub group: DnsGroup,
    pub generation: u64,
    pub time_created: DateTime<Utc>,
    /// The Nexus that wrote this generation.
    pub creator: String,
    pub comment: String,
    pub names: u64,
    /// `dns_types::config_digest` of the config loaded.
    pub digest: String,
    /// When this Nexus first saw this generation.
    pub first_seen_at: DateTime<Utc>,
    /// Whether this activation found a generation it had not seen.
    pub changed: bool,
    /// How the config in use was read from the database: only the names
    /// that changed since the previous one, checked against the
    /// database's digest of the generation, or in full (and why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<ConfigLoad>,
    /// Why this activation could not read the database (the generation
    /// above is then the last one it did read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a generation's config was read from the database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConfigLoad {
    /// Only the names that changed since `from_generation`, applied to
    /// the config loaded before and checked against the digest the
    /// database stored for this generation.
    Difference { from_generation: u64, names_read: u64, duration_ms: f64 },
    /// Every name of the generation.
    Full {
        names_read: u64,
        duration_ms: f64,
        /// Why not a difference (absent for the first load).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl std::fmt::Display for ConfigLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigLoad::Difference { from_generation, names_read, duration_ms } => write!(
                f,
                "read the difference from generation {from_generation} ({} changed) \
                 in {duration_ms:.1} ms, checked against the database's digest",
                count(*names_read, "name")
            ),
            ConfigLoad::Full { names_read, duration_ms, reason } => {
                write!(f, "read in full ({}) in {duration_ms:.1} ms", count(*names_read, "name"))?;
                match reason {
                    Some(reason) => write!(f, ": {reason}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// `1 name`, `1,000 names`.
pub fn count(n: u64, noun: &str) -> String {
    let digits = n.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{grouped} {noun}{}", if n == 1 { "" } else { "s" })
}

/// What one push to a server sent: a difference or the whole config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushRecord {
    pub kind: PushKind,
    /// For a difference: the generation it started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_generation: Option<u64>,
    pub generation: u64,
    /// Names sent: changed names for a difference, all for a config.
    pub names: u64,
    /// Size of the request body.
    pub bytes: u64,
    /// From sending the request to the server's answer.
    pub duration_ms: f64,
    /// Why the whole config went instead of a difference, if one was
    /// possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why_full: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PushKind {
    Difference,
    Full,
}

impl std::fmt::Display for PushRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = if self.bytes >= 1 << 20 {
            format!("{:.1} MiB", self.bytes as f64 / (1 << 20) as f64)
        } else if self.bytes >= 1 << 10 {
            format!("{:.1} KiB", self.bytes as f64 / 1024.0)
        } else {
            format!("{} bytes", self.bytes)
        };
        match (self.kind, self.from_generation) {
            (PushKind::Difference, Some(from)) => write!(
                f,
                "difference {from} → {}, {}, {size}, {:.1} ms",
                self.generation,
                count(self.names, "name"),
                self.duration_ms
            )?,
            _ => write!(
                f,
                "full config {}, {}, {size}, {:.1} ms",
                self.generation,
                count(self.names, "name"),
                self.duration_ms
            )?,
        }
        match &self.why_full {
            Some(why) => write!(f, " (not a difference: {why})"),
            None => Ok(()),
        }
    }
}

/// `dns_servers_<group>`: the DNS servers found in internal DNS.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnsServersStatus {
    pub group: DnsGroup,
    /// The SRV name looked up.
    pub service_name: String,
    /// The DNS server that answered.
    pub resolved_via: SocketAddr,
    /// DNS servers asked before it that did not answer, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unanswered: Vec<UnansweredServer>,
    pub servers: Vec<DnsServerEntry>,
    /// When this Nexus first saw exactly this list.
    pub discovered_at: DateTime<Utc>,
    /// Whether this activation found a list different from the last.
    pub changed: bool,
    /// How many servers the list held before it last changed (absent
    /// before the first change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_count: Option<usize>,
}

/// A DNS server that gave no answer to a lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnansweredServer {
    pub server: SocketAddr,
    pub error: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsServerEntry {
    /// The server's config API.
    pub address: SocketAddr,
    /// The SRV target it was found under.
    pub target: String,
}

/// `dns_propagation_<group>`: what one activation reported.  Before the
/// config and the server list are both loaded (a Nexus starting up) the
/// task says what it waits for rather than recording a failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PropagationReport {
    Done(DnsPropagationStatus),
    Waiting(DnsPropagationWaiting),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnsPropagationWaiting {
    pub group: DnsGroup,
    /// The tasks that have not published what propagation needs yet.
    pub waiting_for: Vec<DnsTaskName>,
}

/// `dns_propagation_<group>`: one attempt to bring every server to the
/// latest generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnsPropagationStatus {
    pub group: DnsGroup,
    /// The generation pushed.
    pub generation: u64,
    /// Where that generation came from.
    pub config_source: ConfigSource,
    /// Where the server list came from.
    pub servers_source: ServersSource,
    /// Per server (config API address): what happened.
    pub servers: BTreeMap<String, ServerResult>,
    /// When the last server finished (all results are in by then).
    pub all_done_at: DateTime<Utc>,
}

/// What a running `dns_propagation_<group>` activation has done so far
/// (the task's progress while it runs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropagationProgress {
    pub generation: u64,
    /// Servers (config API addresses) whose push has not finished.
    pub pending: Vec<String>,
    /// Servers done, with their results.
    pub done: BTreeMap<String, ServerResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigSource {
    pub task: DnsTaskName,
    pub creator: String,
    pub comment: String,
    pub digest: String,
    pub first_seen_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServersSource {
    pub task: DnsTaskName,
    pub discovered_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PropagationResult {
    Success,
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PropagationOutcome {
    /// The server took the generation from this push.
    Applied,
    /// The server already served this generation with the same content.
    AlreadyCurrent,
    /// The server serves a newer generation that the database has
    /// (pushed by another Nexus): this Nexus is behind, and asked its
    /// config task to look again.
    NewerGeneration,
    /// The server claims a generation the database does not have: its
    /// own state is wrong (an error, never a success).
    ServerBeyondDatabase,
    /// The server serves this generation with other content than the
    /// database's: its own state is wrong.
    ServerDiverged,
    /// The server was ahead of the database or diverged from it, and
    /// this Nexus repaired it: it now serves the database's content
    /// (the message and `history.last_repair` say what it served).
    Repaired,
    /// The push failed: see the message.
    Failed,
    /// A push to a server whose last attempt found it unreachable has not
    /// ended yet: it runs on in the background (an error until it ends).
    InFlight,
}

impl std::fmt::Display for PropagationOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PropagationOutcome::Applied => "applied",
            PropagationOutcome::AlreadyCurrent => "already current",
            PropagationOutcome::NewerGeneration => "server newer",
            PropagationOutcome::ServerBeyondDatabase => "server beyond the database",
            PropagationOutcome::ServerDiverged => "server diverged",
            PropagationOutcome::Repaired => "repaired",
            PropagationOutcome::Failed => "failed",
            PropagationOutcome::InFlight => "in flight",
        })
    }
}

impl PropagationOutcome {
    /// Whether the failure lies in the server's own state rather than in
    /// the push (see `dns_types::sync::SyncState::is_server_fault`).
    pub fn is_server_fault(self) -> bool {
        matches!(
            self,
            PropagationOutcome::ServerBeyondDatabase | PropagationOutcome::ServerDiverged
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerResult {
    /// `success` or `error`.
    pub result: PropagationResult,
    pub outcome: PropagationOutcome,
    pub message: String,
    /// The server could not be reached at all (no connection, or no
    /// complete answer in time), as opposed to one that answered with an
    /// error.  Only set on a failure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreachable: bool,
    /// The generation the server reported, if it answered.
    pub server_generation: Option<u64>,
    /// When this push began (absent in records from before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: DateTime<Utc>,
    /// What was sent, when something was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushRecord>,
    /// What this Nexus remembers of the server across activations.
    #[serde(default)]
    pub history: ServerHistory,
}

/// One server's propagation record, kept by a Nexus across activations
/// (since the Nexus started).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerHistory {
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// The first failure of the current run of failures.
    pub failing_since: Option<DateTime<Utc>>,
    pub consecutive_failures: u64,
    /// The last generation this Nexus saw the server serve correctly.
    pub generation_applied: Option<u64>,
    /// The last repair this Nexus made of the server, if any.
    #[serde(default)]
    pub last_repair: Option<ServerRepair>,
    /// The last push this Nexus made to the server (difference or
    /// whole config, its size and time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push: Option<PushRecord>,
}

/// A server that was ahead of the database or diverged from it, put
/// back to the database's content (`PUT /config/repair`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerRepair {
    pub repaired_at: DateTime<Utc>,
    /// What the server served before.
    pub replaced_generation: u64,
    pub replaced_digest: Option<String>,
    /// What it serves since.
    pub generation: u64,
    /// Why (beyond the database, diverged).
    pub reason: String,
}
