//! Interactions: the payloads of a member's clicks and commands, their dispatch, their answer.

use super::json::{
    dispatch_frame, infer_option_type, member_json, option_specs, ready_frame, snowflake,
    user_json, wrap_subcommand,
};
use super::state::Inter;
use super::{Emulator, Interaction, Member, Timeout, WAIT};
use axum::extract::ws::Message as WsMessage;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Where an interaction comes from.
#[derive(Default)]
pub(super) struct Origin<'a> {
    pub(super) in_dm: bool,
    /// The message a component or modal submit belongs to.
    pub(super) message: Option<&'a Value>,
    /// The guild channel a command is typed in, when no message says it.
    pub(super) channel: Option<u64>,
    /// A chat-input command's `"name sub"`.
    pub(super) command: Option<String>,
}

impl<'a> Origin<'a> {
    fn message(message: &'a Value, in_dm: bool) -> Self {
        Self {
            in_dm,
            message: Some(message),
            ..Self::default()
        }
    }
}

impl Emulator {
    pub async fn slash_command(
        &self,
        user: &Member,
        command: &str,
        subcommand: Option<&str>,
        options: Vec<(&str, Value)>,
    ) -> Result<Interaction, Timeout> {
        let (i, d) = self.slash_command_payload(user, command, subcommand, options);
        self.dispatch("INTERACTION_CREATE", d).await?;
        Ok(i)
    }

    pub async fn autocomplete(
        &self,
        user: &Member,
        command: &str,
        subcommand: Option<&str>,
        option: &str,
        typed: &str,
    ) -> Result<Interaction, Timeout> {
        let (i, d) = self.autocomplete_payload(user, command, subcommand, option, typed);
        self.dispatch("INTERACTION_CREATE", d).await?;
        Ok(i)
    }

    pub async fn press_button(
        &self,
        user: &Member,
        message: &Value,
        custom_id: &str,
    ) -> Result<Interaction, Timeout> {
        let (i, d) = self.button_payload(user, message, custom_id, false);
        self.dispatch("INTERACTION_CREATE", d).await?;
        Ok(i)
    }

    pub async fn press_button_in_dm(
        &self,
        user: &Member,
        message: &Value,
        custom_id: &str,
    ) -> Result<Interaction, Timeout> {
        let (i, d) = self.button_payload(user, message, custom_id, true);
        self.dispatch("INTERACTION_CREATE", d).await?;
        Ok(i)
    }

    pub async fn select(
        &self,
        user: &Member,
        message: &Value,
        custom_id: &str,
        values: &[&str],
    ) -> Result<Interaction, Timeout> {
        let (i, d) = self.select_payload(user, message, custom_id, values, false);
        self.dispatch("INTERACTION_CREATE", d).await?;
        Ok(i)
    }

    pub async fn select_in_dm(
        &self,
        user: &Member,
        message: &Value,
        custom_id: &str,
        values: &[&str],
    ) -> Result<Interaction, Timeout> {
        let (i, d) = self.select_payload(user, message, custom_id, values, true);
        self.dispatch("INTERACTION_CREATE", d).await?;
        Ok(i)
    }

    pub async fn submit_modal(
        &self,
        user: &Member,
        custom_id: &str,
        fields: &[(&str, &str)],
        message: Option<&Value>,
    ) -> Result<Interaction, Timeout> {
        let (i, d) = self.modal_payload(user, custom_id, fields, message, false);
        self.dispatch("INTERACTION_CREATE", d).await?;
        Ok(i)
    }

    pub async fn submit_modal_in_dm(
        &self,
        user: &Member,
        custom_id: &str,
        fields: &[(&str, &str)],
        message: Option<&Value>,
    ) -> Result<Interaction, Timeout> {
        let (i, d) = self.modal_payload(user, custom_id, fields, message, true);
        self.dispatch("INTERACTION_CREATE", d).await?;
        Ok(i)
    }

    /// Sends a dispatch (op 0) as Discord routes it: an event with a `guild_id` to the ready
    /// connection of that guild's shard ([`Self::shard_of`]), one without (a DM's) to shard 0's;
    /// waits for that connection if it is not open.
    pub async fn dispatch(&self, event: &str, d: Value) -> Result<(), Timeout> {
        let guild = snowflake(&d["guild_id"]);
        let what = match guild {
            Some(g) => {
                format!("a ready gateway connection for guild {g}'s shard to send {event} to")
            }
            None => format!("a ready gateway connection for shard 0 to send {event} (no guild) to"),
        };
        let interaction = d["id"].as_str().and_then(|id| id.parse::<u64>().ok());
        self.wait_for(&what, |st| {
            let conn = st
                .live
                .values_mut()
                .find(|c| c.shard.0 == guild.map_or(0, |g| Self::shard_of(g, c.shard.1)))?;
            let shard = conn.shard.0;
            conn.seq += 1;
            let frame = dispatch_frame(event, conn.seq, d.clone());
            // Taken before the send: the bot's answer may be sent (and
            // stamped) before this closure is done.
            let at = std::time::Instant::now();
            conn.tx
                .send(WsMessage::Text(frame.to_string().into()))
                .ok()?;
            if let Some(inter) = interaction.and_then(|id| st.interactions.get_mut(&id)) {
                inter.dispatched_at = Some(at);
                inter.dispatched_to = Some(shard);
            }
            Some(())
        })
        .await
    }

    /// The REST calls the bot sent from the interaction's dispatch on, in the
    /// order it sent them, as `METHOD path`: with a latency, whether its
    /// callback came before anything else it did.
    pub fn calls_after_dispatch(&self, i: &Interaction) -> Vec<String> {
        let st = self.lock();
        let Some(dispatched) = st.interactions.get(&i.id).and_then(|x| x.dispatched_at) else {
            return Vec::new();
        };
        let mut calls: Vec<_> = st
            .requests
            .iter()
            .filter(|r| r.sent_at >= dispatched)
            .collect();
        calls.sort_by_key(|r| r.sent_at);
        calls
            .into_iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// The shard whose connection the interaction's INTERACTION_CREATE went out on (the last
    /// time, if sent more than once); `None` before it is dispatched.
    pub fn dispatched_to(&self, i: &Interaction) -> Option<u32> {
        self.lock().interactions.get(&i.id)?.dispatched_to
    }

    /// Time from the interaction's dispatch to its callback, once both happened: what a
    /// Discord user waits for, less the network.
    pub fn latency(&self, i: &Interaction) -> Option<Duration> {
        let st = self.lock();
        let inter = st.interactions.get(&i.id)?;
        Some(inter.answered_at?.duration_since(inter.dispatched_at?))
    }

    /// Time from the interaction's dispatch to the moment the member saw
    /// its content (see `Inter::shown_at`), waiting for that moment: what
    /// a step's latency is.
    pub async fn shown_latency(&self, i: &Interaction) -> Result<Duration, Timeout> {
        let what = format!("interaction {}'s content", i.id);
        self.wait_on(i, &what, WAIT, |x| {
            Some(x.shown_at?.duration_since(x.dispatched_at?))
        })
        .await
    }

    /// Waits up to `wait` until `f` yields for the interaction, woken by its own answers only
    /// (see `Inter::answered`).
    pub(super) async fn wait_on<T>(
        &self,
        i: &Interaction,
        what: &str,
        wait: Duration,
        f: impl Fn(&Inter) -> Option<T>,
    ) -> Result<T, Timeout> {
        let Some(answered) = self
            .lock()
            .interactions
            .get(&i.id)
            .map(|x| x.answered.clone())
        else {
            return Err(self.timeout(what));
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the check, so an answer in between is not missed.
            let notified = answered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let found = self.lock().interactions.get(&i.id).and_then(&f);
            if let Some(v) = found {
                return Ok(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(self.timeout(what));
            }
        }
    }

    /// The `d` of an INTERACTION_CREATE for a chat-input command in the user's guild's
    /// "general"; registers the interaction with the emulator but does not send it.
    pub fn slash_command_payload(
        &self,
        user: &Member,
        command: &str,
        subcommand: Option<&str>,
        options: Vec<(&str, Value)>,
    ) -> (Interaction, Value) {
        self.command_payload(user, None, command, subcommand, options)
    }

    /// As [`Self::slash_command_payload`], typed in `channel` (`None`: "general").
    pub fn command_payload(
        &self,
        user: &Member,
        channel: Option<u64>,
        command: &str,
        subcommand: Option<&str>,
        options: Vec<(&str, Value)>,
    ) -> (Interaction, Value) {
        let data = {
            let st = self.lock();
            let (id, spec) = st.command_spec(command, user.guild);
            let spec_options = option_specs(spec.as_ref(), subcommand);
            let mut resolved = Map::new();
            let opts: Vec<Value> = options
                .into_iter()
                .map(|(name, value)| {
                    let kind = spec_options
                        .iter()
                        .find(|o| o["name"] == name)
                        .and_then(|o| o["type"].as_u64())
                        .unwrap_or_else(|| infer_option_type(&value));
                    let value = st.resolve_option(kind, value, &mut resolved);
                    json!({ "name": name, "type": kind, "value": value })
                })
                .collect();
            let mut data = json!({
                "id": id.to_string(),
                "name": command,
                "type": 1,
                "options": wrap_subcommand(subcommand, opts),
                "guild_id": user.guild.to_string(),
            });
            if !resolved.is_empty() {
                data["resolved"] = Value::Object(resolved);
            }
            data
        };
        let name = match subcommand {
            Some(sub) => format!("{command} {sub}"),
            None => command.to_owned(),
        };
        let origin = Origin {
            channel,
            command: Some(name),
            ..Origin::default()
        };
        self.build_interaction(user, 2, data, origin)
    }

    pub fn autocomplete_payload(
        &self,
        user: &Member,
        command: &str,
        subcommand: Option<&str>,
        option: &str,
        typed: &str,
    ) -> (Interaction, Value) {
        self.autocomplete_payload_in(user, None, command, subcommand, option, typed)
    }

    /// As [`Self::autocomplete_payload`], typed in `channel` (`None`: "general").
    pub fn autocomplete_payload_in(
        &self,
        user: &Member,
        channel: Option<u64>,
        command: &str,
        subcommand: Option<&str>,
        option: &str,
        typed: &str,
    ) -> (Interaction, Value) {
        let data = {
            let st = self.lock();
            let (id, spec) = st.command_spec(command, user.guild);
            let kind = option_specs(spec.as_ref(), subcommand)
                .iter()
                .find(|o| o["name"] == option)
                .and_then(|o| o["type"].as_u64())
                .unwrap_or(3);
            let focused = json!({ "name": option, "type": kind, "value": typed, "focused": true });
            json!({
                "id": id.to_string(),
                "name": command,
                "type": 1,
                "options": wrap_subcommand(subcommand, vec![focused]),
                "guild_id": user.guild.to_string(),
            })
        };
        let origin = Origin {
            channel,
            ..Origin::default()
        };
        self.build_interaction(user, 4, data, origin)
    }

    pub fn button_payload(
        &self,
        user: &Member,
        message: &Value,
        custom_id: &str,
        in_dm: bool,
    ) -> (Interaction, Value) {
        let data = json!({ "custom_id": custom_id, "component_type": 2 });
        self.build_interaction(user, 3, data, Origin::message(message, in_dm))
    }

    pub fn select_payload(
        &self,
        user: &Member,
        message: &Value,
        custom_id: &str,
        values: &[&str],
        in_dm: bool,
    ) -> (Interaction, Value) {
        let data = json!({ "custom_id": custom_id, "component_type": 3, "values": values });
        self.build_interaction(user, 3, data, Origin::message(message, in_dm))
    }

    pub fn modal_payload(
        &self,
        user: &Member,
        custom_id: &str,
        fields: &[(&str, &str)],
        message: Option<&Value>,
        in_dm: bool,
    ) -> (Interaction, Value) {
        let rows: Vec<Value> = fields
            .iter()
            .map(|(id, value)| {
                json!({ "type": 1, "components": [{ "type": 4, "custom_id": id, "value": value }] })
            })
            .collect();
        let data = json!({ "custom_id": custom_id, "components": rows });
        let origin = Origin {
            in_dm,
            message,
            ..Origin::default()
        };
        self.build_interaction(user, 5, data, origin)
    }

    /// The READY frame the emulator sends after an IDENTIFY for shard [0, 1] (both guilds).
    pub fn ready_frame(&self) -> Value {
        ready_frame(&self.gateway_url(), 0, (0, 1))
    }

    pub(super) fn build_interaction(
        &self,
        user: &Member,
        kind: u8,
        data: Value,
        origin: Origin<'_>,
    ) -> (Interaction, Value) {
        let Origin {
            in_dm,
            message,
            channel,
            command,
        } = origin;
        let mut st = self.lock();
        let id = st.next_id();
        let token = format!("fake-interaction-token-{id:x}");
        // Discord always sends the message as it is now, not as the caller last saw it.
        let message = message.map(|m| match snowflake(&m["id"]) {
            Some(mid) => match st.messages.get(&mid) {
                Some(known) => known.clone(),
                None => {
                    st.put_message(mid, m.clone());
                    m.clone()
                }
            },
            None => m.clone(),
        });
        // A submit closes the modal once the bot answers it (see `interaction_callback`):
        // unanswered, Discord's client keeps the form and what was typed.
        let submits = (kind == 5)
            .then(|| st.open_modals.get(&user.id).copied())
            .flatten();
        let channel_id = if in_dm {
            st.dm_channel(user.id)
        } else {
            message
                .as_ref()
                .and_then(|m| snowflake(&m["channel_id"]))
                .or(channel)
                .unwrap_or(Self::general_of(user.guild))
        };
        let mut d = json!({
            "id": id.to_string(),
            "application_id": Self::APPLICATION_ID.to_string(),
            "type": kind,
            "data": data,
            "channel_id": channel_id.to_string(),
            "token": token,
            "version": 1,
            "app_permissions": st.app_permissions.to_string(),
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": { "0": user.guild.to_string() },
            "context": if in_dm { 1 } else { 0 },
            "attachment_size_limit": 10_485_760,
        });
        if in_dm {
            d["user"] = user_json(user.id, &user.name, false);
        } else {
            st.members.insert(user.id, user.clone());
            d["guild_id"] = json!(user.guild.to_string());
            d["guild_locale"] = json!("en-US");
            d["member"] = member_json(user, true);
        }
        if let Some(m) = &message {
            d["message"] = m.clone();
        }
        st.interactions.insert(
            id,
            Inter {
                token: token.clone(),
                kind,
                user_id: user.id,
                command,
                submits,
                channel_id,
                message_id: message.as_ref().and_then(|m| snowflake(&m["id"])),
                callback: None,
                created_at: std::time::Instant::now(),
                dispatched_at: None,
                dispatched_to: None,
                answered_at: None,
                shown_at: None,
                answered: Arc::new(tokio::sync::Notify::new()),
                original: None,
                followups: Vec::new(),
            },
        );
        st.tokens.insert(token.clone(), id);
        drop(st);
        self.bump();
        (Interaction { id, token }, d)
    }
}
