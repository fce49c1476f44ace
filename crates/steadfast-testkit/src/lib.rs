//! Test helpers for steadfast (not published).
//!
//! - [`sim`]: a deterministic simulation of a client and a server engine on
//!   a seeded emulated network, with a virtual clock.
//! - `EngineClient` (native): a client engine driven over tokio-tungstenite,
//!   with an abrupt `cut()`, for testing the server.
//! - `pki` (native): a CA made in the test, issuing server and client
//!   certificates for TLS and mTLS tests.
//! - `ChaosProxy` (native): a seeded TCP proxy cutting connections at
//!   random byte offsets.
//! - `Recorder` (native): a server application that echoes and records.
//! - `TestServer` (native): the reference server running in-process on a free
//!   loopback port, stopped when dropped.

pub mod sim;

#[cfg(not(target_arch = "wasm32"))]
mod driver;
#[cfg(not(target_arch = "wasm32"))]
pub use driver::EngineClient;
#[cfg(not(target_arch = "wasm32"))]
mod server;
#[cfg(not(target_arch = "wasm32"))]
pub use server::TestServer;
#[cfg(not(target_arch = "wasm32"))]
pub mod pki;
#[cfg(not(target_arch = "wasm32"))]
mod proxy;
#[cfg(not(target_arch = "wasm32"))]
pub use proxy::ChaosProxy;
#[cfg(not(target_arch = "wasm32"))]
mod front;
#[cfg(not(target_arch = "wasm32"))]
pub use front::Front;
#[cfg(not(target_arch = "wasm32"))]
mod redis;
#[cfg(not(target_arch = "wasm32"))]
pub use redis::RedisServer;
#[cfg(not(target_arch = "wasm32"))]
mod recorder;
#[cfg(not(target_arch = "wasm32"))]
pub use recorder::Recorder;

/// Poll `done` every few milliseconds until it holds; panics naming `what`
/// after `timeout` (a generous bound, never a measurement).
#[cfg(not(target_arch = "wasm32"))]
pub async fn eventually(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(timeout, async {
        while !done() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// A loopback server that answers the first request with an HTTP error
/// (`401 Unauthorized`, …) instead of the WebSocket upgrade; its address.
#[cfg(not(target_arch = "wasm32"))]
pub async fn http_error_server(status_line: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let mut head = [0u8; 4096];
        let _ = tcp.read(&mut head).await;
        let answer = format!("HTTP/1.1 {status_line}\r\nContent-Length: 0\r\n\r\n");
        let _ = tcp.write_all(answer.as_bytes()).await;
    });
    addr
}
