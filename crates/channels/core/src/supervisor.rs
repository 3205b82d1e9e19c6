//! Keeps a channel running: starts it, restarts it alone with backoff when it goes down,
//! and says when it has been down too long — so `status` never says OK about a dead link.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};

use crate::backoff::Backoff;
use crate::channel::{Channel, InboundSink};
use crate::health::{Health, LinkState};
use crate::now_ms;

/// How a supervisor behaves.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// How often the channel's health is looked at.
    pub check_every: Duration,
    /// First and longest wait between restarts.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Tell the owner once the channel has been down (or reconnecting) this long.
    pub alert_after: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            check_every: Duration::from_secs(2),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            alert_after: Duration::from_secs(300),
        }
    }
}

/// Who hears about a channel that stays down (the host tells the owner's main chat).
pub trait Alerts: Send + Sync {
    fn down_too_long(&self, channel: &str, health: &Health);
    fn recovered(&self, channel: &str, health: &Health);
}

/// A channel under supervision.
pub struct Supervisor {
    channel: Arc<dyn Channel>,
    sink: InboundSink,
    config: SupervisorConfig,
    alerts: Arc<dyn Alerts>,
    /// Why the last start failed, while it has not succeeded since.
    start_error: std::sync::Mutex<Option<(String, i64)>>,
    /// Asked to restart now (`nanoclaw channel restart`).
    restart_now: Notify,
    /// Serializes start/stop.
    lifecycle: Mutex<()>,
    restarts: std::sync::atomic::AtomicU64,
}

impl Supervisor {
    pub fn new(
        channel: Arc<dyn Channel>,
        sink: InboundSink,
        config: SupervisorConfig,
        alerts: Arc<dyn Alerts>,
    ) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            channel,
            sink,
            config,
            alerts,
            start_error: std::sync::Mutex::new(None),
            restart_now: Notify::new(),
            lifecycle: Mutex::new(()),
            restarts: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn channel(&self) -> &Arc<dyn Channel> {
        &self.channel
    }

    /// The channel's health, with a failed start shown as down.
    pub fn health(&self) -> Health {
        let mut health = self.channel.health();
        let start_error = self
            .start_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((error, at)) = start_error {
            health.state = LinkState::Down;
            health.last_error = Some(error);
            health.last_error_at = Some(at);
        }
        health.reconnects += self.restarts.load(std::sync::atomic::Ordering::Relaxed);
        health
    }

    /// Starts the channel once; a failure is recorded, not returned (the loop retries).
    async fn try_start(&self) -> bool {
        let _guard = self.lifecycle.lock().await;
        let result = Arc::clone(&self.channel).start(self.sink.clone()).await;
        let mut slot = self.start_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                *slot = None;
                tracing::info!(channel = self.channel.name(), "channel started");
                true
            }
            Err(e) => {
                tracing::warn!(channel = self.channel.name(), error = %e, "channel could not start");
                *slot = Some((e.to_string(), now_ms()));
                false
            }
        }
    }

    /// Stops and starts the channel now; returns why it failed to start.
    pub async fn restart(&self) -> Result<(), String> {
        {
            let _guard = self.lifecycle.lock().await;
            self.channel.stop().await;
        }
        self.restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.try_start().await {
            Ok(())
        } else {
            Err(self.health().last_error.unwrap_or_default())
        }
    }

    /// Asks the supervision loop to restart the channel at once.
    pub fn poke(&self) {
        self.restart_now.notify_one();
    }

    pub async fn stop(&self) {
        let _guard = self.lifecycle.lock().await;
        self.channel.stop().await;
    }

    /// Runs until the task is aborted: starts the channel, then watches it.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Backoff::new(self.config.initial_backoff, self.config.max_backoff);
        let mut started = self.try_start().await;
        let mut down_since: Option<tokio::time::Instant> = None;
        let mut alerted = false;
        let mut next_restart = tokio::time::Instant::now();
        loop {
            let poked = tokio::select! {
                () = tokio::time::sleep(self.config.check_every) => false,
                () = self.restart_now.notified() => true,
            };
            let health = self.health();
            let now = tokio::time::Instant::now();
            let is_down = !started || health.state == LinkState::Down;
            let troubled = is_down || health.state == LinkState::Reconnecting;
            if troubled {
                let since = *down_since.get_or_insert(now);
                if !alerted && now.duration_since(since) >= self.config.alert_after {
                    alerted = true;
                    self.alerts.down_too_long(self.channel.name(), &health);
                }
            } else {
                if alerted {
                    self.alerts.recovered(self.channel.name(), &health);
                }
                alerted = false;
                down_since = None;
                if health.state == LinkState::Connected {
                    backoff.reset();
                }
            }
            if (is_down && now >= next_restart) || poked {
                tracing::info!(channel = self.channel.name(), "restarting channel");
                started = self.restart().await.is_ok();
                // Also after a start that worked: a link that dies again at once (a revoked
                // token) must not be restarted every few seconds.
                next_restart = now + backoff.next_delay();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::channel::ChannelError;
    use crate::event::OutgoingMessage;

    /// A channel whose first `failures` starts fail (a refused token, say).
    struct Flaky {
        failures: u32,
        starts: AtomicU32,
    }

    #[async_trait]
    impl Channel for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn start(self: Arc<Self>, _sink: InboundSink) -> Result<(), ChannelError> {
            let n = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= self.failures {
                Err(ChannelError::Setup(format!("refused #{n}")))
            } else {
                Ok(())
            }
        }
        async fn deliver(&self, _m: &OutgoingMessage) -> Result<Option<String>, ChannelError> {
            Ok(None)
        }
    }

    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    impl Alerts for Heard {
        fn down_too_long(&self, channel: &str, health: &Health) {
            let error = health.last_error.clone().unwrap_or_default();
            self.0
                .lock()
                .unwrap()
                .push(format!("down {channel}: {error}"));
        }
        fn recovered(&self, channel: &str, _health: &Health) {
            self.0.lock().unwrap().push(format!("up {channel}"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_channel_that_cannot_start_is_retried_with_growing_waits_and_the_owner_told_once() {
        let channel = Arc::new(Flaky {
            failures: 6,
            starts: AtomicU32::new(0),
        });
        let heard = Arc::new(Heard::default());
        let (sink, _rx) = tokio::sync::mpsc::channel(8);
        let config = SupervisorConfig {
            check_every: Duration::from_secs(1),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            alert_after: Duration::from_secs(10),
        };
        let supervisor = Supervisor::new(channel.clone(), sink, config, heard.clone());
        let task = tokio::spawn(Arc::clone(&supervisor).run());

        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(channel.starts.load(Ordering::SeqCst), 1);
        let health = supervisor.health();
        assert_eq!(
            health.state,
            LinkState::Down,
            "a failed start shows as down"
        );
        assert_eq!(
            health.last_error.as_deref(),
            Some("channel setup failed: refused #1")
        );

        // Backoff doubles (1, 2, 4, 8 s … with jitter): in 12 s far fewer than 12 restarts.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let starts = channel.starts.load(Ordering::SeqCst);
        assert!((3..=6).contains(&starts), "{starts} starts in 12 s");
        let said = heard.0.lock().unwrap().clone();
        assert_eq!(said.len(), 1, "told once, not at every retry: {said:?}");
        assert!(
            said[0].starts_with("down flaky: channel setup failed: refused #"),
            "{said:?}"
        );

        // It keeps trying on its own; once a start works, the owner hears it is back.
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(channel.starts.load(Ordering::SeqCst), 7);
        assert_eq!(supervisor.health().state, LinkState::Connected);
        let said = heard.0.lock().unwrap().clone();
        assert_eq!(said.len(), 2, "{said:?}");
        assert_eq!(said[1], "up flaky");
        task.abort();
    }
}
