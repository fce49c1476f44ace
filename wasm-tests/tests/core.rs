//! steadfast-core's own test files (and the testkit's simulation), compiled
//! to wasm32 and run in Node: the engine must behave the same on every target.
#![cfg(target_arch = "wasm32")]

#[path = "../../crates/steadfast-core/tests/backoff.rs"]
mod backoff;
#[path = "../../crates/steadfast-core/tests/codec.rs"]
mod codec;
#[path = "../../crates/steadfast-core/tests/engine.rs"]
mod engine;
#[path = "../../crates/steadfast-testkit/tests/simulation.rs"]
mod simulation;
