//! The filter language of views: which records of a durable stream a subscriber gets.
//!
//! A filter is JSON over the top-level fields of a record's value, parsed once by
//! [`Filter::parse`] (bounded in size and depth) and evaluated by [`Filter::matches`]. The
//! relay evaluates it for subscriptions and grants; the browser evaluates the same code for
//! local and optimistic state. The grammar and the exact semantics are in `docs/PROTOCOL.md`
//! ("Filters"):
//!
//! | form | meaning |
//! |---|---|
//! | `{"owner": "u1"}` | equality with a string, number or boolean |
//! | `{"prio": {"gt": 2}}` | `eq ne lt le gt ge` (several in one object: all must hold) |
//! | `{"status": {"in": ["open", "doing"]}}` | equal to one of the values |
//! | `{"due": {"null": true}}` | the field is missing or null (`false`: present, not null) |
//! | `{"and": [..]}`, `{"or": [..]}`, `{"not": {..}}` | combinations |
//! | `{"a": 1, "b": 2}` | several keys in one object: all must hold; `{}` matches everything |

mod eval;
mod parse;
mod scalar;

use std::sync::Arc;

pub use self::scalar::Scalar;

/// The most bytes a filter's JSON may have (in a subscribe message, a query string or a grant).
pub const MAX_FILTER_BYTES: usize = 4096;
/// The deepest nesting of `and` / `or` / `not` / field objects a filter may have.
pub const MAX_FILTER_DEPTH: usize = 8;
/// The most terms (comparisons, `in` values, combinators) a filter may have.
pub const MAX_FILTER_TERMS: usize = 256;
/// The longest field name, in bytes.
pub const MAX_FIELD_LEN: usize = 128;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmp {
    /// Equal (same type and value; numbers compare as numbers).
    Eq,
    /// Not equal: true when the field is missing, null, of another type or another value.
    Ne,
    /// Less than (numbers with numbers, strings with strings; otherwise false).
    Lt,
    /// Less than or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
}

impl Cmp {
    /// The operator's name in the filter language.
    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::Eq => "eq",
            Cmp::Ne => "ne",
            Cmp::Lt => "lt",
            Cmp::Le => "le",
            Cmp::Gt => "gt",
            Cmp::Ge => "ge",
        }
    }

    const ALL: [Cmp; 6] = [Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge];
}

/// One node of a parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Every child holds (`and`, or several keys in one object). Empty: always true.
    All(Vec<Node>),
    /// At least one child holds (`or`). Empty: always false.
    Any(Vec<Node>),
    /// The child does not hold.
    Not(Box<Node>),
    /// `field <op> value`.
    Compare {
        /// The top-level field.
        field: Arc<str>,
        /// The operator.
        op: Cmp,
        /// The value compared with.
        value: Scalar,
    },
    /// The field equals one of the values.
    In {
        /// The top-level field.
        field: Arc<str>,
        /// The values.
        values: Vec<Scalar>,
    },
    /// The field is missing or null (`is_null: true`), or present and not null (`false`).
    Null {
        /// The top-level field.
        field: Arc<str>,
        /// Which of the two.
        is_null: bool,
    },
}

/// A parsed, bounded filter. Cheap to evaluate; share it as `Arc<Filter>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    root: Node,
}

/// Why a filter was refused: where in it, and what is wrong. Sent as a `bad_filter` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad filter at {path}: {reason}")]
pub struct FilterError {
    /// Where: `where`, `where.prio.gt`, `where.or[2]`, ...
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl Filter {
    /// The filter that matches every record (`{}`).
    pub fn everything() -> Self {
        Self {
            root: Node::All(Vec::new()),
        }
    }

    /// Both filters must hold: how a grant's filter narrows the one a client asks for. The
    /// result is never wider than either side.
    pub fn and(self, other: Filter) -> Filter {
        let mut children = Vec::with_capacity(2);
        for node in [self.root, other.root] {
            match node {
                Node::All(inner) => children.extend(inner),
                node => children.push(node),
            }
        }
        Filter {
            root: Node::All(children),
        }
    }

    /// At least one of the filters must hold: the union of several grants on one stream.
    /// `None` for an empty list (which would match nothing).
    pub fn any(filters: Vec<Filter>) -> Option<Filter> {
        let mut filters = filters;
        match filters.len() {
            0 => None,
            1 => filters.pop(),
            _ => Some(Filter {
                root: Node::Any(filters.into_iter().map(|filter| filter.root).collect()),
            }),
        }
    }

    /// The root node.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// True if the filter matches every record (`{}` or an empty `and`).
    pub fn is_everything(&self) -> bool {
        matches!(&self.root, Node::All(children) if children.is_empty())
    }

    /// An equality the filter requires, for indexing: a field and the values it must equal
    /// (one for `eq`, several for `in`), when the root is such a term or an `and` holding one.
    /// A record the filter matches always has one of these values in that field.
    pub fn index_terms(&self) -> Option<(&Arc<str>, &[Scalar])> {
        fn term(node: &Node) -> Option<(&Arc<str>, &[Scalar])> {
            match node {
                Node::Compare {
                    field,
                    op: Cmp::Eq,
                    value,
                } => Some((field, std::slice::from_ref(value))),
                Node::In { field, values } => Some((field, values)),
                _ => None,
            }
        }
        match &self.root {
            Node::All(children) => children.iter().find_map(term),
            node => term(node),
        }
    }
}

#[cfg(test)]
mod tests;
