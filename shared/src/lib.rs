//! Tidewire's shared core: the event model, the wire codec, stream names and the merge rules.
//!
//! The relay and the browser client run this same code, so both sides agree byte for byte on
//! the protocol and on how a collection converges. The crate is sans-IO (bytes in, values
//! out): no runtime, no sockets, no wasm-bindgen; it builds for native targets and for
//! `wasm32-unknown-unknown`.
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | [`stream`] | [`StreamName`]: the naming rule and the mapping to PostgreSQL channels |
//! | [`event`] | [`Event`], [`Op`], [`Position`], the key rule |
//! | [`message`] | the JSON messages of the client protocol, both directions |
//! | [`notify`] | the NOTIFY payload codec (inline event or pointer) |
//! | [`stored`] | [`StoredEvent`](stored::StoredEvent): an event with the record before it |
//! | [`cursor`] | the SSE `id:` cursor covering several streams |
//! | [`sse`] | the `text/event-stream` writer and parser |
//! | [`json`] | [`Json`]: a value kept as its JSON text (the clients' records) |
//! | [`collection`] | [`Collection`]: idempotent, order-independent application of events |
//! | [`ledger`] | [`Ledger`](ledger::Ledger): the merge rules from seqs alone, for clients that keep their values elsewhere |
//! | [`snapshot`] | [`Snapshot`] and reassembly of chunked snapshots |
//! | [`merge_pool`] | [`MergePool`]: ephemeral last-writer-wins state with TTL (presence) |
//! | [`codes`] | error codes and WebSocket close codes |
//! | [`backoff`] | the reconnect delay: exponential backoff with full jitter, randomness injected |
//! | [`ending`] | what a client does when its connection ends (reconnect, later, new token, never) |
//! | [`filter`] | [`Filter`]: the filter language of views, parsed with bounds, evaluated |
//! | [`view`] | move-in and move-out: what a filtered subscriber gets for an event |
//! | [`limits`] | size and depth bounds applied before parsing untrusted input |
//! | [`error`] | typed errors |
//! | `fixtures` | (feature `test-util`) events, records and server messages for tests |
#![warn(missing_docs)]

pub mod backoff;
pub mod codes;
pub mod collection;
pub mod cursor;
pub mod ending;
pub mod error;
pub mod event;
pub mod filter;
#[cfg(feature = "test-util")]
pub mod fixtures;
pub mod json;
pub mod ledger;
pub mod limits;
pub mod merge_pool;
pub mod message;
pub mod notify;
pub mod snapshot;
pub mod sse;
pub mod stored;
pub mod stream;
pub mod view;

pub use codes::{CloseCode, ErrorCode};
pub use collection::{Change, Collection, Gap, Outcome};
pub use cursor::Cursor;
pub use error::{DecodeError, KeyError, NameError};
pub use event::{Event, Op, Position};
pub use filter::{Filter, FilterError};
pub use json::Json;
pub use limits::DecodeLimits;
pub use merge_pool::MergePool;
pub use message::{ClientMessage, ServerMessage};
pub use snapshot::{Record, Snapshot};
pub use stream::{StreamKind, StreamName};
