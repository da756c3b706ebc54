//! Test fixtures of the protocol's values (feature `test-util`, never in a release build): the
//! events, snapshots and server messages that tests of both clients and the relay build
//! again and again. Record `k{seq}` of a stream holds `{"seq": seq}`.

use serde_json::{json, Value};

use crate::event::{Event, Op};
use crate::message::ServerMessage;
use crate::snapshot::Record;
use crate::stream::StreamName;

/// `name` as a stream name.
///
/// # Panics
///
/// When `name` breaks the naming rule (a bug in the test).
pub fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("bug: a test's stream name is valid")
}

/// The value of record `k{seq}`: `{"seq": seq}`.
pub fn value(seq: u64) -> Value {
    json!({ "seq": seq })
}

/// The upsert of record `k{seq}` at `(epoch, seq)` on `name`.
pub fn event(name: &str, epoch: u64, seq: u64) -> Event {
    Event {
        stream: stream(name),
        epoch,
        seq,
        key: format!("k{seq}"),
        op: Op::Upsert,
        data: value(seq),
        prev: None,
        ts: None,
    }
}

/// Records `k1..=k{seq}`, each written at its own seq.
pub fn records(seq: u64) -> Vec<Record> {
    (1..=seq)
        .map(|seq| Record {
            key: format!("k{seq}"),
            seq,
            data: value(seq),
        })
        .collect()
}

/// The `event` message of [`event`].
pub fn event_message(name: &str, epoch: u64, seq: u64) -> ServerMessage {
    ServerMessage::Event(event(name, epoch, seq))
}

/// A one-chunk `snapshot` message at `(epoch, seq)` holding [`records`]`(seq)`.
pub fn snapshot_message(name: &str, epoch: u64, seq: u64) -> ServerMessage {
    ServerMessage::Snapshot {
        stream: stream(name),
        epoch,
        seq,
        chunk: 0,
        last: true,
        records: records(seq),
    }
}

/// The `subscribed` message at `(epoch, seq)`.
pub fn subscribed_message(name: &str, epoch: u64, seq: u64, resumed: bool) -> ServerMessage {
    ServerMessage::Subscribed {
        stream: stream(name),
        epoch,
        seq,
        resumed,
    }
}
