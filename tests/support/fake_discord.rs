//! The tests' handle on keygate's Discord emulator: the same emulator, with waits that panic.

use keygate::sandbox::emulator::{Emulator, Timeout};
use serde_json::Value;
use std::ops::Deref;
use std::time::Duration;

pub use keygate::sandbox::emulator::{Interaction, Member as TestUser, WAIT};

/// [`Emulator`], whose waits fail the test with the emulator's report when they time out.
#[derive(Clone)]
pub struct FakeDiscord(Emulator);

impl Deref for FakeDiscord {
    type Target = Emulator;

    fn deref(&self) -> &Emulator {
        &self.0
    }
}

fn ok<T>(waited: Result<T, Timeout>) -> T {
    waited.unwrap_or_else(|timeout| panic!("{timeout}"))
}

impl FakeDiscord {
    pub const GUILD_ID: u64 = Emulator::GUILD_ID;
    pub const GUILD_2_ID: u64 = Emulator::GUILD_2_ID;
    pub const APPLICATION_ID: u64 = Emulator::APPLICATION_ID;
    pub const CHANNEL_ID: u64 = Emulator::CHANNEL_ID;
    pub const CHANNEL_2_ID: u64 = Emulator::CHANNEL_2_ID;
    pub const OWNER_ID: u64 = Emulator::OWNER_ID;
    pub const BOT_NAME: &str = Emulator::BOT_NAME;
    pub const BOT_ROLE_ID: u64 = Emulator::BOT_ROLE_ID;
    pub const BOT_ROLE_2_ID: u64 = Emulator::BOT_ROLE_2_ID;
    pub const GUILDS: [u64; 2] = Emulator::GUILDS;

    pub fn shard_of(guild: u64, count: u32) -> u32 {
        Emulator::shard_of(guild, count)
    }

    pub fn bot_role_of(guild: u64) -> u64 {
        Emulator::bot_role_of(guild)
    }

    pub async fn start() -> Self {
        Self(Emulator::start().await.expect("start the Discord emulator"))
    }

    pub async fn start_with_heartbeat(interval: Duration) -> Self {
        let emulator = Emulator::start_with_heartbeat(interval).await;
        Self(emulator.expect("start the Discord emulator"))
    }

    pub async fn wait_ready(&self) {
        ok(self.0.wait_ready().await)
    }

    pub async fn wait_shard_ready(&self, shard: u32) {
        ok(self.0.wait_shard_ready(shard).await)
    }

    pub async fn dispatch(&self, event: &str, d: Value) {
        ok(self.0.dispatch(event, d).await)
    }

    pub async fn slash_command(
        &self,
        user: &TestUser,
        command: &str,
        subcommand: Option<&str>,
        options: Vec<(&str, Value)>,
    ) -> Interaction {
        ok(self
            .0
            .slash_command(user, command, subcommand, options)
            .await)
    }

    pub async fn autocomplete(
        &self,
        user: &TestUser,
        command: &str,
        subcommand: Option<&str>,
        option: &str,
        typed: &str,
    ) -> Interaction {
        ok(self
            .0
            .autocomplete(user, command, subcommand, option, typed)
            .await)
    }

    pub async fn press_button(
        &self,
        user: &TestUser,
        message: &Value,
        custom_id: &str,
    ) -> Interaction {
        ok(self.0.press_button(user, message, custom_id).await)
    }

    pub async fn press_button_in_dm(
        &self,
        user: &TestUser,
        message: &Value,
        custom_id: &str,
    ) -> Interaction {
        ok(self.0.press_button_in_dm(user, message, custom_id).await)
    }

    pub async fn select(
        &self,
        user: &TestUser,
        message: &Value,
        custom_id: &str,
        values: &[&str],
    ) -> Interaction {
        ok(self.0.select(user, message, custom_id, values).await)
    }

    pub async fn select_in_dm(
        &self,
        user: &TestUser,
        message: &Value,
        custom_id: &str,
        values: &[&str],
    ) -> Interaction {
        ok(self.0.select_in_dm(user, message, custom_id, values).await)
    }

    pub async fn submit_modal(
        &self,
        user: &TestUser,
        custom_id: &str,
        fields: &[(&str, &str)],
        message: Option<&Value>,
    ) -> Interaction {
        ok(self.0.submit_modal(user, custom_id, fields, message).await)
    }

    pub async fn submit_modal_in_dm(
        &self,
        user: &TestUser,
        custom_id: &str,
        fields: &[(&str, &str)],
        message: Option<&Value>,
    ) -> Interaction {
        ok(self
            .0
            .submit_modal_in_dm(user, custom_id, fields, message)
            .await)
    }

    pub async fn shown_latency(&self, i: &Interaction) -> Duration {
        ok(self.0.shown_latency(i).await)
    }

    pub async fn response(&self, i: &Interaction) -> Value {
        ok(self.0.response(i).await)
    }

    pub async fn followups(&self, i: &Interaction, n: usize) -> Vec<Value> {
        ok(self.0.followups(i, n).await)
    }

    pub async fn wait_for_dm(&self, user_id: u64, n: usize) -> Vec<Value> {
        ok(self.0.wait_for_dm(user_id, n).await)
    }

    /// Polls every 10 ms for up to [`WAIT`].
    pub async fn wait_until(&self, what: &str, pred: impl Fn(&FakeDiscord) -> bool) {
        self.wait_until_within(WAIT, what, pred).await
    }

    /// Polls every 10 ms for up to `limit`, for what takes longer than most.
    pub async fn wait_until_within(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&FakeDiscord) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + limit;
        while !pred(self) {
            if tokio::time::Instant::now() >= deadline {
                let report = self.report();
                panic!(
                    "Discord emulator: timed out after {limit:?} waiting until {what}\n{report}"
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
