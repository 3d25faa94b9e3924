//! The internal HTTP API (`nexus-api`), implemented over the datastore and
//! the background task driver.

use api_json::StrictJson;
use background_tasks::{Activator, BackgroundTask, Driver, UnknownTask};
use chrono::{DateTime, Utc};
use db_model::{Datastore, DnsError};
use dns_types::{DnsChange, DnsGroup, DnsVersion};
use dropshot::{
    ClientErrorStatusCode, ErrorStatusCode, HttpError, HttpResponseOk, Path, Query, RequestContext,
};
use internal_dns::{Resolver, ServiceName};
use nexus_api::{
    BackgroundTaskPath, BackgroundTasksActivateRequest, DnsGroupPath, DnsHistoryQuery,
    NexusInternalApi, error_codes,
};
use nexus_types::propagation_history::NexusHistory;
use nexus_types::task_name::DnsTaskName;
use nexus_types::{NexusReadiness, NexusStatus};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use uuid::Uuid;

pub struct ApiContext {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
    pub datastore: Datastore,
    pub driver: Driver,
    pub config_activators: BTreeMap<DnsGroup, Activator>,
    /// Finds the other Nexus instances (to tell them about a change).
    pub resolver: Resolver,
    pub internal_zone: String,
    /// Set once the HTTP server is bound.
    pub address: OnceLock<SocketAddr>,
    /// Required by every write; also sent to peers.
    pub api_token: api_auth::ApiToken,
    /// Requests being handled (their connections are not idle).
    pub in_flight: http_idle::InFlight,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub history: crate::history::PropagationHistory,
}

pub enum NexusInternalApiImpl {}

fn unknown_task(error: UnknownTask) -> HttpError {
    HttpError::for_client_error(
        Some(error_codes::UNKNOWN_TASK.into()),
        ClientErrorStatusCode::NOT_FOUND,
        error.to_string(),
    )
}

fn dns_error(error: DnsError) -> HttpError {
    let invalid_input = error.is_invalid_input();
    let key_reused = matches!(error, DnsError::IdempotencyKeyReused { .. });
    let outcome_unknown = matches!(
        &error,
        DnsError::Database(e) if e.kind() == db_model::FailureKind::CommitOutcomeUnknown
    );
    let message = format!("{:#}", anyhow::Error::new(error));
    if key_reused {
        return HttpError::for_client_error(
            Some(error_codes::IDEMPOTENCY_KEY_REUSED.into()),
            ClientErrorStatusCode::CONFLICT,
            message,
        );
    }
    if outcome_unknown {
        return HttpError {
            status_code: ErrorStatusCode::SERVICE_UNAVAILABLE,
            error_code: Some(error_codes::COMMIT_OUTCOME_UNKNOWN.into()),
            external_message: message.clone(),
            internal_message: message,
            headers: None,
        };
    }
    if invalid_input {
        return HttpError::for_bad_request(Some(error_codes::INVALID_DNS_CHANGE.into()), message);
    }
    // The database did not do what we asked: nothing was written, and the
    // caller may try again.  Say why, rather than a bare "unavailable".
    HttpError {
        status_code: ErrorStatusCode::SERVICE_UNAVAILABLE,
        error_code: Some(error_codes::DATABASE_UNAVAILABLE.into()),
        external_message: message.clone(),
        internal_message: message,
        headers: None,
    }
}

impl NexusInternalApi for NexusInternalApiImpl {
    type Context = Arc<ApiContext>;

    async fn status_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<NexusStatus>, HttpError> {
        let _busy = rqctx.context().in_flight.enter(rqctx.request.remote_addr());
        Ok(HttpResponseOk(nexus_status(&rqctx)))
    }

    async fn metrics_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<http::Response<dropshot::Body>, HttpError> {
        let cx = rqctx.context();
        api_json::metrics_response(
            cx.metrics.render(&cx.driver.statuses(), &cx.datastore.connection_report()),
        )
    }

    async fn health_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<NexusStatus>, HttpError> {
        Ok(HttpResponseOk(nexus_status(&rqctx)))
    }

    async fn ready_get(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<NexusReadiness>, HttpError> {
        match nexus_types::readiness::readiness(&rqctx.context().driver.statuses()) {
            Ok(ready) => Ok(HttpResponseOk(ready)),
            Err(reasons) => {
                let message = format!("not ready: {}", reasons.join("; "));
                Err(HttpError {
                    status_code: ErrorStatusCode::SERVICE_UNAVAILABLE,
                    error_code: Some(error_codes::NOT_READY.into()),
                    external_message: message.clone(),
                    internal_message: message,
                    headers: None,
                })
            }
        }
    }

    async fn bgtask_list(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<BTreeMap<String, BackgroundTask>>, HttpError> {
        let _busy = rqctx.context().in_flight.enter(rqctx.request.remote_addr());
        Ok(HttpResponseOk(rqctx.context().driver.statuses()))
    }

    async fn bgtask_view(
        rqctx: RequestContext<Self::Context>,
        path: Path<BackgroundTaskPath>,
    ) -> Result<HttpResponseOk<BackgroundTask>, HttpError> {
        let _busy = rqctx.context().in_flight.enter(rqctx.request.remote_addr());
        let name = path.into_inner().bgtask_name;
        rqctx.context().driver.status(&name).map(HttpResponseOk).map_err(unknown_task)
    }

    async fn bgtask_activate(
        rqctx: RequestContext<Self::Context>,
        body: StrictJson<BackgroundTasksActivateRequest>,
    ) -> Result<HttpResponseOk<BTreeMap<String, BackgroundTask>>, HttpError> {
        let _busy = rqctx.context().in_flight.enter(rqctx.request.remote_addr());
        let cx = rqctx.context();
        cx.api_token.authorize(rqctx.request.headers())?;
        let request = body.into_inner();
        check_activation(&request.bgtask_names)?;
        let requested_by = format!("POST /bgtasks/activate from {}", rqctx.request.remote_addr());
        let tickets = cx
            .driver
            .activate(request.bgtask_names.iter().map(String::as_str), &requested_by)
            .map_err(unknown_task)?;
        if request.wait {
            let waits = futures::future::join_all(tickets.into_iter().map(|(_, t)| t.wait()));
            let _ = tokio::time::timeout(nexus_types::ACTIVATE_WAIT_LIMIT, waits).await;
        }
        let statuses = request
            .bgtask_names
            .iter()
            .map(|name| Ok((name.clone(), cx.driver.status(name).map_err(unknown_task)?)))
            .collect::<Result<_, HttpError>>()?;
        Ok(HttpResponseOk(statuses))
    }

    async fn dns_history(
        rqctx: RequestContext<Self::Context>,
        path: Path<DnsGroupPath>,
        query: Query<DnsHistoryQuery>,
    ) -> Result<HttpResponseOk<NexusHistory>, HttpError> {
        let _busy = rqctx.context().in_flight.enter(rqctx.request.remote_addr());
        let group = path.into_inner().group;
        let query = query.into_inner();
        let limit = query.limit.unwrap_or(100).clamp(1, 10_000) as usize;
        let history = &rqctx.context().history;
        Ok(HttpResponseOk(history.history(group, query.generation, query.since_generation, limit)))
    }

    async fn dns_change(
        rqctx: RequestContext<Self::Context>,
        path: Path<DnsGroupPath>,
        body: StrictJson<DnsChange>,
    ) -> Result<HttpResponseOk<DnsVersion>, HttpError> {
        let _busy = rqctx.context().in_flight.enter(rqctx.request.remote_addr());
        let cx = rqctx.context();
        cx.api_token.authorize(rqctx.request.headers())?;
        let group = path.into_inner().group;
        let change = body.into_inner();
        let version = cx
            .datastore
            .dns_change_commit(group, &cx.id.to_string(), &change)
            .await
            .map_err(dns_error)?;
        tracing::info!(
            %group, generation = version.generation, comment = ?version.comment,
            "DNS change committed"
        );
        if let Some(activator) = cx.config_activators.get(&group) {
            activator.activate(format!(
                "DNS change through this Nexus (generation {})",
                version.generation
            ));
        } else {
            tracing::error!(task = %DnsTaskName::config(group), "no activator for the group's config task");
        }
        // The other Nexus instances would otherwise see the change only on
        // their next period; tell them now.  The caller does not wait for
        // it: the change is committed whatever they do.
        tokio::spawn(notify_peers(
            cx.resolver.clone(),
            cx.internal_zone.clone(),
            cx.address.get().copied(),
            cx.api_token.clone(),
            group,
            version.generation,
        ));
        Ok(HttpResponseOk(version))
    }
}

/// Who this Nexus is (`/status`, and `/health`: answering at all is being
/// alive).
fn nexus_status(rqctx: &RequestContext<Arc<ApiContext>>) -> NexusStatus {
    let cx = rqctx.context();
    NexusStatus {
        id: cx.id,
        started_at: cx.started_at,
        internal_api_address: *cx.address.get().unwrap_or(&rqctx.server.local_addr),
        database: {
            let report = cx.datastore.connection_report();
            report.node.map(|node| nexus_types::DatabaseConnection {
                node: node.node,
                since: node.since,
                failovers_seen: report.failovers_seen,
            })
        },
    }
}

/// An activation names each task once, and not too many: one request must
/// not make the driver queue unbounded work.
fn check_activation(names: &[String]) -> Result<(), HttpError> {
    let invalid = |message: String| {
        Err(HttpError::for_bad_request(Some(error_codes::INVALID_ACTIVATION.into()), message))
    };
    if names.is_empty() {
        return invalid("name at least one task to activate".into());
    }
    if names.len() > dns_types::limits::MAX_ACTIVATE_TASKS {
        return invalid(format!(
            "{} task names given; at most {} may be activated at once",
            names.len(),
            dns_types::limits::MAX_ACTIVATE_TASKS
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = names.iter().find(|name| !seen.insert(name.as_str())) {
        return invalid(format!("task {twice:?} is named more than once"));
    }
    Ok(())
}

/// Longest a peer notification may take, lookup and request together.
const PEER_NOTIFY_LIMIT: Duration = Duration::from_secs(2);
/// How long a starting Nexus waits for internal DNS to serve its own
/// registration before it gives up telling the others (they then see it
/// on their next period).
const REGISTRATION_ANNOUNCE_LIMIT: Duration = Duration::from_secs(10);

/// The other Nexus instances registered in internal DNS, and whether this
/// one (at `own_address`) is among them yet.
async fn peers(
    resolver: &Resolver,
    zone: &str,
    own_address: Option<SocketAddr>,
) -> Result<(Vec<SocketAddr>, bool), String> {
    let answer =
        resolver.lookup_service(ServiceName::Nexus, zone).await.map_err(|e| e.to_string())?;
    let all: Vec<SocketAddr> = answer.instances.iter().filter_map(|p| p.socket_addr()).collect();
    let listed = own_address.is_some_and(|own| all.contains(&own));
    Ok((all.into_iter().filter(|a| Some(*a) != own_address).collect(), listed))
}

/// Asks every other Nexus registered in internal DNS to activate its
/// `dns_config_<group>` task, so that a change made here reaches them in
/// milliseconds.  Failures are logged, not returned: each peer still finds
/// the change on its own period.
pub(crate) async fn notify_peers(
    resolver: Resolver,
    zone: String,
    own_address: Option<SocketAddr>,
    api_token: api_auth::ApiToken,
    group: DnsGroup,
    generation: u64,
) {
    let work = async {
        match peers(&resolver, &zone, own_address).await {
            Ok((peers, _)) => tell_peers(&peers, &api_token, group, generation).await,
            Err(e) => tracing::warn!(
                error = %e,
                "could not look up the other Nexus instances to tell them about the change"
            ),
        }
    };
    let _ = tokio::time::timeout(PEER_NOTIFY_LIMIT * 2, work).await;
}

/// After this Nexus registered itself in generation `generation`: tells
/// the other Nexus once internal DNS serves the registration (this Nexus
/// is then among the instances found, and so is every one registered
/// before it), so that all of them agree within moments of the start.
pub(crate) async fn announce_registration(
    resolver: Resolver,
    zone: String,
    own_address: SocketAddr,
    api_token: api_auth::ApiToken,
    generation: u64,
) {
    let deadline = tokio::time::Instant::now() + REGISTRATION_ANNOUNCE_LIMIT;
    loop {
        match tokio::time::timeout(PEER_NOTIFY_LIMIT, peers(&resolver, &zone, Some(own_address)))
            .await
        {
            Ok(Ok((peers, true))) => {
                return tell_peers(&peers, &api_token, DnsGroup::Internal, generation).await;
            }
            Ok(Ok((_, false))) | Ok(Err(_)) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => {
                tracing::warn!(
                    generation, outcome = ?other.map(|r| r.map(|(_, listed)| listed)),
                    "internal DNS did not serve this Nexus's registration within {REGISTRATION_ANNOUNCE_LIMIT:?}: \
                     the other Nexus will load it on their next period"
                );
                return;
            }
        }
    }
}

/// Activates `dns_config_<group>` on each of `peers` (each bounded by
/// [`PEER_NOTIFY_LIMIT`]), logging what happened.
async fn tell_peers(
    peers: &[SocketAddr],
    api_token: &api_auth::ApiToken,
    group: DnsGroup,
    generation: u64,
) {
    let task = DnsTaskName::config(group).to_string();
    let requests = peers.iter().map(|peer| {
        let task = task.clone();
        let http = api_token.client_builder().timeout(PEER_NOTIFY_LIMIT).build();
        async move {
            let result = match http {
                Ok(http) => nexus_client::Client::new_with_client(&format!("http://{peer}"), http)
                    .bgtask_activate()
                    .body(nexus_client::types::BackgroundTasksActivateRequest {
                        bgtask_names: vec![task.clone()],
                        wait: false,
                    })
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| dns_types::error_chain(&e)),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => tracing::debug!(%peer, %task, generation, "told peer Nexus about the change"),
                Err(error) => tracing::warn!(%peer, %task, generation, %error, "could not tell peer Nexus about the change"),
            }
        }
    });
    futures::future::join_all(requests).await;
}
