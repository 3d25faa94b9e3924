//! A DNS server's apply history, as `GET /history` serves it: every
//! generation it started serving (how, from whom, replacing what, how long
//! it took), every push it refused and why, every start from storage, and
//! every storage failure, each with its time.
//!
//! It is what answers "which generation did server S serve at 10:31?"
//! after the fact, and it survives restarts and journal folding.  Plain
//! data here, so that omdb reads it without the server's code.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How a generation reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApplyHow {
    /// `PUT /config/diff`.
    Difference,
    /// `PUT /config`.
    Whole,
    /// `PUT /config/repair`: replaced whatever was served.
    Repair,
}

impl std::fmt::Display for ApplyHow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApplyHow::Difference => "difference",
            ApplyHow::Whole => "whole config",
            ApplyHow::Repair => "repair",
        })
    }
}

/// One thing that happened to what the server serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServerEvent {
    /// The server started serving `generation` at the entry's time.
    Applied {
        generation: u64,
        digest: String,
        how: ApplyHow,
        /// Who wrote it, as the request said (`X-Writer-Id`), if it said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        writer: Option<String>,
        /// What was served before (0: nothing).
        replaced_generation: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaced_digest: Option<String>,
        /// From the request's arrival at the lock to serving.
        apply_ms: f64,
        /// For a repair: why, as the caller said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A push was refused; nothing changed.
    Refused {
        /// The generation the push carried.
        generation: u64,
        how: ApplyHow,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        writer: Option<String>,
        /// The stable error code the caller got.
        error_code: String,
        reason: String,
        /// What the server served when it refused.
        served_generation: u64,
    },
    /// The process started and serves what its storage held.
    Started {
        generation: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
        /// When that generation was applied, as stored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_applied: Option<DateTime<Utc>>,
        /// History lines that could not be read at this start (skipped).
        #[serde(default)]
        damaged_history_lines: u64,
    },
    /// Storing something failed; what is served did not change.
    StorageFailed { operation: String, error: String },
}

impl ServerEvent {
    /// The generation served after this event, when the event says (an
    /// apply or a start); `None` for events that leave it as it was.
    pub fn serves(&self) -> Option<u64> {
        match self {
            ServerEvent::Applied { generation, .. } | ServerEvent::Started { generation, .. } => {
                Some(*generation)
            }
            ServerEvent::Refused { .. } | ServerEvent::StorageFailed { .. } => None,
        }
    }
}

/// One event with its time, numbered in order (across restarts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryEntry {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub event: ServerEvent,
}

/// `GET /history`: events newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServerHistory {
    pub server_id: Uuid,
    /// Newest first, from `since` on, at most `limit`.
    pub events: Vec<HistoryEntry>,
    /// The server keeps this many events.
    pub retained_events: u64,
    /// The server holds every event from this time on; before it, it knows
    /// nothing (events beyond retention were dropped, or it did not run).
    /// `None` when it holds no event at all.
    pub complete_since: Option<DateTime<Utc>>,
}

/// What a server served at `at`, from its history: the generation (0 for
/// nothing) and the event that made it so; `None` when the history does not
/// reach back to `at`.  `events` may be in any order.
pub fn served_at(events: &[HistoryEntry], at: DateTime<Utc>) -> Option<(u64, &HistoryEntry)> {
    events
        .iter()
        .filter(|e| e.time <= at && e.event.serves().is_some())
        .max_by_key(|e| (e.time, e.seq))
        .map(|e| (e.event.serves().unwrap_or_default(), e))
}

/// When the server first served `generation` or a later one, after
/// `after`: the entry that did it.
pub fn first_serving(
    events: &[HistoryEntry],
    generation: u64,
    after: DateTime<Utc>,
) -> Option<&HistoryEntry> {
    events
        .iter()
        .filter(|e| e.time >= after && e.event.serves().is_some_and(|g| g >= generation))
        .min_by_key(|e| (e.time, e.seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn applied(seq: u64, secs: i64, generation: u64) -> HistoryEntry {
        HistoryEntry {
            seq,
            time: at(secs),
            event: ServerEvent::Applied {
                generation,
                digest: format!("d{generation}"),
                how: ApplyHow::Difference,
                writer: None,
                replaced_generation: generation - 1,
                replaced_digest: None,
                apply_ms: 1.0,
                reason: None,
            },
        }
    }

    #[test]
    fn what_was_served_when() {
        let refused = HistoryEntry {
            seq: 3,
            time: at(25),
            event: ServerEvent::Refused {
                generation: 1,
                how: ApplyHow::Whole,
                writer: None,
                error_code: "BadUpdateGeneration".into(),
                reason: "older".into(),
                served_generation: 3,
            },
        };
        let events = vec![applied(1, 10, 2), applied(2, 20, 3), refused, applied(4, 30, 4)];
        assert_eq!(served_at(&events, at(5)).map(|(g, _)| g), None, "before the history");
        assert_eq!(served_at(&events, at(10)).map(|(g, _)| g), Some(2));
        assert_eq!(served_at(&events, at(27)).map(|(g, e)| (g, e.seq)), Some((3, 2)));
        assert_eq!(first_serving(&events, 4, at(21)).map(|e| e.seq), Some(4));
        assert_eq!(first_serving(&events, 5, at(0)), None);
    }
}
