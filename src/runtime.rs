//! Background workers and process shutdown, shared by the bot and the HTTP server.

use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Spawns `pass` every `tick` until stopped. The work lives in the database,
/// so a failed pass is logged and simply runs again on the next tick.
pub fn every<F, Fut>(
    what: &'static str,
    tick: Duration,
    mut stop: watch::Receiver<bool>,
    mut pass: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    tokio::spawn(async move {
        loop {
            if let Err(e) = pass().await {
                tracing::warn!(error = format!("{e:#}"), "{what} pass failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
