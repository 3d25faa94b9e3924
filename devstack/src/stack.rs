//! A complete local stack: database, internal and external DNS servers and
//! Nexus instances, as real processes on loopback.  `devstack run` and the
//! end-to-end tests both use it.

use anyhow::{Context, bail};
use api_auth::ApiToken;
use db_model::schema::SchemaError;
use db_model::{Datastore, DatastoreOptions, DnsError, ZoneSpec};
use dns_types::sync::{ServerClaim, Wanted, classify};
use dns_types::{DnsChange, DnsGroup, DnsRecord, NameRecords, NameRemoval};
use internal_dns::{Registration, ServiceName};
use local_postgres::replicated::ReplicatedPostgres;
use local_postgres::{Directory, LocalPostgres};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use test_support::process::{ChildProcess, binary};
use uuid::Uuid;

/// What to start.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Where every process keeps its storage and logs.
    pub run_dir: PathBuf,
    /// Use this database instead of starting PostgreSQL.
    pub db_url: Option<String>,
    /// Start a replicated database (three PostgreSQL nodes under Patroni)
    /// instead of one PostgreSQL process.
    pub replicated_db: bool,
    /// Put the database, each DNS server and each Nexus on its own host: a
    /// network namespace with an IPv6 address in this /56 of
    /// `fd00:1122:3344::/48` (`host-network`); `None`: everything on this
    /// host's loopback.
    pub netns_subnet: Option<u8>,
    pub internal_zone: String,
    pub external_zone: String,
    pub internal_dns_servers: usize,
    pub external_dns_servers: usize,
    pub nexus_instances: usize,
    /// Period of every Nexus background task.
    pub task_period_secs: u64,
    /// Nexus's limit for one push to one DNS server.
    pub server_timeout_secs: f64,
    /// How long a propagation waits, past the last server's answer, for
    /// the servers that have not answered (then their pushes run on).
    pub detach_after_secs: f64,
    /// Whether Nexus repairs a server ahead of the database or diverged
    /// from it (else it only reports it).
    pub repair_servers: bool,
    /// Every HTTP API closes a connection idle (or half-sent) this long.
    pub http_idle_timeout_secs: f64,
    /// How many events of its apply history each DNS server keeps (`None`:
    /// the server's default).
    pub dns_history_events: Option<usize>,
    /// Say each step of the start on stdout (`devstack run`: a start that
    /// prints nothing for seconds looks hung).
    pub progress: bool,
}

impl StackOptions {
    pub fn new(run_dir: PathBuf) -> StackOptions {
        StackOptions {
            run_dir,
            db_url: None,
            replicated_db: false,
            netns_subnet: None,
            internal_zone: internal_dns::DEFAULT_INTERNAL_ZONE.into(),
            external_zone: "example.test".into(),
            internal_dns_servers: 3,
            external_dns_servers: 2,
            nexus_instances: 2,
            task_period_secs: 60,
            server_timeout_secs: 5.0,
            detach_after_secs: 0.1,
            repair_servers: true,
            http_idle_timeout_secs: 30.0,
            dns_history_events: None,
            progress: false,
        }
    }
}

/// The database: ours, or one given by URL.
#[allow(clippy::large_enum_variant)] // one per stack
pub enum Database {
    Local(LocalPostgres),
    /// Three PostgreSQL nodes under Patroni, with etcd.
    Replicated(ReplicatedPostgres),
    External,
}

/// A running DNS server process and what is needed to start it again.
pub struct DnsServer {
    /// Its name in the stack (`dns-internal-0`): its storage directory and
    /// log are named after it, and `devstack stop|start` takes it.
    pub name: String,
    pub group: DnsGroup,
    pub id: Uuid,
    pub dns_address: SocketAddr,
    pub http_address: SocketAddr,
    pub storage_dir: PathBuf,
    pub process: Option<ChildProcess>,
    log: PathBuf,
    /// The DNS address it reports instead of the one it binds, if any.
    pub advertise: Option<SocketAddr>,
    /// The network namespace it runs in (`--hosts netns`).
    pub netns: Option<String>,
    api_token_file: PathBuf,
    http_idle_timeout_secs: f64,
    history_events: Option<usize>,
}

impl DnsServer {
    /// Starts the process described by `self` (its addresses fixed in
    /// advance, so that a restart binds the same ones).
    async fn start(&mut self) -> anyhow::Result<()> {
        let mut args = vec![
            "--dns-address".into(),
            self.dns_address.to_string(),
            "--http-address".into(),
            self.http_address.to_string(),
            "--storage-dir".into(),
            self.storage_dir.display().to_string(),
            "--id".into(),
            self.id.to_string(),
            "--api-token-file".into(),
            self.api_token_file.display().to_string(),
            "--http-idle-timeout-secs".into(),
            self.http_idle_timeout_secs.to_string(),
        ];
        if let Some(advertise) = self.advertise {
            args.extend(["--advertise-dns-address".into(), advertise.to_string()]);
        }
        if let Some(events) = self.history_events {
            args.extend(["--history-events".into(), events.to_string()]);
        }
        let name = format!("dns-server {} {}", self.group, self.id);
        let (program, args) = on_host(self.netns.as_deref(), binary("dns-server")?, args);
        let (process, _) = ChildProcess::start(&name, &program, &args, &self.log).await?;
        self.process = Some(process);
        Ok(())
    }

    /// Stops the process (it can be started again with [`DnsServer::restart`]).
    pub async fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop().await;
        }
    }

    /// Starts the process again on the same addresses and storage.
    ///
    /// Its ports were picked by the kernel, from the range it also hands out
    /// to outgoing connections: while it was down, one of those may have
    /// taken its port for a moment.  That is waited out (up to 10 s), as an
    /// operator would try again; any other failure is returned at once.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.start().await {
                Err(e)
                    if format!("{e:#}").contains("Address already in use")
                        && Instant::now() < deadline =>
                {
                    tracing::info!(server = %self.name, "its port is briefly taken; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                result => return result,
            }
        }
    }

    /// Starts the process again with the same storage and config API, but
    /// with DNS bound at `dns_address` while reporting `advertise` as its
    /// DNS address: a server behind a proxy or NAT (and, in tests, one whose
    /// reported address is answered by something else).
    pub async fn restart_behind(
        &mut self,
        dns_address: SocketAddr,
        advertise: SocketAddr,
    ) -> anyhow::Result<()> {
        self.stop().await;
        self.dns_address = dns_address;
        self.advertise = Some(advertise);
        self.restart().await
    }

    /// Starts another DNS server process on this server's host, answering
    /// where this server says it answers (its advertised DNS address, else
    /// the one it binds, which must be free: move this one behind first),
    /// with a config API on a free port and storage of its own under
    /// `dir`: something else answering at this server's registered address
    /// (a stale copy left behind a proxy).  Returns it and its config API.
    pub async fn start_impostor(&self, dir: &Path) -> anyhow::Result<(ChildProcess, SocketAddr)> {
        let http = SocketAddr::new(self.http_address.ip(), free_port()?);
        let args = vec![
            "--dns-address".into(),
            self.advertise.unwrap_or(self.dns_address).to_string(),
            "--http-address".into(),
            http.to_string(),
            "--storage-dir".into(),
            dir.join("storage").display().to_string(),
            "--api-token-file".into(),
            self.api_token_file.display().to_string(),
        ];
        let (program, args) = on_host(self.netns.as_deref(), binary("dns-server")?, args);
        let name = format!("impostor of {}", self.name);
        let (process, _) =
            ChildProcess::start(&name, &program, &args, &dir.join("dns-server.log")).await?;
        Ok((process, http))
    }

    pub fn freeze(&self) -> anyhow::Result<()> {
        self.process.as_ref().context("server not running")?.freeze()
    }

    /// The records that register it in internal DNS (`zone`, relative
    /// names): its config API and the DNS address it reports (`advertise`,
    /// else the one it binds).
    pub fn registration(&self, zone: &str) -> Vec<NameRecords> {
        let dns = self.advertise.unwrap_or(self.dns_address);
        Registration::dns_server(self.group, self.id, self.http_address, dns, zone)
    }

    pub fn thaw(&self) -> anyhow::Result<()> {
        self.process.as_ref().context("server not running")?.thaw()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// A running Nexus process.
pub struct Nexus {
    /// Its name in the stack (`nexus-0`).
    pub name: String,
    pub id: Uuid,
    pub address: SocketAddr,
    pub config_file: PathBuf,
    pub process: Option<ChildProcess>,
    log: PathBuf,
    /// The stack's token, which [`Nexus::client`] sends.
    api_token: ApiToken,
    /// The network namespace it runs in (`--hosts netns`).
    pub netns: Option<String>,
}

impl Nexus {
    async fn spawn(
        name: String,
        id: Uuid,
        config_file: PathBuf,
        log: PathBuf,
        api_token: ApiToken,
        netns: Option<String>,
    ) -> anyhow::Result<Nexus> {
        let (process, address) =
            Nexus::start_process(id, &config_file, &log, netns.as_deref()).await?;
        // Pin the port the kernel picked, so that a restart listens where
        // internal DNS and the other Nexus already point.
        let mut config = nexus_types::config::Config::from_file(&config_file)?;
        config.internal_api.address = address;
        std::fs::write(&config_file, config.to_toml())
            .with_context(|| format!("writing {}", config_file.display()))?;
        Ok(Nexus { name, id, address, config_file, process: Some(process), log, api_token, netns })
    }

    async fn start_process(
        id: Uuid,
        config_file: &Path,
        log: &Path,
        netns: Option<&str>,
    ) -> anyhow::Result<(ChildProcess, SocketAddr)> {
        let args = vec!["--config-file".into(), config_file.display().to_string()];
        let name = format!("nexus {id}");
        let (program, args) = on_host(netns, binary("nexus")?, args);
        let (process, info) = ChildProcess::start(&name, &program, &args, log).await?;
        let address = info["internal_api_address"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{name}: no internal_api_address in {info}"))?;
        Ok((process, address))
    }

    /// Starts the process again with the same configuration (and address).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let (process, address) =
            Nexus::start_process(self.id, &self.config_file, &self.log, self.netns.as_deref())
                .await?;
        self.process = Some(process);
        self.address = address;
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A client that can also write (it sends the stack's API token).
    pub fn client(&self) -> nexus_client::Client {
        let http = self
            .api_token
            .client_builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client with a timeout builds");
        nexus_client::Client::new_with_client(&self.url(), http)
    }

    pub async fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop().await;
        }
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// The whole stack.  Dropping it kills every process it started.
pub struct Stack {
    pub options: StackOptions,
    pub db_url: String,
    pub database: Database,
    pub datastore: Datastore,
    pub dns_servers: Vec<DnsServer>,
    pub nexus: Vec<Nexus>,
    pub database_id: Uuid,
    /// The token every component requires for writes, and its file.
    pub api_token: ApiToken,
    pub api_token_file: PathBuf,
    /// Faults in force between hosts (`devstack fault`), and the last
    /// number given.
    pub faults: Vec<crate::faults::NumberedFault>,
    pub next_fault: u32,
    /// The hosts (`--hosts netns`); last, so that it goes after every
    /// process in it.
    pub network: Option<host_network::Network>,
}

impl Stack {
    /// Starts everything and waits until every DNS server serves the latest
    /// generation of its group and every Nexus answers.
    pub async fn start(options: StackOptions) -> anyhow::Result<Stack> {
        let started = Instant::now();
        let verbose = options.progress;
        let progress = move |what: String| {
            if verbose {
                println!("devstack: {what} ({:.1}s)", started.elapsed().as_secs_f64());
            }
        };
        std::fs::create_dir_all(&options.run_dir)
            .with_context(|| format!("creating run directory {}", options.run_dir.display()))?;
        // As root, PostgreSQL runs as the `postgres` user, which must be
        // able to reach its directory inside ours.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&options.run_dir, std::fs::Permissions::from_mode(0o755))?;
        }

        // A new token per run: whoever holds it may change DNS data, so it
        // is readable by its owner only.
        let api_token = ApiToken::generate();
        let api_token_file = options.run_dir.join("api-token");
        api_token
            .write_to(&api_token_file)
            .with_context(|| format!("writing the API token to {}", api_token_file.display()))?;

        let network = match options.netns_subnet {
            None => None,
            Some(subnet) => {
                let mut hosts = vec!["postgres".to_string()];
                for (group, count) in [
                    (DnsGroup::Internal, options.internal_dns_servers),
                    (DnsGroup::External, options.external_dns_servers),
                ] {
                    hosts.extend((0..count).map(|i| format!("dns-{group}-{i}")));
                }
                hosts.extend((0..options.nexus_instances).map(|i| format!("nexus-{i}")));
                let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
                let network = host_network::Network::create(subnet, &names)
                    .context("creating a network namespace per host (--hosts netns)")?;
                progress(format!(
                    "{} hosts (network namespaces) on bridge {}, {}/56; this host is {}",
                    network.hosts().len(),
                    network.bridge(),
                    network.prefix(),
                    network.outside
                ));
                Some(network)
            }
        };
        let (database, db_url) = match &options.db_url {
            Some(url) => (Database::External, url.clone()),
            None if options.replicated_db => {
                let dir = options.run_dir.join("postgres");
                let cluster = tokio::task::spawn_blocking(move || {
                    ReplicatedPostgres::start(Directory::Keep(dir))
                })
                .await?
                .context("starting the replicated database (etcd and Patroni)")?;
                progress(format!(
                    "etcd and {} Patroni agents started in {}; waiting for a primary and a \
                     synchronous standby",
                    cluster.nodes().len(),
                    cluster.dir().display()
                ));
                let primary = db_model::cluster::wait_until_writable(
                    &cluster.url("postgres"),
                    cluster.nodes().len() - 1,
                    Duration::from_secs(120),
                )
                .await
                .map_err(anyhow::Error::msg)?;
                let url = create_database_at(&cluster.url("postgres"), "control_plane").await?;
                progress(format!(
                    "replicated database ready ({} standbys, synchronous: {}) at {url}",
                    primary.replicas.len(),
                    primary.synchronous_standby_names
                ));
                (Database::Replicated(cluster), url)
            }
            None => {
                let dir = options.run_dir.join("postgres");
                let placement = match &network {
                    Some(network) => {
                        let host = network.host("postgres")?;
                        Some(local_postgres::Placement {
                            netns: host.netns.clone(),
                            address: host.address.into(),
                            clients: format!("{}/56", network.prefix()),
                        })
                    }
                    None => None,
                };
                let server = tokio::task::spawn_blocking(move || {
                    LocalPostgres::start_at(Directory::Keep(dir), placement)
                })
                .await?
                .context("starting PostgreSQL")?;
                let url = create_database_at(&server.url("postgres"), "control_plane").await?;
                progress(format!("PostgreSQL {} serves {url}", server.dir().display()));
                (Database::Local(server), url)
            }
        };
        let datastore = Datastore::new(&db_url, DatastoreOptions::default())?;
        match datastore.check_schema_version().await {
            Ok(()) => {}
            Err(SchemaError::Uninitialized) => {
                datastore.initialize_schema().await.context("applying the schema")?;
                progress("schema applied".into());
            }
            Err(e) => {
                return Err(e).context(format!("checking the database at {}", datastore.address()));
            }
        }

        let mut dns_servers = Vec::new();
        for (group, count) in [
            (DnsGroup::Internal, options.internal_dns_servers),
            (DnsGroup::External, options.external_dns_servers),
        ] {
            for i in 0..count {
                let id = Uuid::new_v4();
                let name = format!("dns-{group}-{i}");
                let host = match &network {
                    Some(network) => Some(network.host(&name)?.clone()),
                    None => None,
                };
                dns_servers.push(
                    spawn_on_free_ports(name, group, id, api_token_file.clone(), &options, host)
                        .await?,
                );
            }
        }
        progress(format!("{} started", nexus_types::count(dns_servers.len() as u64, "DNS server")));

        let database_id = Uuid::new_v4();
        let db_nodes = db_nodes(&db_url);
        let mut stack = Stack {
            options,
            db_url,
            database,
            datastore,
            dns_servers,
            nexus: Vec::new(),
            database_id,
            api_token,
            api_token_file,
            faults: Vec::new(),
            next_fault: 0,
            network,
        };
        stack.write_initial_dns(&db_nodes).await?;
        stack.push_initial_dns().await?;
        progress("generation 1 written and handed to every DNS server".into());

        for i in 0..stack.options.nexus_instances {
            let id = Uuid::new_v4();
            let name = format!("nexus-{i}");
            let config_file = stack.options.run_dir.join(format!("{name}.toml"));
            let history_dir = stack.options.run_dir.join(&name);
            let host = match &stack.network {
                Some(network) => Some(network.host(&name)?.clone()),
                None => None,
            };
            let mut config = stack.nexus_config(id, &history_dir);
            if let Some(host) = &host {
                // Its own host: a fixed port on its own address.
                config.internal_api.address = SocketAddr::new(host.address.into(), 12221);
            }
            std::fs::write(&config_file, config.to_toml())?;
            let log = stack.options.run_dir.join(format!("{name}.log"));
            let token = stack.api_token.clone();
            let netns = host.map(|h| h.netns);
            stack.nexus.push(Nexus::spawn(name, id, config_file, log, token, netns).await?);
        }
        progress(format!(
            "{} Nexus started; waiting until every server and Nexus has the latest generation",
            stack.nexus.len()
        ));
        stack.wait_until_converged(Duration::from_secs(60)).await?;
        Ok(stack)
    }

    /// Generation 1 of both groups: zones, every DNS server and the database
    /// (Nexus registers itself when it starts).  Groups that exist already
    /// (an existing database) are left alone.
    async fn write_initial_dns(&self, db_nodes: &[SocketAddr]) -> anyhow::Result<()> {
        let o = &self.options;
        let zone = &o.internal_zone;
        let mut internal = Vec::new();
        for server in &self.dns_servers {
            internal.extend(server.registration(zone));
        }
        // Every node of a replicated database: a client connects to the one
        // that accepts writes (target_session_attrs=read-write).
        for (i, node) in db_nodes.iter().enumerate() {
            let id = match i {
                0 => self.database_id,
                _ => Uuid::new_v4(),
            };
            internal
                .extend(Registration::new(ServiceName::Postgresql, id, *node, zone).into_records());
        }
        let external = vec![NameRecords {
            name: "api".into(),
            records: vec![DnsRecord::A("127.0.0.1".parse().unwrap())],
        }];
        for (group, zone, add) in [
            (DnsGroup::Internal, &o.internal_zone, internal),
            (DnsGroup::External, &o.external_zone, external),
        ] {
            let zones = [ZoneSpec { zone_name: zone.clone(), ttl_seconds: 60 }];
            let change = DnsChange {
                idempotency_key: None,
                comment: "initial setup".into(),
                add,
                remove: vec![],
            };
            match self.datastore.dns_group_initialize(group, &zones, "devstack", &change).await {
                Ok(_) => {}
                Err(DnsError::GroupAlreadyInitialized { .. }) if group == DnsGroup::Internal => {
                    self.replace_registrations(change.add).await?;
                }
                Err(DnsError::GroupAlreadyInitialized { .. }) => {}
                Err(e) => {
                    return Err(e)
                        .context(format!("writing the initial {group} DNS configuration"));
                }
            }
        }
        Ok(())
    }

    /// On a database from an earlier run, internal DNS still points at that
    /// run's servers, database and Nexus, which are gone: replace them with
    /// this run's in one change (this run's Nexus register themselves).
    async fn replace_registrations(&self, add: Vec<NameRecords>) -> anyhow::Result<()> {
        let zone = &self.options.internal_zone;
        let current = self.datastore.dns_config_read(DnsGroup::Internal, None).await?;
        let names = &current
            .zones
            .iter()
            .find(|z| &z.zone_name == zone)
            .with_context(|| format!("the database's internal DNS has no zone {zone:?}"))?
            .names;
        let mut remove = std::collections::BTreeSet::new();
        for service in ServiceName::ALL {
            for record in names.get(service.label()).into_iter().flatten() {
                remove.insert(service.label().to_string());
                if let DnsRecord::Srv(srv) = record
                    && let Some(host) = srv.target.strip_suffix(&format!(".{zone}"))
                    && names.contains_key(host)
                {
                    remove.insert(host.to_string());
                }
            }
        }
        let change = DnsChange {
            idempotency_key: None,
            comment: "devstack: this run's DNS servers and database replace an earlier run's"
                .into(),
            add,
            remove: remove.into_iter().map(|name| NameRemoval { name, records: None }).collect(),
        };
        self.datastore
            .dns_change_commit(DnsGroup::Internal, "devstack", &change)
            .await
            .context("replacing an earlier run's registrations in internal DNS")?;
        Ok(())
    }

    /// What rack setup does in a real system: hand each DNS server its
    /// group's current config directly, so that internal DNS can answer
    /// before any Nexus runs (Nexus finds the DNS servers through it).
    async fn push_initial_dns(&self) -> anyhow::Result<()> {
        for group in DnsGroup::ALL {
            let config = self.datastore.dns_config_read(group, None).await?;
            for server in self.servers(group) {
                let client = dns_server_client(server, &self.api_token)?;
                client.config_put().body(config.clone()).send().await.with_context(|| {
                    format!("giving {group} DNS server {} its first config", server.http_address)
                })?;
            }
        }
        Ok(())
    }

    fn nexus_config(&self, id: Uuid, history_dir: &Path) -> nexus_types::config::Config {
        let bootstrap = self
            .dns_servers
            .iter()
            .filter(|s| s.group == DnsGroup::Internal)
            .map(|s| s.dns_address)
            .collect();
        let o = &self.options;
        let mut config = nexus_types::config::Config::new(
            id,
            self.api_token_file.clone(),
            self.db_url.clone(),
            bootstrap,
        );
        config.internal_api.idle_timeout_secs = o.http_idle_timeout_secs;
        config.internal_dns.zone = o.internal_zone.clone();
        config.tasks.period_secs = o.task_period_secs;
        config.tasks.server_timeout_secs = o.server_timeout_secs;
        config.tasks.detach_after_secs = o.detach_after_secs;
        config.tasks.repair_servers = o.repair_servers;
        config.history.dir = Some(history_dir.to_path_buf());
        config
    }

    /// Waits until every running DNS server serves its group's latest
    /// generation and every running Nexus answers and has loaded it.
    pub async fn wait_until_converged(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            match self.convergence_problem().await {
                None => return Ok(()),
                Some(problem) if Instant::now() > deadline => {
                    bail!("the stack did not converge within {limit:?}: {problem}")
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn convergence_problem(&self) -> Option<String> {
        for nexus in self.nexus.iter().filter(|n| n.process.is_some()) {
            if let Err(e) = nexus.client().status_get().send().await {
                return Some(format!(
                    "Nexus {} at {} does not answer: {e}",
                    nexus.id, nexus.address
                ));
            }
        }
        for group in DnsGroup::ALL {
            let latest = match self.datastore.dns_config_read(group, None).await {
                Ok(config) => config,
                Err(e) => return Some(format!("reading the latest {group} config: {e}")),
            };
            let digest = dns_types::config_digest(&latest);
            for nexus in self.nexus.iter().filter(|n| n.process.is_some()) {
                let task = nexus_types::task_name::DnsTaskName::config(group).to_string();
                let loaded = match nexus.client().bgtask_view().bgtask_name(&task).send().await {
                    Ok(task) => match nexus_types::task_view::DnsTaskView::of(&task) {
                        nexus_types::task_view::DnsTaskView::Config { status, .. } => {
                            status.map(|s| s.generation)
                        }
                        _ => None,
                    },
                    Err(e) => return Some(format!("Nexus {}: {task}: {e}", nexus.address)),
                };
                if loaded != Some(latest.generation) {
                    return Some(format!(
                        "Nexus {} has loaded {group} generation {loaded:?}, the latest is {}",
                        nexus.address, latest.generation
                    ));
                }
            }
            for server in
                self.dns_servers.iter().filter(|s| s.group == group && s.process.is_some())
            {
                let status = match dns_server_client(server, &self.api_token) {
                    Ok(client) => client.status_get().send().await.map(|s| s.into_inner()),
                    Err(e) => {
                        return Some(format!("{group} DNS server {}: {e}", server.http_address));
                    }
                };
                let status = match status {
                    Ok(status) => status,
                    Err(e) => {
                        return Some(format!("{group} DNS server {}: {e}", server.http_address));
                    }
                };
                let state = classify(
                    ServerClaim {
                        generation: status.generation,
                        digest: status.applied_config_digest.as_deref(),
                    },
                    Wanted {
                        generation: latest.generation,
                        digest: &digest,
                        database_latest: Some(latest.generation),
                        digest_at_server_generation: None,
                    },
                );
                if !state.is_current() {
                    return Some(format!(
                        "{group} DNS server {} at generation {} is {state} (latest is {})",
                        server.http_address, status.generation, latest.generation
                    ));
                }
            }
        }
        None
    }

    pub async fn server_generation(&self, server: &DnsServer) -> anyhow::Result<u64> {
        Ok(dns_server_client(server, &self.api_token)?
            .status_get()
            .send()
            .await?
            .into_inner()
            .generation)
    }

    /// The DNS addresses of the internal DNS servers (for `OMDB_DNS_SERVER`).
    pub fn internal_dns_addresses(&self) -> Vec<SocketAddr> {
        self.dns_servers
            .iter()
            .filter(|s| s.group == DnsGroup::Internal)
            .map(|s| s.dns_address)
            .collect()
    }

    pub fn servers(&self, group: DnsGroup) -> impl Iterator<Item = &DnsServer> {
        self.dns_servers.iter().filter(move |s| s.group == group)
    }

    /// Every log file of the stack.
    pub fn logs(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = self.dns_servers.iter().map(|s| s.log.clone()).collect();
        logs.extend(self.nexus.iter().map(|n| n.log.clone()));
        match &self.database {
            Database::Local(pg) => logs.push(pg.log_path()),
            Database::Replicated(cluster) => {
                logs.extend(cluster.nodes().iter().map(|n| n.log_path()));
            }
            Database::External => {}
        }
        logs
    }

    /// Stops every process (Nexus first, then DNS servers, then the
    /// database), gracefully.
    pub async fn stop(mut self) {
        self.stop_all().await
    }

    /// [`Stack::stop`], for a stack shared with others (devstack's control
    /// socket): every process is stopped, the stack stays.
    pub async fn stop_all(&mut self) {
        for nexus in &mut self.nexus {
            nexus.stop().await;
        }
        for server in &mut self.dns_servers {
            server.stop().await;
        }
        match std::mem::replace(&mut self.database, Database::External) {
            Database::Local(pg) => {
                let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
            }
            Database::Replicated(cluster) => {
                let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
            }
            Database::External => {}
        }
    }
}

/// Starts a DNS server on ports picked now and passed explicitly, so that
/// its command line (as `ps` shows it) starts it again on the same
/// addresses, which internal DNS points at.  A port taken between picking
/// and binding means another try.
async fn spawn_on_free_ports(
    name: String,
    group: DnsGroup,
    id: Uuid,
    api_token_file: PathBuf,
    options: &StackOptions,
    host: Option<host_network::Host>,
) -> anyhow::Result<DnsServer> {
    let storage = options.run_dir.join(&name);
    let log = options.run_dir.join(format!("{name}.log"));
    let mut last_error = None;
    for _ in 0..5 {
        // On a host of its own, the usual ports on its own address.
        let (dns_address, http_address) = match &host {
            Some(host) => (
                SocketAddr::new(host.address.into(), 5353),
                SocketAddr::new(host.address.into(), 8080),
            ),
            None => (
                SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            ),
        };
        let mut server = DnsServer {
            name: name.clone(),
            group,
            id,
            dns_address,
            http_address,
            storage_dir: storage.clone(),
            process: None,
            log: log.clone(),
            advertise: None,
            netns: host.as_ref().map(|h| h.netns.clone()),
            api_token_file: api_token_file.clone(),
            http_idle_timeout_secs: options.http_idle_timeout_secs,
            history_events: options.dns_history_events,
        };
        match server.start().await {
            Ok(()) => return Ok(server),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.expect("at least one attempt"))
}

/// `program` with `args`, run inside network namespace `netns` when given
/// (`ip netns exec` replaces itself with the program, so the process is
/// the program's own).
fn on_host(netns: Option<&str>, program: PathBuf, args: Vec<String>) -> (PathBuf, Vec<String>) {
    match netns {
        None => (program, args),
        Some(netns) => {
            let mut wrapped = vec![
                "netns".to_string(),
                "exec".into(),
                netns.into(),
                program.display().to_string(),
            ];
            wrapped.extend(args);
            (PathBuf::from("ip"), wrapped)
        }
    }
}

/// A loopback port free for both UDP and TCP right now, below the range
/// the kernel hands out to outgoing connections: a server's port is fixed
/// for its life (internal DNS points at it, a restart binds it again), and
/// while the server is down an outgoing connection (a scrape kept alive)
/// could otherwise take it for as long as it lives.
pub fn free_port() -> anyhow::Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    if ephemeral_low > 12000 {
        let span = u128::from(ephemeral_low - 10000);
        for _ in 0..100 {
            let port = 10000 + (Uuid::new_v4().as_u128() % span) as u16;
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            {
                return Ok(port);
            }
        }
    }
    // A kernel-picked one, then.
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("could not find a free loopback port")
}

/// A client for a server's config API that sends the stack's token and
/// whose requests give up after 30 s (a 100,000-name config takes about a
/// second to apply).
pub fn dns_server_client(
    server: &DnsServer,
    api_token: &ApiToken,
) -> anyhow::Result<dns_server_client::Client> {
    dns_server_client_at(server.http_address, api_token)
}

/// A client of the DNS server config API at `address` that sends the token.
pub fn dns_server_client_at(
    address: SocketAddr,
    api_token: &ApiToken,
) -> anyhow::Result<dns_server_client::Client> {
    let http = api_token
        .client_builder_as("devstack")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()?;
    Ok(dns_server_client::Client::new_with_client(&format!("http://{address}"), http))
}

/// Every host of the database URL, as the addresses registered in internal
/// DNS (a host name that is not an IP address is registered as loopback).
fn db_nodes(url: &str) -> Vec<SocketAddr> {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let nodes: Vec<SocketAddr> = match url.parse::<tokio_postgres::Config>() {
        Ok(config) => db_model::cluster::hosts_of(&config)
            .into_iter()
            .map(|(_, host, port)| SocketAddr::new(host.parse().unwrap_or(loopback), port))
            .collect(),
        Err(_) => Vec::new(),
    };
    if nodes.is_empty() { vec![SocketAddr::new(loopback, 5432)] } else { nodes }
}

/// Creates database `name` through `url` unless it exists (a kept run
/// directory), and returns `url` pointed at it.
async fn create_database_at(url: &str, name: &str) -> anyhow::Result<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to the new PostgreSQL")?;
    let connection = tokio::spawn(connection);
    let exists =
        client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await?.is_some();
    if !exists {
        client.batch_execute(&format!("CREATE DATABASE {name}")).await?;
    }
    drop(client);
    let _ = connection.await;
    Ok(url.replacen("/postgres?", &format!("/{name}?"), 1))
}
