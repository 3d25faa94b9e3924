//! Propagation latency: from the moment `POST /dns/internal/changes`
//! returns to the moment all three internal DNS servers answer the new name
//! over DNS, for 100 one-name changes in a row, with zones of 1,000, 10,000
//! and 100,000 names; then 20 changes of 1,000 names each at 100,000.  For
//! each change, what Nexus sent each server (difference or whole config,
//! bytes) is read from its propagation status.
//!
//! Run: `cargo bench -p tests --bench propagation` (release binaries of the
//! whole stack; figures are recorded in docs/PERFORMANCE.md).
//! `PROPAGATION_CHANGES` sets the number of one-name changes (default 100),
//! `PROPAGATION_SIZES` the zone sizes (default `1000,10000,100000`).

use devstack::{Stack, StackOptions};
use dns_types::{DnsChange, DnsGroup, DnsRecord, NameRecords};
use internal_dns::Resolver;
use nexus_types::task_status::PropagationReport;
use std::time::{Duration, Instant};

const ZONE: &str = "control-plane.internal";

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

/// The kind and bytes of what generation `generation` sent each server,
/// from the propagation task's last activation (polled until it covers
/// that generation).
async fn pushes(nexus: &nexus_client::Client, generation: u64) -> Vec<(String, u64)> {
    for _ in 0..500 {
        let view = nexus
            .bgtask_view()
            .bgtask_name("dns_propagation_internal")
            .send()
            .await
            .unwrap()
            .into_inner();
        if let background_task_types::LastActivation::Completed(record) = view.last
            && let Ok(PropagationReport::Done(status)) =
                serde_json::from_value::<PropagationReport>(record.details)
            && status.generation == generation
        {
            return status
                .servers
                .values()
                .filter_map(|r| r.push.as_ref())
                .map(|p| (format!("{:?}", p.kind).to_lowercase(), p.bytes))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no propagation status for generation {generation}");
}

fn describe_pushes(all: &[(String, u64)]) -> String {
    let mut kinds: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    kinds.sort();
    kinds.dedup();
    let mut bytes: Vec<u64> = all.iter().map(|(_, b)| *b).collect();
    bytes.sort();
    format!(
        "{} ({} pushes), median {} bytes per server",
        kinds.join("+"),
        all.len(),
        bytes[bytes.len() / 2]
    )
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
        idempotency_key: None,
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
    // One-name changes; then, at the largest size, 1,000-name changes.
    let mut rounds = vec![(1usize, changes)];
    if zone_size >= 100_000 {
        rounds.push((1_000, 20));
    }
    for (names_per_change, changes) in rounds {
        let mut samples = Vec::with_capacity(changes);
        let mut sent = Vec::new();
        for i in 0..changes {
            let name = format!("bench{names_per_change}x{i}");
            let change = DnsChange {
                idempotency_key: None,
                comment: format!("benchmark change {i}"),
                add: (0..names_per_change)
                    .map(|j| NameRecords {
                        name: if j == 0 { name.clone() } else { format!("{name}n{j}") },
                        records: vec![DnsRecord::A("192.0.2.7".parse().unwrap())],
                    })
                    .collect(),
                remove: vec![],
            };
            let version =
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
                    assert!(
                        returned.elapsed() < Duration::from_secs(120),
                        "change {i} never arrived"
                    );
                }
            }
            samples.push(returned.elapsed());
            sent.extend(pushes(&nexus, version.into_inner().generation).await);
        }
        println!(
            "| {zone_size} | {names_per_change} | {changes} | {:.1?} | {:.1?} | {:.1?} | {} |",
            percentile(&mut samples, 0.5),
            percentile(&mut samples, 0.99),
            percentile(&mut samples, 1.0),
            describe_pushes(&sent),
        );
    }
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
    let sizes: Vec<usize> = std::env::var("PROPAGATION_SIZES")
        .ok()
        .map(|s| s.split(',').map(|n| n.trim().parse().expect("PROPAGATION_SIZES")).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    println!("| zone size | names per change | changes | p50 | p99 | max | sent per server |");
    println!("|---:|---:|---:|---:|---:|---:|---|");
    for zone_size in sizes {
        run(zone_size, changes).await;
    }
}
