//! The engine alone: messages per second through a client/server pair of
//! engines wired back to back (no sockets, no latency, no faults).
//!
//! Each iteration sends a batch from the client, hands every frame to the
//! server, lets the server's coalesced ACKs flow back, and checks that every
//! message arrived and every receipt resolved — so the figure includes
//! encoding, decoding, sequencing, dedup checks, ACK handling and (for the
//! large case) chunking and reassembly.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p steadfast-core`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use steadfast_core::codec::SUBPROTOCOL;
use steadfast_core::{Config, Engine, Event, Output, Payload, State};

/// Two engines and a virtual clock.
struct Pair {
    now: u64,
    client: Engine,
    server: Engine,
    delivered: u64,
    acked: u64,
}

impl Pair {
    fn new(config: Config) -> Pair {
        let client = Engine::client(config.clone(), 1).expect("default config is valid");
        let server = Engine::server(config, 2, client.session()).expect("default config is valid");
        let mut pair = Pair {
            now: 0,
            client,
            server,
            delivered: 0,
            acked: 0,
        };
        pair.client.connect(0);
        pair.pump();
        pair.server.handle_open(0, Some(SUBPROTOCOL));
        pair.client.handle_open(0, Some(SUBPROTOCOL));
        pair.pump();
        assert!(matches!(pair.client.state(), State::Open { .. }));
        pair
    }

    /// Move frames both ways until neither engine has anything to say.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(output) = self.client.poll_output() {
                match output {
                    Output::Transmit(t) => {
                        moved = true;
                        self.server.handle_frame(self.now, t.binary, &t.data);
                    }
                    Output::Event(Event::Acked(_)) => self.acked += 1,
                    Output::Timeout(_) => break,
                    _ => {}
                }
            }
            while let Some(output) = self.server.poll_output() {
                match output {
                    Output::Transmit(t) => {
                        moved = true;
                        self.client.handle_frame(self.now, t.binary, &t.data);
                    }
                    Output::Event(Event::Message(p)) => {
                        black_box(p);
                        self.delivered += 1;
                        // The application takes it at once.
                        self.server.handle_taken(1);
                    }
                    Output::Timeout(_) => break,
                    _ => {}
                }
            }
            // Timers due now (an ACK triggered by count or bytes).
            for engine in [&mut self.client, &mut self.server] {
                if engine.poll_timeout().is_some_and(|t| t <= self.now) {
                    engine.handle_timeout(self.now);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Send `batch` messages of `payload`, deliver them, and flush the ACKs.
    fn round(&mut self, batch: u64, payload: &[u8]) {
        let (delivered, acked) = (self.delivered, self.acked);
        for _ in 0..batch {
            self.client
                .send(self.now, 0, Payload::Binary(payload.to_vec()))
                .expect("the outbox holds a batch");
            self.pump();
        }
        // The last ACK waits on its coalescing timer.
        self.now += 60;
        self.server.handle_timeout(self.now);
        self.client.handle_timeout(self.now);
        self.pump();
        assert_eq!(self.delivered - delivered, batch, "every message arrives");
        assert_eq!(self.acked - acked, batch, "every receipt resolves");
    }
}

fn one_way(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_pair");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for (name, size, batch) in [
        ("64B", 64usize, 256u64),
        ("4KiB", 4096, 256),
        ("1MiB", 1 << 20, 4),
    ] {
        let payload = vec![0x5a; size];
        // Small messages are counted per message; the chunked case per byte.
        group.throughput(if size >= 1 << 20 {
            Throughput::Bytes(batch * size as u64)
        } else {
            Throughput::Elements(batch)
        });
        group.bench_with_input(BenchmarkId::from_parameter(name), &payload, |b, payload| {
            let mut pair = Pair::new(Config::default());
            b.iter(|| pair.round(batch, payload));
        });
    }
    group.finish();
}

criterion_group!(benches, one_way);
criterion_main!(benches);
