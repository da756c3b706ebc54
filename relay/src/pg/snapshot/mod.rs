//! Paged snapshots: a durable stream's records read page by page "as of" one seq, shared by
//! every session and HTTP reader that needs the same page, in bounded memory.
//!
//! A snapshot is a position `(epoch, at)`; its pages are cut by key (`after` the last key of
//! the previous page). `tidewire.snapshot_page` reads records unchanged since `at` from
//! `tidewire.records` and the others from the pre-images of the events after `at`, so every
//! page of one position belongs to the same state however long the pages take and whatever
//! commits meanwhile, and a page read twice is the same page ([`read`]). That makes pages
//! cacheable ([`cache`]: one PostgreSQL read however many readers ask) and lets readers that
//! start at about the same time share one position ([`start`]). A position stays readable
//! while the events after it are retained; after that a read answers
//! [`SnapshotError::Expired`] and the reader starts over at a new position.

mod cache;
mod page;
mod read;
mod start;

pub use cache::{SnapshotCache, SnapshotCacheStats};
pub use page::{snapshot_frame, with_records, Page};
pub use read::{read_page, Failure, PageKey, SnapshotError};
pub use start::Starts;
