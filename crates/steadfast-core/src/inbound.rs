//! The receive side of a session: in-order delivery, dedup of
//! `seq ≤ delivered`, a bounded reorder window, and chunk reassembly — every
//! byte held is counted against the configured limits.

use crate::SeqMap;

use crate::codec::Chunk;
use crate::config::Limits;
use crate::types::Payload;
use crate::EngineError;

#[derive(Debug)]
enum Held {
    /// Chunks 0..next_index received, in order.
    Partial(Partial),
    Complete {
        binary: bool,
        data: Vec<u8>,
    },
    /// The peer skips `key..=last`.
    Skip {
        last: u64,
    },
}

#[derive(Debug)]
struct Partial {
    binary: bool,
    count: u32,
    total_len: u64,
    next_index: u32,
    data: Vec<u8>,
    started_at: u64,
}

/// What one frame produced.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Messages now deliverable, in order, with their seqs.
    pub(crate) messages: Vec<(u64, Payload)>,
    /// Seqs the peer skipped that were passed over.
    pub(crate) skipped: u64,
    /// The frame repeated something already delivered or held.
    pub(crate) duplicate: bool,
    /// The next message could not be delivered (its text is not UTF-8):
    /// `messages` are those before it; it is not counted delivered.
    pub(crate) error: Option<EngineError>,
}

#[derive(Debug, Default)]
pub(crate) struct Inbound {
    /// Every seq ≤ this was delivered (or skipped).
    pub(crate) delivered: u64,
    held: SeqMap<Held>,
    held_bytes: usize,
    partials: usize,
}

impl Inbound {
    pub(crate) fn new(delivered: u64) -> Inbound {
        Inbound {
            delivered,
            ..Inbound::default()
        }
    }

    /// Forget everything held (a new session).
    pub(crate) fn reset(&mut self, delivered: u64) {
        *self = Inbound::new(delivered);
    }

    /// Bytes held for reordering and reassembly.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Start of the oldest incomplete chunked message.
    pub(crate) fn oldest_partial(&self) -> Option<u64> {
        self.held
            .values()
            .filter_map(|h| match h {
                Held::Partial(p) => Some(p.started_at),
                _ => None,
            })
            .min()
    }

    /// Something is held beyond the next seq: a gap waits to be filled.
    pub(crate) fn has_gap(&self) -> bool {
        self.held.keys().any(|seq| seq > self.delivered + 1)
    }

    pub(crate) fn on_data(
        &mut self,
        now: u64,
        seq: u64,
        binary: bool,
        chunk: Option<Chunk>,
        payload: &[u8],
        limits: &Limits,
    ) -> Result<Received, EngineError> {
        if seq <= self.delivered {
            return Ok(Received {
                duplicate: true,
                ..Received::default()
            });
        }
        if seq - self.delivered > limits.reorder_window {
            return Err(EngineError::SequenceGap {
                seq,
                delivered: self.delivered,
            });
        }
        if chunk.is_none() && seq == self.delivered + 1 && self.held.is_empty() {
            // In order with nothing held: the common case needs no map.
            let message = if binary {
                Payload::Binary(payload.to_vec())
            } else {
                Payload::Text(
                    String::from_utf8(payload.to_vec()).map_err(|_| EngineError::InvalidUtf8)?,
                )
            };
            self.delivered = seq;
            return Ok(Received {
                messages: vec![(seq, message)],
                ..Received::default()
            });
        }
        match (chunk, self.held.get_mut(seq)) {
            (None, None) => {
                if !self.fits(payload.len(), limits) {
                    return Err(EngineError::BufferLimit);
                }
                self.held_bytes += payload.len();
                self.held.insert(
                    seq,
                    Held::Complete {
                        binary,
                        data: payload.to_vec(),
                    },
                );
            }
            (None, Some(Held::Partial(_))) => {
                // The sender re-sent it unchunked (a larger chunk size): take it whole.
                self.remove(seq);
                return self.on_data(now, seq, binary, None, payload, limits);
            }
            (Some(c), None) => {
                if c.index != 0 {
                    // An earlier chunk went missing; the replay starts at 0.
                    return Ok(Received::default());
                }
                if self.partials >= limits.max_partial_messages {
                    return Err(EngineError::PartialLimit);
                }
                self.partials += 1;
                self.held.insert(
                    seq,
                    Held::Partial(Partial {
                        binary,
                        count: c.count,
                        total_len: c.total_len,
                        next_index: 0,
                        data: Vec::new(),
                        started_at: now,
                    }),
                );
                self.append_chunk(seq, c, payload, limits)?;
            }
            (Some(c), Some(Held::Partial(p))) => {
                if p.count != c.count || p.total_len != c.total_len {
                    // Re-chunked on a retransmit: start over if this is its first chunk.
                    if c.index == 0 {
                        self.remove(seq);
                        return self.on_data(now, seq, binary, Some(c), payload, limits);
                    }
                    return Ok(Received::default());
                }
                if c.index < p.next_index {
                    return Ok(Received {
                        duplicate: true,
                        ..Received::default()
                    });
                }
                if c.index > p.next_index {
                    return Ok(Received::default());
                }
                self.append_chunk(seq, c, payload, limits)?;
            }
            (_, Some(_)) => {
                return Ok(Received {
                    duplicate: true,
                    ..Received::default()
                })
            }
        }
        self.drain()
    }

    pub(crate) fn on_skip(
        &mut self,
        first: u64,
        last: u64,
        limits: &Limits,
    ) -> Result<Received, EngineError> {
        if last <= self.delivered {
            return Ok(Received {
                duplicate: true,
                ..Received::default()
            });
        }
        let first = first.max(self.delivered + 1);
        if first - self.delivered > limits.reorder_window {
            return Err(EngineError::SequenceGap {
                seq: first,
                delivered: self.delivered,
            });
        }
        // Whatever is held inside the range will never complete: drop it.
        let inside = self.held.keys_in(first, last);
        for seq in inside {
            self.remove(seq);
        }
        self.held.insert(first, Held::Skip { last });
        self.drain()
    }

    fn append_chunk(
        &mut self,
        seq: u64,
        c: Chunk,
        payload: &[u8],
        limits: &Limits,
    ) -> Result<(), EngineError> {
        if !self.fits(payload.len(), limits) {
            return Err(EngineError::BufferLimit);
        }
        let Some(Held::Partial(p)) = self.held.get_mut(seq) else {
            return Ok(());
        };
        let len = p.data.len() as u64 + payload.len() as u64;
        let last = c.index + 1 == c.count;
        if len > p.total_len || (last && len != p.total_len) || (!last && payload.is_empty()) {
            return Err(EngineError::Protocol(
                "chunk sizes do not add up to the message length",
            ));
        }
        p.data.extend_from_slice(payload);
        p.next_index += 1;
        self.held_bytes += payload.len();
        if last {
            let binary = p.binary;
            let data = std::mem::take(&mut p.data);
            self.partials -= 1;
            self.held.insert(seq, Held::Complete { binary, data });
        }
        Ok(())
    }

    /// Deliver from `delivered + 1` while it is complete. A message that
    /// cannot be delivered stops it: those before it are delivered, it is
    /// dropped (not counted delivered) and `error` says why.
    fn drain(&mut self) -> Result<Received, EngineError> {
        let mut out = Received::default();
        loop {
            let next = self.delivered + 1;
            match self.held.get(next) {
                Some(Held::Complete { .. }) => {
                    let Some(Held::Complete { binary, data }) = self.held.remove(next) else {
                        break; // just matched as Complete
                    };
                    self.held_bytes -= data.len();
                    let payload = if binary {
                        Payload::Binary(data)
                    } else {
                        match String::from_utf8(data) {
                            Ok(text) => Payload::Text(text),
                            Err(_) => {
                                out.error = Some(EngineError::InvalidUtf8);
                                break;
                            }
                        }
                    };
                    self.delivered = next;
                    out.messages.push((next, payload));
                }
                Some(Held::Skip { last }) => {
                    let last = *last;
                    self.held.remove(next);
                    out.skipped += last - self.delivered;
                    self.delivered = last;
                    let covered = self.held.keys_in(0, last);
                    for seq in covered {
                        self.remove(seq);
                    }
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Whether `more` bytes can be held within `max_buffered_bytes`.
    fn fits(&self, more: usize, limits: &Limits) -> bool {
        self.held_bytes
            .checked_add(more)
            .is_some_and(|total| total <= limits.max_buffered_bytes)
    }

    fn remove(&mut self, seq: u64) {
        match self.held.remove(seq) {
            Some(Held::Partial(p)) => {
                self.partials -= 1;
                self.held_bytes -= p.data.len();
            }
            Some(Held::Complete { data, .. }) => self.held_bytes -= data.len(),
            Some(Held::Skip { .. }) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            reorder_window: 8,
            max_buffered_bytes: 100,
            max_partial_messages: 2,
            ..Limits::default()
        }
    }

    fn texts(r: &Received) -> Vec<String> {
        r.messages
            .iter()
            .map(|(_, p)| match p {
                Payload::Text(t) => t.clone(),
                Payload::Binary(b) => format!("{b:?}"),
            })
            .collect()
    }

    #[test]
    fn delivers_in_order_and_drops_duplicates() {
        let mut inbound = Inbound::new(0);
        let l = limits();
        let r = inbound.on_data(0, 2, false, None, b"b", &l).expect("held");
        assert!(r.messages.is_empty());
        assert!(inbound.has_gap());
        let r = inbound.on_data(0, 1, false, None, b"a", &l).expect("fills");
        assert_eq!(texts(&r), ["a", "b"]);
        assert_eq!(inbound.delivered, 2);
        assert!(!inbound.has_gap());
        let r = inbound.on_data(0, 1, false, None, b"a", &l).expect("dup");
        assert!(r.duplicate && r.messages.is_empty());
        assert_eq!(inbound.held_bytes(), 0);
    }

    #[test]
    fn the_window_and_byte_limits_hold() {
        let mut inbound = Inbound::new(0);
        let l = limits();
        assert_eq!(
            inbound.on_data(0, 10, false, None, b"x", &l).unwrap_err(),
            EngineError::SequenceGap {
                seq: 10,
                delivered: 0
            }
        );
        inbound
            .on_data(0, 3, true, None, &[0; 60], &l)
            .expect("fits");
        assert_eq!(
            inbound.on_data(0, 4, true, None, &[0; 60], &l).unwrap_err(),
            EngineError::BufferLimit
        );
    }

    #[test]
    fn chunks_reassemble_and_replays_are_idempotent() {
        let mut inbound = Inbound::new(0);
        let l = limits();
        let c = |index| {
            Some(Chunk {
                index,
                count: 3,
                total_len: 5,
            })
        };
        assert!(inbound
            .on_data(0, 1, false, c(0), b"he", &l)
            .expect("ok")
            .messages
            .is_empty());
        assert!(inbound
            .on_data(0, 1, false, c(1), b"ll", &l)
            .expect("ok")
            .messages
            .is_empty());
        assert_eq!(inbound.oldest_partial(), Some(0));
        // A replay after a reconnect repeats chunk 0 and 1.
        assert!(
            inbound
                .on_data(5, 1, false, c(0), b"he", &l)
                .expect("ok")
                .duplicate
        );
        assert!(
            inbound
                .on_data(5, 1, false, c(1), b"ll", &l)
                .expect("ok")
                .duplicate
        );
        let r = inbound
            .on_data(5, 1, false, c(2), b"o", &l)
            .expect("complete");
        assert_eq!(texts(&r), ["hello"]);
        assert_eq!((inbound.held_bytes(), inbound.oldest_partial()), (0, None));
    }

    #[test]
    fn lying_chunk_headers_are_errors_not_allocations() {
        let mut inbound = Inbound::new(0);
        let l = limits();
        let c = |index| {
            Some(Chunk {
                index,
                count: 2,
                total_len: 4,
            })
        };
        inbound.on_data(0, 1, true, c(0), b"abc", &l).expect("ok");
        assert!(matches!(
            inbound.on_data(0, 1, true, c(1), b"de", &l),
            Err(EngineError::Protocol(_))
        ));
        let mut inbound = Inbound::new(0);
        for seq in 1..=2 {
            inbound
                .on_data(0, seq, true, c(0), b"a", &l)
                .expect("partial");
        }
        assert_eq!(
            inbound.on_data(0, 3, true, c(0), b"a", &l).unwrap_err(),
            EngineError::PartialLimit
        );
    }

    #[test]
    fn skips_pass_over_seqs_and_drop_what_they_cover() {
        let mut inbound = Inbound::new(0);
        let l = limits();
        inbound.on_data(0, 3, false, None, b"c", &l).expect("held");
        inbound.on_data(0, 5, false, None, b"e", &l).expect("held");
        let r = inbound.on_skip(1, 4, &l).expect("skip");
        assert_eq!(texts(&r), ["e"]);
        assert_eq!(r.skipped, 4);
        assert_eq!((inbound.delivered, inbound.held_bytes()), (5, 0));
    }
}
