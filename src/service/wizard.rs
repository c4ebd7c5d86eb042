//! Wizard drafts: start, advance, cancel, submit.

use super::{Service, ServiceError, ServiceResult, audit};
use crate::domain::application::quoted;
use crate::domain::application::{AppStatus, Application, LoginUserType, SourceApp, Transition};
use crate::domain::approval::{ApprovalRequest, RequestStatus};
use crate::domain::audit::{AuditKind, NewAuditEvent};
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{ChannelId, GuildId, UserId};
use crate::domain::validation::{
    AppForm, Field, ValidationErrors, name_key, validate_form, validate_scopes,
};
use crate::domain::wizard::{SavedDraft, WizardAction, WizardDraft};
use crate::store::{StoreError, Tx};
use rand::distr::{Alphanumeric, SampleString};

use super::apps::{IssuedCredentials, Submitted};

/// What `/app create` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftStart {
    /// No open draft: the id a new one will have. Nothing is stored yet; the
    /// draft is written when its form is submitted (`create_draft`), since the
    /// form is a modal, which must be the command's first answer.
    New(String),
    /// The user already has an open draft here: offer Resume or Start over.
    Existing(Box<SavedDraft>),
}

/// What the user did on a step, as typed: checked before it reaches the draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftInput {
    Details(AppForm),
    UserType(LoginUserType),
    SourceApp(SourceApp),
    Scopes(Vec<String>),
    Next,
    Back,
}

/// A fresh draft id, made in memory: it is stored only when the form it
/// names is submitted.
pub fn new_draft_id() -> String {
    // Only identifies the draft; the owner check, not secrecy, guards it.
    format!(
        "d{}",
        Alphanumeric.sample_string(&mut rand::rng(), DRAFT_ID_RANDOM)
    )
}

const DRAFT_ID_RANDOM: usize = 15;

/// The shape `new_draft_id` makes. An id from a submitted form is stored as
/// a new draft only when it has it, so nobody picks ids of their own.
fn is_draft_id(id: &str) -> bool {
    id.len() == 1 + DRAFT_ID_RANDOM
        && id.starts_with('d')
        && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn name_taken(name: &str) -> ValidationErrors {
    ValidationErrors::single(
        Field::Name,
        format!(
            "an application named {} already exists in this server",
            quoted(name)
        ),
    )
}

impl Service {
    /// The user's open draft, or the id for a new one. Reads only: the
    /// answer to `/app create` is a modal, which cannot follow a deferral, so
    /// nothing is written before it. An expired draft counts as none; the new
    /// draft's creation drops it.
    pub async fn open_draft(&self, guild: GuildId, user: UserId) -> ServiceResult<DraftStart> {
        // One statement: no transaction around it.
        let mut tx = self.store.single(false).await?;
        let existing = tx.draft_for_user(guild, user).await?;
        tx.rollback().await?;
        Ok(match existing {
            Some(existing) if existing.expires_at > self.clock.now() => {
                DraftStart::Existing(Box::new(existing))
            }
            _ => DraftStart::New(new_draft_id()),
        })
    }

    /// The form of a draft that was offered but not stored was submitted:
    /// stores the draft with it, in one transaction, for `actor` alone.
    /// `replacing` is the draft that Start over offered to replace: it is
    /// dropped now, not when the new form was opened, so a dismissed form
    /// keeps it. Any other open draft of the user's stays and the form is
    /// refused (`DraftExists`), so a member never has two; when two forms are
    /// submitted at once, the store's one-draft-per-user rule lets one in.
    /// An id that is already stored is an edit of that draft, its owner's only.
    pub async fn create_draft(
        &self,
        guild: GuildId,
        id: &str,
        actor: UserId,
        form: AppForm,
        replacing: Option<&str>,
    ) -> ServiceResult<SavedDraft> {
        if !is_draft_id(id) {
            return Err(ServiceError::DraftNotFound);
        }
        let now = self.clock.now();
        // The usual case, a member's first draft here, in one write: checked
        // without the write lock, stored by one INSERT, whose uniqueness
        // rules catch what changed in between. Anything else (an edit, a
        // draft to replace, or such a change) is decided in a transaction.
        let mut read = self.store.single(false).await?;
        let fresh = self
            .fresh_draft(&mut read, guild, id, actor, &form, now)
            .await;
        read.rollback().await?;
        if let Some(saved) = fresh? {
            let mut write = self.store.single(true).await?;
            match write.insert_draft(&saved).await {
                Ok(()) => {
                    write.commit().await?;
                    return Ok(saved);
                }
                Err(StoreError::Conflict("draft")) => write.rollback().await?,
                Err(other) => return Err(other.into()),
            }
        }
        let mut tx = self.store.begin().await?;
        if tx.draft_by_id(id).await?.is_some() {
            // A retried submit, or the form reopened after it was stored.
            let saved = self
                .advance_in(&mut tx, id, actor, DraftInput::Details(form))
                .await?;
            tx.commit().await?;
            return Ok(saved);
        }
        let mut draft = WizardDraft::new();
        draft.apply(self.details_action(&mut tx, guild, form).await?)?;
        if let Some(current) = tx.draft_for_user(guild, actor).await? {
            let replaceable = current.expires_at <= now || replacing == Some(current.id.as_str());
            if !replaceable {
                return Err(ServiceError::DraftExists);
            }
            tx.delete_draft(&current.id).await?;
        }
        let saved = self.new_saved_draft(id, guild, actor, draft, now);
        match tx.insert_draft(&saved).await {
            // Another submit of this user's got in first (the unique
            // (guild, user) or the id): theirs stands.
            Err(StoreError::Conflict("draft")) => return Err(ServiceError::DraftExists),
            other => other?,
        }
        tx.commit().await?;
        Ok(saved)
    }

    /// The new draft `create_draft` stores, when nothing stands in its way:
    /// no draft of this id yet and no open draft of the member's here. None
    /// otherwise; an error for a refused form.
    async fn fresh_draft<M>(
        &self,
        tx: &mut Tx<M>,
        guild: GuildId,
        id: &str,
        actor: UserId,
        form: &AppForm,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ServiceResult<Option<SavedDraft>> {
        if tx.draft_by_id(id).await?.is_some() {
            return Ok(None);
        }
        let mut draft = WizardDraft::new();
        draft.apply(self.details_action(tx, guild, form.clone()).await?)?;
        if tx.draft_for_user(guild, actor).await?.is_some() {
            return Ok(None);
        }
        Ok(Some(self.new_saved_draft(id, guild, actor, draft, now)))
    }

    /// A draft as first stored: it lives the policy's draft lifetime.
    fn new_saved_draft(
        &self,
        id: &str,
        guild: GuildId,
        actor: UserId,
        draft: WizardDraft,
        now: chrono::DateTime<chrono::Utc>,
    ) -> SavedDraft {
        SavedDraft {
            id: id.to_owned(),
            guild_id: guild,
            user_id: actor,
            draft,
            created_at: now,
            expires_at: now + self.policy.draft_ttl,
        }
    }

    /// Loads a draft for its owner; anyone else is refused.
    async fn owned_draft<M>(
        &self,
        tx: &mut Tx<M>,
        id: &str,
        actor: UserId,
    ) -> ServiceResult<SavedDraft> {
        self.owned(tx.draft_by_id(id).await?, actor)
    }

    /// The draft found, for its owner; anyone else is refused, and an
    /// expired one is gone.
    fn owned(&self, draft: Option<SavedDraft>, actor: UserId) -> ServiceResult<SavedDraft> {
        let draft = draft.ok_or(ServiceError::DraftNotFound)?;
        if draft.user_id != actor {
            return Err(ServiceError::NotYourDraft);
        }
        if draft.expires_at <= self.clock.now() {
            return Err(ServiceError::DraftNotFound);
        }
        Ok(draft)
    }

    pub async fn draft(&self, id: &str, actor: UserId) -> ServiceResult<SavedDraft> {
        // One statement: no transaction around it.
        let mut tx = self.store.single(false).await?;
        let draft = self.owned_draft(&mut tx, id, actor).await?;
        tx.rollback().await?;
        Ok(draft)
    }

    /// Applies one step's input and saves the draft. Nothing is saved when the
    /// input is refused.
    ///
    /// One write, outside any transaction: the draft is read (and the input
    /// checked) without the write lock, then saved by a single UPDATE that
    /// applies only if the draft is still as read. If it changed in between
    /// (a concurrent step of the same draft), the step is done again inside
    /// a transaction, as it always was before.
    pub async fn advance_draft(
        &self,
        id: &str,
        actor: UserId,
        input: DraftInput,
    ) -> ServiceResult<SavedDraft> {
        let now = self.clock.now();
        let mut read = self.store.single(false).await?;
        let before = self.owned_draft(&mut read, id, actor).await?;
        let saved = self
            .advanced(&mut read, before.clone(), input.clone(), now)
            .await;
        read.rollback().await?;
        let saved = saved?;
        let mut write = self.store.single(true).await?;
        let replaced = write
            .replace_draft(
                id,
                actor,
                &before.draft,
                &saved.draft,
                now,
                saved.expires_at,
            )
            .await?;
        write.commit().await?;
        if replaced {
            return Ok(saved);
        }
        let mut tx = self.store.begin().await?;
        let saved = self.advance_in(&mut tx, id, actor, input).await?;
        tx.commit().await?;
        Ok(saved)
    }

    /// `advance_draft` inside the caller's transaction.
    async fn advance_in(
        &self,
        tx: &mut Tx,
        id: &str,
        actor: UserId,
        input: DraftInput,
    ) -> ServiceResult<SavedDraft> {
        let now = self.clock.now();
        let saved = self.owned_draft(tx, id, actor).await?;
        let saved = self.advanced(tx, saved, input, now).await?;
        tx.update_draft(&saved.id, &saved.draft, now, saved.expires_at)
            .await?;
        Ok(saved)
    }

    /// The draft with the step's input applied, not saved; reads only (the
    /// name's availability).
    async fn advanced<M>(
        &self,
        tx: &mut Tx<M>,
        mut saved: SavedDraft,
        input: DraftInput,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ServiceResult<SavedDraft> {
        let action = match input {
            DraftInput::Details(form) => self.details_action(tx, saved.guild_id, form).await?,
            DraftInput::UserType(t) => WizardAction::SetUserType(t),
            DraftInput::SourceApp(s) => WizardAction::SetSourceApp(s),
            DraftInput::Scopes(scopes) => {
                WizardAction::SetScopes(validate_scopes(&scopes, &self.catalog)?)
            }
            DraftInput::Next => WizardAction::Next,
            DraftInput::Back => WizardAction::Back,
        };
        saved.draft.apply(action)?;
        saved.expires_at = now + self.policy.draft_ttl;
        Ok(saved)
    }

    /// The form, checked: its fields, and a name free in the guild.
    async fn details_action<M>(
        &self,
        tx: &mut Tx<M>,
        guild: GuildId,
        form: AppForm,
    ) -> ServiceResult<WizardAction> {
        let details = validate_form(&form)?;
        if tx.app_name_taken(guild, &name_key(&details.name)).await? {
            return Err(name_taken(&details.name).into());
        }
        Ok(WizardAction::SetDetails {
            form: Box::new(form),
            details: Box::new(details),
        })
    }

    pub async fn cancel_draft(&self, id: &str, actor: UserId) -> ServiceResult<()> {
        let mut tx = self.store.begin().await?;
        let draft = self.owned_draft(&mut tx, id, actor).await?;
        tx.delete_draft(&draft.id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Turns the reviewed draft into an application: approved at once when the
    /// guild requires no approval, else pending with an approval request.
    pub async fn submit_draft(
        &self,
        id: &str,
        actor: UserId,
        origin: Option<ChannelId>,
    ) -> ServiceResult<Submitted> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        // Taken in one statement, as it is when it goes, with no read under
        // SQLite's single writer: an edit that lands first is submitted, and
        // a second Submit of it finds it gone. A refusal drops the
        // transaction, which puts it back. The settings are read inside: the
        // approval rule is the one in force when the application is stored.
        let saved = self.owned(tx.take_draft(id).await?, actor)?;
        let new = saved.draft.complete()?;
        // The catalog may have changed since the scope step (a restart with
        // another SCOPE_CATALOG): check again.
        let scopes = validate_scopes(&new.scopes, &self.catalog)?;
        let settings = tx.guild_settings(saved.guild_id).await?;
        let status = AppStatus::Draft.apply(Transition::Submit {
            approvals_required: settings.approvals_required,
        })?;
        let app = Application {
            id: ApplicationId::generate(),
            guild_id: saved.guild_id,
            owner_id: actor,
            details: new.details,
            user_type: new.user_type,
            source_app: new.source_app,
            scopes,
            status,
            key_prefix: None,
            created_at: now,
            updated_at: now,
        };
        match tx.insert_app(&app, &name_key(&app.details.name)).await {
            Err(StoreError::Conflict("name")) => return Err(name_taken(&app.details.name).into()),
            other => other?,
        }
        let request = if status == AppStatus::PendingApproval {
            let request = ApprovalRequest {
                app_id: app.id.clone(),
                guild_id: app.guild_id,
                requester_id: actor,
                approvals_required: settings.approvals_required,
                status: RequestStatus::Pending,
                approvers: Vec::new(),
                created_at: now,
                expires_at: now + settings.request_expiry,
                decided_by: None,
                deny_reason: None,
                origin_channel: origin,
                message: None,
                reminded_at: None,
            };
            tx.insert_approval_request(&request).await?;
            Some(request)
        } else {
            None
        };
        let summary = match &request {
            Some(r) => format!(
                "submitted {} for approval ({} needed)",
                quoted(&app.details.name),
                r.approvals_required
            ),
            None => format!(
                "submitted {}; approved (no approval required)",
                quoted(&app.details.name)
            ),
        };
        audit(
            &mut tx,
            NewAuditEvent {
                guild_id: app.guild_id,
                app_id: Some(app.id.clone()),
                actor_id: Some(actor),
                kind: AuditKind::DraftSubmitted,
                summary,
            },
            now,
        )
        .await?;
        let credentials = if request.is_none() {
            let (secret, secret_id) = super::apps::issue_secret(&mut tx, &app, now).await?;
            Some(IssuedCredentials {
                app: app.clone(),
                secret,
                secret_id,
                dm_lifetime: settings.dm_lifetime,
            })
        } else {
            None
        };
        tx.commit().await?;
        if credentials.is_some() {
            self.verify.invalidate_app(&app.id);
        }
        Ok(Submitted {
            app,
            request,
            credentials,
        })
    }

    /// Drops drafts nobody touched within their lifetime.
    pub async fn purge_expired_drafts(&self) -> ServiceResult<u64> {
        let mut tx = self.store.begin().await?;
        let n = tx.delete_expired_drafts(self.clock.now()).await?;
        // Housekeeping of the same kind, on the same slow tick.
        tx.purge_settled_retries().await?;
        tx.commit().await?;
        Ok(n)
    }
}
