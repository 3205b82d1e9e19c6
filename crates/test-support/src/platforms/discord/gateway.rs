//! The fake's gateway websocket (<https://discord.com/developers/docs/events/gateway>,
//! <https://discord.com/developers/docs/topics/opcodes-and-status-codes>).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State as AxumState;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Cmd, GUILD_ID, Live, MESSAGE_CONTENT, SessionLog, Shared, State, TOKEN};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(upgrade))
        .route("/resume", get(upgrade))
        .route("/resume/", get(upgrade))
        .with_state(shared)
}

async fn upgrade(AxumState(shared): AxumState<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| connection(shared, socket))
}

async fn connection(shared: Arc<Shared>, mut socket: WebSocket) {
    let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let interval = {
        let mut state = shared.lock();
        state.live.insert(
            id,
            Live {
                session: None,
                tx: tx.clone(),
            },
        );
        state.heartbeat_ms
    };
    let hello = json!({ "op": 10, "d": { "heartbeat_interval": interval }, "s": null, "t": null });
    let _ = tx.send(Cmd::Text(hello.to_string()));
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Cmd::Text(text)) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Cmd::Close(code, reason)) => {
                    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                    break;
                }
                Some(Cmd::Drop) | None => break,
            },
            frame = socket.recv() => match frame {
                Some(Ok(Message::Text(text))) => from_client(&shared, id, &text),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    shared.lock().live.remove(&id);
}

/// Handles one payload from the bot; answers go through the connection's queue.
fn from_client(shared: &Shared, conn: u64, text: &str) {
    let mut state = shared.lock();
    let Some(tx) = state.live.get(&conn).map(|l| l.tx.clone()) else {
        return;
    };
    let send = |v: Value| {
        let _ = tx.send(Cmd::Text(v.to_string()));
    };
    let close = |code: u16, reason: &str| {
        let _ = tx.send(Cmd::Close(code, reason.to_string()));
    };
    let Ok(payload) = serde_json::from_str::<Value>(text) else {
        return close(4002, "Error while decoding payload.");
    };
    let d = &payload["d"];
    let token_ok = |state: &State| state.token_valid && d["token"].as_str() == Some(TOKEN);
    match payload["op"].as_u64() {
        Some(1) => {
            state.heartbeats += 1;
            if state.ack_heartbeats {
                send(json!({ "op": 11 }));
            }
        }
        Some(2) => {
            if !token_ok(&state) {
                return close(4004, "Authentication failed.");
            }
            let intents = d["intents"].as_u64().unwrap_or(0);
            if state.refuse_message_content && intents & MESSAGE_CONTENT != 0 {
                return close(4014, "Disallowed intent(s).");
            }
            identify(&mut state, conn);
        }
        Some(6) => {
            if !token_ok(&state) {
                return close(4004, "Authentication failed.");
            }
            let session = d["session_id"].as_str().unwrap_or_default().to_string();
            let after = d["seq"].as_u64().unwrap_or(0);
            let Some(log) = state.sessions.get(&session) else {
                return send(json!({ "op": 9, "d": false }));
            };
            for (_, frame) in log.log.iter().filter(|(s, _)| *s > after) {
                let _ = tx.send(Cmd::Text(frame.clone()));
            }
            state.resumes += 1;
            if let Some(live) = state.live.get_mut(&conn) {
                live.session = Some(session.clone());
            }
            state.dispatch_to(&session, "RESUMED", &Value::Null);
        }
        _ => close(4001, "Unknown opcode."),
    }
}

/// A new session: READY then GUILD_CREATE, as Discord sends them.
fn identify(state: &mut State, conn: u64) {
    state.identifies += 1;
    let session = format!("fake-session-{}", state.identifies);
    // Sessions nobody is attached to are abandoned once the bot identifies afresh.
    let attached: Vec<String> = state
        .live
        .values()
        .filter_map(|l| l.session.clone())
        .collect();
    state.sessions.retain(|id, _| attached.contains(id));
    state
        .sessions
        .insert(session.clone(), SessionLog::default());
    if let Some(live) = state.live.get_mut(&conn) {
        live.session = Some(session.clone());
    }
    let ready = json!({
        "v": 10,
        "user": State::bot_user(),
        "guilds": [{ "id": GUILD_ID, "unavailable": true }],
        "session_id": session,
        "resume_gateway_url": format!("{}/resume", state.ws_base),
        "shard": [0, 1],
        "application": { "id": "900000000000000002", "flags": 0 },
    });
    state.dispatch_to(&session, "READY", &ready);
    let channels: Vec<Value> = state
        .channels
        .values()
        .filter(|c| c.in_guild() && c.parent_id.is_none())
        .map(super::FakeChannel::json)
        .collect();
    let threads: Vec<Value> = state
        .channels
        .values()
        .filter(|c| c.parent_id.is_some())
        .map(super::FakeChannel::json)
        .collect();
    let guild = json!({ "id": GUILD_ID, "name": "Fake Guild", "unavailable": false, "channels": channels, "threads": threads, "members": [] });
    state.dispatch_to(&session, "GUILD_CREATE", &guild);
}
