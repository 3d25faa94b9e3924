//! `omdb nexus background-tasks show --all-nexus`: every Nexus found in DNS
//! side by side, and one line per DNS task saying whether they agree with
//! each other and with the database.

use super::*;
use std::fmt::Write;

/// `show --all-nexus` as data: every Nexus's selected tasks, whether they
/// agree, what is running; text and JSON render the same.
#[derive(Debug, serde::Serialize)]
struct AllNexusReport {
    checked_at: DateTime<Utc>,
    /// The database's latest generation per group, when it could be read.
    database_latest: BTreeMap<DnsGroup, u64>,
    nexus: Vec<NexusTasks>,
    /// Per DNS task: the generation each Nexus last found or pushed.
    agreement: BTreeMap<String, Vec<(String, Option<u64>)>>,
    /// Activations running now.
    in_flight: Vec<InFlight>,
}

#[derive(Debug, serde::Serialize)]
struct NexusTasks {
    url: String,
    id: Option<uuid::Uuid>,
    started_at: Option<DateTime<Utc>>,
    tasks: Vec<BackgroundTask>,
    /// Why it could not be asked.
    error: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct InFlight {
    nexus: uuid::Uuid,
    task: String,
    iteration: u64,
    since: DateTime<Utc>,
}

pub(super) async fn show_all_nexus(
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
    let mut view = view;
    for (group, generation) in &database_latest {
        view.database_latest.set(*group, *generation);
    }
    let mut report = AllNexusReport {
        checked_at: Utc::now(),
        database_latest,
        nexus: Vec::new(),
        agreement: BTreeMap::new(),
        in_flight: Vec::new(),
    };
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
                        report.in_flight.push(InFlight {
                            nexus: status.id,
                            task: task.name.clone(),
                            iteration: *iteration,
                            since: *start_time,
                        });
                    }
                    if let Some(generation) = DnsTaskView::of(task).generation() {
                        report
                            .agreement
                            .entry(task.name.clone())
                            .or_default()
                            .push((status.id.to_string(), generation));
                    }
                }
                report.nexus.push(NexusTasks {
                    url: url.clone(),
                    id: Some(status.id),
                    started_at: Some(status.started_at),
                    tasks: selected.into_iter().cloned().collect(),
                    error: None,
                });
            }
            Err(error) => report.nexus.push(NexusTasks {
                url: url.clone(),
                id: None,
                started_at: None,
                tasks: Vec::new(),
                error: Some(format!("{error:#}")),
            }),
        }
    }
    if output.json {
        output.json(&report)?;
    } else {
        out!("{}", render(&report, view));
    }
    let failures: Vec<&str> =
        report.nexus.iter().filter(|n| n.error.is_some()).map(|n| n.url.as_str()).collect();
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

fn render(report: &AllNexusReport, view: View) -> String {
    let mut out = String::new();
    for n in &report.nexus {
        match (&n.error, n.id) {
            (Some(error), _) => {
                let _ = writeln!(out, "=== Nexus at {} ===", n.url);
                let _ = writeln!(out, "  NOT REACHABLE: {error}\n");
            }
            (None, id) => {
                let _ = writeln!(
                    out,
                    "=== Nexus {} at {} (up since {}) ===",
                    id.map(|i| i.to_string()).unwrap_or_default(),
                    n.url,
                    n.started_at.map(timestamp_ago).unwrap_or_default()
                );
                let tasks: Vec<&BackgroundTask> = n.tasks.iter().collect();
                out.push_str(&render_tasks(&tasks, view));
            }
        }
    }
    out.push_str(&render_agreement(&report.agreement, &report.database_latest));
    let _ = writeln!(out, "activations in flight: {}", report.in_flight.len());
    for f in &report.in_flight {
        let _ = writeln!(
            out,
            "  Nexus {}: {} iter {} since {}",
            f.nexus,
            f.task,
            f.iteration,
            timestamp_ago(f.since)
        );
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

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
