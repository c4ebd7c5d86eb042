//! Guild settings rows.

use super::{StoreResult, Tx, on_conn, to_ms};
use crate::domain::ids::{ChannelId, GuildId, RoleId};
use crate::domain::settings::GuildSettings;
use chrono::{DateTime, TimeDelta, Utc};

#[derive(sqlx::FromRow)]
struct SettingsRow {
    guild_id: i64,
    audit_channel_id: Option<i64>,
    approvals_channel_id: Option<i64>,
    approver_role_id: Option<i64>,
    creator_role_id: Option<i64>,
    approvals_required: i64,
    dm_lifetime_secs: i64,
    request_expiry_secs: i64,
    key_lifetime_days: i64,
}

impl From<SettingsRow> for GuildSettings {
    fn from(r: SettingsRow) -> Self {
        GuildSettings {
            guild_id: GuildId::from_db(r.guild_id),
            audit_channel: r.audit_channel_id.map(ChannelId::from_db),
            approvals_channel: r.approvals_channel_id.map(ChannelId::from_db),
            approver_role: r.approver_role_id.map(RoleId::from_db),
            creator_role: r.creator_role_id.map(RoleId::from_db),
            // The table's CHECK keeps it within 0..=5.
            approvals_required: r.approvals_required.clamp(0, u8::MAX.into()) as u8,
            dm_lifetime: TimeDelta::seconds(r.dm_lifetime_secs),
            request_expiry: TimeDelta::seconds(r.request_expiry_secs),
            key_lifetime: TimeDelta::days(r.key_lifetime_days),
        }
    }
}

impl<M> Tx<M> {
    /// The guild's settings, or the defaults if it never saved any.
    pub async fn guild_settings(&mut self, guild: GuildId) -> StoreResult<GuildSettings> {
        let row: Option<SettingsRow> = on_conn!(self, c => sqlx::query_as(
            "SELECT guild_id, audit_channel_id, approvals_channel_id, approver_role_id, \
             creator_role_id, approvals_required, dm_lifetime_secs, request_expiry_secs, \
             key_lifetime_days FROM guild_settings WHERE guild_id = $1")
            .bind(guild.to_db())
            .fetch_optional(&mut *c)
            .await?);
        Ok(row.map_or_else(|| GuildSettings::defaults(guild), GuildSettings::from))
    }

    pub async fn save_guild_settings(
        &mut self,
        s: &GuildSettings,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query(
            "INSERT INTO guild_settings (guild_id, audit_channel_id, approvals_channel_id, \
             approver_role_id, creator_role_id, approvals_required, dm_lifetime_secs, \
             request_expiry_secs, updated_at, key_lifetime_days) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (guild_id) DO UPDATE SET audit_channel_id = excluded.audit_channel_id, \
             approvals_channel_id = excluded.approvals_channel_id, \
             approver_role_id = excluded.approver_role_id, \
             creator_role_id = excluded.creator_role_id, \
             approvals_required = excluded.approvals_required, \
             dm_lifetime_secs = excluded.dm_lifetime_secs, \
             request_expiry_secs = excluded.request_expiry_secs, \
             updated_at = excluded.updated_at, \
             key_lifetime_days = excluded.key_lifetime_days")
            .bind(s.guild_id.to_db())
            .bind(s.audit_channel.map(ChannelId::to_db))
            .bind(s.approvals_channel.map(ChannelId::to_db))
            .bind(s.approver_role.map(RoleId::to_db))
            .bind(s.creator_role.map(RoleId::to_db))
            .bind(i64::from(s.approvals_required))
            .bind(s.dm_lifetime.num_seconds())
            .bind(s.request_expiry.num_seconds())
            .bind(to_ms(now))
            .bind(s.key_lifetime.num_days())
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(())
    }
}
