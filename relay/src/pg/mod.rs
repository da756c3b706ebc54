//! The PostgreSQL side of the relay: the `tidewire` schema and its migrations ([`schema`]),
//! reads of the outbox ([`outbox`]) and client writes ([`publish`]),
//! the embedded cluster the relay runs without `DATABASE_URL` ([`embedded`]), capture of
//! tracked tables through logical replication ([`capture`]) and their [`Error`].
//!
//! The SQL API that applications call is documented in `docs/SQL.md`.

pub mod capture;
mod cluster;
pub mod embedded;
mod error;
pub mod listener;
pub mod outbox;
pub mod pool;
pub mod publish;
pub mod replay_cache;
pub mod schema;
pub mod snapshot;

pub use error::Error;
