//! Command-line arguments, and turning them into a client.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use steadfast::transport::TlsOptions;
use steadfast::{Client, ClientBuilder, HeartbeatConfig, Reliability};

use crate::exit;

const CONNECT_EXAMPLES: &str = "\
Examples:
  # Interactive: type lines, see replies; reconnects and resumes on its own
  steadfast connect ws://127.0.0.1:8080

  # Send two messages, wait 2 s for replies, exit
  steadfast connect ws://127.0.0.1:8080 -x hello -x '{\"n\":1}' -w 2

  # A file as one binary message (chunked in reliable mode)
  steadfast connect wss://example.test/ws --binary @photo.jpg --ca ca.pem

  # Lines from a pipe, each acknowledged before exit; one JSON object per event
  seq 100 | steadfast connect ws://127.0.0.1:8080 --json > events.jsonl

  # Headers, a subprotocol, a recording for `steadfast replay`
  steadfast connect ws://127.0.0.1:8080 -H 'Authorization: Bearer t0k3n' -p chat.v2 --record session.jsonl
";

/// How to reach the server: shared by `connect` and `replay`.
#[derive(Debug, Args)]
pub(crate) struct ConnectionArgs {
    /// The server: ws://host:port/path or wss://…
    pub(crate) url: String,
    /// Add a handshake header, as 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub(crate) headers: Vec<String>,
    /// Offer a subprotocol (repeatable; steadfast.v1 is offered first unless --reliable off).
    #[arg(
        short = 'p',
        long = "subprotocol",
        visible_alias = "protocol",
        value_name = "NAME"
    )]
    pub(crate) subprotocols: Vec<String>,
    /// Send this Origin header.
    #[arg(long, value_name = "ORIGIN")]
    pub(crate) origin: Option<String>,
    /// Give up on a connection attempt after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub(crate) connect_timeout: f64,
    /// Ping the server this often, in seconds (0: never).
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    pub(crate) ping_interval: f64,
    /// Exit when the connection drops instead of reconnecting.
    #[arg(long)]
    pub(crate) no_reconnect: bool,
    /// Reliable delivery (steadfast.v1): auto uses it when the server offers it.
    #[arg(long, value_enum, default_value_t = ReliableArg::Auto)]
    pub(crate) reliable: ReliableArg,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

/// TLS options for a wss:// server: shared by `connect`, `replay` and `proxy`.
#[derive(Debug, Args)]
pub(crate) struct TlsArgs {
    /// Trust this CA certificate (PEM) for wss://, besides the system's.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// Present this client certificate (PEM) for mTLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// Accept any server certificate. Development only: anyone on the path
    /// can read and change the traffic.
    #[arg(long)]
    pub(crate) insecure: bool,
}

impl TlsArgs {
    /// The TLS options these flags describe.
    pub(crate) fn options(&self) -> Result<TlsOptions, Failed> {
        let mut tls = TlsOptions::default();
        if let Some(ca) = &self.ca {
            tls = tls.ca_pem(read("the CA file", ca)?);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls.client_identity_pem(read("the certificate", cert)?, read("the key", key)?);
        }
        if self.insecure {
            tls = tls.insecure();
        }
        Ok(tls)
    }
}

/// `--reliable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReliableArg {
    /// Reliable when the server accepts steadfast.v1, plain otherwise.
    Auto,
    /// Reliable or nothing: a server without steadfast.v1 is an error.
    On,
    /// A plain WebSocket, like wscat.
    Off,
}

/// `steadfast connect`.
#[derive(Debug, Args)]
#[command(after_help = format!("{}\n{CONNECT_EXAMPLES}", exit::HELP))]
pub(crate) struct ConnectArgs {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// Send this text message, then exit after --wait (repeatable).
    #[arg(short = 'x', long = "execute", value_name = "MESSAGE")]
    pub(crate) execute: Vec<String>,
    /// Send a file as one binary message (@FILE), then exit after --wait.
    #[arg(long, value_name = "@FILE")]
    pub(crate) binary: Option<String>,
    /// Seconds to wait for replies after the last message was sent (and
    /// acknowledged): default 2 with -x or --binary, 1 for piped input, 0
    /// after Ctrl-D.
    #[arg(short = 'w', long, value_name = "SECONDS")]
    pub(crate) wait: Option<f64>,
    /// Pretty-print JSON messages (coloured when standard output is a terminal).
    #[arg(long, conflicts_with_all = ["json", "quiet"])]
    pub(crate) pretty: bool,
    /// One JSON object per event on standard output, for scripts.
    #[arg(long, conflicts_with = "quiet")]
    pub(crate) json: bool,
    /// Print only the messages received.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Write every message sent and received, with a timestamp, as JSON lines.
    #[arg(long, value_name = "FILE")]
    pub(crate) record: Option<PathBuf>,
}

/// `steadfast replay`.
#[derive(Debug, Args)]
#[command(after_help = format!(
    "{}\n\nExamples:\n  steadfast connect ws://127.0.0.1:8080 --record session.jsonl\n  \
     steadfast replay session.jsonl ws://127.0.0.1:8080 --speed 2\n",
    exit::HELP
))]
pub(crate) struct ReplayArgs {
    /// A recording made with `steadfast connect --record` or `steadfast
    /// proxy --record` (one client per recorded connection, or per
    /// steadfast.v1 session, all at once).
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// Play faster (2: twice as fast) or slower (0.5).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub(crate) speed: f64,
    /// Seconds to wait for replies after the last message was acknowledged.
    #[arg(short = 'w', long, value_name = "SECONDS", default_value_t = 1.0)]
    pub(crate) wait: f64,
    /// One JSON object per event on standard output, for scripts.
    #[arg(long, conflicts_with = "quiet")]
    pub(crate) json: bool,
    /// Print only the messages received.
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

/// A usage error: exit code 2 and a message.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failed {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Failed {
        Failed {
            code,
            message: message.into(),
        }
    }
}

/// Seconds from the command line: finite and not negative.
pub(crate) fn seconds(name: &str, value: f64) -> Result<Duration, Failed> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        Failed::new(
            exit::USAGE,
            format!("[ERR_INVALID_OPTION] {name} must be a number of seconds, at least 0"),
        )
    })
}

fn read(what: &str, path: &PathBuf) -> Result<Vec<u8>, Failed> {
    std::fs::read(path).map_err(|e| {
        Failed::new(
            exit::USAGE,
            format!(
                "[ERR_INVALID_OPTION] cannot read {what} {}: {e}",
                path.display()
            ),
        )
    })
}

impl ConnectionArgs {
    /// The client these options describe (not yet connected).
    pub(crate) fn builder(&self) -> Result<ClientBuilder, Failed> {
        let mut builder = Client::builder(self.url.clone()).reliability(match self.reliable {
            ReliableArg::Auto => Reliability::Auto,
            ReliableArg::On => Reliability::Required,
            ReliableArg::Off => Reliability::Off,
        });
        for header in &self.headers {
            let (name, value) = header
                .split_once(':')
                .filter(|(name, _)| !name.trim().is_empty())
                .ok_or_else(|| {
                    Failed::new(
                        exit::USAGE,
                        format!("[ERR_INVALID_OPTION] header {header:?} is not 'Name: value'"),
                    )
                })?;
            builder = builder.header(name.trim(), value.trim());
        }
        if let Some(origin) = &self.origin {
            builder = builder.header("Origin", origin.clone());
        }
        for protocol in &self.subprotocols {
            builder = builder.protocol(protocol.clone());
        }
        let timeout = seconds("--connect-timeout", self.connect_timeout)?;
        if timeout.is_zero() {
            return Err(Failed::new(
                exit::USAGE,
                "[ERR_INVALID_OPTION] --connect-timeout must be above 0",
            ));
        }
        builder = builder.connect_timeout(timeout);
        let ping = seconds("--ping-interval", self.ping_interval)?;
        builder = if ping.is_zero() {
            builder.heartbeat(None)
        } else {
            let interval_ms = u64::try_from(ping.as_millis()).unwrap_or(u64::MAX).max(1);
            builder.heartbeat(Some(HeartbeatConfig {
                interval_ms,
                idle_ms: interval_ms.saturating_mul(2),
                ..HeartbeatConfig::default()
            }))
        };
        Ok(builder.tls(self.tls.options()?))
    }
}
