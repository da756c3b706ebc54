//! [`Notifications`]: a dedicated LISTEN connection whose NOTIFY payloads are collected in a
//! channel, driven with `Connection::poll_message` (awaiting the connection future would
//! discard notifications).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

/// A LISTEN connection. Dropping it closes the connection.
#[derive(Debug)]
pub struct Notifications {
    /// Issues LISTEN/UNLISTEN; its connection is driven by the task feeding `received`.
    client: Client,
    /// Every notification, in arrival order (unbounded: tests bound their own volume).
    received: mpsc::UnboundedReceiver<Notification>,
}

impl Notifications {
    /// Connects to `url` and LISTENs on each of `channels` (quoted as identifiers).
    ///
    /// # Panics
    ///
    /// When the connection or a LISTEN fails.
    pub async fn listen(url: &str, channels: &[&str]) -> Self {
        let (client, mut connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("connect the LISTEN client");
        let (sender, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages =
                futures_util::stream::poll_fn(move |context| connection.poll_message(context));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(notification)) => {
                        if sender.send(notification).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        let listener = Self { client, received };
        for channel in channels {
            listener.listen_to(channel).await;
        }
        listener
    }

    /// LISTENs on one more channel.
    ///
    /// # Panics
    ///
    /// When the LISTEN fails.
    pub async fn listen_to(&self, channel: &str) {
        self.client
            .batch_execute(&format!("listen {}", quote_ident(channel)))
            .await
            .expect("LISTEN");
    }

    /// The next notification, or `None` after `timeout` without one (or when the connection
    /// is gone).
    pub async fn recv(&mut self, timeout: Duration) -> Option<Notification> {
        tokio::time::timeout(timeout, self.received.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next notification's payload parsed as JSON.
    ///
    /// # Panics
    ///
    /// When nothing arrives within `timeout` or the payload is not JSON.
    pub async fn next_json(&mut self, timeout: Duration) -> serde_json::Value {
        let notification = self
            .recv(timeout)
            .await
            .expect("a notification within the timeout");
        serde_json::from_str(notification.payload()).expect("notification payload is JSON")
    }

    /// Every notification that arrives until `quiet` passes without one.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Notification> {
        let mut all = Vec::new();
        while let Some(notification) = self.recv(quiet).await {
            all.push(notification);
        }
        all
    }
}

/// Quotes an identifier for SQL (`"` doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
