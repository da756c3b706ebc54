//! The constructor's options object, read and checked once.

use js_sys::Reflect;
use wasm_bindgen::JsValue;

use crate::engine::{Config, SnapshotVia, TransportChoice};
use crate::error::ClientError;
use crate::persist::PersistKind;

/// Validated options (see `TidewireOptions` in the TypeScript types for the documented
/// defaults).
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// The bearer token, if any.
    pub(crate) token: Option<String>,
    /// Engine settings.
    pub(crate) config: Config,
    /// Where to persist collections.
    pub(crate) persist: Option<PersistKind>,
    /// Whether tabs of the origin with the same relay and token share one connection.
    pub(crate) share: bool,
    /// Share through an elected tab even where there is a SharedWorker (`share: "tabs"`).
    pub(crate) share_tabs: bool,
}

fn get(object: &JsValue, name: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

fn string(object: &JsValue, name: &str) -> Result<Option<String>, ClientError> {
    let value = get(object, name);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value
        .as_string()
        .map(Some)
        .ok_or_else(|| ClientError::Argument(format!("option {name} must be a string")))
}

fn number(object: &JsValue, name: &str, default: f64) -> Result<f64, ClientError> {
    let value = get(object, name);
    if value.is_undefined() || value.is_null() {
        return Ok(default);
    }
    match value.as_f64() {
        Some(number) if number.is_finite() && number >= 0.0 => Ok(number),
        _ => Err(ClientError::Argument(format!(
            "option {name} must be a non-negative number of milliseconds"
        ))),
    }
}

impl Options {
    /// Reads the options object (`undefined` and `null` mean all defaults).
    ///
    /// # Errors
    ///
    /// [`ClientError::Argument`] naming the first bad option.
    pub(crate) fn from_js(object: &JsValue) -> Result<Self, ClientError> {
        let mut options = Options {
            share: true,
            ..Options::default()
        };
        if object.is_undefined() || object.is_null() {
            return Ok(options);
        }
        if !object.is_object() {
            return Err(ClientError::Argument("options must be an object".into()));
        }
        options.token = string(object, "token")?.filter(|token| !token.is_empty());
        let config = &mut options.config;
        config.transport = match string(object, "transport")?.as_deref() {
            None | Some("auto") => TransportChoice::Auto,
            Some("websocket") => TransportChoice::WebSocket,
            Some("sse") => TransportChoice::Sse,
            Some("manual") => TransportChoice::Manual,
            Some(other) => {
                return Err(ClientError::Argument(format!(
                    "option transport must be \"auto\", \"websocket\" or \"sse\", not \"{other}\""
                )))
            }
        };
        config.snapshot = match string(object, "snapshot")?.as_deref() {
            None | Some("socket") => SnapshotVia::Socket,
            Some("http") => SnapshotVia::Http,
            Some(other) => {
                return Err(ClientError::Argument(format!(
                    "option snapshot must be \"socket\" or \"http\", not \"{other}\""
                )))
            }
        };
        let persist = get(object, "persist");
        options.persist =
            if persist.is_undefined() || persist.is_null() || persist.as_bool() == Some(false) {
                None
            } else {
                match persist.as_string().as_deref() {
                    Some("indexeddb") => Some(PersistKind::IndexedDb),
                    Some("localstorage") => Some(PersistKind::LocalStorage),
                    _ => {
                        return Err(ClientError::Argument(
                            "option persist must be \"indexeddb\" or \"localstorage\"".into(),
                        ))
                    }
                }
            };
        config.persist = options.persist.is_some();
        let backoff = get(object, "backoff");
        if backoff.is_object() {
            config.backoff_initial_ms = number(&backoff, "initialMs", config.backoff_initial_ms)?;
            config.backoff_max_ms = number(&backoff, "maxMs", config.backoff_max_ms)?;
        }
        let share = get(object, "share");
        if share.as_string().as_deref() == Some("tabs") {
            options.share_tabs = true;
        } else if !share.is_undefined() && !share.is_null() {
            options.share = share.as_bool().ok_or_else(|| {
                ClientError::Argument("option share must be true, false or \"tabs\"".into())
            })?;
        }
        let pause = get(object, "pauseWhenHidden");
        if let Some(pause) = pause.as_bool() {
            config.pause_when_hidden = pause;
        }
        config.keepalive_ms = number(object, "keepaliveMs", config.keepalive_ms)?;
        config.connect_timeout_ms = number(object, "connectTimeoutMs", config.connect_timeout_ms)?;
        let most = number(object, "maxPendingWrites", config.max_pending_writes as f64)?;
        if most < 1.0 || most.fract() != 0.0 {
            return Err(ClientError::Argument(
                "option maxPendingWrites must be a whole number of at least 1".into(),
            ));
        }
        config.max_pending_writes = most as usize;
        Ok(options)
    }
}
