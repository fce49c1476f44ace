//! The delivery property, under a seeded network emulator: for every seed,
//! every message sent by either side is delivered exactly once and in order,
//! every receipt resolves, and no timer fires in a busy loop.
//!
//! `STEADFAST_SIM_SEEDS=N` runs more seeds; `STEADFAST_SIM_SEED=S` runs one.

use steadfast_core::{
    AckConfig, BackoffConfig, Config, EngineError, HeartbeatConfig, Limits, OutboxConfig, Payload,
    Receipt,
};
use steadfast_testkit::sim::{Netem, Sim};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn config() -> Config {
    Config {
        chunk_size: 1024,
        backoff: BackoffConfig {
            initial_ms: 50,
            max_ms: 1_000,
            fast_retry_ms: 20,
            healthy_after_ms: 500,
            connect_timeout_ms: 500,
            ..BackoffConfig::default()
        },
        ack: AckConfig {
            delay_ms: 20,
            every: 8,
            every_bytes: 64 * 1024,
            ..AckConfig::default()
        },
        heartbeat: Some(HeartbeatConfig {
            interval_ms: 400,
            idle_ms: 600,
            probe_timeout_ms: 300,
            plain_ping: None,
        }),
        limits: Limits {
            gap_timeout_ms: 300,
            handshake_timeout_ms: 500,
            reorder_window: 64,
            ..Limits::default()
        },
        outbox: OutboxConfig {
            ttl_ms: None,
            max_in_flight_bytes: 8 * 1024,
            ..OutboxConfig::default()
        },
        ..Config::default()
    }
}

fn payload(sim: &mut Sim, side: &str, n: usize) -> Payload {
    let size = match sim.rng().up_to(9) {
        0 => 2_000 + sim.rng().up_to(4_000) as usize, // chunked
        1 => 0,
        _ => sim.rng().up_to(200) as usize,
    };
    if sim.rng().up_to(1) == 0 {
        let mut text = format!("{side}#{n}:");
        text.extend(std::iter::repeat_n('x', size));
        Payload::Text(text)
    } else {
        let mut bytes = format!("{side}#{n}:").into_bytes();
        bytes.extend((0..size).map(|i| (i * 31 + n) as u8));
        Payload::Binary(bytes)
    }
}

/// Run one seed; `Err` describes the first broken property.
fn run(seed: u64) -> Result<(), String> {
    run_with(seed, 0).map(|_| ())
}

/// Run one seed, where a cut expires the server's session state with
/// `expire_ppm` (it is rebuilt from the server's small record). Then the
/// server's application still gets every client message once, in order;
/// the client gets the server's messages in order and never twice, and
/// hears of those lost with the state as skipped.
/// Returns how many expiries there were, and how many seqs the client
/// heard were skipped.
fn run_with(seed: u64, expire_ppm: u64) -> Result<(u64, u64), String> {
    let expiring = expire_ppm > 0;
    let netem = Netem {
        expire_ppm,
        ..Netem::default()
    };
    let mut sim = Sim::new(config(), seed, netem);
    let messages = 15 + sim.rng().up_to(15) as usize;
    let mut schedule: Vec<(u64, bool)> = (0..messages * 2)
        .map(|i| (sim.rng().up_to(4_000), i % 2 == 0))
        .collect();
    schedule.sort();
    let (mut client_sent, mut server_sent) = (Vec::new(), Vec::new());
    let (mut client_receipts, mut server_receipts): (Vec<Receipt>, Vec<Receipt>) =
        (Vec::new(), Vec::new());
    sim.start();

    // Chaos while sending.
    let mut next = 0;
    let mut steps = 0u64;
    while next < schedule.len() {
        while next < schedule.len() && schedule[next].0 <= sim.now {
            let from_client = schedule[next].1;
            let p = payload(&mut sim, if from_client { "c" } else { "s" }, next);
            if from_client {
                client_sent.push(p.clone());
                client_receipts.push(sim.client_send(p));
            } else {
                server_sent.push(p.clone());
                server_receipts.push(sim.server_send(p));
            }
            next += 1;
        }
        if !sim.step() {
            return Err(format!("nothing scheduled at t={}", sim.now));
        }
        steps += 1;
        if steps > 200_000 {
            return Err("livelock while sending".into());
        }
    }
    // Some more chaos, then a calm network so the run converges.
    let chaos_until = sim.now + 3_000;
    sim.drive_until(200_000, |s| s.now >= chaos_until)?;
    sim.netem.cut_ppm = 0;
    sim.netem.server_down_ppm = 0;
    let (nc, ns) = (client_sent.len(), server_sent.len());
    sim.drive_until(200_000, |s| {
        let o = &s.observed;
        let client_done = if expiring {
            o.client_inbox.len() + o.client_skipped as usize >= ns
        } else {
            o.server_acked.len() >= ns && o.client_inbox.len() >= ns
        };
        o.client_acked.len() >= nc && o.server_inbox.len() >= nc && client_done
    })
    .map_err(|e| {
        format!(
            "{e}: client acked {}/{nc}, server acked {}/{ns}, server got {}/{nc}, client got {}/{ns}, state {:?}",
            sim.observed.client_acked.len(),
            sim.observed.server_acked.len(),
            sim.observed.server_inbox.len(),
            sim.observed.client_inbox.len(),
            sim.client.state()
        )
    })?;
    // Let stray timers run out; nothing more may arrive.
    let settle = sim.now + 2_000;
    sim.drive_until(100_000, |s| s.now >= settle)?;

    let o = &sim.observed;
    if o.server_inbox != client_sent {
        return Err(first_difference(
            "server inbox",
            &o.server_inbox,
            &client_sent,
        ));
    }
    if expiring {
        // In order, never twice: a subsequence of what the server sent.
        let mut rest = server_sent.iter();
        if let Some(stray) = o
            .client_inbox
            .iter()
            .find(|got| !rest.by_ref().any(|sent| sent == *got))
        {
            return Err(format!(
                "client inbox: {stray:?} twice or out of order ({} expiries)",
                o.expiries
            ));
        }
        if o.client_inbox.len() + o.client_skipped as usize != server_sent.len() {
            return Err(format!(
                "client inbox: {} received and {} skipped of {} sent",
                o.client_inbox.len(),
                o.client_skipped,
                server_sent.len()
            ));
        }
    } else if o.client_inbox != server_sent {
        return Err(first_difference(
            "client inbox",
            &o.client_inbox,
            &server_sent,
        ));
    }
    let mut acked = o.client_acked.clone();
    acked.sort();
    if acked != client_receipts {
        return Err(format!(
            "client receipts resolved {acked:?}, sent {client_receipts:?}"
        ));
    }
    let mut acked = o.server_acked.clone();
    acked.sort();
    // An expiry takes the receipts of the messages it lost with it.
    if !expiring && acked != server_receipts {
        return Err(format!(
            "server receipts resolved {acked:?}, sent {server_receipts:?}"
        ));
    }
    if !o.failed.is_empty() {
        return Err(format!("receipts failed: {:?}", o.failed));
    }
    if let Some(e) = o
        .errors
        .iter()
        .find(|e| matches!(e, EngineError::Decode(_) | EngineError::Protocol(_)))
    {
        return Err(format!("an engine saw a malformed or misplaced frame: {e}"));
    }
    if std::env::var_os("STEADFAST_SIM_VERBOSE").is_some() {
        eprintln!(
            "seed {seed}: t={} ms, {} connections, {} cuts, {}+{} messages",
            sim.now,
            o.connections,
            o.cuts,
            client_sent.len(),
            server_sent.len()
        );
    }
    let held = (sim.client.buffered_bytes(), sim.server.buffered_bytes());
    if held != (0, 0) {
        return Err(format!(
            "bytes still held for reordering/reassembly after the run: {held:?}"
        ));
    }
    if (sim.client.queued(), sim.server.queued()) != (0, 0) {
        return Err("messages still queued after every receipt resolved".into());
    }
    if sim.max_same_time_steps > 20 {
        return Err(format!(
            "{} steps at one instant: a timer in a busy loop",
            sim.max_same_time_steps
        ));
    }
    Ok((o.expiries, o.client_skipped))
}

fn first_difference(what: &str, got: &[Payload], want: &[Payload]) -> String {
    let i = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let show = |p: Option<&Payload>| match p {
        Some(Payload::Text(t)) => t.chars().take(24).collect::<String>(),
        Some(Payload::Binary(b)) => String::from_utf8_lossy(&b[..b.len().min(24)]).into_owned(),
        None => "<none>".into(),
    };
    format!(
        "{what}: {} messages, expected {}; first difference at #{i}: got {:?}, expected {:?}",
        got.len(),
        want.len(),
        show(got.get(i)),
        show(want.get(i))
    )
}

#[test]
fn every_message_is_delivered_exactly_once_in_order_for_every_seed() {
    let seeds: Vec<u64> = match std::env::var("STEADFAST_SIM_SEED") {
        Ok(one) => vec![one.parse().expect("STEADFAST_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("STEADFAST_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1_000);
            (0..n).collect()
        }
    };
    every_seed(&seeds, run);
}

/// Run `one` for each seed (a panic counts as a failure); fail naming the
/// first five seeds that broke a property. Returns what the good runs gave.
fn every_seed<T>(
    seeds: &[u64],
    one: impl Fn(u64) -> Result<T, String> + std::panic::RefUnwindSafe,
) -> Vec<T> {
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for &seed in seeds {
        match std::panic::catch_unwind(|| one(seed)) {
            Ok(Ok(result)) => results.push(result),
            Ok(Err(message)) => failures.push(format!("seed {seed}: {message}")),
            Err(_) => failures.push(format!("seed {seed}: panicked")),
        }
        if failures.len() >= 5 {
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed (rerun one with STEADFAST_SIM_SEED=<seed>):\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
    results
}

#[test]
fn expiring_server_sessions_never_duplicate_or_reorder_for_every_seed() {
    let seeds: Vec<u64> = match std::env::var("STEADFAST_SIM_SEED") {
        Ok(one) => vec![one.parse().expect("STEADFAST_SIM_SEED is a number")],
        Err(_) => (0..300).collect(),
    };
    // Half the cuts expire the server's session.
    let runs = every_seed(&seeds, |seed| run_with(seed, 500_000));
    let expiries: u64 = runs.iter().map(|(e, _)| e).sum();
    let skipped: u64 = runs.iter().map(|(_, s)| s).sum();
    // Guard against a run where nothing expired, or nothing was lost.
    assert!(
        expiries >= seeds.len() as u64 && skipped > 0,
        "{expiries} expiries, {skipped} seqs skipped over {} seeds",
        seeds.len()
    );
}

#[test]
fn the_emulator_really_cuts_reorders_duplicates_and_the_engines_resume() {
    // Guard against a harness that passes because nothing happens.
    let (mut cuts, mut connections, mut reorders, mut duplicates) = (0, 0, 0, 0);
    for seed in 0..20 {
        let mut sim = Sim::new(config(), seed, Netem::default());
        sim.start();
        for i in 0..40 {
            let at = sim.now + 50;
            sim.drive_until(10_000, |s| s.now >= at)
                .expect("time passes");
            sim.client_send(Payload::Text(format!("m{i}")));
            sim.server_send(Payload::Binary(vec![i as u8; 1500]));
        }
        sim.netem.cut_ppm = 0;
        sim.netem.server_down_ppm = 0;
        sim.drive_until(100_000, |s| {
            s.observed.server_inbox.len() >= 40 && s.observed.client_inbox.len() >= 40
        })
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(sim.observed.server_inbox.len(), 40, "seed {seed}");
        assert_eq!(sim.observed.client_inbox.len(), 40, "seed {seed}");
        // The engines' own counters agree with what the harness saw.
        let (client, server) = (*sim.client.stats(), *sim.server.stats());
        assert_eq!(server.messages_in, 40, "seed {seed}");
        assert_eq!(client.messages_in, 40, "seed {seed}");
        assert_eq!(client.messages_out, 40, "seed {seed}: first sends");
        assert_eq!(
            client.connects,
            sim.observed.connect_times.len() as u64,
            "seed {seed}"
        );
        assert_eq!(server.connects, sim.observed.connections, "seed {seed}");
        assert!(client.resumes < sim.observed.connections, "seed {seed}");
        if sim.observed.cuts > 1 {
            assert!(client.resumes >= 1, "seed {seed}: {client:?}");
            // A WELCOME lost to a cut is a resume the server counted alone.
            assert!(client.resumes <= server.resumes, "seed {seed}");
        }
        assert!(
            client.duplicates + server.duplicates >= sim.observed.duplicates,
            "seed {seed}: injected duplicates are counted: {client:?} {server:?}"
        );
        // 1,500-byte messages at a 1 KiB chunk size: two chunks each.
        assert!(server.chunks_out >= 80, "seed {seed}: {server:?}");
        assert!(client.chunks_in >= 80, "seed {seed}: {client:?}");
        assert!(client.acks_in >= 1 && server.acks_out >= 1, "seed {seed}");
        cuts += sim.observed.cuts;
        connections += sim.observed.connections;
        reorders += sim.observed.reorders;
        duplicates += sim.observed.duplicates;
    }
    eprintln!("20 seeds: {cuts} cuts, {connections} connections, {reorders} reorders, {duplicates} duplicates");
    assert!(cuts >= 40, "cuts: {cuts}");
    assert!(connections >= cuts, "connections: {connections}");
    assert!(reorders >= 20, "reorders: {reorders}");
    assert!(duplicates >= 10, "duplicates: {duplicates}");
}
