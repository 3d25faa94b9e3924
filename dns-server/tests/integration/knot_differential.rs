//! Side by side with Knot DNS: the same zone loaded into `knotd` and into
//! our server, the same questions asked of both over UDP and TCP, and the
//! answers compared (response code, AA, TC and CD flags, the answer records
//! with their owner names' case, the additional records, and the UDP size
//! the response's OPT record advertises), including flags, a NOTIFY, class
//! ANY, a name asked in mixed case, CHAOS `id.server` / `hostname.bind`
//! (flags and code: the text is each server's own) and AXFR over UDP.  Needs `knotd` (Debian package `knot`; CI
//! installs it); without it the test says so and checks nothing.

use crate::common::*;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};
use test_support::TokenDir;
use test_support::process::DnsServerProcess;

const ZONE_FILE: &str = "$ORIGIN control-plane.internal.
$TTL 60
@ SOA ns.control-plane.internal. admin.control-plane.internal. 7 3600 600 86400 60
@ NS ns1
ns1 A 192.0.2.53
www A 192.0.2.1
www AAAA fd00::1
alias CNAME www
_nexus._tcp SRV 0 0 12221 www
txt TXT \"hello world\"
";

const CONFIG: &str = r#"{"generation": 7, "time_created": "2026-01-01T00:00:00Z", "creator": "t", "comment": "t",
 "zones": [{"zone_name": "control-plane.internal", "ttl_seconds": 60, "names": {
    "@": [{"type": "NS", "data": "ns1.control-plane.internal"}],
    "ns1": [{"type": "A", "data": "192.0.2.53"}],
    "www": [{"type": "A", "data": "192.0.2.1"}, {"type": "AAAA", "data": "fd00::1"}],
    "alias": [{"type": "CNAME", "data": "www.control-plane.internal"}],
    "_nexus._tcp": [{"type": "SRV", "data": {"prio": 0, "weight": 0, "port": 12221, "target": "www.control-plane.internal"}}],
    "txt": [{"type": "TXT", "data": "hello world"}]}}]}"#;

struct Knot(std::process::Child);

fn which_knotd() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join("knotd"))
        .find(|path| path.is_file())
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_knot(dir: &std::path::Path) -> Option<(Knot, SocketAddr)> {
    let port = std::net::UdpSocket::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    std::fs::write(dir.join("zone.zone"), ZONE_FILE).unwrap();
    let conf = dir.join("knot.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\ndatabase:\n    storage: {d}\n\
             template:\n  - id: default\n    storage: {d}\n    semantic-checks: off\n\
             zone:\n  - domain: control-plane.internal\n    file: zone.zone\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new("knotd")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("knotd.log")).unwrap())
        .spawn()
        .ok()?;
    Some((Knot(child), SocketAddr::from(([127, 0, 0, 1], port))))
}

/// What is compared of an answer.
#[derive(Debug, PartialEq)]
struct Shape {
    rcode: String,
    aa: bool,
    tc: bool,
    cd: bool,
    answers: BTreeSet<String>,
    additionals: BTreeSet<String>,
    /// The UDP size the response's OPT record advertises.
    opt_payload: Option<u16>,
}

fn shape(message: &Message) -> Shape {
    let records = |section: &[hickory_proto::rr::Record]| {
        section
            .iter()
            .filter(|r| r.record_type() != RecordType::OPT)
            .map(|r| format!("{} {} {}", r.name.to_ascii(), r.record_type(), r.data))
            .collect()
    };
    Shape {
        rcode: format!("{:?}", message.metadata.response_code),
        aa: message.metadata.authoritative,
        tc: message.metadata.truncation,
        cd: message.metadata.checking_disabled,
        answers: records(&message.answers),
        additionals: records(&message.additionals),
        opt_payload: message.edns.as_ref().map(|e| e.max_payload()),
    }
}

/// How a question is asked besides its name and type.
#[derive(Clone, Copy)]
struct Asked {
    class: DNSClass,
    op: OpCode,
    cd: bool,
}

const PLAIN: Asked = Asked { class: DNSClass::IN, op: OpCode::Query, cd: false };

async fn ask(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    transport: Transport,
) -> Option<Shape> {
    ask_as(server, name, rtype, PLAIN, transport).await
}

async fn ask_as(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    asked: Asked,
    transport: Transport,
) -> Option<Shape> {
    let mut message = Message::new(0x6161, MessageType::Query, asked.op);
    message.metadata.checking_disabled = asked.cd;
    let mut query = Query::query(Name::from_str(name).unwrap(), rtype);
    query.set_query_class(asked.class);
    message.add_query(query);
    // Not 1232: a responder advertises its own size, not the asker's.
    let mut edns = Edns::new();
    edns.set_max_payload(1000);
    message.set_edns(edns);
    let reply =
        exchange_raw_within(server, &message.to_vec().unwrap(), transport, Duration::from_secs(1))
            .await?;
    Some(shape(&Message::from_vec(&reply).unwrap()))
}

#[tokio::test]
async fn answers_agree_with_knot() {
    let dir = TokenDir::new();
    if which_knotd().is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must have knotd (apt-get install knot)");
        eprintln!("knotd not found: skipped the comparison with Knot");
        return;
    }
    // A port picked now may be taken by the time knotd binds it: then try
    // another.
    let mut started = None;
    for attempt in 0..3 {
        let knot_dir = dir.path().join(format!("knot{attempt}"));
        std::fs::create_dir_all(&knot_dir).unwrap();
        let (process, address) = start_knot(&knot_dir).expect("starting knotd");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let soa = ask(address, &format!("{ZONE}."), RecordType::SOA, Transport::Udp).await;
            if soa.is_some_and(|s| !s.answers.is_empty()) {
                started = Some((process, address));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if started.is_some() {
            break;
        }
    }
    let (_knot, knot) = started
        .unwrap_or_else(|| panic!("knotd did not load its zone; logs in {}", dir.path().display()));
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_dns-server"));
    let ours = DnsServerProcess::start_in(binary, &dir, &[]).await.unwrap();
    let config: dns_types::DnsConfig = serde_json::from_str(CONFIG).unwrap();
    put(&client(&dir, ours.http_address), &config).await.unwrap();
    let z = ZONE;
    let cd = Asked { cd: true, ..PLAIN };
    let notify = Asked { op: OpCode::Notify, ..PLAIN };
    let class_any = Asked { class: DNSClass::ANY, ..PLAIN };
    let questions = [
        (format!("www.{z}."), RecordType::A, PLAIN),
        (format!("www.{z}."), RecordType::A, cd),
        (format!("{z}."), RecordType::SOA, notify),
        (format!("www.{z}."), RecordType::A, class_any),
        ("wWw.Control-Plane.Internal.".to_string(), RecordType::A, PLAIN),
        ("ALIAS.control-plane.internal.".to_string(), RecordType::AAAA, PLAIN),
        (format!("www.{z}."), RecordType::AAAA, PLAIN),
        (format!("www.{z}."), RecordType::MX, PLAIN),
        (format!("www.{z}."), RecordType::ANY, PLAIN),
        (format!("{z}."), RecordType::ANY, PLAIN),
        (format!("{z}."), RecordType::SOA, PLAIN),
        (format!("{z}."), RecordType::NS, PLAIN),
        (format!("alias.{z}."), RecordType::A, PLAIN),
        (format!("alias.{z}."), RecordType::ANY, PLAIN),
        (format!("_nexus._tcp.{z}."), RecordType::SRV, PLAIN),
        (format!("txt.{z}."), RecordType::TXT, PLAIN),
        (format!("ns1.{z}."), RecordType::ANY, PLAIN),
        ("www.example.org.".to_string(), RecordType::A, PLAIN),
    ];
    let mut differences = Vec::new();
    let mut answered = 0;
    for transport in [Transport::Udp, Transport::Tcp] {
        for (name, rtype, asked) in &questions {
            let theirs = ask_as(knot, name, *rtype, *asked, transport).await;
            let ours = ask_as(ours.dns_address, name, *rtype, *asked, transport).await;
            assert!(
                theirs.is_some() && ours.is_some(),
                "{name} {rtype} over {transport:?}: no answer"
            );
            if ours.as_ref().is_some_and(|s| !s.answers.is_empty()) {
                answered += 1;
            }
            if theirs != ours {
                differences.push(format!(
                    "{name} {rtype} over {transport:?}:\n  knot: {theirs:?}\n  ours: {ours:?}"
                ));
            }
        }
    }
    // CHAOS questions about the server itself: the text is each server's
    // own (Knot's hostname, our id), the code and flags must agree.
    let chaos = Asked { class: DNSClass::CH, ..PLAIN };
    for name in ["id.server.", "hostname.bind."] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let theirs = ask_as(knot, name, RecordType::TXT, chaos, transport).await.unwrap();
            let ours =
                ask_as(ours.dns_address, name, RecordType::TXT, chaos, transport).await.unwrap();
            let flags = |s: &Shape| (s.rcode.clone(), s.aa, s.tc, s.answers.len(), s.opt_payload);
            if flags(&theirs) != flags(&ours) {
                differences.push(format!(
                    "CH TXT {name} over {transport:?}:\n  knot: {theirs:?}\n  ours: {ours:?}"
                ));
            }
        }
    }
    // A zone transfer over UDP.
    let theirs = ask(knot, &format!("{z}."), RecordType::AXFR, Transport::Udp).await.unwrap();
    let ours_axfr =
        ask(ours.dns_address, &format!("{z}."), RecordType::AXFR, Transport::Udp).await.unwrap();
    if (theirs.rcode.as_str(), theirs.aa) != (ours_axfr.rcode.as_str(), ours_axfr.aa) {
        differences.push(format!("AXFR over UDP:\n  knot: {theirs:?}\n  ours: {ours_axfr:?}"));
    }
    assert!(differences.is_empty(), "answers differ from Knot's:\n{}", differences.join("\n"));
    assert!(answered >= 20, "positive control: only {answered} answers had records");
}
