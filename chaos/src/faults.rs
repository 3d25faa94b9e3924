//! The fault catalogue: what each fault does to the stack, how it is put
//! back, and (the truth the runner checks explain against) which verdicts
//! it allows for a question about a name of a group.

use devstack::Stack;
use dns_types::verdict::Stage;
use dns_types::{DnsConfig, DnsGroup, DnsRecord};
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;

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
    /// A Nexus's propagation stuck: the Nexus restarted with pushes that
    /// wait up to ten minutes and are never let run on, one server of the
    /// group frozen, and a change made through that Nexus: its
    /// activation waits on the frozen server.  The Nexus takes no other
    /// part until healed (thaw, the activation ends, the Nexus restarted
    /// with its own config).  `generation`: the change's.
    PropagationStuck {
        nexus: usize,
        server: usize,
        generation: u64,
        #[serde(skip)]
        config: Vec<u8>,
    },
    /// The replicated database's primary killed (its machine dies:
    /// Patroni and PostgreSQL, SIGKILL): Patroni promotes a synchronous
    /// standby once the leader key expires.  `node`: its index in the
    /// cluster's node list.  Healed by starting it again (it rejoins as a
    /// standby) once a new primary commits.
    PrimaryLost { node: usize },
    /// Both standbys of the replicated database killed: the primary stays
    /// primary, and in strict synchronous mode no commit can be
    /// acknowledged.  Healed by starting them again.
    StandbysLost { nodes: Vec<usize> },
    /// The server's storage cannot take a new config: a directory where
    /// its journal was (the journal kept aside) and where a new snapshot's
    /// temporary file goes.  It serves on, and refuses every push with
    /// `StorageFailed`.  `missed`: the names of its group changed since
    /// (it serves them stale).
    RejectingPushes { server: usize, missed: BTreeSet<String> },
    /// The server stopped, its stored snapshot edited (one digit of the
    /// config changed) and started again: it refuses to start on a
    /// snapshot whose checksum does not match.  Healed by putting the
    /// snapshot back and starting it.
    StorageTampered {
        server: usize,
        #[serde(skip)]
        original: Vec<u8>,
    },
    /// The server started again on other ports (config API and DNS) of
    /// its host, its registration left as it was: nothing answers where it
    /// is registered, and it answers where it is registered nowhere.
    /// Healed by moving it back.
    ServerMoved { server: usize, dns: SocketAddr, http: SocketAddr },
    /// Another process answering at the server's registered DNS address
    /// from the group's first generation (a stale copy left behind a
    /// proxy), the server itself moved behind it (bound elsewhere, still
    /// reporting the registered address): Nexus pushes to it as ever, and
    /// clients get other answers.  Healed by stopping the impostor and
    /// binding the server where it was.
    WireDiffers { server: usize, dns: SocketAddr, impostor: SocketAddr },
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
            Fault::PropagationStuck { .. } => "propagation-stuck",
            Fault::PrimaryLost { .. } => "primary-lost",
            Fault::StandbysLost { .. } => "standbys-lost",
            Fault::RejectingPushes { .. } => "rejecting-pushes",
            Fault::StorageTampered { .. } => "storage-tampered",
            Fault::ServerMoved { .. } => "server-moved",
            Fault::WireDiffers { .. } => "wire-differs",
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
            | Fault::Unregistered { server }
            | Fault::RejectingPushes { server, .. }
            | Fault::StorageTampered { server, .. }
            | Fault::ServerMoved { server, .. }
            | Fault::WireDiffers { server, .. }
            | Fault::PropagationStuck { server, .. } => Some(*server),
            Fault::NexusHung { .. }
            | Fault::DirectWrite { .. }
            | Fault::DatabaseDown
            | Fault::DatabaseHung
            | Fault::PrimaryLost { .. }
            | Fault::StandbysLost { .. } => None,
        }
    }

    /// The Nexus frozen by it, if any.
    pub fn frozen_nexus(&self) -> Option<usize> {
        match self {
            Fault::NexusHung { nexus } | Fault::PropagationStuck { nexus, .. } => Some(*nexus),
            _ => None,
        }
    }

    /// Whether it is a fault of the database: then no change can be made
    /// (none could commit, or none could be told apart from it), and omdb
    /// may be unable to check anything against the source of truth.
    pub fn database(&self) -> bool {
        matches!(
            self,
            Fault::DatabaseDown
                | Fault::DatabaseHung
                | Fault::PrimaryLost { .. }
                | Fault::StandbysLost { .. }
        )
    }

    /// Whether no node of the database answers (the single database down
    /// or frozen): then omdb can check nothing against the source of truth
    /// and saying so, with no verdict, is the right answer.  A replicated
    /// database that lost its primary or its standbys still answers reads.
    pub fn database_unreachable(&self) -> bool {
        matches!(self, Fault::DatabaseDown | Fault::DatabaseHung)
    }

    /// The verdicts this fault allows for a question about a name of
    /// `group` (empty: it does not touch such a question).  With the
    /// database away explain can give none: "could not run the check,
    /// naming the database" is the only right answer (`unknown`).
    /// `asked` is the DNS address the question names with `--server`;
    /// `name` the name asked (relative to the zone).
    pub fn stages(
        &self,
        stack: &Stack,
        group: DnsGroup,
        name: &str,
        asked: Option<SocketAddr>,
    ) -> BTreeSet<Stage> {
        let of_group = |server: &usize| stack.dns_servers[*server].group == group;
        match self {
            // Every Nexus is asked whatever the group.
            Fault::NexusHung { .. } => [Stage::Nexus].into(),
            // While no node is primary, writes cannot commit (the
            // database's finding, naming the failover); once a standby is
            // promoted and another streams to it synchronously, nothing
            // acknowledged was lost and the stack is healthy.
            Fault::PrimaryLost { .. } => [Stage::Database, Stage::Healthy].into(),
            // The data can be read, but no commit can be acknowledged.
            Fault::StandbysLost { .. } => [Stage::Database].into(),
            Fault::DirectWrite { group: g, noticed_by, .. }
                if *g == group && noticed_by.len() < stack.nexus.len() =>
            {
                [Stage::Nexus].into()
            }
            // A server that refuses to start on tampered storage is down.
            Fault::ServerDown { server }
            | Fault::ServerHung { server }
            | Fault::StorageTampered { server, .. }
            | Fault::PropagationStuck { server, .. }
                if of_group(server) =>
            {
                [Stage::Propagation].into()
            }
            // It serves what it had: only a push shows the refusal, and a
            // name changed since is served stale.
            Fault::RejectingPushes { server, missed } if of_group(server) => {
                if missed.contains(name) {
                    [Stage::Propagation].into()
                } else {
                    [Stage::Propagation, Stage::Healthy].into()
                }
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
            // Where it is registered nothing answers (as if down); where it
            // answers it is registered nowhere.
            Fault::ServerMoved { server, .. } if of_group(server) => {
                if asked == Some(stack.dns_servers[*server].dns_address) {
                    [Stage::ServerList].into()
                } else {
                    [Stage::Propagation].into()
                }
            }
            // Its registered DNS address answers other than its config (the
            // SOA serial too, whatever the name).  Asked where it really
            // answers: an address no server reports or registers.
            Fault::WireDiffers { server, .. } if of_group(server) => {
                if asked == Some(stack.dns_servers[*server].dns_address) {
                    [Stage::ServerList, Stage::Wire].into()
                } else {
                    [Stage::Wire].into()
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

    /// The verdicts it allows for a question `--at` a moment it was in
    /// force, asked later.  The histories keep which generation each
    /// server served and what each Nexus had loaded; the wire and the
    /// server lists are not kept, so a fault seen only there (a filtered
    /// port, lost packets, a server registered nowhere) leaves `healthy`
    /// (whose summary says answers are inferred), and a server that
    /// missed nothing then (down, hung, cut, but no change meanwhile) was
    /// serving the latest.  A part that cannot be asked now gives
    /// `unknown`, counted apart.
    pub fn past_stages(&self, stack: &Stack, group: DnsGroup) -> BTreeSet<Stage> {
        let of_group = |server: &usize| stack.dns_servers[*server].group == group;
        match self {
            // Changes through the other Nexus were not loaded by it; within
            // the stuck-after window a generation it loaded later counts as
            // in flight.
            Fault::NexusHung { .. } => [Stage::Nexus, Stage::Healthy].into(),
            // Unloaded (or in flight), and so not pushed: the servers
            // served the generation before, which matters only for names
            // it changed.
            Fault::DirectWrite { group: g, noticed_by, .. }
                if *g == group && noticed_by.len() < stack.nexus.len() =>
            {
                [Stage::Nexus, Stage::Propagation, Stage::Healthy].into()
            }
            // Its apply history holds the generation the database never had.
            Fault::BogusGeneration { server, .. } if of_group(server) => [Stage::Server].into(),
            // Behind when a change for the name was made meanwhile.
            Fault::ServerDown { server }
            | Fault::ServerHung { server }
            | Fault::StorageTampered { server, .. }
            | Fault::RejectingPushes { server, .. }
            | Fault::Cut { server, .. }
            | Fault::Loss { server, .. }
            | Fault::Unregistered { server }
            | Fault::ServerMoved { server, .. }
            | Fault::PropagationStuck { server, .. }
                if of_group(server) =>
            {
                [Stage::Propagation, Stage::Healthy].into()
            }
            // Only the wire showed it, and the wire is not kept.
            Fault::FilterDns { server, .. } | Fault::WireDiffers { server, .. }
                if of_group(server) =>
            {
                [Stage::Healthy].into()
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
            // A stuck propagation keeps its Nexus out of everything else
            // (it is restarted twice, which loads the latest, and takes no
            // activation meanwhile): only faults of other servers beside it,
            // and none that would hold its patient pushes too (a second
            // server that does not answer, or answers only some packets).
            (Fault::PropagationStuck { .. }, f) | (f, Fault::PropagationStuck { .. }) => {
                f.frozen_nexus().is_none()
                    && !matches!(
                        f,
                        Fault::DirectWrite { .. }
                            | Fault::Cut { .. }
                            | Fault::Unregistered { .. }
                            | Fault::ServerHung { .. }
                            | Fault::Loss { .. }
                    )
            }
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
