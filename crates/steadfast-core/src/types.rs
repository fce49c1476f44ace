//! The engine's plain-data inputs and outputs.

use crate::record::{StoredMessage, StoredSession};

/// An application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Binary(Vec<u8>),
}

impl Payload {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Text(t) => t.len(),
            Payload::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn into_parts(self) -> (bool, Vec<u8>) {
        match self {
            Payload::Text(t) => (false, t.into_bytes()),
            Payload::Binary(b) => (true, b),
        }
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Self {
        Payload::Text(text.to_owned())
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Self {
        Payload::Text(text)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload::Binary(bytes)
    }
}

/// Identifies one `send` until it resolves (`Acked`, `Sent` or `Failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Receipt(pub u64);

/// Hints from the host environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// The host lost its network (`offline`): close now, wait for `Online`.
    Offline,
    /// The network is back (`online`): reconnect now.
    Online,
    /// The page became visible (`visibilitychange`): reconnect or probe now.
    Visible,
    /// The page was hidden.
    Hidden,
    /// The page was restored from the back/forward cache (`pageshow`).
    PageShow,
}

/// How messages are carried on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// steadfast.v1: seqs, ACKs, resume.
    Reliable,
    /// Messages as they are; no guarantee beyond "handed to the socket".
    Plain,
}

/// Why the engine is not connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The peer or the network closed the connection.
    Closed {
        /// Close code (1006 when the connection dropped).
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The connect or handshake took too long.
    ConnectTimeout,
    /// The peer stopped answering.
    DeadPeer,
    /// The engine closed the connection over a protocol problem.
    ProtocolError {
        /// The close code it sent.
        code: u16,
    },
    /// The application asked for a reconnect.
    Requested,
}

/// Why the engine waits without retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendReason {
    /// The host is offline.
    Offline,
    /// Waiting for the driver to refresh credentials.
    AwaitingAuth,
}

/// Why the engine stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The application closed it.
    Closed,
    /// The close policy said stop (auth/policy rejection).
    Rejected {
        /// The server's close code.
        code: u16,
        /// The server's reason.
        reason: String,
    },
    /// Credentials could not be refreshed.
    AuthFailed,
    /// `Reliability::Required` and the server did not accept `steadfast.v1`.
    SubprotocolRefused,
}

/// The connection lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Created; `connect` not called yet.
    Idle,
    /// A connect (and, in reliable mode, the handshake) is under way.
    Connecting {
        /// 0 for the first attempt after a healthy connection.
        attempt: u32,
    },
    /// Open and usable.
    Open {
        /// Reliable or plain.
        mode: Mode,
    },
    /// Waiting to retry.
    BackingOff {
        /// The attempt the retry will be.
        attempt: u32,
        /// When (driver ms).
        next_retry_at: u64,
        /// What ended the last connection.
        reason: DisconnectReason,
    },
    /// Waiting for a hint or the driver before retrying.
    Suspended {
        /// Why.
        reason: SuspendReason,
    },
    /// Stopped for good.
    Closed {
        /// Why.
        reason: StopReason,
    },
}

/// Why a message will never be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// Its TTL passed before it went out.
    Expired,
    /// Dropped to make room (`Overflow::DropOldest`).
    Dropped,
    /// The engine was closed for good with the message unsent.
    Closed,
    /// Larger than the peer accepts (the limit its handshake announced):
    /// it would close the connection each time it was sent.
    TooLarge {
        /// The payload's size in bytes.
        size: u64,
        /// The peer's limit.
        limit: u64,
    },
}

/// Something the application should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message from the peer: in order, exactly once (reliable mode).
    Message(Payload),
    /// The peer's application has the message (reliable mode).
    Acked(Receipt),
    /// The message was handed to the socket (plain mode: no ACK exists).
    Sent(Receipt),
    /// The message went on the wire and now awaits its ACK (reliable
    /// mode; again after each reconnect that resends it). Progress only:
    /// `Acked` or `Failed` still follows.
    Transmitted(Receipt),
    /// The message will never be acknowledged.
    Failed {
        /// Which send.
        receipt: Receipt,
        /// Why.
        reason: FailReason,
        /// It went on the wire at least once, so the peer may have it.
        possibly_delivered: bool,
    },
    /// The lifecycle changed.
    State(State),
    /// The server lost the session: a new one started, the outbox was
    /// re-sent in it, and messages in flight before may be lost.
    ResyncRequired,
    /// The peer skipped seqs it will never send (its outbox expired them).
    Skipped {
        /// How many.
        count: u64,
    },
    /// Refresh credentials, then call `handle_auth_refreshed`.
    RefreshAuth,
    /// A heartbeat round trip, in ms.
    Rtt(u64),
    /// Something went wrong; the engine already acted on it.
    Error(crate::EngineError),
}

/// One store operation. Apply it before any output that follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistOp {
    /// Store (or replace) the session record.
    Session(StoredSession),
    /// Store a message (keyed by seq).
    Put(StoredMessage),
    /// Remove the message with this seq.
    Delete {
        /// Its seq.
        seq: u64,
    },
    /// Remove every message (a resync renumbers them; `Put`s follow).
    Clear,
}

impl PersistOp {
    /// Shorten a batch that is applied as one unit (one transaction) without
    /// changing what it leaves behind: every `Session` but the last is
    /// overwritten within the batch, so it is dropped. A batch of sends
    /// carries one per message.
    pub fn coalesce(ops: &mut Vec<PersistOp>) {
        let Some(last) = ops
            .iter()
            .rposition(|op| matches!(op, PersistOp::Session(_)))
        else {
            return;
        };
        let mut index = 0;
        ops.retain(|op| {
            let keep = index == last || !matches!(op, PersistOp::Session(_));
            index += 1;
            keep
        });
    }
}

/// One WebSocket message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// Binary (else text; the bytes are UTF-8).
    pub binary: bool,
    /// The message.
    pub data: Vec<u8>,
}

/// What the driver must do. Drain with `poll_output` until `Timeout` or `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Send this WebSocket message.
    Transmit(Transmit),
    /// Open a connection (offer [`crate::codec::SUBPROTOCOL`] unless plain).
    Connect {
        /// Offer `steadfast.v1`.
        offer_reliable: bool,
    },
    /// Close the connection with this code. Do not report its close back.
    Disconnect {
        /// Close code (application range).
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Apply this store operation before the outputs after it.
    Persist(PersistOp),
    /// Tell the application.
    Event(Event),
    /// Nothing more until this time (driver ms) or the next input.
    Timeout(u64),
}

/// Counters since the engine was created (see [`crate::Engine::stats`]).
/// They only grow; a reader computes rates from two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// WebSocket messages received on open connections.
    pub frames_in: u64,
    /// WebSocket messages the engine asked to send.
    pub frames_out: u64,
    /// Bytes of those received messages.
    pub bytes_in: u64,
    /// Bytes of those sent messages.
    pub bytes_out: u64,
    /// Application messages delivered (each exactly once).
    pub messages_in: u64,
    /// Application messages put on the wire for the first time.
    pub messages_out: u64,
    /// Messages put on the wire again (after a reconnect or resume).
    pub resends: u64,
    /// DATA or SKIP frames dropped as already delivered.
    pub duplicates: u64,
    /// ACK frames received.
    pub acks_in: u64,
    /// ACK frames sent.
    pub acks_out: u64,
    /// Chunk frames received.
    pub chunks_in: u64,
    /// Chunk frames sent.
    pub chunks_out: u64,
    /// Connection attempts (client) or connections attached (server).
    pub connects: u64,
    /// Handshakes that resumed a known session.
    pub resumes: u64,
    /// Sessions that had to start over (`ResyncRequired`).
    pub resyncs: u64,
    /// Connections the engine closed for a protocol error, a limit or a
    /// timeout of its own (each also reported as [`Event::Error`]).
    pub errors: u64,
    /// The latest heartbeat round trip, ms.
    pub rtt_ms: Option<u64>,
}

impl Stats {
    /// A protocol frame of `len` bytes went out.
    pub(crate) fn record_out(&mut self, frame: &crate::codec::Frame<'_>, len: usize) {
        self.record_out_plain(len);
        if matches!(frame, crate::codec::Frame::Data { chunk: Some(_), .. }) {
            self.chunks_out += 1;
        }
    }

    /// A WebSocket message of `len` bytes went out.
    pub(crate) fn record_out_plain(&mut self, len: usize) {
        self.frames_out += 1;
        self.bytes_out += len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::SessionId;
    use crate::record::{StoredMessage, StoredSession};

    fn session(next_seq: u64) -> PersistOp {
        PersistOp::Session(StoredSession {
            secret: None,
            session: SessionId([1; 16]),
            welcomed: true,
            inbound_delivered: 0,
            next_seq,
        })
    }

    fn put(seq: u64) -> PersistOp {
        PersistOp::Put(StoredMessage {
            seq,
            binary: true,
            payload: vec![seq as u8],
            enqueued_wall_ms: 0,
            expires_wall_ms: 0,
        })
    }

    #[test]
    fn coalescing_keeps_the_last_session_record_and_everything_else_in_order() {
        let mut ops = vec![
            put(1),
            session(2),
            put(2),
            session(3),
            PersistOp::Delete { seq: 1 },
            session(4),
            put(4),
        ];
        PersistOp::coalesce(&mut ops);
        assert_eq!(
            ops,
            vec![
                put(1),
                put(2),
                PersistOp::Delete { seq: 1 },
                session(4),
                put(4)
            ]
        );
        let mut none = vec![put(1), PersistOp::Clear];
        PersistOp::coalesce(&mut none);
        assert_eq!(none, vec![put(1), PersistOp::Clear]);
    }
}
