//! steadfast: a WebSocket client that never loses, duplicates or reorders a
//! message across disconnects, page reloads and process restarts.
//!
//! This crate is the Rust client. Everything that *decides* lives in
//! [`steadfast_core`] (a sans-IO engine); this crate only moves bytes and time
//! in and out of it. The target-specific pieces are confined to
//! [`transport`] (tokio-tungstenite natively, `web_sys::WebSocket` on wasm32).
//!
//! Today the crate offers the raw transport layer; the reliable client built
//! on the engine grows on top of it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), steadfast::Error> {
//! use steadfast::transport::{ConnectOptions, Message, Socket, SocketEvent};
//!
//! let mut socket = Socket::connect("ws://127.0.0.1:9000", &ConnectOptions::default()).await?;
//! socket.send(Message::Text("hello".into()))?;
//! while let Some(event) = socket.next_event().await {
//!     match event {
//!         SocketEvent::Message(msg) => println!("got {msg:?}"),
//!         SocketEvent::Error(err) => eprintln!("transport error: {err}"),
//!         SocketEvent::Closed(close) => {
//!             println!("closed with {} {:?}", close.code, close.reason);
//!             break;
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod error;
pub mod transport;

pub use error::Error;
