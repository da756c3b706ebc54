//! Fuzz target: server message decoding must never panic, and what decodes re-encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewire_shared::message::decode_server;
use tidewire_shared::DecodeLimits;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode_server(data, &DecodeLimits::default()) {
        let encoded = message.encode();
        assert!(!encoded.contains('\n'));
        let again = decode_server(encoded.as_bytes(), &DecodeLimits::default());
        assert_eq!(again.as_ref(), Ok(&message));
    }
});
