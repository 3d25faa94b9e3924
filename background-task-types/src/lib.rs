//! What the background-task framework records about each task, in the form
//! the API serves: what it is, whether it is running (since when, why), its
//! last completed activation and a bounded history of completed
//! activations.
//!
//! Plain wire types, apart from the framework (`background-tasks`), so that
//! the API crate, its clients and omdb read them without pulling in the
//! task machinery.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a task was activated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActivationReason {
    /// The task's period elapsed since its previous activation ended (or the
    /// task just started).
    Timer,
    /// Another task published a new value that this task watches.
    Dependency {
        /// The name of the dependency (usually the publishing task).
        name: String,
    },
    /// Someone asked for an activation, through the API or in-process.
    Request {
        /// Who asked, e.g. `"POST /bgtasks/activate"` or
        /// `"DNS change through this Nexus"`.
        requested_by: String,
        /// How many requests this one activation covers (requests made
        /// while the task was busy coalesce into one activation).
        requests: u64,
    },
}

impl std::fmt::Display for ActivationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActivationReason::Timer => f.write_str("a periodic timer firing"),
            ActivationReason::Dependency { name } => {
                write!(f, "a dependent task completing (\"{name}\")")
            }
            ActivationReason::Request { requested_by, requests: 1 } => {
                write!(f, "an explicit request ({requested_by})")
            }
            ActivationReason::Request { requested_by, requests } => {
                write!(f, "{requests} explicit requests (first: {requested_by})")
            }
        }
    }
}

/// One completed activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActivationRecord {
    /// Counts activations of this task since the process started, from 1.
    pub iteration: u64,
    pub reason: ActivationReason,
    pub start_time: DateTime<Utc>,
    pub elapsed: Duration,
    /// The task's own status, or `{"error": "..."}` when it failed, panicked
    /// or overran its deadline.
    pub details: serde_json::Value,
}

impl ActivationRecord {
    /// The error message, if the activation failed.
    pub fn error(&self) -> Option<&str> {
        self.details.get("error").and_then(|e| e.as_str())
    }
}

/// What a task is doing right now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CurrentStatus {
    Idle,
    Running {
        iteration: u64,
        reason: ActivationReason,
        start_time: DateTime<Utc>,
        /// What the activation says it has done so far, if it reports
        /// progress (see `Activation::report_progress`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress: Option<serde_json::Value>,
    },
}

/// The last completed activation, if any.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LastActivation {
    NeverCompleted,
    Completed(ActivationRecord),
}

/// Everything known about one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackgroundTask {
    pub name: String,
    pub description: String,
    pub period: Duration,
    /// The activation deadline, if the task has one.
    pub deadline: Option<Duration>,
    /// What activates the task besides its timer and requests.
    pub dependencies: Vec<String>,
    pub current: CurrentStatus,
    pub last: LastActivation,
    /// The most recent completed activations, oldest first (the last one is
    /// the same as `last`).
    pub history: Vec<ActivationRecord>,
}
