//! A `PUT /config` body, as the DNS server takes it: strict JSON decoding,
//! validation, then compiling.  Whatever validates must compile (the server
//! stores a config only after both), and the digest must not depend on how
//! the JSON was laid out.

#![no_main]

use dns_types::DnsConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = api_json::parse::<DnsConfig>(data) else { return };
    if config.validate().is_err() {
        return;
    }
    let digest = dns_types::config_digest(&config);
    let again: DnsConfig = serde_json::from_slice(&serde_json::to_vec(&config).unwrap()).unwrap();
    assert_eq!(dns_types::config_digest(&again), digest, "digest changed by a JSON round trip");
    let served = dns_server::zone::Served::compile(&config, chrono::Utc::now())
        .expect("a config that validates compiles");
    assert_eq!(served.applied.as_ref().unwrap().digest, digest);
});
