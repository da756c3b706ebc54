//! The client's background task: owns the socket, reconnects with backoff, keeps the
//! connection alive, and moves commands from the handles and messages from the relay
//! through the [`State`].
//!
//! ```text
//!  handles ──Command──▶ driver ──ClientMessage──▶ Writer ──▶ relay
//!                         ▲                                    │
//!        Subscription ◀── State ◀──Inbound── reader task ◀─────┘
//! ```
//!
//! The task runs until [`Client::close`](super::Client::close), until every handle
//! (clients, subscriptions, collections) is dropped, until the relay refuses the client for
//! good (HTTP 401/403, close codes 4001/4003/4004/1008: the shared `ending` rule; this
//! client cannot change its token, so a close asking for a new one ends it), or until the
//! reconnect attempts allowed
//! by the configuration run out.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tidewire_shared::ending::{ending, Closed, Reconnect, LATER_MIN_MS};
use tidewire_shared::message::Publish;
use tidewire_shared::{ClientMessage, CloseCode, StreamName};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::backoff::{self, Backoff};
use super::config::{ClientConfig, Endpoint};
use super::error::ClientError;
use super::socket::{self, Inbound, Socket, Writer};
use super::state::{Output, PublishReply, State};
use super::stats::{bump, Counters};
use super::subscription::{SubscribeOptions, SubscriptionEvent};

/// How long a connection must stay up before the reconnect backoff starts over. A relay
/// that accepts connections and drops them at once keeps growing the delay instead of
/// being hammered at the initial one.
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// The state of the client's connection to the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionStatus {
    /// The first connection attempt is under way.
    Connecting,
    /// Connected; subscriptions are (being) resumed.
    Connected,
    /// The connection failed or dropped; the next attempt follows a backoff delay.
    Reconnecting {
        /// Consecutive failed attempts so far.
        attempt: u32,
        /// Why the last connection or attempt ended.
        reason: String,
    },
    /// The client stopped for good.
    Closed {
        /// Why.
        reason: String,
    },
}

/// A subscription's registration: its id and the receiving end of its events.
pub(crate) type Registered = (u64, mpsc::UnboundedReceiver<SubscriptionEvent>);

/// What handles ask of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// Register a subscription (answered with its id and event channel).
    Subscribe {
        stream: StreamName,
        options: SubscribeOptions,
        reply: oneshot::Sender<Result<Registered, ClientError>>,
    },
    /// End subscription `id` on `stream`.
    Unsubscribe { stream: StreamName, id: u64 },
    /// Send a publish and route its answer to `reply`.
    Publish {
        message: Publish,
        reply: PublishReply,
    },
    /// Close the connection and stop; `reply` is dropped once everything is failed/ended.
    Close { reply: oneshot::Sender<()> },
}

/// How a connection ended.
#[derive(Debug)]
enum Ended {
    /// Close asked for (or every handle dropped): stop.
    Stop,
    /// The connection was lost; reconnect.
    Lost(String),
    /// The relay is full or limited us; reconnect, but not before [`LATER_MIN_MS`].
    Later(String),
    /// The relay refused us for good; stop with this error.
    Refused(ClientError),
}

/// The background task's state.
#[derive(Debug)]
pub(crate) struct Driver {
    config: Arc<ClientConfig>,
    endpoint: Endpoint,
    commands: mpsc::UnboundedReceiver<Command>,
    state: State,
    status: watch::Sender<ConnectionStatus>,
    counters: Arc<Counters>,
    /// Scratch buffer for the state's outputs.
    out: Vec<Output>,
    /// Scheduled subscribe retries: when, stream, subscription id.
    retries: Vec<(Instant, StreamName, u64)>,
    /// Answered once the driver stopped after a [`Command::Close`].
    close_reply: Option<oneshot::Sender<()>>,
}

impl Driver {
    pub(crate) fn new(
        config: Arc<ClientConfig>,
        endpoint: Endpoint,
        commands: mpsc::UnboundedReceiver<Command>,
        status: watch::Sender<ConnectionStatus>,
        counters: Arc<Counters>,
    ) -> Self {
        let state = State::new(config.reconnect, Arc::clone(&counters));
        Self {
            config,
            endpoint,
            commands,
            state,
            status,
            counters,
            out: Vec::new(),
            retries: Vec::new(),
            close_reply: None,
        }
    }

    /// Connects, serves, reconnects, until told to stop. If `first` is given, the outcome
    /// of the first attempt is reported there, and a failed first attempt stops the driver.
    pub(crate) async fn run(mut self, mut first: Option<oneshot::Sender<Result<(), ClientError>>>) {
        let mut backoff = Backoff::from(self.config.reconnect);
        let mut ever_connected = false;
        loop {
            let endpoint = self.endpoint.clone();
            let config = Arc::clone(&self.config);
            let attempt = async move { socket::connect(&endpoint, &config).await };
            let Some(connected) = self.offline(attempt).await else {
                return self.stop(&ClientError::Closed);
            };
            let mut later = false;
            let reason = match connected {
                Ok(socket) => {
                    let opened = Instant::now();
                    bump(&self.counters.connects);
                    if ever_connected {
                        bump(&self.counters.reconnects);
                    }
                    ever_connected = true;
                    if let Some(first) = first.take() {
                        let _ = first.send(Ok(()));
                    }
                    self.status.send_replace(ConnectionStatus::Connected);
                    let ended = self.serve(socket).await;
                    self.retries.clear();
                    if opened.elapsed() >= STABLE_AFTER {
                        backoff.reset();
                    }
                    later = matches!(ended, Ended::Later(_));
                    match ended {
                        Ended::Stop => return self.stop(&ClientError::Closed),
                        Ended::Lost(reason) | Ended::Later(reason) => {
                            bump(&self.counters.disconnects);
                            self.state.on_disconnected(&reason);
                            reason
                        }
                        Ended::Refused(error) => {
                            bump(&self.counters.disconnects);
                            self.state.on_disconnected(&error.to_string());
                            return self.stop(&error);
                        }
                    }
                }
                Err(failed) => {
                    let error = failed.error;
                    bump(&self.counters.connect_failures);
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(error.clone()));
                        return self.stop(&error);
                    }
                    match failed.reconnect {
                        Reconnect::NewToken | Reconnect::Never => return self.stop(&error),
                        Reconnect::Later => later = true,
                        Reconnect::Resume => {}
                    }
                    error.to_string()
                }
            };
            tracing::debug!(url = %self.config.url, %reason, "tidewire client disconnected");
            let Some(mut delay) = backoff::next_delay(&mut backoff) else {
                let error = ClientError::Connect {
                    url: self.config.url.clone(),
                    reason: format!("gave up after {} attempts: {reason}", backoff.attempts()),
                };
                return self.stop(&error);
            };
            if later {
                delay = delay.max(Duration::from_millis(LATER_MIN_MS));
            }
            self.status.send_replace(ConnectionStatus::Reconnecting {
                attempt: backoff.attempts(),
                reason,
            });
            if self.offline(tokio::time::sleep(delay)).await.is_none() {
                return self.stop(&ClientError::Closed);
            }
        }
    }

    /// Drives `future` while handling commands (without a connection); `None` if the
    /// driver must stop.
    async fn offline<F: Future>(&mut self, future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        loop {
            tokio::select! {
                output = &mut future => return Some(output),
                command = self.commands.recv() => match command {
                    None => return None,
                    Some(Command::Close { reply }) => {
                        self.close_reply = Some(reply);
                        return None;
                    }
                    Some(command) => {
                        self.handle(command);
                        // Nothing can be sent offline; everything is re-sent on connect.
                        self.out.clear();
                    }
                },
            }
        }
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, socket: Socket) -> Ended {
        let Socket {
            mut writer,
            mut inbound,
            reader: _reader,
        } = socket;
        self.state.on_connected(&mut self.out);
        if let Err(reason) = self.flush(&mut writer).await {
            return Ended::Lost(reason);
        }
        let keepalive = self.config.keepalive;
        let mut last_heard = Instant::now();
        let mut pinged = false;
        loop {
            let silence_limit = if pinged { keepalive * 2 } else { keepalive };
            let next_retry = self.retries.iter().map(|(at, _, _)| *at).min();
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => {
                        writer.close(CloseCode::Normal.code(), "client dropped").await;
                        return Ended::Stop;
                    }
                    Some(Command::Close { reply }) => {
                        writer.close(CloseCode::Normal.code(), "client closed").await;
                        self.close_reply = Some(reply);
                        return Ended::Stop;
                    }
                    Some(command) => self.handle(command),
                },
                received = inbound.recv() => {
                    last_heard = Instant::now();
                    pinged = false;
                    match received {
                        Some(Inbound::Message(message)) => {
                            bump(&self.counters.messages_received);
                            self.state.on_message(message, &mut self.out);
                        }
                        Some(Inbound::Malformed(reason)) => {
                            bump(&self.counters.malformed_messages);
                            tracing::warn!(%reason, "skipping a malformed message from the relay");
                        }
                        Some(Inbound::Reply(opcode, payload)) => {
                            if let Err(error) = writer.reply(opcode, payload).await {
                                return Ended::Lost(error.to_string());
                            }
                        }
                        Some(Inbound::Closed { code, reason }) => {
                            // Best effort: the reader echoed the close already.
                            let _ = writer.flush().await;
                            return closed(code, &reason);
                        }
                        Some(Inbound::Failed(reason)) => return Ended::Lost(reason),
                        None => return Ended::Lost("the reader stopped".into()),
                    }
                }
                () = sleep_until(next_retry) => self.fire_retries(),
                () = tokio::time::sleep_until(last_heard + silence_limit) => {
                    if pinged {
                        return Ended::Lost(format!(
                            "nothing from the relay for {:?}",
                            keepalive * 2
                        ));
                    }
                    pinged = true;
                    self.out.push(Output::Send(ClientMessage::Ping { id: None }));
                }
            }
            if let Err(reason) = self.flush(&mut writer).await {
                return Ended::Lost(reason);
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                stream,
                options,
                reply,
            } => match self.state.subscribe(stream.clone(), options, &mut self.out) {
                Ok((id, receiver)) => {
                    if reply.send(Ok((id, receiver))).is_err() {
                        // The caller gave up waiting: nobody will read this subscription.
                        self.state.unsubscribe(&stream, id, &mut self.out);
                    }
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
            Command::Unsubscribe { stream, id } => {
                self.state.unsubscribe(&stream, id, &mut self.out);
            }
            Command::Publish { message, reply } => {
                self.state.publish(message, reply, &mut self.out)
            }
            Command::Close { reply } => {
                // Handled by the loops; keep the reply so the caller is answered on stop.
                self.close_reply = Some(reply);
            }
        }
    }

    fn fire_retries(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) =
            self.retries.drain(..).partition(|(at, _, _)| *at <= now);
        self.retries = later;
        for (_, stream, id) in due {
            self.state.retry(&stream, id, &mut self.out);
        }
    }

    /// Writes the state's outputs and schedules retries. A relay that stops reading for
    /// two keepalive intervals counts as lost, so a stalled write cannot hang the client.
    async fn flush(&mut self, writer: &mut Writer) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let outputs = std::mem::take(&mut self.out);
        let mut messages = Vec::with_capacity(outputs.len());
        for output in outputs {
            match output {
                Output::Send(message) => messages.push(message),
                Output::RetryLater { stream, id, delay } => {
                    self.retries.push((Instant::now() + delay, stream, id));
                }
            }
        }
        if messages.is_empty() {
            return Ok(());
        }
        let write = async {
            for message in &messages {
                writer.send(message).await?;
            }
            writer.flush().await
        };
        let limit = self.config.keepalive * 2;
        match tokio::time::timeout(limit, write).await {
            Ok(written) => written.map_err(|error| error.to_string()),
            Err(_) => Err(format!("the relay read nothing for {limit:?}")),
        }
    }

    /// Fails and ends everything, publishes the final status.
    fn stop(mut self, error: &ClientError) {
        // Status first: whoever sees a subscription end can read why.
        self.status.send_replace(ConnectionStatus::Closed {
            reason: error.to_string(),
        });
        self.state.close(error);
        self.commands.close();
        // Commands that raced the stop: their replies are dropped, which their callers
        // read as `ClientError::Closed`.
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Close { reply } = command {
                let _ = reply.send(());
            }
        }
        if let Some(reply) = self.close_reply.take() {
            let _ = reply.send(());
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing scheduled.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Classifies a close from the relay with the shared [`ending`] rule: reconnect (soon or
/// later), or stop. This client's token is fixed at creation, so a close that asks for a new
/// token ends it too: reconnecting with the same token would be refused again.
fn closed(code: Option<u16>, reason: &str) -> Ended {
    let Some(code) = code else {
        return Ended::Lost("the relay closed the connection".into());
    };
    let verdict = ending(&Closed {
        close_code: Some(code),
        opened: true,
        ..Closed::default()
    });
    let lost = format!("the relay closed the connection: {code} {reason}");
    match verdict.reconnect {
        Reconnect::Resume => Ended::Lost(lost),
        Reconnect::Later => Ended::Later(lost),
        Reconnect::NewToken => Ended::Refused(ClientError::Refused {
            reason: format!(
                "close code {code} ({}: {reason}); connect again with a new token",
                verdict.name
            ),
        }),
        Reconnect::Never => Ended::Refused(ClientError::Refused {
            reason: format!("close code {code} ({}: {reason})", verdict.name),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_decide_reconnects() {
        assert!(matches!(closed(None, ""), Ended::Lost(_)));
        assert!(matches!(closed(Some(1001), "shutdown"), Ended::Lost(_)));
        assert!(matches!(closed(Some(4008), "slow"), Ended::Lost(_)));
        assert!(matches!(closed(Some(4999), "unknown"), Ended::Lost(_)));
        assert!(matches!(
            closed(Some(4001), "unauthorized"),
            Ended::Refused(_)
        ));
        assert!(matches!(closed(Some(1008), "origin"), Ended::Refused(_)));
        // An expired token is not retried with the same token.
        assert!(matches!(closed(Some(4004), "expired"), Ended::Refused(_)));
        assert!(matches!(closed(Some(4503), "overloaded"), Ended::Later(_)));
    }
}
