use thiserror::Error as ThisError;

/// Everything that can go wrong in the steadfast client, with a stable
/// machine-readable [`code`](Error::code) for each variant.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
#[non_exhaustive]
pub enum Error {
    /// The URL could not be parsed or uses a scheme other than `ws`/`wss`.
    #[error("invalid WebSocket URL: {0}")]
    InvalidUrl(String),
    /// A header name or value, or a subprotocol, is not valid on the wire.
    #[error("invalid request option: {0}")]
    InvalidOption(String),
    /// The JavaScript runtime has no `WebSocket` and none was passed in.
    #[error(
        "no WebSocket implementation: this JavaScript runtime has no global `WebSocket` \
         (Node.js before 22 needs --experimental-websocket) and no constructor was passed \
         in the connect options (e.g. the `ws` package)"
    )]
    NoWebSocket,
    /// The connection could not be opened (refused, handshake rejected, closed before open).
    #[error("could not connect: {0}")]
    Connect(String),
    /// TLS failed: the options are unusable (a malformed certificate or
    /// key), or the handshake failed (an untrusted or mismatched server
    /// certificate, a client certificate the server refused).
    #[error("TLS: {0}")]
    Tls(String),
    /// The socket is closed or closing; the message was not handed to it.
    #[error("the socket is closed")]
    Closed,
    /// A close code that applications may not send (only 1000 and 3000–4999 are allowed).
    #[error("close code {0} may not be sent by an application (use 1000 or 3000-4999)")]
    InvalidCloseCode(u16),
    /// A close reason longer than the 123 bytes a close frame can carry.
    #[error("close reason is {0} bytes; a close frame carries at most 123")]
    CloseReasonTooLong(usize),
}

impl Error {
    /// A stable code for the error, for logs, metrics and the JavaScript `Error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidUrl(_) => "ERR_INVALID_URL",
            Error::InvalidOption(_) => "ERR_INVALID_OPTION",
            Error::NoWebSocket => "ERR_NO_WEBSOCKET",
            Error::Connect(_) => "ERR_CONNECT",
            Error::Tls(_) => "ERR_TLS",
            Error::Closed => "ERR_CLOSED",
            Error::InvalidCloseCode(_) => "ERR_INVALID_CLOSE_CODE",
            Error::CloseReasonTooLong(_) => "ERR_CLOSE_REASON_TOO_LONG",
        }
    }
}
