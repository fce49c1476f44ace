//! The session store conformance suite: what every [`SessionStore`]
//! backend must do, run against each of them (run it against your own).
//! `fresh()` returns a fresh, empty store; `reopen`, for durable backends,
//! a handle on the same data after the previous one was dropped. A failing
//! check panics with its name.

#![allow(clippy::missing_panics_doc)]

use steadfast_core::record::{StoredMessage, StoredSession};
use steadfast_core::{PersistOp, SessionId};

use super::{Change, Claim, Forward, Retention, SavedSession, SessionStore};

const T0: u64 = 1_700_000_000_000;

fn id(byte: u8) -> SessionId {
    SessionId([byte; 16])
}

fn state(byte: u8, delivered: u64, next_seq: u64) -> StoredSession {
    StoredSession {
        secret: None,
        session: id(byte),
        welcomed: true,
        inbound_delivered: delivered,
        next_seq,
    }
}

fn message(seq: u64) -> StoredMessage {
    StoredMessage {
        seq,
        binary: seq.is_multiple_of(2),
        payload: format!("m{seq}").into_bytes(),
        enqueued_wall_ms: T0 + seq,
        expires_wall_ms: 0,
    }
}

/// The claim of the node the checks play (another node's is `OTHER`).
const MINE: Claim = Claim(0x5eed_0001);
const OTHER: Claim = Claim(0x5eed_0002);

fn open(byte: u8, subject: Option<&str>) -> Change {
    Change::Open {
        session: id(byte),
        subject: subject.map(str::to_owned),
        claim: MINE,
        peer: peer_of(byte),
    }
}

/// The peer id the checks give session `byte`.
fn peer_of(byte: u8) -> u64 {
    (1 << 52) + u64::from(byte)
}

fn rooms(byte: u8, claim: Claim, rooms: &[&str]) -> Change {
    Change::Rooms {
        session: id(byte),
        claim,
        rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
    }
}

fn ops(byte: u8, ops: Vec<PersistOp>) -> Change {
    Change::Ops {
        session: id(byte),
        claim: MINE,
        ops,
        forward: Forward::Never,
    }
}

fn expire(byte: u8, state: StoredSession, subject: Option<&str>) -> Change {
    Change::Expire {
        session: id(byte),
        state,
        subject: subject.map(str::to_owned),
        claim: MINE,
        peer: peer_of(byte),
    }
}

/// Commit; the sessions fenced.
fn commit(store: &dyn SessionStore, at: u64, changes: Vec<Change>, check: &str) -> Vec<SessionId> {
    match store.commit(at, &changes) {
        Ok(fenced) => fenced,
        Err(error) => panic!("[{check}] commit failed: {error}"),
    }
}

fn load(store: &dyn SessionStore, byte: u8, check: &str) -> Option<SavedSession> {
    match store.load(&id(byte)) {
        Ok(saved) => saved,
        Err(error) => panic!("[{check}] load failed: {error}"),
    }
}

fn seqs(saved: &SavedSession) -> Vec<u64> {
    saved.messages.iter().map(|m| m.seq).collect()
}

const KEEP: Retention = Retention {
    session_ttl_ms: 300_000,
    record_ttl_ms: 7 * 86_400_000,
    max_records: 1_000,
};

/// Every check on a fresh store from `fresh`.
pub fn check(fresh: &mut dyn FnMut() -> Box<dyn SessionStore>) {
    let never_live = |_: &SessionId| false;

    // Empty; an unknown session is not there.
    let store = fresh();
    assert_eq!(store.count().ok(), Some(0), "[empty] len");
    assert_eq!(load(&*store, 1, "empty"), None, "[empty] unknown session");

    // Open, then the engine's ops in order: the session's seqs, and its
    // messages by seq (256 after 255: seqs order numerically).
    let store = fresh();
    commit(&*store, T0, vec![open(1, Some("alice"))], "open");
    let opened = load(&*store, 1, "open").expect("[open] the session is there");
    assert_eq!(opened.subject.as_deref(), Some("alice"), "[open] subject");
    assert_eq!(opened.peer, peer_of(1), "[open] peer id");
    assert!(opened.rooms.is_empty(), "[open] in no room");
    assert!(!opened.expired, "[open] not expired");
    assert!(opened.messages.is_empty(), "[open] no messages");
    commit(
        &*store,
        T0 + 5,
        vec![ops(
            1,
            vec![
                PersistOp::Put(message(255)),
                PersistOp::Put(message(256)),
                PersistOp::Put(message(3)),
                PersistOp::Session(state(1, 7, 257)),
                PersistOp::Delete { seq: 3 },
            ],
        )],
        "ops",
    );
    let saved = load(&*store, 1, "ops").expect("[ops] the session is there");
    assert_eq!(saved.state, state(1, 7, 257), "[ops] seqs");
    assert_eq!(seqs(&saved), vec![255, 256], "[ops] messages by seq");
    assert_eq!(
        saved.messages[1],
        message(256),
        "[ops] a message byte for byte"
    );
    assert_eq!(saved.saved_wall_ms, T0 + 5, "[ops] stamped");
    assert_eq!(
        saved.subject.as_deref(),
        Some("alice"),
        "[ops] subject kept"
    );

    // Many messages in one commit (more than one command or segment holds),
    // acknowledged in pieces that fall on no boundary a store may keep, and
    // one out of order.
    let many = fresh();
    commit(&*many, T0, vec![open(3, None)], "many: open");
    let puts = (1..=600).map(|seq| PersistOp::Put(message(seq))).collect();
    commit(&*many, T0 + 1, vec![ops(3, puts)], "many: put");
    let deletes = |seqs: std::ops::RangeInclusive<u64>| {
        seqs.map(|seq| PersistOp::Delete { seq })
            .collect::<Vec<_>>()
    };
    commit(
        &*many,
        T0 + 2,
        vec![ops(3, deletes(1..=10))],
        "many: ack 10",
    );
    let mut more = deletes(11..=70);
    more.push(PersistOp::Put(message(601)));
    commit(&*many, T0 + 3, vec![ops(3, more)], "many: ack 70");
    commit(
        &*many,
        T0 + 4,
        vec![ops(3, deletes(120..=120))],
        "many: one",
    );
    let saved = load(&*many, 3, "many").expect("[many] the session is there");
    let expected: Vec<u64> = (71..=601).filter(|seq| *seq != 120).collect();
    assert_eq!(seqs(&saved), expected, "[many] what is left, in order");
    assert!(
        saved.messages.iter().all(|m| *m == message(m.seq)),
        "[many] each message byte for byte"
    );
    commit(&*many, T0 + 5, vec![ops(3, deletes(1..=700))], "many: all");
    let saved = load(&*many, 3, "many: all").expect("[many: all] the session");
    assert!(saved.messages.is_empty(), "[many: all] none left");

    // Sessions do not share messages; Clear empties one session only.
    commit(
        &*store,
        T0 + 6,
        vec![
            open(2, None),
            ops(
                2,
                vec![PersistOp::Put(message(1)), PersistOp::Put(message(2))],
            ),
            ops(1, vec![PersistOp::Clear, PersistOp::Put(message(300))]),
        ],
        "two sessions",
    );
    let one = load(&*store, 1, "two sessions").expect("[two sessions] 1");
    let two = load(&*store, 2, "two sessions").expect("[two sessions] 2");
    assert_eq!(seqs(&one), vec![300], "[two sessions] Clear then Put");
    assert_eq!(seqs(&two), vec![1, 2], "[two sessions] untouched by Clear");
    assert_eq!(two.subject, None, "[two sessions] no subject");
    assert_eq!(store.count().ok(), Some(2), "[two sessions] len");

    // Ops for a session the store does not have (never opened, removed,
    // lost) are refused and reported: the writer must let it go.
    let fenced = commit(
        &*store,
        T0 + 7,
        vec![ops(9, vec![PersistOp::Put(message(1))])],
        "unopened",
    );
    assert_eq!(fenced, vec![id(9)], "[unopened] reported");
    assert_eq!(load(&*store, 9, "unopened"), None, "[unopened] not created");

    // Expire: the record (seqs, subject) stays, the messages go; an op
    // with the session's seqs brings it back (it resumed from the record).
    commit(
        &*store,
        T0 + 8,
        vec![expire(1, state(1, 9, 301), Some("alice"))],
        "expire",
    );
    let record = load(&*store, 1, "expire").expect("[expire] the record stays");
    assert!(record.expired, "[expire] marked");
    assert!(record.messages.is_empty(), "[expire] messages gone");
    assert_eq!(record.state, state(1, 9, 301), "[expire] seqs");
    assert_eq!(record.subject.as_deref(), Some("alice"), "[expire] subject");
    commit(
        &*store,
        T0 + 9,
        vec![ops(
            1,
            vec![
                PersistOp::Put(message(301)),
                PersistOp::Session(state(1, 9, 302)),
            ],
        )],
        "resumed",
    );
    let resumed = load(&*store, 1, "resumed").expect("[resumed] there");
    assert!(!resumed.expired, "[resumed] live again");
    assert_eq!(seqs(&resumed), vec![301], "[resumed] only the new message");

    // Open again replaces a session (a NEW hello reusing the id).
    commit(&*store, T0 + 10, vec![open(2, Some("bob"))], "reopen");
    let again = load(&*store, 2, "reopen").expect("[reopen] there");
    assert!(again.messages.is_empty(), "[reopen] messages gone");
    assert_eq!(
        again.subject.as_deref(),
        Some("bob"),
        "[reopen] new subject"
    );

    // Remove, then RemoveAll.
    commit(
        &*store,
        T0 + 11,
        vec![Change::Remove { session: id(2) }],
        "remove",
    );
    assert_eq!(load(&*store, 2, "remove"), None, "[remove] gone");
    assert_eq!(store.count().ok(), Some(1), "[remove] len");
    commit(&*store, T0 + 12, vec![Change::RemoveAll], "remove all");
    assert_eq!(store.count().ok(), Some(0), "[remove all] len");
    assert_eq!(load(&*store, 1, "remove all"), None, "[remove all] gone");

    // Rooms: the last list written is the session's; another claim's
    // write is refused; an expiry keeps the peer id and drops the rooms;
    // only sessions with their state are live.
    let store = fresh();
    commit(
        &*store,
        T0,
        vec![open(1, None), open(2, None)],
        "rooms setup",
    );
    let fenced = commit(
        &*store,
        T0 + 1,
        vec![
            rooms(1, MINE, &["lobby", "ünï", ""]),
            rooms(1, MINE, &["lobby", "ünï"]),
            rooms(2, OTHER, &["lobby"]),
        ],
        "rooms",
    );
    assert_eq!(fenced, vec![id(2)], "[rooms] another claim refused");
    let one = load(&*store, 1, "rooms").expect("[rooms] there");
    assert_eq!(
        one.rooms,
        vec!["lobby".to_owned(), "ünï".to_owned()],
        "[rooms] the last list"
    );
    assert!(
        load(&*store, 2, "rooms").is_some_and(|s| s.rooms.is_empty()),
        "[rooms] 2 untouched"
    );
    let mut live = store
        .live_sessions()
        .unwrap_or_else(|e| panic!("[live] failed: {e}"));
    live.sort_unstable_by_key(|s| s.0);
    assert_eq!(live, vec![id(1), id(2)], "[live] both");
    commit(
        &*store,
        T0 + 2,
        vec![expire(1, state(1, 1, 1), None)],
        "rooms expire",
    );
    let record = load(&*store, 1, "rooms expire").expect("[rooms expire] the record");
    assert_eq!(
        (record.peer, record.rooms.len()),
        (peer_of(1), 0),
        "[rooms expire]"
    );
    assert_eq!(
        store.live_sessions().ok(),
        Some(vec![id(2)]),
        "[live] a record is not"
    );

    // Claims: once another node claims a session, this node's changes to
    // it are refused and reported (fenced); the other node's go through,
    // and other sessions in the same batch are not affected.
    let store = fresh();
    commit(
        &*store,
        T0,
        vec![
            open(1, None),
            ops(
                1,
                vec![
                    PersistOp::Put(message(1)),
                    PersistOp::Session(state(1, 2, 2)),
                ],
            ),
            open(2, None),
        ],
        "claim setup",
    );
    let claimed = store
        .claim(&id(1), OTHER)
        .unwrap_or_else(|e| panic!("[claim] failed: {e}"))
        .expect("[claim] the session is there");
    assert_eq!(claimed.claim, OTHER, "[claim] held by the claimer");
    assert_eq!(seqs(&claimed), vec![1], "[claim] what it holds");
    assert_eq!(
        store.claim(&id(9), OTHER).ok(),
        Some(None),
        "[claim] an unknown session"
    );
    let fenced = commit(
        &*store,
        T0 + 1,
        vec![
            ops(
                1,
                vec![
                    PersistOp::Put(message(2)),
                    PersistOp::Session(state(1, 3, 3)),
                ],
            ),
            ops(1, vec![PersistOp::Delete { seq: 1 }]),
            expire(1, state(1, 3, 3), None),
            ops(2, vec![PersistOp::Put(message(1))]),
        ],
        "fenced",
    );
    assert_eq!(fenced, vec![id(1)], "[fenced] reported once");
    let kept = load(&*store, 1, "fenced").expect("[fenced] still there");
    assert_eq!(
        (kept.state, seqs(&kept), kept.expired, kept.claim),
        (state(1, 2, 2), vec![1], false, OTHER),
        "[fenced] untouched by the old holder"
    );
    assert_eq!(
        load(&*store, 2, "fenced").map(|s| seqs(&s)),
        Some(vec![1]),
        "[fenced] the other session's change applied"
    );
    let theirs = Change::Ops {
        session: id(1),
        claim: OTHER,
        ops: vec![PersistOp::Put(message(2))],
        forward: Forward::Never,
    };
    assert!(commit(&*store, T0 + 2, vec![theirs], "claimer").is_empty());
    // Many at once (a restore at start): each as `claim` would have it,
    // in order, an unknown one as none; later changes under the old claim
    // are refused.
    let third = Claim(0x3333);
    let many = store
        .claim_many(&[(id(2), third), (id(9), third), (id(1), third)])
        .unwrap_or_else(|e| panic!("[claim_many] failed: {e}"));
    assert_eq!(
        many.iter()
            .map(|s| s.as_ref().map(|s| (s.claim, seqs(s))))
            .collect::<Vec<_>>(),
        vec![Some((third, vec![1])), None, Some((third, vec![1, 2]))],
        "[claim_many] each claimed, in order"
    );
    let fenced = commit(
        &*store,
        T0 + 3,
        vec![ops(2, vec![PersistOp::Put(message(2))])],
        "claim_many fences",
    );
    assert_eq!(fenced, vec![id(2)], "[claim_many] the old claim refused");
    assert_eq!(
        load(&*store, 1, "claimer").map(|s| seqs(&s)),
        Some(vec![1, 2]),
        "[claimer] its change applied"
    );

    // Sweep: a session not written for the TTL expires unless live; a
    // record older than its TTL goes; past the cap, the oldest go.
    let store = fresh();
    commit(
        &*store,
        T0,
        vec![
            open(1, None),
            ops(1, vec![PersistOp::Put(message(1))]),
            open(2, None),
            ops(2, vec![PersistOp::Put(message(1))]),
        ],
        "sweep setup",
    );
    commit(&*store, T0 + 200_000, vec![open(3, None)], "sweep setup");
    let live = |s: &SessionId| *s == id(2);
    let swept = store
        .sweep(T0 + 300_000, KEEP, &live)
        .unwrap_or_else(|e| panic!("[sweep] failed: {e}"));
    assert_eq!(swept.expired, 1, "[sweep] one expired");
    assert!(
        load(&*store, 1, "sweep").is_some_and(|s| s.expired),
        "[sweep] 1 expired"
    );
    assert_eq!(
        load(&*store, 2, "sweep").map(|s| (s.expired, seqs(&s))),
        Some((false, vec![1])),
        "[sweep] a live session is kept whole"
    );
    assert!(
        load(&*store, 3, "sweep").is_some_and(|s| !s.expired),
        "[sweep] 3 recent"
    );
    let swept = store
        .sweep(T0 + 300_000 + KEEP.record_ttl_ms, KEEP, &never_live)
        .unwrap_or_else(|e| panic!("[sweep] failed: {e}"));
    assert_eq!(
        load(&*store, 1, "sweep ttl"),
        None,
        "[sweep ttl] old record gone"
    );
    assert_eq!(swept.records_removed, 1, "[sweep ttl] one record removed");
    assert_eq!(swept.expired, 2, "[sweep ttl] the others expired");
    let store = fresh();
    for byte in 1..=5u8 {
        commit(
            &*store,
            T0 + u64::from(byte),
            vec![expire(byte, state(byte, 1, 2), None)],
            "cap setup",
        );
    }
    let cap = Retention {
        max_records: 3,
        ..KEEP
    };
    let swept = store
        .sweep(T0 + 10, cap, &never_live)
        .unwrap_or_else(|e| panic!("[cap] failed: {e}"));
    assert_eq!(swept.records_removed, 2, "[cap] two removed");
    let kept: Vec<u8> = (1..=5u8)
        .filter(|b| load(&*store, *b, "cap").is_some())
        .collect();
    assert_eq!(kept, vec![3, 4, 5], "[cap] the oldest go first");
}

/// A durable store shows, after a reopen, what was committed before.
pub fn check_durable(
    fresh: &mut dyn FnMut() -> Box<dyn SessionStore>,
    reopen: &mut dyn FnMut() -> Box<dyn SessionStore>,
) {
    let store = fresh();
    assert!(store.durable(), "[durable] says so");
    commit(
        &*store,
        T0,
        vec![
            open(1, Some("alice")),
            ops(
                1,
                vec![
                    PersistOp::Put(message(1)),
                    PersistOp::Put(message(2)),
                    PersistOp::Session(state(1, 4, 3)),
                ],
            ),
            expire(2, state(2, 8, 9), None),
        ],
        "durable",
    );
    let before = (load(&*store, 1, "durable"), load(&*store, 2, "durable"));
    drop(store);
    let store = reopen();
    let after = (load(&*store, 1, "reopened"), load(&*store, 2, "reopened"));
    assert_eq!(after, before, "[reopened] what was committed");
    assert!(
        after.0.is_some() && after.1.is_some(),
        "[reopened] both there"
    );
}
