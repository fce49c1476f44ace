//! Deterministic simulation: a client and a server engine, a virtual clock
//! and a seeded network emulator (quinn-proto's `Pair`, str0m's netem).
//!
//! The emulator cuts the connection at random points (also in the middle of
//! a chunked message), delays frames, duplicates frames the receiver already
//! had into later connections of the same session, swaps adjacent DATA
//! frames (the reorder window allows it), and keeps the server down for a
//! while after some cuts. Everything follows from the seed.

use std::collections::VecDeque;

use steadfast_core::{
    codec, Config, Engine, EngineError, Event, Output, Payload, Receipt, Rng, SessionId,
    SUBPROTOCOL,
};

/// What the network does, in parts per million per frame (or per connection).
#[derive(Debug, Clone)]
pub struct Netem {
    /// One-way latency range in ms.
    pub latency_ms: (u64, u64),
    /// Chance a transmitted frame cuts the connection (it and a random part
    /// of what is in flight are lost).
    pub cut_ppm: u64,
    /// Chance a delivered DATA frame is swapped with the next one queued.
    pub reorder_ppm: u64,
    /// Chance, per connection, that an old DATA frame is delivered again.
    pub duplicate_ppm: u64,
    /// Chance a cut also takes the server down, and for how long (ms).
    pub server_down_ppm: u64,
    /// Server downtime range in ms.
    pub server_down_ms: (u64, u64),
    /// Chance a cut also expires the server's session: its state goes,
    /// and it is rebuilt from the small record a server keeps.
    pub expire_ppm: u64,
}

impl Default for Netem {
    fn default() -> Self {
        Netem {
            latency_ms: (1, 40),
            cut_ppm: 40_000,
            reorder_ppm: 20_000,
            duplicate_ppm: 300_000,
            server_down_ppm: 200_000,
            server_down_ms: (100, 3_000),
            expire_ppm: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

#[derive(Debug, Default)]
struct Link {
    to_server: VecDeque<(u64, Vec<u8>)>,
    to_client: VecDeque<(u64, Vec<u8>)>,
    /// When each side learns the connection closed (and with which code).
    close_client: Option<(u64, u16)>,
    close_server: Option<(u64, u16)>,
    /// The receiver has completed its handshake (duplicates only after it).
    client_ready: bool,
    server_ready: bool,
}

/// What a run observed.
#[derive(Debug, Default)]
pub struct Observed {
    /// Messages the client delivered to its app, in order.
    pub client_inbox: Vec<Payload>,
    /// Messages the server delivered to its app, in order.
    pub server_inbox: Vec<Payload>,
    /// Client receipts resolved as acked, in order of resolution.
    pub client_acked: Vec<Receipt>,
    /// Server receipts resolved as acked.
    pub server_acked: Vec<Receipt>,
    /// Receipts that failed (either side).
    pub failed: Vec<Receipt>,
    /// Errors the engines reported.
    pub errors: Vec<EngineError>,
    /// Connections opened.
    pub connections: u64,
    /// Connections cut by the emulator.
    pub cuts: u64,
    /// Adjacent DATA frames swapped.
    pub reorders: u64,
    /// Old DATA frames delivered again.
    pub duplicates: u64,
    /// Resyncs the client reported.
    pub resyncs: u64,
    /// Server seqs the client heard were skipped.
    pub client_skipped: u64,
    /// Times the server's session state expired.
    pub expiries: u64,
    /// Times the client asked to connect, with the time.
    pub connect_times: Vec<u64>,
}

/// Two engines on an emulated network.
#[derive(Debug)]
pub struct Sim {
    /// Virtual time (ms).
    pub now: u64,
    /// The client engine.
    pub client: Engine,
    /// The server engine.
    pub server: Engine,
    /// The network model.
    pub netem: Netem,
    /// What happened.
    pub observed: Observed,
    rng: Rng,
    link: Option<Link>,
    connecting: Option<u64>,
    server_down_until: u64,
    /// DATA frames each side has received, for duplicate injection.
    seen_by_client: Vec<Vec<u8>>,
    seen_by_server: Vec<Vec<u8>>,
    /// Steps taken at the current `now` (a busy loop shows here).
    same_time_steps: u64,
    /// The most steps ever taken at one instant.
    pub max_same_time_steps: u64,
}

/// Wall-clock ms the simulation pretends it is at time 0.
const WALL_EPOCH: u64 = 1_700_000_000_000;

impl Sim {
    /// A client and a server session engine sharing `config`, all randomness from `seed`.
    pub fn new(config: Config, seed: u64, netem: Netem) -> Sim {
        let mut rng = Rng::new(seed);
        let client =
            Engine::client(config.clone(), rng.next_u64()).expect("simulation config is valid");
        let server = Engine::server(config, rng.next_u64(), client.session())
            .expect("simulation config is valid");
        Sim {
            now: 0,
            client,
            server,
            netem,
            observed: Observed::default(),
            rng,
            link: None,
            connecting: None,
            server_down_until: 0,
            seen_by_client: Vec::new(),
            seen_by_server: Vec::new(),
            same_time_steps: 0,
            max_same_time_steps: 0,
        }
    }

    /// The simulation's own random numbers (for scripting sends).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Replace the server's session with a new one it has never seen (a
    /// server that lost its state).
    pub fn server_forgets(&mut self, config: Config) {
        let session = SessionId(self.rng.bytes16());
        self.server = Engine::server(config, self.rng.next_u64(), session).expect("valid config");
        self.seen_by_client.clear();
        self.seen_by_server.clear();
        self.cut();
    }

    /// Client app sends.
    pub fn client_send(&mut self, payload: Payload) -> Receipt {
        let receipt = self
            .client
            .send(self.now, WALL_EPOCH + self.now, payload)
            .expect("the simulation's outbox is large enough");
        self.drain();
        receipt
    }

    /// Server app sends.
    pub fn server_send(&mut self, payload: Payload) -> Receipt {
        let receipt = self
            .server
            .send(self.now, WALL_EPOCH + self.now, payload)
            .expect("the simulation's outbox is large enough");
        self.drain();
        receipt
    }

    /// Start the client.
    pub fn start(&mut self) {
        self.client.connect(self.now);
        self.drain();
    }

    fn latency(&mut self) -> u64 {
        let (lo, hi) = self.netem.latency_ms;
        lo + self.rng.up_to(hi - lo)
    }

    fn chance(&mut self, ppm: u64) -> bool {
        self.rng.up_to(999_999) < ppm
    }

    /// Drain both engines until both wait on a timer.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(output) = self.client.poll_output() {
                if let Output::Timeout(_) = output {
                    break;
                }
                progressed = true;
                self.on_output(Side::Client, output);
            }
            while let Some(output) = self.server.poll_output() {
                if let Output::Timeout(_) = output {
                    break;
                }
                progressed = true;
                self.on_output(Side::Server, output);
            }
            if !progressed {
                return;
            }
        }
    }

    fn on_output(&mut self, side: Side, output: Output) {
        match output {
            Output::Transmit(t) => self.transmit(side, t.data),
            Output::Connect { .. } => {
                self.observed.connect_times.push(self.now);
                let at = self.now + self.latency();
                self.connecting = Some(at);
            }
            Output::Disconnect { code, .. } => {
                // The other side hears the close after the frames in flight.
                if let Some(link) = self.link.as_mut() {
                    match side {
                        Side::Client => {
                            link.close_client = None;
                            let last = link.to_server.back().map_or(self.now, |f| f.0);
                            let at = last.max(self.now) + 1;
                            link.close_server.get_or_insert((at, code));
                            link.to_client.clear();
                        }
                        Side::Server => {
                            link.close_server = None;
                            let last = link.to_client.back().map_or(self.now, |f| f.0);
                            let at = last.max(self.now) + 1;
                            link.close_client.get_or_insert((at, code));
                            link.to_server.clear();
                        }
                    }
                }
            }
            Output::Persist(_) => {}
            Output::Event(event) => self.on_event(side, event),
            Output::Timeout(_) => {}
        }
    }

    fn on_event(&mut self, side: Side, event: Event) {
        let o = &mut self.observed;
        // The application takes each message as it is handed out (after
        // the engine is no longer borrowed by `poll_output`).
        match (side, event) {
            (Side::Client, Event::Message(p)) => {
                o.client_inbox.push(p);
                self.client.handle_taken(1);
            }
            (Side::Server, Event::Message(p)) => {
                o.server_inbox.push(p);
                self.server.handle_taken(1);
            }
            (Side::Client, Event::Acked(r)) => o.client_acked.push(r),
            (Side::Server, Event::Acked(r)) => o.server_acked.push(r),
            (_, Event::Failed { receipt, .. }) => o.failed.push(receipt),
            (_, Event::Error(e)) => o.errors.push(e),
            (Side::Client, Event::ResyncRequired) => o.resyncs += 1,
            (Side::Client, Event::Skipped { count }) => o.client_skipped += count,
            _ => {}
        }
    }

    fn transmit(&mut self, from: Side, data: Vec<u8>) {
        let Some(link) = self.link.as_ref() else {
            return;
        };
        let closing = match from {
            Side::Client => link.close_server.is_some() || link.close_client.is_some(),
            Side::Server => link.close_client.is_some() || link.close_server.is_some(),
        };
        if closing {
            return;
        }
        if self.chance(self.netem.cut_ppm) {
            // This frame is lost mid-flight and the connection with it.
            self.cut();
            return;
        }
        let latency = self.latency();
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let queue = match from {
            Side::Client => &mut link.to_server,
            Side::Server => &mut link.to_client,
        };
        // One connection delivers in order: never before the previous frame.
        let at = queue.back().map_or(0, |f| f.0).max(self.now + latency);
        queue.push_back((at, data));
    }

    /// Cut the connection: each direction keeps a random prefix of what is
    /// in flight; both sides then see 1006.
    fn cut(&mut self) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        self.observed.cuts += 1;
        let keep_server = self.rng.up_to(link.to_server.len() as u64) as usize;
        let keep_client = self.rng.up_to(link.to_client.len() as u64) as usize;
        link.to_server.truncate(keep_server);
        link.to_client.truncate(keep_client);
        let server_at = link.to_server.back().map_or(self.now, |f| f.0) + 1;
        let client_at = link.to_client.back().map_or(self.now, |f| f.0) + 1;
        link.close_server.get_or_insert((server_at, 1006));
        link.close_client.get_or_insert((client_at, 1006));
        if self.chance(self.netem.server_down_ppm) {
            let (lo, hi) = self.netem.server_down_ms;
            self.server_down_until = self.now + lo + self.rng.up_to(hi - lo);
        }
        self.link = Some(link);
        if self.chance(self.netem.expire_ppm) {
            self.expire_server_session();
        }
    }

    /// The server's session state expires: its engine is rebuilt from the
    /// record a server keeps (the seq delivered through, the next seq out).
    /// Messages it had queued are lost with the state; its receipts with
    /// them.
    fn expire_server_session(&mut self) {
        let config = self.server.config().clone();
        let rebuilt = Engine::server_from_record(
            config,
            self.rng.next_u64(),
            self.server.session(),
            self.server.taken(),
            self.server.next_seq(),
        )
        .expect("the running config is valid");
        self.server = rebuilt;
        self.seen_by_server.clear();
        self.observed.expiries += 1;
    }

    /// The next time anything happens.
    fn next_event(&self) -> Option<u64> {
        let mut next = [
            self.client.poll_timeout(),
            self.server.poll_timeout(),
            self.connecting,
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(link) = &self.link {
            for t in [
                link.to_server.front().map(|f| f.0),
                link.to_client.front().map(|f| f.0),
                link.close_client.map(|c| c.0),
                link.close_server.map(|c| c.0),
            ]
            .into_iter()
            .flatten()
            {
                next = Some(next.map_or(t, |n: u64| n.min(t)));
            }
        }
        next
    }

    /// Advance to the next event and process everything due then.
    /// Returns false when nothing is scheduled at all.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.next_event() else {
            return false;
        };
        if at <= self.now {
            self.same_time_steps += 1;
            self.max_same_time_steps = self.max_same_time_steps.max(self.same_time_steps);
        } else {
            self.same_time_steps = 0;
        }
        self.now = self.now.max(at);
        let now = self.now;

        if self.connecting.is_some_and(|t| t <= now) {
            self.connecting = None;
            if now < self.server_down_until {
                // Refused: the client hears a 1006 without an open.
                self.client.handle_close(now, 1006, "connection refused");
            } else {
                self.link = Some(Link::default());
                self.observed.connections += 1;
                self.server.handle_open(now, Some(SUBPROTOCOL));
                self.client.handle_open(now, Some(SUBPROTOCOL));
            }
            self.drain();
        }
        self.deliver_due(now);
        // Every frame due now was read (and its messages observed by the
        // drains): each side's burst ends.
        self.client.handle_read_burst_end();
        self.server.handle_read_burst_end();
        self.drain();
        self.client.handle_timeout(now);
        self.server.handle_timeout(now);
        self.drain();
        true
    }

    fn deliver_due(&mut self, now: u64) {
        loop {
            let Some(link) = self.link.as_mut() else {
                return;
            };
            let mut did = false;
            if link.to_server.front().is_some_and(|f| f.0 <= now) {
                let (_, frame) = link.to_server.pop_front().expect("front checked");
                self.deliver(Side::Server, frame);
                did = true;
            } else if link.to_client.front().is_some_and(|f| f.0 <= now) {
                let (_, frame) = link.to_client.pop_front().expect("front checked");
                self.deliver(Side::Client, frame);
                did = true;
            } else if let Some((_, code)) = link.close_client.filter(|c| c.0 <= now) {
                link.close_client = None;
                link.to_client.clear();
                self.client.handle_close(now, code, "");
                did = true;
            } else if let Some((_, code)) = link.close_server.filter(|c| c.0 <= now) {
                link.close_server = None;
                link.to_server.clear();
                self.server.handle_close(now, code, "");
                did = true;
            }
            if let Some(link) = &self.link {
                if link.close_client.is_none()
                    && link.close_server.is_none()
                    && self.client_gone_and_server_gone()
                {
                    self.link = None;
                }
            }
            self.drain();
            if !did {
                return;
            }
        }
    }

    fn client_gone_and_server_gone(&self) -> bool {
        !matches!(
            self.client.state(),
            steadfast_core::State::Open { .. } | steadfast_core::State::Connecting { .. }
        ) && !matches!(
            self.server.state(),
            steadfast_core::State::Open { .. } | steadfast_core::State::Connecting { .. }
        )
    }

    fn deliver(&mut self, to: Side, mut frame: Vec<u8>) {
        let is_data = codec::is_data;
        // Reorder: swap with the next DATA frame queued in the same direction.
        if is_data(&frame) && self.chance(self.netem.reorder_ppm) {
            if let Some(link) = self.link.as_mut() {
                let queue = match to {
                    Side::Client => &mut link.to_client,
                    Side::Server => &mut link.to_server,
                };
                if let Some(next) = queue.front_mut().filter(|next| is_data(&next.1)) {
                    std::mem::swap(&mut next.1, &mut frame);
                    self.observed.reorders += 1;
                }
            }
        }
        let is_data = is_data(&frame);
        let now = self.now;
        match to {
            Side::Client => {
                if is_data {
                    self.seen_by_client.push(frame.clone());
                }
                self.client.handle_frame(now, true, &frame);
            }
            Side::Server => {
                if is_data {
                    self.seen_by_server.push(frame.clone());
                }
                self.server.handle_frame(now, true, &frame);
            }
        }
        self.drain();
        // Duplicates of old frames, once the receiver is past its handshake.
        let ready_now = match to {
            Side::Client => matches!(self.client.state(), steadfast_core::State::Open { .. }),
            Side::Server => matches!(self.server.state(), steadfast_core::State::Open { .. }),
        };
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let first_time = match to {
            Side::Client => !std::mem::replace(&mut link.client_ready, ready_now) && ready_now,
            Side::Server => !std::mem::replace(&mut link.server_ready, ready_now) && ready_now,
        };
        if first_time && self.chance(self.netem.duplicate_ppm) {
            let seen = match to {
                Side::Client => &self.seen_by_client,
                Side::Server => &self.seen_by_server,
            };
            if !seen.is_empty() {
                let pick = self.rng.up_to(seen.len() as u64 - 1) as usize;
                let old = seen[pick].clone();
                self.observed.duplicates += 1;
                match to {
                    Side::Client => self.client.handle_frame(now, true, &old),
                    Side::Server => self.server.handle_frame(now, true, &old),
                }
                self.drain();
            }
        }
    }

    /// Step until `done(self)` holds; `Err` if `max_steps` pass first
    /// (a livelock) or nothing is scheduled.
    pub fn drive_until(
        &mut self,
        max_steps: u64,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Result<u64, String> {
        for step in 0..max_steps {
            if done(self) {
                return Ok(step);
            }
            if !self.step() {
                return Err(format!(
                    "nothing scheduled at t={} ms after {step} steps",
                    self.now
                ));
            }
        }
        Err(format!(
            "not done after {max_steps} steps (t={} ms)",
            self.now
        ))
    }
}
