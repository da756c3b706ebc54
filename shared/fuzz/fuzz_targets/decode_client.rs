//! Fuzz target: client message decoding must never panic, and what decodes re-encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewire_shared::message::decode_client;
use tidewire_shared::DecodeLimits;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode_client(data, &DecodeLimits::default()) {
        let again = decode_client(message.encode().as_bytes(), &DecodeLimits::default());
        assert_eq!(again.as_ref(), Ok(&message));
    }
});
