//! The one answer to "is this DNS server in sync?".
//!
//! Nexus's propagation task, omdb's `dns status` and `dns explain`, and
//! devstack's convergence wait all compare what a server reports (its
//! generation and digest) with what the database holds.  They ask
//! [`classify`] rather than each deciding for itself, so that they can never
//! disagree about the same server.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a server reports about what it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerClaim<'a> {
    /// 0 when the server has no config.
    pub generation: u64,
    pub digest: Option<&'a str>,
}

/// What the database says, as far as the caller knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted<'a> {
    /// The generation the server should serve (the database's latest, or
    /// the one a Nexus is pushing).
    pub generation: u64,
    /// The digest of that generation.
    pub digest: &'a str,
    /// The database's latest generation, when known: a server beyond it
    /// claims a generation that does not exist.
    pub database_latest: Option<u64>,
    /// The digest the database holds for the server's own generation, when
    /// it differs from `generation` and the caller looked it up.  `None`
    /// means "not looked up", so a behind server is not called diverged
    /// without evidence.
    pub digest_at_server_generation: Option<&'a str>,
}

/// A server's state against what it should serve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SyncState {
    /// Serves exactly the wanted generation with the wanted content.
    Current,
    /// Serves an older generation (with the database's content for it, as
    /// far as was checked).
    Behind { by: u64 },
    /// Serves a generation newer than the wanted one that the database has:
    /// the one asking is behind, not the server.
    AheadOfWanted { by: u64 },
    /// Claims a generation the database does not have.
    BeyondDatabase { database_latest: u64 },
    /// Serves a generation whose content differs from the database's.
    Diverged,
    /// Has no config at all.
    Empty,
}

impl SyncState {
    /// Whether the server serves what it should.
    pub fn is_current(&self) -> bool {
        matches!(self, SyncState::Current)
    }

    /// Whether the server's own state is wrong (rather than it merely
    /// waiting for a push): it needs a repair, not a push.
    pub fn is_server_fault(&self) -> bool {
        matches!(self, SyncState::BeyondDatabase { .. } | SyncState::Diverged)
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncState::Current => f.write_str("current"),
            SyncState::Behind { by } => write!(f, "behind by {by}"),
            SyncState::AheadOfWanted { by } => write!(f, "ahead by {by}"),
            SyncState::BeyondDatabase { database_latest } => {
                write!(f, "beyond the database (latest {database_latest})")
            }
            SyncState::Diverged => f.write_str("diverged"),
            SyncState::Empty => f.write_str("empty"),
        }
    }
}

/// Classifies `server` against `wanted`.
pub fn classify(server: ServerClaim<'_>, wanted: Wanted<'_>) -> SyncState {
    if server.generation == 0 || server.digest.is_none() {
        return SyncState::Empty;
    }
    if let Some(latest) = wanted.database_latest
        && server.generation > latest
    {
        return SyncState::BeyondDatabase { database_latest: latest };
    }
    if server.generation == wanted.generation {
        return if server.digest == Some(wanted.digest) {
            SyncState::Current
        } else {
            SyncState::Diverged
        };
    }
    if let Some(expected) = wanted.digest_at_server_generation
        && server.digest != Some(expected)
    {
        return SyncState::Diverged;
    }
    if server.generation < wanted.generation {
        SyncState::Behind { by: wanted.generation - server.generation }
    } else {
        SyncState::AheadOfWanted { by: server.generation - wanted.generation }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(generation: u64, digest: Option<&str>) -> ServerClaim<'_> {
        ServerClaim { generation, digest }
    }

    fn wanted(generation: u64, digest: &str) -> Wanted<'_> {
        Wanted {
            generation,
            digest,
            database_latest: Some(generation),
            digest_at_server_generation: None,
        }
    }

    #[test]
    fn every_state_from_its_evidence() {
        assert_eq!(classify(claim(0, None), wanted(5, "d5")), SyncState::Empty);
        assert_eq!(classify(claim(5, Some("d5")), wanted(5, "d5")), SyncState::Current);
        assert_eq!(classify(claim(5, Some("x")), wanted(5, "d5")), SyncState::Diverged);
        assert_eq!(classify(claim(3, Some("d3")), wanted(5, "d5")), SyncState::Behind { by: 2 });
        assert_eq!(
            classify(claim(9, Some("d9")), wanted(5, "d5")),
            SyncState::BeyondDatabase { database_latest: 5 }
        );
        // A Nexus pushing 5 while the database is at 7: the server is ahead
        // of the Nexus, not wrong.
        let nexus_view = Wanted { database_latest: Some(7), ..wanted(5, "d5") };
        assert_eq!(classify(claim(7, Some("d7")), nexus_view), SyncState::AheadOfWanted { by: 2 });
        // Unknown database latest: cannot call it beyond.
        let unknown = Wanted { database_latest: None, ..wanted(5, "d5") };
        assert_eq!(classify(claim(9, Some("d9")), unknown), SyncState::AheadOfWanted { by: 4 });
    }

    #[test]
    fn a_behind_server_is_diverged_only_with_evidence() {
        let checked = Wanted { digest_at_server_generation: Some("d3"), ..wanted(5, "d5") };
        assert_eq!(classify(claim(3, Some("d3")), checked), SyncState::Behind { by: 2 });
        assert_eq!(classify(claim(3, Some("other")), checked), SyncState::Diverged);
        assert!(SyncState::Diverged.is_server_fault());
        assert!(!SyncState::Behind { by: 1 }.is_server_fault());
    }
}
