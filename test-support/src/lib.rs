//! Helpers shared by tests, benchmarks and devstack, with no dependency on
//! the database or Nexus, so that a component's tests build without them:
//!
//! - [`process`]: the workspace's binaries as child processes, logged to a
//!   file and killed when dropped (also when a test panics);
//! - [`TokenDir`]: a temporary directory holding a fresh API token file, for
//!   servers started in process.

pub mod process;

use api_auth::ApiToken;
use std::path::{Path, PathBuf};

/// A temporary directory (removed on drop) with a new API token written to
/// `api-token` inside it.
pub struct TokenDir {
    pub dir: tempfile::TempDir,
    pub token: ApiToken,
}

impl TokenDir {
    pub fn new() -> TokenDir {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let token = ApiToken::generate();
        token.write_to(&dir.path().join("api-token")).expect("writing the API token file");
        TokenDir { dir, token }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The token file.
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("api-token")
    }

    /// An HTTP client that sends the token, with `timeout` on every request.
    pub fn http_client(&self, timeout: std::time::Duration) -> reqwest::Client {
        self.token.client_builder().timeout(timeout).build().expect("an HTTP client builds")
    }
}

impl Default for TokenDir {
    fn default() -> Self {
        TokenDir::new()
    }
}
