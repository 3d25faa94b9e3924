//! Nexus's internal HTTP API, as a Dropshot API trait.
//!
//! The interface only: endpoints, types and stable error codes.  The
//! implementation is in `nexus`; the OpenAPI document is
//! `openapi/nexus-internal.json` (checked against this trait by a test) and
//! `nexus-client` is generated from it.

use background_tasks::BackgroundTask;
use chrono::{DateTime, Utc};
use dns_types::{DnsChange, DnsGroup, DnsVersion};
use dropshot::{HttpError, HttpResponseOk, Path, RequestContext, TypedBody};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use uuid::Uuid;

/// The API's version, as published in the OpenAPI document.
pub const API_VERSION: semver::Version = semver::Version::new(1, 0, 0);

/// Stable `error_code`s clients match on.
pub mod error_codes {
    /// No background task has the given name (404).
    pub const UNKNOWN_TASK: &str = "UnknownTask";
    /// The DNS change is not valid; the message names the offending name or
    /// record (400).
    pub const INVALID_DNS_CHANGE: &str = "InvalidDnsChange";
    /// The database could not be reached or did not answer in time (503).
    pub const DATABASE_UNAVAILABLE: &str = "DatabaseUnavailable";
}

#[dropshot::api_description]
pub trait NexusInternalApi {
    type Context;

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
        body: TypedBody<BackgroundTasksActivateRequest>,
    ) -> Result<HttpResponseOk<BTreeMap<String, BackgroundTask>>, HttpError>;

    /// Changes DNS data: one call is one new generation of the group.
    /// Propagation to the DNS servers starts right away.
    #[endpoint { method = POST, path = "/dns/{group}/changes" }]
    async fn dns_change(
        rqctx: RequestContext<Self::Context>,
        path: Path<DnsGroupPath>,
        body: TypedBody<DnsChange>,
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

/// The OpenAPI document of this API, as checked into `openapi/`.
pub fn openapi_document() -> serde_json::Value {
    nexus_internal_api_mod::stub_api_description()
        .expect("the API description is valid")
        .openapi("Nexus internal API", API_VERSION)
        .json()
        .expect("the OpenAPI document serializes")
}

/// The statuses the DNS background tasks report (their `details`), shared by
/// Nexus, which produces them, and omdb, which renders them.
pub mod task_status {
    use chrono::{DateTime, Utc};
    use dns_types::DnsGroup;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    /// `dns_config_<group>`: the latest generation found in the database.
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
    }

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    pub struct DnsServerEntry {
        /// The server's config API.
        pub address: SocketAddr,
        /// The SRV target it was found under.
        pub target: String,
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

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct ConfigSource {
        pub task: String,
        pub creator: String,
        pub comment: String,
        pub digest: String,
        pub first_seen_at: DateTime<Utc>,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct ServersSource {
        pub task: String,
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
        /// The server serves a newer generation (pushed by another Nexus).
        NewerGeneration,
        /// The push failed: see the message.
        Failed,
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
    }
}
