//! The audit log as the Discord layer reads it: the outbox to post, and history.

use super::{Retry, Service, ServiceResult};
use crate::domain::application::Application;
use crate::domain::audit::AuditEvent;
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{ChannelId, GuildId, MessageId};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{HashMap, HashSet};

/// How long a poster holds an event it is posting before another may try.
pub const POST_LEASE: TimeDelta = TimeDelta::seconds(30);

/// An audit event ready to post, with what its embed shows.
#[derive(Debug, Clone)]
pub struct AuditPost {
    pub event: AuditEvent,
    pub attempts: u32,
    /// Until when this poster holds the event (what its claim set).
    pub lease_until: DateTime<Utc>,
    /// None: the guild has no audit channel (any more); nothing to post.
    pub channel: Option<ChannelId>,
    pub app: Option<Application>,
    /// The request's message in the approvals channel, to link to.
    pub request_message: Option<(ChannelId, MessageId)>,
}

/// One page of an application's history, newest first.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub events: Vec<AuditEvent>,
    pub page: u32,
    pub has_more: bool,
}

impl Service {
    /// The events to post now, claimed for this poster: per guild, in order,
    /// stopping at the first one that is waiting for a retry.
    pub async fn due_audit_posts(&self, limit: u32) -> ServiceResult<Vec<AuditPost>> {
        let now = self.clock.now();
        // Looked for without the write lock: most passes find nothing.
        let unposted = {
            let mut tx = self.store.read().await?;
            let unposted = tx.unposted_outbox(limit).await?;
            tx.rollback().await?;
            unposted
        };
        if !unposted.iter().any(|e| e.next_attempt_at <= now) {
            return Ok(Vec::new());
        }
        let mut tx = self.store.begin().await?;
        let mut blocked: HashSet<GuildId> = HashSet::new();
        let mut channels: HashMap<GuildId, Option<ChannelId>> = HashMap::new();
        let mut posts = Vec::new();
        for entry in unposted {
            let guild = entry.event.guild_id;
            if blocked.contains(&guild) {
                continue;
            }
            let lease_until = now + POST_LEASE;
            if entry.next_attempt_at > now
                || !tx
                    .claim_audit_post(entry.event.id, now, lease_until)
                    .await?
            {
                blocked.insert(guild);
                continue;
            }
            // Read once per guild and pass, not once per event.
            let channel = match channels.get(&guild) {
                Some(channel) => *channel,
                None => {
                    let channel = tx.guild_settings(guild).await?.audit_channel;
                    channels.insert(guild, channel);
                    channel
                }
            };
            let (app, request_message) = match &entry.event.app_id {
                Some(id) => (
                    tx.app(guild, id).await?,
                    tx.approval_request(id).await?.and_then(|r| r.message),
                ),
                None => (None, None),
            };
            posts.push(AuditPost {
                event: entry.event,
                attempts: entry.attempts,
                lease_until,
                channel,
                app,
                request_message,
            });
        }
        tx.commit().await?;
        Ok(posts)
    }

    pub async fn audit_posted(&self, event_id: i64) -> ServiceResult<bool> {
        let mut tx = self.store.begin().await?;
        let done = tx.mark_audit_posted(event_id, self.clock.now()).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Not tried this pass (an earlier event of its guild failed): due again at once.
    /// Only while this poster's lease (`lease_until`) is the event's still.
    pub async fn release_audit_post(
        &self,
        event_id: i64,
        lease_until: DateTime<Utc>,
    ) -> ServiceResult<()> {
        let mut tx = self.store.begin().await?;
        tx.release_audit_post(event_id, lease_until, self.clock.now())
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Retry later; the guild's later events wait behind it, in order.
    pub async fn audit_post_failed(
        &self,
        event_id: i64,
        attempts: u32,
        lease_until: DateTime<Utc>,
        retry: Retry,
    ) -> ServiceResult<DateTime<Utc>> {
        let next = retry.at(self.clock.now(), attempts.saturating_add(1));
        let mut tx = self.store.begin().await?;
        // Not ours any more (the lease lapsed and another poster took it):
        // its schedule is the other poster's to set.
        tx.defer_audit_post(event_id, lease_until, next).await?;
        tx.commit().await?;
        Ok(next)
    }

    /// One page of the application's audit events, newest first.
    pub async fn history(
        &self,
        guild: GuildId,
        app: &ApplicationId,
        page: u32,
        per_page: u32,
    ) -> ServiceResult<HistoryPage> {
        let mut tx = self.store.read().await?;
        // One extra row tells whether there is a next page.
        let wanted = (page + 1) * per_page + 1;
        let mut events = tx.audit_events(guild, Some(app), wanted).await?;
        tx.rollback().await?;
        let has_more = events.len() as u32 == wanted;
        let start = (page * per_page) as usize;
        let events: Vec<AuditEvent> = events
            .drain(start.min(events.len())..)
            .take(per_page as usize)
            .collect();
        Ok(HistoryPage {
            events,
            page,
            has_more,
        })
    }
}
