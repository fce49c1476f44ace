//! The wire, pinned: every frame type's bytes (the same hex as
//! docs/PROTOCOL.md §2), round trips, and a decoder that never panics.

use steadfast_core::codec::{
    decode, is_data, read_hello, read_varint, Chunk, DecodeError, Frame, SessionId,
};
use steadfast_core::record::{StoredMessage, StoredSession};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const MAX: u64 = 16 * 1024 * 1024;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn session() -> SessionId {
    SessionId(core::array::from_fn(|i| i as u8))
}

/// (frame, hex) pairs; docs/PROTOCOL.md shows the same bytes.
fn snapshots() -> Vec<(Frame<'static>, &'static str)> {
    vec![
        (
            Frame::Hello {
                secret: None,
                new: true,
                session: session(),
                delivered: 0,
                max_message_size: MAX,
            },
            "010101000102030405060708090a0b0c0d0e0f0080808008",
        ),
        (
            Frame::Hello {
                secret: Some([7; 16]),
                new: false,
                session: session(),
                delivered: 5,
                max_message_size: MAX,
            },
            "010102000102030405060708090a0b0c0d0e0f058080800807070707070707070707070707070707",
        ),
        (
            Frame::Welcome {
                resumed: true,
                session: session(),
                delivered: 300,
                max_message_size: MAX,
                window: None,
            },
            "020101000102030405060708090a0b0c0d0e0fac0280808008",
        ),
        (
            Frame::Welcome {
                resumed: false,
                session: session(),
                delivered: 0,
                max_message_size: MAX,
                window: Some(8 * 1024 * 1024),
            },
            "020102000102030405060708090a0b0c0d0e0f008080800880808004",
        ),
        (
            Frame::Data {
                seq: 1,
                binary: false,
                chunk: None,
                payload: b"hi",
            },
            "0300016869",
        ),
        (
            Frame::Data {
                seq: 300,
                binary: true,
                chunk: None,
                payload: &[0xff],
            },
            "0301ac02ff",
        ),
        (
            Frame::Data {
                seq: 7,
                binary: true,
                chunk: Some(Chunk {
                    index: 1,
                    count: 3,
                    total_len: 70_000,
                }),
                payload: b"ab",
            },
            "0303070103f0a2046162",
        ),
        (Frame::Ack { delivered: 5 }, "0405"),
        (Frame::Skip { first: 3, last: 4 }, "050304"),
        (Frame::Ping { id: 1234 }, "06d209"),
        (Frame::Pong { id: 1234 }, "07d209"),
    ]
}

#[test]
fn every_frame_type_has_pinned_bytes() {
    for (frame, expected) in snapshots() {
        let bytes = frame.to_vec();
        assert_eq!(hex(&bytes), expected, "{frame:?}");
        assert_eq!(decode(&bytes, MAX), Ok(frame));
    }
}

#[test]
#[cfg(not(target_arch = "wasm32"))] // reads the file system
fn the_protocol_document_shows_the_pinned_bytes() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/PROTOCOL.md"
    ))
    .expect("docs/PROTOCOL.md exists");
    let squashed: String = doc.chars().filter(|c| !c.is_whitespace()).collect();
    let is_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    for (frame, expected) in snapshots() {
        // The doc writes the hex with spaces between fields; the frame must
        // end where the hex does (the next line starts with a name).
        let whole = squashed
            .match_indices(expected)
            .any(|(at, _)| !squashed[at + expected.len()..].starts_with(is_hex));
        assert!(whole, "docs/PROTOCOL.md lacks {expected} for {frame:?}");
    }
}

#[test]
fn stored_records_have_pinned_bytes() {
    let s = StoredSession {
        secret: None,
        session: session(),
        welcomed: true,
        inbound_delivered: 5,
        next_seq: 300,
    };
    assert_eq!(
        hex(&s.encode()),
        "530101000102030405060708090a0b0c0d0e0f05ac02"
    );
    assert_eq!(StoredSession::decode(&s.encode()), Ok(s));
    let bound = StoredSession {
        secret: Some([7; 16]),
        ..s
    };
    assert_eq!(
        hex(&bound.encode()),
        "530103000102030405060708090a0b0c0d0e0f05ac0207070707070707070707070707070707"
    );
    assert_eq!(StoredSession::decode(&bound.encode()), Ok(bound));
    let cut = bound.encode();
    assert_eq!(
        StoredSession::decode(&cut[..cut.len() - 1]),
        Err(steadfast_core::codec::DecodeError::Truncated)
    );
    let m = StoredMessage {
        seq: 2,
        binary: false,
        payload: b"hi".to_vec(),
        enqueued_wall_ms: 1,
        expires_wall_ms: 0,
    };
    assert_eq!(hex(&m.encode()), "4d0100020100".to_owned() + "6869");
    assert_eq!(StoredMessage::decode(&m.encode()), Ok(m));
}

#[test]
fn malformed_frames_are_specific_errors() {
    assert_eq!(decode(&[], MAX), Err(DecodeError::Empty));
    assert_eq!(decode(&[0x09], MAX), Err(DecodeError::UnknownType(9)));
    assert_eq!(decode(&[0x04], MAX), Err(DecodeError::Truncated));
    assert_eq!(
        decode(&[0x04, 0x05, 0x00], MAX),
        Err(DecodeError::Trailing(1))
    );
    assert_eq!(
        decode(&[0x04, 0x85, 0x00], MAX),
        Err(DecodeError::BadVarint),
        "non-minimal"
    );
    assert_eq!(
        decode(&[0x03, 0x04, 0x01], MAX),
        Err(DecodeError::UnknownFlags(4))
    );
    assert_eq!(
        decode(&[0x03, 0x00, 0x00], MAX),
        Err(DecodeError::Invalid("seq 0"))
    );
    assert_eq!(
        decode(&[0x05, 0x04, 0x03], MAX),
        Err(DecodeError::Invalid("skip range"))
    );
    // WELCOME's window flag: its varint must be there and not 0; HELLO
    // has no such flag.
    let handshake = |kind: u8, flags: u8, tail: &[u8]| {
        let mut bytes = vec![kind, 0x01, flags];
        bytes.extend_from_slice(&[1; 16]);
        bytes.extend_from_slice(&[0x00, 0x7f]);
        bytes.extend_from_slice(tail);
        bytes
    };
    assert!(matches!(
        decode(&handshake(0x02, 0x02, &[0x10]), MAX),
        Ok(Frame::Welcome {
            window: Some(16),
            ..
        })
    ));
    assert_eq!(
        decode(&handshake(0x02, 0x02, &[]), MAX),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        decode(&handshake(0x02, 0x02, &[0x00]), MAX),
        Err(DecodeError::Invalid("window 0"))
    );
    assert_eq!(
        decode(&handshake(0x02, 0x00, &[0x10]), MAX),
        Err(DecodeError::Trailing(1))
    );
    assert_eq!(
        decode(&handshake(0x01, 0x04, &[0x10]), MAX),
        Err(DecodeError::UnknownFlags(4))
    );
    // Sequence numbers stop at 2^63-1, so a receiver's `seq + 1` cannot
    // overflow (the engine fuzzer found a SKIP through u64::MAX).
    let too_far = steadfast_core::codec::MAX_SEQ + 1;
    for frame in [
        Frame::Skip {
            first: 1,
            last: u64::MAX,
        },
        Frame::Skip {
            first: too_far,
            last: too_far,
        },
        Frame::Ack { delivered: too_far },
        Frame::Data {
            seq: too_far,
            binary: true,
            chunk: None,
            payload: b"x",
        },
        Frame::Hello {
            secret: None,
            new: false,
            session: session(),
            delivered: too_far,
            max_message_size: MAX,
        },
    ] {
        assert_eq!(
            decode(&frame.to_vec(), MAX),
            Err(DecodeError::Invalid("seq above 2^63-1")),
            "{frame:?}"
        );
    }
    // Stored records too: a corrupt store must not carry one in.
    let session_record = StoredSession {
        secret: None,
        session: session(),
        welcomed: true,
        inbound_delivered: u64::MAX,
        next_seq: 1,
    };
    assert_eq!(
        StoredSession::decode(&session_record.encode()),
        Err(DecodeError::Invalid("seq above 2^63-1"))
    );
    let message_record = StoredMessage {
        seq: too_far,
        binary: true,
        payload: vec![1],
        enqueued_wall_ms: 0,
        expires_wall_ms: 0,
    };
    assert_eq!(
        StoredMessage::decode(&message_record.encode()),
        Err(DecodeError::Invalid("seq above 2^63-1"))
    );
    let at_the_limit = Frame::Skip {
        first: steadfast_core::codec::MAX_SEQ,
        last: steadfast_core::codec::MAX_SEQ,
    };
    assert_eq!(decode(&at_the_limit.to_vec(), MAX), Ok(at_the_limit));
    let mut hello = Frame::Hello {
        secret: None,
        new: false,
        session: session(),
        delivered: 0,
        max_message_size: 0,
    }
    .to_vec();
    hello[1] = 2;
    assert_eq!(decode(&hello, MAX), Err(DecodeError::UnsupportedVersion(2)));
    // A chunk header that declares more than the limit is refused before any allocation.
    let huge = Frame::Data {
        seq: 1,
        binary: true,
        chunk: Some(Chunk {
            index: 0,
            count: 2,
            total_len: MAX + 1,
        }),
        payload: b"",
    };
    assert_eq!(
        decode(&huge.to_vec(), MAX),
        Err(DecodeError::TooLarge {
            size: MAX + 1,
            limit: MAX
        })
    );
    let many = Frame::Data {
        seq: 1,
        binary: true,
        chunk: Some(Chunk {
            index: 0,
            count: u32::MAX,
            total_len: 10,
        }),
        payload: b"",
    };
    assert!(matches!(
        decode(&many.to_vec(), MAX),
        Err(DecodeError::Invalid(_))
    ));
    // Varints: the largest value round-trips, anything above is refused.
    assert_eq!(
        read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Ok((u64::MAX, 10))
    );
    assert_eq!(
        read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
        Err(DecodeError::BadVarint)
    );
}

#[test]
fn a_first_frame_must_be_hello_and_its_close_code_says_why() {
    let hello = Frame::Hello {
        secret: None,
        new: true,
        session: session(),
        delivered: 0,
        max_message_size: 1024,
    };
    assert_eq!(
        read_hello(&hello.to_vec()),
        Ok(steadfast_core::codec::HelloInfo {
            session: session(),
            new: true,
            secret: None
        })
    );
    let with_secret = Frame::Hello {
        secret: Some([9; 16]),
        new: false,
        session: session(),
        delivered: 3,
        max_message_size: 1024,
    };
    let bytes = with_secret.to_vec();
    assert_eq!(decode(&bytes, 1024), Ok(with_secret));
    assert_eq!(read_hello(&bytes).map(|h| h.secret), Ok(Some([9; 16])));
    // The secret's flag without its 16 bytes.
    assert!(decode(&bytes[..bytes.len() - 1], 1024).is_err());
    let ack = Frame::Ack { delivered: 1 }.to_vec();
    assert_eq!(read_hello(&ack).map_err(|e| e.close_code()), Err(4900));
    let mut future = hello.to_vec();
    future[1] = 2; // version 2
    assert_eq!(read_hello(&future).map_err(|e| e.close_code()), Err(4905));
    assert_eq!(read_hello(&[]).map_err(|e| e.close_code()), Err(4900));
    let data = Frame::Data {
        seq: 1,
        binary: true,
        chunk: None,
        payload: b"x",
    };
    assert!(is_data(&data.to_vec()));
    assert!(!is_data(&ack));
    assert!(!is_data(&[]));
}
