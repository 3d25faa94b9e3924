//! Real namespaces, a real bridge, real nftables (as root, as CI runs):
//! hosts reach each other and the outside over IPv6, and each fault stops
//! exactly what it names until it is healed.

use host_network::{Direction, Network, Protocol};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// An echo server on UDP port 7000 inside `host`, answering until the
/// network goes.
fn echo(network: &Network, host: &str) {
    let host = network.host(host).unwrap().clone();
    let socket = network
        .within(&host, move || UdpSocket::bind(SocketAddr::new(host.address.into(), 7000)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buffer) {
            let _ = socket.send_to(&buffer[..n], from);
        }
    });
}

/// Whether `from` (a host, or the outside) gets an answer from `to`'s echo
/// server: three tries, 300 ms each.
fn answers(network: &Network, from: Option<&str>, to: &str) -> bool {
    let target = SocketAddr::new(network.host(to).unwrap().address.into(), 7000);
    let ask = move || {
        let socket = UdpSocket::bind("[::]:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        (0..3).any(|_| {
            let _ = socket.send_to(b"ping", target);
            let mut buffer = [0u8; 16];
            matches!(socket.recv_from(&mut buffer), Ok((4, _)))
        })
    };
    match from {
        Some(from) => network.within(network.host(from).unwrap(), ask).unwrap(),
        None => ask(),
    }
}

/// Of `n` single tries from the outside, how many got an answer.
fn answered_of(network: &Network, to: &str, n: usize) -> usize {
    let target = SocketAddr::new(network.host(to).unwrap().address.into(), 7000);
    let socket = UdpSocket::bind("[::]:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    (0..n)
        .filter(|_| {
            let _ = socket.send_to(b"ping", target);
            let mut buffer = [0u8; 16];
            matches!(socket.recv_from(&mut buffer), Ok((4, _)))
        })
        .count()
}

#[test]
fn hosts_reach_each_other_and_each_fault_stops_what_it_names() {
    let network = Network::create(201, &["a", "b", "c"]).unwrap();
    let (a, b) = (network.host("a").unwrap().clone(), network.host("b").unwrap().clone());
    assert_eq!(a.address.to_string(), "fd00:1122:3344:c901::1");
    assert_eq!(b.address.to_string(), "fd00:1122:3344:c902::1");
    for host in ["a", "b", "c"] {
        echo(&network, host);
    }
    // Everyone reaches everyone, and the outside reaches every host.
    assert!(answers(&network, Some("a"), "b"));
    assert!(answers(&network, Some("b"), "a"));
    assert!(answers(&network, None, "c"));

    // One direction cut: a's packets to b are dropped; b's to a are not,
    // but a's answers to b are, so b hears nothing either; c is untouched.
    let cut = network.cut(&a, &b, Direction::OneWay).unwrap();
    assert!(!answers(&network, Some("a"), "b"));
    assert!(answers(&network, Some("a"), "c"));
    assert!(answers(&network, None, "b"), "the outside still reaches b");
    network.heal(&cut).unwrap();
    assert!(answers(&network, Some("a"), "b"));

    // Both directions, then healed.
    let cut = network.cut(&a, &b, Direction::Both).unwrap();
    assert!(!answers(&network, Some("a"), "b"));
    assert!(!answers(&network, Some("b"), "a"));
    assert!(answers(&network, Some("b"), "c"));
    network.heal(&cut).unwrap();
    assert!(answers(&network, Some("b"), "a"));

    // A filtered port: nothing reaches port 7000 on c, from anywhere.
    let filtered = network.filter_port(network.host("c").unwrap(), Protocol::Udp, 7000).unwrap();
    assert!(!answers(&network, None, "c"));
    assert!(!answers(&network, Some("a"), "c"));
    network.heal(&filtered).unwrap();
    assert!(answers(&network, None, "c"));

    // 100 % loss stops everything; 30 % loses some, not all.
    let lossy = network.drop_share(network.host("c").unwrap(), 100).unwrap();
    assert_eq!(answered_of(&network, "c", 20), 0);
    network.heal(&lossy).unwrap();
    let lossy = network.drop_share(network.host("c").unwrap(), 30).unwrap();
    // Each exchange crosses c's rules twice: about 0.7 * 0.7 = 49 % answered.
    let answered = answered_of(&network, "c", 200);
    assert!((40..=160).contains(&answered), "{answered} of 200 answered at 30% loss");
    network.heal(&lossy).unwrap();
    assert_eq!(answered_of(&network, "c", 20), 20);
}

#[test]
fn dropping_the_network_removes_namespaces_links_and_processes() {
    let network = Network::create(202, &["x", "y"]).unwrap();
    let names: Vec<String> = network.hosts().iter().map(|h| h.netns.clone()).collect();
    let bridge = format!("{}:", network.bridge());
    // A process left running inside a host.
    let mut sleeper = network.command(&network.hosts()[0], "sleep").arg("600").spawn().unwrap();
    let listed = || {
        let out = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(names.iter().all(|n| listed().contains(n.as_str())));
    drop(network);
    let after = listed();
    assert!(names.iter().all(|n| !after.contains(n.as_str())), "{after}");
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "the process inside was killed");
    let links = std::process::Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&bridge), "{bridge} left: {links}");
}
