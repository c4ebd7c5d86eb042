//! `GET /metrics`: this process's counters, and row counts read from the database at most every few seconds.

use super::{ApiState, DATABASE_PROBE_TIMEOUT};
use crate::store::{Gauges, Store};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The row counts are read at most this often, however often `/metrics` is
/// scraped: it needs no token, so anyone who reaches it could otherwise make
/// the database count rows as fast as they can ask.
pub const GAUGES_MAX_AGE: Duration = Duration::from_secs(5);

/// The database's row counts as last read, shared by every scrape.
#[derive(Default)]
pub(super) struct GaugeCache(Mutex<Reading>);

#[derive(Default)]
struct Reading {
    at: Option<Instant>,
    /// The last counts read; kept when a later read fails.
    gauges: Option<Gauges>,
}

impl GaugeCache {
    /// The row counts, read again once the last read is `GAUGES_MAX_AGE` old.
    /// The lock is held across the read, so scrapes that arrive meanwhile wait
    /// for it instead of counting too.
    async fn get(&self, store: &Store) -> Option<Gauges> {
        let mut reading = self.0.lock().await;
        if reading.at.is_none_or(|at| at.elapsed() >= GAUGES_MAX_AGE) {
            match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, store.gauges()).await {
                Ok(Ok(g)) => reading.gauges = Some(g),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "metrics: cannot count rows; gauges are stale")
                }
                Err(_) => {
                    tracing::warn!("metrics: the database did not answer in time; gauges are stale")
                }
            }
            // A failed read waits its turn too: a database in trouble is not
            // asked again by every scrape.
            reading.at = Some(Instant::now());
        }
        reading.gauges.clone()
    }
}

/// Appends one metric family's header in the Prometheus text format.
fn family(out: &mut String, name: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// The gauges in the Prometheus text format. They are rendered here, not
/// through the process's recorder, because they describe the database this
/// server reads, not the process.
fn render_gauges(g: &Gauges) -> String {
    let mut out = String::new();
    family(&mut out, "keygate_applications", "Applications, by status");
    for (status, n) in &g.apps_by_status {
        let _ = writeln!(
            out,
            "keygate_applications{{status=\"{}\"}} {n}",
            status.as_str()
        );
    }
    family(
        &mut out,
        "keygate_pending_approval_requests",
        "Approval requests waiting for a decision",
    );
    let _ = writeln!(
        out,
        "keygate_pending_approval_requests {}",
        g.pending_requests
    );
    family(
        &mut out,
        "keygate_audit_outbox_backlog",
        "Audit events not yet posted to an audit channel",
    );
    let _ = writeln!(out, "keygate_audit_outbox_backlog {}", g.outbox_backlog);
    out
}

pub(super) async fn metrics_text(State(state): State<ApiState>) -> Response {
    let mut text = crate::telemetry::metrics().render();
    if let Some(g) = state.gauges.get(state.service.store()).await {
        text.push('\n');
        text.push_str(&render_gauges(&g));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
