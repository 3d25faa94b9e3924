//! Whole-process wall time of omdb against a local stack (devstack's
//! default: 3 internal and 2 external DNS servers, 2 Nexus), discovery
//! included: `show all`, `dns status`, `db dns show`, `dns explain`,
//! `dns timeline` and `dns explain --at`, each run 50 times as a fresh
//! process with only `OMDB_DNS_SERVER` set.  With `BUNDLE_NAMES=N`, it then
//! loads N names into the external group and times `dns bundle` (5 runs)
//! and says the archive's size.
//!
//! Run: `cargo bench -p omdb --bench wall_time` (release binaries; figures
//! are recorded in docs/PERFORMANCE.md).

use devstack::{Stack, StackOptions};
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 50;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("wall_time: run with `cargo bench -p omdb --bench wall_time`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(StackOptions::new(dir.path().join("run"))).await.unwrap();
    let dns = stack.internal_dns_addresses()[0].to_string();
    // One change, so that the timeline has a generation that travelled.
    let change = dns_types::DnsChange {
        idempotency_key: None,
        comment: "bench".into(),
        add: vec![dns_types::NameRecords {
            name: "shop".into(),
            records: vec![dns_types::DnsRecord::A("192.0.2.10".parse().unwrap())],
        }],
        remove: vec![],
    };
    stack.nexus[0]
        .client()
        .dns_change()
        .group(dns_types::DnsGroup::External)
        .body(change)
        .send()
        .await
        .unwrap();
    stack.wait_until_converged(Duration::from_secs(30)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("| command | runs | median | p90 | max |");
    println!("|---|---:|---:|---:|---:|");
    for args in [
        vec!["nexus", "background-tasks", "show", "all"],
        vec!["dns", "status"],
        vec!["db", "dns", "show"],
        // Every stage: database, both Nexus, 2 servers, 2 x UDP/TCP x (A + SOA).
        vec!["dns", "explain", "api.example.test"],
        // The database, both Nexus's histories, both servers' histories.
        vec!["dns", "timeline", "external"],
        // The same, for a moment a second ago.
        vec!["dns", "explain", "shop.example.test", "--at", "1s"],
    ] {
        let mut samples = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let started = Instant::now();
            let output = Command::new(env!("CARGO_BIN_EXE_omdb"))
                .args(&args)
                .env("OMDB_DNS_SERVER", &dns)
                .output()
                .unwrap();
            samples.push(started.elapsed());
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        }
        println!(
            "| `omdb {}` | {RUNS} | {:.1?} | {:.1?} | {:.1?} |",
            args.join(" "),
            percentile(&mut samples, 0.5),
            percentile(&mut samples, 0.9),
            percentile(&mut samples, 1.0)
        );
    }
    if let Some(names) = std::env::var("BUNDLE_NAMES").ok().and_then(|n| n.parse::<usize>().ok()) {
        bundle(&stack, &dns, names, dir.path()).await;
    }
    stack.stop().await;
}

/// Loads `names` names (in changes of 20,000) and times `dns bundle`.
async fn bundle(stack: &Stack, dns: &str, names: usize, dir: &std::path::Path) {
    let mut added = 0;
    while added < names {
        let batch = (names - added).min(20_000);
        let add = (added..added + batch)
            .map(|i| dns_types::NameRecords {
                name: format!("host{i}"),
                records: vec![dns_types::DnsRecord::A(std::net::Ipv4Addr::from(
                    0xc000_0200 + i as u32 % 250,
                ))],
            })
            .collect();
        let change = dns_types::DnsChange {
            idempotency_key: None,
            comment: format!("bulk {added}"),
            add,
            remove: vec![],
        };
        stack
            .datastore
            .dns_change_commit(dns_types::DnsGroup::External, "bench", &change)
            .await
            .unwrap();
        added += batch;
    }
    stack.wait_until_converged(Duration::from_secs(300)).await.unwrap();
    let out = dir.join("bundle.tar.gz");
    let mut samples = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_omdb"))
            .args(["dns", "bundle", "--name", "shop.example.test", "--output"])
            .arg(&out)
            .env("OMDB_DNS_SERVER", dns)
            .output()
            .unwrap();
        samples.push(started.elapsed());
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let size = std::fs::metadata(&out).unwrap().len();
    println!(
        "| `omdb dns bundle --name shop.example.test` at {names} names | 5 | {:.1?} | {:.1?} | {:.1?} | ({size} bytes)",
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.9),
        percentile(&mut samples, 1.0)
    );
}
