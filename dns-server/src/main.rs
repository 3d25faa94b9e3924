//! `dns-server`: runs an authoritative DNS server with its config API until
//! SIGINT or SIGTERM.
//!
//! On start it prints one JSON line to stdout with the addresses it bound
//! (useful with port 0): `{"id": ..., "dns_address": ..., "http_address": ...}`.
//! Logs go to stderr (`RUST_LOG` selects the level; default `info`, with no
//! line per query: `--query-log FILE` writes those, as JSON lines).

use anyhow::{Context, bail};
use clap::Parser;
use dns_server::{Config, RunningServer};
use std::net::SocketAddr;
use std::path::PathBuf;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Authoritative DNS server with a generation-checked config API")]
struct Args {
    /// Address for DNS over UDP and TCP (port 0 picks one).
    #[arg(long)]
    dns_address: Option<SocketAddr>,
    /// Address for the config HTTP API (port 0 picks one).
    #[arg(long)]
    http_address: Option<SocketAddr>,
    /// Directory where the applied config is kept across restarts.
    #[arg(long)]
    storage_dir: Option<PathBuf>,
    /// This server's id (default: kept in the storage directory).
    #[arg(long)]
    id: Option<Uuid>,
    /// The DNS address clients use, when it is not the one bound (behind a
    /// proxy or NAT); reported by `GET /status`.
    #[arg(long)]
    advertise_dns_address: Option<SocketAddr>,
    /// File holding the bearer token that every config write must carry
    /// (`Authorization: Bearer <token>`); reads stay open.
    #[arg(long)]
    api_token_file: Option<PathBuf>,
    /// Close an HTTP connection that moves no data for this long while no
    /// request on it is being handled.
    #[arg(long, default_value_t = 30.0)]
    http_idle_timeout_secs: f64,
    /// Answer CHAOS TXT version.server / version.bind (REFUSED otherwise).
    #[arg(long)]
    answer_version: bool,
    /// Log every query (or one in --query-log-sample) to this file, one JSON
    /// object per line.  There is no per-query log otherwise.
    #[arg(long, value_name = "FILE")]
    query_log: Option<PathBuf>,
    /// Address or address/prefix allowed to transfer zones (AXFR, IXFR over
    /// TCP); repeatable.  Default: loopback only.
    #[arg(long, value_name = "CIDR")]
    allow_transfer: Vec<dns_server::AddressRange>,
    /// How many events of the apply history to keep (GET /history).
    #[arg(long, value_name = "N", default_value_t = dns_server::state::DEFAULT_HISTORY_EVENTS)]
    history_events: usize,
    /// With --query-log: log one query in this many.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "query_log")]
    query_log_sample: u64,
    /// A TOML file with the keys dns_address, http_address, storage_dir,
    /// api_token_file and optionally id and advertise_dns_address, instead
    /// of the flags.
    #[arg(long, conflicts_with_all = ["dns_address", "http_address", "storage_dir", "id", "advertise_dns_address", "api_token_file"])]
    config_file: Option<PathBuf>,
}

fn config(args: Args) -> anyhow::Result<Config> {
    if let Some(path) = args.config_file {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        return toml::from_str(&text)
            .with_context(|| format!("parsing config file {}", path.display()));
    }
    match (args.dns_address, args.http_address, args.storage_dir, args.api_token_file) {
        (Some(dns_address), Some(http_address), Some(storage_dir), Some(api_token_file)) => {
            Ok(Config {
                dns_address,
                http_address,
                storage_dir,
                id: args.id,
                advertise_dns_address: args.advertise_dns_address,
                api_token_file,
                http_idle_timeout_secs: args.http_idle_timeout_secs,
                answer_version: args.answer_version,
                query_log: args.query_log,
                query_log_sample: args.query_log_sample,
                allow_transfer: (!args.allow_transfer.is_empty()).then_some(args.allow_transfer),
                history_events: args.history_events,
            })
        }
        _ => bail!(
            "give --dns-address, --http-address, --storage-dir and --api-token-file (or --config-file)"
        ),
    }
}

#[tokio::main]
async fn main() {
    dns_server::state::tune_allocator();
    if let Err(error) = run().await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // hickory-server logs two lines per query at info: none here.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = config(Args::parse())?;
    let server = RunningServer::start(&config).await?;
    println!(
        "{}",
        serde_json::json!({
            "id": server.id(),
            "dns_address": server.dns_address(),
            "http_address": server.http_address(),
        })
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await
}
