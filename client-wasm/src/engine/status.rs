//! The client's connection status as the application sees it.
//!
//! The engine recomputes the status after every input and emits a status effect only when
//! it changed, so the application's status listener is not called for nothing.

/// The coarse state, shown to JavaScript as a lowercase string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Opening a connection, subscribing, or waiting to retry.
    Connecting,
    /// Connected, every collection subscribed and up to date.
    Live,
    /// Connected; a collection is reloading a snapshot (after `resync` or an epoch change).
    Resyncing,
    /// Not trying right now: the browser is offline, the page is hidden, or the token was
    /// refused (call `setToken`).
    Offline,
    /// `close()` was called. Final.
    Closed,
}

impl State {
    /// The JavaScript name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Live => "live",
            State::Resyncing => "resyncing",
            State::Offline => "offline",
            State::Closed => "closed",
        }
    }
}

/// Which transport carries the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// WebSocket (`/v1/ws`): everything over one socket.
    WebSocket,
    /// Server-Sent Events (`/v1/sse`) read with fetch streaming; writes over HTTP POST.
    Sse,
    /// No network: messages are injected by tests and benchmarks.
    Manual,
    /// Another tab (or a shared worker) of this origin holds the connection and relays the
    /// protocol to this one (see `share`).
    Shared,
}

impl TransportKind {
    /// The JavaScript name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::Sse => "sse",
            TransportKind::Manual => "manual",
            TransportKind::Shared => "shared",
        }
    }
}

/// The full status: state plus why, for the status event and `client.statusInfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The coarse state.
    pub state: State,
    /// Human-readable reason (empty when live).
    pub reason: String,
    /// Machine-readable code of the last problem (`"unauthorized"`, `"unavailable"`, ...).
    pub code: Option<String>,
    /// The WebSocket close code that caused it, if any (4001, 1006, ...).
    pub close_code: Option<u16>,
    /// The transport in use or being tried.
    pub transport: Option<TransportKind>,
    /// Failed attempts since the last success.
    pub attempt: u32,
    /// Milliseconds until the next attempt, when one is scheduled.
    pub retry_in_ms: Option<u32>,
}

impl Status {
    /// The initial status.
    pub fn connecting() -> Self {
        Self {
            state: State::Connecting,
            reason: "starting".into(),
            code: None,
            close_code: None,
            transport: None,
            attempt: 0,
            retry_in_ms: None,
        }
    }

    /// The status as a JSON object text (parsed once on the JavaScript side).
    pub fn to_json(&self) -> String {
        let mut object = serde_json::Map::new();
        object.insert("status".into(), self.state.as_str().into());
        object.insert("reason".into(), self.reason.clone().into());
        if let Some(code) = &self.code {
            object.insert("code".into(), code.clone().into());
        }
        if let Some(close_code) = self.close_code {
            object.insert("closeCode".into(), close_code.into());
        }
        if let Some(transport) = self.transport {
            object.insert("transport".into(), transport.as_str().into());
        }
        object.insert("attempt".into(), self.attempt.into());
        if let Some(retry) = self.retry_in_ms {
            object.insert("retryInMs".into(), retry.into());
        }
        serde_json::Value::Object(object).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let mut status = Status::connecting();
        status.state = State::Offline;
        status.code = Some("unauthorized".into());
        status.close_code = Some(4001);
        let value: serde_json::Value = serde_json::from_str(&status.to_json()).expect("json");
        assert_eq!(value["status"], "offline");
        assert_eq!(value["code"], "unauthorized");
        assert_eq!(value["closeCode"], 4001);
        assert!(value.get("retryInMs").is_none());
    }
}
