//! A filtered subscription's side of the session: judging each event for the view, and
//! writing it with `prev`, the position the client had after the previous positioned message
//! of the subscription (snapshot, `subscribed` or event). A client whose position equals
//! `prev` has missed nothing: the seqs in between did not concern its view.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tidewire_shared::view::{judge, Verdict};
use tidewire_shared::{Event, Filter, Op, ServerMessage, StreamName};

use crate::delivery::Change;

/// The state of a view: its filter (the client's `where` ANDed with the grant's) and the
/// position last told to the client.
#[derive(Debug, Clone)]
pub(super) struct View {
    /// What the subscription receives.
    pub(super) filter: Arc<Filter>,
    /// The seq of the last positioned message sent on the subscription: the next event's
    /// `prev`.
    pub(super) sent: u64,
}

/// Where an event is, for encoding.
pub(super) struct At<'a> {
    pub(super) stream: &'a StreamName,
    pub(super) epoch: u64,
    pub(super) seq: u64,
}

/// The message a view gets for a durable event whose shared encoding is `json`, or `None`
/// when the event does not concern it.
pub(super) fn event_frame(
    filter: &Filter,
    at: &At<'_>,
    json: &Bytes,
    change: &Change,
    prev: u64,
) -> Option<Bytes> {
    let (verdict, record) = judge(filter, change.op, change.prior.as_ref(), &change.data);
    let (op, data) = match verdict {
        Verdict::Skip => return None,
        Verdict::Pass => return Some(with_prev(json, prev)),
        Verdict::MoveIn => (Op::Upsert, record.unwrap_or_default()),
        Verdict::MoveOut => (Op::Delete, serde_json::Value::Null),
    };
    let event = Event {
        stream: at.stream.clone(),
        epoch: at.epoch,
        seq: at.seq,
        key: change.key.clone(),
        op,
        data,
        prev: Some(prev),
        ts: change.ts,
    };
    Some(Bytes::from(ServerMessage::encode_event(&event)))
}

/// The record change of a replayed frame: its event decoded again, with its pre-image. Only
/// views pay this; the replay cache keeps frames encoded.
pub(super) fn replayed_change(json: &Bytes, prior: Option<&Bytes>) -> Option<Change> {
    let limits = tidewire_shared::DecodeLimits {
        max_bytes: usize::MAX,
        max_depth: tidewire_shared::DecodeLimits::DEFAULT_MAX_DEPTH,
    };
    let Ok(ServerMessage::Event(event)) = tidewire_shared::message::decode_server(json, &limits)
    else {
        return None;
    };
    let prior = match prior {
        None => None,
        Some(text) => Some(serde_json::from_slice(text).ok()?),
    };
    Some(Change {
        key: event.key,
        op: event.op,
        data: event.data,
        prior,
        ts: event.ts,
    })
}

/// Whether a view gets an ephemeral message: when its data matches the filter.
pub(super) fn wants_message(filter: &Filter, change: Option<&Change>) -> bool {
    change.is_some_and(|change| change.op == Op::Message && filter.matches(&change.data))
}

/// `json` (an encoded `event` object) with `"prev":N` added before its closing brace: the
/// shared encoding is reused, one copy per filtered subscriber.
fn with_prev(json: &Bytes, prev: u64) -> Bytes {
    let Some(body) = json.strip_suffix(b"}") else {
        return json.clone();
    };
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(prev);
    let mut out = BytesMut::with_capacity(json.len() + 9 + digits.len());
    out.put_slice(body);
    out.put_slice(b",\"prev\":");
    out.put_slice(digits.as_bytes());
    out.put_u8(b'}');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tidewire_shared::message::decode_server;
    use tidewire_shared::DecodeLimits;

    use super::*;

    fn decoded(bytes: &Bytes) -> Event {
        match decode_server(bytes, &DecodeLimits::default()) {
            Ok(ServerMessage::Event(event)) => event,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn pass_move_in_move_out_and_skip() {
        let stream = StreamName::new("tasks").expect("valid");
        let at = At {
            stream: &stream,
            epoch: 3,
            seq: 9,
        };
        let filter = Filter::parse(&json!({"owner": "u1"})).expect("valid");
        let change = |prior: serde_json::Value, data: serde_json::Value| Change {
            key: "k".into(),
            op: Op::Patch,
            data,
            prior: Some(prior),
            ts: Some(1),
        };
        let shared = Event {
            stream: stream.clone(),
            epoch: 3,
            seq: 9,
            key: "k".into(),
            op: Op::Patch,
            data: json!({"title": "x"}),
            prev: None,
            ts: Some(1),
        };
        let json = Bytes::from(ServerMessage::encode_event(&shared));

        let pass = event_frame(
            &filter,
            &at,
            &json,
            &change(json!({"owner": "u1"}), json!({"title": "x"})),
            4,
        );
        assert_eq!(
            pass.map(|bytes| decoded(&bytes)),
            Some(Event {
                prev: Some(4),
                ..shared.clone()
            })
        );

        let moved_in = event_frame(
            &filter,
            &at,
            &json,
            &change(json!({"owner": "u2", "a": 1}), json!({"owner": "u1"})),
            4,
        )
        .map(|bytes| decoded(&bytes))
        .expect("a move-in");
        assert_eq!(
            (moved_in.op, moved_in.data, moved_in.prev),
            (Op::Upsert, json!({"owner": "u1", "a": 1}), Some(4))
        );

        let moved_out = event_frame(
            &filter,
            &at,
            &json,
            &change(json!({"owner": "u1"}), json!({"owner": "u2"})),
            4,
        )
        .map(|bytes| decoded(&bytes))
        .expect("a move-out");
        assert_eq!(
            (moved_out.op, moved_out.data),
            (Op::Delete, serde_json::Value::Null)
        );

        assert!(event_frame(
            &filter,
            &at,
            &json,
            &change(json!({"owner": "u2"}), json!({"a": 2})),
            4
        )
        .is_none());
    }
}
