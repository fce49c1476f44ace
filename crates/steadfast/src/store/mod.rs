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
    /// Records that were there but could not be read (corrupt, or from an
    /// unknown format) and were skipped: the client reports them as an
    /// `ERR_STORE_UNREADABLE` error, never silently.
    pub unreadable: usize,
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
    /// decode are skipped and counted in [`Snapshot::unreadable`], not
    /// fatal.
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

/// Decode stored bytes, skipping and counting what does not decode.
pub(crate) fn decode<'a>(
    session: Option<&[u8]>,
    messages: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> Snapshot {
    let mut unreadable = 0;
    let session = session.and_then(|bytes| match StoredSession::decode(bytes) {
        Ok(session) => Some(session),
        Err(error) => {
            tracing::warn!(%error, "skipping an unreadable session record");
            unreadable += 1;
            None
        }
    });
    let mut decoded: Vec<StoredMessage> = messages
        .into_iter()
        .filter_map(|(key, bytes)| match StoredMessage::decode(bytes) {
            Ok(message) if message.seq == key => Some(message),
            Ok(message) => {
                tracing::warn!(key, seq = message.seq, "skipping a misfiled message record");
                unreadable += 1;
                None
            }
            Err(error) => {
                tracing::warn!(key, %error, "skipping an unreadable message record");
                unreadable += 1;
                None
            }
        })
        .collect();
    StoredMessage::sort_by_seq(&mut decoded);
    Snapshot {
        session,
        messages: decoded,
        unreadable,
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

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::{Client, ClientEvent, Error, Payload};

    /// A memory store holding one good message and three records that do
    /// not read: a corrupt session, a corrupt message, a misfiled one.
    fn damaged() -> MemoryStore {
        let store = MemoryStore::new();
        let good = StoredMessage {
            seq: 2,
            binary: false,
            payload: b"kept".to_vec(),
            enqueued_wall_ms: 1,
            expires_wall_ms: 0,
        };
        let misfiled = StoredMessage {
            seq: 9,
            ..good.clone()
        };
        let mut records = store.records();
        records.session = Some(vec![0xff; 3]);
        records.messages.insert(1, vec![0xff, 0x00]);
        records.messages.insert(2, good.encode());
        records.messages.insert(3, misfiled.encode());
        drop(records);
        store
    }

    #[test]
    fn unreadable_records_are_counted_not_silently_dropped() {
        let records = damaged().records().clone();
        let snapshot = decode(
            records.session.as_deref(),
            records.messages.iter().map(|(k, v)| (k, v.as_slice())),
        );
        assert_eq!(snapshot.unreadable, 3);
        assert_eq!(snapshot.session, None);
        assert_eq!(snapshot.messages.len(), 1);
        assert_eq!(snapshot.messages[0].payload, b"kept");
    }

    #[tokio::test]
    async fn a_client_reports_the_records_it_could_not_read() {
        // Nothing listens there: the client only loads its store.
        let client = Client::builder("ws://127.0.0.1:9/")
            .store(damaged())
            .connect()
            .await
            .expect("valid options");
        let mut errors = Vec::new();
        let mut restored = Vec::new();
        while errors.is_empty() || restored.is_empty() {
            let event =
                tokio::time::timeout(std::time::Duration::from_secs(30), client.next_event())
                    .await
                    .expect("events at start-up")
                    .expect("the client runs");
            match event {
                ClientEvent::Error(error) => errors.push(error),
                ClientEvent::Restored(messages) => restored = messages,
                _ => {}
            }
        }
        assert_eq!(errors[0], Error::UnreadableRecords(3));
        assert_eq!(errors[0].code(), "ERR_STORE_UNREADABLE");
        assert_eq!(restored.len(), 1);
        assert_eq!(restored[0].payload, Payload::Text("kept".into()));
    }
}
