//! Scheduled redactions of DMs that carried a secret.

use super::{StoreError, StoreResult, Tx, claim_sql, from_ms, on_conn, to_ms};
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{ChannelId, InteractionId, MessageId, UserId};
use chrono::{DateTime, Utc};

const TABLE: &str = "dm_redactions";

/// A DM to redact when it falls due, even after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmRedaction {
    pub channel_id: ChannelId,
    pub message_id: MessageId,
    pub app_id: ApplicationId,
    pub user_id: UserId,
    pub due_at: DateTime<Utc>,
    /// Set while the DM is the answer of this interaction and its message id
    /// is not known yet: `message_id` holds the interaction's id until then.
    pub answer_of: Option<InteractionId>,
    /// The credential an answer carries (with `answer_of`), shown once its
    /// message is found.
    pub carries: Option<String>,
}

#[derive(sqlx::FromRow)]
struct RedactionRow {
    channel_id: i64,
    message_id: i64,
    app_id: String,
    user_id: i64,
    due_at: i64,
    interaction_id: Option<i64>,
    credential_id: Option<String>,
}

impl<M> Tx<M> {
    pub async fn schedule_redaction(&mut self, r: &DmRedaction) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query(
            "INSERT INTO dm_redactions (channel_id, message_id, app_id, user_id, due_at, interaction_id, credential_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (channel_id, message_id) DO UPDATE SET due_at = excluded.due_at, done_at = NULL")
            .bind(r.channel_id.to_db())
            .bind(r.message_id.to_db())
            .bind(r.app_id.as_str())
            .bind(r.user_id.to_db())
            .bind(to_ms(r.due_at))
            .bind(r.answer_of.map(InteractionId::to_db))
            .bind(r.carries.as_deref())
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Brings the application's pending redactions forward to `now` (Finish).
    pub async fn hasten_redactions(
        &mut self,
        app: &ApplicationId,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        Ok(on_conn!(self, c => sqlx::query(
            "UPDATE dm_redactions SET due_at = $1 WHERE app_id = $2 AND done_at IS NULL AND due_at > $1")
            .bind(to_ms(now))
            .bind(app.as_str())
            .execute(&mut *c)
            .await?
            .rows_affected()))
    }

    pub async fn due_redactions(&mut self, now: DateTime<Utc>) -> StoreResult<Vec<DmRedaction>> {
        let rows: Vec<RedactionRow> = on_conn!(self, c => sqlx::query_as(
            "SELECT channel_id, message_id, app_id, user_id, due_at, interaction_id, credential_id FROM dm_redactions \
             WHERE done_at IS NULL AND due_at <= $1 ORDER BY due_at")
            .bind(to_ms(now))
            .fetch_all(&mut *c)
            .await?);
        rows.into_iter()
            .map(|r| {
                Ok(DmRedaction {
                    channel_id: ChannelId::from_db(r.channel_id),
                    message_id: MessageId::from_db(r.message_id),
                    app_id: ApplicationId::parse(&r.app_id)
                        .map_err(|e| StoreError::corrupt(TABLE, e.to_string()))?,
                    user_id: UserId::from_db(r.user_id),
                    due_at: from_ms(TABLE, r.due_at)?,
                    answer_of: r.interaction_id.map(InteractionId::from_db),
                    carries: r.credential_id,
                })
            })
            .collect()
    }

    /// False if it was already done, or, with `read_due` (the schedule the
    /// caller read before editing the message), if it was rescheduled since:
    /// a message refilled meanwhile must stay scheduled, or it would keep a
    /// secret for good.
    pub async fn mark_redacted(
        &mut self,
        channel: ChannelId,
        message: MessageId,
        read_due: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "UPDATE dm_redactions SET done_at = $1 WHERE channel_id = $2 AND message_id = $3 \
             AND done_at IS NULL AND ($4 IS NULL OR due_at = $4)")
            .bind(to_ms(now))
            .bind(channel.to_db())
            .bind(message.to_db())
            .bind(read_due.map(to_ms))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// The answer of `interaction` in `channel` is message `message`: its
    /// redaction is keyed by that message from now on, and a worker's lease
    /// taken under the old key lapses with it (the worker's own release
    /// and done mark, by the old key, find nothing). False if it was found
    /// already (a second call).
    pub async fn answer_found(
        &mut self,
        channel: ChannelId,
        interaction: InteractionId,
        message: MessageId,
    ) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "UPDATE dm_redactions SET message_id = $1, interaction_id = NULL, lease_until = NULL \
             WHERE channel_id = $2 AND message_id = $3 AND interaction_id = $3")
            .bind(message.to_db())
            .bind(channel.to_db())
            .bind(interaction.to_db())
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Whether the credential went out as an interaction's answer whose
    /// message is not found yet: it may be in the member's DM, so it is not
    /// lost, and must not be issued again in its place.
    pub async fn answer_pending(&mut self, credential_id: &str) -> StoreResult<bool> {
        let n: i64 = on_conn!(self, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM dm_redactions \
             WHERE credential_id = $1 AND interaction_id IS NOT NULL AND done_at IS NULL")
            .bind(credential_id)
            .fetch_one(&mut *c)
            .await?);
        Ok(n > 0)
    }

    /// Whether that DM was redacted already; None if it holds no scheduled secret.
    pub async fn redaction_done(
        &mut self,
        channel: ChannelId,
        message: MessageId,
    ) -> StoreResult<Option<bool>> {
        let done: Option<Option<i64>> = on_conn!(self, c => sqlx::query_scalar(
            "SELECT done_at FROM dm_redactions WHERE channel_id = $1 AND message_id = $2")
            .bind(channel.to_db())
            .bind(message.to_db())
            .fetch_optional(&mut *c)
            .await?);
        Ok(done.map(|d| d.is_some()))
    }

    /// Takes the due redaction until `lease_until`; false if it is done or
    /// another process holds it.
    pub async fn claim_redaction(
        &mut self,
        channel: ChannelId,
        message: MessageId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let sql = claim_sql!(
            self,
            "UPDATE dm_redactions SET lease_until = $1 WHERE (channel_id, message_id) IN",
            "SELECT channel_id, message_id FROM dm_redactions WHERE channel_id = $2 \
             AND message_id = $3 AND done_at IS NULL AND due_at <= $4 \
             AND (lease_until IS NULL OR lease_until <= $4)"
        );
        let n = on_conn!(self, c => sqlx::query(sql)
            .bind(to_ms(lease_until))
            .bind(channel.to_db())
            .bind(message.to_db())
            .bind(to_ms(now))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// As `release_request`, for a redaction.
    pub async fn release_redaction(
        &mut self,
        channel: ChannelId,
        message: MessageId,
        until: DateTime<Utc>,
        hold: Option<DateTime<Utc>>,
    ) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query(
            "UPDATE dm_redactions SET lease_until = $1 \
             WHERE channel_id = $2 AND message_id = $3 AND lease_until = $4")
            .bind(hold.map(to_ms))
            .bind(channel.to_db())
            .bind(message.to_db())
            .bind(to_ms(until))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(())
    }
}
