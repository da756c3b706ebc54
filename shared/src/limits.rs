//! Bounds applied before any untrusted JSON is parsed: total size and nesting depth.

use crate::error::DecodeError;

/// Limits for decoding untrusted input.
///
/// Both limits are checked by a single linear scan *before* the JSON parser runs, so a hostile
/// peer cannot make the decoder allocate or recurse without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted message in bytes. Default: 1 MiB.
    pub max_bytes: usize,
    /// Deepest accepted nesting of arrays and objects. Default: 32.
    pub max_depth: usize,
}

impl DecodeLimits {
    /// Default size limit: 1 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
    /// Default depth limit: 32 levels.
    pub const DEFAULT_MAX_DEPTH: usize = 32;
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_depth: Self::DEFAULT_MAX_DEPTH,
        }
    }
}

/// Checks `input` against `limits` without parsing it.
///
/// # Errors
///
/// [`DecodeError::TooLarge`] or [`DecodeError::TooDeep`].
///
/// # Examples
///
/// ```
/// use tidewire_shared::limits::{check, DecodeLimits};
/// let limits = DecodeLimits { max_bytes: 100, max_depth: 2 };
/// assert!(check(br#"{"a":[1]}"#, &limits).is_ok());
/// assert!(check(br#"{"a":[[1]]}"#, &limits).is_err());
/// ```
pub fn check(input: &[u8], limits: &DecodeLimits) -> Result<(), DecodeError> {
    if input.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: input.len(),
            limit: limits.max_bytes,
        });
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in input {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(DecodeError::TooDeep {
                        limit: limits.max_depth,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Checks the limits, then parses `input` as `T` with `serde_json`.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    input: &[u8],
    limits: &DecodeLimits,
) -> Result<T, DecodeError> {
    check(input, limits)?;
    serde_json::from_slice(input).map_err(|error| DecodeError::from_json(&error))
}

/// Like [`parse`] for a message tagged by the field `tag`: if parsing fails and the tag names
/// none of `known`, the error is [`DecodeError::UnknownType`] rather than
/// [`DecodeError::Malformed`].
pub(crate) fn parse_tagged<T: serde::de::DeserializeOwned>(
    input: &[u8],
    limits: &DecodeLimits,
    tag: &str,
    known: &[&str],
) -> Result<T, DecodeError> {
    let error = match parse(input, limits) {
        Ok(value) => return Ok(value),
        Err(error @ DecodeError::Malformed(_)) => error,
        Err(other) => return Err(other),
    };
    // Only on the error path: look at the tag alone to tell "unknown type" apart.
    let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(input) {
        Ok(object) => object,
        Err(_) => return Err(error),
    };
    match object.get(tag).and_then(serde_json::Value::as_str) {
        Some(name) if !known.contains(&name) => {
            Err(DecodeError::UnknownType(name.chars().take(64).collect()))
        }
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let limits = DecodeLimits {
            max_bytes: 1000,
            max_depth: 1,
        };
        assert!(check(br#"{"a":"[[[[{{{{\"[["}"#, &limits).is_ok());
        assert_eq!(
            check(br#"{"a":{"b":1}}"#, &limits),
            Err(DecodeError::TooDeep { limit: 1 })
        );
    }

    #[test]
    fn size_is_checked_first() {
        let limits = DecodeLimits {
            max_bytes: 3,
            max_depth: 10,
        };
        assert_eq!(
            check(b"[1,2]", &limits),
            Err(DecodeError::TooLarge { size: 5, limit: 3 })
        );
    }
}
