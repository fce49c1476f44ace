//! `steadfast`: a WebSocket client for the command line that survives
//! disconnects, and the reference server.
//!
//! - `steadfast connect URL`: wscat-like. Lines of standard input are sent
//!   as text messages, what arrives is printed; reconnects and resumes on
//!   its own. Scripted use with `-x`, `--binary @FILE`, piped input,
//!   `--json`; `--record FILE` for `steadfast replay`.
//! - `steadfast replay FILE URL`: send a recording's outgoing messages
//!   again with their original timing.
//! - `steadfast proxy --to URL`: a WebSocket-aware reverse proxy that
//!   shows, filters, records (for `replay`, and as HAR) and breaks, with
//!   seeded faults, the traffic between an app and its server.
//! - `steadfast serve`: the reference server, with every option of
//!   `steadfast-server`.
//! - `steadfast bench`: echo throughput through the reference server on
//!   loopback, reliable and plain (the full suite is `cargo xtask bench`).
//!
//! Exit codes are listed in [`exit`] and in `steadfast connect --help`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod args;
mod bench;
mod exit;
mod output;
mod proxy;
mod record;
mod session;
mod suite;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use steadfast_server::cli::{self, ServeArgs};

use args::{ConnectArgs, ReplayArgs};

const AFTER_HELP: &str = "\
Examples:
  steadfast connect ws://127.0.0.1:8080
  steadfast serve --listen 127.0.0.1:8080
  steadfast proxy --listen 127.0.0.1:8081 --to ws://127.0.0.1:8080 --pretty
  steadfast bench

Run `steadfast <command> --help` for a command's options and exit codes.";

#[derive(Debug, Parser)]
#[command(
    name = "steadfast",
    version,
    about = "A WebSocket client that survives disconnects, and the reference server",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to a WebSocket server: send lines of input, print what arrives.
    Connect(Box<ConnectArgs>),
    /// Send a recording's outgoing messages to a server with their original timing.
    Replay(Box<ReplayArgs>),
    /// Run the reference server (reliable sessions and plain WebSocket,
    /// /healthz and /metrics on the same port).
    Serve(Box<ServeArgs>),
    /// A WebSocket-aware reverse proxy: show, filter, record and break the
    /// traffic between an app and its server.
    Proxy(Box<proxy::ProxyArgs>),
    /// Echo throughput through the reference server on loopback, reliable and plain.
    Bench(bench::BenchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    // `steadfast serve --config FILE`: the file's settings as flags.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "serve") {
        args = match cli::expand_config(args) {
            Ok(args) => args,
            Err(error) => {
                eprintln!("steadfast serve: [{}] {error}", error.code());
                return ExitCode::from(exit::USAGE);
            }
        };
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version print and succeed; the rest are usage errors.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Connect(args) => session::connect(*args).await,
        Command::Replay(args) => session::replay(*args).await,
        Command::Serve(args) => cli::serve("steadfast serve", *args).await,
        Command::Proxy(args) => proxy::proxy(*args).await,
        Command::Bench(args) => bench::bench(args).await,
    }
}
