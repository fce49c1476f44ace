//! The listener under a file-descriptor limit, as a process: a server
//! started with `ulimit -n 64` takes connections until it runs out, says
//! so once (a log line) and counts it (`accept_errors`), keeps the rest
//! queued, and accepts again when connections close.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_steadfast-test-server");

/// Generous: each step takes milliseconds.
const LIMIT: Duration = Duration::from_secs(30);

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` over a fresh connection; the response body.
fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

#[test]
fn out_of_file_descriptors_the_server_says_so_waits_and_recovers() {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {SERVER} --listen 127.0.0.1:0 --exit-on-stdin-eof --sessions memory"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server under sh");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("its first line");
    let addr = first
        .trim()
        .strip_prefix("listening on ws://")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let stderr = Arc::new(Mutex::new(String::new()));
    {
        let stderr = stderr.clone();
        let pipe = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                stderr
                    .lock()
                    .expect("not poisoned")
                    .push_str(&(line + "\n"));
            }
        });
    }
    let said = |text: &str| stderr.lock().expect("not poisoned").contains(text);
    assert!(
        said("at most 64 open files") || {
            std::thread::sleep(Duration::from_millis(200));
            said("at most 64 open files")
        },
        "the low limit is said at start: {}",
        stderr.lock().expect("not poisoned")
    );

    // More connections than the limit: the kernel queues them all (the
    // backlog is 4,096), the server accepts until it runs out.
    let held: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).expect("queued by the kernel"))
        .collect();
    wait_for("the log line", || said("cannot accept connections"));
    let mentions = stderr
        .lock()
        .expect("not poisoned")
        .matches("cannot accept connections")
        .count();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        stderr
            .lock()
            .expect("not poisoned")
            .matches("cannot accept connections")
            .count(),
        mentions,
        "said once per streak, not every retry"
    );

    // They close: the server accepts again, and counted the failures.
    drop(held);
    wait_for("accepting again", || said("accepting connections again"));
    let metrics = get(&addr, "/metrics");
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("steadfast_accept_errors "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no accept_errors in {metrics}"));
    assert!(errors > 0, "accept errors counted: {errors}");
    assert!(
        metrics.lines().any(|l| l == "steadfast_fd_limit 64"),
        "the limit is a metric: {metrics}"
    );
    assert!(
        get(&addr, "/healthz").starts_with("HTTP/1.1 200"),
        "healthy again"
    );
    drop(child.stdin.take());
    let _ = child.wait();
}
