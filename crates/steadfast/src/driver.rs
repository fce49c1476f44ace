//! The driver: one task that owns the engine, the store and the socket,
//! feeds the engine its inputs and carries out its outputs.
//!
//! Order is everything here:
//! - store operations are applied (one batch, one commit) before any frame
//!   that follows them goes out, and before `send` reports "queued";
//! - the engine is never borrowed while application code runs: events are
//!   collected during a drain and handed over after it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use futures::channel::oneshot;
use futures::FutureExt;
use steadfast_core::close;
use steadfast_core::codec::SUBPROTOCOL;
use steadfast_core::record::StoredSession;
use steadfast_core::{
    Engine, Event, Hint, Output, Payload, PersistOp, SendError, SessionId, State,
};
use tracing::Instrument;

use crate::client::{
    failed, Auth, AuthPlacement, ClientBuilder, ClientEvent, ClientStats, ConnectionState,
    Delivery, QueuedMessage, SendOverflow, Shared,
};
use crate::ledger::Outcome;
use crate::queue;
use crate::rt::{self, BoxFuture};
use crate::store::{Snapshot, Store, StoreError};
use crate::transport::{ConnectOptions, Message, Socket, SocketEvent};
use crate::Error;

/// Answers a `send` that waits until its message is queued (stored): with
/// whether it is on disk, or why it was refused.
pub(crate) type Queued = oneshot::Sender<Result<bool, Error>>;

/// A message from `Client::send`, with the receipt it was given.
pub(crate) struct SendRequest {
    pub(crate) id: u64,
    pub(crate) payload: Payload,
    /// `None`: `send` already returned (the fast path: no store to wait
    /// for, room reserved); an error then goes to the receipt.
    pub(crate) queued: Option<Queued>,
}

/// What the application asks of the driver.
pub(crate) enum Command {
    Send(SendRequest),
    Close(u16, String, oneshot::Sender<()>),
    Reconnect,
    Hint(Hint),
    /// The application read a message (the driver may read again, or
    /// acknowledge what was read).
    Read,
}

/// Commands taken per wake-up before the engine is drained (the group
/// commit's batch).
const MAX_BATCH: usize = 4096;

/// Socket events taken per wake-up, at most, before the engine is drained.
const SOCKET_BATCH: usize = 256;

/// How often a full send buffer is looked at again (nothing reports it
/// draining: not `WebSocket`, not the native writer).
const SEND_BUFFER_POLL_MS: u64 = 5;
/// Yields after a durable commit that released several senders (see
/// `Driver::gather`): 1, 2, 4, 8 gave 12.2, 10.1, 8.6, 8.9 µs per message.
const GATHER_YIELDS: usize = 4;

struct Driver {
    engine: Engine,
    store: Option<Box<dyn Store>>,
    durable: bool,
    url: String,
    connect: ConnectOptions,
    auth: Option<Auth>,
    overflow: SendOverflow,
    send_buffer: usize,
    /// Report `Transmitted` and `Settled` events.
    progress: bool,
    /// The socket's buffer went over `send_buffer`: a timer to look again.
    send_blocked: Option<BoxFuture<'static, ()>>,
    commands: queue::Receiver<Command>,
    events: queue::Sender<ClientEvent>,
    shared: Arc<Shared>,
    socket: Option<Socket>,
    connecting: Option<BoxFuture<'static, Result<Socket, Error>>>,
    refreshing: Option<BoxFuture<'static, Result<String, String>>>,
    fresh_token: Option<String>,
    timer: Option<(u64, BoxFuture<'static, ()>)>,
    /// Outcomes to hand to the receipts at the end of a dispatch.
    settled: Vec<(u64, Outcome)>,
    /// Sends the engine took whose store write is not yet committed.
    unflushed: Vec<Queued>,
    /// Sends waiting for room in the outbox (`SendOverflow::Wait`).
    waiting: VecDeque<SendRequest>,
    /// Store operations not yet applied.
    batch: Vec<PersistOp>,
    /// Events to hand over after the drain.
    deferred: Vec<Event>,
    /// The close the application asked for, used for the engine's Disconnect.
    close_as: Option<(u16, String)>,
    closed_waiters: Vec<oneshot::Sender<()>>,
    /// Hints from the page's lifecycle events (wasm32), and the listeners.
    hints: Option<(rt::Lifecycle, rt::Hints)>,
    released: usize,
    /// Messages handed to the events queue, and of those the application
    /// had read when the engine last heard (`handle_taken`).
    dispatched: usize,
    reported_read: usize,
    /// The socket had nothing more to read after the last events taken:
    /// once they are handed over, the engine hears the burst ended.
    read_burst_ended: bool,
    /// The driver clock and wall clock, read once per wake-up (and after
    /// each store commit) rather than once per message: a burst of 4096
    /// sends read the clock 8192 times, 8% of a client's CPU.
    now: u64,
    wall: u64,
}

enum Wake {
    Commands(Vec<Command>, bool),
    Connected(Result<Socket, Error>),
    Refreshed(Result<String, String>),
    Hint(Option<Hint>),
    Socket(Option<SocketEvent>),
    Timer,
    /// Time to look at the socket's send buffer again.
    SendBuffer,
}

/// Load the store, build the engine, and return the driver's task.
pub(crate) async fn start(
    builder: ClientBuilder,
    store: Option<Box<dyn Store>>,
    commands: queue::Receiver<Command>,
    events: queue::Sender<ClientEvent>,
    shared: Arc<Shared>,
) -> Result<impl std::future::Future<Output = ()>, Error> {
    let persist = store.is_some();
    let (store, snapshot, load_failed) = match store {
        None => (None, Snapshot::default(), None),
        Some(mut store) => match store.load().await {
            Ok(snapshot) => (Some(store), snapshot, None),
            // The same fallback as a failed write: no store, memory only.
            Err(StoreError(reason)) if builder.memory_fallback => {
                (None, Snapshot::default(), Some(reason))
            }
            Err(StoreError(reason)) => return Err(Error::Store(reason)),
        },
    };
    let seed = builder.seed.unwrap_or_else(rt::random_seed);
    let now = rt::now_ms();
    let restored = snapshot.messages.len();
    let unreadable = snapshot.unreadable;
    // A new session's id comes from the OS CSPRNG, not from the seed: two
    // clients given one seed (or a guessable one) never share a session.
    // Its resume secret too: the server resumes the session only for a
    // HELLO that carries it (a session stored before secrets gets one now).
    let session = snapshot.session.map(|mut stored| {
        if stored.secret.is_none() {
            stored.secret = rt::os_random_16();
        }
        stored
    });
    let session = session.or_else(|| {
        let id = rt::os_random_16()?;
        Some(StoredSession {
            secret: rt::os_random_16(),
            session: SessionId(id),
            welcomed: false,
            inbound_delivered: 0,
            // Messages kept without a session record stay, in the new one.
            next_seq: snapshot
                .messages
                .iter()
                .map(|m| m.seq)
                .max()
                .map_or(1, |s| s + 1),
        })
    });
    let (mut engine, receipts) = Engine::restore(
        builder.config,
        seed,
        now,
        rt::wall_ms(),
        session,
        snapshot.messages,
    )
    .map_err(|e| Error::InvalidConfig(e.0.to_owned()))?;
    // Messages restored from the store have no `send` waiting on them:
    // the application learns of them from `Restored` (and, with progress
    // events, their outcome from `Settled`).
    let restored_messages: Vec<QueuedMessage> = if receipts.is_empty() {
        Vec::new()
    } else {
        engine
            .queued_messages()
            .map(|(receipt, binary, payload)| QueuedMessage {
                id: receipt.0,
                payload: if binary {
                    Payload::Binary(payload.to_vec())
                } else {
                    Payload::Text(String::from_utf8_lossy(payload).into_owned())
                },
            })
            .collect()
    };
    // Nothing would keep the records: the engine need not make them.
    engine.set_persistence(persist);
    shared.ledger.start_at(engine.last_receipt() + 1);
    engine.connect(now);
    let span = tracing::info_span!("steadfast", url = %builder.url);
    span.in_scope(|| tracing::debug!(restored, "client started"));
    let durable = store.as_ref().is_some_and(|s| s.is_durable());
    let mut driver = Driver {
        engine,
        store,
        durable,
        url: builder.url,
        connect: builder.connect,
        auth: builder.auth,
        overflow: builder.overflow,
        send_buffer: builder.send_buffer,
        progress: builder.progress_events,
        send_blocked: None,
        commands,
        events,
        shared,
        socket: None,
        connecting: None,
        refreshing: None,
        fresh_token: None,
        timer: None,
        settled: Vec::new(),
        unflushed: Vec::new(),
        waiting: VecDeque::new(),
        batch: Vec::new(),
        deferred: Vec::new(),
        close_as: None,
        closed_waiters: Vec::new(),
        hints: rt::lifecycle(),
        released: 0,
        read_burst_ended: false,
        dispatched: 0,
        reported_read: 0,
        now,
        wall: rt::wall_ms(),
    };
    if !restored_messages.is_empty() {
        driver.emit(ClientEvent::Restored(restored_messages));
    }
    if unreadable > 0 {
        driver.emit(ClientEvent::Error(Error::UnreadableRecords(unreadable)));
    }
    // The restored outbox counts from the first moment.
    if let Some(reason) = load_failed {
        driver.store_failed(reason);
    }
    driver.publish_stats();
    Ok(driver.run().instrument(span))
}

impl Drop for Driver {
    fn drop(&mut self) {
        // However the driver ends (closed, every client gone, or its
        // runtime shut down), no receipt waits forever.
        self.shared.ledger.end();
    }
}

impl Driver {
    async fn run(mut self) {
        loop {
            self.drain().await;
            if std::mem::take(&mut self.read_burst_ended) {
                // After the drain that handed the burst's messages over.
                self.engine.handle_read_burst_end();
                self.drain().await;
            }
            // An ACK waits for the application to read: its next read
            // wakes us (and if it read meanwhile, tell the engine now).
            while self.engine.ack_waits_for_take() {
                self.shared.wake_on_read.store(true, Ordering::SeqCst);
                if !self.note_reads() {
                    break;
                }
                self.shared.wake_on_read.store(false, Ordering::SeqCst);
                self.drain().await;
            }
            self.gather().await;
            let wake = self.wait().await;
            self.tick();
            self.note_reads();
            match wake {
                Wake::Commands(commands, open) => {
                    for command in commands {
                        self.command(command);
                    }
                    if !open {
                        // Every Client is gone: close, keep what is stored, end.
                        self.engine.close(self.now);
                        self.drain().await;
                        return;
                    }
                }
                Wake::Connected(result) => {
                    self.connecting = None;
                    let now = self.now;
                    match result {
                        Ok(socket) => {
                            let protocol = socket.protocol().map(str::to_owned);
                            self.socket = Some(socket);
                            self.engine.handle_open(now, protocol.as_deref());
                        }
                        Err(error) => {
                            tracing::debug!(%error, "connect failed");
                            let reason = error.to_string();
                            let no_credentials = matches!(error, Error::AuthHook(_));
                            self.emit(ClientEvent::Error(error));
                            if no_credentials {
                                self.engine.handle_auth_unavailable(now);
                            } else {
                                self.engine.handle_close(now, close::ABNORMAL, &reason);
                            }
                        }
                    }
                }
                Wake::Refreshed(result) => {
                    self.refreshing = None;
                    let ok = match result {
                        Ok(token) => {
                            self.fresh_token = Some(token);
                            true
                        }
                        Err(reason) => {
                            self.emit(ClientEvent::Error(Error::AuthHook(reason)));
                            false
                        }
                    };
                    self.engine.handle_auth_refreshed(self.now, ok);
                }
                Wake::Socket(event) => {
                    self.socket_event(event);
                    self.read_burst_ended = self.more_socket_events();
                }
                Wake::Hint(Some(hint)) => {
                    tracing::debug!(?hint, "lifecycle hint");
                    self.engine.handle_hint(self.now, hint);
                }
                Wake::Hint(None) => self.hints = None,
                Wake::Timer => {
                    self.timer = None;
                    self.engine.handle_timeout(self.now);
                }
                Wake::SendBuffer => {
                    self.send_blocked = None;
                    let buffered = self.socket.as_ref().map_or(0, Socket::buffered_amount);
                    if buffered <= self.send_buffer / 2 {
                        self.engine.set_send_blocked(false);
                    } else {
                        self.engine.set_send_blocked(true);
                        self.send_blocked = Some(Box::pin(rt::sleep_until(
                            rt::now_ms() + SEND_BUFFER_POLL_MS,
                        )));
                    }
                }
            }
        }
    }

    /// Wait for the next input.
    async fn wait(&mut self) -> Wake {
        // A closed client is inert until `reconnect`: no timer (in Node.js a
        // pending timer would keep the process alive for a queued
        // message's TTL). Expiries missed meanwhile are applied on reconnect.
        let deadline = match self.engine.state() {
            State::Closed { .. } => None,
            _ => self.engine.poll_timeout(),
        };
        if self.timer.as_ref().map(|(at, _)| *at) != deadline {
            self.timer = deadline.map(|at| {
                let sleep: BoxFuture<'static, ()> = Box::pin(rt::sleep_until(at));
                (at, sleep)
            });
        }
        let may_read = self.shared.unread.load(Ordering::Relaxed) < self.shared.max_unread;
        let send_buffer = self.send_buffer;
        let Driver {
            commands,
            connecting,
            refreshing,
            socket,
            timer,
            hints,
            send_blocked,
            ..
        } = self;
        futures::future::poll_fn(|cx| {
            if let Poll::Ready(first) = commands.poll_next(cx) {
                let Some(first) = first else {
                    return Poll::Ready(Wake::Commands(Vec::new(), false));
                };
                let mut batch = vec![first];
                let mut open = true;
                while batch.len() < MAX_BATCH {
                    match commands.poll_next(cx) {
                        Poll::Ready(Some(command)) => batch.push(command),
                        Poll::Ready(None) => {
                            open = false;
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
                return Poll::Ready(Wake::Commands(batch, open));
            }
            if let Some(future) = connecting {
                if let Poll::Ready(result) = future.poll_unpin(cx) {
                    return Poll::Ready(Wake::Connected(result));
                }
            }
            if let Some(future) = refreshing {
                if let Poll::Ready(result) = future.poll_unpin(cx) {
                    return Poll::Ready(Wake::Refreshed(result));
                }
            }
            if let (Some(socket), true) = (socket.as_mut(), may_read) {
                if let Poll::Ready(event) = socket.poll_event(cx) {
                    return Poll::Ready(Wake::Socket(event));
                }
            }
            if let Some((_, hints)) = hints {
                if let Poll::Ready(hint) = hints.poll_next(cx) {
                    return Poll::Ready(Wake::Hint(hint));
                }
            }
            if let Some((_, sleep)) = timer {
                if sleep.poll_unpin(cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
            }
            if let Some(sleep) = send_blocked {
                // Natively the writer says when it drained; the browser
                // does not, and the timer looks again.
                let drained = socket
                    .as_ref()
                    .and_then(|socket| socket.poll_below(cx, send_buffer / 2));
                if matches!(drained, Some(Poll::Ready(()))) || sleep.poll_unpin(cx).is_ready() {
                    return Poll::Ready(Wake::SendBuffer);
                }
            }
            Poll::Pending
        })
        .await
    }

    fn command(&mut self, command: Command) {
        let now = self.now;
        match command {
            Command::Send(request) => {
                if self.waiting.is_empty() {
                    self.enqueue(request);
                } else {
                    // Keep the order: behind those already waiting.
                    self.waiting.push_back(request);
                }
            }
            Command::Close(code, reason, done) => {
                self.close_as = Some((code, reason));
                self.closed_waiters.push(done);
                self.engine.close(now);
            }
            Command::Reconnect => {
                if matches!(self.engine.state(), State::Idle | State::Closed { .. }) {
                    self.engine.connect(now);
                } else {
                    self.engine.reconnect(now);
                }
            }
            Command::Hint(hint) => self.engine.handle_hint(now, hint),
            Command::Read => {}
        }
    }

    /// Offer a message to the engine; on a full outbox, wait or fail.
    /// Returns false if it had to wait.
    fn enqueue(&mut self, request: SendRequest) -> bool {
        let SendRequest {
            id,
            payload,
            queued,
        } = request;
        let size = payload.len();
        if queued.as_ref().is_some_and(oneshot::Sender::is_canceled) {
            // The caller gave up before it was queued: nothing to do.
            self.shared.release(size);
            self.shared.ledger.settle([(id, Err(Error::Closed))]);
            return true;
        }
        if self.overflow == SendOverflow::Wait && !self.engine.has_room(size) {
            self.waiting.push_front(SendRequest {
                id,
                payload,
                queued,
            });
            return false;
        }
        let result = self.engine.send_with_receipt(
            self.now,
            self.wall,
            payload,
            steadfast_core::Receipt(id),
        );
        // Counted as queued before the reservation goes: a fast-path
        // `send` never sees room that is not there.
        self.shared
            .set_queued(self.engine.queued(), self.engine.queued_bytes());
        self.shared.release(size);
        let refused = match result {
            Ok(_) => {
                if let Some(queued) = queued {
                    self.unflushed.push(queued);
                }
                return true;
            }
            Err(SendError::QueueFull { messages, bytes }) => Error::QueueFull { messages, bytes },
            Err(SendError::TooLarge { size, limit }) => Error::MessageTooLarge { size, limit },
            Err(other) => Error::InvalidOption(other.to_string()),
        };
        if let Some(queued) = queued {
            let _ = queued.send(Err(refused.clone()));
        }
        self.shared.ledger.settle([(id, Err(refused))]);
        true
    }

    /// Take the socket events that already arrived (up to a batch) before
    /// draining: one drain, one store commit and one dispatch for a burst.
    /// Returns whether the socket had nothing more to read (the burst
    /// ended, rather than the batch, the application's unread limit or
    /// the connection).
    fn more_socket_events(&mut self) -> bool {
        for taken in 1..SOCKET_BATCH {
            // Each frame may be a message for the application (at most).
            if self.shared.unread.load(Ordering::Relaxed) + taken >= self.shared.max_unread {
                return false;
            }
            let Some(socket) = self.socket.as_mut() else {
                return false;
            };
            match socket.try_event() {
                Poll::Ready(event) => self.socket_event(event),
                Poll::Pending => return true,
            }
        }
        false
    }

    fn socket_event(&mut self, event: Option<SocketEvent>) {
        let now = self.now;
        match event {
            Some(SocketEvent::Message(Message::Text(text))) => {
                self.engine
                    .handle_frame_owned(now, false, text.into_bytes());
            }
            Some(SocketEvent::Message(Message::Binary(bytes))) => {
                self.engine.handle_frame_owned(now, true, bytes);
            }
            Some(SocketEvent::Error(error)) => tracing::debug!(%error, "transport error"),
            Some(SocketEvent::Closed(close)) => {
                self.socket = None;
                tracing::debug!(code = close.code, reason = %close.reason, "connection closed");
                self.engine.handle_close(now, close.code, &close.reason);
            }
            None => {
                self.socket = None;
                self.engine
                    .handle_close(now, close::ABNORMAL, "connection lost");
            }
        }
    }

    /// Carry out everything the engine wants, then hand over the events.
    async fn drain(&mut self) {
        loop {
            while let Some(output) = self.engine.poll_output() {
                match output {
                    Output::Persist(op) => self.batch.push(op),
                    Output::Transmit(transmit) => {
                        self.flush().await;
                        let message = if transmit.binary {
                            Message::Binary(transmit.data)
                        } else {
                            // The engine builds text frames from Strings.
                            match String::from_utf8(transmit.data) {
                                Ok(text) => Message::Text(text),
                                Err(e) => Message::Binary(e.into_bytes()),
                            }
                        };
                        if let Some(socket) = &self.socket {
                            // A closed socket reports its close as an event.
                            let _ = socket.send(message);
                            if socket.buffered_amount() > self.send_buffer {
                                self.engine.set_send_blocked(true);
                                // Nothing reports a drained buffer: look again soon.
                                if self.send_blocked.is_none() {
                                    self.send_blocked = Some(Box::pin(rt::sleep_until(
                                        rt::now_ms() + SEND_BUFFER_POLL_MS,
                                    )));
                                }
                            }
                        }
                    }
                    Output::Connect { offer_reliable } => {
                        self.flush().await;
                        self.start_connect(offer_reliable);
                    }
                    Output::Disconnect { code, reason } => {
                        self.connecting = None;
                        let (code, reason) = self.close_as.take().unwrap_or((code, reason));
                        if let Some(mut socket) = self.socket.take() {
                            // The engine's codes are valid; if not, dropping closes.
                            let _ = socket.close(code, &reason);
                        }
                    }
                    Output::Event(event) => self.deferred.push(event),
                    Output::Timeout(_) => break,
                }
            }
            self.flush().await;
            self.dispatch();
            // Room may have been made: let waiting sends in (at the time
            // after the commit).
            self.tick();
            let mut progressed = false;
            while let Some(request) = self.waiting.pop_front() {
                if !self.enqueue(request) {
                    break;
                }
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        self.close_as = None;
        for done in self.closed_waiters.drain(..) {
            let _ = done.send(());
        }
        self.publish_stats();
    }

    /// Tell the engine of the messages the application read since it last
    /// heard: only those may be acknowledged. Returns whether there were.
    fn note_reads(&mut self) -> bool {
        // Only this task adds to `unread` (with `dispatched`), so it never
        // exceeds `dispatched`, and `read` never goes back; saturating all
        // the same, never a panic.
        let read = self
            .dispatched
            .saturating_sub(self.shared.unread.load(Ordering::SeqCst));
        let new = read.saturating_sub(self.reported_read);
        self.reported_read = read;
        if new > 0 {
            self.engine.handle_taken(new);
        }
        new > 0
    }

    /// Read the clocks (see `Driver::now`).
    fn tick(&mut self) {
        self.now = rt::now_ms();
        self.wall = rt::wall_ms();
    }

    /// Group commit: a commit that released several waiting senders will
    /// likely see them send again at once. Let them run before the next
    /// batch is taken, so it carries them all instead of the few that
    /// made it in time (with 64 senders, ~32 per commit: the ones released
    /// by the previous commit were still waking up). Durable enqueue with
    /// 64 senders, redb: 13.5 -> 8.6 µs per message. A lone sender (one
    /// released) pays nothing; several pay a few task switches per commit.
    async fn gather(&mut self) {
        if self.released > 1 && self.durable {
            for _ in 0..GATHER_YIELDS {
                rt::yield_now().await;
            }
        }
        self.released = 0;
    }

    /// Apply the pending store operations; then the sends they carried are
    /// queued for real.
    async fn flush(&mut self) {
        if !self.batch.is_empty() {
            let mut ops = std::mem::take(&mut self.batch);
            // Applied as one transaction: the superseded session records go.
            PersistOp::coalesce(&mut ops);
            let result = match self.store.as_mut() {
                Some(store) => store.apply(ops).await,
                None => Ok(()),
            };
            if let Err(StoreError(reason)) = result {
                self.store_failed(reason);
            }
        }
        self.released = self.unflushed.len();
        for queued in self.unflushed.drain(..) {
            let _ = queued.send(Ok(self.durable));
        }
    }

    /// Hand the drained events to the application.
    fn dispatch(&mut self) {
        for event in std::mem::take(&mut self.deferred) {
            match event {
                Event::Message(payload) => {
                    self.shared.unread.fetch_add(1, Ordering::SeqCst);
                    self.dispatched += 1;
                    self.emit(ClientEvent::Message(payload));
                }
                Event::Acked(receipt) => self.resolve(receipt.0, Ok(Delivery::Acked)),
                Event::Sent(receipt) => self.resolve(receipt.0, Ok(Delivery::Sent)),
                Event::Transmitted(receipt) => {
                    if self.progress {
                        self.emit(ClientEvent::Transmitted(receipt.0));
                    }
                }
                Event::Failed {
                    receipt,
                    reason,
                    possibly_delivered,
                } => self.resolve(receipt.0, Err(failed(reason, possibly_delivered))),
                Event::State(state) => {
                    let state = ConnectionState::from_core(&state, rt::now_ms(), rt::wall_ms());
                    tracing::debug!(?state, "state");
                    self.shared.state.set(state.clone());
                    self.emit(ClientEvent::State(state));
                }
                Event::ResyncRequired => {
                    tracing::info!("the server lost the session; resending the outbox");
                    self.emit(ClientEvent::ResyncRequired);
                }
                Event::Skipped { count } => self.emit(ClientEvent::Skipped(count)),
                Event::RefreshAuth => self.start_refresh(),
                Event::Rtt(_) => {}
                Event::Error(error) => {
                    tracing::debug!(%error, "engine error");
                    self.emit(ClientEvent::Error(Error::Protocol {
                        code: error.code(),
                        message: error.to_string(),
                    }));
                }
            }
        }
        if !self.settled.is_empty() {
            self.shared.ledger.settle(self.settled.drain(..));
        }
    }

    /// Go on without the store: messages are kept in memory only.
    fn store_failed(&mut self, reason: String) {
        tracing::error!(%reason, "the store failed; keeping messages in memory only");
        self.store = None;
        self.durable = false;
        self.emit(ClientEvent::Error(Error::Store(
            [&reason, "; messages are kept in memory only"].concat(),
        )));
    }

    fn emit(&self, event: ClientEvent) {
        // No reader left means no Client left; the driver ends soon.
        let _ = self.events.send(event);
    }

    fn resolve(&mut self, receipt: u64, outcome: Result<Delivery, Error>) {
        if self.progress {
            self.emit(ClientEvent::Settled {
                id: receipt,
                outcome: outcome.clone(),
            });
        }
        self.settled.push((receipt, outcome));
    }

    fn start_refresh(&mut self) {
        let Some(auth) = &self.auth else {
            // Without a hook the engine never asks; answer anyway.
            self.engine.handle_auth_refreshed(self.now, false);
            return;
        };
        self.refreshing = Some((auth.hook)());
    }

    fn start_connect(&mut self, offer_reliable: bool) {
        let mut options = self.connect.clone();
        if offer_reliable {
            options.protocols.insert(0, SUBPROTOCOL.to_owned());
        }
        let mut url = self.url.clone();
        let auth = self.auth.clone();
        let fresh = self.fresh_token.take();
        self.connecting = Some(Box::pin(async move {
            if let Some(auth) = auth {
                let token = match fresh {
                    Some(token) => token,
                    None => (auth.hook)().await.map_err(Error::AuthHook)?,
                };
                match &auth.placement {
                    AuthPlacement::Header(name) => options.headers.push((name.clone(), token)),
                    AuthPlacement::Query(name) => {
                        let authority_only = url
                            .split_once("://")
                            .is_some_and(|(_, rest)| !rest.contains(['/', '?', '#']));
                        if authority_only {
                            url.push('/');
                        }
                        let separator = if url.contains('?') { '&' } else { '?' };
                        url = format!("{url}{separator}{}={}", encode(name), encode(&token));
                    }
                    AuthPlacement::Subprotocol(prefix) => {
                        options.protocols.push(format!("{prefix}{token}"));
                    }
                }
            }
            Socket::connect(&url, &options).await
        }));
    }

    fn publish_stats(&self) {
        self.shared
            .set_queued(self.engine.queued(), self.engine.queued_bytes());
        self.shared.set_stats(ClientStats {
            queued: self.engine.queued(),
            queued_bytes: self.engine.queued_bytes(),
            waiting_sends: self.waiting.len(),
            unread: self.shared.unread.load(Ordering::Relaxed),
            durable: self.durable,
            engine: *self.engine.stats(),
        });
    }
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("abc-._~XYZ09"), "abc-._~XYZ09");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
