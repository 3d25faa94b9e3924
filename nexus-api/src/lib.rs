//! Nexus's internal HTTP API, as a Dropshot API trait.
//!
//! The interface only: endpoints, types and stable error codes.  The
//! implementation is in `nexus`; the OpenAPI document is
//! `openapi/nexus-internal.json` (checked against this trait by a test) and
//! `nexus-client` is generated from it.

use api_json::StrictJson;
use background_task_types::BackgroundTask;
use chrono::{DateTime, Utc};
use dns_types::{DnsChange, DnsGroup, DnsVersion};
use dropshot::{HttpError, HttpResponseOk, Path, RequestContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use uuid::Uuid;

/// The API's version, as published in the OpenAPI document.
pub const API_VERSION: semver::Version = semver::Version::new(1, 0, 0);

/// Stable `error_code`s clients match on.
pub mod lints;
pub mod readiness;

pub mod error_codes {
    /// No background task has the given name (404).
    pub const UNKNOWN_TASK: &str = "UnknownTask";
    /// The DNS change is not valid; the message names the offending name or
    /// record (400).
    pub const INVALID_DNS_CHANGE: &str = "InvalidDnsChange";
    /// The database could not be reached or did not answer in time (503).
    pub const DATABASE_UNAVAILABLE: &str = "DatabaseUnavailable";
    /// `GET /ready`: alive, but not (yet) in sync (503).
    pub const NOT_READY: &str = "NotReady";
    /// An activation request names no task, too many, or one twice (400).
    pub const INVALID_ACTIVATION: &str = "InvalidActivation";
}

#[dropshot::api_description]
pub trait NexusInternalApi {
    type Context;

    /// Prometheus metrics (text exposition).
    #[endpoint { method = GET, path = "/metrics", unpublished = true }]
    async fn metrics_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<http::Response<dropshot::Body>, HttpError>;

    /// Alive: the process answers.
    #[endpoint { method = GET, path = "/health" }]
    async fn health_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<NexusStatus>, HttpError>;

    /// Ready: every group's config is loaded and every server of its list
    /// serves the generation loaded.  200 with the evidence, or 503
    /// (`NotReady`) naming what is not.
    #[endpoint { method = GET, path = "/ready" }]
    async fn ready_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<NexusReadiness>, HttpError>;

    /// Who this Nexus is.
    #[endpoint { method = GET, path = "/status" }]
    async fn status_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<NexusStatus>, HttpError>;

    /// Every background task: what it is, whether it runs, its last
    /// activation and recent history.
    #[endpoint { method = GET, path = "/bgtasks" }]
    async fn bgtask_list(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<BTreeMap<String, BackgroundTask>>, HttpError>;

    /// One background task.
    #[endpoint { method = GET, path = "/bgtasks/view/{bgtask_name}" }]
    async fn bgtask_view(
        rqctx: RequestContext<Self::Context>,
        path: Path<BackgroundTaskPath>,
    ) -> Result<HttpResponseOk<BackgroundTask>, HttpError>;

    /// Activates background tasks.  With `wait`, returns once the activation
    /// each request caused (or one that covered it) has completed; otherwise
    /// right away.  An unknown name activates nothing (404).
    #[endpoint { method = POST, path = "/bgtasks/activate" }]
    async fn bgtask_activate(
        rqctx: RequestContext<Self::Context>,
        body: StrictJson<BackgroundTasksActivateRequest>,
    ) -> Result<HttpResponseOk<BTreeMap<String, BackgroundTask>>, HttpError>;

    /// Changes DNS data: one call is one new generation of the group.
    /// Propagation to the DNS servers starts right away.
    #[endpoint { method = POST, path = "/dns/{group}/changes" }]
    async fn dns_change(
        rqctx: RequestContext<Self::Context>,
        path: Path<DnsGroupPath>,
        body: StrictJson<DnsChange>,
    ) -> Result<HttpResponseOk<DnsVersion>, HttpError>;
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct BackgroundTaskPath {
    pub bgtask_name: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct DnsGroupPath {
    pub group: DnsGroup,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct BackgroundTasksActivateRequest {
    pub bgtask_names: Vec<String>,
    /// Wait for the activations to complete.
    #[serde(default)]
    pub wait: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct NexusStatus {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
    /// Where this internal API listens.
    pub internal_api_address: SocketAddr,
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

/// The OpenAPI document of this API, as checked into `openapi/`.
pub fn openapi_document() -> serde_json::Value {
    nexus_internal_api_mod::stub_api_description()
        .expect("the API description is valid")
        .openapi("Nexus internal API", API_VERSION)
        .json()
        .expect("the OpenAPI document serializes")
}

/// The names of the DNS background tasks, as a type: `dns_config_<group>`,
/// `dns_servers_<group>`, `dns_propagation_<group>`.  Nexus registers its
/// tasks under these and omdb recognizes them by parsing, so the spelling
/// lives here alone.
pub mod task_name {
    use dns_types::DnsGroup;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::fmt;
    use std::str::FromStr;

    /// What a DNS task does, in pipeline order.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum DnsTaskKind {
        Config,
        Servers,
        Propagation,
    }

    impl DnsTaskKind {
        pub const ALL: [DnsTaskKind; 3] =
            [DnsTaskKind::Config, DnsTaskKind::Servers, DnsTaskKind::Propagation];

        fn prefix(self) -> &'static str {
            match self {
                DnsTaskKind::Config => "dns_config",
                DnsTaskKind::Servers => "dns_servers",
                DnsTaskKind::Propagation => "dns_propagation",
            }
        }
    }

    /// One DNS background task's name.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct DnsTaskName {
        pub kind: DnsTaskKind,
        pub group: DnsGroup,
    }

    impl DnsTaskName {
        pub fn config(group: DnsGroup) -> Self {
            DnsTaskName { kind: DnsTaskKind::Config, group }
        }
        pub fn servers(group: DnsGroup) -> Self {
            DnsTaskName { kind: DnsTaskKind::Servers, group }
        }
        pub fn propagation(group: DnsGroup) -> Self {
            DnsTaskName { kind: DnsTaskKind::Propagation, group }
        }
        /// The three tasks of `group`, in pipeline order.
        pub fn of_group(group: DnsGroup) -> [DnsTaskName; 3] {
            DnsTaskKind::ALL.map(|kind| DnsTaskName { kind, group })
        }
        /// The shorthand that selects a group's three tasks (`dns_internal`).
        pub fn group_selector(group: DnsGroup) -> String {
            format!("dns_{group}")
        }
    }

    impl fmt::Display for DnsTaskName {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}_{}", self.kind.prefix(), self.group)
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    pub struct NotADnsTask(pub String);

    impl fmt::Display for NotADnsTask {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{:?} is not the name of a DNS background task", self.0)
        }
    }

    impl std::error::Error for NotADnsTask {}

    impl FromStr for DnsTaskName {
        type Err = NotADnsTask;
        fn from_str(s: &str) -> Result<Self, Self::Err> {
            for kind in DnsTaskKind::ALL {
                if let Some(group) = s.strip_prefix(kind.prefix()).and_then(|r| r.strip_prefix('_'))
                    && let Ok(group) = group.parse::<DnsGroup>()
                {
                    return Ok(DnsTaskName { kind, group });
                }
            }
            Err(NotADnsTask(s.to_string()))
        }
    }

    impl Serialize for DnsTaskName {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(self)
        }
    }

    impl<'de> Deserialize<'de> for DnsTaskName {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let s = String::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names_round_trip_and_strangers_are_refused() {
            for group in DnsGroup::ALL {
                for name in DnsTaskName::of_group(group) {
                    assert_eq!(name.to_string().parse::<DnsTaskName>(), Ok(name));
                }
            }
            assert_eq!(
                DnsTaskName::propagation(DnsGroup::External).to_string(),
                "dns_propagation_external"
            );
            for bad in
                ["dns_config", "dns_config_", "dns_config_sideways", "widget", "dns_internal"]
            {
                assert!(bad.parse::<DnsTaskName>().is_err(), "{bad}");
            }
        }
    }
}

/// The statuses the DNS background tasks report (their `details`), shared by
/// Nexus, which produces them, and omdb, which renders them.
pub mod task_status {
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
                    write!(
                        f,
                        "read in full ({}) in {duration_ms:.1} ms",
                        count(*names_read, "name")
                    )?;
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

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum PropagationResult {
        Success,
        Error,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
        /// The generation the server reported, if it answered.
        pub server_generation: Option<u64>,
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
}
