//! Application use cases after Submit: decisions, credentials, keys, look-ups.

use super::{Actor, Service, ServiceError, ServiceResult, audit};
use crate::domain::application::quoted;
use crate::domain::application::{AppStatus, Application, LifecycleError, Transition};
use crate::domain::approval::{ApprovalError, ApprovalRequest, RequestStatus, VoteOutcome};
use crate::domain::audit::{AuditKind, NewAuditEvent};
use crate::domain::credentials::{
    ApiKey, ApplicationId, ClientSecret, KEY_ID_PREFIX, credential_id,
};
use crate::domain::ids::GuildId;
use crate::domain::validation::name_key;
use crate::store::{ApiKeyRecord, StoreError, Tx};
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
    /// How long the guild lets a message holding them live.
    pub dm_lifetime: chrono::TimeDelta,
}

/// A new API key, in clear, returned exactly once.
#[derive(Debug)]
pub struct IssuedKey {
    pub app: Application,
    pub key: ApiKey,
    pub expires_at: DateTime<Utc>,
}

/// Records an audit event about `app` in the caller's transaction.
async fn record_event(
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
/// only its hash is stored.
pub(super) async fn issue_secret(
    tx: &mut Tx,
    app: &Application,
    now: DateTime<Utc>,
) -> ServiceResult<ClientSecret> {
    let secret = ClientSecret::generate();
    match tx
        .insert_secret(&app.id, &secret.hash(), &secret.display_prefix(), now)
        .await
    {
        Err(StoreError::Conflict("secret")) => return Err(ServiceError::CredentialsAlreadyIssued),
        other => other?,
    }
    let summary = format!(
        "issued the Application ID and Secret of {}",
        quoted(&app.details.name)
    );
    record_event(tx, app, None, AuditKind::CredentialsIssued, summary, now).await?;
    // A verifier may hold "no Secret yet" for this app.
    tx.notify_credentials_changed(&app.id).await?;
    Ok(secret)
}

impl Service {
    async fn load_app(
        &self,
        tx: &mut Tx,
        guild: GuildId,
        id: &ApplicationId,
    ) -> ServiceResult<Application> {
        tx.app(guild, id).await?.ok_or(ServiceError::AppNotFound)
    }

    /// Moves the application on, or says why not: another request may have
    /// moved it first, in which case its new state explains the refusal.
    async fn transition(
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
    /// exactly once: a second call, even a concurrent one, is refused.
    pub async fn issue_credentials(
        &self,
        guild: GuildId,
        id: &ApplicationId,
    ) -> ServiceResult<IssuedCredentials> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let app = self.load_app(&mut tx, guild, id).await?;
        if app.status != AppStatus::Approved {
            return Err(if tx.secret_hash(id).await?.is_some() {
                ServiceError::CredentialsAlreadyIssued
            } else {
                ServiceError::NotApproved(app.status)
            });
        }
        let secret = issue_secret(&mut tx, &app, now).await?;
        let dm_lifetime = tx.guild_settings(guild).await?.dm_lifetime;
        tx.commit().await?;
        self.verify.invalidate_app(id);
        Ok(IssuedCredentials {
            app,
            secret,
            dm_lifetime,
        })
    }

    /// Generates the application's one API key, for its owner. Of any number of
    /// concurrent calls exactly one gets the key.
    pub async fn generate_api_key(
        &self,
        guild: GuildId,
        id: &ApplicationId,
        actor: Actor,
    ) -> ServiceResult<IssuedKey> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut app = self.load_app(&mut tx, guild, id).await?;
        if app.owner_id != actor.user_id {
            return Err(ServiceError::NotOwner);
        }
        if app.status == AppStatus::KeyIssued {
            return Err(ServiceError::KeyAlreadyGenerated);
        }
        if tx.secret_hash(id).await?.is_none() {
            return Err(ServiceError::CredentialsNotIssued);
        }
        match self
            .transition(&mut tx, &mut app, Transition::GenerateKey, now)
            .await
        {
            // Lost the race to a concurrent call that generated it.
            Err(ServiceError::Lifecycle(e)) if e.from == AppStatus::KeyIssued => {
                return Err(ServiceError::KeyAlreadyGenerated);
            }
            other => other?,
        }
        let key = ApiKey::generate();
        let record = ApiKeyRecord {
            id: credential_id(KEY_ID_PREFIX),
            app_id: app.id.clone(),
            key_hash: key.hash(),
            key_prefix: key.display_prefix(),
            created_at: now,
            expires_at: now + self.policy.key_lifetime,
            revoked_at: None,
            last_used_at: None,
        };
        tx.insert_api_key(&record).await?;
        app.key_prefix = Some(record.key_prefix.clone());
        let summary = format!(
            "generated API key {}… for {}",
            record.key_prefix,
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
        tx.commit().await?;
        Ok(IssuedKey {
            app,
            key,
            expires_at: record.expires_at,
        })
    }

    /// The requester is done with the delivered secrets: redact them now.
    pub async fn finish(
        &self,
        guild: GuildId,
        id: &ApplicationId,
        actor: Actor,
    ) -> ServiceResult<Application> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let app = self.load_app(&mut tx, guild, id).await?;
        if app.owner_id != actor.user_id {
            return Err(ServiceError::NotOwner);
        }
        tx.hasten_redactions(id, now).await?;
        let summary = format!("finished setting up {}", quoted(&app.details.name));
        record_event(
            &mut tx,
            &app,
            Some(&actor),
            AuditKind::Finished,
            summary,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(app)
    }

    /// Stops the application's keys from working, now. Its owner or an approver.
    pub async fn revoke(
        &self,
        guild: GuildId,
        id: &ApplicationId,
        actor: Actor,
    ) -> ServiceResult<Application> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut app = self.load_app(&mut tx, guild, id).await?;
        if app.owner_id != actor.user_id && !actor.is_approver {
            return Err(ServiceError::NotOwner);
        }
        self.transition(&mut tx, &mut app, Transition::Revoke, now)
            .await?;
        tx.revoke_api_keys(id, now).await?;
        let summary = format!("revoked {}", quoted(&app.details.name));
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

    pub async fn app(&self, guild: GuildId, id: &ApplicationId) -> ServiceResult<Application> {
        let mut tx = self.store.read().await?;
        let app = self.load_app(&mut tx, guild, id).await?;
        tx.rollback().await?;
        Ok(app)
    }

    /// The keys (hashes and standing only) of an application the caller
    /// already loaded for its guild, newest first.
    pub async fn api_keys(&self, app: &Application) -> ServiceResult<Vec<ApiKeyRecord>> {
        let mut tx = self.store.read().await?;
        let keys = tx.api_keys_of(&app.id).await?;
        tx.rollback().await?;
        Ok(keys)
    }

    /// The guild's live application with this name, ignoring case.
    pub async fn app_by_name(&self, guild: GuildId, name: &str) -> ServiceResult<Application> {
        let mut tx = self.store.read().await?;
        let app = tx.app_by_name_key(guild, &name_key(name)).await?;
        tx.rollback().await?;
        app.ok_or(ServiceError::AppNotFound)
    }

    pub async fn list_apps(&self, guild: GuildId) -> ServiceResult<Vec<Application>> {
        let mut tx = self.store.read().await?;
        let apps = tx.apps_of_guild(guild).await?;
        tx.rollback().await?;
        Ok(apps)
    }

    pub async fn approval_request(
        &self,
        id: &ApplicationId,
    ) -> ServiceResult<Option<ApprovalRequest>> {
        let mut tx = self.store.read().await?;
        let request = tx.approval_request(id).await?;
        tx.rollback().await?;
        Ok(request)
    }
}
