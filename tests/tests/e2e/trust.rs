//! Trust and data safety, against a real stack: writes need the token;
//! a server ahead of the database or diverged from it is repaired; inputs
//! are bounded with a 400 naming the item; a confirmed change survives a
//! database crash; a server restored from an old backup catches up and one
//! restored from a tampered backup refuses to start; a Nexus killed right
//! after committing loses nothing.

use crate::common::*;
use devstack::stack::Database;
use dns_types::{DnsGroup, DnsRecord, SrvRecord};
use nexus_types::task_name::DnsTaskName;
use nexus_types::task_status::{PropagationOutcome, PropagationResult};
use std::time::Duration;

/// An HTTP client that sends no token at all.
fn anonymous() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// An HTTP client that sends a wrong token.
fn impostor() -> reqwest::Client {
    api_auth::ApiToken::generate()
        .client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// An HTTP client that sends the stack's token.
fn trusted(ts: &TestStack) -> reqwest::Client {
    ts.stack.api_token.client_builder().timeout(Duration::from_secs(30)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_the_token_get_401_and_change_nothing() {
    let ts = TestStack::start(1, 0, 1).await;
    let server = &ts.internal_servers()[0];
    let nexus_url = ts.stack.nexus[0].url();
    let generation_before =
        ts.stack.datastore.dns_version_latest(DnsGroup::Internal).await.unwrap();
    let served_before = ts.stack.server_generation(server).await.unwrap();
    let iterations = task(&ts.nexus(0), "dns_config_internal").await.history.len();
    let mut forged = ts.stack.datastore.dns_config_read(DnsGroup::Internal, None).await.unwrap();
    forged.generation = 99;
    let change = add_change("intruder", "evil", vec![a("203.0.113.1")]);
    let activation = serde_json::json!({"bgtask_names": ["dns_config_internal"], "wait": true});
    let repair = serde_json::json!({
        "replaces": {"generation": served_before, "digest": null},
        "config": forged,
        "reason": "intruder",
    });

    for (who, http) in [("no token", anonymous()), ("a wrong token", impostor())] {
        let writes = [
            http.put(format!("http://{}/config", server.http_address)).json(&forged),
            http.put(format!("http://{}/config/repair", server.http_address)).json(&repair),
            http.post(format!("{nexus_url}/dns/internal/changes")).json(&change),
            http.post(format!("{nexus_url}/bgtasks/activate")).json(&activation),
        ];
        for request in writes {
            let response = request.send().await.unwrap();
            let url = response.url().clone();
            assert_eq!(response.status().as_u16(), 401, "{who}: {url}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer", "{who}: {url}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error_code"], "Unauthorized", "{who}: {url}: {body}");
            assert!(body["message"].as_str().unwrap().contains("nothing was changed"), "{body}");
        }
    }
    // Nothing changed anywhere.
    let generation_after = ts.stack.datastore.dns_version_latest(DnsGroup::Internal).await.unwrap();
    assert_eq!(generation_after.generation, generation_before.generation);
    assert_eq!(ts.stack.server_generation(server).await.unwrap(), served_before);
    assert_eq!(task(&ts.nexus(0), "dns_config_internal").await.history.len(), iterations);
    // Reads stay open.
    let status = anonymous().get(format!("http://{}/status", server.http_address)).send().await;
    assert_eq!(status.unwrap().status().as_u16(), 200);
    let tasks = anonymous().get(format!("{nexus_url}/bgtasks")).send().await.unwrap();
    assert_eq!(tasks.status().as_u16(), 200);
    // With the token, the same change goes through.
    let response = trusted(&ts)
        .post(format!("{nexus_url}/dns/internal/changes"))
        .json(&add_change("trusted", "friend", vec![a("192.0.2.1")]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // omdb: -w without a token file says where to get one.
    let (code, _, err) = run_omdb_as(
        &ts,
        &["-w", "nexus", "dns", "add", "internal", "x", "A", "192.0.2.9", "--comment", "c"],
        false,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("needs the API token") && err.contains("OMDB_API_TOKEN_FILE"), "{err}");

    // The token is in no log.
    let token = std::fs::read_to_string(&ts.stack.api_token_file).unwrap();
    for log in ts.stack.logs() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.contains(token.trim()), "the token appears in {}", log.display());
    }
}

/// A server given a generation the database does not have (by a holder of
/// the token: a bug, or a restored database that lost generations) is put
/// back by Nexus, which says so; `dns status` is green again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_ahead_of_the_database_is_repaired_with_evidence() {
    let ts = TestStack::start(2, 0, 1).await;
    let odd = &ts.internal_servers()[1];
    let latest = ts.stack.datastore.dns_config_read(DnsGroup::Internal, None).await.unwrap();
    let mut bogus = latest.clone();
    bogus.generation = 4_000_000_000;
    bogus.zones[0].names.insert("rogue".into(), vec![a("203.0.113.66")]);
    let put = trusted(&ts)
        .put(format!("http://{}/config", odd.http_address))
        .json(&bogus)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 204);
    let (code, out, _) = run_omdb(&ts, &["dns", "status", "internal"]);
    assert_eq!(code, 1, "the fault shows before the repair:\n{out}");
    assert!(out.contains("beyond the database"), "{out}");

    activate(&ts.nexus(0), &["dns_propagation_internal"]).await;
    let status = propagation(&ts.nexus(0), DnsGroup::Internal).await.unwrap().unwrap();
    let result = &status.servers[&odd.http_address.to_string()];
    assert_eq!(result.outcome, PropagationOutcome::Repaired, "{result:?}");
    assert_eq!(result.result, PropagationResult::Success);
    assert!(result.message.contains("claims generation 4000000000"), "{}", result.message);
    assert_eq!(ts.stack.server_generation(odd).await.unwrap(), latest.generation);
    assert_eq!(answers(odd, "rogue").await, Some(vec![]), "the rogue name is gone");

    // The server keeps its own record of the repair.
    let server_status: serde_json::Value = anonymous()
        .get(format!("http://{}/status", odd.http_address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(server_status["last_repair"]["replaced"]["generation"], 4_000_000_000u64);
    assert_eq!(server_status["last_repair"]["generation"], latest.generation);

    let (code, out, err) =
        run_omdb(&ts, &["nexus", "background-tasks", "show", "dns_propagation_internal"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("REPAIRED {}", odd.http_address)), "{out}");
    assert!(out.contains("it served generation 4000000000"), "{out}");
    let (code, out, _) = run_omdb(&ts, &["dns", "status", "internal"]);
    assert_eq!(code, 0, "green again after the repair:\n{out}");

    // A repair naming what the server no longer serves changes nothing.
    let stale = serde_json::json!({
        "replaces": {"generation": 4_000_000_000u64, "digest": null},
        "config": bogus,
        "reason": "stale view",
    });
    let response = trusted(&ts)
        .put(format!("http://{}/config/repair", odd.http_address))
        .json(&stale)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error_code"], "RepairPreconditionFailed", "{body}");
    assert_eq!(ts.stack.server_generation(odd).await.unwrap(), latest.generation);
}

/// Every bound, through the real APIs: a 400 naming the item, and nothing
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_beyond_the_bounds_get_400_naming_the_item() {
    let ts = TestStack::start(1, 0, 1).await;
    let server = &ts.internal_servers()[0];
    let nexus_url = ts.stack.nexus[0].url();
    let http = trusted(&ts);
    let before = ts.stack.datastore.dns_version_latest(DnsGroup::Internal).await.unwrap();
    let srv = |target: &str| {
        DnsRecord::Srv(SrvRecord { prio: 0, weight: 0, port: 80, target: target.into() })
    };
    let many_txt: Vec<DnsRecord> =
        (0..20).map(|i| DnsRecord::Txt(format!("{i:04}{}", "x".repeat(3990)))).collect();
    let changes = [
        (
            serde_json::to_value(add_change(&"c".repeat(2000), "n", vec![a("192.0.2.1")])).unwrap(),
            "comment is 2000 bytes long",
        ),
        (
            serde_json::to_value(add_change("nul\0here", "n", vec![a("192.0.2.1")])).unwrap(),
            "control character U+0000",
        ),
        (
            serde_json::to_value(add_change("c", "n", vec![DnsRecord::Txt("a\0b".into())]))
                .unwrap(),
            "TXT data contains the control character U+0000",
        ),
        (
            serde_json::json!({"comment": "c", "add": [{"name": "n", "records": []}]}),
            "adds no records for name \"n\"",
        ),
        (
            serde_json::json!({"comment": "c", "remove": [{"name": "n", "records": []}]}),
            "removes no records for name \"n\"",
        ),
        (serde_json::json!({"comment": "c"}), "adds and removes nothing"),
        (
            serde_json::to_value(add_change("c", "_http._tcp", vec![srv("web")])).unwrap(),
            "SRV target \"web\" is a single label",
        ),
        (
            serde_json::to_value(add_change("c", "www", vec![DnsRecord::Cname("host".into())]))
                .unwrap(),
            "CNAME target \"host\" is a single label",
        ),
        (serde_json::to_value(add_change("c", "big", many_txt)).unwrap(), "bytes on the wire"),
    ];
    for (body, expected) in changes {
        let response = http
            .post(format!("{nexus_url}/dns/internal/changes"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        let message = body["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{expected}: {body}");
        assert!(message.contains(expected), "expected {expected:?} in {message}");
    }
    let after = ts.stack.datastore.dns_version_latest(DnsGroup::Internal).await.unwrap();
    assert_eq!(after.generation, before.generation, "nothing was written");

    // Activations: none, too many, twice the same.
    let too_many: Vec<String> = (0..65).map(|i| format!("task{i}")).collect();
    for (names, expected) in [
        (vec![], "at least one task"),
        (too_many, "65 task names given"),
        (vec!["dns_config_internal".to_string(); 2], "named more than once"),
    ] {
        let response = http
            .post(format!("{nexus_url}/bgtasks/activate"))
            .json(&serde_json::json!({"bgtask_names": names, "wait": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{expected}");
        assert!(response.text().await.unwrap().contains(expected), "{expected}");
    }

    // Trailing bytes after a JSON body, to both services.
    let good = serde_json::to_string(&add_change("c", "n", vec![a("192.0.2.1")])).unwrap();
    let response = http
        .post(format!("{nexus_url}/dns/internal/changes"))
        .header("content-type", "application/json")
        .body(format!("{good} trailing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400, "trailing bytes to Nexus");
    let config = ts.stack.datastore.dns_config_read(DnsGroup::Internal, None).await.unwrap();
    let mut next = config.clone();
    next.generation += 1;
    let response = http
        .put(format!("http://{}/config", server.http_address))
        .header("content-type", "application/json")
        .body(format!("{}{{}}", serde_json::to_string(&next).unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400, "trailing bytes to a DNS server");

    // A generation beyond the 32-bit SOA serial, and NUL in a comment.
    let mut huge = config.clone();
    huge.generation = u64::from(u32::MAX) + 1;
    let mut nul = next.clone();
    nul.comment = "a\0b".into();
    for (config, expected) in [(huge, "does not fit the 32-bit SOA serial"), (nul, "U+0000")] {
        let response = http
            .put(format!("http://{}/config", server.http_address))
            .json(&config)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{expected}");
        assert!(response.text().await.unwrap().contains(expected), "{expected}");
    }
    assert_eq!(ts.stack.server_generation(server).await.unwrap(), config.generation);
}

/// devstack's PostgreSQL keeps its durability: a change confirmed by Nexus
/// is there after PostgreSQL is killed outright and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_change_survives_a_database_crash() {
    let mut ts = TestStack::start(1, 0, 1).await;
    let Database::Local(pg) = &ts.stack.database else { panic!("devstack started no database") };
    assert_eq!(pg.durability(), local_postgres::Durability::Durable);
    let mut confirmed = Vec::new();
    for i in 0..5 {
        let name = format!("kept{i}");
        let version = change(
            &ts.nexus(0),
            DnsGroup::Internal,
            add_change("keep me", &name, vec![a("192.0.2.7")]),
        )
        .await;
        confirmed.push((name, version.generation));
    }
    let Database::Local(pg) = &mut ts.stack.database else { unreachable!() };
    pg.crash();
    pg.start_again().unwrap();
    let datastore = &ts.stack.datastore;
    let latest = wait_for("the database to answer again", || async {
        datastore.dns_config_read(DnsGroup::Internal, None).await.ok()
    })
    .await;
    let (_, last_generation) = confirmed.last().unwrap();
    assert!(latest.generation >= *last_generation, "generation {} lost", last_generation);
    for (name, generation) in &confirmed {
        let names = &latest.zones[0].names;
        assert!(names.contains_key(name), "{name} (generation {generation}) was lost");
    }
}

/// A DNS server restored from an old backup comes back behind and is
/// brought up to date; one restored from a tampered backup refuses to start,
/// naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_restored_from_old_or_tampered_backups() {
    let mut ts = TestStack::start(2, 0, 1).await;
    let storage = ts.internal_servers()[1].storage_dir.clone();
    // A backup is the storage directory: the snapshot and its journal.
    let backup = ts.dir.path().join("backup.json");
    let backup_journal = ts.dir.path().join("backup.jsonl");
    std::fs::copy(storage.join("config.json"), &backup).unwrap();
    std::fs::copy(storage.join("journal.jsonl"), &backup_journal).unwrap();
    let v = change(
        &ts.nexus(0),
        DnsGroup::Internal,
        add_change("after the backup", "late", vec![a("192.0.2.8")]),
    )
    .await;
    propagation_of(&ts.nexus(0), DnsGroup::Internal, v.generation).await;

    // Old backup: it serves the old generation, then catches up.
    let server = &mut ts.stack.dns_servers[1];
    server.stop().await;
    std::fs::copy(&backup, storage.join("config.json")).unwrap();
    std::fs::copy(&backup_journal, storage.join("journal.jsonl")).unwrap();
    server.restart().await.unwrap();
    let server = &ts.stack.dns_servers[1];
    assert_eq!(ts.stack.server_generation(server).await.unwrap(), v.generation - 1);
    activate(&ts.nexus(0), &["dns_propagation_internal"]).await;
    assert_eq!(ts.stack.server_generation(server).await.unwrap(), v.generation);

    // Tampered backup: other valid JSON, a changed address.
    let server = &mut ts.stack.dns_servers[1];
    server.stop().await;
    let text = std::fs::read_to_string(&backup).unwrap();
    let tampered = text.replacen("127.0.0.1", "127.0.0.2", 1);
    assert_ne!(text, tampered);
    std::fs::write(storage.join("config.json"), tampered).unwrap();
    let error = format!("{:#}", server.restart().await.unwrap_err());
    assert!(error.contains("was altered"), "{error}");
    assert!(error.contains(&storage.join("config.json").display().to_string()), "{error}");
}

/// A Nexus killed right after committing a change loses nothing: the
/// change is in the database, and another Nexus propagates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nexus_killed_right_after_committing_loses_nothing() {
    let mut ts = TestStack::start(2, 0, 2).await;
    let v = change(
        &ts.nexus(0),
        DnsGroup::Internal,
        add_change("then die", "orphan", vec![a("192.0.2.9")]),
    )
    .await;
    ts.stack.nexus[0].process.take().unwrap().kill().await;
    let other = ts.nexus(1);
    activate(&other, &[&DnsTaskName::config(DnsGroup::Internal).to_string()]).await;
    propagation_of(&other, DnsGroup::Internal, v.generation).await;
    for server in ts.internal_servers() {
        let served = wait_for("the orphaned change to be served", || async {
            answers(server, "orphan").await.filter(|a| !a.is_empty())
        })
        .await;
        assert_eq!(served, vec!["192.0.2.9".parse::<std::net::IpAddr>().unwrap()]);
    }
}

/// Both HTTP APIs close connections that sit idle, or whose request stopped
/// arriving half-way, after their limit; a request whose handler takes
/// longer than the limit still gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed() {
    let ts = TestStack::start_with(2, 0, 1, |o| {
        o.http_idle_timeout_secs = 1.0;
        o.server_timeout_secs = 3.0;
        // The activation waits for the hung server below (a long request).
        o.detach_after_secs = 3.0;
    })
    .await;
    let server = ts.internal_servers()[0].http_address;
    let nexus = ts.stack.nexus[0].address;
    let half_body = "PUT /config HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                     Content-Length: 1000\r\n\r\n{\"generation\": ";
    let mut waits = Vec::new();
    for address in [server, nexus] {
        for (what, sent) in [
            ("idle", ""),
            ("half-sent headers", "GET /status HTTP/1.1\r\nHost: x\r\n"),
            ("half-sent body", half_body),
        ] {
            waits.push(tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
                stream.write_all(sent.as_bytes()).await.unwrap();
                let started = std::time::Instant::now();
                let mut buffer = vec![0u8; 4096];
                let closed = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
                assert!(closed.is_ok(), "{what} connection to {address} still open after 10 s");
                (what, address, started.elapsed())
            }));
        }
    }
    for wait in waits {
        let (what, address, took) = wait.await.unwrap();
        assert!(took < Duration::from_secs(5), "{what} to {address}: closed after {took:?}");
    }

    // A handler that takes 3 s (a push to a hung server) is not cut off.
    // (A push may also fail at once, on a pooled connection the server's
    // own reaper closed a moment before: then ask again, since the point is
    // a long request.)
    ts.internal_servers()[1].freeze().unwrap();
    let mut longest = Duration::ZERO;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let statuses = ts
            .nexus(0)
            .bgtask_activate()
            .body(nexus_client::types::BackgroundTasksActivateRequest {
                bgtask_names: vec!["dns_propagation_internal".into()],
                wait: true,
            })
            .send()
            .await;
        assert!(statuses.is_ok(), "a long request was cut off: {statuses:?}");
        longest = longest.max(started.elapsed());
        if longest >= Duration::from_secs(2) {
            break;
        }
    }
    ts.internal_servers()[1].thaw().unwrap();
    assert!(longest >= Duration::from_secs(2), "the push never waited on the hung server");
}
