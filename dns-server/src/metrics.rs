//! The server's Prometheus metrics (`GET /metrics`): queries by transport,
//! type and response code; the generation served and when it was applied;
//! config applies by kind and outcome, with their duration; the size of
//! each zone; how the UDP loops take their queries (batches, backlogs,
//! answers dropped).  Every label takes a bounded set of values: names,
//! comments and addresses never become labels.

use crate::zone::Served;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Other,
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Other => "other",
        })
    }
}

/// Query types we serve, and the rest folded into `other`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum QueryType {
    A,
    AAAA,
    SRV,
    NS,
    CNAME,
    TXT,
    SOA,
    ANY,
    OTHER,
}

impl From<RecordType> for QueryType {
    fn from(rtype: RecordType) -> QueryType {
        match rtype {
            RecordType::A => QueryType::A,
            RecordType::AAAA => QueryType::AAAA,
            RecordType::SRV => QueryType::SRV,
            RecordType::NS => QueryType::NS,
            RecordType::CNAME => QueryType::CNAME,
            RecordType::TXT => QueryType::TXT,
            RecordType::SOA => QueryType::SOA,
            RecordType::ANY => QueryType::ANY,
            _ => QueryType::OTHER,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum Rcode {
    NOERROR,
    NXDOMAIN,
    REFUSED,
    FORMERR,
    NOTIMP,
    SERVFAIL,
    BADVERS,
    OTHER,
}

impl From<ResponseCode> for Rcode {
    fn from(code: ResponseCode) -> Rcode {
        match code {
            ResponseCode::NoError => Rcode::NOERROR,
            ResponseCode::NXDomain => Rcode::NXDOMAIN,
            ResponseCode::Refused => Rcode::REFUSED,
            ResponseCode::FormErr => Rcode::FORMERR,
            ResponseCode::NotImp => Rcode::NOTIMP,
            ResponseCode::ServFail => Rcode::SERVFAIL,
            ResponseCode::BADVERS => Rcode::BADVERS,
            _ => Rcode::OTHER,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub transport: Transport,
    pub qtype: QueryType,
    pub rcode: Rcode,
}

/// How a config reached the server.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ApplyKind {
    Put,
    Diff,
    Repair,
}

impl EncodeLabelValue for ApplyKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            ApplyKind::Put => "put",
            ApplyKind::Diff => "diff",
            ApplyKind::Repair => "repair",
        })
    }
}

/// What became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum ApplyOutcome {
    Applied,
    AlreadyApplied,
    Invalid,
    BadGeneration,
    RepairPrecondition,
    DiffNotApplicable,
    StorageFailed,
    Internal,
}

impl EncodeLabelValue for ApplyOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            ApplyOutcome::Applied => "applied",
            ApplyOutcome::AlreadyApplied => "already_applied",
            ApplyOutcome::Invalid => "invalid",
            ApplyOutcome::BadGeneration => "bad_generation",
            ApplyOutcome::RepairPrecondition => "repair_precondition",
            ApplyOutcome::DiffNotApplicable => "diff_not_applicable",
            ApplyOutcome::StorageFailed => "storage_failed",
            ApplyOutcome::Internal => "internal",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    pub kind: ApplyKind,
    pub outcome: ApplyOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabels {
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLogLabels {
    /// `written`, `dropped` (the writer was behind) or `failed`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UdpLoopLabels {
    role: crate::udp::Role,
}

/// One UDP loop's counters, taken once when the loop starts (a batch
/// costs an atomic add each, no lookup).
pub struct UdpLoopCounters {
    /// Calls that received at least one datagram.
    pub batches: Counter,
    /// Datagrams those calls received.
    pub datagrams: Counter,
    /// Times this loop took full batches enough in a row to wake the next.
    pub backlogs: Counter,
    /// Answers it could not send (shared by every loop).
    pub dropped: Counter,
}

pub struct Metrics {
    /// One scrape at a time: the zone sizes are cleared and refilled for
    /// each, and two at once would see each other's half.
    render_lock: std::sync::Mutex<()>,
    query_log_lines: Family<QueryLogLabels, Gauge<i64>>,
    registry: Registry,
    queries: Family<QueryLabels, Counter>,
    applies: Family<ApplyLabels, Counter>,
    apply_seconds: Family<ApplyLabels, Histogram>,
    generation: Gauge,
    applied_at: Gauge<f64, AtomicU64>,
    zone_names: Family<ZoneLabels, Gauge>,
    udp_batches: Family<UdpLoopLabels, Counter>,
    udp_datagrams: Family<UdpLoopLabels, Counter>,
    udp_backlogs: Family<UdpLoopLabels, Counter>,
    udp_answers_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dns_server");
        let queries = Family::<QueryLabels, Counter>::default();
        registry.register("queries", "DNS queries answered", queries.clone());
        let applies = Family::<ApplyLabels, Counter>::default();
        registry.register(
            "config_applies",
            "Config writes received, by kind and outcome",
            applies.clone(),
        );
        let apply_seconds = Family::<ApplyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "config_apply_seconds",
            "Time to validate, compile, store and swap in a config",
            apply_seconds.clone(),
        );
        let generation = Gauge::default();
        registry.register("generation", "The generation served (0: none)", generation.clone());
        let applied_at = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "generation_applied_timestamp_seconds",
            "When the served generation was applied (Unix time; 0: none)",
            applied_at.clone(),
        );
        let zone_names = Family::<ZoneLabels, Gauge>::default();
        registry.register("zone_names", "Names in each zone served", zone_names.clone());
        let query_log_lines = Family::<QueryLogLabels, Gauge<i64>>::default();
        registry.register(
            "query_log_lines",
            "Lines of the query log since start, by what became of them (only with --query-log)",
            query_log_lines.clone(),
        );
        let udp_batches = Family::<UdpLoopLabels, Counter>::default();
        registry.register(
            "udp_batches",
            "System calls that received UDP queries, by the loop that made them (receiver: waits \
             for the next query; helper: drains a backlog the loop before it fell behind on)",
            udp_batches.clone(),
        );
        let udp_datagrams = Family::<UdpLoopLabels, Counter>::default();
        registry.register(
            "udp_datagrams",
            "UDP datagrams received, by loop (over udp_batches: datagrams per call)",
            udp_datagrams.clone(),
        );
        let udp_backlogs = Family::<UdpLoopLabels, Counter>::default();
        registry.register(
            "udp_backlogs",
            "Times a UDP loop took full batches enough in a row to wake the next loop to help",
            udp_backlogs.clone(),
        );
        let udp_answers_dropped = Counter::default();
        registry.register(
            "udp_answers_dropped",
            "UDP answers not sent: the socket's send buffer stayed full, or sending failed (the \
             client asks again)",
            udp_answers_dropped.clone(),
        );
        Metrics {
            udp_batches,
            udp_datagrams,
            udp_backlogs,
            udp_answers_dropped,
            render_lock: std::sync::Mutex::new(()),
            query_log_lines,
            registry,
            queries,
            applies,
            apply_seconds,
            generation,
            applied_at,
            zone_names,
        }
    }

    pub fn query(&self, labels: QueryLabels) {
        self.queries.get_or_create(&labels).inc();
    }

    /// The counter of `labels`, to count many queries without looking it
    /// up each time (the UDP answer cache keeps one per answer).
    pub fn query_counter(&self, labels: QueryLabels) -> Counter {
        self.queries.get_or_create(&labels).clone()
    }

    /// The counters a UDP loop of `role` adds to.
    pub fn udp_loop(&self, role: crate::udp::Role) -> UdpLoopCounters {
        let labels = UdpLoopLabels { role };
        UdpLoopCounters {
            batches: self.udp_batches.get_or_create(&labels).clone(),
            datagrams: self.udp_datagrams.get_or_create(&labels).clone(),
            backlogs: self.udp_backlogs.get_or_create(&labels).clone(),
            dropped: self.udp_answers_dropped.clone(),
        }
    }

    pub fn apply(&self, kind: ApplyKind, outcome: ApplyOutcome, seconds: f64) {
        let labels = ApplyLabels { kind, outcome };
        self.applies.get_or_create(&labels).inc();
        self.apply_seconds.get_or_create(&labels).observe(seconds);
    }

    /// The text exposition of every metric, with what is served now (and
    /// what became of the query log's lines, if there is one).
    pub fn render(&self, served: &Served, query_log: Option<&crate::query_log::Counts>) -> String {
        let _one_at_a_time = self.render_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(counts) = query_log {
            use std::sync::atomic::Ordering::Relaxed;
            for (result, count) in [
                ("written", &counts.written),
                ("dropped", &counts.dropped),
                ("failed", &counts.failed),
            ] {
                self.query_log_lines
                    .get_or_create(&QueryLogLabels { result })
                    .set(count.load(Relaxed) as i64);
            }
        }
        self.generation.set(served.generation() as i64);
        let applied_at = served.applied.as_ref().map(|a| a.time_applied.timestamp_millis());
        self.applied_at.set(applied_at.unwrap_or(0) as f64 / 1000.0);
        self.zone_names.clear();
        for (zone, names) in served.zone_sizes() {
            self.zone_names.get_or_create(&ZoneLabels { zone: zone.to_string() }).set(names as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concurrent scrapes each see one whole state: the zones' sizes are
    /// cleared and refilled per scrape, so without one render at a time a
    /// scrape can encode them half refilled.
    #[test]
    fn concurrent_renders_each_see_every_zone() {
        let zones = (0..300)
            .map(|i| dns_types::DnsConfigZone {
                zone_name: format!("z{i}.test"),
                ttl_seconds: 60,
                names: Default::default(),
            })
            .collect();
        let config = dns_types::DnsConfig {
            generation: 1,
            time_created: chrono::Utc::now(),
            creator: "test".into(),
            comment: String::new(),
            zones,
        };
        let served = std::sync::Arc::new(Served::compile(&config, chrono::Utc::now()).unwrap());
        let metrics = std::sync::Arc::new(Metrics::new());
        let series = "dns_server_zone_names{";
        assert_eq!(metrics.render(&served, None).matches(series).count(), 300, "positive control");
        let renders: Vec<_> = (0..4)
            .map(|_| {
                let (metrics, served) = (metrics.clone(), served.clone());
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| metrics.render(&served, None).matches(series).count() != 300)
                        .count()
                })
            })
            .collect();
        for render in renders {
            assert_eq!(render.join().unwrap(), 0, "scrapes lacked zones");
        }
    }
}
