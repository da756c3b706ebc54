//! What the engine asks its shell to do: I/O (connect, send, post, fetch, timers, storage) and
//! notifications for the application (changes, messages, presence, status, write results).
//!
//! The engine never performs I/O itself; the browser shell (`client.rs`) executes these in
//! order. Keeping the decisions here makes the reconnection and dedupe rules testable natively.

use serde_json::Value;
use tidewire_shared::{Change, Event, Json, Op};

use super::status::{Status, TransportKind};

/// Why a batch of changes happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A live (or replayed) event.
    Event,
    /// A snapshot: the first one, or a reload after `resync` / an epoch change.
    Snapshot,
    /// State restored from persistent storage at startup.
    Restore,
    /// A write of this client, shown before the relay committed it.
    Local,
    /// A write of this client that the relay refused, taken back.
    Rollback,
}

impl Origin {
    /// The JavaScript name.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Event => "event",
            Origin::Snapshot => "snapshot",
            Origin::Restore => "restore",
            Origin::Local => "local",
            Origin::Rollback => "rollback",
        }
    }
}

/// One thing for the shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Open a connection with this transport (closing any current one first).
    Connect(TransportKind),
    /// Close the current connection without reporting it back.
    Disconnect,
    /// Send one text frame on the WebSocket.
    Send(String),
    /// POST one write to `/v1/streams/{stream}/events` (SSE mode); report the answer with
    /// `Engine::on_post_result`.
    Post {
        /// The write's operation id.
        id: String,
        /// The stream.
        stream: String,
        /// The request body `{key, op, data}`.
        body: String,
        /// Sent as the `Idempotency-Key` header.
        write_id: Option<String>,
    },
    /// Ask the relay over HTTP why a WebSocket could not open (browsers hide the HTTP
    /// status of a refused upgrade): `GET /v1/sse?stream=<stream>` with the token, reading
    /// the status only. Answer with `Engine::on_probe`.
    Probe(String),
    /// (Re)arm the reconnect timer; call `Engine::on_retry_timer` when it fires.
    RetryIn(u32),
    /// Cancel the reconnect timer.
    CancelRetry,
    /// Start reading the persisted state of a stream; answer with `Engine::restored`.
    Restore(String),
    /// Load the stream's snapshot over HTTP: `GET /v1/streams/{stream}/snapshot` with the
    /// filter as `where` and the token, following `next` to the last page (stopping early
    /// once `Engine::fetch_wanted` says no). Answer with `Engine::snapshot_fetched`.
    FetchSnapshot {
        /// The stream.
        stream: String,
        /// The load's id, given back with the answer.
        id: u32,
        /// The subscription's `where` (the union of the stream's filters), if any.
        filter: Option<Value>,
    },
    /// The stream's state changed: write it to storage (the shell debounces).
    Persist(String),
    /// The unanswered writes changed: store `Engine::pending_writes` (with persistence).
    PersistWrites,
    /// A view was made over records already here: call `Engine::attach_view` with its id
    /// once the application had a chance to add its listeners (a microtask later).
    Attach(u32),
    /// Changes for the change listeners of one view (one `LiveCollection`) of the stream.
    Changes {
        /// The stream.
        stream: String,
        /// The view.
        view: u32,
        /// What changed, in order.
        changes: Vec<Change>,
        /// Why.
        origin: Origin,
    },
    /// An ephemeral message for the message listeners of one view of the stream.
    Message {
        /// The stream.
        stream: String,
        /// The view.
        view: u32,
        /// The message key.
        key: String,
        /// The payload.
        data: Json,
    },
    /// The stream's presence set changed.
    Presence(String),
    /// The stream reloaded a snapshot instead of resuming (reported before its changes).
    Resync {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// A stream-level error the application should hear about (for example `forbidden`).
    StreamError {
        /// The stream.
        stream: String,
        /// Machine-readable code.
        code: String,
        /// Explanation.
        message: String,
    },
    /// The status changed.
    Status(Status),
    /// A write committed at `seq` (0 for ephemeral messages).
    Resolve {
        /// The write's operation id.
        id: String,
        /// The committed seq.
        seq: u64,
    },
    /// A write was confirmed or refused (for the `write` listeners; followed by its
    /// `Resolve` or `Reject`).
    WriteSettled(WriteOutcome),
    /// What the engine applied, for the host of a shared connection (only while hosting).
    Tap(Tap),
    /// A write failed.
    Reject {
        /// The write's operation id.
        id: String,
        /// Machine-readable code.
        code: String,
        /// Explanation.
        message: String,
    },
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// The write's operation id.
    pub id: String,
    /// The stream.
    pub stream: String,
    /// The record key.
    pub key: String,
    /// The operation.
    pub op: Op,
    /// The committed seq, or the refusal's code and message.
    pub outcome: Result<u64, (String, String)>,
}

/// What a hosting engine applied, so the host can relay it to the tabs sharing its
/// connection (see `share::host`).
#[derive(Debug, Clone, PartialEq)]
pub enum Tap {
    /// A durable event was applied, with the change it made to the committed records.
    Applied {
        /// The event as the relay sent it.
        event: Event<Json>,
        /// The committed record before and after (`None`: nothing changed).
        change: Option<Change>,
    },
    /// An ephemeral message arrived.
    Ephemeral(Event<Json>),
    /// The stream's records were replaced (a snapshot, a restore, a drop).
    Loaded(String),
    /// The stream's subscription is live.
    Live(String),
    /// The stream was dropped in PostgreSQL.
    Dropped {
        /// The stream.
        stream: String,
        /// Why, as the relay said.
        reason: Option<String>,
    },
}
