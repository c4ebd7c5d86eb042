//! Who may do what: members' rights from their roles and the server's
//! settings, and the bot's own permissions in a channel from Discord's REST API.

use super::Bot;
use super::error::BotResult;
use super::reply::discord_code;
use crate::domain::ids::GuildId;
use poise::serenity_prelude as serenity;
use serenity::{Http, Permissions};

/// Manage Server (or Administrator, which implies it).
pub fn is_manager(member: &serenity::Member) -> bool {
    member
        .permissions
        .is_some_and(|p| p.manage_guild() || p.administrator())
}

/// Holds the guild's approver role, or Manage Server when none is set;
/// judged on the member as the interaction shows them now.
pub async fn is_approver(
    bot: &Bot,
    guild: GuildId,
    member: Option<&serenity::Member>,
) -> BotResult<bool> {
    let Some(member) = member else {
        return Ok(false);
    };
    let settings = bot.service.settings(guild).await?;
    Ok(match settings.approver_role {
        Some(role) => member.roles.iter().any(|r| r.get() == role.0),
        None => is_manager(member),
    })
}

/// Holds the guild's creator role, or Manage Server.
pub async fn can_create(
    bot: &Bot,
    guild: GuildId,
    member: Option<&serenity::Member>,
) -> BotResult<bool> {
    let Some(member) = member else {
        return Ok(false);
    };
    let settings = bot.service.settings(guild).await?;
    Ok(match settings.creator_role {
        Some(role) => member.roles.iter().any(|r| r.get() == role.0) || is_manager(member),
        None => is_manager(member),
    })
}

/// Whether the member may see the guild's applications: its creators and
/// approvers may (`/app list`'s rule, for every way of naming an app).
pub async fn may_view(
    bot: &Bot,
    guild: GuildId,
    member: Option<&serenity::Member>,
) -> BotResult<bool> {
    Ok(can_create(bot, guild, member).await? || is_approver(bot, guild, member).await?)
}

/// What the bot needs in a channel it posts embeds to.
pub const POSTING: Permissions = Permissions::VIEW_CHANNEL
    .union(Permissions::SEND_MESSAGES)
    .union(Permissions::EMBED_LINKS);

/// The guild's roles and the bot's member: what the bot's permissions in any
/// of its channels are computed from (read once per use).
pub struct BotStanding {
    guild: serenity::PartialGuild,
    me: serenity::Member,
}

/// Where a channel stands for the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelAccess {
    /// Not a channel of this guild (a DM, another server's, a category).
    Elsewhere,
    CannotPost,
    CanPost,
}

impl BotStanding {
    pub async fn read(
        http: &Http,
        guild: serenity::GuildId,
        bot: serenity::UserId,
    ) -> serenity::Result<Self> {
        Ok(Self {
            guild: http.get_guild(guild).await?,
            me: http.get_member(guild, bot).await?,
        })
    }

    /// Whether a message of the bot's that allows `role`'s mention pings its
    /// members: Discord drops the ping unless the role is mentionable or the
    /// bot has Mention Everyone (server-wide; channel overwrites aside).
    pub fn can_ping(&self, role: serenity::RoleId) -> bool {
        self.guild.roles.get(&role).is_some_and(|r| r.mentionable)
            || self.guild.member_permissions(&self.me).mention_everyone()
    }

    /// Whether the bot may post embeds in `channel`, from the guild's roles,
    /// its member and the channel's overwrites.
    pub async fn access(
        &self,
        http: &Http,
        channel: serenity::ChannelId,
    ) -> serenity::Result<ChannelAccess> {
        let found = match http.get_channel(channel).await {
            Ok(serenity::Channel::Guild(found)) => found,
            Ok(_) => return Ok(ChannelAccess::Elsewhere),
            // Discord hides a channel the bot may not view (50001) and one
            // that is gone (10003): answers, not failures.
            Err(e) => {
                return match discord_code(&e) {
                    Some(50001) => Ok(ChannelAccess::CannotPost),
                    Some(10003) => Ok(ChannelAccess::Elsewhere),
                    _ => Err(e),
                };
            }
        };
        if found.guild_id != self.guild.id {
            return Ok(ChannelAccess::Elsewhere);
        }
        Ok(
            if self
                .guild
                .user_permissions_in(&found, &self.me)
                .contains(POSTING)
            {
                ChannelAccess::CanPost
            } else {
                ChannelAccess::CannotPost
            },
        )
    }
}
