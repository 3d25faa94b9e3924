//! The schema: `dbinit.sql` and the migrations must build the same thing,
//! and the version check must tell a mismatch apart.

use db_model::schema::{EXPECTED_VERSION, SchemaError};
use db_model::{Datastore, DatastoreOptions};
use test_database::{TestDatabase, create_database};

/// A description of every table, column, constraint and index, sorted, so
/// that two databases can be compared.
async fn describe_schema(url: &str) -> Vec<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let queries = [
        "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || \
         ' nullable=' || is_nullable || ' default=' || coalesce(column_default, '') \
         FROM information_schema.columns WHERE table_schema = 'public'",
        "SELECT 'constraint ' || conrelid::regclass::text || ' ' || pg_get_constraintdef(oid) \
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
        "SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'",
    ];
    let mut lines = Vec::new();
    for query in queries {
        for row in client.query(query, &[]).await.unwrap() {
            lines.push(row.get::<_, String>(0));
        }
    }
    lines.sort();
    lines
}

#[tokio::test]
async fn dbinit_and_migrations_build_the_same_schema() {
    let from_dbinit = TestDatabase::new().await;
    let migrated_url = create_database(&from_dbinit.server, "migrated").await;
    let migrated = Datastore::new(&migrated_url, DatastoreOptions::default()).unwrap();
    migrated.migrate().await.unwrap();
    // Migrating again is a no-op.
    migrated.migrate().await.unwrap();

    let a = describe_schema(&from_dbinit.url).await;
    let b = describe_schema(&migrated_url).await;
    assert!(a.len() > 20, "schema description looks empty: {a:?}");
    assert_eq!(a, b, "dbinit.sql and schema/migrations disagree");
    assert_eq!(migrated.schema_version().await.unwrap().as_deref(), Some(EXPECTED_VERSION));
    from_dbinit.datastore.check_schema_version().await.unwrap();
    migrated.check_schema_version().await.unwrap();
}

#[tokio::test]
async fn schema_version_check_names_both_versions() {
    let empty = TestDatabase::empty().await;
    assert!(matches!(
        empty.datastore.check_schema_version().await,
        Err(SchemaError::Uninitialized)
    ));

    let db = TestDatabase::new().await;
    let (client, connection) =
        tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.execute("UPDATE db_metadata SET version = '0.9.0'", &[]).await.unwrap();
    let error = db.datastore.check_schema_version().await.unwrap_err();
    assert!(matches!(error, SchemaError::Mismatch { .. }));
    let message = error.to_string();
    assert!(message.contains("0.9.0") && message.contains(EXPECTED_VERSION), "{message}");
}

/// A pool says which node its connections reach: for a one-host URL, that
/// host as `host:port` (what `omdb db status` lists the node as), and no
/// failover seen.
#[tokio::test]
async fn the_pool_names_the_node_it_reaches() {
    let db = test_database::TestDatabase::new().await;
    db.datastore.check_schema_version().await.unwrap();
    let report = db.datastore.connection_report();
    assert_eq!(report.node.unwrap().node, format!("127.0.0.1:{}", db.server.port()));
    assert_eq!(report.failovers_seen, 0);
}
