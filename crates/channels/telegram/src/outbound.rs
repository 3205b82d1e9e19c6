//! Delivery: `sendMessage` in MarkdownV2 parts of at most 4,096 UTF-16 units and
//! `sendDocument` for files (<https://core.telegram.org/bots/api#sendmessage>,
//! <https://core.telegram.org/bots/api#senddocument>), each part through the send ledger.
//!
//! A part found in doubt after a crash ([`SendAttempt::AfterCrash`]) is *not* sent again:
//! Telegram has no idempotency key and no way to list what a bot sent, so a resend could
//! show it twice. That part is at most once (logged at warn). A part Telegram refused (a
//! 429, any 4xx) or that never got a connection is not in doubt: the send ledger forgets it
//! (`ChannelError::never_reached_platform`) and it goes again fresh.

use nanoclaw_channel::chunk::{self, Measure};
use nanoclaw_channel::{ChannelError, OutgoingFile, OutgoingMessage, SendAttempt, SendLedger};
use serde_json::{Value, json};

use crate::api::{Api, ApiError, chat_id_value};
use crate::format::to_markdown_v2;
use crate::inbound::{message_id_of, platform_msg_id};

/// The longest text Telegram takes in one message (after entity parsing).
pub const MAX_TEXT: usize = 4096;
/// The longest caption.
pub const MAX_CAPTION: usize = 1024;

/// One message's parts and where they go.
struct Plan<'a> {
    api: &'a Api,
    chat: &'a str,
    thread: Option<i64>,
    reply_to: Option<i64>,
    texts: Vec<String>,
    files: &'a [OutgoingFile],
    /// The whole text goes as the (single) file's caption.
    caption: Option<&'a str>,
}

pub async fn deliver(
    api: &Api,
    ledger: &dyn SendLedger,
    message: &OutgoingMessage,
) -> Result<Option<String>, ChannelError> {
    let text = message.text.trim_end();
    let has_text = !text.trim().is_empty();
    let as_caption =
        has_text && message.files.len() == 1 && Measure::Utf16.len(text) <= MAX_CAPTION;
    let plan = Plan {
        api,
        chat: &message.chat_id,
        thread: message.thread.as_deref().and_then(|t| t.parse().ok()),
        reply_to: message.reply_to.as_deref().and_then(message_id_of),
        texts: if has_text && !as_caption {
            chunk::split(text, MAX_TEXT, Measure::Utf16)
        } else {
            Vec::new()
        },
        files: &message.files,
        caption: as_caption.then_some(text),
    };
    let count = plan.texts.len() + plan.files.len();
    if count == 0 {
        tracing::debug!(key = %message.idempotency_key, "telegram: nothing to send");
        return Ok(None);
    }
    let plan = &plan;
    nanoclaw_channel::send_parts(ledger, &message.idempotency_key, count, |i, attempt| {
        send_part(plan, &message.idempotency_key, i, attempt)
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
            "telegram: a part may or may not have been sent before the host stopped; not resending (Telegram cannot deduplicate)"
        );
        return Ok(None);
    }
    let reply_to = if index == 0 { plan.reply_to } else { None };
    let sent = match plan.texts.get(index) {
        Some(text) => send_text(plan, reply_to, text).await,
        None => {
            let file = plan.files.get(index - plan.texts.len()).ok_or_else(|| {
                ChannelError::Failed(format!("{key}: part {index} does not exist"))
            })?;
            send_file(plan, reply_to, file).await
        }
    };
    let id = sent.map_err(ApiError::into_channel_error)?;
    Ok(Some(match plan.chat.parse::<i64>() {
        Ok(chat) => platform_msg_id(chat, id),
        Err(_) => format!("{}:{id}", plan.chat),
    }))
}

fn reply_parameters(message_id: i64) -> Value {
    // The message may be gone by the time the answer comes; send anyway.
    json!({ "message_id": message_id, "allow_sending_without_reply": true })
}

/// Sends one text part in MarkdownV2; if Telegram cannot parse it, as plain text.
async fn send_text(plan: &Plan<'_>, reply_to: Option<i64>, text: &str) -> Result<i64, ApiError> {
    let mut body = json!({
        "chat_id": chat_id_value(plan.chat),
        "text": to_markdown_v2(text),
        "parse_mode": "MarkdownV2",
    });
    if let Some(thread) = plan.thread {
        body["message_thread_id"] = json!(thread);
    }
    if let Some(id) = reply_to {
        body["reply_parameters"] = reply_parameters(id);
    }
    match plan.api.send_message(&body).await {
        Err(e) if e.is_entity_parse_error() => {
            tracing::warn!(error = %e, "telegram: MarkdownV2 refused; sending the part as plain text");
            body["text"] = json!(text);
            if let Some(fields) = body.as_object_mut() {
                fields.remove("parse_mode");
            }
            Ok(plan.api.send_message(&body).await?.message_id)
        }
        other => Ok(other?.message_id),
    }
}

/// Uploads one file as a document (with the caption, if the text goes there).
async fn send_file(
    plan: &Plan<'_>,
    reply_to: Option<i64>,
    file: &OutgoingFile,
) -> Result<i64, ApiError> {
    let data = tokio::fs::read(&file.path)
        .await
        .map_err(|e| ApiError::Refused {
            method: "sendDocument",
            code: 400,
            description: format!("reading {}: {e}", file.path.display()),
            retry_after: None,
            migrate_to: None,
        })?;
    let form = |caption: Option<(String, bool)>| -> Result<reqwest::multipart::Form, ApiError> {
        let mut part =
            reqwest::multipart::Part::bytes(data.clone()).file_name(file.file_name.clone());
        if let Some(mime) = &file.mime_type {
            part = part.mime_str(mime).map_err(|e| ApiError::Unsent {
                method: "sendDocument",
                detail: format!("mime type {mime:?}: {e}"),
            })?;
        }
        let mut form = reqwest::multipart::Form::new()
            .text("chat_id", plan.chat.to_string())
            .part("document", part);
        if let Some(thread) = plan.thread {
            form = form.text("message_thread_id", thread.to_string());
        }
        if let Some(id) = reply_to {
            form = form.text("reply_parameters", reply_parameters(id).to_string());
        }
        if let Some((caption, markdown)) = caption {
            form = form.text("caption", caption);
            if markdown {
                form = form.text("parse_mode", "MarkdownV2");
            }
        }
        Ok(form)
    };
    let Some(caption) = plan.caption else {
        return Ok(plan.api.send_document(form(None)?).await?.message_id);
    };
    match plan
        .api
        .send_document(form(Some((to_markdown_v2(caption), true)))?)
        .await
    {
        Err(e) if e.is_entity_parse_error() => {
            tracing::warn!(error = %e, "telegram: MarkdownV2 caption refused; sending it as plain text");
            let form = form(Some((caption.to_string(), false)))?;
            Ok(plan.api.send_document(form).await?.message_id)
        }
        other => Ok(other?.message_id),
    }
}
