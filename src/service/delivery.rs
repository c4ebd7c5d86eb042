//! Delivery bookkeeping: DMs that carried a secret and when to redact them.

use super::apps::record_event;
use super::{Actor, Service, ServiceError, ServiceResult, audit};
use crate::domain::application::Application;
use crate::domain::application::quoted;
use crate::domain::audit::{AuditKind, NewAuditEvent};
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{ChannelId, InteractionId, MessageId, UserId};
use crate::domain::retry::Job;
use crate::store::DmRedaction;
use chrono::{DateTime, Utc};

/// A redaction's item in the redaction worker's retries.
pub fn redaction_item(channel: ChannelId, message: MessageId) -> String {
    format!("{channel}:{message}")
}

impl Service {
    /// One application by its ID, whatever the guild: a DM button knows only the app.
    pub async fn app_by_id(&self, id: &ApplicationId) -> ServiceResult<Application> {
        // No transaction: the app row is read by one statement, and its URLs
        // and scopes, read after it, never change once inserted.
        let mut tx = self.store.single(false).await?;
        let app = tx.app_by_id(id).await?;
        tx.rollback().await?;
        app.ok_or(ServiceError::AppNotFound)
    }

    /// Records a DM holding a secret, to redact once `lifetime` (the guild's
    /// DM lifetime when the secret was issued, which its DM states) is over,
    /// or at Finish; the record outlives a restart.
    pub async fn schedule_redaction(
        &self,
        app: &Application,
        user: UserId,
        (channel, message): (ChannelId, MessageId),
        lifetime: chrono::TimeDelta,
    ) -> ServiceResult<DmRedaction> {
        let redaction = DmRedaction {
            channel_id: channel,
            message_id: message,
            app_id: app.id.clone(),
            user_id: user,
            due_at: self.clock.now() + lifetime,
            answer_of: None,
            carries: None,
        };
        // One INSERT (an upsert): no transaction around it.
        let mut write = self.store.single(true).await?;
        write.schedule_redaction(&redaction).await?;
        write.commit().await?;
        Ok(redaction)
    }

    /// The key the answer of `interaction` carried was shown, in `message`:
    /// its redaction now names that message, and the key counts as shown.
    pub async fn key_answer_shown(
        &self,
        (channel, interaction): (ChannelId, InteractionId),
        message: MessageId,
        key_id: &str,
    ) -> ServiceResult<()> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        // Found once; a row the worker closed meanwhile is re-keyed all the same.
        if tx.answer_found(channel, interaction, message).await? {
            // A lookup that found no answer yet backed off under the old key.
            let old = redaction_item(channel, MessageId(interaction.0));
            tx.clear_retry(Job::Redact, &old).await?;
        }
        tx.mark_shown(key_id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The answer of `interaction` never got its key (a deferral whose edit
    /// was never sent): its key is not in the DM, and may be issued again
    /// once it counts as lost.
    pub async fn answer_never_made(
        &self,
        (channel, interaction): (ChannelId, InteractionId),
    ) -> ServiceResult<()> {
        // Its row is keyed by the interaction until its message is known.
        self.close_unredacted(channel, MessageId(interaction.0), None)
            .await
    }

    /// A scheduled DM with nothing left to redact (no answer was ever made
    /// there): done, with no audit event, since nothing was removed.
    pub async fn redaction_moot(&self, r: &DmRedaction) -> ServiceResult<()> {
        self.close_unredacted(r.channel_id, r.message_id, Some(r.due_at))
            .await
    }

    /// Marks a scheduled DM done without the audit event of a redaction.
    async fn close_unredacted(
        &self,
        channel: ChannelId,
        message: MessageId,
        read_due: Option<DateTime<Utc>>,
    ) -> ServiceResult<()> {
        let now = self.clock.now();
        // One UPDATE: no transaction around it.
        let mut write = self.store.single(true).await?;
        write.mark_redacted(channel, message, read_due, now).await?;
        write.commit().await?;
        Ok(())
    }

    pub async fn due_redactions(&self) -> ServiceResult<Vec<DmRedaction>> {
        // One statement: no transaction around it.
        let mut tx = self.store.single(false).await?;
        let due = tx.due_redactions(self.clock.now()).await?;
        tx.rollback().await?;
        Ok(due)
    }

    /// Marks the DM redacted. False if it already was (Finish and the
    /// scheduler may race): the audit event is written once. `read_due` is
    /// the schedule the caller read before its edit (the worker's); a DM
    /// rescheduled since stays scheduled.
    pub async fn complete_redaction(
        &self,
        app: &Application,
        channel: ChannelId,
        message: MessageId,
        read_due: Option<DateTime<Utc>>,
    ) -> ServiceResult<bool> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if !tx.mark_redacted(channel, message, read_due, now).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        audit(&mut tx, redacted_event(app), now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The app whose Finish `actor` pressed, read without taking the write
    /// lock: Finish's answer, the redacted message, needs it before
    /// anything is written. By its ID alone, as a DM's button knows it;
    /// its owner (which never changes) is who may press it.
    pub async fn finishing(&self, id: &ApplicationId, actor: Actor) -> ServiceResult<Application> {
        let app = self.app_by_id(id).await?;
        if app.owner_id != actor.user_id {
            return Err(ServiceError::NotOwner);
        }
        Ok(app)
    }

    /// The requester is done with the delivered secrets: every DM of the
    /// app still holding one falls due now. `redacted` is the pressed
    /// message when Finish's own edit already removed what it held: it is
    /// marked done in the same write, so the worker leaves it.
    pub async fn finish(
        &self,
        app: &Application,
        actor: Actor,
        redacted: Option<(ChannelId, MessageId)>,
    ) -> ServiceResult<()> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        tx.hasten_redactions(&app.id, now).await?;
        let summary = format!("finished setting up {}", quoted(&app.details.name));
        record_event(
            &mut tx,
            app,
            Some(&actor),
            AuditKind::Finished,
            summary,
            now,
        )
        .await?;
        if let Some((channel, message)) = redacted
            && tx.mark_redacted(channel, message, None, now).await?
        {
            audit(&mut tx, redacted_event(app), now).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// What a redaction's audit event says: the bot removed the secrets, so no actor.
fn redacted_event(app: &Application) -> NewAuditEvent {
    NewAuditEvent {
        guild_id: app.guild_id,
        app_id: Some(app.id.clone()),
        actor_id: None,
        kind: AuditKind::DmRedacted,
        summary: format!(
            "removed the delivered secrets of {} from a DM",
            quoted(&app.details.name)
        ),
    }
}
