//! Publishing from a client: permission, rate and size checks, then `tidewire.publish`.

use tidewire_shared::message::Publish;
use tidewire_shared::notify::NOTIFY_LIMIT;
use tidewire_shared::{ErrorCode, Op, ServerMessage, StreamKind};

use super::Session;
use crate::pg::outbox::{self, OutboxError};

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
        let started = std::time::Instant::now();
        let access = self.grant.permissions.write_access(&stream);
        let result = outbox::publish_checked(
            &self.hub.pool,
            &stream,
            &publish.key,
            publish.op,
            &publish.data,
            access.filter().map(|filter| &**filter),
        )
        .await;
        self.hub.metrics.observe_publish(started.elapsed());
        match result {
            Ok(seq) => self.push(&ServerMessage::Ack {
                id: publish.id,
                stream,
                seq,
                replayed: false,
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

/// The protocol answer for a failed publish.
pub(crate) fn publish_error(error: &OutboxError) -> (ErrorCode, String) {
    match error {
        OutboxError::Rejected(message) => (ErrorCode::BadData, message.clone()),
        OutboxError::OutsideGrant(message) => (ErrorCode::Forbidden, message.clone()),
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
