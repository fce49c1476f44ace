//! The wasm-bindgen facade of steadfast: what the npm package in `pkg/`
//! is built from.
//!
//! The public JavaScript API (the `Steadfast` class, an `EventTarget`) is
//! written in JavaScript in `pkg/src/`; it drives the [`Core`] exported
//! here, which wraps a [`steadfast::Client`]. Everything that decides runs
//! in Rust; the JavaScript side turns values into events, promises and
//! `Error` subclasses.
//!
//! Re-entrancy: the client's task owns the engine; events reach JavaScript
//! from a separate task after the engine released them, so a listener
//! may call `send`, `close` or `reconnect` (they only queue commands).

/// The package version, as built.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen::prelude::wasm_bindgen)]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(target_arch = "wasm32")]
pub use wasm::{open, Core};
