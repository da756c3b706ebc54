//! [`HttpApi`]: the relay's HTTP stream API from Rust (`GET /v1/streams/{s}/snapshot`,
//! `GET /v1/streams/{s}/events?since=N`), one short hyper HTTP/1.1 connection per request.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tidewire_shared::{Event, Json, ServerMessage, Snapshot, StreamName};
use tokio::net::TcpStream;

use super::config::{ClientConfig, Endpoint};
use super::error::{ClientError, ServerError};

/// How much of an unexpected body goes into [`ClientError::HttpStatus`].
const BODY_EXCERPT: usize = 200;

/// The HTTP API of one relay. Cheap to clone.
///
/// Stream names go into the path with `/` percent-encoded (`board:42/todos` becomes
/// `board:42%2Ftodos`), since `/` is allowed in names but separates path segments.
#[derive(Debug, Clone)]
pub struct HttpApi {
    endpoint: Endpoint,
    token: Option<String>,
    timeout: std::time::Duration,
    max_body: usize,
}

/// Most pages one [`HttpApi::replay`] reads, a guard against a relay that keeps saying
/// `more` (100 pages of the relay's default 1000 events).
const MAX_PAGES: usize = 100;

/// Times [`HttpApi::snapshot`] starts a snapshot over when its position expires midway.
const MAX_SNAPSHOT_STARTS: u32 = 3;

/// One page of `GET /v1/streams/{s}/snapshot`.
#[derive(Debug, Deserialize)]
struct SnapshotPage {
    epoch: u64,
    seq: u64,
    records: Vec<tidewire_shared::Record>,
    /// The cursor of the next page; absent or null on the last.
    #[serde(default)]
    next: Option<String>,
}

/// The body of `GET /v1/streams/{s}/events`: a page object (`events`, `next`, `more`), or a
/// bare array of events.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EventsBody {
    Page {
        events: Vec<Event>,
        /// The `since` of the next page.
        #[serde(default)]
        next: Option<u64>,
        /// Whether more events follow.
        #[serde(default)]
        more: bool,
    },
    List(Vec<Event>),
}

impl HttpApi {
    /// The HTTP API of the relay `config` points at (same host, token and timeout).
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for an unusable URL.
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        Ok(Self {
            endpoint: Endpoint::parse(&config.url)?,
            token: config.token.clone(),
            timeout: config.request_timeout,
            max_body: config.max_http_body_bytes,
        })
    }

    /// The current records of `stream`: the relay's snapshot (`GET /v1/streams/{s}/snapshot`,
    /// every page to the last) brought up to the stream's head with the events after its seq
    /// (the relay may start a snapshot at a position shared with others, moments old).
    ///
    /// # Errors
    ///
    /// The relay's `error` answer as [`ClientError::Server`], or a transport failure.
    pub async fn snapshot(&self, stream: &str) -> Result<Snapshot, ClientError> {
        let snapshot = self.snapshot_pages(stream).await?;
        let events = self.replay(stream, snapshot.seq).await?;
        if events.is_empty() {
            return Ok(snapshot);
        }
        let mut collection =
            tidewire_shared::Collection::from_snapshot(snapshot.map_data(Json::from));
        for event in events {
            collection.apply(&event.map_data(Json::from));
        }
        Ok(collection.snapshot().map_data(|value| value.to_value()))
    }

    /// The relay's snapshot of `stream` as it sends it, following the pages (`next` cursors)
    /// to the last one: every record as of one `(epoch, seq)`. Should that position expire
    /// before the last page (409 `bad_since`), the snapshot starts over, at most three times.
    ///
    /// # Errors
    ///
    /// The relay's `error` answer as [`ClientError::Server`], or a transport failure.
    pub async fn snapshot_pages(&self, stream: &str) -> Result<Snapshot, ClientError> {
        let stream = StreamName::new(stream)?;
        let base = format!("/v1/streams/{}/snapshot", path_segment(&stream));
        let mut attempt = 0;
        'start: loop {
            attempt += 1;
            let mut snapshot = Snapshot::default();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    None => base.clone(),
                    Some(cursor) => format!("{base}?cursor={cursor}"),
                };
                let body = match self.get(&path).await {
                    Ok(body) => body,
                    Err(ClientError::Server(error))
                        if error.code == tidewire_shared::ErrorCode::BadSince
                            && cursor.is_some()
                            && attempt < MAX_SNAPSHOT_STARTS =>
                    {
                        continue 'start;
                    }
                    Err(error) => return Err(error),
                };
                let page: SnapshotPage = serde_json::from_slice(&body)
                    .map_err(|error| ClientError::Malformed(format!("snapshot: {error}")))?;
                if cursor.is_some() && (page.epoch, page.seq) != (snapshot.epoch, snapshot.seq) {
                    return Err(ClientError::Malformed(
                        "snapshot: a page of another position".into(),
                    ));
                }
                snapshot.epoch = page.epoch;
                snapshot.seq = page.seq;
                snapshot.records.extend(page.records);
                match page.next {
                    // Cursors are URL-safe base64: no escaping needed.
                    Some(next) => cursor = Some(next),
                    None => return Ok(snapshot),
                }
            }
        }
    }

    /// The events of `stream` after seq `since` (`GET /v1/streams/{s}/events?since=N`),
    /// following the relay's pages until it has no more.
    ///
    /// # Errors
    ///
    /// The relay's `error` answer as [`ClientError::Server`] (`bad_since` when `since` is
    /// outside the retained history: load a snapshot instead), or a transport failure.
    pub async fn replay(&self, stream: &str, since: u64) -> Result<Vec<Event>, ClientError> {
        let stream = StreamName::new(stream)?;
        let mut all = Vec::new();
        let mut since = since;
        for _ in 0..MAX_PAGES {
            let path = format!("/v1/streams/{}/events?since={since}", path_segment(&stream));
            let body = self.get(&path).await?;
            let (events, next, more) = match serde_json::from_slice(&body) {
                Ok(EventsBody::Page { events, next, more }) => (events, next, more),
                Ok(EventsBody::List(events)) => (events, None, false),
                Err(error) => return Err(ClientError::Malformed(format!("events: {error}"))),
            };
            let next = next
                .or(events.last().map(|event| event.seq))
                .unwrap_or(since);
            all.extend(events);
            if !more || next <= since {
                break;
            }
            since = next;
        }
        Ok(all)
    }

    /// `GET prefix + path`; the body of a 2xx answer.
    async fn get(&self, path: &str) -> Result<Bytes, ClientError> {
        match tokio::time::timeout(self.timeout, self.get_inner(path)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout(self.timeout)),
        }
    }

    async fn get_inner(&self, path: &str) -> Result<Bytes, ClientError> {
        let http = |error: &dyn std::fmt::Display| ClientError::Http(error.to_string());
        let tcp = TcpStream::connect(&self.endpoint.authority)
            .await
            .map_err(|error| http(&error))?;
        tcp.set_nodelay(true).map_err(|error| http(&error))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|error| http(&error))?;
        let connection = tokio::spawn(async move {
            // Ends when the response is read; its errors surface through `sender`.
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method("GET")
            .uri(format!("{}{path}", self.endpoint.http_prefix))
            .header(HOST, self.endpoint.authority.as_str())
            .header(ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|error| http(&error))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| http(&error))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), self.max_body)
            .collect()
            .await
            .map_err(|error| http(&*error))?
            .to_bytes();
        connection.abort();
        if status.is_success() {
            return Ok(body);
        }
        let limits = tidewire_shared::DecodeLimits::default();
        if let Ok(ServerMessage::Error { code, message, .. }) =
            tidewire_shared::message::decode_server(&body, &limits)
        {
            return Err(ClientError::Server(ServerError { code, message }));
        }
        let excerpt: String = String::from_utf8_lossy(&body)
            .chars()
            .take(BODY_EXCERPT)
            .collect();
        Err(ClientError::HttpStatus {
            status: status.as_u16(),
            body: excerpt,
        })
    }
}

/// A stream name as one path segment: `/` (the only name character that is not a path
/// character) percent-encoded.
fn path_segment(stream: &StreamName) -> String {
    stream.as_str().replace('/', "%2F")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slashes_are_encoded() {
        let stream = StreamName::new("board:42/todos").expect("valid");
        assert_eq!(path_segment(&stream), "board:42%2Ftodos");
    }

    #[test]
    fn both_event_body_shapes_decode() {
        let event = r#"{"stream":"s","epoch":1,"seq":2,"key":"k","op":"upsert","data":1}"#;
        let page = format!(
            r#"{{"stream":"s","epoch":1,"events":[{event}],"next":2,"more":true,"head":9}}"#
        );
        let decoded: EventsBody = serde_json::from_str(&page).expect("decodes");
        assert!(
            matches!(decoded, EventsBody::Page { ref events, next: Some(2), more: true } if events.len() == 1)
        );
        let decoded: EventsBody = serde_json::from_str(&format!("[{event}]")).expect("decodes");
        assert!(matches!(decoded, EventsBody::List(ref events) if events.len() == 1));
    }
}
