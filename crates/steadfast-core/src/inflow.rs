//! Inbound flow control for a server session: which of a client's frames
//! reach the engine now, and which wait, with no socket of its own.
//!
//! While the session's outbox is half full (the client reads the server's
//! messages more slowly than it sends its own, and the application answers
//! each), the client's DATA and SKIP frames wait here instead of reaching
//! the engine: unacknowledged, they fill the client's in-flight window and
//! it stops sending. Its ACKs, PINGs and PONGs still go through, and they
//! are what makes room (stopping the reads instead would strand those ACKs
//! behind the data: a deadlock). What a client may have unacknowledged,
//! and so what waits here, is bounded by the receive window WELCOME
//! announced (plus the message that crossed it, plus frame headers); the
//! driver stops reading only past twice that, which a client keeping to
//! the window does not reach.

use std::collections::VecDeque;

use crate::codec;
use crate::config::{Limits, OutboxConfig};

/// Frames waiting for room, in order.
#[derive(Debug)]
pub struct Inflow<F> {
    parked: VecDeque<F>,
    bytes: usize,
    max_bytes: usize,
}

impl<F: AsRef<[u8]>> Inflow<F> {
    /// For a session with these limits.
    pub fn new(limits: &Limits) -> Inflow<F> {
        let max = limits
            .receive_window
            .saturating_add(limits.max_message_size)
            .saturating_mul(2);
        Inflow {
            parked: VecDeque::new(),
            bytes: 0,
            max_bytes: usize::try_from(max).unwrap_or(usize::MAX),
        }
    }

    /// A frame read from the client: `Some` to hand to the engine now,
    /// `None` if it waits (a sequenced frame while the session is `busy`,
    /// or behind others that wait: order is kept).
    pub fn admit(&mut self, binary: bool, frame: F, busy: bool) -> Option<F> {
        let sequenced = binary && codec::is_sequenced(frame.as_ref());
        if sequenced && (busy || !self.parked.is_empty()) {
            self.bytes += frame.as_ref().len();
            self.parked.push_back(frame);
            None
        } else {
            Some(frame)
        }
    }

    /// The next waiting frame, if there is room now (one at a time: once
    /// what it delivered was handed over, its answer counts toward `busy`).
    pub fn release(&mut self, busy: bool) -> Option<F> {
        if busy {
            return None;
        }
        let frame = self.parked.pop_front()?;
        self.bytes -= frame.as_ref().len();
        Some(frame)
    }

    /// Whether the driver may read more from the socket (a client that
    /// ignores the window is not read until room is made).
    pub fn may_read(&self) -> bool {
        self.bytes < self.max_bytes
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.parked.len()
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }
}

/// Whether a session's outbox is half full: `messages` and `bytes` queued
/// for the client, counting those delivered to the application and not yet
/// handed over (each may be answered).
pub fn busy(messages: usize, bytes: usize, outbox: &OutboxConfig) -> bool {
    messages.saturating_mul(2) >= outbox.max_messages || bytes.saturating_mul(2) >= outbox.max_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Frame;

    fn data(seq: u64, payload: &[u8]) -> Vec<u8> {
        Frame::Data {
            seq,
            binary: true,
            chunk: None,
            payload,
        }
        .to_vec()
    }

    #[test]
    fn sequenced_frames_wait_while_busy_and_come_back_in_order() {
        let limits = Limits::default();
        let mut inflow = Inflow::new(&limits);
        assert_eq!(
            inflow.admit(true, data(1, b"a"), false),
            Some(data(1, b"a"))
        );
        assert_eq!(inflow.admit(true, data(2, b"b"), true), None);
        // Behind a waiting frame, the next waits too, busy or not.
        assert_eq!(inflow.admit(true, data(3, b"c"), false), None);
        // An ACK is never held: it is what makes room.
        let ack = Frame::Ack { delivered: 1 }.to_vec();
        assert_eq!(inflow.admit(true, ack.clone(), true), Some(ack));
        // Text is not a protocol frame: never held either.
        assert_eq!(
            inflow.admit(false, b"hi".to_vec(), true),
            Some(b"hi".to_vec())
        );
        assert_eq!(inflow.len(), 2);
        assert_eq!(inflow.release(true), None, "no room yet");
        assert_eq!(inflow.release(false), Some(data(2, b"b")));
        assert_eq!(inflow.release(false), Some(data(3, b"c")));
        assert!(inflow.is_empty());
    }

    #[test]
    fn reading_stops_past_twice_the_window_and_one_message() {
        let limits = Limits {
            receive_window: 100,
            max_message_size: 50,
            ..Limits::default()
        };
        let mut inflow = Inflow::new(&limits);
        let frame = data(1, &[0; 60]);
        let mut seq = 0;
        while inflow.may_read() {
            seq += 1;
            assert_eq!(inflow.admit(true, data(seq, &[0; 60]), true), None);
        }
        // (100 + 50) * 2 = 300 bytes: the frame that crossed it is the last.
        assert!(inflow.len() * frame.len() >= 300);
        assert!((inflow.len() - 1) * frame.len() < 300);
        // One released: below the bound again.
        assert!(inflow.release(false).is_some());
        assert!(inflow.may_read());
    }

    #[test]
    fn busy_means_half_the_outbox_in_messages_or_bytes() {
        let outbox = OutboxConfig {
            max_messages: 10,
            max_bytes: 1_000,
            ..OutboxConfig::default()
        };
        assert!(!busy(4, 499, &outbox));
        assert!(busy(5, 0, &outbox));
        assert!(busy(0, 500, &outbox));
        assert!(busy(usize::MAX, usize::MAX, &outbox), "no overflow");
    }
}
