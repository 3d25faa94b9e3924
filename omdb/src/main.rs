//! omdb: the control plane's debugger.
//!
//! It answers, in seconds, where a DNS name got lost (or proves that DNS is
//! not the problem): what the database holds (`omdb db dns ...`), what each
//! Nexus's propagation tasks last did (`omdb nexus background-tasks ...`),
//! and what each DNS server serves (`omdb dns status`); `omdb dns explain
//! NAME` lines all of them up for one name and gives a verdict.
//!
//! What omdb assumed (which DNS server, which Nexus, which database) goes to
//! stderr as `note:` lines; the answer goes to stdout; `--json` prints one
//! JSON document instead of text.  Failures print one `error:` line and exit
//! 1 (usage errors 2; `dns explain` exits 10-15 naming the stage at fault).

#[macro_use]
mod format;
mod bundle;
mod db;
mod db_status;
mod discovery;
mod dns;
mod explain;
mod history;
mod nexus;
mod observe;
mod timeline;

use clap::{Parser, Subcommand};
use discovery::Discovery;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "omdb", about = "Debugger for the control plane's DNS pipeline", version)]
struct Args {
    /// DNS server used to find everything else (Nexus, the database, the
    /// DNS servers) through internal DNS; several, comma-separated, are
    /// asked in order until one answers.
    #[arg(long, env = "OMDB_DNS_SERVER", global = true, value_delimiter = ',')]
    dns_server: Vec<SocketAddr>,
    /// URL of one Nexus's internal API (default: pick one from DNS).
    #[arg(long, env = "OMDB_NEXUS_URL", global = true)]
    nexus_internal_url: Option<String>,
    /// URL of the database (default: find it in DNS).
    #[arg(long, env = "OMDB_DB_URL", global = true)]
    db_url: Option<String>,
    /// The internal DNS zone.
    #[arg(long, env = "OMDB_INTERNAL_ZONE", global = true, default_value = internal_dns::DEFAULT_INTERNAL_ZONE)]
    internal_zone: String,
    /// Allow commands that change something.
    #[arg(short = 'w', long, global = true)]
    destructive: bool,
    /// File holding the API token that commands run with -w send (devstack
    /// prints it).
    #[arg(long, env = "OMDB_API_TOKEN_FILE", global = true)]
    api_token_file: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ask a Nexus: its background tasks, DNS changes.
    Nexus(nexus::NexusArgs),
    /// Read the database directly (read-only).
    Db(db::DbArgs),
    /// Ask the DNS servers what they serve, and compare with the database.
    Dns(dns::DnsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell), e.g. `omdb completions bash > /etc/bash_completion.d/omdb`.
    Completions { shell: clap_complete::Shell },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let discovery = Discovery::new(
        args.dns_server,
        args.nexus_internal_url.clone(),
        args.db_url.clone(),
        args.internal_zone.clone(),
    );
    let output = format::Output { json: args.json };
    let writes =
        WriteAccess { destructive: args.destructive, api_token_file: args.api_token_file.clone() };
    if let Command::Completions { shell } = &args.command {
        let mut command = <Args as clap::CommandFactory>::command();
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut command, "omdb", &mut script);
        out!("{}", String::from_utf8_lossy(&script));
        return ExitCode::SUCCESS;
    }
    let result = match &args.command {
        Command::Nexus(a) => nexus::run(a, &discovery, &output, &writes).await,
        Command::Db(a) => db::run(a, &discovery, &output).await,
        Command::Dns(a) => dns::run(a, &discovery, &output).await,
        Command::Completions { .. } => unreachable!("handled above"),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {}", format!("{error:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// What a command that changes something needs: `-w`, and the API token.
pub struct WriteAccess {
    destructive: bool,
    api_token_file: Option<PathBuf>,
}

impl WriteAccess {
    /// The token to send for `what`, or why the command may not run.
    pub fn token(&self, what: &str) -> anyhow::Result<api_auth::ApiToken> {
        if !self.destructive {
            anyhow::bail!("{what} changes state: pass -w (--destructive) to confirm");
        }
        let path = self.api_token_file.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "{what} needs the API token: pass --api-token-file or set OMDB_API_TOKEN_FILE \
                 (devstack prints it)"
            )
        })?;
        Ok(api_auth::ApiToken::from_file(path)?)
    }
}
