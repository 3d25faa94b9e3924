//! A `POST /dns/{group}/changes` body, as Nexus takes it: strict JSON
//! decoding, then every check the database layer makes before writing,
//! against a zone that already holds a few names.  Whatever passes must
//! leave every touched name valid as a DNS server would serve it.

#![no_main]

use dns_types::{DnsChange, DnsRecord};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

const ZONES: [&str; 2] = ["control-plane.internal", "example.test"];

fuzz_target!(|data: &[u8]| {
    let Ok(change) = api_json::parse::<DnsChange>(data) else { return };
    let mut current = BTreeMap::new();
    current.insert((0, "www".to_string()), vec![DnsRecord::A("192.0.2.1".parse().unwrap())]);
    current.insert((1, "@".to_string()), vec![DnsRecord::Txt("hello".into())]);
    let Ok(state) = dns_types::change::apply_offline(&change, "fuzz", &ZONES, current) else {
        return;
    };
    for ((zone, name), records) in &state {
        if !records.is_empty() {
            dns_types::validate_name_records(ZONES[*zone], name, records)
                .expect("a committed name is valid");
        }
    }
});
