//! Logging and metrics set-up shared by the binary and the tests.

use crate::config::LogFormat;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// serenity records each REST request, body included, as a span field, and
/// logs gateway payloads it cannot parse in full at debug level; a DM's body,
/// and a button press on a DM, hold a secret. So its spans are dropped and its
/// events capped at info, whatever RUST_LOG asks for.
fn keeps(meta: &tracing::Metadata<'_>) -> bool {
    !(meta.is_span() && meta.target().starts_with("serenity"))
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
    // A constant directive: it parses or this line is wrong, caught by every test.
    let filter = filter.add_directive("serenity=info".parse().expect("a valid directive"));
    let layer = match format {
        LogFormat::Pretty => fmt::layer().with_writer(writer).boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(writer).boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter_fn(keeps)).with_filter(filter))
        .try_init()
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
