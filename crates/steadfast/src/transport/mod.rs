//! The transport layer: one WebSocket connection, nothing more.
//!
//! [`Socket`] opens a connection, sends and receives text and binary messages
//! and reports errors and the close (with its code and reason) as
//! [`SocketEvent`]s. It has the same API on every target:
//!
//! - native: tokio-tungstenite (a tokio runtime must be running);
//! - wasm32: `web_sys::WebSocket` with `binaryType = "arraybuffer"`, in a
//!   browser page, a worker or Node.js. In Node.js the global `WebSocket` is
//!   used, or the constructor passed in [`ConnectOptions::constructor`]; with
//!   neither, [`Socket::connect`] fails with [`Error::NoWebSocket`].
//!
//! Reconnecting, queueing and delivery guarantees are *not* done here: they
//! are decided by `steadfast-core` and driven by the client on top.

use steadfast_core::close;

use crate::queue;

use crate::Error;

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(not(target_arch = "wasm32"))]
mod tls;
#[cfg(not(target_arch = "wasm32"))]
use native as imp;
#[cfg(not(target_arch = "wasm32"))]
pub use tls::TlsOptions;

#[cfg(target_arch = "wasm32")]
mod web;
#[cfg(target_arch = "wasm32")]
use web as imp;

/// One WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (UTF-8).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Message {
    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(text) => text.len(),
            Message::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code: the peer's, or 1005 (no code sent) or 1006 (the
    /// connection dropped without a close frame).
    pub code: u16,
    /// The close reason the peer sent (may be empty).
    pub reason: String,
    /// Whether the closing handshake completed.
    pub was_clean: bool,
}

impl CloseInfo {
    /// The close reported when the connection dropped without a close frame.
    pub fn abnormal(reason: impl Into<String>) -> Self {
        CloseInfo {
            code: close::ABNORMAL,
            reason: reason.into(),
            was_clean: false,
        }
    }
}

/// What a [`Socket`] reports after it opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketEvent {
    /// A message from the peer.
    Message(Message),
    /// A transport error. A [`SocketEvent::Closed`] always follows.
    Error(String),
    /// The connection is closed; no event follows.
    Closed(CloseInfo),
}

/// Options for [`Socket::connect`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Subprotocols offered in `Sec-WebSocket-Protocol`, in order of preference.
    pub protocols: Vec<String>,
    /// Extra HTTP headers for the handshake (native only: browsers do not
    /// allow them, and the wasm32 transport refuses them).
    pub headers: Vec<(String, String)>,
    /// How `wss://` verifies the server and identifies the client (native
    /// only: browsers decide this themselves).
    #[cfg(not(target_arch = "wasm32"))]
    pub tls: TlsOptions,
    /// WebSocket read buffer (native; default 4 KiB — tungstenite's own
    /// default of 128 KiB makes an idle connection cost ~130 KiB).
    #[cfg(not(target_arch = "wasm32"))]
    pub read_buffer_size: Option<usize>,
    /// WebSocket write buffer (native; default 4 KiB).
    #[cfg(not(target_arch = "wasm32"))]
    pub write_buffer_size: Option<usize>,
    /// A `WebSocket` constructor to use instead of the global one (for
    /// Node.js before 22, e.g. the `ws` package's `WebSocket`).
    #[cfg(target_arch = "wasm32")]
    pub constructor: Option<js_sys::Function>,
}

impl ConnectOptions {
    /// Offer these subprotocols.
    pub fn protocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Add an HTTP header to the handshake request (native only).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// TLS settings for `wss://` URLs.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Use this `WebSocket` constructor instead of the global one.
    #[cfg(target_arch = "wasm32")]
    pub fn constructor(mut self, constructor: js_sys::Function) -> Self {
        self.constructor = Some(constructor);
        self
    }
}

/// An open WebSocket connection.
///
/// Dropping the socket closes the connection with code 1000.
#[derive(Debug)]
pub struct Socket {
    inner: imp::Inner,
    events: queue::Receiver<SocketEvent>,
    protocol: Option<String>,
    closed: bool,
}

impl Socket {
    /// Open a connection to `url` and wait until it is open.
    ///
    /// Fails with [`Error::InvalidUrl`], [`Error::InvalidOption`],
    /// [`Error::NoWebSocket`] (wasm32), [`Error::Tls`] (native: unusable TLS
    /// options, or the TLS handshake failed) or [`Error::Connect`] when the
    /// connection is refused, the handshake is rejected or the connection
    /// closes before it opened.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Socket, Error> {
        validate_url(url)?;
        let opened = imp::connect(url, options).await?;
        Ok(Socket {
            inner: opened.inner,
            events: opened.events,
            protocol: opened.protocol,
            closed: false,
        })
    }

    /// The subprotocol the server accepted, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Hand a message to the socket.
    ///
    /// Fails with [`Error::Closed`] once the socket is closing or closed.
    pub fn send(&self, message: Message) -> Result<(), Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        self.inner.send(message)
    }

    /// Bytes handed to [`Socket::send`] that the socket has not yet written
    /// to the network (the browser's `bufferedAmount`; natively, what the
    /// writer task has not yet flushed).
    pub fn buffered_amount(&self) -> usize {
        self.inner.buffered_amount()
    }

    /// Ready once at most `low` bytes wait to be written; `None` where
    /// nothing reports it (the browser: look at `buffered_amount` again later).
    pub(crate) fn poll_below(
        &self,
        cx: &mut std::task::Context<'_>,
        low: usize,
    ) -> Option<std::task::Poll<()>> {
        self.inner.poll_below(cx, low)
    }

    /// Start the closing handshake with `code` and `reason`.
    ///
    /// Applications may send 1000 or 3000–4999, and a reason of at most
    /// 123 bytes. A [`SocketEvent::Closed`] follows when the handshake ends.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        validate_close(code, reason)?;
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.inner.close(code, reason);
        Ok(())
    }

    /// The next event, or `None` after [`SocketEvent::Closed`] was returned.
    pub async fn next_event(&mut self) -> Option<SocketEvent> {
        futures::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// [`Socket::next_event`] as a poll.
    pub(crate) fn poll_event(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<SocketEvent>> {
        let polled = self.events.poll_next(cx);
        self.note_closed(polled)
    }

    /// The next event if one is already there (no wake-up is registered).
    pub(crate) fn try_event(&mut self) -> std::task::Poll<Option<SocketEvent>> {
        let polled = self.events.try_next();
        self.note_closed(polled)
    }

    fn note_closed(
        &mut self,
        polled: std::task::Poll<Option<SocketEvent>>,
    ) -> std::task::Poll<Option<SocketEvent>> {
        if let std::task::Poll::Ready(Some(SocketEvent::Closed(_))) = &polled {
            self.closed = true;
            self.events.close();
        }
        polled
    }
}

/// Refuse, before any connect, what this target's transport cannot do:
/// on wasm32 headers (also a header-placed auth token) and a missing
/// `WebSocket`; natively nothing.
pub(crate) fn check_options(options: &ConnectOptions, header_auth: bool) -> Result<(), Error> {
    imp::check_options(options, header_auth)
}

/// Only `ws://` and `wss://` URLs with a host are accepted, on every target.
pub(crate) fn validate_url(url: &str) -> Result<(), Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::InvalidUrl(format!("{url:?} is not an absolute URL")))?;
    if !scheme.eq_ignore_ascii_case("ws") && !scheme.eq_ignore_ascii_case("wss") {
        return Err(Error::InvalidUrl(format!(
            "scheme {scheme:?} is not ws or wss"
        )));
    }
    if rest.is_empty() || rest.starts_with('/') {
        return Err(Error::InvalidUrl(format!("{url:?} has no host")));
    }
    Ok(())
}

/// Check a close code and reason the application wants to send.
pub fn validate_close(code: u16, reason: &str) -> Result<(), Error> {
    if !close::is_sendable(code) {
        return Err(Error::InvalidCloseCode(code));
    }
    if reason.len() > close::MAX_REASON_BYTES {
        return Err(Error::CloseReasonTooLong(reason.len()));
    }
    Ok(())
}

/// What a target's `connect` hands back.
struct Opened {
    inner: imp::Inner,
    events: queue::Receiver<SocketEvent>,
    protocol: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ws_and_wss_urls_with_a_host_are_accepted() {
        assert_eq!(validate_url("ws://127.0.0.1:9000/x"), Ok(()));
        assert_eq!(validate_url("WSS://example.test"), Ok(()));
        for bad in [
            "http://127.0.0.1/",
            "127.0.0.1:9000",
            "",
            "ws://",
            "ws:///path",
        ] {
            let error = validate_url(bad).expect_err(bad);
            assert_eq!(error.code(), "ERR_INVALID_URL", "{bad}");
        }
    }

    #[test]
    fn close_codes_follow_the_websocket_rules() {
        assert_eq!(validate_close(1000, ""), Ok(()));
        assert_eq!(validate_close(3000, "x"), Ok(()));
        assert_eq!(validate_close(4999, ""), Ok(()));
        assert_eq!(validate_close(1001, ""), Err(Error::InvalidCloseCode(1001)));
        assert_eq!(validate_close(2999, ""), Err(Error::InvalidCloseCode(2999)));
        assert_eq!(validate_close(5000, ""), Err(Error::InvalidCloseCode(5000)));
        let long = "é".repeat(62);
        assert_eq!(
            validate_close(1000, &long),
            Err(Error::CloseReasonTooLong(124))
        );
        assert_eq!(validate_close(1000, &"a".repeat(123)), Ok(()));
    }
}
