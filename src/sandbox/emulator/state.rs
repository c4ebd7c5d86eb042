//! The emulator's world (guilds, channels, members, messages, interactions) and its routes.

use super::json::{
    allowed, bot_user, gateway_url, member_json, mention_ids, now, role_json, snowflake, user_json,
};
use super::{EPHEMERAL, Emulator, FIRST_ID, LOADING, Member, Recorded, SUPPRESS_EMBEDS};
use axum::extract::ws::Message as WsMessage;
use axum::http::Method;
use serde_json::{Map, Value, json};
use serenity::all::Permissions;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A gateway connection that has been answered READY or RESUMED.
pub(super) struct Conn {
    pub(super) id: u64,
    /// `[id, count]` as its IDENTIFY said (or, resumed, as its session's did).
    pub(super) shard: Shard,
    pub(super) tx: mpsc::UnboundedSender<WsMessage>,
    pub(super) seq: u64,
}

/// `(shard id, shard count)`.
pub(super) type Shard = (u32, u32);

pub(super) struct Inter {
    pub(super) token: String,
    /// Its type: 2 a command, 3 a component, 5 a modal submission.
    pub(super) kind: u8,
    /// The member (or DM user) who made it: only they see its ephemeral messages.
    pub(super) user_id: u64,
    /// `"app create"` for a chat-input command, which the sandbox shows as "used /app create".
    pub(super) command: Option<String>,
    /// A modal submit's modal (the interaction that opened it), closed when this is answered.
    pub(super) submits: Option<u64>,
    pub(super) channel_id: u64,
    /// The message a component or modal interaction came from.
    pub(super) message_id: Option<u64>,
    pub(super) callback: Option<Value>,
    /// When it was made (its id's time): Discord's 3 seconds count from here, not from a
    /// dispatch the gateway may have sent late.
    pub(super) created_at: std::time::Instant,
    /// When its INTERACTION_CREATE went out and when its callback came back.
    pub(super) dispatched_at: Option<std::time::Instant>,
    /// The shard whose connection its INTERACTION_CREATE went out on.
    pub(super) dispatched_to: Option<u32>,
    pub(super) answered_at: Option<std::time::Instant>,
    /// When the member first saw its content: a callback that carries it
    /// (4, 7, 9), else the first edit of `@original` or follow-up after the
    /// deferral (5, 6), which alone shows nothing.
    pub(super) shown_at: Option<std::time::Instant>,
    /// Wakes `response()` waiters of this interaction only: with hundreds of
    /// concurrent users, waking every waiter on every change would cost the
    /// benchmark more than the bot under test.
    pub(super) answered: Arc<tokio::sync::Notify>,
    /// What `@original` refers to.
    pub(super) original: Option<u64>,
    pub(super) followups: Vec<u64>,
}

impl Inter {
    /// Stamps the first edit or follow-up after a deferral (see `shown_at`).
    pub(super) fn mark_shown(&mut self) {
        if self.shown_at.is_none() && self.callback.is_some() {
            self.shown_at = Some(std::time::Instant::now());
            self.answered.notify_waiters();
        }
    }
}

/// A guild text channel.
pub(super) struct Chan {
    pub(super) guild: u64,
    pub(super) name: String,
    pub(super) position: u64,
    /// `(target id, type (0 role, 1 member), allow, deny)`.
    pub(super) overwrites: Vec<(u64, u8, u64, u64)>,
}

pub(super) struct Failure {
    pub(super) method: String,
    pub(super) path_contains: String,
    pub(super) status: u16,
    pub(super) body: Value,
    pub(super) remaining: usize,
    /// The call is carried out before it fails: Discord did it, but its
    /// answer never reached the bot.
    pub(super) applied: bool,
}

pub(super) struct FilePart {
    pub(super) name: String,
    pub(super) filename: String,
    pub(super) content_type: Option<String>,
    pub(super) data: Vec<u8>,
}

pub(super) enum Reply {
    Json(u16, Value),
    NoContent,
    Raw(Vec<u8>),
}

pub(super) fn error(status: u16, code: u64, message: &str) -> Reply {
    Reply::Json(status, json!({ "message": message, "code": code }))
}

pub(super) struct St {
    pub(super) base_url: String,
    pub(super) next_id: u64,
    pub(super) requests: Vec<Recorded>,
    pub(super) commands: Vec<Value>,
    /// Registered commands by scope: `None` is global.
    pub(super) command_scopes: HashMap<Option<u64>, Vec<Value>>,
    /// `GET /gateway` count: each new serenity client asks once, reconnects do not.
    pub(super) bots: u64,
    pub(super) registered_bot: u64,
    pub(super) identifies: usize,
    pub(super) resumes: usize,
    pub(super) last_identify: Option<Value>,
    pub(super) heartbeats: usize,
    pub(super) ack_heartbeats: bool,
    pub(super) next_conn: u64,
    /// The ready connections by shard id: one per shard, the most recent.
    pub(super) live: BTreeMap<u32, Conn>,
    /// The shard each session READY opened was for, so a RESUME resumes that shard.
    pub(super) sessions: HashMap<String, Shard>,
    pub(super) interactions: HashMap<u64, Inter>,
    pub(super) tokens: HashMap<String, u64>,
    pub(super) messages: BTreeMap<u64, Value>,
    /// The ids in `messages` by channel: a channel's messages are read without a scan of
    /// every message (the benchmark's members poll their DMs among thousands).
    pub(super) by_channel: HashMap<u64, BTreeSet<u64>>,
    pub(super) attachments: HashMap<u64, (String, Vec<u8>)>,
    pub(super) dm_channels: HashMap<u64, u64>,
    pub(super) closed_dms: HashSet<u64>,
    pub(super) failures: Vec<Failure>,
    /// `(method, path fragment)` of requests that never get an answer.
    pub(super) hangs: Vec<(String, String)>,
    /// Every REST call is answered this late; and, while set, a callback more
    /// than 3 s after its interaction's dispatch is refused, as Discord does.
    pub(super) latency: Option<std::time::Duration>,
    /// Members of both guilds alike (a member's payloads carry the guild asked about).
    pub(super) members: HashMap<u64, Member>,
    /// `(guild, name, permissions)` by role id.
    pub(super) roles: BTreeMap<u64, (u64, String, u64)>,
    /// The guilds' text channels.
    pub(super) channels: BTreeMap<u64, Chan>,
    /// `(channel, nonce)` to the message first created with it.
    pub(super) nonces: HashMap<(u64, String), u64>,
    /// Messages an interaction's callback or follow-up created, to that interaction.
    pub(super) created_by: HashMap<u64, u64>,
    /// The modal each user has open: the interaction whose callback opened it.
    pub(super) open_modals: HashMap<u64, u64>,
    /// Names given with `Emulator::set_guild_name`.
    pub(super) guild_names: HashMap<u64, String>,
    /// Counts changes a member could see (messages, commands, modals), unlike heartbeats and
    /// REST calls that change nothing on screen.
    pub(super) shown: u64,
    /// Callbacks later than 3 s are refused even with no latency set (the sandbox).
    pub(super) deadline: bool,
    pub(super) app_permissions: u64,
}

impl St {
    /// A snowflake of now (or just after the last one): an interaction's id tells when it
    /// was created, as the bot's answer budget reads it.
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id = (self.next_id + 1).max(super::now_snowflake());
        self.next_id
    }

    pub(super) fn user_name(&self, id: u64) -> String {
        self.members
            .get(&id)
            .map_or_else(|| format!("user{id}"), |u| u.name.clone())
    }

    pub(super) fn dm_channel(&mut self, user_id: u64) -> u64 {
        if let Some(c) = self.dm_channels.get(&user_id) {
            return *c;
        }
        let c = self.next_id();
        self.dm_channels.insert(user_id, c);
        c
    }

    pub(super) fn dm_recipient(&self, channel_id: u64) -> Option<u64> {
        self.dm_channels
            .iter()
            .find(|(_, c)| **c == channel_id)
            .map(|(u, _)| *u)
    }

    pub(super) fn channel_messages(&self, channel_id: u64) -> Vec<Value> {
        self.in_channel(channel_id)
            .map(|(_, m)| m)
            .filter(|m| m["flags"].as_u64().unwrap_or(0) & EPHEMERAL == 0)
            .cloned()
            .collect()
    }

    /// The channel's messages with their ids, oldest first, ephemeral ones included.
    pub(super) fn in_channel(&self, channel_id: u64) -> impl Iterator<Item = (u64, &Value)> {
        self.by_channel
            .get(&channel_id)
            .into_iter()
            .flatten()
            .filter_map(|id| Some((*id, self.messages.get(id)?)))
    }

    /// Stores a message (new or edited) under its channel.
    pub(super) fn put_message(&mut self, id: u64, m: Value) {
        if let Some(channel) = snowflake(&m["channel_id"]) {
            self.by_channel.entry(channel).or_default().insert(id);
        }
        self.messages.insert(id, m);
    }

    pub(super) fn remove_message(&mut self, id: u64) {
        if let Some(m) = self.messages.remove(&id)
            && let Some(ids) = snowflake(&m["channel_id"]).and_then(|c| self.by_channel.get_mut(&c))
        {
            ids.remove(&id);
        }
    }

    /// The registered command by name (`guild`'s scope first) and its id.
    pub(super) fn command_spec(&self, name: &str, guild: u64) -> (u64, Option<Value>) {
        let found = [Some(guild), None]
            .iter()
            .filter_map(|scope| self.command_scopes.get(scope))
            .flatten()
            .find(|c| c["name"] == name)
            .cloned();
        match found {
            Some(c) => (snowflake(&c["id"]).unwrap_or(FIRST_ID), Some(c)),
            // Unregistered: poise looks commands up by name, any id does.
            None => (FIRST_ID - 1, None),
        }
    }

    /// Discord sends snowflake option values as strings, with the entities in `resolved`.
    pub(super) fn resolve_option(
        &self,
        kind: u64,
        value: Value,
        resolved: &mut Map<String, Value>,
    ) -> Value {
        if !(6..=9).contains(&kind) {
            return value;
        }
        let Some(id) = snowflake(&value) else {
            return value;
        };
        let mut add = |section: &str, v: Value| {
            resolved
                .entry(section)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(|section| section.insert(id.to_string(), v));
        };
        let is_role = self.roles.contains_key(&id);
        match kind {
            6 | 9 if !(kind == 9 && is_role) => {
                add("users", user_json(id, &self.user_name(id), false));
                if let Some(u) = self.members.get(&id) {
                    add("members", member_json(u, false));
                }
            }
            7 => {
                let name = self
                    .channels
                    .get(&id)
                    .map_or_else(|| format!("channel-{id}"), |c| c.name.clone());
                add(
                    "channels",
                    json!({ "id": id.to_string(), "name": name, "type": 0,
                            "permissions": self.app_permissions.to_string() }),
                );
            }
            _ => {
                let (name, perms) = self
                    .roles
                    .get(&id)
                    .map(|r| (r.1.clone(), r.2))
                    .unwrap_or_else(|| (format!("role-{id}"), 0));
                add("roles", role_json(id, &name, perms));
            }
        }
        json!(id.to_string())
    }

    /// The failure this call gets, and whether it is carried out first.
    pub(super) fn take_failure(&mut self, method: &str, path: &str) -> Option<(u16, Value, bool)> {
        let f = self
            .failures
            .iter_mut()
            .find(|f| f.remaining > 0 && f.method == method && path.contains(&f.path_contains))?;
        f.remaining -= 1;
        Some((f.status, f.body.clone(), f.applied))
    }

    pub(super) fn attachments_for(
        &mut self,
        body: &Value,
        files: &[FilePart],
        existing: &[Value],
    ) -> Vec<Value> {
        let mut out = Vec::new();
        let mut used = HashSet::new();
        let upload = |st: &mut Self, file: &FilePart, description: &Value| {
            let id = st.next_id();
            st.attachments
                .insert(id, (file.filename.clone(), file.data.clone()));
            let url = format!("{}/attachments/{id}/{}", st.base_url, file.filename);
            json!({
                "id": id.to_string(),
                "filename": file.filename,
                "description": description,
                "content_type": file.content_type,
                "size": file.data.len(),
                "url": url,
                "proxy_url": url,
            })
        };
        match body["attachments"].as_array() {
            Some(listed) => {
                for a in listed {
                    let key = format!(
                        "files[{}]",
                        a["id"].as_u64().map_or_else(
                            || a["id"].as_str().unwrap_or_default().to_owned(),
                            |n| n.to_string(),
                        )
                    );
                    if let Some(file) = files.iter().find(|f| f.name == key) {
                        used.insert(key);
                        out.push(upload(self, file, &a["description"]));
                    } else if let Some(old) = existing.iter().find(|e| {
                        snowflake(&e["id"]).is_some_and(|e| Some(e) == snowflake(&a["id"]))
                    }) {
                        out.push(old.clone());
                    }
                }
            }
            None => out.extend(existing.iter().cloned()),
        }
        for file in files
            .iter()
            .filter(|f| !used.contains(&f.name) && f.name != "payload_json")
        {
            out.push(upload(self, file, &Value::Null));
        }
        out
    }

    pub(super) fn chan_mut(&mut self, id: u64) -> &mut Chan {
        let position = self.channels.len() as u64;
        self.channels.entry(id).or_insert_with(|| Chan {
            guild: Emulator::GUILD_ID,
            name: format!("channel-{id}"),
            position,
            overwrites: Vec::new(),
        })
    }

    /// The guild of a guild channel: unknown ids are [`Emulator::GUILD_ID`]'s.
    pub(super) fn guild_of_channel(&self, id: u64) -> u64 {
        self.channels
            .get(&id)
            .map_or(Emulator::GUILD_ID, |c| c.guild)
    }

    /// The serenity `GuildChannel` of a guild text channel; unknown ids are text channels (of
    /// [`Emulator::GUILD_ID`]) too.
    pub(super) fn channel_json(&self, id: u64) -> Value {
        let (name, position, overwrites) = match self.channels.get(&id) {
            Some(c) => (c.name.clone(), c.position, c.overwrites.as_slice()),
            None => (format!("channel-{id}"), 0, &[][..]),
        };
        let guild = self.guild_of_channel(id);
        let overwrites: Vec<Value> = overwrites
            .iter()
            .map(|(target, kind, allow, deny)| {
                json!({
                    "id": target.to_string(),
                    "type": kind,
                    "allow": allow.to_string(),
                    "deny": deny.to_string(),
                })
            })
            .collect();
        json!({
            "id": id.to_string(),
            "type": 0,
            "guild_id": guild.to_string(),
            "name": name,
            "position": position,
            "permission_overwrites": overwrites,
            "topic": null,
            "nsfw": false,
            "last_message_id": null,
            "rate_limit_per_user": 0,
            "parent_id": null,
            "flags": 0,
        })
    }

    /// The bot's roles in `guild`.
    pub(super) fn bot_roles(&self, guild: u64) -> Vec<u64> {
        vec![Emulator::bot_role_of(guild)]
    }

    /// The bot's member, as `GET /guilds/{g}/members/{bot}` answers it.
    pub(super) fn bot_member_json(&self, guild: u64) -> Value {
        json!({
            "user": bot_user(),
            "roles": self.bot_roles(guild).iter().map(u64::to_string).collect::<Vec<_>>(),
            "joined_at": "2024-01-01T00:00:00.000000+00:00",
            "premium_since": null,
            "nick": null,
            "avatar": null,
            "deaf": false,
            "mute": false,
            "flags": 0,
            "pending": false,
            "communication_disabled_until": null,
            "guild_id": guild.to_string(),
        })
    }

    /// The bot's permissions in a guild channel, computed as Discord does: @everyone and the
    /// bot's roles, then the @everyone, role and member overwrites of the channel.
    pub(super) fn bot_permissions_in(&self, channel_id: u64) -> Permissions {
        let guild = self.guild_of_channel(channel_id);
        let role = |id: u64| self.roles.get(&id).map_or(0, |r| r.2);
        let roles = self.bot_roles(guild);
        let mut perms = roles.iter().fold(role(guild), |p, r| p | role(*r));
        if perms & Permissions::ADMINISTRATOR.bits() != 0 {
            return Permissions::all();
        }
        let overwrites = self
            .channels
            .get(&channel_id)
            .map_or(&[][..], |c| c.overwrites.as_slice());
        let bot = Emulator::APPLICATION_ID;
        let find = |pred: &dyn Fn(u64, u8) -> bool| {
            overwrites
                .iter()
                .filter(|o| pred(o.0, o.1))
                .fold((0, 0), |(a, d), o| (a | o.2, d | o.3))
        };
        for (allow, deny) in [
            find(&|id, kind| kind == 0 && id == guild),
            find(&|id, kind| kind == 0 && id != guild && roles.contains(&id)),
            find(&|id, kind| kind == 1 && id == bot),
        ] {
            perms = (perms & !deny) | allow;
        }
        Permissions::from_bits_truncate(perms)
    }

    /// `POST /channels/{c}/messages`.
    pub(super) fn create_message(
        &mut self,
        channel_id: u64,
        body: &Value,
        files: &[FilePart],
    ) -> Reply {
        if let Some(u) = self.dm_recipient(channel_id) {
            if self.closed_dms.contains(&u) {
                return error(403, 50007, "Cannot send messages to this user");
            }
        } else {
            let perms = self.bot_permissions_in(channel_id);
            if !perms.contains(Permissions::VIEW_CHANNEL) {
                return error(403, 50001, "Missing Access");
            }
            if !perms.contains(Permissions::SEND_MESSAGES) {
                return error(403, 50013, "Missing Permissions");
            }
        }
        let nonce = match &body["nonce"] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        if let Some(nonce) = &nonce
            && body["enforce_nonce"] == json!(true)
            && let Some(existing) = self
                .nonces
                .get(&(channel_id, nonce.clone()))
                .and_then(|id| self.messages.get(id))
        {
            return Reply::Json(200, existing.clone());
        }
        let (id, m) = self.new_message(channel_id, body, files, false);
        if let Some(nonce) = nonce {
            self.nonces.insert((channel_id, nonce), id);
        }
        Reply::Json(200, m)
    }

    pub(super) fn new_message(
        &mut self,
        channel_id: u64,
        body: &Value,
        files: &[FilePart],
        webhook: bool,
    ) -> (u64, Value) {
        let id = self.next_id();
        let mut m = json!({
            "id": id.to_string(),
            "channel_id": channel_id.to_string(),
            "author": bot_user(),
            "content": "",
            "timestamp": now(),
            "edited_timestamp": null,
            "tts": false,
            "mention_everyone": false,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "reactions": [],
            "pinned": false,
            "type": 0,
            "flags": body["flags"].as_u64().unwrap_or(0) & (EPHEMERAL | LOADING | SUPPRESS_EMBEDS),
            "components": [],
        });
        if let Some(nonce) = body.get("nonce").filter(|n| !n.is_null()) {
            m["nonce"] = nonce.clone();
        }
        if webhook {
            m["webhook_id"] = json!(Emulator::APPLICATION_ID.to_string());
            m["application_id"] = json!(Emulator::APPLICATION_ID.to_string());
        }
        self.apply(&mut m, body, files, false);
        self.put_message(id, m.clone());
        self.shown += 1;
        (id, m)
    }

    pub(super) fn edit_message(
        &mut self,
        id: u64,
        body: &Value,
        files: &[FilePart],
    ) -> Option<Value> {
        let mut m = self.messages.get(&id)?.clone();
        self.apply(&mut m, body, files, true);
        self.put_message(id, m.clone());
        self.shown += 1;
        Some(m)
    }

    pub(super) fn apply(&mut self, m: &mut Value, body: &Value, files: &[FilePart], edit: bool) {
        for key in ["content", "components", "tts", "poll"] {
            if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
                m[key] = v.clone();
            }
        }
        if let Some(embeds) = body["embeds"].as_array() {
            let embeds: Vec<Value> = embeds
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    if e.get("type").is_none() {
                        e["type"] = json!("rich");
                    }
                    e
                })
                .collect();
            m["embeds"] = json!(embeds);
        }
        if edit {
            let old = m["flags"].as_u64().unwrap_or(0);
            let suppress = body["flags"].as_u64().map_or(old, |f| f) & SUPPRESS_EMBEDS;
            // An edit ends the "is thinking…" state; ephemerality cannot change.
            m["flags"] = json!((old & EPHEMERAL) | suppress);
            m["edited_timestamp"] = json!(now());
        }
        if body.get("attachments").is_some() || !files.is_empty() {
            let existing = m["attachments"].as_array().cloned().unwrap_or_default();
            m["attachments"] = json!(self.attachments_for(body, files, &existing));
        }
        let content = m["content"].as_str().unwrap_or_default().to_owned();
        let am = &body["allowed_mentions"];
        let (users, roles) = mention_ids(&content);
        let mentions: Vec<Value> = users
            .into_iter()
            .filter(|u| allowed(am, "users", *u))
            .map(|u| user_json(u, &self.user_name(u), false))
            .collect();
        let mention_roles: Vec<String> = roles
            .into_iter()
            .filter(|r| allowed(am, "roles", *r))
            .map(|r| r.to_string())
            .collect();
        m["mentions"] = json!(mentions);
        m["mention_roles"] = json!(mention_roles);
        m["mention_everyone"] = json!(
            (content.contains("@everyone") || content.contains("@here"))
                && (am.is_null()
                    || am["parse"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|k| k == "everyone")))
        );
    }

    pub(super) fn guild_name(&self, guild: u64) -> String {
        match self.guild_names.get(&guild) {
            Some(name) => name.clone(),
            None if guild == Emulator::GUILD_ID => "Fake Guild".to_owned(),
            None => "Fake Guild 2".to_owned(),
        }
    }

    pub(super) fn guild_json(&self, guild: u64) -> Value {
        let roles: Vec<Value> = self
            .roles
            .iter()
            .filter(|(_, (g, _, _))| *g == guild)
            .map(|(id, (_, name, perms))| role_json(*id, name, *perms))
            .collect();
        json!({
            "id": guild.to_string(),
            "name": self.guild_name(guild),
            "icon": null, "icon_hash": null, "splash": null, "discovery_splash": null,
            "owner_id": Emulator::OWNER_ID.to_string(),
            "afk_channel_id": null, "afk_timeout": 300,
            "widget_enabled": false, "widget_channel_id": null,
            "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0,
            "roles": roles, "emojis": [], "features": [], "mfa_level": 0,
            "application_id": null, "system_channel_id": null, "system_channel_flags": 0,
            "rules_channel_id": null, "max_presences": null, "max_members": 500_000,
            "vanity_url_code": null, "description": null, "banner": null,
            "premium_tier": 0, "premium_subscription_count": 0, "preferred_locale": "en-US",
            "public_updates_channel_id": null, "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50, "nsfw_level": 0, "stickers": [],
            "premium_progress_bar_enabled": false, "safety_alerts_channel_id": null,
        })
    }

    pub(super) fn register_commands(&mut self, scope: Option<u64>, body: &Value) -> Reply {
        let Some(list) = body.as_array() else {
            return error(400, 50035, "Invalid Form Body");
        };
        let old = self.command_scopes.get(&scope).cloned().unwrap_or_default();
        let version = self.next_id();
        let mut out = Vec::new();
        for c in list {
            let mut c = c.clone();
            // Discord keeps a command's id when it is overwritten under the same name.
            let id = old
                .iter()
                .find(|o| o["name"] == c["name"])
                .and_then(|o| snowflake(&o["id"]))
                .unwrap_or_else(|| self.next_id());
            let Some(obj) = c.as_object_mut() else {
                return error(400, 50035, "Invalid Form Body: a command is not an object");
            };
            obj.insert("id".into(), json!(id.to_string()));
            obj.insert(
                "application_id".into(),
                json!(Emulator::APPLICATION_ID.to_string()),
            );
            obj.insert("version".into(), json!(version.to_string()));
            for (k, v) in [
                ("type", json!(1)),
                ("description", json!("")),
                ("options", json!([])),
                ("default_member_permissions", Value::Null),
                ("nsfw", json!(false)),
            ] {
                if obj.get(k).is_none_or(Value::is_null) {
                    obj.insert(k.into(), v);
                }
            }
            if let Some(g) = scope {
                obj.insert("guild_id".into(), json!(g.to_string()));
            }
            out.push(c);
        }
        self.command_scopes.insert(scope, out.clone());
        self.shown += 1;
        self.commands = out.clone();
        self.registered_bot = self.bots;
        Reply::Json(200, json!(out))
    }

    pub(super) fn interaction_callback(
        &mut self,
        id: &str,
        token: &str,
        body: &Value,
        files: &[FilePart],
        with_response: bool,
    ) -> Reply {
        let Some((id, inter)) = id
            .parse()
            .ok()
            .and_then(|id| Some((id, self.interactions.get(&id)?)))
        else {
            return error(404, 10062, "Unknown interaction");
        };
        if inter.token != token {
            return error(401, 50027, "Invalid Webhook Token");
        }
        let late = inter.created_at.elapsed() > Duration::from_secs(3);
        if (self.latency.is_some() || self.deadline) && late {
            // Discord forgets an interaction not answered within 3 seconds.
            return error(404, 10062, "Unknown interaction");
        }
        if inter.callback.is_some() {
            return error(400, 40060, "Interaction has already been acknowledged.");
        }
        let (channel_id, message_id, user_id) = (inter.channel_id, inter.message_id, inter.user_id);
        if let Some(opener) = inter.submits
            && self.open_modals.get(&user_id) == Some(&opener)
        {
            self.open_modals.remove(&user_id);
            self.shown += 1;
        }
        let data = &body["data"];
        let original = match body["type"].as_u64() {
            Some(4) => {
                let (mid, _) = self.new_message(channel_id, data, files, true);
                self.answers(mid, id);
                Some(Some(mid))
            }
            Some(5) => {
                let flags = (data["flags"].as_u64().unwrap_or(0) & EPHEMERAL) | LOADING;
                let (mid, _) = self.new_message(channel_id, &json!({ "flags": flags }), &[], true);
                self.answers(mid, id);
                Some(Some(mid))
            }
            Some(6) => Some(message_id),
            Some(7) => match message_id {
                Some(mid) => {
                    self.edit_message(mid, data, files);
                    Some(Some(mid))
                }
                None => {
                    return error(
                        400,
                        50035,
                        "Invalid Form Body: this interaction has no message",
                    );
                }
            },
            Some(9) => {
                self.open_modals.insert(user_id, id);
                self.shown += 1;
                None
            }
            _ => None,
        };
        let Some(inter) = self.interactions.get_mut(&id) else {
            return error(404, 10062, "Unknown interaction");
        };
        if let Some(original) = original {
            inter.original = original;
        }
        inter.callback = Some(body.clone());
        inter.answered_at = Some(std::time::Instant::now());
        if matches!(body["type"].as_u64(), Some(4 | 7 | 9)) {
            inter.shown_at = inter.answered_at;
        }
        inter.answered.notify_waiters();
        if !with_response {
            return Reply::NoContent;
        }
        // The interaction callback response, as Discord's: the message for
        // a callback that made (4) or updated (7) one with content; a
        // deferral (5) names its loading message only.
        let (original, kind) = (inter.original, inter.kind);
        let message = match body["type"].as_u64() {
            Some(4 | 7) => original.and_then(|o| self.messages.get(&o).cloned()),
            _ => None,
        };
        let mut interaction = json!({ "id": id.to_string(), "type": kind });
        if let (Some(o), Some(5)) = (original, body["type"].as_u64()) {
            interaction["response_message_id"] = json!(o.to_string());
            interaction["response_message_loading"] = json!(true);
        }
        let mut resource = json!({ "type": body["type"] });
        if let Some(m) = message {
            resource["message"] = m;
        }
        Reply::Json(
            200,
            json!({ "interaction": interaction, "resource": resource }),
        )
    }

    /// Message `mid` is an answer to interaction `id`: it carries the
    /// interaction's metadata, as Discord's do, by which a bot can find it.
    fn answers(&mut self, mid: u64, id: u64) {
        self.created_by.insert(mid, id);
        if let Some(meta) = self.interaction_metadata(id)
            && let Some(m) = self.messages.get_mut(&mid)
        {
            m["interaction_metadata"] = meta;
        }
    }

    /// A message's `interaction_metadata` for interaction `id`, with the
    /// fields Discord sends (and serenity requires) for its type.
    fn interaction_metadata(&self, id: u64) -> Option<Value> {
        let inter = self.interactions.get(&id)?;
        let mut meta = json!({
            "id": id.to_string(),
            "type": inter.kind,
            "user": user_json(inter.user_id, &self.user_name(inter.user_id), false),
            "authorizing_integration_owners": {},
        });
        match inter.kind {
            3 => meta["interacted_message_id"] = json!(inter.message_id?.to_string()),
            5 => {
                meta["triggering_interaction_metadata"] =
                    self.interaction_metadata(inter.submits?)?
            }
            _ => {}
        }
        Some(meta)
    }

    pub(super) fn followup(&mut self, token: &str, body: &Value, files: &[FilePart]) -> Reply {
        let Some((id, inter)) = self
            .tokens
            .get(token)
            .and_then(|id| Some((*id, self.interactions.get(id)?)))
        else {
            return error(404, 10015, "Unknown Webhook");
        };
        if inter.callback.is_none() {
            return error(404, 10015, "Unknown Webhook");
        }
        let (channel_id, first, original) =
            (inter.channel_id, inter.followups.is_empty(), inter.original);
        // After a deferred (type 5) reply, the first follow-up replaces the "thinking" message.
        let deferred = original.filter(|o| {
            first
                && self
                    .messages
                    .get(o)
                    .is_some_and(|m| m["flags"].as_u64().unwrap_or(0) & LOADING != 0)
        });
        let (mid, m) = match deferred.and_then(|o| Some((o, self.edit_message(o, body, files)?))) {
            Some(edited) => edited,
            None => {
                let (mid, m) = self.new_message(channel_id, body, files, true);
                self.answers(mid, id);
                (mid, m)
            }
        };
        if let Some(inter) = self.interactions.get_mut(&id) {
            inter.followups.push(mid);
            inter.mark_shown();
        }
        Reply::Json(200, m)
    }

    pub(super) fn webhook_message(
        &mut self,
        method: &Method,
        token: &str,
        which: &str,
        body: &Value,
        files: &[FilePart],
    ) -> Reply {
        let Some(&inter_id) = self.tokens.get(token) else {
            return error(404, 10015, "Unknown Webhook");
        };
        let Some(inter) = self.interactions.get(&inter_id) else {
            return error(404, 10015, "Unknown Webhook");
        };
        let id = if which == "@original" {
            inter.original
        } else {
            which.parse().ok()
        };
        let Some((id, message)) = id.and_then(|id| Some((id, self.messages.get(&id)?))) else {
            return error(404, 10008, "Unknown Message");
        };
        match *method {
            Method::GET => Reply::Json(200, message.clone()),
            Method::PATCH => {
                let Some(edited) = self.edit_message(id, body, files) else {
                    return error(404, 10008, "Unknown Message");
                };
                if which == "@original"
                    && let Some(inter) = self.interactions.get_mut(&inter_id)
                {
                    inter.mark_shown();
                }
                Reply::Json(200, edited)
            }
            Method::DELETE => {
                self.remove_message(id);
                self.shown += 1;
                Reply::NoContent
            }
            _ => error(405, 0, "405: Method Not Allowed"),
        }
    }

    pub(super) fn route(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        body: &Value,
        files: &[FilePart],
    ) -> Reply {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let m = method.as_str();
        match (m, segs.as_slice()) {
            ("GET", ["gateway"]) => {
                self.bots += 1;
                Reply::Json(200, json!({ "url": gateway_url(&self.base_url) }))
            }
            ("GET", ["gateway", "bot"]) => Reply::Json(
                200,
                json!({
                    "url": gateway_url(&self.base_url),
                    "shards": 1,
                    "session_start_limit": { "total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1 },
                }),
            ),
            ("GET", ["oauth2", "applications", "@me"]) => Reply::Json(
                200,
                json!({
                    "id": Emulator::APPLICATION_ID.to_string(),
                    "name": Emulator::BOT_NAME,
                    "icon": null,
                    "description": "",
                    "rpc_origins": [],
                    "bot_public": false,
                    "bot_require_code_grant": false,
                    "owner": user_json(Emulator::OWNER_ID, "owner", false),
                    "verify_key": "0".repeat(64),
                    "team": null,
                    "flags": 0,
                }),
            ),
            ("GET", ["users", "@me"]) => {
                let mut u = bot_user();
                u["verified"] = json!(true);
                u["mfa_enabled"] = json!(false);
                Reply::Json(200, u)
            }
            ("GET", ["users", id]) => match id.parse::<u64>() {
                Ok(id) => Reply::Json(200, user_json(id, &self.user_name(id), false)),
                Err(_) => error(404, 10013, "Unknown User"),
            },
            ("PUT", ["applications", _, "commands"]) => self.register_commands(None, body),
            ("PUT", ["applications", _, "guilds", g, "commands"]) => {
                self.register_commands(g.parse().ok(), body)
            }
            ("GET", ["applications", _, "commands"]) => Reply::Json(
                200,
                json!(self.command_scopes.get(&None).cloned().unwrap_or_default()),
            ),
            ("GET", ["applications", _, "guilds", g, "commands"]) => Reply::Json(
                200,
                json!(
                    self.command_scopes
                        .get(&g.parse().ok())
                        .cloned()
                        .unwrap_or_default()
                ),
            ),
            ("POST", ["interactions", id, token, "callback"]) => {
                let with_response = query.split('&').any(|kv| kv == "with_response=true");
                self.interaction_callback(id, token, body, files, with_response)
            }
            ("POST", ["webhooks", _, token]) => self.followup(token, body, files),
            (_, ["webhooks", _, token, "messages", which]) => {
                self.webhook_message(method, token, which, body, files)
            }
            ("POST", ["users", "@me", "channels"]) => {
                let Some(user) = snowflake(&body["recipient_id"]) else {
                    return error(400, 50035, "Invalid Form Body");
                };
                let c = self.dm_channel(user);
                Reply::Json(200, self.dm_channel_json(c, user))
            }
            ("GET", ["channels", c]) => match c.parse::<u64>() {
                Ok(c) => match self.dm_recipient(c) {
                    Some(u) => Reply::Json(200, self.dm_channel_json(c, u)),
                    None => Reply::Json(200, self.channel_json(c)),
                },
                Err(_) => error(404, 10003, "Unknown Channel"),
            },
            ("POST", ["channels", c, "messages"]) => {
                let Ok(c) = c.parse::<u64>() else {
                    return error(404, 10003, "Unknown Channel");
                };
                self.create_message(c, body, files)
            }
            ("GET", ["channels", c, "messages"]) => {
                let c = c.parse().unwrap_or(0);
                let param = |name: &str| {
                    query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                        .and_then(|v| v.parse::<u64>().ok())
                };
                let limit = param("limit").map_or(50, |l| l.clamp(1, 100) as usize);
                // As Discord: the newest `limit`, or with `after` the first
                // `limit` after that id; newest first either way.
                let msgs: Vec<Value> = match param("after") {
                    Some(after) => {
                        let mut first: Vec<Value> = self
                            .in_channel(c)
                            .filter(|(id, m)| {
                                *id > after && m["flags"].as_u64().unwrap_or(0) & EPHEMERAL == 0
                            })
                            .take(limit)
                            .map(|(_, m)| m.clone())
                            .collect();
                        first.reverse();
                        first
                    }
                    None => {
                        let mut all = self.channel_messages(c);
                        all.reverse();
                        all.truncate(limit);
                        all
                    }
                };
                Reply::Json(200, json!(msgs))
            }
            (_, ["channels", c, "messages", mid]) => {
                let (c, mid) = (c.parse::<u64>().ok(), mid.parse::<u64>().ok());
                let Some((mid, message)) = mid
                    .and_then(|id| Some((id, self.messages.get(&id)?)))
                    .filter(|(_, m)| snowflake(&m["channel_id"]) == c)
                else {
                    return error(404, 10008, "Unknown Message");
                };
                match m {
                    "GET" => Reply::Json(200, message.clone()),
                    "PATCH" => match self.edit_message(mid, body, files) {
                        Some(edited) => Reply::Json(200, edited),
                        None => error(404, 10008, "Unknown Message"),
                    },
                    "DELETE" => {
                        self.remove_message(mid);
                        self.shown += 1;
                        Reply::NoContent
                    }
                    _ => error(405, 0, "405: Method Not Allowed"),
                }
            }
            ("GET", ["guilds", g, rest @ ..]) => {
                let Some(guild) = g.parse().ok().filter(|g| Emulator::GUILDS.contains(g)) else {
                    return error(404, 10004, "Unknown Guild");
                };
                match rest {
                    [] => Reply::Json(200, self.guild_json(guild)),
                    ["channels"] => {
                        let mut ids: Vec<(u64, u64)> = self
                            .channels
                            .iter()
                            .filter(|(_, c)| c.guild == guild)
                            .map(|(id, c)| (c.position, *id))
                            .collect();
                        ids.sort_unstable();
                        let list: Vec<Value> =
                            ids.iter().map(|(_, id)| self.channel_json(*id)).collect();
                        Reply::Json(200, json!(list))
                    }
                    ["roles"] => Reply::Json(200, self.guild_json(guild)["roles"].clone()),
                    ["members", u] if u.parse::<u64>() == Ok(Emulator::APPLICATION_ID) => {
                        Reply::Json(200, self.bot_member_json(guild))
                    }
                    ["members", u] => match u.parse().ok().and_then(|u| self.members.get(&u)) {
                        Some(user) => {
                            let mut mj = member_json(user, true);
                            mj["guild_id"] = json!(guild.to_string());
                            Reply::Json(200, mj)
                        }
                        None => error(404, 10007, "Unknown Member"),
                    },
                    _ => error(404, 0, "Unknown"),
                }
            }
            ("GET", ["attachments", id, _]) => {
                match id
                    .parse()
                    .ok()
                    .and_then(|id: u64| self.attachments.get(&id))
                {
                    Some((_, data)) => Reply::Raw(data.clone()),
                    None => error(404, 0, "Unknown"),
                }
            }
            _ => error(404, 0, "Unknown"),
        }
    }

    pub(super) fn dm_channel_json(&self, channel_id: u64, user: u64) -> Value {
        json!({
            "id": channel_id.to_string(),
            "type": 1,
            "last_message_id": null,
            "flags": 0,
            "recipients": [user_json(user, &self.user_name(user), false)],
        })
    }
}
