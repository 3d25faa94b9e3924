//! Snapshots of what people read: every omdb command's output against a real
//! stack (PostgreSQL, DNS servers, Nexus), with times, ports, ids and
//! digests redacted, plus usage errors and the error paths (unreachable or
//! hung services).
//!
//! After an intended change of output, regenerate the snapshots with
//! `EXPECTORATE=overwrite cargo test -p omdb --test test_all_output`.

use devstack::{Stack, StackOptions};
use regex::Regex;
use std::process::Command;
use std::time::{Duration, Instant};

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
    took: Duration,
}

fn omdb(args: &[&str], env: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_omdb"));
    command
        .args(args)
        .env_remove("OMDB_DNS_SERVER")
        .env_remove("OMDB_NEXUS_URL")
        .env_remove("OMDB_DB_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    Run {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code: output.status.code().unwrap_or(-1),
        took: started.elapsed(),
    }
}

/// omdb with its stdout a pipe whose reader has already closed: every
/// write fails with EPIPE.
fn closed_stdout(args: &[&str], env: &[(&str, &str)]) -> Run {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut command = Command::new(env!("CARGO_BIN_EXE_omdb"));
    command.args(args).env_remove("OMDB_NEXUS_URL").env_remove("OMDB_DB_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.stdout(writer).output().unwrap();
    Run {
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code: output.status.code().unwrap_or(-1),
        took: Duration::ZERO,
    }
}

/// Replaces what changes from run to run, and evens out the column widths
/// that depend on it.
fn redact(text: &str) -> String {
    let rules = [
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "<TIMESTAMP>"),
        (r"\((\d+(ms|s|m \d+s|h \d+m)) ago\)", "(<AGE> ago)"),
        (r"ran for \d+ms", "ran for <DURATION>"),
        (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<UUID>"),
        (r"sha256:[0-9a-f]{64}", "sha256:<DIGEST>"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:<PORT>"),
        (r"iter \d+", "iter <N>"),
        (r"\d+(\.\d+)? ms\b", "<MS> ms"),
        (r"\d+(\.\d+)? (bytes|KiB|MiB)\b", "<SIZE>"),
        (r#""(duration_ms|bytes)": [0-9.e-]+"#, r#""$1": <N>"#),
        (r"/[^\s]*/target/[^\s]*", "<PATH>"),
    ];
    let mut text = text.to_string();
    for (pattern, replacement) in rules {
        text = Regex::new(pattern).unwrap().replace_all(&text, replacement).into_owned();
    }
    let spaces = Regex::new(r"(\S)  +").unwrap();
    text.lines()
        .map(|l| spaces.replace_all(l, "$1  ").trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn transcript(commands: &[(&[&str], Run)]) -> String {
    let mut out = String::new();
    for (args, run) in commands {
        out.push_str(&format!("$ omdb {}\n", args.join(" ")));
        out.push_str(&format!("exit status: {}\n", run.code));
        out.push_str("---- stdout ----\n");
        out.push_str(&redact(&run.stdout));
        out.push_str("\n---- stderr ----\n");
        out.push_str(&redact(&run.stderr));
        out.push_str("\n=============================================\n");
    }
    out
}

async fn stack(dir: &std::path::Path) -> Stack {
    let mut options = StackOptions::new(dir.join("run"));
    options.internal_dns_servers = 3;
    options.external_dns_servers = 1;
    options.nexus_instances = 1;
    options.task_period_secs = 3600;
    options.server_timeout_secs = 1.0;
    Stack::start(options).await.unwrap()
}

#[test]
fn usage_errors() {
    let cases: Vec<&[&str]> = vec![
        &[],
        &["--help"],
        &["nexus", "background-tasks", "show"],
        &["nexus", "dns", "add", "internal", "x", "A", "192.0.2.1", "--comment", "c"],
        &["nexus", "dns", "add", "sideways", "x", "A", "192.0.2.1", "--comment", "c"],
        &["db", "dns", "show"],
    ];
    let runs: Vec<(&[&str], Run)> = cases.into_iter().map(|args| (args, omdb(args, &[]))).collect();
    for (args, run) in &runs {
        assert_eq!(run.code != 0, *args != ["--help"], "{args:?}: exit status {}", run.code);
    }
    expectorate::assert_contents("tests/output/usage_errors.txt", &transcript(&runs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_against_a_real_stack() {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let dns = stack.internal_dns_addresses()[0].to_string();
    let token_file = stack.api_token_file.display().to_string();
    let env = [("OMDB_DNS_SERVER", dns.as_str()), ("OMDB_API_TOKEN_FILE", token_file.as_str())];
    // Known last activations for every task, whatever start-up did.
    let all = [
        "dns_config_internal",
        "dns_servers_internal",
        "dns_propagation_internal",
        "dns_config_external",
        "dns_servers_external",
        "dns_propagation_external",
    ];
    let mut activate = vec!["-w", "nexus", "background-tasks", "activate", "--wait"];
    activate.extend(all);
    assert_eq!(omdb(&activate, &env).code, 0);

    let add: &[&str] = &[
        "-w",
        "nexus",
        "dns",
        "add",
        "internal",
        "test1",
        "A",
        "192.0.2.10",
        "--comment",
        "my first change",
    ];
    let added = omdb(add, &env);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let generation: u64 = Regex::new(r"generation (\d+)").unwrap().captures(&added.stdout).unwrap()
        [1]
    .parse()
    .unwrap();
    // Wait until all three servers serve it, as propagation reports.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.servers(dns_types::DnsGroup::Internal).count() > 0 {
        let mut done = true;
        for server in stack.servers(dns_types::DnsGroup::Internal) {
            done &= stack.server_generation(server).await.unwrap() == generation;
        }
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "generation {generation} did not propagate");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let generation_arg = generation.to_string();

    let commands: Vec<Vec<&str>> = vec![
        vec!["nexus", "background-tasks", "doc"],
        vec!["nexus", "background-tasks", "list"],
        vec!["nexus", "background-tasks", "show", "dns_internal"],
        vec!["nexus", "background-tasks", "show", "dns_external"],
        vec!["nexus", "background-tasks", "show", "dns_propagation_internal", "--all-nexus"],
        vec!["nexus", "background-tasks", "show", "nosuch_task"],
        vec!["db", "dns", "show"],
        vec!["db", "dns", "diff", "internal", &generation_arg],
        vec!["db", "dns", "names", "external", "1"],
        vec!["dns", "status"],
        vec!["dns", "status", "external"],
        // The support engineer's entry point: a healthy name (affirmative
        // evidence), its JSON, a typo (near misses), and the history alone.
        vec!["dns", "explain", "test1.control-plane.internal"],
        vec!["--json", "dns", "explain", "test1.control-plane.internal"],
        vec!["dns", "explain", "tset1.control-plane.internal"],
        // The zone apex exists with no records of its own: its SOA and NS.
        vec!["dns", "explain", "example.test"],
        vec!["dns", "explain", "control-plane.internal", "--type", "SOA"],
        vec!["dns", "explain", "example.test", "--type", "A"],
        vec!["db", "dns", "history", "internal", "test1"],
        vec![
            "-w",
            "nexus",
            "dns",
            "add",
            "internal",
            "bad..name",
            "A",
            "192.0.2.1",
            "--comment",
            "c",
        ],
        vec!["-w", "nexus", "dns", "add", "internal", "test1", "MX", "x", "--comment", "c"],
        // Activating changes state: -w first.
        vec!["nexus", "background-tasks", "activate", "dns_servers_internal"],
        vec!["-w", "nexus", "background-tasks", "activate", "dns_servers_internal"],
        vec!["-w", "nexus", "background-tasks", "activate", "--wait", "dns_servers_external"],
        vec!["-w", "nexus", "background-tasks", "activate", "nosuch_task"],
        vec!["-w", "nexus", "dns", "remove", "internal", "nosuch", "--comment", "c"],
        // Last: it changes what the commands above would show.
        vec!["-w", "nexus", "dns", "remove", "internal", "test1", "--comment", "done testing"],
    ];
    let mut closed_runs = Vec::new();
    let runs: Vec<(&[&str], Run)> = commands
        .iter()
        .map(|args| {
            let run = omdb(args, &env);
            // The same again into a closed pipe, before anything changes
            // (writes are not run twice).
            if args.first() != Some(&"-w") {
                closed_runs.push((args.clone(), run.code, closed_stdout(args, &env)));
            }
            (args.as_slice(), run)
        })
        .collect();
    // A reader that is gone before omdb writes (`omdb ... | head -1` once
    // head has its line, or `| true`): omdb stops quietly with the exit
    // status it would have had, never a panic.
    for (args, code, closed) in &closed_runs {
        assert!(!closed.stderr.contains("panicked"), "{args:?}: {}", closed.stderr);
        assert_eq!(closed.code, *code, "{args:?} into a closed pipe: {}", closed.stderr);
    }
    for args in [&["completions", "bash"][..], &["--help"]] {
        let closed = closed_stdout(args, &env);
        assert_eq!((closed.code, closed.stderr.as_str()), (0, ""), "{args:?}");
    }

    let mut all_runs = vec![(add, added)];
    all_runs.extend(runs);
    expectorate::assert_contents("tests/output/real_stack.txt", &transcript(&all_runs));

    // --json prints exactly one JSON document on stdout, for every command.
    for args in [
        vec!["--json", "nexus", "background-tasks", "show", "all"],
        vec!["--json", "nexus", "background-tasks", "doc"],
        vec!["--json", "nexus", "background-tasks", "list"],
        vec!["--json", "db", "dns", "show"],
        vec!["--json", "db", "dns", "diff", "internal", &generation_arg],
        vec!["--json", "db", "dns", "names", "internal", &generation_arg],
        vec!["--json", "dns", "status"],
    ] {
        let run = omdb(&args, &env);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&run.stdout);
        assert!(parsed.is_ok(), "{args:?} printed no single JSON document: {}", run.stdout);
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_hung_services_fail_fast_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = stack(dir.path()).await;
    let dns = stack.internal_dns_addresses()[0].to_string();
    let env = [("OMDB_DNS_SERVER", dns.as_str())];
    let nexus_address = stack.nexus[0].address.to_string();

    // A frozen Nexus: it accepts connections but never answers.
    stack.nexus[0].process.as_ref().unwrap().freeze().unwrap();
    let run = omdb(&["nexus", "background-tasks", "show"], &env);
    stack.nexus[0].process.as_ref().unwrap().thaw().unwrap();
    assert_ne!(run.code, 0);
    assert!(run.took < Duration::from_secs(10), "took {:?}", run.took);
    assert!(
        run.stderr.contains(&format!("error: could not talk to Nexus at http://{nexus_address}")),
        "{}",
        run.stderr
    );

    // Nothing listening where the DNS server should be.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let run = omdb(&["nexus", "background-tasks", "show"], &[("OMDB_DNS_SERVER", &silent_addr)]);
    assert_ne!(run.code, 0);
    assert!(run.took < Duration::from_secs(10), "took {:?}", run.took);
    assert!(
        run.stderr.contains("error: no DNS server answered") && run.stderr.contains(&silent_addr),
        "{}",
        run.stderr
    );

    // An unreachable database.
    let run = omdb(
        &["db", "dns", "show", "--db-url", "postgresql://postgres@127.0.0.1:1/control_plane"],
        &[],
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("error: checking the database at 127.0.0.1:1/control_plane"),
        "{}",
        run.stderr
    );

    // A hung database (SIGSTOP): it accepts connections and says nothing.
    let devstack::stack::Database::Local(pg) = &stack.database else { panic!("local database") };
    pg.suspend().unwrap();
    let run = omdb(&["db", "dns", "show"], &env);
    pg.resume().unwrap();
    assert_ne!(run.code, 0);
    assert!(run.took < Duration::from_secs(10), "took {:?}", run.took);
    assert!(run.stderr.contains("error: checking the database at 127.0.0.1:"), "{}", run.stderr);

    // One DNS server down: the others are still shown, the dead one is
    // marked, and the exit status says something is wrong.
    // (Not the first: that one is the DNS server omdb asks.)
    let down = stack.dns_servers[1].http_address.to_string();
    stack.dns_servers[1].stop().await;
    let run = omdb(&["dns", "status", "internal"], &env);
    assert_ne!(run.code, 0);
    let rows: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("  127.0.0.1:")).collect();
    assert_eq!(rows.len(), 3, "{}", run.stdout);
    assert!(rows.iter().any(|r| r.contains(&down) && r.contains("UNREACHABLE")), "{}", run.stdout);
    assert_eq!(rows.iter().filter(|r| r.contains(" yes")).count(), 2, "{}", run.stdout);
    assert!(run.stderr.contains("error: 1 DNS server problem:"), "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("internal DNS server {down} is unreachable")),
        "{}",
        run.stdout
    );
    stack.stop().await;
}
