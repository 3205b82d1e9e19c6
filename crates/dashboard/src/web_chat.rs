//! The web chat's live side: browsers open a Server-Sent Events stream per chat, and the
//! host's replies and progress for that chat go to every stream open on it. A reply with no
//! browser open is refused as not connected, so it stays queued and arrives when one opens.

use std::collections::HashMap;
use std::sync::Mutex;

use nanoclaw_channel::{ChannelError, OutgoingMessage, Progress};
use serde::Serialize;
use tokio::sync::mpsc;

/// Events a browser's stream may hold unread before it counts as gone.
const STREAM_BUFFER: usize = 256;

/// What a browser is told about its chat.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WebEvent {
    /// A reply or message for the chat (the outbound row's id, to show it once).
    Message { id: i64, kind: String, text: String },
    /// A turn started on the chat's messages.
    Working,
    /// Streamed text of the reply being written.
    Delta { text: String },
    /// The agent used a tool.
    Tool { tool: String, summary: String },
}

/// The open streams, by chat id.
#[derive(Default)]
pub struct Subscribers {
    streams: Mutex<HashMap<String, Vec<mpsc::Sender<WebEvent>>>>,
}

impl Subscribers {
    /// Opens a stream on `chat_id`.
    pub fn subscribe(&self, chat_id: &str) -> mpsc::Receiver<WebEvent> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        if let Ok(mut streams) = self.streams.lock() {
            streams.entry(chat_id.to_owned()).or_default().push(tx);
        }
        rx
    }

    /// Ends every stream (the dashboard stops): each browser's `EventSource` sees its stream
    /// end, and the connection can close instead of waiting on a stream that never ends.
    pub fn close_all(&self) {
        if let Ok(mut streams) = self.streams.lock() {
            streams.clear();
        }
    }

    /// Streams open now, over every chat.
    pub fn open(&self) -> usize {
        self.streams.lock().map_or(0, |mut streams| {
            streams.retain(|_, senders| {
                senders.retain(|s| !s.is_closed());
                !senders.is_empty()
            });
            streams.values().map(Vec::len).sum()
        })
    }

    /// Sends `event` to every stream open on `chat_id`; how many took it. Closed or
    /// hopelessly behind streams are dropped.
    fn send(&self, chat_id: &str, event: &WebEvent) -> usize {
        let Ok(mut streams) = self.streams.lock() else {
            return 0;
        };
        let Some(senders) = streams.get_mut(chat_id) else {
            return 0;
        };
        senders.retain(|s| s.try_send(event.clone()).is_ok());
        let took = senders.len();
        if took == 0 {
            streams.remove(chat_id);
        }
        took
    }

    /// Delivers a reply to the browsers open on its chat.
    pub fn deliver(&self, message: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
        let mut text = message.text.clone();
        for file in &message.files {
            // Files are not offered for download (yet): the chat says one was sent.
            text.push_str(&format!("\n[file: {}]", file.file_name));
        }
        let event = WebEvent::Message {
            id: message.outbound_id,
            kind: message.kind.clone(),
            text,
        };
        match self.send(&message.chat_id, &event) {
            0 => Err(ChannelError::NotConnected(format!(
                "no browser has the web chat {:?} open",
                message.chat_id
            ))),
            _ => Ok(Some(format!("web-{}", message.outbound_id))),
        }
    }

    /// Shows a turn's progress to the browsers open on `chat_id` (best effort).
    pub fn progress(&self, chat_id: &str, progress: &Progress) {
        let event = match progress {
            Progress::Working => WebEvent::Working,
            Progress::TextDelta(text) => WebEvent::Delta { text: text.clone() },
            Progress::Tool { tool, summary } => WebEvent::Tool {
                tool: tool.clone(),
                summary: summary.clone(),
            },
        };
        self.send(chat_id, &event);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reply(chat: &str, id: i64) -> OutgoingMessage {
        OutgoingMessage {
            outbound_id: id,
            chat_id: chat.into(),
            text: "hello".into(),
            kind: "reply".into(),
            ..OutgoingMessage::default()
        }
    }

    #[tokio::test]
    async fn a_reply_reaches_every_browser_on_its_chat_and_no_other() {
        let subs = Subscribers::default();
        let mut a = subs.subscribe("main");
        let mut b = subs.subscribe("main");
        let mut other = subs.subscribe("family");
        subs.deliver(&reply("main", 7)).unwrap();
        for rx in [&mut a, &mut b] {
            match rx.recv().await.unwrap() {
                WebEvent::Message { id, text, .. } => assert_eq!((id, text.as_str()), (7, "hello")),
                e => panic!("{e:?}"),
            }
        }
        assert!(other.try_recv().is_err());
    }

    #[test]
    fn with_no_browser_open_the_reply_stays_queued() {
        let subs = Subscribers::default();
        let err = subs.deliver(&reply("main", 1)).unwrap_err();
        assert!(err.never_reached_platform(), "{err}");
        let rx = subs.subscribe("main");
        drop(rx);
        assert!(
            subs.deliver(&reply("main", 2)).is_err(),
            "a closed tab counts as gone"
        );
        assert_eq!(subs.open(), 0);
    }
}
