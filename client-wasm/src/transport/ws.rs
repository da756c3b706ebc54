//! The WebSocket transport: one `WebSocket` to `/v1/ws`, text frames in both directions.
//!
//! The value owns its handler closures; dropping it detaches them and closes the socket, so
//! a replaced or closed connection never calls back into the client.

use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

/// What the socket reports.
#[derive(Debug)]
pub(crate) enum WsSignal {
    /// The handshake completed.
    Open,
    /// A text frame, as the JavaScript string it is.
    Text(JsValue),
    /// The socket closed (or failed to open): the close code and reason.
    Closed {
        /// The close code (1006 when the connection dropped or never opened).
        code: u16,
        /// The close reason text.
        reason: String,
    },
}

/// An open or opening WebSocket.
#[derive(Debug)]
pub(crate) struct WsTransport {
    socket: WebSocket,
    _on_open: Closure<dyn FnMut(JsValue)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl WsTransport {
    /// Starts connecting to `url`; `sink` receives the socket's signals.
    ///
    /// # Errors
    ///
    /// The browser's message when the URL is refused (bad scheme, blocked port).
    pub(crate) fn open(
        url: &str,
        sink: impl Fn(WsSignal) + Clone + 'static,
    ) -> Result<Self, String> {
        let socket = WebSocket::new(url).map_err(|error| {
            error.dyn_ref::<js_sys::Error>().map_or_else(
                || "WebSocket refused the URL".into(),
                |e| String::from(e.message()),
            )
        })?;
        socket.set_binary_type(BinaryType::Arraybuffer);
        let open_sink = sink.clone();
        let on_open =
            Closure::<dyn FnMut(JsValue)>::new(move |_event: JsValue| open_sink(WsSignal::Open));
        let message_sink = sink.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            // Binary frames are not part of the protocol; ignore them.
            let data = event.data();
            if data.is_string() {
                message_sink(WsSignal::Text(data));
            }
        });
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            sink(WsSignal::Closed {
                code: event.code(),
                reason: event.reason(),
            });
        });
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Self {
            socket,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        })
    }

    /// Sends a text frame; false if the socket is not open.
    pub(crate) fn send(&self, text: &str) -> bool {
        self.socket.ready_state() == WebSocket::OPEN && self.socket.send_with_str(text).is_ok()
    }
}

impl Drop for WsTransport {
    fn drop(&mut self) {
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
        let state = self.socket.ready_state();
        if state == WebSocket::CONNECTING || state == WebSocket::OPEN {
            // 1000 is always a valid code for the client to send.
            let _ = self
                .socket
                .close_with_code_and_reason(1000, "client closed");
        }
    }
}
