//! Engine behaviour, driven by hand with virtual time.

use steadfast_core::codec::{self, Frame, SessionId};
use steadfast_core::record::{StoredMessage, StoredSession};
use steadfast_core::*;
// The same tests run in Node under wasm-bindgen-test (wasm-tests/tests/core.rs).
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const WALL: u64 = 1_700_000_000_000;

/// Drain the engine, as an application would: every message it hands out
/// is taken at once (see `drain_untaken` for one that has not yet).
fn drain(engine: &mut Engine) -> Vec<Output> {
    let mut out = Vec::new();
    loop {
        let more = drain_untaken(engine);
        if more.is_empty() {
            return out;
        }
        let messages = more
            .iter()
            .filter(|o| matches!(o, Output::Event(Event::Message(_))))
            .count();
        out.extend(more);
        engine.handle_taken(messages);
    }
}

/// Drain the engine without taking the messages it hands out.
fn drain_untaken(engine: &mut Engine) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(o) = engine.poll_output() {
        if matches!(o, Output::Timeout(_)) {
            break;
        }
        out.push(o);
    }
    out
}

fn frames(outputs: &[Output]) -> Vec<Frame<'_>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit(t) if t.binary => {
                Some(codec::decode(&t.data, u64::MAX).expect("engine writes valid frames"))
            }
            _ => None,
        })
        .collect()
}

fn events(outputs: &[Output]) -> Vec<Event> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn connects(outputs: &[Output]) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::Connect { .. }))
        .count()
}

fn config() -> Config {
    Config {
        chunk_size: 1024,
        ..Config::default()
    }
}

/// A client that has asked to connect (its Connect output drained).
fn started(config: Config, seed: u64) -> Engine {
    let mut engine = Engine::client(config, seed).expect("config");
    engine.connect(0);
    let _ = drain(&mut engine);
    engine
}

/// Connect, open with steadfast.v1, answer HELLO with a WELCOME for the same session.
fn open_reliable(engine: &mut Engine, now: u64, server_delivered: u64) -> Vec<Output> {
    engine.connect(now);
    let _ = drain(engine);
    engine.handle_open(now, Some(SUBPROTOCOL));
    let out = drain(engine);
    let session = match frames(&out).first() {
        Some(Frame::Hello { session, .. }) => *session,
        other => panic!("expected HELLO first, got {other:?}"),
    };
    welcome(engine, now, session, server_delivered)
}

/// A client with `ack` as its ACK policy, open in reliable mode at 0.
fn open_with_acks(ack: AckConfig) -> Engine {
    let mut engine = Engine::client(Config { ack, ..config() }, 1).expect("config");
    let _ = open_reliable(&mut engine, 0, 0);
    engine
}

/// Feed one-byte DATA frames for `seqs`, each at `at(seq)`, and drain:
/// every one is delivered, and no ACK leaves in the drain that delivered.
fn deliver_unacknowledged(
    engine: &mut Engine,
    seqs: std::ops::RangeInclusive<u64>,
    at: impl Fn(u64) -> u64,
) {
    let count = seqs.clone().count();
    for seq in seqs {
        let data = Frame::Data {
            seq,
            binary: true,
            chunk: None,
            payload: &[seq as u8],
        };
        engine.handle_frame(at(seq), true, &data.to_vec());
    }
    let out = drain(engine);
    let delivered = events(&out)
        .iter()
        .filter(|e| matches!(e, Event::Message(_)))
        .count();
    assert_eq!(delivered, count, "{out:?}");
    assert!(
        frames(&out).iter().all(|f| !matches!(f, Frame::Ack { .. })),
        "never in the drain that delivered: {out:?}"
    );
}

fn welcome(engine: &mut Engine, now: u64, session: SessionId, delivered: u64) -> Vec<Output> {
    welcome_with_window(engine, now, session, delivered, None)
}

fn welcome_with_window(
    engine: &mut Engine,
    now: u64,
    session: SessionId,
    delivered: u64,
    window: Option<u64>,
) -> Vec<Output> {
    let w = Frame::Welcome {
        resumed: true,
        session,
        delivered,
        max_message_size: 1 << 24,
        window,
    };
    engine.handle_frame(now, true, &w.to_vec());
    drain(engine)
}

/// Run timers from `from` to `to` in steps, collecting outputs.
fn run_timers(engine: &mut Engine, from: u64, to: u64) -> Vec<Output> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= to {
        engine.handle_timeout(now);
        out.extend(drain(engine));
        match engine.poll_timeout() {
            Some(at) if at > now => now = at,
            _ => now += 1,
        }
    }
    out
}

#[test]
fn an_auth_rejection_stops_without_a_refresher() {
    let mut engine = started(config(), 1);
    engine.handle_open(10, Some(SUBPROTOCOL));
    let _ = drain(&mut engine);
    engine.handle_close(20, 4001, "token expired");
    let out = drain(&mut engine);
    assert!(matches!(
        engine.state(),
        State::Closed {
            reason: StopReason::Rejected { code: 4001, .. }
        }
    ));
    assert!(events(&out)
        .iter()
        .any(|e| matches!(e, Event::Error(err) if err.code() == "ERR_AUTH_FAILED")));
    // An hour later nothing has tried again.
    assert_eq!(connects(&run_timers(&mut engine, 20, 3_600_000)), 0);
    assert_eq!(engine.poll_timeout(), None);
}

/// A client that may refresh credentials, asked to open its first connection.
fn connecting_with_auth_refresh() -> Engine {
    let mut engine = Engine::client(
        Config {
            can_refresh_auth: true,
            ..config()
        },
        1,
    )
    .expect("config");
    engine.connect(0);
    let _ = drain(&mut engine);
    engine
}

#[test]
fn credentials_the_driver_cannot_get_are_refreshed_once_then_stop() {
    let mut engine = connecting_with_auth_refresh();
    engine.handle_auth_unavailable(5);
    let out = drain(&mut engine);
    assert!(events(&out).contains(&Event::RefreshAuth));
    assert_eq!(connects(&out), 0, "no retry of its own");
    engine.handle_auth_refreshed(6, true);
    assert_eq!(connects(&drain(&mut engine)), 1);
    // Unavailable again before a healthy connection: stop, no loop.
    engine.handle_auth_unavailable(7);
    let out = drain(&mut engine);
    assert!(!events(&out).contains(&Event::RefreshAuth));
    assert_eq!(
        *engine.state(),
        State::Closed {
            reason: StopReason::AuthFailed
        }
    );
    assert_eq!(
        connects(&run_timers(&mut engine, 7, 600_000)),
        0,
        "stopped for good"
    );
    // Only while a connect is pending does it mean anything.
    engine.handle_auth_unavailable(600_001);
    assert!(drain(&mut engine).is_empty());
}

#[test]
fn an_auth_rejection_refreshes_once_then_stops() {
    let mut engine = connecting_with_auth_refresh();
    engine.handle_close(5, 4001, "unauthorized");
    let out = drain(&mut engine);
    assert!(events(&out).contains(&Event::RefreshAuth));
    assert_eq!(
        *engine.state(),
        State::Suspended {
            reason: SuspendReason::AwaitingAuth
        }
    );
    assert_eq!(
        connects(&run_timers(&mut engine, 5, 600_000)),
        0,
        "waits for the driver"
    );
    engine.handle_auth_refreshed(600_000, true);
    assert_eq!(connects(&drain(&mut engine)), 1);
    // Rejected again before the connection proved healthy: stop, no loop.
    engine.handle_close(600_010, 4001, "unauthorized");
    let out = drain(&mut engine);
    assert!(!events(&out).contains(&Event::RefreshAuth));
    assert!(matches!(engine.state(), State::Closed { .. }));
}

#[test]
fn a_healthy_connection_earns_another_refresh() {
    let mut engine = connecting_with_auth_refresh();
    engine.handle_close(5, 4001, "");
    let _ = drain(&mut engine);
    engine.handle_auth_refreshed(6, true);
    let _ = drain(&mut engine);
    engine.handle_open(7, Some(SUBPROTOCOL));
    let out = drain(&mut engine);
    let Some(Frame::Hello { session, .. }) = frames(&out).first().cloned() else {
        panic!("HELLO")
    };
    welcome(&mut engine, 8, session, 0);
    assert!(matches!(engine.state(), State::Open { .. }));
    engine.handle_close(100_000, 4001, "expired later");
    assert!(events(&drain(&mut engine)).contains(&Event::RefreshAuth));
}

#[test]
fn policy_rejections_and_user_predicates_are_data() {
    let mut engine = started(config(), 1);
    engine.handle_close(1, 1008, "policy");
    let _ = drain(&mut engine);
    assert!(matches!(
        engine.state(),
        State::Closed {
            reason: StopReason::Rejected { code: 1008, .. }
        }
    ));

    let policy = ClosePolicy {
        predicate: Some(std::sync::Arc::new(|code, reason: &str| {
            (code == 4500 && reason == "banned").then_some(CloseAction::Stop)
        })),
        ..ClosePolicy::default()
    };
    assert_eq!(policy.decide(4500, "banned"), CloseAction::Stop);
    assert_eq!(policy.decide(4500, "other"), CloseAction::Reconnect);
    assert_eq!(policy.decide(1006, ""), CloseAction::Reconnect);
    assert_eq!(
        policy.decide(1001, "restart"),
        CloseAction::ReconnectSlow,
        "a server restart spreads the herd"
    );
    assert_eq!(policy.decide(4050, ""), CloseAction::Stop);
    assert_eq!(policy.decide(1013, ""), CloseAction::ReconnectSlow);
}

#[test]
fn backoff_grows_to_the_cap_with_jitter_and_resets_only_when_healthy() {
    let backoff = BackoffConfig {
        initial_ms: 100,
        max_ms: 1_600,
        ..BackoffConfig::default()
    };
    let mut engine = Engine::client(
        Config {
            backoff: backoff.clone(),
            ..config()
        },
        9,
    )
    .expect("config");
    engine.connect(0);
    let _ = drain(&mut engine);
    let mut now = 0;
    let mut delays = Vec::new();
    for attempt in 0..12u32 {
        engine.handle_close(now, 1006, "");
        let _ = drain(&mut engine);
        let State::BackingOff { next_retry_at, .. } = engine.state().clone() else {
            panic!("backing off")
        };
        let delay = next_retry_at - now;
        let bound = (backoff.initial_ms << attempt.min(20)).min(backoff.max_ms);
        assert!(delay <= bound, "attempt {attempt}: {delay} > {bound}");
        delays.push(delay);
        now = next_retry_at;
        engine.handle_timeout(now);
        assert_eq!(connects(&drain(&mut engine)), 1);
    }
    // At the cap the delays stay spread (full jitter after the cap), not pinned to it.
    let at_cap = &delays[6..];
    assert!(
        at_cap.iter().any(|&d| d < backoff.max_ms * 3 / 4),
        "{at_cap:?}"
    );
    assert!(at_cap.iter().any(|&d| d > backoff.max_ms / 4), "{at_cap:?}");
    // A plain-mode open does not reset the attempts until it has stayed up.
    engine.handle_open(now, None);
    let _ = drain(&mut engine);
    engine.handle_close(now + 10, 1006, "");
    let _ = drain(&mut engine);
    let State::BackingOff { attempt, .. } = engine.state().clone() else {
        panic!()
    };
    assert_eq!(attempt, 13, "a flapping connection keeps backing off");
}

#[test]
fn a_long_outage_eases_off_after_the_fast_phase_and_a_healthy_connection_resets_it() {
    let backoff = BackoffConfig {
        initial_ms: 100,
        max_ms: 400,
        fast_phase_ms: 5_000,
        slow_max_ms: 6_400,
        ..BackoffConfig::default()
    };
    let cfg = Config {
        backoff: backoff.clone(),
        reliability: Reliability::Off,
        ..config()
    };
    let mut engine = Engine::client(cfg, 3).expect("config");
    engine.connect(0);
    let _ = drain(&mut engine);
    engine.handle_open(0, None);
    let _ = drain(&mut engine);
    // Fail every attempt for 60 s of virtual time; note each delay and when.
    let lost_at = 1;
    let mut now = lost_at;
    let mut delays = Vec::new();
    while now < 60_000 {
        engine.handle_close(now, 1006, "");
        let _ = drain(&mut engine);
        let State::BackingOff { next_retry_at, .. } = engine.state().clone() else {
            panic!("backing off")
        };
        delays.push((now, next_retry_at - now));
        now = next_retry_at;
        engine.handle_timeout(now);
        assert_eq!(connects(&drain(&mut engine)), 1);
    }
    let fast: Vec<u64> = delays
        .iter()
        .filter(|(at, _)| at - lost_at < backoff.fast_phase_ms)
        .map(|&(_, d)| d)
        .collect();
    let slow: Vec<u64> = delays
        .iter()
        .filter(|(at, _)| at - lost_at >= backoff.fast_phase_ms)
        .map(|&(_, d)| d)
        .collect();
    assert!(fast.iter().all(|&d| d <= backoff.max_ms), "{fast:?}");
    assert!(
        fast.len() >= 20,
        "retries stay frequent through the fast phase: {fast:?}"
    );
    assert!(slow.iter().all(|&d| d <= backoff.slow_max_ms), "{slow:?}");
    assert!(
        slow.iter().any(|&d| d > backoff.max_ms * 2),
        "past the fast phase the cap grows: {slow:?}"
    );
    assert!(
        slow.len() < fast.len(),
        "fewer attempts in the 55 s after than in the 5 s of the fast phase"
    );
    // A connection that stays up resets it all: retries are small again.
    engine.handle_open(now, None);
    let _ = drain(&mut engine);
    now += backoff.healthy_after_ms + 1;
    engine.handle_timeout(now);
    let _ = drain(&mut engine);
    engine.handle_close(now, 1006, "");
    let _ = drain(&mut engine);
    let State::BackingOff { next_retry_at, .. } = engine.state().clone() else {
        panic!("backing off")
    };
    assert!(next_retry_at - now <= backoff.initial_ms);
}

#[test]
fn a_dead_peer_gets_a_fast_first_retry() {
    let hb = HeartbeatConfig {
        interval_ms: 1_000,
        idle_ms: 2_000,
        probe_timeout_ms: 500,
        plain_ping: None,
    };
    let cfg = Config {
        heartbeat: Some(hb),
        ..config()
    };
    let mut engine = Engine::client(cfg.clone(), 3).expect("config");
    let _ = open_reliable(&mut engine, 0, 0);
    // Nothing ever comes back.
    let out = run_timers(&mut engine, 0, 5_000);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Disconnect { code: 4903, .. })),
        "{out:?}"
    );
    let (at, state) = out
        .iter()
        .find_map(|o| match o {
            Output::Event(Event::State(s @ State::BackingOff { next_retry_at, .. })) => {
                Some((*next_retry_at, s.clone()))
            }
            _ => None,
        })
        .expect("backing off");
    let disconnected_at = 1_500; // ping at 1000 + probe timeout 500
    assert!(
        at - disconnected_at <= cfg.backoff.fast_retry_ms,
        "{state:?}"
    );
}

#[test]
fn a_late_timer_probes_instead_of_declaring_the_peer_dead() {
    let hb = HeartbeatConfig {
        interval_ms: 25_000,
        idle_ms: 30_000,
        probe_timeout_ms: 10_000,
        plain_ping: None,
    };
    let mut engine = Engine::client(
        Config {
            heartbeat: Some(hb),
            ..config()
        },
        3,
    )
    .expect("config");
    let _ = open_reliable(&mut engine, 0, 0);
    // A background tab: the next wake-up is ten minutes late.
    engine.handle_timeout(600_000);
    let out = drain(&mut engine);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Disconnect { .. })),
        "{out:?}"
    );
    let ping = frames(&out).into_iter().find_map(|f| match f {
        Frame::Ping { id } => Some(id),
        _ => None,
    });
    let id = ping.expect("a probe goes out at once");
    // The peer answers: still open, RTT reported from the probe.
    engine.handle_frame(600_040, true, &Frame::Pong { id }.to_vec());
    let out = drain(&mut engine);
    assert!(events(&out).contains(&Event::Rtt(40)));
    // Throttled again, and this time nothing answers: dead only after the probe timed out.
    engine.handle_timeout(1_800_000);
    let out = drain(&mut engine);
    assert!(!out.iter().any(|o| matches!(o, Output::Disconnect { .. })));
    engine.handle_timeout(1_800_000 + 10_000);
    let out = drain(&mut engine);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Disconnect { code: 4903, .. })),
        "{out:?}"
    );
}

#[test]
fn offline_closes_now_and_online_reconnects_now() {
    let mut engine = Engine::client(config(), 1).expect("config");
    let _ = open_reliable(&mut engine, 0, 0);
    engine.handle_hint(100, Hint::Offline);
    let out = drain(&mut engine);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Disconnect { code: 4907, .. })));
    assert_eq!(
        *engine.state(),
        State::Suspended {
            reason: SuspendReason::Offline
        }
    );
    assert_eq!(
        connects(&run_timers(&mut engine, 100, 120_000)),
        0,
        "no retries while offline"
    );
    engine.handle_hint(120_000, Hint::Online);
    assert_eq!(connects(&drain(&mut engine)), 1);
    assert!(matches!(engine.state(), State::Connecting { .. }));
}

#[test]
fn visible_skips_the_backoff_wait() {
    let mut engine = started(config(), 1);
    engine.handle_close(10, 1006, "");
    let _ = drain(&mut engine);
    assert!(matches!(engine.state(), State::BackingOff { .. }));
    engine.handle_hint(11, Hint::Visible);
    assert_eq!(connects(&drain(&mut engine)), 1);
}

#[test]
fn a_full_outbox_rejects_or_drops_the_oldest_with_events() {
    let outbox = OutboxConfig {
        max_messages: 2,
        ..OutboxConfig::default()
    };
    let mut engine = Engine::client(
        Config {
            outbox: outbox.clone(),
            ..config()
        },
        1,
    )
    .expect("config");
    engine.send(0, WALL, "a".into()).expect("room");
    engine.send(0, WALL, "b".into()).expect("room");
    let err = engine.send(0, WALL, "c".into()).expect_err("full");
    assert_eq!(err.code(), "ERR_QUEUE_FULL");

    let outbox = OutboxConfig {
        overflow: Overflow::DropOldest,
        ..outbox
    };
    let mut engine = Engine::client(Config { outbox, ..config() }, 1).expect("config");
    let a = engine.send(0, WALL, "a".into()).expect("room");
    engine.send(0, WALL, "b".into()).expect("room");
    let _ = drain(&mut engine);
    engine.send(0, WALL, "c".into()).expect("drops a");
    let out = drain(&mut engine);
    assert!(events(&out).contains(&Event::Failed {
        receipt: a,
        reason: FailReason::Dropped,
        possibly_delivered: false
    }));
    assert!(out.contains(&Output::Persist(PersistOp::Delete { seq: 1 })));
    // The peer is told seq 1 will never come, then gets 2 and 3.
    let out = open_reliable(&mut engine, 10, 0);
    let f = frames(&out);
    assert_eq!(f[0], Frame::Skip { first: 1, last: 1 });
    assert!(matches!(f[1], Frame::Data { seq: 2, .. }));
    assert!(matches!(f[2], Frame::Data { seq: 3, .. }));
    let err = engine
        .send(0, WALL, Payload::Binary(vec![0; 17 << 20]))
        .expect_err("too big");
    assert_eq!(err.code(), "ERR_MESSAGE_TOO_LARGE");
}

#[test]
fn a_message_above_the_peers_limit_fails_alone_and_is_skipped() {
    let mut engine = started(config(), 1);
    // Queued before the first handshake: the peer's limit is not known yet.
    engine.send(0, WALL, "a".into()).expect("room");
    let big = engine
        .send(0, WALL, Payload::Binary(vec![7; 2_000]))
        .expect("within our own limit");
    engine.send(0, WALL, "c".into()).expect("room");
    engine.handle_open(1, Some(SUBPROTOCOL));
    let session = match frames(&drain(&mut engine)).first() {
        Some(Frame::Hello { session, .. }) => *session,
        other => panic!("expected HELLO, got {other:?}"),
    };
    let w = Frame::Welcome {
        resumed: false,
        session,
        delivered: 0,
        max_message_size: 1_000,
        window: None,
    };
    engine.handle_frame(2, true, &w.to_vec());
    let out = drain(&mut engine);
    assert!(
        events(&out).contains(&Event::Failed {
            receipt: big,
            reason: FailReason::TooLarge {
                size: 2_000,
                limit: 1_000
            },
            possibly_delivered: false,
        }),
        "{out:?}"
    );
    assert!(out.contains(&Output::Persist(PersistOp::Delete { seq: 2 })));
    // Never on the wire: the peer hears seq 2 will not come.
    let f = frames(&out);
    assert!(matches!(f[0], Frame::Data { seq: 1, .. }), "{f:?}");
    assert_eq!(f[1], Frame::Skip { first: 2, last: 2 });
    assert!(matches!(f[2], Frame::Data { seq: 3, .. }), "{f:?}");
    assert_eq!(f.len(), 3, "{f:?}");
    assert_eq!(engine.max_message_size(), 1_000);
    // Known now: a send above it is refused at once; at the limit it goes.
    let err = engine
        .send(3, WALL, Payload::Binary(vec![0; 1_001]))
        .expect_err("above the peer's limit");
    assert_eq!(err.code(), "ERR_MESSAGE_TOO_LARGE");
    engine
        .send(3, WALL, Payload::Binary(vec![0; 1_000]))
        .expect("at the peer's limit");
}

/// A store as a map: what an engine's persist ops leave behind.
#[derive(Default)]
struct MapStore {
    session: Option<StoredSession>,
    messages: std::collections::BTreeMap<u64, StoredMessage>,
}

impl MapStore {
    fn apply(&mut self, outputs: &[Output]) {
        for o in outputs {
            match o {
                Output::Persist(PersistOp::Session(s)) => self.session = Some(*s),
                Output::Persist(PersistOp::Put(m)) => {
                    self.messages.insert(m.seq, m.clone());
                }
                Output::Persist(PersistOp::Delete { seq }) => {
                    self.messages.remove(seq);
                }
                Output::Persist(PersistOp::Clear) => self.messages.clear(),
                _ => {}
            }
        }
    }
}

/// Feed the server DATA frames `seqs` (each payload its seq as one byte);
/// the messages it delivers.
fn deliver(server: &mut Engine, seqs: &[u64]) -> Vec<Event> {
    for &seq in seqs {
        let data = Frame::Data {
            seq,
            binary: true,
            chunk: None,
            payload: &[seq as u8],
        };
        server.handle_frame(2, true, &data.to_vec());
    }
    events(&drain(server))
        .into_iter()
        .filter(|e| matches!(e, Event::Message(_)))
        .collect()
}

#[test]
fn a_server_rebuilt_from_a_session_record_resumes_the_session_without_duplicates() {
    let session = SessionId([9; 16]);
    // The record: inbound delivered through 5, outbound seqs 1..=9 used.
    let mut server = Engine::server_from_record(config(), 1, session, 5, 10).expect("config");
    server.handle_open(0, None);
    let hello = Frame::Hello {
        secret: None,
        new: false,
        session,
        delivered: 7,
        max_message_size: 1 << 24,
    };
    server.handle_frame(1, true, &hello.to_vec());
    let out = drain(&mut server);
    let f = frames(&out);
    assert_eq!(
        f[0],
        Frame::Welcome {
            resumed: true,
            session,
            delivered: 5,
            max_message_size: config().limits.max_message_size,
            window: Some(config().limits.receive_window),
        }
    );
    // Its queued messages 8 and 9 went with the state: skipped, not lost silently.
    assert_eq!(f[1], Frame::Skip { first: 8, last: 9 });
    // The client's 6 is new here (5 was delivered), 5 a duplicate.
    assert_eq!(
        deliver(&mut server, &[5, 6]),
        vec![Event::Message(Payload::Binary(vec![6]))]
    );
    // New messages continue after the record's seqs.
    assert_eq!(server.next_seq(), 10);
}

#[test]
fn a_server_restored_from_its_store_resends_what_was_unacknowledged_byte_for_byte() {
    let session = SessionId([4; 16]);
    let mut server = Engine::server(config(), 1, session).expect("config");
    let mut store = MapStore::default();
    server.handle_open(0, None);
    let hello = Frame::Hello {
        secret: None,
        new: true,
        session,
        delivered: 0,
        max_message_size: 1 << 24,
    };
    server.handle_frame(1, true, &hello.to_vec());
    let out = drain(&mut server);
    // The session is stored before the client hears of it.
    let persisted = out
        .iter()
        .position(|o| matches!(o, Output::Persist(PersistOp::Session(_))));
    let welcomed = out.iter().position(|o| matches!(o, Output::Transmit(_)));
    assert!(persisted < welcomed, "{out:?}");
    store.apply(&out);
    for text in ["one", "two", "three"] {
        server.send(2, WALL, text.into()).expect("room");
    }
    // The client acknowledges "one" and delivers its own 1..=2.
    server.handle_frame(3, true, &Frame::Ack { delivered: 1 }.to_vec());
    for seq in [1u64, 2] {
        let data = Frame::Data {
            seq,
            binary: true,
            chunk: None,
            payload: &[seq as u8],
        };
        server.handle_frame(4, true, &data.to_vec());
    }
    server.handle_taken(2);
    server.handle_read_burst_end();
    let out = drain(&mut server);
    store.apply(&out);
    let stored = store.session.expect("a session record");
    assert_eq!(stored.inbound_delivered, 2);
    assert_eq!(
        store.messages.keys().copied().collect::<Vec<_>>(),
        vec![2, 3]
    );

    // The process dies; a new one rebuilds the session from the store.
    let mut restored = Engine::server_restore(
        config(),
        2,
        0,
        WALL,
        stored,
        store.messages.values().cloned().collect(),
    )
    .expect("config");
    restored.handle_open(0, None);
    let resume = Frame::Hello {
        secret: None,
        new: false,
        session,
        delivered: 1,
        max_message_size: 1 << 24,
    };
    restored.handle_frame(1, true, &resume.to_vec());
    let out = drain(&mut restored);
    let f = frames(&out);
    assert_eq!(
        f[0],
        Frame::Welcome {
            resumed: true,
            session,
            delivered: 2,
            max_message_size: config().limits.max_message_size,
            window: Some(config().limits.receive_window),
        }
    );
    assert!(
        matches!(
            f[1],
            Frame::Data {
                seq: 2,
                payload: b"two",
                ..
            }
        ),
        "{f:?}"
    );
    assert!(
        matches!(
            f[2],
            Frame::Data {
                seq: 3,
                payload: b"three",
                ..
            }
        ),
        "{f:?}"
    );
    assert_eq!(f.len(), 3, "{f:?}");
    // The client's 2 again is a duplicate; its 3 is new.
    assert_eq!(
        deliver(&mut restored, &[2, 3]),
        vec![Event::Message(Payload::Binary(vec![3]))]
    );
    assert_eq!(restored.next_seq(), 4);
}

#[test]
fn a_message_that_waits_past_its_ttl_fails_and_is_skipped() {
    let outbox = OutboxConfig {
        ttl_ms: Some(60_000),
        ..OutboxConfig::default()
    };
    let mut engine = Engine::client(Config { outbox, ..config() }, 1).expect("config");
    let old = engine.send(0, WALL, "stale".into()).expect("room");
    let fresh = engine
        .send(50_000, WALL + 50_000, "fresh".into())
        .expect("room");
    let out = run_timers(&mut engine, 0, 61_000);
    assert!(events(&out).contains(&Event::Failed {
        receipt: old,
        reason: FailReason::Expired,
        possibly_delivered: false
    }));
    assert!(!events(&out)
        .iter()
        .any(|e| matches!(e, Event::Failed { receipt, .. } if *receipt == fresh)));
    let out = open_reliable(&mut engine, 61_000, 0);
    let f = frames(&out);
    assert_eq!(f[0], Frame::Skip { first: 1, last: 1 });
    assert!(matches!(
        f[1],
        Frame::Data {
            seq: 2,
            payload: b"fresh",
            ..
        }
    ));
}

#[test]
fn the_outbox_survives_a_restart_through_the_store() {
    let mut engine = Engine::client(config(), 5).expect("config");
    let mut store = MapStore::default();
    let out = open_reliable(&mut engine, 0, 0);
    store.apply(&out);
    for text in ["one", "two", "three"] {
        engine.send(1, WALL, text.into()).expect("room");
    }
    let out = drain(&mut engine);
    store.apply(&out);
    // The server acknowledges "one" only; then the process dies.
    engine.handle_frame(2, true, &Frame::Ack { delivered: 1 }.to_vec());
    let out = drain(&mut engine);
    store.apply(&out);
    let original = engine.session();
    drop(engine);

    let messages: Vec<StoredMessage> = store.messages.values().cloned().collect();
    assert_eq!(
        messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let (mut engine, receipts) =
        Engine::restore(config(), 6, 0, WALL + 5, store.session, messages).expect("restore");
    assert_eq!(receipts.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 3]);
    let queued: Vec<(Receipt, bool, Vec<u8>)> = engine
        .queued_messages()
        .map(|(r, binary, payload)| (r, binary, payload.to_vec()))
        .collect();
    assert_eq!(
        queued,
        vec![
            (receipts[0].1, false, b"two".to_vec()),
            (receipts[1].1, false, b"three".to_vec())
        ],
        "what the application is shown as restored"
    );
    assert_eq!(
        engine.session(),
        original,
        "same session: (session, seq) stays the idempotency key"
    );
    engine.connect(0);
    let _ = drain(&mut engine);
    engine.handle_open(0, Some(SUBPROTOCOL));
    let out = drain(&mut engine);
    assert!(
        matches!(frames(&out)[0], Frame::Hello { new: false, .. }),
        "welcomed before the restart"
    );
    let out = welcome(&mut engine, 1, original, 1);
    assert_eq!(
        events(&out)
            .into_iter()
            .filter(|e| matches!(e, Event::Transmitted(_)))
            .collect::<Vec<_>>(),
        vec![
            Event::Transmitted(receipts[0].1),
            Event::Transmitted(receipts[1].1)
        ],
        "each restored message reports going on the wire"
    );
    let f = frames(&out);
    assert!(
        matches!(
            f[0],
            Frame::Data {
                seq: 2,
                payload: b"two",
                ..
            }
        ),
        "{f:?}"
    );
    assert!(
        matches!(
            f[1],
            Frame::Data {
                seq: 3,
                payload: b"three",
                ..
            }
        ),
        "{f:?}"
    );
    let four = engine.send(2, WALL, "four".into()).expect("room");
    let out = drain(&mut engine);
    assert!(
        matches!(frames(&out)[0], Frame::Data { seq: 4, .. }),
        "numbering continues"
    );
    assert!(events(&out).contains(&Event::Transmitted(four)));
}

#[test]
fn a_server_that_lost_the_session_triggers_a_resync() {
    let mut engine = Engine::client(config(), 5).expect("config");
    let _ = open_reliable(&mut engine, 0, 0);
    engine.send(1, WALL, "a".into()).expect("room");
    engine.send(1, WALL, "b".into()).expect("room");
    engine.handle_frame(2, true, &Frame::Ack { delivered: 1 }.to_vec());
    let _ = drain(&mut engine);
    engine.handle_close(3, 1001, "restart");
    let _ = drain(&mut engine);
    engine.reconnect(4);
    let _ = drain(&mut engine);
    engine.handle_open(5, Some(SUBPROTOCOL));
    let _ = drain(&mut engine);
    let fresh = SessionId([9; 16]);
    let out = welcome(&mut engine, 6, fresh, 0);
    assert!(events(&out).contains(&Event::ResyncRequired));
    assert!(out.contains(&Output::Persist(PersistOp::Clear)));
    assert_eq!(engine.session(), fresh);
    let f = frames(&out);
    assert!(
        matches!(
            f[0],
            Frame::Data {
                seq: 1,
                payload: b"b",
                ..
            }
        ),
        "renumbered from 1: {f:?}"
    );
}

#[test]
fn plain_mode_sends_messages_as_they_are() {
    let mut engine = Engine::client(config(), 1).expect("config");
    let r = engine.send(0, WALL, "hello".into()).expect("room");
    engine.connect(0);
    let _ = drain(&mut engine);
    engine.handle_open(1, None);
    let out = drain(&mut engine);
    assert_eq!(*engine.state(), State::Open { mode: Mode::Plain });
    assert!(out.contains(&Output::Transmit(Transmit {
        binary: false,
        data: b"hello".to_vec()
    })));
    assert!(events(&out).contains(&Event::Sent(r)));
    engine.handle_frame(2, false, b"from server");
    assert!(
        events(&drain(&mut engine)).contains(&Event::Message(Payload::Text("from server".into())))
    );
    // A message the driver owns is handed over as it is (moved, not
    // copied); text must still be UTF-8.
    engine.handle_frame_owned(3, true, vec![0, 1, 2]);
    engine.handle_frame_owned(3, false, "owned".into());
    engine.handle_frame_owned(3, false, vec![0xff, 0xfe]);
    let got = events(&drain(&mut engine));
    assert_eq!(
        got,
        vec![
            Event::Message(Payload::Binary(vec![0, 1, 2])),
            Event::Message(Payload::Text("owned".into())),
            Event::Error(EngineError::InvalidUtf8),
        ]
    );
    assert_eq!(engine.stats().messages_in, 3);
    // The outbox gave up the message it transmitted: nothing is queued.
    assert_eq!((engine.queued(), engine.queued_bytes()), (0, 0));
}

#[test]
fn a_full_send_buffer_holds_messages_in_the_outbox() {
    // Plain mode: nothing else bounds what is handed to the socket.
    let mut engine = Engine::client(config(), 1).expect("config");
    engine.connect(0);
    let _ = drain(&mut engine);
    engine.handle_open(1, None);
    let _ = drain(&mut engine);
    engine.set_send_blocked(true);
    for i in 0..3 {
        engine.send(2, WALL, format!("m{i}").into()).expect("room");
    }
    let out = drain(&mut engine);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Transmit(_))),
        "sent while blocked: {out:?}"
    );
    assert_eq!(engine.queued(), 3, "the messages wait in the outbox");
    engine.set_send_blocked(false);
    let sent: Vec<Vec<u8>> = drain(&mut engine)
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(t.data),
            _ => None,
        })
        .collect();
    assert_eq!(sent, [b"m0".to_vec(), b"m1".to_vec(), b"m2".to_vec()]);
    assert_eq!(engine.queued(), 0);

    // Reliable mode: data waits, ACKs still go out, and a new connection
    // starts unblocked.
    let mut engine = started(config(), 2);
    let _ = open_reliable(&mut engine, 0, 0);
    engine.set_send_blocked(true);
    engine.send(1, WALL, "held".into()).expect("room");
    assert!(frames(&drain(&mut engine)).is_empty());
    let data = Frame::Data {
        seq: 1,
        binary: false,
        chunk: None,
        payload: b"in".as_slice(),
    };
    engine.handle_frame(2, true, &data.to_vec());
    let out = run_timers(&mut engine, 2, 2_000);
    let fs = frames(&out);
    assert!(fs.iter().any(|f| matches!(f, Frame::Ack { .. })), "{fs:?}");
    assert!(
        !fs.iter().any(|f| matches!(f, Frame::Data { .. })),
        "{fs:?}"
    );
    engine.handle_close(2_001, 1006, "gone");
    engine.reconnect(2_002);
    assert_eq!(connects(&drain(&mut engine)), 1);
    engine.handle_open(2_003, Some(SUBPROTOCOL));
    let session = engine.session();
    let out = welcome(&mut engine, 2_004, session, 0);
    let fs = frames(&out);
    assert!(
        fs.iter()
            .any(|f| matches!(f, Frame::Data { payload, .. } if *payload == b"held")),
        "{fs:?}"
    );
}

/// Seqs of the DATA frames in `outputs`.
fn data_seqs(outputs: &[Output]) -> Vec<u64> {
    frames(outputs)
        .iter()
        .filter_map(|f| match f {
            Frame::Data { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

#[test]
fn a_client_keeps_within_the_window_the_server_announced() {
    let mut engine = Engine::client(config(), 4).expect("config");
    engine.connect(0);
    let _ = drain(&mut engine);
    engine.handle_open(1, Some(SUBPROTOCOL));
    let _ = drain(&mut engine);
    let session = engine.session();
    for _ in 0..10 {
        engine.send(2, WALL, vec![7u8; 300].into()).expect("room");
    }
    let out = welcome_with_window(&mut engine, 3, session, 0, Some(1_000));
    // Below 1,000 bytes in flight another may go: 4 (1,200 bytes), not the
    // client's own 1 MiB's worth (all 10).
    assert_eq!(data_seqs(&out), [1, 2, 3, 4]);
    // An ACK for two makes room for two more.
    engine.handle_frame(4, true, &Frame::Ack { delivered: 2 }.to_vec());
    assert_eq!(data_seqs(&drain(&mut engine)), [5, 6]);
    // A server that announces no window: only the client's own limit.
    engine.handle_close(5, 1006, "");
    let _ = drain(&mut engine);
    engine.reconnect(6);
    let _ = run_timers(&mut engine, 6, 2_000);
    engine.handle_open(2_001, Some(SUBPROTOCOL));
    let _ = drain(&mut engine);
    let out = welcome(&mut engine, 2_002, session, 2);
    assert_eq!(data_seqs(&out), [3, 4, 5, 6, 7, 8, 9, 10]);
}

#[test]
fn a_server_announces_its_receive_window() {
    let mut config = config();
    config.limits.receive_window = 12_345;
    let client = Engine::client(config.clone(), 5).expect("config");
    let mut server = Engine::server(config, 6, client.session()).expect("config");
    server.handle_open(0, Some(SUBPROTOCOL));
    let _ = drain(&mut server);
    let hello = Frame::Hello {
        secret: None,
        new: true,
        session: client.session(),
        delivered: 0,
        max_message_size: 1 << 24,
    };
    server.handle_frame(1, true, &hello.to_vec());
    let out = drain(&mut server);
    assert!(
        matches!(
            frames(&out).first(),
            Some(Frame::Welcome {
                window: Some(12_345),
                ..
            })
        ),
        "{:?}",
        frames(&out)
    );
}

#[test]
fn plain_mode_hands_over_at_most_the_in_flight_budget_before_the_driver_can_block() {
    let mut config = config();
    config.outbox.max_in_flight_bytes = 1_000;
    let mut engine = Engine::client(config, 3).expect("config");
    engine.connect(0);
    let _ = drain(&mut engine);
    engine.handle_open(1, None);
    let _ = drain(&mut engine);
    // A batch of sends before the driver looks at its outputs.
    for _ in 0..10 {
        engine.send(2, WALL, vec![7u8; 300].into()).expect("room");
    }
    let mut sent = 0;
    let mut blocked = false;
    while let Some(output) = engine.poll_output() {
        match output {
            Output::Transmit(t) => {
                sent += t.data.len();
                if !blocked {
                    // The driver finds the socket's buffer full after the first.
                    engine.set_send_blocked(true);
                    blocked = true;
                }
            }
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert!(sent <= 1_200, "{sent} bytes handed over after the block");
    assert_eq!(engine.queued(), 10 - sent / 300);
    engine.set_send_blocked(false);
    let rest: usize = drain(&mut engine)
        .iter()
        .map(|o| match o {
            Output::Transmit(t) => t.data.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(sent + rest, 3_000);
    assert_eq!(engine.queued(), 0);
}

#[test]
fn required_reliability_refuses_a_plain_server() {
    let mut engine = Engine::client(
        Config {
            reliability: Reliability::Required,
            ..config()
        },
        1,
    )
    .expect("config");
    engine.connect(0);
    let _ = drain(&mut engine);
    engine.handle_open(1, None);
    let out = drain(&mut engine);
    assert!(out.iter().any(|o| matches!(o, Output::Disconnect { .. })));
    assert!(events(&out)
        .iter()
        .any(|e| matches!(e, Event::Error(err) if err.code() == "ERR_SUBPROTOCOL_REFUSED")));
    assert_eq!(
        *engine.state(),
        State::Closed {
            reason: StopReason::SubprotocolRefused
        }
    );
}

#[test]
fn a_1009_close_halves_the_chunk_size() {
    let mut engine = Engine::client(
        Config {
            chunk_size: 32 * 1024,
            ..config()
        },
        1,
    )
    .expect("config");
    engine.connect(0);
    let _ = drain(&mut engine);
    engine.handle_close(1, 1009, "too big");
    assert_eq!(engine.chunk_size(), 16 * 1024);
}

#[test]
fn acks_are_coalesced_and_follow_the_persisted_mark() {
    let mut engine = open_with_acks(AckConfig {
        delay_ms: 50,
        every: 100,
        every_bytes: 1 << 20,
        ..AckConfig::default()
    });
    deliver_unacknowledged(&mut engine, 1..=5, |seq| 10 + seq);
    engine.handle_timeout(11 + 50);
    let out = drain(&mut engine);
    let persisted = out.iter().position(
        |o| matches!(o, Output::Persist(PersistOp::Session(s)) if s.inbound_delivered == 5),
    );
    let acked = out.iter().position(|o| matches!(o, Output::Transmit(_)));
    assert!(
        persisted.expect("mark persisted") < acked.expect("one ACK"),
        "{out:?}"
    );
    assert_eq!(frames(&out), vec![Frame::Ack { delivered: 5 }]);
    // A duplicate is re-acknowledged so the peer can let go.
    let dup = Frame::Data {
        seq: 3,
        binary: true,
        chunk: None,
        payload: &[3],
    };
    engine.handle_frame(100, true, &dup.to_vec());
    assert!(events(&drain(&mut engine))
        .iter()
        .all(|e| !matches!(e, Event::Message(_))));
    engine.handle_timeout(150);
    assert_eq!(
        frames(&drain(&mut engine)),
        vec![Frame::Ack { delivered: 5 }]
    );
}

#[test]
fn a_read_burst_is_acknowledged_when_it_ends_once_for_all_it_delivered() {
    let mut engine = open_with_acks(AckConfig {
        delay_ms: 10_000,
        every: 100,
        every_bytes: 1 << 20,
        ..AckConfig::default()
    });
    // Nothing to acknowledge: the end of a burst sends nothing.
    engine.handle_read_burst_end();
    assert!(frames(&drain(&mut engine)).is_empty());
    // One burst of three messages, read at 10.
    deliver_unacknowledged(&mut engine, 1..=3, |_| 10);
    // The burst ends: one ACK for all three, long before the 10 s delay,
    // after the mark that it depends on is persisted.
    engine.handle_read_burst_end();
    let out = drain(&mut engine);
    let persisted = out.iter().position(
        |o| matches!(o, Output::Persist(PersistOp::Session(s)) if s.inbound_delivered == 3),
    );
    let acked = out.iter().position(|o| matches!(o, Output::Transmit(_)));
    assert!(
        persisted.expect("mark persisted") < acked.expect("one ACK"),
        "{out:?}"
    );
    assert_eq!(frames(&out), vec![Frame::Ack { delivered: 3 }]);
    // Its delay timer went with it: nothing left to fire at 10 s.
    engine.handle_timeout(10_010);
    assert!(frames(&drain(&mut engine)).is_empty());
    // A second end without a read in between sends nothing again.
    engine.handle_read_burst_end();
    assert!(frames(&drain(&mut engine)).is_empty());
    // A duplicate alone is re-acknowledged at the end of its burst.
    let dup = Frame::Data {
        seq: 2,
        binary: true,
        chunk: None,
        payload: &[2],
    };
    engine.handle_frame(10_020, true, &dup.to_vec());
    let _ = drain(&mut engine);
    engine.handle_read_burst_end();
    assert_eq!(
        frames(&drain(&mut engine)),
        vec![Frame::Ack { delivered: 3 }]
    );
}

#[test]
fn only_messages_the_application_took_are_acknowledged_or_stored_as_delivered() {
    let mut engine = open_with_acks(AckConfig::default());
    for seq in 1..=3u64 {
        let data = Frame::Data {
            seq,
            binary: true,
            chunk: None,
            payload: &[seq as u8],
        };
        engine.handle_frame(10, true, &data.to_vec());
    }
    let out = drain_untaken(&mut engine);
    assert_eq!(
        events(&out)
            .iter()
            .filter(|e| matches!(e, Event::Message(_)))
            .count(),
        3
    );
    assert_eq!(
        (engine.delivered(), engine.taken(), engine.untaken()),
        (3, 0, 3)
    );
    // The burst ends with none taken: nothing new to acknowledge or store
    // (the peer heard 0 in the handshake); the ACK waits for the takes.
    engine.handle_read_burst_end();
    let out = drain_untaken(&mut engine);
    assert!(frames(&out).is_empty(), "{out:?}");
    assert!(
        !out.iter().any(|o| matches!(o, Output::Persist(_))),
        "{out:?}"
    );
    assert!(engine.ack_waits_for_take());
    // Two taken: an ACK for them follows at once, after the stored mark.
    engine.handle_taken(2);
    let out = drain_untaken(&mut engine);
    assert_eq!(frames(&out), vec![Frame::Ack { delivered: 2 }]);
    assert!(
        out.contains(&Output::Persist(PersistOp::Session(StoredSession {
            secret: None,
            session: engine.session(),
            welcomed: true,
            inbound_delivered: 2,
            next_seq: 1,
        }))),
        "{out:?}"
    );
    assert!(engine.ack_waits_for_take());
    // The connection drops before the third is taken: the HELLO says 2,
    // so the peer sends 3 again (a duplicate here, never a loss).
    engine.handle_close(20, 1006, "");
    let _ = drain_untaken(&mut engine);
    engine.reconnect(21);
    let _ = drain_untaken(&mut engine);
    engine.handle_open(22, Some(SUBPROTOCOL));
    let out = drain_untaken(&mut engine);
    let hello = frames(&out);
    assert!(
        matches!(hello.first(), Some(Frame::Hello { delivered: 2, .. })),
        "{hello:?}"
    );
    // Taking the last one: everything is the application's.
    engine.handle_taken(1);
    assert_eq!((engine.taken(), engine.untaken()), (3, 0));
    // More takes than messages handed out are ignored.
    engine.handle_taken(5);
    assert_eq!((engine.taken(), engine.untaken()), (3, 0));
}

#[test]
fn with_acks_at_burst_end_off_the_delay_alone_decides() {
    let mut engine = open_with_acks(AckConfig {
        delay_ms: 50,
        at_read_burst_end: false,
        ..AckConfig::default()
    });
    let data = Frame::Data {
        seq: 1,
        binary: true,
        chunk: None,
        payload: b"x",
    };
    engine.handle_frame(10, true, &data.to_vec());
    let _ = drain(&mut engine);
    engine.handle_read_burst_end();
    assert!(frames(&drain(&mut engine)).is_empty());
    engine.handle_timeout(60);
    assert_eq!(
        frames(&drain(&mut engine)),
        vec![Frame::Ack { delivered: 1 }]
    );
}

#[test]
fn a_read_burst_end_sends_nothing_in_plain_mode_or_before_the_handshake() {
    let mut engine = started(config(), 1);
    engine.handle_open(1, None);
    let _ = drain(&mut engine);
    engine.handle_frame(2, false, b"plain");
    let out = drain(&mut engine);
    assert_eq!(events(&out).len(), 1, "{out:?}");
    engine.handle_read_burst_end();
    let out = drain(&mut engine);
    assert!(
        out.iter().all(|o| !matches!(o, Output::Transmit(_))),
        "{out:?}"
    );
}

#[test]
fn a_large_delivery_is_acknowledged_without_waiting_out_the_delay() {
    let mut engine = open_with_acks(AckConfig {
        delay_ms: 50,
        every: 100,
        every_bytes: 4096,
        ..AckConfig::default()
    });
    let small = Frame::Data {
        seq: 1,
        binary: true,
        chunk: None,
        payload: &[1; 100],
    };
    engine.handle_frame(10, true, &small.to_vec());
    let _ = drain(&mut engine);
    assert_eq!(engine.poll_timeout(), Some(60), "a small one waits");
    let big = vec![2u8; 4000];
    let data = Frame::Data {
        seq: 2,
        binary: true,
        chunk: None,
        payload: &big,
    };
    engine.handle_frame(20, true, &data.to_vec());
    let out = drain(&mut engine);
    assert!(
        frames(&out).iter().all(|f| !matches!(f, Frame::Ack { .. })),
        "never in the drain that delivered"
    );
    // 4,100 bytes wait: the ACK is due now, not at 60.
    assert_eq!(engine.poll_timeout(), Some(20));
    engine.handle_timeout(20);
    assert_eq!(
        frames(&drain(&mut engine)),
        vec![Frame::Ack { delivered: 2 }]
    );
}

#[test]
fn invalid_text_delivers_the_messages_before_it_then_fails_the_connection() {
    let mut engine = Engine::client(config(), 1).expect("config");
    let _ = open_reliable(&mut engine, 0, 0);
    let data = |seq: u64, binary: bool, payload: &'static [u8]| {
        Frame::Data {
            seq,
            binary,
            chunk: None,
            payload,
        }
        .to_vec()
    };
    // 2 and 3 arrive early and are held; 3 is text that is not UTF-8.
    engine.handle_frame(1, true, &data(2, false, b"two"));
    engine.handle_frame(1, true, &data(3, false, &[0xff, 0xfe]));
    engine.handle_frame(1, true, &data(4, false, b"four"));
    assert!(events(&drain(&mut engine)).is_empty());
    engine.handle_frame(2, true, &data(1, false, b"one"));
    let out = drain(&mut engine);
    let messages: Vec<Event> = events(&out)
        .into_iter()
        .filter(|e| matches!(e, Event::Message(_)))
        .collect();
    assert_eq!(
        messages,
        vec![
            Event::Message(Payload::from("one")),
            Event::Message(Payload::from("two"))
        ],
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Disconnect { code: 4908, .. })),
        "{out:?}"
    );
    assert!(events(&out).contains(&Event::Error(EngineError::InvalidUtf8)));
    assert_eq!(
        engine.delivered(),
        2,
        "the bad one is not counted delivered"
    );
    assert!(frames(&out).iter().all(|f| !matches!(f, Frame::Ack { .. })));
    // In order, with nothing held: the same.
    let mut engine = Engine::client(config(), 2).expect("config");
    let _ = open_reliable(&mut engine, 0, 0);
    engine.handle_frame(1, true, &data(1, false, &[0xc3]));
    let out = drain(&mut engine);
    assert!(events(&out).contains(&Event::Error(EngineError::InvalidUtf8)));
    assert_eq!(engine.delivered(), 0, "{out:?}");
}

#[test]
fn garbage_from_the_peer_closes_with_a_protocol_code_and_never_panics() {
    let mut engine = Engine::client(config(), 1).expect("config");
    let _ = open_reliable(&mut engine, 0, 0);
    engine.handle_frame(1, true, &[0x03, 0x00, 0x00]);
    let out = drain(&mut engine);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Disconnect { code: 4900, .. })),
        "{out:?}"
    );
    let mut engine = Engine::client(config(), 2).expect("config");
    let _ = open_reliable(&mut engine, 2, 0);
    let far = Frame::Data {
        seq: 5_000,
        binary: true,
        chunk: None,
        payload: b"x",
    };
    engine.handle_frame(3, true, &far.to_vec());
    assert!(drain(&mut engine)
        .iter()
        .any(|o| matches!(o, Output::Disconnect { code: 4902, .. })));
}

#[test]
fn a_detached_session_holds_no_partial_or_reordered_message_and_the_resend_completes_it() {
    let session = SessionId([6; 16]);
    let mut server = Engine::server(config(), 1, session).expect("config");
    let hello = |new| {
        Frame::Hello {
            secret: None,
            new,
            session,
            delivered: 0,
            max_message_size: 1 << 24,
        }
        .to_vec()
    };
    server.handle_open(0, None);
    server.handle_frame(1, true, &hello(true));
    drain(&mut server);
    let whole: Vec<u8> = (0..3_000u32).map(|i| i as u8).collect();
    let chunk = |index: u32| Frame::Data {
        seq: 1,
        binary: true,
        chunk: Some(codec::Chunk {
            index,
            count: 3,
            total_len: whole.len() as u64,
        }),
        payload: &whole[index as usize * 1_000..(index as usize + 1) * 1_000],
    };
    // Two of three chunks of seq 1, and seq 3 ahead of a gap.
    server.handle_frame(2, true, &chunk(0).to_vec());
    server.handle_frame(2, true, &chunk(1).to_vec());
    let ahead = Frame::Data {
        seq: 3,
        binary: true,
        chunk: None,
        payload: &[3; 500],
    };
    server.handle_frame(2, true, &ahead.to_vec());
    assert_eq!(server.buffered_bytes(), 2_500);
    server.handle_close(3, 1006, "");
    assert_eq!(server.buffered_bytes(), 0, "nothing held while detached");

    // The client resumes and resends everything unacknowledged.
    server.handle_open(10, None);
    server.handle_frame(11, true, &hello(false));
    drain(&mut server);
    for index in 0..3 {
        server.handle_frame(12, true, &chunk(index).to_vec());
    }
    let two = Frame::Data {
        seq: 2,
        binary: true,
        chunk: None,
        payload: &[2],
    };
    server.handle_frame(12, true, &two.to_vec());
    server.handle_frame(12, true, &ahead.to_vec());
    let delivered: Vec<Vec<u8>> = events(&drain(&mut server))
        .into_iter()
        .filter_map(|event| match event {
            Event::Message(Payload::Binary(bytes)) => Some(bytes),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec![whole, vec![2], vec![3; 500]]);
}

/// A server that selects steadfast.v1 (the first subprotocol offered) and
/// echoes: its first message is our own HELLO.
fn echoing_server_answers_hello(reliability: Reliability) -> (Engine, Vec<Output>) {
    let mut engine = started(
        Config {
            reliability,
            ..config()
        },
        7,
    );
    let _ = engine.send(0, WALL, Payload::Text("queued".into()));
    let _ = drain(&mut engine);
    engine.handle_open(0, Some(SUBPROTOCOL));
    let out = drain(&mut engine);
    let hello = out
        .iter()
        .find_map(|o| match o {
            Output::Transmit(t) if t.binary => Some(t.data.clone()),
            _ => None,
        })
        .expect("HELLO sent");
    engine.handle_frame(1, true, &hello);
    let out = drain(&mut engine);
    (engine, out)
}

#[test]
fn auto_mode_goes_plain_when_the_server_selects_steadfast_but_echoes() {
    let (mut engine, out) = echoing_server_answers_hello(Reliability::Auto);
    assert_eq!(engine.state(), &State::Open { mode: Mode::Plain });
    let first = events(&out);
    assert!(
        first.contains(&Event::Error(EngineError::NotSteadfast)),
        "{first:?}"
    );
    assert!(
        !first.iter().any(|e| matches!(e, Event::Message(_))),
        "the echoed HELLO is not a message: {first:?}"
    );
    // The queued message goes out as a plain text message.
    let plain: Vec<&Transmit> = out
        .iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(plain.len(), 1);
    assert!(!plain[0].binary);
    assert_eq!(&plain[0].data[..], b"queued");
    // Its echo is an ordinary message.
    engine.handle_frame(2, false, b"queued");
    let events = events(&drain(&mut engine));
    assert!(events.contains(&Event::Message(Payload::Text("queued".into()))));

    // The next connection to the same server is plain from the start: no HELLO.
    engine.reconnect(3);
    let out = run_timers(&mut engine, 3, 10_000);
    assert_eq!(connects(&out), 1, "connects again");
    engine.handle_open(10_000, Some(SUBPROTOCOL));
    let out = drain(&mut engine);
    assert!(frames(&out).is_empty(), "no HELLO again");
    assert_eq!(engine.state(), &State::Open { mode: Mode::Plain });
}

#[test]
fn a_server_whose_first_message_is_text_gets_it_delivered_in_auto_mode() {
    let mut engine = started(config(), 3);
    engine.handle_open(0, Some(SUBPROTOCOL));
    let _ = drain(&mut engine);
    engine.handle_frame(1, false, b"welcome, human");
    let events = events(&drain(&mut engine));
    assert!(events.contains(&Event::Message(Payload::Text("welcome, human".into()))));
    assert_eq!(engine.state(), &State::Open { mode: Mode::Plain });
}

#[test]
fn required_mode_stops_when_the_server_does_not_speak_steadfast() {
    let (engine, out) = echoing_server_answers_hello(Reliability::Required);
    assert_eq!(
        engine.state(),
        &State::Closed {
            reason: StopReason::SubprotocolRefused
        }
    );
    assert!(events(&out).contains(&Event::Error(EngineError::SubprotocolRefused)));
    assert!(out.iter().any(|o| matches!(o, Output::Disconnect { .. })));
}
