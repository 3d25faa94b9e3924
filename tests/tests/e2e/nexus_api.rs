//! Nexus's internal API over real HTTP: bad input gets clear errors, and
//! Nexus instances starting at the same moment all register themselves.

use crate::common::*;
use dns_types::DnsGroup;
use nexus_client::types::BackgroundTasksActivateRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let t = TestStack::start(1, 0, 1).await;
    let nexus = t.nexus(0);
    let before = t.stack.datastore.dns_version_latest(DnsGroup::Internal).await.unwrap();

    // Unknown task names: 404 naming the task, and nothing is activated.
    let error = nexus.bgtask_view().bgtask_name("nosuch_task").send().await.unwrap_err();
    let nexus_client::Error::ErrorResponse(response) = error else { panic!("{error}") };
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(response.error_code.as_deref(), Some("UnknownTask"));
    assert!(response.message.contains("nosuch_task"), "{}", response.message);
    let iterations = |task: background_task_types::BackgroundTask| task.history.len();
    let config_before = iterations(task(&nexus, "dns_config_internal").await);
    let error = nexus
        .bgtask_activate()
        .body(BackgroundTasksActivateRequest {
            bgtask_names: vec!["dns_config_internal".into(), "nosuch_task".into()],
            wait: true,
        })
        .send()
        .await
        .unwrap_err();
    let nexus_client::Error::ErrorResponse(response) = error else { panic!("{error}") };
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(iterations(task(&nexus, "dns_config_internal").await), config_before);

    // Invalid DNS changes: 400 naming the offending name or record.
    let cases = [
        (add_change("bad name", "bad..name", vec![a("192.0.2.1")]), "bad..name"),
        (remove_change("missing", "nosuch", None), "\"nosuch\" does not exist"),
        (add_change("", "fine", vec![a("192.0.2.1")]), "needs a comment"),
    ];
    for (change, expected) in cases {
        let error =
            nexus.dns_change().group(DnsGroup::Internal).body(change).send().await.unwrap_err();
        let nexus_client::Error::ErrorResponse(response) = error else { panic!("{error}") };
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(response.error_code.as_deref(), Some("InvalidDnsChange"));
        assert!(
            response.message.contains(expected),
            "{} should contain {expected}",
            response.message
        );
    }
    let after = t.stack.datastore.dns_version_latest(DnsGroup::Internal).await.unwrap();
    assert_eq!(after.generation, before.generation, "a rejected change left a generation");

    // Invalid JSON and an unknown group are rejected by the API layer
    // (with the token: without it, nothing is read; see hardening.rs).
    let http = t.stack.api_token.client_builder().timeout(LIMIT).build().unwrap();
    let url = format!("{}/dns/internal/changes", t.stack.nexus[0].url());
    let response =
        http.post(&url).header("content-type", "application/json").body("{").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let url = format!("{}/dns/nosuch/changes", t.stack.nexus[0].url());
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"comment":"c","add":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexus_instances_starting_together_all_register() {
    let t = TestStack::start(1, 0, 0).await;
    let configs: Vec<nexus::config::Config> = (0..3)
        .map(|_| {
            toml_config(
                &t.stack.db_url,
                &t.stack.internal_dns_addresses().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                &t.stack.api_token_file,
            )
        })
        .collect();
    let started = futures::future::join_all(configs.iter().map(nexus::RunningNexus::start)).await;
    let running: Vec<nexus::RunningNexus> = started.into_iter().map(|r| r.unwrap()).collect();

    let config = t.stack.datastore.dns_config_read(DnsGroup::Internal, None).await.unwrap();
    let srv = &config.zones[0].names[internal_dns::ServiceName::Nexus.label()];
    assert_eq!(srv.len(), 3, "{srv:?}");
    for nexus in &running {
        assert!(config.zones[0].names.contains_key(&internal_dns::host_name(nexus.id())));
    }
    // Each registration is its own generation, with a comment naming it.
    let versions = t.stack.datastore.dns_versions_list(DnsGroup::Internal, Some(3)).await.unwrap();
    for nexus in &running {
        assert!(
            versions.iter().any(|v| v.comment.contains(&nexus.id().to_string())),
            "no registration for {} in {versions:?}",
            nexus.id()
        );
    }
    for nexus in running {
        nexus.shutdown().await.unwrap();
    }
}

fn toml_config(
    db_url: &str,
    bootstrap: &[String],
    token_file: &std::path::Path,
) -> nexus::config::Config {
    let bootstrap = bootstrap.iter().map(|b| b.parse().unwrap()).collect();
    let mut config = nexus::config::Config::new(
        uuid::Uuid::new_v4(),
        token_file.to_path_buf(),
        db_url.to_string(),
        bootstrap,
    );
    config.tasks.period_secs = 3600;
    config
}

#[tokio::test]
async fn nexus_refuses_a_mismatched_schema_and_gives_up_on_an_unreachable_database() {
    let db = test_database::TestDatabase::new().await;
    let (client, connection) =
        tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.execute("UPDATE db_metadata SET version = '0.9.0'", &[]).await.unwrap();
    let tokens = test_support::TokenDir::new();
    let config = toml_config(&db.url, &["127.0.0.1:1".to_string()], &tokens.token_file());
    let error =
        format!("{:#}", nexus::RunningNexus::start(&config).await.err().expect("must refuse"));
    assert!(
        error.contains("0.9.0") && error.contains(db_model::schema::EXPECTED_VERSION),
        "{error}"
    );

    let url = db.url.clone();
    drop(db);
    let mut config = toml_config(&url, &["127.0.0.1:1".to_string()], &tokens.token_file());
    config.database.connect_timeout_secs = 1;
    let error =
        format!("{:#}", nexus::RunningNexus::start(&config).await.err().expect("must give up"));
    assert!(
        error.contains("was not reachable within 1s") && error.contains("127.0.0.1:"),
        "{error}"
    );
}
