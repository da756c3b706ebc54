//! Client frames decoded from the bytes received so far (sans-IO): RFC 6455 section 5.2 for
//! a server, with no extension negotiated.
//!
//! The relay decodes frames itself instead of through fastwebsockets' reader because that
//! reader allocates an 8 KiB buffer per connection up front and keeps it for the connection's
//! life: half of what an idle connection cost (heaptrack, 2,000 idle connections: 8.2 of
//! 16.9 KiB each). Here the bytes live in a buffer that exists only while a frame is
//! incomplete (see `reader.rs`), and decoding never waits, so reading is cancel safe.

use bytes::{Buf, BytesMut};
use fastwebsockets::OpCode;

/// One decoded client frame, unmasked.
#[derive(Debug)]
pub(super) struct Frame {
    /// The frame ends its message.
    pub(super) fin: bool,
    /// What the frame carries.
    pub(super) opcode: OpCode,
    /// The unmasked payload.
    pub(super) payload: BytesMut,
}

/// Why the bytes received are not a frame the relay accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum FrameError {
    /// The frame's length is over the limit (close 1009); known from the header, before its
    /// payload is read.
    #[error("frame larger than {limit} bytes")]
    TooBig {
        /// `--max-message-bytes`.
        limit: usize,
    },
    /// The peer broke the framing rules (close 1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// Takes one whole frame off the front of `buffer`; `Ok(None)` until all of it has arrived
/// (then `buffer` has room reserved for the rest). Frames longer than `limit` are refused
/// from their header.
///
/// # Errors
///
/// [`FrameError`]; the connection cannot go on.
pub(super) fn decode(buffer: &mut BytesMut, limit: usize) -> Result<Option<Frame>, FrameError> {
    let [first, second, ..] = buffer[..] else {
        return Ok(None);
    };
    if first & 0b0111_0000 != 0 {
        return Err(FrameError::Protocol(
            "reserved bits set without an extension",
        ));
    }
    let fin = first & 0b1000_0000 != 0;
    let opcode = match first & 0b0000_1111 {
        0 => OpCode::Continuation,
        1 => OpCode::Text,
        2 => OpCode::Binary,
        8 => OpCode::Close,
        9 => OpCode::Ping,
        10 => OpCode::Pong,
        _ => return Err(FrameError::Protocol("reserved opcode")),
    };
    if second & 0b1000_0000 == 0 {
        return Err(FrameError::Protocol("client frames must be masked"));
    }
    let extra = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let head = 2 + extra + 4;
    if buffer.len() < head {
        return Ok(None);
    }
    let length = match extra {
        0 => u64::from(second & 0x7f),
        2 => u64::from(u16::from_be_bytes([buffer[2], buffer[3]])),
        _ => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&buffer[2..10]);
            u64::from_be_bytes(bytes)
        }
    };
    let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
    if control && !fin {
        return Err(FrameError::Protocol("fragmented control frame"));
    }
    if control && length > 125 {
        return Err(FrameError::Protocol("control frame over 125 bytes"));
    }
    let length = match usize::try_from(length) {
        Ok(length) if length <= limit => length,
        _ => return Err(FrameError::TooBig { limit }),
    };
    if buffer.len() - head < length {
        buffer.reserve(head + length - buffer.len());
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buffer[head - 4..head]);
    buffer.advance(head);
    let mut payload = buffer.split_to(length);
    for (byte, key) in payload.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload,
    }))
}

/// Whether a peer may send `code` in a close frame (RFC 6455 section 7.4; 1004-1006, 1014,
/// 1015 and the unassigned ranges may not).
pub(super) fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            0..=125 => out.push(0x80 | payload.len() as u8),
            126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, k)| b ^ k));
        out
    }

    #[test]
    fn frames_arrive_byte_by_byte_and_back_to_back() {
        let long = vec![b'x'; 70_000];
        let mut wire = frame(0x81, b"Hello");
        wire.extend(frame(0x02, &[1, 2, 3]));
        wire.extend(frame(0x80, &long));
        wire.extend(frame(0x89, b""));
        let mut buffer = BytesMut::new();
        let mut frames = Vec::new();
        for byte in wire {
            buffer.extend_from_slice(&[byte]);
            while let Some(frame) = decode(&mut buffer, 100_000).unwrap() {
                frames.push(frame);
            }
        }
        assert!(buffer.is_empty());
        let seen: Vec<_> = frames
            .iter()
            .map(|f| (f.fin, f.opcode, f.payload.len()))
            .collect();
        assert_eq!(
            seen,
            [
                (true, OpCode::Text, 5),
                (false, OpCode::Binary, 3),
                (true, OpCode::Continuation, 70_000),
                (true, OpCode::Ping, 0),
            ]
        );
        assert_eq!(&frames[0].payload[..], b"Hello");
        assert_eq!(&frames[1].payload[..], [1, 2, 3]);
        assert!(frames[2].payload.iter().all(|&b| b == b'x'));
    }

    #[test]
    fn the_limit_is_checked_from_the_header() {
        let wire = frame(0x82, &[0; 300]);
        let mut buffer = BytesMut::from(&wire[..8]);
        assert_eq!(
            decode(&mut buffer, 299).unwrap_err(),
            FrameError::TooBig { limit: 299 }
        );
        let mut buffer = BytesMut::from(&wire[..]);
        assert!(decode(&mut buffer, 300).unwrap().is_some());
        // A 64-bit length over any limit.
        let mut huge = BytesMut::from(
            &[
                0x82u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
            ][..],
        );
        assert_eq!(
            decode(&mut huge, 1 << 20).unwrap_err(),
            FrameError::TooBig { limit: 1 << 20 }
        );
    }

    #[test]
    fn framing_violations_are_refused() {
        let cases: [(Vec<u8>, &str); 6] = [
            (frame(0xc1, b"x"), "reserved bits set without an extension"),
            (frame(0x83, b"x"), "reserved opcode"),
            (frame(0x8b, b"x"), "reserved opcode"),
            (frame(0x09, b""), "fragmented control frame"),
            (frame(0x89, &[0; 126]), "control frame over 125 bytes"),
            (vec![0x81, 0x01, b'x'], "client frames must be masked"),
        ];
        for (wire, why) in cases {
            let mut buffer = BytesMut::from(&wire[..]);
            assert_eq!(
                decode(&mut buffer, 1000).unwrap_err(),
                FrameError::Protocol(why)
            );
        }
    }

    #[test]
    fn close_codes_follow_rfc_6455() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1011, 1013, 3000, 3999, 4000, 4999,
        ] {
            assert!(close_code_allowed(code), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!close_code_allowed(code), "{code}");
        }
    }
}
