//! `GET /v1/streams/{stream}/snapshot`: a snapshot in pages that a CDN or proxy can cache.
//!
//! The first request (no `cursor`) starts a snapshot at a position `(epoch, seq)` (shared with
//! snapshots started moments ago) and answers its first page; each page names the `next`
//! cursor, which encodes the position and the last key. A page at a fixed cursor never
//! changes (records are read as of the position, see `crate::pg::snapshot`), so it is sent
//! with a strong `ETag`, `Cache-Control: ..., immutable` (`private` unless anonymous clients
//! may read the stream) and `Vary: Authorization`; the first page is `no-cache`, its position moving with the
//! stream. A cursor whose position can no longer be read answers 409 with `resync: true`:
//! start again without a cursor.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, ETAG, IF_NONE_MATCH, VARY};
use hyper::{Response, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tidewire_shared::{ErrorCode, Filter, StreamName};

use super::error::ApiError;
use super::read::{number, parse_limit, single};
use crate::hub::Hub;
use crate::pg::snapshot::{with_records, Failure, PageKey};
use crate::session::snapshot_start;
use crate::transport::{json_response, Body};

/// A page's place in a snapshot: the position and the key the page starts after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) epoch: u64,
    pub(crate) at: u64,
    pub(crate) after: Arc<str>,
}

impl Cursor {
    /// The opaque text form: URL-safe base64 of `epoch.seq.key`.
    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}.{}", self.epoch, self.at, self.after))
    }

    /// Parses [`Cursor::encode`]'s form.
    ///
    /// # Errors
    ///
    /// 400 `bad_since` for anything else.
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        let refuse = || {
            ApiError::new(
                ErrorCode::BadSince,
                "cursor is not a snapshot cursor (use the `next` of a snapshot page as it is)",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| refuse())?;
        let text = String::from_utf8(bytes).map_err(|_| refuse())?;
        let mut parts = text.splitn(3, '.');
        let mut position = || {
            parts
                .next()
                .and_then(|part| number(part, "cursor", ErrorCode::BadSince).ok())
        };
        let (Some(epoch), Some(at)) = (position(), position()) else {
            return Err(refuse());
        };
        let after = parts
            .next()
            .filter(|key| !key.is_empty())
            .ok_or_else(refuse)?;
        Ok(Self {
            epoch,
            at,
            after: Arc::from(after),
        })
    }
}

#[derive(Serialize)]
struct PageHead<'a> {
    stream: &'a StreamName,
    epoch: u64,
    seq: u64,
    next: Option<String>,
}

/// Answers one snapshot page. `public`: anonymous clients may read the whole stream, so a
/// shared cache may keep the page.
///
/// # Errors
///
/// 400 for a bad `cursor` or `limit`, 409 `bad_since` (`resync: true`) for a cursor whose
/// position expired, 503 `unavailable` when PostgreSQL cannot be reached.
pub(crate) async fn snapshot(
    hub: &Hub,
    stream: &StreamName,
    query: Option<&str>,
    headers: &HeaderMap,
    filter: Option<&Filter>,
    public: bool,
) -> Result<Response<Body>, ApiError> {
    let limit = parse_limit(query, hub.config.options.snapshot_chunk)?;
    let cursor = single(query, "cursor", ErrorCode::BadSince)?
        .map(|text| Cursor::parse(&text))
        .transpose()?;
    let first = cursor.is_none();
    let (epoch, at, after) = match cursor {
        Some(cursor) => (cursor.epoch, cursor.at, Some(cursor.after)),
        None => {
            let (head, at) = snapshot_start(hub, stream)
                .await
                .map_err(|error| ApiError::outbox(&error))?;
            (head.epoch, at, None)
        }
    };
    let key = PageKey {
        stream: stream.clone(),
        epoch,
        at,
        after,
        limit,
    };
    let page = match hub.snapshots.page(&hub.pool, &key, 0).await {
        Ok(page) => page,
        Err(error) => {
            return Err(match error.failure() {
                Failure::Expired(reason, head) => {
                    hub.metrics.resync();
                    ApiError::resync(stream, head, reason)
                }
                Failure::Outbox(outbox) => ApiError::outbox(outbox),
            });
        }
    };
    let records = match filter {
        None => page.json(),
        Some(filter) => page.filtered(filter).0,
    };
    let next = page.next().map(|after| {
        Cursor {
            epoch,
            at,
            after: Arc::clone(after),
        }
        .encode()
    });
    let head = PageHead {
        stream,
        epoch,
        seq: at,
        next,
    };
    let body = with_records(&head, &records);
    let etag = format!("\"{}\"", hex(&Sha256::digest(&body)[..16]));
    let scope = if public { "public" } else { "private" };
    let cache = if first {
        format!("{scope}, no-cache")
    } else {
        format!("{scope}, max-age=31536000, immutable")
    };
    let mut response = if matches_etag(headers, &etag) {
        let mut response = Response::new(crate::transport::full(""));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        json_response(StatusCode::OK, body)
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&cache) {
        headers.insert(CACHE_CONTROL, value);
    }
    // A view granted by the token changes the page: no cache may hand one token's page to
    // another (a browser cache keeps `private` pages too).
    headers.insert(VARY, HeaderValue::from_static("Authorization"));
    Ok(response)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_keys_with_dots() {
        let cursor = Cursor {
            epoch: 7,
            at: 42,
            after: Arc::from("a.b.c/ü"),
        };
        assert_eq!(Cursor::parse(&cursor.encode()).expect("parses"), cursor);
    }

    #[test]
    fn bad_cursors_are_refused() {
        for text in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("7.42"),
            &URL_SAFE_NO_PAD.encode("x.1.k"),
            &URL_SAFE_NO_PAD.encode("7.-1.k"),
            &URL_SAFE_NO_PAD.encode("9007199254740992.1.k"),
        ] {
            let error = Cursor::parse(text).expect_err(text);
            assert_eq!(error.code, ErrorCode::BadSince);
        }
    }

    #[test]
    fn if_none_match_lists_and_weak_tags() {
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("\"x\", W/\"abc\""));
        assert!(matches_etag(&headers, "\"abc\""));
        assert!(!matches_etag(&headers, "\"abd\""));
        assert!(!matches_etag(&HeaderMap::new(), "\"abc\""));
    }
}
