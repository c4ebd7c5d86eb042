//! The verify API's reads (straight on the pool: no transaction on the hot path),
//! last-used stamps, readiness, gauges, and credential-change notifications.

use super::credentials::CredentialRow;
use super::{Store, StoreError, StoreResult, Tx, on_conn, to_ms};
use crate::domain::application::{AppStatus, LoginUserType, SourceApp};
use crate::domain::credentials::{ApplicationId, CredentialHash};
use crate::domain::ids::GuildId;
use crate::domain::lifecycle::{CredentialKind, StoredCredential};
use crate::domain::verification::{AppCard, GraceView, KeyStanding, SecretStanding};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;

/// Runs `$body` with `$pool` bound to the store's pool, whichever backend it is.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool, _) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// The channel that carries "this application's credentials changed".
const CHANNEL: &str = "keygate_credentials";

#[derive(sqlx::FromRow)]
struct CardRow {
    app_id: String,
    guild_id: i64,
    name: String,
    login_user_type: String,
    source_app: String,
    status: String,
}

/// A credential's row (its `app_id` read from the joined application) and its app.
#[derive(sqlx::FromRow)]
struct StandingRow {
    #[sqlx(flatten)]
    credential: CredentialRow,
    #[sqlx(flatten)]
    card: CardRow,
}

const CARD_COLUMNS: &str =
    "a.id AS app_id, a.guild_id, a.name, a.login_user_type, a.source_app, a.status";

impl CardRow {
    fn into_card(self, table: &'static str, scopes: Vec<String>) -> StoreResult<AppCard> {
        let corrupt = |what: &str, v: &str| StoreError::corrupt(table, format!("{what} `{v}`"));
        Ok(AppCard {
            id: ApplicationId::parse(&self.app_id).map_err(|_| corrupt("app id", &self.app_id))?,
            guild_id: GuildId::from_db(self.guild_id),
            user_type: LoginUserType::parse(&self.login_user_type)
                .ok_or_else(|| corrupt("login_user_type", &self.login_user_type))?,
            source_app: SourceApp::parse(&self.source_app)
                .ok_or_else(|| corrupt("source_app", &self.source_app))?,
            status: AppStatus::parse(&self.status)
                .ok_or_else(|| corrupt("status", &self.status))?,
            name: self.name,
            scopes,
        })
    }
}

fn grace_view(c: &StoredCredential) -> Option<GraceView> {
    Some(GraceView {
        replaced_by: c.replaced_by.clone()?,
        ends_at: c.grace_ends_at?,
    })
}

/// A change notification, or word that some may have been missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialChange {
    /// This application's keys or Secret changed (revoked, rotated).
    App(ApplicationId),
    /// The connection dropped: notifications sent from now until a new
    /// listener LISTENs are lost.
    Resync,
}

/// Listens for credential changes made by any process (PostgreSQL only);
/// None once its connection dropped.
pub struct CredentialChanges(Option<PgListener>);

impl CredentialChanges {
    /// The next change. A dropped connection shows as `Resync`, and every
    /// later call returns `Resync` at once: drop this and open another.
    pub async fn next(&mut self) -> StoreResult<CredentialChange> {
        loop {
            // Called again, sqlx would reconnect lazily: with no pause when
            // that fails, and no sign of when the new LISTEN took effect,
            // which is when the cache must be flushed.
            let Some(listener) = self.0.as_mut() else {
                return Ok(CredentialChange::Resync);
            };
            match listener.try_recv().await? {
                None => {
                    self.0 = None;
                    return Ok(CredentialChange::Resync);
                }
                Some(n) => match ApplicationId::parse(n.payload()) {
                    Ok(id) => return Ok(CredentialChange::App(id)),
                    Err(_) => {
                        tracing::warn!(
                            payload = n.payload(),
                            "ignoring a malformed credential notification"
                        );
                    }
                },
            }
        }
    }
}

/// Row counts the metrics endpoint reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    pub apps_by_status: Vec<(AppStatus, i64)>,
    pub pending_requests: i64,
    pub outbox_backlog: i64,
}

impl Store {
    /// A key or Secret by its hash, with its application and scopes: two
    /// queries, no transaction (a credential's row and its app's scopes do
    /// not change together in a way a verification could observe half of).
    async fn standing(
        &self,
        kind: CredentialKind,
        hash: &CredentialHash,
    ) -> StoreResult<Option<(StoredCredential, AppCard)>> {
        let sql = sqlx::AssertSqlSafe(match kind {
            CredentialKind::Key => format!(
                "SELECT k.id, k.key_hash AS hash, k.key_prefix AS prefix, k.created_at, \
                 k.expires_at, k.revoked_at, k.replaced_by, k.rotated_by, k.grace_ends_at, \
                 k.shown_at, k.last_used_at, k.next_warning_at, k.warning_failures, {CARD_COLUMNS} \
                 FROM api_keys k JOIN applications a ON a.id = k.app_id WHERE k.key_hash = $1"
            ),
            CredentialKind::Secret => format!(
                "SELECT s.id, s.secret_hash AS hash, s.secret_prefix AS prefix, s.created_at, \
                 CAST(NULL AS BIGINT) AS expires_at, s.revoked_at, s.replaced_by, s.rotated_by, \
                 s.grace_ends_at, s.shown_at, CAST(NULL AS BIGINT) AS last_used_at, \
                 CAST(NULL AS BIGINT) AS next_warning_at, CAST(NULL AS BIGINT) AS warning_failures, \
                 {CARD_COLUMNS} \
                 FROM app_secrets s JOIN applications a ON a.id = s.app_id WHERE s.secret_hash = $1"
            ),
        });
        let row: Option<StandingRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(hash.as_str())
            .fetch_optional(p)
            .await?);
        let Some(StandingRow { credential, card }) = row else {
            return Ok(None);
        };
        let credential = credential.into_credential(kind)?;
        // The look-up was by hash; the constant-time comparison guards against
        // a collation or an index returning a near miss.
        if !hash.matches(&credential.hash) {
            return Ok(None);
        }
        let scopes = self.scopes_of(&card.app_id).await?;
        let card = card.into_card(super::credentials::table(kind).name, scopes)?;
        Ok(Some((credential, card)))
    }

    /// An API key by its hash, with its application and scopes.
    pub async fn key_standing(&self, hash: &CredentialHash) -> StoreResult<Option<KeyStanding>> {
        let Some((key, app)) = self.standing(CredentialKind::Key, hash).await? else {
            return Ok(None);
        };
        let Some(expires_at) = key.expires_at else {
            return Err(StoreError::corrupt("api_keys", "a key without an expiry"));
        };
        Ok(Some(KeyStanding {
            grace: grace_view(&key),
            key_id: key.id,
            start: key.prefix,
            created_at: key.created_at,
            expires_at,
            revoked_at: key.revoked_at,
            last_used_at: key.last_used_at,
            app,
        }))
    }

    /// A Secret by its hash, with its application and scopes.
    pub async fn secret_standing(
        &self,
        hash: &CredentialHash,
    ) -> StoreResult<Option<SecretStanding>> {
        let Some((secret, app)) = self.standing(CredentialKind::Secret, hash).await? else {
            return Ok(None);
        };
        Ok(Some(SecretStanding {
            grace: grace_view(&secret),
            secret_id: secret.id,
            start: secret.prefix,
            created_at: secret.created_at,
            revoked_at: secret.revoked_at,
            app,
        }))
    }

    async fn scopes_of(&self, app: &str) -> StoreResult<Vec<String>> {
        Ok(on_pool!(self, p => sqlx::query_scalar(
            "SELECT scope FROM app_scopes WHERE app_id = $1 ORDER BY position")
            .bind(app)
            .fetch_all(p)
            .await?))
    }

    /// True when the database answers and every migration this build knows
    /// of has been applied.
    pub async fn is_ready(&self) -> StoreResult<bool> {
        let latest = self.migrator().iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(p)
            .await?);
        Ok(applied.unwrap_or(0) >= latest)
    }

    pub async fn gauges(&self) -> StoreResult<Gauges> {
        let (by_status, pending, backlog): (Vec<(String, i64)>, i64, i64) = on_pool!(self, p => (
            sqlx::query_as("SELECT status, COUNT(*) FROM applications GROUP BY status")
                .fetch_all(p)
                .await?,
            sqlx::query_scalar("SELECT COUNT(*) FROM approval_requests WHERE status = 'pending'")
                .fetch_one(p)
                .await?,
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_outbox WHERE posted_at IS NULL")
                .fetch_one(p)
                .await?,
        ));
        let apps_by_status = AppStatus::ALL
            .into_iter()
            .map(|status| {
                let n = by_status
                    .iter()
                    .find(|(s, _)| s == status.as_str())
                    .map_or(0, |(_, n)| *n);
                (status, n)
            })
            .collect();
        Ok(Gauges {
            apps_by_status,
            pending_requests: pending,
            outbox_backlog: backlog,
        })
    }

    /// Starts listening for credential changes; None on SQLite, which has no
    /// notifications (its readers rely on the cache's short lifetime).
    pub async fn credential_changes(&self) -> StoreResult<Option<CredentialChanges>> {
        let Store::Postgres(pool) = self else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        // Since sqlx 0.9.1 an eager reconnect retries I/O errors (an
        // unresolvable host, say) in a loop with no pause; the caller opens a
        // new listener instead, with its own back-off, and flushes its cache
        // once that one LISTENs.
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await?;
        Ok(Some(CredentialChanges(Some(listener))))
    }
}

impl<M> Tx<M> {
    /// Tells every process that `app`'s credentials changed, when (and only
    /// if) this transaction commits. A no-op on SQLite.
    pub async fn notify_credentials_changed(&mut self, app: &ApplicationId) -> StoreResult<()> {
        if let super::TxInner::Postgres(t) = &mut self.inner {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(app.as_str())
                .execute(&mut **t)
                .await?;
        }
        Ok(())
    }

    /// Stamps keys as used at the given times, never moving a stamp back, and
    /// only where the stored one is at least `min_gap` older (so several
    /// processes together write a key at most about once per `min_gap`).
    pub async fn mark_keys_used(
        &mut self,
        uses: &[(String, DateTime<Utc>)],
        min_gap: chrono::TimeDelta,
    ) -> StoreResult<u64> {
        let mut written = 0;
        for (key_id, at) in uses {
            written += on_conn!(self, c => sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)")
                .bind(to_ms(*at))
                .bind(key_id)
                .bind(to_ms(*at - min_gap))
                .execute(&mut *c)
                .await?
                .rows_affected());
        }
        Ok(written)
    }
}
