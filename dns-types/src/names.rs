//! DNS name syntax: what a name may look like, and its canonical form.
//!
//! Canonical names are lower case, without a trailing dot; a name relative to
//! its zone is written without the zone, and the apex is `@`.  Labels are
//! host-name style (letters, digits, `-`) plus `_`, which service names
//! (`_nexus._tcp`) need.  Wildcards are not supported.

/// Longest name in presentation form, without the trailing dot (RFC 1035).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {len} characters long (at most {MAX_NAME_LEN} allowed)")]
    TooLong { len: usize },
    #[error("name has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel,
    #[error("label {label:?} is {len} characters long (at most {MAX_LABEL_LEN} allowed)")]
    LabelTooLong { label: String, len: usize },
    #[error("label {label:?} contains {ch:?} (allowed: letters, digits, '-' and '_')")]
    InvalidCharacter { label: String, ch: char },
    #[error("label {label:?} starts or ends with '-'")]
    HyphenAtEdge { label: String },
    #[error("{name:?} is not inside any of the zones {zones:?}")]
    NotInZones { name: String, zones: Vec<String> },
    #[error(
        "relative name {name:?} is ambiguous: the group has several zones {zones:?}; give an absolute name ending in '.'"
    )]
    Ambiguous { name: String, zones: Vec<String> },
    #[error("the group has no zones")]
    NoZones,
}

fn check_labels(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong { label: label.into(), len: label.len() });
        }
        if let Some(ch) =
            label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(NameError::InvalidCharacter { label: label.into(), ch });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::HyphenAtEdge { label: label.into() });
        }
    }
    Ok(())
}

/// Parses an absolute name (a zone name or a record target such as an SRV
/// target), with or without its trailing dot, into canonical form.
pub fn parse_absolute_name(name: &str) -> Result<String, NameError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    check_labels(trimmed)?;
    Ok(trimmed.to_ascii_lowercase())
}

/// Parses a zone name into canonical form.
pub fn parse_zone_name(name: &str) -> Result<String, NameError> {
    parse_absolute_name(name)
}

/// Parses a name relative to its zone (`@` for the apex) into canonical form.
pub fn parse_relative_name(name: &str) -> Result<String, NameError> {
    if name == "@" {
        return Ok("@".into());
    }
    check_labels(name)?;
    Ok(name.to_ascii_lowercase())
}

/// True if `name` is `zone` or lies below it (both canonical).
pub fn is_subdomain(name: &str, zone: &str) -> bool {
    name == zone
        || (name.len() > zone.len()
            && name.ends_with(zone)
            && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
}

/// The absolute form of a canonical relative name in `zone`.
pub fn absolute(relative: &str, zone: &str) -> String {
    if relative == "@" { zone.to_string() } else { format!("{relative}.{zone}") }
}

/// Finds which of `zones` (canonical zone names) a user-supplied name belongs
/// to, and returns the zone's index with the canonical relative name.
///
/// An absolute name (trailing dot) must lie inside one of the zones.  A name
/// without a trailing dot that ends in one of the zone names is taken as
/// absolute too, since nobody means `foo.example.test.example.test`;
/// anything else is relative to the group's only zone.
pub fn resolve_in_zones(name: &str, zones: &[&str]) -> Result<(usize, String), NameError> {
    if zones.is_empty() {
        return Err(NameError::NoZones);
    }
    let not_in_zones = || NameError::NotInZones {
        name: name.into(),
        zones: zones.iter().map(|z| z.to_string()).collect(),
    };
    let explicit_absolute = name.ends_with('.') && name != ".";
    if explicit_absolute || name != "@" {
        let lowered = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let found = zones.iter().enumerate().find(|(_, z)| is_subdomain(&lowered, z));
        match found {
            Some((index, zone)) => {
                let absolute = parse_absolute_name(name)?;
                let relative = if absolute.len() == zone.len() {
                    "@".to_string()
                } else {
                    absolute[..absolute.len() - zone.len() - 1].to_string()
                };
                return Ok((index, relative));
            }
            None if explicit_absolute => {
                parse_absolute_name(name)?;
                return Err(not_in_zones());
            }
            None => {}
        }
    }
    let relative = parse_relative_name(name)?;
    if zones.len() > 1 {
        return Err(NameError::Ambiguous {
            name: name.into(),
            zones: zones.iter().map(|z| z.to_string()).collect(),
        });
    }
    let full = absolute(&relative, zones[0]);
    if full.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: full.len() });
    }
    Ok((0, relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(parse_absolute_name("Example.TEST.").unwrap(), "example.test");
        assert_eq!(parse_relative_name("_Nexus._tcp").unwrap(), "_nexus._tcp");
        assert_eq!(parse_relative_name("@").unwrap(), "@");
    }

    #[test]
    fn bad_names() {
        let long_label = "a".repeat(64);
        let long_name = vec!["abcdefgh"; 30].join(".");
        let cases: Vec<(&str, NameError)> = vec![
            ("", NameError::Empty),
            ("a..b", NameError::EmptyLabel),
            (".a", NameError::EmptyLabel),
            (&long_label, NameError::LabelTooLong { label: long_label.clone(), len: 64 }),
            (&long_name, NameError::TooLong { len: long_name.len() }),
            ("a b", NameError::InvalidCharacter { label: "a b".into(), ch: ' ' }),
            ("*.a", NameError::InvalidCharacter { label: "*".into(), ch: '*' }),
            ("-a.b", NameError::HyphenAtEdge { label: "-a".into() }),
        ];
        for (name, expected) in cases {
            assert_eq!(parse_relative_name(name), Err(expected), "{name:?}");
        }
    }

    #[test]
    fn subdomains() {
        assert!(is_subdomain("a.example.test", "example.test"));
        assert!(is_subdomain("example.test", "example.test"));
        assert!(!is_subdomain("aexample.test", "example.test"));
        assert!(!is_subdomain("test", "example.test"));
    }

    #[test]
    fn resolving_names() {
        let one = ["example.test"];
        assert_eq!(resolve_in_zones("www", &one).unwrap(), (0, "www".into()));
        assert_eq!(resolve_in_zones("@", &one).unwrap(), (0, "@".into()));
        assert_eq!(resolve_in_zones("WWW.example.test.", &one).unwrap(), (0, "www".into()));
        assert_eq!(resolve_in_zones("www.example.test", &one).unwrap(), (0, "www".into()));
        assert_eq!(resolve_in_zones("example.test.", &one).unwrap(), (0, "@".into()));
        assert!(matches!(
            resolve_in_zones("www.other.test.", &one),
            Err(NameError::NotInZones { .. })
        ));
        let two = ["a.test", "b.test"];
        assert_eq!(resolve_in_zones("x.b.test", &two).unwrap(), (1, "x".into()));
        assert!(matches!(resolve_in_zones("x", &two), Err(NameError::Ambiguous { .. })));
        assert_eq!(resolve_in_zones("x", &[]), Err(NameError::NoZones));
    }
}
