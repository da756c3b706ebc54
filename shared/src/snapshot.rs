//! Snapshots: a stream's records at one `(epoch, seq)`, and reassembly of chunked snapshots.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One record of a snapshot: the current value of a key and the seq that last wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record<D = Value> {
    /// The record key.
    pub key: String,
    /// The seq of the last event that changed this record.
    pub seq: u64,
    /// The current value (a [`Json`](crate::Json) text in the clients).
    pub data: D,
}

/// A consistent view of a durable stream: every live record as of `seq` in `epoch`. The
/// relay sends records in key order, page by page; [`crate::Collection::snapshot`] orders
/// them by record seq (oldest write first), then key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot<D = Value> {
    /// The stream's epoch.
    pub epoch: u64,
    /// The stream's seq at the time of the snapshot; events with a greater seq follow it.
    pub seq: u64,
    /// The records (see the type's docs for their order).
    pub records: Vec<Record<D>>,
}

impl<D> Snapshot<D> {
    /// The same snapshot with each record's data converted.
    pub fn map_data<E>(self, mut convert: impl FnMut(D) -> E) -> Snapshot<E> {
        Snapshot {
            epoch: self.epoch,
            seq: self.seq,
            records: self
                .records
                .into_iter()
                .map(|record| Record {
                    key: record.key,
                    seq: record.seq,
                    data: convert(record.data),
                })
                .collect(),
        }
    }
}

impl<D> Default for Snapshot<D> {
    fn default() -> Self {
        Self {
            epoch: 0,
            seq: 0,
            records: Vec::new(),
        }
    }
}

/// What feeding one chunk to a [`SnapshotAssembler`] produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Assembled<D = Value> {
    /// More chunks are needed.
    Partial,
    /// The last chunk arrived: here is the whole snapshot.
    Complete(Snapshot<D>),
    /// The chunk does not belong to the snapshot being assembled (different epoch or seq, or
    /// out of order); the assembler restarted from this chunk if it was the first one.
    Mismatch,
}

/// Reassembles a snapshot sent as several `snapshot` messages (`chunk` 0, 1, ..., `last`).
#[derive(Debug, Clone)]
pub struct SnapshotAssembler<D = Value> {
    pending: Option<(Snapshot<D>, u32)>,
}

impl<D> Default for SnapshotAssembler<D> {
    fn default() -> Self {
        Self { pending: None }
    }
}

impl<D> SnapshotAssembler<D> {
    /// A new, empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk.
    pub fn push(
        &mut self,
        epoch: u64,
        seq: u64,
        chunk: u32,
        last: bool,
        records: Vec<Record<D>>,
    ) -> Assembled<D> {
        if chunk == 0 {
            self.pending = Some((
                Snapshot {
                    epoch,
                    seq,
                    records,
                },
                0,
            ));
        } else {
            match self.pending.as_mut() {
                Some((snapshot, expected))
                    if snapshot.epoch == epoch
                        && snapshot.seq == seq
                        && expected.checked_add(1) == Some(chunk) =>
                {
                    snapshot.records.extend(records);
                    *expected = chunk;
                }
                _ => {
                    self.pending = None;
                    return Assembled::Mismatch;
                }
            }
        }
        if last {
            match self.pending.take() {
                Some((snapshot, _)) => Assembled::Complete(snapshot),
                None => Assembled::Mismatch,
            }
        } else {
            Assembled::Partial
        }
    }

    /// Drops any partial snapshot (for example after a reconnect).
    pub fn reset(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(seq: u64) -> Record {
        Record {
            key: format!("k{seq}"),
            seq,
            data: json!(seq),
        }
    }

    #[test]
    fn chunks_then_reassemble() {
        let snapshot = Snapshot {
            epoch: 3,
            seq: 10,
            records: (1..=10).map(record).collect(),
        };
        let chunks: Vec<&[Record]> = snapshot.records.chunks(4).collect();
        assert_eq!(chunks.len(), 3);
        let mut assembler = SnapshotAssembler::new();
        let mut result = Assembled::Partial;
        for (index, chunk) in chunks.iter().enumerate() {
            let index = u32::try_from(index).expect("small");
            let last = index == 2;
            result = assembler.push(3, 10, index, last, chunk.to_vec());
        }
        assert_eq!(result, Assembled::Complete(snapshot));
    }

    #[test]
    fn out_of_order_chunk_is_a_mismatch() {
        let mut assembler = SnapshotAssembler::new();
        assert_eq!(
            assembler.push(1, 5, 0, false, vec![record(1)]),
            Assembled::Partial
        );
        assert_eq!(
            assembler.push(1, 5, 2, true, vec![record(2)]),
            Assembled::Mismatch
        );
        assert_eq!(assembler.push(1, 5, 1, true, vec![]), Assembled::Mismatch);
    }
}
