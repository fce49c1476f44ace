//! The outbox: every message from `send` until its ACK (or failure), with
//! its seq. Entries cover a contiguous seq range; a message that will never
//! be sent leaves a `Skip` in its place so the peer does not wait for it.

use std::collections::VecDeque;

use crate::codec::{Chunk, Frame};
use crate::record::StoredMessage;
use crate::types::Receipt;

#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) seq: u64,
    pub(crate) receipt: Receipt,
    pub(crate) binary: bool,
    pub(crate) payload: Vec<u8>,
    pub(crate) enqueued_wall_ms: u64,
    /// Wall ms (0: never), as persisted.
    pub(crate) expires_wall_ms: u64,
    /// Driver ms at which it expires, derived from the wall deadline.
    pub(crate) expires_at: Option<u64>,
    /// It went on the wire at least once (or was restored: unknown).
    pub(crate) maybe_sent: bool,
}

impl Message {
    pub(crate) fn record(&self) -> StoredMessage {
        StoredMessage {
            seq: self.seq,
            binary: self.binary,
            payload: self.payload.clone(),
            enqueued_wall_ms: self.enqueued_wall_ms,
            expires_wall_ms: self.expires_wall_ms,
        }
    }
}

#[derive(Debug)]
pub(crate) enum Entry {
    Message(Message),
    /// Seqs `first..=last` will never be sent.
    Skip {
        first: u64,
        last: u64,
    },
}

impl Entry {
    fn first(&self) -> u64 {
        match self {
            Entry::Message(m) => m.seq,
            Entry::Skip { first, .. } => *first,
        }
    }

    fn last(&self) -> u64 {
        match self {
            Entry::Message(m) => m.seq,
            Entry::Skip { last, .. } => *last,
        }
    }
}

/// Contiguous entries from `acked + 1` to `next_seq - 1`.
#[derive(Debug)]
pub(crate) struct Outbox {
    entries: VecDeque<Entry>,
    /// Highest seq the peer acknowledged (everything ≤ it is gone).
    pub(crate) acked: u64,
    /// The next seq to assign.
    pub(crate) next_seq: u64,
    /// Highest seq put on the wire on the current connection.
    pub(crate) sent_through: u64,
    messages: usize,
    bytes: usize,
    /// Payload bytes of messages in `acked+1..=sent_through`.
    in_flight: usize,
    /// The messages' expiries never decrease with their seq (one TTL for
    /// all and a steady clock: the usual case), so the earliest expiry
    /// among unsent messages is the first unsent message's.
    expiry_ordered: bool,
    /// The latest expiry among the messages held (`u64::MAX`: never).
    latest_expiry: u64,
    /// The highest seq put in place by `restore`.
    restored_through: u64,
    /// Where the first unsent entry was last found: it is usually there
    /// or one step on (checked before use; a binary search otherwise).
    unsent_hint: usize,
}

impl Outbox {
    pub(crate) fn new(next_seq: u64) -> Outbox {
        let next_seq = next_seq.max(1);
        let mut outbox = Outbox {
            entries: VecDeque::new(),
            acked: 0,
            next_seq,
            sent_through: 0,
            messages: 0,
            bytes: 0,
            in_flight: 0,
            expiry_ordered: true,
            latest_expiry: 0,
            restored_through: 0,
            unsent_hint: 0,
        };
        // Seqs before `next_seq` that we hold nothing for were acked or
        // dropped before a restart: skip them (a peer that has them ignores it).
        if next_seq > 1 {
            outbox.entries.push_back(Entry::Skip {
                first: 1,
                last: next_seq - 1,
            });
        }
        outbox
    }

    pub(crate) fn len(&self) -> usize {
        self.messages
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keep track of whether expiries still follow the seqs.
    fn note_expiry(&mut self, expires_at: Option<u64>) {
        let key = expires_at.unwrap_or(u64::MAX);
        if key < self.latest_expiry {
            self.expiry_ordered = false;
        }
        self.latest_expiry = self.latest_expiry.max(key);
    }

    /// One message fewer; an empty outbox starts the expiry order afresh.
    fn removed(&mut self, payload_len: usize) {
        self.messages -= 1;
        self.bytes -= payload_len;
        if self.messages == 0 {
            self.expiry_ordered = true;
            self.latest_expiry = 0;
        }
    }

    /// Append a message with the next seq.
    pub(crate) fn push(&mut self, mut message: Message) -> u64 {
        self.note_expiry(message.expires_at);
        message.seq = self.next_seq;
        self.next_seq += 1;
        self.messages += 1;
        self.bytes += message.payload.len();
        let seq = message.seq;
        self.entries.push_back(Entry::Message(message));
        seq
    }

    /// Put a restored message in place (restore only; seqs ascending, below next_seq).
    pub(crate) fn restore(&mut self, message: Message) -> bool {
        let seq = message.seq;
        if seq == 0 || seq >= self.next_seq {
            return false;
        }
        // Split the skip range that covers `seq`.
        let pos = self.entries.partition_point(|e| e.last() < seq);
        if self.entries.get(pos).is_none_or(|e| e.first() > seq) {
            return false;
        }
        let Entry::Skip { first, last } = self.entries[pos] else {
            return false; // a duplicate seq in the store: keep the first
        };
        if seq < self.restored_through {
            // Out of seq order: the expiry order says nothing.
            self.expiry_ordered = false;
        }
        self.restored_through = seq;
        self.note_expiry(message.expires_at);
        let mut replacement = Vec::with_capacity(3);
        if first < seq {
            replacement.push(Entry::Skip {
                first,
                last: seq - 1,
            });
        }
        self.messages += 1;
        self.bytes += message.payload.len();
        replacement.push(Entry::Message(message));
        if seq < last {
            replacement.push(Entry::Skip {
                first: seq + 1,
                last,
            });
        }
        self.entries.remove(pos);
        for (i, entry) in replacement.into_iter().enumerate() {
            self.entries.insert(pos + i, entry);
        }
        true
    }

    /// Remove everything ≤ `delivered`; returns the acked messages.
    /// `None` if `delivered` is beyond anything assigned (a protocol error).
    pub(crate) fn ack_through(&mut self, delivered: u64) -> Option<Vec<Message>> {
        if delivered >= self.next_seq {
            return None;
        }
        let mut acked = Vec::new();
        if delivered <= self.acked {
            return Some(acked);
        }
        while let Some(front) = self.entries.front_mut() {
            if front.first() > delivered {
                break;
            }
            if front.last() > delivered {
                // Only skips span several seqs.
                if let Entry::Skip { first, .. } = front {
                    *first = delivered + 1;
                }
                break;
            }
            self.unsent_hint = self.unsent_hint.saturating_sub(1);
            if let Some(Entry::Message(m)) = self.entries.pop_front() {
                self.removed(m.payload.len());
                if m.seq <= self.sent_through {
                    self.in_flight -= m.payload.len();
                }
                acked.push(m);
            }
        }
        self.acked = delivered;
        self.sent_through = self.sent_through.max(delivered);
        Some(acked)
    }

    /// Payload bytes on the wire and not acknowledged.
    pub(crate) fn in_flight_bytes(&self) -> usize {
        self.in_flight
    }

    /// The entries through `seq` are on the wire, `bytes` of payload.
    pub(crate) fn mark_sent(&mut self, seq: u64, bytes: usize) {
        self.sent_through = self.sent_through.max(seq);
        self.in_flight += bytes;
    }

    /// Start a new connection: nothing is on the wire.
    pub(crate) fn rewind(&mut self) {
        self.sent_through = self.acked;
        self.in_flight = 0;
    }

    /// The position of the first entry not (wholly) on the wire: where
    /// it was last found or the entry after (the usual cases: nothing
    /// sent since, or one more entry sent), else a binary search (entries
    /// are in seq order). The search alone was 8% of a client's CPU with
    /// 50,000 small messages queued.
    fn first_unsent(&self) -> usize {
        let after = self.sent_through;
        let entries = &self.entries;
        let is_first_unsent = |pos: usize| {
            pos <= entries.len()
                && (pos == 0 || entries[pos - 1].last() <= after)
                && entries.get(pos).is_none_or(|e| e.last() > after)
        };
        let hint = self.unsent_hint;
        if is_first_unsent(hint) {
            return hint;
        }
        if is_first_unsent(hint + 1) {
            return hint + 1;
        }
        entries.partition_point(|e| e.last() <= after)
    }

    /// The position of the first message not on the wire. Skips merge, so
    /// a skip is followed by a message: at most one step past `first_unsent`.
    fn first_unsent_message(&self) -> Option<usize> {
        let from = self.first_unsent();
        (from..self.entries.len()).find(|&i| matches!(self.entries[i], Entry::Message(_)))
    }

    /// The next entry to put on the wire, if any.
    pub(crate) fn next_unsent(&mut self) -> Option<&mut Entry> {
        let pos = self.first_unsent();
        self.unsent_hint = pos;
        self.entries.get_mut(pos)
    }

    /// Replace the oldest message not on the wire with a skip; returns it.
    pub(crate) fn drop_oldest_unsent(&mut self) -> Option<Message> {
        let pos = self.first_unsent_message()?;
        self.tombstone(pos)
    }

    /// Replace every message not on the wire that expired by `now` with a skip.
    pub(crate) fn expire(&mut self, now: u64) -> Vec<Message> {
        self.drop_unsent_where(|m| m.expires_at.is_some_and(|at| at <= now))
    }

    /// Replace every message not on the wire for which `doomed` holds with
    /// a skip; returns them.
    pub(crate) fn drop_unsent_where(&mut self, doomed: impl Fn(&Message) -> bool) -> Vec<Message> {
        let after = self.sent_through;
        let mut dropped = Vec::new();
        let mut pos = 0;
        while pos < self.entries.len() {
            let due = matches!(&self.entries[pos], Entry::Message(m) if m.seq > after && doomed(m));
            if due {
                if let Some(m) = self.tombstone(pos) {
                    dropped.push(m);
                }
                // Merging may have removed entries; re-scan from the previous one.
                pos = pos.saturating_sub(1);
            } else {
                pos += 1;
            }
        }
        dropped
    }

    /// The earliest expiry among messages not on the wire.
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        let first = self.first_unsent_message()?;
        if self.expiry_ordered {
            return match &self.entries[first] {
                Entry::Message(m) => m.expires_at,
                Entry::Skip { .. } => None,
            };
        }
        self.entries
            .range(first..)
            .filter_map(|e| match e {
                Entry::Message(m) => m.expires_at,
                Entry::Skip { .. } => None,
            })
            .min()
    }

    /// Turn the message at `pos` into a skip, merging with neighbouring skips.
    fn tombstone(&mut self, pos: usize) -> Option<Message> {
        let seq = self.entries.get(pos)?.first();
        let Entry::Message(message) = std::mem::replace(
            &mut self.entries[pos],
            Entry::Skip {
                first: seq,
                last: seq,
            },
        ) else {
            return None;
        };
        self.removed(message.payload.len());
        // Merge with the next entry, then with the previous one.
        if let Some(Entry::Skip {
            last: next_last, ..
        }) = self.entries.get(pos + 1)
        {
            let next_last = *next_last;
            self.entries.remove(pos + 1);
            if let Entry::Skip { last, .. } = &mut self.entries[pos] {
                *last = next_last;
            }
        }
        if pos > 0 {
            if let (
                Some(Entry::Skip {
                    last: this_last, ..
                }),
                Some(Entry::Skip { .. }),
            ) = (self.entries.get(pos), self.entries.get(pos - 1))
            {
                let this_last = *this_last;
                self.entries.remove(pos);
                if let Entry::Skip { last, .. } = &mut self.entries[pos - 1] {
                    *last = this_last;
                }
            }
        }
        Some(message)
    }

    /// Every message, in seq order (for a resync or a shutdown).
    pub(crate) fn drain_messages(&mut self) -> Vec<Message> {
        let out = self
            .entries
            .drain(..)
            .filter_map(|e| match e {
                Entry::Message(m) => Some(m),
                Entry::Skip { .. } => None,
            })
            .collect();
        self.messages = 0;
        self.bytes = 0;
        self.in_flight = 0;
        out
    }

    /// Every message, in seq order.
    pub(crate) fn messages(&self) -> impl Iterator<Item = &Message> + '_ {
        self.entries.iter().filter_map(|e| match e {
            Entry::Message(m) => Some(m),
            Entry::Skip { .. } => None,
        })
    }

    /// The store records of every message.
    pub(crate) fn records(&self) -> Vec<StoredMessage> {
        self.messages().map(Message::record).collect()
    }

    /// Start numbering again from 1 with `messages` (a resync).
    pub(crate) fn renumber(&mut self, messages: Vec<Message>) {
        self.entries.clear();
        self.acked = 0;
        self.sent_through = 0;
        self.next_seq = 1;
        self.messages = 0;
        self.bytes = 0;
        self.in_flight = 0;
        for m in messages {
            self.push(m);
        }
    }

    #[cfg(test)]
    pub(crate) fn shape(&self) -> Vec<(u64, u64, bool)> {
        self.entries
            .iter()
            .map(|e| (e.first(), e.last(), matches!(e, Entry::Message(_))))
            .collect()
    }
}

/// The frames of one entry, chunked at `chunk_size`.
pub(crate) fn frames_of(entry: &Entry, chunk_size: usize, mut emit: impl FnMut(Frame<'_>)) {
    match entry {
        Entry::Skip { first, last } => emit(Frame::Skip {
            first: *first,
            last: *last,
        }),
        Entry::Message(m) => {
            if m.payload.len() <= chunk_size {
                emit(Frame::Data {
                    seq: m.seq,
                    binary: m.binary,
                    chunk: None,
                    payload: &m.payload,
                });
                return;
            }
            let count = m.payload.len().div_ceil(chunk_size);
            for (index, piece) in m.payload.chunks(chunk_size).enumerate() {
                emit(Frame::Data {
                    seq: m.seq,
                    binary: m.binary,
                    chunk: Some(Chunk {
                        // count ≤ max_message_size / 1 KiB + 1 fits in u32 for any
                        // payload a 64-bit host can hold in memory at ≥ 1 KiB chunks
                        // below 4 TiB; saturate rather than wrap beyond that.
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        count: u32::try_from(count).unwrap_or(u32::MAX),
                        total_len: m.payload.len() as u64,
                    }),
                    payload: piece,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(len: usize) -> Message {
        Message {
            seq: 0,
            receipt: Receipt(0),
            binary: true,
            payload: vec![7; len],
            enqueued_wall_ms: 0,
            expires_wall_ms: 0,
            expires_at: None,
            maybe_sent: false,
        }
    }

    #[test]
    fn tombstones_merge_into_ranges() {
        let mut outbox = Outbox::new(1);
        for _ in 0..5 {
            outbox.push(msg(10));
        }
        assert_eq!(outbox.drop_oldest_unsent().map(|m| m.seq), Some(1));
        assert_eq!(outbox.drop_oldest_unsent().map(|m| m.seq), Some(2));
        assert_eq!(
            outbox.shape(),
            vec![(1, 2, false), (3, 3, true), (4, 4, true), (5, 5, true)]
        );
        assert_eq!((outbox.len(), outbox.bytes()), (3, 30));
        // A middle tombstone between a skip and a message merges left.
        assert_eq!(outbox.drop_oldest_unsent().map(|m| m.seq), Some(3));
        assert_eq!(
            outbox.shape(),
            vec![(1, 3, false), (4, 4, true), (5, 5, true)]
        );
    }

    #[test]
    fn acks_remove_messages_and_trim_skips() {
        let mut outbox = Outbox::new(4); // 1..=3 unknown after a "restart"
        outbox.push(msg(1));
        outbox.push(msg(1));
        assert_eq!(
            outbox.shape(),
            vec![(1, 3, false), (4, 4, true), (5, 5, true)]
        );
        let acked = outbox.ack_through(2).expect("valid ack");
        assert!(acked.is_empty());
        assert_eq!(
            outbox.shape(),
            vec![(3, 3, false), (4, 4, true), (5, 5, true)]
        );
        let acked = outbox.ack_through(4).expect("valid ack");
        assert_eq!(acked.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![4]);
        assert!(
            outbox.ack_through(6).is_none(),
            "ack beyond anything assigned"
        );
    }

    #[test]
    fn restore_splits_the_unknown_range() {
        let mut outbox = Outbox::new(10);
        let mut m = msg(3);
        m.seq = 4;
        assert!(outbox.restore(m));
        let mut m = msg(3);
        m.seq = 9;
        assert!(outbox.restore(m));
        assert_eq!(
            outbox.shape(),
            vec![(1, 3, false), (4, 4, true), (5, 8, false), (9, 9, true)]
        );
        let mut dup = msg(1);
        dup.seq = 4;
        assert!(!outbox.restore(dup), "duplicate seq refused");
        let mut beyond = msg(1);
        beyond.seq = 10;
        assert!(!outbox.restore(beyond), "seq at next_seq refused");
    }

    fn below(rng: &mut crate::rng::Rng, n: u64) -> u64 {
        rng.up_to(n - 1)
    }

    /// The lookups (the remembered first-unsent position, the binary
    /// searches, the ordered-expiry shortcut) agree with a
    /// plain scan of the entries, whatever order the expiries come in.
    #[test]
    fn lookups_match_a_scan() {
        for seed in 0..200u64 {
            let mut rng = crate::rng::Rng::new(seed);
            let mut outbox = Outbox::new(1 + below(&mut rng, 3));
            let mut clock = 0u64;
            for step in 0..300 {
                match below(&mut rng, 10) {
                    0..=3 => {
                        let mut m = msg(1 + below(&mut rng, 20) as usize);
                        clock += below(&mut rng, 5);
                        m.expires_at = match below(&mut rng, 8) {
                            0 => None,
                            // Now and then an expiry earlier than the last (a clock step).
                            1 => Some(clock.saturating_sub(below(&mut rng, 50))),
                            _ => Some(clock + 100),
                        };
                        outbox.push(m);
                    }
                    4 | 5 => {
                        // As the engine does: the next entry goes on the wire.
                        let sent = outbox.next_unsent().map(|e| match e {
                            Entry::Message(m) => (m.seq, m.payload.len()),
                            Entry::Skip { last, .. } => (*last, 0),
                        });
                        if let Some((last, bytes)) = sent {
                            outbox.mark_sent(last, bytes);
                        }
                    }
                    6 => {
                        let span = outbox.next_seq - outbox.acked;
                        let _ = outbox.ack_through(outbox.acked + below(&mut rng, span));
                    }
                    7 => {
                        let _ = outbox.drop_oldest_unsent();
                    }
                    8 => {
                        let _ = outbox.expire(clock.saturating_sub(below(&mut rng, 100)));
                    }
                    _ => outbox.rewind(),
                }
                let after = outbox.sent_through;
                let scan_expiry = outbox
                    .entries
                    .iter()
                    .filter_map(|e| match e {
                        Entry::Message(m) if m.seq > after => m.expires_at,
                        _ => None,
                    })
                    .min();
                assert_eq!(outbox.next_expiry(), scan_expiry, "seed {seed} step {step}");
                let scan_next = outbox
                    .entries
                    .iter()
                    .find(|e| e.last() > after)
                    .map(|e| (e.first(), e.last()));
                let next = outbox.next_unsent().map(|e| (e.first(), e.last()));
                assert_eq!(next, scan_next, "seed {seed} step {step}");
            }
        }
    }

    #[test]
    fn chunking_splits_at_chunk_size() {
        let mut m = msg(2500);
        m.seq = 3;
        let mut frames = Vec::new();
        frames_of(&Entry::Message(m), 1024, |f| frames.push(f.to_vec()));
        assert_eq!(frames.len(), 3);
        let sizes: Vec<usize> = frames
            .iter()
            .map(|f| match crate::codec::decode(f, 1 << 20).expect("valid") {
                Frame::Data {
                    payload,
                    chunk: Some(c),
                    ..
                } => {
                    assert_eq!((c.count, c.total_len), (3, 2500));
                    payload.len()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, vec![1024, 1024, 452]);
    }
}
