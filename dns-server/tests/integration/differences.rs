//! `PUT /config/diff` over real HTTP and DNS: applied only to its exact
//! base and only to its stated digest, a journal that survives SIGKILL at
//! any moment and 1,000 differences in a row, and answers that never mix
//! two generations while differences land under dnsperf load.

use crate::common::*;
use dns_types::{DnsConfig, DnsRecord};
use hickory_proto::rr::RecordType;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use test_support::TokenDir;
use test_support::process::DnsServerProcess;

fn a(last: u8) -> DnsRecord {
    DnsRecord::A(std::net::Ipv4Addr::new(192, 0, 2, last))
}

/// `base` moved to `generation` with name `name` set to `records` (none:
/// removed).
fn next(base: &DnsConfig, generation: u64, name: &str, records: Vec<DnsRecord>) -> DnsConfig {
    let mut c = base.clone();
    c.generation = generation;
    c.comment = format!("generation {generation}");
    if records.is_empty() {
        c.zones[0].names.remove(name);
    } else {
        c.zones[0].names.insert(name.to_string(), records);
    }
    c
}

async fn status(client: &dns_server_client::Client) -> dns_server_client::types::DnsServerStatus {
    client.status_get().send().await.unwrap().into_inner()
}

#[tokio::test]
async fn a_difference_applies_only_to_its_base_and_to_its_digest() {
    let s = TestServer::start().await;
    let one = config(1, vec![("www", vec![a(1)]), ("old", vec![a(9)])]);
    s.put(&one).await.unwrap();
    let two = next(&next(&one, 2, "www", vec![a(2)]), 2, "old", vec![]);
    put_diff(&s.client, &diff(&one, &two)).await.unwrap();
    let m = query(s.dns(), &format!("www.{ZONE}."), RecordType::A, Transport::Udp).await;
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.2");
    let m = query(s.dns(), &format!("old.{ZONE}."), RecordType::A, Transport::Tcp).await;
    assert_eq!(m.metadata.response_code, hickory_proto::op::ResponseCode::NXDomain);
    let after_two = status(&s.client).await;
    assert_eq!(after_two.generation, 2);
    assert_eq!(
        after_two.applied_config_digest.as_deref(),
        Some(dns_types::config_digest(&two).as_str())
    );
    assert_eq!(s.client.config_get().send().await.unwrap().into_inner().config, two);
    // The same difference again: already applied, nothing to do.
    put_diff(&s.client, &diff(&one, &two)).await.unwrap();

    // A base the server does not serve: refused, nothing changed.
    let three = next(&two, 3, "www", vec![a(3)]);
    let mut wrong_base = diff(&two, &three);
    wrong_base.from_digest = dns_types::config_digest(&one);
    let (status_code, code, message) = put_diff(&s.client, &wrong_base).await.unwrap_err();
    assert_eq!((status_code, code.as_str()), (409, "DiffBaseMismatch"), "{message}");
    assert!(message.contains("this config is generation 2"), "{message}");
    let mut skipped = diff(&two, &three);
    skipped.from_generation = 1;
    let (status_code, code, _) = put_diff(&s.client, &skipped).await.unwrap_err();
    assert_eq!((status_code, code.as_str()), (409, "DiffBaseMismatch"));

    // A result that would not have the stated digest: refused.
    let mut lying = diff(&two, &three);
    lying.zones[0].names[0].records = vec![a(33)];
    let (status_code, code, message) = put_diff(&s.client, &lying).await.unwrap_err();
    assert_eq!((status_code, code.as_str()), (409, "DiffDigestMismatch"), "{message}");
    assert_eq!(status(&s.client).await.applied_config_digest, after_two.applied_config_digest);
    let m = query(s.dns(), &format!("www.{ZONE}."), RecordType::A, Transport::Udp).await;
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.2", "nothing changed");

    // The generation rules of PUT /config: older is refused.
    let (status_code, code, _) =
        put_diff(&s.client, &diff(&config(0, vec![]), &one)).await.unwrap_err();
    assert_eq!((status_code, code.as_str()), (409, "BadUpdateGeneration"));
    // Invalid content: 400.
    let mut invalid = diff(&two, &three);
    invalid.zones[0].names[0].name = "Not Valid".into();
    let (status_code, code, _) = put_diff(&s.client, &invalid).await.unwrap_err();
    assert_eq!((status_code, code.as_str()), (400, "InvalidConfig"));
    // Without the token: 401, nothing changed.
    let anonymous = dns_server_client::Client::new(&format!("http://{}", s.server.http_address()));
    let error = anonymous.config_diff_put().body(diff(&two, &three)).send().await.unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(401));

    put_diff(&s.client, &diff(&two, &three)).await.unwrap();
    assert_eq!(status(&s.client).await.generation, 3);
}

fn binary() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_dns-server"))
}

/// 1,000 differences through the API, then SIGKILL and a restart: the
/// server answers from the last one at once, with the digest and config of
/// that generation loaded whole.
#[tokio::test]
async fn a_thousand_differences_then_a_restart_give_the_full_digest() {
    let dir = TokenDir::new();
    let server = DnsServerProcess::start_in(binary(), &dir, &[]).await.unwrap();
    let client = client(&dir, server.http_address);
    let mut current = config(1, vec![]);
    for i in 0..1000 {
        current.zones[0].names.insert(format!("n{i}"), vec![a(1)]);
    }
    put(&client, &current).await.unwrap();
    for generation in 2..=1001u64 {
        let name = format!("n{}", (generation * 7) % 1200);
        let records = if generation % 5 == 0 { vec![] } else { vec![a((generation % 250) as u8)] };
        let following = next(&current, generation, &name, records);
        put_diff(&client, &diff(&current, &following)).await.unwrap();
        current = following;
    }
    let dns = server.dns_address;
    server.process.kill().await;
    let restarted = DnsServerProcess::start_with(
        binary(),
        &dns.to_string(),
        "127.0.0.1:0",
        &dir.path().join("storage"),
        &dir.token_file(),
        &dir.path().join("server2.log"),
        &[],
    )
    .await
    .unwrap();
    let client = crate::common::client(&dir, restarted.http_address);
    let after = status(&client).await;
    assert_eq!(after.generation, 1001);
    assert_eq!(after.applied_config_digest, Some(dns_types::config_digest(&current)));
    assert_eq!(client.config_get().send().await.unwrap().into_inner().config, current);
    let m =
        query(dns, &format!("n{}.{ZONE}.", (1001 * 7) % 1200), RecordType::A, Transport::Udp).await;
    assert_eq!(m.answers[0].data.to_string(), format!("192.0.2.{}", 1001 % 250));
}

/// SIGKILL while differences are being applied, at several moments: after
/// each restart the server serves a whole generation, the last one
/// acknowledged or the one in flight, never anything in between.
#[tokio::test]
async fn sigkill_during_a_difference_leaves_a_whole_generation() {
    let dir = TokenDir::new();
    let storage = dir.path().join("storage");
    // Each difference changes 2,000 of 4,000 names, so that its apply and
    // journal write take long enough to be cut.
    let mut configs = vec![config(1, vec![])];
    for i in 0..4000u32 {
        configs[0].zones[0].names.insert(format!("n{i}"), vec![a(1)]);
    }
    for generation in 2..=40u64 {
        let mut c = configs.last().unwrap().clone();
        c.generation = generation;
        c.comment = format!("generation {generation}");
        for i in (generation as u32 % 2..4000).step_by(2) {
            c.zones[0].names.insert(format!("n{i}"), vec![a((generation % 250) as u8)]);
        }
        configs.push(c);
    }
    let digest_of = |generation: u64| dns_types::config_digest(&configs[generation as usize - 1]);
    let mut server = DnsServerProcess::start_in(binary(), &dir, &[]).await.unwrap();
    put(&client(&dir, server.http_address), &configs[0]).await.unwrap();
    let mut acknowledged = 1u64;
    for round in 0..6u64 {
        let client = client(&dir, server.http_address);
        // Send differences one after another; kill after a delay that
        // moves with the round, wherever the server is.
        let deadline = std::time::Duration::from_millis(5 + round * 17);
        let mut in_flight = None;
        let started = std::time::Instant::now();
        let mut generation = acknowledged;
        while generation < 40 {
            let d = diff(&configs[generation as usize - 1], &configs[generation as usize]);
            let request = client.config_diff_put().body(d);
            let remaining = deadline.saturating_sub(started.elapsed());
            match tokio::time::timeout(remaining, request.send()).await {
                Ok(result) => {
                    result.unwrap();
                    generation += 1;
                    acknowledged = generation;
                }
                Err(_) => {
                    in_flight = Some(generation + 1);
                    break;
                }
            }
        }
        server.process.kill().await;
        server = DnsServerProcess::start_with(
            binary(),
            "127.0.0.1:0",
            "127.0.0.1:0",
            &storage,
            &dir.token_file(),
            &dir.path().join(format!("server{round}.log")),
            &[],
        )
        .await
        .unwrap();
        let after = status(&crate::common::client(&dir, server.http_address)).await;
        let allowed: Vec<u64> = [Some(acknowledged), in_flight].into_iter().flatten().collect();
        assert!(
            allowed.contains(&after.generation),
            "round {round}: generation {} not in {allowed:?}",
            after.generation
        );
        assert_eq!(
            after.applied_config_digest,
            Some(digest_of(after.generation)),
            "round {round}: a whole generation"
        );
        acknowledged = after.generation;
        if acknowledged >= 39 {
            break;
        }
    }
}

/// Under dnsperf load, 100 differences land while a checker asks for a
/// name whose answer carries two marks of its generation (a CNAME to a
/// name made for it, and that name's address): they always agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_answer_mixes_generations_while_differences_land_under_load() {
    let s = Arc::new(TestServer::start().await);
    let mark = |c: &mut DnsConfig, generation: u64| {
        let names = &mut c.zones[0].names;
        names.retain(|n, _| !n.starts_with("gen"));
        names.insert("alias".into(), vec![DnsRecord::Cname(format!("gen{generation}.{ZONE}"))]);
        names.insert(format!("gen{generation}"), vec![a((generation % 250) as u8)]);
        c.generation = generation;
    };
    let mut current = config(1, vec![]);
    for i in 0..5_000u32 {
        current.zones[0].names.insert(format!("name{i}"), vec![a((i % 250) as u8)]);
    }
    mark(&mut current, 1);
    s.put(&current).await.unwrap();

    let queries = s.dir.path().join("queries.txt");
    let lines: String = (0..1000).map(|i| format!("name{i}.{ZONE} A\nalias.{ZONE} A\n")).collect();
    std::fs::write(&queries, lines).unwrap();
    let mut load = tokio::process::Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &s.dns().port().to_string(), "-l", "30"])
        .args(["-c", "4", "-q", "100", "-T", "1"])
        .arg("-d")
        .arg(&queries)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running dnsperf (apt-get install -y dnsperf)");

    let stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut checked = 0u64;
            let mut seen = std::collections::BTreeSet::new();
            // Until the last generation has been seen after the last
            // difference (or a time limit after it, counted from then: how
            // long the differences take depends on what else the machine
            // runs; the assertions below say what was missed).
            let mut stopped_at = None;
            loop {
                if stop.load(Ordering::SeqCst) {
                    let since = *stopped_at.get_or_insert_with(std::time::Instant::now);
                    if seen.contains(&101) || since.elapsed() > TIMEOUT {
                        break;
                    }
                }
                let m =
                    query(s.dns(), &format!("alias.{ZONE}."), RecordType::A, Transport::Udp).await;
                let generation = answer_generation(&m);
                seen.insert(generation);
                checked += 1;
            }
            (checked, seen)
        })
    };
    for generation in 2..=101u64 {
        let mut following = current.clone();
        mark(&mut following, generation);
        following.comment = format!("generation {generation}");
        put_diff(&s.client, &diff(&current, &following)).await.unwrap();
        current = following;
    }
    stop.store(true, Ordering::SeqCst);
    let (checked, seen) = checker.await.unwrap();
    assert!(checked > 10, "{checked}");
    assert!(seen.len() >= 2 && seen.contains(&101), "{seen:?}");
    assert_eq!(
        status(&s.client).await.applied_config_digest,
        Some(dns_types::config_digest(&current))
    );
    // dnsperf was answered throughout (stopped early: it runs for 30 s).
    let _ = load.start_kill();
    let _ = load.wait().await;
}

/// A journal that grows past the snapshot (and 1 MiB) is folded into a new
/// snapshot: the journal starts over, the snapshot holds the generation
/// reached, and what is stored still reads back as the last generation.
#[tokio::test]
async fn a_long_journal_is_folded_into_a_snapshot() {
    let s = TestServer::start().await;
    let mut current = config(1, vec![("www", vec![a(1)])]);
    s.put(&current).await.unwrap();
    let journal = s.storage_dir().join("journal.jsonl");
    // About 8 kB per difference: past 1 MiB after some 130.
    let big = |generation: u64| {
        ["a", "b"].map(|p| DnsRecord::Txt(format!("{p}{generation:07}").repeat(490))).to_vec()
    };
    let (mut largest, mut folded_at) = (0, None);
    for generation in 2..=300u64 {
        let following = next(&current, generation, "big", big(generation));
        put_diff(&s.client, &diff(&current, &following)).await.unwrap();
        current = following;
        let size = std::fs::metadata(&journal).unwrap().len();
        if size < largest {
            folded_at = Some(generation);
            break;
        }
        largest = size;
    }
    let folded_at =
        folded_at.unwrap_or_else(|| panic!("never folded; journal reached {largest} bytes"));
    assert!(largest > 1 << 20, "folded only past 1 MiB, at {largest} bytes");
    let snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.storage_dir().join("config.json")).unwrap())
            .unwrap();
    let snapshot_generation = snapshot["config"]["generation"].as_u64().unwrap();
    assert!(
        (folded_at - 1..=folded_at).contains(&snapshot_generation),
        "snapshot at {snapshot_generation}, folded after {folded_at}"
    );
    assert_eq!(s.client.config_get().send().await.unwrap().into_inner().config, current);
    assert_eq!(
        status(&s.client).await.applied_config_digest,
        Some(dns_types::config_digest(&current))
    );
}
