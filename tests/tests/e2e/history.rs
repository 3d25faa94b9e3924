//! Questions about the past on a real stack: `omdb dns explain --at` from
//! the histories (a server frozen while a change landed; a bogus generation
//! served until a repair; a moment beyond what the servers keep), the live
//! explain naming a repair, `omdb dns timeline` over five servers with one
//! down, and a bundle taken with every Nexus stopped answering offline with
//! the live verdict.

use crate::common::*;
use chrono::{DateTime, Duration, Utc};
use dns_types::DnsGroup;
use nexus_types::task_name::DnsTaskName;
use std::net::SocketAddr;

const NAME: &str = "shop.example.test";

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn server_client(ts: &TestStack, address: SocketAddr) -> dns_server_client::Client {
    let http = ts
        .stack
        .api_token
        .client_builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    dns_server_client::Client::new_with_client(&format!("http://{address}"), http)
}

/// When `server` started serving `generation`, from its history.
async fn applied_at(ts: &TestStack, server: SocketAddr, generation: u64) -> DateTime<Utc> {
    let history = server_client(ts, server).history_get().send().await.unwrap().into_inner();
    history
        .events
        .iter()
        .filter(|e| e.event.serves() == Some(generation))
        .map(|e| e.time)
        .min()
        .unwrap_or_else(|| panic!("{server} never served {generation}: {history:?}"))
}

/// Waits until `moment` is in the past (omdb refuses a moment to come).
async fn until_past(moment: DateTime<Utc>) {
    if let Ok(wait) = (moment - Utc::now()).to_std() {
        tokio::time::sleep(wait + std::time::Duration::from_millis(10)).await;
    }
}

fn verdict(stdout: &str) -> &str {
    stdout.lines().next().unwrap_or_default()
}

async fn served_everywhere(ts: &TestStack, generation: u64) {
    for server in ts.stack.servers(DnsGroup::External) {
        wait_for("an external server to serve the change", || async {
            (ts.stack.server_generation(server).await.ok() == Some(generation)).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_at_a_moment_while_a_frozen_server_had_not_applied_the_change() {
    let ts = TestStack::start(1, 2, 2).await;
    let frozen = ts.stack.servers(DnsGroup::External).nth(1).unwrap();
    frozen.freeze().unwrap();
    let v = change(
        &ts.nexus(0),
        DnsGroup::External,
        add_change("shop opens", "shop", vec![a("192.0.2.10")]),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    frozen.thaw().unwrap();
    // The pushes during the freeze timed out; the next activation delivers.
    activate(&ts.nexus(0), &[&DnsTaskName::propagation(DnsGroup::External).to_string()]).await;
    served_everywhere(&ts, v.generation).await;
    let applied = applied_at(&ts, frozen.http_address, v.generation).await;
    assert!(
        applied - v.time_created > Duration::seconds(2),
        "applied {applied}, committed {}",
        v.time_created
    );

    // A moment between the commit and the frozen server's apply.
    let moment = v.time_created + Duration::seconds(1);
    let (code, stdout, stderr) = run_omdb(&ts, &["dns", "explain", NAME, "--at", &rfc3339(moment)]);
    let line = verdict(&stdout);
    eprintln!("{line}");
    assert!(line.starts_with("verdict: propagation: "), "{stdout}\n{stderr}");
    assert_eq!(code, 13, "{stdout}");
    for evidence in [
        frozen.http_address.to_string(),
        format!("generation {}, which added {NAME}", v.generation),
        format!("committed at {}", rfc3339(v.time_created)),
        format!("reached it at {}", rfc3339(applied)),
        "before propagation finished".to_string(),
    ] {
        assert!(line.contains(&evidence), "the verdict lacks {evidence:?}:\n{stdout}");
    }
    doc_line_matches("explain-at:frozen", "verdict: ", line, str::to_string);
    let (_, timeline, _) = run_omdb(&ts, &["dns", "timeline", "external"]);
    let summary = timeline.lines().find(|l| l.starts_with("summary: ")).unwrap_or_default();
    doc_line_matches("timeline:frozen", "summary: ", summary, str::to_string);
    // The same in JSON, with the moment.
    let (_, json, _) = run_omdb(&ts, &["--json", "dns", "explain", NAME, "--at", &rfc3339(moment)]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["verdict"]["stage"], "propagation");
    assert_eq!(json["at"], rfc3339(moment));

    // A moment after every server had it: healthy, saying what it could not check.
    let after = applied + Duration::milliseconds(200);
    until_past(after).await;
    let (code, stdout, stderr) = run_omdb(&ts, &["dns", "explain", NAME, "--at", &rfc3339(after)]);
    assert!(verdict(&stdout).starts_with("verdict: healthy: "), "{stdout}\n{stderr}");
    assert!(verdict(&stdout).contains("not kept in history"), "{stdout}");
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repaired_server_is_named_live_and_its_bad_window_is_a_server_verdict() {
    let ts = TestStack::start(1, 2, 1).await;
    let v = change(
        &ts.nexus(0),
        DnsGroup::External,
        add_change("shop opens", "shop", vec![a("192.0.2.10")]),
    )
    .await;
    served_everywhere(&ts, v.generation).await;
    let server = ts.stack.servers(DnsGroup::External).next().unwrap();
    let mut bogus = ts.stack.datastore.dns_config_read(DnsGroup::External, None).await.unwrap();
    bogus.generation = 1000;
    bogus.zones[0].names.insert("shop".into(), vec![a("203.0.113.66")]);
    server_client(&ts, server.http_address).config_put().body(bogus).send().await.unwrap();
    let bad_from = applied_at(&ts, server.http_address, 1000).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Nexus finds it beyond the database and repairs it.
    activate(&ts.nexus(0), &[&DnsTaskName::propagation(DnsGroup::External).to_string()]).await;
    served_everywhere(&ts, v.generation).await;

    let (code, stdout, stderr) = run_omdb(&ts, &["dns", "explain", NAME]);
    assert!(verdict(&stdout).starts_with("verdict: healthy: "), "{stdout}\n{stderr}");
    assert_eq!(code, 0);
    let repair = stdout
        .lines()
        .find(|l| l.contains("REPAIRED"))
        .unwrap_or_else(|| panic!("the live explain names no repair:\n{stdout}"));
    assert!(repair.contains("served generation 1000"), "{repair}");
    assert!(repair.contains(&format!("from {}", rfc3339(bad_from))), "{repair}");
    assert!(repair.contains("until repaired at"), "{repair}");

    let inside = bad_from + Duration::milliseconds(100);
    until_past(inside).await;
    let (code, stdout, _) = run_omdb(&ts, &["dns", "explain", NAME, "--at", &rfc3339(inside)]);
    eprintln!("{}", verdict(&stdout));
    assert!(verdict(&stdout).starts_with("verdict: server: "), "{stdout}");
    assert!(verdict(&stdout).contains("served generation 1000"), "{stdout}");
    assert!(verdict(&stdout).contains("until repaired at"), "{stdout}");
    assert_eq!(code, 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeline_over_five_servers_with_one_down() {
    let mut ts = TestStack::start(1, 5, 1).await;
    let down =
        ts.stack.dns_servers.iter_mut().filter(|s| s.group == DnsGroup::External).nth(2).unwrap();
    let down_address = down.http_address;
    down.stop().await;
    let v = change(
        &ts.nexus(0),
        DnsGroup::External,
        add_change("shop opens", "shop", vec![a("192.0.2.10")]),
    )
    .await;
    propagation_of(&ts.nexus(0), DnsGroup::External, v.generation).await;
    let (code, stdout, stderr) = run_omdb(&ts, &["dns", "timeline", "external"]);
    eprintln!("{stdout}");
    assert_eq!(code, 4, "{stdout}\n{stderr}");
    let summary = stdout.lines().find(|l| l.starts_with("summary: ")).unwrap();
    assert!(
        summary.contains(&format!("generation {} has not reached 1 of 5", v.generation)),
        "{summary}"
    );
    assert!(summary.contains(&down_address.to_string()), "{summary}");
    assert!(summary.contains("could not be asked"), "{summary}");
    // In time order: the commit first, at +0ms; each live server's apply;
    // the failed push to the one down.
    let rows: Vec<&str> =
        stdout.lines().filter(|l| l.trim_start().starts_with(['+', '-'])).collect();
    assert!(rows[0].contains("+0ms") && rows[0].contains("committed generation"), "{stdout}");
    assert_eq!(rows.iter().filter(|r| r.contains("applied generation")).count(), 4, "{stdout}");
    assert!(rows.iter().any(|r| r.contains(&format!("push to {down_address} FAILED"))), "{stdout}");

    // Brought back: the next push reaches it, and the summary says all.
    let down = ts.stack.dns_servers.iter_mut().find(|s| s.http_address == down_address).unwrap();
    down.restart().await.unwrap();
    activate(&ts.nexus(0), &[&DnsTaskName::propagation(DnsGroup::External).to_string()]).await;
    let (code, stdout, _) =
        run_omdb(&ts, &["dns", "timeline", "external", "--generation", &v.generation.to_string()]);
    let summary = stdout.lines().find(|l| l.starts_with("summary: ")).unwrap();
    assert!(summary.contains("reached all 5 external DNS servers"), "{stdout}");
    assert!(summary.contains("slowest"), "{summary}");
    assert_eq!(code, 0);
    let (_, json, _) = run_omdb(&ts, &["--json", "dns", "timeline", "external"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["reached_all"], true);
    assert_eq!(json["servers"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_taken_with_every_nexus_down_answers_offline_with_the_live_verdict() {
    let mut ts = TestStack::start(1, 2, 2).await;
    let v = change(
        &ts.nexus(0),
        DnsGroup::External,
        add_change("shop opens", "shop", vec![a("192.0.2.10")]),
    )
    .await;
    served_everywhere(&ts, v.generation).await;
    for nexus in &mut ts.stack.nexus {
        nexus.stop().await;
    }
    let bundle = ts.dir.path().join("bundle.tar.gz");
    let bundle_arg = bundle.display().to_string();
    let (code, stdout, stderr) =
        run_omdb(&ts, &["dns", "bundle", "--name", NAME, "--output", &bundle_arg]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("steps failed"), "{stdout}");
    let (live_code, live, _) = run_omdb(&ts, &["dns", "explain", NAME]);
    let (offline_code, offline, offline_err) =
        run_omdb(&ts, &["dns", "explain", NAME, "--from-bundle", &bundle_arg]);
    assert!(offline_err.contains("answering from the bundle"), "{offline_err}");
    assert!(verdict(&live).starts_with("verdict: nexus: "), "{live}");
    assert_eq!(verdict(&offline), verdict(&live), "offline:\n{offline}\nlive:\n{live}");
    assert_eq!(offline_code, live_code);
    // The timeline and --at answer from it too.
    let (code, stdout, _) =
        run_omdb(&ts, &["dns", "timeline", "external", "--from-bundle", &bundle_arg]);
    assert!(stdout.contains("summary: generation 2 reached all 2"), "{stdout}");
    assert_eq!(code, 0);
    let at = rfc3339(v.time_created - Duration::seconds(1));
    let (code, stdout, _) =
        run_omdb(&ts, &["dns", "explain", NAME, "--at", &at, "--from-bundle", &bundle_arg]);
    assert!(verdict(&stdout).starts_with("verdict: database: "), "{stdout}");
    assert_eq!(code, 10);
    // What could not be reached is in it, as errors; the token is not.
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&bundle).unwrap()));
    let mut names = Vec::new();
    let token = std::fs::read_to_string(&ts.stack.api_token_file).unwrap();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        names.push(entry.path().unwrap().display().to_string());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        assert!(!text.contains(token.trim()), "the API token is in {}", names.last().unwrap());
    }
    assert!(names.iter().any(|n| n.ends_with("manifest.json")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("nexus/") && n.ends_with("_err.txt")), "{names:?}");
    assert!(
        names.iter().any(|n| n.contains("servers/external/") && n.ends_with("history.json")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_at_a_moment_beyond_what_the_servers_keep_says_so() {
    let ts = TestStack::start_with(1, 2, 1, |o| o.dns_history_events = Some(4)).await;
    let first = change(
        &ts.nexus(0),
        DnsGroup::External,
        add_change("shop opens", "shop", vec![a("192.0.2.10")]),
    )
    .await;
    served_everywhere(&ts, first.generation).await;
    // A moment after the first change landed, before the next ones.
    let server = ts.stack.servers(DnsGroup::External).next().unwrap().http_address;
    let moment = applied_at(&ts, server, first.generation).await + Duration::milliseconds(50);
    until_past(moment + Duration::milliseconds(100)).await;
    for i in 0..6 {
        let v = change(
            &ts.nexus(0),
            DnsGroup::External,
            add_change("more", &format!("n{i}"), vec![a("192.0.2.20")]),
        )
        .await;
        // One apply per change on each server (changes made faster than
        // they propagate reach a server together, as one).
        served_everywhere(&ts, v.generation).await;
    }
    let (code, stdout, stderr) = run_omdb(&ts, &["dns", "explain", NAME, "--at", &rfc3339(moment)]);
    eprintln!("{}", verdict(&stdout));
    assert!(verdict(&stdout).starts_with("verdict: unknown: "), "{stdout}\n{stderr}");
    assert!(verdict(&stdout).contains("does not reach back"), "{stdout}");
    assert!(verdict(&stdout).contains("it holds everything since"), "{stdout}");
    assert_eq!(code, 1);
}
