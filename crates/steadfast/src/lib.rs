//! steadfast: a WebSocket client that never loses, duplicates or reorders a
//! message across disconnects, page reloads and process restarts.
//!
//! This crate is the Rust client. Everything that *decides* lives in
//! [`steadfast_core`] (a sans-IO engine); this crate only moves bytes and time
//! in and out of it. The target-specific pieces are confined to
//! [`transport`] (tokio-tungstenite natively, `web_sys::WebSocket` on wasm32).
//!
//! [`Client`] (native and wasm32) is the reliable client: it
//! reconnects with backoff and jitter, keeps an outbox in a [`store`]
//! (memory, or a crash-safe [`store::DurableStore`]), and in reliable mode
//! (`steadfast.v1`, spoken by the reference server) delivers every message
//! exactly once and in order in both directions, across disconnects and
//! restarts. Against any other server it falls back to plain WebSocket
//! with reconnects and the offline queue.
//!
//! ```no_run
//! # async fn demo() -> Result<(), steadfast::Error> {
//! use steadfast::store::DurableStore;
//! use steadfast::{Client, ClientEvent};
//!
//! let client = Client::builder("ws://127.0.0.1:9000")
//!     .store(DurableStore::open("outbox.redb")?)
//!     .connect()
//!     .await?;
//! let receipt = client.send("hello").await?; // on disk: survives kill -9
//! receipt.await?;                              // the server's application has it
//! while let Some(event) = client.next_event().await {
//!     match event {
//!         ClientEvent::Message(message) => println!("got {message:?}"),
//!         ClientEvent::State(state) => eprintln!("{state:?}"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`transport::Socket`] is the raw layer underneath: one WebSocket
//! connection, nothing more, with the same API on every target.

mod client;
mod driver;
mod error;
mod ledger;
mod queue;
mod rt;
pub mod store;
#[cfg(test)]
mod testing;
pub mod transport;
mod watch;

pub use client::{
    AuthPlacement, AuthResult, Client, ClientBuilder, ClientEvent, ClientStats, ConnectionState,
    Delivery, QueuedMessage, Receipt, SendOverflow,
};
pub use error::Error;
/// The close codes steadfast sends or acts on.
pub use steadfast_core::close;
/// The engine's settings and vocabulary, re-exported.
pub use steadfast_core::{
    AckConfig, BackoffConfig, CloseAction, ClosePolicy, Config, DisconnectReason, HeartbeatConfig,
    Hint, Limits, Mode, OutboxConfig, Payload, Reliability, Stats, StopReason, SuspendReason,
};
