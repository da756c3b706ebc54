//! Snapshots over HTTP (`snapshot: "http"`): `GET /v1/streams/{s}/snapshot` read page by page,
//! following the `next` cursors, into one snapshot.
//!
//! [`PageReader`] is the sans-IO half (the URL of the next page, what an answer means), tested
//! natively; [`load`] runs it with fetch. Only the records assembled so far and the page being
//! read are held; nothing reaches the collection before the last page.

use serde_json::Value;
use tidewire_shared::message::decode_page;
use tidewire_shared::{Json, Snapshot};

use crate::engine::fetch::FetchError;

/// Reads one snapshot's pages.
#[derive(Debug)]
pub(crate) struct PageReader {
    /// `.../v1/streams/{s}/snapshot`, with `?where=..` when filtered.
    base: String,
    /// The records so far, at the first page's position.
    snapshot: Option<Snapshot<Json>>,
    /// The cursor of the next page (`None`: the first).
    cursor: Option<String>,
}

impl PageReader {
    /// The reader of `stream`'s snapshot on the relay at `http` (its HTTP base URL), with the
    /// subscription's filter.
    pub(crate) fn new(http: &str, stream: &str, filter: Option<&Value>) -> Self {
        let mut base = format!("{http}/v1/streams/{}/snapshot", escape(stream));
        if let Some(filter) = filter {
            base.push_str("?where=");
            base.push_str(&escape(&filter.to_string()));
        }
        Self {
            base,
            snapshot: None,
            cursor: None,
        }
    }

    /// How many records the pages read so far brought.
    fn records(&self) -> usize {
        self.snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.records.len())
    }

    /// The URL of the next page.
    pub(crate) fn url(&self) -> String {
        match &self.cursor {
            None => self.base.clone(),
            Some(cursor) => {
                let separator = if self.base.contains('?') { '&' } else { '?' };
                format!("{}{separator}cursor={}", self.base, escape(cursor))
            }
        }
    }

    /// Takes the answer to [`PageReader::url`]: the whole snapshot after the last page,
    /// `None` while pages follow.
    ///
    /// # Errors
    ///
    /// [`FetchError::Resync`] for 409 with `resync: true`; [`FetchError::Failed`] for any other
    /// refusal, a body that is not a page, a page at another position than the first, or a
    /// cursor that does not move.
    pub(crate) fn push(
        &mut self,
        status: u16,
        body: &str,
    ) -> Result<Option<Snapshot<Json>>, FetchError> {
        if !(200..300).contains(&status) {
            let parsed: Option<Value> = serde_json::from_str(body).ok();
            let field = |name: &str| parsed.as_ref().and_then(|value| value.get(name));
            if status == 409 && field("resync").and_then(Value::as_bool) == Some(true) {
                return Err(FetchError::Resync);
            }
            let code = field("code")
                .and_then(Value::as_str)
                .unwrap_or("http_error");
            return Err(FetchError::Failed(format!(
                "the snapshot page answered HTTP {status} ({code})"
            )));
        }
        let (page, next) =
            decode_page(body).map_err(|error| failed(&format!("could not be read: {error}")))?;
        match &mut self.snapshot {
            None => self.snapshot = Some(page),
            Some(snapshot) if (snapshot.epoch, snapshot.seq) == (page.epoch, page.seq) => {
                snapshot.records.extend(page.records);
            }
            Some(_) => return Err(failed("is at another position than the first page")),
        }
        match next {
            None => Ok(self.snapshot.take()),
            Some(next) if self.cursor.as_ref() == Some(&next) => {
                Err(failed("names its own cursor as the next"))
            }
            Some(next) => {
                self.cursor = Some(next);
                Ok(None)
            }
        }
    }
}

fn failed(what: &str) -> FetchError {
    FetchError::Failed(format!("a snapshot page {what}"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters (for a path segment or a
/// query value alike: a `/` in a stream name becomes `%2F`, as the relay expects).
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            escaped.push(char::from(byte));
        } else {
            escaped.push('%');
            escaped.push(char::from(HEX[usize::from(byte >> 4)]));
            escaped.push(char::from(HEX[usize::from(byte & 15)]));
        }
    }
    escaped
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Reads every page of `reader` with fetch, with the token (if any), while `wanted()` says
/// the snapshot is still wanted.
///
/// Pages with a cursor are immutable and the relay lets caches keep them. Without a token the
/// browser's cache may answer them (as a CDN may); with one, the browser asks the relay again
/// each time (a 304 when unchanged), because the relay's answers do not vary by token and
/// another token of this browser may see other records.
///
/// # Errors
///
/// See [`PageReader::push`]; [`FetchError::Failed`] for a network failure or when no longer
/// wanted.
pub(crate) async fn load(
    mut reader: PageReader,
    token: Option<&str>,
    wanted: impl Fn() -> bool,
) -> Result<Loaded, FetchError> {
    let mut pages = Vec::new();
    use super::http;
    let cache = if token.is_some() {
        web_sys::RequestCache::NoCache
    } else {
        web_sys::RequestCache::Default
    };
    loop {
        if !wanted() {
            return Err(FetchError::Failed("no longer wanted".into()));
        }
        let request = http::request(
            "GET",
            &reader.url(),
            token,
            "application/json",
            None,
            None,
            cache,
        )
        .map_err(FetchError::Failed)?;
        let response = http::fetch(&request).await.map_err(FetchError::Failed)?;
        let body = http::body(&response).await;
        let text = body.as_string().unwrap_or_default();
        let before = reader.records();
        let done = reader.push(response.status(), &text)?;
        let after = done
            .as_ref()
            .map_or_else(|| reader.records(), |snapshot| snapshot.records.len());
        pages.push((body, after.saturating_sub(before)));
        if let Some(snapshot) = done {
            return Ok(Loaded { snapshot, pages });
        }
    }
}

/// A snapshot read page by page, with each page as the JavaScript string it arrived as and
/// how many of the snapshot's records it brought (in order), so JavaScript can take the
/// records from its own parse of the pages ([`crate::parsed`]).
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) snapshot: Snapshot<Json>,
    pub(crate) pages: Vec<(wasm_bindgen::JsValue, usize)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(seq: u64, next: Option<&str>, keys: &[&str]) -> String {
        let records: Vec<Value> = keys
            .iter()
            .map(|key| json!({"key": key, "seq": 1, "data": {"k": key}}))
            .collect();
        json!({"stream": "s", "epoch": 7, "seq": seq, "next": next, "records": records}).to_string()
    }

    #[test]
    fn follows_cursors_to_the_last_page() {
        let filter = json!({"owner": "u 1"});
        let mut reader = PageReader::new("http://h:1", "board:1/tasks", Some(&filter));
        assert_eq!(
            reader.url(),
            "http://h:1/v1/streams/board%3A1%2Ftasks/snapshot\
             ?where=%7B%22owner%22%3A%22u%201%22%7D"
        );
        assert_eq!(
            reader.push(200, &page(9, Some("c+1/="), &["a", "b"])),
            Ok(None)
        );
        assert!(
            reader.url().ends_with("&cursor=c%2B1%2F%3D"),
            "{}",
            reader.url()
        );
        // A filtered page may hold no record and still have a next one.
        assert_eq!(reader.push(200, &page(9, Some("c2"), &[])), Ok(None));
        let snapshot = reader
            .push(200, &page(9, None, &["c"]))
            .expect("a page")
            .expect("the last page");
        assert_eq!((snapshot.epoch, snapshot.seq), (7, 9));
        let keys: Vec<&str> = snapshot.records.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(snapshot.records[0].data, Json::from(json!({"k": "a"})));
        let plain = PageReader::new("http://h:1", "todos", None);
        assert_eq!(plain.url(), "http://h:1/v1/streams/todos/snapshot");
    }

    #[test]
    fn a_whole_snapshot_without_next_is_one_page() {
        let mut reader = PageReader::new("http://h", "todos", None);
        let body = json!({"stream": "todos", "epoch": 1, "seq": 3, "records": []}).to_string();
        let snapshot = reader.push(200, &body).expect("a page").expect("complete");
        assert_eq!(
            (snapshot.epoch, snapshot.seq, snapshot.records.len()),
            (1, 3, 0)
        );
    }

    #[test]
    fn resync_and_failures() {
        let resync = json!({"type": "error", "code": "bad_since", "message": "old",
                            "resync": true, "epoch": 7, "seq": 20})
        .to_string();
        let mut reader = PageReader::new("http://h", "todos", None);
        assert_eq!(reader.push(409, &resync), Err(FetchError::Resync));
        let bad_cursor = json!({"type": "error", "code": "bad_since", "message": "x"}).to_string();
        assert!(matches!(
            reader.push(409, &bad_cursor),
            Err(FetchError::Failed(_))
        ));
        let refused = json!({"type": "error", "code": "forbidden", "message": "no"}).to_string();
        assert_eq!(
            reader.push(403, &refused),
            Err(FetchError::Failed(
                "the snapshot page answered HTTP 403 (forbidden)".into()
            ))
        );
        assert!(matches!(
            reader.push(502, "<html>"),
            Err(FetchError::Failed(_))
        ));
        assert!(matches!(reader.push(200, "[]"), Err(FetchError::Failed(_))));
        assert!(matches!(
            reader.push(200, r#"{"epoch":1,"seq":2,"records":[{"seq":1}]}"#),
            Err(FetchError::Failed(_))
        ));
        // Pages of one snapshot share its position, and a cursor must move.
        let mut reader = PageReader::new("http://h", "todos", None);
        assert_eq!(reader.push(200, &page(9, Some("c1"), &["a"])), Ok(None));
        assert!(matches!(
            reader.push(200, &page(10, None, &["b"])),
            Err(FetchError::Failed(_))
        ));
        let mut reader = PageReader::new("http://h", "todos", None);
        assert_eq!(reader.push(200, &page(9, Some("c1"), &["a"])), Ok(None));
        assert!(matches!(
            reader.push(200, &page(9, Some("c1"), &["b"])),
            Err(FetchError::Failed(_))
        ));
    }
}
