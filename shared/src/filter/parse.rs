//! Parsing a filter from JSON, with its bounds: every refusal names the place in the filter
//! and what is wrong, so the `bad_filter` error tells the developer what to fix.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{
    Cmp, Filter, FilterError, Node, Scalar, MAX_FIELD_LEN, MAX_FILTER_BYTES, MAX_FILTER_DEPTH,
    MAX_FILTER_TERMS,
};

impl Filter {
    /// Parses a filter from its JSON text (a query parameter, a grant).
    ///
    /// # Errors
    ///
    /// [`FilterError`] if the text is longer than [`MAX_FILTER_BYTES`], is not JSON, or is not
    /// a filter (see [`Filter::parse`]).
    pub fn parse_str(text: &str) -> Result<Filter, FilterError> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(error(
                "where",
                format!("longer than {MAX_FILTER_BYTES} bytes"),
            ));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|parse| error("where", format!("not JSON: {parse}")))?;
        Filter::parse(&value)
    }

    /// Parses a filter from a JSON value that may be large: refuses one whose JSON text is
    /// longer than [`MAX_FILTER_BYTES`] (the relay's rule for a `where` in a message), then
    /// parses it.
    ///
    /// # Errors
    ///
    /// [`FilterError`] as [`Filter::parse`], or for the length.
    pub fn parse_bounded(value: &Value) -> Result<Filter, FilterError> {
        let size = serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_FILTER_BYTES {
            return Err(error(
                "where",
                format!("longer than {MAX_FILTER_BYTES} bytes"),
            ));
        }
        Filter::parse(value)
    }

    /// Parses a filter from JSON.
    ///
    /// # Errors
    ///
    /// [`FilterError`] if it is not an object of the filter language, nests deeper than
    /// [`MAX_FILTER_DEPTH`], has more than [`MAX_FILTER_TERMS`] terms, or names a field that is
    /// empty or longer than [`MAX_FIELD_LEN`] bytes.
    pub fn parse(value: &Value) -> Result<Filter, FilterError> {
        let mut parser = Parser { terms: 0 };
        let root = parser.object(value, "where", 1)?;
        Ok(Filter { root })
    }
}

fn error(path: &str, reason: impl Into<String>) -> FilterError {
    FilterError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

struct Parser {
    terms: usize,
}

impl Parser {
    fn count(&mut self, path: &str) -> Result<(), FilterError> {
        self.terms += 1;
        if self.terms > MAX_FILTER_TERMS {
            return Err(error(path, format!("more than {MAX_FILTER_TERMS} terms")));
        }
        Ok(())
    }

    /// A filter object: each key a combinator or a field, all of which must hold.
    fn object(&mut self, value: &Value, path: &str, depth: usize) -> Result<Node, FilterError> {
        if depth > MAX_FILTER_DEPTH {
            return Err(error(
                path,
                format!("nested deeper than {MAX_FILTER_DEPTH}"),
            ));
        }
        let Value::Object(entries) = value else {
            return Err(error(path, "expected an object"));
        };
        let mut nodes = Vec::with_capacity(entries.len());
        for (key, inner) in entries {
            let here = format!("{path}.{key}");
            nodes.push(match key.as_str() {
                "and" | "or" => {
                    let Value::Array(items) = inner else {
                        return Err(error(&here, "expected an array of filters"));
                    };
                    self.count(&here)?;
                    let children = items
                        .iter()
                        .enumerate()
                        .map(|(index, item)| {
                            self.object(item, &format!("{here}[{index}]"), depth + 1)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if key == "and" {
                        Node::All(children)
                    } else {
                        Node::Any(children)
                    }
                }
                "not" => {
                    self.count(&here)?;
                    Node::Not(Box::new(self.object(inner, &here, depth + 1)?))
                }
                field => self.field(field, inner, &here, depth + 1)?,
            });
        }
        Ok(match nodes.len() {
            1 => nodes.pop().unwrap_or(Node::All(Vec::new())),
            _ => Node::All(nodes),
        })
    }

    /// The condition on one field: a scalar (equality) or an object of operators.
    fn field(
        &mut self,
        name: &str,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Node, FilterError> {
        if name.is_empty() || name.len() > MAX_FIELD_LEN || name.contains('\0') {
            return Err(error(
                path,
                format!("a field name is 1 to {MAX_FIELD_LEN} bytes without NUL"),
            ));
        }
        if depth > MAX_FILTER_DEPTH {
            return Err(error(
                path,
                format!("nested deeper than {MAX_FILTER_DEPTH}"),
            ));
        }
        let field: Arc<str> = Arc::from(name);
        match value {
            Value::Object(operators) => self.operators(&field, operators, path),
            Value::Null => Err(error(path, "compare with null through {\"null\": true}")),
            Value::Array(_) => Err(error(
                path,
                "an array is not a value: use {\"in\": [...]} for one of several values",
            )),
            scalar => {
                self.count(path)?;
                Ok(Node::Compare {
                    field,
                    op: Cmp::Eq,
                    value: scalar_at(scalar, path)?,
                })
            }
        }
    }

    fn operators(
        &mut self,
        field: &Arc<str>,
        operators: &Map<String, Value>,
        path: &str,
    ) -> Result<Node, FilterError> {
        if operators.is_empty() {
            return Err(error(
                path,
                "no operator: expected one of eq ne lt le gt ge in null",
            ));
        }
        let mut nodes = Vec::with_capacity(operators.len());
        for (name, operand) in operators {
            let here = format!("{path}.{name}");
            self.count(&here)?;
            let node = if let Some(op) = Cmp::ALL.into_iter().find(|op| op.as_str() == name) {
                Node::Compare {
                    field: Arc::clone(field),
                    op,
                    value: scalar_at(operand, &here)?,
                }
            } else if name == "in" {
                let Value::Array(items) = operand else {
                    return Err(error(&here, "expected an array of values"));
                };
                let mut values = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    let at = format!("{here}[{index}]");
                    self.count(&at)?;
                    values.push(scalar_at(item, &at)?);
                }
                Node::In {
                    field: Arc::clone(field),
                    values,
                }
            } else if name == "null" {
                let Value::Bool(is_null) = operand else {
                    return Err(error(&here, "expected true or false"));
                };
                Node::Null {
                    field: Arc::clone(field),
                    is_null: *is_null,
                }
            } else {
                return Err(error(
                    &here,
                    format!("unknown operator {name:?}: expected one of eq ne lt le gt ge in null"),
                ));
            };
            nodes.push(node);
        }
        Ok(match nodes.len() {
            1 => nodes.pop().unwrap_or(Node::All(Vec::new())),
            _ => Node::All(nodes),
        })
    }
}

fn scalar_at(value: &Value, path: &str) -> Result<Scalar, FilterError> {
    Scalar::from_json(value).ok_or_else(|| {
        error(
            path,
            "expected a string, number or boolean (use {\"null\": true} for null)",
        )
    })
}
