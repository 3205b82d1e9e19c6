//! Loopback TCP → host relay bridge. The sandbox has no network but loopback, and the
//! host relay is a Unix socket; this lets a plain HTTP client reach the relay at
//! `http://127.0.0.1:PORT`.
//!
//! Where no Unix socket can cross into the sandbox (a VM), the relay is a TCP port of the
//! host that only accepts this sandbox's token: the bridge then connects there and sends
//! `NANOCLAW-RELAY <token>\n` before the client's bytes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::JoinHandle;

/// What every TCP relay connection starts with, before the token (the host's
/// `relay::TCP_PREAMBLE_PREFIX`).
pub const TCP_PREAMBLE_PREFIX: &str = nanoclaw_protocol::contract::RELAY_PREAMBLE_PREFIX;

/// Where the host's model relay is.
#[derive(Clone, PartialEq, Eq)]
pub enum RelayRoute {
    /// `NANOCLAW_MODEL_SOCKET`: the relay's Unix socket, mounted into the sandbox (default).
    Unix(PathBuf),
    /// `NANOCLAW_MODEL_TCP` (`host:port`) and `NANOCLAW_MODEL_TOKEN`.
    Tcp { addr: String, token: String },
}

impl std::fmt::Debug for RelayRoute {
    // The token opens the relay: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayRoute::Unix(path) => f.debug_tuple("Unix").field(path).finish(),
            RelayRoute::Tcp { addr, .. } => f
                .debug_struct("Tcp")
                .field("addr", addr)
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

impl std::fmt::Display for RelayRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayRoute::Unix(path) => write!(f, "unix:{}", path.display()),
            RelayRoute::Tcp { addr, .. } => write!(f, "tcp:{addr}"),
        }
    }
}

/// A running bridge; stops when dropped.
pub struct Bridge {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Bridge {
    /// Listens on `127.0.0.1:0` and forwards every connection to `socket`. The socket is
    /// connected per connection, so a relay that is not up yet only fails those requests.
    pub async fn start(socket: impl Into<PathBuf>) -> std::io::Result<Self> {
        Self::start_route(RelayRoute::Unix(socket.into())).await
    }

    /// Listens on `127.0.0.1:0` and forwards every connection to the relay at `route`.
    pub async fn start_route(route: RelayRoute) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        tracing::debug!(%addr, relay = %route, "model bridge listening");
        let task = tokio::spawn(accept_loop(listener, Arc::new(route)));
        Ok(Self { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL providers are built with.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn accept_loop(listener: TcpListener, route: Arc<RelayRoute>) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let route = Arc::clone(&route);
                tokio::spawn(async move { forward(tcp, &route).await });
            }
            Err(e) => {
                // Transient (e.g. out of file descriptors): back off briefly and go on.
                tracing::warn!(error = %e, relay = %route, "bridge accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn forward(mut tcp: TcpStream, route: &RelayRoute) {
    // Streamed model output and interactive tunnels are many small writes; with Nagle's
    // algorithm on, each one can wait ~40 ms for the client's delayed ACK.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not disable Nagle on the bridge");
    }
    let result = match route {
        RelayRoute::Unix(socket) => match connect_unix(socket).await {
            Some(mut unix) => tokio::io::copy_bidirectional(&mut tcp, &mut unix).await,
            None => return,
        },
        RelayRoute::Tcp { addr, token } => match connect_tcp(addr, token).await {
            Some(mut relay) => tokio::io::copy_bidirectional(&mut tcp, &mut relay).await,
            None => return,
        },
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "model bridge connection ended with an error");
    }
}

async fn connect_unix(socket: &Path) -> Option<UnixStream> {
    match UnixStream::connect(socket).await {
        Ok(s) => Some(s),
        Err(e) => {
            // Dropping the TCP connection makes the client report a transport error.
            tracing::warn!(error = %e, socket = %socket.display(), "cannot connect to the model relay socket");
            None
        }
    }
}

/// Connects to the host's TCP relay and presents the token.
async fn connect_tcp(addr: &str, token: &str) -> Option<TcpStream> {
    let mut relay = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, %addr, "cannot connect to the model relay over tcp");
            return None;
        }
    };
    if let Err(e) = relay.set_nodelay(true) {
        tracing::debug!(error = %e, "could not disable Nagle towards the model relay");
    }
    let preamble = format!("{TCP_PREAMBLE_PREFIX}{token}\n");
    if let Err(e) = relay.write_all(preamble.as_bytes()).await {
        tracing::warn!(error = %e, %addr, "sending the token to the model relay failed");
        return None;
    }
    Some(relay)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let bridge = Bridge::start(&path).await.unwrap();
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
        let server = tokio::spawn(async move {
            let (mut s, _) = relay.accept().await.unwrap();
            let mut first = vec![0u8; "NANOCLAW-RELAY tok-123\n".len() + 4];
            s.read_exact(&mut first).await.unwrap();
            s.write_all(b"pong").await.unwrap();
            first
        });
        let bridge = Bridge::start_route(RelayRoute::Tcp {
            addr: relay_addr.to_string(),
            token: "tok-123".into(),
        })
        .await
        .unwrap();
        let mut c = TcpStream::connect(bridge.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut reply = [0u8; 4];
        c.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"pong");
        assert_eq!(server.await.unwrap(), b"NANOCLAW-RELAY tok-123\nping");
    }

    #[tokio::test]
    async fn unreachable_tcp_relay_closes_the_connection() {
        // Bind then drop: the port is (almost certainly) closed.
        let addr = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let bridge = Bridge::start_route(RelayRoute::Tcp {
            addr: addr.to_string(),
            token: "t".into(),
        })
        .await
        .unwrap();
        let mut c = TcpStream::connect(bridge.addr()).await.unwrap();
        let mut out = Vec::new();
        let res = c.read_to_end(&mut out).await;
        assert!(res.is_err() || out.is_empty());
    }

    #[test]
    fn the_token_never_shows_in_debug_or_display() {
        let route = RelayRoute::Tcp {
            addr: "10.0.0.1:9".into(),
            token: "very-secret".into(),
        };
        assert!(!format!("{route:?} {route}").contains("very-secret"));
    }

    #[tokio::test]
    async fn missing_relay_socket_closes_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let bridge = Bridge::start(dir.path().join("absent.sock")).await.unwrap();
        let mut c = TcpStream::connect(bridge.addr()).await.unwrap();
        let mut out = Vec::new();
        // Either EOF or a reset: the client sees the relay is unreachable.
        let res = c.read_to_end(&mut out).await;
        assert!(res.is_err() || out.is_empty());
    }
}
