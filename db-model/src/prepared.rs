//! Queries on statements prepared once per connection.
//!
//! tokio-postgres runs a query given as text with parameters in two round
//! trips to the server (parse and describe, then bind and execute); a
//! prepared statement runs in one.  deadpool keeps each connection's
//! prepared statements (`prepare_cached`), so the statements of the commit
//! path are parsed once per connection, and a one-name commit makes about
//! half the round trips it made (docs/PERFORMANCE.md, "What bounds the
//! commit path").  Statements here are fixed text, so the cache stays as
//! small as the number of call sites.
//!
//! Not for a statement whose best plan depends on its parameters' size,
//! such as `name = ANY($2)` over the names a change touches: after five
//! runs PostgreSQL may keep one generic plan for every run, and the
//! generic plan of that one filtered each of the zone's rows against the
//! whole array.  A 20,000-name change at 800,000 names then ran for more
//! than 30 s (the million-name bench, `fleet`); given as text, each run is
//! planned for its own array.

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) async fn query(
    txn: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, Error> {
    txn.query(&txn.prepare_cached(sql).await?, params).await
}

pub(crate) async fn query_opt(
    txn: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, Error> {
    txn.query_opt(&txn.prepare_cached(sql).await?, params).await
}

pub(crate) async fn query_one(
    txn: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, Error> {
    txn.query_one(&txn.prepare_cached(sql).await?, params).await
}

pub(crate) async fn execute(
    txn: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, Error> {
    txn.execute(&txn.prepare_cached(sql).await?, params).await
}
