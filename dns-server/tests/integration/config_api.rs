//! The config API over real HTTP: generation rules, racing updates, status,
//! invalid input, atomic swaps under query load, and restarts of the real
//! binary.

use crate::common::*;
use dns_types::DnsRecord;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use test_support::TokenDir;
use test_support::process::{ChildProcess, DnsServerProcess};

fn a(last: u8) -> DnsRecord {
    DnsRecord::A(std::net::Ipv4Addr::new(192, 0, 2, last))
}

async fn served_generation(s: &TestServer) -> u64 {
    s.client.status_get().send().await.unwrap().into_inner().generation
}

#[tokio::test]
async fn generation_rules() {
    let s = TestServer::start().await;
    let v5 = config(5, vec![("www", vec![a(5)])]);
    s.put(&v5).await.unwrap();
    assert_eq!(served_generation(&s).await, 5);

    // Same generation, same content: success, nothing to do.
    let mut same = v5.clone();
    same.comment = "re-sent by another Nexus".into();
    s.put(&same).await.unwrap();
    let applied = s.client.config_get().send().await.unwrap().into_inner();
    assert_eq!(applied.config, v5, "the re-sent copy did not replace anything");

    // Same generation, different content: conflict.
    let (status, code, message) = s.put(&config(5, vec![("www", vec![a(6)])])).await.unwrap_err();
    assert_eq!((status, code.as_str()), (409, "BadUpdateGeneration"));
    assert!(message.contains("generation 5") && message.contains("different content"), "{message}");

    // Older: conflict.
    let (status, code, message) = s.put(&config(4, vec![("www", vec![a(4)])])).await.unwrap_err();
    assert_eq!((status, code.as_str()), (409, "BadUpdateGeneration"));
    assert!(message.contains("older"), "{message}");

    // Nothing changed through all of that.
    let m = query(s.dns(), &format!("www.{ZONE}."), RecordType::A, Transport::Udp).await;
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.5");

    // Newer: applied.
    s.put(&config(9, vec![("www", vec![a(9)])])).await.unwrap();
    let m = query(s.dns(), &format!("www.{ZONE}."), RecordType::A, Transport::Tcp).await;
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.9");
}

#[tokio::test]
async fn status_reports_what_is_served() {
    let s = TestServer::start().await;
    let before = s.client.status_get().send().await.unwrap().into_inner();
    assert_eq!((before.generation, before.applied_config_digest.clone()), (0, None));

    let v3 = config(3, vec![("www", vec![a(1)]), ("db", vec![a(2)])]);
    s.put(&v3).await.unwrap();
    let status = s.client.status_get().send().await.unwrap().into_inner();
    assert_eq!(status.id, s.server.id());
    assert_eq!(status.generation, 3);
    assert_eq!(
        status.applied_config_digest.as_deref(),
        Some(dns_types::config_digest(&v3).as_str())
    );
    assert_eq!(status.config_comment.as_deref(), Some("generation 3"));
    assert_eq!(status.dns_addresses, vec![s.dns().to_string()]);
    assert_eq!(status.zones.len(), 1);
    assert_eq!((status.zones[0].zone_name.as_str(), status.zones[0].names), (ZONE, 2));
    assert!(status.time_applied.unwrap() >= status.started_at);
}

/// Many PUTs at once, with shuffled generations and conflicting content for
/// the same generation: the server ends at the highest generation, exactly
/// one content wins per generation, and the generation never goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_puts_never_corrupt_or_go_backwards() {
    let s = Arc::new(TestServer::start().await);
    let stop = Arc::new(AtomicBool::new(false));
    let highest_seen = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (s, stop, highest_seen) = (s.clone(), stop.clone(), highest_seen.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let generation = served_generation(&s).await;
                let previous = highest_seen.fetch_max(generation, Ordering::SeqCst);
                assert!(
                    generation >= previous,
                    "generation went back from {previous} to {generation}"
                );
            }
        })
    };
    // Generations 1..=10, each offered twice with different content.
    let mut order: Vec<(u64, u8)> = (1..=10).flat_map(|g| [(g, 1u8), (g, 2u8)]).collect();
    order.reverse();
    order.swap(3, 15);
    order.swap(7, 11);
    let puts: Vec<_> = order
        .into_iter()
        .map(|(generation, variant)| {
            let s = s.clone();
            tokio::spawn(async move {
                let result = s.put(&config(generation, vec![("www", vec![a(variant)])])).await;
                (generation, variant, result)
            })
        })
        .collect();
    let mut winners = std::collections::BTreeMap::new();
    for put in puts {
        let (generation, variant, result) = put.await.unwrap();
        match result {
            Ok(()) => assert!(
                winners.insert(generation, variant).is_none(),
                "both contents of generation {generation} were accepted"
            ),
            Err((status, code, _)) => {
                assert_eq!((status, code.as_str()), (409, "BadUpdateGeneration"))
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    assert_eq!(served_generation(&s).await, 10);
    // What is served is what the winner of generation 10 sent.
    let expected = *winners.get(&10).expect("generation 10 was applied");
    let m = query(s.dns(), &format!("www.{ZONE}."), RecordType::A, Transport::Udp).await;
    assert_eq!(m.answers[0].data.to_string(), format!("192.0.2.{expected}"));
}

#[tokio::test]
async fn invalid_configs_are_rejected_with_the_reason() {
    let s = TestServer::start().await;
    let http = s.dir.http_client(TIMEOUT);
    let url = format!("http://{}/config", s.server.http_address());
    let cases = [
        ("not json", "{\"generation\": 1,", "unable to parse JSON body"),
        (
            "a bad name",
            r#"{"generation":1,"time_created":"2026-01-01T00:00:00Z","creator":"t","comment":"t",
               "zones":[{"zone_name":"example.test","ttl_seconds":60,
                         "names":{"bad..name":[{"type":"A","data":"192.0.2.1"}]}}]}"#,
            "bad..name",
        ),
        (
            "an A record with an IPv6 address",
            r#"{"generation":1,"time_created":"2026-01-01T00:00:00Z","creator":"t","comment":"t",
               "zones":[{"zone_name":"example.test","ttl_seconds":60,
                         "names":{"www":[{"type":"A","data":"fd00::1"}]}}]}"#,
            "invalid IPv4 address",
        ),
        (
            "a CNAME beside other records",
            r#"{"generation":1,"time_created":"2026-01-01T00:00:00Z","creator":"t","comment":"t",
               "zones":[{"zone_name":"example.test","ttl_seconds":60,
                         "names":{"www":[{"type":"CNAME","data":"x.example.test"},
                                         {"type":"A","data":"192.0.2.1"}]}}]}"#,
            "CNAME beside other records",
        ),
        (
            "a name given twice",
            r#"{"generation":1,"time_created":"2026-01-01T00:00:00Z","creator":"t","comment":"t",
               "zones":[{"zone_name":"example.test","ttl_seconds":60,
                         "names":{"www":[{"type":"A","data":"192.0.2.1"}],
                                  "www":[{"type":"A","data":"192.0.2.2"}]}}]}"#,
            r#"the name \"www\" is given twice"#,
        ),
    ];
    for (what, body, expected) in cases {
        let response = http
            .put(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{what}");
        let text = response.text().await.unwrap();
        assert!(text.contains(expected), "{what}: {text}");
    }
    assert_eq!(served_generation(&s).await, 0, "nothing was applied");
}

/// While a large config is applied, queries keep being answered, and each
/// answer comes from one generation: a CNAME to a name made for its
/// generation and that name's address always agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swaps_are_atomic_and_queries_continue_during_a_large_apply() {
    let s = Arc::new(TestServer::start().await);
    let big = |generation: u64| {
        let mut c = config(generation, vec![]);
        let names = &mut c.zones[0].names;
        for i in 0..20_000u32 {
            names.insert(format!("name{i}"), vec![a((i % 250) as u8)]);
        }
        // One answer carries two marks of its generation: a CNAME to a
        // name made for it, and that name's address.
        names.insert("alias".into(), vec![DnsRecord::Cname(format!("gen{generation}.{ZONE}"))]);
        names.insert(format!("gen{generation}"), vec![a((generation % 250) as u8)]);
        c
    };
    s.put(&big(1)).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let querier = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answered = 0u64;
            let mut generations = std::collections::BTreeSet::new();
            // Until the last generation has been seen after the last PUT
            // (or a time limit: then the assertion below says so).
            let deadline = std::time::Instant::now() + TIMEOUT * 6;
            while !(stop.load(Ordering::SeqCst) && generations.contains(&4))
                && std::time::Instant::now() < deadline
            {
                let m =
                    query(s.dns(), &format!("alias.{ZONE}."), RecordType::A, Transport::Tcp).await;
                assert_eq!(m.metadata.response_code, ResponseCode::NoError);
                let generation = answer_generation(&m);
                generations.insert(generation);
                answered += 1;
            }
            (answered, generations)
        })
    };
    for generation in 2..=4 {
        s.put(&big(generation)).await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let (answered, generations) = querier.await.unwrap();
    assert!(answered > 0);
    assert!(generations.contains(&4) && generations.len() >= 2, "{generations:?}");
}

/// The real binary, killed without warning and started again on the same
/// storage directory, answers from the stored generation right away.
#[tokio::test]
async fn the_binary_serves_its_stored_generation_right_after_a_restart() {
    async fn start(
        dir: &TokenDir,
        dns: &str,
        http: &str,
    ) -> (ChildProcess, SocketAddr, SocketAddr) {
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_dns-server"));
        let storage = dir.path().join("storage");
        let log = dir.path().join("log");
        let server = DnsServerProcess::start(binary, dns, http, &storage, &dir.token_file(), &log)
            .await
            .unwrap();
        (server.process, server.dns_address, server.http_address)
    }

    let dir = TokenDir::new();
    let (process, dns, http) = start(&dir, "127.0.0.1:0", "127.0.0.1:0").await;
    let client = client(&dir, http);
    let id = client.status_get().send().await.unwrap().into_inner().id;
    put(&client, &config(12, vec![("www", vec![a(12)])])).await.unwrap();
    // SIGKILL: no chance to flush anything at exit.
    process.kill().await;

    let (_process, dns2, http2) = start(&dir, &dns.to_string(), "127.0.0.1:0").await;
    assert_eq!(dns2, dns);
    // The very first query is answered from generation 12.
    let m = query(dns2, &format!("www.{ZONE}."), RecordType::A, Transport::Udp).await;
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.12");
    let status = crate::common::client(&dir, http2).status_get().send().await.unwrap().into_inner();
    assert_eq!(status.generation, 12);
    assert_eq!(status.id, id, "the server keeps its id across restarts");
}

/// A config that cannot be stored durably is not applied: the server keeps
/// serving the previous generation and says why.
#[tokio::test]
async fn a_config_that_cannot_be_stored_is_not_applied() {
    let s = TestServer::start().await;
    s.put(&config(1, vec![("www", vec![a(1)])])).await.unwrap();
    std::fs::remove_dir_all(s.storage_dir()).unwrap();
    let (status, code, message) = s.put(&config(2, vec![("www", vec![a(2)])])).await.unwrap_err();
    assert_eq!((status, code.as_str()), (500, "StorageFailed"));
    assert!(message.contains("still serving generation 1"), "{message}");
    assert_eq!(served_generation(&s).await, 1);
    let m = query(s.dns(), &format!("www.{ZONE}."), RecordType::A, Transport::Udp).await;
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.1");
}
