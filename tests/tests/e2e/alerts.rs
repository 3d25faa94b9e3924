//! The alerting rules (`monitoring/alerts.yml`): every rule unit-tested by
//! `promtool test rules` (fires on the bad series, silent on the healthy
//! ones), and a real Prometheus started by devstack firing the server-down
//! alert when a DNS server stops, and clearing it when it is back.

use crate::common::*;
use std::time::{Duration, Instant};

fn have(binary: &str) -> bool {
    let found = std::process::Command::new(binary).arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have {binary} (apt-get install prometheus)"
        );
        eprintln!("no {binary}: skipped");
    }
    found
}

#[test]
fn every_rule_fires_on_its_fault_and_stays_silent_when_healthy() {
    if !have("promtool") {
        return;
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../monitoring");
    let check = std::process::Command::new("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let test = std::process::Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    // Every rule has a test and a runbook naming an omdb command.
    let rules = std::fs::read_to_string(format!("{dir}/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(format!("{dir}/alerts_test.yml")).unwrap();
    let names: Vec<&str> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(names.len() >= 10, "positive control: {names:?}");
    for name in &names {
        assert!(tests.contains(&format!("alertname: {name}")), "{name} has no promtool test");
    }
    let runbooks = rules.lines().filter(|l| l.trim().starts_with("runbook: \"omdb ")).count();
    assert_eq!(runbooks, names.len(), "every rule's runbook names an omdb command");
}

/// Alerts Prometheus has firing now, as (name, instance).
async fn firing(http: &reqwest::Client, address: std::net::SocketAddr) -> Vec<(String, String)> {
    let url = format!("http://{address}/api/v1/alerts");
    let Ok(response) = http.get(&url).send().await else { return vec![] };
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap_or_default().to_string(),
                a["labels"]["instance"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_fires_and_clears_the_server_down_alert() {
    if !have("prometheus") {
        return;
    }
    let mut ts = TestStack::start(1, 1, 1).await;
    let prometheus = devstack::prometheus::start(&ts.stack).await.unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let rules = format!("http://{}/api/v1/rules", prometheus.address);
    let body: serde_json::Value = http.get(&rules).send().await.unwrap().json().await.unwrap();
    let loaded: usize = body["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(loaded >= 10, "the rules are loaded: {body}");

    let server =
        ts.stack.dns_servers.iter_mut().find(|s| s.group == dns_types::DnsGroup::External).unwrap();
    let instance = server.http_address.to_string();
    let down = ("DnsServerDown".to_string(), instance.clone());
    // Let Prometheus scrape it up first.
    tokio::time::sleep(Duration::from_secs(6)).await;
    server.stop().await;
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(90);
    loop {
        if firing(&http, prometheus.address).await.contains(&down) {
            break;
        }
        assert!(Instant::now() < deadline, "DnsServerDown did not fire within 90 s of the stop");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("DnsServerDown fired {:.0?} after the server stopped", stopped.elapsed());
    server.restart().await.unwrap();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(60);
    loop {
        if !firing(&http, prometheus.address).await.contains(&down) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "DnsServerDown did not clear within 60 s of the restart"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("DnsServerDown cleared {:.0?} after the restart", back.elapsed());
    prometheus.process.stop().await;
}
