//! The connection pool and the one transaction helper everything uses.
//!
//! Every transaction is SERIALIZABLE.  When the database aborts one because
//! it conflicted with another (SQLSTATE 40001, which both PostgreSQL and
//! CockroachDB raise), the whole body runs again after a short randomized
//! backoff.  Each attempt has a time limit, so a hung database turns into an
//! error naming it instead of a hung caller.
//!
//! The URL may name several hosts (a replicated database:
//! `postgresql://h1:p1,h2:p2,h3:p3/db?target_session_attrs=read-write`);
//! a new connection goes to the first that accepts writes.  After a
//! failover, connections to the old primary break or find it read-only;
//! such a connection is never handed out again, so the next attempt
//! connects afresh and finds the new primary.  The pool remembers which
//! node its connections reach and counts how often that changed and how
//! writes failed, for Nexus's metrics and omdb.
//!
//! A connection lost during COMMIT (or a COMMIT that does not return in
//! time, as when a synchronous standby is missing) leaves the outcome
//! unknown: that is its own error, [`DbError::CommitOutcomeUnknown`], so
//! that callers retry with an idempotency key instead of guessing.

use crate::error::{DbError, FailureKind, Retryable, query_error};
use chrono::{DateTime, Utc};
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use rand::Rng;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::IsolationLevel;

/// Whether a transaction may write.  Read-only transactions let the database
/// skip conflict tracking for writes and make the intent checkable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnMode {
    ReadOnly,
    ReadWrite,
}

#[derive(Clone, Debug)]
pub struct DatastoreOptions {
    /// Most connections the pool opens.
    pub max_connections: usize,
    /// Limit for establishing one connection (TCP and start-up handshake).
    pub connect_timeout: Duration,
    /// Limit for one attempt of one transaction, from taking a connection
    /// to commit.
    pub transaction_timeout: Duration,
    /// Attempts before a conflicting transaction gives up.
    pub max_attempts: u32,
    /// The database is a hot standby, read while no node accepts writes:
    /// reads run REPEATABLE READ (a standby refuses SERIALIZABLE; it
    /// replays commits in order, so a snapshot of it is consistent), and
    /// writes are refused by the standby itself.
    pub standby_reads: bool,
}

impl Default for DatastoreOptions {
    fn default() -> Self {
        DatastoreOptions {
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            transaction_timeout: Duration::from_secs(30),
            max_attempts: 50,
            standby_reads: false,
        }
    }
}

/// Access to the control-plane database.  Cheap to clone.
#[derive(Clone)]
pub struct Datastore {
    pool: Pool,
    address: String,
    options: DatastoreOptions,
    tracker: Arc<NodeTracker>,
}

/// The database node this pool's connections reach, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInUse {
    /// `host:port` as the node reports it (`inet_server_addr()`), or the
    /// configured address when it cannot say.
    pub node: String,
    /// When the first connection to it was made.
    pub since: DateTime<Utc>,
}

/// What the pool has seen: the node in use, how many times new connections
/// went to another node than before (failovers seen), and failed write
/// transactions by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionReport {
    pub node: Option<NodeInUse>,
    pub failovers_seen: u64,
    pub write_failures: BTreeMap<FailureKind, u64>,
}

#[derive(Default)]
struct NodeTracker {
    node: Mutex<Option<NodeInUse>>,
    failovers: AtomicU64,
    write_failures: [AtomicU64; FailureKind::ALL.len()],
}

impl NodeTracker {
    /// A new connection reached `node`.
    fn connected(&self, node: String) {
        let mut current = self.node.lock().unwrap_or_else(|e| e.into_inner());
        match current.as_ref() {
            Some(previous) if previous.node == node => {}
            Some(previous) => {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    previous = %previous.node, now = %node,
                    "new database connections reach another node than before: the primary moved"
                );
                *current = Some(NodeInUse { node, since: Utc::now() });
            }
            None => {
                tracing::info!(%node, "connected to the database");
                *current = Some(NodeInUse { node, since: Utc::now() });
            }
        }
    }

    fn write_failed(&self, kind: FailureKind) {
        let index = FailureKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.write_failures[index].fetch_add(1, Ordering::Relaxed);
    }
}

impl Datastore {
    /// Sets up a pool for `url` (`postgresql://user@host:port/db`).  No
    /// connection is made until the first query.
    pub fn new(url: &str, options: DatastoreOptions) -> Result<Datastore, DbError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|source| DbError::InvalidUrl { url: url.into(), source })?;
        config.connect_timeout(options.connect_timeout);
        config.application_name("dns-control-plane");
        let address = describe_address(&config);
        let host_list = crate::cluster::hosts_of(&config);
        let hosts = host_list.len();
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let tracker = Arc::new(NodeTracker::default());
        let on_connect = tracker.clone();
        // The node as `host:port`: the one host, or (when a node cannot
        // say which it is) the list it is one of.
        let configured = match host_list.as_slice() {
            [(one, _, _)] => one.clone(),
            many => many.iter().map(|(a, _, _)| a.as_str()).collect::<Vec<_>>().join(","),
        };
        let pool = Pool::builder(manager)
            .max_size(options.max_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.transaction_timeout))
            // Several hosts are tried one after the other, each within the
            // connect timeout.
            .create_timeout(Some(options.connect_timeout * hosts.max(1) as u32))
            .recycle_timeout(Some(options.connect_timeout))
            .post_create(Hook::async_fn(move |client, _| {
                let tracker = on_connect.clone();
                let configured = configured.clone();
                Box::pin(async move {
                    // One host: it is the node; no question (a round trip
                    // on every new connection) needed.
                    if hosts <= 1 {
                        tracker.connected(configured);
                        return Ok(());
                    }
                    // Which node this connection reached (a multi-host URL
                    // does not say).  A database that cannot tell (no
                    // inet_server_addr) is named by its configured address.
                    let node = match client
                        .query_one("SELECT inet_server_addr()::TEXT, inet_server_port()", &[])
                        .await
                    {
                        Ok(row) => {
                            match (row.get::<_, Option<String>>(0), row.get::<_, Option<i32>>(1)) {
                                (Some(ip), Some(port)) => {
                                    let ip = ip.split('/').next().unwrap_or(&ip).to_string();
                                    if ip.contains(':') {
                                        format!("[{ip}]:{port}")
                                    } else {
                                        format!("{ip}:{port}")
                                    }
                                }
                                _ => configured,
                            }
                        }
                        Err(e) if e.is_closed() => return Err(HookError::Backend(e)),
                        Err(_) => configured,
                    };
                    tracker.connected(node);
                    Ok(())
                })
            }))
            .build()
            .expect("a pool with a runtime and timeouts always builds");
        Ok(Datastore { pool, address, options, tracker })
    }

    /// `host:port/database` of the database (every host, for a multi-host
    /// URL), for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether this reads a hot standby (see
    /// [`DatastoreOptions::standby_reads`]): what it shows may lag the
    /// primary to come, and nothing written through it can commit.
    pub fn reads_a_standby(&self) -> bool {
        self.options.standby_reads
    }

    /// The node in use, failovers seen and failed writes by kind.
    pub fn connection_report(&self) -> ConnectionReport {
        ConnectionReport {
            node: self.tracker.node.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            failovers_seen: self.tracker.failovers.load(Ordering::Relaxed),
            write_failures: FailureKind::ALL
                .iter()
                .zip(&self.tracker.write_failures)
                .map(|(kind, count)| (*kind, count.load(Ordering::Relaxed)))
                .collect(),
        }
    }

    /// Runs `body` in a SERIALIZABLE transaction and commits it, retrying the
    /// whole body when the database reports a serialization conflict.
    ///
    /// `what` names the operation in errors and logs.  The body must not
    /// have effects outside the transaction, since it may run several times.
    ///
    /// Write the body as an `async move` closure that owns what it captures
    /// (or captures only `'static` references): with a borrowed capture the
    /// compiler cannot prove the resulting future `Send` (a limitation of
    /// async closures today), and callers could not spawn it.
    pub async fn transaction<T, E, F>(
        &self,
        what: &'static str,
        mode: TxnMode,
        mut body: F,
    ) -> Result<T, E>
    where
        F: AsyncFnMut(&deadpool_postgres::Transaction<'_>) -> Result<T, E>,
        E: From<DbError> + Retryable,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.attempt(what, mode, &mut body).await;
            match result {
                Err(e) if e.is_retryable() && attempt < self.options.max_attempts => {
                    // Full jitter on an exponential backoff: contending writers spread out
                    // instead of colliding again in lockstep.
                    let cap_ms = (2u64 << attempt.min(6)).min(100);
                    let sleep = rand::rng().random_range(0..=cap_ms);
                    tracing::debug!(
                        what,
                        attempt,
                        sleep_ms = sleep,
                        "transaction conflict; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(sleep)).await;
                }
                Err(e) if e.is_retryable() => {
                    if mode == TxnMode::ReadWrite {
                        self.tracker.write_failed(FailureKind::Conflict);
                    }
                    return Err(DbError::RetriesExhausted { what, attempts: attempt }.into());
                }
                Err(e) => {
                    if mode == TxnMode::ReadWrite
                        && let Some(db) = e.db_error()
                    {
                        self.tracker.write_failed(db.kind());
                    }
                    return Err(e);
                }
                ok => return ok,
            }
        }
    }

    async fn attempt<T, E, F>(
        &self,
        what: &'static str,
        mode: TxnMode,
        body: &mut F,
    ) -> Result<T, E>
    where
        F: AsyncFnMut(&deadpool_postgres::Transaction<'_>) -> Result<T, E>,
        E: From<DbError> + Retryable,
    {
        let timeout = self.options.transaction_timeout;
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|source| DbError::Connection { address: self.address.clone(), source })?;
        let committing = AtomicBool::new(false);
        let run = async {
            let txn = client
                .build_transaction()
                .isolation_level(if self.options.standby_reads {
                    IsolationLevel::RepeatableRead
                } else {
                    IsolationLevel::Serializable
                })
                .read_only(mode == TxnMode::ReadOnly)
                .start()
                .await
                .map_err(query_error(what, "starting the transaction"))?;
            let value = body(&txn).await?;
            committing.store(true, Ordering::Relaxed);
            txn.commit().await.map_err(|source| {
                // An answer from the database (a conflict, say) means it did
                // not commit; a lost connection means nobody knows.
                if source.is_closed() || source.code().is_none() {
                    DbError::CommitOutcomeUnknown {
                        what,
                        address: self.address.clone(),
                        reason: format!("the connection was lost during COMMIT: {source}"),
                    }
                } else {
                    query_error(what, "committing")(source)
                }
            })?;
            Ok::<T, E>(value)
        };
        let result = tokio::time::timeout(timeout, run).await;
        match result {
            Ok(Err(e)) => {
                // A connection to a node that left (or became read-only)
                // must not be handed out again: the next attempt connects
                // afresh and finds the current primary.
                let kind = e.db_error().map(DbError::kind);
                if matches!(
                    kind,
                    Some(
                        FailureKind::Unavailable
                            | FailureKind::ReadOnly
                            | FailureKind::CommitOutcomeUnknown
                    )
                ) {
                    tracing::warn!(
                        what, error = %e.db_error().map(|e| e.to_string()).unwrap_or_default(),
                        "database connection discarded"
                    );
                    drop(Object::take(client));
                }
                Err(e)
            }
            Ok(ok) => ok,
            Err(_) => {
                // The connection may be stuck mid-transaction: never hand it
                // out again.
                drop(Object::take(client));
                if committing.load(Ordering::Relaxed) {
                    Err(DbError::CommitOutcomeUnknown {
                        what,
                        address: self.address.clone(),
                        reason: format!(
                            "COMMIT did not return within {timeout:?} (a primary waiting for a \
                             synchronous standby that is not there commits only when one comes)"
                        ),
                    }
                    .into())
                } else {
                    Err(DbError::Timeout { what, address: self.address.clone(), timeout }.into())
                }
            }
        }
    }
}

fn describe_address(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> =
        crate::cluster::hosts_of(config).into_iter().map(|(address, _, _)| address).collect();
    let hosts = if hosts.is_empty() { "localhost:5432".to_string() } else { hosts.join(",") };
    let db = config.get_dbname().unwrap_or("(default)");
    format!("{hosts}/{db}")
}
