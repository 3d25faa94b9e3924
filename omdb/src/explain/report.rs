//! What `omdb dns explain` reports: the verdict, the findings, and the
//! evidence of every stage, as one typed value that text and `--json`
//! render.  Built from observations by [`super::findings`].

use chrono::{DateTime, Utc};
use dns_types::history::NameEvent;
use dns_types::sync::SyncState;
use dns_types::{DnsGroup, DnsRecord, DnsVersion};
use internal_dns::wire::{Transport, WireAnswer};
use nexus_types::task_name::DnsTaskName;
use nexus_types::task_status::ServerResult;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use uuid::Uuid;

pub use dns_types::verdict::Stage;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub stage: Stage,
    pub summary: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub stage: Stage,
    /// What the finding is about: the name, a Nexus, a server, an address.
    pub subject: String,
    pub summary: String,
}

/// An event that bears on the answer but is not a fault now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// What it is about: a server, a Nexus.
    pub subject: String,
    pub summary: String,
    /// When it happened.
    pub at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    /// What bears on the answer without being at fault now: a repair, a
    /// restart, a refused push, a failure since superseded.
    #[serde(default)]
    pub notes: Vec<Note>,
    /// The past moment the report is about (`--at`); absent: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    pub database: DatabaseEvidence,
    pub nexus: Vec<NexusEvidence>,
    pub servers: Vec<ServerEvidence>,
    pub wire: Vec<WireEvidence>,
    /// Each DNS address's loss probe: identical UDP questions sent at once,
    /// and how many were answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loss: Vec<crate::observe::LossProbe>,
    /// What did not answer within the one deadline for every server
    /// question, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late: Vec<String>,
    /// That deadline, in seconds (0: not asked live).
    #[serde(default)]
    pub deadline_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatabaseEvidence {
    pub group: DnsGroup,
    pub zone: String,
    /// The name relative to the zone (`@` for the apex).
    pub name: String,
    pub fqdn: String,
    pub record_type: Option<String>,
    pub latest: DnsVersion,
    pub latest_digest: String,
    /// The name's records at the latest generation (empty when absent).
    pub records: Vec<DnsRecord>,
    /// The generation since which the name has exactly these records.
    pub records_since: Option<DnsVersion>,
    /// Every generation that added, changed or removed the name.
    pub history: Vec<NameEvent>,
    pub never_existed: bool,
    /// Names in the zone that look like this one (when it is absent).
    pub near_misses: Vec<String>,
    /// The group's DNS servers that the internal group's latest generation
    /// registers (config API addresses).
    pub registered_servers: Vec<SocketAddr>,
    pub internal_generation: u64,
    /// The node read (a replicated database only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Whether commits can be acknowledged now (a replicated database
    /// only), and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<db_model::cluster::Writes>,
    /// The node that accepts writes now (a replicated database only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NexusEvidence {
    pub url: String,
    pub id: Option<Uuid>,
    /// Why this Nexus could not be asked.
    pub error: Option<String>,
    /// The database node its connections reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_node: Option<String>,
    pub config: Option<ConfigEvidence>,
    pub server_list: Option<ServerListEvidence>,
    pub propagation: Option<PropagationEvidence>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConfigEvidence {
    /// The generation this Nexus works from (the last it could read).
    pub generation: Option<u64>,
    pub digest: Option<String>,
    pub first_seen_at: Option<DateTime<Utc>>,
    /// When the activation that reported this started.
    pub checked_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerListEvidence {
    pub servers: Vec<SocketAddr>,
    pub discovered_at: Option<DateTime<Utc>>,
    pub checked_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PropagationEvidence {
    /// The generation of the last completed attempt.
    pub generation: Option<u64>,
    pub started_at: Option<DateTime<Utc>>,
    pub all_done_at: Option<DateTime<Utc>>,
    pub servers: BTreeMap<String, ServerResult>,
    pub waiting_for: Vec<DnsTaskName>,
    pub error: Option<String>,
    /// An activation in progress: since when, which generation, which
    /// servers it still waits on.
    pub running_since: Option<DateTime<Utc>>,
    pub running_generation: Option<u64>,
    pub pending: Vec<String>,
    /// When the task's timer activates it next (its last start plus its
    /// period), at the latest: a failed push is retried by then.
    #[serde(default)]
    pub next_activation_by: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerEvidence {
    pub config_address: Option<SocketAddr>,
    /// Where this server is known from.
    pub known_from: Vec<String>,
    pub id: Option<Uuid>,
    pub dns_addresses: Vec<SocketAddr>,
    pub generation: Option<u64>,
    pub digest: Option<String>,
    pub time_applied: Option<DateTime<Utc>>,
    /// The digest the database holds for the server's generation.
    pub database_digest: Option<String>,
    pub state: Option<SyncState>,
    pub error: Option<String>,
    /// Who wrote the generation it serves (the `X-Writer-Id` its history
    /// kept: a Nexus's id, or `devstack`), when its recent history says.
    #[serde(default)]
    pub written_by: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireEvidence {
    pub dns_address: SocketAddr,
    /// The config API of the server that reports this DNS address, if any.
    pub server: Option<SocketAddr>,
    pub server_id: Option<Uuid>,
    pub transport: Transport,
    pub record_type: String,
    pub asked_at: DateTime<Utc>,
    pub answer: Option<WireAnswer>,
    /// The zone's SOA serial asked over the same transport.
    pub soa_serial: Option<u32>,
    pub error: Option<String>,
    /// The generation the answer is compared with.
    pub expected_generation: Option<u64>,
    pub expected_records: Vec<DnsRecord>,
    /// Why the answer differs from the expected one (absent when it does
    /// not).
    pub mismatch: Option<String>,
}
