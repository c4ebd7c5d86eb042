//! The HTTP side: verify API, health, readiness, metrics, and our servers' no-delay listener.

mod error;
mod scrape;
mod verify;

pub use error::ApiError;
pub use scrape::GAUGES_MAX_AGE;
pub use verify::{BODY_LIMIT, KEY_EXPIRATION};

use crate::service::Service;
use anyhow::Context as _;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{ListenerExt as _, TapIo};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `listener`, whose connections send each write at once. With Nagle's
/// algorithm on, a small write behind one not yet acknowledged waits for the
/// peer's delayed ACK, 40 ms or more on Linux (200 ms on some systems): a
/// verify response, a gateway event behind another.
pub fn no_delay(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    listener.tap_io(|tcp: &mut TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    })
}

/// Last-used stamps are written this often (each key at most once a minute).
const LAST_USED_FLUSH: Duration = Duration::from_secs(10);
/// Histogram samples are folded in this often, so memory stays flat between scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);
/// A request (body included) that takes longer than this once its headers
/// arrived is cut off, so a slow body or a stuck database cannot hold a
/// request, or a shutdown, for ever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// Probes and scrapes answer within this even when the database does not.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    service: Service,
    /// SHA-256 of each accepted bearer token: comparing fixed-size digests in
    /// constant time leaks neither content nor length.
    tokens: Arc<[[u8; 32]]>,
    gauges: Arc<scrape::GaugeCache>,
}

impl ApiState {
    pub fn new(service: Service, tokens: &[SecretString]) -> Self {
        let tokens = tokens
            .iter()
            .map(|t| Sha256::digest(t.expose_secret().as_bytes()).into())
            .collect();
        Self {
            service,
            tokens,
            gauges: Arc::default(),
        }
    }

    fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every token is compared, so timing does not tell which one matched.
        self.tokens
            .iter()
            .fold(subtle::Choice::from(0), |any, t| any | t.ct_eq(&digest))
            .into()
    }
}

/// `/v1/*` requires one of the bearer tokens when any is configured.
async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.tokens.is_empty() {
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        if !bearer.is_some_and(|t| state.accepts(t)) {
            metrics::counter!("keygate_http_unauthorized_total").increment(1);
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// Counts the refusals and failures of `/v1/*`, whichever layer gave them
/// (a handler, the token check, the body limit, the timeout). The endpoint is
/// named from a fixed list, so an unknown path cannot mint a new series.
async fn count_errors(request: Request, next: Next) -> Response {
    let endpoint = match request.uri().path() {
        "/v1/keys/verify" => Some("verify"),
        "/v1/apps/authenticate" => Some("authenticate"),
        p if p == "/v1" || p.starts_with("/v1/") => Some("other"),
        _ => None,
    };
    let response = next.run(request).await;
    let status = response.status();
    if let Some(endpoint) = endpoint
        && (status.is_client_error() || status.is_server_error())
    {
        metrics::counter!(
            "keygate_http_errors_total",
            "endpoint" => endpoint,
            "status" => status.as_u16().to_string()
        )
        .increment(1);
    }
    response
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let probe = tokio::time::timeout(DATABASE_PROBE_TIMEOUT, state.service.store().is_ready());
    match probe.await {
        Ok(Ok(true)) => Ok(Json(json!({ "status": "ready" }))),
        Ok(Ok(false)) => {
            tracing::warn!("not ready: the database lacks this build's migrations");
            Err(ApiError::NotReady)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the database does not answer");
            Err(ApiError::NotReady)
        }
        Err(_) => {
            tracing::warn!("not ready: the database did not answer in time");
            Err(ApiError::NotReady)
        }
    }
}

/// Answers a request that takes longer than `REQUEST_TIMEOUT` with a JSON
/// 408, like every other refusal (tower-http's layer answers with no body).
async fn cut_off_slow(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// The whole HTTP API over `state`.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/keys/verify", post(verify::verify_key))
        .route("/apps/authenticate", post(verify::authenticate_app))
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape::metrics_text))
        .nest("/v1", v1)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(cut_off_slow))
        .layer(middleware::from_fn(count_errors))
        .with_state(state)
}

/// A running HTTP server and the workers that keep its cache honest.
pub struct HttpHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// None once `stopped` has reported its end: a finished task must not be
    /// awaited again.
    server: Option<JoinHandle<std::io::Result<()>>>,
    workers: Vec<JoinHandle<()>>,
    service: Service,
}

impl HttpHandle {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resolves if the server stops by itself (an I/O error on the listener,
    /// a panic), once; never again after that.
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        let Some(server) = &mut self.server else {
            return std::future::pending().await;
        };
        let ended = server.await;
        self.server = None;
        match ended {
            Ok(r) => r.context("the HTTP server failed"),
            Err(e) => Err(e).context("the HTTP server task failed"),
        }
    }

    /// Stops accepting, lets in-flight requests finish, stops the workers and
    /// writes the last-used stamps still pending.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(mut server) = self.server {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    tracing::warn!(error = %e, "the HTTP server stopped with an error")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP server task failed"),
                Err(_) => {
                    tracing::warn!("requests still open after the shutdown grace; dropping them");
                    server.abort();
                }
            }
        }
        for worker in self.workers {
            let _ = worker.await;
        }
        if let Err(e) = self.service.flush_last_used().await {
            tracing::warn!(error = %e, "could not write the last-used stamps");
        }
    }
}

/// Binds `addr` and serves the API until `shutdown`.
pub async fn start(
    addr: SocketAddr,
    tokens: &[SecretString],
    service: Service,
) -> anyhow::Result<HttpHandle> {
    crate::telemetry::metrics();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on HTTP_ADDR {addr}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let app = router(ApiState::new(service.clone(), tokens));
    let server = tokio::spawn({
        let mut stopped = stopped.clone();
        async move {
            axum::serve(no_delay(listener), app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        }
    });
    let workers = vec![
        tokio::spawn({
            let (service, stopped) = (service.clone(), stopped.clone());
            async move { service.follow_credential_changes(stopped).await }
        }),
        crate::runtime::every("last-used stamps", LAST_USED_FLUSH, stopped.clone(), {
            let service = service.clone();
            move || {
                let service = service.clone();
                async move {
                    service.flush_last_used().await?;
                    Ok(None)
                }
            }
        }),
        crate::runtime::every("metrics upkeep", METRICS_UPKEEP, stopped, || async {
            crate::telemetry::metrics().run_upkeep();
            Ok(None)
        }),
    ];
    tracing::info!(%addr, tokens = tokens.len(), "verify API listening");
    Ok(HttpHandle {
        addr,
        stop,
        server: Some(server),
        workers,
        service,
    })
}

#[cfg(test)]
mod tests {
    use super::no_delay;
    use axum::serve::Listener as _;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() -> std::io::Result<()> {
        let mut listener = no_delay(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
        let addr = listener.local_addr()?;
        let client = tokio::net::TcpStream::connect(addr).await?;
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay()?, "Nagle's algorithm is on");
        drop(client);
        // The check above is only worth something if accepted sockets start
        // with Nagle on.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let _client = tokio::net::TcpStream::connect(plain.local_addr()?).await?;
        let (accepted, _) = plain.accept().await?;
        assert!(!accepted.nodelay()?);
        Ok(())
    }
}
