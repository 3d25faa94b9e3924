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
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
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

    /// Whether this is the database rejecting a duplicate key.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Query { source, .. } => source.code() == Some(&SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

/// Errors that may wrap a [`DbError`]; the transaction helper asks them
/// whether to retry.
pub trait Retryable {
    fn is_retryable(&self) -> bool;
}

impl Retryable for DbError {
    fn is_retryable(&self) -> bool {
        self.is_serialization_failure()
    }
}

/// Shorthand for mapping a driver error inside a transaction body.
pub(crate) fn query_error(
    what: &'static str,
    step: &'static str,
) -> impl FnOnce(tokio_postgres::Error) -> DbError {
    move |source| DbError::Query { what, step, source }
}
