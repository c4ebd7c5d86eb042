//! Applications with their redirect URLs and scopes; secret and key hashes.

use super::{StoreError, StoreResult, Tx, from_ms, on_conn, placeholders, to_ms};
use crate::domain::application::{AppDetails, AppStatus, Application, LoginUserType, SourceApp};
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{GuildId, UserId};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

const TABLE: &str = "applications";

#[derive(sqlx::FromRow)]
struct AppRow {
    id: String,
    guild_id: i64,
    owner_id: i64,
    name: String,
    uri: String,
    description: String,
    login_user_type: String,
    source_app: String,
    status: String,
    created_at: i64,
    updated_at: i64,
    key_prefix: Option<String>,
}

/// The columns of `AppRow`; the key prefix is the newest key's.
const APP_SELECT: &str = "SELECT a.id, a.guild_id, a.owner_id, a.name, a.uri, a.description, \
     a.login_user_type, a.source_app, a.status, a.created_at, a.updated_at, \
     (SELECT k.key_prefix FROM api_keys k WHERE k.app_id = a.id \
      ORDER BY k.created_at DESC LIMIT 1) AS key_prefix \
     FROM applications a";

#[derive(sqlx::FromRow)]
struct UrlRow {
    app_id: String,
    kind: String,
    url: String,
}

#[derive(sqlx::FromRow)]
struct ScopeRow {
    app_id: String,
    scope: String,
}

/// Redirect URLs and scopes of some applications, by application id.
#[derive(Default)]
struct Children {
    login: HashMap<String, Vec<String>>,
    logout: HashMap<String, Vec<String>>,
    scopes: HashMap<String, Vec<String>>,
}

impl Children {
    fn new(urls: Vec<UrlRow>, scopes: Vec<ScopeRow>) -> Self {
        let mut c = Children::default();
        for u in urls {
            let map = if u.kind == "post_login" {
                &mut c.login
            } else {
                &mut c.logout
            };
            map.entry(u.app_id).or_default().push(u.url);
        }
        for s in scopes {
            c.scopes.entry(s.app_id).or_default().push(s.scope);
        }
        c
    }

    fn assemble(&mut self, r: AppRow) -> StoreResult<Application> {
        let corrupt =
            |what: &str, value: &str| StoreError::corrupt(TABLE, format!("{what} `{value}`"));
        Ok(Application {
            details: AppDetails {
                name: r.name,
                uri: r.uri,
                description: r.description,
                post_login_urls: self.login.remove(&r.id).unwrap_or_default(),
                post_logout_urls: self.logout.remove(&r.id).unwrap_or_default(),
            },
            scopes: self.scopes.remove(&r.id).unwrap_or_default(),
            user_type: LoginUserType::parse(&r.login_user_type)
                .ok_or_else(|| corrupt("login_user_type", &r.login_user_type))?,
            source_app: SourceApp::parse(&r.source_app)
                .ok_or_else(|| corrupt("source_app", &r.source_app))?,
            status: AppStatus::parse(&r.status).ok_or_else(|| corrupt("status", &r.status))?,
            id: ApplicationId::parse(&r.id).map_err(|e| corrupt(&format!("id ({e})"), &r.id))?,
            guild_id: GuildId::from_db(r.guild_id),
            owner_id: UserId::from_db(r.owner_id),
            key_prefix: r.key_prefix,
            created_at: from_ms(TABLE, r.created_at)?,
            updated_at: from_ms(TABLE, r.updated_at)?,
        })
    }
}

impl<M> Tx<M> {
    /// Whether a live application of the guild already has this name (by `name_key`).
    pub async fn app_name_taken(&mut self, guild: GuildId, name_key: &str) -> StoreResult<bool> {
        let n: i64 = on_conn!(self, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM applications WHERE guild_id = $1 AND name_key = $2 \
             AND status NOT IN ('denied', 'expired', 'withdrawn', 'revoked')")
            .bind(guild.to_db())
            .bind(name_key)
            .fetch_one(&mut *c)
            .await?);
        Ok(n > 0)
    }

    /// Inserts the application with its URLs and scopes. `Conflict("name")`
    /// when a live application of the guild has the same name.
    pub async fn insert_app(&mut self, app: &Application, name_key: &str) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query(
            "INSERT INTO applications (id, guild_id, owner_id, name, name_key, uri, description, \
             login_user_type, source_app, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
            .bind(app.id.as_str())
            .bind(app.guild_id.to_db())
            .bind(app.owner_id.to_db())
            .bind(&app.details.name)
            .bind(name_key)
            .bind(&app.details.uri)
            .bind(&app.details.description)
            .bind(app.user_type.as_str())
            .bind(app.source_app.as_str())
            .bind(app.status.as_str())
            .bind(to_ms(app.created_at))
            .bind(to_ms(app.updated_at))
            .execute(&mut *c)
            .await
            .map_err(StoreError::conflict_as("name"))?
            .rows_affected());
        // One multi-row INSERT per table, not one per URL or scope.
        let urls: Vec<(&str, usize, &String)> = [
            ("post_login", &app.details.post_login_urls),
            ("post_logout", &app.details.post_logout_urls),
        ]
        .into_iter()
        .flat_map(|(kind, list)| list.iter().enumerate().map(move |(n, url)| (kind, n, url)))
        .collect();
        if !urls.is_empty() {
            // Only placeholders are formatted in; every value is bound.
            let sql = sqlx::AssertSqlSafe(format!(
                "INSERT INTO app_redirect_urls (app_id, kind, position, url) VALUES {}",
                placeholders(urls.len(), 4)
            ));
            on_conn!(self, c => {
                let mut q = sqlx::query(sql);
                for (kind, position, url) in &urls {
                    q = q.bind(app.id.as_str()).bind(*kind).bind(*position as i64).bind(*url);
                }
                q.execute(&mut *c).await?.rows_affected()
            });
        }
        if !app.scopes.is_empty() {
            let sql = sqlx::AssertSqlSafe(format!(
                "INSERT INTO app_scopes (app_id, position, scope) VALUES {}",
                placeholders(app.scopes.len(), 3)
            ));
            on_conn!(self, c => {
                let mut q = sqlx::query(sql);
                for (position, scope) in app.scopes.iter().enumerate() {
                    q = q.bind(app.id.as_str()).bind(position as i64).bind(scope);
                }
                q.execute(&mut *c).await?.rows_affected()
            });
        }
        Ok(())
    }

    /// Loads applications matching `filter` (a WHERE clause on `a`, with `$1`
    /// the guild id and `$2`, if used, `value`) with their URLs and scopes.
    async fn load_apps(
        &mut self,
        filter: &'static str,
        guild: GuildId,
        value: Option<&str>,
    ) -> StoreResult<Vec<Application>> {
        macro_rules! fetch {
            ($sql:expr) => {{
                let sql = sqlx::AssertSqlSafe($sql);
                on_conn!(self, c => {
                    let query = sqlx::query_as(sql).bind(guild.to_db());
                    let query = match value {
                        Some(v) => query.bind(v),
                        None => query,
                    };
                    query.fetch_all(&mut *c).await?
                })
            }};
        }
        let rows: Vec<AppRow> = fetch!(format!(
            "{APP_SELECT} WHERE {filter} ORDER BY a.created_at, a.id"
        ));
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let urls: Vec<UrlRow> = fetch!(format!(
            "SELECT u.app_id, u.kind, u.url FROM app_redirect_urls u \
             JOIN applications a ON a.id = u.app_id WHERE {filter} ORDER BY u.position"
        ));
        let scopes: Vec<ScopeRow> = fetch!(format!(
            "SELECT s.app_id, s.scope FROM app_scopes s \
             JOIN applications a ON a.id = s.app_id WHERE {filter} ORDER BY s.position"
        ));
        let mut children = Children::new(urls, scopes);
        rows.into_iter().map(|r| children.assemble(r)).collect()
    }

    /// One application of the guild by its Application ID.
    pub async fn app(
        &mut self,
        guild: GuildId,
        id: &ApplicationId,
    ) -> StoreResult<Option<Application>> {
        let mut apps = self
            .load_apps("a.guild_id = $1 AND a.id = $2", guild, Some(id.as_str()))
            .await?;
        Ok(apps.pop())
    }

    /// One application by its Application ID, whatever its guild (the verify API
    /// knows only the key).
    pub async fn app_by_id(&mut self, id: &ApplicationId) -> StoreResult<Option<Application>> {
        let guild: Option<i64> = on_conn!(self, c => sqlx::query_scalar(
            "SELECT guild_id FROM applications WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *c)
            .await?);
        match guild {
            Some(g) => self.app(GuildId::from_db(g), id).await,
            None => Ok(None),
        }
    }

    /// The guild's live application with this name, ignoring case.
    pub async fn app_by_name_key(
        &mut self,
        guild: GuildId,
        name_key: &str,
    ) -> StoreResult<Option<Application>> {
        let mut apps = self
            .load_apps(
                "a.guild_id = $1 AND a.name_key = $2 \
                 AND a.status NOT IN ('denied', 'expired', 'withdrawn', 'revoked')",
                guild,
                Some(name_key),
            )
            .await?;
        Ok(apps.pop())
    }

    /// Every application of the guild, oldest first.
    pub async fn apps_of_guild(&mut self, guild: GuildId) -> StoreResult<Vec<Application>> {
        self.load_apps("a.guild_id = $1", guild, None).await
    }

    /// Marks a live (approved or active) application changed, and, on
    /// PostgreSQL, locks its row until the transaction ends, so a rotation
    /// and a revocation of one app take turns. False when it is not live.
    pub async fn touch_live_app(
        &mut self,
        id: &ApplicationId,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "UPDATE applications SET updated_at = $1 WHERE id = $2 \
             AND status IN ('approved', 'key_issued')")
            .bind(to_ms(now))
            .bind(id.as_str())
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Moves the application from `from` to `to` only if it is still in `from`;
    /// false if another request moved it first. This guarded write is what
    /// makes concurrent decisions produce exactly one outcome.
    pub async fn transition_app(
        &mut self,
        id: &ApplicationId,
        from: AppStatus,
        to: AppStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "UPDATE applications SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
            .bind(to.as_str())
            .bind(to_ms(now))
            .bind(id.as_str())
            .bind(from.as_str())
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }
}
