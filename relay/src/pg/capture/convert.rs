//! Row images to the JSON a trigger would publish, exactly what `to_jsonb(NEW)` and
//! `tidewire.track_project` give in trigger mode.
//!
//! A relation whose columns are all of a few plain types (integers, floats, numeric, boolean,
//! text, uuid, jsonb) is converted here: their `to_jsonb` form follows from the text the WAL
//! carries. Any other relation goes to PostgreSQL, which casts each text value back to its
//! column type and runs `to_jsonb` on the row, so every type (arrays, domains, enums,
//! timestamps ...) comes out as the trigger's: one prepared statement per relation, one round
//! trip per chunk and relation. The fast path saves that round trip, measured in
//! docs/BENCHMARKS.md, section 2c.

use std::collections::HashMap;

use tokio_postgres::{Client, Statement};

use super::pgoutput::Relation;
use super::route::Definition;

/// The conversion statement of every relation seen on this replication session.
#[derive(Debug, Default)]
pub(crate) struct Converter {
    statements: HashMap<u32, Statement>,
    /// Relations converted here: each column's name, name as a JSON string, and kind.
    plain: HashMap<u32, Vec<(String, String, Kind)>>,
}

/// How a plain column's text becomes its `to_jsonb` form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Integers: the text is the JSON number.
    Integer,
    /// float4, float8, numeric: a JSON number, or the string for NaN and infinities.
    Number,
    /// `t` or `f`.
    Boolean,
    /// text, varchar, char(n), name, uuid: a JSON string.
    Text,
    /// jsonb: its text is canonical JSON.
    Jsonb,
}

impl Kind {
    fn of(type_oid: u32) -> Option<Self> {
        match type_oid {
            20 | 21 | 23 => Some(Self::Integer),
            700 | 701 | 1700 => Some(Self::Number),
            16 => Some(Self::Boolean),
            19 | 25 | 1042 | 1043 | 2950 => Some(Self::Text),
            3802 => Some(Self::Jsonb),
            _ => None,
        }
    }

    fn push(self, text: &str, out: &mut String) {
        match self {
            Self::Integer | Self::Jsonb => out.push_str(text),
            Self::Number => match text {
                "NaN" | "Infinity" | "-Infinity" => push_string(text, out),
                _ => out.push_str(text),
            },
            Self::Boolean => out.push_str(if text == "t" { "true" } else { "false" }),
            Self::Text => push_string(text, out),
        }
    }
}

fn push_string(text: &str, out: &mut String) {
    // Serializing a `&str` cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

impl Converter {
    /// Prepares the statement of `relation` (again, when its description changed).
    pub(crate) async fn prepare(
        &mut self,
        client: &Client,
        relation: &Relation,
    ) -> Result<(), tokio_postgres::Error> {
        let plain: Option<Vec<(String, String, Kind)>> = relation
            .columns
            .iter()
            .map(|column| {
                Kind::of(column.type_oid).map(|kind| {
                    let mut json = String::new();
                    push_string(&column.name, &mut json);
                    (column.name.clone(), json, kind)
                })
            })
            .collect();
        if let Some(plain) = plain {
            self.statements.remove(&relation.id);
            self.plain.insert(relation.id, plain);
            return Ok(());
        }
        self.plain.remove(&relation.id);
        let oids: Vec<u32> = relation.columns.iter().map(|c| c.type_oid).collect();
        let mods: Vec<i32> = relation.columns.iter().map(|c| c.type_modifier).collect();
        let rows = client
            .query(
                "select format_type(u.oid, nullif(u.mod, -1)) \
                   from unnest($1::oid[], $2::int4[]) with ordinality as u(oid, mod, n) \
                  order by u.n",
                &[&oids, &mods],
            )
            .await?;
        let mut columns = String::new();
        for (index, (row, column)) in rows.iter().zip(&relation.columns).enumerate() {
            let type_name: String = row.try_get(0)?;
            if index > 0 {
                columns.push_str(", ");
            }
            columns.push_str(&format!(
                "(a.v->>{index})::{type_name} as {}",
                quote_ident(&column.name)
            ));
        }
        let sql = format!(
            "select tidewire.track_project(to_jsonb(t), $2, $3)::text \
               from jsonb_array_elements($1::text::jsonb) with ordinality as a(v, i) \
              cross join lateral (select {columns}) as t \
              order by a.i"
        );
        let statement = client.prepare(&sql).await?;
        self.statements.insert(relation.id, statement);
        Ok(())
    }

    /// The published JSON (as text) of each image of `relation`, in order.
    pub(crate) async fn convert(
        &self,
        client: &Client,
        relation: u32,
        definition: &Definition,
        images: &[Vec<Option<String>>],
    ) -> Result<Vec<String>, ConvertError> {
        if let Some(columns) = self.plain.get(&relation) {
            return Ok(images
                .iter()
                .map(|image| plain_json(columns, definition, image))
                .collect());
        }
        let statement = self
            .statements
            .get(&relation)
            .ok_or(ConvertError::UnknownRelation(relation))?;
        let input = serde_json::to_string(images).map_err(ConvertError::Json)?;
        let rows = client
            .query(statement, &[&input, &definition.mode, &definition.list])
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(row.try_get::<_, String>(0)?);
        }
        if out.len() != images.len() {
            return Err(ConvertError::Count {
                sent: images.len(),
                got: out.len(),
            });
        }
        Ok(out)
    }
}

/// Why images could not be converted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConvertError {
    /// A change named a relation no Relation message described.
    #[error("change of relation {0} before its description")]
    UnknownRelation(u32),
    /// The images could not be encoded.
    #[error("encoding images: {0}")]
    Json(#[source] serde_json::Error),
    /// PostgreSQL refused the conversion.
    #[error("converting images: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// A row went missing.
    #[error("sent {sent} images, got {got} back")]
    Count { sent: usize, got: usize },
}

impl From<ConvertError> for super::CaptureError {
    fn from(error: ConvertError) -> Self {
        match error {
            ConvertError::Db(error) => Self::Db(error),
            other => Self::Convert(other.to_string()),
        }
    }
}

/// The published JSON of a row of plain columns: `to_jsonb` of the row, projected as
/// `tidewire.track_project` does (only `columns`, or all but `exclude`).
fn plain_json(
    columns: &[(String, String, Kind)],
    definition: &Definition,
    image: &[Option<String>],
) -> String {
    let mut out = String::with_capacity(64);
    out.push('{');
    let mut first = true;
    for ((name, json, kind), value) in columns.iter().zip(image) {
        let listed = || definition.list.iter().any(|listed| listed == name);
        match definition.mode.as_deref() {
            Some("columns") if !listed() => continue,
            Some("exclude") if listed() => continue,
            _ => {}
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(json);
        out.push(':');
        match value {
            Some(text) => kind.push(text, &mut out),
            None => out.push_str("null"),
        }
    }
    out.push('}');
    out
}

/// `name` as an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<(String, String, Kind)> {
        [
            ("id", Kind::Integer),
            ("x", Kind::Number),
            ("ok", Kind::Boolean),
            ("say \"hi\"", Kind::Text),
            ("doc", Kind::Jsonb),
        ]
        .into_iter()
        .map(|(name, kind)| {
            let mut json = String::new();
            push_string(name, &mut json);
            (name.to_owned(), json, kind)
        })
        .collect()
    }

    fn image(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_owned)).collect()
    }

    #[test]
    fn plain_columns_give_what_to_jsonb_gives() {
        let definition = Definition {
            parts: vec!["s".into()],
            key_column: "id".into(),
            mode: None,
            list: vec![],
        };
        let row = image(&[
            Some("7"),
            Some("NaN"),
            Some("t"),
            Some("a\"b\n"),
            Some("{\"k\": [1]}"),
        ]);
        assert_eq!(
            plain_json(&columns(), &definition, &row),
            r#"{"id":7,"x":"NaN","ok":true,"say \"hi\"":"a\"b\n","doc":{"k": [1]}}"#
        );
        let row = image(&[Some("7"), Some("-1.5e+300"), Some("f"), None, None]);
        assert_eq!(
            plain_json(&columns(), &definition, &row),
            r#"{"id":7,"x":-1.5e+300,"ok":false,"say \"hi\"":null,"doc":null}"#
        );
    }

    #[test]
    fn column_lists_project_like_track_project() {
        let row = image(&[Some("1"), Some("2"), Some("f"), Some("s"), None]);
        let mut definition = Definition {
            parts: vec!["s".into()],
            key_column: "id".into(),
            mode: Some("columns".into()),
            list: vec!["id".into(), "ok".into()],
        };
        assert_eq!(
            plain_json(&columns(), &definition, &row),
            r#"{"id":1,"ok":false}"#
        );
        definition.mode = Some("exclude".into());
        definition.list = vec!["say \"hi\"".into(), "doc".into()];
        assert_eq!(
            plain_json(&columns(), &definition, &row),
            r#"{"id":1,"x":2,"ok":false}"#
        );
    }
}
