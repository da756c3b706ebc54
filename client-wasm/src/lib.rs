//! Tidewire browser client (npm package `tidewire`), built with wasm-bindgen.
