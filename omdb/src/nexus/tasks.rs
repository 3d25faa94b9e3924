//! `omdb nexus background-tasks doc | list | show`: what each task is for,
//! the tasks at a glance with their lints, and each task rendered the way
//! the seed shows it, with the DNS tasks' evidence.

use super::*;
use std::fmt::Write;

pub(super) async fn doc(
    nexus: &nexus_client::Client,
    url: &str,
    output: &Output,
) -> anyhow::Result<()> {
    let tasks = fetch(nexus, url).await?;
    if output.json {
        let docs: BTreeMap<&String, &String> =
            tasks.iter().map(|(n, t)| (n, &t.description)).collect();
        return output.json(&docs);
    }
    for (name, task) in &tasks {
        outln!("task: {name:?}");
        outln!("{}", wrap(&task.description, 4, 78));
        outln!();
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

/// `background-tasks list` as data: the same facts text and JSON show.
#[derive(Debug, serde::Serialize)]
pub(super) struct ListReport {
    /// The Nexus asked.
    nexus: String,
    checked_at: DateTime<Utc>,
    tasks: Vec<TaskSummary>,
}

#[derive(Debug, serde::Serialize)]
struct TaskSummary {
    name: String,
    period: Duration,
    /// An activation in progress: which, since when.
    running: Option<Running>,
    /// The last completed activation, if any.
    last_completed: Option<Completed>,
    lints: Vec<Lint>,
}

#[derive(Debug, serde::Serialize)]
struct Running {
    iteration: u64,
    since: DateTime<Utc>,
}

#[derive(Debug, serde::Serialize)]
struct Completed {
    iteration: u64,
    start_time: DateTime<Utc>,
    outcome: background_task_types::ActivationOutcome,
}

fn list_report(
    url: &str,
    tasks: &BTreeMap<String, BackgroundTask>,
    now: DateTime<Utc>,
    stuck_after: Duration,
) -> ListReport {
    let tasks = tasks
        .values()
        .map(|t| TaskSummary {
            name: t.name.clone(),
            period: t.period,
            running: match &t.current {
                CurrentStatus::Idle => None,
                CurrentStatus::Running { iteration, start_time, .. } => {
                    Some(Running { iteration: *iteration, since: *start_time })
                }
            },
            last_completed: match &t.last {
                LastActivation::NeverCompleted => None,
                LastActivation::Completed(r) => Some(Completed {
                    iteration: r.iteration,
                    start_time: r.start_time,
                    outcome: r.outcome.clone(),
                }),
            },
            lints: lint(t, now, stuck_after),
        })
        .collect();
    ListReport { nexus: url.to_string(), checked_at: now, tasks }
}

fn render_list(report: &ListReport) -> String {
    let rows = report.tasks.iter().map(|t| ListRow {
        lints: if t.lints.is_empty() {
            "-".into()
        } else {
            t.lints.iter().map(Lint::kind).collect::<Vec<_>>().join(", ")
        },
        name: t.name.clone(),
        period: period(t.period),
        current: match &t.running {
            None => "idle".into(),
            Some(r) => format!("running (iter {})", r.iteration),
        },
        last: match &t.last_completed {
            None => "never".into(),
            Some(c) => format!("iter {} {}", c.iteration, c.outcome.kind()),
        },
    });
    format!("{}\n", table(rows, 0))
}

pub(super) async fn list(
    nexus: &nexus_client::Client,
    url: &str,
    output: &Output,
    stuck_after: Duration,
) -> anyhow::Result<()> {
    let tasks = fetch(nexus, url).await?;
    let report = list_report(url, &tasks, chrono::Utc::now(), stuck_after);
    if output.json {
        return output.json(&report);
    }
    out!("{}", render_list(&report));
    Ok(())
}

/// How much of a task to show.
#[derive(Clone, Copy, Debug)]
pub struct View {
    /// Also each task's recent activations.
    pub history: bool,
    /// When a running task counts as stuck.
    pub stuck_after: Duration,
    /// The database's latest generation of each group, when it was read:
    /// a config task that has loaded less is behind (a lint).
    pub database_latest: DatabaseLatest,
}

impl Default for View {
    fn default() -> Self {
        View {
            history: false,
            stuck_after: DEFAULT_STUCK_AFTER,
            database_latest: DatabaseLatest::default(),
        }
    }
}

/// The database's latest generation per group, as far as it was read.
#[derive(Clone, Copy, Debug, Default)]
pub struct DatabaseLatest {
    internal: Option<u64>,
    external: Option<u64>,
}

impl DatabaseLatest {
    /// Reads both groups (a note, and nothing compared, if the database
    /// cannot be reached).
    pub async fn read(discovery: &crate::discovery::Discovery) -> DatabaseLatest {
        let mut latest = DatabaseLatest::default();
        match discovery.datastore().await {
            Ok(datastore) => {
                for group in dns_types::DnsGroup::ALL {
                    if let Ok(v) = datastore.dns_version_latest(group).await {
                        latest.set(group, v.generation);
                    }
                }
            }
            Err(e) => crate::discovery::note(format!(
                "not comparing with the database (could not reach it: {e:#})"
            )),
        }
        latest
    }

    pub fn set(&mut self, group: dns_types::DnsGroup, generation: u64) {
        match group {
            dns_types::DnsGroup::Internal => self.internal = Some(generation),
            dns_types::DnsGroup::External => self.external = Some(generation),
        }
    }

    pub fn get(&self, group: dns_types::DnsGroup) -> Option<u64> {
        match group {
            dns_types::DnsGroup::Internal => self.internal,
            dns_types::DnsGroup::External => self.external,
        }
    }
}

/// For a config task: whether what it loaded is behind the database's
/// latest (`Err` when that was not compared).
fn behind_database(task: &BackgroundTask, latest: DatabaseLatest) -> Option<Result<String, ()>> {
    let name: DnsTaskName = task.name.parse().ok()?;
    let DnsTaskView::Config { status, .. } = DnsTaskView::of(task) else { return None };
    let Some(latest) = latest.get(name.group) else { return Some(Err(())) };
    let loaded = status.map(|s| s.generation);
    (loaded != Some(latest)).then(|| {
        Ok(format!(
            "BEHIND DATABASE: loaded {} generation {}, the database's latest is {latest} (it \
             looks again on its next period, or when told of a change)",
            name.group,
            loaded.map(|g| g.to_string()).unwrap_or("none".into()),
        ))
    })
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
    let behind = behind_database(task, view.database_latest);
    if lints.is_empty() && !matches!(behind, Some(Ok(_))) {
        // Say what was checked: a task that never completed an activation
        // can only be checked for being stuck, and a config task is
        // compared with the database only when it was read.
        let _ = writeln!(
            out,
            "  lints: {}{}",
            match task.last {
                LastActivation::Completed(_) => "none",
                LastActivation::NeverCompleted => "none found (no completed activation to check)",
            },
            match behind {
                Some(Err(())) => " (not compared with the database)",
                _ => "",
            }
        );
    }
    for found in &lints {
        let _ = writeln!(out, "  LINT {found}");
    }
    if let Some(Ok(behind)) = &behind {
        let _ = writeln!(out, "  LINT {behind}");
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
                    "    propagating generation {}: {} done, still waiting on: {}",
                    progress.generation,
                    nexus_types::count(progress.done.len() as u64, "server"),
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
    #[tabled(rename = "CONFIG_API")]
    address: String,
    #[tabled(rename = "TARGET")]
    target: String,
}

/// The widest DETAIL cell: with the columns before it, a row fits in 120
/// columns.
const DETAIL_WIDTH: usize = 60;

#[derive(tabled::Tabled)]
struct PropagationRow {
    #[tabled(rename = "CONFIG_API")]
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
            let _ =
                writeln!(out, "      {}, digest {}", nexus_types::count(s.names, "name"), s.digest);
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
            for u in &s.unanswered {
                let _ = writeln!(out, "      not answered by DNS server {}: {}", u.server, u.error);
            }
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
    let in_flight = s
        .servers
        .values()
        .filter(|r| r.outcome == nexus_types::task_status::PropagationOutcome::InFlight)
        .count();
    let failed =
        s.servers.values().filter(|r| r.result == PropagationResult::Error).count() - in_flight;
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
        "      to the {} found by {:?}, list first seen at {}",
        nexus_types::count(s.servers.len() as u64, "server"),
        s.servers_source.task.to_string(),
        timestamp(s.servers_source.discovered_at)
    );
    let succeeded = s.servers.len() - failed - in_flight;
    if in_flight == 0 {
        let _ = writeln!(
            out,
            "      all servers done by {}: {succeeded} succeeded, {failed} failed",
            timestamp(s.all_done_at),
        );
    } else {
        // Not "all done": those pushes run on, and their results come in
        // with a later activation.
        let _ = writeln!(
            out,
            "      by {}: {succeeded} succeeded, {failed} failed, {in_flight} still in flight \
             (running on in the background)",
            timestamp(s.all_done_at),
        );
    }
    let mut whole = Vec::new();
    let rows: Vec<PropagationRow> = s
        .servers
        .iter()
        .map(|(address, r)| {
            // A long error goes under the table; success says little.
            let (detail, cut) = match r.result {
                PropagationResult::Error => crate::format::fit(&r.message, DETAIL_WIDTH),
                PropagationResult::Success => (r.message.clone(), None),
            };
            whole.extend(cut.map(|m| format!("      {address}: {m}")));
            PropagationRow {
                address: address.clone(),
                result: match (r.result, r.outcome) {
                    (_, nexus_types::task_status::PropagationOutcome::InFlight) => {
                        "in flight".into()
                    }
                    (PropagationResult::Success, _) => "success".into(),
                    (PropagationResult::Error, _) => "error".into(),
                },
                // Of a push in flight: when the activation reported it.
                completed_at: timestamp(r.completed_at),
                detail,
            }
        })
        .collect();
    let _ = writeln!(out, "\n{}", table(rows, 6));
    if !whole.is_empty() {
        let _ = writeln!(out, "      in full:");
    }
    for line in whole {
        let _ = writeln!(out, "  {line}");
    }
    let rows = s.servers.iter().map(|(address, r)| HistoryStateRow {
        address: address.clone(),
        applied: r.history.generation_applied.map(|g| g.to_string()).unwrap_or("-".into()),
        last_success: r.history.last_success_at.map(timestamp).unwrap_or("never".into()),
        failing_since: match r.history.failing_since {
            Some(t) => format!(
                "{} ({} in a row)",
                timestamp(t),
                nexus_types::count(r.history.consecutive_failures, "failure")
            ),
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
    #[tabled(rename = "CONFIG_API")]
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
}
