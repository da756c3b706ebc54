//! Claim-bound grants: `{sub}` or `{claims.boards}` placeholders in a token's stream patterns
//! and filters, filled from the token's own (verified) claims.
//!
//! A rule whose placeholder cannot be filled safely grants nothing: a missing or null claim,
//! an object, or (in a stream pattern) a value that is not 1 to 60 bytes of
//! `[A-Za-z0-9_.-]` (so `*`, `/`, `:`, quotes or braces in a claim can never widen or shift a
//! pattern). An array claim grants one rule per element in a pattern, and becomes `in` in a
//! filter. In a filter, a string that is exactly one placeholder takes the claim's JSON value;
//! values are substituted in the parsed JSON, never spliced into text that is parsed again.

use serde_json::{Map, Value};

/// Longest list of patterns one templated rule may expand to.
pub const MAX_EXPANSION: usize = 256;

/// Why a templated rule grants nothing (logged, never sent to the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfilled {
    /// The claim is absent or null.
    #[error("claim {0:?} is missing")]
    Missing(String),
    /// The claim's value cannot be used there.
    #[error("claim {0:?} has a value that cannot be used in a grant")]
    Unusable(String),
    /// The expansion would be too large.
    #[error("claim {0:?} expands to more than {MAX_EXPANSION} rules")]
    TooMany(String),
}

/// A malformed template: the token is refused (an issuer bug, not a user's data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad placeholder in {0:?}: expected {{name}} or {{claims.name}} with a name of [A-Za-z0-9_.]"
)]
pub struct BadTemplate(pub String);

/// One piece of a template.
enum Piece<'a> {
    Text(&'a str),
    Claim(&'a str),
}

/// Splits `template` into text and placeholders.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, BadTemplate> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        let bad = || BadTemplate(template.to_owned());
        if rest.as_bytes().get(open) == Some(&b'}') {
            return Err(bad());
        }
        let close = rest[open..].find('}').ok_or_else(bad)? + open;
        let name = &rest[open + 1..close];
        let name = name.strip_prefix("claims.").unwrap_or(name);
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.');
        if !valid {
            return Err(bad());
        }
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        pieces.push(Piece::Claim(name));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// Whether `text` has a placeholder (or a stray brace, which [`pattern`] will refuse).
pub fn is_template(text: &str) -> bool {
    text.contains(['{', '}'])
}

/// The claim at a dotted path (`org.id`), if present and not null.
fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    (!value.is_null()).then_some(value)
}

/// A scalar claim as text for a stream name: 1 to 60 bytes of `[A-Za-z0-9_.-]`.
fn name_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        _ => return None,
    };
    let safe = !text.is_empty()
        && text.len() <= 60
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));
    safe.then_some(text)
}

/// Fills a stream pattern's placeholders: one pattern per combination of array elements.
/// Elements that are unusable are left out; if nothing is left, the rule grants nothing.
///
/// # Errors
///
/// `Ok(Err(Unfilled))` when the rule grants nothing; `Err(BadTemplate)` when the template is
/// malformed.
pub fn pattern(
    template: &str,
    claims: &Map<String, Value>,
) -> Result<Result<Vec<String>, Unfilled>, BadTemplate> {
    let pieces = pieces(template)?;
    let mut patterns = vec![String::new()];
    for piece in pieces {
        match piece {
            Piece::Text(text) => patterns
                .iter_mut()
                .for_each(|pattern| pattern.push_str(text)),
            Piece::Claim(name) => {
                let Some(value) = lookup(claims, name) else {
                    return Ok(Err(Unfilled::Missing(name.to_owned())));
                };
                let texts: Vec<String> = match value {
                    Value::Array(items) => items.iter().filter_map(name_text).collect(),
                    scalar => name_text(scalar).into_iter().collect(),
                };
                if texts.is_empty() {
                    return Ok(Err(Unfilled::Unusable(name.to_owned())));
                }
                if patterns.len().saturating_mul(texts.len()) > MAX_EXPANSION {
                    return Ok(Err(Unfilled::TooMany(name.to_owned())));
                }
                patterns = patterns
                    .iter()
                    .flat_map(|pattern| texts.iter().map(move |text| format!("{pattern}{text}")))
                    .collect();
            }
        }
    }
    Ok(Ok(patterns))
}

/// Fills the placeholders in a filter's JSON (see the [module docs](self)).
///
/// # Errors
///
/// `Ok(Err(Unfilled))` when the rule grants nothing; `Err(BadTemplate)` when a string has a
/// malformed placeholder.
pub fn filter(
    template: &Value,
    claims: &Map<String, Value>,
) -> Result<Result<Value, Unfilled>, BadTemplate> {
    let mut failure = None;
    let filled = fill(template, claims, &mut failure)?;
    Ok(match failure {
        Some(unfilled) => Err(unfilled),
        None => Ok(filled),
    })
}

fn fill(
    value: &Value,
    claims: &Map<String, Value>,
    failure: &mut Option<Unfilled>,
) -> Result<Value, BadTemplate> {
    Ok(match value {
        Value::String(text) if is_template(text) => fill_string(text, claims, failure)?,
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                // An array claim inside a list (`in`) adds its elements.
                match fill(item, claims, failure)? {
                    Value::Array(inner) if is_whole_placeholder(item) => out.extend(inner),
                    filled => out.push(filled),
                }
            }
            Value::Array(out)
        }
        Value::Object(entries) => {
            let mut out = Map::with_capacity(entries.len());
            for (key, inner) in entries {
                let filled = match fill(inner, claims, failure)? {
                    // `{"owner": "{claims.team}"}` with an array claim: one of them.
                    Value::Array(values) if is_whole_placeholder(inner) => {
                        let mut any = Map::new();
                        any.insert("in".into(), Value::Array(values));
                        Value::Object(any)
                    }
                    filled => filled,
                };
                out.insert(key.clone(), filled);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn is_whole_placeholder(value: &Value) -> bool {
    value
        .as_str()
        .and_then(|text| pieces(text).ok())
        .is_some_and(|pieces| matches!(pieces.as_slice(), [Piece::Claim(_)]))
}

fn fill_string(
    text: &str,
    claims: &Map<String, Value>,
    failure: &mut Option<Unfilled>,
) -> Result<Value, BadTemplate> {
    let pieces = pieces(text)?;
    if let [Piece::Claim(name)] = pieces.as_slice() {
        return Ok(match lookup(claims, name) {
            Some(value @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => value.clone(),
            Some(Value::Array(items))
                if items.iter().all(|item| {
                    matches!(item, Value::String(_) | Value::Number(_) | Value::Bool(_))
                }) =>
            {
                Value::Array(items.clone())
            }
            Some(_) => {
                failure.get_or_insert(Unfilled::Unusable((*name).to_owned()));
                Value::Null
            }
            None => {
                failure.get_or_insert(Unfilled::Missing((*name).to_owned()));
                Value::Null
            }
        });
    }
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(part) => out.push_str(part),
            Piece::Claim(name) => match lookup(claims, name) {
                Some(Value::String(claim)) => out.push_str(claim),
                Some(value @ (Value::Number(_) | Value::Bool(_))) => {
                    out.push_str(&value.to_string())
                }
                Some(_) => {
                    failure.get_or_insert(Unfilled::Unusable(name.to_owned()));
                }
                None => {
                    failure.get_or_insert(Unfilled::Missing(name.to_owned()));
                }
            },
        }
    }
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests;
