#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_channel::memory::{MemoryLedger, MemorySecrets, MemoryState};
use nanoclaw_channel::{Channel, ChannelEvent, ChannelSetup, InboundEvent, RouteOutcome};
use nanoclaw_test_support::platforms::FakePlatform;
use nanoclaw_test_support::platforms::whatsapp::FakeWhatsApp;
use tokio::sync::mpsc;

pub const WAIT: Duration = Duration::from_secs(15);

/// A fake Cloud API, and the durable pieces a channel keeps across restarts.
pub struct Harness {
    pub fake: FakeWhatsApp,
    pub state: Arc<MemoryState>,
    pub ledger: Arc<MemoryLedger>,
    dir: tempfile::TempDir,
}

/// A started channel and what it sends to the host.
pub struct Running {
    pub channel: Arc<dyn Channel>,
    pub events: mpsc::Receiver<ChannelEvent>,
}

impl Harness {
    pub async fn new() -> Harness {
        Harness {
            fake: FakeWhatsApp::start().await,
            state: Arc::new(MemoryState::default()),
            ledger: Arc::new(MemoryLedger::default()),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Builds the channel through its registration, as the host does, with the fake's
    /// secrets except `token`, and `extra` settings appended.
    pub async fn build_with(&self, token: &str, extra: &str) -> Arc<dyn Channel> {
        let settings = format!("{}{extra}", self.fake.settings_toml());
        self.build_setup(token, &settings).await
    }

    /// Builds the channel from a settings table of its own.
    pub async fn build_from_toml(&self, settings: &str) -> Arc<dyn Channel> {
        self.build_setup(
            nanoclaw_test_support::platforms::whatsapp::ACCESS_TOKEN,
            settings,
        )
        .await
    }

    async fn build_setup(&self, token: &str, settings: &str) -> Arc<dyn Channel> {
        let mut secrets = self.fake.secrets();
        secrets[0].1 = token.to_string();
        let pairs: Vec<(&str, &str)> = secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let setup = ChannelSetup {
            settings: toml::from_str(settings).unwrap(),
            secrets: Arc::new(MemorySecrets::with(&pairs)),
            state: self.state.clone(),
            ledger: self.ledger.clone(),
            assistant_name: "Andy".to_string(),
            data_dir: self.dir.path().to_path_buf(),
        };
        (nanoclaw_channel_whatsapp::REGISTRATION.factory)(setup)
            .await
            .unwrap()
    }

    pub async fn build(&self) -> Arc<dyn Channel> {
        self.build_with(nanoclaw_test_support::platforms::whatsapp::ACCESS_TOKEN, "")
            .await
    }

    pub async fn start(&self) -> Running {
        start(self.build().await).await
    }
}

pub async fn start(channel: Arc<dyn Channel>) -> Running {
    let (tx, events) = mpsc::channel(64);
    channel.clone().start(tx).await.unwrap();
    Running { channel, events }
}

impl Running {
    /// The next inbound message (not acked yet).
    pub async fn next(&mut self) -> InboundEvent {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await {
                Ok(Some(ChannelEvent::Inbound(event))) => return event,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the channel closed its sink"),
                Err(_) => panic!("no inbound event within {WAIT:?}"),
            }
        }
    }

    /// The next inbound message, acked as stored.
    pub async fn next_accepted(&mut self) -> InboundEvent {
        let mut event = self.next().await;
        ack(&mut event, RouteOutcome::Accepted);
        event
    }
}

pub fn ack(event: &mut InboundEvent, outcome: RouteOutcome) {
    let _ = event.ack.take().expect("events carry an ack").send(outcome);
}

/// Waits until `check` holds (polling), failing after a generous timeout.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
