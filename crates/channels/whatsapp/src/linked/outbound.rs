//! Delivery as the linked account: Markdown to WhatsApp markup ([`crate::format`]), each
//! part of at most 4,096 characters prefixed `Name: ` (the assistant posts as the owner's
//! own number, so NanoClaw marks what it says), then one document per file, each part
//! through the send ledger. The first part quotes `reply_to` (in a group only when its
//! author is known: a quote names the author).
//!
//! **After a crash** a part in doubt is not sent again, as in Cloud mode: WhatsApp shows a
//! resent message twice, and nothing lists what the account sent. At most once for that
//! part, logged at warn.

use async_trait::async_trait;
use nanoclaw_channel::chunk::{self, Measure};
use nanoclaw_channel::{ChannelError, OutgoingFile, OutgoingMessage, SendAttempt, SendLedger};

use super::events::Me;
use crate::format::to_whatsapp;

/// The longest text WhatsApp shows as one message (as the Cloud API's limit).
pub const MAX_TEXT: usize = 4096;

/// What delivery needs from the connection (the live client, or a test double).
#[async_trait]
pub trait Sender: Send + Sync {
    /// Sends `text` to `chat`, quoting `quote` (a message id in that chat); returns the
    /// new message's id.
    async fn send_text(
        &self,
        chat: &str,
        text: &str,
        quote: Option<&str>,
    ) -> Result<String, ChannelError>;
    /// Uploads and sends a file as a document; returns the message id.
    async fn send_document(
        &self,
        chat: &str,
        file: &OutgoingFile,
        data: Vec<u8>,
    ) -> Result<String, ChannelError>;
}

/// The text parts of `markdown`, converted, prefixed, each within [`MAX_TEXT`].
pub fn text_parts(me: &Me, markdown: &str) -> Vec<String> {
    let text = to_whatsapp(markdown.trim_end());
    if text.trim().is_empty() {
        return Vec::new();
    }
    let prefix = me.prefix();
    let room = MAX_TEXT - prefix.chars().count();
    chunk::split(&text, room, Measure::Chars)
        .into_iter()
        .map(|part| format!("{prefix}{part}"))
        .collect()
}

/// Delivers `message` through `sender`; returns the first part's message id.
pub async fn deliver(
    sender: &dyn Sender,
    me: &Me,
    ledger: &dyn SendLedger,
    message: &OutgoingMessage,
    on_sent: &(dyn Fn(&str) + Send + Sync),
) -> Result<Option<String>, ChannelError> {
    let texts = text_parts(me, &message.text);
    let count = texts.len() + message.files.len();
    if count == 0 {
        tracing::debug!(key = %message.idempotency_key, "whatsapp: nothing to send");
        return Ok(None);
    }
    let key = &message.idempotency_key;
    let texts = &texts;
    nanoclaw_channel::send_parts(ledger, key, count, |index, attempt| async move {
        if attempt == SendAttempt::AfterCrash {
            tracing::warn!(
                key,
                part = index,
                "whatsapp: a part may or may not have been sent before the host stopped; not resending (WhatsApp would show it twice)"
            );
            return Ok(None);
        }
        let chat = &message.chat_id;
        let id = match texts.get(index) {
            Some(text) => {
                let quote = if index == 0 {
                    message.reply_to.as_deref()
                } else {
                    None
                };
                sender.send_text(chat, text, quote).await?
            }
            None => {
                let file = message
                    .files
                    .get(index - texts.len())
                    .ok_or_else(|| ChannelError::Failed(format!("{key}: part {index} does not exist")))?;
                let data = tokio::fs::read(&file.path).await.map_err(|e| {
                    ChannelError::Rejected {
                        platform: crate::NAME.to_string(),
                        detail: format!("reading {}: {e}", file.path.display()),
                    }
                })?;
                sender.send_document(chat, file, data).await?
            }
        };
        on_sent(&id);
        Ok(Some(id))
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use nanoclaw_channel::memory::MemoryLedger;
    use nanoclaw_channel::{PartState, SendLedger};

    use super::*;

    fn me(prefixed: bool) -> Me {
        Me {
            assistant_name: "Andy".into(),
            prefixed,
            ..Default::default()
        }
    }

    #[test]
    fn every_part_carries_the_name_and_fits() {
        let long: String = (0..1500).map(|i| format!("word{i} ")).collect();
        let parts = text_parts(&me(true), &format!("**Plan**\n{long}"));
        assert!(parts.len() > 1);
        for p in &parts {
            assert!(p.starts_with("Andy: "), "{}", &p[..20]);
            assert!(p.chars().count() <= MAX_TEXT);
        }
        assert!(
            parts[0].starts_with("Andy: *Plan*\nword0 "),
            "markup converted"
        );
        let words: usize = parts.iter().map(|p| p.split_whitespace().count() - 1).sum();
        assert_eq!(words, 1501, "nothing lost between parts");
        assert_eq!(text_parts(&me(false), "hi"), vec!["hi"]);
        assert!(text_parts(&me(true), "  \n").is_empty());
    }

    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<(String, String, Option<String>)>>,
        fail_at: Option<usize>,
    }

    #[async_trait]
    impl Sender for Recorder {
        async fn send_text(
            &self,
            chat: &str,
            text: &str,
            quote: Option<&str>,
        ) -> Result<String, ChannelError> {
            let mut sent = self.sent.lock().unwrap();
            if self.fail_at == Some(sent.len()) {
                return Err(ChannelError::Failed("connection reset mid-send".into()));
            }
            sent.push((chat.into(), text.into(), quote.map(str::to_string)));
            Ok(format!("3EB0{}", sent.len()))
        }
        async fn send_document(
            &self,
            chat: &str,
            file: &OutgoingFile,
            data: Vec<u8>,
        ) -> Result<String, ChannelError> {
            let mut sent = self.sent.lock().unwrap();
            sent.push((
                chat.into(),
                format!("{}:{}", file.file_name, data.len()),
                None,
            ));
            Ok(format!("3EB0{}", sent.len()))
        }
    }

    #[tokio::test]
    async fn parts_go_in_order_quoting_once_and_files_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, b"12345").unwrap();
        let recorder = Recorder::default();
        let ledger = MemoryLedger::default();
        let remembered = Mutex::new(Vec::new());
        let message = OutgoingMessage {
            idempotency_key: "k1".into(),
            chat_id: "16505551234@s.whatsapp.net".into(),
            text: "a".repeat(5000),
            reply_to: Some("3EB0QUOTED".into()),
            files: vec![OutgoingFile {
                file_name: "notes.txt".into(),
                path,
                mime_type: None,
            }],
            ..Default::default()
        };
        let first = deliver(&recorder, &me(true), &ledger, &message, &|id| {
            remembered.lock().unwrap().push(id.to_string())
        })
        .await
        .unwrap();
        assert_eq!(first.as_deref(), Some("3EB01"));
        let sent = recorder.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].2.as_deref(), Some("3EB0QUOTED"));
        assert_eq!(sent[1].2, None);
        assert!(sent[1].1.starts_with("Andy: "));
        assert_eq!(sent[2].1, "notes.txt:5");
        assert_eq!(
            *remembered.lock().unwrap(),
            vec!["3EB01", "3EB02", "3EB03"],
            "the assistant's ids are remembered so their echo is dropped"
        );
        // Delivered again (the host retried): nothing goes twice.
        deliver(&recorder, &me(true), &ledger, &message, &|_| {})
            .await
            .unwrap();
        assert_eq!(recorder.sent.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_part_in_doubt_is_not_sent_again() {
        let recorder = Recorder {
            fail_at: Some(1),
            ..Default::default()
        };
        let ledger = MemoryLedger::default();
        let message = OutgoingMessage {
            idempotency_key: "k2".into(),
            chat_id: "1@s.whatsapp.net".into(),
            text: "b ".repeat(3000),
            ..Default::default()
        };
        assert!(
            deliver(&recorder, &me(true), &ledger, &message, &|_| {})
                .await
                .is_err()
        );
        assert_eq!(ledger.part("k2", 1).await.unwrap(), PartState::InDoubt);
        let healthy = Recorder::default();
        deliver(&healthy, &me(true), &ledger, &message, &|_| {})
            .await
            .unwrap();
        assert!(
            healthy.sent.lock().unwrap().is_empty(),
            "the part that may have gone is not resent"
        );
        assert_eq!(ledger.part("k2", 1).await.unwrap(), PartState::Sent(None));
    }
}
