//! Key lifecycle use cases: rotate with a grace period, revoke, expiry warnings and expiry.

use super::apps::{insert_credential, new_record, record_event};
use super::{Actor, Service, ServiceError, ServiceResult};
use crate::domain::application::{AppStatus, Application, Transition, quoted};
use crate::domain::audit::AuditKind;
use crate::domain::credentials::{ApiKey, ApplicationId, ClientSecret};
use crate::domain::ids::GuildId;
use crate::domain::lifecycle::{
    CredentialKind, CredentialState, Grace, StoredCredential, due_stage, next_warning,
};
use crate::domain::validation::name_key;
use crate::store::{DueWarning, StoreError};
use chrono::{DateTime, TimeDelta, Utc};

/// A process sending an expiry warning holds it this long; within Discord's
/// nonce window, so a retry after a crash cannot post it twice.
const WARNING_LEASE: TimeDelta = TimeDelta::seconds(60);

/// What `/app rotate` would do, shown before the member confirms.
#[derive(Debug, Clone)]
pub struct RotationPlan {
    pub app: Application,
    /// The credential a confirmation is bound to.
    pub current: StoredCredential,
    pub grace: Grace,
    /// When the current credential would stop working, if rotated now.
    pub grace_ends_at: DateTime<Utc>,
    /// An earlier replaced credential still in its grace, which would end now.
    pub ending_grace: Option<StoredCredential>,
}

/// A new credential in clear, returned exactly once.
#[derive(Debug)]
pub enum NewCredential {
    Key {
        key: ApiKey,
        expires_at: DateTime<Utc>,
    },
    Secret(ClientSecret),
}

impl NewCredential {
    pub fn kind(&self) -> CredentialKind {
        match self {
            Self::Key { .. } => CredentialKind::Key,
            Self::Secret(_) => CredentialKind::Secret,
        }
    }

    /// The credential in clear, for the one message that shows it.
    pub fn expose(&self) -> &str {
        match self {
            Self::Key { key, .. } => key.expose(),
            Self::Secret(s) => s.expose(),
        }
    }
}

/// A rotation that happened.
#[derive(Debug)]
pub struct Rotated {
    pub app: Application,
    pub new: NewCredential,
    /// The new credential's public id, to record when it reached its owner.
    pub new_id: String,
    pub old: StoredCredential,
    /// When the old credential stops working (now for `grace:now`).
    pub grace_ends_at: DateTime<Utc>,
    /// The old credential stopped working at once (`grace:now`, or it had
    /// expired already).
    pub cut_off: bool,
    /// Earlier replaced credentials whose grace this rotation ended.
    pub ended: Vec<StoredCredential>,
    pub dm_lifetime: TimeDelta,
}

/// An expiry warning this process claimed and must now send.
#[derive(Debug, Clone)]
pub struct ClaimedWarning {
    pub app: Application,
    pub due: DueWarning,
    /// 30, 7 or 1: the days left it announces.
    pub days: i64,
    pub expires_at: DateTime<Utc>,
}

impl ClaimedWarning {
    /// Discord drops a second message with the same nonce, so a retry of a
    /// warning cut off by a crash posts it once (at most 25 characters).
    pub fn nonce(&self) -> String {
        let id: String = self.due.key.id.chars().rev().take(20).collect();
        format!("w{}{id}", self.days)
    }
}

/// "until <t:…:f>" or "stops working now", for messages and audit summaries.
fn grace_text(ends_at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if ends_at <= now {
        "stopped working now".to_owned()
    } else {
        format!("keeps working until <t:{}:f>", ends_at.timestamp())
    }
}

impl Service {
    /// What rotating the app's credential of `kind` would do now, for the
    /// confirmation; changes nothing.
    pub async fn plan_rotation(
        &self,
        app: &Application,
        kind: CredentialKind,
        grace: Grace,
        actor: Actor,
    ) -> ServiceResult<RotationPlan> {
        if !actor.may_manage(app) {
            return Err(ServiceError::NotAllowed);
        }
        if !matches!(app.status, AppStatus::Approved | AppStatus::KeyIssued) {
            return Err(ServiceError::NotApproved(app.status));
        }
        let now = self.clock.now();
        let mut tx = self.store.read().await?;
        let all = tx.credentials_of(&app.id, kind).await?;
        tx.rollback().await?;
        let current = all.iter().find(|c| c.is_current()).cloned();
        let Some(current) = current else {
            return Err(match kind {
                CredentialKind::Key => ServiceError::NoKeyYet,
                CredentialKind::Secret => ServiceError::CredentialsNotIssued,
            });
        };
        let ending_grace = all
            .into_iter()
            .find(|c| matches!(c.state(now), CredentialState::InGrace { .. }));
        Ok(RotationPlan {
            grace_ends_at: grace.ends_at(now, current.expires_at),
            app: app.clone(),
            current,
            grace,
            ending_grace,
        })
    }

    /// The application a stored credential belongs to (a button knows only the credential).
    pub async fn credential_app(&self, credential_id: &str) -> ServiceResult<Application> {
        let mut tx = self.store.read().await?;
        let app = match tx.credential_by_id(credential_id).await? {
            Some(c) => tx.app_by_id(&c.app_id).await?,
            None => None,
        };
        tx.rollback().await?;
        app.ok_or(ServiceError::AppNotFound)
    }

    /// Replaces the credential `credential_id` with a new one, if it is still
    /// the current one: of any number of concurrent confirmations for the same
    /// credential exactly one rotates; the others learn who did. The old one
    /// keeps working until the grace ends (never past its own expiry); an
    /// earlier one still in its grace stops now.
    pub async fn rotate(
        &self,
        guild: Option<GuildId>,
        credential_id: &str,
        grace: Grace,
        actor: Actor,
    ) -> ServiceResult<Rotated> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let old = tx
            .credential_by_id(credential_id)
            .await?
            .ok_or(ServiceError::AppNotFound)?;
        let mut app = tx
            .app_by_id(&old.app_id)
            .await?
            .filter(|a| guild.is_none_or(|g| g == a.guild_id))
            .ok_or(ServiceError::AppNotFound)?;
        if !actor.may_manage(&app) {
            return Err(ServiceError::NotAllowed);
        }
        if !matches!(app.status, AppStatus::Approved | AppStatus::KeyIssued) {
            return Err(ServiceError::NotApproved(app.status));
        }
        if !old.is_current() {
            return Err(ServiceError::AlreadyRotated { by: old.rotated_by });
        }
        let kind = old.kind;
        let (new, hash, prefix, expires_at) = match kind {
            CredentialKind::Key => {
                let key = ApiKey::generate();
                let expires_at = now + tx.guild_settings(app.guild_id).await?.key_lifetime;
                let (hash, prefix) = (key.hash(), key.display_prefix());
                (
                    NewCredential::Key { key, expires_at },
                    hash,
                    prefix,
                    Some(expires_at),
                )
            }
            CredentialKind::Secret => {
                let secret = ClientSecret::generate();
                let (hash, prefix) = (secret.hash(), secret.display_prefix());
                (NewCredential::Secret(secret), hash, prefix, None)
            }
        };
        let record = new_record(kind, &app.id, hash, prefix, now, expires_at);
        let ended = tx.end_graces(&app.id, kind, now).await?;
        let grace_ends_at = grace.ends_at(now, old.expires_at);
        if !tx
            .replace_credential(&old, &record.id, Some(actor.user_id), grace_ends_at, now)
            .await?
        {
            // A concurrent confirmation rotated it first; this transaction
            // (and the graces it ended) is rolled back.
            let by = tx
                .credential_by_id(credential_id)
                .await?
                .and_then(|c| c.rotated_by);
            return Err(ServiceError::AlreadyRotated { by });
        }
        match insert_credential(&mut tx, &record).await {
            Err(ServiceError::Store(StoreError::Conflict(_))) => {
                return Err(ServiceError::AlreadyRotated { by: None });
            }
            other => other?,
        }
        if kind == CredentialKind::Key {
            app.key_prefix = Some(record.prefix.clone());
            self.transition(&mut tx, &mut app, Transition::Rotate, now)
                .await?;
        }
        let mut summary = format!(
            "rotated the {} of {}: new {}…; the old {}… {}",
            kind.label(),
            quoted(&app.details.name),
            record.prefix,
            old.prefix,
            grace_text(grace_ends_at, now)
        );
        for e in &ended {
            summary.push_str(&format!("; the grace of {}… ended early", e.prefix));
        }
        let event = match kind {
            CredentialKind::Key => AuditKind::KeyRotated,
            CredentialKind::Secret => AuditKind::SecretRotated,
        };
        record_event(&mut tx, &app, Some(&actor), event, summary, now).await?;
        tx.notify_credentials_changed(&app.id).await?;
        let dm_lifetime = tx.guild_settings(app.guild_id).await?.dm_lifetime;
        tx.commit().await?;
        self.verify.invalidate_app(&app.id);
        Ok(Rotated {
            app,
            new,
            new_id: record.id,
            old,
            cut_off: grace_ends_at <= now,
            grace_ends_at,
            ended,
            dm_lifetime,
        })
    }

    /// Revokes the application: every key and the Secret stop working now.
    /// `typed_name` must be its name (as the revoke form asks), or nothing changes.
    pub async fn revoke(
        &self,
        guild: GuildId,
        id: &ApplicationId,
        actor: Actor,
        typed_name: &str,
    ) -> ServiceResult<Application> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut app = self.load_app(&mut tx, guild, id).await?;
        if !actor.may_manage(&app) {
            return Err(ServiceError::NotAllowed);
        }
        if name_key(typed_name) != name_key(&app.details.name) {
            return Err(ServiceError::NameMismatch);
        }
        self.transition(&mut tx, &mut app, Transition::Revoke, now)
            .await?;
        tx.revoke_credentials(id, now).await?;
        let summary = format!(
            "revoked {}: its keys and Secret stopped working",
            quoted(&app.details.name)
        );
        record_event(
            &mut tx,
            &app,
            Some(&actor),
            AuditKind::KeyRevoked,
            summary,
            now,
        )
        .await?;
        tx.notify_credentials_changed(id).await?;
        tx.commit().await?;
        self.verify.invalidate_app(id);
        Ok(app)
    }

    /// Records that a credential reached its owner; from then on it is never
    /// issued again in its place.
    pub async fn credential_shown(&self, credential_id: &str) -> ServiceResult<()> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        tx.mark_shown(credential_id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims the expiry warnings due now, each for `WARNING_LEASE`: another
    /// process skips them until sent or the lease lapses.
    pub async fn claim_due_warnings(&self) -> ServiceResult<Vec<ClaimedWarning>> {
        let now = self.clock.now();
        let mut tx = self.store.read().await?;
        let due = tx.due_warnings(now).await?;
        tx.rollback().await?;
        let mut claimed = Vec::new();
        for w in due {
            let Some(expires_at) = w.key.expires_at else {
                continue;
            };
            let Some(days) = due_stage(expires_at, now) else {
                continue;
            };
            let mut tx = self.store.begin().await?;
            if !tx.claim_warning(&w, now, now + WARNING_LEASE).await? {
                tx.rollback().await?;
                continue;
            }
            let app = tx.app_by_id(&w.key.app_id).await?;
            tx.commit().await?;
            if let Some(app) = app {
                claimed.push(ClaimedWarning {
                    app,
                    due: w,
                    days,
                    expires_at,
                });
            }
        }
        Ok(claimed)
    }

    /// The warning went out; `to_audit` when it went to the audit channel
    /// because the owner could not be reached by DM (recorded as an event,
    /// in the same transaction, so it is posted once).
    pub async fn warning_sent(&self, w: &ClaimedWarning, to_audit: bool) -> ServiceResult<()> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        // Stages after this one, unless already running at issue; an
        // overdue one goes out at the next pass.
        let next = next_warning(w.expires_at, w.due.key.created_at, Some(w.days));
        if !tx.complete_warning(&w.due, w.days, next).await? {
            tx.rollback().await?;
            return Ok(());
        }
        if to_audit {
            let summary = format!(
                "the API key {}… of {} expires <t:{}:R>; its owner <@{}> could not be reached by DM: rotate it with /app rotate",
                w.due.key.prefix,
                quoted(&w.app.details.name),
                w.expires_at.timestamp(),
                w.app.owner_id
            );
            record_event(
                &mut tx,
                &w.app,
                None,
                AuditKind::ExpiryWarning,
                summary,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records each key that stopped working (its expiry, or its grace end)
    /// as an audit event, once, whichever process sees it first.
    pub async fn record_expiries(&self) -> ServiceResult<usize> {
        let now = self.clock.now();
        let mut tx = self.store.read().await?;
        let ended = tx.unrecorded_expiries(now).await?;
        tx.rollback().await?;
        let mut recorded = 0;
        for key in ended {
            let mut tx = self.store.begin().await?;
            let app = tx.app_by_id(&key.app_id).await?;
            let Some(app) = app else {
                tx.rollback().await?;
                continue;
            };
            if !tx.record_expiry(&key.id, now).await? {
                tx.rollback().await?;
                continue;
            }
            let why = if key.replaced_by.is_some() {
                "its grace period after rotation ended"
            } else {
                "it reached its expiry date"
            };
            let summary = format!(
                "the API key {}… of {} stopped working: {why}",
                key.prefix,
                quoted(&app.details.name)
            );
            record_event(&mut tx, &app, None, AuditKind::KeyExpired, summary, now).await?;
            tx.commit().await?;
            recorded += 1;
        }
        Ok(recorded)
    }
}
