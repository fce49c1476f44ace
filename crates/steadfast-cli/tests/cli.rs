//! `steadfast connect` and `steadfast replay` as a user runs them: the
//! built binary against servers on loopback, checked by its output, what
//! the server saw, and its exit code.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use steadfast_server::{ClientAuth, Payload, ServerConfig, TlsConfig};
use steadfast_testkit::pki::{Identity, TestCa};
use steadfast_testkit::{Recorder, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Generous: a hung CLI fails the test instead of hanging CI.
const LIMIT: Duration = Duration::from_secs(60);

/// The CLI's documented exit codes.
const CONNECT: i32 = 3;
const TLS: i32 = 4;
const CLOSED: i32 = 5;
const AUTH: i32 = 6;
const USAGE: i32 = 2;

fn steadfast() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_steadfast"));
    command
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(command: &mut Command) -> Run {
    let child = command.spawn().expect("the steadfast binary runs");
    finish(child).await
}

async fn finish(child: Child) -> Run {
    let output = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .expect("steadfast exits in time")
        .expect("its output");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn texts(recorder: &Recorder) -> Vec<String> {
    recorder
        .payloads()
        .into_iter()
        .map(|p| match p {
            Payload::Text(text) => text,
            Payload::Binary(bytes) => format!("binary:{}", bytes.len()),
        })
        .collect()
}

async fn recording_server() -> (TestServer, Recorder) {
    let recorder = Recorder::default();
    let server = TestServer::start_with(ServerConfig::default(), recorder.clone())
        .await
        .expect("bind loopback");
    (server, recorder)
}

/// A port nothing listens on.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn piped_lines_are_sent_in_order_acknowledged_and_the_replies_printed() {
    let (server, recorder) = recording_server().await;
    let mut child = steadfast()
        .args(["connect", &server.url()])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(b"one\ntwo\nthree\n")
        .await
        .expect("write stdin");
    drop(stdin); // EOF: wait for the ACKs, then --wait (1 s) for replies
    let out = finish(child).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(texts(&recorder), ["one", "two", "three"]);
    let received: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("< ")).collect();
    assert_eq!(received, ["< one", "< two", "< three"], "{}", out.stdout);
    let sent: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("> ")).collect();
    assert_eq!(sent, ["> one", "> two", "> three"]);
    assert!(
        out.stderr.contains("connected (reliable)"),
        "{}",
        out.stderr
    );
}

/// More lines than the outbox holds (10,000) and than the client keeps
/// unread (1,024): `send` waits for room while the echoes pile up, so the
/// CLI must go on reading them (and the ACKs behind them) meanwhile.
#[tokio::test]
async fn a_flood_of_piped_lines_larger_than_the_outbox_is_all_echoed() {
    let (server, recorder) = recording_server().await;
    let mut child = steadfast()
        .args(["connect", &server.url(), "-q", "--wait", "0.2"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let count = 30_000;
    let input: String = (1..=count).map(|n| format!("line {n}\n")).collect();
    let writer = tokio::spawn(async move {
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("write stdin");
        // EOF on drop.
    });
    let out = finish(child).await;
    writer.await.expect("the writer ends");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let expected: Vec<String> = (1..=count).map(|n| format!("line {n}")).collect();
    assert_eq!(
        texts(&recorder),
        expected,
        "the server got each line once, in order"
    );
    let received: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(received.len(), count, "every echo printed once");
    assert!(
        received
            .iter()
            .zip(&expected)
            .all(|(got, want)| got == want),
        "the echoes in order"
    );
}

#[tokio::test]
async fn a_server_close_mid_session_is_survived_and_later_lines_still_arrive() {
    let server = TestServer::start().await.expect("bind loopback");
    let mut child = steadfast()
        .args(["connect", &server.url(), "--wait", "0.5"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut next_received = async || loop {
        let line = tokio::time::timeout(LIMIT, stdout.next_line())
            .await
            .expect("a line in time")
            .expect("readable")
            .expect("stdout open");
        if let Some(text) = line.strip_prefix("< ") {
            return text.to_owned();
        }
    };
    stdin.write_all(b"before\n").await.expect("write");
    assert_eq!(next_received().await, "before");
    // The echo server closes the connection with 1011 on this command.
    stdin
        .write_all(b"steadfast-echo:close:1011:restarting\n")
        .await
        .expect("write");
    stdin.write_all(b"after\n").await.expect("write");
    assert_eq!(next_received().await, "after");
    drop(stdin);
    let out = finish(child).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("closed 1011: restarting"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("reconnected"), "{}", out.stderr);
}

#[tokio::test]
async fn headers_origin_and_subprotocols_reach_the_server() {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        // The callback's signature is tungstenite's; its error type is large.
        #[allow(clippy::result_large_err)]
        let callback = move |request: &Request, mut response: Response| {
            let mut seen = record.lock().expect("not poisoned");
            for (name, value) in request.headers() {
                seen.push((
                    name.as_str().to_owned(),
                    value.to_str().unwrap_or_default().to_owned(),
                ));
            }
            response.headers_mut().insert(
                "sec-websocket-protocol",
                "chat.v2".parse().expect("a valid header value"),
            );
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback)
            .await
            .expect("handshake");
        use futures::{SinkExt, StreamExt};
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    let out = run(steadfast().args([
        "connect",
        &format!("ws://{addr}"),
        "-H",
        "X-Trace: abc 123",
        "--header",
        "Authorization: Bearer t0k3n",
        "-p",
        "chat.v2",
        "--subprotocol",
        "chat.v1",
        "--origin",
        "http://app.test",
        "-x",
        "hi",
        "-w",
        "0.5",
    ]))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("< hi"), "{}", out.stdout);
    assert!(out.stderr.contains("connected (plain)"), "{}", out.stderr);
    let seen = seen.lock().expect("not poisoned").clone();
    let header = |name: &str| {
        seen.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(header("x-trace"), "abc 123");
    assert_eq!(header("authorization"), "Bearer t0k3n");
    assert_eq!(header("origin"), "http://app.test");
    assert_eq!(
        header("sec-websocket-protocol"),
        "steadfast.v1, chat.v2, chat.v1"
    );
}

#[tokio::test]
async fn pretty_prints_json_messages_and_leaves_other_text_alone() {
    let server = TestServer::start().await.expect("bind loopback");
    let out = run(steadfast().args([
        "connect",
        &server.url(),
        "--pretty",
        "-x",
        r#"{"user":"ada","tags":["a",1,true,null]}"#,
        "-x",
        "not json",
        "-w",
        "0.5",
    ]))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let expected =
        "< {\n  \"tags\": [\n    \"a\",\n    1,\n    true,\n    null\n  ],\n  \"user\": \"ada\"\n}";
    assert!(out.stdout.contains(expected), "{}", out.stdout);
    assert!(out.stdout.contains("< not json"), "{}", out.stdout);
    // Not a terminal: no colour codes.
    assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
}

#[tokio::test]
async fn json_prints_one_object_per_event_for_scripts() {
    let server = TestServer::start().await.expect("bind loopback");
    let out = run(steadfast().args([
        "connect",
        &server.url(),
        "--json",
        "-x",
        "ping",
        "-w",
        "0.5",
    ]))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for kind in ["sent", "state", "message", "ack", "exit"] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    let message = events
        .iter()
        .find(|e| e["event"] == "message")
        .expect("a message event");
    assert_eq!(message["dir"], "in");
    assert_eq!(message["data"], "ping");
    let ack = events.iter().find(|e| e["event"] == "ack").expect("an ack");
    assert_eq!(ack["delivery"], "acked");
    assert_eq!(ack["id"], 1);
    assert_eq!(events.last().expect("events")["event"], "exit");
    assert_eq!(events.last().expect("events")["code"], 0);
    assert!(events.iter().all(|e| e["t_ms"].is_u64()));
}

#[tokio::test]
async fn quiet_prints_only_what_arrives() {
    let server = TestServer::start().await.expect("bind loopback");
    let out = run(steadfast().args([
        "connect",
        &server.url(),
        "-q",
        "-x",
        "a",
        "-x",
        "b",
        "-w",
        "0.5",
    ]))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "a\nb\n");
    assert_eq!(out.stderr, "");
}

#[tokio::test]
async fn execute_sends_and_waits_for_replies_then_exits() {
    let (server, recorder) = recording_server().await;
    let started = std::time::Instant::now();
    let out = run(steadfast().args([
        "connect",
        &server.url(),
        "-x",
        "first",
        "-x",
        "second",
        "-w",
        "1",
    ]))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited --wait for replies"
    );
    assert_eq!(texts(&recorder), ["first", "second"]);
    assert!(out.stdout.contains("< first\n< second"), "{}", out.stdout);
}

#[tokio::test]
async fn a_binary_file_is_sent_as_one_message_chunked_and_intact() {
    let (server, recorder) = recording_server().await;
    let dir = std::env::temp_dir().join(format!("steadfast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("blob.bin");
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &blob).expect("write the file");
    let out = run(steadfast().args([
        "connect",
        &server.url(),
        "--binary",
        &format!("@{}", path.display()),
        "-q",
        "-w",
        "0",
    ]))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = recorder.payloads();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0], Payload::Binary(blob), "the file arrived intact");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tls_with_a_test_ca_and_mutual_tls() {
    let ca = TestCa::new("steadfast cli test CA");
    let dir = std::env::temp_dir().join(format!("steadfast-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("write");
    let Identity { cert_pem, key_pem } = ca.client("cli");
    let (cert_file, key_file) = (dir.join("client.pem"), dir.join("client.key"));
    std::fs::write(&cert_file, cert_pem).expect("write");
    std::fs::write(&key_file, key_pem).expect("write");

    let tls_server = |client_auth| {
        let Identity { cert_pem, key_pem } = ca.server();
        let mut config = ServerConfig::default();
        config.tls = Some(
            TlsConfig::from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), client_auth)
                .expect("the test CA's certificate is usable"),
        );
        TestServer::start_with(config, Recorder::default())
    };
    let ca_arg = ca_file.display().to_string();

    // wss:// trusting the test CA.
    let server = tls_server(ClientAuth::None).await.expect("bind");
    let url = server.url();
    assert!(url.starts_with("wss://"), "{url}");
    let out = run(steadfast().args([
        "connect", &url, "--ca", &ca_arg, "-x", "over tls", "-w", "0.3",
    ]))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("< over tls"), "{}", out.stdout);

    // Without the CA: a TLS failure, exit 4.
    let out = run(steadfast().args(["connect", &url, "-x", "x"])).await;
    assert_eq!(out.code, TLS, "{}", out.stderr);
    assert!(out.stderr.contains("ERR_TLS"), "{}", out.stderr);

    // --insecure connects, and says what it costs.
    let out = run(steadfast().args(["connect", &url, "--insecure", "-x", "x", "-w", "0.3"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("warning: --insecure"), "{}", out.stderr);

    // mTLS: the server requires a client certificate from the CA.
    let ca_pem = ca.cert_pem();
    let mtls = tls_server(ClientAuth::Required(ca_pem.into_bytes()))
        .await
        .expect("bind");
    let url = mtls.url();
    let (cert_arg, key_arg) = (
        cert_file.display().to_string(),
        key_file.display().to_string(),
    );
    let out = run(steadfast().args([
        "connect", &url, "--ca", &ca_arg, "--cert", &cert_arg, "--key", &key_arg, "-x", "mutual",
        "-w", "0.3",
    ]))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("< mutual"), "{}", out.stdout);
    let out = run(steadfast().args(["connect", &url, "--ca", &ca_arg, "-x", "x"])).await;
    assert_eq!(out.code, TLS, "no client certificate: {}", out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn each_exit_code_means_what_the_help_says() {
    // 3: nothing listens.
    let out = run(steadfast().args([
        "connect",
        &format!("ws://127.0.0.1:{}", free_port()),
        "-x",
        "x",
    ]))
    .await;
    assert_eq!(out.code, CONNECT, "{}", out.stderr);
    assert!(out.stderr.contains("ERR_CONNECT"), "{}", out.stderr);

    // 5: the server closes with 1011 and --no-reconnect; the code is printed.
    let server = TestServer::start().await.expect("bind loopback");
    let out = run(steadfast().args([
        "connect",
        &server.url(),
        "--no-reconnect",
        "-x",
        "steadfast-echo:close:1011:maintenance",
        "-w",
        "5",
    ]))
    .await;
    assert_eq!(out.code, CLOSED, "{}", out.stderr);
    assert!(
        out.stderr.contains("closed 1011: maintenance"),
        "{}",
        out.stderr
    );

    // 6: the server closes with 4001 (credentials refused): no retry loop.
    let out = run(steadfast().args([
        "connect",
        &server.url(),
        "-x",
        "steadfast-echo:close:4001:token expired",
        "-w",
        "5",
    ]))
    .await;
    assert_eq!(out.code, AUTH, "{}", out.stderr);
    assert!(out.stderr.contains("4001"), "{}", out.stderr);

    // 6: HTTP 401 instead of the upgrade.
    let addr = steadfast_testkit::http_error_server("401 Unauthorized").await;
    let out = run(steadfast().args(["connect", &format!("ws://{addr}"), "-x", "x"])).await;
    assert_eq!(out.code, AUTH, "{}", out.stderr);
    assert!(
        out.stderr.contains("ERR_HANDSHAKE_REJECTED"),
        "{}",
        out.stderr
    );

    // 2: usage errors, from clap and from our own checks.
    for args in [
        vec!["connect"],
        vec!["connect", "ws://127.0.0.1:1", "--reliable", "sometimes"],
        vec!["connect", "ws://127.0.0.1:1", "-H", "no colon"],
        vec!["connect", "ws://127.0.0.1:1", "--wait", "-1"],
        vec!["connect", "ws://127.0.0.1:1", "--cert", "c.pem"],
        vec!["connect", "http://127.0.0.1:1", "-x", "x"],
        vec![
            "connect",
            "ws://127.0.0.1:1",
            "--binary",
            "@/nonexistent/file",
        ],
    ] {
        let out = run(steadfast().args(&args)).await;
        assert_eq!(out.code, USAGE, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
}

#[tokio::test]
async fn record_then_replay_sends_the_same_messages_in_order() {
    let (server, recorder) = recording_server().await;
    let dir = std::env::temp_dir().join(format!("steadfast-cli-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("session.jsonl");
    let file_arg = file.display().to_string();
    let mut child = steadfast()
        .args(["connect", &server.url(), "--record", &file_arg, "-w", "0.5"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("piped stdin");
    for line in ["alpha", "beta", "gamma"] {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stdin);
    let out = finish(child).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let recorded = std::fs::read_to_string(&file).expect("the recording");
    let lines: Vec<Value> = recorded
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let outgoing: Vec<&str> = lines
        .iter()
        .filter(|l| l["dir"] == "out")
        .filter_map(|l| l["data"].as_str())
        .collect();
    assert_eq!(outgoing, ["alpha", "beta", "gamma"]);
    assert!(
        lines
            .iter()
            .any(|l| l["dir"] == "in" && l["data"] == "alpha"),
        "replies are recorded too"
    );
    let times: Vec<u64> = lines
        .iter()
        .filter(|l| l["dir"] == "out")
        .filter_map(|l| l["t_ms"].as_u64())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Replay against a fresh server: the same messages, in order, once.
    let (replay_server, replayed) = recording_server().await;
    let out = run(steadfast().args([
        "replay",
        &file_arg,
        &replay_server.url(),
        "--speed",
        "4",
        "-w",
        "0.3",
    ]))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(texts(&replayed), ["alpha", "beta", "gamma"]);
    assert_eq!(texts(&recorder), ["alpha", "beta", "gamma"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn help_documents_exit_codes_and_examples() {
    for command in [
        vec!["--help"],
        vec!["connect", "--help"],
        vec!["replay", "--help"],
    ] {
        let out = run(steadfast().args(&command)).await;
        assert_eq!(out.code, 0, "{command:?}");
        assert!(
            out.stdout.contains("Examples:"),
            "{command:?}: {}",
            out.stdout
        );
    }
    let out = run(steadfast().args(["connect", "--help"])).await;
    for line in [
        "3    could not connect",
        "4    TLS failure",
        "5    closed by the server",
        "6    credentials refused",
    ] {
        assert!(out.stdout.contains(line), "{line}");
    }
}

#[tokio::test]
async fn ctrl_c_exits_at_once_with_130() {
    let server = TestServer::start().await.expect("bind loopback");
    let mut child = steadfast()
        .args(["connect", &server.url()])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdin = child.stdin.take().expect("piped stdin"); // kept open: no EOF
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    loop {
        let line = tokio::time::timeout(LIMIT, stderr.next_line())
            .await
            .expect("a line in time")
            .expect("readable")
            .expect("the CLI says it connected");
        if line.contains("connected") {
            break;
        }
    }
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .expect("it exits at once")
        .expect("its status");
    assert_eq!(status.code(), Some(130));
    drop(stdin);
}

#[tokio::test]
async fn bench_measures_reliable_and_plain_echo_on_loopback() {
    let out =
        run(steadfast().args(["bench", "--messages", "300", "--runs", "1", "--size", "64"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for mode in ["reliable", "plain"] {
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with(mode))
            .unwrap_or_else(|| panic!("no {mode} row in {}", out.stdout));
        let rate: f64 = row
            .split_whitespace()
            .nth(2)
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no rate in {row:?}"));
        assert!(rate > 0.0, "{row}");
    }
}
