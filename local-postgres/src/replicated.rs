//! A replicated database: etcd and three PostgreSQL nodes managed by Patroni
//! (Debian packages `etcd-server`, `patroni`), with streaming replication in
//! synchronous strict mode, so that a commit acknowledged to a client is on
//! two nodes and Patroni never promotes a standby that may lack it.
//!
//! [`ReplicatedPostgres::start`] writes the configuration and starts the
//! processes (as the `postgres` OS user when root; ports picked at run
//! time); it returns once every Patroni agent and one PostgreSQL node
//! answer.  Whether the cluster accepts writes is for the caller to check
//! with the database itself (`db_model::cluster`).  Nodes can be killed as
//! a machine dies (SIGKILL to the agent and its PostgreSQL) and started
//! again; dropping the handle stops everything, and every process it
//! started also goes when this process dies (a parent-death signal).
//!
//! Patroni's timing is chosen for a short failover on one machine, where
//! etcd answers in microseconds: a leader key that lives 8 s (`ttl`), a
//! loop every second (`loop_wait`), 3 s to retry etcd and PostgreSQL
//! (`retry_timeout`), which keeps Patroni's rule `loop_wait + 2 *
//! retry_timeout <= ttl`.  A killed primary's key expires within 8 s and a
//! standby takes over at its next loop: writes stop for about 9-13 s
//! (`docs/PERFORMANCE.md`).

use crate::{
    BinDir, Directory, Error, START_TIMEOUT, STOP_TIMEOUT, children_of, command, die_with_parent,
    find_binaries, free_port, spawn_tied, unprivileged_user,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How many PostgreSQL nodes: one primary, a synchronous standby and a
/// spare that becomes synchronous when the first one goes.
pub const NODES: usize = 3;
/// Patroni's `scope`: the cluster's name in etcd.
const SCOPE: &str = "dns-control-plane";

/// One node: a Patroni agent and the PostgreSQL it manages.
pub struct Node {
    pub name: String,
    /// Where its PostgreSQL listens.
    pub postgres: SocketAddr,
    /// Patroni's REST API (`GET /cluster`, `/patroni`).
    pub patroni_api: SocketAddr,
    dir: PathBuf,
    agent: Option<(Pid, mpsc::Receiver<ExitStatus>)>,
}

impl Node {
    /// The Patroni agent's process id, while it runs.
    pub fn agent_pid(&self) -> Option<Pid> {
        self.agent.as_ref().map(|(pid, _)| *pid)
    }

    /// The PostgreSQL postmaster's process id, from its pid file.
    pub fn postmaster_pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        let pid = Pid::from_raw(pid);
        kill(pid, None).is_ok().then_some(pid)
    }

    /// The agent's log (PostgreSQL's own output goes there too).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("patroni.log")
    }
}

/// A running replicated database.
pub struct ReplicatedPostgres {
    dir: PathBuf,
    run_as: Option<User>,
    etcd: Option<(Pid, mpsc::Receiver<ExitStatus>)>,
    etcd_client: SocketAddr,
    nodes: Vec<Node>,
    _temp: Option<tempfile::TempDir>,
}

impl ReplicatedPostgres {
    /// Writes the configuration under `directory` and starts etcd and the
    /// Patroni agents; returns once each agent's API and one PostgreSQL
    /// node answer.  Blocks for several seconds: call it off the async
    /// threads.
    pub fn start(directory: Directory) -> Result<ReplicatedPostgres, Error> {
        let bin = server_bin_dir(&find_binaries()?)?;
        let run_as = unprivileged_user()?;
        let fast = matches!(directory, Directory::Temporary);
        let (temp, dir) = directory.create("replicated-postgres-")?;
        for program in ["patroni", "etcd"] {
            if which(program).is_none() {
                return Err(Error::Spawn {
                    command: program.into(),
                    source: std::io::Error::other(
                        "not found on the PATH: install it with \
                         `apt-get install -y patroni etcd-server`",
                    ),
                });
            }
        }
        let etcd_client = loopback(free_port()?);
        let etcd_peer = loopback(free_port()?);
        let mut nodes = Vec::new();
        for i in 1..=NODES {
            let name = format!("node{i}");
            let node_dir = dir.join(&name);
            nodes.push(Node {
                postgres: loopback(free_port()?),
                patroni_api: loopback(free_port()?),
                dir: node_dir,
                name,
                agent: None,
            });
        }
        prepare_dir(&dir, run_as.as_ref(), 0o755)?;
        prepare_dir(&dir.join("etcd"), run_as.as_ref(), 0o700)?;
        for node in &nodes {
            prepare_dir(&node.dir, run_as.as_ref(), 0o700)?;
            let config = patroni_config(node, etcd_client, &bin, fast);
            write_file(&node.dir.join("patroni.yml"), &config)?;
        }
        let mut cluster =
            ReplicatedPostgres { dir, run_as, etcd: None, etcd_client, nodes, _temp: temp };
        cluster.start_etcd(etcd_peer)?;
        for i in 0..NODES {
            cluster.start_node(i)?;
        }
        // The agents answer within a second; one PostgreSQL node once the
        // bootstrap (initdb on whichever agent took the lock) is done.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let agents = cluster.nodes.iter().all(|n| TcpStream::connect(n.patroni_api).is_ok());
            let postgres = cluster.nodes.iter().any(|n| TcpStream::connect(n.postgres).is_ok());
            if agents && postgres {
                return Ok(cluster);
            }
            if let Some(node) = cluster.nodes.iter().find(|n| agent_exited(n)) {
                return Err(Error::Exited {
                    status: format!("Patroni agent {} exited", node.name),
                    log: node.log_path(),
                    log_tail: tail(&node.log_path()),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady { log: cluster.nodes[0].log_path() });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// etcd's client address.
    pub fn etcd(&self) -> SocketAddr {
        self.etcd_client
    }

    /// A multi-host URL for `database` as the superuser: a connection goes
    /// to whichever node accepts writes.
    pub fn url(&self, database: &str) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| n.postgres.to_string()).collect();
        format!(
            "postgresql://{}@{}/{database}?sslmode=disable&target_session_attrs=read-write",
            crate::SUPERUSER,
            hosts.join(",")
        )
    }

    /// Kills node `index` as when its machine dies: SIGKILL to the Patroni
    /// agent and to its PostgreSQL, all at once, nothing written after.
    pub fn kill_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let postmaster = node.postmaster_pid();
        if let Some((pid, exited)) = node.agent.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = exited.recv_timeout(STOP_TIMEOUT);
        }
        if let Some(postmaster) = postmaster {
            for child in children_of(postmaster) {
                let _ = kill(child, Signal::SIGKILL);
            }
            let _ = kill(postmaster, Signal::SIGKILL);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while kill(postmaster, None).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts node `index`'s agent (again): it starts its PostgreSQL and
    /// rejoins the cluster (as a standby when another node leads).
    pub fn start_node(&mut self, index: usize) -> Result<(), Error> {
        let node = &self.nodes[index];
        if node.agent.is_some() {
            return Ok(());
        }
        let log = open_log(&node.log_path())?;
        let log_err =
            log.try_clone().map_err(|source| Error::Directory { path: node.log_path(), source })?;
        let patroni = which("patroni").expect("checked at start");
        let mut cmd = command(patroni, &node.dir, self.run_as.as_ref());
        cmd.arg(node.dir.join("patroni.yml")).stdout(log).stderr(log_err);
        // SIGTERM: Patroni stops its PostgreSQL and leaves.
        die_with_parent(&mut cmd, Signal::SIGTERM);
        let agent = spawn_tied(cmd, format!("patroni-{}", node.name))?;
        self.nodes[index].agent = Some(agent);
        Ok(())
    }

    fn start_etcd(&mut self, peer: SocketAddr) -> Result<(), Error> {
        let etcd = which("etcd").expect("checked at start");
        let log_path = self.dir.join("etcd.log");
        let log = open_log(&log_path)?;
        let log_err = log
            .try_clone()
            .map_err(|source| Error::Directory { path: log_path.clone(), source })?;
        let client = format!("http://{}", self.etcd_client);
        let peer = format!("http://{peer}");
        let mut cmd = command(etcd, &self.dir, self.run_as.as_ref());
        cmd.args(["--name", "etcd0", "--data-dir"])
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("etcd0={peer}")])
            .stdout(log)
            .stderr(log_err);
        die_with_parent(&mut cmd, Signal::SIGTERM);
        let (pid, exited) = spawn_tied(cmd, "etcd".into())?;
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(self.etcd_client).is_err() {
            if let Ok(status) = exited.try_recv() {
                return Err(Error::Exited {
                    status: status.to_string(),
                    log: log_path.clone(),
                    log_tail: tail(&log_path),
                });
            }
            if Instant::now() > deadline {
                let _ = kill(pid, Signal::SIGKILL);
                return Err(Error::NotReady { log: log_path });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.etcd = Some((pid, exited));
        Ok(())
    }

    fn shutdown(&mut self) {
        // Every agent at once: each stops its PostgreSQL (the primary last
        // would be nicer, but nothing here needs the data afterwards).
        let postmasters: Vec<Option<Pid>> = self.nodes.iter().map(Node::postmaster_pid).collect();
        for node in &self.nodes {
            if let Some((pid, _)) = &node.agent {
                let _ = kill(*pid, Signal::SIGTERM);
            }
        }
        for node in &mut self.nodes {
            if let Some((pid, exited)) = node.agent.take()
                && exited.recv_timeout(STOP_TIMEOUT).is_err()
            {
                tracing::warn!(node = %node.name, "Patroni ignored SIGTERM; killing it");
                let _ = kill(pid, Signal::SIGKILL);
                let _ = exited.recv_timeout(STOP_TIMEOUT);
            }
        }
        // A PostgreSQL whose agent was killed (or did not stop it).
        for postmaster in postmasters.into_iter().flatten() {
            if kill(postmaster, None).is_ok() {
                let _ = kill(postmaster, Signal::SIGQUIT);
                let deadline = Instant::now() + STOP_TIMEOUT;
                while kill(postmaster, None).is_ok() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = kill(postmaster, Signal::SIGKILL);
            }
        }
        if let Some((pid, exited)) = self.etcd.take() {
            let _ = kill(pid, Signal::SIGTERM);
            if exited.recv_timeout(STOP_TIMEOUT).is_err() {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }
}

impl Drop for ReplicatedPostgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The directory of the server's own binaries (Patroni also runs
/// `pg_controldata`, `pg_rewind` and `pg_basebackup`, which the `PATH` may
/// not have beside `postgres`): where `postgres` really lives.
fn server_bin_dir(found: &BinDir) -> Result<BinDir, Error> {
    let postgres = std::fs::canonicalize(found.path("postgres"))
        .map_err(|source| Error::Spawn { command: "postgres".into(), source })?;
    let dir = postgres.parent().map(Path::to_path_buf).unwrap_or_default();
    for tool in ["pg_controldata", "pg_rewind", "pg_basebackup", "initdb"] {
        if !dir.join(tool).is_file() {
            return Err(Error::Spawn {
                command: tool.into(),
                source: std::io::Error::other(format!(
                    "not found beside postgres in {} (Patroni needs it)",
                    dir.display()
                )),
            });
        }
    }
    Ok(BinDir(dir))
}

fn agent_exited(node: &Node) -> bool {
    match &node.agent {
        Some((_, exited)) => exited.try_recv().is_ok(),
        None => false,
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

fn prepare_dir(dir: &Path, run_as: Option<&User>, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| Error::Directory { path: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    if let Some(user) = run_as {
        nix::unistd::chown(dir, Some(user.uid), Some(user.gid))
            .map_err(|e| io(std::io::Error::from(e)))?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text)
        .map_err(|source| Error::Directory { path: path.to_path_buf(), source })
}

fn open_log(path: &Path) -> Result<File, Error> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| Error::Directory { path: path.to_path_buf(), source })
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(15).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// One node's Patroni configuration.  The cluster-wide settings under
/// `bootstrap.dcs` are written to etcd by whichever agent bootstraps.
fn patroni_config(node: &Node, etcd: SocketAddr, bin: &BinDir, fast: bool) -> String {
    let dir = node.dir.display();
    // A throw-away cluster (tests) skips fsync, as the single-node one does;
    // commits still wait for the synchronous standby.
    let durability =
        if fast { "\n        fsync: \"off\"\n        full_page_writes: \"off\"" } else { "" };
    format!(
        r#"# Written by local-postgres (replicated.rs); see its module comment.
scope: {SCOPE}
name: {name}
log:
  level: INFO
restapi:
  listen: {api}
  connect_address: {api}
etcd3:
  hosts: {etcd}
bootstrap:
  dcs:
    ttl: 8
    loop_wait: 1
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: true
    postgresql:
      use_pg_rewind: true
      parameters:
        synchronous_commit: "on"
        wal_keep_size: 128MB
        max_connections: 300
        log_min_messages: warning{durability}
  initdb:
    - encoding: UTF8
    - locale: C
  pg_hba:
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
    - local all all trust
postgresql:
  listen: {pg}
  connect_address: {pg}
  data_dir: {dir}/data
  bin_dir: {bin_dir}
  pgpass: {dir}/pgpass
  authentication:
    replication:
      username: replicator
      password: replicator
    superuser:
      username: {superuser}
      password: {superuser}
  parameters:
    unix_socket_directories: {dir}
"#,
        name = node.name,
        api = node.patroni_api,
        pg = node.postgres,
        bin_dir = bin.0.display(),
        superuser = crate::SUPERUSER,
    )
}
