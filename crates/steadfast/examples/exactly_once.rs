//! Send a few thousand messages through a server that drops connections,
//! and check that every echo comes back exactly once, in order.
//!
//! ```sh
//! steadfast serve --listen 127.0.0.1:9000 --fault-seed 7 --fault-drop 0.003 &
//! cargo run -p steadfast --example exactly_once -- ws://127.0.0.1:9000 3000
//! ```
//!
//! A third argument paces the stream (at most that many messages a
//! millisecond), long enough to kill the server under it:
//!
//! ```sh
//! steadfast serve --listen 127.0.0.1:9000 --data-dir ./sf-data &
//! cargo run -p steadfast --example exactly_once -- ws://127.0.0.1:9000 3000 2 &
//! sleep 0.7; kill -9 %1; steadfast serve --listen 127.0.0.1:9000 --data-dir ./sf-data
//! ```
//!
//! (`cargo xtask demo` starts such servers and runs this for you.)

#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use steadfast::{BackoffConfig, Client, ClientEvent, ConnectionState, Payload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(url), count, pace) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: exactly_once ws://HOST:PORT [COUNT] [PER_MS]");
        return ExitCode::from(2);
    };
    // PER_MS: send at most this many messages a millisecond (a stream
    // that lasts, to kill the server under); unpaced by default.
    let pace: Option<usize> = match pace.map(|p| p.parse()) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(n),
        Some(_) => {
            eprintln!("PER_MS must be a number above 0");
            return ExitCode::from(2);
        }
    };
    let count: usize = match count.map(|c| c.parse()) {
        None => 3000,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("COUNT must be a number");
            return ExitCode::from(2);
        }
    };
    match run(&url, count, pace).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("exactly_once failed [{}]: {error}", error.code());
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, count: usize, pace: Option<usize>) -> Result<bool, steadfast::Error> {
    let started = Instant::now();
    let client = Client::builder(url)
        .backoff(BackoffConfig {
            initial_ms: 20,
            max_ms: 500,
            ..BackoffConfig::default()
        })
        .connect()
        .await?;
    println!("client    sending {count} messages to {url}");

    // Read echoes and connection changes while sending.
    let reader = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut echoes = Vec::with_capacity(count);
            let mut drops = 0;
            while echoes.len() < count {
                match client.next_event().await {
                    Some(ClientEvent::Message(Payload::Text(text))) => echoes.push(text),
                    Some(ClientEvent::Message(Payload::Binary(_))) => {}
                    Some(ClientEvent::State(ConnectionState::Reconnecting {
                        attempt,
                        retry_in,
                        reason,
                        ..
                    })) => {
                        drops += 1;
                        println!(
                            "dropped   after {} echoes ({reason:?}); reconnecting in {} ms (attempt {attempt})",
                            echoes.len(),
                            retry_in.as_millis()
                        );
                    }
                    Some(ClientEvent::State(ConnectionState::Open { mode })) => {
                        println!("open      {mode:?} at echo {}", echoes.len());
                    }
                    Some(ClientEvent::ResyncRequired) => {
                        println!("resync    the server lost the session")
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            (echoes, drops)
        })
    };

    let mut receipts = Vec::with_capacity(count);
    for i in 0..count {
        receipts.push(client.send(format!("message {i}")).await?);
        if pace.is_some_and(|per_ms| i % per_ms == per_ms - 1) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut acked = 0;
    for receipt in receipts {
        receipt.await?;
        acked += 1;
    }
    let (echoes, drops) = reader
        .await
        .map_err(|e| steadfast::Error::Connect(format!("the reader failed: {e}")))?;
    let stats = client.stats();
    let in_order = echoes.len() == count
        && echoes
            .iter()
            .enumerate()
            .all(|(i, text)| *text == format!("message {i}"));
    println!(
        "done      in {:.1} s: {acked}/{count} acknowledged, {} connection drops, {} resumes, {} frames resent, {} duplicates dropped",
        started.elapsed().as_secs_f64(),
        drops,
        stats.engine.resumes,
        stats.engine.resends,
        stats.engine.duplicates,
    );
    if let Some(faults) = server_metric(url, "steadfast_faults_injected").await {
        println!("server    injected {faults} faults (its /metrics)");
    }
    client.close(1000, "done").await?;
    if in_order {
        println!("{count}/{count} delivered exactly once, in order");
    } else {
        let bad = echoes
            .iter()
            .enumerate()
            .position(|(i, text)| *text != format!("message {i}"));
        println!("FAILED: {} echoes, first wrong at {bad:?}", echoes.len());
    }
    Ok(in_order)
}

/// One counter from the server's `/metrics` (same host and port).
async fn server_metric(url: &str, name: &str) -> Option<u64> {
    let authority = url.split_once("://")?.1.split('/').next()?;
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .ok()?
    .ok()?;
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut body))
        .await
        .ok()?
        .ok()?;
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}
