//! The engine: one session's state machine, for the client or the server.

use std::borrow::Cow;
use std::collections::VecDeque;

use crate::close;
use crate::codec::{self, Frame, SessionId, MIN_CHUNK_SIZE, SUBPROTOCOL};
use crate::config::{CloseAction, Config, ConfigError, Reliability};
use crate::error::{EngineError, SendError};
use crate::inbound::{Inbound, Received};
use crate::outbox::{frames_of, Entry, Message, Outbox};
use crate::record::{StoredMessage, StoredSession};
use crate::rng::Rng;
use crate::timer::{Timer, Timers};
use crate::types::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

/// The current connection, as far as the engine knows it.
#[derive(Debug)]
struct Conn {
    /// The socket reported open.
    open: bool,
    /// Set once messages can flow (reliable: after the handshake).
    mode: Option<Mode>,
    /// The transport's send buffer is full: queued messages wait.
    send_blocked: bool,
}

/// The sans-IO steadfast engine: one session, driven by its caller.
///
/// # Driving it
///
/// - **Inputs** (`handle_*`, and the app commands [`send`](Engine::send),
///   [`connect`](Engine::connect), [`close`](Engine::close),
///   [`reconnect`](Engine::reconnect)): each takes `now`, the driver's
///   monotonic time in ms. The engine never reads a clock and has no
///   randomness but the seed it was given.
/// - **Outputs**: after every input, drain [`poll_output`](Engine::poll_output)
///   until it returns [`Output::Timeout`] or `None`, acting on each output in
///   order: a [`Output::Persist`] must be applied before the outputs after it
///   (so a message is durable before it is transmitted, and the inbound
///   high-water mark before the ACK that depends on it).
/// - **Taken**: a message is the application's only once the driver says
///   it took it ([`handle_taken`](Engine::handle_taken), in the order the
///   engine handed them out); only then may an ACK, a HELLO or the stored
///   session cover it.
/// - **Read bursts**: when the socket has nothing more to read right now,
///   hand the application what was delivered, then call
///   [`handle_read_burst_end`](Engine::handle_read_burst_end) and drain
///   again: the burst's coalesced ACK goes out then.
/// - **Time**: sleep until the `Timeout`'s deadline or the next input, then
///   call [`handle_timeout`](Engine::handle_timeout) with the *current* time —
///   re-read the clock on waking; a late wake-up (throttled tab, sleeping
///   laptop) is expected and handled, and a spurious call is a no-op.
/// - **Re-entrancy**: outputs are plain data. Never call user code while the
///   engine is borrowed; collect outputs, release it, then dispatch events.
/// - After [`Output::Disconnect`] the driver closes that socket and must not
///   report its close back; the engine has already moved on.
///
/// # Roles
///
/// [`Engine::client`] owns the connection lifecycle: backoff with full
/// jitter after the cap, the close-code policy, hints, heartbeat.
/// [`Engine::server`] is the server side of one session: the same sequencing,
/// ACKs, dedup, reassembly and outbox, answering HELLO with WELCOME, with no
/// reconnecting of its own.
#[derive(Debug)]
pub struct Engine {
    role: Role,
    config: Config,
    rng: Rng,
    state: State,
    timers: Timers,
    out: VecDeque<Output>,
    session: SessionId,
    welcomed: bool,
    /// The resume secret (see [`StoredSession::secret`]): a client's is
    /// sent in every HELLO; a server's session is bound to the first one
    /// it is sent.
    secret: Option<[u8; 16]>,
    /// Client, `Reliability::Auto`: a server that selected `steadfast.v1`
    /// answered HELLO with something other than WELCOME, so it does not
    /// speak the protocol; later connections to it stay plain.
    peer_not_steadfast: bool,
    outbox: Outbox,
    inbound: Inbound,
    next_receipt: u64,
    /// Emit `Persist` outputs (off: nothing would keep them).
    persist: bool,
    conn: Option<Conn>,
    /// Consecutive connections that did not become healthy.
    attempt: u32,
    /// When the connection was lost, until one proves healthy again.
    failing_since: Option<u64>,
    /// Retries since the outage outlasted `fast_phase_ms`.
    slow_attempt: u32,
    /// An auth refresh happened; the next auth rejection is final.
    auth_refreshed: bool,
    chunk_size: usize,
    peer_max_message: u64,
    /// The receive window the server announced on this connection
    /// (`usize::MAX`: none).
    peer_window: usize,
    /// Seqs of the messages handed out (`Event::Message`) that the
    /// application has not taken yet, oldest first; `None` for those of a
    /// session a resync gave up. Everything before the first seq here is
    /// the application's: the mark ACKs and the store carry.
    untaken: VecDeque<Option<u64>>,
    /// An ACK went out while messages were untaken: send another as the
    /// application takes them.
    ack_owed: bool,
    /// The mark the peer last heard from us (ACK, HELLO or WELCOME): an
    /// ACK that would say no more is not sent.
    acked_out: u64,
    /// A duplicate arrived since the last ACK: the peer may have missed
    /// it, so the next ACK goes out even if the mark did not move.
    duplicate_pending: bool,
    /// Deliveries (or duplicates) since the last ACK.
    pending_ack: u64,
    /// Payload bytes delivered since the last ACK.
    pending_ack_bytes: u64,
    last_rx: u64,
    probe_sent_at: Option<u64>,
    ping_id: u64,
    ping_sent_at: Option<(u64, u64)>,
    /// A plain-mode pass stopped at its budget: more to put on the wire.
    plain_more: bool,
    /// Plain-mode payload bytes in `out`, not yet taken by the driver.
    plain_pending: usize,
    stats: Stats,
}

impl Engine {
    /// A client engine with a fresh session id drawn from `seed`.
    pub fn client(config: Config, seed: u64) -> Result<Engine, ConfigError> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let session = SessionId(rng.bytes16());
        Ok(Engine::new(Role::Client, config, rng, session, 1, 0))
    }

    /// The server side of session `session` (see [`Engine`] docs). The server
    /// creates one per session it knows; for a HELLO naming a session it
    /// does not know (and not `NEW`), it creates one with a fresh id, and the
    /// client resynchronises.
    pub fn server(config: Config, seed: u64, session: SessionId) -> Result<Engine, ConfigError> {
        config.validate()?;
        let mut engine = Engine::new(Role::Server, config, Rng::new(seed), session, 1, 0);
        engine.welcomed = false;
        Ok(engine)
    }

    /// The server side of session `session` rebuilt from the small record
    /// kept after its state expired: the inbound seq it had delivered
    /// (taken) through, and the next outbound seq it would have assigned.
    /// The client resumes it: it drops what `delivered` covers and sends
    /// the rest under the same seqs (no duplicates); the outbound messages
    /// lost with the state reach it as a SKIP.
    pub fn server_from_record(
        config: Config,
        seed: u64,
        session: SessionId,
        delivered: u64,
        next_seq: u64,
    ) -> Result<Engine, ConfigError> {
        config.validate()?;
        let mut engine = Engine::new(
            Role::Server,
            config,
            Rng::new(seed),
            session,
            next_seq,
            delivered,
        );
        engine.welcomed = true;
        Ok(engine)
    }

    /// Rebuild a client from a store's contents after a restart. Returns the
    /// engine and the receipts it gave the restored messages, by seq.
    ///
    /// `wall_ms` is the current wall-clock time (for TTLs). Restored messages
    /// count as possibly sent. Records for seqs at or above the session's
    /// `next_seq` are ignored (they cannot have been assigned).
    pub fn restore(
        config: Config,
        seed: u64,
        now: u64,
        wall_ms: u64,
        session: Option<StoredSession>,
        messages: Vec<StoredMessage>,
    ) -> Result<(Engine, Vec<(u64, Receipt)>), ConfigError> {
        Engine::rebuild(Role::Client, config, seed, now, wall_ms, session, messages)
    }

    /// The server side of a session rebuilt from a durable session store
    /// after the server restarted (or another node took the session over):
    /// the inbound seq delivered through, the next outbound seq and the
    /// outbound messages not yet acknowledged, each under its seq. Its
    /// client resumes it: what it already has is dropped by seq, the rest
    /// is sent again byte for byte; seqs before `next_seq` held by no
    /// record reach it as a SKIP.
    pub fn server_restore(
        config: Config,
        seed: u64,
        now: u64,
        wall_ms: u64,
        session: StoredSession,
        messages: Vec<StoredMessage>,
    ) -> Result<Engine, ConfigError> {
        let welcomed = session.welcomed;
        let (mut engine, _) = Engine::rebuild(
            Role::Server,
            config,
            seed,
            now,
            wall_ms,
            Some(session),
            messages,
        )?;
        engine.welcomed = welcomed;
        Ok(engine)
    }

    fn rebuild(
        role: Role,
        config: Config,
        seed: u64,
        now: u64,
        wall_ms: u64,
        session: Option<StoredSession>,
        mut messages: Vec<StoredMessage>,
    ) -> Result<(Engine, Vec<(u64, Receipt)>), ConfigError> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        StoredMessage::sort_by_seq(&mut messages);
        let (session, welcomed, delivered, next_seq, secret) = match session {
            Some(s) => (
                s.session,
                s.welcomed,
                s.inbound_delivered,
                s.next_seq,
                s.secret,
            ),
            // Messages without a session record: keep them, in a new session.
            None => (
                SessionId(rng.bytes16()),
                false,
                0,
                messages.last().map_or(1, |m| m.seq + 1),
                None,
            ),
        };
        let mut engine = Engine::new(role, config, rng, session, next_seq, delivered);
        engine.welcomed = welcomed;
        engine.secret = secret;
        let mut receipts = Vec::new();
        for m in messages {
            let receipt = engine.new_receipt();
            let expires_at =
                (m.expires_wall_ms != 0).then(|| now + m.expires_wall_ms.saturating_sub(wall_ms));
            let seq = m.seq;
            let restored = engine.outbox.restore(Message {
                seq,
                receipt,
                binary: m.binary,
                payload: m.payload,
                enqueued_wall_ms: m.enqueued_wall_ms,
                expires_wall_ms: m.expires_wall_ms,
                expires_at,
                maybe_sent: true,
            });
            if restored {
                receipts.push((seq, receipt));
            }
        }
        engine.arm_expiry();
        Ok((engine, receipts))
    }

    fn new(
        role: Role,
        config: Config,
        rng: Rng,
        session: SessionId,
        next_seq: u64,
        delivered: u64,
    ) -> Engine {
        let chunk_size = config.chunk_size;
        let peer_max_message = config.limits.max_message_size;
        Engine {
            role,
            config,
            rng,
            state: State::Idle,
            timers: Timers::default(),
            out: VecDeque::new(),
            session,
            welcomed: false,
            secret: None,
            peer_not_steadfast: false,
            outbox: Outbox::new(next_seq),
            inbound: Inbound::new(delivered),
            next_receipt: 0,
            persist: true,
            conn: None,
            attempt: 0,
            failing_since: None,
            slow_attempt: 0,
            auth_refreshed: false,
            chunk_size,
            peer_max_message,
            peer_window: usize::MAX,
            untaken: VecDeque::new(),
            ack_owed: false,
            acked_out: delivered,
            duplicate_pending: false,
            pending_ack: 0,
            pending_ack_bytes: 0,
            last_rx: 0,
            probe_sent_at: None,
            ping_id: 0,
            ping_sent_at: None,
            plain_more: false,
            plain_pending: 0,
            stats: Stats::default(),
        }
    }

    // ----- getters -----

    /// The lifecycle state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The resume secret (see [`StoredSession::secret`]).
    pub fn secret(&self) -> Option<[u8; 16]> {
        self.secret
    }

    /// The session id.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Whether to emit [`Output::Persist`] (on by default). A driver with
    /// no store turns it off: the engine then skips building records,
    /// which copy each payload.
    pub fn set_persistence(&mut self, on: bool) {
        self.persist = on;
    }

    /// The highest receipt handed out so far (by `send`, or to the
    /// messages `restore` put back); 0 for none.
    pub fn last_receipt(&self) -> u64 {
        self.next_receipt
    }

    /// The largest payload `send` accepts: the configured limit, and the
    /// peer's once a handshake announced it (the last one heard, also
    /// while disconnected).
    pub fn max_message_size(&self) -> u64 {
        self.config.max_send_size().min(self.peer_max_message)
    }

    /// Whether a `size`-byte message fits in the outbox now, without
    /// dropping anything.
    pub fn has_room(&self, size: usize) -> bool {
        self.config.outbox.fits(
            self.outbox.len() + 1,
            self.outbox.bytes().saturating_add(size),
        )
    }

    /// Messages waiting for an ACK (or to be sent).
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// The messages waiting for an ACK (or to be sent), oldest first: each
    /// one's receipt, whether it is binary, and its payload. A restarted
    /// client shows the application what it restored with this.
    pub fn queued_messages(&self) -> impl Iterator<Item = (Receipt, bool, &[u8])> + '_ {
        self.outbox
            .messages()
            .map(|m| (m.receipt, m.binary, m.payload.as_slice()))
    }

    /// Payload bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.outbox.bytes()
    }

    /// The next outbound seq `send` will assign.
    pub fn next_seq(&self) -> u64 {
        self.outbox.next_seq
    }

    /// Highest inbound seq delivered in order (handed out, taken or not).
    pub fn delivered(&self) -> u64 {
        self.inbound.delivered
    }

    /// Highest inbound seq the application has, with everything before
    /// it: what ACKs, HELLO and the stored session carry. Below
    /// [`delivered`](Engine::delivered) while handed-out messages wait to
    /// be taken ([`handle_taken`](Engine::handle_taken)).
    pub fn taken(&self) -> u64 {
        match self.untaken.iter().flatten().next() {
            Some(&seq) => seq - 1,
            None => self.inbound.delivered,
        }
    }

    /// Messages handed out that the application has not taken yet.
    pub fn untaken(&self) -> usize {
        self.untaken.len()
    }

    /// Whether an ACK waits for the application to take messages: a
    /// driver that learns of takes lazily should tell the engine of the
    /// next one at once.
    pub fn ack_waits_for_take(&self) -> bool {
        self.ack_owed
    }

    /// Bytes held for reordering and reassembly.
    pub fn buffered_bytes(&self) -> usize {
        self.inbound.held_bytes()
    }

    /// The current chunk size (halved after a 1009 close).
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Counters: frames, bytes, messages, resends, duplicates, ACKs, chunks,
    /// connections, resumes, the latest RTT.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The earliest timer deadline.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.next()
    }

    /// The next output; `Timeout` or `None` ends a drain.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.out.is_empty() && self.plain_more {
            // The next pass of a plain-mode queue, now that the last one was
            // taken (and the driver could report a full send buffer).
            self.transmit_more();
        }
        if let Some(output) = self.out.pop_front() {
            if let Output::Transmit(t) = &output {
                self.plain_pending = self.plain_pending.saturating_sub(t.data.len().max(1));
            }
            return Some(output);
        }
        self.timers.next().map(Output::Timeout)
    }

    // ----- app commands -----

    /// Start connecting (from `Idle`, or again after `Closed`).
    pub fn connect(&mut self, now: u64) {
        if self.role == Role::Client && matches!(self.state, State::Idle | State::Closed { .. }) {
            self.reset_backoff();
            self.auth_refreshed = false;
            self.start_attempt(now);
        }
    }

    /// Close for good (until `connect` is called again). Queued messages
    /// stay queued (and in the store); nothing is failed.
    pub fn close(&mut self, now: u64) {
        let _ = now;
        if self.conn.take().is_some() {
            self.emit(Output::Disconnect {
                code: close::NORMAL,
                reason: String::new(),
            });
        }
        self.timers.clear();
        self.set_state(State::Closed {
            reason: StopReason::Closed,
        });
    }

    /// Drop the current connection (if any) and connect again soon.
    pub fn reconnect(&mut self, now: u64) {
        if self.role != Role::Client || matches!(self.state, State::Closed { .. } | State::Idle) {
            return;
        }
        if self.conn.take().is_some() {
            self.emit(Output::Disconnect {
                code: close::NORMAL,
                reason: "reconnect".into(),
            });
            self.end_connection();
            self.after_disconnect(
                now,
                DisconnectReason::Requested,
                CloseAction::Reconnect,
                true,
            );
        } else {
            self.timers.stop(Timer::Retry);
            self.start_attempt(now);
        }
    }

    /// Queue a message. `wall_ms` is wall-clock time (for the TTL, which
    /// survives restarts). The receipt resolves with `Acked` (reliable),
    /// `Sent` (plain) or `Failed`.
    pub fn send(&mut self, now: u64, wall_ms: u64, payload: Payload) -> Result<Receipt, SendError> {
        let receipt = Receipt(self.next_receipt + 1);
        self.send_with_receipt(now, wall_ms, payload, receipt)
    }

    /// [`Engine::send`] with the receipt chosen by the caller: a driver
    /// that hands receipts out before the engine sees the message. Each
    /// must be unique and above [`Engine::last_receipt`] as it was after
    /// [`Engine::restore`]; the engine's own numbering continues above the
    /// highest one used.
    pub fn send_with_receipt(
        &mut self,
        now: u64,
        wall_ms: u64,
        payload: Payload,
        receipt: Receipt,
    ) -> Result<Receipt, SendError> {
        let size = payload.len();
        let limit = self.max_message_size();
        if size as u64 > limit {
            return Err(SendError::TooLarge {
                size: size as u64,
                limit,
            });
        }
        let overflow = self.config.outbox.overflow;
        while !self.has_room(size) {
            let full = SendError::QueueFull {
                messages: self.outbox.len(),
                bytes: self.outbox.bytes(),
            };
            if overflow == crate::config::Overflow::Reject {
                return Err(full);
            }
            let Some(dropped) = self.outbox.drop_oldest_unsent() else {
                return Err(full);
            };
            self.fail(dropped, FailReason::Dropped);
        }
        self.next_receipt = self.next_receipt.max(receipt.0);
        let (binary, payload) = payload.into_parts();
        let ttl = self.config.outbox.ttl_ms;
        let message = Message {
            seq: 0,
            receipt,
            binary,
            payload,
            enqueued_wall_ms: wall_ms,
            expires_wall_ms: ttl.map_or(0, |t| wall_ms.saturating_add(t).max(1)),
            expires_at: ttl.map(|t| now.saturating_add(t)),
            maybe_sent: false,
        };
        // Without persistence, no copy of the payload for a record.
        let record = self.persist.then(|| StoredMessage {
            seq: self.outbox.next_seq,
            binary: message.binary,
            payload: message.payload.clone(),
            enqueued_wall_ms: message.enqueued_wall_ms,
            expires_wall_ms: message.expires_wall_ms,
        });
        self.outbox.push(message);
        if let Some(record) = record {
            self.emit(Output::Persist(PersistOp::Put(record)));
            self.persist_session();
        }
        self.arm_expiry();
        self.transmit_more();
        Ok(receipt)
    }

    /// The driver refreshed credentials (`ok`) or could not (`!ok`) after
    /// [`Event::RefreshAuth`].
    pub fn handle_auth_refreshed(&mut self, now: u64, ok: bool) {
        if self.state
            != (State::Suspended {
                reason: SuspendReason::AwaitingAuth,
            })
        {
            return;
        }
        if ok {
            self.start_attempt(now);
        } else {
            self.stop(StopReason::AuthFailed, EngineError::AuthFailed);
        }
    }

    // ----- inputs -----

    /// The driver could not get credentials for the connection it was
    /// asked to open (its auth hook failed), so no socket was opened. Like
    /// a rejected token: one refresh ([`Event::RefreshAuth`]) if allowed
    /// and not just done, otherwise stop with [`StopReason::AuthFailed`].
    /// Never a retry loop.
    pub fn handle_auth_unavailable(&mut self, now: u64) {
        let _ = now;
        if self.role != Role::Client || self.conn.as_ref().is_none_or(|c| c.open) {
            return;
        }
        self.conn = None;
        self.end_connection();
        if self.config.can_refresh_auth && !self.auth_refreshed {
            self.request_auth_refresh();
        } else {
            self.stop(StopReason::AuthFailed, EngineError::AuthFailed);
        }
    }

    /// The socket opened; `protocol` is the subprotocol the server selected.
    pub fn handle_open(&mut self, now: u64, protocol: Option<&str>) {
        if self.role == Role::Server {
            // A client (re)connected to this session. A new connection
            // supersedes the previous one (the driver closes the old socket).
            if self.conn.is_some() {
                self.end_connection();
            }
            self.stats.connects += 1;
            self.conn = Some(Conn {
                open: true,
                mode: None,
                send_blocked: false,
            });
            self.last_rx = now;
            self.timers.set(
                Timer::Connect,
                now + self.config.limits.handshake_timeout_ms,
            );
            self.set_state(State::Connecting { attempt: 0 });
            return;
        }
        let Some(conn) = self.conn.as_mut().filter(|c| !c.open) else {
            return;
        };
        conn.open = true;
        self.last_rx = now;
        if protocol == Some(SUBPROTOCOL)
            && self.config.reliability != Reliability::Off
            && !self.peer_not_steadfast
        {
            let hello = Frame::Hello {
                new: !self.welcomed,
                session: self.session,
                delivered: self.taken(),
                max_message_size: self.config.limits.max_message_size,
                secret: self.secret,
            };
            self.acked_out = self.taken();
            self.transmit(&hello);
            self.timers.set(
                Timer::Connect,
                now + self.config.limits.handshake_timeout_ms,
            );
        } else if self.config.reliability == Reliability::Required {
            self.refuse_plain();
        } else {
            self.become_open(now, Mode::Plain);
        }
    }

    /// One WebSocket message from the peer.
    pub fn handle_frame(&mut self, now: u64, binary: bool, data: &[u8]) {
        self.frame_in(now, binary, Cow::Borrowed(data));
    }

    /// [`Engine::handle_frame`] for a message the caller owns: in plain
    /// mode it becomes the application's message without a copy.
    pub fn handle_frame_owned(&mut self, now: u64, binary: bool, data: Vec<u8>) {
        self.frame_in(now, binary, Cow::Owned(data));
    }

    fn frame_in(&mut self, now: u64, binary: bool, data: Cow<'_, [u8]>) {
        let Some(conn) = self.conn.as_ref().filter(|c| c.open) else {
            return;
        };
        let mut mode = conn.mode;
        if mode.is_none() && self.role == Role::Client && !self.is_handshake_answer(binary, &data) {
            // The server selected steadfast.v1 (many echo servers select the
            // first subprotocol offered) but does not speak it.
            let ours = self.is_our_hello(binary, &data);
            if !self.not_steadfast(now) {
                return;
            }
            if ours {
                // The echo of our own HELLO: nobody's message.
                return;
            }
            mode = Some(Mode::Plain);
        }
        self.stats.frames_in += 1;
        self.stats.bytes_in += data.len() as u64;
        self.last_rx = now;
        self.probe_sent_at = None;
        self.arm_liveness(now);
        if mode == Some(Mode::Plain) {
            let payload = if binary {
                Payload::Binary(data.into_owned())
            } else {
                match String::from_utf8(data.into_owned()) {
                    Ok(text) => Payload::Text(text),
                    Err(_) => {
                        return self.emit(Output::Event(Event::Error(EngineError::InvalidUtf8)))
                    }
                }
            };
            self.stats.messages_in += 1;
            // Counted for `handle_taken`, which counts every message.
            self.untaken.push_back(None);
            return self.emit(Output::Event(Event::Message(payload)));
        }
        if !binary {
            return self
                .protocol_error(now, EngineError::Protocol("text message in reliable mode"));
        }
        let frame = match codec::decode(&data, self.config.limits.max_message_size) {
            Ok(frame) => frame,
            Err(e) => return self.protocol_error(now, EngineError::Decode(e)),
        };
        let handshaken = mode == Some(Mode::Reliable);
        match frame {
            Frame::Ping { id } => self.transmit(&Frame::Pong { id }),
            Frame::Pong { id } => {
                if let Some((sent_id, at)) = self.ping_sent_at {
                    if sent_id == id {
                        self.ping_sent_at = None;
                        let rtt = now.saturating_sub(at);
                        self.stats.rtt_ms = Some(rtt);
                        self.emit(Output::Event(Event::Rtt(rtt)));
                    }
                }
            }
            Frame::Welcome {
                session,
                delivered,
                max_message_size,
                window,
                ..
            } if self.role == Role::Client && !handshaken => {
                self.on_welcome(now, session, delivered, max_message_size, window)
            }
            Frame::Hello {
                session,
                delivered,
                max_message_size,
                secret,
                ..
            } if self.role == Role::Server && !handshaken => {
                self.on_hello(now, session, delivered, max_message_size, secret)
            }
            Frame::Data {
                seq,
                binary,
                chunk,
                payload,
            } if handshaken => {
                if chunk.is_some() {
                    self.stats.chunks_in += 1;
                }
                let limits = &self.config.limits;
                let result = self
                    .inbound
                    .on_data(now, seq, binary, chunk, payload, limits);
                self.on_received(now, result);
            }
            Frame::Skip { first, last } if handshaken => {
                let result = self.inbound.on_skip(first, last, &self.config.limits);
                self.on_received(now, result);
            }
            Frame::Ack { delivered } if handshaken => {
                self.stats.acks_in += 1;
                match self.outbox.ack_through(delivered) {
                    Some(acked) => {
                        for m in acked {
                            self.resolve(m);
                        }
                        self.transmit_more();
                    }
                    None => {
                        self.protocol_error(now, EngineError::Protocol("ACK for a seq never sent"))
                    }
                }
            }
            _ => self.protocol_error(
                now,
                EngineError::Protocol("frame not allowed in this state"),
            ),
        }
    }

    /// The connection closed (not after a `Disconnect` the engine asked for).
    pub fn handle_close(&mut self, now: u64, code: u16, reason: &str) {
        if self.conn.take().is_none() {
            return;
        }
        self.end_connection();
        if self.role == Role::Server {
            self.set_state(State::Idle);
            return;
        }
        if code == close::TOO_BIG {
            // The server (or a proxy) found a message too big: send smaller chunks.
            self.chunk_size = (self.chunk_size / 2).max(MIN_CHUNK_SIZE);
        }
        let action = self.config.close_policy.decide(code, reason);
        let reason = DisconnectReason::Closed {
            code,
            reason: reason.to_owned(),
        };
        self.after_disconnect(now, reason, action, false);
    }

    /// The transport's send buffer filled up (`blocked`) or drained.
    ///
    /// While blocked, no queued message goes on the wire (ACKs, pings and
    /// the handshake still do): a slow link keeps messages in the outbox,
    /// which is bounded, persisted and counted, rather than in a socket
    /// buffer that is none of those. It applies to the current connection;
    /// a new one starts unblocked.
    pub fn set_send_blocked(&mut self, blocked: bool) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let was = std::mem::replace(&mut conn.send_blocked, blocked);
        if was && !blocked {
            self.transmit_more();
        }
    }

    /// The driver has read everything the socket had for now (its next
    /// read would wait), and the application has been handed what the
    /// drains after those reads delivered.
    ///
    /// The ACK coalesced over the burst goes out now, instead of waiting
    /// for `ack.delay_ms` or `ack.every`: a sender that awaits each message
    /// hears back one round trip after its peer read it, and a stream read
    /// in bursts costs one ACK per burst. The ACK tells the peer it may
    /// forget the messages: it must not reach the wire before the
    /// application has them. A driver that dispatches events after a drain
    /// calls this in a drain of its own; one that hands messages over in
    /// output order, or before it writes a drain's frames, may call it
    /// right after the reads. A driver that reads one message at a time
    /// may call it after each.
    pub fn handle_read_burst_end(&mut self) {
        if self.pending_ack > 0 && self.config.ack.at_read_burst_end {
            self.send_ack();
        }
    }

    /// The application took the next `count` messages the engine handed
    /// out ([`Event::Message`], in order): they are its own now, and only
    /// now may an ACK (or the stored session, or a HELLO) say so. A
    /// message handed out but never taken is sent again after a crash,
    /// never lost. If an ACK went out while they waited, another follows
    /// now. Counts beyond what was handed out are ignored.
    pub fn handle_taken(&mut self, count: usize) {
        let count = count.min(self.untaken.len());
        self.untaken.drain(..count);
        if self.ack_owed && count > 0 {
            self.send_ack();
        }
    }

    /// A hint from the host environment.
    pub fn handle_hint(&mut self, now: u64, hint: Hint) {
        if self.role != Role::Client {
            return;
        }
        match hint {
            Hint::Offline => {
                if matches!(self.state, State::Closed { .. } | State::Idle) {
                    return;
                }
                if self.conn.take().is_some() {
                    self.emit(Output::Disconnect {
                        code: close::OFFLINE,
                        reason: "offline".into(),
                    });
                    self.end_connection();
                }
                self.timers.stop(Timer::Retry);
                if !matches!(self.state, State::Suspended { .. }) {
                    self.set_state(State::Suspended {
                        reason: SuspendReason::Offline,
                    });
                }
            }
            Hint::Online | Hint::Visible | Hint::PageShow => match self.state {
                State::Suspended {
                    reason: SuspendReason::Offline,
                }
                | State::BackingOff { .. } => {
                    self.timers.stop(Timer::Retry);
                    self.start_attempt(now);
                }
                // Timers may have slept: check the peer now.
                State::Open { .. } => self.probe(now),
                _ => {}
            },
            Hint::Hidden => {}
        }
    }

    /// Fire every timer due at `now`. A no-op when none is due.
    pub fn handle_timeout(&mut self, now: u64) {
        for (timer, _deadline) in self.timers.take_due(now) {
            match timer {
                Timer::Connect => {
                    if self.conn.is_some() && self.abort(EngineError::ConnectTimeout).is_some() {
                        self.after_disconnect(
                            now,
                            DisconnectReason::ConnectTimeout,
                            CloseAction::Reconnect,
                            false,
                        );
                    }
                }
                Timer::Retry => {
                    if matches!(self.state, State::BackingOff { .. }) {
                        self.start_attempt(now);
                    }
                }
                Timer::Healthy => self.reset_backoff(),
                Timer::Ack => self.send_ack(),
                Timer::Ping => {
                    self.probe(now);
                    if let Some(hb) = &self.config.heartbeat {
                        self.timers.set(Timer::Ping, now + hb.interval_ms);
                    }
                }
                // Late or not, liveness is judged from the last probe: a
                // timer that slept sends a probe first and waits from now.
                Timer::Liveness => self.check_liveness(now),
                Timer::Gap => {
                    if self.inbound.has_gap() {
                        self.protocol_error(now, EngineError::GapTimeout);
                    }
                }
                Timer::Partial => match self.inbound.oldest_partial() {
                    Some(start) if start + self.config.limits.max_partial_age_ms <= now => {
                        self.protocol_error(now, EngineError::PartialTimeout)
                    }
                    Some(start) => self.timers.set(
                        Timer::Partial,
                        start + self.config.limits.max_partial_age_ms,
                    ),
                    None => {}
                },
                Timer::Expiry => {
                    for m in self.outbox.expire(now) {
                        self.fail(m, FailReason::Expired);
                    }
                    self.arm_expiry();
                    self.transmit_more();
                }
            }
        }
    }

    // ----- internals -----

    fn emit(&mut self, output: Output) {
        if !self.persist && matches!(output, Output::Persist(_)) {
            return;
        }
        self.out.push_back(output);
    }

    fn transmit(&mut self, frame: &Frame<'_>) {
        let data = frame.to_vec();
        self.stats.record_out(frame, data.len());
        self.out
            .push_back(Output::Transmit(Transmit { binary: true, data }));
    }

    fn set_state(&mut self, state: State) {
        if self.state != state {
            self.state = state.clone();
            self.emit(Output::Event(Event::State(state)));
        }
    }

    fn new_receipt(&mut self) -> Receipt {
        self.next_receipt += 1;
        Receipt(self.next_receipt)
    }

    fn persist_session(&mut self) {
        let record = StoredSession {
            session: self.session,
            welcomed: self.welcomed,
            inbound_delivered: self.taken(),
            next_seq: self.outbox.next_seq,
            secret: self.secret,
        };
        self.emit(Output::Persist(PersistOp::Session(record)));
    }

    fn resolve(&mut self, m: Message) {
        self.emit(Output::Persist(PersistOp::Delete { seq: m.seq }));
        self.emit(Output::Event(Event::Acked(m.receipt)));
    }

    fn fail(&mut self, m: Message, reason: FailReason) {
        self.emit(Output::Persist(PersistOp::Delete { seq: m.seq }));
        self.emit(Output::Event(Event::Failed {
            receipt: m.receipt,
            reason,
            possibly_delivered: m.maybe_sent,
        }));
    }

    /// Wait for the driver to refresh credentials (once per healthy connection).
    fn request_auth_refresh(&mut self) {
        self.auth_refreshed = true;
        self.set_state(State::Suspended {
            reason: SuspendReason::AwaitingAuth,
        });
        self.emit(Output::Event(Event::RefreshAuth));
    }

    fn stop(&mut self, reason: StopReason, error: EngineError) {
        self.timers.clear();
        self.arm_expiry();
        self.emit(Output::Event(Event::Error(error)));
        self.set_state(State::Closed { reason });
    }

    fn start_attempt(&mut self, now: u64) {
        self.stats.connects += 1;
        self.conn = Some(Conn {
            open: false,
            mode: None,
            send_blocked: false,
        });
        self.emit(Output::Connect {
            offer_reliable: self.config.reliability != Reliability::Off,
        });
        self.timers
            .set(Timer::Connect, now + self.config.backoff.connect_timeout_ms);
        self.set_state(State::Connecting {
            attempt: self.attempt,
        });
    }

    /// A healthy connection (or a fresh start): retries begin small again.
    fn reset_backoff(&mut self) {
        self.attempt = 0;
        self.failing_since = None;
        self.slow_attempt = 0;
    }

    /// Forget the connection's timers and in-flight marks (the session stays).
    fn end_connection(&mut self) {
        for timer in [
            Timer::Connect,
            Timer::Healthy,
            Timer::Ack,
            Timer::Ping,
            Timer::Liveness,
            Timer::Gap,
        ] {
            self.timers.stop(timer);
        }
        self.pending_ack = 0;
        self.pending_ack_bytes = 0;
        // What was held for reordering or reassembly is not acknowledged:
        // the peer sends it again on the next connection. Dropped now, a
        // detached session holds none of it (a client cannot park partial
        // messages in the server and leave).
        let delivered = self.inbound.delivered;
        self.inbound.reset(delivered);
        self.probe_sent_at = None;
        self.ping_sent_at = None;
        self.outbox.rewind();
        self.arm_expiry();
    }

    fn after_disconnect(
        &mut self,
        now: u64,
        reason: DisconnectReason,
        action: CloseAction,
        client_caused: bool,
    ) {
        let (code, text) = match &reason {
            DisconnectReason::Closed { code, reason } => (*code, reason.clone()),
            _ => (0, String::new()),
        };
        match action {
            CloseAction::Stop => self.stop(
                StopReason::Rejected {
                    code,
                    reason: text.clone(),
                },
                EngineError::Rejected { code, reason: text },
            ),
            CloseAction::RefreshAuth if !self.config.can_refresh_auth || self.auth_refreshed => {
                // A second rejection right after a refresh: no loop.
                self.stop(
                    StopReason::Rejected { code, reason: text },
                    EngineError::AuthFailed,
                )
            }
            CloseAction::RefreshAuth => self.request_auth_refresh(),
            CloseAction::Reconnect | CloseAction::ReconnectSlow => {
                if action == CloseAction::ReconnectSlow {
                    // Two extra doublings that later retries keep.
                    self.attempt = self.attempt.saturating_add(2);
                }
                let backoff = &self.config.backoff;
                let since = *self.failing_since.get_or_insert(now);
                let delay = if client_caused && self.attempt == 0 {
                    self.rng.up_to(backoff.fast_retry_ms)
                } else {
                    let exponent = self.attempt.min(32);
                    let mut bound = backoff
                        .initial_ms
                        .saturating_mul(1u64 << exponent)
                        .min(backoff.max_ms);
                    if now.saturating_sub(since) >= backoff.fast_phase_ms {
                        // A long outage: ease off, doubling from the cap.
                        self.slow_attempt = self.slow_attempt.saturating_add(1);
                        bound = backoff
                            .max_ms
                            .saturating_mul(1u64 << self.slow_attempt.min(32))
                            .min(backoff.slow_max_ms);
                    }
                    // Full jitter *after* the cap: clients at the cap stay spread.
                    self.rng.up_to(bound)
                };
                self.attempt = self.attempt.saturating_add(1);
                let next_retry_at = now + delay;
                self.timers.set(Timer::Retry, next_retry_at);
                self.set_state(State::BackingOff {
                    attempt: self.attempt,
                    next_retry_at,
                    reason,
                });
            }
        }
    }

    /// Close the connection over `error`: Disconnect with its close code, an
    /// Error event, the connection's timers gone. Returns the code, or `None`
    /// for the server side (which just waits for the client to come back).
    fn abort(&mut self, error: EngineError) -> Option<u16> {
        let code = error.close_code();
        let mut reason = error.to_string();
        close::truncate_reason(&mut reason);
        self.conn = None;
        self.stats.errors += 1;
        self.emit(Output::Disconnect { code, reason });
        self.emit(Output::Event(Event::Error(error)));
        self.end_connection();
        if self.role == Role::Server {
            self.set_state(State::Idle);
            return None;
        }
        Some(code)
    }

    /// The peer broke the protocol or a limit: the close policy decides.
    fn protocol_error(&mut self, now: u64, error: EngineError) {
        if let Some(code) = self.abort(error) {
            let action = self.config.close_policy.decide(code, "");
            self.after_disconnect(now, DisconnectReason::ProtocolError { code }, action, false);
        }
    }

    /// The heartbeat found the peer dead: our own judgement, not the
    /// server's word, so reconnect with the fast first retry.
    fn peer_dead(&mut self, now: u64) {
        if self.abort(EngineError::DeadPeer).is_some() {
            self.after_disconnect(
                now,
                DisconnectReason::DeadPeer,
                CloseAction::Reconnect,
                true,
            );
        }
    }

    fn on_welcome(
        &mut self,
        now: u64,
        session: SessionId,
        delivered: u64,
        max: u64,
        window: Option<u64>,
    ) {
        if session != self.session {
            // The server lost our session: start a new one, renumber, re-send.
            let messages = self.outbox.drain_messages();
            self.outbox.renumber(messages);
            self.session = session;
            self.inbound.reset(0);
            // Messages of the old session still waiting to be taken count
            // for nothing in the new one.
            for seq in &mut self.untaken {
                *seq = None;
            }
            self.acked_out = 0;
            self.welcomed = true;
            self.emit(Output::Persist(PersistOp::Clear));
            let records = self.outbox.records();
            for record in records {
                self.emit(Output::Persist(PersistOp::Put(record)));
            }
            self.persist_session();
            self.stats.resyncs += 1;
            self.emit(Output::Event(Event::ResyncRequired));
        } else if !self.welcomed {
            self.welcomed = true;
            self.persist_session();
        } else {
            self.stats.resumes += 1;
        }
        self.peer_max_message = max;
        self.peer_window = window.map_or(usize::MAX, |w| usize::try_from(w).unwrap_or(usize::MAX));
        let Some(acked) = self.outbox.ack_through(delivered) else {
            return self.protocol_error(
                now,
                EngineError::Protocol("WELCOME acknowledges a seq never sent"),
            );
        };
        for m in acked {
            self.resolve(m);
        }
        self.reset_backoff();
        self.auth_refreshed = false;
        self.outbox.rewind();
        self.fail_oversized();
        // The peer may be behind what we dropped (plain-mode sends, a restart).
        if delivered < self.outbox.acked {
            self.transmit(&Frame::Skip {
                first: delivered + 1,
                last: self.outbox.acked,
            });
        }
        self.become_open(now, Mode::Reliable);
    }

    fn on_hello(
        &mut self,
        now: u64,
        session: SessionId,
        delivered: u64,
        max: u64,
        secret: Option<[u8; 16]>,
    ) {
        let known = session == self.session;
        // Bound to the first secret it is sent (the server's routing sent
        // only a HELLO with the same secret, or any to a session with none).
        let bind = self.secret.is_none() && secret.is_some();
        if bind {
            self.secret = secret;
        }
        if !known {
            self.stats.resyncs += 1;
        } else if self.welcomed {
            self.stats.resumes += 1;
        }
        let welcome = Frame::Welcome {
            resumed: known && self.welcomed,
            session: self.session,
            delivered: self.taken(),
            max_message_size: self.config.limits.max_message_size,
            window: Some(self.config.limits.receive_window),
        };
        self.acked_out = self.taken();
        if !self.welcomed || bind {
            // A durable server has the session (and its secret) before the
            // client hears of it.
            self.welcomed = true;
            self.persist_session();
        }
        self.transmit(&welcome);
        self.peer_max_message = max;
        self.outbox.rewind();
        if known {
            match self.outbox.ack_through(delivered) {
                Some(acked) => {
                    for m in acked {
                        self.resolve(m);
                    }
                }
                None => {
                    return self.protocol_error(
                        now,
                        EngineError::Protocol("HELLO acknowledges a seq never sent"),
                    )
                }
            }
            if delivered < self.outbox.acked {
                self.transmit(&Frame::Skip {
                    first: delivered + 1,
                    last: self.outbox.acked,
                });
            }
        }
        self.fail_oversized();
        self.become_open(now, Mode::Reliable);
    }

    /// The handshake announced the peer's limit: queued messages above it
    /// fail now (their seqs become a SKIP) instead of closing every
    /// connection they are sent on.
    fn fail_oversized(&mut self) {
        let limit = self.peer_max_message;
        for m in self
            .outbox
            .drop_unsent_where(|m| m.payload.len() as u64 > limit)
        {
            let size = m.payload.len() as u64;
            self.fail(m, FailReason::TooLarge { size, limit });
        }
    }

    /// Whether a client's first frame is one a steadfast.v1 server may
    /// send before WELCOME completes the handshake: WELCOME itself, or a
    /// PING or PONG.
    fn is_handshake_answer(&self, binary: bool, data: &[u8]) -> bool {
        binary
            && matches!(
                codec::decode(data, self.config.limits.max_message_size),
                Ok(Frame::Welcome { .. } | Frame::Ping { .. } | Frame::Pong { .. })
            )
    }

    /// Whether `data` is this client's HELLO (echoed back).
    fn is_our_hello(&self, binary: bool, data: &[u8]) -> bool {
        binary
            && matches!(
                codec::decode(data, self.config.limits.max_message_size),
                Ok(Frame::Hello { session, .. }) if session == self.session
            )
    }

    /// `Reliability::Required` and the server will not run steadfast.v1:
    /// close and stop.
    fn refuse_plain(&mut self) {
        self.conn = None;
        self.emit(Output::Disconnect {
            code: close::NORMAL,
            reason: "steadfast.v1 required".into(),
        });
        self.stop(
            StopReason::SubprotocolRefused,
            EngineError::SubprotocolRefused,
        );
    }

    /// The server accepted steadfast.v1 but answered HELLO with something
    /// else. `Reliability::Required`: stop. `Auto`: go on in plain mode
    /// on this connection and the next ones, and say so. Returns whether
    /// the connection goes on.
    fn not_steadfast(&mut self, now: u64) -> bool {
        if self.config.reliability == Reliability::Required {
            self.refuse_plain();
            return false;
        }
        self.peer_not_steadfast = true;
        self.become_open(now, Mode::Plain);
        // After the state: an application that gives up on errors before
        // the first open sees an open connection first.
        self.emit(Output::Event(Event::Error(EngineError::NotSteadfast)));
        true
    }

    fn become_open(&mut self, now: u64, mode: Mode) {
        if let Some(conn) = self.conn.as_mut() {
            conn.mode = Some(mode);
        }
        self.timers.stop(Timer::Connect);
        if self.role == Role::Client && mode == Mode::Plain {
            self.timers
                .set(Timer::Healthy, now + self.config.backoff.healthy_after_ms);
        }
        if let Some(hb) = &self.config.heartbeat {
            if mode == Mode::Reliable || hb.plain_ping.is_some() {
                self.timers.set(Timer::Ping, now + hb.interval_ms);
                self.arm_liveness(now);
            }
        }
        self.set_state(State::Open { mode });
        self.transmit_more();
    }

    fn arm_liveness(&mut self, now: u64) {
        if let Some(hb) = &self.config.heartbeat {
            if self.timers.get(Timer::Ping).is_some() {
                self.timers.set(Timer::Liveness, now + hb.idle_ms);
            }
        }
    }

    /// Send a probe (PING, or the plain-mode ping message) unless one is out.
    fn probe(&mut self, now: u64) {
        let Some(hb) = &self.config.heartbeat else {
            return;
        };
        let Some(mode) = self.conn.as_ref().and_then(|c| c.mode) else {
            return;
        };
        let probe_timeout = hb.probe_timeout_ms;
        match mode {
            Mode::Reliable => {
                self.ping_id += 1;
                let id = self.ping_id;
                self.ping_sent_at = Some((id, now));
                self.transmit(&Frame::Ping { id });
            }
            Mode::Plain => {
                let Some(ping) = hb.plain_ping.clone() else {
                    return;
                };
                let (binary, data) = ping.into_parts();
                self.emit(Output::Transmit(Transmit { binary, data }));
            }
        }
        if self.probe_sent_at.is_none() {
            self.probe_sent_at = Some(now);
            self.timers.set_min(Timer::Liveness, now + probe_timeout);
        }
    }

    fn check_liveness(&mut self, now: u64) {
        let Some(hb) = self.config.heartbeat.clone() else {
            return;
        };
        if self.conn.as_ref().and_then(|c| c.mode).is_none() {
            return;
        }
        match self.probe_sent_at {
            Some(sent) if now >= sent + hb.probe_timeout_ms => self.peer_dead(now),
            Some(sent) => self.timers.set(Timer::Liveness, sent + hb.probe_timeout_ms),
            None if now >= self.last_rx + hb.idle_ms => self.probe(now),
            None => self.timers.set(Timer::Liveness, self.last_rx + hb.idle_ms),
        }
    }

    fn on_received(&mut self, now: u64, result: Result<Received, EngineError>) {
        let mut received = match result {
            Ok(r) => r,
            Err(e) => return self.protocol_error(now, e),
        };
        let error = received.error.take();
        if received.skipped > 0 {
            self.emit(Output::Event(Event::Skipped {
                count: received.skipped,
            }));
        }
        let delivered = received.messages.len() as u64 + u64::from(received.skipped > 0);
        let bytes: u64 = received.messages.iter().map(|(_, p)| p.len() as u64).sum();
        self.stats.messages_in += received.messages.len() as u64;
        if received.duplicate {
            self.stats.duplicates += 1;
            self.duplicate_pending = true;
        }
        for (seq, payload) in received.messages {
            self.untaken.push_back(Some(seq));
            self.emit(Output::Event(Event::Message(payload)));
        }
        if let Some(error) = error {
            // The messages before the bad one are the application's and
            // counted delivered: handed over above, then the connection
            // fails (no ACK; the resume's HELLO carries the mark).
            return self.protocol_error(now, error);
        }
        if delivered > 0 || received.duplicate {
            self.pending_ack += delivered.max(1);
            self.pending_ack_bytes = self.pending_ack_bytes.saturating_add(bytes);
            // Never ACK in the drain that delivered: the driver dispatches
            // the messages first, then the due timer persists the mark and
            // ACKs. A crash in between means a re-delivery, never a loss.
            let delay = if self.pending_ack >= self.config.ack.every
                || self.pending_ack_bytes >= self.config.ack.every_bytes
            {
                0
            } else {
                self.config.ack.delay_ms
            };
            self.timers.set_min(Timer::Ack, now + delay);
        }
        if self.inbound.has_gap() {
            self.timers
                .set_min(Timer::Gap, now + self.config.limits.gap_timeout_ms);
        } else {
            self.timers.stop(Timer::Gap);
        }
        match self.inbound.oldest_partial() {
            Some(start) => self.timers.set(
                Timer::Partial,
                start + self.config.limits.max_partial_age_ms,
            ),
            None => self.timers.stop(Timer::Partial),
        }
    }

    fn send_ack(&mut self) {
        self.timers.stop(Timer::Ack);
        if self.conn.as_ref().and_then(|c| c.mode) != Some(Mode::Reliable) {
            return;
        }
        self.pending_ack = 0;
        self.pending_ack_bytes = 0;
        let taken = self.taken();
        self.ack_owed = taken < self.inbound.delivered;
        if taken <= self.acked_out && !std::mem::take(&mut self.duplicate_pending) {
            // Nothing the peer has not heard (what arrived waits to be
            // taken; `ack_owed` sends it then).
            return;
        }
        self.acked_out = taken;
        // The high-water mark is durable before the peer may forget the messages.
        self.persist_session();
        self.stats.acks_out += 1;
        self.transmit(&Frame::Ack { delivered: taken });
    }

    fn arm_expiry(&mut self) {
        match self.outbox.next_expiry() {
            Some(at) => self.timers.set(Timer::Expiry, at),
            None => self.timers.stop(Timer::Expiry),
        }
    }

    /// Put queued entries on the wire, up to the in-flight limit.
    fn transmit_more(&mut self) {
        let Some(mode) = self
            .conn
            .as_ref()
            .filter(|c| !c.send_blocked)
            .and_then(|c| c.mode)
        else {
            return;
        };
        let mut max_in_flight = self.config.outbox.max_in_flight_bytes;
        if mode == Mode::Reliable {
            // Within the window the server announced: beyond it, it would
            // hold our frames back and could not read our ACKs behind them.
            max_in_flight = max_in_flight.min(self.peer_window);
        }
        // Plain mode has no ACKs to bound it: at most `max_in_flight_bytes`
        // wait in `out` for the driver; the next pass starts when they were
        // taken (and the driver could report a full send buffer).
        self.plain_more = false;
        loop {
            if mode == Mode::Reliable && self.outbox.in_flight_bytes() >= max_in_flight {
                break;
            }
            if mode == Mode::Plain && self.plain_pending >= max_in_flight {
                self.plain_more = true;
                break;
            }
            let chunk_size = self.chunk_size;
            let Some(entry) = self.outbox.next_unsent() else {
                break;
            };
            let (last, bytes, receipt) = match entry {
                Entry::Message(m) => {
                    if std::mem::replace(&mut m.maybe_sent, true) {
                        self.stats.resends += 1;
                    } else {
                        self.stats.messages_out += 1;
                    }
                    (m.seq, m.payload.len(), Some(m.receipt))
                }
                Entry::Skip { last, .. } => (*last, 0, None),
            };
            match mode {
                Mode::Reliable => {
                    let (out, stats) = (&mut self.out, &mut self.stats);
                    frames_of(entry, chunk_size, |frame| {
                        let data = frame.to_vec();
                        stats.record_out(&frame, data.len());
                        out.push_back(Output::Transmit(Transmit { binary: true, data }))
                    });
                    self.outbox.mark_sent(last, bytes);
                    if let Some(receipt) = receipt {
                        self.emit(Output::Event(Event::Transmitted(receipt)));
                    }
                }
                Mode::Plain => {
                    self.outbox.mark_sent(last, bytes);
                    // Handed to the socket is all plain mode can promise:
                    // the message leaves the outbox, its payload (moved,
                    // not copied) goes to the socket.
                    if let Some(sent) = self.outbox.ack_through(last) {
                        for m in sent {
                            let data = m.payload;
                            self.stats.record_out_plain(data.len());
                            self.plain_pending += data.len().max(1);
                            self.out.push_back(Output::Transmit(Transmit {
                                binary: m.binary,
                                data,
                            }));
                            self.emit(Output::Persist(PersistOp::Delete { seq: m.seq }));
                            self.emit(Output::Event(Event::Sent(m.receipt)));
                        }
                    }
                }
            }
        }
        self.arm_expiry();
    }
}
