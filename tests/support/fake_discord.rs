//! A fake Discord on 127.0.0.1 (REST and gateway on one port) that the real serenity/poise bot talks to.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use serenity::all::Permissions;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long every `wait_*`/`response`/`followups` call waits before it panics.
pub const WAIT: Duration = Duration::from_secs(10);
// Fits in an i64, so stores that keep ids as BIGINT accept them.
const FIRST_ID: u64 = 1_100_000_000_000_000_000 >> 2;
const EPHEMERAL: u64 = 1 << 6;
const LOADING: u64 = 1 << 7;
const SUPPRESS_EMBEDS: u64 = 1 << 2;

/// A guild member (or DM user) who clicks and types in tests.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: u64,
    pub name: String,
    pub roles: Vec<u64>,
    /// Guild permission bits, sent as the interaction's `member.permissions`.
    pub permissions: u64,
    /// The guild their guild interactions come from: [`FakeDiscord::GUILD_ID`] unless
    /// [`Self::in_guild`] says otherwise.
    pub guild: u64,
}

impl TestUser {
    /// Discord computes an administrator's permissions as every bit.
    pub fn admin(id: u64, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            roles: Vec::new(),
            permissions: Permissions::all().bits(),
            guild: FakeDiscord::GUILD_ID,
        }
    }

    pub fn member(id: u64, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            roles: Vec::new(),
            permissions: member_permissions(),
            guild: FakeDiscord::GUILD_ID,
        }
    }

    pub fn with_roles(mut self, roles: &[u64]) -> Self {
        self.roles = roles.to_vec();
        self
    }

    pub fn with_permissions(mut self, bits: u64) -> Self {
        self.permissions = bits;
        self
    }

    /// Their guild interactions come from `guild` (one of the fake's two), and so go to the
    /// shard that owns it.
    pub fn in_guild(mut self, guild: u64) -> Self {
        self.guild = guild;
        self
    }
}

fn member_permissions() -> u64 {
    (Permissions::VIEW_CHANNEL
        | Permissions::SEND_MESSAGES
        | Permissions::READ_MESSAGE_HISTORY
        | Permissions::USE_APPLICATION_COMMANDS
        | Permissions::EMBED_LINKS
        | Permissions::ATTACH_FILES
        | Permissions::ADD_REACTIONS)
        .bits()
}

fn bot_permissions() -> u64 {
    (Permissions::VIEW_CHANNEL
        | Permissions::SEND_MESSAGES
        | Permissions::SEND_MESSAGES_IN_THREADS
        | Permissions::READ_MESSAGE_HISTORY
        | Permissions::EMBED_LINKS
        | Permissions::ATTACH_FILES
        | Permissions::USE_APPLICATION_COMMANDS)
        .bits()
}

/// The bot's managed role "keygate": what an invite with these permissions gives it.
fn bot_role_permissions() -> u64 {
    (Permissions::VIEW_CHANNEL
        | Permissions::SEND_MESSAGES
        | Permissions::EMBED_LINKS
        | Permissions::READ_MESSAGE_HISTORY)
        .bits()
}

/// One REST call as the bot made it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Without the `/api/v10` prefix and without the query.
    pub path: String,
    pub query: String,
    /// The JSON body; for multipart, the `payload_json` part; `Null` if none.
    pub body: Value,
    /// When the bot sent it, before any latency: the order the bot made its
    /// calls in, which the recording order (after the latency) need not be.
    pub sent_at: std::time::Instant,
}

/// Handle of one interaction the fake created (and usually dispatched).
#[derive(Clone, Debug)]
pub struct Interaction {
    pub id: u64,
    pub token: String,
}

#[derive(Clone)]
pub struct FakeDiscord {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<St>,
    changed: watch::Sender<u64>,
    base_url: String,
    heartbeat_ms: u64,
}

/// A gateway connection that has been answered READY or RESUMED.
struct Conn {
    id: u64,
    /// `[id, count]` as its IDENTIFY said (or, resumed, as its session's did).
    shard: Shard,
    tx: mpsc::UnboundedSender<WsMessage>,
    seq: u64,
}

/// `(shard id, shard count)`.
type Shard = (u32, u32);

struct Inter {
    token: String,
    channel_id: u64,
    /// The message a component or modal interaction came from.
    message_id: Option<u64>,
    callback: Option<Value>,
    /// When its INTERACTION_CREATE went out and when its callback came back.
    dispatched_at: Option<std::time::Instant>,
    /// The shard whose connection its INTERACTION_CREATE went out on.
    dispatched_to: Option<u32>,
    answered_at: Option<std::time::Instant>,
    /// When the member first saw its content: a callback that carries it
    /// (4, 7, 9), else the first edit of `@original` or follow-up after the
    /// deferral (5, 6), which alone shows nothing.
    shown_at: Option<std::time::Instant>,
    /// Wakes `response()` waiters of this interaction only: with hundreds of
    /// concurrent users, waking every waiter on every change would cost the
    /// benchmark more than the bot under test.
    answered: Arc<tokio::sync::Notify>,
    /// What `@original` refers to.
    original: Option<u64>,
    followups: Vec<u64>,
}

impl Inter {
    /// Stamps the first edit or follow-up after a deferral (see `shown_at`).
    fn mark_shown(&mut self) {
        if self.shown_at.is_none() && self.callback.is_some() {
            self.shown_at = Some(std::time::Instant::now());
            self.answered.notify_waiters();
        }
    }
}

/// A guild text channel.
struct Chan {
    guild: u64,
    name: String,
    position: u64,
    /// `(target id, type (0 role, 1 member), allow, deny)`.
    overwrites: Vec<(u64, u8, u64, u64)>,
}

struct Failure {
    method: String,
    path_contains: String,
    status: u16,
    body: Value,
    remaining: usize,
}

struct FilePart {
    name: String,
    filename: String,
    content_type: Option<String>,
    data: Vec<u8>,
}

enum Reply {
    Json(u16, Value),
    NoContent,
    Raw(Vec<u8>),
}

fn error(status: u16, code: u64, message: &str) -> Reply {
    Reply::Json(status, json!({ "message": message, "code": code }))
}

struct St {
    base_url: String,
    next_id: u64,
    requests: Vec<Recorded>,
    commands: Vec<Value>,
    /// Registered commands by scope: `None` is global.
    command_scopes: HashMap<Option<u64>, Vec<Value>>,
    /// `GET /gateway` count: each new serenity client asks once, reconnects do not.
    bots: u64,
    registered_bot: u64,
    identifies: usize,
    resumes: usize,
    last_identify: Option<Value>,
    heartbeats: usize,
    ack_heartbeats: bool,
    next_conn: u64,
    /// The ready connections by shard id: one per shard, the most recent.
    live: BTreeMap<u32, Conn>,
    /// The shard each session READY opened was for, so a RESUME resumes that shard.
    sessions: HashMap<String, Shard>,
    interactions: HashMap<u64, Inter>,
    tokens: HashMap<String, u64>,
    messages: BTreeMap<u64, Value>,
    attachments: HashMap<u64, (String, Vec<u8>)>,
    dm_channels: HashMap<u64, u64>,
    closed_dms: HashSet<u64>,
    failures: Vec<Failure>,
    /// `(method, path fragment)` of requests that never get an answer.
    hangs: Vec<(String, String)>,
    /// Every REST call is answered this late; and, while set, a callback more
    /// than 3 s after its interaction's dispatch is refused, as Discord does.
    latency: Option<std::time::Duration>,
    /// Members of both guilds alike (a member's payloads carry the guild asked about).
    members: HashMap<u64, TestUser>,
    /// `(guild, name, permissions)` by role id.
    roles: BTreeMap<u64, (u64, String, u64)>,
    /// The guilds' text channels.
    channels: BTreeMap<u64, Chan>,
    /// `(channel, nonce)` to the message first created with it.
    nonces: HashMap<(u64, String), u64>,
    app_permissions: u64,
}

impl FakeDiscord {
    pub const GUILD_ID: u64 = 1_000_000_000_000_001;
    /// The second guild: the next timestamp unit (`1 << 22`) after [`Self::GUILD_ID`], so with
    /// two shards the other shard owns it (`(id >> 22) % 2` is 1 for GUILD_ID, 0 for this).
    pub const GUILD_2_ID: u64 = Self::GUILD_ID + (1 << 22);
    pub const APPLICATION_ID: u64 = 3_000_000_000_000_001;
    /// [`Self::GUILD_ID`]'s "general".
    pub const CHANNEL_ID: u64 = 4_000_000_000_000_001;
    /// [`Self::GUILD_2_ID`]'s "general".
    pub const CHANNEL_2_ID: u64 = 4_000_000_000_000_201;
    /// Owns both guilds and the application.
    pub const OWNER_ID: u64 = 5_000_000_000_000_001;
    pub const BOT_NAME: &str = "keygate";
    /// The bot's own role in [`Self::GUILD_ID`], which the bot's member has.
    pub const BOT_ROLE_ID: u64 = 6_000_000_000_000_001;
    /// The bot's own role in [`Self::GUILD_2_ID`]: a role belongs to one guild.
    pub const BOT_ROLE_2_ID: u64 = 6_000_000_000_000_201;
    /// The guilds the bot is in.
    pub const GUILDS: [u64; 2] = [Self::GUILD_ID, Self::GUILD_2_ID];

    /// The shard of `count` that Discord sends `guild`'s events on.
    pub fn shard_of(guild: u64, count: u32) -> u32 {
        u32::try_from((guild >> 22) % u64::from(count.max(1))).expect("a shard id fits in u32")
    }

    /// The bot's own role in `guild`.
    pub fn bot_role_of(guild: u64) -> u64 {
        if guild == Self::GUILD_2_ID {
            Self::BOT_ROLE_2_ID
        } else {
            Self::BOT_ROLE_ID
        }
    }

    /// The "general" channel of `guild`, where its interactions come from by default.
    pub fn general_of(guild: u64) -> u64 {
        if guild == Self::GUILD_2_ID {
            Self::CHANNEL_2_ID
        } else {
            Self::CHANNEL_ID
        }
    }

    /// HELLO announces a 1000 ms heartbeat interval.
    pub async fn start() -> Self {
        Self::start_with_heartbeat(Duration::from_millis(1000)).await
    }

    pub async fn start_with_heartbeat(interval: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Discord");
        let port = listener.local_addr().expect("local addr").port();
        let base_url = format!("http://127.0.0.1:{port}");
        let mut roles = BTreeMap::new();
        let mut channels = BTreeMap::new();
        for guild in Self::GUILDS {
            roles.insert(guild, (guild, "@everyone".to_owned(), member_permissions()));
            roles.insert(
                Self::bot_role_of(guild),
                (guild, Self::BOT_NAME.to_owned(), bot_role_permissions()),
            );
            channels.insert(
                Self::general_of(guild),
                Chan {
                    guild,
                    name: "general".to_owned(),
                    position: 0,
                    overwrites: Vec::new(),
                },
            );
        }
        let st = St {
            base_url: base_url.clone(),
            next_id: FIRST_ID,
            requests: Vec::new(),
            commands: Vec::new(),
            command_scopes: HashMap::new(),
            bots: 0,
            registered_bot: 0,
            identifies: 0,
            resumes: 0,
            last_identify: None,
            heartbeats: 0,
            ack_heartbeats: true,
            next_conn: 0,
            live: BTreeMap::new(),
            sessions: HashMap::new(),
            interactions: HashMap::new(),
            tokens: HashMap::new(),
            messages: BTreeMap::new(),
            attachments: HashMap::new(),
            dm_channels: HashMap::new(),
            closed_dms: HashSet::new(),
            failures: Vec::new(),
            hangs: Vec::new(),
            latency: None,
            members: HashMap::new(),
            roles,
            channels,
            nonces: HashMap::new(),
            app_permissions: bot_permissions(),
        };
        let fake = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(st),
                changed: watch::Sender::new(0),
                base_url,
                heartbeat_ms: u64::try_from(interval.as_millis()).expect("interval"),
            }),
        };
        let app = Router::new()
            .route("/gateway", get(gateway_route))
            .fallback(rest_route)
            .with_state(fake.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake Discord server");
        });
        fake
    }

    /// What the bot's `DISCORD_API_URL` (serenity's HTTP proxy) is set to.
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    pub fn gateway_url(&self) -> String {
        gateway_url(&self.inner.base_url)
    }

    fn lock(&self) -> MutexGuard<'_, St> {
        // A test that panicked while holding the lock must not hide the real failure.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.inner.changed.send_modify(|v| *v += 1);
    }

    /// Waits until `f` yields, re-checking after every state change; panics after [`WAIT`].
    async fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&mut St) -> Option<T>) -> T {
        let mut rx = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            rx.borrow_and_update();
            let found = f(&mut self.lock());
            if let Some(v) = found {
                return v;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let report = self.report();
                panic!("fake Discord: timed out after {WAIT:?} waiting for {what}\n{report}");
            }
        }
    }

    fn report(&self) -> String {
        let st = self.lock();
        let live: Vec<String> = st
            .live
            .values()
            .map(|c| format!("shard [{}, {}]", c.shard.0, c.shard.1))
            .collect();
        let mut out = format!(
            "gateway: {} IDENTIFY(s), live connection(s): {}, {} heartbeat(s)\nREST requests so far ({}):\n",
            st.identifies,
            if live.is_empty() {
                "none".to_owned()
            } else {
                live.join(", ")
            },
            st.heartbeats,
            st.requests.len()
        );
        for r in &st.requests {
            let mut body = r.body.to_string();
            if let Some((cut, _)) = body.char_indices().nth(400) {
                body.truncate(cut);
                body.push('…');
            }
            let q = if r.query.is_empty() {
                String::new()
            } else {
                format!("?{}", r.query)
            };
            let _ = writeln!(out, "  {} {}{} {}", r.method, r.path, q, body);
        }
        out
    }

    /// A bot connected, got READY, and (as a new client) registered its commands. For one bot
    /// process at a time: a process that does not run shard 0 never registers, so with several
    /// use [`Self::wait_shard_ready`].
    pub async fn wait_ready(&self) {
        self.wait_for(
            "a bot to connect, get READY and register its commands (PUT .../commands)",
            |st| {
                let live = !st.live.is_empty();
                (live && st.bots > 0 && st.registered_bot == st.bots).then_some(())
            },
        )
        .await;
    }

    /// A connection for `shard` is open and has been sent READY (or RESUMED); whether anyone
    /// registered commands does not matter.
    pub async fn wait_shard_ready(&self, shard: u32) {
        let what = format!("a ready gateway connection for shard {shard}");
        self.wait_for(&what, |st| st.live.contains_key(&shard).then_some(()))
            .await;
    }

    /// The last registered command list (global or guild), as the fake answered it (with ids).
    pub fn commands(&self) -> Vec<Value> {
        self.lock().commands.clone()
    }

    /// IDENTIFYs so far: one per bot start and one per re-identifying reconnect (a resumed
    /// connection does not count).
    pub fn connections(&self) -> usize {
        self.lock().identifies
    }

    /// RESUMEs so far: reconnects that kept the session (not counted in [`Self::connections`]).
    pub fn resumes(&self) -> usize {
        self.lock().resumes
    }

    pub fn heartbeats(&self) -> usize {
        self.lock().heartbeats
    }

    pub fn last_identify(&self) -> Option<Value> {
        self.lock().last_identify.clone()
    }

    /// A gateway connection (of any shard) that has been answered READY is open.
    pub fn is_connected(&self) -> bool {
        !self.lock().live.is_empty()
    }

    /// A gateway connection for `shard` that has been answered READY is open.
    pub fn is_shard_connected(&self, shard: u32) -> bool {
        self.lock().live.contains_key(&shard)
    }

    /// The `(id, count)` of every shard with a ready connection, by id.
    pub fn connected_shards(&self) -> Vec<(u32, u32)> {
        self.lock().live.values().map(|c| c.shard).collect()
    }

    /// Closes every live gateway connection as Discord does now and then (close code 4000);
    /// serenity resumes, see [`Self::resumes`].
    pub fn disconnect(&self) {
        let conns = std::mem::take(&mut self.lock().live);
        conns.into_values().for_each(close);
        self.bump();
    }

    /// As [`Self::disconnect`], for `shard`'s connection only.
    pub fn disconnect_shard(&self, shard: u32) {
        let conn = self.lock().live.remove(&shard);
        conn.into_iter().for_each(close);
        self.bump();
    }

    /// From now on heartbeats go unanswered, so the bot should give up on the connection.
    pub fn stop_acking_heartbeats(&self) {
        self.lock().ack_heartbeats = false;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The next `times` requests with this method whose path contains `path_contains` get
    /// `status` and `body` (and `retry-after` when the body has `retry_after`).
    pub fn fail(&self, method: &str, path_contains: &str, status: u16, body: Value, times: usize) {
        self.lock().failures.push(Failure {
            method: method.to_uppercase(),
            path_contains: path_contains.to_owned(),
            status,
            body,
            remaining: times,
        });
    }

    /// Every later `method` request whose path contains `path_contains` is
    /// recorded and then never answered: a process waiting on it can be killed
    /// mid-call. `unhang` answers later ones again.
    pub fn hang(&self, method: &str, path_contains: &str) {
        self.lock()
            .hangs
            .push((method.to_owned(), path_contains.to_owned()));
    }

    /// Makes every later REST call take `latency` (None: answer at once),
    /// and enforces Discord's 3-second deadline for interaction callbacks.
    pub fn set_latency(&self, latency: Option<Duration>) {
        self.lock().latency = latency;
    }

    pub fn unhang(&self) {
        self.lock().hangs.clear();
    }

    /// The user's DM channel, opened now if it is not yet.
    pub fn open_dm_channel(&self, user_id: u64) -> u64 {
        self.lock().dm_channel(user_id)
    }

    /// Messages to this user's DM channel get 403 50007, as when they block the bot.
    pub fn close_dms_of(&self, user_id: u64) {
        self.lock().closed_dms.insert(user_id);
    }

    /// A role of [`Self::GUILD_ID`] that its `GET /roles` lists; `@everyone` (id = guild id)
    /// always exists.
    pub fn add_role(&self, id: u64, name: &str, permissions: u64) {
        self.add_role_in(Self::GUILD_ID, id, name, permissions);
    }

    /// As [`Self::add_role`], in `guild`.
    pub fn add_role_in(&self, guild: u64, id: u64, name: &str, permissions: u64) {
        self.lock()
            .roles
            .insert(id, (guild, name.to_owned(), permissions));
    }

    /// A text channel (type 0) of [`Self::GUILD_ID`] that `GET /channels/{id}` and
    /// `GET /guilds/{g}/channels` return; [`Self::CHANNEL_ID`] ("general") always exists.
    pub fn add_channel(&self, id: u64, name: &str) {
        self.add_channel_in(Self::GUILD_ID, id, name);
    }

    /// As [`Self::add_channel`], in `guild` ([`Self::CHANNEL_2_ID`] is [`Self::GUILD_2_ID`]'s
    /// "general"). A channel already known (say, denied the bot first) moves there.
    pub fn add_channel_in(&self, guild: u64, id: u64, name: &str) {
        let mut st = self.lock();
        let position = st.channels.values().filter(|c| c.guild == guild).count() as u64;
        let chan = st.channels.entry(id).or_insert(Chan {
            guild,
            name: String::new(),
            position,
            overwrites: Vec::new(),
        });
        chan.guild = guild;
        chan.name = name.to_owned();
    }

    /// A member overwrite for the bot on the channel (added as `channel-{id}` if unknown) that
    /// denies these permission bits. Denying `SEND_MESSAGES` also makes posting there fail with
    /// 403 50013, as Discord does; `app_permissions` of interactions is not affected (see
    /// [`Self::set_app_permissions`]).
    pub fn deny_bot_in_channel(&self, channel_id: u64, deny_bits: u64) {
        let mut st = self.lock();
        let chan = st.chan_mut(channel_id);
        let bot = FakeDiscord::APPLICATION_ID;
        match chan.overwrites.iter_mut().find(|o| o.0 == bot && o.1 == 1) {
            Some(o) => {
                o.2 &= !deny_bits;
                o.3 |= deny_bits;
            }
            None => chan.overwrites.push((bot, 1, 0, deny_bits)),
        }
    }

    /// Known to `GET /guilds/{g}/members/{u}` (users of guild interactions are added too).
    pub fn add_member(&self, user: &TestUser) {
        self.lock().members.insert(user.id, user.clone());
    }

    /// The bot's own permissions in the channel, sent as `app_permissions`.
    pub fn set_app_permissions(&self, bits: u64) {
        self.lock().app_permissions = bits;
    }

    /// Name and bytes of an uploaded attachment.
    pub fn attachment(&self, id: u64) -> Option<(String, Vec<u8>)> {
        self.lock().attachments.get(&id).cloned()
    }

    // ---- interactions -------------------------------------------------------------------

    pub async fn slash_command(
        &self,
        user: &TestUser,
        command: &str,
        subcommand: Option<&str>,
        options: Vec<(&str, Value)>,
    ) -> Interaction {
        let (i, d) = self.slash_command_payload(user, command, subcommand, options);
        self.dispatch("INTERACTION_CREATE", d).await;
        i
    }

    pub async fn autocomplete(
        &self,
        user: &TestUser,
        command: &str,
        subcommand: Option<&str>,
        option: &str,
        typed: &str,
    ) -> Interaction {
        let (i, d) = self.autocomplete_payload(user, command, subcommand, option, typed);
        self.dispatch("INTERACTION_CREATE", d).await;
        i
    }

    pub async fn press_button(
        &self,
        user: &TestUser,
        message: &Value,
        custom_id: &str,
    ) -> Interaction {
        let (i, d) = self.button_payload(user, message, custom_id, false);
        self.dispatch("INTERACTION_CREATE", d).await;
        i
    }

    pub async fn press_button_in_dm(
        &self,
        user: &TestUser,
        message: &Value,
        custom_id: &str,
    ) -> Interaction {
        let (i, d) = self.button_payload(user, message, custom_id, true);
        self.dispatch("INTERACTION_CREATE", d).await;
        i
    }

    pub async fn select(
        &self,
        user: &TestUser,
        message: &Value,
        custom_id: &str,
        values: &[&str],
    ) -> Interaction {
        let (i, d) = self.select_payload(user, message, custom_id, values, false);
        self.dispatch("INTERACTION_CREATE", d).await;
        i
    }

    pub async fn select_in_dm(
        &self,
        user: &TestUser,
        message: &Value,
        custom_id: &str,
        values: &[&str],
    ) -> Interaction {
        let (i, d) = self.select_payload(user, message, custom_id, values, true);
        self.dispatch("INTERACTION_CREATE", d).await;
        i
    }

    pub async fn submit_modal(
        &self,
        user: &TestUser,
        custom_id: &str,
        fields: &[(&str, &str)],
        message: Option<&Value>,
    ) -> Interaction {
        let (i, d) = self.modal_payload(user, custom_id, fields, message, false);
        self.dispatch("INTERACTION_CREATE", d).await;
        i
    }

    pub async fn submit_modal_in_dm(
        &self,
        user: &TestUser,
        custom_id: &str,
        fields: &[(&str, &str)],
        message: Option<&Value>,
    ) -> Interaction {
        let (i, d) = self.modal_payload(user, custom_id, fields, message, true);
        self.dispatch("INTERACTION_CREATE", d).await;
        i
    }

    /// Sends a dispatch (op 0) as Discord routes it: an event with a `guild_id` to the ready
    /// connection of that guild's shard ([`Self::shard_of`]), one without (a DM's) to shard 0's;
    /// waits for that connection if it is not open.
    pub async fn dispatch(&self, event: &str, d: Value) {
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
        .await;
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
    pub async fn shown_latency(&self, i: &Interaction) -> Duration {
        let answered = self.lock().interactions[&i.id].answered.clone();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = answered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(t) = self
                .lock()
                .interactions
                .get(&i.id)
                .and_then(|x| Some(x.shown_at?.duration_since(x.dispatched_at?)))
            {
                return t;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let report = self.report();
                panic!(
                    "fake Discord: timed out after {WAIT:?} waiting for interaction {}'s content\n{report}",
                    i.id
                );
            }
        }
    }

    /// The `d` of an INTERACTION_CREATE for a chat-input command; registers the interaction
    /// with the fake but does not send it.
    pub fn slash_command_payload(
        &self,
        user: &TestUser,
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
        self.build_interaction(user, 2, false, data, None)
    }

    pub fn autocomplete_payload(
        &self,
        user: &TestUser,
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
        self.build_interaction(user, 4, false, data, None)
    }

    pub fn button_payload(
        &self,
        user: &TestUser,
        message: &Value,
        custom_id: &str,
        in_dm: bool,
    ) -> (Interaction, Value) {
        let data = json!({ "custom_id": custom_id, "component_type": 2 });
        self.build_interaction(user, 3, in_dm, data, Some(message))
    }

    pub fn select_payload(
        &self,
        user: &TestUser,
        message: &Value,
        custom_id: &str,
        values: &[&str],
        in_dm: bool,
    ) -> (Interaction, Value) {
        let data = json!({ "custom_id": custom_id, "component_type": 3, "values": values });
        self.build_interaction(user, 3, in_dm, data, Some(message))
    }

    pub fn modal_payload(
        &self,
        user: &TestUser,
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
        self.build_interaction(user, 5, in_dm, data, message)
    }

    /// The READY frame the fake sends after an IDENTIFY for shard [0, 1] (both guilds).
    pub fn ready_frame(&self) -> Value {
        ready_frame(&self.gateway_url(), 0, (0, 1))
    }

    fn build_interaction(
        &self,
        user: &TestUser,
        kind: u8,
        in_dm: bool,
        data: Value,
        message: Option<&Value>,
    ) -> (Interaction, Value) {
        let mut st = self.lock();
        let id = st.next_id();
        let token = format!("fake-interaction-token-{id:x}");
        // Discord always sends the message as it is now, not as the test last saw it.
        let message = message.map(|m| {
            let mid = snowflake(&m["id"]).expect("the message passed to the fake has no id");
            st.messages.entry(mid).or_insert_with(|| m.clone()).clone()
        });
        let channel_id = if in_dm {
            st.dm_channel(user.id)
        } else {
            message
                .as_ref()
                .and_then(|m| snowflake(&m["channel_id"]))
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
                channel_id,
                message_id: message.as_ref().and_then(|m| snowflake(&m["id"])),
                callback: None,
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

    // ---- what the user sees ---------------------------------------------------------------

    /// The interaction's callback body `{type, data}`.
    pub async fn response(&self, i: &Interaction) -> Value {
        let what = format!("the callback of interaction {}", i.id);
        let Some(answered) = self
            .lock()
            .interactions
            .get(&i.id)
            .map(|x| x.answered.clone())
        else {
            return self
                .wait_for(&what, |st| st.interactions.get(&i.id)?.callback.clone())
                .await;
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            // Registered before the check, so a callback in between is not missed.
            let notified = answered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(cb) = self
                .lock()
                .interactions
                .get(&i.id)
                .and_then(|x| x.callback.clone())
            {
                return cb;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let report = self.report();
                panic!("fake Discord: timed out after {WAIT:?} waiting for {what}\n{report}");
            }
        }
    }

    /// The first `n` follow-ups of the interaction, as they are now (`Null` if deleted).
    pub async fn followups(&self, i: &Interaction, n: usize) -> Vec<Value> {
        let what = format!("{n} follow-up(s) of interaction {}", i.id);
        self.wait_for(&what, |st| {
            let ids = &st.interactions.get(&i.id)?.followups;
            (ids.len() >= n).then(|| {
                ids.iter()
                    .map(|id| st.messages.get(id).cloned().unwrap_or(Value::Null))
                    .collect()
            })
        })
        .await
    }

    /// How many follow-ups this interaction has had so far.
    pub fn followup_count(&self, i: &Interaction) -> usize {
        self.lock()
            .interactions
            .get(&i.id)
            .map_or(0, |x| x.followups.len())
    }

    /// The message `@original` of this interaction now is: the one a type 4 (or 5) callback
    /// created, or the component's message a type 6/7 callback acknowledged; edits applied.
    pub fn message_of(&self, i: &Interaction) -> Option<Value> {
        let st = self.lock();
        let id = st.interactions.get(&i.id)?.original?;
        st.messages.get(&id).cloned()
    }

    /// The data of a type-9 (modal) callback.
    pub fn modal_of(&self, i: &Interaction) -> Option<Value> {
        let st = self.lock();
        let cb = st.interactions.get(&i.id)?.callback.as_ref()?;
        (cb["type"] == 9).then(|| cb["data"].clone())
    }

    /// Non-ephemeral messages in the channel, oldest first, after edits, without deleted ones;
    /// interaction replies sent there included.
    pub fn channel_messages(&self, channel_id: u64) -> Vec<Value> {
        self.lock().channel_messages(channel_id)
    }

    pub fn dm_channel_of(&self, user_id: u64) -> Option<u64> {
        self.lock().dm_channels.get(&user_id).copied()
    }

    pub fn dm_messages(&self, user_id: u64) -> Vec<Value> {
        let st = self.lock();
        st.dm_channels
            .get(&user_id)
            .map(|c| st.channel_messages(*c))
            .unwrap_or_default()
    }

    pub async fn wait_for_dm(&self, user_id: u64, n: usize) -> Vec<Value> {
        let what = format!("{n} DM(s) to user {user_id}");
        self.wait_for(&what, |st| {
            let c = st.dm_channels.get(&user_id)?;
            let msgs = st.channel_messages(*c);
            (msgs.len() >= n).then_some(msgs)
        })
        .await
    }

    /// Polls every 10 ms for up to [`WAIT`].
    pub async fn wait_until(&self, what: &str, pred: impl Fn(&FakeDiscord) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !pred(self) {
            if tokio::time::Instant::now() >= deadline {
                let report = self.report();
                panic!("fake Discord: timed out after {WAIT:?} waiting until {what}\n{report}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---- JSON shapes ----------------------------------------------------------------------------

fn gateway_url(base_url: &str) -> String {
    format!("{}/gateway", base_url.replacen("http://", "ws://", 1))
}

fn dispatch_frame(event: &str, seq: u64, d: Value) -> Value {
    json!({ "op": 0, "t": event, "s": seq, "d": d })
}

/// Closes a connection as Discord does now and then (close code 4000): serenity resumes.
fn close(c: Conn) {
    // Without a code serenity ignores the Close frame and notices only at its next heartbeat.
    let _ = c.tx.send(WsMessage::Close(Some(CloseFrame {
        code: 4000,
        reason: "".into(),
    })));
}

/// READY for `shard`: it lists the guilds that shard owns, as Discord's does.
fn ready_frame(ws_url: &str, conn: u64, shard: Shard) -> Value {
    let mut user = bot_user();
    user["verified"] = json!(true);
    user["mfa_enabled"] = json!(false);
    user["flags"] = json!(0);
    let guilds: Vec<Value> = FakeDiscord::GUILDS
        .iter()
        .filter(|g| FakeDiscord::shard_of(**g, shard.1) == shard.0)
        .map(|g| json!({ "id": g.to_string(), "unavailable": true }))
        .collect();
    dispatch_frame(
        "READY",
        1,
        json!({
            "v": 10,
            "user": user,
            "guilds": guilds,
            "session_id": session_id(conn),
            "resume_gateway_url": ws_url,
            "shard": [shard.0, shard.1],
            "application": { "id": FakeDiscord::APPLICATION_ID.to_string(), "flags": 0 },
        }),
    )
}

fn session_id(conn: u64) -> String {
    format!("fake-session-{conn}")
}

fn snowflake(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn user_json(id: u64, name: &str, bot: bool) -> Value {
    json!({
        "id": id.to_string(),
        "username": name,
        "discriminator": "0",
        "global_name": if bot { Value::Null } else { json!(name) },
        "avatar": null,
        "bot": bot,
        "public_flags": 0,
    })
}

fn bot_user() -> Value {
    user_json(FakeDiscord::APPLICATION_ID, FakeDiscord::BOT_NAME, true)
}

fn member_json(user: &TestUser, with_user: bool) -> Value {
    let mut m = json!({
        "roles": user.roles.iter().map(u64::to_string).collect::<Vec<_>>(),
        "permissions": user.permissions.to_string(),
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "premium_since": null,
        "nick": null,
        "avatar": null,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "communication_disabled_until": null,
    });
    if with_user {
        m["user"] = user_json(user.id, &user.name, false);
    }
    m
}

fn role_json(id: u64, name: &str, permissions: u64) -> Value {
    let mut r = json!({
        "id": id.to_string(),
        "name": name,
        "color": 0,
        "colors": { "primary_color": 0, "secondary_color": null, "tertiary_color": null },
        "hoist": false,
        "icon": null,
        "unicode_emoji": null,
        "position": if FakeDiscord::GUILDS.contains(&id) { 0 } else { 1 },
        "permissions": permissions.to_string(),
        "managed": false,
        "mentionable": false,
        "flags": 0,
    });
    if FakeDiscord::GUILDS
        .iter()
        .any(|g| FakeDiscord::bot_role_of(*g) == id)
    {
        r["managed"] = json!(true);
        r["tags"] = json!({ "bot_id": FakeDiscord::APPLICATION_ID.to_string() });
    }
    r
}

fn infer_option_type(v: &Value) -> u64 {
    match v {
        Value::Bool(_) => 5,
        Value::Number(n) if n.is_i64() || n.is_u64() => 4,
        Value::Number(_) => 10,
        _ => 3,
    }
}

/// `subcommand` may be `"group sub"` for a subcommand group.
fn wrap_subcommand(subcommand: Option<&str>, opts: Vec<Value>) -> Vec<Value> {
    match subcommand.map(|s| s.split_whitespace().collect::<Vec<_>>()) {
        None => opts,
        Some(parts) => match parts.as_slice() {
            [sub] => vec![json!({ "name": sub, "type": 1, "options": opts })],
            [group, sub] => vec![json!({
                "name": group, "type": 2,
                "options": [{ "name": sub, "type": 1, "options": opts }],
            })],
            _ => panic!("subcommand {subcommand:?}: expected \"sub\" or \"group sub\""),
        },
    }
}

/// The registered option specs of the command (or of its subcommand).
fn option_specs(spec: Option<&Value>, subcommand: Option<&str>) -> Vec<Value> {
    let Some(mut node) = spec else {
        return Vec::new();
    };
    for part in subcommand.into_iter().flat_map(str::split_whitespace) {
        let found = node["options"]
            .as_array()
            .and_then(|opts| opts.iter().find(|o| o["name"] == part));
        match found {
            Some(n) => node = n,
            None => return Vec::new(),
        }
    }
    node["options"].as_array().cloned().unwrap_or_default()
}

fn mention_ids(content: &str) -> (Vec<u64>, Vec<u64>) {
    let (mut users, mut roles) = (Vec::new(), Vec::new());
    for piece in content.split("<@").skip(1) {
        let (is_role, rest) = match piece.strip_prefix('&') {
            Some(r) => (true, r),
            None => (false, piece.strip_prefix('!').unwrap_or(piece)),
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !rest[digits.len()..].starts_with('>') {
            continue;
        }
        if let Ok(id) = digits.parse() {
            if is_role {
                roles.push(id)
            } else {
                users.push(id)
            }
        }
    }
    (users, roles)
}

fn allowed(allowed_mentions: &Value, kind: &str, id: u64) -> bool {
    if allowed_mentions.is_null() {
        return true;
    }
    let parses = allowed_mentions["parse"]
        .as_array()
        .is_some_and(|p| p.iter().any(|k| k == kind));
    let listed = allowed_mentions[kind]
        .as_array()
        .is_some_and(|l| l.iter().any(|v| snowflake(v) == Some(id)));
    parses || listed
}

impl St {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn user_name(&self, id: u64) -> String {
        self.members
            .get(&id)
            .map_or_else(|| format!("user{id}"), |u| u.name.clone())
    }

    fn dm_channel(&mut self, user_id: u64) -> u64 {
        if let Some(c) = self.dm_channels.get(&user_id) {
            return *c;
        }
        let c = self.next_id();
        self.dm_channels.insert(user_id, c);
        c
    }

    fn dm_recipient(&self, channel_id: u64) -> Option<u64> {
        self.dm_channels
            .iter()
            .find(|(_, c)| **c == channel_id)
            .map(|(u, _)| *u)
    }

    fn channel_messages(&self, channel_id: u64) -> Vec<Value> {
        self.messages
            .values()
            .filter(|m| snowflake(&m["channel_id"]) == Some(channel_id))
            .filter(|m| m["flags"].as_u64().unwrap_or(0) & EPHEMERAL == 0)
            .cloned()
            .collect()
    }

    /// The registered command by name (`guild`'s scope first) and its id.
    fn command_spec(&self, name: &str, guild: u64) -> (u64, Option<Value>) {
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
    fn resolve_option(&self, kind: u64, value: Value, resolved: &mut Map<String, Value>) -> Value {
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
                .expect("resolved section")
                .insert(id.to_string(), v);
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

    fn take_failure(&mut self, method: &str, path: &str) -> Option<(u16, Value)> {
        let f = self
            .failures
            .iter_mut()
            .find(|f| f.remaining > 0 && f.method == method && path.contains(&f.path_contains))?;
        f.remaining -= 1;
        Some((f.status, f.body.clone()))
    }

    fn attachments_for(
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

    fn chan_mut(&mut self, id: u64) -> &mut Chan {
        let position = self.channels.len() as u64;
        self.channels.entry(id).or_insert_with(|| Chan {
            guild: FakeDiscord::GUILD_ID,
            name: format!("channel-{id}"),
            position,
            overwrites: Vec::new(),
        })
    }

    /// The guild of a guild channel: unknown ids are [`FakeDiscord::GUILD_ID`]'s.
    fn guild_of_channel(&self, id: u64) -> u64 {
        self.channels
            .get(&id)
            .map_or(FakeDiscord::GUILD_ID, |c| c.guild)
    }

    /// The serenity `GuildChannel` of a guild text channel; unknown ids are text channels (of
    /// [`FakeDiscord::GUILD_ID`]) too.
    fn channel_json(&self, id: u64) -> Value {
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
    fn bot_roles(&self, guild: u64) -> Vec<u64> {
        vec![FakeDiscord::bot_role_of(guild)]
    }

    /// The bot's member, as `GET /guilds/{g}/members/{bot}` answers it.
    fn bot_member_json(&self, guild: u64) -> Value {
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
    fn bot_permissions_in(&self, channel_id: u64) -> Permissions {
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
        let bot = FakeDiscord::APPLICATION_ID;
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
    fn create_message(&mut self, channel_id: u64, body: &Value, files: &[FilePart]) -> Reply {
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
        let m = self.new_message(channel_id, body, files, false);
        if let Some(nonce) = nonce {
            let id = snowflake(&m["id"]).expect("id");
            self.nonces.insert((channel_id, nonce), id);
        }
        Reply::Json(200, m)
    }

    fn new_message(
        &mut self,
        channel_id: u64,
        body: &Value,
        files: &[FilePart],
        webhook: bool,
    ) -> Value {
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
            m["webhook_id"] = json!(FakeDiscord::APPLICATION_ID.to_string());
            m["application_id"] = json!(FakeDiscord::APPLICATION_ID.to_string());
        }
        self.apply(&mut m, body, files, false);
        self.messages.insert(id, m.clone());
        m
    }

    fn edit_message(&mut self, id: u64, body: &Value, files: &[FilePart]) -> Option<Value> {
        let mut m = self.messages.get(&id)?.clone();
        self.apply(&mut m, body, files, true);
        self.messages.insert(id, m.clone());
        Some(m)
    }

    fn apply(&mut self, m: &mut Value, body: &Value, files: &[FilePart], edit: bool) {
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

    fn guild_json(&self, guild: u64) -> Value {
        let roles: Vec<Value> = self
            .roles
            .iter()
            .filter(|(_, (g, _, _))| *g == guild)
            .map(|(id, (_, name, perms))| role_json(*id, name, *perms))
            .collect();
        json!({
            "id": guild.to_string(),
            "name": if guild == FakeDiscord::GUILD_ID { "Fake Guild" } else { "Fake Guild 2" },
            "icon": null, "icon_hash": null, "splash": null, "discovery_splash": null,
            "owner_id": FakeDiscord::OWNER_ID.to_string(),
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

    fn register_commands(&mut self, scope: Option<u64>, body: &Value) -> Reply {
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
            let obj = c.as_object_mut().expect("command object");
            obj.insert("id".into(), json!(id.to_string()));
            obj.insert(
                "application_id".into(),
                json!(FakeDiscord::APPLICATION_ID.to_string()),
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
        self.commands = out.clone();
        self.registered_bot = self.bots;
        Reply::Json(200, json!(out))
    }

    fn interaction_callback(
        &mut self,
        id: &str,
        token: &str,
        body: &Value,
        files: &[FilePart],
    ) -> Reply {
        let Some(id) = id
            .parse()
            .ok()
            .filter(|id| self.interactions.contains_key(id))
        else {
            return error(404, 10062, "Unknown interaction");
        };
        let inter = &self.interactions[&id];
        if inter.token != token {
            return error(401, 50027, "Invalid Webhook Token");
        }
        let late = inter
            .dispatched_at
            .is_some_and(|t| t.elapsed() > Duration::from_secs(3));
        if self.latency.is_some() && late {
            // Discord forgets an interaction not answered within 3 seconds.
            return error(404, 10062, "Unknown interaction");
        }
        if inter.callback.is_some() {
            return error(400, 40060, "Interaction has already been acknowledged.");
        }
        let (channel_id, message_id) = (inter.channel_id, inter.message_id);
        let data = &body["data"];
        let original = match body["type"].as_u64() {
            Some(4) => Some(snowflake(
                &self.new_message(channel_id, data, files, true)["id"],
            )),
            Some(5) => {
                let flags = (data["flags"].as_u64().unwrap_or(0) & EPHEMERAL) | LOADING;
                let m = self.new_message(channel_id, &json!({ "flags": flags }), &[], true);
                Some(snowflake(&m["id"]))
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
            _ => None,
        };
        let inter = self.interactions.get_mut(&id).expect("interaction");
        if let Some(original) = original {
            inter.original = original;
        }
        inter.callback = Some(body.clone());
        inter.answered_at = Some(std::time::Instant::now());
        if matches!(body["type"].as_u64(), Some(4 | 7 | 9)) {
            inter.shown_at = inter.answered_at;
        }
        inter.answered.notify_waiters();
        Reply::NoContent
    }

    fn followup(&mut self, token: &str, body: &Value, files: &[FilePart]) -> Reply {
        let Some(id) = self.tokens.get(token).copied() else {
            return error(404, 10015, "Unknown Webhook");
        };
        let inter = &self.interactions[&id];
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
        let m = match deferred {
            Some(o) => self.edit_message(o, body, files).expect("deferred message"),
            None => self.new_message(channel_id, body, files, true),
        };
        let mid = snowflake(&m["id"]).expect("id");
        let inter = self.interactions.get_mut(&id).expect("interaction");
        inter.followups.push(mid);
        inter.mark_shown();
        Reply::Json(200, m)
    }

    fn webhook_message(
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
        let Some(id) = id.filter(|id| self.messages.contains_key(id)) else {
            return error(404, 10008, "Unknown Message");
        };
        match *method {
            Method::GET => Reply::Json(200, self.messages[&id].clone()),
            Method::PATCH => {
                let edited = self.edit_message(id, body, files).expect("message");
                if which == "@original"
                    && let Some(inter) = self.interactions.get_mut(&inter_id)
                {
                    inter.mark_shown();
                }
                Reply::Json(200, edited)
            }
            Method::DELETE => {
                self.messages.remove(&id);
                Reply::NoContent
            }
            _ => error(405, 0, "405: Method Not Allowed"),
        }
    }

    fn route(
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
                    "id": FakeDiscord::APPLICATION_ID.to_string(),
                    "name": FakeDiscord::BOT_NAME,
                    "icon": null,
                    "description": "",
                    "rpc_origins": [],
                    "bot_public": false,
                    "bot_require_code_grant": false,
                    "owner": user_json(FakeDiscord::OWNER_ID, "owner", false),
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
                self.interaction_callback(id, token, body, files)
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
                let limit = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("limit="))
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(50);
                let mut msgs = self.channel_messages(c);
                msgs.reverse();
                msgs.truncate(limit);
                Reply::Json(200, json!(msgs))
            }
            (_, ["channels", c, "messages", mid]) => {
                let (c, mid) = (c.parse::<u64>().ok(), mid.parse::<u64>().ok());
                let Some(mid) = mid.filter(|id| {
                    self.messages
                        .get(id)
                        .is_some_and(|m| snowflake(&m["channel_id"]) == c)
                }) else {
                    return error(404, 10008, "Unknown Message");
                };
                match m {
                    "GET" => Reply::Json(200, self.messages[&mid].clone()),
                    "PATCH" => {
                        Reply::Json(200, self.edit_message(mid, body, files).expect("message"))
                    }
                    "DELETE" => {
                        self.messages.remove(&mid);
                        Reply::NoContent
                    }
                    _ => error(405, 0, "405: Method Not Allowed"),
                }
            }
            ("GET", ["guilds", g, rest @ ..])
                if g.parse::<u64>()
                    .is_ok_and(|g| FakeDiscord::GUILDS.contains(&g)) =>
            {
                let guild: u64 = g.parse().expect("a guild id, matched above");
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
                    ["members", u] if u.parse::<u64>() == Ok(FakeDiscord::APPLICATION_ID) => {
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
            ("GET", ["guilds", ..]) => error(404, 10004, "Unknown Guild"),
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

    fn dm_channel_json(&self, channel_id: u64, user: u64) -> Value {
        json!({
            "id": channel_id.to_string(),
            "type": 1,
            "last_message_id": null,
            "flags": 0,
            "recipients": [user_json(user, &self.user_name(user), false)],
        })
    }
}

// ---- HTTP ------------------------------------------------------------------------------------

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn disposition_param(headers: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=\"");
    let line = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_owned())
}

/// serenity sends attachments as multipart with the JSON in a `payload_json` part.
fn parse_multipart(content_type: &str, body: &[u8]) -> (Value, Vec<FilePart>) {
    let Some(boundary) = content_type.split("boundary=").nth(1) else {
        return (Value::Null, Vec::new());
    };
    let delim = format!("--{}", boundary.trim_matches('"'));
    let delim = delim.as_bytes();
    let mut payload = Value::Null;
    let mut files = Vec::new();
    let mut pos = match find(body, delim, 0) {
        Some(p) => p + delim.len(),
        None => return (payload, files),
    };
    while let Some(next) = find(body, delim, pos) {
        let part = &body[pos..next];
        pos = next + delim.len();
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let part = part.strip_suffix(b"\r\n").unwrap_or(part);
        let Some(split) = find(part, b"\r\n\r\n", 0) else {
            continue;
        };
        let headers = String::from_utf8_lossy(&part[..split]).into_owned();
        let data = part[split + 4..].to_vec();
        let name = disposition_param(&headers, "name").unwrap_or_default();
        if name == "payload_json" {
            payload = serde_json::from_slice(&data).unwrap_or(Value::Null);
        } else {
            let content_type = headers.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("content-type:")
                    .then(|| l["content-type:".len()..].trim().to_owned())
            });
            files.push(FilePart {
                filename: disposition_param(&headers, "filename").unwrap_or_else(|| name.clone()),
                name,
                content_type,
                data,
            });
        }
        if body[pos..].starts_with(b"--") {
            break;
        }
    }
    (payload, files)
}

async fn rest_route(
    State(fake): State<FakeDiscord>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sent_at = std::time::Instant::now();
    let path = uri.path();
    let path = path.strip_prefix("/api/v10").unwrap_or(path).to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let latency = fake.lock().latency;
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (json_body, files) = if content_type.starts_with("multipart/form-data") {
        parse_multipart(content_type, &body)
    } else if body.is_empty() {
        (Value::Null, Vec::new())
    } else {
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        (v, Vec::new())
    };
    let reply = {
        let mut st = fake.lock();
        st.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: json_body.clone(),
            sent_at,
        });
        if st
            .hangs
            .iter()
            .any(|(m, p)| m == method.as_str() && path.contains(p.as_str()))
        {
            None
        } else {
            Some(match st.take_failure(method.as_str(), &path) {
                Some((status, body)) => Err((status, body)),
                None => Ok(st.route(&method, &path, &query, &json_body, &files)),
            })
        }
    };
    fake.bump();
    let Some(reply) = reply else {
        return std::future::pending().await;
    };
    match reply {
        Err((status, body)) => {
            let mut res = json_response(status, &body);
            if let Some(secs) = body["retry_after"].as_f64() {
                let value = format!("{}", secs.ceil() as u64);
                res.headers_mut()
                    .insert("retry-after", value.parse().expect("header value"));
            }
            res
        }
        Ok(Reply::Json(status, v)) => json_response(status, &v),
        Ok(Reply::NoContent) => StatusCode::NO_CONTENT.into_response(),
        Ok(Reply::Raw(bytes)) => Response::new(Body::from(bytes)),
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = StatusCode::from_u16(status).expect("status");
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("header value"),
    );
    res
}

// ---- gateway ---------------------------------------------------------------------------------

async fn gateway_route(State(fake): State<FakeDiscord>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| serve_gateway(fake, socket))
}

async fn serve_gateway(fake: FakeDiscord, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<WsMessage>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if sink.send(msg).await.is_err() {
                break;
            }
        }
    });
    let conn_id = {
        let mut st = fake.lock();
        st.next_conn += 1;
        st.next_conn
    };
    // Plain text frames although IDENTIFY asks for compression: serenity reads both.
    let send = |v: Value| {
        let _ = tx.send(WsMessage::Text(v.to_string().into()));
    };
    send(json!({ "op": 10, "d": { "heartbeat_interval": fake.inner.heartbeat_ms } }));
    // The shard this connection was last made ready for.
    let mut live_shard = None;
    // Keep reading after a Close frame: that is what makes the close handshake answer.
    while let Some(Ok(msg)) = stream.next().await {
        let WsMessage::Text(text) = msg else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        match frame["op"].as_u64() {
            Some(1) => {
                let ack = {
                    let mut st = fake.lock();
                    st.heartbeats += 1;
                    st.ack_heartbeats
                };
                if ack {
                    send(json!({ "op": 11 }));
                }
            }
            Some(2) => {
                let shard = identified_shard(&frame["d"]);
                let mut st = fake.lock();
                st.identifies += 1;
                st.last_identify = Some(frame["d"].clone());
                st.sessions.insert(session_id(conn_id), shard);
                // Sent under the lock so no dispatch can overtake READY.
                let _ = tx.send(WsMessage::Text(
                    ready_frame(&gateway_url(&st.base_url), conn_id, shard)
                        .to_string()
                        .into(),
                ));
                // A newer connection for the shard replaces an older one, as Discord's would.
                st.live.insert(
                    shard.0,
                    Conn {
                        id: conn_id,
                        shard,
                        tx: tx.clone(),
                        seq: 1,
                    },
                );
                live_shard = Some(shard.0);
            }
            // Resuming (rather than INVALID_SESSION) skips serenity's 5 s pause between shard
            // boots, so a dropped connection costs a test milliseconds; nothing is replayed.
            Some(6) => {
                let mut st = fake.lock();
                st.resumes += 1;
                // The session says which shard this is: RESUME does not.
                let shard = frame["d"]["session_id"]
                    .as_str()
                    .and_then(|s| st.sessions.get(s).copied())
                    .unwrap_or((0, 1));
                let seq = frame["d"]["seq"].as_u64().unwrap_or(0) + 1;
                let _ = tx.send(WsMessage::Text(
                    dispatch_frame("RESUMED", seq, json!({})).to_string().into(),
                ));
                st.live.insert(
                    shard.0,
                    Conn {
                        id: conn_id,
                        shard,
                        tx: tx.clone(),
                        seq,
                    },
                );
                live_shard = Some(shard.0);
            }
            _ => {}
        }
        fake.bump();
    }
    if let Some(shard) = live_shard {
        let mut st = fake.lock();
        if st.live.get(&shard).is_some_and(|c| c.id == conn_id) {
            st.live.remove(&shard);
        }
    }
    fake.bump();
    drop(tx);
    let _ = writer.await;
}

/// IDENTIFY's `shard` (`[id, count]`); without one a client runs the only shard, `[0, 1]`.
fn identified_shard(d: &Value) -> Shard {
    let part = |i: usize| d["shard"][i].as_u64().and_then(|v| u32::try_from(v).ok());
    match (part(0), part(1)) {
        (Some(id), Some(count)) if id < count => (id, count),
        _ => (0, 1),
    }
}
