//! Loopback HTTP proxy → host egress proxy bridge. The sandbox has no network but loopback;
//! the host's egress proxy is a Unix socket (`NANOCLAW_EGRESS_SOCKET`, normally
//! `/run/nanoclaw/proxy.sock`). This listens on `127.0.0.1:0` and passes every connection
//! byte-for-byte to that socket, and gives tool subprocesses the proxy variables that make
//! curl, git, pip, npm and Python use it. The host does all the checking.
//!
//! The listener is bound before the async runtime starts so the variables can be set in the
//! process environment while it is still single-threaded; every tool subprocess inherits
//! them. The agent's own model client ignores them (it is built with `no_proxy()` and uses
//! the model bridge).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Where the host's egress proxy socket is, inside the sandbox.
pub const EGRESS_SOCKET_ENV: &str = nanoclaw_protocol::contract::env::EGRESS_SOCKET;

/// Hosts that never go through the proxy (the bridges themselves live on loopback).
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// Where the host put the CA bundle (system roots + its local CA) inside the sandbox, set
/// when the host intercepts TLS for credential injection.
pub const CA_BUNDLE_ENV: &str = nanoclaw_protocol::contract::env::CA_BUNDLE;

/// The CA bundle variables, set when the host intercepts TLS so clients trust its local CA.
pub const CA_BUNDLE_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "CURL_CA_BUNDLE",
];

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

/// A bound but not yet serving bridge (no async runtime needed to make one).
pub struct PreparedEgress {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    socket: PathBuf,
    ca_bundle: Option<PathBuf>,
}

impl PreparedEgress {
    /// Binds `127.0.0.1:0` for the host socket at `socket`.
    pub fn bind(socket: impl Into<PathBuf>) -> io::Result<PreparedEgress> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(PreparedEgress {
            listener,
            addr,
            socket: socket.into(),
            ca_bundle: None,
        })
    }

    /// `Some` when `NANOCLAW_EGRESS_SOCKET` is set (the host gives the sandbox egress); the
    /// CA bundle from `NANOCLAW_CA_BUNDLE` when set.
    pub fn from_env() -> io::Result<Option<PreparedEgress>> {
        match std::env::var_os(EGRESS_SOCKET_ENV).filter(|v| !v.is_empty()) {
            Some(socket) => {
                let ca = std::env::var_os(CA_BUNDLE_ENV)
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
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The variables for tool subprocesses ([`proxy_env`]).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        proxy_env(&self.proxy_url(), self.ca_bundle.as_deref())
    }

    /// Starts forwarding; must run inside a tokio runtime.
    pub fn start(self) -> io::Result<EgressBridge> {
        let listener = TcpListener::from_std(self.listener)?;
        tracing::debug!(addr = %self.addr, socket = %self.socket.display(), "egress bridge listening");
        // The same byte-for-byte loopback → Unix socket bridge as the model's.
        let task = tokio::spawn(crate::bridge::accept_loop(
            listener,
            Arc::new(crate::bridge::RelayRoute::Unix(self.socket)),
        ));
        Ok(EgressBridge {
            addr: self.addr,
            task,
        })
    }
}

/// A running bridge; stops when dropped.
pub struct EgressBridge {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EgressBridge {
    /// Binds and starts at once (inside a runtime).
    pub async fn start(socket: impl Into<PathBuf>) -> io::Result<EgressBridge> {
        PreparedEgress::bind(socket)?.start()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for EgressBridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpStream, UnixListener};

    #[tokio::test]
    async fn bytes_flow_both_ways_to_the_host_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&[&buf[..], b" ok"].concat()).await.unwrap();
        });
        let bridge = EgressBridge::start(&path).await.unwrap();
        assert!(bridge.proxy_url().starts_with("http://127.0.0.1:"));
        let mut c = TcpStream::connect(bridge.addr()).await.unwrap();
        c.write_all(b"CONNECT").await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"CONNECT ok");
    }

    #[tokio::test]
    async fn a_missing_host_socket_closes_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let bridge = EgressBridge::start(dir.path().join("absent.sock"))
            .await
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
        let with_ca = proxy_env(
            "http://127.0.0.1:4000",
            Some(Path::new("/run/nanoclaw/ca.pem")),
        );
        for k in CA_BUNDLE_VARS {
            assert!(
                with_ca.contains(&(*k, "/run/nanoclaw/ca.pem".to_owned())),
                "{k}"
            );
        }
        assert!(with_ca.contains(&("CURL_CA_BUNDLE", "/run/nanoclaw/ca.pem".to_owned())));
        let prepared = PreparedEgress::bind("/nonexistent.sock")
            .unwrap()
            .with_ca_bundle(Some(PathBuf::from("/run/nanoclaw/ca-bundle.pem")));
        assert!(
            prepared
                .env()
                .contains(&("SSL_CERT_FILE", "/run/nanoclaw/ca-bundle.pem".to_owned()))
        );
    }
}
