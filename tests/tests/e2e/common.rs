//! Helpers for end-to-end tests: a real stack per test, DNS changes through
//! Nexus's API, task statuses, and DNS queries to each server.

#![allow(dead_code)]

use background_task_types::{BackgroundTask, LastActivation};
use devstack::stack::DnsServer;
use devstack::{Stack, StackOptions};
use dns_types::{DnsChange, DnsGroup, DnsRecord, DnsVersion, NameRecords, NameRemoval};
use internal_dns::Resolver;
use nexus_types::task_name::DnsTaskName;
use nexus_types::task_status::{
    DnsConfigStatus, DnsPropagationStatus, DnsServersStatus, PropagationReport,
};
use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const ZONE: &str = "control-plane.internal";
/// How long any awaited condition may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(30);
/// Nexus's limit for one push to one server in these tests.
pub const SERVER_TIMEOUT_SECS: f64 = 1.0;

pub struct TestStack {
    pub stack: Stack,
    pub dir: tempfile::TempDir,
}

impl TestStack {
    pub async fn start(internal: usize, external: usize, nexus: usize) -> TestStack {
        TestStack::start_with(internal, external, nexus, |_| {}).await
    }

    /// Like [`TestStack::start`], with `adjust` applied to the options last.
    pub async fn start_with(
        internal: usize,
        external: usize,
        nexus: usize,
        adjust: impl FnOnce(&mut StackOptions),
    ) -> TestStack {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StackOptions::new(dir.path().join("run"));
        options.internal_dns_servers = internal;
        options.external_dns_servers = external;
        options.nexus_instances = nexus;
        options.server_timeout_secs = SERVER_TIMEOUT_SECS;
        // Tests activate tasks explicitly or through changes, never by timer.
        options.task_period_secs = 3600;
        adjust(&mut options);
        let run_dir = options.run_dir.clone();
        let stack = match Stack::start(options).await {
            Ok(stack) => stack,
            Err(e) => panic!("starting the stack: {e:#}\n{}", log_tails(&run_dir)),
        };
        TestStack { stack, dir }
    }

    pub fn nexus(&self, i: usize) -> nexus_client::Client {
        self.stack.nexus[i].client()
    }

    pub fn internal_servers(&self) -> Vec<&DnsServer> {
        self.stack.servers(DnsGroup::Internal).collect()
    }
}

/// The last lines of every log in `dir`, to explain a failure.
pub fn log_tails(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {}\n{}\n",
                path.display(),
                lines[lines.len().saturating_sub(20)..].join("\n")
            ));
        }
    }
    out
}

pub fn a(ip: &str) -> DnsRecord {
    DnsRecord::A(ip.parse().unwrap())
}

pub fn add_change(comment: &str, name: &str, records: Vec<DnsRecord>) -> DnsChange {
    DnsChange {
        idempotency_key: None,
        comment: comment.into(),
        add: vec![NameRecords { name: name.into(), records }],
        remove: vec![],
    }
}

pub fn remove_change(comment: &str, name: &str, records: Option<Vec<DnsRecord>>) -> DnsChange {
    DnsChange {
        idempotency_key: None,
        comment: comment.into(),
        add: vec![],
        remove: vec![NameRemoval { name: name.into(), records }],
    }
}

pub async fn change(
    nexus: &nexus_client::Client,
    group: DnsGroup,
    change: DnsChange,
) -> DnsVersion {
    nexus
        .dns_change()
        .group(group)
        .body(change)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DNS change through Nexus failed: {e}"))
        .into_inner()
}

/// Polls `condition` until it returns `Some`, or fails after [`LIMIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {LIMIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The addresses `server` answers for `name` (relative to the internal
/// zone); `None` if it does not answer at all.
pub async fn answers(server: &DnsServer, name: &str) -> Option<Vec<IpAddr>> {
    let resolver = Resolver::new(vec![server.dns_address], Duration::from_millis(500));
    resolver.lookup_addresses(&format!("{name}.{ZONE}")).await.ok().map(|(_, a)| a)
}

pub async fn task(nexus: &nexus_client::Client, name: &str) -> BackgroundTask {
    nexus.bgtask_view().bgtask_name(name).send().await.unwrap().into_inner()
}

/// Activates tasks and waits for the activations.
pub async fn activate(nexus: &nexus_client::Client, names: &[&str]) {
    nexus
        .bgtask_activate()
        .body(nexus_client::types::BackgroundTasksActivateRequest {
            bgtask_names: names.iter().map(|n| n.to_string()).collect(),
            wait: true,
        })
        .send()
        .await
        .unwrap();
}

/// The task's last completed status, decoded, or its error.
pub async fn last_details<T: serde::de::DeserializeOwned>(
    nexus: &nexus_client::Client,
    name: &str,
) -> Option<Result<T, String>> {
    match task(nexus, name).await.last {
        LastActivation::NeverCompleted => None,
        LastActivation::Completed(record) => Some(match record.error() {
            Some(error) => Err(error.to_string()),
            None => Ok(serde_json::from_value(record.details.clone())
                .unwrap_or_else(|e| panic!("{name} status {}: {e}", record.details))),
        }),
    }
}

/// The last completed propagation; `None` also while the task reports that
/// it waits for its inputs (a Nexus starting).
pub async fn propagation(
    nexus: &nexus_client::Client,
    group: DnsGroup,
) -> Option<Result<DnsPropagationStatus, String>> {
    let name = DnsTaskName::propagation(group).to_string();
    match last_details::<PropagationReport>(nexus, &name).await? {
        Ok(PropagationReport::Done(status)) => Some(Ok(status)),
        Ok(PropagationReport::Waiting(_)) => None,
        Err(e) => Some(Err(e)),
    }
}

pub async fn config_status(
    nexus: &nexus_client::Client,
    group: DnsGroup,
) -> Option<Result<DnsConfigStatus, String>> {
    last_details(nexus, &DnsTaskName::config(group).to_string()).await
}

pub async fn servers_status(
    nexus: &nexus_client::Client,
    group: DnsGroup,
) -> Option<Result<DnsServersStatus, String>> {
    last_details(nexus, &DnsTaskName::servers(group).to_string()).await
}

/// Waits until the propagation task reports `generation` (success or not).
pub async fn propagation_of(
    nexus: &nexus_client::Client,
    group: DnsGroup,
    generation: u64,
) -> DnsPropagationStatus {
    wait_for(&format!("propagation of {group} generation {generation}"), || async {
        match propagation(nexus, group).await {
            Some(Ok(status)) if status.generation == generation => Some(status),
            _ => None,
        }
    })
    .await
}

/// Runs the omdb binary against `ts` (only `OMDB_DNS_SERVER`, from the
/// stack's first internal DNS server, and `OMDB_API_TOKEN_FILE` set): exit
/// status, stdout, stderr.
pub fn run_omdb(ts: &TestStack, args: &[&str]) -> (i32, String, String) {
    run_omdb_as(ts, args, true)
}

/// [`run_omdb`], with or without the API token.
pub fn run_omdb_as(ts: &TestStack, args: &[&str], with_token: bool) -> (i32, String, String) {
    let dns = ts.stack.internal_dns_addresses()[0].to_string();
    run_omdb_full(ts, &dns, args, with_token)
}

/// [`run_omdb`] with `OMDB_DNS_SERVER` set to `dns` (one address, or
/// several comma-separated).
pub fn run_omdb_with_dns(ts: &TestStack, dns: &str, args: &[&str]) -> (i32, String, String) {
    run_omdb_full(ts, dns, args, true)
}

fn run_omdb_full(
    ts: &TestStack,
    dns: &str,
    args: &[&str],
    with_token: bool,
) -> (i32, String, String) {
    let mut command = std::process::Command::new(test_support::process::binary("omdb").unwrap());
    command
        .args(args)
        .env("OMDB_DNS_SERVER", dns)
        .env_remove("OMDB_API_TOKEN_FILE")
        .env_remove("OMDB_NEXUS_URL")
        .env_remove("OMDB_DB_URL");
    if with_token {
        command.env("OMDB_API_TOKEN_FILE", &ts.stack.api_token_file);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Replaces what changes from run to run: times, ids, digests, ports,
/// durations.
pub fn redact(text: &str) -> String {
    let rules = [
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "<TIME>"),
        (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<UUID>"),
        (r"sha256:[0-9a-f]{64}", "sha256:<DIGEST>"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:<PORT>"),
        (r"\[fd00:1122:3344:[0-9a-f:]*\]:\d+", "[<IPV6>]:<PORT>"),
        (r"\(\d+s\)", "(<SECS>)"),
        (r"\b\d+(\.\d+)? ?(ms|s|µs)\b", "<DURATION>"),
    ];
    let mut text = text.to_string();
    for (pattern, replacement) in rules {
        text = regex::Regex::new(pattern).unwrap().replace_all(&text, replacement).into_owned();
    }
    text
}

/// The first line starting with `prefix` after `<!-- MARKER -->` in
/// docs/debugging-dns.md must be `line` (redacted): the doc shows what
/// omdb says now.
pub fn doc_line_matches(
    marker: &str,
    prefix: &str,
    line: &str,
    normalize: impl Fn(&str) -> String,
) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/debugging-dns.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let tag = format!("<!-- {marker} -->");
    let after =
        doc.split(&tag).nth(1).unwrap_or_else(|| panic!("docs/debugging-dns.md has no {tag}"));
    let shown = after.lines().find(|l| l.starts_with(prefix)).unwrap_or_default();
    assert_eq!(
        redact(&normalize(shown)),
        redact(line),
        "docs/debugging-dns.md ({marker}) no longer shows what omdb says; update it from:\n{line}"
    );
}
