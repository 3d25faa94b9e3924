//! `omdb nexus ...`: a Nexus's background tasks, and DNS changes through it.

use crate::discovery::{Discovery, http_client, note};
use crate::format::{Output, period, table, timestamp, timestamp_ago};
use anyhow::{Context, bail};
use background_task_types::{ActivationRecord, BackgroundTask, CurrentStatus, LastActivation};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use dns_types::{DnsChange, DnsGroup, DnsRecord, DnsVersion, NameRecords, NameRemoval};
use nexus_types::lints::{DEFAULT_STUCK_AFTER, Lint, lint};
use nexus_types::task_name::DnsTaskName;
use nexus_types::task_status::{DnsPropagationStatus, PropagationResult};
use nexus_types::task_view::DnsTaskView;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Args)]
pub struct NexusArgs {
    #[command(subcommand)]
    command: NexusCommand,
}

#[derive(Subcommand)]
enum NexusCommand {
    /// Background tasks: what they are and what they last did.
    #[command(name = "background-tasks", subcommand)]
    BackgroundTasks(TasksCommand),
    /// Change DNS data through Nexus (needs -w).
    #[command(subcommand)]
    Dns(DnsCommand),
}

#[derive(Subcommand)]
enum TasksCommand {
    /// What each task is for.
    Doc,
    /// The tasks, with their period, state and lints.
    List {
        /// A running task counts as stuck after this long.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_STUCK_AFTER.as_secs())]
        stuck_after: u64,
    },
    /// What tasks last did: `all`, `dns_internal`, `dns_external`, or task names.
    Show {
        #[arg(default_value = "all")]
        tasks: Vec<String>,
        /// Ask every Nexus found in DNS, one after the other.
        #[arg(long)]
        all_nexus: bool,
        /// Also list each task's recent activations.
        #[arg(long)]
        history: bool,
        /// A running task counts as stuck after this long.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_STUCK_AFTER.as_secs())]
        stuck_after: u64,
    },
    /// Activate tasks now.
    Activate {
        #[arg(required = true)]
        tasks: Vec<String>,
        /// Wait for the activations to complete and show their results.
        #[arg(long)]
        wait: bool,
        /// With --wait: how long to wait before saying what is still running.
        #[arg(long, value_name = "SECS", default_value_t = 30, requires = "wait")]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum DnsCommand {
    /// Add a record to a name (creating the name): one new generation.
    Add {
        group: DnsGroup,
        /// Relative to the group's zone (`@` for the apex), or absolute.
        name: String,
        /// A, AAAA, SRV, NS, CNAME or TXT.
        #[arg(value_name = "TYPE")]
        rtype: String,
        /// The record data, e.g. `fd00::1` or "0 0 12221 host.example.test".
        data: String,
        /// Why the change is made (stored with the generation).
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove a name with all its records: one new generation.
    Remove {
        group: DnsGroup,
        name: String,
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// Exit status of a change that was committed but not served by every
/// server of its group within `--timeout`.
pub const EXIT_NOT_SERVED_EVERYWHERE: u8 = 4;

#[derive(Args, Clone, Copy)]
struct WaitArgs {
    /// Return only when every DNS server of the group serves the new
    /// generation, with a receipt per server (exit status 4 naming the
    /// servers that did not, within --timeout).
    #[arg(long)]
    wait: bool,
    /// With --wait: how long to wait.
    #[arg(long, value_name = "SECS", default_value_t = 30, requires = "wait")]
    timeout: u64,
}

fn client(url: &str) -> nexus_client::Client {
    nexus_client::Client::new_with_client(url, http_client())
}

pub async fn run(
    args: &NexusArgs,
    discovery: &Discovery,
    output: &Output,
    writes: &crate::WriteAccess,
) -> anyhow::Result<u8> {
    match &args.command {
        NexusCommand::BackgroundTasks(TasksCommand::Show {
            tasks,
            all_nexus: true,
            history,
            stuck_after,
        }) => {
            let view = View { history: *history, stuck_after: Duration::from_secs(*stuck_after) };
            show_all_nexus(discovery, tasks, output, view).await.map(|()| 0)
        }
        NexusCommand::BackgroundTasks(command) => {
            // A write is refused before anything is looked up.
            let token = match command {
                TasksCommand::Activate { .. } => Some(writes.token("activating background tasks")?),
                _ => None,
            };
            let url = discovery.nexus_url().await?;
            let nexus = client(&url);
            match command {
                TasksCommand::Doc => doc(&nexus, &url, output).await.map(|()| 0),
                TasksCommand::List { stuck_after } => {
                    list(&nexus, &url, output, Duration::from_secs(*stuck_after)).await.map(|()| 0)
                }
                TasksCommand::Show { tasks, history, stuck_after, .. } => {
                    let view =
                        View { history: *history, stuck_after: Duration::from_secs(*stuck_after) };
                    let statuses = fetch(&nexus, &url).await?;
                    let selected = select(&statuses, tasks)?;
                    if output.json {
                        output.json(
                            &selected.iter().map(|t| (&t.name, t)).collect::<BTreeMap<_, _>>(),
                        )?;
                        return Ok(0);
                    }
                    print!("{}", render_tasks(&selected, view));
                    Ok(0)
                }
                TasksCommand::Activate { tasks, wait, timeout } => {
                    let token = token.expect("checked above");
                    activate(&nexus, &token, &url, tasks, *wait, *timeout, output).await.map(|()| 0)
                }
            }
        }
        NexusCommand::Dns(command) => {
            let token = writes.token("changing DNS data")?;
            let (group, change, wait) = match command {
                DnsCommand::Add { group, name, rtype, data, comment, wait } => {
                    let record = DnsRecord::parse(rtype, data)?;
                    let add = vec![NameRecords { name: name.clone(), records: vec![record] }];
                    (*group, DnsChange { comment: comment.clone(), add, remove: vec![] }, *wait)
                }
                DnsCommand::Remove { group, name, comment, wait } => {
                    let remove = vec![NameRemoval { name: name.clone(), records: None }];
                    (*group, DnsChange { comment: comment.clone(), add: vec![], remove }, *wait)
                }
            };
            let url = discovery.nexus_url().await?;
            let writer = nexus_client::Client::new_with_client(
                &url,
                token
                    .client_builder()
                    .connect_timeout(crate::discovery::TIMEOUT)
                    .timeout(crate::discovery::TIMEOUT)
                    .build()?,
            );
            let version = writer
                .dns_change()
                .group(group)
                .body(change)
                .send()
                .await
                .map_err(|e| nexus_error(e, &url))?
                .into_inner();
            if wait.wait {
                let receipts = wait_until_served(discovery, group, &version, wait.timeout).await?;
                let code = if receipts.missing.is_empty() { 0 } else { EXIT_NOT_SERVED_EVERYWHERE };
                if output.json {
                    output.json(&receipts)?;
                } else {
                    print!("{}", render_receipts(&receipts));
                }
                return Ok(code);
            }
            if output.json {
                output.json(&version)?;
                return Ok(0);
            }
            println!("{}", created_line(&version));
            println!("propagation has started: omdb nexus background-tasks show dns_{group}");
            Ok(0)
        }
    }
}

/// What `--wait` found: the change, a receipt per server that serves it,
/// and the servers that did not within the limit.
#[derive(serde::Serialize)]
struct Receipts {
    change: DnsVersion,
    waited_secs: f64,
    served: Vec<Receipt>,
    missing: Vec<Missing>,
}

#[derive(serde::Serialize)]
struct Receipt {
    /// The server's config API.
    server: SocketAddr,
    id: uuid::Uuid,
    generation: u64,
    applied_at: Option<DateTime<Utc>>,
    digest: Option<String>,
}

#[derive(serde::Serialize)]
struct Missing {
    server: SocketAddr,
    /// What the server last said, or why it could not be asked.
    last_seen: String,
}

/// Polls every server of `group` (found in internal DNS) until each serves
/// `version`'s generation or later, or `timeout_secs` pass.
async fn wait_until_served(
    discovery: &Discovery,
    group: DnsGroup,
    version: &DnsVersion,
    timeout_secs: u64,
) -> anyhow::Result<Receipts> {
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(timeout_secs);
    let servers = discovery.dns_servers(group).await?;
    let mut served: Vec<Receipt> = Vec::new();
    let mut last_seen: BTreeMap<SocketAddr, String> = BTreeMap::new();
    loop {
        for (address, _) in &servers {
            if served.iter().any(|r| r.server == *address) {
                continue;
            }
            let client = dns_server_client::Client::new_with_client(
                &format!("http://{address}"),
                http_client(),
            );
            match client.status_get().send().await {
                Ok(status) if status.generation >= version.generation => {
                    served.push(Receipt {
                        server: *address,
                        id: status.id,
                        generation: status.generation,
                        applied_at: status.time_applied,
                        digest: status.applied_config_digest.clone(),
                    });
                }
                Ok(status) => {
                    last_seen.insert(*address, format!("serves generation {}", status.generation));
                }
                Err(e) => {
                    last_seen.insert(
                        *address,
                        format!("did not answer: {}", dns_types::error_chain(&e)),
                    );
                }
            }
        }
        if served.len() == servers.len() || std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served.sort_by_key(|r| r.server);
    let missing = servers
        .iter()
        .filter(|(address, _)| !served.iter().any(|r| r.server == *address))
        .map(|(address, _)| Missing {
            server: *address,
            last_seen: last_seen.get(address).cloned().unwrap_or_else(|| "not asked".into()),
        })
        .collect();
    Ok(Receipts {
        change: version.clone(),
        waited_secs: started.elapsed().as_secs_f64(),
        served,
        missing,
    })
}

/// "created GROUP DNS generation N at T (creator C): COMMENT"
fn created_line(v: &DnsVersion) -> String {
    format!(
        "created {} DNS generation {} at {} (creator {}): {:?}",
        v.group,
        v.generation,
        timestamp(v.time_created),
        v.creator,
        v.comment
    )
}

fn render_receipts(receipts: &Receipts) -> String {
    let mut out = String::new();
    let v = &receipts.change;
    let _ = writeln!(out, "{}", created_line(v));
    let total = receipts.served.len() + receipts.missing.len();
    let _ = writeln!(
        out,
        "served by {} of {total} {} DNS servers after {:.1}s:",
        receipts.served.len(),
        v.group,
        receipts.waited_secs
    );
    for r in &receipts.served {
        let _ = writeln!(
            out,
            "  {}  id {}  generation {}  applied at {}  digest {}",
            r.server,
            r.id,
            r.generation,
            r.applied_at.map(timestamp).unwrap_or_else(|| "-".into()),
            r.digest.as_deref().unwrap_or("-")
        );
    }
    for m in &receipts.missing {
        let _ = writeln!(out, "  NOT SERVED {}: {}", m.server, m.last_seen);
    }
    out
}

/// A Nexus client error as one line naming the Nexus.
fn nexus_error(error: nexus_client::Error<nexus_client::types::Error>, url: &str) -> anyhow::Error {
    match error {
        nexus_client::Error::ErrorResponse(response) => anyhow::anyhow!(
            "Nexus at {url} refused: HTTP {} {}: {}",
            response.status().as_u16(),
            response.error_code.as_deref().unwrap_or(""),
            response.message
        ),
        nexus_client::Error::CommunicationError(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            anyhow::anyhow!(
                "could not talk to Nexus at {url} (pass another with --nexus-internal-url): {message}"
            )
        }
        other => anyhow::anyhow!("talking to Nexus at {url}: {other}"),
    }
}

async fn fetch(
    nexus: &nexus_client::Client,
    url: &str,
) -> anyhow::Result<BTreeMap<String, BackgroundTask>> {
    Ok(nexus
        .bgtask_list()
        .send()
        .await
        .map_err(|e| nexus_error(e, url))?
        .into_inner()
        .into_iter()
        .collect())
}

async fn doc(nexus: &nexus_client::Client, url: &str, output: &Output) -> anyhow::Result<()> {
    let tasks = fetch(nexus, url).await?;
    if output.json {
        let docs: BTreeMap<&String, &String> =
            tasks.iter().map(|(n, t)| (n, &t.description)).collect();
        return output.json(&docs);
    }
    for (name, task) in &tasks {
        println!("task: {name:?}");
        println!("{}", wrap(&task.description, 4, 78));
        println!();
    }
    Ok(())
}

fn wrap(text: &str, indent: usize, width: usize) -> String {
    let prefix = " ".repeat(indent);
    let mut lines = vec![];
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > width {
            lines.push(format!("{prefix}{line}"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(format!("{prefix}{line}"));
    }
    lines.join("\n")
}

#[derive(tabled::Tabled)]
struct ListRow {
    #[tabled(rename = "TASK")]
    name: String,
    #[tabled(rename = "PERIOD")]
    period: String,
    #[tabled(rename = "CURRENTLY")]
    current: String,
    #[tabled(rename = "LAST_COMPLETED")]
    last: String,
    #[tabled(rename = "LINTS")]
    lints: String,
}

async fn list(
    nexus: &nexus_client::Client,
    url: &str,
    output: &Output,
    stuck_after: Duration,
) -> anyhow::Result<()> {
    let tasks = fetch(nexus, url).await?;
    let now = chrono::Utc::now();
    if output.json {
        let lints: BTreeMap<&String, Vec<Lint>> =
            tasks.iter().map(|(name, t)| (name, lint(t, now, stuck_after))).collect();
        return output.json(&lints);
    }
    let rows = tasks.values().map(|t| ListRow {
        lints: {
            let kinds: Vec<&str> = lint(t, now, stuck_after).iter().map(Lint::kind).collect();
            if kinds.is_empty() { "-".into() } else { kinds.join(", ") }
        },
        name: t.name.clone(),
        period: period(t.period),
        current: match &t.current {
            CurrentStatus::Idle => "idle".into(),
            CurrentStatus::Running { iteration, .. } => format!("running (iter {iteration})"),
        },
        last: match &t.last {
            LastActivation::NeverCompleted => "never".into(),
            LastActivation::Completed(r) => format!(
                "iter {} {}",
                r.iteration,
                if r.error().is_some() { "failed" } else { "ok" }
            ),
        },
    });
    println!("{}", table(rows, 0));
    Ok(())
}

/// The tasks named by `selectors`: `all`, `dns_internal` / `dns_external`
/// (the three tasks of the group, in pipeline order), or task names.
fn select<'a>(
    tasks: &'a BTreeMap<String, BackgroundTask>,
    selectors: &[String],
) -> anyhow::Result<Vec<&'a BackgroundTask>> {
    let mut selected: Vec<&BackgroundTask> = Vec::new();
    for selector in selectors {
        let group =
            DnsGroup::ALL.into_iter().find(|g| *selector == DnsTaskName::group_selector(*g));
        let names: Vec<String> = match (selector.as_str(), group) {
            ("all", _) => tasks.keys().cloned().collect(),
            (_, Some(group)) => {
                DnsTaskName::of_group(group).iter().map(|t| t.to_string()).collect()
            }
            (name, None) => vec![name.to_string()],
        };
        for name in names {
            let task = tasks.get(&name).with_context(|| {
                format!(
                    "no background task named {name:?} (known: all, dns_internal, dns_external, {})",
                    tasks.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            if !selected.iter().any(|t| t.name == task.name) {
                selected.push(task);
            }
        }
    }
    Ok(selected)
}

async fn show_all_nexus(
    discovery: &Discovery,
    selectors: &[String],
    output: &Output,
    view: View,
) -> anyhow::Result<()> {
    let urls = discovery.all_nexus_urls().await?;
    // The database's latest per group: what every Nexus should have.
    let mut database_latest: BTreeMap<DnsGroup, u64> = BTreeMap::new();
    match discovery.datastore().await {
        Ok(datastore) => {
            for group in DnsGroup::ALL {
                if let Ok(v) = datastore.dns_version_latest(group).await {
                    database_latest.insert(group, v.generation);
                }
            }
        }
        Err(e) => note(format!("not comparing with the database (could not reach it: {e:#})")),
    }
    let mut in_flight: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    let mut documents = BTreeMap::new();
    // task name → (Nexus, generation it last found or pushed)
    let mut generations: BTreeMap<String, Vec<(String, Option<u64>)>> = BTreeMap::new();
    for url in &urls {
        let nexus = client(url);
        let result = async {
            let status =
                nexus.status_get().send().await.map_err(|e| nexus_error(e, url))?.into_inner();
            let tasks = fetch(&nexus, url).await?;
            Ok::<_, anyhow::Error>((status, tasks))
        }
        .await;
        match result {
            Ok((status, tasks)) => {
                let selected = select(&tasks, selectors)?;
                for task in &selected {
                    if let CurrentStatus::Running { iteration, start_time, .. } = &task.current {
                        in_flight.push(format!(
                            "Nexus {}: {} iter {iteration} since {}",
                            status.id,
                            task.name,
                            timestamp_ago(*start_time)
                        ));
                    }
                    if let Some(generation) = DnsTaskView::of(task).generation() {
                        generations
                            .entry(task.name.clone())
                            .or_default()
                            .push((status.id.to_string(), generation));
                    }
                }
                if output.json {
                    let map: BTreeMap<&String, &BackgroundTask> =
                        selected.iter().map(|t| (&t.name, *t)).collect();
                    documents.insert(
                        url.clone(),
                        serde_json::json!({ "nexus_id": status.id, "tasks": map }),
                    );
                } else {
                    println!(
                        "=== Nexus {} at {url} (up since {}) ===",
                        status.id,
                        timestamp_ago(status.started_at)
                    );
                    print!("{}", render_tasks(&selected, view));
                }
            }
            Err(error) => {
                if output.json {
                    documents
                        .insert(url.clone(), serde_json::json!({ "error": format!("{error:#}") }));
                } else {
                    println!("=== Nexus at {url} ===");
                    println!("  NOT REACHABLE: {error:#}\n");
                }
                failures.push(url.clone());
            }
        }
    }
    if output.json {
        output.json(&documents)?;
    } else {
        print!("{}", render_agreement(&generations, &database_latest));
        if in_flight.is_empty() {
            println!("activations in flight: 0");
        } else {
            println!("activations in flight: {}", in_flight.len());
            for line in &in_flight {
                println!("  {line}");
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} Nexus instances could not be asked: {}",
            failures.len(),
            urls.len(),
            failures.join(", ")
        );
    }
    Ok(())
}

async fn activate(
    nexus: &nexus_client::Client,
    token: &api_auth::ApiToken,
    url: &str,
    tasks: &[String],
    wait: bool,
    timeout_secs: u64,
    output: &Output,
) -> anyhow::Result<()> {
    let request =
        nexus_client::types::BackgroundTasksActivateRequest { bgtask_names: tasks.to_vec(), wait };
    let statuses = if wait {
        // The activation may take longer than one ordinary request: wait
        // with our own limit, and if it passes, find out why (a Nexus that
        // stopped answering, or an activation still at work).
        let limit = std::time::Duration::from_secs(timeout_secs);
        let http = token
            .client_builder()
            .connect_timeout(crate::discovery::TIMEOUT)
            .timeout(limit)
            .build()?;
        let waiting = nexus_client::Client::new_with_client(url, http);
        match waiting.bgtask_activate().body(request).send().await {
            Ok(statuses) => statuses.into_inner(),
            Err(nexus_client::Error::CommunicationError(e)) if e.is_timeout() => {
                let statuses = fetch(nexus, url).await.map_err(|e| {
                    anyhow::anyhow!(
                        "Nexus at {url} did not answer within {timeout_secs}s and is now unreachable: {e:#}"
                    )
                })?;
                let statuses = statuses.into_iter().filter(|(n, _)| tasks.contains(n)).collect();
                bail!("{}", still_running(&statuses, timeout_secs).unwrap_or_else(|| format!(
                    "the activation did not report back within {timeout_secs}s, but no task is running now: \
                     omdb nexus background-tasks show {}", tasks.join(" ")
                )));
            }
            Err(e) => return Err(nexus_error(e, url)),
        }
    } else {
        let http = token
            .client_builder()
            .connect_timeout(crate::discovery::TIMEOUT)
            .timeout(crate::discovery::TIMEOUT)
            .build()?;
        nexus_client::Client::new_with_client(url, http)
            .bgtask_activate()
            .body(request)
            .send()
            .await
            .map_err(|e| nexus_error(e, url))?
            .into_inner()
    };
    let statuses: BTreeMap<String, BackgroundTask> = statuses.into_iter().collect();
    if output.json {
        output.json(&statuses)?;
    } else if wait {
        let selected: Vec<&BackgroundTask> = statuses.values().collect();
        print!("{}", render_tasks(&selected, View::default()));
    } else {
        note("activation requested; it runs in the background (use --wait to see its result)");
        for name in statuses.keys() {
            println!("activated: {name}");
        }
    }
    if wait && let Some(message) = still_running(&statuses, timeout_secs) {
        bail!("{message}");
    }
    Ok(())
}

/// "activation still running after N s", with what each running task says
/// it is doing; `None` when nothing runs.
fn still_running(tasks: &BTreeMap<String, BackgroundTask>, waited_secs: u64) -> Option<String> {
    let running: Vec<String> = tasks
        .values()
        .filter_map(|task| {
            let CurrentStatus::Running { iteration, start_time, .. } = &task.current else {
                return None;
            };
            let doing = match DnsTaskView::of(task) {
                DnsTaskView::Propagation { running: Some((_, Some(p))), .. } => format!(
                    ": propagating generation {}, {} servers done, still waiting on {}",
                    p.generation,
                    p.done.len(),
                    if p.pending.is_empty() { "none".to_string() } else { p.pending.join(", ") }
                ),
                _ => String::new(),
            };
            Some(format!(
                "{} iter {iteration} running since {}{doing}",
                task.name,
                timestamp_ago(*start_time)
            ))
        })
        .collect();
    (!running.is_empty()).then(|| {
        format!(
            "activation still running after {waited_secs}s (Nexus answers): {}",
            running.join("; ")
        )
    })
}

/// One line per DNS task saying whether every Nexus is at the same
/// generation, and whether that is the database's latest; if not, which is
/// where.
fn render_agreement(
    generations: &BTreeMap<String, Vec<(String, Option<u64>)>>,
    database_latest: &BTreeMap<DnsGroup, u64>,
) -> String {
    let mut out = String::from("=== agreement between Nexus instances and the database ===\n");
    let show = |g: &Option<u64>| g.map(|g| g.to_string()).unwrap_or_else(|| "none (failed)".into());
    for (task, seen) in generations {
        let latest = task.parse::<DnsTaskName>().ok().and_then(|t| database_latest.get(&t.group));
        let against = match latest {
            Some(latest) if seen.iter().all(|(_, g)| *g == Some(*latest)) => {
                " (the database's latest)".to_string()
            }
            Some(latest) => format!(" -- BEHIND the database's latest {latest}"),
            None => " (database not checked)".to_string(),
        };
        let distinct: std::collections::BTreeSet<_> = seen.iter().map(|(_, g)| g).collect();
        if distinct.len() == 1 {
            let _ = writeln!(
                out,
                "{task}: all {} at generation {}{against}",
                seen.len(),
                show(&seen[0].1)
            );
        } else {
            let each: Vec<String> =
                seen.iter().map(|(nexus, g)| format!("{nexus} at {}", show(g))).collect();
            let _ = writeln!(out, "{task}: DISAGREE: {}{against}", each.join(", "));
        }
    }
    out
}

/// How much of a task to show.
#[derive(Clone, Copy, Debug)]
pub struct View {
    /// Also each task's recent activations.
    pub history: bool,
    /// When a running task counts as stuck.
    pub stuck_after: Duration,
}

impl Default for View {
    fn default() -> Self {
        View { history: false, stuck_after: DEFAULT_STUCK_AFTER }
    }
}

/// Renders tasks the way the seed shows them, with the DNS tasks' evidence.
pub fn render_tasks(tasks: &[&BackgroundTask], view: View) -> String {
    let mut out = String::new();
    for task in tasks {
        render_task(&mut out, task, view);
        out.push('\n');
    }
    out
}

fn render_task(out: &mut String, task: &BackgroundTask, view: View) {
    let _ = writeln!(out, "task: {:?}", task.name);
    let _ = writeln!(out, "  configured period: {}", period(task.period));
    let lints = lint(task, chrono::Utc::now(), view.stuck_after);
    if lints.is_empty() {
        // Say what was checked: a task that never completed an activation
        // can only be checked for being stuck.
        let _ = writeln!(
            out,
            "  lints: {}",
            match task.last {
                LastActivation::Completed(_) => "none",
                LastActivation::NeverCompleted => "none found (no completed activation to check)",
            }
        );
    }
    for found in &lints {
        let _ = writeln!(out, "  LINT {found}");
    }
    match &task.current {
        CurrentStatus::Idle => {
            let _ = writeln!(out, "  currently executing: no");
        }
        CurrentStatus::Running { iteration, reason, start_time, .. } => {
            let _ = writeln!(
                out,
                "  currently executing: yes, iter {iteration}, triggered by {reason}\n    since {}",
                timestamp_ago(*start_time)
            );
            if let DnsTaskView::Propagation { running: Some((_, Some(progress))), .. } =
                DnsTaskView::of(task)
            {
                let _ = writeln!(
                    out,
                    "    propagating generation {}: {} servers done, still waiting on: {}",
                    progress.generation,
                    progress.done.len(),
                    if progress.pending.is_empty() {
                        "none".to_string()
                    } else {
                        progress.pending.join(", ")
                    }
                );
            }
        }
    }
    match &task.last {
        LastActivation::NeverCompleted => {
            let _ = writeln!(out, "  last completed activation: never");
        }
        LastActivation::Completed(record) => {
            let _ = writeln!(
                out,
                "  last completed activation: iter {}, triggered by {}",
                record.iteration, record.reason
            );
            let _ = writeln!(
                out,
                "    started at {} and ran for {}ms",
                timestamp_ago(record.start_time),
                record.elapsed.as_millis()
            );
            render_details(out, task, record);
        }
    }
    if view.history && !task.history.is_empty() {
        let _ = writeln!(out, "  recent activations (oldest first):");
        let rows = task.history.iter().map(|r| HistoryRow {
            iteration: r.iteration,
            started: timestamp(r.start_time),
            took: format!("{}ms", r.elapsed.as_millis()),
            reason: r.reason.to_string(),
            result: r.error().map(|e| format!("error: {e}")).unwrap_or_else(|| "ok".into()),
        });
        let _ = writeln!(out, "{}", table(rows, 4));
    }
}

#[derive(tabled::Tabled)]
struct HistoryRow {
    #[tabled(rename = "ITER")]
    iteration: u64,
    #[tabled(rename = "STARTED")]
    started: String,
    #[tabled(rename = "TOOK")]
    took: String,
    #[tabled(rename = "TRIGGERED_BY")]
    reason: String,
    #[tabled(rename = "RESULT")]
    result: String,
}

#[derive(tabled::Tabled)]
struct ServerRow {
    #[tabled(rename = "DNS_SERVER_ADDR")]
    address: String,
    #[tabled(rename = "TARGET")]
    target: String,
}

#[derive(tabled::Tabled)]
struct PropagationRow {
    #[tabled(rename = "DNS_SERVER_ADDR")]
    address: String,
    #[tabled(rename = "LAST_RESULT")]
    result: String,
    #[tabled(rename = "COMPLETED_AT")]
    completed_at: String,
    #[tabled(rename = "DETAIL")]
    detail: String,
}

fn render_details(out: &mut String, task: &BackgroundTask, record: &ActivationRecord) {
    match DnsTaskView::of(task) {
        DnsTaskView::Config { status, error, .. } => {
            if let Some(error) = &error {
                let _ = writeln!(out, "    error: {error}");
            }
            let Some(s) = status else {
                if error.is_none() {
                    render_raw(out, &record.details);
                }
                return;
            };
            let label = if error.is_some() {
                "last good generation (still being propagated)"
            } else {
                "last generation found"
            };
            let _ = writeln!(out, "    {label}: {}", s.generation);
            let _ = writeln!(
                out,
                "      created at {} by {}: {:?}",
                timestamp(s.time_created),
                s.creator,
                s.comment
            );
            let _ = writeln!(
                out,
                "      first seen by this Nexus at {}{}",
                timestamp_ago(s.first_seen_at),
                if s.changed { " (in this activation)" } else { "" }
            );
            let _ = writeln!(out, "      {} names, digest {}", s.names, s.digest);
            if let Some(load) = &s.load {
                let _ = writeln!(out, "      {load}");
            }
        }
        DnsTaskView::Servers { status: Some(s), .. } => {
            let _ = writeln!(
                out,
                "    servers found: {} (SRV {} via {})",
                s.servers.len(),
                s.service_name,
                s.resolved_via
            );
            let _ = writeln!(
                out,
                "      this list first seen at {}{}",
                timestamp_ago(s.discovered_at),
                if s.changed { " (in this activation)" } else { "" }
            );
            let rows = s
                .servers
                .iter()
                .map(|e| ServerRow { address: e.address.to_string(), target: e.target.clone() });
            let _ = writeln!(out, "\n{}", table(rows, 6));
        }
        DnsTaskView::Propagation { waiting: Some(w), .. } => {
            let _ = writeln!(
                out,
                "    waiting for {} (this Nexus is starting; nothing has been pushed yet)",
                w.waiting_for
                    .iter()
                    .map(|t| format!("{:?}", t.to_string()))
                    .collect::<Vec<_>>()
                    .join(" and ")
            );
        }
        DnsTaskView::Propagation { status: Some(s), .. } => render_propagation(out, &s),
        _ => match record.error() {
            Some(error) => {
                let _ = writeln!(out, "    error: {error}");
            }
            None => render_raw(out, &record.details),
        },
    }
}

/// A task omdb has no renderer for (or a status it cannot read): what the
/// task said, readably.
fn render_raw(out: &mut String, details: &serde_json::Value) {
    let pretty = serde_json::to_string_pretty(details).unwrap_or_else(|_| details.to_string());
    let _ = writeln!(out, "    details:");
    for line in pretty.lines() {
        let _ = writeln!(out, "      {line}");
    }
}

fn render_propagation(out: &mut String, s: &DnsPropagationStatus) {
    let failed = s.servers.values().filter(|r| r.result == PropagationResult::Error).count();
    let _ = writeln!(out, "    attempt to propagate generation: {}", s.generation);
    let _ = writeln!(
        out,
        "      generation found by {:?}, first seen at {}: {:?}",
        s.config_source.task.to_string(),
        timestamp(s.config_source.first_seen_at),
        s.config_source.comment
    );
    let _ = writeln!(
        out,
        "      to the {} servers found by {:?}, list first seen at {}",
        s.servers.len(),
        s.servers_source.task.to_string(),
        timestamp(s.servers_source.discovered_at)
    );
    let _ = writeln!(
        out,
        "      all servers done by {}: {} succeeded, {} failed",
        timestamp(s.all_done_at),
        s.servers.len() - failed,
        failed
    );
    let rows = s.servers.iter().map(|(address, r)| PropagationRow {
        address: address.clone(),
        result: match r.result {
            PropagationResult::Success => "success".into(),
            PropagationResult::Error => "error".into(),
        },
        completed_at: timestamp(r.completed_at),
        detail: r.message.clone(),
    });
    let _ = writeln!(out, "\n{}", table(rows, 6));
    let rows = s.servers.iter().map(|(address, r)| HistoryStateRow {
        address: address.clone(),
        applied: r.history.generation_applied.map(|g| g.to_string()).unwrap_or("-".into()),
        last_success: r.history.last_success_at.map(timestamp).unwrap_or("never".into()),
        failing_since: match r.history.failing_since {
            Some(t) => format!("{} ({} in a row)", timestamp(t), r.history.consecutive_failures),
            None => "-".into(),
        },
        last_push: r.history.last_push.as_ref().map(|p| p.to_string()).unwrap_or("-".into()),
    });
    let _ = writeln!(out, "\n      per server, since this Nexus started:");
    let _ = writeln!(out, "{}", table(rows, 6));
    for (address, r) in &s.servers {
        if let Some(repair) = &r.history.last_repair {
            let _ = writeln!(
                out,
                "      REPAIRED {address} at {}: it served generation {} (digest {}), now the \
                 database's generation {}: {}",
                timestamp(repair.repaired_at),
                repair.replaced_generation,
                repair.replaced_digest.as_deref().unwrap_or("none"),
                repair.generation,
                repair.reason
            );
        }
    }
}

#[derive(tabled::Tabled)]
struct HistoryStateRow {
    #[tabled(rename = "DNS_SERVER_ADDR")]
    address: String,
    #[tabled(rename = "GEN_APPLIED")]
    applied: String,
    #[tabled(rename = "LAST_SUCCESS")]
    last_success: String,
    #[tabled(rename = "FAILING_SINCE")]
    failing_since: String,
    /// What the last push sent: a difference or the whole config, and its
    /// size and time.
    #[tabled(rename = "LAST_PUSH")]
    last_push: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use background_task_types::{ActivationOutcome, ActivationReason};
    use std::time::Duration;

    #[test]
    fn a_task_without_a_renderer_still_shows_its_status() {
        let record = ActivationRecord {
            iteration: 7,
            reason: ActivationReason::Timer,
            start_time: chrono::Utc::now(),
            elapsed: Duration::from_millis(42),
            outcome: ActivationOutcome::Succeeded,
            details: serde_json::json!({"widgets_frobbed": 3, "last_widget": "w-9"}),
        };
        let task = BackgroundTask {
            name: "widget_frobber".into(),
            description: "frobs widgets".into(),
            period: Duration::from_secs(600),
            deadline: None,
            dependencies: vec![],
            current: CurrentStatus::Idle,
            last: LastActivation::Completed(record.clone()),
            history: vec![record],
        };
        let text = render_tasks(&[&task], View { history: true, ..View::default() });
        assert!(text.contains("task: \"widget_frobber\""), "{text}");
        assert!(text.contains("configured period: every 10m"), "{text}");
        assert!(text.contains("iter 7, triggered by a periodic timer firing"), "{text}");
        assert!(text.contains("\"widgets_frobbed\": 3"), "{text}");
        assert!(text.contains("recent activations"), "{text}");

        // A DNS task whose status cannot be read falls back the same way.
        let mut odd = task.clone();
        odd.name = "dns_config_internal".into();
        assert!(render_tasks(&[&odd], View::default()).contains("\"last_widget\": \"w-9\""));
    }

    #[test]
    fn running_and_failed_activations_say_so() {
        let failed = ActivationRecord {
            iteration: 2,
            reason: ActivationReason::Dependency { name: "dns_config_internal".into() },
            start_time: chrono::Utc::now(),
            elapsed: Duration::from_millis(5),
            outcome: ActivationOutcome::Failed {
                error: "no internal DNS servers are registered".into(),
            },
            details: serde_json::json!({"error": "no internal DNS servers are registered"}),
        };
        let task = BackgroundTask {
            name: "dns_propagation_internal".into(),
            description: "d".into(),
            period: Duration::from_secs(60),
            deadline: None,
            dependencies: vec![],
            current: CurrentStatus::Running {
                progress: None,
                iteration: 3,
                reason: ActivationReason::Request { requested_by: "omdb".into(), requests: 2 },
                start_time: chrono::Utc::now(),
            },
            last: LastActivation::Completed(failed),
            history: vec![],
        };
        let text = render_tasks(&[&task], View::default());
        assert!(
            text.contains(
                "currently executing: yes, iter 3, triggered by 2 explicit requests (first: omdb)"
            ),
            "{text}"
        );
        assert!(
            text.contains("triggered by a dependent task completing (\"dns_config_internal\")"),
            "{text}"
        );
        assert!(text.contains("    error: no internal DNS servers are registered"), "{text}");
    }

    #[test]
    fn disagreement_between_nexus_instances_stands_out() {
        let mut seen = BTreeMap::new();
        seen.insert(
            "dns_config_internal".to_string(),
            vec![("a".into(), Some(5)), ("b".into(), Some(3))],
        );
        seen.insert(
            "dns_propagation_internal".to_string(),
            vec![("a".into(), Some(5)), ("b".into(), Some(5))],
        );
        seen.insert(
            "dns_config_external".to_string(),
            vec![("a".into(), Some(1)), ("b".into(), None)],
        );
        let latest = [(DnsGroup::Internal, 5)].into_iter().collect();
        let text = render_agreement(&seen, &latest);
        assert!(
            text.contains(
                "dns_config_internal: DISAGREE: a at 5, b at 3 -- BEHIND the database's latest 5"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "dns_propagation_internal: all 2 at generation 5 (the database's latest)"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "dns_config_external: DISAGREE: a at 1, b at none (failed) (database not checked)"
            ),
            "{text}"
        );
    }
}
