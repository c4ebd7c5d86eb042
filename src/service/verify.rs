//! Key verification: what the organization's services ask of a presented key.

use super::{Service, ServiceResult};
use crate::domain::application::{AppStatus, LoginUserType, SourceApp};
use crate::domain::credentials::{ApplicationId, parse_api_key};
use crate::domain::ids::GuildId;
use chrono::{DateTime, Utc};

/// Why a key does not work. Deliberately coarse: enough for a caller to act
/// on, nothing that helps someone probing for keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyFailure {
    /// Not a keygate key at all, or mistyped (checksum).
    Malformed,
    /// Well-formed, but never issued.
    Unknown,
    Revoked,
    Expired,
}

impl VerifyFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// What a valid key grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    pub app_id: ApplicationId,
    pub guild_id: GuildId,
    pub scopes: Vec<String>,
    pub user_type: LoginUserType,
    pub source_app: SourceApp,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Valid(VerifiedKey),
    Invalid(VerifyFailure),
}

impl Service {
    /// Checks a presented API key. Malformed keys never reach the database.
    pub async fn verify_key(&self, presented: &str) -> ServiceResult<Verification> {
        let Ok(key) = parse_api_key(presented) else {
            return Ok(Verification::Invalid(VerifyFailure::Malformed));
        };
        let hash = key.hash();
        let now = self.clock.now();
        let mut tx = self.store.read().await?;
        let record = tx.api_key_by_hash(&hash).await?;
        // The look-up was by hash; the constant-time comparison guards against
        // a database collation or index returning a near miss.
        let Some(record) = record.filter(|r| r.key_hash.matches(&hash)) else {
            tx.rollback().await?;
            return Ok(Verification::Invalid(VerifyFailure::Unknown));
        };
        let app = tx.app_by_id(&record.app_id).await?;
        tx.rollback().await?;
        let Some(app) = app else {
            return Ok(Verification::Invalid(VerifyFailure::Unknown));
        };
        let failure = if record.revoked_at.is_some() || app.status == AppStatus::Revoked {
            Some(VerifyFailure::Revoked)
        } else if record.expires_at <= now {
            Some(VerifyFailure::Expired)
        } else {
            None
        };
        Ok(match failure {
            Some(f) => Verification::Invalid(f),
            None => Verification::Valid(VerifiedKey {
                app_id: app.id,
                guild_id: app.guild_id,
                scopes: app.scopes,
                user_type: app.user_type,
                source_app: app.source_app,
                expires_at: record.expires_at,
            }),
        })
    }
}
