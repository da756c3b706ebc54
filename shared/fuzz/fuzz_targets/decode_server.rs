//! Fuzz target: server message decoding must never panic, what decodes re-encodes, and the
//! clients' decoding (data kept as text) takes the same inputs and reads the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewire_shared::message::{decode_server, decode_server_json};
use tidewire_shared::{DecodeLimits, ServerMessage};

fuzz_target!(|data: &[u8]| {
    let text = decode_server_json(data, &DecodeLimits::default());
    if let Ok(message) = decode_server(data, &DecodeLimits::default()) {
        let encoded = message.encode();
        assert!(!encoded.contains('\n'));
        let again = decode_server(encoded.as_bytes(), &DecodeLimits::default());
        assert_eq!(again.as_ref(), Ok(&message));
        match (&message, text) {
            (ServerMessage::Event(tree), Ok(ServerMessage::Event(text))) => {
                assert_eq!(tree, &text.map_data(|data| data.to_value()));
            }
            (_, text) => assert!(text.is_ok()),
        }
    }
});
