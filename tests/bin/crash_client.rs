//! A client process for the crash test: `steadfast-crash-client URL STORE N`
//! queues messages `k0..k{N-1}` in the durable store at STORE, printing
//! `queued I` once each `send` has returned, then waits until the outbox is
//! empty and prints `drained`. With N = 0 it only drains what the store
//! holds (the restart after a SIGKILL).
//!
//! `steadfast-crash-client URL STORE N --read K`: the same, and it reads
//! the messages the server sends (the echoes), printing `read TEXT` for
//! each; after K of them it stops reading and waits to be killed. With no
//! K it reads until killed.

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use steadfast::store::DurableStore;
use steadfast::{BackoffConfig, Client};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (url, store, count, read) = match args.as_slice() {
        [_, url, store, count] => (url, store, count, None),
        [_, url, store, count, flag] if flag == "--read" => (url, store, count, Some(usize::MAX)),
        [_, url, store, count, flag, limit] if flag == "--read" => {
            let Ok(limit) = limit.parse::<usize>() else {
                eprintln!("K must be a number");
                return ExitCode::from(2);
            };
            (url, store, count, Some(limit))
        }
        _ => {
            eprintln!("usage: steadfast-crash-client URL STORE N [--read [K]]");
            return ExitCode::from(2);
        }
    };
    let Ok(count) = count.parse::<usize>() else {
        eprintln!("N must be a number");
        return ExitCode::from(2);
    };
    let store = match DurableStore::open(store) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let client = match Client::builder(url.as_str())
        .store(store)
        .backoff(BackoffConfig {
            initial_ms: 5,
            max_ms: 50,
            ..BackoffConfig::default()
        })
        .connect()
        .await
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(limit) = read {
        let reader = client.clone();
        tokio::spawn(async move {
            let mut stdout = std::io::stdout();
            let mut read = 0;
            while read < limit {
                match reader.next_event().await {
                    Some(steadfast::ClientEvent::Message(steadfast::Payload::Text(text))) => {
                        read += 1;
                        let _ = writeln!(stdout, "read {text}");
                        let _ = stdout.flush();
                    }
                    Some(_) => {}
                    None => return,
                }
            }
            // Stop reading: what arrives now is handed out, never taken.
            std::future::pending::<()>().await;
        });
    }
    let mut stdout = std::io::stdout();
    for i in 0..count {
        match client.send(format!("k{i}")).await {
            Ok(receipt) if receipt.is_durable() => {
                // The receipt's outcome is not needed: the store has it.
                drop(receipt);
                let _ = writeln!(stdout, "queued {i}");
                let _ = stdout.flush();
            }
            Ok(_) => {
                eprintln!("message {i} was not stored durably");
                return ExitCode::FAILURE;
            }
            Err(error) => {
                eprintln!("send {i}: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    while client.stats().queued > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = writeln!(stdout, "drained");
    let _ = stdout.flush();
    if read.is_some() {
        // Reading goes on until the test kills the process.
        std::future::pending::<()>().await;
    }
    let _ = client.close(1000, "").await;
    ExitCode::SUCCESS
}
