//! `omdb -w nexus dns add/remove [--wait]`: a change through Nexus, and with
//! `--wait` a receipt from every server of the group that serves it.

use super::*;
use std::fmt::Write;

/// Exit status of a change that was committed but not served by every
/// server of its group within `--timeout`.
pub const EXIT_NOT_SERVED_EVERYWHERE: u8 = 4;

/// How long a change is retried while Nexus says the database is
/// unavailable or the commit's outcome is unknown: longer than a failover
/// of the replicated database takes (`docs/database.md`).
pub const CHANGE_RETRY_FOR: Duration = Duration::from_secs(30);

/// Sends `change` to Nexus at `url` with an idempotency key of its own, and
/// sends it again (same key) while the answer leaves the outcome open: the
/// database unavailable (a failover), the commit's outcome unknown, or no
/// answer at all.  The key makes that safe: a change that did commit is
/// answered with its generation, not applied twice.  A refusal (4xx) is
/// final.
pub(super) async fn send_change(
    discovery: &Discovery,
    writer: &nexus_client::Client,
    url: &str,
    group: DnsGroup,
    mut change: DnsChange,
) -> anyhow::Result<DnsVersion> {
    let key =
        change.idempotency_key.get_or_insert_with(|| uuid::Uuid::new_v4().to_string()).clone();
    let deadline = tokio::time::Instant::now() + CHANGE_RETRY_FOR;
    let mut attempt = 1u32;
    loop {
        let error = match writer.dns_change().group(group).body(change.clone()).send().await {
            Ok(version) => return Ok(version.into_inner()),
            Err(error) => error,
        };
        let retry = match &error {
            nexus_client::Error::ErrorResponse(response) => response.status().is_server_error(),
            nexus_client::Error::CommunicationError(_) => true,
            _ => false,
        };
        let mut error = nexus_error(error, url);
        if retry {
            // Say why, from the database itself, rather than a bare timeout.
            if let Some(why) = database_blocks_writes(discovery).await {
                error = anyhow::anyhow!("{error:#}; the database says: {why}");
            }
        }
        if !retry || tokio::time::Instant::now() >= deadline {
            return Err(error);
        }
        let pause = Duration::from_millis(250 * u64::from(attempt.min(8)));
        note(format!(
            "{error:#}; sending the change again in {pause:?} with the same idempotency key \
             {key} (attempt {}; a change that did commit is not applied twice)",
            attempt + 1
        ));
        tokio::time::sleep(pause).await;
        attempt += 1;
    }
}

/// Why the database cannot acknowledge a commit now, if it cannot (asked
/// directly, each node within the usual timeout); `None` when it can, or
/// when it cannot be found.
async fn database_blocks_writes(discovery: &Discovery) -> Option<String> {
    let url = discovery.db_url().await.ok()?;
    let nodes = db_model::cluster::node_statuses(&url, crate::discovery::TIMEOUT).await.ok()?;
    let writes = db_model::cluster::writes(&nodes);
    (!writes.can_commit).then_some(writes.sentence)
}

/// What `--wait` found: the change, a receipt per server that serves it,
/// and the servers that did not within the limit.
#[derive(serde::Serialize)]
pub(super) struct Receipts {
    change: DnsVersion,
    waited_secs: f64,
    served: Vec<Receipt>,
    pub(super) missing: Vec<Missing>,
}

#[derive(serde::Serialize)]
struct Receipt {
    /// The server's config API address.
    #[serde(rename = "config_api")]
    server: SocketAddr,
    id: uuid::Uuid,
    generation: u64,
    applied_at: Option<DateTime<Utc>>,
    digest: Option<String>,
}

#[derive(serde::Serialize)]
pub(super) struct Missing {
    /// The server's config API address.
    #[serde(rename = "config_api")]
    server: SocketAddr,
    /// What the server last said, or why it could not be asked.
    last_seen: String,
}

/// Polls every server of `group` (found in internal DNS) until each serves
/// `version`'s generation or later, or `timeout_secs` pass: the servers are
/// asked at once, each question bounded by the time left, so a hung server
/// cannot stretch the wait past the limit.
pub(super) async fn wait_until_served(
    discovery: &Discovery,
    group: DnsGroup,
    version: &DnsVersion,
    timeout_secs: u64,
) -> anyhow::Result<Receipts> {
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_secs);
    let servers =
        tokio::time::timeout_at(deadline, discovery.dns_servers(group)).await.map_err(|_| {
            anyhow::anyhow!(
                "finding the {group} DNS servers took longer than --timeout {timeout_secs}s"
            )
        })??;
    let mut served: Vec<Receipt> = Vec::new();
    let mut last_seen: BTreeMap<SocketAddr, String> = BTreeMap::new();
    loop {
        let pending = servers.iter().filter(|(a, _)| !served.iter().any(|r| r.server == *a));
        let asked = futures::future::join_all(pending.map(|(address, _)| async move {
            let client = dns_server_client::Client::new_with_client(
                &format!("http://{address}"),
                http_client(),
            );
            let answer = tokio::time::timeout_at(deadline, client.status_get().send()).await;
            (*address, answer)
        }))
        .await;
        for (address, answer) in asked {
            match answer {
                Ok(Ok(status)) if status.generation >= version.generation => {
                    served.push(Receipt {
                        server: address,
                        id: status.id,
                        generation: status.generation,
                        applied_at: status.time_applied,
                        digest: status.applied_config_digest.clone(),
                    });
                }
                Ok(Ok(status)) => {
                    last_seen.insert(address, format!("serves generation {}", status.generation));
                }
                Ok(Err(e)) => {
                    last_seen
                        .insert(address, format!("did not answer: {}", dns_types::error_chain(&e)));
                }
                Err(_) => {
                    last_seen.entry(address).or_insert_with(|| {
                        format!("did not answer within --timeout {timeout_secs}s")
                    });
                }
            }
        }
        if served.len() == servers.len() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep_until(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(100)),
        )
        .await;
    }
    served.sort_by_key(|r| r.server);
    let missing = servers
        .iter()
        .filter(|(address, _)| !served.iter().any(|r| r.server == *address))
        .map(|(address, _)| Missing {
            server: *address,
            last_seen: last_seen.get(address).cloned().unwrap_or_else(|| "not asked".into()),
        })
        .collect();
    Ok(Receipts {
        change: version.clone(),
        waited_secs: started.elapsed().as_secs_f64(),
        served,
        missing,
    })
}

/// "created GROUP DNS generation N at T (creator C): COMMENT"
pub(super) fn created_line(v: &DnsVersion) -> String {
    format!(
        "created {} DNS generation {} at {} (creator {}): {:?}",
        v.group,
        v.generation,
        timestamp(v.time_created),
        v.creator,
        v.comment
    )
}

impl Receipts {
    /// What the wait did not see, as an error line; `None` when every
    /// server serves the change.  The change itself stands either way.
    pub(super) fn shortfall(&self) -> Option<String> {
        (!self.missing.is_empty()).then(|| {
            format!(
                "generation {} is committed but not served by {} of {} {} DNS servers after \
                 {:.1}s; propagation goes on (omdb dns status {})",
                self.change.generation,
                self.missing.len(),
                self.missing.len() + self.served.len(),
                self.change.group,
                self.waited_secs,
                self.change.group
            )
        })
    }
}

pub(super) fn render_receipts(receipts: &Receipts) -> String {
    let mut out = String::new();
    let v = &receipts.change;
    let _ = writeln!(out, "{}", created_line(v));
    let total = receipts.served.len() + receipts.missing.len();
    let _ = writeln!(
        out,
        "served by {} of {total} {} DNS servers after {:.1}s:",
        receipts.served.len(),
        v.group,
        receipts.waited_secs
    );
    for r in &receipts.served {
        let _ = writeln!(
            out,
            "  config API {}  id {}  generation {}  applied at {}  digest {}",
            r.server,
            r.id,
            r.generation,
            r.applied_at.map(timestamp).unwrap_or_else(|| "-".into()),
            r.digest.as_deref().unwrap_or("-")
        );
    }
    for m in &receipts.missing {
        let _ = writeln!(out, "  NOT SERVED by config API {}: {}", m.server, m.last_seen);
    }
    out
}
