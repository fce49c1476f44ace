//! Where sessions outlive their connections: the [`SessionStore`] trait,
//! its backends, and the committer that writes to a durable one.
//!
//! Every backend passes one [`conformance`] suite:
//! - [`MemorySessions`]: in the process; with it the server keeps live
//!   sessions in memory only and stores the small record of each session
//!   whose state expired (`--sessions memory`).
//! - [`EmbeddedSessions`]: one redb file in a data dir, `fsync`ed before a
//!   commit returns (`--data-dir`, the default of `steadfast serve`). The
//!   server writes every session change through it, and a restarted
//!   server resumes every session it held.
//! - [`RedisSessions`]: one Redis (`--redis URL`), one Lua script per
//!   commit, durable through `WAITAOF` (7.2+) or `appendfsync always`; the
//!   nodes of a cluster share it.
//!
//! What the server writes, and when (docs/SEMANTICS.md): the engine's
//! [`PersistOp`]s go to the store in the order it made them, and no frame
//! made after them reaches the socket before they are committed. So an
//! ACK goes out only once the session's "delivered through" and whatever
//! the handler sent while handling those messages (an echo, a room post to
//! another session) are on disk, and an outbound message is on disk before
//! its first transmit (a replay after a restart is byte-identical).

use std::fmt;

use steadfast_core::record::{StoredMessage, StoredSession};
use steadfast_core::{PersistOp, SessionId};

mod committer;
mod embedded;
mod memory;
mod redis_store;

pub(crate) use committer::{Committer, Fenced};
pub use embedded::EmbeddedSessions;
pub use memory::MemorySessions;
pub use redis_store::RedisSessions;

/// A session as a store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSession {
    /// Its seqs: delivered through, the next one out, welcomed.
    pub state: StoredSession,
    /// The `sub` of the JWT that created it (authentication on); it resumes
    /// only under the same one.
    pub subject: Option<String>,
    /// When it was last written (wall-clock ms).
    pub saved_wall_ms: u64,
    /// Only the record is left: the outbound messages went with its state
    /// (the session expired). Its client resumes without duplicates; what
    /// the server had queued reaches it as a SKIP.
    pub expired: bool,
    /// Outbound messages not yet acknowledged, by seq (empty when expired).
    pub messages: Vec<StoredMessage>,
    /// The fencing token of the node that holds it (see [`Claim`]).
    pub claim: Claim,
    /// Its peer id: the application's name for it, the same after a
    /// restart or on another node (0: none recorded).
    pub peer: u64,
    /// The rooms it is in.
    pub rooms: Vec<String>,
}

/// A fencing token: the node that opened or last claimed a session writes
/// it with the session, and every later change it makes carries it. A
/// change whose token is not the stored one is refused (the session was
/// claimed by another node since): that node has lost the session and
/// must let it go. Random, so two nodes never pick the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Claim(pub u64);

/// One change to a store; a batch of them is committed as one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A session starts (or starts again: its record is replaced),
    /// claimed with `claim`.
    Open {
        /// Which.
        session: SessionId,
        /// Who made it.
        subject: Option<String>,
        /// The opening node's token.
        claim: Claim,
        /// Its peer id.
        peer: u64,
    },
    /// A session's rooms are now these. Refused (fenced) like `Ops`.
    Rooms {
        /// Which.
        session: SessionId,
        /// The writing node's token.
        claim: Claim,
        /// Every room it is in.
        rooms: Vec<String>,
    },
    /// A session's engine changes, in the order the engine made them.
    /// Refused (fenced) if the session is held under another claim; then
    /// its messages go to the session's inbox as `forward` says.
    Ops {
        /// Which.
        session: SessionId,
        /// The writing node's token.
        claim: Claim,
        /// What.
        ops: Vec<PersistOp>,
        /// Whether its messages reach the session anyway if it was claimed.
        forward: Forward,
    },
    /// A session's state expired: its messages go, this record stays.
    /// Refused (fenced) if the session is held under another claim.
    Expire {
        /// Which.
        session: SessionId,
        /// Its seqs when it went.
        state: StoredSession,
        /// Who made it.
        subject: Option<String>,
        /// The writing node's token.
        claim: Claim,
        /// Its peer id (a session resumed from its record is the same peer).
        peer: u64,
    },
    /// A session is gone entirely, record and all.
    Remove {
        /// Which.
        session: SessionId,
    },
    /// Every session is gone (fault injection: a server that lost its data).
    RemoveAll,
    /// A message for a peer held by another server (a shared store only):
    /// it waits in the peer's session's inbox until its holder takes it.
    Post {
        /// The peer.
        peer: u64,
        /// Made while delivering a message of this session: dropped if
        /// that delivery is refused in the same commit (the session's new
        /// holder delivers it again, and its application makes it again).
        by: Option<SessionId>,
        /// Binary (else UTF-8 text).
        binary: bool,
        /// The message.
        payload: Vec<u8>,
    },
    /// A message for every member of `room` held by another server (a
    /// shared store only): posted to each one's inbox but `except`.
    RoomPost {
        /// The room.
        room: String,
        /// Binary (else UTF-8 text).
        binary: bool,
        /// The message.
        payload: Vec<u8>,
        /// Peers not to post to (those the sender reached itself).
        except: Vec<u64>,
        /// Made while delivering a message of this session: dropped if
        /// that delivery is refused in the same commit (the session's new
        /// holder delivers it again, and its application makes it again).
        by: Option<SessionId>,
    },
    /// A message for every peer held by another server (a shared store
    /// only), but `except`.
    Broadcast {
        /// Binary (else UTF-8 text).
        binary: bool,
        /// The message.
        payload: Vec<u8>,
        /// Peers not to post to (those the sender reached itself).
        except: Vec<u64>,
        /// Made while delivering a message of this session: dropped if
        /// that delivery is refused in the same commit (the session's new
        /// holder delivers it again, and its application makes it again).
        by: Option<SessionId>,
    },
    /// The holder took the first `count` messages of the session's inbox
    /// into its outbox: `ops` (their `Put`s, the engine's state) applied as
    /// by `Ops`, and the inbox trimmed, together. Refused (fenced) like
    /// `Ops`, but never forwarded: the messages stay in the inbox for the
    /// node that claimed the session. (Forwarded, they would reach it twice.)
    Consumed {
        /// Which.
        session: SessionId,
        /// The writing node's token.
        claim: Claim,
        /// How many.
        count: u64,
        /// What the engine wrote for them.
        ops: Vec<PersistOp>,
    },
}

/// Whether the messages a node put for a session reach it through its
/// inbox when the store refuses them because another node has claimed the
/// session (a shared store; one server alone is never refused this way).
/// A message the new holder makes again must not be forwarded (it would
/// arrive twice); one nobody makes again must (it would be lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forward {
    /// The session's own doing: replies to its messages. Their delivery was
    /// refused too, so the client sends them again to the new holder, whose
    /// application answers again.
    Never,
    /// Sent by the application outside any delivery: nobody sends it again.
    Always,
    /// Made while delivering a message of this other session (a post from
    /// one room member to another): forwarded unless that delivery was
    /// refused in the same commit (then it is made again where it goes).
    IfDelivered(SessionId),
}

/// Messages waiting in a session's inbox, oldest first: (binary, payload).
pub type Inbox = Vec<(bool, Vec<u8>)>;

/// What a sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Sessions whose state expired (their records stay).
    pub expired: usize,
    /// Records removed (too old, or too many).
    pub records_removed: usize,
}

/// What a sweep keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// A session not written for this long loses its state (ms).
    pub session_ttl_ms: u64,
    /// A record is kept this long (ms).
    pub record_ttl_ms: u64,
    /// At most this many records; the oldest go first.
    pub max_records: usize,
}

/// A store failed; the server sends no ACK until it works again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session store: {0}")]
pub struct SessionStoreError(pub String);

impl SessionStoreError {
    /// The error's code.
    pub fn code(&self) -> &'static str {
        "ERR_SESSION_STORE"
    }
}

/// Where sessions are kept. Calls block (the server makes them from a
/// thread of its own or briefly while attaching a connection).
pub trait SessionStore: Send + Sync + fmt::Debug + 'static {
    /// Its name in logs and metrics: `memory`, `embedded`.
    fn name(&self) -> &'static str;

    /// Whether the server writes every session change through it (and a
    /// restarted server resumes its sessions). If not, only records of
    /// expired sessions are written.
    fn durable(&self) -> bool;

    /// The session, if the store has it.
    fn load(&self, session: &SessionId) -> Result<Option<SavedSession>, SessionStoreError>;

    /// The session, if the store has it, now held under `claim` (in one
    /// step: of two nodes claiming at once, the later one holds it, and
    /// the other's changes are refused from then on).
    fn claim(
        &self,
        session: &SessionId,
        claim: Claim,
    ) -> Result<Option<SavedSession>, SessionStoreError>;

    /// [`SessionStore::claim`] of each of `claims`, in their order. A store
    /// that can does it in one write (a server restoring every session at
    /// start claimed them one fsync each: 10,000 took about three seconds,
    /// during which it accepted nobody).
    fn claim_many(
        &self,
        claims: &[(SessionId, Claim)],
    ) -> Result<Vec<Option<SavedSession>>, SessionStoreError> {
        claims
            .iter()
            .map(|(session, claim)| self.claim(session, *claim))
            .collect()
    }

    /// Apply `changes` in order, as one unit, durable before this returns
    /// if the store is. `now_wall_ms` stamps what is written. Returns the
    /// sessions whose changes were refused (fenced) because another claim
    /// holds them or the store no longer has them (removed, or lost with
    /// the store's data); every other change is applied.
    fn commit(
        &self,
        now_wall_ms: u64,
        changes: &[Change],
    ) -> Result<Vec<SessionId>, SessionStoreError>;

    /// Expire sessions not written for `retention.session_ttl_ms` (unless
    /// `live` says a connection or the registry holds them) and drop old
    /// or surplus records.
    fn sweep(
        &self,
        now_wall_ms: u64,
        retention: Retention,
        live: &dyn Fn(&SessionId) -> bool,
    ) -> Result<Swept, SessionStoreError>;

    /// Sessions held (records included).
    fn count(&self) -> Result<usize, SessionStoreError>;

    /// Sessions with their state (not only a record).
    fn live_sessions(&self) -> Result<Vec<SessionId>, SessionStoreError>;

    /// Whether peers held by other servers are reachable through it (a
    /// store several servers share): a message for a peer not held here
    /// is posted to its session's inbox ([`Change::Post`]).
    fn shared(&self) -> bool {
        false
    }

    /// The first `max` messages posted to `session`'s inbox, oldest first:
    /// (binary, payload).
    fn inbox(&self, _session: &SessionId, _max: usize) -> Result<Inbox, SessionStoreError> {
        Ok(Vec::new())
    }

    /// [`SessionStore::inbox`] of each of `sessions`, in their order (a
    /// shared store reads them in one round trip).
    fn inboxes(&self, sessions: &[SessionId], max: usize) -> Result<Vec<Inbox>, SessionStoreError> {
        sessions.iter().map(|s| self.inbox(s, max)).collect()
    }

    /// Sessions whose inbox has messages waiting.
    fn with_mail(&self) -> Result<Vec<SessionId>, SessionStoreError> {
        Ok(Vec::new())
    }

    /// Call `on_mail` with each session that gets mail, as it comes (a
    /// hint: [`SessionStore::with_mail`] is the truth), until it returns
    /// false; now and then with the all-zero id, only to ask whether it is
    /// still wanted. Runs on a thread of its own; reconnects by itself.
    fn watch_mail(&self, _on_mail: Box<dyn Fn(SessionId) -> bool + Send>) {}

    /// Whether a starting server takes every live session at once (one
    /// server owns the store: a restart is then the state before it, rooms
    /// and all) rather than when each client comes back (several share
    /// it: claiming them all would take them from the others).
    fn restore_on_start(&self) -> bool {
        false
    }
}

/// Cut a commit's puts for one session into segments of at most `messages`
/// messages, each closed once it holds `bytes` (one message may cross it).
pub(crate) fn segments_of<'a>(
    puts: &'a [&'a StoredMessage],
    messages: usize,
    bytes: usize,
) -> Vec<&'a [&'a StoredMessage]> {
    let mut segments = Vec::new();
    let mut start = 0;
    let mut held = 0;
    for (i, message) in puts.iter().enumerate() {
        held += message.payload.len();
        if i + 1 - start >= messages || held >= bytes {
            segments.push(&puts[start..=i]);
            start = i + 1;
            held = 0;
        }
    }
    if start < puts.len() {
        segments.push(&puts[start..]);
    }
    segments
}

/// One session's ops in one commit, reduced to what they leave behind:
/// applied as `clear`, then `deletes`, then `puts`, then `session`, they
/// leave the store as the ops in order would. A store writes each part in
/// one go (one segment, one `HSET`) instead of one write per message.
#[derive(Debug, Default)]
pub(crate) struct Net<'a> {
    /// Remove every stored message first.
    pub(crate) clear: bool,
    /// Seqs to remove from what was stored before (sorted, once each).
    pub(crate) deletes: Vec<u64>,
    /// Messages to store, sorted by seq, one per seq (the last put).
    pub(crate) puts: Vec<&'a StoredMessage>,
    /// The session's state, last written.
    pub(crate) session: Option<&'a StoredSession>,
}

impl<'a> Net<'a> {
    pub(crate) fn of(ops: &'a [PersistOp]) -> Net<'a> {
        let mut net = Net::default();
        let mut lowest_put = u64::MAX;
        for op in ops {
            match op {
                PersistOp::Session(state) => net.session = Some(state),
                PersistOp::Put(message) => {
                    lowest_put = lowest_put.min(message.seq);
                    net.puts.push(message);
                }
                PersistOp::Delete { seq } => {
                    // Put in this batch (not the usual case: a message is
                    // acknowledged after the commit that put it).
                    if lowest_put <= *seq {
                        net.puts.retain(|m| m.seq != *seq);
                    }
                    net.deletes.push(*seq);
                }
                PersistOp::Clear => {
                    net.clear = true;
                    net.puts.clear();
                    net.deletes.clear();
                    lowest_put = u64::MAX;
                }
            }
        }
        net.deletes.sort_unstable();
        net.deletes.dedup();
        // Reversed, a stable sort puts the last put of a seq first.
        net.puts.reverse();
        net.puts.sort_by_key(|m| m.seq);
        net.puts.dedup_by_key(|m| m.seq);
        net
    }
}

/// Shorten a batch committed as one unit without changing what it leaves
/// behind: each session's `Ops` changes become one (its ops in order, all
/// but the last `Session` op dropped), up to any other change to that
/// session (`Open`, `Expire`, `Remove`, `RemoveAll`), which keeps its
/// place. Sessions are independent, so changes of different sessions may
/// move past each other. A pipelining connection's batch of 70-odd changes
/// becomes one: one claim check, one meta write.
pub(crate) fn coalesce(changes: Vec<Change>) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::with_capacity(changes.len());
    let mut open: std::collections::HashMap<(SessionId, Claim), usize> =
        std::collections::HashMap::new();
    let puts = |ops: &[PersistOp]| ops.iter().any(|op| matches!(op, PersistOp::Put(_)));
    for change in changes {
        match change {
            Change::Ops {
                session,
                claim,
                ops,
                forward,
            } => {
                // Merged into the session's last change unless both put
                // messages to be forwarded differently (`forward` is about
                // the puts: a change without any takes the other's).
                let last = open.get(&(session, claim)).copied();
                match last.and_then(|at| out.get_mut(at)) {
                    Some(Change::Ops {
                        ops: merged,
                        forward: kept,
                        ..
                    }) if *kept == forward || !puts(&ops) || !puts(merged) => {
                        if !puts(merged) {
                            *kept = forward;
                        }
                        merged.extend(ops);
                    }
                    _ => {
                        open.insert((session, claim), out.len());
                        out.push(Change::Ops {
                            session,
                            claim,
                            ops,
                            forward,
                        });
                    }
                }
            }
            Change::RemoveAll => {
                open.clear();
                out.push(Change::RemoveAll);
            }
            Change::Post { .. } | Change::RoomPost { .. } | Change::Broadcast { .. } => {
                out.push(change);
            }
            Change::Consumed { session, .. } => {
                open.retain(|(s, _), _| *s != session);
                out.push(change);
            }
            Change::Open { session, .. }
            | Change::Rooms { session, .. }
            | Change::Expire { session, .. }
            | Change::Remove { session } => {
                open.retain(|(s, _), _| *s != session);
                out.push(change);
            }
        }
    }
    for change in &mut out {
        if let Change::Ops { ops, .. } | Change::Consumed { ops, .. } = change {
            PersistOp::coalesce(ops);
        }
    }
    out
}

/// Rooms as bytes: `[count: 4]` then each `[length: 4][name]`.
pub(crate) fn encode_rooms(rooms: &[String], out: &mut Vec<u8>) {
    // Counts and lengths are bounded by the server's limits, far below 4 Gi.
    out.extend_from_slice(&u32::try_from(rooms.len()).unwrap_or(u32::MAX).to_le_bytes());
    for room in rooms {
        let len = u32::try_from(room.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&room.as_bytes()[..len as usize]);
    }
}

/// [`encode_rooms`] back, and the bytes after it.
pub(crate) fn decode_rooms(bytes: &[u8]) -> Option<(Vec<String>, &[u8])> {
    let (count, mut rest) = bytes.split_at_checked(4)?;
    let count = u32::from_le_bytes(count.try_into().ok()?);
    let mut rooms = Vec::new();
    for _ in 0..count {
        let (len, after) = rest.split_at_checked(4)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let (name, after) = after.split_at_checked(len)?;
        rooms.push(String::from_utf8(name.to_vec()).ok()?);
        rest = after;
    }
    Some((rooms, rest))
}

/// The meta row of a session: `[version 1][flags][saved ms: 8][claim: 8]
/// [peer: 8][subject length: 4, u32::MAX for none][subject][rooms]
/// [StoredSession]`.
pub(crate) fn encode_meta(saved: &SavedSession) -> Vec<u8> {
    let session = saved.state.encode();
    let subject = saved.subject.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(34 + subject.len() + session.len());
    out.push(1);
    out.push(u8::from(saved.expired));
    out.extend_from_slice(&saved.saved_wall_ms.to_le_bytes());
    out.extend_from_slice(&saved.claim.0.to_le_bytes());
    out.extend_from_slice(&saved.peer.to_le_bytes());
    match &saved.subject {
        Some(subject) => {
            // A subject longer than 4 GiB cannot come from a JWT the server
            // accepted (its head is bounded); saturating keeps it decodable.
            let len = u32::try_from(subject.len()).unwrap_or(u32::MAX - 1);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&subject.as_bytes()[..len as usize]);
        }
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    encode_rooms(&saved.rooms, &mut out);
    out.extend_from_slice(&session);
    out
}

/// Decode a meta row (`None`: not one this version wrote).
pub(crate) fn decode_meta(bytes: &[u8]) -> Option<SavedSession> {
    let (&version, rest) = bytes.split_first()?;
    if version != 1 {
        return None;
    }
    let (&flags, rest) = rest.split_first()?;
    let (saved, rest) = rest.split_at_checked(8)?;
    let saved_wall_ms = u64::from_le_bytes(saved.try_into().ok()?);
    let (claim, rest) = rest.split_at_checked(8)?;
    let claim = Claim(u64::from_le_bytes(claim.try_into().ok()?));
    let (peer, rest) = rest.split_at_checked(8)?;
    let peer = u64::from_le_bytes(peer.try_into().ok()?);
    let (len, rest) = rest.split_at_checked(4)?;
    let len = u32::from_le_bytes(len.try_into().ok()?);
    let (subject, rest) = if len == u32::MAX {
        (None, rest)
    } else {
        let (subject, rest) = rest.split_at_checked(len as usize)?;
        (Some(String::from_utf8(subject.to_vec()).ok()?), rest)
    };
    let (rooms, rest) = decode_rooms(rest)?;
    let state = StoredSession::decode(rest).ok()?;
    Some(SavedSession {
        state,
        subject,
        saved_wall_ms,
        expired: flags & 1 != 0,
        messages: Vec::new(),
        claim,
        peer,
        rooms,
    })
}

pub mod conformance;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A directory of its own under the system's temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "steadfast-sessions-{}-{name}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn memory_sessions_conform() {
        conformance::check(&mut || Box::new(MemorySessions::new()));
    }

    #[test]
    fn embedded_sessions_conform() {
        let mut dirs = Vec::new();
        conformance::check(&mut || {
            let dir = Scratch::new("conform");
            let store = EmbeddedSessions::open(&dir.0).expect("a fresh dir opens");
            dirs.push(dir);
            Box::new(store)
        });
    }

    #[test]
    fn embedded_sessions_survive_a_reopen() {
        let dir = Scratch::new("reopen");
        let path = dir.0.clone();
        let open = move || -> Box<dyn SessionStore> {
            Box::new(EmbeddedSessions::open(&path).expect("the dir opens"))
        };
        conformance::check_durable(&mut open.clone(), &mut open.clone());
    }

    #[test]
    fn a_second_open_of_one_data_dir_fails_with_a_code() {
        let dir = Scratch::new("twice");
        let _first = EmbeddedSessions::open(&dir.0).expect("the dir opens");
        let second = EmbeddedSessions::open(&dir.0).expect_err("already open");
        assert_eq!(second.code(), "ERR_SESSION_STORE");
        assert!(second.to_string().contains("sessions.redb"), "{second}");
    }

    #[test]
    fn a_data_dir_in_an_older_format_is_refused_with_a_hint() {
        let dir = Scratch::new("older");
        std::fs::create_dir_all(&dir.0).expect("mkdir");
        {
            // The layout before keys compared as bytes: `[u8; 16]` keys.
            let db = redb::Database::create(dir.0.join(embedded::FILE_NAME)).expect("create");
            let txn = db.begin_write().expect("write");
            txn.open_table(redb::TableDefinition::<[u8; 16], &[u8]>::new("sessions"))
                .expect("table");
            txn.commit().expect("commit");
        }
        let error = EmbeddedSessions::open(&dir.0).expect_err("another format");
        assert_eq!(error.code(), "ERR_SESSION_STORE");
        assert!(error.to_string().contains("older steadfast"), "{error}");
    }

    #[test]
    fn changes_forwarded_differently_merge_only_when_one_puts_nothing() {
        use steadfast_core::record::StoredMessage;
        let (id, by) = (SessionId([1; 16]), SessionId([2; 16]));
        let put = |seq| {
            PersistOp::Put(StoredMessage {
                seq,
                binary: true,
                payload: vec![1],
                enqueued_wall_ms: 1,
                expires_wall_ms: 0,
            })
        };
        let ops = |ops, forward| Change::Ops {
            session: id,
            claim: Claim(1),
            ops,
            forward,
        };
        let forwards = |changes: Vec<Change>| -> Vec<Forward> {
            coalesce(changes)
                .into_iter()
                .filter_map(|c| match c {
                    Change::Ops { forward, .. } => Some(forward),
                    _ => None,
                })
                .collect()
        };
        // The session's own ACKs, then a room post for it: one change,
        // forwarded as the post.
        assert_eq!(
            forwards(vec![
                ops(vec![PersistOp::Delete { seq: 1 }], Forward::Never),
                ops(vec![put(2)], Forward::IfDelivered(by)),
            ]),
            vec![Forward::IfDelivered(by)]
        );
        // Its own reply and a room post: kept apart.
        assert_eq!(
            forwards(vec![
                ops(vec![put(2)], Forward::Never),
                ops(vec![put(3)], Forward::IfDelivered(by)),
                ops(vec![PersistOp::Delete { seq: 1 }], Forward::Never),
            ]),
            vec![Forward::Never, Forward::IfDelivered(by)]
        );
    }

    #[test]
    fn a_batch_coalesces_per_session_and_commits_the_same_state() {
        use steadfast_core::record::StoredMessage;
        let id = |b: u8| SessionId([b; 16]);
        let state = |b: u8, n: u64| StoredSession {
            secret: None,
            session: id(b),
            welcomed: true,
            inbound_delivered: n,
            next_seq: n + 1,
        };
        let put = |seq: u64| {
            PersistOp::Put(StoredMessage {
                seq,
                binary: true,
                payload: vec![seq as u8],
                enqueued_wall_ms: 1,
                expires_wall_ms: 0,
            })
        };
        let ops = |b: u8, ops: Vec<PersistOp>| Change::Ops {
            session: id(b),
            claim: Claim(1),
            ops,
            forward: Forward::Never,
        };
        let open = |b: u8| Change::Open {
            session: id(b),
            subject: None,
            claim: Claim(1),
            peer: u64::from(b),
        };
        let batch = vec![
            open(1),
            open(2),
            ops(1, vec![put(1), PersistOp::Session(state(1, 1))]),
            ops(2, vec![put(1)]),
            ops(1, vec![put(2), PersistOp::Session(state(1, 2))]),
            ops(1, vec![PersistOp::Delete { seq: 1 }]),
            Change::Expire {
                session: id(2),
                state: state(2, 5),
                subject: None,
                claim: Claim(1),
                peer: 2,
            },
            ops(2, vec![put(9)]),
            ops(1, vec![PersistOp::Session(state(1, 3))]),
        ];
        let short = coalesce(batch.clone());
        assert_eq!(short.len(), 6, "{short:?}");
        // Session 1: one Ops, its last Session op only, order kept.
        assert_eq!(
            short[2],
            ops(
                1,
                vec![
                    put(1),
                    put(2),
                    PersistOp::Delete { seq: 1 },
                    PersistOp::Session(state(1, 3))
                ]
            )
        );
        // Session 2: merged up to its Expire, and a new Ops after it.
        assert_eq!(short[3], ops(2, vec![put(1)]));
        assert!(matches!(short[4], Change::Expire { .. }));
        assert_eq!(short[5], ops(2, vec![put(9)]));
        // Both leave the same store behind.
        let (whole, merged) = (MemorySessions::new(), MemorySessions::new());
        whole.commit(5, &batch).expect("memory commits");
        merged.commit(5, &short).expect("memory commits");
        for b in [1, 2] {
            assert_eq!(whole.load(&id(b)).ok(), merged.load(&id(b)).ok());
        }
    }

    #[test]
    fn meta_rows_round_trip_and_garbage_is_refused() {
        for subject in [None, Some(String::new()), Some("alice".to_owned())] {
            let saved = SavedSession {
                state: StoredSession {
                    secret: None,
                    session: SessionId([7; 16]),
                    welcomed: true,
                    inbound_delivered: 12,
                    next_seq: 40,
                },
                subject,
                saved_wall_ms: 1_700_000_000_123,
                expired: true,
                messages: Vec::new(),
                claim: Claim(u64::MAX - 3),
                peer: 1 << 52,
                rooms: vec!["lobby".into(), String::new(), "ünï".into()],
            };
            assert_eq!(decode_meta(&encode_meta(&saved)), Some(saved));
        }
        assert_eq!(decode_meta(&[]), None);
        assert_eq!(decode_meta(&[2, 0, 0]), None);
        assert_eq!(decode_meta(&[1, 0, 1, 2, 3]), None);
    }
}
