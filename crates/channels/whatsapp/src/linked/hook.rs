//! whatsapp-rust's inbound durability hook, feeding the host: a batch is acknowledged to
//! WhatsApp only once the host has settled every message in it; otherwise WhatsApp keeps
//! them and delivers them again on the next connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanoclaw_channel::{Attachment, InboundEvent, InboundSink};
use whatsapp_rust::Client;
use whatsapp_rust::types::durability_hook::InboundMessage;
use whatsapp_rust::wacore_binary::{Jid, JidExt};

use super::Shared;
use super::events::{self, Context, Media};

/// How long a group's name is looked up before the chat is named by its id.
const SUBJECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct InboundHook {
    pub shared: Arc<Shared>,
    pub sink: InboundSink,
    /// Group subjects already looked up.
    pub subjects: Mutex<HashMap<String, String>>,
}

#[async_trait::async_trait]
impl whatsapp_rust::InboundDurabilityHook for InboundHook {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> whatsapp_rust::anyhow::Result<()> {
        let me = self.shared.me(Some(&client));
        for inbound in batch {
            let info = &inbound.info;
            let subject = if info.source.is_group {
                self.subject(&client, &info.source.chat).await
            } else {
                None
            };
            let resolved_chat = self.resolve(&client, &info.source.chat).await;
            let context = Context {
                group_subject: subject.as_deref(),
                resolved_chat,
            };
            let Some(mapped) =
                events::to_event(&me, &self.shared.sent, &inbound.message, info, &context)
            else {
                continue;
            };
            self.shared
                .authors
                .remember(&info.id, &info.source.sender.to_non_ad_string());
            let mut event = mapped.event;
            if let Some(media) = mapped.media {
                self.attach(&client, &media, &mut event).await;
            }
            self.shared.health.event();
            self.hand_over(event).await?;
        }
        Ok(())
    }
}

impl InboundHook {
    /// Gives the host one event and waits until it is settled.
    async fn hand_over(&self, event: InboundEvent) -> whatsapp_rust::anyhow::Result<()> {
        let id = event.platform_msg_id.clone();
        match nanoclaw_channel::hand_over(&self.sink, event).await {
            Some(outcome) if outcome.is_settled() => Ok(()),
            Some(outcome) => {
                tracing::warn!(%id, ?outcome, "whatsapp: the host could not store a message; WhatsApp will deliver it again");
                Err(whatsapp_rust::anyhow::anyhow!("not stored: {outcome:?}"))
            }
            None => Err(whatsapp_rust::anyhow::anyhow!(
                "the host stopped taking messages, or dropped this one"
            )),
        }
    }

    /// The group's subject, looked up once per group (best effort).
    async fn subject(&self, client: &Client, group: &Jid) -> Option<String> {
        let key = group.to_non_ad_string();
        if let Some(known) = self
            .subjects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Some(known.clone());
        }
        let groups = client.groups();
        let looked_up = tokio::time::timeout(SUBJECT_TIMEOUT, groups.get_metadata(group)).await;
        match looked_up {
            Ok(Ok(metadata)) if !metadata.subject.trim().is_empty() => {
                self.subjects
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, metadata.subject.clone());
                Some(metadata.subject)
            }
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "whatsapp: group name not found");
                None
            }
            Err(_) => None,
        }
    }

    /// A LID chat's phone-number JID, from the account's LID map.
    async fn resolve(&self, client: &Client, chat: &Jid) -> Option<Jid> {
        if !chat.is_lid() || chat.is_group() {
            return None;
        }
        match client.get_lid_pn_entry(chat).await {
            Ok(Some(entry)) => Some(Jid::pn(entry.phone_number.as_ref())),
            _ => None,
        }
    }

    /// Downloads a message's file into `event`; one over the limit, or one that cannot be
    /// fetched, becomes a note in the text (WhatsApp's media expires, so a retry later
    /// would not do better).
    async fn attach(&self, client: &Client, media: &Media, event: &mut InboundEvent) {
        let max = self.shared.config.max_attachment_bytes;
        let name = media.file_name(&event.platform_msg_id);
        if let Some(size) = media.declared_size().filter(|s| *s > max) {
            note(
                event,
                &format!("[{name} ({size} bytes) was not downloaded: larger than {max} bytes]"),
            );
            return;
        }
        match client.download(media.downloadable()).await {
            Ok(data) if data.len() as u64 > max => note(
                event,
                &format!(
                    "[{name} ({} bytes) was not downloaded: larger than {max} bytes]",
                    data.len()
                ),
            ),
            Ok(data) => event.attachments.push(Attachment {
                file_name: name,
                mime_type: media.mime_type(),
                data: data.into(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, id = %event.platform_msg_id, "whatsapp: media not downloaded; noted in the text");
                note(event, &format!("[{name} could not be downloaded: {e}]"));
            }
        }
    }
}

fn note(event: &mut InboundEvent, text: &str) {
    if !event.text.is_empty() {
        event.text.push('\n');
    }
    event.text.push_str(text);
}
