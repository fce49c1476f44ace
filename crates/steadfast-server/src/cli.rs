//! The server's command line, shared by the `steadfast-server` binary and
//! `steadfast serve`: every [`ServerConfig`] setting as a flag.

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::{
    ClientAuth, Echo, EmbeddedSessions, Faults, JwtAuth, RedisSessions, RoomLimits, Rooms, Server,
    ServerConfig, TlsConfig,
};

const EXAMPLES: &str = "\
Examples:
  # echo server on the default port
  steadfast serve
  # a chat hub on all interfaces, sessions kept 10 minutes
  steadfast serve --listen 0.0.0.0:9000 --handler rooms --session-ttl 10m
  # wss:// with client certificates from a CA (mTLS)
  steadfast serve --tls-cert cert.pem --tls-key key.pem --tls-client-ca ca.pem
  # JWT (HS256) required (a secret of 32 bytes or more); a bad token is closed with 4001
  STEADFAST_JWT_SECRET=$(openssl rand -base64 32) steadfast serve
  # settings from a file (keys: the long flags); flags given here override it
  steadfast serve --config steadfast.toml --listen 127.0.0.1:9001
  # sessions in memory only (the default keeps them in ./steadfast-data)
  steadfast serve --sessions memory
  # sessions in Redis, shared by every server pointed at it
  steadfast serve --redis redis://127.0.0.1:6379/0
  # test a client against a flaky server: same seed, same faults
  steadfast serve --fault-seed 7 --fault-drop 0.01 --fault-delay-ms 5-50

The first line on standard output is `listening on ws://ADDR` (or wss://),
then, with --admin-listen, `admin on http://ADDR`;
SIGTERM or Ctrl-C shuts down: new connections stop, clients are closed
with 1001 and given --shutdown-grace to finish.";

const LIMITS: &str = "Limits";
const SESSIONS: &str = "Reliable sessions";
const SECURITY: &str = "TLS and authentication";
const FAULTS: &str = "Fault injection (testing clients; all off by default)";

/// `steadfast serve` / `steadfast-server` options.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct ServeArgs {
    /// Read settings from this TOML file: each key is a flag's long name
    /// (`max-connections = 5000`, `jwt-allow-no-exp = true`,
    /// `plain-idle-timeout = "30s"`); flags given on the command line
    /// override it. An unknown key or a bad value is an error naming it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Serve /metrics and /healthz on this address too (plain HTTP; keep it
    /// private), and /metrics no longer on the public port. Its address is
    /// the second line on standard output: `admin on http://ADDR`.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// The application: `echo` sends every message back; `rooms` is a chat
    /// hub (join/leave/room/direct/broadcast as JSON text).
    #[arg(long, value_enum, default_value_t = HandlerKind::Echo)]
    pub handler: HandlerKind,
    /// Shut down when standard input reaches end-of-file: a supervisor that
    /// dies (even by SIGKILL) then takes the server with it.
    #[arg(long)]
    pub exit_on_stdin_eof: bool,

    /// Where sessions are kept: `embedded`, a crash-safe file in
    /// --data-dir (a server restarted after a crash, even kill -9, resumes
    /// every session: nothing acknowledged is lost, nothing duplicated);
    /// `memory`, lost with the process (clients then resynchronise, and
    /// messages in flight at the crash may be delivered twice);
    /// `redis`, in --redis. Default: `redis` with --redis, else `embedded`.
    #[arg(long, value_enum, help_heading = SESSIONS)]
    pub sessions: Option<SessionsKind>,
    /// The embedded session store's directory (created if missing; one
    /// server at a time).
    #[arg(long, value_name = "DIR", default_value = "steadfast-data", help_heading = SESSIONS)]
    pub data_dir: PathBuf,
    /// Keep sessions in this Redis instead (`--sessions redis`, implied):
    /// redis://HOST:PORT/DB. It must make writes durable: Redis 7.2+ with
    /// `appendonly yes` (each commit waits for WAITAOF), or an older one
    /// with `appendonly yes` and `appendfsync always`.
    #[arg(long, value_name = "URL", help_heading = SESSIONS)]
    pub redis: Option<String>,
    /// This server's name in every log line (default: 8 random hex digits).
    #[arg(long, value_name = "NAME", help_heading = SESSIONS)]
    pub node_id: Option<String>,
    /// Prefix of the Redis keys (servers sharing sessions share it).
    #[arg(long, value_name = "PREFIX", default_value = "steadfast", help_heading = SESSIONS)]
    pub redis_prefix: String,
    /// How long a session stays resumable after its connection ends
    /// (e.g. 300, 90s, 10m).
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_duration, help_heading = SESSIONS)]
    pub session_ttl: Duration,
    /// Expired sessions whose small record (seq delivered through, next
    /// seq out) is kept so their clients resume without duplicates.
    #[arg(long, value_name = "N", default_value_t = 100_000, help_heading = SESSIONS)]
    pub session_records: usize,
    /// How long such a record is kept (default 7 days).
    #[arg(long, value_name = "DURATION", default_value = "168h", value_parser = parse_duration, help_heading = SESSIONS)]
    pub session_record_ttl: Duration,
    /// Messages queued per session for its client (waiting, or sent and
    /// not yet acknowledged); beyond this the application's send to it
    /// fails, and from half of it (or of --session-outbox-bytes) the client
    /// is not read until it acknowledges some.
    #[arg(long, value_name = "N", default_value_t = crate::config::SESSION_OUTBOX_MESSAGES, help_heading = SESSIONS)]
    pub session_outbox_messages: usize,
    /// Bytes queued per session for its client.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024, help_heading = SESSIONS)]
    pub session_outbox_bytes: usize,
    /// Bytes a session's outbox may hold while no connection is attached
    /// (sends beyond it fail with ERR_QUEUE_FULL until its client returns).
    #[arg(long, value_name = "BYTES", default_value_t = 8 * 1024 * 1024, help_heading = SESSIONS)]
    pub session_detached_outbox_bytes: usize,
    /// Messages above this are sent in chunks of this size. Also the
    /// largest WebSocket message a reliable client may send (plus 64 bytes
    /// of header): larger ones are closed with 1009 and the client halves
    /// its chunks.
    #[arg(long, value_name = "BYTES", default_value_t = 32 * 1024, help_heading = SESSIONS)]
    pub chunk_size: usize,
    /// Longest wait before acknowledging a delivery while reads go on (a
    /// burst of reads is acknowledged when it ends).
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = parse_duration, help_heading = SESSIONS)]
    pub ack_delay: Duration,
    /// Acknowledge only after --ack-delay (or 32 messages, or 256 KiB), not
    /// as soon as a read burst ends: fewer ACK frames, and a client awaiting
    /// each send waits the delay.
    #[arg(long, help_heading = SESSIONS)]
    pub ack_delay_only: bool,
    /// Heartbeat PING interval; 0 turns the server's heartbeat off.
    #[arg(long, value_name = "DURATION", default_value = "25s", value_parser = parse_duration, help_heading = SESSIONS)]
    pub heartbeat_interval: Duration,

    /// Sessions held at once; more are refused with close 1013.
    #[arg(long, value_name = "N", default_value_t = 100_000, help_heading = LIMITS)]
    pub max_sessions: usize,
    /// Sessions one address (IPv4, or an IPv6 /64) may hold at once; more
    /// are refused with close 1013.
    #[arg(long, value_name = "N", default_value_t = 25_000, help_heading = LIMITS)]
    pub max_sessions_per_address: usize,
    /// Sessions one JWT subject may hold at once; more are refused 1013.
    #[arg(long, value_name = "N", default_value_t = 1_000, help_heading = LIMITS)]
    pub max_sessions_per_subject: usize,
    /// Connections open at once, counted from accept (before TLS and the
    /// upgrade); more are answered 503 and closed at once.
    #[arg(long, value_name = "N", default_value_t = 100_000, help_heading = LIMITS)]
    pub max_connections: usize,
    /// Connections the kernel queues until they are accepted (a reconnect
    /// storm arrives at once); capped by net.core.somaxconn.
    #[arg(long, value_name = "N", default_value_t = 4096, help_heading = LIMITS)]
    pub listen_backlog: u32,
    /// Largest message accepted, in bytes (chunked total in reliable mode;
    /// plain messages above it are closed with 1009, naming the limit).
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024, help_heading = LIMITS)]
    pub max_message_size: u64,
    /// Bytes a session may hold for reordering and reassembly (at least
    /// the largest message).
    #[arg(long, value_name = "BYTES", default_value_t = 32 * 1024 * 1024, help_heading = LIMITS)]
    pub max_buffered_bytes: usize,
    /// How far ahead of the next expected sequence number a frame may be.
    #[arg(long, value_name = "N", default_value_t = 1024, help_heading = LIMITS)]
    pub reorder_window: u64,
    /// Payload bytes a client may have unacknowledged, announced in WELCOME
    /// (the client keeps within it; frames held back for flow control stay
    /// bounded by it).
    #[arg(long, value_name = "BYTES", default_value_t = 8 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..), help_heading = LIMITS)]
    pub receive_window: u64,
    /// Chunked messages a session may have half-received at once.
    #[arg(long, value_name = "N", default_value_t = 16, help_heading = LIMITS)]
    pub max_partial_messages: usize,
    /// Time allowed for the TLS handshake, the HTTP upgrade and the HELLO.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, help_heading = LIMITS)]
    pub handshake_timeout: Duration,
    /// Time shutdown waits for clients to finish closing.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration, help_heading = LIMITS)]
    pub shutdown_grace: Duration,
    /// Largest HTTP request head, in bytes (431 above it).
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024, help_heading = LIMITS)]
    pub max_head_bytes: usize,
    /// WebSocket read buffer per connection, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024, help_heading = LIMITS)]
    pub read_buffer_size: usize,
    /// Messages a plain connection may have waiting to be written.
    #[arg(long, value_name = "N", default_value_t = 1024, help_heading = LIMITS)]
    pub plain_queue: usize,
    /// Bytes all sessions may hold (queued, reassembling, being handed
    /// over); from 90% the heaviest sessions are shed (closed 1013) until
    /// 75% is left. Suffixes K, M, G (powers of 1024); 0 turns it off.
    /// Default: half of the machine's (or cgroup's) memory.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, help_heading = LIMITS)]
    pub max_memory: Option<u64>,
    /// Send plain connections a WebSocket ping this often (0 never).
    #[arg(long, value_name = "DURATION", default_value = "25s", value_parser = parse_duration, help_heading = LIMITS)]
    pub plain_ping_interval: Duration,
    /// Close a plain connection (1001) that sent no whole message or pong,
    /// or did not take what was written to it, for this long (0 never).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration, help_heading = LIMITS)]
    pub plain_idle_timeout: Duration,
    /// Longest room name, in bytes (a longer one is refused ERR_ROOM_NAME).
    #[arg(long, value_name = "BYTES", default_value_t = 256, help_heading = LIMITS)]
    pub max_room_name_bytes: usize,
    /// Rooms one peer may be in at once (more: ERR_TOO_MANY_ROOMS).
    #[arg(long, value_name = "N", default_value_t = 1_000, help_heading = LIMITS)]
    pub max_rooms_per_peer: usize,
    /// Members one room may have (more: ERR_ROOM_FULL).
    #[arg(long, value_name = "N", default_value_t = 100_000, help_heading = LIMITS)]
    pub max_room_members: usize,

    /// Serve wss:// with this certificate chain (PEM, leaf first).
    #[arg(long, value_name = "FILE", requires = "tls_key", help_heading = SECURITY)]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = SECURITY)]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = SECURITY)]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: accept clients without a certificate too (a
    /// certificate that is presented must still verify).
    #[arg(long, requires = "tls_client_ca", help_heading = SECURITY)]
    pub tls_client_optional: bool,
    /// Require a JWT (HS256) signed with the secret in this file (token in
    /// `?token=` or a `bearer.<token>` subprotocol; refused with close 4001).
    /// The environment variable STEADFAST_JWT_SECRET works too.
    #[arg(long, value_name = "FILE", help_heading = SECURITY)]
    pub jwt_secret_file: Option<PathBuf>,
    /// Accept tokens without `exp` (refused by default: a token that never
    /// expires cannot be taken back).
    #[arg(long, help_heading = SECURITY)]
    pub jwt_allow_no_exp: bool,
    /// Require `aud` to name this audience.
    #[arg(long, value_name = "AUD", help_heading = SECURITY)]
    pub jwt_audience: Option<String>,
    /// Require `iss` to be this issuer.
    #[arg(long, value_name = "ISS", help_heading = SECURITY)]
    pub jwt_issuer: Option<String>,
    /// Clock skew allowed for `exp` and `nbf`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, help_heading = SECURITY)]
    pub jwt_leeway: Duration,

    /// Seed of every fault decision (same seed, same faults).
    #[arg(long, value_name = "SEED", default_value_t = 0, help_heading = FAULTS)]
    pub fault_seed: u64,
    /// Drop the connection with this probability per received DATA frame
    /// (reliable) or message (plain), e.g. 0.01.
    #[arg(long, value_name = "P", default_value = "0", value_parser = parse_probability, help_heading = FAULTS)]
    pub fault_drop: u32,
    /// Drop every connection at each Nth received frame.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), help_heading = FAULTS)]
    pub fault_drop_every: Option<u64>,
    /// Delay each received frame by a random time in LO-HI milliseconds, e.g. 5-50.
    #[arg(long, value_name = "LO-HI", value_parser = parse_range, help_heading = FAULTS)]
    pub fault_delay_ms: Option<(u64, u64)>,
    /// Refuse this fraction of WebSocket connections, e.g. 0.2.
    #[arg(long, value_name = "P", default_value = "0", value_parser = parse_probability, help_heading = FAULTS)]
    pub fault_refuse: u32,
    /// Drop every session's state this often, as if each had expired, e.g.
    /// 30s (their small records stay: clients resume without duplicates;
    /// messages queued for them are lost and skipped).
    #[arg(long, value_name = "DURATION", value_parser = parse_nonzero_duration, help_heading = FAULTS)]
    pub fault_forget_sessions_every: Option<Duration>,
    /// With --fault-forget-sessions-every: drop the sessions' records too,
    /// as a restart of a server that keeps sessions in memory would
    /// (clients resync; messages in flight may arrive twice).
    #[arg(long, requires = "fault_forget_sessions_every", help_heading = FAULTS)]
    pub fault_forget_records: bool,
}

/// The built-in applications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HandlerKind {
    /// Send every message back to its sender.
    Echo,
    /// A chat hub: rooms, direct messages, broadcast.
    Rooms,
}

/// Where `steadfast serve` keeps sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SessionsKind {
    /// A crash-safe file in --data-dir.
    Embedded,
    /// The process's memory.
    Memory,
    /// Redis (--redis URL).
    Redis,
}

/// Why the options do not make a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The JWT secret file could not be read, or is empty.
    #[error("cannot use the JWT secret in {path}: {reason}")]
    JwtSecret {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The certificate, key or CA could not be used.
    #[error(transparent)]
    Tls(#[from] crate::TlsError),
    /// The engine settings contradict each other.
    #[error("invalid settings: {0}")]
    Config(String),
}

impl ServeError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServeError::JwtSecret { .. } => "ERR_JWT_SECRET",
            ServeError::Tls(e) => e.code(),
            ServeError::Config(_) => "ERR_INVALID_CONFIG",
        }
    }
}

/// `--config FILE` on a command line (`args`, from the program name on):
/// the file's settings become flags, inserted where `--config` stands,
/// each unless the command line gives that flag too (flags override the
/// file). Without `--config`, `args` unchanged.
///
/// # Errors
/// `ERR_INVALID_CONFIG`: the file cannot be read or is not TOML, a key is
/// not a flag of `steadfast serve`, or its value is not a string, number
/// or boolean (each named).
pub fn expand_config(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, ServeError> {
    use clap::Args as _;
    let at = args
        .iter()
        .position(|a| a == "--config" || a.to_str().is_some_and(|a| a.starts_with("--config=")));
    let Some(at) = at else { return Ok(args) };
    let path = match args[at].to_str().and_then(|a| a.strip_prefix("--config=")) {
        Some(path) => PathBuf::from(path),
        // Without its value: clap says so.
        None => match args.get(at + 1) {
            Some(path) => PathBuf::from(path),
            None => return Ok(args),
        },
    };
    let shown = path.display().to_string();
    let bad = |what: String| ServeError::Config(format!("{shown}: {what}"));
    let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| bad(format!("not TOML: {e}")))?;
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    let given = |long: &str| {
        args.iter().any(|a| {
            a.to_str().is_some_and(|a| {
                a.strip_prefix("--")
                    .is_some_and(|a| a == long || a.starts_with(&format!("{long}=")))
            })
        })
    };
    let mut flags = Vec::new();
    for (key, value) in &table {
        let Some(arg) = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key.as_str()) && key != "config")
        else {
            return Err(bad(format!(
                "unknown key `{key}` (keys are the long flags of `steadfast serve --help`)"
            )));
        };
        if given(key) {
            continue;
        }
        let switch = !arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(on) if switch => {
                if *on {
                    flags.push(format!("--{key}"));
                }
            }
            _ if switch => {
                return Err(bad(format!("`{key}` is a switch: true or false")));
            }
            toml::Value::String(text) => flags.push(format!("--{key}={text}")),
            toml::Value::Integer(n) => flags.push(format!("--{key}={n}")),
            toml::Value::Float(x) => flags.push(format!("--{key}={x}")),
            _ => {
                return Err(bad(format!(
                    "`{key}` takes one value: a string, a number or a boolean"
                )))
            }
        }
    }
    let mut out = args;
    // The file's flags go where --config stood, --config kept after them.
    let rest = out.split_off(at);
    out.extend(flags.into_iter().map(Into::into));
    out.extend(rest);
    Ok(out)
}

impl ServeArgs {
    /// The settings these options describe. `jwt_env` is the value of
    /// STEADFAST_JWT_SECRET, used when no secret file is given.
    pub fn config(&self, jwt_env: Option<String>) -> Result<ServerConfig, ServeError> {
        let mut config = ServerConfig {
            session_ttl: self.session_ttl,
            session_records: self.session_records,
            session_record_ttl: self.session_record_ttl,
            max_sessions: self.max_sessions,
            max_connections: self.max_connections,
            admin_listen: self.admin_listen,
            session_detached_outbox_bytes: self.session_detached_outbox_bytes,
            max_sessions_per_address: self.max_sessions_per_address,
            max_sessions_per_subject: self.max_sessions_per_subject,
            listen_backlog: self.listen_backlog,
            handshake_timeout: self.handshake_timeout,
            shutdown_grace: self.shutdown_grace,
            max_head_bytes: self.max_head_bytes,
            read_buffer_size: self.read_buffer_size,
            plain_queue: self.plain_queue,
            plain_ping_interval: self.plain_ping_interval,
            max_memory: self
                .max_memory
                .unwrap_or_else(crate::config::default_max_memory),
            plain_idle_timeout: self.plain_idle_timeout,
            rooms: RoomLimits {
                max_name_bytes: self.max_room_name_bytes,
                max_per_peer: self.max_rooms_per_peer,
                max_members: self.max_room_members,
            },
            faults: Faults {
                seed: self.fault_seed,
                drop_ppm: self.fault_drop,
                drop_every: self.fault_drop_every,
                delay_ms: self.fault_delay_ms,
                refuse_ppm: self.fault_refuse,
                forget_sessions_every: self.fault_forget_sessions_every,
                forget_records: self.fault_forget_records,
            },
            ..ServerConfig::default()
        };
        if let Some(node_id) = &self.node_id {
            config.node_id.clone_from(node_id);
        }
        let engine = &mut config.engine;
        engine.outbox.max_messages = self.session_outbox_messages;
        engine.outbox.max_bytes = self.session_outbox_bytes;
        engine.chunk_size = self.chunk_size;
        engine.ack.delay_ms = millis(self.ack_delay);
        engine.ack.at_read_burst_end = !self.ack_delay_only;
        engine.heartbeat = match millis(self.heartbeat_interval) {
            0 => None,
            interval_ms => engine.heartbeat.take().map(|mut heartbeat| {
                heartbeat.interval_ms = interval_ms;
                heartbeat.idle_ms = heartbeat.idle_ms.max(interval_ms);
                heartbeat
            }),
        };
        engine.limits.max_message_size = self.max_message_size;
        engine.limits.max_buffered_bytes = self.max_buffered_bytes;
        engine.limits.reorder_window = self.reorder_window;
        engine.limits.receive_window = self.receive_window;
        engine.limits.max_partial_messages = self.max_partial_messages;
        engine
            .validate()
            .map_err(|e| ServeError::Config(e.0.to_owned()))?;

        let secret = match (&self.jwt_secret_file, jwt_env) {
            (Some(path), _) => {
                let failed = |reason: String| ServeError::JwtSecret {
                    path: path.display().to_string(),
                    reason,
                };
                let bytes = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
                let secret = bytes.trim_ascii().to_vec();
                if secret.is_empty() {
                    return Err(failed("the file is empty".to_owned()));
                }
                Some((secret, path.display().to_string()))
            }
            (None, Some(secret)) if !secret.is_empty() => {
                Some((secret.into_bytes(), "STEADFAST_JWT_SECRET".to_owned()))
            }
            _ => None,
        };
        config.auth = match secret {
            Some((secret, path)) if secret.len() < JwtAuth::MIN_SECRET_BYTES => {
                return Err(ServeError::JwtSecret {
                    path,
                    reason: format!(
                        "{} bytes; HS256 needs at least {} (e.g. `openssl rand -base64 32`)",
                        secret.len(),
                        JwtAuth::MIN_SECRET_BYTES
                    ),
                });
            }
            Some((secret, _)) => {
                let mut auth = JwtAuth::hs256(&secret);
                auth.require_exp = !self.jwt_allow_no_exp;
                auth.audience.clone_from(&self.jwt_audience);
                auth.issuer.clone_from(&self.jwt_issuer);
                auth.leeway_s = self.jwt_leeway.as_secs();
                Some(auth)
            }
            None => None,
        };

        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let client_auth = match &self.tls_client_ca {
                None => ClientAuth::None,
                Some(ca) => {
                    let pem = std::fs::read(ca).map_err(|source| crate::TlsError::Read {
                        path: ca.display().to_string(),
                        source,
                    })?;
                    if self.tls_client_optional {
                        ClientAuth::Optional(pem)
                    } else {
                        ClientAuth::Required(pem)
                    }
                }
            };
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|source| crate::TlsError::Read {
                    path: path.display().to_string(),
                    source,
                })
            };
            config.tls = Some(TlsConfig::from_pem(&read(cert)?, &read(key)?, client_auth)?);
        }

        Ok(config)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Run the server these options describe until SIGTERM, Ctrl-C or (with
/// `--exit-on-stdin-eof`) the end of standard input. `name` prefixes
/// error messages. Exit status: 0 after a clean shutdown, 1 when the
/// address cannot be bound or the session store cannot be opened, 2 for
/// unusable options.
pub async fn serve(name: &str, args: ServeArgs) -> ExitCode {
    // Log lines on standard error: warnings and errors unless STEADFAST_LOG
    // says otherwise (e.g. `info`, `steadfast_server=debug`). A process
    // that installed its own subscriber keeps it.
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEADFAST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let config = match args.config(std::env::var("STEADFAST_JWT_SECRET").ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: [{}] {error}", error.code());
            return ExitCode::from(2);
        }
    };
    if config.faults.enabled() {
        eprintln!("{name}: fault injection on (seed {})", config.faults.seed);
    }
    // Each connection is a file descriptor: the soft limit goes to the
    // hard one (said when it cannot, or is low even then).
    match crate::raise_fd_limit() {
        Some((before, after)) if after < 4096 => eprintln!(
            "{name}: at most {after} open files (hard limit; was {before}): about as many connections"
        ),
        _ => {}
    }
    let builder = Server::builder().config(config);
    let sessions = match (&args.redis, args.sessions) {
        (Some(_), None | Some(SessionsKind::Redis)) => SessionsKind::Redis,
        (None, None) => SessionsKind::Embedded,
        (None, Some(kind)) => kind,
        (Some(_), Some(kind)) => {
            eprintln!(
                "{name}: [ERR_INVALID_CONFIG] --redis keeps sessions in Redis; it cannot be \
                 combined with --sessions {}",
                if kind == SessionsKind::Memory {
                    "memory"
                } else {
                    "embedded"
                }
            );
            return ExitCode::from(2);
        }
    };
    let builder = match sessions {
        SessionsKind::Memory => builder,
        SessionsKind::Redis => {
            let Some(url) = &args.redis else {
                eprintln!("{name}: [ERR_INVALID_CONFIG] --sessions redis needs --redis URL");
                return ExitCode::from(2);
            };
            match RedisSessions::open(url, &args.redis_prefix) {
                Ok(store) => {
                    eprintln!(
                        "{name}: sessions kept in {url} (keys {}:*)",
                        args.redis_prefix
                    );
                    builder.session_store(store)
                }
                Err(error) => {
                    eprintln!("{name}: [{}] {error}", error.code());
                    return ExitCode::FAILURE;
                }
            }
        }
        SessionsKind::Embedded => match EmbeddedSessions::open(&args.data_dir) {
            Ok(store) => {
                eprintln!("{name}: sessions kept in {}", store.path().display());
                builder.session_store(store)
            }
            Err(error) => {
                eprintln!("{name}: [{}] {error}", error.code());
                return ExitCode::FAILURE;
            }
        },
    };
    let builder = match args.handler {
        HandlerKind::Echo => builder.handler(Echo),
        HandlerKind::Rooms => builder.handler(Rooms),
    };
    let server = match builder.bind(args.listen).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!(
                "{name}: [{}] cannot listen on {}: {error}",
                error.code(),
                args.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    // Supervisors read this line to learn the port; flush it at once.
    let _ = writeln!(stdout, "listening on {}", server.url());
    if let Some(admin) = server.admin_addr() {
        let _ = writeln!(stdout, "admin on http://{admin}");
    }
    let _ = stdout.flush();
    server.run(shutdown_signal(args.exit_on_stdin_eof)).await;
    let _ = writeln!(stdout, "shut down");
    ExitCode::SUCCESS
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

/// `LO-HI`, e.g. `5-50`.
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
/// Bytes, with an optional K, M or G suffix (powers of 1024; `KiB`,
/// `MiB`, `GiB` too).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 512M, 2G, 1048576)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        other => return Err(format!("unknown unit `{other}` (K, M or G)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

fn parse_probability(text: &str) -> Result<u32, String> {
    let p: f64 = text.trim().parse().map_err(|e| format!("{text:?}: {e}"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{p} is not a probability from 0 to 1"));
    }
    Ok((p * 1e6).round() as u32)
}

/// `250ms`, `30s`, `10m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 250ms, 30s, 10m or 1h"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m or h)")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn parse_nonzero_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be above zero".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).map(|c| c.serve)
    }

    #[test]
    fn a_config_file_sets_flags_the_command_line_overrides() {
        let dir = std::env::temp_dir().join(format!("steadfast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let file = dir.join("steadfast.toml");
        let write = |text: &str| std::fs::write(&file, text).expect("write the file");
        let expand = |flags: &[&str]| {
            let args = std::iter::once("serve")
                .chain(flags.iter().copied())
                .map(std::ffi::OsString::from)
                .collect();
            expand_config(args)
        };
        write(
            "max-connections = 5000\nplain-idle-timeout = \"30s\"\njwt-allow-no-exp = true\n\
             sessions = \"memory\"\nmax-sessions = 9\n",
        );
        let file_arg = format!("--config={}", file.display());
        let args = expand(&[&file_arg, "--max-sessions", "7"]).expect("a good file");
        let parsed = Cli::try_parse_from(args).expect("parses").serve;
        assert_eq!(parsed.max_connections, 5000);
        assert_eq!(parsed.plain_idle_timeout, Duration::from_secs(30));
        assert!(parsed.jwt_allow_no_exp);
        assert_eq!(parsed.max_sessions, 7, "the command line wins");
        assert_eq!(parsed.config.as_deref(), Some(file.as_path()));
        // Without --config: unchanged.
        assert_eq!(expand(&["--max-sessions=3"]).expect("no file").len(), 2);

        write("max-conections = 5\n");
        let error = expand(&["--config", &file.display().to_string()]).expect_err("a typo");
        assert_eq!(error.code(), "ERR_INVALID_CONFIG");
        assert!(error.to_string().contains("`max-conections`"), "{error}");
        write("jwt-allow-no-exp = \"yes\"\n");
        let error = expand(&[&file_arg]).expect_err("a switch");
        assert!(
            error.to_string().contains("`jwt-allow-no-exp` is a switch"),
            "{error}"
        );
        write("max-connections = [1, 2]\n");
        assert!(expand(&[&file_arg]).is_err());
        write("max-connections = \"many\"\n");
        let args = expand(&[&file_arg]).expect("strings pass through");
        assert!(Cli::try_parse_from(args).is_err(), "clap refuses the value");
        write("not toml [");
        assert!(expand(&[&file_arg])
            .expect_err("not TOML")
            .to_string()
            .contains("not TOML"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "s", "1d", "-5s", "1.5s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_option_reaches_the_config() {
        let args = parse(&[
            "--session-ttl=90s",
            "--session-records=12",
            "--session-record-ttl=1h",
            "--max-sessions=7",
            "--max-connections=8",
            "--listen-backlog=9",
            "--max-message-size=1000000",
            "--max-buffered-bytes=2000000",
            "--reorder-window=64",
            "--receive-window=65536",
            "--max-partial-messages=3",
            "--chunk-size=4096",
            "--ack-delay=10ms",
            "--ack-delay-only",
            "--heartbeat-interval=5s",
            "--session-outbox-messages=99",
            "--session-outbox-bytes=123456",
            "--handshake-timeout=3s",
            "--shutdown-grace=500ms",
            "--max-head-bytes=8192",
            "--read-buffer-size=2048",
            "--plain-queue=16",
            "--fault-seed=5",
            "--fault-drop=0.5",
            "--fault-drop-every=9",
            "--fault-delay-ms=1-2",
            "--fault-refuse=0.25",
            "--fault-forget-sessions-every=1m",
            "--fault-forget-records",
        ])
        .expect("valid options");
        let config = args.config(None).expect("valid settings");
        assert_eq!(config.session_ttl, Duration::from_secs(90));
        assert_eq!(config.session_records, 12);
        assert_eq!(config.session_record_ttl, Duration::from_secs(3600));
        assert_eq!((config.max_sessions, config.max_connections), (7, 8));
        assert_eq!(config.listen_backlog, 9);
        let engine = &config.engine;
        assert_eq!(engine.limits.max_message_size, 1_000_000);
        assert_eq!(engine.limits.max_buffered_bytes, 2_000_000);
        assert_eq!(engine.limits.reorder_window, 64);
        assert_eq!(engine.limits.receive_window, 65_536);
        assert_eq!(engine.limits.max_partial_messages, 3);
        assert_eq!(engine.chunk_size, 4096);
        assert_eq!(engine.ack.delay_ms, 10);
        assert!(!engine.ack.at_read_burst_end);
        assert_eq!(engine.heartbeat.as_ref().map(|h| h.interval_ms), Some(5000));
        assert_eq!(
            (engine.outbox.max_messages, engine.outbox.max_bytes),
            (99, 123_456)
        );
        assert_eq!(config.handshake_timeout, Duration::from_secs(3));
        assert_eq!(config.shutdown_grace, Duration::from_millis(500));
        assert_eq!(config.max_head_bytes, 8192);
        assert_eq!(config.read_buffer_size, 2048);
        assert_eq!(config.plain_queue, 16);
        let faults = &config.faults;
        assert_eq!(faults.seed, 5);
        assert_eq!(faults.drop_ppm, 500_000);
        assert_eq!(faults.drop_every, Some(9));
        assert_eq!(faults.delay_ms, Some((1, 2)));
        assert_eq!(faults.refuse_ppm, 250_000);
        assert_eq!(faults.forget_sessions_every, Some(Duration::from_secs(60)));
        assert!(faults.forget_records);
        assert!(config.auth.is_none() && config.tls.is_none());
    }

    #[test]
    fn heartbeat_zero_turns_it_off_and_env_secret_turns_auth_on() {
        let args = parse(&["--heartbeat-interval=0"]).expect("valid options");
        let config = args
            .config(Some("a secret of at least 32 bytes...".to_owned()))
            .expect("valid settings");
        assert!(config.engine.heartbeat.is_none());
        assert!(config.auth.is_some());
    }

    #[test]
    fn bad_options_are_refused_with_a_code() {
        for bad in [
            &["--fault-drop=1.5"][..],
            &["--fault-drop-every=0"],
            &["--receive-window=0"],
            &["--fault-delay-ms=50-5"],
            &["--fault-forget-sessions-every=0s"],
            &["--fault-forget-records"],
            &["--tls-cert=cert.pem"],
            &["--tls-client-optional"],
            &["--session-ttl=soon"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let args = parse(&["--max-buffered-bytes=10", "--max-message-size=100"]).expect("parses");
        let error = args
            .config(None)
            .expect_err("buffer below the message size");
        assert_eq!(error.code(), "ERR_INVALID_CONFIG");
        let args = parse(&[
            "--tls-cert=/nonexistent/c.pem",
            "--tls-key=/nonexistent/k.pem",
        ])
        .expect("parses");
        assert_eq!(
            args.config(None).expect_err("no such file").code(),
            "ERR_TLS_READ"
        );
        let args = parse(&["--jwt-secret-file=/nonexistent/secret"]).expect("parses");
        assert_eq!(
            args.config(None).expect_err("no such file").code(),
            "ERR_JWT_SECRET"
        );
        let short = args
            .config(Some("only twenty bytes...".into()))
            .expect_err("the file is tried first");
        assert_eq!(short.code(), "ERR_JWT_SECRET");
        let args = parse(&[
            "--jwt-audience=chat",
            "--jwt-issuer=https://id.example",
            "--jwt-leeway=5s",
            "--jwt-allow-no-exp",
        ])
        .expect("parses");
        let short = args
            .config(Some("only twenty bytes...".into()))
            .expect_err("too short");
        assert!(short.to_string().contains("at least 32"), "{short}");
        let auth = args
            .config(Some("x".repeat(32)))
            .expect("32 bytes")
            .auth
            .expect("auth on");
        assert_eq!(auth.audience.as_deref(), Some("chat"));
        assert_eq!(auth.issuer.as_deref(), Some("https://id.example"));
        assert_eq!((auth.leeway_s, auth.require_exp), (5, false));
    }
}
