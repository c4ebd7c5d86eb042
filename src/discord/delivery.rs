//! Delivering credentials once, privately: the DM, its buttons, and its redaction.

use super::Bot;
use super::custom_id::{Action, CustomId};
use super::error::{BotResult, stale};
use super::render::code;
use super::reply::{Answered, Reply, RestFailure, Screen, count_rest_error, no_pings};
use crate::domain::application::{AppStatus, Application};
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{ChannelId, InteractionId, MessageId, UserId};
use crate::domain::retry::Job;
use crate::runtime::{Pass, claimed};
use crate::service::{
    Actor, Claim, IssuedCredentials, NewCredential, Retry, RetryGate, Rotated, Service, grace_text,
    redaction_item,
};
use crate::store::DmRedaction;
use chrono::{DateTime, TimeDelta, Utc};
use poise::serenity_prelude as serenity;
use serenity::{
    ButtonStyle, ComponentInteraction, CreateActionRow, CreateButton,
    CreateInteractionResponseFollowup, CreateMessage, EditMessage, Http,
};
use std::time::Duration;

/// How often due redactions are looked for: the finest DM lifetime is a second.
pub const REDACTION_TICK: Duration = Duration::from_millis(500);

fn buttons(app: &ApplicationId, with_generate: bool) -> Vec<CreateActionRow> {
    let mut row = Vec::new();
    if with_generate {
        row.push(
            CreateButton::new(CustomId::app(app.as_str(), Action::GenerateKey).to_string())
                .label("Generate API Key")
                .style(ButtonStyle::Primary),
        );
    }
    row.push(
        CreateButton::new(CustomId::app(app.as_str(), Action::Finish).to_string())
            .label("Finish")
            .style(ButtonStyle::Success),
    );
    vec![CreateActionRow::Buttons(row)]
}

fn lifetime_text(lifetime: TimeDelta) -> String {
    let secs = lifetime.num_seconds();
    match secs {
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

pub(super) fn shown_once(lifetime: TimeDelta) -> String {
    format!(
        "⚠️ Shown once: copy it now. It is removed from this message in {} or when you press **Finish**.",
        lifetime_text(lifetime)
    )
}

/// An ephemeral message cannot be edited after 15 minutes, so the bot cannot
/// promise to remove it: the text says so.
pub(super) const EPHEMERAL_NOTE: &str = "⚠️ Shown once, and only you can see this message. keygate cannot \
     remove it after 15 minutes (Discord allows editing it only that long): copy it now, then \
     press **Finish** or dismiss the message.";

fn credentials_text(app: &Application, secret: &str, note: &str) -> String {
    format!(
        "**Credentials for {}**\nApplication ID: `{}`\nSecret: `{secret}`\n\n{note}",
        code(&app.details.name),
        app.id,
    )
}

fn key_text(app: &Application, key: &str, expires_at: DateTime<Utc>, note: &str) -> String {
    format!(
        "**API key for {}**\nAPI key: `{key}`\nIt works only for this application and expires on {}.\n\n{note}",
        code(&app.details.name),
        expires_at.format("%Y-%m-%d"),
    )
}

/// A rotated credential's message: the new one, and what happens to the old.
pub fn rotated_text(r: &Rotated, note: &str) -> String {
    let app = &r.app;
    let old = format!(
        "The old one (`{}…`) {}.",
        r.old.prefix,
        grace_text(r.grace_ends_at, r.cut_off)
    );
    let value = match &r.new {
        NewCredential::Key { key, expires_at } => format!(
            "API key: `{}`\nIt works only for this application and expires on {}.",
            key.expose(),
            expires_at.format("%Y-%m-%d")
        ),
        NewCredential::Secret(secret) => format!(
            "Application ID: `{}`\nSecret: `{}`",
            app.id,
            secret.expose()
        ),
    };
    format!(
        "🔄 **New {} for {}**\n{value}\n{old}\n\n{note}",
        r.new.kind().label(),
        code(&app.details.name)
    )
}

/// The Finish button alone.
pub fn finish_only(app: &ApplicationId) -> Vec<CreateActionRow> {
    buttons(app, false)
}

/// Opens `user`'s DM and sends a placeholder: nothing secret yet. An error
/// here (closed DMs: 50007) means the user cannot be reached, and nothing
/// was written.
pub async fn open_dm(
    http: &Http,
    user: UserId,
    placeholder: String,
) -> Result<serenity::Message, serenity::Error> {
    let channel = serenity::UserId::new(user.0)
        .create_dm_channel(http)
        .await?;
    send_placeholder(http, channel.id, placeholder).await
}

/// Sends the placeholder of a credential into a DM channel already known.
async fn send_placeholder(
    http: &Http,
    channel: serenity::ChannelId,
    placeholder: String,
) -> Result<serenity::Message, serenity::Error> {
    channel
        .send_message(
            http,
            CreateMessage::new()
                .content(placeholder)
                .allowed_mentions(no_pings()),
        )
        .await
}

/// Writes a credential into a DM the bot sent (`open_dm`): its redaction is
/// stored first, so no crash can leave it there for good; once written, the
/// credential counts as shown. `credential`: its id, and the DM lifetime its
/// text states.
#[allow(clippy::too_many_arguments)]
pub async fn fill_dm(
    http: &Http,
    service: &Service,
    app: &Application,
    user: UserId,
    sent: &serenity::Message,
    text: String,
    components: Vec<CreateActionRow>,
    (credential_id, lifetime): (&str, TimeDelta),
) -> anyhow::Result<()> {
    let dm = (ChannelId(sent.channel_id.get()), MessageId(sent.id.get()));
    service.schedule_redaction(app, user, dm, lifetime).await?;
    let edit = EditMessage::new()
        .content(text)
        .components(components)
        .allowed_mentions(no_pings());
    sent.channel_id.edit_message(http, sent.id, edit).await?;
    service.credential_shown(credential_id).await?;
    Ok(())
}

/// Sends the credential in an ephemeral follow-up of `component`, where a DM
/// cannot go; once sent it counts as shown.
pub async fn follow_up_privately(
    http: &Http,
    service: &Service,
    component: &ComponentInteraction,
    text: String,
    components: Vec<CreateActionRow>,
    credential_id: &str,
) -> anyhow::Result<()> {
    let followup = CreateInteractionResponseFollowup::new()
        .ephemeral(true)
        .allowed_mentions(no_pings())
        .content(text)
        .components(components);
    component.create_followup(http, followup).await?;
    service.credential_shown(credential_id).await?;
    Ok(())
}

/// A redacted message keeps Generate API Key while the app has no key: the
/// button needs no secret, and without it no key could ever be made.
fn redacted_buttons(app: &Application) -> Vec<CreateActionRow> {
    if app.status != AppStatus::Approved {
        return Vec::new();
    }
    vec![CreateActionRow::Buttons(vec![
        CreateButton::new(CustomId::app(app.id.as_str(), Action::GenerateKey).to_string())
            .label("Generate API Key")
            .style(ButtonStyle::Primary),
    ])]
}

/// What is left of a delivery message once its secrets are removed.
pub fn redacted_text(app: &Application) -> String {
    format!(
        "**Credentials for {}** (delivered)\nApplication ID: `{}`\n\
         The credentials shown here once have been removed from this message.",
        code(&app.details.name),
        app.id
    )
}

/// What Submit shows while the credentials go out: the DM takes several
/// calls, so the member reads where they go first.
pub fn sending_screen(app: &Application) -> Screen {
    Screen::new(format!(
        "✅ {} is registered. Its Application ID and Secret are being **sent to your DMs**; generate the API key there.",
        code(&app.details.name)
    ))
}

/// Sends the ID and Secret by DM, once [`sending_screen`] is shown (placeholder, stored redaction, then the
/// Secret). If the DM cannot be sent (closed DMs, code 50007, or any other
/// failure), they go in an ephemeral follow-up instead: a secret issued once
/// must reach its owner.
pub async fn deliver(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    creds: &IssuedCredentials,
) -> BotResult<()> {
    let app = &creds.app;
    let name = code(&app.details.name);
    let user = UserId(component.user.id.get());
    match open_dm(&ctx.http, user, format!("Credentials for {name} follow…")).await {
        Ok(sent) => {
            let text = credentials_text(app, creds.secret.expose(), &shown_once(creds.dm_lifetime));
            fill_dm(
                &ctx.http,
                &bot.service,
                app,
                user,
                &sent,
                text,
                buttons(&app.id, true),
                (&creds.secret_id, creds.dm_lifetime),
            )
            .await?;
        }
        Err(e) => {
            count_rest_error(&e);
            tracing::warn!(app = %app.id, error = %e, "could not DM the credentials; showing them ephemerally");
            component
                .edit_response(
                    &ctx.http,
                    serenity::EditInteractionResponse::new()
                        .content(format!(
                            "✅ {name} is registered. Your DMs are closed, so its credentials are below, visible only to you."
                        ))
                        .allowed_mentions(no_pings()),
                )
                .await?;
            let text = credentials_text(app, creds.secret.expose(), EPHEMERAL_NOTE);
            follow_up_privately(
                &ctx.http,
                &bot.service,
                component,
                text,
                buttons(&app.id, true),
                &creds.secret_id,
            )
            .await?;
        }
    }
    Ok(())
}

/// Fills the approval note DM with the ID and Secret.
pub async fn fill_approval_dm(
    http: &Http,
    service: &Service,
    creds: &IssuedCredentials,
    sent: &serenity::Message,
) -> anyhow::Result<()> {
    let app = &creds.app;
    let text = credentials_text(app, creds.secret.expose(), &shown_once(creds.dm_lifetime));
    fill_dm(
        http,
        service,
        app,
        app.owner_id,
        sent,
        text,
        buttons(&app.id, true),
        (&creds.secret_id, creds.dm_lifetime),
    )
    .await
}

/// The Reveal button, once acknowledged (type 6): the credentials in a
/// follow-up only the requester sees, and the public message loses its button.
pub async fn reveal(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    creds: &IssuedCredentials,
) -> BotResult<()> {
    let app = &creds.app;
    follow_up_privately(
        &ctx.http,
        &bot.service,
        component,
        credentials_text(app, creds.secret.expose(), EPHEMERAL_NOTE),
        buttons(&app.id, true),
        &creds.secret_id,
    )
    .await?;
    let done = Screen::new(format!(
        "{} was approved; its credentials were revealed to the requester.",
        code(&app.details.name)
    ));
    component.edit_response(&ctx.http, done.edit()).await?;
    Ok(())
}

/// Generate API Key and Finish, on a delivery message (DM or ephemeral).
pub async fn on_component(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    cid: &CustomId,
) -> BotResult<()> {
    let app_id = cid.app_id().ok_or_else(stale)?;
    let actor = Actor::member(UserId(component.user.id.get()));
    match cid.action {
        Action::GenerateKey if in_dm_to_stay(component) => {
            key_as_answer(ctx, bot, component, &app_id, actor).await?;
        }
        Action::GenerateKey => {
            // Acknowledged first (the key's DM takes several calls), while the app is read.
            let (deferred, app) = tokio::join!(
                Reply::component(component).defer(&ctx.http),
                bot.service.app_by_id(&app_id)
            );
            deferred?;
            let app = app?;
            let issued = bot
                .service
                .generate_api_key(app.guild_id, &app_id, actor)
                .await?;
            let dm = if is_ephemeral(component) {
                None
            } else {
                let placeholder =
                    format!("API key for {} follows…", code(&issued.app.details.name));
                open_dm(&ctx.http, actor.user_id, placeholder)
                    .await
                    .inspect_err(count_rest_error)
                    .ok()
            };
            let key = issued.key.expose();
            match dm {
                Some(sent) => {
                    let text = key_text(
                        &issued.app,
                        key,
                        issued.expires_at,
                        &shown_once(issued.dm_lifetime),
                    );
                    let rows = finish_only(&app_id);
                    fill_dm(
                        &ctx.http,
                        &bot.service,
                        &issued.app,
                        actor.user_id,
                        &sent,
                        text,
                        rows,
                        (&issued.key_id, issued.dm_lifetime),
                    )
                    .await?;
                }
                None => {
                    let text = key_text(&issued.app, key, issued.expires_at, EPHEMERAL_NOTE);
                    let rows = finish_only(&app_id);
                    follow_up_privately(
                        &ctx.http,
                        &bot.service,
                        component,
                        text,
                        rows,
                        &issued.key_id,
                    )
                    .await?;
                }
            }
            let rows = rows_once_key_shown(component, &app_id);
            component
                .edit_response(
                    &ctx.http,
                    serenity::EditInteractionResponse::new().components(rows),
                )
                .await?;
        }
        Action::Finish => {
            // The answer, the message redacted, needs only a read; the
            // write (every other DM of the app due now, this one done) comes
            // after it, so the member does not wait on the write lock.
            let mut read = None;
            let answered = Reply::component(component)
                .answer_shown(&ctx.http, async {
                    let app = bot.service.finishing(&app_id, actor).await?;
                    let message =
                        Screen::new(redacted_text(&app)).components(redacted_buttons(&app));
                    read = Some(app);
                    Ok((message, ()))
                })
                .await;
            // Finish's own edit removed whatever the message held, unless
            // Discord refused it (or its deferral's edit failed): the
            // worker then redacts it too, due now.
            let redacted = matches!(answered, Ok(((), Answered::Shown(_)))).then(|| {
                (
                    ChannelId(component.channel_id.get()),
                    MessageId(component.message.id.get()),
                )
            });
            if let Some(app) = &read {
                bot.service.finish(app, actor, redacted).await?;
            }
            answered?;
        }
        _ => return Err(stale()),
    }
    Ok(())
}

fn is_ephemeral(component: &ComponentInteraction) -> bool {
    component
        .message
        .flags
        .is_some_and(|f| f.contains(serenity::MessageFlags::EPHEMERAL))
}

/// Pressed on a message of the member's DM with the bot that the bot can
/// still edit through the channel (not ephemeral): the key can be the
/// press's own answer there.
fn in_dm_to_stay(component: &ComponentInteraction) -> bool {
    component.guild_id.is_none() && !is_ephemeral(component)
}

/// The credentials message's buttons once the key is shown: it loses
/// Generate (kept until now, so a key that could not be shown can be made
/// again) and keeps Finish if it had it: its Secret keeps its own
/// lifetime, which the key never extends, and a redacted message has no
/// Finish. Read off the message as the press found it: should its
/// redaction come in between, a Finish on a redacted message is harmless.
fn rows_once_key_shown(
    component: &ComponentInteraction,
    app: &ApplicationId,
) -> Vec<CreateActionRow> {
    let finish = CustomId::app(app.as_str(), Action::Finish).to_string();
    let has_finish = component.message.components.iter().any(|row| {
        row.components.iter().any(|c| match c {
            serenity::ActionRowComponent::Button(b) => {
                matches!(&b.data, serenity::ButtonKind::NonLink { custom_id, .. } if *custom_id == finish)
            }
            _ => false,
        })
    });
    if has_finish {
        finish_only(app)
    } else {
        Vec::new()
    }
}

/// Generate API Key pressed in the member's DM: the key is the press's
/// answer, a new message in the DM, so the member sees it after one write
/// and one callback. Its redaction is stored in the key's own write, keyed
/// by the interaction until the message is known; should the bot stop
/// before it learns the id, the worker finds the message by the
/// interaction (`find_answer`).
async fn key_as_answer(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    app_id: &ApplicationId,
    actor: Actor,
) -> BotResult<()> {
    let answer = (
        ChannelId(component.channel_id.get()),
        InteractionId(component.id.get()),
    );
    let (issued, message) = Reply::component(component)
        .in_new_dm_message()
        .answer_in_message(&ctx.http, async {
            let issued = bot
                .service
                .generate_api_key_answering(app_id, actor, answer)
                .await?;
            let note = shown_once(issued.dm_lifetime);
            let text = key_text(&issued.app, issued.key.expose(), issued.expires_at, &note);
            Ok((Screen::new(text).components(finish_only(app_id)), issued))
        })
        .await?;
    let message = match message {
        Answered::Shown(Some(message)) => message,
        // Discord did not say which message, or its answer was lost on the
        // way (it may have made the message all the same): asked once.
        Answered::Shown(None) | Answered::Refused => {
            match component.get_response(&ctx.http).await {
                Ok(m) if !is_loading(&m) => m.id,
                // A deferral Discord made, whose content was never sent (the
                // deferral's own call failed): no key reached the DM, so it
                // may be made again once it counts as lost.
                Ok(_) => return Ok(bot.service.answer_never_made(answer).await?),
                Err(e) => {
                    // It may be there, even when Discord says no such message
                    // yet (a callback it carries out after our side gave up):
                    // its redaction stays, and until the worker has found it,
                    // the key is not issued again.
                    count_rest_error(&e);
                    tracing::warn!(error = %e, "a key's answer could not be found");
                    return Ok(());
                }
            }
        }
    };
    // The member has the key: what is left is bookkeeping, and a failure
    // there is logged, not shown. A key not noted is still redacted, by the
    // worker finding its message by the interaction; Generate goes only once
    // the key is noted as shown.
    let bookkeeping = async {
        bot.service
            .key_answer_shown(answer, MessageId(message.get()), &issued.key_id)
            .await?;
        let rows = rows_once_key_shown(component, app_id);
        component
            .channel_id
            .edit_message(
                &ctx.http,
                component.message.id,
                EditMessage::new().components(rows),
            )
            .await?;
        BotResult::Ok(())
    };
    if let Err(e) = bookkeeping.await {
        tracing::warn!(error = %e, "a key was shown, but could not be noted or its Generate button dropped");
    }
    Ok(())
}

/// How long Discord lets an interaction's answer be edited through its
/// token (15 minutes: a deferred answer can get its content until then),
/// with a minute for a clock of ours that runs ahead of Discord's.
const ANSWER_EDITABLE: TimeDelta = TimeDelta::minutes(16);

/// What became of an interaction's answer, to its redaction.
enum Answer {
    /// This message, showing what it will show.
    Final(serenity::MessageId),
    /// None was made, and none can be any more.
    Never,
    /// None yet, or one still loading: a deferred answer's content may
    /// come as long as its token lasts.
    NotYet,
}

/// What became of the answer of `interaction` in `channel`.
async fn find_answer(
    http: &Http,
    channel: ChannelId,
    interaction: InteractionId,
    now: DateTime<Utc>,
) -> serenity::Result<Answer> {
    // The answer was made right after the interaction: among the first
    // messages after it, whatever the member wrote since. Read as plain
    // JSON: one message serenity cannot parse must not hide the answer.
    let route = serenity::Route::ChannelMessages {
        channel_id: serenity::ChannelId::new(channel.0),
    };
    let request = serenity::Request::new(route, serenity::LightMethod::Get).params(Some(vec![
        ("after", interaction.0.to_string()),
        ("limit", "100".to_owned()),
    ]));
    let messages: Vec<serde_json::Value> = http.fire(request).await?;
    let wanted = interaction.0.to_string();
    let loading_flag = serenity::MessageFlags::LOADING.bits();
    // The first one: the answer itself, not a follow-up of it.
    let answer = messages
        .iter()
        .filter(|m| m["interaction_metadata"]["id"].as_str() == Some(wanted.as_str()))
        .filter_map(|m| {
            let id = m["id"].as_str()?.parse::<std::num::NonZeroU64>().ok()?;
            let loading = m["flags"].as_u64().unwrap_or(0) & loading_flag != 0;
            Some((serenity::MessageId::from(id), loading))
        })
        .min_by_key(|(id, _)| *id);
    let created = *serenity::InteractionId::new(interaction.0).created_at();
    let settled = now - created > ANSWER_EDITABLE;
    Ok(match answer {
        Some((id, false)) => Answer::Final(id),
        // Still loading when no edit can come any more: it never held a key.
        Some((_, true)) | None if settled => Answer::Never,
        _ => Answer::NotYet,
    })
}

fn is_loading(m: &serenity::Message) -> bool {
    m.flags
        .is_some_and(|f| f.contains(serenity::MessageFlags::LOADING))
}

/// One pass: redacts DMs whose lifetime ran out. It runs from the database,
/// so redactions due while the bot was down happen as soon as it is back; a
/// failing one backs off on its own (the secret stays only as long as
/// Discord refuses the edit), and a 429 holds the whole queue.
pub async fn redact_due(http: &Http, service: &Service) -> Pass {
    let due = service.due_redactions().await?;
    if due.is_empty() {
        return Ok(None);
    }
    let mut gate = service.retry_gate(Job::Redact).await?;
    for due in due {
        let item = redaction_item(due.channel_id, due.message_id);
        if !gate.may_try(&item, None) {
            continue;
        }
        let claim = Claim::Redaction(due.channel_id, due.message_id);
        let wait = claimed(
            service,
            claim,
            redact_one(http, service, &mut gate, &due, &item),
        )
        .await?;
        if wait.is_some() {
            return Ok(wait);
        }
    }
    Ok(None)
}

/// Redacts one due DM; a 429's wait is returned.
async fn redact_one(
    http: &Http,
    service: &Service,
    gate: &mut RetryGate,
    due: &DmRedaction,
    item: &str,
) -> Pass {
    let message = match due.answer_of {
        None => serenity::MessageId::new(due.message_id.0),
        Some(interaction) => {
            match find_answer(http, due.channel_id, interaction, service.now()).await {
                Ok(Answer::Final(message)) => {
                    // The member saw the key: it must not pass for lost, and be
                    // issued again in place of the one they hold.
                    if let Some(key) = &due.carries {
                        service.credential_shown(key).await?;
                    }
                    message
                }
                Ok(Answer::Never) => {
                    service.redaction_moot(due).await?;
                    service.job_succeeded(gate, Job::Redact, item, None).await?;
                    return Ok(None);
                }
                Ok(Answer::NotYet) => {
                    // The answer may still come, or still get its key: later.
                    let next = service
                        .job_failed(gate, Job::Redact, item, Retry::Backoff)
                        .await?;
                    tracing::debug!(app = %due.app_id, retry_at = %next, "a key's answer is not final yet");
                    return Ok(None);
                }
                Err(e) => return redaction_failed(service, gate, item, &due.app_id, &e).await,
            }
        }
    };
    // Read only now: an answer not final yet is retried without it.
    let app = service.app_by_id(&due.app_id).await?;
    let edit = EditMessage::new()
        .content(redacted_text(&app))
        .components(redacted_buttons(&app))
        .allowed_mentions(no_pings());
    let channel = serenity::ChannelId::new(due.channel_id.0);
    if let Err(e) = channel.edit_message(http, message, edit).await {
        // The user deleted the DM: nothing is left to redact.
        if RestFailure::of(&e) != RestFailure::UnknownMessage {
            return redaction_failed(service, gate, item, &app.id, &e).await;
        }
    }
    service
        .complete_redaction(&app, due.channel_id, due.message_id, Some(due.due_at))
        .await?;
    service.job_succeeded(gate, Job::Redact, item, None).await?;
    Ok(None)
}

/// A redaction's call failed: the item backs off, and a 429 holds the queue.
async fn redaction_failed(
    service: &Service,
    gate: &mut RetryGate,
    item: &str,
    app: &ApplicationId,
    e: &serenity::Error,
) -> Pass {
    count_rest_error(e);
    let failure = RestFailure::of(e);
    let next = service
        .job_failed(gate, Job::Redact, item, failure.retry())
        .await?;
    tracing::warn!(%app, error = %e, retry_at = %next, "could not redact a DM");
    Ok(failure.hold())
}
