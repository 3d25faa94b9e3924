//! `omdb dns explain NAME`: from a name a customer says is missing to the
//! pipeline stage that lost it, with evidence from every stage.
//!
//! Three steps, apart: [`gather`] asks every stage what it knows about the
//! name (the database, every Nexus, every DNS server, and the wire) and
//! keeps it as [`Observations`]; [`findings`] turns them, with no I/O and
//! no clock, into a [`Report`]: every disagreement a finding tagged with
//! its stage, the earliest stage's finding the verdict, or an affirmative
//! "healthy" summary; [`render`] prints it (or `--json` does).  A bundle
//! keeps the observations, so the same verdict can be given offline.

pub mod findings;
pub mod gather;
pub mod past;
pub mod render;
pub mod report;

pub use report::Report;

use crate::discovery::Discovery;
use crate::format::Output;
use dns_types::DnsRecord;
use std::net::SocketAddr;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The name, absolute (`shop.example.test`, trailing dot optional); its
    /// zone and group are the longest zone that contains it.
    pub name: String,
    /// The record type the customer asked for (default: the types the
    /// database has for the name, or A).
    #[arg(long = "type", value_name = "TYPE", value_parser = record_type)]
    pub rtype: Option<String>,
    /// A DNS address (IP:PORT) to check too, registered or not: the one
    /// the customer asked.
    #[arg(long = "server", value_name = "ADDR")]
    pub servers: Vec<SocketAddr>,
    /// A propagation activation running longer than this is reported as
    /// stuck.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_STUCK_AFTER_SECS)]
    pub stuck_after: u64,
    /// Explain the name as things stood at this moment, from the histories:
    /// an RFC 3339 time (`2026-12-03T10:31:02Z`) or how long ago (`15m`,
    /// `1h30m`).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Answer from a bundle (`omdb dns bundle --name NAME`) instead of the
    /// live system: the verdict as it was when the bundle was taken.
    #[arg(long, value_name = "FILE")]
    pub from_bundle: Option<std::path::PathBuf>,
}

/// When a running propagation counts as stuck (and, for `--at`, how long
/// after a commit propagation counts as still in flight): the same default
/// as `background-tasks show --stuck-after`, so the two never disagree.
pub const DEFAULT_STUCK_AFTER_SECS: u64 = nexus_types::lints::DEFAULT_STUCK_AFTER.as_secs();

/// A record type we serve, in upper case; anything else is a usage error
/// (exit 2) rather than a question every server would "fail" to answer.
fn record_type(value: &str) -> Result<String, String> {
    let upper = value.to_ascii_uppercase();
    let apex = findings::APEX_TYPES;
    if DnsRecord::TYPE_NAMES.contains(&upper.as_str()) || apex.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!(
            "not a record type served here (one of {}, {})",
            DnsRecord::TYPE_NAMES.join(", "),
            apex.join(", ")
        ))
    }
}

pub async fn run(args: &ExplainArgs, discovery: &Discovery, output: &Output) -> anyhow::Result<u8> {
    let bundle = args.from_bundle.as_deref().map(crate::bundle::Bundle::open).transpose()?;
    let now = bundle.as_ref().map(|b| b.manifest.taken_at).unwrap_or_else(chrono::Utc::now);
    let at = args
        .at
        .as_deref()
        .map(|t| crate::format::parse_moment(t, now))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--at: {e}"))?;
    let report = match (at, &bundle) {
        (Some(at), _) if at > now => {
            anyhow::bail!("--at {} is in the future", crate::format::timestamp(at))
        }
        (Some(at), Some(bundle)) => past::evaluate(&bundle.past(question(args), at)?),
        (Some(at), None) => past::evaluate(&past::gather(question(args), at, discovery).await?),
        (None, Some(bundle)) => findings::evaluate(&bundle.explain(&args.name)?),
        (None, None) => findings::evaluate(&gather::gather(args, discovery).await?),
    };
    print_report(&report, output)
}

fn question(args: &ExplainArgs) -> gather::Question {
    gather::Question {
        name: args.name.clone(),
        record_type: args.rtype.clone(),
        servers: args.servers.clone(),
        stuck_after_secs: args.stuck_after,
    }
}

/// Prints `report` as text or JSON; the exit status names its stage.
pub fn print_report(report: &Report, output: &Output) -> anyhow::Result<u8> {
    if output.json {
        output.json(report)?;
    } else {
        out!("{}", render::render(report));
    }
    Ok(report.verdict.stage.exit_code())
}

#[cfg(test)]
mod tests;
