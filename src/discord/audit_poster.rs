//! Posts the audit outbox to each guild's audit channel, in order, once each.

use super::render::{message_link, user_text};
use super::reply::{RestFailure, clip, count_rest_error, no_pings};
use crate::domain::audit::AuditKind;
use crate::runtime::Pass;
use crate::service::{AuditPost, POST_LEASE, Retry, Service};
use poise::serenity_prelude as serenity;
use serenity::{CreateEmbed, CreateMessage, Http, Nonce};
use std::time::Duration;

/// How often the outbox is looked at.
pub const TICK: Duration = Duration::from_millis(250);
/// Events claimed per pass: few enough that one channel posts them all well
/// inside their lease, at Discord's pace of about one message a second per
/// channel (serenity waits out the bucket), so no other process takes one
/// over while this one is still at it.
const BATCH: u32 = 10;
/// What a pass has not started by then goes back, for the same reason.
const PASS_LIMIT: Duration = Duration::from_secs(20);
/// The longest one post may take: a send that hangs is given up (the event
/// is tried again; its nonce keeps a late arrival from showing twice), so
/// that one started just before `PASS_LIMIT` still ends inside the lease.
const SEND_LIMIT: Duration = Duration::from_secs(5);
const _: () = assert!(
    PASS_LIMIT.as_secs() + SEND_LIMIT.as_secs() + 5 <= POST_LEASE.num_seconds() as u64,
    "a pass's last post must end well inside its lease"
);

fn colour(kind: AuditKind) -> u32 {
    match kind {
        AuditKind::Approved | AuditKind::CredentialsIssued | AuditKind::KeyGenerated => 0x2ECC71,
        AuditKind::Denied
        | AuditKind::KeyRevoked
        | AuditKind::Expired
        | AuditKind::KeyExpired
        | AuditKind::ChannelPaused
        | AuditKind::DeliveryHeld => 0xE74C3C,
        AuditKind::DraftSubmitted | AuditKind::ApprovalVote | AuditKind::ExpiryWarning => 0xF1C40F,
        AuditKind::SettingsChanged
        | AuditKind::KeyRotated
        | AuditKind::SecretRotated
        | AuditKind::CredentialReissued => 0x5865F2,
        AuditKind::Withdrawn | AuditKind::Finished | AuditKind::DmRedacted => 0x95A5A6,
    }
}

fn message(post: &AuditPost) -> CreateMessage {
    let e = &post.event;
    let actor = e
        .actor_id
        .map_or_else(|| "keygate".to_owned(), |u| format!("<@{u}>"));
    let mut embed = CreateEmbed::new()
        .title(e.kind.label())
        .description(clip(&e.summary, 4096))
        .colour(colour(e.kind))
        .field("By", actor, true)
        .timestamp(
            serenity::Timestamp::from_unix_timestamp(e.created_at.timestamp())
                .unwrap_or_else(|_| serenity::Timestamp::now()),
        );
    if let Some(app) = &post.app {
        embed = embed.field(
            "Application",
            clip(
                &format!("{} (`{}`)", user_text(&app.details.name), app.id),
                1024,
            ),
            true,
        );
    }
    if let Some(m) = post.request_message {
        embed = embed.field(
            "Request",
            format!("[approvals message]({})", message_link(e.guild_id, m)),
            true,
        );
    }
    CreateMessage::new()
        .embed(embed)
        .allowed_mentions(no_pings())
        // Discord drops a second message with the same nonce, so an event
        // posted just before a crash, and posted again after, shows once.
        .nonce(Nonce::String(format!("kga{}", e.id)))
        .enforce_nonce(true)
}

/// One pass: posts what is due. A failure holds back the rest of that
/// guild's events, to keep their order; an audit channel the bot lost is
/// tried again every probe interval, or at once when setup changes it.
pub async fn post_due(http: &Http, service: &Service) -> Pass {
    // Counted from before the claim: the lease runs from its read, and a
    // slow claim (a busy writer) must not stretch the pass past it.
    let started = std::time::Instant::now();
    let posts = service.due_audit_posts(BATCH).await?;
    let mut failed = std::collections::HashSet::new();
    // After a 429 the whole queue waits; what this pass claimed goes back.
    let mut held = None;
    for post in posts {
        let guild = post.event.guild_id;
        if held.is_some() || failed.contains(&guild) || started.elapsed() > PASS_LIMIT {
            service
                .release_audit_post(post.event.id, post.lease_until)
                .await?;
            continue;
        }
        let Some(channel) = post.channel else {
            // The audit channel was unset since: the event stays in the database only.
            service.audit_posted(post.event.id).await?;
            continue;
        };
        let send = serenity::ChannelId::new(channel.0).send_message(http, message(&post));
        let (retry, wait, error) = match tokio::time::timeout(SEND_LIMIT, send).await {
            Ok(Ok(_)) => {
                service.audit_posted(post.event.id).await?;
                continue;
            }
            Ok(Err(e)) => {
                count_rest_error(&e);
                let (retry, wait) = match RestFailure::of(&e) {
                    RestFailure::Channel(loss) => {
                        // Nobody can be told in the channel itself: the log
                        // says it, once per probe.
                        tracing::error!(guild = %guild, channel = %channel, code = loss.code(), "Discord refuses keygate in the audit channel; audit events wait for it");
                        (Retry::Probe, None)
                    }
                    failure => (failure.retry(), failure.hold()),
                };
                (retry, wait, e.to_string())
            }
            // Given up, not known to have failed: backs off as a timeout
            // does.
            Err(_) => (
                Retry::Backoff,
                None,
                format!("no answer within {SEND_LIMIT:?}"),
            ),
        };
        // Either way the guild's later events wait behind this one.
        failed.insert(guild);
        let next = service
            .audit_post_failed(post.event.id, post.attempts, post.lease_until, retry)
            .await?;
        tracing::warn!(event = post.event.id, error, retry_at = %next, "could not post an audit event");
        held = held.or(wait);
    }
    Ok(held)
}
