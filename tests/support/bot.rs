//! The real keygate bot, started against a fake Discord on a fresh store (or one a test prepared).

use super::TestDb;
use super::fake_discord::{FakeDiscord, TestUser};
use keygate::config::Config;
use keygate::discord::{self, BotHandle};
use keygate::domain::catalog::ScopeCatalog;
use keygate::service::{Clock, Policy, Service};
use keygate::store::Backend;
use serde_json::Value;
use std::ops::RangeInclusive;
use std::sync::Arc;

pub const ALICE_ID: u64 = 2_000_000_000_000_001;
pub const BOB_ID: u64 = 2_000_000_000_000_002;

pub fn alice() -> TestUser {
    TestUser::admin(ALICE_ID, "alice")
}

pub fn bob() -> TestUser {
    TestUser::admin(BOB_ID, "bob")
}

pub struct Harness {
    pub fake: FakeDiscord,
    pub db: TestDb,
    /// The service the bot uses: on the system clock, or on `db.clock` when
    /// started with `start_with(_, true)`.
    pub service: Service,
    bot: Option<BotHandle>,
    /// A bot started on a runtime of its own, to be killed like a process.
    own_runtime: Option<(tokio::runtime::Runtime, BotHandle)>,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(Backend::Sqlite, false).await
    }

    /// The bot on a fresh store of `backend`, its service on the test's
    /// manual clock (`db.clock`) when `manual_clock`.
    pub async fn start_with(backend: Backend, manual_clock: bool) -> Self {
        // A short grace, so tests see stalled requests retried in seconds.
        Self::start_with_stall_grace(backend, manual_clock, chrono::TimeDelta::seconds(1)).await
    }

    /// As `start_with`, with the time a request may stay unposted (or an
    /// approval undelivered) before the approvals worker takes it over.
    pub async fn start_with_stall_grace(
        backend: Backend,
        manual_clock: bool,
        stall_grace: chrono::TimeDelta,
    ) -> Self {
        let db = match backend {
            Backend::Sqlite => TestDb::sqlite().await,
            Backend::Postgres => TestDb::postgres().await,
        };
        Self::start_on_with(db, manual_clock, stall_grace).await
    }

    /// The bot on `db` as it is (a database prepared by the test, such as
    /// one upgraded from an older keygate).
    pub async fn start_on(db: TestDb, manual_clock: bool) -> Self {
        Self::start_on_with(db, manual_clock, chrono::TimeDelta::seconds(1)).await
    }

    async fn start_on_with(db: TestDb, manual_clock: bool, stall_grace: chrono::TimeDelta) -> Self {
        let fake = FakeDiscord::start().await;
        let policy = Policy {
            stall_grace,
            ..Policy::default()
        };
        let clock = if manual_clock {
            db.clock.set(chrono::Utc::now());
            db.clock.clone()
        } else {
            Clock::System
        };
        let service = Service::new(db.store.clone(), Arc::new(ScopeCatalog::builtin()))
            .with_policy(policy)
            .with_clock(clock);
        let mut h = Self {
            fake,
            db,
            service,
            bot: None,
            own_runtime: None,
        };
        h.start_bot().await;
        h
    }

    /// Stops the bot and starts it again on a runtime of its own, which
    /// `crash` drops mid-call the way a killed process stops.
    pub async fn restart_on_own_runtime(&mut self) {
        self.stop_bot().await;
        let before = self.fake.connections();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (config, service) = (self.config(), self.service.clone());
        let bot = runtime
            .spawn(async move { discord::start(&config, service).await })
            .await
            .expect("the bot's task")
            .expect("start the bot");
        self.own_runtime = Some((runtime, bot));
        self.fake
            .wait_until("the bot connects", |f| f.connections() > before)
            .await;
        self.fake.wait_ready().await;
    }

    /// Kills the bot started by `restart_on_own_runtime`: its tasks stop
    /// where they are, nothing shuts down cleanly.
    pub async fn crash(&mut self) {
        let Some((runtime, bot)) = self.own_runtime.take() else {
            return;
        };
        runtime.shutdown_background();
        drop(bot);
        self.fake.disconnect();
        self.fake
            .wait_until("the bot is gone", |f| !f.is_connected())
            .await;
    }

    /// The configuration `keygate run` would read, pointed at the fake.
    pub fn config(&self) -> Config {
        let base = self.fake.base_url();
        let guild = FakeDiscord::GUILD_ID.to_string();
        Config::from_lookup(|name| match name {
            "DISCORD_TOKEN" => Some("fake-bot-token".into()),
            "DISCORD_API_URL" => Some(base.clone()),
            "DISCORD_GUILD_ID" => Some(guild.clone()),
            "HTTP_ADDR" => Some(String::new()),
            _ => None,
        })
        .expect("test config")
    }

    pub async fn start_bot(&mut self) {
        let before = self.fake.connections();
        let bot = discord::start(&self.config(), self.service.clone())
            .await
            .expect("start the bot");
        self.bot = Some(bot);
        self.fake
            .wait_until("the bot connects", |f| f.connections() > before)
            .await;
        self.fake.wait_ready().await;
    }

    /// Stops the bot as `keygate run` does on SIGTERM.
    pub async fn stop_bot(&mut self) {
        if let Some(bot) = self.bot.take() {
            bot.shutdown().await;
        }
        self.fake
            .wait_until("the bot disconnects", |f| !f.is_connected())
            .await;
    }

    /// A new bot process on the same database.
    pub async fn restart(&mut self) {
        self.stop_bot().await;
        self.start_bot().await;
    }

    pub async fn close(mut self) {
        self.crash().await;
        self.stop_bot().await;
        self.db.close().await;
    }
}

/// A bot process that runs only shards `ids` of `count` (`SHARD_COUNT`/`SHARD_IDS`), one of
/// several on a fake and a service they share, on a runtime of its own so that `kill` stops it
/// the way a killed process stops. Without `DISCORD_GUILD_ID`: shard 0's process registers the
/// commands globally, so they work in both of the fake's guilds.
pub struct ShardProcess {
    fake: FakeDiscord,
    ids: RangeInclusive<u32>,
    /// `None` once killed or stopped; dropping a runtime inside a test's runtime would panic.
    running: Option<(tokio::runtime::Runtime, BotHandle)>,
}

impl ShardProcess {
    /// Starts the process and waits until each of its shards is READY; the process running
    /// shard 0 also until it has registered the commands. Its shards must not be connected
    /// already (kill or stop the process that ran them first).
    pub async fn start(
        fake: &FakeDiscord,
        service: &Service,
        count: u32,
        ids: RangeInclusive<u32>,
    ) -> Self {
        for shard in ids.clone() {
            assert!(
                !fake.is_shard_connected(shard),
                "shard {shard} is already connected: its READY could not be told from the new one's"
            );
        }
        let before = registrations(fake);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (config, service) = (shard_config(fake, count, &ids), service.clone());
        let bot = runtime
            .spawn(async move { discord::start(&config, service).await })
            .await
            .expect("the bot's task")
            .expect("start the bot");
        let process = Self {
            fake: fake.clone(),
            ids: ids.clone(),
            running: Some((runtime, bot)),
        };
        // serenity boots a process's shards 5 s apart: more than one costs that much.
        for shard in ids.clone() {
            fake.wait_shard_ready(shard).await;
        }
        if ids.contains(&0) {
            fake.wait_until("shard 0's process registers the commands", |f| {
                registrations(f) > before
            })
            .await;
        }
        process
    }

    /// Kills the process: its tasks stop where they are, nothing shuts down cleanly. Returns
    /// once the fake has none of its shards connected.
    pub async fn kill(mut self) {
        if let Some((runtime, bot)) = self.running.take() {
            runtime.shutdown_background();
            drop(bot);
        }
        for shard in self.ids.clone() {
            self.fake.disconnect_shard(shard);
        }
        self.wait_gone().await;
    }

    /// Stops the process as `keygate run` does on SIGTERM.
    pub async fn stop(mut self) {
        if let Some((runtime, bot)) = self.running.take() {
            runtime
                .spawn(async move { bot.shutdown().await })
                .await
                .expect("the bot's shutdown");
            runtime.shutdown_background();
        }
        self.wait_gone().await;
    }

    async fn wait_gone(&self) {
        let ids = self.ids.clone();
        self.fake
            .wait_until("the process's shards disconnect", |f| {
                ids.clone().all(|s| !f.is_shard_connected(s))
            })
            .await;
    }
}

impl Drop for ShardProcess {
    /// A test that panicked before `kill` or `stop` must not panic again here.
    fn drop(&mut self) {
        if let Some((runtime, _bot)) = self.running.take() {
            runtime.shutdown_background();
        }
    }
}

/// `PUT …/commands` calls so far: how shard 0's process is seen to register.
fn registrations(fake: &FakeDiscord) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/commands"))
        .count()
}

/// The configuration of one of several `keygate run` processes that split `count` shards.
fn shard_config(fake: &FakeDiscord, count: u32, ids: &RangeInclusive<u32>) -> Config {
    let base = fake.base_url();
    let count = count.to_string();
    let ids = if ids.start() == ids.end() {
        ids.start().to_string()
    } else {
        format!("{}-{}", ids.start(), ids.end())
    };
    Config::from_lookup(move |name| match name {
        "DISCORD_TOKEN" => Some("fake-bot-token".into()),
        "DISCORD_API_URL" => Some(base.clone()),
        "HTTP_ADDR" => Some(String::new()),
        "SHARD_COUNT" => Some(count.clone()),
        "SHARD_IDS" => Some(ids.clone()),
        _ => None,
    })
    .expect("shard process config")
}

/// Runs each named end-to-end test (a fn taking the `Backend`) once on
/// SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! end_to_end_on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite_bot {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(keygate::store::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres_bot {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(keygate::store::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// The value Discord sends for choice `name` of a command's option (poise
/// numbers a choice parameter's choices).
pub fn choice(fake: &FakeDiscord, subcommand: &str, option: &str, name: &str) -> Value {
    let commands = fake.commands();
    let options = commands
        .iter()
        .flat_map(|c| c["options"].as_array().into_iter().flatten())
        .find(|o| o["name"] == subcommand)
        .and_then(|s| s["options"].as_array())
        .unwrap_or_else(|| panic!("no subcommand {subcommand}"));
    options
        .iter()
        .find(|o| o["name"] == option)
        .and_then(|o| o["choices"].as_array())
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .map(|c| c["value"].clone())
        .unwrap_or_else(|| panic!("no choice {name} of {subcommand} {option}"))
}

/// The custom_id of the component of `message` whose id ends with `:action`.
pub fn component(message: &Value, action: &str) -> String {
    let suffix = format!(":{action}");
    message["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().into_iter().flatten())
        .filter_map(|c| c["custom_id"].as_str())
        .find(|id| id.ends_with(&suffix))
        .unwrap_or_else(|| panic!("no `{action}` component in {message:#}"))
        .to_owned()
}

/// The options of a select that the message shows as chosen.
pub fn selected(message: &Value, action: &str) -> Vec<String> {
    let id = component(message, action);
    message["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().into_iter().flatten())
        .filter(|c| c["custom_id"] == id.as_str())
        .flat_map(|c| c["options"].as_array().into_iter().flatten())
        .filter(|o| o["default"] == true)
        .filter_map(|o| o["value"].as_str().map(str::to_owned))
        .collect()
}

/// The first `prefix…` token (letters, digits, `_`) in `text`.
pub fn token(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)?;
    Some(
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect(),
    )
}

/// Waits for the response of `i`, checks its type, and returns the message the
/// user now sees. A handler that writes defers first, so an update (7) may
/// come as a deferred update (6) and a new message (4) as a deferral (5 or 6):
/// then what the user sees is the edit of `@original` that follows, or the
/// ephemeral follow-up an error after the deferral is told in.
pub async fn shown(fake: &FakeDiscord, i: &super::fake_discord::Interaction, kind: u64) -> Value {
    let r = fake.response(i).await;
    let got = r["type"].as_u64().unwrap_or(0);
    let deferred = match kind {
        7 => got == 6,
        4 => got == 5 || got == 6,
        _ => false,
    };
    assert!(got == kind || deferred, "wanted {kind}, response: {r:#}");
    if deferred {
        let edited = format!("/{}/messages/@original", i.token);
        fake.wait_until("the deferred interaction's edit or follow-up", |f| {
            f.followup_count(i) > 0
                || f.requests()
                    .iter()
                    .any(|c| c.method == "PATCH" && c.path.ends_with(&edited))
        })
        .await;
        if fake.followup_count(i) > 0 {
            return fake.followups(i, 1).await.remove(0);
        }
    }
    fake.message_of(i).expect("a message")
}

/// Whether the interaction's response is a deferral (type 5 or 6): what a
/// handler that writes answers before it writes.
pub fn is_deferral(response: &Value) -> bool {
    response["type"] == 5 || response["type"] == 6
}

/// A message's text content.
pub fn text(message: &Value) -> String {
    message["content"].as_str().unwrap_or("").to_owned()
}

/// Waits until none of `user`'s DMs holds `secret` any more (redacted).
pub async fn wait_until_no_dm_holds(fake: &FakeDiscord, user: u64, what: &str, secret: &str) {
    fake.wait_until(what, |f| {
        f.dm_messages(user)
            .iter()
            .all(|m| !text(m).contains(secret))
    })
    .await;
}

/// Presses Generate API Key on a credentials DM; returns the DM of its own
/// that the key arrives in (the press's answer, a message that stays in the
/// DM) and the key.
pub async fn generate_key_in_dm(
    fake: &FakeDiscord,
    user: &TestUser,
    dm: &Value,
) -> (Value, String) {
    let before = fake.dm_messages(user.id).len();
    let i = fake
        .press_button_in_dm(user, dm, &component(dm, "genkey"))
        .await;
    let r = fake.response(&i).await;
    let kept = r["data"]["flags"].as_u64().unwrap_or(0) & (1 << 6) == 0;
    assert!(
        (r["type"] == 4 || r["type"] == 5) && kept,
        "answered in a new message the bot can still redact: {r:#}"
    );
    let id = user.id;
    fake.wait_until("the key's own DM", |f| {
        f.dm_messages(id)
            .get(before)
            .is_some_and(|m| text(m).contains("API key: `kg_"))
    })
    .await;
    let key_dm = fake.dm_messages(user.id).remove(before);
    let key = token(&text(&key_dm), "kg_").expect("the key");
    (key_dm, key)
}
