use crate::close;
use crate::codec::DecodeError;

/// Something that went wrong inside a session. Each variant has a stable
/// [`code`](EngineError::code) and, when it ends the connection, the
/// [`close_code`](EngineError::close_code) the engine sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A frame could not be decoded.
    #[error("malformed frame: {0}")]
    Decode(DecodeError),
    /// A frame that is valid alone but wrong here.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A seq beyond the reorder window.
    #[error("seq {seq} is beyond the reorder window (delivered {delivered})")]
    SequenceGap {
        /// The offending seq.
        seq: u64,
        /// Delivered so far.
        delivered: u64,
    },
    /// A gap in the sequence was not filled in time.
    #[error("a sequence gap was not filled in time")]
    GapTimeout,
    /// Held bytes would exceed `max_buffered_bytes`.
    #[error("buffered bytes would exceed the limit")]
    BufferLimit,
    /// Too many incomplete chunked messages.
    #[error("too many incomplete chunked messages")]
    PartialLimit,
    /// A chunked message did not complete in time.
    #[error("a chunked message did not complete in time")]
    PartialTimeout,
    /// A text message was not UTF-8.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// The connect or handshake timed out.
    #[error("connect or handshake timed out")]
    ConnectTimeout,
    /// The peer stopped answering the heartbeat.
    #[error("the peer did not answer the heartbeat")]
    DeadPeer,
    /// `Reliability::Required`, and the server did not accept `steadfast.v1`
    /// (or selected it without speaking it).
    #[error("the server does not accept or does not speak the steadfast.v1 subprotocol")]
    SubprotocolRefused,
    /// The server selected `steadfast.v1` but answered HELLO with
    /// something other than WELCOME (an echo, text, garbage): it does not
    /// speak the protocol. `Reliability::Auto` goes on in plain mode with
    /// this as an event (`Required` stops with `SubprotocolRefused`).
    #[error("the server selected the steadfast.v1 subprotocol but does not speak it (its first message was not a WELCOME)")]
    NotSteadfast,
    /// The server rejected the client (close policy: stop).
    #[error("the server rejected the connection (close {code}: {reason})")]
    Rejected {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The auth refresh failed, or the refreshed credentials were rejected again.
    #[error("authorization failed")]
    AuthFailed,
}

impl EngineError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Decode(_) => "ERR_MALFORMED_FRAME",
            EngineError::Protocol(_) => "ERR_PROTOCOL",
            EngineError::SequenceGap { .. } => "ERR_SEQUENCE_GAP",
            EngineError::GapTimeout => "ERR_GAP_TIMEOUT",
            EngineError::BufferLimit => "ERR_BUFFER_LIMIT",
            EngineError::PartialLimit => "ERR_PARTIAL_LIMIT",
            EngineError::PartialTimeout => "ERR_PARTIAL_TIMEOUT",
            EngineError::InvalidUtf8 => "ERR_INVALID_UTF8",
            EngineError::ConnectTimeout => "ERR_CONNECT_TIMEOUT",
            EngineError::DeadPeer => "ERR_DEAD_PEER",
            EngineError::SubprotocolRefused => "ERR_SUBPROTOCOL_REFUSED",
            EngineError::NotSteadfast => "ERR_NOT_STEADFAST",
            EngineError::Rejected { .. } => "ERR_REJECTED",
            EngineError::AuthFailed => "ERR_AUTH_FAILED",
        }
    }

    /// The close code the engine sends for this error (docs/PROTOCOL.md §8).
    pub fn close_code(&self) -> u16 {
        match self {
            EngineError::Decode(DecodeError::TooLarge { .. }) => close::LIMIT_EXCEEDED,
            EngineError::Decode(DecodeError::UnsupportedVersion(_)) => close::UNSUPPORTED_VERSION,
            EngineError::Decode(_) | EngineError::Protocol(_) => close::PROTOCOL_ERROR,
            EngineError::BufferLimit | EngineError::PartialLimit => close::LIMIT_EXCEEDED,
            EngineError::SequenceGap { .. } | EngineError::GapTimeout => close::SEQUENCE_GAP,
            EngineError::DeadPeer => close::DEAD_PEER,
            EngineError::PartialTimeout => close::PARTIAL_TIMEOUT,
            EngineError::ConnectTimeout => close::CONNECT_TIMEOUT,
            EngineError::InvalidUtf8 => close::INVALID_UTF8,
            EngineError::SubprotocolRefused
            | EngineError::NotSteadfast
            | EngineError::Rejected { .. }
            | EngineError::AuthFailed => close::NORMAL,
        }
    }
}

/// Why `send` refused a message (nothing was queued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The outbox is full and the overflow policy is `Reject` (or nothing
    /// could be dropped).
    #[error("the outbox is full ({messages} messages, {bytes} bytes)")]
    QueueFull {
        /// Messages queued.
        messages: usize,
        /// Bytes queued.
        bytes: usize,
    },
    /// The message is larger than the limit.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl SendError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SendError::QueueFull { .. } => "ERR_QUEUE_FULL",
            SendError::TooLarge { .. } => "ERR_MESSAGE_TOO_LARGE",
        }
    }
}
