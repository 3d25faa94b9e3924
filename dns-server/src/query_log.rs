//! The opt-in query log (`--query-log FILE`, `--query-log-sample N`): one
//! JSON object per line for every query (or one in N), with who asked what
//! and what was answered from which generation.  Off by default: a busy
//! server answers tens of thousands of queries a second, and the default
//! log has no line per query.
//!
//! An optional output never blocks or floods serving: lines go through a
//! bounded queue to a thread of their own, which opens the file (a FIFO
//! nobody opens yet does not hold up the start) and writes it (a reader
//! that stopped reading, or a full disk, holds up only that thread).  When
//! the queue is full the line is dropped and counted; a failing write is
//! counted too, and said at most once a minute.

use chrono::Utc;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lines waiting for the writer at most.
const QUEUE: usize = 4096;
/// How often a failing log says so.
const WARN_EVERY: Duration = Duration::from_secs(60);

pub struct QueryLog {
    sender: std::sync::mpsc::SyncSender<Vec<u8>>,
    /// Log one query in this many.
    sample: u64,
    seen: AtomicU64,
    counts: Arc<Counts>,
}

/// What became of the lines.
#[derive(Debug, Default)]
pub struct Counts {
    pub written: AtomicU64,
    /// Dropped because the writer was behind (the queue was full).
    pub dropped: AtomicU64,
    /// Lost because writing failed (a full disk, a closed pipe).
    pub failed: AtomicU64,
}

/// One logged query.
#[derive(serde::Serialize)]
pub struct Entry<'a> {
    pub src: std::net::SocketAddr,
    pub transport: &'a str,
    pub id: u16,
    pub qname: String,
    pub qtype: String,
    pub qclass: String,
    pub rcode: String,
    pub answers: u16,
    pub generation: u64,
}

impl QueryLog {
    /// Appends to `path` (created if missing, by the writer thread),
    /// logging one query in `sample` (at least 1).
    pub fn open(path: &Path, sample: u64) -> std::io::Result<QueryLog> {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let counts = Arc::new(Counts::default());
        let writer_counts = counts.clone();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("query-log".into())
            .spawn(move || write_lines(&path, receiver, &writer_counts))?;
        Ok(QueryLog { sender, sample: sample.max(1), seen: AtomicU64::new(0), counts })
    }

    /// Whether the next query is one to log.
    pub fn wants_next(&self) -> bool {
        self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.sample)
    }

    /// Queues one line; never waits.
    pub fn write(&self, entry: &Entry<'_>) {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            time: chrono::DateTime<Utc>,
            #[serde(flatten)]
            entry: &'a Entry<'a>,
        }
        let Ok(mut line) = serde_json::to_vec(&Line { time: Utc::now(), entry }) else { return };
        line.push(b'\n');
        if self.sender.try_send(line).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

/// The writer thread: opens `path` (waiting, if it must, on its own), then
/// writes each line; ends when the log is dropped.
fn write_lines(path: &PathBuf, receiver: std::sync::mpsc::Receiver<Vec<u8>>, counts: &Counts) {
    let mut last_warning: Option<Instant> = None;
    let mut warn = |what: &str, error: &std::io::Error, counts: &Counts| {
        if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            last_warning = Some(Instant::now());
            tracing::warn!(
                path = %path.display(), %error,
                failed = counts.failed.load(Ordering::Relaxed),
                dropped = counts.dropped.load(Ordering::Relaxed),
                "the query log could not {what} (said at most once a minute; queries are answered regardless)"
            );
        }
    };
    let mut file = loop {
        match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(file) => break file,
            Err(error) => {
                warn("be opened", &error, counts);
                // Lines that arrive meanwhile are lost, and counted.
                while let Ok(_line) = receiver.try_recv() {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    while let Ok(line) = receiver.recv() {
        match file.write_all(&line) {
            Ok(()) => {
                counts.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                warn("be written", &error, counts);
            }
        }
    }
}
