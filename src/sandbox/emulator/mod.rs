//! An emulator of Discord's REST API and gateway on 127.0.0.1: the sandbox's and the tests'.

// Faithful where the bot can tell: every payload it sends parses in serenity (checked by
// tests/fake_discord.rs), and it answers as Discord does, 3-second deadline, nonces, shards
// and permissions included.

mod gateway;
mod interactions;
mod json;
mod rest;
mod state;
mod view;

pub use view::{OpenModal, Refused, may_use};

use axum::Router;
use axum::routing::get;
use json::{close, gateway_url};
use serde_json::Value;
use serenity::all::Permissions;
use state::{Chan, Failure, St};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// How long every `wait_*`/`response`/`followups` call waits before it gives up.
pub const WAIT: Duration = Duration::from_secs(10);
// Fits in an i64, so stores that keep ids as BIGINT accept them.
const FIRST_ID: u64 = 1_100_000_000_000_000_000 >> 2;
const EPHEMERAL: u64 = 1 << 6;
const LOADING: u64 = 1 << 7;
const SUPPRESS_EMBEDS: u64 = 1 << 2;

/// A guild member (or DM user) who clicks and types.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub roles: Vec<u64>,
    /// Guild permission bits, sent as the interaction's `member.permissions`.
    pub permissions: u64,
    /// The guild their guild interactions come from: [`Emulator::GUILD_ID`] unless
    /// [`Self::in_guild`] says otherwise.
    pub guild: u64,
}

impl Member {
    /// Discord computes an administrator's permissions as every bit.
    pub fn admin(id: u64, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            roles: Vec::new(),
            permissions: Permissions::all().bits(),
            guild: Emulator::GUILD_ID,
        }
    }

    /// A plain member, beside [`Self::admin`].
    #[allow(clippy::self_named_constructors)]
    pub fn member(id: u64, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            roles: Vec::new(),
            permissions: member_permissions(),
            guild: Emulator::GUILD_ID,
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

    /// Their guild interactions come from `guild` (one of the emulator's two), and so go to the
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

/// Handle of one interaction the emulator created (and usually dispatched).
#[derive(Clone, Debug)]
pub struct Interaction {
    pub id: u64,
    pub token: String,
}

/// A wait that ran out: what was awaited, and what the emulator had seen by then.
#[derive(thiserror::Error)]
#[error("Discord emulator: timed out after {waited:?} waiting for {what}\n{report}")]
pub struct Timeout {
    pub what: String,
    pub waited: Duration,
    /// Every REST body so far, secrets included: for a test's failure, never for a log.
    pub report: String,
}

impl std::fmt::Debug for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeout")
            .field("what", &self.what)
            .field("waited", &self.waited)
            .finish_non_exhaustive()
    }
}

/// The snowflake of this millisecond: ids of this run do not repeat an earlier run's, which
/// a database the sandbox keeps, or a browser's memory, may still hold.
fn now_snowflake() -> u64 {
    const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    // Below 2^63 until 2084, so stores that keep ids as BIGINT accept them.
    FIRST_ID.max(now_ms.saturating_sub(DISCORD_EPOCH_MS) << 22)
}

/// Whether a `Host` header names this machine's loopback: `127.0.0.1:8090`, `localhost`,
/// `[::1]:8090`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The bot is the emulator's only client and sends no `Origin`: a request with one, or for
/// another host, comes from a web page (cross-site, or DNS rebinding) and is refused.
async fn bot_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let headers = request.headers();
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if headers.contains_key(axum::http::header::ORIGIN) || !is_loopback_host(host) {
        return axum::http::StatusCode::FORBIDDEN.into_response();
    }
    next.run(request).await
}

#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<St>,
    changed: watch::Sender<u64>,
    base_url: String,
    heartbeat_ms: u64,
}

impl Emulator {
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
        // The remainder is below `count`, so it fits.
        u32::try_from((guild >> 22) % u64::from(count.max(1))).unwrap_or(0)
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
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with_heartbeat(Duration::from_millis(1000)).await
    }

    /// Serves on a free port of 127.0.0.1 until the runtime stops.
    pub async fn start_with_heartbeat(interval: Duration) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
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
            next_id: now_snowflake(),
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
            by_channel: HashMap::new(),
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
            created_by: HashMap::new(),
            open_modals: HashMap::new(),
            guild_names: HashMap::new(),
            shown: 0,
            deadline: false,
            app_permissions: bot_permissions(),
        };
        let emulator = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(st),
                changed: watch::Sender::new(0),
                base_url,
                heartbeat_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            }),
        };
        let app = Router::new()
            .route("/gateway", get(gateway::gateway_route))
            .fallback(rest::rest_route)
            .layer(axum::middleware::from_fn(bot_only))
            .with_state(emulator.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(crate::http::no_delay(listener), app).await {
                tracing::error!(error = %e, "the Discord emulator stopped serving");
            }
        });
        Ok(emulator)
    }

    /// What the bot's `DISCORD_API_URL` (serenity's HTTP proxy) is set to.
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    pub fn gateway_url(&self) -> String {
        gateway_url(&self.inner.base_url)
    }

    fn lock(&self) -> MutexGuard<'_, St> {
        // A caller that panicked while holding the lock must not hide the real failure.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.inner.changed.send_modify(|v| *v += 1);
    }

    /// A receiver whose value changes whenever anything the emulator holds changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Waits until `f` yields, re-checking after every state change, for up to [`WAIT`].
    async fn wait_for<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut St) -> Option<T>,
    ) -> Result<T, Timeout> {
        let mut rx = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            rx.borrow_and_update();
            let found = f(&mut self.lock());
            if let Some(v) = found {
                return Ok(v);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(self.timeout(what));
            }
        }
    }

    fn timeout(&self, what: &str) -> Timeout {
        self.timeout_after(what, WAIT)
    }

    fn timeout_after(&self, what: &str, waited: Duration) -> Timeout {
        Timeout {
            what: what.to_owned(),
            waited,
            report: self.report(),
        }
    }

    /// The gateway's state and every REST call so far, for a failure report.
    pub fn report(&self) -> String {
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
    pub async fn wait_ready(&self) -> Result<(), Timeout> {
        self.wait_for(
            "a bot to connect, get READY and register its commands (PUT .../commands)",
            |st| {
                let live = !st.live.is_empty();
                (live && st.bots > 0 && st.registered_bot == st.bots).then_some(())
            },
        )
        .await
    }

    /// A connection for `shard` is open and has been sent READY (or RESUMED); whether anyone
    /// registered commands does not matter.
    pub async fn wait_shard_ready(&self, shard: u32) -> Result<(), Timeout> {
        let what = format!("a ready gateway connection for shard {shard}");
        self.wait_for(&what, |st| st.live.contains_key(&shard).then_some(()))
            .await
    }

    /// The last registered command list (global or guild), as the emulator answered it (with ids).
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
        self.push_failure(method, path_contains, status, body, times, false);
    }

    /// As [`Emulator::fail`], but each call is carried out before it fails:
    /// Discord did it, and its answer was lost on the way to the bot.
    pub fn fail_after_applying(
        &self,
        method: &str,
        path_contains: &str,
        status: u16,
        body: Value,
        times: usize,
    ) {
        self.push_failure(method, path_contains, status, body, times, true);
    }

    fn push_failure(
        &self,
        method: &str,
        path_contains: &str,
        status: u16,
        body: Value,
        remaining: usize,
        applied: bool,
    ) {
        self.lock().failures.push(Failure {
            method: method.to_uppercase(),
            path_contains: path_contains.to_owned(),
            status,
            body,
            remaining,
            applied,
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
        let bot = Emulator::APPLICATION_ID;
        match chan.overwrites.iter_mut().find(|o| o.0 == bot && o.1 == 1) {
            Some(o) => {
                o.2 &= !deny_bits;
                o.3 |= deny_bits;
            }
            None => chan.overwrites.push((bot, 1, 0, deny_bits)),
        }
    }

    /// Known to `GET /guilds/{g}/members/{u}` (users of guild interactions are added too).
    pub fn add_member(&self, user: &Member) {
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

    // ---- what the user sees ---------------------------------------------------------------

    /// The interaction's callback body `{type, data}`, waiting up to [`WAIT`] for it.
    pub async fn response(&self, i: &Interaction) -> Result<Value, Timeout> {
        self.response_within(i, WAIT).await
    }

    /// The interaction's callback body `{type, data}`, waiting up to `wait` for it.
    pub async fn response_within(&self, i: &Interaction, wait: Duration) -> Result<Value, Timeout> {
        let what = format!("the callback of interaction {}", i.id);
        self.wait_on(i, &what, wait, |x| x.callback.clone()).await
    }

    /// The first `n` follow-ups of the interaction, as they are now (`Null` if deleted).
    pub async fn followups(&self, i: &Interaction, n: usize) -> Result<Vec<Value>, Timeout> {
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

    pub async fn wait_for_dm(&self, user_id: u64, n: usize) -> Result<Vec<Value>, Timeout> {
        let what = format!("{n} DM(s) to user {user_id}");
        self.wait_for(&what, |st| {
            let c = st.dm_channels.get(&user_id)?;
            let msgs = st.channel_messages(*c);
            (msgs.len() >= n).then_some(msgs)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn only_loopback_host_names_are_served() {
        for host in [
            "127.0.0.1:8090",
            "localhost:8090",
            "LOCALHOST",
            "[::1]:8090",
            "127.0.0.2",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example:8090",
            "localhost.evil.example",
            "10.0.0.1:8090",
            "[::2]",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
