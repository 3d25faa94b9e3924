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

/// Both Nexus cut off from one external DNS server (`devstack fault cut`),
/// which omdb reaches fine from outside: explain names the server and both
/// vantage points (the server is up and answers DNS; the failure lies
/// between each Nexus and it), as docs/debugging-dns.md shows; once healed
/// the server catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nexus_cut_off_from_a_server_is_told_from_a_server_that_is_down() {
    let mut ts = TestStack::start_with(1, 2, 2, |o| o.netns_subnet = Some(211)).await;
    let said = ts.stack.fault(&["cut", "nexus-0", "dns-external-1"]).unwrap();
    assert_eq!(said, "fault 1: path nexus-0 <-> dns-external-1 cut");
    let server = ts.stack.servers(DnsGroup::External).nth(1).unwrap();
    let (cut, dns) = (server.http_address.to_string(), server.dns_address);

    // One Nexus cut off: the other brings the server the change, and the
    // failed push is a note, superseded, not the verdict.
    let shop = change(
        &ts.nexus(0),
        DnsGroup::External,
        add_change("shop opens", "shop", vec![a("192.0.2.10")]),
    )
    .await;
    for n in 0..2 {
        propagation_of(&ts.nexus(n), DnsGroup::External, shop.generation).await;
    }
    let (code, out, err) = run_omdb(&ts, &["dns", "explain", "shop.example.test"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("superseded: ") && out.contains(&cut), "{out}");

    // Both cut off.
    ts.stack.fault(&["cut", "nexus-1", "dns-external-1"]).unwrap();
    assert_eq!(
        ts.stack.fault(&["list"]).unwrap(),
        "1: path nexus-0 <-> dns-external-1 cut; 2: path nexus-1 <-> dns-external-1 cut"
    );
    let version = change(
        &ts.nexus(0),
        DnsGroup::External,
        add_change("cart opens", "cart", vec![a("192.0.2.20")]),
    )
    .await;
    for n in 0..2 {
        propagation_of(&ts.nexus(n), DnsGroup::External, version.generation).await;
    }
    let (code, out, err) = run_omdb(&ts, &["dns", "explain", "cart.example.test"]);
    let verdict = out.lines().next().unwrap_or_default();
    assert!(verdict.starts_with("verdict: propagation: "), "{out}\n{err}");
    assert!(verdict.contains(&cut), "{verdict}");
    // Both vantage points: what each Nexus met, and what answers from here.
    assert!(
        verdict.contains(&format!(
            "from here, {cut}'s config API answers (it serves generation {}) and so does its DNS \
             ({dns} over UDP and TCP): the server is up, so the failure lies between",
            version.generation - 1
        )),
        "{verdict}"
    );
    // The verdict, and one finding per Nexus.
    assert_eq!(out.matches("the failure lies between").count(), 3, "{out}");
    assert_eq!(code, 13, "{out}");
    // What the connection attempt ran into (a connect timeout, or no
    // complete answer in time), and which push is in flight and why (the
    // last change's, let go once the other server answered, or an earlier
    // one's, still running) race; the rest is what the doc shows.
    let attempt = regex::Regex::new(r"failed at (\S+): .*?; from here").unwrap();
    let in_flight = regex::Regex::new(
        r"no answer yet to the push of generation \d+ begun at (\S+) \(.*? meanwhile\)",
    )
    .unwrap();
    let shown = |line: &str| {
        let line = attempt.replace(line, "failed at $1: <ERROR>; from here");
        in_flight
            .replace(&line, "no answer yet to the push of generation <G> begun at $1 (<WHY>)")
            .into_owned()
    };
    doc_line_matches("explain:partition", "verdict: ", &shown(verdict), shown);

    // Healed: the next activation brings the server current.
    assert_eq!(
        ts.stack.fault(&["heal", "all"]).unwrap(),
        "healed 1: path nexus-0 <-> dns-external-1 cut; 2: path nexus-1 <-> dns-external-1 cut"
    );
    activate(&ts.nexus(0), &["dns_propagation_external"]).await;
    ts.stack.wait_until_converged(std::time::Duration::from_secs(30)).await.unwrap();
    let (code, out, _) = run_omdb(&ts, &["dns", "explain", "cart.example.test"]);
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

/// A third of a server's packets dropped (both ways): never `healthy`.
/// The loss probe's identical questions are answered some and not others,
/// and explain says how many were lost: what every client must retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_loss_on_a_servers_link_is_never_healthy() {
    let mut ts = TestStack::start_with(1, 2, 1, |o| o.netns_subnet = Some(213)).await;
    let server = ts.stack.servers(DnsGroup::External).nth(1).unwrap();
    let dns = server.dns_address.to_string();
    assert_eq!(
        ts.stack.fault(&["drop", "dns-external-1", "30"]).unwrap(),
        "fault 1: 30% of dns-external-1's packets dropped"
    );
    let (code, out, err) = run_omdb(&ts, &["dns", "explain", "api.example.test"]);
    let verdict = out.lines().next().unwrap_or_default();
    assert!(
        verdict.starts_with("verdict: wire: ") || verdict.starts_with("verdict: propagation: "),
        "{out}\n{err}"
    );
    assert!([13, 15].contains(&code), "{out}");
    let loss = out
        .lines()
        .find(|l| l.contains(&format!("[wire] DNS at {dns}")) && l.contains("loses packets"))
        .unwrap_or_else(|| panic!("no loss finding for {dns}:\n{out}"));
    assert!(loss.contains("of 16 identical SOA questions sent over UDP"), "{loss}");
    ts.stack.fault(&["heal", "all"]).unwrap();
    let (code, out, _) = run_omdb(&ts, &["dns", "explain", "api.example.test"]);
    assert_eq!(code, 0, "healed: {out}");
    assert!(
        out.contains(
            "loss probe: 16 of 16 identical UDP questions answered at each of 2 DNS addresses"
        ),
        "{out}"
    );
}

/// A hung server on a host of its own, asked about by its DNS address
/// (which it cannot report while hung): its registration names it, so the
/// verdict is `propagation` naming its config API, not `server-list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_asked_by_its_dns_address_is_named_from_its_registration() {
    let ts = TestStack::start_with(1, 2, 1, |o| o.netns_subnet = Some(214)).await;
    let server = ts.stack.servers(DnsGroup::External).nth(1).unwrap();
    let (api, dns) = (server.http_address.to_string(), server.dns_address.to_string());
    assert!(dns.starts_with("[fd00:1122:3344:"), "{dns}");
    server.freeze().unwrap();
    let version = change(
        &ts.nexus(0),
        DnsGroup::External,
        add_change("cart opens", "cart", vec![a("192.0.2.20")]),
    )
    .await;
    propagation_of(&ts.nexus(0), DnsGroup::External, version.generation).await;
    let (code, out, err) =
        run_omdb(&ts, &["dns", "explain", "cart.example.test", "--server", &dns]);
    server.thaw().unwrap();
    let verdict = out.lines().next().unwrap_or_default();
    assert!(verdict.starts_with("verdict: propagation: "), "{out}\n{err}");
    assert!(verdict.contains(&api), "{verdict}");
    assert!(!out.contains("[server-list]"), "{out}");
    assert_eq!(code, 13, "{out}");
    // What did not answer in time is named by both of its addresses.
    assert!(out.contains(&format!("config API {api}; DNS {dns} over UDP and TCP")), "{out}");
}
