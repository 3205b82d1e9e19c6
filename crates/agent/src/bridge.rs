//! Loopback bridges out of the sandbox. The sandbox has no network but loopback, and what
//! the agent must reach lives on the host: a bridge listens on `127.0.0.1:0` and, for each
//! connection, connects to its [`Upstream`] and copies bytes both ways. The host does all
//! the checking. Two uses:
//!
//! - The model relay ([`Bridge::model_relay`]): providers reach it at `http://127.0.0.1:PORT`.
//!   Normally a Unix socket; where no Unix socket can cross into the sandbox (a VM) a TCP
//!   port of the host that only accepts this sandbox's token, sent first as
//!   `NANOCLAW-RELAY <token>\n` ([`RELAY_PREAMBLE_PREFIX`]).
//! - The egress proxy ([`PreparedEgress`]): the host's HTTP proxy socket
//!   (`NANOCLAW_EGRESS_SOCKET`, normally `/run/nanoclaw/proxy.sock`), with the proxy
//!   variables that make curl, git, pip, npm and Python in tool subprocesses use it. Its
//!   listener is bound before the async runtime starts so the variables can be set in the
//!   process environment while it is still single-threaded; every tool subprocess inherits
//!   them. The agent's own model client ignores them (it is built with `no_proxy()` and uses
//!   the model bridge).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nanoclaw_protocol::contract::{RELAY_PREAMBLE_PREFIX, env};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::JoinHandle;

/// Where a bridge forwards each connection.
#[derive(Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A Unix socket mounted into the sandbox (`NANOCLAW_MODEL_SOCKET`,
    /// `NANOCLAW_EGRESS_SOCKET`).
    Unix(PathBuf),
    /// A host TCP port that wants `token` first (`NANOCLAW_MODEL_TCP` with
    /// `NANOCLAW_MODEL_TOKEN`).
    Tcp { addr: String, token: String },
}

impl std::fmt::Debug for Upstream {
    // The token opens the relay: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Unix(path) => f.debug_tuple("Unix").field(path).finish(),
            Upstream::Tcp { addr, .. } => f
                .debug_struct("Tcp")
                .field("addr", addr)
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Unix(path) => write!(f, "unix:{}", path.display()),
            Upstream::Tcp { addr, .. } => write!(f, "tcp:{addr}"),
        }
    }
}

/// What a bridge leads to, for its log lines.
const MODEL_RELAY: &str = "model relay";
const EGRESS_PROXY: &str = "egress proxy";

/// A bound but not yet serving bridge (no async runtime needed to make one).
pub struct PreparedBridge {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    upstream: Upstream,
    purpose: &'static str,
}

impl PreparedBridge {
    /// Binds `127.0.0.1:0` for connections to `upstream`; `purpose` names it in logs.
    pub fn bind(upstream: Upstream, purpose: &'static str) -> io::Result<PreparedBridge> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(PreparedBridge {
            listener,
            addr,
            upstream,
            purpose,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts forwarding; must run inside a tokio runtime. The upstream is connected per
    /// connection, so one that is not up yet only fails those connections.
    pub fn start(self) -> io::Result<Bridge> {
        let listener = TcpListener::from_std(self.listener)?;
        tracing::debug!(addr = %self.addr, upstream = %self.upstream, purpose = self.purpose, "bridge listening");
        let task = tokio::spawn(accept_loop(listener, Arc::new(self.upstream), self.purpose));
        Ok(Bridge {
            addr: self.addr,
            task,
        })
    }
}

/// A running bridge; stops when dropped.
pub struct Bridge {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Bridge {
    /// Binds and starts a bridge to `upstream` at once (inside a runtime).
    pub fn start(upstream: Upstream, purpose: &'static str) -> io::Result<Bridge> {
        PreparedBridge::bind(upstream, purpose)?.start()
    }

    /// The bridge to the host's model relay at `route` (inside a runtime).
    pub fn model_relay(route: Upstream) -> io::Result<Bridge> {
        Self::start(route, MODEL_RELAY)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the base URL providers are built with, or the proxy URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: Arc<Upstream>, purpose: &'static str) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let upstream = Arc::clone(&upstream);
                tokio::spawn(async move { forward(tcp, &upstream, purpose).await });
            }
            Err(e) => {
                // Transient (e.g. out of file descriptors): back off briefly and go on.
                tracing::warn!(error = %e, %upstream, purpose, "bridge accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn forward(mut tcp: TcpStream, upstream: &Upstream, purpose: &'static str) {
    // Streamed model output and interactive tunnels are many small writes; with Nagle's
    // algorithm on, each one can wait ~40 ms for the client's delayed ACK.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not disable Nagle on the bridge");
    }
    let result = match upstream {
        Upstream::Unix(socket) => match connect_unix(socket, purpose).await {
            Some(mut unix) => tokio::io::copy_bidirectional(&mut tcp, &mut unix).await,
            None => return,
        },
        Upstream::Tcp { addr, token } => match connect_tcp(addr, token, purpose).await {
            Some(mut relay) => tokio::io::copy_bidirectional(&mut tcp, &mut relay).await,
            None => return,
        },
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, purpose, "bridge connection ended with an error");
    }
}

async fn connect_unix(socket: &Path, purpose: &'static str) -> Option<UnixStream> {
    match UnixStream::connect(socket).await {
        Ok(s) => Some(s),
        Err(e) => {
            // Dropping the TCP connection makes the client report a transport error.
            tracing::warn!(error = %e, socket = %socket.display(), purpose, "cannot connect to the host socket");
            None
        }
    }
}

/// Connects to the host's TCP relay and presents the token.
async fn connect_tcp(addr: &str, token: &str, purpose: &'static str) -> Option<TcpStream> {
    let mut relay = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, %addr, purpose, "cannot connect to the host over tcp");
            return None;
        }
    };
    if let Err(e) = relay.set_nodelay(true) {
        tracing::debug!(error = %e, "could not disable Nagle towards the host");
    }
    let preamble = format!("{RELAY_PREAMBLE_PREFIX}{token}\n");
    if let Err(e) = relay.write_all(preamble.as_bytes()).await {
        tracing::warn!(error = %e, %addr, purpose, "sending the token to the host failed");
        return None;
    }
    Some(relay)
}

/// Hosts that never go through the proxy (the bridges themselves live on loopback).
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";

pub use nanoclaw_protocol::contract::env::CA_BUNDLE_VARS;

/// The environment every tool subprocess gets so its HTTP(S) goes through `proxy_url`
/// (`http://127.0.0.1:PORT`), with `ca_bundle` when the host intercepts TLS. The one place
/// that decides these variables.
pub fn proxy_env(proxy_url: &str, ca_bundle: Option<&Path>) -> Vec<(&'static str, String)> {
    let mut env = Vec::new();
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        env.push((name, proxy_url.to_owned()));
    }
    env.push(("NO_PROXY", NO_PROXY.to_owned()));
    env.push(("no_proxy", NO_PROXY.to_owned()));
    if let Some(ca) = ca_bundle {
        for name in CA_BUNDLE_VARS {
            env.push((*name, ca.display().to_string()));
        }
    }
    env
}

/// The egress proxy bridge, bound but not yet serving, with the variables tool subprocesses
/// need to use it.
pub struct PreparedEgress {
    bridge: PreparedBridge,
    ca_bundle: Option<PathBuf>,
}

impl PreparedEgress {
    /// Binds `127.0.0.1:0` for the host's egress proxy socket at `socket`.
    pub fn bind(socket: impl Into<PathBuf>) -> io::Result<PreparedEgress> {
        Ok(PreparedEgress {
            bridge: PreparedBridge::bind(Upstream::Unix(socket.into()), EGRESS_PROXY)?,
            ca_bundle: None,
        })
    }

    /// `Some` when `NANOCLAW_EGRESS_SOCKET` is set (the host gives the sandbox egress); the
    /// CA bundle from `NANOCLAW_CA_BUNDLE` when set.
    pub fn from_env() -> io::Result<Option<PreparedEgress>> {
        match std::env::var_os(env::EGRESS_SOCKET).filter(|v| !v.is_empty()) {
            Some(socket) => {
                let ca = std::env::var_os(env::CA_BUNDLE)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from);
                Self::bind(PathBuf::from(socket)).map(|p| Some(p.with_ca_bundle(ca)))
            }
            None => Ok(None),
        }
    }

    /// Tools are told to trust `bundle` (the host intercepts TLS for some hosts).
    pub fn with_ca_bundle(mut self, bundle: Option<PathBuf>) -> PreparedEgress {
        self.ca_bundle = bundle;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.bridge.addr()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The variables for tool subprocesses ([`proxy_env`]).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        proxy_env(&self.proxy_url(), self.ca_bundle.as_deref())
    }

    /// Starts forwarding; must run inside a tokio runtime.
    pub fn start(self) -> io::Result<Bridge> {
        self.bridge.start()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_protocol::contract::paths;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn bytes_flow_both_ways_through_the_bridge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&[&buf[..], b"!"].concat()).await.unwrap();
        });
        let bridge = Bridge::model_relay(Upstream::Unix(path)).unwrap();
        let mut c = TcpStream::connect(bridge.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"ping!");
        assert!(bridge.base_url().starts_with("http://127.0.0.1:"));
    }

    #[tokio::test]
    async fn tcp_mode_sends_the_token_first_then_bytes_flow_both_ways() {
        let relay = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let preamble = format!("{RELAY_PREAMBLE_PREFIX}tok-123\n");
        let preamble_len = preamble.len();
        let server = tokio::spawn(async move {
            let (mut s, _) = relay.accept().await.unwrap();
            let mut first = vec![0u8; preamble_len + 4];
            s.read_exact(&mut first).await.unwrap();
            s.write_all(b"pong").await.unwrap();
            first
        });
        let bridge = Bridge::model_relay(Upstream::Tcp {
            addr: relay_addr.to_string(),
            token: "tok-123".into(),
        })
        .unwrap();
        let mut c = TcpStream::connect(bridge.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut reply = [0u8; 4];
        c.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"pong");
        assert_eq!(server.await.unwrap(), format!("{preamble}ping").as_bytes());
    }

    #[tokio::test]
    async fn unreachable_tcp_relay_closes_the_connection() {
        // Bind then drop: the port is (almost certainly) closed.
        let addr = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let bridge = Bridge::model_relay(Upstream::Tcp {
            addr: addr.to_string(),
            token: "t".into(),
        })
        .unwrap();
        let mut c = TcpStream::connect(bridge.addr()).await.unwrap();
        let mut out = Vec::new();
        let res = c.read_to_end(&mut out).await;
        assert!(res.is_err() || out.is_empty());
    }

    #[test]
    fn the_token_never_shows_in_debug_or_display() {
        let route = Upstream::Tcp {
            addr: "10.0.0.1:9".into(),
            token: "very-secret".into(),
        };
        assert!(!format!("{route:?} {route}").contains("very-secret"));
    }

    #[tokio::test]
    async fn missing_relay_socket_closes_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let bridge = Bridge::model_relay(Upstream::Unix(dir.path().join("absent.sock"))).unwrap();
        let mut c = TcpStream::connect(bridge.addr()).await.unwrap();
        let mut out = Vec::new();
        // Either EOF or a reset: the client sees the relay is unreachable.
        let res = c.read_to_end(&mut out).await;
        assert!(res.is_err() || out.is_empty());
    }

    #[tokio::test]
    async fn egress_bytes_flow_both_ways_to_the_host_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(paths::EGRESS_SOCKET_NAME);
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&[&buf[..], b" ok"].concat()).await.unwrap();
        });
        let prepared = PreparedEgress::bind(&path).unwrap();
        let proxy_url = prepared.proxy_url();
        let bridge = prepared.start().unwrap();
        assert!(proxy_url.starts_with("http://127.0.0.1:"));
        assert_eq!(proxy_url, bridge.base_url());
        let mut c = TcpStream::connect(bridge.addr()).await.unwrap();
        c.write_all(b"CONNECT").await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"CONNECT ok");
    }

    #[tokio::test]
    async fn a_missing_egress_socket_closes_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let bridge = PreparedEgress::bind(dir.path().join("absent.sock"))
            .unwrap()
            .start()
            .unwrap();
        let mut c = TcpStream::connect(bridge.addr()).await.unwrap();
        let mut out = Vec::new();
        let res = c.read_to_end(&mut out).await;
        assert!(res.is_err() || out.is_empty());
    }

    #[test]
    fn the_proxy_env_covers_both_cases_and_excludes_loopback() {
        let env = proxy_env("http://127.0.0.1:4000", None);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        for k in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
        ] {
            assert_eq!(get(k), Some("http://127.0.0.1:4000"), "{k}");
        }
        assert_eq!(get("NO_PROXY"), Some("localhost,127.0.0.1,::1"));
        assert_eq!(get("no_proxy"), Some("localhost,127.0.0.1,::1"));
        assert_eq!(get("SSL_CERT_FILE"), None);
        let ca_cert = Path::new(paths::RUN).join(paths::CA_CERT_NAME);
        let ca_cert_text = ca_cert.display().to_string();
        let with_ca = proxy_env("http://127.0.0.1:4000", Some(&ca_cert));
        for k in CA_BUNDLE_VARS {
            assert!(with_ca.contains(&(*k, ca_cert_text.clone())), "{k}");
        }
        assert!(with_ca.contains(&("CURL_CA_BUNDLE", ca_cert_text.clone())));
        let ca_bundle = Path::new(paths::RUN).join(paths::CA_BUNDLE_NAME);
        let prepared = PreparedEgress::bind("/nonexistent.sock")
            .unwrap()
            .with_ca_bundle(Some(ca_bundle.clone()));
        assert!(
            prepared
                .env()
                .contains(&("SSL_CERT_FILE", ca_bundle.display().to_string()))
        );
    }
}
