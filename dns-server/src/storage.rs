//! Durable storage of the applied config in `--storage-dir`.
//!
//! One file, `config.json`, replaced atomically: the new content is written
//! to a temporary file in the same directory, flushed to disk, renamed over
//! the old file, and the directory is flushed.  A crash at any point leaves
//! either the old or the new file whole, never a mix.
//!
//! The file carries the SHA-256 of the config exactly as stored, checked on
//! load: a file edited by hand or damaged on disk into other valid JSON is a
//! start-up error naming the file, never served.

use chrono::{DateTime, Utc};
use dns_server_api::AppliedConfig;
use dns_types::DnsConfig;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "config.json";
const TEMP_NAME: &str = "config.json.tmp";

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
}

#[derive(Clone, Debug)]
pub struct Storage {
    dir: PathBuf,
}

impl Storage {
    /// Uses `dir`, creating it if needed.
    pub fn open(dir: &Path) -> Result<Storage, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StorageError::Directory { path: dir.into(), source })?;
        // A temporary file left by a crash is garbage by definition.
        let _ = std::fs::remove_file(dir.join(TEMP_NAME));
        Ok(Storage { dir: dir.into() })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The stored config, if any, checked against its stored checksum.
    pub fn load(&self) -> Result<Option<AppliedConfig>, StorageError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Stored<'a> {
            #[serde(borrow)]
            config: &'a serde_json::value::RawValue,
            config_sha256: String,
            time_applied: DateTime<Utc>,
        }
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StorageError::Read { path, source }),
        };
        let stored: Stored = serde_json::from_slice(&bytes)
            .map_err(|source| StorageError::Corrupt { path: path.clone(), source })?;
        let computed = sha256_hex(stored.config.get().as_bytes());
        if computed != stored.config_sha256 {
            return Err(StorageError::DigestMismatch {
                path,
                stored: stored.config_sha256,
                computed,
            });
        }
        let config = serde_json::from_str(stored.config.get())
            .map_err(|source| StorageError::Corrupt { path, source })?;
        Ok(Some(AppliedConfig { config, time_applied: stored.time_applied }))
    }

    /// Replaces the stored config atomically and durably.  Blocking.
    pub fn save(
        &self,
        config: &DnsConfig,
        time_applied: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        #[derive(serde::Serialize)]
        struct Stored<'a> {
            config: &'a serde_json::value::RawValue,
            config_sha256: String,
            time_applied: DateTime<Utc>,
        }
        let temp = self.dir.join(TEMP_NAME);
        let write_error = |source| StorageError::Write { path: temp.clone(), source };
        let mut file = File::create(&temp).map_err(write_error)?;
        let config = serde_json::value::to_raw_value(config).expect("configs always serialize");
        let config_sha256 = sha256_hex(config.get().as_bytes());
        let bytes = serde_json::to_vec(&Stored { config: &config, config_sha256, time_applied })
            .expect("configs always serialize");
        file.write_all(&bytes).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        drop(file);
        std::fs::rename(&temp, self.path()).map_err(write_error)?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(write_error)?;
        Ok(())
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
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
        let save = |a: AppliedConfig| storage.save(&a.config, a.time_applied).unwrap();
        save(applied(1));
        save(applied(2));
        assert_eq!(storage.load().unwrap().unwrap().config.generation, 2);
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
}
