//! Load, benchmark and invariant tools shared by the binaries in `src/bin/` (`loadgen`,
//! `pg_ingest`, `fanout_baseline`, `ws_echo`) and the fault tests in `tests/e2e/load.rs`.
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | [`histogram`] | lock-free latency histogram, p50/p99/p99.9/max |
//! | [`report`] | human tables and JSON reports stamped with the machine and date |
//! | [`procstat`] | CPU and RSS of a process from `/proc` |
//! | [`kernel_tcp`] | the kernel's TCP memory-pressure, drop and retransmit counters |
//! | [`wire`] | the fields of server messages the checker reads |
//! | [`checker`] | the invariant checker: lost, dup_app, dup_wire, ooo, silent_loss |
//! | [`transport`] | lean WebSocket and SSE client connections |
//! | [`client`] | one reconnecting, resuming client feeding the checker |
//! | [`stalled`] | consumers that never read, and when the relay dropped them |
//! | [`publish`] | paced publishers through the SQL function, tracked tables, pg_notify |
//! | [`run`] | the engine: start, wait live, publish, drain, judge |
//! | [`straggler`] | clients behind at the end, named with what they last heard |
//! | [`relay_process`] | a relay as a child process, for kill -9 and restart |
//! | [`scenario`] | the fault scenarios, short in the tests and long in `fault_soak` |
//! | [`scrape`] | a relay's `/metrics` read from outside |

pub mod checker;
pub mod client;
pub mod histogram;
pub mod kernel_tcp;
pub mod procstat;
pub mod publish;
pub mod relay_process;
pub mod report;
pub mod run;
pub mod scenario;
pub mod scrape;
pub mod stalled;
pub mod straggler;
pub mod transport;
pub mod wire;
