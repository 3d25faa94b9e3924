//! `omdb -w nexus dns add/remove [--wait]`: a change through Nexus, and with
//! `--wait` a receipt from every server of the group that serves it.

use super::*;
use std::fmt::Write;

/// Exit status of a change that was committed but not served by every
/// server of its group within `--timeout`.
pub const EXIT_NOT_SERVED_EVERYWHERE: u8 = 4;

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
