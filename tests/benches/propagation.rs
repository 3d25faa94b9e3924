//! Propagation latency: from the moment `POST /dns/internal/changes`
//! returns to the moment all three internal DNS servers answer the new name
//! over DNS, for 100 changes in a row, with zones of 1,000 and 100,000 names.
//!
//! Run: `cargo bench -p tests --bench propagation` (release binaries of the
//! whole stack; figures are recorded in docs/PERFORMANCE.md).
//! `PROPAGATION_CHANGES` sets the number of changes (default 100).

use devstack::{Stack, StackOptions};
use dns_types::{DnsChange, DnsGroup, DnsRecord, NameRecords};
use internal_dns::Resolver;
use std::time::{Duration, Instant};

const ZONE: &str = "control-plane.internal";

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(zone_size: usize, changes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StackOptions::new(dir.path().join("run"));
    options.external_dns_servers = 0;
    options.nexus_instances = 1;
    options.task_period_secs = 3600;
    options.server_timeout_secs = 30.0;
    let stack = Stack::start(options).await.unwrap();
    let nexus = stack.nexus[0].client();

    // Fill the zone up to its size in one generation, and let it propagate.
    let filler = DnsChange {
        comment: "benchmark filler".into(),
        add: (0..zone_size.saturating_sub(10))
            .map(|i| NameRecords {
                name: format!("filler{i}.host"),
                records: vec![DnsRecord::Aaaa(
                    format!("fd00::{:x}:{:x}", i >> 16, i & 0xffff).parse().unwrap(),
                )],
            })
            .collect(),
        remove: vec![],
    };
    stack.datastore.dns_change_commit(DnsGroup::Internal, "bench", &filler).await.unwrap();
    nexus
        .bgtask_activate()
        .body(nexus_client::types::BackgroundTasksActivateRequest {
            bgtask_names: vec!["dns_config_internal".into()],
            wait: true,
        })
        .send()
        .await
        .unwrap();
    stack.wait_until_converged(Duration::from_secs(300)).await.unwrap();

    let resolvers: Vec<Resolver> = stack
        .servers(DnsGroup::Internal)
        .map(|s| Resolver::new(vec![s.dns_address], Duration::from_secs(2)))
        .collect();
    let mut samples = Vec::with_capacity(changes);
    for i in 0..changes {
        let name = format!("bench{i}");
        let change = DnsChange {
            comment: format!("benchmark change {i}"),
            add: vec![NameRecords {
                name: name.clone(),
                records: vec![DnsRecord::A("192.0.2.7".parse().unwrap())],
            }],
            remove: vec![],
        };
        nexus.dns_change().group(DnsGroup::Internal).body(change).send().await.unwrap();
        let returned = Instant::now();
        let fqdn = format!("{name}.{ZONE}");
        for resolver in &resolvers {
            loop {
                if let Ok((_, addresses)) = resolver.lookup_addresses(&fqdn).await
                    && !addresses.is_empty()
                {
                    break;
                }
                assert!(returned.elapsed() < Duration::from_secs(120), "change {i} never arrived");
            }
        }
        samples.push(returned.elapsed());
    }
    println!(
        "| {zone_size} | {changes} | {:.1?} | {:.1?} | {:.1?} |",
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
        percentile(&mut samples, 1.0),
    );
    stack.stop().await;
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("propagation: run with `cargo bench -p tests --bench propagation`");
        return;
    }
    let changes =
        std::env::var("PROPAGATION_CHANGES").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    println!("| zone size | changes | p50 | p99 | max |");
    println!("|---:|---:|---:|---:|---:|");
    for zone_size in [1_000, 100_000] {
        run(zone_size, changes).await;
    }
}
