//! The framework's behaviour, deterministically: Tokio's clock is paused, so
//! "an hour" passes instantly and timers fire in a fixed order.

use background_tasks::{
    Activation, ActivationOutcome, ActivationReason, BackgroundTask, CurrentStatus, Driver,
    DriverBuilder, DriverStopped, LastActivation, RegistrationError, Task, TaskDefinition,
    UnknownTask,
};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Serialize)]
struct Count {
    count: u64,
}

/// Counts activations; optionally takes a while, panics or hangs.
#[derive(Clone, Default)]
struct Probe {
    count: Arc<AtomicU64>,
    work: Duration,
    panic_on_odd: bool,
    hang: bool,
}

impl Task for Probe {
    type Status = Count;
    async fn activate(&mut self, _: &Activation) -> anyhow::Result<Count> {
        let count = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if self.hang {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.work).await;
        if self.panic_on_odd && count % 2 == 1 {
            panic!("boom on activation {count}");
        }
        Ok(Count { count })
    }
}

fn start(definitions: Vec<TaskDefinition>) -> Driver {
    let mut builder = DriverBuilder::new();
    for d in definitions {
        builder.register(d).unwrap();
    }
    builder.start()
}

fn status(driver: &Driver) -> BackgroundTask {
    driver.status("probe").unwrap()
}

fn last_iteration(driver: &Driver) -> u64 {
    match status(driver).last {
        LastActivation::Completed(record) => record.iteration,
        LastActivation::NeverCompleted => 0,
    }
}

/// Lets (virtual) time pass until the probe has completed `n` activations.
async fn until_completed(driver: &Driver, n: u64) {
    while last_iteration(driver) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn runs_at_start_then_every_period_after_the_last_ended() {
    let probe = Probe { work: Duration::from_secs(2), ..Default::default() };
    let driver = start(vec![TaskDefinition::new("probe", "d", Duration::from_secs(10), probe)]);
    // Activations at t=0 (ends 2), 12 (ends 14), 24 (ends 26), 36 (ends 38).
    tokio::time::sleep(Duration::from_secs(39)).await;
    let history = status(&driver).history;
    assert_eq!(history.len(), 4);
    assert!(history.iter().all(|r| r.reason == ActivationReason::Timer));
    assert!(history.iter().all(|r| r.elapsed == Duration::from_secs(2)));
    assert_eq!(history[3].details["count"], 4);
    driver.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_published_change_activates_dependents_naming_the_dependency() {
    let (publisher, receiver) = watch::channel(0u64);
    let driver = start(vec![
        TaskDefinition::new("probe", "d", HOUR, Probe::default())
            .watching("dns_config_internal", receiver),
    ]);
    until_completed(&driver, 1).await;
    publisher.send(1).unwrap();
    until_completed(&driver, 2).await;
    let ActivationReason::Dependency { name } = &status(&driver).history[1].reason else {
        panic!("expected a dependency activation: {:?}", status(&driver).history[1]);
    };
    assert_eq!(name, "dns_config_internal");
    assert_eq!(status(&driver).dependencies, vec!["dns_config_internal".to_string()]);
    driver.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn requests_during_an_activation_coalesce_into_exactly_one_more() {
    let probe = Probe { work: Duration::from_secs(5), ..Default::default() };
    let count = probe.count.clone();
    let driver = start(vec![TaskDefinition::new("probe", "d", HOUR, probe)]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(matches!(status(&driver).current, CurrentStatus::Running { iteration: 1, .. }));

    let tickets: Vec<_> =
        (0..10).map(|i| driver.activator("probe").unwrap().activate(format!("req {i}"))).collect();
    let mut records = Vec::new();
    for ticket in tickets {
        records.push(ticket.wait().await.unwrap());
    }
    // All ten are served by activation 2, which started after they arrived.
    assert!(records.iter().all(|r| r.iteration == 2), "{records:?}");
    assert_eq!(
        records[0].reason,
        ActivationReason::Request { requested_by: "req 0".into(), requests: 10 }
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(count.load(Ordering::SeqCst), 2, "no activations piled up");
    driver.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_awaited_activation_returns_its_own_record() {
    let driver = start(vec![TaskDefinition::new("probe", "d", HOUR, Probe::default())]);
    until_completed(&driver, 1).await;
    let record = driver.activator("probe").unwrap().activate("omdb").wait().await.unwrap();
    assert_eq!(record.iteration, 2);
    assert_eq!(record.details["count"], 2);
    assert_eq!(
        record.reason,
        ActivationReason::Request { requested_by: "omdb".into(), requests: 1 }
    );
    // Waiting for several tasks at once through the driver; unknown names
    // activate nothing.
    assert_eq!(
        driver.activate(["probe", "nosuch"], "api").err(),
        Some(UnknownTask("nosuch".into()))
    );
    assert_eq!(last_iteration(&driver), 2);
    for (_, ticket) in driver.activate(["probe"], "api").unwrap() {
        assert_eq!(ticket.wait().await.unwrap().iteration, 3);
    }
    driver.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_a_failed_activation_and_scheduling_continues() {
    let probe = Probe { panic_on_odd: true, ..Default::default() };
    let driver = start(vec![TaskDefinition::new("probe", "d", Duration::from_secs(10), probe)]);
    until_completed(&driver, 1).await;
    let first = status(&driver).history[0].clone();
    assert_eq!(first.error().as_deref(), Some("task panicked: boom on activation 1"));
    assert_eq!(
        first.outcome,
        ActivationOutcome::Panicked { message: "boom on activation 1".into() }
    );
    // The timer keeps firing after the panic.
    until_completed(&driver, 2).await;
    let second = status(&driver).history[1].clone();
    assert_eq!(second.reason, ActivationReason::Timer);
    assert_eq!(second.details["count"], 2);
    driver.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_activation_shows_as_running_and_is_cancelled_at_its_deadline() {
    let probe = Probe { hang: true, ..Default::default() };
    let driver = start(vec![
        TaskDefinition::new("probe", "d", Duration::from_secs(60), probe)
            .with_deadline(Duration::from_secs(30)),
    ]);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let CurrentStatus::Running { iteration, reason, .. } = status(&driver).current else {
        panic!("hung task should show as running");
    };
    assert_eq!((iteration, reason), (1, ActivationReason::Timer));
    assert_eq!(last_iteration(&driver), 0);

    tokio::time::sleep(Duration::from_secs(11)).await; // t = 31 s
    let record = status(&driver).history[0].clone();
    assert_eq!(record.error().as_deref(), Some("timed out after 30s"));
    assert_eq!(record.outcome, ActivationOutcome::TimedOut { deadline: Duration::from_secs(30) });
    assert_eq!(record.elapsed, Duration::from_secs(30));
    assert_eq!(status(&driver).current, CurrentStatus::Idle);
    // Next activation one period after the failed one ended: t = 90 s.
    tokio::time::sleep(Duration::from_secs(58)).await; // t = 89 s
    assert_eq!(status(&driver).current, CurrentStatus::Idle);
    tokio::time::sleep(Duration::from_secs(2)).await; // t = 91 s
    assert!(matches!(status(&driver).current, CurrentStatus::Running { iteration: 2, .. }));
    driver.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_dependency_never_makes_the_task_spin() {
    let (publisher, receiver) = watch::channel(0u64);
    let probe = Probe::default();
    let count = probe.count.clone();
    let driver =
        start(vec![TaskDefinition::new("probe", "d", HOUR, probe).watching("gone", receiver)]);
    until_completed(&driver, 1).await;
    drop(publisher);
    // A task spinning on the closed channel would keep the runtime busy and
    // this (virtual) sleep would never end; one spinning through activations
    // would count them.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // The task still works otherwise.
    let record = driver.activator("probe").unwrap().activate("test").wait().await.unwrap();
    assert_eq!(record.iteration, 2);
    driver.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn history_is_oldest_first_and_bounded() {
    let mut builder = DriverBuilder::new().history_len(3);
    let activator =
        builder.register(TaskDefinition::new("probe", "d", HOUR, Probe::default())).unwrap();
    let driver = builder.start();
    for _ in 0..5 {
        activator.activate("test").wait().await.unwrap();
    }
    let status = status(&driver);
    let iterations: Vec<u64> = status.history.iter().map(|r| r.iteration).collect();
    // The first request is served by the start-up activation: 5 in all.
    assert_eq!(iterations, vec![3, 4, 5]);
    assert_eq!(status.last, LastActivation::Completed(status.history[2].clone()));
    driver.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn duplicate_names_are_rejected_at_registration() {
    let mut builder = DriverBuilder::new();
    builder.register(TaskDefinition::new("same", "a", HOUR, Probe::default())).unwrap();
    let error = builder.register(TaskDefinition::new("same", "b", HOUR, Probe::default()));
    assert_eq!(error.err(), Some(RegistrationError::DuplicateName("same".into())));
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_everything_promptly_even_mid_activation() {
    let hung = Probe { hang: true, ..Default::default() };
    let driver = start(vec![
        TaskDefinition::new("probe", "d", HOUR, hung),
        TaskDefinition::new("other", "d", Duration::from_secs(1), Probe::default()),
    ]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ticket = driver.activator("probe").unwrap().activate("test");
    let waiter = tokio::spawn(ticket.wait());
    let started = tokio::time::Instant::now();
    driver.shutdown().await;
    assert_eq!(started.elapsed(), Duration::ZERO, "shutdown waited for something");
    assert_eq!(waiter.await.unwrap(), Err(DriverStopped));
}

#[tokio::test(start_paused = true)]
async fn errors_are_statuses_with_their_context() {
    struct Failing;
    impl Task for Failing {
        type Status = ();
        async fn activate(&mut self, _: &Activation) -> anyhow::Result<()> {
            let cause = std::io::Error::other("connection refused");
            Err(anyhow::Error::new(cause).context("reading the latest DNS version"))
        }
    }
    let driver = start(vec![TaskDefinition::new("probe", "d", HOUR, Failing)]);
    until_completed(&driver, 1).await;
    assert_eq!(
        status(&driver).history[0].details,
        serde_json::json!({"error": "reading the latest DNS version: connection refused"})
    );
    driver.shutdown().await;
}

/// A status that keeps its last good state beside an error it reports in
/// a field of its own (named `error`, as the DNS config task's is).
#[derive(Serialize)]
struct Kept {
    generation: u64,
    error: Option<String>,
}

/// Fails on even activations but keeps the generation it had.
struct Keeper(u64);

impl Task for Keeper {
    type Status = Kept;
    async fn activate(&mut self, _: &Activation) -> anyhow::Result<Kept> {
        self.0 += 1;
        let error = self.0.is_multiple_of(2).then(|| format!("lost the database on {}", self.0));
        Ok(Kept { generation: 7, error })
    }
    fn failure(status: &Kept) -> Option<String> {
        status.error.clone()
    }
}

/// Whether an activation failed is decided by the task's type, not by a
/// key its JSON happens to have: a success with `"error": null` is a
/// success, and a failure keeps the state the task kept.
#[tokio::test(start_paused = true)]
async fn a_failure_that_keeps_state_is_failed_and_a_field_named_error_is_not() {
    let driver = start(vec![TaskDefinition::new("probe", "d", Duration::from_secs(10), Keeper(0))]);
    until_completed(&driver, 2).await;
    let history = status(&driver).history;
    assert_eq!(history[0].outcome, ActivationOutcome::Succeeded);
    assert!(history[0].details.get("error").is_some(), "the task's own field is kept");
    assert_eq!(
        history[1].outcome,
        ActivationOutcome::Failed { error: "lost the database on 2".into() }
    );
    assert_eq!(history[1].details["generation"], 7, "the kept state is the details");

    // A plain error keeps nothing: its details are the error alone.
    struct Failing;
    impl Task for Failing {
        type Status = Count;
        async fn activate(&mut self, _: &Activation) -> anyhow::Result<Count> {
            Err(anyhow::anyhow!("no luck").context("trying"))
        }
    }
    let driver = start(vec![TaskDefinition::new("probe", "d", HOUR, Failing)]);
    until_completed(&driver, 1).await;
    let record = status(&driver).history[0].clone();
    assert_eq!(record.outcome, ActivationOutcome::Failed { error: "trying: no luck".into() });
    assert_eq!(record.details, serde_json::json!({"error": "trying: no luck"}));
    driver.shutdown().await;
}
