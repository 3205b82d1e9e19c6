//! Serving a channel's public HTTP endpoint (a platform's webhook) with limits a public
//! endpoint needs and `axum::serve` does not set: a deadline for the request headers (a
//! client that trickles them — "slowloris" — would otherwise hold its connection and its
//! socket forever) and a cap on open connections.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Limits for [`serve_http`].
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A request's headers must arrive within this; the connection is closed otherwise.
    pub header_timeout: Duration,
    /// Connections open at once; more are closed as they are accepted.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 512,
        }
    }
}

/// Serves `app` on `listener` (HTTP/1.1) until the task is aborted, within `limits`.
/// Failing accepts (e.g. out of file descriptors) are logged and retried after a pause;
/// they do not end the server. When this future is dropped (the channel stops), every open
/// connection finishes the request it is on and closes: a client's kept-alive connection
/// must not keep reaching a stopped channel.
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropped with this future: each connection sees its receiver close.
    let (_open, closed) = tokio::sync::watch::channel(());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "http: accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "http: too many open connections; closing a new one");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = closed.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "http: connection ended with an error");
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn server(limits: HttpLimits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", get(|| async { "hello" }));
        tokio::spawn(serve_http(listener, app, limits));
        addr
    }

    async fn get_root(addr: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// Reads until the server closes the connection (or 30 s pass); true when it closed.
    async fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        read.await.is_ok()
    }

    #[tokio::test]
    async fn a_client_trickling_its_headers_is_cut_off_and_others_are_served() {
        let addr = server(HttpLimits {
            header_timeout: Duration::from_millis(500),
            max_connections: 16,
        })
        .await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nx-slow: ").await.unwrap();
        // One header byte now and then, never the end of the headers.
        let trickle = async {
            for _ in 0..100 {
                if slow.write_all(b"a").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let served = async { get_root(addr).await };
        let ((), answer) = tokio::join!(trickle, served);
        assert!(answer.contains("hello"), "{answer}");
        assert!(
            closed_by_server(&mut slow).await,
            "the trickling client's connection is still open"
        );
    }

    #[tokio::test]
    async fn a_stopped_server_closes_its_kept_alive_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", get(|| async { "hello" }));
        let server = tokio::spawn(serve_http(listener, app, HttpLimits::default()));
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = kept.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("hello"));
        server.abort();
        assert!(
            closed_by_server(&mut kept).await,
            "a kept-alive connection outlived its server"
        );
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_the_server_recovers() {
        let addr = server(HttpLimits {
            header_timeout: Duration::from_secs(60),
            max_connections: 2,
        })
        .await;
        // Two idle connections take both places.
        let idle_a = TcpStream::connect(addr).await.unwrap();
        let idle_b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_by_server(&mut third).await,
            "a third connection was kept"
        );
        drop((idle_a, idle_b));
        let mut answer = String::new();
        for _ in 0..50 {
            answer = get_root(addr).await;
            if answer.contains("hello") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            answer.contains("hello"),
            "not served after the idle ones left: {answer:?}"
        );
    }
}
