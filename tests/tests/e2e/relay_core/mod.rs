//! The relay's Postgres side end to end, in process: a real [`Hub`] (listener, pool, bus,
//! janitor) on a real cluster, with [`Session`]s as clients. Checks the race-free subscribe,
//! delivery across Postgres restarts and a killed LISTEN backend, large payloads, raw-channel
//! reference counting and gaps, drops, temp-stream expiry, lagged consumers and shared replay
//! pages.

mod faults;
mod presence;
mod probe;
mod replay;
mod streams;
mod subscribe_race;
