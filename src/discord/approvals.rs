//! Approval requests on Discord: the approvals-channel message, Approve/Deny,
//! Withdraw, the Reveal fallback, and reminders and expiry over time.

use super::Bot;
use super::access::{BotStanding, ChannelAccess, is_approver};
use super::custom_id::{Action, CustomId};
use super::delivery;
use super::error::{BotError, BotResult, stale};
use super::render::{code, detail_fields, message_link, scope_labels, source_label, user_text};
use super::reply::{
    FIELD_MAX, Reply, RestFailure, Screen, clip, count_rest_error, count_rest_error_in, no_pings,
};
use crate::domain::application::{AppStatus, Application};
use crate::domain::approval::{ApprovalRequest, DENY_REASON_MAX_CHARS, RequestStatus};
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{ChannelId, GuildId, MessageId, UserId};
use crate::domain::retry::{ChannelLoss, Job};
use crate::domain::settings::GuildSettings;
use crate::runtime::{Pass, claimed};
use crate::service::{
    Actor, ApproveOutcome, ChannelUse, Claim, Retry, RetryGate, Service, ServiceError,
};
use poise::serenity_prelude as serenity;
use serenity::{
    ActionRowComponent, ButtonStyle, ComponentInteraction, CreateActionRow, CreateButton,
    CreateEmbed, CreateInputText, CreateInteractionResponse, CreateMessage, CreateModal,
    EditInteractionResponse, EditMessage, Http, InputTextStyle, ModalInteraction,
};
use std::time::Duration;

pub const TICK: Duration = Duration::from_millis(500);

fn mention_list(users: &[UserId]) -> String {
    users
        .iter()
        .map(|u| format!("<@{u}>"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The request's message as approvers see it, built in one place for its
/// post, its refreshes and the answers to Approve and Deny: the embed, and
/// the decision buttons while it is pending; pings off.
struct RequestView {
    embed: CreateEmbed,
    buttons: Vec<CreateActionRow>,
}

impl RequestView {
    fn of(app: &Application, request: &ApprovalRequest, service: &Service) -> Self {
        Self {
            embed: request_embed(app, request, service.catalog()),
            buttons: decision_buttons(&app.id, request),
        }
    }

    fn post(self) -> CreateMessage {
        CreateMessage::new()
            .embed(self.embed)
            .components(self.buttons)
            .allowed_mentions(no_pings())
    }

    fn edit(self) -> EditMessage {
        EditMessage::new()
            .embed(self.embed)
            .components(self.buttons)
            .allowed_mentions(no_pings())
    }

    /// The edit of the message a deferred Approve or Deny was pressed on.
    fn edit_original(self) -> EditInteractionResponse {
        EditInteractionResponse::new()
            .embed(self.embed)
            .components(self.buttons)
            .allowed_mentions(no_pings())
    }
}

/// Every field, the requester and the count.
fn request_embed(
    app: &Application,
    request: &ApprovalRequest,
    catalog: &crate::domain::catalog::ScopeCatalog,
) -> CreateEmbed {
    let d = &app.details;
    let (state, colour) = match request.status {
        RequestStatus::Pending => (
            format!(
                "Waiting: {}/{} approval(s). Expires <t:{}:R>.",
                request.approvers.len(),
                request.approvals_required,
                request.expires_at.timestamp()
            ),
            0xF1C40F,
        ),
        RequestStatus::Approved => (
            format!("✅ Approved by {}.", mention_list(&request.approvers)),
            0x2ECC71,
        ),
        RequestStatus::Denied => (
            format!(
                "⛔ Denied by {}: {}",
                request
                    .decided_by
                    .map_or_else(String::new, |u| format!("<@{u}>")),
                user_text(request.deny_reason.as_deref().unwrap_or(""))
            ),
            0xE74C3C,
        ),
        RequestStatus::Withdrawn => ("↩️ Withdrawn by the requester.".to_owned(), 0x95A5A6),
        RequestStatus::Expired => ("⌛ Expired without a decision.".to_owned(), 0x95A5A6),
    };
    let embed = CreateEmbed::new()
        .title(clip(
            &format!("Application request: {}", user_text(&d.name)),
            256,
        ))
        .description(clip(&state, 4096))
        .colour(colour)
        .field("Requester", format!("<@{}>", request.requester_id), true)
        .field("Application ID", format!("`{}`", app.id), true)
        .field("Login User Type", app.user_type.label(), true)
        .field("Source App", source_label(app.source_app), true);
    detail_fields(embed, d).field(
        "Scopes",
        clip(&scope_labels(&app.scopes, catalog), FIELD_MAX),
        false,
    )
}

fn decision_buttons(app: &ApplicationId, request: &ApprovalRequest) -> Vec<CreateActionRow> {
    if request.status != RequestStatus::Pending {
        return Vec::new();
    }
    vec![CreateActionRow::Buttons(vec![
        CreateButton::new(CustomId::app(app.as_str(), Action::Approve).to_string())
            .label("Approve")
            .style(ButtonStyle::Success),
        CreateButton::new(CustomId::app(app.as_str(), Action::Deny).to_string())
            .label("Deny")
            .style(ButtonStyle::Danger),
    ])]
}

/// Posts a new request to the approvals channel and remembers the message.
pub async fn post_request(
    http: &Http,
    service: &Service,
    app: &Application,
    request: &ApprovalRequest,
) -> anyhow::Result<(ChannelId, MessageId)> {
    let settings = service.settings(app.guild_id).await?;
    let channel = settings
        .approvals_channel
        .ok_or_else(|| BotError::User("this server requires approvals but has no approvals channel; ask an admin to run /keygate setup".into()))?;
    let sent = serenity::ChannelId::new(channel.0)
        .send_message(
            http,
            RequestView::of(app, request, service)
                .post()
                // A retry of a post whose id was not recorded (a crash, a
                // database error) shows once.
                .nonce(nonce('q', &app.id))
                .enforce_nonce(true),
        )
        .await?;
    let posted = (channel, MessageId(sent.id.get()));
    service
        .record_request_message(&app.id, posted.0, posted.1)
        .await?;
    Ok(posted)
}

/// Shows the request's current state on its approvals message. A failed
/// edit is logged, not returned: the state is committed and the member's
/// action succeeded, so they must not be told otherwise; the message is
/// only a view of it. Tried once: a retry could only hammer a lost channel.
async fn refresh_request_message(
    http: &Http,
    service: &Service,
    app: &Application,
) -> anyhow::Result<()> {
    let Some(request) = service.approval_request(&app.id).await? else {
        return Ok(());
    };
    let Some((channel, message)) = request.message else {
        return Ok(());
    };
    if let Err(e) = serenity::ChannelId::new(channel.0)
        .edit_message(
            http,
            serenity::MessageId::new(message.0),
            RequestView::of(app, &request, service).edit(),
        )
        .await
    {
        count_rest_error(&e);
        tracing::warn!(app = %app.id, error = %e, "could not show the request's new state on its message");
    }
    Ok(())
}

/// The requester's wizard message after Submit: waiting, with a link and Withdraw.
/// What the requester sees once they submitted: the request's link once
/// it is posted (unposted, the worker posts it shortly) and Withdraw.
pub fn waiting_message(
    app: &Application,
    request: &ApprovalRequest,
    posted: Option<(ChannelId, MessageId)>,
) -> (String, Vec<CreateActionRow>) {
    let link = posted.map_or_else(String::new, |p| {
        format!(": [the request]({})", message_link(app.guild_id, p))
    });
    let text = format!(
        "📨 {} was submitted and waits for {} approval(s){link}. You will get its credentials by DM once it is approved.",
        code(&app.details.name),
        request.approvals_required,
    );
    let rows = vec![CreateActionRow::Buttons(vec![
        CreateButton::new(CustomId::app(app.id.as_str(), Action::Withdraw).to_string())
            .label("Withdraw")
            .style(ButtonStyle::Secondary),
    ])];
    (text, rows)
}

/// Sends a short note to the requester by DM; closed DMs are not an error here.
async fn tell_requester(http: &Http, user: UserId, text: String) {
    let sent = async {
        let dm = serenity::UserId::new(user.0)
            .create_dm_channel(http)
            .await?;
        dm.send_message(
            http,
            CreateMessage::new()
                .content(text)
                .allowed_mentions(no_pings()),
        )
        .await
    }
    .await;
    if let Err(e) = sent {
        tracing::info!(user = %user, error = %e, "could not DM the requester");
    }
}

/// A nonce of at most Discord's 25 characters for a post about `app`, so
/// that a retry of a post that went through (a crash before it was marked)
/// shows once.
fn nonce(prefix: char, app: &ApplicationId) -> serenity::Nonce {
    let id = app.as_str();
    let tail = id.get(id.len().saturating_sub(24)..).unwrap_or(id);
    serenity::Nonce::String(format!("{prefix}{tail}"))
}

/// Approved: the credentials go to the requester by DM. The DM is opened
/// before the secret exists, so closed DMs cost nothing: the bot then posts a
/// Reveal button in the wizard's channel, and the secret is issued when the
/// requester presses it. If the bot may not post there either, the audit
/// channel asks for the requester's DMs, once, and delivery is tried again
/// at each probe. Whatever fails on the way (a Discord call midway, the
/// database) makes the delivery wait its backoff, not the next tick.
async fn deliver_after_approval(
    http: &Http,
    service: &Service,
    gate: &mut RetryGate,
    app: &Application,
) -> Pass {
    let e = match deliver_once(http, service, gate, app).await {
        Ok(wait) => return Ok(wait),
        Err(e) => e,
    };
    count_rest_error_in(&e);
    let failure = RestFailure::in_chain(&e);
    let next = service
        .job_failed(gate, Job::Deliver, app.id.as_str(), failure.retry())
        .await?;
    tracing::warn!(app = %app.id, error = format!("{e:#}"), retry_at = %next, "could not deliver approved credentials");
    Ok(failure.hold())
}

async fn deliver_once(
    http: &Http,
    service: &Service,
    gate: &mut RetryGate,
    app: &Application,
) -> Pass {
    let item = app.id.as_str();
    // Revoked (or otherwise ended) since its approval: nothing to deliver.
    if !matches!(app.status, AppStatus::Approved | AppStatus::KeyIssued) {
        service.approval_delivered(&app.id).await?;
        service
            .job_succeeded(gate, Job::Deliver, item, None)
            .await?;
        return Ok(None);
    }
    let request = service.approval_request(&app.id).await?;
    let opened = async {
        let dm = serenity::UserId::new(app.owner_id.0)
            .create_dm_channel(http)
            .await?;
        let note = format!(
            "✅ {} was approved. Its credentials follow in this message…",
            code(&app.details.name)
        );
        // A retry after a crash between this post and its fill gets the
        // same message back (the nonce), and fills it.
        dm.send_message(
            http,
            CreateMessage::new()
                .content(note)
                .nonce(nonce('d', &app.id))
                .enforce_nonce(true)
                .allowed_mentions(no_pings()),
        )
        .await
    }
    .await;
    let failed = match opened {
        Ok(sent) => {
            // A retry after a crash between issuing and filling the DM gets a
            // new Secret in place of the lost one (the service revokes it).
            let creds = match service.issue_credentials(app.guild_id, &app.id).await {
                Ok(creds) => creds,
                // It reached the requester already (Reveal, or an earlier pass).
                Err(ServiceError::CredentialsAlreadyIssued) => {
                    service.approval_delivered(&app.id).await?;
                    service
                        .job_succeeded(gate, Job::Deliver, item, None)
                        .await?;
                    return Ok(None);
                }
                // Another delivery of it may still be under way (one whose
                // lease lapsed): a later pass decides once that one had its
                // time, not the next tick. The note stays: within Discord's
                // nonce window it is the very message that delivery fills.
                Err(ServiceError::CredentialsBeingDelivered) => {
                    let grace = service.policy().stall_grace.to_std().unwrap_or_default();
                    service
                        .job_failed(gate, Job::Deliver, item, Retry::AtLeast(grace))
                        .await?;
                    return Ok(None);
                }
                // Revoked between the check above and now.
                Err(ServiceError::NotApproved(_)) => {
                    sent.delete(http).await?;
                    service.approval_delivered(&app.id).await?;
                    service
                        .job_succeeded(gate, Job::Deliver, item, None)
                        .await?;
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            delivery::fill_approval_dm(http, service, &creds, &sent).await?;
            service.approval_delivered(&app.id).await?;
            service
                .job_succeeded(gate, Job::Deliver, item, None)
                .await?;
            return Ok(None);
        }
        Err(e) if RestFailure::of(&e) == RestFailure::DmsClosed => {
            let origin = request.and_then(|r| r.origin_channel);
            match post_reveal(http, app, origin).await {
                Ok(true) => {
                    service.approval_delivered(&app.id).await?;
                    service
                        .job_succeeded(gate, Job::Deliver, item, None)
                        .await?;
                    return Ok(None);
                }
                Ok(false) => {
                    if service.delivery_held(app, origin).await? {
                        tracing::warn!(app = %app.id, "approved credentials can reach their requester neither by DM nor by a Reveal button; the audit channel was told");
                    }
                    service
                        .job_failed(gate, Job::Deliver, item, Retry::Probe)
                        .await?;
                    return Ok(None);
                }
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    Err(failed.into())
}

/// Posts the Reveal button for a requester whose DMs are closed, in the
/// channel they ran the wizard in; false when there is none or the bot may
/// not post there (checked first, so a lost permission costs no refused post).
async fn post_reveal(
    http: &Http,
    app: &Application,
    origin: Option<ChannelId>,
) -> serenity::Result<bool> {
    let Some(channel) = origin else {
        return Ok(false);
    };
    let me = http.get_current_user().await?;
    let standing = BotStanding::read(http, serenity::GuildId::new(app.guild_id.0), me.id).await?;
    if standing
        .access(http, serenity::ChannelId::new(channel.0))
        .await?
        != ChannelAccess::CanPost
    {
        return Ok(false);
    }
    let message = CreateMessage::new()
        .content(format!(
            "<@{}>, {} was approved. Your DMs are closed: press **Reveal** to see its credentials (only you can, once).",
            app.owner_id,
            code(&app.details.name)
        ))
        .components(vec![CreateActionRow::Buttons(vec![
            CreateButton::new(CustomId::app(app.id.as_str(), Action::Reveal).to_string())
                .label("Reveal")
                .style(ButtonStyle::Primary),
        ])])
        .nonce(nonce('v', &app.id))
        .enforce_nonce(true)
        // The requester, and no one else, is pinged.
        .allowed_mentions(no_pings().users(vec![serenity::UserId::new(app.owner_id.0)]));
    match serenity::ChannelId::new(channel.0)
        .send_message(http, message)
        .await
    {
        Ok(_) => Ok(true),
        // Lost between the check and the post.
        Err(e) if matches!(RestFailure::of(&e), RestFailure::Channel(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn deny_modal(app: &ApplicationId) -> CreateModal {
    CreateModal::new(
        CustomId::app(app.as_str(), Action::DenyReason).to_string(),
        "Deny request",
    )
    .components(vec![CreateActionRow::InputText(
        CreateInputText::new(
            InputTextStyle::Paragraph,
            "Reason (the requester reads it)",
            "reason",
        )
        .max_length(DENY_REASON_MAX_CHARS as u16)
        .required(true),
    )])
}

fn actor_of(bot_user: &serenity::User) -> UserId {
    UserId(bot_user.id.get())
}

/// Approve, Deny, Withdraw and Reveal buttons.
pub async fn on_component(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    cid: &CustomId,
) -> BotResult<()> {
    let id = cid.app_id().ok_or_else(stale)?;
    let user = actor_of(&component.user);
    let app = bot.service.app_by_id(&id).await?;
    let guild = app.guild_id;
    // Rights are judged on the member of the interaction's guild: it must be the app's.
    if component.guild_id.map(|g| g.get()) != Some(guild.0) {
        return Err(BotError::User(
            "this button belongs to another server".into(),
        ));
    }
    match cid.action {
        Action::Approve => {
            let actor = Actor {
                user_id: user,
                is_approver: is_approver(bot, guild, component.member.as_ref()).await?,
                is_manager: false,
            };
            // Acknowledged before the approval is written: it and the
            // delivery after it would not fit in Discord's 3 seconds.
            Reply::component(component).defer(&ctx.http).await?;
            let outcome = bot.service.approve(guild, &id, actor).await?;
            let request = bot
                .service
                .approval_request(&id)
                .await?
                .ok_or(BotError::User("no such request".into()))?;
            component
                .edit_response(
                    &ctx.http,
                    RequestView::of(&app, &request, &bot.service).edit_original(),
                )
                .await?;
            if let ApproveOutcome::Approved(app) = outcome {
                let delivered = async {
                    let mut gate = bot.service.retry_gate(Job::Deliver).await?;
                    // Claimed like the worker's: one delivery at a time.
                    let claim = Claim::Request(Job::Deliver, &app.id);
                    let work = deliver_after_approval(&ctx.http, &bot.service, &mut gate, &app);
                    claimed(&bot.service, claim, work).await
                };
                if let Err(e) = delivered.await {
                    // The approval stands; the approvals worker delivers later.
                    count_rest_error_in(&e);
                    tracing::warn!(app = %app.id, error = format!("{e:#}"), "could not deliver approved credentials yet");
                }
            }
        }
        Action::Deny => {
            if !is_approver(bot, guild, component.member.as_ref()).await? {
                return Err(crate::service::ServiceError::NotApprover.into());
            }
            let request = bot
                .service
                .approval_request(&id)
                .await?
                .ok_or(BotError::User("no such request".into()))?;
            // Refuse before asking for a reason that could not be used.
            if request.requester_id == user {
                return Err(crate::domain::approval::ApprovalError::OwnRequest.into());
            }
            if request.status != RequestStatus::Pending {
                return Err(
                    crate::domain::approval::ApprovalError::NotPending(request.status).into(),
                );
            }
            component
                .create_response(&ctx.http, CreateInteractionResponse::Modal(deny_modal(&id)))
                .await?;
        }
        Action::Withdraw => {
            // Acknowledged before the withdrawal is written.
            Reply::component(component).defer(&ctx.http).await?;
            let app = bot
                .service
                .withdraw(guild, &id, Actor::member(user))
                .await?;
            let update =
                Screen::new(format!("↩️ You withdrew {}.", code(&app.details.name))).edit();
            component.edit_response(&ctx.http, update).await?;
            refresh_request_message(&ctx.http, &bot.service, &app).await?;
        }
        Action::Reveal => {
            if app.owner_id != user {
                return Err(BotError::User(
                    "only the requester can reveal these credentials".into(),
                ));
            }
            // Acknowledged before the secret is issued; the credentials
            // then go in an ephemeral follow-up.
            Reply::component(component).defer(&ctx.http).await?;
            let creds = bot.service.issue_credentials(guild, &id).await?;
            delivery::reveal(ctx, bot, component, &creds).await?;
        }
        _ => return Err(stale()),
    }
    Ok(())
}

/// The Deny modal's reason.
pub async fn on_deny_reason(
    ctx: &serenity::Context,
    bot: &Bot,
    modal: &ModalInteraction,
    cid: &CustomId,
) -> BotResult<()> {
    let id = cid.app_id().ok_or_else(stale)?;
    let app = bot.service.app_by_id(&id).await?;
    if modal.guild_id.map(|g| g.get()) != Some(app.guild_id.0) {
        return Err(BotError::User("this form belongs to another server".into()));
    }
    let reason = modal
        .data
        .components
        .iter()
        .flat_map(|row| &row.components)
        .find_map(|c| match c {
            ActionRowComponent::InputText(t) if t.custom_id == "reason" => t.value.clone(),
            _ => None,
        })
        .unwrap_or_default();
    let actor = Actor {
        user_id: UserId(modal.user.id.get()),
        is_approver: is_approver(bot, app.guild_id, modal.member.as_ref()).await?,
        is_manager: false,
    };
    // Acknowledged before the denial is written.
    Reply::modal(modal).defer(&ctx.http).await?;
    let (app, reason) = bot.service.deny(app.guild_id, &id, actor, &reason).await?;
    let request = bot
        .service
        .approval_request(&id)
        .await?
        .ok_or(BotError::User("no such request".into()))?;
    // Decided: the view has no buttons left.
    let edit = if modal.message.is_some() {
        RequestView::of(&app, &request, &bot.service).edit_original()
    } else {
        Screen::new("Denied.").edit()
    };
    modal.edit_response(&ctx.http, edit).await?;
    tell_requester(
        &ctx.http,
        app.owner_id,
        format!(
            "⛔ Your request for {} was denied by <@{}>: {}",
            code(&app.details.name),
            actor.user_id,
            user_text(&reason)
        ),
    )
    .await;
    Ok(())
}

/// `/app withdraw`: the same as the Withdraw button.
pub async fn withdraw(
    http: &Http,
    bot: &Bot,
    guild: GuildId,
    id: &ApplicationId,
    user: UserId,
) -> BotResult<Application> {
    let app = bot.service.withdraw(guild, id, Actor::member(user)).await?;
    refresh_request_message(http, &bot.service, &app).await?;
    Ok(app)
}

/// One pass: posts and delivers what a failure left undone, expires
/// requests and sends half-time reminders. It runs from the database, so all
/// of it happens on time across restarts; each failing item backs off on its
/// own, a lost approvals channel pauses what goes there, and a 429 holds the
/// whole queue.
pub async fn tick(http: &Http, service: &Service) -> Pass {
    let stalled = service.stalled_requests().await?;
    if !stalled.unposted.is_empty() {
        let mut gate = service.retry_gate(Job::PostRequest).await?;
        for (app, request) in stalled.unposted {
            let channel = service.settings(app.guild_id).await?.approvals_channel;
            if !gate.may_try(app.id.as_str(), channel) {
                if let Some(loss) = channel.and_then(|c| gate.paused(c)).map(|p| p.loss) {
                    tell_held(http, service, &mut gate, &app, loss).await?;
                }
                continue;
            }
            let claim = Claim::Request(Job::PostRequest, &app.id);
            let wait = claimed(service, claim, async {
                match post_request(http, service, &app, &request).await {
                    Ok(_) => {
                        service
                            .job_succeeded(&mut gate, Job::PostRequest, app.id.as_str(), channel)
                            .await?;
                        Ok(None)
                    }
                    Err(e) => {
                        request_post_failed(http, service, &mut gate, &app, channel, &e).await
                    }
                }
            })
            .await?;
            if wait.is_some() {
                return Ok(wait);
            }
        }
    }
    if !stalled.undelivered.is_empty() {
        let mut gate = service.retry_gate(Job::Deliver).await?;
        for app in stalled.undelivered {
            if !gate.may_try(app.id.as_str(), None) {
                continue;
            }
            let claim = Claim::Request(Job::Deliver, &app.id);
            let wait = claimed(
                service,
                claim,
                deliver_after_approval(http, service, &mut gate, &app),
            )
            .await?;
            if wait.is_some() {
                return Ok(wait);
            }
        }
    }
    for (app, _) in service.expire_due_requests().await? {
        // Told once: the request is already expired in the database.
        if let Err(e) = refresh_request_message(http, service, &app).await {
            tracing::warn!(app = %app.id, error = %e, "could not mark the request expired");
        }
        tell_requester(
            http,
            app.owner_id,
            format!(
                "⌛ Your request for {} expired without a decision. Run /app create to ask again.",
                code(&app.details.name)
            ),
        )
        .await;
    }
    remind(http, service).await
}

/// Approvers are reminded of requests at half their lifetime; a reminder is
/// marked sent once posted.
async fn remind(http: &Http, service: &Service) -> Pass {
    let due = service.due_reminders().await?;
    if due.is_empty() {
        return Ok(None);
    }
    let mut gate = service.retry_gate(Job::Remind).await?;
    for (app, request) in due {
        let settings = service.settings(app.guild_id).await?;
        let Some(channel) = settings.approvals_channel else {
            service.reminder_sent(&app.id).await?;
            continue;
        };
        if !gate.may_try(app.id.as_str(), Some(channel)) {
            continue;
        }
        let claim = Claim::Request(Job::Remind, &app.id);
        let work = post_reminder(http, service, &mut gate, &app, &request, &settings, channel);
        let wait = claimed(service, claim, work).await?;
        if wait.is_some() {
            return Ok(wait);
        }
    }
    Ok(None)
}

/// Posts one reminder, marked sent once posted; a 429's wait is returned.
async fn post_reminder(
    http: &Http,
    service: &Service,
    gate: &mut RetryGate,
    app: &Application,
    request: &ApprovalRequest,
    settings: &GuildSettings,
    channel: ChannelId,
) -> Pass {
    let item = app.id.as_str();
    let link = request
        .message
        .map(|m| format!(" [Open the request]({}).", message_link(app.guild_id, m)))
        .unwrap_or_default();
    let approvers = settings
        .approver_role
        .map(|r| format!("<@&{r}> "))
        .unwrap_or_default();
    let text = format!(
        "⏰ {approvers}Reminder: {} from <@{}> still needs {} approval(s) and expires <t:{}:R>.{link}",
        code(&app.details.name),
        request.requester_id,
        usize::from(request.approvals_required).saturating_sub(request.approvers.len()),
        request.expires_at.timestamp()
    );
    // The approver role, and nobody else, is notified: a reminder that
    // pings no one reminds no one.
    let pings = settings.approver_role.map_or_else(no_pings, |r| {
        no_pings().roles(vec![serenity::RoleId::new(r.0)])
    });
    let message = CreateMessage::new()
        .content(text)
        .nonce(nonce('r', &app.id))
        .enforce_nonce(true)
        .allowed_mentions(pings);
    let e = match serenity::ChannelId::new(channel.0)
        .send_message(http, message)
        .await
    {
        Ok(_) => {
            service.reminder_sent(&app.id).await?;
            service
                .job_succeeded(gate, Job::Remind, item, Some(channel))
                .await?;
            return Ok(None);
        }
        Err(e) => e,
    };
    count_rest_error(&e);
    match RestFailure::of(&e) {
        RestFailure::Channel(loss) => {
            service
                .channel_refused(gate, app.guild_id, channel, loss, ChannelUse::Approvals)
                .await?;
        }
        failure => {
            let next = service
                .job_failed(gate, Job::Remind, item, failure.retry())
                .await?;
            tracing::warn!(app = %app.id, error = %e, retry_at = %next, "could not post a reminder");
            if let Some(wait) = failure.hold() {
                return Ok(Some(wait));
            }
        }
    }
    Ok(None)
}

/// What a failed post of a request means, for Submit and the worker alike:
/// a lost channel pauses its queue and tells the requester once; a 429 asks
/// the queue to wait (returned); anything else backs the request off.
pub async fn request_post_failed(
    http: &Http,
    service: &Service,
    gate: &mut RetryGate,
    app: &Application,
    channel: Option<ChannelId>,
    e: &anyhow::Error,
) -> Pass {
    count_rest_error_in(e);
    let item = app.id.as_str();
    match (RestFailure::in_chain(e), channel) {
        (RestFailure::Channel(loss), Some(channel)) => {
            service
                .channel_refused(gate, app.guild_id, channel, loss, ChannelUse::Approvals)
                .await?;
            tell_held(http, service, gate, app, loss).await?;
            Ok(None)
        }
        (failure, _) => {
            let next = service
                .job_failed(gate, Job::PostRequest, item, failure.retry())
                .await?;
            tracing::warn!(app = %app.id, error = format!("{e:#}"), retry_at = %next, "could not post a request");
            Ok(failure.hold())
        }
    }
}

/// What the requester of a request held behind a lost approvals channel reads.
pub fn held_text(app: &Application, loss: ChannelLoss) -> String {
    format!(
        "⏸️ Your request for {} waits to be posted to the approvals channel: {}. It is posted as soon as an admin fixes that or names another channel with /keygate setup; there is nothing for you to do.",
        code(&app.details.name),
        loss.explain()
    )
}

/// Tells the requester, by DM and once per request, that it is held.
async fn tell_held(
    http: &Http,
    service: &Service,
    gate: &mut RetryGate,
    app: &Application,
    loss: ChannelLoss,
) -> anyhow::Result<()> {
    if service
        .alert_once(gate, Job::PostRequest, app.id.as_str())
        .await?
    {
        tell_requester(http, app.owner_id, held_text(app, loss)).await;
    }
    Ok(())
}
