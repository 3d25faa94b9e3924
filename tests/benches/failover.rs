//! The replicated database's two costs, measured on a devstack-shaped
//! stack (durable: fsync and synchronous commit on, as devstack runs it):
//!
//! 1. **The write gap of a failover**: a writer sends one change after the
//!    other through Nexus (each with an idempotency key, sent again every
//!    100 ms while the answer leaves the outcome open), and the primary's
//!    machine dies (its Patroni agent and PostgreSQL get SIGKILL).  The gap
//!    is the longest time between two acknowledged changes around the kill.
//!    The killed node is started again and rejoins as a standby before the
//!    next kill.  `FAILOVER_KILLS` kills (default 5); median and range.
//! 2. **What synchronous replication costs per change**: the time from
//!    `POST /dns/internal/changes` to its 200, one change at a time,
//!    `FAILOVER_CHANGES` changes (default 200) on a single PostgreSQL and
//!    then on the replicated database, in the same run.
//!
//! Run: `cargo bench -p tests --bench failover` (figures in
//! docs/PERFORMANCE.md).

use db_model::cluster::{node_statuses, primary, wait_until_writable};
use devstack::stack::Database;
use devstack::{Stack, StackOptions};
use dns_types::{DnsChange, DnsGroup, DnsRecord, NameRecords};
use std::time::{Duration, Instant};

fn change(comment: String, name: String) -> DnsChange {
    DnsChange {
        idempotency_key: Some(format!("bench-{name}")),
        comment,
        add: vec![NameRecords { name, records: vec![DnsRecord::A("192.0.2.1".parse().unwrap())] }],
        remove: vec![],
    }
}

/// Sends until acknowledged; returns when.
async fn send(nexus: &nexus_client::Client, change: DnsChange) -> Instant {
    loop {
        match nexus.dns_change().group(DnsGroup::Internal).body(change.clone()).send().await {
            Ok(_) => return Instant::now(),
            Err(nexus_client::Error::ErrorResponse(r)) if r.status().is_client_error() => {
                panic!("refused: {}", r.message)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn stack(replicated: bool, dir: &std::path::Path) -> Stack {
    let mut options = StackOptions::new(dir.to_path_buf());
    options.replicated_db = replicated;
    options.internal_dns_servers = 2;
    options.external_dns_servers = 1;
    options.nexus_instances = 1;
    options.task_period_secs = 3600;
    Stack::start(options).await.unwrap()
}

fn quantiles(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "median {:.2} ms, p90 {:.2} ms, min {:.2} ms, max {:.2} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3
    )
}

async fn commit_latencies(stack: &Stack, prefix: &str, changes: usize) -> Vec<Duration> {
    let nexus = stack.nexus[0].client();
    let mut samples = Vec::with_capacity(changes);
    for i in 0..changes {
        let started = Instant::now();
        send(&nexus, change(format!("{prefix} {i}"), format!("{prefix}{i}"))).await;
        samples.push(started.elapsed());
    }
    samples
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("failover: run with `cargo bench -p tests --bench failover`");
        return;
    }
    let env = |name: &str, default: usize| {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let kills = env("FAILOVER_KILLS", 5);
    let changes = env("FAILOVER_CHANGES", 200);
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // The cost per change, single node then replicated.
    let single = stack(false, &dir.path().join("single")).await;
    let mut one = commit_latencies(&single, "single", changes).await;
    single.stop().await;
    let mut replicated = stack(true, &dir.path().join("replicated")).await;
    let mut three = commit_latencies(&replicated, "replicated", changes).await;
    println!("commit, single PostgreSQL ({changes} changes): {}", quantiles(&mut one));
    println!("commit, replicated, synchronous ({changes} changes): {}", quantiles(&mut three));

    // The write gap, kill after kill.
    let nexus = replicated.nexus[0].client();
    let url = replicated.db_url.clone();
    let mut gaps = Vec::new();
    for kill in 0..kills {
        wait_until_writable(&url, 2, Duration::from_secs(120)).await.unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (nexus, stop) = (nexus.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("k{kill}c{i}");
                    acknowledged
                        .push(send(&nexus, change(format!("kill {kill} change {i}"), name)).await);
                    i += 1;
                }
                acknowledged
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let nodes = node_statuses(&url, Duration::from_secs(2)).await.unwrap();
        let (node, _) = primary(&nodes).unwrap();
        let Database::Replicated(cluster) = &mut replicated.database else { unreachable!() };
        let index =
            cluster.nodes().iter().position(|n| n.postgres.to_string() == node.address).unwrap();
        cluster.kill_node(index);
        // The writer goes on until 3 s after the database can commit again.
        wait_until_writable(&url, 1, Duration::from_secs(120)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acknowledged = writer.await.unwrap();
        let gap = acknowledged.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        println!(
            "kill {}: node {} ({}) killed; longest wait between acknowledged changes {:.2} s; \
             {} changes acknowledged",
            kill + 1,
            index + 1,
            node.address,
            gap.as_secs_f64(),
            acknowledged.len()
        );
        gaps.push(gap);
        let Database::Replicated(cluster) = &mut replicated.database else { unreachable!() };
        cluster.start_node(index).unwrap();
    }
    gaps.sort();
    println!(
        "write gap over {kills} kills: median {:.2} s, min {:.2} s, max {:.2} s",
        gaps[gaps.len() / 2].as_secs_f64(),
        gaps[0].as_secs_f64(),
        gaps[gaps.len() - 1].as_secs_f64()
    );
    replicated.stop().await;
}
