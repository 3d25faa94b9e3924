//! DNS records as they appear in configs and changes, with their rules.

use crate::names::{self, NameError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest TXT data we accept.  It is served as several character-strings of
/// at most 255 bytes each.
pub const MAX_TXT_LEN: usize = 4000;

/// One DNS record.  The JSON form is `{"type": "<TYPE>", "data": ...}`.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(tag = "type", content = "data")]
pub enum DnsRecord {
    A(Ipv4Addr),
    #[serde(rename = "AAAA")]
    Aaaa(Ipv6Addr),
    #[serde(rename = "SRV")]
    Srv(SrvRecord),
    #[serde(rename = "NS")]
    Ns(String),
    #[serde(rename = "CNAME")]
    Cname(String),
    #[serde(rename = "TXT")]
    Txt(String),
}

#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct SrvRecord {
    pub prio: u16,
    pub weight: u16,
    pub port: u16,
    /// Absolute name of the host that provides the service.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{rtype} target {target:?} is not a valid name")]
    InvalidTarget {
        rtype: &'static str,
        target: String,
        #[source]
        source: NameError,
    },
    #[error("TXT data is {len} bytes long (at most {MAX_TXT_LEN} allowed)")]
    TxtTooLong { len: usize },
    #[error("unsupported record type {0:?} (supported: A, AAAA, SRV, NS, CNAME, TXT)")]
    UnsupportedType(String),
    #[error(
        "{rtype} target {target:?} is a single label: targets are absolute names \
         (such as host.example.test); write it in full"
    )]
    RelativeTarget { rtype: &'static str, target: String },
    #[error(transparent)]
    Text(#[from] crate::limits::TextError),
    #[error("invalid {rtype} data {data:?}: {reason}")]
    InvalidData { rtype: &'static str, data: String, reason: String },
}

impl DnsRecord {
    /// The names of the record types we serve, as `type_name` spells them.
    pub const TYPE_NAMES: [&'static str; 6] = ["A", "AAAA", "SRV", "NS", "CNAME", "TXT"];

    /// The record type's name as it appears on the wire and in JSON.
    pub fn type_name(&self) -> &'static str {
        match self {
            DnsRecord::A(_) => "A",
            DnsRecord::Aaaa(_) => "AAAA",
            DnsRecord::Srv(_) => "SRV",
            DnsRecord::Ns(_) => "NS",
            DnsRecord::Cname(_) => "CNAME",
            DnsRecord::Txt(_) => "TXT",
        }
    }

    /// Checks the record and returns its canonical form (target names lower
    /// case without trailing dot).
    pub fn normalized(&self) -> Result<DnsRecord, RecordError> {
        let target = |rtype: &'static str, t: &str| {
            let name = names::parse_absolute_name(t)
                .map_err(|source| RecordError::InvalidTarget { rtype, target: t.into(), source })?;
            // A one-label target is almost always a relative name written
            // by mistake; served as absolute it would point at a TLD.
            if !name.contains('.') {
                return Err(RecordError::RelativeTarget { rtype, target: t.into() });
            }
            Ok(name)
        };
        Ok(match self {
            DnsRecord::A(_) | DnsRecord::Aaaa(_) => self.clone(),
            DnsRecord::Srv(srv) => {
                DnsRecord::Srv(SrvRecord { target: target("SRV", &srv.target)?, ..srv.clone() })
            }
            DnsRecord::Ns(t) => DnsRecord::Ns(target("NS", t)?),
            DnsRecord::Cname(t) => DnsRecord::Cname(target("CNAME", t)?),
            DnsRecord::Txt(data) => {
                if data.len() > MAX_TXT_LEN {
                    return Err(RecordError::TxtTooLong { len: data.len() });
                }
                crate::limits::check_no_controls("TXT data", data, &[])?;
                self.clone()
            }
        })
    }

    /// Parses the command-line form `TYPE DATA`, e.g. `AAAA fd00::1` or
    /// `SRV "0 0 12221 host.example.test"`, into a canonical record.
    pub fn parse(rtype: &str, data: &str) -> Result<DnsRecord, RecordError> {
        let invalid = |rtype: &'static str, reason: &str| RecordError::InvalidData {
            rtype,
            data: data.into(),
            reason: reason.into(),
        };
        let record = match rtype.to_ascii_uppercase().as_str() {
            "A" => DnsRecord::A(data.parse().map_err(|_| invalid("A", "not an IPv4 address"))?),
            "AAAA" => {
                DnsRecord::Aaaa(data.parse().map_err(|_| invalid("AAAA", "not an IPv6 address"))?)
            }
            "SRV" => {
                const USAGE: &str = "expected \"PRIORITY WEIGHT PORT TARGET\"";
                let parts: Vec<&str> = data.split_whitespace().collect();
                let [prio, weight, port, target] = parts[..] else {
                    return Err(invalid("SRV", USAGE));
                };
                let number = |s: &str| s.parse::<u16>().map_err(|_| invalid("SRV", USAGE));
                DnsRecord::Srv(SrvRecord {
                    prio: number(prio)?,
                    weight: number(weight)?,
                    port: number(port)?,
                    target: target.into(),
                })
            }
            "NS" => DnsRecord::Ns(data.into()),
            "CNAME" => DnsRecord::Cname(data.into()),
            "TXT" => DnsRecord::Txt(data.into()),
            _ => return Err(RecordError::UnsupportedType(rtype.into())),
        };
        record.normalized()
    }
}

impl fmt::Display for DnsRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsRecord::A(a) => write!(f, "A {a}"),
            DnsRecord::Aaaa(a) => write!(f, "AAAA {a}"),
            DnsRecord::Srv(s) => {
                write!(f, "SRV {} {} {} {}", s.prio, s.weight, s.port, s.target)
            }
            DnsRecord::Ns(t) => write!(f, "NS {t}"),
            DnsRecord::Cname(t) => write!(f, "CNAME {t}"),
            DnsRecord::Txt(t) => write!(f, "TXT {t:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let srv = DnsRecord::Srv(SrvRecord { prio: 0, weight: 1, port: 2, target: "h.z".into() });
        assert_eq!(
            serde_json::to_string(&srv).unwrap(),
            r#"{"type":"SRV","data":{"prio":0,"weight":1,"port":2,"target":"h.z"}}"#
        );
        let aaaa: DnsRecord = serde_json::from_str(r#"{"type":"AAAA","data":"fd00::1"}"#).unwrap();
        assert_eq!(aaaa, DnsRecord::Aaaa("fd00::1".parse().unwrap()));
        assert!(serde_json::from_str::<DnsRecord>(r#"{"type":"A","data":"fd00::1"}"#).is_err());
        assert!(serde_json::from_str::<DnsRecord>(r#"{"type":"MX","data":"x"}"#).is_err());
    }

    #[test]
    fn parse_cli_form() {
        assert_eq!(DnsRecord::parse("a", "192.0.2.1").unwrap().to_string(), "A 192.0.2.1");
        assert_eq!(
            DnsRecord::parse("SRV", "0 0 12221 Nexus.Example.Test.").unwrap().to_string(),
            "SRV 0 0 12221 nexus.example.test"
        );
        for (t, d, expected) in [
            ("A", "fd00::1", "not an IPv4 address"),
            ("AAAA", "1.2.3.4", "not an IPv6 address"),
            ("SRV", "0 0 host", "expected \"PRIORITY"),
            ("SRV", "0 0 70000 host", "expected \"PRIORITY"),
            ("MX", "x", "unsupported record type \"MX\""),
            ("CNAME", "bad..target", "CNAME target \"bad..target\""),
        ] {
            let error = DnsRecord::parse(t, d).unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?} should contain {expected:?}");
        }
    }

    #[test]
    fn txt_limit() {
        let long = DnsRecord::Txt("x".repeat(MAX_TXT_LEN + 1));
        assert_eq!(long.normalized(), Err(RecordError::TxtTooLong { len: MAX_TXT_LEN + 1 }));
    }
}
