//! One page of a snapshot as the relay keeps it: the records already encoded as the JSON
//! array the protocol sends, so that a thousand readers of the page share one buffer.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Serialize;
use tidewire_shared::{Filter, Record, StreamName};

/// A page of records in key order, encoded once.
#[derive(Debug)]
pub struct Page {
    /// `[{"key":..,"seq":..,"data":..},...]`.
    json: Bytes,
    /// Where each record's object is in `json`.
    spans: Vec<(u32, u32)>,
    /// The last key of the page when more records follow (the next page's `after`).
    next: Option<Arc<str>>,
    /// The unfiltered `snapshot` message of the page for one chunk number: every session that
    /// sends the page as that chunk shares it.
    frame: OnceLock<(u32, Bytes)>,
}

impl Page {
    /// Encodes `records` (in key order); `more` says whether records follow the last one.
    pub fn new(records: &[Record], more: bool) -> Self {
        let mut json = Vec::with_capacity(records.len() * 64 + 2);
        let mut spans = Vec::with_capacity(records.len());
        json.push(b'[');
        for (index, record) in records.iter().enumerate() {
            if index > 0 {
                json.push(b',');
            }
            let start = offset(&json);
            // Writing into a Vec fails only for a type that refuses to serialize: a Record
            // does not.
            let _ = serde_json::to_writer(&mut json, record);
            spans.push((start, offset(&json)));
        }
        json.push(b']');
        let next = more
            .then(|| records.last().map(|record| Arc::from(record.key.as_str())))
            .flatten();
        Self {
            json: Bytes::from(json),
            spans,
            next,
            frame: OnceLock::new(),
        }
    }

    /// The records as a JSON array.
    pub fn json(&self) -> &Bytes {
        &self.json
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
        self.json.len()
            + self.spans.len() * std::mem::size_of::<(u32, u32)>()
            + self.frame.get().map_or(0, |(_, frame)| frame.len())
            + std::mem::size_of::<Self>()
    }

    /// The records `filter` lets through, as a JSON array, and how many they are.
    pub fn filtered(&self, filter: &Filter) -> (Bytes, usize) {
        let mut json = Vec::with_capacity(self.json.len());
        json.push(b'[');
        let mut count = 0;
        for &(start, end) in &self.spans {
            let Some(bytes) = self.json.get(start as usize..end as usize) else {
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

    /// The page as the unfiltered `snapshot` message `chunk` of `(epoch, seq)`: encoded once
    /// for the first chunk number asked, shared by every session that asks the same.
    pub fn frame(&self, stream: &StreamName, epoch: u64, seq: u64, chunk: u32) -> Bytes {
        let last = self.next.is_none();
        let encode = || snapshot_frame(stream, epoch, seq, chunk, last, &self.json);
        match self.frame.get() {
            Some((number, frame)) if *number == chunk => frame.clone(),
            Some(_) => encode(),
            None => self.frame.get_or_init(|| (chunk, encode())).1.clone(),
        }
    }
}

fn offset(json: &[u8]) -> u32 {
    u32::try_from(json.len()).unwrap_or(u32::MAX)
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
    #[derive(Serialize)]
    struct Head<'a> {
        r#type: &'static str,
        stream: &'a StreamName,
        epoch: u64,
        seq: u64,
        chunk: u32,
        last: bool,
    }
    let head = Head {
        r#type: "snapshot",
        stream,
        epoch,
        seq,
        chunk,
        last,
    };
    with_records(&head, records)
}

/// `head` (a struct, encoded as a JSON object) with a last field `"records"` whose value is
/// `records`, an encoded JSON array, copied as it is.
pub fn with_records(head: &impl Serialize, records: &[u8]) -> Bytes {
    let mut out = serde_json::to_vec(head).unwrap_or_else(|_| b"{}".to_vec());
    out.pop();
    if out.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(b"\"records\":");
    out.extend_from_slice(records);
    out.push(b'}');
    Bytes::from(out)
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
            let page = Page::new(&records(), more);
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
        assert_eq!(Page::new(&records(), true).next().map(|k| &**k), Some("b"));
        assert_eq!(Page::new(&records(), false).next(), None);
        let empty = Page::new(&[], false);
        assert!(empty.is_empty());
        assert_eq!(&empty.json()[..], b"[]");
    }

    #[test]
    fn filtered_keeps_matching_records_in_order() {
        let page = Page::new(&records(), false);
        let filter = Filter::parse_str(r#"{"owner":"u1"}"#).expect("filter");
        let (json, count) = page.filtered(&filter);
        assert_eq!(count, 1);
        let decoded: Vec<Record> = serde_json::from_slice(&json).expect("array");
        assert_eq!(decoded, records()[..1].to_vec());
        let none = Filter::parse_str(r#"{"owner":"u2"}"#).expect("filter");
        assert_eq!(page.filtered(&none), (Bytes::from_static(b"[]"), 0));
    }
}
