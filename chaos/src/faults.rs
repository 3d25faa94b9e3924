//! The fault catalogue: what each fault does to the stack, how it is put
//! back, and (the truth the runner checks explain against) which verdicts
//! it allows for a question about a name of a group.

use devstack::Stack;
use dns_types::verdict::Stage;
use dns_types::{DnsConfig, DnsGroup, DnsRecord};
use serde::Serialize;
use std::collections::BTreeSet;

/// One fault of the catalogue, with its target (servers by index in
/// `Stack::dns_servers`, Nexus by index in `Stack::nexus`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// The server's process stopped (a dead machine).
    ServerDown { server: usize },
    /// The server's process frozen (SIGSTOP): connections open, nothing
    /// answers.
    ServerHung { server: usize },
    /// A Nexus frozen.
    NexusHung { nexus: usize },
    /// The server handed a generation far beyond the database's, with
    /// other content (repair is off in the chaos stack, so it stays).
    BogusGeneration { server: usize, generation: u64, digest: String },
    /// A change committed straight to the database, telling no Nexus
    /// (their period is an hour): until each looks, it is behind.  The
    /// Nexus that have looked since (a config activation) are listed.
    DirectWrite { group: DnsGroup, generation: u64, noticed_by: BTreeSet<usize> },
    /// The path between a Nexus and a server cut both ways (hosts only).
    Cut { nexus: usize, server: usize, number: u32 },
    /// The server's DNS port filtered, UDP and TCP (hosts only).
    FilterDns { server: usize, numbers: [u32; 2] },
    /// 30 % of the server's packets dropped, both ways (hosts only).
    Loss { server: usize, number: u32 },
    /// The server's registration taken out of internal DNS (its SRV
    /// records for its config API and its DNS address), through Nexus;
    /// healed by putting them back.  The server runs on, unknown.
    Unregistered { server: usize },
    /// The database stopped: connections refused.
    DatabaseDown,
    /// The database frozen (SIGSTOP): connections open, nothing answers
    /// (a black hole).
    DatabaseHung,
}

impl Fault {
    /// The catalogue's name of the fault's kind (for coverage).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::ServerDown { .. } => "server-down",
            Fault::ServerHung { .. } => "server-hung",
            Fault::NexusHung { .. } => "nexus-hung",
            Fault::BogusGeneration { .. } => "bogus-generation",
            Fault::DirectWrite { .. } => "direct-write",
            Fault::Cut { .. } => "cut",
            Fault::FilterDns { .. } => "filter-dns",
            Fault::Loss { .. } => "loss",
            Fault::Unregistered { .. } => "unregistered",
            Fault::DatabaseDown => "database-down",
            Fault::DatabaseHung => "database-hung",
        }
    }

    /// The server it is about, if any.
    pub fn server(&self) -> Option<usize> {
        match self {
            Fault::ServerDown { server }
            | Fault::ServerHung { server }
            | Fault::BogusGeneration { server, .. }
            | Fault::Cut { server, .. }
            | Fault::FilterDns { server, .. }
            | Fault::Loss { server, .. }
            | Fault::Unregistered { server } => Some(*server),
            Fault::NexusHung { .. }
            | Fault::DirectWrite { .. }
            | Fault::DatabaseDown
            | Fault::DatabaseHung => None,
        }
    }

    /// The Nexus frozen by it, if any.
    pub fn frozen_nexus(&self) -> Option<usize> {
        match self {
            Fault::NexusHung { nexus } => Some(*nexus),
            _ => None,
        }
    }

    /// Whether it takes the database away: then no change can be made,
    /// and omdb cannot check anything against the source of truth.
    pub fn database(&self) -> bool {
        matches!(self, Fault::DatabaseDown | Fault::DatabaseHung)
    }

    /// The verdicts this fault allows for a question about a name of
    /// `group` (empty: it does not touch such a question).  With the
    /// database away explain can give none: "could not run the check,
    /// naming the database" is the only right answer (`unknown`).
    /// `asked` is the DNS address the question names with `--server`.
    pub fn stages(
        &self,
        stack: &Stack,
        group: DnsGroup,
        asked: Option<std::net::SocketAddr>,
    ) -> BTreeSet<Stage> {
        let of_group = |server: &usize| stack.dns_servers[*server].group == group;
        match self {
            // Every Nexus is asked whatever the group.
            Fault::NexusHung { .. } => [Stage::Nexus].into(),
            Fault::DirectWrite { group: g, noticed_by, .. }
                if *g == group && noticed_by.len() < stack.nexus.len() =>
            {
                [Stage::Nexus].into()
            }
            Fault::ServerDown { server } | Fault::ServerHung { server } if of_group(server) => {
                [Stage::Propagation].into()
            }
            Fault::BogusGeneration { server, .. } if of_group(server) => [Stage::Server].into(),
            // A cut shows only once a push has met it; until then, every
            // part answers and the name is served: healthy is the truth.
            Fault::Cut { server, .. } if of_group(server) => {
                [Stage::Propagation, Stage::Healthy].into()
            }
            Fault::FilterDns { server, .. } if of_group(server) => [Stage::Wire].into(),
            // Asked at its DNS address: a server that answers but is
            // registered nowhere.  Otherwise: a Nexus that still lists it
            // (or does not yet list it again) is told; once every list has
            // caught up, the server is simply not part of the group, and
            // the name is served by the others.
            Fault::Unregistered { server } if of_group(server) => {
                if asked == Some(stack.dns_servers[*server].dns_address) {
                    [Stage::ServerList].into()
                } else {
                    [Stage::ServerList, Stage::Healthy].into()
                }
            }
            // Lost packets show on the wire (the loss probe), or as a push
            // that ran out of time.
            Fault::Loss { server, .. } if of_group(server) => {
                [Stage::Wire, Stage::Propagation].into()
            }
            _ => BTreeSet::new(),
        }
    }

    /// Whether it can be in force beside `other` (one fault per server;
    /// the same Nexus frozen once; one direct write per group).
    pub fn compatible(&self, other: &Fault) -> bool {
        if self.server().is_some() && self.server() == other.server() {
            return false;
        }
        // With the database away nothing else can be put in (most faults
        // read it) or told apart: it is in force alone.
        if self.database() || other.database() {
            return false;
        }
        match (self, other) {
            (Fault::NexusHung { nexus: a }, Fault::NexusHung { nexus: b }) => a != b,
            (Fault::DirectWrite { group: a, .. }, Fault::DirectWrite { group: b, .. }) => a != b,
            // A cut to a frozen Nexus changes nothing it shows.
            (Fault::Cut { nexus: a, .. }, Fault::NexusHung { nexus: b })
            | (Fault::NexusHung { nexus: b }, Fault::Cut { nexus: a, .. }) => a != b,
            // Registrations change through Nexus, and every Nexus must look
            // again for the truth above to hold.
            (Fault::Unregistered { .. }, Fault::NexusHung { .. })
            | (Fault::NexusHung { .. }, Fault::Unregistered { .. }) => false,
            _ => true,
        }
    }
}

/// The external config at the latest generation, moved `ahead`
/// generations on and with one name's address changed: what a rogue or
/// stale writer would hand a server.
pub fn bogus_config(mut config: DnsConfig, ahead: u64) -> DnsConfig {
    config.generation += ahead;
    if let Some(zone) = config.zones.first_mut() {
        zone.names.insert("rogue".into(), vec![DnsRecord::A("203.0.113.66".parse().unwrap())]);
    }
    config
}
