//! DNS queries against a real PostgreSQL server: concurrent commits, reading
//! back every generation, diffs, and rejected changes leaving no trace.

use db_model::{Datastore, DnsError, ZoneSpec};
use dns_types::change::ChangeError;
use dns_types::{
    DnsChange, DnsConfig, DnsGroup, DnsRecord, NameRecords, NameRemoval, SrvRecord, diff_configs,
};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use test_database::TestDatabase;

const ZONE: &str = "control-plane.internal";
const GROUP: DnsGroup = DnsGroup::Internal;

fn a(n: u8) -> DnsRecord {
    DnsRecord::A(Ipv4Addr::new(192, 0, 2, n))
}

fn add(comment: &str, name: &str, records: Vec<DnsRecord>) -> DnsChange {
    DnsChange {
        idempotency_key: None,
        comment: comment.into(),
        add: vec![NameRecords { name: name.into(), records }],
        remove: vec![],
    }
}

fn remove(comment: &str, name: &str, records: Option<Vec<DnsRecord>>) -> DnsChange {
    DnsChange {
        idempotency_key: None,
        comment: comment.into(),
        add: vec![],
        remove: vec![NameRemoval { name: name.into(), records }],
    }
}

async fn initialized() -> TestDatabase {
    let db = TestDatabase::new().await;
    let initial = DnsChange {
        idempotency_key: None,
        comment: "initial setup".into(),
        add: (0..8)
            .map(|i| NameRecords { name: format!("host{i}"), records: vec![a(i)] })
            .collect(),
        remove: vec![],
    };
    let zones = [ZoneSpec { zone_name: ZONE.into(), ttl_seconds: 60 }];
    let v1 = db.datastore.dns_group_initialize(GROUP, &zones, "setup", &initial).await.unwrap();
    assert_eq!(v1.generation, 1);
    db
}

/// The in-memory model of what a change does, to check the database against.
fn replay(names: &mut BTreeMap<String, Vec<DnsRecord>>, change: &DnsChange) {
    for r in &change.remove {
        match &r.records {
            None => {
                names.remove(&r.name);
            }
            Some(records) => {
                let entry = names.get_mut(&r.name).unwrap();
                entry.retain(|x| !records.contains(x));
                if entry.is_empty() {
                    names.remove(&r.name);
                }
            }
        }
    }
    for add in &change.add {
        names.entry(add.name.clone()).or_default().extend(add.records.iter().cloned());
    }
}

fn sorted_names(config: &DnsConfig) -> BTreeMap<String, Vec<DnsRecord>> {
    config.zones[0]
        .names
        .iter()
        .map(|(n, r)| {
            let mut r = r.clone();
            r.sort();
            (n.clone(), r)
        })
        .collect()
}

/// 16 concurrent writers, half of them adding records to one shared name:
/// generations 2..=17 with no gap or duplicate, every change present once,
/// and each generation reads back as the replay of the changes before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_consecutive_generations_and_lose_nothing() {
    let db = initialized().await;
    let changes: Vec<DnsChange> = (0..16u8)
        .map(|i| match i % 4 {
            0 | 1 => add(&format!("change {i}"), "shared", vec![a(100 + i)]),
            2 => add(&format!("change {i}"), &format!("own{i}"), vec![a(i), a(200 + i)]),
            _ => remove(&format!("change {i}"), &format!("host{}", i / 4), None),
        })
        .collect();
    let tasks: Vec<_> = changes
        .iter()
        .enumerate()
        .map(|(i, change)| {
            let datastore: Datastore = db.datastore.clone();
            let change = change.clone();
            tokio::spawn(async move {
                datastore.dns_change_commit(GROUP, &format!("writer-{i}"), &change).await
            })
        })
        .collect();
    let mut committed = Vec::new();
    for task in tasks {
        committed.push(task.await.unwrap().expect("every concurrent change commits"));
    }

    let versions = db.datastore.dns_versions_list(GROUP, None).await.unwrap();
    let generations: Vec<u64> = versions.iter().map(|v| v.generation).collect();
    assert_eq!(generations, (1..=17).collect::<Vec<_>>());
    // Each writer's generation carries its own creator and comment.
    for version in &versions[1..] {
        let writer: usize = version.creator.strip_prefix("writer-").unwrap().parse().unwrap();
        assert_eq!(version.comment, changes[writer].comment);
        assert_eq!(committed[writer].generation, version.generation);
    }

    // Replay the changes in generation order and compare every generation.
    let mut model = sorted_names(&db.datastore.dns_config_read(GROUP, Some(1)).await.unwrap());
    let mut configs = vec![db.datastore.dns_config_read(GROUP, Some(1)).await.unwrap()];
    for version in &versions[1..] {
        let writer: usize = version.creator.strip_prefix("writer-").unwrap().parse().unwrap();
        replay(&mut model, &changes[writer]);
        let config = db.datastore.dns_config_read(GROUP, Some(version.generation)).await.unwrap();
        let mut expected = model.clone();
        expected.values_mut().for_each(|r| r.sort());
        assert_eq!(sorted_names(&config), expected, "generation {}", version.generation);
        assert_eq!(config.creator, version.creator);
        configs.push(config);
    }
    let shared = &db.datastore.dns_config_read(GROUP, None).await.unwrap().zones[0].names["shared"];
    assert_eq!(shared.len(), 8, "every writer's record on the shared name survives");

    // The database's diff of every pair equals the diff of the full configs.
    for from in 0..configs.len() {
        for to in from..configs.len() {
            let (f, t) = (&configs[from], &configs[to]);
            let diff = db.datastore.dns_diff(GROUP, f.generation, t.generation).await.unwrap();
            assert_eq!(
                diff,
                diff_configs(GROUP, f, t),
                "diff {} -> {}",
                f.generation,
                t.generation
            );
        }
    }
}

#[tokio::test]
async fn record_level_changes_and_history() {
    let db = initialized().await;
    let ds = &db.datastore;
    let srv = DnsRecord::Srv(SrvRecord {
        prio: 0,
        weight: 0,
        port: 12221,
        target: "Host0.Control-Plane.Internal.".into(),
    });
    let v2 =
        ds.dns_change_commit(GROUP, "n1", &add("add srv", "_nexus._tcp", vec![srv])).await.unwrap();
    let v3 =
        ds.dns_change_commit(GROUP, "n1", &add("second A", "host0", vec![a(50)])).await.unwrap();
    let v4 = ds
        .dns_change_commit(GROUP, "n2", &remove("drop first A", "host0", Some(vec![a(0)])))
        .await
        .unwrap();
    let v5 = ds
        .dns_change_commit(
            GROUP,
            "n2",
            &remove("last A", "host0.control-plane.internal.", Some(vec![a(50)])),
        )
        .await
        .unwrap();
    assert_eq!([v2.generation, v3.generation, v4.generation, v5.generation], [2, 3, 4, 5]);

    let names_at =
        async |g| ds.dns_config_read(GROUP, Some(g)).await.unwrap().zones[0].names.clone();
    assert_eq!(names_at(2).await["host0"], vec![a(0)]);
    assert_eq!(names_at(3).await["host0"], vec![a(0), a(50)]);
    assert_eq!(names_at(4).await["host0"], vec![a(50)]);
    assert!(!names_at(5).await.contains_key("host0"), "a name with no records left is gone");
    // Targets are stored in canonical form.
    let latest = ds.dns_config_read(GROUP, None).await.unwrap();
    assert_eq!(latest.generation, 5);
    assert_eq!(latest.comment, "last A");
    let DnsRecord::Srv(srv) = &latest.zones[0].names["_nexus._tcp"][0] else { panic!() };
    assert_eq!(srv.target, "host0.control-plane.internal");

    let diff = ds.dns_diff(GROUP, 2, 4).await.unwrap();
    assert_eq!(diff.zones[0].names.len(), 1);
    let host0 = &diff.zones[0].names[0];
    assert_eq!(host0.added_records().collect::<Vec<_>>(), vec![&a(50)]);
    assert_eq!(host0.removed_records().collect::<Vec<_>>(), vec![&a(0)]);

    let latest_version = ds.dns_version_latest(GROUP).await.unwrap();
    assert_eq!((latest_version.generation, latest_version.creator.as_str()), (5, "n2"));

    // Each generation's stored digest state, kept up to date by each
    // change from the touched names only, is that of its full config.
    for generation in 1..=5 {
        let config = ds.dns_config_read(GROUP, Some(generation)).await.unwrap();
        let state = ds.dns_digest_state(GROUP, generation).await.unwrap().unwrap();
        assert_eq!(state.digest(generation), dns_types::config_digest(&config), "{generation}");
        assert_eq!(state.name_count(), config.name_count() as u64);
    }
    assert_eq!(ds.dns_versions_list(GROUP, Some(2)).await.unwrap().len(), 2);
}

/// Every kind of invalid input gets its typed error and changes nothing.
#[tokio::test]
async fn invalid_changes_are_rejected_and_change_nothing() {
    let db = initialized().await;
    let ds = &db.datastore;
    let cname = DnsRecord::Cname("elsewhere.example.test".into());
    let bad_srv =
        DnsRecord::Srv(SrvRecord { prio: 0, weight: 0, port: 1, target: "bad..target".into() });
    let long_txt = DnsRecord::Txt("x".repeat(5000));
    let empty =
        DnsChange { idempotency_key: None, comment: "nothing".into(), add: vec![], remove: vec![] };
    type Case = (DnsChange, fn(&DnsError) -> bool, &'static str);
    let cases: Vec<Case> = vec![
        (
            add("", "x", vec![a(1)]),
            |e| matches!(e, DnsError::Change(ChangeError::EmptyComment)),
            "needs a comment",
        ),
        (
            empty,
            |e| matches!(e, DnsError::Change(ChangeError::EmptyChange)),
            "adds and removes nothing",
        ),
        (
            add("c", "bad..name", vec![a(1)]),
            |e| matches!(e, DnsError::Change(ChangeError::InvalidName { .. })),
            "\"bad..name\"",
        ),
        (
            add("c", "x.elsewhere.test.", vec![a(1)]),
            |e| matches!(e, DnsError::Change(ChangeError::InvalidName { .. })),
            "\"x.elsewhere.test.\"",
        ),
        (
            add("c", "srv", vec![bad_srv]),
            |e| matches!(e, DnsError::Change(ChangeError::InvalidRecord { .. })),
            "\"srv\"",
        ),
        (
            add("c", "txt", vec![long_txt]),
            |e| matches!(e, DnsError::Change(ChangeError::InvalidRecord { .. })),
            "\"txt\"",
        ),
        (
            remove("c", "nosuch", None),
            |e| matches!(e, DnsError::Change(ChangeError::NameNotFound { .. })),
            "\"nosuch\" does not exist",
        ),
        (
            remove("c", "host1", Some(vec![a(77)])),
            |e| matches!(e, DnsError::Change(ChangeError::RecordNotFound { .. })),
            "no record A 192.0.2.77",
        ),
        (
            add("c", "host1", vec![a(1)]),
            |e| matches!(e, DnsError::Change(ChangeError::RecordExists { .. })),
            "already has record A 192.0.2.1",
        ),
        (
            add("c", "host1", vec![cname.clone()]),
            |e| {
                matches!(
                    e,
                    DnsError::Change(ChangeError::InvalidConfig(_)) | DnsError::InvalidConfig(_)
                )
            },
            "CNAME beside other records",
        ),
        (
            add("c", "@", vec![cname]),
            |e| {
                matches!(
                    e,
                    DnsError::Change(ChangeError::InvalidConfig(_)) | DnsError::InvalidConfig(_)
                )
            },
            "CNAME at its apex",
        ),
        (
            DnsChange {
                idempotency_key: None,
                comment: "partly valid".into(),
                add: vec![NameRecords { name: "fine".into(), records: vec![a(9)] }],
                remove: vec![NameRemoval { name: "nosuch".into(), records: None }],
            },
            |e| matches!(e, DnsError::Change(ChangeError::NameNotFound { .. })),
            "\"nosuch\"",
        ),
    ];
    let before = ds.dns_config_read(GROUP, None).await.unwrap();
    for (change, is_expected, message) in cases {
        let error = ds.dns_change_commit(GROUP, "bad", &change).await.unwrap_err();
        assert!(is_expected(&error), "{change:?} gave {error:?}");
        let full = format!(
            "{error} {}",
            std::error::Error::source(&error).map(|s| s.to_string()).unwrap_or_default()
        );
        assert!(full.contains(message), "{full:?} should name {message:?}");
        assert_eq!(
            ds.dns_config_read(GROUP, None).await.unwrap(),
            before,
            "{change:?} left a trace"
        );
    }
    assert_eq!(ds.dns_versions_list(GROUP, None).await.unwrap().len(), 1);

    let error = ds
        .dns_change_commit(DnsGroup::External, "x", &add("c", "x", vec![a(1)]))
        .await
        .unwrap_err();
    assert!(
        matches!(error, DnsError::GroupNotInitialized { group: DnsGroup::External }),
        "{error}"
    );
    let zones = [ZoneSpec { zone_name: ZONE.into(), ttl_seconds: 60 }];
    let error = ds
        .dns_group_initialize(GROUP, &zones, "x", &add("again", "y", vec![a(1)]))
        .await
        .unwrap_err();
    assert!(matches!(error, DnsError::GroupAlreadyInitialized { .. }), "{error}");
    let error = ds
        .dns_group_initialize(DnsGroup::External, &zones, "x", &add("same zone", "y", vec![a(1)]))
        .await
        .unwrap_err();
    assert!(matches!(error, DnsError::ZoneExists { .. }), "{error}");
    let error = ds.dns_config_read(GROUP, Some(99)).await.unwrap_err();
    assert!(
        matches!(error, DnsError::GenerationNotFound { generation: 99, latest: 1, .. }),
        "{error}"
    );
    let error = ds.dns_diff(GROUP, 1, 0).await.unwrap_err();
    assert!(matches!(error, DnsError::DiffBackwards { .. }), "{error}");
    assert_eq!(ds.dns_config_read(GROUP, None).await.unwrap(), before);
}

/// An unreachable database is an error naming its address, within the
/// connect timeout.
#[tokio::test]
async fn unreachable_database_is_a_clear_error() {
    let db = TestDatabase::new().await;
    let url = db.url.clone();
    drop(db);
    let options = db_model::DatastoreOptions {
        connect_timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let datastore = Datastore::new(&url, options).unwrap();
    let error = datastore.dns_version_latest(GROUP).await.unwrap_err();
    assert!(matches!(error, DnsError::Database(db_model::DbError::Connection { .. })), "{error:?}");
    assert!(error.to_string().contains("127.0.0.1:"), "{error}");
}

/// A name's whole history in one query: every stretch with the versions that
/// opened and closed it (who, when, why), across unrelated generations, and
/// the events a person reads; a name that never existed has none.
#[tokio::test]
async fn name_history_lists_every_stretch_with_its_versions() {
    let db = initialized().await;
    let store = &db.datastore;
    store.dns_change_commit(GROUP, "alice", &add("shop opens", "shop", vec![a(10)])).await.unwrap(); // 2
    store.dns_change_commit(GROUP, "bob", &add("unrelated", "other", vec![a(11)])).await.unwrap(); // 3
    store
        .dns_change_commit(GROUP, "carol", &add("second address", "shop", vec![a(12)]))
        .await
        .unwrap(); // 4
    store.dns_change_commit(GROUP, "dave", &remove("shop closes", "shop", None)).await.unwrap(); // 5
    store
        .dns_change_commit(GROUP, "erin", &add("shop reopens", "shop", vec![a(13)]))
        .await
        .unwrap(); // 6

    let stretches = store.dns_name_history(ZONE, "shop").await.unwrap();
    let summary: Vec<(u64, Option<u64>, usize)> = stretches
        .iter()
        .map(|s| (s.added.generation, s.removed.as_ref().map(|r| r.generation), s.records.len()))
        .collect();
    assert_eq!(summary, vec![(2, Some(4), 1), (4, Some(5), 2), (6, None, 1)]);
    assert_eq!(stretches[0].added.creator, "alice");
    assert_eq!(stretches[1].removed.as_ref().unwrap().comment, "shop closes");

    use dns_types::history::{NameEventKind::*, name_events};
    let events: Vec<_> =
        name_events(&stretches).iter().map(|e| (e.kind, e.version.generation)).collect();
    assert_eq!(events, vec![(Added, 2), (Changed, 4), (Removed, 5), (Added, 6)]);

    assert!(store.dns_name_history(ZONE, "never-there").await.unwrap().is_empty());
    let zones = store.dns_zones().await.unwrap();
    assert_eq!(zones.len(), 1);
    assert_eq!((zones[0].group, zones[0].zone_name.as_str()), (GROUP, ZONE));
    let live = store.dns_zone_live_names(ZONE).await.unwrap();
    assert!(live.contains(&"shop".to_string()) && live.contains(&"other".to_string()));
}

/// A value the database cannot store is the input's fault (a 400 upstream),
/// not an outage (503), even when validation missed it.
#[tokio::test]
async fn data_the_database_refuses_is_invalid_input_not_an_outage() {
    let db = TestDatabase::new().await;
    let (client, connection) =
        tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let source = client.query_one("SELECT $1::TEXT", &[&"nul\0here"]).await.unwrap_err();
    let error =
        DnsError::Database(db_model::DbError::Query { what: "test", step: "storing", source });
    assert!(error.is_invalid_input(), "{error:?}");
    let unreachable = DnsError::Database(db_model::DbError::Timeout {
        what: "test",
        address: "127.0.0.1:1".into(),
        timeout: std::time::Duration::from_secs(1),
    });
    assert!(!unreachable.is_invalid_input());
}

/// A change sent again with its idempotency key (its first outcome lost) is
/// answered with the generation it created, and not applied again; the key
/// sent with another change is refused; keys are per group.
#[tokio::test]
async fn a_change_sent_again_with_its_key_is_applied_once() {
    let db = initialized().await;
    let mut change = add("keyed", "keyed", vec![a(50)]);
    change.idempotency_key = Some("4d1c5b1e-key".into());
    let first = db.datastore.dns_change_commit(GROUP, "nexus-a", &change).await.unwrap();
    // Sent again, through another Nexus (another creator): same answer.
    let again = db.datastore.dns_change_commit(GROUP, "nexus-b", &change).await.unwrap();
    assert_eq!(again, first);
    let latest = db.datastore.dns_version_latest(GROUP).await.unwrap();
    assert_eq!(latest.generation, first.generation, "no second generation");

    // Without the key, the same change is a new change (and refused: the
    // record is there already): the key, not the content, makes it a retry.
    let mut unkeyed = change.clone();
    unkeyed.idempotency_key = None;
    assert!(db.datastore.dns_change_commit(GROUP, "nexus-a", &unkeyed).await.is_err());

    // The key with another change: refused, naming the generation.
    let mut other = add("other", "other", vec![a(51)]);
    other.idempotency_key = change.idempotency_key.clone();
    match db.datastore.dns_change_commit(GROUP, "nexus-a", &other).await {
        Err(DnsError::IdempotencyKeyReused { generation, .. }) => {
            assert_eq!(generation, first.generation)
        }
        other => panic!("expected IdempotencyKeyReused, got {other:?}"),
    }
    assert_eq!(db.datastore.dns_version_latest(GROUP).await.unwrap().generation, first.generation);

    // An invalid key is refused before anything is written.
    let mut bad = add("bad key", "bad", vec![a(52)]);
    bad.idempotency_key = Some("has space".into());
    assert!(matches!(
        db.datastore.dns_change_commit(GROUP, "nexus-a", &bad).await,
        Err(DnsError::Change(ChangeError::InvalidIdempotencyKey { .. }))
    ));
}
