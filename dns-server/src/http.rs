//! The config HTTP API (`dns-server-api`), implemented over [`ServerState`].

use crate::metrics::{ApplyKind, ApplyOutcome};
use crate::state::{ServerState, UpdateError, UpdateOutcome};
use api_json::StrictJson;
use dns_server_api::{
    AppliedConfig, ConfigRepair, DnsServerApi, DnsServerStatus, Health, HistoryQuery, Readiness,
    RepairRecord, WriteOutcome, WriteResult, ZoneStatus, error_codes,
};
use dns_types::apply_history::ServerHistory;
use dns_types::{ConfigDiff, DnsConfig};
use dropshot::{
    ClientErrorStatusCode, HttpError, HttpResponseOk, HttpResponseUpdatedNoContent, Query,
    RequestContext,
};
use std::sync::Arc;

pub enum DnsServerApiImpl {}

impl DnsServerApi for DnsServerApiImpl {
    type Context = Arc<ServerState>;

    async fn config_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<AppliedConfig>, HttpError> {
        let _busy = rqctx.context().in_flight.enter(rqctx.request.remote_addr());
        let applied = rqctx.context().applied_config().await.map_err(|e| {
            let message = format!("reading the stored config: {:#}", anyhow::Error::new(e));
            let mut error = HttpError::for_internal_error(message.clone());
            error.error_code = Some(error_codes::STORAGE.into());
            error.external_message = message;
            error
        })?;
        let applied: AppliedConfig = applied.ok_or_else(|| {
            HttpError::for_client_error(
                Some(error_codes::NO_CONFIG.into()),
                ClientErrorStatusCode::NOT_FOUND,
                "this DNS server has not been given a config yet".into(),
            )
        })?;
        Ok(HttpResponseOk(applied))
    }

    async fn config_put(
        rqctx: RequestContext<Self::Context>,
        config: StrictJson<DnsConfig>,
    ) -> Result<HttpResponseUpdatedNoContent, HttpError> {
        let _busy = rqctx.context().in_flight.enter(rqctx.request.remote_addr());
        rqctx.context().api_token.authorize(rqctx.request.headers())?;
        let config = config.into_inner();
        let generation = config.generation;
        let state = rqctx.context();
        let writer = writer(&rqctx);
        timed_write(state, ApplyKind::Put, generation, state.update(config, writer))
            .await
            .map(|_| HttpResponseUpdatedNoContent())
    }

    async fn config_diff_put(
        rqctx: RequestContext<Self::Context>,
        diff: StrictJson<ConfigDiff>,
    ) -> Result<HttpResponseOk<WriteResult>, HttpError> {
        let _busy = rqctx.context().in_flight.enter(rqctx.request.remote_addr());
        rqctx.context().api_token.authorize(rqctx.request.headers())?;
        let diff = diff.into_inner();
        let generation = diff.generation;
        let state = rqctx.context();
        let writer = writer(&rqctx);
        timed_write(state, ApplyKind::Diff, generation, state.apply_diff(diff, writer)).await
    }

    async fn config_repair(
        rqctx: RequestContext<Self::Context>,
        repair: StrictJson<ConfigRepair>,
    ) -> Result<HttpResponseOk<RepairRecord>, HttpError> {
        let _busy = rqctx.context().in_flight.enter(rqctx.request.remote_addr());
        rqctx.context().api_token.authorize(rqctx.request.headers())?;
        let repair = repair.into_inner();
        let generation = repair.config.generation;
        let started = std::time::Instant::now();
        let result = rqctx.context().repair(repair, writer(&rqctx)).await;
        let outcome = result.as_ref().map_or_else(apply_outcome, |_| ApplyOutcome::Applied);
        let seconds = started.elapsed().as_secs_f64();
        rqctx.context().metrics.apply(ApplyKind::Repair, outcome, seconds);
        result.map(HttpResponseOk).map_err(|e| to_http_error(generation, e))
    }

    async fn metrics_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<http::Response<dropshot::Body>, HttpError> {
        let state = rqctx.context();
        let query_log = state.query_log.as_ref().map(|log| log.counts());
        api_json::metrics_response(state.metrics.render(&state.served(), query_log))
    }

    async fn health_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<Health>, HttpError> {
        let state = rqctx.context();
        Ok(HttpResponseOk(Health { id: state.id, started_at: state.started_at }))
    }

    async fn ready_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<Readiness>, HttpError> {
        let served = rqctx.context().served();
        match served.applied.as_ref() {
            Some(applied) => Ok(HttpResponseOk(Readiness {
                generation: served.generation(),
                time_applied: applied.time_applied,
            })),
            None => Err(HttpError {
                status_code: dropshot::ErrorStatusCode::SERVICE_UNAVAILABLE,
                error_code: Some(error_codes::NOT_READY.into()),
                external_message: "not ready: this server has not been given a config yet \
                                   (Nexus pushes one once it finds the server in internal DNS)"
                    .into(),
                internal_message: "no config".into(),
                headers: None,
            }),
        }
    }

    async fn status_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<DnsServerStatus>, HttpError> {
        let _busy = rqctx.context().in_flight.enter(rqctx.request.remote_addr());
        let state = rqctx.context();
        let served = state.served();
        let applied = served.applied.as_ref();
        Ok(HttpResponseOk(DnsServerStatus {
            id: state.id,
            generation: served.generation(),
            time_applied: applied.map(|a| a.time_applied),
            applied_config_digest: applied.map(|a| a.digest.clone()),
            config_time_created: applied.map(|a| a.time_created),
            config_creator: applied.map(|a| a.creator.clone()),
            config_comment: applied.map(|a| a.comment.clone()),
            dns_addresses: state.dns_addresses.clone(),
            zones: served
                .zone_sizes()
                .map(|(zone_name, names)| ZoneStatus {
                    zone_name: zone_name.into(),
                    names: names as u64,
                })
                .collect(),
            started_at: state.started_at,
            last_repair: state.last_repair(),
        }))
    }

    async fn history_get(
        rqctx: RequestContext<Self::Context>,
        query: Query<HistoryQuery>,
    ) -> Result<HttpResponseOk<ServerHistory>, HttpError> {
        let _busy = rqctx.context().in_flight.enter(rqctx.request.remote_addr());
        let query = query.into_inner();
        let limit = query.limit.unwrap_or(1_000).clamp(1, 10_000) as usize;
        Ok(HttpResponseOk(rqctx.context().history(query.since, query.until, limit)))
    }
}

/// Who the request says wrote it (`X-Writer-Id`), bounded and with control
/// characters escaped, since it is kept and printed.
fn writer(rqctx: &RequestContext<std::sync::Arc<ServerState>>) -> Option<String> {
    let value = rqctx.request.headers().get(api_auth::WRITER_HEADER)?;
    let text = String::from_utf8_lossy(value.as_bytes());
    Some(dns_types::limits::bounded_text(text.trim(), dns_types::limits::MAX_NOTE_BYTES))
}

/// Runs one config write (`PUT /config`, `PUT /config/diff`), counts and
/// times it, and turns its error into the HTTP error.
async fn timed_write(
    state: &ServerState,
    kind: ApplyKind,
    generation: u64,
    write: impl std::future::Future<Output = Result<UpdateOutcome, UpdateError>>,
) -> Result<HttpResponseOk<WriteResult>, HttpError> {
    let started = std::time::Instant::now();
    let result = write.await;
    let outcome = match &result {
        Ok(UpdateOutcome::Applied) => ApplyOutcome::Applied,
        Ok(UpdateOutcome::AlreadyApplied) => ApplyOutcome::AlreadyApplied,
        Err(error) => apply_outcome(error),
    };
    state.metrics.apply(kind, outcome, started.elapsed().as_secs_f64());
    match result {
        Ok(outcome) => {
            tracing::debug!(generation, ?outcome, ?kind, "config written");
            let outcome = match outcome {
                UpdateOutcome::Applied => WriteOutcome::Applied,
                UpdateOutcome::AlreadyApplied => WriteOutcome::AlreadyApplied,
            };
            Ok(HttpResponseOk(WriteResult { outcome, generation }))
        }
        Err(error) => Err(to_http_error(generation, error)),
    }
}

/// The metrics' name for what became of a config write.
fn apply_outcome(error: &UpdateError) -> ApplyOutcome {
    match error {
        UpdateError::Invalid(_) | UpdateError::Compile(_) => ApplyOutcome::Invalid,
        UpdateError::BadGeneration { .. } => ApplyOutcome::BadGeneration,
        UpdateError::RepairPrecondition { .. } => ApplyOutcome::RepairPrecondition,
        UpdateError::DiffNotApplicable(_) => ApplyOutcome::DiffNotApplicable,
        UpdateError::Storage { .. } => ApplyOutcome::StorageFailed,
        UpdateError::Internal(_) => ApplyOutcome::Internal,
    }
}

/// The error with its causes, under the status and stable code that say
/// what the client can do about it.
fn to_http_error(generation: u64, error: UpdateError) -> HttpError {
    let code = error.error_code();
    let status = match &error {
        UpdateError::Invalid(_) | UpdateError::Compile(_) => None,
        UpdateError::DiffNotApplicable(dns_types::DiffError::Invalid(_)) => None,
        UpdateError::BadGeneration { .. }
        | UpdateError::RepairPrecondition { .. }
        | UpdateError::DiffNotApplicable(_) => Some(ClientErrorStatusCode::CONFLICT),
        UpdateError::Storage { .. } | UpdateError::Internal(_) => {
            let message = format!("{:#}", anyhow::Error::new(error));
            tracing::warn!(generation, error = ?message, "config write failed");
            let mut http = HttpError::for_internal_error(message.clone());
            if code == error_codes::STORAGE {
                http.error_code = Some(code.into());
            }
            http.external_message = message;
            return http;
        }
    };
    let message = format!("{:#}", anyhow::Error::new(error));
    tracing::warn!(generation, error = ?message, "config write rejected");
    match status {
        None => HttpError::for_bad_request(Some(code.into()), message),
        Some(status) => HttpError::for_client_error(Some(code.into()), status, message),
    }
}
