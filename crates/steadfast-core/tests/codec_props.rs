//! Property tests of the codec (native: proptest needs an OS RNG).
#![cfg(not(target_arch = "wasm32"))]

use proptest::prelude::*;
use steadfast_core::codec::{decode, Chunk, Frame, SessionId, MAX_SEQ};
use steadfast_core::record::{StoredMessage, StoredSession};

const MAX: u64 = 16 * 1024 * 1024;

fn session() -> SessionId {
    SessionId(core::array::from_fn(|i| i as u8))
}

fn arb_frame() -> impl Strategy<Value = (u8, u64, u64, bool, [u8; 16], Vec<u8>, u32, u32)> {
    (
        0u8..7,
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        any::<[u8; 16]>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        2u32..64,
        any::<u32>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn frames_round_trip((kind, a, b, flag, id, payload, count, index) in arb_frame()) {
        let mut id = id;
        id[0] |= 1; // never the nil session
        let seq = a % (MAX_SEQ + 1); // sequence numbers stop at MAX_SEQ
        let frame = match kind {
            0 => Frame::Hello { secret: None, new: flag, session: SessionId(id), delivered: seq, max_message_size: b },
            1 => Frame::Welcome {
                resumed: flag, session: SessionId(id), delivered: seq, max_message_size: b,
                window: (count % 2 == 0).then_some(b.max(1)),
            },
            2 => Frame::Data { seq: seq.max(1), binary: flag, chunk: None, payload: &payload },
            3 => Frame::Data {
                seq: seq.max(1), binary: flag,
                chunk: Some(Chunk { index: index % count, count, total_len: payload.len() as u64 + u64::from(index % 1000) }),
                payload: &payload,
            },
            4 => Frame::Ack { delivered: seq },
            5 => Frame::Skip { first: seq.clamp(1, MAX_SEQ - 1000), last: seq.clamp(1, MAX_SEQ - 1000) + b % 1000 },
            _ => Frame::Ping { id: a },
        };
        let bytes = frame.to_vec();
        prop_assert_eq!(decode(&bytes, MAX), Ok(frame));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_valid_ones_re_encode_identically(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(frame) = decode(&bytes, MAX) {
            // Minimal varints and strict flags: one encoding per frame.
            prop_assert_eq!(frame.to_vec(), bytes.clone());
        }
        let _ = StoredSession::decode(&bytes);
        let _ = StoredMessage::decode(&bytes);
    }

    #[test]
    fn truncations_of_valid_frames_are_errors(cut in 0usize..40, seq in 1u64..1_000_000) {
        let frame = Frame::Hello { secret: None, new: true, session: session(), delivered: seq, max_message_size: MAX };
        let bytes = frame.to_vec();
        let cut = cut.min(bytes.len() - 1);
        prop_assert!(decode(&bytes[..cut], MAX).is_err());
    }
}
