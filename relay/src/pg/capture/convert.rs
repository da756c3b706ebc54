//! Row images to the JSON a trigger would publish: PostgreSQL itself casts each text value
//! back to its column type and runs `to_jsonb` and `tidewire.track_project` on the row, so a
//! row captured from the WAL publishes exactly what `to_jsonb(NEW)` gives in trigger mode,
//! for every type (arrays, domains, enums, timestamps ...). One prepared statement per
//! relation (the types are those the WAL describes); one round trip per chunk and relation.

use std::collections::HashMap;

use tokio_postgres::{Client, Statement};

use super::pgoutput::Relation;
use super::route::Definition;

/// The conversion statement of every relation seen on this replication session.
#[derive(Debug, Default)]
pub(crate) struct Converter {
    statements: HashMap<u32, Statement>,
}

impl Converter {
    /// Prepares the statement of `relation` (again, when its description changed).
    pub(crate) async fn prepare(
        &mut self,
        client: &Client,
        relation: &Relation,
    ) -> Result<(), tokio_postgres::Error> {
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

/// `name` as an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
