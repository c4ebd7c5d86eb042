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
use crate::domain::retry::{LEASE, backoff};
use crate::domain::validation::name_key;
use crate::store::{DueWarning, StoreError, Tx};
use chrono::{DateTime, TimeDelta, Utc};

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
    /// expired already): what the messages say.
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

/// "keeps working until <t:…:f>" or "stopped working now", for messages and
/// audit summaries.
pub fn grace_text(ends_at: DateTime<Utc>, cut_off: bool) -> String {
    if cut_off {
        "stopped working now".to_owned()
    } else {
        format!("keeps working until <t:{}:f>", ends_at.timestamp())
    }
}

/// A new credential of `kind` for the app, in clear, and its record (not stored yet).
fn fresh(
    kind: CredentialKind,
    app: &ApplicationId,
    now: DateTime<Utc>,
    key_lifetime: TimeDelta,
) -> (NewCredential, StoredCredential) {
    match kind {
        CredentialKind::Key => {
            let key = ApiKey::generate();
            let expires_at = now + key_lifetime;
            let record = new_record(
                kind,
                app,
                key.hash(),
                key.display_prefix(),
                now,
                Some(expires_at),
            );
            (NewCredential::Key { key, expires_at }, record)
        }
        CredentialKind::Secret => {
            let secret = ClientSecret::generate();
            let record = new_record(kind, app, secret.hash(), secret.display_prefix(), now, None);
            (NewCredential::Secret(secret), record)
        }
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
        // One statement: no transaction around it.
        let mut tx = self.store.single(false).await?;
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

    /// The credential a button names and its application, after the checks
    /// a rotation makes (read only): a stale or refused press is answered
    /// before anything is sent, and `rotate` checks again in its transaction.
    pub async fn rotation_target(
        &self,
        guild: Option<GuildId>,
        credential_id: &str,
        actor: Actor,
    ) -> ServiceResult<(Application, StoredCredential)> {
        let mut tx = self.store.read().await?;
        let target = self.load_target(&mut tx, guild, credential_id, actor).await;
        tx.rollback().await?;
        target
    }

    async fn load_target(
        &self,
        tx: &mut Tx,
        guild: Option<GuildId>,
        credential_id: &str,
        actor: Actor,
    ) -> ServiceResult<(Application, StoredCredential)> {
        let old = tx
            .credential_by_id(credential_id)
            .await?
            .ok_or(ServiceError::AppNotFound)?;
        let app = tx
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
        Ok((app, old))
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
        let (mut app, old) = self
            .load_target(&mut tx, guild, credential_id, actor)
            .await?;
        // Locks the app's row (PostgreSQL): a revocation waits for this
        // rotation, or this one sees the app revoked.
        if !tx.touch_live_app(&app.id, now).await? {
            return Err(ServiceError::AppNotFound);
        }
        let settings = tx.guild_settings(app.guild_id).await?;
        let (new, record) = fresh(old.kind, &app.id, now, settings.key_lifetime);
        let ended = tx.end_graces(&app.id, old.kind, now).await?;
        let grace_ends_at = grace.ends_at(now, old.expires_at);
        let cut_off = grace == Grace::Now;
        // What the messages say: an old key already past its expiry stops now too.
        let stops_now = cut_off || grace_ends_at <= now;
        if !tx
            .replace_credential(
                &old,
                &record.id,
                Some(actor.user_id),
                grace_ends_at,
                cut_off,
                now,
            )
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
        if old.kind == CredentialKind::Key {
            app.key_prefix = Some(record.prefix.clone());
        }
        let mut summary = format!(
            "rotated the {} of {}: new {}…; the old {}… {}",
            old.kind.label(),
            quoted(&app.details.name),
            record.prefix,
            old.prefix,
            grace_text(grace_ends_at, stops_now)
        );
        for e in &ended {
            summary.push_str(&format!("; the grace of {}… ended early", e.prefix));
        }
        let event = match old.kind {
            CredentialKind::Key => AuditKind::KeyRotated,
            CredentialKind::Secret => AuditKind::SecretRotated,
        };
        record_event(&mut tx, &app, Some(&actor), event, summary, now).await?;
        tx.notify_credentials_changed(&app.id).await?;
        tx.commit().await?;
        self.verify.invalidate_app(&app.id);
        Ok(Rotated {
            app,
            new,
            new_id: record.id,
            old,
            cut_off: stops_now,
            grace_ends_at,
            ended,
            dm_lifetime: settings.dm_lifetime,
        })
    }

    /// Issues the credential `credential_id` again, for its owner, when it
    /// never reached them: the lost one is revoked, and the new one takes its
    /// place (an earlier one in its grace keeps it).
    pub async fn issue_again(
        &self,
        guild: Option<GuildId>,
        credential_id: &str,
        actor: Actor,
    ) -> ServiceResult<Rotated> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let (app, old) = self
            .load_target(&mut tx, guild, credential_id, actor)
            .await?;
        if app.owner_id != actor.user_id {
            return Err(ServiceError::NotOwner);
        }
        if old.shown_at.is_some() {
            return Err(ServiceError::AlreadyShown);
        }
        if !self.is_lost(&old, now) || tx.answer_pending(&old.id).await? {
            return Err(ServiceError::CredentialsBeingDelivered);
        }
        let settings = tx.guild_settings(app.guild_id).await?;
        let (new, record) = fresh(old.kind, &app.id, now, settings.key_lifetime);
        self.reissue(&mut tx, &app, &old, &record, now).await?;
        tx.commit().await?;
        self.verify.invalidate_app(&app.id);
        Ok(Rotated {
            app,
            new,
            new_id: record.id,
            old,
            cut_off: true,
            grace_ends_at: now,
            ended: Vec::new(),
            dm_lifetime: settings.dm_lifetime,
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
        // One UPDATE whose condition is in its WHERE: no transaction around it.
        let mut write = self.store.single(true).await?;
        write.mark_shown(credential_id, now).await?;
        write.commit().await?;
        Ok(())
    }

    /// Expiry warnings due now and not held by a process (read only).
    pub async fn due_warnings(&self) -> ServiceResult<Vec<DueWarning>> {
        // One statement: no transaction around it.
        let mut tx = self.store.single(false).await?;
        let due = tx.due_warnings(self.clock.now()).await?;
        tx.rollback().await?;
        Ok(due)
    }

    /// Claims one due warning for `LEASE`, just before it is sent:
    /// another process skips it until it is sent or the lease lapses. None
    /// when another process took it first.
    pub async fn claim_warning(&self, w: DueWarning) -> ServiceResult<Option<ClaimedWarning>> {
        let now = self.clock.now();
        let (Some(expires_at), Some(days)) = (
            w.key.expires_at,
            w.key.expires_at.and_then(|e| due_stage(e, now)),
        ) else {
            return Ok(None);
        };
        let mut tx = self.store.begin().await?;
        if !tx.claim_warning(&w, now, now + LEASE).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let app = tx.app_by_id(&w.key.app_id).await?;
        tx.commit().await?;
        Ok(app.map(|app| ClaimedWarning {
            app,
            due: w,
            days,
            expires_at,
        }))
    }

    /// Sending failed: the next try waits, doubling from 1 s up to 10 minutes
    /// (with jitter, so processes spread out), and at least `retry_after`
    /// when Discord said so (a 429).
    pub async fn warning_failed(
        &self,
        w: &ClaimedWarning,
        retry_after: Option<std::time::Duration>,
    ) -> ServiceResult<DateTime<Utc>> {
        let now = self.clock.now();
        let mut wait = backoff(w.due.failures.saturating_add(1));
        if let Some(r) = retry_after.and_then(|r| TimeDelta::from_std(r).ok()) {
            wait = wait.max(r);
        }
        let retry_at = now + wait;
        let mut tx = self.store.begin().await?;
        tx.fail_warning(&w.due, retry_at).await?;
        tx.commit().await?;
        Ok(retry_at)
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
        // One statement: no transaction around it.
        let mut tx = self.store.single(false).await?;
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
