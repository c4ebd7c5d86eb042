//! The sandbox page and its API: state, live events, and a member's commands and clicks.

use super::GUILD;
use super::emulator::{Emulator, Interaction, Member, Refused, Timeout, is_loopback_host, may_use};
use axum::extract::rejection::{JsonRejection, QueryRejection};
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
use tower_http::set_header::SetResponseHeaderLayer;

/// Discord gives the bot 3 seconds to answer any interaction.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

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

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        let status = match refused {
            Refused::NoMessage | Refused::NoComponent => StatusCode::NOT_FOUND,
            Refused::NoModal => StatusCode::CONFLICT,
            Refused::Disabled | Refused::Choice(_) | Refused::Field(_) => StatusCode::BAD_REQUEST,
        };
        Self::new(status, refused.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
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
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            // Should a message ever get markup past the page's escaping, no script of its own
            // runs, and no other site can frame the page.
            HeaderValue::from_static(
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ))
        .with_state(sandbox);
    tokio::spawn(async move { Ok(axum::serve(crate::http::no_delay(listener), app).await?) })
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

async fn state(
    State(sandbox): State<Sandbox>,
    who: Result<Query<As>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(who) = who?;
    let me = sandbox.member(who.member.as_deref())?;
    let mut view = sandbox.emulator.view(GUILD, me);
    view["version"] = json!(sandbox.emulator.shown_version());
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

/// One event per change a member could see (changes that come together are sent as one):
/// the page then reads `/api/state` again.
async fn events(
    State(sandbox): State<Sandbox>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = sandbox.emulator.changes();
    let last = sandbox.emulator.shown_version();
    let stream = futures_util::stream::unfold(
        (sandbox, changes, last),
        |(sandbox, mut changes, last)| async move {
            // Heartbeats and REST calls change the emulator every second, not the screen.
            loop {
                changes.changed().await.ok()?;
                let version = sandbox.emulator.shown_version();
                if version != last {
                    let event = Event::default().data(version.to_string());
                    return Some((Ok(event), (sandbox, changes, version)));
                }
            }
        },
    );
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

/// Discord neither lists nor sends a command the member may not use.
fn usable(sandbox: &Sandbox, me: &Member, name: &str) -> ApiResult<()> {
    let commands = sandbox.emulator.commands_in(GUILD);
    if commands.iter().any(|c| c["name"] == name && may_use(c, me)) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{} cannot use /{name}",
            me.name
        )))
    }
}

/// Sends the interaction and waits for the bot's answer, as Discord's client does: with none
/// in 3 seconds the member is told the interaction failed.
async fn dispatch(sandbox: &Sandbox, i: Interaction, d: Value) -> ApiResult<Json<Value>> {
    sandbox.emulator.dispatch("INTERACTION_CREATE", d).await?;
    if sandbox
        .emulator
        .response_within(&i, ANSWER_WITHIN)
        .await
        .is_err()
    {
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "keygate did not respond: the interaction failed",
        ));
    }
    Ok(Json(json!({ "interaction_id": i.id.to_string() })))
}

async fn command(
    State(sandbox): State<Sandbox>,
    req: Result<Json<CommandRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(req) = req?;
    let me = sandbox.member(Some(&req.member))?;
    let channel = guild_channel(&sandbox, &req.channel_id)?;
    usable(&sandbox, me, &req.name)?;
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
    dispatch(&sandbox, i, d).await
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
    req: Result<Json<AutocompleteRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(req) = req?;
    let me = sandbox.member(Some(&req.member))?;
    let channel = guild_channel(&sandbox, &req.channel_id)?;
    usable(&sandbox, me, &req.name)?;
    let (i, d) = sandbox.emulator.autocomplete_payload_in(
        me,
        Some(channel),
        &req.name,
        req.subcommand.as_deref(),
        &req.option,
        &req.typed,
    );
    sandbox.emulator.dispatch("INTERACTION_CREATE", d).await?;
    sandbox.emulator.response_within(&i, ANSWER_WITHIN).await?;
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
    req: Result<Json<ComponentRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(req) = req?;
    let me = sandbox.member(Some(&req.member))?;
    let id = snowflake(&req.message_id, "message")?;
    let (i, d) =
        sandbox
            .emulator
            .component_payload(me, id, &req.custom_id, req.values.as_deref())?;
    dispatch(&sandbox, i, d).await
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
    req: Result<Json<ModalRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(req) = req?;
    let me = sandbox.member(Some(&req.member))?;
    let opened_by = snowflake(&req.interaction_id, "interaction")?;
    if req.dismiss {
        return if sandbox.emulator.dismiss_modal(me.id, opened_by) {
            Ok(Json(json!({})))
        } else {
            Err(Refused::NoModal.into())
        };
    }
    let (i, d) = sandbox
        .emulator
        .modal_submit_payload(me, opened_by, &req.fields)?;
    // Unanswered, the modal stays open (the emulator closes it on the bot's answer).
    dispatch(&sandbox, i, d).await
}
