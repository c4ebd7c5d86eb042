//! The Discord adapter: poise commands, a component router, DM delivery.
//!
//! Interactions become plain service calls; nothing here writes SQL. Buttons,
//! selects and modals are routed by their custom_id and load their state from
//! the database, so they keep working across restarts and processes.

mod access;
mod approvals;
mod audit_poster;
mod commands;
mod custom_id;
mod delivery;
mod error;
pub mod invite;
mod lifecycle;
mod render;
mod reply;
mod setup;
mod wizard;

use crate::config::{Config, Shards};
use crate::domain::ids::UserId;
use crate::domain::validation::AppForm;
use crate::runtime::every;
use crate::service::Service;
use anyhow::Context as _;
use custom_id::{CustomId, Kind};
use error::{BotError, BotResult};
use poise::serenity_prelude as serenity;
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use delivery::redacted_text;

/// State shared by every handler.
pub struct Bot {
    pub service: Service,
    /// The last rejected form per draft, with the member who typed it, to
    /// pre-fill the modal again (for them alone: a draft not stored yet has
    /// no owner in the database to check). The one state kept in memory:
    /// bad input writes nothing, and the press that reads it comes from the
    /// same member in the same guild, so through the same shard to this same
    /// process; lost on a restart, the form reopens from the stored draft.
    rejected_forms: Mutex<HashMap<String, (UserId, AppForm)>>,
}

pub type Context<'a> = poise::Context<'a, Bot, BotError>;

impl Bot {
    fn new(service: Service) -> Self {
        Self {
            service,
            rejected_forms: Mutex::new(HashMap::new()),
        }
    }

    fn forms(&self) -> std::sync::MutexGuard<'_, HashMap<String, (UserId, AppForm)>> {
        self.rejected_forms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn remember_rejected(&self, draft: &str, user: UserId, form: AppForm) {
        let mut forms = self.forms();
        // Bounded: a form is only worth keeping while its draft lives.
        if forms.len() >= 10_000 {
            forms.clear();
        }
        forms.insert(draft.to_owned(), (user, form));
    }

    fn rejected(&self, draft: &str, user: UserId) -> Option<AppForm> {
        self.forms()
            .get(draft)
            .filter(|(typed_by, _)| *typed_by == user)
            .map(|(_, form)| form.clone())
    }

    fn forget_rejected(&self, draft: &str) {
        self.forms().remove(draft);
    }
}

/// A running bot: its shards and its workers (redactions, approvals, audit posts).
pub struct BotHandle {
    shard_manager: Arc<serenity::ShardManager>,
    client: JoinHandle<Result<(), serenity::Error>>,
    workers: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl BotHandle {
    /// Closes the shards and stops the worker.
    pub async fn shutdown(self) {
        self.shard_manager.shutdown_all().await;
        let _ = self.stop.send(true);
        for worker in self.workers {
            let _ = worker.await;
        }
        // A shard waiting out serenity's reconnect pause would hold the join;
        // past a grace period the task is dropped.
        let mut client = self.client;
        match tokio::time::timeout(std::time::Duration::from_secs(10), &mut client).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "the Discord client stopped with an error")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "the Discord client task failed"),
            Err(_) => client.abort(),
        }
    }
}

/// Drafts nobody finished are dropped this often.
const DRAFT_PURGE_TICK: Duration = Duration::from_secs(60);

/// Builds the REST client; with `DISCORD_API_URL` every call goes there.
fn http(config: &Config) -> anyhow::Result<serenity::Http> {
    let token = config.require_token()?.expose_secret();
    let builder = serenity::HttpBuilder::new(token);
    Ok(match &config.discord_api_url {
        // serenity's rate limiter rebuilds requests without the proxy (and
        // would reach the real Discord), so it must be off behind one.
        Some(url) => builder
            .proxy(url.as_str().trim_end_matches('/'))
            .ratelimiter_disabled(true)
            .build(),
        None => builder.build(),
    })
}

/// Connects to Discord, registers the commands and starts serving.
pub async fn start(config: &Config, service: Service) -> anyhow::Result<BotHandle> {
    crate::telemetry::metrics();
    let http = http(config)?;
    let guild = config.discord_guild_id;
    let shards = config.shards;
    let bot = Bot::new(service.clone());
    let framework = poise::Framework::builder()
        .options(poise::FrameworkOptions {
            commands: vec![commands::app(), setup::keygate()],
            event_handler: |fw, event| Box::pin(on_event(fw, event)),
            on_error: |err| Box::pin(on_error(err)),
            allowed_mentions: Some(reply::no_pings()),
            ..Default::default()
        })
        .initialize_owners(false)
        .setup(move |ctx, _ready, framework| {
            Box::pin(async move {
                let commands = &framework.options().commands;
                // One process registers them: the one that runs shard 0.
                if shards.runs_shard_zero() {
                    match guild {
                        Some(g) => {
                            poise::builtins::register_in_guild(
                                ctx,
                                commands,
                                serenity::GuildId::new(g),
                            )
                            .await?
                        }
                        None => poise::builtins::register_globally(ctx, commands).await?,
                    }
                    tracing::info!(guild, "commands registered");
                } else {
                    tracing::info!("commands are registered by the process that runs shard 0");
                }
                Ok(bot)
            })
        })
        .build();
    // Interactions arrive whatever the intents; GUILDS alone keeps the bot
    // clear of every privileged intent.
    let mut client = serenity::ClientBuilder::new_with_http(http, serenity::GatewayIntents::GUILDS)
        .framework(framework)
        .await
        .context("cannot build the Discord client")?;
    let shard_manager = client.shard_manager.clone();
    let (stop, stopped) = watch::channel(false);
    let http = client.http.clone();
    let workers = vec![
        every("redaction", delivery::REDACTION_TICK, stopped.clone(), {
            let (http, service) = (http.clone(), service.clone());
            move || {
                let (http, service) = (http.clone(), service.clone());
                async move { delivery::redact_due(&http, &service).await }
            }
        }),
        every("approvals", approvals::TICK, stopped.clone(), {
            let (http, service) = (http.clone(), service.clone());
            move || {
                let (http, service) = (http.clone(), service.clone());
                async move { approvals::tick(&http, &service).await }
            }
        }),
        every("audit posting", audit_poster::TICK, stopped.clone(), {
            let (http, service) = (http.clone(), service.clone());
            move || {
                let (http, service) = (http.clone(), service.clone());
                async move { audit_poster::post_due(&http, &service).await }
            }
        }),
        every("expiry", lifecycle::TICK, stopped.clone(), {
            let (http, service) = (http.clone(), service.clone());
            move || {
                let (http, service) = (http.clone(), service.clone());
                async move { lifecycle::tick(&http, &service).await }
            }
        }),
        every("draft purge", DRAFT_PURGE_TICK, stopped, move || {
            let service = service.clone();
            async move {
                service.purge_expired_drafts().await?;
                Ok(None)
            }
        }),
    ];
    let client = tokio::spawn(async move {
        match shards {
            Shards::Auto => client.start_autosharded().await,
            // serenity reads the range's end as included (it starts
            // `end - start + 1` shards), so `first..last` runs first..=last;
            // `first..last + 1` would start one shard too many (closed 4010).
            Shards::Range { first, last, count } => {
                client.start_shard_range(first..last, count).await
            }
        }
    });
    Ok(BotHandle {
        shard_manager,
        client,
        workers,
        stop,
    })
}

/// Runs the bot until Ctrl-C or SIGTERM, then shuts down cleanly.
pub async fn run(config: &Config, service: Service) -> anyhow::Result<()> {
    let mut handle = start(config, service).await?;
    tokio::select! {
        _ = crate::runtime::shutdown_signal() => tracing::info!("shutting down"),
        ended = &mut handle.client => {
            // The client stopped by itself (a bad token, say): nothing to shut down.
            let _ = handle.stop.send(true);
            for worker in handle.workers {
                let _ = worker.await;
            }
            return match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e).context("the Discord connection failed"),
                Err(e) => Err(e).context("the Discord client task failed"),
            };
        }
    }
    handle.shutdown().await;
    Ok(())
}

/// Errors from slash commands: the user's shown to them, ours logged with a reference.
async fn on_error(err: poise::FrameworkError<'_, Bot, BotError>) {
    match err {
        poise::FrameworkError::Command { error, ctx, .. } => {
            if let poise::Context::Application(actx) = ctx {
                let answered = actx
                    .has_sent_initial_response
                    .load(std::sync::atomic::Ordering::SeqCst);
                reply::report(
                    ctx.http(),
                    actx.interaction.id,
                    &actx.interaction.token,
                    answered,
                    error,
                )
                .await;
            }
        }
        other => {
            if let Err(e) = poise::builtins::on_error(other).await {
                tracing::error!(error = %e, "error while handling an error");
            }
        }
    }
}

/// Buttons, selects and modal submissions: poise leaves them to us.
async fn on_event(
    fw: poise::FrameworkContext<'_, Bot, BotError>,
    event: &serenity::FullEvent,
) -> BotResult<()> {
    let serenity::FullEvent::InteractionCreate { interaction } = event else {
        return Ok(());
    };
    let kind = match interaction {
        serenity::Interaction::Command(_) => "command",
        serenity::Interaction::Autocomplete(_) => "autocomplete",
        serenity::Interaction::Component(_) => "component",
        serenity::Interaction::Modal(_) => "modal",
        _ => "other",
    };
    metrics::counter!("keygate_discord_interactions_total", "kind" => kind).increment(1);
    let ctx = fw.serenity_context;
    let bot = fw.user_data;
    match interaction {
        serenity::Interaction::Component(component) => {
            let Some(cid) = CustomId::parse(&component.data.custom_id) else {
                return Ok(());
            };
            use custom_id::Action;
            let (result, answered) = reply::tracked(async {
                match (cid.kind, cid.action) {
                    (Kind::Draft, _) => wizard::on_component(ctx, bot, component, &cid).await,
                    (Kind::NewDraft, _) => {
                        wizard::on_new_draft_component(ctx, bot, component, &cid).await
                    }
                    (Kind::App, Action::GenerateKey | Action::Finish) => {
                        delivery::on_component(ctx, bot, component, &cid).await
                    }
                    (Kind::Credential, _) => {
                        lifecycle::on_component(ctx, bot, component, &cid).await
                    }
                    (Kind::App, _) => approvals::on_component(ctx, bot, component, &cid).await,
                    (Kind::History, _) => {
                        commands::on_history_page(ctx, bot, component, &cid).await
                    }
                }
            })
            .await;
            if let Err(e) = result {
                reply::report(&ctx.http, component.id, &component.token, answered, e).await;
            }
        }
        serenity::Interaction::Modal(modal) => {
            let Some(cid) = CustomId::parse(&modal.data.custom_id) else {
                return Ok(());
            };
            let (result, answered) = reply::tracked(async {
                match (cid.kind, cid.action) {
                    (Kind::Draft, custom_id::Action::Details) => {
                        wizard::on_details(ctx, bot, modal, &cid.id).await
                    }
                    (Kind::NewDraft, custom_id::Action::Details) => {
                        wizard::on_new_details(ctx, bot, modal, &cid).await
                    }
                    (Kind::App, custom_id::Action::DenyReason) => {
                        approvals::on_deny_reason(ctx, bot, modal, &cid).await
                    }
                    (Kind::App, custom_id::Action::RevokeName) => {
                        lifecycle::on_revoke_name(ctx, bot, modal, &cid).await
                    }
                    _ => Ok(()),
                }
            })
            .await;
            if let Err(e) = result {
                reply::report(&ctx.http, modal.id, &modal.token, answered, e).await;
            }
        }
        _ => {}
    }
    Ok(())
}
