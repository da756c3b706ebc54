//! Native tests of the host: a guest engine talks to a host engine through [`Host`], and the
//! host engine's relay is played by the test.

use serde_json::{json, Value};
use tidewire_shared::{Json, Op};

use super::Host;
use crate::engine::effect::Effect;
use crate::engine::{Config, Engine, TransportChoice};

struct Pair {
    host: Engine,
    guest: Engine,
    relay: Host,
    /// What the host engine sent to the relay.
    upstream: Vec<Value>,
    /// Changes the guest's application saw: `(key, new value, origin)`.
    seen: Vec<(String, Option<Value>, String)>,
    resolved: Vec<(String, u64)>,
    /// Stream errors the guest's application heard: `(stream, code)`.
    errors: Vec<(String, String)>,
    /// Changes the host's own application saw: `(key, origin)`.
    host_seen: Vec<(String, String)>,
}

fn engine(writer: &str) -> Engine {
    Engine::new(
        Config {
            transport: TransportChoice::Manual,
            writer: Some(writer.into()),
            ..Config::default()
        },
        1,
    )
}

impl Pair {
    fn new() -> Self {
        let mut host = engine("host");
        host.set_hosting(true);
        host.start(0.0);
        let mut guest = engine("guest");
        guest.set_guest(true, 0.0);
        guest.start(0.0);
        let mut pair = Pair {
            host,
            guest,
            relay: Host::default(),
            upstream: Vec::new(),
            seen: Vec::new(),
            resolved: Vec::new(),
            errors: Vec::new(),
            host_seen: Vec::new(),
        };
        let out = pair.relay.join(&pair.host, "g");
        pair.deliver(out);
        pair.guest.on_open(1.0);
        pair.pump();
        pair
    }

    fn deliver(&mut self, out: super::Out) {
        for (_, text) in out {
            self.guest.on_text(&text, 1.0);
        }
    }

    /// Runs both engines' effects until nothing moves.
    fn pump(&mut self) {
        for _ in 0..20 {
            let mut moved = false;
            for effect in self.guest.take_effects() {
                match effect {
                    Effect::Send(text) => {
                        moved = true;
                        let out = self.relay.on_text(&mut self.host, "g", &text);
                        self.deliver(out);
                    }
                    Effect::Changes {
                        changes, origin, ..
                    } => {
                        for change in changes {
                            self.seen.push((
                                change.key,
                                change.new.as_ref().map(Json::to_value),
                                origin.as_str().to_owned(),
                            ));
                        }
                    }
                    Effect::Resolve { id, seq } => self.resolved.push((id, seq)),
                    Effect::StreamError { stream, code, .. } => self.errors.push((stream, code)),
                    _ => {}
                }
            }
            for effect in self.host.take_effects() {
                match effect {
                    Effect::Send(text) => {
                        moved = true;
                        self.upstream
                            .push(serde_json::from_str(&text).unwrap_or(Value::Null));
                    }
                    Effect::Tap(tap) => {
                        moved = true;
                        let out = self.relay.on_tap(&self.host, tap);
                        self.deliver(out);
                    }
                    Effect::WriteSettled(outcome) => {
                        if let Some(out) = self.relay.on_write(&outcome) {
                            moved = true;
                            self.deliver(out);
                        }
                    }
                    Effect::Changes {
                        changes, origin, ..
                    } => {
                        for change in changes {
                            self.host_seen
                                .push((change.key, origin.as_str().to_owned()));
                        }
                    }
                    Effect::StreamError {
                        stream,
                        code,
                        message,
                    } => {
                        let out = self.relay.on_stream_error(&stream, &code, &message);
                        moved |= !out.is_empty();
                        self.deliver(out);
                    }
                    _ => {}
                }
            }
            let out = self.relay.serve(&self.host);
            if !out.is_empty() {
                moved = true;
                self.deliver(out);
            }
            if !moved {
                return;
            }
        }
    }

    /// The relay's answers to the host engine.
    fn relay_says(&mut self, message: Value) {
        self.host.on_text(&message.to_string(), 2.0);
        self.pump();
    }
}

fn event(seq: u64, key: &str, op: &str, data: Value) -> Value {
    json!({"type": "event", "stream": "todos", "epoch": 1, "seq": seq, "key": key, "op": op,
           "data": data})
}

fn live_host(pair: &mut Pair) {
    pair.relay_says(
        json!({"type": "snapshot", "stream": "todos", "epoch": 1, "seq": 2,
        "chunk": 0, "last": true, "records": [
            {"key": "a", "seq": 1, "data": {"owner": "u1", "n": 1}},
            {"key": "b", "seq": 2, "data": {"owner": "u2", "n": 2}}]}),
    );
    pair.relay_says(
        json!({"type": "subscribed", "stream": "todos", "epoch": 1, "seq": 2, "resumed": false}),
    );
}

#[test]
fn a_guest_gets_the_hosts_records_then_its_events() {
    let mut pair = Pair::new();
    pair.guest.open_stream("todos").expect("valid");
    pair.pump();
    // The host subscribed upstream for the guest.
    assert_eq!(pair.upstream[0]["type"], "subscribe");
    live_host(&mut pair);
    assert!(pair.guest.is_live("todos"));
    assert_eq!(pair.guest.collection("todos").expect("collection").len(), 2);
    pair.relay_says(event(3, "c", "upsert", json!({"owner": "u1", "n": 3})));
    pair.relay_says(event(4, "a", "delete", Value::Null));
    let guest = pair.guest.collection("todos").expect("collection");
    assert_eq!(guest.len(), 2);
    assert_eq!(guest.applied(), 4);
    assert_eq!(pair.guest.stats().duplicates, 0);
}

#[test]
fn a_filtered_guest_sees_moves_in_and_out() {
    let mut pair = Pair::new();
    let view = pair
        .guest
        .open_view("todos", Some(&json!({"owner": "u1"})))
        .expect("valid");
    pair.pump();
    live_host(&mut pair);
    assert_eq!(pair.guest.view(view).expect("view").len(), 1);
    // b moves in, a moves out, c never matches.
    pair.relay_says(event(3, "b", "patch", json!({"owner": "u1"})));
    pair.relay_says(event(4, "a", "patch", json!({"owner": "u9"})));
    pair.relay_says(event(5, "c", "upsert", json!({"owner": "u7"})));
    let read = pair.guest.view(view).expect("view");
    assert_eq!(read.keys(), vec!["b"]);
    assert_eq!(
        read.get("b"),
        Some(Json::from(json!({"owner": "u1", "n": 2})))
    );
    assert_eq!(pair.guest.stats().gaps, 0);
    assert!(pair.guest.is_view_live(view));
}

#[test]
fn a_guest_write_goes_out_with_its_write_id_and_is_acknowledged_once_applied() {
    let mut pair = Pair::new();
    pair.guest.open_stream("todos").expect("valid");
    pair.pump();
    live_host(&mut pair);
    let id = pair
        .guest
        .write("todos", "a", Op::Patch, json!({"n": 5}))
        .expect("valid");
    pair.pump();
    let publish = pair
        .upstream
        .iter()
        .find(|message| message["type"] == "publish")
        .cloned()
        .expect("published upstream");
    assert_eq!(publish["write_id"], json!("guest.1"));
    // Shown at once in the guest.
    assert_eq!(
        pair.guest.collection("todos").map(|c| c.get("a")),
        Some(Some(Json::from(json!({"owner": "u1", "n": 1}))))
    );
    assert_eq!(
        pair.seen
            .last()
            .map(|(key, _, origin)| (key.as_str(), origin.as_str())),
        Some(("a", "local"))
    );
    let host_id = publish["id"].as_str().expect("id").to_owned();
    pair.relay_says(json!({"type": "ack", "id": host_id, "stream": "todos", "seq": 3}));
    assert!(pair.resolved.is_empty(), "not before the event is applied");
    pair.relay_says(event(3, "a", "patch", json!({"n": 5})));
    assert_eq!(pair.resolved, vec![(id, 3)]);
    // The host's own collections show the guest's write as anyone's: when it commits.
    assert_eq!(
        pair.host_seen.last(),
        Some(&("a".to_owned(), "event".to_owned()))
    );
    assert!(!pair.host_seen.iter().any(|(_, origin)| origin == "local"));
    assert_eq!(
        pair.guest.view(1).and_then(|view| view.get("a")),
        Some(Json::from(json!({"owner": "u1", "n": 5})))
    );
}

#[test]
fn a_guest_resumes_from_recent_events_and_waits_when_ahead() {
    let mut pair = Pair::new();
    pair.guest.open_stream("todos").expect("valid");
    pair.pump();
    live_host(&mut pair);
    // The guest's link drops; events go on meanwhile.
    pair.relay.leave(&mut pair.host, "g");
    pair.guest
        .on_closed(crate::engine::CloseInfo::default(), 3.0);
    pair.relay_says(event(3, "c", "upsert", json!({"owner": "u1"})));
    pair.relay_says(event(4, "c", "patch", json!({"n": 4})));
    let out = pair.relay.join(&pair.host, "g");
    pair.deliver(out);
    pair.guest.on_retry_timer(10_000.0);
    pair.guest.on_open(10_001.0);
    pair.seen.clear();
    pair.pump();
    assert!(pair.guest.is_live("todos"));
    // Exactly the two events, not a snapshot.
    assert_eq!(
        pair.seen
            .iter()
            .map(|(key, _, origin)| format!("{key}:{origin}"))
            .collect::<Vec<_>>(),
        vec!["c:event", "c:event"]
    );
    assert_eq!(pair.guest.stats().resyncs, 0);

    // A second guest ahead of the host waits until the host has caught up.
    let mut ahead = Host::default();
    let mut host = engine("h2");
    host.set_hosting(true);
    host.start(0.0);
    ahead.join(&host, "x");
    let subscribe = json!({"type": "subscribe", "stream": "todos",
                           "since": {"epoch": 1, "seq": 3}})
    .to_string();
    assert!(ahead.on_text(&mut host, "x", &subscribe).is_empty());
    host.on_text(
        &json!({"type": "snapshot", "stream": "todos", "epoch": 1, "seq": 2, "chunk": 0,
                "last": true, "records": []})
        .to_string(),
        1.0,
    );
    host.on_text(
        &json!({"type": "subscribed", "stream": "todos", "epoch": 1, "seq": 2,
                "resumed": false})
        .to_string(),
        1.0,
    );
    assert!(ahead.serve(&host).is_empty(), "behind the guest: wait");
    host.on_text(&event(3, "z", "upsert", json!(1)).to_string(), 2.0);
    let out = ahead.serve(&host);
    assert_eq!(out.len(), 1);
    assert!(out[0].1.contains("\"subscribed\""), "{out:?}");
    assert!(out[0].1.contains("\"resumed\":true"), "{out:?}");
}

#[test]
fn a_refused_subscription_reaches_the_guest() {
    let mut pair = Pair::new();
    pair.guest.open_stream("todos").expect("valid");
    pair.pump();
    pair.relay_says(
        json!({"type": "error", "stream": "todos", "code": "forbidden",
                           "message": "no read access to todos"}),
    );
    assert_eq!(
        pair.errors,
        vec![("todos".to_owned(), "forbidden".to_owned())]
    );
    let out = pair
        .relay
        .on_stream_error("todos", "forbidden", "no read access to todos");
    assert!(out.is_empty(), "told once: the subscription is gone");
    assert!(!pair.guest.is_live("todos"));
}
