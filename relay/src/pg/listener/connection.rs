//! The listener's two PostgreSQL connections: the LISTEN connection, driven with
//! `poll_message` in its own task that forwards notifications through a bounded channel, and
//! a read connection for the outbox.
//!
//! Awaiting the `Connection` future directly would discard notifications; `poll_message`
//! yields them. NOTIFY is at-most-once: a notification sent while this connection is down is
//! gone, which is why durable streams are caught up from the outbox after every reconnect.
//!
//! Statements on the LISTEN connection itself (LISTEN, UNLISTEN, the liveness query) go
//! through [`ListenConnection::execute`], which keeps taking notifications off the channel
//! (into [`ListenConnection::backlog`]) while it waits: the statement's answer arrives behind
//! the notifications sent before it, and with the channel full the connection's task would
//! wait for room that only the waiting listener can make. (A 100,000-event transaction made
//! the liveness query time out that way, and the listener took PostgreSQL for dead.)
//!
//! Why a read connection of its own: the listener must never wait behind sessions for a
//! pooled connection (ten thousand sessions replaying at once kept the pool busy for longer
//! than the listener's timeout, which then took PostgreSQL for dead), and it cannot read on
//! the LISTEN connection itself: while the notification channel is full, that connection's
//! task waits, and so would the answer to the read that empties it.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::stream::poll_fn;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, Client, NoTls, Socket};

/// Notifications buffered between the connection task and the listener before the connection
/// task stops reading (PostgreSQL then queues them server-side).
pub(crate) const NOTIFICATION_BUFFER: usize = 16_384;

/// `application_name` of the read connection (the LISTEN one is `tidewire-relay listen`).
pub(crate) const READER_NAME: &str = "tidewire-relay listen-reads";

/// A notification, reduced to what the listener needs.
#[derive(Debug)]
pub(crate) struct Notification {
    pub(crate) channel: String,
    pub(crate) payload: String,
}

/// A live LISTEN connection and its read connection. Dropping it aborts both connection
/// tasks.
#[derive(Debug)]
pub(crate) struct ListenConnection {
    pub(crate) client: Client,
    pub(crate) notifications: mpsc::Receiver<Notification>,
    /// The read connection, until the listener takes it (see the module docs).
    pub(crate) reader: Option<Client>,
    /// Notifications taken off the channel while a statement ran; they come before anything
    /// still in the channel.
    pub(crate) backlog: VecDeque<Notification>,
    driver: JoinHandle<()>,
    reader_driver: JoinHandle<()>,
}

impl Drop for ListenConnection {
    fn drop(&mut self) {
        self.driver.abort();
        self.reader_driver.abort();
    }
}

impl ListenConnection {
    /// Connects with `config`, giving up after `timeout`.
    pub(crate) async fn connect(
        config: &tokio_postgres::Config,
        timeout: Duration,
    ) -> Result<Self, String> {
        let (client, mut connection) = open(config, timeout).await?;
        let mut reader_config = config.clone();
        reader_config.application_name(READER_NAME);
        let (reader, reader_connection) = open(&reader_config, timeout).await?;
        let reader_driver = tokio::spawn(async move {
            if let Err(error) = reader_connection.await {
                tracing::warn!(error = %error, "the listener's read connection failed");
            }
        });
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
            reader: Some(reader),
            backlog: VecDeque::new(),
            driver,
            reader_driver,
        })
    }
}

impl ListenConnection {
    /// Runs `statements` on the LISTEN connection, taking notifications into the backlog
    /// meanwhile (see the module docs).
    ///
    /// # Errors
    ///
    /// The statement's error.
    pub(crate) async fn execute(&mut self, statements: &str) -> Result<(), tokio_postgres::Error> {
        let Self {
            client,
            notifications,
            backlog,
            ..
        } = self;
        let statement = client.batch_execute(statements);
        tokio::pin!(statement);
        loop {
            tokio::select! {
                biased;
                result = &mut statement => return result,
                // A closed channel disables this branch; the statement then fails on its own.
                Some(notification) = notifications.recv() => backlog.push_back(notification),
            }
        }
    }

    /// The next notifications to handle, at most `max`: the backlog first, else whatever the
    /// channel holds now; empty if neither has any.
    pub(crate) fn ready(&mut self, max: usize) -> Vec<Notification> {
        let mut batch: Vec<Notification> = Vec::new();
        while batch.len() < max {
            match self.backlog.pop_front() {
                Some(notification) => batch.push(notification),
                None => match self.notifications.try_recv() {
                    Ok(notification) => batch.push(notification),
                    Err(_) => break,
                },
            }
        }
        batch
    }
}

async fn open(
    config: &tokio_postgres::Config,
    timeout: Duration,
) -> Result<(Client, tokio_postgres::Connection<Socket, NoTlsStream>), String> {
    match tokio::time::timeout(timeout, config.connect(NoTls)).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(error)) => Err(format!("connect failed: {error}")),
        Err(_) => Err(format!("connect timed out after {timeout:?}")),
    }
}
