//! The server under hostile clients, as a process on loopback (issue 31):
//! each attack is bounded in count and time, the server's resident memory
//! is read from /proc, and a legitimate client keeps getting its echo.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use steadfast::{Client, ClientEvent, Payload};
use steadfast_core::codec::{Chunk, Frame, SessionId, SUBPROTOCOL};
use steadfast_tests::raw::{data, data_until_quiet, http_get, next_frame, welcome_of, Ws};
use steadfast_tests::ServerProcess;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SERVER: &str = env!("CARGO_BIN_EXE_steadfast-test-server");

/// Generous: every step takes milliseconds.
const WAIT: Duration = Duration::from_secs(20);

async fn start(args: &[&str]) -> ServerProcess {
    let args: Vec<String> = ["--sessions", "memory"]
        .iter()
        .chain(args)
        .map(|a| (*a).to_owned())
        .collect();
    tokio::task::spawn_blocking(move || ServerProcess::start(SERVER, "127.0.0.1:0", &args))
        .await
        .expect("started")
}

/// A raw WebSocket to `server`, offering `steadfast.v1` when `reliable`.
async fn raw(server: &ServerProcess, reliable: bool) -> Ws {
    steadfast_tests::raw::connect(&server.url, reliable).await
}

/// A raw reliable connection that has said HELLO (NEW, no secret).
async fn hello(server: &ServerProcess, session: SessionId) -> Ws {
    hello_with(server, session, true, None).await
}

/// A raw reliable connection that has said HELLO for `session`.
async fn hello_with(
    server: &ServerProcess,
    session: SessionId,
    new: bool,
    secret: Option<[u8; 16]>,
) -> Ws {
    steadfast_tests::raw::hello(&server.url, session, new, secret).await
}

/// The close frame's code and reason (other messages skipped).
async fn close_of(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// The client's next message (other events skipped).
async fn next_message(client: &Client) -> Payload {
    tokio::time::timeout(WAIT, async {
        loop {
            match client.next_event().await {
                Some(ClientEvent::Message(message)) => return message,
                Some(_) => continue,
                None => panic!("the client ended"),
            }
        }
    })
    .await
    .expect("a message in time")
}

/// A well-behaved reliable client gets its echo.
async fn legitimate_echo(server: &ServerProcess, text: &str) {
    let client = Client::builder(server.url.clone())
        .connect()
        .await
        .expect("valid options");
    let receipt = client.send(text.to_owned()).await.expect("queued");
    assert_eq!(next_message(&client).await, Payload::Text(text.to_owned()));
    tokio::time::timeout(WAIT, receipt)
        .await
        .expect("the ACK in time")
        .expect("acknowledged");
    let _ = client.close(1000, "done").await;
}

/// A frame over the limit is answered with 1009 and a reason naming the
/// limit, not a reset: in reliable mode the limit is a chunk plus its
/// header (32 KiB + 64 by default), in plain mode the message size limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_gets_1009_with_its_limit_not_a_reset() {
    let server = start(&["--max-message-size", "1048576"]).await;
    let mut ws = hello(&server, SessionId([1; 16])).await;
    ws.send(Message::Binary(vec![7; 1 << 20].into()))
        .await
        .expect("send");
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(
        reason.contains("over the limit of 32832"),
        "reliable: {reason}"
    );

    // Plain mode: 4 MiB against a 1 MiB message limit, in one frame.
    let mut ws = raw(&server, false).await;
    ws.send(Message::Binary(vec![7; 4 << 20].into()))
        .await
        .expect("send");
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(
        reason.contains("over the limit of 1048640"),
        "plain: {reason}"
    );
    legitimate_echo(&server, "still here").await;
}

/// Sessions that park partial chunked messages and leave hold none of
/// them: one after another, 24 clients each send 8 MiB of a declared
/// 15 MiB message and disconnect; the server's resident memory does not
/// grow with their number (it held every one until the session TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_park_partial_messages_and_leave_hold_none_of_them() {
    const ATTACKERS: u8 = 24;
    const CHUNK: usize = 32 * 1024;
    const PARKED: usize = 8 << 20;
    const DECLARED: u64 = 15 << 20;
    let server = start(&[]).await;
    legitimate_echo(&server, "warm").await;
    let before = server.rss_kib();
    let payload = vec![0x5a; CHUNK];
    let mut peak = before;
    for attacker in 1..=ATTACKERS {
        let mut ws = hello(&server, SessionId([attacker; 16])).await;
        for index in 0..(PARKED / CHUNK) as u32 {
            let chunk = Frame::Data {
                seq: 1,
                binary: true,
                chunk: Some(Chunk {
                    index,
                    count: (DECLARED / CHUNK as u64) as u32,
                    total_len: DECLARED,
                }),
                payload: &payload,
            };
            ws.feed(Message::Binary(chunk.to_vec().into()))
                .await
                .expect("send a chunk");
        }
        ws.flush().await.expect("flush");
        // Its WELCOME first: the server has read up to here.
        let welcomed = tokio::time::timeout(WAIT, ws.next()).await;
        assert!(
            matches!(welcomed, Ok(Some(Ok(Message::Binary(_))))),
            "{welcomed:?}"
        );
        let _ = ws.close(None).await;
        drop(ws);
        let wait = std::time::Instant::now();
        while server.metric("connections_open") != Some(0) {
            assert!(
                wait.elapsed() < WAIT,
                "the attacker's connection never ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak = peak.max(server.rss_kib());
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "{ATTACKERS} sessions parked {} MiB in all: the server grew {grown_mib} MiB at most",
        (usize::from(ATTACKERS) * PARKED) >> 20
    );
    // Held until the TTL, they would be 192 MiB; one at a time is 8–16.
    assert!(grown_mib < 96, "grew {grown_mib} MiB");
    assert_eq!(server.metric("sessions"), Some(u64::from(ATTACKERS) + 1));
    legitimate_echo(&server, "still here").await;
}

/// A client whose chunks are larger than the server's frame limit is told
/// 1009, halves its chunk size and gets through: a 1 MiB message sent in
/// 256 KiB chunks to a server taking 32 KiB frames is echoed once, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_larger_chunks_halves_them_and_gets_through() {
    let server = start(&[]).await;
    let client = Client::builder(server.url.clone())
        .chunk_size(256 * 1024)
        .connect()
        .await
        .expect("valid options");
    let message: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let receipt = client.send(message.clone()).await.expect("queued");
    assert!(
        next_message(&client).await == Payload::Binary(message),
        "the echo differs"
    );
    tokio::time::timeout(WAIT, receipt)
        .await
        .expect("the ACK in time")
        .expect("acknowledged");
    let stats = client.stats();
    eprintln!(
        "256 KiB chunks: {} reconnects to a 32 KiB frame limit",
        stats.reconnects()
    );
    assert!(
        stats.reconnects() >= 1 && stats.reconnects() <= 3,
        "{stats:?}"
    );
    let _ = client.close(1000, "done").await;
}

/// One peer joining rooms without end is refused past the limits (default
/// flags): names over 256 bytes, and more than 1,000 rooms at once. The
/// refusals are the documented codes, and leaving makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_joining_rooms_without_end_is_refused_past_the_limits() {
    let server = start(&["--handler", "rooms"]).await;
    let mut ws = raw(&server, false).await;
    let mut ask = async |request: serde_json::Value| -> serde_json::Value {
        ws.send(Message::Text(request.to_string().into()))
            .await
            .expect("send");
        loop {
            match tokio::time::timeout(WAIT, ws.next()).await {
                Ok(Some(Ok(Message::Text(reply)))) => {
                    return serde_json::from_str(&reply).expect("JSON")
                }
                Ok(Some(Ok(_))) => continue,
                other => panic!("no reply: {other:?}"),
            }
        }
    };
    let long = "n".repeat(8 * 1024);
    let reply = ask(serde_json::json!({"type": "join", "room": long})).await;
    assert_eq!(reply["code"], "ERR_ROOM_NAME", "{reply}");
    let (mut joined, mut refused) = (0, 0);
    for i in 0..1_100 {
        let room = format!("{i:0>200}");
        let reply = ask(serde_json::json!({"type": "join", "room": room})).await;
        match reply["type"].as_str() {
            Some("joined") => joined += 1,
            _ => {
                assert_eq!(reply["code"], "ERR_TOO_MANY_ROOMS", "{reply}");
                refused += 1;
            }
        }
    }
    assert_eq!((joined, refused), (1_000, 100));
    // Joining one it is in is no new room; leaving one makes room.
    let first = format!("{:0>200}", 0);
    let reply = ask(serde_json::json!({"type": "join", "room": first})).await;
    assert_eq!(reply["type"], "joined", "{reply}");
    ask(serde_json::json!({"type": "leave", "room": first})).await;
    let reply = ask(serde_json::json!({"type": "join", "room": "another"})).await;
    assert_eq!(reply["type"], "joined", "{reply}");
}

/// Another client sending a HELLO with a session's id but not its secret
/// gets a session of its own: none of the owner's messages, and the owner
/// is neither closed nor disturbed. The owner resumes with its secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_with_a_stolen_session_id_but_not_its_secret_gets_a_new_session() {
    let server = start(&[]).await;
    let session = SessionId([0x42; 16]);
    let secret = [0x17; 16];
    let mut owner = hello_with(&server, session, true, Some(secret)).await;
    let first = next_frame(&mut owner, WAIT).await.expect("a WELCOME");
    assert_eq!(welcome_of(&first), (session, false));
    // Two messages, echoed; the owner does not acknowledge the echoes.
    owner.send(data(1, "mine 1")).await.expect("send");
    owner.send(data(2, "mine 2")).await.expect("send");
    let mut echoes = 0;
    while echoes < 2 {
        let frame = next_frame(&mut owner, WAIT).await.expect("echoes");
        if let Ok(Frame::Data { .. }) = steadfast_core::codec::decode(&frame, u64::MAX) {
            echoes += 1;
        }
    }

    for (attempt, stolen) in [None, Some([0x18; 16])].into_iter().enumerate() {
        for new in [false, true] {
            let mut thief = hello_with(&server, session, new, stolen).await;
            let welcome = next_frame(&mut thief, WAIT).await.expect("a WELCOME");
            let (given, resumed) = welcome_of(&welcome);
            assert!(given != session && !resumed, "{stolen:?} {new}: {given:?}");
            // Nothing of the owner's: no DATA, no SKIP.
            assert_eq!(
                next_frame(&mut thief, Duration::from_millis(300)).await,
                None,
                "attempt {attempt}, new {new}"
            );
        }
    }
    assert_eq!(server.metric("resumes_refused"), Some(4));

    // The owner was not closed (4909) and is served on.
    owner.send(data(3, "mine 3")).await.expect("send");
    assert_eq!(data_until_quiet(&mut owner).await, ["mine 3"]);
    drop(owner);

    // With its secret, the owner resumes, and its unacknowledged echoes
    // come again.
    let mut back = hello_with(&server, session, false, Some(secret)).await;
    let welcome = next_frame(&mut back, WAIT).await.expect("a WELCOME");
    assert_eq!(welcome_of(&welcome), (session, true));
    assert_eq!(
        data_until_quiet(&mut back).await,
        ["mine 1", "mine 2", "mine 3"]
    );
}

/// A plain client holding a frame it never finishes (here 1 KiB of a
/// declared 1 MiB) is closed `1001` once nothing was heard for
/// `--plain-idle-timeout`; a quiet client that answers the server's pings
/// stays connected past it and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_frame_never_finished_is_closed_when_idle_and_a_live_client_stays() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(&[
        "--plain-idle-timeout",
        "1s",
        "--plain-ping-interval",
        "200ms",
    ])
    .await;
    let started = std::time::Instant::now();
    let mut stalled = raw(&server, false).await;
    // A masked binary frame header for 1 MiB, then 1 KiB of it.
    let mut bytes = vec![0x82, 0xff];
    bytes.extend_from_slice(&(1u64 << 20).to_be_bytes());
    bytes.extend_from_slice(&[1, 2, 3, 4]);
    bytes.extend_from_slice(&[0; 1024]);
    let stream = match stalled.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(stream) => stream,
        _ => panic!("a plain TCP stream"),
    };
    stream.write_all(&bytes).await.expect("write");

    // Meanwhile a quiet client that reads (so answers pings).
    let mut quiet = raw(&server, false).await;
    let quiet_reader = tokio::spawn(async move {
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_millis(2_500);
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, quiet.next()).await {
            if let Message::Ping(_) = message {
                pings += 1;
            }
        }
        (quiet, pings)
    });

    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the stalled connection was never closed"),
        }
    }
    let waited = started.elapsed();
    // The server's frames: pings (0x89) maybe, then the close (0x88, 1001).
    let close = seen
        .windows(4)
        .position(|w| w[0] == 0x88 && w[2..4] == 1001u16.to_be_bytes());
    assert!(close.is_some(), "no close 1001 in {seen:02x?}");
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    assert_eq!(server.metric("plain_idle_closed"), Some(1));

    let (mut quiet, pings) = quiet_reader.await.expect("the reader ran");
    assert!(pings >= 3, "{pings} pings in 2.5 s");
    quiet
        .send(Message::Text("still here".into()))
        .await
        .expect("send");
    let echo = loop {
        match tokio::time::timeout(WAIT, quiet.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => break text.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no echo: {other:?}"),
        }
    };
    assert_eq!(echo, "still here");
    assert_eq!(server.metric("plain_idle_closed"), Some(1));
}

/// Connections are counted from accept: clients that connect and never
/// finish the handshake use up `--max-connections` like any other; past
/// it a connection is answered 503 and closed at once (no descriptor
/// held), and once the silent ones are cut by the handshake timeout the
/// server accepts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_count_against_max_connections_and_the_rest_get_503() {
    use tokio::io::AsyncReadExt;
    let server = start(&["--max-connections", "20", "--handshake-timeout", "1s"]).await;
    let addr = server.addr();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let wait = std::time::Instant::now();
    loop {
        let mut late = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, late.read_to_end(&mut answer)).await;
        if String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503") {
            break;
        }
        // The 20 may not all be accepted yet.
        assert!(wait.elapsed() < WAIT, "never refused: {answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (Its /metrics would be refused too, being a connection.)
    // The silent ones are cut after the 1 s handshake timeout…
    for mut stream in silent {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a silent socket was never cut");
    }
    // …and a real client is served again.
    legitimate_echo(&server, "after the storm").await;
    assert!(server.metric("connections_refused").unwrap_or(0) >= 1);
    assert_eq!(
        server.metric("sockets_open"),
        Some(1),
        "only the /metrics request"
    );
}

/// Reliable clients that send and never read their echoes fill their
/// sessions' outboxes (32 MiB each before the server stops reading them).
/// Under `--max-memory 48M` the server sheds the heaviest (closed, state
/// dropped), its resident memory stays near the budget rather than
/// growing with the attackers, and a legitimate client is served. A shed
/// client resumes from its record and is told what it lost (SKIP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_shed_at_the_memory_budget() {
    const ATTACKERS: u8 = 6;
    let server = std::sync::Arc::new(start(&["--max-memory", "48M"]).await);
    legitimate_echo(&server, "warm").await;
    let before = server.rss_kib();
    let sampler = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            for _ in 0..80 {
                peak = peak.max(server.rss_kib());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let mut attackers = Vec::new();
    for attacker in 1..=ATTACKERS {
        let mut ws = hello(&server, SessionId([0x60 + attacker; 16])).await;
        attackers.push(tokio::spawn(async move {
            let payload = vec![attacker; 32 * 1024];
            let until = tokio::time::Instant::now() + Duration::from_secs(6);
            let mut sent = 0u64;
            for seq in 1..=1_600u64 {
                let frame = Frame::Data {
                    seq,
                    binary: true,
                    chunk: None,
                    payload: &payload,
                };
                let send = ws.send(Message::Binary(frame.to_vec().into()));
                match tokio::time::timeout_at(until, send).await {
                    Ok(Ok(())) => sent += payload.len() as u64,
                    _ => break,
                }
            }
            sent
        }));
    }
    let mut sent = 0;
    for attacker in attackers {
        sent += attacker.await.expect("the attacker ran");
    }
    legitimate_echo(&server, "during").await;
    let peak = sampler.await.expect("the sampler ran");
    let shed = server.metric("sessions_shed").unwrap_or(0);
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "{ATTACKERS} clients sent {} MiB and read nothing: {shed} shed, the server grew {grown_mib} MiB at most (budget 48)",
        sent >> 20
    );
    assert!(shed >= 1, "nothing shed");
    // Without the budget: 236 MiB (6 × 32 MiB of outbox, parked frames).
    assert!(grown_mib < 128, "grew {grown_mib} MiB");
    legitimate_echo(&server, "after").await;

    // A shed client resumes from its session's record, not a resync:
    // what the server had queued for it comes as a SKIP, never as DATA
    // again. (A kept one replays its outbox: DATA first.)
    let mut skipped = 0;
    for attacker in 1..=ATTACKERS {
        let session = SessionId([0x60 + attacker; 16]);
        let mut back = hello_with(&server, session, false, None).await;
        let welcome = next_frame(&mut back, WAIT).await.expect("a WELCOME");
        assert_eq!(welcome_of(&welcome).0, session, "resumed, not resynced");
        loop {
            let frame = next_frame(&mut back, WAIT).await.expect("a frame");
            match steadfast_core::codec::decode(&frame, u64::MAX) {
                Ok(Frame::Skip { first, last }) => {
                    assert!(first >= 1 && last >= first);
                    skipped += 1;
                    break;
                }
                Ok(Frame::Data { .. }) => break,
                _ => continue,
            }
        }
    }
    assert_eq!(skipped, shed, "every shed session, and only those, skips");
}

/// One address cannot fill the session table: past
/// `--max-sessions-per-address` its new sessions are refused 1013, while
/// its sessions resume and another address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_sessions() {
    let server = start(&["--max-sessions-per-address", "5"]).await;
    let mut held = Vec::new();
    for i in 1..=5u8 {
        let mut ws = hello_with(&server, SessionId([0x70 + i; 16]), true, Some([i; 16])).await;
        let welcome = next_frame(&mut ws, WAIT).await.expect("a WELCOME");
        assert_eq!(welcome_of(&welcome).0, SessionId([0x70 + i; 16]));
        held.push(ws);
    }
    let mut sixth = hello(&server, SessionId([0x7f; 16])).await;
    let (code, reason) = close_of(&mut sixth).await;
    assert_eq!(code, 1013, "{reason}");
    // One of the five comes back on a new connection: it is held, so it
    // resumes (superseding its old connection).
    let mut again = hello_with(&server, SessionId([0x71; 16]), false, Some([1; 16])).await;
    let welcome = next_frame(&mut again, WAIT).await.expect("a WELCOME");
    assert_eq!(welcome_of(&welcome), (SessionId([0x71; 16]), true));
    // Another address (127.0.0.2) is served.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.2:0".parse().expect("an address"))
        .expect("bind 127.0.0.2");
    let stream = socket.connect(server.addr()).await.expect("connect");
    let mut request = server.url.as_str().into_client_request().expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        SUBPROTOCOL.parse().expect("header value"),
    );
    let (mut other, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("the upgrade");
    let hello = Frame::Hello {
        secret: Some([9; 16]),
        new: true,
        session: SessionId([0x7e; 16]),
        delivered: 0,
        max_message_size: 1 << 24,
    };
    other
        .send(Message::Binary(hello.to_vec().into()))
        .await
        .expect("send HELLO");
    let bytes = loop {
        match tokio::time::timeout(WAIT, other.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => break bytes.to_vec(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no WELCOME: {other:?}"),
        }
    };
    assert_eq!(welcome_of(&bytes).0, SessionId([0x7e; 16]));
}

/// The warnings an operator sees by default name the node and the
/// connection (a trace id and the remote address): here the one for a
/// HELLO with a stolen session id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_s_warnings_name_it() {
    use std::io::{BufRead, BufReader};
    let args: Vec<String> = ["--sessions", "memory", "--node-id", "n7"]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    let (server, stderr) = tokio::task::spawn_blocking(move || {
        ServerProcess::start_logging(SERVER, "127.0.0.1:0", &args)
    })
    .await
    .expect("started");
    let warning = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("without its secret"))
    });
    let session = SessionId([0x51; 16]);
    let mut owner = hello_with(&server, session, true, Some([1; 16])).await;
    next_frame(&mut owner, WAIT).await.expect("a WELCOME");
    let mut thief = hello_with(&server, session, false, None).await;
    next_frame(&mut thief, WAIT).await.expect("a WELCOME");
    drop(server);
    let line = warning
        .join()
        .expect("the reader ran")
        .expect("the warning was logged");
    let plain: String = strip_ansi(&line);
    assert!(
        plain.contains("node{id=n7}") && plain.contains("conn{id=2 remote=127.0.0.1:"),
        "{plain}"
    );
}

/// `line` without terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// With `--admin-listen`, /metrics is served there and no longer on the
/// public port; /healthz answers on both; /debug/connections only there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_to_the_admin_listener() {
    let admin = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("its address")
    };
    let server = start(&["--admin-listen", &admin.to_string()]).await;
    let (status, _) = http_get(server.addr(), "/metrics").await;
    assert!(status.contains("426"), "public /metrics: {status}");
    let (status, body) = http_get(admin, "/metrics").await;
    assert!(status.contains("200"), "admin /metrics: {status}");
    assert!(body.contains("steadfast_sockets_open"), "{body}");
    for addr in [server.addr(), admin] {
        let (status, body) = http_get(addr, "/healthz").await;
        assert!(
            status.contains("200") && body == "ok\n",
            "{addr}: {status} {body:?}"
        );
    }
    let (status, _) = http_get(admin, "/anything").await;
    assert!(status.contains("404"), "{status}");

    // /debug/connections: each open connection, its counts and its last
    // frames' kinds; one by ?id=; never on the public port.
    let mut owner = hello_with(&server, SessionId([0x44; 16]), true, Some([4; 16])).await;
    next_frame(&mut owner, WAIT).await.expect("a WELCOME");
    owner.send(data(1, "seen")).await.expect("send");
    next_frame(&mut owner, WAIT).await.expect("its echo");
    let mut plain = raw(&server, false).await;
    plain
        .send(Message::Text("plain".into()))
        .await
        .expect("send");
    let _ = tokio::time::timeout(WAIT, plain.next()).await;
    let (status, body) = http_get(admin, "/debug/connections").await;
    assert!(status.contains("200"), "{status}");
    let all: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let connections = all["connections"].as_array().expect("a list");
    let reliable = connections
        .iter()
        .find(|c| c["mode"] == "reliable")
        .unwrap_or_else(|| panic!("no reliable connection in {body}"));
    assert_eq!(reliable["session"], "44444444…", "{reliable}");
    assert!(reliable["frames_in"].as_u64() >= Some(2), "{reliable}");
    let kinds: Vec<&str> = reliable["recent"]
        .as_array()
        .expect("recent frames")
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"DATA") && kinds.contains(&"WELCOME"),
        "{kinds:?}"
    );
    let plain_view = connections
        .iter()
        .find(|c| c["mode"] == "plain")
        .unwrap_or_else(|| panic!("no plain connection in {body}"));
    assert!(plain_view["bytes_in"].as_u64() >= Some(5), "{plain_view}");
    let id = reliable["id"].as_u64().expect("an id");
    let (status, one) = http_get(admin, &format!("/debug/connections?id={id}")).await;
    assert!(
        status.contains("200") && one.contains("\"reliable\""),
        "{status} {one}"
    );
    let (status, _) = http_get(admin, "/debug/connections?id=999999").await;
    assert!(status.contains("404"), "{status}");
    let (status, _) = http_get(server.addr(), "/debug/connections").await;
    assert!(status.contains("426"), "public: {status}");
}

/// A session whose client left holds at most
/// `--session-detached-outbox-bytes` of messages for it: room posts
/// beyond that are refused for it (the poster's count says so) until it
/// returns, and then it gets every one it was counted for, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_session_holds_a_bounded_outbox() {
    let server = start(&[
        "--handler",
        "rooms",
        "--session-detached-outbox-bytes",
        "20000",
    ])
    .await;
    let session = SessionId([0x55; 16]);
    let mut member = hello_with(&server, session, true, Some([5; 16])).await;
    next_frame(&mut member, WAIT).await.expect("a WELCOME");
    member
        .send(data(1, r#"{"type":"join","room":"r"}"#))
        .await
        .expect("join");
    // Its "joined" answer, then leave (detached).
    loop {
        let frame = next_frame(&mut member, WAIT).await.expect("the answer");
        if let Ok(Frame::Data { .. }) = steadfast_core::codec::decode(&frame, u64::MAX) {
            break;
        }
    }
    drop(member);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut poster = raw(&server, false).await;
    let mut ask = async |request: String| -> serde_json::Value {
        poster
            .send(Message::Text(request.into()))
            .await
            .expect("send");
        loop {
            match tokio::time::timeout(WAIT, poster.next()).await {
                Ok(Some(Ok(Message::Text(reply)))) => {
                    return serde_json::from_str(&reply).expect("JSON")
                }
                Ok(Some(Ok(_))) => continue,
                other => panic!("no reply: {other:?}"),
            }
        }
    };
    ask(r#"{"type":"join","room":"r"}"#.to_owned()).await;
    let filler = "x".repeat(1_000);
    let mut counted = Vec::new();
    for i in 0..40 {
        let post = format!(r#"{{"type":"room","room":"r","data":"{i} {filler}"}}"#);
        counted.push(ask(post).await["count"].as_u64().unwrap_or(0));
    }
    let taken = counted.iter().filter(|c| **c == 1).count();
    assert!(
        (10..30).contains(&taken) && counted[..taken].iter().all(|c| *c == 1),
        "the first ones taken, then none: {counted:?}"
    );

    // It returns: every post it was counted for, in order.
    let mut back = hello_with(&server, session, false, Some([5; 16])).await;
    let welcome = next_frame(&mut back, WAIT).await.expect("a WELCOME");
    assert_eq!(welcome_of(&welcome), (session, true));
    let posts: Vec<String> = data_until_quiet(&mut back)
        .await
        .iter()
        .map(|text| serde_json::from_str::<serde_json::Value>(text).expect("JSON"))
        .filter(|post| post["type"] == "message")
        .map(|post| post["data"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: Vec<String> = (0..taken).map(|i| format!("{i} {filler}")).collect();
    assert_eq!(posts.len(), taken);
    assert!(posts == expected, "the posts out of order");
}
