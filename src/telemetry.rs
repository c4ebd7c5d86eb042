//! Logging and metrics set-up shared by the binary and the tests.

use crate::config::LogFormat;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Crates that log what they carry: serenity records each REST request, body
/// included, as a span field, and logs gateway payloads it cannot parse in
/// full at debug; tungstenite logs every websocket message, payload and all,
/// at trace; hyper, h2, reqwest and rustls log connection and header detail at
/// debug and trace. A DM's body, and a button press on a DM, hold a secret.
const CAPPED: [&str; 8] = [
    "serenity",
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
];

fn is_capped(target: &str) -> bool {
    CAPPED.iter().any(|c| {
        target
            .strip_prefix(c)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Their spans are dropped and their events capped at info, whatever
/// RUST_LOG asks for: a filter of its own rather than an `EnvFilter`
/// directive, which a more specific one (`hyper::proto=trace`) or a span
/// directive would override.
fn keeps(meta: &tracing::Metadata<'_>) -> bool {
    !is_capped(meta.target()) || (meta.is_event() && *meta.level() <= tracing::Level::INFO)
}

/// The subscriber `init` installs, writing to `writer`, filtered by `filter`
/// and by `keeps`.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let writer = Scrubbed(writer);
    let layer = match format {
        LogFormat::Pretty => fmt::layer().with_writer(writer).boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(writer).boxed(),
    };
    tracing_subscriber::registry().with(layer.with_filter(filter_fn(keeps)).with_filter(filter))
}

/// Where a URL carries a credential: an interaction's token (valid 15
/// minutes, enough to post as the bot in that interaction) follows
/// `/interactions/<id>/` and `/webhooks/<application id>/`. A failed REST
/// call's error names its URL, so any log line may hold one.
const TOKEN_AFTER: [&str; 2] = ["/interactions/", "/webhooks/"];

/// `line` with every token in such a URL replaced by `<token>`.
pub fn scrub_tokens(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some((at, marker)) = TOKEN_AFTER
        .iter()
        .filter_map(|m| rest.find(m).map(|i| (i, *m)))
        .min_by_key(|(i, _)| *i)
    {
        let id_start = at + marker.len();
        out.push_str(&rest[..id_start]);
        rest = &rest[id_start..];
        let id_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if id_len == 0 || rest.as_bytes().get(id_len) != Some(&b'/') {
            continue;
        }
        out.push_str(&rest[..=id_len]);
        rest = &rest[id_len + 1..];
        let token_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            .count();
        if token_len > 0 {
            out.push_str("<token>");
            rest = &rest[token_len..];
        }
    }
    out.push_str(rest);
    out
}

/// A `MakeWriter` whose writers scrub tokens from what they write. The fmt
/// layer writes each event in one call, so a token is never split.
struct Scrubbed<W>(W);

struct ScrubWriter<W>(W);

impl<W: std::io::Write> std::io::Write for ScrubWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(scrub_tokens(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Scrubbed<W> {
    type Writer = ScrubWriter<W::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        ScrubWriter(self.0.make_writer())
    }
}

/// Installs the global subscriber writing to `writer`, filtered by `filter`.
pub fn init<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Result<(), tracing_subscriber::util::TryInitError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    subscriber(format, filter, writer).try_init()
}

/// Log lines kept in memory, for tests that read what was logged (a
/// `MakeWriter`: every clone appends to the same buffer).
#[derive(Debug, Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Everything written so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Upper bounds (seconds) of the verify latency histogram: the API answers
/// from memory in tens of microseconds and from the database in about a millisecond.
const VERIFY_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

/// The process's Prometheus recorder, installed on first use. Metrics
/// recorded before that go nowhere, so the bot and the HTTP server both call
/// this as they start.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(
            Matcher::Full("keygate_verify_duration_seconds".into()),
            &VERIFY_BUCKETS,
        ) {
            Ok(b) => b,
            // Only an empty bucket list is refused; the list above is not.
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_histogram};
    describe_counter!(
        "keygate_verifications_total",
        "Key verifications and app authentications, by endpoint and code"
    );
    describe_histogram!(
        "keygate_verify_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer a verification, by endpoint"
    );
    describe_counter!(
        "keygate_verify_cache_total",
        "Verify cache look-ups, by result (hit or miss)"
    );
    describe_counter!(
        "keygate_http_errors_total",
        "/v1 answers with a 4xx or 5xx status, by endpoint and status"
    );
    describe_counter!(
        "keygate_http_unauthorized_total",
        "/v1 requests refused for a missing or unknown bearer token"
    );
    describe_counter!(
        "keygate_discord_rest_errors_total",
        "Failed Discord REST calls, by HTTP status (or `transport`)"
    );
    describe_counter!(
        "keygate_discord_interactions_total",
        "Discord interactions received, by kind"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interaction_tokens_are_scrubbed_from_urls() {
        let line = "error sending request for url (http://127.0.0.1:9/api/v10/interactions/123/aW50ZXJhY3Rpb246MTIz.x-y_z/callback) and /webhooks/456/tok3n/messages/@original";
        let scrubbed = scrub_tokens(line);
        assert_eq!(
            scrubbed,
            "error sending request for url (http://127.0.0.1:9/api/v10/interactions/123/<token>/callback) and /webhooks/456/<token>/messages/@original"
        );
        assert_eq!(scrub_tokens("/interactions/ no id"), "/interactions/ no id");
        assert_eq!(scrub_tokens("plain line"), "plain line");
        assert_eq!(scrub_tokens("/webhooks/12x/abc"), "/webhooks/12x/abc");
    }

    /// The lines `emit` logs under `spec`, as the binary would filter them.
    fn logged(spec: &str, emit: impl FnOnce()) -> String {
        let buffer = LogBuffer::default();
        let subscriber = subscriber(LogFormat::Json, EnvFilter::new(spec), buffer.clone());
        tracing::subscriber::with_default(subscriber, emit);
        buffer.text()
    }

    fn emit_everywhere() {
        tracing::info!(target: "keygate::discord", "keygate info");
        tracing::debug!(target: "keygate::discord", "keygate debug");
        tracing::info!(target: "sqlx::query", "sqlx info");
        for target in CAPPED {
            // Targets must be constants: one callsite per crate.
            macro_rules! at {
                ($t:literal) => {
                    if target == $t {
                        tracing::warn!(target: $t, "capped warn");
                        tracing::trace!(target: $t, "frame payload kgs_SECRET");
                        tracing::debug!(target: concat!($t, "::proto"), "body kgs_SECRET");
                        let span = tracing::info_span!(target: $t, "request", body = "kgs_SECRET");
                        let _in = span.enter();
                        tracing::info!(target: "keygate::discord", "inside a capped span");
                    }
                };
            }
            at!("serenity");
            at!("tungstenite");
            at!("tokio_tungstenite");
            at!("hyper");
            at!("hyper_util");
            at!("h2");
            at!("reqwest");
            at!("rustls");
        }
    }

    /// Even trace, and a more specific directive for a capped crate, let no
    /// capped crate log below info, nor any of its spans' fields.
    #[test]
    fn capped_crates_log_nothing_below_info_whatever_rust_log_says() {
        for spec in [
            "trace",
            "hyper::proto=trace,serenity=trace,trace",
            "[request]=trace",
        ] {
            let text = logged(spec, emit_everywhere);
            assert!(!text.contains("kgs_SECRET"), "{spec}: {text}");
            if spec != "[request]=trace" {
                assert_eq!(text.matches("capped warn").count(), CAPPED.len(), "{spec}");
            }
        }
        assert!(!is_capped("hyperion") && is_capped("hyper") && is_capped("h2::codec"));
    }

    /// `info,keygate=debug` keeps every info line, keygate's and others', and
    /// adds keygate's debug ones.
    #[test]
    fn a_crate_directive_adds_to_the_default_level() {
        let text = logged("info,keygate=debug", emit_everywhere);
        assert!(text.contains("keygate info"), "{text}");
        assert!(text.contains("keygate debug"), "{text}");
        assert!(text.contains("sqlx info"), "{text}");
        assert_eq!(
            text.matches("inside a capped span").count(),
            CAPPED.len(),
            "{text}"
        );
        let text = logged("info", emit_everywhere);
        assert!(text.contains("keygate info") && !text.contains("keygate debug"));
    }
}
