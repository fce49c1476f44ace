//! The steadfast reference server: the peer that speaks protocol v1
//! (docs/PROTOCOL.md), as a library a Rust backend embeds and as the
//! `steadfast-server` binary (also `steadfast serve`).
//!
//! - Clients offering `steadfast.v1` get a **reliable session**: the server
//!   runs the same [`steadfast_core::Engine`] as the client (sequence
//!   numbers, ACKs, dedup, reordering, chunking, resume), keyed by session id
//!   in a registry that keeps a session for [`ServerConfig::session_ttl`]
//!   after its connection ends. A client naming a session the server does not
//!   know gets a new one (the client reports `ResyncRequired`).
//! - Sessions go through a [`SessionStore`]: [`MemorySessions`] (the
//!   library's default: gone with the process), [`EmbeddedSessions`] (a
//!   crash-safe file; the default of `steadfast serve`) or
//!   [`RedisSessions`] (one Redis that several servers share), set with
//!   [`ServerBuilder::session_store`]. With a durable store every ACK and
//!   every outbound message waits for its commit, and a restarted server
//!   resumes each session (see the [`sessions`] module).
//! - Other clients get **plain mode**: messages pass unchanged.
//! - The application sees exactly-once, in-order messages through a
//!   [`Handler`], and reaches peers, rooms or everyone through a
//!   [`ServerHandle`]. Built in: [`Echo`] (the default) and [`Rooms`].
//! - The same port answers `GET /healthz` and `GET /metrics` (Prometheus text).
//! - With [`ServerConfig::tls`] it serves `wss://` (rustls, ring), and can
//!   require client certificates from a given CA (mTLS).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use steadfast_server::{Rooms, Server};
//! let server = Server::builder()
//!     .handler(Rooms)
//!     .bind("127.0.0.1:0".parse().unwrap())
//!     .await?;
//! println!("listening on ws://{}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Close codes the server sends
//!
//! | code | when |
//! |---|---|
//! | 1001 | shutting down (clients reconnect, slowly) |
//! | 1009 | a plain-mode message above the size limit |
//! | 1011 | an unexpected server error (a bug; clients back off) |
//! | 1013 | overloaded: too many connections or sessions (clients back off harder) |
//! | 4001 | the JWT is missing or invalid (clients refresh it once, then stop) |
//! | 4900–4906 | protocol errors and limits, as in docs/PROTOCOL.md |
//! | 4909 | another connection took this session over |

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

mod auth;
pub mod cli;
mod config;
mod conn;
mod debug;
mod faults;
mod handler;
mod http;
mod metrics;
mod registry;
pub mod sessions;
mod tls;

pub use auth::{AuthError, Claims, JwtAuth};
pub use config::{default_max_memory, RoomLimits, ServerConfig};
pub use faults::{FaultRecord, Faults};
pub use handler::{
    Echo, Handler, Peer, PeerId, Rooms, CLOSE_COMMAND, ECHO_PROTOCOL, HEADER_COMMAND,
};
pub use metrics::Metrics;
pub use registry::{ServerError, ServerHandle};
pub use sessions::{
    EmbeddedSessions, MemorySessions, RedisSessions, SessionStore, SessionStoreError,
};
pub use steadfast_core::{Payload, SessionId};
pub use tls::{ClientAuth, TlsConfig, TlsError};
/// The rustls version the server is built with, for
/// [`TlsConfig::from_rustls`].
pub use tokio_rustls::rustls;

use registry::Shared;

/// The close codes the server sends (one table with the client's).
pub use steadfast_core::close;

/// How often a server on a shared store checks for mail it missed a hint of.
const MAIL_CHECK: Duration = Duration::from_secs(1);

/// The session store is swept (old records dropped, unclaimed stored
/// sessions expired) once every this many registry sweeps.
const STORE_SWEEP_EVERY: u64 = 10;

/// The kernel's cap on a listen backlog (Linux), if readable.
fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// This process's open-file soft limit, if known.
fn fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raise this process's open-file soft limit to its hard limit: each
/// connection is a file descriptor, and the usual soft limit (1,024) is
/// far below what a server holds. Returns (before, after); `None` where
/// there is no such limit (or it is unlimited).
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut limit = getrlimit(Resource::Nofile);
        let before = limit.current?;
        if limit.current < limit.maximum || limit.maximum.is_none() {
            limit.current = limit.maximum;
            if setrlimit(Resource::Nofile, limit).is_err() {
                return Some((before, before));
            }
        }
        Some((before, fd_limit().unwrap_or(before)))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Builds a [`Server`].
#[derive(Default)]
pub struct ServerBuilder {
    config: ServerConfig,
    handler: Option<Arc<dyn Handler>>,
    store: Option<Arc<dyn SessionStore>>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The session engine configuration is contradictory.
    #[error("invalid engine configuration: {0}")]
    Config(&'static str),
    /// Binding the address failed.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

impl StartError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            StartError::Config(_) => "ERR_INVALID_CONFIG",
            StartError::Io(_) => "ERR_LISTEN",
        }
    }
}

impl From<StartError> for std::io::Error {
    fn from(error: StartError) -> Self {
        match error {
            StartError::Io(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other),
        }
    }
}

impl ServerBuilder {
    /// All settings at once.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// The application ([`Echo`] unless set).
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Where sessions are kept ([`MemorySessions`] unless set): with a
    /// durable store ([`EmbeddedSessions`]) every session change is
    /// committed before the frames that depend on it go out, and a
    /// restarted server resumes its sessions.
    pub fn session_store(mut self, store: impl SessionStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Validate the settings and bind `addr` (port 0 picks a free port).
    pub async fn bind(self, addr: SocketAddr) -> Result<Server, StartError> {
        self.config
            .engine
            .validate()
            .map_err(|e| StartError::Config(e.0))?;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As TcpListener::bind: a restarted server binds its port at once.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let backlog = self.config.listen_backlog.max(1);
        let listener = socket.listen(backlog)?;
        if let Some(cap) = somaxconn().filter(|cap| *cap < backlog) {
            tracing::info!(
                backlog,
                cap,
                "the listen backlog is capped by net.core.somaxconn"
            );
        }
        let local_addr = listener.local_addr()?;
        let admin = match self.config.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let handler = self.handler.unwrap_or_else(|| Arc::new(Echo));
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemorySessions::new()));
        Ok(Server {
            listener,
            local_addr,
            admin,
            shared: Shared::new(self.config, handler, store),
        })
    }
}

/// A bound, not yet running, server.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// `/metrics` and `/healthz` for the operator (`admin_listen`).
    admin: Option<TcpListener>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Settings, handler and then [`ServerBuilder::bind`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// An echo server with default settings on `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Server> {
        Ok(Server::builder().bind(addr).await?)
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address ([`ServerConfig::admin_listen`]).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// `ws://ADDR`, or `wss://ADDR` when TLS is on.
    pub fn url(&self) -> String {
        let scheme = if self.shared.config.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}", self.local_addr)
    }

    /// A handle to reach peers and read metrics (works before and after `run`).
    pub fn handle(&self) -> ServerHandle {
        Shared::handle(&self.shared)
    }

    /// Serve until `shutdown` completes; then stop accepting, close every
    /// connection with 1001 (going away) and wait up to
    /// [`ServerConfig::shutdown_grace`] for the closing handshakes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        // At warning level, so the warnings an operator sees by default
        // say which node (and, below, which connection) they come from.
        let span = tracing::warn_span!("node", id = %self.shared.config.node_id);
        self.run_in(shutdown, span.clone()).instrument(span).await;
    }

    async fn run_in(self, shutdown: impl Future<Output = ()>, span: tracing::Span) {
        let shared = self.shared;
        let admin = self.admin.map(|listener| {
            tokio::spawn(conn::admin(shared.clone(), listener).instrument(span.clone()))
        });
        // Ends with the server.
        struct Abort(Option<tokio::task::JoinHandle<()>>);
        impl Drop for Abort {
            fn drop(&mut self) {
                if let Some(task) = self.0.take() {
                    task.abort();
                }
            }
        }
        let _admin = Abort(admin);
        tracing::info!(addr = %self.local_addr, store = shared.store.name(), "serving");
        // A store this server owns alone: every session as before a restart.
        let restoring = shared.clone();
        let restored = tokio::task::spawn_blocking(move || {
            restoring.count_stored();
            restoring.restore_sessions()
        })
        .await
        .unwrap_or(0);
        if restored > 0 {
            tracing::info!(restored, "sessions restored from the store");
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let sweep_every = (shared.config.session_ttl / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut sweep = tokio::time::interval(sweep_every);
        let mut sweeps = 0u64;
        let forget_every = shared.config.faults.forget_sessions_every;
        let mut forget = tokio::time::interval(forget_every.unwrap_or(Duration::from_secs(3600)));
        forget.tick().await; // the first tick is immediate
        let handle = Shared::handle(&shared);
        // A store shared with other servers: messages they post for peers
        // held here arrive in inboxes, announced by hints and found by a
        // check every second (a hint may be lost).
        let shared_store = shared.committer.is_some() && shared.store.shared();
        let (mail_tx, mut mail) = tokio::sync::mpsc::channel::<SessionId>(1024);
        if shared_store {
            shared.store.watch_mail(Box::new(move |session| {
                if session != SessionId([0; 16]) {
                    // Full: the periodic check finds it.
                    let _ = mail_tx.try_send(session);
                }
                !mail_tx.is_closed()
            }));
        }
        let mut mail_check = tokio::time::interval(MAIL_CHECK);
        let mut accept_failures = 0u64;
        // At --max-connections (said once per streak).
        let mut refusing = false;
        let mut last_memory_check = std::time::Instant::now();
        let mut accepted_total = 0u64;
        shared.metrics.fd_limit.store(
            fd_limit().unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
        shared.metrics.memory_budget.store(
            shared.config.max_memory,
            std::sync::atomic::Ordering::Relaxed,
        );
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(session) = mail.recv(), if shared_store => {
                    // Every hint already here: one read, one commit.
                    let mut sessions = vec![session];
                    while let Ok(more) = mail.try_recv() {
                        sessions.push(more);
                    }
                    shared.metrics.add(&shared.metrics.mail_hints, sessions.len() as u64);
                    let shared = shared.clone();
                    tokio::spawn(async move { shared.pull_many(sessions).await }.instrument(span.clone()));
                }
                _ = mail_check.tick(), if shared_store => {
                    let shared = shared.clone();
                    tokio::spawn(async move { shared.pull_all().await }.instrument(span.clone()));
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        if accept_failures > 0 {
                            tracing::warn!(failures = accept_failures, "accepting connections again");
                            accept_failures = 0;
                        }
                        // Counted from here, whatever stage it reaches (a
                        // slow TLS or HTTP handshake holds a descriptor too).
                        let metrics = &shared.metrics;
                        let open = metrics.sockets_open.load(std::sync::atomic::Ordering::Relaxed);
                        if open as usize >= shared.config.max_connections {
                            metrics.inc(&metrics.connections_refused);
                            if !refusing {
                                refusing = true;
                                tracing::warn!(
                                    max = shared.config.max_connections,
                                    "at --max-connections: new connections are refused (503)"
                                );
                            }
                            // One write that fits the socket's buffer, no wait.
                            let _ = stream.try_write(OVERLOADED_RESPONSE);
                            continue;
                        }
                        if refusing {
                            refusing = false;
                            tracing::warn!("below --max-connections: accepting again");
                        }
                        let _ = stream.set_nodelay(true);
                        let socket = conn::Socket::counted(shared.clone());
                        // Every line a connection logs names it: a trace
                        // id (this node's count of accepted connections)
                        // and the remote address; /debug/connections too.
                        accepted_total += 1;
                        let accept = conn::accept(shared.clone(), stream, (accepted_total, remote), stop_rx.clone());
                        let conn = tracing::warn_span!(parent: &span, "conn", id = accepted_total, %remote);
                        connections.spawn(
                            async move {
                                accept.await;
                                drop(socket);
                            }
                            .instrument(conn),
                        );
                    }
                    // Out of file descriptors and the like: said once per
                    // streak and counted; wait, then try again (the kernel
                    // keeps the connections queued meanwhile).
                    Err(error) => {
                        shared.metrics.inc(&shared.metrics.accept_errors);
                        if accept_failures == 0 {
                            let limit = fd_limit().map_or_else(|| "?".to_owned(), |n| n.to_string());
                            tracing::error!(
                                %error,
                                open = shared.metrics.connections_open.load(std::sync::atomic::Ordering::Relaxed),
                                fd_limit = %limit,
                                "cannot accept connections (new ones wait in the kernel's queue until some close)"
                            );
                        }
                        accept_failures += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = shared.memory_pressure.notified() => {
                    // Over the budget between sweeps: at most every 20 ms.
                    if last_memory_check.elapsed() >= Duration::from_millis(20) {
                        last_memory_check = std::time::Instant::now();
                        shared.check_memory();
                    }
                }
                _ = sweep.tick() => {
                    last_memory_check = std::time::Instant::now();
                    shared.check_memory();
                    for peer in shared.expire_sessions() {
                        shared.guarded("on_session_expired", peer, || {
                            shared.handler.on_session_expired(&handle, peer);
                        });
                    }
                    sweeps += 1;
                    if sweeps.is_multiple_of(STORE_SWEEP_EVERY) {
                        let shared = shared.clone();
                        // The store's own sweep blocks (a write transaction).
                        let _ = tokio::task::spawn_blocking(move || shared.sweep_store()).await;
                    }
                }
                _ = forget.tick(), if forget_every.is_some() => {
                    // Their records stay, as when sessions expire, unless
                    // the fault drops everything.
                    let keep_records = !shared.config.faults.forget_records;
                    let sessions = shared.forget_all_sessions(keep_records);
                    shared.log_fault(faults::FaultRecord::ForgetSessions { sessions });
                }
                // Reap finished connections so the set does not grow forever.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(mail);
        drop(self.listener);
        let _ = stop_tx.send(true);
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(shared.config.shutdown_grace, drain)
            .await
            .is_err()
        {
            connections.abort_all();
        }
    }
}

/// What a connection past `--max-connections` is told before it is closed.
const OVERLOADED_RESPONSE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
