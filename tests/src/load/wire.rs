//! Just enough of the relay's server messages for the load generator: the type, the stream,
//! the position fields and the commit time, borrowed from the frame (no `data` or `records`
//! is materialised), so 10,000 connections' worth of events parse cheaply.

use std::borrow::Cow;

use serde::Deserialize;

/// One server message, reduced to what the invariant checker needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Wire<'a> {
    /// `event`, `snapshot`, `subscribed`, `advisory`, `error`, ...
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// The stream, when the message has one.
    #[serde(default, borrow)]
    pub stream: Option<Cow<'a, str>>,
    /// Epoch of events, snapshots, `subscribed` and some advisories.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Seq of events, snapshots and `subscribed`.
    #[serde(default)]
    pub seq: Option<u64>,
    /// Commit time of an event, microseconds since the Unix epoch.
    #[serde(default)]
    pub ts: Option<i64>,
    /// The advisory kind (`gap`, `resync`, `lagged`, ...).
    #[serde(default, rename = "kind", borrow)]
    pub advisory: Option<Cow<'a, str>>,
    /// Why (advisories; `connect` names the relay and its connection id).
    #[serde(default, borrow)]
    pub reason: Option<Cow<'a, str>>,
    /// First seq an advisory covers (`gap`).
    #[serde(default)]
    pub from: Option<u64>,
    /// Last seq an advisory covers (`gap`), absent when unknown.
    #[serde(default)]
    pub to: Option<u64>,
    /// Snapshot chunks: whether this chunk completes the snapshot.
    #[serde(default)]
    pub last: Option<bool>,
    /// `subscribed`: whether the relay resumed from the client's position.
    #[serde(default)]
    pub resumed: Option<bool>,
    /// `error`: the error code.
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    /// Raw-channel events carry the publisher's payload here; the load generator's raw
    /// publisher puts its own sequence number in `data.n`.
    #[serde(default, deserialize_with = "lenient_data")]
    pub data: Option<RawData>,
}

/// The part of an event's `data` the raw-channel checker reads; anything else is ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawData {
    /// The publisher's own sequence number (raw channels only).
    pub n: Option<u64>,
    /// The publisher's send time in microseconds (raw channels only).
    pub sent: Option<i64>,
}

/// Reads `n` and `sent` when `data` is an object holding them as integers; any other value
/// (a string, an array, `n` of another type) is skipped without failing the message.
fn lenient_data<'de, D>(deserializer: D) -> Result<Option<RawData>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct DataVisitor;

    impl<'de> serde::de::Visitor<'de> for DataVisitor {
        type Value = Option<RawData>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("any JSON value")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut data = RawData::default();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                let value: serde_json::Value = match key.as_ref() {
                    "n" | "sent" => map.next_value()?,
                    _ => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        continue;
                    }
                };
                match key.as_ref() {
                    "n" => data.n = value.as_u64(),
                    _ => data.sent = value.as_i64(),
                }
            }
            Ok(Some(data))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    deserializer.deserialize_any(DataVisitor)
}

impl<'a> Wire<'a> {
    /// Parses one message.
    ///
    /// # Errors
    ///
    /// When the text is not a JSON object with a `type`.
    pub fn parse(json: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_advisories_parse() {
        let event = br#"{"type":"event","stream":"todos","epoch":7,"seq":43,"key":"t1","op":"patch","data":{"done":true,"n":"x"},"ts":1763861234567890}"#;
        // `data` of any shape (here `n` as a string) must not reject a durable event.
        let wire = Wire::parse(event).expect("any data parses");
        assert_eq!(
            (wire.seq, wire.data.and_then(|data| data.n)),
            (Some(43), None)
        );
        for data in ["\"text\"", "[1,{\"n\":2}]", "null", "3.5", "true"] {
            let text = format!(r#"{{"type":"event","seq":1,"data":{data}}}"#);
            let wire = Wire::parse(text.as_bytes()).expect("any data parses");
            assert_eq!(wire.data.and_then(|data| data.n), None, "{data}");
        }
        let event = br#"{"type":"event","stream":"todos","epoch":7,"seq":43,"key":"t1","op":"upsert","data":{"n":5,"sent":9},"ts":17}"#;
        let wire = Wire::parse(event).expect("an event parses");
        assert_eq!(wire.kind, "event");
        assert_eq!(wire.stream.as_deref(), Some("todos"));
        assert_eq!(
            (wire.epoch, wire.seq, wire.ts),
            (Some(7), Some(43), Some(17))
        );
        assert_eq!(wire.data.and_then(|data| data.n), Some(5));
        let gap = br#"{"type":"advisory","kind":"gap","stream":"raw:x","from":4,"to":9}"#;
        let wire = Wire::parse(gap).expect("an advisory parses");
        assert_eq!(wire.advisory.as_deref(), Some("gap"));
        assert_eq!((wire.from, wire.to), (Some(4), Some(9)));
        assert!(Wire::parse(b"not json").is_err());
        assert!(now_micros() > 1_600_000_000_000_000);
    }
}
