//! Whether a Nexus is in sync, decided from its task statuses: for each
//! group, `dns_config_<group>` has loaded a generation (and its last
//! activation did not fail), and the last `dns_propagation_<group>` pushed
//! that generation and every server of its list took it.  Nexus answers
//! `GET /ready` with this; anything else asks it the same way.

use crate::task_name::DnsTaskName;
use crate::task_status::PropagationResult;
use crate::task_view::DnsTaskView;
use crate::{GroupReadiness, NexusReadiness};
use background_task_types::{BackgroundTask, LastActivation};
use dns_types::DnsGroup;
use std::collections::BTreeMap;

/// Ready with the evidence, or the reasons why not (one per problem).
pub fn readiness(tasks: &BTreeMap<String, BackgroundTask>) -> Result<NexusReadiness, Vec<String>> {
    let mut groups = Vec::new();
    let mut reasons = Vec::new();
    for group in DnsGroup::ALL {
        match group_readiness(tasks, group) {
            Ok(ready) => groups.push(ready),
            Err(reason) => reasons.push(reason),
        }
    }
    if reasons.is_empty() { Ok(NexusReadiness { groups }) } else { Err(reasons) }
}

fn group_readiness(
    tasks: &BTreeMap<String, BackgroundTask>,
    group: DnsGroup,
) -> Result<GroupReadiness, String> {
    let view = |name: DnsTaskName| match tasks.get(&name.to_string()) {
        Some(task) if task.last == LastActivation::NeverCompleted => {
            Err(format!("{name} has not completed an activation yet"))
        }
        Some(task) => Ok(DnsTaskView::of(task)),
        None => Err(format!("no task {name}")),
    };
    let config_task = DnsTaskName::config(group);
    let DnsTaskView::Config { status: config, error, .. } = view(config_task)? else {
        return Err(format!("{config_task} is not a config task"));
    };
    if let Some(error) = &error {
        return Err(format!("{config_task} failed its last activation: {error}"));
    }
    let config = config.ok_or_else(|| format!("{config_task} has not loaded a generation"))?;
    let propagation_task = DnsTaskName::propagation(group);
    let DnsTaskView::Propagation { status, waiting, error, .. } = view(propagation_task)? else {
        return Err(format!("{propagation_task} is not a propagation task"));
    };
    if let Some(waiting) = waiting {
        let names: Vec<String> = waiting.waiting_for.iter().map(|n| n.to_string()).collect();
        return Err(format!("{propagation_task} is waiting for {}", names.join(", ")));
    }
    let status = match (status, error) {
        (Some(status), None) => status,
        (_, error) => {
            return Err(format!(
                "{propagation_task} failed its last activation: {}",
                error.unwrap_or_else(|| "unreadable status".into())
            ));
        }
    };
    if status.generation != config.generation {
        return Err(format!(
            "{propagation_task} last pushed generation {}, but generation {} is loaded",
            status.generation, config.generation
        ));
    }
    let failed: Vec<String> = status
        .servers
        .iter()
        .filter(|(_, r)| r.result == PropagationResult::Error)
        .map(|(server, r)| format!("{server} ({})", r.message))
        .collect();
    if !failed.is_empty() {
        return Err(format!(
            "{group} DNS servers not at generation {}: {}",
            status.generation,
            failed.join("; ")
        ));
    }
    Ok(GroupReadiness {
        group,
        generation: status.generation,
        servers: status.servers.keys().cloned().collect(),
        all_done_at: status.all_done_at,
    })
}
