//! Control frames fastwebsockets obliges a connection to send (the pong for a ping, the echo of
//! a close) while the read future is pinned: a callback queues them, the connection loop
//! writes them, and [`drain`] puts the ones owed for frames already read ahead of anything a
//! complete message causes (a ping between two fragments is answered before the reply to the
//! message; RFC 6455 section 5.5.2, Autobahn cases 5.6-5.20).

use std::future::Future;
use std::pin::Pin;

use fastwebsockets::{Frame, OpCode};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use super::writer::FrameWriter;

/// Obligatory replies that may wait to be written.
const OBLIGATIONS: usize = 4;

/// A control frame to send (pong, close echo).
#[derive(Debug)]
pub(super) struct Obligation {
    pub(super) opcode: OpCode,
    pub(super) payload: Vec<u8>,
}

/// The obligation channel's receiver is gone (the loop ended).
#[derive(Debug, thiserror::Error)]
#[error("the connection loop ended")]
pub(super) struct LoopGone;

/// What the `read_frame` callback returns: the obligation queued (or the loop gone).
pub(super) type Queued = Pin<Box<dyn Future<Output = Result<(), LoopGone>> + Send>>;

/// The callback for `WebSocketRead::read_frame` and the receiver the loop writes from.
pub(super) fn channel() -> (
    impl FnMut(Frame<'static>) -> Queued,
    mpsc::Receiver<Obligation>,
) {
    let (sender, receiver) = mpsc::channel(OBLIGATIONS);
    let send = move |frame: Frame<'static>| {
        let sender = sender.clone();
        let obligation = Obligation {
            opcode: frame.opcode,
            payload: Vec::from(frame.payload),
        };
        Box::pin(async move { sender.send(obligation).await.map_err(|_| LoopGone) }) as Queued
    };
    (send, receiver)
}

/// Queues every obligation received so far into `writer`; true if there was any.
pub(super) fn drain<W: AsyncWrite + Unpin>(
    obligations: &mut mpsc::Receiver<Obligation>,
    writer: &mut FrameWriter<W>,
) -> bool {
    let mut owed = false;
    while let Ok(obligation) = obligations.try_recv() {
        writer.push(obligation.opcode, &obligation.payload);
        owed = true;
    }
    owed
}
