//! Server settings.

use std::time::Duration;

use steadfast_core::Config;

use crate::auth::JwtAuth;
use crate::faults::Faults;
use crate::tls::TlsConfig;

/// Everything the server can be told. `ServerConfig::default()` suits a
/// development server on loopback.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The session engine's settings: limits (message size, reorder window,
    /// buffered bytes, partial chunks), ACK coalescing, heartbeat, chunk
    /// size, and the per-session outbox bound for messages to a client
    /// (default 100,000 messages or 64 MiB; a client is not read while its
    /// session's outbox is half full).
    pub engine: Config,
    /// How long a session outlives its last connection (resume window).
    pub session_ttl: Duration,
    /// Sessions whose state expired (or was forgotten) whose small record
    /// is kept (the seq delivered through, the next seq out), so their
    /// clients resume them without duplicates; the oldest go first.
    pub session_records: usize,
    /// How long such a record is kept.
    pub session_record_ttl: Duration,
    /// Sessions kept at once; a new session beyond this is refused with
    /// close 1013 (try again later), which clients back off from.
    pub max_sessions: usize,
    /// Bytes a session's outbox may hold while no connection is attached:
    /// a send beyond it fails (`ERR_QUEUE_FULL`) until the client returns,
    /// so sessions whose clients left cannot pile up the attached bound
    /// each (`engine.outbox.max_bytes`).
    pub session_detached_outbox_bytes: usize,
    /// Also serve `/metrics` and `/healthz` here (plain HTTP, for the
    /// operator's network), and no longer `/metrics` on the public port.
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Sessions one address (IPv4, or an IPv6 /64) may hold at once; more
    /// are refused 1013, so one host cannot fill `max_sessions`.
    pub max_sessions_per_address: usize,
    /// Sessions one JWT subject may hold at once; more are refused 1013.
    pub max_sessions_per_subject: usize,
    /// Connections open at once, counted from accept at any stage (TLS,
    /// HTTP head, upgrade, WebSocket: each holds a file descriptor); more
    /// are answered `503` and closed at once, with a log line per streak.
    pub max_connections: usize,
    /// Connections the kernel queues before they are accepted (capped by
    /// `net.core.somaxconn`). A reconnect storm arrives at once: at 128 the
    /// kernel dropped most of 400 handshakes in flight.
    pub listen_backlog: u32,
    /// Time allowed for the HTTP request head, the upgrade and the HELLO.
    pub handshake_timeout: Duration,
    /// How long shutdown waits for clients to finish closing.
    pub shutdown_grace: Duration,
    /// The largest HTTP request head accepted (bytes).
    pub max_head_bytes: usize,
    /// WebSocket read buffer per connection (bytes).
    pub read_buffer_size: usize,
    /// Messages a plain connection may have waiting to be written.
    pub plain_queue: usize,
    /// A plain connection is sent a WebSocket ping this often (zero: never),
    /// so a live client is heard from even when it has nothing to say.
    pub plain_ping_interval: Duration,
    /// A plain connection from which no whole message (or pong) arrived for
    /// this long, or whose writes have not gone out for this long, is closed
    /// `1001` (zero: never). It bounds how long a client can hold the server's
    /// memory with a frame it never finishes, or by never reading.
    pub plain_idle_timeout: Duration,
    /// Require a JWT (HS256) on every WebSocket connection.
    pub auth: Option<JwtAuth>,
    /// Seeded fault injection (off by default).
    pub faults: Faults,
    /// Serve `wss://` (and `https://` for `/healthz`, `/metrics`) instead
    /// of plain TCP; optionally verify client certificates (mTLS).
    pub tls: Option<TlsConfig>,
    /// This server's name in every log line (`node{id=…}`), to tell the
    /// nodes of a cluster apart. Random (8 hex digits) unless set.
    pub node_id: String,
    /// The bytes sessions may hold in all (messages queued for clients,
    /// messages held for reordering and reassembly, messages on their way
    /// to the application); 0: no budget. Kept current as connections
    /// work: from 90% new sessions are refused 1013, sessions holding over
    /// 1 MiB are not read, and the heaviest sessions are shed (closed 1013,
    /// their state dropped, their record kept) until 75% is left. Default: half the machine's memory
    /// (or of the cgroup's limit), see [`default_max_memory`].
    pub max_memory: u64,
    /// Bounds on rooms, so one peer cannot make the server hold unbounded
    /// membership ([`ServerHandle::join`](crate::ServerHandle::join)).
    pub rooms: RoomLimits,
}

/// Bounds on rooms (see [`ServerConfig::rooms`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomLimits {
    /// Longest room name, in bytes (`ERR_ROOM_NAME`).
    pub max_name_bytes: usize,
    /// Rooms one peer may be in at once (`ERR_TOO_MANY_ROOMS`).
    pub max_per_peer: usize,
    /// Members one room may have (`ERR_ROOM_FULL`).
    pub max_members: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            max_name_bytes: 256,
            max_per_peer: 1_000,
            max_members: 100_000,
        }
    }
}

/// Messages a session's outbox holds by default. The server stops reading
/// a client while its session's outbox is half full, and an echo's replies
/// wait there until the client acknowledges them; with a durable store
/// they also wait for the commit. At the client's default of 10,000 the
/// server stopped reading pipelining clients at 5,000 replies and sat idle
/// a fifth of the time (embedded store, 64 B: 0.6 of memory-mode
/// throughput; 0.94 with room). Bytes stay bounded by the outbox's 64 MiB.
pub(crate) const SESSION_OUTBOX_MESSAGES: usize = 100_000;

/// Half of what this machine (or the cgroup the server runs in) has, at
/// least 64 MiB; 0 (no budget) where neither can be read.
pub fn default_max_memory() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    // cgroup v2: "max" when unlimited.
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(total), Some(limit)) => (total.min(limit) / 2).max(64 << 20),
        (Some(only), None) | (None, Some(only)) => (only / 2).max(64 << 20),
        (None, None) => 0,
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        let mut engine = Config::default();
        engine.outbox.max_messages = SESSION_OUTBOX_MESSAGES;
        ServerConfig {
            engine,
            session_ttl: Duration::from_secs(300),
            session_records: 100_000,
            session_record_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            max_sessions: 100_000,
            max_connections: 100_000,
            admin_listen: None,
            session_detached_outbox_bytes: 8 * 1024 * 1024,
            max_sessions_per_address: 25_000,
            max_sessions_per_subject: 1_000,
            listen_backlog: 4096,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
            max_head_bytes: 16 * 1024,
            read_buffer_size: 4 * 1024,
            plain_queue: 1024,
            plain_ping_interval: Duration::from_secs(25),
            plain_idle_timeout: Duration::from_secs(60),
            auth: None,
            faults: Faults::default(),
            node_id: crate::registry::random_node_id(),
            tls: None,
            rooms: RoomLimits::default(),
            max_memory: default_max_memory(),
        }
    }
}
