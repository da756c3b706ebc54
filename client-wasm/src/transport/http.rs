//! HTTP requests with fetch: the SSE request, writes (`POST /v1/streams/{s}/events`) and
//! snapshot pages (see `pages`).

use js_sys::Uint8Array;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, Request, RequestCache, RequestInit, Response};

/// Runs `fetch` on the global object (window or worker).
///
/// # Errors
///
/// The rejection (network failure, abort) as text.
pub(crate) async fn fetch(request: &Request) -> Result<Response, String> {
    let global = js_sys::global();
    let promise = if let Some(window) = global.dyn_ref::<web_sys::Window>() {
        window.fetch_with_request(request)
    } else if let Some(worker) = global.dyn_ref::<web_sys::WorkerGlobalScope>() {
        worker.fetch_with_request(request)
    } else {
        return Err("fetch is not available here".into());
    };
    let response = JsFuture::from(promise)
        .await
        .map_err(|error| describe(&error))?;
    response
        .dyn_into::<Response>()
        .map_err(|_| "fetch did not return a Response".into())
}

/// Builds a request with optional body, bearer token and abort signal, and its cache mode
/// (`NoStore` for everything but snapshot pages).
///
/// # Errors
///
/// The browser's message for an invalid URL or header.
pub(crate) fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    accept: &str,
    body: Option<&str>,
    signal: Option<&web_sys::AbortSignal>,
    cache: RequestCache,
) -> Result<Request, String> {
    let headers = Headers::new().map_err(|error| describe(&error))?;
    headers
        .set("Accept", accept)
        .map_err(|error| describe(&error))?;
    if let Some(token) = token {
        headers
            .set("Authorization", &format!("Bearer {token}"))
            .map_err(|error| describe(&error))?;
    }
    let init = RequestInit::new();
    init.set_method(method);
    init.set_headers(&headers);
    init.set_cache(cache);
    if let Some(body) = body {
        headers
            .set("Content-Type", "application/json")
            .map_err(|error| describe(&error))?;
        init.set_body(&JsValue::from_str(body));
    }
    if let Some(signal) = signal {
        init.set_signal(Some(signal));
    }
    Request::new_with_str_and_init(url, &init).map_err(|error| describe(&error))
}

/// Reads a whole body as text.
pub(crate) async fn text(response: &Response) -> String {
    body(response).await.as_string().unwrap_or_default()
}

/// Reads a whole body as the JavaScript string it is (`undefined` if it cannot be read).
pub(crate) async fn body(response: &Response) -> JsValue {
    let Ok(promise) = response.text() else {
        return JsValue::UNDEFINED;
    };
    JsFuture::from(promise).await.unwrap_or(JsValue::UNDEFINED)
}

/// `(code, message)` from an error response body (`{"type":"error","code":..}`), or from the
/// status alone.
pub(crate) fn error_from_body(status: u16, body: &str) -> (String, String) {
    let limits = tidewire_shared::DecodeLimits::default();
    if let Ok(tidewire_shared::ServerMessage::Error { code, message, .. }) =
        tidewire_shared::message::decode_server_json(body.as_bytes(), &limits)
    {
        return (code.as_str().to_owned(), message);
    }
    let code = match status {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        413 => "too_large",
        429 => "rate_limited",
        503 => "unavailable",
        _ => "http_error",
    };
    (code.to_owned(), format!("the relay answered HTTP {status}"))
}

/// POSTs one write; resolves with the committed seq.
///
/// # Errors
///
/// `(code, message)`: the relay's error, or `network` when the request failed.
pub(crate) async fn post_event(
    url: &str,
    token: Option<&str>,
    body: &str,
    write_id: Option<&str>,
) -> Result<u64, (String, String)> {
    let network = |message: String| ("network".to_owned(), message);
    let request = request(
        "POST",
        url,
        token,
        "application/json",
        Some(body),
        None,
        RequestCache::NoStore,
    )
    .map_err(network)?;
    if let Some(write_id) = write_id {
        request
            .headers()
            .set("Idempotency-Key", write_id)
            .map_err(|error| network(describe(&error)))?;
    }
    let response = fetch(&request).await.map_err(network)?;
    let text = text(&response).await;
    if !response.ok() {
        return Err(error_from_body(response.status(), &text));
    }
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| ("bad_message".to_owned(), error.to_string()))?;
    value["seq"]
        .as_u64()
        .ok_or_else(|| ("bad_message".to_owned(), "the answer has no seq".to_owned()))
}

/// Requests `url` and reads only the status (and the error body of a refusal); the
/// request is aborted as soon as the answer's headers are in. `(status, code, message)`.
pub(crate) async fn probe(url: &str, token: Option<&str>) -> (Option<u16>, Option<String>, String) {
    let abort = web_sys::AbortController::new().ok();
    let signal = abort.as_ref().map(web_sys::AbortController::signal);
    let request = match request(
        "GET",
        url,
        token,
        "text/event-stream",
        None,
        signal.as_ref(),
        RequestCache::NoStore,
    ) {
        Ok(request) => request,
        Err(reason) => return (None, None, reason),
    };
    let response = match fetch(&request).await {
        Ok(response) => response,
        Err(reason) => return (None, None, reason),
    };
    let status = response.status();
    if response.ok() {
        if let Some(abort) = abort {
            abort.abort();
        }
        return (Some(status), None, String::new());
    }
    let body = text(&response).await;
    let (code, message) = error_from_body(status, &body);
    (Some(status), Some(code), message)
}

/// Copies a `Uint8Array` chunk into Rust.
pub(crate) fn bytes(chunk: &JsValue) -> Vec<u8> {
    chunk
        .dyn_ref::<Uint8Array>()
        .map(Uint8Array::to_vec)
        .unwrap_or_default()
}

/// A JavaScript error or value as text.
pub(crate) fn describe(error: &JsValue) -> String {
    if let Some(error) = error.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    error.as_string().unwrap_or_else(|| "unknown error".into())
}
