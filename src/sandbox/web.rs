//! The sandbox page and its API: what a member sees (`/api/state`), when it changes
//! (`/api/events`), and what they do (commands, autocomplete, buttons, selects, modals).

use super::GUILD;
use super::emulator::{Emulator, Interaction, Member, Timeout};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Discord gives the bot 3 seconds to answer an autocomplete.
const AUTOCOMPLETE_WITHIN: Duration = Duration::from_secs(3);

/// The emulator and the people on the page.
#[derive(Clone)]
pub struct Sandbox {
    emulator: Emulator,
    members: Arc<Vec<(Member, &'static str)>>,
}

impl Sandbox {
    pub fn new(emulator: Emulator, members: Vec<(Member, &'static str)>) -> Self {
        Self {
            emulator,
            members: Arc::new(members),
        }
    }

    /// The member with this id; none named: the first (the admin).
    fn member(&self, id: Option<&str>) -> Result<&Member, ApiError> {
        match id {
            None => self
                .members
                .first()
                .map(|(m, _)| m)
                .ok_or_else(|| ApiError::not_found("the sandbox has no members")),
            Some(id) => self
                .members
                .iter()
                .map(|(m, _)| m)
                .find(|m| m.id.to_string() == id)
                .ok_or_else(|| ApiError::not_found(format!("no member has the id {id}"))),
        }
    }
}

/// A refusal the page shows as a toast: `{"error": "..."}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<Timeout> for ApiError {
    fn from(timeout: Timeout) -> Self {
        tracing::warn!(waited_for = %timeout.what, "the sandbox's Discord emulator timed out");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the bot did not answer in time ({})", timeout.what),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Serves the page on `listener` until the task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    sandbox: Sandbox,
) -> JoinHandle<anyhow::Result<()>> {
    let app = Router::new()
        .route("/", get(|| async { Html(include_str!("web/index.html")) }))
        .route(
            "/style.css",
            get(|| async { asset("text/css", include_str!("web/style.css")) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript", include_str!("web/app.js")) }),
        )
        .route("/api/state", get(state))
        .route("/api/events", get(events))
        .route("/api/command", post(command))
        .route("/api/autocomplete", post(autocomplete))
        .route("/api/component", post(component))
        .route("/api/modal", post(modal))
        .layer(axum::middleware::from_fn(local_host_only))
        .with_state(sandbox);
    tokio::spawn(async move { Ok(axum::serve(listener, app).await?) })
}

/// Refuses a request whose `Host` is not this machine's loopback name: a hostile web page
/// whose name resolves to 127.0.0.1 (DNS rebinding) would otherwise drive the sandbox.
async fn local_host_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if is_loopback_host(host) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "the sandbox answers only 127.0.0.1 and localhost",
        )
        .into_response()
    }
}

/// `127.0.0.1:8090`, `localhost:8090`, `[::1]:8090`, with or without the port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

#[derive(Deserialize)]
struct As {
    #[serde(rename = "as")]
    member: Option<String>,
}

async fn state(State(sandbox): State<Sandbox>, Query(who): Query<As>) -> ApiResult<Json<Value>> {
    let me = sandbox.member(who.member.as_deref())?;
    let mut view = sandbox.emulator.view(GUILD, me);
    view["version"] = json!(*sandbox.emulator.changes().borrow());
    view["bot"] = json!({
        "id": Emulator::APPLICATION_ID.to_string(),
        "name": Emulator::BOT_NAME,
    });
    view["me"] = json!(me.id.to_string());
    view["members"] = sandbox
        .members
        .iter()
        .map(|(m, title)| {
            json!({
                "id": m.id.to_string(),
                "name": m.name,
                "title": title,
                "roles": m.roles.iter().map(u64::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(view))
}

/// One event per change of the emulator's state (changes that come together are sent as
/// one): the page then reads `/api/state` again.
async fn events(
    State(sandbox): State<Sandbox>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = sandbox.emulator.changes();
    let stream = futures_util::stream::unfold(changes, |mut changes| async move {
        changes.changed().await.ok()?;
        let version = *changes.borrow_and_update();
        Some((Ok(Event::default().data(version.to_string())), changes))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn snowflake(id: &str, what: &str) -> ApiResult<u64> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not a {what} id")))
}

#[derive(Deserialize)]
struct OptionValue {
    name: String,
    value: Value,
}

#[derive(Deserialize)]
struct CommandRequest {
    #[serde(rename = "as")]
    member: String,
    channel_id: String,
    name: String,
    subcommand: Option<String>,
    #[serde(default)]
    options: Vec<OptionValue>,
}

/// A guild channel of the sandbox's server (commands are not typed in DMs here).
fn guild_channel(sandbox: &Sandbox, id: &str) -> ApiResult<u64> {
    let id = snowflake(id, "channel")?;
    if sandbox
        .emulator
        .channels_of(GUILD)
        .iter()
        .any(|(c, _)| *c == id)
    {
        Ok(id)
    } else {
        Err(ApiError::bad_request(
            "commands work in the server's channels: open #general",
        ))
    }
}

fn dispatched(i: &Interaction) -> Json<Value> {
    Json(json!({ "interaction_id": i.id.to_string() }))
}

async fn command(
    State(sandbox): State<Sandbox>,
    Json(req): Json<CommandRequest>,
) -> ApiResult<Json<Value>> {
    let me = sandbox.member(Some(&req.member))?;
    let channel = guild_channel(&sandbox, &req.channel_id)?;
    let options = req
        .options
        .iter()
        .map(|o| (o.name.as_str(), o.value.clone()))
        .collect();
    let (i, d) = sandbox.emulator.command_payload(
        me,
        Some(channel),
        &req.name,
        req.subcommand.as_deref(),
        options,
    );
    sandbox.emulator.dispatch("INTERACTION_CREATE", d).await?;
    Ok(dispatched(&i))
}

#[derive(Deserialize)]
struct AutocompleteRequest {
    #[serde(rename = "as")]
    member: String,
    channel_id: String,
    name: String,
    subcommand: Option<String>,
    option: String,
    #[serde(default)]
    typed: String,
}

async fn autocomplete(
    State(sandbox): State<Sandbox>,
    Json(req): Json<AutocompleteRequest>,
) -> ApiResult<Json<Value>> {
    let me = sandbox.member(Some(&req.member))?;
    let channel = guild_channel(&sandbox, &req.channel_id)?;
    let (i, d) = sandbox.emulator.autocomplete_payload_in(
        me,
        Some(channel),
        &req.name,
        req.subcommand.as_deref(),
        &req.option,
        &req.typed,
    );
    sandbox.emulator.dispatch("INTERACTION_CREATE", d).await?;
    sandbox
        .emulator
        .response_within(&i, AUTOCOMPLETE_WITHIN)
        .await?;
    let choices = sandbox.emulator.choices_of(&i).unwrap_or_else(|| json!([]));
    Ok(Json(json!({ "choices": choices })))
}

#[derive(Deserialize)]
struct ComponentRequest {
    #[serde(rename = "as")]
    member: String,
    message_id: String,
    custom_id: String,
    /// A select's chosen values; none for a button.
    values: Option<Vec<String>>,
}

async fn component(
    State(sandbox): State<Sandbox>,
    Json(req): Json<ComponentRequest>,
) -> ApiResult<Json<Value>> {
    let me = sandbox.member(Some(&req.member))?;
    let id = snowflake(&req.message_id, "message")?;
    let message = sandbox
        .emulator
        .message_seen_by(me.id, id)
        .ok_or_else(|| ApiError::not_found("that message is gone"))?;
    let channel = message["channel_id"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or_default();
    let in_dm = sandbox.emulator.is_dm_of(me.id, channel);
    let emulator = &sandbox.emulator;
    let (i, d) = match &req.values {
        None => emulator.button_payload(me, &message, &req.custom_id, in_dm),
        Some(values) => {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            emulator.select_payload(me, &message, &req.custom_id, &values, in_dm)
        }
    };
    emulator.dispatch("INTERACTION_CREATE", d).await?;
    Ok(dispatched(&i))
}

#[derive(Deserialize)]
struct ModalRequest {
    #[serde(rename = "as")]
    member: String,
    interaction_id: String,
    #[serde(default)]
    fields: HashMap<String, String>,
    #[serde(default)]
    dismiss: bool,
}

async fn modal(
    State(sandbox): State<Sandbox>,
    Json(req): Json<ModalRequest>,
) -> ApiResult<Json<Value>> {
    let me = sandbox.member(Some(&req.member))?;
    let opened_by = snowflake(&req.interaction_id, "interaction")?;
    let open = sandbox
        .emulator
        .open_modal(me.id)
        .filter(|m| m.opened_by == opened_by)
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "that form is no longer open"))?;
    if req.dismiss {
        sandbox.emulator.dismiss_modal(me.id, opened_by);
        return Ok(Json(json!({})));
    }
    let fields: Vec<(&str, &str)> = req
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (i, d) = sandbox.emulator.modal_payload(
        me,
        &open.custom_id,
        &fields,
        open.message.as_ref(),
        open.in_dm,
    );
    sandbox.emulator.dispatch("INTERACTION_CREATE", d).await?;
    Ok(dispatched(&i))
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
