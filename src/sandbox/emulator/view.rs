//! What one member sees of the emulated Discord: a guild's channels with the ephemeral
//! messages meant for them, their DMs, their open modal. The sandbox page draws it.

use super::json::snowflake;
use super::state::St;
use super::{EPHEMERAL, Emulator, Interaction, Member};
use serde_json::{Value, json};

/// A modal the bot opened for a member, not yet submitted or closed.
#[derive(Clone, Debug)]
pub struct OpenModal {
    /// The interaction whose callback opened it.
    pub opened_by: u64,
    pub custom_id: String,
    /// The message the opening interaction came from (a modal opened by a button).
    pub message: Option<Value>,
    /// Opened from a DM.
    pub in_dm: bool,
}

impl Emulator {
    /// The name `GET /guilds/{id}` answers with.
    pub fn set_guild_name(&self, guild: u64, name: &str) {
        self.lock().guild_names.insert(guild, name.to_owned());
        self.bump();
    }

    /// A message as `viewer` sees it now: `None` when it is gone, or when it is another
    /// member's ephemeral message.
    pub fn message_seen_by(&self, viewer: u64, id: u64) -> Option<Value> {
        let st = self.lock();
        let m = st.messages.get(&id)?;
        st.sees(viewer, id, m).then(|| m.clone())
    }

    /// The modal `user` has open.
    pub fn open_modal(&self, user: u64) -> Option<OpenModal> {
        let st = self.lock();
        let id = *st.open_modals.get(&user)?;
        let inter = st.interactions.get(&id)?;
        let callback = inter.callback.as_ref()?;
        Some(OpenModal {
            opened_by: id,
            custom_id: callback["data"]["custom_id"].as_str()?.to_owned(),
            message: inter.message_id.and_then(|m| st.messages.get(&m).cloned()),
            in_dm: st.dm_channels.get(&user) == Some(&inter.channel_id),
        })
    }

    /// Closes `user`'s modal without submitting it, as the member closing it in Discord does
    /// (Discord tells the bot nothing); `false` when that modal is not open.
    pub fn dismiss_modal(&self, user: u64, opened_by: u64) -> bool {
        let closed = {
            let mut st = self.lock();
            let open = st.open_modals.get(&user) == Some(&opened_by);
            if open {
                st.open_modals.remove(&user);
            }
            open
        };
        if closed {
            self.bump();
        }
        closed
    }

    /// Whether `channel` is `user`'s DM channel with the bot.
    pub fn is_dm_of(&self, user: u64, channel: u64) -> bool {
        self.lock().dm_channels.get(&user) == Some(&channel)
    }

    /// The guild's text channels as `(id, name)`, in their order.
    pub fn channels_of(&self, guild: u64) -> Vec<(u64, String)> {
        let st = self.lock();
        let mut channels: Vec<_> = st
            .channels
            .iter()
            .filter(|(_, c)| c.guild == guild)
            .map(|(id, c)| (c.position, *id, c.name.clone()))
            .collect();
        channels.sort_unstable();
        channels
            .into_iter()
            .map(|(_, id, name)| (id, name))
            .collect()
    }

    /// The commands a member of `guild` can type: the guild's, then the global ones.
    pub fn commands_in(&self, guild: u64) -> Vec<Value> {
        let st = self.lock();
        [Some(guild), None]
            .iter()
            .filter_map(|scope| st.command_scopes.get(scope))
            .flatten()
            .cloned()
            .collect()
    }

    /// The autocomplete choices of a type-8 callback.
    pub fn choices_of(&self, i: &Interaction) -> Option<Value> {
        let st = self.lock();
        let cb = st.interactions.get(&i.id)?.callback.as_ref()?;
        (cb["type"] == 8).then(|| cb["data"]["choices"].clone())
    }

    /// `viewer`'s view of `guild`: `{guild, members, roles, channels, commands, messages, dm,
    /// modal}` (the shape the sandbox page reads).
    pub fn view(&self, guild: u64, viewer: &Member) -> Value {
        let channels = self.channels_of(guild);
        let commands = self.commands_in(guild);
        let st = self.lock();
        let mut messages = serde_json::Map::new();
        for (id, _) in &channels {
            messages.insert(id.to_string(), json!(st.visible_messages(*id, viewer.id)));
        }
        let dm = st.dm_channels.get(&viewer.id).copied();
        let roles: Vec<Value> = st
            .roles
            .iter()
            .filter(|(id, (g, _, _))| *g == guild && **id != guild)
            .map(|(id, (_, name, _))| json!({ "id": id.to_string(), "name": name }))
            .collect();
        let modal = st.open_modals.get(&viewer.id).and_then(|id| {
            let data = &st.interactions.get(id)?.callback.as_ref()?["data"];
            Some(json!({
                "interaction_id": id.to_string(),
                "custom_id": data["custom_id"],
                "title": data["title"],
                "components": data["components"],
            }))
        });
        json!({
            "guild": { "id": guild.to_string(), "name": st.guild_name(guild) },
            "roles": roles,
            "channels": channels
                .iter()
                .map(|(id, name)| json!({ "id": id.to_string(), "name": name }))
                .collect::<Vec<_>>(),
            "commands": commands,
            "messages": messages,
            "dm": {
                "channel_id": dm.map(|c| c.to_string()),
                "messages": dm.map(|c| st.visible_messages(c, viewer.id)).unwrap_or_default(),
            },
            "modal": modal,
        })
    }
}

impl St {
    /// Everyone sees a message, except an ephemeral one: only the member whose interaction
    /// made it does.
    fn sees(&self, viewer: u64, id: u64, m: &Value) -> bool {
        let ephemeral = m["flags"].as_u64().unwrap_or(0) & EPHEMERAL != 0;
        !ephemeral
            || self
                .created_by
                .get(&id)
                .and_then(|i| self.interactions.get(i))
                .is_some_and(|i| i.user_id == viewer)
    }

    /// The channel's messages that `viewer` sees, oldest first: everyone's, and the ephemeral
    /// ones of their own interactions; each made by a command says who used which.
    fn visible_messages(&self, channel: u64, viewer: u64) -> Vec<Value> {
        self.messages
            .iter()
            .filter(|(_, m)| snowflake(&m["channel_id"]) == Some(channel))
            .filter_map(|(id, m)| {
                let origin = self
                    .created_by
                    .get(id)
                    .and_then(|i| self.interactions.get(i));
                if !self.sees(viewer, *id, m) {
                    return None;
                }
                let mut m = m.clone();
                if let Some(inter) = origin
                    && let Some(command) = &inter.command
                {
                    m["interaction"] = json!({
                        "user_name": self.user_name(inter.user_id),
                        "command": command,
                    });
                }
                Some(m)
            })
            .collect()
    }
}
