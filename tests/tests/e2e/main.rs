//! End-to-end tests against real PostgreSQL clusters started by the harness (no mocks), one
//! module per area. Each test owns its cluster, so they run in parallel.

mod auth;
mod bad_input;
mod capture;
mod client;
mod contract;
mod embedded;
mod error_table;
mod fanout_baseline;
mod http_api;
mod load;
mod publish;
mod relay_core;
mod retention;
mod schema;
mod snapshots;
mod streams;
mod support;
mod track;
mod track_views;
mod transport;
mod views;
mod write_ids;
