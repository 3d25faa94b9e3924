//! `devstack stop NAME` and `devstack start NAME`: stop and start one
//! component of a running stack by its name (`dns-internal-1`, `nexus-0`),
//! on the same addresses and storage, so that a tour or a script can break
//! and mend the stack without copying command lines out of `ps`.
//!
//! The running `devstack run` listens on a Unix socket in its run directory
//! (`RUN_DIR/control.sock`, reachable by its owner only); a request is one
//! line (`stop NAME`, `start NAME`), the answer one line (`ok: ...` or
//! `error: ...`).  After each change, `stack.json` and `env` are rewritten.

use crate::describe::Component;
use crate::stack::Stack;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

/// How long a client waits for a stop or a start (a DNS server with a big
/// zone takes seconds to load it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// The socket of the stack in `run_dir`.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("control.sock")
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Stop,
    Start,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
        }
    }
}

/// Serves requests for `stack` until the returned task is aborted.
/// `extra` components (Prometheus) are kept in `stack.json`.
pub fn serve(
    stack: Arc<Mutex<Stack>>,
    extra: Vec<Component>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let path = {
        let stack = stack.try_lock().context("the stack is busy")?;
        socket_path(&stack.options.run_dir)
    };
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            let (stack, extra) = (stack.clone(), extra.clone());
            tokio::spawn(async move {
                if let Err(e) = answer(connection, &stack, &extra).await {
                    tracing::warn!(error = %format!("{e:#}"), "control request");
                }
            });
        }
    }))
}

async fn answer(
    connection: UnixStream,
    stack: &Mutex<Stack>,
    extra: &[Component],
) -> anyhow::Result<()> {
    let (read, mut write) = connection.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(1024));
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .context("no request within 5s")??;
    let reply = match act(line.trim(), stack, extra).await {
        Ok(done) => format!("ok: {done}\n"),
        Err(e) => format!("error: {e:#}\n"),
    };
    write.write_all(reply.as_bytes()).await?;
    Ok(())
}

async fn act(request: &str, stack: &Mutex<Stack>, extra: &[Component]) -> anyhow::Result<String> {
    let words: Vec<&str> = request.split_whitespace().collect();
    let (action, name) = match words.as_slice() {
        ["stop", name] => (Action::Stop, *name),
        ["start", name] => (Action::Start, *name),
        ["fault", rest @ ..] => return stack.lock().await.fault(rest),
        _ => bail!("unknown request {request:?}: say `stop NAME`, `start NAME` or `fault ...`"),
    };
    let mut stack = stack.lock().await;
    let done = stack.control(action, name).await?;
    stack.write_description(extra)?;
    Ok(done)
}

impl Stack {
    /// Stops or starts the DNS server or Nexus called `name`.
    pub async fn control(&mut self, action: Action, name: &str) -> anyhow::Result<String> {
        let names = {
            let mut all: Vec<&str> = self.dns_servers.iter().map(|s| s.name.as_str()).collect();
            all.extend(self.nexus.iter().map(|n| n.name.as_str()));
            let mut all: Vec<String> = all.into_iter().map(str::to_string).collect();
            if let crate::stack::Database::Replicated(cluster) = &self.database {
                all.extend(cluster.nodes().iter().map(|n| format!("postgres-{}", n.name)));
            }
            all.join(", ")
        };
        if let crate::stack::Database::Replicated(cluster) = &mut self.database
            && let Some(index) =
                cluster.nodes().iter().position(|n| format!("postgres-{}", n.name) == name)
        {
            let running = cluster.nodes()[index].agent_pid().is_some();
            // A database node stops as its machine would die (SIGKILL to
            // Patroni and PostgreSQL): the point is to see a failover.
            match wanted(action, name, running)? {
                Action::Stop => cluster.kill_node(index),
                Action::Start => cluster.start_node(index)?,
            }
            let node = &cluster.nodes()[index];
            let pid = node.agent_pid();
            let runs_at = format!("PostgreSQL {}, Patroni API {}", node.postgres, node.patroni_api);
            return Ok(said(name, pid, runs_at));
        }
        if let Some(server) = self.dns_servers.iter_mut().find(|s| s.name == name) {
            match wanted(action, name, server.process.is_some())? {
                Action::Stop => server.stop().await,
                Action::Start => server.restart().await?,
            }
            let pid = server.process.as_ref().and_then(|p| p.pid());
            let (dns, http) = (server.dns_address, server.http_address);
            return Ok(said(name, pid, format!("DNS {dns}, config API {http}")));
        }
        if let Some(nexus) = self.nexus.iter_mut().find(|n| n.name == name) {
            match wanted(action, name, nexus.process.is_some())? {
                Action::Stop => nexus.stop().await,
                Action::Start => nexus.restart().await?,
            }
            let pid = nexus.process.as_ref().and_then(|p| p.pid());
            return Ok(said(name, pid, nexus.url()));
        }
        bail!("the stack has no {name:?} to {}; it has: {}", action.word(), names)
    }
}

/// `action`, unless the component is already where it would take it.
fn wanted(action: Action, name: &str, running: bool) -> anyhow::Result<Action> {
    match (action, running) {
        (Action::Stop, false) | (Action::Start, true) => {
            bail!("{name} is already {}", if running { "running" } else { "stopped" })
        }
        _ => Ok(action),
    }
}

/// What was done, as the answer says it: started (with where it runs) or
/// stopped.
fn said(name: &str, pid: Option<nix::unistd::Pid>, runs_at: String) -> String {
    match pid {
        Some(pid) => format!("started {name} (pid {pid}, {runs_at})"),
        None => format!("stopped {name}"),
    }
}

/// Asks the stack in `run_dir` to do `action` to `name`; returns its answer.
pub async fn request(run_dir: &Path, action: Action, name: &str) -> anyhow::Result<String> {
    request_line(run_dir, &format!("{} {name}", action.word())).await
}

/// Sends one request line (`stop NAME`, `fault cut A B`, ...) to the
/// stack in `run_dir`; returns its answer.
pub async fn request_line(run_dir: &Path, line: &str) -> anyhow::Result<String> {
    let path = socket_path(run_dir);
    let exchange = async {
        let mut connection = UnixStream::connect(&path).await.with_context(|| {
            format!("connecting to {} (is `devstack run` still running?)", path.display())
        })?;
        connection.write_all(format!("{line}\n").as_bytes()).await?;
        let mut reply = String::new();
        BufReader::new(connection).read_line(&mut reply).await?;
        anyhow::Ok(reply)
    };
    let reply = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.with_context(|| {
        format!("no answer from {} within {REQUEST_TIMEOUT:?}", path.display())
    })??;
    match reply.trim_end().split_once(": ") {
        Some(("ok", done)) => Ok(done.to_string()),
        Some(("error", error)) => bail!("{error}"),
        _ => bail!("unexpected answer from {}: {reply:?}", path.display()),
    }
}
