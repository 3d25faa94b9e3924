//! A config compiled for answering queries, and the answer logic.
//!
//! A [`Served`] is built from one [`DnsConfig`] off to the side and then
//! swapped in whole, so every answer comes from exactly one generation.  It
//! holds each name's records in wire form keyed by the lower-case name,
//! plus the empty non-terminals and each zone's synthesized SOA.  The next
//! generation is either compiled whole or derived from this one by a
//! difference, sharing every unchanged name with it.

use chrono::{DateTime, Utc};
use dns_types::{ConfigDiff, DigestState, DnsConfig, DnsRecord, names};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, Restrict};
use shared_map::SharedMap;
use std::borrow::Borrow;
use std::sync::Arc;

/// Longest CNAME chain followed inside our own zones.
const MAX_CNAME_CHAIN: usize = 8;
/// SOA timers (seconds).  Nothing transfers our zones, so only the negative
/// caching TTL (`minimum`, set to the zone TTL) matters in practice.
const SOA_REFRESH: u32 = 3600;
const SOA_RETRY: u32 = 600;
const SOA_EXPIRE: u32 = 86400;

/// Most bytes of additional records in one response.
const MAX_ADDITIONAL_BYTES: usize = 32 * 1024;

/// A config as served: what it is (generation, when and why it was made,
/// when it was applied, its digest) and the compiled zones.  The config
/// itself is not kept in memory: `GET /config` reads it from storage.
pub struct Served {
    pub applied: Option<Applied>,
    zones: Vec<Zone>,
    /// What the digest is computed from, kept up to date by differences.
    digest_state: DigestState,
    /// Per zone, its names in canonical order, sorted by the first
    /// transfer of this generation and shared by the next ones: forty
    /// clients asking at once cost one sort, not forty.
    transfer_order: Vec<std::sync::OnceLock<TransferOrder>>,
}

/// A zone's names in canonical order, each with its records.
type TransferOrder = Arc<[Named]>;

pub struct Applied {
    pub generation: u64,
    pub time_created: DateTime<Utc>,
    pub creator: String,
    pub comment: String,
    pub time_applied: DateTime<Utc>,
    pub digest: String,
}

/// One zone, compiled.  Cloning it is cheap (the maps share their
/// contents), which is what lets a difference rebuild only what it changes.
#[derive(Clone)]
struct Zone {
    name: String,
    apex: WireName,
    ttl: u32,
    /// The data of the zone's SOA record at this generation (wire form).
    soa: Arc<[u8]>,
    /// Each name with its records, shared between generations too:
    /// copying a shard copies pointers, not records.
    names: SharedMap<Named, ()>,
    /// For each name below the apex that has names below it: how many.
    /// Those without records of their own are the empty non-terminals
    /// (NODATA, not NXDOMAIN); the count says when one stops being one.
    below: SharedMap<WireName, u32>,
}

/// A name as the zone maps key it: its wire form (length-prefixed labels
/// ending with the root's empty label), in lower case ([`Named`] holds one
/// with its records, for the map of names).  A query carries
/// its name in this form, so the UDP path finds a name by lower-casing the
/// question's bytes, without building a `Name`; keys compare as bytes.
/// Shared (`Arc`), so that the next generation's copy of a shard copies
/// pointers: at a million names a shard holds ~8,000 of them, and a
/// one-name change allocating each anew cost more than the change.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WireName(Arc<[u8]>);

impl WireName {
    pub fn of(name: &Name) -> WireName {
        WireName(WireBuf::of(name).as_bytes().into())
    }

    /// The wire form of a canonical name (validated, lower case, no
    /// trailing dot).
    fn of_text(name: &str) -> Result<WireName, CompileError> {
        let mut bytes = Vec::with_capacity(name.len() + 2);
        wire_name(&mut bytes, name)?;
        Ok(WireName(bytes.into()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Bytes that sort as names sort in canonical order (RFC 4034 section
    /// 6.1): the labels from the root down, each followed by a 0 byte (a
    /// label that is a prefix of another sorts first).  Names here are
    /// lower case and hold no 0 byte (`DnsConfig::validate`), so the bytes
    /// compare as the labels do; one comparison of bytes instead of label
    /// by label is what makes sorting a million names take a fraction of a
    /// second.
    pub fn canonical_key(&self) -> Vec<u8> {
        canonical_key(&self.0)
    }
}

/// See [`WireName::canonical_key`].
fn canonical_key(wire: &[u8]) -> Vec<u8> {
    let labels: Vec<&[u8]> = labels(wire).collect();
    let mut key = Vec::with_capacity(wire.len());
    for label in labels.iter().rev() {
        key.extend_from_slice(label);
        key.push(0);
    }
    key
}

impl Borrow<[u8]> for WireName {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// The labels of a name in wire form, up to the root (or to where the
/// bytes are cut short).
fn labels(wire: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = usize::from(*wire.get(at).filter(|len| **len != 0)?);
        let end = (at + 1 + len).min(wire.len());
        let label = &wire[at + 1..end];
        at = end;
        Some(label)
    })
}

/// The length of the name in wire form (uncompressed) that `bytes` starts
/// with, root label included; `None` if they hold no whole name.
pub fn wire_name_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        match *bytes.get(at)? {
            0 => return Some(at + 1),
            len @ 1..=63 => at += 1 + usize::from(len),
            _ => return None,
        }
    }
}

/// The lower-case wire form of a name, on the stack (a name is at most
/// 255 bytes on the wire).
pub struct WireBuf {
    bytes: [u8; 256],
    len: usize,
}

impl WireBuf {
    pub fn of(name: &Name) -> WireBuf {
        let mut buf = WireBuf { bytes: [0; 256], len: 0 };
        for label in name.iter() {
            // hickory keeps names within 255 bytes, root label included.
            buf.bytes[buf.len] = label.len() as u8;
            for (to, from) in buf.bytes[buf.len + 1..].iter_mut().zip(label) {
                *to = from.to_ascii_lowercase();
            }
            buf.len += 1 + label.len();
        }
        buf.len += 1;
        buf
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Where in `name` (wire form) `suffix` (wire form) starts, at a label
/// boundary: `Some(0)` when they are equal, `None` when `name` does not end
/// with it (or is cut short).
pub fn suffix_at(name: &[u8], suffix: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(rest) = name.get(at..) {
        if rest.len() < suffix.len() {
            return None;
        }
        if rest == suffix {
            return Some(at);
        }
        at += 1 + usize::from(*rest.first().filter(|len| **len > 0)?);
    }
    None
}

/// One name's records as served (in its [`Named`]): for each record its
/// type (2 bytes), its data's length (2) and its data in wire form, names
/// in the data uncompressed (as the config has them: lower case).  The
/// owner is the name they are stored with and the TTL is the zone's, so
/// neither is repeated: an AAAA record takes 20 bytes, where a hickory
/// `Record` took 272 (docs/PERFORMANCE.md, "A million names").  The UDP
/// path writes answers from these bytes; the full path and zone transfers
/// decode them into hickory's records with hickory's decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Records<'a>(&'a [u8]);

/// A name and its records in one allocation: the length of the name's
/// wire form (one byte; `wire_name` allows at most 255), the wire form,
/// then the records as [`Records`] has them.  Finding a name in a large
/// zone is a chain of cache misses (the table's control bytes, the bucket,
/// what the bucket points to); with the name and its records in two
/// allocations the chain was one longer, and each bucket held two fat
/// pointers instead of one (docs/PERFORMANCE.md, "CPU per answered
/// query").  Compared and hashed by the name alone.
#[derive(Clone, Debug)]
struct Named(Arc<[u8]>);

impl Named {
    /// `None` for a name longer than a wire form can be (which
    /// `wire_name` refuses before this is reached).
    fn new(name: &[u8], records: &[u8]) -> Option<Named> {
        let len = u8::try_from(name.len()).ok()?;
        let mut bytes = Vec::with_capacity(1 + name.len() + records.len());
        bytes.push(len);
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(records);
        Some(Named(bytes.into()))
    }

    fn name(&self) -> &[u8] {
        &self.0[1..1 + usize::from(self.0[0])]
    }

    fn records(&self) -> Records<'_> {
        Records(&self.0[1 + usize::from(self.0[0])..])
    }
}

impl PartialEq for Named {
    fn eq(&self, other: &Named) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Named {}

impl std::hash::Hash for Named {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As the name's bytes hash, so that a lookup by `&[u8]` finds it.
        self.name().hash(state)
    }
}

impl Borrow<[u8]> for Named {
    fn borrow(&self) -> &[u8] {
        self.name()
    }
}

impl<'a> Records<'a> {
    /// Appends the wire form of `records` to `bytes`.
    fn encode(records: &[DnsRecord], bytes: &mut Vec<u8>) -> Result<(), String> {
        for record in records {
            encode(bytes, record)?;
        }
        Ok(())
    }

    /// Each record's type and data.
    fn iter(self) -> impl Iterator<Item = (RecordType, &'a [u8])> + 'a {
        let bytes: &'a [u8] = self.0;
        let mut at = 0;
        std::iter::from_fn(move || {
            let header = bytes.get(at..at + 4)?;
            let rtype = RecordType::from(u16::from_be_bytes([header[0], header[1]]));
            let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let data = bytes.get(at + 4..at + 4 + len)?;
            at += 4 + len;
            Some((rtype, data))
        })
    }
}

/// One record of an answer, borrowed from what is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The owner's wire form, lower case.
    pub owner: &'a [u8],
    pub rtype: RecordType,
    pub ttl: u32,
    /// The data in wire form, names uncompressed.
    pub data: &'a [u8],
}

/// A served record that hickory's decoder does not take: a bug in
/// [`encode`], never input from a client.
#[derive(Debug, thiserror::Error)]
#[error("a served {rtype} record does not decode: {reason}")]
pub struct UndecodableRecord {
    rtype: RecordType,
    reason: String,
}

impl<'a> RecordRef<'a> {
    pub fn record_type(&self) -> RecordType {
        self.rtype
    }

    /// The name an SRV, NS or CNAME record points to (wire form).
    pub fn target(&self) -> Option<&'a [u8]> {
        match self.rtype {
            RecordType::SRV => self.data.get(6..),
            RecordType::NS | RecordType::CNAME => Some(self.data),
            _ => None,
        }
    }

    /// Its size in a message with nothing compressed: an upper bound.
    pub fn wire_len(&self) -> usize {
        self.owner.len() + 10 + self.data.len()
    }

    /// The record as hickory holds it, for the full path and transfers.
    pub fn to_record(&self) -> Result<Record, UndecodableRecord> {
        let fail = |reason: String| UndecodableRecord { rtype: self.rtype, reason };
        let owner =
            Name::read(&mut BinDecoder::new(self.owner)).map_err(|e| fail(e.to_string()))?;
        let len = u16::try_from(self.data.len()).map_err(|e| fail(e.to_string()))?;
        let data = RData::read(&mut BinDecoder::new(self.data), self.rtype, Restrict::new(len))
            .map_err(|e| fail(e.to_string()))?;
        Ok(Record::from_rdata(owner, self.ttl, data))
    }
}

/// How to answer one question.
#[derive(Debug, PartialEq)]
pub enum Answer<'a> {
    /// Not a name we are authoritative for.
    Refused,
    /// Records for the question (`answers`), and addresses of SRV targets
    /// that we also serve (`additionals`).
    Found { answers: Vec<RecordRef<'a>>, additionals: Vec<RecordRef<'a>> },
    /// The name exists, but has no records of the requested type.
    NoData { soa: RecordRef<'a> },
    /// The name does not exist.
    NxDomain { soa: RecordRef<'a> },
}

/// A zone's records as a zone transfer sends them: the SOA, every name's
/// records in canonical order, the SOA again (RFC 5936).
pub struct Transfer<'a> {
    zone: &'a Zone,
    names: &'a [Named],
}

impl<'a> Transfer<'a> {
    pub fn records(&self) -> impl Iterator<Item = RecordRef<'a>> + 'a {
        let zone = self.zone;
        let soa = zone.soa_record();
        std::iter::once(soa)
            .chain(
                self.names
                    .iter()
                    .flat_map(move |named| zone.records(named.name(), named.records())),
            )
            .chain(std::iter::once(soa))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot serve name {name:?}: {reason}")]
pub struct CompileError {
    name: String,
    reason: String,
}

/// Why a difference was not applied to what is served.
#[derive(Debug, thiserror::Error)]
pub enum ApplyDiffError {
    #[error(transparent)]
    Diff(#[from] dns_types::DiffError),
    #[error(transparent)]
    Compile(#[from] CompileError),
}

impl Zone {
    fn new(zone_name: &str, ttl: u32, generation: u64, names: usize) -> Result<Zone, CompileError> {
        Ok(Zone {
            name: zone_name.to_string(),
            apex: WireName::of_text(zone_name)?,
            ttl,
            soa: soa_data(zone_name, ttl, generation)?,
            names: SharedMap::with_capacity(names),
            below: SharedMap::default(),
        })
    }

    fn soa_record(&self) -> RecordRef<'_> {
        RecordRef { owner: &self.apex.0, rtype: RecordType::SOA, ttl: self.ttl, data: &self.soa }
    }

    /// `records` of `owner` as answers give them.
    fn records<'a>(
        &'a self,
        owner: &'a [u8],
        records: Records<'a>,
    ) -> impl Iterator<Item = RecordRef<'a>> + 'a {
        records.iter().map(move |(rtype, data)| RecordRef { owner, rtype, ttl: self.ttl, data })
    }

    /// Adds or replaces one name's records.  Where `previous` (another
    /// generation of this zone) has the name with the same records, its
    /// allocations are shared instead of made anew: a whole config that
    /// mostly repeats what is served then costs little more than the map.
    /// `scratch` is a buffer reused from name to name.
    fn set(
        &mut self,
        relative: &str,
        records: &[DnsRecord],
        previous: Option<&Zone>,
        scratch: &mut Vec<u8>,
    ) -> Result<(), CompileError> {
        let absolute = names::absolute(relative, &self.name);
        scratch.clear();
        wire_name(scratch, &absolute)?;
        let name_len = scratch.len();
        Records::encode(records, scratch)
            .map_err(|reason| CompileError { name: absolute.clone(), reason })?;
        let (name, data) = scratch.split_at(name_len);
        let named = match previous.and_then(|p| p.names.get_key_value(name)) {
            Some((old, ())) if old.records().0 == data => old.clone(),
            _ => Named::new(name, data).ok_or_else(|| CompileError {
                name: absolute,
                reason: "longer than 255 bytes in wire form".into(),
            })?,
        };
        // `insert` keeps a key already there, and with it the old records:
        // take that out first.
        let replaced = self.names.remove(name).is_some();
        self.names.insert(named, ());
        if !replaced {
            self.count_below(name, true);
        }
        Ok(())
    }

    fn remove(&mut self, relative: &str) -> Result<(), CompileError> {
        let name = WireName::of_text(&names::absolute(relative, &self.name))?;
        if self.names.remove(name.as_bytes()).is_some() {
            self.count_below(name.as_bytes(), false);
        }
        Ok(())
    }

    /// Counts `name` (wire form, inside this zone) in (or out of) each of
    /// its ancestors below the apex.
    fn count_below(&mut self, name: &[u8], added: bool) {
        let mut parent = name.get(1 + usize::from(name[0])..).unwrap_or_default();
        while parent.len() > self.apex.0.len() {
            if added {
                *self.below.get_mut_or(WireName(parent.into()), || 0) += 1;
            } else if let Some(count) = self.below.get(parent).copied() {
                if count <= 1 {
                    self.below.remove(parent);
                } else {
                    self.below.insert(WireName(parent.into()), count - 1);
                }
            }
            parent = parent.get(1 + usize::from(parent[0])..).unwrap_or_default();
        }
    }

    /// The records of `relative` as the config had them.
    fn config_records(&self, relative: &str) -> Result<Vec<DnsRecord>, CompileError> {
        let absolute = names::absolute(relative, &self.name);
        let name = WireName::of_text(&absolute)?;
        let Some((named, ())) = self.names.get_key_value(name.as_bytes()) else {
            return Ok(Vec::new());
        };
        named
            .records()
            .iter()
            .map(|(rtype, data)| {
                decode(rtype, data).ok_or_else(|| CompileError {
                    name: absolute.clone(),
                    reason: format!("a compiled {rtype} record does not read back"),
                })
            })
            .collect()
    }
}

impl Served {
    fn new(applied: Option<Applied>, zones: Vec<Zone>, digest_state: DigestState) -> Served {
        let transfer_order = zones.iter().map(|_| std::sync::OnceLock::new()).collect();
        Served { applied, zones, digest_state, transfer_order }
    }

    /// Nothing to serve: every question is refused.
    pub fn empty() -> Served {
        Served::new(None, Vec::new(), DigestState::default())
    }

    /// Compiles a validated config (see `DnsConfig::validate`).
    pub fn compile(
        config: &DnsConfig,
        time_applied: DateTime<Utc>,
    ) -> Result<Served, CompileError> {
        Served::compile_beside(config, time_applied, None)
    }

    /// Compiles a validated config that replaces `previous`: names whose
    /// records are the same share `previous`'s allocations (a whole config
    /// pushed again, as after a server restarted or a difference refused,
    /// mostly repeats what is served; building it all anew beside the
    /// served generation doubled the memory the zone takes).
    pub fn compile_beside(
        config: &DnsConfig,
        time_applied: DateTime<Utc>,
        previous: Option<&Served>,
    ) -> Result<Served, CompileError> {
        let mut zones = Vec::with_capacity(config.zones.len());
        let mut scratch = Vec::with_capacity(512);
        for zone in &config.zones {
            let mut compiled =
                Zone::new(&zone.zone_name, zone.ttl_seconds, config.generation, zone.names.len())?;
            let before = previous.and_then(|p| p.zones.iter().find(|z| z.name == zone.zone_name));
            for (relative, records) in &zone.names {
                compiled.set(relative, records, before, &mut scratch)?;
            }
            zones.push(compiled);
        }
        let digest_state = DigestState::of_config(config);
        let applied = Applied {
            generation: config.generation,
            time_created: config.time_created,
            creator: config.creator.clone(),
            comment: config.comment.clone(),
            time_applied,
            digest: digest_state.digest(config.generation),
        };
        Ok(Served::new(Some(applied), zones, digest_state))
    }

    /// What serving `diff` on top of this gives, if this is exactly its
    /// base and the result has its digest.  Costs the size of the
    /// difference: unchanged names are shared with this generation.
    pub fn apply_diff(
        &self,
        diff: &ConfigDiff,
        time_applied: DateTime<Utc>,
    ) -> Result<Served, ApplyDiffError> {
        use dns_types::DiffError;
        diff.validate()?;
        let (generation, digest) = match &self.applied {
            Some(applied) => (applied.generation, applied.digest.clone()),
            None => (0, "none".to_string()),
        };
        if generation != diff.from_generation || digest != diff.from_digest {
            return Err(DiffError::WrongBase {
                from_generation: diff.from_generation,
                from_digest: diff.from_digest.clone(),
                generation,
                digest,
            }
            .into());
        }
        let mut zones = self.zones.clone();
        let mut digest_state = self.digest_state.clone();
        let mut scratch = Vec::new();
        for changes in &diff.zones {
            let Some(zone) = zones.iter_mut().find(|z| z.name == changes.zone_name) else {
                return Err(DiffError::UnknownZone { zone: changes.zone_name.clone() }.into());
            };
            for change in &changes.names {
                let before = zone.config_records(&change.name)?;
                digest_state
                    .replace_name(&zone.name, &change.name, &before, &change.records)
                    .map_err(|e| DiffError::UnknownZone { zone: e.zone })?;
                if change.records.is_empty() {
                    zone.remove(&change.name)?;
                } else {
                    zone.set(&change.name, &change.records, None, &mut scratch)?;
                }
            }
        }
        let computed = digest_state.digest(diff.generation);
        if computed != diff.digest {
            return Err(
                DiffError::DigestMismatch { expected: diff.digest.clone(), computed }.into()
            );
        }
        for zone in &mut zones {
            zone.soa = soa_data(&zone.name, zone.ttl, diff.generation)?;
        }
        let applied = Applied {
            generation: diff.generation,
            time_created: diff.time_created,
            creator: diff.creator.clone(),
            comment: diff.comment.clone(),
            time_applied,
            digest: computed,
        };
        Ok(Served::new(Some(applied), zones, digest_state))
    }

    pub fn generation(&self) -> u64 {
        self.applied.as_ref().map(|a| a.generation).unwrap_or(0)
    }

    /// (zone name, number of names) for each zone.
    pub fn zone_sizes(&self) -> impl Iterator<Item = (&str, usize)> {
        self.zones.iter().map(|z| (z.name.as_str(), z.names.len()))
    }

    /// Answers one question of class IN about `qname` (its wire form in
    /// lower case, as [`WireBuf`] gives it).
    pub fn lookup(&self, qname: &[u8], qtype: RecordType) -> Answer<'_> {
        let Some(zone) = self.zone_for(qname) else {
            return Answer::Refused;
        };
        let mut answers = Vec::new();
        let mut current = qname;
        let mut current_zone = zone;
        for _ in 0..MAX_CNAME_CHAIN {
            let is_apex = *current == *current_zone.apex.0;
            let (owner, records) = match current_zone.names.get_key_value(current) {
                Some((named, ())) => (named.name(), Some(named.records())),
                None if is_apex => (&current_zone.apex.0[..], None),
                None if !answers.is_empty() => {
                    // A CNAME into a hole: the chain so far is the answer.
                    break;
                }
                None if current_zone.below.contains_key(current) => {
                    return Answer::NoData { soa: current_zone.soa_record() };
                }
                None => return Answer::NxDomain { soa: current_zone.soa_record() },
            };
            let records =
                || records.into_iter().flat_map(|records| current_zone.records(owner, records));
            let before = answers.len();
            if is_apex && matches!(qtype, RecordType::SOA | RecordType::ANY) {
                answers.push(current_zone.soa_record());
            }
            answers.extend(records().filter(|r| qtype == RecordType::ANY || r.rtype == qtype));
            if answers.len() > before || qtype == RecordType::CNAME {
                break;
            }
            // Follow a CNAME when the question is for another type.
            let Some(cname) = records().find(|r| r.rtype == RecordType::CNAME) else {
                break;
            };
            answers.push(cname);
            match self.zone_for(cname.data) {
                Some(zone) => {
                    current = cname.data;
                    current_zone = zone;
                }
                None => break,
            }
        }
        if answers.is_empty() {
            return Answer::NoData { soa: zone.soa_record() };
        }
        let additionals = self.additionals_for(&answers);
        Answer::Found { answers, additionals }
    }

    fn zone_for(&self, name: &[u8]) -> Option<&Zone> {
        // Zones never nest (configs are validated), so at most one matches.
        self.zones.iter().find(|z| suffix_at(name, &z.apex.0).is_some())
    }

    /// Addresses of the SRV targets and name servers in the answer that we
    /// serve, so that a client finds a service in one round trip.
    ///
    /// Additional records are optional: they stop at [`MAX_ADDITIONAL_BYTES`]
    /// so that, with answers bounded by `dns_types::limits`, every response
    /// fits one TCP message.
    fn additionals_for<'a>(&'a self, answers: &[RecordRef<'a>]) -> Vec<RecordRef<'a>> {
        let mut additionals = Vec::new();
        let mut bytes = 0;
        for record in answers {
            // The addresses of SRV targets and of name servers (glue).
            if !matches!(record.rtype, RecordType::SRV | RecordType::NS) {
                continue;
            }
            let Some(target) = record.target() else { continue };
            let Some(zone) = self.zone_for(target) else { continue };
            let Some((named, ())) = zone.names.get_key_value(target) else { continue };
            for address in zone
                .records(named.name(), named.records())
                .filter(|r| matches!(r.rtype, RecordType::A | RecordType::AAAA))
            {
                // Owner (uncompressed, at worst), fixed fields, address.
                bytes += target.len() + 1 + 10 + 16;
                if bytes > MAX_ADDITIONAL_BYTES {
                    return additionals;
                }
                additionals.push(address);
            }
        }
        additionals
    }

    /// The SOA of the zone whose apex is `apex`, if it is served (what a
    /// transfer starts with; found without walking the zone).
    pub fn zone_soa(&self, apex: &LowerName) -> Option<RecordRef<'_>> {
        let apex = WireBuf::of(apex);
        self.zones.iter().find(|z| *z.apex.0 == *apex.as_bytes()).map(Zone::soa_record)
    }

    /// The whole zone whose apex is `apex`, as a zone transfer sends it.
    /// `None` when we serve no zone with that apex.
    pub fn transfer(&self, apex: &LowerName) -> Option<Transfer<'_>> {
        let apex = WireBuf::of(apex);
        let index = self.zones.iter().position(|z| *z.apex.0 == *apex.as_bytes())?;
        let zone = &self.zones[index];
        let names = self.transfer_order[index].get_or_init(|| {
            // In canonical order (RFC 4034 section 6.1), as Knot sends them.
            let mut names: Vec<(Vec<u8>, Named)> = zone
                .names
                .iter()
                .map(|(named, ())| (canonical_key(named.name()), named.clone()))
                .collect();
            names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            names.into_iter().map(|(_, entry)| entry).collect()
        });
        Some(Transfer { zone, names })
    }
}

/// Appends the wire form of a canonical name (validated, lower case, no
/// trailing dot), checking what the wire form allows.
fn wire_name(out: &mut Vec<u8>, name: &str) -> Result<(), CompileError> {
    let fail = |reason: &str| CompileError { name: name.into(), reason: reason.into() };
    let start = out.len();
    for label in name.split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|len| (1..=63).contains(len))
            .ok_or_else(|| fail("a label is empty or longer than 63 bytes"))?;
        out.push(len);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    if out.len() - start > 255 {
        return Err(fail("longer than 255 bytes in wire form"));
    }
    Ok(())
}

/// The text of a name in wire form, without the trailing dot, as the
/// config writes it.
fn name_text(wire: &[u8]) -> Option<String> {
    let labels = labels(wire).map(|l| std::str::from_utf8(l).ok()).collect::<Option<Vec<_>>>()?;
    Some(labels.join("."))
}

/// The data of a zone's synthesized SOA at `generation`.
fn soa_data(zone_name: &str, ttl: u32, generation: u64) -> Result<Arc<[u8]>, CompileError> {
    let mut data = Vec::with_capacity(2 * zone_name.len() + 40);
    wire_name(&mut data, &format!("ns.{zone_name}"))?;
    wire_name(&mut data, &format!("admin.{zone_name}"))?;
    // SOA serials are 32 bits; generations beyond that are refused
    // (`dns_types::limits::MAX_GENERATION`).
    for word in [generation as u32, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, ttl] {
        data.extend_from_slice(&word.to_be_bytes());
    }
    Ok(data.into())
}

/// Appends one config record as [`Records`] hold it.
fn encode(out: &mut Vec<u8>, record: &DnsRecord) -> Result<(), String> {
    let rtype = match record {
        DnsRecord::A(_) => RecordType::A,
        DnsRecord::Aaaa(_) => RecordType::AAAA,
        DnsRecord::Srv(_) => RecordType::SRV,
        DnsRecord::Ns(_) => RecordType::NS,
        DnsRecord::Cname(_) => RecordType::CNAME,
        DnsRecord::Txt(_) => RecordType::TXT,
    };
    let start = out.len();
    out.extend_from_slice(&u16::from(rtype).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    let target = |out: &mut Vec<u8>, name: &str| wire_name(out, name).map_err(|e| e.to_string());
    match record {
        DnsRecord::A(a) => out.extend_from_slice(&a.octets()),
        DnsRecord::Aaaa(a) => out.extend_from_slice(&a.octets()),
        DnsRecord::Srv(s) => {
            for word in [s.prio, s.weight, s.port] {
                out.extend_from_slice(&word.to_be_bytes());
            }
            target(out, &s.target)?;
        }
        DnsRecord::Ns(name) | DnsRecord::Cname(name) => target(out, name)?,
        DnsRecord::Txt(text) => {
            for string in txt_strings(text) {
                out.push(string.len() as u8);
                out.extend_from_slice(string.as_bytes());
            }
        }
    }
    let len = u16::try_from(out.len() - start - 4)
        .map_err(|_| format!("its {rtype} record's data is longer than 65,535 bytes"))?;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// The config record that [`encode`] made `data` of type `rtype` from.
fn decode(rtype: RecordType, data: &[u8]) -> Option<DnsRecord> {
    Some(match rtype {
        RecordType::A => DnsRecord::A(<[u8; 4]>::try_from(data).ok()?.into()),
        RecordType::AAAA => DnsRecord::Aaaa(<[u8; 16]>::try_from(data).ok()?.into()),
        RecordType::SRV => {
            let word = |at: usize| Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]));
            DnsRecord::Srv(dns_types::SrvRecord {
                prio: word(0)?,
                weight: word(2)?,
                port: word(4)?,
                target: name_text(data.get(6..)?)?,
            })
        }
        RecordType::NS => DnsRecord::Ns(name_text(data)?),
        RecordType::CNAME => DnsRecord::Cname(name_text(data)?),
        RecordType::TXT => {
            let mut text = Vec::with_capacity(data.len());
            let mut at = 0;
            while let Some(&len) = data.get(at) {
                text.extend_from_slice(data.get(at + 1..at + 1 + usize::from(len))?);
                at += 1 + usize::from(len);
            }
            DnsRecord::Txt(String::from_utf8(text).ok()?)
        }
        _ => return None,
    })
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

    /// Sorting by `canonical_key` is sorting by canonical order, as
    /// hickory's `LowerName` compares names.
    #[test]
    fn canonical_keys_sort_as_names_do() {
        let names = [
            "control-plane.internal",
            "a.control-plane.internal",
            "z.control-plane.internal",
            "host5.control-plane.internal",
            "host50.control-plane.internal",
            "host5.a.control-plane.internal",
            "_nexus._tcp.control-plane.internal",
            "x-.control-plane.internal",
            "a-b.control-plane.internal",
            "ab.control-plane.internal",
            "x.host5.control-plane.internal",
            "*.control-plane.internal",
            "0.control-plane.internal",
        ];
        let mut by_key: Vec<Name> = names.iter().map(|n| Name::from_str(n).unwrap()).collect();
        by_key.sort_by_key(|n| WireName::of(n).canonical_key());
        assert_ne!(by_key.first(), by_key.last());
        let mut by_name = by_key.clone();
        by_name.sort_by(|a, b| LowerName::new(a).cmp(&LowerName::new(b)));
        assert_eq!(by_key, by_name);
    }

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
        let name = q("_big._tcp.control-plane.internal.");
        let Answer::Found { answers, additionals } =
            served.lookup(name.as_bytes(), RecordType::SRV)
        else {
            panic!("no answer")
        };
        assert_eq!(answers.len(), 200);
        assert!(!additionals.is_empty() && additionals.len() < 200 * 100, "{}", additionals.len());
        let bytes: usize = additionals.iter().map(|r| r.owner.len() + 1 + 10 + 16).sum();
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

    fn q(name: &str) -> WireBuf {
        WireBuf::of(&Name::from_str(name).unwrap())
    }

    /// Suffixes are found at label boundaries only, and names cut short
    /// (from the network) give `None`, never a panic.
    #[test]
    fn suffixes_at_label_boundaries() {
        let name = q("a.bc.example.test.");
        let at = |suffix: &str| suffix_at(name.as_bytes(), q(suffix).as_bytes());
        assert_eq!(at("a.bc.example.test."), Some(0));
        assert_eq!(at("example.test."), Some(5));
        assert_eq!(at("."), Some(name.as_bytes().len() - 1));
        assert_eq!(at("c.example.test."), None, "not inside a label");
        assert_eq!(at("other.test."), None);
        assert_eq!(suffix_at(&[9, b'a', 0], &[0]), None, "a label longer than the name");
        assert_eq!(suffix_at(&[], &[0]), None);
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
            types(&s.lookup(q("ABC.Host.control-plane.INTERNAL.").as_bytes(), RecordType::AAAA)),
            vec![RecordType::AAAA]
        );
        let Answer::Found { additionals, .. } =
            s.lookup(q("_nexus._tcp.control-plane.internal.").as_bytes(), RecordType::SRV)
        else {
            panic!()
        };
        assert_eq!(additionals.len(), 1, "SRV answers carry the target's address");
    }

    #[test]
    fn negative_answers() {
        let s = served();
        let soa_serial = |a: Answer<'_>| match a {
            Answer::NoData { soa } | Answer::NxDomain { soa } => {
                match soa.to_record().unwrap().data {
                    RData::SOA(soa) => soa.serial,
                    _ => panic!(),
                }
            }
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            s.lookup(q("nope.control-plane.internal.").as_bytes(), RecordType::A),
            Answer::NxDomain { .. }
        ));
        assert!(matches!(
            s.lookup(q("abc.host.control-plane.internal.").as_bytes(), RecordType::A),
            Answer::NoData { .. }
        ));
        // Empty non-terminals exist: NODATA, not NXDOMAIN.
        assert!(matches!(
            s.lookup(q("_tcp.control-plane.internal.").as_bytes(), RecordType::SRV),
            Answer::NoData { .. }
        ));
        assert!(matches!(
            s.lookup(q("host.control-plane.internal.").as_bytes(), RecordType::A),
            Answer::NoData { .. }
        ));
        assert_eq!(
            soa_serial(s.lookup(q("nope.control-plane.internal.").as_bytes(), RecordType::A)),
            42
        );
        assert_eq!(s.lookup(q("example.com.").as_bytes(), RecordType::A), Answer::Refused);
        assert_eq!(s.lookup(q("internal.").as_bytes(), RecordType::A), Answer::Refused);
        assert_eq!(
            Served::empty().lookup(q("abc.host.control-plane.internal.").as_bytes(), RecordType::A),
            Answer::Refused
        );
    }

    #[test]
    fn apex_soa_and_ns() {
        let s = served();
        assert_eq!(
            types(&s.lookup(q("control-plane.internal.").as_bytes(), RecordType::SOA)),
            vec![RecordType::SOA]
        );
        assert_eq!(
            types(&s.lookup(q("control-plane.internal.").as_bytes(), RecordType::NS)),
            vec![RecordType::NS]
        );
        assert!(matches!(
            s.lookup(q("control-plane.internal.").as_bytes(), RecordType::A),
            Answer::NoData { .. }
        ));
    }

    #[test]
    fn cnames_are_followed_inside_our_zones() {
        let s = served();
        assert_eq!(
            types(&s.lookup(q("alias.control-plane.internal.").as_bytes(), RecordType::AAAA)),
            vec![RecordType::CNAME, RecordType::AAAA]
        );
        assert_eq!(
            types(&s.lookup(q("alias.control-plane.internal.").as_bytes(), RecordType::CNAME)),
            vec![RecordType::CNAME]
        );
        assert_eq!(
            types(&s.lookup(q("outside.control-plane.internal.").as_bytes(), RecordType::A)),
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

#[cfg(test)]
mod diff_tests {
    use super::*;
    use dns_types::{DnsConfigZone, SrvRecord};
    use std::collections::BTreeMap;
    use std::str::FromStr;

    fn config(generation: u64, names: BTreeMap<String, Vec<DnsRecord>>) -> DnsConfig {
        DnsConfig {
            generation,
            time_created: Utc::now(),
            creator: "t".into(),
            comment: format!("generation {generation}"),
            zones: vec![DnsConfigZone {
                zone_name: "control-plane.internal".into(),
                ttl_seconds: 30,
                names,
            }],
        }
    }

    fn diff(from: &DnsConfig, to: &DnsConfig) -> ConfigDiff {
        ConfigDiff::between(from, to)
    }

    fn every_kind() -> BTreeMap<String, Vec<DnsRecord>> {
        let mut names = BTreeMap::new();
        names.insert("a.deep.tree".into(), vec![DnsRecord::A("192.0.2.1".parse().unwrap())]);
        names.insert("v6".into(), vec![DnsRecord::Aaaa("fd00::1".parse().unwrap())]);
        names.insert(
            "_s._tcp".into(),
            vec![DnsRecord::Srv(SrvRecord {
                prio: 1,
                weight: 2,
                port: 3,
                target: "v6.control-plane.internal".into(),
            })],
        );
        names.insert("@".into(), vec![DnsRecord::Ns("ns1.control-plane.internal".into())]);
        names.insert("alias".into(), vec![DnsRecord::Cname("v6.control-plane.internal".into())]);
        names.insert(
            "t".into(),
            vec![DnsRecord::Txt("é".repeat(200)), DnsRecord::Txt(String::new())],
        );
        names
    }

    fn q(name: &str) -> WireBuf {
        WireBuf::of(&Name::from_str(name).unwrap())
    }

    /// Compiled records turn back into exactly the config's records, so a
    /// difference takes out of the digest what was put in.
    #[test]
    fn compiled_records_round_trip() {
        let served = Served::compile(&config(1, every_kind()), Utc::now()).unwrap();
        for (name, records) in every_kind() {
            let mut back = served.zones[0].config_records(&name).unwrap();
            let mut records = records.clone();
            back.sort();
            records.sort();
            assert_eq!(back, records, "{name}");
        }
    }

    /// What is served decodes, with hickory's decoder, into the records
    /// the config names: every kind, with its owner, TTL and data.
    #[test]
    fn served_records_decode_as_the_config_says() {
        use hickory_proto::rr::rdata::{self, SRV, TXT};
        let served = Served::compile(&config(1, every_kind()), Utc::now()).unwrap();
        let name = |n: &str| Name::from_str(n).unwrap();
        let decoded = |qname: &str, rtype| match served.lookup(q(qname).as_bytes(), rtype) {
            Answer::Found { answers, .. } => {
                answers.iter().map(|r| r.to_record().unwrap()).collect::<Vec<_>>()
            }
            other => panic!("{qname}: {other:?}"),
        };
        let record = |owner: &str, data| Record::from_rdata(name(owner), 30, data);
        assert_eq!(
            decoded("a.deep.tree.control-plane.internal.", RecordType::A),
            [record("a.deep.tree.control-plane.internal.", RData::A("192.0.2.1".parse().unwrap()))]
        );
        assert_eq!(
            decoded("v6.control-plane.internal.", RecordType::AAAA),
            [record("v6.control-plane.internal.", RData::AAAA("fd00::1".parse().unwrap()))]
        );
        let target = name("v6.control-plane.internal.");
        assert_eq!(
            decoded("_s._tcp.control-plane.internal.", RecordType::SRV),
            [record(
                "_s._tcp.control-plane.internal.",
                RData::SRV(SRV::new(1, 2, 3, target.clone()))
            )]
        );
        assert_eq!(
            decoded("alias.control-plane.internal.", RecordType::CNAME),
            [record("alias.control-plane.internal.", RData::CNAME(rdata::CNAME(target)))]
        );
        assert_eq!(
            decoded("control-plane.internal.", RecordType::NS),
            [record(
                "control-plane.internal.",
                RData::NS(rdata::NS(name("ns1.control-plane.internal.")))
            )]
        );
        let mut texts = decoded("t.control-plane.internal.", RecordType::TXT);
        texts.sort_by_key(|r| r.data.to_string().len());
        assert_eq!(
            texts,
            [
                record("t.control-plane.internal.", RData::TXT(TXT::new(vec![String::new()]))),
                record(
                    "t.control-plane.internal.",
                    RData::TXT(TXT::new(txt_strings(&"é".repeat(200))))
                ),
            ]
        );
        let soa = decoded("control-plane.internal.", RecordType::SOA);
        let RData::SOA(soa) = &soa[0].data else { panic!("{soa:?}") };
        assert_eq!(
            (soa.mname.to_string(), soa.rname.to_string(), soa.serial, soa.minimum),
            ("ns.control-plane.internal.".into(), "admin.control-plane.internal.".into(), 1, 30)
        );
    }

    /// A difference gives what compiling the target gives: same digest,
    /// same answers (names added, changed, removed; empty non-terminals
    /// appearing and disappearing), and leaves the base untouched.
    #[test]
    fn a_difference_equals_compiling_the_target() {
        let from = config(1, every_kind());
        let mut names = every_kind();
        names.remove("a.deep.tree");
        names.insert("b.other".into(), vec![DnsRecord::A("192.0.2.2".parse().unwrap())]);
        names.insert("v6".into(), vec![DnsRecord::Aaaa("fd00::2".parse().unwrap())]);
        let to = config(4, names);
        let base = Served::compile(&from, Utc::now()).unwrap();
        let derived = base.apply_diff(&diff(&from, &to), Utc::now()).unwrap();
        let compiled = Served::compile(&to, Utc::now()).unwrap();
        assert_eq!(derived.applied.as_ref().unwrap().digest, dns_types::config_digest(&to));
        assert_eq!(derived.generation(), 4);
        for (name, rtype) in [
            ("a.deep.tree.control-plane.internal.", RecordType::A),
            ("deep.tree.control-plane.internal.", RecordType::A),
            ("tree.control-plane.internal.", RecordType::A),
            ("other.control-plane.internal.", RecordType::A),
            ("b.other.control-plane.internal.", RecordType::A),
            ("v6.control-plane.internal.", RecordType::AAAA),
            ("alias.control-plane.internal.", RecordType::AAAA),
            ("control-plane.internal.", RecordType::SOA),
        ] {
            assert_eq!(
                derived.lookup(q(name).as_bytes(), rtype),
                compiled.lookup(q(name).as_bytes(), rtype),
                "{name}"
            );
        }
        assert!(matches!(
            derived.lookup(q("tree.control-plane.internal.").as_bytes(), RecordType::A),
            Answer::NxDomain { .. }
        ));
        assert!(matches!(
            base.lookup(q("tree.control-plane.internal.").as_bytes(), RecordType::A),
            Answer::NoData { .. }
        ));
        assert_eq!(base.generation(), 1, "the base generation is untouched");
    }

    #[test]
    fn a_difference_to_another_base_or_digest_is_refused() {
        let from = config(1, every_kind());
        let mut names = every_kind();
        names.remove("v6");
        let to = config(2, names);
        let other = Served::compile(&config(1, BTreeMap::new()), Utc::now()).unwrap();
        let Err(error) = other.apply_diff(&diff(&from, &to), Utc::now()) else { panic!() };
        assert!(error.to_string().contains("applies to generation 1"), "{error}");
        let base = Served::compile(&from, Utc::now()).unwrap();
        let mut lying = diff(&from, &to);
        lying.digest = dns_types::config_digest(&from);
        let Err(error) = base.apply_diff(&lying, Utc::now()) else { panic!() };
        assert!(error.to_string().contains("not the stated"), "{error}");
    }

    /// A whole config compiled beside the generation it replaces shares
    /// the allocations of every name whose records did not change, and
    /// serves exactly what a compilation from nothing serves.
    #[test]
    fn a_config_compiled_beside_the_served_one_shares_what_did_not_change() {
        let before = config(1, every_kind());
        let mut names = every_kind();
        let changed = names.keys().next().unwrap().clone();
        names.insert(changed.clone(), vec![DnsRecord::A("192.0.2.99".parse().unwrap())]);
        names.insert("new".into(), vec![DnsRecord::A("192.0.2.98".parse().unwrap())]);
        let after = config(2, names);
        let served = Served::compile(&before, Utc::now()).unwrap();
        let beside = Served::compile_beside(&after, Utc::now(), Some(&served)).unwrap();
        let alone = Served::compile(&after, Utc::now()).unwrap();
        let (old, new) = (&served.zones[0], &beside.zones[0]);
        for relative in after.zones[0].names.keys() {
            let key = WireName::of_text(&names::absolute(relative, &new.name)).unwrap();
            let (new_named, ()) = new.names.get_key_value(key.as_bytes()).unwrap();
            let (alone_named, ()) = alone.zones[0].names.get_key_value(key.as_bytes()).unwrap();
            assert_eq!(new_named.records(), alone_named.records());
            match old.names.get_key_value(key.as_bytes()) {
                Some((old_named, ())) => {
                    assert_eq!(
                        Arc::ptr_eq(&old_named.0, &new_named.0),
                        *relative != changed,
                        "{relative}: name and records shared exactly when unchanged"
                    );
                }
                None => assert_eq!(relative, "new"),
            }
        }
        let digest = |s: &Served| s.applied.as_ref().unwrap().digest.clone();
        assert_eq!(digest(&beside), digest(&alone));
        assert_eq!(new.names.len(), alone.zones[0].names.len());
    }
}
