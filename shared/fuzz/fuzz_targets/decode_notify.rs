//! Fuzz target: NOTIFY payload decoding must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewire_shared::notify;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(payload) = notify::decode(text) {
            assert_eq!(notify::decode(&payload.encode()).as_ref(), Ok(&payload));
        }
    }
});
