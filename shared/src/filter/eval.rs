//! Evaluating a filter against a record's value: the one implementation of the semantics the
//! protocol documents, run by the relay and by the browser.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::{Cmp, Filter, Node};
use crate::json::{scan, Json};

impl Filter {
    /// True if the record's value matches. A value that is not an object has no fields: every
    /// field reads as missing.
    pub fn matches(&self, record: &Value) -> bool {
        self.root.matches(record)
    }

    /// [`Filter::matches`] for a value kept as its text (the clients' records). Only the
    /// top-level fields the filter names are read into trees; the rest of the record is not
    /// parsed. A value that is not an object has no fields, as in [`Filter::matches`].
    pub fn matches_json(&self, record: &Json) -> bool {
        let mut named = Map::new();
        if record.is_object() {
            for (name, text) in scan::object(record.as_str()).unwrap_or_default() {
                if self.root.names(&name) {
                    let value = serde_json::from_str(text).unwrap_or(Value::Null);
                    named.insert(name.into_owned(), value);
                }
            }
        }
        self.root.matches(&Value::Object(named))
    }
}

impl Node {
    /// Whether the filter reads the top-level field `name`.
    fn names(&self, name: &str) -> bool {
        match self {
            Node::All(children) | Node::Any(children) => {
                children.iter().any(|child| child.names(name))
            }
            Node::Not(child) => child.names(name),
            Node::Compare { field, .. } | Node::In { field, .. } | Node::Null { field, .. } => {
                &**field == name
            }
        }
    }

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
