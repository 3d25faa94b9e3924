//! A `PUT /config/diff` body, as the DNS server takes it: strict JSON
//! decoding, then applied to a small served config.  Aimed at its base (the
//! fuzzer's generation and digest are replaced by the base's) and at the
//! digest of the config it leads to (computed from the whole result), every
//! difference that validates must apply, and the server's name-by-name
//! digest must equal the digest of the whole result: incremental and full
//! must never disagree.  Aimed elsewhere, it must be refused, not panic.

#![no_main]

use chrono::Utc;
use dns_types::{ConfigDiff, DnsConfig, DnsConfigZone, DnsRecord};
use dns_server::zone::Served;
use libfuzzer_sys::fuzz_target;

fn base() -> DnsConfig {
    let names = [
        ("www", DnsRecord::A("192.0.2.1".parse().unwrap())),
        ("a.b.c", DnsRecord::Aaaa("fd00::1".parse().unwrap())),
        ("alias", DnsRecord::Cname("www.example.test".into())),
        ("t", DnsRecord::Txt("text".into())),
    ];
    DnsConfig {
        generation: 5,
        time_created: Utc::now(),
        creator: "fuzz".into(),
        comment: "base".into(),
        zones: vec![DnsConfigZone {
            zone_name: "example.test".into(),
            ttl_seconds: 60,
            names: names.into_iter().map(|(n, r)| (n.to_string(), vec![r])).collect(),
        }],
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut diff) = api_json::parse::<ConfigDiff>(data) else { return };
    let base = base();
    let served = Served::compile(&base, Utc::now()).unwrap();
    // As sent, with whatever base and digest it names: refused or applied,
    // never a panic.
    let _ = served.apply_diff(&diff, Utc::now());
    if diff.validate().is_err() {
        return;
    }
    diff.from_generation = base.generation;
    diff.from_digest = dns_types::config_digest(&base);
    if diff.validate().is_err() {
        // Now leading backwards from the base: refused.
        assert!(served.apply_diff(&diff, Utc::now()).is_err(), "a backward difference applied");
        return;
    }
    let mut whole = base.clone();
    for zone in &diff.zones {
        let Some(target) = whole.zones.iter_mut().find(|z| z.zone_name == zone.zone_name) else {
            assert!(served.apply_diff(&diff, Utc::now()).is_err(), "unknown zone accepted");
            return;
        };
        for change in &zone.names {
            if change.records.is_empty() {
                target.names.remove(&change.name);
            } else {
                target.names.insert(change.name.clone(), change.records.clone());
            }
        }
    }
    whole.generation = diff.generation;
    if whole.validate().is_err() {
        return;
    }
    diff.digest = dns_types::config_digest(&whole);
    let applied = served.apply_diff(&diff, Utc::now()).expect("a valid difference to its base applies");
    assert_eq!(applied.applied.as_ref().unwrap().digest, diff.digest);
});
