//! [`Json`]: a JSON value kept as its text, for the clients' collections.
//!
//! A client applies every record and event it receives and hands each new value to the
//! application. Building a `serde_json::Value` tree for each, cloning it into the collection
//! and serialising it again for JavaScript was most of the browser client's time (a profile
//! of 10,000 live events in Chromium: allocation, tree building, tree cloning and
//! serialisation, about 80% of the run). A `Json` is the value's text, shared: decoding copies
//! the bytes once, a clone is a reference count, and the text goes to JavaScript as it came.
//!
//! Equality is equality of the text. The relay writes every value with `serde_json` (compact,
//! object keys sorted), and [`Json::from_value`] writes the same form, so equal values have
//! equal texts; a value written differently by someone else compares unequal, which costs a
//! redundant change notification, never a missed one.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

pub mod scan;
mod writer;

pub use scan::ScanError;
pub use writer::{objects, ObjectWriter};

/// A JSON value held as its (valid, compact) text. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Json(Arc<str>);

impl Json {
    /// `null`.
    pub fn null() -> Self {
        Self(Arc::from("null"))
    }

    /// The text of `value`, in the relay's form (compact, object keys sorted).
    pub fn from_value(value: &Value) -> Self {
        // Serialising a `Value` cannot fail: every map key is a string.
        Self(Arc::from(value.to_string()))
    }

    /// A value's text already checked by the scanner (a slice of a scanned message).
    pub(crate) fn from_scanned(text: &str) -> Self {
        Self(Arc::from(text))
    }

    /// Checks that `text` is one JSON value and keeps it (without surrounding whitespace).
    ///
    /// # Errors
    ///
    /// A [`ScanError`] if it is not.
    pub fn parse(text: &str) -> Result<Self, ScanError> {
        scan::value(text).map(Self::from_scanned)
    }

    /// Where this text is held: two `Json`s with the same address share one text (one
    /// decoding, or one merge). The browser client uses it to tell a value it received from a
    /// copy, so it can hand JavaScript the object it parsed from the message. Stable while
    /// this `Json` (or a clone) is alive.
    pub fn address(&self) -> usize {
        self.0.as_ptr() as usize
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value as a tree (for filters and for callers that inspect it).
    pub fn to_value(&self) -> Value {
        // The text is valid JSON; a tree deeper than the parser's recursion limit (deeper
        // than any decoder here lets in) reads as null rather than failing.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// True for a JSON object.
    pub fn is_object(&self) -> bool {
        self.0.starts_with('{')
    }

    /// `base` with `fields` (each a name and its value's valid JSON text, as
    /// [`scan::object`] lists them) written over it: the object a patch makes. A base that is
    /// not an object starts from `{}`. Keys come out sorted, as the relay writes them, so the
    /// result compares equal to the relay's text of the same record. (A slice, not an
    /// iterator: one copy of this function in the browser package, where each caller's
    /// iterator made its own.)
    pub(crate) fn merged(base: Option<&Json>, fields: &[(Cow<'_, str>, &str)]) -> Json {
        let base = base
            .filter(|base| base.is_object())
            .and_then(|base| scan::object(base.as_str()).ok())
            .unwrap_or_default();
        // Kept sorted by name while it is built: a name written again replaces its value (a
        // field over the base). Records have few fields; a general sort would cost the browser
        // package 3.5 KB (twiggy).
        let mut object: Vec<(&str, &str)> = Vec::with_capacity(base.len() + fields.len());
        for (name, value) in base.iter().chain(fields) {
            match object.binary_search_by(|(known, _)| (*known).cmp(name.as_ref())) {
                Ok(at) => object[at].1 = value,
                Err(at) => object.insert(at, (name.as_ref(), value)),
            }
        }
        let size = object
            .iter()
            .map(|(name, value)| name.len() + value.len() + 4);
        let mut text = ObjectWriter::with_capacity(2 + size.sum::<usize>());
        for (name, value) in &object {
            text.raw(name, value);
        }
        Json(Arc::from(text.finish()))
    }
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it.
pub fn push_string(out: &mut String, text: &str) {
    let plain = text
        .bytes()
        .all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\');
    if plain {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else if let Ok(quoted) = serde_json::to_string(text) {
        // Writing a `str` into a `String` cannot fail.
        out.push_str(&quoted);
    }
}

impl Default for Json {
    fn default() -> Self {
        Self::null()
    }
}

impl From<Value> for Json {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

impl From<&Value> for Json {
    fn from(value: &Value) -> Self {
        Self::from_value(value)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Through the tree: only persistence and the tabs' wire serialise a record this way;
        // the hot paths copy the text.
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|value| Self::from_value(&value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_text_is_the_relays_form() {
        let value = json!({"b": 1, "a": [true, null, "x\"y"]});
        let text = Json::from_value(&value);
        assert_eq!(text.as_str(), r#"{"a":[true,null,"x\"y"],"b":1}"#);
        assert_eq!(text.to_value(), value);
        assert_eq!(Json::parse(text.as_str()).expect("valid"), text);
        assert!(Json::parse("{").is_err());
        assert_eq!(Json::parse(" [1] ").expect("valid").as_str(), "[1]");
        assert!(Json::parse("1 2").is_err());
    }

    #[test]
    fn merging_writes_fields_over_the_base_in_key_order() {
        let base = Json::from_value(&json!({"title": "milk", "done": false, "n": {"x": 1}}));
        let done = Json::from_value(&json!(true));
        let tag = Json::from_value(&json!(["a"]));
        let merged = Json::merged(
            Some(&base),
            &[
                ("done".into(), done.as_str()),
                ("a\"q".into(), tag.as_str()),
            ],
        );
        let expected = json!({"title": "milk", "done": true, "n": {"x": 1}, "a\"q": ["a"]});
        assert_eq!(merged, Json::from_value(&expected));
        // Not an object: start from {}.
        let scalar = Json::from_value(&json!("scalar"));
        assert_eq!(
            Json::merged(Some(&scalar), &[("done".into(), done.as_str())]),
            Json::from_value(&json!({"done": true}))
        );
        assert_eq!(Json::merged(None, &[]), Json::from_value(&json!({})));
    }

    #[test]
    fn escaped_names_are_read_and_written_back() {
        let base = Json::parse(r#"{"caf\u00e9":1,"x":2}"#).expect("valid");
        let fields: Vec<(String, String)> = scan::object(base.as_str())
            .expect("an object")
            .into_iter()
            .map(|(name, value)| (name.into_owned(), value.to_owned()))
            .collect();
        assert_eq!(
            fields,
            vec![("café".into(), "1".into()), ("x".into(), "2".into())]
        );
        let merged = Json::merged(Some(&base), &[]);
        assert_eq!(merged.to_value(), json!({"café": 1, "x": 2}));
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for text in [
            "plain",
            "",
            "quo\"te",
            "back\\slash",
            "new\nline",
            "\u{1}",
            "café",
        ] {
            let mut out = String::new();
            push_string(&mut out, text);
            assert_eq!(
                out,
                serde_json::to_string(text).expect("serializes"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn serde_round_trip_keeps_the_text() {
        let record = Json::from_value(&json!({"a": 1}));
        let text = serde_json::to_string(&vec![record.clone()]).expect("serializes");
        assert_eq!(text, r#"[{"a":1}]"#);
        let back: Vec<Json> = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, vec![record]);
    }
}
