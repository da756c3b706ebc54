//! Persistence of collections (`persist: "localstorage" | "indexeddb"`), so a reload resumes
//! from the stored `(epoch, seq)` with a replay instead of a full snapshot.
//!
//! Each stream is stored under `tidewire:v1:<relay http URL>:<stream>` as the JSON text
//! `{"v":1,"snapshot":{epoch,seq,records}}` when it holds every record, or
//! `{"v":2,"where":[filter, ...],"snapshot":...}` when it holds the union of its collections'
//! filters (version 2, so an older client does not take a view for the whole stream). The
//! stored filters say which collections the records can show and whether the position can be
//! resumed from: only by a subscription of the same union (see `engine::view`). Writes are
//! debounced by the shell and flushed on `close()` and `pagehide`. Anything unreadable is
//! ignored (the client then starts from a snapshot), so storage can never break syncing.

use js_sys::Promise;
use tidewire_shared::json::{scan, ObjectWriter};
use tidewire_shared::message::decode_page;
use tidewire_shared::{Json, Snapshot};

use crate::engine::view::Scope;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(module = "/js/idb.js")]
extern "C" {
    #[wasm_bindgen(js_name = idbGet, catch)]
    fn idb_get(key: &str) -> Result<Promise, JsValue>;
    #[wasm_bindgen(js_name = idbPut, catch)]
    fn idb_put(key: &str, value: &str) -> Result<Promise, JsValue>;
    #[wasm_bindgen(js_name = idbEntries, catch)]
    fn idb_entries(prefix: &str) -> Result<Promise, JsValue>;
    #[wasm_bindgen(js_name = idbDelete, catch)]
    fn idb_delete(key: &str) -> Result<Promise, JsValue>;
}

/// Where collections are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PersistKind {
    /// `window.localStorage` (synchronous, about 5 MB per origin).
    LocalStorage,
    /// IndexedDB (asynchronous, large quotas).
    IndexedDb,
}

/// A store for one client.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    kind: PersistKind,
    prefix: String,
}

impl Store {
    /// A store whose keys start with `tidewire:v1:<relay>:`.
    pub(crate) fn new(kind: PersistKind, relay: &str) -> Self {
        Self {
            kind,
            prefix: format!("tidewire:v1:{relay}:"),
        }
    }

    fn key(&self, stream: &str) -> String {
        format!("{}{stream}", self.prefix)
    }

    /// Reads the stored snapshot of `stream` and its scope (`None` if absent or unreadable).
    pub(crate) async fn load(&self, stream: &str) -> Option<(Scope, Snapshot<Json>)> {
        let key = self.key(stream);
        let text = match self.kind {
            PersistKind::LocalStorage => local_storage()?.get_item(&key).ok()??,
            PersistKind::IndexedDb => JsFuture::from(idb_get(&key).ok()?)
                .await
                .ok()?
                .as_string()?,
        };
        decode(&text)
    }

    /// Writes `snapshot`, of `scope`, for `stream` (best effort: quota errors are ignored).
    pub(crate) fn save(&self, stream: &str, scope: &Scope, snapshot: &Snapshot<Json>) {
        let key = self.key(stream);
        let text = encode(scope, snapshot);
        match self.kind {
            PersistKind::LocalStorage => {
                if let Some(storage) = local_storage() {
                    let _ = storage.set_item(&key, &text);
                }
            }
            PersistKind::IndexedDb => {
                // The helper swallows failures (quota, private mode): best effort.
                let _ = idb_put(&key, &text);
            }
        }
    }
}

impl Store {
    fn writes_prefix(&self) -> String {
        format!("{}writes:", self.prefix)
    }

    /// Stores the pending writes of client `writer` (`text` from `pending::encode`); an empty
    /// queue removes the entry.
    pub(crate) fn save_writes(&self, writer: &str, text: &str) {
        let key = format!("{}{writer}", self.writes_prefix());
        let empty = text == "[]";
        match self.kind {
            PersistKind::LocalStorage => {
                if let Some(storage) = local_storage() {
                    let _ = if empty {
                        storage.remove_item(&key)
                    } else {
                        storage.set_item(&key, text)
                    };
                }
            }
            PersistKind::IndexedDb => {
                let _ = if empty {
                    idb_delete(&key)
                } else {
                    idb_put(&key, text)
                };
            }
        }
    }

    /// Every stored queue of pending writes of this relay: `(writer, text)`.
    pub(crate) async fn load_writes(&self) -> Vec<(String, String)> {
        let prefix = self.writes_prefix();
        let entries: Vec<(String, String)> = match self.kind {
            PersistKind::LocalStorage => {
                let Some(storage) = local_storage() else {
                    return Vec::new();
                };
                let count = storage.length().unwrap_or(0);
                (0..count)
                    .filter_map(|index| storage.key(index).ok().flatten())
                    .filter(|key| key.starts_with(&prefix))
                    .filter_map(|key| {
                        let text = storage.get_item(&key).ok()??;
                        Some((key, text))
                    })
                    .collect()
            }
            PersistKind::IndexedDb => {
                let Ok(promise) = idb_entries(&prefix) else {
                    return Vec::new();
                };
                let Ok(found) = JsFuture::from(promise).await else {
                    return Vec::new();
                };
                js_sys::Array::from(&found)
                    .iter()
                    .filter_map(|pair| {
                        let pair = js_sys::Array::from(&pair);
                        Some((pair.get(0).as_string()?, pair.get(1).as_string()?))
                    })
                    .collect()
            }
        };
        entries
            .into_iter()
            .filter_map(|(key, text)| Some((key.strip_prefix(&prefix)?.to_owned(), text)))
            .collect()
    }
}

fn local_storage() -> Option<web_sys::Storage> {
    js_sys::global()
        .dyn_into::<web_sys::Window>()
        .ok()?
        .local_storage()
        .ok()?
}

/// The stored form of a snapshot of `scope`.
pub(crate) fn encode(scope: &Scope, snapshot: &Snapshot<Json>) -> String {
    let mut stored = ObjectWriter::new();
    match scope.members() {
        None => stored.u64("v", 1),
        Some(filters) => stored
            .u64("v", 2)
            .raw("where", &serde_json::Value::from(filters).to_string()),
    };
    let mut inner = ObjectWriter::new();
    inner
        .u64("epoch", snapshot.epoch)
        .u64("seq", snapshot.seq)
        .raw(
            "records",
            &crate::share::wire::records_json(&snapshot.records),
        );
    stored.raw("snapshot", &inner.finish());
    stored.finish()
}

/// Reads the stored form; `None` for anything else (what another version wrote, or garbage).
/// Taken apart by hand with the scanner, like the relay's messages: serde's derived decoders
/// stay out of the package, and each record's data stays text.
pub(crate) fn decode(text: &str) -> Option<(Scope, Snapshot<Json>)> {
    let stored = scan::object(text).ok()?;
    let version = scan::field(&stored, "v")?.parse::<u64>().ok()?;
    let scope = match (version, scan::field(&stored, "where")) {
        (1, None) => Scope::All,
        (2, Some(filters)) => match serde_json::from_str(filters).ok()? {
            serde_json::Value::Array(filters) if !filters.is_empty() => {
                Scope::from_members(Some(filters))?
            }
            _ => return None,
        },
        _ => return None,
    };
    let (snapshot, _) = decode_page(scan::field(&stored, "snapshot")?).ok()?;
    Some((scope, snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewire_shared::Record;

    #[test]
    fn round_trip_and_garbage() {
        let snapshot = Snapshot {
            epoch: 3,
            seq: 9,
            records: vec![Record {
                key: "a".into(),
                seq: 9,
                data: Json::from(serde_json::json!({"x": 1})),
            }],
        };
        assert_eq!(
            decode(&encode(&Scope::All, &snapshot)),
            Some((Scope::All, snapshot.clone()))
        );
        let filters = vec![
            serde_json::json!({"owner": "u1"}),
            serde_json::json!({"n": {"gt": 1}}),
        ];
        let scope = Scope::from_members(Some(filters)).expect("filters");
        let text = encode(&scope, &snapshot);
        assert!(text.contains("\"v\":2"), "{text}");
        assert_eq!(decode(&text), Some((scope, snapshot)));
        // What an older client wrote, and what it cannot read.
        assert!(decode(r#"{"v":1,"snapshot":{"epoch":1,"seq":0,"records":[]}}"#).is_some());
        assert_eq!(
            decode(r#"{"v":1,"where":[{"a":1}],"snapshot":{"epoch":1,"seq":0,"records":[]}}"#),
            None
        );
        assert_eq!(
            decode(
                r#"{"v":2,"where":[{"a":{"bad":1}}],"snapshot":{"epoch":1,"seq":0,"records":[]}}"#
            ),
            None
        );
        assert_eq!(decode("{}"), None);
        assert_eq!(decode("{\"v\":2,\"snapshot\":{}}"), None);
        assert_eq!(decode("not json"), None);
    }
}
