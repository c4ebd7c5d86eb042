//! Shared test fixtures: a fresh store on SQLite or PostgreSQL, and helpers.
#![allow(dead_code)] // each test binary uses its own subset
pub mod api;
pub mod bot;
pub mod fake_discord;
pub mod flows;
pub mod ping_bot;

use chrono::{TimeZone, Utc};
use keygate::domain::application::{LoginUserType, SourceApp};
use keygate::domain::catalog::ScopeCatalog;
use keygate::domain::credentials::{ApiKey, ApplicationId};
use keygate::domain::ids::{GuildId, UserId};
use keygate::domain::validation::AppForm;
use keygate::domain::wizard::SavedDraft;
use keygate::service::{Actor, Clock, DraftInput, DraftStart, Service, ServiceError, Submitted};
use keygate::store::{Store, TABLES};
use rand::distr::{Alphanumeric, SampleString};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use std::str::FromStr;
use std::sync::Arc;

pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A migrated, empty store of its own, and a service over it on a manual clock.
pub struct TestDb {
    pub store: Store,
    pub service: Service,
    pub clock: Clock,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(tempfile::TempDir),
    Postgres { admin_url: String, schema: String },
}

fn postgres_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_POSTGRES_URL.to_owned())
}

impl TestDb {
    pub async fn sqlite() -> Self {
        Self::sqlite_at(i64::MAX).await
    }

    /// Each test gets its own schema, so tests run in parallel on one database.
    pub async fn postgres() -> Self {
        Self::postgres_at(i64::MAX).await
    }

    /// A fresh store of `backend` migrated up to `version` only: the database
    /// of an older keygate, to test an upgrade (`store.migrate()` then runs the rest).
    pub async fn at_version(backend: keygate::store::Backend, version: i64) -> Self {
        match backend {
            keygate::store::Backend::Sqlite => Self::sqlite_at(version).await,
            keygate::store::Backend::Postgres => Self::postgres_at(version).await,
        }
    }

    async fn sqlite_at(version: i64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = SqliteConnectOptions::new().filename(dir.path().join("keygate.db"));
        let store = Store::connect_sqlite(options).await.expect("open sqlite");
        Self::ready(store, Cleanup::Sqlite(dir), version).await
    }

    async fn postgres_at(version: i64) -> Self {
        let url = postgres_url();
        let schema = format!(
            "kg_test_{}",
            Alphanumeric
                .sample_string(&mut rand::rng(), 12)
                .to_lowercase()
        );
        let admin = Store::connect(&url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} (TEST_POSTGRES_URL) is not reachable: {e}")
        });
        let Store::Postgres(pool) = &admin else {
            panic!("TEST_POSTGRES_URL must be a postgres:// URL")
        };
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(pool)
            .await
            .expect("create schema");
        admin.close().await;
        let options = PgConnectOptions::from_str(&url)
            .expect("TEST_POSTGRES_URL")
            .options([("search_path", schema.as_str())]);
        let store = Store::connect_postgres(options)
            .await
            .expect("open postgres");
        Self::ready(
            store,
            Cleanup::Postgres {
                admin_url: url,
                schema,
            },
            version,
        )
        .await
    }

    async fn ready(store: Store, cleanup: Cleanup, version: i64) -> Self {
        store.migrate_to(version).await.expect("migrate");
        let clock = Clock::manual(Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap());
        let service = Service::new(store.clone(), Arc::new(ScopeCatalog::builtin()))
            .with_clock(clock.clone());
        Self {
            store,
            service,
            clock,
            cleanup,
        }
    }

    /// A store of its own (its own pool and connections) on the same
    /// database: what another keygate process would open.
    pub async fn peer_store(&self) -> Store {
        match &self.cleanup {
            Cleanup::Sqlite(dir) => Store::connect_sqlite(
                SqliteConnectOptions::new().filename(dir.path().join("keygate.db")),
            )
            .await
            .expect("open sqlite again"),
            Cleanup::Postgres { admin_url, schema } => Store::connect_postgres(
                PgConnectOptions::from_str(admin_url)
                    .expect("TEST_POSTGRES_URL")
                    .options([("search_path", schema.as_str())]),
            )
            .await
            .expect("open postgres again"),
        }
    }

    /// The URL another process would be given for this database.
    pub fn database_url(&self) -> String {
        match &self.cleanup {
            Cleanup::Sqlite(dir) => format!("sqlite://{}", dir.path().join("keygate.db").display()),
            Cleanup::Postgres { admin_url, schema } => {
                let sep = if admin_url.contains('?') { '&' } else { '?' };
                format!("{admin_url}{sep}options[search_path]={schema}")
            }
        }
    }

    /// A second service over the same database, as after a restart.
    pub fn restarted_service(&self) -> Service {
        Service::new(self.store.clone(), Arc::new(ScopeCatalog::builtin()))
            .with_clock(self.clock.clone())
    }

    pub async fn close(self) {
        self.store.close().await;
        if let Cleanup::Postgres { admin_url, schema } = self.cleanup {
            let admin = Store::connect(&admin_url).await.expect("reconnect");
            if let Store::Postgres(pool) = &admin {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(pool)
                    .await
                    .expect("drop schema");
            }
            admin.close().await;
        }
    }

    /// Runs one statement with one integer parameter, bypassing the store.
    pub async fn execute_raw(&self, sql: &'static str, param: i64) -> Result<u64, sqlx::Error> {
        Ok(match &self.store {
            Store::Sqlite(pool, _) => sqlx::query(sql)
                .bind(param)
                .execute(pool)
                .await?
                .rows_affected(),
            Store::Postgres(pool) => sqlx::query(sql)
                .bind(param)
                .execute(pool)
                .await?
                .rows_affected(),
        })
    }

    /// Holds back every write to drafts for `hold`, as a busy database
    /// would (SQLite's write lock; on PostgreSQL a lock on `wizard_drafts` that
    /// lets reads through). Returns once the lock is held; the task ends
    /// when it is let go.
    pub async fn stall_draft_writes(
        &self,
        hold: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let (locked, held) = tokio::sync::oneshot::channel();
        let store = self.store.clone();
        let task = tokio::spawn(async move {
            match &store {
                Store::Sqlite(pool, _) => {
                    let mut conn = pool.acquire().await.expect("a connection");
                    sqlx::query("BEGIN IMMEDIATE")
                        .execute(&mut *conn)
                        .await
                        .expect("lock");
                    let _ = locked.send(());
                    tokio::time::sleep(hold).await;
                    sqlx::query("COMMIT")
                        .execute(&mut *conn)
                        .await
                        .expect("unlock");
                }
                Store::Postgres(pool) => {
                    let mut tx = pool.begin().await.expect("a transaction");
                    sqlx::query("LOCK TABLE wizard_drafts IN EXCLUSIVE MODE")
                        .execute(&mut *tx)
                        .await
                        .expect("lock");
                    let _ = locked.send(());
                    tokio::time::sleep(hold).await;
                    tx.commit().await.expect("unlock");
                }
            }
        });
        held.await.expect("the lock was taken");
        task
    }

    /// Runs statements written by a test (a database's past, for upgrades),
    /// bypassing the store.
    pub async fn execute_sql(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.store {
            Store::Sqlite(pool, _) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            Store::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Rows of two text columns (the second may be NULL), bypassing the store.
    pub async fn text_pairs(&self, sql: &str) -> Vec<(String, Option<String>)> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.store {
            Store::Sqlite(pool, _) => sqlx::query_as(sql).fetch_all(pool).await,
            Store::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        }
        .unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn row_counts(&self) -> Vec<(&'static str, i64)> {
        self.store.row_counts().await.expect("row counts")
    }

    /// Every non-null text value in every table, as (table, column, value).
    pub async fn all_text(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for table in TABLES {
            let columns: Vec<String> = match &self.store {
                Store::Sqlite(pool, _) => sqlx::query_scalar(
                    "SELECT name FROM pragma_table_info($1) WHERE upper(type) = 'TEXT'",
                )
                .bind(table)
                .fetch_all(pool)
                .await
                .expect("columns"),
                Store::Postgres(pool) => sqlx::query_scalar(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 AND data_type = 'text'",
                )
                .bind(table)
                .fetch_all(pool)
                .await
                .expect("columns"),
            };
            assert!(
                !columns.is_empty()
                    || table == "guild_settings"
                    || table == "approval_votes"
                    || table == "audit_outbox"
                    || table == "channel_pauses",
                "{table} has no text columns: the scan would prove nothing"
            );
            for column in columns {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {column} FROM {table}"));
                let values: Vec<Option<String>> = match &self.store {
                    Store::Sqlite(pool, _) => sqlx::query_scalar(sql).fetch_all(pool).await,
                    Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
                }
                .expect("values");
                for v in values.into_iter().flatten() {
                    out.push((table.to_owned(), column.clone(), v));
                }
            }
        }
        out
    }
}

pub const GUILD: GuildId = GuildId(1_000_000_000_000_001);
pub const ALICE: UserId = UserId(2_000_000_000_000_001);
pub const BOB: UserId = UserId(2_000_000_000_000_002);
pub const CAROL: UserId = UserId(2_000_000_000_000_003);
pub const DAVE: UserId = UserId(2_000_000_000_000_004);

pub fn form(name: &str) -> AppForm {
    AppForm {
        name: name.into(),
        uri: "https://spa.example.com".into(),
        description: "Guests book treatments from our app.".into(),
        post_login_urls: "https://spa.example.com/callback".into(),
        post_logout_urls: "https://spa.example.com/signed-out".into(),
    }
}

/// Runs each named test function once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::support::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::support::TestDb::postgres().await;
                    super::$name(&db).await;
                    db.close().await;
                }
            )*
        }
    };
}

/// The code a key gets when nothing is pinned.
pub async fn verify(service: &Service, key: &str) -> keygate::domain::verification::VerifyCode {
    service
        .verify_key(key, &Default::default())
        .await
        .expect("verify")
        .code
}

/// What `/app create` then the form's submission do: the draft offered
/// (nothing stored), then stored with `form`.
pub async fn new_draft(
    svc: &Service,
    guild: GuildId,
    user: UserId,
    form: AppForm,
) -> Result<SavedDraft, ServiceError> {
    let id = match svc.open_draft(guild, user).await? {
        DraftStart::New(id) => id,
        DraftStart::Existing(d) => panic!("unexpected open draft {}", d.id),
    };
    svc.create_draft(guild, &id, user, form, None).await
}

pub async fn draft_to_review(svc: &Service, user: UserId, name: &str) -> String {
    draft_to_review_in(svc, GUILD, user, name).await
}

pub async fn draft_to_review_in(svc: &Service, guild: GuildId, user: UserId, name: &str) -> String {
    let id = new_draft(svc, guild, user, form(name)).await.unwrap().id;
    for input in [
        DraftInput::UserType(LoginUserType::Guest),
        DraftInput::SourceApp(SourceApp::ExternalCma),
        DraftInput::Next,
        DraftInput::Scopes(vec!["appointments".into(), "guests".into()]),
        DraftInput::Next,
    ] {
        svc.advance_draft(&id, user, input).await.unwrap();
    }
    id
}

pub async fn submit(svc: &Service, user: UserId, name: &str) -> Submitted {
    submit_in(svc, GUILD, user, name).await
}

pub async fn submit_in(svc: &Service, guild: GuildId, user: UserId, name: &str) -> Submitted {
    let id = draft_to_review_in(svc, guild, user, name).await;
    svc.submit_draft(&id, user, None).await.unwrap()
}

/// An app with its credentials issued and its key generated.
pub async fn active_app(db: &TestDb, name: &str) -> (ApplicationId, ApiKey) {
    let app = submit(&db.service, ALICE, name).await.app;
    let key = db
        .service
        .generate_api_key(GUILD, &app.id, Actor::member(ALICE))
        .await
        .unwrap();
    (app.id, key.key)
}

/// Every log line of this test binary at `filter`, to check for secrets.
/// The first call in a binary installs the capture; later calls share it.
pub fn captured_logs(filter: &str) -> keygate::telemetry::LogBuffer {
    static LOGS: std::sync::OnceLock<keygate::telemetry::LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = keygate::telemetry::LogBuffer::default();
        keygate::telemetry::init(
            keygate::config::LogFormat::Pretty,
            tracing_subscriber::EnvFilter::new(filter),
            buffer.clone(),
        )
        .expect("install the log capture");
        buffer
    })
    .clone()
}

/// Revokes the app as the revoke form does, typing its name.
pub async fn revoke(
    service: &Service,
    guild: GuildId,
    app: &ApplicationId,
    actor: Actor,
) -> Result<keygate::domain::application::Application, keygate::service::ServiceError> {
    let name = service.app(guild, app).await?.details.name;
    service.revoke(guild, app, actor, &name).await
}

/// One application row as a keygate before 0005 stored it: its key only lower-cased.
pub fn old_app_row(id: &str, name: &str, status: &str, created_at: i64) -> String {
    format!(
        "INSERT INTO applications (id, guild_id, owner_id, name, name_key, uri, description, \
         login_user_type, source_app, status, created_at, updated_at) VALUES \
         ('{id}', {guild}, {owner}, '{name}', '{key}', 'https://spa.example.com', '', \
         'guest', 'external_cma', '{status}', {created_at}, {created_at});",
        guild = GUILD.0,
        owner = ALICE.0,
        key = name.trim().to_lowercase(),
    )
}

/// An approval request as a keygate at 0001 stored it, with its application.
pub fn old_request_rows(id: &str, status: &str, decided_at: i64) -> String {
    let day = 86_400_000;
    format!(
        "{app} INSERT INTO approval_requests (app_id, guild_id, requester_id, \
         approvals_required, status, created_at, expires_at, decided_at, decided_by) \
         VALUES ('{id}', {guild}, {owner}, 1, '{status}', {created}, {expires}, \
         {decided_at}, {bob});",
        app = old_app_row(id, &format!("App {id}"), status, decided_at - 1_000),
        guild = GUILD.0,
        owner = ALICE.0,
        created = decided_at - 1_000,
        expires = decided_at + 3 * day,
        bob = BOB.0,
    )
}
