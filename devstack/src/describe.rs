//! Where each component of a running stack is, for people and for scripts:
//! `RUN_DIR/stack.json` (the same facts devstack prints), `RUN_DIR/env`
//! (the variables omdb needs, to `source`), and `~/.devstack/current`, a
//! link to the newest run directory, so that a doc or a script can say
//! `source ~/.devstack/current/env` without knowing where the run went.
//!
//! The files are rewritten whenever a component is stopped or started.

use crate::stack::{Database, Stack};
use anyhow::Context;
use dns_types::DnsGroup;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `RUN_DIR/stack.json`.
#[derive(Debug, Serialize)]
pub struct StackDescription {
    pub run_dir: PathBuf,
    pub db_url: String,
    pub token_file: PathBuf,
    pub components: Vec<Component>,
}

/// One process of the stack.
#[derive(Clone, Debug, Serialize)]
pub struct Component {
    pub kind: ComponentKind,
    /// Its name in the stack (`dns-internal-0`, `nexus-1`, `postgres`).
    pub name: String,
    /// DNS servers only.
    pub group: Option<DnsGroup>,
    pub id: Option<String>,
    /// `None` while stopped.
    pub pid: Option<u32>,
    /// The network namespace it runs in; `None` on this host's loopback.
    pub netns: Option<String>,
    pub dns_address: Option<SocketAddr>,
    pub http_address: Option<SocketAddr>,
    pub log: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    DnsServer,
    Nexus,
    Postgres,
    /// A Patroni agent and the PostgreSQL node it manages (a replicated
    /// database); its HTTP address is Patroni's API.
    Patroni,
    Etcd,
    Prometheus,
}

impl std::fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ComponentKind::DnsServer => "dns-server",
            ComponentKind::Nexus => "nexus",
            ComponentKind::Postgres => "postgres",
            ComponentKind::Patroni => "patroni",
            ComponentKind::Etcd => "etcd",
            ComponentKind::Prometheus => "prometheus",
        })
    }
}

impl Stack {
    pub fn description(&self) -> StackDescription {
        let mut components = Vec::new();
        match &self.database {
            Database::Local(pg) => components.push(Component {
                kind: ComponentKind::Postgres,
                name: "postgres".into(),
                group: None,
                id: None,
                pid: u32::try_from(pg.pid().as_raw()).ok(),
                netns: self
                    .network
                    .as_ref()
                    .and_then(|n| n.host("postgres").ok())
                    .map(|h| h.netns.clone()),
                dns_address: None,
                http_address: None,
                log: pg.log_path(),
            }),
            Database::Replicated(cluster) => {
                components.push(Component {
                    kind: ComponentKind::Etcd,
                    name: "etcd".into(),
                    group: None,
                    id: None,
                    pid: None,
                    netns: None,
                    dns_address: None,
                    http_address: Some(cluster.etcd()),
                    log: cluster.dir().join("etcd.log"),
                });
                for node in cluster.nodes() {
                    components.push(Component {
                        kind: ComponentKind::Patroni,
                        name: format!("postgres-{}", node.name),
                        group: None,
                        id: None,
                        pid: node.agent_pid().and_then(|p| u32::try_from(p.as_raw()).ok()),
                        netns: None,
                        dns_address: None,
                        http_address: Some(node.patroni_api),
                        log: node.log_path(),
                    });
                }
            }
            Database::External => {}
        }
        for s in &self.dns_servers {
            components.push(Component {
                kind: ComponentKind::DnsServer,
                name: s.name.clone(),
                group: Some(s.group),
                id: Some(s.id.to_string()),
                pid: s.process.as_ref().and_then(|p| p.pid()).map(|p| p.as_raw() as u32),
                netns: s.netns.clone(),
                dns_address: Some(s.dns_address),
                http_address: Some(s.http_address),
                log: s.log().to_path_buf(),
            });
        }
        for n in &self.nexus {
            components.push(Component {
                kind: ComponentKind::Nexus,
                name: n.name.clone(),
                group: None,
                id: Some(n.id.to_string()),
                pid: n.process.as_ref().and_then(|p| p.pid()).map(|p| p.as_raw() as u32),
                netns: n.netns.clone(),
                dns_address: None,
                http_address: Some(n.address),
                log: n.log().to_path_buf(),
            });
        }
        StackDescription {
            run_dir: self.options.run_dir.clone(),
            db_url: self.db_url.clone(),
            token_file: self.api_token_file.clone(),
            components,
        }
    }

    /// Writes `stack.json` and `env` into the run directory (each replaced
    /// whole, so a reader never sees half of one), with `extra` components
    /// (Prometheus) appended.
    pub fn write_description(&self, extra: &[Component]) -> anyhow::Result<()> {
        let mut description = self.description();
        description.components.extend_from_slice(extra);
        let dir = &self.options.run_dir;
        let json = serde_json::to_string_pretty(&description)? + "\n";
        replace(&dir.join("stack.json"), &json)?;
        replace(&dir.join("env"), &self.env_file())
    }

    /// Shell lines that set up omdb for this stack.
    fn env_file(&self) -> String {
        let dns = self.internal_dns_addresses()[0];
        let mut text = format!(
            "# Written by devstack for the stack in {dir}: `source` it.\n\
             export DEVSTACK_RUN_DIR='{dir}'\n\
             export OMDB_DNS_SERVER={dns}\n\
             export OMDB_API_TOKEN_FILE='{token}'\n\
             # One internal DNS server, for dig: dig @$DEVSTACK_DNS_IP -p $DEVSTACK_DNS_PORT ...\n\
             export DEVSTACK_DNS_IP={ip}\n\
             export DEVSTACK_DNS_PORT={port}\n",
            dir = self.options.run_dir.display(),
            token = self.api_token_file.display(),
            ip = dns.ip(),
            port = dns.port(),
        );
        if let Database::Replicated(cluster) = &self.database {
            let apis: Vec<String> =
                cluster.nodes().iter().map(|n| n.patroni_api.to_string()).collect();
            text.push_str(&format!(
                "# The replicated database's Patroni agents, for `omdb db status`.\n\
                 export OMDB_PATRONI_API={}\n",
                apis.join(",")
            ));
        }
        // The workspace's binaries (omdb, devstack, dns-server) first on
        // the PATH.
        if let Ok(omdb) = test_support::process::binary("omdb")
            && let Some(bin) = omdb.parent()
        {
            text.push_str(&format!("export PATH='{}':\"$PATH\"\n", bin.display()));
        }
        text
    }
}

/// Points `~/.devstack/current` at `run_dir` (replacing an older link).
pub fn link_current(run_dir: &Path) -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let dir = PathBuf::from(home).join(".devstack");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let link = dir.join("current");
    let temporary = dir.join(format!("current.{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let target = std::path::absolute(run_dir)?;
    std::os::unix::fs::symlink(&target, &temporary)
        .with_context(|| format!("linking {} to {}", temporary.display(), target.display()))?;
    std::fs::rename(&temporary, &link).with_context(|| format!("replacing {}", link.display()))?;
    Ok(link)
}

/// The run directory to control: `DEVSTACK_RUN_DIR`, else what
/// `~/.devstack/current` points at.
pub fn current_run_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DEVSTACK_RUN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let link = PathBuf::from(home).join(".devstack/current");
    std::fs::read_link(&link).with_context(|| {
        format!(
            "no running stack found: {} is missing (is `devstack run` running?)",
            link.display()
        )
    })
}

fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
}
