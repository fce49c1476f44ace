//! Native integration tests live beside this file (`transport.rs`); run them
//! with `cargo test -p steadfast-tests`. What several of them share is here.

pub mod raw;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};

use std::time::Duration;

use steadfast::{BackoffConfig, Client, Delivery, Receipt};

/// Reconnect within milliseconds (loopback servers that come back fast).
pub fn fast_backoff() -> BackoffConfig {
    BackoffConfig {
        initial_ms: 5,
        max_ms: 50,
        fast_retry_ms: 5,
        healthy_after_ms: 200,
        connect_timeout_ms: 5_000,
        ..BackoffConfig::default()
    }
}

/// Send `c0`, `c1`, … `c{count-1}`, ten a millisecond at most (a stream
/// that lasts, for faults to land in); their receipts.
///
/// # Panics
/// If a send is refused.
pub async fn send_paced(client: &Client, count: usize) -> Vec<Receipt> {
    let mut receipts = Vec::with_capacity(count);
    for i in 0..count {
        receipts.push(client.send(format!("c{i}")).await.expect("queued"));
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    receipts
}

/// Every receipt acknowledged within `wait` (each named by its index).
///
/// # Panics
/// If one is not, or fails.
pub async fn expect_all_acked(receipts: Vec<Receipt>, wait: Duration) {
    for (i, receipt) in receipts.into_iter().enumerate() {
        let delivery = tokio::time::timeout(wait, receipt)
            .await
            .unwrap_or_else(|_| panic!("no ACK for c{i} within {wait:?}"));
        assert_eq!(delivery, Ok(Delivery::Acked), "c{i}");
    }
}

/// A server process (the `steadfast-test-server` binary, the same as
/// `steadfast serve`); killed with SIGKILL when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    _stdin: Option<ChildStdin>,
    /// `ws://ADDR` as it printed.
    pub url: String,
}

impl ServerProcess {
    /// Start `binary --listen LISTEN --exit-on-stdin-eof ARGS…` and wait
    /// for its `listening on` line.
    ///
    /// # Panics
    /// If it does not start or prints something else first.
    pub fn start(binary: &str, listen: &str, args: &[String]) -> ServerProcess {
        Self::start_with(binary, listen, args, false)
    }

    /// As [`start`](Self::start), with its standard error to read (its
    /// log), and `STEADFAST_LOG` unset (the default: warnings and errors).
    ///
    /// # Panics
    /// As `start`.
    pub fn start_logging(
        binary: &str,
        listen: &str,
        args: &[String],
    ) -> (ServerProcess, std::process::ChildStderr) {
        let mut server = Self::start_with(binary, listen, args, true);
        let stderr = server.child.stderr.take().expect("piped");
        (server, stderr)
    }

    fn start_with(binary: &str, listen: &str, args: &[String], logging: bool) -> ServerProcess {
        let mut command = Command::new(binary);
        command
            .args(["--listen", listen, "--exit-on-stdin-eof"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if logging {
            command.env_remove("STEADFAST_LOG").stderr(Stdio::piped());
        } else {
            command.stderr(Stdio::inherit());
        }
        let mut child = command.spawn().expect("start the server process");
        let stdin = child.stdin.take();
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        ServerProcess {
            child,
            _stdin: stdin,
            url,
        }
    }

    /// `HOST:PORT` it listens on.
    ///
    /// # Panics
    /// If the URL it printed has no address.
    pub fn addr(&self) -> SocketAddr {
        self.url
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .parse()
            .expect("an address in the URL")
    }

    /// A counter from its `/metrics` (without the `steadfast_` prefix).
    pub fn metric(&self, name: &str) -> Option<u64> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.addr()).ok()?;
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        let prefix = format!("steadfast_{name} ");
        body.lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
    }

    /// Its resident memory in KiB (`VmRSS` in `/proc/PID/status`).
    ///
    /// # Panics
    /// If the process is gone or the field is missing.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// SIGKILL (cannot be caught: nothing flushed, nothing closed), and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send a signal by name (`STOP`, `CONT`).
    ///
    /// # Panics
    /// If `kill` cannot be run or fails.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
