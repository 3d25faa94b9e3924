//! Nexus's side of the adversarial pass, against a real stack: a body is
//! not read before its token is checked, text from a client cannot forge a
//! log line, and concurrent scrapes each see one whole state.

use crate::common::*;
use std::time::Duration;

/// Four 15 MiB change bodies without a token: each gets 401 (or the
/// connection is closed before it is all sent), and Nexus's memory stays
/// as it was, because it never read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexus_reads_no_body_without_the_token() {
    let ts = TestStack::start(1, 0, 1).await;
    let pid = ts.stack.nexus[0].process.as_ref().unwrap().pid().unwrap().as_raw() as u32;
    let url = format!("{}/dns/internal/changes", ts.stack.nexus[0].url());
    let grew = test_support::unauthenticated_bodies(reqwest::Method::POST, &url, 15, pid).await;
    assert!(grew < 24 * 1024 * 1024, "RSS grew by {grew} bytes for bodies it refused");
    // And the same request with the token is still served.
    let response = ts
        .stack
        .api_token
        .client_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .post(format!("{}/dns/internal/changes", ts.stack.nexus[0].url()))
        .json(&add_change("after the flood", "calm", vec![a("192.0.2.7")]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

/// A change's comment may hold a newline (it is stored as given), but in
/// Nexus's log it is escaped: no line of the log starts where the client
/// said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_cannot_forge_a_log_line() {
    let ts = TestStack::start(1, 0, 1).await;
    let forged = "2026-01-01T00:00:00.000000Z  INFO nexus: FORGED all servers in sync";
    let comment = format!("routine\n{forged}");
    let change_ = add_change(&comment, "quiet", vec![a("192.0.2.8")]);
    let version = change(&ts.nexus(0), dns_types::DnsGroup::Internal, change_).await;
    assert_eq!(version.comment, comment, "stored as given");
    let log = std::fs::read_to_string(ts.stack.nexus[0].log()).unwrap();
    assert!(log.contains("DNS change committed"), "the change is logged:\n{log}");
    assert!(log.contains("routine\\n2026"), "the newline appears escaped:\n{log}");
    assert!(!log.lines().any(|l| l.starts_with(forged)), "a forged line:\n{log}");
}

/// Six scrapers at once each see one whole state: every scrape of Nexus's
/// metrics has the generation of each of the two servers, and the same
/// lint and per-server series as a scrape alone (nothing changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nexus_scrape_sees_a_whole_state() {
    let ts = TestStack::start(4, 0, 1).await;
    activate(&ts.nexus(0), &["dns_config_internal", "dns_propagation_internal"]).await;
    let url = format!("{}/metrics", ts.stack.nexus[0].url());
    let series = "nexus_dns_server_generation_applied{";
    // The series of the state (not the counters of scrapes and requests).
    let state = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("nexus_task_lint") || l.starts_with("nexus_dns_server_"))
            .map(str::to_owned)
            .collect()
    };
    // Settled: the activations above may still be setting off one another.
    let alone = wait_for("two scrapes alone agree", || async {
        let first = reqwest::get(&url).await.ok()?.text().await.ok()?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let second = reqwest::get(&url).await.ok()?.text().await.ok()?;
        (second.matches(series).count() == 4 && state(&first) == state(&second))
            .then(|| state(&second))
    })
    .await;
    let mut scrapers = Vec::new();
    for _ in 0..6 {
        let (url, alone) = (url.clone(), alone.clone());
        scrapers.push(tokio::spawn(async move {
            let mut partial = Vec::new();
            for _ in 0..200 {
                let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
                let seen = state(&text);
                if seen != alone {
                    partial.extend(seen.into_iter().filter(|l| !alone.contains(l)).take(3));
                }
            }
            partial
        }));
    }
    for scraper in scrapers {
        let differences = scraper.await.unwrap();
        assert!(differences.is_empty(), "scrapes differed from one alone: {differences:?}");
    }
}
