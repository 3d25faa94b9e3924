//! Operating the stack: Prometheus metrics after a change (and valid under
//! `promtool check metrics`), health versus readiness on both services,
//! `omdb -w nexus dns add --wait` receipts, task lints, completions.

use crate::common::*;
use dns_types::DnsGroup;
use std::time::Duration;

async fn scrape(address: impl std::fmt::Display) -> String {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.text().await.unwrap()
}

/// The value of the sample `name{labels}` (labels as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `promtool check metrics` on `text`, when promtool is on the machine
/// (CI installs it; elsewhere the check says it was skipped).
fn promtool_check(what: &str, text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not found: skipped `promtool check metrics` for {what}");
            return;
        }
        Err(e) => panic!("promtool is needed in CI (apt-get install prometheus): {e}"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed for {what}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn get_status(url: String) -> (u16, serde_json::Value) {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_export_what_happened_after_a_change() {
    let ts = TestStack::start(2, 0, 1).await;
    let v =
        change(&ts.nexus(0), DnsGroup::Internal, add_change("metrics", "m1", vec![a("192.0.2.1")]))
            .await;
    propagation_of(&ts.nexus(0), DnsGroup::Internal, v.generation).await;
    let servers = ts.internal_servers();
    assert!(answers(servers[0], "m1").await.is_some_and(|a| !a.is_empty()));

    let text = scrape(servers[0].http_address).await;
    promtool_check("the DNS server", &text);
    assert_eq!(sample(&text, "dns_server_generation"), Some(v.generation as f64), "{text}");
    let answered =
        sample(&text, r#"dns_server_queries_total{transport="udp",qtype="A",rcode="NOERROR"}"#);
    assert!(answered.is_some_and(|n| n >= 1.0), "{text}");
    let applied = sample(&text, r#"dns_server_config_applies_total{kind="put",outcome="applied"}"#);
    assert!(applied.is_some_and(|n| n >= 1.0), "{text}");
    assert!(sample(&text, r#"dns_server_zone_names{zone="control-plane.internal"}"#).is_some());
    let applied_at = sample(&text, "dns_server_generation_applied_timestamp_seconds").unwrap();
    assert!(applied_at > 1.7e9, "{applied_at}");

    let text = scrape(ts.stack.nexus[0].address).await;
    promtool_check("Nexus", &text);
    let loaded = sample(&text, r#"nexus_dns_generation_loaded{group="internal"}"#);
    assert_eq!(loaded, Some(v.generation as f64), "{text}");
    for server in &servers {
        let labels = format!(r#"{{group="internal",server="{}"}}"#, server.http_address);
        let applied = sample(&text, &format!("nexus_dns_server_generation_applied{labels}"));
        assert_eq!(applied, Some(v.generation as f64), "{labels}: {text}");
        let failures = sample(&text, &format!("nexus_dns_server_consecutive_failures{labels}"));
        assert_eq!(failures, Some(0.0));
        assert!(
            sample(&text, &format!("nexus_dns_server_last_success_timestamp_seconds{labels}"))
                .is_some()
        );
    }
    let latency = sample(&text, r#"nexus_dns_propagation_latency_seconds_count{group="internal"}"#);
    assert!(latency.is_some_and(|n| n >= 2.0), "one sample per server at least: {text}");
    let sum =
        sample(&text, r#"nexus_dns_propagation_latency_seconds_sum{group="internal"}"#).unwrap();
    assert!(sum > 0.0 && sum < 60.0, "{sum}");
    let done = sample(
        &text,
        r#"nexus_task_activations_total{task="dns_config_internal",reason="request",outcome="succeeded"}"#,
    );
    assert!(done.is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(
        sample(&text, r#"nexus_task_lint{task="dns_propagation_internal",lint="server_failing"}"#),
        Some(0.0)
    );
    // No DNS name or comment ever becomes a label.
    assert!(!text.contains("m1") && !text.contains("metrics\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_are_kept_apart() {
    // Both groups have servers: a group nobody serves is not ready.
    let mut ts = TestStack::start(2, 1, 1).await;
    let nexus = ts.stack.nexus[0].url();
    let (code, ready) = get_status(format!("{nexus}/ready")).await;
    assert_eq!(code, 200, "{ready}");
    let latest = ts.stack.datastore.dns_version_latest(DnsGroup::Internal).await.unwrap();
    assert_eq!(ready["groups"][0]["generation"], latest.generation);

    // A server misses a change: Nexus is alive but not ready, and says why.
    let behind = ts.stack.dns_servers[1].http_address;
    ts.stack.dns_servers[1].stop().await;
    let v =
        change(&ts.nexus(0), DnsGroup::Internal, add_change("ready?", "r1", vec![a("192.0.2.2")]))
            .await;
    propagation_of(&ts.nexus(0), DnsGroup::Internal, v.generation).await;
    let (code, _) = get_status(format!("{nexus}/health")).await;
    assert_eq!(code, 200);
    let (code, body) = get_status(format!("{nexus}/ready")).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error_code"], "NotReady");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(&behind.to_string()), "{message}");
    assert!(message.contains(&format!("not at generation {}", v.generation)), "{message}");

    // The lint names the failing server; the metric says so too.
    let (code, out, err) =
        run_omdb(&ts, &["nexus", "background-tasks", "show", "dns_propagation_internal"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("LINT SERVER FAILING: {behind} since")), "{out}");
    let (_, list, _) = run_omdb(&ts, &["nexus", "background-tasks", "list"]);
    assert!(
        list.lines()
            .any(|l| l.contains("dns_propagation_internal") && l.contains("server_failing")),
        "{list}"
    );
    let text = scrape(ts.stack.nexus[0].address).await;
    assert_eq!(
        sample(&text, r#"nexus_task_lint{task="dns_propagation_internal",lint="server_failing"}"#),
        Some(1.0),
        "{text}"
    );

    // The failure is in Nexus's log, inside the span of the activation that
    // met it.
    let log = std::fs::read_to_string(ts.stack.nexus[0].log()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("DNS propagation failed") && l.contains(&behind.to_string()))
        .unwrap_or_else(|| panic!("no failure logged:\n{log}"));
    assert!(line.contains("activation{task=dns_propagation_internal iteration="), "{line}");

    // The server comes back with no config at all: alive, not ready.
    std::fs::remove_dir_all(&ts.stack.dns_servers[1].storage_dir).unwrap();
    ts.stack.dns_servers[1].restart().await.unwrap();
    let (code, _) = get_status(format!("http://{behind}/health")).await;
    assert_eq!(code, 200);
    let (code, body) = get_status(format!("http://{behind}/ready")).await;
    assert_eq!(code, 503, "{body}");
    assert!(body["message"].as_str().unwrap().contains("has not been given a config"), "{body}");
    activate(&ts.nexus(0), &["dns_propagation_internal"]).await;
    let (code, body) = get_status(format!("http://{behind}/ready")).await;
    assert_eq!((code, body["generation"].as_u64()), (200, Some(v.generation)), "{body}");
    let (code, body) = get_status(format!("{nexus}/ready")).await;
    assert_eq!(code, 200, "ready again once every server caught up: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_wait_for_receipts_from_every_server() {
    let mut ts = TestStack::start(2, 0, 1).await;
    let add = [
        "-w",
        "nexus",
        "dns",
        "add",
        "internal",
        "w1",
        "A",
        "192.0.2.3",
        "--comment",
        "c",
        "--wait",
    ];
    let (code, out, err) = run_omdb(&ts, &add);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("served by 2 of 2 internal DNS servers"), "{out}");
    let latest = ts.stack.datastore.dns_version_latest(DnsGroup::Internal).await.unwrap();
    for server in ts.internal_servers() {
        let id = server.id.to_string();
        let receipt = out.lines().find(|l| l.contains(&server.http_address.to_string())).unwrap();
        assert!(
            receipt.contains(&id) && receipt.contains(&format!("generation {}", latest.generation)),
            "{out}"
        );
        assert!(receipt.contains("applied at 20") && receipt.contains("digest "), "{receipt}");
    }

    // One server down: the change is committed, the receipt names the
    // server that did not take it, and the exit status says so.
    let down = ts.stack.dns_servers[1].http_address;
    ts.stack.dns_servers[1].stop().await;
    let remove = [
        "--json",
        "-w",
        "nexus",
        "dns",
        "remove",
        "internal",
        "w1",
        "--comment",
        "c",
        "--wait",
        "--timeout",
        "2",
    ];
    let (code, out, _) = run_omdb(&ts, &remove);
    assert_eq!(code, 4, "{out}");
    let receipts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(receipts["served"].as_array().unwrap().len(), 1, "{receipts}");
    assert_eq!(receipts["missing"][0]["config_api"], down.to_string());
    assert!(receipts["missing"][0]["last_seen"].as_str().unwrap().contains("did not answer"));
    let after = ts.stack.datastore.dns_version_latest(DnsGroup::Internal).await.unwrap();
    assert_eq!(after.generation, latest.generation + 1, "the change itself was committed");

    // A hung server (stopped, its connections accepted by the kernel and
    // never answered) cannot stretch the wait past --timeout.
    ts.stack.dns_servers[1].restart().await.unwrap();
    ts.stack.dns_servers[1].freeze().unwrap();
    let add = ["-w", "nexus", "dns", "add", "internal", "w2", "A", "192.0.2.4", "--comment", "c"];
    let started = std::time::Instant::now();
    let (code, out, _) = run_omdb(&ts, &[&add[..], &["--wait", "--timeout", "2"]].concat());
    let took = started.elapsed();
    ts.stack.dns_servers[1].thaw().unwrap();
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("NOT SERVED by config API"), "{out}");
    // omdb's own start and the change take well under a second; the wait
    // is bounded by --timeout, not by the hung server's HTTP timeout (5 s).
    assert!(took < std::time::Duration::from_secs(4), "--timeout 2 took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_propagation_stuck_on_a_hung_server_is_linted() {
    let ts = TestStack::start_with(2, 0, 1, |o| {
        o.server_timeout_secs = 30.0;
        o.detach_after_secs = 30.0;
    })
    .await;
    let hung = ts.internal_servers()[1];
    hung.freeze().unwrap();
    // A new generation, so that there is something the frozen server must
    // be sent: activating alone may find every server already at the
    // latest (it did once under CI's load) and finish without a push.
    change(&ts.nexus(0), DnsGroup::Internal, add_change("stuck", "s1", vec![a("192.0.2.9")])).await;
    ts.nexus(0)
        .bgtask_activate()
        .body(nexus_client::types::BackgroundTasksActivateRequest {
            bgtask_names: vec!["dns_propagation_internal".into()],
            wait: false,
        })
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, out, err) = run_omdb(
        &ts,
        &["nexus", "background-tasks", "show", "dns_propagation_internal", "--stuck-after", "1"],
    );
    hung.thaw().unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("LINT STUCK: running since"), "{out}");
    assert!(out.contains("longer than 1s"), "{out}");
}

#[test]
fn completion_scripts_are_generated() {
    let omdb = test_support::process::binary("omdb").unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let output =
            std::process::Command::new(&omdb).args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8(output.stdout).unwrap();
        for word in ["explain", "background-tasks", "api-token-file"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    // The bash script is valid bash.
    let script = std::process::Command::new(&omdb).args(["completions", "bash"]).output().unwrap();
    let mut check = std::process::Command::new("bash")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), &script.stdout).unwrap();
    assert!(check.wait().unwrap().success(), "bash -n rejected the completion script");
    let bad = std::process::Command::new(&omdb).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "an unknown shell is a usage error");
}

/// devstack's Prometheus scrapes every component: each target is `up`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devstack_prometheus_scrapes_every_component() {
    if devstack::prometheus::find_binary().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have prometheus (apt-get install prometheus)"
        );
        eprintln!("no prometheus binary: skipped");
        return;
    }
    let ts = TestStack::start(1, 1, 1).await;
    let prometheus = devstack::prometheus::start(&ts.stack).await.unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let url = format!("http://{}/api/v1/query?query=up", prometheus.address);
    let up = wait_for("Prometheus to scrape all 3 targets", || async {
        let body: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        let results = body["data"]["result"].as_array()?.clone();
        (results.len() == 3 && results.iter().all(|r| r["value"][1] == "1")).then_some(results)
    })
    .await;
    let jobs: Vec<&str> = up.iter().filter_map(|r| r["metric"]["job"].as_str()).collect();
    assert_eq!(jobs.iter().filter(|j| **j == "dns-server").count(), 2, "{up:?}");
    assert_eq!(jobs.iter().filter(|j| **j == "nexus").count(), 1, "{up:?}");
    prometheus.process.stop().await;
}
