//! Guild settings changes (`/keygate setup`).

use super::{Actor, Service, ServiceError, ServiceResult, audit};
use crate::domain::audit::{AuditKind, NewAuditEvent};
use crate::domain::ids::{ChannelId, GuildId, RoleId};
use crate::domain::settings::GuildSettings;
use chrono::TimeDelta;

/// A setting `/keygate setup clear:` can unset (back to its default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clearable {
    AuditChannel,
    ApprovalsChannel,
    ApproverRole,
    CreatorRole,
}

impl Clearable {
    pub fn name(self) -> &'static str {
        match self {
            Self::AuditChannel => "audit channel",
            Self::ApprovalsChannel => "approvals channel",
            Self::ApproverRole => "approver role",
            Self::CreatorRole => "creator role",
        }
    }
}

/// What one `/keygate setup` call names; everything else stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    pub audit_channel: Option<ChannelId>,
    pub approvals_channel: Option<ChannelId>,
    pub approver_role: Option<RoleId>,
    pub creator_role: Option<RoleId>,
    pub approvals_required: Option<i64>,
    pub dm_lifetime_minutes: Option<i64>,
    pub request_expiry_hours: Option<i64>,
    pub key_lifetime_days: Option<i64>,
    pub clear: Option<Clearable>,
}

fn in_range(name: &str, value: Option<i64>, min: i64, max: i64) -> ServiceResult<Option<i64>> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(ServiceError::InvalidSetting(format!(
            "{name} must be between {min} and {max} (got {v})"
        ))),
        other => Ok(other),
    }
}

impl Service {
    /// Applies the change, validated as a whole, and records what changed.
    pub async fn update_settings(
        &self,
        guild: GuildId,
        actor: Actor,
        change: &SettingsChange,
    ) -> ServiceResult<GuildSettings> {
        let approvals = in_range("approvals_required", change.approvals_required, 0, 5)?;
        let dm = in_range("dm_lifetime_minutes", change.dm_lifetime_minutes, 1, 1440)?;
        let expiry = in_range("request_expiry_hours", change.request_expiry_hours, 1, 720)?;
        let key_days = in_range("key_lifetime_days", change.key_lifetime_days, 1, 730)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut s = tx.guild_settings(guild).await?;
        let before = (s.audit_channel, s.approvals_channel);
        let mut changed = Vec::new();
        if let Some(c) = change.audit_channel {
            s.audit_channel = Some(c);
            changed.push(format!("audit channel <#{c}>"));
        }
        if let Some(c) = change.approvals_channel {
            s.approvals_channel = Some(c);
            changed.push(format!("approvals channel <#{c}>"));
        }
        if let Some(r) = change.approver_role {
            s.approver_role = Some(r);
            changed.push(format!("approver role <@&{r}>"));
        }
        if let Some(r) = change.creator_role {
            s.creator_role = Some(r);
            changed.push(format!("creator role <@&{r}>"));
        }
        if let Some(n) = approvals {
            s.approvals_required = n as u8;
            changed.push(format!("approvals required {n}"));
        }
        if let Some(m) = dm {
            s.dm_lifetime = TimeDelta::minutes(m);
            changed.push(format!("DM lifetime {m} min"));
        }
        if let Some(h) = expiry {
            s.request_expiry = TimeDelta::hours(h);
            changed.push(format!("request expiry {h} h"));
        }
        if let Some(d) = key_days {
            s.key_lifetime = TimeDelta::days(d);
            changed.push(format!(
                "key lifetime {d} days (for keys issued from now on)"
            ));
        }
        if let Some(c) = change.clear {
            let also_set = match c {
                Clearable::AuditChannel => change.audit_channel.is_some(),
                Clearable::ApprovalsChannel => change.approvals_channel.is_some(),
                Clearable::ApproverRole => change.approver_role.is_some(),
                Clearable::CreatorRole => change.creator_role.is_some(),
            };
            if also_set {
                return Err(ServiceError::InvalidSetting(format!(
                    "the {} cannot be set and cleared at once",
                    c.name()
                )));
            }
            match c {
                Clearable::AuditChannel => s.audit_channel = None,
                Clearable::ApprovalsChannel => s.approvals_channel = None,
                Clearable::ApproverRole => s.approver_role = None,
                Clearable::CreatorRole => s.creator_role = None,
            }
            changed.push(format!("cleared the {}", c.name()));
        }
        if changed.is_empty() {
            return Err(ServiceError::InvalidSetting(
                "name at least one setting to change".into(),
            ));
        }
        if s.approvals_required > 0 && s.approvals_channel.is_none() {
            return Err(ServiceError::InvalidSetting(
                "requests need somewhere to go: set approvals_channel too".into(),
            ));
        }
        tx.save_guild_settings(&s, now).await?;
        // Naming a channel again, or another one, is how an admin says the
        // problem is fixed: whatever waited for the old or the new channel
        // is tried at once.
        let named = |set: bool, cleared: Clearable| set || change.clear == Some(cleared);
        let mut touched = Vec::new();
        if named(change.audit_channel.is_some(), Clearable::AuditChannel) {
            touched.extend([before.0, s.audit_channel].into_iter().flatten());
            tx.hasten_guild_outbox(guild, now).await?;
        }
        if named(
            change.approvals_channel.is_some(),
            Clearable::ApprovalsChannel,
        ) {
            touched.extend([before.1, s.approvals_channel].into_iter().flatten());
        }
        tx.unpause_channels(&touched).await?;
        let event = NewAuditEvent {
            guild_id: guild,
            app_id: None,
            actor_id: Some(actor.user_id),
            kind: AuditKind::SettingsChanged,
            summary: format!("set {}", changed.join(", ")),
        };
        audit(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(s)
    }
}
