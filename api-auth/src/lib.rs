//! Write access: one bearer token, read from a file, required by every HTTP
//! endpoint that changes state (SPEC.md "Write access").
//!
//! The servers (DNS server, Nexus) call [`ApiToken::authorize`] at the top
//! of each writing handler; the clients (Nexus pushing to DNS servers and
//! telling its peers, omdb `-w`) build their HTTP client with
//! [`ApiToken::client_builder`].  The token never appears in logs or
//! `Debug` output, and is compared in constant time: both sides are hashed
//! first, so neither the content nor the length of the expected token leaks
//! through timing.

use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// Shortest token accepted: anything shorter is guessable.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest token file read (a token is one line).
const MAX_TOKEN_FILE_BYTES: u64 = 4096;
/// The `error_code` of a 401.
pub const UNAUTHORIZED: &str = "Unauthorized";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("could not read API token file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "API token file {} {problem}; it must hold one line of at least {MIN_TOKEN_BYTES} \
         printable characters (devstack writes one: see `devstack run`)",
        path.display()
    )]
    Invalid { path: PathBuf, problem: &'static str },
    #[error(
        "API token file {} is readable or writable by others (mode {mode:03o}); whoever can \
         read it can change DNS: `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Unprotected { path: PathBuf, mode: u32 },
    #[error(
        "API token file {} is not a regular file ({kind}): a token is read from a file, \
         never from a pipe or a device",
        path.display()
    )]
    NotAFile { path: PathBuf, kind: &'static str },
}

/// The shared secret.
#[derive(Clone)]
pub struct ApiToken {
    token: String,
    hash: [u8; 32],
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// Reads the token from `path`: one line, surrounding whitespace ignored.
    /// Checked as sshd checks its keys: a regular file (a FIFO or a device
    /// is refused at once, never waited on or read without end), readable
    /// by its owner only, and small.
    pub fn from_file(path: &Path) -> Result<ApiToken, TokenError> {
        use std::io::Read;
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
        let read_error = |source| TokenError::Read { path: path.into(), source };
        // Non-blocking: opening a FIFO nobody writes to does not wait.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(read_error)?;
        let metadata = file.metadata().map_err(read_error)?;
        let kind = metadata.file_type();
        if !kind.is_file() {
            let kind = if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_char_device() || kind.is_block_device() {
                "a device"
            } else if kind.is_dir() {
                "a directory"
            } else {
                "not a file"
            };
            return Err(TokenError::NotAFile { path: path.into(), kind });
        }
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Unprotected { path: path.into(), mode });
        }
        let invalid = |problem| TokenError::Invalid { path: path.into(), problem };
        if metadata.len() > MAX_TOKEN_FILE_BYTES {
            return Err(invalid("is too large to be a token file"));
        }
        // Bounded whatever the metadata said.
        let mut text = String::new();
        file.take(MAX_TOKEN_FILE_BYTES + 1).read_to_string(&mut text).map_err(read_error)?;
        if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
            return Err(invalid("is too large to be a token file"));
        }
        ApiToken::new(text.trim()).map_err(invalid)
    }

    /// A token from its text.
    pub fn new(token: &str) -> Result<ApiToken, &'static str> {
        if token.len() < MIN_TOKEN_BYTES {
            return Err("holds a token that is too short");
        }
        // The token travels in an HTTP header: it must be visible ASCII.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("holds characters other than printable ASCII");
        }
        Ok(ApiToken { token: token.into(), hash: Sha256::digest(token.as_bytes()).into() })
    }

    /// A new random token (256 bits, hex).
    pub fn generate() -> ApiToken {
        let bytes: [u8; 32] = rand::random();
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        ApiToken::new(&text).expect("64 hex digits are a valid token")
    }

    /// Writes the token to `path`, readable by its owner only.
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::fs::PermissionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        // An existing file keeps its mode on open: make it the owner's.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        writeln!(file, "{}", self.token)
    }

    /// Whether `presented` is this token, in time independent of both.
    pub fn matches(&self, presented: &str) -> bool {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        hash.ct_eq(&self.hash).into()
    }

    /// Checks a request's `Authorization: Bearer <token>` header.  The
    /// error is a 401 saying what was missing, never what was expected.
    #[cfg(feature = "server")]
    pub fn authorize(&self, headers: &http::HeaderMap) -> Result<(), dropshot::HttpError> {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .ok_or("this endpoint changes state and needs an `Authorization: Bearer` header")
            .and_then(|value| value.to_str().map_err(|_| "the Authorization header is not text"))
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .ok_or("the Authorization header is not of the `Bearer <token>` form")
            })
            .and_then(|token| {
                if self.matches(token.trim()) { Ok(()) } else { Err("the bearer token is wrong") }
            });
        presented.map_err(|problem| {
            let mut error = dropshot::HttpError::for_client_error(
                Some(UNAUTHORIZED.into()),
                dropshot::ClientErrorStatusCode::UNAUTHORIZED,
                format!("{problem}; nothing was changed (reads stay open)"),
            );
            let mut headers = http::HeaderMap::new();
            headers
                .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            error.headers = Some(Box::new(headers));
            error
        })
    }

    /// An HTTP client builder that sends this token with every request
    /// (marked sensitive, so it is not shown by reqwest's `Debug`).
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder().default_headers(self.headers(None))
    }

    /// [`ApiToken::client_builder`] that also names the writer
    /// ([`WRITER_HEADER`]), so that servers keep who wrote what in their
    /// history.
    pub fn client_builder_as(&self, writer: &str) -> reqwest::ClientBuilder {
        reqwest::Client::builder().default_headers(self.headers(Some(writer)))
    }

    fn headers(&self, writer: Option<&str>) -> http::HeaderMap {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {}", self.token))
            .expect("a token is visible ASCII");
        value.set_sensitive(true);
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        if let Some(writer) = writer.and_then(|w| http::HeaderValue::from_str(w).ok()) {
            headers.insert(WRITER_HEADER, writer);
        }
        headers
    }
}

/// The request header in which a writer names itself (its id): servers
/// keep it in their history with what it wrote.
pub const WRITER_HEADER: &str = "x-writer-id";

/// The token each running server requires, by the address it listens on,
/// so that a request body extractor can check the token before it reads a
/// byte of the body (an unauthenticated client must not make a server hold
/// a large body in memory just to be told 401).  Dropshot's extractors see
/// the server's address but not its context, hence a registry.
#[cfg(feature = "server")]
pub mod guard {
    use super::ApiToken;
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Mutex, OnceLock};

    fn registry() -> &'static Mutex<HashMap<SocketAddr, ApiToken>> {
        static REGISTRY: OnceLock<Mutex<HashMap<SocketAddr, ApiToken>>> = OnceLock::new();
        REGISTRY.get_or_init(Mutex::default)
    }

    /// Requires `token` of every body sent to the server at `address`, for
    /// as long as the returned value lives.
    #[must_use = "the requirement ends when this is dropped"]
    pub fn require(address: SocketAddr, token: ApiToken) -> Registration {
        registry().lock().unwrap_or_else(|e| e.into_inner()).insert(address, token);
        Registration(address)
    }

    /// Checks `headers` against the token the server at `address` requires;
    /// `Ok` when it requires none.
    pub fn check(
        address: SocketAddr,
        headers: &http::HeaderMap,
    ) -> Result<(), dropshot::HttpError> {
        let token = registry().lock().unwrap_or_else(|e| e.into_inner()).get(&address).cloned();
        match token {
            Some(token) => token.authorize(headers),
            None => Ok(()),
        }
    }

    /// Ends the requirement when dropped (the server stopped).
    #[derive(Debug)]
    pub struct Registration(SocketAddr);

    impl Drop for Registration {
        fn drop(&mut self) {
            registry().lock().unwrap_or_else(|e| e.into_inner()).remove(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "server")]
    fn headers(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    #[cfg(feature = "server")]
    fn only_the_right_bearer_token_is_authorized() {
        let token = ApiToken::new("0123456789abcdef-secret").unwrap();
        assert!(token.authorize(&headers("Bearer 0123456789abcdef-secret")).is_ok());
        for wrong in [
            "Bearer 0123456789abcdef-secreT",
            "Bearer 0123456789abcdef-secret-and-more",
            "Bearer ",
            "Basic 0123456789abcdef-secret",
            "0123456789abcdef-secret",
        ] {
            let error = token.authorize(&headers(wrong)).unwrap_err();
            assert_eq!(error.status_code.as_u16(), 401, "{wrong}");
            assert!(!error.external_message.contains("secret"), "{}", error.external_message);
        }
        let missing = token.authorize(&http::HeaderMap::new()).unwrap_err();
        assert!(missing.external_message.contains("needs an `Authorization: Bearer`"));
        assert!(missing.headers.unwrap().contains_key(http::header::WWW_AUTHENTICATE));
    }

    #[test]
    fn the_token_is_never_shown() {
        let token = ApiToken::generate();
        assert_eq!(format!("{token:?}"), "ApiToken(<redacted>)");
        let builder = format!("{:?}", token.client_builder());
        assert!(!builder.contains(&token.token), "{builder}");
    }

    #[test]
    fn token_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let token = ApiToken::generate();
        token.write_to(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(ApiToken::from_file(&path).unwrap().matches(&token.token));
        std::fs::write(&path, "short\n").unwrap();
        let error = ApiToken::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("too short") && error.contains("token"), "{error}");
        let error = ApiToken::from_file(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(error.contains("could not read API token file"), "{error}");
    }

    #[test]
    fn token_files_are_checked_as_sshd_checks_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let token = ApiToken::generate();
        token.write_to(&path).unwrap();
        assert!(ApiToken::from_file(&path).is_ok());
        for mode in [0o644, 0o666, 0o640, 0o604] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let error = ApiToken::from_file(&path).unwrap_err().to_string();
            assert!(
                error.contains("readable or writable by others") && error.contains("chmod 600"),
                "{mode:o}: {error}"
            );
        }
        // Writing it again makes it the owner's.
        token.write_to(&path).unwrap();
        assert!(ApiToken::from_file(&path).is_ok());
        // A FIFO is refused at once (nobody writes to it), a device too.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let error = ApiToken::from_file(&fifo).unwrap_err().to_string();
        assert!(error.contains("a FIFO"), "{error}");
        let error = ApiToken::from_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(error.contains("a device"), "{error}");
    }
}
