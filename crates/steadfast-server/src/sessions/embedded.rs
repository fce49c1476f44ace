//! Sessions in one redb file in a data dir.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use steadfast_core::record::{StoredMessage, StoredSession};
use steadfast_core::SessionId;

use super::{
    decode_meta, encode_meta, Change, Claim, Retention, SavedSession, SessionStore,
    SessionStoreError, Swept,
};

/// Key: the session id; value: its meta row (`encode_meta`).
const SESSIONS: TableDefinition<'_, RawKey<16>, &[u8]> = TableDefinition::new("sessions");
/// Key: the session id, then the first seq of a segment big-endian (a
/// session's segments are one range, in seq order); value: the segment.
///
/// A segment is the messages one commit put for one session (at most
/// `SEGMENT_MESSAGES` and about `SEGMENT_BYTES`), each `[seq: 8 BE]
/// [length: 4 LE][record]`: one B-tree insert per commit and session
/// instead of one per message, and one removal when its messages are all
/// acknowledged (a partly acknowledged segment is written again without
/// them). Per message, the insert and removal were half the commit
/// thread's time.
const MESSAGES: TableDefinition<'_, RawKey<24>, &[u8]> = TableDefinition::new("messages");

/// A segment holds at most this many messages, and is closed once it
/// holds this many bytes. Larger segments cost the commit thread less
/// (in a pipelined 64 B echo, 512 took a tenth less of its CPU than 64,
/// and 32 a tenth more); a partly acknowledged one is written again, so
/// the bytes bound what one acknowledgement can make it rewrite.
const SEGMENT_MESSAGES: usize = 512;
const SEGMENT_BYTES: usize = 256 * 1024;

/// A fixed-width key ordered as bytes, by one `memcmp`. (redb's own
/// `[u8; N]` compares byte by byte through the generic array code: a
/// quarter of the commit thread's time in a pipelined echo.)
#[derive(Debug)]
struct RawKey<const N: usize>;

impl<const N: usize> redb::Value for RawKey<N> {
    type SelfType<'a> = [u8; N];
    type AsBytes<'a> = [u8; N];

    fn fixed_width() -> Option<usize> {
        Some(N)
    }

    fn from_bytes<'a>(data: &'a [u8]) -> [u8; N]
    where
        Self: 'a,
    {
        // redb hands back exactly the N bytes `as_bytes` gave it; a damaged
        // file that did not would read as an all-zero key (no session).
        data.try_into().unwrap_or([0; N])
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a [u8; N]) -> [u8; N]
    where
        Self: 'b,
    {
        *value
    }

    fn type_name() -> redb::TypeName {
        redb::TypeName::new(&format!("steadfast::RawKey<{N}>"))
    }
}

impl<const N: usize> redb::Key for RawKey<N> {
    fn compare(data1: &[u8], data2: &[u8]) -> std::cmp::Ordering {
        data1.cmp(data2)
    }
}

/// The file's name inside the data dir.
pub(crate) const FILE_NAME: &str = "sessions.redb";

/// Sessions in a crash-safe file ([redb](https://docs.rs/redb): copy-on-write
/// B-trees, checksummed commits, `fsync` before a commit returns). The
/// server commits the changes of every connection waiting at that moment
/// as one transaction (group commit), so the `fsync` is shared.
///
/// One process may open a data dir at a time; a second fails with
/// `ERR_SESSION_STORE` rather than corrupting it.
#[derive(Debug)]
pub struct EmbeddedSessions {
    db: Database,
    path: PathBuf,
}

fn failed(error: impl std::fmt::Display) -> SessionStoreError {
    SessionStoreError(error.to_string())
}

fn message_key(session: &SessionId, seq: u64) -> [u8; 24] {
    let mut key = [0; 24];
    key[..16].copy_from_slice(&session.0);
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

impl EmbeddedSessions {
    /// Open (or create) the store in `dir` (created if missing).
    pub fn open(dir: impl AsRef<Path>) -> Result<EmbeddedSessions, SessionStoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| SessionStoreError(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| {
            let hint = match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    " (is another server using this --data-dir?)"
                }
                _ => "",
            };
            SessionStoreError(format!("cannot open {}: {e}{hint}", path.display()))
        })?;
        // Create the tables up front so reads never meet a missing table.
        let txn = db.begin_write().map_err(failed)?;
        let format = |e: redb::TableError| match e {
            redb::TableError::TableTypeMismatch { .. } => SessionStoreError(format!(
                "{} was written by an older steadfast in another format \
                 (move it away to start afresh): {e}",
                path.display()
            )),
            e => failed(e),
        };
        txn.open_table(SESSIONS).map_err(format)?;
        txn.open_table(MESSAGES).map_err(format)?;
        txn.commit().map_err(failed)?;
        Ok(EmbeddedSessions { db, path })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

type Sessions<'t> = redb::Table<'t, RawKey<16>, &'static [u8]>;
type Messages<'t> = redb::Table<'t, RawKey<24>, &'static [u8]>;

fn remove_messages(
    messages: &mut Messages<'_>,
    session: &SessionId,
) -> Result<(), SessionStoreError> {
    messages
        .retain_in(
            message_key(session, 0)..=message_key(session, u64::MAX),
            |_, _| false,
        )
        .map_err(failed)
}

fn append_to_segment(segment: &mut Vec<u8>, message: &StoredMessage) {
    segment.extend_from_slice(&message.seq.to_be_bytes());
    let at = segment.len();
    segment.extend_from_slice(&[0; 4]);
    message.encode_into(segment);
    // A record is one message, bounded by the server's message size limit
    // (far below 4 GiB).
    let len = u32::try_from(segment.len() - at - 4).unwrap_or(u32::MAX);
    segment[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// A segment's items: `(seq, record)`; stops at the first damaged one.
fn items(segment: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut rest = segment;
    std::iter::from_fn(move || {
        let (seq, tail) = rest.split_first_chunk::<8>()?;
        let (len, tail) = tail.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        if tail.len() < len {
            return None;
        }
        let (record, tail) = tail.split_at(len);
        rest = tail;
        Some((u64::from_be_bytes(*seq), record))
    })
}

/// Remove the messages with these seqs (sorted) from the session's segments.
fn delete_from_segments(
    messages: &mut Messages<'_>,
    session: &SessionId,
    deletes: &[u64],
) -> Result<(), SessionStoreError> {
    let Some(&last) = deletes.last() else {
        return Ok(());
    };
    let doomed = |seq: u64| deletes.binary_search(&seq).is_ok();
    // Segments that may hold one: those starting at or before the last
    // (acknowledgements come in order: the oldest one or two).
    let mut touched = Vec::new();
    for entry in messages
        .range(message_key(session, 0)..=message_key(session, last))
        .map_err(failed)?
    {
        let (key, value) = entry.map_err(failed)?;
        if items(value.value()).any(|(seq, _)| doomed(seq)) {
            touched.push((key.value(), value.value().to_vec()));
        }
    }
    for (key, segment) in touched {
        messages.remove(key).map_err(failed)?;
        let mut kept = Vec::new();
        let mut first = None;
        for (seq, record) in items(&segment).filter(|(seq, _)| !doomed(*seq)) {
            first.get_or_insert(seq);
            kept.extend_from_slice(&seq.to_be_bytes());
            kept.extend_from_slice(
                &u32::try_from(record.len())
                    .unwrap_or(u32::MAX)
                    .to_le_bytes(),
            );
            kept.extend_from_slice(record);
        }
        if let Some(first) = first {
            messages
                .insert(message_key(session, first), kept.as_slice())
                .map_err(failed)?;
        }
    }
    Ok(())
}

fn read_meta(
    sessions: &Sessions<'_>,
    session: &SessionId,
) -> Result<Option<SavedSession>, SessionStoreError> {
    Ok(sessions
        .get(session.0)
        .map_err(failed)?
        .and_then(|row| decode_meta(row.value())))
}

fn write_meta(sessions: &mut Sessions<'_>, saved: &SavedSession) -> Result<(), SessionStoreError> {
    sessions
        .insert(saved.state.session.0, encode_meta(saved).as_slice())
        .map_err(failed)?;
    Ok(())
}

/// Apply one change; `Some(session)` if it was fenced (another claim).
fn apply(
    sessions: &mut Sessions<'_>,
    messages: &mut Messages<'_>,
    now_wall_ms: u64,
    change: &Change,
) -> Result<Option<SessionId>, SessionStoreError> {
    match change {
        Change::Open {
            session,
            subject,
            claim,
            peer,
        } => {
            remove_messages(messages, session)?;
            write_meta(
                sessions,
                &SavedSession {
                    state: StoredSession {
                        secret: None,
                        session: *session,
                        welcomed: false,
                        inbound_delivered: 0,
                        next_seq: 1,
                    },
                    subject: subject.clone(),
                    saved_wall_ms: now_wall_ms,
                    expired: false,
                    messages: Vec::new(),
                    claim: *claim,
                    peer: *peer,
                    rooms: Vec::new(),
                },
            )?;
        }
        Change::Rooms {
            session,
            claim,
            rooms,
        } => {
            let Some(mut meta) = read_meta(sessions, session)? else {
                return Ok(Some(*session));
            };
            if meta.claim != *claim {
                return Ok(Some(*session));
            }
            meta.rooms.clone_from(rooms);
            meta.saved_wall_ms = now_wall_ms;
            write_meta(sessions, &meta)?;
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
            let Some(mut meta) = read_meta(sessions, session)? else {
                // Gone from the store (removed, or the store lost it): the
                // writer must let it go, as when another node claims it.
                return Ok(Some(*session));
            };
            if meta.claim != *claim {
                return Ok(Some(*session));
            }
            meta.saved_wall_ms = now_wall_ms;
            let net = super::Net::of(ops);
            if let Some(state) = net.session {
                meta.state = *state;
                meta.expired = false;
            }
            if net.clear {
                remove_messages(messages, session)?;
            }
            delete_from_segments(messages, session, &net.deletes)?;
            let puts = net.puts;
            for segment in super::segments_of(&puts, SEGMENT_MESSAGES, SEGMENT_BYTES) {
                let mut value = Vec::new();
                for message in segment {
                    append_to_segment(&mut value, message);
                }
                if let Some(first) = segment.first() {
                    messages
                        .insert(message_key(session, first.seq), value.as_slice())
                        .map_err(failed)?;
                }
            }
            write_meta(sessions, &meta)?;
        }
        Change::Expire {
            session,
            state,
            subject,
            claim,
            peer,
        } => {
            if read_meta(sessions, session)?.is_some_and(|meta| meta.claim != *claim) {
                return Ok(Some(*session));
            }
            remove_messages(messages, session)?;
            write_meta(
                sessions,
                &SavedSession {
                    state: *state,
                    subject: subject.clone(),
                    saved_wall_ms: now_wall_ms,
                    expired: true,
                    messages: Vec::new(),
                    claim: *claim,
                    peer: *peer,
                    rooms: Vec::new(),
                },
            )?;
        }
        Change::Remove { session } => {
            remove_messages(messages, session)?;
            sessions.remove(session.0).map_err(failed)?;
        }
        Change::RemoveAll => {
            sessions.retain(|_, _| false).map_err(failed)?;
            messages.retain(|_, _| false).map_err(failed)?;
        }
        // One server: no peer lives elsewhere, no inbox fills.
        Change::Post { .. } | Change::RoomPost { .. } | Change::Broadcast { .. } => {}
    }
    Ok(None)
}

impl SessionStore for EmbeddedSessions {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn durable(&self) -> bool {
        true
    }

    fn load(&self, session: &SessionId) -> Result<Option<SavedSession>, SessionStoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let sessions = txn.open_table(SESSIONS).map_err(failed)?;
        let Some(row) = sessions.get(session.0).map_err(failed)? else {
            return Ok(None);
        };
        let Some(mut saved) = decode_meta(row.value()) else {
            // Written by another version, or damaged: treated as unknown
            // (the client resynchronises), never as a session with a gap.
            tracing::warn!(session = ?session, "an unreadable session record was ignored");
            return Ok(None);
        };
        if !saved.expired {
            let table = txn.open_table(MESSAGES).map_err(failed)?;
            let range = message_key(session, 0)..=message_key(session, u64::MAX);
            for entry in table.range(range).map_err(failed)? {
                let (_, value) = entry.map_err(failed)?;
                for (_, record) in items(value.value()) {
                    match StoredMessage::decode(record) {
                        Ok(message) => saved.messages.push(message),
                        Err(_) => {
                            tracing::warn!(session = ?session, "an unreadable message record was ignored");
                        }
                    }
                }
            }
            // Segments are in seq order and, as the engine numbers
            // messages, never overlap; whatever the file holds, sorted, and
            // one copy of each seq (that of the later segment).
            saved.messages.reverse();
            saved.messages.sort_by_key(|m| m.seq);
            saved.messages.dedup_by_key(|m| m.seq);
        }
        Ok(Some(saved))
    }

    fn claim(
        &self,
        session: &SessionId,
        claim: Claim,
    ) -> Result<Option<SavedSession>, SessionStoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        let claimed = {
            let mut sessions = txn.open_table(SESSIONS).map_err(failed)?;
            match read_meta(&sessions, session)? {
                Some(mut meta) => {
                    meta.claim = claim;
                    write_meta(&mut sessions, &meta)?;
                    true
                }
                None => false,
            }
        };
        txn.commit().map_err(failed)?;
        if claimed {
            self.load(session)
        } else {
            Ok(None)
        }
    }

    fn claim_many(
        &self,
        claims: &[(SessionId, Claim)],
    ) -> Result<Vec<Option<SavedSession>>, SessionStoreError> {
        // One write transaction (one fsync) for all of them.
        let txn = self.db.begin_write().map_err(failed)?;
        let mut claimed = Vec::with_capacity(claims.len());
        {
            let mut sessions = txn.open_table(SESSIONS).map_err(failed)?;
            for (session, claim) in claims {
                match read_meta(&sessions, session)? {
                    Some(mut meta) => {
                        meta.claim = *claim;
                        write_meta(&mut sessions, &meta)?;
                        claimed.push(true);
                    }
                    None => claimed.push(false),
                }
            }
        }
        txn.commit().map_err(failed)?;
        claims
            .iter()
            .zip(claimed)
            .map(|((session, _), claimed)| {
                if claimed {
                    self.load(session)
                } else {
                    Ok(None)
                }
            })
            .collect()
    }

    fn commit(
        &self,
        now_wall_ms: u64,
        changes: &[Change],
    ) -> Result<Vec<SessionId>, SessionStoreError> {
        let mut fenced = Vec::new();
        let txn = self.db.begin_write().map_err(failed)?;
        {
            let mut sessions = txn.open_table(SESSIONS).map_err(failed)?;
            let mut messages = txn.open_table(MESSAGES).map_err(failed)?;
            for change in changes {
                if let Some(session) = apply(&mut sessions, &mut messages, now_wall_ms, change)? {
                    if !fenced.contains(&session) {
                        fenced.push(session);
                    }
                }
            }
        }
        // Durability::Immediate is redb's default: commit returns after fsync.
        txn.commit().map_err(failed)?;
        Ok(fenced)
    }

    fn sweep(
        &self,
        now_wall_ms: u64,
        retention: Retention,
        live: &dyn Fn(&SessionId) -> bool,
    ) -> Result<Swept, SessionStoreError> {
        let mut swept = Swept::default();
        let txn = self.db.begin_write().map_err(failed)?;
        {
            let mut sessions = txn.open_table(SESSIONS).map_err(failed)?;
            let mut messages = txn.open_table(MESSAGES).map_err(failed)?;
            let mut expire = Vec::new();
            let mut remove = Vec::new();
            let mut records = Vec::new();
            for entry in sessions.iter().map_err(failed)? {
                let (key, value) = entry.map_err(failed)?;
                let id = SessionId(key.value());
                let Some(meta) = decode_meta(value.value()) else {
                    remove.push(id);
                    continue;
                };
                let age = now_wall_ms.saturating_sub(meta.saved_wall_ms);
                if meta.expired {
                    if age >= retention.record_ttl_ms {
                        remove.push(id);
                    } else {
                        records.push((meta.saved_wall_ms, id));
                    }
                } else if age >= retention.session_ttl_ms && !live(&id) {
                    expire.push(meta);
                }
            }
            swept.expired = expire.len();
            for mut meta in expire {
                remove_messages(&mut messages, &meta.state.session)?;
                meta.expired = true;
                meta.rooms.clear();
                meta.saved_wall_ms = now_wall_ms;
                records.push((now_wall_ms, meta.state.session));
                write_meta(&mut sessions, &meta)?;
            }
            if records.len() > retention.max_records {
                records.sort_unstable();
                let surplus = records.len() - retention.max_records;
                remove.extend(records[..surplus].iter().map(|(_, id)| *id));
            }
            swept.records_removed = remove.len();
            for id in remove {
                remove_messages(&mut messages, &id)?;
                sessions.remove(id.0).map_err(failed)?;
            }
        }
        txn.commit().map_err(failed)?;
        Ok(swept)
    }

    fn restore_on_start(&self) -> bool {
        // One process holds the file at a time: it owns every session.
        true
    }

    fn live_sessions(&self) -> Result<Vec<SessionId>, SessionStoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let sessions = txn.open_table(SESSIONS).map_err(failed)?;
        let mut live = Vec::new();
        for entry in sessions.iter().map_err(failed)? {
            let (key, value) = entry.map_err(failed)?;
            if decode_meta(value.value()).is_some_and(|meta| !meta.expired) {
                live.push(SessionId(key.value()));
            }
        }
        Ok(live)
    }

    fn count(&self) -> Result<usize, SessionStoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let sessions = txn.open_table(SESSIONS).map_err(failed)?;
        let len = sessions.len().map_err(failed)?;
        Ok(usize::try_from(len).unwrap_or(usize::MAX))
    }
}
