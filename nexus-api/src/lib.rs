//! Nexus's internal HTTP API, as a Dropshot API trait.
//!
//! The interface only: endpoints, types and stable error codes.  The
//! implementation is in `nexus`; the OpenAPI document is
//! `openapi/nexus-internal.json` (checked against this trait by a test) and
//! `nexus-client` is generated from it.

use api_json::StrictJson;
use background_task_types::BackgroundTask;
use dns_types::{DnsChange, DnsGroup, DnsVersion};
use dropshot::{HttpError, HttpResponseOk, Path, Query, RequestContext};
use nexus_types::propagation_history::NexusHistory;
use nexus_types::{NexusReadiness, NexusStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API's version, as published in the OpenAPI document.
pub const API_VERSION: semver::Version = semver::Version::new(1, 1, 0);

/// Stable `error_code`s clients match on.
pub mod error_codes {
    /// No background task has the given name (404).
    pub const UNKNOWN_TASK: &str = "UnknownTask";
    /// The DNS change is not valid; the message names the offending name or
    /// record (400).
    pub const INVALID_DNS_CHANGE: &str = "InvalidDnsChange";
    /// The database could not be reached or did not answer in time (503).
    pub const DATABASE_UNAVAILABLE: &str = "DatabaseUnavailable";
    /// The connection to the database was lost during COMMIT (or COMMIT
    /// did not return in time): the change may or may not have been
    /// applied.  Send it again with the same `idempotency_key` (503).
    pub const COMMIT_OUTCOME_UNKNOWN: &str = "CommitOutcomeUnknown";
    /// The `idempotency_key` was already used for another change (409).
    pub const IDEMPOTENCY_KEY_REUSED: &str = "IdempotencyKeyReused";
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
    #[endpoint { method = POST, path = "/bgtasks/activate", request_body_max_bytes = 65536 }]
    async fn bgtask_activate(
        rqctx: RequestContext<Self::Context>,
        body: StrictJson<BackgroundTasksActivateRequest>,
    ) -> Result<HttpResponseOk<BTreeMap<String, BackgroundTask>>, HttpError>;

    /// This Nexus's propagation history of the group, newest generation
    /// first: when it first saw each generation and every push attempt to
    /// every server.  `generation` selects one; `limit` (default 100) caps
    /// how many.
    #[endpoint { method = GET, path = "/dns/{group}/history" }]
    async fn dns_history(
        rqctx: RequestContext<Self::Context>,
        path: Path<DnsGroupPath>,
        query: Query<DnsHistoryQuery>,
    ) -> Result<HttpResponseOk<NexusHistory>, HttpError>;

    /// Changes DNS data: one call is one new generation of the group.
    /// Propagation to the DNS servers starts right away.
    #[endpoint {
        method = POST,
        path = "/dns/{group}/changes",
        request_body_max_bytes = 16_777_216,
    }]
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
pub struct DnsHistoryQuery {
    /// Only this generation.
    #[serde(default)]
    pub generation: Option<u64>,
    /// Only generations from this one on.
    #[serde(default)]
    pub since_generation: Option<u64>,
    /// At most this many generations (default 100, at most 10,000).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct BackgroundTasksActivateRequest {
    pub bgtask_names: Vec<String>,
    /// Wait for the activations to complete.
    #[serde(default)]
    pub wait: bool,
}

/// The OpenAPI document of this API, as checked into `openapi/`.
pub fn openapi_document() -> serde_json::Value {
    nexus_internal_api_mod::stub_api_description()
        .expect("the API description is valid")
        .openapi("Nexus internal API", API_VERSION)
        .json()
        .expect("the OpenAPI document serializes")
}
