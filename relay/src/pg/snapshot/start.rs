//! Which position a new snapshot starts at: readers that start a snapshot of one stream
//! within `--snapshot-share-ms` of each other share a position, and so every page, instead
//! of each taking the head of its own moment. A reader given an older position catches up
//! from it with replays (shared too), exactly as a resuming client does.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tidewire_shared::StreamName;

use crate::pg::outbox::Head;

/// Positions handed out before this many are kept are pruned of the expired ones.
const PRUNE_AT: usize = 4096;

/// The recent snapshot positions of one relay.
#[derive(Debug)]
pub struct Starts {
    window: Duration,
    recent: Mutex<HashMap<StreamName, (u64, u64, Instant)>>,
}

impl Starts {
    /// Positions are shared for `window` after they are first handed out (zero: never).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// The seq a new snapshot of `stream` is read as of, given the stream's `head`: a recent
    /// position still readable in the same epoch, or the head (which becomes the recent one).
    pub fn position(&self, stream: &StreamName, head: Head) -> u64 {
        if self.window.is_zero() {
            return head.seq;
        }
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&(epoch, seq, since)) = recent.get(stream) {
            if now.duration_since(since) < self.window && head.asof_refusal(epoch, seq).is_none() {
                return seq;
            }
        }
        if recent.len() >= PRUNE_AT {
            let window = self.window;
            recent.retain(|_, (_, _, since)| now.duration_since(*since) < window);
        }
        recent.insert(stream.clone(), (head.epoch, head.seq, now));
        head.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(epoch: u64, seq: u64) -> Head {
        Head {
            epoch,
            seq,
            min_seq: 0,
            prior_from: 0,
            asof_from: 0,
        }
    }

    #[test]
    fn shares_within_the_window_and_epoch() {
        let starts = Starts::new(Duration::from_secs(60));
        let stream = StreamName::new("s").expect("valid");
        assert_eq!(starts.position(&stream, head(1, 10)), 10);
        assert_eq!(starts.position(&stream, head(1, 15)), 10);
        // A new epoch (dropped and recreated) takes its own head.
        assert_eq!(starts.position(&stream, head(2, 3)), 3);
        // Retention passed the shared position: a new one.
        let trimmed = Head {
            min_seq: 5,
            ..head(2, 9)
        };
        assert_eq!(starts.position(&stream, trimmed), 9);
    }

    #[test]
    fn zero_window_always_takes_the_head() {
        let starts = Starts::new(Duration::ZERO);
        let stream = StreamName::new("s").expect("valid");
        assert_eq!(starts.position(&stream, head(1, 10)), 10);
        assert_eq!(starts.position(&stream, head(1, 11)), 11);
    }
}
