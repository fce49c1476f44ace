//! Protocol v1 frames: encoding and a decoder that never panics and never
//! allocates more than the input it was given. See docs/PROTOCOL.md.

use std::fmt;

/// The WebSocket subprotocol that selects reliable mode.
pub const SUBPROTOCOL: &str = "steadfast.v1";
/// The protocol version carried in HELLO and WELCOME.
pub const VERSION: u8 = 1;

/// The largest sequence number a frame may carry (in DATA, SKIP, ACK,
/// HELLO and WELCOME): 2^63 − 1. Far beyond any session, and it leaves
/// room for `seq + 1` everywhere a receiver computes the next one.
pub const MAX_SEQ: u64 = (1 << 63) - 1;

const HELLO: u8 = 0x01;
const WELCOME: u8 = 0x02;
const DATA: u8 = 0x03;
const ACK: u8 = 0x04;
const SKIP: u8 = 0x05;
const PING: u8 = 0x06;
const PONG: u8 = 0x07;

const HELLO_NEW: u8 = 0x01;
const HELLO_SECRET: u8 = 0x02;
const WELCOME_RESUMED: u8 = 0x01;
const WELCOME_WINDOW: u8 = 0x02;
const DATA_BINARY: u8 = 0x01;
const DATA_CHUNKED: u8 = 0x02;

/// A session id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    /// Whether this is the invalid all-zero id.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(")?;
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Where a DATA frame sits within a chunked message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// 0-based chunk number.
    pub index: u32,
    /// Number of chunks (≥ 2).
    pub count: u32,
    /// Length of the whole message.
    pub total_len: u64,
}

/// One protocol frame. `DATA` borrows its payload from the decoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Client → server, first frame of every connection.
    Hello {
        /// The client has never been welcomed in this session.
        new: bool,
        /// The client's session.
        session: SessionId,
        /// Highest seq the client delivered in order.
        delivered: u64,
        /// The largest message the client accepts.
        max_message_size: u64,
        /// The client's resume secret (16 bytes after the rest, with flag
        /// 0x02): a server resumes a session bound to a secret only for a
        /// HELLO that carries it. Clients before it send none.
        secret: Option<[u8; 16]>,
    },
    /// Server → client, answer to HELLO.
    Welcome {
        /// The server knew the session and resumes it.
        resumed: bool,
        /// The session to use (differs from HELLO's when the server lost it).
        session: SessionId,
        /// Highest seq the server delivered in order.
        delivered: u64,
        /// The largest message the server accepts.
        max_message_size: u64,
        /// Payload bytes the client may have unacknowledged (≥ 1); none:
        /// only the client's own limit applies.
        window: Option<u64>,
    },
    /// A message, or one chunk of one.
    Data {
        /// Sequence number (≥ 1).
        seq: u64,
        /// Binary (else UTF-8 text).
        binary: bool,
        /// Set when the message is chunked.
        chunk: Option<Chunk>,
        /// The bytes.
        payload: &'a [u8],
    },
    /// Cumulative acknowledgement.
    Ack {
        /// Highest seq delivered in order.
        delivered: u64,
    },
    /// Seqs `first..=last` will never be sent.
    Skip {
        /// First skipped seq (≥ 1).
        first: u64,
        /// Last skipped seq (≥ first).
        last: u64,
    },
    /// Liveness probe.
    Ping {
        /// Echoed in the PONG.
        id: u64,
    },
    /// Answer to PING.
    Pong {
        /// The PING's id.
        id: u64,
    },
}

/// Why bytes are not a valid frame. Never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty frame")]
    Empty,
    /// The frame ended inside a field.
    #[error("frame truncated")]
    Truncated,
    /// Bytes after the last field of a fixed-layout frame.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// A type byte this version does not know.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// A flag bit this version does not know.
    #[error("unknown flags 0x{0:02x}")]
    UnknownFlags(u8),
    /// HELLO/WELCOME with another protocol version.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A varint longer than 10 bytes, above u64::MAX, or not minimal.
    #[error("malformed varint")]
    BadVarint,
    /// A field with a value the protocol forbids (seq 0, index ≥ count, …).
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    /// A declared size above the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Declared size.
        size: u64,
        /// Configured limit.
        limit: u64,
    },
}

/// Smallest chunk a sender may use; bounds the chunk count a receiver accepts.
pub const MIN_CHUNK_SIZE: usize = 1024;

/// Whether `bytes` is (the start of) a DATA frame, without decoding it.
pub fn is_data(bytes: &[u8]) -> bool {
    bytes.first() == Some(&DATA)
}

/// Whether a frame belongs to its sender's numbered sequence (DATA or
/// SKIP), judged by its first byte: such frames must reach the engine in
/// the order they came; the others (ACK, PING, PONG) may go ahead of them.
pub fn is_sequenced(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(&DATA | &SKIP))
}

/// What a server needs of a connection's HELLO to find its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloInfo {
    /// The session it names.
    pub session: SessionId,
    /// It asks for a new session.
    pub new: bool,
    /// The client's resume secret, if it sent one.
    pub secret: Option<[u8; 16]>,
}

/// Read a connection's first frame, which must be HELLO: the session it
/// names, whether it is `NEW`, and the client's secret. A server uses it
/// to find the session before handing the frame to that session's engine;
/// the error's [`close_code`](crate::EngineError::close_code) is the close
/// to send.
pub fn read_hello(bytes: &[u8]) -> Result<HelloInfo, crate::EngineError> {
    match decode(bytes, u64::MAX) {
        Ok(Frame::Hello {
            session,
            new,
            secret,
            ..
        }) => Ok(HelloInfo {
            session,
            new,
            secret,
        }),
        Ok(_) => Err(crate::EngineError::Protocol(
            "the first frame must be HELLO",
        )),
        Err(e) => Err(crate::EngineError::Decode(e)),
    }
}

/// Decode one frame. `max_message_size` bounds declared message sizes.
pub fn decode(bytes: &[u8], max_message_size: u64) -> Result<Frame<'_>, DecodeError> {
    let (&kind, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    let mut r = Reader { bytes: rest };
    let frame = match kind {
        HELLO | WELCOME => {
            let version = r.u8()?;
            if version != VERSION {
                return Err(DecodeError::UnsupportedVersion(version));
            }
            let flags = r.u8()?;
            let known = if kind == HELLO {
                HELLO_NEW | HELLO_SECRET
            } else {
                WELCOME_RESUMED | WELCOME_WINDOW
            };
            if flags & !known != 0 {
                return Err(DecodeError::UnknownFlags(flags));
            }
            let session = SessionId(r.array()?);
            if session.is_nil() {
                return Err(DecodeError::Invalid("nil session id"));
            }
            let delivered = r.seq()?;
            let max = r.varint()?;
            if kind == HELLO {
                let secret = if flags & HELLO_SECRET != 0 {
                    Some(r.array()?)
                } else {
                    None
                };
                Frame::Hello {
                    new: flags & HELLO_NEW != 0,
                    session,
                    delivered,
                    max_message_size: max,
                    secret,
                }
            } else {
                let window = if flags & WELCOME_WINDOW != 0 {
                    match r.varint()? {
                        0 => return Err(DecodeError::Invalid("window 0")),
                        w => Some(w),
                    }
                } else {
                    None
                };
                Frame::Welcome {
                    resumed: flags & WELCOME_RESUMED != 0,
                    session,
                    delivered,
                    max_message_size: max,
                    window,
                }
            }
        }
        DATA => {
            let flags = r.u8()?;
            if flags & !(DATA_BINARY | DATA_CHUNKED) != 0 {
                return Err(DecodeError::UnknownFlags(flags));
            }
            let seq = r.seq()?;
            if seq == 0 {
                return Err(DecodeError::Invalid("seq 0"));
            }
            let chunk = if flags & DATA_CHUNKED != 0 {
                let index = r.varint()?;
                let count = r.varint()?;
                let total_len = r.varint()?;
                if count < 2 {
                    return Err(DecodeError::Invalid("chunk count below 2"));
                }
                if index >= count {
                    return Err(DecodeError::Invalid("chunk index not below count"));
                }
                if total_len > max_message_size {
                    return Err(DecodeError::TooLarge {
                        size: total_len,
                        limit: max_message_size,
                    });
                }
                let max_count = max_message_size / MIN_CHUNK_SIZE as u64 + 1;
                if count > max_count || count > u64::from(u32::MAX) {
                    return Err(DecodeError::Invalid("chunk count above the limit"));
                }
                Some(Chunk {
                    // Both checked against u32::MAX just above (index < count).
                    index: u32::try_from(index).map_err(|_| DecodeError::Invalid("chunk index"))?,
                    count: u32::try_from(count).map_err(|_| DecodeError::Invalid("chunk count"))?,
                    total_len,
                })
            } else {
                None
            };
            let payload = r.bytes;
            r.bytes = &[];
            match chunk {
                Some(c) if payload.len() as u64 > c.total_len => {
                    return Err(DecodeError::Invalid("chunk longer than its message"));
                }
                None if payload.len() as u64 > max_message_size => {
                    return Err(DecodeError::TooLarge {
                        size: payload.len() as u64,
                        limit: max_message_size,
                    });
                }
                _ => {}
            }
            Frame::Data {
                seq,
                binary: flags & DATA_BINARY != 0,
                chunk,
                payload,
            }
        }
        ACK => Frame::Ack {
            delivered: r.seq()?,
        },
        SKIP => {
            let first = r.seq()?;
            let last = r.seq()?;
            if first == 0 || last < first {
                return Err(DecodeError::Invalid("skip range"));
            }
            Frame::Skip { first, last }
        }
        PING => Frame::Ping { id: r.varint()? },
        PONG => Frame::Pong { id: r.varint()? },
        other => return Err(DecodeError::UnknownType(other)),
    };
    if !r.bytes.is_empty() {
        return Err(DecodeError::Trailing(r.bytes.len()));
    }
    Ok(frame)
}

impl Frame<'_> {
    /// Append the encoding of this frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Hello {
                new,
                session,
                delivered,
                max_message_size,
                secret,
            } => {
                let mut flags = if *new { HELLO_NEW } else { 0 };
                if secret.is_some() {
                    flags |= HELLO_SECRET;
                }
                put_handshake(out, HELLO, flags, session, *delivered, *max_message_size);
                if let Some(secret) = secret {
                    out.extend_from_slice(secret);
                }
            }
            Frame::Welcome {
                resumed,
                session,
                delivered,
                max_message_size,
                window,
            } => {
                let mut flags = if *resumed { WELCOME_RESUMED } else { 0 };
                if window.is_some() {
                    flags |= WELCOME_WINDOW;
                }
                put_handshake(out, WELCOME, flags, session, *delivered, *max_message_size);
                if let Some(w) = window {
                    put_varint(out, *w);
                }
            }
            Frame::Data {
                seq,
                binary,
                chunk,
                payload,
            } => {
                let mut flags = 0;
                if *binary {
                    flags |= DATA_BINARY;
                }
                if chunk.is_some() {
                    flags |= DATA_CHUNKED;
                }
                out.extend_from_slice(&[DATA, flags]);
                put_varint(out, *seq);
                if let Some(c) = chunk {
                    put_varint(out, u64::from(c.index));
                    put_varint(out, u64::from(c.count));
                    put_varint(out, c.total_len);
                }
                out.extend_from_slice(payload);
            }
            Frame::Ack { delivered } => {
                out.push(ACK);
                put_varint(out, *delivered);
            }
            Frame::Skip { first, last } => {
                out.push(SKIP);
                put_varint(out, *first);
                put_varint(out, *last);
            }
            Frame::Ping { id } => {
                out.push(PING);
                put_varint(out, *id);
            }
            Frame::Pong { id } => {
                out.push(PONG);
                put_varint(out, *id);
            }
        }
    }

    /// The encoding in a new buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// HELLO and WELCOME share one layout.
fn put_handshake(
    out: &mut Vec<u8>,
    kind: u8,
    flags: u8,
    session: &SessionId,
    delivered: u64,
    max: u64,
) {
    out.extend_from_slice(&[kind, VERSION, flags]);
    out.extend_from_slice(&session.0);
    put_varint(out, delivered);
    put_varint(out, max);
}

/// Unsigned LEB128, minimal.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A bounds-checked cursor.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.bytes.split_first().ok_or(DecodeError::Truncated)?;
        self.bytes = rest;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        if self.bytes.len() < N {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let (value, used) = read_varint(self.bytes)?;
        self.bytes = &self.bytes[used..];
        Ok(value)
    }

    /// A sequence number: a varint no larger than [`MAX_SEQ`].
    fn seq(&mut self) -> Result<u64, DecodeError> {
        let value = self.varint()?;
        if value > MAX_SEQ {
            return Err(DecodeError::Invalid("seq above 2^63-1"));
        }
        Ok(value)
    }
}

/// Read a minimal LEB128 varint; returns the value and the bytes used.
pub fn read_varint(bytes: &[u8]) -> Result<(u64, usize), DecodeError> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let group = u64::from(byte & 0x7f);
        if i == 9 && byte > 0x01 {
            return Err(DecodeError::BadVarint); // above u64::MAX
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::BadVarint); // not minimal
            }
            return Ok((value, i + 1));
        }
    }
    if bytes.len() < 10 {
        Err(DecodeError::Truncated)
    } else {
        Err(DecodeError::BadVarint)
    }
}
