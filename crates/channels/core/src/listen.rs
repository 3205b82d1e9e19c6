//! Serving an HTTP endpoint for a channel (a platform's webhook) that stays up: bound again
//! with backoff when the address cannot be bound or the server fails, the channel's health
//! saying which.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::backoff::Backoff;
use crate::health::HealthCell;

/// Binds `listen` for a server's first start. When that fails the channel still starts: its
/// health says why (reconnecting, `what` naming the server) and `None` leaves the binding to
/// [`serve_with_rebind`], which keeps trying.
pub async fn bind_first(
    listen: &str,
    health: &HealthCell,
    label: &str,
    what: &str,
) -> Option<TcpListener> {
    match TcpListener::bind(listen).await {
        Ok(listener) => Some(listener),
        Err(e) => {
            let error = format!("{what}cannot listen on {listen}: {e}");
            tracing::warn!(%error, "{label}: retrying in the background");
            health.reconnecting(error);
            None
        }
    }
}

/// Serves on `listen` with `serve` until the task is aborted. `first`: a listener the
/// channel's `start` already bound (so a bad address is reported at once). `label` names
/// the channel in logs.
pub async fn serve_with_rebind<F, Fut>(
    listen: &str,
    first: Option<TcpListener>,
    health: &HealthCell,
    label: &str,
    mut serve: F,
) where
    F: FnMut(TcpListener) -> Fut,
    Fut: Future<Output = std::io::Result<()>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut first = first;
    loop {
        let listener = match first.take() {
            Some(listener) => listener,
            None => match TcpListener::bind(listen).await {
                Ok(listener) => listener,
                Err(e) => {
                    let error = format!("cannot listen on {listen}: {e}");
                    tracing::warn!(%error, "{label}: retrying");
                    health.reconnecting(error);
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            },
        };
        backoff.reset();
        health.connected();
        tracing::info!(%listen, "{label}: listening");
        if let Err(e) = serve(listener).await {
            let error = format!("the listener on {listen} failed: {e}");
            tracing::warn!(%error, "{label}: restarting it");
            health.reconnecting(error);
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_failed_server_is_served_again_and_health_says_why() {
        let health = Arc::new(HealthCell::default());
        let runs = Arc::new(AtomicU32::new(0));
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = first.local_addr().unwrap().to_string();
        let (h, r) = (Arc::clone(&health), Arc::clone(&runs));
        let task = tokio::spawn(async move {
            serve_with_rebind(&listen, Some(first), &h, "test", |_listener| {
                let r = Arc::clone(&r);
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    Err(std::io::Error::other("boom"))
                }
            })
            .await;
        });
        for _ in 0..100 {
            if runs.load(Ordering::SeqCst) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        assert!(
            runs.load(Ordering::SeqCst) >= 2,
            "served again after failing"
        );
        let error = health.snapshot().last_error.unwrap();
        assert!(error.contains("failed: boom"), "{error}");
    }
}
