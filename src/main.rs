//! The keygate binary: command line, environment, logging, and the store.

use anyhow::Context;
use clap::{Parser, Subcommand};
use keygate::config::{CatalogSource, Config, LogFormat};
use keygate::service::{Policy, Service};
use keygate::store::Store;
use secrecy::ExposeSecret;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    version,
    about = "Register API applications and issue their credentials from Discord"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone, Copy)]
enum Command {
    /// Run the bot and the verify API (the default).
    Run,
    /// Serve the verify API alone, without Discord (verify replicas).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Try keygate in the browser, with no Discord account: the bot against an embedded
    /// Discord, on its own temporary database (see SANDBOX_ADDR).
    Sandbox,
    /// Print the URL that adds the bot to a server (offline: the application id comes from
    /// DISCORD_TOKEN, or from --client-id).
    Invite {
        /// The application id (Developer Portal > your application > General Information).
        #[arg(long)]
        client_id: Option<u64>,
    },
}

fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) => {
            EnvFilter::try_new(&spec).with_context(|| format!("RUST_LOG is invalid: `{spec}`"))?
        }
        Err(_) => EnvFilter::new("info"),
    };
    keygate::telemetry::init(format, filter, std::io::stderr)?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A missing .env is normal; a malformed one is not.
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        Err(e) => return Err(e).context("cannot read .env"),
    }
    let config = Config::from_env()?;
    init_logging(config.log_format)?;
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Invite { client_id } = command {
        let from_token = || {
            let token = config.discord_token.as_ref()?;
            keygate::discord::invite::client_id_from_token(token.expose_secret())
        };
        let Some(client_id) = client_id.or_else(from_token) else {
            anyhow::bail!(
                "cannot tell the application id: set DISCORD_TOKEN to the bot's token, or pass --client-id ID (Developer Portal > your application > General Information)"
            );
        };
        println!("{}", keygate::discord::invite::invite_url(client_id));
        return Ok(());
    }
    if let Command::Sandbox = command {
        // Before the store: the sandbox never opens DATABASE_URL.
        return keygate::sandbox::run(&config).await;
    }
    if let Command::Run = command {
        // Checked before anything else so a missing token fails fast and clearly.
        config.require_token()?;
    }

    let store = Store::connect(&config.database_url)
        .await
        .context("cannot open the database named by DATABASE_URL")?;
    store.migrate().await?;
    tracing::info!(backend = ?store.backend(), "database ready");

    let service = Service::new(store.clone(), config.scope_catalog.clone()).with_policy(Policy {
        verify_cache_ttl: config.verify_cache_ttl,
        ..Policy::default()
    });
    match command {
        Command::Migrate | Command::Sandbox | Command::Invite { .. } => {}
        Command::Serve => {
            let Some(addr) = config.http_addr else {
                anyhow::bail!("HTTP_ADDR is empty, so `keygate serve` has nothing to serve");
            };
            let mut http = keygate::http::start(addr, &config.verify_tokens, service).await?;
            let ended = tokio::select! {
                _ = keygate::runtime::shutdown_signal() => Ok(()),
                ended = http.stopped() => ended,
            };
            tracing::info!("shutting down");
            http.shutdown().await;
            ended?;
        }
        Command::Run => {
            let catalog = match &config.catalog_source {
                CatalogSource::Builtin => "built-in".to_owned(),
                CatalogSource::File(path) => path.display().to_string(),
            };
            tracing::info!(
                catalog,
                groups = config.scope_catalog.groups().len(),
                "scope catalog loaded"
            );
            let mut http = match config.http_addr {
                Some(addr) => {
                    Some(keygate::http::start(addr, &config.verify_tokens, service.clone()).await?)
                }
                None => None,
            };
            let bot = keygate::discord::run(&config, service);
            // The bot shuts down on a signal; a dead HTTP server asks for one.
            let ended = match &mut http {
                Some(http) => {
                    let stop = keygate::runtime::request_shutdown;
                    keygate::runtime::supervise(bot, http.stopped(), stop).await
                }
                None => bot.await,
            };
            if let Some(http) = http {
                http.shutdown().await;
            }
            ended?;
        }
    }
    store.close().await;
    Ok(())
}
