//! Tidewire relay: bridges PostgreSQL (LISTEN/NOTIFY plus a gap-free outbox) to browsers.
//!
//! # Layout
//!
//! A request flows from the top of this table to the bottom: a transport frames it, a
//! session runs the protocol, the bus fans out, the PostgreSQL side stores and listens. The
//! native client is its own crate (`tidewire-client`, in `relay/client/`), so a backend can
//! use it without this server; the rules both clients follow live in `tidewire-shared`.
//!
//! | concept | module | centrifuge's name |
//! |---|---|---|
//! | accept loop, routing, graceful shutdown | [`server`] | `Node.Run`, handlers |
//! | WebSocket, SSE and HTTP framing; slow-consumer reset | [`transport`] | `handler_websocket.go`, `handler_sse.go` |
//! | one client's protocol, independent of the transport | [`session`] | `Client` |
//! | fan-out of a delivery to every subscribed connection | [`bus`] | `Broker` (in memory) |
//! | one encoded message for one stream, as PostgreSQL hands it up | [`delivery`] | `Publication` |
//! | which connections exist and what they follow | [`bus::registry`] | `Hub` |
//! | everything a connection needs, shared as `Arc<Hub>` | [`hub`] | `Node` |
//! | who is on a stream, across relays | [`presence`] | `PresenceManager` |
//! | PostgreSQL: schema, outbox, listener, pool, embedded cluster | [`pg`] | `Broker` (Redis) |
//! | tokens, grants, Origin, CORS | [`auth`] | `ConnectingHandler`, `credentials` |
//! | counters and `GET /metrics` | [`metrics`] | `metrics.go` |
//! | percent-encoding and query strings | [`query`] | |
//! | retention, temp-stream expiry, old write ids | [`janitor`] | |
//! | `--crash-before-ack`, for the exactly-once tests | [`fault`] | |
//! | dropping dead connections off the workers | [`reaper`] | |
//! | flags, environment, defaults | [`config`] | `Config` |

pub mod auth;
pub mod config;
pub mod cores;
#[cfg(test)]
mod counting_waker;
pub mod delivery;
pub mod fault;
pub mod hub;
pub mod janitor;
pub mod metrics;
pub mod nudger;
pub mod pg;
pub mod presence;
pub mod query;
pub mod reaper;

pub mod bus;
pub mod server;
pub mod session;
pub mod transport;

pub use config::Config;
pub use server::run;
