//! Table tests of explain's findings over observations: one healthy stack
//! as observed, and for every stage the changes to those observations that
//! a fault of that stage makes, with the verdict each must give.  Pure and
//! fast; the full-stack runs in `tests/tests/e2e/explain.rs` check that the
//! gathering sees these faults the same way.

use super::findings::evaluate;
use super::gather::{DatabaseObservation, NexusObservation, Observations, Question};
use super::report::Stage;
use crate::observe::{ServerObservation, WireObservation};
use background_task_types::{
    ActivationOutcome, ActivationReason, ActivationRecord, BackgroundTask, CurrentStatus,
    LastActivation,
};
use chrono::{DateTime, Duration, Utc};
use dns_types::apply_history::{ApplyHow, HistoryEntry, ServerEvent, ServerHistory};
use dns_types::history::NameStretch;
use dns_types::{DnsGroup, DnsRecord, DnsVersion};
use internal_dns::wire::{Transport, WireAnswer, WireRecord};
use nexus_types::task_name::DnsTaskName;
use serde_json::json;
use std::net::SocketAddr;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    "2026-12-03T10:31:00Z".parse().unwrap()
}

fn version(generation: u64) -> DnsVersion {
    DnsVersion {
        group: DnsGroup::External,
        generation,
        time_created: t0() - Duration::seconds(60 - generation as i64),
        creator: "nexus-a".into(),
        comment: format!("change {generation}"),
    }
}

fn shop() -> Vec<DnsRecord> {
    vec![DnsRecord::A("192.0.2.10".parse().unwrap())]
}

fn api(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000 + i))
}

fn dns(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5300 + i))
}

fn id(i: u16) -> Uuid {
    Uuid::from_u128(0xd000 + u128::from(i))
}

fn record(details: serde_json::Value) -> ActivationRecord {
    ActivationRecord {
        iteration: 3,
        reason: ActivationReason::Timer,
        start_time: t0() - Duration::seconds(5),
        elapsed: std::time::Duration::from_millis(4),
        outcome: ActivationOutcome::Succeeded,
        details,
    }
}

fn task(name: DnsTaskName, details: serde_json::Value) -> BackgroundTask {
    let r = record(details);
    BackgroundTask {
        name: name.to_string(),
        description: String::new(),
        period: std::time::Duration::from_secs(60),
        deadline: None,
        dependencies: vec![],
        current: CurrentStatus::Idle,
        last: LastActivation::Completed(r.clone()),
        history: vec![r],
    }
}

fn push_result(ok: bool, message: &str) -> serde_json::Value {
    json!({
        "result": if ok { "success" } else { "error" },
        "outcome": if ok { "applied" } else { "failed" },
        "message": message,
        "server_generation": 2,
        "completed_at": t0() - Duration::seconds(4),
        "history": {"last_attempt_at": t0(), "last_success_at": t0(), "failing_since": null,
                    "consecutive_failures": 0, "generation_applied": 2, "last_repair": null}
    })
}

fn nexus(generation: u64, listed: &[u16]) -> NexusObservation {
    let group = DnsGroup::External;
    let config = json!({
        "group": "external", "generation": generation, "time_created": version(generation).time_created,
        "creator": "nexus-a", "comment": "c", "names": 2, "digest": format!("d{generation}"),
        "first_seen_at": t0() - Duration::seconds(5), "changed": false
    });
    let servers = json!({
        "group": "external", "service_name": "_external-dns._tcp.control-plane.internal",
        "resolved_via": "127.0.0.1:53",
        "servers": listed.iter().map(|i| json!({"address": api(*i), "target": format!("s{i}")})).collect::<Vec<_>>(),
        "discovered_at": t0() - Duration::seconds(50), "changed": false
    });
    let results: serde_json::Map<String, serde_json::Value> =
        listed.iter().map(|i| (api(*i).to_string(), push_result(true, "updated"))).collect();
    let propagation = json!({
        "group": "external", "generation": generation,
        "config_source": {"task": "dns_config_external", "creator": "nexus-a", "comment": "c",
                          "digest": format!("d{generation}"), "first_seen_at": t0() - Duration::seconds(5)},
        "servers_source": {"task": "dns_servers_external", "discovered_at": t0() - Duration::seconds(50)},
        "servers": results,
        "all_done_at": t0() - Duration::seconds(4)
    });
    NexusObservation {
        url: "http://127.0.0.1:12221".into(),
        id: Some(Uuid::from_u128(0xa)),
        error: None,
        database_node: None,
        tasks: vec![
            task(DnsTaskName::config(group), config),
            task(DnsTaskName::servers(group), servers),
            task(DnsTaskName::propagation(group), propagation),
        ],
    }
}

fn soa(address: SocketAddr, transport: Transport, serial: u32, by: Uuid) -> WireObservation {
    WireObservation {
        dns_address: address,
        transport,
        name: "example.test".into(),
        record_type: "SOA".into(),
        asked_at: t0(),
        answer: Some(WireAnswer {
            rcode: "NOERROR".into(),
            authoritative: true,
            truncated: false,
            answers: vec![],
            soa_serial: Some(serial),
            other_answers: vec![],
            answered_by: Some(by.to_string()),
        }),
        error: None,
        late: false,
    }
}

fn server(i: u16, generation: u64, digest: &str) -> ServerObservation {
    let status = serde_json::from_value(json!({
        "id": id(i), "generation": generation, "time_applied": t0() - Duration::seconds(4),
        "applied_config_digest": digest, "dns_addresses": [dns(i)],
        "zones": [{"zone_name": "example.test", "names": 2}], "started_at": t0() - Duration::hours(1)
    }))
    .unwrap();
    ServerObservation {
        config_address: api(i),
        known_from: vec!["registered in internal generation 3".into()],
        asked_at: t0(),
        status: Some(status),
        error: None,
        late: false,
        soa: [Transport::Udp, Transport::Tcp]
            .into_iter()
            .map(|t| soa(dns(i), t, generation as u32, id(i)))
            .collect(),
        recent: None,
    }
}

fn answer(
    address: SocketAddr,
    transport: Transport,
    records: Vec<DnsRecord>,
    by: Uuid,
) -> WireObservation {
    WireObservation {
        dns_address: address,
        transport,
        name: "shop.example.test".into(),
        record_type: "A".into(),
        asked_at: t0(),
        answer: Some(WireAnswer {
            rcode: if records.is_empty() { "NXDOMAIN" } else { "NOERROR" }.into(),
            authoritative: true,
            truncated: false,
            answers: records
                .into_iter()
                .map(|record| WireRecord { owner: "shop.example.test".into(), record })
                .collect(),
            soa_serial: None,
            other_answers: vec![],
            answered_by: Some(by.to_string()),
        }),
        error: None,
        late: false,
    }
}

/// Two external servers at generation 2, which added `shop`; one Nexus
/// that loaded 2 and pushed it to both; both answer on UDP and TCP.
fn healthy() -> Observations {
    let mut wire = Vec::new();
    for i in [1, 2] {
        for t in [Transport::Udp, Transport::Tcp] {
            wire.push(answer(dns(i), t, shop(), id(i)));
        }
    }
    Observations {
        taken_at: t0(),
        question: Question {
            name: "shop.example.test".into(),
            record_type: None,
            servers: vec![],
            stuck_after_secs: 10,
        },
        database: DatabaseObservation {
            group: DnsGroup::External,
            zone: "example.test".into(),
            name: "shop".into(),
            fqdn: "shop.example.test".into(),
            latest: version(2),
            latest_digest: "d2".into(),
            stretches: vec![NameStretch { records: shop(), added: version(2), removed: None }],
            near_misses: vec![],
            registered_servers: vec![api(1), api(2)],
            internal_generation: 3,
            digests: [(2, Ok("d2".to_string())), (1, Ok("d1".to_string()))].into(),
            registered_dns: Default::default(),
            node: None,
            nodes: None,
        },
        nexus: Ok(vec![nexus(2, &[1, 2])]),
        servers: vec![server(1, 2, "d2"), server(2, 2, "d2")],
        wire,
        unclaimed_soa: vec![],
        loss: vec![],
        deadline_secs: 3,
    }
}

type Fault = fn(&mut Observations);

/// A replicated database: 127.0.0.1:5001 primary, :5002 a standby that is
/// synchronous when `synchronous`; every Nexus connected to `nexus_node`
/// (the primary when none).
fn replicated(o: &mut Observations, synchronous: bool, nexus_node: Option<&str>) {
    use db_model::cluster::*;
    let replica = ReplicaStatus {
        name: "node2".into(),
        client_address: Some("127.0.0.1".into()),
        state: "streaming".into(),
        sync_state: if synchronous { "sync" } else { "async" }.into(),
        lag_bytes: Some(0),
        lag_seconds: None,
    };
    o.database.node = Some("127.0.0.1:5001".into());
    o.database.nodes = Some(vec![
        NodeStatus {
            address: "127.0.0.1:5001".into(),
            state: NodeState::Primary(PrimaryStatus {
                timeline: Some(2),
                wal_lsn: "0/3000000".into(),
                synchronous_standby_names: "node2".into(),
                replicas: vec![replica],
            }),
        },
        NodeStatus {
            address: "127.0.0.1:5002".into(),
            state: NodeState::Standby(StandbyStatus {
                timeline: Some(2),
                replay_lsn: Some("0/3000000".into()),
                replay_age_seconds: Some(1.0),
                upstream: Some("127.0.0.1:5001".into()),
                application_name: Some("node2".into()),
            }),
        },
    ]);
    if let Ok(nexus) = &mut o.nexus {
        for n in nexus {
            n.database_node = Some(nexus_node.unwrap_or("127.0.0.1:5001").into());
        }
    }
}

/// Each fault, the stage of the verdict and what the verdict must say.
fn cases() -> Vec<(&'static str, Fault, Stage, &'static str)> {
    vec![
        ("healthy", |_| {}, Stage::Healthy, "serve it and answered it on UDP and TCP"),
        (
            "healthy on a replicated database",
            |o| replicated(o, true, None),
            Stage::Healthy,
            "serve it and answered it on UDP and TCP",
        ),
        (
            "a hung server, known by the DNS address it registered",
            |o| {
                // It answers nothing: neither its config API nor DNS.
                o.servers[1].status = None;
                o.servers[1].soa.clear();
                o.servers[1].error = Some("no answer within 2s".into());
                o.database.registered_dns = [(api(1), vec![dns(1)]), (api(2), vec![dns(2)])].into();
                for w in o.wire.iter_mut().filter(|w| w.dns_address == dns(2)) {
                    w.answer = None;
                    w.error = Some("no answer over UDP within 2s".into());
                }
            },
            Stage::Propagation,
            "127.0.0.1:8002",
        ),
        (
            "a replicated database without a synchronous standby",
            |o| replicated(o, false, None),
            Stage::Database,
            "writes cannot commit: primary 127.0.0.1:5001 requires a synchronous standby",
        ),
        (
            "never existed",
            |o| {
                o.database.stretches.clear();
                o.database.near_misses = vec!["shops.example.test".into()];
                for w in &mut o.wire {
                    *w =
                        answer(w.dns_address, w.transport, vec![], id(w.dns_address.port() - 5300));
                }
            },
            Stage::Database,
            "never existed in any generation; similar names: shops.example.test",
        ),
        (
            "removed",
            |o| {
                o.database.stretches[0].removed = Some(version(2));
                o.database.stretches[0].added = version(1);
                for w in &mut o.wire {
                    *w =
                        answer(w.dns_address, w.transport, vec![], id(w.dns_address.port() - 5300));
                }
            },
            Stage::Database,
            "it was removed in generation 2",
        ),
        (
            "a Nexus behind",
            |o| o.nexus = Ok(vec![nexus(1, &[1, 2])]),
            Stage::Nexus,
            "last found generation 1",
        ),
        (
            "a Nexus unreachable",
            |o| {
                o.nexus = Ok(vec![NexusObservation {
                    url: "http://127.0.0.1:1".into(),
                    error: Some("could not be asked: connection refused".into()),
                    ..Default::default()
                }])
            },
            Stage::Nexus,
            "connection refused",
        ),
        (
            "no Nexus in DNS",
            |o| o.nexus = Err("no Nexus registered in DNS".into()),
            Stage::Nexus,
            "no Nexus could be found",
        ),
        (
            "a registered server missing from the list",
            |o| o.nexus = Ok(vec![nexus(2, &[1])]),
            Stage::ServerList,
            "is registered in internal generation 3 but is not in",
        ),
        (
            "an unregistered DNS address that answers",
            |o| {
                o.question.servers = vec![dns(9)];
                o.wire.push(answer(dns(9), Transport::Udp, shop(), id(9)));
            },
            Stage::ServerList,
            "registered nowhere",
        ),
        (
            "a server behind",
            |o| {
                o.servers[1] = server(2, 1, "d1");
                for w in o.wire.iter_mut().filter(|w| w.dns_address == dns(2)) {
                    *w = answer(w.dns_address, w.transport, vec![], id(2));
                }
            },
            Stage::Propagation,
            "serves generation 1",
        ),
        (
            "a server down",
            |o| {
                o.servers[1].status = None;
                o.servers[1].soa.clear();
                o.servers[1].error = Some("connection refused".into());
                o.wire.retain(|w| w.dns_address != dns(2));
            },
            Stage::Propagation,
            "does not answer on its config API",
        ),
        (
            "a failed push to a server still behind",
            |o| {
                let mut n = nexus(2, &[1, 2]);
                let p = &mut n.tasks[2];
                let LastActivation::Completed(r) = &mut p.last else { unreachable!() };
                r.details["servers"][api(2).to_string()] = push_result(false, "HTTP 500");
                o.nexus = Ok(vec![n]);
                o.servers[1] = server(2, 1, "d1");
                for w in o.wire.iter_mut().filter(|w| w.dns_address == dns(2)) {
                    *w = answer(w.dns_address, w.transport, vec![], id(2));
                }
            },
            Stage::Propagation,
            "failed at",
        ),
        (
            "a Nexus that cannot reach a server that answers here",
            |o| {
                let mut n = nexus(2, &[1, 2]);
                let p = &mut n.tasks[2];
                let LastActivation::Completed(r) = &mut p.last else { unreachable!() };
                let mut failed = push_result(false, "reading its status: connect timed out");
                failed["unreachable"] = json!(true);
                r.details["servers"][api(2).to_string()] = failed;
                o.nexus = Ok(vec![n]);
                o.servers[1] = server(2, 1, "d1");
                for w in o.wire.iter_mut().filter(|w| w.dns_address == dns(2)) {
                    *w = answer(w.dns_address, w.transport, vec![], id(2));
                }
            },
            Stage::Propagation,
            "from here, 127.0.0.1:8002's config API answers (it serves generation 1) and so does \
             its DNS (127.0.0.1:5302 over UDP and TCP): the server is up, so the failure lies \
             between Nexus",
        ),
        (
            "a push to a hung server still in flight",
            |o| {
                let mut n = nexus(2, &[1, 2]);
                let p = &mut n.tasks[2];
                let LastActivation::Completed(r) = &mut p.last else { unreachable!() };
                let mut pending = push_result(false, "no answer yet to the push of generation 2");
                pending["outcome"] = json!("in_flight");
                pending["unreachable"] = json!(true);
                pending["started_at"] = json!(t0() - Duration::seconds(30));
                r.details["servers"][api(2).to_string()] = pending;
                o.nexus = Ok(vec![n]);
                o.servers[1] = server(2, 1, "d1");
                o.servers[1].status = None;
                o.servers[1].error = Some("no answer within 3s".into());
                o.servers[1].soa.clear();
                o.wire.retain(|w| w.dns_address != dns(2));
            },
            Stage::Propagation,
            "push to 127.0.0.1:8002 has had no answer since 2026-12-03T10:30:30.000Z, as of its \
             propagation of generation 2",
        ),
        (
            "a stuck propagation",
            |o| {
                let mut n = nexus(2, &[1, 2]);
                n.tasks[2].current = CurrentStatus::Running {
                    iteration: 4,
                    reason: ActivationReason::Timer,
                    start_time: t0() - Duration::seconds(30),
                    progress: Some(
                        json!({"generation": 2, "pending": [api(2).to_string()], "done": {}}),
                    ),
                };
                o.nexus = Ok(vec![n]);
            },
            Stage::Propagation,
            "has been running since",
        ),
        (
            "a server diverged",
            |o| o.servers[1] = server(2, 2, "bogus"),
            Stage::Server,
            "with digest bogus",
        ),
        (
            "a server beyond the database",
            |o| {
                o.servers[1] = server(2, 9, "d9");
                for w in o.wire.iter_mut().filter(|w| w.dns_address == dns(2)) {
                    *w = answer(w.dns_address, w.transport, vec![], id(2));
                }
            },
            Stage::Server,
            "claims generation 9",
        ),
        (
            "answers that differ from the config",
            |o| {
                o.wire[3] = answer(dns(2), Transport::Tcp, vec![], id(2));
            },
            Stage::Wire,
            "answered shop.example.test A over TCP",
        ),
        (
            "answers from another server",
            |o| o.wire[2] = answer(dns(2), Transport::Udp, shop(), id(7)),
            Stage::Wire,
            "its NSID",
        ),
        (
            "a DNS address that does not answer",
            |o| {
                o.wire[2].answer = None;
                o.wire[2].error = Some("no answer over UDP within 3s".into());
            },
            Stage::Wire,
            "did not answer",
        ),
        (
            "an SOA serial other than the generation",
            |o| o.servers[0].soa[0] = soa(dns(1), Transport::Udp, 7, id(1)),
            Stage::Wire,
            "SOA serial 7 where the server reports generation 2",
        ),
    ]
}

#[test]
fn every_stage_from_its_observations() {
    for (label, fault, stage, evidence) in cases() {
        let mut observations = healthy();
        fault(&mut observations);
        let report = evaluate(&observations);
        assert_eq!(
            report.verdict.stage, stage,
            "{label}: verdict {:?}\nfindings: {:#?}",
            report.verdict, report.findings
        );
        assert!(
            report.verdict.summary.contains(evidence),
            "{label}: the verdict lacks {evidence:?}: {}",
            report.verdict.summary
        );
        // The verdict is the earliest finding, and a healthy verdict has none.
        match report.findings.first() {
            Some(first) => assert_eq!(first.summary, report.verdict.summary, "{label}"),
            None => assert_eq!(stage, Stage::Healthy, "{label}"),
        }
    }
}

/// A Nexus still connected to a node that is not the primary (right after
/// a failover, before its next database access) is a note: the name it is
/// asked about is served everywhere, so the verdict is healthy (chaos seed
/// 47 found explain saying `nexus` here).
#[test]
fn a_nexus_still_connected_to_a_demoted_node_is_a_note_not_the_verdict() {
    let mut o = healthy();
    replicated(&mut o, true, Some("127.0.0.1:5002"));
    let report = evaluate(&o);
    assert_eq!(report.verdict.stage, Stage::Healthy, "{:#?}", report.findings);
    assert!(
        report.notes.iter().any(|n| n
            .summary
            .contains("reach 127.0.0.1:5002, which is not the primary now (127.0.0.1:5001 is)")),
        "{:#?}",
        report.notes
    );
}

/// A server that answered Nexus with an error is not "up, so the path":
/// only a server Nexus could not reach at all gets the two vantage points.
#[test]
fn a_server_that_answered_with_an_error_is_not_called_a_path_problem() {
    let (_, fault, _, _) =
        cases().into_iter().find(|(l, ..)| *l == "a failed push to a server still behind").unwrap();
    let mut observations = healthy();
    fault(&mut observations);
    let report = evaluate(&observations);
    assert!(report.verdict.summary.contains("HTTP 500"), "{}", report.verdict.summary);
    assert!(!report.verdict.summary.contains("from here"), "{}", report.verdict.summary);
}

#[test]
fn observations_survive_a_round_trip_through_json() {
    // What a bundle stores gives the same report when read back.
    for (label, fault, _, _) in cases() {
        let mut observations = healthy();
        fault(&mut observations);
        let text = serde_json::to_string(&observations).unwrap();
        let back: Observations = serde_json::from_str(&text).unwrap();
        assert_eq!(evaluate(&back).verdict, evaluate(&observations).verdict, "{label}");
    }
}

#[test]
fn a_server_with_no_dns_address_is_never_counted_as_answering() {
    let mut o = healthy();
    o.servers[1].status.as_mut().unwrap().dns_addresses.clear();
    o.servers[1].soa.clear();
    o.wire.retain(|w| w.dns_address != dns(2));
    let report = evaluate(&o);
    assert_eq!(report.verdict.stage, Stage::Wire);
    assert!(report.verdict.summary.contains("could not be checked"), "{:?}", report.verdict);
}

#[test]
fn stages_order_and_exit_codes_follow_the_pipeline() {
    for pair in Stage::PIPELINE.windows(2) {
        assert!(pair[0] < pair[1]);
        assert_eq!(pair[0].exit_code() + 1, pair[1].exit_code());
    }
    assert_eq!(Stage::Healthy.exit_code(), 0);
    assert_eq!(serde_json::to_value(Stage::ServerList).unwrap(), "server-list");
}

#[test]
fn a_cname_stands_for_every_type() {
    use super::findings::expected_answer;
    let cname = DnsRecord::Cname("target.example.test".into());
    assert_eq!(expected_answer(std::slice::from_ref(&cname), "A"), vec![cname]);
    let a = DnsRecord::A("192.0.2.1".parse().unwrap());
    let aaaa = DnsRecord::Aaaa("::1".parse().unwrap());
    assert_eq!(expected_answer(&[a.clone(), aaaa], "A"), vec![a]);
    assert!(expected_answer(&[], "A").is_empty());
}

#[test]
fn a_failure_that_later_evidence_superseded_is_a_note_not_the_verdict() {
    let mut o = healthy();
    let mut n = nexus(2, &[1, 2]);
    let LastActivation::Completed(r) = &mut n.tasks[2].last else { unreachable!() };
    r.details["servers"][api(2).to_string()] = push_result(false, "connection refused");
    o.nexus = Ok(vec![n]);
    // Server 2 serves the latest now: the failed push is past.
    let report = evaluate(&o);
    assert_eq!(report.verdict.stage, Stage::Healthy, "{:?}", report.findings);
    let note = report.notes.iter().find(|n| n.summary.starts_with("superseded:")).unwrap();
    assert!(note.summary.contains("connection refused"), "{note:?}");
    assert!(
        note.summary.contains("was brought to generation 2, the database's latest"),
        "{note:?}"
    );
}

fn entry(seq: u64, time: DateTime<Utc>, event: ServerEvent) -> HistoryEntry {
    HistoryEntry { seq, time, event }
}

fn applied(generation: u64, digest: &str, how: ApplyHow, replaced: u64) -> ServerEvent {
    ServerEvent::Applied {
        generation,
        digest: digest.into(),
        how,
        writer: Some("nexus-a".into()),
        replaced_generation: replaced,
        replaced_digest: Some(format!("d{replaced}")),
        apply_ms: 1.0,
        reason: (how == ApplyHow::Repair).then(|| "beyond the database".to_string()),
    }
}

fn history(events: Vec<HistoryEntry>, complete_since: DateTime<Utc>) -> ServerHistory {
    let mut events = events;
    events.reverse();
    ServerHistory {
        server_id: id(1),
        events,
        retained_events: 10_000,
        complete_since: Some(complete_since),
    }
}

#[test]
fn a_repair_in_the_last_hour_is_named_in_a_healthy_verdict() {
    let mut o = healthy();
    o.servers[0].recent = Some(history(
        vec![
            entry(
                1,
                t0() - Duration::minutes(50),
                ServerEvent::Started {
                    generation: 1,
                    digest: Some("d1".into()),
                    time_applied: None,
                    damaged_history_lines: 0,
                },
            ),
            entry(2, t0() - Duration::minutes(20), applied(1000, "bogus", ApplyHow::Whole, 1)),
            entry(3, t0() - Duration::minutes(19), applied(2, "d2", ApplyHow::Repair, 1000)),
        ],
        t0() - Duration::hours(2),
    ));
    let report = evaluate(&o);
    assert_eq!(report.verdict.stage, Stage::Healthy);
    let summaries: Vec<&str> = report.notes.iter().map(|n| n.summary.as_str()).collect();
    let repair = summaries.iter().find(|s| s.starts_with("REPAIRED")).expect("a repair note");
    assert!(repair.contains("served generation 1000 (digest d1000)"), "{repair}");
    assert!(
        repair
            .contains(&format!("from {}", crate::format::timestamp(t0() - Duration::minutes(20)))),
        "{repair}"
    );
    assert!(repair.contains("until repaired at"), "{repair}");
    assert!(summaries.iter().any(|s| s.contains("restarted at")), "{summaries:?}");
}

mod past {
    use super::*;
    use crate::explain::past::{PastObservations, evaluate};
    use crate::history::{NexusHistoryObservation, ServerHistoryObservation};
    use nexus_types::propagation_history::{GenerationRecord, NexusHistory};

    fn v(generation: u64, created: DateTime<Utc>) -> DnsVersion {
        DnsVersion {
            group: DnsGroup::External,
            generation,
            time_created: created,
            creator: "nexus-a".into(),
            comment: format!("change {generation}"),
        }
    }

    fn server(
        i: u16,
        events: Vec<HistoryEntry>,
        complete_since: DateTime<Utc>,
    ) -> ServerHistoryObservation {
        ServerHistoryObservation {
            config_address: api(i),
            asked_at: t0() + Duration::minutes(5),
            status: None,
            history: Some(history(events, complete_since)),
            error: None,
        }
    }

    /// Generation 18 from two minutes before t0; 19, which added shop, at
    /// t0; server 1 applied 19 at +350 ms, server 2 at +100 ms; the Nexus
    /// saw 19 at +50 ms.
    fn observations(at: DateTime<Utc>) -> PastObservations {
        let g18 = t0() - Duration::minutes(2);
        let ms = Duration::milliseconds;
        PastObservations {
            taken_at: t0() + Duration::minutes(5),
            at,
            question: Question {
                name: "shop.example.test".into(),
                record_type: None,
                servers: vec![],
                stuck_after_secs: 10,
            },
            group: DnsGroup::External,
            zone: "example.test".into(),
            name: "shop".into(),
            fqdn: "shop.example.test".into(),
            versions: vec![v(18, g18), v(19, t0())]
                .into_iter()
                .filter(|x| x.time_created <= at || x.generation == 19)
                .collect::<Vec<_>>()
                .into_iter()
                .skip_while(|x| x.generation == 18 && t0() <= at)
                .collect(),
            stretches: vec![NameStretch { records: shop(), added: v(19, t0()), removed: None }],
            digests: [(18, Ok("d18".to_string())), (19, Ok("d19".to_string()))].into(),
            nexus: Ok(vec![NexusHistoryObservation {
                url: "http://n".into(),
                id: Some(Uuid::from_u128(0xa)),
                asked_at: t0(),
                history: Some(NexusHistory {
                    nexus_id: Uuid::from_u128(0xa),
                    group: DnsGroup::External,
                    generations: vec![
                        GenerationRecord {
                            generation: 19,
                            committed_at: Some(t0()),
                            first_seen_at: Some(t0() + ms(50)),
                            pushes: vec![],
                        },
                        GenerationRecord {
                            generation: 18,
                            committed_at: Some(g18),
                            first_seen_at: Some(g18 + ms(40)),
                            pushes: vec![],
                        },
                    ],
                    retained_events: 100_000,
                    complete_since: Some(t0() - Duration::hours(1)),
                }),
                error: None,
            }]),
            servers: vec![
                server(
                    1,
                    vec![
                        entry(1, g18 + ms(60), applied(18, "d18", ApplyHow::Difference, 17)),
                        entry(2, t0() + ms(350), applied(19, "d19", ApplyHow::Difference, 18)),
                    ],
                    t0() - Duration::hours(1),
                ),
                server(
                    2,
                    vec![
                        entry(1, g18 + ms(70), applied(18, "d18", ApplyHow::Difference, 17)),
                        entry(2, t0() + ms(100), applied(19, "d19", ApplyHow::Difference, 18)),
                    ],
                    t0() - Duration::hours(1),
                ),
            ],
        }
    }

    #[test]
    fn the_query_came_before_propagation_finished() {
        let report = evaluate(&observations(t0() + Duration::milliseconds(200)));
        assert_eq!(report.verdict.stage, Stage::Propagation, "{:?}", report.findings);
        let v = &report.verdict.summary;
        assert!(v.contains(&format!("{} DNS server {}", DnsGroup::External, api(1))), "{v}");
        assert!(v.contains("still served generation 18"), "{v}");
        assert!(v.contains("generation 19, which added shop.example.test"), "{v}");
        assert!(v.contains("the query came 150ms before propagation finished"), "{v}");
        assert_eq!(report.findings.len(), 1, "server 2 had it by then: {:?}", report.findings);
    }

    #[test]
    fn a_moment_after_every_server_applied_it_is_healthy() {
        let report = evaluate(&observations(t0() + Duration::milliseconds(400)));
        assert_eq!(report.verdict.stage, Stage::Healthy, "{:?}", report.findings);
        assert!(
            report.verdict.summary.contains("the wire is not kept in history"),
            "{:?}",
            report.verdict
        );
    }

    #[test]
    fn a_moment_before_the_name_was_added_is_a_database_verdict() {
        let report = evaluate(&observations(t0() - Duration::seconds(1)));
        assert_eq!(report.verdict.stage, Stage::Database, "{:?}", report.findings);
        assert!(
            report.verdict.summary.contains("it was added in generation 19"),
            "{:?}",
            report.verdict
        );
    }

    #[test]
    fn a_moment_beyond_a_servers_history_is_unknown_not_healthy() {
        let mut o = observations(t0() + Duration::milliseconds(400));
        let h = o.servers[1].history.as_mut().unwrap();
        h.events.retain(|e| e.seq == 2);
        h.complete_since = Some(t0() + Duration::milliseconds(500));
        // Server 2's only event is after the moment: what it served then is
        // not known.
        h.events[0].time = t0() + Duration::milliseconds(600);
        let report = evaluate(&o);
        assert_eq!(report.verdict.stage, Stage::Unknown, "{:?}", report.verdict);
        assert!(report.verdict.summary.contains("does not reach back"), "{:?}", report.verdict);
        assert_eq!(report.verdict.stage.exit_code(), 1);
    }

    #[test]
    fn a_bogus_generation_served_until_a_repair_is_a_server_verdict() {
        let mut o = observations(t0() + Duration::seconds(2));
        let h = o.servers[0].history.as_mut().unwrap();
        h.events.insert(
            0,
            entry(4, t0() + Duration::seconds(3), applied(19, "d19", ApplyHow::Repair, 1000)),
        );
        h.events.insert(
            1,
            entry(3, t0() + Duration::seconds(1), applied(1000, "bogus", ApplyHow::Whole, 19)),
        );
        let report = evaluate(&o);
        assert_eq!(report.verdict.stage, Stage::Server, "{:?}", report.findings);
        let v = &report.verdict.summary;
        assert!(v.contains("served generation 1000 (digest bogus)"), "{v}");
        assert!(v.contains("until repaired at"), "{v}");
    }

    #[test]
    fn a_nexus_that_had_not_loaded_the_generation_long_after_its_commit() {
        let mut o = observations(t0() + Duration::seconds(20));
        let Ok(found) = &mut o.nexus else { unreachable!() };
        let h = found[0].history.as_mut().unwrap();
        h.generations[0].first_seen_at = Some(t0() + Duration::seconds(30));
        for s in &mut o.servers {
            let h = s.history.as_mut().unwrap();
            h.events[0].time = t0() + Duration::seconds(31);
        }
        let report = evaluate(&o);
        assert_eq!(report.verdict.stage, Stage::Nexus, "{:?}", report.findings);
        assert!(report.verdict.summary.contains("it first saw it at"), "{:?}", report.verdict);
    }
}

fn probe(i: u16, answered: u32) -> crate::observe::LossProbe {
    crate::observe::LossProbe { dns_address: dns(i), asked_at: t0(), asked: 16, answered }
}

#[test]
fn a_path_that_loses_some_packets_is_a_wire_finding() {
    // Every question of the name was answered (a lucky draw), but the loss
    // probe to server 2 lost 7 of 16: never healthy.
    let mut o = healthy();
    o.loss = vec![probe(1, 16), probe(2, 9)];
    let report = evaluate(&o);
    assert_eq!(report.verdict.stage, Stage::Wire, "{:?}", report.verdict);
    assert!(report.verdict.summary.contains(&format!("DNS at {} (server {}", dns(2), id(2))));
    assert!(report.verdict.summary.contains("9 answered and 7 got no answer within 3s (43%)"));
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);

    // All answered: healthy.  None answered while the name was: still
    // loss, never healthy.  None answered and neither was the name over
    // UDP: that wire finding says it, once.
    o.loss = vec![probe(1, 16), probe(2, 16)];
    assert_eq!(evaluate(&o).verdict.stage, Stage::Healthy);
    o.loss = vec![probe(1, 16), probe(2, 0)];
    assert_eq!(evaluate(&o).findings.len(), 1);
    assert_eq!(evaluate(&o).verdict.stage, Stage::Wire);
    for w in o.wire.iter_mut().filter(|w| w.dns_address == dns(2) && w.transport == Transport::Udp)
    {
        w.answer = None;
        w.error = Some("no answer over UDP within 3s".into());
    }
    let report = evaluate(&o);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert!(report.verdict.summary.contains("did not answer"), "{:?}", report.verdict);
}

#[test]
fn what_missed_the_deadline_is_named() {
    let mut o = healthy();
    o.servers[1].late = true;
    o.servers[1].status = None;
    o.servers[1].error = Some("no answer within 3s".into());
    o.servers[1].soa.clear();
    for w in o.wire.iter_mut().filter(|w| w.dns_address == dns(2)) {
        w.answer = None;
        w.error = Some("no answer within 3s".into());
        w.late = true;
    }
    let report = evaluate(&o);
    assert_eq!(
        report.late,
        vec![format!("config API {}", api(2)), format!("DNS {} over UDP and TCP", dns(2))]
    );
    let text = super::render::render(&report);
    assert!(
        text.contains(&format!(
            "did not answer within 3s (one deadline for every server question): config API {}; \
             DNS {} over UDP and TCP",
            api(2),
            dns(2)
        )),
        "{text}"
    );
}
