//! Sessions, plain connections and rooms, and the handle the application
//! uses to reach them.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use steadfast_core::codec::{self, SUBPROTOCOL};
use steadfast_core::record::StoredSession;
use steadfast_core::route::{self, Route};
use steadfast_core::{Engine, Event, Output, Payload, PersistOp, SendError, SessionId, Stats};
use tokio::sync::{mpsc, Notify};

use crate::faults::FaultRecord;
use crate::handler::{Handler, PeerId};
use crate::metrics::Metrics;
use crate::sessions::{
    Change, Claim, Committer, Fenced, Forward, Retention, SavedSession, SessionStore,
    SessionStoreError,
};
use crate::ServerConfig;

/// Why the application's request to the server failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// No such peer (never existed, disconnected, or its session expired).
    #[error("no peer {0}")]
    UnknownPeer(PeerId),
    /// The session's outbox refused the message (full, or too large).
    #[error("the session refused the message: {0}")]
    Send(#[from] SendError),
    /// The plain connection's write queue is full (a client that does not read).
    #[error("peer {0} is not reading; its queue is full")]
    Busy(PeerId),
    /// A room name longer than [`RoomLimits::max_name_bytes`](crate::RoomLimits).
    #[error("a room name of {0} bytes is over the limit of {1}")]
    RoomName(usize, usize),
    /// The peer is in [`RoomLimits::max_per_peer`](crate::RoomLimits) rooms already.
    #[error("in {0} rooms already, the most a peer may be in")]
    TooManyRooms(usize),
    /// The room has [`RoomLimits::max_members`](crate::RoomLimits) members already.
    #[error("the room has {0} members already, the most it may have")]
    RoomFull(usize),
}

impl ServerError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServerError::UnknownPeer(_) => "ERR_UNKNOWN_PEER",
            ServerError::Send(e) => e.code(),
            ServerError::Busy(_) => "ERR_PEER_BUSY",
            ServerError::RoomName(..) => "ERR_ROOM_NAME",
            ServerError::TooManyRooms(_) => "ERR_TOO_MANY_ROOMS",
            ServerError::RoomFull(_) => "ERR_ROOM_FULL",
        }
    }
}

/// One reliable session: its engine and what its connection must do next.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) engine: Engine,
    /// Outputs for the attached connection, in order.
    pub(crate) pending: VecDeque<Output>,
    /// Bumped by every attach; a connection holding an older one is stale.
    pub(crate) generation: u64,
    /// Wakes the attached connection; `None` while detached.
    pub(crate) waker: Option<Arc<Notify>>,
    pub(crate) detached_at: Option<Instant>,
    /// The `sub` that created the session (authentication on).
    pub(crate) subject: Option<String>,
    /// Held (before the slot's lock, never inside it) from taking
    /// `pending` until its messages are handed to the application: a
    /// connection superseding another must not hand over messages while
    /// the old one is still handing over earlier ones it took.
    pub(crate) handover: Arc<Mutex<()>>,
    /// Messages a connection took from `pending` and is handing to the
    /// application (they will reach it), not yet counted as taken.
    pub(crate) handing_over: usize,
    /// Writes the engine's store operations (a durable session store).
    committer: Option<Arc<Committer>>,
    /// This node's fencing token for the session: its store writes carry
    /// it, and are refused once another node claims the session.
    claim: Claim,
    /// The ticket of the last store write made for `pending`: none of it
    /// may reach the socket before that ticket is committed.
    pub(crate) barrier: u64,
    /// Taking its inbox (messages other servers posted) into the outbox.
    pulling: bool,
    /// More mail was announced during that pull: pull again after it.
    pull_again: bool,
    /// Store writes of sends made inside [`Shared::at_one_instant`]: pushed
    /// as one change when it ends, or before anything else the session
    /// writes or a connection takes `pending` (so order and barriers hold).
    deferred: Vec<PersistOp>,
    /// The session whose delivery made them (that instant's).
    deferred_by: Option<SessionId>,
    seen: Stats,
    /// Ends its connection at once, whatever it is waiting for (a write
    /// to a client that does not read): the session was shed.
    pub(crate) kill: Arc<Notify>,
    /// Frames its connection parked (flow control), as it last said.
    pub(crate) parked_bytes: usize,
    /// The address of the connection that made it (counted against
    /// `max_sessions_per_address`, and its subject against
    /// `max_sessions_per_subject`); none for sessions restored at start.
    origin: Option<Origin>,
    /// What `memory` was when last added to the server's total.
    counted: u64,
}

impl Slot {
    /// Move the engine's outputs to `pending` (up to its timer) and wake the
    /// connection. Store operations go to the committer (a durable session
    /// store; the engine makes none otherwise), and `pending` waits for them.
    pub(crate) fn drain(&mut self, metrics: &Metrics) {
        self.drain_as(metrics, Forward::Never);
    }

    /// As [`drain`](Self::drain), the new store writes marked `forward`.
    fn drain_as(&mut self, metrics: &Metrics, forward: Forward) {
        // Woken first: the connection takes `pending` only once this
        // slot's lock (held by the caller) is let go, after the push.
        let ops = self.drain_ops(metrics);
        self.push_ops(ops, forward);
    }

    /// As [`drain`](Self::drain), but the store writes wait in `deferred`
    /// for the instant to end (one change per session per batch, not one
    /// per send). True if none waited before: the caller registers the slot.
    fn drain_deferred(&mut self, metrics: &Metrics, by: SessionId) -> bool {
        if self.deferred_by != Some(by) {
            // Another instant's (another thread's delivery): kept apart.
            self.flush_deferred();
            self.deferred_by = Some(by);
        }
        let first = self.deferred.is_empty();
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Timeout(_) => break,
                Output::Persist(op) => self.deferred.push(op),
                output => self.pending.push_back(output),
            }
        }
        self.wake(metrics);
        first && !self.deferred.is_empty()
    }

    /// As [`drain`](Self::drain), but the new store writes are returned
    /// (any deferred ones pushed first), not pushed.
    fn drain_ops(&mut self, metrics: &Metrics) -> Vec<PersistOp> {
        self.flush_deferred();
        let mut ops = Vec::new();
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Timeout(_) => break,
                Output::Persist(op) => ops.push(op),
                output => self.pending.push_back(output),
            }
        }
        self.wake(metrics);
        ops
    }

    /// Push the deferred store writes, if any (see `deferred`).
    pub(crate) fn flush_deferred(&mut self) {
        if !self.deferred.is_empty() {
            let ops = std::mem::take(&mut self.deferred);
            let forward = match self.deferred_by {
                // Replies to its own messages: made again where it goes.
                Some(by) if by != self.engine.session() => Forward::IfDelivered(by),
                _ => Forward::Never,
            };
            self.push_ops(ops, forward);
        }
    }

    /// Hand the engine's store writes to the committer; `pending` waits for them.
    fn push_ops(&mut self, ops: Vec<PersistOp>, forward: Forward) {
        if let Some(committer) = self.committer.as_ref().filter(|_| !ops.is_empty()) {
            // Only a Put (before its first transmit) and a Session (before
            // the ACK it backs) hold outputs back. Deletes of acknowledged
            // messages need not: one lost in a crash makes a resend the
            // client drops as a duplicate.
            let holds = ops.iter().any(|op| !matches!(op, PersistOp::Delete { .. }));
            let session = self.engine.session();
            let ticket = committer.push(Change::Ops {
                session,
                claim: self.claim,
                ops,
                forward,
            });
            if holds {
                self.barrier = ticket;
            }
        }
    }

    /// Wake the attached connection for what is pending.
    fn wake(&mut self, metrics: &Metrics) {
        match &self.waker {
            // The attached connection adds the engine's counts to the
            // metrics once per wake-up (`absorb`), not per message.
            Some(waker) if !self.pending.is_empty() => waker.notify_one(),
            Some(_) => {}
            // Nobody to hand them to: events of a detached session (a
            // receipt the server does not track) are not needed; delivered
            // messages are kept for whoever hands them over.
            None => {
                self.absorb(metrics);
                self.keep_delivered();
            }
        }
    }

    /// The application got `count` more messages (those a connection took
    /// from `pending`): the engine may now acknowledge them.
    pub(crate) fn handed_over(&mut self, count: usize, metrics: &Metrics) {
        self.engine.handle_taken(count);
        self.handing_over = 0;
        self.drain(metrics);
        if let Some(committer) = &self.committer {
            // The "delivered through" mark that ends the hand-over's unit
            // (the engine writes it only with an ACK).
            self.barrier = committer.push(Change::Ops {
                session: self.engine.session(),
                claim: self.claim,
                ops: vec![PersistOp::Session(self.record())],
                forward: Forward::Never,
            });
        }
    }

    /// Bytes it holds: queued for its client, held for reordering and
    /// reassembly, and messages on their way out or to the application.
    fn memory(&self) -> u64 {
        let pending: usize = self
            .pending
            .iter()
            .map(|output| match output {
                Output::Event(Event::Message(payload)) => payload.len(),
                Output::Transmit(t) => t.data.len(),
                _ => 0,
            })
            .sum();
        (self.engine.queued_bytes() + self.engine.buffered_bytes() + pending + self.parked_bytes)
            as u64
    }

    /// Bring the server's total (`total`) up to date with what it holds
    /// now; returns that.
    pub(crate) fn recount(&mut self, total: &AtomicU64) -> u64 {
        let now = self.memory();
        if now >= self.counted {
            total.fetch_add(now - self.counted, Ordering::Relaxed);
        } else {
            total.fetch_sub(self.counted - now, Ordering::Relaxed);
        }
        self.counted = now;
        now
    }

    /// Add what the engine counted since the last call to the metrics.
    pub(crate) fn absorb(&mut self, metrics: &Metrics) {
        metrics.absorb(self.engine.stats(), &mut self.seen);
    }

    /// What is kept of the session when its state goes: the seqs its
    /// client resumes from. Those being handed over reach the application:
    /// counted delivered.
    fn record(&self) -> StoredSession {
        StoredSession {
            secret: self.engine.secret(),
            session: self.engine.session(),
            welcomed: true,
            inbound_delivered: self.engine.taken() + self.handing_over as u64,
            next_seq: self.engine.next_seq(),
        }
    }

    /// Drop pending outputs but the delivered messages: the engine counts
    /// them delivered, so the application must still get them.
    pub(crate) fn keep_delivered(&mut self) {
        self.pending
            .retain(|output| matches!(output, Output::Event(Event::Message(_))));
    }
}

pub(crate) enum PlainCmd {
    Send(Payload),
    Close(u16, String),
    /// A WebSocket ping (the connection's own liveness check).
    Ping,
}

enum Entry {
    Session(Arc<Mutex<Slot>>),
    Plain(mpsc::Sender<PlainCmd>),
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<SessionId, PeerId>,
    peers: HashMap<PeerId, Entry>,
    rooms: HashMap<String, BTreeSet<PeerId>>,
    member_of: HashMap<PeerId, BTreeSet<String>>,
    /// Sessions held, by the address (IPv6: /64) that made them.
    by_origin: HashMap<Origin, usize>,
    /// Sessions held, by the JWT subject that made them.
    by_subject: HashMap<String, usize>,
}

/// Where a session came from, for the per-address limit: an IPv4 address,
/// or an IPv6 /64 (one host's usual allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Origin(u128);

impl Origin {
    pub(crate) fn of(ip: std::net::IpAddr) -> Origin {
        match ip {
            std::net::IpAddr::V4(v4) => Origin(u128::from(u32::from(v4))),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Origin(u128::from(u32::from(v4))),
                None => Origin(u128::from(v6) >> 64 << 64 | 1 << 32),
            },
        }
    }
}

fn count_up<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    *map.entry(key).or_default() += 1;
}

fn count_down<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Registry {
    /// A peer id nobody here has: random (so ids do not repeat after a
    /// restart or across nodes), below 2^53 (exact in JavaScript), not 0.
    fn fresh_peer(&self) -> PeerId {
        loop {
            let n = u64::from_le_bytes(random_bytes::<8>()) & ((1 << 53) - 1);
            if n != 0 && !self.peers.contains_key(&PeerId(n)) {
                return PeerId(n);
            }
        }
    }

    /// Put `peer` in `room`; its number of members.
    fn enter(&mut self, peer: PeerId, room: &str) -> usize {
        self.member_of
            .entry(peer)
            .or_default()
            .insert(room.to_owned());
        let members = self.rooms.entry(room.to_owned()).or_default();
        members.insert(peer);
        members.len()
    }

    /// Write `peer`'s rooms to the store, if it is a session there.
    fn store_rooms(&self, peer: PeerId) {
        let Some(Entry::Session(slot)) = self.peers.get(&peer) else {
            return;
        };
        let slot = lock(slot);
        if let Some(committer) = &slot.committer {
            committer.push(Change::Rooms {
                session: slot.engine.session(),
                claim: slot.claim,
                rooms: self
                    .member_of
                    .get(&peer)
                    .map(|rooms| rooms.iter().cloned().collect())
                    .unwrap_or_default(),
            });
        }
    }

    /// Drop a session and its rooms; an attached connection closes (4909).
    fn remove_session(&mut self, session: &SessionId, peer: PeerId) {
        self.sessions.remove(session);
        if let Some(Entry::Session(slot)) = self.peers.remove(&peer) {
            let mut slot = lock(&slot);
            if let Some(origin) = slot.origin.take() {
                count_down(&mut self.by_origin, &origin);
                if let Some(subject) = &slot.subject {
                    count_down(&mut self.by_subject, subject);
                }
            }
            // A generation its connection does not hold closes it.
            slot.generation += 1;
            if let Some(waker) = slot.waker.take() {
                waker.notify_one();
            }
        }
        self.forget_rooms(peer);
    }

    fn forget_rooms(&mut self, peer: PeerId) {
        for room in self.member_of.remove(&peer).unwrap_or_default() {
            if let Some(members) = self.rooms.get_mut(&room) {
                members.remove(&peer);
                if members.is_empty() {
                    self.rooms.remove(&room);
                }
            }
        }
    }
}

/// State shared by the accept loop, the connections and the handle.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) metrics: Arc<Metrics>,
    /// Where sessions outlive the process (a durable store), or where the
    /// records of expired sessions are kept (memory).
    pub(crate) store: Arc<dyn SessionStore>,
    /// Writes to a durable store; `None` for memory.
    pub(crate) committer: Option<Arc<Committer>>,
    epoch: Instant,
    registry: Mutex<Registry>,
    /// WebSocket upgrades so far (fault injection numbers connections by it).
    upgrades: AtomicU64,
    fault_log: Mutex<Vec<FaultRecord>>,
    /// The sessions hold 90% of `max_memory` or more: new ones are refused.
    over_budget: std::sync::atomic::AtomicBool,
    /// What the sessions hold, kept current by each slot's `recount`.
    pub(crate) memory: AtomicU64,
    /// Over the budget: the serve loop checks at once.
    pub(crate) memory_pressure: Notify,
    /// Open WebSocket connections, for `/debug/connections`.
    pub(crate) views: crate::debug::Views,
}

/// A session holding more than this counts as heavy near the memory
/// budget (its connection is not read until the check sheds someone).
const HEAVY_SESSION: u64 = 1 << 20;

/// Sessions claimed per write when a server restores its store at start.
const RESTORE_BATCH: usize = 1_000;

/// The fault log keeps at most this many records.
const FAULT_LOG_MAX: usize = 100_000;

/// Lock a mutex; a panic elsewhere while holding it leaves data that is
/// still consistent for our purposes (every update is a single step).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What attaching a connection to a session gave.
pub(crate) struct Attached {
    pub(crate) slot: Arc<Mutex<Slot>>,
    pub(crate) peer: PeerId,
    pub(crate) generation: u64,
    pub(crate) waker: Arc<Notify>,
    pub(crate) resumed: bool,
}

/// Why a connection could not attach.
pub(crate) enum AttachError {
    /// `max_sessions` reached.
    Overloaded,
    /// The session store could not be read.
    Store(SessionStoreError),
    /// The engine refused the configuration. `ServerBuilder::bind`
    /// validates it, so only a bug gets here; the connection is closed
    /// with 1011 rather than the server panicking.
    Engine(steadfast_core::ConfigError),
}

impl Shared {
    pub(crate) fn new(
        config: ServerConfig,
        handler: Arc<dyn Handler>,
        store: Arc<dyn SessionStore>,
    ) -> Arc<Shared> {
        Arc::new_cyclic(|shared: &std::sync::Weak<Shared>| {
            // The committer's thread logs under the node's span.
            let _node = tracing::warn_span!("node", id = %config.node_id).entered();
            let metrics = Arc::new(Metrics::default());
            let shared = shared.clone();
            let fenced: Fenced = Box::new(move |sessions| {
                if let Some(shared) = shared.upgrade() {
                    shared.let_go(&sessions);
                }
            });
            let committer = store
                .durable()
                .then(|| Arc::new(Committer::start(store.clone(), metrics.clone(), fenced)));
            Shared::with(config, handler, store, metrics, committer)
        })
    }

    fn with(
        config: ServerConfig,
        handler: Arc<dyn Handler>,
        store: Arc<dyn SessionStore>,
        metrics: Arc<Metrics>,
        committer: Option<Arc<Committer>>,
    ) -> Shared {
        Shared {
            config,
            handler,
            metrics,
            store,
            committer,
            epoch: Instant::now(),
            registry: Mutex::new(Registry::default()),
            upgrades: AtomicU64::new(0),
            fault_log: Mutex::new(Vec::new()),
            over_budget: std::sync::atomic::AtomicBool::new(false),
            memory: AtomicU64::new(0),
            memory_pressure: Notify::new(),
            views: crate::debug::Views::default(),
        }
    }

    /// The store refused this node's writes for these sessions (another
    /// node claimed them, or the store lost them): drop them here without
    /// writing anything, and close their connections (4909). Their waiting
    /// outputs never go out. A client whose session the store lost
    /// reconnects to a session it does not know: an explicit resync.
    fn let_go(&self, sessions: &[SessionId]) {
        let mut registry = lock(&self.registry);
        for session in sessions {
            // Counted once: batches refused before it was let go are not.
            if let Some(peer) = registry.sessions.get(session).copied() {
                tracing::warn!(
                    ?session,
                    "the store refused its writes (claimed elsewhere, or lost): let go"
                );
                registry.remove_session(session, peer);
                self.metrics.inc(&self.metrics.store_fenced);
            }
        }
    }

    /// Take what other servers posted to `session` (held here) into its
    /// outbox (see [`Shared::pull_many`]).
    pub(crate) async fn pull(self: &Arc<Self>, session: SessionId) {
        self.pull_many(vec![session]).await;
    }

    /// Take what other servers posted to these sessions (those held here)
    /// into their outboxes: one pipelined read of their inboxes, then for
    /// each the `Put`s and the inbox's trim in one commit unit, so each
    /// message is taken once, also across a crash or a claim by another
    /// server (its commit is then refused). A session already being pulled
    /// is marked to go round again instead.
    pub(crate) async fn pull_many(self: &Arc<Self>, sessions: Vec<SessionId>) {
        let Some(committer) = self.committer.clone() else {
            return;
        };
        let mut active: Vec<(SessionId, Arc<Mutex<Slot>>)> = Vec::new();
        {
            let registry = lock(&self.registry);
            for session in sessions {
                let Some(Entry::Session(slot)) = registry
                    .sessions
                    .get(&session)
                    .and_then(|p| registry.peers.get(p))
                else {
                    continue;
                };
                let mut guard = lock(slot);
                if guard.pulling {
                    // The running pull may have read the inbox before this
                    // mail came: it goes round once more.
                    guard.pull_again = true;
                } else if !active.iter().any(|(s, _)| *s == session) {
                    guard.pulling = true;
                    active.push((session, slot.clone()));
                }
            }
        }
        while !active.is_empty() {
            let ids: Vec<SessionId> = active.iter().map(|(s, _)| *s).collect();
            let shared = self.clone();
            let read = tokio::task::spawn_blocking(move || shared.store.inboxes(&ids, PULL_BATCH))
                .await
                .unwrap_or_else(|_| Err(SessionStoreError("the inbox read failed".into())));
            let inboxes = match read {
                Ok(inboxes) => inboxes,
                Err(error) => {
                    // Left for the periodic check.
                    tracing::warn!(%error, "cannot read the inboxes");
                    for (_, slot) in &active {
                        lock(slot).pulling = false;
                    }
                    return;
                }
            };
            let unit = committer.begin();
            let mut ticket = 0;
            let mut next = Vec::with_capacity(active.len());
            for ((session, slot), items) in active.into_iter().zip(inboxes) {
                let mut guard = lock(&slot);
                if items.is_empty() {
                    // Done, unless more was announced meanwhile.
                    if std::mem::take(&mut guard.pull_again) {
                        drop(guard);
                        next.push((session, slot));
                    } else {
                        guard.pulling = false;
                    }
                    continue;
                }
                // What was pending goes as it would have; what the pulled
                // messages make the engine write goes with their trim.
                guard.drain(&self.metrics);
                let mut taken = 0u64;
                for (binary, payload) in items {
                    let message = if binary {
                        Payload::Binary(payload)
                    } else {
                        Payload::Text(String::from_utf8_lossy(&payload).into_owned())
                    };
                    // A full outbox: the rest stays in the inbox for later.
                    if guard
                        .engine
                        .send(self.now_ms(), wall_ms(), message)
                        .is_err()
                    {
                        break;
                    }
                    taken += 1;
                }
                let ops = guard.drain_ops(&self.metrics);
                let consumed = committer.push(Change::Consumed {
                    session,
                    claim: guard.claim,
                    count: taken,
                    ops,
                });
                guard.barrier = guard.barrier.max(consumed);
                guard.pull_again = false;
                ticket = ticket.max(consumed);
                drop(guard);
                // Round again: a full batch left more, or more came.
                next.push((session, slot));
            }
            drop(unit);
            if ticket > 0 {
                committer.wait(ticket).await;
            }
            active = next;
        }
    }

    /// Pull the inbox of every session held here that has mail (the
    /// periodic check behind the Pub/Sub hints).
    pub(crate) async fn pull_all(self: &Arc<Self>) {
        if !self.store.shared() {
            return;
        }
        let shared = self.clone();
        let mail = tokio::task::spawn_blocking(move || shared.store.with_mail())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        // Every node's sessions with mail: counted, those held here.
        let here = {
            let registry = lock(&self.registry);
            mail.iter()
                .filter(|session| registry.sessions.contains_key(session))
                .count()
        };
        self.metrics.add(&self.metrics.mail_by_check, here as u64);
        self.pull_many(mail).await;
    }

    /// Whether the session store answers (a cheap read, within 2 s) and
    /// its last commit, if any, succeeded.
    pub(crate) async fn store_health(self: &Arc<Self>) -> Result<(), String> {
        if let Some(error) = self.committer.as_ref().and_then(|c| c.failing()) {
            return Err(error);
        }
        let shared = self.clone();
        let probe = tokio::task::spawn_blocking(move || shared.store.count());
        match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(error))) => Err(error.to_string()),
            Ok(Err(_)) => Err("the probe failed".into()),
            Err(_) => Err("no answer within 2 s".into()),
        }
    }

    /// Number the next WebSocket upgrade.
    pub(crate) fn next_upgrade(&self) -> u64 {
        self.upgrades.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn log_fault(&self, record: FaultRecord) {
        self.metrics.inc(&self.metrics.faults_injected);
        let mut log = lock(&self.fault_log);
        if log.len() < FAULT_LOG_MAX {
            log.push(record);
        }
    }

    /// Run a handler callback (`what`, for `peer`), containing a panic:
    /// it is logged and counted, and false returned, so the caller closes
    /// the connection 1011 and releases what it holds; the server goes on.
    pub(crate) fn guarded(&self, what: &'static str, peer: PeerId, f: impl FnOnce()) -> bool {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(()) => true,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(peer = peer.0, callback = what, %message, "the handler panicked");
                self.metrics.inc(&self.metrics.handler_panics);
                false
            }
        }
    }

    /// Milliseconds since the server started: the engines' clock. Inside
    /// [`Shared::at_one_instant`] the instant it began.
    pub(crate) fn now_ms(&self) -> u64 {
        let now = frozen_or(|frozen| &mut frozen.now, Instant::now);
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Run `f` with the clock read at most once: every `now_ms` and
    /// wall-clock read inside it (the handler's sends for a batch of
    /// messages) sees the instant of the first. The batch takes
    /// microseconds; reading the clock for each message cost 7% of the
    /// server's time in a pipelined echo.
    pub(crate) fn at_one_instant<R>(&self, by: SessionId, f: impl FnOnce() -> R) -> R {
        /// Restores the clock also if `f` panics (a handler bug must not
        /// stop the thread's clock).
        struct Restore(Option<Frozen>);
        impl Drop for Restore {
            fn drop(&mut self) {
                FROZEN.with(|frozen| frozen.set(self.0));
            }
        }
        /// The outermost instant pushes the store writes its sends deferred
        /// (also if `f` panics: they must not wait for the next instant).
        struct Flush(bool);
        impl Drop for Flush {
            fn drop(&mut self) {
                if self.0 {
                    let slots = DEFERRED.with(|deferred| deferred.borrow_mut().take());
                    for slot in slots.map(|(_, slots)| slots).unwrap_or_default() {
                        lock(&slot).flush_deferred();
                    }
                }
            }
        }
        let previous = FROZEN.with(|frozen| {
            let previous = frozen.get();
            if previous.is_none() {
                frozen.set(Some(Frozen::default()));
            }
            previous
        });
        let _restore = Restore(previous);
        let outermost = previous.is_none() && self.committer.is_some();
        if outermost {
            DEFERRED.with(|deferred| *deferred.borrow_mut() = Some((by, Vec::new())));
        }
        let _flush = Flush(outermost);
        f()
    }

    /// The application's handle on this state.
    pub(crate) fn handle(shared: &Arc<Shared>) -> ServerHandle {
        ServerHandle {
            shared: shared.clone(),
        }
    }

    /// The counters, with the `sessions` gauge read from the registry now.
    pub(crate) fn fresh_metrics(&self) -> &Metrics {
        let sessions = lock(&self.registry).sessions.len() as u64;
        self.metrics.sessions.store(sessions, Ordering::Relaxed);
        &self.metrics
    }

    pub(crate) fn new_peer_id(&self) -> PeerId {
        lock(&self.registry).fresh_peer()
    }

    /// Take every live session the store holds, if it is this server's
    /// alone ([`SessionStore::restore_on_start`]): after a restart each is
    /// detached, as its connection left it, with its peer id and rooms,
    /// and expires after the session TTL if its client does not return.
    pub(crate) fn restore_sessions(&self) -> usize {
        if self.committer.is_none() || !self.store.restore_on_start() {
            return 0;
        }
        let ids = match self.store.live_sessions() {
            Ok(ids) => ids,
            Err(error) => {
                tracing::error!(%error, "cannot list the stored sessions");
                return 0;
            }
        };
        let mut restored = 0;
        // Claimed a batch per write (one fsync each), not one by one.
        for batch in ids.chunks(RESTORE_BATCH) {
            let claims: Vec<(SessionId, Claim)> = batch
                .iter()
                .map(|session| (*session, new_claim()))
                .collect();
            let loaded = match self.store.claim_many(&claims) {
                Ok(loaded) => loaded,
                Err(error) => {
                    tracing::warn!(%error, sessions = batch.len(), "cannot read stored sessions");
                    continue;
                }
            };
            for ((session, claim), saved) in claims.into_iter().zip(loaded) {
                restored += usize::from(self.restore_one(session, claim, saved));
            }
        }
        restored
    }

    /// Put a session read at start in the registry, detached; false if it
    /// is gone, expired or cannot be rebuilt.
    fn restore_one(&self, session: SessionId, claim: Claim, saved: Option<SavedSession>) -> bool {
        let saved = match saved {
            Some(saved) if !saved.expired => saved,
            _ => return false,
        };
        let seed = u64::from_le_bytes(random_bytes::<8>());
        let engine = Engine::server_restore(
            self.config.engine.clone(),
            seed,
            self.now_ms(),
            wall_ms(),
            saved.state,
            saved.messages.clone(),
        );
        let Ok(engine) = engine else { return false };
        let mut registry = lock(&self.registry);
        let (slot, _) = self.adopt(&mut registry, session, engine, claim, &saved);
        lock(&slot).detached_at = Some(Instant::now());
        true
    }

    /// Put a session's slot in the registry, under the peer id it had if
    /// it is free, in the rooms it was in.
    fn adopt(
        &self,
        registry: &mut Registry,
        id: SessionId,
        engine: Engine,
        claim: Claim,
        saved: &SavedSession,
    ) -> (Arc<Mutex<Slot>>, PeerId) {
        let peer = match PeerId(saved.peer) {
            peer if peer.0 != 0 && !registry.peers.contains_key(&peer) => peer,
            _ => registry.fresh_peer(),
        };
        let slot = Arc::new(Mutex::new(Slot {
            engine,
            pending: VecDeque::new(),
            generation: 0,
            waker: None,
            detached_at: None,
            subject: saved.subject.clone(),
            handover: Arc::default(),
            handing_over: 0,
            committer: self.committer.clone(),
            claim,
            barrier: 0,
            pulling: false,
            pull_again: false,
            deferred: Vec::new(),
            deferred_by: None,
            seen: Stats::default(),
            kill: Arc::default(),
            parked_bytes: 0,
            counted: 0,
            origin: None,
        }));
        registry.sessions.insert(id, peer);
        registry.peers.insert(peer, Entry::Session(slot.clone()));
        if !saved.expired {
            for room in &saved.rooms {
                registry.enter(peer, room);
            }
        }
        self.metrics.inc(&self.metrics.sessions_created);
        (slot, peer)
    }

    /// The stored state of `session` if the registry does not hold it (and
    /// the HELLO resumes it): read before [`Shared::attach`], off the
    /// async threads and outside the registry's lock. Waits first for the
    /// store writes already queued (an expiry's record among them), so
    /// what it reads is current.
    /// The session is claimed for this node as it is read: another node
    /// holding it has its writes refused from then on.
    pub(crate) async fn preload(
        self: &Arc<Self>,
        session: SessionId,
        new: bool,
    ) -> Option<Preloaded> {
        if lock(&self.registry).sessions.contains_key(&session) {
            return None;
        }
        if new {
            // A NEW HELLO naming a session another node may hold: read
            // (not claimed), so it cannot take or wipe it (`route`).
            if !self.store.shared() {
                return None;
            }
            let shared = self.clone();
            let loaded = tokio::task::spawn_blocking(move || shared.store.load(&session)).await;
            let saved =
                loaded.unwrap_or_else(|_| Err(SessionStoreError("the load task failed".into())));
            return Some(Preloaded {
                claim: new_claim(),
                saved,
            });
        }
        let claim = new_claim();
        if let Some(committer) = &self.committer {
            // Bounded: a store that is down refuses the client at once
            // (it retries later) rather than leaving it without an answer.
            let queued = committer.wait(committer.pushed());
            if tokio::time::timeout(PRELOAD_WAIT, queued).await.is_err() {
                let why = committer
                    .failing()
                    .unwrap_or_else(|| "not keeping up".into());
                return Some(Preloaded {
                    claim,
                    saved: Err(SessionStoreError(why)),
                });
            }
        }
        let shared = self.clone();
        let loaded = tokio::task::spawn_blocking(move || shared.store.claim(&session, claim)).await;
        let saved =
            loaded.unwrap_or_else(|_| Err(SessionStoreError("the load task failed".into())));
        Some(Preloaded { claim, saved })
    }

    /// Attach a connection whose first frame was `hello` (naming `session`),
    /// where [`route::route`] says. `preloaded`: what [`Shared::preload`]
    /// read (`None`: nothing; read now if the session turns out to be
    /// unknown).
    pub(crate) fn attach(
        &self,
        found: codec::HelloInfo,
        subject: Option<&str>,
        origin: Origin,
        hello: &[u8],
        preloaded: Option<Preloaded>,
    ) -> Result<Attached, AttachError> {
        let codec::HelloInfo {
            session,
            new,
            secret,
        } = found;
        let now = self.now_ms();
        // The registry stays locked until the connection holds the slot's
        // generation: a session expiring in between would otherwise leave
        // this connection on a slot nobody can reach (its messages
        // delivered there, and again to the session rebuilt from the record).
        let mut registry = lock(&self.registry);
        let (slot, peer) =
            {
                let held = registry.sessions.get(&session).and_then(|peer| {
                    match registry.peers.get(peer) {
                        Some(Entry::Session(slot)) => Some((slot.clone(), *peer)),
                        _ => None,
                    }
                });
                let held_facts = held.as_ref().map(|(slot, _)| {
                    let slot = lock(slot);
                    (slot.subject.clone(), slot.engine.secret())
                });
                // What the store had (read and claimed by `preload`), for a
                // HELLO that resumes a session not held here.
                let (claim, saved) = if held.is_some() {
                    (new_claim(), None)
                } else if new {
                    // Read only (a shared store), for `route` to see a
                    // session the id already names; never restored.
                    let saved = match preloaded {
                        Some(Preloaded { saved, .. }) => saved.map_err(AttachError::Store)?,
                        None => None,
                    };
                    (new_claim(), saved)
                } else {
                    let Preloaded { claim, saved } = preloaded.unwrap_or_else(|| {
                        let claim = new_claim();
                        let saved = self.store.claim(&session, claim);
                        Preloaded { claim, saved }
                    });
                    (claim, saved.map_err(AttachError::Store)?)
                };
                if saved.is_some() && !new {
                    self.metrics.inc(&self.metrics.store_claims);
                }
                let wall = wall_ms();
                let durable = self.committer.is_some();
                let decision = route::route(
                    route::Hello {
                        session,
                        new,
                        subject,
                        secret,
                    },
                    held_facts.as_ref().map(|(subject, secret)| route::Held {
                        subject: subject.as_deref(),
                        secret: *secret,
                    }),
                    saved.as_ref().map(|saved| route::Stored {
                        subject: saved.subject.as_deref(),
                        secret: saved.state.secret,
                        expired: saved.expired,
                        age_ms: wall.saturating_sub(saved.saved_wall_ms),
                    }),
                    route::Limits {
                        sessions: registry.sessions.len(),
                        // Near the memory budget, or this address or
                        // subject holding its share: no room for one more.
                        max_sessions: if self.over_budget.load(Ordering::Relaxed)
                            || self.share_taken(&registry, origin, subject)
                        {
                            registry.sessions.len()
                        } else {
                            self.config.max_sessions
                        },
                        record_ttl_ms: millis(self.config.session_record_ttl),
                        durable,
                    },
                );
                if decision == Route::Impostor {
                    // Someone who learned the id: a session of its own.
                    tracing::warn!(
                        ?session,
                        "a HELLO named a session without its secret: a new session instead"
                    );
                    self.metrics.inc(&self.metrics.resumes_refused);
                }
                match (decision, held) {
                    (Route::Attach, Some(found)) => found,
                    (Route::Overloaded, _) => return Err(AttachError::Overloaded),
                    (decision, _) => {
                        let seed = u64::from_le_bytes(random_bytes::<8>());
                        let config = self.config.engine.clone();
                        let saved = saved
                            .filter(|_| matches!(decision, Route::Restore | Route::FromRecord));
                        // What `adopt` needs of the stored session (its peer id,
                        // its rooms); a new one gets a fresh peer id.
                        let kept = saved.as_ref().map(|saved| SavedSession {
                            messages: Vec::new(),
                            ..saved.clone()
                        });
                        let peer = registry.fresh_peer();
                        let (id, built, claim) = match saved {
                            Some(saved) if decision == Route::Restore => (
                                session,
                                Engine::server_restore(
                                    config,
                                    seed,
                                    now,
                                    wall,
                                    saved.state,
                                    saved.messages,
                                ),
                                claim,
                            ),
                            Some(saved) => (
                                session,
                                Engine::server_from_record(
                                    config,
                                    seed,
                                    session,
                                    saved.state.inbound_delivered,
                                    saved.state.next_seq,
                                ),
                                claim,
                            ),
                            None => {
                                let id = if decision == Route::NewKeepingId {
                                    session
                                } else {
                                    SessionId(random_bytes())
                                };
                                let claim = new_claim();
                                if let Some(committer) = &self.committer {
                                    // Before anything the engine writes for it.
                                    committer.push(Change::Open {
                                        session: id,
                                        subject: subject.map(str::to_owned),
                                        claim,
                                        peer: peer.0,
                                    });
                                }
                                (id, Engine::server(config, seed, id), claim)
                            }
                        };
                        let mut engine = match built {
                            Ok(engine) => engine,
                            Err(error) => return Err(AttachError::Engine(error)),
                        };
                        // In memory only, no store operations (each copies a payload).
                        engine.set_persistence(durable);
                        let saved = kept.unwrap_or_else(|| SavedSession {
                            state: StoredSession {
                                secret: None,
                                session: id,
                                welcomed: false,
                                inbound_delivered: 0,
                                next_seq: 1,
                            },
                            subject: subject.map(str::to_owned),
                            saved_wall_ms: wall,
                            expired: true,
                            messages: Vec::new(),
                            claim,
                            peer: peer.0,
                            rooms: Vec::new(),
                        });
                        let (slot, peer) = self.adopt(&mut registry, id, engine, claim, &saved);
                        lock(&slot).origin = Some(origin);
                        count_up(&mut registry.by_origin, origin);
                        if let Some(subject) = subject {
                            count_up(&mut registry.by_subject, subject.to_owned());
                        }
                        (slot, peer)
                    }
                }
            };
        let waker = Arc::new(Notify::new());
        let mut guard = lock(&slot);
        let resumed_before = guard.engine.stats().resumes;
        guard.generation += 1;
        if let Some(old) = guard.waker.replace(waker.clone()) {
            // The superseded connection wakes, sees it is stale, and closes.
            old.notify_one();
        }
        guard.detached_at = None;
        // The new connection hands over what the old one did not get to.
        guard.keep_delivered();
        guard.engine.handle_open(now, Some(SUBPROTOCOL));
        guard.engine.handle_frame(now, true, hello);
        guard.drain(&self.metrics);
        let resumed = guard.engine.stats().resumes > resumed_before;
        let generation = guard.generation;
        drop(guard);
        drop(registry);
        Ok(Attached {
            slot,
            peer,
            generation,
            waker,
            resumed,
        })
    }

    pub(crate) fn register_plain(&self, peer: PeerId, tx: mpsc::Sender<PlainCmd>) {
        lock(&self.registry).peers.insert(peer, Entry::Plain(tx));
    }

    pub(crate) fn unregister_plain(&self, peer: PeerId) {
        let mut registry = lock(&self.registry);
        registry.peers.remove(&peer);
        registry.forget_rooms(peer);
    }

    /// Drop sessions detached for longer than the TTL; returns their peers.
    pub(crate) fn expire_sessions(&self) -> Vec<PeerId> {
        let ttl = self.config.session_ttl;
        let mut registry = lock(&self.registry);
        let expired: Vec<(SessionId, PeerId)> = registry
            .sessions
            .iter()
            .filter(|(_, peer)| match registry.peers.get(peer) {
                Some(Entry::Session(slot)) => {
                    lock(slot).detached_at.is_some_and(|at| at.elapsed() >= ttl)
                }
                _ => true,
            })
            .map(|(s, p)| (*s, *p))
            .collect();
        for (session, peer) in &expired {
            self.forget(&mut registry, session, *peer, true);
        }
        self.metrics
            .add(&self.metrics.sessions_expired, expired.len() as u64);
        expired.into_iter().map(|(_, p)| p).collect()
    }

    /// Forget every session's state at once (fault injection), keeping
    /// their records (`keep_records`: as if they had all expired) or not
    /// (a server that lost everything). Attached connections are closed.
    pub(crate) fn forget_all_sessions(&self, keep_records: bool) -> usize {
        let mut registry = lock(&self.registry);
        let sessions: Vec<(SessionId, PeerId)> =
            registry.sessions.iter().map(|(s, p)| (*s, *p)).collect();
        for (session, peer) in &sessions {
            self.forget(&mut registry, session, *peer, keep_records);
        }
        if !keep_records {
            self.write(Change::RemoveAll);
        }
        sessions.len()
    }

    /// Sum what the sessions hold against `max_memory`: from 90% the
    /// heaviest sessions are shed (their state dropped, their record kept,
    /// their connection closed 1013 at once) until 75% is left, and until
    /// then new sessions are refused (1013) and heavy ones not read. Each is logged. Its client resumes
    /// from the record: what the server had queued for it reaches it as a
    /// SKIP, nothing arrives twice.
    pub(crate) fn check_memory(&self) {
        let budget = self.config.max_memory;
        let mut registry = lock(&self.registry);
        let mut held: Vec<(u64, SessionId, PeerId)> = registry
            .sessions
            .iter()
            .filter_map(|(session, peer)| match registry.peers.get(peer) {
                Some(Entry::Session(slot)) => {
                    Some((lock(slot).recount(&self.memory), *session, *peer))
                }
                _ => None,
            })
            .collect();
        let mut total: u64 = held.iter().map(|(bytes, ..)| bytes).sum();
        self.metrics
            .memory_accounted
            .store(total, Ordering::Relaxed);
        if budget == 0 {
            return;
        }
        let refusing = self.near_budget(total);
        if self.over_budget.swap(refusing, Ordering::Relaxed) != refusing {
            tracing::warn!(
                held = total,
                budget,
                "{} new sessions: the sessions hold {}% of --max-memory",
                if refusing { "refusing" } else { "accepting" },
                total * 100 / budget
            );
        }
        if !refusing {
            return;
        }
        held.sort_unstable_by_key(|b| std::cmp::Reverse(b.0));
        let target = budget / 4 * 3;
        for (bytes, session, peer) in held {
            if total <= target {
                break;
            }
            if let Some(Entry::Session(slot)) = registry.peers.get(&peer) {
                lock(slot).kill.notify_one();
            }
            tracing::warn!(
                ?session,
                peer = peer.0,
                bytes,
                budget,
                "at 90% of --max-memory: the heaviest session is shed (closed 1013)"
            );
            self.forget(&mut registry, &session, peer, true);
            self.metrics.inc(&self.metrics.sessions_shed);
            total -= bytes;
        }
        drop(registry);
        self.metrics
            .memory_accounted
            .store(total, Ordering::Relaxed);
    }

    /// Whether `origin`, or `subject`, holds as many sessions as one may.
    fn share_taken(&self, registry: &Registry, origin: Origin, subject: Option<&str>) -> bool {
        let by_origin = registry.by_origin.get(&origin).copied().unwrap_or(0);
        let by_subject = subject
            .and_then(|s| registry.by_subject.get(s))
            .copied()
            .unwrap_or(0);
        let taken = by_origin >= self.config.max_sessions_per_address
            || by_subject >= self.config.max_sessions_per_subject;
        if taken {
            tracing::debug!(
                by_origin,
                by_subject,
                "an address or subject holds its share of sessions: refused 1013"
            );
        }
        taken
    }

    /// Whether `total` bytes held is 90% of the budget or more.
    fn near_budget(&self, total: u64) -> bool {
        let budget = self.config.max_memory;
        budget > 0 && total >= budget / 10 * 9
    }

    /// Whether a session holding `bytes` is read no further for now: the
    /// sessions near the budget, and it one of the heavy ones (over 1 MiB).
    /// Its connection stops reading until the check sheds someone.
    pub(crate) fn memory_bound(&self, bytes: u64) -> bool {
        bytes > HEAVY_SESSION && self.near_budget(self.memory.load(Ordering::Relaxed))
    }

    /// A connection's session was recounted: near the budget, the serve
    /// loop checks at once (not at its next sweep).
    pub(crate) fn counted(&self) {
        if self.near_budget(self.memory.load(Ordering::Relaxed)) {
            self.memory_pressure.notify_one();
        }
    }

    /// Drop a session's state, keeping its record if asked.
    fn forget(&self, registry: &mut Registry, session: &SessionId, peer: PeerId, keep: bool) {
        let slot = match registry.peers.get(&peer) {
            Some(Entry::Session(slot)) => Some(slot.clone()),
            _ => None,
        };
        // Closed first, recorded after: once its generation moved on, the
        // attached connection hands nothing more to the application, so
        // the record counts all it ever will. (Recorded first, a hand-over
        // starting in between reached the application uncounted, and the
        // client's retransmits of it were delivered again.)
        registry.remove_session(session, peer);
        if let Some(slot) = &slot {
            // What its sends wrote goes first (the instant may not be over).
            let mut slot = lock(slot);
            slot.flush_deferred();
            // No longer the server's to hold.
            let counted = std::mem::take(&mut slot.counted);
            self.memory.fetch_sub(counted, Ordering::Relaxed);
        }
        let change = match slot {
            Some(slot) if keep => {
                let slot = lock(&slot);
                Change::Expire {
                    session: *session,
                    state: slot.record(),
                    subject: slot.subject.clone(),
                    claim: slot.claim,
                    peer: peer.0,
                }
            }
            _ => Change::Remove { session: *session },
        };
        self.write(change);
    }

    /// Write `change` to the session store: queued behind the sessions'
    /// own changes for a durable store, at once for memory.
    fn write(&self, change: Change) {
        match &self.committer {
            Some(committer) => {
                committer.push(change);
            }
            None => {
                if let Err(error) = self.store.commit(wall_ms(), &[change]) {
                    tracing::warn!(%error, "the session store refused a record");
                }
            }
        }
    }

    /// Expire the stored sessions nobody holds, and drop old records
    /// (blocking: call it off the runtime's threads).
    pub(crate) fn sweep_store(&self) {
        // A snapshot: the store is not called with the registry locked,
        // nor the registry locked from inside the store.
        let held: std::collections::HashSet<SessionId> =
            lock(&self.registry).sessions.keys().copied().collect();
        let live = |session: &SessionId| held.contains(session);
        let retention = Retention {
            session_ttl_ms: millis(self.config.session_ttl),
            record_ttl_ms: millis(self.config.session_record_ttl),
            max_records: self.config.session_records,
        };
        if let Err(error) = self.store.sweep(wall_ms(), retention, &live) {
            tracing::warn!(%error, "sweeping the session store failed");
        }
        self.count_stored();
    }

    /// Set the `store_sessions` gauge (blocks: a store read).
    pub(crate) fn count_stored(&self) {
        if let Ok(stored) = self.store.count() {
            let stored = u64::try_from(stored).unwrap_or(u64::MAX);
            self.metrics.store_sessions.store(stored, Ordering::Relaxed);
        }
    }

    fn entry(&self, peer: PeerId) -> Option<EntryRef> {
        match lock(&self.registry).peers.get(&peer)? {
            Entry::Session(slot) => Some(EntryRef::Session(slot.clone())),
            Entry::Plain(tx) => Some(EntryRef::Plain(tx.clone())),
        }
    }
}

/// A session's state, shared.
type SlotRef = Arc<Mutex<Slot>>;

enum EntryRef {
    Session(Arc<Mutex<Slot>>),
    Plain(mpsc::Sender<PlainCmd>),
}

thread_local! {
    /// Inside an [`Shared::at_one_instant`] call on this thread: the
    /// instant and the wall-clock ms, once first read.
    static FROZEN: Cell<Option<Frozen>> = const { Cell::new(None) };
    /// Inside the outermost [`Shared::at_one_instant`] on this thread (with
    /// a durable store): the sessions whose store writes wait for its end.
    /// The session being delivered to (the instant's).
    static DEFERRED: RefCell<Option<(SessionId, Vec<SlotRef>)>> = const { RefCell::new(None) };
}

/// The session whose delivery this thread is in, if store writes may be
/// deferred here (inside an instant).
fn deferring() -> Option<SessionId> {
    DEFERRED.with(|deferred| deferred.borrow().as_ref().map(|(by, _)| *by))
}

/// Have `slot`'s deferred store writes pushed when the instant ends.
fn defer(slot: &Arc<Mutex<Slot>>) {
    DEFERRED.with(|deferred| {
        if let Some((_, slots)) = deferred.borrow_mut().as_mut() {
            slots.push(slot.clone());
        }
    });
}

#[derive(Clone, Copy, Default)]
struct Frozen {
    now: Option<Instant>,
    wall: Option<u64>,
}

/// Read a clock: outside [`Shared::at_one_instant`] now; inside, the
/// first read of it there (`field` picks which clock).
fn frozen_or<T: Copy>(field: fn(&mut Frozen) -> &mut Option<T>, read: fn() -> T) -> T {
    FROZEN.with(|cell| {
        let Some(mut frozen) = cell.get() else {
            return read();
        };
        let value = *field(&mut frozen).get_or_insert_with(read);
        cell.set(Some(frozen));
        value
    })
}

/// Wall-clock ms (the frozen ones inside [`Shared::at_one_instant`]).
/// Inbox messages taken per commit.
const PULL_BATCH: usize = 256;

/// How long [`Shared::preload`] waits for the store writes queued ahead.
const PRELOAD_WAIT: Duration = Duration::from_secs(2);

/// What [`Shared::preload`] read, under which claim.
pub(crate) struct Preloaded {
    claim: Claim,
    saved: Result<Option<SavedSession>, SessionStoreError>,
}

/// A node id: 8 random hex digits.
pub(crate) fn random_node_id() -> String {
    random_bytes::<4>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh fencing token.
fn new_claim() -> Claim {
    Claim(u64::from_le_bytes(random_bytes::<8>()))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn wall_ms() -> u64 {
    frozen_or(|frozen| &mut frozen.wall, read_wall_ms)
}

fn read_wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// OS randomness for session ids (they are resume credentials).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness (not seen on any supported host): fall back to
        // time and a counter, which keeps ids unique if not unguessable.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut rng =
            steadfast_core::Rng::new(nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed) << 48);
        for b in &mut bytes {
            *b = rng.next_u64() as u8;
        }
    }
    bytes
}

/// The application's way to reach peers: cheap to clone, usable from any
/// task or from inside a [`Handler`] callback.
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Send to one peer. For a session this queues in its outbox (delivered
    /// exactly once, in order, also after a reconnect within the TTL).
    pub fn send(&self, to: PeerId, message: Payload) -> Result<(), ServerError> {
        let shared = &self.shared;
        let Some(entry) = shared.entry(to) else {
            // Held by another server sharing the store: posted to its
            // session's inbox, committed with whatever this handler is
            // doing (dropped there if no session has that peer id).
            return match &shared.committer {
                Some(committer) if shared.store.shared() => {
                    let (binary, payload) = match message {
                        Payload::Binary(bytes) => (true, bytes),
                        Payload::Text(text) => (false, text.into_bytes()),
                    };
                    committer.push(Change::Post {
                        peer: to.0,
                        binary,
                        payload,
                        by: deferring(),
                    });
                    Ok(())
                }
                _ => Err(ServerError::UnknownPeer(to)),
            };
        };
        match entry {
            EntryRef::Session(arc) => {
                let mut slot = lock(&arc);
                let detached_bound = shared.config.session_detached_outbox_bytes;
                if slot.waker.is_none()
                    && slot.engine.queued_bytes() + message.len() > detached_bound
                {
                    // Nobody attached: bounded apart from an attached one.
                    return Err(ServerError::Send(SendError::QueueFull {
                        messages: slot.engine.queued(),
                        bytes: slot.engine.queued_bytes(),
                    }));
                }
                slot.engine.send(shared.now_ms(), wall_ms(), message)?;
                match deferring() {
                    Some(by) => {
                        if slot.drain_deferred(&shared.metrics, by) {
                            defer(&arc);
                        }
                    }
                    // The application's own send, outside any delivery:
                    // nobody sends it again, so it follows the session.
                    None => slot.drain_as(&shared.metrics, Forward::Always),
                }
                Ok(())
            }
            EntryRef::Plain(tx) => tx.try_send(PlainCmd::Send(message)).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ServerError::Busy(to),
                mpsc::error::TrySendError::Closed(_) => ServerError::UnknownPeer(to),
            }),
        }
    }

    /// Send to every peer but `except`; returns how many took it here. On
    /// a store shared with other servers, the peers they hold get it too,
    /// through their inboxes (not counted: known only there).
    pub fn broadcast(&self, message: Payload, except: Option<PeerId>) -> usize {
        let peers: Vec<PeerId> = lock(&self.shared.registry).peers.keys().copied().collect();
        self.post_elsewhere(&peers, &message, except, |binary, payload, except, by| {
            Change::Broadcast {
                binary,
                payload,
                except,
                by,
            }
        });
        self.send_each(peers, message, except)
    }

    /// On a store shared with other servers, post `message` to the peers
    /// they hold (`change` says which), but those here (`local`, reached
    /// directly) and `except`.
    fn post_elsewhere(
        &self,
        local: &[PeerId],
        message: &Payload,
        except: Option<PeerId>,
        change: impl FnOnce(bool, Vec<u8>, Vec<u64>, Option<SessionId>) -> Change,
    ) {
        let shared = &self.shared;
        let Some(committer) = shared.committer.as_ref().filter(|_| shared.store.shared()) else {
            return;
        };
        let (binary, payload) = match message {
            Payload::Binary(bytes) => (true, bytes.clone()),
            Payload::Text(text) => (false, text.clone().into_bytes()),
        };
        let except = local.iter().chain(except.as_ref()).map(|p| p.0).collect();
        // Made while delivering a message (see `Change::Post::by`).
        committer.push(change(binary, payload, except, deferring()));
    }

    /// Join `room`; returns its member count. Refused within the server's
    /// [`RoomLimits`](crate::RoomLimits): a name too long, a peer in too
    /// many rooms, a full room (joining a room it is in always succeeds).
    pub fn join(&self, peer: PeerId, room: &str) -> Result<usize, ServerError> {
        let limits = self.shared.config.rooms;
        if room.len() > limits.max_name_bytes {
            return Err(ServerError::RoomName(room.len(), limits.max_name_bytes));
        }
        let mut registry = lock(&self.shared.registry);
        if !registry.peers.contains_key(&peer) {
            return Err(ServerError::UnknownPeer(peer));
        }
        let members = registry.rooms.get(room).map_or(0, BTreeSet::len);
        let already = registry.rooms.get(room).is_some_and(|m| m.contains(&peer));
        if !already {
            let rooms = registry.member_of.get(&peer).map_or(0, BTreeSet::len);
            if rooms >= limits.max_per_peer {
                return Err(ServerError::TooManyRooms(rooms));
            }
            if members >= limits.max_members {
                return Err(ServerError::RoomFull(members));
            }
        }
        let members = registry.enter(peer, room);
        registry.store_rooms(peer);
        Ok(members)
    }

    /// Leave `room`.
    pub fn leave(&self, peer: PeerId, room: &str) {
        let mut registry = lock(&self.shared.registry);
        if let Some(rooms) = registry.member_of.get_mut(&peer) {
            rooms.remove(room);
        }
        if let Some(members) = registry.rooms.get_mut(room) {
            members.remove(&peer);
            if members.is_empty() {
                registry.rooms.remove(room);
            }
        }
        registry.store_rooms(peer);
    }

    /// Whether `peer` is in `room`.
    pub fn is_member(&self, peer: PeerId, room: &str) -> bool {
        lock(&self.shared.registry)
            .rooms
            .get(room)
            .is_some_and(|m| m.contains(&peer))
    }

    /// The members of `room`.
    pub fn members(&self, room: &str) -> Vec<PeerId> {
        lock(&self.shared.registry)
            .rooms
            .get(room)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Send to every member of `room` but `except`; returns how many took
    /// it here. On a store shared with other servers, the members they
    /// hold get it too, through their inboxes (not counted).
    pub fn send_room(&self, room: &str, message: Payload, except: Option<PeerId>) -> usize {
        let members = self.members(room);
        self.post_elsewhere(&members, &message, except, |binary, payload, except, by| {
            Change::RoomPost {
                room: room.to_owned(),
                binary,
                payload,
                except,
                by,
            }
        });
        self.send_each(members, message, except)
    }

    fn send_each(&self, peers: Vec<PeerId>, message: Payload, except: Option<PeerId>) -> usize {
        peers
            .into_iter()
            .filter(|p| Some(*p) != except)
            .filter(|p| self.send(*p, message.clone()).is_ok())
            .count()
    }

    /// Close the peer's current connection with `code` and `reason`. A
    /// session stays resumable (the client decides, by its close policy,
    /// whether to come back).
    pub fn close(&self, peer: PeerId, code: u16, reason: &str) {
        match self.shared.entry(peer) {
            Some(EntryRef::Session(slot)) => {
                let mut slot = lock(&slot);
                let now = self.shared.now_ms();
                slot.engine.handle_close(now, code, reason);
                slot.pending.push_back(Output::Disconnect {
                    code,
                    reason: reason.to_owned(),
                });
                slot.drain(&self.shared.metrics);
            }
            Some(EntryRef::Plain(tx)) => {
                let _ = tx.try_send(PlainCmd::Close(code, reason.to_owned()));
            }
            None => {}
        }
    }

    /// Forget every session, as a server that lost its state would: attached
    /// connections close (4909), and clients that come back are given new
    /// sessions and report `ResyncRequired`. Returns how many were dropped.
    pub fn forget_all_sessions(&self) -> usize {
        self.shared.forget_all_sessions(false)
    }

    /// Drop every session's state as if each had expired: attached
    /// connections close (4909), and clients that come back resume from
    /// the small record kept of each (no duplicates; messages the server
    /// had queued for them and lost are skipped). Returns how many.
    pub fn expire_all_sessions(&self) -> usize {
        self.shared.forget_all_sessions(true)
    }

    /// The faults injected so far, in order (at most 100,000 are kept).
    pub fn fault_log(&self) -> Vec<FaultRecord> {
        lock(&self.shared.fault_log).clone()
    }

    /// Every peer: sessions (attached or not) and plain connections.
    pub fn peers(&self) -> Vec<PeerId> {
        lock(&self.shared.registry).peers.keys().copied().collect()
    }

    /// Sessions held now.
    pub fn session_count(&self) -> usize {
        lock(&self.shared.registry).sessions.len()
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        self.shared.fresh_metrics()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_origin_is_the_ipv4_address_or_the_ipv6_slash_64() {
        let of = |text: &str| Origin::of(text.parse().expect("an address"));
        assert_eq!(of("10.0.0.1"), of("::ffff:10.0.0.1"));
        assert_ne!(of("10.0.0.1"), of("10.0.0.2"));
        assert_eq!(of("2001:db8:1:2::1"), of("2001:db8:1:2:ffff::9"));
        assert_ne!(of("2001:db8:1:2::1"), of("2001:db8:1:3::1"));
        // An IPv6 /64 never equals an IPv4 address.
        assert_ne!(of("::1"), of("0.0.0.1"));
    }

    fn shared() -> Shared {
        let shared = Shared::new(
            ServerConfig::default(),
            Arc::new(crate::handler::Echo),
            Arc::new(crate::sessions::MemorySessions::new()),
        );
        Arc::try_unwrap(shared).unwrap_or_else(|_| unreachable!("no other reference yet"))
    }

    #[test]
    fn inside_one_instant_the_clocks_stand_still_and_run_again_after() {
        let shared = shared();
        std::thread::sleep(Duration::from_millis(5));
        let (first, second, wall_first, wall_second) =
            shared.at_one_instant(SessionId([1; 16]), || {
                let first = shared.now_ms();
                let wall_first = wall_ms();
                std::thread::sleep(Duration::from_millis(30));
                (first, shared.now_ms(), wall_first, wall_ms())
            });
        assert_eq!(first, second);
        assert_eq!(wall_first, wall_second);
        std::thread::sleep(Duration::from_millis(30));
        assert!(shared.now_ms() >= second + 30, "the clock runs again");
    }

    #[test]
    fn a_panic_inside_does_not_stop_the_clock() {
        let shared = shared();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.at_one_instant(SessionId([1; 16]), || {
                let _ = shared.now_ms();
                panic!("a handler bug");
            })
        }));
        assert!(caught.is_err());
        let before = shared.now_ms();
        std::thread::sleep(Duration::from_millis(30));
        assert!(shared.now_ms() >= before + 30);
    }
}
