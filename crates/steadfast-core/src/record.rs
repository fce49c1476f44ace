//! Persisted records and their byte format (pinned by snapshot tests, so a
//! format change is a decision). Every store backend stores these bytes.
//!
//! ```text
//! session record: 0x53 'S', u8 version=1, u8 flags (bit0 welcomed, bit1 secret),
//!                 [16] session, varint inbound_delivered, varint next_seq,
//!                 [16] secret (with bit1)
//! message record: 0x4d 'M', u8 version=1, u8 flags (bit0 binary), varint seq,
//!                 varint enqueued_wall_ms, varint expires_wall_ms (0 = never),
//!                 payload (the rest)
//! ```

use crate::codec::{put_varint, read_varint, DecodeError, SessionId, MAX_SEQ};

const SESSION_TAG: u8 = b'S';
const MESSAGE_TAG: u8 = b'M';
const RECORD_VERSION: u8 = 1;

/// The session's durable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSession {
    /// The session id.
    pub session: SessionId,
    /// The server has welcomed this session at least once.
    pub welcomed: bool,
    /// Highest inbound seq delivered in order (dedup across restarts).
    pub inbound_delivered: u64,
    /// The seq the next enqueued message gets.
    pub next_seq: u64,
    /// The resume secret: the client's, from the OS CSPRNG, sent in every
    /// HELLO; the server binds the session to the first it sees and
    /// resumes it only for a HELLO that carries it (see `route`).
    pub secret: Option<[u8; 16]>,
}

/// An outbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its seq in the session.
    pub seq: u64,
    /// Binary (else UTF-8 text).
    pub binary: bool,
    /// The payload.
    pub payload: Vec<u8>,
    /// Wall-clock ms when enqueued.
    pub enqueued_wall_ms: u64,
    /// Wall-clock ms when it expires (0: never).
    pub expires_wall_ms: u64,
}

impl StoredSession {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let flags = u8::from(self.welcomed) | if self.secret.is_some() { 2 } else { 0 };
        let mut out = vec![SESSION_TAG, RECORD_VERSION, flags];
        out.extend_from_slice(&self.session.0);
        put_varint(&mut out, self.inbound_delivered);
        put_varint(&mut out, self.next_seq);
        if let Some(secret) = &self.secret {
            out.extend_from_slice(secret);
        }
        out
    }

    /// Parse a record; never panics.
    pub fn decode(bytes: &[u8]) -> Result<StoredSession, DecodeError> {
        let rest = header(bytes, SESSION_TAG)?;
        let (&flags, rest) = rest.split_first().ok_or(DecodeError::Truncated)?;
        if flags & !3 != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        if rest.len() < 16 {
            return Err(DecodeError::Truncated);
        }
        let (id, rest) = rest.split_at(16);
        let mut session = [0u8; 16];
        session.copy_from_slice(id);
        let (inbound_delivered, used) = read_varint(rest)?;
        let rest = &rest[used..];
        let (next_seq, used) = read_varint(rest)?;
        let rest = &rest[used..];
        let secret = if flags & 2 != 0 {
            if rest.len() < 16 {
                return Err(DecodeError::Truncated);
            }
            let mut secret = [0u8; 16];
            secret.copy_from_slice(&rest[..16]);
            Some(secret)
        } else {
            None
        };
        let trailing = rest.len() - secret.map_or(0, |s| s.len());
        if trailing != 0 {
            return Err(DecodeError::Trailing(trailing));
        }
        if next_seq == 0 {
            return Err(DecodeError::Invalid("next_seq 0"));
        }
        if next_seq > MAX_SEQ || inbound_delivered > MAX_SEQ {
            return Err(DecodeError::Invalid("seq above 2^63-1"));
        }
        let session = SessionId(session);
        if session.is_nil() {
            return Err(DecodeError::Invalid("nil session id"));
        }
        Ok(StoredSession {
            session,
            welcomed: flags & 1 != 0,
            inbound_delivered,
            next_seq,
            secret,
        })
    }
}

impl StoredMessage {
    /// Sort records by seq, the order a store hands them back in. Seqs are
    /// unique, so the order is exact; one shared sort keeps one copy of the
    /// sort code in the wasm build.
    pub fn sort_by_seq(messages: &mut [StoredMessage]) {
        messages.sort_unstable_by_key(|m| m.seq);
    }

    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 24);
        self.encode_into(&mut out);
        out
    }

    /// Append the record's bytes (those of [`encode`](Self::encode)) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[MESSAGE_TAG, RECORD_VERSION, u8::from(self.binary)]);
        put_varint(out, self.seq);
        put_varint(out, self.enqueued_wall_ms);
        put_varint(out, self.expires_wall_ms);
        out.extend_from_slice(&self.payload);
    }

    /// Parse a record; never panics.
    pub fn decode(bytes: &[u8]) -> Result<StoredMessage, DecodeError> {
        let rest = header(bytes, MESSAGE_TAG)?;
        let (&flags, mut rest) = rest.split_first().ok_or(DecodeError::Truncated)?;
        if flags & !1 != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let mut field = || -> Result<u64, DecodeError> {
            let (value, used) = read_varint(rest)?;
            rest = &rest[used..];
            Ok(value)
        };
        let seq = field()?;
        let enqueued_wall_ms = field()?;
        let expires_wall_ms = field()?;
        if seq == 0 {
            return Err(DecodeError::Invalid("seq 0"));
        }
        if seq > MAX_SEQ {
            return Err(DecodeError::Invalid("seq above 2^63-1"));
        }
        let binary = flags & 1 != 0;
        if !binary && std::str::from_utf8(rest).is_err() {
            return Err(DecodeError::Invalid("text payload is not UTF-8"));
        }
        Ok(StoredMessage {
            seq,
            binary,
            payload: rest.to_vec(),
            enqueued_wall_ms,
            expires_wall_ms,
        })
    }
}

fn header(bytes: &[u8], tag: u8) -> Result<&[u8], DecodeError> {
    match bytes {
        [] => Err(DecodeError::Empty),
        [t, ..] if *t != tag => Err(DecodeError::UnknownType(*t)),
        [_] => Err(DecodeError::Truncated),
        [_, v, ..] if *v != RECORD_VERSION => Err(DecodeError::UnsupportedVersion(*v)),
        [_, _, rest @ ..] => Ok(rest),
    }
}
