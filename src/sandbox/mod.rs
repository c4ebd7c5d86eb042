//! The sandbox: the real bot against an embedded Discord emulator, with a web page to drive it.

pub mod emulator;
mod web;

use crate::config::{Config, DEFAULT_SANDBOX_ADDR, Shards};
use crate::domain::ids::{ChannelId, GuildId, RoleId, UserId};
use crate::service::{Actor, Policy, Service, SettingsChange};
use crate::store::Store;
use anyhow::Context as _;
use emulator::{Emulator, Member};
use secrecy::SecretString;
use serenity::all::Permissions;
use sqlx::sqlite::SqliteConnectOptions;
use std::time::Instant;

/// The one server the page shows.
pub const GUILD: u64 = Emulator::GUILD_ID;
const GENERAL: u64 = Emulator::CHANNEL_ID;
const APPROVALS: u64 = 4_000_000_000_000_002;
const AUDIT_LOG: u64 = 4_000_000_000_000_003;
const APPROVERS: u64 = 6_000_000_000_000_010;
const ADA: u64 = 5_000_000_000_000_101;

/// The people on the page, with what each may do: `(member, title)`.
fn members() -> Vec<(Member, &'static str)> {
    let approver = |id, name| Member::member(id, name).with_roles(&[APPROVERS]);
    vec![
        (Member::admin(ADA, "Ada"), "Admin"),
        (approver(ADA + 1, "Ben"), "Approver"),
        (approver(ADA + 2, "Cleo"), "Approver"),
        (Member::member(ADA + 3, "Dev"), "Member"),
    ]
}

/// The emulated server: its channels, the approver role and the members.
fn furnish(emulator: &Emulator) {
    emulator.set_guild_name(GUILD, "Sandbox");
    emulator.add_channel(APPROVALS, "approvals");
    emulator.add_channel(AUDIT_LOG, "audit-log");
    let approver_bits = (Permissions::VIEW_CHANNEL | Permissions::SEND_MESSAGES).bits();
    emulator.add_role(APPROVERS, "Approvers", approver_bits);
    for (member, _) in members() {
        emulator.add_member(&member);
    }
    debug_assert!(
        emulator
            .channels_of(GUILD)
            .iter()
            .any(|(id, _)| *id == GENERAL)
    );
}

/// A fresh sandbox database gets the settings a visitor would make first: the audit and
/// approvals channels, the approver role, and a DM lifetime short enough to watch.
async fn settle(service: &Service) -> anyhow::Result<()> {
    let guild = GuildId(GUILD);
    if service.settings(guild).await?.audit_channel.is_some() {
        return Ok(());
    }
    let change = SettingsChange {
        audit_channel: Some(ChannelId(AUDIT_LOG)),
        approvals_channel: Some(ChannelId(APPROVALS)),
        approver_role: Some(RoleId(APPROVERS)),
        dm_lifetime_minutes: Some(2),
        ..SettingsChange::default()
    };
    service
        .update_settings(guild, Actor::manager(UserId(ADA)), &change)
        .await?;
    Ok(())
}

/// Whether two database URLs name one database, however they are spelled: an SQLite file's
/// path, or a PostgreSQL server's host, port and database.
fn same_database(a: &str, b: &str) -> bool {
    fn target(url: &str) -> Option<String> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let path = path.split('?').next().unwrap_or_default();
            let path = std::path::Path::new(path);
            // A file not made yet cannot be canonicalised: its absolute path, without `.`s.
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| {
                let absolute =
                    std::env::current_dir().map_or_else(|_| path.to_owned(), |cwd| cwd.join(path));
                absolute
                    .components()
                    .filter(|c| *c != std::path::Component::CurDir)
                    .collect()
            });
            return Some(format!("sqlite {}", path.display()));
        }
        let parsed = url::Url::parse(url).ok()?;
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        // The names of this machine, and no host at all (a local socket), are one server.
        let host = match host.as_str() {
            "" | "localhost" | "127.0.0.1" | "[::1]" => "localhost".to_owned(),
            _ => host,
        };
        // No database named: PostgreSQL takes the user's name.
        let database = match parsed.path().trim_start_matches('/') {
            "" => parsed.username().to_owned(),
            name => name.to_owned(),
        };
        Some(format!(
            "postgres {host}:{}/{database}",
            parsed.port().unwrap_or(5432)
        ))
    }
    match (target(a), target(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// Runs the sandbox until Ctrl-C or SIGTERM.
/// `keygate sandbox` needs no Discord account: one server ("Sandbox") with #general,
/// #approvals and #audit-log, four members to act as, and the bot, all on this machine.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let addr = config.sandbox_addr;
    if !addr.ip().is_loopback() {
        // The page has no sign-in: whoever reaches it acts as any member.
        anyhow::bail!(
            "SANDBOX_ADDR is invalid: {addr} is not a loopback address such as {DEFAULT_SANDBOX_ADDR}; the sandbox has no sign-in, so it serves this machine only"
        );
    }
    if let Some(url) = &config.sandbox_database_url
        && same_database(url, &config.database_url)
    {
        anyhow::bail!(
            "SANDBOX_DATABASE_URL is invalid: it names DATABASE_URL, where keys made in the sandbox would verify; give the sandbox a database of its own"
        );
    }
    // Bound first: a taken port should fail before anything else starts.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on SANDBOX_ADDR {addr}"))?;
    let page = format!("http://{}", listener.local_addr()?);

    // Never DATABASE_URL: keys made here must not verify against the real database.
    let (store, temporary) = match &config.sandbox_database_url {
        Some(url) => (Store::connect(url).await, None),
        None => {
            let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
            let file = SqliteConnectOptions::new().filename(dir.path().join("sandbox.db"));
            (Store::connect_sqlite(file).await, Some(dir))
        }
    };
    let store = store.context("cannot open the sandbox database")?;
    store.migrate().await?;
    let service = Service::new(store.clone(), config.scope_catalog.clone()).with_policy(Policy {
        verify_cache_ttl: config.verify_cache_ttl,
        ..Policy::default()
    });
    settle(&service).await?;

    let emulator = Emulator::start()
        .await
        .context("cannot start the Discord emulator")?;
    furnish(&emulator);
    emulator.enforce_deadline();
    let bot_config = Config {
        discord_token: Some(SecretString::from("sandbox-bot-token")),
        // The bot reaches the store through `service` only; DATABASE_URL stays out of reach.
        database_url: String::new(),
        discord_api_url: Some(emulator.base_url().parse()?),
        // Guild commands are registered at once, global ones can take Discord an hour.
        discord_guild_id: Some(GUILD),
        shards: Shards::Auto,
        ..config.clone()
    };
    let bot = crate::discord::start(&bot_config, service).await?;
    emulator
        .wait_ready()
        .await
        // Not the Timeout itself: its report holds every REST body, secrets included.
        .map_err(|t| anyhow::anyhow!("the bot did not connect to the emulator ({})", t.what))?;

    let mut server = web::serve(listener, web::Sandbox::new(emulator, members()));
    tracing::info!(
        page,
        started_in_ms = started.elapsed().as_millis() as u64,
        "the sandbox is ready: open {page}"
    );
    let ended = tokio::select! {
        _ = crate::runtime::shutdown_signal() => Ok(()),
        ended = &mut server => ended.context("the sandbox page server failed")?,
    };
    tracing::info!("shutting down");
    server.abort();
    bot.shutdown().await;
    store.close().await;
    drop(temporary);
    ended
}

#[cfg(test)]
mod tests {
    use super::same_database;

    #[test]
    fn one_database_is_recognised_however_it_is_spelled() {
        assert!(same_database("sqlite://keygate.db", "sqlite:keygate.db"));
        assert!(same_database(
            "sqlite://./keygate.db",
            "sqlite://keygate.db?mode=rwc"
        ));
        assert!(same_database(
            "postgresql://postgres@db/keygate",
            "postgres://other@db:5432/keygate"
        ));
        assert!(same_database(
            "postgres://postgres@LOCALHOST/keygate",
            "postgres://postgres@127.0.0.1:5432/keygate"
        ));
        assert!(same_database(
            "postgres://keygate@db",
            "postgres://keygate@db/keygate"
        ));
        assert!(!same_database("sqlite://sandbox.db", "sqlite://keygate.db"));
        assert!(!same_database(
            "postgres://postgres@db/sandbox",
            "postgres://postgres@db/keygate"
        ));
    }
}
