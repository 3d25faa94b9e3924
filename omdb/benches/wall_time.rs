//! Whole-process wall time of omdb against a local stack (devstack's
//! default: 3 internal and 2 external DNS servers, 2 Nexus), discovery
//! included: `show all`, `dns status`, `db dns show` and `dns explain`, each
//! run 50 times as a fresh process with only `OMDB_DNS_SERVER` set.
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
    println!("| command | runs | median | p90 | max |");
    println!("|---|---:|---:|---:|---:|");
    for args in [
        vec!["nexus", "background-tasks", "show", "all"],
        vec!["dns", "status"],
        vec!["db", "dns", "show"],
        // Every stage: database, both Nexus, 2 servers, 2 x UDP/TCP x (A + SOA).
        vec!["dns", "explain", "api.example.test"],
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
    stack.stop().await;
}
