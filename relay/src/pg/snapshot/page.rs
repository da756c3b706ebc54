//! One page of a snapshot as the relay keeps it: the records already encoded as the JSON
//! array the protocol sends, so that a thousand readers of the page share one buffer.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tidewire_shared::{Filter, Record, StreamName};

/// A page of records in key order, encoded once as the `snapshot` message it is sent as.
#[derive(Debug)]
pub struct Page {
    /// The unfiltered `snapshot` message of the page as chunk number `chunk`: every session
    /// that sends the page as that chunk shares it, and the records array inside it serves
    /// everyone else, so the page is held once.
    frame: Bytes,
    /// The chunk number `frame` was encoded for.
    chunk: u32,
    /// Where `[{"key":..,"seq":..,"data":..},...]` is in `frame`.
    json: (usize, usize),
    /// Where each record's object is in `frame`.
    spans: Vec<(u32, u32)>,
    /// The last key of the page when more records follow (the next page's `after`).
    next: Option<Arc<str>>,
}

impl Page {
    /// Encodes `records` (in key order) of the snapshot of `stream` at `(epoch, seq)` as chunk
    /// number `chunk`; `more` says whether records follow the last one.
    pub fn new(
        stream: &StreamName,
        (epoch, seq): (u64, u64),
        chunk: u32,
        records: &[Record],
        more: bool,
    ) -> Self {
        let head = SnapshotHead::new(stream, epoch, seq, chunk, !more);
        let mut frame = open_records(&head);
        frame.reserve(records.len() * 64 + 3);
        let json_start = frame.len();
        let mut spans = Vec::with_capacity(records.len());
        frame.push(b'[');
        for (index, record) in records.iter().enumerate() {
            if index > 0 {
                frame.push(b',');
            }
            let start = offset(&frame);
            // Writing into a Vec fails only for a type that refuses to serialize: a Record
            // does not.
            let _ = serde_json::to_writer(&mut frame, record);
            spans.push((start, offset(&frame)));
        }
        frame.push(b']');
        let json_end = frame.len();
        frame.push(b'}');
        let next = more
            .then(|| records.last().map(|record| Arc::from(record.key.as_str())))
            .flatten();
        Self {
            frame: Bytes::from(frame),
            chunk,
            json: (json_start, json_end),
            spans,
            next,
        }
    }

    /// The records as a JSON array (a view into the page, not a copy).
    pub fn json(&self) -> Bytes {
        self.frame.slice(self.json.0..self.json.1)
    }

    /// How many records the page holds.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True if the page holds no record.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `after` of the next page, or `None` if this is the last page.
    pub fn next(&self) -> Option<&Arc<str>> {
        self.next.as_ref()
    }

    /// Memory the page holds, for the cache's budget.
    pub fn bytes(&self) -> usize {
        self.frame.len()
            + self.spans.len() * std::mem::size_of::<(u32, u32)>()
            + std::mem::size_of::<Self>()
    }

    /// The records `filter` lets through, as a JSON array, and how many they are.
    pub fn filtered(&self, filter: &Filter) -> (Bytes, usize) {
        let mut json = Vec::with_capacity(self.json.1 - self.json.0);
        json.push(b'[');
        let mut count = 0;
        for &(start, end) in &self.spans {
            let Some(bytes) = self.frame.get(start as usize..end as usize) else {
                continue;
            };
            // The page encoded these bytes itself from a Record: they decode.
            let Ok(record) = serde_json::from_slice::<Record>(bytes) else {
                continue;
            };
            if filter.matches(&record.data) {
                if count > 0 {
                    json.push(b',');
                }
                json.extend_from_slice(bytes);
                count += 1;
            }
        }
        json.push(b']');
        (Bytes::from(json), count)
    }

    /// The page as the unfiltered `snapshot` message `chunk` of `(epoch, seq)`: the shared
    /// encoding when `chunk` is the number the page was read for, else a new one.
    pub fn frame(&self, stream: &StreamName, epoch: u64, seq: u64, chunk: u32) -> Bytes {
        if chunk == self.chunk {
            return self.frame.clone();
        }
        let records = self.frame.get(self.json.0..self.json.1).unwrap_or(b"[]");
        snapshot_frame(stream, epoch, seq, chunk, self.next.is_none(), records)
    }
}

fn offset(json: &[u8]) -> u32 {
    u32::try_from(json.len()).unwrap_or(u32::MAX)
}

/// The fields of a `snapshot` message before its records.
#[derive(Serialize)]
struct SnapshotHead<'a> {
    r#type: &'static str,
    stream: &'a StreamName,
    epoch: u64,
    seq: u64,
    chunk: u32,
    last: bool,
}

impl<'a> SnapshotHead<'a> {
    fn new(stream: &'a StreamName, epoch: u64, seq: u64, chunk: u32, last: bool) -> Self {
        Self {
            r#type: "snapshot",
            stream,
            epoch,
            seq,
            chunk,
            last,
        }
    }
}

/// The `snapshot` server message with `records` (an encoded JSON array) spliced in: the same
/// bytes as `ServerMessage::Snapshot { .. }.encode()` (a test holds them equal), without
/// decoding the records.
pub fn snapshot_frame(
    stream: &StreamName,
    epoch: u64,
    seq: u64,
    chunk: u32,
    last: bool,
    records: &[u8],
) -> Bytes {
    with_records(&SnapshotHead::new(stream, epoch, seq, chunk, last), records)
}

/// `head` (a struct, encoded as a JSON object) with a last field `"records"` whose value is
/// `records`, an encoded JSON array, copied as it is.
pub fn with_records(head: &impl Serialize, records: &[u8]) -> Bytes {
    let mut out = open_records(head);
    out.extend_from_slice(records);
    out.push(b'}');
    Bytes::from(out)
}

/// `head` encoded as a JSON object left open after `"records":`.
fn open_records(head: &impl Serialize) -> Vec<u8> {
    let mut out = serde_json::to_vec(head).unwrap_or_else(|_| b"{}".to_vec());
    out.pop();
    if out.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(b"\"records\":");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidewire_shared::ServerMessage;

    fn records() -> Vec<Record> {
        vec![
            Record {
                key: "a\"1".into(),
                seq: 3,
                data: json!({"owner": "u1", "n": 1.5}),
            },
            Record {
                key: "b".into(),
                seq: 9,
                data: json!(null),
            },
        ]
    }

    #[test]
    fn frame_is_the_snapshot_message() {
        let stream = StreamName::new("todos").expect("valid");
        for more in [false, true] {
            let page = Page::new(&stream, (7, 12), 3, &records(), more);
            let expected = ServerMessage::Snapshot {
                stream: stream.clone(),
                epoch: 7,
                seq: 12,
                chunk: 3,
                last: !more,
                records: records(),
            }
            .encode();
            assert_eq!(page.frame(&stream, 7, 12, 3), expected.as_bytes());
            // A second chunk number is encoded apart, the first stays shared.
            assert_ne!(page.frame(&stream, 7, 12, 4), expected.as_bytes());
            assert_eq!(page.frame(&stream, 7, 12, 3), expected.as_bytes());
        }
    }

    #[test]
    fn next_is_the_last_key_only_when_more_follow() {
        let stream = StreamName::new("s").expect("valid");
        let page = |records: &[Record], more| Page::new(&stream, (1, 2), 0, records, more);
        assert_eq!(page(&records(), true).next().map(|k| &**k), Some("b"));
        assert_eq!(page(&records(), false).next(), None);
        let empty = page(&[], false);
        assert!(empty.is_empty());
        assert_eq!(&empty.json()[..], b"[]");
    }

    #[test]
    fn filtered_keeps_matching_records_in_order() {
        let stream = StreamName::new("s").expect("valid");
        let page = Page::new(&stream, (1, 2), 0, &records(), false);
        assert_eq!(
            serde_json::from_slice::<Vec<Record>>(&page.json()).expect("array"),
            records()
        );
        let filter = Filter::parse_str(r#"{"owner":"u1"}"#).expect("filter");
        let (json, count) = page.filtered(&filter);
        assert_eq!(count, 1);
        let decoded: Vec<Record> = serde_json::from_slice(&json).expect("array");
        assert_eq!(decoded, records()[..1].to_vec());
        let none = Filter::parse_str(r#"{"owner":"u2"}"#).expect("filter");
        assert_eq!(page.filtered(&none), (Bytes::from_static(b"[]"), 0));
    }
}
