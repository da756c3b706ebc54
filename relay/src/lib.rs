//! Tidewire relay: bridges PostgreSQL (LISTEN/NOTIFY plus a gap-free outbox) to browsers.
//!
//! # Layout
//!
//! The Postgres side and the transports land in their own modules.
