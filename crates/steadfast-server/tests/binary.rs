//! The `steadfast-server` binary: prints its address, echoes, and shuts down
//! cleanly on SIGTERM, SIGINT and (when asked) end of standard input.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Generous bound: a hung server fails the test instead of hanging CI.
const LIMIT: Duration = Duration::from_secs(20);

struct Running {
    child: Child,
    url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_steadfast-server"))
        .args(["--listen", "127.0.0.1:0"])
        // Sessions in memory unless the test chooses: no data dir left behind.
        .args(if extra.contains(&"--sessions") {
            &[][..]
        } else {
            &["--sessions", "memory"][..]
        })
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn steadfast-server");
    let stdout = child.stdout.as_mut().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the address line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    assert!(!url.ends_with(":0"), "the real port is printed: {url}");
    Running { child, url }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Wait for exit within LIMIT; return the status and the rest of stdout.
fn wait_exit(running: &mut Running) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = running.child.try_wait().expect("try_wait") {
            let mut rest = String::new();
            if let Some(mut out) = running.child.stdout.take() {
                let _ = out.read_to_string(&mut rest);
            }
            return (status, rest);
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit within {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn echo_once(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    ws.send(Message::Text("hi".into())).await.expect("send");
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    assert_eq!(
        ws.next().await.expect("reply").expect("ok"),
        Message::Text("hi".into())
    );
    assert_eq!(
        ws.next().await.expect("reply").expect("ok"),
        Message::Binary(vec![1, 2, 3].into())
    );
    ws
}

#[tokio::test]
async fn sigterm_closes_clients_and_exits_cleanly() {
    let mut server = start(&[]);
    let mut ws = echo_once(&server.url).await;
    signal(&server.child, "TERM");
    // The client is told the server is going away.
    match tokio::time::timeout(LIMIT, ws.next())
        .await
        .expect("close in time")
    {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    drop(ws);
    let (status, rest) = wait_exit(&mut server);
    assert!(status.success(), "exit status {status}");
    assert!(rest.contains("shut down"), "stdout: {rest:?}");
}

#[tokio::test]
async fn ctrl_c_exits_cleanly() {
    let mut server = start(&[]);
    drop(echo_once(&server.url).await);
    signal(&server.child, "INT");
    let (status, rest) = wait_exit(&mut server);
    assert!(status.success(), "exit status {status}");
    assert!(rest.contains("shut down"), "stdout: {rest:?}");
}

#[tokio::test]
async fn end_of_stdin_stops_a_supervised_server() {
    let mut server = start(&["--exit-on-stdin-eof"]);
    drop(echo_once(&server.url).await);
    // Closing our end of the pipe is what a dying supervisor does.
    drop(server.child.stdin.take());
    let (status, _) = wait_exit(&mut server);
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn sigterm_stops_a_supervised_server_whose_parent_is_alive() {
    // With --exit-on-stdin-eof a thread blocks reading stdin; SIGTERM must
    // not wait for it (the supervisor keeps the pipe open).
    let mut server = start(&["--exit-on-stdin-eof"]);
    drop(echo_once(&server.url).await);
    signal(&server.child, "TERM");
    let (status, rest) = wait_exit(&mut server);
    assert!(status.success(), "exit status {status}");
    assert!(rest.contains("shut down"), "stdout: {rest:?}");
}

#[test]
fn a_port_in_use_is_a_clear_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_steadfast-server"))
        .args(["--listen", &addr, "--sessions", "memory"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}

#[test]
fn the_default_store_is_a_data_dir_that_one_server_holds_at_a_time() {
    let dir = std::env::temp_dir().join(format!("steadfast-binary-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data_dir = dir.display().to_string();
    let first = start(&["--sessions", "embedded", "--data-dir", &data_dir]);
    assert!(
        dir.join("sessions.redb").is_file(),
        "the store is in the dir"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_steadfast-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir", &data_dir])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1), "a second server on one dir");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[ERR_SESSION_STORE]"), "{stderr}");
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn redis_and_another_session_store_at_once_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_steadfast-server"))
        .args(["--listen", "127.0.0.1:0", "--sessions", "memory"])
        .args(["--redis", "redis://127.0.0.1:1/0"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[ERR_INVALID_CONFIG]"), "{stderr}");
    // Redis alone is tried (and here not reachable: exit 1, a store error).
    let output = Command::new(env!("CARGO_BIN_EXE_steadfast-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--redis",
            "redis://127.0.0.1:1/0",
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[ERR_SESSION_STORE]"), "{stderr}");
}
