//! The client's publishes waiting for their answer: queued while disconnected, in flight on
//! the connection, and queued again when a connection drops while they carry a write id (the
//! relay answers a resend of a write that committed with its seq: docs/PROTOCOL.md,
//! "Exactly-once writes"). Part of the sans-IO [`State`](super::State).

use std::collections::{HashMap, VecDeque};

use tidewire_shared::message::Publish;
use tidewire_shared::ClientMessage;

use super::{Output, PublishReply};
use crate::error::ClientError;
use crate::stats::{add, bump, Counters};

/// One publish and where its answer goes.
#[derive(Debug)]
struct Pending {
    message: Publish,
    reply: PublishReply,
    /// When it was made: a resend keeps the caller's order.
    order: u64,
}

/// Every publish not answered yet.
#[derive(Debug, Default)]
pub(super) struct Writes {
    /// Sent on the current connection, by op id.
    in_flight: HashMap<String, Pending>,
    /// Waiting for the next connection, in order.
    queued: VecDeque<Pending>,
    /// The `order` of the next publish.
    next_order: u64,
}

impl Writes {
    /// Sends `message` now if `connected`, else queues it for the next connection.
    pub(super) fn publish(
        &mut self,
        message: Publish,
        reply: PublishReply,
        connected: bool,
        counters: &Counters,
        out: &mut Vec<Output>,
    ) {
        if reply.is_closed() {
            return;
        }
        let pending = Pending {
            message,
            reply,
            order: self.next_order,
        };
        self.next_order += 1;
        if connected {
            self.send(pending, counters, out);
        } else {
            self.queued.push_back(pending);
        }
    }

    fn send(&mut self, mut pending: Pending, counters: &Counters, out: &mut Vec<Output>) {
        // Only writes with an id are sent again, so only they keep their data.
        let message = if pending.message.write_id.is_some() {
            pending.message.clone()
        } else {
            let data = std::mem::take(&mut pending.message.data);
            Publish {
                data,
                ..pending.message.clone()
            }
        };
        out.push(Output::Send(ClientMessage::Publish(message)));
        bump(&counters.publishes_sent);
        self.in_flight.insert(pending.message.id.clone(), pending);
    }

    /// A connection is up: sends every queued publish whose caller still waits.
    pub(super) fn on_connected(&mut self, counters: &Counters, out: &mut Vec<Output>) {
        while let Some(pending) = self.queued.pop_front() {
            // A caller that timed out must not see its write commit later.
            if !pending.reply.is_closed() {
                self.send(pending, counters, out);
            }
        }
    }

    /// The connection dropped: publishes in flight that carry a write id are queued again,
    /// ahead of the others and in their first order; the rest (ephemeral messages) fail with
    /// [`ClientError::ConnectionLost`]: they may have been sent.
    pub(super) fn on_disconnected(&mut self, counters: &Counters) {
        let mut resend = Vec::new();
        for (_, pending) in self.in_flight.drain() {
            if pending.message.write_id.is_some() {
                resend.push(pending);
            } else {
                bump(&counters.publishes_lost);
                // The caller may have timed out already; nobody to tell then.
                let _ = pending.reply.send(Err(ClientError::ConnectionLost));
            }
        }
        add(&counters.publishes_resent, resend.len() as u64);
        resend.sort_by_key(|pending| std::cmp::Reverse(pending.order));
        for pending in resend {
            self.queued.push_front(pending);
        }
    }

    /// The client stops: every waiting publish fails with `error`.
    pub(super) fn close(&mut self, error: &ClientError) {
        let in_flight = self.in_flight.drain().map(|(_, pending)| pending);
        for pending in in_flight.chain(self.queued.drain(..)) {
            // The caller may have timed out already; nobody to tell then.
            let _ = pending.reply.send(Err(error.clone()));
        }
    }

    /// The reply of the publish in flight with op id `id`, which the relay just answered.
    pub(super) fn answered(&mut self, id: &str) -> Option<PublishReply> {
        self.in_flight.remove(id).map(|pending| pending.reply)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tidewire_shared::{Op, StreamName};
    use tokio::sync::oneshot;

    use super::*;
    use crate::state::tests::sent;

    fn publish(id: &str, write_id: Option<&str>) -> Publish {
        Publish {
            id: id.into(),
            stream: StreamName::new("todos").expect("valid"),
            key: "k".into(),
            op: Op::Upsert,
            data: json!(1),
            write_id: write_id.map(str::to_owned),
        }
    }

    #[test]
    fn writes_with_write_ids_are_resent_in_order_after_a_reconnect() {
        let counters = Counters::default();
        let mut writes = Writes::default();
        let mut out = Vec::new();
        let made = [
            publish("p1", Some("w.1")),
            publish("p2", None),
            publish("p3", Some("w.3")),
        ];
        let mut answers = Vec::new();
        for message in made.clone() {
            let (reply, answer) = oneshot::channel();
            writes.publish(message, reply, true, &counters, &mut out);
            answers.push(answer);
        }
        assert_eq!(sent(&mut out).len(), 3);
        writes.on_disconnected(&counters);
        let (reply, mut queued_answer) = oneshot::channel();
        let made_offline = publish("p4", Some("w.4"));
        writes.publish(made_offline.clone(), reply, false, &counters, &mut out);
        // Only the write without an id fails; the others wait for the next connection.
        assert_eq!(answers[1].try_recv(), Ok(Err(ClientError::ConnectionLost)));
        assert!(answers[0].try_recv().is_err() && answers[2].try_recv().is_err());
        writes.on_connected(&counters, &mut out);
        let [first, _, third] = made;
        let expected = [first, third, made_offline].map(ClientMessage::Publish);
        assert_eq!(sent(&mut out), expected);
        let reply = writes.answered("p1").expect("p1 is in flight again");
        reply.send(Ok(3)).expect("the caller waits");
        assert_eq!(answers[0].try_recv(), Ok(Ok(3)));
        assert!(queued_answer.try_recv().is_err(), "p4 waits for its answer");
        let stats = counters.snapshot();
        assert_eq!((stats.publishes_lost, stats.publishes_resent), (1, 2));
        assert_eq!(stats.publishes_sent, 6);
    }
}
