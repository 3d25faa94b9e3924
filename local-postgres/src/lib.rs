//! A private PostgreSQL server, started from the machine's own binaries
//! (`initdb`, `postgres`), for tests and `devstack`.
//!
//! [`LocalPostgres::start`] creates a fresh cluster in a directory, starts
//! the server on a loopback port picked at run time, waits until it accepts
//! connections and returns a handle.  Dropping the handle stops the server
//! and, if the directory was a temporary one, removes it, also when a test
//! panics.  If the whole process dies without dropping it, the server still
//! goes: it is started with a parent-death signal tied to the thread that
//! waits for it.
//!
//! PostgreSQL refuses to run as root.  When this process is root, the cluster
//! is created and run as the unprivileged `postgres` OS user (which the
//! Debian `postgresql` package creates), and the directory is handed to it.
//!
//! Durability follows the directory: a [`Directory::Keep`] cluster (devstack's)
//! keeps PostgreSQL's defaults (`fsync`, `synchronous_commit`,
//! `full_page_writes` on), so a change confirmed to a caller survives a
//! crash of the server or the machine; a [`Directory::Temporary`] one (tests)
//! trades them for speed, since its data dies with it anyway.
//!
//! [`replicated`] runs three of them under Patroni (with etcd), as a
//! replicated database that fails over.
//!
//! This crate knows nothing about our schema: it only runs servers.

pub mod replicated;

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long to wait for a new server to accept connections.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the server is killed.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often to retry with a new port when the chosen one was taken between
/// picking and binding it.
const PORT_ATTEMPTS: usize = 5;
/// The superuser that `initdb` creates; trust authentication on loopback.
pub const SUPERUSER: &str = "postgres";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found in $PG_BIN_DIR, $PATH or \
         /usr/lib/postgresql/*/bin: install them with `apt-get install -y postgresql`"
    )]
    BinariesNotFound,
    #[error(
        "running as root, PostgreSQL must run as the unprivileged OS user \"postgres\", which \
         does not exist: install `postgresql` (it creates the user) or run as another user"
    )]
    NoUnprivilegedUser,
    #[error("could not prepare directory {}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not run {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("initdb failed ({status}); its output:\n{output}")]
    Initdb { status: ExitStatus, output: String },
    #[error("postgres exited during start-up ({status}); see its log {}:\n{log_tail}", log.display())]
    Exited { status: String, log: PathBuf, log_tail: String },
    #[error("postgres did not become ready within {:?}; see its log {}", START_TIMEOUT, log.display())]
    NotReady { log: PathBuf },
    #[error("could not pick a free loopback port")]
    NoPort(#[source] std::io::Error),
}

/// A host other than this one's loopback: a network namespace (made by
/// the caller, e.g. `host-network`) and the address to listen on there.
#[derive(Clone, Debug)]
pub struct Placement {
    /// `ip netns exec NETNS ...`
    pub netns: String,
    pub address: std::net::IpAddr,
    /// Who may connect (a CIDR for `pg_hba.conf`, such as the network's
    /// prefix); loopback always may.
    pub clients: String,
}

/// Where the cluster lives.
pub enum Directory {
    /// A new temporary directory, removed when the server is dropped.
    Temporary,
    /// This directory (created if missing, must not hold a cluster yet);
    /// kept after the server stops so its log can be read.  Durable.
    Keep(PathBuf),
}

impl Directory {
    /// Makes the directory: a new temporary one (returned too, so that it
    /// is removed when dropped) named with `prefix`, or the kept one.
    pub(crate) fn create(
        self,
        prefix: &str,
    ) -> Result<(Option<tempfile::TempDir>, PathBuf), Error> {
        match self {
            Directory::Temporary => {
                let temp = tempfile::Builder::new()
                    .prefix(prefix)
                    .tempdir()
                    .map_err(|source| Error::Directory { path: std::env::temp_dir(), source })?;
                let dir = temp.path().to_path_buf();
                Ok((Some(temp), dir))
            }
            Directory::Keep(dir) => {
                std::fs::create_dir_all(&dir)
                    .map_err(|source| Error::Directory { path: dir.clone(), source })?;
                Ok((None, dir))
            }
        }
    }
}

/// Whether a commit reaches disk before it is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL's defaults: nothing confirmed is lost in a crash.
    Durable,
    /// `fsync`, `synchronous_commit` and `full_page_writes` off.
    Fast,
}

/// A running private PostgreSQL server.
pub struct LocalPostgres {
    port: u16,
    /// Where it runs: this host's loopback, or a network namespace.
    placement: Option<Placement>,
    pid: Pid,
    dir: PathBuf,
    exited: mpsc::Receiver<ExitStatus>,
    bin: BinDir,
    run_as: Option<User>,
    durability: Durability,
    /// False between `stop_temporarily` and `start_again`: the old pid may
    /// belong to another process by then and must not be signalled.
    running: bool,
    _temp: Option<tempfile::TempDir>,
}

impl LocalPostgres {
    /// Creates a cluster and starts a server on a free loopback port.
    ///
    /// This blocks for about a second; call it from a blocking context (or
    /// `tokio::task::spawn_blocking`).
    pub fn start(directory: Directory) -> Result<LocalPostgres, Error> {
        LocalPostgres::start_at(directory, None)
    }

    /// [`LocalPostgres::start`], on `placement`'s host when given (port
    /// 5432 there: the host is its own).
    pub fn start_at(
        directory: Directory,
        placement: Option<Placement>,
    ) -> Result<LocalPostgres, Error> {
        let bin = find_binaries()?;
        let run_as = unprivileged_user()?;
        let durability = match directory {
            Directory::Temporary => Durability::Fast,
            Directory::Keep(_) => Durability::Durable,
        };
        let (temp, dir) = directory.create("local-postgres-")?;
        if let Some(user) = &run_as {
            nix::unistd::chown(&dir, Some(user.uid), Some(user.gid)).map_err(|e| {
                Error::Directory { path: dir.clone(), source: std::io::Error::from(e) }
            })?;
        }
        initdb(&bin, &dir, run_as.as_ref())?;
        if let Some(placement) = &placement {
            // initdb trusts loopback only; the network's hosts too.
            let hba = dir.join("data/pg_hba.conf");
            let line = format!("host all all {} trust\n", placement.clients);
            std::fs::OpenOptions::new()
                .append(true)
                .open(&hba)
                .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()))
                .map_err(|source| Error::Directory { path: hba, source })?;
        }

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = match placement {
                Some(_) => 5432,
                None => free_port()?,
            };
            match start_server(&bin, &dir, port, run_as.as_ref(), durability, placement.as_ref()) {
                Ok((pid, exited)) => {
                    tracing::info!(port, dir = %dir.display(), "local PostgreSQL ready");
                    return Ok(LocalPostgres {
                        port,
                        placement,
                        pid,
                        dir,
                        exited,
                        bin,
                        run_as,
                        durability,
                        running: true,
                        _temp: temp,
                    });
                }
                // Someone else took the port between our probe and postgres
                // binding it: try another.
                Err(Error::Exited { log_tail, .. }) if log_tail.contains("could not bind") => {
                    last_error = Some(log_tail);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Exited {
            status: "no free port".into(),
            log: dir.join("postgres.log"),
            log_tail: last_error.unwrap_or_default(),
        })
    }

    /// The loopback TCP port the server listens on.
    /// The postmaster's process id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the cluster (`data/`) and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A connection URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://{SUPERUSER}@{}/{database}?sslmode=disable", self.address())
    }

    /// Where it listens.
    pub fn address(&self) -> std::net::SocketAddr {
        let ip = match &self.placement {
            Some(p) => p.address,
            None => std::net::IpAddr::from([127, 0, 0, 1]),
        };
        std::net::SocketAddr::new(ip, self.port)
    }

    /// Stops the server for good (fast shutdown, then kill).
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Suspends the server (SIGSTOP), so that it accepts no work: a database
    /// that hangs.  [`LocalPostgres::resume`] undoes it.
    pub fn suspend(&self) -> Result<(), nix::Error> {
        kill(self.pid, Signal::SIGSTOP)
    }

    pub fn resume(&self) -> Result<(), nix::Error> {
        kill(self.pid, Signal::SIGCONT)
    }

    /// Stops the server (fast shutdown) but keeps its data, so that
    /// [`LocalPostgres::start_again`] can bring the same database back on the
    /// same port: a database outage.
    pub fn stop_temporarily(&mut self) {
        self.shutdown();
    }

    /// How commits reach disk on this server.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Kills the server and every one of its processes at once (SIGKILL):
    /// a crash, with no chance to write anything more.  The data stays for
    /// [`LocalPostgres::start_again`], which then runs crash recovery.
    pub fn crash(&mut self) {
        if !std::mem::replace(&mut self.running, false) {
            return;
        }
        // The children first, so none outlives the postmaster holding the
        // shared memory that a restart needs.
        for child in children_of(self.pid) {
            let _ = kill(child, Signal::SIGKILL);
        }
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = self.exited.recv_timeout(STOP_TIMEOUT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while children_of(self.pid).iter().any(|c| kill(*c, None).is_ok())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again after [`LocalPostgres::stop_temporarily`].
    pub fn start_again(&mut self) -> Result<(), Error> {
        let (pid, exited) = start_server(
            &self.bin,
            &self.dir,
            self.port,
            self.run_as.as_ref(),
            self.durability,
            self.placement.as_ref(),
        )?;
        self.pid = pid;
        self.exited = exited;
        self.running = true;
        Ok(())
    }

    fn shutdown(&mut self) {
        if !std::mem::replace(&mut self.running, false) {
            return;
        }
        let _ = kill(self.pid, Signal::SIGCONT);
        // SIGINT is PostgreSQL's "fast shutdown": disconnect clients, stop.
        if kill(self.pid, Signal::SIGINT).is_err() {
            return;
        }
        if self.exited.recv_timeout(STOP_TIMEOUT).is_err() {
            tracing::warn!(pid = %self.pid, "postgres ignored fast shutdown; killing it");
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = self.exited.recv_timeout(STOP_TIMEOUT);
        }
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(crate) struct BinDir(PathBuf);

impl BinDir {
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

/// Finds the directory holding `initdb` and `postgres`: `$PG_BIN_DIR`, then
/// `$PATH`, then the newest `/usr/lib/postgresql/*/bin` (Debian keeps the
/// server binaries off the `PATH`).
pub(crate) fn find_binaries() -> Result<BinDir, Error> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        candidates.push(dir.into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    debian.sort();
    candidates.extend(debian.into_iter().rev().map(|(_, p)| p));
    candidates.into_iter().find(|d| has_both(d)).map(BinDir).ok_or(Error::BinariesNotFound)
}

pub(crate) fn unprivileged_user() -> Result<Option<User>, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name(SUPERUSER) {
        Ok(Some(user)) => Ok(Some(user)),
        _ => Err(Error::NoUnprivilegedUser),
    }
}

pub(crate) fn command(program: PathBuf, dir: &Path, run_as: Option<&User>) -> Command {
    let mut cmd = Command::new(program);
    // The unprivileged user may not be able to enter our working directory.
    cmd.current_dir(dir).stdin(Stdio::null());
    if let Some(user) = run_as {
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw()).env("HOME", dir).env("USER", SUPERUSER);
    }
    cmd
}

fn initdb(bin: &BinDir, dir: &Path, run_as: Option<&User>) -> Result<(), Error> {
    let data = dir.join("data");
    let output = command(bin.path("initdb"), dir, run_as)
        .arg("--pgdata")
        .arg(&data)
        .args(["--auth=trust", "--username", SUPERUSER, "--encoding=UTF8", "--locale=C"])
        .arg("--no-sync")
        .output()
        .map_err(|source| Error::Spawn { command: "initdb".into(), source })?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(Error::Initdb { status: output.status, output: text });
    }
    Ok(())
}

/// The processes whose parent is `parent` (from `/proc`).
pub(crate) fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces; skip past ')'.
            let ppid: i32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent.as_raw()).then_some(Pid::from_raw(pid))
        })
        .collect()
}

pub(crate) fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::NoPort)?;
    Ok(listener.local_addr().map_err(Error::NoPort)?.port())
}

fn start_server(
    bin: &BinDir,
    dir: &Path,
    port: u16,
    run_as: Option<&User>,
    durability: Durability,
    placement: Option<&Placement>,
) -> Result<(Pid, mpsc::Receiver<ExitStatus>), Error> {
    let log_path = dir.join("postgres.log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| Error::Directory { path: log_path.clone(), source })?;
    let log_err =
        log.try_clone().map_err(|source| Error::Directory { path: log_path.clone(), source })?;
    let listen = match placement {
        Some(p) => p.address.to_string(),
        None => "127.0.0.1".to_string(),
    };
    let mut cmd = match placement {
        None => command(bin.path("postgres"), dir, run_as),
        Some(p) => {
            // Into the host's namespace first (as root), then the
            // unprivileged user: `ip netns exec` needs the privilege.
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &p.netns]).current_dir(dir).stdin(Stdio::null());
            if let Some(user) = run_as {
                cmd.arg("setpriv")
                    .arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .arg("--init-groups")
                    .env("HOME", dir)
                    .env("USER", SUPERUSER);
            }
            cmd.arg(bin.path("postgres"));
            cmd
        }
    };
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-h", &listen, "-k"])
        .arg(dir)
        .args(["-c", "max_connections=300", "-c", "log_min_messages=warning"])
        .stdout(log)
        .stderr(log_err);
    if durability == Durability::Fast {
        // Durability buys nothing for a throw-away cluster and costs a lot.
        cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
    }
    // SIGQUIT: PostgreSQL's immediate shutdown.
    die_with_parent(&mut cmd, Signal::SIGQUIT);
    let (pid, exit_rx) = spawn_tied(cmd, format!("postgres-{port}"))?;

    let deadline = Instant::now() + START_TIMEOUT;
    let pid_file = dir.join("data").join("postmaster.pid");
    loop {
        if let Ok(status) = exit_rx.try_recv() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            let log_tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            return Err(Error::Exited { status: status.to_string(), log: log_path, log_tail });
        }
        // The last line of postmaster.pid reads "ready" once the server
        // accepts connections (PostgreSQL 10 and later).
        let ready = std::fs::read_to_string(&pid_file)
            .map(|s| s.lines().any(|l| l.trim() == "ready"))
            .unwrap_or(false);
        let address = match placement {
            Some(p) => std::net::SocketAddr::new(p.address, port),
            None => std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        };
        if ready && TcpStream::connect(address).is_ok() {
            return Ok((pid, exit_rx));
        }
        if Instant::now() > deadline {
            let _ = kill(pid, Signal::SIGKILL);
            return Err(Error::NotReady { log: log_path });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Has the child started by `cmd` get `signal` when the thread that spawns
/// it exits (see [`spawn_tied`]): a server must not outlive whoever started
/// it, also when that one is killed.
#[allow(unsafe_code)] // pre_exec: see the SAFETY note
pub(crate) fn die_with_parent(cmd: &mut Command, signal: Signal) {
    // SAFETY: the closure only makes a system call, which is async-signal-safe.
    // It runs after the switch to the unprivileged user, which would
    // otherwise clear the parent-death signal.
    unsafe {
        cmd.pre_exec(move || nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from));
    }
}

/// Spawns `cmd` from a thread that lives exactly as long as the child (it
/// waits for it and reports its exit): a parent-death signal set in the
/// child fires when the *thread* that forked it exits, so it must not be a
/// short-lived one.
pub(crate) fn spawn_tied(
    mut cmd: Command,
    thread_name: String,
) -> Result<(Pid, mpsc::Receiver<ExitStatus>), Error> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (pid_tx, pid_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = pid_tx.send(Ok(child.id()));
                if let Ok(status) = child.wait() {
                    let _ = exit_tx.send(status);
                }
            }
            Err(e) => {
                let _ = pid_tx.send(Err(e));
            }
        })
        .map_err(|source| Error::Spawn { command: format!("{program} waiter thread"), source })?;
    let pid = pid_rx
        .recv()
        .map_err(|_| Error::Spawn {
            command: program.clone(),
            source: std::io::Error::other("waiter thread died"),
        })?
        .map_err(|source| Error::Spawn { command: program, source })?;
    Ok((Pid::from_raw(pid as i32), exit_rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(pid: Pid) -> bool {
        kill(pid, None).is_ok()
    }

    #[test]
    fn starts_accepts_connections_and_cleans_up() {
        let pg = LocalPostgres::start(Directory::Temporary).unwrap();
        let dir = pg.dir().to_path_buf();
        let pid = pg.pid;
        assert!(TcpStream::connect(("127.0.0.1", pg.port())).is_ok());
        assert!(pg.url("postgres").contains(&pg.port().to_string()));
        drop(pg);
        assert!(!dir.exists(), "temporary directory {} left behind", dir.display());
        assert!(!running(pid), "postgres {pid} still running after drop");
    }

    #[test]
    fn cleans_up_when_the_owner_panics() {
        let (tx, rx) = mpsc::channel();
        let result = std::thread::spawn(move || {
            let pg = LocalPostgres::start(Directory::Temporary).unwrap();
            tx.send((pg.pid, pg.dir().to_path_buf())).unwrap();
            panic!("test failure while the server runs");
        })
        .join();
        assert!(result.is_err());
        let (pid, dir) = rx.recv().unwrap();
        assert!(!running(pid), "postgres {pid} survived the panic");
        assert!(!dir.exists());
    }

    #[test]
    fn stops_and_starts_again_on_the_same_port() {
        let mut pg = LocalPostgres::start(Directory::Temporary).unwrap();
        let port = pg.port();
        pg.stop_temporarily();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        pg.start_again().unwrap();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    }

    #[test]
    fn kept_directory_keeps_the_log() {
        let parent = tempfile::tempdir().unwrap();
        // The server's user must be able to reach the directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = parent.path().join("db");
        let pg = LocalPostgres::start(Directory::Keep(dir.clone())).unwrap();
        let log = pg.log_path();
        pg.stop();
        assert!(log.exists());
    }
}
