//! The JSON messages of the client protocol, in both directions (see docs/PROTOCOL.md).
//!
//! Every message is one JSON object with a `type` tag. [`client`] holds what browsers and
//! services send to the relay; [`server`] holds what the relay sends back.

pub mod client;
pub mod refusal;
pub mod server;
mod server_decode;

pub use client::{check_write_id, decode_client, parse_where, ClientMessage, Publish, Subscribe};
pub use refusal::{decode_or_refuse, Refusal};
pub use server::{Advisory, AdvisoryKind, PresenceEntry, ServerMessage};
pub use server_decode::{decode_page, decode_server, decode_server_json};

/// Longest client operation id (`id` of publish and ping), in bytes.
pub const MAX_OP_ID_LEN: usize = 64;
