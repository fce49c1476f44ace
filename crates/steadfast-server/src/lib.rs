//! The steadfast reference server.
//!
//! Today it is an echo server on loopback: every text and binary message comes
//! back unchanged. It grows into the protocol peer (sessions, resume, rooms).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let server = steadfast_server::Server::bind("127.0.0.1:0".parse().unwrap()).await?;
//! println!("listening on ws://{}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Echo commands
//!
//! A text message of the form `steadfast-echo:close:<code>:<reason>` is not
//! echoed: the server closes the connection with that code and reason. Tests
//! use it to check how clients report a server-initiated close.
//!
//! A text message `steadfast-echo:header:<name>` is answered with the value of
//! that handshake request header (empty if absent), so clients can check what
//! they sent.
//!
//! # Subprotocols
//!
//! The server accepts the first offered subprotocol it knows
//! ([`ECHO_PROTOCOL`]) and none otherwise.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

/// The subprotocol the echo server accepts when a client offers it.
pub const ECHO_PROTOCOL: &str = "steadfast.echo";

/// Prefix of the text command that makes the server close the connection.
pub const CLOSE_COMMAND: &str = "steadfast-echo:close:";

/// Prefix of the text command that asks for a handshake header's value.
pub const HEADER_COMMAND: &str = "steadfast-echo:header:";

/// Close code sent to every client when the server shuts down.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// How long shutdown waits for clients to finish the closing handshake.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A bound, not yet running, server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Server {
    /// Bind to `addr` (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Server {
            listener,
            local_addr,
        })
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serve until `shutdown` completes, then close every connection with
    /// 1001 (going away) and wait briefly for the closing handshakes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(stream, peer, stop_rx.clone()));
                    }
                    // Out of file descriptors and the like: wait, then try again.
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                // Reap finished connections so the set does not grow forever.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            connections.abort_all();
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, mut stop: watch::Receiver<bool>) {
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let mut headers = Vec::new();
    // tungstenite's callback type fixes the large error type.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        headers = request
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        select_protocol(request, response)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await;
    let mut ws = match ws {
        Ok(ws) => ws,
        Err(error) => {
            tracing::debug!(%peer, %error, "handshake failed");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = ws.close(Some(CloseFrame {
                    code: CloseCode::from(CLOSE_GOING_AWAY),
                    reason: "server shutting down".into(),
                })).await;
                // Let the client answer the close; the loop ends when it does.
                while let Some(Ok(_)) = ws.next().await {}
                return;
            }
            message = ws.next() => {
                let reply = match message {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(frame) = close_command(text.as_str()) {
                            let _ = ws.close(Some(frame)).await;
                            continue;
                        }
                        match text.as_str().strip_prefix(HEADER_COMMAND) {
                            Some(name) => Message::Text(header_value(&headers, name).into()),
                            None => Message::Text(text),
                        }
                    }
                    Some(Ok(Message::Binary(bytes))) => Message::Binary(bytes),
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => {
                        tracing::debug!(%peer, %error, "connection error");
                        return;
                    }
                    None => return,
                };
                if ws.send(reply).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[allow(clippy::result_large_err)] // the signature is tungstenite's callback type
fn select_protocol(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offered = request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    if offered.into_iter().any(|p| p == ECHO_PROTOCOL) {
        response.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(ECHO_PROTOCOL),
        );
    }
    Ok(response)
}

/// The value of a request header (case-insensitive name), or "".
fn header_value(headers: &[(String, String)], name: &str) -> String {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Parse `steadfast-echo:close:<code>:<reason>`; `None` for anything else.
fn close_command(text: &str) -> Option<CloseFrame> {
    let rest = text.strip_prefix(CLOSE_COMMAND)?;
    let (code, reason) = rest.split_once(':').unwrap_or((rest, ""));
    let code: u16 = code.parse().ok()?;
    Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_command_parses_code_and_reason() {
        let frame =
            close_command("steadfast-echo:close:4001:auth: expired").expect("valid command");
        assert_eq!(u16::from(frame.code), 4001);
        assert_eq!(frame.reason.as_str(), "auth: expired");
        let frame = close_command("steadfast-echo:close:1000").expect("valid command");
        assert_eq!(u16::from(frame.code), 1000);
        assert_eq!(frame.reason.as_str(), "");
        assert!(close_command("steadfast-echo:close:abc:x").is_none());
        assert!(close_command("hello").is_none());
    }
}
