//! Retry schedules of background jobs, and channels whose queues are paused.

use super::{StoreResult, Tx, from_ms, on_conn, to_ms};
use crate::domain::ids::{ChannelId, GuildId};
use crate::domain::retry::{ChannelLoss, Job};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

const PAUSES: &str = "channel_pauses";
const RETRIES: &str = "job_retries";

/// A failing item's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryState {
    pub failures: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub alerted: bool,
}

/// A channel the bot may not post in, and when it is next tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelPause {
    pub channel: ChannelId,
    pub guild: GuildId,
    pub loss: ChannelLoss,
    pub paused_at: DateTime<Utc>,
    pub next_probe_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RetryRow {
    item: String,
    failures: i64,
    next_attempt_at: i64,
    alerted_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct PauseRow {
    channel_id: i64,
    guild_id: i64,
    code: i64,
    paused_at: i64,
    next_probe_at: i64,
}

impl<M> Tx<M> {
    /// Every failing item of `job`, by item: the few a worker skips or alerts on.
    pub async fn retries(&mut self, job: Job) -> StoreResult<HashMap<String, RetryState>> {
        let rows: Vec<RetryRow> = on_conn!(self, c => sqlx::query_as(
            "SELECT item, failures, next_attempt_at, alerted_at FROM job_retries WHERE job = $1")
            .bind(job.as_str())
            .fetch_all(&mut *c)
            .await?);
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.item,
                    RetryState {
                        failures: u32::try_from(r.failures).unwrap_or(u32::MAX),
                        next_attempt_at: from_ms(RETRIES, r.next_attempt_at)?,
                        alerted: r.alerted_at.is_some(),
                    },
                ))
            })
            .collect()
    }

    /// Stores the item's failure count and next try, both worked out by the caller.
    pub async fn record_failure(
        &mut self,
        job: Job,
        item: &str,
        failures: u32,
        next: DateTime<Utc>,
    ) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query(
            "INSERT INTO job_retries (job, item, failures, next_attempt_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job, item) DO UPDATE SET failures = excluded.failures, next_attempt_at = excluded.next_attempt_at")
            .bind(job.as_str())
            .bind(item)
            .bind(i64::from(failures))
            .bind(to_ms(next))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Marks the item's person told; false if they were told already.
    pub async fn mark_alerted(
        &mut self,
        job: Job,
        item: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "INSERT INTO job_retries (job, item, failures, next_attempt_at, alerted_at) VALUES ($1, $2, 0, $3, $3) \
             ON CONFLICT (job, item) DO UPDATE SET alerted_at = excluded.alerted_at WHERE job_retries.alerted_at IS NULL")
            .bind(job.as_str())
            .bind(item)
            .bind(to_ms(now))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// The item succeeded (or is gone): its schedule goes.
    pub async fn clear_retry(&mut self, job: Job, item: &str) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query("DELETE FROM job_retries WHERE job = $1 AND item = $2")
            .bind(job.as_str())
            .bind(item)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Every paused channel, by channel.
    pub async fn channel_pauses(&mut self) -> StoreResult<HashMap<ChannelId, ChannelPause>> {
        let rows: Vec<PauseRow> = on_conn!(self, c => sqlx::query_as(
            "SELECT channel_id, guild_id, code, paused_at, next_probe_at FROM channel_pauses")
            .fetch_all(&mut *c)
            .await?);
        rows.into_iter()
            .map(|r| {
                let pause = ChannelPause {
                    channel: ChannelId::from_db(r.channel_id),
                    guild: GuildId::from_db(r.guild_id),
                    loss: ChannelLoss::from_db(r.code),
                    paused_at: from_ms(PAUSES, r.paused_at)?,
                    next_probe_at: from_ms(PAUSES, r.next_probe_at)?,
                };
                Ok((pause.channel, pause))
            })
            .collect()
    }

    /// Pauses the channel; true if it was not paused already (so whoever
    /// must hear of it is told once), else only its next probe moves.
    pub async fn pause_channel(
        &mut self,
        guild: GuildId,
        channel: ChannelId,
        loss: ChannelLoss,
        now: DateTime<Utc>,
        next_probe: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let inserted = on_conn!(self, c => sqlx::query(
            "INSERT INTO channel_pauses (channel_id, guild_id, code, paused_at, next_probe_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (channel_id) DO NOTHING")
            .bind(channel.to_db())
            .bind(guild.to_db())
            .bind(loss.code())
            .bind(to_ms(now))
            .bind(to_ms(next_probe))
            .execute(&mut *c)
            .await?
            .rows_affected());
        if inserted == 0 {
            on_conn!(self, c => sqlx::query(
                "UPDATE channel_pauses SET next_probe_at = $1, code = $2 WHERE channel_id = $3")
                .bind(to_ms(next_probe))
                .bind(loss.code())
                .bind(channel.to_db())
                .execute(&mut *c)
                .await?
                .rows_affected());
        }
        Ok(inserted == 1)
    }

    /// Lifts the pauses of these channels; true if there was one.
    pub async fn unpause_channels(&mut self, channels: &[ChannelId]) -> StoreResult<bool> {
        let mut lifted = 0;
        for channel in channels {
            lifted += on_conn!(self, c => sqlx::query("DELETE FROM channel_pauses WHERE channel_id = $1")
                .bind(channel.to_db())
                .execute(&mut *c)
                .await?
                .rows_affected());
        }
        Ok(lifted > 0)
    }

    /// Drops the schedules of items that are no longer waiting (a request
    /// withdrawn or decided while held, a redaction done another way).
    pub async fn purge_settled_retries(&mut self) -> StoreResult<u64> {
        Ok(on_conn!(self, c => sqlx::query(
            "DELETE FROM job_retries WHERE \
             (job IN ('post_request', 'remind') AND item NOT IN \
                (SELECT app_id FROM approval_requests WHERE status = 'pending')) \
             OR (job = 'deliver' AND item NOT IN \
                (SELECT app_id FROM approval_requests WHERE status = 'approved' AND delivered_at IS NULL)) \
             OR (job = 'redact' AND item NOT IN \
                (SELECT CAST(channel_id AS TEXT) || ':' || CAST(message_id AS TEXT) \
                 FROM dm_redactions WHERE done_at IS NULL))")
            .execute(&mut *c)
            .await?
            .rows_affected()))
    }
}
