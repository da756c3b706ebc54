//! Where the listener hands what it reads: the relay's bus, seen from below. The PostgreSQL
//! side depends on this trait, the bus implements it, so dependencies point one way
//! (transports -> session -> bus -> pg).

use std::sync::Arc;

use crate::delivery::Delivery;

/// The fan-out the listener feeds.
pub trait Fanout: Send + Sync + std::fmt::Debug {
    /// Hands `delivery` to every subscriber of its stream on this relay; never waits.
    fn publish(&self, delivery: Arc<Delivery>);

    /// Whether any connection on this relay still subscribes to `stream` (the listener asks
    /// before it UNLISTENs).
    fn has_subscribers(&self, stream: &str) -> bool;
}
