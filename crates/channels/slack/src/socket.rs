//! The Socket Mode receive loop (<https://api.slack.com/apis/socket-mode>).
//!
//! `apps.connections.open` gives a single-use `wss://` URL; Slack greets with `hello`, then
//! sends envelopes (`events_api`, `slash_commands`, `interactive`) that must be acknowledged
//! with `{"envelope_id":…}`. An envelope is acknowledged only once the host has settled the
//! message it carried, so a crash before that makes Slack redeliver it (`retry_attempt`).
//! The read loop does not wait for that: each message's answer is awaited in a task of its
//! own, which queues the envelope's ack for the loop to send (up to 256 messages in flight;
//! then the loop waits for the host). Acks therefore go out in the order the host answers,
//! which Slack does not mind: each names its envelope. A
//! `disconnect` message (`refresh_requested`, `warning`, `link_disabled`) gets a new
//! connection opened before the old one is closed; a dropped socket reconnects with backoff.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nanoclaw_channel::{
    Attachment, Backoff, ChannelError, ChannelEvent, DEFAULT_IN_FLIGHT, HealthCell, InboundEvent,
    InboundSink,
};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::PLATFORM;
use crate::api::{Api, ApiError, Identity};
use crate::events::{Classified, MessageEvent, Verdict, message_id};
use crate::seen::{Check, Seen, settled};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long Slack may take to say `hello` on a new connection.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("socket mode connection: {0}")]
    Socket(String),
}

impl ConnectError {
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ConnectError::Api(e) if e.is_unauthorized())
    }

    pub fn into_channel_error(self) -> ChannelError {
        match self {
            ConnectError::Api(e) => e.into(),
            ConnectError::Socket(s) => ChannelError::Failed(s),
        }
    }
}

/// TLS with the system's roots and an explicit provider, so it never depends on which
/// rustls provider other crates in the build enabled.
fn tls_connector() -> Result<Connector, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the store cannot use is skipped; the others still verify Slack.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Socket(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

/// Opens a Socket Mode connection and waits for Slack's `hello`.
pub async fn connect(api: &Api) -> Result<Ws, ConnectError> {
    let url = api.open_connection().await?;
    let connector = if url.starts_with("wss:") {
        Some(tls_connector()?)
    } else {
        None
    };
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, false, connector)
            .await
            .map_err(|e| ConnectError::Socket(format!("connecting the websocket: {e}")))?;
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(text)) => {
                    let kind = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v.get("type")?.as_str().map(str::to_string));
                    return match kind.as_deref() {
                        Some("hello") => Ok(()),
                        other => Err(format!("expected hello, got {other:?}")),
                    };
                }
                Ok(Message::Close(frame)) => return Err(format!("closed before hello: {frame:?}")),
                Ok(_) => {}
                Err(e) => return Err(format!("before hello: {e}")),
            }
        }
        Err("closed before hello".to_string())
    })
    .await;
    match hello {
        Ok(Ok(())) => Ok(ws),
        Ok(Err(e)) => Err(ConnectError::Socket(e)),
        Err(_) => Err(ConnectError::Socket("no hello from slack".into())),
    }
}

/// A Socket Mode message; everything but `type` is optional so any envelope can be
/// acknowledged even when its payload is not understood.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    envelope_id: Option<String>,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    retry_attempt: Option<u64>,
}

/// How a connection ended.
enum End {
    /// Slack asked us to move; the new connection is already open.
    Moved(Box<Ws>),
    /// The connection broke (or moving failed): reconnect after a backoff.
    Broken(String),
    /// The credentials were refused: give up until restarted.
    Refused(String),
}

/// The receive loop's state, shared with the tasks that wait for the host's answers.
pub struct Receiver {
    pub api: Arc<Api>,
    pub me: Identity,
    pub sink: InboundSink,
    pub health: Arc<HealthCell>,
    pub seen: Arc<Seen>,
    pub max_attachment_bytes: u64,
    /// Messages handed to the host and not answered yet (see [`Receiver::new`]).
    in_flight: Arc<Semaphore>,
}

impl Receiver {
    /// A receive loop that keeps at most [`DEFAULT_IN_FLIGHT`] messages unanswered by the
    /// host; past that it stops reading until one is answered.
    pub fn new(
        api: Arc<Api>,
        me: Identity,
        sink: InboundSink,
        health: Arc<HealthCell>,
        seen: Arc<Seen>,
        max_attachment_bytes: u64,
    ) -> Receiver {
        Receiver {
            api,
            me,
            sink,
            health,
            seen,
            max_attachment_bytes,
            in_flight: Arc::new(Semaphore::new(DEFAULT_IN_FLIGHT)),
        }
    }

    /// Runs until stopped (the task is aborted) or the credentials are refused.
    pub async fn run(self, first: Option<Ws>) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(60));
        // Acknowledgements go out on whichever connection is live when the host answers.
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<String>();
        let mut next = first;
        loop {
            let ws = match next.take() {
                Some(ws) => ws,
                None => match connect(&self.api).await {
                    Ok(ws) => ws,
                    Err(e) if e.is_unauthorized() => {
                        tracing::error!(error = %e, "slack refused the credentials");
                        self.health.down(e.to_string());
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "slack socket mode connect failed");
                        self.health.reconnecting(e.to_string());
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                },
            };
            self.health.connected();
            backoff.reset();
            match self.session(ws, &ack_tx, &mut ack_rx).await {
                End::Moved(ws) => next = Some(*ws),
                End::Broken(e) => {
                    tracing::warn!(error = %e, "slack socket mode connection lost");
                    self.health.reconnecting(e);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                End::Refused(e) => {
                    tracing::error!(error = %e, "slack refused the credentials");
                    self.health.down(e);
                    return;
                }
            }
        }
    }

    async fn session(
        &self,
        mut ws: Ws,
        ack_tx: &mpsc::UnboundedSender<String>,
        ack_rx: &mut mpsc::UnboundedReceiver<String>,
    ) -> End {
        loop {
            tokio::select! {
                msg = ws.next() => match msg {
                    None => return End::Broken("socket closed".into()),
                    Some(Err(e)) => return End::Broken(format!("socket error: {e}")),
                    Some(Ok(Message::Text(text))) => {
                        if let Some(reason) = self.on_text(&text, ack_tx).await {
                            return self.move_connection(ws, &reason).await;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return End::Broken(format!("closed by slack: {frame:?}"));
                    }
                    // Pings are answered by tungstenite itself.
                    Some(Ok(_)) => {}
                },
                Some(id) = ack_rx.recv() => {
                    let ack = serde_json::json!({ "envelope_id": id }).to_string();
                    if let Err(e) = ws.send(Message::text(ack)).await {
                        // Unacknowledged, Slack redelivers it; the duplicate is settled then.
                        return End::Broken(format!("sending an ack: {e}"));
                    }
                }
            }
        }
    }

    /// Opens the next connection, then closes the old one, so no event falls in between.
    async fn move_connection(&self, mut old: Ws, reason: &str) -> End {
        tracing::info!(reason, "slack asked to reconnect");
        let next = connect(&self.api).await;
        // Best effort: the old link is going away whatever it answers.
        let _ = tokio::time::timeout(Duration::from_secs(2), old.close(None)).await;
        match next {
            Ok(ws) => End::Moved(Box::new(ws)),
            Err(e) if e.is_unauthorized() => End::Refused(e.to_string()),
            Err(e) => End::Broken(format!("reconnecting after disconnect ({reason}): {e}")),
        }
    }

    /// Handles one text frame; returns the reason when Slack asks to disconnect.
    async fn on_text(&self, text: &str, ack_tx: &mpsc::UnboundedSender<String>) -> Option<String> {
        let envelope: Envelope = match serde_json::from_str(text) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a socket mode message that is not an envelope");
                self.health
                    .error(format!("malformed socket mode message: {e}"));
                return None;
            }
        };
        match envelope.kind.as_str() {
            "hello" => self.health.connected(),
            "disconnect" => return Some(envelope.reason.unwrap_or_else(|| "unknown".into())),
            "events_api" => {
                self.health.event();
                self.on_events_api(envelope, ack_tx).await;
            }
            other => {
                // Slash commands and interactivity are not used; acknowledged so Slack does
                // not retry them.
                tracing::debug!(kind = other, "ignoring a socket mode envelope");
                if let Some(id) = envelope.envelope_id {
                    let _ = ack_tx.send(id);
                }
            }
        }
        None
    }

    async fn on_events_api(&self, envelope: Envelope, ack_tx: &mpsc::UnboundedSender<String>) {
        let Some(envelope_id) = envelope.envelope_id else {
            tracing::warn!("skipping an events_api envelope without envelope_id");
            return;
        };
        let event = envelope
            .payload
            .and_then(|mut p| p.get_mut("event").map(Value::take))
            .ok_or_else(|| "no payload.event".to_string())
            .and_then(|e| serde_json::from_value::<MessageEvent>(e).map_err(|e| e.to_string()));
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                // Acknowledged anyway: a payload we cannot read would be redelivered forever.
                tracing::warn!(envelope_id, error = %e, "skipping a malformed slack event");
                self.health.error(format!("malformed slack event: {e}"));
                let _ = ack_tx.send(envelope_id);
                return;
            }
        };
        let facts = match event.classify(&self.me) {
            Verdict::Skip(why) => {
                tracing::debug!(
                    channel = event.channel,
                    ts = event.ts,
                    why,
                    "skipping event"
                );
                let _ = ack_tx.send(envelope_id);
                return;
            }
            Verdict::Deliver(facts) => facts,
        };
        let id = message_id(&event.channel, &event.ts);
        if let Check::Duplicate(outcome) = self.seen.check(&id) {
            tracing::debug!(id, retry = ?envelope.retry_attempt, "message seen already");
            let ack_tx = ack_tx.clone();
            tokio::spawn(async move {
                if settled(outcome).await {
                    let _ = ack_tx.send(envelope_id);
                }
            });
            return;
        }
        let inbound = self.inbound(&event, facts, &id).await;
        self.forward(inbound, id, envelope_id, ack_tx).await;
    }

    /// Hands the message to the host; the envelope is acknowledged once the host settled it.
    async fn forward(
        &self,
        mut inbound: InboundEvent,
        id: String,
        envelope_id: String,
        ack_tx: &mpsc::UnboundedSender<String>,
    ) {
        // Backpressure: at most `DEFAULT_IN_FLIGHT` messages wait for the host at a time;
        // a permit is released when the host has answered.
        let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else {
            // The semaphore is never closed; if it were, Slack would redeliver.
            self.seen.settle(&id, false);
            return;
        };
        let (tx, rx) = oneshot::channel();
        inbound.ack = Some(tx);
        if self
            .sink
            .send(ChannelEvent::Inbound(inbound))
            .await
            .is_err()
        {
            tracing::warn!(
                id,
                "the host is not listening; leaving the envelope for redelivery"
            );
            self.seen.settle(&id, false);
            return;
        }
        let seen = self.seen.clone();
        let ack_tx = ack_tx.clone();
        // The host's answer is awaited here, off the read loop, which goes on reading (and
        // sending the acks of messages settled meanwhile).
        tokio::spawn(async move {
            let ok = rx.await.is_ok_and(|outcome| outcome.is_settled());
            drop(permit);
            seen.settle(&id, ok);
            if ok {
                let _ = ack_tx.send(envelope_id);
            } else {
                tracing::warn!(
                    id,
                    "the host did not store the message; slack will redeliver it"
                );
            }
        });
    }

    async fn inbound(&self, event: &MessageEvent, facts: Classified, id: &str) -> InboundEvent {
        let mut text = event.text.clone().unwrap_or_default();
        let mut attachments = Vec::new();
        for file in &event.files {
            let name = file.name.clone().unwrap_or_else(|| "file".into());
            match self.fetch(file).await {
                Ok(Some(data)) => attachments.push(Attachment {
                    file_name: name,
                    mime_type: file.mimetype.clone(),
                    data,
                }),
                Ok(None) => text.push_str(&format!(
                    "\n[attachment {name} skipped: larger than {} bytes]",
                    self.max_attachment_bytes
                )),
                Err(e) => {
                    tracing::warn!(file = name, error = %e, "could not download a slack file");
                    text.push_str(&format!("\n[attachment {name} could not be downloaded]"));
                }
            }
        }
        InboundEvent {
            channel: PLATFORM.to_string(),
            chat_id: event.channel.clone(),
            // Names need conversations.info / users.info; the ids are used instead.
            chat_name: event.channel.clone(),
            is_group: !facts.is_dm,
            thread: facts.thread,
            platform_msg_id: id.to_string(),
            sender: facts.sender,
            sender_name: event.username.clone(),
            text,
            received_at: ts_to_ms(&event.ts).unwrap_or_else(nanoclaw_channel::now_ms),
            mentions_me: facts.mentions_me,
            from_bot: facts.from_bot,
            attachments,
            ack: None,
        }
    }

    async fn fetch(
        &self,
        file: &crate::events::SlackFile,
    ) -> Result<Option<bytes::Bytes>, ApiError> {
        if file.size.is_some_and(|s| s > self.max_attachment_bytes) {
            return Ok(None);
        }
        let Some(url) = file.url_private_download.as_deref() else {
            return Err(ApiError::Malformed {
                method: "files".into(),
                detail: "no url_private_download".into(),
            });
        };
        self.api.download(url, self.max_attachment_bytes).await
    }
}

/// A Slack `ts` ("1700000000.000100", seconds) as unix milliseconds.
fn ts_to_ms(ts: &str) -> Option<i64> {
    let secs: f64 = ts.parse().ok()?;
    Some((secs * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wss_connector_builds_with_an_explicit_provider() {
        // Real Slack URLs are wss://; the fake is plain ws://, so this is the TLS path's check.
        assert!(matches!(tls_connector(), Ok(Connector::Rustls(_))));
    }

    #[test]
    fn slack_timestamps_become_milliseconds() {
        assert_eq!(ts_to_ms("1700000000.000100"), Some(1_700_000_000_000));
        assert_eq!(ts_to_ms("not a ts"), None);
    }
}
