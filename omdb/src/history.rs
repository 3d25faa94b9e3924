//! Gathering the pipeline's histories: each DNS server's apply history and
//! each Nexus's propagation history, kept as observations (with the error
//! when a part could not be asked) for `dns timeline`, `dns explain --at`,
//! the recent events the live explain names, and bundles.

use crate::discovery::http_client;
use chrono::{DateTime, Utc};
use dns_server_client::types::DnsServerStatus;
use dns_types::DnsGroup;
use dns_types::apply_history::ServerHistory;
use nexus_types::propagation_history::NexusHistory;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use uuid::Uuid;

/// One server's history (a window of it), and its status now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerHistoryObservation {
    pub config_address: SocketAddr,
    pub asked_at: DateTime<Utc>,
    pub status: Option<DnsServerStatus>,
    pub history: Option<ServerHistory>,
    /// Why the server (or its history) could not be read.
    pub error: Option<String>,
}

/// Which events of a server's history to read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: u32,
}

pub async fn server_history(address: SocketAddr, windows: &[Window]) -> ServerHistoryObservation {
    let asked_at = Utc::now();
    let client =
        dns_server_client::Client::new_with_client(&format!("http://{address}"), http_client());
    let mut observation = ServerHistoryObservation {
        config_address: address,
        asked_at,
        status: None,
        history: None,
        error: None,
    };
    let reads = windows.iter().map(|w| {
        let mut request = client.history_get().limit(w.limit);
        if let Some(since) = w.since {
            request = request.since(since);
        }
        if let Some(until) = w.until {
            request = request.until(until);
        }
        request.send()
    });
    let (status, histories) =
        futures::join!(client.status_get().send(), futures::future::join_all(reads));
    match status {
        Ok(status) => observation.status = Some(status.into_inner()),
        Err(e) => observation.error = Some(dns_types::error_chain(&e)),
    }
    for history in histories {
        match history {
            Ok(h) => {
                let h = h.into_inner();
                match &mut observation.history {
                    None => observation.history = Some(h),
                    Some(merged) => {
                        merged.events.extend(h.events);
                        merged.events.sort_by_key(|e| std::cmp::Reverse(e.seq));
                        merged.events.dedup_by_key(|e| e.seq);
                    }
                }
            }
            Err(e) if observation.error.is_none() => {
                observation.error = Some(format!("its history: {}", dns_types::error_chain(&e)))
            }
            Err(_) => {}
        }
    }
    observation
}

/// One Nexus's propagation history of a group (a window of it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NexusHistoryObservation {
    pub url: String,
    pub id: Option<Uuid>,
    pub asked_at: DateTime<Utc>,
    pub history: Option<NexusHistory>,
    pub error: Option<String>,
}

/// Which generations of a Nexus's history to read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Generations {
    pub generation: Option<u64>,
    pub since_generation: Option<u64>,
    pub limit: u32,
}

pub async fn nexus_history(
    url: &str,
    group: DnsGroup,
    which: Generations,
) -> NexusHistoryObservation {
    let asked_at = Utc::now();
    let client = nexus_client::Client::new_with_client(url, http_client());
    let mut request = client.dns_history().group(group).limit(which.limit);
    if let Some(g) = which.generation {
        request = request.generation(g);
    }
    if let Some(g) = which.since_generation {
        request = request.since_generation(g);
    }
    match request.send().await {
        Ok(h) => {
            let h = h.into_inner();
            NexusHistoryObservation {
                url: url.to_string(),
                id: Some(h.nexus_id),
                asked_at,
                history: Some(h),
                error: None,
            }
        }
        Err(e) => NexusHistoryObservation {
            url: url.to_string(),
            id: None,
            asked_at,
            history: None,
            error: Some(dns_types::error_chain(&e)),
        },
    }
}
