//! Child processes of the stack: started from the workspace's binaries,
//! logged to a file, and stopped when dropped (also when a test panics, and
//! by the kernel if this process dies first).

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long a process has to print its start-up line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running child process.
pub struct ChildProcess {
    name: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `binary` with `args`, appending its stderr (and anything it
    /// prints after the first line) to `log`; returns it with the first
    /// line it prints on stdout, parsed as JSON.
    pub async fn start(
        name: &str,
        binary: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<(ChildProcess, serde_json::Value)> {
        let log_file = open_log(log)?;
        let mut command = command(binary, args, Stdio::piped(), log_file.try_clone()?);
        let mut child =
            command.spawn().with_context(|| format!("starting {name} ({})", binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                let status = child.wait().await.ok();
                bail!(
                    "{name} exited during start-up ({}); see {}:\n{}",
                    status.map(|s| s.to_string()).unwrap_or_default(),
                    log.display(),
                    tail(log)
                )
            }
            Err(_) => bail!("{name} did not start within {START_TIMEOUT:?}; see {}", log.display()),
        };
        // Keep draining stdout into the log so the child never blocks on it.
        let mut log_file = tokio::fs::File::from_std(log_file);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = log_file.write_all(format!("{line}\n").as_bytes()).await;
            }
        });
        let info = serde_json::from_str(&line)
            .with_context(|| format!("{name} printed {line:?} instead of its start-up line"))?;
        Ok((ChildProcess { name: name.to_string(), child, log: log.to_path_buf() }, info))
    }

    /// Starts a program that prints no start-up line (stdout and stderr go
    /// to `log`); the caller finds out itself when it is ready.
    pub fn start_plain(
        name: &str,
        binary: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<ChildProcess> {
        let log_file = open_log(log)?;
        let mut command = command(binary, args, log_file.try_clone()?.into(), log_file);
        let child =
            command.spawn().with_context(|| format!("starting {name} ({})", binary.display()))?;
        Ok(ChildProcess { name: name.to_string(), child, log: log.to_path_buf() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child.id().map(|id| Pid::from_raw(id as i32))
    }

    /// Stops the process: SIGTERM, then SIGKILL if it takes too long.
    pub async fn stop(mut self) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGTERM);
            if tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await.is_err() {
                tracing::warn!(name = %self.name, "did not stop on SIGTERM; killing it");
                let _ = self.child.kill().await;
            }
        }
    }

    /// Kills the process at once (a crash).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets but answers
    /// nothing, like a hung server.  Returns once every thread is stopped:
    /// the signal is delivered asynchronously, and a thread still running
    /// would take what the caller sends next.
    pub fn freeze(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("process already exited")?;
        kill(pid, Signal::SIGSTOP).context("sending SIGSTOP")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid.as_raw()) {
            if std::time::Instant::now() > deadline {
                bail!("process {pid} did not stop within 5 s of SIGSTOP");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    pub fn thaw(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("process already exited")?;
        kill(pid, Signal::SIGCONT).context("sending SIGCONT")
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in
/// `/proc/PID/task/TID/stat`; a thread that has exited but is not yet
/// reaped, `Z`, runs no more either).
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
        matches!(state, Some("T" | "Z"))
    })
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The resident memory of the process `pid`, in KiB (`VmRSS` in
/// `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Where the workspace's binaries are: next to this executable (devstack),
/// or one level up (a test executable in `target/<profile>/deps`).
///
/// When this process was started by cargo (`cargo run -p devstack`, `cargo
/// test`), the binaries are built first (once per process; a no-op when they
/// are current), so that a stack never runs stale code next to fresh code.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the current executable")?;
    let dir = exe.parent().context("executable without a directory")?;
    let candidates = [dir.join(name), dir.parent().map(|p| p.join(name)).unwrap_or_default()];
    let missing = !candidates.iter().any(|p| p.is_file());
    if (missing || std::env::var_os("CARGO").is_some())
        && let Err(e) = BUILT.get_or_init(|| build_binaries(dir, false))
    {
        bail!("building {name} failed: {e}");
    }
    candidates.into_iter().find(|p| p.is_file()).with_context(|| {
        format!("{name} not found next to {}; run `cargo build --workspace --bins`", exe.display())
    })
}

/// Whether the binaries were built by this process, and how that went.
static BUILT: OnceLock<Result<(), String>> = OnceLock::new();

/// Builds the workspace's binaries now, showing cargo's own progress on
/// stderr, when [`binary`] would build them (this process was started by
/// cargo, or they are missing); returns how long that took, or `None` when
/// there was nothing to build.  For people (devstack): a first build takes
/// minutes, and a silent one looks hung.
pub fn build_binaries_visibly() -> anyhow::Result<Option<Duration>> {
    let exe = std::env::current_exe().context("finding the current executable")?;
    let dir = exe.parent().context("executable without a directory")?;
    let missing = ["dns-server", "nexus", "omdb"].iter().any(|b| !dir.join(b).is_file());
    if !missing && std::env::var_os("CARGO").is_none() {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    match BUILT.get_or_init(|| build_binaries(dir, true)) {
        Ok(()) => Ok(Some(started.elapsed())),
        Err(e) => bail!("building the binaries failed: {e}"),
    }
}

fn build_binaries(dir: &Path, visibly: bool) -> Result<(), String> {
    let release = dir.components().any(|c| c.as_os_str() == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.args([
        "build",
        "--bins",
        "-p",
        "dns-server",
        "-p",
        "nexus",
        "-p",
        "omdb",
        "-p",
        "devstack",
        "-p",
        "chaos",
    ]);
    if release {
        command.arg("--release");
    }
    if visibly {
        // Cargo's progress goes straight to the terminal.
        let status = command.stdin(Stdio::null()).status().map_err(|e| e.to_string())?;
        return match status.success() {
            true => Ok(()),
            false => Err(format!("cargo build exited with {status} (its output is above)")),
        };
    }
    // In tests, cargo's own output would clutter theirs; say only what went
    // wrong.
    let output = command.output().map_err(|e| e.to_string())?;
    let status = output.status;
    if !status.success() {
        return Err(format!(
            "cargo build exited with {status}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

fn open_log(log: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))
}

/// `binary args` with stdin closed, the given stdout, stderr to `stderr`,
/// killed when dropped and, by the kernel, when this process dies.
#[allow(unsafe_code)] // pre_exec: see the SAFETY note
fn command(
    binary: &Path,
    args: &[String],
    stdout: Stdio,
    stderr: std::fs::File,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command.args(args).stdin(Stdio::null()).stdout(stdout).stderr(stderr).kill_on_drop(true);
    // SAFETY: only a system call, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // If the stack's owner dies without cleaning up, so do we.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    command
}

/// A `dns-server` process started by a test or benchmark.
pub struct DnsServerProcess {
    pub process: ChildProcess,
    pub dns_address: std::net::SocketAddr,
    pub http_address: std::net::SocketAddr,
}

impl DnsServerProcess {
    /// Starts `binary` (the `dns-server` executable) with DNS at `dns` and
    /// HTTP at `http` (`127.0.0.1:0` picks a port), `storage` and the token
    /// in `api_token_file`; its log goes to `log`.
    pub async fn start(
        binary: &Path,
        dns: &str,
        http: &str,
        storage: &Path,
        api_token_file: &Path,
        log: &Path,
    ) -> anyhow::Result<DnsServerProcess> {
        DnsServerProcess::start_with(binary, dns, http, storage, api_token_file, log, &[]).await
    }

    /// `binary` on loopback ports picked by the kernel, with its storage
    /// (`storage/`), token and log (`server.log`) in `dir`, and `extra`
    /// flags.
    pub async fn start_in(
        binary: &Path,
        dir: &crate::TokenDir,
        extra: &[&str],
    ) -> anyhow::Result<DnsServerProcess> {
        let any = "127.0.0.1:0";
        let (storage, log) = (dir.path().join("storage"), dir.path().join("server.log"));
        DnsServerProcess::start_with(binary, any, any, &storage, &dir.token_file(), &log, extra)
            .await
    }

    /// [`DnsServerProcess::start`] with more command-line flags.
    pub async fn start_with(
        binary: &Path,
        dns: &str,
        http: &str,
        storage: &Path,
        api_token_file: &Path,
        log: &Path,
        extra: &[&str],
    ) -> anyhow::Result<DnsServerProcess> {
        let mut args: Vec<String> = vec![
            "--dns-address".into(),
            dns.into(),
            "--http-address".into(),
            http.into(),
            "--storage-dir".into(),
            storage.display().to_string(),
            "--api-token-file".into(),
            api_token_file.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let (process, info) = ChildProcess::start("dns-server", binary, &args, log).await?;
        let address = |key: &str| -> anyhow::Result<std::net::SocketAddr> {
            info[key]
                .as_str()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("dns-server printed no {key}: {info}"))
        };
        Ok(DnsServerProcess {
            dns_address: address("dns_address")?,
            http_address: address("http_address")?,
            process,
        })
    }
}
