//! Sessions in the process's memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use steadfast_core::record::StoredMessage;
use steadfast_core::{PersistOp, SessionId};

use super::{Change, Retention, SavedSession, SessionStore, SessionStoreError, Swept};
use crate::registry::lock;

/// Sessions kept in memory: gone with the process. The server writes only
/// the records of expired sessions here (live sessions are in its
/// registry already); the conformance suite drives every change through
/// it, as through a durable store.
#[derive(Debug, Default)]
pub struct MemorySessions {
    sessions: Mutex<HashMap<SessionId, Held>>,
}

#[derive(Debug)]
struct Held {
    meta: SavedSession,
    messages: BTreeMap<u64, StoredMessage>,
}

impl MemorySessions {
    /// An empty store.
    pub fn new() -> MemorySessions {
        MemorySessions::default()
    }
}

impl SessionStore for MemorySessions {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn durable(&self) -> bool {
        false
    }

    fn load(&self, session: &SessionId) -> Result<Option<SavedSession>, SessionStoreError> {
        let sessions = lock(&self.sessions);
        Ok(sessions.get(session).map(|held| SavedSession {
            messages: held.messages.values().cloned().collect(),
            ..held.meta.clone()
        }))
    }

    fn commit(&self, now_wall_ms: u64, changes: &[Change]) -> Result<(), SessionStoreError> {
        let mut sessions = lock(&self.sessions);
        for change in changes {
            apply(&mut sessions, now_wall_ms, change);
        }
        Ok(())
    }

    fn sweep(
        &self,
        now_wall_ms: u64,
        retention: Retention,
        live: &dyn Fn(&SessionId) -> bool,
    ) -> Result<Swept, SessionStoreError> {
        let mut sessions = lock(&self.sessions);
        let mut swept = Swept::default();
        for (id, held) in sessions.iter_mut() {
            let age = now_wall_ms.saturating_sub(held.meta.saved_wall_ms);
            if !held.meta.expired && age >= retention.session_ttl_ms && !live(id) {
                held.meta.expired = true;
                held.meta.saved_wall_ms = now_wall_ms;
                held.messages.clear();
                swept.expired += 1;
            }
        }
        let before = sessions.len();
        sessions.retain(|_, held| {
            !held.meta.expired
                || now_wall_ms.saturating_sub(held.meta.saved_wall_ms) < retention.record_ttl_ms
        });
        let mut records: Vec<(u64, SessionId)> = sessions
            .iter()
            .filter(|(_, held)| held.meta.expired)
            .map(|(id, held)| (held.meta.saved_wall_ms, *id))
            .collect();
        if records.len() > retention.max_records {
            records.sort_unstable();
            let surplus = records.len() - retention.max_records;
            for (_, id) in &records[..surplus] {
                sessions.remove(id);
            }
        }
        swept.records_removed = before - sessions.len();
        Ok(swept)
    }

    fn count(&self) -> Result<usize, SessionStoreError> {
        Ok(lock(&self.sessions).len())
    }
}

fn apply(sessions: &mut HashMap<SessionId, Held>, now_wall_ms: u64, change: &Change) {
    match change {
        Change::Open { session, subject } => {
            sessions.insert(
                *session,
                Held {
                    meta: SavedSession {
                        state: steadfast_core::record::StoredSession {
                            session: *session,
                            welcomed: false,
                            inbound_delivered: 0,
                            next_seq: 1,
                        },
                        subject: subject.clone(),
                        saved_wall_ms: now_wall_ms,
                        expired: false,
                        messages: Vec::new(),
                    },
                    messages: BTreeMap::new(),
                },
            );
        }
        Change::Ops { session, ops } => {
            let Some(held) = sessions.get_mut(session) else {
                // Never opened (or removed since): nothing to resume.
                return;
            };
            held.meta.saved_wall_ms = now_wall_ms;
            for op in ops {
                match op {
                    PersistOp::Session(state) => {
                        held.meta.state = *state;
                        held.meta.expired = false;
                    }
                    PersistOp::Put(message) => {
                        held.messages.insert(message.seq, message.clone());
                    }
                    PersistOp::Delete { seq } => {
                        held.messages.remove(seq);
                    }
                    PersistOp::Clear => held.messages.clear(),
                }
            }
        }
        Change::Expire {
            session,
            state,
            subject,
        } => {
            sessions.insert(
                *session,
                Held {
                    meta: SavedSession {
                        state: *state,
                        subject: subject.clone(),
                        saved_wall_ms: now_wall_ms,
                        expired: true,
                        messages: Vec::new(),
                    },
                    messages: BTreeMap::new(),
                },
            );
        }
        Change::Remove { session } => {
            sessions.remove(session);
        }
        Change::RemoveAll => sessions.clear(),
    }
}
