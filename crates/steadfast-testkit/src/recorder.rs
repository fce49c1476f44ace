//! A server application for tests: echoes, and remembers what arrived.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use steadfast_server::{Handler, Payload, Peer, PeerId, ServerHandle};

/// Echoes every message to its sender and records `(peer, message)` in
/// arrival order. Clones share the record.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<(PeerId, Payload)>>>,
    quiet: bool,
}

impl Recorder {
    /// A recorder that does not echo.
    pub fn quiet() -> Recorder {
        Recorder {
            quiet: true,
            ..Recorder::default()
        }
    }

    /// The record, also after a panicking test thread poisoned its lock
    /// (each change is one push).
    fn record(&self) -> MutexGuard<'_, Vec<(PeerId, Payload)>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything received, in order.
    pub fn seen(&self) -> Vec<(PeerId, Payload)> {
        self.record().clone()
    }

    /// The payloads received, in order.
    pub fn payloads(&self) -> Vec<Payload> {
        self.seen().into_iter().map(|(_, p)| p).collect()
    }

    /// How many messages arrived.
    pub fn len(&self) -> usize {
        self.record().len()
    }

    /// Whether nothing arrived.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Handler for Recorder {
    fn on_message(&self, server: &ServerHandle, peer: &Peer, message: Payload) {
        self.record().push((peer.id, message.clone()));
        if !self.quiet {
            let _ = server.send(peer.id, message);
        }
    }
}
