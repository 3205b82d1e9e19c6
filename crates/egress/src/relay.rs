//! The model relay: how a sandboxed agent reaches its model without ever holding a key.
//!
//! Each running sandbox gets its own Unix socket (mounted into the sandbox); the socket a
//! request arrives on identifies the sandbox. The agent sends plain HTTP with no
//! credentials; the relay forwards it to the real API over TLS and adds the key on the
//! host side. Only model API paths are relayed — the relay is not a general proxy.
//!
//! Where a Unix socket cannot cross into the sandbox (a VM: Apple's container, Docker
//! Desktop), [`Relay::serve_tcp`] gives the sandbox its own TCP port instead, which only
//! accepts connections that first present that sandbox's token; the HTTP relay behind it is
//! the same.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Request headers the agent may set; everything else (notably any auth header) is dropped.
/// `anthropic-beta` is not among them: betas switch on server-side tools (MCP connectors,
/// web fetch) that would reach the network from the provider's side.
const FORWARDED_REQUEST_HEADERS: &[&str] =
    &["content-type", "accept", "anthropic-version", "user-agent"];

/// The only calls the relay makes for a sandbox: a model turn, token counting, the model
/// list. Anything else at the provider (files, batches, stored responses, other accounts'
/// data) stays out of reach, whatever path the agent asks for.
const ALLOWED_CALLS: &[(&str, &str, &str)] = &[
    ("anthropic", "POST", "v1/messages"),
    ("anthropic", "POST", "v1/messages/count_tokens"),
    ("anthropic", "GET", "v1/models"),
    ("openai", "POST", "chat/completions"),
    ("openai", "GET", "models"),
];

/// Whether a request body asks the provider to reach out by itself (server-side tools, MCP
/// connectors): the sandbox has no network, and the provider must not be its proxy.
fn requests_provider_side_network(provider: &str, body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Some("the body is not JSON".into());
    };
    for key in ["mcp_servers", "container", "web_search_options"] {
        if json.get(key).is_some() {
            return Some(format!("`{key}` is not allowed"));
        }
    }
    if let Some(why) = content_fetched_by_the_provider(&json) {
        return Some(why);
    }
    let tools = json.get("tools").and_then(|t| t.as_array());
    for tool in tools.into_iter().flatten() {
        let kind = tool.get("type").and_then(|t| t.as_str());
        let allowed = match provider {
            // Client tools carry no type (or "custom"); typed ones run on Anthropic's side.
            "anthropic" => matches!(kind, None | Some("custom")),
            _ => matches!(kind, Some("function")),
        };
        if !allowed {
            return Some(format!(
                "the tool type {:?} runs on the provider's side",
                kind.unwrap_or("?")
            ));
        }
    }
    None
}

/// Content sources the provider reads from the request itself; any other (`url`, `file`)
/// makes it fetch something by itself.
const INLINE_SOURCE_TYPES: &[&str] = &["base64", "text", "content"];

/// Where a request body asks the provider to fetch content by reference: an Anthropic
/// `source` that is not inline (`{"type":"url"}`, `{"type":"file"}`), an OpenAI
/// `image_url` / `*_url` part that is not a `data:` URL, or a stored file (`file_id`). The
/// provider would fetch it server-side, outside the egress policy and the leak guard, so only
/// inline (base64) content passes. The whole body is searched (tool results, document
/// `content` sources, system blocks) except tool definitions and tool-call inputs, which
/// the provider does not fetch. Returns where the reference is and what to do instead.
fn content_fetched_by_the_provider(json: &serde_json::Value) -> Option<String> {
    let serde_json::Value::Object(top) = json else {
        return None;
    };
    for (key, value) in top {
        // Tool schemas and output formats describe data; they are never fetched.
        if matches!(
            key.as_str(),
            "tools" | "tool_choice" | "response_format" | "metadata"
        ) {
            continue;
        }
        if let Some(why) = find_fetched_reference(value, key) {
            return Some(why);
        }
    }
    None
}

fn find_fetched_reference(value: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_fetched_reference(item, &format!("{at}[{i}]"))),
        Value::Object(map) => {
            let kind = map.get("type").and_then(Value::as_str);
            if let Some(Value::Object(source)) = map.get("source") {
                let source_type = source.get("type").and_then(Value::as_str).unwrap_or("");
                let by_reference = source.contains_key("url") || source.contains_key("file_id");
                if !INLINE_SOURCE_TYPES.contains(&source_type) || by_reference {
                    return Some(format!(
                        "{at}: a {:?} block whose source is {:?}, not inline data; the provider would \
                         fetch it outside the egress policy; send the content as base64 instead",
                        kind.unwrap_or("?"),
                        if source_type.is_empty() {
                            "a reference"
                        } else {
                            source_type
                        }
                    ));
                }
            }
            for (key, inner) in map {
                // A tool call's input is the model's own output, sent back as history.
                if key == "input" && matches!(kind, Some("tool_use" | "server_tool_use")) {
                    continue;
                }
                let here = format!("{at}.{key}");
                if key == "file_id" || key == "file_url" {
                    return Some(format!(
                        "{here}: content the provider would fetch by reference (stored files, \
                         URLs) is not relayed, it stays outside the egress policy; send the \
                         content inline as base64 instead"
                    ));
                }
                if key.ends_with("_url") {
                    let url = match inner {
                        Value::String(u) => Some(u.as_str()),
                        Value::Object(o) => o.get("url").and_then(Value::as_str),
                        _ => None,
                    };
                    if let Some(url) = url
                        && !url.trim_start().to_ascii_lowercase().starts_with("data:")
                    {
                        return Some(format!(
                            "{here}: a URL ({}) the provider would fetch outside the egress \
                             policy; send the content as a data: URL (base64) instead",
                            url_scheme(url)
                        ));
                    }
                }
                if key == "file"
                    && let Some(data) = inner.get("file_data").and_then(Value::as_str)
                    && data.contains("://")
                {
                    return Some(format!(
                        "{here}.file_data: a URL the provider would fetch outside the egress \
                         policy; send the file's bytes as base64 instead"
                    ));
                }
                if let Some(why) = find_fetched_reference(inner, &here) {
                    return Some(why);
                }
            }
            None
        }
        _ => None,
    }
}

/// The scheme of a URL for an error message (the URL itself may carry secrets).
fn url_scheme(url: &str) -> String {
    match url.split_once(':') {
        Some((scheme, _)) if !scheme.is_empty() && scheme.len() <= 16 => {
            format!("{}:", scheme.to_ascii_lowercase())
        }
        _ => "no scheme".to_owned(),
    }
}

/// Response headers passed back to the agent (retry hints, ids for support requests).
const FORWARDED_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "retry-after",
    "request-id",
    "x-request-id",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-tokens-remaining",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
];

/// Requests bigger than this are refused: a conversation is far smaller.
const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// How the key is presented to an upstream API.
#[derive(Clone)]
pub enum UpstreamAuth {
    /// `x-api-key: KEY` (Anthropic API keys).
    XApiKey(String),
    /// `Authorization: Bearer TOKEN` (OpenAI keys, Anthropic OAuth tokens).
    Bearer(String),
    /// No credential (local servers such as Ollama).
    None,
}

impl Drop for UpstreamAuth {
    // Keys read from the vault are copied here per request: wipe them when done.
    fn drop(&mut self) {
        use zeroize::Zeroize;
        match self {
            UpstreamAuth::XApiKey(key) | UpstreamAuth::Bearer(key) => key.zeroize(),
            UpstreamAuth::None => {}
        }
    }
}

impl std::fmt::Debug for UpstreamAuth {
    // Never print a key, not even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAuth::XApiKey(_) => f.write_str("XApiKey(<redacted>)"),
            UpstreamAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            UpstreamAuth::None => f.write_str("None"),
        }
    }
}

/// Where Anthropic requests go unless `ANTHROPIC_BASE_URL` says otherwise.
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// Where OpenAI requests go unless `OPENAI_BASE_URL` says otherwise.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

#[derive(Debug, Clone)]
pub struct Upstream {
    /// e.g. `https://api.anthropic.com` or `https://api.openai.com/v1`.
    pub base_url: String,
    pub auth: UpstreamAuth,
}

/// The model APIs the host can reach, read the way the vendors' own SDKs read them.
#[derive(Debug, Clone, Default)]
pub struct ModelUpstreams {
    pub anthropic: Option<Upstream>,
    pub openai: Option<Upstream>,
}

/// Where `provider`'s requests go with `key` (the vault's): the key replaces the credential
/// only, so a `configured` base URL still decides where it goes; else the provider's own.
pub fn upstream_with_key(provider: &str, configured: Option<&Upstream>, key: &str) -> Upstream {
    let base_url = configured.map(|u| u.base_url.clone()).unwrap_or_else(|| {
        if provider == "anthropic" {
            DEFAULT_ANTHROPIC_BASE_URL.to_owned()
        } else {
            DEFAULT_OPENAI_BASE_URL.to_owned()
        }
    });
    let auth = if provider == "anthropic" {
        UpstreamAuth::XApiKey(key.to_owned())
    } else {
        UpstreamAuth::Bearer(key.to_owned())
    };
    Upstream { base_url, auth }
}

impl ModelUpstreams {
    /// `ANTHROPIC_API_KEY` (or `ANTHROPIC_AUTH_TOKEN`) and `ANTHROPIC_BASE_URL`;
    /// `OPENAI_API_KEY` and `OPENAI_BASE_URL` (a base URL alone is enough for keyless
    /// local servers).
    pub fn from_env() -> ModelUpstreams {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// The base URL and the key are independent settings: a base URL without a key is kept
    /// (the key may come from the vault, or the server needs none), so it is never lost.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> ModelUpstreams {
        let anthropic_base_set = get("ANTHROPIC_BASE_URL");
        let anthropic_base = anthropic_base_set
            .clone()
            .unwrap_or_else(|| DEFAULT_ANTHROPIC_BASE_URL.to_owned());
        let anthropic = if let Some(key) = get("ANTHROPIC_API_KEY") {
            Some(Upstream {
                base_url: anthropic_base,
                auth: UpstreamAuth::XApiKey(key),
            })
        } else if let Some(token) = get("ANTHROPIC_AUTH_TOKEN") {
            Some(Upstream {
                base_url: anthropic_base,
                auth: UpstreamAuth::Bearer(token),
            })
        } else {
            anthropic_base_set.map(|base_url| Upstream {
                base_url,
                auth: UpstreamAuth::None,
            })
        };
        let openai_base = get("OPENAI_BASE_URL");
        let openai = match (get("OPENAI_API_KEY"), openai_base) {
            (Some(key), base) => Some(Upstream {
                base_url: base.unwrap_or_else(|| DEFAULT_OPENAI_BASE_URL.to_owned()),
                auth: UpstreamAuth::Bearer(key),
            }),
            (None, Some(base)) => Some(Upstream {
                base_url: base,
                auth: UpstreamAuth::None,
            }),
            (None, None) => None,
        };
        ModelUpstreams { anthropic, openai }
    }

    pub fn has(&self, provider: &str) -> bool {
        match provider {
            "anthropic" => self.anthropic.is_some(),
            "openai" => self.openai.is_some(),
            _ => false,
        }
    }
}

/// What one sandbox may hold open at the relay and how long a client may take. A sandbox
/// runs model-written code: a client on its relay socket must not exhaust the host's file
/// descriptors or tasks, whatever it does (`[relay]` in the config).
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// Open connections per sandbox; more are answered `503` and closed at once.
    pub max_connections_per_sandbox: usize,
    /// Open connections across every sandbox's relay.
    pub max_connections_total: usize,
    /// Model requests one sandbox may have in flight; more are answered `429`.
    pub max_requests_in_flight: usize,
    /// A request head must arrive within this after the connection opens or after its
    /// previous response, so an idle keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// A request body must arrive within this once its head is in (`408` otherwise).
    pub body_timeout: Duration,
    /// An upstream answer that sends nothing for this long is cut off.
    pub upstream_idle_timeout: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_connections_per_sandbox: 16,
            max_connections_total: 256,
            max_requests_in_flight: 4,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Shared by every sandbox's relay socket.
pub struct Relay {
    upstreams: ModelUpstreams,
    /// Model keys stored with `nanoclaw vault set anthropic|openai` win over the
    /// environment; read on every request, so a rotation applies at once.
    vault: Option<nanoclaw_vault::Vault>,
    client: reqwest::Client,
    limits: RelayLimits,
    /// Open connections across every sandbox's relay.
    total_slots: Arc<Semaphore>,
    /// Refused connections being answered (see [`MAX_REFUSALS_IN_PROGRESS`]).
    refusals: Arc<Semaphore>,
}

/// Refused connections answered at once, across sandboxes; beyond that a refused connection
/// is closed without an answer, so a flood cannot pile up descriptors in refusals either.
const MAX_REFUSALS_IN_PROGRESS: usize = 256;

impl Relay {
    pub fn new(
        upstreams: ModelUpstreams,
        vault: Option<nanoclaw_vault::Vault>,
    ) -> Result<Arc<Relay>, reqwest::Error> {
        Self::with_limits(upstreams, vault, RelayLimits::default())
    }

    pub fn with_limits(
        upstreams: ModelUpstreams,
        vault: Option<nanoclaw_vault::Vault>,
        limits: RelayLimits,
    ) -> Result<Arc<Relay>, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A redirect would carry x-api-key to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(limits.upstream_idle_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(Arc::new(Relay {
            upstreams,
            vault,
            client,
            total_slots: Arc::new(Semaphore::new(limits.max_connections_total)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_PROGRESS)),
            limits,
        }))
    }

    pub fn limits(&self) -> &RelayLimits {
        &self.limits
    }

    pub fn upstreams(&self) -> &ModelUpstreams {
        &self.upstreams
    }

    /// Where `provider` requests go and with which credential: the vault's secret named
    /// after the provider when there is one, else the environment's.
    async fn upstream_for(
        &self,
        provider: &str,
    ) -> Result<Option<Upstream>, nanoclaw_vault::VaultError> {
        use nanoclaw_vault::ExposeSecret;
        let from_env = match provider {
            "anthropic" => self.upstreams.anthropic.clone(),
            _ => self.upstreams.openai.clone(),
        };
        let Some(vault) = &self.vault else {
            return Ok(from_env);
        };
        let secret = match vault.reveal(provider).await {
            Ok(secret) => secret,
            Err(nanoclaw_vault::VaultError::NoSuchSecret(_)) => return Ok(from_env),
            Err(e) => return Err(e),
        };
        Ok(Some(upstream_with_key(
            provider,
            from_env.as_ref(),
            secret.expose_secret(),
        )))
    }

    /// The relay's state for one sandbox: every transport serves it the same way.
    fn sandbox_state(self: &Arc<Self>, sandbox: &str) -> RelayState {
        RelayState {
            relay: Arc::clone(self),
            sandbox: Arc::from(sandbox),
            connections: Arc::new(Semaphore::new(self.limits.max_connections_per_sandbox)),
            in_flight: Arc::new(Semaphore::new(self.limits.max_requests_in_flight)),
        }
    }

    /// Serves the relay on a new socket at `socket_path` for the sandbox `sandbox`.
    /// Dropping the handle stops it and removes the socket.
    pub fn serve(
        self: &Arc<Self>,
        socket_path: &Path,
        sandbox: &str,
    ) -> std::io::Result<RelayHandle> {
        let _ = std::fs::remove_file(socket_path);
        let listener = tokio::net::UnixListener::bind(socket_path)?;
        {
            use std::os::unix::fs::PermissionsExt;
            // The sandbox user is mapped to this host user, so owner-only is enough.
            std::fs::set_permissions(socket_path, std::fs::Permissions::from_mode(0o600))?;
        }
        let state = self.sandbox_state(sandbox);
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(());
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Transient (e.g. out of file descriptors): back off briefly and go on.
                        tracing::warn!(error = %e, sandbox = %state.sandbox, "model relay accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match state.connection_slot() {
                    Ok(slot) => {
                        tokio::spawn(serve_connection(
                            stream,
                            state.clone(),
                            slot,
                            shutdown.clone(),
                        ));
                    }
                    Err(why) => state.refuse(stream, why),
                }
            }
        });
        Ok(RelayHandle {
            tasks: vec![task],
            socket_path: Some(socket_path.to_owned()),
            _shutdown: shutdown_tx,
        })
    }

    /// Serves the relay for the sandbox `sandbox` on a TCP port of its own at `bind`
    /// (`127.0.0.1:0` unless the sandbox reaches the host some other way, e.g. a VM's
    /// gateway address), for sandboxes a Unix socket cannot reach (VMs).
    ///
    /// Returns the handle (dropping it stops the listener), the address actually bound and
    /// a fresh token (64 hex digits). Each connection must first send
    /// `NANOCLAW-RELAY <token>\n` within [`TCP_PREAMBLE_TIMEOUT`]; anything else closes it
    /// before a byte reaches the relay. After the preamble it is the same HTTP relay, with
    /// the same identity and limits, as [`Relay::serve`]; a connection waiting for its
    /// preamble already holds one of the sandbox's connection slots.
    pub fn serve_tcp(
        self: &Arc<Self>,
        bind: SocketAddr,
        sandbox: &str,
    ) -> std::io::Result<(RelayHandle, SocketAddr, String)> {
        let listener = std::net::TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let token = new_token();
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(());
        let gate = tokio::spawn(tcp_gate(
            listener,
            Arc::from(token.as_bytes()),
            self.sandbox_state(sandbox),
            shutdown,
        ));
        tracing::debug!(sandbox, %addr, "model relay listening on tcp");
        Ok((
            RelayHandle {
                tasks: vec![gate],
                socket_path: None,
                _shutdown: shutdown_tx,
            },
            addr,
            token,
        ))
    }
}

/// First line every TCP relay connection sends, followed by the token and `\n`.
pub const TCP_PREAMBLE_PREFIX: &str = nanoclaw_protocol::contract::RELAY_PREAMBLE_PREFIX;
/// How long a TCP relay connection may take to send its preamble.
pub const TCP_PREAMBLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// 32 random bytes from the thread's CSPRNG, as hex.
fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Accepts TCP connections and serves only those that present the token; each check runs
/// on its own task so a silent client cannot hold up the others.
async fn tcp_gate(
    listener: tokio::net::TcpListener,
    token: Arc<[u8]>,
    state: RelayState,
    shutdown: tokio::sync::watch::Receiver<()>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Transient (e.g. out of file descriptors): back off briefly and go on.
                tracing::warn!(error = %e, sandbox = %state.sandbox, "model relay (tcp) accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Counted from the start: connections waiting for their preamble hold slots too.
        let slot = match state.connection_slot() {
            Ok(slot) => slot,
            Err(why) => {
                state.refuse(stream, why);
                continue;
            }
        };
        let token = Arc::clone(&token);
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let sandbox = Arc::clone(&state.sandbox);
            // Streamed model output is many small writes: no Nagle delay.
            let _ = stream.set_nodelay(true);
            let mut stream = stream;
            match tokio::time::timeout(TCP_PREAMBLE_TIMEOUT, read_preamble(&mut stream)).await {
                Ok(Ok(presented)) if token_matches(&presented, &token) => {
                    serve_connection(stream, state, slot, shutdown).await;
                }
                Ok(Ok(_)) => {
                    tracing::warn!(%sandbox, %peer, "model relay (tcp) refused a connection: wrong token");
                }
                Ok(Err(e)) => {
                    tracing::warn!(%sandbox, %peer, error = %e, "model relay (tcp) refused a connection: bad preamble");
                }
                Err(_) => {
                    tracing::warn!(%sandbox, %peer, "model relay (tcp) refused a connection: no preamble within 5 s");
                }
            }
        });
    }
}

/// Longest preamble accepted: the prefix, a token of up to 128 characters and `\n`.
const MAX_PREAMBLE: usize = TCP_PREAMBLE_PREFIX.len() + 129;

/// Reads `NANOCLAW-RELAY <token>\n` one byte at a time, so no byte of the HTTP request
/// that follows is consumed; returns the token.
async fn read_preamble(stream: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::with_capacity(MAX_PREAMBLE);
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            break;
        }
        line.push(byte);
        if line.len() >= MAX_PREAMBLE {
            return Err(std::io::Error::other("preamble line too long"));
        }
    }
    line.strip_prefix(TCP_PREAMBLE_PREFIX.as_bytes())
        .map(<[u8]>::to_vec)
        .ok_or_else(|| std::io::Error::other("the connection did not start with NANOCLAW-RELAY"))
}

/// Compares in time independent of where the first difference is.
fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    if presented.len() != expected.len() {
        return false;
    }
    presented
        .iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

/// A running relay listener (Unix socket or TCP). Dropping it also ends the sandbox's open
/// connections.
pub struct RelayHandle {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    socket_path: Option<PathBuf>,
    _shutdown: tokio::sync::watch::Sender<()>,
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[derive(Clone)]
struct RelayState {
    relay: Arc<Relay>,
    sandbox: Arc<str>,
    /// This sandbox's open connections.
    connections: Arc<Semaphore>,
    /// This sandbox's model requests being answered.
    in_flight: Arc<Semaphore>,
}

/// Why a new connection to the relay was refused (the sandbox gets it in a 503).
#[derive(Debug, thiserror::Error)]
enum ConnectionRefused {
    #[error(
        "this sandbox has {0} connections open to the model relay, its limit; close some and retry"
    )]
    SandboxLimit(usize),
    #[error(
        "the model relay has {0} connections open across all sandboxes, its limit; retry later"
    )]
    TotalLimit(usize),
}

/// One open connection's share of the limits: the sandbox's and the host's.
struct ConnectionSlot {
    _sandbox: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl RelayState {
    /// A slot for a new connection, or why there is none (both limits are checked at
    /// accept time, so a refused connection costs nothing but its answer).
    fn connection_slot(&self) -> Result<ConnectionSlot, ConnectionRefused> {
        let limits = &self.relay.limits;
        let Ok(sandbox) = Arc::clone(&self.connections).try_acquire_owned() else {
            tracing::warn!(sandbox = %self.sandbox, limit = limits.max_connections_per_sandbox, "model relay refused a connection: the sandbox's connection limit");
            return Err(ConnectionRefused::SandboxLimit(
                limits.max_connections_per_sandbox,
            ));
        };
        let Ok(total) = Arc::clone(&self.relay.total_slots).try_acquire_owned() else {
            tracing::warn!(sandbox = %self.sandbox, limit = limits.max_connections_total, "model relay refused a connection: the host's connection limit");
            return Err(ConnectionRefused::TotalLimit(limits.max_connections_total));
        };
        Ok(ConnectionSlot {
            _sandbox: sandbox,
            _total: total,
        })
    }

    /// Answers a refused connection with why, or closes it at once when many refusals are
    /// already being answered.
    fn refuse<S>(&self, stream: S, why: ConnectionRefused)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if let Ok(permit) = Arc::clone(&self.relay.refusals).try_acquire_owned() {
            tokio::spawn(async move {
                refuse_connection(stream, why).await;
                drop(permit);
            });
        }
    }
}

/// Serves HTTP/1.1 on one accepted connection until it closes, times out or the sandbox's
/// relay is dropped; the slot is held until then.
async fn serve_connection<S>(
    stream: S,
    state: RelayState,
    slot: ConnectionSlot,
    mut shutdown: tokio::sync::watch::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _slot = slot;
    let header_timeout = state.relay.limits.header_timeout;
    let sandbox = Arc::clone(&state.sandbox);
    let service = hyper::service::service_fn(
        move |request: http::Request<hyper::body::Incoming>| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(relay_request(State(state), request.map(Body::new)).await) }
        },
    );
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(%sandbox, error = %e, "model relay connection ended with an error");
            }
        }
        _ = shutdown.changed() => {}
    }
}

/// Answers a connection over the limits with a `503` in the Anthropic error shape (the
/// provider is not known before the request is read) and closes it.
async fn refuse_connection<S>(stream: S, why: ConnectionRefused)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let body = json!({"type": "error", "error": {"type": "overloaded_error", "message": format!("nanoclaw relay: {why}")}}).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    crate::proxy::answer_and_close(stream, answer.as_bytes()).await;
}

/// An error in the shape the calling provider understands, so the agent reports it
/// clearly instead of failing to parse it.
fn relay_error(provider: &str, status: StatusCode, kind: &str, message: String) -> Response {
    let body = if provider == "anthropic" {
        json!({"type": "error", "error": {"type": kind, "message": message}})
    } else {
        json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
    };
    (status, axum::Json(body)).into_response()
}

async fn relay_request(State(state): State<RelayState>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let (provider, rest) = match allowed_call(&state, request.method(), &path, query.as_deref()) {
        Ok(call) => call,
        Err(refusal) => return *refusal,
    };
    let limits = &state.relay.limits;
    // Held until the answer has been streamed to the end (or the client went away).
    let Ok(in_flight) = Arc::clone(&state.in_flight).try_acquire_owned() else {
        tracing::warn!(sandbox = %state.sandbox, provider, limit = limits.max_requests_in_flight, "relay refused a request: too many in flight");
        return relay_error(
            provider,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "nanoclaw relay: this sandbox already has {} model requests in flight, its limit; wait for one to finish",
                limits.max_requests_in_flight
            ),
        );
    };
    let method = request.method().clone();
    let headers = forwarded_headers(request.headers(), FORWARDED_REQUEST_HEADERS);
    let body = match read_body(&state, provider, request.into_body()).await {
        Ok(body) => body,
        Err(refusal) => return *refusal,
    };
    let upstream = match upstream_for(&state, provider).await {
        Ok(upstream) => upstream,
        Err(refusal) => return *refusal,
    };
    let call = Call {
        provider,
        rest: &rest,
        query,
        method,
        headers,
        body,
    };
    forward(&state, call, &upstream, in_flight).await
}

/// The provider and the path below it, when the request is one of the model calls the relay
/// makes ([`ALLOWED_CALLS`]); the refusal to send otherwise.
fn allowed_call(
    state: &RelayState,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
) -> Result<(&'static str, String), Box<Response>> {
    let refuse = |response: Response| Err(Box::new(response));
    let (provider, rest) = match path.strip_prefix("/anthropic/") {
        Some(rest) => ("anthropic", rest),
        None => match path.strip_prefix("/openai/") {
            Some(rest) => ("openai", rest),
            None => {
                tracing::warn!(sandbox = %state.sandbox, %path, "relay refused a non-model path");
                return refuse(relay_error(
                    "anthropic",
                    StatusCode::NOT_FOUND,
                    "not_found_error",
                    format!(
                        "nanoclaw relay: {path} is not a model API path (use /anthropic/… or /openai/…)"
                    ),
                ));
            }
        },
    };
    let allowed = ALLOWED_CALLS
        .iter()
        .any(|(p, m, r)| *p == provider && *m == method.as_str() && *r == rest);
    if !allowed || query.is_some() {
        tracing::warn!(sandbox = %state.sandbox, provider, method = %method, %path, "relay refused a call outside the model API");
        return refuse(relay_error(
            provider,
            StatusCode::FORBIDDEN,
            "permission_error",
            format!(
                "nanoclaw relay: {method} {path} is not a model call the relay makes (only messages, token counting and the model list)"
            ),
        ));
    }
    Ok((provider, rest.to_owned()))
}

/// The request body, within the size and time limits, refused when it asks the provider to
/// reach the network by itself.
async fn read_body(
    state: &RelayState,
    provider: &'static str,
    body: Body,
) -> Result<bytes::Bytes, Box<Response>> {
    let limits = &state.relay.limits;
    let body = axum::body::to_bytes(body, MAX_REQUEST_BYTES);
    let body = match tokio::time::timeout(limits.body_timeout, body).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Err(Box::new(relay_error(
                provider,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("nanoclaw relay: request body refused: {e}"),
            )));
        }
        Err(_) => {
            tracing::warn!(sandbox = %state.sandbox, provider, "relay refused a request: body too slow");
            return Err(Box::new(relay_error(
                provider,
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "nanoclaw relay: the request body did not arrive within {} s",
                    limits.body_timeout.as_secs()
                ),
            )));
        }
    };
    if let Some(why) = requests_provider_side_network(provider, &body) {
        tracing::warn!(sandbox = %state.sandbox, provider, %why, "relay refused provider-side network use");
        return Err(Box::new(relay_error(
            provider,
            StatusCode::FORBIDDEN,
            "permission_error",
            format!(
                "nanoclaw relay: {why}; the sandbox has no network, and the provider is not its proxy"
            ),
        )));
    }

    Ok(body)
}

/// Where the provider's calls go and with which credential; the refusal when the key cannot be
/// read or none is configured.
async fn upstream_for(
    state: &RelayState,
    provider: &'static str,
) -> Result<Upstream, Box<Response>> {
    let upstream = match state.relay.upstream_for(provider).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::error!(sandbox = %state.sandbox, provider, error = %e, "reading the model key from the vault failed");
            return Err(Box::new(relay_error(
                provider,
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                format!("nanoclaw could not read the {provider} key from its vault: {e}"),
            )));
        }
    };
    let Some(upstream) = upstream else {
        let fix = if provider == "anthropic" {
            "set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) where nanoclaw runs and restart it, or store the key with `nanoclaw vault set anthropic`"
        } else {
            "set OPENAI_API_KEY and/or OPENAI_BASE_URL where nanoclaw runs and restart it, or store the key with `nanoclaw vault set openai`"
        };
        return Err(Box::new(relay_error(
            provider,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            format!("nanoclaw has no {provider} credentials configured: {fix}"),
        )));
    };

    Ok(upstream)
}

/// One allowed model call, read and checked, ready to go upstream.
struct Call<'a> {
    provider: &'static str,
    rest: &'a str,
    query: Option<String>,
    method: http::Method,
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// Sends the call upstream with the credential and streams the answer back; `in_flight` is
/// held until the answer has been streamed to its end.
async fn forward(
    state: &RelayState,
    call: Call<'_>,
    upstream: &Upstream,
    in_flight: OwnedSemaphorePermit,
) -> Response {
    let Call {
        provider,
        rest,
        query,
        method,
        headers,
        body,
    } = call;
    let mut url = format!("{}/{}", upstream.base_url.trim_end_matches('/'), rest);
    if let Some(q) = query {
        url.push('?');
        url.push_str(&q);
    }
    let mut outgoing = state
        .relay
        .client
        .request(method.clone(), &url)
        .headers(headers)
        .body(body);
    outgoing = match &upstream.auth {
        UpstreamAuth::XApiKey(key) => outgoing.header("x-api-key", key),
        UpstreamAuth::Bearer(token) => outgoing.bearer_auth(token),
        UpstreamAuth::None => outgoing,
    };
    let started = std::time::Instant::now();
    let response = match outgoing.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(sandbox = %state.sandbox, provider, error = %e, "model upstream unreachable");
            return relay_error(
                provider,
                StatusCode::BAD_GATEWAY,
                "api_error",
                // Without the URL: an owner may have put a key in the base URL.
                format!(
                    "nanoclaw relay could not reach the {provider} API: {}",
                    e.without_url()
                ),
            );
        }
    };
    let status = response.status();
    tracing::info!(
        sandbox = %state.sandbox,
        provider,
        %method,
        path = %rest,
        status = status.as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "relayed model request"
    );
    let mut builder = Response::builder().status(status.as_u16());
    if let Some(h) = builder.headers_mut() {
        *h = forwarded_headers(response.headers(), FORWARDED_RESPONSE_HEADERS);
    }
    let stream = response
        .bytes_stream()
        .map_err(std::io::Error::other)
        .map(move |chunk| {
            // The request counts as in flight until its answer is done.
            let _held = &in_flight;
            chunk
        });
    builder.body(Body::from_stream(stream)).unwrap_or_else(|e| {
        relay_error(
            provider,
            StatusCode::BAD_GATEWAY,
            "api_error",
            format!("nanoclaw relay: bad upstream response: {e}"),
        )
    })
}

fn forwarded_headers(from: &HeaderMap, allowed: &[&str]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in allowed {
        if let Some(value) = from.get(*name)
            && let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            )
        {
            out.insert(n, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_read_the_environment_like_the_vendor_sdks() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let u = ModelUpstreams::from_lookup(env(&[("ANTHROPIC_API_KEY", "sk-ant")]));
        let a = u.anthropic.unwrap();
        assert_eq!(a.base_url, "https://api.anthropic.com");
        assert!(matches!(a.auth, UpstreamAuth::XApiKey(ref k) if k == "sk-ant"));
        assert!(u.openai.is_none());

        let u = ModelUpstreams::from_lookup(env(&[
            ("ANTHROPIC_AUTH_TOKEN", "tok"),
            ("OPENAI_BASE_URL", "http://localhost:11434/v1"),
        ]));
        assert!(matches!(u.anthropic.unwrap().auth, UpstreamAuth::Bearer(_)));
        let o = u.openai.unwrap();
        assert_eq!(o.base_url, "http://localhost:11434/v1");
        assert!(matches!(o.auth, UpstreamAuth::None));

        // A base URL alone is kept (the key may be in the vault), for both providers.
        let u = ModelUpstreams::from_lookup(env(&[("ANTHROPIC_BASE_URL", "http://proxy:8080")]));
        let a = u.anthropic.unwrap();
        assert_eq!(a.base_url, "http://proxy:8080");
        assert!(matches!(a.auth, UpstreamAuth::None));
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches(b"abcd", b"abcd"));
        assert!(!token_matches(b"abce", b"abcd"));
        assert!(!token_matches(b"abc", b"abcd"));
        assert!(!token_matches(b"", b"abcd"));
    }

    #[test]
    fn only_model_calls_pass_and_provider_side_network_is_refused() {
        let allowed = |p: &str, m: &str, r: &str| {
            ALLOWED_CALLS
                .iter()
                .any(|(ap, am, ar)| *ap == p && *am == m && *ar == r)
        };
        assert!(allowed("anthropic", "POST", "v1/messages"));
        assert!(allowed("openai", "POST", "chat/completions"));
        assert!(!allowed("anthropic", "GET", "v1/files"));
        assert!(!allowed("openai", "POST", "responses"));
        assert!(!allowed("openai", "POST", "%2e%2e/chat/completions"));

        let ok = br#"{"model":"m","tools":[{"name":"bash","input_schema":{}}]}"#;
        assert!(requests_provider_side_network("anthropic", ok).is_none());
        let mcp = br#"{"model":"m","mcp_servers":[{"type":"url","url":"https://evil"}]}"#;
        assert!(requests_provider_side_network("anthropic", mcp).is_some());
        let fetch = br#"{"model":"m","tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]}"#;
        assert!(requests_provider_side_network("anthropic", fetch).is_some());
        let function = br#"{"tools":[{"type":"function","function":{"name":"bash"}}]}"#;
        assert!(requests_provider_side_network("openai", function).is_none());
        let hosted = br#"{"tools":[{"type":"mcp","server_url":"https://evil"}]}"#;
        assert!(requests_provider_side_network("openai", hosted).is_some());
    }

    #[test]
    fn content_the_provider_would_fetch_by_url_is_refused_wherever_it_is() {
        let refused = |body: serde_json::Value| content_fetched_by_the_provider(&body);
        let url_image =
            json!({"type": "image", "source": {"type": "url", "url": "https://evil/x.png"}});
        let b64_image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}});
        let msg = |content: serde_json::Value| json!({"messages": [{"role": "user", "content": content}]});
        assert!(refused(msg(json!([b64_image]))).is_none());
        let why = refused(msg(json!([{"type": "text", "text": "hi"}, url_image]))).unwrap();
        assert!(
            why.starts_with(r#"messages[0].content[1]: a "image" block whose source is "url""#),
            "{why}"
        );
        assert!(!why.contains("evil"), "the URL is not echoed: {why}");
        for bad in [
            json!([{"type": "document", "source": {"type": "url", "url": "https://evil/a.pdf"}}]),
            json!([{"type": "document", "source": {"type": "file", "file_id": "file_123"}}]),
            json!([{"type": "tool_result", "tool_use_id": "t", "content": [url_image]}]),
            json!([{"type": "document", "source": {"type": "content", "content": [url_image]}}]),
            json!([{"type": "image_url", "image_url": {"url": "https://evil/x.png"}}]),
            json!([{"type": "image_url", "image_url": "http://evil/x.png"}]),
            json!([{"type": "file", "file": {"file_id": "file-abc"}}]),
            json!([{"type": "file", "file": {"file_data": "https://evil/a.pdf", "filename": "a.pdf"}}]),
            json!([{"type": "video_url", "video_url": {"url": "https://evil/v.mp4"}}]),
        ] {
            assert!(refused(msg(bad.clone())).is_some(), "{bad}");
        }
        // OpenAI tool messages may carry parts too.
        let tool_msg = json!({"messages": [{"role": "tool", "tool_call_id": "c", "content": [{"type": "image_url", "image_url": {"url": "https://evil"}}]}]});
        assert!(refused(tool_msg).is_some());
        let system = json!({"system": [{"type": "image", "source": {"type": "url", "url": "https://evil"}}], "messages": []});
        assert!(refused(system).is_some());
        // Inline data, tool inputs and schemas pass.
        for ok in [
            json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]),
            json!([{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]),
            json!([{"type": "tool_use", "id": "t", "name": "fetch", "input": {"image_url": "https://example.com", "source": {"type": "url"}}}]),
            json!([{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "see https://example.com"}}]),
        ] {
            assert!(refused(msg(ok.clone())).is_none(), "{ok}");
        }
        let schema = json!({"tools": [{"name": "f", "input_schema": {"properties": {"image_url": {"type": "string"}, "file_id": {"type": "string"}}}}], "messages": []});
        assert!(refused(schema).is_none());
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let up = Upstream {
            base_url: "x".into(),
            auth: UpstreamAuth::XApiKey("sk-secret-value".into()),
        };
        assert!(!format!("{up:?}").contains("sk-secret-value"));
    }
}
