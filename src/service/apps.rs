//! Application use cases after Submit: decisions, credentials, keys, look-ups.

use super::{Actor, Service, ServiceError, ServiceResult, audit};
use crate::domain::application::quoted;
use crate::domain::application::{AppStatus, Application, LifecycleError, Transition};
use crate::domain::approval::{ApprovalError, ApprovalRequest, RequestStatus, VoteOutcome};
use crate::domain::audit::{AuditKind, NewAuditEvent};
use crate::domain::credentials::{
    ApiKey, ApplicationId, ClientSecret, CredentialHash, KEY_ID_PREFIX, SECRET_ID_PREFIX,
    credential_id,
};
use crate::domain::ids::{ChannelId, GuildId, InteractionId, MessageId};
use crate::domain::lifecycle::{CredentialKind, StoredCredential, next_warning};
use crate::domain::settings::GuildSettings;
use crate::domain::validation::name_key;
use crate::store::{Backend, DmRedaction, StoreError, Tx};
use chrono::{DateTime, Utc};

/// What Submit produced: the application and either its approval request or,
/// when the guild requires no approval, its credentials (issued in the same
/// transaction, returned this once).
#[derive(Debug)]
pub struct Submitted {
    pub app: Application,
    pub request: Option<ApprovalRequest>,
    pub credentials: Option<IssuedCredentials>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApproveOutcome {
    /// The vote counted; more approvals are needed.
    Counted { given: u8, required: u8 },
    /// This vote approved the application.
    Approved(Box<Application>),
}

/// The Application ID and Secret, in clear, returned exactly once.
#[derive(Debug)]
pub struct IssuedCredentials {
    pub app: Application,
    pub secret: ClientSecret,
    /// The Secret's public id, to record when it reached its owner.
    pub secret_id: String,
    /// How long the guild lets a message holding them live.
    pub dm_lifetime: chrono::TimeDelta,
}

/// A new API key, in clear, returned exactly once.
#[derive(Debug)]
pub struct IssuedKey {
    pub app: Application,
    pub key: ApiKey,
    /// The key's public id, to record when it reached its owner.
    pub key_id: String,
    pub expires_at: DateTime<Utc>,
    /// How long the guild lets a message holding it live.
    pub dm_lifetime: chrono::TimeDelta,
}

/// A stored credential's record for a new key or Secret: hash and prefix only.
pub(super) fn new_record(
    kind: CredentialKind,
    app: &ApplicationId,
    hash: CredentialHash,
    prefix: String,
    now: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> StoredCredential {
    let id_prefix = match kind {
        CredentialKind::Key => KEY_ID_PREFIX,
        CredentialKind::Secret => SECRET_ID_PREFIX,
    };
    StoredCredential {
        kind,
        id: credential_id(id_prefix),
        app_id: app.clone(),
        hash,
        prefix,
        created_at: now,
        expires_at,
        revoked_at: None,
        replaced_by: None,
        rotated_by: None,
        grace_ends_at: None,
        shown_at: None,
        last_used_at: None,
    }
}

/// Stores a new credential with its first expiry warning (keys).
pub(super) async fn insert_credential(tx: &mut Tx, c: &StoredCredential) -> ServiceResult<()> {
    let warning = c
        .expires_at
        .and_then(|e| next_warning(e, c.created_at, None));
    Ok(tx.insert_credential(c, warning).await?)
}

/// Records an audit event about `app` in the caller's transaction.
pub(super) async fn record_event(
    tx: &mut Tx,
    app: &Application,
    actor: Option<&Actor>,
    kind: AuditKind,
    summary: String,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    let event = NewAuditEvent {
        guild_id: app.guild_id,
        app_id: Some(app.id.clone()),
        actor_id: actor.map(|a| a.user_id),
        kind,
        summary,
    };
    audit(tx, event, now).await
}

/// Creates the approved application's Secret in the caller's transaction;
/// only its hash is stored. Returns it with its public id.
pub(super) async fn issue_secret(
    tx: &mut Tx,
    app: &Application,
    now: DateTime<Utc>,
) -> ServiceResult<(ClientSecret, String)> {
    let secret = ClientSecret::generate();
    let record = new_record(
        CredentialKind::Secret,
        &app.id,
        secret.hash(),
        secret.display_prefix(),
        now,
        None,
    );
    match insert_credential(tx, &record).await {
        Err(ServiceError::Store(StoreError::Conflict("secret"))) => {
            return Err(ServiceError::CredentialsAlreadyIssued);
        }
        other => other?,
    }
    let summary = format!(
        "issued the Application ID and Secret of {}",
        quoted(&app.details.name)
    );
    record_event(tx, app, None, AuditKind::CredentialsIssued, summary, now).await?;
    // Other processes' verifiers learn of the app's new credential.
    tx.notify_credentials_changed(&app.id).await?;
    Ok((secret, record.id))
}

/// Moves the app, as read before this transaction, to its key: false when
/// it had moved meanwhile, or cannot.
async fn claim_key(tx: &mut Tx, app: &mut Application, now: DateTime<Utc>) -> ServiceResult<bool> {
    let Ok(to) = app.status.apply(Transition::GenerateKey) else {
        return Ok(false);
    };
    if !tx.transition_app(&app.id, app.status, to, now).await? {
        return Ok(false);
    }
    app.status = to;
    app.updated_at = now;
    Ok(true)
}

impl Service {
    pub(super) async fn load_app(
        &self,
        tx: &mut Tx,
        guild: GuildId,
        id: &ApplicationId,
    ) -> ServiceResult<Application> {
        tx.app(guild, id).await?.ok_or(ServiceError::AppNotFound)
    }

    /// Moves the application on, or says why not: another request may have
    /// moved it first, in which case its new state explains the refusal.
    pub(super) async fn transition(
        &self,
        tx: &mut Tx,
        app: &mut Application,
        transition: Transition,
        now: DateTime<Utc>,
    ) -> ServiceResult<()> {
        let to = app.status.apply(transition)?;
        if !tx.transition_app(&app.id, app.status, to, now).await? {
            let current = self.load_app(tx, app.guild_id, &app.id).await?;
            return Err(LifecycleError {
                from: current.status,
                transition,
            }
            .into());
        }
        app.status = to;
        app.updated_at = now;
        Ok(())
    }

    /// One approver's vote. The last vote needed approves the application.
    pub async fn approve(
        &self,
        guild: GuildId,
        id: &ApplicationId,
        actor: Actor,
    ) -> ServiceResult<ApproveOutcome> {
        if !actor.is_approver {
            return Err(ServiceError::NotApprover);
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut app = self.load_app(&mut tx, guild, id).await?;
        let request = tx
            .lock_approval_request(id)
            .await?
            .ok_or(ServiceError::AppNotFound)?;
        let outcome = request.vote(actor.user_id, now)?;
        match tx.insert_vote(id, actor.user_id, now).await {
            Err(StoreError::Conflict("vote")) => return Err(ApprovalError::AlreadyApproved.into()),
            other => other?,
        }
        let result = match outcome {
            VoteOutcome::Counted { given, required } => {
                let summary = format!(
                    "approved {} ({given}/{required})",
                    quoted(&app.details.name)
                );
                record_event(
                    &mut tx,
                    &app,
                    Some(&actor),
                    AuditKind::ApprovalVote,
                    summary,
                    now,
                )
                .await?;
                ApproveOutcome::Counted { given, required }
            }
            VoteOutcome::Approved => {
                tx.close_approval_request(
                    id,
                    RequestStatus::Approved,
                    Some(actor.user_id),
                    None,
                    now,
                )
                .await?;
                self.transition(&mut tx, &mut app, Transition::Approve, now)
                    .await?;
                let required = request.approvals_required;
                let summary = format!(
                    "approved {} ({required}/{required})",
                    quoted(&app.details.name)
                );
                record_event(
                    &mut tx,
                    &app,
                    Some(&actor),
                    AuditKind::Approved,
                    summary,
                    now,
                )
                .await?;
                ApproveOutcome::Approved(Box::new(app))
            }
        };
        tx.commit().await?;
        Ok(result)
    }

    /// Denies a pending request with a reason the requester will read.
    pub async fn deny(
        &self,
        guild: GuildId,
        id: &ApplicationId,
        actor: Actor,
        reason: &str,
    ) -> ServiceResult<(Application, String)> {
        if !actor.is_approver {
            return Err(ServiceError::NotApprover);
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut app = self.load_app(&mut tx, guild, id).await?;
        let request = tx
            .lock_approval_request(id)
            .await?
            .ok_or(ServiceError::AppNotFound)?;
        let reason = request.deny(actor.user_id, reason, now)?;
        tx.close_approval_request(
            id,
            RequestStatus::Denied,
            Some(actor.user_id),
            Some(&reason),
            now,
        )
        .await?;
        self.transition(&mut tx, &mut app, Transition::Deny, now)
            .await?;
        let summary = format!("denied {}", quoted(&app.details.name));
        record_event(&mut tx, &app, Some(&actor), AuditKind::Denied, summary, now).await?;
        tx.commit().await?;
        Ok((app, reason))
    }

    /// The requester takes back a pending request.
    pub async fn withdraw(
        &self,
        guild: GuildId,
        id: &ApplicationId,
        actor: Actor,
    ) -> ServiceResult<Application> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut app = self.load_app(&mut tx, guild, id).await?;
        if app.owner_id != actor.user_id {
            return Err(ServiceError::NotOwner);
        }
        let request = tx
            .lock_approval_request(id)
            .await?
            .ok_or(ServiceError::AppNotFound)?;
        if request.status != RequestStatus::Pending {
            return Err(ApprovalError::NotPending(request.status).into());
        }
        tx.close_approval_request(id, RequestStatus::Withdrawn, Some(actor.user_id), None, now)
            .await?;
        self.transition(&mut tx, &mut app, Transition::Withdraw, now)
            .await?;
        let summary = format!("withdrew {}", quoted(&app.details.name));
        record_event(
            &mut tx,
            &app,
            Some(&actor),
            AuditKind::Withdrawn,
            summary,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(app)
    }

    /// Issues the Secret of an approved application. Returns it in clear
    /// exactly once: a second call, even a concurrent one, is refused, unless
    /// the Secret issued before never reached its owner (a crash or a failed
    /// Discord write between issuing and showing it): that one is revoked and
    /// a new one issued, so nothing stays stuck at "already issued".
    pub async fn issue_credentials(
        &self,
        guild: GuildId,
        id: &ApplicationId,
    ) -> ServiceResult<IssuedCredentials> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let app = self.load_app(&mut tx, guild, id).await?;
        let (secret, secret_id) = match tx.current_credential(id, CredentialKind::Secret).await? {
            Some(old) if self.is_lost(&old, now) => {
                let secret = ClientSecret::generate();
                let record = new_record(
                    CredentialKind::Secret,
                    &app.id,
                    secret.hash(),
                    secret.display_prefix(),
                    now,
                    None,
                );
                self.reissue(&mut tx, &app, &old, &record, now).await?;
                (secret, record.id)
            }
            Some(old) if old.shown_at.is_none() => {
                return Err(ServiceError::CredentialsBeingDelivered);
            }
            Some(_) => return Err(ServiceError::CredentialsAlreadyIssued),
            None if app.status != AppStatus::Approved => {
                return Err(ServiceError::NotApproved(app.status));
            }
            None => {
                // Taken in turn with a revocation (PostgreSQL locks the row).
                if !tx.touch_live_app(&app.id, now).await? {
                    return Err(ServiceError::NotApproved(AppStatus::Revoked));
                }
                issue_secret(&mut tx, &app, now).await?
            }
        };
        let dm_lifetime = tx.guild_settings(guild).await?.dm_lifetime;
        tx.commit().await?;
        self.verify.invalidate_app(id);
        Ok(IssuedCredentials {
            app,
            secret,
            secret_id,
            dm_lifetime,
        })
    }

    /// A credential issued but never shown, long enough ago that no delivery
    /// of it is still under way: its owner never got it.
    pub fn is_lost(&self, c: &StoredCredential, now: DateTime<Utc>) -> bool {
        c.shown_at.is_none() && now - c.created_at >= self.policy.stall_grace
    }

    /// Puts `new` in the place of `old`, a credential that never reached its
    /// owner (same transaction): `old` is revoked, `new` takes its place in a
    /// rotation too (what `old` replaced keeps its grace, now naming `new`),
    /// and one audit event says so.
    pub(super) async fn reissue(
        &self,
        tx: &mut Tx,
        app: &Application,
        old: &StoredCredential,
        new: &StoredCredential,
        now: DateTime<Utc>,
    ) -> ServiceResult<()> {
        let taken = || match old.kind {
            CredentialKind::Key => ServiceError::KeyAlreadyGenerated,
            CredentialKind::Secret => ServiceError::CredentialsAlreadyIssued,
        };
        // Locks the app's row (PostgreSQL), so a revocation waits for this,
        // or this one sees the app revoked.
        if !tx.touch_live_app(&app.id, now).await? {
            return Err(ServiceError::NotApproved(AppStatus::Revoked));
        }
        if !tx.revoke_credential(old, now).await? {
            return Err(taken());
        }
        match insert_credential(tx, new).await {
            Err(ServiceError::Store(StoreError::Conflict(_))) => return Err(taken()),
            other => other?,
        }
        tx.repoint_replaced(old.kind, &old.id, &new.id).await?;
        let summary = format!(
            "issued a new {} {}… for {} in place of {}…, which never reached its owner (revoked)",
            old.kind.label(),
            new.prefix,
            quoted(&app.details.name),
            old.prefix
        );
        record_event(tx, app, None, AuditKind::CredentialReissued, summary, now).await?;
        tx.notify_credentials_changed(&app.id).await?;
        Ok(())
    }

    /// Generates the application's one API key, for its owner. Of any number of
    /// concurrent calls exactly one gets the key. A key that never reached its
    /// owner is replaced by a new one instead of refused.
    pub async fn generate_api_key(
        &self,
        guild: GuildId,
        id: &ApplicationId,
        actor: Actor,
    ) -> ServiceResult<IssuedKey> {
        self.issue_key(Some(guild), id, actor, None).await
    }

    /// As [`Service::generate_api_key`], for a key that goes out as the
    /// answer of `interaction` in the DM `channel`: its redaction is stored
    /// in the same write, before the answer can show the key, and keyed by
    /// the interaction until the message is known
    /// ([`Service::key_answer_shown`]). The app is found by its ID alone,
    /// as a DM's button knows it; its owner is who may press it.
    pub async fn generate_api_key_answering(
        &self,
        id: &ApplicationId,
        actor: Actor,
        answer: (ChannelId, InteractionId),
    ) -> ServiceResult<IssuedKey> {
        self.issue_key(None, id, actor, Some(answer)).await
    }

    async fn issue_key(
        &self,
        guild: Option<GuildId>,
        id: &ApplicationId,
        actor: Actor,
        answer: Option<(ChannelId, InteractionId)>,
    ) -> ServiceResult<IssuedKey> {
        let now = self.clock.now();
        // On SQLite, checked before the write, outside its single writer:
        // the press that finds no key yet then needs one conditional
        // statement to claim it. One that finds a key, or loses a race, is
        // checked again inside. The claim alone is enough because what was
        // checked cannot change while the status stays: the owner never
        // changes, and an app past approval has a current Secret until it is
        // revoked (rotation and reissue replace it in one transaction). The
        // settings are those in force when the member pressed. PostgreSQL has
        // no single writer, and a second connection would only add a wait for
        // the pool: there, all of it runs in the transaction.
        let checked = match self.store.backend() {
            Backend::Sqlite => {
                let mut read = self.store.single(false).await?;
                let checked = self.key_checks(&mut read, guild, id, &actor).await;
                read.commit().await?;
                Some(checked?)
            }
            Backend::Postgres => None,
        };
        let mut tx = self.store.begin().await?;
        let claimed = match checked {
            Some((mut app, settings)) => claim_key(&mut tx, &mut app, now)
                .await?
                .then_some((app, settings)),
            None => None,
        };
        let (mut app, settings, lost) = match claimed {
            Some((app, settings)) => (app, settings, None),
            None => {
                let (mut app, settings) = self.key_checks(&mut tx, guild, id, &actor).await?;
                let lost = self.key_or_lost(&mut tx, &mut app, now).await?;
                (app, settings, lost)
            }
        };
        let key = ApiKey::generate();
        let record = new_record(
            CredentialKind::Key,
            &app.id,
            key.hash(),
            key.display_prefix(),
            now,
            Some(now + settings.key_lifetime),
        );
        app.key_prefix = Some(record.prefix.clone());
        match lost {
            Some(old) => self.reissue(&mut tx, &app, &old, &record, now).await?,
            None => {
                match insert_credential(&mut tx, &record).await {
                    Err(ServiceError::Store(StoreError::Conflict("key"))) => {
                        return Err(ServiceError::KeyAlreadyGenerated);
                    }
                    other => other?,
                }
                let summary = format!(
                    "generated API key {}… for {}",
                    record.prefix,
                    quoted(&app.details.name)
                );
                record_event(
                    &mut tx,
                    &app,
                    Some(&actor),
                    AuditKind::KeyGenerated,
                    summary,
                    now,
                )
                .await?;
                tx.notify_credentials_changed(id).await?;
            }
        }
        if let Some((channel, interaction)) = answer {
            tx.schedule_redaction(&DmRedaction {
                channel_id: channel,
                message_id: MessageId(interaction.0),
                app_id: app.id.clone(),
                user_id: actor.user_id,
                due_at: now + settings.dm_lifetime,
                answer_of: Some(interaction),
                carries: Some(record.id.clone()),
            })
            .await?;
        }
        tx.commit().await?;
        self.verify.invalidate_app(id);
        Ok(IssuedKey {
            app,
            key,
            key_id: record.id,
            expires_at: now + settings.key_lifetime,
            dm_lifetime: settings.dm_lifetime,
        })
    }

    /// The app whose key its owner asks for, once its Secret was issued,
    /// with its guild's settings.
    async fn key_checks<M>(
        &self,
        tx: &mut Tx<M>,
        guild: Option<GuildId>,
        id: &ApplicationId,
        actor: &Actor,
    ) -> ServiceResult<(Application, GuildSettings)> {
        let app = match guild {
            Some(guild) => tx.app(guild, id).await?,
            None => tx.app_by_id(id).await?,
        }
        .ok_or(ServiceError::AppNotFound)?;
        if app.owner_id != actor.user_id {
            return Err(ServiceError::NotOwner);
        }
        if tx
            .current_credential(id, CredentialKind::Secret)
            .await?
            .is_none()
        {
            return Err(ServiceError::CredentialsNotIssued);
        }
        let settings = tx.guild_settings(app.guild_id).await?;
        Ok((app, settings))
    }

    /// Moves the app to its key, or finds the key it has lost (to replace),
    /// or says why there is neither.
    async fn key_or_lost(
        &self,
        tx: &mut Tx,
        app: &mut Application,
        now: DateTime<Utc>,
    ) -> ServiceResult<Option<StoredCredential>> {
        if app.status == AppStatus::KeyIssued {
            return match tx.current_credential(&app.id, CredentialKind::Key).await? {
                Some(old) if self.is_lost(&old, now) && !tx.answer_pending(&old.id).await? => {
                    Ok(Some(old))
                }
                _ => Err(ServiceError::KeyAlreadyGenerated),
            };
        }
        match self.transition(tx, app, Transition::GenerateKey, now).await {
            // Lost the race to a concurrent call that generated it.
            Err(ServiceError::Lifecycle(e)) if e.from == AppStatus::KeyIssued => {
                Err(ServiceError::KeyAlreadyGenerated)
            }
            other => other.map(|()| None),
        }
    }

    pub async fn app(&self, guild: GuildId, id: &ApplicationId) -> ServiceResult<Application> {
        let mut tx = self.store.read().await?;
        let app = self.load_app(&mut tx, guild, id).await?;
        tx.rollback().await?;
        Ok(app)
    }

    /// The application's keys and Secrets (hashes and standing only), each
    /// newest first, for an application the caller already loaded for its guild.
    pub async fn credentials(
        &self,
        app: &Application,
    ) -> ServiceResult<(Vec<StoredCredential>, Vec<StoredCredential>)> {
        let mut tx = self.store.read().await?;
        let keys = tx.credentials_of(&app.id, CredentialKind::Key).await?;
        let secrets = tx.credentials_of(&app.id, CredentialKind::Secret).await?;
        tx.rollback().await?;
        Ok((keys, secrets))
    }

    /// The guild's live application with this name, ignoring case.
    pub async fn app_by_name(&self, guild: GuildId, name: &str) -> ServiceResult<Application> {
        let mut tx = self.store.read().await?;
        let app = tx.app_by_name_key(guild, &name_key(name)).await?;
        tx.rollback().await?;
        app.ok_or(ServiceError::AppNotFound)
    }

    pub async fn list_apps(&self, guild: GuildId) -> ServiceResult<Vec<Application>> {
        // No transaction: the app rows are read by one statement, and their
        // URLs and scopes, read after it, never change once inserted.
        let mut tx = self.store.single(false).await?;
        let apps = tx.apps_of_guild(guild).await?;
        tx.rollback().await?;
        Ok(apps)
    }

    pub async fn approval_request(
        &self,
        id: &ApplicationId,
    ) -> ServiceResult<Option<ApprovalRequest>> {
        // A transaction: the request and its votes must be of one moment.
        let mut tx = self.store.read().await?;
        let request = tx.approval_request(id).await?;
        tx.rollback().await?;
        Ok(request)
    }
}
