//! Who answers, on the wire, and what the server logs: EDNS in every
//! response to an EDNS query (DO echoed, 1232-byte payload), NSID (RFC 5001)
//! and CHAOS TXT `id.server` / `hostname.bind` giving the server's id,
//! `version.*` only when configured, and the opt-in query log (no line per
//! query in the default log).  Real binary, real sockets.

use crate::common::*;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption, NSIDPayload};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use std::net::SocketAddr;
use std::str::FromStr;
use test_support::TokenDir;
use test_support::process::DnsServerProcess;

fn query(name: &str, rtype: RecordType, class: DNSClass, edns: Option<(bool, bool)>) -> Vec<u8> {
    let mut message = Message::new(0x4242, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_str(name).unwrap(), rtype);
    q.set_query_class(class);
    message.add_query(q);
    if let Some((dnssec_ok, nsid)) = edns {
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        edns.set_dnssec_ok(dnssec_ok);
        if nsid {
            edns.options_mut().insert(EdnsOption::NSID(NSIDPayload::new(Vec::new()).unwrap()));
        }
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

async fn ask(server: SocketAddr, bytes: &[u8], transport: Transport) -> Message {
    let reply = exchange_raw(server, bytes, transport).await.expect("an answer");
    Message::from_vec(&reply).unwrap()
}

fn txt(message: &Message) -> Vec<String> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(t.txt_data.iter().map(|s| String::from_utf8_lossy(s)).collect()),
            _ => None,
        })
        .collect()
}

async fn start(dir: &TokenDir, extra: &[&str]) -> DnsServerProcess {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_dns-server"));
    let server = DnsServerProcess::start_in(binary, dir, extra).await.unwrap();
    let client = client(dir, server.http_address);
    put(
        &client,
        &config(3, vec![("www", vec![dns_types::DnsRecord::A("192.0.2.1".parse().unwrap())])]),
    )
    .await
    .unwrap();
    server
}

async fn server_id(dir: &TokenDir, server: &DnsServerProcess) -> String {
    client(dir, server.http_address).status_get().send().await.unwrap().into_inner().id.to_string()
}

#[tokio::test]
async fn every_edns_answer_carries_opt_with_do_echoed_and_1232_bytes() {
    let dir = TokenDir::new();
    let server = start(&dir, &[]).await;
    let www = format!("www.{ZONE}.");
    for transport in [Transport::Udp, Transport::Tcp] {
        for (name, rtype, class) in [
            (www.as_str(), RecordType::A, DNSClass::IN),
            ("nosuch.example.org.", RecordType::A, DNSClass::IN),
            ("id.server.", RecordType::TXT, DNSClass::CH),
        ] {
            for dnssec_ok in [false, true] {
                let reply = ask(
                    server.dns_address,
                    &query(name, rtype, class, Some((dnssec_ok, false))),
                    transport,
                )
                .await;
                let edns = reply
                    .edns
                    .as_ref()
                    .unwrap_or_else(|| panic!("no OPT for {name} over {transport:?}"));
                assert_eq!(edns.flags().dnssec_ok, dnssec_ok, "DO echoed for {name}");
                assert_eq!(edns.max_payload(), 1232, "{name}");
            }
        }
        // Without EDNS in the query, none in the answer.
        let plain =
            ask(server.dns_address, &query(&www, RecordType::A, DNSClass::IN, None), transport)
                .await;
        assert!(plain.edns.is_none());
    }
}

#[tokio::test]
async fn nsid_and_chaos_name_the_server() {
    let dir = TokenDir::new();
    let server = start(&dir, &[]).await;
    let id = server_id(&dir, &server).await;
    for transport in [Transport::Udp, Transport::Tcp] {
        let reply = ask(
            server.dns_address,
            &query(&format!("www.{ZONE}."), RecordType::A, DNSClass::IN, Some((false, true))),
            transport,
        )
        .await;
        let nsid = match reply.edns.as_ref().unwrap().options().get(EdnsCode::NSID) {
            Some(EdnsOption::NSID(payload)) => {
                String::from_utf8_lossy(payload.as_ref()).into_owned()
            }
            other => panic!("no NSID: {other:?}"),
        };
        assert_eq!(nsid, id);
        for name in ["id.server.", "hostname.bind.", "ID.SERVER."] {
            let reply = ask(
                server.dns_address,
                &query(name, RecordType::TXT, DNSClass::CH, None),
                transport,
            )
            .await;
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(
                !reply.metadata.authoritative,
                "{name}: not zone data, no AA (as Knot and NSD)"
            );
            assert_eq!(txt(&reply), vec![id.clone()], "{name}");
            assert_eq!(reply.answers[0].dns_class, DNSClass::CH);
        }
        // version.* is off by default; other CHAOS names are refused.
        for name in ["version.bind.", "version.server.", "authors.bind."] {
            let reply = ask(
                server.dns_address,
                &query(name, RecordType::TXT, DNSClass::CH, None),
                transport,
            )
            .await;
            assert_eq!(reply.metadata.response_code, ResponseCode::Refused, "{name}");
        }
    }
    // No NSID asked, none given.
    let reply = ask(
        server.dns_address,
        &query(&format!("www.{ZONE}."), RecordType::A, DNSClass::IN, Some((false, false))),
        Transport::Udp,
    )
    .await;
    assert!(reply.edns.as_ref().unwrap().options().get(EdnsCode::NSID).is_none());
}

#[tokio::test]
async fn version_is_answered_only_when_configured() {
    let dir = TokenDir::new();
    let server = start(&dir, &["--answer-version"]).await;
    let reply = ask(
        server.dns_address,
        &query("version.bind.", RecordType::TXT, DNSClass::CH, None),
        Transport::Udp,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(txt(&reply), vec![format!("dns-server {}", env!("CARGO_PKG_VERSION"))]);
}

#[tokio::test]
async fn queries_are_logged_only_to_the_opt_in_query_log() {
    let dir = TokenDir::new();
    let query_log = dir.path().join("queries.jsonl");
    let server =
        start(&dir, &["--query-log", query_log.to_str().unwrap(), "--query-log-sample", "2"]).await;
    let www = format!("www.{ZONE}.");
    for _ in 0..10 {
        ask(server.dns_address, &query(&www, RecordType::A, DNSClass::IN, None), Transport::Udp)
            .await;
    }
    // Lines reach the file from a writer thread of their own, after the
    // answer: wait (bounded) for the fifth, then make sure no sixth follows.
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&query_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while read().len() < 5 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let lines = read();
    assert_eq!(lines.len(), 5, "one query in two: {lines:?}");
    let line = &lines[0];
    assert_eq!(line["qname"], www);
    assert_eq!((line["qtype"].as_str(), line["qclass"].as_str()), (Some("A"), Some("IN")));
    assert_eq!(
        (line["rcode"].as_str(), line["transport"].as_str()),
        (Some("NOERROR"), Some("udp"))
    );
    assert_eq!((line["answers"].as_u64(), line["generation"].as_u64()), (Some(1), Some(3)));
    assert!(line["src"].as_str().unwrap().starts_with("127.0.0.1:") && line["time"].is_string());
    // The ordinary log has no line per query.
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(!log.contains("www.control-plane.internal"), "{log}");
    assert!(!log.contains("hickory_server"), "{log}");
}

/// RFC 8482: ANY draws one RRset of the name (as Knot answers), over UDP
/// and TCP; names that do not exist are NXDOMAIN.
#[tokio::test]
async fn any_draws_one_rrset() {
    let dir = TokenDir::new();
    let server = start(&dir, &[]).await;
    let client = client(&dir, server.http_address);
    let records = vec![
        dns_types::DnsRecord::A("192.0.2.1".parse().unwrap()),
        dns_types::DnsRecord::Aaaa("fd00::1".parse().unwrap()),
        dns_types::DnsRecord::Txt("t".into()),
    ];
    put(&client, &config(4, vec![("www", records)])).await.unwrap();
    let www = format!("www.{ZONE}.");
    for transport in [Transport::Udp, Transport::Tcp] {
        let reply =
            ask(server.dns_address, &query(&www, RecordType::ANY, DNSClass::IN, None), transport)
                .await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        let types: std::collections::BTreeSet<RecordType> =
            reply.answers.iter().map(|r| r.record_type()).collect();
        assert_eq!(types.len(), 1, "one RRset over {transport:?}: {:?}", reply.answers);
    }
    let missing = format!("nosuch.{ZONE}.");
    let nx = ask(
        server.dns_address,
        &query(&missing, RecordType::ANY, DNSClass::IN, None),
        Transport::Udp,
    )
    .await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
}
