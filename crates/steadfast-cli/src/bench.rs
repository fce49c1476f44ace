//! `steadfast bench`: echo throughput through the reference server on
//! loopback, reliable and plain, in this process.
//!
//! A quick look on any machine. `--suite` runs the native side-by-side
//! suite (`suite.rs`); `cargo xtask bench` in the source tree runs that
//! with the engine, browser and size benchmarks and writes
//! docs/BENCHMARKS.md.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use steadfast_server::{Echo, Server};

use crate::exit;

/// `steadfast bench`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  steadfast bench
  steadfast bench --messages 50000 --size 1024
  steadfast bench --suite --json results.json
  steadfast bench --suite --only stores --size 64

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
    /// With --suite: run only these sections (repeatable).
    #[arg(long, value_enum, value_name = "SECTION", requires = "suite")]
    only: Vec<crate::suite::Section>,
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
            crate::suite::run(scale, &args.sizes, &args.only, args.json).await
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
        for (name, plain) in [("reliable", false), ("plain", true)] {
            let mut rates = Vec::new();
            for _ in 0..args.runs {
                rates.push(crate::suite::echo_rate(&url, plain, size, args.messages).await?);
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
