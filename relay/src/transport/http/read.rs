//! Reads of durable streams over HTTP: stream info and paged replay from `since`, and the
//! query parameters they share with snapshots.

use std::sync::Arc;

use hyper::{Response, StatusCode};
use serde::Serialize;
use tidewire_shared::stored::StoredEvent;
use tidewire_shared::{view, ErrorCode, Event, Filter, Position, StreamName};

use super::error::ApiError;
use crate::auth::Access;
use crate::hub::Hub;
use crate::pg::outbox::{self, Head, OutboxError};
use crate::query::form_values;
use crate::transport::{json_response, Body};

/// Largest `since` or `epoch` accepted: 2^53 - 1, so that JavaScript holds every position
/// exactly (epochs are below 2^53 by construction; seqs never get near it).
pub(crate) const MAX_POSITION: u64 = (1 << 53) - 1;

/// How many times the configured `--replay-page` a client may ask for with `limit`.
pub(crate) const MAX_PAGE_FACTOR: usize = 10;

/// A parsed `?since=N[&epoch=E][&limit=L]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageQuery {
    /// Events after this seq are wanted.
    pub(crate) since: u64,
    /// The epoch the client's `since` belongs to, if it says.
    pub(crate) epoch: Option<u64>,
    /// Events per page.
    pub(crate) limit: usize,
}

/// Parses the replay query. `since` is required; `limit` defaults to `default_limit` and is
/// capped at `default_limit * MAX_PAGE_FACTOR`.
///
/// # Errors
///
/// 400 `bad_since` for a missing, repeated, non-numeric, negative or huge `since` or `epoch`;
/// 400 `bad_message` for a bad `limit`.
pub(crate) fn parse_page(query: Option<&str>, default_limit: usize) -> Result<PageQuery, ApiError> {
    let since = single(query, "since", ErrorCode::BadSince)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadSince,
            "the since query parameter is required (0 for everything retained)",
        )
    })?;
    let since = number(&since, "since", ErrorCode::BadSince)?;
    let epoch = single(query, "epoch", ErrorCode::BadSince)?
        .map(|epoch| number(&epoch, "epoch", ErrorCode::BadSince))
        .transpose()?;
    let limit = parse_limit(query, default_limit)?;
    Ok(PageQuery {
        since,
        epoch,
        limit,
    })
}

/// The query's `limit`: `default_limit` when absent, capped at `default_limit *
/// MAX_PAGE_FACTOR`.
///
/// # Errors
///
/// 400 `bad_message` for a repeated, non-numeric or zero `limit`.
pub(crate) fn parse_limit(query: Option<&str>, default_limit: usize) -> Result<usize, ApiError> {
    let max_limit = default_limit.saturating_mul(MAX_PAGE_FACTOR).max(1);
    match single(query, "limit", ErrorCode::BadMessage)? {
        None => Ok(default_limit.max(1)),
        Some(limit) => {
            let limit = number(&limit, "limit", ErrorCode::BadMessage)?;
            if limit == 0 {
                return Err(ApiError::new(
                    ErrorCode::BadMessage,
                    "limit must be at least 1",
                ));
            }
            Ok(usize::try_from(limit).unwrap_or(usize::MAX).min(max_limit))
        }
    }
}

/// The one value of parameter `name`, `None` if absent.
pub(crate) fn single(
    query: Option<&str>,
    name: &str,
    code: ErrorCode,
) -> Result<Option<String>, ApiError> {
    let mut values = form_values(query, name);
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::new(
            code,
            format!("{name} is given more than once"),
        ));
    }
    first
        .transpose()
        .map_err(|error| ApiError::new(code, format!("{name}: {error}")))
}

/// A decimal integer from 0 to [`MAX_POSITION`]: digits only (no sign, exponent or spaces).
pub(crate) fn number(text: &str, name: &str, code: ErrorCode) -> Result<u64, ApiError> {
    let shown: String = text.chars().take(40).collect();
    let refuse = |why: &str| ApiError::new(code, format!("{name} must be {why}, got {shown:?}"));
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(refuse("a non-negative integer"));
    }
    match text.parse::<u64>() {
        Ok(value) if value <= MAX_POSITION => Ok(value),
        _ => Err(refuse("at most 2^53-1")),
    }
}

/// The filter a read runs with: the request's `where` (at most one, URL-encoded JSON) ANDed
/// with the grant's own filter, or `None` for every record.
///
/// # Errors
///
/// 400 `bad_filter` for a repeated or invalid `where`; 403 `forbidden` if `access` denies.
pub(crate) fn view_filter(
    query: Option<&str>,
    access: &Access,
) -> Result<Option<Arc<Filter>>, ApiError> {
    let asked = single(query, "where", ErrorCode::BadFilter)?
        .map(|text| Filter::parse_str(&text))
        .transpose()
        .map_err(|error| ApiError::new(ErrorCode::BadFilter, error.to_string()))?;
    access
        .view(asked)
        .map_err(|denied| ApiError::new(ErrorCode::Forbidden, denied.to_string()))
}

#[derive(Serialize)]
struct EventsBody<'a> {
    stream: &'a StreamName,
    epoch: u64,
    events: &'a [Event],
    /// The `since` of the next page: the seq of the last event returned, or the request's.
    next: u64,
    /// True if events after `next` existed when the page was read.
    more: bool,
    /// The stream's head when the page was read.
    head: u64,
}

/// `GET /v1/streams/{stream}/events?since=N[&epoch=E][&limit=L]`: one page of events after
/// `since`, in seq order. A `since` the outbox cannot continue (other epoch, trimmed by
/// retention, ahead of the head) answers 409 `bad_since` with `resync: true`.
///
/// # Errors
///
/// 400 `bad_since` for a malformed query, 409 for an unusable position, 503 `unavailable`
/// when PostgreSQL cannot be reached.
pub(crate) async fn events(
    hub: &Hub,
    stream: &StreamName,
    query: Option<&str>,
    filter: Option<&Filter>,
) -> Result<Response<Body>, ApiError> {
    let page = parse_page(query, hub.config.options.replay_page)?;
    let fail = |error: OutboxError| ApiError::outbox(&error).stream(stream);
    let head = outbox::ensure_head(&hub.pool, stream).await.map_err(fail)?;
    let since = Position {
        epoch: page.epoch.unwrap_or(head.epoch),
        seq: page.since,
    };
    let resumable = match filter {
        None => head.can_resume(since),
        Some(_) => head.can_resume_view(since),
    };
    if !resumable {
        return Err(resync(hub, stream, head, since));
    }
    // One extra row tells whether another page follows.
    let mut events = outbox::replay(
        &hub.pool,
        stream,
        head.epoch,
        page.since,
        page.limit.saturating_add(1),
    )
    .await
    .map_err(fail)?;
    // Re-read the head: if the stream was dropped and recreated, or retention moved past
    // `since`, while the page was read, the rows may not continue the client's history.
    let after = outbox::ensure_head(&hub.pool, stream).await.map_err(fail)?;
    let contiguous = events
        .first()
        .is_none_or(|first| first.event.seq == page.since.saturating_add(1));
    if after.epoch != head.epoch || after.min_seq > page.since || !contiguous {
        return Err(resync(hub, stream, after, since));
    }
    let more = events.len() > page.limit;
    events.truncate(page.limit);
    // `next` is the last seq read, delivered or not: a filtered reader continues after the
    // events its view skipped.
    let next = events.last().map_or(page.since, |stored| stored.event.seq);
    let events = match filter {
        None => events.into_iter().map(|stored| stored.event).collect(),
        Some(filter) => project(filter, events, page.since),
    };
    let body = EventsBody {
        stream,
        epoch: head.epoch,
        events: &events,
        next,
        more: more || next < after.seq,
        head: after.seq.max(next),
    };
    Ok(json(StatusCode::OK, &body))
}

/// The events of a page as a filtered reader gets them, each naming the previous one it got
/// (`prev`; the request's `since` for the first).
fn project(filter: &Filter, events: Vec<StoredEvent>, since: u64) -> Vec<Event> {
    let mut prev = since;
    let mut out = Vec::new();
    for stored in events {
        if let Some(mut event) = view::project(filter, &stored.event, stored.prior.as_ref()) {
            event.prev = Some(prev);
            prev = event.seq;
            out.push(event);
        }
    }
    out
}

fn resync(hub: &Hub, stream: &StreamName, head: Head, since: Position) -> ApiError {
    hub.metrics.resync();
    let reason = if since.epoch != head.epoch {
        format!(
            "epoch {} is not the stream's epoch {}",
            since.epoch, head.epoch
        )
    } else if since.seq > head.seq {
        format!(
            "since {} is ahead of the stream's head {}",
            since.seq, head.seq
        )
    } else if since.seq < head.min_seq {
        format!(
            "since {} is older than the retained history (events after {} are kept)",
            since.seq, head.min_seq
        )
    } else {
        format!(
            "since {} is older than the pre-images a filter is judged on (events after {} have them)",
            since.seq, head.prior_from
        )
    };
    ApiError::resync(stream, head, &reason)
}

#[derive(Serialize)]
struct InfoBody {
    stream: String,
    epoch: u64,
    seq: u64,
    min_seq: u64,
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_seconds: Option<i64>,
    /// Microseconds since the Unix epoch, like an event's `ts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// `GET /v1/streams/{stream}`: the stream's head, kind and expiry, or 404 if it does not
/// exist. Never creates the stream.
///
/// # Errors
///
/// 404 `not_found`, 503 `unavailable`.
pub(crate) async fn info(hub: &Hub, stream: &StreamName) -> Result<Response<Body>, ApiError> {
    let fail = |error: OutboxError| ApiError::outbox(&error).stream(stream);
    let client = hub.pool.get().await.map_err(|error| fail(error.into()))?;
    let row = client
        .query_opt(
            "select epoch, seq, min_seq, kind, extract(epoch from ttl)::bigint as ttl, \
             tidewire.micros(expires_at) as expires_at from tidewire.streams where name = $1",
            &[&stream.as_str()],
        )
        .await
        .map_err(|error| fail(error.into()))?;
    let Some(row) = row else {
        return Err(
            ApiError::new(ErrorCode::NotFound, format!("no stream {stream}")).stream(stream),
        );
    };
    let read = |row: &tokio_postgres::Row| -> Result<InfoBody, tokio_postgres::Error> {
        let unsigned = |value: i64| u64::try_from(value).unwrap_or(0);
        Ok(InfoBody {
            stream: stream.to_string(),
            epoch: unsigned(row.try_get("epoch")?),
            seq: unsigned(row.try_get("seq")?),
            min_seq: unsigned(row.try_get("min_seq")?),
            kind: row.try_get("kind")?,
            ttl_seconds: row.try_get("ttl")?,
            expires_at: row.try_get("expires_at")?,
        })
    };
    let body = read(&row).map_err(|error| fail(error.into()))?;
    Ok(json(StatusCode::OK, &body))
}

/// A JSON response of `body`.
pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_response(status, bytes),
        Err(error) => {
            tracing::error!(%error, "http api: a response did not serialise");
            ApiError::new(ErrorCode::Internal, "the response could not be encoded").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(query: &str) -> Option<ErrorCode> {
        parse_page(Some(query), 100).err().map(|error| error.code)
    }

    #[test]
    fn page_queries() {
        assert_eq!(
            parse_page(Some("since=5"), 100).ok(),
            Some(PageQuery {
                since: 5,
                epoch: None,
                limit: 100
            })
        );
        assert_eq!(
            parse_page(Some("epoch=9&since=0&limit=5000&access_token=x"), 100).ok(),
            Some(PageQuery {
                since: 0,
                epoch: Some(9),
                limit: 1000
            })
        );
        for bad in [
            "since=abc",
            "since=-1",
            "since=1e30",
            "since=99999999999999999999999",
            "since=9007199254740992",
            "since=",
            "since=%20",
            "since=1&since=2",
            "since=+1",
            "since=%zz",
            "limit=3",
            "since=1&epoch=x",
        ] {
            assert_eq!(code(bad), Some(ErrorCode::BadSince), "{bad}");
        }
        assert!(parse_page(None, 100).is_err());
        assert_eq!(code("since=1&limit=0"), Some(ErrorCode::BadMessage));
        assert_eq!(code("since=1&limit=x"), Some(ErrorCode::BadMessage));
        assert_eq!(
            parse_page(Some("since=9007199254740991"), 1)
                .map(|page| page.since)
                .ok(),
            Some(MAX_POSITION)
        );
    }
}
