//! `steadfast-server`: the reference server binary.
//!
//! Prints `listening on ws://ADDR` once bound (port 0 picks a free port) and
//! shuts down cleanly on SIGTERM or Ctrl-C, printing `shut down`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "steadfast-server",
    version,
    about = "The steadfast reference server"
)]
struct Args {
    /// Address to listen on. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Shut down when standard input reaches end-of-file: a supervisor that
    /// dies (even by SIGKILL) then takes the server with it.
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("STEADFAST_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("steadfast-server: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let server = match steadfast_server::Server::bind(args.listen).await {
            Ok(server) => server,
            Err(error) => {
                eprintln!(
                    "steadfast-server: cannot listen on {}: {error}",
                    args.listen
                );
                return ExitCode::FAILURE;
            }
        };
        let mut stdout = std::io::stdout();
        // Supervisors read this line to learn the port; flush it at once.
        let _ = writeln!(stdout, "listening on ws://{}", server.local_addr());
        let _ = stdout.flush();
        server.run(shutdown_signal(args.exit_on_stdin_eof)).await;
        let _ = writeln!(stdout, "shut down");
        ExitCode::SUCCESS
    });
    // Do not wait for the blocking thread that may still sit in a read of
    // standard input (`--exit-on-stdin-eof`): it would hold the exit until
    // the parent closes the pipe.
    runtime.shutdown_background();
    code
}

/// Completes on SIGTERM, Ctrl-C (SIGINT) or, if asked, end of standard input.
async fn shutdown_signal(watch_stdin: bool) {
    let stdin_eof = async {
        if !watch_stdin {
            return std::future::pending().await;
        }
        use tokio::io::AsyncReadExt;
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        // Anything read is ignored; EOF or an error means the parent is gone.
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let terminate = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut sigterm) => {
                    sigterm.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
        () = stdin_eof => {}
    }
}
