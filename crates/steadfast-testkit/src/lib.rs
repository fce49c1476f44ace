//! Test helpers for steadfast (not published).
//!
//! - [`sim`]: a deterministic simulation of a client and a server engine on
//!   a seeded emulated network, with a virtual clock.
//! - `TestServer` (native): the reference server running in-process on a free
//!   loopback port, stopped when dropped.

pub mod sim;

#[cfg(not(target_arch = "wasm32"))]
mod server;
#[cfg(not(target_arch = "wasm32"))]
pub use server::TestServer;
