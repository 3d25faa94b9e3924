//! An authoritative DNS server whose data is pushed to it over HTTP.
//!
//! - DNS over UDP and TCP on one address, authoritative for the zones of
//!   the current config ([`zone`]): our own UDP loops and TCP connections
//!   answer plain queries straight from the zone ([`plain`]), hickory the
//!   rest ([`dns`]).
//! - A config HTTP API (`dns-server-api`, Dropshot): `GET /config`,
//!   `PUT /config` with generation rules, `GET /status` ([`http`]).
//! - The applied config is kept in `--storage-dir` ([`storage`]) and served
//!   again right after a restart, before anyone pushes anything.
//!
//! The server depends on nothing but its own storage: not on the database,
//! not on Nexus.  hickory types stay inside this crate.

pub mod dns;
pub mod http;
pub mod metrics;
pub mod plain;
pub mod policy;
pub mod query_log;
pub mod state;
pub mod storage;
pub mod tcp;
mod udp;
pub mod zone;

use anyhow::Context;
use serde::Deserialize;
use state::ServerState;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Largest `PUT /config` body: a 100,000-name config is about 10 MiB.
pub const MAX_REQUEST_BODY_BYTES: usize = 128 * 1024 * 1024;
/// A TCP DNS connection that sends no complete message for this long is
/// closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run a server (also the keys of `--config-file`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dns_address: SocketAddr,
    pub http_address: SocketAddr,
    pub storage_dir: PathBuf,
    #[serde(default)]
    pub id: Option<Uuid>,
    /// The DNS address clients use to reach this server, when it is not the
    /// one bound (a server behind a proxy or NAT): what `GET /status`
    /// reports, and so where omdb asks it over the wire.
    #[serde(default)]
    pub advertise_dns_address: Option<SocketAddr>,
    /// File holding the bearer token every config write must carry
    /// (`api-auth`).
    pub api_token_file: PathBuf,
    /// An HTTP connection that moves no data for this long, with no request
    /// being handled, is closed (idle keep-alive, or a request that stopped
    /// arriving half-way).
    #[serde(default = "default_http_idle_timeout_secs")]
    pub http_idle_timeout_secs: f64,
    /// Answer CHAOS TXT `version.server` / `version.bind` (off: REFUSED).
    #[serde(default)]
    pub answer_version: bool,
    /// Write every query (or one in `query_log_sample`) to this file, one
    /// JSON object per line.
    #[serde(default)]
    pub query_log: Option<PathBuf>,
    #[serde(default = "default_query_log_sample")]
    pub query_log_sample: u64,
    /// Address ranges (`192.0.2.0/24`, `::1`) allowed to transfer zones
    /// over TCP; absent: loopback only.
    #[serde(default)]
    pub allow_transfer: Option<Vec<AddressRange>>,
    /// How many events of its apply history the server keeps.
    #[serde(default = "default_history_events")]
    pub history_events: usize,
}

fn default_history_events() -> usize {
    state::DEFAULT_HISTORY_EVENTS
}

/// An address range: an address and a prefix length (`10.0.0.0/8`, `::1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    address: std::net::IpAddr,
    prefix: u8,
}

impl<'de> Deserialize<'de> for AddressRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

impl AddressRange {
    /// 127.0.0.0/8 and ::1.
    pub fn loopback() -> Vec<AddressRange> {
        vec![
            AddressRange { address: [127, 0, 0, 0].into(), prefix: 8 },
            AddressRange { address: std::net::Ipv6Addr::LOCALHOST.into(), prefix: 128 },
        ]
    }

    pub fn contains(&self, address: std::net::IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            let drop = u32::from(width - prefix.min(width));
            if drop >= 128 { 0 } else { bits >> drop }
        }
        match (self.address, address) {
            (std::net::IpAddr::V4(range), std::net::IpAddr::V4(a)) => {
                masked(u32::from(range).into(), self.prefix, 32)
                    == masked(u32::from(a).into(), self.prefix, 32)
            }
            (std::net::IpAddr::V6(range), std::net::IpAddr::V6(a)) => {
                masked(u128::from(range), self.prefix, 128)
                    == masked(u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for AddressRange {
    type Err = String;

    fn from_str(text: &str) -> Result<AddressRange, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: std::net::IpAddr =
            address.parse().map_err(|_| format!("{text:?} is not an address or address/prefix"))?;
        let width = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {width}"))?,
        };
        Ok(AddressRange { address, prefix })
    }
}

fn default_query_log_sample() -> u64 {
    1
}

fn default_http_idle_timeout_secs() -> f64 {
    30.0
}

impl Config {
    /// Loopback addresses with ports picked by the kernel, `storage_dir` and
    /// `api_token_file`: a server for tests and tools that find its
    /// addresses afterwards.
    pub fn loopback(storage_dir: impl Into<PathBuf>, api_token_file: impl Into<PathBuf>) -> Config {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Config {
            dns_address: any_port,
            http_address: any_port,
            storage_dir: storage_dir.into(),
            id: None,
            advertise_dns_address: None,
            api_token_file: api_token_file.into(),
            http_idle_timeout_secs: default_http_idle_timeout_secs(),
            answer_version: false,
            query_log: None,
            query_log_sample: default_query_log_sample(),
            allow_transfer: None,
            history_events: default_history_events(),
        }
    }
}

/// A running server: DNS and HTTP.
pub struct RunningServer {
    state: Arc<ServerState>,
    /// TCP (our own connections; see `tcp`).
    _tcp: tcp::TcpListener,
    /// UDP (our own loops; see `udp`).
    _udp: udp::UdpListener,
    http: dropshot::HttpServer<Arc<ServerState>>,
    /// Closes idle HTTP connections while it lives.
    _http_idle: http_idle::Reaper,
    /// Bodies are read only with the token, while it lives.
    _token_first: api_auth::guard::Registration,
    /// The DNS address bound (which may differ from the one advertised).
    dns_address: SocketAddr,
}

impl RunningServer {
    /// Loads the stored config, binds the DNS (UDP and TCP, same port) and
    /// HTTP sockets and starts serving.
    pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
        let api_token = api_auth::ApiToken::from_file(&config.api_token_file)?;
        let storage = storage::Storage::open(&config.storage_dir)?;
        let id = match config.id {
            Some(id) => id,
            None => stored_id(&config.storage_dir)?,
        };
        // One UDP loop per core: the first receives, the others help it when
        // it falls behind (see `udp`).
        let loops = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (udp, tcp) = bind_dns(config.dns_address, loops).await?;
        let dns_address = udp[0].local_addr()?;
        let advertised = config.advertise_dns_address.unwrap_or(dns_address);
        let mut state = ServerState::load_with_history(
            id,
            storage,
            vec![advertised],
            api_token,
            config.history_events,
        )?;
        state.answer_version = config.answer_version;
        if let Some(ranges) = &config.allow_transfer {
            state.transfer_allow = ranges.clone();
        }
        if let Some(path) = &config.query_log {
            let log = query_log::QueryLog::open(path, config.query_log_sample)
                .with_context(|| format!("opening the query log {}", path.display()))?;
            state.query_log = Some(log);
        }
        let state = Arc::new(state);

        let handler = Arc::new(dns::DnsHandler { state: state.clone() });
        let tcp = tcp::TcpListener::start(tcp, handler.clone(), TCP_IDLE_TIMEOUT);
        let udp = udp::UdpListener::start(udp, handler).context("serving DNS over UDP")?;

        let api = dns_server_api::dns_server_api_mod::api_description::<http::DnsServerApiImpl>()
            .map_err(|e| anyhow::anyhow!("building the API description: {e}"))?;
        let log = api_json::dropshot_logger();
        let http = dropshot::ServerBuilder::new(api, state.clone(), log)
            .config(dropshot::ConfigDropshot {
                bind_address: config.http_address,
                default_request_body_max_bytes: MAX_REQUEST_BODY_BYTES,
                // A PUT runs to completion even if its client goes away, so
                // the served and stored configs never disagree.
                default_handler_task_mode: dropshot::HandlerTaskMode::Detached,
                ..Default::default()
            })
            .start()
            .map_err(|e| {
                anyhow::anyhow!("starting the HTTP server on {}: {e}", config.http_address)
            })?;
        let idle_limit = Duration::from_secs_f64(config.http_idle_timeout_secs.max(0.1));
        let http_idle =
            http_idle::Reaper::start(http.local_addr(), idle_limit, state.in_flight.clone())
                .context("starting the idle HTTP connection watcher")?;
        let token_first = api_auth::guard::require(http.local_addr(), state.api_token.clone());
        tracing::info!(
            %id, %dns_address, http_address = %http.local_addr(),
            generation = state.served().generation(), "DNS server started"
        );
        Ok(RunningServer {
            state,
            _tcp: tcp,
            _udp: udp,
            http,
            _http_idle: http_idle,
            _token_first: token_first,
            dns_address,
        })
    }

    pub fn id(&self) -> Uuid {
        self.state.id
    }

    pub fn dns_address(&self) -> SocketAddr {
        self.dns_address
    }

    pub fn http_address(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// The generation being served.
    pub fn generation(&self) -> u64 {
        self.state.served().generation()
    }

    /// The digest of what is served (`None` before any config).
    pub fn digest(&self) -> Option<String> {
        self.state.served().applied.as_ref().map(|a| a.digest.clone())
    }

    /// Applies `config` in process, by the same rules and path as
    /// `PUT /config`.
    pub async fn apply(
        &self,
        config: dns_types::DnsConfig,
    ) -> Result<state::UpdateOutcome, state::UpdateError> {
        self.state.update(config, Some("in-process".into())).await
    }

    /// Stops serving DNS and HTTP.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        // DNS stops as the listeners are dropped.
        let RunningServer { http, _http_idle, _token_first, .. } = self;
        http.close().await.map_err(|e| anyhow::anyhow!("stopping HTTP: {e}"))
    }
}

/// Binds UDP (`loops` sockets, see `udp::bind`) and TCP on the same
/// address.  With port 0 the UDP port is picked first and TCP may find it
/// taken: then try another.
async fn bind_dns(
    address: SocketAddr,
    loops: usize,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, tokio::net::TcpListener)> {
    let attempts = if address.port() == 0 { 10 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = match udp::bind(address, loops) {
            Ok(udp) => udp,
            Err(e) if address.port() == 0 => {
                last_error =
                    Some(anyhow::Error::from(e).context(format!("binding DNS (UDP) to {address}")));
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("binding DNS (UDP) to {address}")),
        };
        let bound = udp[0].local_addr()?;
        match bind_tcp(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => {
                last_error = Some(
                    anyhow::Error::from(e)
                        .context(format!("binding DNS (TCP) to the UDP port on {address}")),
                )
            }
        }
    }
    Err(last_error.expect("at least one attempt"))
}

/// Kernel send buffer of each DNS TCP connection (the listener's, which
/// accepted sockets inherit; it turns off the kernel's growing it to
/// 4 MiB).  A client that asks for a zone and reads nothing holds at most
/// this and the connection's queue of responses, so forty of them cost
/// the server a few megabytes of work, not forty times most of the zone.
const TCP_SEND_BUFFER: u32 = 256 * 1024;

fn bind_tcp(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(TCP_SEND_BUFFER)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// The server's id, kept in the storage directory so that it survives
/// restarts.
fn stored_id(dir: &std::path::Path) -> anyhow::Result<Uuid> {
    let path = dir.join("server-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            text.trim().parse().with_context(|| format!("invalid server id in {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::new_v4();
            std::fs::write(&path, format!("{id}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
