//! `steadfast connect` against servers nobody here wrote (Python
//! `websockets`), as a user would run it.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

mod foreign;
use foreign::{temp_dir, Foreign};

const LIMIT: Duration = Duration::from_secs(60);

async fn connect(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        LIMIT,
        Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .arg("connect")
            .arg(url)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("connect exits in time")
    .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_server_that_selects_steadfast_but_only_echoes_is_used_plain_in_auto_mode() {
    let dir = temp_dir("interop-echo");
    // Like Node's `ws` with default settings: the first subprotocol
    // offered is selected, and the server just echoes.
    let server = Foreign::start_selecting(dir.join("log.jsonl"), Some("steadfast.v1")).await;

    let (code, stdout, stderr) =
        connect(&server.url(), &["-x", "hello", "-x", "world", "-w", "1"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("< hello") && stdout.contains("< world"),
        "{stdout}"
    );
    assert!(
        stderr.contains("ERR_NOT_STEADFAST"),
        "the fallback is reported: {stderr}"
    );
    // The server got the two messages as plain text, and no protocol frames
    // after the HELLO it echoed.
    let received = server.received();
    let texts: Vec<&str> = received
        .values()
        .flatten()
        .filter(|(kind, _)| kind == "text")
        .map(|(_, data)| data.as_str())
        .collect();
    assert_eq!(texts, ["hello", "world"]);
    assert_eq!(received.len(), 1, "one connection");

    // Reliable or nothing: a clear error and the connect exit code.
    let (code, stdout, stderr) = connect(&server.url(), &["--reliable", "on", "-x", "x"]).await;
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stderr.contains("steadfast.v1"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
