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
    /// The server answered the WebSocket upgrade with an HTTP error status
    /// (401 or 403: it wants credentials; native only, browsers do not
    /// show the status).
    #[error("the server rejected the handshake with HTTP {status}")]
    HandshakeRejected {
        /// The HTTP status code.
        status: u16,
    },
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
    /// The client's settings contradict each other.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The outbox is full and the overflow policy is `Reject`.
    #[error("the outbox is full ({messages} messages, {bytes} bytes)")]
    QueueFull {
        /// Messages queued.
        messages: usize,
        /// Bytes queued.
        bytes: usize,
    },
    /// The message is larger than the message size limit or the outbox.
    #[error("a message of {size} bytes is above the limit of {limit}")]
    MessageTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The message's TTL passed before the server acknowledged it.
    #[error("the message expired before it was acknowledged")]
    Expired {
        /// It went on the wire at least once, so the server may have it.
        possibly_delivered: bool,
    },
    /// The message was dropped to make room (overflow `DropOldest`).
    #[error("the message was dropped to make room in the outbox")]
    Dropped {
        /// It went on the wire at least once, so the server may have it.
        possibly_delivered: bool,
    },
    /// The store failed; the client keeps messages in memory from now on.
    #[error("{0}")]
    Store(String),
    /// The store held records that could not be read (corrupt, or in an
    /// unknown format) when the client started: they were skipped, and
    /// whatever messages they held are lost.
    #[error("the store held {0} unreadable record(s); they were skipped")]
    UnreadableRecords(usize),
    /// The auth hook failed.
    #[error("the auth hook failed: {0}")]
    AuthHook(String),
    /// The peer broke the protocol, a limit was hit, or a timeout passed;
    /// the connection was closed (and is retried). `code` is the engine's
    /// (e.g. `ERR_GAP_TIMEOUT`).
    #[error("{message}")]
    Protocol {
        /// The engine's error code.
        code: &'static str,
        /// What happened.
        message: String,
    },
}

impl Error {
    /// A stable code for the error, for logs, metrics and the JavaScript `Error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidUrl(_) => "ERR_INVALID_URL",
            Error::InvalidOption(_) => "ERR_INVALID_OPTION",
            Error::NoWebSocket => "ERR_NO_WEBSOCKET",
            Error::Connect(_) => "ERR_CONNECT",
            Error::HandshakeRejected { .. } => "ERR_HANDSHAKE_REJECTED",
            Error::Tls(_) => "ERR_TLS",
            Error::Closed => "ERR_CLOSED",
            Error::InvalidCloseCode(_) => "ERR_INVALID_CLOSE_CODE",
            Error::CloseReasonTooLong(_) => "ERR_CLOSE_REASON_TOO_LONG",
            Error::InvalidConfig(_) => "ERR_INVALID_CONFIG",
            Error::QueueFull { .. } => "ERR_QUEUE_FULL",
            Error::MessageTooLarge { .. } => "ERR_MESSAGE_TOO_LARGE",
            Error::Expired { .. } => "ERR_EXPIRED",
            Error::Dropped { .. } => "ERR_DROPPED",
            Error::Store(_) => "ERR_STORE",
            Error::UnreadableRecords(_) => "ERR_STORE_UNREADABLE",
            Error::AuthHook(_) => "ERR_AUTH_HOOK",
            Error::Protocol { code, .. } => code,
        }
    }
}
