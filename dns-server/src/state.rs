//! The server's config: what is served now, and the rules for replacing it.
//!
//! Updates are serialized by one lock and follow the generation rules:
//! newer → applied; same generation and same content → nothing to do;
//! older, or same generation with other content → rejected.  A new config is
//! validated, compiled and stored durably before it is swapped in with one
//! pointer assignment, so queries never wait for an update and never see
//! two generations at once.

use crate::storage::{Storage, StorageError};
use crate::zone::{ApplyDiffError, CompileError, Served};
use chrono::{DateTime, Utc};
use dns_server_api::{ConfigRepair, RepairRecord, ServedIdentity, error_codes};
use dns_types::apply_history::{ApplyHow, HistoryEntry, ServerEvent, ServerHistory};
use dns_types::{ConfigDiff, ConfigError, DiffError, DnsConfig};
use event_log::EventLog;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The difference does not apply to what is served, or its result
    /// would not have its digest: the caller sends the whole config.
    #[error("difference not applied; send the whole config")]
    DiffNotApplicable(#[source] DiffError),
    #[error("storing the new config failed; still serving generation {current}")]
    Storage {
        current: u64,
        #[source]
        source: StorageError,
    },
    #[error(
        "repair refused: it replaces generation {expected} (digest {}), but this server serves \
         generation {current} (digest {}); ask its status again",
        expected_digest.as_deref().unwrap_or("none"), current_digest.as_deref().unwrap_or("none")
    )]
    RepairPrecondition {
        expected: u64,
        expected_digest: Option<String>,
        current: u64,
        current_digest: Option<String>,
    },
}

impl UpdateError {
    /// The stable error code a caller gets for this error (and the history
    /// keeps).
    pub fn error_code(&self) -> &'static str {
        match self {
            UpdateError::Invalid(_) | UpdateError::Compile(_) => error_codes::INVALID_CONFIG,
            UpdateError::BadGeneration { .. } => error_codes::BAD_UPDATE_GENERATION,
            UpdateError::RepairPrecondition { .. } => error_codes::REPAIR_PRECONDITION,
            UpdateError::DiffNotApplicable(DiffError::DigestMismatch { .. }) => {
                error_codes::DIFF_DIGEST_MISMATCH
            }
            UpdateError::DiffNotApplicable(DiffError::Invalid(_)) => error_codes::INVALID_CONFIG,
            UpdateError::DiffNotApplicable(_) => error_codes::DIFF_BASE_MISMATCH,
            UpdateError::Storage { .. } => error_codes::STORAGE,
            UpdateError::Internal(_) => "Internal",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    Applied,
    AlreadyApplied,
}

/// What one successful write changed: kept in the history.
struct Change {
    generation: u64,
    digest: String,
    replaced: ServedIdentity,
    time_applied: DateTime<Utc>,
}

/// How many events the apply history keeps unless told otherwise.
pub const DEFAULT_HISTORY_EVENTS: usize = 10_000;

pub struct ServerState {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
    pub dns_addresses: Vec<SocketAddr>,
    /// Required by every write to the config API.
    pub api_token: api_auth::ApiToken,
    /// Requests being handled (their connections are not idle).
    pub in_flight: http_idle::InFlight,
    pub metrics: crate::metrics::Metrics,
    /// Whether CHAOS `version.server` / `version.bind` are answered.
    pub answer_version: bool,
    /// The opt-in query log.
    pub query_log: Option<crate::query_log::QueryLog>,
    /// Who may transfer zones (AXFR, IXFR over TCP): address ranges.
    pub transfer_allow: Vec<crate::AddressRange>,
    storage: Storage,
    served: RwLock<Arc<Served>>,
    /// Bumped each time `served` is replaced, so that the UDP loops keep a
    /// weak reference and look at one atomic per batch of queries instead
    /// of taking the lock and a reference count that both cores share.
    served_version: AtomicU64,
    update_lock: tokio::sync::Mutex<()>,
    last_repair: std::sync::Mutex<Option<RepairRecord>>,
    /// Every apply, refusal, start and storage failure (`GET /history`).
    history: Arc<EventLog<ServerEvent>>,
    /// Bounds the `GET /config` reads running at once.
    readers: tokio::sync::Semaphore,
}

impl ServerState {
    /// Loads the stored config, if any, so that the server answers from it
    /// right away.
    pub fn load(
        id: Uuid,
        storage: Storage,
        dns_addresses: Vec<SocketAddr>,
        api_token: api_auth::ApiToken,
    ) -> Result<ServerState, anyhow::Error> {
        Self::load_with_history(id, storage, dns_addresses, api_token, DEFAULT_HISTORY_EVENTS)
    }

    /// [`ServerState::load`], keeping `history_events` events of history;
    /// records the start in it.
    pub fn load_with_history(
        id: Uuid,
        storage: Storage,
        dns_addresses: Vec<SocketAddr>,
        api_token: api_auth::ApiToken,
        history_events: usize,
    ) -> Result<ServerState, anyhow::Error> {
        let (history, report) = EventLog::open(&storage.history_path(), history_events)?;
        let loaded = storage.load();
        if let Err(e) = &loaded {
            let event = ServerEvent::StorageFailed {
                operation: "loading the stored config at start-up".into(),
                error: dns_types::error_chain(e),
            };
            let _ = history.append(Utc::now(), event);
        }
        let served = match loaded? {
            None => Served::empty(),
            Some(stored) => {
                stored.config.validate()?;
                Served::compile(&stored.config, stored.time_applied)?
            }
        };
        tracing::info!(generation = served.generation(), "loaded stored config");
        if report.damaged_lines > 0 {
            tracing::warn!(
                damaged_lines = report.damaged_lines,
                path = %storage.history_path().display(),
                "skipped damaged lines of the apply history"
            );
        }
        let started = ServerEvent::Started {
            generation: served.generation(),
            digest: served.applied.as_ref().map(|a| a.digest.clone()),
            time_applied: served.applied.as_ref().map(|a| a.time_applied),
            damaged_history_lines: report.damaged_lines as u64,
        };
        if let Err(e) = history.append(Utc::now(), started) {
            tracing::warn!(error = %dns_types::error_chain(&e), "could not record the start in the history");
        }
        // The last repair survives restarts: the history has it.
        let last_repair = history.all().into_iter().rev().find_map(|entry| match entry.event {
            ServerEvent::Applied {
                generation,
                digest,
                how: ApplyHow::Repair,
                replaced_generation,
                replaced_digest,
                reason,
                ..
            } => Some(RepairRecord {
                repaired_at: entry.time,
                replaced: ServedIdentity {
                    generation: replaced_generation,
                    digest: replaced_digest,
                },
                generation,
                digest,
                reason: reason.unwrap_or_default(),
            }),
            _ => None,
        });
        release_free_memory();
        Ok(ServerState {
            id,
            started_at: Utc::now(),
            dns_addresses,
            api_token,
            in_flight: http_idle::InFlight::default(),
            metrics: crate::metrics::Metrics::new(),
            answer_version: false,
            query_log: None,
            transfer_allow: crate::AddressRange::loopback(),
            storage,
            served: RwLock::new(Arc::new(served)),
            served_version: AtomicU64::new(0),
            update_lock: tokio::sync::Mutex::new(()),
            last_repair: std::sync::Mutex::new(last_repair),
            history: Arc::new(history),
            readers: tokio::sync::Semaphore::new(4),
        })
    }

    /// The apply history, newest first (see `GET /history`).
    pub fn history(
        &self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        limit: usize,
    ) -> ServerHistory {
        let events: Vec<HistoryEntry> = self
            .history
            .newest_first(since, until, limit)
            .into_iter()
            .map(|e| HistoryEntry { seq: e.seq, time: e.time, event: e.event })
            .collect();
        let complete_since =
            self.history.oldest_retained().or_else(|| self.history.all().first().map(|e| e.time));
        ServerHistory {
            server_id: self.id,
            events,
            retained_events: self.history.retain() as u64,
            complete_since,
        }
    }

    /// Records `event` at `time` in the history (on a blocking thread: it
    /// is flushed to disk); a failure to record is logged, never fatal.
    async fn record(&self, time: DateTime<Utc>, event: ServerEvent) {
        let history = self.history.clone();
        let result = tokio::task::spawn_blocking(move || history.append(time, event)).await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %dns_types::error_chain(&e), "could not record in the apply history")
            }
            Err(e) => tracing::warn!(error = %e, "could not record in the apply history"),
        }
    }

    /// Records what became of one write.
    async fn record_write(
        &self,
        how: ApplyHow,
        requested: u64,
        writer: Option<String>,
        started: std::time::Instant,
        result: Result<Option<&Change>, &UpdateError>,
        reason: Option<String>,
    ) {
        let event = match result {
            Ok(None) => return,
            Ok(Some(change)) => ServerEvent::Applied {
                generation: change.generation,
                digest: change.digest.clone(),
                how,
                writer,
                replaced_generation: change.replaced.generation,
                replaced_digest: change.replaced.digest.clone(),
                apply_ms: started.elapsed().as_secs_f64() * 1000.0,
                reason,
            },
            Err(error @ (UpdateError::Storage { .. } | UpdateError::Internal(_))) => {
                ServerEvent::StorageFailed {
                    operation: format!("storing generation {requested} ({how})"),
                    error: dns_types::error_chain(error),
                }
            }
            Err(error) => ServerEvent::Refused {
                generation: requested,
                how,
                writer,
                error_code: error.error_code().to_string(),
                reason: dns_types::limits::bounded_text(
                    &dns_types::error_chain(error),
                    4 * dns_types::limits::MAX_NOTE_BYTES,
                ),
                served_generation: self.served().generation(),
            },
        };
        let time = match result {
            Ok(Some(change)) => change.time_applied,
            _ => Utc::now(),
        };
        self.record(time, event).await;
    }

    /// The answer to a CHAOS-class query about this server, if it is one
    /// we answer: TXT `id.server` and `hostname.bind` give the server's id
    /// (RFC 4892), `version.server` and `version.bind` its version when
    /// configured to.
    pub fn chaos_answer(
        &self,
        name: &hickory_proto::rr::LowerName,
        rtype: hickory_proto::rr::RecordType,
    ) -> Option<hickory_proto::rr::Record> {
        use hickory_proto::rr::{DNSClass, RData, Record, RecordType, rdata::TXT};
        if !matches!(rtype, RecordType::TXT | RecordType::ANY) {
            return None;
        }
        let text = match name.to_string().to_ascii_lowercase().as_str() {
            "id.server." | "hostname.bind." => self.id.to_string(),
            "version.server." | "version.bind." if self.answer_version => {
                format!("dns-server {}", env!("CARGO_PKG_VERSION"))
            }
            _ => return None,
        };
        let mut record =
            Record::from_rdata(name.clone().into(), 0, RData::TXT(TXT::new(vec![text])));
        record.dns_class = DNSClass::CH;
        Some(record)
    }

    /// Whether `client` may transfer zones.
    pub fn transfer_allowed(&self, client: std::net::IpAddr) -> bool {
        self.transfer_allow.iter().any(|range| range.contains(client))
    }

    /// The config served, with the time it was applied, as stored.  Read
    /// beside writes, never holding them up (anyone may read, and a slow
    /// reader must not stall propagation): what was read is checked against
    /// what is served (generation and time applied), and read again if a
    /// write landed meanwhile.  At most four reads at once.  `None` before
    /// any config.
    pub async fn applied_config(
        &self,
    ) -> Result<Option<dns_server_api::AppliedConfig>, StorageError> {
        let _reading = self.readers.acquire().await;
        for _ in 0..5 {
            let served = self.served();
            let Some(applied) = served.applied.as_ref() else { return Ok(None) };
            let (generation, time_applied) = (served.generation(), applied.time_applied);
            drop(served);
            let storage = self.storage.clone();
            let path = storage.path();
            let read = tokio::task::spawn_blocking(move || storage.read_applied())
                .await
                .unwrap_or_else(|e| {
                    Err(StorageError::Read { path, source: std::io::Error::other(e.to_string()) })
                })?;
            if let Some(read) = read
                && read.config.generation == generation
                && read.time_applied == time_applied
            {
                return Ok(Some(read));
            }
            // A write landed between reading what is served and reading
            // storage: read both again.
        }
        Err(StorageError::Read {
            path: self.storage.path(),
            source: std::io::Error::other(
                "the config changed during every one of five reads; try again",
            ),
        })
    }

    /// What is served right now.
    pub fn served(&self) -> Arc<Served> {
        self.served.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes each time what is served is replaced.
    pub fn served_version(&self) -> u64 {
        self.served_version.load(Ordering::Acquire)
    }

    /// Serves `served` from now on; returns what was served.
    fn serve(&self, served: Served) -> Arc<Served> {
        let mut current = self.served.write().unwrap_or_else(|e| e.into_inner());
        let previous = std::mem::replace(&mut *current, Arc::new(served));
        // Under the lock: whoever sees the new version finds the new config.
        self.served_version.fetch_add(1, Ordering::Release);
        previous
    }

    /// Applies `config` if the generation rules allow it; `writer` is who
    /// says it wrote it (kept in the history).
    pub async fn update(
        self: &Arc<Self>,
        config: DnsConfig,
        writer: Option<String>,
    ) -> Result<UpdateOutcome, UpdateError> {
        let (requested, started) = (config.generation, std::time::Instant::now());
        let names = config.zones.iter().map(|z| z.names.len()).sum();
        let result = self.update_inner(config).await;
        // Applied or refused, the decoded config is free now.
        after_large_write(names);
        self.record_write(
            ApplyHow::Whole,
            requested,
            writer,
            started,
            result.as_ref().map(Option::as_ref),
            None,
        )
        .await;
        result.map(outcome)
    }

    async fn update_inner(
        self: &Arc<Self>,
        config: DnsConfig,
    ) -> Result<Option<Change>, UpdateError> {
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
                Ok(None)
            } else {
                Err(UpdateError::BadGeneration {
                    current: current_generation,
                    requested,
                    reason: "same generation with different content",
                })
            };
        }
        let replaced = identity(&current);
        drop(current);
        let (digest, time_applied) = self.replace(config, current_generation).await?;
        tracing::info!(generation = requested, previous = current_generation, "applied new config");
        Ok(Some(Change { generation: requested, digest, replaced, time_applied }))
    }

    /// Applies a difference if the generation rules allow it, it leads from
    /// exactly what is served, and its result has its stated digest.
    pub async fn apply_diff(
        self: &Arc<Self>,
        diff: ConfigDiff,
        writer: Option<String>,
    ) -> Result<UpdateOutcome, UpdateError> {
        let (requested, started) = (diff.generation, std::time::Instant::now());
        let result = self.apply_diff_inner(diff).await;
        let recorded = result.as_ref().map(Option::as_ref);
        self.record_write(ApplyHow::Difference, requested, writer, started, recorded, None).await;
        result.map(outcome)
    }

    async fn apply_diff_inner(
        self: &Arc<Self>,
        diff: ConfigDiff,
    ) -> Result<Option<Change>, UpdateError> {
        diff.validate().map_err(|e| match e {
            DiffError::Invalid(e) => UpdateError::Invalid(e),
            other => UpdateError::DiffNotApplicable(other),
        })?;
        let _guard = self.update_lock.lock().await;
        let current = self.served();
        let current_generation = current.generation();
        if diff.generation < current_generation {
            return Err(UpdateError::BadGeneration {
                current: current_generation,
                requested: diff.generation,
                reason: "it is older",
            });
        }
        if diff.generation == current_generation {
            let same = current.applied.as_ref().is_some_and(|a| a.digest == diff.digest);
            return if same {
                Ok(None)
            } else {
                Err(UpdateError::BadGeneration {
                    current: current_generation,
                    requested: diff.generation,
                    reason: "same generation with different content",
                })
            };
        }
        let time_applied = Utc::now();
        // Proportional to the difference: done right here, no blocking
        // thread needed, except for the journal's flush to disk.
        let served = current.apply_diff(&diff, time_applied).map_err(|e| match e {
            ApplyDiffError::Diff(e) => UpdateError::DiffNotApplicable(e),
            ApplyDiffError::Compile(e) => UpdateError::Compile(e),
        })?;
        let replaced = identity(&current);
        drop(current);
        let digest = diff.digest.clone();
        let storage = self.storage.clone();
        let generation = diff.generation;
        let names: usize = diff.zones.iter().map(|z| z.names.len()).sum();
        let compact = tokio::task::spawn_blocking(move || storage.append(&diff, time_applied))
            .await
            .map_err(|e| UpdateError::Internal(format!("storing the difference failed: {e}")))?
            .map_err(|source| UpdateError::Storage { current: current_generation, source })?;
        let previous = self.serve(served);
        // The previous generation shares most of its memory with this one:
        // dropping it frees only what the difference replaced.
        drop(previous);
        // The decoded difference and what it replaced are free now.
        after_large_write(names);
        tracing::info!(generation, previous = current_generation, "applied difference");
        if compact {
            let this = self.clone();
            tokio::spawn(async move { this.compact().await });
        }
        Ok(Some(Change { generation, digest, replaced, time_applied }))
    }

    /// Folds the journal into a new snapshot (under the update lock, so no
    /// difference is appended meanwhile).
    async fn compact(self: Arc<Self>) {
        let _guard = self.update_lock.lock().await;
        let storage = self.storage.clone();
        let result = tokio::task::spawn_blocking(move || {
            // A journal only exists beside its snapshot; if the snapshot
            // went away meanwhile there is nothing to fold.
            let Some(applied) = storage.load()? else { return Ok(None) };
            storage.save(&applied.config, applied.time_applied)?;
            Ok::<_, StorageError>(Some(applied.config.generation))
        })
        .await;
        match result {
            Ok(Ok(Some(generation))) => {
                tracing::info!(generation, "journal folded into a new snapshot")
            }
            Ok(Ok(None)) => tracing::warn!("no stored snapshot to fold the journal into"),
            Ok(Err(e)) => {
                tracing::warn!(error = %dns_types::error_chain(&e), "folding the journal failed; it stays")
            }
            Err(e) => tracing::warn!(error = %e, "folding the journal failed; it stays"),
        }
        release_free_memory();
    }

    /// Replaces what is served with `repair.config` whatever the
    /// generations, if the server serves exactly `repair.replaces`.
    pub async fn repair(
        self: &Arc<Self>,
        mut repair: ConfigRepair,
        writer: Option<String>,
    ) -> Result<RepairRecord, UpdateError> {
        let (requested, started) = (repair.config.generation, std::time::Instant::now());
        repair.reason =
            dns_types::limits::bounded_text(&repair.reason, dns_types::limits::MAX_NOTE_BYTES);
        let reason = repair.reason.clone();
        let result = self.repair_inner(repair).await;
        let change = result.as_ref().ok().map(|record| Change {
            generation: record.generation,
            digest: record.digest.clone(),
            replaced: record.replaced.clone(),
            time_applied: record.repaired_at,
        });
        let recorded = match &result {
            Ok(_) => Ok(change.as_ref()),
            Err(error) => Err(error),
        };
        self.record_write(ApplyHow::Repair, requested, writer, started, recorded, Some(reason))
            .await;
        result
    }

    async fn repair_inner(
        self: &Arc<Self>,
        repair: ConfigRepair,
    ) -> Result<RepairRecord, UpdateError> {
        repair.config.validate()?;
        let _guard = self.update_lock.lock().await;
        let current = self.served();
        let identity = ServedIdentity {
            generation: current.generation(),
            digest: current.applied.as_ref().map(|a| a.digest.clone()),
        };
        drop(current);
        if identity != repair.replaces {
            return Err(UpdateError::RepairPrecondition {
                expected: repair.replaces.generation,
                expected_digest: repair.replaces.digest,
                current: identity.generation,
                current_digest: identity.digest,
            });
        }
        let generation = repair.config.generation;
        let (digest, repaired_at) = self.replace(repair.config, identity.generation).await?;
        let record = RepairRecord {
            repaired_at,
            replaced: identity,
            generation,
            digest,
            reason: repair.reason,
        };
        tracing::warn!(
            replaced_generation = record.replaced.generation,
            replaced_digest = record.replaced.digest.as_deref().unwrap_or("none"),
            generation, reason = ?record.reason, "config REPAIRED: replaced what was served"
        );
        *self.last_repair.lock().unwrap_or_else(|e| e.into_inner()) = Some(record.clone());
        Ok(record)
    }

    /// The last repair since start-up.
    pub fn last_repair(&self) -> Option<RepairRecord> {
        self.last_repair.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Compiles, stores and swaps in `config` (the caller holds the update
    /// lock and has checked the rules); returns its digest and the time it
    /// was applied.
    async fn replace(
        self: &Arc<Self>,
        config: DnsConfig,
        current: u64,
    ) -> Result<(String, DateTime<Utc>), UpdateError> {
        // Compiling and storing a large config takes a while: do it on a
        // blocking thread, while queries keep being answered from the
        // current config.
        let this = self.clone();
        let previous = self.served();
        let served = tokio::task::spawn_blocking(move || {
            let time_applied = Utc::now();
            let served = Served::compile_beside(&config, time_applied, Some(&previous))?;
            drop(previous);
            this.storage
                .save(&config, time_applied)
                .map_err(|source| UpdateError::Storage { current, source })?;
            // The config itself is not kept: storage has it.
            drop(config);
            Ok::<_, UpdateError>(served)
        })
        .await
        .map_err(|e| UpdateError::Internal(format!("applying the config failed: {e}")))??;
        let applied = served.applied.as_ref().expect("a compiled config is applied");
        let (digest, time_applied) = (applied.digest.clone(), applied.time_applied);
        drop(self.serve(served));
        release_free_memory();
        Ok((digest, time_applied))
    }
}

/// What `served` is, as a repair (and the history) names it.
fn identity(served: &Served) -> ServedIdentity {
    ServedIdentity {
        generation: served.generation(),
        digest: served.applied.as_ref().map(|a| a.digest.clone()),
    }
}

fn outcome(change: Option<Change>) -> UpdateOutcome {
    match change {
        Some(_) => UpdateOutcome::Applied,
        None => UpdateOutcome::AlreadyApplied,
    }
}

/// A write (a whole config or a difference) of at least this many names
/// is followed by handing free memory back to the operating system
/// ([`release_free_memory`]); smaller ones free little, and trimming costs
/// a walk of the heap.
const LARGE_WRITE_NAMES: usize = 1_000;

/// After a write of `names` names: memory back to the operating system,
/// off the caller's thread, if the write was large.  Without this, what a
/// large write decoded and replaced stayed in glibc's arenas (a refused
/// whole config of a million names among them).
fn after_large_write(names: usize) {
    if names < LARGE_WRITE_NAMES {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(release_free_memory)),
        Err(_) => release_free_memory(),
    }
}

/// Lets go of a replaced generation: when this was the last reference,
/// it is freed off the caller's thread (100,000 names take tens of
/// milliseconds, which a UDP loop must not spend) and the memory handed
/// back to the operating system.
pub fn retire(served: Arc<Served>) {
    let free = move || {
        if let Some(served) = Arc::into_inner(served) {
            drop(served);
            release_free_memory();
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(free)),
        Err(_) => free(),
    }
}

/// Sets how the allocator serves large blocks, once, at start: every block
/// of 128 KiB or more (the shards' tables of a large zone: ~540 KiB each at
/// a million names) gets pages of its own, handed back to the operating
/// system when freed.  glibc otherwise raises that threshold as large
/// blocks are freed and then carves them from its heaps, where the next
/// names land between them; measured at a million names loaded in
/// 20,000-name differences, the server's RSS was then 179-504 MiB from run
/// to run, and 159-169 MiB with this (docs/PERFORMANCE.md, "A million
/// names").
#[allow(unsafe_code)] // mallopt: see the SAFETY note
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets a parameter of the allocator; it takes plain
    // integers and has no preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Hands memory freed by the previous config (and by decoding the new one)
/// back to the operating system.  Without this, glibc keeps most of it in
/// per-thread arenas and a server that applied a few large configs looks
/// several times bigger than what it serves.
#[allow(unsafe_code)] // malloc_trim: see the SAFETY note
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
