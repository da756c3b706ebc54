//! Byte-exact tests of the SSE framing, plus a small WHATWG-conformant parser that shows no
//! data can add fields or events.

use bytes::BytesMut;

use super::*;

fn encode(name: &str, id: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    event(&mut out, name, id, data);
    out.to_vec()
}

/// One dispatched event as a browser sees it.
#[derive(Debug, PartialEq)]
struct Parsed {
    event: String,
    data: String,
    last_event_id: String,
}

/// The WHATWG "interpret an event stream" algorithm, minus `retry` handling.
fn parse(stream: &[u8]) -> Vec<Parsed> {
    let text = String::from_utf8_lossy(stream);
    let (mut events, mut event, mut data, mut last_id) =
        (Vec::new(), String::new(), String::new(), String::new());
    let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<&str> = normalised.split('\n').collect();
    // The text after the last line break is an incomplete line; it is never processed.
    lines.pop();
    for line in lines {
        if line.is_empty() {
            if !data.is_empty() {
                data.pop();
                let name = if event.is_empty() {
                    "message".to_owned()
                } else {
                    event.clone()
                };
                events.push(Parsed {
                    event: name,
                    data: data.clone(),
                    last_event_id: last_id.clone(),
                });
            }
            data.clear();
            event.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.find(':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        match field {
            "event" => event = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_id = value.to_owned(),
            _ => {}
        }
    }
    events
}

#[test]
fn retry_comes_first_and_is_exact() {
    let mut out = BytesMut::new();
    retry(&mut out, 1000);
    assert_eq!(&out[..], b"retry: 1000\n\n");
}

#[test]
fn heartbeat_is_a_comment() {
    let mut out = BytesMut::new();
    heartbeat(&mut out);
    assert_eq!(&out[..], b": hb\n\n");
    assert!(parse(&out).is_empty());
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
    assert_eq!(
        encode("event", None, b"a\nb"),
        b"event: event\ndata: a\ndata: b\n\n".to_vec()
    );
    assert_eq!(
        encode("event", None, b"a\rb"),
        b"event: event\ndata: a\ndata: b\n\n".to_vec()
    );
    assert_eq!(
        encode("event", None, b"a\r\nb"),
        b"event: event\ndata: a\ndata: b\n\n".to_vec()
    );
    assert_eq!(
        encode("event", None, b"a\n\rb"),
        b"event: event\ndata: a\ndata: \ndata: b\n\n".to_vec()
    );
    assert_eq!(
        encode("event", None, b"a\n"),
        b"event: event\ndata: a\ndata: \n\n".to_vec()
    );
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
        let parsed = parse(&bytes);
        let text = String::from_utf8_lossy(data)
            .replace("\r\n", "\n")
            .replace('\r', "\n");
        assert_eq!(
            parsed,
            vec![Parsed {
                event: "event".into(),
                data: text,
                last_event_id: "1;todos,7,1".into()
            }],
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
}

#[test]
fn message_types_are_read_from_the_json() {
    assert_eq!(
        message_type(br#"{"type":"snapshot","stream":"a"}"#),
        "snapshot"
    );
    assert_eq!(
        message_type(br#"{"stream":"a","type":"subscribed"}"#),
        "subscribed"
    );
    assert_eq!(message_type(br#"{"type":"Evil\nid: 1"}"#), "message");
    assert_eq!(message_type(br#"{"type":"evil\u000aid"}"#), "message");
    assert_eq!(message_type(b"not json"), "message");
    assert_eq!(message_type(br#"{"type":"x"#), "message");
}

#[test]
fn a_stream_of_events_parses_back() {
    let mut out = BytesMut::new();
    retry(&mut out, 500);
    event(
        &mut out,
        "advisory",
        None,
        br#"{"type":"advisory","kind":"connect"}"#,
    );
    heartbeat(&mut out);
    event(
        &mut out,
        "subscribed",
        Some("1;a,1,5"),
        br#"{"type":"subscribed"}"#,
    );
    event(&mut out, "event", Some("1;a,1,6"), br#"{"type":"event"}"#);
    let parsed = parse(&out);
    let summary: Vec<_> = parsed
        .iter()
        .map(|p| (p.event.as_str(), p.last_event_id.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("advisory", ""),
            ("subscribed", "1;a,1,5"),
            ("event", "1;a,1,6")
        ]
    );
}

#[test]
fn a_shared_event_frames_exactly_like_a_copied_one() {
    let data = br#"{"type":"event","stream":"todos","seq":7,"data":{"pad":"xxxx"}}"#;
    assert!(is_one_line(data));
    for id in [None, Some("1;todos,3,7")] {
        let mut out = BytesMut::new();
        event_head(&mut out, "event", id);
        out.extend_from_slice(data);
        event_tail(&mut out);
        assert_eq!(out.to_vec(), encode("event", id, data));
        let parsed = parse(&out);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].data.as_bytes(), data);
    }
    assert!(!is_one_line(b"two\nlines"));
    assert!(!is_one_line(b"two\rlines"));
}
