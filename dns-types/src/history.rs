//! One name's history: the stretches of generations during which its records
//! did not change (as the database stores them), and the events a person
//! reads ("added at 4", "changed at 7", "removed at 9").

use crate::{DnsRecord, DnsVersion};
use serde::{Deserialize, Serialize};

/// The records a name had from `added` until just before `removed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameStretch {
    pub records: Vec<DnsRecord>,
    pub added: DnsVersion,
    /// `None` while the stretch lasts (the name has these records now).
    pub removed: Option<DnsVersion>,
}

impl NameStretch {
    /// Whether the name had these records at `generation`.
    pub fn covers(&self, generation: u64) -> bool {
        self.added.generation <= generation
            && self.removed.as_ref().is_none_or(|r| r.generation > generation)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameEventKind {
    Added,
    Changed,
    Removed,
}

/// One generation that added, changed or removed the name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEvent {
    pub kind: NameEventKind,
    pub version: DnsVersion,
    pub records_before: Vec<DnsRecord>,
    pub records_after: Vec<DnsRecord>,
}

/// The events of a name, oldest first, from its stretches (sorted by the
/// generation that added them, as the database returns them).
pub fn name_events(stretches: &[NameStretch]) -> Vec<NameEvent> {
    let mut events = Vec::new();
    let mut previous: Option<&NameStretch> = None;
    for stretch in stretches {
        let continues = previous.and_then(|p| p.removed.as_ref()).map(|r| r.generation)
            == Some(stretch.added.generation);
        match previous {
            Some(p) if continues => events.push(NameEvent {
                kind: NameEventKind::Changed,
                version: stretch.added.clone(),
                records_before: p.records.clone(),
                records_after: stretch.records.clone(),
            }),
            _ => {
                if let Some(p) = previous
                    && let Some(removed) = &p.removed
                {
                    events.push(removed_event(p, removed));
                }
                events.push(NameEvent {
                    kind: NameEventKind::Added,
                    version: stretch.added.clone(),
                    records_before: Vec::new(),
                    records_after: stretch.records.clone(),
                })
            }
        }
        previous = Some(stretch);
    }
    if let Some(p) = previous
        && let Some(removed) = &p.removed
    {
        events.push(removed_event(p, removed));
    }
    events
}

fn removed_event(stretch: &NameStretch, removed: &DnsVersion) -> NameEvent {
    NameEvent {
        kind: NameEventKind::Removed,
        version: removed.clone(),
        records_before: stretch.records.clone(),
        records_after: Vec::new(),
    }
}

/// Up to `limit` names from `candidates` that look like `name` (a typo, a
/// missing or extra label), closest first.  For "never existed" answers, so
/// that the person asking sees what they may have meant.
pub fn near_misses<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    limit: usize,
) -> Vec<String> {
    let first_label = name.split('.').next().unwrap_or(name);
    let budget = (name.len() / 4).clamp(2, 3);
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter(|c| *c != name)
        .filter_map(|c| {
            let distance = edit_distance(name, c);
            let shares_label =
                c.split('.').next() == Some(first_label) || c.split('.').any(|l| l == first_label);
            if distance <= budget {
                Some((distance, c))
            } else if shares_label {
                Some((budget + 1 + distance, c))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored.into_iter().take(limit).map(|(_, c)| c.to_string()).collect()
}

/// Levenshtein distance over bytes (names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DnsGroup;
    use chrono::Utc;

    fn version(generation: u64) -> DnsVersion {
        DnsVersion {
            group: DnsGroup::External,
            generation,
            time_created: Utc::now(),
            creator: "c".into(),
            comment: format!("g{generation}"),
        }
    }

    fn a(ip: &str) -> Vec<DnsRecord> {
        vec![DnsRecord::A(ip.parse().unwrap())]
    }

    #[test]
    fn stretches_become_events() {
        let stretches = vec![
            NameStretch { records: a("192.0.2.1"), added: version(2), removed: Some(version(4)) },
            NameStretch { records: a("192.0.2.2"), added: version(4), removed: Some(version(6)) },
            NameStretch { records: a("192.0.2.3"), added: version(9), removed: None },
        ];
        let events = name_events(&stretches);
        let kinds: Vec<(NameEventKind, u64)> =
            events.iter().map(|e| (e.kind, e.version.generation)).collect();
        assert_eq!(
            kinds,
            vec![
                (NameEventKind::Added, 2),
                (NameEventKind::Changed, 4),
                (NameEventKind::Removed, 6),
                (NameEventKind::Added, 9),
            ]
        );
        assert_eq!(events[1].records_before, a("192.0.2.1"));
        assert_eq!(events[2].records_before, a("192.0.2.2"));
        assert!(stretches[1].covers(5) && !stretches[1].covers(6) && stretches[2].covers(100));
        assert!(name_events(&[]).is_empty());
    }

    #[test]
    fn near_misses_find_typos_and_shared_labels() {
        let names = ["shop", "shops", "api", "www", "shop.eu", "chop", "unrelated-thing"];
        let found = near_misses("shpo", names, 5);
        assert!(found.contains(&"shop".to_string()), "{found:?}");
        assert!(!found.contains(&"unrelated-thing".to_string()), "{found:?}");
        let found = near_misses("shop.us", names, 5);
        assert_eq!(found.first().map(String::as_str), Some("shop.eu"), "{found:?}");
        assert!(near_misses("zzzzzzzz", names, 5).is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
