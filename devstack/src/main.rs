//! `devstack run`: a complete control plane on this machine, for people.
//!
//! Starts a private PostgreSQL (or uses `--db-url`), writes the initial DNS
//! configuration, starts 3 internal and 2 external DNS servers and 2 Nexus
//! on loopback, waits until everything serves generation 1 and answers, and
//! prints how to look at it with omdb.  Ctrl-C (SIGINT) or SIGTERM stops
//! every process; the run directory keeps the logs.

use anyhow::Context;
use clap::{Parser, Subcommand};
use devstack::{Stack, StackOptions};
use dns_types::DnsGroup;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Runs a complete local control plane: database, DNS servers, Nexus")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the stack and run until Ctrl-C.
    Run {
        /// Use this database instead of starting a private PostgreSQL.
        #[arg(long)]
        db_url: Option<String>,
        /// Where to keep storage and logs (default: a new directory in /tmp).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        #[arg(long, default_value = internal_dns::DEFAULT_INTERNAL_ZONE)]
        internal_zone: String,
        #[arg(long, default_value = "example.test")]
        external_zone: String,
        /// Period of every Nexus background task, in seconds.
        #[arg(long, default_value_t = 60)]
        task_period_secs: u64,
        /// Also start Prometheus (the `prometheus` binary must be on the
        /// PATH) scraping every DNS server and Nexus.
        #[arg(long)]
        prometheus: bool,
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
    if let Err(error) = run(Args::parse()).await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Command::Run {
        db_url,
        run_dir,
        internal_zone,
        external_zone,
        task_period_secs,
        prometheus,
    } = args.command;
    let run_dir = match run_dir {
        Some(dir) => dir,
        None => {
            let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
            std::env::temp_dir().join(format!("devstack-{stamp}-{}", std::process::id()))
        }
    };
    let mut options = StackOptions::new(run_dir.clone());
    options.db_url = db_url;
    options.internal_zone = internal_zone;
    options.external_zone = external_zone;
    options.task_period_secs = task_period_secs;
    println!(
        "devstack: starting {}3 internal and 2 external DNS servers and 2 Nexus in {}",
        if options.db_url.is_some() { "" } else { "PostgreSQL, " },
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
    print_ready(&stack, started.elapsed(), prometheus.as_ref().map(|p| p.address));

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    println!("\ndevstack: stopping every process");
    if let Some(p) = prometheus {
        p.process.stop().await;
    }
    stack.stop().await;
    println!("devstack: stopped; logs are in {}", run_dir.display());
    Ok(())
}

fn print_ready(stack: &Stack, took: std::time::Duration, prometheus: Option<std::net::SocketAddr>) {
    let dns = stack.internal_dns_addresses();
    let omdb = test_support::process::binary("omdb")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "cargo run -q -p omdb --".into());
    println!("ready (in {:.1}s)", took.as_secs_f64());
    println!("run directory:   {}", stack.options.run_dir.display());
    println!("database:        {}", stack.db_url);
    for group in DnsGroup::ALL {
        let servers: Vec<String> = stack
            .servers(group)
            .map(|s| format!("{} (config API {})", s.dns_address, s.http_address))
            .collect();
        println!("{group} DNS:    {}", servers.join(", "));
    }
    let nexus: Vec<String> = stack.nexus.iter().map(|n| n.url()).collect();
    println!("Nexus:           {}", nexus.join(", "));
    if let Some(address) = prometheus {
        println!(
            "Prometheus:      http://{address} (scraping every DNS server and Nexus every 5s)"
        );
    }
    println!();
    println!("Try (in another terminal):");
    println!("  export OMDB_DNS_SERVER={}", dns[0]);
    println!("  export OMDB_API_TOKEN_FILE={}", stack.api_token_file.display());
    println!("  alias omdb={omdb}");
    println!("  omdb nexus background-tasks show dns_internal");
    println!("  omdb dns status");
    println!("  omdb db dns show");
    println!("  omdb -w nexus dns add internal test1 A 192.0.2.10 --comment \"my first change\"");
    println!("  omdb nexus background-tasks show dns_internal --all-nexus");
    println!("  dig @{} -p {} test1.{} A", dns[0].ip(), dns[0].port(), stack.options.internal_zone);
    println!();
    println!("Ctrl-C stops everything.");
}
