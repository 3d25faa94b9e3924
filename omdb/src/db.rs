//! `omdb db dns ...`: the DNS data in the database, read directly inside
//! read-only transactions; `omdb db status` is in `db_status.rs`.

use crate::discovery::Discovery;
use crate::format::{Output, table, timestamp};
use anyhow::bail;
use clap::{Args, Subcommand};
use dns_types::{DnsGroup, DnsVersion};

/// How many recent generations `db dns show` lists per group.
const RECENT_VERSIONS: u32 = 10;

#[derive(Args)]
pub struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Subcommand)]
enum DbCommand {
    /// DNS data.
    #[command(subcommand)]
    Dns(DbDnsCommand),
    /// Every database node (role, timeline, replication lag, which standby
    /// is synchronous), whether commits can be acknowledged now, and which
    /// node omdb and each Nexus are connected to.  Exit status 5 when
    /// commits cannot be acknowledged.
    Status {
        /// Patroni agents' API addresses (`host:port`, comma-separated),
        /// for Patroni's own view; devstack's env file sets it.
        #[arg(long, env = "OMDB_PATRONI_API", value_delimiter = ',')]
        patroni_api: Vec<String>,
    },
}

#[derive(Subcommand)]
enum DbDnsCommand {
    /// Each group's latest generation and recent history.
    Show,
    /// What generation VERSION of GROUP changed (against VERSION - 1).
    Diff { group: DnsGroup, version: u64 },
    /// Every name and record of GROUP at generation VERSION.
    Names { group: DnsGroup, version: u64 },
    /// Every generation that added, changed or removed NAME in GROUP, with
    /// when, by whom and why (one indexed query).
    History {
        group: DnsGroup,
        /// Relative to the group's zone, or absolute.
        name: String,
    },
}

#[derive(tabled::Tabled)]
struct VersionRow {
    #[tabled(rename = "GEN")]
    generation: u64,
    #[tabled(rename = "CREATED")]
    created: String,
    #[tabled(rename = "CREATOR")]
    creator: String,
    #[tabled(rename = "COMMENT")]
    comment: String,
}

#[derive(tabled::Tabled)]
struct NameRow {
    #[tabled(rename = "NAME")]
    name: String,
    #[tabled(rename = "RECORD")]
    record: String,
}

/// `db dns show` as data: per group, the latest generation, each zone's
/// size and the recent generations.
#[derive(Debug, serde::Serialize)]
struct ShowReport {
    groups: Vec<GroupShow>,
}

#[derive(Debug, serde::Serialize)]
struct GroupShow {
    group: DnsGroup,
    latest: DnsVersion,
    zones: Vec<ZoneSize>,
    /// Oldest first.
    recent_versions: Vec<DnsVersion>,
}

#[derive(Debug, serde::Serialize)]
struct ZoneSize {
    zone_name: String,
    names: u64,
}

/// `db dns history` as data.
#[derive(Debug, serde::Serialize)]
struct NameHistoryReport {
    group: DnsGroup,
    zone: String,
    name: String,
    events: Vec<dns_types::history::NameEvent>,
}

async fn show(datastore: &db_model::Datastore) -> anyhow::Result<ShowReport> {
    let mut groups = Vec::new();
    for group in DnsGroup::ALL {
        let recent_versions = datastore.dns_versions_list(group, Some(RECENT_VERSIONS)).await?;
        let latest = datastore.dns_version_latest(group).await?;
        // Zone sizes from the digest state stored with the generation (no
        // need to read every name); in full for generations without one.
        let zones = match datastore.dns_digest_state(group, latest.generation).await? {
            Some(state) => state
                .zones()
                .iter()
                .map(|z| ZoneSize { zone_name: z.zone_name.clone(), names: z.names })
                .collect(),
            None => datastore
                .dns_config_read(group, Some(latest.generation))
                .await?
                .zones
                .iter()
                .map(|z| ZoneSize { zone_name: z.zone_name.clone(), names: z.names.len() as u64 })
                .collect(),
        };
        groups.push(GroupShow { group, latest, zones, recent_versions });
    }
    Ok(ShowReport { groups })
}

fn render_show(report: &ShowReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for g in &report.groups {
        let latest = &g.latest;
        let _ = writeln!(out, "{} DNS", g.group);
        for zone in &g.zones {
            let _ = writeln!(
                out,
                "  zone {}: {} at generation {}",
                zone.zone_name,
                nexus_types::count(zone.names, "name"),
                latest.generation
            );
        }
        let _ = writeln!(
            out,
            "  latest generation {}, created at {} by {}: {:?}",
            latest.generation,
            timestamp(latest.time_created),
            latest.creator,
            latest.comment
        );
        let _ = writeln!(out, "  recent generations:");
        let rows = g.recent_versions.iter().rev().map(|v| VersionRow {
            generation: v.generation,
            created: timestamp(v.time_created),
            creator: v.creator.clone(),
            comment: v.comment.clone(),
        });
        let _ = writeln!(out, "{}\n", table(rows, 4));
    }
    out
}

pub async fn run(args: &DbArgs, discovery: &Discovery, output: &Output) -> anyhow::Result<u8> {
    match &args.command {
        DbCommand::Status { patroni_api } => {
            crate::db_status::run(discovery, patroni_api, output).await
        }
        DbCommand::Dns(command) => {
            let datastore = discovery.datastore().await?;
            dns(command, &datastore, output).await.map(|()| 0)
        }
    }
}

async fn dns(
    command: &DbDnsCommand,
    datastore: &db_model::Datastore,
    output: &Output,
) -> anyhow::Result<()> {
    match command {
        DbDnsCommand::Show => {
            let report = show(datastore).await?;
            if output.json {
                return output.json(&report);
            }
            out!("{}", render_show(&report));
            Ok(())
        }
        DbDnsCommand::Diff { group, version } => {
            if *version < 2 {
                bail!(
                    "generation {version} has no predecessor to diff against; `omdb db dns names {group} {version}` shows its contents"
                );
            }
            let diff = datastore.dns_diff(*group, version - 1, *version).await?;
            if output.json {
                return output.json(&diff);
            }
            let this = datastore.dns_version(*group, *version).await?;
            outln!("{group} DNS, generation {} (against {})", version, version - 1);
            outln!("  created at {} by {}", timestamp(this.time_created), this.creator);
            outln!("  comment: {:?}", this.comment);
            if diff.zones.is_empty() {
                outln!("  no names changed");
            }
            for zone in &diff.zones {
                outln!("  zone {}:", zone.zone_name);
                for name in &zone.names {
                    for record in name.removed_records() {
                        outln!("    - {:<40} {record}", name.name);
                    }
                    for record in name.added_records() {
                        outln!("    + {:<40} {record}", name.name);
                    }
                }
            }
            Ok(())
        }
        DbDnsCommand::History { group, name } => {
            let zones: Vec<String> = datastore
                .dns_zones()
                .await?
                .into_iter()
                .filter(|z| z.group == *group)
                .map(|z| z.zone_name)
                .collect();
            let zone_refs: Vec<&str> = zones.iter().map(String::as_str).collect();
            let (index, relative) = dns_types::names::resolve_in_zones(name, &zone_refs)
                .map_err(|e| anyhow::anyhow!("{name:?}: {e}"))?;
            let zone = &zones[index];
            let stretches = datastore.dns_name_history(zone, &relative).await?;
            let events = dns_types::history::name_events(&stretches);
            if output.json {
                return output.json(&NameHistoryReport {
                    group: *group,
                    zone: zone.clone(),
                    name: relative.clone(),
                    events,
                });
            }
            let fqdn = if relative == "@" { zone.clone() } else { format!("{relative}.{zone}") };
            if events.is_empty() {
                outln!("{fqdn} ({group} DNS): never existed in any generation");
            } else {
                outln!(
                    "{fqdn} ({group} DNS), {}:",
                    nexus_types::count(events.len() as u64, "event")
                );
                outln!("{}", crate::explain::render::history_rows(&events));
            }
            Ok(())
        }
        DbDnsCommand::Names { group, version } => {
            let config = datastore.dns_config_read(*group, Some(*version)).await?;
            if output.json {
                return output.json(&config);
            }
            outln!(
                "{group} DNS, generation {} (created at {} by {}: {:?})",
                config.generation,
                timestamp(config.time_created),
                config.creator,
                config.comment
            );
            for zone in &config.zones {
                outln!(
                    "  zone {} (TTL {}s), {}:",
                    zone.zone_name,
                    zone.ttl_seconds,
                    nexus_types::count(zone.names.len() as u64, "name")
                );
                let rows = zone.names.iter().flat_map(|(name, records)| {
                    records
                        .iter()
                        .map(move |r| NameRow { name: name.clone(), record: r.to_string() })
                });
                outln!("{}", table(rows, 4));
            }
            Ok(())
        }
    }
}
