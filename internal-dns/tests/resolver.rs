//! The resolver and the wire check against real DNS servers over UDP (and
//! TCP when truncated), over IPv4 and IPv6, with a server that hangs and a
//! forged reply that arrives first.

use chrono::Utc;
use dns_server::{Config, RunningServer};
use dns_types::{DnsConfig, DnsConfigZone, DnsRecord, SrvRecord};
use internal_dns::{ResolveError, Resolver, ServiceName};
use std::time::Duration;
use test_support::TokenDir;

const ZONE: &str = "control-plane.internal";

/// A server and the directory holding its storage, dropped in that order:
/// a server still running when its directory goes would write its history
/// into a directory nobody removes.
struct TestServer {
    server: RunningServer,
    _dir: TokenDir,
}

impl std::ops::Deref for TestServer {
    type Target = RunningServer;
    fn deref(&self) -> &RunningServer {
        &self.server
    }
}

async fn server(names: Vec<(String, Vec<DnsRecord>)>) -> TestServer {
    server_at("127.0.0.1:0".parse().unwrap(), names).await
}

async fn server_at(
    dns_address: std::net::SocketAddr,
    names: Vec<(String, Vec<DnsRecord>)>,
) -> TestServer {
    let dir = TokenDir::new();
    let mut config = Config::loopback(dir.path().join("storage"), dir.token_file());
    config.dns_address = dns_address;
    let server = RunningServer::start(&config).await.unwrap();
    let config = DnsConfig {
        generation: 1,
        time_created: Utc::now(),
        creator: "t".into(),
        comment: "t".into(),
        zones: vec![DnsConfigZone {
            zone_name: ZONE.into(),
            ttl_seconds: 60,
            names: names.into_iter().collect(),
        }],
    };
    server.apply(config).await.unwrap();
    TestServer { server, _dir: dir }
}

fn srv(port: u16, host: &str) -> DnsRecord {
    DnsRecord::Srv(SrvRecord { prio: 0, weight: 0, port, target: format!("{host}.{ZONE}") })
}

#[tokio::test]
async fn finds_service_instances_with_their_addresses() {
    // 100 instances: too many for one UDP answer with additionals, so the
    // resolver has to fall back to TCP.
    let mut names = vec![(
        ServiceName::Nexus.label().to_string(),
        (0..100).map(|i| srv(12000 + i, &format!("h{i}.host"))).collect::<Vec<_>>(),
    )];
    for i in 0..100 {
        names.push((
            format!("h{i}.host"),
            vec![DnsRecord::Aaaa(format!("fd00::{}", i + 1).parse().unwrap())],
        ));
    }
    names.push(("solo.host".into(), vec![DnsRecord::A("127.0.0.9".parse().unwrap())]));
    names.push((ServiceName::Postgresql.label().into(), vec![srv(5432, "solo.host")]));
    let s = server(names).await;

    let resolver = Resolver::new(vec![s.dns_address()], Duration::from_secs(2));
    let answer = resolver.lookup_service(ServiceName::Nexus, ZONE).await.unwrap();
    assert_eq!(answer.server, s.dns_address());
    assert_eq!(answer.instances.len(), 100);
    let first = &answer.instances[0];
    assert_eq!((first.target.as_str(), first.port), ("h0.host.control-plane.internal", 12000));
    assert_eq!(first.socket_addr().unwrap().to_string(), "[fd00::1]:12000");

    let db = resolver.lookup_service(ServiceName::Postgresql, ZONE).await.unwrap();
    assert_eq!(db.instances[0].socket_addr().unwrap().to_string(), "127.0.0.9:5432");

    // A service nobody registered: an empty answer, not an error.
    let none = resolver.lookup_service(ServiceName::ExternalDns, ZONE).await.unwrap();
    assert!(none.instances.is_empty());
}

#[tokio::test]
async fn skips_dead_servers_and_names_them_when_all_fail() {
    let s = server(vec![
        (ServiceName::Nexus.label().into(), vec![srv(1, "a.host")]),
        ("a.host".into(), vec![DnsRecord::A("127.0.0.1".parse().unwrap())]),
    ])
    .await;
    // Nothing listens on the first address: its query times out.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let resolver = Resolver::new(vec![dead_addr, s.dns_address()], Duration::from_millis(300));
    let answer = resolver.lookup_service(ServiceName::Nexus, ZONE).await.unwrap();
    assert_eq!(answer.server, s.dns_address());

    let resolver = Resolver::new(vec![dead_addr], Duration::from_millis(300));
    let error = resolver.lookup_service(ServiceName::Nexus, ZONE).await.unwrap_err();
    assert!(matches!(error, ResolveError::AllFailed { .. }));
    assert!(error.to_string().contains(&dead_addr.to_string()), "{error}");
}

fn nexus_names() -> Vec<(String, Vec<DnsRecord>)> {
    vec![
        (ServiceName::Nexus.label().into(), vec![srv(12221, "a.host")]),
        ("a.host".into(), vec![DnsRecord::Aaaa("fd00::1".parse().unwrap())]),
    ]
}

/// A server that hangs (SIGSTOP: it keeps its sockets and answers nothing)
/// costs one timeout: the next server answers, and the hung one is named.
#[tokio::test]
async fn a_hung_server_costs_one_timeout_and_is_named() {
    let hung_dir = TokenDir::new();
    let binary = test_support::process::binary("dns-server").unwrap();
    let hung =
        test_support::process::DnsServerProcess::start_in(&binary, &hung_dir, &[]).await.unwrap();
    hung.process.freeze().unwrap();
    let a = server(nexus_names()).await;
    let b = server(nexus_names()).await;
    let timeout = Duration::from_millis(500);
    let resolver = Resolver::new(vec![hung.dns_address, a.dns_address(), b.dns_address()], timeout);
    let started = std::time::Instant::now();
    let answer = resolver.lookup_service(ServiceName::Nexus, ZONE).await.unwrap();
    let took = started.elapsed();
    assert_eq!(answer.server, a.dns_address());
    assert_eq!(answer.instances.len(), 1);
    assert_eq!(answer.unanswered.len(), 1, "{:?}", answer.unanswered);
    assert_eq!(answer.unanswered[0].0, hung.dns_address);
    // One timeout for the hung server, then a prompt answer (generous
    // bound: a loaded 2-core machine).
    assert!(took < timeout * 3, "took {took:?}");
    hung.process.thaw().unwrap();
}

/// Every lookup asks the server: an answer it gave before is never served
/// again (hickory's cache is sized 0; its cache evicts lazily, so this
/// checks that nothing stale is read back), and a server that is gone or
/// frozen is never named as the one that answered.  Written while looking
/// for the cause of a once-seen failure of
/// `propagation::a_hung_internal_dns_server_costs_one_timeout_and_is_named`
/// (the list said to come from the frozen server); this is not it.
#[tokio::test]
async fn an_earlier_answer_is_never_served_again_once_the_server_is_gone() {
    let hung_dir = TokenDir::new();
    let binary = test_support::process::binary("dns-server").unwrap();
    let server =
        test_support::process::DnsServerProcess::start_in(&binary, &hung_dir, &[]).await.unwrap();
    let zone = ServiceName::Nexus.srv_name(ZONE);
    // An empty server (it refuses every question: an answer all the same).
    let resolver = Resolver::new(vec![server.dns_address], Duration::from_millis(500));
    let a = server_at("127.0.0.1:0".parse().unwrap(), nexus_names()).await;
    let resolver_a = Resolver::new(vec![a.dns_address()], Duration::from_millis(500));
    for _ in 0..3 {
        let answer = resolver_a.lookup_srv(&zone).await.unwrap();
        assert_eq!(answer.server, a.dns_address());
    }
    let address = a.dns_address();
    drop(a);
    for attempt in 0..3 {
        let result = resolver_a.lookup_srv(&zone).await;
        assert!(
            result.is_err(),
            "attempt {attempt}: {address} is gone, yet the lookup answered: {result:?}"
        );
    }
    // And a server that hangs after answering.
    let _ = resolver.lookup_srv(&zone).await;
    server.process.freeze().unwrap();
    let result = resolver.lookup_srv(&zone).await;
    server.process.thaw().unwrap();
    assert!(
        matches!(result, Err(ResolveError::AllFailed { .. })),
        "a frozen server answered: {result:?}"
    );
}

/// A forged reply (another id) that arrives before the real one is ignored,
/// by the resolver and by the wire check.
#[tokio::test]
async fn a_foreign_reply_arriving_first_does_not_fail_the_lookup() {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::{RData, Record, rdata};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    // Answers every query twice: first with the id off by one (a forged or
    // late reply), then with the right id.
    let responder = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else { return };
            let Ok(query) = Message::from_vec(&buf[..len]) else { continue };
            let mut reply =
                Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
            reply.metadata.authoritative = true;
            for q in &query.queries {
                reply.add_query(q.clone());
                if q.query_type() == hickory_proto::rr::RecordType::A {
                    reply.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(rdata::A("192.0.2.7".parse().unwrap())),
                    ));
                }
            }
            let mut forged = reply.clone();
            forged.metadata.id = query.metadata.id.wrapping_add(1);
            if let Some(a) = forged.answers.first_mut() {
                a.data = RData::A(rdata::A("203.0.113.66".parse().unwrap()));
            }
            let _ = socket.send_to(&forged.to_vec().unwrap(), from).await;
            let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
        }
    });
    let resolver = Resolver::new(vec![address], Duration::from_secs(2));
    let (server, addresses) = resolver.lookup_addresses("x.control-plane.internal").await.unwrap();
    assert_eq!(server, address);
    assert_eq!(addresses, vec!["192.0.2.7".parse::<std::net::IpAddr>().unwrap()]);
    let answer = internal_dns::wire::ask(
        address,
        "x.control-plane.internal",
        "A",
        internal_dns::wire::Transport::Udp,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(answer.answers[0].record, DnsRecord::A("192.0.2.7".parse().unwrap()));
    responder.abort();
}

/// 50 DNS servers registered: the SRV answer with their addresses does
/// not fit in 1232 bytes of UDP; the lookup completes it over TCP.
#[tokio::test]
async fn a_truncated_answer_of_fifty_servers_is_completed_over_tcp() {
    let mut names = vec![(
        ServiceName::InternalDns.label().to_string(),
        (0..50).map(|i| srv(5353, &format!("dns{i}.host"))).collect::<Vec<_>>(),
    )];
    for i in 0..50 {
        names.push((
            format!("dns{i}.host"),
            vec![DnsRecord::Aaaa(format!("fd00:1122:3344:101::{:x}", i + 1).parse().unwrap())],
        ));
    }
    let s = server(names).await;
    // Over UDP alone it is truncated (what the wire check shows as it is).
    let udp = internal_dns::wire::ask(
        s.dns_address(),
        &ServiceName::InternalDns.srv_name(ZONE),
        "SRV",
        internal_dns::wire::Transport::Udp,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert!(udp.truncated, "{udp:?}");
    let resolver = Resolver::new(vec![s.dns_address()], Duration::from_secs(2));
    let answer = resolver.lookup_service(ServiceName::InternalDns, ZONE).await.unwrap();
    assert_eq!(answer.instances.len(), 50);
    assert!(answer.instances.iter().all(|i| i.addresses.len() == 1), "{answer:?}");
}

/// Everything over IPv6 as over IPv4: a server on [::1], asked by the
/// resolver and by the wire check over UDP and TCP.
#[tokio::test]
async fn over_ipv6_as_over_ipv4() {
    let s = server_at("[::1]:0".parse().unwrap(), nexus_names()).await;
    assert!(s.dns_address().is_ipv6());
    let resolver = Resolver::new(vec![s.dns_address()], Duration::from_secs(2));
    let answer = resolver.lookup_service(ServiceName::Nexus, ZONE).await.unwrap();
    assert_eq!(answer.instances[0].socket_addr().unwrap().to_string(), "[fd00::1]:12221");
    for transport in [internal_dns::wire::Transport::Udp, internal_dns::wire::Transport::Tcp] {
        let answer = internal_dns::wire::ask(
            s.dns_address(),
            ZONE,
            "SOA",
            transport,
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert_eq!((answer.rcode.as_str(), answer.soa_serial), ("NOERROR", Some(1)), "{transport}");
    }
}
