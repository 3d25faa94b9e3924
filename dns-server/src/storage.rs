//! Durable storage of the applied config in `--storage-dir`: a snapshot
//! and a journal of the differences applied since.
//!
//! - `config.json`, the snapshot: a whole config, replaced atomically (the
//!   new content is written to a temporary file in the same directory,
//!   flushed to disk, renamed over the old file, and the directory is
//!   flushed).  It carries the SHA-256 of the config exactly as stored,
//!   checked on load, and a random `journal_epoch`.
//! - `journal.jsonl`: a first line naming the snapshot's epoch, then one
//!   line per difference applied (`ConfigDiff` with the time applied and the
//!   SHA-256 of the line's difference), each appended and flushed to disk
//!   before the difference is served.  A one-name change costs one line,
//!   not a rewrite of 10 MB.
//!
//! Loading replays the journal onto the snapshot with the same checks a
//! live difference passes (exact base, stated digest).  A crash at any
//! moment leaves the last complete generation: a last line without its line
//! end is a difference never acknowledged and is dropped; a journal whose
//! epoch is not the snapshot's belongs to an older snapshot (a crash
//! between writing a new snapshot and starting its journal) and is ignored
//! when all it holds is already in the snapshot.  Anything else that does
//! not read back — a complete line that is damaged (even the last), a
//! missing or damaged header before differences, another snapshot's journal
//! holding generations beyond this one — would move the server back past a
//! generation it acknowledged, so it is an error naming the file and line,
//! and the server does not start on it.  When the journal grows past the
//! snapshot's size it is folded into a new snapshot.

use chrono::{DateTime, Utc};
use dns_server_api::AppliedConfig;
use dns_types::{ConfigDiff, DigestState, DnsConfig};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const FILE_NAME: &str = "config.json";
const TEMP_NAME: &str = "config.json.tmp";
const JOURNAL_NAME: &str = "journal.jsonl";
const JOURNAL_TEMP_NAME: &str = "journal.jsonl.tmp";
/// The apply history (`event_log`), beside the config it tells about.
const HISTORY_NAME: &str = "history.jsonl";
/// The journal is folded into the snapshot once it is this large and
/// larger than the snapshot.
const MIN_COMPACT_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("could not use storage directory {}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not read stored config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stored config {} is not valid; move it away to start empty", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "stored config {} was altered: its config has SHA-256 {computed}, but it was stored \
         with {stored}; restore it, or move it away to start empty (Nexus then pushes \
         the database's latest)",
        path.display()
    )]
    DigestMismatch { path: PathBuf, stored: String, computed: String },
    #[error("could not write config to {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "journal {} is damaged at line {line} (a complete line, so not a write cut short \
         by a crash: a generation this server acknowledged would be lost): {reason}; \
         move the storage directory away to start empty (Nexus then pushes the \
         database's latest)",
        path.display()
    )]
    JournalDamaged { path: PathBuf, line: usize, reason: String },
}

#[derive(Clone, Debug)]
pub struct Storage {
    dir: PathBuf,
    journal: Arc<Mutex<Journal>>,
}

/// The journal's state: whether it may be appended to, and how big it and
/// the snapshot are.  The file is opened by its path for each append (a
/// few microseconds next to the flush), so a journal moved away or
/// replaced is noticed rather than written to behind the operator's back.
#[derive(Debug, Default)]
struct Journal {
    /// Sizes known (set by a save, or by the first append after a start).
    sized: bool,
    /// A write failed part-way: nothing may follow it until a new snapshot.
    broken: bool,
    bytes: u64,
    snapshot_bytes: u64,
}

/// The snapshot file, as read back.  [`Storage::save`] writes it as it
/// serializes the config, then [`SnapshotRest`]; unknown fields are
/// refused, so the two cannot drift apart unnoticed (`save_load_and_replace`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot<'a> {
    #[serde(borrow)]
    config: &'a serde_json::value::RawValue,
    config_sha256: String,
    time_applied: DateTime<Utc>,
    /// Names the journal that belongs to this snapshot (absent in files
    /// written before the journal existed).
    #[serde(default)]
    journal_epoch: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalHeader {
    journal_epoch: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalEntry<'a> {
    #[serde(borrow)]
    diff: &'a serde_json::value::RawValue,
    diff_sha256: String,
    time_applied: DateTime<Utc>,
}

impl Storage {
    /// Uses `dir`, creating it if needed.
    pub fn open(dir: &Path) -> Result<Storage, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StorageError::Directory { path: dir.into(), source })?;
        // A temporary file left by a crash is garbage by definition.
        let _ = std::fs::remove_file(dir.join(TEMP_NAME));
        let _ = std::fs::remove_file(dir.join(JOURNAL_TEMP_NAME));
        Ok(Storage { dir: dir.into(), journal: Arc::default() })
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL_NAME)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Where the apply history is kept.
    pub fn history_path(&self) -> PathBuf {
        self.dir.join(HISTORY_NAME)
    }

    /// The stored config, if any: the snapshot, checked against its
    /// stored checksum, with the journal's differences applied.  For the
    /// server's own start and folds: a journal that may not be continued
    /// (another snapshot's, or cut short) is marked so, and the next
    /// difference is refused until a whole config starts a new one.
    pub fn load(&self) -> Result<Option<AppliedConfig>, StorageError> {
        let (applied, usable) = self.read()?;
        if applied.is_some() && !usable {
            // Appending to a journal that is not this snapshot's, or after
            // a line cut short, would lose or damage what follows: the next
            // difference is refused and a whole config starts a new one.
            self.journal.lock().unwrap_or_else(|e| e.into_inner()).broken = true;
        }
        Ok(applied)
    }

    /// The stored config, for a reader (`GET /config`): the same as
    /// [`Storage::load`], changing nothing, so it may run beside a write.
    pub fn read_applied(&self) -> Result<Option<AppliedConfig>, StorageError> {
        Ok(self.read()?.0)
    }

    /// The stored config, and whether its journal may be continued.
    fn read(&self) -> Result<(Option<AppliedConfig>, bool), StorageError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, true)),
            Err(source) => return Err(StorageError::Read { path, source }),
        };
        let stored: Snapshot = serde_json::from_slice(&bytes)
            .map_err(|source| StorageError::Corrupt { path: path.clone(), source })?;
        let computed = sha256_hex(stored.config.get().as_bytes());
        if computed != stored.config_sha256 {
            return Err(StorageError::DigestMismatch {
                path,
                stored: stored.config_sha256,
                computed,
            });
        }
        let mut config: DnsConfig = serde_json::from_str(stored.config.get())
            .map_err(|source| StorageError::Corrupt { path, source })?;
        let mut time_applied = stored.time_applied;
        let usable = match &stored.journal_epoch {
            Some(epoch) => {
                let mut state = DigestState::of_config(&config);
                self.replay(epoch, &mut config, &mut state, &mut time_applied)?
            }
            None => false,
        };
        Ok((Some(AppliedConfig { config, time_applied }), usable))
    }

    /// Applies the journal of snapshot `epoch` to `config`; returns whether
    /// more may be appended to it (it is this snapshot's and whole).
    fn replay(
        &self,
        epoch: &str,
        config: &mut DnsConfig,
        state: &mut DigestState,
        time_applied: &mut DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let path = self.journal_path();
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(StorageError::Read { path, source }),
        };
        let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        let damaged = |line: usize, reason: String| StorageError::JournalDamaged {
            path: path.clone(),
            line: line + 1,
            reason,
        };
        for (index, line) in lines.iter().enumerate() {
            let is_last = index + 1 == lines.len();
            // Only the last line can be cut short, by a crash while it was
            // written: that difference was never acknowledged.  A complete
            // line that does not read back was acknowledged: dropping it
            // would move the server back unseen, so it is damage.
            let complete = line.ends_with(b"\n");
            if index == 0 {
                match serde_json::from_slice::<JournalHeader>(line) {
                    Ok(header) if header.journal_epoch == epoch && complete => continue,
                    // A header cut short while the journal was created,
                    // with nothing after it: nothing was acknowledged.
                    _ if lines.len() == 1 && !complete => return Ok(false),
                    // Another snapshot's journal (a crash between writing
                    // a new snapshot and starting its journal): fine only
                    // if everything in it is already in this snapshot.
                    Ok(_) if complete => {
                        return match journal_beyond(&lines[1..], config.generation) {
                            None => Ok(false),
                            Some(generation) => Err(damaged(
                                index,
                                format!(
                                    "it belongs to another snapshot but holds generation \
                                     {generation}, beyond the snapshot's {}",
                                    config.generation
                                ),
                            )),
                        };
                    }
                    _ => {
                        return Err(damaged(
                            index,
                            "its first line is not the journal's header, so the differences \
                             after it cannot be tied to the snapshot"
                                .into(),
                        ));
                    }
                }
            }
            let entry = match serde_json::from_slice::<JournalEntry>(line) {
                Ok(entry) if complete => entry,
                _ if is_last && !complete => return Ok(false),
                Ok(_) => return Err(damaged(index, "no line end".into())),
                Err(e) => return Err(damaged(index, e.to_string())),
            };
            if sha256_hex(entry.diff.get().as_bytes()) != entry.diff_sha256 {
                return Err(damaged(index, "its checksum does not match".into()));
            }
            let diff: ConfigDiff = serde_json::from_str(entry.diff.get())
                .map_err(|e| damaged(index, e.to_string()))?;
            diff.apply_to(config, state).map_err(|e| damaged(index, dns_types::error_chain(&e)))?;
            *time_applied = entry.time_applied;
        }
        Ok(!lines.is_empty())
    }

    /// Replaces the stored config atomically and durably, with a new empty
    /// journal.  Blocking.
    pub fn save(
        &self,
        config: &DnsConfig,
        time_applied: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let temp = self.dir.join(TEMP_NAME);
        let write_error = |source| StorageError::Write { path: temp.clone(), source };
        let file = File::create(&temp).map_err(write_error)?;
        let epoch = uuid::Uuid::new_v4().to_string();
        // Written as it is serialized, the config hashed on its way out: a
        // large config is never held as text (twice, as it once was) beside
        // the config itself and the generations being swapped.  The bytes
        // are those of `Snapshot`, whose `config` the loader hashes again.
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
        out.write_all(b"{\"config\":").map_err(write_error)?;
        let mut hashing = HashingWriter { inner: &mut out, hasher: sha2::Sha256::default() };
        serde_json::to_writer(&mut hashing, config).map_err(|e| write_error(e.into()))?;
        let config_sha256 = hex(&sha2::Digest::finalize(hashing.hasher));
        let rest = serde_json::to_vec(&SnapshotRest {
            config_sha256,
            time_applied,
            journal_epoch: Some(epoch.clone()),
        })
        .expect("plain data serializes");
        // `rest` is an object of its own: its fields follow the config's.
        out.write_all(b",").map_err(write_error)?;
        out.write_all(&rest[1..]).map_err(write_error)?;
        let file = out.into_inner().map_err(|e| write_error(e.into_error()))?;
        file.sync_all().map_err(write_error)?;
        let snapshot_bytes = file.metadata().map_err(write_error)?.len();
        drop(file);
        std::fs::rename(&temp, self.path()).map_err(write_error)?;
        sync_dir(&self.dir).map_err(write_error)?;
        // From here the old journal no longer counts (its epoch is the old
        // snapshot's); start the new one.
        *journal = Journal::default();
        let journal_temp = self.dir.join(JOURNAL_TEMP_NAME);
        let write_error = |source| StorageError::Write { path: journal_temp.clone(), source };
        let mut file = File::create(&journal_temp).map_err(write_error)?;
        let mut header = serde_json::to_vec(&JournalHeader { journal_epoch: epoch })
            .expect("plain data serializes");
        header.push(b'\n');
        file.write_all(&header).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        std::fs::rename(&journal_temp, self.journal_path()).map_err(write_error)?;
        sync_dir(&self.dir).map_err(write_error)?;
        *journal =
            Journal { sized: true, broken: false, bytes: header.len() as u64, snapshot_bytes };
        Ok(())
    }

    /// Appends a difference to the journal, durably.  Blocking.  Returns
    /// whether the journal should now be folded into a new snapshot.
    pub fn append(
        &self,
        diff: &ConfigDiff,
        time_applied: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let path = self.journal_path();
        let write_error = |source| StorageError::Write { path: path.clone(), source };
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if journal.broken {
            return Err(write_error(std::io::Error::other(
                "an earlier write to the journal failed part-way; a whole config (PUT /config) \
                 starts a new one",
            )));
        }
        // Never created: a journal only exists beside its snapshot.
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).map_err(write_error)?;
        if !journal.sized {
            // After a start-up: continue the journal of the snapshot loaded.
            journal.bytes = file.metadata().map_err(write_error)?.len();
            journal.snapshot_bytes =
                std::fs::metadata(self.path()).map(|m| m.len()).unwrap_or_default();
            journal.sized = true;
        }
        let diff = serde_json::value::to_raw_value(diff).expect("differences always serialize");
        let mut line = serde_json::to_vec(&JournalEntry {
            diff_sha256: sha256_hex(diff.get().as_bytes()),
            diff: &diff,
            time_applied,
        })
        .expect("differences always serialize");
        line.push(b'\n');
        if let Err(source) = file.write_all(&line).and_then(|()| file.sync_data()) {
            // The line may be half written: nothing may follow it (a load
            // would find a damaged line in the middle) until a snapshot.
            journal.broken = true;
            return Err(write_error(source));
        }
        journal.bytes += line.len() as u64;
        Ok(journal.bytes > MIN_COMPACT_BYTES.max(journal.snapshot_bytes))
    }
}

/// The largest generation a journal's `entries` lead to, if it is beyond
/// `generation` (or if an entry cannot be read, so nothing can be vouched
/// for: then `u64::MAX`).
fn journal_beyond(entries: &[&[u8]], generation: u64) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Target {
        generation: u64,
    }
    let mut beyond = None;
    for line in entries {
        if !line.ends_with(b"\n") {
            continue;
        }
        let target = serde_json::from_slice::<JournalEntry>(line)
            .ok()
            .and_then(|e| serde_json::from_str::<Target>(e.diff.get()).ok())
            .map_or(u64::MAX, |t| t.generation);
        if target > generation {
            beyond = beyond.max(Some(target));
        }
    }
    beyond
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A snapshot's fields after its config, as [`Storage::save`] writes them.
#[derive(serde::Serialize)]
struct SnapshotRest {
    config_sha256: String,
    time_applied: DateTime<Utc>,
    journal_epoch: Option<String>,
}

/// Passes writes on and hashes them.
struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(generation: u64) -> AppliedConfig {
        AppliedConfig {
            config: DnsConfig {
                generation,
                time_created: Utc::now(),
                creator: "c".into(),
                comment: "c".into(),
                zones: vec![],
            },
            time_applied: Utc::now(),
        }
    }

    #[test]
    fn save_load_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        assert_eq!(storage.load().unwrap(), None);
        let save = |a: &AppliedConfig| storage.save(&a.config, a.time_applied).unwrap();
        save(&applied(1));
        let second = applied(2);
        save(&second);
        let loaded = storage.load().unwrap().unwrap();
        assert_eq!(loaded.config, second.config);
        assert_eq!(loaded.time_applied, second.time_applied);
    }

    #[test]
    fn a_crash_mid_write_leaves_the_previous_config() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let a = applied(5);
        storage.save(&a.config, a.time_applied).unwrap();
        // What a crash during the next save leaves behind: a partial temp file.
        std::fs::write(dir.path().join(TEMP_NAME), b"{\"config\": {\"genera").unwrap();
        let reopened = Storage::open(dir.path()).unwrap();
        assert_eq!(reopened.load().unwrap().unwrap().config.generation, 5);
        assert!(!dir.path().join(TEMP_NAME).exists());
    }

    /// Other valid JSON (a record edited by hand) is refused, naming the
    /// file and both digests.
    #[test]
    fn an_altered_file_is_refused_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut a = applied(5);
        a.config.comment = "original".into();
        storage.save(&a.config, a.time_applied).unwrap();
        let text = std::fs::read_to_string(storage.path()).unwrap();
        std::fs::write(storage.path(), text.replace("original", "altered!")).unwrap();
        let error = storage.load().unwrap_err().to_string();
        assert!(error.contains("was altered"), "{error}");
        assert!(error.contains(&storage.path().display().to_string()), "{error}");
        assert!(error.contains("SHA-256"), "{error}");
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"not json").unwrap();
        let error = Storage::open(dir.path()).unwrap().load().unwrap_err();
        assert!(error.to_string().contains("is not valid"), "{error}");
    }

    fn config_with(generation: u64, names: &[(&str, u8)]) -> DnsConfig {
        DnsConfig {
            generation,
            time_created: Utc::now(),
            creator: "c".into(),
            comment: format!("generation {generation}"),
            zones: vec![dns_types::DnsConfigZone {
                zone_name: "example.test".into(),
                ttl_seconds: 60,
                names: names
                    .iter()
                    .map(|(n, ip)| {
                        let ip = std::net::Ipv4Addr::new(192, 0, 2, *ip);
                        (n.to_string(), vec![dns_types::DnsRecord::A(ip)])
                    })
                    .collect(),
            }],
        }
    }

    fn diff(from: &DnsConfig, to: &DnsConfig) -> ConfigDiff {
        ConfigDiff::between(from, to)
    }

    /// 1,000 differences in a row, then a load: the same config (and
    /// digest) as the last generation loaded whole.
    #[test]
    fn a_journal_of_differences_loads_as_the_last_generation() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut config = config_with(1, &[("a", 1)]);
        storage.save(&config, Utc::now()).unwrap();
        let mut compact_asked = false;
        for generation in 2..=1001u64 {
            let mut next = config.clone();
            next.generation = generation;
            next.comment = format!("generation {generation}");
            let name = format!("n{}", generation % 300);
            let records = vec![dns_types::DnsRecord::A(std::net::Ipv4Addr::new(
                192,
                0,
                2,
                (generation % 250) as u8,
            ))];
            if generation % 7 == 0 {
                next.zones[0].names.remove(&name);
            } else {
                next.zones[0].names.insert(name, records);
            }
            compact_asked |= storage.append(&diff(&config, &next), Utc::now()).unwrap();
            config = next;
        }
        assert!(!compact_asked, "a small journal is not compacted");
        let loaded = Storage::open(dir.path()).unwrap().load().unwrap().unwrap().config;
        assert_eq!(loaded.generation, 1001);
        assert_eq!(dns_types::config_digest(&loaded), dns_types::config_digest(&config));
        assert_eq!(loaded.zones[0].names, config.zones[0].names);
    }

    /// A storage directory with generation 1 as the snapshot and 2 and 3 in
    /// the journal.
    fn three_generations() -> (tempfile::TempDir, [DnsConfig; 3]) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let one = config_with(1, &[("a", 1)]);
        let two = config_with(2, &[("a", 2)]);
        let three = config_with(3, &[("a", 3)]);
        storage.save(&one, Utc::now()).unwrap();
        storage.append(&diff(&one, &two), Utc::now()).unwrap();
        storage.append(&diff(&two, &three), Utc::now()).unwrap();
        (dir, [one, two, three])
    }

    /// A crash while a line is written leaves the generation before it,
    /// and appending is refused until a whole config starts a new journal.
    #[test]
    fn a_line_cut_short_is_the_previous_generation() {
        let (dir, [_, two, three]) = three_generations();
        let journal = std::fs::read(dir.path().join(JOURNAL_NAME)).unwrap();
        for cut in [1, 10, 100] {
            std::fs::write(dir.path().join(JOURNAL_NAME), &journal[..journal.len() - cut]).unwrap();
            let reopened = Storage::open(dir.path()).unwrap();
            assert_eq!(reopened.load().unwrap().unwrap().config.generation, 2, "cut {cut}");
            let error = reopened.append(&diff(&two, &three), Utc::now()).unwrap_err();
            assert!(error.to_string().contains("could not write"), "{error}");
            assert!(dns_types::error_chain(&error).contains("PUT /config"), "{error}");
        }
        // A damaged line with lines after it is not a crash: refused.
        let text = String::from_utf8(journal).unwrap();
        let damaged = text.replacen("192.0.2.2", "192.0.2.9", 1);
        std::fs::write(dir.path().join(JOURNAL_NAME), damaged).unwrap();
        let error = Storage::open(dir.path()).unwrap().load().unwrap_err().to_string();
        assert!(error.contains("is damaged at line 2"), "{error}");
    }

    /// A crash after a new snapshot but before its journal: the old journal
    /// is not applied to it.
    #[test]
    fn another_snapshots_journal_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let one = config_with(1, &[("a", 1)]);
        let two = config_with(2, &[("a", 2)]);
        storage.save(&one, Utc::now()).unwrap();
        storage.append(&diff(&one, &two), Utc::now()).unwrap();
        let old_journal = std::fs::read(dir.path().join(JOURNAL_NAME)).unwrap();
        let five = config_with(5, &[("b", 5)]);
        storage.save(&five, Utc::now()).unwrap();
        std::fs::write(dir.path().join(JOURNAL_NAME), old_journal).unwrap();
        let loaded = Storage::open(dir.path()).unwrap().load().unwrap().unwrap().config;
        assert_eq!(loaded.generation, 5);
    }

    /// Damage that would move the server back past a generation it
    /// acknowledged is refused, never taken for a write cut short.
    #[test]
    fn damage_never_rolls_an_acknowledged_generation_back() {
        let (dir, _) = three_generations();
        let path = dir.path().join(JOURNAL_NAME);
        let journal = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = journal.split_inclusive('\n').collect();
        let load = |text: String| {
            std::fs::write(&path, text).unwrap();
            Storage::open(dir.path()).unwrap().load().map(|a| a.unwrap().config.generation)
        };
        // One byte flipped in the complete last line.
        let flipped = journal.replacen("192.0.2.3", "192.0.2.4", 1);
        let error = load(flipped).unwrap_err().to_string();
        assert!(
            error.contains("is damaged at line 3") && error.contains("acknowledged"),
            "{error}"
        );
        // The header removed, or damaged.
        let error = load(lines[1..].concat()).unwrap_err().to_string();
        assert!(error.contains("line 1") && error.contains("header"), "{error}");
        let error = load(format!("{{\"journal_epo{}", &journal[14..])).unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        // Another snapshot's journal holding generations beyond this one.
        let foreign =
            journal.replacen(&lines[0][..lines[0].len() - 3], "{\"journal_epoch\":\"other", 1);
        let error = load(foreign).unwrap_err().to_string();
        assert!(error.contains("another snapshot") && error.contains("generation 3"), "{error}");
        // Intact, and cut short: as before.
        assert_eq!(load(journal.clone()).unwrap(), 3);
        assert_eq!(load(journal[..journal.len() - 5].to_string()).unwrap(), 2);
    }
}
