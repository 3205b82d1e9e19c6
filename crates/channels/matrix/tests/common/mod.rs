//! What both Synapse test files share: a started channel and what it hands the host.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_channel::memory::accepting_host;
use nanoclaw_channel::{Channel, ChannelSetup, InboundEvent, LinkState};
use nanoclaw_channel_matrix::MatrixChannel;
use tokio::sync::mpsc;

pub struct Rig {
    pub channel: Arc<MatrixChannel>,
    pub events: mpsc::Receiver<InboundEvent>,
}

/// Builds the channel from `setup`, starts it against a host that stores everything, and
/// waits (up to 10 s) until it reports connected.
pub async fn started(setup: ChannelSetup) -> Rig {
    let channel = Arc::new(MatrixChannel::from_setup(setup).await.unwrap());
    let (sink, events) = accepting_host();
    Arc::clone(&channel).start(sink).await.unwrap();
    for _ in 0..200 {
        if channel.health().state == LinkState::Connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(channel.health().state, LinkState::Connected);
    Rig { channel, events }
}
