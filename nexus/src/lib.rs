//! Nexus: the control-plane daemon.
//!
//! - Keeps DNS data in the database: `POST /dns/{group}/changes` commits one
//!   generation and wakes the propagation pipeline at once.
//! - Propagates it with six background tasks ([`tasks`]): per group, one
//!   watches the database, one watches the list of DNS servers in internal
//!   DNS, one pushes the first to the second.  Each activation leaves a
//!   timestamped record of what it found and did, served by the internal API
//!   ([`http`]) for omdb.
//! - Keeps a durable propagation history ([`history`]): when it first saw
//!   each generation, and every push attempt to every server.
//! - Registers itself in internal DNS when it starts ([`registration`]).

pub use nexus_types::config;
pub mod history;
pub mod http;
pub mod metrics;
pub mod registration;
pub mod tasks;

use anyhow::{Context, bail};
use background_tasks::DriverBuilder;
use chrono::Utc;
use db_model::schema::SchemaError;
use db_model::{Datastore, DatastoreOptions};
use internal_dns::Resolver;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A running Nexus: background tasks and the internal API.
pub struct RunningNexus {
    context: Arc<http::ApiContext>,
    server: dropshot::HttpServer<Arc<http::ApiContext>>,
    /// Closes idle API connections while it lives.
    _http_idle: http_idle::Reaper,
    /// Bodies are read only with the token, while it lives.
    _token_first: api_auth::guard::Registration,
}

impl RunningNexus {
    /// Connects to the database (retrying until
    /// `database.connect_timeout_secs`), checks the schema version, starts
    /// the background tasks and the internal API, and registers this Nexus
    /// in internal DNS.
    pub async fn start(config: &config::Config) -> anyhow::Result<RunningNexus> {
        let api_token = api_auth::ApiToken::from_file(&config.api_token_file)?;
        let datastore = Datastore::new(&config.database.url, DatastoreOptions::default())
            .context("configuring the database connection")?;
        wait_for_database(&datastore, Duration::from_secs(config.database.connect_timeout_secs))
            .await?;

        let resolver = Resolver::new(
            config.internal_dns.bootstrap_servers.clone(),
            config.tasks.server_timeout(),
        );
        let metrics = Arc::new(metrics::Metrics::new());
        let history = history::PropagationHistory::open(
            config.id,
            config.history.dir.as_deref(),
            config.history.events.unwrap_or(history::DEFAULT_HISTORY_EVENTS),
        )
        .context("opening the propagation history")?;
        let mut builder = DriverBuilder::new();
        let observed = metrics.clone();
        builder.observe(Arc::new(move |task, record| observed.activation(task, record)));
        let config_activators = tasks::register(
            &mut builder,
            tasks::TaskInputs {
                datastore: &datastore,
                resolver: &resolver,
                internal_zone: &config.internal_dns.zone,
                config: &config.tasks,
                api_token: &api_token,
                metrics: &metrics,
                nexus_id: config.id,
                history: &history,
            },
        )?;
        let driver = builder.start();
        let context = Arc::new(http::ApiContext {
            id: config.id,
            started_at: Utc::now(),
            datastore: datastore.clone(),
            driver,
            config_activators,
            resolver: resolver.clone(),
            internal_zone: config.internal_dns.zone.clone(),
            address: OnceLock::new(),
            api_token,
            in_flight: http_idle::InFlight::default(),
            metrics,
            history,
        });

        let api =
            nexus_api::nexus_internal_api_mod::api_description::<http::NexusInternalApiImpl>()
                .map_err(|e| anyhow::anyhow!("building the API description: {e}"))?;
        let log = api_json::dropshot_logger();
        let server = dropshot::ServerBuilder::new(api, context.clone(), log)
            .config(dropshot::ConfigDropshot {
                bind_address: config.internal_api.address,
                default_request_body_max_bytes: 16 * 1024 * 1024,
                // A DNS change runs to completion even if the caller hangs up.
                default_handler_task_mode: dropshot::HandlerTaskMode::Detached,
                ..Default::default()
            })
            .start()
            .map_err(|e| {
                anyhow::anyhow!("starting the internal API on {}: {e}", config.internal_api.address)
            })?;
        let address = server.local_addr();
        let _ = context.address.set(address);
        let idle_limit = Duration::from_secs_f64(config.internal_api.idle_timeout_secs.max(0.1));
        let http_idle = http_idle::Reaper::start(address, idle_limit, context.in_flight.clone())
            .context("starting the idle HTTP connection watcher")?;
        let token_first = api_auth::guard::require(address, context.api_token.clone());
        tracing::info!(id = %config.id, %address, "Nexus internal API listening");

        let registered =
            registration::register_self(&datastore, config.id, &config.internal_dns.zone, address)
                .await
                .context("registering this Nexus in internal DNS")?;
        // The other Nexus would see this registration (a new internal
        // generation) only on their next period and disagree until then;
        // tell them now, as for any change made through the API.
        if let Some(version) = registered {
            tokio::spawn(http::announce_registration(
                context.resolver.clone(),
                context.internal_zone.clone(),
                address,
                context.api_token.clone(),
                version.generation,
            ));
        }
        if let Some(activator) = context.config_activators.get(&dns_types::DnsGroup::Internal) {
            activator.activate("this Nexus starting");
        }
        Ok(RunningNexus { context, server, _http_idle: http_idle, _token_first: token_first })
    }

    pub fn id(&self) -> Uuid {
        self.context.id
    }

    pub fn address(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops the internal API and every background task.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let RunningNexus { context, server, _http_idle, _token_first } = self;
        server.close().await.map_err(|e| anyhow::anyhow!("stopping the internal API: {e}"))?;
        match Arc::try_unwrap(context) {
            Ok(context) => context.driver.shutdown().await,
            Err(_) => tracing::warn!("API context still shared at shutdown; tasks stop on drop"),
        }
        Ok(())
    }
}

/// Waits until the database answers with the expected schema version; a
/// mismatch or a database without schema is fatal at once.
async fn wait_for_database(datastore: &Datastore, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match datastore.check_schema_version().await {
            Ok(()) => {
                tracing::info!(database = datastore.address(), attempt, "database ready");
                return Ok(());
            }
            Err(SchemaError::Database(error)) => {
                let message = format!("{:#}", anyhow::Error::from(error));
                if started.elapsed() >= limit {
                    bail!(
                        "the database at {} was not reachable within {limit:?} ({attempt} tries); \
                         last error: {message}",
                        datastore.address()
                    );
                }
                let wait = Duration::from_millis(250 * u64::from(attempt.min(8)));
                tracing::warn!(
                    database = datastore.address(), attempt, error = %message,
                    "database not reachable; retrying in {wait:?}"
                );
                tokio::time::sleep(wait).await;
            }
            Err(other) => {
                return Err(anyhow::Error::from(other))
                    .with_context(|| format!("checking the database at {}", datastore.address()));
            }
        }
    }
}
