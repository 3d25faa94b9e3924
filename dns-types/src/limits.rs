//! The bounds every input is held to, decided once here and asked by the
//! database layer, Nexus's API and the DNS server alike, so that nothing one
//! of them accepts can be refused (or mis-served) by another.
//!
//! - A generation is the zone's SOA serial on the wire, a 32-bit number:
//!   generations stop at [`MAX_GENERATION`].  Serials stay monotonic because
//!   generations only grow in the database and a server refuses an older
//!   one; only an explicit repair moves a server back.
//! - Comments and creators are short single-line-ish text that PostgreSQL
//!   (and CockroachDB) can store: no NUL, no other control characters
//!   except tab and newline.
//! - All records of one name, as a DNS answer, fit well inside one TCP DNS
//!   message (65,535 bytes), with room left for the question, the OPT
//!   record and additional records.

use crate::DnsRecord;

/// The largest generation: the SOA serial is 32 bits (RFC 1035).
pub const MAX_GENERATION: u64 = u32::MAX as u64;
/// Longest comment, in bytes.
pub const MAX_COMMENT_BYTES: usize = 1024;
/// Longest idempotency key of a change.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// Longest creator, in bytes.
pub const MAX_CREATOR_BYTES: usize = 256;
/// Largest wire size of all records of one name (owner names compressed).
pub const MAX_NAME_WIRE_BYTES: usize = 16 * 1024;
/// Most task names in one activation request.
pub const MAX_ACTIVATE_TASKS: usize = 64;
/// Longest free text from a peer (a writer's id, a repair's reason) that
/// is kept in a history, a status or a log line.
pub const MAX_NOTE_BYTES: usize = 256;

/// `text` made safe to keep and print: at most `max` bytes (cut on a
/// character boundary, with `…` when cut) and every control character
/// (a newline that would forge a log line, say) escaped as `\u{..}`.
pub fn bounded_text(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let piece = if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() };
        if out.len() + piece.len() > max {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{what} is {len} bytes long (at most {max} allowed)")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("{what} contains the control character U+{code:04X} at byte {at}")]
    ControlCharacter { what: &'static str, code: u32, at: usize },
}

/// Checks free text (a comment, a creator) against `max` bytes and for
/// characters the database cannot store or that would garble one-line logs.
pub fn check_text(what: &'static str, text: &str, max: usize) -> Result<(), TextError> {
    if text.len() > max {
        return Err(TextError::TooLong { what, len: text.len(), max });
    }
    check_no_controls(what, text, &['\t', '\n'])
}

/// Refuses control characters other than `allowed` (NUL in particular,
/// which PostgreSQL's text and JSONB cannot hold).
pub fn check_no_controls(
    what: &'static str,
    text: &str,
    allowed: &[char],
) -> Result<(), TextError> {
    match text.char_indices().find(|(_, c)| c.is_control() && !allowed.contains(c)) {
        Some((at, c)) => Err(TextError::ControlCharacter { what, code: c as u32, at }),
        None => Ok(()),
    }
}

/// Length of `name` (dotted, without the final dot) in wire form.
fn name_wire_len(name: &str) -> usize {
    if name.is_empty() { 1 } else { name.len() + 2 }
}

/// How many names the DNS server's encoder compresses in one message
/// (hickory-proto stops compressing after 120, to bound the cost of
/// compression; the question's name is the first): the owner of every
/// answer record after these is written in full.
pub const COMPRESSED_OWNERS: usize = 119;

/// The wire size of `records` as the answer records of the name `owner`
/// (absolute, without the final dot), as the server writes them: type,
/// class, TTL and length (10 bytes) and the data of each, with the owner
/// compressed to a pointer (2 bytes) for the first [`COMPRESSED_OWNERS`]
/// and written in full after them.  What the wire carries decides the
/// bound, not what a better encoder could do.
pub fn records_wire_size(owner: &str, records: &[DnsRecord]) -> usize {
    let owner_len = name_wire_len(owner);
    records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let owner = if i < COMPRESSED_OWNERS { 2 } else { owner_len };
            owner
                + 10
                + match record {
                    DnsRecord::A(_) => 4,
                    DnsRecord::Aaaa(_) => 16,
                    DnsRecord::Srv(srv) => 6 + name_wire_len(&srv.target),
                    DnsRecord::Ns(target) | DnsRecord::Cname(target) => name_wire_len(target),
                    // Character-strings of at most 255 bytes, each with a
                    // length byte.
                    DnsRecord::Txt(text) => text.len() + text.len().div_ceil(255).max(1),
                }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_escapes_controls_and_cuts() {
        assert_eq!(bounded_text("nexus-1", 64), "nexus-1");
        assert_eq!(bounded_text("a\nINFO forged", 64), "a\\u{a}INFO forged");
        let long = "é".repeat(200);
        let cut = bounded_text(&long, 10);
        assert!(cut.len() <= 10 + '…'.len_utf8() && cut.ends_with('…'), "{cut}");
    }

    #[test]
    fn text_is_bounded_and_free_of_control_characters() {
        assert!(check_text("comment", "line one\nline\ttwo", 100).is_ok());
        assert_eq!(
            check_text("comment", "abc\0def", 100),
            Err(TextError::ControlCharacter { what: "comment", code: 0, at: 3 })
        );
        assert!(check_text("comment", "\u{1b}[31m", 100).is_err());
        let error = check_text("comment", &"x".repeat(101), 100).unwrap_err();
        assert_eq!(error.to_string(), "comment is 101 bytes long (at most 100 allowed)");
    }

    #[test]
    fn wire_sizes_count_what_goes_on_the_wire() {
        let a = DnsRecord::A("192.0.2.1".parse().unwrap());
        assert_eq!(records_wire_size("x.example.test", &[a.clone(), a.clone()]), 32);
        // Past the compressed owners, each record carries its whole owner.
        let many = vec![a; COMPRESSED_OWNERS + 1];
        assert_eq!(records_wire_size("x.example.test", &many), COMPRESSED_OWNERS * 16 + 16 + 14);
        // "h.example.test" is 16 bytes on the wire.
        assert_eq!(records_wire_size("x.test", &[DnsRecord::Cname("h.example.test".into())]), 28);
        assert_eq!(records_wire_size("x.test", &[DnsRecord::Txt("x".repeat(256))]), 12 + 256 + 2);
        assert_eq!(records_wire_size("x.test", &[DnsRecord::Txt(String::new())]), 13);
    }
}
