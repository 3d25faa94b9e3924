//! The DNS server's config HTTP API, as a Dropshot API trait.
//!
//! This crate holds only the interface: the endpoints, their types and the
//! stable error codes.  The implementation is in `dns-server`; clients are
//! generated from the OpenAPI document (`openapi/dns-server.json`, checked
//! against this trait by a test) into `dns-server-client`.

use api_json::StrictJson;
use chrono::{DateTime, Utc};
use dns_types::apply_history::ServerHistory;
use dns_types::{ConfigDiff, DnsConfig};
use dropshot::{HttpError, HttpResponseOk, HttpResponseUpdatedNoContent, Query, RequestContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use uuid::Uuid;

/// The API's version, as published in the OpenAPI document.
/// 2.0.0: `PUT /config/diff` answers 200 with what the write did
/// ([`WriteResult`]) instead of 204, so a writer can tell its write from
/// one that found the generation already there.  (`PUT /config` answers
/// 204 as the contract says.)
pub const API_VERSION: semver::Version = semver::Version::new(2, 0, 0);

/// Stable `error_code`s clients match on.
pub mod error_codes {
    /// The PUT would move the server backwards, or replace a generation with
    /// different content.
    pub const BAD_UPDATE_GENERATION: &str = "BadUpdateGeneration";
    /// The PUT's config is not valid (names, records).
    pub const INVALID_CONFIG: &str = "InvalidConfig";
    /// The server has not been given any config yet.
    pub const NO_CONFIG: &str = "NoConfig";
    /// The config could not be stored durably; nothing changed.
    pub const STORAGE: &str = "StorageFailed";
    /// A repair named a served generation and digest that are not what the
    /// server serves; nothing changed.
    pub const REPAIR_PRECONDITION: &str = "RepairPreconditionFailed";
    /// `PUT /config/diff`: the server does not serve exactly the
    /// difference's base (generation and digest), or lacks a zone it
    /// changes; nothing changed, send the whole config.
    pub const DIFF_BASE_MISMATCH: &str = "DiffBaseMismatch";
    /// `PUT /config/diff`: applied, the difference would not give its
    /// stated digest; nothing changed, send the whole config.
    pub const DIFF_DIGEST_MISMATCH: &str = "DiffDigestMismatch";
    /// `GET /ready`: the server is alive but not serving a config (503).
    pub const NOT_READY: &str = "NotReady";
}

#[dropshot::api_description]
pub trait DnsServerApi {
    type Context;

    /// The config this server serves, with the time it was applied.
    #[endpoint { method = GET, path = "/config" }]
    async fn config_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<AppliedConfig>, HttpError>;

    /// Replaces the served config with a newer generation.
    ///
    /// Applying the generation already served, with the same content, does
    /// nothing and succeeds.  An older generation, or the same generation
    /// with different content, fails with `BadUpdateGeneration` (409) and
    /// changes nothing.
    #[endpoint { method = PUT, path = "/config" }]
    async fn config_put(
        rqctx: RequestContext<Self::Context>,
        config: StrictJson<DnsConfig>,
    ) -> Result<HttpResponseUpdatedNoContent, HttpError>;

    /// Moves the served config to a newer generation by a difference: from
    /// generation `from_generation` with digest `from_digest` to
    /// `generation` with digest `digest`, the changed names with their new
    /// records (none: removed).  Costs the size of the difference.
    ///
    /// The generation rules of `PUT /config` hold: the generation already
    /// served with the stated digest succeeds and does nothing; an older
    /// one, or the same with another digest, is `BadUpdateGeneration`
    /// (409).  A difference whose base is not exactly what the server
    /// serves is `DiffBaseMismatch` (409), one whose result would not have
    /// the stated digest is `DiffDigestMismatch` (409); in both cases
    /// nothing changes and the caller sends the whole config instead.
    #[endpoint { method = PUT, path = "/config/diff" }]
    async fn config_diff_put(
        rqctx: RequestContext<Self::Context>,
        diff: StrictJson<ConfigDiff>,
    ) -> Result<HttpResponseOk<WriteResult>, HttpError>;

    /// Replaces what the server serves with `config` whatever the
    /// generations, but only when the server serves exactly `replaces`
    /// (generation and digest): the way back to the database for a server
    /// that got ahead of it or diverged from it.  Otherwise fails with
    /// `RepairPreconditionFailed` (409) and changes nothing.  The repair is
    /// logged and reported by `GET /status` (`last_repair`).
    #[endpoint { method = PUT, path = "/config/repair" }]
    async fn config_repair(
        rqctx: RequestContext<Self::Context>,
        repair: StrictJson<ConfigRepair>,
    ) -> Result<HttpResponseOk<RepairRecord>, HttpError>;

    /// Prometheus metrics (text exposition).
    #[endpoint { method = GET, path = "/metrics", unpublished = true }]
    async fn metrics_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<http::Response<dropshot::Body>, HttpError>;

    /// Alive: the process answers.  Always 200 when it can answer at all.
    #[endpoint { method = GET, path = "/health" }]
    async fn health_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<Health>, HttpError>;

    /// Ready: serving a config.  200 with what it serves, or 503
    /// (`NotReady`) saying why not.
    #[endpoint { method = GET, path = "/ready" }]
    async fn ready_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<Readiness>, HttpError>;

    /// What this server is and what it serves: generation, digest, zones.
    #[endpoint { method = GET, path = "/status" }]
    async fn status_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<DnsServerStatus>, HttpError>;

    /// The apply history, newest first: every generation served (how, from
    /// whom, replacing what, how long it took), refused pushes, starts from
    /// storage and storage failures.  It survives restarts; the server keeps
    /// the last `retained_events` and says from when it holds everything
    /// (`complete_since`).
    #[endpoint { method = GET, path = "/history" }]
    async fn history_get(
        rqctx: RequestContext<Self::Context>,
        query: Query<HistoryQuery>,
    ) -> Result<HttpResponseOk<ServerHistory>, HttpError>;
}

/// `GET /history` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryQuery {
    /// Only events at or after this time.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Only events at or before this time.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// At most this many events (default 1,000; at most 10,000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `GET /health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
}

/// `GET /ready` when ready.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Readiness {
    /// The generation served.
    pub generation: u64,
    pub time_applied: DateTime<Utc>,
}

/// A config as applied by a server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AppliedConfig {
    pub config: DnsConfig,
    /// When this server started serving it.
    pub time_applied: DateTime<Utc>,
}

/// What a server serves, as a repair names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServedIdentity {
    pub generation: u64,
    /// Absent for a server with no config.
    pub digest: Option<String>,
}

/// A request to replace a wrong config (`PUT /config/repair`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigRepair {
    /// What the caller saw the server serve; the repair applies only if the
    /// server still serves exactly this.
    pub replaces: ServedIdentity,
    /// The config to serve instead (from the database).
    pub config: DnsConfig,
    /// Why, in words: kept with the repair's record.
    pub reason: String,
}

/// What a config write that succeeded did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteOutcome {
    /// The server serves the written generation from this write on.
    Applied,
    /// It already served exactly that generation with that content (an
    /// earlier write, maybe another writer's): nothing changed.
    AlreadyApplied,
}

/// The answer to a config write that succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WriteResult {
    pub outcome: WriteOutcome,
    /// The generation served now: the one written.
    pub generation: u64,
}

/// What a repair did, kept by the server (until it restarts) and reported
/// by `GET /status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RepairRecord {
    pub repaired_at: DateTime<Utc>,
    /// What was served before.
    pub replaced: ServedIdentity,
    /// What is served since.
    pub generation: u64,
    pub digest: String,
    pub reason: String,
}

/// A server's account of itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DnsServerStatus {
    pub id: Uuid,
    /// The generation served; 0 before any config was applied.
    pub generation: u64,
    /// When the served generation was applied (absent before any).
    pub time_applied: Option<DateTime<Utc>>,
    /// `dns_types::config_digest` of the served config (absent before any).
    pub applied_config_digest: Option<String>,
    /// When the generation was created, by whom and why (from the config).
    pub config_time_created: Option<DateTime<Utc>>,
    pub config_creator: Option<String>,
    pub config_comment: Option<String>,
    /// Where it answers DNS queries (UDP and TCP).
    pub dns_addresses: Vec<SocketAddr>,
    pub zones: Vec<ZoneStatus>,
    pub started_at: DateTime<Utc>,
    /// The last repair since the server started, if any.
    #[serde(default)]
    pub last_repair: Option<RepairRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ZoneStatus {
    pub zone_name: String,
    /// Number of names in the zone (not counting the synthesized apex SOA).
    pub names: u64,
}

/// The OpenAPI document of this API, as checked into `openapi/`.
pub fn openapi_document() -> serde_json::Value {
    let description =
        dns_server_api_mod::stub_api_description().expect("the API description is valid");
    description
        .openapi("DNS server config API", API_VERSION)
        .json()
        .expect("the OpenAPI document serializes")
}
