//! What one member sees of the emulated Discord, and what their Discord client would let them send.

use super::interactions::Origin;
use super::json::snowflake;
use super::state::St;
use super::{EPHEMERAL, Emulator, Interaction, Member};
use serde_json::{Value, json};
use std::collections::HashMap;

/// A modal the bot opened for a member, not yet submitted or closed.
#[derive(Clone, Debug)]
pub struct OpenModal {
    /// The interaction whose callback opened it.
    pub opened_by: u64,
    pub custom_id: String,
    /// The message the opening interaction came from (a modal opened by a button).
    pub message: Option<Value>,
    /// The channel it was opened in, which its submit comes from too.
    pub channel_id: u64,
    /// Opened from a DM.
    pub in_dm: bool,
    /// Its action rows of text inputs, as the bot sent them.
    pub components: Value,
}

/// What a Discord client would not let a member send.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("that message is gone")]
    NoMessage,
    #[error("that message has no such button or menu")]
    NoComponent,
    #[error("that button or menu is disabled")]
    Disabled,
    #[error("{0}")]
    Choice(String),
    #[error("that form is no longer open")]
    NoModal,
    #[error("{0}")]
    Field(String),
}

/// Whether `member` holds the command's `default_member_permissions` (none: everyone).
pub fn may_use(command: &Value, member: &Member) -> bool {
    let needed = match &command["default_member_permissions"] {
        Value::Null => return true,
        Value::String(bits) => bits.parse::<u64>().ok(),
        Value::Number(bits) => bits.as_u64(),
        _ => None,
    };
    let admin = member.permissions & serenity::all::Permissions::ADMINISTRATOR.bits() != 0;
    // "0" (or anything unreadable) leaves the command to administrators, as Discord does.
    admin || needed.is_some_and(|bits| bits != 0 && member.permissions & bits == bits)
}

/// The text inputs of a modal's rows: `(custom_id, input)`.
fn inputs(components: &Value) -> Vec<(&str, &Value)> {
    components
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().into_iter().flatten())
        .filter_map(|c| Some((c["custom_id"].as_str()?, c)))
        .collect()
}

/// A Discord client's checks of a text input: required, and the length limits.
fn check_input(input: &Value, value: &str) -> Result<(), Refused> {
    let label = input["label"].as_str().unwrap_or("a field");
    let len = value.chars().count() as u64;
    let required = input["required"].as_bool().unwrap_or(true);
    if required && value.trim().is_empty() {
        return Err(Refused::Field(format!("{label} is required")));
    }
    if len > 0 && input["min_length"].as_u64().is_some_and(|min| len < min) {
        return Err(Refused::Field(format!("{label} is too short")));
    }
    if input["max_length"].as_u64().is_some_and(|max| len > max) {
        return Err(Refused::Field(format!("{label} is too long")));
    }
    Ok(())
}

/// A Discord client's checks of a select: known values, between min and max of them.
fn check_choice(select: &Value, values: &[String]) -> Result<(), Refused> {
    let min = select["min_values"].as_u64().unwrap_or(1) as usize;
    let max = select["max_values"].as_u64().unwrap_or(1) as usize;
    if values.len() < min || values.len() > max {
        return Err(Refused::Choice(format!(
            "choose between {min} and {max} option(s)"
        )));
    }
    // Only string selects list their options; user, role and channel ones take ids.
    if let Some(options) = select["options"].as_array() {
        let known = |v: &String| options.iter().any(|o| o["value"].as_str() == Some(v));
        if let Some(unknown) = values.iter().find(|v| !known(v)) {
            return Err(Refused::Choice(format!(
                "`{unknown}` is not one of the options"
            )));
        }
    }
    Ok(())
}

impl Emulator {
    /// The name `GET /guilds/{id}` answers with.
    pub fn set_guild_name(&self, guild: u64, name: &str) {
        self.lock().guild_names.insert(guild, name.to_owned());
        self.bump();
    }

    /// A message as `viewer` sees it now: `None` when it is gone, or when it is another
    /// member's ephemeral message or DM.
    pub fn message_seen_by(&self, viewer: u64, id: u64) -> Option<Value> {
        let st = self.lock();
        let m = st.messages.get(&id)?;
        st.sees(viewer, id, m).then(|| m.clone())
    }

    /// Counts the changes a member could see; heartbeats and REST calls that change nothing
    /// on screen leave it alone.
    pub fn shown_version(&self) -> u64 {
        self.lock().shown
    }

    /// Refuses callbacks more than 3 seconds after their interaction's dispatch, as Discord
    /// does (set for every emulator with a latency, see `set_latency`).
    pub fn enforce_deadline(&self) {
        self.lock().deadline = true;
    }

    /// The INTERACTION_CREATE of `viewer` pressing a button (`values` none) or choosing in a
    /// select on a message they see, checked as a Discord client checks it.
    pub fn component_payload(
        &self,
        viewer: &Member,
        message_id: u64,
        custom_id: &str,
        values: Option<&[String]>,
    ) -> Result<(Interaction, Value), Refused> {
        let message = self
            .message_seen_by(viewer.id, message_id)
            .ok_or(Refused::NoMessage)?;
        let component = message["components"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row["components"].as_array().into_iter().flatten())
            .find(|c| c["custom_id"].as_str() == Some(custom_id))
            .ok_or(Refused::NoComponent)?;
        if component["disabled"].as_bool().unwrap_or(false) {
            return Err(Refused::Disabled);
        }
        let in_dm = snowflake(&message["channel_id"]).is_some_and(|c| self.is_dm_of(viewer.id, c));
        match (component["type"].as_u64(), values) {
            (Some(2), None) => Ok(self.button_payload(viewer, &message, custom_id, in_dm)),
            (Some(3..=8), Some(values)) => {
                check_choice(component, values)?;
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                Ok(self.select_payload(viewer, &message, custom_id, &values, in_dm))
            }
            _ => Err(Refused::NoComponent),
        }
    }

    /// The INTERACTION_CREATE of `viewer` submitting the modal `opened_by` opened, with
    /// `values` by input id: every input in the modal's order (a left-out one empty), from
    /// where it was opened, checked as a Discord client checks it.
    pub fn modal_submit_payload(
        &self,
        viewer: &Member,
        opened_by: u64,
        values: &HashMap<String, String>,
    ) -> Result<(Interaction, Value), Refused> {
        let open = self
            .open_modal(viewer.id)
            .filter(|m| m.opened_by == opened_by)
            .ok_or(Refused::NoModal)?;
        let inputs = inputs(&open.components);
        if let Some(unknown) = values
            .keys()
            .find(|k| !inputs.iter().any(|(id, _)| id == k))
        {
            return Err(Refused::Field(format!("the form has no field `{unknown}`")));
        }
        let mut rows = Vec::new();
        for (id, input) in inputs {
            let value = values.get(id).map_or("", String::as_str);
            check_input(input, value)?;
            rows.push(json!({ "type": 1, "components": [{ "type": 4, "custom_id": id, "value": value }] }));
        }
        let data = json!({ "custom_id": open.custom_id, "components": rows });
        let origin = Origin {
            in_dm: open.in_dm,
            message: open.message.as_ref(),
            channel: Some(open.channel_id),
            command: None,
        };
        Ok(self.build_interaction(viewer, 5, data, origin))
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
            channel_id: inter.channel_id,
            in_dm: st.dm_channels.get(&user) == Some(&inter.channel_id),
            components: callback["data"]["components"].clone(),
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
                st.shown += 1;
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
        // Discord lists a command only to members with its default permissions.
        let commands: Vec<Value> = self
            .commands_in(guild)
            .into_iter()
            .filter(|c| may_use(c, viewer))
            .collect();
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
    /// Everyone sees a guild channel's messages, except ephemeral ones: only the member whose
    /// interaction made it does. A DM only its recipient sees.
    fn sees(&self, viewer: u64, id: u64, m: &Value) -> bool {
        let channel = snowflake(&m["channel_id"]).unwrap_or_default();
        if self.dm_recipient(channel).is_some_and(|u| u != viewer) {
            return false;
        }
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
        self.in_channel(channel)
            .filter_map(|(id, m)| {
                let origin = self
                    .created_by
                    .get(&id)
                    .and_then(|i| self.interactions.get(i));
                if !self.sees(viewer, id, m) {
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

#[cfg(test)]
mod tests {
    use super::{Member, may_use};
    use serde_json::json;

    #[test]
    fn a_command_is_offered_as_its_default_permissions_say() {
        let (admin, member) = (Member::admin(1, "ada"), Member::member(2, "dev"));
        let manager = Member::member(3, "mia").with_permissions(1 << 5);
        let manage_guild = json!({ "name": "keygate", "default_member_permissions": "32" });
        assert!(may_use(&manage_guild, &admin) && may_use(&manage_guild, &manager));
        assert!(!may_use(&manage_guild, &member));
        let everyone = json!({ "name": "app", "default_member_permissions": null });
        assert!(may_use(&everyone, &member));
        let admins_only = json!({ "name": "x", "default_member_permissions": "0" });
        assert!(may_use(&admins_only, &admin) && !may_use(&admins_only, &manager));
    }
}
