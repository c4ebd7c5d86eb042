//! SQLite's writer: one connection, for this process's writers one at a time, in order.

use sqlx::sqlite::SqliteConnection;
use sqlx::{ConnectOptions, Connection, Executor, sqlite::SqliteConnectOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

/// The gate in front of the one connection that writes. Writers queue on it
/// in order instead of polling SQLite's lock with its busy handler's sleeps
/// (up to 100 ms each), and a connection of its own spares each write the
/// pool's hand-over: the wait for a connection readers hold, and the ping
/// sqlx sends as one goes back. It keeps how long writers waited and held
/// it: on SQLite that is what a process's write throughput comes down to
/// ([`Store::write_gate_profile`](super::Store::write_gate_profile)).
#[derive(Debug)]
pub struct WriteGate {
    writer: Arc<Mutex<Writer>>,
    /// To connect again when the connection broke.
    options: SqliteConnectOptions,
    /// A transaction was left open by a turn that ended without COMMIT or
    /// ROLLBACK (its future dropped): the next turn rolls it back first.
    left_open: AtomicBool,
    /// The connection failed as a connection (its thread, or I/O with it):
    /// the next turn replaces it.
    broken: AtomicBool,
    writes: AtomicU64,
    waited_us: AtomicU64,
    held_us: AtomicU64,
}

#[derive(Debug)]
struct Writer {
    /// `None` between a broken connection and the next turn.
    conn: Option<SqliteConnection>,
    closed: bool,
}

/// What the gate saw since the store opened; subtract two to see a span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateProfile {
    pub writes: u64,
    /// Time writers spent queued, summed over writers.
    pub waited: Duration,
    /// Time the gate was held: at most the span's own length.
    pub held: Duration,
}

impl std::ops::Sub for GateProfile {
    type Output = Self;
    fn sub(self, earlier: Self) -> Self {
        Self {
            writes: self.writes.saturating_sub(earlier.writes),
            waited: self.waited.saturating_sub(earlier.waited),
            held: self.held.saturating_sub(earlier.held),
        }
    }
}

/// A writer's turn, with the connection; the next one's begins when it drops.
pub(crate) struct GateTurn {
    conn: OwnedMappedMutexGuard<Writer, SqliteConnection>,
    /// In a transaction this turn began and has not ended.
    open: bool,
    since: Instant,
    gate: Arc<WriteGate>,
}

impl WriteGate {
    pub(crate) async fn connect(options: &SqliteConnectOptions) -> sqlx::Result<Self> {
        Ok(Self {
            writer: Arc::new(Mutex::new(Writer {
                conn: Some(options.connect().await?),
                closed: false,
            })),
            options: options.clone(),
            left_open: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
            held_us: AtomicU64::new(0),
        })
    }

    /// Waits for the writer's turn.
    pub(crate) async fn enter(self: &Arc<Self>) -> sqlx::Result<GateTurn> {
        let queued = Instant::now();
        let mut writer = self.writer.clone().lock_owned().await;
        let since = Instant::now();
        self.waited_us
            .fetch_add(micros(since - queued), Ordering::Relaxed);
        if writer.closed {
            return Err(sqlx::Error::PoolClosed);
        }
        if self.broken.swap(false, Ordering::Relaxed) {
            // Dropped, it closes, and SQLite rolls back what it left open.
            writer.conn = None;
            self.left_open.store(false, Ordering::Relaxed);
        }
        // Cleared only once the ROLLBACK's outcome is known: an `enter`
        // dropped while it runs leaves the next one to roll back again.
        if self.left_open.load(Ordering::Relaxed)
            && let Some(conn) = writer.conn.as_mut()
        {
            if let Err(e) = conn.execute("ROLLBACK").await {
                // Its COMMIT may have gone through before the drop, or its
                // BEGIN never ran: then there is nothing to roll back, and
                // SQLite says so. Anything else, and the connection goes,
                // with what it holds.
                if !nothing_to_roll_back(&e) {
                    tracing::warn!(error = %e, "rolling back what a dropped write left open");
                    writer.conn = None;
                }
            }
            self.left_open.store(false, Ordering::Relaxed);
        }
        if writer.conn.is_none() {
            writer.conn = Some(self.options.connect().await?);
        }
        Ok(GateTurn {
            conn: OwnedMutexGuard::try_map(writer, |w| w.conn.as_mut())
                .map_err(|_gone| sqlx::Error::PoolClosed)?,
            open: false,
            since,
            gate: self.clone(),
        })
    }

    pub fn profile(&self) -> GateProfile {
        GateProfile {
            writes: self.writes.load(Ordering::Relaxed),
            waited: Duration::from_micros(self.waited_us.load(Ordering::Relaxed)),
            held: Duration::from_micros(self.held_us.load(Ordering::Relaxed)),
        }
    }

    /// Closes the writer once the turn in progress, if any, has ended.
    pub(crate) async fn close(&self) {
        let conn = {
            let mut writer = self.writer.lock().await;
            writer.closed = true;
            writer.conn.take()
        };
        if let Some(conn) = conn
            && let Err(e) = conn.close().await
        {
            tracing::warn!(error = %e, "closing SQLite's writer connection");
        }
    }
}

impl GateTurn {
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// BEGIN IMMEDIATE: the write lock up front, since a deferred
    /// transaction that reads and then writes fails with SQLITE_BUSY when
    /// another process's writer got in between, whatever the busy timeout.
    pub(crate) async fn begin(&mut self) -> sqlx::Result<()> {
        // Set first: a BEGIN whose future is dropped may still run.
        self.open = true;
        match self.conn().execute("BEGIN IMMEDIATE").await {
            Ok(_) => Ok(()),
            // Still inside one nobody ended: left open, for the next turn to
            // roll back.
            Err(sqlx::Error::Database(d)) if d.message().contains("within a transaction") => {
                Err(sqlx::Error::Database(d))
            }
            // SQLite refused it (busy past its timeout, say): no transaction.
            Err(e @ sqlx::Error::Database(_)) => {
                self.open = false;
                Err(e)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Notes an error of the connection itself, to replace it next turn.
    /// Only BEGIN, COMMIT and ROLLBACK are seen here: a connection that broke
    /// under another statement is replaced when a BEGIN, or the ROLLBACK of
    /// the turn it left open, fails on it.
    fn failed(&self, e: sqlx::Error) -> sqlx::Error {
        if matches!(
            e,
            sqlx::Error::WorkerCrashed | sqlx::Error::Io(_) | sqlx::Error::Protocol(_)
        ) {
            self.gate.broken.store(true, Ordering::Relaxed);
        }
        e
    }

    pub(crate) async fn commit(mut self) -> sqlx::Result<()> {
        let ended = self.end("COMMIT").await;
        self.release().await;
        ended
    }

    pub(crate) async fn rollback(mut self) -> sqlx::Result<()> {
        let ended = self.end("ROLLBACK").await;
        self.release().await;
        ended
    }

    /// Ends the turn, and lets the next writer run before this task goes on:
    /// woken by this task, it waits in this worker's LIFO slot, which the
    /// other worker does not steal from, until this task yields, and every
    /// writer queued behind it waits as long.
    pub(crate) async fn release(self) {
        drop(self);
        tokio::task::yield_now().await;
    }

    async fn end(&mut self, statement: &'static str) -> sqlx::Result<()> {
        if self.open {
            if let Err(e) = self.conn().execute(statement).await {
                return Err(self.failed(e));
            }
            self.open = false;
        }
        Ok(())
    }
}

impl Drop for GateTurn {
    fn drop(&mut self) {
        let gate = &self.gate;
        gate.writes.fetch_add(1, Ordering::Relaxed);
        gate.held_us
            .fetch_add(micros(self.since.elapsed()), Ordering::Relaxed);
        if self.open {
            // Ended without COMMIT or ROLLBACK (its future dropped): the next
            // turn rolls back first, and one is taken at once, so that the
            // write lock does not wait for this process's next writer
            // (another process's writers queue on it).
            gate.left_open.store(true, Ordering::Relaxed);
            // Outside a runtime (a store dropped at exit) it waits for the
            // next writer, or for the connection's close.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let gate = gate.clone();
                runtime.spawn(async move { drop(gate.enter().await) });
            }
        }
    }
}

fn nothing_to_roll_back(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.message().contains("no transaction is active"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
