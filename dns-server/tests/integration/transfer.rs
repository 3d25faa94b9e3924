//! Zone transfers: `AXFR` (and `IXFR`, answered with the whole zone) over
//! TCP to allowed clients (loopback by default), so that `dig axfr` dumps
//! exactly what the server serves; refused over UDP, to other clients and
//! for zones it does not serve.  Real binary, real sockets, real `dig`.

use crate::common::*;
use dns_types::DnsRecord;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use std::str::FromStr;
use test_support::TokenDir;
use test_support::process::DnsServerProcess;

async fn start(dir: &TokenDir, extra: &[&str], names: usize) -> DnsServerProcess {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_dns-server"));
    let server = DnsServerProcess::start_in(binary, dir, extra).await.unwrap();
    let records: Vec<(String, Vec<DnsRecord>)> = (0..names)
        .map(|i| (format!("host{i}"), vec![DnsRecord::Txt(format!("{i:05} {}", "x".repeat(200)))]))
        .collect();
    let config = config(9, records.iter().map(|(n, r)| (n.as_str(), r.clone())).collect());
    put(&client(dir, server.http_address), &config).await.unwrap();
    server
}

fn transfer_query(rtype: RecordType, zone: &str) -> Vec<u8> {
    let mut message = Message::new(0x5151, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_str(zone).unwrap(), rtype));
    message.to_vec().unwrap()
}

async fn ask(
    server: &DnsServerProcess,
    rtype: RecordType,
    zone: &str,
    transport: Transport,
) -> Message {
    let reply =
        exchange_raw(server.dns_address, &transfer_query(rtype, zone), transport).await.unwrap();
    Message::from_vec(&reply).unwrap()
}

/// `dig axfr`'s records, one per line.
fn dig_axfr(server: &DnsServerProcess, rtype: &str) -> Vec<String> {
    let output = std::process::Command::new("dig")
        .args(["+noall", "+answer", "+tries=1", "+time=5"])
        .arg(format!("@{}", server.dns_address.ip()))
        .args(["-p", &server.dns_address.port().to_string(), ZONE, rtype])
        .output()
        .expect("running dig (apt-get install dnsutils)");
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect()
}

#[tokio::test]
async fn axfr_over_tcp_dumps_exactly_what_is_served() {
    let dir = TokenDir::new();
    // 1,000 names of about 240 bytes each: several TCP messages.
    let server = start(&dir, &[], 1000).await;
    let lines = dig_axfr(&server, "AXFR");
    assert_eq!(lines.len(), 1000 + 2, "SOA, every record, SOA");
    assert!(lines[0].contains("\tSOA\t") && lines[1001].contains("\tSOA\t"), "{:?}", &lines[..2]);
    assert!(lines[0].contains(" 9 "), "the serial is the generation: {}", lines[0]);
    for i in [0, 499, 999] {
        assert!(lines.iter().any(|l| l.starts_with(&format!("host{i}.{ZONE}."))), "host{i}");
    }
    // IXFR over TCP: the whole zone too (RFC 1995 allows it).
    assert_eq!(dig_axfr(&server, "IXFR=1").len(), 1002);
}

#[tokio::test]
async fn transfers_are_refused_over_udp_elsewhere_and_for_other_zones() {
    let dir = TokenDir::new();
    let server = start(&dir, &[], 3).await;
    let zone = format!("{ZONE}.");
    let reply = ask(&server, RecordType::AXFR, &zone, Transport::Udp).await;
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NotImp,
        "AXFR over UDP (as Knot and NSD)"
    );
    let reply = ask(&server, RecordType::AXFR, "example.org.", Transport::Tcp).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused, "a zone not served");
    // IXFR over UDP: the SOA alone, so the client comes back over TCP.
    let reply = ask(&server, RecordType::IXFR, &zone, Transport::Udp).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(reply.answers[0].record_type(), RecordType::SOA);

    // A server that allows only another network refuses loopback.
    let dir = TokenDir::new();
    let server = start(&dir, &["--allow-transfer", "192.0.2.0/24"], 3).await;
    let reply = ask(&server, RecordType::AXFR, &zone, Transport::Tcp).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused, "not an allowed client");
}

#[test]
fn address_ranges_parse_and_match() {
    use dns_server::AddressRange;
    let range: AddressRange = "10.1.0.0/16".parse().unwrap();
    assert!(range.contains("10.1.200.3".parse().unwrap()));
    assert!(!range.contains("10.2.0.1".parse().unwrap()));
    assert!(!range.contains("::1".parse().unwrap()));
    let one: AddressRange = "::1".parse().unwrap();
    assert!(one.contains("::1".parse().unwrap()) && !one.contains("::2".parse().unwrap()));
    assert!("0.0.0.0/0".parse::<AddressRange>().unwrap().contains("198.51.100.1".parse().unwrap()));
    assert!("10.0.0.0/33".parse::<AddressRange>().is_err());
    assert!("nonsense".parse::<AddressRange>().is_err());
    assert!(AddressRange::loopback().iter().any(|r| r.contains("127.8.9.10".parse().unwrap())));
}
