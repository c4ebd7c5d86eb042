//! Keys and Secrets (hashes only): issue, rotation, revocation, delivery, expiry warnings.

use super::{StoreError, StoreResult, Tx, claim_sql, from_ms, on_conn, to_ms};
use crate::domain::credentials::{ApplicationId, CredentialHash};
use crate::domain::ids::UserId;
use crate::domain::lifecycle::{CredentialKind, StoredCredential};
use chrono::{DateTime, Utc};

/// The table of a kind and its columns, so one query text serves both kinds.
pub(super) struct Table {
    pub(super) name: &'static str,
    /// Every column of `CredentialRow`, in the table's own names.
    select: &'static str,
}

pub(super) fn table(kind: CredentialKind) -> Table {
    match kind {
        CredentialKind::Key => Table {
            name: "api_keys",
            select: "SELECT id, app_id, key_hash AS hash, key_prefix AS prefix, created_at, \
                     expires_at, revoked_at, replaced_by, rotated_by, grace_ends_at, shown_at, \
                     last_used_at, next_warning_at, warning_failures FROM api_keys",
        },
        CredentialKind::Secret => Table {
            name: "app_secrets",
            select: "SELECT id, app_id, secret_hash AS hash, secret_prefix AS prefix, created_at, \
                     CAST(NULL AS BIGINT) AS expires_at, revoked_at, replaced_by, rotated_by, \
                     grace_ends_at, shown_at, CAST(NULL AS BIGINT) AS last_used_at, \
                     CAST(NULL AS BIGINT) AS next_warning_at, \
                     CAST(NULL AS BIGINT) AS warning_failures FROM app_secrets",
        },
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct CredentialRow {
    id: String,
    app_id: String,
    hash: String,
    prefix: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    replaced_by: Option<String>,
    rotated_by: Option<i64>,
    grace_ends_at: Option<i64>,
    shown_at: Option<i64>,
    last_used_at: Option<i64>,
    next_warning_at: Option<i64>,
    warning_failures: Option<i64>,
}

/// A query parameter of `fetch_credentials`.
#[derive(Clone, Copy)]
enum Bind<'a> {
    Text(&'a str),
    Int(i64),
}

impl CredentialRow {
    pub(super) fn into_credential(self, kind: CredentialKind) -> StoreResult<StoredCredential> {
        let t = table(kind).name;
        let time = |ms: Option<i64>| ms.map(|v| from_ms(t, v)).transpose();
        Ok(StoredCredential {
            kind,
            app_id: ApplicationId::parse(&self.app_id)
                .map_err(|e| StoreError::corrupt(t, e.to_string()))?,
            id: self.id,
            hash: CredentialHash::from_stored(self.hash),
            prefix: self.prefix,
            created_at: from_ms(t, self.created_at)?,
            expires_at: time(self.expires_at)?,
            revoked_at: time(self.revoked_at)?,
            replaced_by: self.replaced_by,
            rotated_by: self.rotated_by.map(UserId::from_db),
            grace_ends_at: time(self.grace_ends_at)?,
            shown_at: time(self.shown_at)?,
            last_used_at: time(self.last_used_at)?,
        })
    }
}

/// A key whose next expiry warning is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueWarning {
    pub key: StoredCredential,
    /// When this warning fell due; claims and completions are guarded on it.
    pub due_at: DateTime<Utc>,
    /// Failed attempts to send it so far.
    pub failures: u32,
}

impl<M> Tx<M> {
    async fn fetch_rows(
        &mut self,
        kind: CredentialKind,
        filter: &str,
        binds: &[Bind<'_>],
    ) -> StoreResult<Vec<CredentialRow>> {
        let sql = sqlx::AssertSqlSafe(format!("{} WHERE {filter}", table(kind).select));
        Ok(on_conn!(self, c => {
            let mut q = sqlx::query_as(sql);
            for b in binds {
                q = match *b {
                    Bind::Text(v) => q.bind(v),
                    Bind::Int(v) => q.bind(v),
                };
            }
            q.fetch_all(&mut *c).await?
        }))
    }

    async fn fetch_credentials(
        &mut self,
        kind: CredentialKind,
        filter: &str,
        binds: &[Bind<'_>],
    ) -> StoreResult<Vec<StoredCredential>> {
        self.fetch_rows(kind, filter, binds)
            .await?
            .into_iter()
            .map(|r| r.into_credential(kind))
            .collect()
    }

    /// Stores a new credential (its hash), current for its app.
    /// `Conflict("key")` / `Conflict("secret")` when the app already has a
    /// current one: of concurrent issues and rotations exactly one wins.
    pub async fn insert_credential(
        &mut self,
        c: &StoredCredential,
        next_warning_at: Option<DateTime<Utc>>,
    ) -> StoreResult<()> {
        let conflict = StoreError::conflict_as(c.kind.as_str());
        match c.kind {
            CredentialKind::Key => on_conn!(self, conn => sqlx::query(
                "INSERT INTO api_keys (id, app_id, key_hash, key_prefix, created_at, expires_at, \
                 shown_at, next_warning_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(&c.id)
                .bind(c.app_id.as_str())
                .bind(c.hash.as_str())
                .bind(&c.prefix)
                .bind(to_ms(c.created_at))
                .bind(c.expires_at.map(to_ms))
                .bind(c.shown_at.map(to_ms))
                .bind(next_warning_at.map(to_ms))
                .execute(&mut *conn)
                .await
                .map_err(conflict)?
                .rows_affected()),
            CredentialKind::Secret => on_conn!(self, conn => sqlx::query(
                "INSERT INTO app_secrets (id, app_id, secret_hash, secret_prefix, created_at, shown_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(&c.id)
                .bind(c.app_id.as_str())
                .bind(c.hash.as_str())
                .bind(&c.prefix)
                .bind(to_ms(c.created_at))
                .bind(c.shown_at.map(to_ms))
                .execute(&mut *conn)
                .await
                .map_err(conflict)?
                .rows_affected()),
        };
        Ok(())
    }

    /// Every credential of that kind of the application, newest first.
    pub async fn credentials_of(
        &mut self,
        app: &ApplicationId,
        kind: CredentialKind,
    ) -> StoreResult<Vec<StoredCredential>> {
        self.fetch_credentials(
            kind,
            "app_id = $1 ORDER BY created_at DESC, id",
            &[Bind::Text(app.as_str())],
        )
        .await
    }

    /// The application's current (not replaced, not revoked) credential.
    pub async fn current_credential(
        &mut self,
        app: &ApplicationId,
        kind: CredentialKind,
    ) -> StoreResult<Option<StoredCredential>> {
        Ok(self
            .fetch_credentials(
                kind,
                "app_id = $1 AND replaced_by IS NULL AND revoked_at IS NULL",
                &[Bind::Text(app.as_str())],
            )
            .await?
            .pop())
    }

    /// A credential by its public id (`key_…` or `sec_…`).
    pub async fn credential_by_id(&mut self, id: &str) -> StoreResult<Option<StoredCredential>> {
        let Some(kind) = CredentialKind::of_id(id) else {
            return Ok(None);
        };
        Ok(self
            .fetch_credentials(kind, "id = $1", &[Bind::Text(id)])
            .await?
            .pop())
    }

    /// Marks `old` replaced by `new_id`, working until `grace_ends_at`, or
    /// revoked now when `cut_off`, only if it is still current. False when
    /// another rotation or a revocation got there first.
    pub async fn replace_credential(
        &mut self,
        old: &StoredCredential,
        new_id: &str,
        by: Option<UserId>,
        grace_ends_at: DateTime<Utc>,
        cut_off: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let revoked = cut_off.then_some(to_ms(now));
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET replaced_by = $1, rotated_by = $2, grace_ends_at = $3, revoked_at = $4{} \
             WHERE id = $5 AND replaced_by IS NULL AND revoked_at IS NULL",
            table(old.kind).name,
            // A replaced key is warned of no more.
            if old.kind == CredentialKind::Key {
                ", next_warning_at = NULL"
            } else {
                ""
            }
        ));
        let n = on_conn!(self, c => sqlx::query(sql)
            .bind(new_id)
            .bind(by.map(UserId::to_db))
            .bind(to_ms(grace_ends_at))
            .bind(revoked)
            .bind(&old.id)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Points what `old` replaced at `new` instead: a credential issued again
    /// in place of a lost one takes over its place in a rotation.
    pub async fn repoint_replaced(
        &mut self,
        kind: CredentialKind,
        old: &str,
        new: &str,
    ) -> StoreResult<()> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET replaced_by = $1 WHERE replaced_by = $2",
            table(kind).name
        ));
        on_conn!(self, c => sqlx::query(sql)
            .bind(new)
            .bind(old)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Revokes one credential, only if it is still current.
    pub async fn revoke_credential(
        &mut self,
        c: &StoredCredential,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET revoked_at = $1{} WHERE id = $2 AND replaced_by IS NULL AND revoked_at IS NULL",
            table(c.kind).name,
            if c.kind == CredentialKind::Key {
                ", next_warning_at = NULL"
            } else {
                ""
            }
        ));
        let n = on_conn!(self, conn => sqlx::query(sql)
            .bind(to_ms(now))
            .bind(&c.id)
            .execute(&mut *conn)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Cuts off the application's credentials of that kind still in a grace
    /// period: an app has at most one replaced credential working. Returns them.
    pub async fn end_graces(
        &mut self,
        app: &ApplicationId,
        kind: CredentialKind,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoredCredential>> {
        let ending = self
            .fetch_credentials(
                kind,
                "app_id = $1 AND replaced_by IS NOT NULL AND revoked_at IS NULL \
                 AND grace_ends_at > $2",
                &[Bind::Text(app.as_str()), Bind::Int(to_ms(now))],
            )
            .await?;
        if !ending.is_empty() {
            let sql = sqlx::AssertSqlSafe(format!(
                "UPDATE {} SET revoked_at = $1 WHERE app_id = $2 AND replaced_by IS NOT NULL \
                 AND revoked_at IS NULL AND grace_ends_at > $1",
                table(kind).name
            ));
            on_conn!(self, conn => sqlx::query(sql)
                .bind(to_ms(now))
                .bind(app.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected());
        }
        Ok(ending)
    }

    /// Stops every key and Secret of the application from working, now.
    pub async fn revoke_credentials(
        &mut self,
        app: &ApplicationId,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut n = 0;
        for kind in CredentialKind::ALL {
            let sql = sqlx::AssertSqlSafe(format!(
                "UPDATE {} SET revoked_at = $1{} WHERE app_id = $2 AND revoked_at IS NULL",
                table(kind).name,
                if kind == CredentialKind::Key {
                    ", next_warning_at = NULL"
                } else {
                    ""
                }
            ));
            n += on_conn!(self, c => sqlx::query(sql)
                .bind(to_ms(now))
                .bind(app.as_str())
                .execute(&mut *c)
                .await?
                .rows_affected());
        }
        Ok(n)
    }

    /// Records that the credential reached its owner (once).
    pub async fn mark_shown(&mut self, id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let Some(kind) = CredentialKind::of_id(id) else {
            return Ok(false);
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET shown_at = $1 WHERE id = $2 AND shown_at IS NULL",
            table(kind).name
        ));
        let n = on_conn!(self, c => sqlx::query(sql)
            .bind(to_ms(now))
            .bind(id)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Current keys whose next expiry warning is due and not leased to a
    /// process sending it.
    pub async fn due_warnings(&mut self, now: DateTime<Utc>) -> StoreResult<Vec<DueWarning>> {
        let rows = self
            .fetch_rows(
                CredentialKind::Key,
                "next_warning_at <= $1 AND expires_at > $1 \
                 AND replaced_by IS NULL AND revoked_at IS NULL \
                 AND (warning_lease_until IS NULL OR warning_lease_until <= $1) \
                 ORDER BY next_warning_at LIMIT 100",
                &[Bind::Int(to_ms(now))],
            )
            .await?;
        let mut due = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(at) = row.next_warning_at {
                due.push(DueWarning {
                    due_at: from_ms("api_keys", at)?,
                    failures: row
                        .warning_failures
                        .unwrap_or(0)
                        .clamp(0, i64::from(u32::MAX)) as u32,
                    key: row.into_credential(CredentialKind::Key)?,
                });
            }
        }
        Ok(due)
    }

    /// Takes the warning for this process until `lease_until`. False when
    /// another process holds it or sent it already.
    pub async fn claim_warning(
        &mut self,
        w: &DueWarning,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let sql = claim_sql!(
            self,
            "UPDATE api_keys SET warning_lease_until = $1 WHERE id IN",
            "SELECT id FROM api_keys WHERE id = $2 AND next_warning_at = $3 \
             AND (warning_lease_until IS NULL OR warning_lease_until <= $4)"
        );
        let n = on_conn!(self, c => sqlx::query(sql)
            .bind(to_ms(lease_until))
            .bind(&w.key.id)
            .bind(to_ms(w.due_at))
            .bind(to_ms(now))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Sending failed: the next try waits until `retry_at` (backoff), and
    /// counts one more failure.
    pub async fn fail_warning(
        &mut self,
        w: &DueWarning,
        retry_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "UPDATE api_keys SET warning_lease_until = $1, warning_failures = warning_failures + 1 \
             WHERE id = $2 AND next_warning_at = $3")
            .bind(to_ms(retry_at))
            .bind(&w.key.id)
            .bind(to_ms(w.due_at))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// The warning was sent (stage `days`); `next` is the one after it.
    pub async fn complete_warning(
        &mut self,
        w: &DueWarning,
        days: i64,
        next: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "UPDATE api_keys SET warned_days = $1, next_warning_at = $2, warning_lease_until = NULL, \
             warning_failures = 0 \
             WHERE id = $3 AND next_warning_at = $4")
            .bind(days)
            .bind(next.map(to_ms))
            .bind(&w.key.id)
            .bind(to_ms(w.due_at))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Unrevoked keys that stopped working (expiry or grace end) and whose
    /// expiry is not recorded yet.
    pub async fn unrecorded_expiries(
        &mut self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoredCredential>> {
        self.fetch_credentials(
            CredentialKind::Key,
            "expiry_recorded_at IS NULL AND revoked_at IS NULL \
             AND COALESCE(grace_ends_at, expires_at) <= $1 \
             ORDER BY expires_at LIMIT 100",
            &[Bind::Int(to_ms(now))],
        )
        .await
    }

    /// False when another process recorded it first.
    pub async fn record_expiry(&mut self, id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "UPDATE api_keys SET expiry_recorded_at = $1 WHERE id = $2 AND expiry_recorded_at IS NULL")
            .bind(to_ms(now))
            .bind(id)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }
}
