//! The native durable store: one redb file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use steadfast_core::PersistOp;

use super::{decode, Snapshot, Store, StoreError};
use crate::rt::{self, BoxFuture};

/// Key 0: the session record.
const SESSION: TableDefinition<'_, u8, &[u8]> = TableDefinition::new("session");
/// Key: seq; value: the message record.
const MESSAGES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("messages");

/// A crash-safe outbox in one file ([redb](https://docs.rs/redb): copy-on-write
/// B-trees, checksummed commits, `fsync` before a commit returns).
///
/// Each [`Store::apply`] is one write transaction committed with
/// `Durability::Immediate`; the client batches the operations of every
/// `send` waiting at that moment into one apply (group commit), so the
/// cost of the `fsync` is shared.
///
/// One process may open a file at a time; a second open fails with
/// `ERR_STORE` rather than corrupting it.
#[derive(Clone)]
pub struct DurableStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DurableStore {
    /// Open (or create) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<DurableStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        // Create the tables up front so reads never meet a missing table.
        let txn = db.begin_write().map_err(failed)?;
        txn.open_table(SESSION).map_err(failed)?;
        txn.open_table(MESSAGES).map_err(failed)?;
        txn.commit().map_err(failed)?;
        Ok(DurableStore {
            db: Arc::new(db),
            path,
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load_now(db: &Database) -> Result<Snapshot, StoreError> {
        let txn = db.begin_read().map_err(failed)?;
        let sessions = txn.open_table(SESSION).map_err(failed)?;
        let session = sessions.get(0).map_err(failed)?.map(|v| v.value().to_vec());
        let table = txn.open_table(MESSAGES).map_err(failed)?;
        let mut messages = Vec::new();
        for entry in table.iter().map_err(failed)? {
            let (key, value) = entry.map_err(failed)?;
            messages.push((key.value(), value.value().to_vec()));
        }
        Ok(decode(
            session.as_deref(),
            messages.iter().map(|(k, v)| (*k, v.as_slice())),
        ))
    }

    fn apply_now(db: &Database, ops: Vec<PersistOp>) -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(failed)?;
        {
            let mut sessions = txn.open_table(SESSION).map_err(failed)?;
            let mut messages = txn.open_table(MESSAGES).map_err(failed)?;
            for op in ops {
                match op {
                    PersistOp::Session(session) => {
                        sessions
                            .insert(0, session.encode().as_slice())
                            .map_err(failed)?;
                    }
                    PersistOp::Put(message) => {
                        messages
                            .insert(message.seq, message.encode().as_slice())
                            .map_err(failed)?;
                    }
                    PersistOp::Delete { seq } => {
                        messages.remove(seq).map_err(failed)?;
                    }
                    PersistOp::Clear => {
                        messages.retain(|_, _| false).map_err(failed)?;
                    }
                }
            }
        }
        // Durability::Immediate is redb's default: commit returns after fsync.
        txn.commit().map_err(failed)
    }
}

fn failed(error: impl std::fmt::Display) -> StoreError {
    StoreError(error.to_string())
}

impl Store for DurableStore {
    fn load(&mut self) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        let db = self.db.clone();
        Box::pin(async move {
            rt::blocking(move || DurableStore::load_now(&db))
                .await
                .unwrap_or_else(|| Err(StoreError("the load task failed".into())))
        })
    }

    fn apply(&mut self, ops: Vec<PersistOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        let db = self.db.clone();
        Box::pin(async move {
            rt::blocking(move || DurableStore::apply_now(&db, ops))
                .await
                .unwrap_or_else(|| Err(StoreError("the commit task failed".into())))
        })
    }

    fn is_durable(&self) -> bool {
        true
    }
}
