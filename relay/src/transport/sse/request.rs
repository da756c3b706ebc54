//! What an SSE request asks for: the streams (`stream=` parameters, URL-decoded, duplicates
//! ignored), their filters (`where=` for every stream, `where.NAME=` for stream NAME, at
//! most one per stream) and where to resume them (`Last-Event-ID`, else `since=`), checked
//! before any byte of the event stream is sent.

use hyper::HeaderMap;
use serde_json::Value;
use tidewire_shared::cursor::MAX_CURSOR_STREAMS;
use tidewire_shared::filter::MAX_FILTER_BYTES;
use tidewire_shared::{Cursor, ErrorCode, Filter, StreamName};

use crate::query::form_pairs;
use crate::transport::admission::Refusal;

/// A valid SSE request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SseRequest {
    /// The streams, in the order first asked for.
    pub(super) streams: Vec<StreamName>,
    /// Resume positions of those streams (only streams in `streams`, in their order).
    pub(super) cursor: Cursor,
    /// The filter of each stream of `streams` (same order), already checked.
    pub(super) filters: Vec<Option<Value>>,
}

impl SseRequest {
    /// Parses the query and the `Last-Event-ID` header; at most `max_streams` streams.
    ///
    /// # Errors
    ///
    /// A [`Refusal`] with `bad_stream` (no stream, a bad name), `too_many_subscriptions`,
    /// `bad_since` (a cursor that does not decode), or `bad_filter` (a filter that does not
    /// parse, two for one stream, or one for a stream not asked for).
    pub(super) fn parse(
        query: Option<&str>,
        headers: &HeaderMap,
        max_streams: usize,
    ) -> Result<Self, Refusal> {
        let mut streams: Vec<StreamName> = Vec::new();
        let mut since = None;
        let mut wheres: Vec<(Option<String>, Value)> = Vec::new();
        for (key, value) in form_pairs(query.unwrap_or("")) {
            let code = match key.as_str() {
                "stream" => ErrorCode::BadStream,
                "since" => ErrorCode::BadSince,
                "where" => ErrorCode::BadFilter,
                key if key.starts_with("where.") => ErrorCode::BadFilter,
                _ => continue,
            };
            let value = value.map_err(|error| Refusal::new(code, format!("{key}: {error}")))?;
            match key.as_str() {
                "stream" => {
                    let stream = StreamName::new(&value).map_err(|error| {
                        Refusal::new(
                            ErrorCode::BadStream,
                            format!("bad stream {value:?}: {error}"),
                        )
                    })?;
                    if !streams.contains(&stream) {
                        streams.push(stream);
                    }
                }
                "since" => since = Some(value),
                key => {
                    let target = key.strip_prefix("where.").map(str::to_owned);
                    let filter = parse_filter(&value, target.as_deref())?;
                    wheres.push((target, filter));
                }
            }
        }
        if streams.is_empty() {
            return Err(Refusal::new(
                ErrorCode::BadStream,
                "name at least one stream: /v1/sse?stream=NAME",
            ));
        }
        let limit = max_streams.min(MAX_CURSOR_STREAMS);
        if streams.len() > limit {
            return Err(Refusal::new(
                ErrorCode::TooManySubscriptions,
                format!("at most {limit} streams per connection"),
            ));
        }
        let last_event_id =
            match headers.get("last-event-id") {
                Some(value) => Some(value.to_str().map_err(|_| {
                    Refusal::new(ErrorCode::BadSince, "Last-Event-ID is not a cursor")
                })?),
                None => None,
            };
        // An EventSource that saw no id yet sends no header (or an empty one).
        let resume = last_event_id
            .filter(|id| !id.is_empty())
            .or(since.as_deref().filter(|since| !since.is_empty()));
        let mut cursor = Cursor::default();
        if let Some(text) = resume {
            let decoded = Cursor::decode(text).map_err(|error| {
                Refusal::new(ErrorCode::BadSince, format!("bad cursor: {error}"))
            })?;
            for stream in &streams {
                if let Some(position) = decoded.get(stream) {
                    cursor.set(stream, position);
                }
            }
        }
        let filters = filters_of(&streams, wheres)?;
        Ok(Self {
            streams,
            cursor,
            filters,
        })
    }
}

fn parse_filter(text: &str, stream: Option<&str>) -> Result<Value, Refusal> {
    let place = stream.map_or_else(|| "where".to_owned(), |name| format!("where.{name}"));
    let refuse = |reason: String| Refusal::new(ErrorCode::BadFilter, format!("{place}: {reason}"));
    if text.len() > MAX_FILTER_BYTES {
        return Err(refuse(format!("longer than {MAX_FILTER_BYTES} bytes")));
    }
    // Parsed once: the session checks the filter's shape again when it subscribes.
    let value: Value =
        serde_json::from_str(text).map_err(|error| refuse(format!("not JSON: {error}")))?;
    Filter::parse(&value).map_err(|error| refuse(error.to_string()))?;
    Ok(value)
}

/// Pairs the filters with the streams: `where` for every stream, `where.NAME` for one.
fn filters_of(
    streams: &[StreamName],
    wheres: Vec<(Option<String>, Value)>,
) -> Result<Vec<Option<Value>>, Refusal> {
    let mut filters: Vec<Option<Value>> = vec![None; streams.len()];
    for (target, filter) in wheres {
        let positions: Vec<usize> = match &target {
            None => (0..streams.len()).collect(),
            Some(name) => {
                let position = streams.iter().position(|stream| stream.as_str() == name);
                vec![position.ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::BadFilter,
                        format!("where.{name} names a stream the request does not ask for"),
                    )
                })?]
            }
        };
        for position in positions {
            let slot = filters.get_mut(position).ok_or_else(|| {
                Refusal::new(ErrorCode::BadFilter, "filter for an unknown stream")
            })?;
            if slot.replace(filter.clone()).is_some() {
                return Err(Refusal::new(
                    ErrorCode::BadFilter,
                    format!("two filters for stream {}", streams[position]),
                ));
            }
        }
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;
    use tidewire_shared::Position;

    use super::*;

    fn parse(query: &str, last_event_id: Option<&str>) -> Result<SseRequest, Refusal> {
        let mut headers = HeaderMap::new();
        if let Some(id) = last_event_id {
            headers.insert(
                "last-event-id",
                HeaderValue::from_str(id).expect("test header"),
            );
        }
        SseRequest::parse(Some(query), &headers, 100)
    }

    fn names(request: &SseRequest) -> Vec<&str> {
        request.streams.iter().map(StreamName::as_str).collect()
    }

    #[test]
    fn streams_are_decoded_and_deduplicated() {
        let request = parse(
            "stream=todos&stream=raw%3Aorders&access_token=x&stream=todos",
            None,
        )
        .expect("valid");
        assert_eq!(names(&request), ["todos", "raw:orders"]);
        assert!(request.cursor.entries.is_empty());
    }

    #[test]
    fn bad_streams_are_refused() {
        for query in [
            "",
            "since=1",
            "stream=",
            "stream=a%20b",
            "stream=%FF",
            "stream=a+b",
        ] {
            let error = parse(query, None).expect_err(query);
            assert_eq!(error.code, ErrorCode::BadStream, "{query}");
        }
        let many: Vec<String> = (0..101).map(|index| format!("stream=s{index}")).collect();
        let error = parse(&many.join("&"), None).expect_err("too many");
        assert_eq!(error.code, ErrorCode::TooManySubscriptions);
    }

    #[test]
    fn the_header_wins_over_since_and_unknown_streams_are_ignored() {
        let request = parse(
            "stream=a&stream=b&since=1%3Ba%2C1%2C1",
            Some("1;zzz,9,9;b,2,20;a,1,10"),
        )
        .expect("valid");
        let positions: Vec<_> = request
            .cursor
            .entries
            .iter()
            .map(|(name, position)| (name.as_str(), *position))
            .collect();
        assert_eq!(
            positions,
            [
                ("a", Position { epoch: 1, seq: 10 }),
                ("b", Position { epoch: 2, seq: 20 })
            ]
        );
        let request = parse("stream=a&since=1;a,1,1", Some("")).expect("valid");
        assert_eq!(
            request.cursor.get(&StreamName::new("a").expect("name")),
            Some(Position { epoch: 1, seq: 1 })
        );
    }

    #[test]
    fn filters_pair_with_streams() {
        let filters = |query: &str| parse(query, None).map(|request| request.filters);
        let owner = serde_json::json!({"owner": "u1"});
        assert_eq!(
            filters("stream=a&stream=b&where=%7B%22owner%22%3A%22u1%22%7D"),
            Ok(vec![Some(owner.clone()), Some(owner.clone())])
        );
        assert_eq!(
            filters("stream=a&stream=b&where.b=%7B%22owner%22%3A%22u1%22%7D"),
            Ok(vec![None, Some(owner)])
        );
        for query in [
            "stream=a&where=%7B",
            "stream=a&where=%7B%22a%22%3Anull%7D",
            "stream=a&where.c=%7B%7D",
            "stream=a&where=%7B%7D&where.a=%7B%7D",
        ] {
            let error = parse(query, None).expect_err(query);
            assert_eq!(error.code, ErrorCode::BadFilter, "{query}");
        }
    }

    #[test]
    fn bad_cursors_are_refused() {
        for (query, header) in [
            ("stream=a&since=garbage", None),
            ("stream=a&since=1;a,1", None),
            ("stream=a", Some("2;a,1,1")),
            ("stream=a&since=1;a,1,1", Some("nope")),
        ] {
            let error = parse(query, header).expect_err(query);
            assert_eq!(error.code, ErrorCode::BadSince, "{query} {header:?}");
        }
    }
}
