//! The server's config: what is served now, and the rules for replacing it.
//!
//! Updates are serialized by one lock and follow the generation rules:
//! newer → applied; same generation and same content → nothing to do;
//! older, or same generation with other content → rejected.  A new config is
//! validated, compiled and stored durably before it is swapped in with one
//! pointer assignment, so queries never wait for an update and never see
//! two generations at once.

use crate::storage::{Storage, StorageError};
use crate::zone::{CompileError, Served};
use chrono::{DateTime, Utc};
use dns_types::{ConfigError, DnsConfig};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("invalid config")]
    Invalid(#[from] ConfigError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("this server is at generation {current}; refusing generation {requested}: {reason}")]
    BadGeneration { current: u64, requested: u64, reason: &'static str },
    #[error("{0}; nothing changed")]
    Internal(String),
    #[error("storing the new config failed; still serving generation {current}")]
    Storage {
        current: u64,
        #[source]
        source: StorageError,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    Applied,
    AlreadyApplied,
}

pub struct ServerState {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
    pub dns_addresses: Vec<SocketAddr>,
    storage: Storage,
    served: RwLock<Arc<Served>>,
    update_lock: tokio::sync::Mutex<()>,
}

impl ServerState {
    /// Loads the stored config, if any, so that the server answers from it
    /// right away.
    pub fn load(
        id: Uuid,
        storage: Storage,
        dns_addresses: Vec<SocketAddr>,
    ) -> Result<ServerState, anyhow::Error> {
        let served = match storage.load()? {
            None => Served::empty(),
            Some(stored) => {
                stored.config.validate()?;
                Served::compile(stored.config, stored.time_applied)?
            }
        };
        tracing::info!(generation = served.generation(), "loaded stored config");
        release_free_memory();
        Ok(ServerState {
            id,
            started_at: Utc::now(),
            dns_addresses,
            storage,
            served: RwLock::new(Arc::new(served)),
            update_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// What is served right now.
    pub fn served(&self) -> Arc<Served> {
        self.served.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies `config` if the generation rules allow it.
    pub async fn update(self: &Arc<Self>, config: DnsConfig) -> Result<UpdateOutcome, UpdateError> {
        config.validate()?;
        let _guard = self.update_lock.lock().await;
        let current = self.served();
        let current_generation = current.generation();
        let requested = config.generation;
        if requested < current_generation {
            return Err(UpdateError::BadGeneration {
                current: current_generation,
                requested,
                reason: "it is older",
            });
        }
        if requested == current_generation {
            let same = current
                .applied
                .as_ref()
                .is_some_and(|a| a.digest == dns_types::config_digest(&config));
            // Generation 0 with no zones is what an empty server serves.
            let both_empty = current.applied.is_none() && config.zones.is_empty();
            return if same || both_empty {
                Ok(UpdateOutcome::AlreadyApplied)
            } else {
                Err(UpdateError::BadGeneration {
                    current: current_generation,
                    requested,
                    reason: "same generation with different content",
                })
            };
        }

        // Compiling and storing a large config takes a while: do it on a
        // blocking thread, while queries keep being answered from the
        // current config.
        let this = self.clone();
        let served = tokio::task::spawn_blocking(move || {
            let served = Served::compile(config, Utc::now())?;
            let applied = served.applied.as_ref().expect("a compiled config is applied");
            this.storage
                .save(&applied.config, applied.time_applied)
                .map_err(|source| UpdateError::Storage { current: current_generation, source })?;
            Ok::<_, UpdateError>(served)
        })
        .await
        .map_err(|e| UpdateError::Internal(format!("applying the config failed: {e}")))??;
        let previous = std::mem::replace(
            &mut *self.served.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(served),
        );
        drop((previous, current));
        release_free_memory();
        tracing::info!(generation = requested, previous = current_generation, "applied new config");
        Ok(UpdateOutcome::Applied)
    }
}

/// Hands memory freed by the previous config (and by decoding the new one)
/// back to the operating system.  Without this, glibc keeps most of it in
/// per-thread arenas and a server that applied a few large configs looks
/// several times bigger than what it serves.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
