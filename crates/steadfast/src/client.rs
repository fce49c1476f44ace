//! The reliable client: [`Client`], built with [`ClientBuilder`].

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::oneshot;
use futures::lock::Mutex as AsyncMutex;
use steadfast_core::{
    AckConfig, BackoffConfig, ClosePolicy, Config, DisconnectReason, FailReason, HeartbeatConfig,
    Hint, Limits, Mode, OutboxConfig, Overflow, Payload, Reliability, State, Stats, StopReason,
    SuspendReason,
};

use crate::driver::{self, Command, SendRequest};
use crate::ledger::Ledger;
use crate::rt::{self, BoxFuture, MaybeSend, MaybeSync};
use crate::store::Store;
use crate::transport::{validate_close, ConnectOptions};
use crate::watch::Watch;
use crate::Error;

/// What `send` does when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SendOverflow {
    /// Wait until acknowledgements make room (backpressure). The default.
    #[default]
    Wait,
    /// Fail at once with `ERR_QUEUE_FULL`.
    Reject,
    /// Drop the oldest message not yet sent (its receipt fails with
    /// `ERR_DROPPED`) to make room.
    DropOldest,
}

/// Where the token from the [auth hook](ClientBuilder::auth) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthPlacement {
    /// An HTTP header, e.g. `Authorization` (with the hook returning
    /// `Bearer …`).
    Header(String),
    /// A query parameter, e.g. `token` (the reference server reads `?token=`).
    Query(String),
    /// A subprotocol entry made of this prefix and the token, e.g.
    /// `bearer.` (what browsers can send; the reference server reads it).
    Subprotocol(String),
}

/// The auth hook's result: a token, or why there is none.
pub type AuthResult = Result<String, String>;

pub(crate) type AuthHook = rt::SharedHook<AuthResult>;

#[derive(Clone)]
pub(crate) struct Auth {
    pub(crate) placement: AuthPlacement,
    pub(crate) hook: AuthHook,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]: every option of the engine, the transport and the
/// store. Start with [`Client::builder`].
pub struct ClientBuilder {
    pub(crate) url: String,
    pub(crate) config: Config,
    pub(crate) connect: ConnectOptions,
    pub(crate) store: Option<Box<dyn Store>>,
    pub(crate) auth: Option<Auth>,
    pub(crate) overflow: SendOverflow,
    pub(crate) seed: Option<u64>,
    pub(crate) max_unread: usize,
    pub(crate) send_buffer: usize,
    pub(crate) memory_fallback: bool,
    pub(crate) progress_events: bool,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("config", &self.config)
            .field("connect", &self.connect)
            .field("durable", &self.store.as_ref().map(|s| s.is_durable()))
            .field("auth", &self.auth)
            .field("overflow", &self.overflow)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    fn new(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            config: Config::default(),
            connect: ConnectOptions::default(),
            store: None,
            auth: None,
            overflow: SendOverflow::Wait,
            seed: None,
            max_unread: 1024,
            send_buffer: 1024 * 1024,
            memory_fallback: false,
            progress_events: false,
        }
    }

    /// The whole engine configuration at once (the methods below set parts).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// `Auto` (the default: reliable when the server accepts
    /// `steadfast.v1`, plain otherwise), `Required` or `Off`.
    pub fn reliability(mut self, reliability: Reliability) -> Self {
        self.config.reliability = reliability;
        self
    }

    /// Reconnect timing: first delay, cap, fast retry, when a connection
    /// counts as healthy, connect timeout.
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Give up on a connect (TCP, TLS, upgrade and handshake) after this.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.backoff.connect_timeout_ms = millis(timeout);
        self
    }

    /// What server close codes mean (reconnect, refresh auth, stop).
    pub fn close_policy(mut self, policy: ClosePolicy) -> Self {
        self.config.close_policy = policy;
        self
    }

    /// Outbox bounds: messages, bytes, TTL, bytes in flight.
    pub fn outbox(mut self, outbox: OutboxConfig) -> Self {
        self.config.outbox = outbox;
        self
    }

    /// What `send` does when the outbox is full (default: wait).
    pub fn overflow(mut self, overflow: SendOverflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Receive limits: message size, reorder window, buffered bytes,
    /// partial chunked messages, timeouts.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Messages above this many bytes are sent in chunks (reliable mode).
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.config.chunk_size = bytes;
        self
    }

    /// ACK coalescing.
    pub fn ack(mut self, ack: AckConfig) -> Self {
        self.config.ack = ack;
        self
    }

    /// Application-level heartbeat (`None` turns it off).
    pub fn heartbeat(mut self, heartbeat: Option<HeartbeatConfig>) -> Self {
        self.config.heartbeat = heartbeat;
        self
    }

    /// Where queued messages are kept. Unless set, only in the client's
    /// memory (`send` then returns without waiting for the client task,
    /// while the outbox has room); a [`MemoryStore`](crate::store::MemoryStore) outlives the client
    /// (another client given a clone resumes from it). Use a
    /// [`DurableStore`](crate::store::DurableStore) for messages that must
    /// survive a crash.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Box::new(store));
        self
    }

    /// Add a header to every handshake (native; browsers cannot send
    /// headers, so on wasm32 `connect` refuses it with `ERR_INVALID_OPTION`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.connect.headers.push((name.into(), value.into()));
        self
    }

    /// Also offer this subprotocol (after `steadfast.v1` in reliable mode).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.connect.protocols.push(protocol.into());
        self
    }

    /// Call `hook` before every connect and reconnect, and put the token it
    /// returns where `placement` says. After the server closes with an
    /// auth code (4001, 1008 by default) the hook is called once more; if
    /// that token is refused too, or the hook fails, the client stops with
    /// `ERR_AUTH_FAILED` instead of retrying in a loop.
    pub fn auth<F, Fut>(mut self, placement: AuthPlacement, hook: F) -> Self
    where
        F: Fn() -> Fut + MaybeSend + MaybeSync + 'static,
        Fut: Future<Output = AuthResult> + MaybeSend + 'static,
    {
        let hook: AuthHook = Arc::new(move || Box::pin(hook()));
        self.auth = Some(Auth { placement, hook });
        self
    }

    /// Seed of the reconnect jitter. Drawn from the OS unless set; tests
    /// set it. It never decides the session id: a new session's id comes
    /// from the OS CSPRNG (`crypto.getRandomValues` on wasm).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Bytes the socket may hold unsent (default 1 MiB). Above this, queued
    /// messages wait in the outbox, where they are bounded, persisted and
    /// counted, until the socket's buffer drains below half of it (the
    /// browser's `bufferedAmount`; natively, what the writer has not yet
    /// flushed). ACKs and pings are never held back.
    pub fn send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = bytes.max(1);
        self
    }

    /// Messages received but not yet read with [`Client::next_event`]
    /// before the client stops reading the socket (the server then holds
    /// the rest). Default 1024.
    pub fn max_unread(mut self, messages: usize) -> Self {
        self.max_unread = messages.max(1);
        self
    }

    /// If the store cannot load at start (IndexedDB refused in a private
    /// mode, or missing), start without it: messages are kept in memory
    /// only and an `ERR_STORE` event says so, as after a failed write. Off
    /// by default: `connect` then fails with `ERR_STORE`.
    pub fn memory_fallback(mut self, fall_back: bool) -> Self {
        self.memory_fallback = fall_back;
        self
    }

    /// Report each message's progress as events: [`ClientEvent::Transmitted`]
    /// when it goes on the wire and [`ClientEvent::Settled`] with its
    /// outcome, for every message including restored ones. What a UI
    /// showing "queued → sent → acknowledged" per message needs. Off by
    /// default (two events per message).
    pub fn progress_events(mut self, on: bool) -> Self {
        self.progress_events = on;
        self
    }

    /// Load the store, start the client and begin connecting. Fails with
    /// `ERR_INVALID_URL`, `ERR_INVALID_OPTION`, `ERR_INVALID_CONFIG`,
    /// `ERR_STORE` or (wasm32, with no `WebSocket` anywhere)
    /// `ERR_NO_WEBSOCKET`; never because of the network (that is retried).
    ///
    /// Needs a tokio runtime natively; on wasm32 it runs on the page's,
    /// worker's or Node.js's event loop.
    pub async fn connect(mut self) -> Result<Client, Error> {
        crate::transport::validate_url(&self.url)?;
        // What this target's transport cannot do fails now, not on every retry.
        let header_auth = matches!(
            &self.auth,
            Some(Auth {
                placement: AuthPlacement::Header(_),
                ..
            })
        );
        crate::transport::check_options(&self.connect, header_auth)?;
        self.config.can_refresh_auth = self.auth.is_some();
        if self.overflow == SendOverflow::DropOldest {
            self.config.outbox.overflow = Overflow::DropOldest;
        } else {
            self.config.outbox.overflow = Overflow::Reject;
        }
        self.config
            .validate()
            .map_err(|e| Error::InvalidConfig(e.0.to_owned()))?;
        // No store given: messages live in the engine's outbox only.
        let store = self.store.take();
        let (commands, command_rx) = crate::queue::unbounded();
        let (events_tx, events) = crate::queue::unbounded();
        let shared = Arc::new(Shared::new(&self.config, store.is_none(), self.max_unread));
        let run = driver::start(self, store, command_rx, events_tx, shared.clone()).await?;
        rt::spawn(run);
        Ok(Client {
            commands,
            events: Arc::new(AsyncMutex::new(events)),
            shared,
        })
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Where the client is in its connection lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not started.
    Idle,
    /// Connecting (TCP, TLS, upgrade, handshake).
    Connecting {
        /// Attempts since the last healthy connection (0 first).
        attempt: u32,
    },
    /// Open: messages flow.
    Open {
        /// Reliable (`steadfast.v1`) or plain.
        mode: Mode,
    },
    /// Waiting to reconnect.
    Reconnecting {
        /// The attempt the retry will be.
        attempt: u32,
        /// How long until the retry, when this state began.
        retry_in: Duration,
        /// When the retry is due, in milliseconds since the Unix epoch.
        retry_at_unix_ms: u64,
        /// What ended the last connection.
        reason: DisconnectReason,
    },
    /// Waiting without retrying (offline, or for fresh credentials).
    Suspended {
        /// Why.
        reason: SuspendReason,
    },
    /// Stopped: closed by the application, or rejected by the server.
    /// [`Client::reconnect`] starts again.
    Closed {
        /// Why.
        reason: StopReason,
    },
}

impl ConnectionState {
    pub(crate) fn from_core(state: &State, now_ms: u64, wall_ms: u64) -> ConnectionState {
        match state {
            State::Idle => ConnectionState::Idle,
            State::Connecting { attempt } => ConnectionState::Connecting { attempt: *attempt },
            State::Open { mode } => ConnectionState::Open { mode: *mode },
            State::BackingOff {
                attempt,
                next_retry_at,
                reason,
            } => {
                let wait = next_retry_at.saturating_sub(now_ms);
                ConnectionState::Reconnecting {
                    attempt: *attempt,
                    retry_in: Duration::from_millis(wait),
                    retry_at_unix_ms: wall_ms.saturating_add(wait),
                    reason: reason.clone(),
                }
            }
            State::Suspended { reason } => ConnectionState::Suspended { reason: *reason },
            State::Closed { reason } => ConnectionState::Closed {
                reason: reason.clone(),
            },
        }
    }

    /// Open, in either mode.
    pub fn is_open(&self) -> bool {
        matches!(self, ConnectionState::Open { .. })
    }
}

/// What the client tells the application, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A message from the server: exactly once and in order in reliable mode.
    Message(Payload),
    /// The connection state changed.
    State(ConnectionState),
    /// The server no longer knew the session: a new one began and the
    /// outbox was sent again in it. Messages the server had sent but not
    /// yet delivered are gone; re-fetch what you need.
    ResyncRequired,
    /// The server skipped this many messages it will never send (they
    /// expired in its outbox).
    Skipped(u64),
    /// Something went wrong; the client already acted on it (the
    /// connection was closed and will be retried, or the store fell back
    /// to memory).
    Error(Error),
    /// The client started with these messages in its store (a restart or a
    /// page reload before their ACK): they are queued again under new ids,
    /// oldest first. The first event, and only when there are any.
    Restored(Vec<QueuedMessage>),
    /// With [`ClientBuilder::progress_events`]: the message with this id
    /// went on the wire and awaits its ACK (reliable mode; again after a
    /// reconnect that resends it).
    Transmitted(u64),
    /// With [`ClientBuilder::progress_events`]: the outcome of the message
    /// with this id, also for restored messages that no [`Receipt`] waits
    /// on.
    Settled {
        /// The message's id ([`Receipt::id`], or from `Restored`).
        id: u64,
        /// What its receipt resolves to.
        outcome: Result<Delivery, Error>,
    },
}

/// A message in the outbox (see [`ClientEvent::Restored`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueuedMessage {
    /// Its id within this client, as in [`ClientEvent::Settled`].
    pub id: u64,
    /// What was sent.
    pub payload: Payload,
}

/// How a sent message ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The server's application has it (reliable mode).
    Acked,
    /// It was handed to the socket (plain mode, where no ACK exists).
    Sent,
}

/// A queued message. Await it (or [`Receipt::acked`]) for the outcome.
#[must_use = "a receipt does nothing unless awaited; drop it if the outcome does not matter"]
pub struct Receipt {
    id: u64,
    durable: bool,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipt")
            .field("id", &self.id)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        self.shared.ledger.release(self.id);
    }
}

impl Receipt {
    /// The message's number, unique within this client.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the message was on disk when `send` returned (false with
    /// the memory store, or after the durable store failed).
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// Wait for the outcome: `Acked` (reliable) or `Sent` (plain); an
    /// error if the message expired, was dropped for room, or the client
    /// went away with it unsent (`ERR_CLOSED`; a durable store still has it).
    pub async fn acked(self) -> Result<Delivery, Error> {
        futures::future::poll_fn(|cx| self.shared.ledger.poll(self.id, cx)).await
    }
}

impl IntoFuture for Receipt {
    type Output = Result<Delivery, Error>;
    type IntoFuture = BoxFuture<'static, Result<Delivery, Error>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.acked())
    }
}

/// Counters, read with [`Client::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Messages in the outbox (waiting to be sent or acknowledged).
    pub queued: usize,
    /// Their payload bytes.
    pub queued_bytes: usize,
    /// `send` calls waiting for room in the outbox.
    pub waiting_sends: usize,
    /// Messages received and not yet read.
    pub unread: usize,
    /// Whether the store is durable (false after it failed and the client
    /// fell back to memory).
    pub durable: bool,
    /// The engine's counters: frames, bytes, messages, resends,
    /// duplicates, ACKs, chunks, connects, resumes, resyncs, errors, RTT.
    pub engine: Stats,
}

impl ClientStats {
    /// Reconnects: connection attempts after the first.
    pub fn reconnects(&self) -> u64 {
        self.engine.connects.saturating_sub(1)
    }
}

pub(crate) struct Shared {
    pub(crate) state: Watch<ConnectionState>,
    pub(crate) stats: Mutex<ClientStats>,
    /// Messages handed to the events queue and not yet read by the
    /// application (`next_event`): what is not its own yet.
    pub(crate) unread: AtomicUsize,
    /// The driver stops reading the socket at this many unread messages
    /// (`next_event` wakes it when it drops below).
    pub(crate) max_unread: usize,
    /// An ACK waits for the application to read messages: the next read
    /// wakes the driver (which then tells the engine).
    pub(crate) wake_on_read: AtomicBool,
    /// Receipt numbers and outcomes. Its lock is held while a send takes
    /// its number, reserves room and queues its command.
    pub(crate) ledger: Ledger,
    /// Room in the outbox taken by sends the driver has not yet offered to
    /// the engine (messages, bytes).
    reserved: AtomicUsize,
    reserved_bytes: AtomicUsize,
    /// The outbox as the driver last counted it (messages, bytes).
    queued: AtomicUsize,
    queued_bytes: AtomicUsize,
    /// No store: a `send` with certain room returns without waiting for
    /// the driver (nothing is written before "queued").
    fast: bool,
    outbox: OutboxConfig,
    max_size: u64,
}

impl Shared {
    fn new(config: &Config, fast: bool, max_unread: usize) -> Shared {
        Shared {
            state: Watch::new(ConnectionState::Idle),
            stats: Mutex::new(ClientStats::default()),
            unread: AtomicUsize::new(0),
            max_unread,
            wake_on_read: AtomicBool::new(false),
            ledger: Ledger::new(),
            reserved: AtomicUsize::new(0),
            reserved_bytes: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            fast,
            outbox: config.outbox.clone(),
            max_size: config.max_send_size(),
        }
    }

    pub(crate) fn set_stats(&self, stats: ClientStats) {
        *rt::lock(&self.stats) = stats;
    }

    /// Take room for a `size`-byte send until the driver offered it to the
    /// engine; true if the send may return at once: there is no store,
    /// and the outbox has room for it and for every send ahead of it.
    fn reserve(&self, size: usize) -> bool {
        let messages = self.reserved.fetch_add(1, Ordering::SeqCst) + 1;
        let bytes = self
            .reserved_bytes
            .fetch_add(size, Ordering::SeqCst)
            .saturating_add(size);
        self.fast
            && self.outbox.fits(
                self.queued.load(Ordering::SeqCst) + messages,
                self.queued_bytes
                    .load(Ordering::SeqCst)
                    .saturating_add(bytes),
            )
    }

    /// The driver offered a reserved send to the engine (or dropped it).
    pub(crate) fn release(&self, size: usize) {
        self.reserved.fetch_sub(1, Ordering::SeqCst);
        self.reserved_bytes.fetch_sub(size, Ordering::SeqCst);
    }

    /// The driver's count of the outbox; set before a reservation is
    /// released, so a reservation check never sees room that is not there.
    pub(crate) fn set_queued(&self, messages: usize, bytes: usize) {
        self.queued.store(messages, Ordering::SeqCst);
        self.queued_bytes.store(bytes, Ordering::SeqCst);
    }
}

/// A steadfast client: a WebSocket connection that reconnects by itself
/// and, in reliable mode, delivers every message exactly once and in
/// order in both directions.
///
/// Cheap to clone; every clone drives the same connection, from any task.
/// When the last clone is dropped the client closes (queued messages stay
/// in the store).
///
/// ```no_run
/// # async fn demo() -> Result<(), steadfast::Error> {
/// use steadfast::{Client, ClientEvent};
/// let client = Client::builder("ws://127.0.0.1:9000").connect().await?;
/// let receipt = client.send("hello").await?; // queued (on disk with a durable store)
/// receipt.await?;                              // the server's application has it
/// while let Some(event) = client.next_event().await {
///     if let ClientEvent::Message(message) = event {
///         println!("{message:?}");
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    commands: crate::queue::Sender<Command>,
    events: Arc<AsyncMutex<crate::queue::Receiver<ClientEvent>>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Options for a client of `url` (`ws://` or `wss://`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// Queue a message. Returns once it is in the outbox — on disk, with a
    /// durable store — with a [`Receipt`] that resolves when the server
    /// acknowledges it. When the outbox is full it waits, fails or drops
    /// the oldest, as [`ClientBuilder::overflow`] says.
    ///
    /// A `send` waiting for room needs ACKs, and ACKs arrive behind the
    /// messages received: once [`ClientBuilder::max_unread`] of them wait
    /// unread, the client stops reading the socket. So keep calling
    /// [`Client::next_event`] while a `send` waits — from another task, or
    /// in the same `select!` — never only after it returns.
    ///
    /// Errors: `ERR_MESSAGE_TOO_LARGE`, `ERR_QUEUE_FULL` (overflow
    /// `Reject`), `ERR_CLOSED` (the client task is gone).
    pub async fn send(&self, message: impl Into<Payload>) -> Result<Receipt, Error> {
        let payload = message.into();
        let size = payload.len();
        let shared = &self.shared;
        if size as u64 > shared.max_size {
            return Err(Error::MessageTooLarge {
                size: size as u64,
                limit: shared.max_size,
            });
        }
        // With no store and certain room, nothing can refuse the message
        // or has to be written first: return without a round trip to the
        // driver. Reserving and queueing the command happen under one
        // lock, so the driver meets sends in the order they reserved: a
        // send found full cannot overtake one that counted on the room.
        let (id, answer) = {
            let mut ledger = shared.ledger.lock();
            let id = ledger.open();
            let (queued, answer) = if shared.reserve(size) {
                (None, None)
            } else {
                let (queued, answer) = oneshot::channel();
                (Some(queued), Some(answer))
            };
            let request = SendRequest {
                id,
                payload,
                queued,
            };
            if self.commands.send(Command::Send(request)).is_err() {
                ledger.abandon(id);
                shared.release(size);
                return Err(Error::Closed);
            }
            (id, answer)
        };
        // From here the slot is the receipt's: dropping this future (or
        // failing) releases it.
        let mut receipt = Receipt {
            id,
            durable: false,
            shared: Arc::clone(shared),
        };
        if let Some(answer) = answer {
            receipt.durable = answer.await.unwrap_or(Err(Error::Closed))?;
        }
        Ok(receipt)
    }

    /// The next event, or `None` once the client task has ended.
    ///
    /// A message is the application's once this returns it: only then
    /// does the client acknowledge it (and, with a durable store, record
    /// it as delivered). Messages received but not yet returned here are
    /// received again after a crash, never lost.
    pub async fn next_event(&self) -> Option<ClientEvent> {
        let event = self.events.lock().await.next().await;
        if matches!(event, Some(ClientEvent::Message(_))) {
            // SeqCst with the driver's `wake_on_read` store and `unread`
            // load: either it sees this read, or this sees its flag.
            let unread = self.shared.unread.fetch_sub(1, Ordering::SeqCst);
            // The driver stopped reading the socket at `max_unread` (or
            // is about to), or an ACK waits for this read: wake it. Else
            // it needs no word (one wake-up per message would cost).
            if unread >= self.shared.max_unread
                || self.shared.wake_on_read.swap(false, Ordering::SeqCst)
            {
                let _ = self.commands.send(Command::Read);
            }
        }
        event
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.shared.state.get().1
    }

    /// Wait until the state satisfies `done`, and return it.
    pub async fn wait_for_state(
        &self,
        mut done: impl FnMut(&ConnectionState) -> bool,
    ) -> ConnectionState {
        let (mut version, mut state) = self.shared.state.get();
        while !done(&state) {
            (version, state) = self.shared.state.changed(version).await;
        }
        state
    }

    /// Counters: queue depth and bytes, resends, duplicates, RTT, reconnects.
    pub fn stats(&self) -> ClientStats {
        *rt::lock(&self.shared.stats)
    }

    /// Close the connection with `code` (1000 or 3000–4999) and `reason`,
    /// and stop reconnecting. Queued messages stay queued (and stored);
    /// [`Client::reconnect`] starts again. A closed client sets no timers:
    /// queued messages' TTLs are checked again on reconnect. Returns once the store has
    /// everything and the close frame is on its way.
    pub async fn close(&self, code: u16, reason: &str) -> Result<(), Error> {
        validate_close(code, reason)?;
        let (done, closed) = oneshot::channel();
        self.commands
            .send(Command::Close(code, reason.to_owned(), done))
            .map_err(|_| Error::Closed)?;
        closed.await.map_err(|_| Error::Closed)
    }

    /// Connect again now: drops the current connection (if any) and skips
    /// any backoff wait. Works in every state, also after `close` or after
    /// the server rejected the client, and after the machine slept.
    pub fn reconnect(&self) {
        let _ = self.commands.send(Command::Reconnect);
    }

    /// Tell the client about its environment: `Offline` closes and waits,
    /// `Online` reconnects at once, `Visible` checks the connection.
    pub fn hint(&self, hint: Hint) {
        let _ = self.commands.send(Command::Hint(hint));
    }
}

/// Why a failed receipt failed, as an [`Error`].
pub(crate) fn failed(reason: FailReason, possibly_delivered: bool) -> Error {
    match reason {
        FailReason::Expired => Error::Expired { possibly_delivered },
        FailReason::Dropped => Error::Dropped { possibly_delivered },
        FailReason::Closed => Error::Closed,
        FailReason::TooLarge { size, limit } => Error::MessageTooLarge { size, limit },
    }
}
