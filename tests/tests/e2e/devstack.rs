//! The newcomer's path, end to end: start the real `devstack` binary, wait
//! for "ready", run the walkthrough's omdb commands as real processes, then
//! Ctrl-C it and check that nothing it started is left and the logs are
//! kept.

use std::io::{BufRead, BufReader};
use std::path::Path;
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
#[allow(unsafe_code)] // pre_exec: see the SAFETY note
fn devstack_runs_the_walkthrough_and_cleans_up_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut command = Command::new(test_support::process::binary("devstack").unwrap());
    command.args(["run", "--run-dir"]).arg(&run_dir).stdout(Stdio::piped()).stderr(Stdio::null());
    // SAFETY: only a system call, which is async-signal-safe.  If this test
    // process dies outright (no unwinding, so no KillOnDrop), devstack gets
    // SIGTERM and stops its stack the way Ctrl-C does.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    let mut devstack = KillOnDrop(command.spawn().unwrap());
    let mut stdout = BufReader::new(devstack.0.stdout.take().unwrap());
    let mut printed = String::new();
    let mut dns = None;
    let mut token_file = None;
    let started = Instant::now();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "devstack exited before ready:\n{printed}"
        );
        printed.push_str(&line);
        if let Some(value) = line.trim().strip_prefix("export OMDB_DNS_SERVER=") {
            dns = Some(value.to_string());
        }
        if let Some(value) = line.trim().strip_prefix("export OMDB_API_TOKEN_FILE=") {
            token_file = Some(value.to_string());
        }
        if line.trim() == "Ctrl-C stops everything." {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "devstack not ready:\n{printed}");
    }
    assert!(printed.contains("\nready (in "), "{printed}");
    assert!(printed.contains("omdb nexus background-tasks show dns_internal"), "{printed}");
    let env = Env {
        dns: dns.unwrap_or_else(|| panic!("no OMDB_DNS_SERVER line:\n{printed}")),
        token_file: token_file.unwrap_or_else(|| panic!("no OMDB_API_TOKEN_FILE line:\n{printed}")),
    };
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
        seen.contains("2 succeeded, 1 failed") && seen.contains("no complete answer within")
    });
    let (code, out, _) = omdb(&env, &["dns", "status", "internal"]);
    assert_ne!(code, 0, "a hung server must make dns status fail:\n{out}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT)
        .unwrap();
    // It catches up on the next activation.
    let (code, _, err) = omdb(
        &env,
        &["-w", "nexus", "background-tasks", "activate", "--wait", "dns_propagation_internal"],
    );
    assert_eq!(code, 0, "{err}");
    wait_until("the thawed server to catch up", || {
        omdb(&env, &["dns", "status", "internal"]).0 == 0
    });

    let (code, out, err) = omdb(&env, &["db", "dns", "diff", "internal", &generation]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("+ test1") && out.contains("my first change"), "{out}");

    // Ctrl-C: everything stops, the logs stay.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(devstack.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = devstack.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "devstack did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.contains(&format!("logs are in {}", run_dir.display())), "{rest}");
    assert_eq!(processes_using(&run_dir), Vec::<String>::new(), "processes left behind");
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
