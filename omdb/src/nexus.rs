//! `omdb nexus ...`: a Nexus's background tasks, and DNS changes through it.

use crate::discovery::{Discovery, http_client, note};
use crate::format::{Output, period, table, timestamp, timestamp_ago};
use anyhow::{Context, bail};
use background_tasks::{ActivationRecord, BackgroundTask, CurrentStatus, LastActivation};
use clap::{Args, Subcommand};
use dns_types::{DnsChange, DnsGroup, DnsRecord, NameRecords, NameRemoval};
use nexus_api::task_status::{
    DnsConfigStatus, DnsPropagationStatus, DnsServersStatus, PropagationResult,
};
use std::collections::BTreeMap;
use std::fmt::Write;

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
    /// The tasks, with their period and state.
    List,
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
    },
    /// Activate tasks now.
    Activate {
        #[arg(required = true)]
        tasks: Vec<String>,
        /// Wait for the activations to complete and show their results.
        #[arg(long)]
        wait: bool,
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
    },
    /// Remove a name with all its records: one new generation.
    Remove {
        group: DnsGroup,
        name: String,
        #[arg(long)]
        comment: String,
    },
}

fn client(url: &str) -> nexus_client::Client {
    nexus_client::Client::new_with_client(url, http_client())
}

pub async fn run(
    args: &NexusArgs,
    discovery: &Discovery,
    output: &Output,
    destructive: bool,
) -> anyhow::Result<()> {
    match &args.command {
        NexusCommand::BackgroundTasks(TasksCommand::Show { tasks, all_nexus: true, history }) => {
            show_all_nexus(discovery, tasks, output, *history).await
        }
        NexusCommand::BackgroundTasks(command) => {
            let url = discovery.nexus_url().await?;
            let nexus = client(&url);
            match command {
                TasksCommand::Doc => doc(&nexus, &url, output).await,
                TasksCommand::List => list(&nexus, &url, output).await,
                TasksCommand::Show { tasks, history, .. } => {
                    let statuses = fetch(&nexus, &url).await?;
                    let selected = select(&statuses, tasks)?;
                    if output.json {
                        return output.json(
                            &selected.iter().map(|t| (&t.name, t)).collect::<BTreeMap<_, _>>(),
                        );
                    }
                    print!("{}", render_tasks(&selected, *history));
                    Ok(())
                }
                TasksCommand::Activate { tasks, wait } => {
                    activate(&nexus, &url, tasks, *wait, output).await
                }
            }
        }
        NexusCommand::Dns(command) => {
            if !destructive {
                bail!("this command changes DNS data: pass -w (--destructive) to confirm");
            }
            let (group, change) = match command {
                DnsCommand::Add { group, name, rtype, data, comment } => {
                    let record = DnsRecord::parse(rtype, data)?;
                    let add = vec![NameRecords { name: name.clone(), records: vec![record] }];
                    (*group, DnsChange { comment: comment.clone(), add, remove: vec![] })
                }
                DnsCommand::Remove { group, name, comment } => {
                    let remove = vec![NameRemoval { name: name.clone(), records: None }];
                    (*group, DnsChange { comment: comment.clone(), add: vec![], remove })
                }
            };
            let url = discovery.nexus_url().await?;
            let version = client(&url)
                .dns_change()
                .group(group)
                .body(change)
                .send()
                .await
                .map_err(|e| nexus_error(e, &url))?
                .into_inner();
            if output.json {
                return output.json(&version);
            }
            println!(
                "created {group} DNS generation {} at {} (creator {}): {:?}",
                version.generation,
                timestamp(version.time_created),
                version.creator,
                version.comment
            );
            println!("propagation has started: omdb nexus background-tasks show dns_{group}");
            Ok(())
        }
    }
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
}

async fn list(nexus: &nexus_client::Client, url: &str, output: &Output) -> anyhow::Result<()> {
    let tasks = fetch(nexus, url).await?;
    if output.json {
        return output.json(&tasks.keys().collect::<Vec<_>>());
    }
    let rows = tasks.values().map(|t| ListRow {
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
        let names: Vec<String> = match selector.as_str() {
            "all" => tasks.keys().cloned().collect(),
            "dns_internal" | "dns_external" => {
                let group = &selector["dns_".len()..];
                ["dns_config", "dns_servers", "dns_propagation"]
                    .iter()
                    .map(|t| format!("{t}_{group}"))
                    .collect()
            }
            name => vec![name.to_string()],
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
    history: bool,
) -> anyhow::Result<()> {
    let urls = discovery.all_nexus_urls().await?;
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
                    if let Some(generation) = last_generation(task) {
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
                    print!("{}", render_tasks(&selected, history));
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
    } else if urls.len() > 1 {
        print!("{}", render_agreement(&generations));
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
    url: &str,
    tasks: &[String],
    wait: bool,
    output: &Output,
) -> anyhow::Result<()> {
    let statuses = nexus
        .bgtask_activate()
        .body(nexus_client::types::BackgroundTasksActivateRequest {
            bgtask_names: tasks.to_vec(),
            wait,
        })
        .send()
        .await
        .map_err(|e| nexus_error(e, url))?
        .into_inner();
    let statuses: BTreeMap<String, BackgroundTask> = statuses.into_iter().collect();
    if output.json {
        return output.json(&statuses);
    }
    if wait {
        let selected: Vec<&BackgroundTask> = statuses.values().collect();
        print!("{}", render_tasks(&selected, false));
    } else {
        note("activation requested; it runs in the background (use --wait to see its result)");
        for name in statuses.keys() {
            println!("activated: {name}");
        }
    }
    Ok(())
}

/// The generation a DNS task last found (`dns_config_*`) or pushed
/// (`dns_propagation_*`): `Some(None)` when it failed, `None` for other
/// tasks.
fn last_generation(task: &BackgroundTask) -> Option<Option<u64>> {
    if !(task.name.starts_with("dns_config_") || task.name.starts_with("dns_propagation_")) {
        return None;
    }
    let LastActivation::Completed(record) = &task.last else { return Some(None) };
    Some(record.details.get("generation").and_then(|g| g.as_u64()))
}

/// One line per DNS task saying whether every Nexus is at the same
/// generation, and if not, which is where.
fn render_agreement(generations: &BTreeMap<String, Vec<(String, Option<u64>)>>) -> String {
    let mut out = String::from("=== agreement between Nexus instances ===\n");
    let show = |g: &Option<u64>| g.map(|g| g.to_string()).unwrap_or_else(|| "none (failed)".into());
    for (task, seen) in generations {
        let distinct: std::collections::BTreeSet<_> = seen.iter().map(|(_, g)| g).collect();
        if distinct.len() == 1 {
            let _ = writeln!(out, "{task}: all {} at generation {}", seen.len(), show(&seen[0].1));
        } else {
            let each: Vec<String> =
                seen.iter().map(|(nexus, g)| format!("{nexus} at {}", show(g))).collect();
            let _ = writeln!(out, "{task}: DISAGREE: {}", each.join(", "));
        }
    }
    out
}

/// Renders tasks the way the seed shows them, with the DNS tasks' evidence.
pub fn render_tasks(tasks: &[&BackgroundTask], history: bool) -> String {
    let mut out = String::new();
    for task in tasks {
        render_task(&mut out, task, history);
        out.push('\n');
    }
    out
}

fn render_task(out: &mut String, task: &BackgroundTask, history: bool) {
    let _ = writeln!(out, "task: {:?}", task.name);
    let _ = writeln!(out, "  configured period: {}", period(task.period));
    match &task.current {
        CurrentStatus::Idle => {
            let _ = writeln!(out, "  currently executing: no");
        }
        CurrentStatus::Running { iteration, reason, start_time } => {
            let _ = writeln!(
                out,
                "  currently executing: yes, iter {iteration}, triggered by {reason}\n    since {}",
                timestamp_ago(*start_time)
            );
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
            render_details(out, &task.name, record);
        }
    }
    if history && !task.history.is_empty() {
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

fn render_details(out: &mut String, name: &str, record: &ActivationRecord) {
    if let Some(error) = record.error() {
        let _ = writeln!(out, "    error: {error}");
        return;
    }
    let details = &record.details;
    if name.starts_with("dns_config_")
        && let Ok(s) = serde_json::from_value::<DnsConfigStatus>(details.clone())
    {
        let _ = writeln!(out, "    last generation found: {}", s.generation);
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
        return;
    }
    if name.starts_with("dns_servers_")
        && let Ok(s) = serde_json::from_value::<DnsServersStatus>(details.clone())
    {
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
        return;
    }
    if name.starts_with("dns_propagation_")
        && let Ok(s) = serde_json::from_value::<DnsPropagationStatus>(details.clone())
    {
        let failed = s.servers.values().filter(|r| r.result == PropagationResult::Error).count();
        let _ = writeln!(out, "    attempt to propagate generation: {}", s.generation);
        let _ = writeln!(
            out,
            "      generation found by {:?}, first seen at {}: {:?}",
            s.config_source.task,
            timestamp(s.config_source.first_seen_at),
            s.config_source.comment
        );
        let _ = writeln!(
            out,
            "      to the {} servers found by {:?}, list first seen at {}",
            s.servers.len(),
            s.servers_source.task,
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
        return;
    }
    // A task omdb has no renderer for (or a status it cannot read): print
    // what the task said, readably.
    let pretty = serde_json::to_string_pretty(details).unwrap_or_else(|_| details.to_string());
    let _ = writeln!(out, "    details:");
    for line in pretty.lines() {
        let _ = writeln!(out, "      {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use background_tasks::ActivationReason;
    use std::time::Duration;

    #[test]
    fn a_task_without_a_renderer_still_shows_its_status() {
        let record = ActivationRecord {
            iteration: 7,
            reason: ActivationReason::Timer,
            start_time: chrono::Utc::now(),
            elapsed: Duration::from_millis(42),
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
        let text = render_tasks(&[&task], true);
        assert!(text.contains("task: \"widget_frobber\""), "{text}");
        assert!(text.contains("configured period: every 10m"), "{text}");
        assert!(text.contains("iter 7, triggered by a periodic timer firing"), "{text}");
        assert!(text.contains("\"widgets_frobbed\": 3"), "{text}");
        assert!(text.contains("recent activations"), "{text}");

        // A DNS task whose status cannot be read falls back the same way.
        let mut odd = task.clone();
        odd.name = "dns_config_internal".into();
        assert!(render_tasks(&[&odd], false).contains("\"last_widget\": \"w-9\""));
    }

    #[test]
    fn running_and_failed_activations_say_so() {
        let failed = ActivationRecord {
            iteration: 2,
            reason: ActivationReason::Dependency { name: "dns_config_internal".into() },
            start_time: chrono::Utc::now(),
            elapsed: Duration::from_millis(5),
            details: serde_json::json!({"error": "no internal DNS servers are registered"}),
        };
        let task = BackgroundTask {
            name: "dns_propagation_internal".into(),
            description: "d".into(),
            period: Duration::from_secs(60),
            deadline: None,
            dependencies: vec![],
            current: CurrentStatus::Running {
                iteration: 3,
                reason: ActivationReason::Request { requested_by: "omdb".into(), requests: 2 },
                start_time: chrono::Utc::now(),
            },
            last: LastActivation::Completed(failed),
            history: vec![],
        };
        let text = render_tasks(&[&task], false);
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
        let text = render_agreement(&seen);
        assert!(text.contains("dns_config_internal: DISAGREE: a at 5, b at 3"), "{text}");
        assert!(text.contains("dns_propagation_internal: all 2 at generation 5"), "{text}");
        assert!(
            text.contains("dns_config_external: DISAGREE: a at 1, b at none (failed)"),
            "{text}"
        );
    }
}
