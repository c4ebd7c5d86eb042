//! Bounded retries of the Discord-facing jobs, and the pausing of channels the bot lost.

use super::{Service, ServiceResult, audit};
use crate::domain::audit::{AuditKind, NewAuditEvent};
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{ChannelId, GuildId, MessageId};
#[cfg(doc)]
use crate::domain::retry::WORK_LIMIT;
use crate::domain::retry::{ChannelLoss, Job, LEASE, PROBE_EVERY, backoff};
use crate::store::{ChannelPause, RetryState};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// When a failed item is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// After its backoff.
    Backoff,
    /// After its backoff, and no sooner than this (a 429).
    AtLeast(std::time::Duration),
    /// At the next probe: what it needs is out of the bot's hands.
    Probe,
}

impl Retry {
    /// When an item that has now failed `failures` times is tried again.
    pub fn at(self, now: DateTime<Utc>, failures: u32) -> DateTime<Utc> {
        let wait = match self {
            Self::Backoff => backoff(failures),
            Self::AtLeast(floor) => {
                backoff(failures).max(TimeDelta::from_std(floor).unwrap_or(TimeDelta::MAX))
            }
            Self::Probe => PROBE_EVERY,
        };
        now.checked_add_signed(wait).unwrap_or(now + PROBE_EVERY)
    }
}

/// What a worker reads once per pass to know which of its items it may try.
#[derive(Debug)]
pub struct RetryGate {
    now: DateTime<Utc>,
    retries: HashMap<String, RetryState>,
    pauses: HashMap<ChannelId, ChannelPause>,
    /// Paused channels already probed this pass: one item probes, the rest wait.
    probed: HashSet<ChannelId>,
}

impl RetryGate {
    /// Whether to try the item now: its own backoff is over, and the channel
    /// it goes to (if any) is not paused, or is due a probe that no other
    /// item of this pass made.
    pub fn may_try(&mut self, item: &str, channel: Option<ChannelId>) -> bool {
        if self
            .retries
            .get(item)
            .is_some_and(|r| r.next_attempt_at > self.now)
        {
            return false;
        }
        match channel.and_then(|c| self.pauses.get(&c)) {
            None => true,
            Some(p) if p.next_probe_at <= self.now && self.probed.insert(p.channel) => true,
            Some(_) => false,
        }
    }

    /// The channel is paused (Discord refused the bot there).
    pub fn paused(&self, channel: ChannelId) -> Option<&ChannelPause> {
        self.pauses.get(&channel)
    }

    /// Whether the item's person was told of its hold already.
    pub fn alerted(&self, item: &str) -> bool {
        self.retries.get(item).is_some_and(|r| r.alerted)
    }

    /// Failed tries of the item so far.
    pub fn failures(&self, item: &str) -> u32 {
        self.retries.get(item).map_or(0, |r| r.failures)
    }

    /// Marks the channel refused for the rest of the pass, so items after the
    /// one that found out do not try it too.
    pub fn refused(&mut self, pause: ChannelPause) {
        self.probed.insert(pause.channel);
        self.pauses.insert(pause.channel, pause);
    }
}

/// What a channel is to the guild, for the alert about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelUse {
    Approvals,
    Audit,
    /// The channel a Reveal button or other note for one member goes to.
    Origin,
}

impl ChannelUse {
    fn label(self) -> &'static str {
        match self {
            Self::Approvals => "approvals channel",
            Self::Audit => "audit channel",
            Self::Origin => "channel",
        }
    }
}

/// An item of a background job, which one process at a time does.
#[derive(Debug, Clone, Copy)]
pub enum Claim<'a> {
    /// Posting, delivering or reminding a request.
    Request(Job, &'a ApplicationId),
    /// Redacting a DM.
    Redaction(ChannelId, MessageId),
}

/// An item this process claimed, until `until`.
#[derive(Debug)]
pub struct Lease<'a> {
    claim: Claim<'a>,
    until: DateTime<Utc>,
}

impl Service {
    /// Claims the item for [`LEASE`]; None when another process holds it or
    /// it needs doing no more. The work must end within [`WORK_LIMIT`]
    /// (`runtime::claimed` sees to it), so no lease lapses under a live
    /// worker; a process that dies holding one has it taken over when it
    /// lapses.
    pub async fn claim<'a>(&self, claim: Claim<'a>) -> ServiceResult<Option<Lease<'a>>> {
        let now = self.clock.now();
        let until = now + LEASE;
        let mut tx = self.store.begin().await?;
        let claimed = match claim {
            Claim::Request(job, app) => tx.claim_request(job, app, now, until).await?,
            Claim::Redaction(channel, message) => {
                tx.claim_redaction(channel, message, now, until).await?
            }
        };
        tx.commit().await?;
        Ok(claimed.then_some(Lease { claim, until }))
    }

    /// Ends the lease, unless it lapsed and another process holds the item
    /// now: the lease's end is the holder's token. With `hold` (a 429), the
    /// item stays leased that long, so no process tries it sooner.
    pub async fn release(&self, lease: Lease<'_>, hold: Option<Duration>) -> ServiceResult<()> {
        let hold = hold
            .and_then(|d| TimeDelta::from_std(d).ok())
            .map(|d| self.clock.now() + d);
        let mut tx = self.store.begin().await?;
        match lease.claim {
            Claim::Request(_, app) => tx.release_request(app, lease.until, hold).await?,
            Claim::Redaction(channel, message) => {
                tx.release_redaction(channel, message, lease.until, hold)
                    .await?
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The gate for one pass of `job`.
    pub async fn retry_gate(&self, job: Job) -> ServiceResult<RetryGate> {
        let mut tx = self.store.read().await?;
        let retries = tx.retries(job).await?;
        let pauses = tx.channel_pauses().await?;
        tx.rollback().await?;
        Ok(RetryGate {
            now: self.clock.now(),
            retries,
            pauses,
            probed: HashSet::new(),
        })
    }

    /// The item went through: its schedule goes, and the channel it went to
    /// (a probe's) is usable again.
    pub async fn job_succeeded(
        &self,
        gate: &mut RetryGate,
        job: Job,
        item: &str,
        channel: Option<ChannelId>,
    ) -> ServiceResult<()> {
        let had_retry = gate.retries.remove(item).is_some();
        let paused = channel.filter(|c| gate.pauses.remove(c).is_some());
        if !had_retry && paused.is_none() {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        tx.clear_retry(job, item).await?;
        if let Some(c) = paused {
            tx.unpause_channels(&[c]).await?;
            tracing::info!(channel = %c, "a paused channel works again; its queue resumes");
        }
        tx.commit().await?;
        Ok(())
    }

    /// The item failed for a reason of its own. Returns when it is next tried.
    pub async fn job_failed(
        &self,
        gate: &RetryGate,
        job: Job,
        item: &str,
        retry: Retry,
    ) -> ServiceResult<DateTime<Utc>> {
        let failures = gate.failures(item).saturating_add(1);
        let next = retry.at(self.clock.now(), failures);
        let mut tx = self.store.begin().await?;
        tx.record_failure(job, item, failures, next).await?;
        tx.commit().await?;
        Ok(next)
    }

    /// The item is gone (withdrawn, decided): its schedule goes with it.
    pub async fn job_dropped(&self, job: Job, item: &str) -> ServiceResult<()> {
        let mut tx = self.store.begin().await?;
        tx.clear_retry(job, item).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Discord refused the bot in `channel`: everything bound for it waits
    /// for a probe every [`PROBE_EVERY`] or a `/keygate setup` naming it. The
    /// first refusal is an audit event, posted unless the audit channel is
    /// the one refused (then it waits in the queue with the rest). Returns
    /// whether this refusal paused it.
    pub async fn channel_refused(
        &self,
        gate: &mut RetryGate,
        guild: GuildId,
        channel: ChannelId,
        loss: ChannelLoss,
        used_as: ChannelUse,
    ) -> ServiceResult<bool> {
        let now = self.clock.now();
        let next_probe = now + PROBE_EVERY;
        let mut tx = self.store.begin().await?;
        let newly = tx
            .pause_channel(guild, channel, loss, now, next_probe)
            .await?;
        if newly && used_as != ChannelUse::Audit {
            let event = NewAuditEvent {
                guild_id: guild,
                app_id: None,
                actor_id: None,
                kind: AuditKind::ChannelPaused,
                summary: format!(
                    "keygate cannot post in the {} <#{channel}>: {}. What goes there waits; keygate tries again every {} minutes, and at once when /keygate setup names a channel.",
                    used_as.label(),
                    loss.explain(),
                    PROBE_EVERY.num_minutes()
                ),
            };
            audit(&mut tx, event, now).await?;
        }
        tx.commit().await?;
        gate.refused(ChannelPause {
            channel,
            guild,
            loss,
            paused_at: now,
            next_probe_at: next_probe,
        });
        if newly {
            tracing::warn!(guild = %guild, channel = %channel, code = loss.code(), "Discord refused the bot in a channel; its queue is paused");
        }
        Ok(newly)
    }

    /// Marks the item's person told of the hold; true the first time only.
    pub async fn alert_once(
        &self,
        gate: &mut RetryGate,
        job: Job,
        item: &str,
    ) -> ServiceResult<bool> {
        if gate.alerted(item) {
            return Ok(false);
        }
        let entry = gate.retries.entry(item.to_owned()).or_insert(RetryState {
            failures: 0,
            next_attempt_at: gate.now,
            alerted: true,
        });
        entry.alerted = true;
        let mut tx = self.store.begin().await?;
        let first = tx.mark_alerted(job, item, self.clock.now()).await?;
        tx.commit().await?;
        Ok(first)
    }

    /// Records, once per item, that approved credentials can reach their
    /// requester neither by DM nor in `channel`: the audit channel asks for
    /// their DMs to be opened. True the first time.
    pub async fn delivery_held(
        &self,
        app: &crate::domain::application::Application,
        channel: Option<ChannelId>,
    ) -> ServiceResult<bool> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let first = tx.mark_alerted(Job::Deliver, app.id.as_str(), now).await?;
        if first {
            let place = channel.map_or_else(
                || "there is no channel to post a Reveal button in".to_owned(),
                |c| format!("keygate cannot post a Reveal button in <#{c}>"),
            );
            let summary = format!(
                "{} was approved, but <@{}> has closed their DMs and {place}. They must open their DMs to this server (Privacy Settings → Direct Messages); keygate tries again every few minutes.",
                crate::domain::application::quoted(&app.details.name),
                app.owner_id
            );
            super::apps::record_event(&mut tx, app, None, AuditKind::DeliveryHeld, summary, now)
                .await?;
        }
        tx.commit().await?;
        Ok(first)
    }
}
