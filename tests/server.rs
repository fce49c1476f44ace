//! The reference server speaking protocol v1, driven by a client engine
//! over real sockets on loopback.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use steadfast_core::{BackoffConfig, Config, Event, Payload, State};
use steadfast_server::{Handler, Rooms, ServerConfig};
use steadfast_testkit::{eventually, EngineClient, Recorder, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

fn client_config() -> Config {
    Config {
        backoff: BackoffConfig {
            initial_ms: 20,
            max_ms: 200,
            fast_retry_ms: 10,
            healthy_after_ms: 500,
            connect_timeout_ms: 2_000,
            ..BackoffConfig::default()
        },
        ..Config::default()
    }
}

async fn start(config: ServerConfig, handler: impl Handler) -> TestServer {
    TestServer::start_with(config, handler)
        .await
        .expect("bind loopback")
}

fn text(i: usize) -> Payload {
    Payload::Text(format!("message {i}"))
}

/// Wait until `n` messages and `n` ACKs have arrived; return the messages.
async fn collect(client: &mut EngineClient, n: usize) -> (Vec<Payload>, usize, Vec<Event>) {
    let (mut messages, mut acked, mut other) = (Vec::new(), 0, Vec::new());
    let result = client
        .events_until(WAIT, |event| {
            match event {
                Event::Message(p) => messages.push(p.clone()),
                Event::Acked(_) => acked += 1,
                other_event => other.push(other_event.clone()),
            }
            messages.len() >= n && acked >= n
        })
        .await;
    if let Err(seen) = result {
        panic!(
            "timed out: {} messages, {acked} acks; last events: {:?}",
            messages.len(),
            seen.iter().rev().take(5).collect::<Vec<_>>()
        );
    }
    (messages, acked, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_messages_are_echoed_and_acknowledged_in_order() {
    let recorder = Recorder::default();
    let server = start(ServerConfig::default(), recorder.clone()).await;
    let mut client = EngineClient::start(&server.url(), client_config(), 1);
    for i in 0..50 {
        client.send(text(i)).await.expect("queued");
    }
    let (echoes, acked, _) = collect(&mut client, 50).await;
    let want: Vec<Payload> = (0..50).map(text).collect();
    assert_eq!(echoes, want);
    assert_eq!(acked, 50);
    assert_eq!(recorder.payloads(), want);
    let m = server.handle().metrics();
    assert_eq!(m.get("messages_in"), Some(50));
    assert_eq!(m.get("sessions"), Some(1));
    // The client saw 50 ACKs, so the server sent at least one ACK frame.
    assert!(m.get("acks_out").unwrap_or(0) >= 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_resume_with_nothing_lost_or_duplicated() {
    // Seeded: which sends the connection is cut after.
    let seed: u64 = std::env::var("STEADFAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = steadfast_core::Rng::new(seed);
    let recorder = Recorder::default();
    let server = start(ServerConfig::default(), recorder.clone()).await;
    let mut client = EngineClient::start(&server.url(), client_config(), seed);
    let total = 300;
    let mut cuts = 0;
    for i in 0..total {
        client.send(text(i)).await.expect("queued");
        if rng.up_to(99) < 4 {
            client.cut();
            cuts += 1;
        }
        if i % 25 == 0 {
            // Let some traffic and reconnects happen between bursts.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let (echoes, acked, _) = collect(&mut client, total).await;
    let want: Vec<Payload> = (0..total).map(text).collect();
    assert_eq!(
        recorder.payloads(),
        want,
        "seed {seed}: the server saw each message once, in order"
    );
    assert_eq!(
        echoes, want,
        "seed {seed}: the echoes came back once, in order"
    );
    assert_eq!(acked, total, "seed {seed}");
    let m = server.handle().metrics();
    let resumes = m.get("resumes").unwrap_or(0);
    eprintln!(
        "seed {seed}: {cuts} cuts, {resumes} resumes, {} resends, {} dedups",
        m.get("resends").unwrap_or(0),
        m.get("dedups").unwrap_or(0)
    );
    assert!(
        cuts >= 3,
        "seed {seed}: the test cut the connection ({cuts})"
    );
    assert!(resumes >= 1, "seed {seed}: the session was resumed");
    assert_eq!(
        m.get("sessions_created"),
        Some(1),
        "seed {seed}: one session throughout"
    );
    assert_eq!(m.get("resyncs"), Some(0), "seed {seed}");
    server.stop().await;
}

/// Records messages in the order the application is handed them; the
/// first time `message 10` arrives it blocks its connection's task for a
/// while (an application doing slow work) and says so.
#[derive(Clone)]
struct SlowAtTen {
    recorder: Recorder,
    blocked: std::sync::Arc<tokio::sync::Notify>,
    once: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Handler for SlowAtTen {
    fn on_message(
        &self,
        server: &steadfast_server::ServerHandle,
        peer: &steadfast_server::Peer,
        message: Payload,
    ) {
        let slow =
            message == text(10) && !self.once.swap(true, std::sync::atomic::Ordering::SeqCst);
        self.recorder.on_message(server, peer, message);
        if slow {
            self.blocked.notify_one();
            std::thread::sleep(Duration::from_millis(400));
        }
    }
}

/// A connection hands its batch of delivered messages to the application
/// while the client has already cut it and resumed on a new one: the new
/// connection must not hand over later messages until the old one has
/// handed over all it took. (Without the session's hand-over lock the
/// application saw 0-10, then the resent tail, then 11 onwards.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_connection_waits_for_the_old_one_to_hand_over_its_messages() {
    let handler = SlowAtTen {
        recorder: Recorder::default(),
        blocked: std::sync::Arc::default(),
        once: std::sync::Arc::default(),
    };
    let server = start(ServerConfig::default(), handler.clone()).await;
    let mut client = EngineClient::start(&server.url(), client_config(), 1);
    let total = 200;
    let blocked = handler.blocked.notified();
    for i in 0..total {
        client.send(text(i)).await.expect("queued");
    }
    tokio::time::timeout(WAIT, blocked)
        .await
        .expect("message 10 reached the application");
    // The old connection is busy handing over; the client moves on.
    client.cut();
    let (echoes, acked, _) = collect(&mut client, total).await;
    let want: Vec<Payload> = (0..total).map(text).collect();
    assert_eq!(
        handler.recorder.payloads(),
        want,
        "the application saw each message once, in order"
    );
    assert_eq!(echoes, want, "the echoes came back once, in order");
    assert_eq!(acked, total);
    assert!(
        server.handle().metrics().get("resumes").unwrap_or(0) >= 1,
        "the session was resumed"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lost_the_session_makes_the_client_resync() {
    let recorder = Recorder::default();
    let server = start(ServerConfig::default(), recorder.clone()).await;
    let mut client = EngineClient::start(&server.url(), client_config(), 7);
    client.send(text(0)).await.expect("queued");
    collect(&mut client, 1).await;
    let first_peer = recorder.seen()[0].0;

    assert_eq!(server.handle().forget_all_sessions(), 1);
    let seen = client
        .events_until(WAIT, |e| matches!(e, Event::ResyncRequired))
        .await
        .expect("the client hears it must resync");
    assert!(seen.iter().any(|e| matches!(e, Event::ResyncRequired)));
    client.send(text(1)).await.expect("queued");
    let (echoes, _, _) = collect(&mut client, 1).await;
    assert_eq!(echoes, vec![text(1)]);
    let seen = recorder.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[1].0, first_peer, "a new session is a new peer");
    let m = server.handle().metrics();
    assert_eq!(m.get("resyncs"), Some(1));
    assert_eq!(m.get("sessions_created"), Some(2));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_after_their_ttl() {
    let mut config = ServerConfig::default();
    config.session_ttl = Duration::from_millis(100);
    let server = start(config, Recorder::default()).await;
    let mut client = EngineClient::start(&server.url(), client_config(), 3);
    client.send(text(0)).await.expect("queued");
    collect(&mut client, 1).await;
    assert_eq!(server.handle().session_count(), 1);
    client.close();
    eventually("the session to expire", WAIT, || {
        server.handle().session_count() == 0
    })
    .await;
    assert_eq!(server.handle().metrics().get("sessions_expired"), Some(1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_are_chunked_and_reassembled_both_ways() {
    let recorder = Recorder::default();
    let server = start(ServerConfig::default(), recorder.clone()).await;
    let mut client = EngineClient::start(&server.url(), client_config(), 11);
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    client
        .send(Payload::Binary(big.clone()))
        .await
        .expect("queued");
    let (echoes, _, _) = collect(&mut client, 1).await;
    assert_eq!(echoes, vec![Payload::Binary(big)]);
    let m = server.handle().metrics();
    assert!(m.get("chunks_in").unwrap_or(0) >= 96, "{}", m.render());
    assert!(m.get("chunks_out").unwrap_or(0) >= 96);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_sessions_is_answered_with_1013() {
    let mut config = ServerConfig::default();
    config.max_sessions = 1;
    let server = start(config, Recorder::default()).await;
    let mut first = EngineClient::start(&server.url(), client_config(), 1);
    first.send(text(0)).await.expect("queued");
    collect(&mut first, 1).await;
    let mut second = EngineClient::start(&server.url(), client_config(), 2);
    backs_off_after_close(&mut second, 1013).await;
    assert!(
        server
            .handle()
            .metrics()
            .get("connections_refused")
            .unwrap_or(0)
            >= 1
    );
    server.stop().await;
}

type PlainWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The client backs off, and the close that made it carried `code`.
async fn backs_off_after_close(client: &mut EngineClient, code: u16) {
    let seen = client
        .events_until(WAIT, |e| {
            matches!(e, Event::State(State::BackingOff { .. }))
        })
        .await
        .unwrap_or_else(|seen| panic!("the client never backed off: {seen:?}"));
    assert!(
        seen.iter()
            .any(|e| format!("{e:?}").contains(&code.to_string())),
        "close {code} expected: {seen:?}"
    );
}

async fn plain_ws(url: &str) -> PlainWs {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn next_text(ws: &mut PlainWs) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.as_str().to_owned(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no text message: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mode_passes_messages_unchanged() {
    let server = start(ServerConfig::default(), Recorder::default()).await;
    let mut ws = plain_ws(&server.url()).await;
    ws.send(Message::Text("hello".into())).await.expect("send");
    assert_eq!(next_text(&mut ws).await, "hello");
    ws.send(Message::Binary(vec![0, 1, 2].into()))
        .await
        .expect("send");
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(&b[..], &[0, 1, 2]),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_route_to_members_one_peer_and_everyone() {
    let server = start(ServerConfig::default(), Rooms).await;
    let (mut a, mut b, mut c) = (
        plain_ws(&server.url()).await,
        plain_ws(&server.url()).await,
        plain_ws(&server.url()).await,
    );
    let b_id = ask(&mut b, r#"{"type":"whoami"}"#).await["peer"]
        .as_str()
        .expect("peer")
        .to_owned();
    assert_eq!(
        ask(&mut a, r#"{"type":"join","room":"r"}"#).await["members"],
        1
    );
    assert_eq!(
        ask(&mut b, r#"{"type":"join","room":"r"}"#).await["members"],
        2
    );
    let sent = ask(&mut a, r#"{"type":"room","room":"r","data":{"hi":1}}"#).await;
    assert_eq!(sent["count"], 1, "{sent}");
    let got: serde_json::Value = serde_json::from_str(&next_text(&mut b).await).expect("JSON");
    assert_eq!(got["room"], "r");
    assert_eq!(got["data"]["hi"], 1);
    let direct = format!(r#"{{"type":"direct","to":"{b_id}","data":"psst"}}"#);
    assert_eq!(ask(&mut c, &direct).await["count"], 1);
    let got: serde_json::Value = serde_json::from_str(&next_text(&mut b).await).expect("JSON");
    assert_eq!(got["data"], "psst");
    assert_eq!(
        ask(&mut c, r#"{"type":"broadcast","data":"all"}"#).await["count"],
        2
    );
    for ws in [&mut a, &mut b] {
        let got: serde_json::Value = serde_json::from_str(&next_text(ws).await).expect("JSON");
        assert_eq!(got["data"], "all");
    }
    let error = ask(&mut c, r#"{"type":"room","room":"r","data":1}"#).await;
    assert_eq!(error["code"], "ERR_NOT_A_MEMBER");
    let error = ask(&mut c, "not json").await;
    assert_eq!(error["code"], "ERR_BAD_COMMAND");
    server.stop().await;
}

async fn ask(ws: &mut PlainWs, json: &str) -> serde_json::Value {
    ws.send(Message::Text(json.to_owned().into()))
        .await
        .expect("send");
    serde_json::from_str(&next_text(ws).await).expect("JSON reply")
}

async fn http_get(addr: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_share_the_port() {
    let server = start(ServerConfig::default(), Recorder::default()).await;
    let addr = server.url().trim_start_matches("ws://").to_owned();
    let health = http_get(&addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"));
    let mut client = EngineClient::start(&server.url(), client_config(), 5);
    for i in 0..3 {
        client.send(text(i)).await.expect("queued");
    }
    collect(&mut client, 3).await;
    let metrics = http_get(&addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("# TYPE steadfast_connections_total counter"));
    assert!(
        metrics.contains("\nsteadfast_connections_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nsteadfast_messages_in 3\n"), "{metrics}");
    assert!(metrics.contains("\nsteadfast_sessions 1\n"), "{metrics}");
    let other = http_get(&addr, "/").await;
    assert!(other.starts_with("HTTP/1.1 426"), "{other}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_going_away_and_the_session_resumes_elsewhere_as_resync() {
    let server = start(ServerConfig::default(), Recorder::default()).await;
    let mut client = EngineClient::start(&server.url(), client_config(), 9);
    client.send(text(0)).await.expect("queued");
    collect(&mut client, 1).await;
    server.stop().await;
    backs_off_after_close(&mut client, 1001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_bad_token_is_refused_with_4001_and_the_client_stops() {
    let auth = steadfast_server::JwtAuth::hs256(b"test secret");
    let mut config = ServerConfig::default();
    config.auth = Some(auth.clone());
    let recorder = Recorder::default();
    let server = start(config, recorder.clone()).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 600;
    let forged = steadfast_server::JwtAuth::hs256(b"wrong")
        .sign(&serde_json::json!({"sub": "x", "exp": exp}));
    // Well signed, but it never expires: refused by default.
    let forever = auth.sign(&serde_json::json!({"sub": "x"}));
    for url in [
        server.url().clone(),
        format!("{}/?token={forged}", server.url()),
        format!("{}/?token={forever}", server.url()),
    ] {
        let mut client = EngineClient::start(&url, client_config(), 1);
        client.send(text(0)).await.expect("queued");
        let seen = client
            .events_until(WAIT, |e| matches!(e, Event::State(State::Closed { .. })))
            .await
            .unwrap_or_else(|seen| panic!("the client did not stop: {seen:?}"));
        assert!(
            seen.iter().any(|e| format!("{e:?}").contains("4001")),
            "{seen:?}"
        );
        let (state, stats, queued) = client.inspect().await;
        assert!(matches!(state, State::Closed { .. }));
        assert_eq!(stats.connects, 1, "no retry loop");
        assert_eq!(queued, 1, "the message stays queued, not lost");
    }
    assert!(recorder.payloads().is_empty());

    // A good token in the query string: the session is bound to its subject.
    let token = auth.sign(&serde_json::json!({"sub": "alice", "exp": exp}));
    let mut client = EngineClient::start(
        &format!("{}/?token={token}", server.url()),
        client_config(),
        2,
    );
    client.send(text(1)).await.expect("queued");
    assert_eq!(collect(&mut client, 1).await.0, vec![text(1)]);

    // ... or as a `bearer.` subprotocol entry, which is never selected back.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            server.url().as_str(),
        )
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("steadfast.echo, bearer.{token}")
            .parse()
            .expect("header value"),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"steadfast.echo"[..])
    );
    ws.send(Message::Text("with bearer".into()))
        .await
        .expect("send");
    assert_eq!(next_text(&mut ws).await, "with bearer");
    assert!(
        server
            .handle()
            .metrics()
            .get("connections_refused")
            .unwrap_or(0)
            >= 3
    );
    server.stop().await;
}

/// Send `n` messages one at a time (each waits for its ACK) through a
/// server injecting faults; return the fault log.
async fn lock_step_with_faults(
    faults: steadfast_server::Faults,
    n: usize,
) -> Vec<steadfast_server::FaultRecord> {
    let mut config = ServerConfig::default();
    config.faults = faults;
    // Lock-step waits for each ACK; do not make it wait out the coalescing.
    config.engine.ack.delay_ms = 2;
    let recorder = Recorder::default();
    let server = start(config, recorder.clone()).await;
    let mut client = EngineClient::start(&server.url(), client_config(), 1);
    for i in 0..n {
        client.send(text(i)).await.expect("queued");
        client
            .events_until(WAIT, |e| matches!(e, Event::Acked(_)))
            .await
            .unwrap_or_else(|seen| panic!("message {i} never acknowledged: {seen:?}"));
    }
    let want: Vec<Payload> = (0..n).map(text).collect();
    assert_eq!(
        recorder.payloads(),
        want,
        "exactly once, in order, despite the faults"
    );
    let log = server.handle().fault_log();
    server.stop().await;
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_with_a_seed_reproduces_the_same_drops() {
    let faults = |seed| {
        let mut f = steadfast_server::Faults::default();
        f.seed = seed;
        f.drop_ppm = 100_000;
        f.delay_ms = Some((0, 2));
        f
    };
    let first = lock_step_with_faults(faults(7), 60).await;
    let again = lock_step_with_faults(faults(7), 60).await;
    let other = lock_step_with_faults(faults(8), 60).await;
    eprintln!("seed 7: {first:?}\nseed 8: {other:?}");
    assert!(first.len() >= 2, "10% of ~60 frames drop: {first:?}");
    assert_eq!(first, again, "same seed, same drops");
    assert_ne!(first, other, "another seed, other drops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_close_with_the_core_s_code_and_are_counted() {
    use steadfast_core::codec::{Frame, SessionId};
    let server = start(ServerConfig::default(), Recorder::default()).await;
    let url = server.url();
    let reliable = || steadfast_tests::raw::connect(&url, true);
    let close_code = |ws: PlainWs| async move {
        let mut ws = ws;
        loop {
            match tokio::time::timeout(WAIT, ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame))))) => return u16::from(frame.code),
                Ok(Some(Ok(_))) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    };
    // The first frame is not HELLO.
    let mut ws = reliable().await;
    ws.send(Message::Binary(Frame::Ack { delivered: 0 }.to_vec().into()))
        .await
        .expect("send");
    assert_eq!(close_code(ws).await, 4900);
    // A broken DATA frame inside a session: the session's engine closes.
    let mut ws = reliable().await;
    let hello = Frame::Hello {
        secret: None,
        new: true,
        session: SessionId([7; 16]),
        delivered: 0,
        max_message_size: 1 << 20,
    };
    ws.send(Message::Binary(hello.to_vec().into()))
        .await
        .expect("send");
    ws.send(Message::Binary(vec![0x03].into()))
        .await
        .expect("send");
    assert_eq!(close_code(ws).await, 4900);
    assert_eq!(server.handle().metrics().get("protocol_errors"), Some(2));
    server.stop().await;
}

/// A plain client that sends faster than its echoes are written gets every
/// echo: the server stops reading while the connection's queue is over
/// half full instead of dropping answers as busy.
#[tokio::test]
async fn a_plain_echo_pushes_back_instead_of_dropping() {
    let mut config = ServerConfig::default();
    config.plain_queue = 16;
    let server = TestServer::start_with(config, steadfast_server::Echo)
        .await
        .expect("bind loopback");
    let (ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("plain connect");
    let (mut write, mut read) = ws.split();
    const COUNT: usize = 5_000;
    let writer = tokio::spawn(async move {
        for i in 0..COUNT {
            write
                .feed(Message::Text(i.to_string().into()))
                .await
                .expect("send");
        }
        write.flush().await.expect("flush");
        write
    });
    for i in 0..COUNT {
        let message = tokio::time::timeout(Duration::from_secs(30), read.next())
            .await
            .unwrap_or_else(|_| panic!("echo {i} never came"))
            .expect("the stream is open")
            .expect("a message");
        assert_eq!(message, Message::Text(i.to_string().into()));
    }
    let _ = writer.await;
}

/// Echoes, but panics on the text "panic" (an application bug).
struct Fragile;

impl Handler for Fragile {
    fn on_message(
        &self,
        server: &steadfast_server::ServerHandle,
        peer: &steadfast_server::Peer,
        message: Payload,
    ) {
        assert!(
            message != Payload::Text("panic".into()),
            "the handler's bug"
        );
        let _ = server.send(peer.id, message);
    }
}

/// A handler that panics closes its connection 1011 and nothing else: the
/// connection is counted closed, the session detaches and resumes, the
/// message that made it panic is not delivered again (the application
/// had it), and other clients are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_closes_its_connection_1011_and_the_server_goes_on() {
    let server = start(ServerConfig::default(), Fragile).await;
    let mut client = EngineClient::start(&server.url(), client_config(), 3);
    for text in ["before", "panic", "after"] {
        client
            .send(Payload::Text(text.into()))
            .await
            .expect("queued");
    }
    let mut echoes = Vec::new();
    let mut closed_1011 = false;
    let result = client
        .events_until(WAIT, |event| {
            match event {
                Event::Message(Payload::Text(text)) => echoes.push(text.clone()),
                other => {
                    if format!("{other:?}").contains("1011") {
                        closed_1011 = true;
                    }
                }
            }
            echoes.len() >= 2
        })
        .await;
    assert!(result.is_ok(), "echoes {echoes:?}");
    assert_eq!(echoes, ["before", "after"]);
    let metrics = server.handle().metrics();
    assert_eq!(metrics.get("handler_panics"), Some(1));
    assert!(closed_1011, "no 1011 close seen");

    // Plain mode: closed 1011, counted closed, the server goes on.
    let mut ws = plain_ws(&server.url()).await;
    ws.send(Message::Text("panic".into())).await.expect("send");
    let closed = loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => break u16::from(frame.code),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(closed, 1011);
    let mut other = plain_ws(&server.url()).await;
    other.send(Message::Text("hi".into())).await.expect("send");
    assert_eq!(next_text(&mut other).await, "hi");
    drop(other);
    // The reliable client's connection only.
    eventually("the plain connections counted closed", WAIT, || {
        server.handle().metrics().get("connections_open") == Some(1)
    })
    .await;
    assert_eq!(server.handle().metrics().get("handler_panics"), Some(2));
    server.stop().await;
}

/// A room refuses members past `max_members`, with the documented code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_refuses_another_member() {
    let mut config = ServerConfig::default();
    config.rooms.max_members = 2;
    let server = start(config, Rooms).await;
    let mut peers = Vec::new();
    for _ in 0..3 {
        peers.push(plain_ws(&server.url()).await);
    }
    let mut replies = Vec::new();
    for ws in &mut peers {
        replies.push(ask(ws, r#"{"type":"join","room":"r"}"#).await);
    }
    assert_eq!(replies[0]["members"], 1);
    assert_eq!(replies[1]["members"], 2);
    assert_eq!(replies[2]["code"], "ERR_ROOM_FULL", "{}", replies[2]);
    server.stop().await;
}

#[tokio::test]
async fn a_reliable_client_that_closes_gets_the_answering_close_frame() {
    use steadfast_tests::raw;
    let server = TestServer::start().await.expect("bind");
    let session = steadfast_core::codec::SessionId([0x42; 16]);
    let mut ws = raw::hello(&server.url(), session, true, None).await;
    raw::welcome(&mut ws).await;
    ws.send(Message::Close(Some(
        tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        },
    )))
    .await
    .expect("send close");
    // The close handshake completes: the server answers with a close frame
    // (before, it dropped the socket and the client saw 1006).
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return Some(frame),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("an answer in time");
    let frame = answer.expect("a close frame, not a dropped socket");
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
}
