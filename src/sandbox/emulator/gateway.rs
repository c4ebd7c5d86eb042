//! The emulator's gateway: HELLO, IDENTIFY → READY, RESUME, heartbeats, a connection per shard.

use super::Emulator;
use super::json::{dispatch_frame, gateway_url, ready_frame, session_id};
use super::state::{Conn, Shard};
use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub(super) async fn gateway_route(
    State(emulator): State<Emulator>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| serve_gateway(emulator, socket))
}

async fn serve_gateway(emulator: Emulator, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<WsMessage>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if sink.send(msg).await.is_err() {
                break;
            }
        }
    });
    let conn_id = {
        let mut st = emulator.lock();
        st.next_conn += 1;
        st.next_conn
    };
    // Plain text frames although IDENTIFY asks for compression: serenity reads both.
    let send = |v: Value| {
        let _ = tx.send(WsMessage::Text(v.to_string().into()));
    };
    send(json!({ "op": 10, "d": { "heartbeat_interval": emulator.inner.heartbeat_ms } }));
    // The shard this connection was last made ready for.
    let mut live_shard = None;
    // Keep reading after a Close frame: that is what makes the close handshake answer.
    while let Some(Ok(msg)) = stream.next().await {
        let WsMessage::Text(text) = msg else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        match frame["op"].as_u64() {
            Some(1) => {
                let ack = {
                    let mut st = emulator.lock();
                    st.heartbeats += 1;
                    st.ack_heartbeats
                };
                if ack {
                    send(json!({ "op": 11 }));
                }
            }
            Some(2) => {
                let shard = identified_shard(&frame["d"]);
                let mut st = emulator.lock();
                st.identifies += 1;
                st.last_identify = Some(frame["d"].clone());
                st.sessions.insert(session_id(conn_id), shard);
                // Sent under the lock so no dispatch can overtake READY.
                let _ = tx.send(WsMessage::Text(
                    ready_frame(&gateway_url(&st.base_url), conn_id, shard)
                        .to_string()
                        .into(),
                ));
                // A newer connection for the shard replaces an older one, as Discord's would.
                st.live.insert(
                    shard.0,
                    Conn {
                        id: conn_id,
                        shard,
                        tx: tx.clone(),
                        seq: 1,
                    },
                );
                live_shard = Some(shard.0);
            }
            // Resuming (rather than INVALID_SESSION) skips serenity's 5 s pause between shard
            // boots, so a dropped connection costs a test milliseconds; nothing is replayed.
            Some(6) => {
                let mut st = emulator.lock();
                st.resumes += 1;
                // The session says which shard this is: RESUME does not.
                let shard = frame["d"]["session_id"]
                    .as_str()
                    .and_then(|s| st.sessions.get(s).copied())
                    .unwrap_or((0, 1));
                let seq = frame["d"]["seq"].as_u64().unwrap_or(0) + 1;
                let _ = tx.send(WsMessage::Text(
                    dispatch_frame("RESUMED", seq, json!({})).to_string().into(),
                ));
                st.live.insert(
                    shard.0,
                    Conn {
                        id: conn_id,
                        shard,
                        tx: tx.clone(),
                        seq,
                    },
                );
                live_shard = Some(shard.0);
            }
            _ => {}
        }
        emulator.bump();
    }
    if let Some(shard) = live_shard {
        let mut st = emulator.lock();
        if st.live.get(&shard).is_some_and(|c| c.id == conn_id) {
            st.live.remove(&shard);
        }
    }
    emulator.bump();
    drop(tx);
    let _ = writer.await;
}

/// IDENTIFY's `shard` (`[id, count]`); without one a client runs the only shard, `[0, 1]`.
fn identified_shard(d: &Value) -> Shard {
    let part = |i: usize| d["shard"][i].as_u64().and_then(|v| u32::try_from(v).ok());
    match (part(0), part(1)) {
        (Some(id), Some(count)) if id < count => (id, count),
        _ => (0, 1),
    }
}
