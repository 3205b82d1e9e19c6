#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_channel::memory::{MemoryLedger, MemorySecrets, MemoryState};
use nanoclaw_channel::{
    Channel, ChannelEvent, ChannelSetup, InboundEvent, RouteOutcome, StateStore,
};
use nanoclaw_test_support::platforms::FakePlatform;
use nanoclaw_test_support::platforms::telegram::{BOT_TOKEN, FakeTelegram};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(15);

/// A fake server, and the durable pieces a channel keeps across restarts.
pub struct Harness {
    pub fake: FakeTelegram,
    pub state: Arc<MemoryState>,
    pub ledger: Arc<MemoryLedger>,
    _dir: tempfile::TempDir,
}

/// A started channel and what it sends to the host.
pub struct Running {
    pub channel: Arc<dyn Channel>,
    pub events: mpsc::Receiver<ChannelEvent>,
}

impl Harness {
    pub async fn new() -> Harness {
        Harness {
            fake: FakeTelegram::start().await,
            state: Arc::new(MemoryState::default()),
            ledger: Arc::new(MemoryLedger::default()),
            _dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Builds the channel through its registration, as the host does.
    pub async fn build_with(&self, token: &str, extra_settings: &str) -> Arc<dyn Channel> {
        let toml_text = format!("{}{extra_settings}", self.fake.settings_toml());
        self.build_setup(token, &toml_text).await
    }

    /// Builds the channel from a settings table of its own.
    pub async fn build_from_toml(&self, toml_text: &str) -> Arc<dyn Channel> {
        self.build_setup(BOT_TOKEN, toml_text).await
    }

    async fn build_setup(&self, token: &str, toml_text: &str) -> Arc<dyn Channel> {
        let setup = ChannelSetup {
            settings: toml::from_str(toml_text).unwrap(),
            secrets: Arc::new(MemorySecrets::with(&[("telegram.bot_token", token)])),
            state: self.state.clone(),
            ledger: self.ledger.clone(),
            assistant_name: "Andy".to_string(),
            data_dir: self._dir.path().to_path_buf(),
        };
        (nanoclaw_channel_telegram::REGISTRATION.factory)(setup)
            .await
            .unwrap()
    }

    pub async fn build(&self) -> Arc<dyn Channel> {
        self.build_with(BOT_TOKEN, "").await
    }

    pub async fn start(&self) -> Running {
        let channel = self.build().await;
        start(channel).await
    }

    pub async fn offset(&self) -> Option<i64> {
        self.state
            .get("offset")
            .await
            .unwrap()
            .map(|v| v.parse().unwrap())
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

    /// Nothing arrives for a little while.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        if let Ok(Some(ChannelEvent::Inbound(event))) =
            tokio::time::timeout(wait, self.events.recv()).await
        {
            panic!(
                "unexpected event: {:?} {:?}",
                event.platform_msg_id, event.text
            );
        }
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

impl Harness {
    /// Waits until the persisted offset reaches `at_least`.
    pub async fn wait_offset(&self, at_least: i64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.offset().await.is_some_and(|o| o >= at_least) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "offset stayed at {:?}, wanted {at_least}",
                self.offset().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
