//! Inbound pipelining: hand the host many messages without waiting for each one's outcome,
//! and learn the outcomes in the order the messages arrived.
//!
//! A channel that waited for every [`InboundEvent::ack`] before reading the next message
//! would take at most one message per host round trip. With a [`Pipeline`] it sends each
//! event at once and keeps up to `limit` of them unsettled; when full, it waits for the
//! oldest (backpressure). Settlements come back oldest first, so a channel with a cursor
//! (Discord's resume sequence) can advance it over the contiguous settled prefix and stop
//! at the first message the host could not store ([`RouteOutcome::Failed`], or an ack the
//! host dropped): the platform replays from there.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use crate::channel::InboundSink;
use crate::event::{ChannelEvent, InboundEvent, RouteOutcome};

/// A good default for `limit`: enough to keep a busy host fed, small enough that a replay
/// after a crash stays short.
pub const DEFAULT_IN_FLIGHT: usize = 256;

/// One item's outcome, reported in arrival order.
#[derive(Debug)]
pub struct Settlement<T> {
    /// What the channel attached to the item (a sequence number, an envelope id…).
    pub tag: T,
    pub outcome: RouteOutcome,
}

impl<T> Settlement<T> {
    /// Whether a cursor may move past this item.
    pub fn is_settled(&self) -> bool {
        self.outcome.is_settled()
    }
}

/// Where an item's outcome comes from.
enum Pending {
    Known(RouteOutcome),
    Ack(oneshot::Receiver<RouteOutcome>),
}

/// Events sent to the host and not yet reported back, oldest first.
pub struct Pipeline<T> {
    queue: VecDeque<(T, Pending)>,
    limit: usize,
}

impl<T> Pipeline<T> {
    /// At most `limit` (at least 1) items unsettled at a time.
    pub fn new(limit: usize) -> Pipeline<T> {
        Pipeline {
            queue: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    /// Items not reported yet.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends `event` to the host with a fresh ack and tracks it under `tag`, waiting first
    /// for room when `limit` items are in flight. Returns what settled while waiting,
    /// oldest first. An event the host no longer takes is tracked as failed.
    pub async fn send(
        &mut self,
        sink: &InboundSink,
        mut event: InboundEvent,
        tag: T,
    ) -> Vec<Settlement<T>> {
        let made_room = self.make_room().await;
        let (ack, outcome) = oneshot::channel();
        event.ack = Some(ack);
        let pending = match sink.send(ChannelEvent::Inbound(event)).await {
            Ok(()) => Pending::Ack(outcome),
            Err(_) => {
                tracing::warn!(
                    channel = "pipeline",
                    "the host stopped taking messages; counted as not stored"
                );
                Pending::Known(RouteOutcome::Failed(
                    "the host stopped taking messages".into(),
                ))
            }
        };
        self.queue.push_back((tag, pending));
        made_room
    }

    /// Tracks an item whose outcome is known already (a dispatch that carries no message,
    /// a message skipped as the bot's own), so it is reported in its place in the order.
    /// Returns what settled while waiting for room, oldest first.
    pub async fn push_known(&mut self, tag: T, outcome: RouteOutcome) -> Vec<Settlement<T>> {
        let made_room = self.make_room().await;
        self.queue.push_back((tag, Pending::Known(outcome)));
        made_room
    }

    /// The oldest items whose outcome is in, without waiting; stops at the first still
    /// undecided.
    pub fn ready(&mut self) -> Vec<Settlement<T>> {
        let mut out = Vec::new();
        while let Some((_, pending)) = self.queue.front_mut() {
            let outcome = match pending {
                Pending::Known(outcome) => outcome.clone(),
                Pending::Ack(rx) => match rx.try_recv() {
                    Ok(outcome) => outcome,
                    Err(oneshot::error::TryRecvError::Empty) => break,
                    Err(oneshot::error::TryRecvError::Closed) => dropped(),
                },
            };
            if let Some((tag, _)) = self.queue.pop_front() {
                out.push(Settlement { tag, outcome });
            }
        }
        out
    }

    /// Waits for the oldest item's outcome; `None` when nothing is in flight.
    ///
    /// Cancel safe: dropped before it returns, the item stays first in line.
    pub async fn next(&mut self) -> Option<Settlement<T>> {
        let (_, pending) = self.queue.front_mut()?;
        let outcome = match pending {
            Pending::Known(outcome) => outcome.clone(),
            Pending::Ack(rx) => rx.await.unwrap_or_else(|_| dropped()),
        };
        let (tag, _) = self.queue.pop_front()?;
        Some(Settlement { tag, outcome })
    }

    async fn make_room(&mut self) -> Vec<Settlement<T>> {
        let mut out = self.ready();
        while self.queue.len() >= self.limit {
            match self.next().await {
                Some(settled) => out.push(settled),
                None => break,
            }
        }
        out
    }
}

fn dropped() -> RouteOutcome {
    RouteOutcome::Failed("the host dropped the message".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn event(id: &str) -> InboundEvent {
        InboundEvent {
            platform_msg_id: id.to_string(),
            ..InboundEvent::default()
        }
    }

    /// The acks of the events the "host" received, in the order received.
    async fn acks(
        events: &mut mpsc::Receiver<ChannelEvent>,
        n: usize,
    ) -> Vec<(String, oneshot::Sender<RouteOutcome>)> {
        let mut out = Vec::new();
        for _ in 0..n {
            match events.recv().await {
                Some(ChannelEvent::Inbound(mut e)) => {
                    let ack = e.ack.take().expect("every event carries an ack");
                    out.push((e.platform_msg_id, ack));
                }
                other => panic!("expected an inbound event, got {other:?}"),
            }
        }
        out
    }

    #[tokio::test]
    async fn events_go_out_without_waiting_and_settle_in_arrival_order() {
        let (sink, mut events) = mpsc::channel(16);
        let mut pipeline = Pipeline::new(8);
        for n in 0..3u64 {
            assert!(
                pipeline
                    .send(&sink, event(&n.to_string()), n)
                    .await
                    .is_empty()
            );
        }
        // All three reached the host although none was answered.
        let mut acks = acks(&mut events, 3).await;
        assert_eq!(pipeline.len(), 3);
        // The host answers the last two first: nothing can be reported before the first.
        let (_, third) = acks.pop().unwrap();
        let (_, second) = acks.pop().unwrap();
        third.send(RouteOutcome::Accepted).unwrap();
        second.send(RouteOutcome::Duplicate).unwrap();
        assert!(pipeline.ready().is_empty(), "the oldest is still undecided");
        let (_, first) = acks.pop().unwrap();
        first.send(RouteOutcome::Accepted).unwrap();
        let tags: Vec<u64> = pipeline.ready().into_iter().map(|s| s.tag).collect();
        assert_eq!(tags, vec![0, 1, 2]);
        assert!(pipeline.is_empty());
    }

    #[tokio::test]
    async fn a_failure_in_the_middle_is_reported_in_its_place() {
        let (sink, mut events) = mpsc::channel(16);
        let mut pipeline = Pipeline::new(8);
        // What `send` returns is part of the report: nothing may be lost.
        let mut settled = pipeline.push_known(0u64, RouteOutcome::Accepted).await;
        for n in 1..4u64 {
            settled.extend(pipeline.send(&sink, event(&n.to_string()), n).await);
        }
        let acks = acks(&mut events, 3).await;
        let outcomes = [
            RouteOutcome::Accepted,
            RouteOutcome::Failed("disk full".into()),
            RouteOutcome::Accepted,
        ];
        for ((_, ack), outcome) in acks.into_iter().zip(outcomes) {
            ack.send(outcome).unwrap();
        }
        settled.extend(pipeline.ready());
        let settled: Vec<(u64, bool)> = settled
            .into_iter()
            .map(|s| (s.tag, s.is_settled()))
            .collect();
        // A cursor over the contiguous settled prefix stops before tag 2.
        let cursor = settled.iter().take_while(|(_, ok)| *ok).last().map(|s| s.0);
        assert_eq!(settled, vec![(0, true), (1, true), (2, false), (3, true)]);
        assert_eq!(cursor, Some(1));
    }

    #[tokio::test]
    async fn a_full_pipeline_waits_for_the_oldest_before_sending_more() {
        let (sink, mut events) = mpsc::channel(16);
        let mut pipeline = Pipeline::new(2);
        pipeline.send(&sink, event("a"), 'a').await;
        pipeline.send(&sink, event("b"), 'b').await;
        let mut acks = acks(&mut events, 2).await;
        let third = tokio::spawn(async move {
            let made_room = pipeline.send(&sink, event("c"), 'c').await;
            (pipeline, made_room)
        });
        // The third event is held back while two are unsettled.
        let_others_run().await;
        assert!(events.try_recv().is_err(), "sent past the limit");
        let (_, b) = acks.pop().unwrap();
        b.send(RouteOutcome::Accepted).unwrap();
        let_others_run().await;
        assert!(events.try_recv().is_err(), "only the oldest makes room");
        let (_, a) = acks.pop().unwrap();
        a.send(RouteOutcome::Accepted).unwrap();
        let (mut pipeline, made_room) = third.await.unwrap();
        let tags: Vec<char> = made_room.into_iter().map(|s| s.tag).collect();
        assert_eq!(tags, vec!['a'], "one settled item makes room for one");
        let c = acks_one(&mut events).await;
        assert_eq!(c.0, "c");
        let tags: Vec<char> = pipeline.ready().into_iter().map(|s| s.tag).collect();
        assert_eq!(tags, vec!['b']);
        assert_eq!(pipeline.len(), 1);
        drop(c);
        assert!(pipeline.next().await.is_some());
    }

    /// Lets the spawned sender run as far as it can (the test runtime has one thread).
    async fn let_others_run() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    async fn acks_one(
        events: &mut mpsc::Receiver<ChannelEvent>,
    ) -> (String, oneshot::Sender<RouteOutcome>) {
        acks(events, 1).await.remove(0)
    }

    #[tokio::test]
    async fn a_dropped_ack_or_a_closed_host_counts_as_not_stored() {
        let (sink, mut events) = mpsc::channel(16);
        let mut pipeline = Pipeline::new(4);
        pipeline.send(&sink, event("x"), 1).await;
        let (_, ack) = acks_one(&mut events).await;
        drop(ack);
        let settled = pipeline.next().await.unwrap();
        assert_eq!(settled.tag, 1);
        assert!(!settled.is_settled());
        assert!(pipeline.next().await.is_none());

        drop(events);
        pipeline.send(&sink, event("y"), 2).await;
        let settled = pipeline.next().await.unwrap();
        assert_eq!(
            (settled.tag, settled.is_settled()),
            (2, false),
            "the host is gone"
        );
    }
}
