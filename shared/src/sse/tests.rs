//! Byte-exact tests of the SSE writer, the parser against chunked and oddly ended input, and
//! the two together: no data can add fields or events.

use super::*;

fn encode(name: &str, id: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_event(&mut out, name, id, data);
    out
}

/// Every event of `stream`, read the way a browser does.
fn parse(stream: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let events = parser.push_events(stream);
    assert_eq!(
        parser.unknown_fields(),
        0,
        "{:?}",
        String::from_utf8_lossy(stream)
    );
    events
}

fn all(parser: &mut SseParser, chunks: &[&[u8]]) -> Vec<SseItem> {
    chunks.iter().flat_map(|chunk| parser.push(chunk)).collect()
}

fn event(name: &str, data: &str, last_event_id: &str) -> SseEvent {
    SseEvent {
        name: name.into(),
        data: data.into(),
        last_event_id: last_event_id.into(),
        id: None,
    }
}

fn with_id(event: SseEvent) -> SseEvent {
    SseEvent {
        id: Some(event.last_event_id.clone()),
        ..event
    }
}

#[test]
fn retry_comes_first_and_is_exact() {
    let mut out = Vec::new();
    write_retry(&mut out, 1000);
    assert_eq!(out, b"retry: 1000\n\n");
    assert_eq!(SseParser::new().push(&out), vec![SseItem::Retry(1000)]);
}

#[test]
fn heartbeat_is_a_comment() {
    let mut out = Vec::new();
    write_heartbeat(&mut out);
    assert_eq!(out, b": hb\n\n");
    assert!(parse(&out).is_empty());
    assert_eq!(
        SseParser::new().push(&out),
        vec![SseItem::Comment("hb".into())]
    );
}

#[test]
fn event_with_id_is_exact() {
    let json = br#"{"type":"event","stream":"todos","epoch":7,"seq":43}"#;
    let bytes = encode("event", Some("1;todos,7,43"), json);
    let expected = b"event: event\nid: 1;todos,7,43\ndata: {\"type\":\"event\",\"stream\":\"todos\",\"epoch\":7,\"seq\":43}\n\n";
    assert_eq!(bytes, expected.to_vec());
}

#[test]
fn event_without_id_is_exact() {
    let bytes = encode("advisory", None, br#"{"type":"advisory","kind":"connect"}"#);
    assert_eq!(
        bytes,
        b"event: advisory\ndata: {\"type\":\"advisory\",\"kind\":\"connect\"}\n\n".to_vec()
    );
}

#[test]
fn line_breaks_in_data_become_data_lines() {
    for (data, framed) in [
        (&b"a\nb"[..], &b"event: event\ndata: a\ndata: b\n\n"[..]),
        (b"a\rb", b"event: event\ndata: a\ndata: b\n\n"),
        (b"a\r\nb", b"event: event\ndata: a\ndata: b\n\n"),
        (b"a\n\rb", b"event: event\ndata: a\ndata: \ndata: b\n\n"),
        (b"a\n", b"event: event\ndata: a\ndata: \n\n"),
    ] {
        assert_eq!(encode("event", None, data), framed.to_vec());
    }
}

#[test]
fn injection_attempts_cannot_create_fields_or_events() {
    let attempts: &[&[u8]] = &[
        b"{\"a\":1}\n\nid: 999\n",
        b"{\"a\":1}\r\rid: 999\r",
        b"{\"a\":1}\r\n\r\nevent: evil\r\ndata: x\r\n\r\n",
        b"x\n\nretry: 1\n\n",
        b"\nid: 999",
        b"x\0\nid: 999\0\n",
        b"\0",
        b": comment\n\n",
    ];
    for data in attempts {
        let bytes = encode("event", Some("1;todos,7,1"), data);
        let text = String::from_utf8_lossy(data)
            .replace("\r\n", "\n")
            .replace('\r', "\n");
        assert_eq!(
            parse(&bytes),
            vec![with_id(event("event", &text, "1;todos,7,1"))],
            "data {:?} framed as {:?}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&bytes)
        );
        let data_lines = bytes
            .split(|&byte| byte == b'\n')
            .filter(|line| line.starts_with(b"data: "))
            .count();
        let lines = bytes.split(|&byte| byte == b'\n').count();
        // event + data lines + id, then the blank line and the empty remainder.
        assert_eq!(
            lines,
            data_lines + 4,
            "only data lines were added for {data:?}"
        );
    }
}

#[test]
fn bad_ids_and_names_are_not_written() {
    let bytes = encode("event", Some("1;a,1,1\nid: 999"), b"{}");
    assert_eq!(bytes, b"event: event\ndata: {}\n\n".to_vec());
    let bytes = encode("evil\ndata: x", None, b"{}");
    assert_eq!(bytes, b"event: message\ndata: {}\n\n".to_vec());
    let bytes = encode("event", Some("a\0b"), b"{}");
    assert_eq!(bytes, b"event: event\ndata: {}\n\n".to_vec());
    assert!(!is_valid_id("a\rb"));
    assert!(is_valid_id("1;a,1,1"));
}

#[test]
fn a_stream_of_events_parses_back() {
    let mut out = Vec::new();
    write_retry(&mut out, 500);
    write_event(
        &mut out,
        "advisory",
        None,
        br#"{"type":"advisory","kind":"connect"}"#,
    );
    write_heartbeat(&mut out);
    write_event(
        &mut out,
        "subscribed",
        Some("1;a,1,5"),
        br#"{"type":"subscribed"}"#,
    );
    write_event(&mut out, "event", Some("1;a,1,6"), br#"{"type":"event"}"#);
    let summary: Vec<(String, String)> = parse(&out)
        .into_iter()
        .map(|event| (event.name, event.last_event_id))
        .collect();
    assert_eq!(
        summary,
        [
            ("advisory".to_owned(), String::new()),
            ("subscribed".to_owned(), "1;a,1,5".to_owned()),
            ("event".to_owned(), "1;a,1,6".to_owned())
        ]
    );
}

#[test]
fn a_shared_event_frames_exactly_like_a_copied_one() {
    let data = br#"{"type":"event","stream":"todos","seq":7,"data":{"pad":"xxxx"}}"#;
    assert!(is_one_line(data));
    for id in [None, Some("1;todos,3,7")] {
        let mut out = Vec::new();
        write_event_head(&mut out, "event", id);
        out.extend_from_slice(data);
        write_event_tail(&mut out);
        assert_eq!(out, encode("event", id, data));
        let parsed = parse(&out);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].data.as_bytes(), data);
    }
    assert!(!is_one_line(b"two\nlines"));
    assert!(!is_one_line(b"two\rlines"));
}

#[test]
fn events_across_chunks_and_line_endings() {
    let mut parser = SseParser::new();
    let items = all(
        &mut parser,
        &[
            b"\xef\xbb\xbfretry: 1000\r\n: heartbeat\r\n\r\nid: 1;a,1,2\r",
            b"\nevent: event\ndata: {\"a\":",
            b"\"\xc3",
            b"\xa9\"}\n\nevent: snapshot\rdata: x\rdata: y\r\r",
        ],
    );
    assert_eq!(
        items,
        vec![
            SseItem::Retry(1000),
            SseItem::Comment("heartbeat".into()),
            SseItem::Event(with_id(event("event", "{\"a\":\"é\"}", "1;a,1,2"))),
            SseItem::Event(event("snapshot", "x\ny", "1;a,1,2")),
        ]
    );
    assert_eq!(parser.last_event_id(), "1;a,1,2");
}

#[test]
fn no_data_no_event_and_default_name() {
    let mut parser = SseParser::new();
    assert!(parser.push_events(b"event: x\n\n").is_empty());
    let events = parser.push_events(b"data\n\n");
    assert_eq!(events, vec![event("message", "", "")]);
}

#[test]
fn odd_fields_are_ignored_and_counted() {
    let mut parser = SseParser::new();
    let items = parser.push(b"retry: 1x\nid: a\0b\nfoo: bar\nevent: e\ndata: 1\n\n");
    assert_eq!(items, vec![SseItem::Event(event("e", "1", ""))]);
    assert_eq!(parser.unknown_fields(), 1);
}
