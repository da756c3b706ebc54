//! The SSE transport: `GET /v1/sse?stream=..` read with fetch streaming.
//!
//! fetch rather than `EventSource`, because the client owns reconnection: fetch shows the
//! HTTP status of a refused request (so a 401 becomes status `offline` with code
//! `unauthorized` instead of an endless retry), sends the token in an `Authorization`
//! header instead of the URL, and sends our own `Last-Event-ID` cursor, built from the
//! positions the collections actually applied.

use std::rc::Rc;

use js_sys::Reflect;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, ReadableStreamDefaultReader};

use super::http;
use crate::engine::CloseInfo;
use tidewire_shared::sse::SseParser;

/// What the SSE request reports.
#[derive(Debug)]
pub(crate) enum SseSignal {
    /// The relay answered 200: the stream is open.
    Open,
    /// Bytes arrived; these are the complete messages among them (possibly none: a
    /// heartbeat).
    Messages(Vec<String>),
    /// The request failed or the stream ended.
    Closed(CloseInfo),
}

/// An open or opening SSE request; dropping it aborts the request.
#[derive(Debug)]
pub(crate) struct SseTransport {
    abort: Option<AbortController>,
}

impl SseTransport {
    /// Starts the request; `sink` receives the signals until the request ends or is aborted.
    pub(crate) fn open(
        url: String,
        token: Option<String>,
        cursor: Option<String>,
        sink: Rc<dyn Fn(SseSignal)>,
    ) -> Self {
        let abort = AbortController::new().ok();
        let signal = abort.as_ref().map(AbortController::signal);
        wasm_bindgen_futures::spawn_local(async move {
            let info = run(
                &url,
                token.as_deref(),
                cursor.as_deref(),
                signal.as_ref(),
                &*sink,
            )
            .await;
            sink(SseSignal::Closed(info));
        });
        Self { abort }
    }
}

impl Drop for SseTransport {
    fn drop(&mut self) {
        if let Some(abort) = self.abort.take() {
            abort.abort();
        }
    }
}

async fn run(
    url: &str,
    token: Option<&str>,
    cursor: Option<&str>,
    signal: Option<&web_sys::AbortSignal>,
    sink: &dyn Fn(SseSignal),
) -> CloseInfo {
    let failed = |reason: String| CloseInfo {
        reason,
        ..CloseInfo::default()
    };
    let request = match http::request(
        "GET",
        url,
        token,
        "text/event-stream",
        None,
        signal,
        web_sys::RequestCache::NoStore,
    ) {
        Ok(request) => request,
        Err(reason) => return failed(reason),
    };
    if let Some(cursor) = cursor {
        if request.headers().set("Last-Event-ID", cursor).is_err() {
            return failed("the SSE cursor is not a valid header".into());
        }
    }
    let response = match http::fetch(&request).await {
        Ok(response) => response,
        Err(reason) => return failed(format!("sse request failed: {reason}")),
    };
    if !response.ok() {
        let status = response.status();
        let body = http::text(&response).await;
        let (code, message) = http::error_from_body(status, &body);
        return CloseInfo {
            http_status: Some(status),
            code: Some(code),
            reason: message,
            ..CloseInfo::default()
        };
    }
    let Some(body) = response.body() else {
        return failed("the SSE response has no body".into());
    };
    let Ok(reader) = body.get_reader().dyn_into::<ReadableStreamDefaultReader>() else {
        return failed("the SSE body cannot be read".into());
    };
    sink(SseSignal::Open);
    let mut parser = SseParser::new();
    loop {
        let chunk = match JsFuture::from(reader.read()).await {
            Ok(chunk) => chunk,
            Err(error) => {
                return CloseInfo {
                    opened: true,
                    reason: format!("sse stream failed: {}", http::describe(&error)),
                    ..CloseInfo::default()
                }
            }
        };
        let done = Reflect::get(&chunk, &JsValue::from_str("done"))
            .ok()
            .and_then(|done| done.as_bool())
            .unwrap_or(true);
        if done {
            return CloseInfo {
                opened: true,
                reason: "the relay ended the SSE stream".into(),
                ..CloseInfo::default()
            };
        }
        let bytes = Reflect::get(&chunk, &JsValue::from_str("value"))
            .map(|value| http::bytes(&value))
            .unwrap_or_default();
        let messages = parser
            .push_events(&bytes)
            .into_iter()
            .map(|event| event.data)
            .collect();
        sink(SseSignal::Messages(messages));
    }
}
