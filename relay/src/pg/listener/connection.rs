//! One LISTEN connection: connects, drives the connection with `poll_message` in its own task
//! and forwards notifications through a bounded channel.
//!
//! Awaiting the `Connection` future directly would discard notifications; `poll_message`
//! yields them. NOTIFY is at-most-once: a notification sent while this connection is down is
//! gone, which is why durable streams are caught up from the outbox after every reconnect.

use std::time::Duration;

use futures_util::stream::poll_fn;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// Notifications buffered between the connection task and the listener before the connection
/// task stops reading (PostgreSQL then queues them server-side).
pub(crate) const NOTIFICATION_BUFFER: usize = 16_384;

/// A notification, reduced to what the listener needs.
#[derive(Debug)]
pub(crate) struct Notification {
    pub(crate) channel: String,
    pub(crate) payload: String,
}

/// A live LISTEN connection. Dropping it aborts the connection task.
#[derive(Debug)]
pub(crate) struct ListenConnection {
    pub(crate) client: Client,
    pub(crate) notifications: mpsc::Receiver<Notification>,
    driver: JoinHandle<()>,
}

impl Drop for ListenConnection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl ListenConnection {
    /// Connects with `config`, giving up after `timeout`.
    pub(crate) async fn connect(
        config: &tokio_postgres::Config,
        timeout: Duration,
    ) -> Result<Self, String> {
        let connecting = config.connect(NoTls);
        let (client, mut connection) = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(error)) => return Err(format!("connect failed: {error}")),
            Err(_) => return Err(format!("connect timed out after {timeout:?}")),
        };
        let (sender, notifications) = mpsc::channel(NOTIFICATION_BUFFER);
        let driver = tokio::spawn(async move {
            let mut messages = poll_fn(move |context| connection.poll_message(context));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(notification)) => {
                        let forwarded = Notification {
                            channel: notification.channel().to_owned(),
                            payload: notification.payload().to_owned(),
                        };
                        if sender.send(forwarded).await.is_err() {
                            return;
                        }
                    }
                    Ok(AsyncMessage::Notice(notice)) => {
                        tracing::debug!(notice = %notice.message(), "postgres notice on the LISTEN connection");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(error = %error, "LISTEN connection failed");
                        return;
                    }
                }
            }
            // The stream ended: the connection is closed. Dropping `sender` tells the listener.
        });
        Ok(Self {
            client,
            notifications,
            driver,
        })
    }
}
