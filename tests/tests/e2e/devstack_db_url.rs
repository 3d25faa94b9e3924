//! `devstack run --db-url`: the stack on an existing database, which it
//! initializes when empty and leaves alone when it already holds DNS data.

use devstack::{Stack, StackOptions};
use dns_types::DnsGroup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_on_a_given_database_initializes_it_once() {
    let db = test_database::TestDatabase::empty().await;
    let dir = tempfile::tempdir().unwrap();
    let options = |run: &str| {
        let mut o = StackOptions::new(dir.path().join(run));
        o.db_url = Some(db.url.clone());
        o.internal_dns_servers = 1;
        o.external_dns_servers = 1;
        o.nexus_instances = 1;
        o
    };
    let first = Stack::start(options("first")).await.unwrap();
    assert!(matches!(first.database, devstack::stack::Database::External));
    let generation =
        first.datastore.dns_version_latest(DnsGroup::Internal).await.unwrap().generation;
    assert!(generation >= 2, "generation 1 plus the Nexus registration");
    first.stop().await;

    // Again on the same database: the initial setup is not written twice,
    // and internal DNS now points at this run's servers (the stack only
    // becomes ready when they serve the latest generation).
    let second = Stack::start(options("second")).await.unwrap();
    let versions = second.datastore.dns_versions_list(DnsGroup::Internal, None).await.unwrap();
    assert_eq!(versions.iter().filter(|v| v.comment == "initial setup").count(), 1);
    assert!(versions.iter().any(|v| v.comment.starts_with("devstack: this run's DNS servers")));
    let resolver = internal_dns::Resolver::new(
        second.internal_dns_addresses(),
        std::time::Duration::from_secs(1),
    );
    let found = resolver
        .lookup_service(internal_dns::ServiceName::InternalDns, "control-plane.internal")
        .await
        .unwrap();
    let ports: Vec<u16> = found.instances.iter().map(|i| i.port).collect();
    let ours: Vec<u16> =
        second.servers(DnsGroup::Internal).map(|s| s.http_address.port()).collect();
    assert_eq!(ports, ours);
    second.stop().await;
}
