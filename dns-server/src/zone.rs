//! A config compiled for answering queries, and the answer logic.
//!
//! A [`Served`] is built from one [`DnsConfig`] off to the side and then
//! swapped in whole, so every answer comes from exactly one generation.  It
//! holds ready-made DNS records keyed by lower-case name, plus the empty
//! non-terminals and each zone's synthesized SOA.

use chrono::{DateTime, Utc};
use dns_types::{DnsConfig, DnsRecord, names};
use hickory_proto::rr::rdata::{self, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use std::collections::{HashMap, HashSet};

/// Longest CNAME chain followed inside our own zones.
const MAX_CNAME_CHAIN: usize = 8;
/// SOA timers (seconds).  Nothing transfers our zones, so only the negative
/// caching TTL (`minimum`, set to the zone TTL) matters in practice.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86400;

/// Most bytes of additional records in one response.
const MAX_ADDITIONAL_BYTES: usize = 32 * 1024;

/// A config as served: what it is (generation, when and why it was made,
/// when it was applied, its digest) and the compiled zones.  The config
/// itself is not kept in memory: `GET /config` reads it from storage.
pub struct Served {
    pub applied: Option<Applied>,
    zones: Vec<Zone>,
}

pub struct Applied {
    pub generation: u64,
    pub time_created: DateTime<Utc>,
    pub creator: String,
    pub comment: String,
    pub time_applied: DateTime<Utc>,
    pub digest: String,
}

struct Zone {
    name: String,
    apex: LowerName,
    soa: Record,
    names: HashMap<LowerName, Vec<Record>>,
    /// Names with no records of their own but names below them.
    empty_non_terminals: HashSet<LowerName>,
}

/// How to answer one question.
#[derive(Debug, PartialEq)]
pub enum Answer<'a> {
    /// Not a name we are authoritative for.
    Refused,
    /// Records for the question (`answers`), and addresses of SRV targets
    /// that we also serve (`additionals`).
    Found { answers: Vec<&'a Record>, additionals: Vec<&'a Record> },
    /// The name exists, but has no records of the requested type.
    NoData { soa: &'a Record },
    /// The name does not exist.
    NxDomain { soa: &'a Record },
}

#[derive(Debug, thiserror::Error)]
#[error("cannot serve name {name:?}: {reason}")]
pub struct CompileError {
    name: String,
    reason: String,
}

impl Served {
    /// Nothing to serve: every question is refused.
    pub fn empty() -> Served {
        Served { applied: None, zones: Vec::new() }
    }

    /// Compiles a validated config (see `DnsConfig::validate`).
    pub fn compile(
        config: &DnsConfig,
        time_applied: DateTime<Utc>,
    ) -> Result<Served, CompileError> {
        let mut zones = Vec::with_capacity(config.zones.len());
        for zone in &config.zones {
            let apex_name = fqdn(&zone.zone_name)?;
            let ttl = zone.ttl_seconds;
            let soa = Record::from_rdata(
                apex_name.clone(),
                ttl,
                RData::SOA(SOA::new(
                    fqdn(&format!("ns.{}", zone.zone_name))?,
                    fqdn(&format!("admin.{}", zone.zone_name))?,
                    // SOA serials are 32 bits; generations beyond that wrap,
                    // which serial number arithmetic (RFC 1982) tolerates.
                    config.generation as u32,
                    SOA_REFRESH,
                    SOA_RETRY,
                    SOA_EXPIRE,
                    ttl,
                )),
            );
            let apex = LowerName::new(&apex_name);
            let mut names = HashMap::with_capacity(zone.names.len());
            let mut empty_non_terminals = HashSet::new();
            for (relative, records) in &zone.names {
                let absolute = names::absolute(relative, &zone.zone_name);
                let name = fqdn(&absolute)?;
                let compiled = records
                    .iter()
                    .map(|r| to_record(&name, ttl, r))
                    .collect::<Result<Vec<_>, _>>()?;
                // Record the ancestors below the apex; once one is known, so
                // are all of its own ancestors.
                let mut parent = name.base_name();
                while parent.num_labels() > apex_name.num_labels()
                    && empty_non_terminals.insert(LowerName::new(&parent))
                {
                    parent = parent.base_name();
                }
                names.insert(LowerName::new(&name), compiled);
            }
            empty_non_terminals.retain(|n| !names.contains_key(n));
            zones.push(Zone {
                name: zone.zone_name.clone(),
                apex,
                soa,
                names,
                empty_non_terminals,
            });
        }
        let applied = Applied {
            generation: config.generation,
            time_created: config.time_created,
            creator: config.creator.clone(),
            comment: config.comment.clone(),
            time_applied,
            digest: dns_types::config_digest(config),
        };
        Ok(Served { applied: Some(applied), zones })
    }

    pub fn generation(&self) -> u64 {
        self.applied.as_ref().map(|a| a.generation).unwrap_or(0)
    }

    /// (zone name, number of names) for each zone.
    pub fn zone_sizes(&self) -> impl Iterator<Item = (&str, usize)> {
        self.zones.iter().map(|z| (z.name.as_str(), z.names.len()))
    }

    /// Answers one question of class IN.
    pub fn lookup(&self, qname: &LowerName, qtype: RecordType) -> Answer<'_> {
        let Some(zone) = self.zone_for(qname) else {
            return Answer::Refused;
        };
        let mut answers = Vec::new();
        let mut current = qname.clone();
        let mut current_zone = zone;
        for _ in 0..MAX_CNAME_CHAIN {
            let is_apex = current == current_zone.apex;
            let records = current_zone.names.get(&current);
            if records.is_none() && !is_apex {
                if !answers.is_empty() {
                    // A CNAME into a hole: the chain so far is the answer.
                    break;
                }
                return if current_zone.empty_non_terminals.contains(&current) {
                    Answer::NoData { soa: &current_zone.soa }
                } else {
                    Answer::NxDomain { soa: &current_zone.soa }
                };
            }
            let records = records.map(Vec::as_slice).unwrap_or_default();
            let before = answers.len();
            if is_apex && matches!(qtype, RecordType::SOA | RecordType::ANY) {
                answers.push(&current_zone.soa);
            }
            answers.extend(
                records.iter().filter(|r| qtype == RecordType::ANY || r.record_type() == qtype),
            );
            if answers.len() > before || qtype == RecordType::CNAME {
                break;
            }
            // Follow a CNAME when the question is for another type.
            let Some(cname) = records.iter().find(|r| r.record_type() == RecordType::CNAME) else {
                break;
            };
            answers.push(cname);
            let RData::CNAME(rdata::CNAME(target)) = &cname.data else { break };
            let target = LowerName::new(target);
            match self.zone_for(&target) {
                Some(zone) => {
                    current = target;
                    current_zone = zone;
                }
                None => break,
            }
        }
        if answers.is_empty() {
            return Answer::NoData { soa: &zone.soa };
        }
        let additionals = self.additionals_for(&answers);
        Answer::Found { answers, additionals }
    }

    fn zone_for(&self, name: &LowerName) -> Option<&Zone> {
        // Zones never nest (configs are validated), so at most one matches.
        self.zones.iter().find(|z| z.apex.zone_of(name))
    }

    /// Addresses of the SRV targets and name servers in the answer that we
    /// serve, so that a client finds a service in one round trip.
    ///
    /// Additional records are optional: they stop at [`MAX_ADDITIONAL_BYTES`]
    /// so that, with answers bounded by `dns_types::limits`, every response
    /// fits one TCP message.
    fn additionals_for<'a>(&'a self, answers: &[&'a Record]) -> Vec<&'a Record> {
        let mut additionals = Vec::new();
        let mut bytes = 0;
        for record in answers {
            // The addresses of SRV targets and of name servers (glue).
            let target = match &record.data {
                RData::SRV(srv) => LowerName::new(&srv.target),
                RData::NS(ns) => LowerName::new(&ns.0),
                _ => continue,
            };
            let Some(records) = self.zone_for(&target).and_then(|z| z.names.get(&target)) else {
                continue;
            };
            for address in records
                .iter()
                .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
            {
                // Owner (uncompressed, at worst), fixed fields, address.
                bytes += target.len() + 2 + 10 + 16;
                if bytes > MAX_ADDITIONAL_BYTES {
                    return additionals;
                }
                additionals.push(address);
            }
        }
        additionals
    }

    /// The whole zone whose apex is `apex`, as a zone transfer sends it:
    /// the SOA, every record, the SOA again (RFC 5936).  `None` when we
    /// serve no zone with that apex.
    pub fn transfer(&self, apex: &LowerName) -> Option<Vec<&Record>> {
        let zone = self.zones.iter().find(|z| z.apex == *apex)?;
        let mut names: Vec<(&LowerName, &Vec<Record>)> = zone.names.iter().collect();
        names.sort_by(|a, b| a.0.cmp(b.0));
        let mut records = vec![&zone.soa];
        records.extend(names.into_iter().flat_map(|(_, records)| records.iter()));
        records.push(&zone.soa);
        Some(records)
    }
}

/// The absolute `Name` of a canonical name (validated, lower case, no
/// trailing dot).  Built from its labels as raw bytes: the names were checked
/// by `DnsConfig::validate`, so the text parser's escapes and IDNA handling
/// would only cost time (a quarter of compiling a large config).
fn fqdn(name: &str) -> Result<Name, CompileError> {
    Name::from_labels(name.split('.').map(str::as_bytes))
        .map_err(|e| CompileError { name: name.into(), reason: e.to_string() })
}

fn to_record(name: &Name, ttl: u32, record: &DnsRecord) -> Result<Record, CompileError> {
    let rdata = match record {
        DnsRecord::A(a) => RData::A(rdata::A(*a)),
        DnsRecord::Aaaa(a) => RData::AAAA(rdata::AAAA(*a)),
        DnsRecord::Srv(s) => RData::SRV(SRV::new(s.prio, s.weight, s.port, fqdn(&s.target)?)),
        DnsRecord::Ns(t) => RData::NS(rdata::NS(fqdn(t)?)),
        DnsRecord::Cname(t) => RData::CNAME(rdata::CNAME(fqdn(t)?)),
        DnsRecord::Txt(t) => RData::TXT(TXT::new(txt_strings(t))),
    };
    Ok(Record::from_rdata(name.clone(), ttl, rdata))
}

/// Splits TXT data into character-strings of at most 255 bytes, on
/// character boundaries.
fn txt_strings(data: &str) -> Vec<String> {
    if data.is_empty() {
        return vec![String::new()];
    }
    let mut strings = Vec::new();
    let mut current = String::new();
    for c in data.chars() {
        if current.len() + c.len_utf8() > 255 {
            strings.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    strings.push(current);
    strings
}

#[cfg(test)]
mod tests {
    use super::*;
    use dns_types::{DnsConfigZone, SrvRecord};
    use std::str::FromStr;

    /// Additional records are cut at the byte budget, so that many SRV
    /// targets with many addresses still fit one TCP message.
    #[test]
    fn additionals_stop_at_their_budget() {
        let mut names = std::collections::BTreeMap::new();
        let srv: Vec<DnsRecord> = (0..200)
            .map(|i| {
                let target = format!("h{i}.control-plane.internal");
                let addresses = (0..100)
                    .map(|j| DnsRecord::Aaaa(format!("fd00::{i:x}:{j:x}").parse().unwrap()));
                names.insert(format!("h{i}"), addresses.collect());
                DnsRecord::Srv(SrvRecord { prio: 0, weight: 0, port: 80, target })
            })
            .collect();
        names.insert("_big._tcp".to_string(), srv);
        let served = compiled(1, names);
        let name = LowerName::from_str("_big._tcp.control-plane.internal.").unwrap();
        let Answer::Found { answers, additionals } = served.lookup(&name, RecordType::SRV) else {
            panic!("no answer")
        };
        assert_eq!(answers.len(), 200);
        assert!(!additionals.is_empty() && additionals.len() < 200 * 100, "{}", additionals.len());
        let bytes: usize = additionals.iter().map(|r| r.name.len() + 2 + 10 + 16).sum();
        assert!(bytes <= MAX_ADDITIONAL_BYTES, "{bytes}");
    }

    fn served() -> Served {
        let mut names = std::collections::BTreeMap::new();
        let host = "abc.host";
        names.insert(host.to_string(), vec![DnsRecord::Aaaa("fd00::1".parse().unwrap())]);
        names.insert(
            "_nexus._tcp".to_string(),
            vec![DnsRecord::Srv(SrvRecord {
                prio: 0,
                weight: 0,
                port: 12221,
                target: "abc.host.control-plane.internal".into(),
            })],
        );
        names.insert(
            "alias".into(),
            vec![DnsRecord::Cname("abc.host.control-plane.internal".into())],
        );
        names.insert("outside".into(), vec![DnsRecord::Cname("www.example.com".into())]);
        names.insert("@".into(), vec![DnsRecord::Ns("ns1.control-plane.internal".into())]);
        names.insert("long".into(), vec![DnsRecord::Txt("x".repeat(600))]);
        compiled(42, names)
    }

    /// `names` as zone control-plane.internal (TTL 30) at `generation`,
    /// validated and compiled.
    fn compiled(
        generation: u64,
        names: std::collections::BTreeMap<String, Vec<DnsRecord>>,
    ) -> Served {
        let config = DnsConfig {
            generation,
            time_created: Utc::now(),
            creator: "t".into(),
            comment: "t".into(),
            zones: vec![DnsConfigZone {
                zone_name: "control-plane.internal".into(),
                ttl_seconds: 30,
                names,
            }],
        };
        config.validate().unwrap();
        Served::compile(&config, Utc::now()).unwrap()
    }

    fn q(name: &str) -> LowerName {
        LowerName::new(&Name::from_str(name).unwrap())
    }

    fn types(answer: &Answer<'_>) -> Vec<RecordType> {
        match answer {
            Answer::Found { answers, .. } => answers.iter().map(|r| r.record_type()).collect(),
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[test]
    fn answers_by_name_and_type_case_insensitively() {
        let s = served();
        assert_eq!(
            types(&s.lookup(&q("ABC.Host.control-plane.INTERNAL."), RecordType::AAAA)),
            vec![RecordType::AAAA]
        );
        let Answer::Found { additionals, .. } =
            s.lookup(&q("_nexus._tcp.control-plane.internal."), RecordType::SRV)
        else {
            panic!()
        };
        assert_eq!(additionals.len(), 1, "SRV answers carry the target's address");
    }

    #[test]
    fn negative_answers() {
        let s = served();
        let soa_serial = |a: Answer<'_>| match a {
            Answer::NoData { soa } | Answer::NxDomain { soa } => match &soa.data {
                RData::SOA(soa) => soa.serial,
                _ => panic!(),
            },
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            s.lookup(&q("nope.control-plane.internal."), RecordType::A),
            Answer::NxDomain { .. }
        ));
        assert!(matches!(
            s.lookup(&q("abc.host.control-plane.internal."), RecordType::A),
            Answer::NoData { .. }
        ));
        // Empty non-terminals exist: NODATA, not NXDOMAIN.
        assert!(matches!(
            s.lookup(&q("_tcp.control-plane.internal."), RecordType::SRV),
            Answer::NoData { .. }
        ));
        assert!(matches!(
            s.lookup(&q("host.control-plane.internal."), RecordType::A),
            Answer::NoData { .. }
        ));
        assert_eq!(soa_serial(s.lookup(&q("nope.control-plane.internal."), RecordType::A)), 42);
        assert_eq!(s.lookup(&q("example.com."), RecordType::A), Answer::Refused);
        assert_eq!(s.lookup(&q("internal."), RecordType::A), Answer::Refused);
        assert_eq!(
            Served::empty().lookup(&q("abc.host.control-plane.internal."), RecordType::A),
            Answer::Refused
        );
    }

    #[test]
    fn apex_soa_and_ns() {
        let s = served();
        assert_eq!(
            types(&s.lookup(&q("control-plane.internal."), RecordType::SOA)),
            vec![RecordType::SOA]
        );
        assert_eq!(
            types(&s.lookup(&q("control-plane.internal."), RecordType::NS)),
            vec![RecordType::NS]
        );
        assert!(matches!(
            s.lookup(&q("control-plane.internal."), RecordType::A),
            Answer::NoData { .. }
        ));
    }

    #[test]
    fn cnames_are_followed_inside_our_zones() {
        let s = served();
        assert_eq!(
            types(&s.lookup(&q("alias.control-plane.internal."), RecordType::AAAA)),
            vec![RecordType::CNAME, RecordType::AAAA]
        );
        assert_eq!(
            types(&s.lookup(&q("alias.control-plane.internal."), RecordType::CNAME)),
            vec![RecordType::CNAME]
        );
        assert_eq!(
            types(&s.lookup(&q("outside.control-plane.internal."), RecordType::A)),
            vec![RecordType::CNAME]
        );
    }

    #[test]
    fn long_txt_is_split_into_character_strings() {
        assert_eq!(
            txt_strings(&"x".repeat(600)).iter().map(String::len).collect::<Vec<_>>(),
            vec![255, 255, 90]
        );
        assert_eq!(txt_strings(""), vec![String::new()]);
        let multibyte = "é".repeat(200);
        assert!(txt_strings(&multibyte).iter().all(|s| s.len() <= 255));
    }
}
