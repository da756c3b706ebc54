//! Writing a JSON object's text field by field, with values that are already JSON text
//! ([`Json`](super::Json) records) copied in as they are: the clients' messages to JavaScript,
//! to the tabs they serve and to storage carry whole records, which a `Value` tree would
//! parse and print again.

use super::push_string;

/// A JSON object under construction.
///
/// # Examples
///
/// ```
/// use tidewire_shared::json::ObjectWriter;
/// let mut object = ObjectWriter::new();
/// object.str("key", "a\"b").u64("seq", 7).raw("data", r#"{"done":true}"#);
/// assert_eq!(object.finish(), r#"{"key":"a\"b","seq":7,"data":{"done":true}}"#);
/// ```
#[derive(Debug)]
pub struct ObjectWriter {
    text: String,
    /// Whether a field was written (the next one needs a comma).
    fields: bool,
}

impl Default for ObjectWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectWriter {
    /// An empty object.
    pub fn new() -> Self {
        Self::with_capacity(64)
    }

    /// An empty object with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Self::after(String::with_capacity(bytes))
    }

    /// An object written at the end of `text` (which [`ObjectWriter::finish`] gives back).
    fn after(mut text: String) -> Self {
        text.push('{');
        Self {
            text,
            fields: false,
        }
    }

    fn name(&mut self, name: &str) -> &mut String {
        if self.fields {
            self.text.push(',');
        }
        self.fields = true;
        push_string(&mut self.text, name);
        self.text.push(':');
        &mut self.text
    }

    /// A field whose value is JSON text already (copied as it is: the caller vouches for it).
    pub fn raw(&mut self, name: &str, json: &str) -> &mut Self {
        self.name(name).push_str(json);
        self
    }

    /// A string field.
    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        push_string(self.name(name), value);
        self
    }

    /// A number field.
    pub fn u64(&mut self, name: &str, value: u64) -> &mut Self {
        self.name(name).push_str(itoa::Buffer::new().format(value));
        self
    }

    /// A number field.
    pub fn i64(&mut self, name: &str, value: i64) -> &mut Self {
        self.name(name).push_str(itoa::Buffer::new().format(value));
        self
    }

    /// A boolean field.
    pub fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.name(name)
            .push_str(if value { "true" } else { "false" });
        self
    }

    /// The object's text.
    pub fn finish(mut self) -> String {
        self.text.push('}');
        self.text
    }
}

/// The text of a JSON array of objects, one per item, each written by `write` into one
/// buffer (a list of whole records: no text per record to copy again).
pub fn objects<T>(
    items: &[T],
    bytes: impl Fn(&T) -> usize,
    mut write: impl FnMut(&T, &mut ObjectWriter),
) -> String {
    let size: usize = items.iter().map(|item| bytes(item) + 48).sum();
    let mut text = String::with_capacity(size + 2);
    text.push('[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        let mut object = ObjectWriter::after(text);
        write(item, &mut object);
        text = object.finish();
    }
    text.push(']');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn writes_what_serde_json_reads_back() {
        let mut object = ObjectWriter::with_capacity(8);
        object
            .str("name with \"quotes\"", "line\nbreak")
            .u64("big", u64::MAX)
            .i64("negative", i64::MIN)
            .bool("yes", true)
            .bool("no", false)
            .raw("data", r#"[1,{"a":null}]"#);
        let text = object.finish();
        let value: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            value,
            json!({"name with \"quotes\"": "line\nbreak", "big": u64::MAX, "negative": i64::MIN,
                   "yes": true, "no": false, "data": [1, {"a": null}]})
        );
        assert_eq!(ObjectWriter::new().finish(), "{}");
        let list = objects(
            &[1u64, 2],
            |_| 0,
            |n, object| {
                object.u64("n", *n).raw("empty", "{}");
            },
        );
        assert_eq!(list, r#"[{"n":1,"empty":{}},{"n":2,"empty":{}}]"#);
        assert_eq!(objects(&[0u8; 0], |_| 0, |_, _| {}), "[]");
    }
}
