//! The gateway connection (<https://discord.com/developers/docs/events/gateway>): Hello →
//! heartbeats (the first after `interval × jitter`, each carrying the last sequence) →
//! Identify or Resume → dispatches, handed in order to [`crate::inbound`]. Reconnects run
//! here forever with backoff; what the close codes and opcodes ask for
//! (<https://discord.com/developers/docs/topics/opcodes-and-status-codes>) decides between
//! resuming, identifying afresh and giving up (bad token, disallowed intents).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nanoclaw_channel::{Backoff, ChannelError, HealthCell};
use rand::RngExt;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::PLATFORM;
use crate::api::Api;
use crate::inbound::Dispatch;
use crate::model::{Hello, INTENTS, Payload, Ready, op};
use crate::session::{Session, SessionStore};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How a connection ended, and what comes next.
#[derive(Debug)]
enum Ended {
    /// Reconnect and resume the session (`delay`: `None` waits the backoff).
    Resume {
        reason: String,
        delay: Option<Duration>,
    },
    /// Reconnect with a fresh Identify.
    Fresh {
        reason: String,
        delay: Option<Duration>,
    },
    /// Stop: the owner must fix something.
    Fatal(ChannelError),
}

pub struct Gateway {
    pub api: Arc<Api>,
    pub sessions: Arc<SessionStore>,
    pub health: Arc<HealthCell>,
    pub dispatches: mpsc::UnboundedSender<Dispatch>,
    /// The configured gateway URL; `None` asks `GET /gateway/bot`.
    pub gateway_url: Option<String>,
}

impl Gateway {
    /// Connects and reconnects until a fatal close; `first` learns how the first
    /// connection went.
    pub async fn run(self, first: oneshot::Sender<Result<(), ChannelError>>) {
        let mut first = Some(first);
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let mut base_url = self.gateway_url.clone();
        let mut conn: u64 = 0;
        loop {
            conn += 1;
            let ended = self
                .connection(&mut base_url, conn, &mut backoff, &mut first)
                .await;
            // What settled so far is saved when a connection ends, not only every second.
            self.sessions.flush().await;
            let delay = match ended {
                Ended::Fatal(error) => {
                    tracing::error!(error = %error, "discord: gateway gave up");
                    self.health.down(error.to_string());
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Err(error));
                    }
                    return;
                }
                Ended::Resume { reason, delay } => {
                    tracing::warn!(reason, "discord: gateway connection ended; resuming");
                    self.health.reconnecting(reason);
                    delay
                }
                Ended::Fresh { reason, delay } => {
                    tracing::warn!(reason, "discord: gateway session ended; identifying afresh");
                    self.sessions.clear().await;
                    self.health.reconnecting(reason);
                    delay
                }
            };
            if let Some(tx) = first.take() {
                // The first try failed for a reason a retry may fix: reconnects go on here.
                let _ = tx.send(Ok(()));
            }
            sleep(delay.unwrap_or_else(|| backoff.next_delay())).await;
        }
    }

    /// One websocket connection, from connect to its end.
    async fn connection(
        &self,
        base_url: &mut Option<String>,
        conn: u64,
        backoff: &mut Backoff,
        first: &mut Option<oneshot::Sender<Result<(), ChannelError>>>,
    ) -> Ended {
        let session = self.sessions.current().await;
        let url = match &session {
            Some(s) => s.resume_url.clone(),
            None => match self.base_url(base_url).await {
                Ok(url) => url,
                Err(e @ ChannelError::Unauthorized { .. }) => return Ended::Fatal(e),
                Err(e) => return resume(format!("asking for the gateway URL: {e}")),
            },
        };
        let mut socket = match timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async(with_query(&url)),
        )
        .await
        {
            Ok(Ok((socket, _))) => socket,
            Ok(Err(e)) => return resume(format!("connecting to {url}: {e}")),
            Err(_) => return resume(format!("connecting to {url}: timed out")),
        };
        let hello = match timeout(CONNECT_TIMEOUT, read_hello(&mut socket)).await {
            Ok(Ok(hello)) => hello,
            Ok(Err(ended)) => return ended,
            Err(_) => return resume("no Hello from the gateway".into()),
        };
        let opening = match &session {
            Some(s) => self.resume_payload(s),
            None => self.identify_payload(),
        };
        if let Err(e) = socket
            .send(WsMessage::Text(opening.to_string().into()))
            .await
        {
            return resume(format!(
                "sending {}: {e}",
                if session.is_some() {
                    "Resume"
                } else {
                    "Identify"
                }
            ));
        }
        let mut link = Link {
            gateway: self,
            socket,
            conn,
            last_seq: session.as_ref().and_then(|s| s.seq),
            acked: true,
            backoff,
            first,
        };
        link.pump(Duration::from_millis(hello.heartbeat_interval.max(1)))
            .await
    }

    async fn base_url(&self, cached: &mut Option<String>) -> Result<String, ChannelError> {
        if let Some(url) = cached.as_ref().filter(|u| !u.is_empty()) {
            return Ok(url.clone());
        }
        let url = self.api.gateway_url().await?;
        *cached = Some(url.clone());
        Ok(url)
    }

    fn identify_payload(&self) -> Value {
        json!({
            "op": op::IDENTIFY,
            "d": {
                "token": self.api.token().expose_secret(),
                "intents": INTENTS,
                "properties": { "os": std::env::consts::OS, "browser": "nanoclaw", "device": "nanoclaw" },
            }
        })
    }

    fn resume_payload(&self, session: &Session) -> Value {
        json!({
            "op": op::RESUME,
            "d": {
                "token": self.api.token().expose_secret(),
                "session_id": session.session_id,
                "seq": session.seq.unwrap_or(0),
            }
        })
    }
}

fn resume(reason: String) -> Ended {
    Ended::Resume {
        reason,
        delay: None,
    }
}

/// `?v=10&encoding=json` on the URL Discord gave (which has no path).
fn with_query(url: &str) -> String {
    let base = url.trim_end_matches('/');
    format!("{base}/?v=10&encoding=json")
}

async fn read_hello(socket: &mut Socket) -> Result<Hello, Ended> {
    loop {
        match socket.next().await {
            Some(Ok(WsMessage::Text(text))) => {
                let payload: Payload = serde_json::from_str(&text)
                    .map_err(|e| resume(format!("unreadable first gateway frame: {e}")))?;
                if payload.op != op::HELLO {
                    return Err(resume(format!("expected Hello, got op {}", payload.op)));
                }
                return serde_json::from_value(payload.d)
                    .map_err(|e| resume(format!("unreadable Hello: {e}")));
            }
            Some(Ok(WsMessage::Close(frame))) => return Err(closed(frame)),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(resume(format!("gateway connection lost: {e}"))),
            None => return Err(resume("gateway closed before Hello".into())),
        }
    }
}

/// What a close frame from Discord asks for.
fn closed(frame: Option<CloseFrame>) -> Ended {
    let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005);
    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
    let fatal = |what: &str| {
        Ended::Fatal(ChannelError::Setup(format!(
            "discord gateway closed with {code} ({what}): {reason}"
        )))
    };
    match code {
        4004 => Ended::Fatal(ChannelError::Unauthorized {
            platform: PLATFORM.into(),
            detail: format!("gateway closed with 4004 (authentication failed): {reason}"),
        }),
        4010 => fatal("invalid shard"),
        4011 => fatal("sharding required"),
        4012 => fatal("invalid API version"),
        4013 => fatal("invalid intents"),
        4014 => fatal(
            "disallowed intents: enable the Message Content intent under Bot → Privileged Gateway Intents in the Developer Portal",
        ),
        4007 | 4009 => Ended::Fresh {
            reason: format!("gateway closed with {code} (invalid sequence or session timed out)"),
            delay: None,
        },
        _ => resume(format!("gateway closed with {code}: {reason}")),
    }
}

/// A live, identified (or resuming) connection.
struct Link<'a> {
    gateway: &'a Gateway,
    socket: Socket,
    conn: u64,
    last_seq: Option<u64>,
    /// The last heartbeat was acknowledged.
    acked: bool,
    backoff: &'a mut Backoff,
    first: &'a mut Option<oneshot::Sender<Result<(), ChannelError>>>,
}

impl Link<'_> {
    async fn pump(&mut self, interval: Duration) -> Ended {
        let jitter: f64 = rand::rng().random_range(0.0..1.0);
        let mut next_beat = Instant::now() + interval.mul_f64(jitter);
        loop {
            tokio::select! {
                () = sleep_until(next_beat) => {
                    if !self.acked {
                        // A zombie connection: close with a non-1000 code so the session
                        // stays resumable, then resume.
                        let frame = CloseFrame { code: CloseCode::from(4000), reason: "zombie".into() };
                        let _ = timeout(Duration::from_secs(2), self.socket.close(Some(frame))).await;
                        return resume("no heartbeat ACK: zombie connection".into());
                    }
                    if let Err(ended) = self.heartbeat().await {
                        return ended;
                    }
                    next_beat = Instant::now() + interval;
                }
                frame = self.socket.next() => {
                    let text = match frame {
                        Some(Ok(WsMessage::Text(text))) => text,
                        Some(Ok(WsMessage::Close(frame))) => return closed(frame),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return resume(format!("gateway connection lost: {e}")),
                        None => return resume("gateway connection closed".into()),
                    };
                    if let Some(ended) = self.payload(&text).await {
                        return ended;
                    }
                }
            }
        }
    }

    async fn heartbeat(&mut self) -> Result<(), Ended> {
        let beat = json!({ "op": op::HEARTBEAT, "d": self.last_seq });
        self.acked = false;
        self.socket
            .send(WsMessage::Text(beat.to_string().into()))
            .await
            .map_err(|e| resume(format!("sending a heartbeat: {e}")))
    }

    /// Handles one frame; `Some` ends the connection.
    async fn payload(&mut self, text: &str) -> Option<Ended> {
        let payload: Payload = match serde_json::from_str(text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "discord: skipping an unreadable gateway frame");
                self.gateway
                    .health
                    .error(format!("unreadable gateway frame skipped: {e}"));
                return None;
            }
        };
        match payload.op {
            op::DISPATCH => self.dispatch(payload).await,
            op::HEARTBEAT => self.heartbeat().await.err(),
            op::HEARTBEAT_ACK => {
                self.acked = true;
                None
            }
            op::RECONNECT => Some(Ended::Resume {
                reason: "Discord asked for a reconnect (op 7)".into(),
                delay: Some(Duration::ZERO),
            }),
            op::INVALID_SESSION if payload.d.as_bool() == Some(true) => Some(Ended::Resume {
                reason: "invalid session, resumable (op 9)".into(),
                delay: Some(Duration::ZERO),
            }),
            op::INVALID_SESSION => {
                // The docs ask for a random 1–5 s wait before identifying again.
                let wait = rand::rng().random_range(1000..=5000);
                Some(Ended::Fresh {
                    reason: "invalid session (op 9)".into(),
                    delay: Some(Duration::from_millis(wait)),
                })
            }
            _ => None,
        }
    }

    async fn dispatch(&mut self, payload: Payload) -> Option<Ended> {
        if payload.s.is_some() {
            self.last_seq = payload.s;
        }
        let kind = payload.t.unwrap_or_default();
        self.gateway.health.event();
        match kind.as_str() {
            "READY" => match serde_json::from_value::<Ready>(payload.d.clone()) {
                Ok(ready) => {
                    tracing::info!(user = %ready.user.username, "discord: gateway ready");
                    self.gateway
                        .sessions
                        .begin(&ready.session_id, &ready.resume_gateway_url)
                        .await;
                    self.up();
                }
                Err(e) => {
                    return Some(Ended::Fresh {
                        reason: format!("unreadable READY: {e}"),
                        delay: None,
                    });
                }
            },
            "RESUMED" => {
                tracing::info!("discord: gateway session resumed");
                self.up();
            }
            _ => {}
        }
        let session_id = self.gateway.sessions.current().await.map(|s| s.session_id);
        let dispatch = Dispatch {
            conn: self.conn,
            session_id,
            seq: payload.s,
            kind,
            data: payload.d,
        };
        if self.gateway.dispatches.send(dispatch).is_err() {
            return Some(Ended::Fatal(ChannelError::Failed(
                "discord: the message handler stopped".into(),
            )));
        }
        None
    }

    fn up(&mut self) {
        self.gateway.health.connected();
        self.backoff.reset();
        if let Some(tx) = self.first.take() {
            let _ = tx.send(Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_and_encoding_go_on_the_gateway_url() {
        assert_eq!(
            with_query("wss://gateway.discord.gg"),
            "wss://gateway.discord.gg/?v=10&encoding=json"
        );
        assert_eq!(
            with_query("wss://g.example/"),
            "wss://g.example/?v=10&encoding=json"
        );
    }

    #[test]
    fn close_codes_decide_between_resume_identify_and_giving_up() {
        let frame = |code: u16| {
            Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            })
        };
        assert!(matches!(
            closed(frame(4004)),
            Ended::Fatal(ChannelError::Unauthorized { .. })
        ));
        assert!(
            matches!(closed(frame(4014)), Ended::Fatal(ChannelError::Setup(m)) if m.contains("Message Content"))
        );
        assert!(matches!(closed(frame(4009)), Ended::Fresh { .. }));
        assert!(matches!(closed(frame(4000)), Ended::Resume { .. }));
        assert!(matches!(closed(None), Ended::Resume { .. }));
    }
}
