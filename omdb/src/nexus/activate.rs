//! `omdb -w nexus background-tasks activate [--wait]`: activate tasks, and
//! with `--wait` tell an activation still running from a Nexus that stopped
//! answering.

use super::*;

pub(super) async fn activate(
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
        out!("{}", render_tasks(&selected, View::default()));
    } else {
        note("activation requested; it runs in the background (use --wait to see its result)");
        for name in statuses.keys() {
            outln!("activated: {name}");
        }
    }
    if wait && let Some(message) = still_running(&statuses, timeout_secs) {
        bail!("{message}");
    }
    Ok(())
}

/// "activation still running after N s", with what each running task says
/// it is doing; `None` when nothing runs.
pub(super) fn still_running(
    tasks: &BTreeMap<String, BackgroundTask>,
    waited_secs: u64,
) -> Option<String> {
    let running: Vec<String> = tasks
        .values()
        .filter_map(|task| {
            let CurrentStatus::Running { iteration, start_time, .. } = &task.current else {
                return None;
            };
            let doing = match DnsTaskView::of(task) {
                DnsTaskView::Propagation { running: Some((_, Some(p))), .. } => format!(
                    ": propagating generation {}, {} done, still waiting on {}",
                    p.generation,
                    nexus_types::count(p.done.len() as u64, "server"),
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
