//! `/keygate setup` and `/keygate settings`: a guild's configuration.

use super::Context;
use super::access::{BotStanding, ChannelAccess};
use super::error::{BotError, BotResult};
use super::reply::no_pings;
use crate::domain::ids::{ChannelId, GuildId, RoleId, UserId};
use crate::domain::settings::GuildSettings;
use crate::service::{Actor, Clearable, SettingsChange};
use poise::CreateReply;
use poise::serenity_prelude as serenity;
use serenity::CreateEmbed;

fn guild_of(ctx: &Context<'_>) -> BotResult<GuildId> {
    ctx.guild_id()
        .map(|g| GuildId(g.get()))
        .ok_or_else(|| BotError::User("use this command in a server".into()))
}

/// A setting `clear:` can unset.
#[derive(Debug, Clone, Copy, poise::ChoiceParameter)]
pub enum ClearChoice {
    #[name = "audit_channel"]
    AuditChannel,
    #[name = "approvals_channel"]
    ApprovalsChannel,
    #[name = "approver_role"]
    ApproverRole,
    #[name = "creator_role"]
    CreatorRole,
}

impl From<ClearChoice> for Clearable {
    fn from(c: ClearChoice) -> Self {
        match c {
            ClearChoice::AuditChannel => Clearable::AuditChannel,
            ClearChoice::ApprovalsChannel => Clearable::ApprovalsChannel,
            ClearChoice::ApproverRole => Clearable::ApproverRole,
            ClearChoice::CreatorRole => Clearable::CreatorRole,
        }
    }
}

/// Configure keygate for this server.
#[poise::command(
    slash_command,
    guild_only,
    subcommands("setup", "settings"),
    subcommand_required,
    default_member_permissions = "MANAGE_GUILD"
)]
pub async fn keygate(_ctx: Context<'_>) -> BotResult<()> {
    Ok(())
}

async fn bot_standing(ctx: &Context<'_>, guild: serenity::GuildId) -> BotResult<BotStanding> {
    Ok(BotStanding::read(ctx.http(), guild, ctx.framework().bot_id).await?)
}

/// Refuses a channel the bot cannot post embeds in.
async fn check_channel(
    ctx: &Context<'_>,
    standing: &BotStanding,
    channel: serenity::ChannelId,
    what: &str,
) -> BotResult<()> {
    match standing.access(ctx.http(), channel).await? {
        ChannelAccess::CanPost => Ok(()),
        ChannelAccess::Elsewhere => Err(BotError::User(format!(
            "{what} must be a text channel of this server"
        ))),
        ChannelAccess::CannotPost => Err(BotError::User(format!(
            "I cannot post in <#{channel}> (I need View Channel, Send Messages and Embed Links there), so the {what} was not changed"
        ))),
    }
}

fn is_manager(ctx: &Context<'_>) -> bool {
    let poise::Context::Application(actx) = ctx else {
        return false;
    };
    actx.interaction
        .member
        .as_ref()
        .and_then(|m| m.permissions)
        .is_some_and(|p| p.manage_guild() || p.administrator())
}

/// Change keygate's settings; each option changes only itself.
#[allow(clippy::too_many_arguments)]
#[poise::command(slash_command, guild_only)]
pub async fn setup(
    ctx: Context<'_>,
    #[description = "Channel that receives every audit event"] audit_channel: Option<
        serenity::ChannelId,
    >,
    #[description = "Channel where approvers decide requests"] approvals_channel: Option<
        serenity::ChannelId,
    >,
    #[description = "Role whose members approve requests"] approver_role: Option<serenity::RoleId>,
    #[description = "Role whose members may create applications"] creator_role: Option<
        serenity::RoleId,
    >,
    #[description = "Approvals needed before credentials are issued (0 = none)"]
    #[min = 0]
    #[max = 5]
    approvals_required: Option<i64>,
    #[description = "Minutes before delivered secrets are removed from DMs"]
    #[min = 1]
    #[max = 1440]
    dm_lifetime_minutes: Option<i64>,
    #[description = "Hours a request waits for approvers"]
    #[min = 1]
    #[max = 720]
    request_expiry_hours: Option<i64>,
    #[description = "Days a new API key works (warnings go out 30, 7 and 1 days before)"]
    #[min = 1]
    #[max = 730]
    key_lifetime_days: Option<i64>,
    #[description = "A setting to unset (back to its default)"] clear: Option<ClearChoice>,
) -> BotResult<()> {
    // Discord hides the command from others by default, but a server can
    // change that: the permission is checked here too.
    if !is_manager(&ctx) {
        return Err(BotError::User(
            "you need the Manage Server permission to change keygate's settings".into(),
        ));
    }
    // Answered first: checking the channels takes REST calls.
    ctx.defer_ephemeral().await?;
    let guild = guild_of(&ctx)?;
    let discord_guild = serenity::GuildId::new(guild.0);
    let channels = [
        (audit_channel, "audit channel"),
        (approvals_channel, "approvals channel"),
    ];
    let mut warning = None;
    if channels.iter().any(|(c, _)| c.is_some()) || approver_role.is_some() {
        let standing = bot_standing(&ctx, discord_guild).await?;
        for (channel, what) in channels {
            if let Some(c) = channel {
                check_channel(&ctx, &standing, c, what).await?;
            }
        }
        if let Some(role) = approver_role.filter(|r| !standing.can_ping(*r)) {
            warning = Some(format!(
                "\n⚠️ Reminders mention <@&{role}>, but Discord will not notify its members: make the role mentionable, or give keygate the Mention Everyone permission."
            ));
        }
    }
    let change = SettingsChange {
        audit_channel: audit_channel.map(|c| ChannelId(c.get())),
        approvals_channel: approvals_channel.map(|c| ChannelId(c.get())),
        approver_role: approver_role.map(|r| RoleId(r.get())),
        creator_role: creator_role.map(|r| RoleId(r.get())),
        approvals_required,
        dm_lifetime_minutes,
        request_expiry_hours,
        key_lifetime_days,
        clear: clear.map(Clearable::from),
    };
    let actor = Actor::member(UserId(ctx.author().id.get()));
    let settings = ctx
        .data()
        .service
        .update_settings(guild, actor, &change)
        .await?;
    ctx.send(
        CreateReply::default()
            .ephemeral(true)
            .content(format!("Settings saved.{}", warning.unwrap_or_default()))
            .embed(settings_embed(&settings))
            .allowed_mentions(no_pings()),
    )
    .await?;
    Ok(())
}

/// Show keygate's settings for this server.
#[poise::command(slash_command, guild_only)]
pub async fn settings(ctx: Context<'_>) -> BotResult<()> {
    // As for setup: a server can open the command to others.
    if !is_manager(&ctx) {
        return Err(BotError::User(
            "you need the Manage Server permission to see keygate's settings".into(),
        ));
    }
    let guild = guild_of(&ctx)?;
    let settings = ctx.data().service.settings(guild).await?;
    ctx.send(
        CreateReply::default()
            .ephemeral(true)
            .embed(settings_embed(&settings))
            .allowed_mentions(no_pings()),
    )
    .await?;
    Ok(())
}

fn settings_embed(s: &GuildSettings) -> CreateEmbed {
    let channel =
        |c: Option<ChannelId>| c.map_or_else(|| "not set".to_owned(), |c| format!("<#{c}>"));
    let role = |r: Option<RoleId>, default: &str| {
        r.map_or_else(|| default.to_owned(), |r| format!("<@&{r}>"))
    };
    CreateEmbed::new()
        .title("keygate settings")
        .colour(0x5865F2)
        .field("Audit channel", channel(s.audit_channel), true)
        .field("Approvals channel", channel(s.approvals_channel), true)
        .field("Approvals required", s.approvals_required.to_string(), true)
        .field(
            "Approver role",
            role(s.approver_role, "Manage Server"),
            true,
        )
        .field("Creator role", role(s.creator_role, "Manage Server"), true)
        .field(
            "DM lifetime",
            format!("{} min", s.dm_lifetime.num_minutes()),
            true,
        )
        .field(
            "Request expiry",
            format!("{} h", s.request_expiry.num_hours()),
            true,
        )
        .field(
            "Key lifetime",
            format!("{} days", s.key_lifetime.num_days()),
            true,
        )
}
