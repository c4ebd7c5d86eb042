//! What the bot may do in a channel, worked out from Discord's REST API.

use poise::serenity_prelude as serenity;
use serenity::{Http, Permissions};

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

    /// Whether the bot may post embeds in `channel`, from the guild's roles,
    /// its member and the channel's overwrites.
    pub async fn access(
        &self,
        http: &Http,
        channel: serenity::ChannelId,
    ) -> serenity::Result<ChannelAccess> {
        let serenity::Channel::Guild(found) = http.get_channel(channel).await? else {
            return Ok(ChannelAccess::Elsewhere);
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
