//! Builds the Discord channel against a `FakeDiscord` with in-memory ledger, state and
//! secrets, and reads what it reports.
#![allow(dead_code)] // each test binary uses a part
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_channel::memory::{MemoryLedger, MemorySecrets, MemoryState};
use nanoclaw_channel::{Channel, ChannelEvent, ChannelSetup, InboundEvent, RouteOutcome};
use nanoclaw_channel_discord::REGISTRATION;
use nanoclaw_test_support::platforms::FakePlatform;
use nanoclaw_test_support::platforms::discord::FakeDiscord;
use tokio::sync::mpsc;

pub struct Harness {
    pub fake: FakeDiscord,
    pub channel: Arc<dyn Channel>,
    pub events: mpsc::Receiver<ChannelEvent>,
    pub sink: mpsc::Sender<ChannelEvent>,
    pub ledger: Arc<MemoryLedger>,
    pub state: Arc<MemoryState>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Built and started.
    pub async fn start(fake: FakeDiscord) -> Harness {
        Harness::with_state(fake, Arc::default(), "").await
    }

    /// Built over `state` with `extra` settings lines, and started.
    pub async fn with_state(fake: FakeDiscord, state: Arc<MemoryState>, extra: &str) -> Harness {
        let h = Harness::build(fake, state, extra).await;
        Arc::clone(&h.channel)
            .start(h.sink.clone())
            .await
            .expect("starting the Discord channel");
        h
    }

    pub async fn build(fake: FakeDiscord, state: Arc<MemoryState>, extra: &str) -> Harness {
        let settings: toml::Table =
            toml::from_str(&format!("{}{extra}", fake.settings_toml())).expect("settings");
        let secrets: Vec<(String, String)> = fake.secrets();
        let pairs: Vec<(&str, &str)> = secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let ledger = Arc::new(MemoryLedger::default());
        let dir = tempfile::tempdir().expect("temp dir");
        let setup = ChannelSetup {
            settings,
            secrets: Arc::new(MemorySecrets::with(&pairs)),
            state: state.clone(),
            ledger: ledger.clone(),
            assistant_name: "Andy".into(),
            data_dir: dir.path().to_path_buf(),
        };
        let channel = (REGISTRATION.factory)(setup)
            .await
            .expect("building the Discord channel");
        let (sink, events) = mpsc::channel(64);
        Harness {
            fake,
            channel,
            events,
            sink,
            ledger,
            state,
            _dir: dir,
        }
    }

    /// The next inbound message, acknowledged as stored.
    pub async fn next(&mut self) -> InboundEvent {
        self.next_with(RouteOutcome::Accepted).await
    }

    /// The next inbound message with its ack still in it: the host has not answered yet.
    pub async fn next_unanswered(&mut self) -> InboundEvent {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(15), self.events.recv())
                .await
                .expect("timed out waiting for an inbound message")
                .expect("the channel closed its sink");
            if let ChannelEvent::Inbound(e) = event {
                return e;
            }
        }
    }

    pub async fn next_with(&mut self, outcome: RouteOutcome) -> InboundEvent {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(15), self.events.recv())
                .await
                .expect("timed out waiting for an inbound message")
                .expect("the channel closed its sink");
            if let ChannelEvent::Inbound(mut e) = event {
                if let Some(ack) = e.ack.take() {
                    let _ = ack.send(outcome);
                }
                return e;
            }
        }
    }
}

/// Waits (up to 15 s, a liveness bound) until `f` holds.
pub async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    nanoclaw_test_support::eventually(15, what, || {
        let done = f();
        async move { done.then_some(()) }
    })
    .await;
}
