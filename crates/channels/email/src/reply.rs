//! Building the mail nanoclaw sends: a reply threads under the message it answers
//! (`In-Reply-To`, `References`, `Re:` subject) and quotes it below the answer the way mail
//! clients do; files go as attachments. The `Message-ID` is made from the message's
//! idempotency key, so a message sent again after a crash carries the same id (and the
//! channel can look for it before sending again).

use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// What the channel keeps of a message it received, to answer it properly later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    pub message_id: String,
    pub subject: String,
    pub references: Vec<String>,
    /// Who wrote it, as a `From` display (`Ada <ada@example.org>`).
    pub from: String,
    pub date: Option<String>,
    /// Its new text (quoted in the reply).
    pub text: String,
}

/// One file to attach.
#[derive(Debug, Clone)]
pub struct ReplyFile {
    pub name: String,
    pub mime_type: Option<String>,
    pub data: Vec<u8>,
}

/// Everything one outgoing mail needs.
#[derive(Debug, Clone)]
pub struct Draft<'a> {
    pub from: &'a Mailbox,
    pub to: &'a str,
    pub text: &'a str,
    /// The message this answers, if the channel still knows it.
    pub original: Option<&'a Original>,
    /// Subject when this answers nothing known.
    pub default_subject: &'a str,
    pub idempotency_key: &'a str,
    pub files: Vec<ReplyFile>,
}

/// Why a mail could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0:?} is not a mail address")]
    BadAddress(String),
    #[error("building the mail: {0}")]
    Build(#[from] lettre::error::Error),
}

/// The `Message-ID` (without angle brackets) of the mail sent for `idempotency_key` from
/// `from_address`.
pub fn message_id_for(idempotency_key: &str, from_address: &str) -> String {
    let domain = from_address
        .rsplit_once('@')
        .map_or("nanoclaw.invalid", |(_, d)| d);
    let digest = sha2::Sha256::digest(idempotency_key.as_bytes());
    format!("nanoclaw.{}@{domain}", &hex::encode(digest)[..32])
}

/// Longest `References` kept: the root and the newest, as RFC 5322 suggests trimming.
const MAX_REFERENCES: usize = 20;

/// The mail for `draft`.
pub fn build(draft: &Draft<'_>) -> Result<Message, BuildError> {
    let to: Mailbox = draft
        .to
        .parse()
        .map_err(|_| BuildError::BadAddress(draft.to.to_owned()))?;
    let message_id = message_id_for(draft.idempotency_key, draft.from.email.as_ref());
    let mut builder = Message::builder()
        .from(draft.from.clone())
        .to(to)
        .message_id(Some(format!("<{message_id}>")));
    let mut body = draft.text.trim_end().to_owned();
    match draft.original {
        Some(original) => {
            builder = builder.subject(re_subject(&original.subject));
            builder = builder.in_reply_to(format!("<{}>", original.message_id));
            let mut refs: Vec<&str> = original.references.iter().map(String::as_str).collect();
            refs.push(&original.message_id);
            if refs.len() > MAX_REFERENCES {
                let keep_from = refs.len() - (MAX_REFERENCES - 1);
                refs = std::iter::once(refs[0])
                    .chain(refs[keep_from..].iter().copied())
                    .collect();
            }
            let refs = refs
                .iter()
                .map(|r| format!("<{r}>"))
                .collect::<Vec<_>>()
                .join(" ");
            builder = builder.references(refs);
            body.push_str("\n\n");
            body.push_str(&quote(original));
        }
        None => builder = builder.subject(draft.default_subject),
    }
    let mut message = if draft.files.is_empty() {
        builder.singlepart(SinglePart::plain(body))?
    } else {
        let mut mixed = MultiPart::mixed().singlepart(SinglePart::plain(body));
        for file in &draft.files {
            let content_type = file
                .mime_type
                .as_deref()
                .and_then(|m| ContentType::parse(m).ok())
                .unwrap_or_else(|| {
                    ContentType::parse("application/octet-stream")
                        .unwrap_or(ContentType::TEXT_PLAIN)
                });
            mixed = mixed.singlepart(
                Attachment::new(file.name.clone()).body(file.data.clone(), content_type),
            );
        }
        builder.multipart(mixed)?
    };
    // RFC 3834: mail a program wrote says so, so that other programs (vacation replies,
    // other assistants) do not answer it and start a loop.
    message.headers_mut().insert_raw(HeaderValue::new(
        HeaderName::new_from_ascii_str("Auto-Submitted"),
        "auto-replied".to_owned(),
    ));
    Ok(message)
}

/// `Re: subject`, without piling up `Re: Re:`.
pub fn re_subject(subject: &str) -> String {
    let s = subject.trim();
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("re:") {
        s.to_owned()
    } else if s.is_empty() {
        "Re: (no subject)".to_owned()
    } else {
        format!("Re: {s}")
    }
}

/// The original below an attribution line, each line behind `> `.
pub fn quote(original: &Original) -> String {
    let when = original
        .date
        .as_deref()
        .map_or(String::new(), |d| format!("On {d}, "));
    let mut out = format!("{when}{} wrote:\n", original.from);
    for line in original.text.lines() {
        if line.is_empty() {
            out.push_str(">\n");
        } else {
            out.push_str("> ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn andy() -> Mailbox {
        "Andy <andy@example.net>".parse().unwrap()
    }

    fn original() -> Original {
        Original {
            message_id: "m2@example.org".into(),
            subject: "the engine".into(),
            references: vec!["m0@example.org".into(), "m1@example.net".into()],
            from: "Ada <ada@example.org>".into(),
            date: Some("2026-12-05T10:00:00Z".into()),
            text: "Run it tonight?\n\nIt is ready.".into(),
        }
    }

    fn text_of(message: &Message) -> String {
        String::from_utf8(message.formatted()).unwrap()
    }

    #[test]
    fn a_reply_threads_and_quotes() {
        let from = andy();
        let orig = original();
        let draft = Draft {
            from: &from,
            to: "ada@example.org",
            text: "Yes.",
            original: Some(&orig),
            default_subject: "unused",
            idempotency_key: "k1",
            files: vec![],
        };
        let mail = build(&draft).unwrap();
        let parsed = crate::parse::parse(&mail.formatted()).unwrap();
        assert_eq!(parsed.subject, "Re: the engine");
        assert_eq!(parsed.in_reply_to.as_deref(), Some("m2@example.org"));
        assert_eq!(
            parsed.references,
            ["m0@example.org", "m1@example.net", "m2@example.org"]
        );
        assert_eq!(parsed.message_id, message_id_for("k1", "andy@example.net"));
        // The new text is the answer; the quote is what mail clients fold away.
        assert_eq!(parsed.text, "Yes.");
        let raw = text_of(&mail);
        assert!(raw.contains("Ada <ada@example.org> wrote:"), "{raw}");
        assert!(raw.contains("> Run it tonight?"), "{raw}");
        assert!(raw.contains("Auto-Submitted: auto-replied"), "{raw}");
        assert!(parsed.automated);
    }

    #[test]
    fn the_same_key_gives_the_same_message_id() {
        assert_eq!(
            message_id_for("k", "a@x.org"),
            message_id_for("k", "a@x.org")
        );
        assert_ne!(
            message_id_for("k", "a@x.org"),
            message_id_for("k2", "a@x.org")
        );
        assert!(message_id_for("k", "a@x.org").ends_with("@x.org"));
    }

    #[test]
    fn files_are_attached() {
        let from = andy();
        let draft = Draft {
            from: &from,
            to: "ada@example.org",
            text: "the report",
            original: None,
            default_subject: "From Andy",
            idempotency_key: "k2",
            files: vec![ReplyFile {
                name: "report.bin".into(),
                mime_type: None,
                data: vec![0, 1, 255],
            }],
        };
        let parsed = crate::parse::parse(&build(&draft).unwrap().formatted()).unwrap();
        assert_eq!(parsed.subject, "From Andy");
        assert_eq!(parsed.files.len(), 1);
        assert_eq!(parsed.files[0].name, "report.bin");
        assert_eq!(parsed.files[0].data, [0, 1, 255]);
    }

    #[test]
    fn header_injection_in_the_subject_is_encoded_not_obeyed() {
        let from = andy();
        let mut orig = original();
        orig.subject = "hi\r\nBcc: victim@example.com".into();
        let draft = Draft {
            from: &from,
            to: "ada@example.org",
            text: "x",
            original: Some(&orig),
            default_subject: "",
            idempotency_key: "k3",
            files: vec![],
        };
        let raw = text_of(&build(&draft).unwrap());
        assert!(
            !raw.lines().any(|l| l.starts_with("Bcc:")),
            "a header was injected:\n{raw}"
        );
    }

    #[test]
    fn a_bad_recipient_is_an_error() {
        let from = andy();
        let draft = Draft {
            from: &from,
            to: "not an address",
            text: "x",
            original: None,
            default_subject: "s",
            idempotency_key: "k",
            files: vec![],
        };
        assert!(matches!(build(&draft), Err(BuildError::BadAddress(_))));
    }

    #[test]
    fn subjects_do_not_pile_up_re() {
        assert_eq!(re_subject("Re: x"), "Re: x");
        assert_eq!(re_subject("RE: x"), "RE: x");
        assert_eq!(re_subject("x"), "Re: x");
    }
}
