//! `steadfast-server`: the reference server binary.
//!
//! Prints `listening on ws://ADDR` once bound (port 0 picks a free port) and
//! shuts down cleanly on SIGTERM or Ctrl-C, printing `shut down`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use std::time::Duration;
use steadfast_server::{Echo, Faults, JwtAuth, Rooms, Server, ServerConfig};

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
    /// The application: `echo` sends every message back; `rooms` is a chat
    /// hub (join/leave/room/direct/broadcast as JSON text).
    #[arg(long, value_enum, default_value_t = HandlerKind::Echo)]
    handler: HandlerKind,
    /// Seconds a session stays resumable after its connection ends.
    #[arg(long, default_value_t = 300)]
    session_ttl: u64,
    /// Sessions held at once; more are refused with close 1013.
    #[arg(long, default_value_t = 100_000)]
    max_sessions: usize,
    /// Open connections at once; more are refused with close 1013.
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_message_size: u64,
    /// Require a JWT (HS256) signed with the secret in this file (token in
    /// `?token=` or a `bearer.<token>` subprotocol; refused with close 4001).
    /// The environment variable STEADFAST_JWT_SECRET works too.
    #[arg(long, value_name = "FILE")]
    jwt_secret_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    faults: FaultArgs,
}

/// Seeded fault injection, for testing clients.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Fault injection (testing clients; all off by default)")]
struct FaultArgs {
    /// Seed of every fault decision (same seed, same faults).
    #[arg(long, default_value_t = 0)]
    fault_seed: u64,
    /// Drop the connection with this probability per received DATA frame
    /// (reliable) or message (plain), e.g. 0.01.
    #[arg(long, value_name = "P", default_value = "0", value_parser = parse_probability)]
    fault_drop: u32,
    /// Drop every connection at each Nth received frame.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    fault_drop_every: Option<u64>,
    /// Delay each received frame by a random time in LO-HI milliseconds, e.g. 5-50.
    #[arg(long, value_name = "LO-HI", value_parser = parse_range)]
    fault_delay_ms: Option<(u64, u64)>,
    /// Refuse this fraction of WebSocket connections, e.g. 0.2.
    #[arg(long, value_name = "P", default_value = "0", value_parser = parse_probability)]
    fault_refuse: u32,
    /// Forget every session this often (seconds), as a server that lost
    /// its state: clients resynchronise.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    fault_forget_sessions_every: Option<u64>,
}

impl FaultArgs {
    fn faults(&self) -> Faults {
        let mut faults = Faults::default();
        faults.seed = self.fault_seed;
        faults.drop_ppm = self.fault_drop;
        faults.drop_every = self.fault_drop_every;
        faults.delay_ms = self.fault_delay_ms;
        faults.refuse_ppm = self.fault_refuse;
        faults.forget_sessions_every = self.fault_forget_sessions_every.map(Duration::from_secs);
        faults
    }
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (lo, hi) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not LO-HI"))?;
    let lo: u64 = lo.trim().parse().map_err(|e| format!("{lo:?}: {e}"))?;
    let hi: u64 = hi.trim().parse().map_err(|e| format!("{hi:?}: {e}"))?;
    if lo > hi {
        return Err(format!("{lo} is above {hi}"));
    }
    Ok((lo, hi))
}

/// A probability from 0 to 1, as parts per million.
fn parse_probability(text: &str) -> Result<u32, String> {
    let p: f64 = text.trim().parse().map_err(|e| format!("{text:?}: {e}"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{p} is not a probability from 0 to 1"));
    }
    Ok((p * 1e6).round() as u32)
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum HandlerKind {
    Echo,
    Rooms,
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
        let mut config = ServerConfig::default();
        config.session_ttl = Duration::from_secs(args.session_ttl);
        config.max_sessions = args.max_sessions;
        config.max_connections = args.max_connections;
        config.engine.limits.max_message_size = args.max_message_size;
        config.engine.limits.max_buffered_bytes = config
            .engine
            .limits
            .max_buffered_bytes
            .max(usize::try_from(args.max_message_size).unwrap_or(usize::MAX));
        let secret = match (&args.jwt_secret_file, std::env::var("STEADFAST_JWT_SECRET")) {
            (Some(path), _) => match std::fs::read(path) {
                Ok(bytes) => Some(bytes.trim_ascii().to_vec()),
                Err(error) => {
                    eprintln!("steadfast-server: cannot read {}: {error}", path.display());
                    return ExitCode::from(2);
                }
            },
            (None, Ok(secret)) if !secret.is_empty() => Some(secret.into_bytes()),
            _ => None,
        };
        config.auth = secret.map(|s| JwtAuth::hs256(&s));
        let faults = args.faults.faults();
        if faults.enabled() {
            eprintln!(
                "steadfast-server: fault injection on (seed {})",
                faults.seed
            );
        }
        config.faults = faults;
        let builder = Server::builder().config(config);
        let builder = match args.handler {
            HandlerKind::Echo => builder.handler(Echo),
            HandlerKind::Rooms => builder.handler(Rooms),
        };
        let server = match builder.bind(args.listen).await {
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
