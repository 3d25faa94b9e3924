//! The connection pool and the one transaction helper everything uses.
//!
//! Every transaction is SERIALIZABLE.  When the database aborts one because
//! it conflicted with another (SQLSTATE 40001, which both PostgreSQL and
//! CockroachDB raise), the whole body runs again after a short randomized
//! backoff.  Each attempt has a time limit, so a hung database turns into an
//! error naming it instead of a hung caller.

use crate::error::{DbError, Retryable, query_error};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use rand::Rng;
use std::str::FromStr;
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
}

impl Default for DatastoreOptions {
    fn default() -> Self {
        DatastoreOptions {
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            transaction_timeout: Duration::from_secs(30),
            max_attempts: 50,
        }
    }
}

/// Access to the control-plane database.  Cheap to clone.
#[derive(Clone)]
pub struct Datastore {
    pool: Pool,
    address: String,
    options: DatastoreOptions,
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
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.transaction_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .expect("a pool with a runtime and timeouts always builds");
        Ok(Datastore { pool, address, options })
    }

    /// `host:port/database` of the database, for messages.
    pub fn address(&self) -> &str {
        &self.address
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
                    return Err(DbError::RetriesExhausted { what, attempts: attempt }.into());
                }
                other => return other,
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
        let run = async {
            let txn = client
                .build_transaction()
                .isolation_level(IsolationLevel::Serializable)
                .read_only(mode == TxnMode::ReadOnly)
                .start()
                .await
                .map_err(query_error(what, "starting the transaction"))?;
            let value = body(&txn).await?;
            txn.commit().await.map_err(query_error(what, "committing"))?;
            Ok(value)
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may be stuck mid-transaction: never hand it
                // out again.
                drop(Object::take(client));
                Err(DbError::Timeout { what, address: self.address.clone(), timeout }.into())
            }
        }
    }
}

fn describe_address(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default)");
    format!("{host}:{port}/{db}")
}
