//! Where the outbox and the session live between restarts.
//!
//! The engine says what to keep as [`PersistOp`]s; a [`Store`] applies them
//! in order and hands everything back at start-up. Backends:
//!
//! - [`MemoryStore`]: nothing survives the process (a clone shares the same
//!   contents, so a test can "restart" a client within one process);
//! - [`DurableStore`] (native): a [redb](https://docs.rs/redb) file; an
//!   [`apply`](Store::apply) returns only after the commit is on disk, so a
//!   message whose `send` returned survives `kill -9` and power loss;
//! - [`IndexedDbStore`] (wasm32, browsers): one IndexedDB database, one
//!   strict-durability transaction per apply;
//! - [`JsStore`] (wasm32): a store object written in JavaScript (a file in
//!   Node.js, React Native storage, a test double).
//!
//! Every backend passes the same [`conformance`] suite.

use std::sync::{Arc, Mutex};

use steadfast_core::record::{StoredMessage, StoredSession};
use steadfast_core::{PersistOp, SeqMap};

pub use crate::rt::{BoxFuture, MaybeSend};

#[cfg(not(target_arch = "wasm32"))]
mod durable;
#[cfg(not(target_arch = "wasm32"))]
pub use durable::DurableStore;
#[cfg(target_arch = "wasm32")]
mod web;
#[cfg(target_arch = "wasm32")]
pub use web::{IndexedDbStore, JsStore};

pub mod conformance;

/// What a store holds: the session record and the queued messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The session, once one was stored.
    pub session: Option<StoredSession>,
    /// Queued messages, by ascending seq.
    pub messages: Vec<StoredMessage>,
}

/// Why a store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

impl From<StoreError> for crate::Error {
    fn from(error: StoreError) -> Self {
        crate::Error::Store(error.0)
    }
}

/// A place for the outbox. Implement it to keep messages somewhere else
/// (run [`conformance::check`] against the implementation).
pub trait Store: MaybeSend + 'static {
    /// Everything stored, for a client starting up. Records that do not
    /// decode are skipped (and reported through `tracing`), not fatal.
    fn load(&mut self) -> BoxFuture<'_, Result<Snapshot, StoreError>>;

    /// Apply `ops` in order, all or nothing, and resolve only once they
    /// are as durable as this store promises ([`Store::is_durable`]).
    fn apply(&mut self, ops: Vec<PersistOp>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Whether what [`Store::apply`] wrote survives the process.
    fn is_durable(&self) -> bool;
}

/// The records as a store keeps them (encoded bytes, by key), shared by
/// the backends that hold bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Records {
    pub(crate) session: Option<Vec<u8>>,
    pub(crate) messages: SeqMap<Vec<u8>>,
}

impl Records {
    pub(crate) fn apply(&mut self, ops: Vec<PersistOp>) {
        for op in ops {
            match op {
                PersistOp::Session(session) => self.session = Some(session.encode()),
                PersistOp::Put(message) => {
                    self.messages.insert(message.seq, message.encode());
                }
                PersistOp::Delete { seq } => {
                    self.messages.remove(seq);
                }
                PersistOp::Clear => self.messages.clear(),
            }
        }
    }
}

/// Decode stored bytes, skipping (and reporting) what does not decode.
pub(crate) fn decode<'a>(
    session: Option<&[u8]>,
    messages: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> Snapshot {
    let session = session.and_then(|bytes| match StoredSession::decode(bytes) {
        Ok(session) => Some(session),
        Err(error) => {
            tracing::warn!(%error, "ignoring an unreadable session record");
            None
        }
    });
    let mut decoded: Vec<StoredMessage> = messages
        .into_iter()
        .filter_map(|(key, bytes)| match StoredMessage::decode(bytes) {
            Ok(message) if message.seq == key => Some(message),
            Ok(message) => {
                tracing::warn!(key, seq = message.seq, "ignoring a misfiled message record");
                None
            }
            Err(error) => {
                tracing::warn!(key, %error, "ignoring an unreadable message record");
                None
            }
        })
        .collect();
    StoredMessage::sort_by_seq(&mut decoded);
    Snapshot {
        session,
        messages: decoded,
    }
}

/// Keeps everything in memory. Clones share the contents.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    records: Arc<Mutex<Records>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        crate::rt::lock(&self.records)
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        let records = self.records();
        let snapshot = decode(
            records.session.as_deref(),
            records.messages.iter().map(|(k, v)| (k, v.as_slice())),
        );
        drop(records);
        Box::pin(async move { Ok(snapshot) })
    }

    fn apply(&mut self, ops: Vec<PersistOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.records().apply(ops);
        Box::pin(async { Ok(()) })
    }

    fn is_durable(&self) -> bool {
        false
    }
}
