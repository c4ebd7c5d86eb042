//! Delivering credentials once, privately: the DM, its buttons, and its redaction.

use super::Bot;
use super::custom_id::{Action, CustomId};
use super::reply::{count_rest_error, no_pings, private, stale};
use super::wizard::code;
use crate::domain::application::{AppStatus, Application};
use crate::domain::credentials::{ApplicationId, SECRET_PREFIX};
use crate::domain::ids::{ChannelId, MessageId, UserId};
use crate::service::{Actor, IssuedCredentials, Service};
use chrono::TimeDelta;
use poise::serenity_prelude as serenity;
use serenity::{
    ButtonStyle, ComponentInteraction, CreateActionRow, CreateButton, CreateInteractionResponse,
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

fn credentials_text(app: &Application, secret: &str, lifetime: TimeDelta) -> String {
    format!(
        "**Credentials for {}**\nApplication ID: `{}`\nSecret: `{secret}`\n\n\
         ⚠️ Shown once: copy them now. They are removed from this message in {} or when you press **Finish**.",
        code(&app.details.name),
        app.id,
        lifetime_text(lifetime)
    )
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
         The Secret and the API key were shown once and have been removed from this message.",
        code(&app.details.name),
        app.id
    )
}

/// Sends the ID and Secret by DM and schedules the DM's redaction. If the DM
/// cannot be sent (closed DMs, code 50007, or any other failure), they go in
/// an ephemeral follow-up instead: a secret issued once must reach its owner.
pub async fn deliver(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    creds: &IssuedCredentials,
) -> anyhow::Result<()> {
    let app = &creds.app;
    let text = credentials_text(app, creds.secret.expose(), creds.dm_lifetime);
    let dm = async {
        let channel = component.user.create_dm_channel(&ctx.http).await?;
        let message = CreateMessage::new()
            .content(text.clone())
            .components(buttons(&app.id, true))
            .allowed_mentions(no_pings());
        channel.send_message(&ctx.http, message).await
    }
    .await;
    let name = code(&app.details.name);
    match dm {
        Ok(sent) => {
            let scheduled = bot
                .service
                .schedule_redaction(
                    app,
                    UserId(component.user.id.get()),
                    ChannelId(sent.channel_id.get()),
                    MessageId(sent.id.get()),
                )
                .await;
            if let Err(e) = scheduled {
                // Unscheduled, the Secret would stay in the DM for good: take
                // it out now, and let the user know delivery failed.
                let edit = EditMessage::new()
                    .content(redacted_text(app))
                    .components(redacted_buttons(app))
                    .allowed_mentions(no_pings());
                if let Err(edit_error) =
                    sent.channel_id.edit_message(&ctx.http, sent.id, edit).await
                {
                    tracing::error!(app = %app.id, error = %edit_error, "a DM holding a secret could not be redacted");
                }
                return Err(e.into());
            }
            let done = private(format!(
                "✅ {name} is registered. Its Application ID and Secret were **sent to your DMs**; generate the API key there."
            ))
            .components(vec![]);
            component
                .create_response(&ctx.http, CreateInteractionResponse::UpdateMessage(done))
                .await?;
        }
        Err(e) => {
            count_rest_error(&e);
            tracing::warn!(app = %app.id, error = %e, "could not DM the credentials; showing them ephemerally");
            let done = private(format!(
                "✅ {name} is registered. Your DMs are closed, so its credentials are below, visible only to you."
            ))
            .components(vec![]);
            component
                .create_response(&ctx.http, CreateInteractionResponse::UpdateMessage(done))
                .await?;
            let followup = CreateInteractionResponseFollowup::new()
                .ephemeral(true)
                .allowed_mentions(no_pings())
                .content(text)
                .components(buttons(&app.id, true));
            component.create_followup(&ctx.http, followup).await?;
        }
    }
    Ok(())
}

/// Puts the ID and Secret into a DM the bot already sent (the approval note)
/// and schedules its redaction.
pub async fn fill_dm(
    http: &Http,
    service: &Service,
    creds: &IssuedCredentials,
    channel: serenity::ChannelId,
    message: serenity::MessageId,
) -> anyhow::Result<()> {
    let app = &creds.app;
    // Scheduled before the Secret is written, so no crash can leave it there.
    service
        .schedule_redaction(
            app,
            app.owner_id,
            ChannelId(channel.get()),
            MessageId(message.get()),
        )
        .await?;
    let edit = EditMessage::new()
        .content(credentials_text(
            app,
            creds.secret.expose(),
            creds.dm_lifetime,
        ))
        .components(buttons(&app.id, true))
        .allowed_mentions(no_pings());
    channel.edit_message(http, message, edit).await?;
    Ok(())
}

/// The Reveal button: the credentials in a reply only the requester sees, and
/// the public message loses its button.
pub async fn reveal(
    ctx: &serenity::Context,
    component: &ComponentInteraction,
    creds: &IssuedCredentials,
) -> anyhow::Result<()> {
    let app = &creds.app;
    let shown = private(credentials_text(
        app,
        creds.secret.expose(),
        creds.dm_lifetime,
    ))
    .components(buttons(&app.id, true));
    component
        .create_response(&ctx.http, CreateInteractionResponse::Message(shown))
        .await?;
    let done = EditMessage::new()
        .content(format!(
            "{} was approved; its credentials were revealed to the requester.",
            code(&app.details.name)
        ))
        .components(vec![])
        .allowed_mentions(no_pings());
    component
        .channel_id
        .edit_message(&ctx.http, component.message.id, done)
        .await?;
    Ok(())
}

/// Generate API Key and Finish, on a delivery message (DM or ephemeral).
pub async fn on_component(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    cid: &CustomId,
) -> anyhow::Result<()> {
    let app_id = cid.app_id().ok_or_else(stale)?;
    let actor = Actor::member(UserId(component.user.id.get()));
    let app = bot.service.app_by_id(&app_id).await?;
    match cid.action {
        Action::GenerateKey => {
            let issued = bot
                .service
                .generate_api_key(app.guild_id, &app_id, actor)
                .await?;
            let ephemeral = component
                .message
                .flags
                .is_some_and(|f| f.contains(serenity::MessageFlags::EPHEMERAL));
            // The key joins the ID and Secret while they are still shown; a
            // message already redacted never gets the Secret back.
            let shown = (
                ChannelId(component.channel_id.get()),
                MessageId(component.message.id.get()),
            );
            let redacted = bot.service.redaction_done(shown.0, shown.1).await? == Some(true);
            let base = if component.message.content.contains(SECRET_PREFIX) && !redacted {
                component.message.content.clone()
            } else {
                redacted_text(&issued.app)
            };
            let content = format!(
                "{base}\n\nAPI key: `{}`\nIt works only for this application and expires on {}.",
                issued.key.expose(),
                issued.expires_at.format("%Y-%m-%d")
            );
            if !ephemeral {
                // The key gets a lifetime of its own in this DM, scheduled
                // before it is shown (a press racing the redaction included).
                bot.service
                    .schedule_redaction(
                        &issued.app,
                        actor.user_id,
                        ChannelId(component.channel_id.get()),
                        MessageId(component.message.id.get()),
                    )
                    .await?;
            }
            let message = serenity::CreateInteractionResponseMessage::new()
                .content(content)
                .components(buttons(&app_id, false))
                .allowed_mentions(no_pings());
            component
                .create_response(&ctx.http, CreateInteractionResponse::UpdateMessage(message))
                .await?;
        }
        Action::Finish => {
            let app = bot.service.finish(app.guild_id, &app_id, actor).await?;
            let message = serenity::CreateInteractionResponseMessage::new()
                .content(redacted_text(&app))
                .components(redacted_buttons(&app))
                .allowed_mentions(no_pings());
            component
                .create_response(&ctx.http, CreateInteractionResponse::UpdateMessage(message))
                .await?;
            bot.service
                .complete_redaction(
                    &app,
                    ChannelId(component.channel_id.get()),
                    MessageId(component.message.id.get()),
                )
                .await?;
        }
        _ => return Err(stale().into()),
    }
    Ok(())
}

/// One pass: redacts DMs whose lifetime ran out. It runs from the database,
/// so redactions due while the bot was down happen as soon as it is back.
pub async fn redact_due(http: &Http, service: &Service) -> anyhow::Result<()> {
    for due in service.due_redactions().await? {
        let app = service.app_by_id(&due.app_id).await?;
        let edit = EditMessage::new()
            .content(redacted_text(&app))
            .components(redacted_buttons(&app))
            .allowed_mentions(no_pings());
        let channel = serenity::ChannelId::new(due.channel_id.0);
        match channel
            .edit_message(http, serenity::MessageId::new(due.message_id.0), edit)
            .await
        {
            Ok(_) => {}
            // The user deleted the DM: nothing is left to redact.
            Err(serenity::Error::Http(serenity::HttpError::UnsuccessfulRequest(r)))
                if r.error.code == 10008 => {}
            Err(e) => {
                count_rest_error(&e);
                tracing::warn!(app = %app.id, error = %e, "could not redact a DM; will retry");
                continue;
            }
        }
        service
            .complete_redaction(&app, due.channel_id, due.message_id)
            .await?;
    }
    Ok(())
}
