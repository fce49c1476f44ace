//! Sessions in the process's memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use steadfast_core::record::{StoredMessage, StoredSession};
use steadfast_core::{PersistOp, SessionId};

use super::{Change, Claim, Retention, SavedSession, SessionStore, SessionStoreError, Swept};
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

impl Held {
    fn new(state: StoredSession, subject: Option<String>, now: u64, claim: Claim) -> Held {
        Held {
            meta: SavedSession {
                state,
                subject,
                saved_wall_ms: now,
                expired: false,
                messages: Vec::new(),
                claim,
                peer: 0,
                rooms: Vec::new(),
            },
            messages: BTreeMap::new(),
        }
    }

    fn saved(&self) -> SavedSession {
        SavedSession {
            messages: if self.meta.expired {
                Vec::new()
            } else {
                self.messages.values().cloned().collect()
            },
            ..self.meta.clone()
        }
    }
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
        Ok(lock(&self.sessions).get(session).map(Held::saved))
    }

    fn claim(
        &self,
        session: &SessionId,
        claim: Claim,
    ) -> Result<Option<SavedSession>, SessionStoreError> {
        let mut sessions = lock(&self.sessions);
        Ok(sessions.get_mut(session).map(|held| {
            held.meta.claim = claim;
            held.saved()
        }))
    }

    fn commit(
        &self,
        now_wall_ms: u64,
        changes: &[Change],
    ) -> Result<Vec<SessionId>, SessionStoreError> {
        let mut sessions = lock(&self.sessions);
        let mut fenced = Vec::new();
        for change in changes {
            if let Some(session) = apply(&mut sessions, now_wall_ms, change) {
                if !fenced.contains(&session) {
                    fenced.push(session);
                }
            }
        }
        Ok(fenced)
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
                held.meta.rooms.clear();
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

    fn live_sessions(&self) -> Result<Vec<SessionId>, SessionStoreError> {
        Ok(lock(&self.sessions)
            .iter()
            .filter(|(_, held)| !held.meta.expired)
            .map(|(id, _)| *id)
            .collect())
    }
}

/// Apply one change; the session if it was fenced (held by another claim).
fn apply(
    sessions: &mut HashMap<SessionId, Held>,
    now_wall_ms: u64,
    change: &Change,
) -> Option<SessionId> {
    match change {
        Change::Open {
            session,
            subject,
            claim,
            peer,
        } => {
            let fresh = StoredSession {
                secret: None,
                session: *session,
                welcomed: false,
                inbound_delivered: 0,
                next_seq: 1,
            };
            let mut held = Held::new(fresh, subject.clone(), now_wall_ms, *claim);
            held.meta.peer = *peer;
            sessions.insert(*session, held);
        }
        Change::Rooms {
            session,
            claim,
            rooms,
        } => {
            let Some(held) = sessions.get_mut(session) else {
                return Some(*session);
            };
            if held.meta.claim != *claim {
                return Some(*session);
            }
            held.meta.rooms.clone_from(rooms);
            held.meta.saved_wall_ms = now_wall_ms;
        }
        Change::Ops {
            session,
            claim,
            ops,
            ..
        }
        | Change::Consumed {
            session,
            claim,
            ops,
            ..
        } => {
            // Gone from the store (removed, or the store lost it): the
            // writer must let it go, as when another node claims it.
            let Some(held) = sessions.get_mut(session) else {
                return Some(*session);
            };
            if held.meta.claim != *claim {
                return Some(*session);
            }
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
            claim,
            peer,
        } => {
            if sessions
                .get(session)
                .is_some_and(|h| h.meta.claim != *claim)
            {
                return Some(*session);
            }
            // The record keeps the peer id; the rooms went with the state.
            let mut held = Held::new(*state, subject.clone(), now_wall_ms, *claim);
            held.meta.expired = true;
            held.meta.peer = *peer;
            sessions.insert(*session, held);
        }
        Change::Remove { session } => {
            sessions.remove(session);
        }
        Change::RemoveAll => sessions.clear(),
        // One server: no peer lives elsewhere, no inbox fills.
        Change::Post { .. } | Change::RoomPost { .. } | Change::Broadcast { .. } => {}
    }
    None
}
