//! Evaluating a filter against a record's value: the one implementation of the semantics the
//! protocol documents, run by the relay and by the browser.

use std::cmp::Ordering;

use serde_json::Value;

use super::{Cmp, Filter, Node};
use crate::json::Json;

impl Filter {
    /// True if the record's value matches. A value that is not an object has no fields: every
    /// field reads as missing.
    pub fn matches(&self, record: &Value) -> bool {
        self.root.matches(record)
    }

    /// [`Filter::matches`] for a value kept as its text (the clients' records).
    pub fn matches_json(&self, record: &Json) -> bool {
        self.root.matches(&record.to_value())
    }
}

impl Node {
    fn matches(&self, record: &Value) -> bool {
        match self {
            Node::All(children) => children.iter().all(|child| child.matches(record)),
            Node::Any(children) => children.iter().any(|child| child.matches(record)),
            Node::Not(child) => !child.matches(record),
            Node::Compare { field, op, value } => {
                let ordering = record.get(&**field).and_then(|found| value.compare(found));
                match op {
                    Cmp::Eq => ordering == Some(Ordering::Equal),
                    Cmp::Ne => ordering != Some(Ordering::Equal),
                    Cmp::Lt => ordering == Some(Ordering::Less),
                    Cmp::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
                    Cmp::Gt => ordering == Some(Ordering::Greater),
                    Cmp::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
                }
            }
            Node::In { field, values } => record
                .get(&**field)
                .is_some_and(|found| values.iter().any(|value| value.equals(found))),
            Node::Null { field, is_null } => {
                let null = record.get(&**field).is_none_or(Value::is_null);
                null == *is_null
            }
        }
    }
}
