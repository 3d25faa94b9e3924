//! Pieces both HTTP APIs share.
//!
//! [`StrictJson`]: a request body extractor for the Dropshot API traits that
//! behaves like `dropshot::TypedBody` (same OpenAPI description, same body
//! size limit) but refuses a body with anything after the JSON value,
//! checks the bearer token the server requires (`api_auth::guard`) before
//! it reads the body, and frees the body's chunks as the parser passes
//! them (a large body is never held whole beside what it decodes to).
//! [`metrics_response`]: a Prometheus scrape's answer.
//! [`dropshot_logger`]: Dropshot's own log (one record per request, server
//! start and stop) sent through `tracing`, target `dropshot`.
//!
//! `TypedBody` deserializes the value and ignores what follows it, so
//! `{...}garbage` is accepted; a config or change that arrives with bytes
//! after it was not produced by any well-behaved client, and is refused
//! with a 400 saying so.

use dropshot::{
    ApiEndpointBodyContentType, ExclusiveExtractor, ExtractorMetadata, HttpError, RequestContext,
    ServerContext, StreamingBody, TypedBody,
};
use futures::StreamExt;
use hyper::body::Bytes;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;

/// A JSON request body, parsed strictly.
#[derive(Debug)]
pub struct StrictJson<T>(T);

impl<T> StrictJson<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

#[async_trait::async_trait]
impl<T> ExclusiveExtractor for StrictJson<T>
where
    T: JsonSchema + DeserializeOwned + Send + Sync + 'static,
{
    async fn from_request<Context: ServerContext>(
        rqctx: &RequestContext<Context>,
        request: hyper::Request<dropshot::Body>,
    ) -> Result<StrictJson<T>, HttpError> {
        if let Some(content_type) = request.headers().get(http::header::CONTENT_TYPE) {
            let mime = content_type.to_str().unwrap_or_default();
            let mime = mime.split(';').next().unwrap_or_default().trim();
            if !mime.eq_ignore_ascii_case("application/json") {
                return Err(HttpError::for_bad_request(
                    None,
                    format!("unsupported content-type {mime:?}: send application/json"),
                ));
            }
        }
        // Every body we take changes state: the token first, so that an
        // unauthenticated client never makes us read (and hold) its body.
        api_auth::guard::check(rqctx.server.local_addr, request.headers())?;
        // Kept as the chunks it arrived in (the size limit is Dropshot's, as
        // for `TypedBody`), so that the parser can free each once past it.
        let body = StreamingBody::from_request(rqctx, request).await?;
        let stream = body.into_stream();
        futures::pin_mut!(stream);
        let mut chunks = VecDeque::new();
        while let Some(chunk) = stream.next().await {
            chunks.push_back(chunk?);
        }
        parse_chunks(chunks).map(StrictJson)
    }

    fn metadata(content_type: ApiEndpointBodyContentType) -> ExtractorMetadata {
        TypedBody::<T>::metadata(content_type)
    }
}

/// The content type of the Prometheus text exposition format, which every
/// Prometheus scrapes and `promtool check metrics` checks.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A `GET /metrics` answer carrying `openmetrics` (what
/// `prometheus_client::encoding::text::encode` writes) in the Prometheus
/// text format.
pub fn metrics_response(openmetrics: String) -> Result<http::Response<dropshot::Body>, HttpError> {
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)
        .body(prometheus_text(&openmetrics).into())
        .map_err(|e| HttpError::for_internal_error(format!("building the metrics response: {e}")))
}

/// OpenMetrics text as Prometheus text: a counter's HELP and TYPE lines
/// name its samples (`x_total`, where OpenMetrics names the family `x`),
/// and there is no `# EOF` line.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// A slog logger for Dropshot whose records become `tracing` events.
/// Dropshot logs every completed request at `info`; that is `debug` here,
/// so a healthy server's log is not one line per request
/// (`RUST_LOG=dropshot=debug` shows them).
pub fn dropshot_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        use slog::KV;
        let mut fields = FieldText(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let (message, fields) = (record.msg().to_string(), fields.0);
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "dropshot", fields = %fields, "{message}")
            }
            slog::Level::Warning => {
                tracing::warn!(target: "dropshot", fields = %fields, "{message}")
            }
            slog::Level::Info => tracing::debug!(target: "dropshot", fields = %fields, "{message}"),
            slog::Level::Debug | slog::Level::Trace => {
                tracing::trace!(target: "dropshot", fields = %fields, "{message}")
            }
        }
        Ok(())
    }
}

/// A record's key-value pairs as `key=value` text.
struct FieldText(String);

impl slog::Serializer for FieldText {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write;
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = write!(self.0, "{key}={value}");
        Ok(())
    }
}

/// `bytes` as one JSON value of type `T`, with only whitespace after it.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(bytes).map_err(parse_error)
}

/// A body's chunks, in order, as one JSON value of type `T` with only
/// whitespace after it; each chunk is freed as soon as the parser is past
/// it, so a large body (a whole DNS config of 100,000 names is ~8 MiB) is
/// never held whole beside the value decoded from it.
pub fn parse_chunks<T: DeserializeOwned>(mut chunks: VecDeque<Bytes>) -> Result<T, HttpError> {
    if chunks.len() <= 1 {
        return parse(chunks.pop_front().as_deref().unwrap_or_default());
    }
    let reader = std::io::BufReader::with_capacity(64 * 1024, Chunks(chunks));
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    T::deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(parse_error)
}

fn parse_error(e: serde_json::Error) -> HttpError {
    let what = if e.to_string().starts_with("trailing characters") {
        "unexpected bytes after the JSON value"
    } else {
        "unable to parse JSON body"
    };
    HttpError::for_bad_request(None, format!("{what}: {e}"))
}

/// Reads a body's chunks in order, dropping each once read.
struct Chunks(VecDeque<Bytes>);

impl std::io::Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(front) = self.0.front_mut() {
            let n = front.len().min(buf.len());
            if n == 0 && !buf.is_empty() {
                self.0.pop_front();
                continue;
            }
            buf[..n].copy_from_slice(&front[..n]);
            *front = front.slice(n..);
            if front.is_empty() {
                self.0.pop_front();
            }
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {

    /// A body in chunks, cut anywhere (inside a string, a number, a
    /// multibyte character), parses as the whole would, and what is wrong
    /// with it is said the same way.
    #[test]
    fn a_body_in_chunks_parses_as_the_whole_would() {
        let text = r#"{"name": "h\u00e9llo wörld", "n": [1, 22, 333], "t": true}"#;
        let whole: serde_json::Value = parse(text.as_bytes()).unwrap();
        for size in [1, 2, 3, 7, 16] {
            let mut chunks: VecDeque<Bytes> =
                text.as_bytes().chunks(size).map(Bytes::copy_from_slice).collect();
            chunks.insert(1, Bytes::new());
            let parsed: serde_json::Value = parse_chunks(chunks).unwrap();
            assert_eq!(parsed, whole, "chunks of {size}");
        }
        let chunked = |text: &str| -> VecDeque<Bytes> {
            text.as_bytes().chunks(3).map(Bytes::copy_from_slice).collect()
        };
        let error = parse_chunks::<serde_json::Value>(chunked(r#"{"a": 1} {"b": 2}"#)).unwrap_err();
        assert!(
            error.external_message.starts_with("unexpected bytes after the JSON value"),
            "{}",
            error.external_message
        );
        let error = parse_chunks::<serde_json::Value>(chunked(r#"{"a": 1"#)).unwrap_err();
        assert!(error.external_message.starts_with("unable to parse JSON body"));
        let empty = parse_chunks::<serde_json::Value>(VecDeque::new()).unwrap_err();
        assert!(empty.external_message.starts_with("unable to parse JSON body"));
    }
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_and_eof_goes() {
        let open = "# HELP q Queries.\n# TYPE q counter\nq_total{a=\"b\"} 3\n# HELP g G.\n# TYPE g gauge\ng 1\n# EOF\n";
        let text = prometheus_text(open);
        assert_eq!(
            text,
            "# HELP q_total Queries.\n# TYPE q_total counter\nq_total{a=\"b\"} 3\n# HELP g G.\n# TYPE g gauge\ng 1\n"
        );
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Body {
        a: u32,
    }

    #[test]
    fn only_whitespace_may_follow_the_value() {
        assert_eq!(parse::<Body>(br#"{"a": 1}"#).unwrap(), Body { a: 1 });
        assert_eq!(parse::<Body>(b"{\"a\": 1}\n  ").unwrap(), Body { a: 1 });
        for bad in [&br#"{"a": 1} x"#[..], br#"{"a": 1}{}"#, br#"{"a": 1}\0"#] {
            let error = parse::<Body>(bad).unwrap_err();
            assert_eq!(error.status_code.as_u16(), 400);
            assert!(
                error.external_message.contains("unexpected bytes after"),
                "{}",
                error.external_message
            );
        }
        let error = parse::<Body>(br#"{"a": "x"}"#).unwrap_err();
        assert!(error.external_message.starts_with("unable to parse JSON body"));
    }
}
