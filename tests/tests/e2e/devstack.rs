//! The newcomer's path, end to end: start the real `devstack` binary, wait
//! for "ready", run the walkthrough's omdb commands as real processes, then
//! Ctrl-C it and check that nothing it started is left and the logs are
//! kept.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// devstack as a child that is killed (SIGKILL: its own children follow by
/// their parent-death signal) if the test fails before its Ctrl-C.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The real `devstack run`, started as a newcomer starts it, in a
/// temporary directory that is also its `HOME` (so `~/.devstack/current`
/// is its own), and stopped with Ctrl-C by [`RunningDevstack::interrupt`].
pub struct RunningDevstack {
    child: KillOnDrop,
    stdout: BufReader<std::process::ChildStdout>,
    /// What it printed up to `Ctrl-C stops everything.`.
    pub printed: String,
    pub home: PathBuf,
    pub run_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl RunningDevstack {
    #[allow(unsafe_code)] // pre_exec: see the SAFETY note
    pub fn start() -> RunningDevstack {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let run_dir = dir.path().join("run");
        let mut command = Command::new(test_support::process::binary("devstack").unwrap());
        command
            .args(["run", "--run-dir"])
            .arg(&run_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        with_home(&mut command, &home);
        // SAFETY: only a system call, which is async-signal-safe.  If this
        // test process dies outright (no unwinding, so no KillOnDrop),
        // devstack gets SIGTERM and stops its stack the way Ctrl-C does.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = KillOnDrop(command.spawn().unwrap());
        let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
        let mut printed = String::new();
        let started = Instant::now();
        loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "devstack exited before ready:\n{printed}"
            );
            printed.push_str(&line);
            if line.trim() == "Ctrl-C stops everything." {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "devstack not ready:\n{printed}");
        }
        RunningDevstack { child, stdout, printed, home, run_dir, _dir: dir }
    }

    /// The variables `RUN_DIR/env` exports, as devstack wrote them.
    pub fn env_file(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.run_dir.join("env")).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect()
    }

    /// `RUN_DIR/stack.json`.
    pub fn description(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.run_dir.join("stack.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Ctrl-C: asserts that devstack stops, says where the logs are, and
    /// leaves no process behind.
    pub fn interrupt(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "devstack did not stop after SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status}");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut rest).unwrap();
        assert!(rest.contains(&format!("logs are in {}", self.run_dir.display())), "{rest}");
        assert_eq!(processes_using(&self.run_dir), Vec::<String>::new(), "processes left behind");
    }
}

/// `HOME` set to `home` for `command`, with the Rust toolchain still found
/// where the real home has it (devstack may run cargo).
pub fn with_home(command: &mut Command, home: &Path) {
    if let Some(real) = std::env::var_os("HOME").map(PathBuf::from) {
        if std::env::var_os("RUSTUP_HOME").is_none() {
            command.env("RUSTUP_HOME", real.join(".rustup"));
        }
        if std::env::var_os("CARGO_HOME").is_none() {
            command.env("CARGO_HOME", real.join(".cargo"));
        }
    }
    command.env("HOME", home).env_remove("OMDB_DNS_SERVER").env_remove("OMDB_API_TOKEN_FILE");
}

/// What devstack told us to export.
struct Env {
    dns: String,
    token_file: String,
}

fn omdb(env: &Env, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(test_support::process::binary("omdb").unwrap());
    command.args(args).env("OMDB_DNS_SERVER", &env.dns).env_remove("OMDB_API_TOKEN_FILE");
    if !env.token_file.is_empty() {
        command.env("OMDB_API_TOKEN_FILE", &env.token_file);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `omdb -w nexus dns add internal NAME A IP --comment COMMENT`, which must
/// succeed; returns its stdout.
fn add_name(env: &Env, name: &str, ip: &str, comment: &str) -> String {
    let (code, out, err) =
        omdb(env, &["-w", "nexus", "dns", "add", "internal", name, "A", ip, "--comment", comment]);
    assert_eq!(code, 0, "{err}");
    out
}

/// Processes whose command line mentions `dir`.
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) && !cmdline.contains("devstack run") {
            found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn devstack_runs_the_walkthrough_and_cleans_up_on_ctrl_c() {
    let mut devstack = RunningDevstack::start();
    let printed = &devstack.printed;
    let run_dir = devstack.run_dir.clone();
    assert!(printed.contains("\nready (in "), "{printed}");
    assert!(printed.contains("omdb nexus background-tasks show dns_internal"), "{printed}");
    let exported = devstack.env_file();
    let var = |name: &str| {
        exported
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{}/env does not export {name}", run_dir.display()))
    };
    let env = Env { dns: var("OMDB_DNS_SERVER"), token_file: var("OMDB_API_TOKEN_FILE") };
    let current = devstack.home.join(".devstack/current");
    assert_eq!(std::fs::read_link(&current).unwrap(), run_dir, "~/.devstack/current");

    // stack.json says where each component runs, as the table printed.
    let description = devstack.description();
    let components = description["components"].as_array().unwrap();
    let kinds: Vec<&str> = components.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "dns-server").count(), 5, "{description}");
    assert_eq!(kinds.iter().filter(|k| **k == "nexus").count(), 2, "{description}");
    assert_eq!(kinds.iter().filter(|k| **k == "postgres").count(), 1, "{description}");
    for c in components {
        let pid = c["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {c}"));
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "{c} is not running");
        assert!(printed.contains(&format!(" {pid} ")), "pid {pid} not printed:\n{printed}");
        assert!(c["netns"].is_null(), "{c}");
    }
    assert_eq!(description["token_file"].as_str(), Some(env.token_file.as_str()));

    // Right after ready, every Nexus has the database's latest generation:
    // each announced its own registration to the others.
    let (code, out, err) =
        omdb(&env, &["nexus", "background-tasks", "show", "dns_internal", "--all-nexus"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("DISAGREE") && !out.contains("BEHIND"), "{out}");

    // Writes without the token are refused, and say where to find it.
    let without_token = Env { dns: env.dns.clone(), token_file: String::new() };
    let (code, _, err) = omdb(
        &without_token,
        &["-w", "nexus", "dns", "add", "internal", "x", "A", "192.0.2.1", "--comment", "c"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("needs the API token"), "{err}");

    // The walkthrough: a change, its propagation, the servers, the history.
    let out = add_name(&env, "test1", "192.0.2.10", "my first change");
    let generation =
        out.split("generation ").nth(1).and_then(|s| s.split(' ').next()).unwrap().to_string();
    wait_until("propagation to every internal server", || {
        let (code, out, _) = omdb(&env, &["dns", "status", "internal"]);
        code == 0
            && out.lines().filter(|l| l.starts_with("  127.0.0.1:") && l.contains(" yes ")).count()
                == 3
    });
    let (code, out, err) =
        omdb(&env, &["nexus", "background-tasks", "show", "dns_internal", "--all-nexus"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("attempt to propagate generation: {generation}")), "{out}");
    assert_eq!(out.matches("=== Nexus ").count(), 2, "{out}");
    assert!(out.contains("=== agreement between Nexus instances and the database ==="), "{out}");

    // A hung DNS server: propagation names it and the reason.
    let frozen_dir = run_dir.join("dns-internal-1");
    let pid = processes_using(&frozen_dir)[0].split(':').next().unwrap().parse::<i32>().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP)
        .unwrap();
    add_name(&env, "test2", "192.0.2.20", "while one hangs");
    let mut seen = String::new();
    wait_until("the hung server in the propagation status", || {
        let (_, out, _) =
            omdb(&env, &["nexus", "background-tasks", "show", "dns_propagation_internal"]);
        seen = out;
        seen.contains("2 succeeded, 0 failed, 1 still in flight")
            && seen.contains("no complete answer within")
    });
    let (code, out, _) = omdb(&env, &["dns", "status", "internal"]);
    assert_ne!(code, 0, "a hung server must make dns status fail:\n{out}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT)
        .unwrap();
    // It catches up on the next activation.  The push let go ends as the
    // server is thawed and starts an activation of its own, which may be
    // running when the one asked for has completed: omdb must not call
    // that "still running" (it did, three times under CI's load).
    let (code, _, err) = omdb(
        &env,
        &["-w", "nexus", "background-tasks", "activate", "--wait", "dns_propagation_internal"],
    );
    assert_eq!(code, 0, "{err}\n{}", crate::common::log_tails(&run_dir));
    wait_until("the thawed server to catch up", || {
        omdb(&env, &["dns", "status", "internal"]).0 == 0
    });

    let (code, out, err) = omdb(&env, &["db", "dns", "diff", "internal", &generation]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("+ test1") && out.contains("my first change"), "{out}");

    // devstack stop|start: by name, on the same addresses; stack.json
    // follows.
    let devstack_cli = |args: &[&str]| {
        let mut command = Command::new(test_support::process::binary("devstack").unwrap());
        command.args(args);
        with_home(&mut command, &devstack.home);
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let pid_of = |name: &str| {
        devstack.description()["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["pid"].as_u64())
            .unwrap()
    };
    let before = pid_of("dns-internal-2").unwrap();
    let (code, out, err) = devstack_cli(&["stop", "dns-internal-2"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("stopped dns-internal-2"), "{out}");
    assert_eq!(pid_of("dns-internal-2"), None);
    assert!(!Path::new(&format!("/proc/{before}")).exists(), "still running");
    let (code, _, err) = devstack_cli(&["stop", "dns-internal-2"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("dns-internal-2 is already stopped"), "{err}");
    let (code, _, err) = devstack_cli(&["start", "dns-internal-9"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no \"dns-internal-9\"") && err.contains("dns-internal-2"), "{err}");
    let (code, out, err) = devstack_cli(&["start", "dns-internal-2"]);
    assert_eq!(code, Some(0), "{err}");
    let after = pid_of("dns-internal-2").unwrap();
    assert!(out.contains(&format!("started dns-internal-2 (pid {after}")), "{out}");
    wait_until("the restarted server to be current", || {
        omdb(&env, &["dns", "status", "internal"]).0 == 0
    });

    // Ctrl-C: everything stops, the logs stay.
    devstack.interrupt();
    for log in [
        "nexus-0.log",
        "nexus-1.log",
        "dns-internal-0.log",
        "dns-external-1.log",
        "postgres/postgres.log",
    ] {
        assert!(run_dir.join(log).is_file(), "{log} missing from {}", run_dir.display());
    }
}
