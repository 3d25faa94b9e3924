//! What a DNS background task last reported, decoded once.
//!
//! A task's record is generic (`BackgroundTask`, with its status as JSON);
//! omdb's renderers, `dns explain`, the lints, the readiness check and
//! Nexus's metrics all want the typed status of a DNS task, whether its last
//! activation failed (from the typed outcome, never from a key of the
//! JSON), and what a running activation has done so far.  They all ask
//! [`DnsTaskView::of`], so they cannot read the same record differently.

use crate::task_name::{DnsTaskKind, DnsTaskName};
use crate::task_status::{
    DnsConfigStatus, DnsPropagationStatus, DnsPropagationWaiting, DnsServersStatus,
    PropagationProgress, PropagationReport,
};
use background_task_types::{ActivationRecord, BackgroundTask, CurrentStatus, LastActivation};
use chrono::{DateTime, Utc};

/// A DNS task's last completed activation and its current one, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum DnsTaskView {
    Config {
        /// The config in use: from the last activation (a failed one keeps
        /// the last good config), or else the latest one in the history
        /// that found a config, so that an error never hides the
        /// generation still being propagated.
        status: Option<DnsConfigStatus>,
        /// Why the last activation failed, if it did.
        error: Option<String>,
        started_at: Option<DateTime<Utc>>,
    },
    Servers {
        status: Option<DnsServersStatus>,
        error: Option<String>,
        started_at: Option<DateTime<Utc>>,
    },
    Propagation {
        status: Option<DnsPropagationStatus>,
        /// A Nexus starting up: what propagation waits for.
        waiting: Option<DnsPropagationWaiting>,
        error: Option<String>,
        started_at: Option<DateTime<Utc>>,
        /// An activation in progress: since when, and what it reported.
        running: Option<(DateTime<Utc>, Option<PropagationProgress>)>,
    },
    /// Not a DNS task.
    Other,
}

impl DnsTaskView {
    pub fn of(task: &BackgroundTask) -> DnsTaskView {
        let Ok(name) = task.name.parse::<DnsTaskName>() else { return DnsTaskView::Other };
        let last = match &task.last {
            LastActivation::Completed(record) => Some(record),
            LastActivation::NeverCompleted => None,
        };
        let error = last.and_then(ActivationRecord::error);
        let started_at = last.map(|r| r.start_time);
        match name.kind {
            DnsTaskKind::Config => {
                let status = last
                    .into_iter()
                    .chain(task.history.iter().rev())
                    .find_map(decode::<DnsConfigStatus>);
                DnsTaskView::Config { status, error, started_at }
            }
            DnsTaskKind::Servers => {
                DnsTaskView::Servers { status: last.and_then(decode), error, started_at }
            }
            DnsTaskKind::Propagation => {
                let (status, waiting) = match last.and_then(decode::<PropagationReport>) {
                    Some(PropagationReport::Done(s)) => (Some(s), None),
                    Some(PropagationReport::Waiting(w)) => (None, Some(w)),
                    None => (None, None),
                };
                let running = match &task.current {
                    CurrentStatus::Running { start_time, progress, .. } => Some((
                        *start_time,
                        progress.as_ref().and_then(|p| serde_json::from_value(p.clone()).ok()),
                    )),
                    CurrentStatus::Idle => None,
                };
                DnsTaskView::Propagation { status, waiting, error, started_at, running }
            }
        }
    }

    /// The generation the task last found (`dns_config_*`, `None` inside
    /// when it failed) or pushed (`dns_propagation_*`); `None` for the
    /// other tasks.
    pub fn generation(&self) -> Option<Option<u64>> {
        match self {
            DnsTaskView::Config { status, error: None, .. } => {
                Some(status.as_ref().map(|s| s.generation))
            }
            DnsTaskView::Config { .. } => Some(None),
            DnsTaskView::Propagation { status, .. } => Some(status.as_ref().map(|s| s.generation)),
            DnsTaskView::Servers { .. } | DnsTaskView::Other => None,
        }
    }
}

/// A record's status as `T`, if it decodes (a failure that kept no state
/// does not).
fn decode<T: serde::de::DeserializeOwned>(record: &ActivationRecord) -> Option<T> {
    serde_json::from_value(record.details.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use background_task_types::{ActivationOutcome, ActivationReason};
    use dns_types::DnsGroup;
    use std::time::Duration;

    fn record(outcome: ActivationOutcome, details: serde_json::Value) -> ActivationRecord {
        ActivationRecord {
            iteration: 1,
            reason: ActivationReason::Timer,
            start_time: Utc::now(),
            elapsed: Duration::from_millis(3),
            outcome,
            details,
        }
    }

    fn task(name: &str, last: ActivationRecord, history: Vec<ActivationRecord>) -> BackgroundTask {
        BackgroundTask {
            name: name.into(),
            description: String::new(),
            period: Duration::from_secs(60),
            deadline: None,
            dependencies: vec![],
            current: CurrentStatus::Idle,
            last: LastActivation::Completed(last),
            history,
        }
    }

    fn config_status(generation: u64) -> serde_json::Value {
        serde_json::to_value(DnsConfigStatus {
            group: DnsGroup::Internal,
            generation,
            time_created: Utc::now(),
            creator: "c".into(),
            comment: "c".into(),
            names: 1,
            digest: "d".into(),
            first_seen_at: Utc::now(),
            changed: false,
            load: None,
            error: None,
        })
        .unwrap()
    }

    #[test]
    fn failure_comes_from_the_outcome_and_the_kept_config_stays_visible() {
        // Failed without state: the config is found in the history.
        let good = record(ActivationOutcome::Succeeded, config_status(4));
        let failed = record(
            ActivationOutcome::Failed { error: "db down".into() },
            serde_json::json!({"error": "db down"}),
        );
        let t = task("dns_config_internal", failed, vec![good]);
        let DnsTaskView::Config { status, error, .. } = DnsTaskView::of(&t) else { panic!() };
        assert_eq!(status.map(|s| s.generation), Some(4));
        assert_eq!(error.as_deref(), Some("db down"));
        assert_eq!(DnsTaskView::of(&t).generation(), Some(None));

        // Succeeded: no error, whatever fields the status has.
        let t = task(
            "dns_config_internal",
            record(ActivationOutcome::Succeeded, config_status(5)),
            vec![],
        );
        assert_eq!(DnsTaskView::of(&t).generation(), Some(Some(5)));
        assert_eq!(
            DnsTaskView::of(&task(
                "widgets",
                record(ActivationOutcome::Succeeded, serde_json::json!({})),
                vec![]
            )),
            DnsTaskView::Other
        );
    }
}
