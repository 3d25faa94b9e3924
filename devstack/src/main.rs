//! `devstack run`: a complete control plane on this machine, for people.
//!
//! Starts a private PostgreSQL (or uses `--db-url`), writes the initial DNS
//! configuration, starts 3 internal and 2 external DNS servers and 2 Nexus
//! on loopback, waits until everything serves generation 1 and answers, and
//! prints how to look at it with omdb.  Ctrl-C (SIGINT) or SIGTERM stops
//! every process; the run directory keeps the logs.
//!
//! `devstack stop NAME` and `devstack start NAME` stop and start one DNS
//! server or Nexus of the running stack (see [`devstack::control`]).

use anyhow::Context;
use clap::{Parser, Subcommand};
use devstack::control::Action;
use devstack::describe::{Component, ComponentKind};
use devstack::{Stack, StackOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Runs a complete local control plane: database, DNS servers, Nexus")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DbKind {
    Single,
    Replicated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Hosts {
    Loopback,
    Netns,
}

#[derive(Subcommand)]
enum Command {
    /// Start the stack and run until Ctrl-C.
    Run {
        /// Use this database instead of starting a private PostgreSQL.
        #[arg(long, conflicts_with = "db")]
        db_url: Option<String>,
        /// Which database to start: `single` (one PostgreSQL process) or
        /// `replicated` (etcd and three PostgreSQL nodes under Patroni,
        /// synchronous replication; needs `patroni` and `etcd-server`).
        #[arg(long, value_enum, default_value_t = DbKind::Single)]
        db: DbKind,
        /// Where components run: `loopback` (this host's 127.0.0.1), or
        /// `netns` (each DNS server, each Nexus and the database on its own
        /// host: a network namespace with an IPv6 address from
        /// fd00:1122:3344::/48 on a bridge; needs root and `ip`, `nft`).
        #[arg(long, value_enum, default_value_t = Hosts::Loopback)]
        hosts: Hosts,
        /// Where to keep storage and logs (default: a new directory in /tmp).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        #[arg(long, default_value = internal_dns::DEFAULT_INTERNAL_ZONE)]
        internal_zone: String,
        #[arg(long, default_value = "example.test")]
        external_zone: String,
        /// How many DNS servers serve the internal zone.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=200))]
        internal_dns_servers: u16,
        /// How many DNS servers serve the external zone.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=200))]
        external_dns_servers: u16,
        /// How many Nexus instances run.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=20))]
        nexus: u16,
        /// Period of every Nexus background task, in seconds.
        #[arg(long, default_value_t = 60)]
        task_period_secs: u64,
        /// Also start Prometheus (the `prometheus` binary must be on the
        /// PATH) scraping every DNS server and Nexus.
        #[arg(long)]
        prometheus: bool,
    },
    /// Stop one DNS server or Nexus of the running stack (by the name
    /// devstack printed, e.g. dns-internal-1).
    Stop {
        name: String,
        /// The stack's run directory (default: $DEVSTACK_RUN_DIR, else the
        /// newest stack, ~/.devstack/current).
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
    /// Start again a DNS server or Nexus stopped with `devstack stop`, on
    /// the same addresses and storage.
    Start {
        name: String,
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
    /// Put a network fault between components of a stack run with
    /// `--hosts netns`: `cut A B [one-way]`, `drop A PERCENT`,
    /// `filter A udp|tcp PORT`, or `list` them; each gets a number.
    Fault {
        #[arg(required = true, num_args = 1..)]
        request: Vec<String>,
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
    /// Take a fault back: its number (`devstack fault list`), or `all`.
    Heal {
        which: String,
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,deadpool=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Args::parse().command {
        Command::Stop { name, run_dir } => control(Action::Stop, &name, run_dir).await,
        Command::Start { name, run_dir } => control(Action::Start, &name, run_dir).await,
        Command::Fault { request, run_dir } => {
            control_line(&format!("fault {}", request.join(" ")), run_dir).await
        }
        Command::Heal { which, run_dir } => {
            control_line(&format!("fault heal {which}"), run_dir).await
        }
        run => run_stack(run).await,
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn control(action: Action, name: &str, run_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let line = match action {
        Action::Stop => format!("stop {name}"),
        Action::Start => format!("start {name}"),
    };
    control_line(&line, run_dir).await
}

/// Sends one request to the running stack and prints its answer.
async fn control_line(line: &str, run_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let run_dir = match run_dir {
        Some(dir) => dir,
        None => devstack::describe::current_run_dir()?,
    };
    let done = devstack::control::request_line(&run_dir, line).await?;
    println!("devstack: {done}");
    Ok(())
}

async fn run_stack(command: Command) -> anyhow::Result<()> {
    let Command::Run {
        db_url,
        db,
        hosts,
        run_dir,
        internal_zone,
        external_zone,
        internal_dns_servers,
        external_dns_servers,
        nexus,
        task_period_secs,
        prometheus,
    } = command
    else {
        unreachable!("run_stack is called for `run` only")
    };
    let run_dir = match run_dir {
        Some(dir) => dir,
        None => {
            let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
            std::env::temp_dir().join(format!("devstack-{stamp}-{}", std::process::id()))
        }
    };

    // Build what the stack runs first, with cargo's progress showing: a
    // first build takes minutes on a small machine.
    println!(
        "devstack: building dns-server, nexus and omdb (cargo build; a first build takes minutes)"
    );
    let build = tokio::task::spawn_blocking(test_support::process::build_binaries_visibly)
        .await?
        .context("building the binaries the stack runs")?;
    match build {
        Some(took) => println!("devstack: built in {:.1}s", took.as_secs_f64()),
        None => println!("devstack: binaries are installed; nothing to build"),
    }

    let mut options = StackOptions::new(run_dir.clone());
    options.db_url = db_url;
    options.replicated_db = db == DbKind::Replicated;
    if hosts == Hosts::Netns {
        if db == DbKind::Replicated {
            anyhow::bail!(
                "--hosts netns with --db replicated is not built yet: the replicated database \
                 runs on loopback only"
            );
        }
        options.netns_subnet = Some(0);
    }
    options.internal_zone = internal_zone;
    options.external_zone = external_zone;
    options.internal_dns_servers = internal_dns_servers.into();
    options.external_dns_servers = external_dns_servers.into();
    options.nexus_instances = nexus.into();
    options.task_period_secs = task_period_secs;
    options.progress = true;
    println!(
        "devstack: starting {}{} internal and {} external DNS servers and {} Nexus in {}",
        match (&options.db_url, db) {
            (Some(_), _) => "",
            (None, DbKind::Single) => "PostgreSQL, ",
            (None, DbKind::Replicated) =>
                "a replicated database (etcd, 3 PostgreSQL under Patroni), ",
        },
        internal_dns_servers,
        external_dns_servers,
        nexus,
        run_dir.display()
    );

    let started = Instant::now();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stack = tokio::select! {
        stack = Stack::start(options) => stack.context("starting the stack")?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted during start-up; logs are in {}", run_dir.display()),
        _ = sigterm.recv() => anyhow::bail!("terminated during start-up; logs are in {}", run_dir.display()),
    };
    let prometheus = match prometheus {
        false => None,
        true => match devstack::prometheus::start(&stack).await {
            Ok(p) => Some(p),
            Err(e) => {
                stack.stop().await;
                return Err(e.context("starting Prometheus"));
            }
        },
    };
    let extra: Vec<Component> = prometheus
        .iter()
        .map(|p| Component {
            kind: ComponentKind::Prometheus,
            name: "prometheus".into(),
            group: None,
            id: None,
            pid: p.process.pid().map(|p| p.as_raw() as u32),
            netns: None,
            dns_address: None,
            http_address: Some(p.address),
            log: p.process.log().to_path_buf(),
        })
        .collect();
    stack.write_description(&extra)?;
    let current = devstack::describe::link_current(&run_dir);
    print_ready(&stack, &extra, started.elapsed(), build, current.as_ref().ok());
    if let Err(e) = current {
        println!(
            "(could not link ~/.devstack/current: {e:#}; use --run-dir with devstack stop|start)"
        );
    }

    let stack = Arc::new(tokio::sync::Mutex::new(stack));
    let control = devstack::control::serve(stack.clone(), extra)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    println!("\ndevstack: stopping every process");
    control.abort();
    let _ = std::fs::remove_file(devstack::control::socket_path(&run_dir));
    if let Some(p) = prometheus {
        p.process.stop().await;
    }
    stack.lock().await.stop_all().await;
    println!("devstack: stopped; logs are in {}", run_dir.display());
    Ok(())
}

fn print_ready(
    stack: &Stack,
    extra: &[Component],
    took: Duration,
    build: Option<Duration>,
    current: Option<&PathBuf>,
) {
    let dns = stack.internal_dns_addresses();
    let build = build.map(|b| format!("; the build before it took {:.1}s", b.as_secs_f64()));
    println!("ready (in {:.1}s{})", took.as_secs_f64(), build.unwrap_or_default());
    println!("run directory:   {}", stack.options.run_dir.display());
    println!("database:        {}", stack.db_url);
    println!();
    let mut description = stack.description();
    description.components.extend_from_slice(extra);
    let address = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or("-".into());
    // IPv6 addresses (`--hosts netns`) are wider than loopback ones.
    let width = description
        .components
        .iter()
        .flat_map(|c| [address(c.dns_address).len(), address(c.http_address).len()])
        .max()
        .unwrap_or(0)
        .max(21);
    println!(
        "  {:<10}  {:<14}  {:>7}  {:<width$}  {:<width$}  LOG",
        "KIND", "NAME", "PID", "DNS", "HTTP"
    );
    for c in &description.components {
        println!(
            "  {:<10}  {:<14}  {:>7}  {:<width$}  {:<width$}  {}",
            c.kind.to_string(),
            c.name,
            c.pid.map(|p| p.to_string()).unwrap_or("-".into()),
            address(c.dns_address),
            address(c.http_address),
            c.log.display()
        );
    }
    println!("(the same as JSON: {})", stack.options.run_dir.join("stack.json").display());
    println!();
    println!("Try (in another terminal):");
    match current {
        Some(link) => println!("  source {}/env", link.display()),
        None => println!("  source {}/env", stack.options.run_dir.display()),
    }
    println!("  omdb nexus background-tasks show dns_internal");
    println!("  omdb dns status");
    println!("  omdb db dns show");
    println!(
        "  omdb -w nexus dns add internal test1 A 192.0.2.10 --comment \"my first change\" --wait"
    );
    println!("  omdb dns explain test1.{}", stack.options.internal_zone);
    println!("  dig @{} -p {} test1.{} A", dns[0].ip(), dns[0].port(), stack.options.internal_zone);
    println!("  devstack stop dns-internal-1; devstack start dns-internal-1");
    println!();
    println!("Ctrl-C stops everything.");
}
