//! Fuzz target: SSE cursor decoding must never panic, and decoded cursors are canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewire_shared::cursor::Cursor;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cursor) = Cursor::decode(text) {
            assert_eq!(cursor.encode(), text);
        }
    }
});
