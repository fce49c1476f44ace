//! The reference server as a child process of the tests (the same as
//! `steadfast serve`): the server crash tests kill it with SIGKILL.

use std::process::ExitCode;

use clap::Parser;
use steadfast_server::cli::{self, ServeArgs};

#[derive(Debug, Parser)]
#[command(name = "steadfast-test-server")]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let args = match cli::expand_config(std::env::args_os().collect()) {
        Ok(args) => Args::parse_from(args),
        Err(error) => {
            eprintln!("steadfast-test-server: [{}] {error}", error.code());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("steadfast-test-server: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(cli::serve("steadfast-test-server", args.serve));
    runtime.shutdown_background();
    code
}
