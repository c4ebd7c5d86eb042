//! A guild's keygate settings and their defaults.

use crate::domain::ids::{ChannelId, GuildId, RoleId};
use chrono::TimeDelta;

/// Per-guild settings; a guild that never ran `/keygate setup` has the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuildSettings {
    pub guild_id: GuildId,
    pub audit_channel: Option<ChannelId>,
    pub approvals_channel: Option<ChannelId>,
    pub approver_role: Option<RoleId>,
    /// None: members with the Manage Server permission may create apps.
    pub creator_role: Option<RoleId>,
    /// 0: no approval, credentials are issued on Submit.
    pub approvals_required: u8,
    /// How long a DM holding a secret stays before the bot redacts it.
    pub dm_lifetime: TimeDelta,
    /// How long a pending request waits for approvers.
    pub request_expiry: TimeDelta,
    /// How long a new API key works.
    pub key_lifetime: TimeDelta,
}

impl GuildSettings {
    pub fn defaults(guild_id: GuildId) -> Self {
        Self {
            guild_id,
            audit_channel: None,
            approvals_channel: None,
            approver_role: None,
            creator_role: None,
            approvals_required: 0,
            dm_lifetime: TimeDelta::minutes(15),
            request_expiry: TimeDelta::hours(72),
            key_lifetime: TimeDelta::days(365),
        }
    }
}
