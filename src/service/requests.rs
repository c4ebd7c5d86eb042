//! Pending approval requests over time: their message, reminders and expiry.

use super::{Service, ServiceResult, audit};
use crate::domain::application::quoted;
use crate::domain::application::{AppStatus, Application, Transition};
use crate::domain::approval::{ApprovalRequest, RequestStatus};
use crate::domain::audit::{AuditKind, NewAuditEvent};
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{ChannelId, MessageId};

impl Service {
    /// Remembers where the request was posted, to edit it as it is decided.
    pub async fn record_request_message(
        &self,
        app: &ApplicationId,
        channel: ChannelId,
        message: MessageId,
    ) -> ServiceResult<()> {
        let mut tx = self.store.begin().await?;
        tx.set_request_message(app, channel, message).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Expires every pending request past its time, each in its own
    /// transaction; a request decided meanwhile is left alone.
    pub async fn expire_due_requests(&self) -> ServiceResult<Vec<(Application, ApprovalRequest)>> {
        let now = self.clock.now();
        let due = {
            // One statement: no transaction around it.
            let mut tx = self.store.single(false).await?;
            let ids = tx.expired_requests(now).await?;
            tx.rollback().await?;
            ids
        };
        let mut expired = Vec::new();
        for id in due {
            let mut tx = self.store.begin().await?;
            // One process expires it; the others pass it over.
            let Some(request) = tx.try_lock_approval_request(&id, now).await? else {
                continue;
            };
            if request.status != RequestStatus::Pending || request.expires_at > now {
                tx.rollback().await?;
                continue;
            }
            let Some(mut app) = tx.app(request.guild_id, &id).await? else {
                continue;
            };
            tx.close_approval_request(&id, RequestStatus::Expired, None, None, now)
                .await?;
            let to = app.status.apply(Transition::Expire)?;
            if !tx
                .transition_app(&id, AppStatus::PendingApproval, to, now)
                .await?
            {
                tx.rollback().await?;
                continue;
            }
            app.status = to;
            let event = NewAuditEvent {
                guild_id: app.guild_id,
                app_id: Some(id.clone()),
                actor_id: None,
                kind: AuditKind::Expired,
                summary: format!(
                    "the request for {} expired without a decision",
                    quoted(&app.details.name)
                ),
            };
            audit(&mut tx, event, now).await?;
            let request = tx.approval_request(&id).await?.unwrap_or(request);
            tx.commit().await?;
            expired.push((app, request));
        }
        Ok(expired)
    }

    /// Pending requests at half their lifetime whose approvers were not
    /// reminded yet. A reminder is marked sent only once it was posted
    /// ([`Service::reminder_sent`]); its post carries a nonce, so two
    /// processes that both post it show it once.
    pub async fn due_reminders(&self) -> ServiceResult<Vec<(Application, ApprovalRequest)>> {
        let now = self.clock.now();
        let mut tx = self.store.read().await?;
        let mut reminders = Vec::new();
        for id in tx.requests_to_remind(now).await? {
            if let Some(r) = tx.approval_request(&id).await?
                && let Some(app) = tx.app(r.guild_id, &id).await?
            {
                reminders.push((app, r));
            }
        }
        tx.rollback().await?;
        Ok(reminders)
    }

    /// The reminder was posted (or has nowhere to go).
    pub async fn reminder_sent(&self, app: &ApplicationId) -> ServiceResult<()> {
        let mut tx = self.store.begin().await?;
        tx.mark_reminded(app, self.clock.now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Requests and approvals whose Discord side did not happen (a failed
    /// post, a crash): what the approvals worker retries. Only those older
    /// than the policy's grace, so the interaction that made them finishes first.
    pub async fn stalled_requests(&self) -> ServiceResult<Stalled> {
        let before = self.clock.now() - self.policy.stall_grace;
        let mut tx = self.store.read().await?;
        let mut stalled = Stalled::default();
        for id in tx.unposted_requests(before).await? {
            if let Some(r) = tx.approval_request(&id).await?
                && let Some(app) = tx.app(r.guild_id, &id).await?
            {
                stalled.unposted.push((app, r));
            }
        }
        for id in tx.undelivered_approvals(before).await? {
            if let Some(r) = tx.approval_request(&id).await?
                && let Some(app) = tx.app(r.guild_id, &id).await?
            {
                stalled.undelivered.push(app);
            }
        }
        tx.rollback().await?;
        Ok(stalled)
    }

    /// The approved credentials reached the requester (by DM, or a Reveal button).
    pub async fn approval_delivered(&self, app: &ApplicationId) -> ServiceResult<()> {
        let mut tx = self.store.begin().await?;
        tx.mark_delivered(app, self.clock.now()).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// See [`Service::stalled_requests`].
#[derive(Debug, Default)]
pub struct Stalled {
    pub unposted: Vec<(Application, ApprovalRequest)>,
    pub undelivered: Vec<Application>,
}
