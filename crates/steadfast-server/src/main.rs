//! `steadfast-server`: the reference server binary (the same as
//! `steadfast serve`; see `steadfast_server::cli` for the options).
//!
//! Prints `listening on ws://ADDR` (or `wss://`) once bound (port 0 picks a
//! free port) and shuts down cleanly on SIGTERM or Ctrl-C, printing
//! `shut down`.

use std::process::ExitCode;

use clap::Parser;
use steadfast_server::cli::{self, ServeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "steadfast-server",
    version,
    about = "The steadfast reference server: reliable sessions (steadfast.v1) and plain WebSocket, /healthz and /metrics on the same port"
)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let args = match cli::expand_config(std::env::args_os().collect()) {
        Ok(args) => Args::parse_from(args),
        Err(error) => {
            eprintln!("steadfast-server: [{}] {error}", error.code());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("steadfast-server: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(cli::serve("steadfast-server", args.serve));
    // Do not wait for the blocking thread that may still sit in a read of
    // standard input (`--exit-on-stdin-eof`): it would hold the exit until
    // the parent closes the pipe.
    runtime.shutdown_background();
    code
}
