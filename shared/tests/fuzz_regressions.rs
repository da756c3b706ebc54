//! Replays every input under `shared/fuzz/crashers/<target>/` through the checks of the
//! matching fuzz target (no panic; what decodes round-trips), so fuzz findings stay fixed.
#![cfg(not(target_family = "wasm"))]

use std::path::Path;

use tidewire_shared::cursor::Cursor;
use tidewire_shared::message::{decode_client, decode_server};
use tidewire_shared::{notify, DecodeLimits};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/crashers")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).expect("readable input"))
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no regression inputs for {target}");
    inputs
}

#[test]
fn decode_client_regressions() {
    let limits = DecodeLimits::default();
    for (name, input) in inputs("decode_client") {
        if let Ok(message) = decode_client(&input, &limits) {
            assert_eq!(
                decode_client(message.encode().as_bytes(), &limits),
                Ok(message),
                "{name}"
            );
        }
    }
}

#[test]
fn decode_server_regressions() {
    let limits = DecodeLimits::default();
    for (name, input) in inputs("decode_server") {
        if let Ok(message) = decode_server(&input, &limits) {
            assert_eq!(
                decode_server(message.encode().as_bytes(), &limits),
                Ok(message),
                "{name}"
            );
        }
    }
}

#[test]
fn decode_notify_regressions() {
    for (name, input) in inputs("decode_notify") {
        if let Ok(text) = std::str::from_utf8(&input) {
            if let Ok(payload) = notify::decode(text) {
                assert_eq!(notify::decode(&payload.encode()), Ok(payload), "{name}");
            }
        }
    }
}

#[test]
fn decode_cursor_regressions() {
    for (name, input) in inputs("decode_cursor") {
        if let Ok(text) = std::str::from_utf8(&input) {
            if let Ok(cursor) = Cursor::decode(text) {
                assert_eq!(cursor.encode(), text, "{name}");
            }
        }
    }
}
