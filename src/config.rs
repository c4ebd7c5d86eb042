//! Every setting, read from the environment and validated at start.

use crate::domain::catalog::ScopeCatalog;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://keygate.db";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_SANDBOX_ADDR: &str = "127.0.0.1:8090";
pub const DEFAULT_VERIFY_CACHE_TTL: Duration = Duration::from_secs(5);
/// Past this, a revocation on SQLite (no notifications), or on PostgreSQL
/// while a notification is lost, would take too long to reach another process.
pub const MAX_VERIFY_CACHE_TTL: Duration = Duration::from_secs(5);
/// Shorter bearer tokens are guessable.
const MIN_VERIFY_TOKEN_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Where the scope catalog came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogSource {
    Builtin,
    File(PathBuf),
}

/// Which Discord shards this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shards {
    /// As many as Discord recommends (`GET /gateway/bot`), all in this process.
    Auto,
    /// Shards `first..=last` of `count`; other processes run the rest.
    Range { first: u32, last: u32, count: u32 },
}

impl Shards {
    /// Whether this process runs shard 0, which receives DMs and registers
    /// the commands (once, not once per process).
    pub fn runs_shard_zero(self) -> bool {
        match self {
            Self::Auto => true,
            Self::Range { first, .. } => first == 0,
        }
    }

    /// From `SHARD_COUNT` and `SHARD_IDS` (`N` or `A-B`, both ends included).
    fn parse(count: Option<String>, ids: Option<String>) -> Result<Self, ConfigError> {
        let count = match count {
            None if ids.is_some() => {
                return Err(invalid(
                    "SHARD_IDS",
                    "needs SHARD_COUNT too, so that every process agrees on the count",
                ));
            }
            None => return Ok(Self::Auto),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(invalid(
                        "SHARD_COUNT",
                        format!("`{v}` is not a number of shards (1 or more)"),
                    ));
                }
            },
        };
        let (first, last) = match ids {
            None => (0, count - 1),
            Some(v) => {
                let bad = || {
                    invalid(
                        "SHARD_IDS",
                        format!("`{v}` is not N or A-B with A <= B < SHARD_COUNT ({count})"),
                    )
                };
                let (a, b) = match v.split_once('-') {
                    Some((a, b)) => (a.trim(), b.trim()),
                    None => (v.as_str(), v.as_str()),
                };
                let (a, b) = (
                    a.parse::<u32>().map_err(|_| bad())?,
                    b.parse::<u32>().map_err(|_| bad())?,
                );
                if a > b || b >= count {
                    return Err(bad());
                }
                (a, b)
            }
        };
        Ok(Self::Range { first, last, count })
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Required by `run` only; `migrate` works without it.
    pub discord_token: Option<SecretString>,
    pub database_url: String,
    pub discord_api_url: Option<Url>,
    pub discord_guild_id: Option<u64>,
    pub shards: Shards,
    /// None: the verify API is disabled.
    pub http_addr: Option<SocketAddr>,
    /// Bearer tokens accepted on `/v1/*`; empty means none is required
    /// (allowed only on a loopback `http_addr`).
    pub verify_tokens: Vec<SecretString>,
    /// How long a verified credential's record is trusted; zero turns the cache off.
    pub verify_cache_ttl: Duration,
    pub scope_catalog: Arc<ScopeCatalog>,
    pub catalog_source: CatalogSource,
    pub log_format: LogFormat,
    /// Where `keygate sandbox` serves its page (it refuses any but a loopback address).
    pub sandbox_addr: SocketAddr,
    /// The sandbox's own database; `None`: a temporary SQLite file.
    pub sandbox_database_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "DISCORD_TOKEN is not set: put your bot's token (Discord Developer Portal > your application > Bot > Token) in the environment or in .env"
    )]
    MissingToken,
    #[error("{var} is invalid: {problem}")]
    Invalid { var: &'static str, problem: String },
}

/// A database URL the store can open.
fn checked_database_url(var: &'static str, url: String) -> Result<String, ConfigError> {
    if url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        Ok(url)
    } else {
        Err(invalid(
            var,
            "expected sqlite://FILE or postgres://USER@HOST/DB",
        ))
    }
}

fn invalid(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        problem: problem.into(),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads every setting through `lookup`, so tests need not touch the
    /// process environment. Blank values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned());
        let set = |name: &str| get(name).filter(|v| !v.is_empty());

        let discord_token = match set("DISCORD_TOKEN") {
            Some(t) if t.chars().any(char::is_whitespace) => {
                return Err(invalid("DISCORD_TOKEN", "a bot token contains no spaces"));
            }
            Some(t) => Some(SecretString::from(t)),
            None => None,
        };

        let database_url = checked_database_url(
            "DATABASE_URL",
            set("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
        )?;
        let sandbox_database_url = set("SANDBOX_DATABASE_URL")
            .map(|url| checked_database_url("SANDBOX_DATABASE_URL", url))
            .transpose()?;
        let sandbox_addr = set("SANDBOX_ADDR").unwrap_or_else(|| DEFAULT_SANDBOX_ADDR.to_owned());
        // Loopback is checked by `keygate sandbox` itself, so a leftover value cannot stop `run`.
        let sandbox_addr = sandbox_addr.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "SANDBOX_ADDR",
                format!("`{sandbox_addr}` is not IP:PORT, e.g. {DEFAULT_SANDBOX_ADDR}"),
            )
        })?;
        let discord_api_url = set("DISCORD_API_URL")
            .map(|v| {
                let url = Url::parse(&v).map_err(|e| invalid("DISCORD_API_URL", e.to_string()))?;
                if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                    return Err(invalid(
                        "DISCORD_API_URL",
                        "expected an http(s) URL with a host",
                    ));
                }
                Ok(url)
            })
            .transpose()?;

        let discord_guild_id = set("DISCORD_GUILD_ID")
            .map(|v| match v.parse::<u64>() {
                Ok(id) if id > 0 => Ok(id),
                _ => Err(invalid(
                    "DISCORD_GUILD_ID",
                    format!("`{v}` is not a Discord server id"),
                )),
            })
            .transpose()?;

        let shards = Shards::parse(set("SHARD_COUNT"), set("SHARD_IDS"))?;

        // Unset means the default address; set but empty means disabled.
        let http_addr = match get("HTTP_ADDR") {
            None => Some(DEFAULT_HTTP_ADDR.to_owned()),
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v),
        }
        .map(|v| {
            v.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "HTTP_ADDR",
                    format!("`{v}` is not HOST:PORT, e.g. 127.0.0.1:8080"),
                )
            })
        })
        .transpose()?;

        let verify_tokens: Vec<SecretString> = match set("VERIFY_TOKEN") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .enumerate()
                .map(|(i, t)| {
                    let n = i + 1;
                    if t.chars().count() < MIN_VERIFY_TOKEN_LEN
                        || !t.chars().all(|c| c.is_ascii_graphic())
                    {
                        Err(invalid(
                            "VERIFY_TOKEN",
                            format!(
                                "token {n} of the comma-separated list must be at least \
                                 {MIN_VERIFY_TOKEN_LEN} visible ASCII characters"
                            ),
                        ))
                    } else {
                        Ok(SecretString::from(t.to_owned()))
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        if let Some(addr) = http_addr
            && !addr.ip().is_loopback()
            && verify_tokens.is_empty()
        {
            return Err(invalid(
                "VERIFY_TOKEN",
                format!(
                    "must be set when HTTP_ADDR ({addr}) is not a loopback address, \
                     so that only your services can ask about keys"
                ),
            ));
        }

        let verify_cache_ttl = match set("VERIFY_CACHE_TTL") {
            None => DEFAULT_VERIFY_CACHE_TTL,
            Some(v) => match v.parse::<u64>().map(Duration::from_secs) {
                Ok(ttl) if ttl <= MAX_VERIFY_CACHE_TTL => ttl,
                _ => {
                    return Err(invalid(
                        "VERIFY_CACHE_TTL",
                        format!(
                            "`{v}` is not a number of seconds from 0 (no cache) to {}",
                            MAX_VERIFY_CACHE_TTL.as_secs()
                        ),
                    ));
                }
            },
        };

        let (scope_catalog, catalog_source) = match set("SCOPE_CATALOG") {
            None => (ScopeCatalog::builtin(), CatalogSource::Builtin),
            Some(path) => {
                let path = PathBuf::from(path);
                let catalog = ScopeCatalog::load(&path)
                    .map_err(|e| invalid("SCOPE_CATALOG", error_chain(&e)))?;
                (catalog, CatalogSource::File(path))
            }
        };

        let log_format = match set("LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "LOG_FORMAT",
                    format!("`{other}` is not `pretty` or `json`"),
                ));
            }
        };

        Ok(Self {
            discord_token,
            database_url,
            discord_api_url,
            discord_guild_id,
            shards,
            http_addr,
            verify_tokens,
            verify_cache_ttl,
            scope_catalog: Arc::new(scope_catalog),
            catalog_source,
            log_format,
            sandbox_addr,
            sandbox_database_url,
        })
    }

    pub fn require_token(&self) -> Result<&SecretString, ConfigError> {
        self.discord_token.as_ref().ok_or(ConfigError::MissingToken)
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    fn problem(vars: &[(&str, &str)]) -> String {
        config(vars).unwrap_err().to_string()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = config(&[]).unwrap();
        assert_eq!(c.database_url, "sqlite://keygate.db");
        assert_eq!(c.http_addr, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert_eq!(c.catalog_source, CatalogSource::Builtin);
        assert!(c.discord_token.is_none());
        assert!(
            c.require_token()
                .unwrap_err()
                .to_string()
                .contains("DISCORD_TOKEN")
        );
    }

    #[test]
    fn values_are_read() {
        let c = config(&[
            ("DISCORD_TOKEN", "abc.def"),
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/test"),
            ("DISCORD_API_URL", "http://127.0.0.1:9000"),
            ("DISCORD_GUILD_ID", "123"),
            ("HTTP_ADDR", ""),
            ("LOG_FORMAT", "json"),
        ])
        .unwrap();
        assert_eq!(c.require_token().unwrap().expose_secret(), "abc.def");
        assert_eq!(c.discord_guild_id, Some(123));
        assert_eq!(c.http_addr, None, "empty HTTP_ADDR disables the API");
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(
            !format!("{c:?}").contains("abc.def"),
            "the token never prints"
        );
    }

    #[test]
    fn shards_are_all_by_default_and_a_range_of_an_agreed_count() {
        assert_eq!(config(&[]).unwrap().shards, Shards::Auto);
        let shards = |count: &str, ids: &str| {
            let mut vars = vec![("SHARD_COUNT", count)];
            if !ids.is_empty() {
                vars.push(("SHARD_IDS", ids));
            }
            config(&vars).map(|c| c.shards)
        };
        assert_eq!(
            shards("4", "").unwrap(),
            Shards::Range {
                first: 0,
                last: 3,
                count: 4
            }
        );
        assert_eq!(
            shards("4", "2-3").unwrap(),
            Shards::Range {
                first: 2,
                last: 3,
                count: 4
            }
        );
        assert_eq!(
            shards("2", "1").unwrap(),
            Shards::Range {
                first: 1,
                last: 1,
                count: 2
            }
        );
        assert!(!shards("2", "1").unwrap().runs_shard_zero());
        assert!(shards("2", "0").unwrap().runs_shard_zero());
        for (count, ids) in [
            ("0", ""),
            ("x", ""),
            ("2", "2"),
            ("4", "3-1"),
            ("4", "1-4"),
            ("4", "a-b"),
        ] {
            let e = shards(count, ids).unwrap_err().to_string();
            assert!(
                e.starts_with("SHARD_COUNT is invalid") || e.starts_with("SHARD_IDS is invalid"),
                "{e}"
            );
        }
        assert!(problem(&[("SHARD_IDS", "0")]).contains("needs SHARD_COUNT"));
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        assert!(problem(&[("DATABASE_URL", "mysql://x")]).starts_with("DATABASE_URL is invalid"));
        assert!(problem(&[("DISCORD_API_URL", "not a url")]).starts_with("DISCORD_API_URL"));
        assert!(problem(&[("DISCORD_API_URL", "ftp://x")]).starts_with("DISCORD_API_URL"));
        assert!(problem(&[("DISCORD_GUILD_ID", "abc")]).starts_with("DISCORD_GUILD_ID"));
        assert!(problem(&[("DISCORD_GUILD_ID", "0")]).starts_with("DISCORD_GUILD_ID"));
        assert!(problem(&[("HTTP_ADDR", "localhost")]).starts_with("HTTP_ADDR"));
        assert!(problem(&[("LOG_FORMAT", "xml")]).starts_with("LOG_FORMAT"));
        assert!(problem(&[("DISCORD_TOKEN", "a b")]).starts_with("DISCORD_TOKEN"));
        let missing = problem(&[("SCOPE_CATALOG", "/nonexistent/scopes.toml")]);
        assert!(missing.starts_with("SCOPE_CATALOG is invalid"), "{missing}");
        assert!(missing.contains("/nonexistent/scopes.toml"), "{missing}");
    }

    #[test]
    fn verify_tokens_are_a_list_and_required_off_loopback() {
        let c = config(&[(
            "VERIFY_TOKEN",
            "first-token-0123456789, second-token-0123456789",
        )])
        .unwrap();
        let tokens: Vec<&str> = c.verify_tokens.iter().map(|t| t.expose_secret()).collect();
        assert_eq!(
            tokens,
            ["first-token-0123456789", "second-token-0123456789"]
        );
        assert!(
            !format!("{c:?}").contains("first-token"),
            "tokens never print"
        );

        let open = problem(&[("HTTP_ADDR", "0.0.0.0:8080")]);
        assert!(
            open.contains("VERIFY_TOKEN") && open.contains("HTTP_ADDR"),
            "{open}"
        );
        assert!(
            config(&[
                ("HTTP_ADDR", "0.0.0.0:8080"),
                ("VERIFY_TOKEN", "a-long-enough-token-42")
            ])
            .is_ok()
        );
        assert!(config(&[("HTTP_ADDR", "[::1]:8080")]).is_ok());
        assert!(problem(&[("VERIFY_TOKEN", "short")]).starts_with("VERIFY_TOKEN"));
        assert!(
            problem(&[("VERIFY_TOKEN", "ein-langes-tökén-0123")]).starts_with("VERIFY_TOKEN"),
            "a header cannot carry it"
        );
        assert!(
            problem(&[("VERIFY_TOKEN", "a-long-enough-token-42,")]).starts_with("VERIFY_TOKEN"),
            "an empty item is a typo, not a token"
        );
    }

    #[test]
    fn the_verify_cache_lifetime_is_bounded() {
        assert_eq!(
            config(&[]).unwrap().verify_cache_ttl,
            Duration::from_secs(5)
        );
        assert_eq!(
            config(&[("VERIFY_CACHE_TTL", "0")])
                .unwrap()
                .verify_cache_ttl,
            Duration::ZERO
        );
        assert!(problem(&[("VERIFY_CACHE_TTL", "6")]).starts_with("VERIFY_CACHE_TTL"));
        assert!(problem(&[("VERIFY_CACHE_TTL", "-1")]).starts_with("VERIFY_CACHE_TTL"));
    }

    #[test]
    fn a_bad_catalog_file_is_a_startup_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scopes.toml");
        std::fs::write(&path, "[[groups]]\nkey = \"Bad Key\"\n").unwrap();
        let msg = problem(&[("SCOPE_CATALOG", path.to_str().unwrap())]);
        assert!(msg.starts_with("SCOPE_CATALOG is invalid"), "{msg}");
    }
}
