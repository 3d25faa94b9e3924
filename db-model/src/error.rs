//! Database errors, classified once: retryable (a serialization conflict,
//! SQLSTATE 40001) or not.

use std::time::Duration;
use tokio_postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL {url:?}")]
    InvalidUrl {
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("could not get a connection to the database at {address}")]
    Connection {
        address: String,
        #[source]
        source: deadpool_postgres::PoolError,
    },
    #[error("database operation {what:?} failed while {step}")]
    Query {
        what: &'static str,
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("database operation {what:?} at {address} did not finish within {timeout:?}")]
    Timeout { what: &'static str, address: String, timeout: Duration },
    #[error(
        "database operation {what:?} conflicted with concurrent transactions {attempts} times \
         in a row; giving up (retry later)"
    )]
    RetriesExhausted { what: &'static str, attempts: u32 },
    #[error(
        "database operation {what:?} at {address}: the outcome of COMMIT is unknown ({reason}); \
         it may or may not have been applied: send it again with the same idempotency key"
    )]
    CommitOutcomeUnknown { what: &'static str, address: String, reason: String },
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
}

/// How a database operation failed, for metrics and for deciding what to do
/// with the connection it used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// No connection, a connection lost before COMMIT, a node shutting
    /// down or starting: nothing was written, and the next attempt may find
    /// another node.
    Unavailable,
    /// The node is read-only (a standby, or a primary just demoted).
    ReadOnly,
    /// The connection was lost during COMMIT, or COMMIT did not return in
    /// time: the change may or may not be in the database.
    CommitOutcomeUnknown,
    /// The operation did not finish in time (before COMMIT).
    Timeout,
    /// Serialization conflicts, retried until the attempts ran out.
    Conflict,
    /// Anything else (bad data, a refused change, a bug).
    Other,
}

impl FailureKind {
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Unavailable,
        FailureKind::ReadOnly,
        FailureKind::CommitOutcomeUnknown,
        FailureKind::Timeout,
        FailureKind::Conflict,
        FailureKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Unavailable => "unavailable",
            FailureKind::ReadOnly => "read_only",
            FailureKind::CommitOutcomeUnknown => "commit_outcome_unknown",
            FailureKind::Timeout => "timeout",
            FailureKind::Conflict => "conflict",
            FailureKind::Other => "other",
        }
    }
}

impl DbError {
    /// Whether running the whole transaction again may succeed.
    /// Whether the database refused the data itself (SQLSTATE class 22,
    /// "data exception": a character it cannot store, a value out of
    /// range): the input is at fault, not the database.  Validation catches
    /// these first; this keeps a rule it missed from looking like an outage.
    pub fn is_data_exception(&self) -> bool {
        match self {
            DbError::Query { source, .. } => {
                source.code().is_some_and(|code| code.code().starts_with("22"))
            }
            _ => false,
        }
    }

    pub fn is_serialization_failure(&self) -> bool {
        match self {
            DbError::Query { source, .. } => {
                source.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
            }
            _ => false,
        }
    }

    /// How this failed (see [`FailureKind`]).
    pub fn kind(&self) -> FailureKind {
        match self {
            DbError::Connection { .. } => FailureKind::Unavailable,
            DbError::Timeout { .. } => FailureKind::Timeout,
            DbError::RetriesExhausted { .. } => FailureKind::Conflict,
            DbError::CommitOutcomeUnknown { .. } => FailureKind::CommitOutcomeUnknown,
            DbError::Query { source, .. } => driver_failure_kind(source),
            DbError::InvalidUrl { .. } | DbError::Corrupt(_) => FailureKind::Other,
        }
    }

    /// Whether this is the database rejecting a duplicate key.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Query { source, .. } => source.code() == Some(&SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

/// Classifies an error of the driver: a lost connection, a node that is
/// shutting down, starting, or read-only, is the database being unavailable
/// here (another node may take over), not a problem with the query.
pub(crate) fn driver_failure_kind(source: &tokio_postgres::Error) -> FailureKind {
    if source.is_closed() {
        return FailureKind::Unavailable;
    }
    match source.code() {
        // No SQLSTATE: an I/O error on the connection.
        None => FailureKind::Unavailable,
        Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION => FailureKind::ReadOnly,
        Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE => FailureKind::Conflict,
        Some(code)
            if code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW =>
        {
            FailureKind::Unavailable
        }
        Some(_) => FailureKind::Other,
    }
}

/// Errors that may wrap a [`DbError`]; the transaction helper asks them
/// whether to retry, and reads the database error to classify failures.
pub trait Retryable {
    fn is_retryable(&self) -> bool;
    /// The database error inside, if this is one.
    fn db_error(&self) -> Option<&DbError>;
}

impl Retryable for DbError {
    fn is_retryable(&self) -> bool {
        self.is_serialization_failure()
    }
    fn db_error(&self) -> Option<&DbError> {
        Some(self)
    }
}

/// Shorthand for mapping a driver error inside a transaction body.
pub(crate) fn query_error(
    what: &'static str,
    step: &'static str,
) -> impl FnOnce(tokio_postgres::Error) -> DbError {
    move |source| DbError::Query { what, step, source }
}
