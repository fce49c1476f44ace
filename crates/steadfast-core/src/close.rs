//! The WebSocket close codes steadfast sends or acts on, and the close
//! frame's reason limit: every one in one place (docs/PROTOCOL.md lists
//! them with their meaning). Codes 1000–1015 keep their RFC 6455 meaning.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The endpoint is going away (the reference server shuts down).
pub const GOING_AWAY: u16 = 1001;
/// The close frame carried no status code (never sent).
pub const NO_STATUS: u16 = 1005;
/// The connection was lost without a close frame (never sent).
pub const ABNORMAL: u16 = 1006;
/// A message was too big: the client halves its chunk size.
pub const TOO_BIG: u16 = 1009;
/// The server hit an unexpected condition (a bug).
pub const INTERNAL_ERROR: u16 = 1011;
/// Overloaded: try again later.
pub const OVERLOADED: u16 = 1013;
/// The credentials were missing or refused: refresh them once.
pub const UNAUTHORIZED: u16 = 4001;
/// Protocol error: a malformed or unexpected frame.
pub const PROTOCOL_ERROR: u16 = 4900;
/// A size limit was exceeded.
pub const LIMIT_EXCEEDED: u16 = 4901;
/// A sequence gap beyond the reorder window, or one not filled in time.
pub const SEQUENCE_GAP: u16 = 4902;
/// The heartbeat found the peer dead.
pub const DEAD_PEER: u16 = 4903;
/// A chunked message did not complete in time.
pub const PARTIAL_TIMEOUT: u16 = 4904;
/// The protocol version is not supported.
pub const UNSUPPORTED_VERSION: u16 = 4905;
/// The handshake did not complete in time.
pub const CONNECT_TIMEOUT: u16 = 4906;
/// Closed because the host went offline.
pub const OFFLINE: u16 = 4907;
/// A text payload was not valid UTF-8.
pub const INVALID_UTF8: u16 = 4908;
/// Another connection took this session over.
pub const SUPERSEDED: u16 = 4909;

/// The longest close reason a close frame carries, in bytes (125 bytes of
/// control-frame payload less the 2-byte code).
pub const MAX_REASON_BYTES: usize = 123;

/// Whether an application may send `code` (1000, or 3000–4999; browsers
/// throw on any other).
pub fn is_sendable(code: u16) -> bool {
    code == NORMAL || (3000..=4999).contains(&code)
}

/// `reason` cut to at most [`MAX_REASON_BYTES`], on a character boundary.
pub fn truncate_reason(reason: &mut String) {
    if reason.len() <= MAX_REASON_BYTES {
        return;
    }
    let end = (0..=MAX_REASON_BYTES)
        .rev()
        .find(|&i| reason.is_char_boundary(i))
        .unwrap_or(0);
    reason.truncate(end);
}
