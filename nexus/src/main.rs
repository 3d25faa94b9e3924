//! `nexus --config-file nexus.toml`: runs Nexus until SIGINT or SIGTERM.
//!
//! On start it prints one JSON line to stdout with its id and the address of
//! its internal API (useful with port 0).  Logs go to stderr (`RUST_LOG`
//! selects the level; default `info`).

use clap::Parser;
use nexus::RunningNexus;
use nexus::config::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "The control-plane daemon: DNS changes and DNS propagation")]
struct Args {
    /// The TOML config file (see `nexus::config::Config`).
    #[arg(long)]
    config_file: PathBuf,
}

/// mimalloc, not glibc's malloc: after a million names loaded in changes
/// of 20,000, glibc left each Nexus at 600-950 MiB resident, mimalloc at
/// 220-390 MiB (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(error) = run(Args::parse()).await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::from_file(&args.config_file)?;
    let nexus = RunningNexus::start(&config).await?;
    println!(
        "{}",
        serde_json::json!({ "id": nexus.id(), "internal_api_address": nexus.address() })
    );
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    tracing::info!("shutting down");
    nexus.shutdown().await
}
