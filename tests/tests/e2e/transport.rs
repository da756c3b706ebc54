//! The WebSocket (`/v1/ws`) and SSE (`/v1/sse`) transports end to end: a real relay on
//! 127.0.0.1:0 ([`tidewire_tests::relay::TestRelay`]) on a real PostgreSQL, driven by real
//! sockets.
//!
//! | module | what |
//! |---|---|
//! | `client` | WebSocket (fastwebsockets) and SSE (hyper) test clients |
//! | `ws` | protocol round trips, bad input, keepalive, shutdown, refusals |
//! | `interop` | the relay driven by tokio-tungstenite, a WebSocket stack it does not use |
//! | `slow` | readers that stop reading are dropped, others are served |
//! | `sse` | `retry:` first, snapshot and live events with cursor ids, resume, heartbeat |

pub(crate) mod client;
mod interop;
pub(crate) mod slow;
mod sse;
mod ws;
mod ws_limits;
