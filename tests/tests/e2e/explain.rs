//! `omdb dns explain NAME` against a real stack with one injected fault per
//! class the seed lists: the verdict line must name the right stage and the
//! evidence (server, generation, time), with the stage's exit status.
//!
//! Every scenario starts its own stack (1 internal DNS server, 2 external,
//! 2 Nexus), adds `shop.example.test`, waits until both external servers
//! serve it, then breaks one thing the way it breaks in production.

use crate::common::*;
use dns_types::{DnsChange, DnsConfig, DnsGroup, NameRecords, NameRemoval};
use nexus_types::task_name::DnsTaskName;
use std::net::SocketAddr;
use std::time::Duration;
use test_support::process::{ChildProcess, DnsServerProcess, binary};

const NAME: &str = "shop.example.test";

struct Explained {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Explained {
    fn verdict(&self) -> &str {
        self.stdout.lines().next().unwrap_or_default()
    }

    /// Asserts the verdict names `stage` and contains every piece of
    /// `evidence`, and that the exit status is the stage's.
    fn expect(&self, stage: &str, code: i32, evidence: &[&str]) {
        let verdict = self.verdict();
        // Shown with --nocapture: what a support engineer would read.
        eprintln!("{verdict}");
        assert!(
            verdict.starts_with(&format!("verdict: {stage}: ")),
            "expected a {stage} verdict, got:\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        for e in evidence {
            assert!(verdict.contains(e), "verdict lacks {e:?}:\n{}", self.stdout);
        }
        assert_eq!(self.code, code, "exit status for {stage}:\n{}", self.stdout);
    }
}

/// docs/debugging-dns.md shows real output of some of these scenarios,
/// each after a `<!-- explain:LABEL -->` marker: its verdict line must be
/// what omdb says now (times, ids, ports and digests aside).
fn doc_shows(label: &str, out: &Explained) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/debugging-dns.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let marker = format!("<!-- explain:{label} -->");
    let after = doc
        .split(&marker)
        .nth(1)
        .unwrap_or_else(|| panic!("docs/debugging-dns.md has no {marker}"));
    let shown = after.lines().find(|l| l.starts_with("verdict: ")).unwrap_or_default();
    assert_eq!(
        redact(shown),
        redact(out.verdict()),
        "docs/debugging-dns.md ({label}) no longer shows what omdb says; update it from:\n{}",
        out.stdout
    );
}

fn omdb(ts: &TestStack, args: &[&str]) -> Explained {
    let (code, stdout, stderr) = run_omdb(ts, args);
    Explained { code, stdout, stderr }
}

fn explain(ts: &TestStack, extra: &[&str]) -> Explained {
    let mut args = vec!["dns", "explain", NAME];
    args.extend_from_slice(extra);
    omdb(ts, &args)
}

/// A stack where `shop.example.test` was added through Nexus 0 (generation
/// 2 of the external group) and both external servers serve it.
async fn scenario() -> TestStack {
    scenario_with(|_| {}).await
}

async fn scenario_with(adjust: impl FnOnce(&mut devstack::StackOptions)) -> TestStack {
    let ts = TestStack::start_with(1, 2, 2, adjust).await;
    let version = change(
        &ts.nexus(0),
        DnsGroup::External,
        add_change("shop opens", "shop", vec![a("192.0.2.10")]),
    )
    .await;
    assert_eq!(version.generation, 2);
    wait_until_served(&ts, 2).await;
    ts
}

async fn wait_until_served(ts: &TestStack, generation: u64) {
    for server in ts.stack.servers(DnsGroup::External) {
        wait_for("an external server to serve the change", || async {
            (ts.stack.server_generation(server).await.ok() == Some(generation)).then_some(())
        })
        .await;
    }
}

fn external(ts: &TestStack, i: usize) -> &devstack::stack::DnsServer {
    ts.stack.servers(DnsGroup::External).nth(i).unwrap()
}

/// A client of the DNS server at `address` that sends the stack's token.
fn server_client(ts: &TestStack, address: SocketAddr) -> dns_server_client::Client {
    let http =
        ts.stack.api_token.client_builder().timeout(Duration::from_secs(10)).build().unwrap();
    dns_server_client::Client::new_with_client(&format!("http://{address}"), http)
}

/// A dns-server process nobody registered, at `dns_address`, serving
/// `config`: what someone started by hand, or a stale process left behind.
async fn unregistered_server(
    ts: &TestStack,
    name: &str,
    dns_address: &str,
    config: DnsConfig,
) -> (ChildProcess, SocketAddr) {
    let log = ts.dir.path().join(format!("{name}.log"));
    let server = DnsServerProcess::start(
        &binary("dns-server").unwrap(),
        dns_address,
        "127.0.0.1:0",
        &ts.dir.path().join(name),
        &ts.stack.api_token_file,
        &log,
    )
    .await
    .unwrap();
    server_client(ts, server.http_address).config_put().body(config).send().await.unwrap();
    (server.process, server.dns_address)
}

/// The external config at the latest generation, with `shop` changed to
/// `ip` and the generation set: what a rogue or stale writer would serve.
async fn forged_config(ts: &TestStack, generation: u64, ip: &str) -> DnsConfig {
    let mut config = ts.stack.datastore.dns_config_read(DnsGroup::External, None).await.unwrap();
    config.generation = generation;
    config.zones[0].names.insert("shop".into(), vec![a(ip)]);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_name_is_exonerated_with_evidence() {
    let ts = scenario().await;
    let out = explain(&ts, &[]);
    let dns: Vec<String> =
        ts.stack.servers(DnsGroup::External).map(|s| s.dns_address.to_string()).collect();
    let mut evidence = vec!["A 192.0.2.10", "since generation 2", "\"shop opens\"", "the latest"];
    evidence.extend(dns.iter().map(String::as_str));
    evidence.push("answered it on UDP and TCP by 20");
    out.expect("healthy", 0, &evidence);
    assert!(out.stdout.contains("findings: none"), "{}", out.stdout);
    doc_shows("healthy", &out);

    // The JSON rendering carries the same facts, with numbers as numbers.
    let json = omdb(&ts, &["--json", "dns", "explain", NAME]);
    assert_eq!(json.code, 0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["verdict"]["stage"], "healthy");
    assert_eq!(v["findings"].as_array().unwrap().len(), 0);
    assert_eq!(v["database"]["latest"]["generation"], 2);
    assert_eq!(v["nexus"].as_array().unwrap().len(), 2);
    assert_eq!(v["servers"].as_array().unwrap().len(), 2);
    assert_eq!(v["wire"].as_array().unwrap().len(), 4, "2 servers x UDP/TCP x A");
    assert!(v["wire"].as_array().unwrap().iter().all(|w| w["soa_serial"] == 2));

    // A near miss and a relative name that fits no zone.
    let typo = omdb(&ts, &["dns", "explain", "shpo.example.test"]);
    typo.expect(
        "database",
        10,
        &["never existed in any generation", "similar names: shop.example.test"],
    );
    let nowhere = omdb(&ts, &["dns", "explain", "shop.elsewhere.test"]);
    assert_eq!(nowhere.code, 1, "{}", nowhere.stderr);
    assert!(nowhere.stderr.contains("example.test"), "lists the zones: {}", nowhere.stderr);

    // The history alone, from the database.
    let history = omdb(&ts, &["db", "dns", "history", "external", "shop"]);
    assert_eq!(history.code, 0, "{}", history.stderr);
    assert!(history.stdout.contains("added") && history.stdout.contains("shop opens"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_name_names_the_generation_that_removed_it() {
    let ts = scenario().await;
    let v =
        change(&ts.nexus(0), DnsGroup::External, remove_change("shop closes", "shop", None)).await;
    wait_until_served(&ts, v.generation).await;
    let out = explain(&ts, &[]);
    out.expect(
        "database",
        10,
        &["removed in generation 3", "\"shop closes\"", "it had A 192.0.2.10"],
    );
    doc_shows("removed", &out);
    let wrong_type = explain(&ts, &["--type", "AAAA"]);
    wrong_type.expect("database", 10, &["not in external DNS generation 3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_added_and_wrong_type_are_database_findings() {
    let ts = scenario().await;
    omdb(&ts, &["dns", "explain", "basket.example.test"]).expect(
        "database",
        10,
        &["never existed in any generation", "generation 2"],
    );
    explain(&ts, &["--type", "AAAA"]).expect(
        "database",
        10,
        &["has no AAAA records", "it has A 192.0.2.10"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nexus_that_has_not_noticed_the_latest_generation() {
    let ts = scenario().await;
    // A writer other than Nexus (an operator's tool): no Nexus is told, and
    // with an hour-long period none looks.
    let change = DnsChange {
        idempotency_key: None,
        comment: "moved by a support tool".into(),
        add: vec![NameRecords { name: "shop".into(), records: vec![a("192.0.2.11")] }],
        remove: vec![NameRemoval { name: "shop".into(), records: None }],
    };
    ts.stack
        .datastore
        .dns_change_commit(DnsGroup::External, "support-tool", &change)
        .await
        .unwrap();
    let nexus0 = ts.stack.nexus[0].id.to_string();
    let nexus1 = ts.stack.nexus[1].id.to_string();
    let out = explain(&ts, &[]);
    out.expect("nexus", 11, &["last found generation 2", "latest is 3", "support-tool"]);
    assert!(out.verdict().contains(&nexus0) || out.verdict().contains(&nexus1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nexus_that_cannot_read_the_database() {
    let mut ts = scenario().await;
    let devstack::stack::Database::Local(pg) = &mut ts.stack.database else { unreachable!() };
    pg.stop_temporarily();
    activate(&ts.nexus(1), &[&DnsTaskName::config(DnsGroup::External).to_string()]).await;
    let devstack::stack::Database::Local(pg) = &mut ts.stack.database else { unreachable!() };
    pg.start_again().unwrap();
    let out = explain(&ts, &[]);
    out.expect(
        "nexus",
        11,
        &[
            &ts.stack.nexus[1].id.to_string(),
            "could not read the database at 20",
            "it still propagates generation 2",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_nexus() {
    let mut ts = scenario().await;
    let address = ts.stack.nexus[1].address.to_string();
    ts.stack.nexus[1].stop().await;
    explain(&ts, &[]).expect("nexus", 11, &[&address, "could not be asked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_server_registered_nowhere() {
    let ts = scenario().await;
    // A server someone started by hand, answering from a copy of the
    // config, never registered: the customer asked it.
    let config = ts.stack.datastore.dns_config_read(DnsGroup::External, None).await.unwrap();
    let (_rogue, rogue_dns) = unregistered_server(&ts, "rogue", "127.0.0.1:0", config).await;
    let rogue_dns = rogue_dns.to_string();
    explain(&ts, &["--server", &rogue_dns]).expect(
        "server-list",
        12,
        &[&rogue_dns, "answers", "registered nowhere"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_server_list() {
    let ts = scenario().await;
    // Unregister external server 1 through Nexus: the database no longer
    // lists it, but Nexus's server list (hour-long period) still does.
    let gone = external(&ts, 1);
    let host = internal_dns::host_name(gone.id);
    let srv = internal_dns::Registration::new(
        internal_dns::ServiceName::ExternalDns,
        gone.id,
        gone.http_address,
        ZONE,
    )
    .srv;
    let change = DnsChange {
        idempotency_key: None,
        comment: "retire external DNS server 1".into(),
        add: vec![],
        remove: vec![
            NameRemoval { name: srv.name.clone(), records: Some(srv.records.clone()) },
            NameRemoval { name: host, records: None },
        ],
    };
    crate::common::change(&ts.nexus(0), DnsGroup::Internal, change).await;
    explain(&ts, &[]).expect(
        "server-list",
        12,
        &[&format!("lists {}", gone.http_address), "does not register it"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down() {
    let mut ts = scenario().await;
    let address = external(&ts, 1).http_address;
    ts.stack.dns_servers.iter_mut().find(|s| s.http_address == address).unwrap().stop().await;
    let v =
        change(&ts.nexus(0), DnsGroup::External, add_change("more", "cart", vec![a("192.0.2.20")]))
            .await;
    propagation_of(&ts.nexus(0), DnsGroup::External, v.generation).await;
    let out = explain(&ts, &[]);
    out.expect(
        "propagation",
        13,
        &[&address.to_string(), "push of generation 3", "failed at 20", "reading its status"],
    );
    doc_shows("server-down", &out);
}

/// The first hour's trap: a server was down when Nexus 0 pushed, came back,
/// and Nexus 1 brought it current.  Nexus 0's failed push is its last
/// word until its next period, but it is not the verdict: the current
/// evidence says healthy, and the old failure is a note with both times
/// and who mended it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_another_nexus_has_since_mended_is_a_note_not_the_verdict() {
    let mut ts = scenario().await;
    let address = external(&ts, 1).http_address;
    let server = ts.stack.dns_servers.iter_mut().find(|s| s.http_address == address).unwrap();
    server.stop().await;
    let v =
        change(&ts.nexus(0), DnsGroup::External, add_change("more", "cart", vec![a("192.0.2.20")]))
            .await;
    propagation_of(&ts.nexus(0), DnsGroup::External, v.generation).await;
    propagation_of(&ts.nexus(1), DnsGroup::External, v.generation).await;
    let server = ts.stack.dns_servers.iter_mut().find(|s| s.http_address == address).unwrap();
    server.restart().await.unwrap();
    // Only Nexus 1 looks again; Nexus 0's last push to it is the failure.
    activate(&ts.nexus(1), &[&DnsTaskName::propagation(DnsGroup::External).to_string()]).await;
    wait_until_served(&ts, v.generation).await;

    let out = explain(&ts, &[]);
    out.expect("healthy", 0, &[]);
    let note = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("superseded: "))
        .unwrap_or_else(|| panic!("no superseded note:\n{}", out.stdout));
    // Who failed, when, who brought the server current since, and when
    // the failing Nexus retries.
    let mender = format!("by Nexus {}", ts.stack.nexus[1].id);
    for evidence in
        [&address.to_string(), "push of generation 3", "failed at 20", &mender, "retries by 20"]
    {
        assert!(note.contains(evidence), "the note lacks {evidence:?}: {note}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hangs() {
    let ts = scenario().await;
    let server = external(&ts, 1);
    server.freeze().unwrap();
    let v =
        change(&ts.nexus(0), DnsGroup::External, add_change("more", "cart", vec![a("192.0.2.20")]))
            .await;
    propagation_of(&ts.nexus(0), DnsGroup::External, v.generation).await;
    let out = explain(&ts, &[]);
    // Asked about its DNS address, which the hung server cannot report:
    // the address it registered names it (not `server-list`, "no server
    // reports it as its address").
    let dns = server.dns_address.to_string();
    let at_its_address = explain(&ts, &["--server", &dns]);
    let status = omdb(&ts, &["dns", "status", "external"]);
    server.thaw().unwrap();
    out.expect("propagation", 13, &[&server.http_address.to_string(), "generation 3"]);
    // The push to it is in flight, or has given up (the timeout is 1 s).
    assert!(
        ["has had no answer since", "no complete answer within"]
            .iter()
            .any(|said| out.stdout.contains(said)),
        "{}",
        out.stdout
    );
    // Everything asked of the servers shared one deadline, and what missed
    // it is named: its config API and its DNS address.
    let late = format!(
        "did not answer within 3s (one deadline for every server question): config API {}; DNS \
         {dns} over UDP and TCP",
        server.http_address
    );
    assert!(out.stdout.contains(&late), "{}", out.stdout);
    assert!(
        status.stdout.contains(&format!(
            "did not answer within 3s (one deadline for every server question): config API {}",
            server.http_address
        )),
        "{}",
        status.stdout
    );
    at_its_address.expect("propagation", 13, &[&server.http_address.to_string()]);
    assert!(!at_its_address.stdout.contains("[server-list]"), "{}", at_its_address.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_rejects_pushes() {
    let ts = scenario().await;
    let server = external(&ts, 1);
    // Its storage cannot take a new config (even as root): directories where
    // the journal is and where a new snapshot's temporary file must go.
    std::fs::create_dir(server.storage_dir.join("config.json.tmp")).unwrap();
    let journal = server.storage_dir.join("journal.jsonl");
    std::fs::remove_file(&journal).unwrap();
    std::fs::create_dir(&journal).unwrap();
    let v =
        change(&ts.nexus(0), DnsGroup::External, add_change("more", "cart", vec![a("192.0.2.20")]))
            .await;
    propagation_of(&ts.nexus(0), DnsGroup::External, v.generation).await;
    explain(&ts, &[]).expect(
        "propagation",
        13,
        &[&server.http_address.to_string(), "pushing generation 3", "StorageFailed"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_pushed_a_generation_the_database_does_not_have() {
    // Repair off: the fault stays for explain to find.
    let ts = scenario_with(|o| o.repair_servers = false).await;
    let server = external(&ts, 1);
    let bogus = forged_config(&ts, 99, "203.0.113.66").await;
    server_client(&ts, server.http_address).config_put().body(bogus).send().await.unwrap();
    // Nexus looks again and must call it an error, never a success.
    activate(&ts.nexus(0), &[&DnsTaskName::propagation(DnsGroup::External).to_string()]).await;
    let status = propagation(&ts.nexus(0), DnsGroup::External).await.unwrap().unwrap();
    let result = &status.servers[&server.http_address.to_string()];
    assert_eq!(result.result, nexus_types::task_status::PropagationResult::Error, "{result:?}");
    explain(&ts, &[]).expect(
        "server",
        14,
        &[&server.http_address.to_string(), "claims generation 99", "latest is 2"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_content_differs_from_the_database() {
    let ts = scenario_with(|o| o.repair_servers = false).await;
    let server = external(&ts, 1);
    // A rogue write of generation 3 reaches the server first; then the real
    // generation 3 is committed with other content.
    let rogue = forged_config(&ts, 3, "203.0.113.66").await;
    server_client(&ts, server.http_address).config_put().body(rogue).send().await.unwrap();
    let v =
        change(&ts.nexus(0), DnsGroup::External, add_change("more", "cart", vec![a("192.0.2.20")]))
            .await;
    assert_eq!(v.generation, 3);
    propagation_of(&ts.nexus(0), DnsGroup::External, 3).await;
    explain(&ts, &[]).expect(
        "server",
        14,
        &[
            &server.http_address.to_string(),
            "serves generation 3",
            "the database's generation 3 has digest",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_propagation() {
    // Pushes may take long, and the activation waits for them: a hung
    // server holds it open.
    let ts = scenario_with(|o| {
        o.server_timeout_secs = 60.0;
        o.detach_after_secs = 60.0;
    })
    .await;
    let server = external(&ts, 1);
    server.freeze().unwrap();
    let v =
        change(&ts.nexus(0), DnsGroup::External, add_change("more", "cart", vec![a("192.0.2.20")]))
            .await;
    // Wait until the activation reports the healthy server done and the
    // hung one pending.
    let pending = server.http_address.to_string();
    wait_for("a running propagation", || async {
        let task =
            task(&ts.nexus(0), &DnsTaskName::propagation(DnsGroup::External).to_string()).await;
        match task.current {
            background_task_types::CurrentStatus::Running { progress: Some(p), .. }
                if p["generation"] == v.generation
                    && p["pending"] == serde_json::json!([pending]) =>
            {
                Some(())
            }
            _ => None,
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = explain(&ts, &["--stuck-after", "1"]);
    server.thaw().unwrap();
    out.expect(
        "propagation",
        13,
        &[
            "propagation of generation 3 has been running since 20",
            &format!("still waiting on {pending}"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_answers_differ_from_its_config() {
    let mut ts = scenario().await;
    let index = ts.stack.dns_servers.iter().position(|s| s.group == DnsGroup::External).unwrap();
    let reported = ts.stack.dns_servers[index].dns_address;
    // The real server moves behind a "proxy": it binds elsewhere but keeps
    // reporting its old address, where a stale process answers from an
    // older copy of the config.
    ts.stack.dns_servers[index].stop().await;
    // Generation 1 with other content: both its records and its serial
    // differ from what the real server reports.
    let stale = forged_config(&ts, 1, "198.51.100.7").await;
    let (_stale, _) = unregistered_server(&ts, "stale", &reported.to_string(), stale).await;
    let moved = SocketAddr::from(([127, 0, 0, 1], devstack::stack::free_port().unwrap()));
    ts.stack.dns_servers[index].restart_behind(moved, reported).await.unwrap();
    // A periodic push may have found the server stopped: every Nexus looks
    // again, so the one fault left is the one on the wire.
    let propagation = DnsTaskName::propagation(DnsGroup::External).to_string();
    for i in 0..ts.stack.nexus.len() {
        activate(&ts.nexus(i), &[&propagation]).await;
    }
    let out = explain(&ts, &[]);
    out.expect(
        "wire",
        15,
        &[
            &reported.to_string(),
            "reporting generation 2",
            "A 198.51.100.7",
            "generation 2 holds A 192.0.2.10",
            "SOA serial 1 where the server reports generation 2",
        ],
    );
    doc_shows("wire", &out);

    // `dns status` sees the same through the SOA serial, and who answered.
    let (code, status, _) = run_omdb(&ts, &["dns", "status", "external"]);
    assert_eq!(code, 1, "{status}");
    assert!(status.contains("DIFFERS (UDP:1 TCP:1)"), "{status}");
    assert!(
        status.contains(&format!("DNS at {reported} over UDP is answered by server id")),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "DNS at {reported} over UDP answers SOA serial 1, but the server reports generation 2"
        )),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_nexus_reaches_the_other_at_once() {
    let ts = scenario().await;
    // Nexus 1's config task runs only hourly and on request: only Nexus 0's
    // notification can make it see generation 3 now.
    let v =
        change(&ts.nexus(0), DnsGroup::External, add_change("more", "cart", vec![a("192.0.2.20")]))
            .await;
    wait_for("Nexus 1 to load the change made through Nexus 0", || async {
        match config_status(&ts.nexus(1), DnsGroup::External).await {
            Some(Ok(s)) if s.generation == v.generation => Some(()),
            _ => None,
        }
    })
    .await;
}
