//! Driving whatsapp-rust: the connection loop (one client per connection, rebuilt from the
//! sealed session after each drop, with the shared backoff in between), the linking flow,
//! and sending through the live client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nanoclaw_channel::{ChannelError, InboundSink, OutgoingFile, ShowToOwner};
use whatsapp_rust::bot::{Bot, BotHandle, Provided};
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::download::MediaType;
use whatsapp_rust::wacore::proto_helpers::MessageBuilderExt;
use whatsapp_rust::wacore::store::traits::DeviceStore;
use whatsapp_rust::waproto::buffa::MessageField;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, ClientError, SendError, SendOptions, UploadOptions};

use super::hook::InboundHook;
use super::outbound::Sender;
use super::seal::SealedFile;
use super::store::SealedStore;
use super::{LOGGED_OUT, Shared};

/// What one connection ended with, as its events told.
#[derive(Debug, Default)]
struct Outcome {
    connected: bool,
    logged_out: bool,
    error: Option<String>,
}

type Watch = Arc<Mutex<Outcome>>;

fn record(watch: &Watch, f: impl FnOnce(&mut Outcome)) {
    f(&mut watch.lock().unwrap_or_else(|p| p.into_inner()));
}

/// A bot builder with every part provided.
type Builder = whatsapp_rust::bot::BotBuilder<Provided, Provided, Provided, Provided>;

/// A client over `store` with nanoclaw's settings and `watch` fed by its events.
fn build(shared: &Arc<Shared>, store: Arc<SealedStore>, watch: &Watch) -> Builder {
    let config = &shared.config;
    let transport = TokioWebSocketTransportFactory::new().with_url(config.ws_url.clone());
    let events_shared = Arc::clone(shared);
    let events_watch = Arc::clone(watch);
    let mut builder = Bot::builder()
        .with_backend_arc(store)
        .with_transport_factory(transport)
        .skip_history_sync()
        .with_push_name(shared.assistant_name.clone())
        .on_event(move |event, client| {
            let shared = Arc::clone(&events_shared);
            let watch = Arc::clone(&events_watch);
            async move { on_event(&shared, &watch, &event, &client) }
        });
    if let Some(version) = config.web_version {
        builder = builder.with_version(version);
    }
    builder
}

/// Health from the connection's lifecycle events.
fn on_event(shared: &Shared, watch: &Watch, event: &Event, client: &Client) {
    match event {
        Event::Connected(_) => {
            record(watch, |o| o.connected = true);
            shared.health.connected();
            tracing::info!(account = ?client.pn().map(|j| j.user.to_string()), "whatsapp: connected as a linked device");
        }
        Event::LoggedOut(out) => {
            record(watch, |o| o.logged_out = true);
            tracing::warn!(reason = ?out.reason, "whatsapp: logged out");
        }
        Event::Disconnected(d) => {
            record(watch, |o| {
                o.error = Some(format!("disconnected: {}", d.reason))
            });
        }
        Event::ConnectFailure(f) => record(watch, |o| {
            o.error = Some(format!(
                "WhatsApp refused the connection: {:?}{}",
                f.reason,
                f.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ));
        }),
        Event::TemporaryBan(ban) => record(watch, |o| {
            o.error = Some(format!(
                "WhatsApp banned this account for {:?}: {:?}",
                ban.expire, ban.code
            ));
        }),
        Event::ClientOutdated(_) => record(watch, |o| {
            o.error = Some(
                "WhatsApp says this client's version is outdated; set web_version in [channels.whatsapp] or update nanoclaw".into(),
            );
        }),
        Event::StreamError(e) => record(watch, |o| {
            o.error = Some(format!("stream error {}", e.code))
        }),
        Event::StreamReplaced(_) => record(watch, |o| {
            o.error = Some("another connection with this session replaced ours".into());
        }),
        _ => {}
    }
}

/// Connects, and connects again after each drop, until logged out or aborted.
pub(crate) async fn connection_loop(
    shared: Arc<Shared>,
    store: Arc<SealedStore>,
    file: SealedFile,
    sink: InboundSink,
) {
    let mut backoff = super::backoff();
    loop {
        let watch: Watch = Arc::default();
        let hook = InboundHook {
            shared: Arc::clone(&shared),
            sink: sink.clone(),
            subjects: Mutex::default(),
        };
        let bot = build(&shared, Arc::clone(&store), &watch)
            .with_inbound_durability_hook(hook)
            .build()
            .await;
        let handle = match bot {
            Ok(bot) => {
                let client = bot.client();
                // Reconnects are nanoclaw's (below), with its backoff and health.
                client
                    .enable_auto_reconnect
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                shared.set_client(Some(client));
                bot.spawn()
            }
            Err(e) => {
                shared
                    .health
                    .down(format!("the WhatsApp client could not start: {e}"));
                return;
            }
        };
        handle.await;
        shared.set_client(None);
        let outcome = std::mem::take(&mut *watch.lock().unwrap_or_else(|p| p.into_inner()));
        if outcome.logged_out || !store.is_linked().await {
            // The device is gone on WhatsApp's side; its keys are of no further use.
            if let Err(e) = file.retire() {
                tracing::warn!(error = %e, "whatsapp: the logged-out session could not be set aside");
            }
            shared.health.down(LOGGED_OUT);
            return;
        }
        if outcome.connected {
            backoff.reset();
        }
        let reason = match outcome.error {
            Some(error) => error,
            None => unreachable_reason(&shared.config.ws_url).await,
        };
        let wait = backoff.next_delay();
        tracing::warn!(error = %reason, ?wait, "whatsapp: connection lost; reconnecting");
        shared.health.reconnecting(reason);
        tokio::time::sleep(wait).await;
    }
}

/// Why a connection that reported nothing failed: whether the server could be reached.
async fn unreachable_reason(ws_url: &str) -> String {
    let Some((host, port)) = host_port(ws_url) else {
        return format!("could not connect to {ws_url}");
    };
    let probe = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    );
    match probe.await {
        Ok(Ok(_)) => format!(
            "{host}:{port} answers, but the WhatsApp connection did not come up (see the log)"
        ),
        Ok(Err(e)) => format!("cannot reach WhatsApp at {host}:{port}: {e}"),
        Err(_) => format!("cannot reach WhatsApp at {host}:{port}: no answer in 10 s"),
    }
}

/// The host and port of a `ws://` or `wss://` URL.
pub(crate) fn host_port(url: &str) -> Option<(String, u16)> {
    let (default_port, rest) = if let Some(rest) = url.strip_prefix("wss://") {
        (443, rest)
    } else {
        (80, url.strip_prefix("ws://")?)
    };
    let authority = rest.split('/').next()?;
    // `[::1]:8080`: the port follows the bracket.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => default_port,
    };
    Some((host.to_string(), port))
}

/// `+<number>` of the account in `store`.
pub(crate) async fn who(store: &SealedStore) -> String {
    match store.load().await.ok().flatten().and_then(|d| d.pn) {
        Some(pn) => format!("+{}", pn.user),
        None => "an unknown number".to_string(),
    }
}

/// Links a new device: shows QR codes (and a pairing code) until the phone accepts one
/// and the first connection is up, or the time runs out.
pub(crate) async fn link(
    shared: &Arc<Shared>,
    file: &SealedFile,
    show: &ShowToOwner<'_>,
) -> Result<Option<String>, ChannelError> {
    // Whatever is there cannot be used (no session, an unfinished link, another key).
    file.remove()?;
    let _ = std::fs::remove_file(file.logged_out_path());
    let store = Arc::new(SealedStore::open(file.clone())?);
    let watch: Watch = Arc::default();
    let (prompts, mut shown) = tokio::sync::mpsc::unbounded_channel::<String>();
    let qr_prompts = prompts.clone();
    let mut builder = build(shared, Arc::clone(&store), &watch)
        .on_qr_code(move |code, valid| {
            let prompts = qr_prompts.clone();
            async move {
                let _ = prompts.send(qr_prompt(&code, valid));
            }
        })
        .on_pair_code(move |code, valid| {
            let prompts = prompts.clone();
            async move {
                let _ = prompts.send(format!(
                    "Or enter this pairing code on the phone (WhatsApp → Linked devices → Link a device → Link with phone number instead), valid {} s: {code}",
                    valid.as_secs()
                ));
            }
        });
    if let Some(number) = &shared.config.phone_number {
        builder = builder.with_pair_code(PairCodeOptions {
            phone_number: number.clone(),
            ..Default::default()
        });
    }
    let bot = builder
        .build()
        .await
        .map_err(|e| ChannelError::Setup(format!("the WhatsApp client could not start: {e}")))?;
    let handle = bot.spawn();
    let linked = wait_linked(
        &store,
        &watch,
        &handle,
        &mut shown,
        show,
        shared.config.link_timeout,
        &shared.config.ws_url,
    )
    .await;
    handle.shutdown().await;
    linked?;
    Ok(Some(who(&store).await))
}

fn qr_prompt(code: &str, valid: Duration) -> String {
    let rendered = super::qr::render(code)
        .unwrap_or_else(|e| format!("(the QR code could not be drawn: {e})"));
    format!(
        "{rendered}\nScan this with the phone: WhatsApp → Settings → Linked devices → Link a device (valid {} s; a new one follows).\nIf it does not scan (a light terminal background), set phone_number and use the pairing code.",
        valid.as_secs()
    )
}

/// Shows prompts until the device is linked and connected, or fails.
async fn wait_linked(
    store: &SealedStore,
    watch: &Watch,
    handle: &BotHandle,
    shown: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    show: &ShowToOwner<'_>,
    timeout: Duration,
    ws_url: &str,
) -> Result<(), ChannelError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut prompted = false;
    let client = handle.client();
    loop {
        let (connected, logged_out, error) = {
            let o = watch.lock().unwrap_or_else(|p| p.into_inner());
            (o.connected, o.logged_out, o.error.clone())
        };
        if connected && client.is_logged_in() && store.is_linked().await {
            return Ok(());
        }
        if logged_out {
            return Err(ChannelError::Setup("the phone refused the link".into()));
        }
        tokio::select! {
            prompt = shown.recv() => if let Some(prompt) = prompt {
                prompted = true;
                show(&prompt);
            },
            () = tokio::time::sleep_until(deadline) => {
                // No code ever came: say whether WhatsApp could be reached at all.
                let error = match error {
                    Some(error) => Some(error),
                    None if !prompted => Some(unreachable_reason(ws_url).await),
                    None => None,
                };
                return Err(ChannelError::Setup(format!(
                    "not linked within {} s{}",
                    timeout.as_secs(),
                    error.map(|e| format!(" ({e})")).unwrap_or_default()
                )));
            }
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Sends through the live client.
pub(crate) struct ClientSender(pub Arc<Client>, pub Arc<Shared>);

fn send_error(e: SendError) -> ChannelError {
    match e {
        SendError::NotLoggedIn
        | SendError::Client(ClientError::NotConnected | ClientError::NotLoggedIn) => {
            ChannelError::NotConnected(format!("WhatsApp (linked device): {e}"))
        }
        SendError::InvalidRequest(detail) => ChannelError::Rejected {
            platform: crate::NAME.to_string(),
            detail,
        },
        other => ChannelError::Failed(format!("WhatsApp: {other}")),
    }
}

fn chat_jid(chat: &str) -> Result<whatsapp_rust::Jid, ChannelError> {
    chat.parse().map_err(|_| ChannelError::Rejected {
        platform: crate::NAME.to_string(),
        detail: format!("{chat:?} is not a WhatsApp chat id"),
    })
}

#[async_trait]
impl Sender for ClientSender {
    async fn send_text(
        &self,
        chat: &str,
        text: &str,
        quote: Option<&str>,
    ) -> Result<String, ChannelError> {
        let to = chat_jid(chat)?;
        let author = quote
            .and_then(|id| Some((id, super::events::quoted_author(&self.1.authors, &to, id)?)));
        let message = match author {
            Some((id, author)) => wa::Message::text_with_context(
                text,
                wa::ContextInfo {
                    stanza_id: Some(id.to_string()),
                    participant: Some(author),
                    ..Default::default()
                },
            ),
            None => wa::Message::text(text),
        };
        let sent = self
            .0
            .send_message_with_options(to, message, SendOptions::default())
            .await
            .map_err(send_error)?;
        Ok(sent.message_id)
    }

    async fn send_document(
        &self,
        chat: &str,
        file: &OutgoingFile,
        data: Vec<u8>,
    ) -> Result<String, ChannelError> {
        let to = chat_jid(chat)?;
        let upload = self
            .0
            .upload(data, MediaType::Document, UploadOptions::default())
            .await
            .map_err(|e| ChannelError::Failed(format!("WhatsApp media upload: {e}")))?;
        let document = wa::message::DocumentMessage {
            url: Some(upload.url),
            direct_path: Some(upload.direct_path),
            media_key: Some(upload.media_key.to_vec()),
            file_enc_sha256: Some(upload.file_enc_sha256.to_vec()),
            file_sha256: Some(upload.file_sha256.to_vec()),
            file_length: Some(upload.file_length),
            media_key_timestamp: Some(upload.media_key_timestamp),
            mimetype: Some(
                file.mime_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".to_string()),
            ),
            file_name: Some(file.file_name.clone()),
            title: Some(file.file_name.clone()),
            ..Default::default()
        };
        let message = wa::Message {
            document_message: MessageField::some(document),
            ..Default::default()
        };
        let sent = self.0.send_message(to, message).await.map_err(send_error)?;
        Ok(sent.message_id)
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn the_socket_address_is_read_from_the_url() {
        assert_eq!(
            host_port("wss://web.whatsapp.com/ws/chat"),
            Some(("web.whatsapp.com".into(), 443))
        );
        assert_eq!(
            host_port("ws://127.0.0.1:9/ws/chat"),
            Some(("127.0.0.1".into(), 9))
        );
        assert_eq!(host_port("ws://[::1]:8080/x"), Some(("::1".into(), 8080)));
        assert_eq!(host_port("http://x"), None);
    }
}
