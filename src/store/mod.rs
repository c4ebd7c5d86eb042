//! Persistence: one `Store` over SQLite or PostgreSQL, chosen by `DATABASE_URL`.
//!
//! Every query is written once, with `$N` placeholders that both SQLite and
//! PostgreSQL accept, and runs on whichever backend the `Tx` holds.

mod approvals;
mod apps;
mod audit;
mod credentials;
mod data_migrations;
mod drafts;
mod gate;
mod redactions;
mod retries;
mod settings;
mod verification;

pub use audit::OutboxEntry;
pub use credentials::DueWarning;
use gate::GateTurn;
pub use gate::{GateProfile, WriteGate};
pub use redactions::DmRedaction;
pub use retries::{ChannelPause, RetryState};
pub use verification::{CredentialChange, CredentialChanges, Gauges};

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::SqliteConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Every table, for diagnostics and for tests that check nothing was written.
pub const TABLES: [&str; 14] = [
    "guild_settings",
    "wizard_drafts",
    "applications",
    "app_redirect_urls",
    "app_scopes",
    "app_secrets",
    "api_keys",
    "approval_requests",
    "approval_votes",
    "audit_events",
    "audit_outbox",
    "dm_redactions",
    "job_retries",
    "channel_pauses",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DATABASE_URL must start with sqlite: or postgres:// (got `{0}`)")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A uniqueness rule refused the write; names the rule.
    #[error("a row with the same {0} already exists")]
    Conflict(&'static str),
    #[error("unreadable row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

impl StoreError {
    fn corrupt(table: &'static str, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            table,
            detail: detail.into(),
        }
    }

    /// Turns a unique-constraint violation into `Conflict(what)`.
    fn conflict_as(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::Database(e),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A pool on one of the two backends.
#[derive(Debug, Clone)]
pub enum Store {
    /// With the gate that queues this process's writers (see `begin`).
    Sqlite(SqlitePool, Arc<WriteGate>),
    Postgres(PgPool),
}

/// An open transaction; every query method lives here so a use case can do
/// all of its reads and writes atomically. `M` says whether it is one
/// ([`Atomic`], from `begin` and `read`) or a bare connection whose each
/// statement commits on its own ([`Single`], from `Store::single`): only an
/// atomic one records audit events, so an event and the write it records
/// commit together or not at all.
pub struct Tx<M = Atomic> {
    inner: TxInner,
    /// Audit events recorded in this transaction, written together at commit.
    audit: Vec<audit::QueuedAudit>,
    mode: std::marker::PhantomData<M>,
}

/// A `Tx` that is a transaction.
pub struct Atomic;

/// A `Tx` with no transaction (`Store::single`): it cannot record audit events.
pub struct Single;

enum TxInner {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
    /// No transaction: each statement commits on its own (`Store::single`).
    SqliteSingle(PoolConnection<Sqlite>),
    PostgresSingle(PoolConnection<Postgres>),
    /// SQLite's writer, in its turn: in a transaction (`begin`) or not
    /// (`single(true)`).
    SqliteWriter(GateTurn),
}

/// The connection a `TxInner` runs its statements on.
pub(crate) enum Conn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

impl TxInner {
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Sqlite(t) => Conn::Sqlite(t),
            Self::Postgres(t) => Conn::Postgres(t),
            Self::SqliteSingle(c) => Conn::Sqlite(c),
            Self::PostgresSingle(c) => Conn::Postgres(c),
            Self::SqliteWriter(t) => Conn::Sqlite(t.conn()),
        }
    }
}

impl<M> From<TxInner> for Tx<M> {
    fn from(inner: TxInner) -> Self {
        Self {
            inner,
            audit: Vec::new(),
            mode: std::marker::PhantomData,
        }
    }
}

/// Runs `$body` with `$conn` bound to the transaction's connection, whichever
/// backend it is: the body is compiled once per backend.
macro_rules! on_conn {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx.inner.conn() {
            $crate::store::Conn::Sqlite($conn) => $body,
            $crate::store::Conn::Postgres($conn) => $body,
        }
    };
}
pub(crate) use on_conn;

/// A claim's statement, `$head (SELECT … $tail)`, for the transaction's
/// backend: on PostgreSQL the inner SELECT takes the row `FOR UPDATE SKIP
/// LOCKED`, so a process never waits on a row another one is claiming and
/// passes it over instead; SQLite has no such clause and needs none, its
/// single writer (`BEGIN IMMEDIATE`) already puts claims one after another.
macro_rules! claim_sql {
    ($tx:expr, $head:literal, $select:expr) => {
        match &$tx.inner {
            $crate::store::TxInner::Sqlite(_)
            | $crate::store::TxInner::SqliteSingle(_)
            | $crate::store::TxInner::SqliteWriter(_) => {
                concat!($head, " (", $select, ")")
            }
            $crate::store::TxInner::Postgres(_) | $crate::store::TxInner::PostgresSingle(_) => {
                concat!($head, " (", $select, " FOR UPDATE SKIP LOCKED)")
            }
        }
    };
}
pub(crate) use claim_sql;

/// `rows` groups of `columns` numbered placeholders, `($1, $2), ($3, $4)`,
/// for a multi-row INSERT's VALUES.
pub(crate) fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let marks: Vec<String> = (1..=columns)
                .map(|col| format!("${}", row * columns + col))
                .collect();
            format!("({})", marks.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(table: &'static str, ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::corrupt(table, format!("timestamp {ms} out of range")))
}

impl Store {
    /// Connects by URL scheme. A SQLite file is created on first use.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?;
            Self::connect_sqlite(options).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            Self::connect_postgres(options).await
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }

    pub async fn connect_sqlite(options: SqliteConnectOptions) -> StoreResult<Self> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            // In WAL mode NORMAL loses no consistency, only (on power loss) the
            // last commits; it saves an fsync per commit, which bounds write
            // throughput otherwise.
            .synchronous(SqliteSynchronous::Normal)
            // Writers of other processes queue on SQLite's lock rather than fail.
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            // Readers (and migrations): writers have a connection of their own.
            .max_connections(8)
            // A connection to a local file does not break the way a socket
            // does, and the test's ping is a round trip to its thread on
            // every acquire.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let writer = WriteGate::connect(&options).await?;
        Ok(Self::Sqlite(pool, Arc::new(writer)))
    }

    pub async fn connect_postgres(options: PgConnectOptions) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self::Postgres(pool))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(..) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self {
            Self::Sqlite(..) => &SQLITE_MIGRATIONS,
            Self::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies the backend's pending migrations, then the data migrations
    /// that must run in Rust.
    pub async fn migrate(&self) -> StoreResult<()> {
        self.migrate_to(i64::MAX).await
    }

    /// Applies the migrations up to `version` only, with the Rust steps of
    /// those: what a database of an older keygate holds (tests of upgrades).
    pub async fn migrate_to(&self, version: i64) -> StoreResult<()> {
        match self {
            Self::Sqlite(pool, _) => self.migrator().run_to(version, pool).await?,
            Self::Postgres(pool) => self.migrator().run_to(version, pool).await?,
        }
        if version >= data_migrations::NFKC_NAME_KEYS_VERSION {
            let mut tx = self.begin().await?;
            // None: done before, by this process or another.
            match tx.nfkc_name_keys(to_ms(Utc::now())).await? {
                Some(_) => tx.commit().await?,
                None => tx.rollback().await?,
            }
        }
        Ok(())
    }

    /// A transaction that may write.
    pub async fn begin(&self) -> StoreResult<Tx> {
        Ok(match self {
            // SQLite has one writer at a time: this process's writers take
            // turns on its writer connection (see `WriteGate`).
            Self::Sqlite(_, gate) => {
                let mut turn = gate.enter().await?;
                turn.begin().await?;
                TxInner::SqliteWriter(turn).into()
            }
            Self::Postgres(pool) => TxInner::Postgres(pool.begin().await?).into(),
        })
    }

    /// No transaction: a connection on which each statement commits on its
    /// own, for a use case that needs one statement only (a read, or a write
    /// whose conditions are in its WHERE). It saves BEGIN and COMMIT, a round
    /// trip each, and on SQLite holds the write lock for that statement only.
    /// With `write`, it queues on this process's writers' gate as `begin` does.
    ///
    /// Audit events cannot be recorded on it (they would be written apart
    /// from the write they record, and survive its failure or miss its
    /// success): a write that is audited needs `begin`.
    ///
    /// ```compile_fail,E0599
    /// # async fn f(store: keygate::store::Store, event: keygate::domain::audit::NewAuditEvent) -> keygate::store::StoreResult<()> {
    /// let mut write = store.single(true).await?;
    /// write.queue_audit(event, chrono::Utc::now());
    /// write.commit().await
    /// # }
    /// ```
    ///
    /// ```compile_fail,E0599
    /// # async fn f(store: keygate::store::Store, event: keygate::domain::audit::NewAuditEvent) -> keygate::store::StoreResult<()> {
    /// let mut write = store.single(true).await?;
    /// write.append_audit(&event, chrono::Utc::now()).await?;
    /// write.commit().await
    /// # }
    /// ```
    pub async fn single(&self, write: bool) -> StoreResult<Tx<Single>> {
        Ok(match self {
            Self::Sqlite(_, gate) if write => TxInner::SqliteWriter(gate.enter().await?).into(),
            Self::Sqlite(pool, _) => TxInner::SqliteSingle(pool.acquire().await?).into(),
            Self::Postgres(pool) => TxInner::PostgresSingle(pool.acquire().await?).into(),
        })
    }

    /// A transaction that only reads (it never blocks writers on SQLite).
    pub async fn read(&self) -> StoreResult<Tx> {
        Ok(match self {
            Self::Sqlite(pool, _) => TxInner::Sqlite(pool.begin().await?),
            Self::Postgres(pool) => TxInner::Postgres(pool.begin().await?),
        }
        .into())
    }

    /// How busy SQLite's write gate has been (none on PostgreSQL, which has
    /// no such gate).
    pub fn write_gate_profile(&self) -> Option<GateProfile> {
        match self {
            Self::Sqlite(_, gate) => Some(gate.profile()),
            Self::Postgres(_) => None,
        }
    }

    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool, gate) => {
                gate.close().await;
                pool.close().await;
            }
            Self::Postgres(pool) => pool.close().await,
        }
    }

    /// Rows per table, in `TABLES` order.
    pub async fn row_counts(&self) -> StoreResult<Vec<(&'static str, i64)>> {
        let mut tx = self.read().await?;
        let mut counts = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            // Table names come from the constant list above, never from input.
            let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
            let n: i64 = on_conn!(&mut tx, c => sqlx::query_scalar(sql).fetch_one(&mut *c).await?);
            counts.push((table, n));
        }
        tx.rollback().await?;
        Ok(counts)
    }
}

impl Tx {
    /// Writes the audit events queued in this transaction, then commits.
    pub async fn commit(mut self) -> StoreResult<()> {
        self.flush_audit().await?;
        match self.inner {
            TxInner::Sqlite(t) => t.commit().await?,
            TxInner::Postgres(t) => t.commit().await?,
            TxInner::SqliteWriter(turn) => turn.commit().await?,
            // Not built by `begin` or `read`.
            TxInner::SqliteSingle(_) | TxInner::PostgresSingle(_) => {}
        }
        Ok(())
    }
}

impl Tx<Single> {
    /// Nothing to commit: each statement committed as it ran, and no audit
    /// event can have been recorded. A writer's turn ends.
    pub async fn commit(self) -> StoreResult<()> {
        if let TxInner::SqliteWriter(turn) = self.inner {
            turn.release().await;
        }
        Ok(())
    }
}

impl<M> Tx<M> {
    pub async fn rollback(self) -> StoreResult<()> {
        match self.inner {
            TxInner::Sqlite(t) => t.rollback().await?,
            TxInner::Postgres(t) => t.rollback().await?,
            TxInner::SqliteWriter(turn) => turn.rollback().await?,
            TxInner::SqliteSingle(_) | TxInner::PostgresSingle(_) => {}
        }
        Ok(())
    }
}
