//! An echo server on the relay's own WebSocket code (reader, assembler, writer, obligation
//! ordering, close codes), for the Autobahn conformance cases (`tests/src/bin/ws_echo.rs`,
//! `scripts/test.d/30-conformance`): complete text and binary messages are echoed instead of
//! being handed to a session, so the cases exercise the code that serves clients.

use std::time::Duration;

use fastwebsockets::upgrade::UpgradeFut;
use fastwebsockets::{OpCode, Role};

use super::connection::{goodbye, Ending};
use super::obligation;
use super::reader::{read_message, Assembler, Message};
use super::writer::FrameWriter;

/// Runs one upgraded connection as an echo server: messages up to `max_message_bytes`
/// (larger ones close with 1009), writes that make no progress for `stall` drop it.
pub async fn echo(upgrade: UpgradeFut, max_message_bytes: usize, stall: Duration) {
    let Ok(websocket) = upgrade.await else {
        return;
    };
    let (mut read_half, write_half) = tokio::io::split(websocket.into_inner());
    let (mut reader, _) =
        fastwebsockets::after_handshake_split(&mut read_half, tokio::io::sink(), Role::Server);
    // The same reader settings as `connection::run`.
    reader.set_max_message_size(max_message_bytes.saturating_add(1));
    reader.set_auto_pong(true);
    reader.set_auto_close(true);
    let (mut send, mut obligations) = obligation::channel();
    let mut writer = FrameWriter::new(write_half, stall);
    let mut assembler = Assembler::keeping_binary(max_message_bytes);
    let ending = loop {
        let read = {
            let read = read_message(&mut reader, &mut assembler, &mut send);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    Some(owed) = obligations.recv() => {
                        writer.push(owed.opcode, &owed.payload);
                        if writer.flush().await.is_err() {
                            break None;
                        }
                    }
                    read = &mut read => break Some(read),
                }
            }
        };
        let message = match read {
            None => break Ending::Drop,
            Some(Err(error)) => match error.close_code() {
                Some(code) => break Ending::Close(code, error.to_string()),
                None => break Ending::Drop,
            },
            Some(Ok(message)) => message,
        };
        obligation::drain(&mut obligations, &mut writer);
        match message {
            Message::Text(text) => writer.push(OpCode::Text, &text),
            Message::Binary(data) => writer.push(OpCode::Binary, &data),
            Message::Close => break Ending::PeerClosed,
            Message::Fragment | Message::Control => {}
        }
        if writer.flush().await.is_err() {
            break Ending::Drop;
        }
    };
    drop(reader);
    // A peer that does not take the close frame is simply dropped.
    let _ = goodbye(writer, &mut obligations, ending, &mut read_half, stall).await;
}
