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
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub stuck_after: u64,
}

/// A record type we serve, in upper case; anything else is a usage error
/// (exit 2) rather than a question every server would "fail" to answer.
fn record_type(value: &str) -> Result<String, String> {
    let upper = value.to_ascii_uppercase();
    if DnsRecord::TYPE_NAMES.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!("not a record type served here (one of {})", DnsRecord::TYPE_NAMES.join(", ")))
    }
}

pub async fn run(args: &ExplainArgs, discovery: &Discovery, output: &Output) -> anyhow::Result<u8> {
    let observations = gather::gather(args, discovery).await?;
    let report = findings::evaluate(&observations);
    print_report(&report, output)
}

/// Prints `report` as text or JSON; the exit status names its stage.
pub fn print_report(report: &Report, output: &Output) -> anyhow::Result<u8> {
    if output.json {
        output.json(report)?;
    } else {
        print!("{}", render::render(report));
    }
    Ok(report.verdict.stage.exit_code())
}

#[cfg(test)]
mod tests;
