//! Helpers shared by tests, benchmarks and devstack, with no dependency on
//! the database or Nexus, so that a component's tests build without them:
//!
//! - [`process`]: the workspace's binaries as child processes, logged to a
//!   file and killed when dropped (also when a test panics);
//! - [`TokenDir`]: a temporary directory holding a fresh API token file, for
//!   servers started in process;
//! - [`unauthenticated_bodies`]: large bodies sent without a token, and what
//!   they cost the process that refused them.

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

/// Sends four `mib`-MiB bodies of spaces to `method url` without a token,
/// one after the other, and returns how much the resident memory of the
/// process `pid` grew meanwhile, in bytes.  Every answer must be 401 (the
/// server may also close the connection before it has read the body,
/// which is a refusal too).
pub async fn unauthenticated_bodies(
    method: reqwest::Method,
    url: &str,
    mib: usize,
    pid: u32,
) -> u64 {
    let before = process::rss_kib(pid);
    let body = vec![b' '; mib * 1024 * 1024];
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    for _ in 0..4 {
        let response = http
            .request(method.clone(), url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        if let Ok(response) = response {
            assert_eq!(response.status().as_u16(), 401, "{method} {url} without a token");
        }
    }
    process::rss_kib(pid).saturating_sub(before) * 1024
}
