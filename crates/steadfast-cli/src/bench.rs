//! `steadfast bench`: echo throughput through the reference server on
//! loopback, reliable and plain, in this process.
//!
//! A quick look on any machine. `--suite` runs the native side-by-side
//! suite (`suite.rs`); `cargo xtask bench` in the source tree runs that
//! with the engine, browser and size benchmarks and writes
//! docs/BENCHMARKS.md.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use steadfast::{Client, ClientEvent, Reliability};
use steadfast_server::{Echo, Server};

use crate::exit;

/// `steadfast bench`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  steadfast bench
  steadfast bench --messages 50000 --size 1024
  steadfast bench --suite --json results.json

--suite runs the native side-by-side suite (separate server processes, raw
tokio-tungstenite, latency, 16 MiB, idle memory, durable outbox); `cargo
xtask bench` in the source tree runs it with the rest and writes
docs/BENCHMARKS.md.")]
pub(crate) struct BenchArgs {
    /// Messages per run.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Payload bytes per message (repeatable; default 64 and 4096; with
    /// --suite, the throughput sizes, default 64, 1024, 4096 and 65536).
    #[arg(long = "size")]
    sizes: Vec<usize>,
    /// Runs per case; the median is printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The full native suite instead: servers in their own processes, raw
    /// tokio-tungstenite side by side, latency, a 16 MiB message, memory
    /// per idle connection, the durable outbox (a few minutes).
    #[arg(long)]
    suite: bool,
    /// With --suite: every case once and small (a smoke run).
    #[arg(long, requires = "suite")]
    quick: bool,
    /// With --suite: also write the results here as JSON.
    #[arg(long, value_name = "FILE", requires = "suite")]
    json: Option<std::path::PathBuf>,
    /// Internal: run as a helper process of the suite (raw-echo, idle).
    #[arg(long, hide = true)]
    role: Option<String>,
    #[arg(long, hide = true)]
    url: Option<String>,
    #[arg(long, hide = true, default_value = "reliable")]
    client: String,
    #[arg(long, hide = true, default_value_t = 100)]
    connections: usize,
}

pub(crate) async fn bench(args: BenchArgs) -> ExitCode {
    let result = match args.role.as_deref() {
        Some("raw-echo") => crate::suite::raw_echo().await,
        Some("idle") => match &args.url {
            Some(url) => crate::suite::idle(url, &args.client, args.connections.max(1)).await,
            None => Err("--role idle needs --url".into()),
        },
        Some(other) => Err(format!("unknown role {other}")),
        None if args.suite => {
            let scale = if args.quick {
                crate::suite::Scale::quick()
            } else {
                crate::suite::Scale::full()
            };
            crate::suite::run(scale, &args.sizes, args.json).await
        }
        None => run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("steadfast bench: {message}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

async fn run(args: BenchArgs) -> Result<(), String> {
    if args.messages == 0 || args.runs == 0 {
        return Err("--messages and --runs must be at least 1".into());
    }
    let sizes = if args.sizes.is_empty() {
        vec![64, 4096]
    } else {
        args.sizes
    };
    let server = Server::builder()
        .handler(Echo)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| format!("cannot start the server on loopback: {e}"))?;
    let url = server.url();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    println!(
        "echo through the reference server on {url}, {} messages per run, median of {}",
        args.messages, args.runs
    );
    println!(
        "{:<10} {:>8} {:>14} {:>10}",
        "mode", "size", "messages/s", "MB/s"
    );
    for size in sizes {
        for (name, mode) in [
            ("reliable", Reliability::Required),
            ("plain", Reliability::Off),
        ] {
            let mut rates = Vec::new();
            for _ in 0..args.runs {
                rates.push(echo_run(&url, mode, args.messages, size).await?);
            }
            rates.sort_by(f64::total_cmp);
            let median = rates[rates.len() / 2];
            println!(
                "{name:<10} {size:>8} {median:>14.0} {:>10.1}",
                median * size as f64 / 1e6
            );
        }
    }
    let _ = stop.send(());
    let _ = task.await;
    Ok(())
}

/// Send `count` messages pipelined, wait for every echo; messages/s.
async fn echo_run(url: &str, mode: Reliability, count: usize, size: usize) -> Result<f64, String> {
    let client = Client::builder(url)
        .reliability(mode)
        .max_unread(usize::MAX)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    client.wait_for_state(|s| s.is_open()).await;
    let payload = vec![0x5a_u8; size];
    let start = Instant::now();
    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..count {
                if client.send(payload.clone()).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut received = 0;
    while received < count {
        match tokio::time::timeout(Duration::from_secs(60), client.next_event()).await {
            Ok(Some(ClientEvent::Message(_))) => received += 1,
            Ok(Some(_)) => {}
            Ok(None) => return Err("the client stopped".into()),
            Err(_) => return Err(format!("only {received} of {count} echoes in 60 s")),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = sender.await;
    let _ = client.close(1000, "").await;
    Ok(count as f64 / elapsed)
}
