//! Small helpers shared by the e2e modules.

use std::time::Duration;

use tokio_postgres::Client;

/// Generous wait for one notification on a loaded 2-core machine.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Quiet period after which no further notification is expected.
pub(crate) const QUIET: Duration = Duration::from_millis(300);

/// One row of `tidewire.events`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventRow {
    pub(crate) seq: i64,
    pub(crate) key: String,
    pub(crate) op: String,
    pub(crate) data: Option<serde_json::Value>,
}

/// An expected outbox row.
pub(crate) fn event(seq: i64, key: &str, op: &str, data: Option<serde_json::Value>) -> EventRow {
    EventRow {
        seq,
        key: key.to_owned(),
        op: op.to_owned(),
        data,
    }
}

/// The outbox of `stream`, in seq order.
pub(crate) async fn events(client: &Client, stream: &str) -> Vec<EventRow> {
    client
        .query(
            "select seq, key, op, data::text from tidewire.events where stream = $1 order by seq",
            &[&stream],
        )
        .await
        .expect("read the outbox")
        .iter()
        .map(|row| EventRow {
            seq: row.get(0),
            key: row.get(1),
            op: row.get(2),
            data: row
                .get::<_, Option<String>>(3)
                .map(|text| serde_json::from_str(&text).expect("jsonb is JSON")),
        })
        .collect()
}

/// The materialised records of `stream` as `(key, seq, data)`, ordered by key.
pub(crate) async fn records(
    client: &Client,
    stream: &str,
) -> Vec<(String, i64, Option<serde_json::Value>)> {
    client
        .query(
            "select key, seq, data::text from tidewire.records where stream = $1 order by key",
            &[&stream],
        )
        .await
        .expect("read the records")
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get(1),
                row.get::<_, Option<String>>(2)
                    .map(|text| serde_json::from_str(&text).expect("jsonb is JSON")),
            )
        })
        .collect()
}

/// `(epoch, seq, min_seq)` of a stream, `None` when it does not exist.
pub(crate) async fn stream_row(client: &Client, stream: &str) -> Option<(i64, i64, i64)> {
    client
        .query_opt(
            "select epoch, seq, min_seq from tidewire.streams where name = $1",
            &[&stream],
        )
        .await
        .expect("read the stream row")
        .map(|row| (row.get(0), row.get(1), row.get(2)))
}

/// Calls `tidewire.publish` with `data` given as JSON text; returns the seq.
pub(crate) async fn publish(
    client: &Client,
    stream: &str,
    key: &str,
    op: &str,
    data: &str,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "select tidewire.publish($1, $2, $3, $4::text::jsonb)",
            &[&stream, &key, &op, &data],
        )
        .await?;
    Ok(row.get(0))
}

/// An HS256 token signed with `secret` for `claims`, valid for ten minutes (`exp` is set).
pub(crate) fn signed_token(secret: &str, mut claims: serde_json::Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 600;
    claims["exp"] = serde_json::json!(exp);
    tidewire_relay::auth::jwt::sign_hs256(secret.as_bytes(), &claims).expect("sign")
}
