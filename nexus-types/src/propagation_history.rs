//! A Nexus's propagation history: per group and generation, when this
//! Nexus first saw the generation and every push attempt it made to every
//! server (start, end, result, what it sent).  Kept durably by Nexus as a
//! log of [`NexusEvent`]s, served per group as [`NexusHistory`] (the events
//! folded by generation), and read by `omdb dns timeline` and `omdb dns
//! explain --at`.

use crate::task_status::{PropagationOutcome, PropagationResult, PushKind};
use chrono::{DateTime, Utc};
use dns_types::DnsGroup;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// One push of one generation to one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PushAttempt {
    /// The server's config API address.
    pub server: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub result: PropagationResult,
    pub outcome: PropagationOutcome,
    /// What was sent, if anything was: a difference or the whole config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<PushKind>,
    /// The generation the server reported, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_generation: Option<u64>,
    pub message: String,
}

/// What a Nexus records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NexusEvent {
    /// This Nexus loaded `generation` for the first time (the entry's
    /// time); `committed_at` is when the database created it.
    Seen { group: DnsGroup, generation: u64, committed_at: DateTime<Utc> },
    /// One push attempt of `generation`.
    Push { group: DnsGroup, generation: u64, attempt: PushAttempt },
}

/// Everything one Nexus knows about one generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GenerationRecord {
    pub generation: u64,
    /// When the database created it, as this Nexus read it.
    pub committed_at: Option<DateTime<Utc>>,
    /// When this Nexus first loaded it (absent when it never did, or that
    /// is beyond what it keeps, though it pushed it).
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Every push attempt, in the order they ended.
    pub pushes: Vec<PushAttempt>,
}

/// `GET /dns/{group}/history`: generations newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NexusHistory {
    pub nexus_id: Uuid,
    pub group: DnsGroup,
    pub generations: Vec<GenerationRecord>,
    /// This Nexus keeps this many events (all groups).
    pub retained_events: u64,
    /// It holds every event from this time on (`None`: it holds none).
    pub complete_since: Option<DateTime<Utc>>,
}

/// Folds `events` (oldest first, with their times) into one record per
/// generation of `group`, newest first.
pub fn generations<'a>(
    events: impl IntoIterator<Item = (DateTime<Utc>, &'a NexusEvent)>,
    group: DnsGroup,
) -> Vec<GenerationRecord> {
    let mut records: BTreeMap<u64, GenerationRecord> = BTreeMap::new();
    fn record(
        records: &mut BTreeMap<u64, GenerationRecord>,
        generation: u64,
    ) -> &mut GenerationRecord {
        records.entry(generation).or_insert_with(|| GenerationRecord {
            generation,
            committed_at: None,
            first_seen_at: None,
            pushes: Vec::new(),
        })
    }
    for (time, event) in events {
        match event {
            NexusEvent::Seen { group: g, generation, committed_at } if *g == group => {
                let r = record(&mut records, *generation);
                r.committed_at = Some(*committed_at);
                r.first_seen_at.get_or_insert(time);
            }
            NexusEvent::Push { group: g, generation, attempt } if *g == group => {
                record(&mut records, *generation).pushes.push(attempt.clone());
            }
            _ => {}
        }
    }
    records.into_values().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn push(generation: u64, server: &str, ok: bool) -> NexusEvent {
        NexusEvent::Push {
            group: DnsGroup::Internal,
            generation,
            attempt: PushAttempt {
                server: server.into(),
                started_at: at(1),
                ended_at: at(2),
                result: if ok { PropagationResult::Success } else { PropagationResult::Error },
                outcome: if ok { PropagationOutcome::Applied } else { PropagationOutcome::Failed },
                sent: Some(PushKind::Difference),
                server_generation: Some(generation),
                message: String::new(),
            },
        }
    }

    #[test]
    fn events_fold_into_generations_newest_first() {
        let seen =
            |g| NexusEvent::Seen { group: DnsGroup::Internal, generation: g, committed_at: at(0) };
        let other =
            NexusEvent::Seen { group: DnsGroup::External, generation: 9, committed_at: at(0) };
        let events = [
            (at(1), seen(4)),
            (at(2), push(4, "a", true)),
            (at(3), push(4, "b", false)),
            (at(4), other),
            (at(5), seen(5)),
            (at(6), push(4, "b", true)),
            (at(7), push(5, "a", true)),
        ];
        let folded = generations(events.iter().map(|(t, e)| (*t, e)), DnsGroup::Internal);
        assert_eq!(folded.iter().map(|g| g.generation).collect::<Vec<_>>(), [5, 4]);
        assert_eq!(folded[1].first_seen_at, Some(at(1)));
        assert_eq!(folded[1].pushes.len(), 3);
        assert_eq!(folded[0].pushes.len(), 1);
    }
}
