//! This Nexus's propagation history (`nexus_types::propagation_history`):
//! when it first saw each generation and every push attempt to every
//! server, kept durably in `history_dir` when configured (else in memory)
//! and bounded, so that "what did this Nexus do with generation 19, and
//! when?" can be answered after the fact and after a restart.

use chrono::{DateTime, Utc};
use dns_types::{DnsGroup, DnsVersion};
use event_log::EventLog;
use nexus_types::propagation_history::{NexusEvent, NexusHistory, PushAttempt, generations};
use nexus_types::task_status::PropagationOutcome;
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;

/// How many events a Nexus keeps unless told otherwise: with 5 servers
/// (six events a generation) about 16,000 generations, with 50 servers
/// about 2,000.
pub const DEFAULT_HISTORY_EVENTS: usize = 100_000;

#[derive(Clone)]
pub struct PropagationHistory {
    nexus_id: Uuid,
    log: Arc<EventLog<NexusEvent>>,
    /// Per (group, server): the generation last confirmed current, so that
    /// a periodic activation finding every server current is recorded once
    /// per generation, not once a minute for as long as it lasts.
    confirmed: Arc<std::sync::Mutex<std::collections::HashMap<(DnsGroup, String), u64>>>,
}

impl PropagationHistory {
    /// Kept in `dir/propagation-history.jsonl`, or in memory without `dir`.
    pub fn open(nexus_id: Uuid, dir: Option<&Path>, retain: usize) -> anyhow::Result<Self> {
        let log = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join("propagation-history.jsonl");
                let (log, report) = EventLog::open(&path, retain)?;
                if report.damaged_lines > 0 {
                    tracing::warn!(
                        damaged_lines = report.damaged_lines, path = %path.display(),
                        "skipped damaged lines of the propagation history"
                    );
                }
                log
            }
            None => EventLog::in_memory(retain),
        };
        Ok(PropagationHistory { nexus_id, log: Arc::new(log), confirmed: Arc::default() })
    }

    /// This Nexus loaded `version` for the first time at `at`.
    pub async fn seen(&self, version: &DnsVersion, at: DateTime<Utc>) {
        let event = NexusEvent::Seen {
            group: version.group,
            generation: version.generation,
            committed_at: version.time_created,
        };
        self.append(vec![(at, event)]).await;
    }

    /// The attempts of one propagation activation, with one flush.  A
    /// server found already current at a generation it was already found
    /// current at is not recorded again.
    pub async fn pushes(&self, group: DnsGroup, generation: u64, attempts: Vec<PushAttempt>) {
        let events = {
            let mut confirmed = self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
            attempts
                .into_iter()
                .filter(|attempt| {
                    let key = (group, attempt.server.clone());
                    if attempt.outcome != PropagationOutcome::AlreadyCurrent {
                        confirmed.remove(&key);
                        return true;
                    }
                    confirmed.insert(key, generation) != Some(generation)
                })
                .map(|attempt| (attempt.ended_at, NexusEvent::Push { group, generation, attempt }))
                .collect()
        };
        self.append(events).await;
    }

    async fn append(&self, events: Vec<(DateTime<Utc>, NexusEvent)>) {
        if events.is_empty() {
            return;
        }
        let log = self.log.clone();
        match tokio::task::spawn_blocking(move || log.append_all(events)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %dns_types::error_chain(&e), "could not record the propagation history")
            }
            Err(e) => tracing::warn!(error = %e, "could not record the propagation history"),
        }
    }

    /// `group`'s generations, newest first: all, only `generation`, or
    /// those from `since_generation` on, at most `limit`.
    pub fn history(
        &self,
        group: DnsGroup,
        generation: Option<u64>,
        since_generation: Option<u64>,
        limit: usize,
    ) -> NexusHistory {
        let events = self.log.all();
        let mut records = generations(events.iter().map(|e| (e.time, &e.event)), group);
        records.retain(|r| {
            generation.is_none_or(|g| r.generation == g)
                && since_generation.is_none_or(|g| r.generation >= g)
        });
        records.truncate(limit);
        NexusHistory {
            nexus_id: self.nexus_id,
            group,
            generations: records,
            retained_events: self.log.retain() as u64,
            complete_since: self.log.oldest_retained().or_else(|| events.first().map(|e| e.time)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use nexus_types::task_status::PropagationResult;

    fn attempt(server: &str, outcome: PropagationOutcome) -> PushAttempt {
        PushAttempt {
            server: server.into(),
            started_at: Utc::now(),
            ended_at: Utc::now(),
            result: PropagationResult::Success,
            outcome,
            sent: None,
            server_generation: Some(4),
            message: String::new(),
        }
    }

    /// A periodic activation that finds every server current adds nothing
    /// once that was recorded: a generation that lasts a day is not a day
    /// of identical rows.
    #[tokio::test]
    async fn repeated_confirmations_are_recorded_once_per_generation() {
        let h = PropagationHistory::open(Uuid::nil(), None, 1000).unwrap();
        let g = DnsGroup::Internal;
        h.pushes(g, 4, vec![attempt("a", PropagationOutcome::Applied)]).await;
        for _ in 0..5 {
            h.pushes(g, 4, vec![attempt("a", PropagationOutcome::AlreadyCurrent)]).await;
        }
        h.pushes(g, 5, vec![attempt("a", PropagationOutcome::AlreadyCurrent)]).await;
        let pushes: Vec<(u64, PropagationOutcome)> = h
            .history(g, None, None, 10)
            .generations
            .iter()
            .flat_map(|r| r.pushes.iter().map(move |p| (r.generation, p.outcome)))
            .collect();
        assert_eq!(
            pushes,
            [
                (5, PropagationOutcome::AlreadyCurrent),
                (4, PropagationOutcome::Applied),
                (4, PropagationOutcome::AlreadyCurrent)
            ]
        );
    }
}
