//! The opt-in query log (`--query-log FILE`, `--query-log-sample N`): one
//! JSON object per line for every query (or one in N), with who asked what
//! and what was answered from which generation.  Off by default: a busy
//! server answers tens of thousands of queries a second, and the default
//! log has no line per query.

use chrono::Utc;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct QueryLog {
    file: Mutex<std::io::LineWriter<std::fs::File>>,
    /// Log one query in this many.
    sample: u64,
    seen: AtomicU64,
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
    /// Appends to `path` (created if missing), logging one query in
    /// `sample` (at least 1).
    pub fn open(path: &Path, sample: u64) -> std::io::Result<QueryLog> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(QueryLog {
            file: Mutex::new(std::io::LineWriter::new(file)),
            sample: sample.max(1),
            seen: AtomicU64::new(0),
        })
    }

    /// Whether the next query is one to log.
    pub fn wants_next(&self) -> bool {
        self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.sample)
    }

    pub fn write(&self, entry: &Entry<'_>) {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            time: chrono::DateTime<Utc>,
            #[serde(flatten)]
            entry: &'a Entry<'a>,
        }
        let Ok(mut line) = serde_json::to_vec(&Line { time: Utc::now(), entry }) else { return };
        line.push(b'\n');
        // A failing query log must not fail queries: each failed write is
        // logged at warn, and the query is answered anyway.
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(error) = file.write_all(&line) {
            tracing::warn!(%error, "could not write to the query log");
        }
    }
}
