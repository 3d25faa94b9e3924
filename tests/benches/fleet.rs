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
//!    Where the time of the healthy changes went, from both Nexus's
//!    propagation histories: commit → a Nexus loads the generation → its
//!    first push begins → the last server has it (medians).
//! 3. **`omdb dns status external` and `omdb dns explain NAME`** wall time
//!    (the release binary, as an operator runs it), `FLEET_RUNS` runs each
//!    (default 11), healthy and with the hung server: median and range.
//!
//! With `FLEET_PRELOAD=N`, first N names are loaded through Nexus's API
//! in changes of 20,000 (`FLEET_PRELOAD_CHANGE`): the load rate, the time
//! until every server serves the last of them, each DNS server's and each
//! Nexus's resident memory, the database's size, and whether every
//! server's digest equals the database's (it must); then the above, at
//! that size.  `FLEET_SERVERS=2 FLEET_PRELOAD=1000000` is the million-name
//! bench.
//!
//! Run: `cargo bench -p tests --bench fleet` (`FLEET_SERVERS` sets the
//! fleet's size; figures in docs/PERFORMANCE.md; `FLEET_KEEP_DIR=1` keeps
//! the stack's run directory afterwards).

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
    let every = Duration::from_millis(env_or("FLEET_POLL_MS", 2) as u64);
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
        if let Ok(Ok(n)) = tokio::time::timeout(every, socket.recv(&mut reply)).await
            && let Ok(message) = Message::from_vec(&reply[..n])
            && message.metadata.id == query.metadata.id
            && !message.answers.is_empty()
        {
            return Instant::now();
        }
        tokio::time::sleep(every).await;
    }
}

/// `count` one-name changes, each timed from its 200 until every server of
/// `servers` answers it; and their generations.
async fn changes(
    stack: &Stack,
    servers: &[SocketAddr],
    prefix: &str,
    count: usize,
) -> (Vec<Duration>, Vec<u64>) {
    let nexus = stack.nexus[0].client();
    let mut samples = Vec::with_capacity(count);
    let mut generations = Vec::with_capacity(count);
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
        let version =
            nexus.dns_change().group(DnsGroup::External).body(change).send().await.unwrap();
        let committed = Instant::now();
        generations.push(version.into_inner().generation);
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
    (samples, generations)
}

/// Where the time of `generations`' propagation went, from both Nexus's
/// histories (one clock: everything runs on this machine): the medians of
/// commit → first loaded by a Nexus → first push begun → the last server's
/// first successful push ended.
async fn breakdown(stack: &Stack, generations: &[u64]) {
    use nexus_types::task_status::PropagationResult;
    let mut histories = Vec::new();
    for nexus in &stack.nexus {
        let history = nexus
            .client()
            .dns_history()
            .group(DnsGroup::External)
            .since_generation(generations[0])
            .limit(generations.len() as u32 + 10)
            .send()
            .await
            .unwrap()
            .into_inner();
        histories.push(history);
    }
    let (mut loaded, mut pushing, mut pushed) = (Vec::new(), Vec::new(), Vec::new());
    // Each successful push's own duration, and how long after the first
    // push the last one began.
    let (mut each, mut spread) = (Vec::new(), Vec::new());
    for generation in generations {
        let records: Vec<_> = histories
            .iter()
            .flat_map(|h| h.generations.iter().filter(|r| r.generation == *generation))
            .collect();
        let Some(committed) = records.iter().find_map(|r| r.committed_at) else { continue };
        let Some(seen) = records.iter().filter_map(|r| r.first_seen_at).min() else { continue };
        let pushes: Vec<_> = records.iter().flat_map(|r| r.pushes.iter()).collect();
        let Some(first_push) = pushes.iter().map(|p| p.started_at).min() else { continue };
        let mut done = std::collections::BTreeMap::new();
        for p in pushes.iter().filter(|p| p.result == PropagationResult::Success) {
            let at = done.entry(p.server.clone()).or_insert(p.ended_at);
            *at = (*at).min(p.ended_at);
        }
        let Some(last) = done.values().max() else { continue };
        let successful: Vec<_> =
            pushes.iter().filter(|p| p.result == PropagationResult::Success).collect();
        each.extend(successful.iter().filter_map(|p| (p.ended_at - p.started_at).to_std().ok()));
        if let Some(last_began) = successful.iter().map(|p| p.started_at).max() {
            spread.push((last_began - first_push).to_std().unwrap_or_default());
        }
        let d = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
            (b - a).to_std().unwrap_or_default()
        };
        loaded.push(d(committed, seen));
        pushing.push(d(seen, first_push));
        pushed.push(d(first_push, *last));
    }
    if loaded.is_empty() {
        println!("  breakdown: no generation found in the Nexus histories");
        return;
    }
    println!(
        "  where it went ({} changes, medians): commit -> loaded by a Nexus {}, -> first push \
         begun {}, -> the last server's push ended {}",
        loaded.len(),
        ms(quantile(&loaded, 0.5)),
        ms(quantile(&pushing, 0.5)),
        ms(quantile(&pushed, 0.5)),
    );
    println!(
        "  each push (status, then difference): p50 {}, p90 {}, max {}; the last push began {} \
         after the first (median)",
        ms(quantile(&each, 0.5)),
        ms(quantile(&each, 0.9)),
        ms(quantile(&each, 1.0)),
        ms(quantile(&spread, 0.5)),
    );
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

/// User + system CPU time of process `pid` so far, in clock ticks (0 if
/// it is gone).
fn cpu_ticks(pid: i32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // The command may hold spaces: the fields follow its closing paren.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line (11 and 12
    // after the command).
    field(11) + field(12)
}

/// The processes whose parent is `pid` (PostgreSQL's backends).
fn children(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        if rest.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok()) == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// CPU time so far, in ticks, of: the external DNS servers (together),
/// each Nexus, the database (with its backends), and this bench (its
/// pollers).
fn cpu_by_part(stack: &Stack) -> Vec<(String, u64)> {
    let pid = |p: &Option<test_support::process::ChildProcess>| {
        p.as_ref().and_then(|p| p.pid()).map(|p| p.as_raw()).unwrap_or(0)
    };
    let mut parts = vec![(
        "external DNS servers".to_string(),
        stack.servers(DnsGroup::External).map(|s| cpu_ticks(pid(&s.process))).sum(),
    )];
    for nexus in &stack.nexus {
        parts.push((nexus.name.clone(), cpu_ticks(pid(&nexus.process))));
    }
    if let devstack::stack::Database::Local(pg) = &stack.database {
        let postmaster = pg.pid().as_raw();
        let total =
            cpu_ticks(postmaster) + children(postmaster).into_iter().map(cpu_ticks).sum::<u64>();
        parts.push(("PostgreSQL".to_string(), total));
    }
    parts.push(("the bench (pollers)".to_string(), cpu_ticks(std::process::id() as i32)));
    parts
}

/// CPU per change of each part between `before` and `after`.
fn report_cpu(before: &[(String, u64)], after: &[(String, u64)], changes: usize) {
    let tick_ms = 1000.0
        / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100)
            as f64;
    let parts: Vec<String> = before
        .iter()
        .zip(after)
        .map(|((name, b), (_, a))| {
            format!("{name} {:.1} ms", (a - b) as f64 * tick_ms / changes as f64)
        })
        .collect();
    println!("  CPU per change: {}", parts.join(", "));
}

/// Loads `names` names (`preN`, one A record each) through Nexus in
/// changes of `per_change`, and reports what that cost and left behind.
async fn preload(stack: &Stack, names: usize, per_change: usize) {
    let nexus = stack.nexus[0].client();
    let started = Instant::now();
    let mut generation = 0;
    let mut commits = Vec::new();
    for first in (0..names).step_by(per_change) {
        let add = (first..(first + per_change).min(names))
            .map(|i| NameRecords {
                name: format!("pre{i}"),
                records: vec![DnsRecord::A(std::net::Ipv4Addr::from(0xC633_6400 + i as u32))],
            })
            .collect();
        let change = DnsChange {
            idempotency_key: None,
            comment: format!("fleet bench preload from {first}"),
            add,
            remove: vec![],
        };
        let sent = Instant::now();
        let version =
            nexus.dns_change().group(DnsGroup::External).body(change).send().await.unwrap();
        commits.push(sent.elapsed());
        generation = version.into_inner().generation;
    }
    let loaded = started.elapsed();
    println!(
        "preload: {names} names in {} changes of {per_change}: {:.1} s, {:.0} names/s; a change's \
         commit: p50 {}, max {}",
        commits.len(),
        loaded.as_secs_f64(),
        names as f64 / loaded.as_secs_f64(),
        ms(quantile(&commits, 0.5)),
        ms(quantile(&commits, 1.0))
    );
    for server in stack.servers(DnsGroup::External) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while stack.server_generation(server).await.unwrap_or(0) < generation {
            assert!(Instant::now() < deadline, "{} did not reach {generation}", server.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "  every external server serves generation {generation} {:.1} s after the first change",
        started.elapsed().as_secs_f64()
    );
    // Correctness at this size: each server's digest is the database's.
    let state = stack
        .datastore
        .dns_digest_state(DnsGroup::External, generation)
        .await
        .unwrap()
        .expect("the database keeps each generation's digest state");
    let wanted = state.digest(generation);
    for server in stack.servers(DnsGroup::External) {
        let status = devstack::stack::dns_server_client(server, &stack.api_token)
            .unwrap()
            .status_get()
            .send()
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.generation, generation, "{}", server.name);
        assert_eq!(
            status.applied_config_digest.as_deref(),
            Some(wanted.as_str()),
            "{}'s digest",
            server.name
        );
    }
    println!("  every server's digest equals the database's ({wanted})");
    report_rss(stack, "after the load").await;
    let (client, connection) =
        tokio_postgres::connect(&stack.db_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = client.query_one("SELECT pg_database_size(current_database())", &[]).await.unwrap();
    println!("  database size: {:.0} MiB", row.get::<_, i64>(0) as f64 / 1024.0 / 1024.0);
}

/// Each external server's and each Nexus's resident memory, a few seconds
/// after the last change (a server frees the generation it replaced, and
/// returns the memory, on a thread of its own after the swap).
async fn report_rss(stack: &Stack, when: &str) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = |p: &Option<test_support::process::ChildProcess>| {
        p.as_ref().and_then(|p| p.pid()).map(|p| p.as_raw() as u32).unwrap_or(0)
    };
    let mib = |pid: u32| test_support::process::rss_kib(pid) as f64 / 1024.0;
    let servers: Vec<String> = stack
        .servers(DnsGroup::External)
        .map(|s| format!("{} {:.0} MiB", s.name, mib(pid(&s.process))))
        .collect();
    let nexus: Vec<String> =
        stack.nexus.iter().map(|n| format!("{} {:.0} MiB", n.name, mib(pid(&n.process)))).collect();
    println!("  RSS {when}: {}; {}", servers.join(", "), nexus.join(", "));
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
    // FLEET_KEEP_DIR=1: the run directory (logs, each server's storage and
    // apply history) stays, for a look afterwards.
    let _dir = if std::env::var_os("FLEET_KEEP_DIR").is_some() {
        let kept = dir.keep();
        println!("run directory (kept): {}", kept.display());
        None
    } else {
        Some(dir)
    };
    options.external_dns_servers = size;
    let started = Instant::now();
    let stack = Stack::start(options).await.unwrap();
    println!("{size} external DNS servers, 3 internal, 2 Nexus: ready in {:.1} s", {
        started.elapsed().as_secs_f64()
    });
    let servers: Vec<SocketAddr> =
        stack.servers(DnsGroup::External).map(|s| s.dns_address).collect();
    assert_eq!(servers.len(), size);
    let names = env_or("FLEET_PRELOAD", 0);
    if names > 0 {
        preload(&stack, names, env_or("FLEET_PRELOAD_CHANGE", 20_000)).await;
    }

    // A warm-up change, not counted (first connections, first diff).
    changes(&stack, &servers, "warm", 1).await;
    let before = cpu_by_part(&stack);
    let (healthy, generations) = changes(&stack, &servers, "fleet", count).await;
    let after = cpu_by_part(&stack);
    report_changes(&format!("one-name change until all {size} answer over UDP"), &healthy);
    breakdown(&stack, &generations).await;
    report_cpu(&before, &after, count);
    if names > 0 {
        report_rss(&stack, &format!("after {count} more changes")).await;
    }
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
    let (with_hung, _) = changes(&stack, &others, "hung", count).await;
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
