//! Arbitrary frames into open client and server engines: whatever the peer
//! sends, the engine never panics and its memory stays within the limits.
//!
//! Input: a sequence of `[op] [len] [len bytes]` records. `op` picks the
//! input (frame, time step, close, hint); the bytes are the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steadfast_core::codec::{Frame, SUBPROTOCOL};
use steadfast_core::{Config, Engine, Hint, Limits, Output};

fn config() -> Config {
    Config {
        limits: Limits {
            max_message_size: 64 * 1024,
            max_buffered_bytes: 256 * 1024,
            ..Limits::default()
        },
        chunk_size: 1024,
        ..Config::default()
    }
}

fn drain(engine: &mut Engine) {
    // The drain rule: until Timeout or None. Bounded so a livelock shows as a hang.
    for _ in 0..100_000 {
        match engine.poll_output() {
            None | Some(Output::Timeout(_)) => return,
            Some(_) => {}
        }
    }
    panic!("the engine produced 100,000 outputs for one input");
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let client = Engine::client(config(), 7).expect("valid config");
    let server = Engine::server(config(), 8, client.session()).expect("valid config");
    let session = client.session();
    for (is_client, mut engine) in [(true, client), (false, server)] {
        let mut now = 0u64;
        engine.connect(now);
        drain(&mut engine);
        engine.handle_open(now, Some(SUBPROTOCOL));
        drain(&mut engine);
        // Usually complete the handshake first, so the fuzzer spends its
        // time on the open session rather than on finding a valid greeting.
        if first & 1 == 1 {
            let (delivered, max_message_size) = (u64::from(first >> 4), 64 * 1024);
            let greeting = if is_client {
                Frame::Welcome {
                    resumed: first & 2 == 2,
                    session,
                    delivered,
                    max_message_size,
                    window: (first & 4 == 4).then_some(u64::from(first) * 1024 + 1),
                }
            } else {
                Frame::Hello {
                    new: first & 2 == 2,
                    session,
                    delivered,
                    max_message_size,
                    secret: (first & 4 == 4).then_some([first; 16]),
                }
            };
            engine.handle_frame(now, true, &greeting.to_vec());
            drain(&mut engine);
        }
        let mut rest = data;
        while let [op, len, tail @ ..] = rest {
            let len = (*len as usize).min(tail.len());
            let (bytes, tail) = tail.split_at(len);
            rest = tail;
            match op % 10 {
                0..=3 => engine.handle_frame(now, op % 2 == 0, bytes),
                8 => engine.handle_read_burst_end(),
                9 => engine.handle_taken(len),
                4 => {
                    now += u64::from(bytes.first().copied().unwrap_or(1)) * 10;
                    engine.handle_timeout(now);
                }
                5 => engine.handle_close(now, u16::from_le_bytes([len as u8, *op]), ""),
                6 => engine.handle_hint(now, Hint::Online),
                _ => {
                    let _ = engine.send(now, now, steadfast_core::Payload::Binary(bytes.to_vec()));
                }
            }
            drain(&mut engine);
            assert!(engine.taken() <= engine.delivered());
            let limit = config().limits.max_buffered_bytes;
            assert!(
                engine.buffered_bytes() <= limit,
                "buffered {} > {limit}",
                engine.buffered_bytes()
            );
        }
    }
});
