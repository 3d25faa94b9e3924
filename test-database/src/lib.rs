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
    create_database_at(&server.url("postgres"), name).await
}

/// A replicated database (three PostgreSQL nodes under Patroni, see
/// `local_postgres::replicated`) with the control-plane database and its
/// schema, ready for writes: a primary and a streaming synchronous standby.
pub struct ReplicatedTestDatabase {
    pub cluster: local_postgres::replicated::ReplicatedPostgres,
    /// Multi-host, `target_session_attrs=read-write`.
    pub url: String,
    pub datastore: Datastore,
}

impl ReplicatedTestDatabase {
    pub async fn new(directory: Directory) -> ReplicatedTestDatabase {
        let cluster = tokio::task::spawn_blocking(move || {
            local_postgres::replicated::ReplicatedPostgres::start(directory)
        })
        .await
        .expect("starting the replicated database panicked")
        .unwrap_or_else(|e| panic!("{e}"));
        db_model::cluster::wait_until_writable(
            &cluster.url("postgres"),
            local_postgres::replicated::NODES - 1,
            std::time::Duration::from_secs(90),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let url = create_database_at(&cluster.url("postgres"), DATABASE_NAME).await;
        let datastore = Datastore::new(&url, DatastoreOptions::default())
            .unwrap_or_else(|e| panic!("test database URL {url}: {e}"));
        if let Err(e) = datastore.initialize_schema().await {
            panic!("applying dbinit.sql to the replicated database failed: {e:#?}");
        }
        ReplicatedTestDatabase { cluster, url, datastore }
    }
}

/// Creates database `name` through `url` (any database on the same
/// server or cluster) and returns `url` pointed at it.
pub async fn create_database_at(url: &str, name: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    drop(client);
    let _ = connection.await;
    url.replacen("/postgres?", &format!("/{name}?"), 1)
}
