//! Publishing from a client: permission, rate and size checks, then the write
//! (`pg::publish`), exactly once when it carries a write id. [`commit`] is the one path both
//! transports publish through.

use std::time::Instant;

use tidewire_shared::message::Publish;
use tidewire_shared::notify::NOTIFY_LIMIT;
use tidewire_shared::{ErrorCode, Filter, Op, ServerMessage, StreamKind};

use super::Session;
use crate::hub::Hub;
use crate::pg::outbox::OutboxError;
use crate::pg::publish::{self, Published, Write};

impl Session {
    pub(super) async fn publish(&mut self, publish: Publish) {
        let id = Some(publish.id.clone());
        let stream = publish.stream.clone();
        match self.check_publish(&publish) {
            Ok(()) => {}
            Err((code, message)) => {
                self.push_error(id, Some(stream), code, message);
                return;
            }
        }
        let access = self.grant.permissions.write_access(&stream);
        let write = Write {
            stream: &stream,
            key: &publish.key,
            op: publish.op,
            data: &publish.data,
            write_id: publish.write_id.as_deref(),
        };
        let result = commit(&self.hub, &write, access.filter().map(|filter| &**filter)).await;
        match result {
            Ok(Published { seq, replayed }) => self.push(&ServerMessage::Ack {
                id: publish.id,
                stream,
                seq,
                replayed,
            }),
            Err(error) => {
                let (code, message) = publish_error(&error);
                self.push_error(id, Some(stream), code, message);
            }
        }
    }

    fn check_publish(&mut self, publish: &Publish) -> Result<(), (ErrorCode, String)> {
        let stream = &publish.stream;
        if stream.kind() == StreamKind::Raw {
            return Err((
                ErrorCode::BadStream,
                "raw channels are read-only through the relay; use pg_notify in PostgreSQL".into(),
            ));
        }
        if !self.grant.permissions.write_access(stream).allowed() {
            return Err((ErrorCode::Forbidden, format!("no write access to {stream}")));
        }
        if !self.rate.try_take() {
            return Err((
                ErrorCode::RateLimited,
                format!(
                    "more than {} publishes per second on this connection",
                    self.hub.config.options.publish_rate
                ),
            ));
        }
        let size = serde_json::to_vec(&publish.data).map_or(usize::MAX, |bytes| bytes.len());
        let limit = if publish.op == Op::Message {
            // Ephemeral messages travel inside NOTIFY only; leave room for the envelope.
            NOTIFY_LIMIT - 1000
        } else {
            self.hub.config.options.max_data_bytes
        };
        if size > limit {
            return Err((
                ErrorCode::TooLarge,
                format!(
                    "data is {size} bytes, the limit for {} is {limit}",
                    publish.op.as_str()
                ),
            ));
        }
        Ok(())
    }
}

/// Publishes one client write (WebSocket or HTTP), within the writer's grant filter if it has
/// one, and accounts for it: its latency, a replayed answer, and `--crash-before-ack`, which
/// may end the process here, after the commit and before the caller answers.
///
/// # Errors
///
/// As [`publish::publish_checked`].
pub(crate) async fn commit(
    hub: &Hub,
    write: &Write<'_>,
    within: Option<&Filter>,
) -> Result<Published, OutboxError> {
    let started = Instant::now();
    let published = publish::publish_checked(&hub.pool, write, within).await?;
    hub.metrics.observe_publish(started.elapsed());
    if published.replayed {
        hub.metrics.write_replayed();
    } else if write.once().is_some() {
        hub.crash_before_ack
            .committed(write.stream.as_str(), published.seq);
    }
    Ok(published)
}

/// The protocol answer for a failed publish.
pub(crate) fn publish_error(error: &OutboxError) -> (ErrorCode, String) {
    match error {
        OutboxError::Rejected(message) => (ErrorCode::BadData, message.clone()),
        OutboxError::OutsideGrant(message) => (ErrorCode::Forbidden, message.clone()),
        OutboxError::Conflict(message) => (ErrorCode::Conflict, message.clone()),
        error if error.is_unavailable() => (
            ErrorCode::Unavailable,
            "postgres is unavailable; retry the request".into(),
        ),
        error => {
            tracing::warn!(%error, "publish failed");
            (ErrorCode::Internal, "publish failed".into())
        }
    }
}
