//! The wasm-bindgen facade of steadfast: what the npm package in `pkg/`
//! exposes to JavaScript.
//!
//! Today it exports the error codes; the `Steadfast` class (EventTarget,
//! promises that resolve on ACK) arrives with the npm package.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen::prelude::wasm_bindgen;

/// The package version, as built.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen)]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
