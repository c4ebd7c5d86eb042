//! Slash commands: `/app create`, `/app list`, `/app show`.

use super::access::{can_create, may_view};
use super::custom_id::{CustomId, NewDraft};
use super::error::{BotError, BotResult, stale};
use super::render::code;
use super::render::{credential_line, detail_fields, scope_labels, source_label, user_text};
use super::reply::{FIELD_MAX, clip, no_pings};
use super::wizard;
use super::{Bot, Context, approvals};
use crate::domain::application::Application;
use crate::domain::credentials::{APP_ID_PREFIX, ApplicationId};
use crate::domain::ids::{GuildId, UserId};
use crate::domain::lifecycle::StoredCredential;
use crate::domain::validation::AppForm;
use crate::service::{DraftStart, ServiceError};
use poise::CreateReply;
use poise::serenity_prelude as serenity;
use serenity::{CreateEmbed, CreateInteractionResponse};

pub(super) fn guild_of(ctx: &Context<'_>) -> BotResult<GuildId> {
    ctx.guild_id()
        .map(|g| GuildId(g.get()))
        .ok_or_else(|| BotError::User("use this command in a server".into()))
}

pub(super) fn member_of<'a>(ctx: &'a Context<'_>) -> Option<&'a serenity::Member> {
    match ctx {
        poise::Context::Application(actx) => actx.interaction.member.as_deref(),
        poise::Context::Prefix(_) => None,
    }
}

/// The guild's applications are for its creators and approvers to see.
async fn viewer_guild(ctx: &Context<'_>) -> BotResult<GuildId> {
    let guild = guild_of(ctx)?;
    if may_view(ctx.data(), guild, member_of(ctx)).await? {
        Ok(guild)
    } else {
        Err(BotError::User(
            "only application creators and approvers can see this server's applications".into(),
        ))
    }
}

/// Register and manage your API applications.
#[poise::command(
    slash_command,
    guild_only,
    subcommands(
        "create",
        "list",
        "show",
        "history",
        "withdraw",
        "super::lifecycle::rotate",
        "super::lifecycle::revoke"
    ),
    subcommand_required
)]
pub async fn app(_ctx: Context<'_>) -> BotResult<()> {
    Ok(())
}

/// Register a new application and get its credentials.
#[poise::command(slash_command, guild_only)]
pub async fn create(ctx: Context<'_>) -> BotResult<()> {
    let poise::Context::Application(actx) = ctx else {
        return Err(BotError::User("use the slash command".into()));
    };
    let guild = guild_of(&ctx)?;
    let bot = ctx.data();
    if !can_create(bot, guild, actx.interaction.member.as_deref()).await? {
        return Err(BotError::User(
            "you need the Manage Server permission or this server's creator role to register applications".into(),
        ));
    }
    let user = UserId(ctx.author().id.get());
    // Answered with a modal, which cannot follow a deferral: reads only. The
    // new draft is stored when its form is submitted.
    let response = match bot.service.open_draft(guild, user).await? {
        DraftStart::New(id) => {
            let draft = NewDraft {
                id,
                opener: user,
                replacing: None,
            };
            CreateInteractionResponse::Modal(wizard::new_draft_modal(&draft, &AppForm::default()))
        }
        DraftStart::Existing(saved) => {
            CreateInteractionResponse::Message(wizard::resume_prompt(&saved))
        }
    };
    actx.interaction
        .create_response(ctx.http(), response)
        .await?;
    Ok(())
}

fn summary_line(app: &Application) -> String {
    let marker = app
        .source_app
        .booking_marker()
        .map(|m| format!(" · {m}"))
        .unwrap_or_default();
    let key = app
        .key_prefix
        .as_deref()
        .map_or_else(|| "no key".to_owned(), |p| format!("`{p}…`"));
    format!(
        "**{}** — {}{marker} · {} · {} · {key} · <@{}> · <t:{}:d>",
        user_text(&app.details.name),
        app.source_app.label(),
        app.user_type.label(),
        app.status.label(),
        app.owner_id,
        app.created_at.timestamp()
    )
}

/// List this server's applications.
#[poise::command(slash_command, guild_only)]
pub async fn list(ctx: Context<'_>) -> BotResult<()> {
    let guild = viewer_guild(&ctx).await?;
    let apps = ctx.data().service.list_apps(guild).await?;
    let text = if apps.is_empty() {
        "No applications yet. Run `/app create` to register one.".to_owned()
    } else {
        // Newest first; an embed description holds 4096 characters.
        let mut text = String::new();
        let mut shown = 0;
        for app in apps.iter().rev() {
            let line = summary_line(app);
            if text.len() + line.len() + 40 > 4096 {
                break;
            }
            text.push_str(&line);
            text.push('\n');
            shown += 1;
        }
        if shown < apps.len() {
            text.push_str(&format!(
                "… and {} more: use `/app show` to find one.",
                apps.len() - shown
            ));
        }
        text
    };
    let embed = CreateEmbed::new()
        .title(format!("Applications ({})", apps.len()))
        .description(text)
        .colour(0x5865F2);
    ctx.send(
        CreateReply::default()
            .ephemeral(true)
            .embed(embed)
            .allowed_mentions(no_pings()),
    )
    .await?;
    Ok(())
}

pub(super) async fn app_choices(
    ctx: Context<'_>,
    partial: &str,
) -> serenity::CreateAutocompleteResponse {
    serenity::CreateAutocompleteResponse::new().set_choices(matching_apps(ctx, partial).await)
}

async fn matching_apps(ctx: Context<'_>, partial: &str) -> Vec<serenity::AutocompleteChoice> {
    let Ok(guild) = guild_of(&ctx) else {
        return Vec::new();
    };
    // A member who may not see the server's applications is offered none.
    match may_view(ctx.data(), guild, member_of(&ctx)).await {
        Ok(true) => {}
        Ok(false) => return Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "autocomplete failed");
            return Vec::new();
        }
    }
    let partial = partial.to_lowercase();
    match ctx.data().service.list_apps(guild).await {
        Ok(apps) => apps
            .into_iter()
            .filter(|a| a.details.name.to_lowercase().contains(&partial))
            .take(25)
            .map(|a| serenity::AutocompleteChoice::new(a.details.name.clone(), a.id.to_string()))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "autocomplete failed");
            Vec::new()
        }
    }
}

/// The guild's application named by an autocomplete choice (its ID) or by a
/// name typed by hand.
pub(super) async fn resolve(
    ctx: &Context<'_>,
    guild: GuildId,
    app: &str,
) -> BotResult<Application> {
    let service = &ctx.data().service;
    let found = match ApplicationId::parse(app) {
        Ok(id) if app.starts_with(APP_ID_PREFIX) => service.app(guild, &id).await,
        _ => service.app_by_name(guild, app).await,
    };
    match found {
        Err(ServiceError::AppNotFound) => Err(BotError::User(format!(
            "no application named {} in this server",
            code(app)
        ))),
        other => Ok(other?),
    }
}

/// Show one application (never its secrets).
#[poise::command(slash_command, guild_only)]
pub async fn show(
    ctx: Context<'_>,
    #[description = "The application"]
    #[autocomplete = "app_choices"]
    app: String,
) -> BotResult<()> {
    let guild = viewer_guild(&ctx).await?;
    let service = &ctx.data().service;
    let app = resolve(&ctx, guild, &app).await?;
    let (keys, secrets): (Vec<StoredCredential>, Vec<StoredCredential>) =
        service.credentials(&app).await?;
    let now = service.now();
    let lines = |list: &[StoredCredential], none: &str| {
        if list.is_empty() {
            none.to_owned()
        } else {
            clip(
                &list
                    .iter()
                    .map(|c| credential_line(c, now))
                    .collect::<Vec<_>>()
                    .join("\n"),
                FIELD_MAX,
            )
        }
    };
    let embed = CreateEmbed::new()
        .title(clip(&user_text(&app.details.name), 256))
        .colour(0x5865F2)
        .field("Application ID", format!("`{}`", app.id), false)
        .field("Status", app.status.label(), true)
        .field("Login User Type", app.user_type.label(), true)
        .field("Source App", source_label(app.source_app), true);
    let embed = detail_fields(embed, &app.details)
        .field(
            "Scopes",
            clip(&scope_labels(&app.scopes, service.catalog()), FIELD_MAX),
            false,
        )
        .field("API keys", lines(&keys, "none yet"), false)
        .field("Secret", lines(&secrets, "not issued yet"), false)
        .field("Owner", format!("<@{}>", app.owner_id), true)
        .field(
            "Created",
            format!("<t:{}:f>", app.created_at.timestamp()),
            true,
        );
    // A credential that never reached its owner can be issued again, by them.
    let lost: Vec<serenity::CreateButton> = keys
        .iter()
        .chain(&secrets)
        .filter(|c| {
            c.is_current() && service.is_lost(c, now) && app.owner_id.0 == ctx.author().id.get()
        })
        .map(|c| {
            serenity::CreateButton::new(
                CustomId::credential("now", &c.id, super::custom_id::Action::IssueAgain)
                    .to_string(),
            )
            .label(format!("Issue {} again", c.kind.label()))
            .style(serenity::ButtonStyle::Primary)
        })
        .collect();
    let rows = if lost.is_empty() {
        vec![]
    } else {
        vec![serenity::CreateActionRow::Buttons(lost)]
    };
    ctx.send(
        CreateReply::default()
            .ephemeral(true)
            .embed(embed)
            .components(rows)
            .allowed_mentions(no_pings()),
    )
    .await?;
    Ok(())
}

const HISTORY_PAGE: u32 = 10;

async fn history_message(
    bot: &Bot,
    guild: GuildId,
    app: &Application,
    page: u32,
) -> BotResult<(CreateEmbed, Vec<serenity::CreateActionRow>)> {
    let history = bot
        .service
        .history(guild, &app.id, page, HISTORY_PAGE)
        .await?;
    let lines: Vec<String> = history
        .events
        .iter()
        .map(|e| {
            let actor = e
                .actor_id
                .map_or_else(|| "keygate".to_owned(), |u| format!("<@{u}>"));
            format!(
                "<t:{}:f> **{}** by {actor}: {}",
                e.created_at.timestamp(),
                e.kind.label(),
                e.summary
            )
        })
        .collect();
    let text = if lines.is_empty() {
        "No events.".to_owned()
    } else {
        lines.join("\n")
    };
    let embed = CreateEmbed::new()
        .title(clip(
            &format!("History of {}", user_text(&app.details.name)),
            256,
        ))
        .description(clip(&text, 4096))
        .footer(serenity::CreateEmbedFooter::new(format!(
            "Page {}",
            page + 1
        )))
        .colour(0x5865F2);
    let mut buttons = Vec::new();
    if page > 0 {
        buttons.push(
            serenity::CreateButton::new(CustomId::history(app.id.as_str(), page - 1).to_string())
                .label("Newer")
                .style(serenity::ButtonStyle::Secondary),
        );
    }
    if history.has_more {
        buttons.push(
            serenity::CreateButton::new(CustomId::history(app.id.as_str(), page + 1).to_string())
                .label("Older")
                .style(serenity::ButtonStyle::Secondary),
        );
    }
    let rows = if buttons.is_empty() {
        vec![]
    } else {
        vec![serenity::CreateActionRow::Buttons(buttons)]
    };
    Ok((embed, rows))
}

/// An application's audit events, newest first.
#[poise::command(slash_command, guild_only)]
pub async fn history(
    ctx: Context<'_>,
    #[description = "The application"]
    #[autocomplete = "app_choices"]
    app: String,
) -> BotResult<()> {
    let guild = viewer_guild(&ctx).await?;
    let app = resolve(&ctx, guild, &app).await?;
    let (embed, rows) = history_message(ctx.data(), guild, &app, 0).await?;
    ctx.send(
        CreateReply::default()
            .ephemeral(true)
            .embed(embed)
            .components(rows)
            .allowed_mentions(no_pings()),
    )
    .await?;
    Ok(())
}

/// Newer / Older on a history message.
pub async fn on_history_page(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &serenity::ComponentInteraction,
    cid: &CustomId,
) -> BotResult<()> {
    let (page, _) = cid.history_page().ok_or_else(stale)?;
    let id = cid.app_id().ok_or_else(stale)?;
    let guild = component
        .guild_id
        .ok_or_else(|| BotError::User("use this in a server".into()))?;
    let guild = GuildId(guild.get());
    if !may_view(bot, guild, component.member.as_ref()).await? {
        return Err(BotError::User(
            "only application creators and approvers can see this server's applications".into(),
        ));
    }
    let app = bot.service.app(guild, &id).await?;
    let (embed, rows) = history_message(bot, guild, &app, page).await?;
    let message = serenity::CreateInteractionResponseMessage::new()
        .embed(embed)
        .components(rows)
        .allowed_mentions(no_pings());
    component
        .create_response(&ctx.http, CreateInteractionResponse::UpdateMessage(message))
        .await?;
    Ok(())
}

/// Withdraw your pending request.
#[poise::command(slash_command, guild_only)]
pub async fn withdraw(
    ctx: Context<'_>,
    #[description = "The application"]
    #[autocomplete = "app_choices"]
    app: String,
) -> BotResult<()> {
    // Answered first: withdrawing edits the request in the approvals channel.
    ctx.defer_ephemeral().await?;
    let guild = guild_of(&ctx)?;
    let named = app;
    let not_found = || {
        BotError::User(format!(
            "no application named {} in this server",
            code(&named)
        ))
    };
    // Someone else's request reads as no request at all: withdraw tells
    // nobody which apps exist.
    let app = resolve(&ctx, guild, &named).await?;
    let user = UserId(ctx.author().id.get());
    if app.owner_id != user {
        return Err(not_found());
    }
    let app = approvals::withdraw(ctx.http(), ctx.data(), guild, &app.id, user).await?;
    ctx.send(
        CreateReply::default()
            .ephemeral(true)
            .content(format!("↩️ You withdrew {}.", code(&app.details.name)))
            .allowed_mentions(no_pings()),
    )
    .await?;
    Ok(())
}
