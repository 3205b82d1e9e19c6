//! Inbound lanes: messages of one chat are routed in the order they arrived, while different
//! chats are routed at the same time. Routing a message waits on the store several times; one
//! router for everything would let a burst in one chat hold up every other chat, and cap the
//! whole host at one message per store round trip.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::Inner;
use super::loops::route_inbound;
use crate::channel::InboundEvent;

/// A chat, as lanes are keyed: (channel, platform chat id).
type ChatKey = (String, String);

/// The chats with a lane running, each with the messages waiting behind the one in routing.
#[derive(Default)]
pub(super) struct Lanes {
    waiting: Mutex<HashMap<ChatKey, VecDeque<InboundEvent>>>,
}

impl Lanes {
    /// Routes `event` after the chat's earlier messages; starts the chat's lane if none runs.
    pub(super) fn dispatch(self: &Arc<Self>, inner: &Arc<Inner>, event: InboundEvent) {
        let key = (event.channel.clone(), event.chat_id.clone());
        {
            let Ok(mut waiting) = self.waiting.lock() else {
                return;
            };
            if let Some(queue) = waiting.get_mut(&key) {
                queue.push_back(event);
                return;
            }
            // A lane runs exactly while its key is present.
            waiting.insert(key.clone(), VecDeque::new());
        }
        let (lanes, inner) = (Arc::clone(self), Arc::clone(inner));
        tokio::spawn(async move {
            let mut next = Some(event);
            while let Some(event) = next {
                route_inbound(&inner, event).await;
                next = lanes.next_for(&key);
            }
        });
    }

    /// The chat's next waiting message; `None` (and the lane ends) when there is none.
    fn next_for(&self, key: &ChatKey) -> Option<InboundEvent> {
        let mut waiting = self.waiting.lock().ok()?;
        let next = waiting.get_mut(key).and_then(VecDeque::pop_front);
        if next.is_none() {
            waiting.remove(key);
        }
        next
    }
}
