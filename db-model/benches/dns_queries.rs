//! Benchmark of the DNS queries against a real private PostgreSQL server.
//!
//! For zones of 1,000 and 100,000 names it measures the time to commit a
//! one-name change (which must not grow with the zone) and to read the full
//! config at the latest generation (target: under 1 s at 100,000 names).
//!
//! Run: `cargo bench -p db-model --bench dns_queries`
//! (figures are recorded in docs/PERFORMANCE.md).

use db_model::ZoneSpec;
use dns_types::{DnsChange, DnsGroup, DnsRecord, NameRecords, SrvRecord};
use std::time::{Duration, Instant};
use test_database::TestDatabase;

const COMMITS: usize = 100;
const READS: usize = 10;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn names(count: usize) -> Vec<NameRecords> {
    (0..count)
        .map(|i| {
            let records = if i.is_multiple_of(2) {
                vec![DnsRecord::Aaaa(
                    format!("fd00::{:x}:{:x}", i >> 16, i & 0xffff).parse().unwrap(),
                )]
            } else {
                vec![DnsRecord::Srv(SrvRecord {
                    prio: 0,
                    weight: 0,
                    port: 12221,
                    target: format!("host{i}.control-plane.internal"),
                })]
            };
            NameRecords { name: format!("name{i}"), records }
        })
        .collect()
}

async fn bench(zone_size: usize) {
    let db = TestDatabase::new().await;
    let ds = &db.datastore;
    let initial = DnsChange {
        idempotency_key: None,
        comment: "benchmark setup".into(),
        add: names(zone_size),
        remove: vec![],
    };
    let zones = [ZoneSpec { zone_name: "control-plane.internal".into(), ttl_seconds: 60 }];
    let started = Instant::now();
    ds.dns_group_initialize(DnsGroup::Internal, &zones, "bench", &initial).await.unwrap();
    let setup = started.elapsed();

    let mut commits = Vec::with_capacity(COMMITS);
    for i in 0..COMMITS {
        let change = DnsChange {
            idempotency_key: None,
            comment: format!("bench change {i}"),
            add: vec![NameRecords {
                name: format!("new{i}"),
                records: vec![DnsRecord::Aaaa("fd00::1".parse().unwrap())],
            }],
            remove: vec![],
        };
        let started = Instant::now();
        ds.dns_change_commit(DnsGroup::Internal, "bench", &change).await.unwrap();
        commits.push(started.elapsed());
    }

    let mut reads = Vec::with_capacity(READS);
    for _ in 0..READS {
        let started = Instant::now();
        let config = ds.dns_config_read(DnsGroup::Internal, None).await.unwrap();
        reads.push(started.elapsed());
        assert_eq!(config.name_count(), zone_size + COMMITS);
    }
    println!(
        "{zone_size:>7} names | initial load {:>9.1?} | one-name commit p50 {:>8.2?} p90 {:>8.2?} \
         | full read p50 {:>8.1?} max {:>8.1?}",
        setup,
        percentile(&mut commits, 0.5),
        percentile(&mut commits, 0.9),
        percentile(&mut reads, 0.5),
        percentile(&mut reads, 1.0),
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass
    // nothing: only run for real under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("dns_queries: run with `cargo bench -p db-model --bench dns_queries`");
        return;
    }
    for zone_size in [1_000, 100_000] {
        bench(zone_size).await;
    }
}
