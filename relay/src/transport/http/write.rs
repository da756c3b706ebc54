//! Writes over HTTP: publish an event (exactly once under an `Idempotency-Key`), create or
//! update a stream, drop a stream.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidewire_shared::event::{contains_nul, validate_key};
use tidewire_shared::message::check_write_id;
use tidewire_shared::notify::NOTIFY_LIMIT;
use tidewire_shared::{ErrorCode, Filter, Op, StreamName};
use tokio_postgres::error::SqlState;

use super::body::{parse_json, read_limited, require_json};
use super::error::ApiError;
use super::read::json;
use crate::hub::Hub;
use crate::pg::outbox::OutboxError;
use crate::pg::publish::Write;
use crate::session;
use crate::transport::{full, Body};

/// The request header that carries a publish's write id.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The response header of a publish answered from its `Idempotency-Key` (200, nothing
/// written again).
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Room left for the envelope of an ephemeral message inside a NOTIFY payload (the same
/// margin as a WebSocket publish).
const MESSAGE_ENVELOPE: usize = 1000;

/// Longest TTL of a temp stream: ten years.
pub(crate) const MAX_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// The body of `POST /v1/streams/{stream}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    key: String,
    op: String,
    #[serde(default)]
    data: Value,
}

/// The answer to a publish.
#[derive(Serialize)]
struct Answer<'a> {
    stream: &'a StreamName,
    seq: u64,
}

/// `POST /v1/streams/{stream}/events`: publishes `{"key","op","data"}` and answers 201
/// `{"stream","seq"}` once committed (`seq` 0 for an ephemeral `message`). With an
/// `Idempotency-Key` header the write commits once per stream and key: a resend answers 200
/// with the original seq and `Idempotent-Replayed: true`.
///
/// # Errors
///
/// 413 `too_large` (body over `--max-message-bytes`, data over `--max-data-bytes`), 415 /
/// 400 `bad_message` (not JSON, a bad `Idempotency-Key`), `bad_key`, `bad_op`, `bad_data`,
/// 409 `conflict` (the key was used for another write), 503 `unavailable`.
pub(crate) async fn publish(
    hub: &Hub,
    stream: &StreamName,
    headers: &HeaderMap,
    body: Incoming,
    within: Option<&Arc<Filter>>,
) -> Result<Response<Body>, ApiError> {
    let write_id = idempotency_key(headers)?;
    require_json(headers)?;
    let limit = hub.config.options.max_message_bytes;
    let bytes = read_limited(headers, body, limit).await?;
    let body: PublishBody = parse_json(&bytes, limit)?;
    let op = check_publish(&body, hub.config.options.max_data_bytes)?;
    let write = Write {
        stream,
        key: &body.key,
        op,
        data: &body.data,
        write_id,
    };
    let within = within.map(|filter| &**filter);
    let published = session::commit(hub, &write, within)
        .await
        .map_err(|error| ApiError::outbox(&error))?;
    let answer = Answer {
        stream,
        seq: published.seq,
    };
    if !published.replayed {
        return Ok(json(StatusCode::CREATED, &answer));
    }
    let mut response = json(StatusCode::OK, &answer);
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    Ok(response)
}

/// The write id of a publish: its `Idempotency-Key` header, bare or as a quoted string
/// (`"k1"`, the header's structured-field form), under the write id rule.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |reason: &str| {
        ApiError::new(
            ErrorCode::BadMessage,
            format!("invalid Idempotency-Key header: {reason}"),
        )
    };
    if values.next().is_some() {
        return Err(invalid("given more than once"));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid("may hold only ASCII letters, digits and . _ : -"))?;
    let key = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(text);
    check_write_id(key).map_err(|reason| invalid(&reason))?;
    Ok(Some(key))
}

/// The shared publish rules, checked before PostgreSQL sees the event.
fn check_publish(body: &PublishBody, max_data_bytes: usize) -> Result<Op, ApiError> {
    let op = Op::parse(&body.op).ok_or_else(|| {
        let shown: String = body.op.chars().take(40).collect();
        ApiError::new(
            ErrorCode::BadOp,
            format!("unknown op {shown:?}; expected upsert, patch, delete or message"),
        )
    })?;
    validate_key(&body.key).map_err(|error| ApiError::new(ErrorCode::BadKey, error.to_string()))?;
    if contains_nul(&body.data) {
        return Err(ApiError::new(
            ErrorCode::BadData,
            "data contains a NUL character (\\u0000), which PostgreSQL cannot store",
        ));
    }
    if op == Op::Patch && !body.data.is_object() {
        return Err(ApiError::new(
            ErrorCode::BadData,
            "patch data must be a JSON object",
        ));
    }
    let size = serde_json::to_vec(&body.data).map_or(usize::MAX, |bytes| bytes.len());
    let limit = if op == Op::Message {
        // Ephemeral messages travel inside NOTIFY only.
        NOTIFY_LIMIT - MESSAGE_ENVELOPE
    } else {
        max_data_bytes
    };
    if size > limit {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "data is {size} bytes, the limit for {} is {limit}",
                op.as_str()
            ),
        ));
    }
    Ok(op)
}

/// The body of `PUT /v1/streams/{stream}` (empty means a permanent stream).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamSpec {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

#[derive(Serialize)]
struct StreamCreated<'a> {
    stream: &'a StreamName,
    epoch: u64,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_seconds: Option<u64>,
    created: bool,
}

/// `PUT /v1/streams/{stream}`: creates the stream (201) or updates its kind and TTL (200)
/// with `tidewire.create_stream`. Body `{"kind":"permanent"}` (or empty) or
/// `{"kind":"temp","ttl_seconds":N}`; re-putting a temp stream pushes its expiry out.
///
/// # Errors
///
/// 400 `bad_message` / `bad_data` for a bad body, 503 `unavailable`.
pub(crate) async fn put(
    hub: &Hub,
    stream: &StreamName,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let limit = hub.config.options.max_message_bytes;
    let bytes = read_limited(headers, body, limit).await?;
    let spec: StreamSpec = if bytes.iter().all(u8::is_ascii_whitespace) {
        StreamSpec::default()
    } else {
        require_json(headers)?;
        parse_json(&bytes, limit)?
    };
    let kind = spec.kind.as_deref().unwrap_or("permanent");
    let ttl = match (kind, spec.ttl_seconds) {
        ("permanent", None) => None,
        ("permanent", Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::BadData,
                "only temp streams have a ttl_seconds",
            ))
        }
        ("temp", Some(ttl)) if (1..=MAX_TTL_SECONDS).contains(&ttl) => Some(ttl),
        ("temp", _) => {
            return Err(ApiError::new(
                ErrorCode::BadData,
                format!("a temp stream needs ttl_seconds from 1 to {MAX_TTL_SECONDS}"),
            ))
        }
        (other, _) => {
            let shown: String = other.chars().take(40).collect();
            return Err(ApiError::new(
                ErrorCode::BadData,
                format!("kind must be permanent or temp, got {shown:?}"),
            ));
        }
    };
    let ttl_param = ttl.map(|ttl| i64::try_from(ttl).unwrap_or(i64::MAX));
    let client = hub
        .pool
        .get()
        .await
        .map_err(|error| db_error(error.into()))?;
    // The `existed` subquery reads the statement's snapshot, taken before create_stream runs.
    let row = client
        .query_one(
            "select exists (select 1 from tidewire.streams where name = $1) as existed, \
             tidewire.create_stream($1, $2, $3::bigint * interval '1 second') as epoch",
            &[&stream.as_str(), &kind, &ttl_param],
        )
        .await
        .map_err(rejected_or_db)?;
    let existed: bool = row
        .try_get("existed")
        .map_err(|error| db_error(error.into()))?;
    let epoch: i64 = row
        .try_get("epoch")
        .map_err(|error| db_error(error.into()))?;
    let body = StreamCreated {
        stream,
        epoch: u64::try_from(epoch).unwrap_or(0),
        kind,
        ttl_seconds: ttl,
        created: !existed,
    };
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json(status, &body))
}

/// `DELETE /v1/streams/{stream}`: drops the stream with `tidewire.drop_stream` (its events,
/// records and row; subscribers get `dropped`). 204, or 404 if there was no such stream.
///
/// # Errors
///
/// 404 `not_found`, 503 `unavailable`.
pub(crate) async fn delete(hub: &Hub, stream: &StreamName) -> Result<Response<Body>, ApiError> {
    let client = hub
        .pool
        .get()
        .await
        .map_err(|error| db_error(error.into()))?;
    let row = client
        .query_one(
            "select tidewire.drop_stream($1) as dropped",
            &[&stream.as_str()],
        )
        .await
        .map_err(rejected_or_db)?;
    let dropped: bool = row
        .try_get("dropped")
        .map_err(|error| db_error(error.into()))?;
    if !dropped {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no stream {stream}"),
        ));
    }
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

fn db_error(error: OutboxError) -> ApiError {
    ApiError::outbox(&error)
}

/// PostgreSQL refusing the input (SQLSTATE class 22, e.g. 22023 from the SQL API's checks)
/// is the caller's fault: 400 `bad_data` with PostgreSQL's message. Anything else is the
/// database's.
fn rejected_or_db(error: tokio_postgres::Error) -> ApiError {
    match error.as_db_error() {
        Some(db)
            if *db.code() == SqlState::INVALID_PARAMETER_VALUE
                || db.code().code().starts_with("22") =>
        {
            ApiError::new(ErrorCode::BadData, db.message())
        }
        _ => db_error(OutboxError::Db(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(body: Value) -> Result<Op, ErrorCode> {
        let body: PublishBody = serde_json::from_value(body).map_err(|_| ErrorCode::BadMessage)?;
        check_publish(&body, 100).map_err(|error| error.code)
    }

    fn key_of(values: &[&str]) -> Result<Option<String>, ErrorCode> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                IDEMPOTENCY_KEY,
                HeaderValue::from_bytes(value.as_bytes()).expect("a header value"),
            );
        }
        idempotency_key(&headers)
            .map(|key| key.map(str::to_owned))
            .map_err(|error| error.code)
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(key_of(&[]), Ok(None));
        assert_eq!(key_of(&["order-7.a:b_c"]), Ok(Some("order-7.a:b_c".into())));
        assert_eq!(key_of(&["\"quoted\""]), Ok(Some("quoted".into())));
        assert_eq!(key_of(&[""]), Err(ErrorCode::BadMessage));
        assert_eq!(key_of(&["\"\""]), Err(ErrorCode::BadMessage));
        assert_eq!(key_of(&["a b"]), Err(ErrorCode::BadMessage));
        assert_eq!(key_of(&[&"k".repeat(65)]), Err(ErrorCode::BadMessage));
        assert_eq!(key_of(&["caf\u{e9}"]), Err(ErrorCode::BadMessage));
        assert_eq!(key_of(&["a", "b"]), Err(ErrorCode::BadMessage));
    }

    #[test]
    fn publish_rules() {
        assert_eq!(
            check(json!({"key":"a","op":"upsert","data":{"x":1}})),
            Ok(Op::Upsert)
        );
        assert_eq!(check(json!({"key":"a","op":"delete"})), Ok(Op::Delete));
        assert_eq!(
            check(json!({"key":"a","op":"patch","data":[1]})),
            Err(ErrorCode::BadData)
        );
        assert_eq!(
            check(json!({"key":"a","op":"upsert","data":"a\u{0}"})),
            Err(ErrorCode::BadData)
        );
        assert_eq!(
            check(json!({"key":"","op":"upsert"})),
            Err(ErrorCode::BadKey)
        );
        assert_eq!(
            check(json!({"key":"a","op":"UPSERT"})),
            Err(ErrorCode::BadOp)
        );
        assert_eq!(
            check(json!({"key":"a","op":"upsert","data":"x".repeat(200)})),
            Err(ErrorCode::TooLarge)
        );
        assert_eq!(
            check(json!({"key":"a","op":"upsert","value":1})),
            Err(ErrorCode::BadMessage)
        );
        assert_eq!(check(json!({"op":"upsert"})), Err(ErrorCode::BadMessage));
    }
}
