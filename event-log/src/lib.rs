//! A durable, bounded log of timestamped events: what a component did, kept
//! so that questions about the past can be answered after a restart.
//!
//! One file of JSON lines (`{"seq": N, "time": T, "event": {...}}`), each
//! appended and flushed to disk before [`EventLog::append`] returns, and the
//! most recent events in memory for reading, newest first.  Bounded twice:
//! memory holds at most `retain` events, and the file at most twice that
//! many lines before it is rewritten with the last `retain` (a temporary
//! file, flushed, renamed over the old one).
//!
//! History is evidence, not state: a damaged line (a crash while it was
//! written, or an edit) is skipped and counted rather than stopping the
//! component, and a failure to write is returned to the caller, who
//! reports it, but nothing else stops.  What the log cannot vouch for it
//! says: [`EventLog::oldest_retained`] is the time before which it has
//! nothing, so "what happened at T" beyond it is answered "unknown".

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One event, numbered in the order it was appended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry<E> {
    /// Increases by one per event, across restarts.
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub event: E,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("could not read the event log {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write the event log {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What loading the file found besides the events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Events read.
    pub events: usize,
    /// Lines that could not be read (skipped).
    pub damaged_lines: usize,
}

pub struct EventLog<E> {
    /// `None`: kept in memory only.
    path: Option<PathBuf>,
    retain: usize,
    inner: Mutex<Inner<E>>,
}

struct Inner<E> {
    events: VecDeque<Entry<E>>,
    next_seq: u64,
    /// Lines in the file (complete ones, as far as this process knows).
    lines: usize,
    /// Time of the oldest event ever dropped from memory, if any: before
    /// it, the log knows nothing.
    dropped_before: Option<DateTime<Utc>>,
}

impl<E: Serialize + DeserializeOwned + Clone> EventLog<E> {
    /// Opens (or creates) the log at `path`, keeping the last `retain`
    /// events (at least 1).
    pub fn open(path: &Path, retain: usize) -> Result<(EventLog<E>, LoadReport), LogError> {
        let retain = retain.max(1);
        let mut report = LoadReport::default();
        let mut events: VecDeque<Entry<E>> = VecDeque::new();
        let mut lines = 0;
        let mut dropped_before = None;
        match std::fs::read(path) {
            Ok(bytes) => {
                for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    lines += 1;
                    match serde_json::from_slice::<Entry<E>>(line) {
                        Ok(entry) => {
                            events.push_back(entry);
                            if events.len() > retain {
                                let gone = events.pop_front().map(|e| e.time);
                                dropped_before = dropped_before.max(gone);
                            }
                        }
                        Err(_) => report.damaged_lines += 1,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LogError::Read { path: path.into(), source }),
        }
        report.events = events.len();
        let next_seq = events.back().map_or(1, |e| e.seq + 1);
        let log = EventLog {
            path: Some(path.into()),
            retain,
            inner: Mutex::new(Inner { events, next_seq, lines, dropped_before }),
        };
        {
            let mut inner = log.lock();
            if inner.lines > retain || report.damaged_lines > 0 {
                log.rewrite(&mut inner)?;
            }
        }
        Ok((log, report))
    }

    /// A log kept in memory only (for a component given no place to keep
    /// it): bounded the same way, gone with the process.
    pub fn in_memory(retain: usize) -> EventLog<E> {
        EventLog {
            path: None,
            retain: retain.max(1),
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                next_seq: 1,
                lines: 0,
                dropped_before: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<E>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `event` at `time`, durably.  Blocking (one flush to disk).
    /// The event is kept in memory even when writing fails, so that the
    /// running process still shows it; the error says the file lacks it.
    pub fn append(&self, time: DateTime<Utc>, event: E) -> Result<Entry<E>, LogError> {
        let mut entries = self.append_all(vec![(time, event)])?;
        Ok(entries.pop().expect("one event appended"))
    }

    /// Appends several events with one flush to disk.
    pub fn append_all(&self, events: Vec<(DateTime<Utc>, E)>) -> Result<Vec<Entry<E>>, LogError> {
        let mut inner = self.lock();
        let mut entries = Vec::with_capacity(events.len());
        for (time, event) in events {
            let entry = Entry { seq: inner.next_seq, time, event };
            inner.next_seq += 1;
            inner.events.push_back(entry.clone());
            entries.push(entry);
        }
        while inner.events.len() > self.retain {
            let gone = inner.events.pop_front().map(|e| e.time);
            inner.dropped_before = inner.dropped_before.max(gone);
        }
        let Some(path) = &self.path else { return Ok(entries) };
        if inner.lines + entries.len() > 2 * self.retain {
            self.rewrite(&mut inner)?;
            return Ok(entries);
        }
        let mut bytes = Vec::new();
        for entry in &entries {
            serde_json::to_writer(&mut bytes, entry).expect("events serialize");
            bytes.push(b'\n');
        }
        let write_error = |source| LogError::Write { path: path.clone(), source };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(write_error)?;
        file.write_all(&bytes).and_then(|()| file.sync_data()).map_err(write_error)?;
        inner.lines += entries.len();
        Ok(entries)
    }

    /// Replaces the file with the events in memory.
    fn rewrite(&self, inner: &mut Inner<E>) -> Result<(), LogError> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut temp = path.clone().into_os_string();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let write_error = |source| LogError::Write { path: temp.clone(), source };
        let mut bytes = Vec::new();
        for entry in &inner.events {
            serde_json::to_writer(&mut bytes, entry).expect("events serialize");
            bytes.push(b'\n');
        }
        let mut file = File::create(&temp).map_err(write_error)?;
        file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(write_error)?;
        drop(file);
        std::fs::rename(&temp, path).map_err(write_error)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(write_error)?;
        }
        inner.lines = inner.events.len();
        Ok(())
    }

    /// Up to `limit` events, newest first, from `since` on and up to
    /// `until` (both inclusive).
    pub fn newest_first(
        &self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Vec<Entry<E>> {
        self.lock()
            .events
            .iter()
            .rev()
            .skip_while(|e| until.is_some_and(|until| e.time > until))
            .take_while(|e| since.is_none_or(|since| e.time >= since))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Every event kept, oldest first, for a reader that indexes them.
    pub fn all(&self) -> Vec<Entry<E>> {
        self.lock().events.iter().cloned().collect()
    }

    /// Before this time the log knows nothing: the time of the newest
    /// event it no longer keeps (`None` while it has dropped none).
    pub fn oldest_retained(&self) -> Option<DateTime<Utc>> {
        self.lock().dropped_before
    }

    /// How many events the log keeps.
    pub fn retain(&self) -> usize {
        self.retain
    }

    /// The file, unless the log is kept in memory only.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn events_survive_a_reopen_in_order_and_numbered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let (log, report) = EventLog::<String>::open(&path, 100).unwrap();
        assert_eq!(report, LoadReport::default());
        for i in 0..5 {
            log.append(at(i), format!("event {i}")).unwrap();
        }
        drop(log);
        let (log, report) = EventLog::<String>::open(&path, 100).unwrap();
        assert_eq!(report.events, 5);
        let newest = log.newest_first(None, None, 2);
        assert_eq!(newest.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 4]);
        assert_eq!(newest[0].event, "event 4");
        assert_eq!(log.append(at(9), "next".into()).unwrap().seq, 6);
        assert_eq!(log.newest_first(Some(at(3)), None, 100).len(), 3, "4, 5 and the new one");
        let window = log.newest_first(Some(at(1)), Some(at(3)), 100);
        assert_eq!(
            window.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
            ["event 3", "event 2", "event 1"]
        );
        assert_eq!(log.oldest_retained(), None);
    }

    #[test]
    fn memory_and_file_stay_bounded_and_say_what_they_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let (log, _) = EventLog::<u64>::open(&path, 10).unwrap();
        for i in 0..95 {
            log.append(at(i as i64), i).unwrap();
        }
        assert_eq!(log.all().len(), 10);
        assert_eq!(log.all()[0].event, 85);
        assert_eq!(log.oldest_retained(), Some(at(84)));
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 20, "{lines} lines on disk for 10 kept");
        let (reopened, _) = EventLog::<u64>::open(&path, 10).unwrap();
        assert_eq!(reopened.all(), log.all());
        assert_eq!(reopened.oldest_retained().is_some(), lines > 10);
    }

    #[test]
    fn a_damaged_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let (log, _) = EventLog::<u64>::open(&path, 10).unwrap();
        for i in 0..3 {
            log.append(at(i), i as u64).unwrap();
        }
        drop(log);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.insert_str(0, "{not json\n");
        text.push_str("{\"seq\": 4, \"ti"); // cut short by a crash
        std::fs::write(&path, text).unwrap();
        let (log, report) = EventLog::<u64>::open(&path, 10).unwrap();
        assert_eq!(report, LoadReport { events: 3, damaged_lines: 2 });
        assert_eq!(log.append(at(5), 5).unwrap().seq, 4);
        // The file was rewritten without the damage.
        let (again, report) = EventLog::<u64>::open(&path, 10).unwrap();
        assert_eq!(report, LoadReport { events: 4, damaged_lines: 0 });
        assert_eq!(again.all().len(), 4);
    }
}
