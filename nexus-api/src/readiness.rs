//! Whether a Nexus is in sync, decided from its task statuses: for each
//! group, `dns_config_<group>` has loaded a generation (and its last
//! activation did not fail), and the last `dns_propagation_<group>` pushed
//! that generation and every server of its list took it.  Nexus answers
//! `GET /ready` with this; anything else asks it the same way.

use crate::task_name::DnsTaskName;
use crate::task_status::{DnsConfigStatus, PropagationReport, PropagationResult};
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
    let details = |name: DnsTaskName| match tasks.get(&name.to_string()).map(|t| &t.last) {
        Some(LastActivation::Completed(record)) => Ok(record.details.clone()),
        Some(LastActivation::NeverCompleted) => {
            Err(format!("{name} has not completed an activation yet"))
        }
        None => Err(format!("no task {name}")),
    };
    let config_task = DnsTaskName::config(group);
    let config: DnsConfigStatus = serde_json::from_value(details(config_task)?)
        .map_err(|_| format!("{config_task} has not loaded a generation"))?;
    if let Some(error) = &config.error {
        return Err(format!("{config_task} failed its last activation: {error}"));
    }
    let propagation_task = DnsTaskName::propagation(group);
    let propagation = details(propagation_task)?;
    let status = match serde_json::from_value::<PropagationReport>(propagation.clone()) {
        Ok(PropagationReport::Done(status)) => status,
        Ok(PropagationReport::Waiting(waiting)) => {
            let names: Vec<String> = waiting.waiting_for.iter().map(|n| n.to_string()).collect();
            return Err(format!("{propagation_task} is waiting for {}", names.join(", ")));
        }
        Err(_) => {
            let error =
                propagation.get("error").and_then(|e| e.as_str()).unwrap_or("unreadable status");
            return Err(format!("{propagation_task} failed its last activation: {error}"));
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
