//! steadfast-core: the sans-IO delivery engine of steadfast.
//!
//! No sockets, no clock, no randomness of its own (quinn-proto and str0m are
//! the models): the driver feeds inputs — WebSocket messages, the time, hints
//! from the host — into an [`Engine`] and drains its [`Output`]s. Everything
//! that decides anything lives here and is tested here, deterministically.
//!
//! - [`codec`]: protocol v1 frames (docs/PROTOCOL.md), a decoder that never
//!   panics and bounds every allocation.
//! - [`Engine`]: connection lifecycle (backoff with full jitter after the cap,
//!   close-code policy, hints, heartbeat), the outbox (bounds, TTL, overflow,
//!   persistence ops, restore), and the reliable session (seqs assigned at
//!   enqueue, coalesced cumulative ACKs, dedup, a bounded reorder window,
//!   chunking, resume, resync).
//! - [`record`]: the bytes a store keeps.
//!
//! ```
//! use steadfast_core::{Config, Engine, Output, Payload};
//!
//! let mut client = Engine::client(Config::default(), 42).expect("valid config");
//! client.connect(0);
//! let receipt = client.send(0, 1_700_000_000_000, Payload::from("hello")).expect("queued");
//! while let Some(output) = client.poll_output() {
//!     match output {
//!         Output::Connect { offer_reliable } => assert!(offer_reliable), // open a socket
//!         Output::Persist(_op) => {}       // write to the store before going on
//!         Output::Event(_event) => {}      // tell the application (after the drain)
//!         Output::Timeout(_at) => break,   // sleep until `at` or the next input
//!         _ => {}
//!     }
//! }
//! # let _ = receipt;
//! ```

#![forbid(unsafe_code)]

pub mod close;
pub mod codec;
mod config;
mod engine;
mod error;
mod inbound;
pub mod inflow;
mod outbox;
pub mod record;
mod rng;
pub mod route;
mod seqmap;
mod timer;
mod types;

pub use codec::{SessionId, SUBPROTOCOL};
pub use config::{
    AckConfig, BackoffConfig, CloseAction, ClosePolicy, ClosePredicate, Config, ConfigError,
    HeartbeatConfig, Limits, OutboxConfig, Overflow, Reliability,
};
pub use engine::Engine;
pub use error::{EngineError, SendError};
pub use rng::Rng;
pub use seqmap::SeqMap;
pub use types::{
    DisconnectReason, Event, FailReason, Hint, Mode, Output, Payload, PersistOp, Receipt, State,
    Stats, StopReason, SuspendReason, Transmit,
};
