//! `steadfast proxy` as a user runs it: the built binary between clients
//! and servers on loopback — foreign ones (Python `websockets`, from the
//! venv `cargo xtask setup` makes in `target/pyenv`) and steadfast's own —
//! checked by what arrives at each end, the proxy's `--json` log, its
//! record and HAR file, and a replay of the record.
//!
//! Faults are seeded: `STEADFAST_SEED` overrides the seed, which every
//! failure message prints.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use steadfast::{Client, ClientEvent, Config, Payload, Reliability};
use steadfast_testkit::TestServer;

mod foreign;
use foreign::{free_port, python, seed, temp_dir, Foreign, PEERS};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Generous: a hung process fails the test instead of hanging CI.
const LIMIT: Duration = Duration::from_secs(90);

/// A running `steadfast proxy`, its stdout gathered as it goes.
struct Proxy {
    child: Child,
    port: u16,
    out: tokio::task::JoinHandle<Vec<String>>,
}

impl Proxy {
    async fn start(to: &str, args: &[&str]) -> Proxy {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .args(["proxy", "--listen", &listen, "--to", to])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the steadfast binary runs");
        let stdout = child.stdout.take().expect("piped");
        let out = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut all = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                all.push(line);
            }
            all
        });
        // Listening once a TCP connect succeeds.
        let deadline = tokio::time::Instant::now() + LIMIT;
        while tokio::net::TcpStream::connect(&listen).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the proxy listens in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Proxy { child, port, out }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Ctrl-C; its exit code and every line it printed.
    async fn stop(mut self) -> (i32, Vec<String>) {
        let pid = self.child.id().expect("running");
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("the proxy stops on Ctrl-C")
            .expect("its status");
        let lines = tokio::time::timeout(LIMIT, self.out)
            .await
            .expect("output ends")
            .expect("reader");
        (status.code().unwrap_or(-1), lines)
    }
}

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn foreign_peers_get_every_message_unchanged_and_the_log_matches() {
    let dir = temp_dir("foreign");
    let server = Foreign::start(dir.join("server.jsonl")).await;
    let proxy = Proxy::start(&server.url(), &["--json", "--preview", "64"]).await;
    let client = Command::new(python())
        .arg(PEERS)
        .args(["client", &proxy.url(), "60", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let client = tokio::time::timeout(LIMIT, client)
        .await
        .expect("the client finishes in time")
        .expect("python runs");
    let report: Value = serde_json::from_slice(&client.stdout).unwrap_or_else(|e| {
        panic!(
            "client report ({e}): {}{}",
            String::from_utf8_lossy(&client.stdout),
            String::from_utf8_lossy(&client.stderr)
        )
    });
    assert_eq!(report["bad"], 0, "every echo came back identical");
    assert!(client.status.success());
    let sent = report["sent"].as_array().expect("sent").clone();
    assert_eq!(sent.len(), 60);

    let (code, lines) = proxy.stop().await;
    assert_eq!(code, 0);
    let events = json_lines(&lines);
    // The log shows each message as it was sent, in order, both ways.
    for from in ["client", "server"] {
        let shown: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "message" && e["from"] == from)
            .filter(|e| e["opcode"] == "text" || e["opcode"] == "binary")
            .collect();
        assert_eq!(shown.len(), sent.len(), "every message from the {from}");
        for (shown, sent) in shown.iter().zip(&sent) {
            assert_eq!(shown["opcode"], sent[0]);
            assert_eq!(shown["size"], sent[1]);
            let size = sent[1].as_u64().expect("size");
            assert_eq!(shown["truncated"].as_bool().unwrap_or(false), size > 64);
            let preview = shown["text"]
                .as_str()
                .or(shown["base64"].as_str())
                .expect("a preview");
            assert!(preview.len() <= 100, "a preview, not the message");
        }
    }
    let summary = events.last().expect("a summary");
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["connections"], 1);
    // What the server received is what the client sent.
    let received = server.received();
    assert_eq!(received.len(), 1, "one connection");
    assert_eq!(received[&1].len(), 60);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Send `count` numbered messages through `url` with a reliable client;
/// return the echoes in the order they arrived.
async fn reliable_echoes(url: &str, count: usize, big_every: usize) -> Vec<String> {
    let mut config = Config::default();
    config.limits.gap_timeout_ms = 300;
    config.limits.handshake_timeout_ms = 1_000;
    config.backoff.initial_ms = 20;
    config.backoff.max_ms = 200;
    config.chunk_size = 4096;
    let client = Client::builder(url)
        .config(config)
        .reliability(Reliability::Required)
        .seed(1)
        .connect()
        .await
        .expect("client starts");
    for text in reliable_sent(count, big_every) {
        drop(client.send(text).await.expect("queued"));
    }
    let mut echoes = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while echoes.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {count} echoes in time",
            echoes.len()
        );
        // A message the proxy dropped inside a live connection (which TCP
        // never does) is sent again only on the next connection; when it
        // was the last one, nothing shows the gap. Replace a connection
        // stalled for 2 s, as an app's own timeout would.
        let Ok(event) = tokio::time::timeout(Duration::from_secs(2), client.next_event()).await
        else {
            client.reconnect();
            continue;
        };
        if let ClientEvent::Message(Payload::Text(text)) = event.expect("client runs") {
            echoes.push(text);
        }
    }
    // Anything late would be a duplicate.
    let extra = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match client.next_event().await {
                Some(ClientEvent::Message(payload)) => return Some(payload),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await;
    assert!(!matches!(extra, Ok(Some(_))), "a duplicate echo: {extra:?}");
    let _ = client.close(1000, "").await;
    echoes
}

fn ids(echoes: &[String]) -> Vec<String> {
    echoes
        .iter()
        .map(|e| e.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_steadfast_client_keeps_exactly_once_through_every_fault() {
    let seed = seed(11);
    let server = TestServer::start().await.expect("bind");
    let seed_text = seed.to_string();
    let proxy = Proxy::start(
        &server.url(),
        &[
            "--json",
            "--seed",
            &seed_text,
            "--drop",
            "0.03",
            "--duplicate",
            "0.03",
            "--reorder",
            "0.03",
            "--jitter",
            "5",
            "--cut-bytes",
            "40000",
        ],
    )
    .await;
    let echoes = reliable_echoes(&proxy.url(), 400, 50).await;
    let expected: Vec<String> = (0..400).map(|i| format!("m{i:04}")).collect();
    assert_eq!(
        ids(&echoes),
        expected,
        "seed {seed}: exactly once, in order"
    );
    let (code, lines) = proxy.stop().await;
    assert_eq!(code, 0);
    let events = json_lines(&lines);
    for fault in ["drop", "duplicate", "reorder", "cut"] {
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "fault" && e["fault"] == fault),
            "seed {seed}: the log shows a {fault}"
        );
    }
    let faults: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "fault")
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        faults.iter().any(|d| d.starts_with("DATA seq ")),
        "seed {seed}: faults name the frame they hit: {faults:?}"
    );
    assert!(
        !faults
            .iter()
            .any(|d| d.starts_with("HELLO") || d.starts_with("WELCOME")),
        "seed {seed}: the handshake is never dropped, duplicated or reordered: {faults:?}"
    );
    let resumed = events
        .iter()
        .filter(|e| e["frame"]["type"] == "WELCOME" && e["frame"]["resumed"] == true)
        .count();
    assert!(resumed >= 1, "seed {seed}: the log shows resumes");
    let chunks = events
        .iter()
        .filter(|e| {
            e["frame"]["chunk"]["count"]
                .as_u64()
                .is_some_and(|n| n >= 2)
        })
        .count();
    assert!(chunks > 0, "chunked DATA frames are decoded");
}

#[tokio::test]
async fn record_then_replay_reproduces_each_connection_and_the_har_holds_it_all() {
    let dir = temp_dir("record");
    let record = dir.join("traffic.jsonl");
    let har = dir.join("traffic.har");
    let server = TestServer::start().await.expect("bind");
    let record_arg = record.display().to_string();
    let har_arg = har.display().to_string();
    // Connections are cut after 40 messages: the reliable client resumes
    // (sending again what was not acknowledged) several times.
    let proxy = Proxy::start(
        &server.url(),
        &[
            "--quiet",
            "--record",
            &record_arg,
            "--har",
            &har_arg,
            "--cut-after",
            "40",
            "--fault-conn",
            "1",
            "--fault-conn",
            "2",
        ],
    )
    .await;
    let reliable = reliable_echoes(&proxy.url(), 60, 20).await;
    assert_eq!(reliable.len(), 60);
    // A plain client after it.
    let plain = Client::builder(proxy.url())
        .reliability(Reliability::Off)
        .connect()
        .await
        .expect("starts");
    let plain_sent: Vec<String> = (0..10).map(|i| format!("plain {i}")).collect();
    for text in &plain_sent {
        drop(plain.send(text.clone()).await.expect("queued"));
    }
    let mut got = 0;
    while got < plain_sent.len() {
        match tokio::time::timeout(LIMIT, plain.next_event()).await {
            Ok(Some(ClientEvent::Message(_))) => got += 1,
            Ok(Some(_)) => {}
            other => panic!("plain echoes: {other:?}"),
        }
    }
    let _ = plain.close(1000, "").await;
    let (code, _) = proxy.stop().await;
    assert_eq!(code, 0, "stopped cleanly");

    let lines: Vec<Value> = std::fs::read_to_string(&record)
        .expect("the record")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let opens = lines.iter().filter(|l| l["event"] == "open").count();
    assert!(
        opens >= 3,
        "resumes and the plain client: {opens} connections"
    );
    assert!(lines
        .iter()
        .any(|l| l["event"] == "fault" && l["fault"] == "cut"));
    let messages = lines.iter().filter(|l| l["dir"].is_string()).count();
    // HELLO's resume secret is zeroed in the record (the flag byte says
    // whether one was sent; its 16 bytes end the frame).
    let hellos: Vec<&str> = lines
        .iter()
        .filter(|l| l["dir"] == "out")
        .filter_map(|l| l["hex"].as_str())
        .filter(|h| h.starts_with("01"))
        .collect();
    assert!(!hellos.is_empty(), "HELLOs are recorded");
    for hello in hellos {
        assert!(
            hello.ends_with(&"0".repeat(32)),
            "a secret in the record: {hello}"
        );
    }

    // The HAR parses and holds every message of every connection.
    let har: Value =
        serde_json::from_str(&std::fs::read_to_string(&har).expect("the HAR")).expect("JSON");
    let entries = har["log"]["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), opens);
    let in_har: usize = entries
        .iter()
        .map(|e| e["_webSocketMessages"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(in_har, messages);
    assert!(entries.iter().all(|e| e["_resourceType"] == "websocket"
        && e["response"]["status"] == 101
        && e["request"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("ws://"))));

    // Replay against a foreign server: one connection per recorded stream
    // (the reliable session's resumes are one stream), each with the
    // application's messages once, in order.
    let foreign = Foreign::start(dir.join("replayed.jsonl")).await;
    let out = tokio::time::timeout(
        LIMIT,
        Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .args([
                "replay",
                &record_arg,
                &foreign.url(),
                "--speed",
                "20",
                "-w",
                "0.5",
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("replay finishes in time")
    .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed = foreign.received();
    let mut streams: Vec<Vec<String>> = replayed
        .values()
        .map(|messages| messages.iter().map(|(_, data)| data.clone()).collect())
        .collect();
    streams.sort_by_key(Vec::len);
    let expected_reliable: Vec<String> = reliable_sent(60, 20);
    assert_eq!(streams.len(), 2, "two streams");
    assert_eq!(streams[0], plain_sent);
    assert_eq!(streams[1], expected_reliable);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What `reliable_echoes(_, count, big_every)` sends.
fn reliable_sent(count: usize, big_every: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            if big_every > 0 && i % big_every == big_every - 1 {
                format!("m{i:04} {}", "x".repeat(20_000))
            } else {
                format!("m{i:04}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_wss_upstream_filters_refusals_and_redacted_credentials() {
    use steadfast_server::{ClientAuth, ServerConfig, TlsConfig};
    use steadfast_testkit::pki::{Identity, TestCa};
    let dir = temp_dir("wss");
    let ca = TestCa::new("steadfast proxy test CA");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("write");
    let Identity { cert_pem, key_pem } = ca.server();
    let mut config = ServerConfig::default();
    config.tls = Some(
        TlsConfig::from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), ClientAuth::None)
            .expect("usable"),
    );
    let server = TestServer::start_with(config, steadfast_testkit::Recorder::default())
        .await
        .expect("bind");
    assert!(server.url().starts_with("wss://"));
    let ca_arg = ca_file.display().to_string();
    // Shown: only text DATA frames from the server that match the regex.
    let proxy = Proxy::start(
        &server.url(),
        &[
            "--ca", &ca_arg, "--json", "--from", "server", "--type", "data", "--match", "^keep",
        ],
    )
    .await;
    let client = Client::builder(format!("{}/chat?token=s3cret", proxy.url()))
        .header("Authorization", "Bearer s3cret")
        .reliability(Reliability::Required)
        .connect()
        .await
        .expect("starts");
    for text in ["keep 1", "drop 2", "keep 3"] {
        drop(client.send(text).await.expect("queued"));
    }
    let mut echoes = Vec::new();
    while echoes.len() < 3 {
        match tokio::time::timeout(LIMIT, client.next_event()).await {
            Ok(Some(ClientEvent::Message(Payload::Text(text)))) => echoes.push(text),
            Ok(Some(_)) => {}
            other => panic!("echoes over wss through the proxy: {other:?}"),
        }
    }
    assert_eq!(echoes, ["keep 1", "drop 2", "keep 3"]);
    let _ = client.close(1000, "").await;
    let (code, lines) = proxy.stop().await;
    assert_eq!(code, 0);
    let all = lines.join("\n");
    assert!(!all.contains("s3cret"), "credentials are redacted: {all}");
    let shown: Vec<Value> = json_lines(&lines)
        .into_iter()
        .filter(|e| e["event"] == "message")
        .collect();
    let texts: Vec<&str> = shown.iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(texts, ["keep 1", "keep 3"], "{shown:?}");
    assert!(shown
        .iter()
        .all(|e| e["from"] == "server" && e["frame"]["type"] == "DATA"));

    // Without the CA the upstream handshake fails: the client gets 502.
    let proxy = Proxy::start(&server.url(), &["--json"]).await;
    let refused = tokio_tungstenite::connect_async(proxy.url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 502);
        }
        other => panic!("expected HTTP 502, got {other:?}"),
    }
    let (_, lines) = proxy.stop().await;
    let events = json_lines(&lines);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "refused" && e["status"] == 502),
        "{lines:?}"
    );
    let summary = events.last().expect("a summary");
    assert_eq!(
        summary["refused"], 2,
        "the start-up probe and the 502: {summary}"
    );

    // --refuse 1: every connection gets 503, and the log says it was a fault.
    let proxy = Proxy::start(&server.url(), &["--ca", &ca_arg, "--json", "--refuse", "1"]).await;
    match tokio_tungstenite::connect_async(proxy.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    let (_, lines) = proxy.stop().await;
    assert!(json_lines(&lines)
        .iter()
        .any(|e| e["event"] == "fault" && e["fault"] == "refuse"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_options_are_usage_errors_with_a_code() {
    for args in [
        &["--to", "http://127.0.0.1:1"][..],
        &["--to", "ws://127.0.0.1:1", "--drop", "1.5"],
        &["--to", "ws://127.0.0.1:1", "--match", "("],
        &["--to", "ws://127.0.0.1:1", "--type", "nonsense"],
        &["--to", "ws://127.0.0.1:1", "--throttle", "0"],
        &["--to", "ws://127.0.0.1:1", "--drop", "-0.1"],
        &["--to", "ws://127.0.0.1:1", "--cut-after", "0"],
        &[
            "--to",
            "ws://127.0.0.1:1",
            "--min-size",
            "10",
            "--max-size",
            "5",
        ],
    ] {
        let out = tokio::time::timeout(
            LIMIT,
            Command::new(env!("CARGO_BIN_EXE_steadfast"))
                .arg("proxy")
                .args(args)
                .args(["--listen", "127.0.0.1:0"])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("exits")
        .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("ERR_INVALID_OPTION"), "{args:?}: {stderr}");
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_server_that_never_reads_does_not_grow_the_proxy() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    // A server that completes the handshake and then never reads.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = format!("ws://{}", listener.local_addr().expect("addr"));
    let stalled = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                held.push(ws);
            }
        }
    });
    let proxy = Proxy::start(&upstream, &["--json", "--max-message-size", "2000000"]).await;
    let pid = proxy.child.id().expect("running");
    let before = rss_kib(pid);
    let (mut ws, _) = tokio_tungstenite::connect_async(proxy.url())
        .await
        .expect("through the proxy");
    // Up to 256 MiB, 1 MiB at a time, for 10 s at most: sends stall once
    // the proxy's queue and the sockets' buffers are full.
    let payload = vec![7u8; 1 << 20];
    let mut sent = 0;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while sent < 256 {
            if ws.send(Message::binary(payload.clone())).await.is_err() {
                break;
            }
            sent += 1;
        }
    })
    .await;
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(sent < 256, "the sends stalled ({sent} MiB went)");
    assert!(
        grown < 64 * 1024,
        "the proxy grew by {grown} KiB while {sent} MiB were pushed at it"
    );
    // A message above --max-message-size ends that connection, and says so
    // (connection 3: 1 was the start-up probe, 2 the stalled one).
    let (mut big, _) = tokio_tungstenite::connect_async(proxy.url())
        .await
        .expect("through the proxy");
    let _ = big.send(Message::binary(vec![1u8; 3_000_000])).await;
    // The proxy drops the connection: the client sees it end.
    let ended = tokio::time::timeout(LIMIT, async {
        use futures::StreamExt;
        while let Some(Ok(_)) = big.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the oversized connection ends");
    drop(ws);
    let (_, lines) = proxy.stop().await;
    stalled.abort();
    let events = json_lines(&lines);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "fault" && e["fault"] == "too-big" && e["conn"] == 3),
        "the log says why connection 3 ended"
    );
    assert!(events
        .iter()
        .any(|e| e["event"] == "end" && e["conn"] == 3 && e["how"] == "too-big"));
}

#[tokio::test]
async fn delay_throttle_and_a_refusal_window_after_a_cut() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start().await.expect("bind");
    // --delay 300 on messages from the client: a round trip takes at least that.
    let proxy = Proxy::start(
        &server.url(),
        &["--quiet", "--delay", "300", "--fault-on", "client"],
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(proxy.url())
        .await
        .expect("connects");
    let start = std::time::Instant::now();
    ws.send(Message::text("slow")).await.expect("send");
    let reply = tokio::time::timeout(LIMIT, ws.next())
        .await
        .expect("in time");
    assert!(
        matches!(reply, Some(Ok(Message::Text(ref t))) if t.as_str() == "slow"),
        "{reply:?}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    drop(ws);
    let _ = proxy.stop().await;

    // --throttle 100000 bytes/s each way: 300 KB take at least 2 s to go
    // and come back (the last 100 KB-message waits out its own share).
    let proxy = Proxy::start(&server.url(), &["--quiet", "--throttle", "100000"]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(proxy.url())
        .await
        .expect("connects");
    let start = std::time::Instant::now();
    for _ in 0..3 {
        ws.send(Message::binary(vec![0u8; 100_000]))
            .await
            .expect("send");
    }
    for _ in 0..3 {
        let reply = tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("in time");
        assert!(matches!(reply, Some(Ok(Message::Binary(ref b))) if b.len() == 100_000));
    }
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    drop(ws);
    let _ = proxy.stop().await;

    // --cut-after 2 --refuse-for 30: the third message cuts the connection,
    // and the next connection is refused with 503.
    let proxy = Proxy::start(
        &server.url(),
        &["--json", "--cut-after", "2", "--refuse-for", "30"],
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(proxy.url())
        .await
        .expect("connects");
    ws.send(Message::text("one")).await.expect("send");
    let _ = tokio::time::timeout(LIMIT, ws.next())
        .await
        .expect("the echo");
    // The echo was the second message; the third cuts.
    let _ = ws.send(Message::text("three")).await;
    let end = tokio::time::timeout(LIMIT, ws.next())
        .await
        .expect("in time");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_)))),
        "no echo after the cut: {end:?}"
    );
    match tokio_tungstenite::connect_async(proxy.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
        }
        other => panic!("expected 503 in the refusal window, got {other:?}"),
    }
    let (_, lines) = proxy.stop().await;
    let events = json_lines(&lines);
    assert!(events.iter().any(|e| e["fault"] == "cut"));
    assert!(events.iter().any(|e| e["fault"] == "refuse"));
}
