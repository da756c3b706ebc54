//! Tidewire relay: bridges PostgreSQL (LISTEN/NOTIFY plus a gap-free outbox) to browsers.
//!
//! # Layout
//!
//! The Postgres side and the transports land in their own modules.

pub mod auth;
pub mod config;
pub mod hub;
pub mod janitor;
pub mod metrics;
pub mod pg;
pub mod presence;
pub mod query;
pub mod reaper;

pub mod bus;
pub mod client;
pub mod registry;
pub mod server;
pub mod session;
pub mod transport;

pub use config::Config;
pub use server::run;
