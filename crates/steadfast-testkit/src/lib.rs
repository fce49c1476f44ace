//! Test helpers for steadfast (not published).
//!
//! - [`TestServer`]: the reference server running in-process on a free
//!   loopback port, stopped when dropped.

#[cfg(not(target_arch = "wasm32"))]
mod server;
#[cfg(not(target_arch = "wasm32"))]
pub use server::TestServer;
