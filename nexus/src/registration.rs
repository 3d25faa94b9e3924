//! A starting Nexus makes sure internal DNS points at its internal API: an
//! SRV record under `_nexus._tcp` and a host record `<id>.host`.
//!
//! Only what is missing or wrong is changed, in one DNS change whose comment
//! says which Nexus started: a real "component added" event, visible in the
//! DNS history and propagated like any other change.  Several Nexus
//! starting together each add their own records; the change is merged into
//! whatever the others wrote (see `Datastore::dns_change_commit`).

use anyhow::{Context, bail};
use db_model::{Datastore, DnsError};
use dns_types::change::ChangeError;
use dns_types::{DnsChange, DnsGroup, DnsRecord, DnsVersion, NameRecords, NameRemoval};
use internal_dns::{Registration, ServiceName};
use std::net::SocketAddr;
use uuid::Uuid;

/// The change that would register `id` at `address`, or `None` if internal
/// DNS already says exactly that.
fn registration_change(
    current: &dns_types::DnsConfig,
    id: Uuid,
    zone: &str,
    address: SocketAddr,
) -> anyhow::Result<Option<DnsChange>> {
    let Some(zone_config) = current.zones.iter().find(|z| z.zone_name == zone) else {
        bail!(
            "internal DNS (generation {}) has no zone {zone:?}; zones: {:?}",
            current.generation,
            current.zones.iter().map(|z| &z.zone_name).collect::<Vec<_>>()
        );
    };
    let wanted = Registration::new(ServiceName::Nexus, id, address, zone);
    let (host, host_record) = (wanted.host.name, wanted.host.records[0].clone());
    let srv_record = wanted.srv.records[0].clone();
    let target = match &srv_record {
        DnsRecord::Srv(srv) => srv.target.clone(),
        _ => unreachable!("a registration's SRV name holds an SRV record"),
    };
    let srv_name = ServiceName::Nexus.label();

    let mut change = DnsChange {
        idempotency_key: None,
        comment: format!("Nexus {id} started: registering its internal API at {address}"),
        add: Vec::new(),
        remove: Vec::new(),
    };
    let empty = Vec::new();
    let host_records = zone_config.names.get(&host).unwrap_or(&empty);
    if host_records != &vec![host_record.clone()] {
        if !host_records.is_empty() {
            change.remove.push(NameRemoval { name: host.clone(), records: None });
        }
        change.add.push(NameRecords { name: host, records: vec![host_record] });
    }
    let srv_records = zone_config.names.get(srv_name).unwrap_or(&empty);
    let stale: Vec<DnsRecord> = srv_records
        .iter()
        .filter(|r| matches!(r, DnsRecord::Srv(s) if s.target == target) && **r != srv_record)
        .cloned()
        .collect();
    if !stale.is_empty() {
        change.remove.push(NameRemoval { name: srv_name.into(), records: Some(stale) });
    }
    if !srv_records.contains(&srv_record) {
        change.add.push(NameRecords { name: srv_name.into(), records: vec![srv_record] });
    }
    Ok((!change.add.is_empty() || !change.remove.is_empty()).then_some(change))
}

/// Registers this Nexus in internal DNS if it is not (correctly) there.
/// Returns the generation it created, if any.
pub async fn register_self(
    datastore: &Datastore,
    id: Uuid,
    zone: &str,
    address: SocketAddr,
) -> anyhow::Result<Option<DnsVersion>> {
    // Another writer may get in between the read and the commit; the commit
    // then fails validation (the records it adds or removes changed) and we
    // look again.
    for _ in 0..5 {
        let current = datastore
            .dns_config_read(DnsGroup::Internal, None)
            .await
            .context("reading internal DNS from the database")?;
        let Some(change) = registration_change(&current, id, zone, address)? else {
            tracing::info!(%id, %address, generation = current.generation, "already registered in internal DNS");
            return Ok(None);
        };
        match datastore.dns_change_commit(DnsGroup::Internal, &id.to_string(), &change).await {
            Ok(version) => {
                tracing::info!(%id, %address, generation = version.generation, "registered in internal DNS");
                return Ok(Some(version));
            }
            Err(
                e @ DnsError::Change(
                    ChangeError::RecordExists { .. }
                    | ChangeError::RecordNotFound { .. }
                    | ChangeError::NameNotFound { .. },
                ),
            ) => {
                tracing::info!(error = %e, "internal DNS changed while registering; looking again");
            }
            Err(e) => return Err(e).context("committing the registration"),
        }
    }
    bail!("internal DNS kept changing while this Nexus tried to register itself")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use dns_types::{DnsConfig, DnsConfigZone, SrvRecord};

    const ZONE: &str = "control-plane.internal";

    fn config(names: Vec<(String, Vec<DnsRecord>)>) -> DnsConfig {
        DnsConfig {
            generation: 4,
            time_created: Utc::now(),
            creator: "x".into(),
            comment: "x".into(),
            zones: vec![DnsConfigZone {
                zone_name: ZONE.into(),
                ttl_seconds: 60,
                names: names.into_iter().collect(),
            }],
        }
    }

    #[test]
    fn registers_only_what_is_missing_or_wrong() {
        let id = Uuid::nil();
        let addr: SocketAddr = "127.0.0.1:12221".parse().unwrap();
        let empty = registration_change(&config(vec![]), id, ZONE, addr).unwrap().unwrap();
        assert_eq!(empty.add.len(), 2);
        assert!(empty.remove.is_empty());
        assert!(
            empty.comment.contains(&id.to_string()) && empty.comment.contains("127.0.0.1:12221")
        );

        // Already there: nothing to do.
        let host = internal_dns::host_name(id);
        let target = format!("{host}.{ZONE}");
        let srv =
            |port| DnsRecord::Srv(SrvRecord { prio: 0, weight: 0, port, target: target.clone() });
        let other = DnsRecord::Srv(SrvRecord {
            prio: 0,
            weight: 0,
            port: 1,
            target: "other.host.x".into(),
        });
        let registered = config(vec![
            (host.clone(), vec![DnsRecord::A("127.0.0.1".parse().unwrap())]),
            (ServiceName::Nexus.label().into(), vec![srv(12221), other.clone()]),
        ]);
        assert_eq!(registration_change(&registered, id, ZONE, addr).unwrap(), None);

        // Moved to another port: the old SRV record goes, the new one comes,
        // the other Nexus's record stays.
        let moved: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let change = registration_change(&registered, id, ZONE, moved).unwrap().unwrap();
        assert_eq!(
            change.remove,
            vec![NameRemoval {
                name: ServiceName::Nexus.label().into(),
                records: Some(vec![srv(12221)])
            }]
        );
        assert_eq!(
            change.add,
            vec![NameRecords { name: ServiceName::Nexus.label().into(), records: vec![srv(4000)] }]
        );

        assert!(registration_change(&config(vec![]), id, "other.zone", addr).is_err());
    }
}
