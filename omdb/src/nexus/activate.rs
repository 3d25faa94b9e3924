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
    let statuses: BTreeMap<String, BackgroundTask> = if wait {
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
        let started = std::time::Instant::now();
        match waiting.bgtask_activate().body(request).send().await {
            Ok(statuses) => {
                let statuses: BTreeMap<String, BackgroundTask> =
                    statuses.into_inner().into_iter().collect();
                if let Some(message) = gave_up(started.elapsed(), &statuses) {
                    bail!("{message}");
                }
                statuses
            }
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
            .into_iter()
            .collect()
    };
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
    Ok(())
}

/// Whether Nexus answered a waiting activation because its own wait limit
/// passed with a task still at work (then the message).  An answer sooner
/// means every activation asked for has completed, whatever runs now: a
/// task shown running then is in a later activation (a push let go that
/// ended, a dependency), not the one asked for.
fn gave_up(elapsed: Duration, tasks: &BTreeMap<String, BackgroundTask>) -> Option<String> {
    if elapsed < nexus_types::ACTIVATE_WAIT_LIMIT {
        return None;
    }
    still_running(tasks, nexus_types::ACTIVATE_WAIT_LIMIT.as_secs())
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

#[cfg(test)]
mod tests {
    use super::*;
    use background_task_types::ActivationReason;

    /// A task running a later activation than the one asked for, as after
    /// a thaw: the push let go ended and started one of its own just as
    /// the requested one completed (CI caught omdb calling that "still
    /// running after 30s" when Nexus had answered in milliseconds).
    fn running_later() -> BTreeMap<String, BackgroundTask> {
        let task = BackgroundTask {
            name: "dns_propagation_internal".into(),
            description: String::new(),
            period: Duration::from_secs(60),
            deadline: None,
            dependencies: vec![],
            current: CurrentStatus::Running {
                iteration: 9,
                reason: ActivationReason::Timer,
                start_time: chrono::Utc::now(),
                progress: None,
            },
            last: background_task_types::LastActivation::NeverCompleted,
            history: vec![],
        };
        BTreeMap::from([(task.name.clone(), task)])
    }

    #[test]
    fn an_answer_before_the_wait_limit_means_the_activation_completed() {
        assert_eq!(gave_up(Duration::from_millis(4), &running_later()), None);
        assert_eq!(gave_up(nexus_types::ACTIVATE_WAIT_LIMIT / 2, &running_later()), None);
    }

    #[test]
    fn a_task_still_at_work_when_nexus_stopped_waiting_is_named() {
        let message = gave_up(nexus_types::ACTIVATE_WAIT_LIMIT, &running_later())
            .expect("Nexus gave up waiting with the task at work");
        assert!(message.contains("still running after 60s"), "{message}");
        assert!(message.contains("dns_propagation_internal iter 9"), "{message}");
        assert_eq!(gave_up(nexus_types::ACTIVATE_WAIT_LIMIT, &BTreeMap::new()), None);
    }
}
