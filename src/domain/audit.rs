//! Audit events: who changed what, when; never a secret.

use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{GuildId, UserId};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditKind {
    DraftSubmitted,
    ApprovalVote,
    Approved,
    Denied,
    Withdrawn,
    Expired,
    CredentialsIssued,
    KeyGenerated,
    Finished,
    DmRedacted,
    KeyRotated,
    KeyRevoked,
    SettingsChanged,
    SecretRotated,
    /// A key reached its expiry or the end of its grace.
    KeyExpired,
    /// An expiry warning that could not reach the owner by DM.
    ExpiryWarning,
    /// A credential that never reached its owner was replaced by a new one.
    CredentialReissued,
    /// Discord refused the bot in a channel; what was bound for it waits.
    ChannelPaused,
    /// Approved credentials that can reach the requester neither by DM nor
    /// by a Reveal button.
    DeliveryHeld,
}

impl AuditKind {
    pub const ALL: [AuditKind; 19] = [
        Self::DraftSubmitted,
        Self::ApprovalVote,
        Self::Approved,
        Self::Denied,
        Self::Withdrawn,
        Self::Expired,
        Self::CredentialsIssued,
        Self::KeyGenerated,
        Self::Finished,
        Self::DmRedacted,
        Self::KeyRotated,
        Self::KeyRevoked,
        Self::SettingsChanged,
        Self::SecretRotated,
        Self::KeyExpired,
        Self::ExpiryWarning,
        Self::CredentialReissued,
        Self::ChannelPaused,
        Self::DeliveryHeld,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DraftSubmitted => "draft_submitted",
            Self::ApprovalVote => "approval_vote",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Withdrawn => "withdrawn",
            Self::Expired => "expired",
            Self::CredentialsIssued => "credentials_issued",
            Self::KeyGenerated => "key_generated",
            Self::Finished => "finished",
            Self::DmRedacted => "dm_redacted",
            Self::KeyRotated => "key_rotated",
            Self::KeyRevoked => "key_revoked",
            Self::SettingsChanged => "settings_changed",
            Self::SecretRotated => "secret_rotated",
            Self::KeyExpired => "key_expired",
            Self::ExpiryWarning => "expiry_warning",
            Self::CredentialReissued => "credential_reissued",
            Self::ChannelPaused => "channel_paused",
            Self::DeliveryHeld => "delivery_held",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == value)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::DraftSubmitted => "Submitted",
            Self::ApprovalVote => "Approval vote",
            Self::Approved => "Approved",
            Self::Denied => "Denied",
            Self::Withdrawn => "Withdrawn",
            Self::Expired => "Expired",
            Self::CredentialsIssued => "Credentials issued",
            Self::KeyGenerated => "API key generated",
            Self::Finished => "Finished",
            Self::DmRedacted => "DM redacted",
            Self::KeyRotated => "Key rotated",
            Self::KeyRevoked => "Revoked",
            Self::SettingsChanged => "Settings changed",
            Self::SecretRotated => "Secret rotated",
            Self::KeyExpired => "Key expired",
            Self::ExpiryWarning => "Expiry warning",
            Self::CredentialReissued => "Issued again",
            Self::ChannelPaused => "Channel unusable",
            Self::DeliveryHeld => "Delivery held",
        }
    }
}

/// An event about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub guild_id: GuildId,
    pub app_id: Option<ApplicationId>,
    /// None when keygate itself acted (expiry, scheduled redaction).
    pub actor_id: Option<UserId>,
    pub kind: AuditKind,
    /// One line for people; built from names and ids only, never a credential.
    pub summary: String,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub guild_id: GuildId,
    pub app_id: Option<ApplicationId>,
    pub actor_id: Option<UserId>,
    pub kind: AuditKind,
    pub summary: String,
    pub created_at: DateTime<Utc>,
}
