//! Registration, the per-task activation loop, and activation on request.

use background_task_types::{
    ActivationOutcome, ActivationReason, ActivationRecord, BackgroundTask, CurrentStatus,
    LastActivation,
};
use chrono::Utc;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How many completed activations each task keeps unless told otherwise.
pub const DEFAULT_HISTORY_LEN: usize = 16;

/// A background task: activated, does its work, returns a typed status.
///
/// An activation takes no input besides [`Activation`]: it looks at what
/// should be and what is, and converges.  It does not retry internally; the
/// next activation is the retry.  An error is recorded as a failed outcome
/// (`{"error": "<message with its causes>"}` as details); a task that fails
/// but keeps a state worth showing (the last good one) returns that status
/// and says it failed through [`Task::failure`].
pub trait Task: Send + 'static {
    /// What the task reports about an activation.
    type Status: Serialize + Send;

    fn activate(
        &mut self,
        activation: &Activation,
    ) -> impl Future<Output = anyhow::Result<Self::Status>> + Send;

    /// Whether a returned status reports a failure (the task kept its last
    /// good state beside the error): the error, or `None` for a success.
    fn failure(_status: &Self::Status) -> Option<String> {
        None
    }
}

/// What the framework tells a task about the activation it is running.
#[derive(Clone, Debug)]
pub struct Activation {
    pub iteration: u64,
    pub reason: ActivationReason,
    progress: Option<watch::Sender<TaskState>>,
}

impl Activation {
    /// An activation outside any driver (for calling a task directly, as
    /// tests do): progress reports go nowhere.
    pub fn new(iteration: u64, reason: ActivationReason) -> Activation {
        Activation { iteration, reason, progress: None }
    }

    /// Publishes what this activation has done so far; it shows in the
    /// task's `current` status until the activation completes.  A long
    /// activation should report, so that "still running" comes with "doing
    /// what".
    pub fn report_progress<P: Serialize>(&self, progress: &P) {
        let Some(state) = &self.progress else { return };
        let Ok(value) = serde_json::to_value(progress) else { return };
        let iteration = self.iteration;
        state.send_modify(|s| {
            if let CurrentStatus::Running { iteration: running, progress, .. } = &mut s.current
                && *running == iteration
            {
                *progress = Some(value);
            }
        });
    }
}

/// Object-safe form of [`Task`], with the status already turned into JSON
/// and its failure, if it reports one, beside it.
trait ErasedTask: Send {
    fn activate<'a>(
        &'a mut self,
        activation: &'a Activation,
    ) -> BoxFuture<'a, anyhow::Result<(serde_json::Value, Option<String>)>>;
}

impl<T: Task> ErasedTask for T {
    fn activate<'a>(
        &'a mut self,
        activation: &'a Activation,
    ) -> BoxFuture<'a, anyhow::Result<(serde_json::Value, Option<String>)>> {
        Box::pin(async move {
            let status = Task::activate(self, activation).await?;
            let failure = T::failure(&status);
            Ok((serde_json::to_value(status)?, failure))
        })
    }
}

/// A value another task publishes, whose changes activate this one.
trait Dependency: Send {
    fn name(&self) -> &str;
    /// Resolves when the value changes: `true`, or `false` once the
    /// publisher is gone for good.
    fn changed(&mut self) -> BoxFuture<'_, bool>;
    /// Marks the current value seen, so that it does not activate again.
    fn mark_seen(&mut self);
}

struct WatchDependency<T> {
    name: String,
    receiver: watch::Receiver<T>,
}

impl<T: Send + Sync> Dependency for WatchDependency<T> {
    fn name(&self) -> &str {
        &self.name
    }
    fn changed(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.receiver.changed().await.is_ok() })
    }
    fn mark_seen(&mut self) {
        self.receiver.borrow_and_update();
    }
}

/// Everything needed to register one task.
pub struct TaskDefinition {
    name: String,
    description: String,
    period: Duration,
    deadline: Option<Duration>,
    dependencies: Vec<Box<dyn Dependency>>,
    activator: Activator,
    task: Box<dyn ErasedTask>,
}

impl TaskDefinition {
    /// A task named `name` (unique), described by `description` (what omdb's
    /// `doc` prints), activated every `period` at least.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        period: Duration,
        task: impl Task,
    ) -> TaskDefinition {
        TaskDefinition {
            name: name.into(),
            description: description.into(),
            period,
            deadline: None,
            dependencies: Vec::new(),
            activator: Activator::new(),
            task: Box::new(task),
        }
    }

    /// Also activate whenever `receiver`'s value changes; `name` (usually
    /// the publishing task's) is recorded as the reason.
    pub fn watching<T: Send + Sync + 'static>(
        mut self,
        name: impl Into<String>,
        receiver: watch::Receiver<T>,
    ) -> TaskDefinition {
        self.dependencies.push(Box::new(WatchDependency { name: name.into(), receiver }));
        self
    }

    /// Cancel an activation that runs longer than `deadline` and record it
    /// as failed.
    pub fn with_deadline(mut self, deadline: Duration) -> TaskDefinition {
        self.deadline = Some(deadline);
        self
    }

    /// Use an activator made earlier (for a task that must be activated by
    /// code built before it was registered).
    pub fn with_activator(mut self, activator: Activator) -> TaskDefinition {
        self.activator = activator;
        self
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistrationError {
    #[error("two background tasks are named {0:?}; task names must be unique")]
    DuplicateName(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no background task is named {0:?}")]
pub struct UnknownTask(pub String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the background task driver stopped before the activation completed")]
pub struct DriverStopped;

/// The dynamic state of one task, shared between its loop, activators and
/// status readers.  The watch channel lets waiters sleep until it changes.
#[derive(Debug)]
struct TaskState {
    current: CurrentStatus,
    last: LastActivation,
    history: VecDeque<ActivationRecord>,
    /// Every request with an id up to this one is covered by a completed
    /// activation.
    covered_through: u64,
    stopped: bool,
}

#[derive(Default)]
struct Requests {
    /// Id of the latest request.
    latest: u64,
    /// Requests not yet covered by a started activation: who asked first, and
    /// how many asked.
    pending: Option<(String, u64)>,
}

struct Shared {
    requests: Mutex<Requests>,
    notify: Notify,
    state: watch::Sender<TaskState>,
}

/// Asks one task for an activation.  Cheap to clone; works before the driver
/// starts (the first activation then covers the request).
#[derive(Clone)]
pub struct Activator {
    shared: Arc<Shared>,
}

impl Default for Activator {
    fn default() -> Self {
        Activator::new()
    }
}

impl Activator {
    pub fn new() -> Activator {
        let (state, _) = watch::channel(TaskState {
            current: CurrentStatus::Idle,
            last: LastActivation::NeverCompleted,
            history: VecDeque::new(),
            covered_through: 0,
            stopped: false,
        });
        Activator {
            shared: Arc::new(Shared {
                requests: Mutex::new(Requests::default()),
                notify: Notify::new(),
                state,
            }),
        }
    }

    /// Requests an activation.  If the task is busy, the request is served
    /// by the one activation that follows the current one, together with
    /// any other requests made meanwhile.
    pub fn activate(&self, requested_by: impl Into<String>) -> ActivationTicket {
        let id = {
            let mut requests = self.shared.requests.lock().unwrap_or_else(|e| e.into_inner());
            requests.latest += 1;
            let pending = requests.pending.get_or_insert_with(|| (requested_by.into(), 0));
            pending.1 += 1;
            requests.latest
        };
        self.shared.notify.notify_one();
        ActivationTicket { id, shared: self.shared.clone() }
    }
}

/// A request for an activation, which can be waited on.
pub struct ActivationTicket {
    id: u64,
    shared: Arc<Shared>,
}

impl ActivationTicket {
    /// Waits until an activation that started after the request has
    /// completed, and returns its record.
    pub async fn wait(self) -> Result<ActivationRecord, DriverStopped> {
        let mut state = self.shared.state.subscribe();
        let state = state
            .wait_for(|s| s.covered_through >= self.id || s.stopped)
            .await
            .map_err(|_| DriverStopped)?;
        match &state.last {
            LastActivation::Completed(record) if state.covered_through >= self.id => {
                Ok(record.clone())
            }
            _ => Err(DriverStopped),
        }
    }
}

/// Called with the task's name and the record of every completed
/// activation (to export metrics, say), on the task's own loop: keep it
/// quick.
pub type ActivationObserver = Arc<dyn Fn(&str, &ActivationRecord) + Send + Sync>;

/// Collects task definitions; [`DriverBuilder::start`] runs them.
pub struct DriverBuilder {
    definitions: Vec<TaskDefinition>,
    history_len: usize,
    observers: Vec<ActivationObserver>,
}

impl Default for DriverBuilder {
    fn default() -> Self {
        DriverBuilder::new()
    }
}

impl DriverBuilder {
    pub fn new() -> DriverBuilder {
        DriverBuilder {
            definitions: Vec::new(),
            history_len: DEFAULT_HISTORY_LEN,
            observers: Vec::new(),
        }
    }

    /// Calls `observer` after every completed activation of every task.
    pub fn observe(&mut self, observer: ActivationObserver) {
        self.observers.push(observer);
    }

    /// How many completed activations to keep per task (at least 1).
    pub fn history_len(mut self, len: usize) -> DriverBuilder {
        self.history_len = len.max(1);
        self
    }

    /// Registers a task and returns its activator.
    pub fn register(&mut self, definition: TaskDefinition) -> Result<Activator, RegistrationError> {
        if self.definitions.iter().any(|d| d.name == definition.name) {
            return Err(RegistrationError::DuplicateName(definition.name));
        }
        let activator = definition.activator.clone();
        self.definitions.push(definition);
        Ok(activator)
    }

    /// Starts every task (each runs its first activation right away).  Must
    /// be called within a Tokio runtime.
    pub fn start(self) -> Driver {
        let shutdown = CancellationToken::new();
        let mut tasks = BTreeMap::new();
        let mut loops = Vec::new();
        for definition in self.definitions {
            let info = TaskInfo {
                description: definition.description.clone(),
                period: definition.period,
                deadline: definition.deadline,
                dependencies: definition
                    .dependencies
                    .iter()
                    .map(|d| d.name().to_string())
                    .collect(),
                activator: definition.activator.clone(),
            };
            tasks.insert(definition.name.clone(), info);
            let runner = TaskLoop {
                definition,
                history_len: self.history_len,
                iteration: 0,
                observers: self.observers.clone(),
            };
            loops.push(tokio::spawn(runner.run(shutdown.clone())));
        }
        Driver { tasks, shutdown, loops }
    }
}

struct TaskInfo {
    description: String,
    period: Duration,
    deadline: Option<Duration>,
    dependencies: Vec<String>,
    activator: Activator,
}

/// The running tasks.
pub struct Driver {
    tasks: BTreeMap<String, TaskInfo>,
    shutdown: CancellationToken,
    loops: Vec<JoinHandle<()>>,
}

impl Driver {
    /// Names of all tasks, sorted.
    pub fn task_names(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    pub fn activator(&self, name: &str) -> Result<&Activator, UnknownTask> {
        self.tasks.get(name).map(|t| &t.activator).ok_or_else(|| UnknownTask(name.into()))
    }

    /// Requests activation of every named task, or of none if any name is
    /// unknown.
    pub fn activate<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        requested_by: &str,
    ) -> Result<Vec<(String, ActivationTicket)>, UnknownTask> {
        let names: Vec<&str> = names.into_iter().collect();
        let activators = names.iter().map(|n| self.activator(n)).collect::<Result<Vec<_>, _>>()?;
        Ok(names
            .iter()
            .zip(activators)
            .map(|(name, a)| (name.to_string(), a.activate(requested_by)))
            .collect())
    }

    /// Everything recorded about one task.
    pub fn status(&self, name: &str) -> Result<BackgroundTask, UnknownTask> {
        let info = self.tasks.get(name).ok_or_else(|| UnknownTask(name.into()))?;
        let state = info.activator.shared.state.borrow();
        Ok(BackgroundTask {
            name: name.to_string(),
            description: info.description.clone(),
            period: info.period,
            deadline: info.deadline,
            dependencies: info.dependencies.clone(),
            current: state.current.clone(),
            last: state.last.clone(),
            history: state.history.iter().cloned().collect(),
        })
    }

    /// Everything recorded about every task, by name.
    pub fn statuses(&self) -> BTreeMap<String, BackgroundTask> {
        self.tasks
            .keys()
            .map(|name| (name.clone(), self.status(name).expect("name comes from the map")))
            .collect()
    }

    /// Stops every task: in-flight activations are cancelled, waiters are
    /// told the driver stopped.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        for handle in std::mem::take(&mut self.loops) {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "background task loop failed to stop cleanly");
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Without an explicit shutdown, still stop the loops.
        self.shutdown.cancel();
    }
}

/// What woke the loop up.
enum Wake {
    Timer,
    Request,
    Dependency(usize),
    DependencyGone(usize),
}

struct TaskLoop {
    definition: TaskDefinition,
    history_len: usize,
    iteration: u64,
    observers: Vec<ActivationObserver>,
}

impl TaskLoop {
    async fn run(mut self, shutdown: CancellationToken) {
        let shared = self.definition.activator.shared.clone();
        let name = self.definition.name.clone();
        let mut next_timer = Instant::now();
        loop {
            let wake = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = shared.notify.notified() => Wake::Request,
                wake = dependency_changed(&mut self.definition.dependencies) => wake,
                _ = tokio::time::sleep_until(next_timer) => Wake::Timer,
            };
            let reason = match wake {
                Wake::DependencyGone(index) => {
                    let gone = self.definition.dependencies.remove(index);
                    tracing::warn!(
                        task = %name, dependency = gone.name(),
                        "dependency's publisher is gone; no longer watching it"
                    );
                    continue;
                }
                Wake::Timer => Some(ActivationReason::Timer),
                Wake::Dependency(index) => Some(ActivationReason::Dependency {
                    name: self.definition.dependencies[index].name().to_string(),
                }),
                Wake::Request => None,
            };

            // Everything pending now is covered by this activation: a stored
            // wake-up permit first (so that a request arriving after this
            // point keeps its own), then the requests, then dependencies.
            let _ = shared.notify.notified().now_or_never();
            let (covers_through, pending) = {
                let mut requests = shared.requests.lock().unwrap_or_else(|e| e.into_inner());
                (requests.latest, requests.pending.take())
            };
            for dependency in &mut self.definition.dependencies {
                dependency.mark_seen();
            }
            let reason = match (reason, pending) {
                (Some(reason), _) => reason,
                (None, Some((requested_by, requests))) => {
                    ActivationReason::Request { requested_by, requests }
                }
                // A permit left from requests an earlier activation covered.
                (None, None) => continue,
            };

            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.activate(&shared, reason, covers_through) => {}
            }
            next_timer = Instant::now() + self.definition.period;
        }
        shared.state.send_modify(|s| {
            s.current = CurrentStatus::Idle;
            s.stopped = true;
        });
    }

    async fn activate(&mut self, shared: &Shared, reason: ActivationReason, covers_through: u64) {
        self.iteration += 1;
        let iteration = self.iteration;
        let start_time = Utc::now();
        let started = Instant::now();
        shared.state.send_modify(|s| {
            s.current = CurrentStatus::Running {
                iteration,
                reason: reason.clone(),
                start_time,
                progress: None,
            }
        });
        tracing::debug!(task = %self.definition.name, iteration, %reason, "activation starting");

        let activation =
            Activation { iteration, reason: reason.clone(), progress: Some(shared.state.clone()) };
        // Every line logged inside the activation says which one it is.
        let span = tracing::info_span!("activation", task = %self.definition.name, iteration);
        let work = AssertUnwindSafe(self.definition.task.activate(&activation))
            .catch_unwind()
            .instrument(span);
        let outcome = match self.definition.deadline {
            None => Ok(work.await),
            Some(deadline) => tokio::time::timeout(deadline, work).await.map_err(|_| deadline),
        };
        let (outcome, details) = match outcome {
            Ok(Ok(Ok((status, None)))) => (ActivationOutcome::Succeeded, status),
            Ok(Ok(Ok((status, Some(error))))) => (ActivationOutcome::Failed { error }, status),
            Ok(Ok(Err(error))) => {
                let error = format!("{error:#}");
                (ActivationOutcome::Failed { error: error.clone() }, error_details(error))
            }
            Ok(Err(panic)) => {
                let message = panic_message(&panic).to_string();
                let outcome = ActivationOutcome::Panicked { message };
                let details = error_details(outcome.error().unwrap_or_default());
                (outcome, details)
            }
            Err(deadline) => {
                let outcome = ActivationOutcome::TimedOut { deadline };
                let details = error_details(outcome.error().unwrap_or_default());
                (outcome, details)
            }
        };
        let elapsed = started.elapsed();
        if let Some(error) = outcome.error() {
            tracing::warn!(task = %self.definition.name, iteration, %error, "activation failed");
        } else {
            tracing::debug!(task = %self.definition.name, iteration, ?elapsed, "activation done");
        }
        let record = ActivationRecord { iteration, reason, start_time, elapsed, outcome, details };
        for observer in &self.observers {
            observer(&self.definition.name, &record);
        }
        let history_len = self.history_len;
        shared.state.send_modify(|s| {
            s.current = CurrentStatus::Idle;
            s.history.push_back(record.clone());
            while s.history.len() > history_len {
                s.history.pop_front();
            }
            s.last = LastActivation::Completed(record);
            s.covered_through = covers_through;
        });
    }
}

/// Resolves when one of the dependencies changes or goes away; never when
/// there are none.
async fn dependency_changed(dependencies: &mut [Box<dyn Dependency>]) -> Wake {
    if dependencies.is_empty() {
        return std::future::pending().await;
    }
    let futures = dependencies.iter_mut().map(|d| d.changed());
    let (changed, index, _) = futures::future::select_all(futures).await;
    if changed { Wake::Dependency(index) } else { Wake::DependencyGone(index) }
}

fn error_details(message: String) -> serde_json::Value {
    serde_json::json!({ "error": message })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(a panic payload that is not a string)"
    }
}
