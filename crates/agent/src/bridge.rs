//! Loopback TCP → Unix socket bridge. The sandbox has no network but loopback, and the
//! host relay is a Unix socket; this lets a plain HTTP client reach the relay at
//! `http://127.0.0.1:PORT`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::JoinHandle;

/// A running bridge; stops when dropped.
pub struct Bridge {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Bridge {
    /// Listens on `127.0.0.1:0` and forwards every connection to `socket`. The socket is
    /// connected per connection, so a relay that is not up yet only fails those requests.
    pub async fn start(socket: impl Into<PathBuf>) -> std::io::Result<Self> {
        let socket = socket.into();
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        tracing::debug!(%addr, socket = %socket.display(), "model bridge listening");
        let task = tokio::spawn(accept_loop(listener, socket));
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

async fn accept_loop(listener: TcpListener, socket: PathBuf) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let socket = socket.clone();
                tokio::spawn(async move { forward(tcp, &socket).await });
            }
            Err(e) => {
                // Transient (e.g. out of file descriptors): back off briefly and go on.
                tracing::warn!(error = %e, "model bridge accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn forward(mut tcp: TcpStream, socket: &Path) {
    // Streamed model output is many small writes; with Nagle's algorithm on, each one can
    // wait ~40 ms for the client's delayed ACK.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not disable Nagle on the model bridge");
    }
    let mut unix = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) => {
            // Dropping the TCP connection makes the client report a transport error.
            tracing::warn!(error = %e, socket = %socket.display(), "cannot connect to the model relay socket");
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await {
        tracing::debug!(error = %e, "model bridge connection ended with an error");
    }
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
