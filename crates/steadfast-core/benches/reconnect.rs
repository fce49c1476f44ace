//! Reconnect spread: 10,000 engines (each its own seed) lose their server at
//! the same instant; it is back after an outage. Virtual time, real engines.
//!
//! Reports, per outage length: how long after the server is back each
//! client is connected again (p50, p99, max), and how evenly the attempts
//! during the outage are spread: the busiest 100 ms window against the mean
//! rate (a storm shows as a high ratio). One JSON object per line on
//! stdout, for `cargo xtask bench`; `--quick` runs 1,000 clients.

#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use steadfast_core::{Config, Engine, Output, Reliability};

const WINDOW_MS: u64 = 100;

struct Outcome {
    /// ms from the server's return to each client's next open.
    waits: Vec<u64>,
    /// Connect attempts per 100 ms window while the server was down.
    windows: Vec<u64>,
}

/// Drain `engine`; true if it asked to connect.
fn drain(engine: &mut Engine) -> bool {
    let mut connect = false;
    while let Some(output) = engine.poll_output() {
        match output {
            Output::Connect { .. } => connect = true,
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    connect
}

fn simulate(config: &Config, clients: u64, outage_ms: u64, seed: u64) -> Outcome {
    let mut engines = Vec::with_capacity(clients as usize);
    // (next timer, index): the earliest first.
    let mut timers = BinaryHeap::new();
    for i in 0..clients {
        let mut engine = Engine::client(config.clone(), seed ^ (i * 0x9e37_79b9_7f4a_7c15))
            .expect("the default config is valid");
        engine.connect(0);
        drain(&mut engine);
        engine.handle_open(0, None);
        drain(&mut engine);
        // The server goes away: every connection drops at t = 0.
        engine.handle_close(0, 1006, "server gone");
        drain(&mut engine);
        if let Some(at) = engine.poll_timeout() {
            timers.push(Reverse((at, i as usize)));
        }
        engines.push(engine);
    }
    let mut windows = vec![0u64; (outage_ms / WINDOW_MS).max(1) as usize];
    let mut waits = Vec::with_capacity(clients as usize);
    while let Some(Reverse((at, i))) = timers.pop() {
        let engine = &mut engines[i];
        engine.handle_timeout(at);
        if drain(engine) {
            if at < outage_ms {
                windows[(at / WINDOW_MS) as usize] += 1;
                // Refused: the server is down.
                engine.handle_close(at, 1006, "connection refused");
                drain(engine);
            } else {
                engine.handle_open(at, None);
                drain(engine);
                waits.push(at - outage_ms);
                continue;
            }
        }
        if let Some(next) = engine.poll_timeout() {
            timers.push(Reverse((next, i)));
        }
    }
    waits.sort_unstable();
    Outcome { waits, windows }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or(0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let clients = if quick { 1_000 } else { 10_000 };
    let config = Config {
        reliability: Reliability::Off,
        ..Config::default()
    };
    for outage_ms in [1_000, 5_000, 30_000, 60_000] {
        let outcome = simulate(&config, clients, outage_ms, 7);
        assert_eq!(
            outcome.waits.len() as u64,
            clients,
            "every client came back"
        );
        let attempts: u64 = outcome.windows.iter().sum();
        let mean = attempts as f64 / outcome.windows.len() as f64;
        let busiest = outcome.windows.iter().copied().max().unwrap_or(0);
        println!(
            "{{\"bench\":\"reconnect\",\"clients\":{clients},\"outage_ms\":{outage_ms},\
             \"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{},\"attempts_per_s\":{:.0},\
             \"busiest_window\":{busiest},\"mean_window\":{mean:.1},\"busiest_over_mean\":{:.2}}}",
            percentile(&outcome.waits, 0.5),
            percentile(&outcome.waits, 0.99),
            outcome.waits.last().copied().unwrap_or(0),
            attempts as f64 * 1000.0 / outage_ms as f64,
            busiest as f64 / mean,
        );
    }
}
