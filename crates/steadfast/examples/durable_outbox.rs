//! A durable outbox: messages queued here survive the process (even
//! `kill -9`) and go out on a later run when the server is reachable.
//!
//! ```sh
//! # no server running: the messages wait on disk
//! cargo run -p steadfast --example durable_outbox -- ws://127.0.0.1:9000 outbox.redb hello world
//! # start one, run again with nothing new: the stored messages go out
//! steadfast serve --listen 127.0.0.1:9000 &
//! cargo run -p steadfast --example durable_outbox -- ws://127.0.0.1:9000 outbox.redb
//! ```

#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use steadfast::store::DurableStore;
use steadfast::{Client, ConnectionState};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, path, messages @ ..] = args.as_slice() else {
        eprintln!("usage: durable_outbox ws://HOST:PORT STORE_FILE [MESSAGE...]");
        return ExitCode::from(2);
    };
    match run(url, path, messages).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("durable_outbox failed [{}]: {error}", error.code());
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, path: &str, messages: &[String]) -> Result<(), steadfast::Error> {
    let client = Client::builder(url)
        .store(DurableStore::open(path)?)
        .connect()
        .await?;
    let restored = client.stats().queued;
    println!("store     {path}: {restored} message(s) waiting from earlier runs");
    for message in messages {
        let receipt = client.send(message.as_str()).await?;
        println!(
            "queued    {message:?} ({})",
            if receipt.is_durable() {
                "on disk"
            } else {
                "in memory only"
            }
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.stats().queued > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = client.stats().queued;
    if left == 0 {
        println!("delivered every message; the outbox is empty");
    } else {
        let why = match client.state() {
            ConnectionState::Reconnecting { reason, .. } => format!("{reason:?}"),
            other => format!("{other:?}"),
        };
        println!("waiting   {left} message(s) stay in {path} ({why}); run again to deliver them");
    }
    client.close(1000, "").await
}
