//! An echo server on the relay's own WebSocket code (frame decoder, reader, assembler,
//! writer, control-frame ordering, close codes), for the Autobahn conformance cases
//! (`tests/src/bin/ws_echo.rs`, `scripts/test.d/30-conformance`): complete text and binary
//! messages are echoed instead of being handed to a session, so the cases exercise the code
//! that serves clients.

use std::time::Duration;

use fastwebsockets::upgrade::UpgradeFut;
use fastwebsockets::OpCode;

use super::connection::{goodbye, Ending};
use super::reader::{Assembler, FrameReader, Message};
use super::writer::FrameWriter;

/// Runs one upgraded connection as an echo server: messages up to `max_message_bytes`
/// (larger ones close with 1009), writes that make no progress for `stall` drop it.
pub async fn echo(upgrade: UpgradeFut, max_message_bytes: usize, stall: Duration) {
    let Ok(websocket) = upgrade.await else {
        return;
    };
    let (mut read_half, write_half) = tokio::io::split(websocket.into_inner());
    let mut reader = FrameReader::new(Assembler::keeping_binary(max_message_bytes));
    let mut writer = FrameWriter::new(write_half, stall);
    let ending = loop {
        let message = match reader.next(&mut read_half).await {
            Ok(message) => message,
            Err(error) => break Ending::after(&error),
        };
        match message {
            Message::Text(text) => writer.push(OpCode::Text, &text),
            Message::Binary(data) => writer.push(OpCode::Binary, &data),
            Message::Ping(payload) => writer.push(OpCode::Pong, &payload),
            Message::Close(echo) => break Ending::PeerClosed(echo),
            Message::Fragment | Message::Pong => {}
        }
        if writer.flush().await.is_err() {
            break Ending::Drop;
        }
    };
    drop(reader);
    let _ = goodbye(writer, ending, &mut read_half, stall).await;
}
