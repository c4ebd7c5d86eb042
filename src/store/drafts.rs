//! Wizard drafts: one open draft per user per guild, its state as JSON.

use super::{StoreError, StoreResult, Tx, from_ms, on_conn, to_ms};
use crate::domain::ids::{GuildId, UserId};
use crate::domain::wizard::{SavedDraft, WizardDraft};
use chrono::{DateTime, Utc};

#[derive(sqlx::FromRow)]
struct DraftRow {
    id: String,
    guild_id: i64,
    user_id: i64,
    state: String,
    created_at: i64,
    expires_at: i64,
}

const COLUMNS: &str = "id, guild_id, user_id, state, created_at, expires_at";

impl TryFrom<DraftRow> for SavedDraft {
    type Error = StoreError;
    fn try_from(r: DraftRow) -> StoreResult<Self> {
        let draft: WizardDraft = serde_json::from_str(&r.state)
            .map_err(|e| StoreError::corrupt("wizard_drafts", e.to_string()))?;
        Ok(SavedDraft {
            id: r.id,
            guild_id: GuildId::from_db(r.guild_id),
            user_id: UserId::from_db(r.user_id),
            draft,
            created_at: from_ms("wizard_drafts", r.created_at)?,
            expires_at: from_ms("wizard_drafts", r.expires_at)?,
        })
    }
}

fn state_json(draft: &WizardDraft) -> StoreResult<String> {
    serde_json::to_string(draft).map_err(|e| StoreError::corrupt("wizard_drafts", e.to_string()))
}

impl<M> Tx<M> {
    pub async fn draft_by_id(&mut self, id: &str) -> StoreResult<Option<SavedDraft>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM wizard_drafts WHERE id = $1"));
        let row: Option<DraftRow> = on_conn!(self, c => sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut *c)
            .await?);
        row.map(SavedDraft::try_from).transpose()
    }

    /// Removes the draft and returns it as it was when it went, in one
    /// statement: no edit can land between its read and its removal.
    pub async fn take_draft(&mut self, id: &str) -> StoreResult<Option<SavedDraft>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "DELETE FROM wizard_drafts WHERE id = $1 RETURNING {COLUMNS}"
        ));
        let row: Option<DraftRow> = on_conn!(self, c => sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut *c)
            .await?);
        row.map(SavedDraft::try_from).transpose()
    }

    pub async fn draft_for_user(
        &mut self,
        guild: GuildId,
        user: UserId,
    ) -> StoreResult<Option<SavedDraft>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM wizard_drafts WHERE guild_id = $1 AND user_id = $2"
        ));
        let row: Option<DraftRow> = on_conn!(self, c => sqlx::query_as(sql)
            .bind(guild.to_db())
            .bind(user.to_db())
            .fetch_optional(&mut *c)
            .await?);
        row.map(SavedDraft::try_from).transpose()
    }

    /// Fails with `Conflict("draft")` when the user already has one in this guild.
    pub async fn insert_draft(&mut self, d: &SavedDraft) -> StoreResult<()> {
        let state = state_json(&d.draft)?;
        on_conn!(self, c => sqlx::query(
            "INSERT INTO wizard_drafts (id, guild_id, user_id, state, created_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $5, $6)")
            .bind(&d.id)
            .bind(d.guild_id.to_db())
            .bind(d.user_id.to_db())
            .bind(state)
            .bind(to_ms(d.created_at))
            .bind(to_ms(d.expires_at))
            .execute(&mut *c)
            .await
            .map_err(StoreError::conflict_as("draft"))?
            .rows_affected());
        Ok(())
    }

    pub async fn update_draft(
        &mut self,
        id: &str,
        draft: &WizardDraft,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let state = state_json(draft)?;
        let done = on_conn!(self, c => sqlx::query(
            "UPDATE wizard_drafts SET state = $1, updated_at = $2, expires_at = $3 WHERE id = $4")
            .bind(state)
            .bind(to_ms(now))
            .bind(to_ms(expires_at))
            .bind(id)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    /// Saves `draft` in place of `before` with one statement: only if the
    /// draft is still `before`, still `owner`'s and unexpired at `now`.
    /// False when not (changed, expired or gone since it was read).
    pub async fn replace_draft(
        &mut self,
        id: &str,
        owner: UserId,
        before: &WizardDraft,
        draft: &WizardDraft,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (before, state) = (state_json(before)?, state_json(draft)?);
        let done = on_conn!(self, c => sqlx::query(
            "UPDATE wizard_drafts SET state = $1, updated_at = $2, expires_at = $3 \
             WHERE id = $4 AND user_id = $5 AND state = $6 AND expires_at > $2")
            .bind(state)
            .bind(to_ms(now))
            .bind(to_ms(expires_at))
            .bind(id)
            .bind(owner.to_db())
            .bind(before)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    /// True when this call removed it: of two concurrent deletes, one wins.
    pub async fn delete_draft(&mut self, id: &str) -> StoreResult<bool> {
        let done = on_conn!(self, c => sqlx::query("DELETE FROM wizard_drafts WHERE id = $1")
            .bind(id)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    pub async fn delete_expired_drafts(&mut self, now: DateTime<Utc>) -> StoreResult<u64> {
        Ok(
            on_conn!(self, c => sqlx::query("DELETE FROM wizard_drafts WHERE expires_at <= $1")
            .bind(to_ms(now))
            .execute(&mut *c)
            .await?
            .rows_affected()),
        )
    }
}
