//! One connection per browser: tabs of one origin with the same relay and token share one
//! connection (see `docs/ARCHITECTURE.md`, "Sharing a connection between tabs").
//!
//! | module | what |
//! |---|---|
//! | [`host`] | the sans-IO host: a small relay for the guests, fed by the host engine |
//! | [`group`] | the tabs of the group: BroadcastChannel messages and the Web Lock election |
//! | [`wire`] | the protocol between guests and host, coded by hand to keep the package small |
//! | [`worker`] | the shared worker's host (`worker.js`) |

pub(crate) mod group;
pub(crate) mod host;
pub(crate) mod wire;
pub mod worker;
