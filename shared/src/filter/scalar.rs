//! The values a filter compares with: strings, numbers and booleans, hashable for the relay's
//! equality index.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use serde_json::Value;

/// A string, number or boolean from a filter or a record field.
///
/// Numbers are compared as `f64` (JSON has one number type): `1` equals `1.0`, and integers
/// beyond 2^53 compare by their nearest `f64`. Equality and hashing agree, so a record field
/// finds the filters that require its value in a hash map.
#[derive(Debug, Clone)]
pub enum Scalar {
    /// A string.
    Str(Box<str>),
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// The scalar a JSON value holds, or `None` for null, arrays and objects.
    pub fn from_json(value: &Value) -> Option<Scalar> {
        match value {
            Value::String(text) => Some(Scalar::Str(text.as_str().into())),
            Value::Number(number) => number.as_f64().map(Scalar::Num),
            Value::Bool(flag) => Some(Scalar::Bool(*flag)),
            Value::Null | Value::Array(_) | Value::Object(_) => None,
        }
    }

    /// True if `value` is this scalar (same type, same value).
    pub fn equals(&self, value: &Value) -> bool {
        self.compare(value) == Some(Ordering::Equal)
    }

    /// How `value` orders against this scalar, or `None` if they are not comparable (another
    /// type, null, an array or an object).
    pub fn compare(&self, value: &Value) -> Option<Ordering> {
        match (self, value) {
            (Scalar::Str(mine), Value::String(theirs)) => Some(theirs.as_str().cmp(mine)),
            (Scalar::Num(mine), Value::Number(theirs)) => theirs.as_f64()?.partial_cmp(mine),
            (Scalar::Bool(mine), Value::Bool(theirs)) => Some(theirs.cmp(mine)),
            _ => None,
        }
    }

    /// The scalar as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Scalar::Str(text) => Value::String(text.to_string()),
            Scalar::Num(number) => serde_json::Number::from_f64(*number)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Scalar::Bool(flag) => Value::Bool(*flag),
        }
    }

    /// `-0.0` hashes and compares as `0.0`.
    fn number_bits(number: f64) -> u64 {
        if number == 0.0 {
            0
        } else {
            number.to_bits()
        }
    }
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Scalar::Str(a), Scalar::Str(b)) => a == b,
            (Scalar::Num(a), Scalar::Num(b)) => Self::number_bits(*a) == Self::number_bits(*b),
            (Scalar::Bool(a), Scalar::Bool(b)) => a == b,
            _ => false,
        }
    }
}

// JSON numbers are finite, so no NaN ever reaches a Scalar: equality is total.
impl Eq for Scalar {}

impl Hash for Scalar {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Scalar::Str(text) => {
                state.write_u8(0);
                text.hash(state);
            }
            Scalar::Num(number) => {
                state.write_u8(1);
                Self::number_bits(*number).hash(state);
            }
            Scalar::Bool(flag) => {
                state.write_u8(2);
                flag.hash(state);
            }
        }
    }
}
