//! Unit tests of the protocol state: scripted server messages stand in for the relay, so
//! reconnects, duplicates, gaps and answers can be replayed exactly.

use std::sync::Arc;

use serde_json::json;
use tidewire_shared::fixtures::{event_message, snapshot_message, subscribed_message};
use tidewire_shared::message::{Advisory, AdvisoryKind, Publish, Subscribe};
use tidewire_shared::{
    ClientMessage, ErrorCode, Event, Op, Position, Record, ServerMessage, StreamName,
};
use tokio::sync::{mpsc, oneshot};

use super::{Output, State};
use crate::backoff::BackoffConfig;
use crate::error::{ClientError, ServerError};
use crate::stats::Counters;
use crate::subscription::{SubscribeOptions, SubscriptionEvent};

fn name(stream: &str) -> StreamName {
    StreamName::new(stream).expect("valid stream name")
}

fn new_state() -> (State, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    (
        State::new(BackoffConfig::default(), Arc::clone(&counters)),
        counters,
    )
}

/// The messages among `out`, draining it (also used by the tests of `writes`).
pub(super) fn sent(out: &mut Vec<Output>) -> Vec<ClientMessage> {
    out.drain(..)
        .filter_map(|output| match output {
            Output::Send(message) => Some(message),
            Output::RetryLater { .. } => None,
        })
        .collect()
}

/// Everything the subscription received so far.
fn received(events: &mut mpsc::UnboundedReceiver<SubscriptionEvent>) -> Vec<SubscriptionEvent> {
    let mut all = Vec::new();
    while let Ok(event) = events.try_recv() {
        all.push(event);
    }
    all
}

/// The seqs of the `Event`s among `events`.
fn seqs(events: &[SubscriptionEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|event| match event {
            SubscriptionEvent::Event(event) => Some(event.seq),
            _ => None,
        })
        .collect()
}

fn subscribe_message(stream: &str, since: Option<(u64, u64)>) -> ClientMessage {
    ClientMessage::Subscribe(Subscribe {
        stream: name(stream),
        since: since.map(|(epoch, seq)| Position { epoch, seq }),
        snapshot: true,
        filter: None,
    })
}

fn publish(id: &str) -> Publish {
    Publish {
        id: id.into(),
        stream: name("todos"),
        key: "k".into(),
        op: Op::Upsert,
        data: json!(1),
        write_id: None,
    }
}

/// A connected state with a live subscription to `todos` at (7, 2) after a snapshot.
fn live_todos() -> (
    State,
    Arc<Counters>,
    mpsc::UnboundedReceiver<SubscriptionEvent>,
    Vec<Output>,
) {
    let (mut state, counters) = new_state();
    let mut out = Vec::new();
    let (_, mut events) = state
        .subscribe(name("todos"), SubscribeOptions::default(), &mut out)
        .expect("first subscription");
    assert!(out.is_empty(), "nothing is sent before a connection exists");
    state.on_connected(&mut out);
    assert_eq!(sent(&mut out), vec![subscribe_message("todos", None)]);
    state.on_message(snapshot_message("todos", 7, 2), &mut out);
    state.on_message(subscribed_message("todos", 7, 2, false), &mut out);
    let first = received(&mut events);
    assert!(
        matches!(&first[0], SubscriptionEvent::Snapshot(snapshot) if snapshot.seq == 2 && snapshot.records.len() == 2)
    );
    assert_eq!(
        first[1],
        SubscriptionEvent::Live {
            epoch: 7,
            seq: 2,
            resumed: false
        }
    );
    (state, counters, events, out)
}

#[test]
fn acks_and_errors_are_matched_by_id() {
    let (mut state, counters, _events, mut out) = live_todos();
    let (first_reply, mut first) = oneshot::channel();
    let (second_reply, mut second) = oneshot::channel();
    state.publish(publish("p1"), first_reply, &mut out);
    state.publish(publish("p2"), second_reply, &mut out);
    assert_eq!(
        sent(&mut out),
        vec![
            ClientMessage::Publish(publish("p1")),
            ClientMessage::Publish(publish("p2"))
        ]
    );
    // Answers may come in any order; an unknown id is ignored.
    state.on_message(
        ServerMessage::Ack {
            id: "p2".into(),
            stream: name("todos"),
            seq: 9,
            replayed: false,
        },
        &mut out,
    );
    state.on_message(
        ServerMessage::Ack {
            id: "p99".into(),
            stream: name("todos"),
            seq: 10,
            replayed: false,
        },
        &mut out,
    );
    state.on_message(
        ServerMessage::error(Some("p1".into()), ErrorCode::Forbidden, "no write access"),
        &mut out,
    );
    assert_eq!(second.try_recv(), Ok(Ok(9)));
    let error = first.try_recv().expect("answered").expect_err("an error");
    assert_eq!(
        error,
        ClientError::Server(ServerError {
            code: ErrorCode::Forbidden,
            message: "no write access".into()
        })
    );
    assert!(!error.is_retryable());
    let stats = counters.snapshot();
    assert_eq!(
        (stats.publishes_sent, stats.acks, stats.publish_errors),
        (2, 1, 1)
    );
}

#[test]
fn reconnect_resumes_from_the_position_and_drops_duplicates() {
    let (mut state, counters, mut events, mut out) = live_todos();
    state.on_message(event_message("todos", 7, 3), &mut out);
    state.on_message(event_message("todos", 7, 4), &mut out);
    assert_eq!(seqs(&received(&mut events)), vec![3, 4]);

    // A publish is in flight when the connection drops.
    let (reply, mut answer) = oneshot::channel();
    state.publish(publish("p1"), reply, &mut out);
    sent(&mut out);
    state.on_disconnected("connection reset");
    assert_eq!(answer.try_recv(), Ok(Err(ClientError::ConnectionLost)));
    assert!(matches!(
        received(&mut events).as_slice(),
        [SubscriptionEvent::Disconnected { reason }] if reason == "connection reset"
    ));

    // The subscription is re-sent from seq 4; the relay (over-)replays from 3.
    state.on_connected(&mut out);
    assert_eq!(
        sent(&mut out),
        vec![subscribe_message("todos", Some((7, 4)))]
    );
    for seq in [3, 4, 5, 6] {
        state.on_message(event_message("todos", 7, seq), &mut out);
    }
    state.on_message(subscribed_message("todos", 7, 6, true), &mut out);
    state.on_message(event_message("todos", 7, 6), &mut out);
    state.on_message(event_message("todos", 7, 7), &mut out);
    let after = received(&mut events);
    assert_eq!(seqs(&after), vec![5, 6, 7]);
    assert!(after.contains(&SubscriptionEvent::Live {
        epoch: 7,
        seq: 6,
        resumed: true
    }));
    assert!(out.is_empty(), "duplicates need no recovery");
    let stats = counters.snapshot();
    assert_eq!(stats.duplicates_dropped, 3);
    assert_eq!(stats.events, 5);
    assert_eq!(stats.publishes_lost, 1);
}

#[test]
fn a_gap_asks_for_a_replay_and_nothing_is_skipped() {
    let (mut state, counters, mut events, mut out) = live_todos();
    state.on_message(event_message("todos", 7, 3), &mut out);
    state.on_message(event_message("todos", 7, 5), &mut out);
    assert_eq!(
        sent(&mut out),
        vec![subscribe_message("todos", Some((7, 3)))]
    );
    // Later events that do not continue seq 3 are dropped until the replay arrives.
    state.on_message(event_message("todos", 7, 6), &mut out);
    assert!(out.is_empty(), "one replay request is enough");
    for seq in [4, 5, 6] {
        state.on_message(event_message("todos", 7, seq), &mut out);
    }
    state.on_message(subscribed_message("todos", 7, 6, true), &mut out);
    let delivered = received(&mut events);
    assert_eq!(
        delivered[0],
        SubscriptionEvent::Event(match event_message("todos", 7, 3) {
            ServerMessage::Event(event) => event,
            _ => unreachable!("built as an event"),
        })
    );
    assert_eq!(
        delivered[1],
        SubscriptionEvent::Gap {
            from: 4,
            to: Some(4)
        }
    );
    assert_eq!(seqs(&delivered), vec![3, 4, 5, 6]);
    let stats = counters.snapshot();
    assert_eq!((stats.gaps, stats.out_of_order_dropped), (1, 1));
}

#[test]
fn a_subscribed_ahead_of_the_position_is_not_trusted() {
    let (mut state, _counters, mut events, mut out) = live_todos();
    state.on_disconnected("gone");
    state.on_connected(&mut out);
    sent(&mut out);
    // The relay claims seq 5 but sent nothing after 2: ask again from 2.
    state.on_message(subscribed_message("todos", 7, 5, true), &mut out);
    assert_eq!(
        sent(&mut out),
        vec![subscribe_message("todos", Some((7, 2)))]
    );
    assert!(!received(&mut events)
        .iter()
        .any(|event| matches!(event, SubscriptionEvent::Live { .. })));
}

#[test]
fn resync_replaces_the_position_with_the_snapshot() {
    let (mut state, counters, mut events, mut out) = live_todos();
    state.on_message(
        ServerMessage::Advisory(
            Advisory::new(AdvisoryKind::Resync)
                .stream(name("todos"))
                .epoch(8)
                .reason("new epoch"),
        ),
        &mut out,
    );
    state.on_message(snapshot_message("todos", 8, 1), &mut out);
    state.on_message(subscribed_message("todos", 8, 1, false), &mut out);
    state.on_message(event_message("todos", 8, 2), &mut out);
    let delivered = received(&mut events);
    assert_eq!(
        delivered[0],
        SubscriptionEvent::Resync {
            reason: "new epoch".into()
        }
    );
    assert!(matches!(&delivered[1], SubscriptionEvent::Snapshot(snapshot) if snapshot.epoch == 8));
    assert_eq!(seqs(&delivered), vec![2]);
    assert_eq!(counters.snapshot().resyncs, 1);
    // An event of the old epoch makes the client ask again rather than apply it.
    state.on_message(event_message("todos", 7, 3), &mut out);
    assert_eq!(
        sent(&mut out),
        vec![subscribe_message("todos", Some((8, 2)))]
    );
}

#[test]
fn publishes_made_offline_wait_for_the_connection() {
    let (mut state, _counters) = new_state();
    let mut out = Vec::new();
    let (kept, mut kept_answer) = oneshot::channel();
    let (abandoned, abandoned_answer) = oneshot::channel();
    state.publish(publish("p1"), kept, &mut out);
    state.publish(publish("p2"), abandoned, &mut out);
    assert!(out.is_empty());
    // The second caller timed out: its write must not be sent later.
    drop(abandoned_answer);
    state.on_connected(&mut out);
    assert_eq!(sent(&mut out), vec![ClientMessage::Publish(publish("p1"))]);
    state.on_message(
        ServerMessage::Ack {
            id: "p1".into(),
            stream: name("todos"),
            seq: 1,
            replayed: false,
        },
        &mut out,
    );
    assert_eq!(kept_answer.try_recv(), Ok(Ok(1)));
}

#[test]
fn messages_of_an_ended_subscription_are_not_delivered_to_the_next() {
    let (mut state, _counters, events, mut out) = live_todos();
    state.unsubscribe(&name("todos"), 1, &mut out);
    drop(events);
    let (_, mut events) = state
        .subscribe(name("todos"), SubscribeOptions::default(), &mut out)
        .expect("the old one is gone");
    assert_eq!(
        sent(&mut out),
        vec![
            ClientMessage::Unsubscribe {
                stream: name("todos")
            },
            subscribe_message("todos", None)
        ]
    );
    // In flight for the old subscription, then its `unsubscribed`, then the new one's answer.
    state.on_message(event_message("todos", 7, 3), &mut out);
    state.on_message(
        ServerMessage::Unsubscribed {
            stream: name("todos"),
        },
        &mut out,
    );
    state.on_message(snapshot_message("todos", 7, 3), &mut out);
    state.on_message(subscribed_message("todos", 7, 3, false), &mut out);
    let delivered = received(&mut events);
    assert!(matches!(&delivered[0], SubscriptionEvent::Snapshot(snapshot) if snapshot.seq == 3));
    assert!(seqs(&delivered).is_empty());
    assert!(
        out.is_empty(),
        "the expected `unsubscribed` triggers no retry"
    );
}

#[test]
fn one_subscription_per_stream() {
    let (mut state, _counters, _events, mut out) = live_todos();
    let again = state.subscribe(name("todos"), SubscribeOptions::default(), &mut out);
    assert!(
        matches!(again, Err(ClientError::AlreadySubscribed(stream)) if stream.as_str() == "todos")
    );
    // Unsubscribing with a stale id leaves the live subscription alone.
    state.unsubscribe(&name("todos"), 999, &mut out);
    assert!(out.is_empty());
}

#[test]
fn subscribe_errors_retry_when_transient_and_end_otherwise() {
    let (mut state, _counters) = new_state();
    let mut out = Vec::new();
    let (busy_id, mut busy) = state
        .subscribe(name("busy"), SubscribeOptions::default(), &mut out)
        .expect("subscribes");
    let (_, mut secret) = state
        .subscribe(name("secret"), SubscribeOptions::default(), &mut out)
        .expect("subscribes");
    state.on_connected(&mut out);
    out.clear();
    let error = |stream: &str, code| ServerMessage::Error {
        id: None,
        stream: Some(stream.to_owned()),
        code,
        message: "no".into(),
    };
    state.on_message(error("busy", ErrorCode::Unavailable), &mut out);
    state.on_message(error("secret", ErrorCode::Forbidden), &mut out);
    assert!(matches!(
        out.as_slice(),
        [Output::RetryLater { stream, id, .. }] if stream.as_str() == "busy" && *id == busy_id
    ));
    out.clear();
    state.retry(&name("busy"), busy_id, &mut out);
    assert_eq!(sent(&mut out), vec![subscribe_message("busy", None)]);
    assert!(
        matches!(received(&mut busy).as_slice(), [SubscriptionEvent::Error(error)] if error.code == ErrorCode::Unavailable)
    );
    // The refused subscription ended: its channel is closed after the error.
    assert!(matches!(secret.try_recv(), Ok(SubscriptionEvent::Error(_))));
    assert_eq!(
        secret.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    );
}

#[test]
fn an_unexpected_unsubscribed_is_retried_from_the_position() {
    let (mut state, _counters, _events, mut out) = live_todos();
    state.on_message(event_message("todos", 7, 3), &mut out);
    state.on_message(
        ServerMessage::Unsubscribed {
            stream: name("todos"),
        },
        &mut out,
    );
    let Some(Output::RetryLater { stream, id, .. }) = out.pop() else {
        panic!("expected a retry, got {out:?}");
    };
    state.retry(&stream, id, &mut out);
    assert_eq!(
        sent(&mut out),
        vec![subscribe_message("todos", Some((7, 3)))]
    );
}

#[test]
fn raw_channels_deduplicate_and_report_relay_gaps() {
    let (mut state, counters) = new_state();
    let mut out = Vec::new();
    let options = SubscribeOptions {
        since: None,
        snapshot: false,
        filter: None,
    };
    let (_, mut events) = state
        .subscribe(name("raw:orders"), options, &mut out)
        .expect("subscribes");
    state.on_connected(&mut out);
    out.clear();
    state.on_message(subscribed_message("raw:orders", 900, 0, false), &mut out);
    for seq in [10, 11, 11, 13] {
        state.on_message(event_message("raw:orders", 900, seq), &mut out);
    }
    state.on_message(
        ServerMessage::Advisory(
            Advisory::new(AdvisoryKind::Gap)
                .stream(name("raw:orders"))
                .epoch(900)
                .range(14, 20),
        ),
        &mut out,
    );
    // Another relay (another boot epoch) starts its own seqs.
    state.on_message(event_message("raw:orders", 901, 1), &mut out);
    let delivered = received(&mut events);
    assert_eq!(seqs(&delivered), vec![10, 11, 13, 1]);
    assert!(delivered.contains(&SubscriptionEvent::Gap {
        from: 14,
        to: Some(20)
    }));
    assert!(out.is_empty(), "raw channels never ask for replays");
    assert_eq!(counters.snapshot().duplicates_dropped, 1);
}

#[test]
fn ephemeral_messages_and_connection_advisories_reach_every_subscriber() {
    let (mut state, _counters, mut events, mut out) = live_todos();
    let message = Event {
        stream: name("todos"),
        epoch: 7,
        seq: 0,
        key: "cursor".into(),
        op: Op::Message,
        data: json!({"x": 1}),
        prev: None,
        ts: None,
    };
    state.on_message(ServerMessage::Event(message.clone()), &mut out);
    state.on_message(ServerMessage::Event(message.clone()), &mut out);
    state.on_message(
        ServerMessage::Advisory(Advisory::new(AdvisoryKind::Disconnect)),
        &mut out,
    );
    let delivered = received(&mut events);
    assert_eq!(delivered.len(), 3);
    assert_eq!(delivered[0], SubscriptionEvent::Event(message));
    assert!(
        matches!(&delivered[2], SubscriptionEvent::Advisory(advisory) if advisory.kind == AdvisoryKind::Disconnect)
    );
}

#[test]
fn chunked_snapshots_are_reassembled() {
    let (mut state, _counters) = new_state();
    let mut out = Vec::new();
    let (_, mut events) = state
        .subscribe(name("big"), SubscribeOptions::default(), &mut out)
        .expect("subscribes");
    state.on_connected(&mut out);
    for (chunk, last) in [(0, false), (1, false), (2, true)] {
        state.on_message(
            ServerMessage::Snapshot {
                stream: name("big"),
                epoch: 1,
                seq: 30,
                chunk,
                last,
                records: vec![Record {
                    key: format!("k{chunk}"),
                    seq: u64::from(chunk) + 1,
                    data: json!(chunk),
                }],
            },
            &mut out,
        );
    }
    let delivered = received(&mut events);
    assert!(
        matches!(delivered.as_slice(), [SubscriptionEvent::Snapshot(snapshot)] if snapshot.records.len() == 3 && snapshot.seq == 30)
    );
}

#[test]
fn closing_fails_everything_waiting() {
    let (mut state, _counters, mut events, mut out) = live_todos();
    let (sent_reply, mut sent_answer) = oneshot::channel();
    state.publish(publish("p1"), sent_reply, &mut out);
    state.on_disconnected("bye");
    let (queued_reply, mut queued_answer) = oneshot::channel();
    state.publish(publish("p2"), queued_reply, &mut out);
    state.close(&ClientError::Closed);
    assert_eq!(sent_answer.try_recv(), Ok(Err(ClientError::ConnectionLost)));
    assert_eq!(queued_answer.try_recv(), Ok(Err(ClientError::Closed)));
    received(&mut events);
    assert_eq!(
        events.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    );
}

/// A view's event at `seq` naming `prev`.
fn view_event(seq: u64, prev: u64) -> ServerMessage {
    ServerMessage::Event(Event {
        prev: Some(prev),
        ..tidewire_shared::fixtures::event("tasks", 7, seq)
    })
}

#[test]
fn a_view_follows_prev_and_is_complete_up_to_subscribed() {
    let (mut state, counters) = new_state();
    let mut out = Vec::new();
    let options = SubscribeOptions::filtered(json!({"owner": "u1"}));
    let (_, mut events) = state
        .subscribe(name("tasks"), options, &mut out)
        .expect("subscribes");
    state.on_connected(&mut out);
    let subscribe = sent(&mut out);
    assert!(
        matches!(
            &subscribe[..],
            [ClientMessage::Subscribe(Subscribe {
                filter: Some(_),
                ..
            })]
        ),
        "{subscribe:?}"
    );
    state.on_message(snapshot_message("tasks", 7, 2), &mut out);
    // A resume ends past the last event the view got: the view is complete up to it.
    state.on_message(subscribed_message("tasks", 7, 4, false), &mut out);
    state.on_message(view_event(7, 4), &mut out);
    state.on_message(view_event(9, 7), &mut out);
    assert!(
        sent(&mut out).is_empty(),
        "no recovery for seqs the view skipped"
    );
    assert_eq!(seqs(&received(&mut events)), [7, 9]);
    assert_eq!(counters.snapshot().gaps, 0);
    // A prev that is not our position is a gap: reported, and the subscribe re-sent from 9.
    state.on_message(view_event(15, 12), &mut out);
    let resent = sent(&mut out);
    assert!(
        matches!(
            &resent[..],
            [ClientMessage::Subscribe(Subscribe {
                since: Some(Position { seq: 9, .. }),
                filter: Some(_),
                ..
            })]
        ),
        "{resent:?}"
    );
    assert!(received(&mut events).iter().any(|event| matches!(
        event,
        SubscriptionEvent::Gap {
            from: 10,
            to: Some(14)
        }
    )));
}
