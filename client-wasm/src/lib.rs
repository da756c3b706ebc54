//! Tidewire browser client (npm package `tidewire`), built with wasm-bindgen.
//!
//! Keeps JavaScript collections in sync with PostgreSQL through a Tidewire relay. The
//! merge rules are the shared crate's, the same code the relay runs. The engine keeps each
//! record's text; the application reads JavaScript objects kept in step with it (`records`),
//! made from the messages JavaScript parses once (`parsed`).
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | [`client`] | `TidewireClient`, the JavaScript entry point |
//! | [`collection`] | `LiveCollection`: reads, writes, listeners, presence |
//! | [`engine`] | the sans-IO sync engine: reconnection, resume, resync, dedupe, status |
//! | `shell` | runs the engine's effects in the browser and calls the application back |
//! | `transport` | WebSocket, SSE (fetch streaming) and HTTP |
//! | `persist` | localStorage / IndexedDB persistence |
//! | `options` | the constructor's options |
//! | `listeners` | application callbacks and pending promises |
//! | `handles` | listener registration and `ready()` promises, for the client and collections |
//! | `records` | each collection's records as JavaScript objects, changed batch by batch |
//! | `parsed` | changes made from the objects JavaScript parsed from a message |
//! | `convert` | values between Rust and JavaScript (JSON text + `JSON.parse`) |
//! | `browser` | timers (gloo), event listeners, clock, console reporting |
//! | [`error`] | `TidewireError`: JavaScript `Error` objects with a `code` |
#![warn(missing_docs)]

pub mod client;
pub mod collection;
pub mod engine;
pub mod error;

#[cfg(feature = "bench")]
pub mod bench;

mod browser;
mod convert;
mod handles;
mod listeners;
mod options;
mod parsed;
mod pending;
mod persist;
mod records;
pub mod share;
mod shell;
mod transport;

pub use client::TidewireClient;
pub use collection::LiveCollection;
pub use error::ClientError;

use wasm_bindgen::prelude::wasm_bindgen;

/// Runs when the module is instantiated: installs the panic hook in debug builds, so a bug
/// shows a Rust message and stack in the console. Release builds leave it out (size).
#[wasm_bindgen(start)]
pub fn start() {
    #[cfg(all(debug_assertions, feature = "console_error_panic_hook"))]
    console_error_panic_hook::set_once();
}

#[wasm_bindgen(typescript_custom_section)]
const TYPESCRIPT: &'static str = include_str!("types.d.ts");
