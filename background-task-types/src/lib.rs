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

/// How an activation ended.  Decided by the framework from what the task
/// returned, never read back from the task's status: a status may well have
/// a field named `error` of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActivationOutcome {
    /// The task did its work; `details` is its status.
    Succeeded,
    /// The task reported a failure.  `details` is the state it kept beside
    /// the error (for example the last good generation it still works
    /// from), or `{"error": "..."}` when it kept none.
    Failed { error: String },
    /// The task panicked; `details` is `{"error": "..."}`.
    Panicked { message: String },
    /// The activation overran its deadline and was cancelled; `details` is
    /// `{"error": "..."}`.
    TimedOut { deadline: Duration },
}

impl ActivationOutcome {
    /// What went wrong, in one line; `None` when the activation succeeded.
    pub fn error(&self) -> Option<String> {
        match self {
            ActivationOutcome::Succeeded => None,
            ActivationOutcome::Failed { error } => Some(error.clone()),
            ActivationOutcome::Panicked { message } => Some(format!("task panicked: {message}")),
            ActivationOutcome::TimedOut { deadline } => {
                Some(format!("timed out after {deadline:?}"))
            }
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, ActivationOutcome::Succeeded)
    }

    /// The outcome's name, as in metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ActivationOutcome::Succeeded => "succeeded",
            ActivationOutcome::Failed { .. } => "failed",
            ActivationOutcome::Panicked { .. } => "panicked",
            ActivationOutcome::TimedOut { .. } => "timed_out",
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
    /// How the activation ended.
    pub outcome: ActivationOutcome,
    /// The task's own status (for a failure, the state it kept, if any), or
    /// `{"error": "..."}` when it failed without one, panicked or overran
    /// its deadline.
    pub details: serde_json::Value,
}

impl ActivationRecord {
    /// The error message, if the activation did not succeed.
    pub fn error(&self) -> Option<String> {
        self.outcome.error()
    }

    /// When the activation ended.
    pub fn end_time(&self) -> DateTime<Utc> {
        self.start_time + chrono::Duration::from_std(self.elapsed).unwrap_or_default()
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
