//! What used to mislead, against a real stack: `activate --wait` telling a
//! Nexus that stopped answering from an activation still at work (and what
//! it is doing), and `dns status` keeping every row when one server reports
//! a generation the database does not have.

mod common;

use common::*;
use dns_types::DnsGroup;
use nexus_api::task_name::DnsTaskName;
use std::time::Duration;

fn omdb(ts: &TestStack, args: &[&str]) -> (i32, String, String) {
    run_omdb(ts, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activate_wait_tells_still_running_from_unreachable() {
    let ts = TestStack::start_with(2, 0, 1, |o| o.server_timeout_secs = 60.0).await;
    let hung = &ts.internal_servers()[1];
    hung.freeze().unwrap();
    let task = DnsTaskName::propagation(DnsGroup::Internal).to_string();
    let url = ts.stack.nexus[0].url();
    let (code, _, err) = omdb(
        &ts,
        &[
            "--nexus-internal-url",
            &url,
            "nexus",
            "background-tasks",
            "activate",
            "--wait",
            "--timeout",
            "2",
            &task,
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("activation still running after 2s (Nexus answers)"), "{err}");
    assert!(err.contains("propagating generation"), "{err}");
    assert!(err.contains(&format!("still waiting on {}", hung.http_address)), "{err}");

    // Now the Nexus itself hangs: that is a different answer.
    ts.stack.nexus[0].process.as_ref().unwrap().freeze().unwrap();
    let (code, _, err) = omdb(
        &ts,
        &[
            "--nexus-internal-url",
            &url,
            "nexus",
            "background-tasks",
            "activate",
            "--wait",
            "--timeout",
            "2",
            &task,
        ],
    );
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
    let ts = TestStack::start(3, 0, 1).await;
    let odd = &ts.internal_servers()[2];
    let mut bogus = ts.stack.datastore.dns_config_read(DnsGroup::Internal, None).await.unwrap();
    bogus.generation = 77;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
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
    assert!(odd_row.contains("77 (ok)"), "its DNS answers with the generation it claims: {out}");
    assert_eq!(rows.iter().filter(|r| r.contains(" yes ")).count(), 2, "{out}");

    // --json: numbers are numbers.
    let (_, json, _) = omdb(&ts, &["--json", "dns", "status", "internal"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let servers = v["groups"][0]["servers"].as_array().unwrap();
    assert!(servers.iter().any(|s| s["generation"] == 77 && s["wire_serial"] == 77));
    assert!(servers.iter().all(|s| s["behind"].is_u64()));
}
