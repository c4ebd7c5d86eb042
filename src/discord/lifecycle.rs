//! `/app rotate`, `/app revoke`, their confirmations, and the expiry-warning worker.

use super::access::{is_approver, is_manager};
use super::commands::{guild_of, member_of, resolve};
use super::custom_id::{Action, CustomId};
use super::delivery::{fill_dm, finish_only, follow_up_privately, open_dm, rotated_text};
use super::error::{BotError, BotResult, stale};
use super::render::code;
use super::reply::{Reply, RestFailure, count_rest_error, discord_code, no_pings};
use super::{Bot, Context};
use crate::domain::application::Application;
use crate::domain::ids::{GuildId, UserId};
use crate::domain::lifecycle::{CredentialKind, Grace};
use crate::runtime::Pass;
use crate::service::{Actor, ClaimedWarning, RotationPlan, Service, grace_text};
use poise::CreateReply;
use poise::serenity_prelude as serenity;
use serenity::{
    ButtonStyle, ComponentInteraction, CreateActionRow, CreateButton, CreateInputText,
    CreateInteractionResponse, CreateMessage, CreateModal, EditInteractionResponse, Http,
    InputTextStyle, ModalInteraction,
};
use std::time::Duration;

/// How often expiry warnings and expiries are looked for.
pub const TICK: Duration = Duration::from_secs(1);

/// Which credential `/app rotate` replaces.
#[derive(Debug, Clone, Copy, poise::ChoiceParameter)]
pub enum What {
    #[name = "key"]
    Key,
    #[name = "secret"]
    Secret,
}

/// How long the replaced credential keeps working.
#[derive(Debug, Clone, Copy, poise::ChoiceParameter)]
pub enum GraceChoice {
    #[name = "now"]
    Now,
    #[name = "1h"]
    Hour,
    #[name = "24h"]
    Day,
    #[name = "7d"]
    Week,
    #[name = "30d"]
    Month,
}

impl From<GraceChoice> for Grace {
    fn from(g: GraceChoice) -> Self {
        match g {
            GraceChoice::Now => Grace::Now,
            GraceChoice::Hour => Grace::Hour,
            GraceChoice::Day => Grace::Day,
            GraceChoice::Week => Grace::Week,
            GraceChoice::Month => Grace::Month,
        }
    }
}

/// The member as the service judges them: owner, approver or manager.
async fn actor(
    bot: &Bot,
    guild: Option<GuildId>,
    user: &serenity::User,
    member: Option<&serenity::Member>,
) -> BotResult<Actor> {
    let user_id = UserId(user.id.get());
    let Some(guild) = guild else {
        // In a DM only the owner can be recognised.
        return Ok(Actor::member(user_id));
    };
    Ok(Actor {
        user_id,
        is_approver: is_approver(bot, guild, member).await?,
        is_manager: member.is_some_and(is_manager),
    })
}

/// The member running a slash command, judged as `actor` judges.
async fn command_actor(ctx: &Context<'_>, guild: GuildId) -> BotResult<Actor> {
    actor(ctx.data(), Some(guild), ctx.author(), member_of(ctx)).await
}

/// What the member is about to confirm, and the Confirm button bound to the
/// credential that is current now.
fn confirmation(plan: &RotationPlan) -> (String, Vec<CreateActionRow>) {
    let kind = plan.current.kind;
    let mut text = format!(
        "Rotate the **{}** `{}…` of {}?\n• A new {} goes to its owner <@{}> by DM, once.\n",
        kind.label(),
        plan.current.prefix,
        code(&plan.app.details.name),
        kind.label(),
        plan.app.owner_id
    );
    if plan.grace == Grace::Now {
        text.push_str("• The current one **stops working now**.\n");
    } else {
        text.push_str(&format!(
            "• The current one keeps working until <t:{}:f> ({}).\n",
            plan.grace_ends_at.timestamp(),
            plan.grace.as_str()
        ));
    }
    if let Some(e) = &plan.ending_grace {
        text.push_str(&format!(
            "• The earlier `{}…`, still in its grace, **stops working now**.\n",
            e.prefix
        ));
    }
    let button = CreateButton::new(
        CustomId::credential(plan.grace.as_str(), &plan.current.id, Action::Confirm).to_string(),
    )
    .label("Confirm")
    .style(ButtonStyle::Danger);
    (text, vec![CreateActionRow::Buttons(vec![button])])
}

/// Rotate an application's API key or Secret.
#[poise::command(slash_command, guild_only)]
pub async fn rotate(
    ctx: Context<'_>,
    #[description = "The application"]
    #[autocomplete = "super::commands::app_choices"]
    app: String,
    #[description = "Which credential (default: key)"] what: Option<What>,
    #[description = "How long the old one keeps working (default: 7d)"] grace: Option<GraceChoice>,
) -> BotResult<()> {
    ctx.defer_ephemeral().await?;
    let guild = guild_of(&ctx)?;
    let bot = ctx.data();
    let actor = command_actor(&ctx, guild).await?;
    let app = resolve(&ctx, guild, &app).await?;
    let kind = match what.unwrap_or(What::Key) {
        What::Key => CredentialKind::Key,
        What::Secret => CredentialKind::Secret,
    };
    let grace = grace.map_or(Grace::DEFAULT, Grace::from);
    let plan = bot.service.plan_rotation(&app, kind, grace, actor).await?;
    let (text, rows) = confirmation(&plan);
    ctx.send(
        CreateReply::default()
            .ephemeral(true)
            .content(text)
            .components(rows)
            .allowed_mentions(no_pings()),
    )
    .await?;
    Ok(())
}

fn revoke_modal(app: &Application) -> CreateModal {
    let title: String = format!("Revoke {}", app.details.name)
        .chars()
        .take(45)
        .collect();
    CreateModal::new(
        CustomId::app(app.id.as_str(), Action::RevokeName).to_string(),
        title,
    )
    .components(vec![CreateActionRow::InputText(
        CreateInputText::new(
            InputTextStyle::Short,
            "Type the application's name to confirm",
            "name",
        )
        .placeholder(app.details.name.chars().take(100).collect::<String>())
        .required(true),
    )])
}

/// Revoke an application: every key and its Secret stop working now.
#[poise::command(slash_command, guild_only)]
pub async fn revoke(
    ctx: Context<'_>,
    #[description = "The application"]
    #[autocomplete = "super::commands::app_choices"]
    app: String,
) -> BotResult<()> {
    // Answered with a modal, which cannot follow a deferral: reads only before it.
    let poise::Context::Application(actx) = ctx else {
        return Err(BotError::User("use the slash command".into()));
    };
    let guild = guild_of(&ctx)?;
    let actor = command_actor(&ctx, guild).await?;
    let app = resolve(&ctx, guild, &app).await?;
    if !actor.may_manage(&app) {
        return Err(crate::service::ServiceError::NotAllowed.into());
    }
    actx.interaction
        .create_response(
            ctx.http(),
            CreateInteractionResponse::Modal(revoke_modal(&app)),
        )
        .await?;
    Ok(())
}

/// The revoke modal: the typed name must be the app's.
pub async fn on_revoke_name(
    ctx: &serenity::Context,
    bot: &Bot,
    modal: &ModalInteraction,
    cid: &CustomId,
) -> BotResult<()> {
    Reply::modal(modal)
        .in_new_message()
        .defer(&ctx.http)
        .await?;
    let id = cid.app_id().ok_or_else(stale)?;
    let guild = modal
        .guild_id
        .map(|g| GuildId(g.get()))
        .ok_or_else(|| BotError::User("use this in a server".into()))?;
    let typed = modal
        .data
        .components
        .iter()
        .flat_map(|row| row.components.iter())
        .find_map(|c| match c {
            serenity::ActionRowComponent::InputText(t) if t.custom_id == "name" => t.value.clone(),
            _ => None,
        })
        .unwrap_or_default();
    let actor = actor(bot, Some(guild), &modal.user, modal.member.as_ref()).await?;
    let app = bot.service.revoke(guild, &id, actor, &typed).await?;
    let name = code(&app.details.name);
    modal
        .edit_response(
            &ctx.http,
            EditInteractionResponse::new()
                .content(format!(
                    "⛔ {name} is revoked: its API keys and Secret stopped working."
                ))
                .allowed_mentions(no_pings()),
        )
        .await?;
    tell_owner(
        &ctx.http,
        &app,
        format!(
            "⛔ {name} was revoked by <@{}>: its API keys and Secret no longer work.",
            actor.user_id
        ),
    )
    .await;
    Ok(())
}

/// A note to the app's owner by DM; closed DMs are not an error here.
async fn tell_owner(http: &Http, app: &Application, text: String) {
    if let Err(e) = open_dm(http, app.owner_id, text).await {
        count_rest_error(&e);
        tracing::info!(app = %app.id, error = %e, "could not DM the owner");
    }
}

/// Confirm (a rotation bound to one credential), Issue again (a credential
/// that never reached its owner) and Rotate now (an expiry warning's button,
/// bound to the warned key).
pub async fn on_component(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    cid: &CustomId,
) -> BotResult<()> {
    let guild = component.guild_id.map(|g| GuildId(g.get()));
    let (grace, credential) = cid.credential_parts().ok_or_else(stale)?;
    let grace = Grace::parse(grace).ok_or_else(stale)?;
    match cid.action {
        Action::RotateNow => rotate_now(ctx, bot, component, guild, credential).await,
        Action::Confirm | Action::IssueAgain => {
            deliver_new_credential(ctx, bot, component, cid.action, guild, credential, grace).await
        }
        _ => Err(stale()),
    }
}

/// The rotation confirmation for the key an expiry warning named.
async fn rotate_now(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    guild: Option<GuildId>,
    key: &str,
) -> BotResult<()> {
    // Acknowledged first, then read. A deferred message (type 5), not a
    // deferred update: the confirmation is a new message, and the warning
    // it answers must stay as it was, Rotate now and all.
    Reply::component(component)
        .in_new_message()
        .defer(&ctx.http)
        .await?;
    let actor = actor(bot, guild, &component.user, component.member.as_ref()).await?;
    let (app, _) = bot.service.rotation_target(guild, key, actor).await?;
    let plan = bot
        .service
        .plan_rotation(&app, CredentialKind::Key, Grace::DEFAULT, actor)
        .await?;
    let (text, rows) = confirmation(&plan);
    component
        .edit_response(
            &ctx.http,
            EditInteractionResponse::new()
                .content(text)
                .components(rows)
                .allowed_mentions(no_pings()),
        )
        .await?;
    Ok(())
}

/// Closed DMs (50007): the user cannot be reached by DM.
fn dms_closed(e: &serenity::Error) -> bool {
    discord_code(e) == Some(50007)
}

/// Confirm and Issue again: the new credential goes to the owner, by DM, or
/// (DMs closed) to an owner who pressed in a message only they see; anyone
/// else is told before anything changes.
async fn deliver_new_credential(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    action: Action,
    guild: Option<GuildId>,
    credential: &str,
    grace: Grace,
) -> BotResult<()> {
    // Acknowledged first: this takes several calls.
    Reply::component(component).defer(&ctx.http).await?;
    let actor = actor(bot, guild, &component.user, component.member.as_ref()).await?;
    let service = &bot.service;
    // Refused or stale presses are answered before the owner gets anything.
    let (owner_app, _) = service.rotation_target(guild, credential, actor).await?;
    let owner = owner_app.owner_id;
    let dm = match open_dm(
        &ctx.http,
        owner,
        format!(
            "🔄 A new credential for {} follows…",
            code(&owner_app.details.name)
        ),
    )
    .await
    {
        Ok(sent) => Some(sent),
        Err(e) if dms_closed(&e) && actor.user_id == owner => None,
        Err(e) if dms_closed(&e) => {
            let text = format!(
                "Nothing changed: the new credential could not be delivered, because <@{owner}> (the owner) has closed their DMs. Ask them to open them, or to rotate it themselves."
            );
            component
                .edit_response(
                    &ctx.http,
                    EditInteractionResponse::new()
                        .content(text)
                        .components(vec![])
                        .allowed_mentions(no_pings()),
                )
                .await?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let done = match action {
        Action::IssueAgain => service.issue_again(guild, credential, actor).await,
        _ => service.rotate(guild, credential, grace, actor).await,
    };
    let rotated = match done {
        Ok(r) => r,
        Err(e) => {
            if let Some(sent) = &dm
                && let Err(delete) = sent.delete(&ctx.http).await
            {
                tracing::warn!(error = %delete, "could not delete an unused DM placeholder");
            }
            return Err(e.into());
        }
    };
    let app = &rotated.app;
    let rows = finish_only(&app.id);
    let shown = match &dm {
        Some(sent) => {
            let text = rotated_text(&rotated, &super::delivery::shown_once(rotated.dm_lifetime));
            fill_dm(
                &ctx.http,
                service,
                app,
                owner,
                sent,
                text,
                rows,
                (&rotated.new_id, rotated.dm_lifetime),
            )
            .await
        }
        None => {
            let text = rotated_text(&rotated, super::delivery::EPHEMERAL_NOTE);
            follow_up_privately(&ctx.http, service, component, text, rows, &rotated.new_id).await
        }
    };
    let text = match shown {
        Ok(()) => format!(
            "✅ {} the {} of {}: the new one was {}; the old `{}…` {}.",
            if action == Action::IssueAgain {
                "Issued again"
            } else {
                "Rotated"
            },
            rotated.new.kind().label(),
            code(&app.details.name),
            if dm.is_some() {
                format!("sent to <@{owner}> by DM")
            } else {
                "shown to you below (your DMs are closed)".to_owned()
            },
            rotated.old.prefix,
            grace_text(rotated.grace_ends_at, rotated.cut_off)
        ),
        Err(e) => {
            // Issued but not shown: the owner can have it issued again.
            tracing::warn!(app = %app.id, error = format!("{e:#}"), "a new credential could not be shown");
            format!(
                "⚠️ The {} of {} was replaced, but the new one could not be delivered. <@{owner}> can press **Issue again** in `/app show` in a minute.",
                rotated.new.kind().label(),
                code(&app.details.name)
            )
        }
    };
    component
        .edit_response(
            &ctx.http,
            EditInteractionResponse::new()
                .content(text)
                .components(vec![])
                .allowed_mentions(no_pings()),
        )
        .await?;
    Ok(())
}

/// What a failed warning means for its queue.
enum WarningFailure {
    /// The owner cannot get it by DM (closed DMs, left the server): it goes
    /// to the audit channel.
    Unreachable,
    /// The bot is not in the server any more (or may not see it): nobody
    /// there can be told, so the stage is done.
    GuildGone,
    /// Rate limited: the pass stops, and the queue waits this long.
    RateLimited(Duration),
    Other,
}

fn classify(e: &serenity::Error) -> WarningFailure {
    if let RestFailure::RateLimited(wait) = RestFailure::of(e) {
        return WarningFailure::RateLimited(wait);
    }
    match discord_code(e) {
        // 50007 closed DMs, 10007 unknown member.
        Some(50007 | 10007) => WarningFailure::Unreachable,
        // 10004 unknown guild, 50001 missing access.
        Some(10004 | 50001) => WarningFailure::GuildGone,
        _ => WarningFailure::Other,
    }
}

async fn send_warning(http: &Http, w: &ClaimedWarning) -> Result<(), serenity::Error> {
    let app = &w.app;
    serenity::GuildId::new(app.guild_id.0)
        .member(http, serenity::UserId::new(app.owner_id.0))
        .await?;
    let dm = serenity::UserId::new(app.owner_id.0)
        .create_dm_channel(http)
        .await?;
    let text = format!(
        "⏳ The API key `{}…` of {} expires <t:{}:R> (<t:{}:f>). Rotate it before then: the new key comes here, and the old one keeps working for up to {} (never past its expiry).",
        w.due.key.prefix,
        code(&app.details.name),
        w.expires_at.timestamp(),
        w.expires_at.timestamp(),
        Grace::DEFAULT.as_str()
    );
    let button = CreateButton::new(
        CustomId::credential(Grace::DEFAULT.as_str(), &w.due.key.id, Action::RotateNow).to_string(),
    )
    .label("Rotate now")
    .style(ButtonStyle::Primary);
    dm.send_message(
        http,
        CreateMessage::new()
            .content(text)
            .components(vec![CreateActionRow::Buttons(vec![button])])
            // A retry after a crash posts it once.
            .nonce(serenity::Nonce::String(w.nonce()))
            .enforce_nonce(true)
            .allowed_mentions(no_pings()),
    )
    .await?;
    Ok(())
}

/// One pass: sends due expiry warnings, each claimed by one process just
/// before it is sent, and records expiries. It runs from the database, so a
/// restart loses none; failures back off per key, and a 429 holds the queue.
pub async fn tick(http: &Http, service: &Service) -> Pass {
    for due in service.due_warnings().await? {
        let Some(w) = service.claim_warning(due).await? else {
            continue;
        };
        let to_audit = match send_warning(http, &w).await {
            Ok(()) => false,
            Err(e) => {
                count_rest_error(&e);
                match classify(&e) {
                    WarningFailure::Unreachable => true,
                    WarningFailure::GuildGone => {
                        tracing::warn!(app = %w.app.id, error = %e, "the bot is not in the app's server; its expiry warning is dropped");
                        service.warning_sent(&w, false).await?;
                        continue;
                    }
                    WarningFailure::RateLimited(wait) => {
                        service.warning_failed(&w, Some(wait)).await?;
                        tracing::warn!(app = %w.app.id, "rate limited sending expiry warnings; backing off");
                        // The whole queue waits, not just this warning.
                        return Ok(Some(wait));
                    }
                    WarningFailure::Other => {
                        let next = service.warning_failed(&w, None).await?;
                        tracing::warn!(app = %w.app.id, error = %e, retry_at = %next, "could not send an expiry warning");
                        continue;
                    }
                }
            }
        };
        service.warning_sent(&w, to_audit).await?;
    }
    service.record_expiries().await?;
    Ok(None)
}
