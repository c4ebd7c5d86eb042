//! The JSON shapes the emulator sends: users, members, roles, frames, and the option helpers.

use super::state::{Conn, Shard};
use super::{Emulator, Member};
use axum::extract::ws::{CloseFrame, Message as WsMessage};
use serde_json::{Value, json};

pub(super) fn gateway_url(base_url: &str) -> String {
    format!("{}/gateway", base_url.replacen("http://", "ws://", 1))
}

pub(super) fn dispatch_frame(event: &str, seq: u64, d: Value) -> Value {
    json!({ "op": 0, "t": event, "s": seq, "d": d })
}

/// Closes a connection as Discord does now and then (close code 4000): serenity resumes.
pub(super) fn close(c: Conn) {
    // Without a code serenity ignores the Close frame and notices only at its next heartbeat.
    let _ = c.tx.send(WsMessage::Close(Some(CloseFrame {
        code: 4000,
        reason: "".into(),
    })));
}

/// READY for `shard`: it lists the guilds that shard owns, as Discord's does.
pub(super) fn ready_frame(ws_url: &str, conn: u64, shard: Shard) -> Value {
    let mut user = bot_user();
    user["verified"] = json!(true);
    user["mfa_enabled"] = json!(false);
    user["flags"] = json!(0);
    let guilds: Vec<Value> = Emulator::GUILDS
        .iter()
        .filter(|g| Emulator::shard_of(**g, shard.1) == shard.0)
        .map(|g| json!({ "id": g.to_string(), "unavailable": true }))
        .collect();
    dispatch_frame(
        "READY",
        1,
        json!({
            "v": 10,
            "user": user,
            "guilds": guilds,
            "session_id": session_id(conn),
            "resume_gateway_url": ws_url,
            "shard": [shard.0, shard.1],
            "application": { "id": Emulator::APPLICATION_ID.to_string(), "flags": 0 },
        }),
    )
}

pub(super) fn session_id(conn: u64) -> String {
    format!("fake-session-{conn}")
}

pub(super) fn snowflake(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(super) fn user_json(id: u64, name: &str, bot: bool) -> Value {
    json!({
        "id": id.to_string(),
        "username": name,
        "discriminator": "0",
        "global_name": if bot { Value::Null } else { json!(name) },
        "avatar": null,
        "bot": bot,
        "public_flags": 0,
    })
}

pub(super) fn bot_user() -> Value {
    user_json(Emulator::APPLICATION_ID, Emulator::BOT_NAME, true)
}

pub(super) fn member_json(user: &Member, with_user: bool) -> Value {
    let mut m = json!({
        "roles": user.roles.iter().map(u64::to_string).collect::<Vec<_>>(),
        "permissions": user.permissions.to_string(),
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "premium_since": null,
        "nick": null,
        "avatar": null,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "communication_disabled_until": null,
    });
    if with_user {
        m["user"] = user_json(user.id, &user.name, false);
    }
    m
}

pub(super) fn role_json(id: u64, name: &str, permissions: u64) -> Value {
    let mut r = json!({
        "id": id.to_string(),
        "name": name,
        "color": 0,
        "colors": { "primary_color": 0, "secondary_color": null, "tertiary_color": null },
        "hoist": false,
        "icon": null,
        "unicode_emoji": null,
        "position": if Emulator::GUILDS.contains(&id) { 0 } else { 1 },
        "permissions": permissions.to_string(),
        "managed": false,
        "mentionable": false,
        "flags": 0,
    });
    if Emulator::GUILDS
        .iter()
        .any(|g| Emulator::bot_role_of(*g) == id)
    {
        r["managed"] = json!(true);
        r["tags"] = json!({ "bot_id": Emulator::APPLICATION_ID.to_string() });
    }
    r
}

pub(super) fn infer_option_type(v: &Value) -> u64 {
    match v {
        Value::Bool(_) => 5,
        Value::Number(n) if n.is_i64() || n.is_u64() => 4,
        Value::Number(_) => 10,
        _ => 3,
    }
}

/// `subcommand` may be `"group sub"` for a subcommand group.
pub(super) fn wrap_subcommand(subcommand: Option<&str>, opts: Vec<Value>) -> Vec<Value> {
    let Some(subcommand) = subcommand.map(str::trim) else {
        return opts;
    };
    match subcommand.split_once(char::is_whitespace) {
        None => vec![json!({ "name": subcommand, "type": 1, "options": opts })],
        Some((group, sub)) => vec![json!({
            "name": group, "type": 2,
            "options": [{ "name": sub.trim(), "type": 1, "options": opts }],
        })],
    }
}

/// The registered option specs of the command (or of its subcommand).
pub(super) fn option_specs(spec: Option<&Value>, subcommand: Option<&str>) -> Vec<Value> {
    let Some(mut node) = spec else {
        return Vec::new();
    };
    for part in subcommand.into_iter().flat_map(str::split_whitespace) {
        let found = node["options"]
            .as_array()
            .and_then(|opts| opts.iter().find(|o| o["name"] == part));
        match found {
            Some(n) => node = n,
            None => return Vec::new(),
        }
    }
    node["options"].as_array().cloned().unwrap_or_default()
}

pub(super) fn mention_ids(content: &str) -> (Vec<u64>, Vec<u64>) {
    let (mut users, mut roles) = (Vec::new(), Vec::new());
    for piece in content.split("<@").skip(1) {
        let (is_role, rest) = match piece.strip_prefix('&') {
            Some(r) => (true, r),
            None => (false, piece.strip_prefix('!').unwrap_or(piece)),
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !rest[digits.len()..].starts_with('>') {
            continue;
        }
        if let Ok(id) = digits.parse() {
            if is_role {
                roles.push(id)
            } else {
                users.push(id)
            }
        }
    }
    (users, roles)
}

pub(super) fn allowed(allowed_mentions: &Value, kind: &str, id: u64) -> bool {
    if allowed_mentions.is_null() {
        return true;
    }
    let parses = allowed_mentions["parse"]
        .as_array()
        .is_some_and(|p| p.iter().any(|k| k == kind));
    let listed = allowed_mentions[kind]
        .as_array()
        .is_some_and(|l| l.iter().any(|v| snowflake(v) == Some(id)));
    parses || listed
}
