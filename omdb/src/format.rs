//! Output helpers: times with their age, durations, tables, JSON.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::time::Duration;
use tabled::Table;
use tabled::settings::{Padding, Style};

/// Whether stdout's reader went away.
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `text` to stdout.  A reader that went away (`omdb ... | head -1`)
/// is not an error: what it read was all it wanted (Rust's `print!` would
/// panic).  The rest of the output is dropped, and omdb ends with the exit
/// status it would have had, so `set -o pipefail` scripts still see a
/// verdict's status.
pub fn write_stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            return;
        }
        eprintln!("error: writing to stdout: {error}");
        std::process::exit(1);
    }
}

/// `print!` that stays quiet when stdout's reader went away.
macro_rules! out {
    ($($arg:tt)*) => { $crate::format::write_stdout(format_args!($($arg)*)) };
}

/// `println!` that stays quiet when stdout's reader went away.
macro_rules! outln {
    () => { $crate::format::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::format::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints one JSON document.
    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        outln!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

/// `2025-06-10T03:31:47.775Z`
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `2025-06-10T03:31:47.775Z (23s ago)`
pub fn timestamp_ago(t: DateTime<Utc>) -> String {
    let ago = (Utc::now() - t).to_std().unwrap_or(Duration::ZERO);
    format!("{} ({} ago)", timestamp(t), short_duration(ago))
}

/// `1303ms`, `23s`, `5m 3s`, `2h 1m`, `3d 4h`.
pub fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 1 {
        format!("{}ms", d.as_millis())
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else if secs < 86400 {
        format!("{}h {}m", secs / 3600, (secs % 3600) / 60)
    } else {
        format!("{}d {}h", secs / 86400, (secs % 86400) / 3600)
    }
}

/// `every 1m`, `every 30s`, `every 1h`.
pub fn period(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("every {}h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("every {}m", secs / 60)
    } else {
        format!("every {}", short_duration(d))
    }
}

/// A moment as a person gives it: RFC 3339 (`2026-12-03T10:31:02.100Z`),
/// or a duration meaning that long before `now` (`15m`, `2h`, `90s`,
/// `1d`, `1h30m`, `250ms`).
pub fn parse_moment(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let mut total = chrono::Duration::zero();
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("an empty time".into());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let n: i64 = number.parse().map_err(|_| {
            format!("{text:?} is neither an RFC 3339 time nor a duration such as 15m or 1h30m")
        })?;
        let part = match unit {
            "ms" => chrono::Duration::milliseconds(n),
            "s" => chrono::Duration::seconds(n),
            "m" => chrono::Duration::minutes(n),
            "h" => chrono::Duration::hours(n),
            "d" => chrono::Duration::days(n),
            _ => {
                return Err(format!(
                    "{text:?} is neither an RFC 3339 time nor a duration such as 15m or 1h30m \
                     (units: ms, s, m, h, d)"
                ));
            }
        };
        total += part;
        rest = next;
    }
    Ok(now - total)
}

/// A borderless table, each line indented by `indent` spaces.
pub fn table<T: tabled::Tabled>(rows: impl IntoIterator<Item = T>, indent: usize) -> String {
    let mut table = Table::new(rows);
    table.with(Style::empty()).with(Padding::new(0, 2, 0, 0));
    let prefix = " ".repeat(indent);
    table
        .to_string()
        .lines()
        .map(|l| format!("{prefix}{}", l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A table cell of at most `width` characters: longer text (an error
/// message) is cut, and given back whole to be printed under the table, so
/// that a table stays readable in 120 columns.
pub fn fit(text: &str, width: usize) -> (String, Option<String>) {
    if text.chars().count() <= width {
        return (text.to_string(), None);
    }
    let keep: String = text.chars().take(width.saturating_sub(12)).collect();
    (format!("{}... (below)", keep.trim_end()), Some(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_as_times_or_durations_ago() {
        let now: DateTime<Utc> = "2026-12-03T10:31:00Z".parse().unwrap();
        let at = |t: &str| parse_moment(t, now).map(timestamp);
        assert_eq!(at("2026-12-03T10:29:59.5Z").unwrap(), "2026-12-03T10:29:59.500Z");
        assert_eq!(at("2026-12-03T11:29:59+01:00").unwrap(), "2026-12-03T10:29:59.000Z");
        assert_eq!(at("15m").unwrap(), "2026-12-03T10:16:00.000Z");
        assert_eq!(at("1h30m").unwrap(), "2026-12-03T09:01:00.000Z");
        assert_eq!(at("250ms").unwrap(), "2026-12-03T10:30:59.750Z");
        assert!(at("15 minutes").is_err());
        assert!(at("yesterday").is_err());
        assert!(at("").is_err());
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(short_duration(Duration::from_millis(1303)), "1s");
        assert_eq!(short_duration(Duration::from_millis(876)), "876ms");
        assert_eq!(short_duration(Duration::from_secs(23)), "23s");
        assert_eq!(short_duration(Duration::from_secs(303)), "5m 3s");
        assert_eq!(short_duration(Duration::from_secs(7260)), "2h 1m");
        assert_eq!(period(Duration::from_secs(60)), "every 1m");
        assert_eq!(period(Duration::from_secs(3600)), "every 1h");
        assert_eq!(period(Duration::from_secs(90)), "every 1m 30s");
    }
}
