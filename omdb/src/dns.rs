//! `omdb dns status`: every DNS server of a group, what it serves, and
//! whether that matches what the database holds for that generation.

use crate::discovery::{Discovery, http_client};
use crate::format::{Output, table, timestamp};
use anyhow::Context;
use clap::{Args, Subcommand};
use dns_types::DnsGroup;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Args)]
pub struct DnsArgs {
    #[command(subcommand)]
    command: DnsCommand,
}

#[derive(Subcommand)]
enum DnsCommand {
    /// Each server's generation, how far behind it is, and whether its
    /// content matches the database (all groups, or one).
    Status { group: Option<DnsGroup> },
}

#[derive(Serialize, tabled::Tabled)]
struct StatusRow {
    #[tabled(rename = "GROUP")]
    group: DnsGroup,
    #[tabled(rename = "DNS_SERVER_ADDR")]
    address: String,
    #[tabled(rename = "GENERATION")]
    generation: String,
    #[tabled(rename = "BEHIND")]
    behind: String,
    #[tabled(rename = "TIME_APPLIED")]
    time_applied: String,
    #[tabled(rename = "MATCHES_DB")]
    matches_db: String,
}

pub async fn run(args: &DnsArgs, discovery: &Discovery, output: &Output) -> anyhow::Result<()> {
    let DnsCommand::Status { group } = &args.command;
    let groups: Vec<DnsGroup> = group.map(|g| vec![g]).unwrap_or_else(|| DnsGroup::ALL.to_vec());
    let datastore = discovery.datastore().await?;
    let mut rows = Vec::new();
    let mut latest_by_group = BTreeMap::new();
    let mut failures = 0;
    for group in groups {
        let latest = datastore.dns_version_latest(group).await?;
        let mut servers = discovery.dns_servers(group).await?;
        servers.sort();
        let statuses = futures::future::join_all(servers.iter().map(|(address, _)| async move {
            let client = dns_server_client::Client::new_with_client(
                &format!("http://{address}"),
                http_client(),
            );
            client.status_get().send().await.map(|r| r.into_inner())
        }))
        .await;
        let mut digests: BTreeMap<u64, String> = BTreeMap::new();
        for ((address, _), status) in servers.iter().zip(statuses) {
            let row = match status {
                Ok(status) => {
                    let expected = match digests.get(&status.generation) {
                        Some(d) => Some(d.clone()),
                        None if status.generation == 0 => None,
                        None => {
                            let config = datastore
                                .dns_config_read(group, Some(status.generation))
                                .await
                                .with_context(|| {
                                    format!(
                                        "reading {group} generation {} from the database",
                                        status.generation
                                    )
                                })?;
                            let digest = dns_types::config_digest(&config);
                            digests.insert(status.generation, digest.clone());
                            Some(digest)
                        }
                    };
                    let matches = match (&expected, &status.applied_config_digest) {
                        (Some(e), Some(a)) if e == a => "yes".to_string(),
                        (None, None) => "no config".to_string(),
                        _ => {
                            failures += 1;
                            "NO: content differs from the database".to_string()
                        }
                    };
                    if status.generation < latest.generation {
                        failures += 1;
                    }
                    StatusRow {
                        group,
                        address: address.to_string(),
                        generation: status.generation.to_string(),
                        behind: latest.generation.saturating_sub(status.generation).to_string(),
                        time_applied: status
                            .time_applied
                            .map(timestamp)
                            .unwrap_or_else(|| "-".into()),
                        matches_db: matches,
                    }
                }
                Err(e) => {
                    failures += 1;
                    StatusRow {
                        group,
                        address: address.to_string(),
                        generation: "-".into(),
                        behind: "-".into(),
                        time_applied: "-".into(),
                        matches_db: format!("UNREACHABLE: {:#}", anyhow::Error::new(e)),
                    }
                }
            };
            rows.push(row);
        }
        latest_by_group.insert(group, latest);
    }
    if output.json {
        output.json(&serde_json::json!({ "latest": latest_by_group, "servers": rows }))?;
    } else {
        for (group, latest) in &latest_by_group {
            println!(
                "{group}: database latest generation {}, created at {} by {}: {:?}",
                latest.generation,
                timestamp(latest.time_created),
                latest.creator,
                latest.comment
            );
        }
        println!();
        println!("{}", table(rows, 0));
    }
    if failures > 0 {
        // The table says which; the exit status says that something is off.
        anyhow::bail!(
            "{failures} DNS server(s) unreachable, behind, or serving content that differs from the database"
        );
    }
    Ok(())
}
