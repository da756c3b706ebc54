//! Percent-encoding and query strings, with one rule for malformed input: a `%` not followed
//! by two hex digits, or bytes that are not UTF-8 once decoded, is an error the caller turns
//! into a refusal (never kept literally, never replaced). Decoding is the `percent-encoding`
//! crate's; this module adds the rule and the `application/x-www-form-urlencoded` split of
//! query strings (`&` between pairs, `=` inside one, `+` for a space).

use percent_encoding::percent_decode_str;

/// Why a percent-encoded string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PercentError {
    /// A `%` not followed by two hex digits, at this byte offset.
    #[error("bad percent-encoding at byte {0}")]
    BadEscape(usize),
    /// The decoded bytes are not UTF-8.
    #[error("not UTF-8 once percent-decoded")]
    NotUtf8,
}

/// Percent-decodes `text` (RFC 3986: `+` stays a plus, as in paths).
///
/// # Errors
///
/// [`PercentError`] for a malformed escape or bytes that are not UTF-8.
pub fn percent_decode(text: &str) -> Result<String, PercentError> {
    let bytes = text.as_bytes();
    for (index, _) in text.match_indices('%') {
        let escape = bytes.get(index + 1..index + 3);
        if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
            return Err(PercentError::BadEscape(index));
        }
    }
    percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| PercentError::NotUtf8)
}

/// Decodes one form-encoded component: `+` is a space, then percent-decoding.
///
/// # Errors
///
/// [`PercentError`], as [`percent_decode`].
pub fn form_decode(text: &str) -> Result<String, PercentError> {
    if text.contains('+') {
        percent_decode(&text.replace('+', " "))
    } else {
        percent_decode(text)
    }
}

/// The `(name, value)` pairs of a query string, decoded; empty pairs (`a=1&&b=2`) are
/// skipped, a pair without `=` has an empty value. The name is returned still encoded when
/// it does not decode, so the caller can say which parameter was malformed.
pub fn form_pairs(
    query: &str,
) -> impl Iterator<Item = (String, Result<String, PercentError>)> + '_ {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = form_decode(name).unwrap_or_else(|_| name.to_owned());
            (name, form_decode(value))
        })
}

/// The decoded values of parameter `name` in `query`, in order.
pub fn form_values<'a>(
    query: Option<&'a str>,
    name: &'a str,
) -> impl Iterator<Item = Result<String, PercentError>> + 'a {
    form_pairs(query.unwrap_or(""))
        .filter(move |(key, _)| key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_and_plus_is_kept_in_paths() {
        assert_eq!(percent_decode("a%2Fb"), Ok("a/b".into()));
        assert_eq!(percent_decode("%22;drop"), Ok("\";drop".into()));
        assert_eq!(percent_decode("%2e%2E"), Ok("..".into()));
        assert_eq!(percent_decode("a+b"), Ok("a+b".into()));
        assert_eq!(percent_decode("caf%C3%A9"), Ok("café".into()));
    }

    #[test]
    fn malformed_input_is_an_error_everywhere() {
        for (text, error) in [
            ("%", PercentError::BadEscape(0)),
            ("a%2", PercentError::BadEscape(1)),
            ("%ZZ", PercentError::BadEscape(0)),
            ("ok%2Fthen%G1", PercentError::BadEscape(9)),
            ("%FF", PercentError::NotUtf8),
            ("%C3", PercentError::NotUtf8),
        ] {
            assert_eq!(percent_decode(text), Err(error.clone()), "{text}");
            assert_eq!(form_decode(text), Err(error), "{text}");
        }
    }

    #[test]
    fn query_strings_split_into_decoded_pairs() {
        let pairs: Vec<_> = form_pairs("stream=a%3Ab&&x&since=1;a,2,3&q=a+b%2Bc").collect();
        assert_eq!(
            pairs,
            vec![
                ("stream".into(), Ok("a:b".into())),
                ("x".into(), Ok(String::new())),
                ("since".into(), Ok("1;a,2,3".into())),
                ("q".into(), Ok("a b+c".into())),
            ]
        );
        let values: Vec<_> = form_values(Some("s=1&t=2&s=%ZZ"), "s").collect();
        assert_eq!(
            values,
            vec![Ok("1".into()), Err(PercentError::BadEscape(0))]
        );
        assert_eq!(form_values(None, "s").count(), 0);
    }
}
