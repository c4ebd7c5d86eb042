//! Background workers and process shutdown, shared by the bot and the HTTP server.

use crate::domain::retry::WORK_LIMIT;
use crate::service::{Claim, Service};
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a pass asks of the next: `Some(wait)` when Discord rate-limited it,
/// so the whole queue waits that long instead of one tick.
pub type Pass = anyhow::Result<Option<Duration>>;

/// One item's work under its claim ([`Service::claim`]): nothing when
/// another process holds the item, the work's own outcome otherwise. Work
/// that outlasts [`WORK_LIMIT`] is dropped where it is, as a crash would
/// drop it (every job is safe to redo from any point), and tried again
/// later; a 429's wait keeps the item leased that long.
pub async fn claimed(
    service: &Service,
    claim: Claim<'_>,
    work: impl Future<Output = Pass>,
) -> Pass {
    let Some(lease) = service.claim(claim).await? else {
        return Ok(None);
    };
    let outcome = tokio::time::timeout(WORK_LIMIT, work)
        .await
        .unwrap_or_else(|_| {
            tracing::warn!(item = ?claim, "a background item took too long; it is tried again later");
            Ok(None)
        });
    let hold = outcome.as_ref().ok().copied().flatten();
    service.release(lease, hold).await?;
    outcome
}

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
    Fut: Future<Output = Pass> + Send,
{
    tokio::spawn(async move {
        loop {
            let wait = match pass().await {
                Ok(wait) => wait.map_or(tick, |w| w.max(tick)),
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "{what} pass failed; retrying");
                    tick
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

/// Set when a part of the process asks the whole of it to stop.
static SHUTDOWN_REQUESTED: LazyLock<watch::Sender<bool>> =
    LazyLock::new(|| watch::Sender::new(false));

/// Makes `shutdown_signal` resolve, now and for every later call, as SIGTERM
/// would: for a part that fails in a way the rest must not run without.
pub fn request_shutdown() {
    SHUTDOWN_REQUESTED.send_replace(true);
}

/// Resolves on Ctrl-C, SIGTERM or `request_shutdown`.
pub async fn shutdown_signal() {
    let mut requested = SHUTDOWN_REQUESTED.subscribe();
    tokio::select! {
        _ = os_signal() => {}
        _ = requested.wait_for(|r| *r) => {}
    }
}

/// Runs `bot` to its end beside `server`, which ends only by failing. If it
/// does, the failure is logged, `stop` asks the bot to shut down, and once it
/// has, the server's failure is returned: a process that no longer answers
/// verifications must exit (non-zero), not go on looking alive.
pub async fn supervise<B, S>(bot: B, server: S, stop: impl FnOnce()) -> anyhow::Result<()>
where
    B: Future<Output = anyhow::Result<()>>,
    S: Future<Output = anyhow::Result<()>>,
{
    tokio::pin!(bot);
    tokio::select! {
        ended = &mut bot => ended,
        ended = server => {
            let failure = ended
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the HTTP server stopped by itself"));
            tracing::error!(error = format!("{failure:#}"), "the HTTP server stopped; shutting the bot down");
            stop();
            if let Err(e) = bot.await {
                tracing::warn!(error = format!("{e:#}"), "the bot stopped with an error too");
            }
            Err(failure)
        }
    }
}

async fn os_signal() {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A bot that runs until told to stop, and says whether it got to stop.
    fn bot(
        stop: watch::Receiver<bool>,
        stopped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> impl Future<Output = anyhow::Result<()>> {
        let mut stop = stop;
        async move {
            let _ = stop.wait_for(|s| *s).await;
            stopped.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failed_server_stops_the_bot_and_fails_the_run() {
        let (tell, told) = watch::channel(false);
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = async { Err(anyhow::anyhow!("the listener broke")) };
        let ended = tokio::time::timeout(
            Duration::from_secs(10),
            supervise(bot(told, stopped.clone()), server, move || {
                let _ = tell.send(true);
            }),
        )
        .await
        .expect("the run ends");
        let error = ended.expect_err("the run fails");
        assert!(
            format!("{error:#}").contains("the listener broke"),
            "{error:#}"
        );
        assert!(
            stopped.load(std::sync::atomic::Ordering::SeqCst),
            "the bot shut down first"
        );
    }

    #[tokio::test]
    async fn a_bot_that_ends_ends_the_run_with_its_result() {
        let server = std::future::pending::<anyhow::Result<()>>();
        let ended = supervise(async { anyhow::bail!("bad token") }, server, || {
            panic!("nothing to stop")
        })
        .await;
        assert_eq!(
            ended.expect_err("the bot's failure").to_string(),
            "bad token"
        );
    }

    #[tokio::test]
    async fn a_shutdown_request_acts_as_a_signal() {
        request_shutdown();
        tokio::time::timeout(Duration::from_secs(5), shutdown_signal())
            .await
            .expect("the request resolves the signal");
    }
}
