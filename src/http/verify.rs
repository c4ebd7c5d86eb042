//! `POST /v1/keys/verify` and `POST /v1/apps/authenticate`: requests, answers, metrics.

use super::ApiState;
use super::error::ApiError;
use crate::domain::credentials::ApplicationId;
use crate::domain::ids::GuildId;
use crate::domain::verification::{
    AppCard, Expectations, GraceView, KeyStanding, SecretStanding, VerifyCode,
};
use crate::service::Verdict;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Request bodies are small JSON objects; anything larger is refused unread.
pub const BODY_LIMIT: usize = 4 * 1024;

pub static KEY_EXPIRATION: HeaderName = HeaderName::from_static("keygate-key-expiration");

/// A Discord id as callers send it: a string (JavaScript cannot hold a
/// snowflake in a number) or, leniently, a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Snowflake {
    Text(String),
    Number(u64),
}

#[derive(Deserialize)]
struct VerifyBody {
    key: String,
    app_id: Option<String>,
    guild_id: Option<Snowflake>,
    scopes: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct AuthenticateBody {
    app_id: String,
    secret: String,
    guild_id: Option<Snowflake>,
    scopes: Option<Vec<String>>,
}

fn expectations(
    app_id: Option<String>,
    guild_id: Option<Snowflake>,
    scopes: Option<Vec<String>>,
) -> Result<Expectations, ApiError> {
    let app_id = app_id
        .map(|a| {
            ApplicationId::parse(&a)
                .map_err(|_| ApiError::BadRequest("app_id is not an Application ID (app_…)".into()))
        })
        .transpose()?;
    let guild_id = guild_id
        .map(|g| match g {
            Snowflake::Number(n) => Ok(GuildId(n)),
            Snowflake::Text(t) => t
                .parse::<u64>()
                .map(GuildId)
                .map_err(|_| ApiError::BadRequest("guild_id is not a Discord server id".into())),
        })
        .transpose()?;
    Ok(Expectations {
        app_id,
        guild_id,
        scopes: scopes.unwrap_or_default(),
    })
}

/// JSON only, of at most `BODY_LIMIT` bytes, with every required field.
fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("application/json")
                || (m.len() > 5 && m[m.len() - 5..].eq_ignore_ascii_case("+json"))
        });
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(BODY_LIMIT),
        _ => ApiError::BadRequest("the request body could not be read".into()),
    })?;
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(json_problem(&e)))
}

/// What is wrong with a body, without serde's own message: that can quote
/// the value it choked on, which may be a key or a Secret.
fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => "the body is not valid JSON",
        Category::Data => {
            let text = e.to_string();
            // "missing field `key`" names a field, never a value.
            return match text.find("missing field `") {
                Some(_) => format!(
                    "{} (line {}, column {})",
                    text.split(" at line")
                        .next()
                        .unwrap_or("a required field is missing"),
                    e.line(),
                    e.column()
                ),
                None => format!(
                    "a field has the wrong type: key, app_id and secret are strings, \
                     scopes a list of strings, guild_id a string (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            };
        }
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

#[derive(Serialize)]
struct AppJson<'a> {
    id: &'a str,
    name: &'a str,
    guild_id: String,
    login_user_type: &'a str,
    source_app: &'a str,
    booking_marker: Option<&'a str>,
}

impl<'a> AppJson<'a> {
    fn of(app: &'a AppCard) -> Self {
        Self {
            id: app.id.as_str(),
            name: &app.name,
            guild_id: app.guild_id.to_string(),
            login_user_type: app.user_type.as_str(),
            source_app: app.source_app.as_str(),
            booking_marker: app.source_app.booking_marker(),
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Serialize)]
struct KeyJson<'a> {
    id: &'a str,
    start: &'a str,
    created_at: String,
    expires_at: String,
    /// Set for an old key in its rotation grace period.
    grace: Option<GraceJson<'a>>,
}

/// A replaced credential still working: what replaced it, and until when.
#[derive(Serialize)]
struct GraceJson<'a> {
    replaced_by: &'a str,
    ends_at: String,
}

impl<'a> GraceJson<'a> {
    fn of(g: &'a GraceView) -> Self {
        Self {
            replaced_by: &g.replaced_by,
            ends_at: rfc3339(g.ends_at),
        }
    }
}

#[derive(Serialize)]
struct SecretJson<'a> {
    id: &'a str,
    start: &'a str,
    created_at: String,
    grace: Option<GraceJson<'a>>,
}

/// The one answer shape of both endpoints.
#[derive(Serialize)]
struct Answer<'a, K> {
    valid: bool,
    code: VerifyCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    missing_scopes: Option<&'a [String]>,
    app: Option<AppJson<'a>>,
    scopes: Option<&'a [String]>,
    key: Option<K>,
}

impl<'a, K> Answer<'a, K> {
    fn new<T>(verdict: &'a Verdict<T>, card: Option<&'a AppCard>, key: Option<K>) -> Self {
        Self {
            valid: verdict.is_valid(),
            code: verdict.code,
            missing_scopes: (verdict.code == VerifyCode::InsufficientScope)
                .then_some(verdict.missing_scopes.as_slice()),
            app: card.map(AppJson::of),
            scopes: card.map(|c| c.scopes.as_slice()),
            key,
        }
    }
}

fn observe(endpoint: &'static str, code: VerifyCode, started: Instant) {
    metrics::counter!("keygate_verifications_total", "endpoint" => endpoint, "code" => code.as_str())
        .increment(1);
    metrics::histogram!("keygate_verify_duration_seconds", "endpoint" => endpoint)
        .record(started.elapsed().as_secs_f64());
}

pub async fn verify_key(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let body: VerifyBody = json_body(&headers, body)?;
    let expect = expectations(body.app_id, body.guild_id, body.scopes)?;
    let verdict = state
        .service
        .verify_key(&body.key, &expect)
        .await
        .map_err(ApiError::internal)?;
    observe("verify", verdict.code, started);
    let standing: Option<&KeyStanding> = verdict.credential.as_deref();
    tracing::debug!(
        code = verdict.code.as_str(),
        start = standing.map(|s| s.start.as_str()),
        "key verified"
    );
    let key = standing.map(|s| KeyJson {
        id: &s.key_id,
        start: &s.start,
        created_at: rfc3339(s.created_at),
        expires_at: rfc3339(s.expires_at),
        grace: s.grace.as_ref().map(GraceJson::of),
    });
    let answer = Answer::new(&verdict, standing.map(|s| &s.app), key);
    let mut response = Json(answer).into_response();
    // When the key stops working: its expiry, or its grace end if sooner.
    let stops = standing.map(|s| {
        s.grace
            .as_ref()
            .map_or(s.expires_at, |g| g.ends_at.min(s.expires_at))
    });
    if let Some(stops) = stops
        && let Ok(value) = HeaderValue::from_str(&rfc3339(stops))
    {
        response.headers_mut().insert(KEY_EXPIRATION.clone(), value);
    }
    Ok(response)
}

/// `app_id:secret` from HTTP Basic, when the request carries it.
fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ApiError>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bad = || ApiError::BadRequest("malformed HTTP Basic credentials".into());
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|pair| {
                pair.split_once(':')
                    .map(|(id, secret)| (id.to_owned(), secret.to_owned()))
            })
            .ok_or_else(bad),
    )
}

pub async fn authenticate_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    // With bearer tokens required, the Authorization header carries the
    // token, so the app's credentials can only come in the body.
    let basic = if state.tokens.is_empty() {
        basic_credentials(&headers).transpose()?
    } else {
        None
    };
    let (app_id, secret, expect) = match basic {
        Some((app_id, secret)) => (app_id, secret, Expectations::default()),
        None => {
            let body: AuthenticateBody = json_body(&headers, body)?;
            let expect = expectations(None, body.guild_id, body.scopes)?;
            (body.app_id, body.secret, expect)
        }
    };
    let verdict = state
        .service
        .authenticate_app(&app_id, &secret, &expect)
        .await
        .map_err(ApiError::internal)?;
    observe("authenticate", verdict.code, started);
    let standing: Option<&SecretStanding> = verdict.credential.as_deref();
    tracing::debug!(
        code = verdict.code.as_str(),
        start = standing.map(|s| s.start.as_str()),
        "app authenticated"
    );
    let key = standing.map(|s| SecretJson {
        id: &s.secret_id,
        start: &s.start,
        created_at: rfc3339(s.created_at),
        grace: s.grace.as_ref().map(GraceJson::of),
    });
    let mut response = Json(Answer::new(&verdict, standing.map(|s| &s.app), key)).into_response();
    // A Secret does not expire, unless it was replaced: then it stops at its grace's end.
    if let Some(g) = standing.and_then(|s| s.grace.as_ref())
        && let Ok(value) = HeaderValue::from_str(&rfc3339(g.ends_at))
    {
        response.headers_mut().insert(KEY_EXPIRATION.clone(), value);
    }
    Ok(response)
}
