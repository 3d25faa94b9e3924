//! A fleet of external DNS servers in one group (default 50, loopback,
//! devstack's shape otherwise: 3 internal DNS servers, 2 Nexus):
//!
//! 1. **A one-name change until every server answers it over UDP**: from
//!    the moment `POST /dns/external/changes` returns until the last of
//!    the servers answers the new name (each server asked every 2 ms over
//!    its own socket, all at once), `FLEET_CHANGES` changes (default 30):
//!    p50, p99, max.
//! 2. The same with one server hung (SIGSTOP): the time until the *other*
//!    servers all answer, which the hung one must not delay.
//! 3. **`omdb dns status external` and `omdb dns explain NAME`** wall time
//!    (the release binary, as an operator runs it), `FLEET_RUNS` runs each
//!    (default 11), healthy and with the hung server: median and range.
//!
//! Run: `cargo bench -p tests --bench fleet` (`FLEET_SERVERS` sets the
//! fleet's size; figures in docs/PERFORMANCE.md).

use devstack::{Stack, StackOptions};
use dns_types::{DnsChange, DnsGroup, DnsRecord, NameRecords};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn quantile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Asks `name` A of `address` over UDP every 2 ms until it answers with a
/// record.  One socket and one encoded query per server: 50 pollers at
/// 500 questions a second each must cost the servers' machine little, or
/// they would measure themselves.
async fn until_answered(address: SocketAddr, name: String) -> Instant {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use hickory_proto::serialize::binary::BinEncodable;
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(format!("{name}.")).unwrap(), RecordType::A));
    let bytes = query.to_bytes().unwrap();
    let socket =
        tokio::net::UdpSocket::bind(if address.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })
            .await
            .unwrap();
    socket.connect(address).await.unwrap();
    let mut reply = vec![0u8; 1500];
    loop {
        socket.send(&bytes).await.unwrap();
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(2), socket.recv(&mut reply)).await
            && let Ok(message) = Message::from_vec(&reply[..n])
            && message.metadata.id == query.metadata.id
            && !message.answers.is_empty()
        {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `count` one-name changes, each timed from its 200 until every server of
/// `servers` answers it.
async fn changes(
    stack: &Stack,
    servers: &[SocketAddr],
    prefix: &str,
    count: usize,
) -> Vec<Duration> {
    let nexus = stack.nexus[0].client();
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("{prefix}{i}");
        let change = DnsChange {
            idempotency_key: None,
            comment: format!("fleet bench {prefix} {i}"),
            add: vec![NameRecords {
                name: name.clone(),
                records: vec![DnsRecord::A("192.0.2.1".parse().unwrap())],
            }],
            remove: vec![],
        };
        nexus.dns_change().group(DnsGroup::External).body(change).send().await.unwrap();
        let committed = Instant::now();
        let fqdn = format!("{name}.example.test");
        let answered = futures::future::join_all(
            servers.iter().map(|a| until_answered(*a, fqdn.clone())).collect::<Vec<_>>(),
        );
        let last = tokio::time::timeout(Duration::from_secs(60), answered)
            .await
            .expect("every server answers within 60 s")
            .into_iter()
            .max()
            .unwrap();
        samples.push(last - committed);
    }
    samples
}

/// Wall time of `omdb ARGS`, `runs` times; the exit statuses seen.
fn omdb(stack: &Stack, args: &[&str], runs: usize) -> (Vec<Duration>, Vec<i32>) {
    let binary = test_support::process::binary("omdb").unwrap();
    let dns = stack.internal_dns_addresses()[0].to_string();
    let mut times = Vec::new();
    let mut codes = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let output = std::process::Command::new(&binary)
            .args(args)
            .env("OMDB_DNS_SERVER", &dns)
            .env_remove("OMDB_NEXUS_URL")
            .env_remove("OMDB_DB_URL")
            .output()
            .unwrap();
        times.push(started.elapsed());
        codes.push(output.status.code().unwrap_or(-1));
    }
    codes.sort();
    codes.dedup();
    (times, codes)
}

fn report_changes(what: &str, samples: &[Duration]) {
    println!(
        "{what}: {} changes: p50 {}, p99 {}, max {}",
        samples.len(),
        ms(quantile(samples, 0.5)),
        ms(quantile(samples, 0.99)),
        ms(quantile(samples, 1.0))
    );
}

fn report_omdb(what: &str, (times, codes): (Vec<Duration>, Vec<i32>)) {
    println!(
        "{what}: {} runs: median {}, min {}, max {} (exit {codes:?})",
        times.len(),
        ms(quantile(&times, 0.5)),
        ms(quantile(&times, 0.0)),
        ms(quantile(&times, 1.0))
    );
}

#[tokio::main]
async fn main() {
    let size = env_or("FLEET_SERVERS", 50);
    let count = env_or("FLEET_CHANGES", 30);
    let runs = env_or("FLEET_RUNS", 11);
    let dir = tempfile::tempdir().unwrap();
    let mut options = StackOptions::new(dir.path().to_path_buf());
    options.external_dns_servers = size;
    let started = Instant::now();
    let stack = Stack::start(options).await.unwrap();
    println!("{size} external DNS servers, 3 internal, 2 Nexus: ready in {:.1} s", {
        started.elapsed().as_secs_f64()
    });
    let servers: Vec<SocketAddr> =
        stack.servers(DnsGroup::External).map(|s| s.dns_address).collect();
    assert_eq!(servers.len(), size);

    // A warm-up change, not counted (first connections, first diff).
    changes(&stack, &servers, "warm", 1).await;
    let healthy = changes(&stack, &servers, "fleet", count).await;
    report_changes(&format!("one-name change until all {size} answer over UDP"), &healthy);
    let name = "fleet0.example.test";
    report_omdb(
        "omdb dns status external, healthy",
        omdb(&stack, &["dns", "status", "external"], runs),
    );
    report_omdb(
        &format!("omdb dns explain {name}, healthy"),
        omdb(&stack, &["dns", "explain", name], runs),
    );

    // One server hung: the others must not wait for it.
    let hung = stack.servers(DnsGroup::External).last().unwrap();
    hung.freeze().unwrap();
    let others: Vec<SocketAddr> =
        servers.iter().copied().filter(|a| *a != hung.dns_address).collect();
    let with_hung = changes(&stack, &others, "hung", count).await;
    report_changes(
        &format!("one server hung: a one-name change until the other {} answer", size - 1),
        &with_hung,
    );
    let name = "hung0.example.test";
    report_omdb(
        "omdb dns status external, one server hung",
        omdb(&stack, &["dns", "status", "external"], runs.min(5)),
    );
    report_omdb(
        &format!("omdb dns explain {name}, one server hung"),
        omdb(&stack, &["dns", "explain", name], runs.min(5)),
    );
    hung.thaw().unwrap();
}
