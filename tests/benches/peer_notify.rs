//! How fast a change made through one Nexus reaches another Nexus's
//! `dns_config` task: the committing Nexus asks its peers (found in DNS) to
//! activate the task, instead of leaving them to their next period (an hour
//! here, so only the notification can explain a fast arrival).
//!
//! Measured per change: the time Nexus B first saw the generation
//! (`first_seen_at` in its `dns_config_internal` status) minus the time the
//! database created it.  Both clocks are this machine's.
//!
//! Run: `cargo bench -p tests --bench peer_notify` (figures in
//! docs/PERFORMANCE.md).  `PEER_NOTIFY_CHANGES` sets the count (default 50).

use devstack::{Stack, StackOptions};
use dns_types::{DnsChange, DnsGroup, DnsRecord, NameRecords};
use nexus_types::task_name::DnsTaskName;
use nexus_types::task_status::DnsConfigStatus;
use std::time::{Duration, Instant};

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("peer_notify: run with `cargo bench -p tests --bench peer_notify`");
        return;
    }
    let changes: usize =
        std::env::var("PEER_NOTIFY_CHANGES").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let mut options = StackOptions::new(dir.path().join("run"));
    options.task_period_secs = 3600;
    let stack = Stack::start(options).await.unwrap();
    let (a, b) = (stack.nexus[0].client(), stack.nexus[1].client());
    let task = DnsTaskName::config(DnsGroup::Internal).to_string();
    let mut samples = Vec::with_capacity(changes);
    for i in 0..changes {
        let change = DnsChange {
            idempotency_key: None,
            comment: format!("peer notification benchmark {i}"),
            add: vec![NameRecords {
                name: format!("peer{i}"),
                records: vec![DnsRecord::A("192.0.2.1".parse().unwrap())],
            }],
            remove: vec![],
        };
        let version = a
            .dns_change()
            .group(DnsGroup::Internal)
            .body(change)
            .send()
            .await
            .unwrap()
            .into_inner();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            let view = b.bgtask_view().bgtask_name(&task).send().await.unwrap().into_inner();
            if let background_task_types::LastActivation::Completed(record) = view.last
                && let Ok(status) = serde_json::from_value::<DnsConfigStatus>(record.details)
                && status.generation >= version.generation
            {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "Nexus B never saw generation {}",
                version.generation
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if status.generation == version.generation {
            let latency =
                (status.first_seen_at - version.time_created).to_std().unwrap_or_default();
            samples.push(latency);
        }
    }
    let n = samples.len();
    println!("| changes | p50 | p90 | max |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {n} | {:.1?} | {:.1?} | {:.1?} |",
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.9),
        percentile(&mut samples, 1.0)
    );
    stack.stop().await;
}
