//! One raw RFC 5322 message (as IMAP hands it over) read into what the channel needs:
//! sender, threading headers, the new text (HTML reduced to text, the quoted history cut
//! off) and attachments. Everything here is untrusted input: nothing panics on it, and a
//! message missing what a reply needs is reported, not guessed.

use mail_parser::{MessageParser, MimeHeaders};

/// A file that came with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFile {
    /// As the sender named it (untrusted: the host sanitizes it).
    pub name: String,
    pub mime_type: Option<String>,
    pub data: Vec<u8>,
}

/// What the channel reads from one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMail {
    /// `Message-ID` without angle brackets.
    pub message_id: String,
    /// The sender's address, lowercased (the `From` header's first address).
    pub from: String,
    pub from_name: Option<String>,
    pub subject: String,
    /// `In-Reply-To`, without angle brackets.
    pub in_reply_to: Option<String>,
    /// `References`, oldest first, without angle brackets.
    pub references: Vec<String>,
    /// The new text of the message: the plain-text body (or the HTML body reduced to text),
    /// the quoted history below an "On … wrote:" line cut off.
    pub text: String,
    /// `Date` as RFC 3339, when the message has a readable one.
    pub date: Option<String>,
    /// Every `Authentication-Results` header, in order (topmost first: the one the receiving
    /// server added last).
    pub authentication_results: Vec<String>,
    /// `Auto-Submitted` other than `no`, or a `List-Id`/`Precedence: bulk|list|junk`: mail a
    /// machine sent, which must never be answered (RFC 3834).
    pub automated: bool,
    pub files: Vec<MailFile>,
}

impl InboundMail {
    /// The conversation this message belongs to: the first `References` entry, else what it
    /// replies to, else the message itself.
    pub fn thread_root(&self) -> &str {
        self.references
            .first()
            .or(self.in_reply_to.as_ref())
            .map_or(self.message_id.as_str(), String::as_str)
    }
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a readable RFC 5322 message")]
    Unreadable,
    #[error("the message has no From address")]
    NoSender,
}

/// Reads a raw message. A message without a `Message-ID` gets one made from a hash of its
/// bytes (the same message read twice gets the same id, so deduplication still works).
pub fn parse(raw: &[u8]) -> Result<InboundMail, ParseError> {
    let message = MessageParser::default()
        .parse(raw)
        .ok_or(ParseError::Unreadable)?;
    if message.headers().is_empty() {
        return Err(ParseError::Unreadable);
    }
    let from_addr = message
        .from()
        .and_then(|a| a.first())
        .ok_or(ParseError::NoSender)?;
    let from = from_addr
        .address()
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| a.contains('@') && !a.chars().any(char::is_whitespace))
        .ok_or(ParseError::NoSender)?;
    let message_id = match message.message_id() {
        Some(id) if !id.trim().is_empty() => strip_angles(id),
        _ => {
            use sha2::Digest;
            format!(
                "sha256-{}@nanoclaw.invalid",
                hex::encode(sha2::Sha256::digest(raw))
            )
        }
    };
    let in_reply_to = header_ids(message.in_reply_to()).into_iter().next();
    let references = header_ids(message.references());
    let text = message
        .body_text(0)
        .map(|t| cut_quoted_history(&t))
        .unwrap_or_default();
    let mut authentication_results = Vec::new();
    let mut automated = false;
    for (name, value) in message.headers_raw() {
        let value = unfold(value);
        match name.to_ascii_lowercase().as_str() {
            "authentication-results" => authentication_results.push(value),
            "auto-submitted" => automated |= !value.trim().eq_ignore_ascii_case("no"),
            "list-id" => automated = true,
            "precedence" => {
                let v = value.trim().to_ascii_lowercase();
                automated |= matches!(v.as_str(), "bulk" | "list" | "junk");
            }
            _ => {}
        }
    }
    let files = message
        .attachments()
        .map(|part| MailFile {
            name: part
                .attachment_name()
                .map(str::to_owned)
                .unwrap_or_else(|| "attachment".to_owned()),
            mime_type: part.content_type().map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_owned(),
            }),
            data: part.contents().to_vec(),
        })
        .collect();
    Ok(InboundMail {
        message_id,
        from,
        from_name: from_addr.name().map(str::to_owned),
        subject: message.subject().unwrap_or_default().trim().to_owned(),
        in_reply_to,
        references,
        text,
        date: message.date().map(|d| d.to_rfc3339()),
        authentication_results,
        automated,
        files,
    })
}

fn strip_angles(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// Message ids in a header mail-parser read as one id or a list.
fn header_ids(value: &mail_parser::HeaderValue<'_>) -> Vec<String> {
    if let Some(list) = value.as_text_list() {
        list.iter().map(|id| strip_angles(id)).collect()
    } else if let Some(one) = value.as_text() {
        one.split_whitespace().map(strip_angles).collect()
    } else {
        Vec::new()
    }
    .into_iter()
    .filter(|id| !id.is_empty())
    .collect()
}

/// A raw header value on one line (folding whitespace joined).
fn unfold(raw: &str) -> String {
    raw.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text above the quoted history: everything from an "On … wrote:" line (or the first
/// line of a trailing block of `>` lines) on is cut.
pub fn cut_quoted_history(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    // A trailing block of quoted (or blank) lines.
    while end > 0 && (lines[end - 1].trim().is_empty() || lines[end - 1].starts_with('>')) {
        end -= 1;
    }
    let quoted_tail = end < lines.len() && lines[end..].iter().any(|l| l.starts_with('>'));
    if quoted_tail && end > 0 {
        let attribution = lines[end - 1].trim();
        if attribution.ends_with("wrote:") {
            end -= 1;
        }
    } else if !quoted_tail {
        end = lines.len();
    }
    lines[..end].join("\n").trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const REPLY: &str = "From: Ada Lovelace <Ada@Example.org>\r\n\
To: andy@example.net\r\n\
Subject: Re: the engine\r\n\
Message-ID: <m2@example.org>\r\n\
In-Reply-To: <m1@example.net>\r\n\
References: <m0@example.org> <m1@example.net>\r\n\
Date: Sat, 05 Dec 2026 10:00:00 +0000\r\n\
Authentication-Results: mx.example.net; dkim=pass header.d=example.org\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Yes, run it tonight.\r\n\
\r\n\
On Fri, Dec 4, 2026, Andy wrote:\r\n\
> Shall I run the engine?\r\n\
> It is ready.\r\n";

    #[test]
    fn a_reply_is_read_with_its_thread_and_without_the_quote() {
        let mail = parse(REPLY.as_bytes()).unwrap();
        assert_eq!(mail.from, "ada@example.org");
        assert_eq!(mail.from_name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(mail.message_id, "m2@example.org");
        assert_eq!(mail.in_reply_to.as_deref(), Some("m1@example.net"));
        assert_eq!(mail.references, ["m0@example.org", "m1@example.net"]);
        assert_eq!(mail.thread_root(), "m0@example.org");
        assert_eq!(mail.text, "Yes, run it tonight.");
        assert_eq!(
            mail.authentication_results,
            ["mx.example.net; dkim=pass header.d=example.org"]
        );
        assert!(!mail.automated);
    }

    #[test]
    fn html_only_mail_becomes_text() {
        let raw = "From: a@example.org\r\nMessage-ID: <h@x>\r\nContent-Type: text/html\r\n\r\n\
<html><body><p>Hello <b>there</b></p><script>x()</script></body></html>\r\n";
        let mail = parse(raw.as_bytes()).unwrap();
        assert!(mail.text.contains("Hello there"), "{:?}", mail.text);
        assert!(!mail.text.contains('<'), "{:?}", mail.text);
    }

    #[test]
    fn attachments_are_read_with_their_names() {
        let raw = "From: a@example.org\r\nMessage-ID: <f@x>\r\nSubject: files\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nAAH/\r\n--b--\r\n";
        let mail = parse(raw.as_bytes()).unwrap();
        assert_eq!(mail.text, "see attached");
        assert_eq!(mail.files.len(), 1);
        assert_eq!(mail.files[0].name, "data.bin");
        assert_eq!(mail.files[0].data, [0u8, 1, 255]);
        assert_eq!(
            mail.files[0].mime_type.as_deref(),
            Some("application/octet-stream")
        );
    }

    #[test]
    fn machine_mail_is_marked_automated() {
        for header in [
            "Auto-Submitted: auto-replied",
            "Precedence: bulk",
            "List-Id: <list.example.org>",
        ] {
            let raw = format!("From: a@example.org\r\n{header}\r\n\r\nout of office\r\n");
            assert!(parse(raw.as_bytes()).unwrap().automated, "{header}");
        }
        let raw = "From: a@example.org\r\nAuto-Submitted: no\r\n\r\nhi\r\n";
        assert!(!parse(raw.as_bytes()).unwrap().automated);
    }

    #[test]
    fn garbage_and_senderless_mail_are_errors_not_panics() {
        assert!(parse(b"").is_err());
        assert_eq!(
            parse(b"Subject: no sender\r\n\r\nbody").unwrap_err(),
            ParseError::NoSender
        );
        assert_eq!(
            parse(b"From: not an address\r\n\r\nbody").unwrap_err(),
            ParseError::NoSender
        );
        // Invalid UTF-8 and binary junk parse or fail, never panic.
        let _ = parse(&[0xff, 0xfe, b'\n', 0, 1, 2, b':', b'\r']);
    }

    #[test]
    fn a_message_without_an_id_gets_a_stable_one() {
        let raw = b"From: a@example.org\r\n\r\nhi\r\n";
        let first = parse(raw).unwrap().message_id;
        assert_eq!(first, parse(raw).unwrap().message_id);
        assert!(first.starts_with("sha256-"));
    }

    #[test]
    fn quoted_history_is_cut_only_at_the_tail() {
        assert_eq!(
            cut_quoted_history("> a quote first\nthen my answer"),
            "> a quote first\nthen my answer"
        );
        assert_eq!(cut_quoted_history("answer\n\n> old\n>\n"), "answer");
        assert_eq!(cut_quoted_history("no quote at all\n"), "no quote at all");
    }
}
