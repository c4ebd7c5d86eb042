//! Approval requests and their votes.

use super::{StoreError, StoreResult, Tx, from_ms, on_conn, to_ms};
use crate::domain::approval::{ApprovalRequest, RequestStatus};
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{GuildId, UserId};
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
}

impl Tx {
    pub async fn insert_approval_request(&mut self, r: &ApprovalRequest) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query(
            "INSERT INTO approval_requests (app_id, guild_id, requester_id, approvals_required, \
             status, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(r.app_id.as_str())
            .bind(r.guild_id.to_db())
            .bind(r.requester_id.to_db())
            .bind(i64::from(r.approvals_required))
            .bind(r.status.as_str())
            .bind(to_ms(r.created_at))
            .bind(to_ms(r.expires_at))
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

    pub async fn approval_request(
        &mut self,
        app: &ApplicationId,
    ) -> StoreResult<Option<ApprovalRequest>> {
        let row: Option<RequestRow> = on_conn!(self, c => sqlx::query_as(
            "SELECT guild_id, requester_id, approvals_required, status, created_at, \
             expires_at, decided_by, deny_reason FROM approval_requests WHERE app_id = $1")
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
}
