//! Logging set-up shared by the binary and the tests.

use crate::config::LogFormat;
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
