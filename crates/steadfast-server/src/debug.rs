//! `/debug/connections` on the admin listener: each open WebSocket
//! connection's peer, session, age, bytes and frames each way, last
//! activity and its last few frames' metadata (never their contents).
//!
//! A connection counts in a local [`Tally`] as it reads and writes and
//! hands it to its [`ConnView`] once per turn of its loop (one lock, not
//! one per frame).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};
use steadfast_core::SessionId;

use crate::registry::lock;

/// Frames kept per connection for the view.
const RECENT: usize = 8;

/// One frame's metadata.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// When, in ms since the connection began (the turn's report: no
    /// clock read per frame).
    at_ms: u64,
    inbound: bool,
    kind: &'static str,
    bytes: usize,
}

/// What a connection did since it last reported.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    bytes_in: u64,
    bytes_out: u64,
    frames_in: u64,
    frames_out: u64,
    heard: bool,
    recent: VecDeque<Seen>,
}

impl Tally {
    /// A frame read (`binary`: its first byte names a protocol frame).
    pub(crate) fn read(&mut self, view: &ConnView, binary: bool, data: &[u8]) {
        self.bytes_in += data.len() as u64;
        self.frames_in += 1;
        self.heard = true;
        self.note(true, kind(view.reliable, binary, data), data.len());
    }

    /// A frame written.
    pub(crate) fn wrote(&mut self, view: &ConnView, binary: bool, data: &[u8]) {
        self.bytes_out += data.len() as u64;
        self.frames_out += 1;
        self.note(false, kind(view.reliable, binary, data), data.len());
    }

    fn note(&mut self, inbound: bool, kind: &'static str, bytes: usize) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Seen {
            at_ms: 0,
            inbound,
            kind,
            bytes,
        });
    }
}

/// What kind of frame `data` is.
fn kind(reliable: bool, binary: bool, data: &[u8]) -> &'static str {
    if !reliable {
        return if binary { "binary" } else { "text" };
    }
    match (binary, data.first()) {
        (false, _) => "text",
        (true, Some(1)) => "HELLO",
        (true, Some(2)) => "WELCOME",
        (true, Some(3)) => "DATA",
        (true, Some(4)) => "ACK",
        (true, Some(5)) => "SKIP",
        (true, Some(6)) => "PING",
        (true, Some(7)) => "PONG",
        (true, _) => "unknown",
    }
}

/// One open connection, as the view shows it.
#[derive(Debug)]
pub(crate) struct ConnView {
    id: u64,
    remote: SocketAddr,
    started: Instant,
    reliable: bool,
    peer: AtomicU64,
    session: Mutex<Option<SessionId>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    /// Last heard from, in ms since it began.
    heard_ms: AtomicU64,
    recent: Mutex<VecDeque<Seen>>,
}

impl ConnView {
    /// Its peer and session, once known.
    pub(crate) fn identify(&self, peer: u64, session: Option<SessionId>) {
        self.peer.store(peer, Ordering::Relaxed);
        *lock(&self.session) = session;
    }

    /// Take in what `tally` counted (and empty it).
    pub(crate) fn report(&self, tally: &mut Tally) {
        if tally.frames_in == 0 && tally.frames_out == 0 {
            return;
        }
        self.bytes_in.fetch_add(tally.bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(tally.bytes_out, Ordering::Relaxed);
        self.frames_in.fetch_add(tally.frames_in, Ordering::Relaxed);
        self.frames_out
            .fetch_add(tally.frames_out, Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        if tally.heard {
            self.heard_ms.store(now, Ordering::Relaxed);
        }
        let mut recent = lock(&self.recent);
        for mut seen in tally.recent.drain(..) {
            seen.at_ms = now;
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(seen);
        }
        drop(recent);
        *tally = Tally {
            recent: std::mem::take(&mut tally.recent),
            ..Tally::default()
        };
    }

    fn render(&self) -> Value {
        let age = self.started.elapsed().as_millis() as u64;
        let session = (*lock(&self.session)).map(|s| {
            // The first 4 bytes only: the id names a session to its owner.
            s.0[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                + "…"
        });
        let recent: Vec<Value> = lock(&self.recent)
            .iter()
            .rev()
            .map(|seen| {
                json!({
                    "ago_ms": age.saturating_sub(seen.at_ms),
                    "direction": if seen.inbound { "in" } else { "out" },
                    "kind": seen.kind,
                    "bytes": seen.bytes,
                })
            })
            .collect();
        let peer = self.peer.load(Ordering::Relaxed);
        json!({
            "id": self.id,
            "remote": self.remote.to_string(),
            "mode": if self.reliable { "reliable" } else { "plain" },
            "peer": (peer != 0).then(|| format!("p{peer}")),
            "session": session,
            "age_ms": age,
            "idle_ms": age.saturating_sub(self.heard_ms.load(Ordering::Relaxed)),
            "bytes_in": self.bytes_in.load(Ordering::Relaxed),
            "bytes_out": self.bytes_out.load(Ordering::Relaxed),
            "frames_in": self.frames_in.load(Ordering::Relaxed),
            "frames_out": self.frames_out.load(Ordering::Relaxed),
            "recent": recent,
        })
    }
}

/// Every open WebSocket connection's view.
#[derive(Debug, Default)]
pub(crate) struct Views(Mutex<HashMap<u64, Arc<ConnView>>>);

/// Removes its view when the connection ends.
pub(crate) struct Registered<'a> {
    views: &'a Views,
    pub(crate) view: Arc<ConnView>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(&self.views.0).remove(&self.view.id);
    }
}

impl Views {
    /// Show connection `id` (from `remote`) until the guard drops.
    pub(crate) fn register(&self, id: u64, remote: SocketAddr, reliable: bool) -> Registered<'_> {
        let view = Arc::new(ConnView {
            id,
            remote,
            started: Instant::now(),
            reliable,
            peer: AtomicU64::new(0),
            session: Mutex::new(None),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            heard_ms: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
        });
        lock(&self.0).insert(id, view.clone());
        Registered { views: self, view }
    }

    /// The JSON for every connection (by id), or for `only`: `None` if it
    /// is not open.
    pub(crate) fn render(&self, only: Option<u64>) -> Option<String> {
        let views: Vec<Arc<ConnView>> = {
            let map = lock(&self.0);
            match only {
                Some(id) => vec![map.get(&id)?.clone()],
                None => {
                    let mut all: Vec<_> = map.values().cloned().collect();
                    all.sort_by_key(|v| v.id);
                    all
                }
            }
        };
        let body = match only {
            Some(_) => views.first().map(|v| v.render())?,
            None => json!({
                "connections": views.iter().map(|v| v.render()).collect::<Vec<_>>(),
            }),
        };
        Some(body.to_string() + "\n")
    }
}
