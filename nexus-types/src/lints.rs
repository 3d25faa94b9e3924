//! Task lints: what an operator should look at first, decided once from a
//! task's status and shown by omdb (`background-tasks show`/`list`) and
//! exported by Nexus as metrics.
//!
//! - `overdue`: idle, and more than twice its period since its last
//!   activation ended (its timer is not firing);
//! - `stuck`: running for longer than a limit;
//! - `empty_server_list` / `shrunk_server_list`: `dns_servers_<group>` found
//!   no servers, or fewer than before its last change;
//! - `server_failing`: `dns_propagation_<group>` has failed to bring a
//!   server up to date since a time.
//!
//! Disagreement between Nexus instances needs more than one Nexus's view:
//! omdb reports it with `--all-nexus`, and each Nexus exports its loaded
//! generation so an alert can compare them.

use crate::task_view::DnsTaskView;
use background_task_types::{BackgroundTask, CurrentStatus, LastActivation};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A running task counts as stuck after this long unless told otherwise
/// (omdb `--stuck-after`; Nexus's metrics use it as is).
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(30);

/// One finding about one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "lint", rename_all = "snake_case")]
pub enum Lint {
    Overdue { last_ended_at: DateTime<Utc>, period_secs: u64 },
    Stuck { running_since: DateTime<Utc>, limit_secs: u64 },
    EmptyServerList,
    ShrunkServerList { from: usize, to: usize, at: DateTime<Utc> },
    ServerFailing { server: String, since: DateTime<Utc>, consecutive_failures: u64 },
}

impl Lint {
    /// The lint's name, as in metrics labels and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Lint::Overdue { .. } => "overdue",
            Lint::Stuck { .. } => "stuck",
            Lint::EmptyServerList => "empty_server_list",
            Lint::ShrunkServerList { .. } => "shrunk_server_list",
            Lint::ServerFailing { .. } => "server_failing",
        }
    }

    pub const KINDS: [&'static str; 5] =
        ["overdue", "stuck", "empty_server_list", "shrunk_server_list", "server_failing"];
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        match self {
            Lint::Overdue { last_ended_at, period_secs } => write!(
                f,
                "OVERDUE: last activation ended at {}, more than twice the {period_secs}s period ago",
                at(last_ended_at)
            ),
            Lint::Stuck { running_since, limit_secs } => {
                write!(f, "STUCK: running since {}, longer than {limit_secs}s", at(running_since))
            }
            Lint::EmptyServerList => f.write_str("EMPTY SERVER LIST: no DNS servers found"),
            Lint::ShrunkServerList { from, to, at: when } => {
                let to = crate::count(*to as u64, "server");
                write!(f, "SERVER LIST SHRANK: from {from} to {to} at {}", at(when))
            }
            Lint::ServerFailing { server, since, consecutive_failures } => write!(
                f,
                "SERVER FAILING: {server} since {} ({} in a row)",
                at(since),
                crate::count(*consecutive_failures, "attempt")
            ),
        }
    }
}

/// The lints of `task` at `now`; a running task counts as stuck after
/// `stuck_after`.
pub fn lint(task: &BackgroundTask, now: DateTime<Utc>, stuck_after: Duration) -> Vec<Lint> {
    let mut lints = Vec::new();
    let secs = |d: Duration| d.as_secs();
    match (&task.current, &task.last) {
        (CurrentStatus::Running { start_time, .. }, _) => {
            if (now - *start_time).to_std().is_ok_and(|running| running > stuck_after) {
                lints.push(Lint::Stuck {
                    running_since: *start_time,
                    limit_secs: secs(stuck_after),
                });
            }
        }
        (CurrentStatus::Idle, LastActivation::Completed(record)) => {
            let ended = record.start_time
                + chrono::Duration::from_std(record.elapsed).unwrap_or(chrono::Duration::zero());
            if (now - ended).to_std().is_ok_and(|idle| idle > task.period * 2) {
                lints.push(Lint::Overdue { last_ended_at: ended, period_secs: secs(task.period) });
            }
        }
        (CurrentStatus::Idle, LastActivation::NeverCompleted) => {}
    }
    match DnsTaskView::of(task) {
        DnsTaskView::Servers { status: Some(status), .. } => {
            if status.servers.is_empty() {
                lints.push(Lint::EmptyServerList);
            }
            if let Some(from) = status.previous_count.filter(|from| *from > status.servers.len()) {
                lints.push(Lint::ShrunkServerList {
                    from,
                    to: status.servers.len(),
                    at: status.discovered_at,
                });
            }
        }
        DnsTaskView::Propagation { status: Some(status), .. } => {
            for (server, result) in &status.servers {
                if let Some(since) = result.history.failing_since {
                    lints.push(Lint::ServerFailing {
                        server: server.clone(),
                        since,
                        consecutive_failures: result.history.consecutive_failures,
                    });
                }
            }
        }
        _ => {}
    }
    lints
}

#[cfg(test)]
mod tests {
    use super::*;
    use background_task_types::{ActivationOutcome, ActivationReason, ActivationRecord};
    use serde_json::json;

    fn task(
        name: &str,
        current: CurrentStatus,
        details: Option<serde_json::Value>,
    ) -> BackgroundTask {
        let last = match details {
            None => LastActivation::NeverCompleted,
            Some(details) => LastActivation::Completed(ActivationRecord {
                iteration: 1,
                reason: ActivationReason::Timer,
                start_time: Utc::now() - chrono::Duration::seconds(10),
                elapsed: Duration::from_millis(5),
                outcome: ActivationOutcome::Succeeded,
                details,
            }),
        };
        BackgroundTask {
            name: name.into(),
            description: String::new(),
            period: Duration::from_secs(60),
            deadline: None,
            dependencies: vec![],
            current,
            last,
            history: vec![],
        }
    }

    fn kinds(lints: &[Lint]) -> Vec<&'static str> {
        lints.iter().map(Lint::kind).collect()
    }

    #[test]
    fn overdue_after_twice_the_period_idle() {
        let t = task("dns_config_internal", CurrentStatus::Idle, Some(json!({})));
        let now = Utc::now();
        assert!(lint(&t, now, DEFAULT_STUCK_AFTER).is_empty());
        let later = now + chrono::Duration::seconds(121);
        let found = lint(&t, later, DEFAULT_STUCK_AFTER);
        assert_eq!(kinds(&found), ["overdue"]);
        assert!(found[0].to_string().starts_with("OVERDUE: last activation ended at"));
    }

    #[test]
    fn stuck_after_the_limit_while_running() {
        let running = CurrentStatus::Running {
            iteration: 2,
            reason: ActivationReason::Timer,
            start_time: Utc::now() - chrono::Duration::seconds(5),
            progress: None,
        };
        let t = task("dns_propagation_internal", running, None);
        assert!(lint(&t, Utc::now(), Duration::from_secs(10)).is_empty());
        assert_eq!(kinds(&lint(&t, Utc::now(), Duration::from_secs(2))), ["stuck"]);
    }

    #[test]
    fn server_lists_empty_or_shrunk() {
        let status = |servers: usize, previous: Option<usize>| {
            let servers: Vec<_> = (0..servers)
                .map(|i| json!({"address": format!("127.0.0.1:{}", 1000 + i), "target": "t"}))
                .collect();
            json!({"group": "internal", "service_name": "_nameservice._tcp.z",
                   "resolved_via": "127.0.0.1:53", "servers": servers,
                   "discovered_at": Utc::now(), "changed": true, "previous_count": previous})
        };
        let lints_of = |s| {
            lint(
                &task("dns_servers_internal", CurrentStatus::Idle, Some(s)),
                Utc::now(),
                DEFAULT_STUCK_AFTER,
            )
        };
        assert_eq!(kinds(&lints_of(status(0, None))), ["empty_server_list"]);
        assert_eq!(kinds(&lints_of(status(2, Some(3)))), ["shrunk_server_list"]);
        assert!(lints_of(status(3, Some(2))).is_empty(), "a list that grew is fine");
    }
}
