//! Nexus's Prometheus metrics (`GET /metrics`).
//!
//! Per task: activations by reason and outcome and their duration (counted
//! as they complete, through the driver's observer), whether it is running,
//! and its lints (`nexus_types::lints`).  Per group: the generation this Nexus
//! loaded (the database's latest as it sees it; compare across Nexus
//! instances to find disagreement).  Per DNS server: the generation applied,
//! the last success, consecutive failures.  And the propagation latency:
//! from a generation's creation in the database to its application on each
//! server.  Labels are task names, groups, lint kinds and server addresses:
//! bounded sets, never a DNS name or a comment.

use background_task_types::{ActivationReason, ActivationRecord, BackgroundTask, CurrentStatus};
use chrono::{DateTime, Utc};
use db_model::ConnectionReport;
use dns_types::DnsGroup;
use nexus_types::lints::{DEFAULT_STUCK_AFTER, Lint, lint};
use nexus_types::task_name::DnsTaskName;
use nexus_types::task_status::PropagationOutcome;
use nexus_types::task_view::DnsTaskView;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActivationLabels {
    task: String,
    reason: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LintLabels {
    task: String,
    lint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    group: String,
    server: String,
}

pub struct Metrics {
    registry: Registry,
    activations: Family<ActivationLabels, Counter>,
    activation_seconds: Family<TaskLabels, Histogram>,
    running: Family<TaskLabels, Gauge>,
    lints: Family<LintLabels, Gauge>,
    generation: Family<GroupLabels, Gauge>,
    server_generation: Family<ServerLabels, Gauge>,
    server_last_success: Family<ServerLabels, Gauge<f64, AtomicU64>>,
    server_failures: Family<ServerLabels, Gauge>,
    server_fault: Family<FaultLabels, Gauge>,
    config_ok: Family<GroupLabels, Gauge>,
    propagation_latency: Family<GroupLabels, Histogram>,
    database_node: Family<NodeLabels, Gauge>,
    database_failovers: Counter,
    database_write_failures: Family<FailureLabels, Counter>,
    /// One scrape at a time: the state-derived families are cleared and
    /// refilled for each, and two at once would see each other's half.
    render_lock: std::sync::Mutex<()>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    group: String,
    server: String,
    /// `beyond_database` or `diverged`.
    fault: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("nexus");
        let activations = Family::<ActivationLabels, Counter>::default();
        registry.register(
            "task_activations",
            "Completed background task activations, by reason and outcome",
            activations.clone(),
        );
        let activation_seconds = Family::<TaskLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 18))
        });
        registry.register(
            "task_activation_seconds",
            "Duration of completed background task activations",
            activation_seconds.clone(),
        );
        let running = Family::<TaskLabels, Gauge>::default();
        registry.register("task_running", "1 while the task runs an activation", running.clone());
        let lints = Family::<LintLabels, Gauge>::default();
        registry.register(
            "task_lint",
            "1 when the lint applies to the task (overdue, stuck, empty or shrunk server list, server failing)",
            lints.clone(),
        );
        let generation = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "dns_generation_loaded",
            "The group's latest generation as this Nexus loaded it from the database",
            generation.clone(),
        );
        let server_generation = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "dns_server_generation_applied",
            "The last generation this Nexus saw a DNS server serve correctly",
            server_generation.clone(),
        );
        let server_last_success = Family::<ServerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "dns_server_last_success_timestamp_seconds",
            "When propagation last succeeded for a DNS server (Unix time)",
            server_last_success.clone(),
        );
        let server_failures = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "dns_server_consecutive_failures",
            "Propagation attempts in a row that failed for a DNS server",
            server_failures.clone(),
        );
        let server_fault = Family::<FaultLabels, Gauge>::default();
        registry.register(
            "dns_server_fault",
            "1 when the last push found a DNS server beyond the database or diverged from it \
             (and it was not repaired)",
            server_fault.clone(),
        );
        let config_ok = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "dns_config_ok",
            "1 when this Nexus's last dns_config activation of the group read the database",
            config_ok.clone(),
        );
        let propagation_latency = Family::<GroupLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 20))
        });
        registry.register(
            "dns_propagation_latency_seconds",
            "From a generation's creation in the database to its application on a DNS server",
            propagation_latency.clone(),
        );
        let database_node = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "database_node",
            "1 for the database node (host:port) this Nexus's connections reach now",
            database_node.clone(),
        );
        let database_failovers = Counter::default();
        registry.register(
            "database_failovers_seen",
            "Times new database connections reached another node than before (the primary moved)",
            database_failovers.clone(),
        );
        let database_write_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "database_write_failures",
            "Write transactions that failed, by kind (unavailable, read_only, \
             commit_outcome_unknown, timeout, conflict, other)",
            database_write_failures.clone(),
        );
        Metrics {
            registry,
            database_node,
            database_failovers,
            database_write_failures,
            activations,
            activation_seconds,
            running,
            lints,
            generation,
            server_generation,
            server_last_success,
            server_failures,
            server_fault,
            config_ok,
            propagation_latency,
            render_lock: std::sync::Mutex::new(()),
        }
    }

    /// Counts a completed activation (the driver's observer).
    pub fn activation(&self, task: &str, record: &ActivationRecord) {
        let reason = match record.reason {
            ActivationReason::Timer => "timer",
            ActivationReason::Dependency { .. } => "dependency",
            ActivationReason::Request { .. } => "request",
        };
        let outcome = record.outcome.kind();
        self.activations
            .get_or_create(&ActivationLabels { task: task.into(), reason, outcome })
            .inc();
        self.activation_seconds
            .get_or_create(&TaskLabels { task: task.into() })
            .observe(record.elapsed.as_secs_f64());
    }

    /// A generation created at `created` became served on a server now.
    pub fn propagated(&self, group: DnsGroup, created: DateTime<Utc>) {
        let seconds = (Utc::now() - created).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
        self.propagation_latency
            .get_or_create(&GroupLabels { group: group.to_string() })
            .observe(seconds);
    }

    /// The text exposition, with the state-derived figures taken from
    /// `tasks` now.
    pub fn render(
        &self,
        tasks: &BTreeMap<String, BackgroundTask>,
        database: &ConnectionReport,
    ) -> String {
        let _one_at_a_time = self.render_lock.lock().unwrap_or_else(|e| e.into_inner());
        let now = Utc::now();
        self.database_node.clear();
        if let Some(node) = &database.node {
            self.database_node.get_or_create(&NodeLabels { node: node.node.clone() }).set(1);
        }
        // The pool counts; the counters follow it.
        let seen = self.database_failovers.get();
        self.database_failovers.inc_by(database.failovers_seen.saturating_sub(seen));
        for (kind, count) in &database.write_failures {
            let counter =
                self.database_write_failures.get_or_create(&FailureLabels { kind: kind.as_str() });
            counter.inc_by(count.saturating_sub(counter.get()));
        }
        self.lints.clear();
        self.server_fault.clear();
        self.server_generation.clear();
        self.server_last_success.clear();
        self.server_failures.clear();
        for (name, task) in tasks {
            let labels = TaskLabels { task: name.clone() };
            let running = matches!(task.current, CurrentStatus::Running { .. });
            self.running.get_or_create(&labels).set(i64::from(running));
            let found: Vec<Lint> = lint(task, now, DEFAULT_STUCK_AFTER);
            for kind in Lint::KINDS {
                let applies = found.iter().any(|l| l.kind() == kind);
                self.lints
                    .get_or_create(&LintLabels { task: name.clone(), lint: kind })
                    .set(i64::from(applies));
            }
            self.task_state(name, task);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }

    fn task_state(&self, name: &str, task: &BackgroundTask) {
        let Ok(task_name) = name.parse::<DnsTaskName>() else { return };
        let group = task_name.group.to_string();
        match DnsTaskView::of(task) {
            DnsTaskView::Config { status, error, .. } => {
                let labels = GroupLabels { group };
                self.config_ok.get_or_create(&labels).set(i64::from(error.is_none()));
                if let Some(status) = status {
                    self.generation.get_or_create(&labels).set(status.generation as i64);
                }
            }
            DnsTaskView::Propagation { status: Some(status), .. } => {
                for (server, result) in &status.servers {
                    let labels = ServerLabels { group: group.clone(), server: server.clone() };
                    let history = &result.history;
                    if let Some(generation) = history.generation_applied {
                        self.server_generation.get_or_create(&labels).set(generation as i64);
                    }
                    if let Some(at) = history.last_success_at {
                        let seconds = at.timestamp_millis() as f64 / 1000.0;
                        self.server_last_success.get_or_create(&labels).set(seconds);
                    }
                    self.server_failures
                        .get_or_create(&labels)
                        .set(history.consecutive_failures as i64);
                    let fault = match result.outcome {
                        PropagationOutcome::ServerBeyondDatabase => Some("beyond_database"),
                        PropagationOutcome::ServerDiverged => Some("diverged"),
                        _ => None,
                    };
                    if let Some(fault) = fault {
                        let labels =
                            FaultLabels { group: group.clone(), server: server.clone(), fault };
                        self.server_fault.get_or_create(&labels).set(1);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use background_task_types::{ActivationOutcome, LastActivation};
    use serde_json::json;

    /// A propagation task that last reached `servers` servers.
    fn propagation(servers: u16) -> BackgroundTask {
        let now = Utc::now();
        let results: serde_json::Map<String, serde_json::Value> = (0..servers)
            .map(|i| {
                let result = json!({
                    "result": "success", "outcome": "applied", "message": "updated",
                    "server_generation": 2, "completed_at": now,
                    "history": {"last_attempt_at": now, "last_success_at": now,
                                "failing_since": null, "consecutive_failures": 0,
                                "generation_applied": 2, "last_repair": null}
                });
                (format!("127.0.0.1:{}", 10_000 + i), result)
            })
            .collect();
        let record = ActivationRecord {
            iteration: 1,
            reason: ActivationReason::Timer,
            start_time: now,
            elapsed: std::time::Duration::from_millis(4),
            outcome: ActivationOutcome::Succeeded,
            details: json!({
                "group": "internal", "generation": 2,
                "config_source": {"task": "dns_config_internal", "creator": "t", "comment": "c",
                                  "digest": "d", "first_seen_at": now},
                "servers_source": {"task": "dns_servers_internal", "discovered_at": now},
                "servers": results, "all_done_at": now
            }),
        };
        BackgroundTask {
            name: DnsTaskName::propagation(DnsGroup::Internal).to_string(),
            description: String::new(),
            period: std::time::Duration::from_secs(60),
            deadline: None,
            dependencies: vec![],
            current: CurrentStatus::Idle,
            last: LastActivation::Completed(record.clone()),
            history: vec![record],
        }
    }

    /// Concurrent scrapes each see one whole state: the state-derived
    /// series are cleared and refilled per scrape, so without one render at
    /// a time a scrape can encode them half refilled.
    #[test]
    fn concurrent_renders_each_see_every_server() {
        let metrics = std::sync::Arc::new(Metrics::new());
        let task = propagation(300);
        let tasks: BTreeMap<String, BackgroundTask> = [(task.name.clone(), task)].into();
        let series = "nexus_dns_server_generation_applied{";
        assert_eq!(
            metrics.render(&tasks, &Default::default()).matches(series).count(),
            300,
            "positive control"
        );
        let tasks = std::sync::Arc::new(tasks);
        let renders: Vec<_> = (0..4)
            .map(|_| {
                let (metrics, tasks) = (metrics.clone(), tasks.clone());
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| {
                            metrics.render(&tasks, &Default::default()).matches(series).count()
                                != 300
                        })
                        .count()
                })
            })
            .collect();
        for render in renders {
            assert_eq!(render.join().unwrap(), 0, "scrapes lacked servers");
        }
    }
}
