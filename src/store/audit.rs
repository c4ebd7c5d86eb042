//! The append-only audit log and its outbox of events still to post to Discord.

use super::{StoreError, StoreResult, Tx, claim_sql, from_ms, on_conn, placeholders, to_ms};
use crate::domain::audit::{AuditEvent, AuditKind, NewAuditEvent};
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{GuildId, UserId};
use chrono::{DateTime, Utc};

const TABLE: &str = "audit_events";

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    guild_id: i64,
    app_id: Option<String>,
    actor_id: Option<i64>,
    kind: String,
    summary: String,
    created_at: i64,
}

impl TryFrom<EventRow> for AuditEvent {
    type Error = StoreError;
    fn try_from(r: EventRow) -> StoreResult<Self> {
        Ok(AuditEvent {
            id: r.id,
            guild_id: GuildId::from_db(r.guild_id),
            app_id: r
                .app_id
                .map(|id| ApplicationId::parse(&id))
                .transpose()
                .map_err(|e| StoreError::corrupt(TABLE, e.to_string()))?,
            actor_id: r.actor_id.map(UserId::from_db),
            kind: AuditKind::parse(&r.kind)
                .ok_or_else(|| StoreError::corrupt(TABLE, format!("kind `{}`", r.kind)))?,
            summary: r.summary,
            created_at: from_ms(TABLE, r.created_at)?,
        })
    }
}

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub event: AuditEvent,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    #[sqlx(flatten)]
    event: EventRow,
    attempts: i64,
    next_attempt_at: i64,
}

const EVENT_COLUMNS: &str =
    "e.id, e.guild_id, e.app_id, e.actor_id, e.kind, e.summary, e.created_at";

/// An audit event recorded in a transaction and written at its commit.
pub(super) struct QueuedAudit {
    event: NewAuditEvent,
    at: DateTime<Utc>,
}

impl Tx {
    /// Records the event at this transaction's commit, with the others it
    /// recorded, in their order (`append_audit` for all of them at once): two
    /// statements per transaction instead of two per event. Dropped with the
    /// transaction if it does not commit.
    pub fn queue_audit(&mut self, event: NewAuditEvent, now: DateTime<Utc>) {
        self.audit.push(QueuedAudit { event, at: now });
    }

    /// Writes the queued events: one multi-row INSERT, then one that queues
    /// those of guilds with an audit channel for posting (as `append_audit`
    /// decides, seeing what this transaction changed).
    pub(super) async fn flush_audit(&mut self) -> StoreResult<()> {
        let queued = std::mem::take(&mut self.audit);
        if queued.is_empty() {
            return Ok(());
        }
        // Only placeholders are formatted in; every value is bound.
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO audit_events (guild_id, app_id, actor_id, kind, summary, created_at) \
             VALUES {} RETURNING id",
            placeholders(queued.len(), 6)
        ));
        let ids: Vec<i64> = on_conn!(self, c => {
            let mut q = sqlx::query_scalar(sql);
            for QueuedAudit { event, at } in &queued {
                q = q
                    .bind(event.guild_id.to_db())
                    .bind(event.app_id.as_ref().map(ApplicationId::as_str))
                    .bind(event.actor_id.map(UserId::to_db))
                    .bind(event.kind.as_str())
                    .bind(&event.summary)
                    .bind(to_ms(*at));
            }
            q.fetch_all(&mut *c).await?
        });
        let marks: Vec<String> = (0..ids.len()).map(|n| format!("${}", n + 1)).collect();
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO audit_outbox (event_id, guild_id, next_attempt_at) \
             SELECT e.id, e.guild_id, e.created_at FROM audit_events e \
             WHERE e.id IN ({}) AND EXISTS (SELECT 1 FROM guild_settings g \
             WHERE g.guild_id = e.guild_id AND g.audit_channel_id IS NOT NULL)",
            marks.join(", ")
        ));
        on_conn!(self, c => {
            let mut q = sqlx::query(sql);
            for id in &ids {
                q = q.bind(*id);
            }
            q.execute(&mut *c).await?.rows_affected()
        });
        Ok(())
    }

    /// Records the event and, if the guild has an audit channel now, queues it
    /// for posting there: a channel set later is not flooded with old events.
    pub async fn append_audit(
        &mut self,
        event: &NewAuditEvent,
        now: DateTime<Utc>,
    ) -> StoreResult<i64> {
        let id: i64 = on_conn!(self, c => sqlx::query_scalar(
            "INSERT INTO audit_events (guild_id, app_id, actor_id, kind, summary, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id")
            .bind(event.guild_id.to_db())
            .bind(event.app_id.as_ref().map(ApplicationId::as_str))
            .bind(event.actor_id.map(UserId::to_db))
            .bind(event.kind.as_str())
            .bind(&event.summary)
            .bind(to_ms(now))
            .fetch_one(&mut *c)
            .await?);
        // One statement decides and queues, inside the caller's transaction,
        // so it sees settings the same transaction just changed.
        on_conn!(self, c => sqlx::query(
            "INSERT INTO audit_outbox (event_id, guild_id, next_attempt_at) \
             SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM guild_settings \
             WHERE guild_id = $2 AND audit_channel_id IS NOT NULL)")
            .bind(id)
            .bind(event.guild_id.to_db())
            .bind(to_ms(now))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(id)
    }

    /// The guild's events (of one application, if given), newest first.
    pub async fn audit_events(
        &mut self,
        guild: GuildId,
        app: Option<&ApplicationId>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events e WHERE e.guild_id = $1 \
             AND ($2 IS NULL OR e.app_id = $2) ORDER BY e.id DESC LIMIT $3"
        ));
        let rows: Vec<EventRow> = on_conn!(self, c => sqlx::query_as(sql)
            .bind(guild.to_db())
            .bind(app.map(ApplicationId::as_str))
            .bind(i64::from(limit))
            .fetch_all(&mut *c)
            .await?);
        rows.into_iter().map(AuditEvent::try_from).collect()
    }

    /// Unposted events, oldest first, due or not, at most `limit` per guild so
    /// one guild's backlog cannot starve the others: posting keeps each guild's
    /// order, so a deferred event holds back the ones after it.
    pub async fn unposted_outbox(&mut self, limit: u32) -> StoreResult<Vec<OutboxEntry>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS}, o.attempts, o.next_attempt_at FROM \
             (SELECT event_id, attempts, next_attempt_at, ROW_NUMBER() OVER \
              (PARTITION BY guild_id ORDER BY event_id) AS rank \
              FROM audit_outbox WHERE posted_at IS NULL) o \
             JOIN audit_events e ON e.id = o.event_id \
             WHERE o.rank <= $1 ORDER BY o.event_id"
        ));
        let rows: Vec<OutboxRow> = on_conn!(self, c => sqlx::query_as(sql)
            .bind(i64::from(limit))
            .fetch_all(&mut *c)
            .await?);
        rows.into_iter()
            .map(|r| {
                Ok(OutboxEntry {
                    event: AuditEvent::try_from(r.event)?,
                    attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
                    next_attempt_at: from_ms(TABLE, r.next_attempt_at)?,
                })
            })
            .collect()
    }

    /// Takes the event for one poster until `lease_until`; false if another
    /// poster holds it or it is posted, so no two processes post it at once.
    pub async fn claim_audit_post(
        &mut self,
        event_id: i64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let sql = claim_sql!(
            self,
            "UPDATE audit_outbox SET next_attempt_at = $1 WHERE event_id IN",
            "SELECT event_id FROM audit_outbox \
             WHERE event_id = $2 AND posted_at IS NULL AND next_attempt_at <= $3"
        );
        let n = on_conn!(self, c => sqlx::query(sql)
            .bind(to_ms(lease_until))
            .bind(event_id)
            .bind(to_ms(now))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// False if it was already marked: a second poster must not post it again.
    pub async fn mark_audit_posted(
        &mut self,
        event_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "UPDATE audit_outbox SET posted_at = $1 WHERE event_id = $2 AND posted_at IS NULL")
            .bind(to_ms(now))
            .bind(event_id)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Gives a claimed event back, untried, for the next pass: only while
    /// it still holds the lease this poster's claim set (`lease_until`); a
    /// lapsed lease is another poster's now, and is left alone.
    pub async fn release_audit_post(
        &mut self,
        event_id: i64,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query(
            "UPDATE audit_outbox SET next_attempt_at = $1 \
             WHERE event_id = $2 AND posted_at IS NULL AND next_attempt_at = $3")
            .bind(to_ms(now))
            .bind(event_id)
            .bind(to_ms(lease_until))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Counts a failed post and sets its next try, only while the row still
    /// holds the failing poster's lease (`lease_until`, its token): a poster
    /// that ran late must not move a newer claimant's schedule.
    pub async fn defer_audit_post(
        &mut self,
        event_id: i64,
        lease_until: DateTime<Utc>,
        next_attempt_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "UPDATE audit_outbox SET attempts = attempts + 1, next_attempt_at = $1 \
             WHERE event_id = $2 AND posted_at IS NULL AND next_attempt_at = $3")
            .bind(to_ms(next_attempt_at))
            .bind(event_id)
            .bind(to_ms(lease_until))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Makes the guild's waiting events due now: its audit channel changed,
    /// so a wait for the old one no longer applies.
    pub async fn hasten_guild_outbox(
        &mut self,
        guild: GuildId,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        Ok(on_conn!(self, c => sqlx::query(
            "UPDATE audit_outbox SET next_attempt_at = $1 \
             WHERE guild_id = $2 AND posted_at IS NULL AND next_attempt_at > $1")
            .bind(to_ms(now))
            .bind(guild.to_db())
            .execute(&mut *c)
            .await?
            .rows_affected()))
    }
}
