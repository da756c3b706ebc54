//! The engine's side of one connection per browser: as a guest it talks to the tab (or
//! worker) that holds the connection over a [`TransportKind::Shared`] link, speaking the
//! relay's protocol; as the host it reports what it applies ([`Effect::Tap`]) so the shell's
//! host can relay it to its guests.
//!
//! Switching role replaces the link at once: a guest that becomes the host connects to the
//! relay resuming from what it holds (`since`), so its own collections lose and repeat
//! nothing; writes sent on the old link are sent again with their write ids.

use serde_json::Value;

use super::status::TransportKind;
use super::{CloseInfo, Engine, Link};
use crate::error::ClientError;

impl Engine {
    /// Makes this engine a guest (`true`: connect through the shared link) or not (connect
    /// to the relay itself). Replaces the current link when the role changes.
    pub fn set_guest(&mut self, guest: bool, now_ms: f64) {
        self.now_ms = now_ms;
        if self.guest == guest || self.closed {
            return;
        }
        self.guest = guest;
        if self.link != Link::Down || self.retry_in.is_some() {
            self.backoff.reset();
            self.reconnect_now();
        }
        self.update_status();
    }

    /// Whether this engine connects through a shared link.
    pub fn is_guest(&self) -> bool {
        self.guest
    }

    /// How the relay refused this engine's connection (an authentication failure or a
    /// policy violation), as the close a guest of it should see; `None` when not refused.
    pub fn refusal(&self) -> Option<CloseInfo> {
        let refused = self.refused.as_ref()?;
        Some(CloseInfo {
            opened: true,
            close_code: refused.failure.close_code,
            http_status: None,
            code: refused.failure.code.clone(),
            reason: refused.failure.reason.clone(),
        })
    }

    /// Reports what is applied from now on as [`Effect::Tap`]s (the host relays them).
    pub fn set_hosting(&mut self, hosting: bool) {
        self.hosting = hosting;
    }

    /// Whether the open link is the relay itself (not a shared link or the manual one).
    pub fn on_network(&self) -> bool {
        self.link_is(TransportKind::WebSocket) || self.link_is(TransportKind::Sse)
    }

    /// Whether this engine's connection to the relay is up and the relay has PostgreSQL
    /// (what a host tells its guests with `disconnect` / `reconnect` advisories), with the
    /// reason when it is not.
    pub fn connection_up(&self) -> Result<(), String> {
        if !self.on_network() {
            return Err("the shared connection is reconnecting".into());
        }
        match &self.degraded {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    /// Sets (or with `Value::Null` clears) the presence of guest `member` on `stream`: its
    /// own entry in the presence set, `<connection>/<member>`.
    ///
    /// # Errors
    ///
    /// As [`Engine::set_presence`].
    pub fn set_guest_presence(
        &mut self,
        stream: &str,
        member: &str,
        data: Value,
    ) -> Result<(), ClientError> {
        self.presence_of(stream, Some(member.to_owned()), data)
    }
}
