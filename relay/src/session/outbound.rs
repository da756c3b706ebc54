//! The session's queue of messages for the transport, where a replayed page waits as one
//! entry (a view into the shared block) and becomes frames only as the transport takes them.
//!
//! A session that catches up holds one reference to a shared page instead of a page of
//! frames: with ten thousand sessions replaying at once, that is the difference between a
//! few kilobytes and a few gigabytes (see `--replay-page`).

use std::collections::VecDeque;

use tidewire_shared::StreamName;

use super::{Json, Outgoing};
use crate::pg::replay_cache::Page;

/// Lets go of `queue`'s slots once it is empty, so that an idle connection holds none (the
/// slots grown by a connection's first messages were 318 bytes per idle connection,
/// heaptrack). A busy connection allocates them again once per burst.
pub(super) fn release_if_empty<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
}

/// One entry of the queue.
#[derive(Debug)]
enum Entry {
    /// A message ready to write.
    Ready(Outgoing),
    /// The rest of a replayed page of `stream` (in `epoch`).
    Replay {
        stream: StreamName,
        epoch: u64,
        page: Page,
    },
}

/// Messages waiting for the transport, in order.
#[derive(Debug, Default)]
pub(super) struct Outbound {
    entries: VecDeque<Entry>,
}

impl Outbound {
    /// Queues one message.
    pub(super) fn push(&mut self, outgoing: Outgoing) {
        self.entries.push_back(Entry::Ready(outgoing));
    }

    /// Queues the frames of a replayed page (each positioned on `stream`).
    pub(super) fn push_replay(&mut self, stream: StreamName, epoch: u64, page: Page) {
        if !page.frames().is_empty() {
            self.entries.push_back(Entry::Replay {
                stream,
                epoch,
                page,
            });
        }
    }

    /// Lets go of the queue's slots once it is empty (see [`release_if_empty`]).
    pub(super) fn release_if_empty(&mut self) {
        release_if_empty(&mut self.entries);
    }

    /// The next message, if any.
    pub(super) fn pop(&mut self) -> Option<Outgoing> {
        match self.entries.pop_front()? {
            Entry::Ready(outgoing) => Some(outgoing),
            Entry::Replay {
                stream,
                epoch,
                mut page,
            } => {
                // Never empty: empty pages are not queued, and a page leaves with its last frame.
                let frame = page.pop()?;
                let outgoing =
                    Outgoing::event(Json::Own(frame.json), &stream, epoch, frame.seq, frame.ts);
                if !page.frames().is_empty() {
                    self.entries.push_front(Entry::Replay {
                        stream,
                        epoch,
                        page,
                    });
                }
                Some(outgoing)
            }
        }
    }
}
