//! The Nexus config file (`nexus --config-file nexus.toml`): read by Nexus,
//! written by devstack and the tests, so one type says what it holds.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// ```toml
/// id = "5f5a1e0a-..."
/// api_token_file = "/var/run/control-plane/api-token"
/// [database]
/// url = "postgresql://postgres@127.0.0.1:5432/control_plane"
/// [internal_api]
/// address = "127.0.0.1:12221"
/// idle_timeout_secs = 30
/// [internal_dns]
/// bootstrap_servers = ["127.0.0.1:5353"]
/// zone = "control-plane.internal"
/// [tasks]
/// period_secs = 60
/// server_timeout_secs = 5
/// detach_after_secs = 0.1
/// repair_servers = true
/// ```
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub id: Uuid,
    /// The bearer token this Nexus requires of every write to its API and
    /// sends with its own writes (pushes to DNS servers, notices to peers).
    pub api_token_file: PathBuf,
    pub database: DatabaseConfig,
    pub internal_api: InternalApiConfig,
    pub internal_dns: InternalDnsConfig,
    #[serde(default)]
    pub tasks: TasksConfig,
    #[serde(default)]
    pub history: HistoryConfig,
}

/// Where this Nexus keeps its propagation history (`GET
/// /dns/{group}/history`): when it first saw each generation and every
/// push attempt.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// A directory of its own; without one the history is kept in memory
    /// only (and gone after a restart).
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
    /// How many events to keep (default 100,000).
    #[serde(default)]
    pub events: Option<usize>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    /// How long to keep trying to reach the database at start-up.
    #[serde(default = "default_connect_secs")]
    pub connect_timeout_secs: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InternalApiConfig {
    pub address: SocketAddr,
    /// A connection that moves no data for this long, with no request being
    /// handled, is closed (idle keep-alive, or a request that stopped
    /// arriving half-way).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InternalDnsConfig {
    /// DNS servers (UDP/TCP) used to resolve the internal names.
    pub bootstrap_servers: Vec<SocketAddr>,
    #[serde(default = "default_zone")]
    pub zone: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    /// Period of every DNS task.
    #[serde(default = "default_period")]
    pub period_secs: u64,
    /// Limit for one push to one DNS server (and for one DNS query).
    #[serde(default = "default_server_timeout")]
    pub server_timeout_secs: f64,
    /// Once some servers have answered a push, how long the activation
    /// waits past the last answer for the others before it reports them
    /// in flight and lets their pushes run on in the background (so a hung
    /// server delays neither the others nor the next change).
    #[serde(default = "default_detach_after")]
    pub detach_after_secs: f64,
    /// Whether propagation repairs a server that is ahead of the database
    /// or diverged from it (`true`, the default), or only reports it.
    #[serde(default = "default_repair")]
    pub repair_servers: bool,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            period_secs: default_period(),
            server_timeout_secs: default_server_timeout(),
            detach_after_secs: default_detach_after(),
            repair_servers: default_repair(),
        }
    }
}

impl TasksConfig {
    pub fn period(&self) -> Duration {
        Duration::from_secs(self.period_secs.max(1))
    }
    pub fn server_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.server_timeout_secs.max(0.01))
    }
    pub fn detach_after(&self) -> Duration {
        Duration::from_secs_f64(self.detach_after_secs.clamp(0.0, 3600.0))
    }
}

fn default_connect_secs() -> u64 {
    60
}
fn default_zone() -> String {
    dns_types::DEFAULT_INTERNAL_ZONE.to_string()
}
fn default_period() -> u64 {
    60
}
fn default_server_timeout() -> f64 {
    5.0
}
fn default_detach_after() -> f64 {
    0.1
}
fn default_idle_timeout() -> f64 {
    30.0
}
fn default_repair() -> bool {
    true
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("reading config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config file {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigFileError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigFileError::Parse { path: path.into(), source })
    }

    /// The config as a file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config serializes")
    }

    /// The config a test or devstack starts a Nexus with: the internal API
    /// on a port picked by the kernel, everything else at its default.
    pub fn new(
        id: Uuid,
        api_token_file: PathBuf,
        database_url: String,
        bootstrap_servers: Vec<SocketAddr>,
    ) -> Config {
        Config {
            id,
            api_token_file,
            database: DatabaseConfig {
                url: database_url,
                connect_timeout_secs: default_connect_secs(),
            },
            internal_api: InternalApiConfig {
                address: SocketAddr::from(([127, 0, 0, 1], 0)),
                idle_timeout_secs: default_idle_timeout(),
            },
            internal_dns: InternalDnsConfig { bootstrap_servers, zone: default_zone() },
            tasks: TasksConfig::default(),
            history: HistoryConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_written_reads_back_the_same() {
        let mut config = Config::new(
            Uuid::nil(),
            "/tmp/token".into(),
            "postgresql://h1:1,h2:2/db".into(),
            vec!["[fd00::1]:53".parse().unwrap()],
        );
        config.history.dir = Some("/tmp/history".into());
        let back: Config = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(back.to_toml(), config.to_toml());
        assert_eq!(back.internal_dns.bootstrap_servers, config.internal_dns.bootstrap_servers);
    }
}
