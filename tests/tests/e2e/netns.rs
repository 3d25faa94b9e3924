//! The stack on hosts of its own (`devstack run --hosts netns`): the
//! database, each DNS server and each Nexus in a network namespace with an
//! IPv6 address from `fd00:1122:3344::/48`, omdb outside reaching them by
//! those addresses only.  Needs root (CI runs as root).

use crate::common::*;
use dns_types::DnsGroup;
use std::net::IpAddr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_on_ipv6_hosts_reaches_ready_and_explain_is_healthy() {
    let ts = TestStack::start_with(2, 1, 2, |o| o.netns_subnet = Some(210)).await;
    let in_network = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => {
            v6.segments()[..3] == [0xfd00, 0x1122, 0x3344] && v6.segments()[3] >> 8 == 210
        }
        IpAddr::V4(_) => false,
    };
    // Every component on its own host, by an IPv6 address of the network.
    let description = ts.stack.description();
    let mut namespaces = std::collections::BTreeSet::new();
    for c in &description.components {
        let netns = c.netns.clone().unwrap_or_else(|| panic!("{} has no namespace", c.name));
        assert!(namespaces.insert(netns), "two components share a host");
        for address in [c.dns_address, c.http_address].into_iter().flatten() {
            assert!(in_network(address.ip()), "{}: {address}", c.name);
        }
    }
    assert_eq!(namespaces.len(), 1 + 3 + 2, "the database, 3 DNS servers and 2 Nexus");
    assert!(ts.stack.db_url.contains("[fd00:1122:3344:d201::1]"), "{}", ts.stack.db_url);

    // Internal DNS registers everything by those addresses (AAAA).
    let resolver = internal_dns::Resolver::new(
        ts.stack.internal_dns_addresses(),
        std::time::Duration::from_secs(2),
    );
    for service in [
        internal_dns::ServiceName::Nexus,
        internal_dns::ServiceName::Postgresql,
        internal_dns::ServiceName::dns_servers_of(DnsGroup::Internal),
    ] {
        let answer = resolver.lookup_service(service, ZONE).await.unwrap();
        assert!(!answer.instances.is_empty(), "{service:?}");
        for instance in &answer.instances {
            let address = instance.socket_addr().unwrap();
            assert!(in_network(address.ip()), "{service:?}: {address}");
        }
    }

    // omdb, from outside every host, finds everything through internal DNS
    // over IPv6: a change with receipts from every server, then explain.
    let args = ["-w", "nexus", "dns", "add", "internal", "v6host", "AAAA", "fd00::99"];
    let (code, out, err) = run_omdb(&ts, &[&args[..], &["--comment", "on v6", "--wait"]].concat());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("served by 2 of 2 internal DNS servers"), "{out}");
    let (code, out, err) = run_omdb(&ts, &["dns", "explain", &format!("v6host.{ZONE}")]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("verdict: healthy"), "{out}");
    assert!(out.contains("answered it on UDP and TCP"), "{out}");
    let (code, out, err) = run_omdb(&ts, &["dns", "status"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("2 of 2 internal DNS servers serve generation"), "{out}");
}

/// Nexus cut off from one DNS server (`devstack fault cut`), which omdb
/// reaches fine from outside: explain names the server and both vantage
/// points (the server is up; the failure lies between Nexus and it), and
/// once healed the server catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nexus_cut_off_from_a_server_is_told_from_a_server_that_is_down() {
    let mut ts = TestStack::start_with(2, 1, 1, |o| o.netns_subnet = Some(211)).await;
    let said = ts.stack.fault(&["cut", "nexus-0", "dns-internal-1"]).unwrap();
    assert_eq!(said, "fault 1: path nexus-0 <-> dns-internal-1 cut");
    assert_eq!(ts.stack.fault(&["list"]).unwrap(), "1: path nexus-0 <-> dns-internal-1 cut");
    let cut = ts.stack.servers(DnsGroup::Internal).nth(1).unwrap().http_address.to_string();

    let version = change(
        &ts.nexus(0),
        DnsGroup::Internal,
        add_change("while cut", "cut1", vec![a("192.0.2.5")]),
    )
    .await;
    propagation_of(&ts.nexus(0), DnsGroup::Internal, version.generation).await;
    let (code, out, err) = run_omdb(&ts, &["dns", "explain", &format!("cut1.{ZONE}")]);
    let verdict = out.lines().next().unwrap_or_default();
    assert!(verdict.starts_with("verdict: propagation: "), "{out}\n{err}");
    assert!(verdict.contains(&cut), "{verdict}");
    assert!(
        verdict.contains(&format!(
            "from here, {cut}'s config API answers (it serves generation {}): the server is up, \
             so the failure lies between",
            version.generation - 1
        )),
        "{verdict}"
    );
    assert_eq!(code, 13, "{out}");

    // Healed: the next activation brings the server current.
    assert_eq!(
        ts.stack.fault(&["heal", "all"]).unwrap(),
        "healed 1: path nexus-0 <-> dns-internal-1 cut"
    );
    activate(&ts.nexus(0), &["dns_propagation_internal"]).await;
    ts.stack.wait_until_converged(std::time::Duration::from_secs(30)).await.unwrap();
    let (code, out, _) = run_omdb(&ts, &["dns", "explain", &format!("cut1.{ZONE}")]);
    assert_eq!(code, 0, "{out}");
}

/// A server's DNS port filtered while its config API answers: the server
/// is up and current, so this is a `wire` finding on its DNS address, not a
/// dead server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_dns_port_is_a_wire_finding_not_a_dead_server() {
    let mut ts = TestStack::start_with(1, 2, 1, |o| o.netns_subnet = Some(212)).await;
    let server = ts.stack.servers(DnsGroup::External).nth(1).unwrap();
    let (dns, api) = (server.dns_address.to_string(), server.http_address.to_string());
    ts.stack.fault(&["filter", "dns-external-1", "udp", "5353"]).unwrap();
    ts.stack.fault(&["filter", "dns-external-1", "tcp", "5353"]).unwrap();
    let (code, out, err) = run_omdb(&ts, &["dns", "explain", "api.example.test"]);
    let verdict = out.lines().next().unwrap_or_default();
    assert!(verdict.starts_with("verdict: wire: "), "{out}\n{err}");
    assert!(verdict.contains(&dns), "{verdict}");
    assert!(!out.contains("[propagation]"), "the server is current: {out}");
    assert!(out.contains(&api), "{out}");
    assert_eq!(code, 15, "{out}");
}
