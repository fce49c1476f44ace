//! Crash safety: a client process with the durable store is killed with
//! SIGKILL while it queues 5,000 messages, then restarted with the same
//! store. The server's application must receive every message whose `send`
//! had returned, exactly once and in order.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use steadfast_core::{Payload, Rng};
use steadfast_server::ServerConfig;
use steadfast_testkit::{Recorder, TestServer};

const CLIENT: &str = env!("CARGO_BIN_EXE_steadfast-crash-client");
const N: usize = 5_000;

fn index(payload: &Payload) -> usize {
    match payload {
        Payload::Text(text) => text
            .strip_prefix('k')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected message {text:?}")),
        Payload::Binary(_) => panic!("unexpected binary message"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_whose_send_returned_survive_sigkill_exactly_once() {
    let seed: u64 = std::env::var("STEADFAST_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    let kill_after = 200 + Rng::new(seed).up_to(N as u64 - 400) as usize;
    eprintln!(
        "crash seed {seed}: SIGKILL after {kill_after} queued (set STEADFAST_CRASH_SEED to replay)"
    );

    let recorder = Recorder::quiet();
    // A slow server (each frame delayed 1-3 ms) keeps a backlog of sent but
    // unacknowledged messages, so the kill lands with some delivered and
    // not acknowledged (the restart must not deliver those twice) and
    // others not yet sent (it must not lose them).
    let mut config = ServerConfig::default();
    config.faults.seed = seed;
    config.faults.delay_ms = Some((1, 3));
    let server = TestServer::start_with(config, recorder.clone())
        .await
        .expect("bind loopback");
    let dir = std::env::temp_dir().join(format!("steadfast-crash-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = dir.join("outbox.redb");
    let url = server.url();

    // First run: read `queued I` lines; SIGKILL after `kill_after` of them.
    let (store_arg, url_arg) = (store.clone(), url.clone());
    let queued = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(CLIENT)
            .args([
                url_arg.as_str(),
                &store_arg.display().to_string(),
                &N.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the client process");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut queued = Vec::new();
        for line in lines.by_ref() {
            let line = line.expect("read the child's output");
            if let Some(i) = line.strip_prefix("queued ") {
                queued.push(i.parse::<usize>().expect("a number"));
                if queued.len() == kill_after {
                    // Kill returns once the signal is sent; SIGKILL cannot be caught.
                    child.kill().expect("SIGKILL");
                    break;
                }
            }
        }
        // Lines already written before the kill also count: their sends returned.
        for line in lines.map_while(Result::ok) {
            if let Some(i) = line.strip_prefix("queued ") {
                queued.push(i.parse::<usize>().expect("a number"));
            }
        }
        let status = child.wait().expect("reap the child");
        assert!(!status.success(), "the child was killed (seed {seed})");
        queued
    })
    .await
    .expect("the first run");
    assert!(
        queued.len() >= kill_after && queued.len() < N,
        "seed {seed}"
    );

    // Second run: the same store drains; N = 0 sends nothing new.
    let (store_arg, url_arg) = (store.clone(), url.clone());
    let started = Instant::now();
    let before_restart = recorder.len();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(CLIENT)
            .args([url_arg.as_str(), &store_arg.display().to_string(), "0"])
            .stdout(Stdio::null())
            .status()
            .expect("restart the client process")
    })
    .await
    .expect("the second run");
    assert!(
        status.success(),
        "the restarted client drained (seed {seed})"
    );
    eprintln!(
        "crash: {} queued before SIGKILL, {before_restart} received by then, {} after the restart ({:?})",
        queued.len(),
        recorder.len(),
        started.elapsed()
    );

    let received: Vec<usize> = recorder.payloads().iter().map(index).collect();
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates (seed {seed}): first bad pair at {:?}",
        received.windows(2).position(|w| w[0] >= w[1])
    );
    let missing: Vec<usize> = queued
        .iter()
        .copied()
        .filter(|i| received.binary_search(i).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} messages whose send returned were lost, first {:?} (seed {seed})",
        missing.len(),
        missing.first()
    );
    let peers: std::collections::BTreeSet<_> = recorder.seen().iter().map(|(p, _)| *p).collect();
    assert_eq!(
        peers.len(),
        1,
        "the restart resumed the same session (seed {seed})"
    );
    drop(server);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run the crash client with `args` until `enough` says so (given the
/// `read` lines so far, and whether it printed `drained`) or 30 s pass,
/// then SIGKILL it; the texts it read, in order.
fn read_until_killed(
    args: Vec<String>,
    mut enough: impl FnMut(&[String], bool) -> bool,
) -> Vec<String> {
    let mut child = Command::new(CLIENT)
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client process");
    let stdout = child.stdout.take().expect("piped");
    let (lines, from_child) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut read = Vec::new();
    let mut drained = false;
    while let Ok(line) = from_child.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if let Some(text) = line.strip_prefix("read ") {
            read.push(text.to_owned());
        } else if line == "drained" {
            drained = true;
        }
        if enough(&read, drained) {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "the child was killed");
    read
}

/// The receiving side of a crash: the client process reads the first K of
/// the M echoes the server sends it and then stops reading; the others
/// arrive and wait, handed out but never read, while it is killed with
/// SIGKILL. Restarted on the same store, it reads every one it had not:
/// none lost, in order (an ACK, and the mark the store keeps, covers only
/// what the application read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_received_but_not_read_survive_sigkill() {
    const M: usize = 200;
    const K: usize = 50;
    let recorder = Recorder::default();
    let server = TestServer::start_with(ServerConfig::default(), recorder.clone())
        .await
        .expect("bind loopback");
    let dir = std::env::temp_dir().join(format!("steadfast-crash-read-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = dir.join("outbox.redb").display().to_string();
    let url = server.url();

    // First run: every message sent and acknowledged, K echoes read; the
    // kill comes once the server has sent every echo and had time to hear
    // any ACK the client would send.
    let args = vec![
        url.clone(),
        store.clone(),
        M.to_string(),
        "--read".into(),
        K.to_string(),
    ];
    let metrics = server.handle().clone();
    let first = tokio::task::spawn_blocking(move || {
        read_until_killed(args, |read, drained| {
            if read.len() < K || !drained {
                return false;
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while metrics.metrics().get("messages_out").unwrap_or(0) < M as u64
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            // Time for the ACKs of what arrived (burst end, then 50 ms).
            std::thread::sleep(Duration::from_millis(300));
            true
        })
    })
    .await
    .expect("the first run");
    let expected: Vec<String> = (0..M).map(|i| format!("k{i}")).collect();
    assert_eq!(first, expected[..K], "the first run read the first K");

    // Second run: nothing new to send; read until every echo was read.
    let args = vec![url.clone(), store.clone(), "0".into(), "--read".into()];
    let second = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        read_until_killed(args, |read, _| {
            read.last()
                .is_some_and(|last| last == &format!("k{}", M - 1))
                || started.elapsed() > Duration::from_secs(30)
        })
    })
    .await
    .expect("the second run");
    let indices: Vec<usize> = second
        .iter()
        .map(|text| index(&Payload::Text(text.clone())))
        .collect();
    eprintln!(
        "crash while reading: {} read before SIGKILL, the restart read {} from k{:?}",
        first.len(),
        second.len(),
        indices.first()
    );
    let start = *indices.first().unwrap_or(&M);
    assert!(
        start <= K,
        "echoes k{K}..k{start} were received, never read, and lost"
    );
    assert_eq!(
        indices,
        (start..M).collect::<Vec<_>>(),
        "the restart reads the rest once, in order"
    );
    assert_eq!(
        recorder.payloads(),
        expected
            .iter()
            .map(|t| Payload::Text(t.clone()))
            .collect::<Vec<_>>(),
        "the server got each message once, in order"
    );
    drop(server);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
