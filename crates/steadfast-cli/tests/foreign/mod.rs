//! Foreign WebSocket peers for the CLI's tests: Python `websockets`
//! (`peers.py`), from the venv `cargo xtask setup` makes in `target/pyenv`.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Generous: a hung process fails the test instead of hanging CI.
const LIMIT: Duration = Duration::from_secs(90);

pub(crate) const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers.py");

pub(crate) fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("STEADFAST_PYTHON") {
        return PathBuf::from(python);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let python = target.join("pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup` (a venv with Python websockets)",
        python.display()
    );
    python
}

pub(crate) fn seed(default: u64) -> u64 {
    std::env::var("STEADFAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("steadfast-proxy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The Python echo server: its port and its log of what it received.
pub(crate) struct Foreign {
    /// Killed on drop.
    _child: Child,
    pub(crate) port: u16,
    log: PathBuf,
}

impl Foreign {
    /// Start it; with `subprotocol`, it selects that one when offered.
    pub(crate) async fn start(log: PathBuf) -> Foreign {
        Foreign::start_selecting(log, None).await
    }

    pub(crate) async fn start_selecting(log: PathBuf, subprotocol: Option<&str>) -> Foreign {
        let mut child = Command::new(python())
            .arg(PEERS)
            .arg("echo-server")
            .arg(&log)
            .args(subprotocol)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python runs");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .expect("the echo server starts in time")
            .expect("its output")
            .expect("a line");
        let port = ready
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected: {ready}"));
        Foreign {
            _child: child,
            port,
            log,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// What it received, per connection, in order: (type, text or hex).
    pub(crate) fn received(&self) -> BTreeMap<u64, Vec<(String, String)>> {
        let mut by_conn: BTreeMap<u64, Vec<(String, String)>> = BTreeMap::new();
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        for line in text.lines() {
            let value: Value = serde_json::from_str(line).expect("JSON lines");
            let data = value["data"]
                .as_str()
                .or(value["hex"].as_str())
                .unwrap_or_default();
            by_conn
                .entry(value["conn"].as_u64().expect("conn"))
                .or_default()
                .push((
                    value["type"].as_str().unwrap_or_default().to_owned(),
                    data.to_owned(),
                ));
        }
        by_conn
    }
}
