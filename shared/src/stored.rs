//! A durable event as PostgreSQL stores it: the event and the key's value before it (its
//! pre-image), which the relay needs to judge filtered views. Never sent to clients.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::event::Event;

/// An event with its pre-image, as the outbox and NOTIFY carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The event as clients see it.
    #[serde(flatten)]
    pub event: Event,
    /// The key's value before the event: `None` when the key had no record, `Some(null)` when
    /// its value was null.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub prior: Option<Value>,
}

impl StoredEvent {
    /// An event whose key had no record before it.
    pub fn new(event: Event) -> Self {
        Self { event, prior: None }
    }
}

/// A field that is present is `Some`, even when it is `null` (absent is `None` by `default`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}
