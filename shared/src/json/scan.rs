//! A JSON scanner: checks the grammar (RFC 8259) and finds where each field of an object and
//! each item of an array begins and ends, building nothing.
//!
//! The decoder keeps record and event data as the text it arrived as. serde_json can do that
//! with its `raw_value` feature, but the feature makes every `Value` parse carry serde's
//! float-printing error path, 11 KB of the browser package (twiggy); this scanner is about
//! 2 KB, and it borrows object keys without copying them.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

/// Nesting deeper than this is refused (serde_json's own limit is 128).
const MAX_DEPTH: usize = 128;
// `Scanner::value` keeps one bit per open bracket in a `u128`.
const _: () = assert!(MAX_DEPTH <= 128);

/// Where the text stops being JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanError {
    /// Byte offset of the first byte that does not fit.
    pub at: usize,
}

impl fmt::Display for ScanError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "invalid JSON at byte {}", self.at)
    }
}

impl std::error::Error for ScanError {}

/// An object's fields: each name (borrowed unless it has escapes) and its value's text.
pub type Fields<'a> = Vec<(Cow<'a, str>, &'a str)>;

/// Checks that `text` is one JSON value (whitespace around it allowed); returns the value's
/// text without the whitespace.
///
/// # Errors
///
/// A [`ScanError`] at the first byte that does not fit.
pub fn value(text: &str) -> Result<&str, ScanError> {
    let mut scanner = Scanner::new(text);
    scanner.space();
    let start = scanner.at;
    scanner.value(0)?;
    let end = scanner.at;
    scanner.end()?;
    Ok(&text[start..end])
}

/// The fields of `text`, which must be one JSON object. A name that repeats appears twice.
///
/// # Errors
///
/// A [`ScanError`] if `text` is not one JSON object.
pub fn object(text: &str) -> Result<Fields<'_>, ScanError> {
    object_within(text, MAX_DEPTH)
}

/// [`object`], refusing nesting deeper than `max_depth` brackets (at most 128): how the decoder
/// applies its depth limit in the same pass.
///
/// # Errors
///
/// A [`ScanError`] if `text` is not one JSON object, or nests deeper.
pub fn object_within(text: &str, max_depth: usize) -> Result<Fields<'_>, ScanError> {
    let mut scanner = Scanner::new(text);
    scanner.max_depth = max_depth.min(MAX_DEPTH);
    scanner.space();
    let mut fields = Vec::new();
    scanner.object(0, &mut |name, value| fields.push((name, value)))?;
    scanner.end()?;
    Ok(fields)
}

/// The items of `text`, which must be one JSON array.
///
/// # Errors
///
/// A [`ScanError`] if `text` is not one JSON array.
pub fn array(text: &str) -> Result<Vec<&str>, ScanError> {
    let mut scanner = Scanner::new(text);
    scanner.space();
    let mut items = Vec::new();
    scanner.array(0, &mut |item| items.push(item))?;
    scanner.end()?;
    Ok(items)
}

/// The fields of each item of `text`, which must be one JSON array of objects (the tests'
/// second reading of a list [`object_with_list`] read in its object's pass).
///
/// # Errors
///
/// A [`ScanError`] if `text` is not one JSON array, or an item is not an object.
#[cfg(test)]
fn objects(text: &str) -> Result<Vec<Fields<'_>>, ScanError> {
    let mut scanner = Scanner::new(text);
    scanner.space();
    let items = scanner.objects(0)?;
    scanner.end()?;
    Ok(items)
}

/// [`object_within`], with the field `list` also read, in the same pass, as each of its
/// items' fields when it is an array of objects (`None` otherwise; its text is among the
/// fields either way). A snapshot chunk's `records` is such a list: reading the message, then
/// the list, then each record went over every record three times. Decoding a 500-record chunk
/// natively: 284 MB/s in three passes, 338-360 in two (the list's text read again), 548-554 in
/// one; applying a 10,000-record snapshot in Chromium (`scripts/bench client-wasm`): 33.1 ->
/// 25.5 ms.
///
/// # Errors
///
/// A [`ScanError`] if `text` is not one JSON object, or nests deeper than `max_depth`.
pub fn object_with_list<'a>(
    text: &'a str,
    max_depth: usize,
    list: &str,
) -> Result<(Fields<'a>, Option<Vec<Fields<'a>>>), ScanError> {
    let mut scanner = Scanner::new(text);
    scanner.max_depth = max_depth.min(MAX_DEPTH);
    scanner.space();
    // Room for a message's fields (an event has seven): no growing on the way.
    let mut fields = Vec::with_capacity(8);
    let mut items = None;
    scanner.list(0, (b'{', b'}'), &mut |scanner| {
        let name = scanner.field_name()?;
        let start = scanner.at;
        if name == list {
            // The last of a repeated name counts, as in `field`.
            items = scanner.objects(1).ok();
            if items.is_none() {
                scanner.at = start;
                scanner.value(1)?;
            }
        } else {
            scanner.value(1)?;
        }
        fields.push((name, &scanner.text[start..scanner.at]));
        Ok(())
    })?;
    scanner.end()?;
    Ok((fields, items))
}

/// The text of the field `name` of scanned `fields` (the last one, if a name repeats, as
/// serde_json reads it); `None` if it is absent or `null`.
pub fn field<'a>(fields: &Fields<'a>, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .rev()
        .find(|(known, _)| known == name)
        .map(|(_, value)| *value)
        .filter(|value| *value != "null")
}

/// The contents of `text`, a scanned JSON string (quotes included), unescaped; `None` if it is
/// not a string.
pub fn string(text: &str) -> Option<Cow<'_, str>> {
    if !text.starts_with('"') {
        return None;
    }
    let mut scanner = Scanner::new(text);
    let contents = scanner.string().ok()?;
    (scanner.at == text.len()).then_some(contents)
}

/// The contents of `text`, a string this scanner has already checked (the text of a field it
/// returned), unescaped; `None` if it is not a string. Without a backslash the contents are
/// the text between the quotes, and the string is not walked a second time. The decoder reads
/// a message's `type`, `stream`, `op` and `key` this way: decoding a live event natively
/// (10,000 events in a loop, release build) 305 -> 294 ns with `"data":1`, 386 -> 370 ns with
/// the benchmark's records.
pub(crate) fn scanned_string(text: &str) -> Option<Cow<'_, str>> {
    let contents = text.strip_prefix('"')?.strip_suffix('"')?;
    if memchr::memchr(b'\\', contents.as_bytes()).is_none() {
        return Some(Cow::Borrowed(contents));
    }
    string(text)
}

/// How many bytes of `bytes` come before the first quote, backslash or control character: the
/// scanner's hottest loop. Eight bytes at a time, with the bit tricks that find a zero byte
/// in a word (the lowest flagged byte is always a true match). Scanning a 500-record snapshot
/// chunk natively: 820 -> 1,050 MB/s against a comparison chain per byte.
///
/// Inlined by force, like the scanner's `peek`, `space` and `expect`: the browser package is
/// built for size (`opt-level = "z"`), where LLVM calls even these. Forcing the four: the
/// client's snapshot apply 4.0-4.3x -> 3.3x `JSON.parse`, live events 7.8-8.2x -> 6.7-6.9x,
/// for 271 gzipped bytes (`scripts/bench client-wasm`, three alternated invocations each;
/// forcing six more of the scanner's steps bought little more for 1,162 more bytes).
#[inline(always)]
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = ONES << 7;
    let zero_in = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut at = 0;
    while let Some(Ok(chunk)) = bytes.get(at..at + 8).map(<[u8; 8]>::try_from) {
        let word = u64::from_le_bytes(chunk);
        let stops = zero_in(word ^ (ONES * u64::from(b'"')))
            | zero_in(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS);
        if stops != 0 {
            return at + (stops.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
        .unwrap_or(rest.len())
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    /// Brackets may nest this deep.
    max_depth: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            at: 0,
            max_depth: MAX_DEPTH,
        }
    }

    fn fail<T>(&self) -> Result<T, ScanError> {
        Err(ScanError { at: self.at })
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    #[inline(always)]
    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn end(&mut self) -> Result<(), ScanError> {
        self.space();
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            self.fail()
        }
    }

    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Result<(), ScanError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            self.fail()
        }
    }

    /// One value at nesting `depth`, checked and skipped. Iterative, with the open brackets
    /// as bits of one word, and no callbacks: record data is most of what the client scans.
    /// Scanning a 500-record snapshot chunk natively: 660 -> 820 MB/s against the recursive
    /// form (a closure call per field and per item).
    fn value(&mut self, depth: usize) -> Result<(), ScanError> {
        // Bit `level` is set while the bracket open at that level is an object's.
        let mut objects: u128 = 0;
        let mut level = 0usize;
        loop {
            // A value is due.
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    if depth + level >= self.max_depth {
                        return self.fail();
                    }
                    self.at += 1;
                    self.space();
                    let object = open == b'{';
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                    } else {
                        if object {
                            objects |= 1 << level;
                            self.name()?;
                        } else {
                            objects &= !(1 << level);
                        }
                        level += 1;
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.word(b"true")?,
                Some(b'f') => self.word(b"false")?,
                Some(b'n') => self.word(b"null")?,
                _ => return self.fail(),
            }
            // A value ended: close brackets until another value is due.
            loop {
                if level == 0 {
                    return Ok(());
                }
                self.space();
                let object = objects & (1 << (level - 1)) != 0;
                match (self.peek(), object) {
                    (Some(b','), _) => {
                        self.at += 1;
                        self.space();
                        if object {
                            self.name()?;
                        }
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.at += 1;
                        level -= 1;
                    }
                    _ => return self.fail(),
                }
            }
        }
    }

    /// A field's name and its colon, up to the value.
    fn name(&mut self) -> Result<(), ScanError> {
        self.string()?;
        self.space();
        self.expect(b':')?;
        self.space();
        Ok(())
    }

    /// A bracketed, comma-separated list (an object or an array), with `element` reading each
    /// element. (`dyn`: one copy of the code, not one per caller.)
    fn list(
        &mut self,
        depth: usize,
        (open, close): (u8, u8),
        element: &mut dyn FnMut(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        if depth >= self.max_depth {
            return self.fail();
        }
        self.expect(open)?;
        self.space();
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            element(self)?;
            self.space();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.space();
                }
                Some(byte) if byte == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return self.fail(),
            }
        }
    }

    /// An object, telling `field` each field.
    fn object(
        &mut self,
        depth: usize,
        field: &mut dyn FnMut(Cow<'a, str>, &'a str),
    ) -> Result<(), ScanError> {
        self.list(depth, (b'{', b'}'), &mut |scanner| {
            let name = scanner.field_name()?;
            let start = scanner.at;
            scanner.value(depth + 1)?;
            field(name, &scanner.text[start..scanner.at]);
            Ok(())
        })
    }

    /// A member's name and its colon, leaving the scanner at its value.
    fn field_name(&mut self) -> Result<Cow<'a, str>, ScanError> {
        let name = self.string()?;
        self.space();
        self.expect(b':')?;
        self.space();
        Ok(name)
    }

    /// An array of objects at nesting `depth`, each object's fields.
    fn objects(&mut self, depth: usize) -> Result<Vec<Fields<'a>>, ScanError> {
        let mut items = Vec::new();
        self.list(depth, (b'[', b']'), &mut |scanner| {
            let mut fields = Vec::new();
            scanner.object(depth + 1, &mut |name, value| fields.push((name, value)))?;
            items.push(fields);
            Ok(())
        })?;
        Ok(items)
    }

    /// An array, telling `item` each item.
    fn array(&mut self, depth: usize, item: &mut dyn FnMut(&'a str)) -> Result<(), ScanError> {
        self.list(depth, (b'[', b']'), &mut |scanner| {
            let start = scanner.at;
            scanner.value(depth + 1)?;
            item(&scanner.text[start..scanner.at]);
            Ok(())
        })
    }

    /// A string; returns its contents, unescaped (borrowed when there is nothing to unescape).
    fn string(&mut self) -> Result<Cow<'a, str>, ScanError> {
        let open = self.at;
        self.expect(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            self.at += plain_run(&self.bytes[self.at..]);
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.at += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.at += 1;
                        }
                        Some(b'u') => {
                            self.at += 1;
                            for _ in 0..4 {
                                match self.peek() {
                                    Some(byte) if byte.is_ascii_hexdigit() => self.at += 1,
                                    _ => return self.fail(),
                                }
                            }
                        }
                        _ => return self.fail(),
                    }
                }
                _ => return self.fail(),
            }
        }
        let end = self.at;
        self.at += 1;
        if !escaped {
            return Ok(Cow::Borrowed(&self.text[start..end]));
        }
        // Rare (names with escapes): serde_json unescapes, and refuses what it cannot (a lone
        // surrogate).
        match serde_json::from_str::<Value>(&self.text[open..self.at]) {
            Ok(Value::String(text)) => Ok(Cow::Owned(text)),
            _ => Err(ScanError { at: open }),
        }
    }

    fn digits(&mut self) -> Result<(), ScanError> {
        if !self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            return self.fail();
        }
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.at += 1;
        }
        Ok(())
    }

    fn number(&mut self) -> Result<(), ScanError> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits()?,
            _ => return self.fail(),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    fn word(&mut self, word: &[u8]) -> Result<(), ScanError> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            self.fail()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_serde_json_accepts_the_scanner_accepts() {
        for text in [
            "null",
            " true ",
            "false",
            "0",
            "-0.5e+10",
            "12E-3",
            r#""a\"b\\c\/\b\f\n\r\t\u00e9""#,
            "[]",
            "[1, [2, {}], \"x\"]",
            r#"{"a": {"b": [null]}, "c": 1}"#,
            "\"caf\u{e9}\"",
            r#"[{"a": [], "b": {}}, [[1], {"c": [true, {"d": "e"}]}], {}]"#,
            r#"{ "a" : [ 1 , { "b" : null } ] , "c" : { } }"#,
        ] {
            assert!(serde_json::from_str::<Value>(text).is_ok(), "{text}");
            assert_eq!(value(text).map(str::len), Ok(text.trim().len()), "{text}");
        }
    }

    #[test]
    fn what_serde_json_refuses_the_scanner_refuses() {
        for text in [
            "",
            " ",
            "nul",
            "tru",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "[1,]",
            "[1 2]",
            "{,}",
            r#"{"a"}"#,
            r#"{"a":1,}"#,
            r#"{a:1}"#,
            "\"\\x\"",
            "\"\\u12G4\"",
            "\"a",
            "\"\t\"",
            "[",
            "{",
            "1 2",
            "[]]",
            "NaN",
            r#"{"\ud800":1}"#,
            r#"[{"a":1,}]"#,
            r#"{"a":[1,]}"#,
            "[{]",
            "[{}}",
            r#"{"a":[}"#,
            r#"[{"a" 1}]"#,
            r#"[{"a":}]"#,
            r#"[{1:2}]"#,
            "[[],,[]]",
            r#"{"a":{"b":1]}"#,
        ] {
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
            assert!(value(text).is_err() || object(text).is_err(), "{text}");
            if !text.starts_with('{') {
                assert!(value(text).is_err(), "{text}");
            }
        }
    }

    #[test]
    fn fields_and_items_are_the_exact_texts() {
        let text = r#" { "a" : [1, 2] , "b\"c":"x", "a":{"d":null} } "#;
        let fields = object(text).expect("an object");
        assert_eq!(
            fields,
            vec![
                (Cow::Borrowed("a"), "[1, 2]"),
                (Cow::Owned("b\"c".to_owned()), "\"x\""),
                (Cow::Borrowed("a"), "{\"d\":null}"),
            ]
        );
        assert_eq!(array("[1, \"two\" ,{}]"), Ok(vec!["1", "\"two\"", "{}"]));
        assert_eq!(string(r#""plain""#), Some(Cow::Borrowed("plain")));
        assert_eq!(string(r#""a\nb""#), Some(Cow::Owned("a\nb".to_owned())));
        assert_eq!(string("1"), None);
        assert_eq!(string(r#""a" "#), None);
        assert!(object("[1]").is_err());
        assert!(array("{}").is_err());
    }

    /// A string the scanner returned reads the same without a second walk, escaped or not.
    #[test]
    fn a_scanned_string_reads_as_a_walked_one() {
        let text =
            r#"{"plain":"abc","escaped":"a\"b\\c\u00e9\n","empty":"","number":12,"quote":"\"\""}"#;
        let fields = object(text).expect("an object");
        assert_eq!(fields.len(), 5);
        for (name, value) in &fields {
            assert_eq!(scanned_string(value), string(value), "{name}");
        }
        assert_eq!(scanned_string(r#""abc""#), Some(Cow::Borrowed("abc")));
        assert_eq!(
            scanned_string(r#""a\"b""#),
            Some(Cow::Owned("a\"b".to_owned()))
        );
        assert_eq!(scanned_string("12"), None);
        assert_eq!(scanned_string("null"), None);
    }

    /// A list read in the object's pass gives what reading its text again would, and a list
    /// that is not an array of objects is only skipped (any field may be named so).
    #[test]
    fn a_list_read_in_the_same_pass_matches_a_second_reading() {
        let text = r#"{"records" : [ {"key":"a","data":{"x":[1,{"y":"z"}]}} , {} ],"seq":3}"#;
        let (fields, items) = object_with_list(text, 64, "records").expect("an object");
        assert_eq!(fields, object(text).expect("an object"));
        let raw = field(&fields, "records").expect("records");
        assert_eq!(items, Some(objects(raw).expect("a list of objects")));
        assert_eq!(
            items.as_ref().and_then(|items| items.first()).cloned(),
            object(r#"{"key":"a","data":{"x":[1,{"y":"z"}]}}"#).ok()
        );
        for (text, has_list) in [
            (r#"{"records":[1,{}]}"#, false),
            (r#"{"records":{"a":1}}"#, false),
            (r#"{"records":[]}"#, true),
            // The last of a repeated name counts.
            (r#"{"records":[{}],"records":5}"#, false),
            (r#"{"records":5,"records":[{}]}"#, true),
        ] {
            let (fields, items) = object_with_list(text, 64, "records").expect("an object");
            assert_eq!(fields, object(text).expect("an object"), "{text}");
            assert_eq!(items.is_some(), has_list, "{text}");
        }
        // The depth limit holds inside the list as it does elsewhere.
        let deep = format!(
            r#"{{"records":[{{"a":{}1{}}}]}}"#,
            "[".repeat(10),
            "]".repeat(10)
        );
        assert!(object_with_list(&deep, 12, "records").is_err());
        assert!(object_with_list(&deep, 14, "records").is_ok());
        assert!(object_with_list(r#"{"records":[{]}"#, 64, "records").is_err());
        assert!(objects(r#"[{}, 1]"#).is_err());
    }

    /// The word-at-a-time search stops where a byte-by-byte one does, wherever the stop is
    /// and whatever surrounds it (bytes just above and below the control range, non-ASCII).
    #[test]
    fn plain_runs_stop_where_a_byte_by_byte_scan_stops() {
        let slow = |bytes: &[u8]| {
            bytes
                .iter()
                .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
                .unwrap_or(bytes.len())
        };
        for filler in [b'a', b' ', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'] {
            for stop in [b'"', b'\\', 0x00, 0x1f, b'\n', filler] {
                for length in 0..24 {
                    for at in 0..length {
                        let mut bytes = vec![filler; length];
                        bytes[at] = stop;
                        if at + 3 < length {
                            bytes[at + 3] = b'"';
                        }
                        assert_eq!(plain_run(&bytes), slow(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(value(&deep).is_err());
        let fine = "[".repeat(100) + &"]".repeat(100);
        assert!(value(&fine).is_ok());
    }
}
