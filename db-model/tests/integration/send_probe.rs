//! Compile-time check: every datastore operation can run in a spawned task
//! (its future is `Send`), which Dropshot handlers and background tasks need.

use db_model::Datastore;
use dns_types::{DnsChange, DnsGroup};

fn assert_send<T: Send>(_: T) {}

#[allow(dead_code)]
fn every_operation_is_send(ds: Datastore, change: DnsChange) {
    let g = DnsGroup::Internal;
    assert_send(async { ds.dns_change_commit(g, "x", &change).await });
    assert_send(async { ds.dns_group_initialize(g, &[], "x", &change).await });
    assert_send(async { ds.dns_config_read(g, None).await });
    assert_send(async { ds.dns_diff(g, 1, 2).await });
    assert_send(async { ds.dns_versions_list(g, None).await });
    assert_send(async { ds.dns_version_latest(g).await });
    assert_send(async { ds.dns_version(g, 1).await });
    assert_send(async { ds.migrate().await });
    assert_send(async { ds.initialize_schema().await });
    assert_send(async { ds.check_schema_version().await });
}

#[test]
fn datastore_futures_are_send() {
    // The assertions above are checked when this file compiles.
}
