//! `GET /history` over real HTTP, on a real process: every apply (whole,
//! difference, repair) with its writer, every refused push with its code,
//! every start from storage, kept across a restart and across the journal
//! being folded into a new snapshot, and the last repair still reported by
//! `GET /status` after the restart.

use crate::common::*;
use dns_types::DnsRecord;
use dns_types::apply_history::{ApplyHow, ServerEvent, ServerHistory};
use test_support::TokenDir;
use test_support::process::{DnsServerProcess, binary};

fn writer_client(dir: &TokenDir, http: std::net::SocketAddr) -> dns_server_client::Client {
    let http_client = dir.token.client_builder_as("nexus-a").timeout(TIMEOUT * 6).build().unwrap();
    dns_server_client::Client::new_with_client(&format!("http://{http}"), http_client)
}

async fn history(client: &dns_server_client::Client) -> ServerHistory {
    client.history_get().limit(10_000).send().await.unwrap().into_inner()
}

fn kinds(history: &ServerHistory) -> Vec<String> {
    history
        .events
        .iter()
        .rev()
        .map(|e| match &e.event {
            ServerEvent::Applied { generation, how, .. } => format!("applied {generation} {how}"),
            ServerEvent::Refused { generation, error_code, .. } => {
                format!("refused {generation} {error_code}")
            }
            ServerEvent::Started { generation, .. } => format!("started {generation}"),
            ServerEvent::StorageFailed { operation, .. } => format!("storage failed {operation}"),
        })
        .collect()
}

#[tokio::test]
async fn the_history_keeps_every_apply_refusal_and_start_across_restarts_and_folds() {
    let dir = TokenDir::new();
    let bin = binary("dns-server").unwrap();
    let server = DnsServerProcess::start_in(&bin, &dir, &[]).await.unwrap();
    let client = writer_client(&dir, server.http_address);

    let one = config(1, vec![("www", vec![DnsRecord::A("192.0.2.1".parse().unwrap())])]);
    put(&client, &one).await.unwrap();
    let mut two = one.clone();
    two.generation = 2;
    two.zones[0].names.insert("api".into(), vec![DnsRecord::A("192.0.2.2".parse().unwrap())]);
    put_diff(&client, &diff(&one, &two)).await.unwrap();
    // Older: refused, and the refusal kept with its code.
    let (status, code, _) = put(&client, &one).await.unwrap_err();
    assert_eq!((status, code.as_str()), (409, "BadUpdateGeneration"));
    // Repaired back to generation 1's content.
    let repair = dns_server_client::types::ConfigRepair {
        replaces: dns_server_client::types::ServedIdentity {
            generation: 2,
            digest: Some(dns_types::config_digest(&two)),
        },
        config: one.clone(),
        reason: "a test says so\nINFO forged line".into(),
    };
    client.config_repair().body(repair).send().await.unwrap();

    let h = history(&client).await;
    assert_eq!(
        kinds(&h),
        [
            "started 0",
            "applied 1 whole config",
            "applied 2 difference",
            "refused 1 BadUpdateGeneration",
            "applied 1 repair"
        ]
    );
    match &h.events[0].event {
        ServerEvent::Applied {
            how: ApplyHow::Repair, writer, replaced_generation, reason, ..
        } => {
            assert_eq!(writer.as_deref(), Some("nexus-a"));
            assert_eq!(*replaced_generation, 2);
            assert_eq!(
                reason.as_deref(),
                Some("a test says so\\u{a}INFO forged line"),
                "a newline cannot forge a line of a log"
            );
        }
        other => panic!("newest event: {other:?}"),
    }
    assert!(h.complete_since.is_some());
    assert!(h.events.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");

    // Enough differences to fold the journal into a new snapshot (it folds
    // past 1 MiB): 14 KiB of TXT per generation.
    let mut current = one.clone();
    current.generation = 2;
    put(&client, &current).await.unwrap();
    for generation in 3..=90u64 {
        let mut next = current.clone();
        next.generation = generation;
        let text = format!("{generation:0>200}");
        next.zones[0].names.insert(
            "big".into(),
            (0..60).map(|i| DnsRecord::Txt(format!("{i:02}{text}"))).collect(),
        );
        put_diff(&client, &diff(&current, &next)).await.unwrap();
        current = next;
    }
    let snapshot = std::fs::read_to_string(dir.path().join("storage/config.json")).unwrap();
    assert!(snapshot.contains("\"generation\":"), "a snapshot exists");
    let journal = std::fs::metadata(dir.path().join("storage/journal.jsonl")).unwrap().len();
    assert!(journal < 1 << 20, "the journal was folded ({journal} bytes)");

    // Killed and started again on the same storage.
    let http = server.http_address.to_string();
    server.process.kill().await;
    let storage = dir.path().join("storage");
    let log = dir.path().join("server.log");
    let server =
        DnsServerProcess::start(&bin, "127.0.0.1:0", &http, &storage, &dir.token_file(), &log)
            .await
            .unwrap();
    let client = writer_client(&dir, server.http_address);
    let h = history(&client).await;
    let k = kinds(&h);
    assert_eq!(k.first().map(String::as_str), Some("started 0"));
    assert_eq!(k.last().map(String::as_str), Some("started 90"), "{k:?}");
    assert_eq!(k.iter().filter(|e| e.ends_with(" difference")).count(), 89);
    assert!(k.contains(&"applied 1 repair".to_string()));
    // The repair is still what the status reports after the restart.
    let status = client.status_get().send().await.unwrap().into_inner();
    let last_repair = status.last_repair.expect("the last repair survives a restart");
    assert_eq!(last_repair.replaced.generation, 2);

    // `since` and `limit` narrow it.
    let newest = &h.events[0];
    let since = client.history_get().since(newest.time).send().await.unwrap().into_inner();
    assert!(since.events.iter().all(|e| e.time >= newest.time));
    let two = client.history_get().limit(2).send().await.unwrap().into_inner();
    assert_eq!(two.events.len(), 2);
}

#[tokio::test]
async fn the_history_is_bounded() {
    let dir = TokenDir::new();
    let bin = binary("dns-server").unwrap();
    let server = DnsServerProcess::start_in(&bin, &dir, &["--history-events", "20"]).await.unwrap();
    let client = writer_client(&dir, server.http_address);
    for generation in 1..=60u64 {
        let c = config(generation, vec![("www", vec![DnsRecord::A("192.0.2.1".parse().unwrap())])]);
        put(&client, &c).await.unwrap();
    }
    let h = history(&client).await;
    assert_eq!(h.events.len(), 20);
    assert_eq!(h.retained_events, 20);
    let oldest = h.events.last().unwrap();
    assert!(
        h.complete_since.is_some_and(|t| t <= oldest.time),
        "complete_since {:?} is no later than the oldest event kept {}",
        h.complete_since,
        oldest.time
    );
    let lines = std::fs::read_to_string(dir.path().join("storage/history.jsonl")).unwrap();
    assert!(lines.lines().count() <= 40, "the file is bounded too");
}
