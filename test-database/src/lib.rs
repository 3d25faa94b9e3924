//! Each test gets its own control-plane database on its own private
//! PostgreSQL server (see `local-postgres`), with the schema applied.
//!
//! A private server per test costs about a second and buys complete
//! isolation: tests run in parallel, and a test may stop, freeze or restart
//! "the database" without disturbing any other.  Everything is cleaned up
//! when the [`TestDatabase`] is dropped, also when the test panics.
//!
//! These helpers panic on failure, with the reason: they are for tests.

use db_model::{Datastore, DatastoreOptions};
use local_postgres::{Directory, LocalPostgres};

/// The database every test uses on its private server.
pub const DATABASE_NAME: &str = "control_plane";

pub struct TestDatabase {
    pub server: LocalPostgres,
    pub url: String,
    pub datastore: Datastore,
}

impl TestDatabase {
    /// A fresh server and database with the current schema (`dbinit.sql`).
    pub async fn new() -> TestDatabase {
        let db = TestDatabase::empty().await;
        if let Err(e) = db.datastore.initialize_schema().await {
            panic!("applying dbinit.sql to the test database failed: {e:#?}");
        }
        db
    }

    /// A fresh server and an empty database without any schema.
    pub async fn empty() -> TestDatabase {
        let server = start_server().await;
        create_database(&server, DATABASE_NAME).await;
        let url = server.url(DATABASE_NAME);
        let datastore = Datastore::new(&url, DatastoreOptions::default())
            .unwrap_or_else(|e| panic!("test database URL {url}: {e}"));
        TestDatabase { server, url, datastore }
    }
}

/// Starts a private server (off the async threads: it blocks ~1 s).
pub async fn start_server() -> LocalPostgres {
    tokio::task::spawn_blocking(|| LocalPostgres::start(Directory::Temporary))
        .await
        .expect("starting PostgreSQL panicked")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Creates another empty database on `server` and returns its URL.
pub async fn create_database(server: &LocalPostgres, name: &str) -> String {
    let (client, connection) =
        tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test server: {e}"));
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    drop(client);
    let _ = connection.await;
    server.url(name)
}
