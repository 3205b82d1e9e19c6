//! Delivery through the Cloud API
//! (<https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages>,
//! <https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media>): text in
//! parts of at most 4,096 characters, then one `document` message per file (uploaded first
//! with `POST /{phone_number_id}/media`), each part through the send ledger. The first part
//! quotes `reply_to` (`context.message_id`). A chat id of digits is a user's number; any
//! other is a group made with the Groups API (`recipient_type: group`).
//!
//! **After a crash** a part in doubt ([`SendAttempt::AfterCrash`]) is *not* sent again: the
//! Cloud API takes no idempotency key and cannot list what the business sent, so a resend
//! could show it twice. That part is at most once, logged at warn. A part WhatsApp refused
//! (429, 4xx) or that never left is forgotten by the ledger and sent fresh next time.

use nanoclaw_channel::chunk::{self, Measure};
use nanoclaw_channel::{ChannelError, OutgoingFile, OutgoingMessage, SendAttempt, SendLedger};
use serde_json::{Value, json};

use crate::api::{Api, ApiError};
use crate::format::to_whatsapp;

/// The longest text body WhatsApp takes.
pub const MAX_TEXT: usize = 4096;

/// Whether `chat_id` is a group (a Groups API id) rather than a user's number.
pub fn is_group_id(chat_id: &str) -> bool {
    !chat_id.chars().all(|c| c.is_ascii_digit() || c == '+')
}

/// The addressing part of a message body.
fn envelope(chat_id: &str) -> Value {
    if is_group_id(chat_id) {
        json!({"messaging_product": "whatsapp", "recipient_type": "group", "to": chat_id})
    } else {
        json!({"messaging_product": "whatsapp", "recipient_type": "individual",
               "to": chat_id.trim_start_matches('+')})
    }
}

struct Plan<'a> {
    api: &'a Api,
    chat: &'a str,
    reply_to: Option<&'a str>,
    texts: Vec<String>,
    files: &'a [OutgoingFile],
}

pub async fn deliver(
    api: &Api,
    ledger: &dyn SendLedger,
    message: &OutgoingMessage,
) -> Result<Option<String>, ChannelError> {
    let text = to_whatsapp(message.text.trim_end());
    let plan = Plan {
        api,
        chat: &message.chat_id,
        reply_to: message.reply_to.as_deref(),
        texts: if text.trim().is_empty() {
            Vec::new()
        } else {
            chunk::split(&text, MAX_TEXT, Measure::Chars)
        },
        files: &message.files,
    };
    let count = plan.texts.len() + plan.files.len();
    if count == 0 {
        tracing::debug!(key = %message.idempotency_key, "whatsapp: nothing to send");
        return Ok(None);
    }
    let plan = &plan;
    let key = &message.idempotency_key;
    nanoclaw_channel::send_parts(ledger, key, count, |i, attempt| {
        send_part(plan, key, i, attempt)
    })
    .await
}

async fn send_part(
    plan: &Plan<'_>,
    key: &str,
    index: usize,
    attempt: SendAttempt,
) -> Result<Option<String>, ChannelError> {
    if attempt == SendAttempt::AfterCrash {
        tracing::warn!(
            key,
            part = index,
            "whatsapp: a part may or may not have been sent before the host stopped; not resending (the Cloud API cannot deduplicate)"
        );
        return Ok(None);
    }
    let mut body = envelope(plan.chat);
    if index == 0
        && let Some(reply_to) = plan.reply_to
    {
        body["context"] = json!({"message_id": reply_to});
    }
    let sent = match plan.texts.get(index) {
        Some(text) => {
            body["type"] = json!("text");
            body["text"] = json!({"body": text, "preview_url": false});
            plan.api.send_message(&body).await
        }
        None => {
            let file = plan.files.get(index - plan.texts.len()).ok_or_else(|| {
                ChannelError::Failed(format!("{key}: part {index} does not exist"))
            })?;
            send_file(plan.api, body, file).await
        }
    };
    sent.map(Some).map_err(ApiError::into_channel_error)
}

/// Uploads `file`, then sends it as a document.
async fn send_file(api: &Api, mut body: Value, file: &OutgoingFile) -> Result<String, ApiError> {
    let data = tokio::fs::read(&file.path)
        .await
        .map_err(|e| ApiError::Unsent {
            what: "upload media",
            detail: format!("reading {}: {e}", file.path.display()),
        })?;
    let mime = file
        .mime_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let media_id = api.upload(&file.file_name, mime, data).await?;
    body["type"] = json!("document");
    body["document"] = json!({"id": media_id, "filename": file.file_name});
    api.send_message(&body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_individuals_and_other_ids_groups() {
        assert_eq!(envelope("+16505551234")["to"], "16505551234");
        assert_eq!(envelope("16505551234")["recipient_type"], "individual");
        assert_eq!(envelope("Y2FwaV9ncm91cDox")["recipient_type"], "group");
    }
}
