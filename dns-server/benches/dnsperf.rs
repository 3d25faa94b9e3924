//! DNS server throughput against Knot DNS, measured with dnsperf on loopback,
//! plus the time to apply a 100,000-name config while queries keep coming.
//!
//! Needs `dnsperf`, `knotd` and `nsd` (Debian packages `dnsperf`, `knot`, `nsd`).
//! Run: `cargo bench -p dns-server --bench dnsperf` (figures are recorded in
//! docs/PERFORMANCE.md).  `DNSPERF_SECONDS` sets each run's length
//! (default 10); `DNSPERF_SIZES` the zone sizes (default `1000,100000`).
//!
//! `DNSPERF_MODE=axfr` measures instead zone transfers beside slow readers
//! (`AXFR_SIZES`, default `100000,1000000`; see [`axfr`]).
//!
//! `DNSPERF_MODE=cpu` measures instead CPU time per answered query, ours
//! against Knot (one worker, and one per core) and a do-nothing responder
//! (the floor on this machine), three alternating rounds (see [`cpu`]).
//!
//! `DNSPERF_MODE=metrics` measures instead what Prometheus scraping costs:
//! our server alone with 1,000 names, dnsperf runs alternating between no
//! scraping and a scrape of `/metrics` every 100 ms (150 times Prometheus's
//! default rate), three of each, medians printed.
//!
//! For each zone size (1,000 and 100,000 names, half AAAA, half SRV), the
//! same query mix (40% AAAA that exist, 30% SRV that exist, 15% NXDOMAIN,
//! 15% NODATA) is sent to our `dns-server` and to `knotd` serving the same
//! zone, one after the other, in one run, over UDP and then over TCP
//! (`dnsperf -m tcp`).  Then a config of the same size is applied to our
//! server while dnsperf runs, and dnsperf's lost queries and response codes
//! during it are printed.

mod cpu;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::TokenDir;
use test_support::process::{ChildProcess, DnsServerProcess, rss_kib};

const ZONE: &str = "control-plane.internal";

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn name(i: usize) -> String {
    if i.is_multiple_of(2) { format!("host{i}.host") } else { format!("_svc{i}._tcp") }
}

fn config_json(names: usize, generation: u64) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for i in 0..names {
        let records = if i.is_multiple_of(2) {
            serde_json::json!([{"type": "AAAA", "data": format!("fd00::{:x}:{:x}", i >> 16, i & 0xffff)}])
        } else {
            serde_json::json!([{"type": "SRV", "data": {"prio": 0, "weight": 0, "port": 12221,
                "target": format!("host{}.host.{ZONE}", i - 1)}}])
        };
        map.insert(name(i), records);
    }
    serde_json::json!({
        "generation": generation, "time_created": "2026-11-24T00:00:00Z",
        "creator": "bench", "comment": "bench",
        "zones": [{"zone_name": ZONE, "ttl_seconds": 60, "names": map}]
    })
}

fn zone_file(names: usize) -> String {
    let mut out = format!(
        "$ORIGIN {ZONE}.\n$TTL 60\n@ SOA ns.{ZONE}. admin.{ZONE}. 1 3600 600 86400 60\n@ NS ns.{ZONE}.\nns AAAA fd00::53\n"
    );
    for i in 0..names {
        if i.is_multiple_of(2) {
            out.push_str(&format!("{} AAAA fd00::{:x}:{:x}\n", name(i), i >> 16, i & 0xffff));
        } else {
            out.push_str(&format!("{} SRV 0 0 12221 host{}.host.{ZONE}.\n", name(i), i - 1));
        }
    }
    out
}

fn query_file(names: usize) -> String {
    let mut out = String::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for q in 0..100_000usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x as usize) % names;
        let even = i & !1;
        let odd = (i | 1).min(names - 1);
        match q % 20 {
            0..=7 => out.push_str(&format!("{}.{ZONE} AAAA\n", name(even))),
            8..=13 => out.push_str(&format!("{}.{ZONE} SRV\n", name(odd))),
            14..=16 => out.push_str(&format!("missing{i}.host.{ZONE} AAAA\n")),
            _ => out.push_str(&format!("{}.{ZONE} A\n", name(even))),
        }
    }
    out
}

fn dnsperf(port: u16, queries: &Path, seconds: u64) -> (f64, String) {
    let (qps, lost, _) = dnsperf_over(port, queries, seconds, "udp");
    (qps, lost)
}

/// dnsperf over `mode` (`udp` or `tcp`): queries per second, its "Queries
/// lost" line and its "Response codes" line.
fn dnsperf_over(port: u16, queries: &Path, seconds: u64, mode: &str) -> (f64, String, String) {
    let output = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-l", &seconds.to_string()])
        .args(["-c", "8", "-q", "200", "-T", "1", "-t", "2", "-m", mode, "-d"])
        .arg(queries)
        .output()
        .expect("running dnsperf (apt-get install -y dnsperf)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let codes =
        text.lines().find(|l| l.contains("Response codes")).unwrap_or("").trim().to_string();
    let qps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries per second:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no result from dnsperf:\n{text}"));
    let lost = text.lines().find(|l| l.contains("Queries lost")).unwrap_or("").trim().to_string();
    (qps, lost, codes)
}

/// dnsperf over UDP against `port` while `pid`'s resident memory is read
/// every 50 ms: queries per second, its "Queries lost" line, the most
/// memory seen resident under the load.
fn dnsperf_rss(pid: u32, port: u16, queries: &Path, seconds: u64) -> (f64, String, u64) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                most = most.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        })
    };
    let (qps, lost) = dnsperf(port, queries, seconds);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    (qps, lost, sampler.join().unwrap())
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn start_ours(dir: &Path, token_file: &Path) -> (ChildProcess, SocketAddr, SocketAddr) {
    start_ours_from(Path::new(env!("CARGO_BIN_EXE_dns-server")), "ours", dir, token_file).await
}

/// `binary` (ours, or an earlier build of it) serving from `dir/name`.
async fn start_ours_from(
    binary: &Path,
    name: &str,
    dir: &Path,
    token_file: &Path,
) -> (ChildProcess, SocketAddr, SocketAddr) {
    let (storage, log) = (dir.join(name), dir.join(format!("{name}.log")));
    let any = "127.0.0.1:0";
    let server =
        DnsServerProcess::start(binary, any, any, &storage, token_file, &log).await.unwrap();
    (server.process, server.dns_address, server.http_address)
}

/// A directory for a peer server holding the zone as `zone.zone`, and a
/// free port for it.
fn peer_dir(dir: &Path, peer: &str, names: usize) -> (std::path::PathBuf, u16) {
    let path = dir.join(peer);
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("zone.zone"), zone_file(names)).unwrap();
    (path, free_port())
}

/// knotd serving the bench zone on a free port, with `workers` UDP and
/// TCP workers (default: Knot's, one per core).
fn start_knot(dir: &Path, names: usize, workers: Option<usize>) -> (Process, u16) {
    let peer = workers.map(|w| format!("knot-{w}")).unwrap_or("knot".into());
    let (knot, port) = peer_dir(dir, &peer, names);
    let conf = knot.join("knot.conf");
    let workers = workers
        .map(|w| format!("    udp-workers: {w}\n    tcp-workers: {w}\n"))
        .unwrap_or_default();
    std::fs::write(
        &conf,
        format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n{workers}\
             database:\n    storage: {d}\n\
             template:\n  - id: default\n    storage: {d}\n    semantic-checks: off\n    zonefile-sync: -1\n    journal-content: none\n\
             acl:\n  - id: transfer\n    address: 127.0.0.1\n    action: transfer\n\
             zone:\n  - domain: {ZONE}\n    file: zone.zone\n    acl: transfer\n",
            d = knot.display()
        ),
    )
    .unwrap();
    let child = Command::new("knotd")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(knot.join("knotd.log")).unwrap())
        .spawn()
        .expect("running knotd (apt-get install -y knot)");
    let process = Process(child);
    wait_for_zone(port, &knot.join("knotd.log"));
    (process, port)
}

/// Waits until a server on `port` answers the zone's SOA (its log at
/// `log` says why when it does not).
fn wait_for_zone(port: u16, log: &Path) {
    wait_for_port(port);
    // Wait until the zone is loaded: the apex SOA answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("dig")
            .args([
                "+short",
                "+time=1",
                "+tries=1",
                "-p",
                &port.to_string(),
                "@127.0.0.1",
                ZONE,
                "SOA",
            ])
            .output()
            .unwrap();
        if !out.stdout.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not load the zone; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// NSD 4 serving the same zone on a free port (`nsd -d`, no control
/// socket, no zone database, two servers like Knot's two UDP workers here).
/// Response rate limiting is off: Debian's NSD limits identical answers to
/// 200 per second per client network, which turns a benchmark from one
/// address into dropped queries.  Everything it writes goes in its own
/// directory (`xfrdir` too: it is killed, so it cannot remove a transfer
/// directory of its own in /tmp).
fn start_nsd(dir: &Path, names: usize) -> (Process, u16) {
    let (nsd, port) = peer_dir(dir, "nsd", names);
    let conf = nsd.join("nsd.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n    ip-address: 127.0.0.1@{port}\n    username: \"\"\n    zonesdir: \"{d}\"\n\
             \x20   pidfile: \"{d}/nsd.pid\"\n    database: \"\"\n    xfrdfile: \"{d}/xfrd.state\"\n\
             \x20   zonelistfile: \"{d}/zone.list\"\n    server-count: 2\n\
             \x20   xfrdir: \"{d}\"\n\
             \x20   rrl-ratelimit: 0\n    rrl-whitelist-ratelimit: 0\n\
             remote-control:\n    control-enable: no\n\
             zone:\n    name: {ZONE}\n    zonefile: zone.zone\n",
            d = nsd.display()
        ),
    )
    .unwrap();
    let log = nsd.join("nsd.log");
    let child = Command::new("nsd")
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("running nsd (apt-get install -y nsd)");
    let process = Process(child);
    wait_for_zone(port, &log);
    (process, port)
}

#[tokio::main]
async fn main() {
    if let Some(port) = std::env::var("DNSPERF_ECHO_PORT").ok().and_then(|p| p.parse().ok()) {
        cpu::respond(port, cpu::Batching::from_env());
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("dnsperf: run with `cargo bench -p dns-server --bench dnsperf`");
        return;
    }
    let seconds: u64 =
        std::env::var("DNSPERF_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let tokens = TokenDir::new();
    let http = tokens.http_client(Duration::from_secs(300));
    match std::env::var("DNSPERF_MODE").as_deref() {
        Ok("metrics") => return metrics_cost(&tokens, &http, seconds).await,
        Ok("axfr") => return axfr(&tokens, &http).await,
        Ok("cpu") => return cpu::cpu_per_query(&tokens, &http, seconds).await,
        _ => {}
    }
    println!(
        "| names | dns-server q/s | knotd q/s | ratio | dns-server RSS after 2 PUTs / after restart | PUT /config |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let sizes: Vec<usize> = std::env::var("DNSPERF_SIZES")
        .ok()
        .map(|s| s.split(',').map(|n| n.trim().parse().expect("DNSPERF_SIZES: numbers")).collect())
        .unwrap_or(vec![1_000, 100_000]);
    for names in sizes {
        let dir = tempfile::tempdir().unwrap();
        let queries = dir.path().join("queries.txt");
        std::fs::write(&queries, query_file(names)).unwrap();

        let (ours, dns, api) = start_ours(dir.path(), &tokens.token_file()).await;
        let body = serde_json::to_vec(&config_json(names, 1)).unwrap();
        let put = |body: Vec<u8>| {
            http.put(format!("http://{api}/config"))
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        let response = put(body).await.unwrap();
        assert!(response.status().is_success(), "{:?}", response.text().await);

        // Apply generation 2 while a client keeps querying: time the PUT and
        // count the answers that arrived during it.
        let body = serde_json::to_vec(&config_json(names, 2)).unwrap();
        let probe = tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.connect(dns).await.unwrap();
            let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x0dcontrol-plane\x08internal\x00\x00\x06\x00\x01";
            let (mut answered, mut slowest) = (0u32, Duration::ZERO);
            let mut buf = [0u8; 512];
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let sent = Instant::now();
                socket.send(query).await.unwrap();
                match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
                    Ok(Ok(_)) => {
                        answered += 1;
                        slowest = slowest.max(sent.elapsed());
                    }
                    _ => break,
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                if PUT_DONE.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
            }
            (answered, slowest)
        });
        // The most memory the server holds while it applies a whole config
        // (the decoded config, the new generation and the old one).
        let pid = ours.pid().unwrap().as_raw() as u32;
        let peak = std::thread::spawn(move || {
            let mut most = rss_kib(pid);
            while !PUT_DONE.load(std::sync::atomic::Ordering::SeqCst) {
                most = most.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(2));
            }
            most.max(rss_kib(pid))
        });
        let started = Instant::now();
        let response = put(body).await.unwrap();
        let put_time = started.elapsed();
        PUT_DONE.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(response.status().is_success());
        let (answered, slowest) = probe.await.unwrap();
        let peak = peak.join().unwrap();
        PUT_DONE.store(false, std::sync::atomic::Ordering::SeqCst);

        let rss = rss_kib(ours.pid().unwrap().as_raw() as u32);
        let (our_qps, our_lost) = dnsperf(dns.port(), &queries, seconds);
        let (our_tcp, _, _) = dnsperf_over(dns.port(), &queries, seconds, "tcp");
        // Generation 3 applied while dnsperf runs: what did it cost clients?
        let load = {
            let queries = queries.clone();
            std::thread::spawn(move || dnsperf_over(dns.port(), &queries, seconds, "udp"))
        };
        std::thread::sleep(Duration::from_secs(seconds / 3));
        let started = Instant::now();
        let response = put(serde_json::to_vec(&config_json(names, 3)).unwrap()).await.unwrap();
        assert!(response.status().is_success());
        let put_under_load = started.elapsed();
        let (_, load_lost, load_codes) = load.join().unwrap();
        drop(ours);
        // Steady state: a fresh process that loaded the stored config.
        let (restarted, restarted_dns, _) = start_ours(dir.path(), &tokens.token_file()).await;
        let restarted_pid = restarted.pid().unwrap().as_raw() as u32;
        let rss_restarted = rss_kib(restarted_pid);
        // And while it answers.
        let (_, _, loaded_restarted) =
            dnsperf_rss(restarted_pid, restarted_dns.port(), &queries, seconds.div_ceil(2));
        drop(restarted);

        let (knot, knot_port) = start_knot(dir.path(), names, None);
        let (knot_qps, knot_lost, knot_loaded) =
            dnsperf_rss(knot.0.id(), knot_port, &queries, seconds);
        let (knot_tcp, _, _) = dnsperf_over(knot_port, &queries, seconds, "tcp");
        drop(knot);
        let (nsd, nsd_port) = start_nsd(dir.path(), names);
        // NSD's main process; its two servers are forks sharing the zone.
        let (nsd_qps, nsd_lost, nsd_loaded) = dnsperf_rss(nsd.0.id(), nsd_port, &queries, seconds);
        let (nsd_tcp, _, _) = dnsperf_over(nsd_port, &queries, seconds, "tcp");
        drop(nsd);

        println!(
            "| {names} | {our_qps:.0} | {knot_qps:.0} | {:.2} | {:.1} MiB / {:.1} MiB | {put_time:.2?} ({answered} queries answered during it, slowest {slowest:.2?}) |",
            our_qps / knot_qps,
            rss as f64 / 1024.0,
            rss_restarted as f64 / 1024.0,
        );
        eprintln!("  dns-server: {our_lost}\n  knotd: {knot_lost}\n  nsd: {nsd_lost}");
        println!("|   TCP | {our_tcp:.0} | {knot_tcp:.0} | {:.2} | | |", our_tcp / knot_tcp);
        println!(
            "|   NSD | UDP {nsd_qps:.0} (ours {:.2}x) | TCP {nsd_tcp:.0} (ours {:.2}x) | | | |",
            our_qps / nsd_qps,
            our_tcp / nsd_tcp
        );
        eprintln!(
            "  PUT of {names} names under dnsperf load: {put_under_load:.2?}; {load_lost}; {load_codes}"
        );
        let mib = |kib: u64| kib as f64 / 1024.0;
        eprintln!(
            "  RSS while the second whole config was applied (most seen): dns-server {:.1} MiB",
            mib(peak)
        );
        eprintln!(
            "  RSS under load (most seen): dns-server {:.1} MiB (restarted from storage), knotd {:.1} MiB, nsd {:.1} MiB (main process)",
            mib(loaded_restarted),
            mib(knot_loaded),
            mib(nsd_loaded)
        );
        let _ = std::io::stdout().flush();
    }
}

/// dnsperf against our server with and without a scraper hammering
/// `/metrics`, interleaved, three runs each.
async fn metrics_cost(tokens: &TokenDir, http: &reqwest::Client, seconds: u64) {
    let names = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let queries = dir.path().join("queries.txt");
    std::fs::write(&queries, query_file(names)).unwrap();
    let (_ours, dns, api) = start_ours(dir.path(), &tokens.token_file()).await;
    put_config(http, api, names).await;
    let (mut quiet, mut scraped, mut scrapes) = (Vec::new(), Vec::new(), 0u64);
    for _ in 0..3 {
        quiet.push(
            tokio::task::spawn_blocking({
                let queries = queries.clone();
                move || dnsperf(dns.port(), &queries, seconds).0
            })
            .await
            .unwrap(),
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scraper = tokio::spawn({
            let (stop, http) = (stop.clone(), http.clone());
            async move {
                let mut count = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let text = http.get(format!("http://{api}/metrics")).send().await.unwrap();
                    assert!(text.text().await.unwrap().contains("dns_server_queries_total"));
                    count += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                count
            }
        });
        scraped.push(
            tokio::task::spawn_blocking({
                let queries = queries.clone();
                move || dnsperf(dns.port(), &queries, seconds).0
            })
            .await
            .unwrap(),
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        scrapes += scraper.await.unwrap();
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let runs = format!("no scraping {quiet:.0?}, scraping {scraped:.0?}");
    let (q, s) = (median(&mut quiet), median(&mut scraped));
    println!(
        "| names | q/s, no scraping (median of 3) | q/s, /metrics every 100 ms (median of 3) | ratio | scrapes |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!("| {names} | {q:.0} | {s:.0} | {:.3} | {scrapes} |", s / q);
    println!("runs: {runs}");
}

/// Puts generation 1 of a `names`-name config to the server at `api`.
async fn put_config(http: &reqwest::Client, api: SocketAddr, names: usize) {
    let response = http
        .put(format!("http://{api}/config"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&config_json(names, 1)).unwrap())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text().await);
}

/// What one whole zone transfer took.
struct Transfer {
    time: Duration,
    messages: usize,
    records: usize,
}

/// Asks `server` for the zone and reads it all (TCP, length-prefixed
/// messages) until the closing SOA; panics on an error or a stall of 60 s.
fn transfer(server: SocketAddr) -> Transfer {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RecordType;
    use std::io::Read;
    let started = Instant::now();
    let mut stream = ask_for_zone(server);
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let (mut messages, mut records, mut soas) = (0, 0, 0);
    let mut buf = vec![0u8; 65_535];
    while soas < 2 {
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).expect("the transfer stalled or was cut");
        let length = usize::from(u16::from_be_bytes(length));
        stream.read_exact(&mut buf[..length]).unwrap();
        let message = Message::from_vec(&buf[..length]).expect("a well-formed message");
        assert_eq!(message.metadata.response_code, hickory_proto::op::ResponseCode::NoError);
        messages += 1;
        records += message.answers.len();
        soas += message.answers.iter().filter(|r| r.record_type() == RecordType::SOA).count();
    }
    Transfer { time: started.elapsed(), messages, records }
}

/// A TCP connection to `server` on which the zone was asked for (AXFR).
fn ask_for_zone(server: SocketAddr) -> std::net::TcpStream {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;
    let mut query = Message::new(0x5151, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_str(&format!("{ZONE}.")).unwrap(), RecordType::AXFR));
    let query = query.to_vec().unwrap();
    let mut stream = std::net::TcpStream::connect(server).unwrap();
    stream.write_all(&(query.len() as u16).to_be_bytes()).unwrap();
    stream.write_all(&query).unwrap();
    stream
}

/// UDP answer times of queries sent one after the other (1 ms apart) to
/// `server` for names of the zone, until `stop` is set (at least 200).
fn udp_latencies(server: SocketAddr, stop: &std::sync::atomic::AtomicBool) -> Vec<Duration> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut times = Vec::new();
    let mut buf = [0u8; 1232];
    for i in 0u16.. {
        if times.len() >= 200 && stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let name = format!("host{}.host.{ZONE}.", (usize::from(i) * 2) % 1000);
        let mut query = vec![(i >> 8) as u8, i as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.trim_end_matches('.').split('.') {
            query.push(label.len() as u8);
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 28, 0, 1]);
        let sent = Instant::now();
        socket.send(&query).unwrap();
        // A lost answer counts as the timeout it cost.
        let _ = socket.recv(&mut buf);
        times.push(sent.elapsed());
        std::thread::sleep(Duration::from_millis(1));
    }
    times
}

fn percentiles(mut times: Vec<Duration>) -> String {
    times.sort();
    let at = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    format!("{:.2?} / {:.2?} / {:.2?}", at(0.5), at(0.99), times[times.len() - 1])
}

/// Zone transfers of `AXFR_SIZES` names from our server and from Knot
/// serving the same zone: a transfer alone, then one beside 40 clients
/// that asked for the zone and read nothing, each with UDP queries
/// answered meanwhile (median / p99 / slowest), and UDP answers with no
/// transfer at all for comparison.
async fn axfr(tokens: &TokenDir, http: &reqwest::Client) {
    let sizes: Vec<usize> = std::env::var("AXFR_SIZES")
        .ok()
        .map(|s| s.split(',').map(|n| n.trim().parse().expect("AXFR_SIZES: numbers")).collect())
        .unwrap_or(vec![100_000, 1_000_000]);
    println!(
        "| names | server | transfer alone (time, messages, records) | beside 40 slow readers | UDP without transfers | UDP during the transfer alone | UDP beside 40 slow readers |"
    );
    println!("|---:|---|---|---|---|---|---|");
    for names in sizes {
        let dir = tempfile::tempdir().unwrap();
        let (ours, dns, api) = start_ours(dir.path(), &tokens.token_file()).await;
        put_config(http, api, names).await;
        let row = tokio::task::spawn_blocking(move || axfr_row(dns)).await.unwrap();
        println!("| {names} | dns-server | {row}");
        drop(ours);
        let (knot, port) = start_knot(dir.path(), names, None);
        let row =
            tokio::task::spawn_blocking(move || axfr_row(SocketAddr::from(([127, 0, 0, 1], port))))
                .await
                .unwrap();
        println!("| {names} | knotd | {row}");
        drop(knot);
        let _ = std::io::stdout().flush();
    }
}

/// One row of [`axfr`] for the server at `server`.
fn axfr_row(server: SocketAddr) -> String {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let during = |work: &dyn Fn() -> Transfer| {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let probe = std::thread::spawn({
            let stop = stop.clone();
            move || udp_latencies(server, &stop)
        });
        let transfer = work();
        stop.store(true, SeqCst);
        (transfer, probe.join().unwrap())
    };
    let quiet = udp_latencies(server, &AtomicBool::new(true));
    let (alone, alone_udp) = during(&|| transfer(server));
    let (beside, beside_udp) = during(&|| {
        let slow: Vec<std::net::TcpStream> = (0..40).map(|_| ask_for_zone(server)).collect();
        // Let them start and fill their buffers.
        std::thread::sleep(Duration::from_millis(500));
        let transfer = transfer(server);
        drop(slow);
        transfer
    });
    let t = |t: &Transfer| format!("{:.2?}, {}, {}", t.time, t.messages, t.records);
    format!(
        "{} | {} | {} | {} | {} |",
        t(&alone),
        t(&beside),
        percentiles(quiet),
        percentiles(alone_udp),
        percentiles(beside_udp)
    )
}

static PUT_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
