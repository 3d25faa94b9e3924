//! The schema: creating it, migrating to it and checking its version.

use crate::error::{DbError, query_error};
use crate::transaction::{Datastore, TxnMode};

/// The schema version this build of the software expects.
pub const EXPECTED_VERSION: &str = "1.2.0";

/// The full current schema.
pub const DBINIT_SQL: &str = include_str!("../../schema/dbinit.sql");

/// Each schema version with the steps that bring the previous one to it, in
/// order.  See `schema/migrations/README.md`.
pub static MIGRATIONS: &[(&str, &[&str])] = &[
    (
        "1.0.0",
        &[
            include_str!("../../schema/migrations/1.0.0/up01.sql"),
            include_str!("../../schema/migrations/1.0.0/up02.sql"),
            include_str!("../../schema/migrations/1.0.0/up03.sql"),
            include_str!("../../schema/migrations/1.0.0/up04.sql"),
            include_str!("../../schema/migrations/1.0.0/up05.sql"),
            include_str!("../../schema/migrations/1.0.0/up06.sql"),
            include_str!("../../schema/migrations/1.0.0/up07.sql"),
            include_str!("../../schema/migrations/1.0.0/up08.sql"),
        ],
    ),
    ("1.1.0", &[include_str!("../../schema/migrations/1.1.0/up01.sql")]),
    ("1.2.0", &[include_str!("../../schema/migrations/1.2.0/up01.sql")]),
];

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "database schema version is {found} but this software needs {expected}: \
         migrate the database (or run the matching software version)"
    )]
    Mismatch { found: String, expected: &'static str },
    #[error(
        "the database has no schema (no db_metadata row): initialize it with schema/dbinit.sql"
    )]
    Uninitialized,
    #[error(transparent)]
    Database(#[from] DbError),
}

impl crate::error::Retryable for SchemaError {
    fn is_retryable(&self) -> bool {
        matches!(self, SchemaError::Database(e) if e.is_serialization_failure())
    }
    fn db_error(&self) -> Option<&DbError> {
        match self {
            SchemaError::Database(e) => Some(e),
            _ => None,
        }
    }
}

impl Datastore {
    /// Creates the full schema in an empty database (idempotent).
    pub async fn initialize_schema(&self) -> Result<(), DbError> {
        // dbinit.sql is a batch of DDL statements: simple query protocol.
        self.transaction("initialize schema", TxnMode::ReadWrite, async move |txn| {
            txn.batch_execute(DBINIT_SQL)
                .await
                .map_err(query_error("initialize schema", "running dbinit.sql"))
        })
        .await
    }

    /// The schema version recorded in the database, if any.
    pub async fn schema_version(&self) -> Result<Option<String>, DbError> {
        self.transaction("read schema version", TxnMode::ReadOnly, async move |txn| {
            // One query: a database without the table (SQLSTATE 42P01, on
            // PostgreSQL and CockroachDB alike) has no schema.  Looking the
            // table up in information_schema first cost a second round
            // trip and a slow catalog view on every omdb run.
            match txn.query_opt("SELECT version FROM db_metadata WHERE singleton", &[]).await {
                Ok(row) => Ok(row.map(|r| r.get(0))),
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                    Ok(None)
                }
                Err(e) => Err(query_error("read schema version", "reading db_metadata")(e)),
            }
        })
        .await
    }

    /// Fails unless the database holds exactly [`EXPECTED_VERSION`].
    pub async fn check_schema_version(&self) -> Result<(), SchemaError> {
        match self.schema_version().await? {
            None => Err(SchemaError::Uninitialized),
            Some(found) if found == EXPECTED_VERSION => Ok(()),
            Some(found) => Err(SchemaError::Mismatch { found, expected: EXPECTED_VERSION }),
        }
    }

    /// Applies every migration newer than the database's version, each step
    /// in its own transaction, recording each version when its last step is
    /// done.
    pub async fn migrate(&self) -> Result<(), SchemaError> {
        let current = self.schema_version().await?;
        let start = match &current {
            None => 0,
            Some(v) => match MIGRATIONS.iter().position(|(version, _)| version == v) {
                Some(i) => i + 1,
                None => {
                    return Err(SchemaError::Mismatch {
                        found: v.clone(),
                        expected: EXPECTED_VERSION,
                    });
                }
            },
        };
        for &(version, steps) in &MIGRATIONS[start..] {
            for &step in steps {
                // Owned, so that the future stays `Send` (see `transaction`).
                let step = step.to_string();
                self.transaction("migrate schema", TxnMode::ReadWrite, async move |txn| {
                    txn.batch_execute(&step)
                        .await
                        .map_err(query_error("migrate schema", "running a step"))
                })
                .await?;
            }
            tracing::info!(version, "schema migrated");
            let version = version.to_string();
            self.transaction("migrate schema", TxnMode::ReadWrite, async move |txn| {
                txn.execute(
                    "INSERT INTO db_metadata (singleton, version, time_modified) VALUES (TRUE, $1, now()) \
                     ON CONFLICT (singleton) DO UPDATE \
                     SET version = excluded.version, time_modified = excluded.time_modified",
                    &[&version],
                )
                .await
                .map_err(query_error("migrate schema", "recording the version"))
            })
            .await?;
        }
        Ok(())
    }
}
