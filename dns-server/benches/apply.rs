//! Where the time of applying a large config goes: decoding the JSON body,
//! validating, compiling the answer tables (with the digest), and storing
//! it durably.  The steps `PUT /config` takes, one by one, at 100,000 names.
//! Then the steps of `PUT /config/diff` for a difference of 1 and of 1,000
//! names on top of it (median of 50 and of 10 runs).
//!
//! Run: `cargo bench -p dns-server --bench apply` (figures are recorded in
//! docs/PERFORMANCE.md).

use chrono::Utc;
use dns_server::storage::Storage;
use dns_server::zone::Served;
use dns_types::{DnsConfig, DnsConfigZone, DnsRecord, SrvRecord};
use std::time::Instant;

fn config(names: usize) -> DnsConfig {
    let names = (0..names)
        .map(|i| {
            let (name, record) = if i.is_multiple_of(2) {
                (
                    format!("host{i}.host"),
                    DnsRecord::Aaaa(
                        format!("fd00::{:x}:{:x}", i >> 16, i & 0xffff).parse().unwrap(),
                    ),
                )
            } else {
                (
                    format!("_svc{i}._tcp"),
                    DnsRecord::Srv(SrvRecord {
                        prio: 0,
                        weight: 0,
                        port: 12221,
                        target: format!("host{}.host.control-plane.internal", i - 1),
                    }),
                )
            };
            (name, vec![record])
        })
        .collect();
    DnsConfig {
        generation: 2,
        time_created: Utc::now(),
        creator: "bench".into(),
        comment: "bench".into(),
        zones: vec![DnsConfigZone {
            zone_name: "control-plane.internal".into(),
            ttl_seconds: 60,
            names,
        }],
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("apply: run with `cargo bench -p dns-server --bench apply`");
        return;
    }
    let names = 100_000;
    let json = serde_json::to_vec(&config(names)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    println!("| step ({names} names, {:.1} MB of JSON) | time |", json.len() as f64 / 1e6);
    println!("|---|---:|");
    let step = |name: &str, started: Instant| println!("| {name} | {:.1?} |", started.elapsed());

    let t = Instant::now();
    let decoded: DnsConfig = serde_json::from_slice(&json).unwrap();
    step("decode JSON", t);
    let t = Instant::now();
    decoded.validate().unwrap();
    step("validate", t);
    let t = Instant::now();
    let digest = dns_types::config_digest(&decoded);
    step("digest", t);
    let t = Instant::now();
    storage.save(&decoded, Utc::now()).unwrap();
    step("store durably", t);
    let t = Instant::now();
    let served = Served::compile(&decoded, Utc::now()).unwrap();
    step("compile (includes the digest)", t);
    assert_eq!(served.applied.as_ref().unwrap().digest, digest);

    for (changed, runs) in [(1usize, 50), (1_000, 10)] {
        let mut next = decoded.clone();
        next.generation += 1;
        for i in 0..changed {
            next.zones[0]
                .names
                .insert(format!("new{i}"), vec![DnsRecord::A("192.0.2.1".parse().unwrap())]);
        }
        let diff = dns_types::ConfigDiff::between(&decoded, &next);
        let body = serde_json::to_vec(&diff).unwrap();
        let median = |mut samples: Vec<std::time::Duration>| {
            samples.sort();
            samples[samples.len() / 2]
        };
        let (mut decode, mut apply, mut store) = (vec![], vec![], vec![]);
        for _ in 0..runs {
            let t = Instant::now();
            let decoded_diff: dns_types::ConfigDiff = serde_json::from_slice(&body).unwrap();
            decode.push(t.elapsed());
            let t = Instant::now();
            let derived = served.apply_diff(&decoded_diff, Utc::now()).unwrap();
            apply.push(t.elapsed());
            let t = Instant::now();
            storage.append(&decoded_diff, Utc::now()).unwrap();
            store.push(t.elapsed());
            drop(derived);
            // The next run applies the same difference to the same base:
            // start the journal over so that it stays valid.
            storage.save(&decoded, Utc::now()).unwrap();
        }
        let what = format!("difference of {changed} name(s) ({} bytes of JSON)", body.len());
        println!("| {what}: decode JSON | {:.2?} |", median(decode));
        println!(
            "| {what}: validate, check base, rebuild changed names, digest | {:.2?} |",
            median(apply)
        );
        println!("| {what}: append to the journal (write, fsync) | {:.2?} |", median(store));
    }
}
