//! `omdb nexus ...`: a Nexus's background tasks, and DNS changes through it.
//!
//! - [`tasks`]: `background-tasks doc`, `list` and `show` (one Nexus), and
//!   how a task is rendered;
//! - [`agreement`]: `show --all-nexus`, every Nexus side by side and
//!   whether they agree with each other and the database;
//! - [`activate`]: `background-tasks activate [--wait]`;
//! - [`change`]: `nexus dns add/remove [--wait]` and the receipts.

mod activate;
mod agreement;
mod change;
mod tasks;

pub use change::EXIT_NOT_SERVED_EVERYWHERE;
pub use tasks::{View, render_tasks};

use crate::discovery::{Discovery, http_client, note};
use crate::format::{Output, period, table, timestamp, timestamp_ago};
use anyhow::{Context, bail};
use background_task_types::{ActivationRecord, BackgroundTask, CurrentStatus, LastActivation};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use dns_types::{DnsChange, DnsGroup, DnsRecord, DnsVersion, NameRecords, NameRemoval};
use nexus_types::lints::{DEFAULT_STUCK_AFTER, Lint, lint};
use nexus_types::task_name::DnsTaskName;
use nexus_types::task_status::{DnsPropagationStatus, PropagationResult};
use nexus_types::task_view::DnsTaskView;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Args)]
pub struct NexusArgs {
    #[command(subcommand)]
    command: NexusCommand,
}

#[derive(Subcommand)]
enum NexusCommand {
    /// Background tasks: what they are and what they last did.
    #[command(name = "background-tasks", subcommand)]
    BackgroundTasks(TasksCommand),
    /// Change DNS data through Nexus (needs -w).
    #[command(subcommand)]
    Dns(DnsCommand),
}

#[derive(Subcommand)]
enum TasksCommand {
    /// What each task is for.
    Doc,
    /// The tasks, with their period, state and lints.
    List {
        /// A running task counts as stuck after this long.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_STUCK_AFTER.as_secs())]
        stuck_after: u64,
    },
    /// What tasks last did: `all`, `dns_internal`, `dns_external`, or task names.
    Show {
        #[arg(default_value = "all")]
        tasks: Vec<String>,
        /// Ask every Nexus found in DNS, one after the other.
        #[arg(long)]
        all_nexus: bool,
        /// Also list each task's recent activations.
        #[arg(long)]
        history: bool,
        /// A running task counts as stuck after this long.
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_STUCK_AFTER.as_secs())]
        stuck_after: u64,
    },
    /// Activate tasks now.
    Activate {
        #[arg(required = true)]
        tasks: Vec<String>,
        /// Wait for the activations to complete and show their results.
        #[arg(long)]
        wait: bool,
        /// With --wait: how long to wait before saying what is still running.
        #[arg(long, value_name = "SECS", default_value_t = 30, requires = "wait")]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum DnsCommand {
    /// Add a record to a name (creating the name): one new generation.
    Add {
        group: DnsGroup,
        /// Relative to the group's zone (`@` for the apex), or absolute.
        name: String,
        /// A, AAAA, SRV, NS, CNAME or TXT.
        #[arg(value_name = "TYPE")]
        rtype: String,
        /// The record data, e.g. `fd00::1` or "0 0 12221 host.example.test".
        data: String,
        /// Why the change is made (stored with the generation).
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove a name with all its records: one new generation.
    Remove {
        group: DnsGroup,
        name: String,
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Args, Clone, Copy)]
struct WaitArgs {
    /// Return only when every DNS server of the group serves the new
    /// generation, with a receipt per server (exit status 4 naming the
    /// servers that did not, within --timeout).
    #[arg(long)]
    wait: bool,
    /// With --wait: how long to wait.
    #[arg(long, value_name = "SECS", default_value_t = 30, requires = "wait")]
    timeout: u64,
}

pub(crate) fn client(url: &str) -> nexus_client::Client {
    nexus_client::Client::new_with_client(url, http_client())
}

pub async fn run(
    args: &NexusArgs,
    discovery: &Discovery,
    output: &Output,
    writes: &crate::WriteAccess,
) -> anyhow::Result<u8> {
    match &args.command {
        NexusCommand::BackgroundTasks(TasksCommand::Show {
            tasks,
            all_nexus: true,
            history,
            stuck_after,
        }) => {
            let view = View {
                history: *history,
                stuck_after: Duration::from_secs(*stuck_after),
                ..View::default()
            };
            agreement::show_all_nexus(discovery, tasks, output, view).await.map(|()| 0)
        }
        NexusCommand::BackgroundTasks(command) => {
            // A write is refused before anything is looked up.
            let token = match command {
                TasksCommand::Activate { .. } => Some(writes.token("activating background tasks")?),
                _ => None,
            };
            let url = discovery.nexus_url().await?;
            let nexus = client(&url);
            match command {
                TasksCommand::Doc => tasks::doc(&nexus, &url, output).await.map(|()| 0),
                TasksCommand::List { stuck_after } => {
                    tasks::list(&nexus, &url, output, Duration::from_secs(*stuck_after))
                        .await
                        .map(|()| 0)
                }
                TasksCommand::Show { tasks, history, stuck_after, .. } => {
                    let statuses = fetch(&nexus, &url).await?;
                    let selected = select(&statuses, tasks)?;
                    // A config task is compared with the database, so that
                    // one that has not noticed a generation is a lint.
                    let configs = selected.iter().any(|t| {
                        t.name.parse::<nexus_types::task_name::DnsTaskName>().is_ok_and(|n| {
                            n == nexus_types::task_name::DnsTaskName::config(n.group)
                        })
                    });
                    let database_latest = match configs && !output.json {
                        true => tasks::DatabaseLatest::read(discovery).await,
                        false => tasks::DatabaseLatest::default(),
                    };
                    let view = View {
                        history: *history,
                        stuck_after: Duration::from_secs(*stuck_after),
                        database_latest,
                    };
                    if output.json {
                        output.json(
                            &selected.iter().map(|t| (&t.name, t)).collect::<BTreeMap<_, _>>(),
                        )?;
                        return Ok(0);
                    }
                    out!("{}", render_tasks(&selected, view));
                    Ok(0)
                }
                TasksCommand::Activate { tasks, wait, timeout } => {
                    let token = token.expect("checked above");
                    activate::activate(&nexus, &token, &url, tasks, *wait, *timeout, output)
                        .await
                        .map(|()| 0)
                }
            }
        }
        NexusCommand::Dns(command) => {
            let token = writes.token("changing DNS data")?;
            let (group, change, wait) = match command {
                DnsCommand::Add { group, name, rtype, data, comment, wait } => {
                    let record = DnsRecord::parse(rtype, data)?;
                    let add = vec![NameRecords { name: name.clone(), records: vec![record] }];
                    (
                        *group,
                        DnsChange {
                            idempotency_key: None,
                            comment: comment.clone(),
                            add,
                            remove: vec![],
                        },
                        *wait,
                    )
                }
                DnsCommand::Remove { group, name, comment, wait } => {
                    let remove = vec![NameRemoval { name: name.clone(), records: None }];
                    (
                        *group,
                        DnsChange {
                            idempotency_key: None,
                            comment: comment.clone(),
                            add: vec![],
                            remove,
                        },
                        *wait,
                    )
                }
            };
            let url = discovery.nexus_url().await?;
            let writer = nexus_client::Client::new_with_client(
                &url,
                token
                    .client_builder()
                    .connect_timeout(crate::discovery::TIMEOUT)
                    .timeout(crate::discovery::TIMEOUT)
                    .build()?,
            );
            let version = change::send_change(discovery, &writer, &url, group, change).await?;
            if wait.wait {
                let receipts =
                    change::wait_until_served(discovery, group, &version, wait.timeout).await?;
                let code = match receipts.missing.is_empty() {
                    true => 0,
                    false => EXIT_NOT_SERVED_EVERYWHERE,
                };
                if output.json {
                    output.json(&receipts)?;
                } else {
                    out!("{}", change::render_receipts(&receipts));
                }
                if let Some(shortfall) = receipts.shortfall() {
                    eprintln!("error: {shortfall}");
                }
                return Ok(code);
            }
            if output.json {
                output.json(&version)?;
                return Ok(0);
            }
            outln!("{}", change::created_line(&version));
            outln!("propagation has started: omdb nexus background-tasks show dns_{group}");
            Ok(0)
        }
    }
}

/// A Nexus client error as one line naming the Nexus.
pub(crate) fn nexus_error(
    error: nexus_client::Error<nexus_client::types::Error>,
    url: &str,
) -> anyhow::Error {
    match error {
        nexus_client::Error::ErrorResponse(response) => anyhow::anyhow!(
            "Nexus at {url} refused: HTTP {} {}: {}",
            response.status().as_u16(),
            response.error_code.as_deref().unwrap_or(""),
            response.message
        ),
        nexus_client::Error::CommunicationError(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            anyhow::anyhow!(
                "could not talk to Nexus at {url} (pass another with --nexus-internal-url): {message}"
            )
        }
        other => anyhow::anyhow!("talking to Nexus at {url}: {other}"),
    }
}

pub(crate) async fn fetch(
    nexus: &nexus_client::Client,
    url: &str,
) -> anyhow::Result<BTreeMap<String, BackgroundTask>> {
    Ok(nexus
        .bgtask_list()
        .send()
        .await
        .map_err(|e| nexus_error(e, url))?
        .into_inner()
        .into_iter()
        .collect())
}

/// The tasks named by `selectors`: `all`, `dns_internal` / `dns_external`
/// (the three tasks of the group, in pipeline order), or task names.
pub(crate) fn select<'a>(
    tasks: &'a BTreeMap<String, BackgroundTask>,
    selectors: &[String],
) -> anyhow::Result<Vec<&'a BackgroundTask>> {
    let mut selected: Vec<&BackgroundTask> = Vec::new();
    for selector in selectors {
        let group =
            DnsGroup::ALL.into_iter().find(|g| *selector == DnsTaskName::group_selector(*g));
        let names: Vec<String> = match (selector.as_str(), group) {
            ("all", _) => tasks.keys().cloned().collect(),
            (_, Some(group)) => {
                DnsTaskName::of_group(group).iter().map(|t| t.to_string()).collect()
            }
            (name, None) => vec![name.to_string()],
        };
        for name in names {
            let task = tasks.get(&name).with_context(|| {
                format!(
                    "no background task named {name:?} (known: all, dns_internal, dns_external, {})",
                    tasks.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            if !selected.iter().any(|t| t.name == task.name) {
                selected.push(task);
            }
        }
    }
    Ok(selected)
}
