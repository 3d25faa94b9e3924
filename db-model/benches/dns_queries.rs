//! Benchmark of the DNS queries against a real private PostgreSQL server.
//!
//! For zones of 1,000 and 100,000 names it measures the time to commit a
//! one-name change (which must not grow with the zone) and to read the full
//! config at the latest generation (target: under 1 s at 100,000 names).
//!
//! Run: `cargo bench -p db-model --bench dns_queries`
//! (figures are recorded in docs/PERFORMANCE.md).
//!
//! `DNS_BENCH=commit` measures instead where a one-name commit's time goes
//! at 100,000 names (`DNS_BENCH_NAMES`), on a durable server (fsync and
//! `synchronous_commit` on, as devstack runs it): the server's own time
//! per statement (`pg_stat_statements`), and the commit with
//! `synchronous_commit` on and off (the difference is the wait for the WAL
//! to reach disk); the rest of the client's time is round trips and the
//! client's own work.  See [`commit_breakdown`].

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

/// The internal group initialized with `zone_size` names in one
/// transaction; how long that took.
async fn initialize(ds: &db_model::Datastore, zone_size: usize) -> Duration {
    let initial = DnsChange {
        idempotency_key: None,
        comment: "benchmark setup".into(),
        add: names(zone_size),
        remove: vec![],
    };
    let zones = [ZoneSpec { zone_name: "control-plane.internal".into(), ttl_seconds: 60 }];
    let started = Instant::now();
    ds.dns_group_initialize(DnsGroup::Internal, &zones, "bench", &initial).await.unwrap();
    started.elapsed()
}

async fn bench(zone_size: usize) {
    let db = TestDatabase::new().await;
    let ds = &db.datastore;
    let setup = initialize(ds, zone_size).await;

    let mut commit_times = commits(ds, 0, COMMITS).await;

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
        percentile(&mut commit_times, 0.5),
        percentile(&mut commit_times, 0.9),
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
    if std::env::var("DNS_BENCH").as_deref() == Ok("commit") {
        let names = std::env::var("DNS_BENCH_NAMES").ok().and_then(|n| n.parse().ok());
        return commit_breakdown(names.unwrap_or(100_000)).await;
    }
    for zone_size in [1_000, 100_000] {
        bench(zone_size).await;
    }
}

/// One-name commits timed by the client, `count` of them.
async fn commits(ds: &db_model::Datastore, first: usize, count: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(count);
    for i in first..first + count {
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
        times.push(started.elapsed());
    }
    times
}

/// Where a one-name commit's time goes on a durable PostgreSQL.
async fn commit_breakdown(zone_size: usize) {
    const COUNT: usize = 300;
    // Declared first, dropped last: after the server has stopped.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pg");
    let mut server = tokio::task::spawn_blocking(move || {
        local_postgres::LocalPostgres::start(local_postgres::Directory::Keep(data))
    })
    .await
    .unwrap()
    .unwrap();
    let admin_url = server.url("postgres");
    let (admin, connection) =
        tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        .await
        .unwrap();
    drop(admin);
    let server = tokio::task::spawn_blocking(move || {
        server.stop_temporarily();
        server.start_again().unwrap();
        server
    })
    .await
    .unwrap();
    let url = test_database::create_database(&server, test_database::DATABASE_NAME).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("CREATE EXTENSION pg_stat_statements").await.unwrap();
    let ds = db_model::Datastore::new(&url, db_model::DatastoreOptions::default()).unwrap();
    ds.initialize_schema().await.unwrap();
    initialize(&ds, zone_size).await;
    // Warm the pool and the caches, then count from zero.
    commits(&ds, 0, 20).await;
    client.batch_execute("SELECT pg_stat_statements_reset()").await.unwrap();
    let mut durable = commits(&ds, 20, COUNT).await;
    let statements = client
        .query(
            "SELECT calls, mean_exec_time, query FROM pg_stat_statements \
             WHERE calls >= $1 ORDER BY total_exec_time DESC",
            &[&(COUNT as i64)],
        )
        .await
        .unwrap();
    // Two statements: ALTER SYSTEM may not run inside a transaction block.
    client.batch_execute("ALTER SYSTEM SET synchronous_commit = off").await.unwrap();
    client.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let mut asynchronous = commits(&ds, 20 + COUNT, COUNT).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{zone_size} names, {COUNT} one-name commits each way, durable server (fsync on)\n\
         synchronous_commit on:  p50 {:.2} ms, p90 {:.2} ms\n\
         synchronous_commit off: p50 {:.2} ms, p90 {:.2} ms\n\
         the server's time per commit, by statement (pg_stat_statements, with synchronous_commit on):",
        ms(percentile(&mut durable, 0.5)),
        ms(percentile(&mut durable, 0.9)),
        ms(percentile(&mut asynchronous, 0.5)),
        ms(percentile(&mut asynchronous, 0.9)),
    );
    let mut total = 0.0;
    for row in &statements {
        let (calls, mean, query): (i64, f64, String) = (row.get(0), row.get(1), row.get(2));
        let per_commit = mean * calls as f64 / COUNT as f64;
        total += per_commit;
        let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = query.chars().take(90).collect();
        println!("  {per_commit:>7.3} ms  ({calls} calls)  {short}");
    }
    println!("  {total:>7.3} ms  in all");
    drop(client);
    drop(ds);
    tokio::task::spawn_blocking(move || server.stop()).await.unwrap();
}
