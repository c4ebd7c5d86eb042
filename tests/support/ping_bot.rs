//! A bare poise bot with one `/ping`, run against a [`FakeDiscord`]: proves the fake and sets the framework's latency floor.

use super::fake_discord::FakeDiscord;
use poise::serenity_prelude as serenity;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Context<'a> = poise::Context<'a, (), Error>;

/// Replies "pong"
#[poise::command(slash_command)]
async fn ping(ctx: Context<'_>) -> Result<(), Error> {
    ctx.say("pong").await?;
    Ok(())
}

pub struct PingBot {
    pub shard_manager: Arc<serenity::ShardManager>,
    pub http: Arc<serenity::Http>,
    task: JoinHandle<Result<(), serenity::Error>>,
}

pub async fn start_ping_bot(fake: &FakeDiscord) -> PingBot {
    start(fake, None).await
}

/// The ping bot running shard `id` of `count` only, as one of several processes would.
pub async fn start_ping_bot_shard(fake: &FakeDiscord, id: u32, count: u32) -> PingBot {
    start(fake, Some((id, count))).await
}

/// `shard`: None runs the one shard `client.start()` picks.
async fn start(fake: &FakeDiscord, shard: Option<(u32, u32)>) -> PingBot {
    let framework = poise::Framework::builder()
        .options(poise::FrameworkOptions {
            commands: vec![ping()],
            ..Default::default()
        })
        .setup(|ctx, _ready, framework| {
            Box::pin(async move {
                let guild = serenity::GuildId::new(FakeDiscord::GUILD_ID);
                poise::builtins::register_in_guild(ctx, &framework.options().commands, guild)
                    .await?;
                Ok(())
            })
        })
        .build();
    // The rate limiter would rebuild requests without the proxy and go to the real Discord.
    let http = serenity::HttpBuilder::new("fake-bot-token")
        .proxy(fake.base_url())
        .ratelimiter_disabled(true)
        .build();
    let mut client =
        serenity::ClientBuilder::new_with_http(http, serenity::GatewayIntents::non_privileged())
            .framework(framework)
            .await
            .expect("build the ping bot's client");
    let shard_manager = client.shard_manager.clone();
    let http = client.http.clone();
    let task = tokio::spawn(async move {
        match shard {
            Some((id, count)) => client.start_shard(id, count).await,
            None => client.start().await,
        }
    });
    PingBot {
        shard_manager,
        http,
        task,
    }
}

impl PingBot {
    pub async fn shutdown(self) {
        self.shard_manager.shutdown_all().await;
        // A shard waiting out serenity's 5 s reconnect pause would hold the join that long.
        let mut task = self.task;
        match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
            Ok(joined) => {
                let result = joined.expect("the ping bot's task panicked");
                result.expect("the ping bot stopped with an error");
            }
            Err(_) => task.abort(),
        }
    }

    /// Stops the client without the close handshake, for a bot that is stuck reconnecting.
    pub fn abort(self) {
        self.task.abort();
    }
}
