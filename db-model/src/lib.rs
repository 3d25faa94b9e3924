//! The control-plane database: a connection pool, SERIALIZABLE transactions
//! retried on conflict, and every query the system makes.
//!
//! - [`Datastore`] owns the pool.  Every query goes through
//!   [`Datastore::transaction`], the one place that sets isolation, applies
//!   the time limit and retries on SQLSTATE 40001.
//! - [`cluster`]: each node of a replicated database as it sees itself
//!   (role, timeline, replication), for `omdb db status` and devstack.
//! - [`schema`]: the schema version check, `dbinit.sql` and migrations.
//! - [`dns`]: DNS versions, configs, diffs and changes, validated before
//!   anything is written.
//!
//! The SQL must run unchanged on PostgreSQL and CockroachDB (see
//! `docs/database.md`).  Nothing here knows about HTTP, DNS servers or Nexus.

pub mod cluster;
pub mod dns;
mod error;
mod prepared;
pub mod schema;
mod transaction;

pub use dns::{DnsError, ZoneInfo, ZoneSpec};
pub use error::{DbError, FailureKind, Retryable};
pub use transaction::{ConnectionReport, Datastore, DatastoreOptions, NodeInUse, TxnMode};
