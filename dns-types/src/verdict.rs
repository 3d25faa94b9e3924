//! The stages of a DNS name's pipeline, as `omdb dns explain` names the
//! one at fault in its verdict (and its exit status), and as every reader
//! of its JSON (the chaos runner) decodes it.

use serde::{Deserialize, Serialize};

/// The pipeline stages, in order; a verdict names the earliest with a
/// finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Database,
    Nexus,
    ServerList,
    Propagation,
    Server,
    Wire,
    /// No stage is at fault as far as the evidence goes, but evidence is
    /// missing (a history that does not reach back to the moment asked, a
    /// part that cannot be asked now): no verdict is given.
    Unknown,
    Healthy,
}

impl Stage {
    /// The stages at which a fault can lie, in pipeline order.
    pub const PIPELINE: [Stage; 6] = [
        Stage::Database,
        Stage::Nexus,
        Stage::ServerList,
        Stage::Propagation,
        Stage::Server,
        Stage::Wire,
    ];

    pub fn exit_code(self) -> u8 {
        match self {
            Stage::Healthy => 0,
            Stage::Database => 10,
            Stage::Nexus => 11,
            Stage::ServerList => 12,
            Stage::Propagation => 13,
            Stage::Server => 14,
            Stage::Wire => 15,
            // omdb could not run the whole check.
            Stage::Unknown => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Database => "database",
            Stage::Nexus => "nexus",
            Stage::ServerList => "server-list",
            Stage::Propagation => "propagation",
            Stage::Server => "server",
            Stage::Wire => "wire",
            Stage::Unknown => "unknown",
            Stage::Healthy => "healthy",
        }
    }
}
