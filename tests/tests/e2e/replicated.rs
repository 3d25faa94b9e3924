//! The replicated database (`devstack run --db replicated`: etcd and three
//! PostgreSQL nodes under Patroni, synchronous strict mode) under the
//! failures it exists for: the primary's machine dying while changes flow,
//! a change's answer lost on the way back, no synchronous standby left.
//! Real Patroni, real etcd, real PostgreSQL, real Nexus processes.

use crate::common::*;
use db_model::cluster::{NodeState, node_statuses, wait_until_writable};
use devstack::stack::Database;
use dns_types::{DnsChange, DnsGroup};
use local_postgres::replicated::ReplicatedPostgres;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

async fn replicated_stack(internal: usize, nexus: usize) -> TestStack {
    TestStack::start_with(internal, 1, nexus, |o| o.replicated_db = true).await
}

fn cluster(ts: &mut TestStack) -> &mut ReplicatedPostgres {
    match &mut ts.stack.database {
        Database::Replicated(cluster) => cluster,
        _ => panic!("the stack's database is not replicated"),
    }
}

/// The index (in the cluster's node list) and address of the primary now.
async fn primary(ts: &mut TestStack) -> (usize, String) {
    let url = ts.stack.db_url.clone();
    let nodes = node_statuses(&url, Duration::from_secs(2)).await.unwrap();
    let (node, _) = db_model::cluster::primary(&nodes).expect("one primary");
    let address = node.address.clone();
    let index = cluster(ts)
        .nodes()
        .iter()
        .position(|n| n.postgres.to_string() == address)
        .expect("the primary is one of the cluster's nodes");
    (index, address)
}

/// Sends `change` with `key` until Nexus answers it, as a careful client
/// does: an answer that leaves the outcome open (503, no answer) means
/// "send it again, same key".  Returns the generation and when it was
/// acknowledged.
async fn send_until_acknowledged(
    nexus: &nexus_client::Client,
    mut change: DnsChange,
    key: String,
) -> (u64, Instant) {
    change.idempotency_key = Some(key);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match nexus.dns_change().group(DnsGroup::Internal).body(change.clone()).send().await {
            Ok(version) => return (version.into_inner().generation, Instant::now()),
            Err(nexus_client::Error::ErrorResponse(r)) if r.status().is_client_error() => {
                panic!("change {:?} refused: {} {}", change.comment, r.status(), r.message)
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "change {:?} never acknowledged: {e}",
                    change.comment
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Generations of the internal group as the database has them, in order.
async fn generations(ts: &TestStack) -> Vec<u64> {
    let versions = ts.stack.datastore.dns_versions_list(DnsGroup::Internal, None).await.unwrap();
    let mut generations: Vec<u64> = versions.iter().map(|v| v.generation).collect();
    generations.sort();
    generations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_primary_mid_writes_loses_no_acknowledged_change() {
    let mut ts = replicated_stack(2, 2).await;
    let nexus = ts.nexus(0);
    const CHANGES: usize = 200;
    const KILL_AFTER: usize = 60;
    let writer = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..CHANGES {
            let change = add_change(&format!("change {i}"), &format!("w{i}"), vec![a("192.0.2.1")]);
            let (generation, at) =
                send_until_acknowledged(&nexus, change, format!("writer-{i}")).await;
            acknowledged.push((i, generation, at));
        }
        acknowledged
    });
    // Lose the primary once the writer is well under way.
    let limit = Instant::now() + Duration::from_secs(60);
    loop {
        let count = generations(&ts).await.len();
        if count >= KILL_AFTER {
            break;
        }
        assert!(Instant::now() < limit, "the writer made only {count} changes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (old_index, old_primary) = primary(&mut ts).await;
    let killed_at = Instant::now();
    cluster(&mut ts).kill_node(old_index);
    // Until a standby is promoted (Patroni's ttl: 8 s) no node accepts
    // writes: `dns status` reads the standby furthest along and says so,
    // first thing, rather than comparing the servers with a database that
    // cannot move on as if all were well.
    let (_, out, err) = run_omdb(&ts, &["dns", "status", "internal"]);
    if out.starts_with("DATABASE: no database node accepts writes") {
        assert!(err.contains("reading standby"), "{err}");
    } else {
        // Only if a standby was promoted before omdb looked.
        let nodes = node_statuses(&ts.stack.db_url, Duration::from_secs(2)).await.unwrap();
        let promoted = db_model::cluster::primary(&nodes).is_some();
        assert!(promoted, "no primary, and dns status did not say so:\n{out}\n{err}");
        eprintln!("a standby was promoted before omdb looked: nothing to say\n{out}");
    }

    let acknowledged = writer.await.unwrap();
    assert_eq!(acknowledged.len(), CHANGES);
    // The gap: the longest wait between two acknowledged changes (the one
    // in flight at the kill may still have been acknowledged just after).
    let gap = acknowledged.windows(2).map(|w| w[1].2 - w[0].2).max().unwrap();
    let first_after = acknowledged.iter().map(|(_, _, at)| *at).find(|at| *at > killed_at);
    eprintln!(
        "write gap around the primary's loss: {gap:?} (first acknowledgement after the kill: \
         {:?} after it)",
        first_after.map(|at| at - killed_at)
    );
    // Patroni's settings (ttl 8 s, loop_wait 1 s) promise a takeover within
    // about ttl + loop_wait; the client retries every 100 ms.
    assert!(gap < Duration::from_secs(30), "writes resumed only after {gap:?}");

    // Every acknowledged change is in the database, each exactly once, and
    // generations are gapless and unique.
    wait_until_writable(&ts.stack.db_url, 1, Duration::from_secs(60)).await.unwrap();
    let gens = generations(&ts).await;
    let expected: Vec<u64> = (1..=*gens.last().unwrap()).collect();
    assert_eq!(gens, expected, "generations have a gap or a duplicate");
    let config = ts.stack.datastore.dns_config_read(DnsGroup::Internal, None).await.unwrap();
    let names = &config.zones[0].names;
    let acked_gens: BTreeSet<u64> = acknowledged.iter().map(|(_, g, _)| *g).collect();
    assert_eq!(acked_gens.len(), CHANGES, "two changes were answered with one generation");
    for (i, generation, _) in &acknowledged {
        assert!(names.contains_key(&format!("w{i}")), "acknowledged change {i} is missing");
        let version =
            ts.stack.datastore.dns_version(DnsGroup::Internal, *generation).await.unwrap();
        assert_eq!(version.comment, format!("change {i}"), "generation {generation}");
    }

    // The stack converges: every DNS server serves the latest generation,
    // every Nexus has loaded it (each has reconnected to the new primary).
    for n in &ts.stack.nexus {
        activate(&n.client(), &["dns_config_internal", "dns_propagation_internal"]).await;
    }
    ts.stack.wait_until_converged(Duration::from_secs(60)).await.unwrap();

    // omdb names the new primary and every Nexus on it; explain is healthy.
    let (_, new_primary) = primary(&mut ts).await;
    assert_ne!(new_primary, old_primary);
    let (code, out, err) = run_omdb(&ts, &["db", "status"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let row = out.lines().find(|l| l.trim_start().starts_with(&new_primary)).unwrap_or_default();
    assert!(row.contains("primary"), "{out}");
    let old_row =
        out.lines().find(|l| l.trim_start().starts_with(&old_primary)).unwrap_or_default();
    assert!(old_row.contains("UNREACHABLE"), "{out}");
    assert!(out.contains(&format!("writes commit on {new_primary} (primary)")), "{out}");
    assert_eq!(out.matches(&format!("-> {new_primary} since")).count(), 2, "{out}");
    assert!(out.contains("1 failover seen"), "{out}");
    // Nexus's metrics say the same: the node in use, the failover, and the
    // writes that failed while there was no primary.
    let metrics = reqwest::get(format!("{}/metrics", ts.stack.nexus[0].url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("nexus_database_node{{node=\"{new_primary}\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains("nexus_database_failovers_seen_total 1"), "{metrics}");
    let unavailable = metrics
        .lines()
        .find(|l| l.starts_with("nexus_database_write_failures_total{kind=\"unavailable\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(unavailable > 0, "{metrics}");
    let (code, out, err) = run_omdb(&ts, &["dns", "explain", &format!("w{}.{ZONE}", CHANGES - 1)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("verdict: healthy"), "{out}");
    assert!(out.contains(&format!("read from node {new_primary} of the replicated database")));

    // The killed node comes back as a standby of the new primary.
    cluster(&mut ts).start_node(old_index).unwrap();
    let primary_status =
        wait_until_writable(&ts.stack.db_url, 2, Duration::from_secs(60)).await.unwrap();
    assert_eq!(primary_status.replicas.len(), 2);
}

/// The answer to a change is lost on the way back (the connection cut
/// after Nexus committed): the client sends it again with the same key and
/// gets the first generation; the change is in the database once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_retried_with_its_key_after_a_cut_connection_is_applied_once() {
    let ts = TestStack::start(1, 1, 1).await;
    let upstream = ts.stack.nexus[0].address;
    // A proxy that forwards the request but never the response: it closes
    // the client's connection as soon as Nexus starts answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_address = listener.local_addr().unwrap();
    let proxy = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut client, _)) = listener.accept().await {
            let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
            let mut buffer = vec![0u8; 65536];
            let mut response = [0u8; 1];
            loop {
                tokio::select! {
                    read = client.read(&mut buffer) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(n) => server.write_all(&buffer[..n]).await.unwrap(),
                    },
                    // Nexus answered: the commit is done; the answer is lost.
                    _ = server.read(&mut response) => break,
                }
            }
        }
    });
    let before = ts.stack.datastore.dns_version_latest(DnsGroup::Internal).await.unwrap();
    let mut change = add_change("cut", "cut", vec![a("192.0.2.77")]);
    change.idempotency_key = Some("cut-connection-1".into());
    let via_proxy = nexus_client::Client::new(&format!("http://{proxy_address}"));
    let lost = via_proxy.dns_change().group(DnsGroup::Internal).body(change.clone()).send().await;
    assert!(
        matches!(lost, Err(nexus_client::Error::CommunicationError(_))),
        "the answer should have been lost: {lost:?}"
    );
    proxy.abort();
    // It did commit, the client cannot know: send it again, same key.
    let retried =
        ts.nexus(0).dns_change().group(DnsGroup::Internal).body(change.clone()).send().await;
    let retried = retried.unwrap().into_inner();
    assert_eq!(retried.generation, before.generation + 1);
    let latest = ts.stack.datastore.dns_version_latest(DnsGroup::Internal).await.unwrap();
    assert_eq!(latest.generation, before.generation + 1, "applied twice");
    assert_eq!(latest.comment, "cut");
    // Another change under the same key is refused (409), naming the key.
    let mut other = add_change("other", "other", vec![a("192.0.2.78")]);
    other.idempotency_key = change.idempotency_key.clone();
    match ts.nexus(0).dns_change().group(DnsGroup::Internal).body(other).send().await {
        Err(nexus_client::Error::ErrorResponse(r)) => {
            assert_eq!(r.status().as_u16(), 409);
            assert_eq!(r.error_code.as_deref(), Some("IdempotencyKeyReused"));
        }
        other => panic!("expected 409, got {other:?}"),
    }
}

/// The synchronous standby lost: Patroni names the other standby and
/// writes go on.  No standby left: commits wait, and omdb says why (the
/// database stage), not a bare timeout; when a standby is back, Patroni
/// makes it synchronous and the waiting change commits, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_synchronous_standby_commits_wait_and_omdb_says_why() {
    let mut ts = replicated_stack(1, 1).await;
    let (primary_index, primary_address) = primary(&mut ts).await;
    let nodes = node_statuses(&ts.stack.db_url, Duration::from_secs(2)).await.unwrap();
    let (_, status) = db_model::cluster::primary(&nodes).unwrap();
    let sync_name = status.replicas.iter().find(|r| r.is_synchronous()).unwrap().name.clone();
    let sync_index = cluster(&mut ts).nodes().iter().position(|n| n.name == sync_name).unwrap();
    cluster(&mut ts).kill_node(sync_index);
    let args = ["-w", "nexus", "dns", "add", "internal", "after-sync", "A", "192.0.2.89"];
    let comment = ["--comment", "after the synchronous standby died"];
    let (code, out, err) = run_omdb(&ts, &[&args[..], &comment[..]].concat());
    assert_eq!(code, 0, "{out}\n{err}");
    let nodes = node_statuses(&ts.stack.db_url, Duration::from_secs(2)).await.unwrap();
    let (_, status) = db_model::cluster::primary(&nodes).unwrap();
    let now_sync = status.replicas.iter().find(|r| r.is_synchronous()).unwrap().name.clone();
    assert_ne!(now_sync, sync_name, "Patroni named the other standby synchronous");

    // Now the last standby too.
    let standbys: Vec<usize> = (0..3).filter(|i| *i != primary_index).collect();
    for i in &standbys {
        if *i != sync_index {
            cluster(&mut ts).kill_node(*i);
        }
    }
    // Both standbys gone: the primary stays primary (strict mode keeps
    // requiring a synchronous standby) and nothing can commit.
    let blocked = wait_for("the database to report that writes cannot commit", || async {
        let nodes = node_statuses(&ts.stack.db_url, Duration::from_secs(2)).await.ok()?;
        let writes = db_model::cluster::writes(&nodes);
        (!writes.can_commit).then_some(writes.sentence)
    })
    .await;
    assert!(blocked.contains(&format!("primary {primary_address} requires a synchronous standby")));

    let (code, out, err) = run_omdb(&ts, &["db", "status"]);
    assert_eq!(code, 5, "{out}\n{err}");
    assert!(out.contains("writes cannot commit"), "{out}");
    let (code, out, err) = run_omdb(&ts, &["dns", "explain", &format!("api.{}", "example.test")]);
    assert!(out.starts_with("verdict: database: writes cannot commit"), "{out}\n{err}");
    assert_ne!(code, 0);

    // A change now waits.  omdb keeps sending it (same key) and says why.
    let writer = {
        let ts_dns = ts.stack.internal_dns_addresses()[0].to_string();
        let token = ts.stack.api_token_file.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(test_support::process::binary("omdb").unwrap())
                .args(["-w", "nexus", "dns", "add", "internal", "waited", "A", "192.0.2.90"])
                .args(["--comment", "waited for a standby"])
                .env("OMDB_DNS_SERVER", ts_dns)
                .env("OMDB_API_TOKEN_FILE", token)
                .env_remove("OMDB_NEXUS_URL")
                .env_remove("OMDB_DB_URL")
                .output()
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = generations(&ts).await.len();
    cluster(&mut ts).start_node(standbys[0]).unwrap();
    let output = writer.await.unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("the database says: writes cannot commit"), "{stderr}");
    assert!(stdout.contains("\"waited for a standby\""), "{stdout}");
    // Applied once.
    let versions = ts.stack.datastore.dns_versions_list(DnsGroup::Internal, None).await.unwrap();
    assert_eq!(versions.iter().filter(|v| v.comment == "waited for a standby").count(), 1);
    assert_eq!(generations(&ts).await.len(), before + 1);
    let nodes = node_statuses(&ts.stack.db_url, Duration::from_secs(2)).await.unwrap();
    assert!(db_model::cluster::writes(&nodes).can_commit, "{nodes:?}");
    assert!(nodes.iter().any(|n| matches!(n.state, NodeState::Standby(_))));
}
