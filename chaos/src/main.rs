//! `chaos`: starts its own stack and, from a seed, draws a sequence of
//! steps (changes through Nexus, faults from the catalogue put in and
//! healed, questions), asks `omdb dns explain --json` each question and
//! checks the verdict against what it injected: a verdict outside the
//! accepted set is wrong, and is recorded with the seed and step that
//! replay it.  Every step goes into one history (JSON lines); the last
//! line on stdout is the score.
//!
//! The draws depend only on the seed and on the runner's own model of the
//! world (names, faults in force), never on timings, so `--replay-to N`
//! with the same seed reaches the same state at step N.

mod faults;

use anyhow::{Context, bail};
use clap::Parser;
use devstack::{Stack, StackOptions};
use dns_types::verdict::Stage;
use dns_types::{DnsChange, DnsGroup, DnsRecord, NameRecords, NameRemoval};
use faults::Fault;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Hosts {
    Loopback,
    Netns,
}

#[derive(Parser)]
#[command(about = "Random faults while changes flow; every omdb dns explain verdict checked")]
struct Args {
    /// The seed every draw comes from (random, and printed, when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// How long to draw steps for, in seconds.
    #[arg(long, default_value_t = 180)]
    duration: u64,
    /// Write every step, fault, heal, question and check here (JSON lines).
    #[arg(long)]
    history: Option<PathBuf>,
    /// Stop after this step, printing omdb's full answer if it is a
    /// question: the state a wrong verdict was given in, again.
    #[arg(long)]
    replay_to: Option<u64>,
    /// Where the stack runs: on its own hosts (network namespaces, which
    /// adds the network's faults; needs root) or on loopback.  Default:
    /// netns as root, loopback otherwise.
    #[arg(long, value_enum)]
    hosts: Option<Hosts>,
    /// The database: one PostgreSQL (whose faults are the database down
    /// or hung) or three under Patroni (whose faults are the primary lost,
    /// a failover, and both standbys lost; loopback only).
    #[arg(long, value_enum, default_value = "single")]
    db: Db,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Db {
    Single,
    Replicated,
}

/// The runner's model of what it did: the truth explain is checked
/// against.
#[derive(Default)]
struct World {
    /// Names it made, by group, with their records now.
    names: BTreeMap<(DnsGroup, String), Vec<DnsRecord>>,
    /// Names it removed.
    removed: BTreeSet<(DnsGroup, String)>,
    faults: Vec<Fault>,
    next_name: u64,
}

impl World {
    fn frozen_nexus(&self) -> BTreeSet<usize> {
        self.faults.iter().filter_map(Fault::frozen_nexus).collect()
    }

    fn live_names(&self, group: DnsGroup) -> Vec<&String> {
        self.names.keys().filter(|(g, _)| *g == group).map(|(_, n)| n).collect()
    }
}

/// One question, and the verdicts the truth allows.
#[derive(Clone, Debug, Serialize)]
struct Question {
    group: DnsGroup,
    name: String,
    /// What kind of question (live, removed, never-added, wrong-type,
    /// unknown-server).
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    record_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<SocketAddr>,
    /// Whose DNS address `server` is (the stack's name), or "nobody".
    #[serde(skip_serializing_if = "Option::is_none")]
    server_name: Option<String>,
    /// Asked about this past moment (`--at`): the moment an earlier
    /// question was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A question asked earlier, kept to be asked again `--at` the moment it
/// was asked, with the verdicts the histories allow for that moment.
struct PastQuestion {
    question: Question,
    accepted: BTreeSet<Stage>,
}

#[derive(Default)]
struct Score {
    questions: u64,
    right: u64,
    wrong: u64,
    unknown: u64,
    faults: u64,
    verdicts: BTreeMap<Stage, u64>,
    fault_kinds: BTreeMap<&'static str, u64>,
    wrong_steps: Vec<u64>,
}

struct History(Option<std::fs::File>);

impl History {
    fn record(&mut self, step: u64, kind: &str, details: serde_json::Value) {
        self.record_check(step, kind, details, None);
    }

    /// A line with, for a question, the verdict and the accepted stages
    /// beside the details.
    fn record_check(
        &mut self,
        step: u64,
        kind: &str,
        details: serde_json::Value,
        check: Option<(Option<Stage>, &BTreeSet<Stage>)>,
    ) {
        if let Some(file) = &mut self.0 {
            let mut line = serde_json::json!({
                "step": step,
                "time": chrono::Utc::now(),
                "kind": kind,
                "details": details,
            });
            if let Some((verdict, accepted)) = check {
                line["verdict"] = serde_json::json!(verdict);
                line["accepted"] = serde_json::json!(accepted);
            }
            let _ = writeln!(file, "{line}");
        }
    }
}

fn zone(group: DnsGroup) -> &'static str {
    match group {
        DnsGroup::Internal => "control-plane.internal",
        DnsGroup::External => "example.test",
    }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> Option<&'a T> {
    (!items.is_empty()).then(|| &items[rng.random_range(0..items.len())])
}

fn address(rng: &mut StdRng) -> DnsRecord {
    DnsRecord::A(std::net::Ipv4Addr::new(192, 0, 2, rng.random_range(1..250)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(rand::random);
    let root = nix::unistd::geteuid().is_root();
    let replicated = args.db == Db::Replicated;
    let hosts =
        args.hosts.unwrap_or(if root && !replicated { Hosts::Netns } else { Hosts::Loopback });
    if hosts == Hosts::Netns && !root {
        bail!("--hosts netns needs root (network namespaces); use --hosts loopback");
    }
    if hosts == Hosts::Netns && replicated {
        bail!(
            "--db replicated runs on loopback only (devstack does not put the replicated \
             database on hosts in namespaces yet); use --hosts loopback"
        );
    }
    println!("chaos: seed {seed}, {}s, hosts {hosts:?}, db {:?}", args.duration, args.db);
    let stop = Arc::new(AtomicBool::new(false));
    for kind in
        [tokio::signal::unix::SignalKind::interrupt(), tokio::signal::unix::SignalKind::terminate()]
    {
        let mut signal = tokio::signal::unix::signal(kind)?;
        let stop = stop.clone();
        tokio::spawn(async move {
            signal.recv().await;
            eprintln!("chaos: stopping (signal); the stack is torn down");
            stop.store(true, Ordering::SeqCst);
        });
    }

    sweep_killed_runs();
    let dir = tempfile::Builder::new().prefix("chaos-").tempdir()?;
    std::fs::write(dir.path().join(RUNNER_PID), std::process::id().to_string())?;
    let mut options = StackOptions::new(dir.path().join("run"));
    options.internal_dns_servers = 2;
    options.external_dns_servers = 2;
    options.nexus_instances = 2;
    // Only the runner's steps move the stack (no timer), a push to a dead
    // server gives up quickly, and a wrong server stays wrong until healed.
    options.task_period_secs = 3600;
    options.server_timeout_secs = 2.0;
    options.repair_servers = false;
    options.replicated_db = replicated;
    if hosts == Hosts::Netns {
        // Its own /56 (of 220-249, by process id), so that runs side by
        // side, and the tests' networks (210-219), do not meet.
        options.netns_subnet = Some(220 + (std::process::id() % 30) as u8);
    }
    let mut stack = Stack::start(options).await.context("starting the stack")?;
    let mut history = History(match &args.history {
        Some(path) => Some(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => None,
    });
    let mut runner = Runner {
        rng: StdRng::seed_from_u64(seed),
        world: World::default(),
        score: Score::default(),
        netns: hosts == Hosts::Netns,
        seed,
        omdb: test_support::process::binary("omdb")?,
        past: Vec::new(),
        scratch: dir.path().join("scratch"),
        impostors: BTreeMap::new(),
    };
    let outcome = runner.run(&mut stack, &mut history, &args, &stop).await;
    stack.stop().await;
    drop(dir);
    outcome?;

    let s = &runner.score;
    let kinds: Vec<String> = s.fault_kinds.iter().map(|(k, n)| format!("{k}={n}")).collect();
    println!("faults drawn: {}", kinds.join(" "));
    for step in &s.wrong_steps {
        println!(
            "wrong verdict at step {step}: replay with chaos --seed {seed} --replay-to {step}"
        );
    }
    // Every verdict a question can be given, in the contract's order.
    let verdicts: Vec<String> = std::iter::once(&Stage::Healthy)
        .chain(Stage::PIPELINE.iter())
        .map(|v| format!("{}={}", v.as_str(), s.verdicts.get(v).copied().unwrap_or(0)))
        .collect();
    println!(
        "chaos: seed {seed}: {} questions, {} right, {} wrong, {} unknown; {} faults; verdicts: {}",
        s.questions,
        s.right,
        s.wrong,
        s.unknown,
        s.faults,
        verdicts.join(" ")
    );
    std::process::exit(if s.wrong == 0 { 0 } else { 1 });
}

struct Runner {
    rng: StdRng,
    world: World,
    score: Score,
    netns: bool,
    seed: u64,
    omdb: PathBuf,
    past: Vec<PastQuestion>,
    /// Where the impostors of `wire-differs` keep their storage.
    scratch: PathBuf,
    /// The impostor of each server under `wire-differs`.
    impostors: BTreeMap<usize, test_support::process::ChildProcess>,
}

impl Runner {
    async fn run(
        &mut self,
        stack: &mut Stack,
        history: &mut History,
        args: &Args,
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        // A few names in each group to ask about.
        for group in [DnsGroup::Internal, DnsGroup::External] {
            for _ in 0..3 {
                self.change(stack, history, 0, group).await?;
            }
        }
        let started = Instant::now();
        let limit = Duration::from_secs(args.duration);
        let mut step = 0;
        while !stop.load(Ordering::SeqCst) {
            step += 1;
            if args.replay_to.is_none_or(|last| step > last) && started.elapsed() >= limit {
                break;
            }
            if args.replay_to.is_some_and(|last| step > last) {
                break;
            }
            let last = args.replay_to == Some(step);
            let can_change = self.world.frozen_nexus().len() < stack.nexus.len()
                && !self.world.faults.iter().any(Fault::database);
            let draw = self.rng.random_range(0..100);
            match draw {
                // Faults come and go often (about one drawn per three
                // questions), so that a run meets many of them, overlapping,
                // and none stays long (a question meeting a hung part costs
                // the 3 s deadline).
                0..16 if self.world.faults.len() < 2 => self.inject(stack, history, step).await?,
                16..34 if !self.world.faults.is_empty() => self.heal(stack, history, step).await?,
                34..50 if can_change => {
                    let group = self.group();
                    self.change(stack, history, step, group).await?
                }
                _ => self.ask(stack, history, step, last).await?,
            }
        }
        // Put everything back before the stack is torn down (a frozen
        // process must be thawed to stop cleanly).
        while !self.world.faults.is_empty() {
            let fault = self.world.faults.remove(0);
            self.undo(stack, &fault).await?;
        }
        Ok(())
    }

    fn group(&mut self) -> DnsGroup {
        if self.rng.random_bool(0.5) { DnsGroup::Internal } else { DnsGroup::External }
    }

    /// What a change through Nexus did to the world: `name` now has
    /// `records` (`None`: removed).
    fn changed(
        &mut self,
        stack: &Stack,
        group: DnsGroup,
        name: &str,
        records: Option<Vec<DnsRecord>>,
    ) {
        let key = (group, name.to_string());
        match records {
            Some(records) => {
                self.world.removed.remove(&key);
                self.world.names.insert(key, records);
            }
            None => {
                self.world.names.remove(&key);
                self.world.removed.insert(key);
            }
        }
        // A server refusing pushes serves the name stale from now on.
        for fault in &mut self.world.faults {
            if let Fault::RejectingPushes { server, missed } = fault
                && stack.dns_servers[*server].group == group
            {
                missed.insert(name.to_string());
            }
        }
        // A change through Nexus makes every Nexus load the latest: a
        // direct write of that group is no longer unnoticed.
        self.world
            .faults
            .retain(|f| !matches!(f, Fault::DirectWrite { group: g, .. } if *g == group));
    }

    /// A change through a Nexus that is not frozen: a new name, a name
    /// removed, or a name's address changed.
    async fn change(
        &mut self,
        stack: &Stack,
        history: &mut History,
        step: u64,
        group: DnsGroup,
    ) -> anyhow::Result<()> {
        let live: Vec<String> = self.world.live_names(group).into_iter().cloned().collect();
        let what = if live.len() < 3 { 0 } else { self.rng.random_range(0..4) };
        let mut change = DnsChange {
            idempotency_key: Some(format!("chaos-{}-{step}-{}", self.seed, self.world.next_name)),
            comment: format!("chaos step {step}"),
            add: vec![],
            remove: vec![],
        };
        let (name, records) = match what {
            // Remove one.
            1 => {
                let name = pick(&mut self.rng, &live).unwrap().clone();
                change.remove.push(NameRemoval { name: name.clone(), records: None });
                (name, None)
            }
            // Change its address.
            2 => {
                let name = pick(&mut self.rng, &live).unwrap().clone();
                let records = vec![address(&mut self.rng)];
                change.remove.push(NameRemoval { name: name.clone(), records: None });
                change.add.push(NameRecords { name: name.clone(), records: records.clone() });
                (name, Some(records))
            }
            _ => {
                self.world.next_name += 1;
                let name = format!("c{}", self.world.next_name);
                let records = vec![address(&mut self.rng)];
                change.add.push(NameRecords { name: name.clone(), records: records.clone() });
                (name, Some(records))
            }
        };
        let frozen = self.world.frozen_nexus();
        let live_nexus: Vec<usize> =
            (0..stack.nexus.len()).filter(|n| !frozen.contains(n)).collect();
        let through = *pick(&mut self.rng, &live_nexus).context("no Nexus to change through")?;
        let version = send_change(&stack.nexus[through].client(), group, &change).await?;
        self.changed(stack, group, &name, records);
        let settled = settle(stack, &live_nexus, group, version).await;
        history.record(
            step,
            "change",
            serde_json::json!({
                "group": group, "through": stack.nexus[through].name, "change": change,
                "generation": version, "settled": settled,
            }),
        );
        Ok(())
    }

    async fn inject(
        &mut self,
        stack: &mut Stack,
        history: &mut History,
        step: u64,
    ) -> anyhow::Result<()> {
        // Servers that may be faulted: every one but the first internal
        // server, which omdb and Nexus find everything through.
        let servers: Vec<usize> = (0..stack.dns_servers.len())
            .filter(|i| stack.dns_servers[*i].name != "dns-internal-0")
            .collect();
        let mut kinds = vec!["server-down", "server-hung", "nexus-hung", "bogus-generation"];
        kinds.extend(["direct-write", "unregistered"]);
        match &stack.database {
            devstack::stack::Database::Replicated(_) => {
                kinds.extend(["primary-lost", "standbys-lost"])
            }
            _ => kinds.extend(["database-down", "database-hung"]),
        }
        kinds.extend(["rejecting-pushes", "storage-tampered", "server-moved", "wire-differs"]);
        kinds.push("propagation-stuck");
        if self.netns {
            kinds.extend(["cut", "filter-dns", "loss"]);
        }
        for _ in 0..10 {
            let kind = *pick(&mut self.rng, &kinds).unwrap();
            let server = *pick(&mut self.rng, &servers).unwrap();
            let nexus = self.rng.random_range(0..stack.nexus.len());
            let group = self.group();
            // A placeholder of the drawn kind, to check compatibility
            // before anything is done.
            let candidate = match kind {
                "server-down" => Fault::ServerDown { server },
                "server-hung" => Fault::ServerHung { server },
                "nexus-hung" => Fault::NexusHung { nexus },
                "bogus-generation" => {
                    Fault::BogusGeneration { server, generation: 0, digest: String::new() }
                }
                "direct-write" => {
                    Fault::DirectWrite { group, generation: 0, noticed_by: BTreeSet::new() }
                }
                "unregistered" => Fault::Unregistered { server },
                "database-down" => Fault::DatabaseDown,
                "database-hung" => Fault::DatabaseHung,
                "propagation-stuck" => {
                    Fault::PropagationStuck { nexus, server, generation: 0, config: Vec::new() }
                }
                "primary-lost" => Fault::PrimaryLost { node: 0 },
                "standbys-lost" => Fault::StandbysLost { nodes: Vec::new() },
                "rejecting-pushes" => Fault::RejectingPushes { server, missed: BTreeSet::new() },
                "storage-tampered" => Fault::StorageTampered { server, original: Vec::new() },
                "server-moved" => {
                    let s = &stack.dns_servers[server];
                    Fault::ServerMoved { server, dns: s.dns_address, http: s.http_address }
                }
                "wire-differs" => {
                    let s = &stack.dns_servers[server];
                    Fault::WireDiffers { server, dns: s.dns_address, impostor: s.http_address }
                }
                "cut" => Fault::Cut { nexus, server, number: 0 },
                "filter-dns" => Fault::FilterDns { server, numbers: [0, 0] },
                _ => Fault::Loss { server, number: 0 },
            };
            if !self.world.faults.iter().all(|f| candidate.compatible(f)) {
                continue;
            }
            let fault = self.put_in(stack, candidate).await?;
            *self.score.fault_kinds.entry(fault.kind()).or_default() += 1;
            self.score.faults += 1;
            history.record(step, "inject", serde_json::to_value(&fault)?);
            self.world.faults.push(fault);
            return Ok(());
        }
        Ok(())
    }

    async fn put_in(&mut self, stack: &mut Stack, fault: Fault) -> anyhow::Result<Fault> {
        Ok(match fault {
            Fault::ServerDown { server } => {
                stack.dns_servers[server].stop().await;
                fault
            }
            Fault::ServerHung { server } => {
                stack.dns_servers[server].freeze()?;
                fault
            }
            Fault::NexusHung { nexus } => {
                stack.nexus[nexus].process.as_ref().context("Nexus not running")?.freeze()?;
                fault
            }
            Fault::BogusGeneration { server, .. } => {
                let s = &stack.dns_servers[server];
                let config = stack.datastore.dns_config_read(s.group, None).await?;
                let bogus = faults::bogus_config(config, 1000);
                let digest = dns_types::config_digest(&bogus);
                let generation = bogus.generation;
                server_client(stack, server)?.config_put().body(bogus).send().await?;
                Fault::BogusGeneration { server, generation, digest }
            }
            Fault::DirectWrite { group, .. } => {
                self.world.next_name += 1;
                let name = format!("d{}", self.world.next_name);
                let records = vec![address(&mut self.rng)];
                let change = DnsChange {
                    idempotency_key: None,
                    comment: "written straight to the database".into(),
                    add: vec![NameRecords { name: name.clone(), records: records.clone() }],
                    remove: vec![],
                };
                let version = stack
                    .datastore
                    .dns_change_commit(group, "chaos-direct-writer", &change)
                    .await?;
                self.world.names.insert((group, name), records);
                Fault::DirectWrite {
                    group,
                    generation: version.generation,
                    noticed_by: BTreeSet::new(),
                }
            }
            Fault::Cut { nexus, server, .. } => {
                let said = stack.fault(&[
                    "cut",
                    &stack.nexus[nexus].name.clone(),
                    &stack.dns_servers[server].name.clone(),
                ])?;
                Fault::Cut { nexus, server, number: fault_number(&said)? }
            }
            Fault::FilterDns { server, .. } => {
                let name = stack.dns_servers[server].name.clone();
                let port = stack.dns_servers[server].dns_address.port().to_string();
                let udp = stack.fault(&["filter", &name, "udp", &port])?;
                let tcp = stack.fault(&["filter", &name, "tcp", &port])?;
                Fault::FilterDns { server, numbers: [fault_number(&udp)?, fault_number(&tcp)?] }
            }
            Fault::Loss { server, .. } => {
                let said = stack.fault(&["drop", &stack.dns_servers[server].name.clone(), "30"])?;
                Fault::Loss { server, number: fault_number(&said)? }
            }
            Fault::Unregistered { server } => {
                self.registration(stack, server, false).await?;
                fault
            }
            Fault::DatabaseDown => {
                local_database(stack)?.stop_temporarily();
                fault
            }
            Fault::DatabaseHung => {
                local_database(stack)?.suspend()?;
                fault
            }
            Fault::PropagationStuck { nexus, server, .. } => {
                let group = stack.dns_servers[server].group;
                let n = &mut stack.nexus[nexus];
                let config = std::fs::read(&n.config_file)
                    .with_context(|| format!("reading {}", n.config_file.display()))?;
                let mut patient = nexus_types::config::Config::from_file(&n.config_file)?;
                patient.tasks.server_timeout_secs = STUCK_FOR.as_secs_f64();
                patient.tasks.detach_after_secs = STUCK_FOR.as_secs_f64();
                std::fs::write(&n.config_file, patient.to_toml())?;
                n.restart().await?;
                // Its first propagation after the start must be over before
                // the server is frozen, or it is the one that sticks (on the
                // generation before the change) and the change waits
                // behind it.
                let latest = stack.datastore.dns_version_latest(group).await?.generation;
                if !settle(stack, &[nexus], group, latest).await {
                    bail!(
                        "{} did not propagate generation {latest} after its restart",
                        stack.nexus[nexus].name
                    );
                }
                stack.dns_servers[server].freeze()?;
                self.world.next_name += 1;
                let name = format!("s{}", self.world.next_name);
                let records = vec![address(&mut self.rng)];
                let change = DnsChange {
                    idempotency_key: Some(format!("chaos-{}-{name}", self.seed)),
                    comment: "chaos: a change whose propagation sticks".into(),
                    add: vec![NameRecords { name: name.clone(), records: records.clone() }],
                    remove: vec![],
                };
                let generation = send_change(&stack.nexus[nexus].client(), group, &change).await?;
                self.changed(stack, group, &name, Some(records));
                stuck(stack, nexus, group, generation, server).await?;
                // The other Nexus brings it everywhere else.
                let frozen = self.world.frozen_nexus();
                let others: Vec<usize> =
                    (0..stack.nexus.len()).filter(|n| *n != nexus && !frozen.contains(n)).collect();
                settle(stack, &others, group, generation).await;
                Fault::PropagationStuck { nexus, server, generation, config }
            }
            Fault::PrimaryLost { .. } => {
                let (primary, _) = cluster_roles(stack).await?;
                cluster(stack)?.kill_node(primary);
                // Not waited for: the questions that follow meet the
                // failover while it is under way.
                Fault::PrimaryLost { node: primary }
            }
            Fault::StandbysLost { .. } => {
                let (_, standbys) = cluster_roles(stack).await?;
                for node in &standbys {
                    cluster(stack)?.kill_node(*node);
                }
                // In force once the primary itself says no commit can be
                // acknowledged (its walsenders see the standbys gone).
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let nodes =
                        db_model::cluster::node_statuses(&stack.db_url, Duration::from_secs(2))
                            .await?;
                    if !db_model::cluster::writes(&nodes).can_commit {
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("both standbys killed, yet the database still says writes commit");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Fault::StandbysLost { nodes: standbys }
            }
            Fault::RejectingPushes { server, .. } => {
                let dir = &stack.dns_servers[server].storage_dir;
                let journal = dir.join(storage::JOURNAL);
                if journal.exists() {
                    std::fs::rename(&journal, dir.join(storage::JOURNAL_KEPT))?;
                }
                // Directories: neither can be written as a file, even by root.
                std::fs::create_dir(&journal)?;
                std::fs::create_dir(dir.join(storage::SNAPSHOT_TEMP))?;
                fault
            }
            Fault::StorageTampered { server, .. } => {
                let s = &mut stack.dns_servers[server];
                s.stop().await;
                let snapshot = s.storage_dir.join(storage::SNAPSHOT);
                let original = std::fs::read(&snapshot)
                    .with_context(|| format!("reading {}", snapshot.display()))?;
                std::fs::write(&snapshot, storage::tampered(&original)?)?;
                if s.restart().await.is_ok() {
                    bail!(
                        "{} started on a snapshot whose config was edited ({}): it must refuse",
                        s.name,
                        snapshot.display()
                    );
                }
                Fault::StorageTampered { server, original }
            }
            Fault::ServerMoved { server, dns, http } => {
                let s = &mut stack.dns_servers[server];
                s.stop().await;
                s.dns_address = SocketAddr::new(dns.ip(), devstack::stack::free_port()?);
                s.http_address = SocketAddr::new(http.ip(), devstack::stack::free_port()?);
                s.restart().await?;
                Fault::ServerMoved { server, dns, http }
            }
            Fault::WireDiffers { server, dns, .. } => {
                let s = &mut stack.dns_servers[server];
                let behind = SocketAddr::new(dns.ip(), devstack::stack::free_port()?);
                s.restart_behind(behind, dns).await?;
                let dir = self.scratch.join(format!("impostor-{}", self.score.faults));
                std::fs::create_dir_all(&dir)?;
                let (process, impostor) = s.start_impostor(&dir).await?;
                self.impostors.insert(server, process);
                // The group's first generation: no name asked since is in
                // it, and its SOA serial is not what the server reports.
                let first = stack.datastore.dns_config_read(s.group, Some(1)).await?;
                devstack::stack::dns_server_client_at(impostor, &stack.api_token)?
                    .config_put()
                    .body(first)
                    .send()
                    .await?;
                Fault::WireDiffers { server, dns, impostor }
            }
        })
    }

    async fn heal(
        &mut self,
        stack: &mut Stack,
        history: &mut History,
        step: u64,
    ) -> anyhow::Result<()> {
        let index = self.rng.random_range(0..self.world.faults.len());
        let fault = self.world.faults.remove(index);
        self.undo(stack, &fault).await?;
        history.record(step, "heal", serde_json::to_value(&fault)?);
        Ok(())
    }

    /// Puts `fault` back and lets every Nexus that is not frozen bring the
    /// stack current again.
    async fn undo(&mut self, stack: &mut Stack, fault: &Fault) -> anyhow::Result<()> {
        match fault {
            Fault::ServerDown { server } => stack.dns_servers[*server].restart().await?,
            Fault::ServerHung { server } => stack.dns_servers[*server].thaw()?,
            Fault::NexusHung { nexus } => {
                stack.nexus[*nexus].process.as_ref().context("Nexus not running")?.thaw()?
            }
            Fault::BogusGeneration { server, generation, digest } => {
                let s = &stack.dns_servers[*server];
                let config = stack.datastore.dns_config_read(s.group, None).await?;
                let repair = dns_server_client::types::ConfigRepair {
                    replaces: dns_server_client::types::ServedIdentity {
                        generation: *generation,
                        digest: Some(digest.clone()),
                    },
                    config,
                    reason: "chaos: the bogus generation healed".into(),
                };
                server_client(stack, *server)?.config_repair().body(repair).send().await?;
            }
            Fault::DirectWrite { .. } => {}
            Fault::Cut { number, .. } | Fault::Loss { number, .. } => {
                stack.fault(&["heal", &number.to_string()])?;
            }
            Fault::FilterDns { numbers, .. } => {
                for number in numbers {
                    stack.fault(&["heal", &number.to_string()])?;
                }
            }
            Fault::Unregistered { server } => self.registration(stack, *server, true).await?,
            Fault::DatabaseDown => local_database(stack)?.start_again()?,
            Fault::DatabaseHung => local_database(stack)?.resume()?,
            Fault::PropagationStuck { nexus, server, config, .. } => {
                stack.dns_servers[*server].thaw()?;
                // The stuck activation ends, and the one asked for meanwhile
                // runs; then the Nexus gets its own config back.
                let group = stack.dns_servers[*server].group;
                let latest = stack.datastore.dns_version_latest(group).await?.generation;
                settle(stack, &[*nexus], group, latest).await;
                let n = &mut stack.nexus[*nexus];
                std::fs::write(&n.config_file, config)
                    .with_context(|| format!("writing {}", n.config_file.display()))?;
                n.restart().await?;
            }
            Fault::PrimaryLost { node } => {
                // A new primary first (the old one rejoins as its standby).
                db_model::cluster::wait_until_writable(&stack.db_url, 1, REJOIN_LIMIT)
                    .await
                    .map_err(|e| anyhow::anyhow!("after the primary was lost: {e}"))?;
                cluster(stack)?.start_node(*node)?;
                db_model::cluster::wait_until_writable(&stack.db_url, 2, REJOIN_LIMIT)
                    .await
                    .map_err(|e| anyhow::anyhow!("the lost primary rejoining: {e}"))?;
                patroni_settled(stack).await?;
            }
            Fault::StandbysLost { nodes } => {
                for node in nodes {
                    cluster(stack)?.start_node(*node)?;
                }
                db_model::cluster::wait_until_writable(&stack.db_url, 2, REJOIN_LIMIT)
                    .await
                    .map_err(|e| anyhow::anyhow!("the standbys rejoining: {e}"))?;
                patroni_settled(stack).await?;
            }
            Fault::RejectingPushes { server, .. } => {
                let dir = &stack.dns_servers[*server].storage_dir;
                std::fs::remove_dir(dir.join(storage::SNAPSHOT_TEMP))?;
                std::fs::remove_dir(dir.join(storage::JOURNAL))?;
                if dir.join(storage::JOURNAL_KEPT).exists() {
                    std::fs::rename(dir.join(storage::JOURNAL_KEPT), dir.join(storage::JOURNAL))?;
                }
            }
            Fault::StorageTampered { server, original } => {
                let s = &mut stack.dns_servers[*server];
                std::fs::write(s.storage_dir.join(storage::SNAPSHOT), original)?;
                s.restart().await?;
            }
            Fault::ServerMoved { server, dns, http } => {
                let s = &mut stack.dns_servers[*server];
                s.stop().await;
                (s.dns_address, s.http_address) = (*dns, *http);
                s.restart().await?;
            }
            Fault::WireDiffers { server, dns, .. } => {
                if let Some(impostor) = self.impostors.remove(server) {
                    impostor.stop().await;
                }
                let s = &mut stack.dns_servers[*server];
                s.stop().await;
                (s.dns_address, s.advertise) = (*dns, None);
                s.restart().await?;
            }
        }
        // Every Nexus not frozen pushes what it has; a Nexus thawed, or a
        // direct write healed, also loads the latest from the database
        // (which is when a Nexus notices a direct write, and only then).
        let frozen = self.world.frozen_nexus();
        for (i, nexus) in stack.nexus.iter().enumerate() {
            if frozen.contains(&i) {
                continue;
            }
            let loads = match fault {
                Fault::NexusHung { nexus } => *nexus == i,
                Fault::DirectWrite { .. } => true,
                f => f.database(),
            };
            if fault.database() {
                // Its pool finds the database again on its own; until a
                // config activation has read it, the last one's error
                // stands (a `nexus` finding, true but past).
                reloaded(&nexus.client()).await?;
            }
            let mut tasks = Vec::new();
            for group in [DnsGroup::Internal, DnsGroup::External] {
                if loads {
                    tasks.push(nexus_types::task_name::DnsTaskName::config(group).to_string());
                }
                tasks.push(nexus_types::task_name::DnsTaskName::propagation(group).to_string());
            }
            activate(&nexus.client(), tasks).await?;
            if loads {
                for f in &mut self.world.faults {
                    if let Fault::DirectWrite { noticed_by, .. } = f {
                        noticed_by.insert(i);
                    }
                }
            }
        }
        self.spread_notice(stack).await;
        Ok(())
    }

    /// Takes server `index`'s SRV records out of internal DNS, or puts
    /// them back, through a Nexus; then has every Nexus look up its server
    /// lists again and propagate (in that order, so that the propagation
    /// works from the new lists).
    async fn registration(
        &mut self,
        stack: &Stack,
        index: usize,
        present: bool,
    ) -> anyhow::Result<()> {
        let s = &stack.dns_servers[index];
        let zone = zone(DnsGroup::Internal);
        // The SRV records only: its host name may stay, pointing nowhere.
        let records: Vec<NameRecords> =
            s.registration(zone).into_iter().filter(|r| r.name.starts_with('_')).collect();
        let mut change = DnsChange {
            idempotency_key: None,
            comment: format!(
                "chaos: {} {}",
                if present { "re-registers" } else { "unregisters" },
                s.name
            ),
            add: vec![],
            remove: vec![],
        };
        if present {
            change.add = records;
        } else {
            change.remove = records
                .into_iter()
                .map(|r| NameRemoval { name: r.name, records: Some(r.records) })
                .collect();
        }
        let version = send_change(&stack.nexus[0].client(), DnsGroup::Internal, &change).await?;
        // Every Nexus loads the internal group now (a direct write to it is
        // no longer unnoticed).
        self.world
            .faults
            .retain(|f| !matches!(f, Fault::DirectWrite { group: DnsGroup::Internal, .. }));
        let all: Vec<usize> = (0..stack.nexus.len()).collect();
        settle(stack, &all, DnsGroup::Internal, version).await;
        for nexus in &stack.nexus {
            let servers = [DnsGroup::Internal, DnsGroup::External]
                .map(|g| nexus_types::task_name::DnsTaskName::servers(g).to_string());
            activate(&nexus.client(), servers.to_vec()).await?;
            let propagation = [DnsGroup::Internal, DnsGroup::External]
                .map(|g| nexus_types::task_name::DnsTaskName::propagation(g).to_string());
            activate(&nexus.client(), propagation.to_vec()).await?;
        }
        self.spread_notice(stack).await;
        Ok(())
    }

    /// A direct write also reaches a Nexus the runner did not have load:
    /// once one Nexus has loaded it and pushed it, a push by another that
    /// meets a server already serving it makes that one load the latest
    /// too (`NewerGeneration`).  So after a round of activations, each
    /// live Nexus not yet counted is asked what it has loaded, waiting
    /// briefly (that load runs beside the activation that set it off).
    /// Found by seed 62: the runner had counted only the Nexus it made
    /// load, and called explain's (right) healthy wrong.
    async fn spread_notice(&mut self, stack: &Stack) {
        let frozen = self.world.frozen_nexus();
        for fault in &mut self.world.faults {
            let Fault::DirectWrite { group, generation, noticed_by } = fault else { continue };
            // Nobody has loaded it, so nobody has pushed it.
            if noticed_by.is_empty() {
                continue;
            }
            for (i, nexus) in stack.nexus.iter().enumerate() {
                if noticed_by.contains(&i) || frozen.contains(&i) {
                    continue;
                }
                if loaded(&nexus.client(), *group, *generation, Duration::from_secs(2)).await {
                    noticed_by.insert(i);
                }
            }
        }
        let all = stack.nexus.len();
        self.world.faults.retain(
            |f| !matches!(f, Fault::DirectWrite { noticed_by, .. } if noticed_by.len() == all),
        );
    }

    async fn ask(
        &mut self,
        stack: &Stack,
        history: &mut History,
        step: u64,
        last: bool,
    ) -> anyhow::Result<()> {
        // Now and then a question asked before, again, about the moment
        // it was asked.
        if self.rng.random_range(0..100) < 15
            && let Some(past) = pick(&mut self.rng, &self.past)
        {
            let (q, accepted) = (past.question.clone(), past.accepted.clone());
            return self.check(stack, history, step, last, q, accepted).await;
        }
        let group = self.group();
        let live: Vec<String> = self.world.live_names(group).into_iter().cloned().collect();
        let removed: Vec<String> = self
            .world
            .removed
            .iter()
            .filter(|(g, n)| *g == group && !self.world.names.contains_key(&(*g, n.clone())))
            .map(|(_, n)| n.clone())
            .collect();
        let servers: Vec<(SocketAddr, String)> =
            stack.servers(group).map(|s| (s.dns_address, s.name.clone())).collect();
        let some_live = pick(&mut self.rng, &live).cloned().unwrap_or_else(|| "c1".into());
        let mut q = Question {
            group,
            name: some_live.clone(),
            kind: "live",
            record_type: None,
            server: None,
            server_name: None,
            at: None,
        };
        let mut accepted: BTreeSet<Stage> = BTreeSet::new();
        match self.rng.random_range(0..100) {
            0..10 if !removed.is_empty() => {
                q.kind = "removed";
                q.name = pick(&mut self.rng, &removed).unwrap().clone();
                accepted.insert(Stage::Database);
            }
            10..20 => {
                q.kind = "never-added";
                q.name = format!("never{}", self.rng.random_range(0..1000));
                accepted.insert(Stage::Database);
            }
            20..30 if !live.is_empty() => {
                q.kind = "wrong-type";
                q.record_type = Some("AAAA".into());
                accepted.insert(Stage::Database);
            }
            30..40 if !live.is_empty() => {
                // An address where nothing of ours answers.
                q.kind = "unknown-server";
                q.server = Some("127.0.0.1:9".parse().unwrap());
                q.server_name = Some("nobody".into());
                accepted.insert(Stage::ServerList);
            }
            40..45 if !live.is_empty() => {
                // A DNS server of the other group: it serves other zones.
                let other = match group {
                    DnsGroup::Internal => DnsGroup::External,
                    DnsGroup::External => DnsGroup::Internal,
                };
                let servers: Vec<(SocketAddr, String)> =
                    stack.servers(other).map(|s| (s.dns_address, s.name.clone())).collect();
                let (address, name) = pick(&mut self.rng, &servers).unwrap().clone();
                q.kind = "other-group-server";
                q.server = Some(address);
                q.server_name = Some(name);
                accepted.insert(Stage::ServerList);
            }
            45..55 if !live.is_empty() => {
                let (address, name) = pick(&mut self.rng, &servers).unwrap().clone();
                q.server = Some(address);
                q.server_name = Some(name);
            }
            _ if !live.is_empty() => {}
            _ => {
                q.kind = "never-added";
                q.name = format!("never{}", self.rng.random_range(0..1000));
                accepted.insert(Stage::Database);
            }
        }
        // A question the database answers, now and then asked at one of the
        // group's servers too: the database's finding comes first whatever
        // that server's state.
        if accepted.contains(&Stage::Database)
            && self.rng.random_bool(0.3)
            && let Some((address, name)) = pick(&mut self.rng, &servers).cloned()
        {
            q.server = Some(address);
            q.server_name = Some(name);
        }
        // What the histories will allow for this moment: the question's
        // own stage, and the faults' as the histories keep them.
        let mut past = accepted.clone();
        for fault in &self.world.faults {
            accepted.extend(fault.stages(stack, group, &q.name, q.server));
            past.extend(fault.past_stages(stack, group));
        }
        for set in [&mut accepted, &mut past] {
            if set.is_empty() {
                set.insert(Stage::Healthy);
            }
        }
        // Only a question about the group's own servers is asked again (a
        // past moment is answered from the histories of the servers it
        // knows).
        if q.server.is_none() {
            let mut again = q.clone();
            again.at = Some(chrono::Utc::now());
            self.past.push(PastQuestion { question: again, accepted: past });
        }
        self.check(stack, history, step, last, q, accepted).await
    }

    /// Asks `q` and checks the verdict against `accepted`.
    async fn check(
        &mut self,
        stack: &Stack,
        history: &mut History,
        step: u64,
        last: bool,
        q: Question,
        accepted: BTreeSet<Stage>,
    ) -> anyhow::Result<()> {
        let group = q.group;
        let fqdn = format!("{}.{}", q.name, zone(group));
        let mut command = std::process::Command::new(&self.omdb);
        command.args(["dns", "explain", &fqdn]);
        if let Some(t) = &q.record_type {
            command.args(["--type", t]);
        }
        if let Some(s) = q.server {
            command.args(["--server", &s.to_string()]);
        }
        if let Some(at) = q.at {
            command.args(["--at", &at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)]);
        }
        // A propagation stuck is reported as such once it has run this long.
        if self.world.faults.iter().any(|f| matches!(f, Fault::PropagationStuck { .. })) {
            command.args(["--stuck-after", "1"]);
        }
        let dns: Vec<String> =
            stack.internal_dns_addresses().iter().map(|a| a.to_string()).collect();
        command
            .env("OMDB_DNS_SERVER", dns.join(","))
            .env_remove("OMDB_NEXUS_URL")
            .env_remove("OMDB_DB_URL");
        let text = last.then(|| command.output());
        let output = command.arg("--json").output().context("running omdb")?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let report: Option<serde_json::Value> = serde_json::from_str(&stdout).ok();
        let verdict: Option<Stage> = report
            .as_ref()
            .and_then(|r| serde_json::from_value(r["verdict"]["stage"].clone()).ok());
        self.score.questions += 1;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // With the database away omdb cannot check anything: saying so
        // (exit 1, an error naming the database) is the only honest answer.
        let database_away = self.world.faults.iter().any(Fault::database_unreachable);
        let outcome = match verdict {
            Some(Stage::Unknown) => {
                self.score.unknown += 1;
                "unknown"
            }
            None if database_away
                && output.status.code() == Some(1)
                && stderr.contains("database") =>
            {
                self.score.unknown += 1;
                "unknown"
            }
            Some(v) if accepted.contains(&v) => {
                self.score.right += 1;
                "right"
            }
            _ => {
                self.score.wrong += 1;
                self.score.wrong_steps.push(step);
                "wrong"
            }
        };
        if let Some(v) = verdict {
            *self.score.verdicts.entry(v).or_default() += 1;
        }
        let faults: Vec<&Fault> = self.world.faults.iter().collect();
        let mut details = serde_json::json!({"question": q, "outcome": outcome, "faults": faults});
        if verdict.is_none() {
            // What omdb said instead of a verdict (its `error:` line).
            details["error"] = stderr.lines().rev().find(|l| l.starts_with("error:")).into();
        }
        if outcome == "wrong" {
            details["summary"] = report
                .as_ref()
                .map(|r| r["verdict"]["summary"].clone())
                .unwrap_or_else(|| String::from_utf8_lossy(&output.stderr).into_owned().into());
            println!(
                "step {step}: WRONG: {fqdn}{}{} gave {} where {:?} was right; replay: chaos \
                 --seed {} --replay-to {step}",
                q.server.map(|s| format!(" at {s}")).unwrap_or_default(),
                q.at.map(|t| format!(" --at {}", t.to_rfc3339())).unwrap_or_default(),
                verdict.map(Stage::as_str).unwrap_or("no verdict"),
                accepted.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                self.seed
            );
        }
        history.record_check(step, "ask", details, Some((verdict, &accepted)));
        if let Some(text) = text {
            let text = text?;
            println!("step {step}: accepted {:?}", accepted);
            println!("{}", String::from_utf8_lossy(&text.stdout));
        }
        Ok(())
    }
}

/// A DNS server's storage directory, as the storage faults touch it
/// (`dns-server/src/storage.rs` names these files).
mod storage {
    pub const SNAPSHOT: &str = "config.json";
    pub const SNAPSHOT_TEMP: &str = "config.json.tmp";
    pub const JOURNAL: &str = "journal.jsonl";
    /// Where the journal is kept while a directory stands in its place.
    pub const JOURNAL_KEPT: &str = "journal.jsonl.chaos";

    /// `snapshot` with one digit of its config changed (the first after
    /// `"zones"`): valid JSON, or not, either way not what was written.
    pub fn tampered(snapshot: &[u8]) -> anyhow::Result<Vec<u8>> {
        let text = std::str::from_utf8(snapshot)?;
        let zones = text.find("\"zones\"").ok_or_else(|| anyhow::anyhow!("no zones in it"))?;
        let at = zones
            + text[zones..]
                .find(|c: char| c.is_ascii_digit())
                .ok_or_else(|| anyhow::anyhow!("no digit in its zones"))?;
        let mut bytes = snapshot.to_vec();
        bytes[at] = if bytes[at] == b'9' { b'8' } else { bytes[at] + 1 };
        Ok(bytes)
    }
}

/// In each run directory: the process id of the runner it belongs to.
const RUNNER_PID: &str = "runner.pid";

/// Removes the run directories of runners that are gone: a runner killed
/// outright (SIGKILL) cannot remove its own, and its processes died with it
/// (parent-death signal), its namespaces are swept by the next stack.
fn sweep_killed_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("chaos-") || !path.is_dir() {
            continue;
        }
        let pid = std::fs::read_to_string(path.join(RUNNER_PID)).ok();
        if let Some(pid) = pid.and_then(|p| p.trim().parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("chaos: removing {}, left by a runner that was killed", path.display());
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn fault_number(said: &str) -> anyhow::Result<u32> {
    said.strip_prefix("fault ")
        .and_then(|s| s.split(':').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no fault number in {said:?}"))
}

/// The stack's own database (the chaos stack always has one).
/// The push time limit of a Nexus whose propagation is made to stick.
const STUCK_FOR: Duration = Duration::from_secs(600);

/// Waits until `nexus`'s propagation of `group` is running generation
/// `generation` with only `server` left to answer.
async fn stuck(
    stack: &Stack,
    nexus: usize,
    group: DnsGroup,
    generation: u64,
    server: usize,
) -> anyhow::Result<()> {
    let name = nexus_types::task_name::DnsTaskName::propagation(group).to_string();
    let pending = serde_json::json!([stack.dns_servers[server].http_address.to_string()]);
    let client = stack.nexus[nexus].client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(view) = client.bgtask_view().bgtask_name(&name).send().await
            && let background_task_types::CurrentStatus::Running { progress: Some(p), .. } =
                view.into_inner().current
            && p["generation"] == generation
            && p["pending"] == pending
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{}'s propagation of generation {generation} did not come to wait on {} alone",
                stack.nexus[nexus].name,
                stack.dns_servers[server].name
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a replicated database may take to elect a primary or take a
/// node back.
const REJOIN_LIMIT: Duration = Duration::from_secs(90);

fn cluster(
    stack: &mut Stack,
) -> anyhow::Result<&mut local_postgres::replicated::ReplicatedPostgres> {
    match &mut stack.database {
        devstack::stack::Database::Replicated(cluster) => Ok(cluster),
        _ => bail!("the replicated database's faults need the stack's replicated database"),
    }
}

/// Waits until Patroni itself names a synchronous standby that runs
/// (`GET /cluster`: a member `sync_standby`, `running` or `streaming`).  PostgreSQL may
/// report a synchronous standby before Patroni has recorded it; a primary
/// lost in between leaves no standby that strict synchronous mode lets
/// take over (seed 47 met that: no promotion in 90 s), so a heal is done
/// only once Patroni agrees.
async fn patroni_settled(stack: &mut Stack) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Member {
        role: String,
        state: String,
    }
    #[derive(serde::Deserialize)]
    struct Cluster {
        members: Vec<Member>,
    }
    let apis: Vec<SocketAddr> = cluster(stack)?.nodes().iter().map(|n| n.patroni_api).collect();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + REJOIN_LIMIT;
    loop {
        for api in &apis {
            let Ok(response) = client.get(format!("http://{api}/cluster")).send().await else {
                continue;
            };
            if let Ok(cluster) = response.json::<Cluster>().await
                && cluster
                    .members
                    .iter()
                    // Patroni 3.0 says `running` of a streaming standby;
                    // later versions say `streaming`.
                    .any(|m| {
                        m.role == "sync_standby"
                            && matches!(m.state.as_str(), "running" | "streaming")
                    })
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("Patroni named no running synchronous standby within {REJOIN_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The replicated database's primary and its running standbys, by index in
/// the cluster's node list.
async fn cluster_roles(stack: &mut Stack) -> anyhow::Result<(usize, Vec<usize>)> {
    let nodes = db_model::cluster::node_statuses(&stack.db_url, Duration::from_secs(2)).await?;
    let (primary, _) = db_model::cluster::primary(&nodes)
        .with_context(|| format!("no single primary among {nodes:?}"))?;
    let address = primary.address.clone();
    let cluster = cluster(stack)?;
    let index = cluster
        .nodes()
        .iter()
        .position(|n| n.postgres.to_string() == address)
        .with_context(|| format!("the primary {address} is none of the cluster's nodes"))?;
    let standbys = (0..cluster.nodes().len())
        .filter(|i| *i != index && cluster.nodes()[*i].agent_pid().is_some())
        .collect();
    Ok((index, standbys))
}

fn local_database(stack: &mut Stack) -> anyhow::Result<&mut local_postgres::LocalPostgres> {
    match &mut stack.database {
        devstack::stack::Database::Local(pg) => Ok(pg),
        _ => bail!("the database faults need the stack's own single database"),
    }
}

/// Activates `nexus`'s config tasks until both have read the database
/// (at most 30 s): after an outage its first attempts may still fail.
async fn reloaded(nexus: &nexus_client::Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for group in [DnsGroup::Internal, DnsGroup::External] {
        let name = nexus_types::task_name::DnsTaskName::config(group).to_string();
        loop {
            let ticket = nexus
                .bgtask_activate()
                .body(nexus_client::types::BackgroundTasksActivateRequest {
                    bgtask_names: vec![name.clone()],
                    wait: true,
                })
                .send()
                .await;
            let ok = ticket.is_ok()
                && match nexus.bgtask_view().bgtask_name(&name).send().await {
                    Ok(view) => matches!(
                        &view.into_inner().last,
                        background_task_types::LastActivation::Completed(record)
                            if record.error().is_none()
                    ),
                    Err(_) => false,
                };
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name} did not read the database again within 30 s of its return");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Whether `nexus` has loaded `generation` of `group` (or a later one),
/// asking until `wait` has passed.
async fn loaded(
    nexus: &nexus_client::Client,
    group: DnsGroup,
    generation: u64,
    wait: Duration,
) -> bool {
    let name = nexus_types::task_name::DnsTaskName::config(group).to_string();
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(view) = nexus.bgtask_view().bgtask_name(&name).send().await
            && let background_task_types::LastActivation::Completed(record) = view.into_inner().last
            && let Ok(status) =
                serde_json::from_value::<nexus_types::task_status::DnsConfigStatus>(record.details)
            && status.generation >= generation
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client of server `index`'s config API that sends the stack's token.
fn server_client(stack: &Stack, index: usize) -> anyhow::Result<dns_server_client::Client> {
    devstack::stack::dns_server_client(&stack.dns_servers[index], &stack.api_token)
}

async fn send_change(
    nexus: &nexus_client::Client,
    group: DnsGroup,
    change: &DnsChange,
) -> anyhow::Result<u64> {
    // The key makes a retry safe; a Nexus busy with a hung server answers
    // late, never twice.
    let mut last_error = None;
    for _ in 0..5 {
        match nexus.dns_change().group(group).body(change.clone()).send().await {
            Ok(version) => return Ok(version.into_inner().generation),
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("a change through Nexus failed 5 times: {:?}", last_error)
}

async fn activate(nexus: &nexus_client::Client, names: Vec<String>) -> anyhow::Result<()> {
    nexus
        .bgtask_activate()
        .body(nexus_client::types::BackgroundTasksActivateRequest {
            bgtask_names: names,
            wait: true,
        })
        .send()
        .await
        .context("activating tasks")?;
    Ok(())
}

/// Waits (at most 20 s) until each of `nexus` has finished a propagation
/// of `generation` of `group` (whatever its outcome): the verdict's inputs
/// are then in place.  Whether it got there.
async fn settle(stack: &Stack, nexus: &[usize], group: DnsGroup, generation: u64) -> bool {
    use nexus_types::task_status::PropagationReport;
    let deadline = Instant::now() + Duration::from_secs(20);
    let name = nexus_types::task_name::DnsTaskName::propagation(group).to_string();
    for n in nexus {
        let client = stack.nexus[*n].client();
        loop {
            let done = match client.bgtask_view().bgtask_name(&name).send().await {
                Ok(view) => match view.into_inner().last {
                    background_task_types::LastActivation::Completed(record) => {
                        matches!(
                            serde_json::from_value::<PropagationReport>(record.details),
                            Ok(PropagationReport::Done(status)) if status.generation >= generation
                        )
                    }
                    _ => false,
                },
                Err(_) => false,
            };
            if done {
                break;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    true
}
