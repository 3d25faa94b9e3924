//! Durable storage of the applied config in `--storage-dir`.
//!
//! One file, `config.json`, replaced atomically: the new content is written
//! to a temporary file in the same directory, flushed to disk, renamed over
//! the old file, and the directory is flushed.  A crash at any point leaves
//! either the old or the new file whole, never a mix.

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

    /// The stored config, if any.
    pub fn load(&self) -> Result<Option<AppliedConfig>, StorageError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StorageError::Read { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StorageError::Corrupt { path, source })
    }

    /// Replaces the stored config atomically and durably.  Blocking.
    pub fn save(
        &self,
        config: &DnsConfig,
        time_applied: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        // The same JSON shape as `AppliedConfig`, without copying the config.
        #[derive(serde::Serialize)]
        struct Stored<'a> {
            config: &'a DnsConfig,
            time_applied: DateTime<Utc>,
        }
        let temp = self.dir.join(TEMP_NAME);
        let write_error = |source| StorageError::Write { path: temp.clone(), source };
        let mut file = File::create(&temp).map_err(write_error)?;
        let bytes =
            serde_json::to_vec(&Stored { config, time_applied }).expect("configs always serialize");
        file.write_all(&bytes).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        drop(file);
        std::fs::rename(&temp, self.path()).map_err(write_error)?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(write_error)?;
        Ok(())
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

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"not json").unwrap();
        let error = Storage::open(dir.path()).unwrap().load().unwrap_err();
        assert!(error.to_string().contains("is not valid"), "{error}");
    }
}
