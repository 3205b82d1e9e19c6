//! Email for the channel conformance suite: not a fake but a driver of the real mail system
//! in [`crate::mail`] (Dovecot and Postfix). Users write to the bot by handing mail to
//! Dovecot over LMTP, as the domain's mail exchanger would, with the exchanger's
//! `Authentication-Results` verdict on top; what the bot sent is read from each user's
//! maildir. Postfix's policy service holds or refuses (450) messages at the end of DATA.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mail_parser::{MessageParser, MimeHeaders};

use super::{FakeChat, FakePlatform, Posted, SentMessage};
use crate::mail::{DOMAIN, MailServers};

/// The bot's address and password.
pub const BOT: &str = "andy@example.test";
pub const BOT_PASSWORD: &str = "andy-pass";
/// Another program that mails the bot (and marks its mail as automatic, as RFC 3834 asks).
pub const OTHER_BOT: &str = "robot@example.test";
/// The receiving server's id in its `Authentication-Results` headers.
pub const AUTHSERV_ID: &str = "mx.example.test";

/// The mail system, driven.
pub struct FakeEmail {
    servers: Mutex<MailServers>,
    /// Raw mail by Message-ID (for redelivery).
    written: Mutex<HashMap<String, Vec<u8>>>,
    counter: AtomicU64,
    /// SMTP answers withheld.
    holding: std::sync::atomic::AtomicBool,
}

impl FakeEmail {
    pub async fn start() -> FakeEmail {
        let accounts: Vec<(String, String)> =
            std::iter::once((BOT.to_owned(), BOT_PASSWORD.to_owned()))
                .chain((1..=4).map(|n| (user(n), "user-pass".to_owned())))
                .chain(std::iter::once((
                    OTHER_BOT.to_owned(),
                    "robot-pass".to_owned(),
                )))
                .collect();
        let refs: Vec<(&str, &str)> = accounts
            .iter()
            .map(|(a, p)| (a.as_str(), p.as_str()))
            .collect();
        let servers = tokio::task::block_in_place(|| MailServers::start(&refs));
        FakeEmail {
            servers: Mutex::new(servers),
            written: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            holding: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn write(&self, from: &str, text: &str, extra_headers: &str, body: Option<String>) -> Posted {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let id = format!("m{n}.{}@{DOMAIN}", std::process::id());
        let body = body.unwrap_or_else(|| {
            format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n")
        });
        let raw = format!(
            "Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d={DOMAIN} header.s=s1\r\n\
From: {from}\r\nTo: {BOT}\r\nMessage-ID: <{id}>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n\
{extra_headers}MIME-Version: 1.0\r\n{body}"
        );
        self.deliver_raw(from, raw.as_bytes());
        self.written
            .lock()
            .unwrap()
            .insert(id.clone(), raw.into_bytes());
        Posted {
            chat_id: from.to_owned(),
            message_id: id,
        }
    }

    fn deliver_raw(&self, from: &str, raw: &[u8]) {
        let servers = self.servers.lock().unwrap();
        tokio::task::block_in_place(|| servers.deliver(BOT, from, raw));
    }
}

fn user(n: u32) -> String {
    format!("user{n}@{DOMAIN}")
}

#[async_trait]
impl FakePlatform for FakeEmail {
    fn channel(&self) -> &'static str {
        "email"
    }

    fn settings_toml(&self) -> String {
        let servers = self.servers.lock().unwrap();
        format!(
            r#"enabled = true
address = "{BOT}"
imap_host = "localhost"
imap_port = {imap}
smtp_host = "localhost"
smtp_port = {smtps}
ca_file = "{ca}"
allow_senders = ["@{DOMAIN}"]
trusted_authserv_id = "{AUTHSERV_ID}"
idle_secs = 30
smtp_retry_secs = 2
"#,
            imap = servers.imap_port,
            smtps = servers.smtps_port,
            ca = servers.ca_file().display()
        )
    }

    fn secrets(&self) -> Vec<(String, String)> {
        vec![("email.password".into(), BOT_PASSWORD.into())]
    }

    fn max_message_len(&self) -> usize {
        usize::MAX
    }

    fn has_group_chats(&self) -> bool {
        false
    }

    fn chat(&self, n: u32, _is_group: bool) -> FakeChat {
        FakeChat {
            platform_id: user(n),
            is_group: false,
            user_id: user(n),
            user_name: format!("User {n}"),
        }
    }

    async fn user_says(&self, chat: &FakeChat, text: &str, _mention: bool) -> Posted {
        self.write(&chat.user_id, text, "", None)
    }

    async fn user_sends_file(
        &self,
        chat: &FakeChat,
        file_name: &str,
        data: &[u8],
        caption: &str,
    ) -> Posted {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        let body = format!(
            "Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n--b0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\n{caption}\r\n--b0\r\n\
Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{file_name}\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--b0--\r\n"
        );
        self.write(&chat.user_id, caption, "", Some(body))
    }

    async fn other_bot_says(&self, _chat: &FakeChat, text: &str) -> Posted {
        self.write(OTHER_BOT, text, "Auto-Submitted: auto-generated\r\n", None)
    }

    async fn redeliver(&self, _chat: &FakeChat, message: &Posted) {
        let raw = self
            .written
            .lock()
            .unwrap()
            .get(&message.message_id)
            .cloned()
            .expect("a message this driver wrote");
        self.deliver_raw(&message.chat_id, &raw);
    }

    async fn push_malformed(&self, chat: &FakeChat) {
        // No From at all, then bytes that are no mail.
        self.deliver_raw(
            &chat.user_id,
            b"Subject: nobody sent this\r\n\r\nno sender\r\n",
        );
        self.deliver_raw(&chat.user_id, b"\x00\x01\xff\xfe garbage \r\n\r\n\xff");
    }

    async fn sent(&self, chat: &FakeChat) -> Vec<SentMessage> {
        let mails = self.servers.lock().unwrap().mailbox(&chat.user_id);
        mails
            .iter()
            .filter_map(|raw| {
                let message = MessageParser::default().parse(raw)?;
                let text = message
                    .body_text(0)
                    .map(|t| cut_quote(&t))
                    .unwrap_or_default();
                let files = message
                    .attachments()
                    .map(|a| {
                        (
                            a.attachment_name().unwrap_or("attachment").to_owned(),
                            a.contents().to_vec(),
                        )
                    })
                    .collect();
                Some(SentMessage {
                    chat: chat.platform_id.clone(),
                    text,
                    files,
                    thread: None,
                    reply_to: message
                        .in_reply_to()
                        .as_text()
                        .map(|id| id.trim_matches(['<', '>']).to_owned()),
                })
            })
            .collect()
    }

    async fn drop_connections(&self) {
        let mut servers = self.servers.lock().unwrap();
        tokio::task::block_in_place(|| servers.restart_dovecot());
    }

    fn connections(&self) -> u64 {
        self.servers.lock().unwrap().imap_logins()
    }

    fn rate_limit_sends(&self, count: u32, _retry_after: Duration) {
        // SMTP's 4xx says "later", not when: the channel waits `smtp_retry_secs` (2 s here).
        self.servers.lock().unwrap().policy.defer_next(count);
    }

    fn rate_limit_log(&self) -> Vec<(std::time::Instant, std::time::Instant)> {
        self.servers.lock().unwrap().policy.defer_log()
    }

    fn hold_sends(&self) {
        self.holding.store(true, Ordering::SeqCst);
        self.servers.lock().unwrap().policy.hold();
    }

    fn release_sends(&self) {
        self.holding.store(false, Ordering::SeqCst);
        self.servers.lock().unwrap().policy.release();
    }

    fn held_sends(&self) -> usize {
        self.servers.lock().unwrap().policy.held()
    }
}

/// The reply's own text: the quoted original below "… wrote:" cut off.
fn cut_quote(text: &str) -> String {
    let mut kept = Vec::new();
    for line in text.lines() {
        if line.trim_end().ends_with("wrote:") {
            break;
        }
        kept.push(line);
    }
    kept.join("\n").trim_end().to_owned()
}
