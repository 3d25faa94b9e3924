//! The resolver against a real DNS server over UDP (and TCP when truncated).

use chrono::Utc;
use dns_server::{Config, RunningServer};
use dns_types::{DnsConfig, DnsConfigZone, DnsRecord, SrvRecord};
use internal_dns::{ResolveError, Resolver, ServiceName};
use std::time::Duration;
use test_support::TokenDir;

const ZONE: &str = "control-plane.internal";

async fn server(names: Vec<(String, Vec<DnsRecord>)>) -> (RunningServer, TokenDir) {
    let dir = TokenDir::new();
    let config = Config::loopback(dir.path().join("storage"), dir.token_file());
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
    (server, dir)
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
    let (s, _dir) = server(names).await;

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
    let (s, _dir) = server(vec![
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
