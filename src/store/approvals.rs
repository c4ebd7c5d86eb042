//! Approval requests and their votes.

use super::{StoreError, StoreResult, Tx, claim_sql, from_ms, on_conn, to_ms};
use crate::domain::approval::{ApprovalRequest, RequestStatus};
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{ChannelId, GuildId, MessageId, UserId};
use crate::domain::retry::Job;
use chrono::{DateTime, Utc};

const TABLE: &str = "approval_requests";

#[derive(sqlx::FromRow)]
struct RequestRow {
    guild_id: i64,
    requester_id: i64,
    approvals_required: i64,
    status: String,
    created_at: i64,
    expires_at: i64,
    decided_by: Option<i64>,
    deny_reason: Option<String>,
    origin_channel_id: Option<i64>,
    channel_id: Option<i64>,
    message_id: Option<i64>,
    reminded_at: Option<i64>,
}

impl<M> Tx<M> {
    pub async fn insert_approval_request(&mut self, r: &ApprovalRequest) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query(
            "INSERT INTO approval_requests (app_id, guild_id, requester_id, approvals_required, \
             status, created_at, expires_at, origin_channel_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(r.app_id.as_str())
            .bind(r.guild_id.to_db())
            .bind(r.requester_id.to_db())
            .bind(i64::from(r.approvals_required))
            .bind(r.status.as_str())
            .bind(to_ms(r.created_at))
            .bind(to_ms(r.expires_at))
            .bind(r.origin_channel.map(ChannelId::to_db))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Loads the request and, for the rest of the transaction, holds it
    /// against concurrent deciders: the no-op UPDATE takes PostgreSQL's row
    /// lock (SQLite's write transactions are serialized already), so a second
    /// approver waits and then sees the first one's outcome.
    pub async fn lock_approval_request(
        &mut self,
        app: &ApplicationId,
    ) -> StoreResult<Option<ApprovalRequest>> {
        on_conn!(self, c => sqlx::query("UPDATE approval_requests SET status = status WHERE app_id = $1")
            .bind(app.as_str())
            .execute(&mut *c)
            .await?
            .rows_affected());
        self.approval_request(app).await
    }

    /// As `lock_approval_request`, for a background job: None at once when
    /// another process holds the request (PostgreSQL's SKIP LOCKED), which
    /// then deals with it, or when one of its jobs holds it leased at `now`
    /// (checked here, in the locking statement, so a lease taken since the
    /// caller's read counts), as well as when there is none.
    pub async fn try_lock_approval_request(
        &mut self,
        app: &ApplicationId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ApprovalRequest>> {
        let sql = claim_sql!(
            self,
            "UPDATE approval_requests SET status = status WHERE app_id IN",
            "SELECT app_id FROM approval_requests WHERE app_id = $1 \
             AND (lease_until IS NULL OR lease_until <= $2)"
        );
        let n = on_conn!(self, c => sqlx::query(sql)
            .bind(app.as_str())
            .bind(to_ms(now))
            .execute(&mut *c)
            .await?
            .rows_affected());
        if n == 0 {
            return Ok(None);
        }
        self.approval_request(app).await
    }

    pub async fn approval_request(
        &mut self,
        app: &ApplicationId,
    ) -> StoreResult<Option<ApprovalRequest>> {
        let row: Option<RequestRow> = on_conn!(self, c => sqlx::query_as(
            "SELECT guild_id, requester_id, approvals_required, status, created_at, \
             expires_at, decided_by, deny_reason, origin_channel_id, channel_id, message_id, reminded_at \
             FROM approval_requests WHERE app_id = $1")
            .bind(app.as_str())
            .fetch_optional(&mut *c)
            .await?);
        let Some(r) = row else { return Ok(None) };
        let approvers: Vec<i64> = on_conn!(self, c => sqlx::query_scalar(
            "SELECT approver_id FROM approval_votes WHERE app_id = $1 ORDER BY created_at, approver_id")
            .bind(app.as_str())
            .fetch_all(&mut *c)
            .await?);
        Ok(Some(ApprovalRequest {
            app_id: app.clone(),
            guild_id: GuildId::from_db(r.guild_id),
            requester_id: UserId::from_db(r.requester_id),
            approvals_required: u8::try_from(r.approvals_required)
                .map_err(|e| StoreError::corrupt(TABLE, e.to_string()))?,
            status: RequestStatus::parse(&r.status)
                .ok_or_else(|| StoreError::corrupt(TABLE, format!("status `{}`", r.status)))?,
            approvers: approvers.into_iter().map(UserId::from_db).collect(),
            created_at: from_ms(TABLE, r.created_at)?,
            expires_at: from_ms(TABLE, r.expires_at)?,
            decided_by: r.decided_by.map(UserId::from_db),
            deny_reason: r.deny_reason,
            origin_channel: r.origin_channel_id.map(ChannelId::from_db),
            message: r
                .channel_id
                .zip(r.message_id)
                .map(|(c, m)| (ChannelId::from_db(c), MessageId::from_db(m))),
            reminded_at: r.reminded_at.map(|t| from_ms(TABLE, t)).transpose()?,
        }))
    }

    /// `Conflict("vote")` when this approver already voted.
    pub async fn insert_vote(
        &mut self,
        app: &ApplicationId,
        approver: UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query(
            "INSERT INTO approval_votes (app_id, approver_id, created_at) VALUES ($1, $2, $3)")
            .bind(app.as_str())
            .bind(approver.to_db())
            .bind(to_ms(now))
            .execute(&mut *c)
            .await
            .map_err(StoreError::conflict_as("vote"))?
            .rows_affected());
        Ok(())
    }

    /// Closes a pending request; false if it was no longer pending.
    pub async fn close_approval_request(
        &mut self,
        app: &ApplicationId,
        status: RequestStatus,
        decided_by: Option<UserId>,
        deny_reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "UPDATE approval_requests SET status = $1, decided_by = $2, deny_reason = $3, \
             decided_at = $4 WHERE app_id = $5 AND status = 'pending'")
            .bind(status.as_str())
            .bind(decided_by.map(UserId::to_db))
            .bind(deny_reason)
            .bind(to_ms(now))
            .bind(app.as_str())
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    pub async fn set_request_message(
        &mut self,
        app: &ApplicationId,
        channel: ChannelId,
        message: MessageId,
    ) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query(
            "UPDATE approval_requests SET channel_id = $1, message_id = $2 WHERE app_id = $3")
            .bind(channel.to_db())
            .bind(message.to_db())
            .bind(app.as_str())
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Pending requests past their expiry.
    pub async fn expired_requests(
        &mut self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ApplicationId>> {
        self.request_ids(
            // One being posted is expired once its post is recorded, so the
            // expiry's edit finds the message.
            "SELECT app_id FROM approval_requests WHERE status = 'pending' AND expires_at <= $1 \
             AND (lease_until IS NULL OR lease_until <= $1) ORDER BY expires_at",
            now,
        )
        .await
    }

    /// Pending requests never posted to the approvals channel, created before `before`.
    pub async fn unposted_requests(
        &mut self,
        before: DateTime<Utc>,
    ) -> StoreResult<Vec<ApplicationId>> {
        self.request_ids(
            "SELECT app_id FROM approval_requests WHERE status = 'pending' AND message_id IS NULL \
             AND created_at <= $1 ORDER BY created_at",
            before,
        )
        .await
    }

    /// Requests approved before `before` whose credentials never reached the requester.
    pub async fn undelivered_approvals(
        &mut self,
        before: DateTime<Utc>,
    ) -> StoreResult<Vec<ApplicationId>> {
        self.request_ids(
            "SELECT app_id FROM approval_requests WHERE status = 'approved' AND delivered_at IS NULL \
             AND decided_at <= $1 ORDER BY decided_at",
            before,
        )
        .await
    }

    /// False if it was marked already.
    pub async fn mark_delivered(
        &mut self,
        app: &ApplicationId,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "UPDATE approval_requests SET delivered_at = $1 WHERE app_id = $2 AND delivered_at IS NULL")
            .bind(to_ms(now))
            .bind(app.as_str())
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Pending requests past half their lifetime whose approvers were not reminded.
    pub async fn requests_to_remind(
        &mut self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ApplicationId>> {
        self.request_ids(
            "SELECT app_id FROM approval_requests WHERE status = 'pending' AND reminded_at IS NULL \
             AND created_at + (expires_at - created_at) / 2 <= $1 ORDER BY created_at",
            now,
        )
        .await
    }

    async fn request_ids(
        &mut self,
        sql: &'static str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ApplicationId>> {
        let ids: Vec<String> = on_conn!(self, c => sqlx::query_scalar(sql)
            .bind(to_ms(now))
            .fetch_all(&mut *c)
            .await?);
        ids.iter()
            .map(|id| {
                ApplicationId::parse(id).map_err(|e| StoreError::corrupt(TABLE, e.to_string()))
            })
            .collect()
    }

    /// False if another process reminded first.
    pub async fn mark_reminded(
        &mut self,
        app: &ApplicationId,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "UPDATE approval_requests SET reminded_at = $1 WHERE app_id = $2 AND reminded_at IS NULL AND status = 'pending'")
            .bind(to_ms(now))
            .bind(app.as_str())
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Takes the request for `job` until `lease_until`, if it still needs
    /// that job and no other process holds it. False otherwise: someone else
    /// does it, or did it already.
    pub async fn claim_request(
        &mut self,
        job: Job,
        app: &ApplicationId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // `$due`: the request still needs the job.
        macro_rules! claim_if {
            ($due:literal) => {
                claim_sql!(
                    self,
                    "UPDATE approval_requests SET lease_until = $1 WHERE app_id IN",
                    concat!(
                        "SELECT app_id FROM approval_requests WHERE app_id = $2 \
                     AND (lease_until IS NULL OR lease_until <= $3) AND ",
                        $due
                    )
                )
            };
        }
        let sql = match job {
            Job::PostRequest => claim_if!("status = 'pending' AND message_id IS NULL"),
            Job::Deliver => claim_if!("status = 'approved' AND delivered_at IS NULL"),
            Job::Remind => claim_if!("status = 'pending' AND reminded_at IS NULL"),
            // Not a request's job: nothing here to claim.
            Job::Redact => return Ok(false),
        };
        let n = on_conn!(self, c => sqlx::query(sql)
            .bind(to_ms(lease_until))
            .bind(app.as_str())
            .bind(to_ms(now))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Ends the lease that lasts until `until` (none other: it lapsed and
    /// is someone else's now), or keeps the request leased until `hold`.
    pub async fn release_request(
        &mut self,
        app: &ApplicationId,
        until: DateTime<Utc>,
        hold: Option<DateTime<Utc>>,
    ) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query(
            "UPDATE approval_requests SET lease_until = $1 WHERE app_id = $2 AND lease_until = $3")
            .bind(hold.map(to_ms))
            .bind(app.as_str())
            .bind(to_ms(until))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(())
    }
}
