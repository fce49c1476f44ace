//! `steadfast proxy`: a WebSocket-aware reverse proxy between an app and
//! its server that shows every message both ways (steadfast.v1 frames
//! decoded), filters what it shows, records the traffic for `steadfast
//! replay` and as a HAR file, and breaks it on purpose with seeded faults.
//!
//! Each accepted connection reads the client's request head, opens the
//! upstream WebSocket with the same path, query and headers (minus the
//! handshake's own), then completes the client's handshake with the
//! subprotocol the server chose (or relays the server's refusal: its
//! status and body). Messages then flow through one bounded queue per
//! direction (64 messages, 8 MiB): a slow end slows the other, and a
//! connection holds at most the queues, the message being read (up to
//! `--max-message-size`) and the sockets' buffers.

mod fault;
mod har;
mod show;
mod wire;

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use steadfast_core::codec::{self, Frame, SUBPROTOCOL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::handshake::server::{Callback, ErrorResponse, Response};
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::args::{Failed, TlsArgs};
use crate::exit;
use crate::output::hex;
use fault::{Action, Faults};
pub(crate) use show::Side;
use show::{Filter, Head, Shower, Style};
use wire::{Budget, Wire};

const PROXY_HELP: &str = "\
Every message is shown as it passes: time, connection (#N), direction
(→ from the client, ← from the server), opcode, size and a preview; on
steadfast.v1 connections the decoded frame (HELLO, WELCOME, DATA seq and
chunk, ACK, SKIP, PING, PONG). Authorization, cookies, token-like headers
and query parameters, and HELLO's resume secret are redacted unless
--show-secrets.

Filters only change what is shown (the record keeps everything); given
together, a message must pass all of them:
  --from client|server   messages from one end
  --conn N               one connection (repeatable)
  --type NAME            text, binary, ping, pong, close, or a steadfast
                         frame: hello, welcome, data, ack, skip, ping, pong
                         (repeatable: any of them)
  --min-size/--max-size  payload bytes (a DATA frame's payload)
  --match REGEX          text messages (or text DATA payloads) that match

Faults are seeded: the same --seed breaks the same messages of the same
connections (numbered in accept order) the same way; the seed is printed.
They apply to text and binary messages (not pings or closes; on
steadfast.v1 connections ACK, SKIP and PING frames too, but never the HELLO
and WELCOME of the handshake), in both directions unless --fault-on, on
every connection unless --fault-conn. --cut-after counts those messages
both ways, protocol frames included.

Examples:
  # Watch an app talk to its server
  steadfast proxy --listen 127.0.0.1:8081 --to ws://127.0.0.1:8080 --pretty

  # Only what the server sends on connection 3, as JSON lines
  steadfast proxy --to ws://127.0.0.1:8080 --from server --conn 3 --json

  # Record, then replay the clients' messages twice as fast; a HAR for DevTools
  steadfast proxy --to ws://127.0.0.1:8080 --record traffic.jsonl --har traffic.har
  steadfast replay traffic.jsonl ws://127.0.0.1:8080 --speed 2

  # Does my app survive? Drop 1%, duplicate 1%, 20–70 ms delays, cuts
  steadfast proxy --to wss://api.example.test/ws --drop 0.01 --duplicate 0.01 \\
      --delay 20 --jitter 50 --cut-bytes 200000 --seed 7

Exit codes:
  0    stopped with Ctrl-C (the record flushed)
  1    the listen address cannot be bound, or writing the record failed
  2    usage error (bad options, a record file that cannot be created)";

/// `steadfast proxy`.
#[derive(Debug, Args)]
#[command(after_help = PROXY_HELP)]
pub(crate) struct ProxyArgs {
    /// Where the app connects: the proxy's own address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    listen: String,
    /// The server: ws://HOST:PORT or wss://…; with a path of its own it
    /// replaces the client's path (the query is kept).
    #[arg(long, value_name = "URL")]
    to: String,
    #[command(flatten)]
    tls: TlsArgs,
    /// Colours (on a terminal; NO_COLOR turns them off).
    #[arg(long, conflicts_with_all = ["json", "quiet"], help_heading = "Output")]
    pretty: bool,
    /// One JSON object per event on standard output.
    #[arg(long, conflicts_with = "quiet", help_heading = "Output")]
    json: bool,
    /// No line per message: the summary (and the record) only.
    #[arg(short, long, help_heading = "Output")]
    quiet: bool,
    /// Show credentials (Authorization, cookies, tokens, resume secrets).
    #[arg(long, help_heading = "Output")]
    show_secrets: bool,
    /// Show at most this many bytes of each payload.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 256,
        help_heading = "Output"
    )]
    preview: usize,
    /// Show only messages from this end.
    #[arg(long, value_enum, help_heading = "Filters")]
    from: Option<Side>,
    /// Show only this connection (repeatable).
    #[arg(long = "conn", value_name = "N", help_heading = "Filters")]
    conns: Vec<u64>,
    /// Show only these message or frame types (repeatable).
    #[arg(long = "type", value_name = "NAME", help_heading = "Filters")]
    types: Vec<String>,
    /// Show only payloads of at least this many bytes.
    #[arg(long, value_name = "BYTES", help_heading = "Filters")]
    min_size: Option<usize>,
    /// Show only payloads of at most this many bytes.
    #[arg(long, value_name = "BYTES", help_heading = "Filters")]
    max_size: Option<usize>,
    /// Show only text that matches this regular expression.
    #[arg(long = "match", value_name = "REGEX", help_heading = "Filters")]
    pattern: Option<String>,
    /// Record every connection's messages, both ways, as JSON lines (for
    /// `steadfast replay`).
    #[arg(long, value_name = "FILE", help_heading = "Recording")]
    record: Option<PathBuf>,
    /// On exit, write the traffic as a HAR file (Chromium DevTools imports
    /// its `_webSocketMessages`).
    #[arg(long, value_name = "FILE", help_heading = "Recording")]
    har: Option<PathBuf>,
    /// The faults' seed (default: from the clock; printed either way).
    #[arg(long, help_heading = "Faults")]
    seed: Option<u64>,
    /// Drop this fraction of messages (0 to 1).
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0.0,
        allow_negative_numbers = true,
        help_heading = "Faults"
    )]
    drop: f64,
    /// Send this fraction of messages twice.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0.0,
        allow_negative_numbers = true,
        help_heading = "Faults"
    )]
    duplicate: f64,
    /// Hold this fraction of messages back until after the next one.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0.0,
        allow_negative_numbers = true,
        help_heading = "Faults"
    )]
    reorder: f64,
    /// Delay every message by this many milliseconds (order is kept).
    #[arg(long, value_name = "MS", default_value_t = 0, help_heading = "Faults")]
    delay: u64,
    /// Add up to this many milliseconds of random delay.
    #[arg(long, value_name = "MS", default_value_t = 0, help_heading = "Faults")]
    jitter: u64,
    /// Cut each connection (no close frame) after this many messages.
    #[arg(long, value_name = "N", help_heading = "Faults")]
    cut_after: Option<u64>,
    /// Cut each connection at a random byte offset, MEAN bytes on average
    /// (uniform in 1..=2·MEAN, counting both ways), mid-frame as often as not.
    #[arg(long, value_name = "MEAN", help_heading = "Faults")]
    cut_bytes: Option<u64>,
    /// Refuse this fraction of new connections (HTTP 503).
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0.0,
        allow_negative_numbers = true,
        help_heading = "Faults"
    )]
    refuse: f64,
    /// After each cut, refuse every new connection for this many seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 0.0,
        help_heading = "Faults"
    )]
    refuse_for: f64,
    /// Limit each connection to this many bytes per second, each way.
    #[arg(long, value_name = "BYTES", help_heading = "Faults")]
    throttle: Option<u64>,
    /// Break only messages from this end.
    #[arg(long, value_enum, help_heading = "Faults")]
    fault_on: Option<Side>,
    /// Break only this connection (repeatable).
    #[arg(long = "fault-conn", value_name = "N", help_heading = "Faults")]
    fault_conns: Vec<u64>,
    /// The largest message passed; a bigger one ends its connection.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    max_message_size: usize,
}

fn usage(message: impl Into<String>) -> Failed {
    Failed::new(
        exit::USAGE,
        format!("[ERR_INVALID_OPTION] {}", message.into()),
    )
}

fn probability(name: &str, p: f64) -> Result<f64, Failed> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(usage(format!("{name} must be between 0 and 1")))
    }
}

/// Where the proxy connects.
struct Upstream {
    /// `ws://host:port` or `wss://…`, no path.
    base: String,
    /// The path of `--to`, when it has one.
    path: Option<String>,
    host: String,
    port: u16,
    connector: Connector,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    fn parse(url: &str, tls: &TlsArgs) -> Result<Upstream, Failed> {
        let (secure, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else {
            return Err(usage(format!(
                "--to must be a ws:// or wss:// URL, not {url:?}"
            )));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| usage(format!("--to has an invalid port: {url:?}")))?;
                (host, port)
            }
            _ => (authority, if secure { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(usage(format!("--to has no host: {url:?}")));
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let connector = if secure {
            let config = tls
                .options()?
                .client_config()
                .map_err(|e| Failed::new(exit::TLS, format!("[{}] {e}", e.code())))?;
            Connector::Rustls(config)
        } else {
            Connector::Plain
        };
        Ok(Upstream {
            base: format!("{}://{authority}", if secure { "wss" } else { "ws" }),
            path: path.filter(|p| *p != "/").map(str::to_owned),
            host,
            port,
            connector,
        })
    }

    /// The upstream request for a client's request head: its path (or
    /// ours) and its headers, minus those of the handshake itself.
    fn request(&self, head: &Head, remote: SocketAddr) -> Result<Request, String> {
        let path = match &self.path {
            None => head.path.clone(),
            Some(ours) => match head.path.split_once('?') {
                Some((_, query)) if !ours.contains('?') => format!("{ours}?{query}"),
                _ => ours.clone(),
            },
        };
        let mut request = format!("{}{path}", self.base)
            .into_client_request()
            .map_err(|e| format!("bad upstream URL: {e}"))?;
        let headers = request.headers_mut();
        for (name, value) in &head.headers {
            let lower = name.to_ascii_lowercase();
            let skip = matches!(
                lower.as_str(),
                "host"
                    | "connection"
                    | "upgrade"
                    | "sec-websocket-key"
                    | "sec-websocket-version"
                    | "sec-websocket-extensions"
                    | "content-length"
                    | "transfer-encoding"
                    | "te"
                    | "keep-alive"
                    | "x-forwarded-for"
            ) || lower.starts_with("proxy-");
            if skip {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
        let forwarded = head
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|(_, v)| format!("{v}, {}", remote.ip()))
            .unwrap_or_else(|| remote.ip().to_string());
        if let Ok(value) = HeaderValue::from_str(&forwarded) {
            headers.insert("x-forwarded-for", value);
        }
        Ok(request)
    }
}

/// Counters for the summary line.
#[derive(Debug, Default)]
struct Stats {
    open: AtomicU64,
    total: AtomicU64,
    /// From the client, from the server.
    messages: [AtomicU64; 2],
    bytes: [AtomicU64; 2],
    faults: AtomicU64,
    /// Connections answered with an HTTP error instead of proxied.
    refused: AtomicU64,
}

fn index(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

/// `--record`: JSON lines, flushed every second and on exit.
#[derive(Debug)]
struct Recorder {
    out: Mutex<BufWriter<File>>,
    failed: AtomicBool,
}

impl Recorder {
    fn create(path: &Path, to: &str) -> Result<Recorder, Failed> {
        let file = File::create(path).map_err(|e| {
            Failed::new(
                exit::USAGE,
                format!("[ERR_INVALID_OPTION] cannot create {}: {e}", path.display()),
            )
        })?;
        let recorder = Recorder {
            out: Mutex::new(BufWriter::new(file)),
            failed: AtomicBool::new(false),
        };
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        recorder.write(&json!({ "event": "start", "t_ms": 0, "unix_ms": unix_ms, "to": to }));
        Ok(recorder)
    }

    fn write(&self, value: &Value) {
        let Ok(mut out) = self.out.lock() else {
            return;
        };
        if writeln!(out, "{value}").is_err() && !self.failed.swap(true, Ordering::Relaxed) {
            eprintln!("steadfast proxy: [ERR_RECORD] cannot write the record");
        }
    }

    fn flush(&self) {
        if let Ok(mut out) = self.out.lock() {
            if out.flush().is_err() && !self.failed.swap(true, Ordering::Relaxed) {
                eprintln!("steadfast proxy: [ERR_RECORD] cannot write the record");
            }
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
struct Shared {
    shower: Shower,
    faults: Faults,
    upstream: Upstream,
    recorder: Option<Recorder>,
    stats: Stats,
    /// `--refuse-for`: new connections are refused until then.
    refusing_until: Mutex<Option<Instant>>,
    config: WebSocketConfig,
}

impl Shared {
    fn fault(&self, conn: u64, from: Option<Side>, kind: &str, detail: &str) {
        self.stats.faults.fetch_add(1, Ordering::Relaxed);
        self.shower.fault(conn, from, kind, detail);
        if let Some(recorder) = &self.recorder {
            recorder.write(&json!({
                "t_ms": self.shower.elapsed_ms(), "conn": conn, "event": "fault",
                "from": from.map(Side::name), "fault": kind, "detail": detail,
            }));
        }
    }
}

/// `steadfast proxy`.
pub(crate) async fn proxy(args: ProxyArgs) -> ExitCode {
    match run(args).await {
        Ok(code) => code,
        Err(failed) => {
            eprintln!("steadfast proxy: {}", failed.message);
            ExitCode::from(failed.code)
        }
    }
}

fn shower(args: &ProxyArgs) -> Result<Shower, Failed> {
    let pattern = args
        .pattern
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| usage(format!("--match is not a valid regular expression: {e}")))?;
    let mut types = Vec::new();
    for name in &args.types {
        let lower = name.to_ascii_lowercase();
        if !show::TYPES.contains(&lower.as_str()) {
            return Err(usage(format!(
                "--type {name:?} is not one of {}",
                show::TYPES.join(", ")
            )));
        }
        types.push(lower);
    }
    if let (Some(min), Some(max)) = (args.min_size, args.max_size) {
        if min > max {
            return Err(usage(format!(
                "--min-size {min} is above --max-size {max}: nothing would show"
            )));
        }
    }
    let filter = Filter {
        from: args.from,
        conns: args.conns.clone(),
        types,
        min_size: args.min_size,
        max_size: args.max_size,
        pattern,
    };
    let style = Style::from_flags(args.json, args.quiet, args.pretty);
    Ok(Shower::new(style, filter, args.preview, args.show_secrets))
}

fn faults(args: &ProxyArgs) -> Result<Faults, Failed> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| {
            u64::try_from(d.as_nanos() % u128::from(u64::MAX)).unwrap_or(1)
        })
    });
    if args.throttle == Some(0) {
        return Err(usage("--throttle must be at least 1 byte per second"));
    }
    if args.cut_bytes == Some(0) {
        return Err(usage("--cut-bytes must be at least 1"));
    }
    if args.cut_after == Some(0) {
        return Err(usage("--cut-after must be at least 1"));
    }
    Ok(Faults {
        seed,
        drop: probability("--drop", args.drop)?,
        duplicate: probability("--duplicate", args.duplicate)?,
        reorder: probability("--reorder", args.reorder)?,
        delay: Duration::from_millis(args.delay),
        jitter: Duration::from_millis(args.jitter),
        cut_after: args.cut_after,
        cut_bytes: args.cut_bytes,
        refuse: probability("--refuse", args.refuse)?,
        refuse_for: crate::args::seconds("--refuse-for", args.refuse_for)?,
        throttle: args.throttle,
        on: args.fault_on,
        conns: args.fault_conns.clone(),
    })
}

async fn run(args: ProxyArgs) -> Result<ExitCode, Failed> {
    let shower = shower(&args)?;
    let faults = faults(&args)?;
    let upstream = Upstream::parse(&args.to, &args.tls)?;
    if args.tls.insecure {
        eprintln!(
            "warning: --insecure: the server's certificate is not checked; \
             anyone on the path can read and change this connection"
        );
    }
    // `--har` alone records to a file beside it, removed once converted.
    let (record_path, temporary) = match (&args.record, &args.har) {
        (Some(path), _) => (Some(path.clone()), false),
        (None, Some(har)) => (Some(har.with_extension("har.jsonl.tmp")), true),
        (None, None) => (None, false),
    };
    let recorder = record_path
        .as_deref()
        .map(|p| Recorder::create(p, &args.to))
        .transpose()?;
    let listener = TcpListener::bind(&args.listen).await.map_err(|e| {
        Failed::new(
            exit::FAILURE,
            format!("[ERR_LISTEN] cannot listen on {}: {e}", args.listen),
        )
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Failed::new(exit::FAILURE, format!("[ERR_LISTEN] {e}")))?;
    let max = args.max_message_size.max(1);
    let shared = Arc::new(Shared {
        shower,
        upstream,
        recorder,
        stats: Stats::default(),
        refusing_until: Mutex::new(None),
        config: WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max)),
        faults,
    });
    let faulty = shared.faults.any();
    let banner = format!(
        "listening on ws://{local} → {}{}",
        args.to,
        if faulty {
            format!(" (faults on, seed {})", shared.faults.seed)
        } else {
            String::new()
        }
    );
    if shared.shower.style == Style::Json {
        show::emit_json(&json!({
            "event": "listening", "listen": local.to_string(), "to": args.to,
            "seed": faulty.then_some(shared.faults.seed),
        }));
    } else {
        eprintln!("steadfast proxy: {banner}");
    }

    let live = std::io::stderr().is_terminal() && shared.shower.style != Style::Json;
    show::set_live(live);
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut next_conn = 1u64;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    let conn = next_conn;
                    next_conn += 1;
                    tasks.spawn(handle(shared.clone(), conn, tcp, remote));
                }
                // Out of descriptors, or a connection reset before accept:
                // wait a little rather than spin.
                Err(error) => {
                    eprintln!("steadfast proxy: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = tick.tick() => {
                while tasks.try_join_next().is_some() {}
                if let Some(recorder) = &shared.recorder {
                    recorder.flush();
                }
                if live {
                    show::live(&summary(&shared.stats));
                }
            }
        }
    }
    tasks.shutdown().await;
    show::set_live(false);
    if let Some(recorder) = &shared.recorder {
        recorder.write(&json!({ "t_ms": shared.shower.elapsed_ms(), "event": "stop" }));
        recorder.flush();
    }
    if shared.shower.style == Style::Json {
        show::emit_json(&summary_json(&shared.stats));
    } else {
        eprintln!("\nsteadfast proxy: stopped; {}", summary(&shared.stats));
    }
    if let (Some(har_path), Some(record)) = (&args.har, &record_path) {
        let written = har::write(record, har_path);
        if temporary {
            let _ = std::fs::remove_file(record);
        }
        if let Err(error) = written {
            eprintln!(
                "steadfast proxy: [ERR_RECORD] cannot write {}: {error}",
                har_path.display()
            );
            return Ok(ExitCode::from(exit::FAILURE));
        }
    }
    let failed = shared
        .recorder
        .as_ref()
        .is_some_and(|r| r.failed.load(Ordering::Relaxed));
    Ok(if failed {
        ExitCode::from(exit::FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

fn summary(stats: &Stats) -> String {
    let kib = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / 1024.0;
    format!(
        "connections {} open, {} in all, {} refused · → {} messages {:.1} KiB · ← {} messages {:.1} KiB · faults {}",
        stats.open.load(Ordering::Relaxed),
        stats.total.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.messages[0].load(Ordering::Relaxed),
        kib(&stats.bytes[0]),
        stats.messages[1].load(Ordering::Relaxed),
        kib(&stats.bytes[1]),
        stats.faults.load(Ordering::Relaxed),
    )
}

fn summary_json(stats: &Stats) -> Value {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    json!({
        "event": "summary", "connections": n(&stats.total), "refused": n(&stats.refused),
        "from_client": { "messages": n(&stats.messages[0]), "bytes": n(&stats.bytes[0]) },
        "from_server": { "messages": n(&stats.messages[1]), "bytes": n(&stats.bytes[1]) },
        "faults": n(&stats.faults),
    })
}

/// Read the request head (at most 16 KiB, 10 s).
async fn read_head(tcp: &mut TcpStream) -> Result<Vec<u8>, &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let read = async {
        loop {
            let n = tcp
                .read(&mut chunk)
                .await
                .map_err(|_| "the connection failed")?;
            if n == 0 {
                return Err("the client closed before its request ended");
            }
            buf.extend_from_slice(&chunk[..n]);
            if wire::head_end(&buf).is_some() {
                return Ok(());
            }
            if buf.len() > 16 * 1024 {
                return Err("the request head is over 16 KiB");
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Ok(())) => Ok(buf),
        Ok(Err(why)) => Err(why),
        Err(_) => Err("no request head within 10 s"),
    }
}

fn parse_head(bytes: &[u8]) -> Result<Head, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err("not a valid HTTP request"),
    }
    if request.method != Some("GET") {
        return Err("not a WebSocket upgrade (only GET upgrades are proxied)");
    }
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let upgrade = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("upgrade") && v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return Err("not a WebSocket upgrade (no Upgrade: websocket)");
    }
    Ok(Head {
        path: request.path.unwrap_or("/").to_owned(),
        headers,
    })
}

/// Answer a connection that is not proxied with a status and a reason.
async fn answer(tcp: &mut TcpStream, status: u16, reason: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = tcp.write_all(response.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

async fn handle(shared: Arc<Shared>, conn: u64, tcp: TcpStream, remote: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let proxied = proxy_connection(&shared, conn, tcp, remote).await;
    if !proxied {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// Proxy one connection; false when it was answered with an error instead.
async fn proxy_connection(
    shared: &Arc<Shared>,
    conn: u64,
    mut tcp: TcpStream,
    remote: SocketAddr,
) -> bool {
    let remote_text = remote.to_string();
    let head_bytes = match read_head(&mut tcp).await {
        Ok(bytes) => bytes,
        Err(why) => {
            shared.shower.refused(conn, &remote_text, 400, why);
            answer(&mut tcp, 400, "Bad Request", why).await;
            return false;
        }
    };
    let head = match parse_head(&head_bytes) {
        Ok(head) => head,
        Err(why) => {
            shared.shower.refused(conn, &remote_text, 400, why);
            answer(&mut tcp, 400, "Bad Request", why).await;
            return false;
        }
    };
    // Refusals: a window after a cut, or a seeded fraction.
    let refusing = shared
        .refusing_until
        .lock()
        .ok()
        .and_then(|until| *until)
        .is_some_and(|until| Instant::now() < until);
    if refusing || shared.faults.refuses(conn) {
        let why = if refusing {
            "refusing new connections after a cut (--refuse-for)"
        } else {
            "refused by --refuse"
        };
        shared.fault(conn, None, "refuse", why);
        answer(&mut tcp, 503, "Service Unavailable", why).await;
        return false;
    }
    let budget = shared.faults.budget(conn).map(Budget::new);
    let request = match shared.upstream.request(&head, remote) {
        Ok(request) => request,
        Err(why) => {
            shared.shower.refused(conn, &remote_text, 502, &why);
            answer(&mut tcp, 502, "Bad Gateway", &why).await;
            return false;
        }
    };
    let server = match connect_upstream(shared, request, budget.clone()).await {
        Ok(server) => server,
        Err((status, reason, body)) => {
            shared.shower.refused(conn, &remote_text, status, &body);
            answer(&mut tcp, status, &reason, &body).await;
            return false;
        }
    };
    let (server, protocol) = server;
    let client_wire = Wire::new(tcp, head_bytes, budget.clone());
    let callback = Choose(protocol.clone());
    let client = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::accept_hdr_async_with_config(client_wire, callback, Some(shared.config)),
    )
    .await
    {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => {
            shared.shower.refused(
                conn,
                &remote_text,
                400,
                &format!("handshake failed: {error}"),
            );
            return false;
        }
        Err(_) => {
            shared
                .shower
                .refused(conn, &remote_text, 408, "handshake timed out");
            return false;
        }
    };
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    shared.stats.total.fetch_add(1, Ordering::Relaxed);
    shared
        .shower
        .open(conn, &remote_text, &head, protocol.as_deref());
    if let Some(recorder) = &shared.recorder {
        let headers: Vec<Value> = head
            .headers
            .iter()
            .map(|(n, v)| json!([n, show::redact_header(n, v, shared.shower.show_secrets)]))
            .collect();
        recorder.write(&json!({
            "t_ms": shared.shower.elapsed_ms(), "conn": conn, "event": "open",
            "path": show::redact_query(&head.path, shared.shower.show_secrets),
            "url": format!("{}{}", shared.upstream.base,
                show::redact_query(&head.path, shared.shower.show_secrets)),
            "protocol": protocol, "headers": headers,
        }));
    }
    let context = Connection {
        shared,
        conn,
        v1: protocol.as_deref() == Some(SUBPROTOCOL),
        budget,
        cut: Notify::new(),
        data_messages: AtomicU64::new(0),
        counts: [AtomicU64::new(0), AtomicU64::new(0)],
    };
    let how = context.relay(client, server).await;
    shared.stats.open.fetch_sub(1, Ordering::Relaxed);
    let counts = [
        context.counts[0].load(Ordering::Relaxed),
        context.counts[1].load(Ordering::Relaxed),
    ];
    shared.shower.end(conn, how.name(), counts);
    if let Some(recorder) = &shared.recorder {
        recorder.write(&json!({
            "t_ms": shared.shower.elapsed_ms(), "conn": conn, "event": "end", "how": how.name(),
        }));
    }
    true
}

/// Completes the client's handshake with the subprotocol the server chose.
struct Choose(Option<String>);

impl Callback for Choose {
    // The signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    fn on_request(self, _: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
        if let Some(value) = self
            .0
            .as_deref()
            .and_then(|p| HeaderValue::from_str(p).ok())
        {
            response.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, value);
        }
        Ok(response)
    }
}

type ServerSocket = WebSocketStream<MaybeTlsStream<Wire<TcpStream>>>;

/// Open the upstream WebSocket; on failure, what to answer the client.
async fn connect_upstream(
    shared: &Shared,
    request: Request,
    budget: Option<Arc<Budget>>,
) -> Result<(ServerSocket, Option<String>), (u16, String, String)> {
    let upstream = &shared.upstream;
    let gateway = |why: String| (502, "Bad Gateway".to_owned(), why);
    let connect = async {
        let tcp = TcpStream::connect((upstream.host.as_str(), upstream.port))
            .await
            .map_err(|e| gateway(format!("cannot reach {}: {e}", upstream.base)))?;
        let _ = tcp.set_nodelay(true);
        let wire = Wire::new(tcp, Vec::new(), budget);
        match tokio_tungstenite::client_async_tls_with_config(
            request,
            wire,
            Some(shared.config),
            Some(upstream.connector.clone()),
        )
        .await
        {
            Ok((socket, response)) => {
                let protocol = response
                    .headers()
                    .get(SEC_WEBSOCKET_PROTOCOL)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok((socket, protocol))
            }
            // The server refused the upgrade: relay its answer.
            Err(WsError::Http(response)) => {
                let status = response.status();
                let body = response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("Refused").to_owned(),
                    if body.is_empty() {
                        format!("the server refused the upgrade: HTTP {}", status.as_u16())
                    } else {
                        body
                    },
                ))
            }
            Err(error) => Err(gateway(format!("upstream handshake failed: {error}"))),
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(result) => result,
        Err(_) => Err((
            504,
            "Gateway Timeout".into(),
            format!("{} did not answer within 10 s", upstream.base),
        )),
    }
}

/// Messages queued each way, at most.
const QUEUE_MESSAGES: usize = 64;
/// Payload bytes queued each way, at most (a bigger message waits for
/// the queue to empty, then has it to itself).
const QUEUE_BYTES: u32 = 8 << 20;

/// One direction's queue, bounded in messages and in bytes: a slow end
/// slows the other instead of growing the proxy.
struct Queue {
    tx: mpsc::Sender<(Instant, Message, OwnedSemaphorePermit)>,
    bytes: Arc<Semaphore>,
}

impl Queue {
    /// Queue `message` to go at `due`; `Err` when the writer is gone.
    async fn push(&self, due: Instant, message: Message) -> Result<(), ()> {
        let size = u32::try_from(size_of(&message)).unwrap_or(u32::MAX);
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(size.min(QUEUE_BYTES))
            .await
            .map_err(|_| ())?;
        self.tx.send((due, message, permit)).await.map_err(|_| ())
    }
}

/// How a connection (or one direction of it) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A close handshake.
    Closed,
    /// One end went away without a close frame.
    Gone,
    /// Cut by a fault.
    Cut,
    /// A message above `--max-message-size`.
    TooBig,
}

impl End {
    fn name(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Gone => "gone",
            End::Cut => "cut",
            End::TooBig => "too-big",
        }
    }
}

/// One proxied connection.
struct Connection<'a> {
    shared: &'a Shared,
    conn: u64,
    v1: bool,
    budget: Option<Arc<Budget>>,
    /// Woken by `--cut-after`.
    cut: Notify,
    /// Text and binary messages seen, both ways (for `--cut-after`).
    data_messages: AtomicU64,
    /// Messages from the client, from the server.
    counts: [AtomicU64; 2],
}

/// Whether a message is a steadfast.v1 HELLO or WELCOME.
fn is_handshake(message: &Message) -> bool {
    matches!(message, Message::Binary(bytes)
        if matches!(codec::decode(bytes, u64::MAX), Ok(Frame::Hello { .. } | Frame::Welcome { .. })))
}

/// A HELLO with its resume secret zeroed (for the record); None for
/// anything else.
fn without_secret(bytes: &[u8]) -> Option<Vec<u8>> {
    match codec::decode(bytes, u64::MAX) {
        Ok(Frame::Hello {
            new,
            session,
            delivered,
            max_message_size,
            secret: Some(_),
        }) => Some(
            Frame::Hello {
                new,
                session,
                delivered,
                max_message_size,
                secret: Some([0; 16]),
            }
            .to_vec(),
        ),
        _ => None,
    }
}

fn size_of(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        Message::Close(frame) => frame.as_ref().map_or(0, |f| f.reason.len() + 2),
        Message::Frame(frame) => frame.payload().len(),
    }
}

impl Connection<'_> {
    async fn relay(&self, client: WebSocketStream<Wire<TcpStream>>, server: ServerSocket) -> End {
        let (client_tx, client_rx) = client.split();
        let (server_tx, server_rx) = server.split();
        let up = std::pin::pin!(self.direction(Side::Client, client_rx, server_tx));
        let down = std::pin::pin!(self.direction(Side::Server, server_rx, client_tx));
        let budget_cut = async {
            match &self.budget {
                Some(budget) => budget.cut.notified().await,
                None => std::future::pending().await,
            }
        };
        let both = async {
            use futures::future::Either;
            let (end, rest) = match futures::future::select(up, down).await {
                Either::Left((end, other)) => (end, Either::Left(other)),
                Either::Right((end, other)) => (end, Either::Right(other)),
            };
            match end {
                // The close handshake goes on the other way: give it a moment.
                End::Closed => tokio::time::timeout(Duration::from_secs(5), rest)
                    .await
                    .unwrap_or(End::Closed),
                // Anything else ends both ways at once, without a goodbye.
                other => other,
            }
        };
        let end = tokio::select! {
            end = both => end,
            () = budget_cut => {
                self.shared.fault(self.conn, None, "cut", "the byte budget ran out (--cut-bytes): both sockets dropped mid-stream");
                End::Cut
            }
            () = self.cut.notified() => End::Cut,
        };
        if end == End::Cut {
            // The window opens before the sockets close (when this
            // returns): a client reconnecting at once is refused.
            let window = self.shared.faults.refuse_for;
            if !window.is_zero() {
                if let Ok(mut until) = self.shared.refusing_until.lock() {
                    *until = Some(Instant::now() + window);
                }
            }
        }
        end
    }

    fn record(&self, from: Side, message: &Message) {
        let Some(recorder) = &self.shared.recorder else {
            return;
        };
        let t_ms = self.shared.shower.elapsed_ms();
        let (conn, dir) = (self.conn, from.dir());
        let value = match message {
            Message::Text(text) => {
                json!({ "t_ms": t_ms, "conn": conn, "dir": dir, "type": "text", "data": text.as_str() })
            }
            Message::Binary(bytes) => {
                let redacted = (self.v1 && !self.shared.shower.show_secrets)
                    .then(|| without_secret(bytes))
                    .flatten();
                let bytes = redacted.as_deref().unwrap_or(bytes);
                json!({ "t_ms": t_ms, "conn": conn, "dir": dir, "type": "binary", "hex": hex(bytes) })
            }
            Message::Close(frame) => json!({
                "t_ms": t_ms, "conn": conn, "event": "close", "from": from.name(),
                "code": frame.as_ref().map(|f| u16::from(f.code)),
                "reason": frame.as_ref().map(|f| f.reason.as_str()),
            }),
            _ => return,
        };
        recorder.write(&value);
    }

    /// Read from one end, write to the other, through the faults.
    async fn direction<R, W>(&self, from: Side, mut rx: R, mut tx: W) -> End
    where
        R: Stream<Item = Result<Message, WsError>> + Unpin,
        W: Sink<Message, Error = WsError> + Unpin,
    {
        let shared = self.shared;
        let (tx_queue, mut queued) = mpsc::channel(QUEUE_MESSAGES);
        let queue = Queue {
            tx: tx_queue,
            bytes: Arc::new(Semaphore::new(QUEUE_BYTES as usize)),
        };
        let faulty = shared.faults.applies(self.conn, from);
        let throttle = shared.faults.throttle.filter(|_| faulty);
        let reader = async move {
            let mut rng = shared.faults.rng(self.conn, 1 + index(from) as u64);
            let mut held: Option<Message> = None;
            let mut closing = false;
            loop {
                let message = match rx.next().await {
                    Some(Ok(message)) => message,
                    Some(Err(WsError::Capacity(_))) => {
                        shared.fault(
                            self.conn,
                            Some(from),
                            "too-big",
                            "a message above --max-message-size: the connection is dropped",
                        );
                        return End::TooBig;
                    }
                    Some(Err(_)) | None => {
                        return if closing { End::Closed } else { End::Gone };
                    }
                };
                let size = size_of(&message);
                self.counts[index(from)].fetch_add(1, Ordering::Relaxed);
                shared.stats.messages[index(from)].fetch_add(1, Ordering::Relaxed);
                shared.stats.bytes[index(from)].fetch_add(size as u64, Ordering::Relaxed);
                shared.shower.message(self.conn, from, &message, self.v1);
                self.record(from, &message);
                let now = Instant::now();
                let data = matches!(message, Message::Text(_) | Message::Binary(_));
                if data && shared.faults.on_connection(self.conn) {
                    let seen = self.data_messages.fetch_add(1, Ordering::Relaxed) + 1;
                    if shared.faults.cut_after.is_some_and(|n| seen > n) {
                        shared.fault(
                            self.conn,
                            Some(from),
                            "cut",
                            &format!("after {} messages (--cut-after)", seen - 1),
                        );
                        self.cut.notify_one();
                        return End::Cut;
                    }
                }
                // The steadfast.v1 handshake is never dropped, duplicated
                // or reordered (a real link loses connections, not frames
                // inside them; cuts still hit it).
                let breakable = data && faulty && !(self.v1 && is_handshake(&message));
                if !breakable {
                    closing |= matches!(message, Message::Close(_));
                    if let Some(held) = held.take() {
                        if queue.push(now, held).await.is_err() {
                            return End::Gone;
                        }
                    }
                    if queue.push(now, message).await.is_err() {
                        return End::Gone;
                    }
                    continue;
                }
                let what = show::label(&message, self.v1);
                match shared.faults.action(&mut rng) {
                    Action::Drop => {
                        shared.fault(self.conn, Some(from), "drop", &what);
                    }
                    Action::Hold if held.is_none() => {
                        shared.fault(
                            self.conn,
                            Some(from),
                            "reorder",
                            &format!("{what} held until after the next message"),
                        );
                        held = Some(message);
                    }
                    Action::Hold => {
                        let earlier = held.take();
                        for m in std::iter::once(message).chain(earlier) {
                            if queue.push(now, m).await.is_err() {
                                return End::Gone;
                            }
                        }
                    }
                    Action::Forward { copies, delay } => {
                        if copies > 1 {
                            shared.fault(self.conn, Some(from), "duplicate", &what);
                        }
                        let due = now + delay;
                        let mut out = Vec::with_capacity(3);
                        for _ in 1..copies {
                            out.push(message.clone());
                        }
                        out.push(message);
                        out.extend(held.take());
                        for m in out {
                            if queue.push(due, m).await.is_err() {
                                return End::Gone;
                            }
                        }
                    }
                }
            }
        };
        let writer = async move {
            // Messages already queued go out together, one flush for all
            // (a flush per message is a write per message); nothing waits
            // on a timer unless a delay fault asked for it.
            'out: while let Some(first) = queued.recv().await {
                let mut next = Some(first);
                while let Some((due, message, _bytes)) = next.take() {
                    if due > Instant::now() {
                        if tx.flush().await.is_err() {
                            break 'out;
                        }
                        tokio::time::sleep_until(due).await;
                    }
                    let size = size_of(&message);
                    if tx.feed(message).await.is_err() {
                        // The other end is closed or gone: its own reader
                        // says how.
                        break 'out;
                    }
                    if let Some(rate) = throttle {
                        if tx.flush().await.is_err() {
                            break 'out;
                        }
                        let seconds = size as f64 / rate as f64;
                        tokio::time::sleep(Duration::from_secs_f64(seconds.min(3600.0))).await;
                    }
                    next = queued.try_recv().ok();
                }
                if tx.flush().await.is_err() {
                    break;
                }
            }
        };
        let (end, ()) = futures::join!(reader, writer);
        end
    }
}
