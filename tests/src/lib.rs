//! Tidewire end-to-end harness: a throwaway PostgreSQL cluster and a relay on port 0.
//!
//! # Layout
//!
//! - [`pg`]: [`TestPg`], a private cluster per test (temp dir, free port, fault controls),
//!   built on the relay's own [`tidewire_relay::pg::embedded`] code.
//! - [`notify`]: [`Notifications`], a LISTEN connection that collects NOTIFY payloads.
//! - [`sqlstate`]: the SQLSTATE of a failed statement, for asserting on errors.

pub mod load;
pub mod notify;
pub mod pg;
pub mod proxy;
pub mod relay;

pub use notify::Notifications;
pub use pg::TestPg;

/// The SQLSTATE code (e.g. `"22023"`) of a statement PostgreSQL rejected, `None` for other
/// errors (connection loss, type conversion, ...).
pub fn sqlstate(error: &tokio_postgres::Error) -> Option<&str> {
    error.code().map(|code| code.code())
}
