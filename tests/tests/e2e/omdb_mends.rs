//! What used to mislead, against a real stack: `activate --wait` telling a
//! Nexus that stopped answering from an activation still at work (and what
//! it is doing), and `dns status` keeping every row when one server reports
//! a generation the database does not have.

use crate::common::*;
use dns_types::DnsGroup;
use nexus_types::task_name::DnsTaskName;
use std::process::Command;
use std::time::Duration;
use test_support::process::binary;

fn omdb(ts: &TestStack, args: &[&str]) -> (i32, String, String) {
    run_omdb(ts, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activate_wait_tells_still_running_from_unreachable() {
    let ts = TestStack::start_with(2, 0, 1, |o| {
        o.server_timeout_secs = 60.0;
        o.detach_after_secs = 60.0;
    })
    .await;
    let hung = &ts.internal_servers()[1];
    hung.freeze().unwrap();
    let task = DnsTaskName::propagation(DnsGroup::Internal).to_string();
    let url = ts.stack.nexus[0].url();
    let activate = [
        "--nexus-internal-url",
        &url,
        "-w",
        "nexus",
        "background-tasks",
        "activate",
        "--wait",
        "--timeout",
        "2",
        &task,
    ];
    let (code, _, err) = omdb(&ts, &activate);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("activation still running after 2s (Nexus answers)"), "{err}");
    assert!(err.contains("propagating generation"), "{err}");
    assert!(err.contains(&format!("still waiting on {}", hung.http_address)), "{err}");

    // --all-nexus counts it as in flight.
    let (_, out, _) = omdb(&ts, &["nexus", "background-tasks", "show", &task, "--all-nexus"]);
    assert!(out.contains("activations in flight: 1"), "{out}");
    assert!(out.contains(&format!("{task} iter")), "{out}");

    // Now the Nexus itself hangs: that is a different answer.
    ts.stack.nexus[0].process.as_ref().unwrap().freeze().unwrap();
    let (code, _, err) = omdb(&ts, &activate);
    ts.stack.nexus[0].process.as_ref().unwrap().thaw().unwrap();
    hung.thaw().unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("could not talk to Nexus at {url}"))
            || err.contains("is now unreachable"),
        "{err}"
    );
    assert!(!err.contains("still running"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_status_keeps_every_row_when_one_server_is_beyond_the_database() {
    let ts = TestStack::start_with(3, 0, 1, |o| o.repair_servers = false).await;
    let odd = &ts.internal_servers()[2];
    let mut bogus = ts.stack.datastore.dns_config_read(DnsGroup::Internal, None).await.unwrap();
    bogus.generation = 77;
    let http =
        ts.stack.api_token.client_builder().timeout(Duration::from_secs(10)).build().unwrap();
    dns_server_client::Client::new_with_client(&format!("http://{}", odd.http_address), http)
        .config_put()
        .body(bogus)
        .send()
        .await
        .unwrap();
    let (code, out, err) = omdb(&ts, &["dns", "status", "internal"]);
    assert_eq!(code, 1, "{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("  127.0.0.1:")).collect();
    assert_eq!(rows.len(), 3, "every server keeps its row:\n{out}");
    let odd_row = rows.iter().find(|r| r.contains(&odd.http_address.to_string())).unwrap();
    assert!(odd_row.contains("NO: beyond the database"), "{out}");
    assert!(
        odd_row.contains("77 (ok, 2 answers over UDP+TCP, NSID is this server)"),
        "its DNS answers with the generation it claims: {out}"
    );
    assert_eq!(rows.iter().filter(|r| r.contains(" yes ")).count(), 2, "{out}");

    // --json: numbers are numbers.
    let (_, json, _) = omdb(&ts, &["--json", "dns", "status", "internal"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let servers = v["groups"][0]["servers"].as_array().unwrap();
    assert!(servers.iter().any(|s| s["generation"] == 77
        && s["wire"].as_array().unwrap().iter().all(|w| w["serial"] == 77)));
    assert!(servers.iter().all(|s| s["behind"].is_u64()));
}

/// A server that missed a change and came back serving its stored, older
/// generation: behind by one, with the lag since the missing generation
/// was created, and its content checked against that older generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_status_shows_how_long_a_server_has_lagged() {
    let mut ts = TestStack::start(2, 0, 1).await;
    ts.stack.dns_servers[1].stop().await;
    let lagging = ts.stack.dns_servers[1].http_address.to_string();
    let v = change(&ts.nexus(0), DnsGroup::Internal, add_change("c", "lag", vec![a("192.0.2.3")]))
        .await;
    propagation_of(&ts.nexus(0), DnsGroup::Internal, v.generation).await;
    ts.stack.dns_servers[1].restart().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, json, err) = omdb(&ts, &["--json", "dns", "status", "internal"]);
    assert_eq!(code, 1, "a lagging server is a problem: {err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let row = v["groups"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["config_address"] == lagging.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["behind"], 1, "{row}");
    assert_eq!(row["state"]["state"], "behind", "content matched its own generation: {row}");
    let lag = row["lag_seconds"].as_f64().unwrap();
    assert!(lag >= 0.3, "lag {lag} counts from the missing generation's creation");
    let (_, text, _) = omdb(&ts, &["dns", "status", "internal"]);
    assert!(text.contains("yes (older generation)"), "{text}");
}

#[test]
fn bad_explain_input_is_a_usage_error_or_a_clear_one() {
    // No stack needed: both are refused before anything is asked.
    let run = |args: &[&str]| {
        Command::new(binary("omdb").unwrap())
            .args(args)
            .env("OMDB_DNS_SERVER", "127.0.0.1:9")
            .output()
            .unwrap()
    };
    let out = run(&["dns", "explain", "shop.example.test", "--type", "FOO"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a record type served here (one of A, AAAA"), "{err}");
}
